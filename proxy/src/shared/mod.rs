//! What every session of one listener shares, in owned parts: the
//! coordination of sessions and flips, the live config (users, logins and
//! mapping, swapped whole on reload), the records, the async queues'
//! figures, each adapter's registries, the backends and the policies. Below
//! the protocol adapters and the side jobs, which use it; the server owns
//! it and the control plane steers it.

/// Implements [`Adapter`] for `$adapter` with its session's `serve` and
/// its writes-flip `catch_up` functions (whose signatures the trait's).
macro_rules! adapter {
    ($adapter:ident, $serve:path, $catch_up:path) => {
        $crate::shared::adapter!($adapter, $serve, $catch_up, {});
    };
    ($adapter:ident, $serve:path, $catch_up:path, log: $log:path) => {
        $crate::shared::adapter!($adapter, $serve, $catch_up, {
            fn log(&self) -> Option<&dyn $crate::shared::LogSource> {
                Some(&$log)
            }
        });
    };
    ($adapter:ident, $serve:path, $catch_up:path, { $($extra:item)* }) => {
        impl $crate::shared::Adapter for $adapter {
            $($extra)*

            fn serve(
                &self,
                shared: std::sync::Arc<$crate::shared::Shared>,
                client: $crate::stream::Stream,
                peer: String,
                over_limit: bool,
            ) -> $crate::shared::Boxed<'static, ()> {
                Box::pin($serve(shared, client, peer, over_limit))
            }

            fn catch_up<'a>(
                &self,
                shared: &'a $crate::shared::Shared,
                from: turnout_control::Side,
                to: turnout_control::Side,
                apply: $crate::backend::catch_up::Apply,
            ) -> $crate::shared::Boxed<'a, Result<$crate::backend::catch_up::CatchUp, String>> {
                Box::pin($catch_up(shared, from, to, apply))
            }
        }
    };
}
pub(crate) use adapter;

pub mod coordination;
pub mod fleet;
pub mod old_names;
pub mod registry;

pub use coordination::{Coordination, MirroredSession};

use crate::backend::catch_up::{Apply, CatchUp};
use crate::stream::Stream;
use std::future::Future;
use std::pin::Pin;

/// A future an adapter returns, boxed so the trait stays object-safe.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A wire protocol's adapter, as the server and the flips use it: they go
/// through this and name neither protocol.
pub trait Adapter: Send + Sync + 'static {
    /// Serves one client connection to its end. `over_limit`: past
    /// `limits.max_client_connections`, refused with the protocol's error.
    fn serve(
        &self,
        shared: Arc<Shared>,
        client: Stream,
        peer: String,
        over_limit: bool,
    ) -> Boxed<'static, ()>;
    /// The catch-up of the side taking over at a writes flip (sequences,
    /// AUTO_INCREMENT counters), carried out or previewed.
    fn catch_up<'a>(
        &self,
        shared: &'a Shared,
        from: Side,
        to: Side,
        apply: Apply,
    ) -> Boxed<'a, Result<CatchUp, String>>;
    /// The mirror's log source, where the protocol has one.
    fn log(&self) -> Option<&dyn LogSource> {
        None
    }
}

/// The mirror fed from the authority's own log, as the server and the
/// flips drive it.
pub trait LogSource: Send + Sync {
    /// Chooses the source for `phase` (`mirror.source`) and, for the log,
    /// makes what it needs and starts the applier: a line saying which
    /// source is in use and why, or why turnout must not start.
    /// `resumed`: the phase comes from the state file.
    fn start<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        phase: Phase,
        resumed: bool,
    ) -> Boxed<'a, Result<String, String>>;
    /// At a change of authority (inside its barrier): waits until the
    /// applier applied everything `from` committed, then feeds `from` from
    /// `to`'s log when `to` allows it (else statements): a line for the
    /// reply. Previewed under `Apply::Preview`.
    fn switch<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        from: Side,
        to: Side,
        apply: Apply,
        limit: Duration,
    ) -> Boxed<'a, Result<String, String>>;
    /// `finalized`: the applier stops and the slot and publications go.
    fn finish<'a>(&'a self, shared: &'a Arc<Shared>) -> Boxed<'a, Result<String, String>>;
    /// In a fleet whose applier another instance leads: the source for
    /// `phase` is set without an applier of this instance's own, its
    /// commits completed by what the leader says it applied.
    fn follow<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        phase: Phase,
    ) -> Boxed<'a, Result<String, String>>;
    /// turnout stops: waits (up to `limit`) until the applier applied what
    /// the authority committed. What it has not stays in the slot for the
    /// next start: nothing is lost either way.
    fn drain<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        limit: Duration,
    ) -> Boxed<'a, Result<(), String>>;
    /// What `check-config --connect` and `turnout plan` say of the source
    /// with `authority` the authority: the line, and notes (what to change
    /// on the servers); `Err` when `mirror.source = "log"` cannot be had.
    fn check<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        authority: Side,
    ) -> Boxed<'a, Result<(String, Vec<String>), String>>;
}

use crate::backend::transport::{BackendTarget, Backends};
use crate::engine::records::Records;
use crate::engine::sampler::Sampler;
use crate::engine::{Classifier, SqlDialect};
use crate::logins::pg::{UserTable, UserTableError};
use crate::mapping::SchemaMap;
use crate::tls::{self, TlsError};
use arc_swap::ArcSwap;
use dashmap::DashMap;
pub use registry::{CancelKey, CancelTarget, MyRegistry, PgRegistry, Registered};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;
use turnout_config::{Config, Protocol};
use turnout_config::{DdlPolicy, MirrorErrorPolicy, MirrorMode, UnsafePolicy};
use turnout_control::divergence::{Divergence, DivergenceKind, DivergenceLog, DivergenceLogError};
use turnout_control::readdiff::{ReadDiffError, ReadDiffLog};
use turnout_control::{Phase, RoutingState, Side};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen.address: cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("listen.tls: {0}")]
    ListenTls(TlsError),
    #[error("backends.{side}: {source}")]
    BackendTls { side: Side, source: TlsError },
    #[error(transparent)]
    Users(#[from] UserTableError),
    #[error(transparent)]
    MysqlUsers(#[from] crate::logins::mysql::UsersError),
    #[error("{}", .0.join("; "))]
    Mapping(Vec<String>),
    #[error("mirror.divergence_log: {0}")]
    DivergenceLog(#[from] DivergenceLogError),
    #[error("sampling.report: {0}")]
    ReadDiffs(#[from] ReadDiffError),
    #[error("{0}")]
    Fleet(String),
    #[error("limits.worker_threads: cannot start the session threads: {0}")]
    Threads(std::io::Error),
}

/// The part of the config a reload changes, read as one snapshot: a
/// session never sees the new users with the old mapping, or the reverse.
#[derive(Clone)]
pub struct Live {
    /// PostgreSQL clients' logins.
    pub users: Arc<UserTable>,
    /// MySQL clients' logins (password hashes).
    pub mysql_users: Arc<crate::logins::mysql::Users>,
    /// Per turnout user, the backend role its sessions log in as
    /// (`[[users]] backend_user`).
    pub backend_logins: Arc<HashMap<String, (String, turnout_config::Secret)>>,
    /// The schema mapping (`[mapping]`), parsed.
    pub mapping: Arc<crate::mapping::SchemaMap>,
}

impl Live {
    /// The live part of `config`, or why it cannot be used.
    pub fn of(config: &Config) -> Result<Live, ServerError> {
        Ok(Live {
            users: Arc::new(users_for(config)?),
            mysql_users: Arc::new(mysql_users_for(config)?),
            backend_logins: Arc::new(backend_logins_for(config)),
            mapping: Arc::new(mapping_for(config).map_err(ServerError::Mapping)?),
        })
    }
}

/// One snapshot of the live config's mapping (derefs to it).
pub struct MappingRef(arc_swap::Guard<Arc<Live>>);

impl std::ops::Deref for MappingRef {
    type Target = crate::mapping::SchemaMap;
    fn deref(&self) -> &crate::mapping::SchemaMap {
        &self.0.mapping
    }
}

pub struct Shared {
    /// Sessions and phase changes in step: the routing, pause, stop, the
    /// flip lock and the counts a barrier and the watch windows read.
    pub coord: Coordination,
    /// The async mirror queues' figures (statements pending, the deepest
    /// queue, their bound).
    pub queues: Arc<crate::engine::queue::Stats>,
    /// Divergences and mirror failures, as recorded.
    pub records: Arc<Records>,
    /// Shadow reads (`sampling.rate` may be 0, and changed live).
    pub sampler: Sampler,
    /// What a reload changes, swapped whole (see [`Live`]).
    live: ArcSwap<Live>,
    /// The adapter of this listener's wire protocol.
    pub adapter: Arc<dyn Adapter>,
    /// The PostgreSQL adapter's registries (cancel keys, shadow-read pool).
    pub pg: PgRegistry,
    /// The MySQL adapter's registries (sessions for KILL, shadow-read pool,
    /// connection ids, the backends' version).
    pub mysql: MyRegistry,
    backends: Backends,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_required: bool,
    pub max_message: usize,
    /// `limits.max_pipeline_bytes`, `max_prepared_statements`, `max_image_bytes`.
    pub max_pipeline: usize,
    pub max_prepared: usize,
    pub max_image: usize,
    pub auth_timeout: Duration,
    pub classifier: Classifier,
    pub ddl_policy: DdlPolicy,
    pub mirror_policy: MirrorErrorPolicy,
    pub unsafe_policy: UnsafePolicy,
    /// `mirror.mode = "async"`: the per-session queue's bound.
    pub async_queue: Option<usize>,
    pub mirror_timeout: Duration,
    /// `mirror.row_images` (PostgreSQL).
    pub row_images: bool,
    /// `mirror.replica_role` (PostgreSQL).
    pub replica_role: bool,
    /// Each side's tables as row images are applied to them, from that
    /// side's catalog (or why they cannot be); dropped at DDL.
    pub image_tables:
        DashMap<(Side, String), Result<Arc<crate::engine::row_image::MirrorTable>, String>>,
    /// Backfill and verify (`turnout ctl backfill ...`, `verify ...`).
    pub backfill: crate::backfill::Backfill,
    /// The mirror fed from the authority's log: its source, the commits
    /// waiting for it, its figures.
    pub log: Arc<crate::engine::logsync::LogSync>,
    /// `mirror.source` as configured.
    pub log_source: turnout_config::MirrorSource,
    /// `mirror.slot`: the slot, publication and origin names.
    pub log_slot: String,
    /// `mirror.max_log_lag_bytes`.
    pub max_log_lag: u64,
    /// The source in use and why, in words (status, check-config, logs).
    pub log_choice: ArcSwap<String>,
    /// Statements still written with old's names (translated for new).
    pub old_names: old_names::OldNames,
    /// The config as last loaded (at start, then by each reload): what a
    /// reload compares with.
    pub running: ArcSwap<Config>,
    /// This instance's part in a fleet (`[fleet]`), when it is in one.
    pub fleet: Option<Arc<fleet::FleetLink>>,
}

impl Shared {
    /// What the sessions of a listener share, from the config: backends,
    /// users, logs, policies. Binds nothing (`turnout plan` uses it too).
    pub fn new(
        config: &Config,
        routing: Arc<RoutingState>,
        adapter: Arc<dyn Adapter>,
    ) -> Result<Shared, ServerError> {
        let tls = match &config.listen.tls {
            Some(t) => Some(tls::server_config(&t.cert, &t.key).map_err(ServerError::ListenTls)?),
            None => None,
        };
        let target = |side: Side| -> Result<BackendTarget, ServerError> {
            let b = match side {
                Side::Old => &config.backends.old,
                Side::New => &config.backends.new,
            };
            let tls = tls::backend_config(b.tls, b.ca.as_deref())
                .map_err(|source| ServerError::BackendTls { side, source })?;
            Ok(BackendTarget::new(side, b, tls))
        };
        let old = target(Side::Old)?;
        let fleet = fleet::FleetLink::of(config, &old).map_err(ServerError::Fleet)?;
        let shared = Shared {
            fleet,
            coord: Coordination::new(routing),
            queues: Arc::new(crate::engine::queue::Stats::new(
                config.mirror.async_queue as usize,
            )),
            records: Arc::new(Records::new(
                match &config.mirror.divergence_log {
                    Some(path) => Some(DivergenceLog::open(path)?),
                    None => None,
                },
                config.mirror.log_statements,
            )),
            live: ArcSwap::from_pointee(Live::of(config)?),
            adapter,
            pg: PgRegistry::default(),
            mysql: MyRegistry::default(),
            backends: Backends::new(config.protocol, old, target(Side::New)?),
            tls_required: config.listen.tls.as_ref().is_some_and(|t| t.required),
            tls,
            max_message: config.limits.max_message_bytes(),
            max_pipeline: usize::try_from(config.limits.max_pipeline_bytes).unwrap_or(usize::MAX),
            max_prepared: usize::try_from(config.limits.max_prepared_statements)
                .unwrap_or(usize::MAX),
            max_image: usize::try_from(config.limits.max_image_bytes).unwrap_or(usize::MAX),
            auth_timeout: Duration::from_millis(config.limits.auth_timeout_ms),
            classifier: Classifier::new(
                match config.protocol {
                    Protocol::Postgres => SqlDialect::Postgres,
                    Protocol::Mysql => SqlDialect::Mysql,
                },
                10_000,
            )
            .with_rules(&config.mirror.rules),
            ddl_policy: config.mirror.ddl,
            mirror_policy: config.mirror.on_error,
            unsafe_policy: config.mirror.on_unsafe,
            async_queue: (config.mirror.mode == MirrorMode::Async)
                .then_some(config.mirror.async_queue as usize),
            mirror_timeout: Duration::from_millis(config.mirror.statement_timeout_ms),
            row_images: config.mirror.row_images,
            replica_role: config.mirror.replica_role,
            image_tables: DashMap::new(),
            backfill: crate::backfill::Backfill::new(config),
            log: Arc::new(crate::engine::logsync::LogSync::new(
                config.mirror.mode == MirrorMode::Sync,
                Duration::from_millis(config.mirror.statement_timeout_ms),
            )),
            log_source: config.mirror.source,
            log_slot: config.mirror.slot.clone(),
            max_log_lag: config.mirror.max_log_lag_bytes.max(0) as u64,
            log_choice: ArcSwap::from_pointee(String::new()),
            old_names: old_names::OldNames::new(Duration::from_secs(
                config.guards.window_secs.max(300),
            )),
            running: ArcSwap::from_pointee(config.clone()),
            sampler: Sampler::new(
                &config.sampling,
                Arc::new(ReadDiffLog::open(
                    config.sampling.report.as_deref(),
                    config.sampling.report_max_bytes as u64,
                )?),
            ),
        };
        Ok(shared)
    }

    /// A unit turnout ran on `ran_on` alone was answered with written rows
    /// (`answer`: what the server said): counted as a mirror error, logged,
    /// and the shape marked a write from then on. The divergence to record
    /// (the caller adds where it lies) and its detail.
    pub fn unmirrored_write(
        &self,
        fingerprint: &str,
        ran_on: Side,
        answer: &str,
    ) -> (Divergence, String) {
        self.classifier.mark_write(fingerprint);
        let detail = format!(
            "turnout took this statement for one that writes nothing and ran it on {ran_on} alone, but the server {answer}: {} did not get the write (statements of this shape are mirrored from now on)",
            ran_on.other()
        );
        warn!(side = %ran_on, %fingerprint, "{detail}");
        self.records.mirror_error();
        let d = Divergence::new(
            DivergenceKind::UnmirroredWrite,
            ran_on.other(),
            fingerprint,
            &detail,
        );
        (d, detail)
    }

    /// A sampled read's shadow run failed in its read-only transaction:
    /// the read writes, and the client's run of it wrote on `ran_on` alone
    /// (a function behind a view, which no text shows). Recorded as an
    /// `unmirrored_write`; its shape is mirrored from now on.
    pub fn read_wrote(&self, fingerprint: &str, ran_on: Side, sql: &str) {
        let (mut d, _) = self.unmirrored_write(
            fingerprint,
            ran_on,
            &format!(
                "refused it in a read-only transaction on {} (it writes)",
                ran_on.other()
            ),
        );
        if self.records.log_statements {
            d.statement = Some(sql.to_string());
        }
        self.records.divergence(d);
    }

    /// A MySQL backend told its version: what turnout reports to clients.
    pub fn note_mysql_version(&self, version: String) {
        if self.mysql.version.load().as_deref() != Some(&version) {
            self.mysql.version.store(Arc::new(Some(version)));
        }
    }

    /// The live config now: one snapshot of users, logins and mapping.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The schema mapping now.
    pub fn mapping(&self) -> MappingRef {
        MappingRef(self.live.load())
    }

    /// Swaps the live config whole (a reload).
    pub fn set_live(&self, live: Live) {
        self.live.store(Arc::new(live));
    }

    /// Where a session of turnout user `user` logs in on `side`: the
    /// side's backend, as the user's own backend role when it has one.
    pub fn session_target(&self, side: Side, user: &str) -> BackendTarget {
        let mut t = self.target(side).clone();
        if let Some((role, password)) = self.live.load().backend_logins.get(user) {
            t.user = role.clone();
            t.password = password.clone();
        }
        t
    }

    pub fn target(&self, side: Side) -> &BackendTarget {
        self.backends.target(side)
    }

    /// Both backends, as the side jobs open connections to them.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }
}

/// A client was stopped at the `[limits]` bound `limit` (counted in
/// `turnout_client_limit_hits_total`).
pub fn client_limit_hit(limit: &'static str) {
    metrics::counter!("turnout_client_limit_hits_total", "limit" => limit).increment(1);
}

/// The config's schema mapping, parsed in the listener's SQL dialect.
pub fn mapping_for(config: &Config) -> Result<crate::mapping::SchemaMap, Vec<String>> {
    let dialect = match config.protocol {
        Protocol::Postgres => SqlDialect::Postgres,
        Protocol::Mysql => SqlDialect::Mysql,
    };
    crate::mapping::SchemaMap::new(&config.mapping, dialect)
}

/// The PostgreSQL users' verifiers (none for a MySQL listener).
/// The backend role of each user that has one of its own.
pub fn backend_logins_for(config: &Config) -> HashMap<String, (String, turnout_config::Secret)> {
    config
        .users
        .iter()
        .filter_map(|u| {
            Some((
                u.name.clone(),
                (u.backend_user.clone()?, u.backend_password.clone()?),
            ))
        })
        .collect()
}

pub fn users_for(config: &Config) -> Result<UserTable, UserTableError> {
    match config.protocol {
        Protocol::Postgres => UserTable::from_config(&config.users),
        Protocol::Mysql => UserTable::from_config(&[]),
    }
}

/// The MySQL users' password hashes (none for a PostgreSQL listener).
pub fn mysql_users_for(
    config: &Config,
) -> Result<crate::logins::mysql::Users, crate::logins::mysql::UsersError> {
    match config.protocol {
        Protocol::Mysql => crate::logins::mysql::Users::from_config(&config.users),
        Protocol::Postgres => Ok(crate::logins::mysql::Users::default()),
    }
}

/// The backfill and verify jobs see the listener through this.
impl crate::backfill::Env for Shared {
    fn backfill(&self) -> &crate::backfill::Backfill {
        &self.backfill
    }
    fn backends(&self) -> &Backends {
        &self.backends
    }
    fn mapping(&self) -> Arc<SchemaMap> {
        self.live.load().mapping.clone()
    }
    fn phase(&self) -> Phase {
        self.coord.routing.snapshot().phase
    }
    fn stopping(&self) -> bool {
        *self.coord.stopping.borrow()
    }
    fn async_mirroring(&self) -> bool {
        self.async_queue.is_some()
    }
    fn records(&self) -> &Records {
        &self.records
    }
    fn passthrough_sessions(&self) -> usize {
        self.coord
            .passthrough_sessions
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Shared {
    /// Starts a session's async mirror queue applied by `applier`, with
    /// this listener's figures, records and mirror time limit.
    pub fn queue<A: crate::engine::queue::Applier>(
        &self,
        applier: A,
    ) -> crate::engine::queue::Queue<A> {
        crate::engine::queue::Queue::start(
            applier,
            self.queues.clone(),
            self.records.clone(),
            self.mirror_timeout,
        )
    }

    /// This listener as the backfill and verify jobs see it.
    pub fn jobs(self: &Arc<Self>) -> Arc<dyn crate::backfill::Env> {
        self.clone()
    }
}
