//! Statements the application still writes with old's names: each time the
//! mapping translates one for new as the authority, its shape is noted, so
//! that `finalize` (after which nothing translates, by default) can name
//! what would then fail.

use dashmap::DashMap;
use std::time::{Duration, Instant};

/// How many shapes are kept (the oldest go first).
const KEPT: usize = 200;

#[derive(Default)]
pub struct OldNames {
    /// How far back `finalize` looks (the guards' window, 5 minutes at
    /// least: an application's rare statements count too).
    pub window: Duration,
    /// Statement shape (its first line, trimmed) -> last time translated.
    seen: DashMap<String, Instant>,
}

impl OldNames {
    pub fn new(window: Duration) -> OldNames {
        OldNames {
            window,
            seen: DashMap::new(),
        }
    }

    /// `sql` was translated from old's names to new's.
    pub fn note(&self, sql: &str) {
        let shape: String = sql
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(80)
            .collect();
        if self.seen.len() >= KEPT && !self.seen.contains_key(&shape) {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|e| *e.value())
                .map(|e| e.key().clone());
            if let Some(k) = oldest {
                self.seen.remove(&k);
            }
        }
        self.seen.insert(shape, Instant::now());
    }

    /// The shapes translated within `window`, most recent first.
    pub fn within(&self, window: Duration) -> Vec<String> {
        let mut recent: Vec<(Instant, String)> = self
            .seen
            .iter()
            .filter(|e| e.value().elapsed() <= window)
            .map(|e| (*e.value(), e.key().clone()))
            .collect();
        recent.sort_by_key(|r| std::cmp::Reverse(r.0));
        recent.into_iter().map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_shapes_are_named_once() {
        let names = OldNames::default();
        names.note("SELECT id,  name\n FROM customers");
        names.note("SELECT id, name FROM customers");
        assert_eq!(
            names.within(Duration::from_secs(60)),
            ["SELECT id, name FROM customers"]
        );
        assert!(names.within(Duration::ZERO).len() <= 1);
    }
}
