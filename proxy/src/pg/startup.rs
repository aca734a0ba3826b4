//! The part of a client connection before forwarding starts: SSL/GSS
//! negotiation, cancel requests, the startup packet.

use super::backend::BackendError;
use super::codec::{self, CodecError, Severity, Startup};
use crate::stream::Stream;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// An error turnout reports to the client in its own protocol.
    #[error("{message} ({code})")]
    Client {
        severity: Severity,
        code: &'static str,
        message: String,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("client connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("client did not finish startup within {0} ms")]
    Timeout(u128),
}

impl From<CodecError> for SessionError {
    fn from(e: CodecError) -> Self {
        SessionError::Client {
            severity: Severity::Fatal,
            code: "08P01",
            message: format!("turnout: protocol violation: {e}"),
        }
    }
}

impl SessionError {
    /// The ErrorResponse the client should see, if it can still be told.
    pub fn to_client(&self) -> Option<Bytes> {
        match self {
            SessionError::Client {
                severity,
                code,
                message,
            } => Some(codec::error_response(*severity, code, message)),
            SessionError::Backend(BackendError::Refused {
                side,
                message,
                frame,
            }) => {
                // turnout's own login refused (a wrong backend password, a
                // missing database): said as such, never as the client's.
                let code = codec::error_fields(&frame[5..])
                    .remove(&b'C')
                    .unwrap_or_default();
                if code.starts_with("28") || code.starts_with("3D") {
                    return Some(codec::error_response(
                        Severity::Fatal,
                        "08006",
                        &format!(
                            "turnout: backend {side} refused turnout's own login ({message}); check backends.{side} in turnout's config"
                        ),
                    ));
                }
                Some(frame.clone())
            }
            SessionError::Backend(e) => Some(codec::error_response(
                Severity::Fatal,
                "08006",
                &format!("turnout: {e}"),
            )),
            SessionError::Timeout(_) => Some(codec::error_response(
                Severity::Fatal,
                "08006",
                "turnout: canceling authentication due to timeout",
            )),
            SessionError::Io(_) => None,
        }
    }
}

/// Reads one typed frame whole (used before forwarding starts).
pub async fn read_client_frame(
    stream: &mut Stream,
    max: usize,
) -> Result<(u8, Bytes), SessionError> {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len < 4 {
        return Err(CodecError::BadLength {
            tag: codec::tag_name(head[0]),
            len,
        }
        .into());
    }
    let total = len as usize + 1;
    if total > max {
        return Err(CodecError::TooLarge { len: total, max }.into());
    }
    let mut body = BytesMut::zeroed(len as usize - 4);
    stream.read_exact(&mut body).await?;
    Ok((head[0], body.freeze()))
}

async fn read_startup(stream: &mut Stream) -> Result<Startup, SessionError> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let len = codec::startup_len(head)?;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await?;
    Ok(codec::parse_startup(&body)?)
}

/// What the client asked for once negotiation is over.
pub enum Opening {
    Session {
        stream: Stream,
        params: Vec<(String, String)>,
    },
    Cancel {
        pid: i32,
        secret: i32,
    },
}

/// Negotiates TLS and reads the startup packet.
pub async fn open(
    mut stream: Stream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    tls_required: bool,
) -> Result<Opening, SessionError> {
    // TLS is for TCP; a local socket is as private as the machine.
    let tls_required = tls_required && matches!(stream, Stream::Plain(_));
    loop {
        let startup = match read_startup(&mut stream).await {
            Ok(s) => s,
            Err(e) => return Err(refuse(&mut stream, e).await),
        };
        match startup {
            Startup::Ssl => {
                stream = match (stream, tls) {
                    (Stream::Plain(mut tcp), Some(tls)) => {
                        tcp.write_all(b"S").await?;
                        let accepted = tokio_rustls::TlsAcceptor::from(tls.clone())
                            .accept(tcp)
                            .await?;
                        Stream::Server(Box::new(accepted))
                    }
                    (mut encrypted @ (Stream::Server(_) | Stream::Client(_)), _) => {
                        let e = SessionError::Client {
                            severity: Severity::Fatal,
                            code: "08P01",
                            message: "SSLRequest on a connection that is already encrypted".into(),
                        };
                        return Err(refuse(&mut encrypted, e).await);
                    }
                    (mut other, _) => {
                        other.write_all(b"N").await?;
                        other
                    }
                };
            }
            Startup::GssEnc => {
                stream.write_all(b"N").await?;
            }
            Startup::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            Startup::Protocol {
                minor,
                params,
                unsupported,
            } => {
                if tls_required && !stream.is_tls() {
                    let e = SessionError::Client {
                        severity: Severity::Fatal,
                        code: "28000",
                        message: "turnout requires TLS: connect with sslmode=require".into(),
                    };
                    return Err(refuse(&mut stream, e).await);
                }
                if params
                    .get("replication")
                    .is_some_and(|r| r != "false" && r != "0")
                {
                    let e = SessionError::Client {
                        severity: Severity::Fatal,
                        code: "0A000",
                        message: "turnout does not proxy replication connections".into(),
                    };
                    return Err(refuse(&mut stream, e).await);
                }
                if minor > 0 || !unsupported.is_empty() {
                    stream
                        .write_all(&codec::negotiate_protocol_version(0, &unsupported))
                        .await?;
                }
                return Ok(Opening::Session {
                    stream,
                    params: params.into_iter().collect(),
                });
            }
        }
    }
}

/// Tells the client why its connection is refused (when it can still be told).
pub async fn refuse(stream: &mut Stream, e: SessionError) -> SessionError {
    if let Some(msg) = e.to_client() {
        let _ = stream.write_all(&msg).await;
        let _ = stream.flush().await;
    }
    e
}
