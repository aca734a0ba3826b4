//! Set-up for the MySQL end-to-end tests: throwaway MariaDB servers for
//! `old` (and `new`), a config with `protocol = "mysql"`, and the real
//! `turnout` binary in front.

use super::{spawn_proxy, Proxy};
use std::process::{Command, Output};
use turnout_harness::{free_port, self_signed_cert, MariaDbInstance, TempDir};

pub const MY_PASSWORD: &str = "my-app-pw";

pub struct MySetup {
    /// Where turnout serves Prometheus metrics.
    pub metrics_port: u16,
    pub old: MariaDbInstance,
    pub new: MariaDbInstance,
    pub proxy: Proxy,
    pub dir: TempDir,
    /// new is database `app_v2` on old's server (not the `new` instance).
    pub one_server: bool,
}

/// Runs `sql` with the `mariadb` client through turnout on `port` as `user`.
fn mariadb_at(port: u16, user: &str, password: &str, sql: &str, extra: &[&str]) -> Output {
    Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &port.to_string()])
        .args(["-u", user, "-D", "app", "-N", "-B"])
        .arg(format!("--password={password}"))
        .args(extra)
        .args(["-e", sql])
        .output()
        .expect("run mariadb")
}

impl MySetup {
    /// Two MariaDB servers with database `app` (user `app`), and turnout
    /// in `phase` with `extra` config appended.
    pub fn start(phase: &str, extra: &str) -> MySetup {
        Self::start_with(phase, extra, None, "")
    }

    /// [`MySetup::start_with`], with the backends serving TLS and turnout
    /// verifying them (`tls = "verify-full"`).
    pub fn start_backend_tls(phase: &str, extra: &str) -> MySetup {
        Self::start_opts(phase, extra, None, "", true)
    }

    /// [`MySetup::start`], with TLS for clients (`Some(required)`) from a
    /// self-signed certificate (`dir/tls.crt`).
    /// `sampling`: lines for the `[sampling]` section (its report is
    /// `dir/read-diffs.jsonl`).
    pub fn start_with(phase: &str, extra: &str, tls: Option<bool>, sampling: &str) -> MySetup {
        Self::start_opts(phase, extra, tls, sampling, false)
    }

    pub fn start_opts(
        phase: &str,
        extra: &str,
        tls: Option<bool>,
        sampling: &str,
        backend_tls: bool,
    ) -> MySetup {
        Self::start_full(phase, extra, tls, sampling, backend_tls, false, "")
    }

    /// [`MySetup::start`] with more keys of the `[mirror]` section
    /// (`mirror`, e.g. `mode = "async"`).
    pub fn start_mirror(phase: &str, mirror: &str, extra: &str) -> MySetup {
        Self::start_full(phase, extra, None, "", false, false, mirror)
    }

    /// [`MySetup::start`] with old and new as two databases of one server:
    /// old is `app`, new is `app_v2`, both on `old`'s MariaDB.
    pub fn start_one_server(phase: &str, extra: &str) -> MySetup {
        Self::start_full(phase, extra, None, "", false, true, "")
    }

    fn start_full(
        phase: &str,
        extra: &str,
        tls: Option<bool>,
        sampling: &str,
        backend_tls: bool,
        one_server: bool,
        mirror: &str,
    ) -> MySetup {
        let dir = TempDir::new("turnout-mytest").expect("temp dir");
        let cert = (tls.is_some() || backend_tls)
            .then(|| self_signed_cert(dir.path(), "tls").expect("certificate"));
        let tls = tls
            .map(|required| {
                let (crt, key) = cert.clone().expect("certificate");
                format!(
                    "[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\nrequired = {required}\n",
                    crt.display(),
                    key.display()
                )
            })
            .unwrap_or_default();
        let server_tls = cert.clone().filter(|_| backend_tls);
        // From the log ([`super::from_the_log`]): both servers keep a
        // row-based binary log, read and replayed as root.
        let logged = super::log_source() || mirror.contains("source = \"log\"");
        let old =
            MariaDbInstance::start_opts(server_tls.clone(), logged).expect("start MariaDB (old)");
        let new = MariaDbInstance::start_opts(server_tls, logged).expect("start MariaDB (new)");
        let mut mirror = mirror.to_string();
        let replication = if logged {
            if !mirror.contains("source =") {
                mirror.push_str("\nsource = \"log\"");
            }
            "replication_user = \"root\"\nreplication_password = \"root-pw\""
        } else {
            ""
        };
        let backend_tls = match (&cert, backend_tls) {
            (Some((crt, _)), true) => {
                format!("tls = \"verify-full\"\nca = \"{}\"", crt.display())
            }
            _ => String::new(),
        };
        for m in [&old, &new] {
            m.create_database("app", "app", "backend-pw")
                .expect("create database");
        }
        let (new_port, new_db) = if one_server {
            old.create_database("app_v2", "app", "backend-pw")
                .expect("create database");
            (old.port, "app_v2")
        } else {
            (new.port, "app")
        };
        let port = free_port().expect("free port");
        let metrics_port = free_port().expect("free port");
        let config = format!(
            r#"
protocol = "mysql"

[listen]
address = "127.0.0.1:{port}"

[backends.old]
host = "{host}"
port = {old_port}
database = "app"
user = "app"
password = "backend-pw"
{backend_tls}
{replication}

[backends.new]
host = "{host}"
port = {new_port}
database = "{new_db}"
user = "app"
password = "backend-pw"
{backend_tls}
{replication}

[[users]]
name = "app"
password = "{MY_PASSWORD}"

[mirror]
ddl = "both"
divergence_log = "{divergences}"
{mirror}

[sampling]
report = "{report}"
{sampling}

[state]
initial_phase = "{phase}"
file = "{state}"

[metrics]
address = "127.0.0.1:{metrics_port}"

[admin]
socket = "{socket}"
audit_log = "{audit}"

[limits]
auth_timeout_ms = 3000

# The reads flip's backfill guard is tested on its own (tests/backfill.rs).
[backfill]
required = false

[log]
level = "debug"

{tls}

{extra}
"#,
            old_port = old.port,
            // The certificate names localhost and 127.0.0.1.
            host = "127.0.0.1",
            divergences = dir.path().join("divergences.jsonl").display(),
            state = dir.path().join("state.json").display(),
            report = dir.path().join("read-diffs.jsonl").display(),
            sampling = super::no_default_min_compared(sampling),
            socket = dir.path().join("admin.sock").display(),
            audit = dir.path().join("audit.jsonl").display(),
        );
        let config_path = dir.path().join("turnout.toml");
        std::fs::write(&config_path, config).expect("write config");
        let proxy = spawn_proxy(&config_path, dir.path().join("turnout.log"), port);
        // The admin socket comes up just after the listener.
        super::eventually("the admin socket is up", || {
            dir.path().join("admin.sock").exists()
        });
        MySetup {
            metrics_port,
            old,
            new,
            proxy,
            dir,
            one_server,
        }
    }

    /// A mysql_async connection through turnout as `app`.
    pub async fn connect(&self) -> mysql_async::Conn {
        let url = format!(
            "mysql://app:{MY_PASSWORD}@127.0.0.1:{}/app",
            self.proxy.port
        );
        let opts = mysql_async::Opts::from_url(&url).expect("a MySQL URL");
        mysql_async::Conn::new(opts)
            .await
            .expect("connect through turnout with mysql_async")
    }

    /// Runs `sql` with the `mariadb` client through turnout as `user`.
    pub fn mariadb(&self, user: &str, password: &str, sql: &str, extra: &[&str]) -> Output {
        mariadb_at(self.proxy.port, user, password, sql, extra)
    }

    /// `SELECT SLEEP(4)` through turnout as `user`, in the background (a
    /// statement no one else may cut), and its thread id on old once it
    /// runs there.
    #[allow(dead_code)]
    pub fn sleeping(
        &self,
        user: &str,
        password: &str,
    ) -> (std::thread::JoinHandle<Output>, String) {
        let (port, user, password) = (self.proxy.port, user.to_string(), password.to_string());
        let held =
            std::thread::spawn(move || mariadb_at(port, &user, &password, "SELECT SLEEP(4)", &[]));
        let mut thread = String::new();
        super::eventually("the sleeping statement runs on old", || {
            thread = self
                .old
                .sql(
                    "app",
                    "SELECT id FROM information_schema.processlist WHERE info = 'SELECT SLEEP(4)'",
                )
                .unwrap_or_default();
            !thread.is_empty()
        });
        (held, thread)
    }

    /// Runs `sql` through turnout as `app`; asserts it worked; its output.
    pub fn sql_ok(&self, sql: &str) -> String {
        let out = self.mariadb("app", MY_PASSWORD, sql, &[]);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl MySetup {
    /// Asserts that `table` (ordered by `order`) is the same on both sides.
    pub fn assert_identical(&self, table: &str, order: &str) {
        let q = format!("SELECT * FROM {table} ORDER BY {order}");
        let old = self.old.sql("app", &q).expect("read old");
        let new = self.new_sql(&q);
        super::assert_same_rows(table, &old, &new);
        assert!(!old.is_empty(), "{table} is empty");
        println!(
            "{table}: {} rows identical on both sides",
            old.lines().count()
        );
    }

    /// Runs `sql` on new's database directly (as root); its output.
    pub fn new_sql(&self, sql: &str) -> String {
        let r = if self.one_server {
            self.old.sql("app_v2", sql)
        } else {
            self.new.sql("app", sql)
        };
        r.expect("query new")
    }

    /// `turnout ctl <args>` on this proxy's admin socket, which must
    /// succeed; its output.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "turnout ctl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// `turnout ctl <args>` on this proxy's admin socket.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(super::turnout_bin())
            .arg("ctl")
            .arg("--socket")
            .arg(self.dir.path().join("admin.sock"))
            .args(args)
            .output()
            .expect("run turnout ctl")
    }

    /// Kills turnout (as a crash would) and starts it again with the same
    /// config, logging to `log`.
    #[allow(dead_code)]
    pub fn restart_proxy(&mut self, log: &str) {
        let config = self.dir.path().join("turnout.toml");
        let port = self.proxy.port;
        self.proxy.kill();
        let socket = self.dir.path().join("admin.sock");
        let _ = std::fs::remove_file(&socket);
        self.proxy = spawn_proxy(&config, self.dir.path().join(log), port);
        super::eventually("the admin socket is up again", || socket.exists());
    }

    /// turnout's Prometheus metrics text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut c =
            std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("metrics");
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        text
    }

    /// The divergence log's lines (`mirror.divergence_log` must be set to
    /// `dir/divergences.jsonl`).
    pub fn divergences(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("divergences.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// sysbench `args` (a test name and its options) through turnout.
    pub fn sysbench(&self, args: &[&str]) -> String {
        let out = Command::new("sysbench")
            .args(args)
            .args([
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={}", self.proxy.port),
                "--mysql-user=app",
                &format!("--mysql-password={MY_PASSWORD}"),
                "--mysql-db=app",
            ])
            .output()
            .expect("run sysbench (apt-get install sysbench; .ci/run installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "sysbench {args:?} failed:\n{text}");
        text
    }
}

impl super::Admin for MySetup {
    fn admin(&self, args: &[&str]) -> String {
        self.ctl_ok(args)
    }
    fn admin_any(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.ctl(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}
