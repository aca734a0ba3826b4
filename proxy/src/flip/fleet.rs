//! A fleet moves as one (`[fleet]`): a phase change is prepared in the
//! store by compare-and-swap, every live instance takes its barrier and
//! acknowledges, and only then does the coordinator commit it (or abort
//! it, and every instance resumes on the routing it had). The agent keeps
//! this instance's lease, follows the store, and fences the instance when
//! the lease may have ended.

use crate::backend::catch_up::Apply;
use crate::shared::coordination::{HELD_BY_FLIP, HELD_BY_OPERATOR};
use crate::shared::fleet::FleetLink;
use crate::shared::Shared;
use crate::store::{Member, Prepared, Record};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use turnout_control::controller::{Change, Controller, Outcome, Plan};
use turnout_control::state::Saved;
use turnout_control::{Phase, Routing};

/// How often the agent reads the store.
fn poll(lease: Duration) -> Duration {
    (lease / 20).clamp(Duration::from_millis(20), Duration::from_millis(100))
}

fn phases(names: &[String]) -> Vec<Phase> {
    names.iter().filter_map(|h| h.parse().ok()).collect()
}

fn saved_of(r: &Record) -> Option<Saved> {
    Some(Saved {
        routing: Routing {
            phase: r.phase.parse().ok()?,
            epoch: r.epoch,
        },
        history: phases(&r.history),
    })
}

/// Before turnout accepts clients: the fleet's committed phase (the
/// store's record, made from `local` when the fleet has none yet). Tried
/// for `lease` × 3 at least; `Err` when the store cannot be read.
pub async fn join(link: &FleetLink, local: Saved) -> Result<Saved, String> {
    let deadline = Instant::now() + (link.lease * 3).max(Duration::from_secs(10));
    let mut last = String::new();
    while Instant::now() < deadline {
        match link.store.read().await {
            Ok(Some((r, _))) => {
                let saved = saved_of(&r).ok_or_else(|| {
                    format!(
                        "{}: the fleet's record names phase {:?}, which this turnout does not know",
                        link.store.describe(),
                        r.phase
                    )
                })?;
                if saved.routing != local.routing {
                    info!(
                        "fleet: the fleet is at {} (epoch {}); this instance's state file said {} (epoch {}): it takes the fleet's",
                        saved.routing.phase, saved.routing.epoch, local.routing.phase, local.routing.epoch
                    );
                }
                link.last.store(Some(Arc::new(r)));
                return Ok(saved);
            }
            Ok(None) => {
                let first = Record {
                    phase: local.routing.phase.name().to_string(),
                    epoch: local.routing.epoch,
                    history: local.history.iter().map(|p| p.name().to_string()).collect(),
                    prepared: None,
                    paused: false,
                    by: link.instance.clone(),
                    nonce: rand::random(),
                };
                match link.store.swap(None, &first).await {
                    Ok(true) => info!(
                        "fleet: {} had no record; this instance wrote phase {} (epoch {})",
                        link.store.describe(),
                        first.phase,
                        first.epoch
                    ),
                    Ok(false) => {} // another instance was first: read it
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e @ crate::store::StoreError::Invalid { .. }) => {
                return Err(format!(
                    "{e}: turnout does not accept clients before it has read the fleet's phase"
                ))
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "{last}: turnout does not accept clients before it has read the fleet's phase"
    ))
}

/// How this instance lists itself.
fn member(shared: &Shared, link: &FleetLink) -> Member {
    let r = shared.coord.routing.snapshot();
    let a = link.answer().clone();
    Member {
        instance: link.instance.clone(),
        phase: r.phase.name().to_string(),
        epoch: r.epoch,
        sessions: shared.coord.connections.load(Ordering::Relaxed) as u64,
        version: env!("CARGO_PKG_VERSION").to_string(),
        acked: a.acked,
        refused: a.refused,
        holding: *shared.coord.paused.borrow() != 0,
    }
}

/// This instance's lease is renewed (and its answers published); `start`
/// is the fence clock's reading from before the store was last read.
async fn beat(shared: &Shared, link: &FleetLink, start: u64) -> Result<(), String> {
    link.store
        .heartbeat(&member(shared, link), link.lease)
        .await
        .map_err(|e| e.to_string())?;
    shared
        .coord
        .renew_fence(start + link.lease.as_millis() as u64);
    Ok(())
}

/// This instance takes part in `p`: for a change of authority it holds new
/// transactions and waits (up to `p.barrier_ms`) for the open ones and its
/// async queues to end; then it acknowledges (or says why it cannot).
async fn participate(shared: &Arc<Shared>, link: &FleetLink, p: &Prepared) {
    {
        let mut a = link.answer();
        if a.handled.is_some_and(|h| h >= p.epoch) {
            return;
        }
        a.handled = Some(p.epoch);
        if p.barrier {
            a.holding = Some(p.epoch);
        }
    }
    let start = shared.coord.fence_clock();
    if p.barrier {
        shared.coord.hold(HELD_BY_FLIP);
        let began = Instant::now();
        let window = Duration::from_millis(p.barrier_ms);
        loop {
            let open = shared.coord.busy_sessions.load(Ordering::SeqCst);
            let queued = shared.queues.pending();
            if open == 0 && queued == 0 {
                break;
            }
            if began.elapsed() >= window {
                let why = format!(
                    "{}: {open} session(s) still in a transaction and {queued} async mirror statement(s) not applied after {} ms (guards.barrier_ms)",
                    link.instance,
                    window.as_millis()
                );
                shared.coord.release(HELD_BY_FLIP);
                let mut a = link.answer();
                a.holding = None;
                a.refused = Some((p.epoch, why));
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Entering a mirroring phase: this instance's part in the log source
    // is taken before it acknowledges (no session may mirror by statements
    // what the applier will apply from the log).
    let entering = p.from.parse::<Phase>().is_ok_and(|f| f.mirror().is_none());
    if let (true, Ok(to)) = (entering, p.to.parse::<Phase>()) {
        if let Err(e) = super::fleet_log::take_role(shared, to, true).await {
            link.answer().refused =
                Some((p.epoch, format!("{}: the log source: {e}", link.instance)));
        }
    }
    {
        let mut a = link.answer();
        if a.refused.as_ref().is_none_or(|(e, _)| *e != p.epoch) {
            a.acked = Some(p.epoch);
        }
    }
    if let Err(e) = beat(shared, link, start).await {
        warn!(error = %e, "fleet: could not acknowledge epoch {}", p.epoch);
    }
}

/// Whether `a` and `b` are the same prepared change (its handover's
/// state aside).
pub fn same(a: &Prepared, b: &Prepared) -> bool {
    a.epoch == b.epoch && a.coordinator == b.coordinator && a.command == b.command
}

/// Ends this instance's hold for a prepared change.
fn stop_holding(shared: &Shared, link: &FleetLink) {
    if link.answer().holding.take().is_some() {
        shared.coord.release(HELD_BY_FLIP);
    }
}

/// Follows `r`, the record as read now (at `version`).
async fn follow(
    shared: &Arc<Shared>,
    controller: &Controller,
    link: &Arc<FleetLink>,
    r: &Record,
    version: i64,
    holding_since: &mut Option<Instant>,
) {
    let local = controller.routing().snapshot();
    if r.epoch > local.epoch {
        if let Some(saved) = saved_of(r) {
            match controller.adopt(saved.routing, saved.history) {
                Ok(true) => {
                    info!(phase = %r.phase, epoch = r.epoch, by = %r.by, "fleet: took the committed phase");
                    if local.phase == Phase::Passthrough && saved.routing.phase.mirror().is_some() {
                        shared.coord.mirror_entered.send_replace(true);
                    }
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "fleet: could not keep the committed phase"),
            }
        }
    }
    let now = controller.routing().snapshot();
    let epoch = now.epoch;
    let holding = link.answer().holding;
    // The leader's handover (or its undo), then the log source's part for
    // the phase, taken while still holding at a change of authority; never
    // while a change is under way or a handover is in flight.
    super::fleet_log::lead_handover(shared, link, r);
    let settled = r.prepared.is_none() && link.handed().is_none();
    let taken = super::fleet_log::take_role(shared, now.phase, settled).await;
    if let Err(e) = &taken {
        warn!(error = %e, "fleet: the log source's part could not be taken; new transactions wait until it is");
    }
    // Traffic goes on by the committed phase only with the log source's
    // part that goes with it (sessions would mirror by statements what
    // the applier also applies).
    if holding.is_some_and(|h| h <= epoch) && taken.is_ok() {
        stop_holding(shared, link);
    }
    if r.paused != shared.coord.operator_paused() {
        if r.paused {
            shared.coord.hold(HELD_BY_OPERATOR);
        } else {
            shared.coord.release(HELD_BY_OPERATOR);
        }
    }
    match &r.prepared {
        Some(p) if p.epoch == epoch + 1 => {
            if link.answer().handled.is_none_or(|h| h < p.epoch) {
                *holding_since = Some(Instant::now());
                let (shared, link, p) = (shared.clone(), link.clone(), p.clone());
                tokio::spawn(async move { participate(&shared, &link, &p).await });
            } else if let Some(since) = *holding_since {
                // The coordinator went quiet: past its window and a lease,
                // the change is aborted here (by swap: it cannot commit it
                // then).
                let limit = Duration::from_millis(p.barrier_ms) + link.lease;
                if link.answer().holding == Some(p.epoch) && since.elapsed() > limit {
                    let mut next = r.clone();
                    next.prepared = None;
                    next.by = link.instance.clone();
                    next.nonce = rand::random();
                    if let Ok(true) = link.store.swap(Some(version), &next).await {
                        warn!(coordinator = %p.coordinator, epoch = p.epoch, "fleet: aborted {} (its coordinator did not commit or abort it in time)", p.command);
                        stop_holding(shared, link);
                    }
                }
            }
        }
        // Aborted: nothing prepared now, the epoch unchanged.
        _ => {
            *holding_since = None;
            if holding.is_some() {
                stop_holding(shared, link);
            }
        }
    }
}

/// Keeps this instance's lease and follows the store, until the task is
/// dropped.
pub async fn agent(shared: Arc<Shared>, controller: Arc<Controller>) {
    let Some(link) = shared.fleet.clone() else {
        return;
    };
    controller.set_instance(&link.instance);
    let wait = controller
        .guards()
        .barrier_ms
        .max(link.lease.as_millis() as u64);
    shared.coord.fence_wait_ms.store(wait, Ordering::Relaxed);
    // New transactions are held a third of a lease before it ends: the
    // open ones have that long to end while the lease still holds.
    let grace = link.lease.as_millis() as u64 / 3;
    shared.coord.fence_grace_ms.store(grace, Ordering::Relaxed);
    shared
        .coord
        .renew_fence(shared.coord.fence_clock() + link.lease.as_millis() as u64);
    let every = poll(link.lease);
    let beat_every = link.lease / 6;
    let mut last_beat: Option<Instant> = None;
    let mut holding_since = None;
    let mut complained = None::<Instant>;
    let mut sent = None::<Member>;
    let mut changes = link.store.changes();
    loop {
        let start = shared.coord.fence_clock();
        let read = link.store.read().await;
        let ok = match read {
            Ok(Some((r, version))) => {
                follow(&shared, &controller, &link, &r, version, &mut holding_since).await;
                link.last.store(Some(Arc::new(r)));
                true
            }
            Ok(None) => true,
            Err(e) => {
                if complained.is_none_or(|c| c.elapsed() > Duration::from_secs(5)) {
                    warn!(error = %e, "fleet: cannot read the store");
                    complained = Some(Instant::now());
                }
                false
            }
        };
        let now = member(&shared, &link);
        let due =
            last_beat.is_none_or(|b| b.elapsed() >= beat_every) || sent.as_ref() != Some(&now);
        if ok && due {
            match beat(&shared, &link, start).await {
                Ok(()) => {
                    last_beat = Some(Instant::now());
                    sent = Some(now);
                }
                Err(e) => warn!(error = %e, "fleet: cannot renew this instance's lease"),
            }
        }
        if shared.coord.fenced() {
            shared
                .coord
                .hold(crate::shared::coordination::HELD_BY_FENCE);
        }
        // Read again at the store's word, or after `every` at the latest.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = changes.changed() => {}
        }
    }
}

/// Runs `plan` through the fleet, this instance coordinating.
pub async fn cutover(
    shared: &Arc<Shared>,
    controller: &Controller,
    plan: &Plan,
    link: &Arc<FleetLink>,
) -> Result<Outcome, String> {
    let _one = link.coordinating.lock().await;
    let store = &link.store;
    let unreachable = |e: crate::store::StoreError| format!("not flipped: {e}; nothing done");
    let (r, version) = store
        .read()
        .await
        .map_err(unreachable)?
        .ok_or("not flipped: the fleet's store has no record; nothing done")?;
    if let Some(p) = &r.prepared {
        return Err(format!(
            "not flipped: `{}` by {} is under way in the fleet (epoch {}); nothing done",
            p.command, p.coordinator, p.epoch
        ));
    }
    let local = controller.routing().snapshot();
    if r.epoch != local.epoch || r.phase != plan.from.name() {
        return Err(format!(
            "not flipped: the fleet is at {} (epoch {}) and this instance at {} (epoch {}); it follows the fleet within a moment: try again",
            r.phase, r.epoch, local.phase, local.epoch
        ));
    }
    let p = Prepared {
        epoch: r.epoch + 1,
        command: plan.command(),
        from: plan.from.name().to_string(),
        to: plan.to.name().to_string(),
        coordinator: link.instance.clone(),
        barrier: plan.needs_barrier(),
        barrier_ms: controller.guards().barrier_ms,
        handover: None,
    };
    let mut prepared = r.clone();
    prepared.prepared = Some(p.clone());
    prepared.by = link.instance.clone();
    prepared.nonce = rand::random();
    if !store
        .swap(Some(version), &prepared)
        .await
        .map_err(unreachable)?
    {
        let who = match store.read().await {
            Ok(Some((now, _))) => match now.prepared {
                Some(q) => format!("`{}` by {}", q.command, q.coordinator),
                None => format!("{} (now at {}, epoch {})", now.by, now.phase, now.epoch),
            },
            _ => "another instance".to_string(),
        };
        return Err(format!(
            "not flipped: {who} changed the fleet's record first; nothing done"
        ));
    }
    let began = Instant::now();
    participate(shared, link, &p).await;
    let acked = wait_for_acks(link, &p).await;
    let mut notes = Vec::new();
    let ready = match acked {
        Ok(line) => {
            notes.push(line);
            if p.barrier {
                let (from, to) = (plan.from.authority(), plan.to.authority());
                // The log first: `to` has every commit of `from` before
                // its sequences are moved.
                match super::fleet_log::handover(shared, link, &p, from, to).await {
                    Ok(line) => {
                        if !line.is_empty() {
                            notes.push(line);
                        }
                        match shared.adapter.catch_up(shared, from, to, Apply::Move).await {
                            Ok(done) => {
                                notes.push(done.summary(from, to, Apply::Move));
                                Ok(())
                            }
                            Err(e) => Err(format!("sequences could not be moved on {to}: {e}")),
                        }
                    }
                    Err(e) => Err(format!("the log could not be handed over: {e}")),
                }
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    };
    if let Err(why) = ready {
        let aborted = abort(link, &p).await;
        // A handover this instance made goes back (a leader elsewhere
        // undoes its own when it reads the abort).
        let handed = *link.handed() == Some(p.epoch);
        if let (true, Some(log)) = (handed, shared.adapter.log()) {
            let (from, to) = (plan.from.authority(), plan.to.authority());
            let window = Duration::from_millis(p.barrier_ms);
            match log.switch(shared, to, from, Apply::Move, window).await {
                Ok(_) => link.set_applier_role(Some((true, Some(from)))),
                Err(e) => {
                    warn!(error = %e, "the log source could not be turned back after an abandoned flip")
                }
            }
            *link.handed() = None;
        }
        stop_holding(shared, link);
        return Err(format!(
            "flip abandoned: {why}; {aborted}; traffic resumed on {}",
            plan.from
        ));
    }
    let mut history = r.history.clone();
    if plan.change == Change::Rollback {
        history.pop();
    } else {
        history.push(plan.from.name().to_string());
    }
    let committed = Record {
        phase: plan.to.name().to_string(),
        epoch: p.epoch,
        history,
        prepared: None,
        paused: r.paused,
        by: link.instance.clone(),
        nonce: rand::random(),
    };
    commit(link, &p, &committed)
        .await
        .inspect_err(|_| stop_holding(shared, link))?;
    let saved = saved_of(&committed).ok_or("the committed record names an unknown phase")?;
    let adopted = controller.adopt(saved.routing, saved.history);
    // (When the log source's part cannot be taken now, the agent keeps
    // holding and tries again.)
    match super::fleet_log::take_role(shared, plan.to, true).await {
        Ok(_) => stop_holding(shared, link),
        Err(e) => {
            warn!(error = %e, "fleet: the log source's part could not be taken; new transactions wait until it is")
        }
    }
    if let Err(e) = adopted {
        warn!(error = %e, "fleet: committed, but this instance's state file could not be written");
    }
    if let Some(first) = notes.first_mut() {
        if p.barrier {
            first.push_str(&format!(
                "; traffic held {:.1} ms in all",
                began.elapsed().as_secs_f64() * 1000.0
            ));
        }
    }
    Ok(Outcome {
        from: plan.from.name().into(),
        to: plan.to.name().into(),
        epoch: p.epoch,
        dry_run: false,
        notes,
    })
}

/// Waits until every live instance acknowledged `p` (an instance whose
/// lease ended is no longer listed), within `p.barrier_ms`.
async fn wait_for_acks(link: &FleetLink, p: &Prepared) -> Result<String, String> {
    let began = Instant::now();
    let window = Duration::from_millis(p.barrier_ms);
    let mut last: String;
    let mut changes = link.store.changes();
    loop {
        match link.store.members().await {
            Ok(members) => {
                if let Some(m) = members
                    .iter()
                    .find(|m| m.refused.as_ref().is_some_and(|(e, _)| *e == p.epoch))
                {
                    let why = m
                        .refused
                        .as_ref()
                        .map(|(_, w)| w.clone())
                        .unwrap_or_default();
                    return Err(format!("instance {} cannot take it: {why}", m.instance));
                }
                let waiting: Vec<&str> = members
                    .iter()
                    .filter(|m| m.acked != Some(p.epoch))
                    .map(|m| m.instance.as_str())
                    .collect();
                if waiting.is_empty() {
                    return Ok(format!(
                        "fleet: {} live instance(s) acknowledged epoch {} in {:.1} ms",
                        members.len(),
                        p.epoch,
                        began.elapsed().as_secs_f64() * 1000.0
                    ));
                }
                last = format!(
                    "{} instance(s) did not acknowledge (their lease has not ended): {}",
                    waiting.len(),
                    waiting.join(", ")
                );
            }
            Err(e) => last = e.to_string(),
        }
        if began.elapsed() >= window {
            return Err(format!(
                "within {} ms (guards.barrier_ms): {last}",
                window.as_millis()
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = changes.changed() => {}
        }
    }
}

/// Takes `p` out of the record (when it is still there): a line saying so.
async fn abort(link: &FleetLink, p: &Prepared) -> String {
    for _ in 0..20 {
        match link.store.read().await {
            Ok(Some((r, v))) if r.prepared.as_ref().is_some_and(|q| same(q, p)) => {
                let mut next = r.clone();
                next.prepared = None;
                next.by = link.instance.clone();
                next.nonce = rand::random();
                if let Ok(true) = link.store.swap(Some(v), &next).await {
                    return "the fleet aborted it".into();
                }
            }
            Ok(_) => return "it was no longer prepared in the fleet".into(),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    "the fleet's store could not be told (instances abort it themselves once their window passes)"
        .into()
}

/// Swaps `committed` in for `p`; `Err` when the change was aborted
/// meanwhile or the store cannot say.
async fn commit(link: &FleetLink, p: &Prepared, committed: &Record) -> Result<(), String> {
    let deadline = Instant::now() + link.lease;
    loop {
        match link.store.read().await {
            Ok(Some((r, v))) if r.prepared.as_ref().is_some_and(|q| same(q, p)) => {
                if let Ok(true) = link.store.swap(Some(v), committed).await {
                    return Ok(());
                }
            }
            Ok(Some((r, _))) if r.epoch == committed.epoch && r.nonce == committed.nonce => {
                return Ok(());
            }
            Ok(Some((r, _))) => {
                return Err(format!(
                    "flip abandoned: {} aborted it in the fleet meanwhile (now at {}, epoch {})",
                    r.by, r.phase, r.epoch
                ))
            }
            Ok(None) => return Err("flip abandoned: the fleet's record is gone".into()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "the commit's outcome is unknown: {e}; every instance holds until it reads the store again"
                ))
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fleet as the store lists it, for `status`.
pub async fn status(link: &FleetLink) -> serde_json::Value {
    let members = tokio::time::timeout(Duration::from_secs(2), link.store.members()).await;
    let record = link.last.load_full();
    let members = match members {
        Ok(Ok(m)) => serde_json::to_value(m).unwrap_or_default(),
        Ok(Err(e)) => serde_json::json!({"error": e.to_string()}),
        Err(_) => serde_json::json!({"error": "the store did not answer within 2 s"}),
    };
    serde_json::json!({
        "store": link.store.describe(),
        "instance": link.instance,
        "lease_ms": link.lease.as_millis() as u64,
        "record": record.as_deref(),
        "members": members,
    })
}

/// `pause` / `resume` for every instance: the record's `paused` (nothing
/// outside a fleet).
pub async fn set_paused(shared: &Shared, paused: bool) -> Result<(), String> {
    let Some(link) = &shared.fleet else {
        return Ok(());
    };
    match update(link, |r| {
        (r.paused != paused).then(|| Record {
            paused,
            ..r.clone()
        })
    })
    .await?
    {
        Some(_) => Ok(()),
        None => Err("the fleet's store has no record".into()),
    }
}

/// A read-modify-swap of the record: `next` makes the record to write from
/// the one read (`None`: nothing to write); it is written as this
/// instance's, and tried again when another write came first. `Ok(None)`
/// when there is no record, `Ok(Some(written))` else.
pub async fn update(
    link: &FleetLink,
    mut next: impl FnMut(&Record) -> Option<Record>,
) -> Result<Option<bool>, String> {
    for _ in 0..50 {
        let Some((r, v)) = link.store.read().await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let Some(mut write) = next(&r) else {
            return Ok(Some(false));
        };
        write.by = link.instance.clone();
        write.nonce = rand::random();
        if link
            .store
            .swap(Some(v), &write)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(Some(true));
        }
    }
    Err("the fleet's record kept changing; try again".into())
}

/// The phase to start in, for a config with `[fleet]`: the fleet's
/// committed one (`None` without `[fleet]`). `initial`: the phase the
/// config starts in when neither the state file nor the fleet says.
pub async fn committed(
    config: &turnout_config::Config,
    initial: Phase,
) -> Result<Option<Saved>, String> {
    if config.fleet.is_none() {
        return Ok(None);
    }
    let b = &config.backends.old;
    let tls = crate::tls::backend_config(b.tls, b.ca.as_deref())
        .map_err(|e| format!("backends.old: {e}"))?;
    let old = crate::backend::transport::BackendTarget::new(turnout_control::Side::Old, b, tls);
    let Some(link) = FleetLink::of(config, &old)? else {
        return Ok(None);
    };
    let kept = match config.state.file.as_deref() {
        Some(f) => turnout_control::state::StateFile::new(f)
            .load()
            .map_err(|e| e.to_string())?,
        None => None,
    };
    let local = kept.unwrap_or(Saved {
        routing: Routing {
            phase: initial,
            epoch: 0,
        },
        history: Vec::new(),
    });
    join(&link, local).await.map(Some)
}

/// This instance leaves the fleet (it stops): not waited for by flips.
pub async fn leave(shared: &Shared) {
    if let Some(link) = &shared.fleet {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), link.store.leave(&link.instance)).await;
    }
}
