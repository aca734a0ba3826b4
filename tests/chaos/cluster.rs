//! The system under chaos: two throwaway servers (old and new), a fault
//! relay in front of each (turnout reaches both through them), and the real
//! turnout with an admin socket, a state file and a divergence log.

use super::common::{spawn_proxy, Proxy};
use super::db::{Engine, Target};
use std::path::PathBuf;
use std::process::Command;
use turnout_harness::{free_port, FaultRelay, MariaDbInstance, PgInstance, PgOptions, TempDir};

pub const APP_PASSWORD: &str = "app-pw";
const BACKEND_PASSWORD: &str = "backend-pw";

pub enum Server {
    Pg(PgInstance),
    My(MariaDbInstance),
}

impl Server {
    fn start(engine: Engine, logical: bool) -> Server {
        let s = match engine {
            Engine::Postgres => Server::Pg(
                PgInstance::start(PgOptions {
                    max_connections: 300,
                    logical,
                    ..PgOptions::default()
                })
                .expect("start PostgreSQL"),
            ),
            Engine::MariaDb => {
                Server::My(MariaDbInstance::start_opts(None, logical).expect("start MariaDB"))
            }
        };
        match &s {
            Server::Pg(p) => p.create_database("app", "app", BACKEND_PASSWORD),
            Server::My(m) => m.create_database("app", "app", BACKEND_PASSWORD),
        }
        .expect("create database");
        s
    }

    pub fn port(&self) -> u16 {
        match self {
            Server::Pg(p) => p.port,
            Server::My(m) => m.port,
        }
    }

    pub fn kill(&mut self) {
        match self {
            Server::Pg(p) => p.kill(),
            Server::My(m) => m.kill(),
        }
        .expect("kill the server");
    }

    pub fn restart(&mut self) {
        match self {
            Server::Pg(p) => p.restart(),
            Server::My(m) => m.restart(),
        }
        .expect("start the server again");
    }
}

pub struct Cluster {
    pub engine: Engine,
    /// old, new.
    pub servers: [Server; 2],
    /// In front of old, new.
    pub relays: [FaultRelay; 2],
    pub proxy: Proxy,
    pub dir: TempDir,
    config: PathBuf,
    /// turnout's starts (1 for the first).
    pub starts: u32,
    /// Divergence-log lines written before turnout's latest start.
    pub log_lines_before_start: usize,
}

impl Cluster {
    /// `logical`: PostgreSQL's log feeds the mirror (`mirror.source =
    /// "log"`), read and applied through the relays too.
    pub fn start(engine: Engine, logical: bool) -> Cluster {
        let mut dir = TempDir::new("turnout-chaos").expect("temp dir");
        if std::env::var("CHAOS_KEEP").is_ok() {
            println!("chaos: the run's folder is kept: {}", dir.path().display());
            dir.keep();
        }
        let servers = [
            Server::start(engine, logical),
            Server::start(engine, logical),
        ];
        let relays = [
            FaultRelay::start(servers[0].port()).expect("relay"),
            FaultRelay::start(servers[1].port()).expect("relay"),
        ];
        let port = free_port().expect("free port");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let protocol = match engine {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "mysql",
        };
        let config = format!(
            r#"
protocol = "{protocol}"

[listen]
address = "127.0.0.1:{port}"

[backends.old]
host = "127.0.0.1"
port = {old}
database = "app"
user = "app"
password = "{BACKEND_PASSWORD}"
{replication}

[backends.new]
host = "127.0.0.1"
port = {new}
database = "app"
user = "app"
password = "{BACKEND_PASSWORD}"
{replication}

[[users]]
name = "app"
password = "{APP_PASSWORD}"

[mirror]
source = "{source}"
on_error = "record"
divergence_log = "{divergences}"
statement_timeout_ms = 3000

[sampling]
rate = 0.2
report = "{read_diffs}"

[guards]
min_compared_reads = 0
barrier_ms = 3000

[state]
initial_phase = "mirror"
file = "{state}"

[admin]
socket = "{socket}"
audit_log = "{audit}"

[limits]
auth_timeout_ms = 3000

[backfill]
required = false

[log]
level = "{log_level}"
"#,
            old = relays[0].port(),
            new = relays[1].port(),
            divergences = path("divergences.jsonl"),
            read_diffs = path("read-diffs.jsonl"),
            state = path("state.json"),
            socket = path("admin.sock"),
            audit = path("audit.jsonl"),
            replication = match (logical, engine) {
                (false, _) => "",
                (true, Engine::Postgres) => {
                    "replication_user = \"postgres\"\nreplication_password = \"postgres\""
                }
                (true, Engine::MariaDb) => {
                    "replication_user = \"root\"\nreplication_password = \"root-pw\""
                }
            },
            source = if logical { "log" } else { "auto" },
            log_level = std::env::var("CHAOS_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        );
        let config_path = dir.path().join("turnout.toml");
        std::fs::write(&config_path, config).expect("write config");
        let proxy = spawn_proxy(&config_path, dir.path().join("turnout-1.log"), port);
        let c = Cluster {
            engine,
            servers,
            relays,
            proxy,
            dir,
            config: config_path,
            starts: 1,
            log_lines_before_start: 0,
        };
        c.wait_admin();
        c
    }

    fn wait_admin(&self) {
        let socket = self.dir.path().join("admin.sock");
        super::common::eventually("turnout's admin socket is up", || socket.exists());
    }

    /// turnout killed (SIGKILL) and started again on the same config.
    pub fn restart_turnout(&mut self) {
        self.proxy.kill();
        self.log_lines_before_start = self.divergences().len();
        let _ = std::fs::remove_file(self.dir.path().join("admin.sock"));
        self.starts += 1;
        let log = self.dir.path().join(format!("turnout-{}.log", self.starts));
        self.proxy = spawn_proxy(&self.config, log, self.proxy.port);
        self.wait_admin();
    }

    /// Where clients connect: turnout.
    pub fn through_turnout(&self) -> Target {
        Target {
            engine: self.engine,
            port: self.proxy.port,
            user: "app".into(),
            password: APP_PASSWORD.into(),
        }
    }

    /// Straight to a side's server (0 old, 1 new), past turnout and relay.
    pub fn direct(&self, side: usize) -> Target {
        Target {
            engine: self.engine,
            port: self.servers[side].port(),
            user: "app".into(),
            password: BACKEND_PASSWORD.into(),
        }
    }

    /// `turnout ctl <args>`: exit code and output (stdout, then stderr).
    pub fn ctl(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_turnout"))
            .arg("ctl")
            .arg("--socket")
            .arg(self.dir.path().join("admin.sock"))
            .args(args)
            .output()
            .expect("run turnout ctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text.trim().to_string())
    }

    /// `ctl --json status`, or None when turnout does not answer.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, text) = self.ctl(&["--json", "status"]);
        if code != Some(0) {
            return None;
        }
        serde_json::from_str(&text).ok()
    }

    /// The divergence log's records.
    pub fn divergences(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("divergences.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every turnout log of the run, in order.
    pub fn turnout_logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("turnout-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restarted ---\n")
    }
}
