use crate::{
    AuthMethod, Backend, BackendTlsMode, Config, MirrorErrorPolicy, MirrorMode, MirrorSource,
    Protocol,
};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

/// One problem with the config, naming the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted key path, e.g. `backends.new.port`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub origin: Option<String>,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn one(error: ConfigError) -> Self {
        ConfigErrors {
            origin: None,
            errors: vec![error],
        }
    }

    pub(crate) fn with_origin(mut self, origin: &str) -> Self {
        self.origin = Some(origin.to_string());
        self
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &self.origin {
                Some(origin) => write!(f, "{origin}: {e}")?,
                None => write!(f, "{e}")?,
            }
        }
        Ok(())
    }
}

struct Collector(Vec<ConfigError>);

impl Collector {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(key, message));
    }

    fn range(&mut self, key: &str, value: i64, min: i64, max: i64) {
        if value < min || value > max {
            self.push(key, format!("expected {min}-{max}, got {value}"));
        }
    }

    fn address(&mut self, key: &str, value: &str) {
        if value.parse::<SocketAddr>().is_err() {
            self.push(
                key,
                format!("expected an address like 127.0.0.1:6432, got {value:?}"),
            );
        }
    }
}

pub(crate) fn validate(config: &Config) -> Result<(), ConfigErrors> {
    let mut c = Collector(Vec::new());
    c.address("listen.address", &config.listen.address);
    if let Some(dir) = &config.listen.socket_dir {
        if !dir.is_dir() {
            c.push(
                "listen.socket_dir",
                format!("no such folder: {}", dir.display()),
            );
        }
    }
    if let Some(tls) = &config.listen.tls {
        for (key, path) in [("listen.tls.cert", &tls.cert), ("listen.tls.key", &tls.key)] {
            if !path.is_file() {
                c.push(key, format!("no such file: {}", path.display()));
            }
        }
    }
    backend(&mut c, "backends.old", &config.backends.old);
    backend(&mut c, "backends.new", &config.backends.new);

    let mut seen = HashSet::new();
    for (i, user) in config.users.iter().enumerate() {
        let key = format!("users[{i}]");
        if user.name.is_empty() {
            c.push(format!("{key}.name"), "must not be empty");
        }
        if !seen.insert(user.name.as_str()) {
            c.push(
                format!("{key}.name"),
                format!("user {:?} is defined twice", user.name),
            );
        }
        let pw = user.password.expose();
        if pw.is_empty() {
            c.push(format!("{key}.password"), "must not be empty");
        }
        match (&user.backend_user, &user.backend_password) {
            (Some(u), _) if u.is_empty() => {
                c.push(format!("{key}.backend_user"), "must not be empty")
            }
            (Some(_), None) => c.push(
                format!("{key}.backend_password"),
                "is required with backend_user",
            ),
            (None, Some(_)) => c.push(
                format!("{key}.backend_password"),
                "is only used with backend_user, which is not set",
            ),
            _ => {}
        }
        if user.auth == AuthMethod::Md5 && pw.starts_with("SCRAM-SHA-256$") {
            c.push(
                format!("{key}.password"),
                "md5 authentication needs the plain password or an md5 hash, not a SCRAM verifier",
            );
        }
        let mysql_method = matches!(
            user.auth,
            AuthMethod::MysqlNativePassword | AuthMethod::CachingSha2Password
        );
        match config.protocol {
            Protocol::Postgres if mysql_method => c.push(
                format!("{key}.auth"),
                "mysql_native_password and caching_sha2_password are for protocol = \"mysql\"; PostgreSQL takes scram-sha-256 or md5",
            ),
            Protocol::Mysql if user.auth == AuthMethod::Md5 => c.push(
                format!("{key}.auth"),
                "md5 is a PostgreSQL method; protocol = \"mysql\" takes mysql_native_password or caching_sha2_password",
            ),
            Protocol::Mysql
                if user.auth == AuthMethod::CachingSha2Password && pw.starts_with('*') && pw.len() == 41 =>
            {
                c.push(
                    format!("{key}.password"),
                    "caching_sha2_password needs the plain password, not a mysql_native_password hash",
                )
            }
            _ => {}
        }
        if config.protocol == Protocol::Postgres
            && user.auth == AuthMethod::ScramSha256
            && is_md5_hash(pw)
        {
            c.push(
                format!("{key}.password"),
                "scram-sha-256 authentication needs the plain password or a SCRAM verifier, not an md5 hash",
            );
        }
    }
    if config.users.is_empty() {
        c.push(
            "users",
            "at least one [[users]] entry is needed for clients to log in",
        );
    }

    if let Some(phase) = &config.state.initial_phase {
        const PHASES: [&str; 5] = [
            "passthrough",
            "mirror",
            "reads_new",
            "writes_new",
            "finalized",
        ];
        if !PHASES.contains(&phase.as_str()) {
            c.push(
                "state.initial_phase",
                format!("expected one of {}, got {phase:?}", PHASES.join(", ")),
            );
        }
    }
    if config.mirror.statement_timeout_ms == 0 {
        c.push("mirror.statement_timeout_ms", "must be above 0");
    }
    if config.mirror.mode == MirrorMode::Async && config.mirror.on_error == MirrorErrorPolicy::Fail
    {
        c.push(
            "mirror.on_error",
            "\"fail\" needs mirror.mode = \"sync\": in async mode the client does not wait for the mirror, so its failures cannot fail the client's statement",
        );
    }
    let slot = &config.mirror.slot;
    if slot.is_empty()
        || slot.len() > 63
        || !slot
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
    {
        c.push(
            "mirror.slot",
            format!("expected 1-63 lower-case letters, digits or underscores (a PostgreSQL replication slot name), got {slot:?}"),
        );
    }
    if config.mirror.max_log_lag_bytes <= 0 {
        c.push("mirror.max_log_lag_bytes", "must be above 0");
    }
    if config.mirror.source == MirrorSource::Log
        && config.mirror.on_error == MirrorErrorPolicy::Fail
    {
        c.push(
            "mirror.on_error",
            "\"fail\" needs mirror.source = \"images\" (\"statements\"): from the log, a write reaches the mirror after the authority committed it, so a mirror failure can no longer fail it (\"auto\" chooses statements under \"fail\")",
        );
    }
    if let Some(fleet) = &config.fleet {
        if let Err(e) = fleet.store_of(config.protocol, &config.backends) {
            c.push("fleet.store", e);
        }
        c.range(
            "fleet.lease_ms",
            fleet.lease_ms.min(i64::MAX as u64) as i64,
            300,
            600_000,
        );
        if let Err(e) = fleet.instance_name(&config.listen.address) {
            c.push("fleet.instance", e);
        }
        if config.mirror.source == MirrorSource::Log && config.protocol == Protocol::Mysql {
            c.push(
                "mirror.source",
                "\"log\" is not available with [fleet] on MySQL yet: the fleet cannot share one binary-log applier; use \"statements\" (\"auto\" chooses them under [fleet])",
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, rule) in config.mirror.rules.iter().enumerate() {
        let key = format!("mirror.rules[{i}].fingerprint");
        let text = rule.fingerprint.trim();
        if text.is_empty() {
            c.push(&key, "must not be empty");
        } else if !seen.insert(text.to_ascii_lowercase()) {
            c.push(&key, format!("{text:?} has a rule already"));
        }
    }
    let mut tables = HashSet::new();
    for (i, t) in config.mapping.tables.iter().enumerate() {
        let key = format!("mapping.tables[{i}]");
        if t.old.trim().is_empty() {
            c.push(format!("{key}.old"), "must name the table on old");
        } else if !tables.insert(t.old.to_ascii_lowercase()) {
            c.push(
                format!("{key}.old"),
                format!("table {:?} is mapped twice", t.old),
            );
        }
        if t.new.as_deref().is_some_and(|n| n.trim().is_empty()) {
            c.push(
                format!("{key}.new"),
                "must not be empty (leave it out to keep the name)",
            );
        }
        for (from, to) in &t.columns {
            if from.trim().is_empty() || to.trim().is_empty() {
                c.push(format!("{key}.columns"), "column names must not be empty");
            }
            if t.drop.contains(from) {
                c.push(
                    format!("{key}.columns.{from}"),
                    "is both renamed and dropped",
                );
            }
            if t.computed.contains_key(to) {
                c.push(
                    format!("{key}.computed.{to}"),
                    format!("{to} is already the new name of {from}"),
                );
            }
        }
        let mut targets = HashSet::new();
        for to in t.columns.values() {
            if !targets.insert(to) {
                c.push(
                    format!("{key}.columns"),
                    format!("two columns are renamed to {to}"),
                );
            }
        }
        for (column, expr) in &t.computed {
            if expr.trim().is_empty() {
                c.push(
                    format!("{key}.computed.{column}"),
                    "needs an SQL expression",
                );
            }
        }
    }
    let g = &config.guards;
    if g.window_secs == 0 || g.window_secs > 86_400 {
        c.push(
            "guards.window_secs",
            format!("expected 1-86400, got {}", g.window_secs),
        );
    }
    if g.barrier_ms == 0 || g.barrier_ms > 600_000 {
        c.push(
            "guards.barrier_ms",
            format!("expected 1-600000, got {}", g.barrier_ms),
        );
    }
    if !(0.0..=1.0).contains(&g.max_mismatch_rate) {
        c.push(
            "guards.max_mismatch_rate",
            format!("expected 0.0-1.0, got {}", g.max_mismatch_rate),
        );
    }
    let s = &config.sampling;
    if !(0.0..=1.0).contains(&s.rate) {
        c.push("sampling.rate", format!("expected 0.0-1.0, got {}", s.rate));
    }
    c.range(
        "sampling.per_fingerprint_per_sec",
        s.per_fingerprint_per_sec,
        0,
        1_000_000,
    );
    c.range("sampling.max_concurrent", s.max_concurrent, 1, 10_000);
    c.range(
        "sampling.report_max_bytes",
        s.report_max_bytes,
        4096,
        1 << 40,
    );
    c.range(
        "sampling.max_result_bytes",
        s.max_result_bytes,
        1024,
        1 << 30,
    );
    if s.recheck_delay_ms > 60_000 {
        c.push(
            "sampling.recheck_delay_ms",
            format!("expected 0-60000, got {}", s.recheck_delay_ms),
        );
    }
    c.range(
        "mirror.async_queue",
        config.mirror.async_queue,
        1,
        10_000_000,
    );
    if let Some(address) = &config.metrics.address {
        c.address("metrics.address", address);
    }
    let b = &config.backfill;
    c.range("backfill.batch_size", b.batch_size, 1, 1_000_000);
    c.range("backfill.rows_per_sec", b.rows_per_sec, 0, 1_000_000_000);
    if !(b.max_latency_factor >= 1.0 && b.max_latency_factor.is_finite()) {
        c.push(
            "backfill.max_latency_factor",
            format!("must be 1.0 or more, got {}", b.max_latency_factor),
        );
    }
    let l = &config.limits;
    c.range(
        "limits.max_client_connections",
        l.max_client_connections,
        1,
        1_000_000,
    );
    c.range("limits.max_message_size", l.max_message_size, 1024, 1 << 30);
    c.range("limits.worker_threads", l.worker_threads, 0, 1024);
    c.range(
        "limits.max_pipeline_bytes",
        l.max_pipeline_bytes,
        1024,
        1 << 40,
    );
    c.range(
        "limits.max_prepared_statements",
        l.max_prepared_statements,
        1,
        10_000_000,
    );
    c.range(
        "limits.max_image_bytes",
        l.max_image_bytes,
        1 << 16,
        1 << 40,
    );
    if !matches!(
        config.log.level.as_str(),
        "error" | "warn" | "info" | "debug" | "trace"
    ) {
        c.push(
            "log.level",
            format!(
                "expected one of error, warn, info, debug, trace, got {:?}",
                config.log.level
            ),
        );
    }
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors {
            origin: None,
            errors: c.0,
        })
    }
}

fn backend(c: &mut Collector, key: &str, b: &Backend) {
    if b.host.is_empty() {
        c.push(format!("{key}.host"), "must not be empty");
    }
    c.range(&format!("{key}.port"), b.port, 1, 65535);
    if b.database.is_empty() {
        c.push(format!("{key}.database"), "must not be empty");
    }
    if b.user.is_empty() {
        c.push(format!("{key}.user"), "must not be empty");
    }
    if b.connect_timeout_ms == 0 {
        c.push(format!("{key}.connect_timeout_ms"), "must be above 0");
    }
    match (&b.replication_user, &b.replication_password) {
        (Some(u), _) if u.is_empty() => {
            c.push(format!("{key}.replication_user"), "must not be empty")
        }
        (None, Some(_)) => c.push(
            format!("{key}.replication_password"),
            "is only used with replication_user, which is not set",
        ),
        _ => {}
    }
    if b.host.starts_with('/') && b.tls != BackendTlsMode::Disable {
        c.push(
            format!("{key}.tls"),
            "TLS is not used over a Unix socket (host is a folder): set tls = \"disable\"",
        );
    }
    match (&b.ca, b.tls) {
        (None, BackendTlsMode::VerifyFull) => c.push(
            format!("{key}.ca"),
            "tls = \"verify-full\" needs a CA bundle to verify the server against",
        ),
        (Some(ca), _) if !ca.is_file() => c.push(
            format!("{key}.ca"),
            format!("no such file: {}", ca.display()),
        ),
        _ => {}
    }
}

fn is_md5_hash(pw: &str) -> bool {
    pw.len() == 35 && pw.starts_with("md5") && pw[3..].bytes().all(|b| b.is_ascii_hexdigit())
}
