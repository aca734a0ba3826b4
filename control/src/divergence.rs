//! The durable divergence log: every write that reached one side and not the
//! other (or may have applied differently) is one JSON line, synced to disk
//! before the session goes on, so verify/repair can find it after any crash.
//! Nothing is rotated away: divergences stay until repaired.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::Side;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DivergenceKind {
    /// The mirror failed to apply a write the authority applied.
    MirrorError,
    /// The mirror applied a write whose authority commit then failed.
    AuthorityCommitFailed,
    /// The statement's effect may not be reproduced on the mirror.
    UnsafeStatement,
    /// The asynchronous mirror queue was full; the write was not sent.
    AsyncOverflow,
    /// A statement turnout sent to one side alone (taken for a read, or for
    /// something that changes no rows) was answered with written rows.
    UnmirroredWrite,
    /// The sides wrote different rows for one mirrored write: the affected
    /// row counts (or, with row images, the rows found) disagree.
    RowCountMismatch,
    /// The log applier stopped: the mirror could not take a change (a
    /// table or column it lacks). Nothing after it was applied until it
    /// could; nothing is lost (the authority keeps its log meanwhile).
    LogStalled,
}

impl DivergenceKind {
    /// The kind's name as records and metrics write it.
    pub fn name(self) -> &'static str {
        match self {
            DivergenceKind::MirrorError => "mirror_error",
            DivergenceKind::AuthorityCommitFailed => "authority_commit_failed",
            DivergenceKind::UnsafeStatement => "unsafe_statement",
            DivergenceKind::AsyncOverflow => "async_overflow",
            DivergenceKind::UnmirroredWrite => "unmirrored_write",
            DivergenceKind::RowCountMismatch => "row_count_mismatch",
            DivergenceKind::LogStalled => "log_stalled",
        }
    }
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// RFC 3339, UTC.
    pub at: String,
    pub kind: DivergenceKind,
    /// The side that may now differ from the authority.
    pub side: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The row's primary key, as text, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The statement with its literals replaced.
    pub fingerprint: String,
    /// The statement itself, only when the config opts in (it may hold data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// What went wrong, in words.
    pub detail: String,
}

impl Divergence {
    pub fn new(kind: DivergenceKind, side: Side, fingerprint: &str, detail: &str) -> Self {
        Divergence {
            at: crate::readdiff::now_rfc3339(),
            kind,
            side: side.name().to_string(),
            table: None,
            key: None,
            fingerprint: fingerprint.to_string(),
            statement: None,
            detail: detail.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DivergenceLogError {
    #[error("divergence log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("divergence log {path}: cannot encode a record: {source}")]
    Encode {
        path: String,
        source: serde_json::Error,
    },
}

/// The log file, appended to under a lock (divergences are rare, and each
/// one is synced before the write path goes on).
pub struct DivergenceLog {
    path: PathBuf,
    file: Mutex<File>,
    recorded: AtomicU64,
}

impl DivergenceLog {
    /// Opens (or creates) the log for appending. A last line cut short by a
    /// crash is closed off first, so the next record starts on a line of its own.
    pub fn open(path: &Path) -> Result<Self, DivergenceLogError> {
        let io = |source| DivergenceLogError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = crate::files::append(path, true).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
            file.read_exact(&mut last).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
                file.sync_data().map_err(io)?;
            }
        }
        Ok(DivergenceLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            recorded: AtomicU64::new(0),
        })
    }

    /// Appends one record and syncs it to disk.
    pub fn record(&self, d: &Divergence) -> Result<(), DivergenceLogError> {
        let shown = || self.path.display().to_string();
        let mut line = serde_json::to_vec(d).map_err(|source| DivergenceLogError::Encode {
            path: shown(),
            source,
        })?;
        line.push(b'\n');
        let io = |source| DivergenceLogError::Io {
            path: shown(),
            source,
        };
        // A poisoned lock only means another writer panicked mid-call; the
        // file itself is still fine to append to.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)?;
        self.recorded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records written through this handle since it was opened.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a log file holds: its records, and how many lines could not be read
/// (a line cut short by a crash, or text that is not a record).
pub struct LogContents {
    pub records: Vec<Divergence>,
    pub unreadable_lines: usize,
}

pub fn read_log(path: &Path) -> Result<LogContents, DivergenceLogError> {
    let io = |source| DivergenceLogError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut out = LogContents {
        records: Vec::new(),
        unreadable_lines: 0,
    };
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(d) => out.records.push(d),
            Err(_) => out.unreadable_lines += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("turnout-div-{}-{name}.jsonl", std::process::id()))
    }

    #[test]
    fn records_survive_reopening_and_a_torn_last_line() {
        let path = temp_path("roundtrip");
        let _ = std::fs::remove_file(&path);
        {
            let log = DivergenceLog::open(&path).unwrap();
            let mut d = Divergence::new(
                DivergenceKind::MirrorError,
                Side::New,
                "update t set x = ? where id = ?",
                "connection refused",
            );
            d.table = Some("t".into());
            d.key = Some("42".into());
            log.record(&d).unwrap();
            log.record(&Divergence::new(
                DivergenceKind::UnsafeStatement,
                Side::New,
                "call f()",
                "procedure",
            ))
            .unwrap();
            assert_eq!(log.recorded(), 2);
        }
        // A crash mid-append leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"at\":\"2026")
            .unwrap();
        let log = DivergenceLog::open(&path).unwrap();
        log.record(&Divergence::new(
            DivergenceKind::AsyncOverflow,
            Side::Old,
            "x",
            "full",
        ))
        .unwrap();
        let contents = read_log(&path).unwrap();
        // The torn line is unreadable on its own; every finished record is there.
        assert_eq!(contents.records.len(), 3);
        assert_eq!(contents.unreadable_lines, 1);
        assert_eq!(contents.records[0].key.as_deref(), Some("42"));
        assert_eq!(contents.records[0].side, "new");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let err = DivergenceLog::open(Path::new("/nonexistent/dir/d.jsonl"))
            .err()
            .expect("error");
        assert!(
            err.to_string().contains("/nonexistent/dir/d.jsonl"),
            "{err}"
        );
    }
}
