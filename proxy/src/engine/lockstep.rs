//! The lockstep sequence of sync mirroring, for both protocols: a
//! transaction's COMMIT reaches the mirror first and the authority after,
//! so a transaction the client was told committed is on both sides (or
//! recorded), and one the mirror could not take is rolled back on both
//! under `mirror.on_error = "fail"`. Also the policy for a failure on the
//! mirror and the records a COMMIT can leave, written once.
//!
//! The protocol adapters implement [`Sides`] (how a COMMIT or ROLLBACK is
//! sent and answered on their connections and told to the client); the
//! order of the steps and what each failure leads to are here.

use super::records::Records;
use std::future::Future;
use tracing::warn;
use turnout_config::MirrorErrorPolicy;
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::Side;

/// A step on the authority that did not finish: why the session stops, and
/// the connection error when the authority's connection was lost.
pub struct Interrupted<E> {
    pub stop: E,
    pub authority_lost: Option<String>,
}

/// The two sides of a session, as the commit sequence drives them.
pub trait Sides {
    /// Why the session stops (the adapter's own).
    type Stop;

    /// Reads what the mirror still owes for the transaction; a failure
    /// that fails it (`mirror.on_error = "fail"`: a write of it reached one
    /// side alone), if any.
    fn settle_mirror(&mut self) -> impl Future<Output = Option<String>>;
    /// The mirror runs the client's COMMIT. `Err`: it did not commit.
    fn mirror_commit(&mut self) -> impl Future<Output = Result<(), String>>;
    /// The mirror rolls its part of the transaction back (best effort).
    fn mirror_rollback(&mut self) -> impl Future<Output = ()>;
    /// The authority runs the client's COMMIT and the client gets its
    /// answer. `Ok(Some)`: the authority refused it (its error).
    fn authority_commit(
        &mut self,
    ) -> impl Future<Output = Result<Option<String>, Interrupted<Self::Stop>>>;
    /// The authority rolls back and the client is told `message`.
    fn fail_both(&mut self, message: String) -> impl Future<Output = Result<(), Self::Stop>>;
    /// Records a failure of the mirror with where it lies.
    fn record(&self, d: Divergence);
}

/// What the client is told when its transaction was rolled back on both
/// sides (`reason`: what happened on the mirror).
pub fn rolled_back_on_both(reason: &str) -> String {
    format!(
        "turnout: the transaction was rolled back on both sides (mirror.on_error = fail): {reason}"
    )
}

/// A failure of the mirror on the session's statement: under `fail`,
/// counted and logged, and true (the caller fails the statement); under
/// `record`, counted and recorded by `record` as `mirror_error`, and false.
pub fn mirror_failed(
    policy: MirrorErrorPolicy,
    records: &Records,
    side: Side,
    fingerprint: &str,
    detail: &str,
    record: impl FnOnce(Divergence),
) -> bool {
    records.mirror_error();
    if policy == MirrorErrorPolicy::Fail {
        let detail = records.loggable(detail);
        warn!(%side, %fingerprint, %detail, "mirror failed; statement failed (mirror.on_error = fail)");
        return true;
    }
    record(Divergence::new(
        DivergenceKind::MirrorError,
        side,
        fingerprint,
        detail,
    ));
    false
}

/// What a mirror that did not answer in time is recorded with.
pub fn mirror_timed_out(side: Side, timeout: std::time::Duration) -> String {
    format!(
        "{side} did not answer within {} ms (mirror.statement_timeout_ms)",
        timeout.as_millis()
    )
}

/// The authority refused a COMMIT the mirror had made.
pub fn authority_commit_failed(side: Side, fingerprint: &str, error: &str) -> Divergence {
    Divergence::new(
        DivergenceKind::AuthorityCommitFailed,
        side,
        fingerprint,
        &format!("the authority's COMMIT failed after the mirror committed: {error}"),
    )
}

/// The authority's connection was lost during a COMMIT the mirror (`side`)
/// had made: the transaction may be on the mirror's side alone.
pub fn authority_lost_at_commit(side: Side, fingerprint: &str, error: &str) -> Divergence {
    Divergence::new(
        DivergenceKind::AuthorityCommitFailed,
        side,
        fingerprint,
        &format!(
            "the connection to the authority was lost during its COMMIT, after {side} committed: the transaction may be on {side} only ({error}); verify finds it"
        ),
    )
}

/// A client's COMMIT of an open transaction: what the mirror owes is read,
/// the mirror commits, then the authority. Each failure leads where
/// `policy` says, and nothing of it goes unrecorded.
pub async fn commit<S: Sides>(
    s: &mut S,
    side: Side,
    fingerprint: &str,
    policy: MirrorErrorPolicy,
    records: &Records,
) -> Result<(), S::Stop> {
    if let Some(reason) = s.settle_mirror().await {
        s.mirror_rollback().await;
        return s.fail_both(rolled_back_on_both(&reason)).await;
    }
    let refused = s.mirror_commit().await.err();
    if let Some(detail) = &refused {
        if policy == MirrorErrorPolicy::Fail
            && mirror_failed(policy, records, side, fingerprint, detail, |d| s.record(d))
        {
            let reason = format!("{side} could not commit it: {detail}");
            return s.fail_both(rolled_back_on_both(&reason)).await;
        }
    }
    // Under `record`, the mirror's refusal is judged by the authority's
    // answer: refused there too (a deferred constraint, a serialization
    // failure of the client's own), the transaction is on neither side and
    // the client has the authority's error, as directly: nothing diverged.
    let mirror_alone = |s: &S, detail: &str| {
        mirror_failed(policy, records, side, fingerprint, detail, |d| s.record(d));
    };
    match s.authority_commit().await {
        Ok(None) => {
            if let Some(detail) = &refused {
                mirror_alone(s, detail);
            }
            Ok(())
        }
        Ok(Some(error)) => {
            match &refused {
                Some(detail) => {
                    tracing::debug!(%side, %fingerprint, mirror = %records.loggable(detail), authority = %records.loggable(&error), "COMMIT refused on both sides: the client's own error");
                }
                None => s.record(authority_commit_failed(side, fingerprint, &error)),
            }
            Ok(())
        }
        Err(i) => {
            match (&refused, i.authority_lost) {
                // The mirror did not commit; the authority may have.
                (Some(detail), _) => mirror_alone(s, detail),
                (None, Some(error)) => {
                    s.record(authority_lost_at_commit(side, fingerprint, &error))
                }
                (None, None) => {}
            }
            Err(i.stop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fake sides: each step is logged; `script` says how steps end.
    #[derive(Default)]
    struct Fake {
        log: Vec<String>,
        owed: Option<String>,
        mirror_commit: Option<String>,
        authority: Option<Result<String, String>>,
        records: Mutex<Vec<Divergence>>,
    }

    impl Sides for Fake {
        type Stop = String;
        async fn settle_mirror(&mut self) -> Option<String> {
            self.log.push("mirror: read what it owes".into());
            self.owed.take()
        }
        async fn mirror_commit(&mut self) -> Result<(), String> {
            self.log.push("mirror: COMMIT".into());
            match self.mirror_commit.take() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        async fn mirror_rollback(&mut self) {
            self.log.push("mirror: ROLLBACK".into());
        }
        async fn authority_commit(&mut self) -> Result<Option<String>, Interrupted<String>> {
            self.log.push("authority: COMMIT".into());
            match self.authority.take() {
                None => Ok(None),
                Some(Ok(refused)) => Ok(Some(refused)),
                Some(Err(lost)) => Err(Interrupted {
                    stop: "stop".into(),
                    authority_lost: Some(lost),
                }),
            }
        }
        async fn fail_both(&mut self, message: String) -> Result<(), String> {
            self.log.push("authority: ROLLBACK".into());
            self.log.push(format!("client: {message}"));
            Ok(())
        }
        fn record(&self, d: Divergence) {
            self.records.lock().unwrap().push(d);
        }
    }

    fn run(
        mut fake: Fake,
        policy: MirrorErrorPolicy,
    ) -> (Result<(), String>, Vec<String>, Vec<Divergence>, Records) {
        let records = Records::new(None, false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcome = rt.block_on(commit(&mut fake, Side::New, "commit", policy, &records));
        let recorded = fake.records.into_inner().unwrap();
        (outcome, fake.log, recorded, records)
    }

    #[test]
    fn the_mirror_commits_before_the_authority() {
        let (outcome, log, recorded, _) = run(Fake::default(), MirrorErrorPolicy::Record);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            log,
            [
                "mirror: read what it owes",
                "mirror: COMMIT",
                "authority: COMMIT"
            ]
        );
        assert!(recorded.is_empty());
    }

    #[test]
    fn a_write_the_mirror_missed_rolls_back_both_sides() {
        let fake = Fake {
            owed: Some("new refused one of its writes: duplicate key".into()),
            ..Fake::default()
        };
        let (outcome, log, _, _) = run(fake, MirrorErrorPolicy::Fail);
        assert_eq!(outcome, Ok(()));
        assert_eq!(log[1..3], ["mirror: ROLLBACK", "authority: ROLLBACK"]);
        assert!(log[3].contains("rolled back on both sides"), "{log:?}");
        assert!(log[3].contains("duplicate key"), "{log:?}");
        assert!(!log.iter().any(|l| l.contains("COMMIT")), "{log:?}");
    }

    #[test]
    fn a_failed_mirror_commit_is_recorded_and_the_authority_commits_under_record() {
        let fake = Fake {
            mirror_commit: Some("serialization failure".into()),
            ..Fake::default()
        };
        let (outcome, log, recorded, records) = run(fake, MirrorErrorPolicy::Record);
        assert_eq!(outcome, Ok(()));
        assert_eq!(log.last().map(String::as_str), Some("authority: COMMIT"));
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].kind, DivergenceKind::MirrorError);
        assert_eq!(recorded[0].detail, "serialization failure");
        assert_eq!(records.mirror_error_count(), 1);
    }

    #[test]
    fn a_failed_mirror_commit_rolls_back_the_authority_under_fail() {
        let fake = Fake {
            mirror_commit: Some("serialization failure".into()),
            ..Fake::default()
        };
        let (outcome, log, recorded, records) = run(fake, MirrorErrorPolicy::Fail);
        assert_eq!(outcome, Ok(()));
        assert_eq!(log[2], "authority: ROLLBACK");
        assert!(log[3].contains("new could not commit it: serialization failure"));
        assert!(!log.contains(&"authority: COMMIT".to_string()));
        assert!(recorded.is_empty(), "the client is told; nothing diverged");
        assert_eq!(records.mirror_error_count(), 1);
    }

    #[test]
    fn a_commit_refused_on_both_sides_is_the_client_s_error_not_a_divergence() {
        let fake = Fake {
            mirror_commit: Some("violates foreign key constraint (23503)".into()),
            authority: Some(Ok("violates foreign key constraint (23503)".into())),
            ..Fake::default()
        };
        let (outcome, log, recorded, records) = run(fake, MirrorErrorPolicy::Record);
        assert_eq!(outcome, Ok(()));
        assert_eq!(log.last().map(String::as_str), Some("authority: COMMIT"));
        assert!(recorded.is_empty(), "{recorded:?}");
        assert_eq!(records.mirror_error_count(), 0);
    }

    #[test]
    fn an_authority_refusing_its_commit_after_the_mirror_is_recorded() {
        let fake = Fake {
            authority: Some(Ok("could not serialize access".into())),
            ..Fake::default()
        };
        let (outcome, _, recorded, _) = run(fake, MirrorErrorPolicy::Record);
        assert_eq!(outcome, Ok(()));
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].kind, DivergenceKind::AuthorityCommitFailed);
        assert!(recorded[0].detail.contains("could not serialize access"));
    }

    #[test]
    fn an_authority_lost_during_its_commit_is_recorded_and_stops_the_session() {
        let fake = Fake {
            authority: Some(Err("connection reset".into())),
            ..Fake::default()
        };
        let (outcome, _, recorded, _) = run(fake, MirrorErrorPolicy::Fail);
        assert_eq!(outcome, Err("stop".into()));
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].kind, DivergenceKind::AuthorityCommitFailed);
        assert!(recorded[0]
            .detail
            .contains("may be on new only (connection reset)"));
    }
}
