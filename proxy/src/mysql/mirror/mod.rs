//! The session engine for MySQL in phases with a mirror (DESIGN.md
//! invariants 1 and 2, the MySQL way). A write runs on the authority first,
//! inside a transaction, with the time fixed by `SET TIMESTAMP`; then on
//! the mirror with the same time and the authority's first generated id
//! (`SET INSERT_ID`), as statement-based replication does; the mirror
//! commits before the authority. Reads and everything else go to the
//! authority; session settings go to both.

mod connections;
mod context;
mod prepared;
mod reads;
mod records;
mod writes;

use super::packet::{encode, err_payload, is_missing_object_code, PacketError, Packets};
use super::queue::{self, AsyncMirror, Replay};
use super::response::Answer;
use super::session::Legs;
use crate::engine::defaults;
use crate::engine::route::{self, Route};
use crate::engine::{Classification, Kind};
use crate::mapping::Translation;
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::warn;
use turnout_config::UnsafePolicy;
use turnout_control::divergence::DivergenceKind;
use turnout_control::{Routing, Side};

pub(super) use super::packet::command::{
    COM_CHANGE_USER, COM_INIT_DB, COM_PING, COM_QUERY, COM_QUIT, COM_RESET_CONNECTION,
    COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
};
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
    /// The authority's binary log feeds the mirror in this transaction:
    /// writes go to the authority alone.
    log_on: bool,
    /// Tables the open transaction wrote through the log (for the count of
    /// writes that bypass turnout).
    log_tables: Vec<String>,
    /// What the session set or drew that statement text does not show.
    context: context::Context,
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
            routing: shared.coord.routing.snapshot(),
            in_tx: false,
            unmirrored_in_tx: None,
            lexing_unsure: context::backslash_trailing_collation(legs.collation),
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
            log_on: false,
            log_tables: Vec::new(),
            context: context::Context::default(),
        }
    }

    pub async fn run(mut self) -> End {
        let _counted = self.shared.coord.mirrored_session();
        let mut paused = self.shared.coord.paused.subscribe();
        let mut stopping = self.shared.coord.stopping.subscribe();
        let id = self
            .shared
            .coord
            .next_session
            .fetch_add(1, Ordering::Relaxed);
        let mut busy = false;
        let end = loop {
            if busy && !self.in_tx {
                busy = false;
                self.wrote = false;
                self.log_tables.clear();
                self.shared.coord.leave_transaction(id);
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
                match self
                    .shared
                    .coord
                    .enter_transaction(id, &mut paused, &mut stopping)
                    .await
                {
                    Ok(routing) => self.routing = routing,
                    Err(msg) => {
                        let _ = self
                            .client
                            .write(1, &err_payload(1105, "HY000", &msg))
                            .await;
                        break End::Quit;
                    }
                }
                busy = true;
                if let Err(e) = self.adopt_roles().await {
                    let side = self.routing.phase.authority();
                    let msg = self.shared.coord.authority_unreachable(side, &e);
                    let _ = self
                        .client
                        .write(1, &err_payload(1105, "HY000", &msg))
                        .await;
                    break End::AuthorityLost(e);
                }
                self.log_on = self.shared.log.feeds_from(self.mirror_side.other());
            }
            // In a fleet: the lease ended since the transaction began (see
            // the PostgreSQL session).
            if self.shared.coord.lease_ended() {
                let msg = crate::shared::coordination::FENCED_IN_TRANSACTION;
                let _ = self.client.write(1, &err_payload(1105, "HY000", msg)).await;
                break End::Quit;
            }
            if let Some(end) = self.command(packet).await {
                break end;
            }
        };
        if busy {
            self.shared.coord.leave_transaction(id);
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
        // The count of the autocommit write turnout wrapped, for this
        // command alone.
        let wrapped_count = self.context.wrapped_count.take();
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
                // ROW_COUNT() right after a write turnout wrapped: the
                // write's count, as directly (turnout's COMMIT reset it).
                let answered = wrapped_count
                    .filter(|_| !self.log_on)
                    .and_then(|n| context::Context::row_count_answered(n, &sql));
                let (packet, sql) = match answered {
                    Some(text) => (query(&text), text),
                    None => (packet, sql),
                };
                if !self.log_on {
                    self.context.note(&sql);
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
                self.shared.coord.authority_failed(side);
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
        )
        .with_log(self.log_on);
        route::route(class, &ctx)
    }

    /// A COM_QUERY, or an execute (`packet`) of a prepared statement.
    async fn statement(&mut self, packet: &[u8], class: &Arc<Classification>, sql: &str) -> Step {
        self.unit_class = class.clone();
        let started = std::time::Instant::now();
        self.answered_by = self.mirror_side.other();
        let step = self.run_statement(packet, class, sql).await;
        let took = started.elapsed();
        self.shared.backfill.latency.record(took);
        crate::engine::counted::record_query(
            class.kind().name(),
            self.answered_by,
            took.as_secs_f64(),
        );
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
            // Column defaults, triggers and functions may have changed.
            self.table_defaults.clear();
            self.context.drawn_triggers.clear();
            self.context.writing_functions = None;
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
            let database = context::names_database(sql)
                && self.shared.target(Side::Old).database != self.shared.target(Side::New).database;
            let from_context = self
                .context
                .unsafe_write(sql)
                .or_else(|| {
                    database.then(|| {
                        "calls DATABASE(), whose value is each side's own database name, and the two are named differently".to_string()
                    })
                })
                .or_else(|| {
                    (class.statements.len() > 1 && context::inserts_after_the_first(sql)).then(|| {
                        "a text of several statements inserts after its first: ids its later INSERTs generate are the mirror's own counter's".to_string()
                    })
                });
            let from_context = match from_context {
                Some(r) => Some(r),
                None => self.drawn_trigger(sql).await,
            };
            if let Some(reason) = from_context {
                if self.shared.unsafe_policy == UnsafePolicy::Fail {
                    let msg = format!(
                        "turnout: refused, not safe to mirror: {reason} (mirror.on_unsafe = fail)"
                    );
                    return self.tell(&err_payload(1290, "HY000", &msg)).await;
                }
                self.record(DivergenceKind::UnsafeStatement, class, &reason, sql);
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
        if route == Route::Authority && !self.log_on && sql.contains('(') {
            if let Some(reason) = self.writing_function(sql).await {
                self.record(DivergenceKind::UnsafeStatement, class, &reason, sql);
            }
        }
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
        if matches!(
            route,
            Route::Write | Route::Unwrapped | Route::Logged | Route::LoggedDdl
        ) {
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
            // From the log, with reads on the authority: the mirror's
            // connection holds no transaction, so transaction control goes
            // to the authority alone (a round trip less per BEGIN).
            Route::Both
                if self.log_on
                    && matches!(class.kind(), Kind::Transaction(_))
                    && self.routing.phase.read_target() != self.mirror_side =>
            {
                let was_in_tx = self.in_tx;
                self.authority(packet).await?;
                if was_in_tx && !self.in_tx {
                    self.log_tables.clear();
                }
                Ok(())
            }
            Route::Both => {
                let keep = class.kind() == Kind::Session && !self.in_tx;
                self.both(packet, keep).await
            }
            Route::Commit if self.log_on => self.logged_commit(packet).await,
            Route::Commit => self.commit(packet).await,
            Route::Write => match self.volatile_defaults(packet, class, sql).await? {
                Defaults::Kept => self.write(packet, sql).await,
                Defaults::Written(sql) => self.write(&query(&sql), &sql).await,
                Defaults::Refused(msg) => self.tell(&err_payload(1290, "HY000", &msg)).await,
            },
            Route::Logged | Route::LoggedDdl => self.logged(packet, class).await,
            Route::Unwrapped => self.unwrapped(packet).await,
            Route::MirrorOnly => self.mirror_only(packet).await,
            Route::Reject => {
                let msg = "turnout: schema changes are refused while writes are mirrored (mirror.ddl = reject)";
                self.tell(&err_payload(1290, "HY000", msg)).await
            }
        }
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

    /// The classification of a client's statement. A statement that may
    /// change `sql_mode` (and with it backslash escapes) makes every later
    /// text with a backslash a write (see
    /// [`crate::engine::Classifier::classify_in_session`]).
    fn classify(&mut self, sql: &str) -> Arc<Classification> {
        let classifier = &self.shared.classifier;
        self.lexing_unsure |= classifier.changes_lexing(sql)
            || context::names_backslash_trailing_charset(sql)
            || runs_hidden_text(sql);
        classifier.classify_in_session(sql, self.lexing_unsure)
    }
}

/// Whether `sql` runs a statement text turnout does not see (`EXECUTE`
/// of a text `PREPARE`d from a variable or an expression, `EXECUTE
/// IMMEDIATE`): it may set `sql_mode` or the character set by a name
/// built from pieces (`CONCAT('SET sql', '_mode = ...')`), so the session's
/// later backslash texts are writes.
/// (Wherever the word is: a false alarm only mirrors a read with a
/// backslash.)
fn runs_hidden_text(sql: &str) -> bool {
    sql.as_bytes()
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"execute"))
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
