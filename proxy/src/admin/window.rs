//! The guards' window: the figures a flip is judged on, over
//! `guards.window_secs`, and `ack`.

use crate::shared::Shared;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use turnout_control::controller::Figures;

/// The guards' window: snapshots of the cumulative counts, one a second,
/// kept for the window's length; figures are now minus the oldest kept.
pub struct Window {
    length: Duration,
    snapshots: Mutex<VecDeque<(Instant, Figures)>>,
    /// The totals at the last `ack`: nothing before counts.
    acknowledged: Mutex<Option<Figures>>,
}

impl Window {
    pub fn new(length: Duration) -> Arc<Window> {
        Arc::new(Window {
            length,
            snapshots: Mutex::new(VecDeque::new()),
            acknowledged: Mutex::new(None),
        })
    }

    /// Takes a snapshot every second while `shared` lives.
    pub async fn track(self: Arc<Self>, shared: Arc<Shared>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut snaps = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            snaps.push_back((now, totals(&shared)));
            while snaps
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > self.length)
            {
                snaps.pop_front();
            }
        }
    }

    /// Counts over the window (since start, when younger than it).
    pub fn figures(&self, shared: &Shared) -> Figures {
        let now = totals(shared);
        let snaps = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let mut base = snaps.front().map(|(_, f)| *f).unwrap_or_default();
        if let Some(a) = *self.acknowledged.lock().unwrap_or_else(|p| p.into_inner()) {
            base.mismatches = base.mismatches.max(a.mismatches);
            base.mirror_errors = base.mirror_errors.max(a.mirror_errors);
        }
        Figures {
            sampling: shared.sampler.rate() > 0.0,
            compared: now.compared.saturating_sub(base.compared),
            mismatches: now.mismatches.saturating_sub(base.mismatches),
            mirror_errors: now.mirror_errors.saturating_sub(base.mirror_errors),
        }
    }
}

impl Window {
    /// `ack`: mismatches and mirror errors so far no longer count.
    pub fn acknowledge(&self, shared: &Shared) {
        *self.acknowledged.lock().unwrap_or_else(|p| p.into_inner()) = Some(totals(shared));
    }
}

fn totals(shared: &Shared) -> Figures {
    let (compared, mismatches) = shared.sampler.log.totals();
    Figures {
        compared,
        mismatches,
        mirror_errors: shared.records.mirror_error_count(),
        sampling: false,
    }
}
