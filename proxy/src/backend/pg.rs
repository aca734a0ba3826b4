//! Connecting and authenticating to a PostgreSQL backend.

use super::rows::Rows;
pub use super::transport::{open_plain, tls_client, BackendError, BackendTarget};
use super::QueryError;
use crate::stream::Stream;
use crate::wire::pg::{self as codec, tag_name};
use crate::wire::pg_framed::Framed;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{
    md5_hash,
    sasl::{ChannelBinding, ScramSha256},
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnout_config::BackendTlsMode;
use turnout_control::Side;

/// An authenticated backend connection, ready for queries.
pub struct BackendConn {
    pub stream: Stream,
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus values reported at startup, in order.
    pub params: Vec<(String, String)>,
    /// Bytes read past the first ReadyForQuery (normally none).
    pub leftover: BytesMut,
}

/// Opens a connection, negotiates TLS and authenticates as the configured user.
pub async fn connect(
    target: &BackendTarget,
    client_params: &[(String, String)],
) -> Result<BackendConn, BackendError> {
    let timeout = target.connect_timeout;
    let timed_out = || BackendError::Timeout {
        side: target.side,
        addr: target.address(),
        ms: timeout.as_millis(),
    };
    tokio::time::timeout(timeout, connect_inner(target, client_params))
        .await
        .map_err(|_| timed_out())?
}

/// Opens the TCP connection and upgrades it to TLS as configured.
pub async fn open_stream(target: &BackendTarget) -> Result<Stream, BackendError> {
    let side = target.side;
    let addr = target.address();
    let tcp = match open_plain(target).await? {
        Stream::Plain(tcp) if target.tls.is_some() => tcp,
        other => return Ok(other),
    };
    let Some(tls) = &target.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let mut tcp = tcp;
    let io = |source| BackendError::Io { side, source };
    tcp.write_all(&codec::ssl_request()).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    match answer[0] {
        b'S' => {}
        b'N' if target.tls_mode == BackendTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
        b'N' => {
            return Err(BackendError::TlsRefused {
                side,
                addr,
                mode: match target.tls_mode {
                    BackendTlsMode::VerifyFull => "verify-full",
                    _ => "require",
                },
            })
        }
        other => {
            return Err(BackendError::Protocol {
                side,
                detail: format!("unexpected answer {} to SSLRequest", tag_name(other)),
            })
        }
    }
    tls_client(target, tls.clone(), tcp).await
}

async fn connect_inner(
    target: &BackendTarget,
    client_params: &[(String, String)],
) -> Result<BackendConn, BackendError> {
    let side = target.side;
    let io = |source| BackendError::Io { side, source };
    let mut stream = open_stream(target).await?;
    let mut params: Vec<(&str, &str)> = vec![
        ("user", target.user.as_str()),
        ("database", target.database.as_str()),
    ];
    for (k, v) in client_params {
        if k != "user" && k != "database" {
            params.push((k.as_str(), v.as_str()));
        }
    }
    stream
        .write_all(&codec::startup_message(&params))
        .await
        .map_err(io)?;

    let mut buf = BytesMut::with_capacity(1024);
    let mut scram: Option<ScramSha256> = None;
    let mut pid = 0;
    let mut secret = 0;
    let mut reported = Vec::new();
    let scram_failed = |e: std::io::Error| BackendError::Auth {
        side,
        method: "SCRAM-SHA-256",
        detail: e.to_string(),
    };
    loop {
        let (tag, body) = read_frame(&mut stream, &mut buf, side).await?;
        match tag {
            b'R' => {
                let mut b = &body[..];
                if b.len() < 4 {
                    return Err(protocol(side, "short authentication request"));
                }
                let code = b.get_i32();
                let reply = match code {
                    0 => None,
                    3 => Some(password_message(target.password.expose().as_bytes())),
                    5 => {
                        if b.len() < 4 {
                            return Err(protocol(side, "short md5 salt"));
                        }
                        let salt = [b[0], b[1], b[2], b[3]];
                        let hash = md5_hash(
                            target.user.as_bytes(),
                            target.password.expose().as_bytes(),
                            salt,
                        );
                        Some(password_message(hash.as_bytes()))
                    }
                    10 => {
                        let offers_scram = b.split(|&c| c == 0).any(|m| m == b"SCRAM-SHA-256");
                        if !offers_scram {
                            return Err(BackendError::Auth {
                                side,
                                method: "SASL",
                                detail: "no SCRAM-SHA-256 mechanism offered".into(),
                            });
                        }
                        let s = ScramSha256::new(
                            target.password.expose().as_bytes(),
                            ChannelBinding::unsupported(),
                        );
                        let mut m = BytesMut::new();
                        codec::put_cstr(&mut m, "SCRAM-SHA-256");
                        m.put_i32(s.message().len() as i32);
                        m.put_slice(s.message());
                        scram = Some(s);
                        Some(codec::frame(b'p', &m))
                    }
                    11 => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| protocol(side, "SASL continue before SASL start"))?;
                        s.update(b).map_err(scram_failed)?;
                        Some(codec::frame(b'p', s.message()))
                    }
                    12 => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| protocol(side, "SASL final before SASL start"))?;
                        s.finish(b).map_err(scram_failed)?;
                        None
                    }
                    other => {
                        return Err(BackendError::Auth {
                            side,
                            method: "an unsupported method",
                            detail: format!("authentication request code {other}"),
                        })
                    }
                };
                if let Some(reply) = reply {
                    stream.write_all(&reply).await.map_err(io)?;
                }
            }
            b'S' => {
                let mut parts = body.split(|&c| c == 0);
                let name = parts.next().unwrap_or_default();
                let value = parts.next().unwrap_or_default();
                reported.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
            b'K' => {
                if body.len() < 8 {
                    return Err(protocol(side, "short BackendKeyData"));
                }
                let mut b = &body[..];
                pid = b.get_i32();
                secret = b.get_i32();
            }
            b'N' | b'v' => {}
            b'Z' => {
                return Ok(BackendConn {
                    stream,
                    pid,
                    secret,
                    params: reported,
                    leftover: buf,
                })
            }
            b'E' => {
                let fields = codec::error_fields(&body);
                let message = fields.get(&b'M').cloned().unwrap_or_default();
                return Err(BackendError::Refused {
                    side,
                    message,
                    frame: codec::frame(b'E', &body),
                });
            }
            other => {
                return Err(protocol(
                    side,
                    &format!("unexpected message {} during startup", tag_name(other)),
                ))
            }
        }
    }
}

fn protocol(side: Side, detail: &str) -> BackendError {
    BackendError::Protocol {
        side,
        detail: detail.to_string(),
    }
}

fn password_message(password: &[u8]) -> Bytes {
    let mut m = BytesMut::with_capacity(password.len() + 1);
    m.put_slice(password);
    m.put_u8(0);
    codec::frame(b'p', &m)
}

/// Reads one whole frame during startup (frames here are small).
async fn read_frame(
    stream: &mut Stream,
    buf: &mut BytesMut,
    side: Side,
) -> Result<(u8, Bytes), BackendError> {
    const MAX_STARTUP_FRAME: usize = 1 << 20;
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if !(4..=MAX_STARTUP_FRAME).contains(&len) {
                return Err(protocol(side, &format!("invalid frame length {len}")));
            }
            if buf.len() > len {
                let frame = buf.split_to(len + 1);
                return Ok((frame[0], frame.freeze().slice(5..)));
            }
        }
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|source| BackendError::Io { side, source })?;
        if n == 0 {
            return Err(BackendError::Closed { side });
        }
    }
}

/// Sends a CancelRequest for a backend process on a fresh connection.
pub async fn send_cancel(
    target: &BackendTarget,
    pid: i32,
    secret: i32,
) -> Result<(), BackendError> {
    let fut = async {
        let mut stream = open_stream(target).await?;
        stream
            .write_all(&codec::cancel_request(pid, secret))
            .await
            .map_err(|source| BackendError::Io {
                side: target.side,
                source,
            })?;
        let _ = stream.shutdown().await;
        Ok(())
    };
    tokio::time::timeout(target.connect_timeout, fut)
        .await
        .map_err(|_| BackendError::Timeout {
            side: target.side,
            addr: target.address(),
            ms: target.connect_timeout.as_millis(),
        })?
}
/// The longest a simple query of turnout's own waits for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `s` as an SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A connection of turnout's own to `target` for simple queries (catalog
/// reads, catch-up): logged in as the configured user, no client settings.
pub async fn open_simple(target: &BackendTarget) -> Result<Framed, QueryError> {
    let conn = connect(target, &[])
        .await
        .map_err(|e| QueryError::Login(e.to_string()))?;
    Ok(Framed::new(conn.stream, conn.leftover, usize::MAX))
}

/// Ends a connection of [`open_simple`] politely (Terminate).
pub async fn close(conn: &mut Framed) {
    let _ = conn.send(&codec::frame(b'X', &[])).await;
}

/// Runs one simple query; its rows (as text, with their column names), or
/// its error.
pub async fn run(conn: &mut Framed, sql: &str, side: Side) -> Result<Rows, QueryError> {
    let broken = |e: crate::wire::pg_framed::FramedError| QueryError::Broken {
        side: Some(side),
        detail: e.to_string(),
    };
    let exchange = async {
        conn.send(&codec::query(sql)).await.map_err(broken)?;
        let mut rows = Vec::new();
        let mut columns = Vec::new();
        let mut error = None;
        loop {
            let f = conn.read().await.map_err(broken)?;
            match f.tag {
                b'T' => columns = super::rows::pg_column_names(f.body()),
                b'D' => rows.push(
                    codec::data_row_values(f.body())
                        .into_iter()
                        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                ),
                b'E' if error.is_none() => error = Some(codec::error_text(f.body())),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(message) => Err(QueryError::Refused {
                side: Some(side),
                message,
            }),
            None => Ok(Rows::new(columns, rows)),
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(QueryError::Timeout {
            side,
            secs: ANSWER_TIMEOUT.as_secs(),
        }))
}
