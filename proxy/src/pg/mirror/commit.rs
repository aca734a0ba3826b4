//! COMMIT in a mirrored PostgreSQL session (simple protocol): the
//! engine's lockstep sequence (`engine::lockstep`) on this session's
//! connections: the mirror commits first, then the authority.

use super::{query, Collected, MirrorSession, Step, Stop};
use crate::engine::lockstep::{self, Interrupted, Sides};
use crate::engine::Classification;
use crate::pg::codec::{self, Severity};
use turnout_control::divergence::Divergence;

struct SimpleCommit<'s, 'a> {
    s: &'s mut MirrorSession<'a>,
    to_auth: &'s [u8],
    to_mirror: &'s [u8],
}

impl Sides for SimpleCommit<'_, '_> {
    type Stop = Stop;

    async fn settle_mirror(&mut self) -> Option<String> {
        self.s.drain_mirror(true).await;
        let side = self.s.mirror_side;
        self.s
            .deferred_failure
            .take()
            .map(|detail| format!("{side} refused one of its writes: {detail}"))
    }

    async fn mirror_commit(&mut self) -> Result<(), String> {
        let outcome = self
            .s
            .on_mirror(self.to_mirror, 1, false)
            .await
            .and_then(|c| self.s.committed(c));
        if outcome.is_err() {
            self.s.forget_applies();
        }
        outcome
    }

    async fn mirror_rollback(&mut self) {
        let _ = self.s.on_mirror(&query("ROLLBACK"), 1, false).await;
    }

    async fn authority_commit(&mut self) -> Result<Option<String>, Interrupted<Stop>> {
        let committed = match self.s.send_auth(self.to_auth).await {
            Ok(()) => self.s.relay_authority().await,
            Err(e) => Err(Stop::Authority(e)),
        };
        committed.map_err(|stop| Interrupted {
            authority_lost: match &stop {
                Stop::Authority(e) => Some(e.to_string()),
                Stop::Client(_) => None,
            },
            stop,
        })
    }

    async fn fail_both(&mut self, message: String) -> Step {
        self.s.roll_back_authority_and_fail(&message).await
    }

    fn record(&self, d: Divergence) {
        self.s.shared.records.located(d, self.to_mirror);
    }
}

impl MirrorSession<'_> {
    /// COMMIT: the mirror commits first, then the authority.
    pub(super) async fn commit(
        &mut self,
        to_auth: &[u8],
        to_mirror: &[u8],
        class: &Classification,
    ) -> Step {
        if self.log.on {
            return self.log_commit(to_auth, to_mirror, class).await;
        }
        if self.status != b'T' {
            self.drain_mirror(false).await;
            self.deferred_failure = None;
            // Nothing to commit on the authority (no transaction, or a failed
            // one that COMMIT rolls back): the mirror rolls back too.
            let rollback = query("ROLLBACK");
            let to_mirror: &[u8] = if self.status == b'E' {
                &rollback
            } else {
                to_mirror
            };
            self.send_auth(to_auth).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            if self.mirror.is_some() {
                let _ = self.on_mirror(to_mirror, 1, false).await;
            }
            return Ok(());
        }
        let policy = self.shared.mirror_policy;
        let records = self.shared.records.clone();
        let side = self.mirror_side;
        let mut sides = SimpleCommit {
            s: self,
            to_auth,
            to_mirror,
        };
        lockstep::commit(&mut sides, side, &class.fingerprint, policy, &records).await
    }

    /// Whether the mirror's answer to a COMMIT says it committed (a
    /// failed transaction answers COMMIT with ROLLBACK).
    pub(super) fn committed(&self, c: Collected) -> Result<(), String> {
        if let Some(e) = c.error {
            Err(e)
        } else if c.command_tags().any(|t| t == b"ROLLBACK") {
            Err(format!(
                "{} rolled back the transaction at COMMIT (an earlier statement failed there)",
                self.mirror_side
            ))
        } else {
            Ok(())
        }
    }

    /// The authority's connection was lost during a COMMIT the mirror had
    /// already made: the transaction may be on the mirror's side alone.
    pub(super) fn authority_lost_at_commit(&self, class: &Classification, error: &str) {
        self.shared
            .records
            .divergence(lockstep::authority_lost_at_commit(
                self.mirror_side,
                &class.fingerprint,
                error,
            ));
    }

    /// Rolls the authority's transaction back and tells the client why
    /// (`msg`), ending with ReadyForQuery(idle).
    pub(super) async fn roll_back_authority_and_fail(&mut self, msg: &str) -> Step {
        self.auth
            .send(&query("ROLLBACK"))
            .await
            .map_err(Stop::Authority)?;
        self.collect_authority().await?;
        self.queue(&codec::error_response(Severity::Error, "40003", msg));
        self.queue(&codec::ready_for_query(b'I'));
        self.flush_client().await
    }
}
