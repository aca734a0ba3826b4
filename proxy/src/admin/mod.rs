//! The admin socket: a Unix socket (mode 0600), one command per line, one
//! JSON reply per line. `turnout ctl` is its client.
//!
//! Commands: see [`turnout_control::command::Command`].

use crate::flip;
use crate::shared::Shared;
use serde_json::{json, Value};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};
use turnout_control::command::{Command, JobAction};
use turnout_control::controller::{Change, Controller, Figures, FlipRequest, Outcome};

mod jobs;
mod window;

use jobs::{audit_job, backfill, fleet_refused, job_preview, known_table, verify};
pub use window::Window;

/// Longest command line accepted.
const MAX_LINE: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("admin.socket {path}: {source}")]
pub struct AdminError {
    pub path: String,
    pub source: std::io::Error,
}

pub struct Admin {
    listener: UnixListener,
    path: PathBuf,
    /// Who may send commands: the socket's owner (turnout's own user) and
    /// `admin.allowed_uids`.
    allowed: Vec<u32>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Admin {
    /// Binds the socket (replacing a stale one) with mode 0600, whatever
    /// the process umask: it is created in a fresh directory of mode 0700
    /// beside it, made 0600 there, then moved into place, so no one else
    /// can ever reach it. `allowed_uids`: other users let in (the socket's
    /// owner always is); every connection's uid is checked (SO_PEERCRED).
    pub fn bind(path: &Path, allowed_uids: &[u32]) -> Result<Admin, AdminError> {
        let err = |source| AdminError {
            path: path.display().to_string(),
            source,
        };
        if std::fs::symlink_metadata(path)
            .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(false)
        {
            // A live socket is another turnout's: never taken over.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "in use by a running turnout",
                )));
            }
            let _ = std::fs::remove_file(path);
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let private = parent.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(err)?;
        let inside = private.join("s");
        let bound = (|| {
            let listener = UnixListener::bind(&inside)?;
            std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600))?;
            let owner = std::fs::symlink_metadata(&inside)?.uid();
            std::fs::rename(&inside, path)?;
            Ok::<_, std::io::Error>((listener, owner))
        })();
        let _ = std::fs::remove_dir_all(&private);
        let (listener, owner) = bound.map_err(err)?;
        let mut allowed = vec![owner];
        allowed.extend_from_slice(allowed_uids);
        Ok(Admin {
            listener,
            path: path.to_path_buf(),
            allowed,
        })
    }

    /// Serves commands until the task is dropped.
    pub async fn serve(
        self,
        shared: Arc<Shared>,
        controller: Arc<Controller>,
        window: Arc<Window>,
        config_path: PathBuf,
    ) {
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let uid = stream.peer_cred().map(|c| c.uid());
            if !uid.as_ref().is_ok_and(|u| self.allowed.contains(u)) {
                let who = uid.map_or_else(|e| format!("unknown ({e})"), |u| u.to_string());
                warn!(uid = %who, "admin socket: connection refused, uid not allowed (admin.allowed_uids)");
                let reply = json!({"ok": false, "error": format!(
                    "refused: uid {who} may not use this admin socket (its owner and admin.allowed_uids may)"
                )});
                // The caller's command is read (and dropped) first, so that
                // it gets the refusal rather than a broken pipe; never run.
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    let mut lines = BufReader::new(read.take(MAX_LINE as u64));
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), lines.read_line(&mut line))
                            .await;
                    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
                });
                continue;
            }
            let shared = shared.clone();
            let controller = controller.clone();
            let window = window.clone();
            let config_path = config_path.clone();
            tokio::spawn(async move {
                let ctx = Context {
                    shared: &shared,
                    controller: &controller,
                    window: &window,
                    config_path: &config_path,
                };
                if let Err(e) = connection(stream, &ctx).await {
                    warn!(error = %e, "admin connection ended");
                }
            });
        }
    }
}

/// What commands act on.
pub struct Context<'a> {
    pub shared: &'a Arc<Shared>,
    pub controller: &'a Arc<Controller>,
    pub window: &'a Window,
    /// The config file, read again by `reload`.
    pub config_path: &'a Path,
}

async fn connection(stream: UnixStream, ctx: &Context<'_>) -> std::io::Result<()> {
    let caller = match stream.peer_cred() {
        Ok(c) => format!(
            "uid {} pid {}",
            c.uid(),
            c.pid().map(|p| p.to_string()).unwrap_or_else(|| "?".into())
        ),
        Err(_) => "unknown".into(),
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(64 * MAX_LINE as u64)).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = if line.len() > MAX_LINE {
            json!({"ok": false, "error": format!("command longer than {MAX_LINE} bytes")})
        } else {
            execute(&line, ctx, &caller).await
        };
        let mut text = reply.to_string();
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
    Ok(())
}

/// Runs one command line; the JSON reply.
pub async fn execute(line: &str, ctx: &Context<'_>, caller: &str) -> Value {
    let command = match Command::parse(line) {
        Ok(c) => c,
        Err(e) => {
            // A change asked for wrongly is on the record too.
            if Command::names_a_change(line) {
                ctx.controller
                    .audit(line.trim(), false, caller, &Err(e.clone()));
            }
            return json!({"ok": false, "error": e});
        }
    };
    let (shared, controller) = (ctx.shared, ctx.controller);
    match command {
        Command::Status => {
            let mut reply = status(shared, controller, ctx.window.figures(shared));
            if let Some(link) = &shared.fleet {
                reply["fleet"] = flip::fleet::status(link).await;
            }
            reply
        }
        Command::Ack { dry_run } => ack(ctx, dry_run, caller),
        Command::Diffs => diffs(shared),
        Command::Phase {
            change,
            dry_run,
            force,
        } => {
            let req = FlipRequest {
                dry_run,
                force,
                figures: ctx.window.figures(shared),
                blockers: Vec::new(),
            };
            phase(ctx, change, req, caller).await
        }
        Command::Pause { dry_run } => pause(ctx, dry_run, caller).await,
        Command::Resume { dry_run } => resume(ctx, dry_run, caller).await,
        Command::Sample { rate, dry_run } => sample(rate, dry_run, shared, controller, caller),
        Command::Reload { dry_run } => reload(ctx, dry_run, caller).await,
        Command::Backfill {
            action,
            table,
            dry_run,
        } => {
            let reply = match known_table(shared, action, table.as_deref()).await {
                Err(e) => json!({"ok": false, "error": e}),
                Ok(tables) if dry_run => job_preview("backfill", &tables),
                Ok(_) => backfill(shared, action, table, caller),
            };
            if action != JobAction::Status {
                audit_job(controller, line, caller, &reply);
            }
            reply
        }
        Command::Verify {
            action,
            table,
            repair,
            dry_run,
        } => {
            let reply = match known_table(shared, action, table.as_deref()).await {
                Err(e) => json!({"ok": false, "error": e}),
                Ok(tables) if dry_run => job_preview(
                    if repair {
                        "verify, with repair,"
                    } else {
                        "verify"
                    },
                    &tables,
                ),
                Ok(_) => verify(shared, action, table, repair, caller),
            };
            if action == JobAction::Start {
                audit_job(controller, line, caller, &reply);
            }
            reply
        }
    }
}

/// `ack`: the counted mirror errors and confirmed mismatches in the guards'
/// window are acknowledged (after a clean verify proved both sides equal),
/// so the next flip is judged on what happens from now on. Audited.
fn ack(ctx: &Context<'_>, dry_run: bool, caller: &str) -> Value {
    let figures = ctx.window.figures(ctx.shared);
    let result = if !ctx.shared.backfill.verify.clean() {
        Err("ack needs a clean verify first: run turnout ctl verify start (--repair), and ack once it found both sides equal".to_string())
    } else {
        Ok(Outcome {
            from: format!(
                "{} mirror error(s), {} confirmed mismatch(es) counted",
                figures.mirror_errors, figures.mismatches
            ),
            to: "acknowledged".into(),
            epoch: ctx.controller.routing().snapshot().epoch,
            dry_run,
            notes: Vec::new(),
        })
    };
    ctx.controller.audit("ack", dry_run, caller, &result);
    match result {
        Ok(_) => {
            if !dry_run {
                ctx.window.acknowledge(ctx.shared);
                info!(%caller, mirror_errors = figures.mirror_errors, mismatches = figures.mismatches, "guard figures acknowledged");
            }
            json!({"ok": true, "dry_run": dry_run, "acknowledged": figures})
        }
        Err(e) => json!({"ok": false, "error": e}),
    }
}

/// A phase change; once applied, the reply says how long until every
/// session ran by it.
async fn phase(ctx: &Context<'_>, change: Change, req: FlipRequest, caller: &str) -> Value {
    match flip::run(ctx.shared, ctx.controller, change, req, caller).await {
        Ok(o) => {
            let mut reply = json!({
                "ok": true,
                "from": o.from,
                "to": o.to,
                "epoch": o.epoch,
                "dry_run": o.dry_run,
                "notes": o.notes,
            });
            if !o.dry_run {
                let (ms, behind) = adoption(ctx.shared, o.epoch).await;
                reply["adopted_ms"] = json!(ms);
                reply["sessions_behind"] = json!(behind);
            }
            reply
        }
        Err(e) => json!({"ok": false, "error": e}),
    }
}

fn status(shared: &Shared, controller: &Controller, figures: Figures) -> Value {
    let routing = controller.routing().snapshot();
    let summary = shared.sampler.log.summary();
    let all = summary.total();
    let sampling = json!({
        "samples": all.samples,
        "matches": all.matches,
        "mismatches": all.mismatches,
        "transient": all.transient,
        "skipped": summary.skipped,
    });
    // The next flip, and every reason it would be refused now: exactly
    // what `flip` would say.
    let next = controller.next_change().map(|change| {
        let req = FlipRequest {
            figures,
            blockers: flip::blockers(shared, change),
            ..FlipRequest::default()
        };
        json!({
            "change": change.name(),
            "refusals": controller.refusals(change, &req),
        })
    });
    json!({
        "ok": true,
        "next": next,
        "phase": routing.phase.name(),
        "epoch": routing.epoch,
        "read_target": routing.phase.read_target().name(),
        "authority": routing.phase.authority().name(),
        "history": controller.history().iter().map(|p| p.name()).collect::<Vec<_>>(),
        "sessions": {
            "mirrored": shared.coord.mirror_sessions.load(Ordering::Relaxed),
            "in_transaction": shared.coord.busy_sessions.load(Ordering::Relaxed),
            "connections": shared.coord.connections.load(Ordering::Relaxed),
            "passthrough": shared.coord.passthrough_sessions.load(Ordering::Relaxed),
        },
        "paused": shared.coord.operator_paused(),
        "divergences": shared.records.divergence_count(),
        "mirror_errors": shared.records.mirror_error_count(),
        "async_pending": shared.queues.pending(),
        "mirror_source": log_status(shared),
        "sampling": sampling,
        "guards": {
            "window_secs": controller.guards().window_secs,
            "figures": figures,
            "failures": controller.guards().failures(&figures),
        },
    })
}

/// The mirror's source: the log (with the applier's figures) or
/// statements, and why.
fn log_status(shared: &Shared) -> Value {
    let log = &shared.log;
    let f = &log.figures;
    let mut foreign: Vec<(String, u64)> = f
        .foreign_tables
        .iter()
        .map(|e| (e.key().clone(), *e.value()))
        .collect();
    foreign.sort();
    json!({
        "source": if log.source().is_some() { "log" } else { "images" },
        "log_of": log.source().map(|s| s.name()),
        "why": shared.log_choice.load().as_str(),
        "applier": match (log.source(), log.stopped.load().as_ref()) {
            (None, _) => "none",
            (Some(_), Some(_)) => "stopped",
            (Some(_), None) if log.is_stalled() => "connecting",
            (Some(_), None) => "applying",
        },
        "stopped_because": log.stopped.load().as_ref().clone(),
        "lag_bytes": f.lag_bytes.load(Ordering::Relaxed),
        "applied_transactions": f.applied.load(Ordering::Relaxed),
        "applied_rows": f.rows.load(Ordering::Relaxed),
        "applied_position": f.applied_lsn.load().as_str(),
        "foreign_transactions": f.foreign.load(Ordering::Relaxed),
        "foreign_tables": foreign.into_iter().map(|(t, n)| json!({"table": t, "transactions": n})).collect::<Vec<_>>(),
        "commits_not_waited": f.unwaited.load(Ordering::Relaxed),
    })
}

/// Watches `admin.flag_file`: when its content (a phase name) changes, the
/// phase moves there through the same checks and audit as the admin
/// command. Invalid content is refused with a log line; the phase stays.
/// The file's content when called is read at once (before the returned
/// future is spawned), so a change written after turnout says it listens
/// is always a request.
pub fn watch_flag_file(
    path: PathBuf,
    shared: Arc<Shared>,
    controller: Arc<Controller>,
    window: Arc<Window>,
) -> impl std::future::Future<Output = ()> {
    let caller = format!("flag file {}", path.display());
    // What the file says when turnout starts is where it was left, not a
    // request: a restart never moves the phase.
    let last: Option<String> = read_flag_file(&path).ok().map(|t| t.trim().to_string());
    let phase = controller.routing().snapshot().phase;
    if let Some(text) = last.as_deref().filter(|t| *t != phase.name()) {
        warn!(file = %path.display(), content = %text, %phase, "the flag file names another phase than the one kept; nothing done until its content changes");
    }
    flag_file_loop(path, shared, controller, window, caller, last)
}

async fn flag_file_loop(
    path: PathBuf,
    shared: Arc<Shared>,
    controller: Arc<Controller>,
    window: Arc<Window>,
    caller: String,
    mut last: Option<String>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
        let text = match read_flag_file(&path) {
            Ok(t) => t.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let refused = format!("(refused: {e})");
                if last.as_deref() != Some(refused.as_str()) {
                    warn!(file = %path.display(), error = %e, "flag file refused; the phase stays");
                    last = Some(refused);
                }
                continue;
            }
            Err(e) => {
                if last.as_deref() != Some("(unreadable)") {
                    warn!(file = %path.display(), error = %e, "flag file unreadable; the phase stays");
                    last = Some("(unreadable)".into());
                }
                continue;
            }
        };
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        last = Some(text.clone());
        let change = match controller.change_to(&text) {
            Ok(Some(change)) => change,
            Ok(None) => continue,
            Err(e) => {
                controller.audit("flag file", false, &caller, &Err(e.clone()));
                warn!(file = %path.display(), content = %text, error = %e, "flag file refused; the phase stays");
                continue;
            }
        };
        let req = FlipRequest {
            figures: window.figures(&shared),
            ..FlipRequest::default()
        };
        match flip::run(&shared, &controller, change, req, &caller).await {
            Ok(o) => {
                info!(from = %o.from, to = %o.to, epoch = o.epoch, file = %path.display(), "phase changed by the flag file")
            }
            Err(e) => {
                warn!(file = %path.display(), content = %text, error = %e, "flag file refused; the phase stays")
            }
        }
    }
}

/// The flag file's content, when it may be obeyed: owned by turnout's own
/// user (or root), not writable by group or others, not a symbolic link.
/// Anyone else's file is refused (`PermissionDenied`), whatever it says.
fn read_flag_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "it is a symbolic link",
            ),
            _ => e,
        })?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {}, not by turnout's user (uid {me}) or root",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 || !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "writable by group or others (mode {:o}) or not a plain file",
                meta.mode() & 0o7777
            ),
        ));
    }
    let mut text = String::new();
    file.by_ref().take(4096).read_to_string(&mut text)?;
    Ok(text)
}

/// `sample RATE`: the fraction of reads compared, changed live.
fn sample(
    rate: f64,
    dry_run: bool,
    shared: &Shared,
    controller: &Controller,
    caller: &str,
) -> Value {
    let sampler = &shared.sampler;
    let before = sampler.rate();
    let result = if dry_run {
        Ok(rate)
    } else {
        sampler.set_rate(rate).map(|()| rate)
    };
    let outcome = result.clone().map(|r| Outcome {
        from: before.to_string(),
        to: r.to_string(),
        epoch: controller.routing().snapshot().epoch,
        dry_run,
        notes: Vec::new(),
    });
    controller.audit(&format!("sample {rate}"), dry_run, caller, &outcome);
    match result {
        Ok(r) => {
            if !dry_run {
                info!(from = before, to = r, %caller, "sampling rate changed");
            }
            json!({"ok": true, "from": before, "to": r, "dry_run": dry_run})
        }
        Err(e) => json!({"ok": false, "error": e}),
    }
}

/// `diffs`: the per-fingerprint read-diff figures, worst first.
fn diffs(shared: &Shared) -> Value {
    let sampler = &shared.sampler;
    let summary = sampler.log.summary();
    let mut rows: Vec<_> = summary.fingerprints.into_iter().collect();
    rows.sort_by(|a, b| {
        (b.1.mismatches, b.1.transient, b.1.samples).cmp(&(
            a.1.mismatches,
            a.1.transient,
            a.1.samples,
        ))
    });
    json!({
        "ok": true,
        "rate": sampler.rate(),
        "fingerprints": rows.iter().take(50).map(|(fp, a)| json!({
            "fingerprint": fp,
            "samples": a.samples,
            "matches": a.matches,
            "mismatches": a.mismatches,
            "transient": a.transient,
            "skipped": a.skipped,
            "last_mismatch": a.last_mismatch,
        })).collect::<Vec<_>>(),
        "skipped": summary.skipped,
    })
}

/// The guards' limits of a config.
pub fn guard_limits(g: &turnout_config::Guards) -> turnout_control::controller::GuardLimits {
    turnout_control::controller::GuardLimits {
        window_secs: g.window_secs,
        min_compared_reads: g.min_compared_reads,
        max_mismatch_rate: g.max_mismatch_rate,
        max_mirror_errors: g.max_mirror_errors,
        watch_secs: g.watch_secs,
        abort_errors: g.abort_errors,
        barrier_ms: g.barrier_ms,
    }
}

/// `reload` (and SIGHUP): reads the config file again; users, rules, the
/// sampling rate and the guards' limits change live. An invalid file is
/// refused with its errors and the running config stays. Everything else
/// (listeners, backends, modes, the guards' window) needs a restart.
pub async fn reload(ctx: &Context<'_>, dry_run: bool, caller: &str) -> Value {
    let loaded =
        turnout_config::load(ctx.config_path).map_err(|e| format!("config not reloaded: {e}"));
    // A new schema mapping must match both catalogs before it is used.
    let loaded = match loaded {
        Ok(config)
            if !config.mapping.tables.is_empty()
                && ctx.controller.routing().snapshot().phase.mirror().is_some() =>
        {
            match crate::catalog::check(ctx.shared.backends(), &config.mapping).await {
                Ok(columns) => Ok((config, columns)),
                Err(problems) => Err(format!(
                    "config not reloaded: the schema mapping does not match the databases: {}",
                    problems.join("; ")
                )),
            }
        }
        other => other.map(|config| (config, Default::default())),
    };
    let result = loaded.and_then(|(config, old_columns)| {
        let mut live = crate::server::Live::of(&config).map_err(|e| match e {
            crate::server::ServerError::Mapping(problems) => {
                format!("config not reloaded: {}", problems.join("; "))
            }
            e => format!("config not reloaded: {e}"),
        })?;
        live.mapping = Arc::new((*live.mapping).clone().with_old_columns(old_columns));
        let (changed, restart) = config.changes_from(&ctx.shared.running.load());
        if !dry_run {
            // Users, logins and mapping change together.
            ctx.shared.set_live(live);
            ctx.shared.classifier.set_rules(&config.mirror.rules);
            ctx.shared.sampler.set_rate(config.sampling.rate)?;
            ctx.controller.set_guards(guard_limits(&config.guards));
            // What needs a restart keeps running as loaded at start; the
            // rest is the new file's.
            let mut running = (**ctx.shared.running.load()).clone();
            running.users = config.users.clone();
            running.mirror.rules = config.mirror.rules.clone();
            running.sampling.rate = config.sampling.rate;
            running.guards = config.guards.clone();
            running.mapping = config.mapping.clone();
            ctx.shared.running.store(Arc::new(running));
            if !restart.is_empty() {
                warn!(sections = ?restart, "the reloaded config changes settings that take effect only at the next start");
            }
        }
        Ok((config, changed, restart))
    });
    let epoch = ctx.controller.routing().snapshot().epoch;
    let outcome = result.as_ref().map(|_| Outcome {
        from: ctx.config_path.display().to_string(),
        to: "users, mirror.rules, sampling.rate, guards, mapping".into(),
        epoch,
        dry_run,
        notes: Vec::new(),
    });
    ctx.controller.audit(
        "reload",
        dry_run,
        caller,
        &outcome.clone().map_err(|e| e.clone()),
    );
    match result {
        Ok((config, changed, restart)) => {
            if !dry_run {
                info!(file = %ctx.config_path.display(), users = config.users.len(), rules = config.mirror.rules.len(), rate = config.sampling.rate, changed = ?changed, %caller, "config reloaded");
            }
            json!({
                "ok": true,
                "dry_run": dry_run,
                "applied": ["users", "mirror.rules", "sampling.rate", "guards", "mapping"],
                "changed": changed,
                "needs_restart": restart,
                "users": config.users.len(),
                "rules": config.mirror.rules.len(),
                "sampling_rate": config.sampling.rate,
            })
        }
        Err(e) => {
            warn!(error = %e, %caller, "reload refused");
            json!({"ok": false, "error": e})
        }
    }
}

/// How long `pause` waits for transactions in flight.
const PAUSE_WAIT: Duration = Duration::from_secs(30);

/// `pause` (pgbouncer's meaning): mirrored sessions hold their next
/// transaction until `resume`; the reply comes once none is inside one
/// (bounded by [`PAUSE_WAIT`]; the pause stays either way).
async fn pause(ctx: &Context<'_>, dry_run: bool, caller: &str) -> Value {
    let shared = ctx.shared;
    let busy = || shared.coord.busy_sessions.load(Ordering::Relaxed);
    if dry_run {
        let outcome = Ok(change_outcome(ctx, "running", "paused", true));
        ctx.controller.audit("pause", true, caller, &outcome);
        return json!({"ok": true, "dry_run": true, "in_transaction": busy()});
    }
    let started = Instant::now();
    if let Err(e) = flip::fleet::set_paused(shared, true).await {
        return fleet_refused(ctx, "pause", caller, e);
    }
    shared
        .coord
        .hold(crate::shared::coordination::HELD_BY_OPERATOR);
    while busy() > 0 && started.elapsed() < PAUSE_WAIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = busy();
    let result = if left == 0 {
        Ok(change_outcome(ctx, "running", "paused", false))
    } else {
        Err(format!(
            "paused, but {left} session(s) still in a transaction after {} s; new transactions are held until resume",
            PAUSE_WAIT.as_secs()
        ))
    };
    ctx.controller.audit("pause", false, caller, &result);
    info!(%caller, in_transaction = left, waited_ms = started.elapsed().as_millis() as u64, "paused");
    match result {
        Ok(_) => {
            json!({"ok": true, "dry_run": false, "waited_ms": started.elapsed().as_millis() as u64})
        }
        Err(e) => json!({"ok": false, "error": e}),
    }
}

/// `resume`: held transactions go on.
async fn resume(ctx: &Context<'_>, dry_run: bool, caller: &str) -> Value {
    let was = ctx.shared.coord.operator_paused();
    if was && !dry_run {
        if let Err(e) = flip::fleet::set_paused(ctx.shared, false).await {
            return fleet_refused(ctx, "resume", caller, e);
        }
    }
    let result = if was {
        Ok(change_outcome(ctx, "paused", "running", dry_run))
    } else {
        Err("not paused".to_string())
    };
    ctx.controller.audit("resume", dry_run, caller, &result);
    match result {
        Ok(_) => {
            if !dry_run {
                ctx.shared
                    .coord
                    .release(crate::shared::coordination::HELD_BY_OPERATOR);
                info!(%caller, "resumed");
            }
            json!({"ok": true, "dry_run": dry_run})
        }
        Err(e) => json!({"ok": false, "error": e}),
    }
}

fn change_outcome(ctx: &Context<'_>, from: &str, to: &str, dry_run: bool) -> Outcome {
    Outcome {
        from: from.into(),
        to: to.into(),
        epoch: ctx.controller.routing().snapshot().epoch,
        dry_run,
        notes: Vec::new(),
    }
}

/// Waits (at most 10 s) until no mirrored session is inside a transaction
/// that runs by an epoch before `epoch`: every transaction from then on runs
/// by the new routing. Returns the milliseconds it took and the sessions
/// still behind.
async fn adoption(shared: &Shared, epoch: u64) -> (f64, usize) {
    let started = Instant::now();
    loop {
        let behind = shared.coord.sessions_behind(epoch);
        if behind == 0 || started.elapsed() > Duration::from_secs(10) {
            return (started.elapsed().as_secs_f64() * 1000.0, behind);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}
