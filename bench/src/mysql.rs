//! `--mysql-only`: sysbench against MariaDB directly and through turnout,
//! alternating in one run: `oltp_point_select` through a passthrough
//! turnout, and `oltp_write_only` through a turnout in phase `mirror`, with
//! each source: statements (every write run on the second MariaDB server
//! in lockstep) and old's binary log (replayed on new in commit order).
//! Both servers keep a row-based binary log, as a log source needs.

use super::{cpu_micros, Args, Killed};
use std::path::Path;
use std::process::{Command, Stdio};
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

/// haproxy in TCP mode in front of `backend` (no protocol work: one
/// user-space hop), when installed: it and its port.
fn start_haproxy(dir: &Path, backend: u16) -> Result<Option<(Killed, u16)>, String> {
    let Some(bin) = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|b| Path::new(b).exists())
    else {
        return Ok(None);
    };
    let port = free_port().map_err(|e| e.to_string())?;
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\nlisten mariadb\n  bind 127.0.0.1:{port}\n  server old 127.0.0.1:{backend}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args(["-db", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start haproxy: {e}"))?;
    let child = Killed(child);
    super::wait_port(port)?;
    Ok(Some((child, port)))
}

/// sysbench `test` run through a proxy (`pid`): its tps and the proxy's
/// CPU microseconds per transaction.
fn sysbench_cpu(
    test: &str,
    port: u16,
    pid: u32,
    run: &[String],
) -> Result<(f64, Option<f64>), String> {
    let before = cpu_micros(pid);
    let seconds: f64 = run
        .iter()
        .find_map(|a| a.strip_prefix("--time="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let tps = sysbench(test, "run", port, run)?;
    let cpu = match (before, cpu_micros(pid)) {
        (Some(b), Some(a)) if tps > 0.0 => Some((a - b) / (tps * seconds)),
        _ => None,
    };
    Ok((tps, cpu))
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
    let haproxy = start_haproxy(dir.path(), old.port)?;
    if haproxy.is_none() {
        eprintln!("haproxy not installed (apt-get install haproxy): its row is left out");
    }
    // The tables, made through the mirroring turnout: alike on both sides.
    sysbench("oltp_read_write", "prepare", mirror_port, &[])?;
    let run = [
        format!("--threads={}", args.clients),
        format!("--time={}", args.seconds),
    ];
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let mut proxies: Vec<(&str, f64, String)> = Vec::new();
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
        // Side by side with haproxy in TCP mode, with each proxy's CPU per
        // transaction (the two alternate which goes first).
        if let Some((h, hport)) = &haproxy {
            let turnout_pid = _pass.0.id();
            let mut both = [
                ("turnout passthrough", pass_port, turnout_pid),
                ("haproxy tcp", *hport, h.0.id()),
            ];
            if round % 2 == 1 {
                both.reverse();
            }
            for (name, port, pid) in both {
                let (tps, cpu) = sysbench_cpu("oltp_point_select", port, pid, &run)?;
                let cpu = cpu.map_or("-".into(), |c| format!("{c:.1}"));
                eprintln!("round {round}: oltp_point_select {name} {tps:.0} tps, {cpu} µs of its CPU per transaction");
                proxies.push((name, tps, cpu));
            }
        }
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
    if !proxies.is_empty() {
        println!("\noltp_point_select through each proxy, alternating (every round):");
        println!("| proxy | tps | proxy µs/tx |\n| --- | ---: | ---: |");
        for (name, tps, cpu) in &proxies {
            println!("| {name} | {tps:.0} | {cpu} |");
        }
    }
    Ok(())
}
