//! `mirror.mode = "async"`: the mirror's copy of each statement goes into a
//! bounded, ordered per-session queue that a task of its own applies on the
//! mirror. The client waits for the authority alone. A statement the queue
//! cannot take, or that fails on the mirror, is written to the divergence
//! log: nothing is dropped silently.

use super::{collect, query, BackendKey, Collected, MirrorSession};
use crate::engine::Classification;
use crate::pg::framed::{Framed, FramedError};
use crate::pg::{backend, codec};
use crate::server::Shared;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::Side;

/// One piece of mirror work, in session order.
pub(super) struct Job {
    msgs: Bytes,
    /// ReadyForQuery answers to read after sending (0: more of the same
    /// exchange follows, e.g. COPY data).
    readies: usize,
    class: Arc<Classification>,
    /// Starts a new transaction on the mirror: a lost connection may be
    /// replaced (with the session's settings replayed) first.
    fresh: bool,
    /// Session settings so far, for a replacement connection.
    replay: Arc<Vec<String>>,
    /// The caller waits for the mirror's answer (a statement a rule sends to
    /// the mirror alone).
    reply: Option<oneshot::Sender<Result<Collected, String>>>,
}

/// The session's end of the queue.
pub(super) struct AsyncMirror {
    tx: mpsc::Sender<Job>,
    /// A statement of the current transaction overflowed: the rest of the
    /// transaction is not sent, and the mirror's part of it is rolled back.
    void: bool,
}

impl AsyncMirror {
    /// Starts the task that applies the queue on `conn` (when connected).
    pub(super) fn start(
        shared: Arc<Shared>,
        side: Side,
        params: Vec<(String, String)>,
        conn: Option<Framed>,
        bound: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(bound.max(1));
        tokio::spawn(apply(shared, side, params, conn, rx));
        AsyncMirror { tx, void: false }
    }
}

impl MirrorSession<'_> {
    /// Queues `msgs` for the mirror. Never waits, except to queue the
    /// rollback that closes a transaction an earlier overflow voided.
    pub(super) async fn enqueue(&mut self, msgs: &[u8], readies: usize, fresh: bool) {
        let class = self.unit_class.clone();
        let side = self.mirror_side;
        let replay = self.replay.clone();
        let Some(q) = self.async_mirror.as_mut() else {
            return;
        };
        if q.void {
            if !fresh {
                self.shared.record_divergence(Divergence::new(
                    DivergenceKind::AsyncOverflow,
                    side,
                    &class.fingerprint,
                    "not applied: an earlier statement of this transaction overflowed mirror.async_queue",
                ));
                return;
            }
            // Whatever the mirror has of the voided transaction goes.
            let rollback = Job {
                msgs: query("ROLLBACK"),
                readies: 1,
                class: class.clone(),
                fresh: false,
                replay: replay.clone(),
                reply: None,
            };
            if q.tx.send(rollback).await.is_err() {
                return;
            }
            self.shared.async_pending.fetch_add(1, Ordering::Relaxed);
            q.void = false;
        }
        let job = Job {
            msgs: Bytes::copy_from_slice(msgs),
            readies,
            class: class.clone(),
            fresh,
            replay,
            reply: None,
        };
        if q.tx.try_send(job).is_ok() {
            self.shared.async_pending.fetch_add(1, Ordering::Relaxed);
            let depth = q.tx.max_capacity() - q.tx.capacity();
            self.shared
                .async_deepest
                .fetch_max(depth, Ordering::Relaxed);
        } else {
            self.shared.metrics_mirror_error();
            let in_transaction = !fresh || self.status != b'I';
            q.void = in_transaction;
            let detail = if in_transaction {
                "mirror.async_queue is full: not applied on the mirror; the rest of its transaction is not applied there either"
            } else {
                "mirror.async_queue is full: not applied on the mirror"
            };
            self.shared.record_divergence(Divergence::new(
                DivergenceKind::AsyncOverflow,
                side,
                &class.fingerprint,
                detail,
            ));
        }
    }

    /// Queues more of a statement already queued (COPY data): it waits for
    /// room rather than cutting an admitted statement short.
    pub(super) async fn enqueue_more(&mut self, msgs: Bytes) {
        let job = Job {
            msgs,
            readies: 0,
            class: self.unit_class.clone(),
            fresh: false,
            replay: self.replay.clone(),
            reply: None,
        };
        if let Some(q) = self.async_mirror.as_mut() {
            if !q.void && q.tx.send(job).await.is_ok() {
                self.shared.async_pending.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs `msgs` on the mirror behind everything queued and waits for its
    /// answer (one ReadyForQuery).
    pub(super) async fn ask_queued(
        &mut self,
        msgs: &[u8],
        fresh: bool,
    ) -> Result<Collected, String> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            msgs: Bytes::copy_from_slice(msgs),
            readies: 1,
            class: self.unit_class.clone(),
            fresh,
            replay: self.replay.clone(),
            reply: Some(reply),
        };
        let Some(q) = self.async_mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        q.tx.send(job)
            .await
            .map_err(|_| format!("the queue toward {} is closed", self.mirror_side))?;
        self.shared.async_pending.fetch_add(1, Ordering::Relaxed);
        answer
            .await
            .map_err(|_| format!("the queue toward {} is closed", self.mirror_side))?
    }
}

/// The task: applies jobs in order until the session is gone and the queue
/// is empty, then closes the mirror's connection.
async fn apply(
    shared: Arc<Shared>,
    side: Side,
    params: Vec<(String, String)>,
    mut conn: Option<Framed>,
    mut rx: mpsc::Receiver<Job>,
) {
    while let Some(job) = rx.recv().await {
        if conn.is_none() && job.fresh {
            match connect_mirror(&shared, side, &params, &job.replay).await {
                Ok((m, _)) => conn = Some(m),
                Err(e) => warn!(%side, error = %e, "async mirror: cannot connect"),
            }
        }
        let outcome = match conn.as_mut() {
            None => Err(format!("no connection to {side}")),
            Some(m) => {
                let run = async {
                    m.send(&job.msgs).await?;
                    let mut all = Collected {
                        frames: Vec::new(),
                        error: None,
                        status: b'I',
                    };
                    for _ in 0..job.readies {
                        let c = collect(m).await?;
                        all.error = all.error.or(c.error);
                        all.status = c.status;
                        all.frames.extend(c.frames);
                    }
                    Ok::<_, FramedError>(all)
                };
                match tokio::time::timeout(shared.mirror_timeout, run).await {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => {
                        conn = None;
                        Err(format!("connection to {side} lost: {e}"))
                    }
                    Err(_) => {
                        conn = None;
                        Err(format!(
                            "{side} did not answer within {} ms (mirror.statement_timeout_ms)",
                            shared.mirror_timeout.as_millis()
                        ))
                    }
                }
            }
        };
        shared.async_pending.fetch_sub(1, Ordering::Relaxed);
        if let Some(reply) = job.reply {
            let _ = reply.send(outcome);
            continue;
        }
        let detail = match outcome {
            Ok(c) => c.error,
            Err(e) => Some(e),
        };
        if let Some(detail) = detail {
            shared.metrics_mirror_error();
            shared.record_located(
                Divergence::new(
                    DivergenceKind::MirrorError,
                    side,
                    &job.class.fingerprint,
                    &detail,
                ),
                &job.msgs,
            );
        }
    }
    if let Some(mut m) = conn {
        let _ = m.send(&codec::frame(b'X', &[])).await;
    }
}

/// A new connection to the mirror's side with the session's settings
/// replayed, and its backend's cancel key.
pub(super) async fn connect_mirror(
    shared: &Shared,
    side: Side,
    params: &[(String, String)],
    replay: &[String],
) -> Result<(Framed, BackendKey), String> {
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map_or("", |(_, v)| v.as_str());
    let conn = backend::connect(&shared.session_target(side, user), params)
        .await
        .map_err(|e| e.to_string())?;
    let key = BackendKey {
        pid: conn.pid,
        secret: conn.secret,
    };
    let mut m = Framed::new(conn.stream, conn.leftover, usize::MAX);
    for sql in replay {
        m.send(&query(sql)).await.map_err(|e| e.to_string())?;
        collect(&mut m).await.map_err(|e| e.to_string())?;
    }
    Ok((m, key))
}
