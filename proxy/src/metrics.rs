//! Prometheus metrics at `metrics.address`, path `/metrics`: recorded with
//! the `metrics` facade, rendered by `metrics-exporter-prometheus`, served
//! over a minimal HTTP/1.1 responder (GET only).

use crate::admin::Window;
use crate::shared::Shared;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;
use turnout_control::controller::{Controller, FlipRequest};
use turnout_control::divergence::DivergenceKind;
use turnout_control::{Phase, RoutingState, Side};

/// Every series turnout exports: (name, type, help). Each has its `# HELP`
/// and `# TYPE` lines and is there from start (zeros), so dashboards and
/// alerts see it before the first event.
pub const SERIES: &[(&str, &str, &str)] = &[
    ("turnout_build_info", "gauge", "Always 1; the labels name turnout's version and protocol."),
    ("turnout_phase", "gauge", "1 for the current phase (label phase), 0 for the others."),
    ("turnout_epoch", "gauge", "The routing epoch: one more at every flip or rollback."),
    ("turnout_connections", "gauge", "Client connections open now."),
    ("turnout_mirrored_sessions", "gauge", "Client sessions in a mirroring phase now."),
    ("turnout_queries_total", "counter", "Statements handled, by kind and by the side that answered the client."),
    ("turnout_query_seconds", "histogram", "Time from a statement's arrival to the client's answer, by kind and side."),
    ("turnout_divergences_total", "counter", "Divergence records written (every kind)."),
    ("turnout_divergence_records_total", "counter", "Divergence records written, by kind (mirror_error, row_count_mismatch, ...)."),
    ("turnout_mirror_errors_total", "counter", "Writes the mirror failed to apply."),
    ("turnout_authority_failures_total", "counter", "Failures of a side as the authority (lost or refused connections, server errors of classes 08, 53, 57, 58, XX)."),
    ("turnout_async_queued", "gauge", "Statements waiting in async mirror queues, all sessions."),
    ("turnout_async_queue_fill_ratio", "gauge", "The fullest session's async mirror queue in the last second, as a fraction of mirror.async_queue (0-1)."),
    ("turnout_reads_compared_total", "counter", "Sampled reads compared on the shadow side, by result."),
    ("turnout_samples_skipped_total", "counter", "Sampled reads not compared, by reason."),
    ("turnout_guard_window_compared_reads", "gauge", "Reads compared in the guards' window."),
    ("turnout_guard_window_mismatch_ratio", "gauge", "Confirmed mismatches per compared read in the guards' window (0-1)."),
    ("turnout_guard_window_mirror_errors", "gauge", "Mirror errors in the guards' window."),
    ("turnout_guard_min_compared_reads", "gauge", "The guards' minimum of compared reads (guards.min_compared_reads, or its default)."),
    ("turnout_guard_max_mismatch_ratio", "gauge", "The guards' budget of confirmed mismatches per compared read (guards.max_mismatch_rate)."),
    ("turnout_guard_max_mirror_errors", "gauge", "The guards' budget of mirror errors (guards.max_mirror_errors)."),
    ("turnout_next_flip_refusals", "gauge", "Reasons the next flip would be refused now (0: it would pass)."),
    ("turnout_flips_total", "counter", "Phase changes made, by the phase reached."),
    ("turnout_guard_refusals_total", "counter", "Flips the guards refused."),
    ("turnout_watch_rollbacks_total", "counter", "Flips rolled back by the watch window (guards.watch_secs)."),
    ("turnout_backend_up", "gauge", "1 when turnout logged in to the side and read its catalog at the last check (every 5 s), else 0."),
    ("turnout_backfill_running", "gauge", "1 while a backfill runs."),
    ("turnout_backfill_progress_ratio", "gauge", "Backfill progress: rows copied per rows estimated (0-1)."),
    ("turnout_backfill_throttled", "gauge", "1 while the backfill backs off for client latency."),
    ("turnout_backfill_rows_total", "counter", "Rows copied by the backfill."),
    ("turnout_backfill_batches_total", "counter", "Batches copied by the backfill."),
    ("turnout_verify_running", "gauge", "1 while a verify runs."),
    ("turnout_verify_rows", "gauge", "Rows compared by the current or last verify."),
    ("turnout_verify_differences", "gauge", "Rows the current or last verify found different and did not repair, by kind (missing, extra, differing)."),
    ("turnout_verify_clean", "gauge", "1 when the last verify of every table found both sides equal."),
    ("turnout_mirror_source", "gauge", "1 for the source the mirror takes the authority's writes from now (label source: log or images), 0 for the other."),
    ("turnout_log_applier_stopped", "gauge", "1 while the log applier is stopped because the mirror cannot take a change (a table or column it lacks); nothing after it is applied."),
    ("turnout_log_lag_bytes", "gauge", "Bytes of log the authority keeps for turnout's slot: what the applier has not confirmed yet."),
    ("turnout_log_max_lag_bytes", "gauge", "mirror.max_log_lag_bytes: flips are refused above it."),
    ("turnout_log_transactions_applied_total", "counter", "Transactions of the authority's log applied to the mirror."),
    ("turnout_log_rows_applied_total", "counter", "Changes of the authority's log applied to the mirror."),
    ("turnout_log_foreign_transactions_total", "counter", "Transactions in the authority's log that no turnout session marked (writers that bypass turnout), by table."),
    ("turnout_log_unwaited_commits_total", "counter", "Commits answered before the mirror applied them (the applier stalled, or the wait passed mirror.statement_timeout_ms)."),
    ("turnout_client_limit_hits_total", "counter", "Clients stopped at a [limits] bound (max_pipeline_bytes, max_prepared_statements, max_image_bytes), by limit."),
    ("turnout_metrics_connections_cut_total", "counter", "Metrics connections that sent no request and were cut to make room for a new one (a probe is always answered)."),
];

/// Installs the process-wide recorder, with every series described and
/// present from start. Without it the facade's calls are no-ops, so
/// sessions record unconditionally.
pub fn install(protocol: &str) -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    for &(name, kind, help) in SERIES {
        match kind {
            "counter" => describe_counter!(name, help),
            "histogram" => describe_histogram!(name, metrics::Unit::Seconds, help),
            _ => describe_gauge!(name, help),
        }
    }
    gauge!("turnout_build_info", "version" => env!("CARGO_PKG_VERSION"), "protocol" => protocol.to_string()).set(1.0);
    // Zeros, so every series is there from start.
    crate::engine::counted::take_handles();
    for side in [Side::Old, Side::New] {
        counter!("turnout_authority_failures_total", "side" => side.name()).absolute(0);
        gauge!("turnout_backend_up", "side" => side.name()).set(0.0);
    }
    for kind in [
        DivergenceKind::MirrorError,
        DivergenceKind::AuthorityCommitFailed,
        DivergenceKind::UnsafeStatement,
        DivergenceKind::AsyncOverflow,
        DivergenceKind::UnmirroredWrite,
        DivergenceKind::RowCountMismatch,
        DivergenceKind::LogStalled,
    ] {
        counter!("turnout_divergence_records_total", "kind" => kind.name()).absolute(0);
    }
    for p in Phase::ALL {
        counter!("turnout_flips_total", "to" => p.name()).absolute(0);
    }
    for result in ["match", "confirmed_mismatch", "transient_mismatch"] {
        counter!("turnout_reads_compared_total", "result" => result).absolute(0);
    }
    for reason in [
        "shadow_busy",
        "shadow_unavailable",
        "not_comparable",
        "not_read_only",
    ] {
        counter!("turnout_samples_skipped_total", "reason" => reason).absolute(0);
    }
    for limit in [
        "max_pipeline_bytes",
        "max_prepared_statements",
        "max_image_bytes",
    ] {
        counter!("turnout_client_limit_hits_total", "limit" => limit).absolute(0);
    }
    for kind in ["missing", "extra", "differing"] {
        gauge!("turnout_verify_differences", "kind" => kind).set(0.0);
    }
    for name in [
        "turnout_guard_refusals_total",
        "turnout_watch_rollbacks_total",
        "turnout_backfill_rows_total",
        "turnout_backfill_batches_total",
        "turnout_divergences_total",
        "turnout_mirror_errors_total",
        "turnout_log_transactions_applied_total",
        "turnout_log_rows_applied_total",
        "turnout_log_foreign_transactions_total",
        "turnout_log_unwaited_commits_total",
        "turnout_metrics_connections_cut_total",
    ] {
        counter!(name).absolute(0);
    }
    for source in ["log", "images"] {
        gauge!("turnout_mirror_source", "source" => source).set(0.0);
    }
    for name in [
        "turnout_backfill_running",
        "turnout_backfill_progress_ratio",
        "turnout_backfill_throttled",
        "turnout_verify_running",
        "turnout_verify_rows",
        "turnout_verify_clean",
        "turnout_async_queue_fill_ratio",
        "turnout_log_applier_stopped",
        "turnout_log_lag_bytes",
        "turnout_log_max_lag_bytes",
    ] {
        gauge!(name).set(0.0);
    }
    Ok(handle)
}

/// What `/readyz` and `turnout_backend_up` know of each backend: whether
/// the last check (every [`HEALTH_EVERY`]) logged in and read the catalog.
#[derive(Default)]
pub struct Health {
    /// Per side (old, new): the last check passed.
    up: [std::sync::atomic::AtomicBool; 2],
    /// A check has run.
    checked: std::sync::atomic::AtomicBool,
}

/// How often the backends are checked for `/readyz` and `turnout_backend_up`.
const HEALTH_EVERY: Duration = Duration::from_secs(5);

impl Health {
    fn slot(side: Side) -> usize {
        usize::from(side == Side::New)
    }

    /// Ready: in a mirroring phase both backends were reachable at the last
    /// check, otherwise the authority; `Err` says which is not.
    pub fn ready(&self, routing: &RoutingState) -> Result<(), String> {
        if !self.checked.load(Ordering::Relaxed) {
            return Err("backends not checked yet".into());
        }
        let phase = routing.snapshot().phase;
        let sides: Vec<Side> = match phase.mirror() {
            Some(_) => vec![Side::Old, Side::New],
            None => vec![phase.authority()],
        };
        let down: Vec<&str> = sides
            .iter()
            .filter(|s| !self.up[Self::slot(**s)].load(Ordering::Relaxed))
            .map(|s| s.name())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "backend {} not reachable (phase {phase})",
                down.join(" and ")
            ))
        }
    }

    /// Checks both backends every [`HEALTH_EVERY`] while the task lives.
    pub async fn track(self: Arc<Self>, shared: Arc<Shared>) {
        let mut tick = tokio::time::interval(HEALTH_EVERY);
        loop {
            tick.tick().await;
            let checked = crate::backend_check::check(&shared, &[Side::Old, Side::New]).await;
            for (side, result) in checked {
                let up = result.is_ok();
                self.up[Self::slot(side)].store(up, Ordering::Relaxed);
                gauge!("turnout_backend_up", "side" => side.name()).set(if up { 1.0 } else { 0.0 });
            }
            self.checked.store(true, Ordering::Relaxed);
        }
    }
}

/// Metrics connections held at once (a crowd of slow scrapers never takes
/// the proxy's file descriptors). Past it, a new connection pushes out the
/// one that has waited longest without sending its request: a probe, which
/// asks at once, is always answered; an idle connection is what gives way.
const MAX_METRICS_CONNECTIONS: usize = 16;

/// The whole request (line and headers) must arrive within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections still waiting for their request, oldest first, each
/// with what cuts it.
#[derive(Default)]
struct Waiting {
    next: u64,
    queue: std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>,
}

/// Serves `/metrics`, `/healthz` (the process is up) and `/readyz` (the
/// backends the phase needs are reachable) until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    health: Arc<Health>,
    routing: Arc<RoutingState>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    let waiting = Arc::new(std::sync::Mutex::new(Waiting::default()));
    loop {
        // A slot first: past the cap, the longest-idle connection is cut to
        // make one (no descriptor is taken before there is a slot).
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let evicted = waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .queue
                    .pop_front();
                if let Some((_, cut)) = evicted {
                    let _ = cut.send(());
                    metrics::counter!("turnout_metrics_connections_cut_total").increment(1);
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                slot
            }
        };
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
        let id = {
            let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
            w.next += 1;
            let id = w.next;
            w.queue.push_back((id, cut_tx));
            id
        };
        let waiting = waiting.clone();
        let handle = handle.clone();
        let health = health.clone();
        let routing = routing.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            // The request line and headers, up to the blank line: bounded in
            // size and, as a whole, in time (not per read, which one byte
            // every few seconds would keep alive).
            let read = async {
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                true
            };
            let got = tokio::select! {
                r = tokio::time::timeout(REQUEST_TIMEOUT, read) => matches!(r, Ok(true)),
                _ = cut_rx => false,
            };
            waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .queue
                .retain(|(i, _)| *i != id);
            if !got {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let line = request.lines().next().unwrap_or_default();
            let (status, body) = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["GET", "/metrics", ..] => ("200 OK", handle.render()),
                ["GET", "/healthz", ..] => ("200 OK", "ok\n".to_string()),
                ["GET", "/readyz", ..] => match health.ready(&routing) {
                    Ok(()) => ("200 OK", "ready\n".to_string()),
                    Err(e) => ("503 Service Unavailable", format!("not ready: {e}\n")),
                },
                ["GET", ..] => (
                    "404 Not Found",
                    "here: /metrics, /healthz, /readyz\n".to_string(),
                ),
                _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let write = async {
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            };
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, write).await;
        });
    }
}

/// Raises the soft limit on open files to the hard limit, so connections
/// are bounded by `limits.max_client_connections`, not by a low default
/// (1024 on many systems). Returns the limits after (soft, hard).
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim = raised;
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Copies the proxy's own counts into the metrics once a second.
pub async fn track(shared: Arc<Shared>, controller: Arc<Controller>, window: Arc<Window>) {
    let routing = controller.routing().clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        guards(&shared, &controller, &window);
        jobs(&shared);
        let deepest = shared.queues.take_deepest();
        gauge!("turnout_async_queue_fill_ratio")
            .set(deepest as f64 / shared.queues.bound.max(1) as f64);
        let r = routing.snapshot();
        for p in Phase::ALL {
            gauge!("turnout_phase", "phase" => p.name()).set(if p == r.phase { 1.0 } else { 0.0 });
        }
        gauge!("turnout_epoch").set(r.epoch as f64);
        gauge!("turnout_connections").set(shared.coord.connections.load(Ordering::Relaxed) as f64);
        gauge!("turnout_mirrored_sessions")
            .set(shared.coord.mirror_sessions.load(Ordering::Relaxed) as f64);
        gauge!("turnout_async_queued").set(shared.queues.pending() as f64);
        counter!("turnout_divergences_total").absolute(shared.records.divergence_count());
        counter!("turnout_mirror_errors_total").absolute(shared.records.mirror_error_count());
        let summary = shared.sampler.log.summary();
        let all = summary.total();
        counter!("turnout_reads_compared_total", "result" => "match").absolute(all.matches);
        counter!("turnout_reads_compared_total", "result" => "confirmed_mismatch")
            .absolute(all.mismatches);
        counter!("turnout_reads_compared_total", "result" => "transient_mismatch")
            .absolute(all.transient);
        for (reason, n) in summary.skipped {
            counter!("turnout_samples_skipped_total", "reason" => reason).absolute(n);
        }
    }
}

/// The guards' window and budget, and the next flip's refusals.
fn guards(shared: &Arc<Shared>, controller: &Controller, window: &Window) {
    let figures = window.figures(shared);
    let limits = controller.guards();
    gauge!("turnout_guard_window_compared_reads").set(figures.compared as f64);
    gauge!("turnout_guard_window_mirror_errors").set(figures.mirror_errors as f64);
    let ratio = if figures.compared == 0 {
        0.0
    } else {
        figures.mismatches as f64 / figures.compared as f64
    };
    gauge!("turnout_guard_window_mismatch_ratio").set(ratio);
    let min = turnout_control::controller::min_compared_reads(
        limits.min_compared_reads,
        figures.sampling,
    );
    gauge!("turnout_guard_min_compared_reads").set(min as f64);
    gauge!("turnout_guard_max_mismatch_ratio").set(limits.max_mismatch_rate);
    gauge!("turnout_guard_max_mirror_errors").set(limits.max_mirror_errors as f64);
    let refusals = controller.next_change().map_or(0, |change| {
        let req = FlipRequest {
            figures,
            blockers: crate::flip::blockers(shared, change),
            ..FlipRequest::default()
        };
        controller.refusals(change, &req).len()
    });
    gauge!("turnout_next_flip_refusals").set(refusals as f64);
}

/// Verify's progress, from its status (the backfill sets its own gauges
/// at each batch).
fn jobs(shared: &Shared) {
    let v = shared.backfill.verify.status(None);
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    gauge!("turnout_verify_running").set(if v["state"] == "running" { 1.0 } else { 0.0 });
    gauge!("turnout_verify_rows").set(n("rows") as f64);
    gauge!("turnout_verify_clean").set(if v["last_clean"] == true { 1.0 } else { 0.0 });
    let mut repaired = n("repaired");
    for kind in ["missing", "extra", "differing"] {
        // Repairs are not counted per kind: taken from the kinds in turn.
        let left = n(kind).saturating_sub(repaired);
        repaired = repaired.saturating_sub(n(kind));
        gauge!("turnout_verify_differences", "kind" => kind).set(left as f64);
    }
}
