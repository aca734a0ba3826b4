//! How sessions and phase changes keep in step: the routing every
//! transaction reads once, the pause a flip's barrier sets, the stop, the
//! flip lock, and the counts the barrier and the watch windows read. One
//! owned part of the shared state.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use turnout_control::{Routing, RoutingState, Side};

/// `pause`, until `resume`.
pub const HELD_BY_OPERATOR: u8 = 1;
/// A flip's barrier, until it ends.
pub const HELD_BY_FLIP: u8 = 2;
/// This instance of a fleet cannot renew its lease in the fleet's store:
/// until it reads the store again.
pub const HELD_BY_FENCE: u8 = 4;

/// What a session inside a transaction hears when its instance's fleet
/// lease ended meanwhile (the process stood still, say).
pub const FENCED_IN_TRANSACTION: &str = "turnout: this instance's lease in the fleet ended during the transaction (the fleet may have changed the authority since): the transaction is rolled back and the connection closed; connect again";

pub struct Coordination {
    pub routing: Arc<RoutingState>,
    /// Set when the server stops: mirrored sessions close at their next
    /// transaction boundary.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Mirrored sessions running.
    pub mirror_sessions: AtomicUsize,
    /// Why mirrored sessions hold new transactions now (a mask of
    /// [`HELD_BY_OPERATOR`], `pause` until `resume`, and [`HELD_BY_FLIP`], a
    /// flip's barrier): each is set and cleared on its own, so a flip never
    /// lifts an operator's pause.
    pub paused: tokio::sync::watch::Sender<u8>,
    /// Held while a phase change runs: one at a time.
    pub flip_lock: tokio::sync::Mutex<()>,
    /// Mirrored sessions inside a transaction (or a statement) now.
    pub busy_sessions: AtomicUsize,
    /// For each mirrored session inside a transaction: the routing epoch it
    /// runs by (keyed by a session number).
    pub in_transaction: DashMap<u64, u64>,
    pub next_session: AtomicU64,
    /// Reads that failed on the mirror's side when it served them
    /// (`reads_new`): what the watch window after a reads flip counts.
    pub mirror_read_errors: AtomicU64,
    /// Failures of the authority itself (lost connections, server-side
    /// errors, not the client's SQL errors) by side (old, new): what the
    /// watch window after a writes flip counts.
    pub authority_failures: [AtomicU64; 2],
    /// Client connections open (all phases).
    pub connections: Arc<AtomicUsize>,
    /// Sessions opened in passthrough (bytes forwarded, nothing mirrored)
    /// still open.
    pub passthrough_sessions: Arc<AtomicUsize>,
    /// Set when `flip mirror` entered the mirror phase: passthrough sessions
    /// close at their next idle moment (PostgreSQL).
    pub mirror_entered: tokio::sync::watch::Sender<bool>,
    /// In a fleet: until when (ms after `fence_base`) this instance's
    /// lease is known to last; `u64::MAX` outside a fleet. Past it, new
    /// transactions are held ([`HELD_BY_FENCE`]).
    pub fence_until: AtomicU64,
    fence_base: std::time::Instant,
    /// How long a transaction held by the fence waits before its client
    /// gets an error (ms).
    pub fence_wait_ms: AtomicU64,
    /// How long before the lease ends new transactions are held (ms).
    pub fence_grace_ms: AtomicU64,
}

/// Counts a passthrough session while it lives.
pub struct PassthroughGuard(Arc<AtomicUsize>);

impl PassthroughGuard {
    pub fn new(count: &Arc<AtomicUsize>) -> PassthroughGuard {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PassthroughGuard(count.clone())
    }
}

impl Drop for PassthroughGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Coordination {
    pub fn new(routing: Arc<RoutingState>) -> Coordination {
        Coordination {
            routing,
            stopping: tokio::sync::watch::channel(false).0,
            mirror_sessions: AtomicUsize::new(0),
            paused: tokio::sync::watch::channel(0).0,
            flip_lock: tokio::sync::Mutex::new(()),
            busy_sessions: AtomicUsize::new(0),
            in_transaction: DashMap::new(),
            next_session: AtomicU64::new(0),
            mirror_read_errors: AtomicU64::new(0),
            authority_failures: [AtomicU64::new(0), AtomicU64::new(0)],
            connections: Arc::new(AtomicUsize::new(0)),
            passthrough_sessions: Arc::new(AtomicUsize::new(0)),
            mirror_entered: tokio::sync::watch::channel(false).0,
            fence_until: AtomicU64::new(u64::MAX),
            fence_base: std::time::Instant::now(),
            fence_wait_ms: AtomicU64::new(5000),
            fence_grace_ms: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the fence's base: the fence's clock (monotonic,
    /// so it runs on while the process is stopped).
    pub fn fence_clock(&self) -> u64 {
        self.fence_base.elapsed().as_millis() as u64
    }

    /// The lease is known to last until `until` (a [`Coordination::fence_clock`]
    /// reading); the fence's hold ends.
    pub fn renew_fence(&self, until: u64) {
        self.fence_until.store(until, Ordering::SeqCst);
        self.release(HELD_BY_FENCE);
    }

    /// Whether new transactions are held: the lease ends within
    /// `fence_grace_ms` (the time open transactions have to end before it
    /// does), or has ended.
    pub fn fenced(&self) -> bool {
        let until = self.fence_until.load(Ordering::SeqCst);
        let grace = self.fence_grace_ms.load(Ordering::Relaxed);
        until != u64::MAX && self.fence_clock() + grace >= until
    }

    /// Whether this instance's lease may have ended: nothing of a
    /// transaction runs on then (the fleet may have moved without it).
    pub fn lease_ended(&self) -> bool {
        let until = self.fence_until.load(Ordering::SeqCst);
        until != u64::MAX && self.fence_clock() >= until
    }

    /// Mirrored sessions still inside a transaction that runs by an epoch
    /// before `epoch`.
    pub fn sessions_behind(&self, epoch: u64) -> usize {
        self.in_transaction
            .iter()
            .filter(|e| *e.value() < epoch)
            .count()
    }

    /// A mirrored session starts a transaction (or an autocommit
    /// statement): held while paused, then counted, and given the routing
    /// it runs by until it ends. Counted before the pause is looked at, so
    /// a barrier that sets the pause and then sees no session counted knows
    /// none can start.
    /// In a fleet, an instance whose lease may have ended holds it too
    /// (checked here, not only by the fleet's agent: after the process was
    /// stopped, a session may run before the agent does), and its client
    /// gets `Err` (the message) once it waited `fence_wait_ms`.
    pub async fn enter_transaction(
        &self,
        session: u64,
        paused: &mut tokio::sync::watch::Receiver<u8>,
        stopping: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<Routing>, String> {
        let mut fenced_since: Option<std::time::Instant> = None;
        loop {
            self.busy_sessions.fetch_add(1, Ordering::SeqCst);
            if self.fenced() {
                self.hold(HELD_BY_FENCE);
            }
            let held = *paused.borrow_and_update();
            if held == 0 || *stopping.borrow() {
                break;
            }
            self.busy_sessions.fetch_sub(1, Ordering::SeqCst);
            if held & HELD_BY_FENCE == 0 {
                tokio::select! {
                    _ = paused.changed() => {}
                    _ = stopping.changed() => {}
                }
                continue;
            }
            let since = *fenced_since.get_or_insert_with(std::time::Instant::now);
            let wait = std::time::Duration::from_millis(self.fence_wait_ms.load(Ordering::Relaxed));
            let Some(left) = wait.checked_sub(since.elapsed()) else {
                return Err(format!(
                    "turnout: this instance cannot reach the fleet's store to renew its lease: it holds new transactions until it can (waited {} ms); try again, or connect through another instance",
                    wait.as_millis()
                ));
            };
            tokio::select! {
                _ = paused.changed() => {}
                _ = stopping.changed() => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
        let routing = self.routing.snapshot();
        self.in_transaction.insert(session, routing.epoch);
        Ok(routing)
    }

    /// New transactions are held for `why` (a `HELD_BY_*`); whether they
    /// already were for that reason.
    pub fn hold(&self, why: u8) -> bool {
        let mut was = false;
        self.paused.send_modify(|h| {
            was = *h & why != 0;
            *h |= why;
        });
        was
    }

    /// The hold for `why` ends (others stay); whether it was on.
    pub fn release(&self, why: u8) -> bool {
        let mut was = false;
        self.paused.send_modify(|h| {
            was = *h & why != 0;
            *h &= !why;
        });
        was
    }

    /// Whether the operator's `pause` is on.
    pub fn operator_paused(&self) -> bool {
        *self.paused.borrow() & HELD_BY_OPERATOR != 0
    }

    /// The transaction [`Coordination::enter_transaction`] counted has ended.
    pub fn leave_transaction(&self, session: u64) {
        self.busy_sessions.fetch_sub(1, Ordering::SeqCst);
        self.in_transaction.remove(&session);
    }

    /// Counts a mirrored session while the guard lives.
    pub fn mirrored_session(&self) -> MirroredSession<'_> {
        self.mirror_sessions.fetch_add(1, Ordering::Relaxed);
        MirroredSession(self)
    }

    /// A session cannot reach `side`, which a flip made the authority:
    /// counted, and the message for the client.
    pub fn authority_unreachable(&self, side: Side, error: &str) -> String {
        self.authority_failed(side);
        format!("turnout: {side} is the authority now and cannot be reached: {error}")
    }

    /// Counts a failure of `side` as the authority.
    pub fn authority_failed(&self, side: Side) {
        let i = match side {
            Side::Old => 0,
            Side::New => 1,
        };
        self.authority_failures[i].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("turnout_authority_failures_total", "side" => side.name()).increment(1);
    }
}

/// Counts one mirrored session until dropped.
pub struct MirroredSession<'a>(&'a Coordination);

impl Drop for MirroredSession<'_> {
    fn drop(&mut self) {
        self.0.mirror_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}
