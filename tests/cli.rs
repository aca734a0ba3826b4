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
    let out = common::psql(&url, &["-c", "SELECT count(*) FROM orders"], &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "1000");

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
