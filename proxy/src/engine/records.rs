//! What turnout writes down about the sides: divergences (in the durable
//! log when one is configured, in turnout's own log always, and in the
//! counters), mirror failures, and the tables divergences name. One owned
//! part of the server's shared state, used by both protocol adapters and by
//! the engine's async queue; nothing is dropped silently.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{error, warn};
use turnout_control::divergence::{Divergence, DivergenceKind, DivergenceLog};
use turnout_control::Side;

pub struct Records {
    log: Option<DivergenceLog>,
    /// `mirror.log_statements`: divergence records carry the statement text
    /// and server errors keep their row values.
    pub log_statements: bool,
    /// Tables named by divergences recorded since start, with their count:
    /// verify checks them first.
    pub divergent_tables: DashMap<String, u64>,
    divergences: AtomicU64,
    mirror_errors: AtomicU64,
    /// Writes missed since start ([`missed`]), by the side that missed
    /// them (old, new).
    by_side: [AtomicU64; 2],
    /// The last count read from the durable log (`status` asks often; the
    /// log only grows).
    scanned: std::sync::Mutex<Option<Scanned>>,
}

/// A count of missed writes read from the durable log: the log's length
/// then, the side, the horizon's time, and the count.
type Scanned = (u64, Side, Option<String>, u64);

/// Where a verify left a side equal to the authority: when its run started
/// and how many writes the side had missed in this process by then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Horizon {
    pub at: String,
    pub missed: u64,
}

impl Records {
    pub fn new(log: Option<DivergenceLog>, log_statements: bool) -> Records {
        Records {
            log,
            log_statements,
            divergent_tables: DashMap::new(),
            divergences: AtomicU64::new(0),
            mirror_errors: AtomicU64::new(0),
            by_side: [AtomicU64::new(0), AtomicU64::new(0)],
            scanned: std::sync::Mutex::new(None),
        }
    }

    /// A server error's text as it may be logged: its row values redacted
    /// unless `mirror.log_statements` is on.
    pub fn loggable(&self, text: &str) -> String {
        if self.log_statements {
            text.to_string()
        } else {
            super::redact::redact_error_values(text)
        }
    }

    /// Records `d` (its detail's row values redacted unless
    /// `mirror.log_statements` is on: server errors quote rows).
    pub fn divergence(&self, mut d: Divergence) {
        d.detail = self.loggable(&d.detail);
        self.divergences.fetch_add(1, Ordering::Relaxed);
        if missed(d.kind) {
            let side = usize::from(d.side == Side::New.name());
            self.by_side[side].fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!("turnout_divergence_records_total", "kind" => d.kind.name()).increment(1);
        if let Some(t) = &d.table {
            *self.divergent_tables.entry(t.clone()).or_insert(0) += 1;
        }
        warn!(kind = ?d.kind, side = %d.side, fingerprint = %d.fingerprint, detail = %d.detail, "divergence recorded");
        if let Some(log) = &self.log {
            if let Err(e) = log.record(&d) {
                error!(error = %e, "divergence could not be written to the divergence log; it is in this log only");
            }
        }
    }

    /// Records `d` with the table, row key and (when `mirror.log_statements`
    /// is on) the statement found in `sent`, the PostgreSQL messages sent to
    /// the mirror.
    pub fn located(&self, mut d: Divergence, sent: &[u8]) {
        let loc = super::locate::locate(sent);
        d.table = loc.table;
        d.key = loc.key;
        if self.log_statements {
            d.statement = loc.statement;
        }
        self.divergence(d);
    }

    /// Counts a failure of the mirror (what the error budget reads).
    pub fn mirror_error(&self) {
        self.mirror_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Divergences recorded since start.
    pub fn divergence_count(&self) -> u64 {
        self.divergences.load(Ordering::Relaxed)
    }

    /// Writes `side` missed as the mirror in this process ([`missed`]).
    pub fn missed_here(&self, side: Side) -> u64 {
        self.by_side[usize::from(side == Side::New)].load(Ordering::Relaxed)
    }

    /// Writes `side` missed as the mirror ([`missed`]), after `since` when
    /// given: from the durable log (it outlives restarts) when there is
    /// one, else in this process.
    pub fn missed_by(&self, side: Side, since: Option<&Horizon>) -> u64 {
        let here = self.missed_here(side);
        let Some(log) = &self.log else {
            return here.saturating_sub(since.map_or(0, |h| h.missed));
        };
        let at = since.map(|h| h.at.clone());
        let len = std::fs::metadata(log.path()).map(|m| m.len()).ok();
        let mut cache = self.scanned.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(len), Some((l, s, a, n))) = (len, cache.as_ref()) {
            if *l == len && *s == side && *a == at {
                return *n;
            }
        }
        let text = match std::fs::read_to_string(log.path()) {
            Ok(t) => t,
            Err(e) => {
                error!(error = %e, "the divergence log could not be read; counting this process's records");
                return here.saturating_sub(since.map_or(0, |h| h.missed));
            }
        };
        let needle = format!("\"side\":\"{side}\"");
        let n = text
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| serde_json::from_str::<Divergence>(l).ok())
            .filter(|d| missed(d.kind))
            .filter(|d| at.as_deref().is_none_or(|t| d.at.as_str() > t))
            .count() as u64;
        *cache = Some((text.len() as u64, side, at, n));
        n
    }

    /// Mirror failures since start.
    pub fn mirror_error_count(&self) -> u64 {
        self.mirror_errors.load(Ordering::Relaxed)
    }
}

/// A record of a write the side lacks or holds otherwise than the authority
/// (not one it applied in a way that may differ, `unsafe_statement`, nor
/// one it holds that the authority lost, `authority_commit_failed`).
pub fn missed(kind: DivergenceKind) -> bool {
    matches!(
        kind,
        DivergenceKind::MirrorError
            | DivergenceKind::AsyncOverflow
            | DivergenceKind::UnmirroredWrite
            | DivergenceKind::RowCountMismatch
    )
}

#[cfg(test)]
mod tests {
    use super::{Horizon, Records};
    use turnout_control::divergence::{Divergence, DivergenceKind, DivergenceLog};
    use turnout_control::Side;

    fn record(r: &Records, kind: DivergenceKind, side: Side) {
        r.divergence(Divergence::new(
            kind,
            side,
            "insert into t values (?)",
            "test",
        ));
    }

    #[test]
    fn missed_writes_count_by_side_kind_and_horizon_in_the_log_and_in_memory() {
        let dir = std::env::temp_dir().join(format!("turnout-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let logged = Records::new(
            Some(DivergenceLog::open(&dir.join("d.jsonl")).unwrap()),
            false,
        );
        let memory = Records::new(None, false);
        for r in [&logged, &memory] {
            record(r, DivergenceKind::MirrorError, Side::New);
            record(r, DivergenceKind::RowCountMismatch, Side::New);
            // Applied (maybe otherwise): not a missed write.
            record(r, DivergenceKind::UnsafeStatement, Side::New);
            record(r, DivergenceKind::AsyncOverflow, Side::Old);
            assert_eq!(r.missed_by(Side::New, None), 2);
            assert_eq!(r.missed_by(Side::Old, None), 1);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        let horizon = Horizon {
            at: turnout_control::readdiff::now_rfc3339(),
            missed: memory.missed_here(Side::New),
        };
        for r in [&logged, &memory] {
            assert_eq!(r.missed_by(Side::New, Some(&horizon)), 0);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        for r in [&logged, &memory] {
            record(r, DivergenceKind::MirrorError, Side::New);
            assert_eq!(r.missed_by(Side::New, Some(&horizon)), 1);
            assert_eq!(r.missed_by(Side::New, None), 3);
        }
        // The log outlives the process: a new one counts what it holds.
        let reopened = Records::new(
            Some(DivergenceLog::open(&dir.join("d.jsonl")).unwrap()),
            false,
        );
        assert_eq!(reopened.missed_by(Side::New, None), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
