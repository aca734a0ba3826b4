//! PostgreSQL's log source (`mirror.source = "log"` or `"auto"`): the
//! mirror applies what the authority committed, read from its own log by
//! logical decoding, instead of rebuilding each write from its statement.
//!
//! - [`setup`]: what the servers need (wal_level, logins, slot,
//!   publications), checked and made;
//! - [`applier`]: the task applying the log in commit order;
//! - [`statements`]: the SQL each change is applied with;
//! - [`conn`]: the applying side's pipelined connection.
//!
//! Sessions mark each transaction that wrote and wait (sync mode) until the
//! applier applied it (`engine::logsync`).

mod applier;
mod conn;
mod ddl;
mod follower;
mod plans;
pub mod setup;
pub mod statements;

use crate::backend::catch_up::Apply;
use crate::backend::pg::{close, literal, open_simple, run};
use crate::engine::logsync::MARK_PREFIX;
use crate::shared::registry::LogTask;
use crate::shared::{Boxed, LogSource, Shared};
use applier::{Ended, Run};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use turnout_config::{MirrorErrorPolicy, MirrorSource};
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::{Phase, Side};

/// PostgreSQL's log source.
pub struct PgLog;

impl LogSource for PgLog {
    fn start<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        phase: Phase,
        resumed: bool,
    ) -> Boxed<'a, Result<String, String>> {
        Box::pin(start(shared, phase, resumed))
    }

    fn switch<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        from: Side,
        to: Side,
        apply: Apply,
        limit: Duration,
    ) -> Boxed<'a, Result<String, String>> {
        Box::pin(switch(shared, from, to, apply, limit))
    }

    fn finish<'a>(&'a self, shared: &'a Arc<Shared>) -> Boxed<'a, Result<String, String>> {
        Box::pin(finish(shared))
    }

    fn follow<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        phase: Phase,
    ) -> Boxed<'a, Result<String, String>> {
        Box::pin(follower::follow(shared, phase))
    }

    fn check<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        authority: Side,
    ) -> Boxed<'a, Result<(String, Vec<String>), String>> {
        Box::pin(check(shared, authority))
    }

    fn drain<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        limit: Duration,
    ) -> Boxed<'a, Result<(), String>> {
        Box::pin(async move {
            match shared.log.source() {
                Some(from) if !shared.log.is_stalled() => caught_up(shared, from, limit)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Some(_) => Err("the log applier is not applying".into()),
                None => Ok(()),
            }
        })
    }
}

/// The source turnout would take with `authority` the authority, and what
/// to change on the servers.
async fn check(shared: &Arc<Shared>, authority: Side) -> Result<(String, Vec<String>), String> {
    let mirror = authority.other();
    match usable(shared, authority).await {
        Err(why) if shared.log_source == MirrorSource::Log => {
            Err(format!("mirror.source = \"log\": {why}"))
        }
        Err(why) => Ok((
            format!("mirror source: statements (row images), because {why}"),
            Vec::new(),
        )),
        Ok(()) => {
            let notes = setup::notes(
                shared.target(authority),
                shared.target(mirror),
                &shared.live().mapping,
            )
            .await
            .unwrap_or_else(|e| vec![format!("(the tables could not be read: {e})")]);
            Ok((
                format!("mirror source: the log of {authority} (logical decoding), applied to {mirror} in commit order"),
                notes,
            ))
        }
    }
}

/// Whether `authority`'s log can feed the mirror: `Err` with the reason
/// statements (row images) are used instead.
pub(super) async fn usable(shared: &Shared, authority: Side) -> Result<(), String> {
    match shared.log_source {
        MirrorSource::Images => return Err("mirror.source = \"images\"".into()),
        MirrorSource::Auto if shared.mirror_policy == MirrorErrorPolicy::Fail => return Err(
            "mirror.on_error = \"fail\" needs each write mirrored before the authority commits it"
                .into(),
        ),
        _ => {}
    }
    setup::check(
        shared.target(authority),
        shared.target(authority.other()),
        &shared.log_slot,
    )
    .await
}

/// The source for `phase`, set up and started.
async fn start(shared: &Arc<Shared>, phase: Phase, resumed: bool) -> Result<String, String> {
    metrics::gauge!("turnout_log_max_lag_bytes").set(shared.max_log_lag as f64);
    let Some(mirror) = phase.mirror() else {
        shared.log.set_source(None);
        let line = format!("no mirror in phase {phase}");
        shared.log_choice.store(Arc::new(line.clone()));
        return Ok(line);
    };
    let authority = mirror.other();
    if let Err(why) = usable(shared, authority).await {
        let unreachable = why.contains("cannot log in");
        if shared.log_source == MirrorSource::Log && !(resumed && unreachable) {
            return Err(format!("mirror.source = \"log\": {why}"));
        }
        if !(resumed && unreachable && shared.log_source == MirrorSource::Log) {
            let line = format!("mirror source: statements (row images), because {why}");
            shared.log.set_source(None);
            shared.log_choice.store(Arc::new(line.clone()));
            return Ok(line);
        }
        // A restart while a side is down: the log it kept is applied once
        // it is back (the applier tries until then).
        warn!("{why}; the log applier tries until it can");
        spawn(shared, authority, Vec::new());
        let line = format!("mirror source: the log of {authority} (waiting: {why})");
        shared.log_choice.store(Arc::new(line.clone()));
        return Ok(line);
    }
    let left_out = prepare(shared, authority).await?;
    // In a fleet, a leader before this one may still hold the slot.
    if shared.fleet.is_some() && follower::free_slot(shared, authority).await {
        warn!(slot = %shared.log_slot, "log: the slot was still streamed to an applier whose lease ended: that stream was ended");
    }
    spawn(shared, authority, left_out);
    let line = format!(
        "mirror source: the log of {authority} (logical decoding, slot {:?}), applied to {mirror} in commit order",
        shared.log_slot
    );
    shared.log_choice.store(Arc::new(line.clone()));
    Ok(line)
}

/// The publications and the slot on `authority`; the tables the log
/// cannot carry whole, recorded.
pub(super) async fn prepare(
    shared: &Arc<Shared>,
    authority: Side,
) -> Result<Vec<setup::Table>, String> {
    let mirror = authority.other();
    let mapping = shared.live().mapping.clone();
    // The publications, then the event trigger (a table made from then on
    // joins the log in the transaction that makes it), then the tables made
    // in between.
    setup::publish(
        shared.target(authority),
        shared.target(mirror),
        &shared.log_slot,
        &mapping,
        None,
    )
    .await?;
    if !setup::ensure_event_trigger(shared.target(authority), &shared.log_slot).await? {
        warn!(side = %authority, "turnout's replication login is not a superuser: a table made on {authority} while mirroring joins the log at the next upkeep (a few seconds), and its rows written before are recorded as missing");
    }
    let published = setup::publish(
        shared.target(authority),
        shared.target(mirror),
        &shared.log_slot,
        &mapping,
        None,
    )
    .await?;
    note_published(shared, authority, &published, None);
    let (slot, note) = setup::ensure_slot(shared.target(authority), &shared.log_slot).await?;
    if let Some(note) = note {
        record(shared, mirror, "", &note);
    }
    if slot == setup::Slot::Created {
        info!(side = %authority, slot = %shared.log_slot, "replication slot made");
    }
    Ok(published.missing)
}

fn record(shared: &Shared, side: Side, table: &str, detail: &str) {
    let mut d = Divergence::new(DivergenceKind::MirrorError, side, "(log)", detail);
    if !table.is_empty() {
        d.table = Some(table.to_string());
    }
    shared.records.mirror_error();
    shared.records.divergence(d);
}

/// What the publications hold, as the sessions and the records need it:
/// tables without a replica identity (their UPDATEs and DELETEs are the
/// sessions' to mirror), tables the mirror does not have, and (after the
/// first time) tables that came into the log late.
fn note_published(
    shared: &Shared,
    authority: Side,
    now: &setup::Published,
    before: Option<&setup::Published>,
) {
    let mirror = authority.other();
    let unlogged: HashSet<String> = now.inserts.iter().map(|t| t.name.to_lowercase()).collect();
    shared.log.unlogged.store(Arc::new(unlogged));
    if before.is_none() {
        for t in &now.missing {
            record(
                shared,
                mirror,
                &format!("{}.{}", t.schema, t.name),
                &format!(
                    "{mirror} has no table {}.{}: its writes are not mirrored",
                    t.schema, t.name
                ),
            );
        }
    }
    // (Tables made later: each UPDATE or DELETE of theirs is recorded.)
    if before.is_none() {
        for t in &now.inserts {
            note_unlogged(shared, mirror, &t.schema, &t.name);
        }
    }
    if before.is_some() {
        for t in &now.added {
            record(
                shared,
                mirror,
                &format!("{}.{}", t.schema, t.name),
                &format!(
                    "{}.{} came into the log only now (made while mirroring, and no event trigger put it in at once): its rows written before are not on {mirror} unless the backfill copies them",
                    t.schema, t.name
                ),
            );
        }
    }
}

/// Says once (in turnout's log) that `schema.name` lacks a replica
/// identity, and what puts it in the log; each UPDATE or DELETE of it
/// through turnout is recorded when it happens.
fn note_unlogged(shared: &Shared, mirror: Side, schema: &str, name: &str) {
    let table = format!("{schema}.{name}");
    if !shared.log.first_note(&table) {
        return;
    }
    warn!(
        table = %table,
        "{table} has no replica identity: the log carries its inserts only (publishing its updates would make the authority refuse them); its UPDATEs and DELETEs do not reach {mirror}, and each one through turnout is recorded; ALTER TABLE {}.{} REPLICA IDENTITY FULL (or a primary key) puts them in the log",
        crate::backend::pglog::ident(schema),
        crate::backend::pglog::ident(name)
    );
}

/// Starts the applier reading `from`'s log (and its upkeep: the slot's
/// lag, the publications), replacing any running one.
fn spawn(shared: &Arc<Shared>, from: Side, left_out: Vec<setup::Table>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let applier = tokio::spawn(applier_task(shared.clone(), from, rx.clone()));
    let upkeep = tokio::spawn(upkeep_task(shared.clone(), from, rx, left_out));
    run_source(shared, from, tx, vec![applier, upkeep]);
}

/// `from`'s log feeds the mirror now, through `tasks` (stopped by `stop`):
/// they replace the running ones, which are told to stop.
pub(super) fn run_source(
    shared: &Shared,
    from: Side,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    shared.log.set_source(Some(from));
    let old = shared
        .pg
        .log_task
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(LogTask { from, stop, tasks });
    if let Some(old) = old {
        let _ = old.stop.send(true);
    }
}

/// Stops the running applier (and waits for it to let go of its slot).
pub(super) async fn stop_applier(shared: &Shared) {
    LogTask::stop_in(&shared.pg.log_task).await;
    shared.log.set_source(None);
    shared.log.stall(None);
}

async fn applier_task(
    shared: Arc<Shared>,
    from: Side,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut careful = None;
    let mut refused = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        let mut run = Run {
            shared: &shared,
            from,
            stop: &mut stop,
            careful_until: careful,
            refused: &mut refused,
            position: Default::default(),
        };
        let ended = run.run().await;
        careful = run.careful_until;
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        let pause = match ended {
            Ended::Stopped => return,
            Ended::Careful(at) => {
                careful = Some(at);
                shared.log.stall(None);
                Duration::ZERO
            }
            Ended::Retry(why) => {
                warn!(from = %from, error = %why, "log applier: starting again");
                shared.log.stall(None);
                let pause = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                pause
            }
            Ended::Refused(why) => {
                warn!(from = %from, "{why}");
                shared.log.stall(Some(why));
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Every few seconds: how much log the slot keeps (metric, guard), a slot
/// the server gave up, and tables that came to `from` since (they join
/// the publications).
async fn upkeep_task(
    shared: Arc<Shared>,
    from: Side,
    mut stop: tokio::sync::watch::Receiver<bool>,
    left_out: Vec<setup::Table>,
) {
    let target = shared.target(from).as_replication();
    let mut conn = None;
    let mut published: Option<setup::Published> = None;
    // The first upkeep brings the publications up to date at once.
    let mut last_publish = Instant::now() - Duration::from_secs(60);
    loop {
        let mut ddl = false;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shared.log.ddl_seen.notified() => ddl = true,
            _ = stop.changed() => return,
        }
        if conn.is_none() {
            conn = open_simple(&target).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        match setup::lag(c, from, &shared.log_slot).await {
            Ok((bytes, lost)) => {
                shared.log.note_lag(bytes);
                if lost {
                    match setup::ensure_slot(&target, &shared.log_slot).await {
                        Ok((_, Some(note))) => record(&shared, from.other(), "", &note),
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "turnout's slot could not be made again"),
                    }
                }
            }
            Err(_) => {
                conn = None;
                continue;
            }
        }
        if ddl || last_publish.elapsed() >= Duration::from_secs(10) {
            last_publish = Instant::now();
            let wanted = shared.log.refresh_wanted();
            let mapping = shared.live().mapping.clone();
            let published_now = setup::publish(
                shared.target(from),
                shared.target(from.other()),
                &shared.log_slot,
                &mapping,
                Some(&left_out),
            )
            .await;
            match published_now {
                Ok(now) => {
                    if let Some(before) = &published {
                        note_published(&shared, from, &now, Some(before));
                    }
                    published = Some(now);
                    shared.log.refreshed_upto(wanted);
                }
                Err(e) => {
                    // (Waiting sessions go on: their DDL's records tell.)
                    shared.log.refreshed_upto(wanted);
                    warn!(error = %e, "turnout's publications could not be brought up to date")
                }
            }
        }
    }
}

/// Why the applier could not be shown to have caught up.
#[derive(Debug)]
pub enum NotCaughtUp {
    /// The side whose log is read cannot be reached.
    Unreachable(String),
    /// It can, but its last commit was not applied in time.
    Behind(String),
}

impl std::fmt::Display for NotCaughtUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotCaughtUp::Unreachable(e) | NotCaughtUp::Behind(e) => f.write_str(e),
        }
    }
}

/// Waits until the applier applied everything `side` committed so far:
/// a mark committed now on `side`, applied.
pub async fn caught_up(
    shared: &Shared,
    side: Side,
    limit: Duration,
) -> Result<Duration, NotCaughtUp> {
    let started = Instant::now();
    let (token, waiter) = shared.log.mark();
    let mut conn = match open_simple(&shared.target(side).as_replication()).await {
        Ok(c) => c,
        Err(e) => {
            shared.log.forget(waiter);
            return Err(NotCaughtUp::Unreachable(e.to_string()));
        }
    };
    let marked = run(
        &mut conn,
        &format!(
            "SELECT pg_logical_emit_message(true, {}, {})",
            literal(MARK_PREFIX),
            literal(&token)
        ),
        side,
    )
    .await;
    close(&mut conn).await;
    if let Err(e) = marked {
        shared.log.forget(waiter);
        return Err(NotCaughtUp::Unreachable(e.to_string()));
    }
    if shared.log.wait_for(waiter, limit).await {
        Ok(started.elapsed())
    } else {
        Err(NotCaughtUp::Behind(format!(
            "the log applier did not apply {side}'s last commit within {} ms{}",
            limit.as_millis(),
            shared.log.stopped_suffix()
        )))
    }
}

/// A change of authority: everything `from` committed is applied to `to`;
/// then `to`'s log feeds `from` when it can, else statements do.
async fn switch(
    shared: &Arc<Shared>,
    from: Side,
    to: Side,
    apply: Apply,
    limit: Duration,
) -> Result<String, String> {
    let feeding = shared.log.feeds_from(from);
    let next = usable(shared, to).await;
    if apply == Apply::Preview {
        let first = if feeding {
            format!("the log applier would finish applying {from}'s commits")
        } else {
            "no log applier runs".to_string()
        };
        let then = match &next {
            Ok(()) => format!("then {to}'s log would feed {from}"),
            Err(why) => format!("then statements would feed {from} ({why})"),
        };
        return Ok(format!("{first}; {then}"));
    }
    let mut line = String::new();
    if feeding {
        match caught_up(shared, from, limit).await {
            Ok(took) => line.push_str(&format!(
                "log: every commit of {from} applied to {to} ({:.1} ms)",
                took.as_secs_f64() * 1000.0
            )),
            // (A rollback because `from` failed.) The change goes on: the
            // side that can be reached serves. In sync mode every commit
            // acknowledged to a client after waiting was applied to `to`;
            // those in flight when `from` went (and any answered without
            // waiting) may be on `from` alone: recorded.
            Err(NotCaughtUp::Unreachable(e)) => {
                let unwaited = shared
                    .log
                    .figures
                    .unwaited
                    .load(std::sync::atomic::Ordering::Relaxed);
                let acknowledged = if shared.log.sync && unwaited == 0 {
                    format!("every commit acknowledged to a client is on {to}")
                } else {
                    format!("{unwaited} commit(s) were answered before the applier applied them and may be on {from} alone")
                };
                let detail = format!(
                    "{from} could not be reached to finish applying its log ({e}): {acknowledged}; transactions committing when {from} failed may be on {from} alone (verify --repair once it is back)"
                );
                record(shared, to, "", &detail);
                line.push_str(&format!("log: {detail}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    match next {
        Ok(()) => {
            let left_out = prepare(shared, to)
                .await
                .map_err(|e| format!("{to}'s log cannot feed {from}: {e}"))?;
            stop_applier(shared).await;
            spawn(shared, to, left_out);
            // Commits after the change wait for the new direction's
            // applier: it streams before the change goes on (within the
            // window; else they are answered without waiting, counted).
            let began = Instant::now();
            while shared.log.is_stalled() && began.elapsed() < limit {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if feeding {
                // The old direction's slot would keep from's log forever.
                drop_later(shared, from);
            }
            line.push_str(&format!("; {to}'s log feeds {from} now"));
            shared.log_choice.store(Arc::new(format!(
                "mirror source: the log of {to}, applied to {from} in commit order"
            )));
        }
        Err(why) => {
            stop_applier(shared).await;
            if feeding {
                drop_later(shared, from);
            }
            line.push_str(&format!("; statements feed {from} now ({why})"));
            shared.log_choice.store(Arc::new(format!(
                "mirror source: statements (row images), because {why}"
            )));
        }
    }
    Ok(line.trim_start_matches("; ").to_string())
}

/// Drops turnout's slot and publications on `side` (a direction no longer
/// fed): now, or, while `side` cannot be reached, every 10 s until it can
/// (a slot left there would keep its log forever).
fn drop_later(shared: &Arc<Shared>, side: Side) {
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            // Not while that side's log feeds the other again.
            if shared.log.source() == Some(side) {
                return;
            }
            match setup::drop_all(shared.target(side), &shared.log_slot).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(%side, error = %e, "turnout's slot and publications could not be dropped yet; trying again in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    });
}

/// `finalized`: nothing is mirrored any more; the slot must not keep the
/// authority's log.
async fn finish(shared: &Arc<Shared>) -> Result<String, String> {
    let Some(from) = shared.log.source() else {
        return Ok(String::new());
    };
    stop_applier(shared).await;
    setup::drop_all(shared.target(from), &shared.log_slot)
        .await
        .map(|()| format!("log: turnout's slot and publications on {from} dropped"))
}
