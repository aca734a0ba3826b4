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

    /// Writes `side` missed as the mirror ([`missed`]; after `since`, an
    /// RFC 3339 time, when given): from the durable log (it outlives
    /// restarts) when there is one, else those since start.
    pub fn missed_by(&self, side: Side, since: Option<&str>) -> u64 {
        let in_memory = match since {
            // The counters do not keep times: what a verify repaired counts.
            Some(_) => 0,
            None => self.by_side[usize::from(side == Side::New)].load(Ordering::Relaxed),
        };
        let Some(log) = &self.log else {
            return in_memory;
        };
        match std::fs::read_to_string(log.path()) {
            Ok(text) => text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["side"] == side.name())
                .filter(|v| {
                    serde_json::from_value::<DivergenceKind>(v["kind"].clone()).is_ok_and(missed)
                })
                .filter(|v| since.is_none_or(|t| v["at"].as_str().is_some_and(|at| at > t)))
                .count() as u64,
            Err(e) => {
                error!(error = %e, "the divergence log could not be read; counting the records since start");
                in_memory
            }
        }
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
