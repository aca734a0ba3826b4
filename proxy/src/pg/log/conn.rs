//! The applier's connection to the side it applies to: prepared
//! statements run by the extended protocol, many at a time (a group of
//! the log's transactions is one round trip), their answers read in order.

use crate::backend::rows::{pg_column_names, Rows};
use crate::wire::pg::{self as codec, put_cstr};
use crate::wire::pg_framed::{Framed, FramedError};
use bytes::{BufMut, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Statements queued between reads of their answers (a Flush, then the
/// answers), so neither side's buffers fill while the other writes.
const MAX_UNREAD: usize = 512;

/// What an answer was for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Awaited {
    /// The Parse of a statement (its text).
    Parse(String),
    Bind,
    /// An Execute: its CommandComplete's count goes back to the caller
    /// under this number.
    Execute(u64),
}

/// The connection failed, or a statement did.
#[derive(Debug)]
pub enum ConnError {
    /// The connection is gone or answered nonsense: start over.
    Broken(String),
    /// The statement numbered so failed (the transaction is aborted until
    /// a Sync); its error.
    Failed {
        at: u64,
        error: String,
        code: String,
    },
    /// No answer within the limit.
    Timeout,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Broken(e) => write!(f, "{e}"),
            ConnError::Failed { error, .. } => write!(f, "{error}"),
            ConnError::Timeout => write!(f, "no answer in time"),
        }
    }
}

impl From<FramedError> for ConnError {
    fn from(e: FramedError) -> Self {
        ConnError::Broken(e.to_string())
    }
}

pub struct ApplyConn {
    conn: Framed,
    /// Prepared statements by text.
    names: HashMap<String, String>,
    /// Statements prepared so far (names are never reused).
    prepared: u64,
    out: BytesMut,
    awaited: VecDeque<Awaited>,
    unread: usize,
    next: u64,
    /// Counts of the Executes answered since the last take.
    counts: Vec<(u64, u64)>,
    limit: Duration,
}

impl ApplyConn {
    pub fn new(conn: Framed, limit: Duration) -> ApplyConn {
        ApplyConn {
            conn,
            names: HashMap::new(),
            prepared: 0,
            out: BytesMut::new(),
            awaited: VecDeque::new(),
            unread: 0,
            next: 1,
            counts: Vec::new(),
            limit,
        }
    }

    /// Queues `sql` with `params` (text, `None` for NULL); its number.
    /// Statements are prepared once per text, every parameter `text`.
    pub async fn exec(&mut self, sql: &str, params: &[Option<&[u8]>]) -> Result<u64, ConnError> {
        let name = match self.names.get(sql) {
            Some(n) => n.clone(),
            None => {
                self.prepared += 1;
                let name = format!("tl{}", self.prepared);
                let mut b = BytesMut::new();
                put_cstr(&mut b, &name);
                put_cstr(&mut b, sql);
                b.put_u16(params.len() as u16);
                for _ in params {
                    b.put_u32(25);
                }
                codec::put_frame(&mut self.out, b'P', &b);
                self.awaited.push_back(Awaited::Parse(sql.to_string()));
                self.names.insert(sql.to_string(), name.clone());
                name
            }
        };
        let mut b = BytesMut::new();
        put_cstr(&mut b, "");
        put_cstr(&mut b, &name);
        b.put_u16(0);
        b.put_u16(params.len() as u16);
        for p in params {
            match p {
                None => b.put_i32(-1),
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
            }
        }
        b.put_u16(0);
        codec::put_frame(&mut self.out, b'B', &b);
        let mut e = BytesMut::new();
        put_cstr(&mut e, "");
        e.put_i32(0);
        codec::put_frame(&mut self.out, b'E', &e);
        self.awaited.push_back(Awaited::Bind);
        let n = self.next;
        self.next += 1;
        self.awaited.push_back(Awaited::Execute(n));
        self.unread += 1;
        if self.unread >= MAX_UNREAD {
            self.checkpoint().await?;
        }
        Ok(n)
    }

    /// Sends what is queued with a Flush and reads every answer so far.
    pub async fn checkpoint(&mut self) -> Result<(), ConnError> {
        if self.awaited.is_empty() && self.out.is_empty() {
            return Ok(());
        }
        codec::put_frame(&mut self.out, b'H', &[]);
        let out = self.out.split().freeze();
        self.timed_send(&out).await?;
        while !self.awaited.is_empty() {
            self.read_one(false).await?;
        }
        self.unread = 0;
        Ok(())
    }

    /// Sends what is queued with a Sync and reads every answer, through
    /// ReadyForQuery (after a failure too: the connection is then ready
    /// for a ROLLBACK).
    pub async fn sync(&mut self) -> Result<(), ConnError> {
        codec::put_frame(&mut self.out, b'S', &[]);
        let out = self.out.split().freeze();
        self.timed_send(&out).await?;
        let mut failed = None;
        loop {
            match self.read_one(true).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(ConnError::Failed { at, error, code }) => {
                    // The server skips to the Sync: nothing else answers.
                    failed.get_or_insert(ConnError::Failed { at, error, code });
                }
                Err(e) => return Err(e),
            }
        }
        self.unread = 0;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The counts of the Executes answered since the last call, by number.
    pub fn take_counts(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.counts)
    }

    async fn timed_send(&mut self, out: &[u8]) -> Result<(), ConnError> {
        match tokio::time::timeout(self.limit, self.conn.send(out)).await {
            Ok(r) => r.map_err(ConnError::from),
            Err(_) => Err(ConnError::Timeout),
        }
    }

    /// Reads one answer; `true` at ReadyForQuery (only when `to_ready`).
    async fn read_one(&mut self, to_ready: bool) -> Result<bool, ConnError> {
        let f = match tokio::time::timeout(self.limit, self.conn.read()).await {
            Ok(f) => f?,
            Err(_) => return Err(ConnError::Timeout),
        };
        match f.tag {
            b'Z' if to_ready => Ok(true),
            b'1' | b'2' => {
                self.awaited.pop_front();
                Ok(false)
            }
            b'C' => {
                if let Some(Awaited::Execute(n)) = self.awaited.pop_front() {
                    self.counts.push((n, codec::written_rows(f.body(), false)));
                }
                Ok(false)
            }
            b'E' => {
                let fields = codec::error_fields(f.body());
                let at = self
                    .awaited
                    .iter()
                    .find_map(|a| match a {
                        Awaited::Execute(n) => Some(*n),
                        _ => None,
                    })
                    .unwrap_or(0);
                // A failed Parse, and those the server skips after the
                // failure, leave names that do not exist.
                for a in self.awaited.drain(..) {
                    if let Awaited::Parse(sql) = a {
                        self.names.remove(&sql);
                    }
                }
                Err(ConnError::Failed {
                    at,
                    error: codec::error_text(f.body()),
                    code: fields.get(&b'C').cloned().unwrap_or_default(),
                })
            }
            // Rows of turnout's own SELECTs, notices, settings.
            b'D' | b'T' | b'n' | b'N' | b'S' | b's' | b'I' => Ok(false),
            other => Err(ConnError::Broken(format!(
                "unexpected {} from the applying side",
                codec::tag_name(other)
            ))),
        }
    }

    /// Runs `sql` alone (Parse, Bind, Execute of the unnamed statement, then
    /// a Sync) after everything queued, and returns its rows.
    pub async fn query(&mut self, sql: &str, params: &[Option<&str>]) -> Result<Rows, ConnError> {
        self.checkpoint().await?;
        let mut b = BytesMut::new();
        put_cstr(&mut b, "");
        put_cstr(&mut b, sql);
        b.put_u16(params.len() as u16);
        for _ in params {
            b.put_u32(25);
        }
        codec::put_frame(&mut self.out, b'P', &b);
        let mut b = BytesMut::new();
        put_cstr(&mut b, "");
        put_cstr(&mut b, "");
        b.put_u16(0);
        b.put_u16(params.len() as u16);
        for p in params {
            match p {
                None => b.put_i32(-1),
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
            }
        }
        b.put_u16(0);
        codec::put_frame(&mut self.out, b'B', &b);
        let mut d = BytesMut::new();
        d.put_u8(b'P');
        put_cstr(&mut d, "");
        codec::put_frame(&mut self.out, b'D', &d);
        let mut e = BytesMut::new();
        put_cstr(&mut e, "");
        e.put_i32(0);
        codec::put_frame(&mut self.out, b'E', &e);
        codec::put_frame(&mut self.out, b'S', &[]);
        let out = self.out.split().freeze();
        self.timed_send(&out).await?;
        let mut columns = Vec::new();
        let mut data = Vec::new();
        let mut error = None;
        loop {
            let f = match tokio::time::timeout(self.limit, self.conn.read()).await {
                Ok(f) => f?,
                Err(_) => return Err(ConnError::Timeout),
            };
            match f.tag {
                b'T' => columns = pg_column_names(f.body()),
                b'D' => data.push(
                    codec::data_row_values(f.body())
                        .into_iter()
                        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                ),
                b'E' if error.is_none() => {
                    let fields = codec::error_fields(f.body());
                    error = Some(ConnError::Failed {
                        at: 0,
                        error: codec::error_text(f.body()),
                        code: fields.get(&b'C').cloned().unwrap_or_default(),
                    })
                }
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(Rows::new(columns, data)),
        }
    }

    /// Runs `sql` as a simple Query (several statements, DDL), after
    /// everything queued; its error if it failed.
    pub async fn simple(&mut self, sql: &str) -> Result<(), ConnError> {
        self.checkpoint().await?;
        let mut b = BytesMut::new();
        put_cstr(&mut b, sql);
        codec::put_frame(&mut self.out, b'Q', &b);
        let out = self.out.split().freeze();
        self.timed_send(&out).await?;
        let mut error = None;
        loop {
            let f = match tokio::time::timeout(self.limit, self.conn.read()).await {
                Ok(f) => f?,
                Err(_) => return Err(ConnError::Timeout),
            };
            match f.tag {
                b'E' if error.is_none() => {
                    let fields = codec::error_fields(f.body());
                    error = Some(ConnError::Failed {
                        at: 0,
                        error: codec::error_text(f.body()),
                        code: fields.get(&b'C').cloned().unwrap_or_default(),
                    })
                }
                b'G' => {
                    let mut b = BytesMut::new();
                    put_cstr(&mut b, "turnout: COPY is not applied from the log");
                    self.conn.send(&codec::frame(b'f', &b)).await?;
                }
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Ends the connection politely.
    pub async fn close(mut self) {
        let _ = self.conn.send(&codec::frame(b'X', &[])).await;
    }
}
