//! The fleet's store: where several turnout instances keep the phase they
//! share, a change under way, and who is alive. Beside the backend layer:
//! etcd through its client crate, or tables in a database through the
//! backend clients. Both behind [`Store`]; every write of the shared state
//! is a compare-and-swap, so two coordinators never both win.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

#[cfg(feature = "etcd")]
mod etcd;
mod sql;

pub use sql::SqlStore;

/// The phase the fleet committed, and a change under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub phase: String,
    pub epoch: u64,
    /// Earlier phases, oldest first (where `rollback` goes).
    #[serde(default)]
    pub history: Vec<String>,
    /// A change prepared by a coordinator and not yet committed or aborted.
    #[serde(default)]
    pub prepared: Option<Prepared>,
    /// The operator's `pause`, for every instance.
    #[serde(default)]
    pub paused: bool,
    /// Who wrote this record last, and a number of theirs: a swap is known
    /// to be one's own by it.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub nonce: u64,
}

/// A change every live instance must acknowledge before it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// The epoch the change will take effect at.
    pub epoch: u64,
    /// The command, as the audit log names it.
    pub command: String,
    pub from: String,
    pub to: String,
    pub coordinator: String,
    /// The authority changes: instances hold new transactions and let the
    /// open ones end before they acknowledge.
    pub barrier: bool,
    /// How long instances hold for it at most (the coordinator's
    /// `guards.barrier_ms`).
    pub barrier_ms: u64,
    /// The log's handover at a change of authority, when another instance
    /// leads the applier: `asked` by the coordinator once every instance
    /// acknowledged, then `done: <line>` or `failed: <why>` by the leader.
    #[serde(default)]
    pub handover: Option<String>,
}

/// One instance, as it lists itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub instance: String,
    pub phase: String,
    pub epoch: u64,
    /// Client connections open on it.
    pub sessions: u64,
    pub version: String,
    /// The prepared epoch it is ready for (its barrier done).
    #[serde(default)]
    pub acked: Option<u64>,
    /// Why it cannot take the prepared change (then the change aborts).
    #[serde(default)]
    pub refused: Option<(u64, String)>,
    /// It holds new transactions now (a barrier, a pause, or its lease).
    #[serde(default)]
    pub holding: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("fleet store {store}: {detail}")]
    Unreachable { store: String, detail: String },
    #[error("fleet store {store}: {detail}")]
    Invalid { store: String, detail: String },
}

/// The version a compare-and-swap expects (`None`: no record yet).
pub type Version = Option<i64>;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

pub trait Store: Send + Sync {
    /// Where it is, for messages.
    fn describe(&self) -> String;
    /// The record and its version; `None` when the fleet has none yet.
    fn read(&self) -> StoreFuture<'_, Option<(Record, i64)>>;
    /// Replaces the record when its version is still `expected`: whether
    /// this swap won.
    fn swap<'a>(&'a self, expected: Version, next: &'a Record) -> StoreFuture<'a, bool>;
    /// Lists `member` for `lease` more (its membership ends unless renewed
    /// within it).
    fn heartbeat<'a>(&'a self, member: &'a Member, lease: Duration) -> StoreFuture<'a, ()>;
    /// The members whose lease has not ended.
    fn members(&self) -> StoreFuture<'_, Vec<Member>>;
    /// `instance` leaves (it stops).
    fn leave<'a>(&'a self, instance: &'a str) -> StoreFuture<'a, ()>;
    /// Takes or keeps `role` for `instance` while its lease lasts (taken
    /// when no one holds it or its holder's lease ended): who holds it now.
    fn lead<'a>(
        &'a self,
        role: &'a str,
        instance: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<String>>;
    /// Ticks when the store says something changed (etcd's watch,
    /// PostgreSQL's LISTEN); never, where the store cannot say (MySQL):
    /// readers poll as well.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The store `config` names (`turnout_config::FleetStore`); `old` is the
/// login of old's server, used when the config names no store.
pub fn open(
    store: &turnout_config::FleetStore,
    old: &crate::backend::transport::BackendTarget,
) -> Result<std::sync::Arc<dyn Store>, String> {
    match store {
        turnout_config::FleetStore::Sql { protocol, login } => {
            let mut target = crate::backend::transport::BackendTarget::new(
                turnout_control::Side::Old,
                login,
                None,
            );
            if login.host == old.host && login.port == old.port as i64 {
                target.tls = old.tls.clone();
                target.tls_mode = old.tls_mode;
            }
            Ok(std::sync::Arc::new(SqlStore::new(*protocol, target)))
        }
        #[cfg(feature = "etcd")]
        turnout_config::FleetStore::Etcd { endpoints, prefix } => Ok(std::sync::Arc::new(
            etcd::EtcdStore::new(endpoints.clone(), prefix.clone()),
        )),
        #[cfg(not(feature = "etcd"))]
        turnout_config::FleetStore::Etcd { .. } => Err(
            "fleet.store: this build of turnout has no etcd client (build it with `--features etcd`, which needs protoc), or name a postgres:// or mysql:// store".into(),
        ),
    }
}

/// Bytes as lower-case hex, and back: records travel through SQL literals
/// and etcd values as plain ASCII.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
