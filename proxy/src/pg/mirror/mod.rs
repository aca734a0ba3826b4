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
use super::codec::{self, put_cstr, query, Severity};
use super::framed::{Frame, Framed, FramedError};
use super::shadow::ShadowQuery;
use crate::engine::defaults::TableDefaults;
use crate::engine::pin::{pin_transaction_time, PinError};
use crate::engine::route::{self, Route};
use crate::engine::{Classification, Kind};
use crate::shared::coordination::FENCED_IN_TRANSACTION;
use crate::shared::{CancelKey, Shared};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use turnout_control::{Routing, Side};

mod authority;
mod batch;
mod block;
mod checks;
mod commit;
mod copy;
mod extended;
mod hidden;
mod image;
mod logged;
mod outbox;
mod plan;
mod queue;
mod reads;
mod rewrite;
mod simple;
mod swap;

use queue::AsyncMirror;
pub use rewrite::rewrite_for_fuzzing;
use rewrite::{drops_prepared, rewrite_statements};

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
    /// An Execute's row images, as the authority answered them, and their
    /// bytes; past `limits.max_image_bytes` they are dropped (`None`).
    images: Vec<Bytes>,
    image_bytes: Option<usize>,
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
    /// The extended-protocol messages since the last Sync, and their bytes.
    batch: Vec<Msg>,
    batch_bytes: usize,
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
    /// How the authority ended strings when the mirror was last given it.
    told: crate::pg::framed::Lexing,
    /// Row images: what the session prepared and was told ([`checks`]).
    img: checks::ImageState,
    /// The unit's text is not UTF-8 (see `simple_foreign`).
    foreign: bool,
    /// The read [`Self::read_on_mirror`] serves, to run it again on the
    /// authority when it fails on the read target.
    read_query: Option<ShadowQuery>,
    /// The authority's log feeding the mirror ([`logged`]).
    log: logged::LogState,
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
        let mut mirror =
            mirror.map(|m| Framed::new(m.stream, m.leftover, usize::MAX).with_reported(&m.params));
        // What the mirror reported at startup: a difference from the
        // authority's is given to it after the first statement.
        let told = mirror.as_ref().map(Framed::lexing).unwrap_or_default();
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
            routing: shared.coord.routing.snapshot(),
            answered_by: mirror_side.other(),
            client,
            auth: Framed::new(auth.stream, auth.leftover, usize::MAX).with_reported(&auth.params),
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
            batch_bytes: 0,
            run: batch::Run::default(),
            added_parses: VecDeque::new(),
            read_query: None,
            log: logged::LogState {
                on: shared.log.feeds_from(mirror_side.other()),
                ..Default::default()
            },
            unmirrored: None,
            lexing_unsure: false,
            told,
            img: checks::ImageState::default(),
            foreign: false,
            out: BytesMut::new(),
        }
    }

    pub async fn run(mut self) -> End {
        let _counted = self.shared.coord.mirrored_session();
        self.serve().await
    }

    async fn serve(&mut self) -> End {
        let mut stopping = self.shared.coord.stopping.subscribe();
        // Polled beside each read of the client's (see `WhenSet`).
        let mut stop = crate::pg::session::WhenSet::new(stopping.clone());
        let mut paused = self.shared.coord.paused.subscribe();
        let mut busy = false;
        let id = self
            .shared
            .coord
            .next_session
            .fetch_add(1, Ordering::Relaxed);
        let end = loop {
            if busy && self.status == b'I' && self.batch.is_empty() {
                busy = false;
                self.shared.coord.leave_transaction(id);
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
                    _ = &mut stop, if !stop.done() => continue,
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
                            match self
                                .shared
                                .coord
                                .enter_transaction(id, &mut paused, &mut stopping)
                                .await
                            {
                                Ok(routing) => self.routing = routing,
                                Err(msg) => {
                                    let _ = self.client_error(Severity::Fatal, "57P03", &msg).await;
                                    break End::Terminated;
                                }
                            }
                            busy = true;
                        }
                        if let Err(e) = self.adopt_roles().await {
                            let side = self.routing.phase.authority();
                            let msg = self.shared.coord.authority_unreachable(side, &e);
                            let _ = self.client_error(Severity::Fatal, "08006", &msg).await;
                            break End::AuthorityLost(e);
                        }
                        self.log.on = self.shared.log.feeds_from(self.auth_side());
                        if self.mirror_idle() {
                            self.drop_mirror().await;
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
            // Before a statement's text (a Query, or the first Parse of a
            // batch): the mirror's session gets the authority's way of
            // ending strings when they differ (at startup, or after the
            // statement before changed it).
            if matches!(frame.tag, b'Q' | b'P')
                && self.batch.is_empty()
                && self.auth.lexing().backslash_strings != self.told.backslash_strings
            {
                self.follow_setting().await;
            }
            // In a fleet: this instance's lease ended while it handled the
            // statement so far (the process stood still after the
            // transaction began): the fleet may have changed the authority
            // since, so nothing more goes to the one this session runs by.
            if busy && self.shared.coord.lease_ended() {
                let _ = self
                    .client_error(Severity::Fatal, "57P03", FENCED_IN_TRANSACTION)
                    .await;
                break End::Terminated;
            }
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
                    if self.run.skipping {
                        Ok(())
                    } else if let Some(msg) = self.over_limit(&frame) {
                        let _ = self.client_error(Severity::Fatal, "54000", &msg).await;
                        break End::ClientProtocol(msg);
                    } else if let Err(e) = self.check_parse(&frame).await {
                        Err(e)
                    } else {
                        let msg = self.arrive(frame);
                        self.batch.push(msg);
                        Ok(())
                    }
                }
                b'S' => {
                    let started = Instant::now();
                    self.answered_by = self.auth_side();
                    let step = self.sync_batch(frame).await;
                    self.batch.clear();
                    self.batch_bytes = 0;
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
            self.shared.coord.leave_transaction(id);
        }
        end
    }

    fn auth_side(&self) -> Side {
        self.mirror_side.other()
    }

    /// What one client may make turnout hold (`[limits]`): the messages
    /// of a batch before its Sync, and its prepared statements. Past one,
    /// the message that says which; the session ends (nothing of the batch
    /// ran), and other clients are untouched.
    fn over_limit(&mut self, frame: &Frame) -> Option<String> {
        self.batch_bytes += frame.raw.len();
        let shared = self.shared;
        let hit = |limit: &'static str, msg: String| {
            crate::shared::client_limit_hit(limit);
            tracing::warn!(limit, "a client went past a limit; its session ends");
            Some(msg)
        };
        if self.batch_bytes > shared.max_pipeline {
            return hit(
                "max_pipeline_bytes",
                format!(
                    "turnout: more than {} bytes of messages before a Sync (limits.max_pipeline_bytes); send a Sync sooner",
                    shared.max_pipeline
                ),
            );
        }
        if frame.tag == b'P' && self.statements.len() >= shared.max_prepared {
            let name = cstr(frame.body()).map(|(n, _)| n).unwrap_or_default();
            if !name.is_empty() && !self.statements.contains_key(name) {
                return hit(
                    "max_prepared_statements",
                    format!(
                        "turnout: more than {} prepared statements in one session (limits.max_prepared_statements); close the ones no longer used",
                        shared.max_prepared
                    ),
                );
            }
        }
        None
    }

    /// The authority reported that the session's way of ending strings
    /// changed, by whatever path (a function's `set_config`, a read run
    /// there alone): the mirror's session is given the same, now and on
    /// any new connection, so both read the next texts alike.
    async fn follow_setting(&mut self) {
        let now = self.auth.lexing();
        self.told = now;
        let sql = now.setting();
        if self.replay.len() < MAX_REPLAY {
            Arc::make_mut(&mut self.replay).push(sql.to_string());
        }
        if self.mirror.is_some() || self.async_mirror.is_some() {
            let class = Classification {
                fingerprint: sql.to_lowercase(),
                ..Classification::default()
            };
            let fresh = self.status == b'I';
            self.mirror_defer(&query(sql), 1, &class, fresh).await;
        }
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
        let took = started.elapsed();
        self.shared.backfill.latency.record(took);
        crate::engine::counted::record_query(
            self.unit_class.kind().name(),
            self.answered_by,
            took.as_secs_f64(),
        );
    }

    fn route(&self, class: &Classification) -> Route {
        // A multi-statement simple Query runs as one transaction.
        let ctx = route::Context::of(
            self.shared.ddl_policy,
            self.mirror_side,
            self.routing.phase,
            true,
        )
        .with_log(self.log.on);
        route::route(class, &ctx)
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
        // The server's own word (ParameterStatus), however the setting was
        // changed: then every text with a backslash is a write.
        let reported = self.auth.lexing().unsure();
        if reported && !self.lexing_unsure {
            self.lexing_unsure = true;
            tracing::warn!(
                lexing = ?self.auth.lexing(),
                "the server reads this session's SQL text with backslash escapes or an encoding turnout cannot follow: its statements with a backslash are mirrored as writes"
            );
        }
        let class = classifier.classify_in_session(sql, self.lexing_unsure);
        self.img.saw(&class, self.status);
        if class.kind() == Kind::Ddl {
            if self.shared.ddl_policy == turnout_config::DdlPolicy::AuthorityOnly {
                let names = crate::engine::classify::created_relations(
                    crate::engine::SqlDialect::Postgres,
                    sql,
                );
                self.shared.pg.hold(names);
            }
            *self
                .shared
                .pg
                .functions
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        class
    }
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
    collect_capped(framed, usize::MAX).await.map(|(c, _)| c)
}

/// [`collect`], keeping at most `cap` bytes of DataRows (the rest are read
/// and dropped); true when some were dropped.
async fn collect_capped(framed: &mut Framed, cap: usize) -> Result<(Collected, bool), FramedError> {
    let mut rows = 0usize;
    let mut over = false;
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
                return Ok((c, over));
            }
            b'D' => {
                rows += f.raw.len();
                if rows > cap {
                    over = true;
                    continue;
                }
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
