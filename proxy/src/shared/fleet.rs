//! This instance's part in a fleet (`[fleet]`): the store, its name and
//! lease, and what it did about the change under way. The flips and the
//! fleet's agent (`crate::flip::fleet`) use it; sessions only see the
//! fence ([`crate::shared::coordination::Coordination::fenced`]).

use crate::store::{Record, Store};
use arc_swap::ArcSwapOption;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FleetLink {
    pub store: Arc<dyn Store>,
    pub instance: String,
    pub lease: Duration,
    /// What this instance answered to a prepared change: the epoch it is
    /// ready for, or why not.
    pub answer: Mutex<Answer>,
    /// The record as last read.
    pub last: ArcSwapOption<Record>,
    /// A change of this instance's own is being coordinated.
    pub coordinating: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The prepared epoch handled last (acknowledged or refused).
    pub handled: Option<u64>,
    pub acked: Option<u64>,
    pub refused: Option<(u64, String)>,
    /// The prepared epoch this instance holds new transactions for.
    pub holding: Option<u64>,
}

impl FleetLink {
    pub fn new(store: Arc<dyn Store>, instance: String, lease: Duration) -> FleetLink {
        FleetLink {
            store,
            instance,
            lease,
            answer: Mutex::new(Answer::default()),
            last: ArcSwapOption::empty(),
            coordinating: tokio::sync::Mutex::new(()),
        }
    }

    pub fn answer(&self) -> std::sync::MutexGuard<'_, Answer> {
        self.answer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FleetLink {
    /// The link `config`'s `[fleet]` describes (`None` without one).
    /// `old`: how old's server is reached (the store's default).
    pub fn of(
        config: &turnout_config::Config,
        old: &crate::backend::transport::BackendTarget,
    ) -> Result<Option<Arc<FleetLink>>, String> {
        let Some(fleet) = &config.fleet else {
            return Ok(None);
        };
        let store = fleet
            .store_of(config.protocol, &config.backends)
            .map_err(|e| format!("fleet.store: {e}"))?;
        let store = crate::store::open(&store, old)?;
        let instance = fleet
            .instance_name(&config.listen.address)
            .map_err(|e| format!("fleet.instance: {e}"))?;
        Ok(Some(Arc::new(FleetLink::new(
            store,
            instance,
            Duration::from_millis(fleet.lease_ms),
        ))))
    }
}
