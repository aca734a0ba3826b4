//! `mirror.mode = "async"` on PostgreSQL: the engine's queue
//! ([`crate::engine::queue`]) applies the session's mirror work on a
//! connection of its own; this is how that connection is driven (messages
//! sent, ReadyForQuery answers read) and how the session hands work to it.

use super::{collect, query, BackendKey, Collected, MirrorSession};
use crate::engine::queue::{Applier, Queue};
use crate::engine::records::Records;
use crate::engine::Classification;
use crate::pg::framed::{Framed, FramedError};
use crate::pg::{backend, codec};
use crate::shared::Shared;
use bytes::Bytes;
use std::sync::Arc;
use turnout_control::divergence::Divergence;
use turnout_control::Side;

/// What one job sends: messages, and the ReadyForQuery answers to read
/// after them (0: more of the same exchange follows, e.g. COPY data).
pub(super) struct Work {
    msgs: Bytes,
    readies: usize,
}

/// The queue's connection to the mirror.
pub(super) struct PgApplier {
    shared: Arc<Shared>,
    side: Side,
    params: Vec<(String, String)>,
    conn: Option<Framed>,
}

pub(super) type AsyncMirror = Queue<PgApplier>;

/// Starts the task that applies a session's queue on `conn` (when connected).
pub(super) fn start(
    shared: Arc<Shared>,
    side: Side,
    params: Vec<(String, String)>,
    conn: Option<Framed>,
) -> AsyncMirror {
    let applier = PgApplier {
        shared: shared.clone(),
        side,
        params,
        conn,
    };
    shared.queue(applier)
}

impl Applier for PgApplier {
    type Work = Work;
    type Replay = Arc<Vec<String>>;
    type Reply = Collected;

    fn side(&self) -> Side {
        self.side
    }

    fn connected(&self) -> bool {
        self.conn.is_some()
    }

    async fn connect(&mut self, replay: &Self::Replay) -> Result<(), String> {
        let (m, _) = connect_mirror(&self.shared, self.side, &self.params, replay).await?;
        self.conn = Some(m);
        Ok(())
    }

    async fn apply(&mut self, work: &Work) -> Result<Collected, String> {
        let Some(m) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        let run = async {
            m.send(&work.msgs).await?;
            let mut all = Collected {
                frames: Vec::new(),
                error: None,
                status: b'I',
            };
            for _ in 0..work.readies {
                let c = collect(m).await?;
                all.error = all.error.or(c.error);
                all.status = c.status;
                all.frames.extend(c.frames);
            }
            Ok::<_, FramedError>(all)
        };
        run.await.map_err(|e| e.to_string())
    }

    fn disconnect(&mut self) {
        self.conn = None;
    }

    fn error_of(reply: &Collected) -> Option<String> {
        reply.error.clone()
    }

    fn rollback() -> Work {
        Work {
            msgs: query("ROLLBACK"),
            readies: 1,
        }
    }

    fn record(records: &Records, d: Divergence, _class: &Classification, work: &Work) {
        records.located(d, &work.msgs);
    }

    async fn close(self) {
        if let Some(mut m) = self.conn {
            let _ = m.send(&codec::frame(b'X', &[])).await;
        }
    }
}

impl MirrorSession<'_> {
    /// Queues `msgs` for the mirror. Never waits, except to queue the
    /// rollback that closes a transaction an earlier overflow voided.
    pub(super) async fn enqueue(&mut self, msgs: &[u8], readies: usize, fresh: bool) {
        let in_transaction = !fresh || self.status != b'I';
        let work = Work {
            msgs: Bytes::copy_from_slice(msgs),
            readies,
        };
        let Some(q) = self.async_mirror.as_mut() else {
            return;
        };
        q.push(work, &self.unit_class, fresh, in_transaction, &self.replay)
            .await;
    }

    /// Queues more of a statement already queued (COPY data): it waits for
    /// room rather than cutting an admitted statement short.
    pub(super) async fn enqueue_more(&mut self, msgs: Bytes) {
        let work = Work { msgs, readies: 0 };
        if let Some(q) = self.async_mirror.as_mut() {
            q.push_more(work, &self.unit_class, &self.replay).await;
        }
    }

    /// Runs `msgs` on the mirror behind everything queued and waits for its
    /// answer (one ReadyForQuery).
    pub(super) async fn ask_queued(
        &mut self,
        msgs: &[u8],
        fresh: bool,
    ) -> Result<Collected, String> {
        let work = Work {
            msgs: Bytes::copy_from_slice(msgs),
            readies: 1,
        };
        let Some(q) = self.async_mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        q.ask(work, &self.unit_class, fresh, &self.replay).await
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
