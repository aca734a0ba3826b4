//! The applier: one task per listener reading the authority's log and
//! applying each committed transaction to the other side in commit order,
//! with `session_replication_role = replica` (the other side's triggers do
//! not fire again: their effects on the authority are in the log), through
//! the `[mapping]`.
//!
//! Consecutive transactions go to the other side as one transaction while
//! more of the log is already read; the place reached in the log commits
//! with them (a replication origin on the applying side), so a crash loses
//! nothing and applies nothing twice: the stream starts again from there.
//! A change the other side refuses fails its group; the group is then
//! applied again from the log one transaction and one change at a time, and
//! each refused change is recorded with its table and key.

use super::conn::{ApplyConn, ConnError};
use super::statements::{update_shape, Plan, Reads, Shape, Statement};
use crate::backend::pg::{connect, literal};
use crate::backend::pglog::{ident, identify, open_walsender, LogStream, LOG_SETTINGS};
use crate::backend::pgoutput::{Lsn, Message, Relation, StreamFrame, Value};
use crate::engine::logsync::{DDL_PREFIX, MARK_PREFIX, SKIP_PREFIX};
use crate::shared::Shared;
use crate::wire::pg_framed::Framed;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::Side;

/// Transactions of the log applied as one on the other side, at most.
const GROUP_TRANSACTIONS: usize = 256;
/// Changes of one group, at most (a larger transaction is one group).
const GROUP_CHANGES: u64 = 20_000;

/// Why a run of the applier ended.
pub(super) enum Ended {
    /// Asked to stop.
    Stopped,
    /// The connection or the stream failed: start over.
    Retry(String),
    /// A group failed on the other side: apply the log again one change at
    /// a time up to this position.
    Careful(Lsn),
    /// The other side cannot take what the log holds (a table, a column):
    /// nothing is applied until it can.
    Refused(String),
}

/// A relation the log described, with how its changes are applied.
pub(super) struct Rel {
    pub rel: Relation,
    /// Made when first needed; dropped when the other side's schema may
    /// have changed (DDL applied from the log).
    pub plan: Option<Result<Arc<Plan>, String>>,
    pub statements: HashMap<Shape, Option<Arc<Statement>>>,
}

/// One transaction of the log as it is applied.
#[derive(Default)]
struct Txn {
    tokens: Vec<String>,
    /// Marked by a turnout session (this instance or another).
    marked: bool,
    /// Inside a statement a rule keeps on one side: its changes are skipped.
    skipping: bool,
    tables: BTreeSet<String>,
}

/// A change sent, with what its answer is checked against.
pub(super) struct Sent {
    table: String,
    key: Option<String>,
    reads: Reads,
    what: &'static str,
}

/// The transactions applied as one.
#[derive(Default)]
pub(super) struct Group {
    open: bool,
    txns: Vec<Txn>,
    pub changes: u64,
    pub sent: HashMap<u64, Sent>,
    end: Lsn,
    time: i64,
}

pub(super) struct Run<'a> {
    pub shared: &'a Arc<Shared>,
    /// The side whose log is read.
    pub from: Side,
    pub stop: &'a mut tokio::sync::watch::Receiver<bool>,
    /// Apply one change at a time up to here (after a failed group).
    pub careful_until: Option<Lsn>,
    /// The last refusal recorded (not recorded again while it lasts).
    pub refused: &'a mut Option<String>,
    /// Where in the log the message being applied starts.
    pub position: Lsn,
}

fn origin_name(slot: &str, system_id: &str) -> String {
    format!("turnout_{slot}_{system_id}")
}

impl Run<'_> {
    pub(super) fn to(&self) -> Side {
        self.from.other()
    }

    pub(super) fn record(
        &self,
        kind: DivergenceKind,
        table: &str,
        key: Option<String>,
        detail: &str,
    ) {
        let mut d = Divergence::new(kind, self.to(), &format!("(log) {table}"), detail);
        d.table = Some(table.to_string());
        d.key = key;
        if !matches!(
            kind,
            DivergenceKind::UnsafeStatement | DivergenceKind::LogStalled
        ) {
            self.shared.records.mirror_error();
        }
        self.shared.records.divergence(d);
    }

    /// Connects both ends and applies the log until stopped or failed.
    pub async fn run(&mut self) -> Ended {
        let shared = self.shared;
        let slot = shared.log_slot.clone();
        let from_target = shared.target(self.from).as_replication();
        let to_target = shared.target(self.to()).as_replication();
        let mut walsender = match open_walsender(&from_target).await {
            Ok(c) => c,
            Err(e) => return Ended::Retry(e.to_string()),
        };
        let system = match identify(&mut walsender, self.from).await {
            Ok(s) => s,
            Err(e) => return Ended::Retry(e.to_string()),
        };
        let origin = origin_name(&slot, &system.system_id);
        let mut params: Vec<(String, String)> = LOG_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        params.push(("application_name".into(), "turnout log applier".into()));
        let conn = match connect(&to_target, &params).await {
            Ok(c) => Framed::new(c.stream, c.leftover, usize::MAX),
            Err(e) => return Ended::Retry(e.to_string()),
        };
        let mut apply = ApplyConn::new(conn, shared.mirror_timeout.max(Duration::from_secs(30)));
        let setup = format!(
            "SET session_replication_role = replica; SET statement_timeout = 0; SET lock_timeout = 0; \
             SELECT pg_replication_origin_create({o}) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = {o}); \
             SELECT pg_replication_origin_session_setup({o})",
            o = literal(&origin)
        );
        if let Err(e) = apply.simple(&setup).await {
            return Ended::Retry(format!("the applier could not start on {}: {e}", self.to()));
        }
        let progress = match apply
            .query(
                "SELECT pg_replication_origin_progress($1, false)::text AS lsn",
                &[Some(&origin)],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .next()
                .and_then(|r| r.text("lsn").ok().flatten().and_then(Lsn::parse))
                .unwrap_or_default(),
            Err(e) => return Ended::Retry(e.to_string()),
        };
        let publications = [
            super::setup::publication(&slot),
            super::setup::inserts_publication(&slot),
        ];
        let mut stream = match LogStream::start(
            walsender,
            self.from,
            &slot,
            &publications,
            progress,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                let text = e.to_string();
                if text.contains("does not exist") {
                    // Dropped under turnout's feet: made again, and
                    // what the log held meanwhile is said missing.
                    if let Ok((_, note)) = super::setup::ensure_slot(&from_target, &slot).await {
                        self.record(
                                DivergenceKind::MirrorError,
                                "",
                                None,
                                &note.unwrap_or_else(|| format!(
                                    "turnout's replication slot {slot:?} was gone from {} and was made again: writes of the time between may be missing on {}; run verify --repair",
                                    self.from,
                                    self.to()
                                )),
                            );
                    }
                }
                return Ended::Retry(text);
            }
        };
        info!(from = %self.from, to = %self.to(), position = %progress, careful = ?self.careful_until, "log applier streaming");
        shared.log.running();
        let ended = self.stream(&mut stream, &mut apply, progress).await;
        apply.close().await;
        ended
    }

    async fn stream(&mut self, stream: &mut LogStream, apply: &mut ApplyConn, start: Lsn) -> Ended {
        let mut rels: HashMap<u32, Rel> = HashMap::new();
        let mut types: HashMap<u32, String> = HashMap::new();
        let mut confirmed = start;
        let mut group = Group::default();
        let mut txn: Option<Txn> = None;
        let mut last_feedback = Instant::now();
        loop {
            let frame = tokio::select! {
                f = stream.next() => f,
                _ = self.stop.changed() => return Ended::Stopped,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if last_feedback.elapsed() >= Duration::from_secs(5) && !group.open {
                        if let Err(e) = stream.confirm(confirmed).await {
                            return Ended::Retry(e.to_string());
                        }
                        last_feedback = Instant::now();
                    }
                    continue;
                }
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return Ended::Retry(e.to_string()),
            };
            let msg = match frame {
                StreamFrame::Keepalive { wal_end, reply } => {
                    if group.open && txn.is_none() {
                        // Nothing more is coming right now: the group goes.
                        match self.commit_group(apply, &mut group).await {
                            Ok(end) => confirmed = confirmed.max(end),
                            Err(e) => return e,
                        }
                    }
                    if !group.open && txn.is_none() {
                        confirmed = confirmed.max(wal_end);
                    }
                    if reply {
                        if let Err(e) = stream.confirm(confirmed).await {
                            return Ended::Retry(e.to_string());
                        }
                        last_feedback = Instant::now();
                    }
                    continue;
                }
                StreamFrame::XLogData { start, msg, .. } => {
                    self.position = start;
                    msg
                }
            };
            let careful = self.careful_until.is_some();
            match msg {
                Message::Begin { .. } => {
                    if !group.open {
                        if let Err(e) = apply.exec("BEGIN", &[]).await {
                            return self.failed(e);
                        }
                        group.open = true;
                    }
                    txn = Some(Txn::default());
                }
                Message::Commit {
                    end_lsn,
                    commit_time,
                    ..
                } => {
                    let Some(t) = txn.take() else {
                        return Ended::Retry("a Commit without its Begin in the log".into());
                    };
                    group.txns.push(t);
                    group.end = end_lsn;
                    group.time = commit_time;
                    let more = stream.has_buffered()
                        && group.txns.len() < GROUP_TRANSACTIONS
                        && group.changes < GROUP_CHANGES;
                    if careful || !more {
                        match self.commit_group(apply, &mut group).await {
                            Ok(end) => {
                                confirmed = confirmed.max(end);
                                if let Err(e) = stream.confirm(confirmed).await {
                                    return Ended::Retry(e.to_string());
                                }
                                last_feedback = Instant::now();
                            }
                            Err(e) => return e,
                        }
                        if self.careful_until.is_some_and(|u| end_lsn >= u) {
                            info!("the failed changes are recorded; the log applier goes on at full speed");
                            self.careful_until = None;
                        }
                    }
                }
                // A transaction an applier of turnout's wrote here (from
                // the other side's log): it is the other side's already.
                Message::Origin { name } => {
                    if name.starts_with(&format!("turnout_{}_", self.shared.log_slot)) {
                        if let Some(t) = txn.as_mut() {
                            t.marked = true;
                            t.skipping = true;
                        }
                    }
                }
                Message::Relation(r) => {
                    let id = r.id;
                    // Sessions record the UPDATEs and DELETEs of a table the
                    // log has the inserts of only.
                    let keyless = r.replica_identity != b'f' && !r.columns.iter().any(|c| c.key);
                    let name = r.name.to_lowercase();
                    let unlogged = self.shared.log.unlogged.load();
                    if keyless != unlogged.contains(&name) {
                        let mut set = (**unlogged).clone();
                        if keyless {
                            set.insert(name);
                        } else {
                            set.remove(&name);
                        }
                        self.shared.log.unlogged.store(Arc::new(set));
                    }
                    rels.insert(
                        id,
                        Rel {
                            rel: r,
                            plan: None,
                            statements: HashMap::new(),
                        },
                    );
                }
                Message::Type { oid, schema, name } => {
                    types.insert(oid, format!("{}.{}", ident(&schema), ident(&name)));
                }
                // Changes of a statement a rule keeps on one side.
                Message::Insert { .. } | Message::Update { .. } | Message::Delete { .. }
                    if txn.as_ref().is_some_and(|t| t.skipping) => {}
                Message::Insert { rel, new } => {
                    if let Err(e) = self
                        .change(
                            apply,
                            &mut rels,
                            &types,
                            &mut group,
                            txn.as_mut(),
                            rel,
                            Shape::Insert,
                            Some(&new),
                            None,
                        )
                        .await
                    {
                        return e;
                    }
                }
                Message::Update { rel, old, new } => {
                    let shape = update_shape(&new, old.as_deref());
                    if let Err(e) = self
                        .change(
                            apply,
                            &mut rels,
                            &types,
                            &mut group,
                            txn.as_mut(),
                            rel,
                            shape,
                            Some(&new),
                            old.as_deref(),
                        )
                        .await
                    {
                        return e;
                    }
                }
                Message::Delete { rel, old } => {
                    if let Err(e) = self
                        .change(
                            apply,
                            &mut rels,
                            &types,
                            &mut group,
                            txn.as_mut(),
                            rel,
                            Shape::Delete,
                            None,
                            Some(&old),
                        )
                        .await
                    {
                        return e;
                    }
                }
                Message::Truncate {
                    rels: ids,
                    cascade,
                    restart_identity,
                } => {
                    let mut names = Vec::new();
                    for id in &ids {
                        match self.plan(apply, &mut rels, &types, *id).await {
                            Ok(p) => names.push((p.source.clone(), p.target.clone())),
                            Err(e) => return e,
                        }
                    }
                    let sql = format!(
                        "TRUNCATE {}{}{}",
                        names
                            .iter()
                            .map(|(_, t)| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if restart_identity {
                            " RESTART IDENTITY"
                        } else {
                            ""
                        },
                        if cascade { " CASCADE" } else { "" }
                    );
                    if let Some(t) = txn.as_mut() {
                        t.tables.extend(names.iter().map(|(s, _)| s.clone()));
                    }
                    let table = names.first().map(|(s, _)| s.clone()).unwrap_or_default();
                    if let Err(e) = self
                        .send(
                            apply,
                            &mut group,
                            &sql,
                            &[],
                            table,
                            None,
                            Reads::Nothing,
                            "truncate",
                        )
                        .await
                    {
                        return e;
                    }
                }
                Message::Message {
                    transactional,
                    prefix,
                    content,
                } => {
                    let text = String::from_utf8_lossy(&content).into_owned();
                    if prefix == MARK_PREFIX {
                        if let Some(t) = txn.as_mut() {
                            t.marked = true;
                            t.tokens.push(text);
                        } else if !transactional {
                            self.shared.log.applied(&text);
                        }
                    } else if prefix == SKIP_PREFIX {
                        if let Some(t) = txn.as_mut() {
                            t.marked = true;
                            t.skipping = text == "on";
                        }
                    } else if prefix == DDL_PREFIX {
                        if let Some(t) = txn.as_mut() {
                            t.marked = true;
                        }
                        if let Err(e) = self.ddl(apply, &mut group, &text).await {
                            return e;
                        }
                        // The other side's tables may have changed.
                        for r in rels.values_mut() {
                            r.plan = None;
                            r.statements.clear();
                        }
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn change(
        &mut self,
        apply: &mut ApplyConn,
        rels: &mut HashMap<u32, Rel>,
        types: &HashMap<u32, String>,
        group: &mut Group,
        txn: Option<&mut Txn>,
        id: u32,
        shape: Shape,
        row: Option<&[Value]>,
        old: Option<&[Value]>,
    ) -> Result<(), Ended> {
        let plan = self.plan(apply, rels, types, id).await?;
        let r = rels.get_mut(&id).expect("planned above");
        let statement = r
            .statements
            .entry(shape)
            .or_insert_with(|| plan.statement(shape).map(Arc::new))
            .clone();
        if let Some(t) = txn {
            t.tables.insert(plan.source.clone());
        }
        let key_row = old.or(row).unwrap_or_default();
        let key = plan.key_text(&r.rel, key_row);
        let Some(statement) = statement else {
            if !plan.finds_rows() {
                self.record(
                    DivergenceKind::MirrorError,
                    &plan.source,
                    key,
                    &format!(
                        "{} has no replica identity, yet the log holds an update or delete of it: not applied",
                        plan.source
                    ),
                );
            }
            return Ok(());
        };
        let values = plan.bind_values(&statement, row, old);
        let what = match shape {
            Shape::Insert => "insert",
            Shape::Update { .. } => "update",
            Shape::Delete => "delete",
        };
        let sql = statement.sql.clone();
        self.send(
            apply,
            group,
            &sql,
            &values,
            plan.source.clone(),
            key,
            statement.reads,
            what,
        )
        .await
    }

    /// Queues one statement of the group (in careful mode: runs it alone,
    /// inside a savepoint, and records it if it fails).
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        apply: &mut ApplyConn,
        group: &mut Group,
        sql: &str,
        values: &[Option<&[u8]>],
        table: String,
        key: Option<String>,
        reads: Reads,
        what: &'static str,
    ) -> Result<(), Ended> {
        group.changes += 1;
        if self.careful_until.is_none() {
            let n = apply.exec(sql, values).await.map_err(|e| self.failed(e))?;
            group.sent.insert(
                n,
                Sent {
                    table,
                    key,
                    reads,
                    what,
                },
            );
            return Ok(());
        }
        let run = async {
            apply.exec("SAVEPOINT turnout_change", &[]).await?;
            let n = apply.exec(sql, values).await?;
            apply.exec("RELEASE SAVEPOINT turnout_change", &[]).await?;
            apply.sync().await?;
            Ok::<u64, ConnError>(n)
        };
        match run.await {
            Ok(n) => {
                let counts = apply.take_counts();
                let count = counts.iter().find(|(m, _)| *m == n).map_or(0, |(_, c)| *c);
                self.check(
                    &Sent {
                        table,
                        key,
                        reads,
                        what,
                    },
                    count,
                );
                Ok(())
            }
            Err(ConnError::Failed { error, .. }) => {
                let _ = apply.take_counts();
                let detail = format!(
                    "{} refused the log's {what} of this row: {}",
                    self.to(),
                    self.shared.records.loggable(&error)
                );
                self.record(DivergenceKind::MirrorError, &table, key, &detail);
                apply
                    .exec("ROLLBACK TO SAVEPOINT turnout_change", &[])
                    .await
                    .map_err(|e| self.failed(e))?;
                apply.sync().await.map_err(|e| self.failed(e))?;
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A statement's count against what it should be.
    pub(super) fn check(&self, s: &Sent, count: u64) {
        let lacked = match s.reads {
            Reads::Found if count == 0 => Some("found no such row"),
            Reads::Missing if count > 0 => Some("found no such row (the row was added whole)"),
            Reads::Existed if count > 0 => {
                Some("found the row there already (it was overwritten with the log's)")
            }
            Reads::Fresh if count == 0 => Some("found the row there already"),
            _ => None,
        };
        let Some(lacked) = lacked else { return };
        if self.shared.backfill.may_lack_rows(&s.table) {
            return;
        }
        let detail = format!(
            "the log's {} on {} {lacked}: the sides held different rows",
            s.what,
            self.to()
        );
        self.record(
            DivergenceKind::RowCountMismatch,
            &s.table,
            s.key.clone(),
            &detail,
        );
    }

    /// Commits the group on the other side with its place in the log;
    /// checks each change's count and completes the commits waiting for it.
    async fn commit_group(
        &mut self,
        apply: &mut ApplyConn,
        group: &mut Group,
    ) -> Result<Lsn, Ended> {
        let g = std::mem::take(group);
        if !g.open {
            return Ok(g.end);
        }
        let end = g.end.to_string();
        let time = g.time.to_string();
        let committed = async {
            apply
                .exec(
                    "SELECT pg_replication_origin_xact_setup($1::pg_lsn, to_timestamp(946684800 + $2::bigint / 1000000.0))",
                    &[Some(end.as_bytes()), Some(time.as_bytes())],
                )
                .await?;
            // In a fleet, the instances that follow this applier hear
            // which of their commits are applied, as they commit.
            if self.shared.fleet.is_some() {
                let tokens = g.txns.iter().flat_map(|t| t.tokens.iter());
                for payload in super::follower::notifications(tokens) {
                    apply
                        .exec(
                            &format!("SELECT pg_notify('{}', $1)", super::follower::CHANNEL),
                            &[Some(payload.as_bytes())],
                        )
                        .await?;
                }
            }
            apply.exec("COMMIT", &[]).await?;
            apply.sync().await
        };
        if let Err(e) = committed.await {
            let _ = apply.take_counts();
            if let ConnError::Failed { .. } = e {
                let _ = apply.simple("ROLLBACK").await;
                if self.careful_until.is_none() {
                    warn!(error = %e, to = %self.to(), "a group of the log's transactions failed; applying them again one change at a time");
                    return Err(Ended::Careful(g.end));
                }
            }
            return Err(self.failed(e));
        }
        for (n, count) in apply.take_counts() {
            if let Some(s) = g.sent.get(&n) {
                self.check(s, count);
            }
        }
        let log = &self.shared.log;
        for t in &g.txns {
            for token in &t.tokens {
                log.applied(token);
            }
            if !t.marked && !t.tables.is_empty() {
                log.note_foreign(&t.tables.iter().cloned().collect::<Vec<_>>());
            }
        }
        tracing::debug!(to = %self.to(), transactions = g.txns.len(), changes = g.changes, end = %end, "log group applied");
        log.note_applied(g.txns.len() as u64, g.changes, end);
        Ok(g.end)
    }

    /// What a failed statement means for the run.
    pub(super) fn failed(&self, e: ConnError) -> Ended {
        match e {
            ConnError::Failed { .. } if self.careful_until.is_none() => {
                // The group is applied again one change at a time from its
                // start, through the transaction that failed.
                Ended::Careful(self.position)
            }
            other => Ended::Retry(format!("applying to {}: {other}", self.to())),
        }
    }
}
