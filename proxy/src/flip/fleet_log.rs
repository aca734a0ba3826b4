//! The log source in a fleet (PostgreSQL): one instance leads the applier
//! (elected through the store with its lease: when it dies, another takes
//! the slot up from where the mirror's replication origin says it was),
//! the others follow it. At a change of authority the leader hands the
//! log over once every instance met the barrier.

use crate::backend::catch_up::Apply;
use crate::shared::fleet::FleetLink;
use crate::shared::Shared;
use crate::store::{Prepared, Record};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use turnout_config::MirrorSource;
use turnout_control::{Phase, Side};

/// The role in the store the applier's leader holds.
pub const APPLIER: &str = "applier";

/// `handed` while an aborted change's handover is being undone.
const UNDOING: u64 = u64::MAX;

/// Whether the fleet's log source is in play for `phase` (a fleet, a
/// protocol with a log source, a source that may be the log).
fn wanted(shared: &Shared) -> bool {
    shared.fleet.is_some()
        && shared.adapter.log().is_some()
        && shared.log_source != MirrorSource::Images
        && shared.running.load().protocol == turnout_config::Protocol::Postgres
}

/// Takes this instance's part in the log source for `phase`: leads the
/// applier when the store says so, else follows the leader; a line saying
/// what changed (`None`: nothing did).
/// `settled`: no change is under way (else the leadership is only
/// renewed, and a leader that lost it follows; no other part is taken).
pub async fn take_role(
    shared: &Arc<Shared>,
    phase: Phase,
    settled: bool,
) -> Result<Option<String>, String> {
    let (Some(link), Some(log)) = (shared.fleet.as_ref(), shared.adapter.log()) else {
        return Ok(None);
    };
    if !wanted(shared) {
        return Ok(None);
    }
    let _one = link.taking.lock().await;
    let authority = phase.mirror().map(|m| m.other());
    if authority.is_none() {
        let (true, Some((led, _))) = (settled, link.applier_role()) else {
            return Ok(None);
        };
        link.set_applier_role(None);
        // The leader ends the source (finalized: its slot and
        // publications go); a follower stops following.
        let line = match led {
            true if phase == Phase::Finalized => log.finish(shared).await?,
            true => log.start(shared, phase, true).await?,
            false => log.follow(shared, phase).await?,
        };
        info!("fleet: {line}");
        return Ok(Some(line));
    }
    // The leadership is renewed every sixth of a lease (its holder) or
    // asked for as often (the others); a change of authority is taken at
    // once.
    let role = link.applier_role();
    let due = link
        .led_at()
        .is_none_or(|at| at.elapsed() >= link.lease / 6);
    if role.is_some_and(|(_, s)| s == authority) && !due {
        return Ok(None);
    }
    *link.led_at_mut() = Some(Instant::now());
    let leader = link
        .store
        .lead(APPLIER, &link.instance, link.lease)
        .await
        .map_err(|e| e.to_string())?;
    let leads = leader.as_deref() == Some(link.instance.as_str());
    tracing::debug!(
        leader = leader.as_deref().unwrap_or("none"),
        "fleet: the applier's leadership asked for"
    );
    let lost = !leads && link.applier_role().is_some_and(|(led, _)| led);
    if link.applier_role() == Some((leads, authority)) || !(settled || lost) {
        return Ok(None);
    }
    let line = if leads {
        log.start(shared, phase, true).await?
    } else {
        log.follow(shared, phase).await?
    };
    link.set_applier_role(Some((leads, authority)));
    info!(
        leader = leader.as_deref().unwrap_or("none"),
        "fleet: {}: {line}",
        if leads {
            "this instance leads the log applier"
        } else {
            "this instance follows the log applier"
        }
    );
    Ok(Some(line))
}

/// [`take_role`] at start, tried again (instances starting together: the
/// leader makes the publications the followers read) for three leases,
/// ten seconds at least.
pub async fn take_role_at_start(
    shared: &Arc<Shared>,
    phase: Phase,
) -> Result<Option<String>, String> {
    let lease = shared.fleet.as_ref().map_or(Duration::ZERO, |l| l.lease);
    let deadline = Instant::now() + (lease * 3).max(Duration::from_secs(10));
    loop {
        match take_role(shared, phase, true).await {
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "fleet: the log source's part: trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// Whether this instance leads the applier now.
fn leads(link: &FleetLink) -> bool {
    link.applier_role().is_some_and(|(led, _)| led)
}

/// The coordinator's handover at a change of authority from `from` to
/// `to` (every instance holds): done here when this instance leads the
/// applier, else asked of the leader through the record. A line for the
/// reply (empty without the log source).
pub async fn handover(
    shared: &Arc<Shared>,
    link: &FleetLink,
    p: &Prepared,
    from: Side,
    to: Side,
) -> Result<String, String> {
    let Some(log) = shared.adapter.log() else {
        return Ok(String::new());
    };
    // Only when the log feeds the mirror now (`auto` may have chosen
    // statements: then there is nothing to hand over).
    if !wanted(shared)
        || shared.log.source() != Some(from)
        || link.applier_role().is_none_or(|(_, s)| s != Some(from))
    {
        return Ok(String::new());
    }
    let window = Duration::from_millis(p.barrier_ms);
    if leads(link) {
        let line = log.switch(shared, from, to, Apply::Move, window).await?;
        link.set_applier_role(Some((true, Some(to))));
        *link.handed() = Some(p.epoch);
        return Ok(line);
    }
    let asked = set_handover(link, p, "asked").await?;
    if !asked {
        return Err("the change was no longer prepared in the fleet".into());
    }
    let began = Instant::now();
    let mut changes = link.store.changes();
    while began.elapsed() < window {
        if let Ok(Some((r, _))) = link.store.read().await {
            match r.prepared.as_ref().and_then(|q| q.handover.clone()) {
                Some(h) if h.starts_with("done: ") => return Ok(h[6..].to_string()),
                Some(h) if h.starts_with("failed: ") => return Err(h[8..].to_string()),
                Some(_) => {}
                None => return Err("the change was no longer prepared in the fleet".into()),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = changes.changed() => {}
        }
    }
    Err(format!(
        "the log applier's leader did not hand the log over within {} ms (guards.barrier_ms)",
        window.as_millis()
    ))
}

/// Writes `state` as the handover of `p` (still prepared): whether it was.
async fn set_handover(link: &FleetLink, p: &Prepared, state: &str) -> Result<bool, String> {
    let written = super::fleet::update(link, |r| {
        let q = r.prepared.as_ref().filter(|q| super::fleet::same(q, p))?;
        Some(Record {
            prepared: Some(Prepared {
                handover: Some(state.to_string()),
                ..q.clone()
            }),
            ..r.clone()
        })
    })
    .await?;
    Ok(written == Some(true))
}

/// The leader's part, as its agent reads the record `r`: a handover
/// asked of it is made; one it made for a change that was then aborted is
/// undone.
pub fn lead_handover(shared: &Arc<Shared>, link: &Arc<FleetLink>, r: &Record) {
    if !leads(link) {
        return;
    }
    let handed = *link.handed();
    match &r.prepared {
        Some(p) if p.handover.as_deref() == Some("asked") && handed != Some(p.epoch) => {
            *link.handed() = Some(p.epoch);
            let (Ok(from), Ok(to)) = (p.from.parse::<Phase>(), p.to.parse::<Phase>()) else {
                return;
            };
            let (from, to) = (from.authority(), to.authority());
            let (shared, link, p) = (shared.clone(), link.clone(), p.clone());
            tokio::spawn(async move {
                let Some(log) = shared.adapter.log() else {
                    return;
                };
                let window = Duration::from_millis(p.barrier_ms);
                let state = match log.switch(&shared, from, to, Apply::Move, window).await {
                    Ok(line) => {
                        link.set_applier_role(Some((true, Some(to))));
                        format!("done: {line}")
                    }
                    Err(e) => format!("failed: {e}"),
                };
                if let Err(e) = set_handover(&link, &p, &state).await {
                    warn!(error = %e, "fleet: the log handover's outcome could not be written");
                }
            });
        }
        // The undo below is running.
        None if handed == Some(UNDOING) => {}
        // Aborted after the handover: the log goes back the way it fed
        // (`handed` stays set until it did, so no other part is taken
        // meanwhile).
        None if handed.is_some_and(|e| e > r.epoch) => {
            let Some((_, Some(source))) = link.applier_role() else {
                *link.handed() = None;
                return;
            };
            let Ok(phase) = r.phase.parse::<Phase>() else {
                *link.handed() = None;
                return;
            };
            let back = phase.authority();
            if source == back {
                *link.handed() = None;
                return;
            }
            *link.handed() = Some(UNDOING);
            let (shared, link) = (shared.clone(), link.clone());
            tokio::spawn(async move {
                if let Some(log) = shared.adapter.log() {
                    let window = Duration::from_secs(30);
                    match log.switch(&shared, source, back, Apply::Move, window).await {
                        Ok(_) => link.set_applier_role(Some((true, Some(back)))),
                        Err(e) => {
                            warn!(error = %e, "fleet: the log could not be turned back after an aborted change")
                        }
                    }
                }
                *link.handed() = None;
            });
        }
        _ => {
            if handed.is_some_and(|e| e <= r.epoch) {
                *link.handed() = None;
            }
        }
    }
}
