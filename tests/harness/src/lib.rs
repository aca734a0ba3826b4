//! turnout's test fixtures: the throwaway servers of turnout-instances
//! (re-exported), a TCP relay that injects faults, and self-signed
//! certificates.

mod etcd;
mod relay;

pub use etcd::EtcdInstance;

pub use relay::{Fault, FaultRelay};
pub use turnout_instances::{
    as_server_user, free_port, give_to_server_user, MariaDbInstance, PgInstance, PgOptions, TempDir,
};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Instance(#[from] turnout_instances::InstanceError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM
/// files `name.crt` and `name.key` in `dir`.
pub fn self_signed_cert(
    dir: &std::path::Path,
    name: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), HarnessError> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&crt, cert.cert.pem())?;
    std::fs::write(&key, cert.key_pair.serialize_pem())?;
    Ok((crt, key))
}
