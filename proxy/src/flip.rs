//! Phase changes as the admin socket and the flag file run them: the
//! controller's checks, the barrier a change of authority needs (DESIGN.md
//! invariant 4), sequence catch-up, the audit line and the metrics.

use crate::pg::sequences;
use crate::server::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use turnout_config::Protocol;
use turnout_control::controller::{Change, Controller, FlipRequest, Outcome, Plan};

/// Runs `change` for `caller`: checked, applied (through a barrier when the
/// authority changes), audited. One change at a time.
pub async fn run(
    shared: &Arc<Shared>,
    controller: &Arc<Controller>,
    change: Change,
    req: FlipRequest,
    caller: &str,
) -> Result<Outcome, String> {
    let _one_at_a_time = shared.flip_lock.lock().await;
    let mut req = req;
    req.blockers = blockers(shared, change);
    let planned = controller.plan(change, &req);
    let command = match &planned {
        Ok(p) => p.command(),
        Err(_) => change.name().to_string(),
    };
    let result = match planned {
        Err(e) => Err(e),
        Ok(plan) if req.dry_run => Ok(preview(shared, controller, &plan)),
        Ok(plan) if plan.needs_barrier() => barrier(shared, controller, &plan).await,
        Ok(plan) => controller.commit(&plan),
    };
    controller.audit(&command, req.dry_run, caller, &result);
    count_change(&result);
    match &result {
        Ok(o) if !o.dry_run => {
            info!(from = %o.from, to = %o.to, epoch = o.epoch, %caller, notes = ?o.notes, "{}", change.name());
            if matches!(change, Change::FlipReads | Change::FlipWrites) {
                watch(shared.clone(), controller.clone(), change);
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, %caller, "{} refused", change.name()),
    }
    result
}

/// What stands in the way of `change` besides the guards' figures: rows
/// that predate mirroring must be on new, and proven so, before reads go
/// there (`backfill.required`; --force overrides).
pub fn blockers(shared: &Shared, change: Change) -> Vec<String> {
    let mut out = Vec::new();
    if change != Change::FlipReads || !shared.backfill.required {
        return out;
    }
    if !shared.backfill.complete() {
        out.push("the backfill of every table is not complete (turnout ctl backfill start; backfill.required = false turns this guard off)".to_string());
    }
    if !shared.backfill.verify.clean() {
        out.push(
            "no verify of every table has found both sides equal yet (turnout ctl verify start)"
                .to_string(),
        );
    }
    out
}

/// `--dry-run`: what would happen, and whether the guards pass (they did,
/// or `plan` would have failed).
fn preview(shared: &Shared, controller: &Controller, plan: &Plan) -> Outcome {
    let mut o = controller.preview(plan);
    if plan.needs_barrier() {
        let (from, to) = (plan.from.authority(), plan.to.authority());
        o.notes.push(format!(
            "barrier: new transactions wait up to {} ms for the {} open now to finish; then sequences on {to} are moved past {from}'s values and {to} becomes the authority",
            controller.guards().barrier_ms,
            shared.busy_sessions.load(Ordering::SeqCst),
        ));
    }
    if !plan.overridden.is_empty() {
        o.notes
            .push(format!("--force overrides: {}", plan.overridden.join("; ")));
    }
    o
}

/// A change of authority: hold new transactions, wait (bounded) for the
/// open ones and for async mirror queues to finish, move the sequences of
/// the side taking over past the other's, switch, let traffic go on. Past
/// the window, or when the catch-up fails, nothing changes and traffic
/// resumes.
async fn barrier(
    shared: &Arc<Shared>,
    controller: &Controller,
    plan: &Plan,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let window = Duration::from_millis(controller.guards().barrier_ms);
    let was_paused = shared.paused.send_replace(true);
    let release = || {
        if !was_paused {
            shared.paused.send_replace(false);
        }
    };
    loop {
        let open = shared.busy_sessions.load(Ordering::SeqCst);
        let queued = shared.async_pending.load(Ordering::SeqCst);
        if open == 0 && queued == 0 {
            break;
        }
        if started.elapsed() >= window {
            release();
            return Err(format!(
                "flip abandoned: {open} session(s) still in a transaction and {queued} async mirror statement(s) not applied after {} ms (guards.barrier_ms); traffic resumed on {}",
                window.as_millis(),
                plan.from
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let drained = started.elapsed();
    let (from, to) = (plan.from.authority(), plan.to.authority());
    let caught_up = match shared.protocol {
        Protocol::Postgres => sequences::catch_up(shared, from, to).await,
        Protocol::Mysql => crate::mysql::counters::catch_up(shared, from, to).await,
    };
    let caught_up = match caught_up {
        Ok(c) => c,
        Err(e) => {
            release();
            return Err(format!(
                "flip abandoned: sequences could not be moved on {to}: {e}; traffic resumed on {}",
                plan.from
            ));
        }
    };
    let committed = controller.commit(plan);
    release();
    let mut o = committed?;
    o.notes.push(format!(
        "barrier: open transactions finished in {:.1} ms; traffic held {:.1} ms in all",
        drained.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    ));
    o.notes.push(caught_up.summary(from, to));
    Ok(o)
}

/// Counts a phase change, or a guard refusal.
pub fn count_change(result: &Result<Outcome, String>) {
    match result {
        Ok(o) if o.dry_run => {}
        Ok(o) => metrics::counter!("turnout_flips_total", "to" => o.to.clone()).increment(1),
        Err(e) if e.starts_with("guards refuse") => {
            metrics::counter!("turnout_guard_refusals_total").increment(1)
        }
        Err(_) => {}
    }
}

/// What the watch window after `change` counts: reads failing on new
/// once it serves them, or failures of new once it is the authority.
fn promoted_errors(shared: &Shared, change: Change) -> u64 {
    match change {
        Change::FlipWrites => shared.authority_failures[1].load(Ordering::Relaxed),
        _ => shared.mirror_read_errors.load(Ordering::Relaxed),
    }
}

/// After a flip: for `guards.watch_secs`, when more than
/// `guards.abort_errors` errors happen on the newly promoted side, roll
/// back by itself, and say so (log and audit).
fn watch(shared: Arc<Shared>, controller: Arc<Controller>, change: Change) {
    let limits = controller.guards();
    if limits.watch_secs == 0 {
        return;
    }
    let epoch = controller.routing().snapshot().epoch;
    let base = promoted_errors(&shared, change);
    let what = match change {
        Change::FlipWrites => "failure(s) of new as the authority",
        _ => "read error(s) on the promoted side",
    };
    tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(limits.watch_secs);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if controller.routing().snapshot().epoch != epoch {
                return; // changed again meanwhile: nothing to watch
            }
            let errors = promoted_errors(&shared, change) - base;
            if errors > limits.abort_errors {
                let caller = format!(
                    "watch window: {errors} {what} within {} s (guards.abort_errors = {})",
                    limits.watch_secs, limits.abort_errors
                );
                // Boxed: the rollback may itself start a watch.
                let rollback = Box::pin(run(
                    &shared,
                    &controller,
                    Change::Rollback,
                    FlipRequest::default(),
                    &caller,
                ));
                match rollback.await {
                    Ok(o) => {
                        metrics::counter!("turnout_watch_rollbacks_total").increment(1);
                        warn!(from = %o.from, to = %o.to, epoch = o.epoch, errors, "rolled back by itself: {what}")
                    }
                    Err(e) => warn!(error = %e, "watch window could not roll back"),
                }
                return;
            }
        }
    });
}
