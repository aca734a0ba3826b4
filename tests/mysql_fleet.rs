//! A fleet of three turnout instances in front of two MariaDB servers,
//! sharing their phase through tables in database `turnout` on old's
//! server: sysbench through all three while flips and rollbacks are run
//! from different instances.

mod common;

use common::mysql::{MySetup, MY_PASSWORD};
use common::*;
use std::process::{Command, Stdio};

#[test]
fn a_mariadb_fleet_flips_as_one_under_sysbench() {
    flips_under_sysbench(None);
}

#[test]
fn a_mariadb_fleet_sharing_etcd_flips_as_one_under_sysbench() {
    let etcd = turnout_harness::EtcdInstance::start().expect("start etcd");
    flips_under_sysbench(Some(&etcd.url("mariadb")));
}

/// Three instances sharing `store` (`None`: tables on old's server).
fn flips_under_sysbench(store: Option<&str>) {
    let mut s = MySetup::start("mirror", "");
    // The fleet's store defaults to old's server, as `backends.old` logs
    // in: that login may make and use database `turnout`.
    s.old
        .sql("mysql", "GRANT ALL ON `turnout`.* TO 'app'@'%'")
        .expect("grant");
    let common = ["--tables=2", "--table-size=5000"];
    s.sysbench(&[&["oltp_read_write", "prepare"][..], &common].concat());
    s.proxy.kill();
    let template = std::fs::read_to_string(&s.proxy.config).unwrap();
    let _ = std::fs::remove_file(s.dir.path().join("state.json"));
    let f = fleet::Members::spawn(
        s.dir.path(),
        &template,
        s.proxy.port,
        Some(s.metrics_port),
        &match store {
            Some(url) => format!("lease_ms = 3000\nstore = \"{url}\""),
            None => "lease_ms = 3000".to_string(),
        },
    );
    let status = f.status(0);
    assert_eq!(
        status["fleet"]["members"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert!(
        status["fleet"]["store"]
            .as_str()
            .unwrap_or_default()
            .starts_with(if store.is_some() {
                "etcd://"
            } else {
                "mysql://"
            }),
        "{status}"
    );
    let runs: Vec<_> = (0..3)
        .map(|i| {
            Command::new("sysbench")
                .args(["oltp_read_write", "run", "--threads=2", "--time=14"])
                .args(common)
                .args([
                    "--db-driver=mysql",
                    "--mysql-host=127.0.0.1",
                    &format!("--mysql-port={}", f.port(i)),
                    "--mysql-user=app",
                    &format!("--mysql-password={MY_PASSWORD}"),
                    "--mysql-db=app",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run sysbench")
        })
        .collect();
    let writes = f.flip_round();
    assert!(
        writes.contains("3 live instance(s) acknowledged"),
        "{writes}"
    );
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        // sysbench stops at any error but deadlocks (retried, as they
        // would be against the database itself).
        assert!(out.status.success(), "sysbench failed:\n{text}");
        assert!(!text.contains("FATAL"), "{text}");
    }
    for t in ["sbtest1", "sbtest2"] {
        s.assert_identical(t, "id");
    }
}

#[test]
fn a_store_login_that_cannot_make_the_fleets_tables_is_a_clear_error_at_start() {
    let mut s = MySetup::start("mirror", "");
    s.proxy.kill();
    let config =
        std::fs::read_to_string(&s.proxy.config).unwrap() + "\n[fleet]\ninstance = \"a\"\n";
    let path = s.dir.path().join("fleet.toml");
    std::fs::write(&path, config).unwrap();
    let (code, text) = fleet::run_until_exit(&path);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("fleet store mysql://127.0.0.1:")
            && text.contains("CREATE DATABASE IF NOT EXISTS turnout")
            && text.contains("denied")
            && text.contains("does not accept clients"),
        "{text}"
    );
}
