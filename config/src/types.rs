use crate::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Wire protocol spoken to clients and backends.
    #[serde(default)]
    pub protocol: Protocol,
    pub listen: Listen,
    pub backends: Backends,
    /// Users that clients authenticate as.
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub mirror: Mirror,
    #[serde(default)]
    pub sampling: Sampling,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub guards: Guards,
    #[serde(default)]
    pub backfill: Backfill,
    /// How `old`'s tables and columns are named and shaped in `new`
    /// (identity when absent).
    #[serde(default)]
    pub mapping: Mapping,
    #[serde(default)]
    pub log: Log,
    /// Several instances that move as one (absent: this instance alone).
    #[serde(default)]
    pub fleet: Option<crate::Fleet>,
}

/// The schema mapping: one entry per table that differs between the sides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub tables: Vec<TableMapping>,
    /// What happens to statements written with old's names once the
    /// cutover is finalized: `"stop"` (default: they reach new as written,
    /// and `finalize` refuses while the application still sends them) or
    /// `"translate"` (turnout keeps translating them for as long as it
    /// stays in the path).
    #[serde(default)]
    pub after_finalize: AfterFinalize,
}

/// `mapping.after_finalize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterFinalize {
    #[default]
    Stop,
    Translate,
}

/// One table of `old` and its counterpart in `new`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// The table's name on `old`.
    pub old: String,
    /// Its name on `new` (the same when absent).
    #[serde(default)]
    pub new: Option<String>,
    /// Renamed columns: old name -> new name.
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, String>,
    /// Columns of `old` that `new` does not have.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Columns of `new` that `old` does not have, with their value as an
    /// SQL expression over the old row's columns (in `new`'s dialect).
    #[serde(default)]
    pub computed: std::collections::BTreeMap<String, String>,
}

impl TableMapping {
    /// The table's name on `new`.
    pub fn new_name(&self) -> &str {
        self.new.as_deref().unwrap_or(&self.old)
    }
}

/// What a forward flip needs, over the last `window_secs` seconds; a flip
/// that fails any of them is refused with every reason (`--force` overrides).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guards {
    #[serde(default = "defaults::guard_window_secs")]
    pub window_secs: u64,
    /// Reads compared on the shadow at least. Unset: 100 while reads are
    /// sampled (turnout_control's `DEFAULT_MIN_COMPARED_READS`), none while
    /// they are not.
    #[serde(default)]
    pub min_compared_reads: Option<u64>,
    /// Confirmed mismatches per compared read at most (0.0: none).
    #[serde(default)]
    pub max_mismatch_rate: f64,
    /// Mirror errors at most.
    #[serde(default)]
    pub max_mirror_errors: u64,
    /// After a reads flip, watch this long (0: off): when more than
    /// `abort_errors` reads fail on the newly promoted side, turnout rolls
    /// back by itself.
    #[serde(default)]
    pub watch_secs: u64,
    #[serde(default)]
    pub abort_errors: u64,
    /// A writes flip (and its rollback) holds new transactions at most this
    /// long while the ones in flight finish; past it the flip is abandoned
    /// and traffic resumes.
    #[serde(default = "defaults::barrier_ms")]
    pub barrier_ms: u64,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            window_secs: defaults::guard_window_secs(),
            min_compared_reads: None,
            max_mismatch_rate: 0.0,
            max_mirror_errors: 0,
            watch_secs: 0,
            abort_errors: 0,
            barrier_ms: defaults::barrier_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `host:port` clients connect to.
    pub address: String,
    /// Also accept local clients on a Unix socket in this folder, named as
    /// PostgreSQL names it (`.s.PGSQL.<port of address>`), so `psql -h <folder>` works.
    pub socket_dir: Option<PathBuf>,
    /// TLS offered to clients (SSLRequest / CLIENT_SSL).
    pub tls: Option<ListenTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Refuse clients that do not upgrade to TLS.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    pub old: Backend,
    pub new: Backend,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub host: String,
    /// Kept wide so an out-of-range value gets a precise error rather than a type error.
    pub port: i64,
    pub database: String,
    pub user: String,
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub tls: BackendTlsMode,
    /// PEM CA bundle used to verify the backend's certificate (`verify-full`).
    pub ca: Option<PathBuf>,
    /// Pool of connections is per client session; this bounds connect time.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// PostgreSQL log source: the role turnout reads this side's log as
    /// (REPLICATION, owning the published tables: in practice a superuser)
    /// and applies the other side's log to it as (setting
    /// `session_replication_role`, using replication origins). Defaults to
    /// `user`.
    #[serde(default)]
    pub replication_user: Option<String>,
    /// `replication_user`'s password (defaults to `password` when
    /// `replication_user` is not set).
    #[serde(default)]
    pub replication_password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS if the server offers it, without certificate verification.
    Prefer,
    /// TLS required, without certificate verification.
    Require,
    /// TLS required; the certificate must chain to `ca` and match `host`.
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Plain text, or (for scram-sha-256) a PostgreSQL SCRAM verifier
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`, or (for md5) `md5<hex>`.
    pub password: Secret,
    #[serde(default)]
    pub auth: AuthMethod,
    /// The role this user's sessions log in to both backends as (instead
    /// of `backends.*.user`), so that the backends' own checks (who may
    /// see, cancel or kill which session; grants) apply per user.
    #[serde(default)]
    pub backend_user: Option<String>,
    /// `backend_user`'s password (for both backends).
    #[serde(default)]
    pub backend_password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    /// MySQL listener: ask the client for this plugin.
    #[serde(rename = "mysql_native_password")]
    MysqlNativePassword,
    /// MySQL listener: ask the client for this plugin (fast path).
    #[serde(rename = "caching_sha2_password")]
    CachingSha2Password,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub mode: MirrorMode,
    #[serde(default)]
    pub on_error: MirrorErrorPolicy,
    #[serde(default)]
    pub ddl: DdlPolicy,
    /// Async mode: per-session queue bound (statements).
    #[serde(default = "defaults::async_queue")]
    pub async_queue: i64,
    /// Path of the durable divergence log (JSON Lines).
    pub divergence_log: Option<PathBuf>,
    #[serde(default = "defaults::statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// What to do with a write whose effect the mirror cannot reproduce.
    #[serde(default)]
    pub on_unsafe: UnsafePolicy,
    /// Per-fingerprint overrides of the classifier's routing.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Divergence records carry the statement text and its parameters
    /// (off by default: they may hold personal data).
    #[serde(default)]
    pub log_statements: bool,
    /// PostgreSQL: the mirror applies the rows each write wrote on the
    /// authority (captured with `RETURNING`), not the statement again.
    #[serde(default = "defaults::yes")]
    pub row_images: bool,
    /// PostgreSQL: the mirror's connections run with
    /// `session_replication_role = replica`, so triggers (and foreign-key
    /// checks) on the mirror do not fire for mirrored rows.
    #[serde(default)]
    pub replica_role: bool,
    /// Where the mirror takes the authority's writes from: its own log
    /// (PostgreSQL logical decoding), the statements (row images), or the
    /// log when the authority allows it (`auto`).
    #[serde(default)]
    pub source: MirrorSource,
    /// PostgreSQL log source: the name of turnout's replication slot,
    /// publication and replication origin.
    #[serde(default = "defaults::slot")]
    pub slot: String,
    /// PostgreSQL log source: flips are refused while the authority keeps
    /// more than this many bytes of log for turnout's slot (an applier
    /// behind or stopped).
    #[serde(default = "defaults::max_log_lag_bytes")]
    pub max_log_lag_bytes: i64,
}

/// Where the mirror takes the authority's writes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorSource {
    /// The authority's log when it allows it (PostgreSQL: `wal_level =
    /// logical`, a replication login, a free slot), else `images`.
    #[default]
    Auto,
    /// The authority's log; turnout does not start without it.
    Log,
    /// Each write's statement on the authority: row images (PostgreSQL),
    /// pinned statements (MySQL).
    #[serde(alias = "statements")]
    Images,
}

impl MirrorSource {
    pub fn name(self) -> &'static str {
        match self {
            MirrorSource::Auto => "auto",
            MirrorSource::Log => "log",
            MirrorSource::Images => "images",
        }
    }
}

/// One routing override: statements with this fingerprint get `action`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The statement's fingerprint as the divergence log shows it, or any
    /// statement of that shape (literals are normalized away).
    pub fingerprint: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Run on `old` only.
    Old,
    /// Run on `new` only; the client sees new's answer.
    New,
    /// Run on the authority only, whatever the statement is.
    NeverMirror,
    /// Mirror it as a write, even when it looks like a read.
    AlwaysMirror,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnsafePolicy {
    /// Run it on both sides and write an `unsafe_statement` divergence.
    #[default]
    Record,
    /// Refuse it with an error before either side runs it.
    Fail,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            mode: MirrorMode::default(),
            on_error: MirrorErrorPolicy::default(),
            ddl: DdlPolicy::default(),
            async_queue: defaults::async_queue(),
            divergence_log: None,
            statement_timeout_ms: defaults::statement_timeout_ms(),
            on_unsafe: UnsafePolicy::default(),
            rules: Vec::new(),
            log_statements: false,
            row_images: true,
            replica_role: false,
            source: MirrorSource::default(),
            slot: defaults::slot(),
            max_log_lag_bytes: defaults::max_log_lag_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorMode {
    #[default]
    Sync,
    Async,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorErrorPolicy {
    #[default]
    Record,
    Fail,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DdlPolicy {
    #[default]
    AuthorityOnly,
    Both,
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Fraction of reads also run on the shadow side, 0.0 to 1.0.
    #[serde(default)]
    pub rate: f64,
    /// Cap on samples per query fingerprint per second.
    #[serde(default = "defaults::per_fingerprint_per_sec")]
    pub per_fingerprint_per_sec: i64,
    /// Shadow reads running at once; more are skipped and counted.
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: i64,
    /// Where read-diff records go (JSON Lines).
    pub report: Option<PathBuf>,
    /// Column ignore rules: table -> columns.
    #[serde(default)]
    pub ignore_columns: BTreeMap<String, Vec<String>>,
    /// Wait before the first re-check of a mismatch (doubled for each of
    /// up to three re-checks).
    #[serde(default = "defaults::recheck_delay_ms")]
    pub recheck_delay_ms: u64,
    /// Also sample reads in transactions that already wrote.
    #[serde(default)]
    pub in_write_transactions: bool,
    /// Read-diff records carry the statement and its parameters (they may
    /// hold personal data).
    #[serde(default)]
    pub log_statements: bool,
    /// Read-diff records carry the rows' values (they may hold personal
    /// data); otherwise each value is replaced by its length.
    #[serde(default)]
    pub log_values: bool,
    /// Report file size bound; past it the file is rotated to `<file>.1`.
    #[serde(default = "defaults::report_max_bytes")]
    pub report_max_bytes: i64,
    /// Results larger than this (bytes) are not compared; the sample is skipped.
    #[serde(default = "defaults::max_result_bytes")]
    pub max_result_bytes: i64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            rate: 0.0,
            per_fingerprint_per_sec: defaults::per_fingerprint_per_sec(),
            max_concurrent: defaults::max_concurrent(),
            report: None,
            ignore_columns: BTreeMap::new(),
            recheck_delay_ms: defaults::recheck_delay_ms(),
            in_write_transactions: false,
            log_statements: false,
            log_values: false,
            report_max_bytes: defaults::report_max_bytes(),
            max_result_bytes: defaults::max_result_bytes(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Unix socket of the admin console (mode 0600).
    pub socket: Option<PathBuf>,
    /// Flag file whose content names the desired phase.
    pub flag_file: Option<PathBuf>,
    /// Where every mutating admin command is recorded (JSON Lines).
    pub audit_log: Option<PathBuf>,
    /// OS users (by uid) besides turnout's own that may use the admin
    /// socket; anyone else is refused, whatever the socket's mode.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// `host:port` serving Prometheus text at `/metrics`.
    pub address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// File that keeps the phase and epoch across restarts.
    pub file: Option<PathBuf>,
    /// Phase at start when no state file says otherwise: passthrough (default),
    /// mirror, reads_new, writes_new or finalized.
    pub initial_phase: Option<String>,
}

/// Copying the rows that predate mirroring, and verifying both sides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    /// Rows per batch (and per verify range).
    #[serde(default = "defaults::batch_size")]
    pub batch_size: i64,
    /// The most rows copied per second; 0 for no limit.
    #[serde(default)]
    pub rows_per_sec: i64,
    /// Back off while the clients' mean statement time through turnout is
    /// above this many times what it was when the backfill started.
    #[serde(default = "defaults::max_latency_factor")]
    pub max_latency_factor: f64,
    /// Where progress is checkpointed after every batch (default: the
    /// state file's path with `.backfill.json` added; none: not kept).
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Refuse the reads flip (without --force) until every table was
    /// backfilled and the last verify found no difference.
    #[serde(default = "defaults::yes")]
    pub required: bool,
}

impl Default for Backfill {
    fn default() -> Self {
        Backfill {
            batch_size: defaults::batch_size(),
            rows_per_sec: 0,
            max_latency_factor: defaults::max_latency_factor(),
            checkpoint: None,
            required: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "defaults::max_client_connections")]
    pub max_client_connections: i64,
    /// Largest protocol message accepted from a client, in bytes.
    #[serde(default = "defaults::max_message_size")]
    pub max_message_size: i64,
    /// Time a client has to finish startup and authentication.
    #[serde(default = "defaults::auth_timeout_ms")]
    pub auth_timeout_ms: u64,
    /// Threads serving client sessions, each its own event loop (a session
    /// stays on one), and workers of the runtime for background work; 0:
    /// sessions on one thread per core less one (at least one), background
    /// work on one per core.
    #[serde(default)]
    pub worker_threads: i64,
    /// Bytes of extended-protocol messages one client may send before a
    /// Sync (turnout holds them until the Sync).
    #[serde(default = "defaults::max_pipeline_bytes")]
    pub max_pipeline_bytes: i64,
    /// Prepared statements one session may keep at a time.
    #[serde(default = "defaults::max_prepared_statements")]
    pub max_prepared_statements: i64,
    /// Bytes of row images turnout holds for one statement (PostgreSQL).
    #[serde(default = "defaults::max_image_bytes")]
    pub max_image_bytes: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_connections: defaults::max_client_connections(),
            max_message_size: defaults::max_message_size(),
            auth_timeout_ms: defaults::auth_timeout_ms(),
            worker_threads: 0,
            max_pipeline_bytes: defaults::max_pipeline_bytes(),
            max_prepared_statements: defaults::max_prepared_statements(),
            max_image_bytes: defaults::max_image_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// error, warn, info, debug or trace.
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// Files turnout writes (divergence log, reports, audit log, state,
    /// checkpoints) are created 0640 instead of 0600.
    #[serde(default)]
    pub group_readable: bool,
    /// `"text"` (default) or `"json"`: one JSON object per line on stderr.
    #[serde(default)]
    pub format: LogFormat,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: defaults::log_level(),
            group_readable: false,
            format: LogFormat::default(),
        }
    }
}

pub(crate) mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn slot() -> String {
        "turnout".into()
    }
    pub fn max_log_lag_bytes() -> i64 {
        1 << 30
    }
    pub fn async_queue() -> i64 {
        10_000
    }
    pub fn statement_timeout_ms() -> u64 {
        30_000
    }
    pub fn per_fingerprint_per_sec() -> i64 {
        100
    }
    pub fn max_concurrent() -> i64 {
        16
    }
    pub fn guard_window_secs() -> u64 {
        600
    }
    pub fn barrier_ms() -> u64 {
        5000
    }
    pub fn recheck_delay_ms() -> u64 {
        250
    }
    pub fn report_max_bytes() -> i64 {
        64 * 1024 * 1024
    }
    pub fn max_result_bytes() -> i64 {
        1024 * 1024
    }
    pub fn batch_size() -> i64 {
        1_000
    }
    pub fn max_latency_factor() -> f64 {
        2.0
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_client_connections() -> i64 {
        1_000
    }
    pub fn max_message_size() -> i64 {
        64 * 1024 * 1024
    }
    pub fn auth_timeout_ms() -> u64 {
        10_000
    }
    pub fn max_pipeline_bytes() -> i64 {
        64 * 1024 * 1024
    }
    pub fn max_prepared_statements() -> i64 {
        10_000
    }
    pub fn max_image_bytes() -> i64 {
        64 * 1024 * 1024
    }
    pub fn log_level() -> String {
        "info".to_string()
    }
}

impl Backend {
    /// The role and password turnout reads this side's log with and
    /// applies the other side's log with (`replication_user`, else `user`).
    pub fn replication_login(&self) -> (&str, &Secret) {
        match &self.replication_user {
            Some(u) => (
                u,
                self.replication_password.as_ref().unwrap_or(&self.password),
            ),
            None => (&self.user, &self.password),
        }
    }

    /// The validated port (validation guarantees the range).
    pub fn port_u16(&self) -> u16 {
        u16::try_from(self.port).unwrap_or(0)
    }

    /// `host:port`, or the socket file when `host` is a Unix socket folder.
    pub fn address(&self) -> String {
        if self.host.starts_with('/') {
            format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Limits {
    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.max_message_size).unwrap_or(usize::MAX)
    }
    pub fn max_clients(&self) -> usize {
        usize::try_from(self.max_client_connections).unwrap_or(0)
    }
}

impl Config {
    /// This config without the files turnout writes (divergence log,
    /// read-diff report, audit log, state and checkpoint): for commands that
    /// only look (`check-config --connect`, `plan`), which must leave no
    /// file behind.
    pub fn without_outputs(&self) -> Config {
        let mut c = self.clone();
        c.mirror.divergence_log = None;
        c.sampling.report = None;
        c.admin.audit_log = None;
        c.state.file = None;
        c.backfill.checkpoint = None;
        c
    }
}

impl Config {
    /// What differs from `running` to this config, in two lists: the keys
    /// a reload applies live, and the sections that take effect only at
    /// the next start.
    pub fn changes_from(&self, running: &Config) -> (Vec<String>, Vec<String>) {
        let differ =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mut live = Vec::new();
        if differ(&self.users, &running.users)
            || self
                .users
                .iter()
                .zip(&running.users)
                .any(|(a, b)| a.password != b.password || a.backend_password != b.backend_password)
        {
            live.push("users".to_string());
        }
        if differ(&self.mirror.rules, &running.mirror.rules) {
            live.push("mirror.rules".into());
        }
        if self.sampling.rate != running.sampling.rate {
            live.push("sampling.rate".into());
        }
        if differ(&self.guards, &running.guards) {
            live.push("guards".into());
        }
        if differ(&self.mapping, &running.mapping) {
            live.push("mapping".into());
        }
        let mut restart = Vec::new();
        let (mut m, mut rm) = (self.mirror.clone(), running.mirror.clone());
        m.rules.clear();
        rm.rules.clear();
        let (mut s, mut rs) = (self.sampling.clone(), running.sampling.clone());
        s.rate = 0.0;
        rs.rate = 0.0;
        let backends_differ = differ(&self.backends, &running.backends)
            || self.backends.old.password != running.backends.old.password
            || self.backends.new.password != running.backends.new.password;
        for (name, changed) in [
            ("protocol", differ(&self.protocol, &running.protocol)),
            ("listen", differ(&self.listen, &running.listen)),
            ("backends", backends_differ),
            ("mirror (other than rules)", differ(&m, &rm)),
            ("sampling (other than rate)", differ(&s, &rs)),
            ("admin", differ(&self.admin, &running.admin)),
            ("metrics", differ(&self.metrics, &running.metrics)),
            ("state", differ(&self.state, &running.state)),
            ("limits", differ(&self.limits, &running.limits)),
            ("backfill", differ(&self.backfill, &running.backfill)),
            ("log", differ(&self.log, &running.log)),
        ] {
            if changed {
                restart.push(name.to_string());
            }
        }
        (live, restart)
    }
}
