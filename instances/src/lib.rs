//! Throwaway database servers for `turnout demo`, the tests and `bench/`: a
//! PostgreSQL cluster made with initdb, or a MariaDB server, in a temporary
//! folder, on a private port, with password authentication, stopped and
//! removed on drop. Test fixtures (the fault relay, certificates) are in
//! tests/harness, which the turnout binary does not link.

mod mariadb;
mod pg;
mod tempdir;

pub use mariadb::MariaDbInstance;
pub use pg::{as_server_user, give_to_server_user, PgInstance, PgOptions};
pub use tempdir::TempDir;

use std::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("{0} not found: {hint}", hint = install_hint(.0))]
    NotInstalled(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// When we run as root: the uid and gid of the system user `name` that a
/// server refusing root runs as; `None` otherwise.
pub(crate) fn owner_under_root(
    name: &str,
    server: &str,
) -> Result<Option<(u32, u32)>, InstanceError> {
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(1)
        != 0
    {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name) && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| InstanceError::Command {
            what: format!("running {server} as root"),
            detail: format!("no `{name}` system user to run the server as"),
        })
}

/// The output of a command that must succeed, or its output as the error.
pub(crate) fn check(
    what: &str,
    out: std::io::Result<std::process::Output>,
) -> Result<std::process::Output, InstanceError> {
    let out = out?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(InstanceError::Command {
            what: what.to_string(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How to get `program` on a Debian or Ubuntu machine.
fn install_hint(program: &str) -> String {
    let package = if program.starts_with("mariadb") || program.starts_with("mysql") {
        "mariadb-server"
    } else {
        "postgresql"
    };
    format!(
        "install it with `sudo apt-get install {package}` (Debian, Ubuntu; other systems: the {} server package), or put the folder that holds it on PATH",
        if package == "postgresql" { "PostgreSQL" } else { "MariaDB" }
    )
}
