//! MySQL packets: a 3-byte little-endian payload length, a sequence
//! number, the payload. A payload of 0xFFFFFF bytes or more is split, and a
//! packet of exactly 0xFFFFFF bytes says more follows.

use crate::stream::Stream;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest payload one packet carries.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("connection closed")]
    Closed,
    #[error("packet of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize, seq: u8 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Packet framing over a stream, used while turnout itself talks MySQL
/// (the handshake); afterwards the stream and the bytes read past the last
/// packet go to the forwarding loop.
pub struct Packets {
    pub stream: Stream,
    pub buf: BytesMut,
    max: usize,
}

impl Packets {
    pub fn new(stream: Stream, max: usize) -> Self {
        Packets {
            stream,
            buf: BytesMut::with_capacity(1024),
            max,
        }
    }

    /// Lets packets up to `max` bytes in (the binary log's events).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// One logical packet (continuations joined): its last sequence number
    /// and its payload.
    pub async fn read(&mut self) -> Result<(u8, Vec<u8>), PacketError> {
        let mut payload = Vec::new();
        loop {
            while self.buf.len() < 4 {
                self.fill().await?;
            }
            let len = usize::from(self.buf[0])
                | usize::from(self.buf[1]) << 8
                | usize::from(self.buf[2]) << 16;
            let seq = self.buf[3];
            if payload.len() + len > self.max {
                return Err(PacketError::TooLarge {
                    len: payload.len() + len,
                    max: self.max,
                    seq,
                });
            }
            while self.buf.len() < 4 + len {
                self.fill().await?;
            }
            self.buf.advance(4);
            payload.extend_from_slice(&self.buf[..len]);
            self.buf.advance(len);
            if len < MAX_PAYLOAD {
                return Ok((seq, payload));
            }
        }
    }

    /// One packet, reading no byte past it: what may follow an SSLRequest
    /// is the client's TLS handshake, which belongs to the TLS layer.
    pub async fn read_unbuffered(&mut self) -> Result<(u8, Vec<u8>), PacketError> {
        if !self.buf.is_empty() {
            return self.read().await;
        }
        let mut head = [0u8; 4];
        self.stream.read_exact(&mut head).await.map_err(eof)?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        if len > self.max || len >= MAX_PAYLOAD {
            return Err(PacketError::TooLarge {
                len,
                max: self.max,
                seq: head[3],
            });
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.map_err(eof)?;
        Ok((head[3], payload))
    }

    async fn fill(&mut self) -> Result<(), PacketError> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(PacketError::Closed);
        }
        Ok(())
    }

    /// Writes `payload` as packets starting at sequence `seq`; returns the
    /// next sequence number.
    pub async fn write(&mut self, seq: u8, payload: &[u8]) -> Result<u8, PacketError> {
        let out = encode(seq, payload);
        self.stream.write_all(&out.0).await?;
        self.stream.flush().await?;
        Ok(out.1)
    }
}

fn eof(e: std::io::Error) -> PacketError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        PacketError::Closed
    } else {
        PacketError::Io(e)
    }
}

/// The command bytes turnout reads or sends (the first byte of a command
/// packet).
pub mod command {
    pub const COM_QUIT: u8 = 0x01;
    pub const COM_INIT_DB: u8 = 0x02;
    pub const COM_QUERY: u8 = 0x03;
    pub const COM_PING: u8 = 0x0E;
    pub const COM_CHANGE_USER: u8 = 0x11;
    pub const COM_STMT_PREPARE: u8 = 0x16;
    pub const COM_STMT_EXECUTE: u8 = 0x17;
    pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const COM_STMT_CLOSE: u8 = 0x19;
    pub const COM_STMT_RESET: u8 = 0x1A;
    pub const COM_RESET_CONNECTION: u8 = 0x1F;
}

/// `payload` as packets from sequence `seq`, and the sequence after them.
pub fn encode(mut seq: u8, payload: &[u8]) -> (Vec<u8>, u8) {
    let mut out = Vec::with_capacity(payload.len() + 8);
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq]);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return (out, seq);
        }
    }
}

/// An ERR packet's payload (protocol 4.1).
pub fn err_payload(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut state = state.as_bytes().to_vec();
    state.resize(5, b'0');
    p.extend_from_slice(&state);
    p.extend_from_slice(message.as_bytes());
    p
}

/// An OK packet's payload: nothing affected, autocommit on.
pub fn ok_payload() -> Vec<u8> {
    vec![0x00, 0, 0, 0x02, 0x00, 0, 0]
}

/// The message of an ERR packet's payload: `message (code, state)`.
/// Whether a server error code tells of the server's own failure (shutdown,
/// killed connections, out of memory or disk, too many connections, a
/// storage engine error), not of the client's statement or settings (a
/// syntax error, a lock wait or statement timeout, a query the client
/// killed).
pub fn is_server_failure_code(code: u16) -> bool {
    matches!(
        code,
        1021 // ER_DISK_FULL
            | 1030 // ER_GET_ERRNO (storage engine)
            | 1037 // ER_OUTOFMEMORY
            | 1040 // ER_CON_COUNT_ERROR
            | 1041 // ER_OUT_OF_RESOURCES
            | 1053 // ER_SERVER_SHUTDOWN
            | 1077
            ..=1080 // shutdown, signal, forced close
            | 1152 // ER_ABORTING_CONNECTION
            | 1184 // ER_NEW_ABORTING_CONNECTION
            | 1927 // ER_CONNECTION_KILLED
    )
}

/// Whether a server error code says an object or a privilege is missing
/// (a table, column, database, routine; access denied): a read target that
/// lacks what the authority has fails this way.
pub fn is_missing_object_code(code: u16) -> bool {
    matches!(code, 1044 | 1049 | 1054 | 1142 | 1143 | 1146 | 1305)
}

/// After an ERR that ends the connection while the client may still be
/// sending (a command over the size limit): reads and drops what comes, up
/// to `limit` bytes or 2 s, so that closing does not reset the connection
/// before the client has read the ERR.
pub async fn drain<R: tokio::io::AsyncRead + Unpin>(r: &mut R, limit: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0usize;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while seen < limit {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    })
    .await;
}

/// The ERR payload for a command over `limits.max_message_size`, as a
/// MySQL server answers one over `max_allowed_packet` (then closes).
pub fn too_large_payload(max: usize) -> Vec<u8> {
    err_payload(
        1153,
        "08S01",
        &format!(
            "Got a packet bigger than 'max_allowed_packet' bytes (turnout: limits.max_message_size = {max})"
        ),
    )
}

pub fn err_text(payload: &[u8]) -> String {
    if payload.len() < 3 || payload[0] != 0xFF {
        return "malformed error packet".into();
    }
    let code = u16::from_le_bytes([payload[1], payload[2]]);
    let rest = &payload[3..];
    let (state, message) = match rest.split_first() {
        Some((b'#', tail)) if tail.len() >= 5 => {
            (String::from_utf8_lossy(&tail[..5]).into_owned(), &tail[5..])
        }
        _ => (String::new(), rest),
    };
    format!("{} ({code}, {state})", String::from_utf8_lossy(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn big_payloads_split_and_errors_read_back() {
        let (out, next) = encode(3, &vec![7u8; MAX_PAYLOAD + 10]);
        assert_eq!(next, 5);
        assert_eq!(out.len(), MAX_PAYLOAD + 10 + 8);
        assert_eq!(&out[..4], &[0xFF, 0xFF, 0xFF, 3]);
        let (exact, next) = encode(0, &vec![1u8; MAX_PAYLOAD]);
        assert_eq!(next, 2, "an exact multiple ends with an empty packet");
        assert_eq!(&exact[exact.len() - 4..], &[0, 0, 0, 1]);
        let e = err_payload(1045, "28000", "Access denied");
        assert_eq!(err_text(&e), "Access denied (1045, 28000)");
    }

    proptest! {
        #[test]
        fn err_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = err_text(&bytes);
        }
    }
}
