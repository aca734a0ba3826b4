//! A throwaway MariaDB server: mariadb-install-db into a temp dir, mariadbd
//! on a private port with password authentication, killed and removed on drop.

use crate::{check, free_port, InstanceError, TempDir};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running MariaDB server in a temp dir, on its own port.
pub struct MariaDbInstance {
    pub port: u16,
    pub root_password: String,
    dir: TempDir,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    /// Certificate and key the server presents, when it serves TLS.
    tls: Option<(PathBuf, PathBuf)>,
    /// It keeps a row-based binary log (a log source for the mirror).
    binlog: bool,
}

/// Under root, the server runs as `mysql` (mariadbd refuses root unless told).
fn server_owner() -> Result<Option<(u32, u32)>, InstanceError> {
    crate::owner_under_root("mysql", "MariaDB")
}

fn find(program: &str) -> Result<PathBuf, InstanceError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|p| p.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| InstanceError::NotInstalled(program.into()))
}

impl MariaDbInstance {
    /// Installs the system tables and starts the server. A few seconds.
    pub fn start() -> Result<MariaDbInstance, InstanceError> {
        Self::start_with_tls(None)
    }

    /// [`MariaDbInstance::start`], serving TLS with this certificate and
    /// key (PEM files) when given.
    pub fn start_with_tls(
        tls: Option<(PathBuf, PathBuf)>,
    ) -> Result<MariaDbInstance, InstanceError> {
        Self::start_opts(tls, false)
    }

    /// [`MariaDbInstance::start_with_tls`]; `binlog`: the server keeps a
    /// row-based binary log (`log_bin`, `binlog_format = ROW`, full row
    /// images, a server id of its own), as a replica's source would.
    pub fn start_opts(
        tls: Option<(PathBuf, PathBuf)>,
        binlog: bool,
    ) -> Result<MariaDbInstance, InstanceError> {
        let owner = server_owner()?;
        let dir = TempDir::new("turnout-mariadb")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let mut inst = MariaDbInstance {
            port: 0,
            root_password: "root-pw".into(),
            dir,
            owner,
            child: None,
            tls: None,
            binlog,
        };
        if let Some((crt, key)) = tls {
            let dcrt = inst.dir.path().join("server.crt");
            let dkey = inst.dir.path().join("server.key");
            std::fs::copy(crt, &dcrt)?;
            std::fs::copy(key, &dkey)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&dcrt, Some(uid), Some(gid))?;
                std::os::unix::fs::chown(&dkey, Some(uid), Some(gid))?;
            }
            inst.tls = Some((dcrt, dkey));
        }
        // A temp folder of its own: bootstraps running side by side with a
        // shared one crash now and then (Aria temporary tables).
        let tmp = inst.dir.path().join("tmp");
        std::fs::create_dir(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
        }
        let mut install = Command::new(find("mariadb-install-db")?);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", inst.data_dir().display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg("--skip-name-resolve");
        if owner.is_some() {
            install.arg("--user=mysql");
        }
        check("mariadb-install-db", install.output())?;
        let mut last = None;
        for _ in 0..5 {
            inst.port = free_port()?;
            match inst.launch() {
                Ok(()) => {
                    inst.sql_on_socket(
                        &format!(
                            "ALTER USER root@localhost IDENTIFIED BY '{}'; \
                         CREATE OR REPLACE USER root@'127.0.0.1' IDENTIFIED BY '{}'; \
                         GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION",
                            inst.root_password, inst.root_password
                        ),
                        false,
                    )?;
                    return Ok(inst);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| InstanceError::Command {
            what: "mariadbd".into(),
            detail: "no attempt made".into(),
        }))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// Starts mariadbd and waits until it answers on its socket.
    fn launch(&mut self) -> Result<(), InstanceError> {
        let mut cmd = Command::new(find("mariadbd")?);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadb.pid").display()
            ))
            .arg(format!("--log-error={}", self.log_file().display()))
            .arg(format!(
                "--tmpdir={}",
                self.dir.path().join("tmp").display()
            ))
            .args([
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-doublewrite=0",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.binlog {
            cmd.arg(format!(
                "--log-bin={}",
                self.data_dir().join("binlog").display()
            ))
            .arg(format!("--server-id={}", self.port))
            .args([
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                // As servers with a binary log that run applications'
                // stored functions are set.
                "--log-bin-trust-function-creators=1",
            ]);
        } else {
            cmd.arg("--skip-log-bin");
        }
        if let Some((uid, gid)) = self.owner {
            cmd.arg("--user=mysql").uid(uid).gid(gid);
        }
        if let Some((crt, key)) = &self.tls {
            cmd.arg(format!("--ssl-cert={}", crt.display()))
                .arg(format!("--ssl-key={}", key.display()));
        }
        let mut child = cmd.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(InstanceError::Command {
                    what: "mariadbd".into(),
                    detail: format!(
                        "exited with {status}\n{}",
                        std::fs::read_to_string(self.log_file()).unwrap_or_default()
                    ),
                });
            }
            if self.sql_on_socket("SELECT 1", false).is_ok()
                || self.sql_on_socket("SELECT 1", true).is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(InstanceError::Command {
                    what: "mariadbd".into(),
                    detail: "did not answer within 60 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL as root over the Unix socket (before a password is set,
    /// and as the superuser's back door).
    fn sql_on_socket(&self, sql: &str, with_password: bool) -> Result<String, InstanceError> {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql]);
        if with_password {
            c.arg(format!("--password={}", self.root_password));
        }
        check(&format!("mariadb {sql:?}"), c.output())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    }

    /// Runs SQL as root over TCP; returns stdout (tab-separated, no headers).
    pub fn sql(&self, database: &str, sql: &str) -> Result<String, InstanceError> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &self.port.to_string()])
            .args(["-u", "root", "-N", "-B", "-D", database, "-e", sql])
            .arg(format!("--password={}", self.root_password))
            .output();
        check(&format!("mariadb {sql:?}"), out)
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    }

    /// Creates a database and a user (`mysql_native_password`, or the
    /// `plugin` given) with every right on it.
    pub fn create_database(
        &self,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<(), InstanceError> {
        self.sql(
            "mysql",
            &format!(
                "CREATE DATABASE `{database}`; \
                 CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}'; \
                 GRANT ALL ON `{database}`.* TO '{user}'@'%'"
            ),
        )?;
        Ok(())
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) -> Result<(), InstanceError> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts a killed server again on the same port.
    pub fn restart(&mut self) -> Result<(), InstanceError> {
        if self.child.is_none() {
            self.launch()?;
        }
        Ok(())
    }

    /// The folder holding this instance's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MariaDbInstance {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throwaway_server_starts_and_takes_password_logins() {
        let m = MariaDbInstance::start().unwrap();
        m.create_database("app", "app", "app-pw").unwrap();
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &m.port.to_string()])
            .args(["-u", "app", "--password=app-pw", "-N", "-B", "-D", "app"])
            .args(["-e", "SELECT 40 + 2"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    }
}
