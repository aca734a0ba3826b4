//! PostgreSQL's logical replication messages (`pgoutput`, protocol 1 with
//! `messages`), as the walsender sends them inside CopyData: the stream's
//! own frames (XLogData, keepalive) and the decoded changes. Bytes to
//! values only: what is done with them is the applier's.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A position in a server's write-ahead log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `X/Y` as PostgreSQL writes it.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(Lsn((hi << 32) | lo))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What went wrong reading a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed replication message: {0}")]
pub struct DecodeError(pub String);

/// One frame of the replication stream (the body of a CopyData).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamFrame {
    /// WAL data: a decoded change at `start`.
    XLogData { start: Lsn, end: Lsn, msg: Message },
    /// The server is alive and has sent everything before `wal_end`.
    Keepalive { wal_end: Lsn, reply: bool },
}

/// A column of a relation as the log describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    /// Part of the replica identity (the key UPDATE and DELETE name rows by).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
}

/// A table as the log describes it, before its first change and after it
/// changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub schema: String,
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` an index.
    pub replica_identity: u8,
    pub columns: Vec<RelColumn>,
}

/// One column's value in a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A large (TOASTed) value the change did not touch: not sent.
    Unchanged,
    /// The value as the type's output function writes it.
    Text(Bytes),
}

impl Value {
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
}

pub type Tuple = Vec<Value>;

/// A decoded change or transaction boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    /// The transaction was applied by a replication-origin session.
    Origin {
        name: String,
    },
    Relation(Relation),
    /// A type's name (sent for user types before a relation uses them).
    Type {
        oid: u32,
        schema: String,
        name: String,
    },
    Insert {
        rel: u32,
        new: Tuple,
    },
    Update {
        rel: u32,
        /// The old key (`K`, when the key changed) or the whole old row
        /// (`O`, replica identity full).
        old: Option<Tuple>,
        new: Tuple,
    },
    Delete {
        rel: u32,
        old: Tuple,
    },
    Truncate {
        rels: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// `pg_logical_emit_message`.
    Message {
        transactional: bool,
        prefix: String,
        content: Bytes,
    },
}

fn short(what: &str) -> DecodeError {
    DecodeError(format!("{what} cut short"))
}

fn u8_of(b: &mut Bytes, what: &str) -> Result<u8, DecodeError> {
    if b.remaining() < 1 {
        return Err(short(what));
    }
    Ok(b.get_u8())
}

fn u16_of(b: &mut Bytes, what: &str) -> Result<u16, DecodeError> {
    if b.remaining() < 2 {
        return Err(short(what));
    }
    Ok(b.get_u16())
}

fn u32_of(b: &mut Bytes, what: &str) -> Result<u32, DecodeError> {
    if b.remaining() < 4 {
        return Err(short(what));
    }
    Ok(b.get_u32())
}

fn u64_of(b: &mut Bytes, what: &str) -> Result<u64, DecodeError> {
    if b.remaining() < 8 {
        return Err(short(what));
    }
    Ok(b.get_u64())
}

fn cstr_of(b: &mut Bytes, what: &str) -> Result<String, DecodeError> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| DecodeError(format!("{what}: unterminated string")))?;
    let s = b.split_to(end);
    b.advance(1);
    String::from_utf8(s.to_vec()).map_err(|_| DecodeError(format!("{what}: not UTF-8")))
}

/// One CopyData body of the replication stream.
pub fn decode_frame(mut b: Bytes) -> Result<StreamFrame, DecodeError> {
    match u8_of(&mut b, "stream frame")? {
        b'w' => {
            let start = Lsn(u64_of(&mut b, "XLogData")?);
            let end = Lsn(u64_of(&mut b, "XLogData")?);
            let _sent = u64_of(&mut b, "XLogData")?;
            Ok(StreamFrame::XLogData {
                start,
                end,
                msg: decode_message(b)?,
            })
        }
        b'k' => {
            let wal_end = Lsn(u64_of(&mut b, "keepalive")?);
            let _sent = u64_of(&mut b, "keepalive")?;
            let reply = u8_of(&mut b, "keepalive")? == 1;
            Ok(StreamFrame::Keepalive { wal_end, reply })
        }
        other => Err(DecodeError(format!(
            "unknown stream frame {:?}",
            char::from(other)
        ))),
    }
}

fn tuple_of(b: &mut Bytes) -> Result<Tuple, DecodeError> {
    let n = u16_of(b, "tuple")?;
    let mut values = Vec::with_capacity(n as usize);
    for _ in 0..n {
        values.push(match u8_of(b, "tuple column")? {
            b'n' => Value::Null,
            b'u' => Value::Unchanged,
            b't' | b'b' => {
                let len = u32_of(b, "tuple value")? as usize;
                if b.remaining() < len {
                    return Err(short("tuple value"));
                }
                Value::Text(b.split_to(len))
            }
            other => {
                return Err(DecodeError(format!(
                    "unknown tuple column kind {:?}",
                    char::from(other)
                )))
            }
        });
    }
    Ok(values)
}

/// One `pgoutput` message.
pub fn decode_message(mut b: Bytes) -> Result<Message, DecodeError> {
    let tag = u8_of(&mut b, "message")?;
    let m = match tag {
        b'B' => Message::Begin {
            final_lsn: Lsn(u64_of(&mut b, "Begin")?),
            commit_time: u64_of(&mut b, "Begin")? as i64,
            xid: u32_of(&mut b, "Begin")?,
        },
        b'C' => {
            let _flags = u8_of(&mut b, "Commit")?;
            Message::Commit {
                commit_lsn: Lsn(u64_of(&mut b, "Commit")?),
                end_lsn: Lsn(u64_of(&mut b, "Commit")?),
                commit_time: u64_of(&mut b, "Commit")? as i64,
            }
        }
        b'O' => {
            let _lsn = u64_of(&mut b, "Origin")?;
            Message::Origin {
                name: cstr_of(&mut b, "Origin")?,
            }
        }
        b'R' => {
            let id = u32_of(&mut b, "Relation")?;
            let schema = cstr_of(&mut b, "Relation schema")?;
            let name = cstr_of(&mut b, "Relation name")?;
            let replica_identity = u8_of(&mut b, "Relation")?;
            let n = u16_of(&mut b, "Relation")?;
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let flags = u8_of(&mut b, "Relation column")?;
                let name = cstr_of(&mut b, "Relation column")?;
                let type_oid = u32_of(&mut b, "Relation column")?;
                let typmod = u32_of(&mut b, "Relation column")? as i32;
                columns.push(RelColumn {
                    key: flags & 1 == 1,
                    name,
                    type_oid,
                    typmod,
                });
            }
            Message::Relation(Relation {
                id,
                schema,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            oid: u32_of(&mut b, "Type")?,
            schema: cstr_of(&mut b, "Type schema")?,
            name: cstr_of(&mut b, "Type name")?,
        },
        b'I' => {
            let rel = u32_of(&mut b, "Insert")?;
            match u8_of(&mut b, "Insert")? {
                b'N' => Message::Insert {
                    rel,
                    new: tuple_of(&mut b)?,
                },
                other => {
                    return Err(DecodeError(format!(
                        "Insert: unexpected {:?}",
                        char::from(other)
                    )))
                }
            }
        }
        b'U' => {
            let rel = u32_of(&mut b, "Update")?;
            let mut old = None;
            let mut kind = u8_of(&mut b, "Update")?;
            if kind == b'K' || kind == b'O' {
                old = Some(tuple_of(&mut b)?);
                kind = u8_of(&mut b, "Update")?;
            }
            if kind != b'N' {
                return Err(DecodeError(format!(
                    "Update: unexpected {:?}",
                    char::from(kind)
                )));
            }
            Message::Update {
                rel,
                old,
                new: tuple_of(&mut b)?,
            }
        }
        b'D' => {
            let rel = u32_of(&mut b, "Delete")?;
            match u8_of(&mut b, "Delete")? {
                b'K' | b'O' => Message::Delete {
                    rel,
                    old: tuple_of(&mut b)?,
                },
                other => {
                    return Err(DecodeError(format!(
                        "Delete: unexpected {:?}",
                        char::from(other)
                    )))
                }
            }
        }
        b'T' => {
            let n = u32_of(&mut b, "Truncate")?;
            let flags = u8_of(&mut b, "Truncate")?;
            if (n as usize).saturating_mul(4) > b.remaining() {
                return Err(short("Truncate"));
            }
            let rels = (0..n).map(|_| b.get_u32()).collect();
            Message::Truncate {
                rels,
                cascade: flags & 1 != 0,
                restart_identity: flags & 2 != 0,
            }
        }
        b'M' => {
            let flags = u8_of(&mut b, "Message")?;
            let _lsn = u64_of(&mut b, "Message")?;
            let prefix = cstr_of(&mut b, "Message prefix")?;
            let len = u32_of(&mut b, "Message")? as usize;
            if b.remaining() < len {
                return Err(short("Message content"));
            }
            Message::Message {
                transactional: flags & 1 == 1,
                prefix,
                content: b.split_to(len),
            }
        }
        other => {
            return Err(DecodeError(format!(
                "unknown message {:?}",
                char::from(other)
            )))
        }
    };
    Ok(m)
}

/// Microseconds since 2000-01-01, PostgreSQL's epoch.
pub fn pg_now() -> i64 {
    const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (unix.as_micros() as i64) - (PG_EPOCH_UNIX_SECS as i64) * 1_000_000
}

/// The Standby Status Update body: everything up to `flushed` is applied
/// and may be released by the server.
pub fn status_update(flushed: Lsn, reply: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(34);
    b.put_u8(b'r');
    b.put_u64(flushed.0);
    b.put_u64(flushed.0);
    b.put_u64(flushed.0);
    b.put_i64(pg_now());
    b.put_u8(u8::from(reply));
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(b: &mut BytesMut, values: &[Option<&str>]) {
        b.put_u16(values.len() as u16);
        for v in values {
            match v {
                None => b.put_u8(b'n'),
                Some("\u{0}unchanged") => b.put_u8(b'u'),
                Some(t) => {
                    b.put_u8(b't');
                    b.put_u32(t.len() as u32);
                    b.put_slice(t.as_bytes());
                }
            }
        }
    }

    #[test]
    fn lsns_read_and_print_as_postgres_writes_them() {
        assert_eq!(Lsn::parse("0/16B3748"), Some(Lsn(0x16B3748)));
        assert_eq!(Lsn::parse("1/0"), Some(Lsn(1 << 32)));
        assert_eq!(Lsn(0x1_0000_00A0).to_string(), "1/A0");
        for bad in ["", "0", "x/1", "1/", "100000000/0"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn changes_decode_with_their_values() {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(16384);
        b.put_slice(b"public\0t\0");
        b.put_u8(b'd');
        b.put_u16(2);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(23);
        b.put_i32(-1);
        b.put_u8(0);
        b.put_slice(b"doc\0");
        b.put_u32(114);
        b.put_i32(-1);
        let Message::Relation(r) = decode_message(b.freeze()).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!((r.schema.as_str(), r.name.as_str()), ("public", "t"));
        assert!(r.columns[0].key && !r.columns[1].key);

        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(16384);
        b.put_u8(b'K');
        tuple(&mut b, &[Some("1"), None]);
        b.put_u8(b'N');
        tuple(&mut b, &[Some("2"), Some("\u{0}unchanged")]);
        assert_eq!(
            decode_message(b.freeze()).unwrap(),
            Message::Update {
                rel: 16384,
                old: Some(vec![Value::Text(Bytes::from("1")), Value::Null]),
                new: vec![Value::Text(Bytes::from("2")), Value::Unchanged],
            }
        );

        let mut b = BytesMut::new();
        b.put_u8(b'M');
        b.put_u8(1);
        b.put_u64(77);
        b.put_slice(b"turnout\0");
        b.put_u32(3);
        b.put_slice(b"a:1");
        assert_eq!(
            decode_message(b.freeze()).unwrap(),
            Message::Message {
                transactional: true,
                prefix: "turnout".into(),
                content: Bytes::from("a:1"),
            }
        );
    }

    #[test]
    fn cut_or_unknown_bytes_are_errors_never_panics() {
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(1);
        b.put_u8(b'N');
        tuple(&mut b, &[Some("hello")]);
        let whole = b.freeze();
        for cut in 0..whole.len() {
            assert!(decode_message(whole.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert!(decode_message(whole).is_ok());
        for junk in [&b"Z"[..], b"T\xff\xff\xff\xff\0", b"U\0\0\0\x01X", b"k"] {
            assert!(decode_message(Bytes::copy_from_slice(junk)).is_err());
            let _ = decode_frame(Bytes::copy_from_slice(junk));
        }
    }
}
