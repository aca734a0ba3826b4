//! Each protocol adapter's own registries in the shared state: what its
//! sessions find of each other (cancel keys, KILL targets) and the idle
//! connections its shadow reads reuse. Plain data: the adapters own the
//! code that fills and reads them.

use crate::engine::sampler::IdlePool;
use crate::wire::my_packet::Packets;
use crate::wire::pg_framed::Framed;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use turnout_control::Side;

/// turnout's key for a client session, as the client sees it in BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
}

/// The backend process a cancel key stands for.
#[derive(Debug, Clone, Copy)]
pub struct CancelTarget {
    pub side: Side,
    pub pid: i32,
    pub secret: i32,
}

/// PostgreSQL's registries.
pub struct PgRegistry {
    /// The sessions' cancel keys and the backend processes they stand for.
    pub cancels: DashMap<CancelKey, CancelTarget>,
    /// Idle connections for shadow reads per side, each with the session
    /// settings applied on it.
    pub idle: IdlePool<Framed, Arc<Vec<String>>>,
    /// Per side and table OID, the primary key's column numbers (empty:
    /// none), read once from that side's catalog.
    pub primary_keys: DashMap<(Side, u32), Arc<Vec<i16>>>,
    /// The log applier running now (`mirror.source = "log"`): how to stop
    /// it, and its task.
    pub log_task: std::sync::Mutex<Option<LogTask>>,
    /// The authority's user-defined volatile functions (lower-case names),
    /// when read and from which side: a read calling one may write.
    pub functions: std::sync::Mutex<Option<FunctionList>>,
    /// Relations (lower-case names) a client's DDL created on the authority
    /// alone (`mirror.ddl = "authority_only"`): a read of one that fails on
    /// the other side is served by the authority and is no failure of that
    /// side. Bounded ([`Self::hold`]).
    pub held: DashMap<String, ()>,
}

impl PgRegistry {
    /// Notes relations a DDL kept on the authority created.
    pub fn hold(&self, names: Vec<String>) {
        for name in names {
            if self.held.len() >= 10_000 {
                self.held.clear();
            }
            self.held.insert(name, ());
        }
    }

    /// Whether an ErrorResponse says a relation is missing (42P01) that a
    /// client's DDL created on the authority alone.
    pub fn lacks_held(&self, code: &str, message: &str) -> bool {
        if code != "42P01" || self.held.is_empty() {
            return false;
        }
        // `relation "s.t" does not exist`
        let Some(name) = message.split('"').nth(1) else {
            return false;
        };
        let last = name.rsplit('.').next().unwrap_or(name);
        self.held.contains_key(&last.to_lowercase())
    }
}

/// When a side's functions were read, the side, and their names.
pub type FunctionList = (
    std::time::Instant,
    Side,
    Arc<std::collections::HashSet<String>>,
);

/// A running log applier.
pub struct LogTask {
    pub from: Side,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LogTask {
    /// Takes the task out of `slot` (a log source's registry entry), tells
    /// it to stop and waits (up to 10 s each) for its parts to end.
    pub async fn stop_in(slot: &std::sync::Mutex<Option<LogTask>>) {
        let task = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.stop.send(true);
            for t in task.tasks {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
            }
        }
    }
}

impl Default for PgRegistry {
    fn default() -> Self {
        PgRegistry {
            cancels: DashMap::new(),
            idle: IdlePool::new(32),
            primary_keys: DashMap::new(),
            held: DashMap::new(),
            log_task: std::sync::Mutex::new(None),
            functions: std::sync::Mutex::new(None),
        }
    }
}

/// A MySQL session's backend thread, as KILL needs it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub user: String,
    pub side: Side,
    pub thread: u32,
}

/// A MySQL session's settings: the commands (`USE`, `SET ...`) applied on a
/// connection.
pub type Settings = Arc<Vec<Vec<u8>>>;

/// MySQL's registries.
pub struct MyRegistry {
    /// The next connection id turnout gives out.
    pub next_id: AtomicU32,
    /// Sessions by turnout's connection id: whose they are and the backend
    /// thread a KILL naming them must reach.
    pub sessions: DashMap<u32, Registered>,
    /// Idle connections for shadow reads per side.
    pub idle: IdlePool<Packets, Settings>,
    /// The server version a backend last reported (what clients are told).
    pub version: ArcSwap<Option<String>>,
    /// The binary log applier's task, when it runs.
    pub log_task: std::sync::Mutex<Option<LogTask>>,
    /// Where the applier is in the authority's binary log, and the commits
    /// waiting for it.
    pub binlog: BinlogProgress,
}

/// How far the binary log applier got, for the sessions' waits and the
/// flips.
#[derive(Default)]
pub struct BinlogProgress {
    /// The last GTID per domain the applier applied or passed over.
    pub seen: std::sync::Mutex<crate::backend::binlog::Position>,
    /// Commits waiting: the authority's position after each, and its
    /// token in [`crate::engine::logsync::LogSync`].
    pub pending: std::sync::Mutex<Vec<(crate::backend::binlog::Position, String)>>,
    /// The connection positions are asked on, and the last answer: the
    /// asks numbered before `covers` are answered by `last`.
    pub oracle: tokio::sync::Mutex<Option<(Side, Packets)>>,
    pub asked: std::sync::atomic::AtomicU64,
    pub last: std::sync::Mutex<(u64, crate::backend::binlog::Position)>,
    /// Transactions committed through turnout while the log fed the mirror,
    /// and those the applier applied, by table (`database.table`): the
    /// difference is what writers that bypass turnout wrote.
    pub ours: DashMap<String, u64>,
    pub applied: DashMap<String, u64>,
    /// Schema changes sent by turnout's sessions, by the authority's thread
    /// id that ran them: the applier applies those (per `mirror.ddl`) and
    /// leaves the ones made outside turnout.
    pub ddl_threads: DashMap<u32, u32>,
    /// The binary log file and end position of the last event the applier
    /// took (for the bytes it is behind).
    pub read_at: std::sync::Mutex<(String, u64)>,
    /// The last refusal recorded (recorded once while it lasts).
    pub refused: std::sync::Mutex<Option<String>>,
}

impl Default for MyRegistry {
    fn default() -> Self {
        MyRegistry {
            next_id: AtomicU32::new(1),
            sessions: DashMap::new(),
            idle: IdlePool::new(16),
            version: ArcSwap::from_pointee(None),
            log_task: std::sync::Mutex::new(None),
            binlog: BinlogProgress::default(),
        }
    }
}
