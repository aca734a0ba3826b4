//! Backfill: copies the rows that predate mirroring from the authority to
//! the other side, table by table in primary-key order, in batches. Each
//! batch is read under a env row lock on the authority and upserted on
//! the other side (through the schema mapping) before that lock is let go,
//! so a mirrored write to one of its rows, which must wait for the lock,
//! always lands after the copy and never under it. Progress is checkpointed
//! after every batch; a restart resumes from the checkpoint (a batch done
//! twice leaves the same rows). Driven by `turnout ctl backfill ...`.

mod order;
pub mod sql;
pub mod verify;

pub use order::foreign_key_order;
pub(crate) use order::foreign_keys;

use crate::backend::transport::Backends;
use crate::engine::records::Records;
use crate::mapping::{SchemaMap, Translation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sql::{Conn, Dialect, TableShape};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};
use turnout_control::{Phase, Side};

/// What the backfill and verify jobs need of the listener they serve: its
/// backends, the live mapping, the phase, the records; not the whole of its
/// shared state (which implements this).
pub trait Env: Send + Sync + 'static {
    fn backfill(&self) -> &Backfill;
    fn backends(&self) -> &Backends;
    /// The schema mapping now.
    fn mapping(&self) -> Arc<SchemaMap>;
    fn phase(&self) -> Phase;
    /// The listener is stopping.
    fn stopping(&self) -> bool;
    /// `mirror.mode = "async"`.
    fn async_mirroring(&self) -> bool;
    fn records(&self) -> &Records;
    /// Sessions opened in passthrough still open (their writes are not
    /// mirrored).
    fn passthrough_sessions(&self) -> usize {
        0
    }
}

/// Why a backfill or verify command was refused (what the operator is
/// told, with `ctl`'s exit code for a refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("a backfill is already {0}; pause, resume or watch it with backfill status")]
    BackfillRunning(String),
    #[error("a verify is already running; see verify status")]
    VerifyRunning,
    #[error("no backfill is running")]
    NotRunning,
    #[error("nothing to resume (backfill {0}); start one with backfill start")]
    NothingToResume(String),
    #[error("backfill copies old to new while writes are mirrored there; the phase is {0} (it runs in mirror and reads_new)")]
    Phase(Phase),
    #[error("backfill needs mirror.mode = \"sync\": a queued write could land before the copy of its row")]
    AsyncMirroring,
    #[error("{0} session(s) opened in passthrough are still open: their writes are not mirrored, so a copy made now could miss them; they close at their next idle moment (or when their clients close them)")]
    PassthroughSessions(usize),
    #[error("verify with new the authority compares new to old, which it does only without a [mapping] (the phase is {0})")]
    ReverseMapping(Phase),
}

/// Attempts at one batch before the backfill stops with the error.
const ATTEMPTS: u32 = 5;
/// The longest pause the adaptive throttle puts between batches.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The clients' mean statement time through turnout (exponentially
/// weighted, in microseconds): what the adaptive throttle watches. With no
/// statement in the last second there is no client load to protect.
#[derive(Debug)]
pub struct Latency {
    mean: AtomicU64,
    /// When the last statement finished, in ms since `since`.
    last: AtomicU64,
    since: Instant,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            mean: AtomicU64::new(0),
            last: AtomicU64::new(0),
            since: Instant::now(),
        }
    }
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let old = self.mean.load(Ordering::Relaxed);
        let new = if old == 0 {
            us
        } else {
            old - old / 16 + us / 16
        };
        self.mean.store(new.max(1), Ordering::Relaxed);
        self.last
            .store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The mean statement time now; 0 when clients are idle.
    pub fn micros(&self) -> u64 {
        let idle = (self.since.elapsed().as_millis() as u64)
            .saturating_sub(self.last.load(Ordering::Relaxed));
        if idle > 1000 {
            0
        } else {
            self.mean.load(Ordering::Relaxed)
        }
    }
}

/// One table's progress, as checkpointed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableProgress {
    pub rows: u64,
    pub estimated: i64,
    /// The key of the last row copied.
    pub last_key: Option<Vec<Option<String>>>,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Why the table could not be copied (the others went on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the checkpoint file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// idle, running, paused, done, failed.
    pub state: String,
    /// The one table asked for, when one was.
    pub only: Option<String>,
    pub tables: BTreeMap<String, TableProgress>,
    /// Every table old had at the last run.
    #[serde(default)]
    pub all: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Inner {
    cp: Checkpoint,
    /// A backfill task is alive.
    running: bool,
    started: Option<Instant>,
    rows_at_start: u64,
    throttled: bool,
}

/// The backfill's settings and progress; one per listener, in [`Shared`].
pub struct Backfill {
    batch: usize,
    rows_per_sec: u64,
    factor: f64,
    checkpoint: Option<PathBuf>,
    /// `backfill.required`: the reads flip waits for a backfill and a clean verify.
    pub required: bool,
    inner: Mutex<Inner>,
    paused: tokio::sync::watch::Sender<bool>,
    pub latency: Latency,
    pub verify: verify::Verify,
}

impl Backfill {
    pub fn new(config: &turnout_config::Config) -> Backfill {
        let b = &config.backfill;
        let checkpoint = b.checkpoint.clone().or_else(|| {
            config.state.file.as_ref().map(|f| {
                let mut p = f.clone().into_os_string();
                p.push(".backfill.json");
                PathBuf::from(p)
            })
        });
        let cp = checkpoint
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| match serde_json::from_str::<Checkpoint>(&t) {
                Ok(cp) => Some(cp),
                Err(e) => {
                    warn!(error = %e, "backfill checkpoint unreadable; starting without it");
                    None
                }
            })
            .unwrap_or_else(|| Checkpoint {
                state: "idle".into(),
                ..Checkpoint::default()
            });
        Backfill {
            batch: b.batch_size.max(1) as usize,
            rows_per_sec: b.rows_per_sec.max(0) as u64,
            factor: b.max_latency_factor,
            checkpoint,
            required: b.required,
            inner: Mutex::new(Inner {
                cp,
                running: false,
                started: None,
                rows_at_start: 0,
                throttled: false,
            }),
            paused: tokio::sync::watch::channel(false).0,
            latency: Latency::default(),
            verify: verify::Verify::default(),
        }
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the checkpoint (atomically: a new file renamed over the old).
    fn save(&self, cp: &Checkpoint) {
        let Some(path) = &self.checkpoint else {
            return;
        };
        let write = || -> std::io::Result<()> {
            let text = serde_json::to_vec_pretty(cp).map_err(std::io::Error::other)?;
            turnout_control::files::write_atomically(path, &text)
        };
        if let Err(e) = write() {
            warn!(path = %path.display(), error = %e, "backfill checkpoint not written");
        }
    }

    fn update(&self, f: impl FnOnce(&mut Checkpoint)) {
        let cp = {
            let mut inner = self.lock();
            f(&mut inner.cp);
            inner.cp.clone()
        };
        self.save(&cp);
    }

    /// Whether every table was copied (the reads flip's guard).
    pub fn complete(&self) -> bool {
        let inner = self.lock();
        let cp = &inner.cp;
        cp.state == "done"
            && cp.all.iter().all(|t| {
                cp.tables
                    .get(t)
                    .is_some_and(|p| p.done && p.skipped.is_none())
            })
    }

    /// Whether new may still lack rows of `table` that old has: a backfill
    /// is in use (required, or started) and has not copied the table yet.
    /// Mirrored writes then find rows missing there by design.
    pub fn may_lack_rows(&self, table: &str) -> bool {
        let inner = self.lock();
        let cp = &inner.cp;
        if cp.tables.is_empty() && cp.state == "idle" && !self.required {
            return false;
        }
        let bare = |n: &str| {
            n.rsplit('.')
                .next()
                .unwrap_or(n)
                .trim_matches('"')
                .to_lowercase()
        };
        let wanted = bare(table);
        !cp.tables
            .iter()
            .any(|(name, p)| p.done && p.skipped.is_none() && bare(name) == wanted)
    }

    /// `backfill start [TABLE]`: from the beginning (of TABLE, or of every
    /// table).
    pub fn start(&self, env: &Arc<dyn Env>, only: Option<String>) -> Result<String, JobError> {
        can_run(env)?;
        {
            let mut inner = self.lock();
            if inner.running {
                return Err(JobError::BackfillRunning(inner.cp.state.clone()));
            }
            // Started again: from the beginning of the table(s) named; the
            // other tables keep what was copied.
            let mut tables = std::mem::take(&mut inner.cp.tables);
            match &only {
                Some(t) => {
                    tables.remove(t);
                }
                None => tables.clear(),
            }
            inner.cp = Checkpoint {
                state: "running".into(),
                only: only.clone(),
                tables,
                all: std::mem::take(&mut inner.cp.all),
                error: None,
            };
        }
        let cp = self.lock().cp.clone();
        self.save(&cp);
        self.spawn(env);
        Ok(match only {
            Some(t) => format!("backfill of {t} started"),
            None => "backfill of every table started".into(),
        })
    }

    /// `backfill pause`: the running batch finishes; no more start.
    pub fn pause(&self) -> Result<String, JobError> {
        if !self.lock().running {
            return Err(JobError::NotRunning);
        }
        self.paused.send_replace(true);
        self.update(|cp| cp.state = "paused".into());
        Ok("backfill paused after its current batch".into())
    }

    /// `backfill resume`: a paused backfill goes on; one a restart or an
    /// error stopped starts again from its checkpoint.
    pub fn resume(&self, env: &Arc<dyn Env>) -> Result<String, JobError> {
        let (running, state) = {
            let i = self.lock();
            (i.running, i.cp.state.clone())
        };
        if running {
            self.paused.send_replace(false);
            self.update(|cp| cp.state = "running".into());
            return Ok("backfill resumed".into());
        }
        if state == "done" || state == "idle" {
            return Err(JobError::NothingToResume(state));
        }
        can_run(env)?;
        self.paused.send_replace(false);
        self.update(|cp| {
            cp.state = "running".into();
            cp.error = None;
        });
        self.spawn(env);
        Ok("backfill resumed from its checkpoint".into())
    }

    /// At start: a backfill the last run left running goes on.
    pub fn resume_at_start(&self, env: &Arc<dyn Env>) {
        let state = self.lock().cp.state.clone();
        if state != "running" {
            return;
        }
        match can_run(env) {
            Ok(()) => {
                info!("backfill resumes from its checkpoint");
                self.spawn(env);
            }
            Err(e) => warn!(reason = %e, "backfill checkpoint left running, not resumed"),
        }
    }

    fn spawn(&self, env: &Arc<dyn Env>) {
        {
            let mut inner = self.lock();
            inner.running = true;
            inner.started = Some(Instant::now());
            inner.rows_at_start = inner.cp.tables.values().map(|t| t.rows).sum();
        }
        self.paused.send_replace(false);
        let env = env.clone();
        tokio::spawn(async move {
            let result = run(&env).await;
            let b = &env.backfill();
            b.lock().running = false;
            match result {
                Ok(()) => {
                    info!("backfill done");
                    b.update(|cp| cp.state = "done".into());
                    metrics::gauge!("turnout_backfill_progress_ratio").set(1.0);
                }
                Err(e) => {
                    warn!(error = %e, "backfill stopped");
                    b.update(|cp| {
                        cp.state = "failed".into();
                        cp.error = Some(e);
                    });
                }
            }
            metrics::gauge!("turnout_backfill_running").set(0.0);
        });
    }

    /// `backfill status [TABLE]`.
    pub fn status(&self, table: Option<&str>) -> Value {
        let inner = self.lock();
        let cp = &inner.cp;
        let rows: u64 = cp.tables.values().map(|t| t.rows).sum();
        let estimated: i64 = cp
            .tables
            .values()
            .map(|t| t.estimated.max(t.rows as i64))
            .sum();
        let elapsed = inner.started.map(|s| s.elapsed().as_secs_f64());
        let rate = match elapsed {
            Some(e) if e > 0.5 && inner.running => {
                (rows.saturating_sub(inner.rows_at_start)) as f64 / e
            }
            _ => 0.0,
        };
        let left = (estimated - rows as i64).max(0) as f64;
        let eta = (rate > 0.0 && cp.state != "done").then(|| (left / rate).round());
        let percent = if cp.state == "done" {
            100.0
        } else if estimated > 0 {
            (rows as f64 * 100.0 / estimated as f64).min(99.9)
        } else {
            0.0
        };
        let tables: Vec<Value> = cp
            .tables
            .iter()
            .filter(|(name, _)| table.is_none_or(|t| t == name.as_str()))
            .map(|(name, t)| {
                json!({
                    "table": name,
                    "rows": t.rows,
                    "estimated": t.estimated,
                    "done": t.done,
                    "skipped": t.skipped,
                    "error": t.error,
                })
            })
            .collect();
        json!({
            "ok": true,
            "state": cp.state,
            "rows": rows,
            "estimated": estimated,
            "percent": (percent * 10.0).round() / 10.0,
            "rate_per_sec": rate.round(),
            "eta_secs": eta,
            "throttled": inner.throttled,
            "error": cp.error,
            "tables": tables,
        })
    }
}

/// Backfill needs old as the authority, something to copy to, and
/// synchronous mirroring (a queued write applied after a copy of its row
/// would be applied twice).
fn can_run(env: &Arc<dyn Env>) -> Result<(), JobError> {
    let phase = env.phase();
    if phase.mirror() != Some(Side::New) {
        return Err(JobError::Phase(phase));
    }
    if env.async_mirroring() {
        return Err(JobError::AsyncMirroring);
    }
    match env.passthrough_sessions() {
        0 => Ok(()),
        n => Err(JobError::PassthroughSessions(n)),
    }
}

/// Verify compares the authority (`from`) to the mirror (`to`) and repairs
/// the mirror: old to new, or (with new the authority, `writes_new`) new to
/// old, which needs the same schema on both sides (no `[mapping]`).
fn verify_direction(env: &Arc<dyn Env>) -> Result<(Side, Side), JobError> {
    let phase = env.phase();
    let Some(to) = phase.mirror() else {
        return Err(JobError::Phase(phase));
    };
    if env.async_mirroring() {
        return Err(JobError::AsyncMirroring);
    }
    if to == Side::Old && !env.mapping().is_identity() {
        return Err(JobError::ReverseMapping(phase));
    }
    Ok((to.other(), to))
}

/// The table named `only` of `all` (which must have it), or all of them.
fn chosen(all: Vec<TableShape>, only: Option<&str>) -> Result<Vec<TableShape>, String> {
    if let Some(o) = only {
        if !all.iter().any(|t| t.name == o) {
            return Err(format!("table {o} does not exist on old"));
        }
    }
    Ok(all
        .into_iter()
        .filter(|t| only.is_none_or(|o| o == t.name))
        .collect())
}

/// The tables of the authority, as the backfill and verify see them.
pub async fn tables(
    backends: &Backends,
    conn: &mut Conn,
    side: Side,
) -> Result<Vec<TableShape>, String> {
    let d = Dialect::of(backends.protocol);
    sql::shapes(&conn.query(d.tables_query(), side).await?)
}

/// Tables with fewer rows than this (by the statistics) are counted
/// exactly for the progress figures.
pub(crate) const COUNTED_BELOW: i64 = 5_000_000;

async fn run(env: &Arc<dyn Env>) -> Result<(), String> {
    let b = &env.backfill();
    metrics::gauge!("turnout_backfill_running").set(1.0);
    let d = Dialect::of(env.backends().protocol);
    let mut src = Conn::open(env.backends(), Side::Old).await?;
    let all = tables(env.backends(), &mut src, Side::Old).await?;
    let only = b.lock().cp.only.clone();
    let all_names: Vec<String> = all.iter().map(|t| t.name.clone()).collect();
    let chosen = chosen(all, only.as_deref())?;
    // Referenced tables first: new's foreign keys hold row by row.
    let edges = foreign_keys(&mut src, d, Side::Old).await;
    let mut chosen = foreign_key_order(chosen, &edges);
    // Exact counts where cheap: statistics may be stale (or never taken).
    for t in chosen.iter_mut() {
        if t.estimated_rows < COUNTED_BELOW && !t.key.is_empty() {
            if let Ok(rows) = src.query(&d.count(&t.name), Side::Old).await {
                if let Some(n) = rows
                    .iter()
                    .next()
                    .and_then(|r| r.str("n").ok()?.parse().ok())
                {
                    t.estimated_rows = n;
                }
            }
        }
    }
    b.update(|cp| {
        cp.all = all_names;
        for t in &chosen {
            let p = cp.tables.entry(t.name.clone()).or_default();
            p.estimated = t.estimated_rows;
            p.error = None;
            if t.key.is_empty() {
                p.skipped = Some("no primary key: rows cannot be copied safely in order".into());
                p.done = true;
            }
        }
    });
    let mut dst = Conn::open(env.backends(), Side::New).await?;
    let mut baseline = b.latency.micros();
    let mut failed = Vec::new();
    for t in chosen.iter().filter(|t| !t.key.is_empty()) {
        if b.lock().cp.tables.get(&t.name).is_some_and(|p| p.done) {
            continue;
        }
        info!(table = %t.name, "backfill of table starts");
        if let Err(e) = copy_table(env, t, &mut src, &mut dst, &mut baseline).await {
            if env.stopping() {
                return Err(e);
            }
            // This table is reported; the others go on.
            warn!(table = %t.name, error = %e, "backfill of table failed; the other tables go on");
            b.update(|cp| {
                if let Some(p) = cp.tables.get_mut(&t.name) {
                    p.error = Some(e.clone());
                }
            });
            failed.push(e);
            // Its connections may be the broken part: fresh ones.
            src = Conn::open(env.backends(), Side::Old).await?;
            dst = Conn::open(env.backends(), Side::New).await?;
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} table(s) could not be copied (the others were): {}; fix and run backfill start TABLE (or resume)",
            failed.len(),
            failed.join("; ")
        ))
    }
}

/// Copies `t` from its checkpoint to its end.
async fn copy_table(
    env: &Arc<dyn Env>,
    t: &TableShape,
    src: &mut Conn,
    dst: &mut Conn,
    baseline: &mut u64,
) -> Result<(), String> {
    let b = &env.backfill();
    let d = Dialect::of(env.backends().protocol);
    let key_at: Vec<usize> = t
        .key
        .iter()
        .filter_map(|k| t.columns.iter().position(|c| c == k))
        .collect();
    let mut backoff = Duration::ZERO;
    let mut paused = b.paused.subscribe();
    loop {
        // Paused: wait for resume (the task stays, holding no lock).
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return Ok(());
            }
        }
        if env.stopping() {
            return Err("turnout is stopping; resumes from the checkpoint".into());
        }
        // The adaptive throttle: clients slower than `factor` times their
        // time at the start make the batches wait, more each time.
        let now = b.latency.micros();
        if *baseline == 0 {
            // The first clients seen set the yardstick.
            *baseline = now;
        }
        let slow = *baseline > 0 && now as f64 > *baseline as f64 * b.factor;
        backoff = if slow {
            (backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF)
        } else {
            backoff / 2
        };
        b.lock().throttled = slow;
        metrics::gauge!("turnout_backfill_throttled").set(if slow { 1.0 } else { 0.0 });
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        let started = Instant::now();
        let after = b
            .lock()
            .cp
            .tables
            .get(&t.name)
            .and_then(|p| p.last_key.clone());
        let (mut attempt, mut lock_tries) = (0, 0u64);
        let copied = loop {
            attempt += 1;
            match batch(env, d, t, after.as_deref(), src, dst).await {
                Ok(rows) => break rows,
                // Clients hold the rows: the batch yields and comes back.
                Err(e) if Dialect::lock_given_up(&e) && lock_tries < 20 => {
                    attempt -= 1;
                    lock_tries += 1;
                    tokio::time::sleep(Duration::from_millis(50 * lock_tries)).await;
                }
                Err(e) if attempt < ATTEMPTS => {
                    warn!(table = %t.name, attempt, error = %e, "backfill batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    // The connections may be gone: new ones.
                    *src = Conn::open(env.backends(), Side::Old).await?;
                    *dst = Conn::open(env.backends(), Side::New).await?;
                }
                Err(e) => return Err(format!("table {}: {e}", t.name)),
            }
        };
        let Some(last) = copied.last() else {
            b.update(|cp| {
                if let Some(p) = cp.tables.get_mut(&t.name) {
                    p.done = true;
                }
            });
            info!(table = %t.name, "backfill of table done");
            return Ok(());
        };
        let key: Vec<Option<String>> = key_at
            .iter()
            .map(|&i| last.get(i).cloned().flatten())
            .collect();
        let n = copied.len() as u64;
        b.update(|cp| {
            if let Some(p) = cp.tables.get_mut(&t.name) {
                p.rows += n;
                p.last_key = Some(key);
            }
        });
        metrics::counter!("turnout_backfill_rows_total").increment(n);
        metrics::counter!("turnout_backfill_batches_total").increment(1);
        let percent = b.status(None)["percent"].as_f64().unwrap_or(0.0);
        metrics::gauge!("turnout_backfill_progress_ratio").set((percent / 100.0).clamp(0.0, 1.0));
        // The rate limit: a batch of n rows takes at least n / rate seconds.
        if b.rows_per_sec > 0 {
            let least = Duration::from_secs_f64(n as f64 / b.rows_per_sec as f64);
            if let Some(rest) = least.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }
}

/// One batch: read under a env lock on old, upserted on new, then the
/// lock let go. The rows copied (none: the table is done).
async fn batch(
    env: &Arc<dyn Env>,
    d: Dialect,
    t: &TableShape,
    after: Option<&[Option<String>]>,
    src: &mut Conn,
    dst: &mut Conn,
) -> Result<sql::Rows, String> {
    src.rows("BEGIN", Side::Old).await?;
    let result = async {
        src.rows(d.short_lock_wait(), Side::Old).await?;
        let rows = src
            .rows(&d.batch(t, after, env.backfill().batch), Side::Old)
            .await?;
        if !rows.is_empty() {
            upsert(env, d, t, &rows, dst, Side::New).await?;
        }
        Ok::<_, String>(rows)
    }
    .await;
    match result {
        Ok(rows) => {
            src.rows("COMMIT", Side::Old).await?;
            Ok(rows)
        }
        Err(e) => {
            let _ = src.rows("ROLLBACK", Side::Old).await;
            Err(e)
        }
    }
}

/// Writes `rows` (of old's `t`) on `to` (new, through the schema mapping;
/// old only when there is none).
pub(crate) async fn upsert(
    env: &Arc<dyn Env>,
    d: Dialect,
    t: &TableShape,
    rows: &sql::Rows,
    dst: &mut Conn,
    to: Side,
) -> Result<(), String> {
    let statement = d.upsert(t, rows);
    let statement = match env.mapping().translate(&statement) {
        Ok(Translation::Sql(s)) => s,
        Ok(Translation::Unchanged) => statement,
        Ok(Translation::Skip) => return Ok(()),
        Err(e) => return Err(format!("mapping: {e}")),
    };
    dst.rows(&statement, to).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_a_running_mean_and_idle_clients_count_as_none() {
        let l = Latency::default();
        assert_eq!(l.micros(), 0);
        l.record(Duration::from_micros(1600));
        assert_eq!(l.micros(), 1600);
        for _ in 0..200 {
            l.record(Duration::from_micros(160));
        }
        assert!(l.micros() < 200, "{}", l.micros());
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(l.micros(), 0);
    }
}
