//! The `turnout` command line: check-config and demo, as a user runs them.

mod common;

use common::turnout_bin;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn check_config_names_the_bad_key() {
    let dir = turnout_harness::TempDir::new("turnout-cli").unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[listen]
address = "127.0.0.1:6432"
[backends.old]
host = "127.0.0.1"
port = 5432
database = "app"
user = "app"
[backends.new]
host = "127.0.0.1"
port = 70000
database = "app"
user = "app"
[[users]]
name = "app"
password = "x"
"#,
    )
    .unwrap();
    let out = Command::new(turnout_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("backends.new.port: expected 1-65535, got 70000"),
        "{err}"
    );

    std::fs::write(&path, "[listen]\naddress = \"127.0.0.1:6432\"\nbogus = 1\n").unwrap();
    let out = Command::new(turnout_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `bogus`"), "{err}");

    // `run` refuses the same file before listening.
    let out = Command::new(turnout_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let missing = Command::new(turnout_bin())
        .args(["check-config", "/nonexistent/turnout.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

/// Runs `turnout` with `args`; (exit code, stdout, stderr).
fn turnout(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(turnout_bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `mariadb` client on `port` as app, running `sql`; its output,
/// which must be a success.
fn mariadb(port: u16, extra: &[&str], sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &port.to_string()])
        .args(["-u", "app", "-papp", "app"])
        .args(extra)
        .args(["-e", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Reads through the demo's turnout: the customers (a mapped table) and
/// the orders, each by key.
fn demo_reads(mysql: bool, port: u16, n: usize) {
    let mut sql = String::new();
    for i in 1..=n {
        sql.push_str(&format!(
            "SELECT id, name, email FROM customers WHERE id = {};\nSELECT id, amount_cents FROM orders WHERE id = {};\n",
            1 + i % 100,
            1 + i % 1000
        ));
    }
    if mysql {
        mariadb(port, &[], &sql);
        return;
    }
    let out = {
        // One statement per -c: a text of several is not sampled.
        let url = format!("postgres://app:app@127.0.0.1:{port}/app");
        let mut c = Command::new("psql");
        c.args([&url, "-q", "-X", "-v", "ON_ERROR_STOP=1"]);
        for statement in sql.lines() {
            c.args(["-c", statement]);
        }
        c.output().unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The demo's mapped cutover as a newcomer walks it: the runbook `turnout
/// plan` prints, every command run as written, from mirror to finalized;
/// status and the flip agree; Ctrl-C ends it with exit 0 and nothing left.
fn walk_the_demo(mysql: bool) {
    let port = turnout_harness::free_port().unwrap();
    // The demo's application runs through every flip and after finalize
    // (a commit of its waiting for the log applier that finalize stopped
    // once hung it until Ctrl-C cut it).
    let mut args = vec![
        "demo".to_string(),
        "--traffic".into(),
        "--port".into(),
        port.to_string(),
    ];
    if mysql {
        args.push("--mysql".into());
    }
    let mut child = Command::new(turnout_bin())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut config_dir = None;
    let mut tries = Vec::new();
    let mut in_try = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.unwrap();
        println!("demo: {line}");
        if let Some(path) = line.trim().strip_prefix("config:") {
            config_dir = std::path::Path::new(path.trim())
                .parent()
                .map(|p| p.to_path_buf());
        }
        if in_try && !line.trim().is_empty() {
            tries.push(line.trim().to_string());
        }
        if line.starts_with("Try:") {
            in_try = true;
        }
        if line.contains("Press Ctrl-C") || Instant::now() > deadline {
            break;
        }
    }
    let config_dir = config_dir.expect("demo printed its config path");
    let config = config_dir.join("turnout.toml");
    let config_s = config.display().to_string();
    let exe = turnout_bin().to_string();
    // Its "Try:" lines name this very binary, so they run as printed.
    assert!(
        tries.iter().filter(|t| t.starts_with(&exe)).count() >= 5,
        "{tries:?}"
    );
    let (_, new_port) = {
        let text = std::fs::read_to_string(&config).unwrap();
        let port_of = |section: &str| -> u16 {
            let at = text.find(section).unwrap();
            text[at..]
                .lines()
                .find_map(|l| l.strip_prefix("port = "))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        (port_of("[backends.old]"), port_of("[backends.new]"))
    };

    common::eventually("the demo serves", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // A write through turnout lands on new in new's shape.
    let (code, out) = if mysql {
        let insert = "INSERT INTO customers (name, email, legacy_code) VALUES ('Ann', 'ann@Example.COM', 'x')";
        mariadb(port, &[], insert);
        let select = "SELECT full_name, email_domain FROM clients WHERE email = 'ann@Example.COM'";
        (true, mariadb(new_port, &["-N", "-B"], select))
    } else {
        let url = format!("postgres://app:app@127.0.0.1:{port}/app");
        let out = common::psql(
            &url,
            &["-c", "INSERT INTO customers (name, email, legacy_code) VALUES ('Ann', 'ann@Example.COM', 'x')"],
            &[],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        let out = common::psql(
            &format!("postgres://app:app@127.0.0.1:{new_port}/app"),
            &[
                "-c",
                "SELECT full_name, email_domain FROM clients WHERE email = 'ann@Example.COM'",
            ],
            &[],
        );
        (
            out.status.success(),
            common::stdout(&out).replace('|', "\t"),
        )
    };
    assert!(code, "{out}");
    assert_eq!(out, "Ann\texample.com");

    // On a fresh demo, status lists exactly why the flip is refused.
    let (code, status, err) = turnout(&["ctl", "--json", "--config", &config_s, "status"]);
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    // Both demos mirror from old's log (MariaDB's binary log, through the
    // mapping).
    assert_eq!(status["mirror_source"]["source"], "log", "{status}");
    let reasons: Vec<String> = status["next"]["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    let (code, _, refused) = turnout(&["ctl", "--config", &config_s, "flip", "reads"]);
    assert_eq!(code, Some(1), "{refused}");
    for r in &reasons {
        assert!(refused.contains(r.as_str()), "{r:?} not in {refused}");
    }
    // A job for a table that is not there is refused before it starts.
    let (code, _, err) = turnout(&[
        "ctl",
        "--config",
        &config_s,
        "backfill",
        "start",
        "nosuchtable",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no table \"nosuchtable\""), "{err}");
    let (code, out, err) = turnout(&[
        "ctl",
        "--config",
        &config_s,
        "backfill",
        "start",
        "--dry-run",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("dry run: would backfill 2 table(s): customers, orders"),
        "{out}"
    );
    // A config with an error elsewhere still finds the socket.
    let broken = config_dir.join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("[mirror]", "[mirror]\nbogus = 1"),
    )
    .unwrap();
    let (code, out, err) = turnout(&["ctl", "--config", &broken.display().to_string(), "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("phase       mirror"), "{out}");

    // The runbook, every command as written. Reads compared on new first
    // (the guard wants 20), once the backfill and verify ran.
    let (code, plan, err) = turnout(&["plan", "--config", &config_s]);
    println!("{plan}");
    assert_eq!(code, Some(0), "{err}");
    let source = if mysql {
        "mirror source: the binary log of old"
    } else {
        "mirror source: the log of old"
    };
    assert!(plan.contains(source), "{plan}");
    for expected in [
        "== Mirror source ==",
        "== Schema difference (old -> new) ==",
        "RENAME TO clients",
        "RENAME COLUMN name TO full_name",
        "DROP COLUMN legacy_code",
        "== Runbook ==",
    ] {
        assert!(plan.contains(expected), "{expected:?} missing");
    }
    let commands: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("$ turnout "))
        .collect();
    assert!(
        commands.iter().any(|c| c.ends_with("finalize --yes")),
        "{commands:?}"
    );
    for c in commands {
        if c.contains("flip reads --dry-run") {
            // The demo's application (--traffic) makes them.
            common::eventually("20 reads compared", || {
                let (_, s, _) = turnout(&["ctl", "--json", "--config", &config_s, "status"]);
                serde_json::from_str::<serde_json::Value>(&s).unwrap()["guards"]["figures"]
                    ["compared"]
                    .as_u64()
                    .unwrap_or(0)
                    >= 20
            });
            // The report agrees: GO, and says so in its exit code.
            let (code, report, err) = turnout(&["report", "--config", &config_s, "--check"]);
            println!("{report}");
            assert_eq!(code, Some(0), "{report}{err}");
            assert!(report.starts_with("VERDICT: GO"), "{report}");
        }
        let args: Vec<&str> = c.split_whitespace().collect();
        let (code, out, err) = turnout(&args);
        assert_eq!(code, Some(0), "turnout {c}: {out}{err}");
    }
    let (_, status, _) = turnout(&["ctl", "--config", &config_s, "status"]);
    assert!(status.contains("FINALIZED"), "{status}");
    // The application's statements (old's names) still answer after
    // finalize, the one the demo printed too.
    assert!(
        tries
            .iter()
            .any(|t| t.contains("SELECT id, name FROM customers WHERE id = 1")),
        "{tries:?}"
    );
    demo_reads(mysql, port, 5);
    let written = if mysql {
        mariadb(
            port,
            &["-N", "-B"],
            "INSERT INTO customers (name, email) VALUES ('Bo', 'bo@example.com'); SELECT name FROM customers WHERE email = 'bo@example.com'",
        )
    } else {
        let out = common::psql(
            &format!("postgres://app:app@127.0.0.1:{port}/app"),
            &[
                "-c",
                "INSERT INTO customers (name, email) VALUES ('Bo', 'bo@example.com')",
                "-c",
                "SELECT name FROM customers WHERE email = 'bo@example.com'",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        common::stdout(&out)
    };
    assert_eq!(written.trim(), "Bo");

    // Ctrl-C: exit 0, no error, everything the demo made removed.
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    for line in lines.map_while(Result::ok) {
        println!("demo: {line}");
    }
    let status = child.wait().unwrap();
    let err = errors.join().unwrap();
    println!("demo stderr: {err}");
    assert_eq!(status.code(), Some(0), "{err}");
    // The application never failed, through every flip and after finalize.
    assert!(!err.contains("demo traffic:"), "{err}");
    assert!(!err.contains("turnout demo:"), "{err}");
    assert!(!err.contains('\x1b'), "no ANSI codes in a pipe: {err:?}");
    assert!(!config_dir.exists(), "{} left behind", config_dir.display());
}

#[test]
fn the_demo_walks_a_mapped_cutover_on_postgres_and_cleans_up_on_ctrl_c() {
    walk_the_demo(false);
}

#[test]
fn the_demo_walks_a_mapped_cutover_on_mariadb_and_cleans_up_on_ctrl_c() {
    walk_the_demo(true);
}

#[test]
fn ctl_help_lists_the_admin_commands_and_bad_use_exits_2() {
    let (code, out, _) = turnout(&["ctl", "--help"]);
    assert_eq!(code, Some(0));
    for c in [
        "status",
        "flip reads",
        "finalize",
        "rollback",
        "ack",
        "backfill start",
        "verify start",
        "--dry-run",
        "Exit codes",
    ] {
        assert!(out.contains(c), "{c:?} missing from {out}");
    }
    let (code, _, err) = turnout(&["ctl", "--socket", "/nonexistent/admin.sock", "status"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is turnout running"), "{err}");
    // A command turnout does not know is a usage error.
    let (code, _, err) = turnout(&["ctl", "--socket", "/nonexistent/admin.sock", "bogus"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = turnout(&[
        "ctl",
        "--socket",
        "/nonexistent/admin.sock",
        "flip",
        "reads",
        "--yes",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--yes only goes with finalize"), "{err}");
    let (code, _, err) = turnout(&["ctl", "--socket", "/nonexistent/admin.sock", "finalize"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--yes"), "{err}");
}

#[test]
fn backends_are_checked_before_serving_and_a_wrong_backend_password_says_so() {
    let s = common::Setup::start(common::Options {
        phase: Some("mirror"),
        ..common::Options::default()
    });
    let config = s.dir.path().join("turnout.toml");
    let out = Command::new(common::turnout_bin())
        .args(["check-config", "--connect"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("backend old") && text.contains("backend new") && text.contains("logged in"),
        "{text}"
    );
    assert!(text.contains("schemas: new has every table"), "{text}");
    // Without a mapping the schemas are compared too: a table only on old
    // (every write to it would fail on new) is named.
    common::run_direct_ok(
        &s.direct_url(),
        &["CREATE TABLE only_on_old (id int PRIMARY KEY, v text)"],
    );
    let out = Command::new(common::turnout_bin())
        .args(["check-config", "--connect", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("table only_on_old exists on old only"),
        "{err}"
    );
    common::run_direct_ok(&s.direct_url(), &["DROP TABLE only_on_old"]);

    // new's password wrong: named, and turnout does not start in mirror.
    let good = std::fs::read_to_string(&config).unwrap();
    let at = good.find("[backends.new]").unwrap();
    let (head, tail) = good.split_at(at);
    let bad = format!(
        "{head}{}",
        tail.replacen("backend-pw", "not-the-password", 1)
    );
    let bad_path = s.dir.path().join("bad.toml");
    std::fs::write(&bad_path, &bad).unwrap();
    let out = Command::new(common::turnout_bin())
        .args(["check-config", "--connect"])
        .arg(&bad_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("backend new") && err.contains("password authentication failed"),
        "{err}"
    );
    // Another port, so the running proxy is not in the way.
    let port = turnout_harness::free_port().unwrap();
    let bad = bad.replace(
        &format!("127.0.0.1:{}\"", s.proxy.port),
        &format!("127.0.0.1:{port}\""),
    );
    std::fs::write(&bad_path, &bad).unwrap();
    let out = Command::new(common::turnout_bin())
        .args(["run", "--config"])
        .arg(&bad_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("{err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not enter mirror") && err.contains("backend new"),
        "{err}"
    );
}
