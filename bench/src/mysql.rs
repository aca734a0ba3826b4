//! `--mysql-only`: sysbench against MariaDB directly and through turnout,
//! alternating in one run: `oltp_point_select` through a passthrough
//! turnout, and `oltp_write_only` through a turnout in phase `mirror`, with
//! each source: statements (every write run on the second MariaDB server
//! in lockstep) and old's binary log (replayed on new in commit order).
//! Both servers keep a row-based binary log, as a log source needs.

use super::{Args, Killed};
use std::path::Path;
use std::process::Command;
use turnout_instances::{free_port, MariaDbInstance, TempDir};

fn server() -> Result<MariaDbInstance, String> {
    let m = MariaDbInstance::start_opts(None, true).map_err(|e| e.to_string())?;
    m.create_database("bench", "bench", "bench")
        .map_err(|e| e.to_string())?;
    Ok(m)
}

fn start_turnout(
    dir: &Path,
    name: &str,
    old: u16,
    new: u16,
    phase: &str,
    source: &str,
) -> Result<(Killed, u16), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    // The log source reads and replays as root.
    let replication = if source == "log" {
        "replication_user = \"root\"\nreplication_password = \"root-pw\""
    } else {
        ""
    };
    let config = format!(
        r#"protocol = "mysql"
[listen]
address = "127.0.0.1:{port}"
[backends.old]
host = "127.0.0.1"
port = {old}
database = "bench"
user = "bench"
password = "bench"
{replication}
[backends.new]
host = "127.0.0.1"
port = {new}
database = "bench"
user = "bench"
password = "bench"
{replication}
[[users]]
name = "bench"
password = "bench"
[mirror]
ddl = "both"
source = "{source}"
divergence_log = "{divergences}"
[state]
initial_phase = "{phase}"
file = "{state}"
[log]
level = "warn"
"#,
        divergences = dir.join(format!("{name}-divergences.jsonl")).display(),
        state = dir.join(format!("{name}-state.json")).display(),
    );
    Ok((super::spawn_turnout(dir, name, &config, port)?, port))
}

/// sysbench `test` `command` against 127.0.0.1:`port`; transactions per
/// second for `run`.
fn sysbench(test: &str, command: &str, port: u16, extra: &[String]) -> Result<f64, String> {
    let out = Command::new("sysbench")
        .args([test, command, "--db-driver=mysql", "--mysql-host=127.0.0.1"])
        .arg(format!("--mysql-port={port}"))
        .args([
            "--mysql-user=bench",
            "--mysql-password=bench",
            "--mysql-db=bench",
        ])
        .args(["--tables=4", "--table-size=20000"])
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run sysbench (apt-get install sysbench): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "sysbench {test} {command}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if command != "run" {
        return Ok(0.0);
    }
    text.lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no transactions line in sysbench's output:\n{text}"))
}

pub fn bench(args: &Args, dir: &TempDir) -> Result<(), String> {
    eprintln!("starting MariaDB (old and new)...");
    let old = server()?;
    let new = server()?;
    let (_pass, pass_port) = start_turnout(
        dir.path(),
        "my-pass",
        old.port,
        new.port,
        "passthrough",
        "statements",
    )?;
    let (_mirror, mirror_port) = start_turnout(
        dir.path(),
        "my-mirror",
        old.port,
        new.port,
        "mirror",
        "statements",
    )?;
    // The tables, made through the mirroring turnout: alike on both sides.
    sysbench("oltp_read_write", "prepare", mirror_port, &[])?;
    let run = [
        format!("--threads={}", args.clients),
        format!("--time={}", args.seconds),
    ];
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    for round in 0..args.rounds {
        let pair = |test: &str, port: u16| -> Result<(f64, f64), String> {
            // Alternate which goes first, so neither always runs warm.
            let (a, b) = if round % 2 == 0 {
                let d = sysbench(test, "run", old.port, &run)?;
                (d, sysbench(test, "run", port, &run)?)
            } else {
                let t = sysbench(test, "run", port, &run)?;
                (sysbench(test, "run", old.port, &run)?, t)
            };
            Ok((a, b))
        };
        let (d, t) = pair("oltp_point_select", pass_port)?;
        eprintln!("round {round}: oltp_point_select direct {d:.0} tps, turnout {t:.0} tps");
        rows.push(("oltp_point_select, passthrough".into(), d, t));
        let (d, t) = pair("oltp_write_only", mirror_port)?;
        eprintln!("round {round}: oltp_write_only direct {d:.0} tps, mirrored {t:.0} tps");
        rows.push(("oltp_write_only, mirror (statements)".into(), d, t));
        // From the log: a turnout of its own, started for its run only (its
        // applier would also replay the other runs' writes on new) and from
        // old's position then (a state file of its own each time).
        let d = sysbench("oltp_write_only", "run", old.port, &run)?;
        let name = format!("my-log-{round}");
        let (log_turnout, log_port) =
            start_turnout(dir.path(), &name, old.port, new.port, "mirror", "log")?;
        let t = sysbench("oltp_write_only", "run", log_port, &run)?;
        log_turnout.terminate();
        eprintln!("round {round}: oltp_write_only direct {d:.0} tps, from the log {t:.0} tps");
        rows.push(("oltp_write_only, mirror (log)".into(), d, t));
    }
    println!(
        "\nsysbench, {} threads, {} s per run, {} rounds (MariaDB {}):",
        args.clients,
        args.seconds,
        args.rounds,
        old.sql("bench", "SELECT VERSION()").unwrap_or_default()
    );
    println!("| workload | direct tps | turnout tps | ratio |\n| --- | ---: | ---: | ---: |");
    for (name, d, t) in &rows {
        println!("| {name} | {d:.0} | {t:.0} | {:.3} |", t / d);
    }
    Ok(())
}
