//! turnout's load harness: pgbench -S against PostgreSQL directly, through
//! turnout, and through pgbouncer (when installed), alternating in one run so
//! that every figure shares the same machine state. Prints tps and the ratio to
//! direct for each.
//!
//! Usage: cargo build --release && target/release/turnout-bench [--seconds N] [--rounds N] [--clients N]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use turnout_harness::{
    as_server_user, free_port, give_to_server_user, PgInstance, PgOptions, TempDir,
};

struct Args {
    seconds: u32,
    rounds: u32,
    clients: u32,
    scale: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 10,
        rounds: 3,
        clients: 8,
        scale: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
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
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("turnout-bench: {e}\nusage: turnout-bench [--seconds N] [--rounds N] [--clients N] [--scale N]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("turnout-bench: {e}");
        std::process::exit(1);
    }
}

struct Killed(Child);
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

fn start_turnout(dir: &Path, backend_port: u16) -> Result<(Killed, u16), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let config = format!(
        r#"[listen]
address = "127.0.0.1:{port}"
[backends.old]
host = "127.0.0.1"
port = {backend_port}
database = "bench"
user = "bench"
password = "bench"
[backends.new]
host = "127.0.0.1"
port = {backend_port}
database = "bench"
user = "bench"
password = "bench"
[[users]]
name = "bench"
password = "bench"
[log]
level = "warn"
"#
    );
    let path = dir.join("turnout.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let child = Command::new(turnout_binary()?)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start turnout: {e}"))?;
    let child = Killed(child);
    wait_port(port)?;
    Ok((child, port))
}

fn start_pgbouncer(dir: &Path, backend_port: u16) -> Result<Option<(Killed, u16)>, String> {
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
        "[databases]\nbench = host=127.0.0.1 port={backend_port} dbname=bench user=bench password=bench\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
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
    Ok(Some((child, port)))
}

fn pgbench_tps(port: u16, mode: &str, args: &Args) -> Result<f64, String> {
    let out = Command::new("pgbench")
        .args(["-n", "-S", "-M", mode, "-j", "2"])
        .arg(format!("-c{}", args.clients))
        .arg(format!("-T{}", args.seconds))
        .args(["-h", "127.0.0.1", "-U", "bench", "bench"])
        .arg(format!("-p{port}"))
        .env("PGPASSWORD", "bench")
        .output()
        .map_err(|e| format!("cannot run pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!(
                "pgbench on port {port} gave no tps:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
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
    eprintln!("starting PostgreSQL...");
    let pg = PgInstance::start(PgOptions {
        max_connections: 200,
        ..PgOptions::default()
    })
    .map_err(|e| e.to_string())?;
    pg.create_database("bench", "bench", "bench")
        .map_err(|e| e.to_string())?;
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s"])
        .arg(args.scale.to_string())
        .args(["-h", "127.0.0.1", "-U", "bench", "bench"])
        .arg(format!("-p{}", pg.port))
        .env("PGPASSWORD", "bench")
        .output()
        .map_err(|e| e.to_string())?;
    if !init.status.success() {
        return Err(format!(
            "pgbench -i: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let (_turnout, turnout_port) = start_turnout(dir.path(), pg.port)?;
    let bouncer = start_pgbouncer(dir.path(), pg.port)?;
    let mut targets = vec![("direct", pg.port), ("turnout", turnout_port)];
    match &bouncer {
        Some((_, port)) => targets.push(("pgbouncer", *port)),
        None => eprintln!("pgbouncer not installed: skipped"),
    }
    println!(
        "pgbench -S -c {} -j 2, {} s per run, {} rounds, scale {}, alternating targets; {} cores",
        args.clients,
        args.seconds,
        args.rounds,
        args.scale,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<10} {:<10} {:>12} {:>10}",
        "mode", "target", "median tps", "vs direct"
    );
    for mode in ["simple", "prepared"] {
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
        for round in 0..args.rounds {
            // Rotate the order each round so no target always runs first.
            for k in 0..targets.len() {
                let i = (k + round as usize) % targets.len();
                let tps = pgbench_tps(targets[i].1, mode, args)?;
                eprintln!("  {mode} round {round} {}: {tps:.0} tps", targets[i].0);
                results[i].push(tps);
            }
        }
        let direct = median(&mut results[0].clone());
        for (i, (name, _)) in targets.iter().enumerate() {
            let m = median(&mut results[i]);
            println!("{:<10} {:<10} {:>12.0} {:>10.3}", mode, name, m, m / direct);
        }
    }
    Ok(())
}
