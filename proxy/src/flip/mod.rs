//! Phase changes as the admin socket and the flag file run them: the
//! controller's checks, the barrier a change of authority needs (DESIGN.md
//! invariant 4), sequence catch-up, the audit line and the metrics.

pub mod fleet;
pub mod fleet_log;

use crate::backend::catch_up::{Apply, CatchUp};
use crate::shared::coordination::HELD_BY_FLIP;
use crate::shared::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use turnout_control::controller::{Change, Controller, FlipRequest, Outcome, Plan};
use turnout_control::Side;

/// Runs `change` for `caller`: checked, applied (through a barrier when the
/// authority changes), audited. One change at a time.
pub async fn run(
    shared: &Arc<Shared>,
    controller: &Arc<Controller>,
    change: Change,
    req: FlipRequest,
    caller: &str,
) -> Result<Outcome, String> {
    let _one_at_a_time = shared.coord.flip_lock.lock().await;
    let mut req = req;
    req.blockers = blockers(shared, change);
    if change == Change::EnterMirror
        && controller.routing().snapshot().phase == turnout_control::Phase::Passthrough
    {
        req.blockers.extend(entry_blockers(shared).await);
    }
    let mut planned = controller.plan(change, &req);
    // Entering mirror: the mirror's source is made ready before any write
    // is mirrored (the log's slot first, so no commit after it is missed).
    if let (Ok(_), Change::EnterMirror, false, true) =
        (&planned, change, req.dry_run, shared.fleet.is_none())
    {
        if let Some(log) = shared.adapter.log() {
            match log
                .start(shared, turnout_control::Phase::Mirror, false)
                .await
            {
                Ok(line) => info!("{line}"),
                Err(e) => planned = Err(format!("flip mirror refused: {e}")),
            }
        }
    }
    let command = match &planned {
        Ok(p) => p.command(),
        Err(_) => change.name().to_string(),
    };
    // Counted before the cutover: a session opened in passthrough may close
    // as soon as the phase changes.
    let passthrough = shared.coord.passthrough_sessions.load(Ordering::Relaxed);
    let result = match planned {
        Err(e) => Err(e),
        Ok(plan) if req.dry_run => {
            cutover(&mut DryRun { shared, controller }, controller, &plan).await
        }
        Ok(plan) => match &shared.fleet {
            // In a fleet: every instance meets the change (see `fleet`).
            Some(link) => fleet::cutover(shared, controller, &plan, link).await,
            None => {
                let mut live = Live {
                    shared,
                    controller,
                    held: None,
                };
                cutover(&mut live, controller, &plan).await
            }
        },
    };
    let result = match result {
        Ok(mut o) if change == Change::EnterMirror && !o.dry_run => {
            o.notes
                .push(close_passthrough(shared, controller, passthrough).await);
            Ok(o)
        }
        Ok(mut o) if change == Change::EnterMirror => {
            o.notes.push(format!(
                "{} session(s) opened in passthrough would close at their next idle moment (their clients connect again, mirrored)",
                shared.coord.passthrough_sessions.load(Ordering::Relaxed)
            ));
            Ok(o)
        }
        other => other,
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

/// What stands in the way of `change` besides the guards' figures (each
/// overridden by --force, and audited so): the side a change makes the
/// authority must not lack writes it missed as the mirror; rows that
/// predate mirroring must be on new, and proven so, before reads go there
/// (`backfill.required`).
pub fn blockers(shared: &Shared, change: Change) -> Vec<String> {
    let mut out = Vec::new();
    let phase = shared.coord.routing.snapshot().phase;
    // A writes flip makes new the authority, its rollback old: as the
    // authority, a side lacking writes acknowledged to clients would serve
    // without them, and a later verify --repair (from it) would delete
    // them from the other side too.
    let promoted = match change {
        Change::FlipWrites => Some(Side::New),
        Change::Rollback if phase.mirror() == Some(Side::Old) => Some(Side::Old),
        _ => None,
    };
    if let Some(side) = promoted {
        // A verify that left the side equal to the authority (repairing
        // it) covers what was recorded before it started.
        let since = shared.backfill.verify.clean_since(side);
        let missed = shared.records.missed_by(side, since.as_ref());
        if missed > 0 {
            out.push(format!(
                "{side} missed {missed} write(s) as the mirror (divergence records with side {side} of writes it lacks, since the last verify that left it equal): as the authority it would serve without them; `verify start --repair` copies them from {}",
                side.other()
            ));
        }
    }
    // From the log: the mirror must have what the authority committed.
    if matches!(change, Change::FlipReads | Change::FlipWrites) && shared.log.source().is_some() {
        if let Some(why) = shared.log.stopped.load().as_ref() {
            out.push(format!("the log applier stopped: {why}"));
        }
        let lag = shared.log.figures.lag_bytes.load(Ordering::Relaxed);
        if lag > shared.max_log_lag {
            out.push(format!(
                "the authority keeps {lag} bytes of log for turnout's slot, over mirror.max_log_lag_bytes = {}: the mirror lacks what the applier has not applied yet",
                shared.max_log_lag
            ));
        }
    }
    // After finalize nothing translates (unless mapping.after_finalize =
    // "translate"): statements still written with old's names would fail.
    if change == Change::Finalize && !shared.live().mapping.translates_after_finalize() {
        let window = shared.old_names.window;
        let recent = shared.old_names.within(window);
        if !recent.is_empty() && !shared.live().mapping.is_identity() {
            let shown: Vec<String> = recent.iter().take(3).map(|s| format!("`{s}`")).collect();
            out.push(format!(
                "{} statement shape(s) used old's names in the last {} s (e.g. {}): after finalize they reach new untranslated and fail; point the application at new's names first, or set mapping.after_finalize = \"translate\" and reload",
                recent.len(),
                window.as_secs(),
                shown.join(", ")
            ));
        }
    }
    if change == Change::EnterMirror && phase == turnout_control::Phase::Passthrough {
        if let Some(why) = shared.log.stopped.load().as_ref() {
            out.push(format!("the log applier stopped: {why}"));
        }
    }
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

/// What keeps turnout from entering mirror: new must take logins (and
/// serve the catalog read) as configured.
async fn entry_blockers(shared: &Arc<Shared>) -> Vec<String> {
    crate::backend_check::check(shared, &[Side::New])
        .await
        .into_iter()
        .filter_map(|(_, checked)| checked.err())
        .map(|why| format!("{why} (mirroring needs new)"))
        .collect()
}

/// Sessions opened in passthrough cannot mirror: PostgreSQL ones close at
/// their next idle moment (clients connect again, now mirrored); the
/// change waits for them up to `guards.barrier_ms`. A line for the reply.
/// `before`: how many were open when the change began.
async fn close_passthrough(shared: &Arc<Shared>, controller: &Controller, before: usize) -> String {
    shared.coord.mirror_entered.send_replace(true);
    let count = || shared.coord.passthrough_sessions.load(Ordering::Relaxed);
    let before = before.max(count());
    let deadline = Instant::now() + Duration::from_millis(controller.guards().barrier_ms);
    while count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match (before, count()) {
        (0, _) => "no session opened in passthrough was open".into(),
        (n, 0) => format!("{n} session(s) opened in passthrough closed at their next idle moment (their clients connect again, mirrored)"),
        (n, left) => format!(
            "{n} session(s) opened in passthrough: {left} still open (in a transaction, or MySQL's, which end when their clients close them): their writes are not mirrored; backfill start waits until they are gone"
        ),
    }
}

/// The steps of a phase change, in the order they run. A change of
/// authority (a writes flip or its rollback) is a barrier: new transactions
/// are held, the open ones and async mirror queues finish (bounded by
/// `guards.barrier_ms`), the sequences of the side taking over move past
/// the other's, the new phase is persisted and swapped in, traffic goes on.
/// Other changes are persisted and swapped in. [`Live`] carries the steps
/// out; [`DryRun`] walks the same steps and says what each would do, so
/// `--dry-run` previews exactly what the change does.
trait Steps {
    /// New transactions are held.
    fn hold(&mut self);
    /// Open transactions and async queues finish within `window`: a line
    /// for the reply, or why the change is abandoned.
    async fn drain(&mut self, window: Duration, plan: &Plan) -> Result<String, String>;
    /// Sequences (MySQL: AUTO_INCREMENT counters) of `to` move past
    /// `from`'s: a line for the reply.
    async fn catch_up(&mut self, from: Side, to: Side) -> Result<String, String>;
    /// The mirror fed from the log: everything `from` committed is applied
    /// to `to` (within `window`), then `to`'s log feeds `from` (or
    /// statements do): a line for the reply (empty without a log source).
    async fn handover(&mut self, from: Side, to: Side, window: Duration) -> Result<String, String>;
    /// `finalized`: the log source's slot and publications go.
    async fn finish_log(&mut self) -> Option<String>;
    /// The new phase, persisted and swapped in.
    fn commit(&mut self, plan: &Plan) -> Result<Outcome, String>;
    /// Held transactions go on; how long they were held, when they were.
    fn release(&mut self) -> Option<String>;
}

/// Runs `plan` through `steps`.
async fn cutover<S: Steps>(
    steps: &mut S,
    controller: &Controller,
    plan: &Plan,
) -> Result<Outcome, String> {
    let mut notes = Vec::new();
    if plan.needs_barrier() {
        let window = Duration::from_millis(controller.guards().barrier_ms);
        let (from, to) = (plan.from.authority(), plan.to.authority());
        steps.hold();
        let drained = match steps.drain(window, plan).await {
            Ok(line) => line,
            Err(e) => {
                let _ = steps.release();
                return Err(e);
            }
        };
        // The log first: `to` has every commit of `from` (tables made
        // through the log included) before its sequences are moved.
        let handed = match steps.handover(from, to, window).await {
            Ok(line) => line,
            Err(e) => {
                let _ = steps.release();
                return Err(format!(
                    "flip abandoned: {e}; traffic resumed on {}",
                    plan.from
                ));
            }
        };
        let caught_up = match steps.catch_up(from, to).await {
            Ok(line) => line,
            Err(e) => {
                if let Err(back) = steps.handover(to, from, window).await {
                    warn!(error = %back, "the log source could not be turned back after an abandoned flip");
                }
                let _ = steps.release();
                return Err(format!(
                    "flip abandoned: sequences could not be moved on {to}: {e}; traffic resumed on {}",
                    plan.from
                ));
            }
        };
        notes.push(drained);
        notes.push(caught_up);
        if !handed.is_empty() {
            notes.push(handed);
        }
    }
    let committed = steps.commit(plan);
    if committed.is_err() && plan.needs_barrier() {
        // The phase did not change: the log goes back the way it fed.
        let (from, to) = (plan.from.authority(), plan.to.authority());
        let window = Duration::from_millis(controller.guards().barrier_ms);
        if let Err(e) = steps.handover(to, from, window).await {
            warn!(error = %e, "the log source could not be turned back after a failed phase change");
        }
    }
    if committed.is_ok() && plan.to == turnout_control::Phase::Finalized {
        if let Some(line) = steps.finish_log().await {
            notes.push(line);
        }
    }
    if let (Some(held), Some(first)) = (steps.release(), notes.first_mut()) {
        first.push_str(&format!("; {held}"));
    }
    let mut o = committed?;
    o.notes.extend(notes);
    if o.dry_run && !plan.overridden.is_empty() {
        o.notes
            .push(format!("--force overrides: {}", plan.overridden.join("; ")));
    }
    Ok(o)
}

/// The catch-up of the side taking over: sequences on PostgreSQL,
/// AUTO_INCREMENT counters on MySQL.
async fn catch_up(shared: &Shared, from: Side, to: Side, apply: Apply) -> Result<CatchUp, String> {
    shared.adapter.catch_up(shared, from, to, apply).await
}

/// The steps, carried out.
struct Live<'a> {
    shared: &'a Arc<Shared>,
    controller: &'a Controller,
    /// When new transactions were first held.
    held: Option<Instant>,
}

impl Steps for Live<'_> {
    fn hold(&mut self) {
        self.held = Some(Instant::now());
        self.shared.coord.hold(HELD_BY_FLIP);
    }

    async fn drain(&mut self, window: Duration, plan: &Plan) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let open = self.shared.coord.busy_sessions.load(Ordering::SeqCst);
            let queued = self.shared.queues.pending();
            if open == 0 && queued == 0 {
                break;
            }
            if started.elapsed() >= window {
                return Err(format!(
                    "flip abandoned: {open} session(s) still in a transaction and {queued} async mirror statement(s) not applied after {} ms (guards.barrier_ms); traffic resumed on {}",
                    window.as_millis(),
                    plan.from
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(format!(
            "barrier: open transactions finished in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        ))
    }

    async fn catch_up(&mut self, from: Side, to: Side) -> Result<String, String> {
        let done = catch_up(self.shared, from, to, Apply::Move).await?;
        Ok(done.summary(from, to, Apply::Move))
    }

    async fn handover(&mut self, from: Side, to: Side, window: Duration) -> Result<String, String> {
        match self.shared.adapter.log() {
            Some(log) => log.switch(self.shared, from, to, Apply::Move, window).await,
            None => Ok(String::new()),
        }
    }

    async fn finish_log(&mut self) -> Option<String> {
        let log = self.shared.adapter.log()?;
        match log.finish(self.shared).await {
            Ok(line) if line.is_empty() => None,
            Ok(line) => Some(line),
            Err(e) => {
                warn!(error = %e, "turnout's slot and publications could not be dropped at finalize");
                Some(format!(
                    "log: turnout's slot or publications could not be dropped: {e}"
                ))
            }
        }
    }

    fn commit(&mut self, plan: &Plan) -> Result<Outcome, String> {
        self.controller.commit(plan)
    }

    fn release(&mut self) -> Option<String> {
        // Only a hold of this flip's own ends: an operator's `pause`
        // stays, and a change without a barrier held nothing.
        let held = self.held.take()?;
        self.shared.coord.release(HELD_BY_FLIP);
        Some(format!(
            "traffic held {:.1} ms in all",
            held.elapsed().as_secs_f64() * 1000.0
        ))
    }
}

/// The same steps, changing nothing: what each would do.
struct DryRun<'a> {
    shared: &'a Arc<Shared>,
    controller: &'a Controller,
}

impl Steps for DryRun<'_> {
    fn hold(&mut self) {}

    async fn drain(&mut self, window: Duration, _plan: &Plan) -> Result<String, String> {
        Ok(format!(
            "barrier: new transactions would wait up to {} ms for the {} open now to finish and the {} async mirror statement(s) queued to be applied",
            window.as_millis(),
            self.shared.coord.busy_sessions.load(Ordering::SeqCst),
            self.shared.queues.pending(),
        ))
    }

    async fn catch_up(&mut self, from: Side, to: Side) -> Result<String, String> {
        let done = catch_up(self.shared, from, to, Apply::Preview).await?;
        Ok(format!(
            "{}; then {to} would become the authority",
            done.summary(from, to, Apply::Preview)
        ))
    }

    async fn handover(&mut self, from: Side, to: Side, window: Duration) -> Result<String, String> {
        match self.shared.adapter.log() {
            Some(log) => {
                log.switch(self.shared, from, to, Apply::Preview, window)
                    .await
            }
            None => Ok(String::new()),
        }
    }

    async fn finish_log(&mut self) -> Option<String> {
        let from = self.shared.log.source()?;
        Some(format!(
            "log: turnout's slot and publications on {from} would be dropped"
        ))
    }

    fn commit(&mut self, plan: &Plan) -> Result<Outcome, String> {
        Ok(self.controller.preview(plan))
    }

    fn release(&mut self) -> Option<String> {
        None
    }
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
        Change::FlipWrites => shared.coord.authority_failures[1].load(Ordering::Relaxed),
        _ => shared.coord.mirror_read_errors.load(Ordering::Relaxed),
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
