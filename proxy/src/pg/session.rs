//! One client session of the PostgreSQL adapter, from accept to close.

use super::auth;
use super::backend::{self, BackendConn};
use super::codec::{self, Severity};
use super::framed::Framed;
use super::mirror::{End as MirrorEnd, MirrorSession};
use super::pump::{Pump, PumpEnd};
use super::startup::{self, Opening, SessionError};
use crate::shared::{CancelKey, CancelTarget, Shared};
use crate::stream::Stream;
use bytes::BytesMut;
use rand::Rng;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};
use turnout_control::Side;

/// Serves one accepted connection to its end. Never panics on client input;
/// every failure that the client can still be told about is sent as an
/// ErrorResponse.
pub async fn serve(shared: Arc<Shared>, client: Stream, peer: String, over_limit: bool) {
    let auth_timeout = shared.auth_timeout;
    let opened = tokio::time::timeout(
        auth_timeout,
        startup::open(client, shared.tls.as_ref(), shared.tls_required),
    )
    .await;
    let (mut stream, params) = match opened {
        Err(_) => {
            debug!(%peer, "client did not send a startup packet in time");
            return;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "client startup failed");
            return;
        }
        Ok(Ok(Opening::Cancel { pid, secret })) => {
            shared.cancel(CancelKey { pid, secret }).await;
            return;
        }
        Ok(Ok(Opening::Session { stream, params })) => (stream, params),
    };
    if over_limit {
        let msg = codec::error_response(
            Severity::Fatal,
            "53300",
            "sorry, too many clients already (limits.max_client_connections)",
        );
        let _ = stream.write_all(&msg).await;
        return;
    }
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // The session's phase is fixed when it starts (flips come with the
    // control plane). Its first connection is the authority's.
    let phase = shared.coord.routing.snapshot().phase;
    let side = phase.authority();
    let started = tokio::time::timeout(
        auth_timeout,
        start(&shared, &mut stream, side, &user, &params),
    )
    .await
    .unwrap_or(Err(SessionError::Timeout(auth_timeout.as_millis())));
    let (backend, key) = match started {
        Ok(started) => started,
        Err(e) => {
            if let SessionError::Backend(_) = &e {
                shared.coord.authority_failed(side);
            }
            match &e {
                SessionError::Io(_) => {
                    debug!(%peer, %user, error = %e, "client left during startup")
                }
                _ => warn!(%peer, %user, error = %e, "session refused"),
            }
            startup::refuse(&mut stream, e).await;
            return;
        }
    };
    // Finalized with `mapping.after_finalize = "translate"`: sessions still
    // go through the mapping (to new alone, the mirror's connection never
    // made).
    let translating = phase == turnout_control::Phase::Finalized
        && shared.live().mapping.translates_after_finalize();
    let mirrored = phase.mirror().or(translating.then_some(Side::Old));
    if let Some(mirror_side) = mirrored {
        // From the log, a session needs the mirror's side only to read there
        // (`reads_new`): it connects when it first does.
        let idle = translating || (shared.log.feeds_from(side) && phase.read_target() == side);
        let mirror = if idle {
            None
        } else {
            match backend::connect(&shared.session_target(mirror_side, &user), &params).await {
                Ok(m) => Some(m),
                Err(e) => {
                    // Writes will try again, and record or fail per mirror.on_error.
                    warn!(%peer, %user, side = %mirror_side, error = %e, "mirror not connected");
                    None
                }
            }
        };
        debug!(%peer, %user, %phase, "mirrored session started");
        let client = Framed::new(stream, BytesMut::new(), shared.max_message);
        let end = MirrorSession::new(&shared, client, (backend, key), mirror, mirror_side, params)
            .run()
            .await;
        shared.pg.cancels.remove(&key);
        match end {
            MirrorEnd::Terminated => debug!(%peer, %user, "session ended"),
            MirrorEnd::ClientGone(e) => debug!(%peer, %user, error = %e, "client connection lost"),
            MirrorEnd::ClientProtocol(e) => {
                info!(%peer, %user, error = %e, "client broke the protocol; session closed")
            }
            MirrorEnd::AuthorityLost(e) => {
                warn!(%peer, %user, %side, error = %e, "backend connection lost")
            }
        }
        return;
    }
    let BackendConn {
        stream: backend_stream,
        leftover,
        ..
    } = backend;
    debug!(%peer, %user, "session started");
    let _counted =
        crate::shared::coordination::PassthroughGuard::new(&shared.coord.passthrough_sessions);
    let mut pump = Pump::new(stream, backend_stream, leftover, shared.max_message);
    let end = if phase == turnout_control::Phase::Passthrough {
        // Until `flip mirror`, then it ends at its next idle moment.
        let entered = shared.coord.mirror_entered.subscribe();
        tokio::select! {
            biased;
            end = pump.run() => end,
            () = WhenSet::new(entered) => close_when_idle(&mut pump).await,
        }
    } else {
        pump.run().await
    };
    shared.pg.cancels.remove(&key);
    match end {
        PumpEnd::Terminated | PumpEnd::ClientClosed => debug!(%peer, %user, "session ended"),
        PumpEnd::ClientIo(e) => debug!(%peer, %user, error = %e, "client connection lost"),
        PumpEnd::ClientProtocol(e) => {
            info!(%peer, %user, error = %e, "client broke the protocol; session closed")
        }
        PumpEnd::BackendClosed | PumpEnd::BackendIo(_) | PumpEnd::BackendProtocol(_) => {
            let detail = match &end {
                PumpEnd::BackendIo(e) => format!(": {e}"),
                PumpEnd::BackendProtocol(e) => format!(": {e}"),
                _ => String::new(),
            };
            warn!(%peer, %user, %side, "backend connection lost{detail}");
            if pump.client_at_boundary() {
                pump.push_to_client(codec::error_response(
                    Severity::Fatal,
                    "08006",
                    &format!("turnout: backend {side} closed the connection unexpectedly{detail}"),
                ));
                pump.flush_client().await;
            }
        }
    }
    let _ = pump.client.shutdown().await;
}

/// Authenticates the client, connects the backend and sends the client what a
/// PostgreSQL server sends before the first ReadyForQuery.
async fn start(
    shared: &Shared,
    stream: &mut Stream,
    side: Side,
    user: &str,
    params: &[(String, String)],
) -> Result<(BackendConn, CancelKey), SessionError> {
    let users = shared.live().users.clone();
    auth::authenticate(stream, &users, user, shared.max_message).await?;
    check_database(shared, params)?;
    check_parameters(params)?;
    stream.write_all(&codec::auth_request(0, &[])).await?;
    let backend = backend::connect(&shared.session_target(side, user), params).await?;
    let key = shared.register_cancel(side, &backend);
    let mut hello = bytes::BytesMut::new();
    for (name, value) in &backend.params {
        hello.extend_from_slice(&codec::parameter_status(name, value));
    }
    // The key the client will cancel with is turnout's own, mapped to the backend's.
    hello.extend_from_slice(&codec::backend_key_data(key.pid, key.secret));
    hello.extend_from_slice(&codec::ready_for_query(b'I'));
    if let Err(e) = stream.write_all(&hello).await {
        shared.pg.cancels.remove(&key);
        return Err(e.into());
    }
    Ok((backend, key))
}

/// Settings a client may give at startup: they reach both backends, which
/// turnout logs in to with its own role (often a powerful one), so only
/// what drivers set for a session's formatting and limits passes. Others
/// (`session_replication_role`, which turns triggers and foreign keys off,
/// `log_statement`, `post_auth_delay`, ...) are refused, as pgbouncer
/// refuses what it does not know.
const STARTUP_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "search_path",
    "extra_float_digits",
    "intervalstyle",
    "bytea_output",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
];

/// Refuses a startup parameter (or an `options` setting) that is not on
/// [`STARTUP_PARAMETERS`].
pub(crate) fn check_parameters(params: &[(String, String)]) -> Result<(), SessionError> {
    let refuse = |name: &str| SessionError::Client {
        severity: Severity::Fatal,
        code: "08P01",
        message: format!(
            "unsupported startup parameter: {name:?} (turnout passes on only {})",
            STARTUP_PARAMETERS.join(", ")
        ),
    };
    for (name, value) in params {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "user" | "database" => {}
            "options" => {
                for setting in options_settings(value).map_err(|e| SessionError::Client {
                    severity: Severity::Fatal,
                    code: "08P01",
                    message: format!("startup parameter \"options\": {e}"),
                })? {
                    if !STARTUP_PARAMETERS.contains(&setting.as_str()) {
                        return Err(refuse(&setting));
                    }
                }
            }
            other if STARTUP_PARAMETERS.contains(&other) => {}
            other => return Err(refuse(other)),
        }
    }
    Ok(())
}

/// The names an `options` startup parameter sets (`-c name=value`,
/// `-cname=value`, `--name=value`, separated by spaces; `\ ` is a space in
/// a value), lower case. Anything else in it is an error.
fn options_settings(options: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut names = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next().ok_or("\"-c\" without a setting")?
        } else if let Some(s) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            s.to_string()
        } else {
            return Err(format!("{w:?} is not a -c name=value setting"));
        };
        let name = setting
            .split_once('=')
            .map(|(n, _)| n)
            .ok_or_else(|| format!("{setting:?} is not name=value"))?;
        names.push(name.replace('-', "_").to_ascii_lowercase());
    }
    Ok(names)
}

/// The client's `dbname` must be a database turnout serves: the one
/// configured for either side (a client that names none gets it). Any other
/// is refused as PostgreSQL refuses an unknown database, rather than served
/// from another.
fn check_database(shared: &Shared, params: &[(String, String)]) -> Result<(), SessionError> {
    let Some((_, wanted)) = params.iter().find(|(k, _)| k == "database") else {
        return Ok(());
    };
    let served = [Side::Old, Side::New].map(|side| shared.target(side).database.as_str());
    if wanted.is_empty() || served.contains(&wanted.as_str()) {
        return Ok(());
    }
    Err(SessionError::Client {
        severity: Severity::Fatal,
        code: "3D000",
        // Debug quoting, as PostgreSQL quotes it, with control characters
        // escaped.
        message: format!(
            "database {wanted:?} does not exist (turnout serves {:?})",
            served[0]
        ),
    })
}

/// Cancel keys: PostgreSQL's registry in the shared state.
impl Shared {
    /// Gives the session a cancel key mapped to its backend: the backend's
    /// real process id (what `pg_backend_pid()` and notifications show the
    /// client) with a secret of turnout's own, so a cancel request still
    /// comes through turnout and names one session.
    pub fn register_cancel(&self, side: Side, backend: &BackendConn) -> CancelKey {
        let mut rng = rand::thread_rng();
        loop {
            let key = CancelKey {
                pid: backend.pid,
                secret: rng.gen(),
            };
            if let dashmap::Entry::Vacant(slot) = self.pg.cancels.entry(key) {
                slot.insert(CancelTarget {
                    side,
                    pid: backend.pid,
                    secret: backend.secret,
                });
                return key;
            }
        }
    }

    /// Forwards a client's CancelRequest to the backend process it names.
    /// Unknown keys are ignored, as PostgreSQL does.
    pub async fn cancel(&self, key: CancelKey) {
        let Some(target) = self.pg.cancels.get(&key).map(|t| *t) else {
            debug!("cancel request with an unknown key ignored");
            return;
        };
        let backend = self.target(target.side);
        match backend::send_cancel(backend, target.pid, target.secret).await {
            Ok(()) => info!(side = %target.side, "cancel request forwarded"),
            Err(e) => warn!(error = %e, "cancel request could not be forwarded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_session_formatting_and_limits_pass() {
        assert!(check_parameters(&p(&[
            ("user", "app"),
            ("database", "app"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
            (
                "options",
                "-c search_path=app\\,public -cstatement_timeout=5s --lock-timeout=1s"
            ),
        ]))
        .is_ok());
        for bad in [
            ("options", "-c session_replication_role=replica"),
            ("options", "--session_replication_role=replica"),
            ("options", "-c log_statement=all"),
            ("options", "-d 5"),
            ("session_replication_role", "replica"),
            ("post_auth_delay", "100"),
            ("replication", "database"),
        ] {
            let e = check_parameters(&p(&[bad])).unwrap_err();
            assert!(e.to_string().contains("startup parameter"), "{bad:?}: {e}");
        }
    }
}

/// `flip mirror` entered the mirror phase: a session opened in passthrough
/// cannot mirror, so it ends at its next idle moment (no transaction, no
/// request in flight), telling the client to connect again (57P01, which
/// drivers and pools take as a connection to replace). Until then it runs
/// as before.
async fn close_when_idle(pump: &mut Pump) -> PumpEnd {
    loop {
        if pump.idle() {
            pump.push_to_client(codec::error_response(
                Severity::Fatal,
                "57P01",
                "turnout: the cutover entered the mirror phase; this connection, opened before it, closes: connect again",
            ));
            pump.flush_client().await;
            return PumpEnd::Terminated;
        }
        tokio::select! {
            end = pump.run() => return end,
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
        }
    }
}

/// Returns once `flag` is true (never when its sender is gone).
async fn until_set(mut flag: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *flag.borrow_and_update() {
            return;
        }
        if flag.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// [`until_set`] for a future polled beside the pump at each of its
/// wake-ups (every message): after its first poll registered the task's
/// waker with the flag, it is polled again only once the flag's version
/// moved (one atomic load), not at every message.
pub(crate) struct WhenSet {
    probe: tokio::sync::watch::Receiver<bool>,
    wait: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    armed: bool,
    done: bool,
}

impl WhenSet {
    pub(crate) fn new(flag: tokio::sync::watch::Receiver<bool>) -> WhenSet {
        let mut probe = flag.clone();
        probe.mark_unchanged();
        WhenSet {
            probe,
            wait: Box::pin(until_set(flag)),
            armed: false,
            done: false,
        }
    }

    /// It returned already (it must not be polled again).
    pub(crate) fn done(&self) -> bool {
        self.done
    }
}

impl std::future::Future for WhenSet {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // Unchanged since the last poll of `wait`: its waker is still
        // registered (the task's, the same at every poll).
        if self.armed && !self.probe.has_changed().unwrap_or(true) {
            return std::task::Poll::Pending;
        }
        self.armed = true;
        self.probe.mark_unchanged();
        let polled = self.wait.as_mut().poll(cx);
        self.done = polled.is_ready();
        polled
    }
}
