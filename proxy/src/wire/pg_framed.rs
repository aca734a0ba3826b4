//! Whole-frame I/O on a connection, for the session engine (which decides per
//! message). The passthrough pump does not use it.

use super::pg::{tag_name, CodecError};
use crate::stream::Stream;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One protocol message: its tag and its whole bytes (header included).
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    pub raw: Bytes,
}

impl Frame {
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

pub struct Framed {
    pub stream: Stream,
    buf: BytesMut,
    max: usize,
    /// A server's word (ParameterStatus) on how it reads SQL text.
    lexing: Lexing,
}

/// What a server reports (ParameterStatus, at startup and whenever a
/// setting changes, however it was changed: `SET`, `set_config(...)` built
/// from pieces, `ALTER ROLE ... SET`, a function's `SET` clause) that
/// changes how it ends strings in SQL text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lexing {
    /// `standard_conforming_strings` is off: a backslash escapes in `'...'`.
    pub backslash_strings: bool,
    /// `client_encoding` is one whose multibyte characters may end in a
    /// byte that reads as `\` (SJIS, BIG5, GBK, GB18030, UHC, JOHAB).
    pub ambiguous_encoding: bool,
}

impl Lexing {
    /// Whether a text with a backslash may end strings where turnout's
    /// parser does not.
    pub fn unsure(self) -> bool {
        self.backslash_strings || self.ambiguous_encoding
    }

    /// The statement that gives another server this one's way of ending
    /// strings (`standard_conforming_strings`).
    pub fn setting(self) -> &'static str {
        if self.backslash_strings {
            "SET standard_conforming_strings = off"
        } else {
            "SET standard_conforming_strings = on"
        }
    }

    /// Notes one reported setting.
    pub fn note(&mut self, name: &str, value: &str) {
        if name.eq_ignore_ascii_case("standard_conforming_strings") {
            self.backslash_strings = !value.eq_ignore_ascii_case("on");
        } else if name.eq_ignore_ascii_case("client_encoding") {
            let v = value.to_ascii_uppercase().replace(['_', '-'], "");
            self.ambiguous_encoding = matches!(
                v.as_str(),
                "SJIS"
                    | "SHIFTJIS"
                    | "SHIFTJIS2004"
                    | "BIG5"
                    | "GBK"
                    | "GB18030"
                    | "UHC"
                    | "JOHAB"
                    | "WIN932"
                    | "WIN936"
                    | "WIN949"
                    | "WIN950"
            );
        }
    }

    /// Notes a ParameterStatus message's body (`name\0value\0`).
    fn note_frame(&mut self, body: &[u8]) {
        let mut parts = body.split(|&b| b == 0);
        if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            self.note(
                &String::from_utf8_lossy(name),
                &String::from_utf8_lossy(value),
            );
        }
    }
}

impl Framed {
    pub fn new(stream: Stream, leftover: BytesMut, max: usize) -> Self {
        Framed {
            stream,
            buf: leftover,
            max,
            lexing: Lexing::default(),
        }
    }

    /// A server connection: what it reported at startup, followed from
    /// then on with every ParameterStatus it sends.
    pub fn with_reported(mut self, params: &[(String, String)]) -> Self {
        for (name, value) in params {
            self.lexing.note(name, value);
        }
        self
    }

    /// The server's last word on how it reads SQL text.
    pub fn lexing(&self) -> Lexing {
        self.lexing
    }

    /// Reads the next whole frame.
    pub async fn read(&mut self) -> Result<Frame, FramedError> {
        loop {
            if let Some(f) = self.buffered()? {
                return Ok(f);
            }
            if self.buf.len() < 5 {
                self.buf.reserve(16 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(FramedError::Closed);
            }
        }
    }

    /// The next frame when it is already whole in the buffer (no I/O): what
    /// the server sent in the same write as the frame before.
    pub fn buffered(&mut self) -> Result<Option<Frame>, FramedError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Err(CodecError::BadLength {
                tag: tag_name(self.buf[0]),
                len,
            }
            .into());
        }
        let total = len as usize + 1;
        if total > self.max {
            return Err(CodecError::TooLarge {
                len: total,
                max: self.max,
            }
            .into());
        }
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let raw = self.buf.split_to(total).freeze();
        if raw[0] == b'S' && raw.len() > 5 {
            self.lexing.note_frame(&raw[5..]);
        }
        Ok(Some(Frame { tag: raw[0], raw }))
    }

    /// True when bytes of a next message are already buffered.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), FramedError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }
}
