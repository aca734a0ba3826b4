//! Reads in a mirrored MySQL session: served by the authority, or by the
//! mirror's side in phase `reads_new` (behind the session's own writes
//! there), sampled for comparison, and checked for writes that were taken
//! for reads.

use super::{MyMirror, Stop, COM_QUERY, COM_STMT_PREPARE};
use crate::engine::{Classification, Kind};
use crate::mysql::packet::{encode, err_payload, is_server_failure_code, PacketError};
use crate::mysql::queue::Work;
use crate::mysql::response::{self, Answer, Expect};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;
use turnout_config::MirrorErrorPolicy;
use turnout_control::Side;

impl MyMirror<'_> {
    /// A read in phase `reads_new`: served by the mirror's side (inside the
    /// same transaction there, so it sees this session's writes). When the
    /// mirror cannot be reached the authority serves it.
    pub(super) async fn read_on_mirror(
        &mut self,
        packet: &[u8],
        keep: usize,
    ) -> Result<(Answer, Side), Stop> {
        if self.queue.is_some() {
            // Behind this session's queued writes, so it sees them.
            match self.ask_queued(packet).await {
                Ok(a) => {
                    if a.error_code.is_some_and(is_server_failure_code) {
                        self.read_target_failed();
                    }
                    self.relay(&a).await?;
                    return Ok((a, self.mirror_side));
                }
                Err(e) => {
                    self.read_target_failed();
                    warn!(side = %self.mirror_side, reason = %e, "read served by the authority: the read target failed");
                    let a = self.stream_from_auth(packet, keep).await?;
                    return Ok((a, self.mirror_side.other()));
                }
            }
        }
        if let Err(e) = self.send_to_mirror(packet).await {
            self.drop_mirror();
            self.read_target_failed();
            warn!(side = %self.mirror_side, reason = %e, "read served by the authority: the read target cannot be reached");
            let a = self.stream_from_auth(packet, keep).await?;
            return Ok((a, self.mirror_side.other()));
        }
        let Some(m) = self.mirror.as_mut() else {
            return Err(Stop::ReadTarget(PacketError::Closed));
        };
        match response::stream(m, Expect::Result, &mut self.client.stream, keep).await {
            Ok(a) => {
                if a.error_code.is_some_and(is_server_failure_code) {
                    self.read_target_failed();
                }
                Ok((a, self.mirror_side))
            }
            Err(response::StreamError::Sink(e)) => Err(Stop::Client(e.into())),
            Err(response::StreamError::Source { error, sent }) => {
                self.drop_mirror();
                self.read_target_failed();
                if sent {
                    return Err(Stop::ReadTarget(error));
                }
                warn!(side = %self.mirror_side, reason = %error, "read served by the authority: the read target failed");
                let a = self.stream_from_auth(packet, keep).await?;
                Ok((a, self.mirror_side.other()))
            }
        }
    }

    /// Sends `packet` to the mirror, connecting first when the session is
    /// between transactions; `Err` says why it could not.
    pub(super) async fn send_to_mirror(&mut self, packet: &[u8]) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        if self.mirror.is_none() && !self.in_tx {
            self.reconnect_mirror().await?;
        }
        let p = self.mirror_packet(packet).await?;
        let m = self.mirror.as_mut().ok_or("no connection")?;
        m.stream
            .write_all(&encode(0, &p).0)
            .await
            .map_err(|e| e.to_string())
    }

    /// A statement a rule (`mirror.rules` action `old` or `new`) sends to
    /// the mirror's side alone: the client gets that side's answer, or an
    /// error naming the side when it cannot run it.
    pub(super) async fn mirror_only(&mut self, packet: &[u8]) -> Result<(), Stop> {
        if self.queue.is_some() {
            match self.ask_queued(packet).await {
                Ok(a) => {
                    self.answered_by = self.mirror_side;
                    return self.relay(&a).await;
                }
                Err(e) => {
                    let msg = format!(
                        "turnout: a rule (mirror.rules) sends this statement to {} alone, which could not run it: {e}",
                        self.mirror_side
                    );
                    return self.tell(&err_payload(1105, "HY000", &msg)).await;
                }
            }
        }
        let failed = match self.send_to_mirror(packet).await {
            Err(e) => e,
            Ok(()) => {
                let Some(m) = self.mirror.as_mut() else {
                    return Err(Stop::ReadTarget(PacketError::Closed));
                };
                match response::stream(m, Expect::Result, &mut self.client.stream, 0).await {
                    Ok(_) => {
                        self.answered_by = self.mirror_side;
                        return Ok(());
                    }
                    Err(response::StreamError::Sink(e)) => return Err(Stop::Client(e.into())),
                    Err(response::StreamError::Source { error, sent: true }) => {
                        self.drop_mirror();
                        return Err(Stop::ReadTarget(error));
                    }
                    Err(response::StreamError::Source { error, .. }) => error.to_string(),
                }
            }
        };
        self.drop_mirror();
        let msg = format!(
            "turnout: a rule (mirror.rules) sends this statement to {} alone, which could not run it: {failed}",
            self.mirror_side
        );
        self.tell(&err_payload(1105, "HY000", &msg)).await
    }

    /// Async mode: runs the client's `packet` on the mirror behind this
    /// session's queued work and waits for its answer.
    pub(super) async fn ask_queued(&mut self, packet: &[u8]) -> Result<Answer, String> {
        let p = self.mirror_packet(packet).await?;
        let fresh = !self.in_tx;
        let Some(q) = self.queue.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let reply = q
            .ask(
                Work::Commands(vec![p]),
                &Arc::default(),
                fresh,
                &self.replay,
            )
            .await?;
        if let Some(why) = reply.refused {
            return Err(why);
        }
        reply
            .answers
            .into_iter()
            .next()
            .ok_or_else(|| format!("no answer from {}", self.mirror_side))
    }

    /// The side serving reads (phase `reads_new`) failed one: counted for
    /// the watch window. Only its own failures count (connection lost or
    /// refused, shutdown), never an error the client's SQL caused.
    pub(super) fn read_target_failed(&self) {
        self.shared
            .coord
            .mirror_read_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A permit to compare this read on the other side, when it is sampled
    /// (text-protocol reads; reads in a transaction that wrote only with
    /// `sampling.in_write_transactions`).
    pub(super) fn sample_permit(
        &self,
        packet: &[u8],
        class: &Classification,
    ) -> Option<OwnedSemaphorePermit> {
        let sampler = &self.shared.sampler;
        if self.routing.phase.mirror().is_none()
            || packet.first() != Some(&COM_QUERY)
            || (self.wrote && !sampler.in_write_transactions)
            || class.no_tables
        {
            // (A read of no table, such as a driver's `SELECT @@socket`, has
            // no data to compare: servers answer it differently by design.)
            return None;
        }
        sampler.choose(&class.fingerprint)
    }

    /// A sampled read the client got from `target`: compared on the other
    /// side off the client's path.
    pub(super) fn sample(
        &self,
        class: &Classification,
        sql: &str,
        answer: &Answer,
        target: Side,
        permit: OwnedSemaphorePermit,
    ) {
        let sampler = &self.shared.sampler;
        if answer.error.is_some() {
            return;
        }
        if answer.packets.is_empty() {
            sampler.log.skipped(&class.fingerprint, "result_too_large");
            return;
        }
        let rows = match crate::mysql::shadow::result_set(answer) {
            Ok(r) => r,
            Err(e) => {
                sampler.log.skipped(&class.fingerprint, e.skip_reason());
                return;
            }
        };
        crate::mysql::shadow::spawn(
            self.shared_arc.clone(),
            crate::mysql::shadow::Sample {
                fingerprint: class.fingerprint.clone(),
                sql: sql.to_string(),
                target,
                shadow: target.other(),
                rows,
                legs: self.legs.clone(),
                settings: self.replay.clone(),
            },
            permit,
        );
    }

    /// The server's own answer is the ground truth: a statement turnout ran
    /// on `ran_on` alone as a read (or as something that changes no rows)
    /// whose OK packets report affected rows is a divergence, recorded with
    /// its table and fingerprint; its shape is a write from then on; under
    /// `mirror.on_error = "fail"` an open transaction fails at its COMMIT
    /// (rolled back on both sides). Rules that keep a shape on one side on
    /// purpose (`never_mirror`, `old`, `new`) are left alone.
    pub(super) fn check_unmirrored(
        &mut self,
        a: &Answer,
        ran_on: Side,
        class: &Classification,
        packet: &[u8],
    ) {
        if a.affected_total == 0
            || class.ruled_to_one_side()
            || self.routing.phase.mirror().is_none()
            || !matches!(class.kind(), Kind::Read | Kind::LockingRead | Kind::Other)
        {
            return;
        }
        let (mut d, detail) = self.shared.unmirrored_write(
            &class.fingerprint,
            ran_on,
            &format!("reported {} affected row(s)", a.affected_total),
        );
        let sql = self.packet_sql(packet);
        let at = crate::engine::locate::locate_text(&sql.replace('`', "\""));
        d.table = at.table.or_else(|| class.insert_table.clone());
        d.key = at.key;
        if self.shared.records.log_statements {
            d.statement = Some(sql);
        }
        self.shared.records.divergence(d);
        if self.shared.mirror_policy == MirrorErrorPolicy::Fail && self.in_tx {
            self.unmirrored_in_tx.get_or_insert(detail);
        }
    }

    /// Runs `packet` on the authority and streams its answer to the client;
    /// the answer's packets are kept when they fit in `keep` bytes.
    pub(super) async fn stream_from_auth(
        &mut self,
        packet: &[u8],
        keep: usize,
    ) -> Result<Answer, Stop> {
        use tokio::io::AsyncWriteExt;
        self.auth
            .stream
            .write_all(&encode(0, &self.for_auth(packet)).0)
            .await
            .map_err(|e| Stop::Authority(e.into()))?;
        let a = response::stream(
            &mut self.auth,
            Expect::Result,
            &mut self.client.stream,
            keep,
        )
        .await
        .map_err(|e| match e {
            response::StreamError::Source { error, .. } => Stop::Authority(error),
            response::StreamError::Sink(e) => Stop::Client(e.into()),
        })?;
        self.note_auth(&a).await;
        Ok(a)
    }

    /// Runs `packet` on the authority alone and relays the answer; the
    /// answer of a statement (not of a PREPARE) is returned.
    pub(super) async fn authority(&mut self, packet: &[u8]) -> Result<Option<Answer>, Stop> {
        let expect = if packet.first() == Some(&COM_STMT_PREPARE) {
            Expect::Prepare
        } else {
            Expect::Result
        };
        if expect == Expect::Prepare {
            let a = self
                .on_auth(&encode(0, &self.for_auth(packet)).0, expect)
                .await?;
            return self.relay(&a).await.map(|_| None);
        }
        self.stream_from_auth(packet, 0).await.map(Some)
    }
}
