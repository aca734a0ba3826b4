//! MySQL/MariaDB's log source (`mirror.source = "log"` or `"auto"`): the
//! mirror applies what the authority committed, read from its row-based
//! binary log, instead of re-running each write's statement.
//!
//! - [`setup`]: what the servers need, checked with the reason; the
//!   position kept on the mirror's side;
//! - [`applier`]: the task replaying the log in commit order.
//!
//! A session's commit (sync mode) is answered once the applier passed the
//! authority's position read right after it: asked on one shared
//! connection, so concurrent commits share one question, and nothing is
//! sent on the client's own connection (its `ROW_COUNT()`, warnings and
//! `LAST_INSERT_ID()` stay as the server left them).

mod applier;
mod mapped;
pub mod setup;

use crate::backend::binlog::{position_text, Position};
use crate::backend::catch_up::Apply;
use crate::backend::mysql::open_simple;
use crate::shared::registry::LogTask;
use crate::shared::{Boxed, LogSource, Shared};
use applier::{reached, record, Ended, Run};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use turnout_config::{MirrorErrorPolicy, MirrorSource};
use turnout_control::{Phase, Side};

/// MySQL/MariaDB's log source.
pub struct MyLog;

impl LogSource for MyLog {
    fn follow<'a>(
        &'a self,
        _shared: &'a Arc<Shared>,
        _phase: Phase,
    ) -> Boxed<'a, Result<String, String>> {
        Box::pin(async {
            Err("a fleet cannot share one binary-log applier yet: use mirror.source = \"statements\" with [fleet]".to_string())
        })
    }

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
                Some(from) if !shared.log.is_stalled() => {
                    caught_up(shared, from, limit).await.map(|_| ())
                }
                Some(_) => Err("the log applier is not applying".into()),
                None => Ok(()),
            }
        })
    }
}

const STATEMENTS: &str = "mirror source: statements (pinned)";

async fn check(shared: &Arc<Shared>, authority: Side) -> Result<(String, Vec<String>), String> {
    let mirror = authority.other();
    match usable(shared, authority).await {
        Err(why) if shared.log_source == MirrorSource::Log => {
            Err(format!("mirror.source = \"log\": {why}"))
        }
        Err(why) => Ok((format!("{STATEMENTS}, because {why}"), Vec::new())),
        Ok(()) => Ok((
            format!("mirror source: the binary log of {authority} (row events replayed), applied to {mirror} in commit order"),
            setup::notes(shared.target(authority)).await,
        )),
    }
}

/// Whether `authority`'s binary log can feed the mirror: `Err` with the
/// reason statements are used instead.
async fn usable(shared: &Shared, authority: Side) -> Result<(), String> {
    match shared.log_source {
        MirrorSource::Images => return Err("mirror.source = \"statements\"".into()),
        MirrorSource::Auto if shared.fleet.is_some() => return Err(
            "[fleet]: a fleet cannot share one binary-log applier yet, so each instance mirrors its own writes"
                .into(),
        ),
        MirrorSource::Auto if shared.mirror_policy == MirrorErrorPolicy::Fail => return Err(
            "mirror.on_error = \"fail\" needs each write mirrored before the authority commits it"
                .into(),
        ),
        _ => {}
    }
    let kept: Vec<String> = shared
        .running
        .load()
        .mirror
        .rules
        .iter()
        .filter(|r| !matches!(r.action, turnout_config::RuleAction::AlwaysMirror))
        .map(|r| format!("{:?}", r.fingerprint))
        .collect();
    if !kept.is_empty() {
        return Err(format!(
            "mirror.rules keep statements on one side ({}): the binary log carries every change old commits, so statements honour the rules instead",
            kept.join(", ")
        ));
    }
    setup::check(shared.target(authority), shared.target(authority.other())).await
}

async fn start(shared: &Arc<Shared>, phase: Phase, resumed: bool) -> Result<String, String> {
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
            let line = format!("{STATEMENTS}, because {why}");
            shared.log.set_source(None);
            shared.log_choice.store(Arc::new(line.clone()));
            return Ok(line);
        }
        // A restart while a side is down: the applier continues from the
        // kept position once it is back.
        warn!("{why}; the log applier tries until it can");
        spawn(shared, authority);
        let line = format!("mirror source: the binary log of {authority} (waiting: {why})");
        shared.log_choice.store(Arc::new(line.clone()));
        return Ok(line);
    }
    let from = begin(shared, authority, resumed).await?;
    spawn(shared, authority);
    let line = format!(
        "mirror source: the binary log of {authority} (row events from GTID {from}), applied to {mirror} in commit order"
    );
    shared.log_choice.store(Arc::new(line.clone()));
    Ok(line)
}

/// Where the applier starts: the position kept on the mirror when turnout
/// resumes a phase, else the authority's position now (mirroring begins).
async fn begin(shared: &Shared, authority: Side, resumed: bool) -> Result<String, String> {
    let slot = &shared.log_slot;
    let mirror = shared.target(authority.other());
    let mut conn = setup::apply_conn(mirror, slot)
        .await
        .map_err(|e| format!("{}: {e}", authority.other()))?;
    if resumed {
        if let Some(p) = setup::kept(&mut conn, slot).await? {
            return Ok(position_text(&p));
        }
    }
    let now = setup::position_now(shared.target(authority)).await?;
    let text = position_text(&now);
    crate::backend::mysql::rows(&mut conn, &setup::keep_sql(slot, &text))
        .await
        .map_err(|e| e.to_string())?;
    Ok(text)
}

fn spawn(shared: &Arc<Shared>, from: Side) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(applier_task(shared.clone(), from, rx.clone()));
    let lag = tokio::spawn(lag_task(shared.clone(), from, rx));
    *shared
        .mysql
        .binlog
        .last
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = (0, Position::new());
    shared.log.set_source(Some(from));
    let old = shared
        .mysql
        .log_task
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(LogTask {
            from,
            stop: tx,
            tasks: vec![task, lag],
        });
    if let Some(old) = old {
        let _ = old.stop.send(true);
    }
}

async fn stop_applier(shared: &Shared) {
    LogTask::stop_in(&shared.mysql.log_task).await;
    shared.log.set_source(None);
    shared.log.stall(None);
}

async fn applier_task(
    shared: Arc<Shared>,
    from: Side,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        let ended = Run {
            shared: &shared,
            from,
            stop: &mut stop,
        }
        .run()
        .await;
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        let pause = match ended {
            Ended::Stopped => return,
            Ended::Retry(why) => {
                warn!(from = %from, error = %why, "binary log applier: starting again");
                shared.log.stall(None);
                let pause = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                pause
            }
            Ended::Refused(why) => {
                warn!(from = %from, "{why}");
                shared.log.stall(Some(why));
                applier::REFUSED_PAUSE
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Every 2 s: how many bytes of `from`'s binary log the applier has not
/// read yet (metric, status, the flips' lag guard), from the files'
/// sizes (`SHOW BINARY LOGS`).
async fn lag_task(shared: Arc<Shared>, from: Side, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut conn = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
        if conn.is_none() {
            conn = open_simple(&shared.target(from).as_replication())
                .await
                .ok()
                .map(|(c, _)| c);
        }
        let Some(c) = conn.as_mut() else { continue };
        let files = match crate::backend::mysql::rows(c, "SHOW BINARY LOGS").await {
            Ok(r) => r.into_data(),
            Err(_) => {
                conn = None;
                continue;
            }
        };
        let (file, pos) = shared
            .mysql
            .binlog
            .read_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if file.is_empty() {
            continue;
        }
        let behind: u64 = files
            .iter()
            .filter_map(|row| {
                let name = row.first()?.as_deref()?;
                let size: u64 = row.get(1)?.as_deref()?.parse().ok()?;
                match name.cmp(file.as_str()) {
                    std::cmp::Ordering::Less => None,
                    std::cmp::Ordering::Equal => Some(size.saturating_sub(pos)),
                    std::cmp::Ordering::Greater => Some(size),
                }
            })
            .sum();
        shared.log.note_lag(behind);
    }
}

/// `side`'s position now, asked on the shared connection: a caller that
/// asked before a question was sent takes its answer.
async fn position(shared: &Shared, side: Side) -> Result<Position, String> {
    let b = &shared.mysql.binlog;
    let ticket = b.asked.fetch_add(1, Ordering::SeqCst);
    let mut conn = b.oracle.lock().await;
    {
        let last = b.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 > ticket && conn.as_ref().is_some_and(|(s, _)| *s == side) {
            return Ok(last.1.clone());
        }
    }
    let covers = b.asked.load(Ordering::SeqCst);
    if conn.as_ref().is_none_or(|(s, _)| *s != side) {
        let (c, _) = open_simple(&shared.target(side).as_replication())
            .await
            .map_err(|e| e.to_string())?;
        *conn = Some((side, c));
    }
    let Some((_, c)) = conn.as_mut() else {
        return Err("no connection".into());
    };
    match setup::position_on(c).await {
        Ok(p) => {
            *b.last.lock().unwrap_or_else(|p| p.into_inner()) = (covers, p.clone());
            Ok(p)
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

/// A token completed once the applier passed `wanted`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_table_is_read_off_the_words() {
        assert_eq!(
            written_table("UPDATE LOW_PRIORITY t SET a = 1").as_deref(),
            Some("t")
        );
        assert_eq!(
            written_table("delete from app.t where id = 1").as_deref(),
            Some("app.t")
        );
        assert_eq!(
            written_table("INSERT IGNORE INTO `t`(a) VALUES (1)").as_deref(),
            Some("`t`")
        );
        assert_eq!(written_table("SELECT 1"), None);
        assert_eq!(qualified("app", "`T`"), "app.t");
        assert_eq!(qualified("app", "other.t"), "app.t");
    }
}

fn wait_token(shared: &Shared, wanted: Position) -> crate::engine::logsync::Waiter {
    let (token, waiter) = shared.log.mark();
    let b = &shared.mysql.binlog;
    let mut pending = b.pending.lock().unwrap_or_else(|p| p.into_inner());
    let seen = b.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if reached(&seen, &wanted) {
        drop(pending);
        shared.log.applied(&token);
    } else {
        pending.push((wanted, token));
    }
    waiter
}

/// A session committed a write while the log feeds the mirror: in sync
/// mode its answer waits until the applier passed the authority's
/// position after it.
pub async fn committed(shared: &Shared, tables: &[String]) {
    let Some(from) = shared.log.source() else {
        return;
    };
    let db = &shared.target(from).database;
    for t in tables {
        *shared
            .mysql
            .binlog
            .ours
            .entry(qualified(db, t))
            .or_insert(0) += 1;
    }
    if !tables.is_empty() {
        note_foreign(shared);
    }
    if !shared.log.sync {
        return;
    }
    let wanted = match position(shared, from).await {
        Ok(p) => p,
        Err(e) => {
            warn!(side = %from, error = %e, "the authority's position could not be read: the commit is answered without waiting");
            return;
        }
    };
    let w = wait_token(shared, wanted);
    shared.log.wait(w).await;
}

/// `db.table` of a table as a statement names it (perhaps qualified,
/// perhaps quoted), lower-cased.
pub fn qualified(db: &str, table: &str) -> String {
    let name = table.rsplit('.').next().unwrap_or(table);
    format!("{}.{}", db, name.trim_matches('`')).to_lowercase()
}

/// The table a single-table write names (for the count of writes that
/// bypass turnout): after `UPDATE`, `DELETE ... FROM`, `INSERT|REPLACE
/// ... INTO`, skipping modifiers. A cheap look at its words, not a parse.
pub fn written_table(sql: &str) -> Option<String> {
    let words: Vec<&str> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .take(8)
        .collect();
    let first = words.first()?.to_ascii_uppercase();
    let after = match first.as_str() {
        "UPDATE" => 1,
        "DELETE" | "INSERT" | "REPLACE" => {
            words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("INTO"))?
                + 1
        }
        _ => return None,
    };
    words
        .iter()
        .skip(after)
        .find(|w| {
            ![
                "LOW_PRIORITY",
                "IGNORE",
                "QUICK",
                "DELAYED",
                "HIGH_PRIORITY",
            ]
            .iter()
            .any(|m| w.eq_ignore_ascii_case(m))
        })
        .map(|w| w.to_string())
}

/// Transactions of the log no turnout session committed, by table (the
/// applied ones less the ones turnout's sessions committed): the status's
/// writers that bypass turnout.
pub fn note_foreign(shared: &Shared) {
    let b = &shared.mysql.binlog;
    let figures = &shared.log.figures;
    let mut total = 0;
    for e in b.applied.iter() {
        let ours = b.ours.get(e.key()).map_or(0, |v| *v);
        let foreign = e.value().saturating_sub(ours);
        total += foreign;
        if foreign > 0 {
            figures.foreign_tables.insert(e.key().clone(), foreign);
        } else {
            figures.foreign_tables.remove(e.key());
        }
    }
    figures.foreign.store(total, Ordering::Relaxed);
}

/// Waits until the applier applied everything `side` committed so far.
async fn caught_up(shared: &Shared, side: Side, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let now = setup::position_now(shared.target(side)).await?;
    let w = wait_token(shared, now.clone());
    if shared.log.wait_for(w, limit).await {
        Ok(started.elapsed())
    } else {
        Err(format!(
            "the log applier did not apply {side}'s last commit ({}) within {} ms{}",
            position_text(&now),
            limit.as_millis(),
            shared.log.stopped_suffix()
        ))
    }
}

/// A change of authority: everything `from` committed is applied to `to`;
/// then `to`'s binary log feeds `from` (from `to`'s position now) when it
/// can, else statements do.
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
            Ok(()) => format!("then {to}'s binary log would feed {from}"),
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
            Err(e) if e.contains("cannot log in") || e.contains("connect") => {
                let detail = format!(
                    "{from} could not be reached to finish applying its log ({e}): transactions committing when {from} failed may be on {from} alone (verify --repair once it is back)"
                );
                record(shared, to, "", &detail);
                line.push_str(&format!("log: {detail}"));
            }
            Err(e) => return Err(e),
        }
    }
    stop_applier(shared).await;
    match next {
        Ok(()) => {
            begin(shared, to, false)
                .await
                .map_err(|e| format!("{to}'s binary log cannot feed {from}: {e}"))?;
            spawn(shared, to);
            line.push_str(&format!("; {to}'s binary log feeds {from} now"));
            shared.log_choice.store(Arc::new(format!(
                "mirror source: the binary log of {to}, applied to {from} in commit order"
            )));
        }
        Err(why) => {
            line.push_str(&format!("; statements feed {from} now ({why})"));
            shared
                .log_choice
                .store(Arc::new(format!("{STATEMENTS}, because {why}")));
        }
    }
    info!("{line}");
    Ok(line.trim_start_matches("; ").to_string())
}

/// `finalized`: nothing is mirrored any more; the kept position goes.
async fn finish(shared: &Arc<Shared>) -> Result<String, String> {
    let Some(from) = shared.log.source() else {
        return Ok(String::new());
    };
    stop_applier(shared).await;
    setup::forget(shared.target(from.other()), &shared.log_slot)
        .await
        .map(|()| format!("log: turnout's position on {} removed", from.other()))
}
