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
    /// The part this instance takes in the log source, and for which
    /// authority: `Some((true, side))` leads the applier reading `side`'s
    /// log, `Some((false, side))` follows it; `None`: no log source taken.
    pub applier: Mutex<Option<(bool, Option<turnout_control::Side>)>>,
    /// The prepared epoch whose log handover this leader made (undone if
    /// the change aborts).
    pub handed: Mutex<Option<u64>>,
    /// Taking a part in the log source runs one at a time.
    pub taking: tokio::sync::Mutex<()>,
    /// When the applier's leadership was last asked for.
    led_at: Mutex<Option<std::time::Instant>>,
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
            applier: Mutex::new(None),
            handed: Mutex::new(None),
            taking: tokio::sync::Mutex::new(()),
            led_at: Mutex::new(None),
        }
    }

    pub fn answer(&self) -> std::sync::MutexGuard<'_, Answer> {
        self.answer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The part in the log source taken (see `applier`).
    pub fn applier_role(&self) -> Option<(bool, Option<turnout_control::Side>)> {
        *self.applier.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_applier_role(&self, role: Option<(bool, Option<turnout_control::Side>)>) {
        *self.applier.lock().unwrap_or_else(|p| p.into_inner()) = role;
    }

    pub fn led_at(&self) -> Option<std::time::Instant> {
        *self.led_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn led_at_mut(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.led_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn handed(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.handed.lock().unwrap_or_else(|p| p.into_inner())
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
