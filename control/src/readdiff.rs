//! Read-diff reports: one JSON line per mismatch found by comparing a sampled
//! read on the read target and the shadow, in a file with a size bound and
//! one rotated predecessor (`<file>.1`), and per-fingerprint aggregates
//! (samples, matches, mismatches, skips) kept in memory and written to
//! `<file>.summary.json` for `turnout report`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Confirmed: the re-check found the difference again. Transient: the
/// re-check matched (a race with concurrent writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffStatus {
    Confirmed,
    Transient,
}

pub type Row = Vec<Option<String>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferingRow {
    pub target: Row,
    pub shadow: Row,
    /// The columns whose values differ.
    pub columns: Vec<String>,
}

/// One mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDiff {
    /// RFC 3339, UTC.
    pub at: String,
    pub status: DiffStatus,
    pub fingerprint: String,
    /// The side that served the client, and the side compared with it.
    pub target: String,
    pub shadow: String,
    /// The statement and its parameters, only when the config opts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<Option<String>>>,
    /// The shadow's error, when it failed a read the target answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_error: Option<String>,
    pub columns: Vec<String>,
    pub rows_target: usize,
    pub rows_shadow: usize,
    pub missing_count: usize,
    pub extra_count: usize,
    pub differing_count: usize,
    /// The columns rows were matched by (the primary key the result
    /// carries, else the ORDER BY key); empty: whole rows as a multiset.
    /// Their values are kept in records whatever `sampling.log_values` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_columns: Vec<String>,
    /// Same rows on both sides, in another order (an ordered query).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub order_differs: bool,
    /// Values other than keys are written as short keyed hashes (`#1a2b3c4d`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub values_hashed: bool,
    /// Rows the target has and the shadow lacks (first few).
    pub missing: Vec<Row>,
    /// Rows the shadow has and the target lacks (first few).
    pub extra: Vec<Row>,
    pub differing: Vec<DifferingRow>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Per-fingerprint counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    pub samples: u64,
    pub matches: u64,
    /// Confirmed mismatches.
    pub mismatches: u64,
    pub transient: u64,
    /// Samples chosen but not taken (shadow busy, result too large, ...).
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_mismatch: Option<String>,
}

/// What `<file>.summary.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub updated: String,
    pub fingerprints: BTreeMap<String, Aggregate>,
    /// Skips by reason, over all fingerprints.
    pub skipped: BTreeMap<String, u64>,
    /// Compared reads per minute: `[unix minute, compared, confirmed,
    /// transient]`, oldest first, the last [`TIMELINE_MINUTES`] minutes
    /// that had any.
    #[serde(default)]
    pub timeline: Vec<[u64; 4]>,
}

/// Minutes of compared reads the summary keeps (one day).
pub const TIMELINE_MINUTES: usize = 1440;

/// Counts one compared read in the timeline's current minute.
fn count_minute(timeline: &mut Vec<[u64; 4]>, status: Option<DiffStatus>) {
    let minute = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0);
    if timeline.last().is_none_or(|b| b[0] != minute) {
        timeline.push([minute, 0, 0, 0]);
        if timeline.len() > TIMELINE_MINUTES {
            timeline.remove(0);
        }
    }
    if let Some(b) = timeline.last_mut() {
        b[1] += 1;
        match status {
            Some(DiffStatus::Confirmed) => b[2] += 1,
            Some(DiffStatus::Transient) => b[3] += 1,
            None => {}
        }
    }
}

impl Summary {
    /// The counts over every fingerprint.
    pub fn total(&self) -> Aggregate {
        let mut all = Aggregate::default();
        for a in self.fingerprints.values() {
            all.samples += a.samples;
            all.matches += a.matches;
            all.mismatches += a.mismatches;
            all.transient += a.transient;
            all.skipped += a.skipped;
        }
        all
    }
}

#[derive(Debug, thiserror::Error)]
#[error("read-diff report {path}: {source}")]
pub struct ReadDiffError {
    pub path: String,
    pub source: std::io::Error,
}

struct Inner {
    file: Option<File>,
    size: u64,
    summary: Summary,
    dirty: bool,
}

/// The report. Without a path, aggregates are kept in memory only.
pub struct ReadDiffLog {
    path: Option<PathBuf>,
    max_bytes: u64,
    inner: Mutex<Inner>,
    /// Reads compared since start, and confirmed mismatches among them.
    compared: AtomicU64,
    confirmed: AtomicU64,
}

/// Most distinct fingerprints aggregated; past it, new ones count under `(other)`.
const MAX_FINGERPRINTS: usize = 10_000;

impl ReadDiffLog {
    pub fn open(path: Option<&Path>, max_bytes: u64) -> Result<Self, ReadDiffError> {
        let (file, size) = match path {
            Some(p) => {
                let io = |source| ReadDiffError {
                    path: p.display().to_string(),
                    source,
                };
                let f = crate::files::append(p, false).map_err(io)?;
                let size = f.metadata().map_err(io)?.len();
                (Some(f), size)
            }
            None => (None, 0),
        };
        Ok(ReadDiffLog {
            path: path.map(Path::to_path_buf),
            max_bytes: max_bytes.max(4096),
            inner: Mutex::new(Inner {
                file,
                size,
                summary: Summary::default(),
                dirty: true,
            }),
            compared: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn aggregate<'a>(summary: &'a mut Summary, fingerprint: &str) -> &'a mut Aggregate {
        let key = if summary.fingerprints.len() >= MAX_FINGERPRINTS
            && !summary.fingerprints.contains_key(fingerprint)
        {
            "(other)"
        } else {
            fingerprint
        };
        summary.fingerprints.entry(key.to_string()).or_default()
    }

    /// A sample that matched.
    pub fn matched(&self, fingerprint: &str) {
        self.compared.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let a = Self::aggregate(&mut inner.summary, fingerprint);
        a.samples += 1;
        a.matches += 1;
        count_minute(&mut inner.summary.timeline, None);
        inner.dirty = true;
    }

    /// A sample chosen but not taken, and why (`shadow_busy`, ...).
    pub fn skipped(&self, fingerprint: &str, reason: &str) {
        let mut inner = self.lock();
        Self::aggregate(&mut inner.summary, fingerprint).skipped += 1;
        *inner.summary.skipped.entry(reason.to_string()).or_default() += 1;
        inner.dirty = true;
    }

    /// A mismatch: counted and appended to the report file.
    pub fn mismatch(&self, d: &ReadDiff) -> Result<(), ReadDiffError> {
        self.compared.fetch_add(1, Ordering::Relaxed);
        if d.status == DiffStatus::Confirmed {
            self.confirmed.fetch_add(1, Ordering::Relaxed);
        }
        let mut inner = self.lock();
        let a = Self::aggregate(&mut inner.summary, &d.fingerprint);
        a.samples += 1;
        match d.status {
            DiffStatus::Confirmed => {
                a.mismatches += 1;
                a.last_mismatch = Some(d.at.clone());
            }
            DiffStatus::Transient => a.transient += 1,
        }
        count_minute(&mut inner.summary.timeline, Some(d.status));
        inner.dirty = true;
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| ReadDiffError {
            path: path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(d).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        if inner.size + line.len() as u64 > self.max_bytes && inner.size > 0 {
            // Rotate: the current file becomes `<file>.1` (replacing the older one).
            inner.file = None;
            std::fs::rename(path, rotated(path)).map_err(io)?;
            inner.file = Some(crate::files::append(path, false).map_err(io)?);
            inner.size = 0;
        }
        if let Some(f) = inner.file.as_mut() {
            f.write_all(&line).map_err(io)?;
        }
        inner.size += line.len() as u64;
        Ok(())
    }

    /// Reads compared since start, and confirmed mismatches among them.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.compared.load(Ordering::Relaxed),
            self.confirmed.load(Ordering::Relaxed),
        )
    }

    /// The aggregates now.
    pub fn summary(&self) -> Summary {
        let mut s = self.lock().summary.clone();
        s.updated = now_rfc3339();
        s
    }

    /// Writes `<file>.summary.json` if anything changed since the last write
    /// (atomically: a temporary file renamed over it).
    pub fn write_summary(&self) -> Result<(), ReadDiffError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let summary = {
            let mut inner = self.lock();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            let mut s = inner.summary.clone();
            s.updated = now_rfc3339();
            s
        };
        let target = summary_path(path);
        let io = |source| ReadDiffError {
            path: target.display().to_string(),
            source,
        };
        let text = serde_json::to_vec(&summary).map_err(|e| io(std::io::Error::other(e)))?;
        // Rewritten twice a second from the counts: no sync needed.
        crate::files::replace_quietly(&target, &text).map_err(io)
    }
}

pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

pub fn summary_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".summary.json");
    PathBuf::from(s)
}

/// The records of a report file and its rotated predecessor, oldest first,
/// and how many lines could not be read.
pub fn read_report(path: &Path) -> Result<(Vec<ReadDiff>, usize), ReadDiffError> {
    let mut records = Vec::new();
    let mut unreadable = 0;
    for p in [rotated(path), path.to_path_buf()] {
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && p != path => continue,
            Err(source) => {
                return Err(ReadDiffError {
                    path: p.display().to_string(),
                    source,
                })
            }
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|source| ReadDiffError {
                path: p.display().to_string(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(d) => records.push(d),
                Err(_) => unreadable += 1,
            }
        }
    }
    Ok((records, unreadable))
}

/// The summary written next to a report file, if there is one.
pub fn read_summary(path: &Path) -> Option<Summary> {
    let text = std::fs::read(summary_path(path)).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(fp: &str, status: DiffStatus) -> ReadDiff {
        ReadDiff {
            at: now_rfc3339(),
            status,
            fingerprint: fp.into(),
            target: "old".into(),
            shadow: "new".into(),
            statement: None,
            params: None,
            shadow_error: None,
            columns: vec!["id".into(), "v".into()],
            rows_target: 1,
            rows_shadow: 1,
            missing_count: 0,
            extra_count: 0,
            differing_count: 1,
            key_columns: vec!["id".into()],
            order_differs: false,
            values_hashed: false,
            missing: vec![],
            extra: vec![],
            differing: vec![DifferingRow {
                target: vec![Some("1".into()), Some("a".into())],
                shadow: vec![Some("1".into()), Some("b".into())],
                columns: vec!["v".into()],
            }],
        }
    }

    #[test]
    fn records_rotate_at_the_size_bound_and_aggregates_count() {
        let dir = std::env::temp_dir().join(format!("turnout-rd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("diffs.jsonl");
        let log = ReadDiffLog::open(Some(&path), 4096).unwrap();
        for _ in 0..40 {
            log.mismatch(&diff("select * from t where id = ?", DiffStatus::Confirmed))
                .unwrap();
        }
        log.mismatch(&diff("select 1", DiffStatus::Transient))
            .unwrap();
        log.matched("select 1");
        log.skipped("select 1", "shadow_busy");
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        assert!(rotated(&path).exists());
        let (records, unreadable) = read_report(&path).unwrap();
        assert_eq!(unreadable, 0);
        // Two rotations: the oldest records are gone, the newest kept.
        assert!(records.len() < 41 && records.len() > 4, "{}", records.len());
        assert_eq!(records.last().unwrap().status, DiffStatus::Transient);
        log.write_summary().unwrap();
        let s = read_summary(&path).unwrap();
        let a = &s.fingerprints["select * from t where id = ?"];
        assert_eq!((a.samples, a.mismatches), (40, 40));
        let b = &s.fingerprints["select 1"];
        assert_eq!((b.samples, b.matches, b.transient, b.skipped), (2, 1, 1, 1));
        assert_eq!(s.skipped["shadow_busy"], 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
