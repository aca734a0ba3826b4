//! Prometheus metrics at `metrics.address`, path `/metrics`: recorded with
//! the `metrics` facade, rendered by `metrics-exporter-prometheus`, served
//! over a minimal HTTP/1.1 responder (GET only).

use crate::server::Shared;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;
use turnout_control::{Phase, RoutingState};

/// Installs the process-wide recorder. Without it the facade's calls are
/// no-ops, so sessions record unconditionally.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Metrics connections served at once; more wait in the listen queue (a
/// crowd of slow scrapers never takes the proxy's file descriptors).
const MAX_METRICS_CONNECTIONS: usize = 16;

/// The whole request (line and headers) must arrive within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        // A slot first: past the cap, connections wait in the kernel's
        // backlog instead of holding descriptors here.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = handle.clone();
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
            if !matches!(tokio::time::timeout(REQUEST_TIMEOUT, read).await, Ok(true)) {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let line = request.lines().next().unwrap_or_default();
            let (status, body) = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["GET", "/metrics", ..] => ("200 OK", handle.render()),
                ["GET", ..] => ("404 Not Found", "only /metrics is here\n".to_string()),
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
pub async fn track(shared: Arc<Shared>, routing: Arc<RoutingState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let r = routing.snapshot();
        for p in Phase::ALL {
            gauge!("turnout_phase", "phase" => p.name()).set(if p == r.phase { 1.0 } else { 0.0 });
        }
        gauge!("turnout_epoch").set(r.epoch as f64);
        gauge!("turnout_connections").set(shared.connections.load(Ordering::Relaxed) as f64);
        gauge!("turnout_mirrored_sessions")
            .set(shared.mirror_sessions.load(Ordering::Relaxed) as f64);
        gauge!("turnout_async_queued").set(shared.async_pending.load(Ordering::Relaxed) as f64);
        counter!("turnout_divergences_total").absolute(shared.divergence_count());
        counter!("turnout_mirror_errors_total").absolute(shared.mirror_error_count());
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
