//! PostgreSQL wire framing: startup packets, typed frames, and the few messages
//! turnout writes itself. Knows nothing of routing.

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;

/// PostgreSQL's own cap on a startup packet.
pub const MAX_STARTUP_PACKET: usize = 10_000;
/// Frames up to this size are inspected whole; larger ones stream through.
pub const STREAM_THRESHOLD: usize = 256 * 1024;

pub const PROTOCOL_3_0: u32 = 196_608;
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("invalid message length {len} for message type {tag}")]
    BadLength { tag: String, len: u32 },
    #[error("message of {len} bytes exceeds the limit of {max} bytes (limits.max_message_size)")]
    TooLarge { len: usize, max: usize },
    #[error("startup packet of {0} bytes is invalid")]
    BadStartupLength(u32),
    #[error("unsupported frontend protocol {major}.{minor}: turnout supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: {0}")]
    BadStartup(&'static str),
    #[error("unexpected message type {0} at this point of the protocol")]
    Unexpected(String),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// Printable name of a message tag for error messages.
pub fn tag_name(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Protocol {
        minor: u16,
        params: BTreeMap<String, String>,
        /// `_pq_.` options the client asked for; turnout supports none.
        unsupported: Vec<String>,
    },
}

/// Length of the startup packet whose first four bytes are `head`, checked.
pub fn startup_len(head: [u8; 4]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(head);
    if !(8..=MAX_STARTUP_PACKET as u32).contains(&len) {
        return Err(CodecError::BadStartupLength(len));
    }
    Ok(len as usize)
}

/// Parses a whole startup packet body (without its length word).
pub fn parse_startup(body: &[u8]) -> Result<Startup, CodecError> {
    if body.len() < 4 {
        return Err(CodecError::BadStartup("too short"));
    }
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(Startup::Ssl),
        GSSENC_REQUEST if rest.is_empty() => Ok(Startup::GssEnc),
        CANCEL_REQUEST if rest.len() == 8 => Ok(Startup::Cancel {
            pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            secret: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            Err(CodecError::BadStartup("request code with a wrong length"))
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(CodecError::UnsupportedProtocol { major, minor });
            }
            let mut params = BTreeMap::new();
            let mut unsupported = Vec::new();
            let mut fields = rest.split(|&b| b == 0);
            loop {
                let key = fields
                    .next()
                    .ok_or(CodecError::BadStartup("missing terminator"))?;
                if key.is_empty() {
                    break;
                }
                let value = fields
                    .next()
                    .ok_or(CodecError::BadStartup("parameter without a value"))?;
                let key = std::str::from_utf8(key)
                    .map_err(|_| CodecError::BadStartup("parameter name is not UTF-8"))?;
                let value = std::str::from_utf8(value)
                    .map_err(|_| CodecError::BadStartup("parameter value is not UTF-8"))?;
                if key.starts_with("_pq_.") {
                    unsupported.push(key.to_string());
                } else {
                    params.insert(key.to_string(), value.to_string());
                }
            }
            // After the terminating empty name only the final empty slice may remain.
            if fields.any(|f| !f.is_empty()) || rest.last() != Some(&0) {
                return Err(CodecError::BadStartup("data after the terminator"));
            }
            if !params.contains_key("user") {
                return Err(CodecError::BadStartup("no user name given"));
            }
            Ok(Startup::Protocol {
                minor,
                params,
                unsupported,
            })
        }
    }
}

/// Builds a startup message for a backend.
pub fn startup_message(params: &[(&str, &str)]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(0);
    b.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(&mut b, k);
        put_cstr(&mut b, v);
    }
    b.put_u8(0);
    let len = b.len() as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

pub fn put_cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

/// A simple-protocol Query message of `sql`.
pub fn query(sql: &str) -> Bytes {
    let mut body = BytesMut::with_capacity(sql.len() + 1);
    put_cstr(&mut body, sql);
    frame(b'Q', &body)
}

/// Writes a typed frame: tag, length, body.
pub fn frame(tag: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + body.len());
    put_frame(&mut b, tag, body);
    b.freeze()
}

pub fn put_frame(b: &mut BytesMut, tag: u8, body: &[u8]) {
    b.put_u8(tag);
    b.put_u32(body.len() as u32 + 4);
    b.put_slice(body);
}

/// Severity of an error turnout reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

/// An ErrorResponse of turnout's own.
pub fn error_response(severity: Severity, code: &str, message: &str) -> Bytes {
    let sev = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    let mut body = BytesMut::new();
    for (field, value) in [(b'S', sev), (b'V', sev), (b'C', code), (b'M', message)] {
        body.put_u8(field);
        put_cstr(&mut body, value);
    }
    body.put_u8(0);
    frame(b'E', &body)
}

pub fn auth_request(code: i32, extra: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(4 + extra.len());
    body.put_i32(code);
    body.put_slice(extra);
    frame(b'R', &body)
}

pub fn parameter_status(name: &str, value: &str) -> Bytes {
    let mut body = BytesMut::new();
    put_cstr(&mut body, name);
    put_cstr(&mut body, value);
    frame(b'S', &body)
}

pub fn backend_key_data(pid: i32, secret: i32) -> Bytes {
    let mut body = BytesMut::with_capacity(8);
    body.put_i32(pid);
    body.put_i32(secret);
    frame(b'K', &body)
}

pub fn ready_for_query(status: u8) -> Bytes {
    frame(b'Z', &[status])
}

pub fn negotiate_protocol_version(minor: u16, unsupported: &[String]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_i32(minor as i32);
    body.put_i32(unsupported.len() as i32);
    for o in unsupported {
        put_cstr(&mut body, o);
    }
    frame(b'v', &body)
}

pub fn cancel_request(pid: i32, secret: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_u32(16);
    b.put_u32(CANCEL_REQUEST);
    b.put_i32(pid);
    b.put_i32(secret);
    b.freeze()
}

pub fn ssl_request() -> Bytes {
    let mut b = BytesMut::with_capacity(8);
    b.put_u32(8);
    b.put_u32(SSL_REQUEST);
    b.freeze()
}

/// Fields of an ErrorResponse or NoticeResponse body, by field code.
/// The column values of a DataRow body (`None` for NULL). A malformed row
/// gives the values read before the fault.
pub fn data_row_values(body: &[u8]) -> Vec<Option<&[u8]>> {
    let mut out = Vec::new();
    let Some(count) = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return out;
    };
    let mut rest = &body[2..];
    for _ in 0..count {
        let Some(len) = rest
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            break;
        };
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
            continue;
        }
        let Some(value) = rest.get(..len as usize) else {
            break;
        };
        out.push(Some(value));
        rest = &rest[len as usize..];
    }
    out
}

/// An ErrorResponse in one line: `message (SQLSTATE)[: detail]`.
pub fn error_text(body: &[u8]) -> String {
    let fields = error_fields(body);
    let code = fields.get(&b'C').cloned().unwrap_or_default();
    let msg = fields.get(&b'M').cloned().unwrap_or_default();
    match fields.get(&b'D') {
        Some(detail) => format!("{msg} ({code}): {detail}"),
        None => format!("{msg} ({code})"),
    }
}

/// Whether an ErrorResponse tells of the server's own failure rather than
/// of the client's statement or settings: connection exceptions (08),
/// shutdown and crash (57P01 to 57P03), disk, memory and connection slots
/// (53100, 53200, 53300), system (58) and internal (XX) errors. A division
/// by zero, a lock or statement timeout (55P03, 57014) or a cancel the
/// client asked for are the client's, and are not counted against a side.
pub fn is_server_failure(body: &[u8]) -> bool {
    let code = error_fields(body).remove(&b'C').unwrap_or_default();
    is_server_failure_code(&code)
}

/// [`is_server_failure`] by SQLSTATE.
pub fn is_server_failure_code(code: &str) -> bool {
    ["08", "58", "XX"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53100" | "53200" | "53300"
        )
}

/// The rows a CommandComplete reports written: `INSERT 0 n`, `UPDATE n`,
/// `DELETE n`, `MERGE n`, and `COPY n` when rows were copied in (a COPY TO
/// reports its rows the same way). 0 for anything else.
pub fn written_rows(body: &[u8], copied_in: bool) -> u64 {
    let tag = body.split(|&b| b == 0).next().unwrap_or_default();
    let tag = std::str::from_utf8(tag).unwrap_or_default();
    let mut words = tag.split(' ');
    let verb = words.next().unwrap_or_default();
    let count = match verb {
        "INSERT" => words.nth(1),
        "UPDATE" | "DELETE" | "MERGE" => words.next(),
        "COPY" if copied_in => words.next(),
        _ => None,
    };
    count.and_then(|n| n.parse().ok()).unwrap_or(0)
}

pub fn error_fields(body: &[u8]) -> BTreeMap<u8, String> {
    let mut out = BTreeMap::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.insert(code, String::from_utf8_lossy(&tail[..end]).into_owned());
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out
}

/// A frame seen by [`FrameScanner`]: its tag, and its body when it is small
/// enough to be held whole.
pub struct Seen<'a> {
    pub tag: u8,
    pub len: usize,
    pub body: Option<&'a [u8]>,
}

/// Finds frame boundaries in a byte stream without copying. Small frames are
/// handed to the caller whole; a frame larger than [`STREAM_THRESHOLD`] is
/// announced by its header and then passed through as it arrives, so memory
/// stays bounded whatever the peer sends.
#[derive(Debug, Default)]
pub struct FrameScanner {
    /// Bytes of a large frame still to pass through.
    remaining: usize,
}

impl FrameScanner {
    /// Scans `buf` and returns how many leading bytes may be forwarded now
    /// (whole small frames, and any part of a large frame). `max` caps a
    /// frame's length; `on_frame` sees each frame once and may refuse it.
    pub fn scan<E>(
        &mut self,
        buf: &[u8],
        max: usize,
        mut on_frame: impl FnMut(Seen<'_>) -> Result<(), E>,
    ) -> Result<usize, E>
    where
        E: From<CodecError>,
    {
        let mut pos = 0;
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - pos);
                pos += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(pos);
                }
            }
            if buf.len() - pos < 5 {
                return Ok(pos);
            }
            let tag = buf[pos];
            let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]]);
            if len < 4 {
                return Err(CodecError::BadLength {
                    tag: tag_name(tag),
                    len,
                }
                .into());
            }
            let total = 1 + len as usize;
            if total > max {
                return Err(CodecError::TooLarge { len: total, max }.into());
            }
            if total <= STREAM_THRESHOLD {
                if buf.len() - pos < total {
                    return Ok(pos);
                }
                on_frame(Seen {
                    tag,
                    len: total,
                    body: Some(&buf[pos + 5..pos + total]),
                })?;
                pos += total;
            } else {
                on_frame(Seen {
                    tag,
                    len: total,
                    body: None,
                })?;
                self.remaining = total;
            }
        }
    }

    /// True between frames (nothing of a large frame is pending).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }
}

#[cfg(test)]
mod tests;
