//! Reading a PostgreSQL server's log: a walsender connection
//! (`replication=database`) streaming a logical slot through `pgoutput`,
//! and the server-side objects it needs (the slot, the publication).
//!
//! The walsender's output functions write values under the session's
//! settings: they are fixed here ([`LOG_SETTINGS`]), and whoever applies
//! the values uses the same, so text values travel exactly.

use super::pg::{connect, run, BackendTarget};
use super::pgoutput::{decode_frame, status_update, DecodeError, Lsn, StreamFrame};
use super::QueryError;
use crate::wire::pg as codec;
use crate::wire::pg_framed::{Framed, FramedError};
use turnout_control::Side;

/// Settings of both ends of the log: the walsender that writes values as
/// text and the connection that applies them.
pub const LOG_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("TimeZone", "UTC"),
    ("lc_monetary", "C"),
];

/// What went wrong with the log stream.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("the log stream of {side} broke: {detail}")]
    Stream { side: Side, detail: String },
    #[error("{side}'s log: {source}")]
    Decode { side: Side, source: DecodeError },
}

/// A walsender connection streaming turnout's slot.
pub struct LogStream {
    side: Side,
    conn: Framed,
}

/// What the walsender says of its server (`IDENTIFY_SYSTEM`).
#[derive(Debug, Clone)]
pub struct SystemId {
    pub system_id: String,
    /// The log's end when asked.
    pub position: Lsn,
}

/// Opens a walsender connection to `target` (logged in as its
/// replication login) with [`LOG_SETTINGS`].
pub async fn open_walsender(target: &BackendTarget) -> Result<Framed, QueryError> {
    let mut params: Vec<(String, String)> = vec![
        ("replication".into(), "database".into()),
        ("application_name".into(), "turnout log reader".into()),
    ];
    params.extend(
        LOG_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let conn = connect(target, &params)
        .await
        .map_err(|e| QueryError::Login(e.to_string()))?;
    Ok(Framed::new(conn.stream, conn.leftover, usize::MAX))
}

/// `IDENTIFY_SYSTEM` on a walsender connection.
pub async fn identify(conn: &mut Framed, side: Side) -> Result<SystemId, QueryError> {
    let rows = run(conn, "IDENTIFY_SYSTEM", side).await?;
    let row = rows
        .iter()
        .next()
        .ok_or_else(|| QueryError::Malformed(format!("{side}: IDENTIFY_SYSTEM gave no row")))?;
    let system_id = row
        .str("systemid")
        .map_err(|e| QueryError::Malformed(e.to_string()))?
        .to_string();
    let position = row
        .str("xlogpos")
        .ok()
        .and_then(Lsn::parse)
        .ok_or_else(|| {
            QueryError::Malformed(format!("{side}: IDENTIFY_SYSTEM: no log position"))
        })?;
    Ok(SystemId {
        system_id,
        position,
    })
}

/// `s` as a double-quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl LogStream {
    /// Starts streaming `slot` through `publications` from `from` (the
    /// server starts at the slot's confirmed position when that is later).
    pub async fn start(
        mut conn: Framed,
        side: Side,
        slot: &str,
        publications: &[String],
        from: Lsn,
    ) -> Result<LogStream, LogError> {
        let names = publications
            .iter()
            .map(|p| ident(p))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {from} (proto_version '1', publication_names {}, messages 'true')",
            ident(slot),
            super::pg::literal(&names)
        );
        let broken = |e: FramedError| LogError::Stream {
            side,
            detail: e.to_string(),
        };
        conn.send(&codec::query(&sql)).await.map_err(broken)?;
        loop {
            let f = conn.read().await.map_err(broken)?;
            match f.tag {
                b'W' => return Ok(LogStream { side, conn }),
                b'E' => {
                    return Err(LogError::Query(QueryError::Refused {
                        side: Some(side),
                        message: codec::error_text(f.body()),
                    }))
                }
                b'N' | b'S' => {}
                other => {
                    return Err(LogError::Stream {
                        side,
                        detail: format!(
                            "unexpected {} in answer to START_REPLICATION",
                            codec::tag_name(other)
                        ),
                    })
                }
            }
        }
    }

    /// The next frame of the stream.
    pub async fn next(&mut self) -> Result<StreamFrame, LogError> {
        loop {
            let f = self.conn.read().await.map_err(|e| LogError::Stream {
                side: self.side,
                detail: e.to_string(),
            })?;
            match f.tag {
                b'd' => {
                    return decode_frame(f.raw.slice(5..)).map_err(|source| LogError::Decode {
                        side: self.side,
                        source,
                    })
                }
                b'N' | b'S' => continue,
                b'E' => {
                    return Err(LogError::Stream {
                        side: self.side,
                        detail: codec::error_text(f.body()),
                    })
                }
                b'c' => {
                    return Err(LogError::Stream {
                        side: self.side,
                        detail: "the server ended the stream".into(),
                    })
                }
                other => {
                    return Err(LogError::Stream {
                        side: self.side,
                        detail: format!("unexpected {} in the stream", codec::tag_name(other)),
                    })
                }
            }
        }
    }

    /// Whether a next frame is already read from the socket (more of the
    /// stream waits: a group of transactions may go on).
    pub fn has_buffered(&self) -> bool {
        self.conn.has_buffered()
    }

    /// Tells the server that everything up to `flushed` is applied on the
    /// other side (the slot may release it).
    pub async fn confirm(&mut self, flushed: Lsn) -> Result<(), LogError> {
        let body = status_update(flushed, false);
        self.conn
            .send(&codec::frame(b'd', &body))
            .await
            .map_err(|e| LogError::Stream {
                side: self.side,
                detail: e.to_string(),
            })
    }
}
