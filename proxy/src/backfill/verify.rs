//! Verify: both sides checksummed by primary-key range (row count and an
//! order-independent sum of row hashes, computed in each database), a
//! mismatched range compared row by row, and the rows found missing, extra
//! or differing on the mirror named. Each range is checksummed while its
//! rows are share-locked on the authority, so no write to them is half
//! applied meanwhile; rows still differing after a short wait are reported.
//! `--repair` copies them again from the authority under the same lock (and
//! deletes the mirror's extra rows). The authority is old, or new in
//! `writes_new` (then without a `[mapping]`: the comparison is new to old).

use super::sql::{Conn, Dialect, Rows, TableShape};
use super::{Env, JobError};
use crate::backend::rows::{RowError, Rows as Named};
use crate::engine::records::Horizon;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};
use turnout_control::Side;

/// Rows named per table in the report; the counts go on.
const NAMED: usize = 100;
/// The wait before rows that differed are compared again.
const RECHECK: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Default)]
struct TableReport {
    ranges: u64,
    rows: u64,
    missing: u64,
    extra: u64,
    differing: u64,
    repaired: u64,
    named: Vec<String>,
    done: bool,
    /// Not verified: why (a table without a primary key).
    skipped: Option<String>,
    /// The rows the authority has (counted, or its statistics).
    expected: u64,
}

#[derive(Debug, Default)]
struct State {
    /// idle, running, done, failed.
    state: String,
    repair: bool,
    only: Option<String>,
    tables: BTreeMap<String, TableReport>,
    error: Option<String>,
    /// The last finished run over every table found no difference (or
    /// repaired every one).
    last_clean: bool,
    /// The side the running verify compares (the mirror), and where it
    /// stood when the run started.
    started: Option<(Side, Horizon)>,
    /// The mirror a run over every table last left equal to the authority,
    /// and where it stood when that run started: what was recorded against
    /// that side before then is repaired.
    clean_since: Option<(Side, Horizon)>,
    /// When the running (or last) verify started.
    began: Option<std::time::Instant>,
    /// The same, and when it ended, as times (RFC 3339).
    started_at: Option<String>,
    finished_at: Option<String>,
}

/// The verify's progress and last report; one per listener.
#[derive(Debug, Default)]
pub struct Verify(Mutex<State>);

impl Verify {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where `side` stood when the last verify of every table that left
    /// it (as the mirror) equal to the authority started.
    pub fn clean_since(&self, side: Side) -> Option<Horizon> {
        match &self.lock().clean_since {
            Some((s, h)) if *s == side => Some(h.clone()),
            _ => None,
        }
    }

    /// Whether the last verify of every table found both sides equal.
    pub fn clean(&self) -> bool {
        self.lock().last_clean
    }

    /// `verify start [TABLE] [--repair]`.
    pub fn start(
        &self,
        env: &Arc<dyn Env>,
        only: Option<String>,
        repair: bool,
    ) -> Result<String, JobError> {
        let (_, to) = super::verify_direction(env)?;
        let horizon = Horizon {
            at: turnout_control::readdiff::now_rfc3339(),
            missed: env.records().missed_here(to),
        };
        {
            let mut s = self.lock();
            if s.state == "running" {
                return Err(JobError::VerifyRunning);
            }
            *s = State {
                state: "running".into(),
                repair,
                only: only.clone(),
                last_clean: s.last_clean,
                started: Some((to, horizon)),
                clean_since: s.clean_since.clone(),
                began: Some(std::time::Instant::now()),
                started_at: Some(turnout_control::readdiff::now_rfc3339()),
                ..State::default()
            };
        }
        let env = env.clone();
        tokio::spawn(async move {
            let result = run(&env, only.clone(), repair).await;
            let mut s = env.backfill().verify.lock();
            s.finished_at = Some(turnout_control::readdiff::now_rfc3339());
            match result {
                Ok(()) => {
                    let differences: u64 = s
                        .tables
                        .values()
                        .map(|t| (t.missing + t.extra + t.differing).saturating_sub(t.repaired))
                        .sum();
                    s.state = "done".into();
                    let skipped = s.tables.values().any(|t| t.skipped.is_some());
                    if only.is_none() {
                        s.last_clean = differences == 0 && !skipped;
                    } else if differences > 0 {
                        s.last_clean = false;
                    }
                    if s.last_clean && only.is_none() {
                        s.clean_since = s.started.clone();
                    } else if differences > 0 {
                        s.clean_since = None;
                    }
                    info!(differences, "verify done");
                }
                Err(e) => {
                    warn!(error = %e, "verify stopped");
                    s.state = "failed".into();
                    s.error = Some(e);
                }
            }
        });
        Ok(match (&self.lock().only, repair) {
            (Some(t), false) => format!("verify of {t} started"),
            (Some(t), true) => format!("verify of {t} started, with repair"),
            (None, false) => "verify of every table started".into(),
            (None, true) => "verify of every table started, with repair".into(),
        })
    }

    /// `verify status [TABLE]`.
    pub fn status(&self, table: Option<&str>) -> Value {
        let s = self.lock();
        let tables: Vec<Value> = s
            .tables
            .iter()
            .filter(|(name, _)| table.is_none_or(|t| t == name.as_str()))
            .map(|(name, t)| {
                json!({
                    "table": name,
                    "ranges": t.ranges,
                    "rows": t.rows,
                    "missing": t.missing,
                    "extra": t.extra,
                    "differing": t.differing,
                    "repaired": t.repaired,
                    "rows_named": t.named,
                    "done": t.done,
                    "skipped": t.skipped,
                })
            })
            .collect();
        let sum = |f: fn(&TableReport) -> u64| s.tables.values().map(f).sum::<u64>();
        // Progress: rows compared of the rows expected (a table done counts
        // whole), the rate since the start, the time left at that rate.
        let (rows, expected) = (
            sum(|t| t.rows),
            s.tables
                .values()
                .map(|t| {
                    if t.done {
                        t.rows
                    } else {
                        t.expected.max(t.rows)
                    }
                })
                .sum::<u64>(),
        );
        let running = s.state == "running";
        let percent = match (s.state.as_str(), expected) {
            ("done", _) => 100.0,
            (_, 0) => 0.0,
            _ => (rows as f64 * 100.0 / expected as f64).min(99.9),
        };
        let elapsed = s.began.map(|b| b.elapsed().as_secs_f64()).unwrap_or(0.0);
        let rate = if running && elapsed > 0.5 {
            rows as f64 / elapsed
        } else {
            0.0
        };
        let eta =
            (running && rate > 0.0).then(|| (expected.saturating_sub(rows) as f64 / rate).round());
        json!({
            "ok": true,
            "state": if s.state.is_empty() { "idle" } else { s.state.as_str() },
            "repair": s.repair,
            "expected": expected,
            "started_at": s.started_at,
            "finished_at": s.finished_at,
            "percent": (percent * 10.0).round() / 10.0,
            "rate_per_sec": rate.round(),
            "eta_secs": eta,
            "rows": rows,
            "missing": sum(|t| t.missing),
            "extra": sum(|t| t.extra),
            "differing": sum(|t| t.differing),
            "repaired": sum(|t| t.repaired),
            "last_clean": s.last_clean,
            "error": s.error,
            "tables": tables,
        })
    }

    fn with_table(&self, name: &str, f: impl FnOnce(&mut TableReport)) {
        let mut s = self.lock();
        f(s.tables.entry(name.to_string()).or_default());
    }
}

/// Old's table `t` as new has it: its name and the compared columns (old's
/// and new's names, in the same order), and the key's names on new.
struct Sides {
    /// The authority, whose rows are locked and copied from.
    from: Side,
    /// The mirror, compared and repaired.
    to: Side,
    new_name: String,
    old_columns: Vec<String>,
    new_columns: Vec<String>,
    new_key: Vec<String>,
}

fn sides(env: &Arc<dyn Env>, t: &TableShape, (from, to): (Side, Side)) -> Sides {
    let mapping = env.mapping();
    let (new_name, old_columns, new_columns) = mapping.compared(&t.name, &t.columns);
    let new_key = t
        .key
        .iter()
        .map(|k| {
            old_columns
                .iter()
                .position(|c| c == k)
                .map(|i| new_columns[i].clone())
                .unwrap_or_else(|| k.clone())
        })
        .collect();
    Sides {
        from,
        to,
        new_name,
        old_columns,
        new_columns,
        new_key,
    }
}

async fn run(env: &Arc<dyn Env>, only: Option<String>, repair: bool) -> Result<(), String> {
    let v = &env.backfill().verify;
    let (from, to) = super::verify_direction(env).map_err(|e| e.to_string())?;
    let mut src = Conn::open(env.backends(), from).await?;
    let mut dst = Conn::open(env.backends(), to).await?;
    let all = super::tables(env.backends(), &mut src, from).await?;
    let mut chosen = super::chosen(all, only.as_deref())?;
    if repair {
        // Rows copied to referenced tables first (foreign keys on `to`).
        let edges = super::foreign_keys(&mut src, Dialect::of(env.backends().protocol), from).await;
        chosen = super::foreign_key_order(chosen, &edges);
    } else {
        // Tables mirroring recorded divergences for go first.
        chosen.sort_by_key(|t| !env.records().divergent_tables.contains_key(&t.name));
    }
    // The rows to compare, for progress: exact where cheap.
    let d = Dialect::of(env.backends().protocol);
    for t in &chosen {
        let mut n = t.estimated_rows.max(0);
        if n < super::COUNTED_BELOW && !t.key.is_empty() {
            if let Ok(rows) = src.query(&d.count(&t.name), from).await {
                if let Some(c) = rows
                    .iter()
                    .next()
                    .and_then(|r| r.str("n").ok()?.parse().ok())
                {
                    n = c;
                }
            }
        }
        v.with_table(&t.name, |r| r.expected = n as u64);
    }
    for t in &chosen {
        if t.key.is_empty() {
            v.with_table(&t.name, |r| {
                r.skipped = Some("no primary key: rows cannot be compared by key".into());
                r.done = true;
            });
            continue;
        }
        info!(table = %t.name, "verify of table starts");
        table(env, t, &mut src, &mut dst, repair, (from, to)).await?;
        v.with_table(&t.name, |r| r.done = true);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Difference {
    Missing,
    Extra,
    Differing,
}

/// Tries of one range before a lock that keeps being given up fails the
/// verify.
const LOCK_TRIES: u32 = 20;

/// Runs the step again while the server gives up its lock waits (clients
/// hold the rows), pausing longer each time; its result.
macro_rules! yielding {
    ($step:expr) => {{
        let mut tries = 0u32;
        loop {
            match $step.await {
                Err(e) if Dialect::lock_given_up(&e) && tries + 1 < LOCK_TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
                }
                other => break other,
            }
        }
    }};
}

async fn table(
    env: &Arc<dyn Env>,
    t: &TableShape,
    src: &mut Conn,
    dst: &mut Conn,
    repair: bool,
    direction: (Side, Side),
) -> Result<(), String> {
    let d = Dialect::of(env.backends().protocol);
    let n = env.backfill().batch_size();
    let s = sides(env, t, direction);
    let v = &env.backfill().verify;
    let mut after: Option<Vec<Option<String>>> = None;
    loop {
        let end = src
            .rows(&d.range_end(t, after.as_deref(), n), s.from)
            .await?
            .into_iter()
            .next();
        let old_range = d.range(&t.key, after.as_deref(), end.as_deref());
        let new_range = d.range(&s.new_key, after.as_deref(), end.as_deref());
        let (rows, found) = yielding!(range(d, t, &s, src, dst, &old_range, &new_range))?;
        let mut confirmed = Vec::new();
        if !found.is_empty() {
            // A write in flight may have been seen on one side only: the
            // rows are compared again after a moment.
            tokio::time::sleep(RECHECK).await;
            let keys: Vec<Vec<Option<String>>> = found.iter().map(|(k, _)| k.clone()).collect();
            let old_keys = d.key_in(&t.key, &keys);
            let new_keys = d.key_in(&s.new_key, &keys);
            confirmed = yielding!(range(d, t, &s, src, dst, &old_keys, &new_keys))?.1;
        }
        v.with_table(&t.name, |r| {
            r.ranges += 1;
            r.rows += rows;
            for (key, kind) in &confirmed {
                match kind {
                    Difference::Missing => r.missing += 1,
                    Difference::Extra => r.extra += 1,
                    Difference::Differing => r.differing += 1,
                }
                if r.named.len() < NAMED {
                    r.named.push(format!(
                        "{} on {}: {}",
                        match kind {
                            Difference::Missing => "missing",
                            Difference::Extra => "extra",
                            Difference::Differing => "differs",
                        },
                        s.to,
                        key_text(&t.key, key)
                    ));
                }
            }
        });
        if !confirmed.is_empty() {
            warn!(table = %t.name, rows = confirmed.len(), "verify found rows that differ");
            if repair {
                let fixed = yielding!(repair_rows(env, d, t, &s, src, dst, &confirmed))?;
                v.with_table(&t.name, |r| r.repaired += fixed);
            }
        }
        match end {
            Some(e) => after = Some(e),
            None => return Ok(()),
        }
    }
}

fn key_text(key: &[String], values: &[Option<String>]) -> String {
    key.iter()
        .zip(values)
        .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("NULL")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A range's row count and checksum, as [`Dialect::checksum`] answers.
fn checksum(answer: &Named, side: Side) -> Result<(u64, String), String> {
    let read = |e: RowError| format!("{side}: the checksum's answer: {e}");
    let row = answer
        .iter()
        .next()
        .ok_or_else(|| format!("{side}: no answer to the checksum"))?;
    Ok((
        row.get("row_count").map_err(read)?,
        row.str("checksum").map_err(read)?.to_string(),
    ))
}

/// The rows of one range (or key list) that differ: checksums first, row
/// by row when they do not agree. Old's rows are share-locked meanwhile.
/// Also old's row count.
async fn range(
    d: Dialect,
    t: &TableShape,
    s: &Sides,
    src: &mut Conn,
    dst: &mut Conn,
    old_range: &str,
    new_range: &str,
) -> Result<(u64, Vec<(Vec<Option<String>>, Difference)>), String> {
    src.rows("BEGIN", s.from).await?;
    let result = async {
        src.rows(d.short_lock_wait(), s.from).await?;
        // In key order, as writers that lock several rows mostly do.
        let lock = format!(
            "SELECT 1 FROM {} WHERE {old_range} ORDER BY {} {}",
            d.ident(&t.name),
            d.list(&t.key),
            d.share_lock()
        );
        src.rows(&lock, s.from).await?;
        let a = src
            .query(&d.checksum(&t.name, &s.old_columns, old_range), s.from)
            .await?;
        let b = dst
            .query(&d.checksum(&s.new_name, &s.new_columns, new_range), s.to)
            .await?;
        let (rows, old_sum) = checksum(&a, s.from)?;
        if (rows, old_sum) == checksum(&b, s.to)? {
            return Ok((rows, Vec::new()));
        }
        let old_rows = src
            .rows(
                &d.row_hashes(&t.name, &t.key, &s.old_columns, old_range),
                s.from,
            )
            .await?;
        let new_rows = dst
            .rows(
                &d.row_hashes(&s.new_name, &s.new_key, &s.new_columns, new_range),
                s.to,
            )
            .await?;
        Ok((rows, differences(t.key.len(), &old_rows, &new_rows)))
    }
    .await;
    let _ = src.rows("COMMIT", s.from).await;
    result
}

fn differences(key_len: usize, old: &Rows, new: &Rows) -> Vec<(Vec<Option<String>>, Difference)> {
    let split = |r: &Vec<Option<String>>| {
        (
            r.get(..key_len).map(|k| k.to_vec()).unwrap_or_default(),
            r.get(key_len).cloned().flatten(),
        )
    };
    let new_map: HashMap<Vec<Option<String>>, Option<String>> = new.iter().map(split).collect();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in old {
        let (k, h) = split(r);
        match new_map.get(&k) {
            None => out.push((k.clone(), Difference::Missing)),
            Some(nh) if *nh != h => out.push((k.clone(), Difference::Differing)),
            Some(_) => {}
        }
        seen.insert(k);
    }
    for r in new {
        let (k, _) = split(r);
        if !seen.contains(&k) {
            out.push((k, Difference::Extra));
        }
    }
    out
}

/// Copies the differing rows again from the authority under a lock there;
/// a row it no longer has is deleted on the mirror. The rows fixed.
#[allow(clippy::too_many_arguments)]
async fn repair_rows(
    env: &Arc<dyn Env>,
    d: Dialect,
    t: &TableShape,
    s: &Sides,
    src: &mut Conn,
    dst: &mut Conn,
    rows: &[(Vec<Option<String>>, Difference)],
) -> Result<u64, String> {
    let keys: Vec<Vec<Option<String>>> = rows.iter().map(|(k, _)| k.clone()).collect();
    src.rows("BEGIN", s.from).await?;
    let result = async {
        src.rows(d.short_lock_wait(), s.from).await?;
        let current = src.rows(&d.rows_by_key(t, &keys), s.from).await?;
        if !current.is_empty() {
            super::upsert(env, d, t, &current, dst, s.to).await?;
        }
        let key_at: Vec<usize> = t
            .key
            .iter()
            .filter_map(|k| t.columns.iter().position(|c| c == k))
            .collect();
        let present: std::collections::HashSet<Vec<Option<String>>> = current
            .iter()
            .map(|r| {
                key_at
                    .iter()
                    .map(|&i| r.get(i).cloned().flatten())
                    .collect()
            })
            .collect();
        let gone: Vec<Vec<Option<String>>> = keys
            .iter()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        if !gone.is_empty() {
            dst.rows(&d.delete_keys(&s.new_name, &s.new_key, &gone), s.to)
                .await?;
        }
        Ok::<u64, String>(keys.len() as u64)
    }
    .await;
    match result {
        Ok(n) => {
            src.rows("COMMIT", s.from).await?;
            info!(table = %t.name, rows = n, from = %s.from, to = %s.to, "verify repaired rows");
            Ok(n)
        }
        Err(e) => {
            let _ = src.rows("ROLLBACK", s.from).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_missing_extra_and_differing_rows() {
        let row = |k: &str, h: &str| vec![Some(k.to_string()), Some(h.to_string())];
        let old = vec![row("1", "a"), row("2", "b"), row("3", "c")];
        let new = vec![row("1", "a"), row("3", "x"), row("4", "d")];
        let d = differences(1, &old, &new);
        assert_eq!(
            d,
            vec![
                (vec![Some("2".to_string())], Difference::Missing),
                (vec![Some("3".to_string())], Difference::Differing),
                (vec![Some("4".to_string())], Difference::Extra),
            ]
        );
    }
}
