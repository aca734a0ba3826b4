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

#[test]
fn demo_serves_the_sample_schema_and_cleans_up_on_ctrl_c() {
    let port = turnout_harness::free_port().unwrap();
    let mut child = Command::new(turnout_bin())
        .args(["demo", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut config_dir = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines.by_ref() {
        let line = line.unwrap();
        println!("demo: {line}");
        if let Some(path) = line.trim().strip_prefix("config:") {
            config_dir = std::path::Path::new(path.trim())
                .parent()
                .map(|p| p.to_path_buf());
        }
        if line.contains("Press Ctrl-C") || Instant::now() > deadline {
            break;
        }
    }
    let config_dir = config_dir.expect("demo printed its config path");
    let url = format!("postgres://app:app@127.0.0.1:{port}/app");
    common::eventually("the demo serves", || {
        common::psql(&url, &["-c", "SELECT 1"], &[])
            .status
            .success()
    });
    let out = common::psql(&url, &["-c", "SELECT count(*) FROM orders"], &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "1000");

    // `turnout plan` on the demo: its risks, and a runbook whose commands
    // run as written, one after the other, to the end.
    let config = config_dir.join("turnout.toml");
    let out = Command::new(turnout_bin())
        .args(["plan", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let plan = common::stdout(&out);
    println!("{plan}");
    assert!(out.status.success(), "{}", common::stderr(&out));
    for expected in [
        "== Schema difference (old -> new) ==",
        "-- none: new has old's tables and columns",
        "foreign key orders.customer_id -> customers",
        "customers.id takes ids from a sequence",
        "customers.created_at defaults to now()",
        "== Runbook ==",
    ] {
        assert!(plan.contains(expected), "{expected:?} missing");
    }
    let commands: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("$ turnout "))
        .collect();
    assert!(
        commands.iter().any(|c| c.ends_with("finalize")),
        "{commands:?}"
    );
    for c in commands {
        let out = Command::new(turnout_bin())
            .args(c.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "turnout {c}: {}{}",
            common::stdout(&out),
            common::stderr(&out)
        );
    }
    let json = Command::new(turnout_bin())
        .args(["plan", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["phase"], "finalized");
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(4));

    // Ctrl-C: everything the demo made is removed.
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    for line in lines.map_while(Result::ok) {
        println!("demo: {line}");
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!config_dir.exists(), "{} left behind", config_dir.display());
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
