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
}

impl Framed {
    pub fn new(stream: Stream, leftover: BytesMut, max: usize) -> Self {
        Framed {
            stream,
            buf: leftover,
            max,
        }
    }

    /// Reads the next whole frame.
    pub async fn read(&mut self) -> Result<Frame, FramedError> {
        loop {
            if self.buf.len() >= 5 {
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
                if self.buf.len() >= total {
                    let raw = self.buf.split_to(total).freeze();
                    return Ok(Frame { tag: raw[0], raw });
                }
                self.buf.reserve(total - self.buf.len());
            } else {
                self.buf.reserve(16 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(FramedError::Closed);
            }
        }
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
