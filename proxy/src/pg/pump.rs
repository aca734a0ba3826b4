//! The full-duplex forwarder between a client and its backend connection.
//!
//! One task drives both directions with bounded buffers, so neither peer can
//! make turnout buffer without limit and neither direction can stall the other.
//! Frames are located by their headers and forwarded as the bytes that arrived.

use super::codec::{self, tag_name, CodecError, FrameScanner, Severity};
use crate::stream::Stream;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::io::poll_read_buf;

/// Bytes queued toward a peer before turnout stops reading from the other one.
const HIGH_WATER: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

/// How a forwarding session ended.
#[derive(Debug)]
pub enum PumpEnd {
    /// The client sent Terminate; it was passed on.
    Terminated,
    /// The client closed its connection without Terminate.
    ClientClosed,
    /// The backend closed its connection.
    BackendClosed,
    /// The client broke the protocol; it was told why.
    ClientProtocol(CodecError),
    /// The backend sent something unparseable.
    BackendProtocol(CodecError),
    ClientIo(io::Error),
    BackendIo(io::Error),
}

/// Frontend message types valid after startup.
fn frontend_tag_allowed(tag: u8) -> bool {
    matches!(
        tag,
        b'B' | b'C' | b'd' | b'c' | b'f' | b'D' | b'E' | b'H' | b'F' | b'P' | b'Q' | b'S' | b'X'
    )
}

struct Outbox {
    queue: VecDeque<Bytes>,
    queued: usize,
    needs_flush: bool,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            queue: VecDeque::new(),
            queued: 0,
            needs_flush: false,
        }
    }

    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.queued += b.len();
            self.queue.push_back(b);
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && !self.needs_flush
    }

    /// Writes what it can without waiting; `Ok(true)` when bytes were written.
    /// Whatever is left has registered the waker.
    fn poll_drain(&mut self, cx: &mut Context<'_>, io: &mut Stream) -> io::Result<bool> {
        let mut progressed = false;
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); 16];
            let n_slices = self.queue.len().min(slices.len());
            for (slot, chunk) in slices.iter_mut().zip(self.queue.iter()) {
                *slot = IoSlice::new(chunk);
            }
            let written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n_slices]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            };
            progressed = true;
            self.needs_flush = true;
            self.queued -= written;
            let mut left = written;
            while left > 0 {
                let front = &mut self.queue[0];
                if front.len() <= left {
                    left -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        if self.queue.is_empty() && self.needs_flush {
            match Pin::new(&mut *io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(progressed)
    }
}

/// Writes everything in `outbox`; gives up silently on a write error (the
/// peer is gone, and the caller is ending the session anyway).
async fn drain(outbox: &mut Outbox, io: &mut Stream) {
    poll_fn(|cx| loop {
        match outbox.poll_drain(cx, io) {
            Ok(_) if outbox.is_empty() => return Poll::Ready(()),
            Ok(true) => continue,
            Ok(false) => return Poll::Pending,
            Err(_) => return Poll::Ready(()),
        }
    })
    .await
}

/// A client and a backend joined frame by frame.
pub struct Pump {
    pub client: Stream,
    pub backend: Stream,
    client_in: BytesMut,
    backend_in: BytesMut,
    to_backend: Outbox,
    to_client: Outbox,
    client_scan: FrameScanner,
    backend_scan: FrameScanner,
    max_message: usize,
    /// Transaction status of the last ReadyForQuery: b'I', b'T' or b'E'.
    pub tx_status: u8,
    /// Requests (Query, Sync) sent and not yet answered by ReadyForQuery.
    in_flight: u64,
    /// The client sent messages since its last Query or Sync (an extended
    /// batch being built, COPY data).
    client_open: bool,
}

enum Step {
    Progress,
    /// Nothing to do now (nothing queued, or the other side's queue full).
    Idle,
    /// The socket is not ready; the task is woken when it is.
    Pending,
    End(PumpEnd),
}

impl Pump {
    pub fn new(
        client: Stream,
        backend: Stream,
        backend_leftover: BytesMut,
        max_message: usize,
    ) -> Self {
        Pump {
            client,
            backend,
            client_in: BytesMut::with_capacity(READ_CHUNK),
            backend_in: backend_leftover,
            to_backend: Outbox::new(),
            to_client: Outbox::new(),
            client_scan: FrameScanner::default(),
            backend_scan: FrameScanner::default(),
            max_message,
            tx_status: b'I',
            in_flight: 0,
            client_open: false,
        }
    }

    /// Nothing in flight either way and no transaction open: the session
    /// can end here without losing or half-doing anything of the client's.
    pub fn idle(&self) -> bool {
        self.tx_status == b'I'
            && self.in_flight == 0
            && !self.client_open
            && self.client_in.is_empty()
            && self.to_backend.is_empty()
            && self.to_client.is_empty()
            && self.client_at_boundary()
    }

    /// Forwards until one side ends, then returns how it ended. Whatever was
    /// already queued toward the client (including turnout's own error) is
    /// written before returning when the client is still there.
    pub async fn run(&mut self) -> PumpEnd {
        let end = poll_fn(|cx| self.poll_pump(cx)).await;
        let flush_client = !matches!(end, PumpEnd::ClientClosed | PumpEnd::ClientIo(_));
        if flush_client {
            drain(&mut self.to_client, &mut self.client).await;
        }
        if matches!(end, PumpEnd::Terminated) {
            drain(&mut self.to_backend, &mut self.backend).await;
        }
        end
    }

    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<PumpEnd> {
        // Each read is followed at once by the write it feeds. A read that
        // found nothing has registered the task's waker: it is not asked
        // again until the next wake-up (asking costs as much as a read).
        let steps: [fn(&mut Self, &mut Context<'_>) -> Step; 4] = [
            Self::step_read_client,
            Self::step_write_backend,
            Self::step_read_backend,
            Self::step_write_client,
        ];
        let mut waiting = [false; 4];
        loop {
            let mut progressed = false;
            for (i, step) in steps.iter().enumerate() {
                if waiting[i] {
                    continue;
                }
                match step(self, cx) {
                    Step::Progress => progressed = true,
                    Step::Idle => {}
                    Step::Pending => waiting[i] = true,
                    Step::End(end) => return Poll::Ready(end),
                }
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    fn step_write_backend(&mut self, cx: &mut Context<'_>) -> Step {
        match self.to_backend.poll_drain(cx, &mut self.backend) {
            Ok(true) => Step::Progress,
            Ok(false) => Step::Idle,
            Err(e) => Step::End(PumpEnd::BackendIo(e)),
        }
    }

    fn step_write_client(&mut self, cx: &mut Context<'_>) -> Step {
        match self.to_client.poll_drain(cx, &mut self.client) {
            Ok(true) => Step::Progress,
            Ok(false) => Step::Idle,
            Err(e) => Step::End(PumpEnd::ClientIo(e)),
        }
    }

    fn step_read_client(&mut self, cx: &mut Context<'_>) -> Step {
        if self.to_backend.queued >= HIGH_WATER {
            return Step::Idle;
        }
        self.client_in.reserve(READ_CHUNK);
        match poll_read_buf(Pin::new(&mut self.client), cx, &mut self.client_in) {
            Poll::Pending => Step::Pending,
            Poll::Ready(Err(e)) => Step::End(PumpEnd::ClientIo(e)),
            Poll::Ready(Ok(0)) => Step::End(PumpEnd::ClientClosed),
            Poll::Ready(Ok(_)) => {
                let mut terminated = false;
                let (in_flight, client_open) = (&mut self.in_flight, &mut self.client_open);
                let scanned = self
                    .client_scan
                    .scan(&self.client_in, self.max_message, |f| {
                        if terminated || !frontend_tag_allowed(f.tag) {
                            return Err(CodecError::Unexpected(tag_name(f.tag)));
                        }
                        terminated = f.tag == b'X';
                        if matches!(f.tag, b'Q' | b'S') {
                            *in_flight += 1;
                            *client_open = false;
                        } else {
                            *client_open = true;
                        }
                        Ok(())
                    });
                match scanned {
                    Ok(n) => {
                        let chunk = self.client_in.split_to(n).freeze();
                        self.to_backend.push(chunk);
                        if terminated {
                            Step::End(PumpEnd::Terminated)
                        } else {
                            Step::Progress
                        }
                    }
                    Err(e) => {
                        if self.backend_scan.at_boundary() {
                            self.to_client.push(codec::error_response(
                                Severity::Fatal,
                                "08P01",
                                &format!("turnout: protocol violation: {e}"),
                            ));
                        }
                        Step::End(PumpEnd::ClientProtocol(e))
                    }
                }
            }
        }
    }

    fn step_read_backend(&mut self, cx: &mut Context<'_>) -> Step {
        if self.to_client.queued >= HIGH_WATER {
            return Step::Idle;
        }
        self.backend_in.reserve(READ_CHUNK);
        match poll_read_buf(Pin::new(&mut self.backend), cx, &mut self.backend_in) {
            Poll::Pending => Step::Pending,
            Poll::Ready(Err(e)) => Step::End(PumpEnd::BackendIo(e)),
            Poll::Ready(Ok(0)) => Step::End(PumpEnd::BackendClosed),
            Poll::Ready(Ok(_)) => {
                let tx_status = &mut self.tx_status;
                let in_flight = &mut self.in_flight;
                let scanned = self.backend_scan.scan(&self.backend_in, usize::MAX, |f| {
                    if f.tag == b'Z' {
                        if let Some(&[status]) = f.body {
                            *tx_status = status;
                        }
                        *in_flight = in_flight.saturating_sub(1);
                    }
                    Ok::<(), CodecError>(())
                });
                match scanned {
                    Ok(n) => {
                        let chunk = self.backend_in.split_to(n).freeze();
                        self.to_client.push(chunk);
                        Step::Progress
                    }
                    Err(e) => Step::End(PumpEnd::BackendProtocol(e)),
                }
            }
        }
    }

    /// True when everything received from the backend has been passed on whole,
    /// so turnout may append a message of its own to the client's stream.
    pub fn client_at_boundary(&self) -> bool {
        self.backend_scan.at_boundary() && self.backend_in.is_empty()
    }

    /// Queues a message of turnout's own to the client (see `run`'s flush).
    pub fn push_to_client(&mut self, msg: Bytes) {
        self.to_client.push(msg);
    }

    /// Writes everything queued to the client.
    pub async fn flush_client(&mut self) {
        drain(&mut self.to_client, &mut self.client).await;
    }
}
