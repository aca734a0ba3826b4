//! Verify: both sides checksummed by primary-key range (row count and an
//! order-independent sum of row hashes, computed in each database), a
//! mismatched range compared row by row, and the rows found missing, extra
//! or differing on new named. Each range is checksummed while its rows are
//! share-locked on old, so no write to them is half applied meanwhile; rows
//! still differing after a short wait are reported. `--repair` copies them
//! again from old under the same lock (and deletes new's extra rows).

use super::sql::{Conn, Dialect, Rows, TableShape};
use super::{Env, JobError};
use crate::backend::rows::{RowError, Rows as Named};
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
}

/// The verify's progress and last report; one per listener.
#[derive(Debug, Default)]
pub struct Verify(Mutex<State>);

impl Verify {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
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
        super::can_run(env)?;
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
                ..State::default()
            };
        }
        let env = env.clone();
        tokio::spawn(async move {
            let result = run(&env, only.clone(), repair).await;
            let mut s = env.backfill().verify.lock();
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
        json!({
            "ok": true,
            "state": if s.state.is_empty() { "idle" } else { s.state.as_str() },
            "repair": s.repair,
            "rows": sum(|t| t.rows),
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
    new_name: String,
    old_columns: Vec<String>,
    new_columns: Vec<String>,
    new_key: Vec<String>,
}

fn sides(env: &Arc<dyn Env>, t: &TableShape) -> Sides {
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
        new_name,
        old_columns,
        new_columns,
        new_key,
    }
}

async fn run(env: &Arc<dyn Env>, only: Option<String>, repair: bool) -> Result<(), String> {
    let v = &env.backfill().verify;
    let mut src = Conn::open(env.backends(), Side::Old).await?;
    let mut dst = Conn::open(env.backends(), Side::New).await?;
    let all = super::tables(env.backends(), &mut src, Side::Old).await?;
    let mut chosen = super::chosen(all, only.as_deref())?;
    // Tables mirroring recorded divergences for go first.
    chosen.sort_by_key(|t| !env.records().divergent_tables.contains_key(&t.name));
    for t in &chosen {
        if t.key.is_empty() {
            v.with_table(&t.name, |r| {
                r.skipped = Some("no primary key: rows cannot be compared by key".into());
                r.done = true;
            });
            continue;
        }
        info!(table = %t.name, "verify of table starts");
        table(env, t, &mut src, &mut dst, repair).await?;
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

async fn table(
    env: &Arc<dyn Env>,
    t: &TableShape,
    src: &mut Conn,
    dst: &mut Conn,
    repair: bool,
) -> Result<(), String> {
    let d = Dialect::of(env.backends().protocol);
    let n = env.backfill().batch_size();
    let s = sides(env, t);
    let v = &env.backfill().verify;
    let mut after: Option<Vec<Option<String>>> = None;
    loop {
        let end = src
            .rows(&d.range_end(t, after.as_deref(), n), Side::Old)
            .await?
            .into_iter()
            .next();
        let old_range = d.range(&t.key, after.as_deref(), end.as_deref());
        let new_range = d.range(&s.new_key, after.as_deref(), end.as_deref());
        let (rows, found) = range(d, t, &s, src, dst, &old_range, &new_range).await?;
        let mut confirmed = Vec::new();
        if !found.is_empty() {
            // A write in flight may have been seen on one side only: the
            // rows are compared again after a moment.
            tokio::time::sleep(RECHECK).await;
            let keys: Vec<Vec<Option<String>>> = found.iter().map(|(k, _)| k.clone()).collect();
            let old_keys = d.key_in(&t.key, &keys);
            let new_keys = d.key_in(&s.new_key, &keys);
            confirmed = range(d, t, &s, src, dst, &old_keys, &new_keys).await?.1;
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
                        "{} {}",
                        match kind {
                            Difference::Missing => "missing on new:",
                            Difference::Extra => "extra on new:",
                            Difference::Differing => "differs on new:",
                        },
                        key_text(&t.key, key)
                    ));
                }
            }
        });
        if !confirmed.is_empty() {
            warn!(table = %t.name, rows = confirmed.len(), "verify found rows that differ");
            if repair {
                let fixed = repair_rows(env, d, t, &s, src, dst, &confirmed).await?;
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
    src.rows("BEGIN", Side::Old).await?;
    let result = async {
        let lock = format!(
            "SELECT 1 FROM {} WHERE {old_range} {}",
            d.ident(&t.name),
            d.share_lock()
        );
        src.rows(&lock, Side::Old).await?;
        let a = src
            .query(&d.checksum(&t.name, &s.old_columns, old_range), Side::Old)
            .await?;
        let b = dst
            .query(
                &d.checksum(&s.new_name, &s.new_columns, new_range),
                Side::New,
            )
            .await?;
        let (rows, old_sum) = checksum(&a, Side::Old)?;
        if (rows, old_sum) == checksum(&b, Side::New)? {
            return Ok((rows, Vec::new()));
        }
        let old_rows = src
            .rows(
                &d.row_hashes(&t.name, &t.key, &s.old_columns, old_range),
                Side::Old,
            )
            .await?;
        let new_rows = dst
            .rows(
                &d.row_hashes(&s.new_name, &s.new_key, &s.new_columns, new_range),
                Side::New,
            )
            .await?;
        Ok((rows, differences(t.key.len(), &old_rows, &new_rows)))
    }
    .await;
    let _ = src.rows("COMMIT", Side::Old).await;
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

/// Copies the differing rows again from old under a env lock; a row old
/// no longer has is deleted on new. The rows fixed.
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
    src.rows("BEGIN", Side::Old).await?;
    let result = async {
        let current = src.rows(&d.rows_by_key(t, &keys), Side::Old).await?;
        if !current.is_empty() {
            super::upsert(env, d, t, &current, dst).await?;
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
            dst.rows(&d.delete_keys(&s.new_name, &s.new_key, &gone), Side::New)
                .await?;
        }
        Ok::<u64, String>(keys.len() as u64)
    }
    .await;
    match result {
        Ok(n) => {
            src.rows("COMMIT", Side::Old).await?;
            info!(table = %t.name, rows = n, "verify repaired rows from old");
            Ok(n)
        }
        Err(e) => {
            let _ = src.rows("ROLLBACK", Side::Old).await;
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
