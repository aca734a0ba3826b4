//! Reaching a backend, whatever its protocol: where it is (TCP or a Unix
//! socket folder), the connection, and TLS on top of it, with errors that
//! name the side. The protocol adapters log in over these streams.

use crate::stream::Stream;
use bytes::Bytes;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};
use turnout_config::{Backend, BackendTlsMode, Protocol, Secret};
use turnout_control::Side;

/// Both sides of a listener and the protocol they speak: what the side
/// jobs (catalog reads, backfill, verify, catch-up) open connections with.
#[derive(Clone)]
pub struct Backends {
    pub protocol: Protocol,
    targets: [BackendTarget; 2],
}

impl Backends {
    pub fn new(protocol: Protocol, old: BackendTarget, new: BackendTarget) -> Backends {
        Backends {
            protocol,
            targets: [old, new],
        }
    }

    pub fn target(&self, side: Side) -> &BackendTarget {
        match side {
            Side::Old => &self.targets[0],
            Side::New => &self.targets[1],
        }
    }
}

/// Where and how to reach one side.
#[derive(Clone)]
pub struct BackendTarget {
    pub side: Side,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Secret,
    pub tls_mode: BackendTlsMode,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    /// The login that reads this side's log and applies the other side's
    /// to it (`replication_user`, else `user`).
    pub replication: (String, Secret),
}

impl BackendTarget {
    pub fn new(side: Side, b: &Backend, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        BackendTarget {
            side,
            host: b.host.clone(),
            port: b.port_u16(),
            database: b.database.clone(),
            user: b.user.clone(),
            password: b.password.clone(),
            tls_mode: b.tls,
            tls,
            connect_timeout: Duration::from_millis(b.connect_timeout_ms),
            replication: {
                let (user, password) = b.replication_login();
                (user.to_string(), password.clone())
            },
        }
    }

    /// This side, logged in to as its replication login.
    pub fn as_replication(&self) -> BackendTarget {
        let mut t = self.clone();
        t.user = self.replication.0.clone();
        t.password = self.replication.1.clone();
        t
    }

    /// `host:port`, or the socket file when `host` is a Unix socket folder.
    pub fn address(&self) -> String {
        match self.unix_socket() {
            Some(path) => path,
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// The socket file, as libpq names it, when `host` is a folder path.
    pub fn unix_socket(&self) -> Option<String> {
        self.host
            .starts_with('/')
            .then(|| format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to backend {side} ({addr}): {source}")]
    Connect {
        side: Side,
        addr: String,
        source: std::io::Error,
    },
    #[error("backend {side} ({addr}) did not answer within {ms} ms")]
    Timeout { side: Side, addr: String, ms: u128 },
    #[error("backend {side} ({addr}) refused TLS, and tls = \"{mode}\" requires it")]
    TlsRefused {
        side: Side,
        addr: String,
        mode: &'static str,
    },
    #[error("TLS handshake with backend {side} ({addr}) failed: {source}")]
    Tls {
        side: Side,
        addr: String,
        source: std::io::Error,
    },
    #[error("backend {side} asked for {method}, which turnout cannot answer: {detail}")]
    Auth {
        side: Side,
        method: &'static str,
        detail: String,
    },
    /// The backend's own ErrorResponse, relayed verbatim to the client.
    #[error("backend {side} refused the connection: {message}")]
    Refused {
        side: Side,
        message: String,
        frame: Bytes,
    },
    #[error("backend {side} broke the protocol during startup: {detail}")]
    Protocol { side: Side, detail: String },
    #[error("backend {side} closed the connection during startup")]
    Closed { side: Side },
    #[error("i/o error talking to backend {side}: {source}")]
    Io { side: Side, source: std::io::Error },
}

/// Opens the TCP connection (or the Unix socket), without TLS.
pub async fn open_plain(target: &BackendTarget) -> Result<Stream, BackendError> {
    let side = target.side;
    let addr = target.address();
    if let Some(path) = target.unix_socket() {
        let unix = UnixStream::connect(&path)
            .await
            .map_err(|source| BackendError::Connect {
                side,
                addr: addr.clone(),
                source,
            })?;
        return Ok(Stream::Unix(unix));
    }
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| BackendError::Connect { side, addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(Stream::Plain(tcp))
}

/// Upgrades a backend connection to TLS under `tls`, checking the
/// certificate against the configured host name.
pub async fn tls_client(
    target: &BackendTarget,
    tls: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> Result<Stream, BackendError> {
    let side = target.side;
    let addr = target.address();
    let name = ServerName::try_from(target.host.clone()).map_err(|e| BackendError::Tls {
        side,
        addr: addr.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|source| BackendError::Tls { side, addr, source })?;
    Ok(Stream::Client(Box::new(stream)))
}
