//! `mirror.mode = "async"`, for both protocols: the mirror's copy of each
//! statement goes into a bounded, ordered per-session queue that a task of
//! its own applies on the mirror, and the client waits for the authority
//! alone. A statement the queue cannot take, or that fails on the mirror, is
//! written to the divergence log: nothing is dropped silently.
//!
//! The protocol adapters implement [`Applier`] (how work is sent on one
//! mirror connection and its answers read); the queue's order, its bound,
//! what an overflow does to the rest of a transaction, timeouts, reconnects
//! and recording are here, once.

use super::records::Records;
use super::Classification;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::Side;

/// The queues' figures, shared by every session of a listener: what the
/// metrics, `status` and a writes flip's drain read.
#[derive(Debug, Default)]
pub struct Stats {
    pending: AtomicUsize,
    deepest: AtomicUsize,
    /// `mirror.async_queue`: each session queue's bound.
    pub bound: usize,
}

impl Stats {
    pub fn new(bound: usize) -> Stats {
        Stats {
            bound,
            ..Stats::default()
        }
    }

    /// Statements queued in every session and not applied yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// The counter of pending statements (what a drain waits on).
    pub fn pending_counter(&self) -> &AtomicUsize {
        &self.pending
    }

    /// The deepest session queue since the last call.
    pub fn take_deepest(&self) -> usize {
        self.deepest.swap(0, Ordering::Relaxed)
    }

    fn queued(&self, depth: usize) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.deepest.fetch_max(depth, Ordering::Relaxed);
    }
}

/// One mirror connection as an adapter drives it for the queue.
pub trait Applier: Send + 'static {
    /// What one job sends (messages or commands, with how many answers).
    type Work: Send + Sync + 'static;
    /// The session's settings so far, replayed on a new connection.
    type Replay: Clone + Send + Sync + 'static;
    /// The mirror's answer to one job.
    type Reply: Send + 'static;

    /// The mirror's side.
    fn side(&self) -> Side;
    fn connected(&self) -> bool;
    /// Opens a connection with `replay` applied.
    fn connect(&mut self, replay: &Self::Replay)
        -> impl Future<Output = Result<(), String>> + Send;
    /// Sends `work` and reads its answers. `Err`: the connection failed (it
    /// is dropped).
    fn apply(
        &mut self,
        work: &Self::Work,
    ) -> impl Future<Output = Result<Self::Reply, String>> + Send;
    /// Bookkeeping the applier needs whatever happens to the transaction
    /// it comes in (a statement's registration): never voided by an
    /// overflow, and queued by waiting for room rather than overflowing.
    fn always_applies(_work: &Self::Work) -> bool {
        false
    }
    /// Work the applier takes in without the connection (bookkeeping such
    /// as a statement's registration): its reply, or `None` to apply it.
    fn note(&mut self, _work: &Self::Work) -> Option<Self::Reply> {
        None
    }
    /// Drops the connection (its state is unknown after a timeout).
    fn disconnect(&mut self);
    /// The server's error in an answer, if any.
    fn error_of(reply: &Self::Reply) -> Option<String>;
    /// What ends a transaction an overflow voided on the mirror.
    fn rollback() -> Self::Work;
    /// Records `d`, a failure of `work`, with where it lies.
    fn record(records: &Records, mut d: Divergence, class: &Classification, _work: &Self::Work) {
        d.table = class.insert_table.clone();
        records.divergence(d);
    }
    /// Closes the connection when the session and its queue are done.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// One piece of mirror work, in session order.
struct Job<A: Applier> {
    work: A::Work,
    class: Arc<Classification>,
    /// Starts a new transaction on the mirror: a lost connection may be
    /// replaced (with the session's settings replayed) first.
    fresh: bool,
    replay: A::Replay,
    /// The caller waits for the mirror's answer.
    reply: Option<oneshot::Sender<Result<A::Reply, String>>>,
}

/// The session's end of the queue.
pub struct Queue<A: Applier> {
    tx: mpsc::Sender<Job<A>>,
    side: Side,
    stats: Arc<Stats>,
    records: Arc<Records>,
    /// A statement of the current transaction overflowed: the rest of the
    /// transaction is not sent, and the mirror's part of it is rolled back.
    void: bool,
}

/// What became of work handed to [`Queue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full: recorded as `async_overflow`.
    Overflowed,
    /// An earlier statement of the transaction overflowed: recorded, not sent.
    Voided,
    /// The applying task is gone.
    Closed,
}

impl<A: Applier> Queue<A> {
    /// Starts the task that applies the queue with `applier`.
    pub fn start(
        applier: A,
        stats: Arc<Stats>,
        records: Arc<Records>,
        timeout: Duration,
    ) -> Queue<A> {
        let (tx, rx) = mpsc::channel(stats.bound.max(1));
        let side = applier.side();
        tokio::spawn(run(applier, rx, stats.clone(), records.clone(), timeout));
        Queue {
            tx,
            side,
            stats,
            records,
            void: false,
        }
    }

    /// Queues `work`. Never waits, except to queue the rollback that closes
    /// a transaction an earlier overflow voided. `in_transaction`: the work
    /// belongs to a transaction that goes on after it (an overflow then
    /// voids the rest of it).
    pub async fn push(
        &mut self,
        work: A::Work,
        class: &Arc<Classification>,
        fresh: bool,
        in_transaction: bool,
        replay: &A::Replay,
    ) -> Pushed {
        if A::always_applies(&work) {
            let job = self.job(work, class, false, replay, None);
            if self.tx.send(job).await.is_err() {
                self.closed(class);
                return Pushed::Closed;
            }
            self.counted();
            return Pushed::Queued;
        }
        if self.void {
            if !fresh {
                let d = Divergence::new(
                    DivergenceKind::AsyncOverflow,
                    self.side,
                    &class.fingerprint,
                    "not applied: an earlier statement of this transaction overflowed mirror.async_queue",
                );
                A::record(&self.records, d, class, &work);
                return Pushed::Voided;
            }
            // Whatever the mirror has of the voided transaction goes.
            let rollback = self.job(A::rollback(), class, false, replay, None);
            if self.tx.send(rollback).await.is_err() {
                self.closed(class);
                return Pushed::Closed;
            }
            self.counted();
            self.void = false;
        }
        let job = self.job(work, class, fresh, replay, None);
        match self.tx.try_send(job) {
            Ok(()) => {
                self.counted();
                Pushed::Queued
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.closed(class);
                Pushed::Closed
            }
            Err(mpsc::error::TrySendError::Full(job)) => {
                self.records.mirror_error();
                self.void = in_transaction;
                let detail = if in_transaction {
                    "mirror.async_queue is full: not applied on the mirror; the rest of its transaction is not applied there either"
                } else {
                    "mirror.async_queue is full: not applied on the mirror"
                };
                let d = Divergence::new(
                    DivergenceKind::AsyncOverflow,
                    self.side,
                    &class.fingerprint,
                    detail,
                );
                A::record(&self.records, d, class, &job.work);
                Pushed::Overflowed
            }
        }
    }

    /// Queues more of a statement already queued (COPY data): it waits for
    /// room rather than cutting an admitted statement short.
    pub async fn push_more(
        &mut self,
        work: A::Work,
        class: &Arc<Classification>,
        replay: &A::Replay,
    ) {
        if self.void {
            return;
        }
        let job = self.job(work, class, false, replay, None);
        if self.tx.send(job).await.is_ok() {
            self.counted();
        } else {
            self.closed(class);
        }
    }

    /// Runs `work` on the mirror behind everything queued and waits for its
    /// answer.
    pub async fn ask(
        &mut self,
        work: A::Work,
        class: &Arc<Classification>,
        fresh: bool,
        replay: &A::Replay,
    ) -> Result<A::Reply, String> {
        let (reply, answer) = oneshot::channel();
        let job = self.job(work, class, fresh, replay, Some(reply));
        let closed = || format!("the queue toward {} is closed", self.side);
        self.tx.send(job).await.map_err(|_| closed())?;
        self.counted();
        answer.await.map_err(|_| closed())?
    }

    fn job(
        &self,
        work: A::Work,
        class: &Arc<Classification>,
        fresh: bool,
        replay: &A::Replay,
        reply: Option<oneshot::Sender<Result<A::Reply, String>>>,
    ) -> Job<A> {
        Job {
            work,
            class: class.clone(),
            fresh,
            replay: replay.clone(),
            reply,
        }
    }

    /// The applying task is gone (it ended early): what was handed to it is
    /// not applied, and that is recorded.
    fn closed(&self, class: &Classification) {
        self.records.mirror_error();
        self.records.divergence(Divergence::new(
            DivergenceKind::MirrorError,
            self.side,
            &class.fingerprint,
            &format!(
                "the async queue toward {} is closed: not applied on the mirror",
                self.side
            ),
        ));
    }

    fn counted(&self) {
        self.stats
            .queued(self.tx.max_capacity() - self.tx.capacity());
    }
}

/// The task: applies jobs in order until the session is gone and the queue
/// is empty, then closes the mirror's connection.
async fn run<A: Applier>(
    mut applier: A,
    mut rx: mpsc::Receiver<Job<A>>,
    stats: Arc<Stats>,
    records: Arc<Records>,
    timeout: Duration,
) {
    let side = applier.side();
    while let Some(job) = rx.recv().await {
        if let Some(reply) = applier.note(&job.work) {
            stats.pending.fetch_sub(1, Ordering::SeqCst);
            if let Some(tx) = job.reply {
                let _ = tx.send(Ok(reply));
            }
            continue;
        }
        if !applier.connected() && job.fresh {
            if let Err(e) = applier.connect(&job.replay).await {
                warn!(%side, error = %e, "async mirror: cannot connect");
            }
        }
        let outcome = if applier.connected() {
            match tokio::time::timeout(timeout, applier.apply(&job.work)).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => {
                    applier.disconnect();
                    Err(format!("connection to {side} lost: {e}"))
                }
                Err(_) => {
                    applier.disconnect();
                    Err(super::lockstep::mirror_timed_out(side, timeout))
                }
            }
        } else {
            Err(format!("no connection to {side}"))
        };
        stats.pending.fetch_sub(1, Ordering::SeqCst);
        if let Some(reply) = job.reply {
            let _ = reply.send(outcome);
            continue;
        }
        let detail = match &outcome {
            Ok(reply) => A::error_of(reply),
            Err(e) => Some(e.clone()),
        };
        if let Some(detail) = detail {
            records.mirror_error();
            let d = Divergence::new(
                DivergenceKind::MirrorError,
                side,
                &job.class.fingerprint,
                &detail,
            );
            A::record(&records, d, &job.class, &job.work);
        }
    }
    applier.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Classifier, SqlDialect};
    use std::sync::Mutex;
    use tokio::sync::Semaphore;

    /// A fake mirror: logs what it applies, fails statements containing
    /// "bad", loses its connection at "drop", and applies one job per
    /// permit of `gate` (a stalled mirror has none).
    struct Fake {
        log: Arc<Mutex<Vec<String>>>,
        gate: Arc<Semaphore>,
        connected: bool,
        connects: Arc<AtomicUsize>,
    }

    impl Applier for Fake {
        type Work = String;
        type Replay = Arc<Vec<String>>;
        type Reply = Result<String, String>;

        fn side(&self) -> Side {
            Side::New
        }
        fn connected(&self) -> bool {
            self.connected
        }
        async fn connect(&mut self, replay: &Self::Replay) -> Result<(), String> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            self.connected = true;
            let mut log = self.log.lock().unwrap();
            log.extend(replay.iter().map(|s| format!("replay {s}")));
            Ok(())
        }
        async fn apply(&mut self, work: &String) -> Result<Self::Reply, String> {
            self.gate.acquire().await.unwrap().forget();
            if work == "drop" {
                return Err("reset by peer".into());
            }
            self.log.lock().unwrap().push(work.clone());
            if work.contains("bad") {
                Ok(Err(format!("{work} refused")))
            } else {
                Ok(Ok(format!("{work} done")))
            }
        }
        fn disconnect(&mut self) {
            self.connected = false;
        }
        fn always_applies(work: &String) -> bool {
            work.starts_with("note")
        }
        fn error_of(reply: &Self::Reply) -> Option<String> {
            reply.as_ref().err().cloned()
        }
        fn rollback() -> String {
            "ROLLBACK".into()
        }
        async fn close(self) {
            self.log.lock().unwrap().push("closed".into());
        }
    }

    struct Setup {
        queue: Queue<Fake>,
        log: Arc<Mutex<Vec<String>>>,
        gate: Arc<Semaphore>,
        stats: Arc<Stats>,
        records: Arc<Records>,
        connects: Arc<AtomicUsize>,
        class: Arc<Classification>,
        replay: Arc<Vec<String>>,
    }

    fn setup(bound: usize, open: bool) -> Setup {
        let log = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(if open { 1 << 20 } else { 0 }));
        let connects = Arc::new(AtomicUsize::new(0));
        let fake = Fake {
            log: log.clone(),
            gate: gate.clone(),
            connected: false,
            connects: connects.clone(),
        };
        let stats = Arc::new(Stats::new(bound));
        let records = Arc::new(Records::new(None, false));
        let queue = Queue::start(fake, stats.clone(), records.clone(), Duration::from_secs(5));
        let class = Classifier::new(SqlDialect::Postgres, 10).classify("insert into t values (1)");
        Setup {
            queue,
            log,
            gate,
            stats,
            records,
            connects,
            class,
            replay: Arc::new(vec!["SET search_path = app".into()]),
        }
    }

    impl Setup {
        /// `work` pushed as a session would: `fresh` between transactions,
        /// `in_transaction` inside one.
        async fn push(&mut self, work: &str, fresh: bool, in_transaction: bool) -> Pushed {
            self.queue
                .push(
                    work.into(),
                    &self.class,
                    fresh,
                    in_transaction,
                    &self.replay,
                )
                .await
        }

        /// What the fake mirror applied, after the settings replayed on its
        /// first connection.
        fn applied(&self) -> Vec<String> {
            self.log.lock().unwrap().iter().skip(1).cloned().collect()
        }
    }

    async fn settled(s: &Setup) {
        for _ in 0..1000 {
            if s.stats.pending() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the queue did not drain");
    }

    #[tokio::test]
    async fn work_is_applied_in_order_on_a_connection_with_the_settings_replayed() {
        let mut s = setup(10, true);
        for (i, w) in ["BEGIN", "a", "b", "COMMIT"].iter().enumerate() {
            let pushed = s.push(w, i == 0, i < 3).await;
            assert_eq!(pushed, Pushed::Queued);
        }
        let answer = s.queue.ask("read".into(), &s.class, true, &s.replay).await;
        assert_eq!(answer, Ok(Ok("read done".into())));
        settled(&s).await;
        assert_eq!(
            *s.log.lock().unwrap(),
            [
                "replay SET search_path = app",
                "BEGIN",
                "a",
                "b",
                "COMMIT",
                "read"
            ]
        );
        assert_eq!(s.records.divergence_count(), 0);
        drop(s.queue);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            s.log.lock().unwrap().last().map(String::as_str),
            Some("closed")
        );
    }

    #[tokio::test]
    async fn a_failure_on_the_mirror_is_recorded_and_the_next_transaction_reconnects() {
        let mut s = setup(10, true);
        s.push("bad one", true, false).await;
        s.push("drop", true, false).await;
        // Inside a transaction a lost connection is not replaced.
        s.push("mid", false, true).await;
        s.push("next", true, false).await;
        settled(&s).await;
        assert_eq!(
            s.records.divergence_count(),
            3,
            "refused, lost, no connection"
        );
        assert_eq!(s.records.mirror_error_count(), 3);
        assert_eq!(s.connects.load(Ordering::SeqCst), 2);
        let log = s.log.lock().unwrap().clone();
        assert!(!log.contains(&"mid".to_string()), "{log:?}");
        assert_eq!(log.last().map(String::as_str), Some("next"));
    }

    #[tokio::test]
    async fn an_overflow_voids_the_rest_of_its_transaction_and_rolls_the_mirror_back() {
        let mut s = setup(2, false);
        assert_eq!(s.push("BEGIN", true, true).await, Pushed::Queued);
        // The stalled mirror holds BEGIN; two more fill the queue.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.push("a", false, true).await, Pushed::Queued);
        assert_eq!(s.push("b", false, true).await, Pushed::Queued);
        assert_eq!(s.push("c", false, true).await, Pushed::Overflowed);
        assert_eq!(s.push("COMMIT", false, true).await, Pushed::Voided);
        assert_eq!(s.records.divergence_count(), 2);
        assert_eq!(s.records.mirror_error_count(), 1);
        assert_eq!(s.stats.take_deepest(), 2);
        // The mirror catches up; the next transaction starts with a rollback.
        s.gate.add_permits(1 << 20);
        settled(&s).await;
        assert_eq!(s.push("next", true, false).await, Pushed::Queued);
        settled(&s).await;
        assert_eq!(s.applied(), ["BEGIN", "a", "b", "ROLLBACK", "next"]);
    }

    #[tokio::test]
    async fn an_autocommit_overflow_voids_nothing_after_it() {
        let mut s = setup(1, false);
        assert_eq!(s.push("a", true, false).await, Pushed::Queued);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.push("b", true, false).await, Pushed::Queued);
        assert_eq!(s.push("c", true, false).await, Pushed::Overflowed);
        s.gate.add_permits(1 << 20);
        settled(&s).await;
        assert_eq!(s.push("d", true, false).await, Pushed::Queued);
        settled(&s).await;
        assert_eq!(s.applied(), ["a", "b", "d"]);
        assert_eq!(s.records.divergence_count(), 1);
    }

    #[tokio::test]
    async fn bookkeeping_is_never_voided_by_an_overflow() {
        let mut s = setup(1, false);
        assert_eq!(s.push("BEGIN", true, true).await, Pushed::Queued);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.push("a", false, true).await, Pushed::Queued);
        assert_eq!(s.push("b", false, true).await, Pushed::Overflowed);
        // The queue is full and the transaction voided: a registration
        // still waits for room and is applied.
        s.gate.add_permits(1 << 20);
        assert_eq!(s.push("note x", false, true).await, Pushed::Queued);
        assert_eq!(s.push("c", false, true).await, Pushed::Voided);
        settled(&s).await;
        assert_eq!(s.applied(), ["BEGIN", "a", "note x"]);
    }
}
