//! In a fleet, one instance applies the authority's log (the applier's
//! leader, elected through the fleet's store); the others follow: their
//! sessions mark their transactions as usual, and the leader, as it
//! commits each group on the mirror, NOTIFYs `turnout_applied` there with
//! the group's marks. A follower LISTENs on the mirror and completes its
//! own commits' waits from those notifications.

use super::setup;
use crate::backend::pg::{open_simple, run};
use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use turnout_control::{Phase, Side};

/// The channel the leader tells the marks it applied on.
pub const CHANNEL: &str = "turnout_applied";

/// Follows the leader's applier for `phase`: the log source is set (the
/// sessions mark their transactions) and the notifications complete them.
pub(super) async fn follow(shared: &Arc<Shared>, phase: Phase) -> Result<String, String> {
    let Some(mirror) = phase.mirror() else {
        super::stop_applier(shared).await;
        return Ok(format!("no mirror in phase {phase}"));
    };
    let authority = mirror.other();
    if let Err(why) = super::usable(shared, authority).await {
        if shared.log_source == turnout_config::MirrorSource::Log {
            return Err(format!("mirror.source = \"log\": {why}"));
        }
        super::stop_applier(shared).await;
        let line = format!("mirror source: statements (row images), because {why}");
        shared.log_choice.store(Arc::new(line.clone()));
        return Ok(line);
    }
    // What the leader published (read, never made here: the slot, the
    // publications and the event trigger are the leader's).
    view(shared, authority).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    // Listening before any commit waits on it: a notification sent before
    // the LISTEN would be missed.
    let (ready, listening) = tokio::sync::oneshot::channel();
    let listener = tokio::spawn(listen(shared.clone(), mirror, rx.clone(), ready));
    if tokio::time::timeout(Duration::from_secs(5), listening)
        .await
        .is_err()
    {
        warn!(side = %mirror, "log: not yet listening for the fleet's applier; commits do not wait until it is");
    }
    let refresh = tokio::spawn(refresh(shared.clone(), authority, rx));
    super::run_source(shared, authority, tx, vec![listener, refresh]);
    let line = format!(
        "mirror source: the log of {authority}, applied to {mirror} by the fleet's applier (this instance follows it)"
    );
    shared.log_choice.store(Arc::new(line.clone()));
    Ok(line)
}

/// The tables the log carries inserts of only (no replica identity), as
/// the leader published them on `authority`: this instance's sessions
/// mirror their UPDATEs and DELETEs themselves.
async fn view(shared: &Shared, authority: Side) -> Result<(), String> {
    let mut conn = open_simple(shared.target(authority))
        .await
        .map_err(|e| e.to_string())?;
    let rows = run(
        &mut conn,
        &format!(
            "SELECT (SELECT count(*) FROM pg_publication WHERE pubname = {full}) AS made, tablename AS name \
             FROM (SELECT NULL::name AS tablename UNION ALL \
                   SELECT tablename FROM pg_publication_tables WHERE pubname = {inserts}) t",
            full = crate::backend::pg::literal(&setup::publication(&shared.log_slot)),
            inserts = crate::backend::pg::literal(&setup::inserts_publication(&shared.log_slot)),
        ),
        authority,
    )
    .await;
    crate::backend::pg::close(&mut conn).await;
    let rows = rows.map_err(|e| e.to_string())?;
    let made = rows.iter().next().and_then(|r| r.get::<i64>("made").ok());
    if made != Some(1) {
        return Err(format!(
            "{authority} has no publication of turnout's yet (the applier's leader makes it)"
        ));
    }
    let unlogged = rows
        .iter()
        .filter_map(|r| r.text("name").ok().flatten().map(str::to_lowercase))
        .collect();
    shared.log.unlogged.store(Arc::new(unlogged));
    Ok(())
}

/// After DDL (and every 10 s): the leader's publications read again, and
/// the sessions waiting on it told.
async fn refresh(
    shared: Arc<Shared>,
    authority: Side,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = shared.log.ddl_seen.notified() => {
                // The leader's event trigger or upkeep puts a new table in.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = stop.changed() => return,
        }
        let wanted = shared.log.refresh_wanted();
        if let Err(e) = view(&shared, authority).await {
            warn!(error = %e, "log: the leader's publications could not be read");
        }
        shared.log.refreshed_upto(wanted);
    }
}

/// LISTENs on `mirror` until stopped: each notification's marks complete
/// this instance's waiting commits. While it cannot listen, commits do
/// not wait (the applier is seen as stalled).
async fn listen(
    shared: Arc<Shared>,
    mirror: Side,
    mut stop: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        if *stop.borrow() {
            return;
        }
        let listened = async {
            let mut conn = open_simple(shared.target(mirror))
                .await
                .map_err(|e| e.to_string())?;
            run(&mut conn, &format!("LISTEN {CHANNEL}"), mirror)
                .await
                .map_err(|e| e.to_string())?;
            info!(side = %mirror, "log: following the fleet's applier");
            shared.log.running();
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            loop {
                let f = conn.read().await.map_err(|e| e.to_string())?;
                if f.tag == b'A' {
                    if let Some(payload) = notification_payload(f.body()) {
                        for token in payload.split(' ').filter(|t| !t.is_empty()) {
                            shared.log.applied(token);
                        }
                    }
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        };
        tokio::select! {
            ended = listened => {
                if let Err(e) = ended {
                    warn!(error = %e, "log: cannot follow the fleet's applier; commits do not wait meanwhile");
                }
                shared.log.stall(None);
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Taking the applier over in a fleet: a walsender still streaming
/// turnout's slot belongs to a leader whose lease ended (stopped, cut off):
/// it is ended, so that this instance's applier can take the slot up from
/// where the mirror's origin says it was. Whether one was.
pub(super) async fn free_slot(shared: &Shared, authority: Side) -> bool {
    let Ok(mut conn) = open_simple(&shared.target(authority).as_replication()).await else {
        return false;
    };
    let ended = run(
        &mut conn,
        &format!(
            "SELECT pg_terminate_backend(active_pid) AS ended FROM pg_replication_slots WHERE slot_name = {} AND active_pid IS NOT NULL",
            crate::backend::pg::literal(&shared.log_slot)
        ),
        authority,
    )
    .await;
    crate::backend::pg::close(&mut conn).await;
    matches!(ended, Ok(rows) if !rows.is_empty())
}

/// A NotificationResponse's payload: pid (4 bytes), channel, payload.
fn notification_payload(body: &[u8]) -> Option<&str> {
    let rest = body.get(4..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let payload = rest.get(end + 1..)?;
    let stop = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    std::str::from_utf8(&payload[..stop]).ok()
}

/// The statements telling followers which marks a group applied: NOTIFY
/// payloads stay under PostgreSQL's 8000 bytes.
pub(super) fn notifications<'a>(tokens: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut payload = String::new();
    for t in tokens {
        if payload.len() + t.len() + 1 > 7000 {
            out.push(std::mem::take(&mut payload));
        }
        if !payload.is_empty() {
            payload.push(' ');
        }
        payload.push_str(t);
    }
    if !payload.is_empty() {
        out.push(payload);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_split_and_read_back() {
        let tokens: Vec<String> = (0..1000).map(|i| format!("0123456789abcdef:{i}")).collect();
        let parts = notifications(tokens.iter());
        assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= 7000));
        let back: Vec<&str> = parts.iter().flat_map(|p| p.split(' ')).collect();
        assert_eq!(back.len(), 1000);
        let mut body = vec![0, 0, 0, 7];
        body.extend_from_slice(b"turnout_applied\0a:1 b:2\0");
        assert_eq!(notification_payload(&body), Some("a:1 b:2"));
        assert_eq!(notification_payload(&[1, 2]), None);
    }
}
