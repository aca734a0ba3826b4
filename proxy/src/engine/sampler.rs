//! Which reads are compared on the shadow side, protocol-agnostic: the
//! sampled fraction (changed live), a cap per query shape and second, a
//! bound on the samples in flight, the read-diff log and the comparison's
//! settings; and a pool of idle connections per side that each adapter
//! fills with its own connection type.

use super::shadowcheck;
use dashmap::DashMap;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use turnout_config::Sampling;
use turnout_control::readdiff::ReadDiffLog;
use turnout_control::Side;

pub struct Sampler {
    /// Fraction of reads sampled, as f64 bits (changed live by `sample RATE`).
    rate: AtomicU64,
    per_fingerprint_per_sec: u64,
    /// Per fingerprint: (second, samples taken in it).
    taken: DashMap<String, (u64, u64)>,
    permits: Arc<Semaphore>,
    pub log: Arc<ReadDiffLog>,
    recheck_delay: Duration,
    pub in_write_transactions: bool,
    log_statements: bool,
    log_values: bool,
    pub max_result_bytes: usize,
    ignore: BTreeMap<String, Vec<String>>,
}

impl Sampler {
    pub fn new(config: &Sampling, log: Arc<ReadDiffLog>) -> Self {
        Sampler {
            rate: AtomicU64::new(config.rate.to_bits()),
            per_fingerprint_per_sec: config.per_fingerprint_per_sec.max(0) as u64,
            taken: DashMap::new(),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1) as usize)),
            log,
            recheck_delay: Duration::from_millis(config.recheck_delay_ms),
            in_write_transactions: config.in_write_transactions,
            log_statements: config.log_statements,
            log_values: config.log_values,
            max_result_bytes: config.max_result_bytes.max(1024) as usize,
            ignore: config.ignore_columns.clone(),
        }
    }

    /// Whether to sample a read of this fingerprint, and the permit to run
    /// it. A read chosen when every permit is out is counted as skipped.
    pub fn choose(&self, fingerprint: &str) -> Option<OwnedSemaphorePermit> {
        let rate = self.rate();
        if rate <= 0.0 || (rate < 1.0 && !rand::thread_rng().gen_bool(rate)) {
            return None;
        }
        if self.per_fingerprint_per_sec > 0 {
            let second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut entry = self
                .taken
                .entry(fingerprint.to_string())
                .or_insert((second, 0));
            if entry.0 != second {
                *entry = (second, 0);
            }
            if entry.1 >= self.per_fingerprint_per_sec {
                return None;
            }
            entry.1 += 1;
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.log.skipped(fingerprint, "shadow_busy");
                None
            }
        }
    }

    /// A permit for other work on sample connections, if one is free.
    pub fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Changes the fraction of reads sampled (0.0 to 1.0), live.
    pub fn set_rate(&self, rate: f64) -> Result<(), String> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("sampling rate must be 0.0-1.0, got {rate}"));
        }
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// What the comparison of a sample needs of the sampler's settings.
    pub fn settings(&self) -> shadowcheck::Settings<'_> {
        shadowcheck::Settings {
            log: &self.log,
            recheck_delay: self.recheck_delay,
            log_statements: self.log_statements,
            log_values: self.log_values,
            ignore: &self.ignore,
        }
    }
}

/// Idle connections of type `C` per side (old, new), each with the session
/// settings `S` applied on it; at most `max` kept per side.
pub struct IdlePool<C, S> {
    idle: [Mutex<Vec<(C, S)>>; 2],
    max: usize,
}

impl<C, S: PartialEq> IdlePool<C, S> {
    pub fn new(max: usize) -> Self {
        IdlePool {
            idle: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
            max,
        }
    }

    fn slot(&self, side: Side) -> std::sync::MutexGuard<'_, Vec<(C, S)>> {
        self.idle[usize::from(side == Side::New)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, preferring one that has `settings` applied.
    pub fn take(&self, side: Side, settings: &S) -> Option<(C, S)> {
        let mut idle = self.slot(side);
        let i = idle
            .iter()
            .rposition(|(_, s)| s == settings)
            .or_else(|| idle.len().checked_sub(1))?;
        Some(idle.swap_remove(i))
    }

    /// `conn`, with `settings` applied, back for the next sample.
    pub fn give_back(&self, side: Side, conn: C, settings: S) {
        let mut idle = self.slot(side);
        if idle.len() < self.max {
            idle.push((conn, settings));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_prefers_a_connection_with_the_same_settings_and_keeps_at_most_max() {
        let pool: IdlePool<u32, &str> = IdlePool::new(2);
        pool.give_back(Side::Old, 1, "a");
        pool.give_back(Side::Old, 2, "b");
        pool.give_back(Side::Old, 3, "c");
        assert_eq!(pool.take(Side::New, &"a"), None);
        assert_eq!(pool.take(Side::Old, &"a"), Some((1, "a")));
        assert_eq!(pool.take(Side::Old, &"z"), Some((2, "b")));
        assert_eq!(pool.take(Side::Old, &"a"), None);
    }
}
