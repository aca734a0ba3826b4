use crate::{check, free_port, InstanceError, TempDir};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to set up a throwaway cluster.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Password of the `postgres` superuser.
    pub superuser_password: String,
    /// Serve TLS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `max_connections`.
    pub max_connections: u32,
    /// How the server authenticates TCP clients: `scram-sha-256`, `md5` or
    /// `trust`. Under `md5`, passwords are also stored as md5 hashes.
    pub auth: &'static str,
    /// `wal_level = logical` (with slots and WAL senders to spare): the
    /// server's log can feed a mirror.
    pub logical: bool,
    /// Commits wait for the disk (`fsync = on`), as in production; off by
    /// default (tests do not need it and run faster without).
    pub fsync: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            superuser_password: "postgres".into(),
            tls: None,
            max_connections: 100,
            auth: "scram-sha-256",
            logical: false,
            fsync: false,
        }
    }
}

/// A running PostgreSQL cluster in a temp dir, on its own port.
pub struct PgInstance {
    pub port: u16,
    pub superuser_password: String,
    bin: PathBuf,
    dir: TempDir,
    owner: Option<(u32, u32)>,
    running: bool,
}

/// The newest installed server's bin folder.
fn find_bin() -> Result<PathBuf, InstanceError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
        .ok_or_else(|| InstanceError::NotInstalled("initdb".into()))
}

/// Makes `cmd` run as the user PostgreSQL's servers run as (`postgres` when
/// we are root; unchanged otherwise). pgbouncer, too, refuses to run as root.
pub fn as_server_user(cmd: &mut Command) -> Result<(), InstanceError> {
    if let Some((uid, gid)) = server_owner()? {
        cmd.uid(uid).gid(gid);
    }
    Ok(())
}

/// Gives `path` to the server user (see [`as_server_user`]).
pub fn give_to_server_user(path: &Path) -> Result<(), InstanceError> {
    chown(path, server_owner()?)?;
    Ok(())
}

/// PostgreSQL refuses to run as root: under root, run it as `postgres`.
fn server_owner() -> Result<Option<(u32, u32)>, InstanceError> {
    crate::owner_under_root("postgres", "PostgreSQL")
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

impl PgInstance {
    /// initdb, configure, start. Takes a second or two.
    pub fn start(opts: PgOptions) -> Result<PgInstance, InstanceError> {
        let bin = find_bin()?;
        let owner = server_owner()?;
        let dir = TempDir::new("turnout-pg")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        chown(dir.path(), owner)?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &opts.superuser_password)?;
        chown(&pwfile, owner)?;
        let mut inst = PgInstance {
            port: 0,
            superuser_password: opts.superuser_password.clone(),
            bin,
            dir,
            owner,
            running: false,
        };
        let data = inst.data_dir();
        let out = inst
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8"])
            .arg(format!("--auth-host={}", opts.auth))
            .arg("--auth-local=scram-sha-256")
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output();
        check("initdb", out)?;
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = {}\nfull_page_writes = {}\n\
             max_connections = {}\nshared_buffers = 64MB\nlog_min_messages = warning\n\
             password_encryption = '{}'\n",
            inst.dir.path().display(),
            if opts.fsync { "on" } else { "off" },
            if opts.fsync { "on" } else { "off" },
            opts.max_connections,
            if opts.auth == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            }
        );
        if opts.logical {
            conf.push_str(
                "wal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\n",
            );
        }
        if let Some((crt, key)) = &opts.tls {
            let dcrt = inst.dir.path().join("server.crt");
            let dkey = inst.dir.path().join("server.key");
            std::fs::copy(crt, &dcrt)?;
            std::fs::copy(key, &dkey)?;
            std::fs::set_permissions(&dkey, std::fs::Permissions::from_mode(0o600))?;
            chown(&dcrt, owner)?;
            chown(&dkey, owner)?;
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                dcrt.display(),
                dkey.display()
            ));
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        std::io::Write::write_all(&mut f, conf.as_bytes())?;
        // A port can be taken between choosing and binding it: try a few.
        let mut last = None;
        for _ in 0..5 {
            inst.port = free_port()?;
            match inst.pg_ctl_start() {
                Ok(()) => {
                    inst.running = true;
                    return Ok(inst);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| InstanceError::Command {
            what: "pg_ctl start".into(),
            detail: "no attempt made".into(),
        }))
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c.env_remove("PGDATA").env("LC_ALL", "C");
        c
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg_ctl_start(&self) -> Result<(), InstanceError> {
        let log = self.log_file();
        if !log.exists() {
            std::fs::write(&log, "")?;
            chown(&log, self.owner)?;
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            .output();
        check("pg_ctl start", out).map(|_| ()).map_err(|e| match e {
            InstanceError::Command { what, detail } => InstanceError::Command {
                what,
                detail: format!(
                    "{detail}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            },
            other => other,
        })
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    /// A backend blocked writing to a client that reads nothing (a stalled
    /// relay) does not act on the immediate shutdown: when pg_ctl gives up,
    /// the postmaster's children and then the postmaster get SIGKILL.
    pub fn kill(&mut self) -> Result<(), InstanceError> {
        match self.stop_with("immediate") {
            Ok(()) => Ok(()),
            Err(e) => {
                let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
                    .ok()
                    .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
                    .filter(|p| !p.is_empty());
                let Some(pid) = pid else { return Err(e) };
                let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                // Until the postmaster is gone.
                for _ in 0..100 {
                    let alive = Command::new("kill")
                        .args(["-0", &pid])
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if !alive {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                self.running = false;
                Ok(())
            }
        }
    }

    /// Stops the server cleanly.
    pub fn stop(&mut self) -> Result<(), InstanceError> {
        self.stop_with("fast")
    }

    fn stop_with(&mut self, mode: &str) -> Result<(), InstanceError> {
        if !self.running {
            return Ok(());
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", mode, "stop"])
            .output();
        check("pg_ctl stop", out)?;
        self.running = false;
        Ok(())
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&mut self) -> Result<(), InstanceError> {
        if !self.running {
            self.pg_ctl_start()?;
            self.running = true;
        }
        Ok(())
    }

    /// Runs SQL through psql as the superuser on `database`; returns stdout.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, InstanceError> {
        self.psql_as("postgres", &self.superuser_password, database, sql)
    }

    /// Runs SQL through psql (over TCP) as `user`; returns stdout.
    pub fn psql_as(
        &self,
        user: &str,
        password: &str,
        database: &str,
        sql: &str,
    ) -> Result<String, InstanceError> {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", user, "-d", database, "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output();
        check(&format!("psql {sql:?}"), out)
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    }

    /// Creates a login role and a database it owns.
    pub fn create_database(
        &self,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<(), InstanceError> {
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_roles WHERE rolname = '{user}'"),
        )?;
        if exists.is_empty() {
            self.psql(
                "postgres",
                &format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"),
            )?;
        }
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{database}\" OWNER \"{user}\""),
        )?;
        Ok(())
    }

    /// The folder holding this instance's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of a server binary of the version in use (pgbench, psql, ...).
    pub fn bin_path(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
