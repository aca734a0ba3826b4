//! The mirror fed from the authority's log, as the sessions and the flips
//! see it, whatever the protocol: which side's log feeds the other now, the
//! commits waiting for the applier (sync mode: a client's COMMIT is
//! answered once the mirror applied it), and the applier's figures.
//!
//! A session that commits a write marks its transaction with a token (a
//! message in the log, inside the transaction); the applier completes the
//! token once the mirror committed that transaction. Tokens carry this
//! process's nonce, so another instance's marks are told apart.

use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use turnout_control::Side;

/// The prefix of turnout's commit marks in the log.
pub const MARK_PREFIX: &str = "turnout";
/// The prefix of schema changes travelling in the log (`mirror.ddl = "both"`).
pub const DDL_PREFIX: &str = "turnout.ddl";
/// The prefix of the brackets around a statement a rule keeps on one side
/// (`never_mirror`, `old`, `new`): the applier skips its changes.
pub const SKIP_PREFIX: &str = "turnout.skip";

const NONE: u8 = 0;
const OLD: u8 = 1;
const NEW: u8 = 2;

fn side_code(side: Option<Side>) -> u8 {
    match side {
        None => NONE,
        Some(Side::Old) => OLD,
        Some(Side::New) => NEW,
    }
}

/// The log source's shared state (one per listener).
pub struct LogSync {
    /// The side whose log the applier reads now ([`NONE`]: no log source).
    source: AtomicU8,
    /// Sync mode: commits wait for the applier.
    pub sync: bool,
    /// How long a commit waits at most.
    pub wait_limit: Duration,
    nonce: String,
    next: AtomicU64,
    waiters: DashMap<u64, oneshot::Sender<()>>,
    /// The source was set to none: marks are not waited for.
    released: std::sync::atomic::AtomicBool,
    /// Commits answered before the mirror applied them, until it does:
    /// while any is left the mirror is not current (reads stay on the
    /// authority).
    unapplied: DashMap<u64, ()>,
    /// The applier is not applying (stopped, reconnecting, or a commit
    /// waited in vain): commits are answered without waiting until it
    /// applies again.
    stalled: AtomicBool,
    /// Why the applier stopped, when it did.
    pub stopped: arc_swap::ArcSwap<Option<String>>,
    /// Tables (lower-case, unqualified) whose UPDATEs and DELETEs the log
    /// does not carry (no replica identity): sessions mirror those
    /// statements themselves.
    pub unlogged: arc_swap::ArcSwap<HashSet<String>>,
    pub figures: Figures,
    /// A session passed DDL: tables may have come that the log should
    /// carry.
    pub ddl_seen: tokio::sync::Notify,
    /// Publication refreshes asked for after DDL committed, and the last
    /// one done: a session answers its DDL's commit once the log carries
    /// what the DDL changed (a primary key added moves the table's
    /// UPDATEs into the log).
    refresh_asked: AtomicU64,
    refreshed: tokio::sync::watch::Sender<u64>,
    /// Tables recorded once as lacking a replica identity.
    noted: DashMap<String, ()>,
}

/// What the applier did, for status and metrics.
#[derive(Default)]
pub struct Figures {
    /// Transactions applied to the mirror.
    pub applied: AtomicU64,
    /// Transactions in the log that no turnout session marked: writers that
    /// bypass turnout (or statements it took for reads), by table.
    pub foreign: AtomicU64,
    pub foreign_tables: DashMap<String, u64>,
    /// Rows applied.
    pub rows: AtomicU64,
    /// Commits answered without the mirror having applied them (the
    /// applier stalled, or the wait ran out).
    pub unwaited: AtomicU64,
    /// Bytes of log the authority keeps for turnout's slot (its lag).
    pub lag_bytes: AtomicU64,
    /// The last position applied on the mirror, as the log writes it.
    pub applied_lsn: arc_swap::ArcSwap<String>,
}

/// How a commit's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The mirror applied the transaction.
    Applied,
    /// Answered without it: the applier stalled or the limit passed.
    NotApplied,
}

/// A commit waiting for the applier.
pub struct Waiter {
    id: u64,
    rx: oneshot::Receiver<()>,
}

impl LogSync {
    pub fn new(sync: bool, wait_limit: Duration) -> LogSync {
        let nonce: u64 = rand::random();
        LogSync {
            source: AtomicU8::new(NONE),
            sync,
            wait_limit,
            nonce: format!("{nonce:016x}"),
            next: AtomicU64::new(1),
            waiters: DashMap::new(),
            released: std::sync::atomic::AtomicBool::new(false),
            unapplied: DashMap::new(),
            stalled: AtomicBool::new(true),
            stopped: arc_swap::ArcSwap::from_pointee(None),
            unlogged: arc_swap::ArcSwap::from_pointee(HashSet::new()),
            figures: Figures::default(),
            ddl_seen: tokio::sync::Notify::new(),
            refresh_asked: AtomicU64::new(0),
            refreshed: tokio::sync::watch::channel(0).0,
            noted: DashMap::new(),
        }
    }

    /// DDL committed: waits (at most `limit`) until the publications
    /// were brought up to date after it. Without a log source, at once.
    pub async fn refresh_after_ddl(&self, limit: Duration) {
        if self.source().is_none() {
            return;
        }
        let asked = self.refresh_asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.refreshed.subscribe();
        self.ddl_seen.notify_one();
        let _ = tokio::time::timeout(limit, rx.wait_for(|done| *done >= asked)).await;
    }

    /// The refreshes asked for so far (the upkeep takes this before it
    /// reads the catalog).
    pub fn refresh_wanted(&self) -> u64 {
        self.refresh_asked.load(Ordering::SeqCst)
    }

    /// The publications are up to date with every DDL committed before
    /// `upto` was asked.
    pub fn refreshed_upto(&self, upto: u64) {
        self.refreshed.send_modify(|done| *done = (*done).max(upto));
    }

    /// The side whose log feeds the other now, if any.
    pub fn source(&self) -> Option<Side> {
        match self.source.load(Ordering::SeqCst) {
            OLD => Some(Side::Old),
            NEW => Some(Side::New),
            _ => None,
        }
    }

    /// Whether `authority`'s writes reach the mirror through its log.
    pub fn feeds_from(&self, authority: Side) -> bool {
        self.source() == Some(authority)
    }

    /// The applier now reads `side`'s log (`None`: no log source).
    pub fn set_source(&self, side: Option<Side>) {
        // (A change of direction comes after the applier caught up.)
        self.unapplied.clear();
        self.source.store(side_code(side), Ordering::SeqCst);
        self.released.store(side.is_none(), Ordering::SeqCst);
        if side.is_none() {
            // Nothing applies marks any more (finalized, or statements feed
            // the mirror): no commit waits for one.
            let ids: Vec<u64> = self.waiters.iter().map(|e| *e.key()).collect();
            for id in ids {
                if let Some((_, tx)) = self.waiters.remove(&id) {
                    let _ = tx.send(());
                }
            }
        }
        metrics::gauge!("turnout_mirror_source", "source" => "log").set(if side.is_some() {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("turnout_mirror_source", "source" => "images").set(if side.is_some() {
            0.0
        } else {
            1.0
        });
    }

    /// A new token and its waiter: the token goes into the transaction's
    /// mark; the waiter is completed when the mirror applied it.
    pub fn mark(&self) -> (String, Waiter) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(id, tx);
        (format!("{}:{id}", self.nonce), Waiter { id, rx })
    }

    /// A mark's token that will not be applied (the transaction did not
    /// commit, or wrote nothing): its waiter goes.
    pub fn forget(&self, w: Waiter) {
        self.waiters.remove(&w.id);
    }

    /// Whether `token` is one of this process's marks.
    pub fn is_ours(&self, token: &str) -> bool {
        token
            .split_once(':')
            .is_some_and(|(nonce, _)| nonce == self.nonce)
    }

    /// The applier committed the transaction marked `token` on the mirror.
    pub fn applied(&self, token: &str) {
        let Some((nonce, id)) = token.split_once(':') else {
            return;
        };
        if nonce != self.nonce {
            return;
        }
        let Ok(id) = id.parse::<u64>() else { return };
        self.unapplied.remove(&id);
        if let Some((_, tx)) = self.waiters.remove(&id) {
            let _ = tx.send(());
        }
    }

    /// Whether the mirror has every commit acknowledged to a client (the
    /// applier applies, and none was answered without it): only then may
    /// it serve reads in place of the authority.
    pub fn current(&self) -> bool {
        !self.is_stalled() && self.unapplied.is_empty()
    }

    /// Waits (at most [`Self::wait_limit`]) for the mirror to apply the
    /// transaction `w` marks; answers at once while the applier stalls.
    pub async fn wait(&self, w: Waiter) -> Waited {
        let id = w.id;
        if self.released.load(Ordering::SeqCst) {
            // The log source went (finalized, or statements feed the
            // mirror): nothing will apply the mark.
            self.waiters.remove(&id);
            return Waited::Applied;
        }
        if self.stalled.load(Ordering::Relaxed) {
            self.unapplied.insert(id, ());
            self.waiters.remove(&id);
            self.not_applied();
            return Waited::NotApplied;
        }
        match tokio::time::timeout(self.wait_limit, w.rx).await {
            Ok(Ok(())) => Waited::Applied,
            _ => {
                self.unapplied.insert(id, ());
                self.waiters.remove(&id);
                // Later commits do not wait for an applier this far behind.
                self.stalled.store(true, Ordering::Relaxed);
                self.not_applied();
                Waited::NotApplied
            }
        }
    }

    /// Waits up to `limit` for the mark of `w` to be applied, whatever the
    /// applier's state (a flip's barrier asks so): whether it was.
    pub async fn wait_for(&self, w: Waiter, limit: Duration) -> bool {
        let id = w.id;
        match tokio::time::timeout(limit, w.rx).await {
            Ok(Ok(())) => true,
            _ => {
                self.waiters.remove(&id);
                false
            }
        }
    }

    fn not_applied(&self) {
        self.figures.unwaited.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("turnout_log_unwaited_commits_total").increment(1);
    }

    /// The applier applies (again): commits wait for it.
    pub fn running(&self) {
        self.stalled.store(false, Ordering::Relaxed);
        self.stopped.store(Arc::new(None));
        metrics::gauge!("turnout_log_applier_stopped").set(0.0);
    }

    /// The applier is not applying (reconnecting, or stopped for `why`).
    pub fn stall(&self, why: Option<String>) {
        self.stalled.store(true, Ordering::Relaxed);
        if why.is_some() {
            metrics::gauge!("turnout_log_applier_stopped").set(1.0);
            self.stopped.store(Arc::new(why));
        }
    }

    /// ` (why)` when the applier stopped for a reason, else nothing: for
    /// messages saying the applier did not catch up.
    pub fn stopped_suffix(&self) -> String {
        self.stopped
            .load()
            .as_ref()
            .as_ref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default()
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Transactions applied, rows applied, and the position reached.
    pub fn note_applied(&self, transactions: u64, rows: u64, lsn: String) {
        self.figures
            .applied
            .fetch_add(transactions, Ordering::Relaxed);
        self.figures.rows.fetch_add(rows, Ordering::Relaxed);
        metrics::counter!("turnout_log_transactions_applied_total").increment(transactions);
        metrics::counter!("turnout_log_rows_applied_total").increment(rows);
        self.figures.applied_lsn.store(Arc::new(lsn));
    }

    /// A transaction no session marked wrote `tables`.
    pub fn note_foreign(&self, tables: &[String]) {
        self.figures.foreign.fetch_add(1, Ordering::Relaxed);
        for t in tables {
            *self.figures.foreign_tables.entry(t.clone()).or_insert(0) += 1;
            metrics::counter!("turnout_log_foreign_transactions_total", "table" => t.clone())
                .increment(1);
        }
    }

    pub fn note_lag(&self, bytes: u64) {
        self.figures.lag_bytes.store(bytes, Ordering::Relaxed);
        metrics::gauge!("turnout_log_lag_bytes").set(bytes as f64);
    }

    /// Whether `table` (qualified) is said for the first time to lack a
    /// replica identity.
    pub fn first_note(&self, table: &str) -> bool {
        self.noted.insert(table.to_string(), ()).is_none()
    }

    /// Whether `table` (as a statement names it) is one whose UPDATEs and
    /// DELETEs the log lacks.
    pub fn unlogged_table(&self, table: &str) -> bool {
        let set = self.unlogged.load();
        if set.is_empty() {
            return false;
        }
        let name = table.rsplit('.').next().unwrap_or(table);
        let name = name.trim_matches('"');
        set.contains(&name.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_waits_for_its_own_mark_only() {
        let log = LogSync::new(true, Duration::from_secs(5));
        log.running();
        let (token, w) = log.mark();
        let (other, w2) = log.mark();
        assert!(log.is_ours(&token));
        assert!(!log.is_ours("0123456789abcdef:1"));
        log.applied(&other);
        log.applied("ffffffffffffffff:1");
        log.applied(&token);
        assert_eq!(log.wait(w).await, Waited::Applied);
        assert_eq!(log.wait(w2).await, Waited::Applied);
    }

    #[tokio::test]
    async fn commits_waiting_when_the_source_goes_are_answered() {
        let log = std::sync::Arc::new(LogSync::new(true, Duration::from_secs(30)));
        log.set_source(Some(Side::New));
        log.running();
        let (_, w) = log.mark();
        let waiting = {
            let log = log.clone();
            tokio::spawn(async move { log.wait(w).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Finalize: the applier stops and the source goes.
        log.set_source(None);
        let answered = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        assert_eq!(
            answered.expect("answered at once").unwrap(),
            Waited::Applied
        );
        // A mark taken after that is not waited for either.
        let (_, w) = log.mark();
        assert_eq!(log.wait(w).await, Waited::Applied);
    }

    #[tokio::test]
    async fn a_stalled_applier_answers_at_once_and_a_timeout_stalls_it() {
        let log = LogSync::new(true, Duration::from_millis(50));
        let (_, w) = log.mark();
        // Not running yet: no wait at all.
        assert_eq!(log.wait(w).await, Waited::NotApplied);
        log.running();
        let (_, w) = log.mark();
        assert_eq!(log.wait(w).await, Waited::NotApplied);
        assert!(log.is_stalled());
        assert_eq!(log.figures.unwaited.load(Ordering::Relaxed), 2);
        assert!(log.waiters.is_empty());
        // Not current until the applier applies both.
        log.running();
        assert!(!log.current());
        log.applied(&format!("{}:1", log.nonce));
        log.applied(&format!("{}:2", log.nonce));
        assert!(log.current());
    }

    #[test]
    fn unlogged_tables_match_as_statements_name_them() {
        let log = LogSync::new(true, Duration::from_secs(1));
        assert!(!log.unlogged_table("t"));
        log.unlogged
            .store(Arc::new(["events".to_string()].into_iter().collect()));
        assert!(log.unlogged_table("Events"));
        assert!(log.unlogged_table("public.\"events\""));
        assert!(!log.unlogged_table("orders"));
    }
}
