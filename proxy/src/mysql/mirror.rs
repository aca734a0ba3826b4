//! The session engine for MySQL in phases with a mirror (DESIGN.md
//! invariants 1 and 2, the MySQL way). A write runs on the authority first,
//! inside a transaction, with the time fixed by `SET TIMESTAMP`; then on
//! the mirror with the same time and the authority's first generated id
//! (`SET INSERT_ID`), as statement-based replication does; the mirror
//! commits before the authority. Reads and everything else go to the
//! authority; session settings go to both.

use super::packet::{
    encode, err_payload, is_missing_object_code, is_server_failure_code, PacketError, Packets,
};
use super::queue::{self, AsyncMirror, Replay, Work};
use super::response::{self, Answer, Expect, AUTOCOMMIT, IN_TRANS};
use super::session::Legs;
use crate::engine::defaults;
use crate::engine::lockstep::{self, Interrupted, Sides};
use crate::engine::route::{self, Route};
use crate::engine::{Classification, Kind};
use crate::mapping::Translation;
use crate::server::Shared;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};
use turnout_config::{MirrorErrorPolicy, UnsafePolicy};
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::{Routing, Side};

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1A;
const COM_CHANGE_USER: u8 = 0x11;
const COM_RESET_CONNECTION: u8 = 0x1F;
/// The server rolled the whole transaction back.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// Session statements kept to replay on a new mirror connection.
const MAX_REPLAY: usize = 256;

/// How the session ended.
#[derive(Debug)]
pub enum End {
    Quit,
    ClientGone(String),
    AuthorityLost(String),
}

enum Stop {
    Client(PacketError),
    Authority(PacketError),
    /// The read target failed partway through a read's answer.
    ReadTarget(PacketError),
}

type Step = Result<(), Stop>;

/// What a unit of client work needs.
/// A statement the client prepared; it knows it by the authority's id.
struct Prepared {
    /// Its id on the authority (the client's id until a writes flip).
    auth_id: u32,
    sql: String,
    class: Arc<Classification>,
    params: u16,
    /// Its id on the mirror, once prepared there.
    mirror_id: Option<u32>,
    /// The parameter types of the last execute that sent them.
    types: Option<Vec<u8>>,
}

pub struct MyMirror<'a> {
    shared: &'a Shared,
    client: Packets,
    auth: Packets,
    mirror: Option<Packets>,
    /// `mirror.mode = "async"`: the queue that owns the mirror's connection.
    queue: Option<AsyncMirror>,
    mirror_side: Side,
    routing: Arc<Routing>,
    /// The client's transaction is open (by the authority's status).
    in_tx: bool,
    /// Under `mirror.on_error = "fail"`: a write of the open transaction
    /// reached one side alone ([`Self::check_unmirrored`]); its COMMIT
    /// rolls back both sides instead.
    unmirrored_in_tx: Option<String>,
    /// The session may have changed how the server ends strings.
    lexing_unsure: bool,
    /// The side whose answer the client got for the current statement.
    answered_by: Side,
    /// The session's autocommit, by the authority's status.
    autocommit: bool,
    replay: Replay,
    statements: HashMap<u32, Prepared>,
    /// Volatile column defaults per table, from the authority's catalog.
    table_defaults: HashMap<String, defaults::TableDefaults>,
    /// How the session's backend connections are opened.
    legs: Legs,
    /// turnout's connection id for the session (what KILL names).
    id: u32,
    /// The mirror connection's backend thread.
    mirror_thread: Option<u32>,
    /// The current transaction wrote (its reads are not sampled unless
    /// `sampling.in_write_transactions`).
    wrote: bool,
    /// The same as `shared`, owned, for work that outlives a command.
    shared_arc: Arc<Shared>,
    /// The classification of the client's current command (what a
    /// queued piece of it is recorded under).
    unit_class: Arc<Classification>,
}

fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![COM_QUERY];
    p.extend_from_slice(sql.as_bytes());
    p
}

/// Commands as sent on a connection: each its own exchange from sequence 0.
fn commands(list: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in list {
        out.extend_from_slice(&encode(0, c).0);
    }
    out
}

/// Now, as `SET TIMESTAMP` takes it (seconds, microseconds).
fn now_timestamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

/// A client's COMMIT, as the engine's lockstep sequence drives it.
struct MyCommit<'s, 'a> {
    s: &'s mut MyMirror<'a>,
    packet: &'s [u8],
    class: Arc<Classification>,
    sql: String,
}

impl Sides for MyCommit<'_, '_> {
    type Stop = Stop;

    fn mirror_side(&self) -> Side {
        self.s.mirror_side
    }

    fn fingerprint(&self) -> &str {
        &self.class.fingerprint
    }

    async fn settle_mirror(&mut self) -> Option<String> {
        self.s.unmirrored_in_tx.take()
    }

    async fn mirror_commit(&mut self) -> Result<(), String> {
        self.s.mirror_once(self.packet, false).await
    }

    async fn mirror_rollback(&mut self) {
        let _ = self.s.mirror_once(&query("ROLLBACK"), false).await;
    }

    async fn authority_commit(&mut self) -> Result<Option<String>, Interrupted<Stop>> {
        let to_auth = encode(0, &self.s.for_auth(self.packet)).0;
        let a = match self.s.on_auth(&to_auth, Expect::Result).await {
            Ok(a) => a,
            Err(stop) => {
                let authority_lost = match &stop {
                    Stop::Authority(e) => Some(e.to_string()),
                    _ => None,
                };
                return Err(Interrupted {
                    stop,
                    authority_lost,
                });
            }
        };
        if let Err(stop) = self.s.relay(&a).await {
            // The client is gone; what the authority said is kept.
            if let Some(e) = &a.error {
                let side = self.s.mirror_side;
                self.record(lockstep::authority_commit_failed(
                    side,
                    &self.class.fingerprint,
                    e,
                ));
            }
            return Err(Interrupted {
                stop,
                authority_lost: None,
            });
        }
        Ok(a.error)
    }

    async fn fail_both(&mut self, message: String) -> Step {
        self.s
            .on_auth(&encode(0, &query("ROLLBACK")).0, Expect::Result)
            .await?;
        self.s.tell(&err_payload(1180, "HY000", &message)).await
    }

    fn record(&self, d: Divergence) {
        self.s.record_located(d, &self.class, &self.sql);
    }
}

impl<'a> MyMirror<'a> {
    pub fn new(
        shared: &'a Arc<Shared>,
        client: Packets,
        auth: Packets,
        mirror: Option<(Packets, u32)>,
        mirror_side: Side,
        legs: Legs,
        id: u32,
    ) -> Self {
        let (mut mirror, mirror_thread) = match mirror {
            Some((m, t)) => (Some(m), Some(t)),
            None => (None, None),
        };
        let queue = shared.async_queue.map(|_| {
            queue::start(
                shared.clone(),
                mirror_side,
                legs.clone(),
                mirror.take(),
                HashMap::new(),
            )
        });
        MyMirror {
            shared,
            client,
            auth,
            mirror,
            queue,
            mirror_side,
            routing: shared.routing.snapshot(),
            in_tx: false,
            unmirrored_in_tx: None,
            lexing_unsure: false,
            autocommit: true,
            answered_by: mirror_side.other(),
            replay: Replay::default(),
            statements: HashMap::new(),
            table_defaults: HashMap::new(),
            legs,
            id,
            mirror_thread,
            wrote: false,
            shared_arc: shared.clone(),
            unit_class: Arc::default(),
        }
    }

    pub async fn run(mut self) -> End {
        let _counted = self.shared.mirrored_session();
        let mut paused = self.shared.paused.subscribe();
        let mut stopping = self.shared.stopping.subscribe();
        let id = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let mut busy = false;
        let end = loop {
            if busy && !self.in_tx {
                busy = false;
                self.wrote = false;
                self.shared.leave_transaction(id);
            }
            if *stopping.borrow() && !self.in_tx {
                // Between transactions: nothing of the client's is cut.
                break End::Quit;
            }
            let read = tokio::select! {
                r = self.client.read() => r,
                _ = stopping.changed(), if !*stopping.borrow() => continue,
            };
            let packet = match read {
                Ok((_, p)) => p,
                Err(PacketError::TooLarge { max, seq, .. }) => {
                    let _ = self
                        .client
                        .write(seq.wrapping_add(1), &super::packet::too_large_payload(max))
                        .await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.client.stream).await;
                    super::packet::drain(&mut self.client.stream, 64 << 20).await;
                    break End::ClientGone(format!(
                        "a command over limits.max_message_size ({max} bytes)"
                    ));
                }
                Err(e) => break End::ClientGone(e.to_string()),
            };
            if !busy {
                // A transaction (or autocommit statement) starts: held while
                // paused, then run by the routing of now to its end.
                self.routing = self
                    .shared
                    .enter_transaction(id, &mut paused, &mut stopping)
                    .await;
                busy = true;
                if let Err(e) = self.adopt_roles().await {
                    let side = self.routing.phase.authority();
                    let msg = self.shared.authority_unreachable(side, &e);
                    let _ = self
                        .client
                        .write(1, &err_payload(1105, "HY000", &msg))
                        .await;
                    break End::AuthorityLost(e);
                }
            }
            if let Some(end) = self.command(packet).await {
                break end;
            }
        };
        if busy {
            self.shared.leave_transaction(id);
        }
        end
    }

    /// Handles one client command; `Some` when the session ends.
    async fn command(&mut self, packet: Vec<u8>) -> Option<End> {
        let Some(&command) = packet.first() else {
            let e = err_payload(1047, "08S01", "turnout: empty command packet");
            let _ = self.client.write(1, &e).await;
            return None;
        };
        self.unit_class = self.command_class(&packet);
        let step = match command {
            COM_QUIT => {
                let _ = self.auth.write(0, &packet).await;
                if let Some(m) = self.mirror.as_mut() {
                    let _ = m.write(0, &packet).await;
                }
                return Some(End::Quit);
            }
            COM_QUERY | COM_INIT_DB | COM_STMT_PREPARE
                if self.database_refusal(&packet).is_some() =>
            {
                let msg = self.database_refusal(&packet).unwrap_or_default();
                match self.tell(&err_payload(1049, "42000", &msg)).await {
                    Ok(()) => return None,
                    Err(_) => return Some(End::ClientGone("client connection lost".into())),
                }
            }
            COM_QUERY => {
                let sql = String::from_utf8_lossy(&packet[1..]).into_owned();
                if let Some(kill) = super::kill::parse(&sql) {
                    let answer = super::kill::run(self.shared, &self.legs.user, kill).await;
                    return match self.tell(&answer).await {
                        Ok(()) => None,
                        Err(_) => Some(End::ClientGone("client connection lost".into())),
                    };
                }
                let class = self.classify(&sql);
                self.statement(&packet, &class, &sql).await
            }
            COM_INIT_DB => self.both(&packet, true).await,
            COM_STMT_PREPARE => self.prepare(&packet).await,
            COM_STMT_EXECUTE => self.execute(&packet).await,
            COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE => self.no_answer(&packet).await,
            COM_STMT_RESET => self.reset(&packet).await,
            COM_RESET_CONNECTION => self.reset_connection(&packet).await,
            COM_CHANGE_USER => {
                let msg = "turnout: COM_CHANGE_USER is not supported while writes are mirrored; reconnect as the other user instead";
                self.tell(&err_payload(1047, "08S01", msg)).await
            }
            _ => self.authority(&packet).await.map(|_| ()),
        };
        match step {
            Ok(()) => None,
            Err(Stop::Client(e)) => Some(End::ClientGone(e.to_string())),
            Err(Stop::ReadTarget(e)) => {
                // Part of the answer went out: the client cannot be told
                // cleanly, so its connection ends.
                warn!(side = %self.mirror_side, error = %e, "read target lost partway through a read; session closed");
                Some(End::AuthorityLost(e.to_string()))
            }
            Err(Stop::Authority(e)) => {
                // The client's connection ends as the backend's did, with
                // no ERR packet: its library reports the connection lost
                // (2013/2006), what reconnect logic waits for, as in
                // passthrough. The log names the backend and the cause.
                let side = self.mirror_side.other();
                self.shared.authority_failed(side);
                Some(End::AuthorityLost(e.to_string()))
            }
        }
    }

    fn route(&self, class: &Classification) -> Route {
        // Each statement of a multi-statement text commits on its own.
        let ctx = route::Context::of(
            self.shared.ddl_policy,
            self.mirror_side,
            self.routing.phase,
            false,
        );
        route::route(class, &ctx)
    }

    /// A COM_QUERY, or an execute (`packet`) of a prepared statement.
    async fn statement(&mut self, packet: &[u8], class: &Arc<Classification>, sql: &str) -> Step {
        self.unit_class = class.clone();
        let started = std::time::Instant::now();
        self.answered_by = self.mirror_side.other();
        let step = self.run_statement(packet, class, sql).await;
        self.shared.backfill.latency.record(started.elapsed());
        let (kind, side) = (class.kind().name(), self.answered_by.name());
        metrics::counter!("turnout_queries_total", "kind" => kind, "side" => side).increment(1);
        metrics::histogram!("turnout_query_seconds", "kind" => kind, "side" => side)
            .record(started.elapsed().as_secs_f64());
        step
    }

    /// Why `sql` (a client's statement, written for old) cannot run on the
    /// authority when that is new; `None` when it can.
    fn not_for_authority(&self, sql: &str, prepared: bool) -> Option<String> {
        if self.mirror_side == Side::New {
            return None;
        }
        self.shared.mapping().not_for_new(sql, prepared)
    }

    async fn run_statement(&mut self, packet: &[u8], class: &Classification, sql: &str) -> Step {
        if class.kind() == Kind::Ddl {
            // Column defaults may have changed.
            self.table_defaults.clear();
        }
        let prepared = packet.first() == Some(&COM_STMT_EXECUTE);
        if let Some(reason) = self.not_for_authority(sql, prepared) {
            // A read is served by old, which mirroring keeps current.
            let read = matches!(class.kind(), Kind::Read) && class.statements.len() == 1;
            if read && self.mirroring() && !prepared {
                let (_, side) = self.read_on_mirror(packet, 0).await?;
                self.answered_by = side;
                return Ok(());
            }
            let msg = format!(
                "turnout: this statement cannot be translated for new, which is the authority now: {reason}"
            );
            return self.tell(&err_payload(1235, "42000", &msg)).await;
        }
        let route = self.route(class);
        if matches!(route, Route::Write | Route::Unwrapped) {
            if let Some(reason) = class.unsafe_reason() {
                if self.shared.unsafe_policy == UnsafePolicy::Fail {
                    let msg = format!(
                        "turnout: refused, not safe to mirror: {reason} (mirror.on_unsafe = fail)"
                    );
                    return self.tell(&err_payload(1290, "HY000", &msg)).await;
                }
                self.record(DivergenceKind::UnsafeStatement, class, reason, sql);
            }
            // Through the schema mapping: what cannot be translated runs on
            // the authority alone, recorded (or refused).
            match self
                .shared
                .mapping()
                .toward(self.mirror_side)
                .translate(sql)
            {
                Err(reason) => {
                    let reason = format!("mapping: {reason}");
                    if self.shared.unsafe_policy == UnsafePolicy::Fail {
                        let msg = format!("turnout: refused: {reason} (mirror.on_unsafe = fail)");
                        return self.tell(&err_payload(1290, "HY000", &msg)).await;
                    }
                    self.record(DivergenceKind::UnsafeStatement, class, &reason, sql);
                    return self.authority(packet).await.map(|_| ());
                }
                Ok(Translation::Skip) => return self.authority(packet).await.map(|_| ()),
                Ok(_) => {}
            }
        }
        let read = matches!(class.kind(), Kind::Read) && class.statements.len() == 1;
        if route == Route::Authority && read {
            let from_mirror = self.routing.phase.read_target() == self.mirror_side;
            let permit = self.sample_permit(packet, class);
            let keep = match permit {
                Some(_) => self.shared.sampler.max_result_bytes,
                None => 0,
            };
            let (answer, side) = if from_mirror {
                let (a, side) = self.read_on_mirror(packet, keep).await?;
                if side == self.mirror_side
                    && packet.first() == Some(&COM_QUERY)
                    && a.error_code.is_some_and(is_missing_object_code)
                {
                    super::shadow::confirm_read_failure(
                        self.shared_arc.clone(),
                        super::shadow::Sample {
                            fingerprint: class.fingerprint.clone(),
                            sql: sql.to_string(),
                            target: side,
                            shadow: side.other(),
                            rows: Default::default(),
                            legs: self.legs.clone(),
                            settings: self.replay.clone(),
                        },
                    );
                }
                (a, side)
            } else {
                let a = self.stream_from_auth(packet, keep).await?;
                (a, self.mirror_side.other())
            };
            self.check_unmirrored(&answer, side, class, packet);
            self.answered_by = side;
            if let Some(permit) = permit {
                self.sample(class, sql, &answer, side, permit);
            }
            return Ok(());
        }
        if matches!(route, Route::Write | Route::Unwrapped) {
            self.wrote = true;
        }
        if route == Route::Authority {
            let was_in_tx = self.in_tx;
            if let Some(a) = self.authority(packet).await? {
                self.check_unmirrored(&a, self.mirror_side.other(), class, packet);
            }
            if was_in_tx && !self.in_tx {
                self.implicit_commit().await;
            }
            return Ok(());
        }
        match route {
            Route::Authority => self.authority(packet).await.map(|_| ()),
            Route::Both => {
                let keep = class.kind() == Kind::Session && !self.in_tx;
                self.both(packet, keep).await
            }
            Route::Commit => self.commit(packet).await,
            Route::Write => match self.volatile_defaults(packet, class, sql).await? {
                Defaults::Kept => self.write(packet, sql).await,
                Defaults::Written(sql) => self.write(&query(&sql), &sql).await,
                Defaults::Refused(msg) => self.tell(&err_payload(1290, "HY000", &msg)).await,
            },
            Route::Unwrapped => self.unwrapped(packet).await,
            Route::MirrorOnly => self.mirror_only(packet).await,
            Route::Reject => {
                let msg = "turnout: schema changes are refused while writes are mirrored (mirror.ddl = reject)";
                self.tell(&err_payload(1290, "HY000", msg)).await
            }
        }
    }

    /// An INSERT that leaves columns to volatile defaults (`UUID()`,
    /// `RAND()`, `UUID_SHORT()`, `SYSDATE()`, which statement context does
    /// not carry): a text statement gets the values evaluated on the
    /// authority first and written in, so both sides insert the same; a
    /// prepared one is recorded as unsafe (or refused under
    /// `mirror.on_unsafe = "fail"`).
    async fn volatile_defaults(
        &mut self,
        packet: &[u8],
        class: &Classification,
        sql: &str,
    ) -> Result<Defaults, Stop> {
        let Some(table) = class.insert_table.as_deref() else {
            return Ok(Defaults::Kept);
        };
        if class.statements.len() != 1 {
            return Ok(Defaults::Kept);
        }
        let found = self.volatile_columns(table).await?;
        let reason = match defaults::plan_mysql(sql, &found) {
            Ok(None) => return Ok(Defaults::Kept),
            Ok(Some(plan)) if packet.first() == Some(&COM_QUERY) => {
                let values = crate::backend::mysql::rows(&mut self.auth, &plan.values_query())
                    .await
                    .map_err(String::from);
                match values.and_then(|rows| plan.apply(sql, &rows)) {
                    Ok(written) => return Ok(Defaults::Written(written)),
                    Err(e) => format!("generated values could not be applied: {e}"),
                }
            }
            Ok(Some(plan)) => format!(
                "a prepared INSERT leaves {} to volatile defaults; their values differ on the mirror",
                plan.missing_columns()
            ),
            Err(reason) => reason.to_string(),
        };
        if self.shared.unsafe_policy == UnsafePolicy::Fail {
            return Ok(Defaults::Refused(format!(
                "turnout: refused, not safe to mirror: {reason} (mirror.on_unsafe = fail)"
            )));
        }
        self.record(DivergenceKind::UnsafeStatement, class, &reason, sql);
        Ok(Defaults::Kept)
    }

    /// `table`'s columns with volatile defaults, asked of the authority
    /// once per session (under old's names when new is the authority).
    async fn volatile_columns(&mut self, table: &str) -> Result<defaults::TableDefaults, Stop> {
        if let Some(d) = self.table_defaults.get(table) {
            return Ok(d.clone());
        }
        let mapped = match self.mirror_side {
            Side::Old => self.shared.mapping().table_on_new(table),
            Side::New => None,
        };
        let on_authority = mapped.as_ref().map_or(table, |(t, _)| t.as_str());
        let rows = crate::backend::mysql::rows(
            &mut self.auth,
            &defaults::mysql_catalog_query(on_authority),
        )
        .await;
        let Ok(rows) = rows else {
            // Not cached: asked again next time.
            return Ok(defaults::TableDefaults::default());
        };
        let rows = match &mapped {
            Some((_, back)) => back.rows_under_old_names(rows),
            None => rows,
        };
        let d = defaults::mysql_from_catalog_rows(&rows);
        self.table_defaults.insert(table.to_string(), d.clone());
        Ok(d)
    }

    /// A read in phase `reads_new`: served by the mirror's side (inside the
    /// same transaction there, so it sees this session's writes). When the
    /// mirror cannot be reached the authority serves it.
    async fn read_on_mirror(&mut self, packet: &[u8], keep: usize) -> Result<(Answer, Side), Stop> {
        if self.queue.is_some() {
            // Behind this session's queued writes, so it sees them.
            match self.ask_queued(packet).await {
                Ok(a) => {
                    if a.error_code.is_some_and(is_server_failure_code) {
                        self.read_target_failed();
                    }
                    self.relay(&a).await?;
                    return Ok((a, self.mirror_side));
                }
                Err(e) => {
                    self.read_target_failed();
                    warn!(side = %self.mirror_side, reason = %e, "read served by the authority: the read target failed");
                    let a = self.stream_from_auth(packet, keep).await?;
                    return Ok((a, self.mirror_side.other()));
                }
            }
        }
        if let Err(e) = self.send_to_mirror(packet).await {
            self.mirror = None;
            self.read_target_failed();
            warn!(side = %self.mirror_side, reason = %e, "read served by the authority: the read target cannot be reached");
            let a = self.stream_from_auth(packet, keep).await?;
            return Ok((a, self.mirror_side.other()));
        }
        let Some(m) = self.mirror.as_mut() else {
            return Err(Stop::ReadTarget(PacketError::Closed));
        };
        match response::stream(m, Expect::Result, &mut self.client.stream, keep).await {
            Ok(a) => {
                if a.error_code.is_some_and(is_server_failure_code) {
                    self.read_target_failed();
                }
                Ok((a, self.mirror_side))
            }
            Err(response::StreamError::Sink(e)) => Err(Stop::Client(e.into())),
            Err(response::StreamError::Source { error, sent }) => {
                self.mirror = None;
                self.read_target_failed();
                if sent {
                    return Err(Stop::ReadTarget(error));
                }
                warn!(side = %self.mirror_side, reason = %error, "read served by the authority: the read target failed");
                let a = self.stream_from_auth(packet, keep).await?;
                Ok((a, self.mirror_side.other()))
            }
        }
    }

    /// Sends `packet` to the mirror, connecting first when the session is
    /// between transactions; `Err` says why it could not.
    async fn send_to_mirror(&mut self, packet: &[u8]) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        if self.mirror.is_none() && !self.in_tx {
            self.reconnect_mirror().await?;
        }
        let p = self.mirror_packet(packet).await?;
        let m = self.mirror.as_mut().ok_or("no connection")?;
        m.stream
            .write_all(&encode(0, &p).0)
            .await
            .map_err(|e| e.to_string())
    }

    /// The classification a client's command is recorded under when a
    /// piece of it is queued for the mirror (a query's own is set when it
    /// runs, by [`Self::statement`]).
    fn command_class(&mut self, packet: &[u8]) -> Arc<Classification> {
        match packet.first() {
            Some(&COM_INIT_DB) => {
                let db = String::from_utf8_lossy(&packet[1..]).replace('`', "``");
                self.classify(&format!("USE `{db}`"))
            }
            Some(&COM_STMT_PREPARE) => {
                let sql = String::from_utf8_lossy(&packet[1..]).into_owned();
                self.classify(&sql)
            }
            Some(
                &(COM_STMT_EXECUTE | COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET),
            ) => statement_id(packet)
                .and_then(|id| self.statements.get(&id))
                .map(|s| s.class.clone())
                .unwrap_or_default(),
            _ => Arc::default(),
        }
    }

    /// Whether the session has a mirror to send to (a connection, or the
    /// async queue that owns one).
    fn mirroring(&self) -> bool {
        self.mirror.is_some() || self.queue.is_some()
    }

    /// Async mode: runs the client's `packet` on the mirror behind this
    /// session's queued work and waits for its answer.
    async fn ask_queued(&mut self, packet: &[u8]) -> Result<Answer, String> {
        let p = self.mirror_packet(packet).await?;
        let fresh = !self.in_tx;
        let Some(q) = self.queue.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let reply = q
            .ask(
                Work::Commands(vec![p]),
                &Arc::default(),
                fresh,
                &self.replay,
            )
            .await?;
        if let Some(why) = reply.refused {
            return Err(why);
        }
        reply
            .answers
            .into_iter()
            .next()
            .ok_or_else(|| format!("no answer from {}", self.mirror_side))
    }

    /// A statement a rule (`mirror.rules` action `old` or `new`) sends to
    /// the mirror's side alone: the client gets that side's answer, or an
    /// error naming the side when it cannot run it.
    async fn mirror_only(&mut self, packet: &[u8]) -> Result<(), Stop> {
        if self.queue.is_some() {
            match self.ask_queued(packet).await {
                Ok(a) => {
                    self.answered_by = self.mirror_side;
                    return self.relay(&a).await;
                }
                Err(e) => {
                    let msg = format!(
                        "turnout: a rule (mirror.rules) sends this statement to {} alone, which could not run it: {e}",
                        self.mirror_side
                    );
                    return self.tell(&err_payload(1105, "HY000", &msg)).await;
                }
            }
        }
        let failed = match self.send_to_mirror(packet).await {
            Err(e) => e,
            Ok(()) => {
                let Some(m) = self.mirror.as_mut() else {
                    return Err(Stop::ReadTarget(PacketError::Closed));
                };
                match response::stream(m, Expect::Result, &mut self.client.stream, 0).await {
                    Ok(_) => {
                        self.answered_by = self.mirror_side;
                        return Ok(());
                    }
                    Err(response::StreamError::Sink(e)) => return Err(Stop::Client(e.into())),
                    Err(response::StreamError::Source { error, sent: true }) => {
                        self.mirror = None;
                        return Err(Stop::ReadTarget(error));
                    }
                    Err(response::StreamError::Source { error, .. }) => error.to_string(),
                }
            }
        };
        self.mirror = None;
        let msg = format!(
            "turnout: a rule (mirror.rules) sends this statement to {} alone, which could not run it: {failed}",
            self.mirror_side
        );
        self.tell(&err_payload(1105, "HY000", &msg)).await
    }

    /// The side serving reads (phase `reads_new`) failed one: counted for
    /// the watch window. Only its own failures count (connection lost or
    /// refused, shutdown), never an error the client's SQL caused.
    fn read_target_failed(&self) {
        self.shared
            .mirror_read_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A permit to compare this read on the other side, when it is sampled
    /// (text-protocol reads; reads in a transaction that wrote only with
    /// `sampling.in_write_transactions`).
    fn sample_permit(&self, packet: &[u8], class: &Classification) -> Option<OwnedSemaphorePermit> {
        let sampler = &self.shared.sampler;
        if self.routing.phase.mirror().is_none()
            || packet.first() != Some(&COM_QUERY)
            || (self.wrote && !sampler.in_write_transactions)
            || class.no_tables
        {
            // (A read of no table, such as a driver's `SELECT @@socket`, has
            // no data to compare: servers answer it differently by design.)
            return None;
        }
        sampler.choose(&class.fingerprint)
    }

    /// A sampled read the client got from `target`: compared on the other
    /// side off the client's path.
    fn sample(
        &self,
        class: &Classification,
        sql: &str,
        answer: &Answer,
        target: Side,
        permit: OwnedSemaphorePermit,
    ) {
        let sampler = &self.shared.sampler;
        if answer.error.is_some() {
            return;
        }
        if answer.packets.is_empty() {
            sampler.log.skipped(&class.fingerprint, "result_too_large");
            return;
        }
        let rows = match super::shadow::result_set(answer) {
            Ok(r) => r,
            Err(e) => {
                sampler.log.skipped(&class.fingerprint, e.skip_reason());
                return;
            }
        };
        super::shadow::spawn(
            self.shared_arc.clone(),
            super::shadow::Sample {
                fingerprint: class.fingerprint.clone(),
                sql: sql.to_string(),
                target,
                shadow: target.other(),
                rows,
                legs: self.legs.clone(),
                settings: self.replay.clone(),
            },
            permit,
        );
    }

    /// Sends the client ERR/OK `payload` as the answer to its command.
    async fn tell(&mut self, payload: &[u8]) -> Step {
        self.client
            .write(1, payload)
            .await
            .map(|_| ())
            .map_err(Stop::Client)
    }

    async fn relay(&mut self, answer: &Answer) -> Step {
        use tokio::io::AsyncWriteExt;
        let out = answer.encode();
        self.client
            .stream
            .write_all(&out)
            .await
            .map_err(|e| Stop::Client(e.into()))?;
        self.client
            .stream
            .flush()
            .await
            .map_err(|e| Stop::Client(e.into()))
    }

    async fn on_auth(&mut self, bytes: &[u8], expect: Expect) -> Result<Answer, Stop> {
        use tokio::io::AsyncWriteExt;
        self.auth
            .stream
            .write_all(bytes)
            .await
            .map_err(|e| Stop::Authority(e.into()))?;
        let a = response::read(&mut self.auth, expect)
            .await
            .map_err(Stop::Authority)?;
        self.note_auth(&a).await;
        Ok(a)
    }

    /// Follows the authority's transaction state from its answer. An ERR
    /// says nothing of it, except a deadlock: the server rolled the whole
    /// transaction back, so the mirror's part of it goes too (or a later
    /// BEGIN would commit it there).
    async fn note_auth(&mut self, a: &Answer) {
        if a.error_code.is_some_and(is_server_failure_code) {
            self.shared.authority_failed(self.mirror_side.other());
        }
        if a.status_known {
            self.in_tx = a.status & IN_TRANS != 0;
            self.autocommit = a.status & AUTOCOMMIT != 0;
            return;
        }
        if a.error_code == Some(ER_LOCK_DEADLOCK) && self.in_tx {
            self.in_tx = false;
            if self.mirroring() {
                // A failed rollback drops the connection (and with it the
                // mirror's part of the transaction).
                let _ = self.on_mirror(&[&query("ROLLBACK")], false).await;
            }
        }
    }

    /// A statement the mirror did not run ended the authority's transaction
    /// (MySQL commits implicitly before `ANALYZE TABLE`, schema changes and
    /// the like): the mirror commits its part too.
    async fn implicit_commit(&mut self) {
        if !self.mirroring() {
            return;
        }
        let committed = self
            .on_mirror(&[&query("COMMIT")], false)
            .await
            .and_then(first_error);
        if let Err(e) = committed {
            self.mirror_failed("COMMIT", &e);
        }
    }

    /// Reads `n` answers from the authority after sending `bytes`.
    async fn on_auth_n(&mut self, bytes: &[u8], n: usize) -> Result<Vec<Answer>, Stop> {
        use tokio::io::AsyncWriteExt;
        self.auth
            .stream
            .write_all(bytes)
            .await
            .map_err(|e| Stop::Authority(e.into()))?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let a = response::read(&mut self.auth, Expect::Result)
                .await
                .map_err(Stop::Authority)?;
            self.note_auth(&a).await;
            out.push(a);
        }
        Ok(out)
    }

    /// The classification of a client's statement. A statement that may
    /// change `sql_mode` (and with it backslash escapes) makes every later
    /// text with a backslash a write (see
    /// [`crate::engine::Classifier::classify_in_session`]).
    fn classify(&mut self, sql: &str) -> Arc<Classification> {
        let classifier = &self.shared.classifier;
        self.lexing_unsure |= classifier.changes_lexing(sql);
        classifier.classify_in_session(sql, self.lexing_unsure)
    }

    /// Runs `packet` on the authority alone and relays the answer; the
    /// answer of a statement (not of a PREPARE) is returned.
    async fn authority(&mut self, packet: &[u8]) -> Result<Option<Answer>, Stop> {
        let expect = if packet.first() == Some(&COM_STMT_PREPARE) {
            Expect::Prepare
        } else {
            Expect::Result
        };
        if expect == Expect::Prepare {
            let a = self
                .on_auth(&encode(0, &self.for_auth(packet)).0, expect)
                .await?;
            return self.relay(&a).await.map(|_| None);
        }
        self.stream_from_auth(packet, 0).await.map(Some)
    }

    /// The server's own answer is the ground truth: a statement turnout ran
    /// on `ran_on` alone as a read (or as something that changes no rows)
    /// whose OK packets report affected rows is a divergence, recorded with
    /// its table and fingerprint; its shape is a write from then on; under
    /// `mirror.on_error = "fail"` an open transaction fails at its COMMIT
    /// (rolled back on both sides). Rules that keep a shape on one side on
    /// purpose (`never_mirror`, `old`, `new`) are left alone.
    fn check_unmirrored(
        &mut self,
        a: &Answer,
        ran_on: Side,
        class: &Classification,
        packet: &[u8],
    ) {
        if a.affected_total == 0
            || class.ruled_to_one_side()
            || self.routing.phase.mirror().is_none()
            || !matches!(class.kind(), Kind::Read | Kind::LockingRead | Kind::Other)
        {
            return;
        }
        let (mut d, detail) = self.shared.unmirrored_write(
            &class.fingerprint,
            ran_on,
            &format!("reported {} affected row(s)", a.affected_total),
        );
        let sql = self.packet_sql(packet);
        let at = crate::engine::locate::locate_text(&sql.replace('`', "\""));
        d.table = at.table.or_else(|| class.insert_table.clone());
        d.key = at.key;
        if self.shared.records.log_statements {
            d.statement = Some(sql);
        }
        self.shared.records.divergence(d);
        if self.shared.mirror_policy == MirrorErrorPolicy::Fail && self.in_tx {
            self.unmirrored_in_tx.get_or_insert(detail);
        }
    }

    /// Runs `packet` on the authority and streams its answer to the client;
    /// the answer's packets are kept when they fit in `keep` bytes.
    async fn stream_from_auth(&mut self, packet: &[u8], keep: usize) -> Result<Answer, Stop> {
        use tokio::io::AsyncWriteExt;
        self.auth
            .stream
            .write_all(&encode(0, &self.for_auth(packet)).0)
            .await
            .map_err(|e| Stop::Authority(e.into()))?;
        let a = response::stream(
            &mut self.auth,
            Expect::Result,
            &mut self.client.stream,
            keep,
        )
        .await
        .map_err(|e| match e {
            response::StreamError::Source { error, .. } => Stop::Authority(error),
            response::StreamError::Sink(e) => Stop::Client(e.into()),
        })?;
        self.note_auth(&a).await;
        Ok(a)
    }

    /// The client's command as the authority knows it: a statement command
    /// under the authority's id for the statement.
    fn for_auth(&self, packet: &[u8]) -> Vec<u8> {
        // Clients write for old: when new is the authority, statements go
        // through the schema mapping (found translatable first, by
        // `not_for_authority`), and the database is new's.
        if matches!(packet.first(), Some(&(COM_QUERY | COM_STMT_PREPARE)))
            && self.mirror_side == Side::Old
        {
            let sql = String::from_utf8_lossy(&packet[1..]);
            if let Ok(Translation::Sql(mapped)) = self.shared.mapping().translate(&sql) {
                let mut out = vec![packet[0]];
                out.extend_from_slice(mapped.as_bytes());
                return self.with_database(Side::New, out);
            }
        }
        if matches!(
            packet.first(),
            Some(&(COM_QUERY | COM_STMT_PREPARE | COM_INIT_DB))
        ) {
            return self.with_database(self.mirror_side.other(), packet.to_vec());
        }
        let mut out = packet.to_vec();
        let stmt_command = matches!(
            packet.first(),
            Some(
                &(COM_STMT_EXECUTE
                    | COM_STMT_SEND_LONG_DATA
                    | COM_STMT_CLOSE
                    | COM_STMT_RESET
                    | 0x1C)
            )
        );
        if stmt_command {
            if let Some(s) = statement_id(packet).and_then(|id| self.statements.get(&id)) {
                out[1..5].copy_from_slice(&s.auth_id.to_le_bytes());
                if packet[0] == COM_STMT_EXECUTE {
                    // A side that became the authority may not have seen
                    // the types an earlier execute sent.
                    out = with_types(&out, s.params, s.types.as_deref());
                }
            }
        }
        out
    }

    /// Between transactions, makes the connections' roles match the
    /// routing: after a writes flip (or its rollback) the mirror's
    /// connection is the authority's and the other way round; in a phase
    /// without a mirror (`finalized`) the mirror's connection closes.
    async fn adopt_roles(&mut self) -> Result<(), String> {
        let phase = self.routing.phase;
        if phase.authority() != self.mirror_side.other() {
            // An async queue is empty here (the flip's barrier waited for
            // it); dropped, its task closes its connection, and the
            // promoted side gets a connection of the session's own.
            self.queue = None;
            if self.mirror.is_none() {
                self.reconnect_mirror().await?;
            }
            let promoted = self.mirror.take().ok_or("no connection")?;
            let demoted = std::mem::replace(&mut self.auth, promoted);
            self.mirror = Some(demoted);
            self.mirror_side = self.mirror_side.other();
            // KILL now reaches the promoted side's thread.
            if let Some(mut r) = self.shared.mysql_sessions.get_mut(&self.id) {
                let promoted_thread = self.mirror_thread.unwrap_or(0);
                self.mirror_thread = Some(r.thread);
                r.thread = promoted_thread;
                r.side = self.mirror_side.other();
            }
            // The promoted side knows each statement by its mirror id, or
            // gets it prepared now.
            let ids: Vec<u32> = self.statements.keys().copied().collect();
            for id in ids {
                let Some(s) = self.statements.get(&id) else {
                    continue;
                };
                let (old_auth, known, sql) = (s.auth_id, s.mirror_id, s.sql.clone());
                let new_auth = match known {
                    Some(m) => m,
                    None => {
                        let mut p = vec![COM_STMT_PREPARE];
                        p.extend_from_slice(sql.as_bytes());
                        // Written for old; translated when new takes over.
                        let p = self.for_auth(&p);
                        self.auth.write(0, &p).await.map_err(|e| e.to_string())?;
                        let a = response::read(&mut self.auth, Expect::Prepare)
                            .await
                            .map_err(|e| e.to_string())?;
                        match a.statement {
                            Some((m, _)) => m,
                            None => {
                                warn!(statement = %sql, error = ?a.error, "prepared statement could not be prepared on the new authority");
                                u32::MAX
                            }
                        }
                    }
                };
                if let Some(s) = self.statements.get_mut(&id) {
                    s.auth_id = new_auth;
                    s.mirror_id = Some(old_auth);
                    // The demoted side saw the types of earlier executes.
                }
            }
            if self.shared.async_queue.is_some() && phase.mirror().is_some() {
                self.queue_demoted();
            }
        }
        if phase.mirror().is_none() {
            self.queue = None;
            if let Some(mut m) = self.mirror.take() {
                let _ = m.write(0, &[COM_QUIT]).await;
            }
        }
        Ok(())
    }

    /// Async mode, at a writes flip: the demoted authority's connection
    /// goes to a new queue, which knows the statements prepared on it by
    /// the client's ids.
    fn queue_demoted(&mut self) {
        let mut known = HashMap::new();
        let ids: Vec<u32> = self.statements.keys().copied().collect();
        for id in ids {
            let Some(s) = self.statements.get(&id) else {
                continue;
            };
            let sql = self.prepared_for_mirror(s.sql.clone());
            known.insert(
                id,
                queue::Known {
                    sql,
                    mirror_id: s.mirror_id,
                },
            );
            if let Some(s) = self.statements.get_mut(&id) {
                s.mirror_id = None;
            }
        }
        self.queue = Some(queue::start(
            self.shared_arc.clone(),
            self.mirror_side,
            self.legs.clone(),
            self.mirror.take(),
            known,
        ));
    }

    /// Runs `list` (command payloads, each its own exchange) on the mirror
    /// and reads their answers. `Err`: what went wrong, in words (the
    /// connection is dropped when its state is unknown). In async mode the
    /// commands are queued and no answer comes back.
    async fn on_mirror(&mut self, list: &[&[u8]], fresh: bool) -> Result<Vec<Answer>, String> {
        use tokio::io::AsyncWriteExt;
        if let Some(q) = self.queue.as_mut() {
            let in_transaction = self.in_tx && !queue::ends_transaction(list);
            let work = Work::Commands(list.iter().map(|c| c.to_vec()).collect());
            q.push(work, &self.unit_class, fresh, in_transaction, &self.replay)
                .await;
            return Ok(Vec::new());
        }
        let (bytes, n) = (commands(list), list.len());
        if self.mirror.is_none() {
            if !fresh {
                return Err(format!(
                    "no connection to {} in this transaction",
                    self.mirror_side
                ));
            }
            self.reconnect_mirror().await?;
        }
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let run = async {
            m.stream.write_all(&bytes).await?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(response::read(m, Expect::Result).await?);
            }
            Ok::<_, PacketError>(out)
        };
        match tokio::time::timeout(self.shared.mirror_timeout, run).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.mirror = None;
                Err(format!("connection to {} lost: {e}", self.mirror_side))
            }
            Err(_) => {
                self.mirror = None;
                Err(format!(
                    "{} did not answer within {} ms (mirror.statement_timeout_ms)",
                    self.mirror_side,
                    self.shared.mirror_timeout.as_millis()
                ))
            }
        }
    }

    async fn reconnect_mirror(&mut self) -> Result<(), String> {
        let legs = &self.legs;
        let target = &self.shared.session_target(self.mirror_side, &legs.user);
        let (mut m, thread) = super::session::connect(
            self.shared,
            target,
            legs.caps,
            legs.collation,
            legs.db.as_deref(),
        )
        .await?;
        self.mirror_thread = Some(thread);
        let databases = self.shared.databases();
        for p in self.replay.iter() {
            let mapped = databases.packet_for(self.mirror_side, p).ok().flatten();
            let p = mapped.as_deref().unwrap_or(p);
            m.write(0, p).await.map_err(|e| e.to_string())?;
            response::read(&mut m, Expect::Result)
                .await
                .map_err(|e| e.to_string())?;
        }
        for s in self.statements.values_mut() {
            s.mirror_id = None;
        }
        self.mirror = Some(m);
        Ok(())
    }

    /// Session settings and transaction control: the authority answers,
    /// the mirror follows. `keep`: a setting, replayed on a new mirror
    /// connection.
    async fn both(&mut self, packet: &[u8], keep: bool) -> Step {
        if self.routing.phase.mirror().is_none() {
            return self.authority(packet).await.map(|_| ());
        }
        let fresh = !self.in_tx;
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Result)
            .await?;
        if a.error.is_none() {
            if keep && self.replay.len() < MAX_REPLAY {
                Arc::make_mut(&mut self.replay).push(packet.to_vec());
            }
            if let Err(e) = self.mirror_once(packet, fresh).await {
                self.mirror_failed(&self.packet_sql(packet), &e);
            }
        }
        self.relay(&a).await
    }

    /// Runs the client's command `packet` on the mirror (an execute under
    /// the mirror's statement id) and reads its answer.
    async fn mirror_once(&mut self, packet: &[u8], fresh: bool) -> Result<(), String> {
        if self.mirror.is_none() && self.queue.is_none() && fresh {
            self.reconnect_mirror().await?;
        }
        let p = self.mirror_packet(packet).await?;
        self.on_mirror(&[&p], fresh).await.and_then(first_error)
    }

    /// COMMIT: the mirror commits first, then the authority (the engine's
    /// lockstep sequence).
    async fn commit(&mut self, packet: &[u8]) -> Step {
        let policy = self.shared.mirror_policy;
        let records = self.shared.records.clone();
        let sql = self.packet_sql(packet);
        let class = self.shared.classifier.classify(&sql);
        let mut sides = MyCommit {
            s: self,
            packet,
            class,
            sql,
        };
        lockstep::commit(&mut sides, policy, &records).await
    }

    /// The authority's connection was lost during a COMMIT the mirror had
    /// already made: the transaction may be on the mirror's side alone.
    fn authority_lost_at_commit(&self, sql: &str, e: &Stop) {
        if let Stop::Authority(e) = e {
            let class = self.shared.classifier.classify(sql);
            let d = lockstep::authority_lost_at_commit(
                self.mirror_side,
                &class.fingerprint,
                &e.to_string(),
            );
            self.record_located(d, &class, sql);
        }
    }

    /// A write: on the authority in a transaction with the time fixed, then
    /// on the mirror with the same time and first generated id.
    async fn write(&mut self, packet: &[u8], sql: &str) -> Step {
        // With autocommit off the server opens the transaction itself and
        // the client ends it.
        let wrap = !self.in_tx && self.autocommit;
        let ts = now_timestamp();
        let set_ts = query(&format!("SET TIMESTAMP = {ts}"));
        let reset_ts = query("SET TIMESTAMP = DEFAULT");
        let begin = query("BEGIN");
        let mut list: Vec<&[u8]> = Vec::new();
        if wrap {
            list.push(&begin);
        }
        let to_auth = self.for_auth(packet);
        list.extend([&set_ts[..], &to_auth[..], &reset_ts[..]]);
        let mut answers = self.on_auth_n(&commands(&list), list.len()).await?;
        let mut answer = answers.remove(answers.len() - 2);
        if answer.error.is_some() {
            if wrap {
                self.on_auth(&encode(0, &query("ROLLBACK")).0, Expect::Result)
                    .await?;
                answer.outside_transaction();
            }
            return self.relay(&answer).await;
        }
        let packet = match self.mirror_packet(packet).await {
            Ok(p) => p,
            Err(e) => {
                return self.after_mirror(Err(e), wrap, answer, sql).await;
            }
        };
        let mut context = format!("SET TIMESTAMP = {ts}");
        if answer.insert_id > 0 {
            context.push_str(&format!(", INSERT_ID = {}", answer.insert_id));
        }
        let set_context = query(&context);
        let commit = query("COMMIT");
        let mut list: Vec<&[u8]> = Vec::new();
        if wrap {
            list.push(&begin);
        }
        list.extend([&set_context[..], &packet[..], &reset_ts[..]]);
        if wrap {
            list.push(&commit);
        }
        let at = usize::from(wrap) + 1;
        let mirrored = self.on_mirror(&list, wrap).await.and_then(|answers| {
            let affected = answers.get(at).map(|a| a.affected_total);
            first_error(answers).map(|()| affected)
        });
        let mirrored = match mirrored {
            Ok(Some(n)) if n != answer.affected_total => {
                self.row_count_mismatch(sql, answer.affected_total, n)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        self.after_mirror(mirrored, wrap, answer, sql).await
    }

    /// The sides reported different affected-row counts for one mirrored
    /// write: they held different rows. Recorded as `row_count_mismatch`
    /// with both counts; under `mirror.on_error = "fail"` the write fails
    /// (`Err`, rolled back on both sides).
    fn row_count_mismatch(&self, sql: &str, authority: u64, mirror: u64) -> Result<(), String> {
        let loc = crate::engine::locate::locate_text(sql);
        let table = loc.table.as_deref().unwrap_or_default();
        if mirror < authority && self.shared.backfill.may_lack_rows(table) {
            // The backfill has not copied this table yet: new lacks rows
            // by design.
            return Ok(());
        }
        let detail = format!(
            "the authority reported {authority} affected row(s), {} reported {mirror}: the sides held different rows",
            self.mirror_side
        );
        if self.shared.mirror_policy == MirrorErrorPolicy::Fail {
            return Err(detail);
        }
        self.shared.records.mirror_error();
        let class = self.shared.classifier.classify(sql);
        let mut d = Divergence::new(
            DivergenceKind::RowCountMismatch,
            self.mirror_side,
            &class.fingerprint,
            &detail,
        );
        d.table = loc.table;
        d.key = loc.key;
        if self.shared.records.log_statements {
            d.statement = Some(sql.to_string());
        }
        self.shared.records.divergence(d);
        Ok(())
    }

    /// The mirror's outcome decides: on success (or under `record`) the
    /// authority commits (when turnout wrapped the write) and the client
    /// gets its answer; under `fail` both roll back and the client gets
    /// an error.
    async fn after_mirror(
        &mut self,
        mirrored: Result<(), String>,
        wrap: bool,
        mut answer: Answer,
        sql: &str,
    ) -> Step {
        if let Err(e) = mirrored {
            if self.fails(sql, &e) {
                self.on_auth(&encode(0, &query("ROLLBACK")).0, Expect::Result)
                    .await?;
                if !wrap {
                    if let Some(m) = self.mirror.as_mut() {
                        let _ = m.write(0, &query("ROLLBACK")).await;
                        let _ = response::read(m, Expect::Result).await;
                    }
                }
                let msg = format!("turnout: the write failed on the mirror ({}): {e}; rolled back on both sides (mirror.on_error = fail)", self.mirror_side);
                return self.tell(&err_payload(1180, "HY000", &msg)).await;
            }
        }
        if wrap {
            let c = self
                .on_auth(&encode(0, &query("COMMIT")).0, Expect::Result)
                .await
                .inspect_err(|e| self.authority_lost_at_commit(sql, e))?;
            if let Some(e) = &c.error {
                self.record_text(DivergenceKind::AuthorityCommitFailed, sql, e);
                return self.relay(&c).await;
            }
            answer.outside_transaction();
        }
        self.relay(&answer).await
    }

    /// Several statements (or DDL under `mirror.ddl = both`): the
    /// authority, then the mirror, as they are.
    async fn unwrapped(&mut self, packet: &[u8]) -> Step {
        let fresh = !self.in_tx;
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Result)
            .await?;
        if a.error.is_none() {
            if let Err(e) = self.mirror_once(packet, fresh).await {
                self.mirror_failed(&self.packet_sql(packet), &e);
            }
        }
        self.relay(&a).await
    }

    /// What the mirror runs for the client's `packet`: an execute is given
    /// the mirror's statement id (preparing it there first) and its types.
    async fn mirror_packet(&mut self, packet: &[u8]) -> Result<Vec<u8>, String> {
        let databases = self.shared.databases();
        if packet.first() == Some(&COM_QUERY) {
            let sql = String::from_utf8_lossy(&packet[1..]);
            let mapping = self.shared.mapping();
            let p = match mapping.toward(self.mirror_side).translate(&sql) {
                Ok(Translation::Sql(mapped)) => query(&mapped),
                Ok(_) => packet.to_vec(),
                Err(e) => return Err(format!("mapping: {e}")),
            };
            return Ok(databases.packet_for(self.mirror_side, &p)?.unwrap_or(p));
        }
        if packet.first() == Some(&COM_INIT_DB) {
            return Ok(databases
                .packet_for(self.mirror_side, packet)?
                .unwrap_or_else(|| packet.to_vec()));
        }
        if packet.first() != Some(&COM_STMT_EXECUTE)
            && packet.first() != Some(&COM_STMT_SEND_LONG_DATA)
        {
            return Ok(packet.to_vec());
        }
        let id = statement_id(packet).ok_or("malformed statement command")?;
        // The queue's connection knows statements by the client's id.
        let mirror_id = match self.queue {
            Some(_) => id,
            None => self.mirror_statement(id).await?,
        };
        let mut out = packet.to_vec();
        out[1..5].copy_from_slice(&mirror_id.to_le_bytes());
        if packet[0] == COM_STMT_EXECUTE {
            let s = self.statements.get(&id).ok_or("unknown statement")?;
            out = with_types(&out, s.params, s.types.as_deref());
        }
        Ok(out)
    }

    /// `packet` (a query, prepare or COM_INIT_DB) with `side`'s database
    /// (checked mappable first, by [`Self::database_refusal`]).
    fn with_database(&self, side: Side, packet: Vec<u8>) -> Vec<u8> {
        match self.shared.databases().packet_for(side, &packet) {
            Ok(Some(mapped)) => mapped,
            _ => packet,
        }
    }

    /// Why the client's `packet` cannot run: it names a database neither
    /// side has, or the authority's form of it cannot be made.
    fn database_refusal(&self, packet: &[u8]) -> Option<String> {
        let databases = self.shared.databases();
        if databases.same() {
            return None;
        }
        databases.packet_for(self.mirror_side.other(), packet).err()
    }

    /// The mirror's id for the client's statement `id`, preparing it there.
    async fn mirror_statement(&mut self, id: u32) -> Result<u32, String> {
        let (sql, known) = match self.statements.get(&id) {
            Some(s) => (s.sql.clone(), s.mirror_id),
            None => return Err(format!("statement {id} is unknown to turnout")),
        };
        if let Some(m) = known {
            return Ok(m);
        }
        if self.mirror.is_none() {
            self.reconnect_mirror().await?;
        }
        let sql = self.prepared_for_mirror(sql)?;
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let mut p = vec![COM_STMT_PREPARE];
        p.extend_from_slice(sql.as_bytes());
        m.write(0, &p).await.map_err(|e| e.to_string())?;
        let a = response::read(m, Expect::Prepare)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(e) = a.error {
            return Err(e);
        }
        let (mirror_id, _) = a.statement.ok_or("no statement id in the answer")?;
        if let Some(s) = self.statements.get_mut(&id) {
            s.mirror_id = Some(mirror_id);
        }
        Ok(mirror_id)
    }

    /// A statement the client prepared (`sql`, written for old) as the
    /// mirror's side prepares it, or why it cannot.
    fn prepared_for_mirror(&self, sql: String) -> Result<String, String> {
        let mapping = self.shared.mapping();
        let sql = match mapping.toward(self.mirror_side).translate_prepared(&sql) {
            Ok(Translation::Sql(mapped)) => mapped,
            Ok(Translation::Unchanged) => sql,
            Ok(_) => {
                return Err(
                    "mapping: this prepared statement changes shape for new (values dropped or added); not translated"
                        .into(),
                )
            }
            Err(e) => return Err(format!("mapping: {e}")),
        };
        Ok(self
            .shared
            .databases()
            .sql_for(self.mirror_side, &sql)?
            .unwrap_or(sql))
    }

    async fn prepare(&mut self, packet: &[u8]) -> Step {
        let sql = String::from_utf8_lossy(&packet[1..]).into_owned();
        if super::kill::parse(&sql).is_some() {
            return self.tell(&super::kill::prepare_refused()).await;
        }
        if let Some(reason) = self.not_for_authority(&sql, true) {
            let msg = format!(
                "turnout: this statement cannot be translated for new, which is the authority now: {reason}"
            );
            return self.tell(&err_payload(1235, "42000", &msg)).await;
        }
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Prepare)
            .await?;
        if let Some((id, params)) = a.statement {
            let class = self.classify(&sql);
            if self.queue.is_some() {
                // The queue's connection prepares it when first executed.
                let work = Work::Prepare {
                    id,
                    sql: self.prepared_for_mirror(sql.clone()),
                };
                let in_transaction = self.in_tx;
                if let Some(q) = self.queue.as_mut() {
                    q.push(work, &class, false, in_transaction, &self.replay)
                        .await;
                }
            }
            self.statements.insert(
                id,
                Prepared {
                    auth_id: id,
                    sql,
                    class,
                    params,
                    mirror_id: None,
                    types: None,
                },
            );
        }
        self.relay(&a).await
    }

    async fn execute(&mut self, packet: &[u8]) -> Step {
        let Some(id) = statement_id(packet) else {
            return self.authority(packet).await.map(|_| ());
        };
        let Some(s) = self.statements.get_mut(&id) else {
            return self.authority(packet).await.map(|_| ());
        };
        if let Some(t) = types_of(packet, s.params) {
            s.types = Some(t);
        }
        let class = s.class.clone();
        let sql = s.sql.clone();
        self.statement(packet, &class, &sql).await
    }

    /// COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA: no answer; a write's
    /// go to the mirror too.
    async fn no_answer(&mut self, packet: &[u8]) -> Step {
        use tokio::io::AsyncWriteExt;
        self.auth
            .stream
            .write_all(&encode(0, &self.for_auth(packet)).0)
            .await
            .map_err(|e| Stop::Authority(e.into()))?;
        let Some(id) = statement_id(packet) else {
            return Ok(());
        };
        let mirrored = self.statements.get(&id).and_then(|s| s.mirror_id);
        if packet[0] == COM_STMT_CLOSE {
            self.statements.remove(&id);
            if self.queue.is_some() {
                // The queue's connection closes its own copy, if it has one.
                let _ = self.on_mirror(&[packet], false).await;
            }
            if let (Some(mid), Some(m)) = (mirrored, self.mirror.as_mut()) {
                let mut p = packet.to_vec();
                p[1..5].copy_from_slice(&mid.to_le_bytes());
                let _ = m.write(0, &p).await;
            }
            return Ok(());
        }
        let write = self
            .statements
            .get(&id)
            .is_some_and(|s| matches!(self.route(&s.class), Route::Write | Route::Unwrapped));
        if write {
            match self.mirror_packet(packet).await {
                Ok(p) if self.queue.is_some() => {
                    let _ = self.on_mirror(&[&p], false).await;
                }
                Ok(p) => {
                    if let Some(m) = self.mirror.as_mut() {
                        let _ = m.write(0, &p).await;
                    }
                }
                Err(e) => self.mirror_failed(&self.packet_sql(packet), &e),
            }
        }
        Ok(())
    }

    async fn reset(&mut self, packet: &[u8]) -> Step {
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Result)
            .await?;
        if let Some(mid) = statement_id(packet)
            .and_then(|id| self.statements.get(&id))
            .and_then(|s| s.mirror_id)
        {
            let mut p = packet.to_vec();
            p[1..5].copy_from_slice(&mid.to_le_bytes());
            let _ = self.on_mirror(&[&p], false).await;
        } else if self.queue.is_some() {
            let _ = self.on_mirror(&[packet], false).await;
        }
        self.relay(&a).await
    }

    /// COM_RESET_CONNECTION: both sides drop the session's state (open
    /// transaction, settings, prepared statements); so does turnout.
    async fn reset_connection(&mut self, packet: &[u8]) -> Step {
        let a = self.on_auth(&encode(0, packet).0, Expect::Result).await?;
        if self.mirroring() {
            if let Err(e) = self.on_mirror(&[packet], false).await.and_then(first_error) {
                // The mirror's session state is unknown now: start afresh.
                warn!(side = %self.mirror_side, error = %e, "mirror connection reset failed; reconnecting");
                self.mirror = None;
            }
        }
        self.replay = Replay::default();
        self.statements.clear();
        self.in_tx = false;
        self.autocommit = true;
        self.relay(&a).await
    }

    /// Under `mirror.on_error = fail`: true (the caller fails the
    /// statement). Under `record`: the divergence is written; false.
    /// `sql`: the statement that failed (its text, or a prepared
    /// statement's).
    fn fails(&self, sql: &str, detail: &str) -> bool {
        let class = self.shared.classifier.classify(sql);
        lockstep::mirror_failed(
            self.shared.mirror_policy,
            &self.shared.records,
            self.mirror_side,
            &class.fingerprint,
            detail,
            |d| self.record_located(d, &class, sql),
        )
    }

    /// A failure of the mirror recorded whatever `mirror.on_error` says
    /// (a setting, or a write whose client already has its answer).
    fn mirror_failed(&self, sql: &str, detail: &str) {
        self.shared.records.mirror_error();
        self.record_text(DivergenceKind::MirrorError, sql, detail);
    }

    /// The SQL a client's command packet runs: a query's text, or the
    /// prepared statement's (by the client's statement id).
    fn packet_sql(&self, packet: &[u8]) -> String {
        match packet.first() {
            Some(&COM_QUERY) | Some(&COM_INIT_DB) => {
                String::from_utf8_lossy(&packet[1..]).into_owned()
            }
            _ => statement_id(packet)
                .and_then(|id| self.statements.get(&id))
                .map(|s| s.sql.clone())
                .unwrap_or_else(|| {
                    format!("(command 0x{:02x})", packet.first().copied().unwrap_or(0))
                }),
        }
    }

    fn record(&self, kind: DivergenceKind, class: &Classification, detail: &str, sql: &str) {
        let d = Divergence::new(kind, self.mirror_side, &class.fingerprint, detail);
        self.record_located(d, class, sql);
    }

    /// Records `d` with the table `class` writes and, under
    /// `mirror.log_statements`, the statement `sql`.
    fn record_located(&self, mut d: Divergence, class: &Classification, sql: &str) {
        d.table = class.insert_table.clone();
        if self.shared.records.log_statements {
            d.statement = Some(sql.to_string());
        }
        self.shared.records.divergence(d);
    }

    fn record_text(&self, kind: DivergenceKind, sql: &str, detail: &str) {
        let class = self.shared.classifier.classify(sql);
        if kind != DivergenceKind::UnsafeStatement {
            debug!(%sql, %detail, "mysql divergence");
        }
        self.record(kind, &class, detail, sql);
    }
}

/// What an INSERT's volatile defaults make of it.
enum Defaults {
    /// As the client sent it.
    Kept,
    /// With the authority's values for them written in.
    Written(String),
    /// Refused with this message (`mirror.on_unsafe = "fail"`).
    Refused(String),
}

fn first_error(answers: Vec<Answer>) -> Result<(), String> {
    match answers.into_iter().find_map(|a| a.error) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn statement_id(packet: &[u8]) -> Option<u32> {
    let b = packet.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The parameter types an execute sends (when its new-params-bound flag
/// is set).
fn types_of(packet: &[u8], params: u16) -> Option<Vec<u8>> {
    let n = usize::from(params);
    if n == 0 {
        return None;
    }
    let at = 10 + n.div_ceil(8);
    if packet.get(at) != Some(&1) {
        return None;
    }
    packet.get(at + 1..at + 1 + 2 * n).map(<[u8]>::to_vec)
}

/// An execute that leans on types sent earlier, with them written in (the
/// mirror may not have seen the earlier execute).
fn with_types(packet: &[u8], params: u16, types: Option<&[u8]>) -> Vec<u8> {
    let n = usize::from(params);
    let at = 10 + n.div_ceil(8);
    match (types, packet.get(at)) {
        (Some(t), Some(&0)) if n > 0 => {
            let mut out = packet[..at].to_vec();
            out.push(1);
            out.extend_from_slice(t);
            out.extend_from_slice(&packet[at + 1..]);
            out
        }
        _ => packet.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executes_get_their_types_back() {
        // COM_STMT_EXECUTE, id 7, flags 0, iterations 1, 2 params: null
        // bitmap, bound flag, types, values.
        let mut first = vec![COM_STMT_EXECUTE, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
        first.extend_from_slice(&[3, 0, 253, 0]);
        first.extend_from_slice(&[1, 0, 0, 0, 1, b'x']);
        assert_eq!(types_of(&first, 2), Some(vec![3, 0, 253, 0]));
        let mut later = vec![COM_STMT_EXECUTE, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        later.extend_from_slice(&[2, 0, 0, 0, 1, b'y']);
        assert_eq!(types_of(&later, 2), None);
        let fixed = with_types(&later, 2, Some(&[3, 0, 253, 0]));
        assert_eq!(fixed[11], 1);
        assert_eq!(&fixed[12..16], &[3, 0, 253, 0]);
        assert_eq!(&fixed[16..], &[2, 0, 0, 0, 1, b'y']);
        assert_eq!(
            with_types(&[COM_STMT_EXECUTE], 2, None),
            vec![COM_STMT_EXECUTE]
        );
    }
}
