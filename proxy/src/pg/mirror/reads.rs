//! Reads in a mirrored PostgreSQL session: served by the authority, or
//! by the mirror's side in phase `reads_new` (after the session's writes
//! there), sampled for comparison, and checked for writes taken for reads.

use super::{
    copy_fail, cstr, without_added_parses, MirrorSession, ReadSample, Step, Stop, OUT_CHUNK,
};
use crate::engine::route::Route;
use crate::engine::{Classification, Kind};
use crate::pg::codec::{self, Severity};
use crate::pg::framed::{Frame, FramedError};
use crate::pg::shadow::{self, Capture, Sample, ShadowQuery};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;
use turnout_config::MirrorErrorPolicy;
use turnout_control::Side;

impl MirrorSession<'_> {
    /// Whether to compare this read on the shadow side, with the permit to.
    pub(super) fn sample_choice(&self, class: &Classification) -> Option<OwnedSemaphorePermit> {
        let sampler = &self.shared.sampler;
        // No shadow side in a phase without a mirror.
        self.routing.phase.mirror()?;
        // A read of no table (server settings, functions) has no data to
        // compare: servers answer it differently by design.
        if class.kind() != Kind::Read || class.statements.len() != 1 || class.no_tables {
            return None;
        }
        if self.wrote_in_tx && !sampler.in_write_transactions {
            return None;
        }
        sampler.choose(&class.fingerprint)
    }

    /// A sampled read: relayed as usual, its answer captured, then checked
    /// on the shadow by a task of its own.
    pub(super) async fn sampled_read(
        &mut self,
        raw: &[u8],
        query: ShadowQuery,
        result_formats: Vec<u16>,
        class: &Classification,
        permit: OwnedSemaphorePermit,
    ) -> Step {
        self.send_auth(raw).await.map_err(Stop::Authority)?;
        let mut capture = Capture::default();
        self.relay_authority_capturing(Some(&mut capture)).await?;
        let sample = ReadSample {
            query,
            result_formats,
            permit,
        };
        self.check_sample(sample, class, capture, self.auth_side());
        Ok(())
    }

    /// Hands a captured read to the shadow check; `target` served it.
    pub(super) fn check_sample(
        &self,
        sample: ReadSample,
        class: &Classification,
        capture: Capture,
        target: Side,
    ) {
        shadow::spawn(
            self.shared_arc.clone(),
            Sample {
                fingerprint: class.fingerprint.clone(),
                query: sample.query,
                target,
                shadow: target.other(),
                capture,
                result_formats: sample.result_formats,
                params: self.client_params.clone(),
                settings: self.replay.clone(),
            },
            sample.permit,
        );
    }

    /// The most bytes of a read's answer kept for its comparison.
    pub(super) fn capture_limit(&self) -> usize {
        self.shared.sampler.max_result_bytes
    }

    /// Whether reads go to the mirror's side in this transaction
    /// (phase `reads_new`).
    pub(super) fn reads_from_mirror(&self) -> bool {
        // From the log, the mirror has a transaction's writes only once it
        // committed: its own reads after them stay on the authority.
        // Nor while it lacks a commit answered without it (the applier
        // stalled): reads then stay on the authority.
        self.routing.phase.read_target() == self.mirror_side
            && !(self.log.on && (self.wrote_in_tx || !self.shared.log.current()))
    }

    /// A read in phase `reads_new`: served by the mirror's side, after the
    /// answers to this transaction's writes there (so it sees them). When the
    /// mirror cannot be reached the authority serves it: the client gets an
    /// answer either way.
    pub(super) async fn read_on_mirror(
        &mut self,
        unit: &[u8],
        to_auth: &[u8],
        sample: Option<ReadSample>,
        class: &Classification,
    ) -> Step {
        let fresh = self.status == b'I';
        let status = self.status;
        let mut capture = Capture::default();
        let max = self.capture_limit();
        let mut added = std::mem::take(&mut self.added_parses);
        if self.async_mirror.is_some() {
            match self.ask_queued(unit, fresh).await {
                Ok(c) => {
                    self.answered_by = self.mirror_side;
                    if let Some(f) = c.frames.iter().find(|f| f.tag == b'E') {
                        self.read_failed_on_target(f.body());
                    }
                    let c = without_added_parses(c, std::mem::take(&mut added));
                    for f in &c.frames {
                        capture.see(f, max);
                        self.check_unmirrored(f, self.mirror_side, false);
                    }
                    self.unmirrored = None;
                    self.relay_collected(&c, status).await?;
                    if let Some(s) = sample {
                        self.check_sample(s, class, capture, self.mirror_side);
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.read_target_failed();
                    return self.read_fallback(to_auth, &e).await;
                }
            }
        }
        if self.mirror.is_none() && fresh {
            let _ = self.reconnect_mirror().await;
        }
        self.drain_mirror(true).await;
        let sent = match self.mirror.as_mut() {
            None => Err("no connection".to_string()),
            Some(m) => m.send(unit).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = sent {
            self.mirror = None;
            self.read_target_failed();
            return self.read_fallback(to_auth, &e).await;
        }
        self.answered_by = self.mirror_side;
        // Whether any of the answer went to the client.
        let mut answered = false;
        loop {
            let read = match self.mirror.as_mut() {
                Some(m) => m.read().await,
                None => Err(FramedError::Closed),
            };
            let f = match read {
                // A connection that died unnoticed (cut while the session
                // did not use it) fails at its first answer: nothing went
                // out, so the authority serves the read, as when the send
                // fails.
                Err(e) if !answered => {
                    self.mirror = None;
                    self.read_target_failed();
                    self.answered_by = self.auth_side();
                    return self.read_fallback(to_auth, &e.to_string()).await;
                }
                // A notice before the answer is not part of it; the one a
                // server sends as it shuts down (left unread on an idle
                // connection) is not the client's at all.
                Ok(f) if !answered && f.tag == b'N' => {
                    if !ends_connection(f.body()) {
                        self.queue(&f.raw);
                    }
                    continue;
                }
                // As when the connection is found closed: the error a server
                // sent as it went down.
                Ok(f) if !answered && f.tag == b'E' && ends_connection(f.body()) => {
                    let why = codec::error_fields(f.body())
                        .remove(&b'M')
                        .unwrap_or_default();
                    self.mirror = None;
                    self.read_target_failed();
                    self.answered_by = self.auth_side();
                    return self.read_fallback(to_auth, &why).await;
                }
                // A relation a client created on the authority alone
                // (`mirror.ddl = "authority_only"`): the authority serves
                // the read, as it would without turnout; no failure of the
                // read target.
                Ok(f) if fresh && !answered && f.tag == b'E' && self.names_held(f.body()) => {
                    while let Some(m) = self.mirror.as_mut() {
                        match m.read().await {
                            Ok(z) if z.tag == b'Z' => break,
                            Ok(_) => {}
                            Err(_) => self.mirror = None,
                        }
                    }
                    self.answered_by = self.auth_side();
                    return self
                        .read_fallback(
                            to_auth,
                            "it names a relation a client created on the authority alone (mirror.ddl = authority_only)",
                        )
                        .await;
                }
                Ok(f) => f,
                Err(e) => {
                    // Rows have gone out already: the read fails, clearly.
                    self.mirror = None;
                    self.read_target_failed();
                    let msg = format!(
                        "turnout: connection to {} lost during a read: {e}",
                        self.mirror_side
                    );
                    self.queue(&codec::error_response(Severity::Error, "08006", &msg));
                    self.queue(&codec::ready_for_query(status));
                    return self.flush_client().await;
                }
            };
            if f.tag == b'1' && added.pop_front() == Some(true) {
                continue;
            }
            answered = true;
            capture.see(&f, max);
            self.check_unmirrored(&f, self.mirror_side, false);
            if f.tag == b'E' {
                self.read_failed_on_target(f.body());
            }
            match f.tag {
                b'Z' => {
                    self.unmirrored = None;
                    self.queue(&codec::ready_for_query(status));
                    self.flush_client().await?;
                    break;
                }
                b'G' => {
                    // A read does not copy in; refuse it there.
                    if let Some(m) = self.mirror.as_mut() {
                        let _ = m.send(&copy_fail("turnout: not a read")).await;
                    }
                }
                _ => {
                    self.queue(&f.raw);
                    if self.out.len() >= OUT_CHUNK {
                        self.flush_client().await?;
                    }
                }
            }
        }
        if let Some(s) = sample {
            self.check_sample(s, class, capture, self.mirror_side);
        }
        Ok(())
    }

    /// A read failed on the read target with this ErrorResponse. The
    /// target's own failure counts at once; an object or privilege it lacks
    /// (SQLSTATE classes 42, 3D, 3F) counts once the authority has run the
    /// same read without an error (a read of a table no side has is the
    /// client's); any other error is the client's own (a division by zero,
    /// its statement timeout) and never counts.
    pub(super) fn read_failed_on_target(&mut self, body: &[u8]) {
        if codec::is_server_failure(body) {
            self.read_target_failed();
            return;
        }
        let mut fields = codec::error_fields(body);
        let code = fields.remove(&b'C').unwrap_or_default();
        let message = fields.remove(&b'M').unwrap_or_default();
        if !["42", "3D", "3F"].iter().any(|c| code.starts_with(c))
            || self.shared.pg.lacks_held(&code, &message)
        {
            return;
        }
        if let Some(query) = self.read_query.take() {
            shadow::confirm_read_failure(
                self.shared_arc.clone(),
                query,
                self.mirror_side,
                self.client_params.clone(),
                self.replay.clone(),
            );
        }
    }

    /// Whether an ErrorResponse of the read target says a relation is
    /// missing that a client's DDL created on the authority alone.
    fn names_held(&self, body: &[u8]) -> bool {
        let mut fields = codec::error_fields(body);
        let code = fields.remove(&b'C').unwrap_or_default();
        let message = fields.remove(&b'M').unwrap_or_default();
        self.shared.pg.lacks_held(&code, &message)
    }

    /// The side serving reads (phase `reads_new`) failed one: counted for
    /// the watch window. Only its own failures count (connection lost or
    /// refused, shutdown, crash), never an error the client's SQL caused.
    pub(super) fn read_target_failed(&self) {
        self.shared
            .coord
            .mirror_read_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(super) async fn read_fallback(&mut self, to_auth: &[u8], why: &str) -> Step {
        warn!(side = %self.mirror_side, reason = %why, "read served by the authority: the read target cannot be reached");
        self.send_auth(to_auth).await.map_err(Stop::Authority)?;
        self.relay_authority().await.map(|_| ())
    }

    /// The server's own answer is the ground truth: a CommandComplete
    /// reporting written rows for a unit that ran on `ran_on` alone is a
    /// divergence, recorded with its table and fingerprint; the shape is a
    /// write from then on; under `mirror.on_error = "fail"` an open
    /// transaction fails at its COMMIT (rolled back on both sides).
    pub(super) fn check_unmirrored(&mut self, f: &Frame, ran_on: Side, copied_in: bool) {
        if f.tag != b'C' || self.unmirrored.is_none() {
            return;
        }
        if codec::written_rows(f.body(), copied_in) == 0 {
            return;
        }
        let Some(sent) = self.unmirrored.take() else {
            return;
        };
        let tag = cstr(f.body()).map(|(t, _)| t).unwrap_or_default();
        let (d, detail) = self.shared.unmirrored_write(
            &self.unit_class.fingerprint,
            ran_on,
            &format!("answered \"{tag}\""),
        );
        self.shared.records.located(d, &sent);
        if self.shared.mirror_policy == MirrorErrorPolicy::Fail && self.status != b'I' {
            self.deferred_failure.get_or_insert(detail);
        }
    }

    /// Marks `raw` as running on one side alone (route `Authority`) unless a
    /// rule says so on purpose (`never_mirror`, `old`, `new`).
    pub(super) fn expect_no_writes(&mut self, route: Route, class: &Classification, raw: &Bytes) {
        // (`finalized` has no other side: everything is the authority's.)
        // (From the log, whatever the authority writes reaches the mirror.)
        let mirrored_phase = self.routing.phase.mirror().is_some() && !self.log.on;
        self.unmirrored =
            (route == Route::Authority && !class.ruled_to_one_side() && mirrored_phase)
                .then(|| raw.clone());
    }
}

/// An ErrorResponse or NoticeResponse the server sends as it closes the
/// connection: FATAL or PANIC, or a shutdown's (SQLSTATE class 57P: admin or
/// crash shutdown, which PostgreSQL's immediate shutdown sends as a
/// WARNING).
fn ends_connection(body: &[u8]) -> bool {
    let fields = codec::error_fields(body);
    let severity = fields.get(&b'V').or_else(|| fields.get(&b'S'));
    severity.is_some_and(|s| s == "FATAL" || s == "PANIC")
        || fields.get(&b'C').is_some_and(|c| c.starts_with("57P"))
}
