//! The mirror's connection in sync mode: statements run in step, or sent
//! ahead inside a transaction and their answers read before the next step
//! that needs the mirror in step (at the latest its COMMIT); failures under
//! `mirror.on_error`.

use super::queue;
use super::{collect, written, Checks, Collected, MirrorSession, Pending, MAX_PENDING};
use crate::engine::lockstep;
use crate::engine::{Classification, Kind, TxControl};
use crate::pg::framed::FramedError;
use bytes::Bytes;
use turnout_config::MirrorErrorPolicy;
use turnout_control::divergence::{Divergence, DivergenceKind};

impl MirrorSession<'_> {
    /// Runs `msgs` on the mirror and reads `readies` ReadyForQuery answers.
    /// `Err` carries what went wrong, in words.
    /// `fresh` says the messages start a new transaction on the mirror, so a
    /// lost connection may be replaced first.
    pub(super) async fn on_mirror(
        &mut self,
        msgs: &[u8],
        readies: usize,
        fresh: bool,
    ) -> Result<Collected, String> {
        if self.async_mirror.is_some() {
            self.enqueue(msgs, readies, fresh).await;
            return Ok(Collected {
                frames: Vec::new(),
                error: None,
                status: self.status,
            });
        }
        if self.mirror.is_none() {
            self.read_pending(true).await;
            if !fresh {
                return Err(format!(
                    "no connection to {} in this transaction",
                    self.mirror_side
                ));
            }
            self.reconnect_mirror().await?;
        }
        // Deferred statements go first, in the same write.
        let sent = self.send_outbox(msgs).await;
        self.read_pending(true).await;
        sent?;
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let run = async {
            let mut all = Collected {
                frames: Vec::new(),
                error: None,
                status: b'I',
            };
            for _ in 0..readies {
                let c = collect(m).await?;
                all.error = all.error.or(c.error);
                all.status = c.status;
                all.frames.extend(c.frames);
            }
            Ok::<_, FramedError>(all)
        };
        let outcome = tokio::time::timeout(self.shared.mirror_timeout, run).await;
        self.mirror_outcome(outcome)
    }

    /// The result of a timed read from the mirror. A lost connection or a
    /// timeout leaves its state unknown: the connection is dropped (the
    /// backend rolls back whatever was open).
    pub(super) fn mirror_outcome<T>(
        &mut self,
        outcome: Result<Result<T, FramedError>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        let detail = match outcome {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => format!("connection to {} lost: {e}", self.mirror_side),
            Err(_) => lockstep::mirror_timed_out(self.mirror_side, self.shared.mirror_timeout),
        };
        self.mirror = None;
        self.mirror_prepared.clear();
        self.forget_applies();
        Err(detail)
    }

    /// Sends `msgs` to the mirror inside an open transaction without waiting
    /// for its answers: the client goes on with the authority, and the
    /// answers are read before the next step that needs the mirror in step
    /// (at the latest the COMMIT, which the mirror makes first; the
    /// authority's row locks are held until then).
    pub(super) async fn mirror_defer(
        &mut self,
        msgs: &[u8],
        readies: usize,
        class: &Classification,
        fresh: bool,
    ) {
        self.mirror_defer_checked(msgs, readies, class, fresh, Checks::default(), msgs)
            .await
    }

    /// [`Self::mirror_defer`], with what its answers are checked against
    /// when they are read (`checks`); `sent`: the client's messages, to
    /// locate a failure in the divergence log.
    pub(super) async fn mirror_defer_checked(
        &mut self,
        msgs: &[u8],
        readies: usize,
        class: &Classification,
        fresh: bool,
        checks: Checks,
        sent: &[u8],
    ) {
        if self.async_mirror.is_some() {
            self.enqueue(msgs, readies, fresh).await;
            return;
        }
        if self.mirror.is_none() {
            let detail = format!("no connection to {} in this transaction", self.mirror_side);
            self.deferred_failed(&class.fingerprint, &detail, true, sent);
            return;
        }
        // Sent now, so the mirror applies it while the client goes on and
        // the authority's row locks are not held waiting for it at COMMIT;
        // a BEGIN waits to go with the statement after it.
        self.mirror_outbox.extend_from_slice(msgs);
        self.mirror_pending.push_back(Pending {
            readies,
            fingerprint: class.fingerprint.clone(),
            sent: Bytes::copy_from_slice(sent),
            checks,
        });
        self.pending_readies += readies;
        if self.pending_readies > MAX_PENDING {
            self.drain_mirror(true).await;
        } else if class.kind() != Kind::Transaction(TxControl::Begin) {
            // A failed send drops the connection; the pending answers are
            // then accounted for as missing when read.
            let _ = self.send_outbox(&[]).await;
        }
    }

    /// Sends the deferred statements (with `extra` after them) to the mirror.
    pub(super) async fn send_outbox(&mut self, extra: &[u8]) -> Result<(), String> {
        let mut out = std::mem::take(&mut self.mirror_outbox);
        out.extend_from_slice(extra);
        if out.is_empty() {
            return Ok(());
        }
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let sent = match tokio::time::timeout(self.shared.mirror_timeout, m.send(&out)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("connection to {} lost: {e}", self.mirror_side),
            Err(_) => format!("{} did not take the statements in time", self.mirror_side),
        };
        self.mirror = None;
        self.mirror_prepared.clear();
        self.forget_applies();
        Err(sent)
    }

    /// Reads the answers to deferred statements. `record`: failures count
    /// (false when the transaction is being rolled back on both sides anyway).
    pub(super) async fn drain_mirror(&mut self, record: bool) {
        // A failed send leaves the connection gone: each pending statement
        // is then accounted for below.
        let _ = self.send_outbox(&[]).await;
        self.read_pending(record).await;
    }

    pub(super) async fn read_pending(&mut self, record: bool) {
        while let Some(p) = self.mirror_pending.pop_front() {
            let outcome = match self.mirror.as_mut() {
                None => Err(format!("no connection to {}", self.mirror_side)),
                Some(m) => {
                    let keep = p.checks.any();
                    let read = async {
                        let mut error = None;
                        let mut frames = Vec::new();
                        for _ in 0..p.readies {
                            let c = collect(m).await?;
                            error = error.or(c.error);
                            if keep {
                                frames.extend(c.frames);
                            }
                        }
                        Ok::<_, FramedError>((error, frames))
                    };
                    let outcome = tokio::time::timeout(self.shared.mirror_timeout, read).await;
                    match self.mirror_outcome(outcome) {
                        Ok((None, frames)) => Ok(frames),
                        Ok((Some(e), _)) => Err(e),
                        Err(detail) => Err(detail),
                    }
                }
            };
            match outcome {
                Err(detail) => self.deferred_failed(&p.fingerprint, &detail, record, &p.sent),
                Ok(frames) if record && p.checks.any() => {
                    if let Some(detail) = self.check_applied(&p.checks.expects, &frames) {
                        self.deferred_failure.get_or_insert(detail);
                    }
                    if let (Some(a), Some(m)) = (p.checks.rows, written(&frames)) {
                        self.counts_agree(&p.fingerprint, a, m, &p.sent);
                    }
                }
                Ok(_) => {}
            }
        }
        self.pending_readies = 0;
    }

    /// A deferred mirror statement failed: recorded now under `record`;
    /// under `fail` the transaction fails at its COMMIT.
    pub(super) fn deferred_failed(
        &mut self,
        fingerprint: &str,
        detail: &str,
        record: bool,
        sent: &[u8],
    ) {
        self.forget_applies();
        if !record || self.mirror_holds_no_write() {
            return;
        }
        if self.shared.mirror_policy == MirrorErrorPolicy::Fail {
            self.shared.records.mirror_error();
            self.deferred_failure
                .get_or_insert_with(|| detail.to_string());
        } else {
            self.record_mirror_error(fingerprint, detail, sent);
        }
    }

    /// Counts a mirror failure of `sent` and writes it to the divergence log.
    pub(super) fn record_mirror_error(&self, fingerprint: &str, detail: &str, sent: &[u8]) {
        self.forget_applies();
        if self.mirror_holds_no_write() {
            return;
        }
        self.shared.records.mirror_error();
        self.shared.records.located(
            Divergence::new(
                DivergenceKind::MirrorError,
                self.mirror_side,
                fingerprint,
                detail,
            ),
            sent,
        );
    }

    pub(super) async fn reconnect_mirror(&mut self) -> Result<(), String> {
        let (m, key) = queue::connect_mirror(
            self.shared,
            self.mirror_side,
            &self.client_params,
            &self.replay,
        )
        .await?;
        self.mirror = Some(m);
        self.mirror_key = Some(key);
        self.mirror_prepared.clear();
        self.forget_applies();
        Ok(())
    }

    /// Records a mirror failure of `sent`; under `fail` returns true (the
    /// caller fails the client's statement and rolls back both sides instead).
    pub(super) fn mirror_failed(&self, class: &Classification, detail: &str, sent: &[u8]) -> bool {
        self.forget_applies();
        let records = &self.shared.records;
        lockstep::mirror_failed(
            self.shared.mirror_policy,
            records,
            self.mirror_side,
            &class.fingerprint,
            detail,
            |d| records.located(d, sent),
        )
    }
}
