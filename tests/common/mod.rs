//! Shared set-up for the end-to-end tests: a throwaway PostgreSQL cluster, a
//! config, and the real `turnout` binary in front of it.
#![allow(dead_code)]

#[allow(dead_code)]
pub mod exact;
pub mod fleet;
pub mod mysql;
pub mod raw;

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use turnout_harness::{free_port, self_signed_cert, PgInstance, PgOptions, TempDir};

pub const APP_PASSWORD: &str = "app-pw";
pub const MD5_PASSWORD: &str = "md5-pw";

#[derive(Default, Clone)]
pub struct Options {
    /// turnout offers TLS to clients.
    pub client_tls: bool,
    /// turnout requires TLS from clients.
    pub client_tls_required: bool,
    /// The backend serves TLS and turnout verifies it (verify-full).
    pub backend_tls: bool,
    pub max_clients: Option<u32>,
    /// turnout reaches the backend through its Unix socket folder, and
    /// listens on a Unix socket of its own too.
    pub unix_sockets: bool,
    pub max_message_size: Option<u32>,
    /// The backend's authentication method for TCP (default scram-sha-256).
    pub backend_auth: Option<&'static str>,
    /// Start a `new` cluster too and run turnout in this phase (e.g. "mirror").
    pub phase: Option<&'static str>,
    /// `mirror.on_error` ("record" by default).
    pub on_error: Option<&'static str>,
    /// `mirror.ddl` ("authority_only" by default).
    pub ddl: Option<&'static str>,
    /// More lines at the end of the `[mirror]` section (`mode = "async"`,
    /// `[[mirror.rules]]` tables, ...).
    pub mirror_extra: &'static str,
    /// Keys of a `[sampling]` section (shadow reads); its report goes to
    /// `Setup::read_diffs()`'s file.
    pub sampling: &'static str,
    /// An admin socket (`Setup::admin_socket()`), an audit log and a state
    /// file, all in the test's folder.
    pub admin: bool,
    /// Keep `backfill.required` on: the reads flip waits for a backfill and
    /// a clean verify.
    pub backfill_guard: bool,
    /// Serve Prometheus metrics on this port.
    pub metrics: Option<u16>,
    /// Both clusters run with `wal_level = logical` and turnout reads the
    /// authority's log as the `postgres` superuser (`mirror.source` is
    /// whatever `mirror_extra` says; `auto` picks the log).
    pub logical: bool,
    /// `limits.worker_threads`: how many threads serve sessions (the
    /// default on a 2-core machine is one).
    pub worker_threads: Option<u32>,
}

pub struct Setup {
    pub old: PgInstance,
    /// Started when a phase is given.
    pub new: Option<PgInstance>,
    pub proxy: Proxy,
    pub dir: TempDir,
    pub cert: Option<(PathBuf, PathBuf)>,
}

pub struct Proxy {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Whatever turnout wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// turnout's process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills turnout outright (SIGKILL), as a crash would.
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks turnout to stop (SIGTERM), as a service manager would.
    #[allow(dead_code)]
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for turnout to exit; its exit status.
    #[allow(dead_code)]
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

thread_local! {
    static FROM_THE_LOG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` with every cluster it starts able to feed the mirror from
/// its log (`mirror.source = "auto"` then takes the log): the same test,
/// through the other source.
pub fn from_the_log(test: fn()) {
    FROM_THE_LOG.with(|l| l.set(true));
    test();
    FROM_THE_LOG.with(|l| l.set(false));
}

/// Whether this test runs through the log source ([`from_the_log`], or
/// `TURNOUT_TEST_LOGICAL=1`).
pub fn log_source() -> bool {
    FROM_THE_LOG.with(|l| l.get()) || std::env::var("TURNOUT_TEST_LOGICAL").is_ok_and(|v| v == "1")
}

pub fn turnout_bin() -> &'static str {
    env!("CARGO_BIN_EXE_turnout")
}

impl Setup {
    pub fn start(mut opts: Options) -> Setup {
        // TURNOUT_TEST_LOGICAL=1: every test's clusters can feed the mirror
        // from their log (a way to run a suite through the log source).
        opts.logical |= std::env::var("TURNOUT_TEST_LOGICAL").is_ok_and(|v| v == "1");
        opts.logical |= log_source();
        let mut dir = TempDir::new("turnout-test").expect("temp dir");
        if std::env::var("TURNOUT_TEST_KEEP").is_ok() {
            println!("the test's folder is kept: {}", dir.path().display());
            dir.keep();
        }
        let cert = (opts.client_tls || opts.backend_tls)
            .then(|| self_signed_cert(dir.path(), "tls").expect("certificate"));
        let old = PgInstance::start(PgOptions {
            tls: if opts.backend_tls { cert.clone() } else { None },
            auth: opts.backend_auth.unwrap_or("scram-sha-256"),
            logical: opts.logical,
            ..PgOptions::default()
        })
        .expect("start PostgreSQL");
        old.create_database("app", "app", "backend-pw")
            .expect("create database");
        let new = opts.phase.map(|_| {
            let new = PgInstance::start(PgOptions {
                logical: opts.logical,
                ..PgOptions::default()
            })
            .expect("start PostgreSQL (new)");
            new.create_database("app", "app", "backend-pw")
                .expect("create database (new)");
            new
        });
        let divergence_log = dir.path().join("divergences.jsonl");
        let port = free_port().expect("free port");
        let mut config = format!(
            r#"
[listen]
address = "127.0.0.1:{port}"

{socket_dir}

[backends.old]
host = "{old_host}"
port = {old_port}
database = "app"
user = "app"
password = "backend-pw"
{backend_tls}
{replication}

[backends.new]
host = "127.0.0.1"
port = {new_port}
database = "app"
user = "app"
password = "backend-pw"
{replication}

[[users]]
name = "app"
password = "{APP_PASSWORD}"

[[users]]
name = "md5user"
password = "{MD5_PASSWORD}"
auth = "md5"

[mirror]
on_error = "{on_error}"
ddl = "{ddl}"
divergence_log = "{divergence_log}"
statement_timeout_ms = 5000
{mirror_extra}

{sampling}

[state]
initial_phase = "{phase}"
{state_file}

{admin}

{metrics}

[limits]
auth_timeout_ms = 3000
{max_clients}
{max_message}

[log]
level = "debug"
"#,
            old_port = old.port,
            new_port = new.as_ref().map(|n| n.port).unwrap_or(1),
            on_error = opts.on_error.unwrap_or("record"),
            ddl = opts.ddl.unwrap_or("authority_only"),
            mirror_extra = opts.mirror_extra,
            state_file = if opts.admin {
                format!("file = \"{}\"", dir.path().join("state.json").display())
            } else {
                String::new()
            },
            metrics = opts
                .metrics
                .map(|p| format!("[metrics]\naddress = \"127.0.0.1:{p}\""))
                .unwrap_or_default(),
            admin = if opts.admin {
                format!(
                    "[admin]\nsocket = \"{}\"\naudit_log = \"{}\"\nflag_file = \"{}\"",
                    dir.path().join("admin.sock").display(),
                    dir.path().join("audit.jsonl").display(),
                    dir.path().join("phase.flag").display()
                )
            } else {
                String::new()
            },
            sampling = if opts.sampling.is_empty() {
                String::new()
            } else {
                format!(
                    "[sampling]\nreport = \"{}\"\n{}",
                    dir.path().join("read-diffs.jsonl").display(),
                    no_default_min_compared(opts.sampling),
                )
            },
            divergence_log = divergence_log.display(),
            replication = if opts.logical {
                "replication_user = \"postgres\"\nreplication_password = \"postgres\""
            } else {
                ""
            },
            phase = opts.phase.unwrap_or("passthrough"),
            old_host = if opts.unix_sockets {
                old.dir().display().to_string()
            } else {
                "127.0.0.1".to_string()
            },
            socket_dir = if opts.unix_sockets {
                format!("socket_dir = \"{}\"", dir.path().display())
            } else {
                String::new()
            },
            backend_tls = match (&cert, opts.backend_tls) {
                (Some((crt, _)), true) =>
                    format!("tls = \"verify-full\"\nca = \"{}\"", crt.display()),
                _ => String::new(),
            },
            max_clients = opts
                .max_clients
                .map(|n| format!("max_client_connections = {n}"))
                .unwrap_or_default(),
            max_message = [
                opts.max_message_size
                    .map(|n| format!("max_message_size = {n}")),
                opts.worker_threads.map(|n| format!("worker_threads = {n}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n"),
        );
        if opts.client_tls {
            let (crt, key) = cert.as_ref().expect("certificate");
            config.push_str(&format!(
                "\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\nrequired = {}\n",
                crt.display(),
                key.display(),
                opts.client_tls_required
            ));
        }
        if !opts.backfill_guard {
            // The reads flip waits for backfill and verify only where a
            // test asks for it (tests/backfill.rs).
            config.push_str("\n[backfill]\nrequired = false\n");
        }
        let config_path = dir.path().join("turnout.toml");
        std::fs::write(&config_path, config).expect("write config");
        let proxy = spawn_proxy(&config_path, dir.path().join("turnout.log"), port);
        if opts.admin {
            // The admin socket comes up just after the listener.
            eventually("the admin socket is up", || {
                dir.path().join("admin.sock").exists()
            });
        }
        Setup {
            old,
            new,
            proxy,
            dir,
            cert,
        }
    }

    /// libpq connection string to turnout.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=app user={user} password={password} connect_timeout=10",
            self.proxy.port
        )
    }

    pub fn app_url(&self) -> String {
        self.url("app", APP_PASSWORD)
    }

    /// libpq connection string straight to the old backend.
    pub fn direct_url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=app user=app password=backend-pw",
            self.old.port
        )
    }

    /// libpq connection string straight to the new backend.
    pub fn direct_new_url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=app user=app password=backend-pw",
            self.new.as_ref().expect("a new cluster").port
        )
    }

    /// The divergence log's records, one JSON text each.
    pub fn divergences(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("divergences.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// psql through turnout.
    /// The admin socket (with `Options::admin`).
    #[allow(dead_code)]
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Runs `turnout ctl --socket <admin socket> <args>`.
    #[allow(dead_code)]
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(turnout_bin())
            .arg("ctl")
            .arg("--socket")
            .arg(self.admin_socket())
            .args(args)
            .output()
            .expect("run turnout ctl")
    }

    /// Kills turnout and starts it again on the same port and config,
    /// logging to `log` (a file in the test's folder); waits for its admin
    /// socket.
    #[allow(dead_code)]
    pub fn restart_proxy(&mut self, log: &str) {
        let config = self.proxy.config.clone();
        let port = self.proxy.port;
        self.proxy.kill();
        let _ = std::fs::remove_file(self.admin_socket());
        self.proxy = spawn_proxy(&config, self.dir.path().join(log), port);
        let socket = self.admin_socket();
        eventually("the admin socket is up again", || socket.exists());
    }

    /// `turnout ctl <args>`, which must succeed; its output.
    #[allow(dead_code)]
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "turnout ctl {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// The phase `turnout ctl status` reports (empty when it cannot).
    #[allow(dead_code)]
    pub fn phase(&self) -> String {
        let out = self.ctl(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
        v["phase"].as_str().unwrap_or_default().to_string()
    }

    /// Runs each statement through turnout (psql, one `-c` each) and
    /// asserts that all succeeded.
    #[allow(dead_code)]
    pub fn run_ok(&self, statements: &[&str]) {
        let mut args = Vec::new();
        for sql in statements {
            args.extend(["-c", *sql]);
        }
        let out = self.psql(&self.app_url(), &args);
        assert!(out.status.success(), "{statements:?}: {}", stderr(&out));
    }

    /// The read-diff report file (`sampling.report`).
    pub fn read_diffs(&self) -> PathBuf {
        self.dir.path().join("read-diffs.jsonl")
    }

    /// The read-diff report's summary (`.summary.json` beside it), or null
    /// before it is written.
    #[allow(dead_code)]
    pub fn read_diff_summary(&self) -> serde_json::Value {
        let mut p = self.read_diffs().into_os_string();
        p.push(".summary.json");
        std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn psql(&self, url: &str, args: &[&str]) -> Output {
        psql(url, args, &[])
    }
}

pub fn psql(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("psql");
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t", url])
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run psql")
}

/// Runs each statement on `url` directly (psql, one `-c` each) and asserts
/// that all succeeded.
#[allow(dead_code)]
pub fn run_direct_ok(url: &str, statements: &[&str]) {
    let mut args = Vec::new();
    for sql in statements {
        args.extend(["-c", *sql]);
    }
    let out = psql(url, &args, &[]);
    assert!(out.status.success(), "{statements:?}: {}", stderr(&out));
}

/// A tokio-postgres client on `url` (no TLS), its connection driven by a
/// task of its own.
/// Runs a driver's workload (tests/drivers); the JSON report its last line
/// of output holds.
pub fn run_workload(mut cmd: Command) -> serde_json::Value {
    let out = cmd.output().expect("start the driver's workload");
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the driver's workload failed:\n{text}\n{}",
        stderr(&out)
    );
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the driver's report is not JSON ({e}): {text}"))
}

/// The next notification among a connection's messages, within 10 s
/// (`what` names the case in the failure).
pub async fn next_notification(
    messages: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
    what: &str,
) -> tokio_postgres::Notification {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match messages.recv().await {
                Some(tokio_postgres::AsyncMessage::Notification(n)) => return n,
                Some(_) => continue,
                None => panic!("connection closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no notification ({what})"))
}

pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect with tokio-postgres");
    tokio::spawn(conn);
    client
}

/// One value: `sql`'s answer on `url`, unaligned.
#[allow(dead_code)]
pub fn scalar(url: &str, sql: &str) -> String {
    stdout(&psql(url, &["-c", sql], &[]))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

pub fn spawn_proxy(config: &std::path::Path, log: PathBuf, port: u16) -> Proxy {
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(turnout_bin())
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn turnout");
    let mut proxy = Proxy {
        child,
        port,
        log,
        config: config.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if !proxy.is_running() || Instant::now() > deadline {
            let mut text = String::new();
            let _ = std::fs::File::open(&proxy.log).and_then(|mut f| f.read_to_string(&mut text));
            panic!("turnout did not start listening on {port}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The port takes connections once bound; turnout is ready (flag file
    // watched, admin socket served) when it says it listens.
    while !proxy.log_text().contains("turnout listening")
        && proxy.is_running()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy
}

/// Waits until `check` holds, up to 30 s.
#[allow(dead_code)]
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stalls a database: a session of its own holds `table` locked for
/// `seconds` (started in the background; wait on the child to see it end).
#[allow(dead_code)]
pub fn hold_lock(url: &str, table: &str, seconds: u32) -> Child {
    let child = Command::new("psql")
        .args(["-X", "-q", url])
        .args(["-c", "BEGIN", "-c", &format!("LOCK TABLE {table}")])
        .args(["-c", &format!("SELECT pg_sleep({seconds})"), "-c", "COMMIT"])
        .spawn()
        .expect("run psql");
    // Let it take the lock.
    std::thread::sleep(Duration::from_millis(500));
    child
}

#[allow(dead_code)]
/// Full contents of a table, in a fixed order, as text.
pub fn contents(url: &str, table: &str, order: &str) -> String {
    let out = psql(
        url,
        &[
            "-c",
            &format!("COPY (SELECT * FROM {table} ORDER BY {order}) TO STDOUT"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[allow(dead_code)]
pub const PGBENCH_TABLES: [(&str, &str); 4] = [
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
    ("pgbench_accounts", "aid"),
    ("pgbench_history", "tid, bid, aid, delta, mtime"),
];

/// [`assert_sides_identical`] once the mirror has caught up: where commits
/// are not waited for (`mirror.mode = "async"` from the log), new may still
/// be applying when the clients end; a difference that stays 30 s fails.
#[allow(dead_code)]
pub fn assert_sides_identical_once_applied(s: &Setup, tables: &[(&str, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let same = tables.iter().all(|(table, order)| {
            contents(&s.direct_url(), table, order) == contents(&s.direct_new_url(), table, order)
        });
        if same {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_sides_identical(s, tables);
}

#[allow(dead_code)]
pub fn assert_sides_identical(s: &Setup, tables: &[(&str, &str)]) {
    for (table, order) in tables {
        let old = contents(&s.direct_url(), table, order);
        let new = contents(&s.direct_new_url(), table, order);
        assert!(
            !old.is_empty() || *table == "pgbench_history",
            "{table} is empty"
        );
        if old != new {
            // What turnout said about it, for the failure's reader.
            let log = s.proxy.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "turnout's log (last lines):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        assert_same_rows(table, &old, &new);
        println!(
            "{table}: {} rows identical on both sides",
            old.lines().count()
        );
    }
}

/// Panics, naming the first differing row, unless `table`'s rows as read
/// from both sides (one per line) are the same.
#[allow(dead_code)]
pub fn assert_same_rows(table: &str, old: &str, new: &str) {
    if old != new {
        let first = old
            .lines()
            .zip(new.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("old: {a}\nnew: {b}"))
            .unwrap_or_else(|| format!("{} vs {} rows", old.lines().count(), new.lines().count()));
        panic!("{table} differs between old and new; first difference:\n{first}");
    }
}

/// A turnout with an admin socket (PostgreSQL's [`Setup`], MySQL's
/// `MySetup`).
#[allow(dead_code)]
pub trait Admin {
    /// `turnout ctl <args>`, which must succeed; its output.
    fn admin(&self, args: &[&str]) -> String;
    /// `turnout ctl <args>`: its exit code and output.
    fn admin_any(&self, args: &[&str]) -> (Option<i32>, String);
}

impl Admin for Setup {
    fn admin(&self, args: &[&str]) -> String {
        self.ctl_ok(args)
    }
    fn admin_any(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.ctl(args);
        (out.status.code(), stdout(&out))
    }
}

/// The status of `what` (backfill or verify), as JSON. `ctl` exits 1 for a
/// job that failed or a verify that found differences: the reply is read
/// either way, and its exit code checked against it.
#[allow(dead_code)]
pub fn job_status(s: &impl Admin, what: &str) -> serde_json::Value {
    let (code, text) = s.admin_any(&["--json", what, "status"]);
    let st: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let n = |k: &str| st[k].as_u64().unwrap_or(0);
    let bad = st["state"] == "failed"
        || (what == "verify"
            && st["state"] == "done"
            && n("missing") + n("extra") + n("differing") > n("repaired"));
    assert_eq!(
        code,
        Some(if bad { 1 } else { 0 }),
        "ctl {what} status: {st}"
    );
    st
}

/// Waits until `what` (backfill or verify) is done: its status. Panics when
/// it failed or took longer than `limit`.
#[allow(dead_code)]
pub fn wait_job(s: &impl Admin, what: &str, limit: Duration) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let st = job_status(s, what);
        match st["state"].as_str() {
            Some("done") => return st,
            Some("failed") => panic!("{what} failed: {st}"),
            _ => {}
        }
        assert!(
            started.elapsed() < limit,
            "{what} not done in {limit:?}: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `verify start --repair` (what it found is printed), then a verify that
/// must find both sides equal.
#[allow(dead_code)]
pub fn repair_then_verify_clean(s: &impl Admin) {
    s.admin(&["verify", "start", "--repair"]);
    let v = wait_job(s, "verify", Duration::from_secs(120));
    println!(
        "verify --repair: {} missing, {} extra, {} differing on new, {} repaired",
        v["missing"], v["extra"], v["differing"], v["repaired"]
    );
    s.admin(&["verify", "start"]);
    let v = wait_job(s, "verify", Duration::from_secs(120));
    assert_eq!(v["last_clean"], true, "{v}");
}

/// pgbench running `script` (a file of its custom-script syntax) through
/// turnout with `clients` clients for `seconds`, its output piped.
#[allow(dead_code)]
pub fn pgbench_script(s: &Setup, script: &std::path::Path, clients: u32, seconds: u32) -> Child {
    Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(script)
        .arg(s.app_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs each of `sessions` three times through turnout, each in one psql
/// session (its statements separated by `\n `, one `-c` each), and asserts
/// that every run failed: errors the client's own SQL or settings cause.
#[allow(dead_code)]
pub fn fail_three_times_each(s: &Setup, sessions: &[&str]) {
    for sql in sessions {
        for _ in 0..3 {
            let mut args = Vec::new();
            for one in sql.split("\n ") {
                args.extend(["-c", one]);
            }
            let out = s.psql(&s.app_url(), &args);
            assert!(!out.status.success(), "{sql} should fail");
        }
    }
}

/// Runs `f` to completion on a runtime of its own (for async drivers in
/// synchronous tests).
#[allow(dead_code)]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The `[sampling]` lines of a test (with any `[guards]` after them), with
/// `guards.min_compared_reads = 0` unless the test sets it: tests flip on
/// purpose without comparing reads first; the default minimum (100 while
/// reads are sampled) has tests of its own.
pub fn no_default_min_compared(sampling: &str) -> String {
    if sampling.contains("min_compared_reads") {
        return sampling.to_string();
    }
    match sampling.split_once("[guards]\n") {
        Some((before, after)) => format!("{before}[guards]\nmin_compared_reads = 0\n{after}"),
        None => format!("{sampling}\n[guards]\nmin_compared_reads = 0"),
    }
}

/// Waits for each pgbench run and asserts what its user checks: it
/// succeeded, with 0 failed transactions and no error.
#[allow(dead_code)]
pub fn assert_no_failed_pgbench(clients: Vec<std::process::Child>) {
    for c in clients {
        let out = c.wait_with_output().unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "pgbench failed:\n{text}");
        assert!(text.contains("number of failed transactions: 0"), "{text}");
        assert!(!text.contains("ERROR"), "{text}");
    }
}
