//! The session engine for PostgreSQL in phases with a mirror: every write runs
//! on the authority first and on the mirror second, each inside a transaction,
//! and the mirror commits before the authority (DESIGN.md invariant 1). Reads
//! go to the authority's connection; the client only ever sees the authority's
//! answers.
//!
//! Messages are handled one unit at a time: a simple Query, or an extended
//! protocol batch up to Sync. A write outside a transaction is wrapped:
//! `BEGIN`, write, (mirror: `BEGIN`, write, `COMMIT`), `COMMIT`.

use super::backend::BackendConn;
use super::codec::{self, put_cstr, Severity};
use super::framed::{Frame, Framed, FramedError};
use super::shadow::{self, Capture, Sample, ShadowQuery};
use crate::engine::defaults::{self, TableDefaults};
use crate::engine::lockstep;
use crate::engine::pin::{pin_transaction_time, PinError};
use crate::engine::route::{self, Route};
use crate::engine::{Classification, Kind, TxControl};
use crate::server::{CancelKey, Shared};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;
use turnout_config::MirrorErrorPolicy;
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::{Routing, Side};

mod batch;
mod block;
mod copy;
mod extended;
mod image;
mod queue;
mod simple;
mod swap;

use queue::AsyncMirror;

/// Frames turnout buffers for the client before writing them out.
const OUT_CHUNK: usize = 64 * 1024;
/// Mirror answers left unread before turnout stops to read them.
const MAX_PENDING: usize = 32;
/// Session-setting statements kept to replay on a new mirror connection.
const MAX_REPLAY: usize = 256;
/// A transaction time to try pinning with, to learn whether a statement
/// can be pinned before it runs.
const PROBE_TIME: &str = "2000-01-01 00:00:00+00";

/// How a mirrored session ended.
#[derive(Debug)]
pub enum End {
    Terminated,
    ClientGone(String),
    /// The client broke the protocol; it was told.
    ClientProtocol(String),
    /// The authority's connection failed; the client was told.
    AuthorityLost(String),
}

enum Stop {
    Client(FramedError),
    Authority(FramedError),
}

/// What the authority sent while turnout waited for the client.
struct Unprompted(Result<Frame, FramedError>);

type Step = Result<(), Stop>;

/// A backend process's cancel key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: i32,
    pub secret: i32,
}

/// Statements sent to the mirror whose answers are still to be read.
struct Pending {
    readies: usize,
    fingerprint: String,
    /// What was sent, to locate a failure in the divergence log.
    sent: Bytes,
    /// What its answers are checked against.
    checks: Checks,
}

/// What a deferred mirror unit's answers must show.
#[derive(Default)]
struct Checks {
    /// Row images applied by it: what each apply must find on the mirror.
    expects: Vec<crate::engine::row_image::Expect>,
    /// A statement mirrored as such: the rows the authority wrote.
    rows: Option<u64>,
}

impl Checks {
    fn any(&self) -> bool {
        !self.expects.is_empty() || self.rows.is_some()
    }
}

/// The rows CommandCompletes among `frames` report written; `None` when
/// there is none (nothing answered).
fn written(frames: &[Frame]) -> Option<u64> {
    let mut tags = frames.iter().filter(|f| f.tag == b'C').peekable();
    tags.peek()?;
    Some(tags.map(|f| codec::written_rows(f.body(), false)).sum())
}

/// A read chosen for comparison: what to run on the other side.
struct ReadSample {
    query: ShadowQuery,
    result_formats: Vec<u16>,
    permit: OwnedSemaphorePermit,
}

/// One message of the current extended-protocol batch, with the statement
/// it refers to as it was when the message came (a later Parse of the same
/// name in the batch does not change what an earlier Bind bound).
#[derive(Clone)]
struct Msg {
    frame: Frame,
    /// A Bind's statement; an Execute's (through its portal). `None`: a
    /// name turnout does not know.
    stmt: Option<Prepared>,
    /// What the message's Parse, Bind or Close replaced in the session's
    /// names: put back when the backend did not run the message (it skipped
    /// to the Sync after an error).
    undo: Option<Undo>,
    /// What the authority gets instead of `frame`: the message rewritten
    /// for row images (the image added to a Parse's text, a result format
    /// for it in a Bind, no row limit in an Execute).
    to_auth: Option<Bytes>,
    /// An Execute's row images, as the authority answered them.
    images: Vec<String>,
}

impl Msg {
    /// The row-image form of the statement the message names.
    fn imaged(&self) -> Option<&image::Imaged> {
        self.stmt.as_ref()?.image.as_deref()
    }

    /// The message as the authority gets it.
    fn for_authority(&self) -> &Bytes {
        self.to_auth.as_ref().unwrap_or(&self.frame.raw)
    }
}

/// A name's definition before a message changed it.
#[derive(Clone)]
enum Undo {
    Statement(String, Option<Prepared>),
    Portal(String, Option<Prepared>),
}

/// A prepared statement as the client defined it.
#[derive(Clone)]
struct Prepared {
    sql: Arc<str>,
    /// Parameter type section of the Parse message (count and OIDs).
    types: Bytes,
    class: Arc<Classification>,
    /// The authority runs it with row images ([`image`]).
    image: Option<Arc<image::Imaged>>,
}

/// What a unit of client work needs.
/// The result of running something on one backend up to ReadyForQuery.
struct Collected {
    frames: Vec<Frame>,
    /// The first ErrorResponse's message, if any.
    error: Option<String>,
    status: u8,
}

impl Collected {
    fn command_tags(&self) -> impl Iterator<Item = &[u8]> {
        self.frames
            .iter()
            .filter(|f| f.tag == b'C')
            .map(|f| f.body().split(|&b| b == 0).next().unwrap_or_default())
    }
}

fn query(sql: &str) -> Bytes {
    let mut body = BytesMut::with_capacity(sql.len() + 1);
    put_cstr(&mut body, sql);
    codec::frame(b'Q', &body)
}

fn cstr(b: &[u8]) -> Option<(&str, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((std::str::from_utf8(&b[..end]).ok()?, &b[end + 1..]))
}

pub struct MirrorSession<'a> {
    shared: &'a Shared,
    /// The same, owned, for work that outlives a call (shadow reads).
    shared_arc: Arc<Shared>,
    /// The current transaction wrote (its reads are not sampled unless
    /// `sampling.in_write_transactions`).
    wrote_in_tx: bool,
    /// The side whose answer the client got for the current unit.
    answered_by: Side,
    /// The routing this transaction runs by: taken when it starts, kept
    /// until it ends, so a flip never splits it.
    routing: Arc<Routing>,
    client: Framed,
    auth: Framed,
    mirror: Option<Framed>,
    mirror_side: Side,
    /// The client's cancel key, and the backends' keys behind it: a cancel
    /// goes to whichever connection is the authority.
    cancel_key: CancelKey,
    auth_key: BackendKey,
    mirror_key: Option<BackendKey>,
    client_params: Vec<(String, String)>,
    /// Authority's transaction status from its last ReadyForQuery.
    status: u8,
    /// The authority's `now()` for the current transaction, once read.
    tx_time: Option<String>,
    statements: HashMap<String, Prepared>,
    /// Each portal's statement, as it was when the portal was bound.
    portals: HashMap<String, Prepared>,
    /// Named statements that exist on the mirror connection.
    mirror_prepared: HashSet<String>,
    /// SET/RESET/DISCARD statements, replayed on a new mirror connection.
    replay: Arc<Vec<String>>,
    /// `mirror.mode = "async"`: the queue toward the mirror (which then owns
    /// the mirror's connection; `mirror` stays `None`).
    async_mirror: Option<AsyncMirror>,
    /// The classification of the unit being handled, for the async queue's
    /// divergence records.
    unit_class: Arc<Classification>,
    /// Statements sent to the mirror whose answers are not read yet.
    mirror_pending: VecDeque<Pending>,
    pending_readies: usize,
    /// Deferred statements not yet written to the mirror.
    mirror_outbox: BytesMut,
    /// Under `mirror.on_error = fail`: a deferred statement failed on the
    /// mirror; the transaction fails at COMMIT.
    deferred_failure: Option<String>,
    /// Volatile column defaults per table, from the authority's catalog.
    table_defaults: HashMap<String, TableDefaults>,
    /// The extended-protocol messages since the last Sync.
    batch: Vec<Msg>,
    /// How far the current batch has run on each side.
    run: batch::Run,
    /// For a read the mirror's side serves: per Parse sent there, whether
    /// turnout added it (its ParseComplete is dropped, not relayed).
    added_parses: VecDeque<bool>,
    /// The unit now running on one side alone, not mirrored and not
    /// recorded (a read, or what changes no rows): if a server reports
    /// written rows for it, that is a divergence ([`Self::check_unmirrored`]).
    /// Cleared at each ReadyForQuery.
    unmirrored: Option<Bytes>,
    /// The session may have changed how the server ends strings.
    lexing_unsure: bool,
    /// Shapes recorded as mirrored by statement, not by row images.
    statement_noted: HashSet<String>,
    /// Row-image apply statements prepared on the mirror's connection, by
    /// name (with their text), valid for generation `apply_gen` only: any
    /// mirror failure or new connection starts a new generation, so a name
    /// never stands for a statement that may not exist there.
    apply_names: HashMap<String, Arc<str>>,
    apply_names_gen: u64,
    apply_gen: std::sync::atomic::AtomicU64,
    /// The read [`Self::read_on_mirror`] serves, to run it again on the
    /// authority when it fails on the read target.
    read_query: Option<ShadowQuery>,
    out: BytesMut,
}

impl<'a> MirrorSession<'a> {
    pub fn new(
        shared: &'a Arc<Shared>,
        client: Framed,
        (auth, cancel_key): (BackendConn, CancelKey),
        mirror: Option<BackendConn>,
        mirror_side: Side,
        client_params: Vec<(String, String)>,
    ) -> Self {
        let mirror_key = mirror.as_ref().map(|m| BackendKey {
            pid: m.pid,
            secret: m.secret,
        });
        let auth_key = BackendKey {
            pid: auth.pid,
            secret: auth.secret,
        };
        let mut mirror = mirror.map(|m| Framed::new(m.stream, m.leftover, usize::MAX));
        let async_mirror = shared.async_queue.map(|_| {
            queue::start(
                shared.clone(),
                mirror_side,
                client_params.clone(),
                mirror.take(),
            )
        });
        MirrorSession {
            shared,
            shared_arc: shared.clone(),
            wrote_in_tx: false,
            routing: shared.routing.snapshot(),
            answered_by: mirror_side.other(),
            client,
            auth: Framed::new(auth.stream, auth.leftover, usize::MAX),
            mirror,
            cancel_key,
            auth_key,
            mirror_key,
            async_mirror,
            unit_class: Arc::default(),
            mirror_side,
            client_params,
            status: b'I',
            tx_time: None,
            statements: HashMap::new(),
            portals: HashMap::new(),
            mirror_prepared: HashSet::new(),
            replay: Arc::default(),
            table_defaults: HashMap::new(),
            mirror_pending: VecDeque::new(),
            pending_readies: 0,
            mirror_outbox: BytesMut::new(),
            deferred_failure: None,
            batch: Vec::new(),
            run: batch::Run::default(),
            added_parses: VecDeque::new(),
            read_query: None,
            unmirrored: None,
            lexing_unsure: false,
            statement_noted: HashSet::new(),
            apply_names: HashMap::new(),
            apply_names_gen: 0,
            apply_gen: std::sync::atomic::AtomicU64::new(0),
            out: BytesMut::new(),
        }
    }

    pub async fn run(mut self) -> End {
        let _counted = self.shared.mirrored_session();
        self.serve().await
    }

    async fn serve(&mut self) -> End {
        let mut stopping = self.shared.stopping.subscribe();
        let mut paused = self.shared.paused.subscribe();
        let mut busy = false;
        let id = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let end = loop {
            if busy && self.status == b'I' && self.batch.is_empty() {
                busy = false;
                self.shared.leave_transaction(id);
            }
            if *stopping.borrow() && self.status == b'I' && self.batch.is_empty() {
                // Between transactions: nothing of the client's is cut.
                let _ = self
                    .client_error(
                        Severity::Fatal,
                        "57P01",
                        "turnout is stopping: terminating connection between transactions",
                    )
                    .await;
                break End::Terminated;
            }
            let read = {
                let (client, auth) = (&mut self.client, &mut self.auth);
                tokio::select! {
                    r = client.read() => Ok(r),
                    // Between the client's messages the authority may speak
                    // on its own: notifications, notices, a termination.
                    a = auth.read() => Err(Unprompted(a)),
                    _ = stopping.changed(), if !*stopping.borrow() => continue,
                }
            };
            let read = match read {
                Err(Unprompted(Ok(f))) => {
                    if let Err(e) = self.unprompted(f).await {
                        break End::ClientGone(e.to_string());
                    }
                    continue;
                }
                Err(Unprompted(Err(e))) => break self.authority_lost(e).await,
                Ok(r) => r,
            };
            let frame = match read {
                Ok(f) => {
                    if self.status == b'I' && self.batch.is_empty() && f.tag != b'X' {
                        // A new transaction (or autocommit statement) starts:
                        // held while paused, then run by the routing of now.
                        if !busy {
                            self.routing = self
                                .shared
                                .enter_transaction(id, &mut paused, &mut stopping)
                                .await;
                            busy = true;
                        }
                        if let Err(e) = self.adopt_roles().await {
                            let side = self.routing.phase.authority();
                            let msg = self.shared.authority_unreachable(side, &e);
                            let _ = self.client_error(Severity::Fatal, "08006", &msg).await;
                            break End::AuthorityLost(e);
                        }
                    }
                    f
                }
                Err(FramedError::Codec(e)) => {
                    let msg = format!("turnout: protocol violation: {e}");
                    let _ = self.client_error(Severity::Fatal, "08P01", &msg).await;
                    break End::ClientProtocol(e.to_string());
                }
                Err(e) => break End::ClientGone(e.to_string()),
            };
            let step = match frame.tag {
                b'Q' => {
                    let started = Instant::now();
                    self.answered_by = self.auth_side();
                    let step = self.simple(frame).await;
                    self.record_unit(started);
                    step
                }
                b'P' | b'B' | b'D' | b'E' | b'C' => {
                    // After an error the backend skips to the Sync: so does
                    // turnout (nothing skipped is defined or run).
                    if !self.run.skipping {
                        let msg = self.arrive(frame);
                        self.batch.push(msg);
                    }
                    Ok(())
                }
                b'S' => {
                    let started = Instant::now();
                    self.answered_by = self.auth_side();
                    let step = self.sync_batch(frame).await;
                    self.batch.clear();
                    self.run = batch::Run::default();
                    self.record_unit(started);
                    step
                }
                b'H' => self.flush_batch().await,
                b'F' => self.function_call(frame).await,
                b'X' => {
                    let _ = self.send_auth(&frame.raw).await;
                    if let Some(m) = self.mirror.as_mut() {
                        let _ = m.send(&frame.raw).await;
                    }
                    break End::Terminated;
                }
                other => {
                    let msg = format!(
                        "turnout: protocol violation: unexpected message type {} at this point of the protocol",
                        codec::tag_name(other)
                    );
                    let _ = self.client_error(Severity::Fatal, "08P01", &msg).await;
                    break End::ClientProtocol(msg);
                }
            };
            match step {
                Ok(()) => {}
                Err(Stop::Client(e)) => break End::ClientGone(e.to_string()),
                Err(Stop::Authority(e)) => break self.authority_lost(e).await,
            }
        };
        if busy {
            self.shared.leave_transaction(id);
        }
        end
    }

    fn auth_side(&self) -> Side {
        self.mirror_side.other()
    }

    /// The authority's connection failed: the client is told, the session ends.
    async fn authority_lost(&mut self, e: FramedError) -> End {
        self.shared.authority_failed(self.auth_side());
        let msg = format!(
            "turnout: backend {} closed the connection unexpectedly: {e}",
            self.auth_side()
        );
        let _ = self.client_error(Severity::Fatal, "08006", &msg).await;
        End::AuthorityLost(e.to_string())
    }

    /// A message the authority sent while no statement of the client's was
    /// running: notifications, notices and parameter changes reach the
    /// client; an error (a FATAL before the backend closes) too.
    async fn unprompted(&mut self, f: Frame) -> Result<(), FramedError> {
        match f.tag {
            b'A' | b'N' | b'S' | b'E' => self.client.send(&f.raw).await,
            other => {
                warn!(
                    side = %self.auth_side(),
                    message = %codec::tag_name(other),
                    "unexpected message from the backend between statements; ignored"
                );
                Ok(())
            }
        }
    }

    /// Sends `msgs` to the authority. Clients write for old: when new is
    /// the authority, each statement goes through the schema mapping
    /// (found translatable first, by [`Self::not_for_authority`]).
    async fn send_auth(&mut self, msgs: &[u8]) -> Result<(), FramedError> {
        if self.auth_side() == Side::Old {
            return self.auth.send(msgs).await;
        }
        let mapping = self.shared.live().mapping.clone();
        if mapping.is_identity() {
            return self.auth.send(msgs).await;
        }
        let msgs = rewrite_statements(msgs, |sql| match mapping.translate(sql) {
            Ok(crate::mapping::Translation::Sql(mapped)) => Some(mapped),
            _ => None,
        });
        self.auth.send(&msgs).await
    }

    /// Why `sql` (a client's statement, written for old) cannot run on the
    /// authority when that is new; `None` when it can.
    fn not_for_authority(&self, sql: &str, prepared: bool) -> Option<String> {
        if self.auth_side() == Side::Old {
            return None;
        }
        self.shared.mapping().not_for_new(sql, prepared)
    }

    /// A unit new (the authority) cannot run through the schema mapping:
    /// a read is served by old, which mirroring keeps current; anything
    /// else is refused with the reason.
    async fn untranslatable(
        &mut self,
        raw: &[u8],
        to_old: &[u8],
        class: &Classification,
        reason: &str,
    ) -> Step {
        let read = class.kind() == Kind::Read && class.statements.len() == 1;
        if read && (self.mirror.is_some() || self.async_mirror.is_some()) {
            return self.read_on_mirror(to_old, raw, None, class).await;
        }
        let msg = format!(
            "turnout: this statement cannot be translated for new, which is the authority now: {reason}"
        );
        let status = self.status;
        self.queue(&codec::error_response(Severity::Error, "0A000", &msg));
        self.queue(&codec::ready_for_query(status));
        self.flush_client().await
    }

    /// Counts the unit just handled by kind and by the side that answered,
    /// with its time from arrival to the client's answer.
    fn record_unit(&self, started: Instant) {
        self.shared.backfill.latency.record(started.elapsed());
        let kind = self.unit_class.kind().name();
        let side = self.answered_by.name();
        metrics::counter!("turnout_queries_total", "kind" => kind, "side" => side).increment(1);
        metrics::histogram!("turnout_query_seconds", "kind" => kind, "side" => side)
            .record(started.elapsed().as_secs_f64());
    }

    fn route(&self, class: &Classification) -> Route {
        // A multi-statement simple Query runs as one transaction.
        let ctx = route::Context::of(
            self.shared.ddl_policy,
            self.mirror_side,
            self.routing.phase,
            true,
        );
        route::route(class, &ctx)
    }

    /// Whether to compare this read on the shadow side, with the permit to.
    fn sample_choice(&self, class: &Classification) -> Option<OwnedSemaphorePermit> {
        let sampler = &self.shared.sampler;
        // No shadow side in a phase without a mirror.
        self.routing.phase.mirror()?;
        // A read of no table (server settings, functions) has no data to
        // compare: servers answer it differently by design.
        if class.kind() != Kind::Read || class.statements.len() != 1 || class.no_tables {
            return None;
        }
        if self.wrote_in_tx && !sampler.in_write_transactions {
            return None;
        }
        sampler.choose(&class.fingerprint)
    }

    /// A sampled read: relayed as usual, its answer captured, then checked
    /// on the shadow by a task of its own.
    async fn sampled_read(
        &mut self,
        raw: &[u8],
        query: ShadowQuery,
        result_formats: Vec<u16>,
        class: &Classification,
        permit: OwnedSemaphorePermit,
    ) -> Step {
        self.send_auth(raw).await.map_err(Stop::Authority)?;
        let mut capture = Capture::default();
        self.relay_authority_capturing(Some(&mut capture)).await?;
        let sample = ReadSample {
            query,
            result_formats,
            permit,
        };
        self.check_sample(sample, class, capture, self.auth_side());
        Ok(())
    }

    /// Hands a captured read to the shadow check; `target` served it.
    fn check_sample(
        &self,
        sample: ReadSample,
        class: &Classification,
        capture: Capture,
        target: Side,
    ) {
        shadow::spawn(
            self.shared_arc.clone(),
            Sample {
                fingerprint: class.fingerprint.clone(),
                query: sample.query,
                target,
                shadow: target.other(),
                capture,
                result_formats: sample.result_formats,
                params: self.client_params.clone(),
                settings: self.replay.clone(),
            },
            sample.permit,
        );
    }

    /// The most bytes of a read's answer kept for its comparison.
    fn capture_limit(&self) -> usize {
        self.shared.sampler.max_result_bytes
    }

    /// Whether reads go to the mirror's side in this transaction
    /// (phase `reads_new`).
    fn reads_from_mirror(&self) -> bool {
        self.routing.phase.read_target() == self.mirror_side
    }

    /// A read in phase `reads_new`: served by the mirror's side, after the
    /// answers to this transaction's writes there (so it sees them). When the
    /// mirror cannot be reached the authority serves it: the client gets an
    /// answer either way.
    async fn read_on_mirror(
        &mut self,
        unit: &[u8],
        to_auth: &[u8],
        sample: Option<ReadSample>,
        class: &Classification,
    ) -> Step {
        let fresh = self.status == b'I';
        let status = self.status;
        let mut capture = Capture::default();
        let max = self.capture_limit();
        let mut added = std::mem::take(&mut self.added_parses);
        if self.async_mirror.is_some() {
            match self.ask_queued(unit, fresh).await {
                Ok(c) => {
                    self.answered_by = self.mirror_side;
                    if let Some(f) = c.frames.iter().find(|f| f.tag == b'E') {
                        self.read_failed_on_target(f.body());
                    }
                    let c = without_added_parses(c, std::mem::take(&mut added));
                    for f in &c.frames {
                        capture.see(f, max);
                        self.check_unmirrored(f, self.mirror_side, false);
                    }
                    self.unmirrored = None;
                    self.relay_collected(&c, status).await?;
                    if let Some(s) = sample {
                        self.check_sample(s, class, capture, self.mirror_side);
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.read_target_failed();
                    return self.read_fallback(to_auth, &e).await;
                }
            }
        }
        if self.mirror.is_none() && fresh {
            let _ = self.reconnect_mirror().await;
        }
        self.drain_mirror(true).await;
        let sent = match self.mirror.as_mut() {
            None => Err("no connection".to_string()),
            Some(m) => m.send(unit).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = sent {
            self.mirror = None;
            self.read_target_failed();
            return self.read_fallback(to_auth, &e).await;
        }
        self.answered_by = self.mirror_side;
        loop {
            let read = match self.mirror.as_mut() {
                Some(m) => m.read().await,
                None => Err(FramedError::Closed),
            };
            let f = match read {
                Ok(f) => f,
                Err(e) => {
                    // Rows may have gone out already: the read fails, clearly.
                    self.mirror = None;
                    self.read_target_failed();
                    let msg = format!(
                        "turnout: connection to {} lost during a read: {e}",
                        self.mirror_side
                    );
                    self.queue(&codec::error_response(Severity::Error, "08006", &msg));
                    self.queue(&codec::ready_for_query(status));
                    return self.flush_client().await;
                }
            };
            if f.tag == b'1' && added.pop_front() == Some(true) {
                continue;
            }
            capture.see(&f, max);
            self.check_unmirrored(&f, self.mirror_side, false);
            if f.tag == b'E' {
                self.read_failed_on_target(f.body());
            }
            match f.tag {
                b'Z' => {
                    self.unmirrored = None;
                    self.queue(&codec::ready_for_query(status));
                    self.flush_client().await?;
                    break;
                }
                b'G' => {
                    // A read does not copy in; refuse it there.
                    if let Some(m) = self.mirror.as_mut() {
                        let _ = m.send(&copy_fail("turnout: not a read")).await;
                    }
                }
                _ => {
                    self.queue(&f.raw);
                    if self.out.len() >= OUT_CHUNK {
                        self.flush_client().await?;
                    }
                }
            }
        }
        if let Some(s) = sample {
            self.check_sample(s, class, capture, self.mirror_side);
        }
        Ok(())
    }

    /// The classification of a client's statement. A statement that may
    /// change how the server ends strings makes every later text with a
    /// backslash a write (see [`crate::engine::Classifier::classify_in_session`]).
    fn classify(&mut self, sql: &str) -> Arc<Classification> {
        if drops_prepared(sql) {
            // `DEALLOCATE ALL` / `DISCARD ALL` reach the mirror too: turnout's
            // apply statements there go with the client's.
            self.forget_applies();
        }
        let classifier = &self.shared.classifier;
        self.lexing_unsure |= classifier.changes_lexing(sql);
        classifier.classify_in_session(sql, self.lexing_unsure)
    }

    /// Marks `raw` as running on one side alone (route `Authority`) unless a
    /// rule says so on purpose (`never_mirror`, `old`, `new`).
    fn expect_no_writes(&mut self, route: Route, class: &Classification, raw: &Bytes) {
        // (`finalized` has no other side: everything is the authority's.)
        let mirrored_phase = self.routing.phase.mirror().is_some();
        self.unmirrored =
            (route == Route::Authority && !class.ruled_to_one_side() && mirrored_phase)
                .then(|| raw.clone());
    }

    /// The server's own answer is the ground truth: a CommandComplete
    /// reporting written rows for a unit that ran on `ran_on` alone is a
    /// divergence, recorded with its table and fingerprint; the shape is a
    /// write from then on; under `mirror.on_error = "fail"` an open
    /// transaction fails at its COMMIT (rolled back on both sides).
    fn check_unmirrored(&mut self, f: &Frame, ran_on: Side, copied_in: bool) {
        if f.tag != b'C' || self.unmirrored.is_none() {
            return;
        }
        if codec::written_rows(f.body(), copied_in) == 0 {
            return;
        }
        let Some(sent) = self.unmirrored.take() else {
            return;
        };
        let tag = cstr(f.body()).map(|(t, _)| t).unwrap_or_default();
        let (d, detail) = self.shared.unmirrored_write(
            &self.unit_class.fingerprint,
            ran_on,
            &format!("answered \"{tag}\""),
        );
        self.shared.records.located(d, &sent);
        if self.shared.mirror_policy == MirrorErrorPolicy::Fail && self.status != b'I' {
            self.deferred_failure.get_or_insert(detail);
        }
    }

    /// A read failed on the read target with this ErrorResponse. The
    /// target's own failure counts at once; an object or privilege it lacks
    /// (SQLSTATE classes 42, 3D, 3F) counts once the authority has run the
    /// same read without an error (a read of a table no side has is the
    /// client's); any other error is the client's own (a division by zero,
    /// its statement timeout) and never counts.
    fn read_failed_on_target(&mut self, body: &[u8]) {
        if codec::is_server_failure(body) {
            self.read_target_failed();
            return;
        }
        let code = codec::error_fields(body).remove(&b'C').unwrap_or_default();
        if !["42", "3D", "3F"].iter().any(|c| code.starts_with(c)) {
            return;
        }
        if let Some(query) = self.read_query.take() {
            shadow::confirm_read_failure(
                self.shared_arc.clone(),
                query,
                self.mirror_side,
                self.client_params.clone(),
                self.replay.clone(),
            );
        }
    }

    /// The side serving reads (phase `reads_new`) failed one: counted for
    /// the watch window. Only its own failures count (connection lost or
    /// refused, shutdown, crash), never an error the client's SQL caused.
    fn read_target_failed(&self) {
        self.shared
            .mirror_read_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    async fn read_fallback(&mut self, to_auth: &[u8], why: &str) -> Step {
        warn!(side = %self.mirror_side, reason = %why, "read served by the authority: the read target cannot be reached");
        self.send_auth(to_auth).await.map_err(Stop::Authority)?;
        self.relay_authority().await.map(|_| ())
    }

    async fn flush_client(&mut self) -> Step {
        if !self.out.is_empty() {
            let out = self.out.split().freeze();
            self.client.send(&out).await.map_err(Stop::Client)?;
        }
        Ok(())
    }

    fn queue(&mut self, raw: &[u8]) {
        self.out.extend_from_slice(raw);
    }

    async fn client_error(&mut self, severity: Severity, code: &str, message: &str) -> Step {
        self.queue(&codec::error_response(severity, code, message));
        self.flush_client().await
    }

    /// Sends collected authority frames to the client, with `status` in the
    /// final ReadyForQuery (the client's view of its transaction).
    async fn relay_collected(&mut self, c: &Collected, status: u8) -> Step {
        for f in &c.frames {
            if f.tag == b'Z' {
                self.queue(&codec::ready_for_query(status));
            } else {
                self.queue(&f.raw);
            }
        }
        self.flush_client().await
    }

    fn note_status(&mut self, status: u8) {
        self.unmirrored = None;
        self.status = status;
        if status == b'I' {
            self.tx_time = None;
            self.wrote_in_tx = false;
        }
    }

    /// Streams the authority's answer to the client up to ReadyForQuery,
    /// forwarding COPY data in either direction. Returns the first error seen.
    async fn relay_authority(&mut self) -> Result<Option<String>, Stop> {
        self.relay_authority_capturing(None).await
    }

    /// [`Self::relay_authority`], keeping a copy of the answer for a shadow
    /// read's comparison.
    async fn relay_authority_capturing(
        &mut self,
        mut capture: Option<&mut Capture>,
    ) -> Result<Option<String>, Stop> {
        let mut error = None;
        let max = self.capture_limit();
        let mut copied_in = false;
        loop {
            let f = self.auth.read().await.map_err(Stop::Authority)?;
            if let Some(c) = capture.as_deref_mut() {
                c.see(&f, max);
            }
            self.check_unmirrored(&f, self.auth_side(), copied_in);
            match f.tag {
                b'Z' => {
                    self.note_status(f.body().first().copied().unwrap_or(b'I'));
                    self.queue(&f.raw);
                    self.flush_client().await?;
                    return Ok(error);
                }
                b'E' => {
                    if error.is_none() {
                        error = Some(error_message(&f));
                    }
                    if codec::is_server_failure(f.body()) {
                        self.shared.authority_failed(self.auth_side());
                    }
                    self.queue(&f.raw);
                }
                b'G' => {
                    copied_in = true;
                    self.queue(&f.raw);
                    self.flush_client().await?;
                    self.copy_in_authority().await?;
                }
                _ => {
                    self.queue(&f.raw);
                    if self.out.len() >= OUT_CHUNK {
                        self.flush_client().await?;
                    }
                }
            }
        }
    }

    async fn collect_authority(&mut self) -> Result<Collected, Stop> {
        let c = collect(&mut self.auth).await.map_err(Stop::Authority)?;
        if c.error.is_some()
            && c.frames
                .iter()
                .any(|f| f.tag == b'E' && codec::is_server_failure(f.body()))
        {
            self.shared.authority_failed(self.auth_side());
        }
        self.note_status(c.status);
        Ok(c)
    }

    /// Reads the authority's `now()` answer (a RowDescription, one DataRow).
    /// The volatile defaults of `table` (as written in a statement), asked of
    /// the authority once per session and table.
    async fn table_defaults(&mut self, table: &str) -> Result<TableDefaults, Stop> {
        if let Some(d) = self.table_defaults.get(table) {
            return Ok(d.clone());
        }
        // When new is the authority, a mapped table's defaults are new's,
        // under old's column names (the statement is the client's, for
        // old); the columns old does not have are not the mirror's concern.
        let mapped = match self.auth_side() {
            Side::New => self.shared.mapping().table_on_new(table),
            Side::Old => None,
        };
        let on_authority = mapped.as_ref().map_or(table, |(t, _)| t.as_str());
        // By turnout's own statement name: the client's unnamed statement
        // stays; inside a batch that already ran in part, in its transaction.
        let sync = self.own_query_syncs();
        let (rows, error) = self
            .auth_own(&defaults::catalog_query(on_authority), sync)
            .await?;
        let rows = match &mapped {
            Some((_, back)) => back.rows_under_old_names(rows),
            None => rows,
        };
        let d = defaults::from_catalog_rows(&rows);
        if error.is_none() {
            self.table_defaults.insert(table.to_string(), d.clone());
        }
        Ok(d)
    }

    async fn collect_time(&mut self) -> Result<(), Stop> {
        let c = self.collect_authority().await?;
        self.tx_time = c
            .frames
            .iter()
            .find(|f| f.tag == b'D')
            .and_then(|f| first_column_text(f.body()));
        Ok(())
    }

    /// Runs `msgs` on the mirror and reads `readies` ReadyForQuery answers.
    /// `Err` carries what went wrong, in words.
    /// `fresh` says the messages start a new transaction on the mirror, so a
    /// lost connection may be replaced first.
    async fn on_mirror(
        &mut self,
        msgs: &[u8],
        readies: usize,
        fresh: bool,
    ) -> Result<Collected, String> {
        if self.async_mirror.is_some() {
            self.enqueue(msgs, readies, fresh).await;
            return Ok(Collected {
                frames: Vec::new(),
                error: None,
                status: self.status,
            });
        }
        if self.mirror.is_none() {
            self.read_pending(true).await;
            if !fresh {
                return Err(format!(
                    "no connection to {} in this transaction",
                    self.mirror_side
                ));
            }
            self.reconnect_mirror().await?;
        }
        // Deferred statements go first, in the same write.
        let sent = self.send_outbox(msgs).await;
        self.read_pending(true).await;
        sent?;
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let run = async {
            let mut all = Collected {
                frames: Vec::new(),
                error: None,
                status: b'I',
            };
            for _ in 0..readies {
                let c = collect(m).await?;
                all.error = all.error.or(c.error);
                all.status = c.status;
                all.frames.extend(c.frames);
            }
            Ok::<_, FramedError>(all)
        };
        let outcome = tokio::time::timeout(self.shared.mirror_timeout, run).await;
        self.mirror_outcome(outcome)
    }

    /// The result of a timed read from the mirror. A lost connection or a
    /// timeout leaves its state unknown: the connection is dropped (the
    /// backend rolls back whatever was open).
    fn mirror_outcome<T>(
        &mut self,
        outcome: Result<Result<T, FramedError>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        let detail = match outcome {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => format!("connection to {} lost: {e}", self.mirror_side),
            Err(_) => format!(
                "{} did not answer within {} ms (mirror.statement_timeout_ms)",
                self.mirror_side,
                self.shared.mirror_timeout.as_millis()
            ),
        };
        self.mirror = None;
        self.mirror_prepared.clear();
        self.forget_applies();
        Err(detail)
    }

    /// Sends `msgs` to the mirror inside an open transaction without waiting
    /// for its answers: the client goes on with the authority, and the
    /// answers are read before the next step that needs the mirror in step
    /// (at the latest the COMMIT, which the mirror makes first; the
    /// authority's row locks are held until then).
    async fn mirror_defer(
        &mut self,
        msgs: &[u8],
        readies: usize,
        class: &Classification,
        fresh: bool,
    ) {
        self.mirror_defer_checked(msgs, readies, class, fresh, Checks::default(), msgs)
            .await
    }

    /// [`Self::mirror_defer`], with what its answers are checked against
    /// when they are read (`checks`); `sent`: the client's messages, to
    /// locate a failure in the divergence log.
    async fn mirror_defer_checked(
        &mut self,
        msgs: &[u8],
        readies: usize,
        class: &Classification,
        fresh: bool,
        checks: Checks,
        sent: &[u8],
    ) {
        if self.async_mirror.is_some() {
            self.enqueue(msgs, readies, fresh).await;
            return;
        }
        if self.mirror.is_none() {
            let detail = format!("no connection to {} in this transaction", self.mirror_side);
            self.deferred_failed(&class.fingerprint, &detail, true, sent);
            return;
        }
        // Sent now, so the mirror applies it while the client goes on and
        // the authority's row locks are not held waiting for it at COMMIT;
        // a BEGIN waits to go with the statement after it.
        self.mirror_outbox.extend_from_slice(msgs);
        self.mirror_pending.push_back(Pending {
            readies,
            fingerprint: class.fingerprint.clone(),
            sent: Bytes::copy_from_slice(sent),
            checks,
        });
        self.pending_readies += readies;
        if self.pending_readies > MAX_PENDING {
            self.drain_mirror(true).await;
        } else if class.kind() != Kind::Transaction(TxControl::Begin) {
            // A failed send drops the connection; the pending answers are
            // then accounted for as missing when read.
            let _ = self.send_outbox(&[]).await;
        }
    }

    /// Sends the deferred statements (with `extra` after them) to the mirror.
    async fn send_outbox(&mut self, extra: &[u8]) -> Result<(), String> {
        let mut out = std::mem::take(&mut self.mirror_outbox);
        out.extend_from_slice(extra);
        if out.is_empty() {
            return Ok(());
        }
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let sent = match tokio::time::timeout(self.shared.mirror_timeout, m.send(&out)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("connection to {} lost: {e}", self.mirror_side),
            Err(_) => format!("{} did not take the statements in time", self.mirror_side),
        };
        self.mirror = None;
        self.mirror_prepared.clear();
        self.forget_applies();
        Err(sent)
    }

    /// Reads the answers to deferred statements. `record`: failures count
    /// (false when the transaction is being rolled back on both sides anyway).
    async fn drain_mirror(&mut self, record: bool) {
        // A failed send leaves the connection gone: each pending statement
        // is then accounted for below.
        let _ = self.send_outbox(&[]).await;
        self.read_pending(record).await;
    }

    async fn read_pending(&mut self, record: bool) {
        while let Some(p) = self.mirror_pending.pop_front() {
            let outcome = match self.mirror.as_mut() {
                None => Err(format!("no connection to {}", self.mirror_side)),
                Some(m) => {
                    let keep = p.checks.any();
                    let read = async {
                        let mut error = None;
                        let mut frames = Vec::new();
                        for _ in 0..p.readies {
                            let c = collect(m).await?;
                            error = error.or(c.error);
                            if keep {
                                frames.extend(c.frames);
                            }
                        }
                        Ok::<_, FramedError>((error, frames))
                    };
                    let outcome = tokio::time::timeout(self.shared.mirror_timeout, read).await;
                    match self.mirror_outcome(outcome) {
                        Ok((None, frames)) => Ok(frames),
                        Ok((Some(e), _)) => Err(e),
                        Err(detail) => Err(detail),
                    }
                }
            };
            match outcome {
                Err(detail) => self.deferred_failed(&p.fingerprint, &detail, record, &p.sent),
                Ok(frames) if record && p.checks.any() => {
                    if let Some(detail) = self.check_applied(&p.checks.expects, &frames) {
                        self.deferred_failure.get_or_insert(detail);
                    }
                    if let (Some(a), Some(m)) = (p.checks.rows, written(&frames)) {
                        self.counts_agree(&p.fingerprint, a, m, &p.sent);
                    }
                }
                Ok(_) => {}
            }
        }
        self.pending_readies = 0;
    }

    /// A deferred mirror statement failed: recorded now under `record`;
    /// under `fail` the transaction fails at its COMMIT.
    fn deferred_failed(&mut self, fingerprint: &str, detail: &str, record: bool, sent: &[u8]) {
        self.forget_applies();
        if !record {
            return;
        }
        if self.shared.mirror_policy == MirrorErrorPolicy::Fail {
            self.shared.records.mirror_error();
            self.deferred_failure
                .get_or_insert_with(|| detail.to_string());
        } else {
            self.record_mirror_error(fingerprint, detail, sent);
        }
    }

    /// Counts a mirror failure of `sent` and writes it to the divergence log.
    fn record_mirror_error(&self, fingerprint: &str, detail: &str, sent: &[u8]) {
        self.forget_applies();
        self.shared.records.mirror_error();
        self.shared.records.located(
            Divergence::new(
                DivergenceKind::MirrorError,
                self.mirror_side,
                fingerprint,
                detail,
            ),
            sent,
        );
    }

    async fn reconnect_mirror(&mut self) -> Result<(), String> {
        let (m, key) = queue::connect_mirror(
            self.shared,
            self.mirror_side,
            &self.client_params,
            &self.replay,
        )
        .await?;
        self.mirror = Some(m);
        self.mirror_key = Some(key);
        self.mirror_prepared.clear();
        self.forget_applies();
        Ok(())
    }

    /// Records a mirror failure of `sent`; under `fail` returns true (the
    /// caller fails the client's statement and rolls back both sides instead).
    fn mirror_failed(&self, class: &Classification, detail: &str, sent: &[u8]) -> bool {
        self.forget_applies();
        let records = &self.shared.records;
        lockstep::mirror_failed(
            self.shared.mirror_policy,
            records,
            self.mirror_side,
            &class.fingerprint,
            detail,
            |d| records.located(d, sent),
        )
    }
}

/// Whether `sql` drops every prepared statement of the session
/// (`DEALLOCATE [PREPARE] ALL`, `DISCARD ALL`), perhaps among others.
fn drops_prepared(sql: &str) -> bool {
    let t = sql.trim_start();
    let starts = |w: &str| t.get(..w.len()).is_some_and(|p| p.eq_ignore_ascii_case(w));
    let several = t.trim_end().trim_end_matches(';').contains(';');
    if !(starts("deallocate") || starts("discard") || several) {
        return false;
    }
    let lower = t.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .any(|w| matches!(w, ["deallocate" | "discard" | "prepare", "all"]))
}

fn copy_fail(reason: &str) -> Bytes {
    let mut body = BytesMut::new();
    put_cstr(&mut body, reason);
    codec::frame(b'f', &body)
}

fn sql_is_copy_from(sql: &str) -> bool {
    let lower = sql.trim_start().to_ascii_lowercase();
    lower.starts_with("copy") && lower.contains("from") && lower.contains("stdin")
}

/// [`rewrite_statements`] with a mapping that changes every statement (for
/// the fuzz targets).
#[doc(hidden)]
pub fn rewrite_for_fuzzing(msgs: &[u8]) -> usize {
    rewrite_statements(msgs, |sql| Some(format!("{sql} "))).len()
}

/// `msgs` (whole frontend messages) with the SQL of each Query and Parse
/// replaced by `map`'s answer, when it has one.
fn rewrite_statements<'a>(
    msgs: &'a [u8],
    map: impl Fn(&str) -> Option<String>,
) -> std::borrow::Cow<'a, [u8]> {
    let mut out: Option<BytesMut> = None;
    let mut at = 0;
    while let Some(len) = msgs
        .get(at + 1..at + 5)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
    {
        let end = (at + 1 + len).min(msgs.len());
        let tag = msgs[at];
        let body = msgs.get(at + 5..end).unwrap_or_default();
        let replaced = match tag {
            b'Q' => cstr(body).and_then(|(sql, _)| map(sql)).map(|sql| {
                let mut b = BytesMut::new();
                put_cstr(&mut b, &sql);
                codec::frame(b'Q', &b)
            }),
            b'P' => cstr(body)
                .and_then(|(name, rest)| cstr(rest).map(|(sql, types)| (name, sql, types)))
                .and_then(|(name, sql, types)| {
                    map(sql).map(|sql| {
                        let mut b = BytesMut::new();
                        put_cstr(&mut b, name);
                        put_cstr(&mut b, &sql);
                        b.put_slice(types);
                        codec::frame(b'P', &b)
                    })
                }),
            _ => None,
        };
        match replaced {
            Some(f) => out
                .get_or_insert_with(|| BytesMut::from(&msgs[..at]))
                .extend_from_slice(&f),
            None => {
                if let Some(o) = out.as_mut() {
                    o.extend_from_slice(&msgs[at..end]);
                }
            }
        }
        let stuck = end <= at + 1;
        at = end;
        if stuck {
            break;
        }
    }
    match out {
        Some(mut o) => {
            if at < msgs.len() {
                o.extend_from_slice(&msgs[at..]);
            }
            std::borrow::Cow::Owned(o.to_vec())
        }
        None => std::borrow::Cow::Borrowed(msgs),
    }
}

/// The mirror's text for a simple-protocol write: the authority's
/// transaction time pinned in when known.
fn mirror_text(sql: &str, class: &Classification, time: Option<&str>) -> Result<String, PinError> {
    match time {
        Some(t) if class.nondeterministic() => pin_transaction_time(sql, t).map(|(s, _)| s),
        _ => Ok(sql.to_string()),
    }
}

fn no_error(c: Collected) -> Result<(), String> {
    match c.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn error_message(f: &Frame) -> String {
    codec::error_text(f.body())
}

/// The first column of a DataRow, as text.
fn first_column_text(body: &[u8]) -> Option<String> {
    data_row_texts(body).into_iter().next().flatten()
}

/// The columns of a DataRow in text format (`None` for NULL).
fn data_row_texts(body: &[u8]) -> Vec<Option<String>> {
    codec::data_row_values(body)
        .into_iter()
        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// `c` without the ParseCompletes of Parses turnout added (`added`, per
/// Parse in order).
fn without_added_parses(mut c: Collected, mut added: VecDeque<bool>) -> Collected {
    c.frames
        .retain(|f| !(f.tag == b'1' && added.pop_front() == Some(true)));
    c
}

/// Reads frames up to ReadyForQuery. A CopyInResponse nobody expected is
/// answered with CopyFail so the connection cannot hang.
async fn collect(framed: &mut Framed) -> Result<Collected, FramedError> {
    let mut c = Collected {
        frames: Vec::new(),
        error: None,
        status: b'I',
    };
    loop {
        let f = framed.read().await?;
        match f.tag {
            b'Z' => {
                c.status = f.body().first().copied().unwrap_or(b'I');
                c.frames.push(f);
                return Ok(c);
            }
            b'E' if c.error.is_none() => c.error = Some(error_message(&f)),
            b'G' => {
                framed
                    .send(&copy_fail("turnout: COPY FROM STDIN was not expected here"))
                    .await?;
                continue;
            }
            _ => {}
        }
        c.frames.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, sql: &str) -> Bytes {
        let mut b = BytesMut::new();
        put_cstr(&mut b, name);
        put_cstr(&mut b, sql);
        b.put_u16(0);
        codec::frame(b'P', &b)
    }

    #[test]
    fn statements_dropping_every_prepared_statement_are_seen() {
        for sql in [
            "DEALLOCATE ALL",
            "  discard all;",
            "deallocate prepare all",
            "SET x = 1; DISCARD ALL",
        ] {
            assert!(drops_prepared(sql), "{sql}");
        }
        for sql in [
            "DEALLOCATE _pg3_1",
            "SELECT 'all'",
            "DISCARD PLANS",
            "UPDATE t SET a = 'discard all'",
        ] {
            assert!(!drops_prepared(sql), "{sql}");
        }
    }

    #[test]
    fn statements_are_rewritten_in_place_and_the_rest_kept() {
        let map =
            |sql: &str| (sql == "SELECT a FROM t").then(|| "SELECT b AS a FROM u".to_string());
        let mut msgs = BytesMut::new();
        msgs.extend_from_slice(&parse("s1", "SELECT a FROM t"));
        msgs.extend_from_slice(&codec::frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
        msgs.extend_from_slice(&query("SELECT a FROM t"));
        msgs.extend_from_slice(&codec::frame(b'S', &[]));
        let out = rewrite_statements(&msgs, map);
        let mut expected = BytesMut::new();
        expected.extend_from_slice(&parse("s1", "SELECT b AS a FROM u"));
        expected.extend_from_slice(&codec::frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
        expected.extend_from_slice(&query("SELECT b AS a FROM u"));
        expected.extend_from_slice(&codec::frame(b'S', &[]));
        assert_eq!(&out[..], &expected[..]);
        // Nothing to change: the very same bytes, not a copy.
        let same = query("SELECT 1");
        assert!(matches!(
            rewrite_statements(&same, map),
            std::borrow::Cow::Borrowed(_)
        ));
        // Cut or lying lengths are passed on as they are, never a panic.
        for cut in [
            &msgs[..3],
            &msgs[..9],
            b"Q\0\0\0\x01".as_slice(),
            b"Q\xff\xff\xff\xff",
        ] {
            let _ = rewrite_statements(cut, map);
        }
    }
}
