//! Three turnout instances made from one test's config, sharing their
//! phase through a `[fleet]` store: each with its own port, admin socket,
//! state file, audit and divergence logs.

use super::{eventually, spawn_proxy, stderr, stdout, turnout_bin, Proxy};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use turnout_harness::free_port;

pub struct Members {
    dir: PathBuf,
    pub members: Vec<Proxy>,
    pub names: Vec<String>,
}

impl Members {
    /// Three instances `i1`..`i3` from `template` (a config whose listener
    /// is on `port` and whose files live in `dir`), with `fleet` (the keys
    /// of `[fleet]` but `instance`) and a barrier of 8 s. `metrics`: the
    /// template's metrics port, given each its own.
    pub fn spawn(
        dir: &Path,
        template: &str,
        port: u16,
        metrics: Option<u16>,
        fleet: &str,
    ) -> Members {
        let mut members = Vec::new();
        let mut names = Vec::new();
        for i in 1..=3 {
            let name = format!("i{i}");
            let listen = free_port().unwrap();
            let mut config = template
                .replace(
                    &format!("address = \"127.0.0.1:{port}\""),
                    &format!("address = \"127.0.0.1:{listen}\""),
                )
                .replace("admin.sock", &format!("admin-{name}.sock"))
                .replace("audit.jsonl", &format!("audit-{name}.jsonl"))
                .replace("phase.flag", &format!("phase-{name}.flag"))
                .replace("state.json", &format!("state-{name}.json"))
                .replace("divergences.jsonl", &format!("divergences-{name}.jsonl"));
            if let Some(m) = metrics {
                config = config.replace(
                    &format!("127.0.0.1:{m}"),
                    &format!("127.0.0.1:{}", free_port().unwrap()),
                );
            }
            config = if config.contains("\n[guards]\n") {
                config.replace("\n[guards]\n", "\n[guards]\nbarrier_ms = 8000\n")
            } else {
                config + "\n[guards]\nbarrier_ms = 8000\n"
            };
            config.push_str(&format!("\n[fleet]\ninstance = \"{name}\"\n{fleet}\n"));
            let path = dir.join(format!("turnout-{name}.toml"));
            std::fs::write(&path, config).unwrap();
            let proxy = spawn_proxy(&path, dir.join(format!("turnout-{name}.log")), listen);
            let socket = dir.join(format!("admin-{name}.sock"));
            eventually("the admin socket is up", || socket.exists());
            members.push(proxy);
            names.push(name);
        }
        Members {
            dir: dir.to_path_buf(),
            members,
            names,
        }
    }

    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        Command::new(turnout_bin())
            .arg("ctl")
            .arg("--socket")
            .arg(self.dir.join(format!("admin-{}.sock", self.names[i])))
            .args(args)
            .output()
            .expect("run turnout ctl")
    }

    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.ctl(i, args);
        assert!(
            out.status.success(),
            "turnout ctl {args:?} on {}: {}{}\n{}",
            self.names[i],
            stdout(&out),
            stderr(&out),
            self.members[i].log_text()
        );
        stdout(&out)
    }

    pub fn status(&self, i: usize) -> serde_json::Value {
        serde_json::from_str(&stdout(&self.ctl(i, &["--json", "status"]))).unwrap_or_default()
    }

    /// Every instance reports `phase`, all at the same epoch.
    pub fn assert_all_at(&self, phase: &str) {
        let mut epochs = Vec::new();
        for i in 0..self.members.len() {
            eventually(&format!("{} reports {phase}", self.names[i]), || {
                self.status(i)["phase"] == phase
            });
            epochs.push(self.status(i)["epoch"].as_u64());
        }
        assert!(epochs.windows(2).all(|w| w[0] == w[1]), "{epochs:?}");
    }

    pub fn port(&self, i: usize) -> u16 {
        self.members[i].port
    }
}

/// Runs `turnout run` with `config` (a file) and waits up to 60 s for it
/// to exit: its exit code and what it wrote to stderr.
pub fn run_until_exit(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(turnout_bin())
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run turnout");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("turnout did not exit within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

impl Members {
    /// Under the load the caller runs: reads flip from i1, writes flip
    /// from i2, rollback from i3, writes flip from i1, two seconds apart,
    /// every instance at each phase before the next; the first writes
    /// flip's reply.
    pub fn flip_round(&self) -> String {
        std::thread::sleep(std::time::Duration::from_secs(2));
        println!("{}", self.ctl_ok(0, &["flip", "reads"]));
        self.assert_all_at("reads_new");
        std::thread::sleep(std::time::Duration::from_secs(2));
        let writes = self.ctl_ok(1, &["flip", "writes"]);
        println!("{writes}");
        self.assert_all_at("writes_new");
        std::thread::sleep(std::time::Duration::from_secs(2));
        println!("{}", self.ctl_ok(2, &["rollback"]));
        self.assert_all_at("reads_new");
        std::thread::sleep(std::time::Duration::from_secs(2));
        println!("{}", self.ctl_ok(0, &["flip", "writes"]));
        self.assert_all_at("writes_new");
        writes
    }
}
