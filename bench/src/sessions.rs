//! `--sessions-only`: many client sessions held through one turnout in
//! phase `mirror` (each with a connection to old and one to new): the
//! memory each session costs turnout, the throughput of `pgbench -S` with
//! that many clients, a client past `limits.max_client_connections`
//! refused with SQLSTATE 53300, and a client that sends one byte a second
//! cut at the login time limit while others are served.

use super::{spawn_turnout, turnout_config, Args};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};
use turnout_instances::{PgInstance, PgOptions, TempDir};

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One `psql -c SELECT 1` through turnout: its exit status and stderr.
fn psql_once(port: u16) -> Result<(bool, String), String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "bench",
            "-d",
            "bench",
            "-Atc",
            "SELECT 1",
        ])
        .arg(format!("-p{port}"))
        .env("PGPASSWORD", "bench")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .map_err(|e| e.to_string())?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

pub fn bench(args: &Args, dir: &TempDir, old: &PgInstance, sessions: u32) -> Result<(), String> {
    eprintln!("starting PostgreSQL (new) for {sessions} sessions...");
    let new = PgInstance::start(PgOptions {
        max_connections: sessions + 100,
        ..PgOptions::default()
    })
    .map_err(|e| e.to_string())?;
    new.create_database("bench", "bench", "bench")
        .map_err(|e| e.to_string())?;
    let extra = format!("[limits]\nmax_client_connections = {sessions}\nauth_timeout_ms = 3000\n");
    let (config, port, _) = turnout_config(
        dir.path(),
        "turnout-sessions",
        "127.0.0.1",
        old.port,
        new.port,
        "mirror",
        &extra,
    )?;
    let turnout = spawn_turnout(dir.path(), "turnout-sessions", &config, port)?;
    let pid = turnout.0.id();
    let idle = rss_kib(pid).ok_or("turnout's memory cannot be read")?;

    // pgbench holds every session for the run; memory and the refusal are
    // looked at while it does.
    let seconds = args.seconds.max(10);
    let load = {
        let mut cmd = Command::new("pgbench");
        cmd.args(["-n", "-S", "-j", "8", "-h", "127.0.0.1", "-U", "bench"])
            .arg(format!("-c{sessions}"))
            .arg(format!("-T{seconds}"))
            .arg(format!("-p{port}"))
            .arg("bench")
            .env("PGPASSWORD", "bench");
        std::thread::spawn(move || cmd.output())
    };
    // Every session is held once old has one backend for each.
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
    let mut connected = 0;
    while Instant::now() < deadline {
        connected = old
            .psql(
                "bench",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' AND usename = 'bench'",
            )
            .ok()
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if connected >= sessions {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let held = rss_kib(pid).ok_or("turnout's memory cannot be read")?;
    let (refused_ok, refused_err) = psql_once(port)?;
    let out = load
        .join()
        .map_err(|_| "pgbench thread failed")?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "pgbench -c {sessions}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = |what: &str| text.lines().find(|l| l.contains(what)).unwrap_or("").trim();
    let (tps, failed) = (line("tps = "), line("failed transactions"));
    let per_session = held.saturating_sub(idle) as f64 / f64::from(connected.max(1));
    println!(
        "{sessions} sessions through turnout (phase mirror: {} backend connections): pgbench -S -c {sessions} -j 8, {seconds} s: {tps}; {failed}",
        2 * sessions
    );
    println!(
        "turnout RSS: {idle} KiB idle, {held} KiB with {connected} sessions held: {per_session:.1} KiB per session"
    );
    println!(
        "client {} past limits.max_client_connections = {sessions}: {}",
        sessions + 1,
        if refused_ok {
            "served (not refused)".to_string()
        } else {
            format!("refused: {}", refused_err.trim())
        }
    );

    // One byte a second: cut at auth_timeout_ms while others are served.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    slow.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let startup = [0u8, 0, 0, 40, 0, 3, 0, 0];
    let mut served_meanwhile = 0;
    let mut cut_after = None;
    for b in startup.iter().cycle().take(30) {
        if slow.write_all(&[*b]).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        let closed = match slow.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        if closed {
            cut_after = Some(started.elapsed());
            break;
        }
        if psql_once(port)?.0 {
            served_meanwhile += 1;
        }
    }
    match cut_after {
        Some(t) => println!(
            "a client sending one byte a second: cut after {:.1} s (auth_timeout_ms = 3000); {served_meanwhile} other clients served meanwhile",
            t.as_secs_f64()
        ),
        None => println!("a client sending one byte a second: not cut within 30 s"),
    }
    drop(turnout);
    Ok(())
}
