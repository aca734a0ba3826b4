//! Flip latency across a fleet: three turnout instances sharing their
//! phase through a store (a schema `turnout` on old's server, or etcd when
//! `--etcd host:port` names one and the binary was built with it), pgbench
//! TPC-B spread over the three, writes flips and rollbacks run from each
//! instance in turn; beside it, the same against one instance alone.

use crate::{mirror_config, percentiles, pgbench_init, spawn_turnout, turnout_binary, Args};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use turnout_instances::{PgInstance, TempDir};

/// One run: `instances` turnouts (1: no `[fleet]`), flips for `length`.
fn run_of(
    args: &Args,
    dir: &TempDir,
    old: &PgInstance,
    new: &PgInstance,
    instances: usize,
    store: &str,
) -> Result<(), String> {
    pgbench_init(old, args.scale)?;
    pgbench_init(new, args.scale)?;
    let label = if instances == 1 {
        "one instance".to_string()
    } else {
        format!(
            "a fleet of {instances}, store {}",
            if store.is_empty() {
                "old's server"
            } else {
                store
            }
        )
    };
    let mut kept = Vec::new();
    let mut ports = Vec::new();
    let mut sockets: Vec<PathBuf> = Vec::new();
    let tag = if store.is_empty() { "sql" } else { "etcd" };
    for i in 1..=instances {
        let name = format!("fleet{instances}-{tag}-i{i}");
        let socket = dir.path().join(format!("{name}.sock"));
        let fleet = if instances == 1 {
            String::new()
        } else {
            let store = if store.is_empty() {
                String::new()
            } else {
                format!("store = \"etcd://{store}/bench\"\n")
            };
            format!("[fleet]\ninstance = \"i{i}\"\nlease_ms = 3000\n{store}")
        };
        let (config, port) = mirror_config(
            dir.path(),
            &name,
            old.port,
            new.port,
            "images",
            &format!(
                "[admin]\nsocket = \"{}\"\n[backfill]\nrequired = false\n[guards]\nbarrier_ms = 5000\n{fleet}",
                socket.display()
            ),
        )?;
        kept.push(spawn_turnout(dir.path(), &name, &config, port)?);
        ports.push(port);
        sockets.push(socket);
    }
    let seconds = args.seconds.max(5) * 2;
    let per = (args.clients / instances as u32).max(1);
    let loads: Vec<Child> = ports
        .iter()
        .map(|port| {
            Command::new("pgbench")
                .args(["-n", "-j", "1"])
                .arg(format!("-c{per}"))
                .arg(format!("-T{seconds}"))
                .args(["-h", "127.0.0.1", "-U", "bench", "bench"])
                .arg(format!("-p{port}"))
                .env("PGPASSWORD", "bench")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run pgbench: {e}"))
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(1));
    ctl_ms(&sockets[0], "flip reads", None)?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) - 3);
    let (mut held, mut wall) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        let socket = &sockets[held.len() % sockets.len()];
        let command = if held.len() % 2 == 0 {
            "flip writes"
        } else {
            "rollback"
        };
        let started = Instant::now();
        held.push(ctl_ms(socket, command, Some("traffic held "))?);
        wall.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut failed = 0u64;
    let mut tps = 0.0;
    for load in loads {
        let out = load.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        failed += text
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(u64::MAX / 4);
        tps += text
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    println!(
        "\n{label}: pgbench TPC-B -c {} in all ({per} per instance), tps {tps:.0}, failed transactions {failed}",
        per * instances as u32
    );
    println!(
        "writes flips and rollbacks ({}), traffic held (the coordinator's barrier to its release): {}",
        held.len(),
        percentiles(&mut held)
    );
    println!(
        "the same, command to reply (prepare, every instance's acknowledgement, sequences, commit): {}",
        percentiles(&mut wall)
    );
    Ok(())
}

/// `turnout ctl --json <command>` on `socket`; the milliseconds after `key`
/// in its reply (`None`: only checked to succeed).
fn ctl_ms(socket: &Path, command: &str, key: Option<&str>) -> Result<f64, String> {
    let out = Command::new(turnout_binary()?)
        .args(["ctl", "--json", "--socket"])
        .arg(socket)
        .args(command.split_whitespace())
        .output()
        .map_err(|e| e.to_string())?;
    let reply = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "turnout ctl {command}: {reply}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let Some(key) = key else {
        return Ok(0.0);
    };
    reply
        .split(key)
        .nth(1)
        .and_then(|r| r.split([',', '}', ' ']).next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("turnout ctl {command}: {reply}"))
}

/// One instance, then a fleet of three on old's server (and on etcd at
/// `etcd`, when given).
pub fn bench(
    args: &Args,
    dir: &TempDir,
    old: &PgInstance,
    etcd: Option<&str>,
) -> Result<(), String> {
    eprintln!("starting PostgreSQL (new) for the fleet run...");
    let new = crate::bench_instance(args.scale, 200, args.fsync)?;
    run_of(args, dir, old, &new, 1, "")?;
    run_of(args, dir, old, &new, 3, "")?;
    if let Some(e) = etcd {
        run_of(args, dir, old, &new, 3, e)?;
    }
    Ok(())
}
