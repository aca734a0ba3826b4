//! turnout's load harness: pgbench -S against PostgreSQL directly, through
//! turnout, and through pgbouncer (when installed), alternating in one run so
//! that every figure shares the same machine state. Prints tps and the ratio to
//! direct for each.
//!
//! Usage: cargo build --release && target/release/turnout-bench [--seconds N] [--rounds N] [--clients N]

mod fleet;
mod lean;
mod mysql;
mod sessions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use turnout_instances::{
    as_server_user, free_port, give_to_server_user, PgInstance, PgOptions, TempDir,
};

struct Args {
    seconds: u32,
    rounds: u32,
    clients: u32,
    scale: u32,
    /// Also measure mirrored TPC-B (phase mirror).
    mirror: bool,
    /// Skip the passthrough figures.
    mirror_only: bool,
    /// Only the shadow-read (sampling) figures.
    shadow_only: bool,
    /// Only the flip-latency figures.
    flips_only: bool,
    /// `--fleet-only [--etcd host:port]`: flip latency across three instances.
    fleet_only: bool,
    etcd: Option<String>,
    /// Only the MySQL (MariaDB) figures.
    mysql_only: bool,
    /// Only the backfill figures.
    backfill_only: bool,
    /// Only issue 32's comparison (pgbouncer, passthrough, the engine's path).
    lean_only: bool,
    /// Only the many-sessions figures (`--sessions N` of them).
    sessions_only: bool,
    sessions: u32,
    /// Another turnout binary, measured beside this one in the mirrored
    /// run (e.g. the last release, to see a change's cost in one run).
    baseline: Option<PathBuf>,
    /// The clusters commit to disk (`fsync = on`), as in production.
    fsync: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 10,
        rounds: 3,
        clients: 8,
        scale: 10,
        mirror: true,
        mirror_only: false,
        shadow_only: false,
        flips_only: false,
        fleet_only: false,
        etcd: None,
        mysql_only: false,
        backfill_only: false,
        lean_only: false,
        sessions_only: false,
        sessions: 1000,
        baseline: None,
        fsync: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--baseline" {
            let path = it
                .next()
                .ok_or("--baseline needs a turnout binary's path")?;
            a.baseline = Some(PathBuf::from(path));
            continue;
        }
        if flag == "--no-mirror" {
            a.mirror = false;
            continue;
        }
        if flag == "--mirror-only" {
            a.mirror_only = true;
            continue;
        }
        if flag == "--shadow-only" {
            a.shadow_only = true;
            continue;
        }
        if flag == "--fleet-only" {
            a.fleet_only = true;
            continue;
        }
        if flag == "--etcd" {
            a.etcd = Some(it.next().ok_or("--etcd needs host:port")?);
            continue;
        }
        if flag == "--flips-only" {
            a.flips_only = true;
            continue;
        }
        if flag == "--mysql-only" {
            a.mysql_only = true;
            continue;
        }
        if flag == "--backfill-only" {
            a.backfill_only = true;
            continue;
        }
        if flag == "--lean-only" {
            a.lean_only = true;
            continue;
        }
        if flag == "--sessions-only" {
            a.sessions_only = true;
            continue;
        }
        if flag == "--fsync" {
            a.fsync = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<u32>()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--seconds" => a.seconds = value,
            "--rounds" => a.rounds = value,
            "--clients" => a.clients = value,
            "--scale" => a.scale = value,
            "--sessions" => a.sessions = value.max(1),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("turnout-bench: {e}\nusage: turnout-bench [--seconds N] [--rounds N] [--clients N] [--scale N] [--baseline TURNOUT] [--fsync] [--no-mirror | --mirror-only | --shadow-only | --flips-only | --fleet-only [--etcd HOST:PORT] | --mysql-only | --lean-only | --backfill-only | --sessions-only [--sessions N]]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("turnout-bench: {e}");
        std::process::exit(1);
    }
}

struct Killed(Child);
impl Killed {
    /// Stops it as a service manager would (SIGTERM), and waits.
    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listening on {port} after 20 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn turnout_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("turnout");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it first with `cargo build --release`",
            bin.display()
        ))
    }
}

/// Writes `config` as `dir/name.toml`, runs turnout with it, and waits
/// until it listens on `port`.
fn spawn_turnout(dir: &Path, name: &str, config: &str, port: u16) -> Result<Killed, String> {
    spawn_binary(&turnout_binary()?, dir, name, config, port)
}

/// [`spawn_turnout`] with the turnout binary at `bin`.
fn spawn_binary(
    bin: &Path,
    dir: &Path,
    name: &str,
    config: &str,
    port: u16,
) -> Result<Killed, String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start turnout: {e}"))?;
    let child = Killed(child);
    wait_port(port)?;
    Ok(child)
}

/// Starts turnout in front of the backend at `backend_host` (an address, or a
/// Unix socket folder), also listening on a Unix socket in `socket_dir`.
fn start_turnout(
    dir: &Path,
    name: &str,
    backend_host: &str,
    backend_port: u16,
) -> Result<(Killed, u16, PathBuf), String> {
    start_turnout_with(
        dir,
        name,
        backend_host,
        backend_port,
        backend_port,
        "passthrough",
        "",
    )
}

/// Starts turnout with `old` at `backend_host:old_port`, `new` at
/// `backend_host:new_port`, in `phase`.
fn start_turnout_with(
    dir: &Path,
    name: &str,
    backend_host: &str,
    backend_port: u16,
    new_port: u16,
    phase: &str,
    extra: &str,
) -> Result<(Killed, u16, PathBuf), String> {
    let (config, port, socket_dir) = turnout_config(
        dir,
        name,
        backend_host,
        backend_port,
        new_port,
        phase,
        extra,
    )?;
    let child = spawn_turnout(dir, name, &config, port)?;
    Ok((child, port, socket_dir))
}

/// The config [`start_turnout_with`] runs turnout with, its port and its
/// socket folder.
fn turnout_config(
    dir: &Path,
    name: &str,
    backend_host: &str,
    backend_port: u16,
    new_port: u16,
    phase: &str,
    extra: &str,
) -> Result<(String, u16, PathBuf), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let socket_dir = dir.join(name);
    std::fs::create_dir_all(&socket_dir).map_err(|e| e.to_string())?;
    let config = format!(
        r#"[listen]
address = "127.0.0.1:{port}"
socket_dir = "{socket_dir}"
[backends.old]
host = "{backend_host}"
port = {backend_port}
database = "bench"
user = "bench"
password = "bench"
[backends.new]
host = "{backend_host}"
port = {new_port}
database = "bench"
user = "bench"
password = "bench"
[[users]]
name = "bench"
password = "bench"
[mirror]
divergence_log = "{divergences}"
[state]
initial_phase = "{phase}"
[log]
level = "warn"
{extra}
"#,
        socket_dir = socket_dir.display(),
        divergences = dir.join(format!("{name}-divergences.jsonl")).display()
    );
    Ok((config, port, socket_dir))
}

/// Starts pgbouncer (session pooling, SCRAM) in front of the backend at
/// `backend_host`, listening on TCP and on a Unix socket folder.
fn start_pgbouncer(
    dir: &Path,
    backend_host: &str,
    backend_port: u16,
) -> Result<Option<(Killed, u16, PathBuf)>, String> {
    let Some(bin) = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let port = free_port().map_err(|e| e.to_string())?;
    let bdir = dir.join("pgbouncer");
    std::fs::create_dir_all(&bdir).map_err(|e| e.to_string())?;
    give_to_server_user(&bdir).map_err(|e| e.to_string())?;
    let ini = format!(
        "[databases]\nbench = host={backend_host} port={backend_port} dbname=bench user=bench password=bench\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {dir}\n\
         auth_type = scram-sha-256\nauth_file = {dir}/users.txt\npool_mode = session\n\
         max_client_conn = 200\ndefault_pool_size = 50\nlogfile = {dir}/pgbouncer.log\n",
        dir = bdir.display()
    );
    std::fs::write(bdir.join("pgbouncer.ini"), ini).map_err(|e| e.to_string())?;
    std::fs::write(bdir.join("users.txt"), "\"bench\" \"bench\"\n").map_err(|e| e.to_string())?;
    for f in ["pgbouncer.ini", "users.txt"] {
        give_to_server_user(&bdir.join(f)).map_err(|e| e.to_string())?;
    }
    let mut cmd = Command::new(bin);
    cmd.arg(bdir.join("pgbouncer.ini"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_server_user(&mut cmd).map_err(|e| e.to_string())?;
    let child = Killed(
        cmd.spawn()
            .map_err(|e| format!("cannot start pgbouncer: {e}"))?,
    );
    wait_port(port)?;
    Ok(Some((child, port, bdir)))
}

/// One way for pgbench to reach the database.
struct Target {
    name: String,
    /// `-h`: an address or a Unix socket folder.
    host: String,
    port: u16,
    /// Index of the direct target this one is compared with.
    baseline: usize,
    /// The proxy process behind it, whose CPU time per transaction is
    /// reported.
    pid: Option<u32>,
}

impl Target {
    fn with_pid(mut self, pid: u32) -> Target {
        self.pid = Some(pid);
        self
    }
}

/// CPU time (user + system) of process `pid` so far, in microseconds.
fn cpu_micros(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // Clock ticks: 100 per second on Linux.
    Some((utime + stime) * 10_000.0)
}

/// Runs pgbench with `script_args` (e.g. `-S -M simple`): its tps, and the
/// proxy's CPU microseconds per transaction when the target names its
/// process.
fn pgbench_run_cpu(
    t: &Target,
    script_args: &[&str],
    args: &Args,
) -> Result<(f64, Option<f64>), String> {
    let before = t.pid.and_then(cpu_micros);
    let out = Command::new("pgbench")
        .args(["-n", "-j", "2"])
        .args(script_args)
        .arg(format!("-c{}", args.clients))
        .arg(format!("-T{}", args.seconds))
        .args(["-h", &t.host, "-U", "bench", "bench"])
        .arg(format!("-p{}", t.port))
        .env("PGPASSWORD", "bench")
        .output()
        .map_err(|e| format!("cannot run pgbench: {e}"))?;
    let after = t.pid.and_then(cpu_micros);
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!(
                "pgbench against {} gave no tps:\n{text}{}",
                t.name,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let done: Option<f64> = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    let cpu = match (before, after, done) {
        (Some(b), Some(a), Some(n)) if n > 0.0 => Some((a - b) / n),
        _ => None,
    };
    Ok((tps, cpu))
}

/// Mirrored TPC-B: pgbench's write workload through turnout in phase
/// `mirror` against old directly, with the mirror fed by statements (row
/// images) and by old's log, in the same rounds (order rotating). Each
/// turnout runs only for its own pgbench run (started, measured, stopped
/// with SIGTERM; the log's slot dropped after), so neither applies the
/// other's writes in the background.
fn mirrored_tpcb(args: &Args, dir: &TempDir, old: &PgInstance) -> Result<(), String> {
    eprintln!("starting PostgreSQL (new) for the mirrored run...");
    let new = bench_instance(args.scale, 200, args.fsync)?;
    // `old` starts from a fresh pgbench dataset too.
    pgbench_init(old, args.scale)?;
    let source = |name: &str, source: &str| -> Result<(String, u16), String> {
        let (config, port, _) = turnout_config(
            dir.path(),
            name,
            "127.0.0.1",
            old.port,
            new.port,
            "mirror",
            "",
        )?;
        let replication = "password = \"bench\"\nreplication_user = \"postgres\"\nreplication_password = \"postgres\"\n";
        let config = config
            .replace("[mirror]\n", &format!("[mirror]\nsource = \"{source}\"\n"))
            .replace(
                "password = \"bench\"\n[backends.new]",
                &format!("{replication}[backends.new]"),
            )
            .replace(
                "password = \"bench\"\n[[users]]",
                &format!("{replication}[[users]]"),
            );
        Ok((config, port))
    };
    let kinds = [
        ("direct tcp", None),
        (
            "mirror from statements",
            Some(source("turnout-images", "images")?),
        ),
        ("mirror from the log", Some(source("turnout-log", "log")?)),
    ];
    let superuser = format!(
        "host=127.0.0.1 port={} dbname=bench user=postgres password=postgres",
        old.port
    );
    for (script, what) in [(&[][..], "TPC-B (default script)"), (&["-S"][..], "-S")] {
        println!(
            "\npgbench {what} -c {} -j 2, {} s per run, {} rounds, fsync {}: direct to old vs through turnout in phase mirror, the mirror fed by statements and by old's log (old and new on this machine)",
            args.clients,
            args.seconds,
            args.rounds,
            if args.fsync { "on" } else { "off" }
        );
        println!(
            "{:<9} {:<26} {:>11} {:>7} {:>12}",
            "mode", "target", "median tps", "ratio", "proxy µs/tx"
        );
        for mode in ["simple", "prepared"] {
            let mut tps: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
            let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
            for round in 0..args.rounds {
                for k in 0..kinds.len() {
                    let i = (k + round as usize) % kinds.len();
                    let (name, proxy) = &kinds[i];
                    let mut a: Vec<&str> = script.to_vec();
                    a.extend(["-M", mode]);
                    let (t, micros) = match proxy {
                        None => pgbench_run_cpu(&target(name, "127.0.0.1", old.port, 0), &a, args)?,
                        Some((config, port)) => {
                            let child =
                                spawn_turnout(dir.path(), &format!("mirror-{i}"), config, *port)?;
                            let t = target(name, "127.0.0.1", *port, 0).with_pid(child.0.id());
                            let measured = pgbench_run_cpu(&t, &a, args);
                            child.terminate();
                            // The next run of either source starts without a
                            // backlog: the log's slot goes.
                            let _ = Command::new("psql")
                                .args(["-X", "-q", &superuser, "-c"])
                                .arg("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
                                .output();
                            measured?
                        }
                    };
                    eprintln!("  {mode} round {round} {name}: {t:.0} tps");
                    tps[i].push(t);
                    cpu[i].extend(micros);
                }
            }
            let direct = median(&mut tps[0].clone());
            for (i, (name, _)) in kinds.iter().enumerate() {
                let micros = if cpu[i].is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.1}", median(&mut cpu[i]))
                };
                let m = median(&mut tps[i]);
                println!(
                    "{:<9} {:<26} {:>11.0} {:>7.3} {:>12}",
                    mode,
                    name,
                    m,
                    m / direct,
                    micros
                );
            }
        }
    }
    Ok(())
}

/// A turnout config in phase `mirror` with old at `old`, new at `new`
/// (both on this machine), the mirror fed from `source` (`images` or
/// `log`, read as the clusters' superuser), `extra` appended; its port.
fn mirror_config(
    dir: &Path,
    name: &str,
    old: u16,
    new: u16,
    source: &str,
    extra: &str,
) -> Result<(String, u16), String> {
    let (config, port, _) = turnout_config(dir, name, "127.0.0.1", old, new, "mirror", extra)?;
    let replication = "password = \"bench\"\nreplication_user = \"postgres\"\nreplication_password = \"postgres\"\n";
    let config = config
        .replace("[mirror]\n", &format!("[mirror]\nsource = \"{source}\"\n"))
        .replace(
            "password = \"bench\"\n[backends.new]",
            &format!("{replication}[backends.new]"),
        )
        .replace(
            "password = \"bench\"\n[[users]]",
            &format!("{replication}[[users]]"),
        );
    Ok((config, port))
}

/// turnout in phase mirror (old and new on this machine) with `rate` of
/// reads compared on new, its read-diff report in `dir`; its port.
fn start_sampled(
    dir: &Path,
    name: &str,
    old: u16,
    new: u16,
    rate: &str,
) -> Result<(Killed, u16, PathBuf), String> {
    let report = dir.join(format!("{name}-diffs.jsonl"));
    let sampling = format!(
        "[sampling]\nrate = {rate}\nper_fingerprint_per_sec = 0\nreport = \"{}\"",
        report.display()
    );
    start_turnout_with(dir, name, "127.0.0.1", old, new, "mirror", &sampling)
}

/// `--baseline`: the turnout binary `bin` with old and new at `ports`, in
/// `phase`, `extra` appended, measured beside this build in the same
/// rounds (a change's cost, before and after); it and its port.
fn start_baseline(
    bin: &Path,
    dir: &Path,
    name: &str,
    ports: (u16, u16),
    phase: &str,
    extra: &str,
) -> Result<(Killed, u16), String> {
    let (config, port, _) = turnout_config(dir, name, "127.0.0.1", ports.0, ports.1, phase, extra)?;
    let child = spawn_binary(bin, dir, name, &config, port)?;
    Ok((child, port))
}

/// Shadow reads: pgbench -S through turnout in phase mirror with 0 %, 1 %
/// and 100 % of reads sampled (compared on new), against direct and against
/// turnout in passthrough.
fn shadow_reads(args: &Args, dir: &TempDir, old: &PgInstance) -> Result<(), String> {
    eprintln!("starting PostgreSQL (new) for the shadow-read run...");
    let new = bench_instance(args.scale, 200, args.fsync)?;
    pgbench_init(old, args.scale)?;
    let sampled =
        |name: &str, rate: &str| start_sampled(dir.path(), name, old.port, new.port, rate);
    let (_p, p_port, _) = start_turnout(dir.path(), "shadow-passthrough", "127.0.0.1", old.port)?;
    let (_m0, m0_port, _) = sampled("shadow-0", "0.0")?;
    let (_m1, m1_port, _) = sampled("shadow-1", "0.01")?;
    let (_m100, m100_port, _) = sampled("shadow-100", "1.0")?;
    let mut targets = vec![
        target("direct tcp", "127.0.0.1", old.port, 0),
        target("turnout passthrough", "127.0.0.1", p_port, 0),
        target("mirror, no sampling", "127.0.0.1", m0_port, 1),
        target("mirror, 1% sampled", "127.0.0.1", m1_port, 1),
        target("mirror, 100% sampled", "127.0.0.1", m100_port, 0),
    ];
    // `--baseline`: an older binary in phase mirror beside this one, in
    // the same rounds (a change's cost, before and after).
    let _baseline = match &args.baseline {
        Some(bin) => {
            let (child, port) = start_baseline(
                bin,
                dir.path(),
                "shadow-0-baseline",
                (old.port, new.port),
                "mirror",
                "[sampling]\nrate = 0.0",
            )?;
            targets.push(target(
                "baseline binary: mirror, no sampling",
                "127.0.0.1",
                port,
                1,
            ));
            Some(child)
        }
        None => None,
    };
    println!(
        "\npgbench -S -c {} -j 2, {} s per run, {} rounds: shadow reads (sampled reads also run on new); ratios against the baseline named",
        args.clients, args.seconds, args.rounds
    );
    compare(&targets, &["-S"], args)
}

/// Flip latency: with pgbench (TPC-B, the clients of `--clients`) running
/// through turnout in phase mirror, reads flips and rollbacks in a row; for
/// each, the time from the command until no session is inside a
/// transaction on the old routing (turnout measures it and says so in the
/// reply). Prints p50 / p99 / max and pgbench's failed transactions.
fn flip_latency(args: &Args, dir: &TempDir, old: &PgInstance) -> Result<(), String> {
    eprintln!("starting PostgreSQL (new) for the flip run...");
    let new = bench_instance(args.scale, 200, args.fsync)?;
    for source in ["images", "log"] {
        pgbench_init(old, args.scale)?;
        pgbench_init(&new, args.scale)?;
        flip_latency_of(args, dir, old, &new, source)?;
    }
    Ok(())
}

/// [`flip_latency`] with the mirror fed from `source`.
fn flip_latency_of(
    args: &Args,
    dir: &TempDir,
    old: &PgInstance,
    new: &PgInstance,
    source: &str,
) -> Result<(), String> {
    let socket = dir.path().join(format!("flips-{source}-admin.sock"));
    let name = format!("turnout-flips-{source}");
    let (config, port) = mirror_config(
        dir.path(),
        &name,
        old.port,
        new.port,
        source,
        &format!(
            "[admin]\nsocket = \"{}\"\n[backfill]\nrequired = false",
            socket.display()
        ),
    )?;
    let _t = spawn_turnout(dir.path(), &name, &config, port)?;
    let seconds = args.seconds.max(5) * 2;
    let load = Command::new("pgbench")
        .args(["-n", "-j", "2"])
        .arg(format!("-c{}", args.clients))
        .arg(format!("-T{seconds}"))
        .args(["-h", "127.0.0.1", "-U", "bench", "bench"])
        .arg(format!("-p{port}"))
        .env("PGPASSWORD", "bench")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run pgbench: {e}"))?;
    std::thread::sleep(Duration::from_secs(1));
    let half = Duration::from_secs(u64::from(seconds) / 2 - 1);
    // Reads flips: the time until no session runs a transaction on the old
    // routing. They end in reads_new, where the writes flips start.
    let mut reads = flip_loop(&socket, ["flip reads", "rollback"], half, "\"adopted_ms\":")?;
    if reads.len() % 2 == 0 {
        flip_loop(
            &socket,
            ["flip reads", "flip reads"],
            Duration::ZERO,
            "\"adopted_ms\":",
        )?;
    }
    // Writes flips: the time new transactions were held at the barrier
    // (open ones finishing, sequences moved, the swap).
    let mut writes = flip_loop(&socket, ["flip writes", "rollback"], half, "traffic held ")?;
    let out = load.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .unwrap_or("number of failed transactions: ?")
        .to_string();
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .unwrap_or("?")
        .to_string();
    println!(
        "\nflip latency under pgbench TPC-B -c {}, the mirror fed from {source} (pgbench: {failed}; tps {tps})",
        args.clients
    );
    println!(
        "reads flips and rollbacks ({}), command until no session runs a transaction on the old routing: {}",
        reads.len(),
        percentiles(&mut reads)
    );
    println!(
        "writes flips and rollbacks ({}), traffic held at the barrier: {}",
        writes.len(),
        percentiles(&mut writes)
    );
    Ok(())
}

/// Runs the two commands in turn until `length` has passed (at least
/// once); for each reply, the number of milliseconds after `key`.
fn flip_loop(
    socket: &Path,
    commands: [&str; 2],
    length: Duration,
    key: &str,
) -> Result<Vec<f64>, String> {
    let deadline = Instant::now() + length;
    let mut times = Vec::new();
    loop {
        let command = commands[times.len() % 2];
        let out = Command::new(turnout_binary()?)
            .args(["ctl", "--json", "--socket"])
            .arg(socket)
            .args(command.split_whitespace())
            .output()
            .map_err(|e| e.to_string())?;
        let reply = String::from_utf8_lossy(&out.stdout).into_owned();
        let ms = reply
            .split(key)
            .nth(1)
            .and_then(|r| r.split([',', '}', ' ']).next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| {
                format!(
                    "turnout ctl {command}: {reply}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        times.push(ms);
        if Instant::now() >= deadline {
            return Ok(times);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentiles(times: &mut [f64]) -> String {
    times.sort_by(|a, b| a.total_cmp(b));
    if times.is_empty() {
        return "none".into();
    }
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        times[times.len() - 1]
    )
}

fn target(name: &str, host: &str, port: u16, baseline: usize) -> Target {
    Target {
        name: name.to_string(),
        host: host.to_string(),
        port,
        baseline,
        pid: None,
    }
}

/// Runs pgbench (`script` plus `-M simple` / `-M prepared`) against every
/// target in turn, rotating the order each round so no target always runs
/// first, and prints each target's median tps and its ratio to its baseline.
fn compare(targets: &[Target], script: &[&str], args: &Args) -> Result<(), String> {
    println!(
        "{:<9} {:<26} {:>11} {:>22} {:>7} {:>12} {:>16}",
        "mode", "target", "median tps", "baseline", "ratio", "proxy µs/tx", "1 client p50/p99"
    );
    for mode in ["simple", "prepared"] {
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
        for round in 0..args.rounds {
            for k in 0..targets.len() {
                let i = (k + round as usize) % targets.len();
                let mut a: Vec<&str> = script.to_vec();
                a.extend(["-M", mode]);
                let (tps, micros) = pgbench_run_cpu(&targets[i], &a, args)?;
                eprintln!("  {mode} round {round} {}: {tps:.0} tps", targets[i].name);
                results[i].push(tps);
                cpu[i].extend(micros);
            }
        }
        let medians: Vec<f64> = results.iter_mut().map(|r| median(r)).collect();
        for (i, t) in targets.iter().enumerate() {
            let micros = if cpu[i].is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", median(&mut cpu[i]))
            };
            let mut a: Vec<&str> = script.to_vec();
            a.extend(["-M", mode]);
            let latency = match latency_one_client(t, &a, args.seconds.min(5)) {
                Ok((p50, p99)) => format!("{p50:.3}/{p99:.3} ms"),
                Err(e) => {
                    eprintln!("  {}: 1-client latency: {e}", t.name);
                    "-".to_string()
                }
            };
            println!(
                "{:<9} {:<26} {:>11.0} {:>22} {:>7.3} {:>12} {:>16}",
                mode,
                t.name,
                medians[i],
                targets[t.baseline].name,
                medians[i] / medians[t.baseline],
                micros,
                latency
            );
        }
    }
    Ok(())
}

/// One client, unsaturated: pgbench's per-transaction log for `seconds`,
/// its p50 and p99 latency in milliseconds.
fn latency_one_client(
    t: &Target,
    script_args: &[&str],
    seconds: u32,
) -> Result<(f64, f64), String> {
    let dir = TempDir::new("turnout-bench-latency").map_err(|e| e.to_string())?;
    let out = Command::new("pgbench")
        .args(["-n", "-c1", "-j1", "--log", "--log-prefix=lat"])
        .args(script_args)
        .arg(format!("-T{}", seconds.max(1)))
        .args(["-h", &t.host, "-U", "bench", "bench"])
        .arg(format!("-p{}", t.port))
        .env("PGPASSWORD", "bench")
        .current_dir(dir.path())
        .output()
        .map_err(|e| format!("cannot run pgbench: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut times = Vec::new();
    for entry in std::fs::read_dir(dir.path()).map_err(|e| e.to_string())? {
        let text = std::fs::read_to_string(entry.map_err(|e| e.to_string())?.path())
            .map_err(|e| e.to_string())?;
        // client_id transaction_no time(µs) script_no time_epoch time_us
        times.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok())
                .map(|us| us / 1000.0),
        );
    }
    if times.is_empty() {
        return Err("pgbench logged no transaction".into());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.5), pct(0.99)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(args: &Args) -> Result<(), String> {
    let dir = TempDir::new("turnout-bench").map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    if args.mysql_only {
        return mysql::bench(args, &dir);
    }
    eprintln!("starting PostgreSQL...");
    if args.sessions_only {
        let pg = bench_instance(args.scale, args.sessions + 100, args.fsync)?;
        return sessions::bench(args, &dir, &pg, args.sessions);
    }
    let pg = bench_instance(args.scale, 200, args.fsync)?;
    if args.mirror_only {
        return mirrored_tpcb(args, &dir, &pg);
    }
    if args.shadow_only {
        return shadow_reads(args, &dir, &pg);
    }
    if args.flips_only {
        return flip_latency(args, &dir, &pg);
    }
    if args.fleet_only {
        return fleet::bench(args, &dir, &pg, args.etcd.as_deref());
    }
    if args.backfill_only {
        return backfill(args, &dir, &pg);
    }
    if args.lean_only {
        return lean::bench(args, &dir, &pg);
    }
    let pg_sock = pg.dir().display().to_string();
    let (t1, t1_port, _) = start_turnout(dir.path(), "turnout-tcp", "127.0.0.1", pg.port)?;
    let (t2, t2_port, t2_sock) = start_turnout(dir.path(), "turnout-uds", &pg_sock, pg.port)?;
    let bouncer_tcp = start_pgbouncer(&dir.path().join("b1"), "127.0.0.1", pg.port)?;
    let bouncer_uds = start_pgbouncer(&dir.path().join("b2"), &pg_sock, pg.port)?;
    let t = target;
    // Like is compared with like: TCP clients with direct TCP, local-socket
    // clients with a direct local socket.
    let mut targets = vec![
        t("direct tcp", "127.0.0.1", pg.port, 0),
        t("turnout tcp->tcp", "127.0.0.1", t1_port, 0).with_pid(t1.0.id()),
        t("turnout tcp->uds", "127.0.0.1", t2_port, 0).with_pid(t2.0.id()),
        t("direct uds", &pg_sock, pg.port, 3),
        t(
            "turnout uds->uds",
            &t2_sock.display().to_string(),
            t2_port,
            3,
        )
        .with_pid(t2.0.id()),
    ];
    match (&bouncer_tcp, &bouncer_uds) {
        (Some((b1, p1, _)), Some((b2, p2, d2))) => {
            let (b1, b2) = (b1.0.id(), b2.0.id());
            targets.push(t("pgbouncer tcp->tcp", "127.0.0.1", *p1, 0).with_pid(b1));
            targets.push(t("pgbouncer tcp->uds", "127.0.0.1", *p2, 0).with_pid(b2));
            targets.push(t("pgbouncer uds->uds", &d2.display().to_string(), *p2, 3).with_pid(b2));
        }
        _ => eprintln!("pgbouncer not installed: skipped"),
    }
    println!(
        "pgbench -S -c {} -j 2, {} s per run, {} rounds, scale {}, targets alternating; {} cores",
        args.clients,
        args.seconds,
        args.rounds,
        args.scale,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    compare(&targets, &["-S"], args)?;
    if args.mirror {
        mirrored_tpcb(args, &dir, &pg)?;
        shadow_reads(args, &dir, &pg)?;
        flip_latency(args, &dir, &pg)?;
        backfill(args, &dir, &pg)?;
    }
    Ok(())
}

/// `turnout ctl --json ARGS` on `socket`: the reply.
fn ctl(socket: &Path, command: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(turnout_binary()?)
        .args(["ctl", "--json", "--socket"])
        .arg(socket)
        .args(command.split_whitespace())
        .output()
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "turnout ctl {command}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs a backfill of pgbench_accounts to its end: (rows, seconds).
fn backfill_run(socket: &Path) -> Result<(u64, f64), String> {
    let started = Instant::now();
    let r = ctl(socket, "backfill start pgbench_accounts")?;
    if r["ok"] != true {
        return Err(format!("backfill start: {r}"));
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let st = ctl(socket, "backfill status")?;
        match st["state"].as_str() {
            Some("done") => {
                return Ok((
                    st["rows"].as_u64().unwrap_or(0),
                    started.elapsed().as_secs_f64(),
                ))
            }
            Some("running") => {}
            _ => return Err(format!("backfill: {st}")),
        }
    }
}

/// Backfill: rows per second copying pgbench_accounts (100 000 rows per
/// scale) from old to an empty new, alone and under pgbench -N through
/// turnout (with the adaptive throttle, and without it); and what a
/// running backfill costs those clients.
fn backfill(args: &Args, dir: &TempDir, old: &PgInstance) -> Result<(), String> {
    eprintln!("starting PostgreSQL (new) for the backfill run...");
    let new = bench_instance(1, 200, args.fsync)?;
    pgbench_init(old, args.scale)?;
    let empty = || {
        new.psql("bench", "TRUNCATE pgbench_accounts")
            .map_err(|e| e.to_string())
    };
    let start = |name: &str, extra: &str| {
        let socket = dir.path().join(format!("{name}.sock"));
        start_turnout_with(
            dir.path(),
            name,
            "127.0.0.1",
            old.port,
            new.port,
            "mirror",
            &format!(
                "[admin]\nsocket = \"{}\"\n[backfill]\nrequired = false\n{extra}",
                socket.display()
            ),
        )
        .map(|(t, port, _)| (t, port, socket))
    };
    let (_t, port, socket) = start("backfill-throttled", "")?;
    let (_u, port_u, socket_u) = start("backfill-unthrottled", "max_latency_factor = 1000000.0")?;
    std::thread::sleep(Duration::from_millis(300));
    empty()?;
    let (rows, secs) = backfill_run(&socket)?;
    let alone = rows as f64 / secs;
    println!(
        "\nbackfill of pgbench_accounts (scale {}, batches of 1000), no client load: {rows} rows in {secs:.1} s = {alone:.0} rows/s",
        args.scale
    );
    let pgbench = |port: u16, seconds: u32| {
        Command::new("pgbench")
            .args(["-n", "-N", "-j", "2"])
            .arg(format!("-c{}", args.clients))
            .arg(format!("-T{seconds}"))
            .args(["-h", "127.0.0.1", "-U", "bench", "bench"])
            .arg(format!("-p{port}"))
            .env("PGPASSWORD", "bench")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run pgbench: {e}"))
    };
    let tps = |c: Child| -> Result<f64, String> {
        let out = c.wait_with_output().map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("pgbench: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let seconds = args.seconds.max(5);
    for (label, port, socket) in [
        ("with the adaptive throttle", port, &socket),
        ("throttle off", port_u, &socket_u),
    ] {
        // Clients alone, then clients with a backfill running beside them
        // for the whole of their run (the backfill is started again at the
        // beginning of the table when it reaches the end).
        let base = tps(pgbench(port, seconds)?)?;
        empty()?;
        let load = pgbench(port, seconds)?;
        let started = Instant::now();
        let mut copied = 0u64;
        let mut rounds = 0;
        while started.elapsed() < Duration::from_secs(u64::from(seconds)) {
            let r = ctl(socket, "backfill start pgbench_accounts")?;
            if r["ok"] != true {
                return Err(format!("backfill start: {r}"));
            }
            rounds += 1;
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let st = ctl(socket, "backfill status")?;
                let rows = st["rows"].as_u64().unwrap_or(0);
                if st["state"] == "done" {
                    copied += rows;
                    break;
                }
                if started.elapsed() >= Duration::from_secs(u64::from(seconds)) {
                    copied += rows;
                    ctl(socket, "backfill pause")?;
                    break;
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let loaded = tps(load)?;
        // Left paused: let it finish so the next run starts clean.
        let _ = ctl(socket, "backfill resume");
        for _ in 0..600 {
            if ctl(socket, "backfill status")?["state"] != "running" {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "{label}: backfill under pgbench -N -c {} through turnout: {copied} rows in {elapsed:.1} s ({rounds} pass(es)) = {:.0} rows/s ({:.2} of the rate without load); pgbench -N {base:.0} tps alone, {loaded:.0} tps beside the backfill ({:.2})",
            args.clients,
            copied as f64 / elapsed,
            copied as f64 / elapsed / alone,
            loaded / base
        );
    }
    Ok(())
}

/// A throwaway PostgreSQL with a `bench` database holding pgbench's tables.
fn bench_instance(scale: u32, max_connections: u32, fsync: bool) -> Result<PgInstance, String> {
    // wal_level = logical: the mirror can be fed from the log.
    let pg = PgInstance::start(PgOptions {
        max_connections,
        logical: true,
        fsync,
        ..PgOptions::default()
    })
    .map_err(|e| e.to_string())?;
    pg.create_database("bench", "bench", "bench")
        .map_err(|e| e.to_string())?;
    pgbench_init(&pg, scale)?;
    Ok(pg)
}

/// `pgbench -i` at `scale` (drops and recreates pgbench's tables).
fn pgbench_init(pg: &PgInstance, scale: u32) -> Result<(), String> {
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s"])
        .arg(scale.to_string())
        .args(["-h", "127.0.0.1", "-U", "bench", "bench"])
        .arg(format!("-p{}", pg.port))
        .env("PGPASSWORD", "bench")
        .output()
        .map_err(|e| e.to_string())?;
    if init.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pgbench -i: {}",
            String::from_utf8_lossy(&init.stderr)
        ))
    }
}
