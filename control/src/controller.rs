//! Phase changes: which flips this build can make, persisting each one
//! before it takes effect, and an audit line for every mutating command.

use crate::routing::{Phase, Routing, RoutingState};
use crate::state::{Saved, StateError, StateFile};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a flip, rollback or dry run did or would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub from: String,
    pub to: String,
    pub epoch: u64,
    pub dry_run: bool,
    /// What else happened on the way (a barrier's wait, sequences moved).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What the guards look at: counts over their window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Reads compared on the shadow.
    pub compared: u64,
    /// Confirmed mismatches among them.
    pub mismatches: u64,
    pub mirror_errors: u64,
    /// Reads are being sampled now (the default minimum of compared reads
    /// applies).
    #[serde(skip)]
    pub sampling: bool,
}

/// `guards.min_compared_reads` when the config leaves it out and reads are
/// sampled: a flip is never judged on no comparison at all.
pub const DEFAULT_MIN_COMPARED_READS: u64 = 100;

/// The minimum of compared reads a flip needs: `configured`
/// (`guards.min_compared_reads`), else the default while reads are sampled,
/// else none.
pub fn min_compared_reads(configured: Option<u64>, sampling: bool) -> u64 {
    match configured {
        Some(n) => n,
        None if sampling => DEFAULT_MIN_COMPARED_READS,
        None => 0,
    }
}

/// The guards' limits (config `[guards]`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GuardLimits {
    pub window_secs: u64,
    /// `None`: the default (a minimum while reads are sampled).
    pub min_compared_reads: Option<u64>,
    pub max_mismatch_rate: f64,
    pub max_mirror_errors: u64,
    /// After a flip: how long to watch the promoted side (0: off), and how
    /// many failed reads there make turnout roll back by itself.
    pub watch_secs: u64,
    pub abort_errors: u64,
    /// How long a change of authority holds new transactions at most.
    pub barrier_ms: u64,
}

impl GuardLimits {
    /// Every reason `figures` fail the guards, in words.
    pub fn failures(&self, f: &Figures) -> Vec<String> {
        let w = self.window_secs;
        let mut out = Vec::new();
        let min = min_compared_reads(self.min_compared_reads, f.sampling);
        let why = if self.min_compared_reads.is_none() && f.sampling {
            ", the default while reads are sampled"
        } else {
            ""
        };
        if f.compared < min {
            out.push(format!(
                "only {} read(s) compared in the last {w} s (guards.min_compared_reads = {min}{why})",
                f.compared
            ));
        }
        if f.compared > 0 {
            let rate = f.mismatches as f64 / f.compared as f64;
            if rate > self.max_mismatch_rate {
                out.push(format!(
                    "{} confirmed mismatch(es) in {} compared read(s) in the last {w} s: rate {rate:.4} above guards.max_mismatch_rate = {}",
                    f.mismatches, f.compared, self.max_mismatch_rate
                ));
            }
        }
        if f.mirror_errors > self.max_mirror_errors {
            out.push(format!(
                "{} mirror error(s) in the last {w} s (guards.max_mirror_errors = {})",
                f.mirror_errors, self.max_mirror_errors
            ));
        }
        out
    }
}

/// A forward flip's request: dry run, `--force`, the guards' figures, and
/// what else stands in its way (an incomplete backfill, no clean verify).
#[derive(Debug, Clone, Default)]
pub struct FlipRequest {
    pub dry_run: bool,
    pub force: bool,
    pub figures: Figures,
    pub blockers: Vec<String>,
}

/// A phase change an operator (or the flag file) can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// passthrough -> mirror: writes start to be mirrored.
    EnterMirror,
    /// mirror -> reads_new
    FlipReads,
    /// reads_new -> writes_new: the authority changes.
    FlipWrites,
    /// writes_new -> finalized: the point of no return.
    Finalize,
    /// Back to the phase before this one.
    Rollback,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::EnterMirror => "flip mirror",
            Change::FlipReads => "flip reads",
            Change::FlipWrites => "flip writes",
            Change::Finalize => "finalize",
            Change::Rollback => "rollback",
        }
    }

    /// The phase a forward change starts from, and where it goes.
    fn forward(self) -> Option<(Phase, Phase)> {
        match self {
            Change::EnterMirror => Some((Phase::Passthrough, Phase::Mirror)),
            Change::FlipReads => Some((Phase::Mirror, Phase::ReadsNew)),
            Change::FlipWrites => Some((Phase::ReadsNew, Phase::WritesNew)),
            Change::Finalize => Some((Phase::WritesNew, Phase::Finalized)),
            Change::Rollback => None,
        }
    }
}

/// A change that passed its checks (guards, phase): what it will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub change: Change,
    pub from: Phase,
    pub to: Phase,
    /// Guard failures `--force` overrode.
    pub overridden: Vec<String>,
}

impl Plan {
    /// The authority changes, and with it the order in which writers take
    /// locks: sessions must meet at a barrier (no transaction open) first.
    pub fn needs_barrier(&self) -> bool {
        self.from.authority() != self.to.authority()
    }

    /// The command as the audit log names it.
    pub fn command(&self) -> String {
        command_text(self.change, &self.overridden)
    }
}

fn command_text(change: Change, overridden: &[String]) -> String {
    if overridden.is_empty() {
        change.name().to_string()
    } else {
        format!(
            "{} --force (overriding: {})",
            change.name(),
            overridden.join("; ")
        )
    }
}

pub struct Controller {
    guards: Mutex<GuardLimits>,
    routing: Arc<RoutingState>,
    state: Option<StateFile>,
    /// Earlier phases, oldest first.
    history: Mutex<Vec<Phase>>,
    audit: Option<PathBuf>,
    /// In a fleet: this instance's name, on every audit line.
    instance: Mutex<Option<String>>,
}

impl Controller {
    /// Starts from the state file when it has a phase (it wins over
    /// `initial`), else from `initial`, which is then written to the file.
    pub fn start(
        initial: Phase,
        state_file: Option<&Path>,
        audit: Option<&Path>,
        guards: GuardLimits,
    ) -> Result<Controller, StateError> {
        let state = state_file.map(StateFile::new);
        let saved = match &state {
            Some(f) => f.load()?,
            None => None,
        };
        let saved = match saved {
            Some(s) => s,
            None => {
                let s = Saved {
                    routing: Routing {
                        phase: initial,
                        epoch: 0,
                    },
                    history: Vec::new(),
                };
                if let Some(f) = &state {
                    f.save(&s)?;
                }
                s
            }
        };
        Ok(Controller {
            guards: Mutex::new(guards),
            routing: Arc::new(RoutingState::new(saved.routing.phase, saved.routing.epoch)),
            state,
            history: Mutex::new(saved.history),
            audit: audit.map(Path::to_path_buf),
            instance: Mutex::new(None),
        })
    }

    /// Starts from `saved` (a fleet's committed phase), written to the
    /// state file first.
    pub fn start_at(
        saved: Saved,
        state_file: Option<&Path>,
        audit: Option<&Path>,
        guards: GuardLimits,
    ) -> Result<Controller, StateError> {
        if let Some(path) = state_file {
            StateFile::new(path).save(&saved)?;
        }
        Controller::start(saved.routing.phase, state_file, audit, guards)
    }

    /// Names this instance on its audit lines (a fleet's).
    pub fn set_instance(&self, name: &str) {
        *self.instance.lock().unwrap_or_else(|p| p.into_inner()) = Some(name.to_string());
    }

    /// Takes `routing` and `history` (a fleet's commit) when it is ahead
    /// of the phase here: persisted first, then swapped in. Whether it was.
    pub fn adopt(&self, routing: Routing, history: Vec<Phase>) -> Result<bool, String> {
        let mut kept = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if routing.epoch <= self.routing.snapshot().epoch {
            return Ok(false);
        }
        if let Some(f) = &self.state {
            f.save(&Saved {
                routing,
                history: history.clone(),
            })
            .map_err(|e| e.to_string())?;
        }
        self.routing.set(routing);
        *kept = history;
        Ok(true)
    }

    pub fn routing(&self) -> &Arc<RoutingState> {
        &self.routing
    }

    pub fn history(&self) -> Vec<Phase> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn guards(&self) -> GuardLimits {
        *self.guards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New limits, from a reloaded config.
    pub fn set_guards(&self, limits: GuardLimits) {
        *self.guards.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// Checks `change` against the phase and (forward changes) the guards.
    /// `Err` says every reason it is refused.
    pub fn plan(&self, change: Change, req: &FlipRequest) -> Result<Plan, String> {
        let current = self.routing.snapshot().phase;
        let Some((from, to)) = change.forward() else {
            return match self.history().last().copied() {
                _ if current == Phase::Finalized => {
                    Err("the phase is finalized: there is no rollback".to_string())
                }
                None => Err(format!(
                    "nothing to roll back to: {current} is the first phase"
                )),
                Some(Phase::Passthrough) => Err(format!(
                    "rollback {current} -> passthrough is not available: sessions opened in passthrough cannot mirror"
                )),
                // Only what stands in the way (not the guards' figures)
                // refuses a rollback.
                Some(_) if !req.blockers.is_empty() && !req.force => Err(format!(
                    "rollback refused: {} (--force overrides)",
                    req.blockers.join("; ")
                )),
                Some(to) => Ok(Plan {
                    change,
                    from: current,
                    to,
                    overridden: req.blockers.clone(),
                }),
            };
        };
        if current != from {
            return Err(format!(
                "{} needs phase {from}; the phase is {current}",
                change.name()
            ));
        }
        let failures = self.refusals(change, req);
        if !failures.is_empty() && !req.force {
            let ack = change != Change::EnterMirror
                && self
                    .guards()
                    .failures(&req.figures)
                    .iter()
                    .any(|f| f.contains("mismatch") || f.contains("mirror error"));
            return Err(format!(
                "guards refuse the flip: {} (ways out: {}--force overrides, audited)",
                failures.join("; "),
                if ack {
                    "wait until the window passes them; after a clean `verify start --repair`, `turnout ctl ack` stops counting what happened before it; "
                } else {
                    ""
                }
            ));
        }
        Ok(Plan {
            change,
            from,
            to,
            overridden: failures,
        })
    }

    /// Every reason a forward `change` would be refused now, the phase
    /// aside: the guards' figures and the request's blockers, all at once.
    pub fn refusals(&self, change: Change, req: &FlipRequest) -> Vec<String> {
        if change == Change::Rollback {
            return Vec::new();
        }
        if change == Change::EnterMirror {
            // Nothing compared yet: only what stands in the way counts.
            return req.blockers.clone();
        }
        let mut out = self.guards().failures(&req.figures);
        out.extend(req.blockers.iter().cloned());
        out
    }

    /// The forward change the phase goes through next (`None` once finalized).
    pub fn next_change(&self) -> Option<Change> {
        let current = self.routing.snapshot().phase;
        [
            Change::EnterMirror,
            Change::FlipReads,
            Change::FlipWrites,
            Change::Finalize,
        ]
        .into_iter()
        .find(|c| c.forward().is_some_and(|(from, _)| from == current))
    }

    /// What `plan` would do, changing nothing (`--dry-run`).
    pub fn preview(&self, plan: &Plan) -> Outcome {
        Outcome {
            from: plan.from.name().into(),
            to: plan.to.name().into(),
            epoch: self.routing.snapshot().epoch + 1,
            dry_run: true,
            notes: Vec::new(),
        }
    }

    /// The change a flag file asks for by naming `desired`: the next flip,
    /// or a rollback to the phase before. `Ok(None)`: already there.
    pub fn change_to(&self, desired: &str) -> Result<Option<Change>, String> {
        let to = desired.parse::<Phase>().map_err(|e| e.to_string())?;
        let current = self.routing.snapshot().phase;
        if to == current {
            return Ok(None);
        }
        if let Some(change) = [
            Change::EnterMirror,
            Change::FlipReads,
            Change::FlipWrites,
            Change::Finalize,
        ]
        .into_iter()
        .find(|c| c.forward() == Some((current, to)))
        {
            return Ok(Some(change));
        }
        if self.history().last() == Some(&to) {
            return Ok(Some(Change::Rollback));
        }
        Err(format!(
            "{current} -> {to} is neither the next flip nor a rollback"
        ))
    }

    /// Makes `plan` the routing: persisted first, then swapped in. Fails
    /// when the phase moved since the plan was made.
    pub fn commit(&self, plan: &Plan) -> Result<Outcome, String> {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let current = *self.routing.snapshot();
        if current.phase != plan.from {
            return Err(format!(
                "the phase changed to {} meanwhile; nothing done",
                current.phase
            ));
        }
        let mut next_history = history.clone();
        if plan.change == Change::Rollback {
            next_history.pop();
        } else {
            next_history.push(plan.from);
        }
        let next = Routing {
            phase: plan.to,
            epoch: current.epoch + 1,
        };
        // Persisted before it takes effect: a restart never goes back. Once
        // `finalized` is saved there is no rollback (see `plan`): the point
        // of no return.
        if let Some(f) = &self.state {
            f.save(&Saved {
                routing: next,
                history: next_history.clone(),
            })
            .map_err(|e| format!("not flipped: {e}"))?;
        }
        let applied = self.routing.set_phase(plan.to);
        *history = next_history;
        Ok(Outcome {
            from: plan.from.name().into(),
            to: plan.to.name().into(),
            epoch: applied.epoch,
            dry_run: false,
            notes: Vec::new(),
        })
    }

    /// Writes an audit line for a mutating command.
    pub fn audit(
        &self,
        command: &str,
        dry_run: bool,
        caller: &str,
        result: &Result<Outcome, String>,
    ) {
        let outcome = match result {
            Ok(o) => serde_json::json!({"ok": true, "from": o.from, "to": o.to, "epoch": o.epoch}),
            Err(e) => serde_json::json!({"ok": false, "error": e}),
        };
        self.audit_line(command, dry_run, caller, outcome);
    }

    /// Writes an audit line for a command that starts, pauses or resumes a
    /// job (`backfill start`, `verify start --repair`): what it answered.
    pub fn audit_job(&self, command: &str, caller: &str, result: &Result<String, String>) {
        let outcome = match result {
            Ok(done) => serde_json::json!({"ok": true, "done": done}),
            Err(e) => serde_json::json!({"ok": false, "error": e}),
        };
        self.audit_line(command, false, caller, outcome);
    }

    fn audit_line(&self, command: &str, dry_run: bool, caller: &str, outcome: serde_json::Value) {
        let mut line = serde_json::json!({
            "at": crate::readdiff::now_rfc3339(),
            "command": command,
            "dry_run": dry_run,
            "caller": caller,
            "outcome": outcome,
        });
        if let Some(instance) = self
            .instance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            line["instance"] = serde_json::Value::String(instance);
        }
        if let Some(path) = &self.audit {
            let written = crate::files::append(path, false).and_then(|mut f| {
                writeln!(f, "{line}")?;
                f.sync_data()
            });
            if let Err(e) = written {
                eprintln!("turnout: audit log {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `turnout_proxy::flip::run` does for a change without a barrier:
    /// checked, applied (or previewed), audited.
    impl Controller {
        pub fn apply(
            &self,
            change: Change,
            req: FlipRequest,
            caller: &str,
        ) -> Result<Outcome, String> {
            let planned = self.plan(change, &req);
            let command = match &planned {
                Ok(p) => p.command(),
                Err(_) => change.name().to_string(),
            };
            let result = planned.and_then(|plan| {
                if req.dry_run {
                    Ok(self.preview(&plan))
                } else {
                    self.commit(&plan)
                }
            });
            self.audit(&command, req.dry_run, caller, &result);
            result
        }
    }

    #[test]
    fn a_minimum_of_compared_reads_holds_by_default_while_reads_are_sampled() {
        let limits = GuardLimits::default();
        let f = |sampling| Figures {
            compared: 3,
            sampling,
            ..Figures::default()
        };
        let failures = limits.failures(&f(true));
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("min_compared_reads = 100, the default"));
        assert!(limits.failures(&f(false)).is_empty());
        let explicit = GuardLimits {
            min_compared_reads: Some(0),
            ..limits
        };
        assert!(explicit.failures(&f(true)).is_empty());
    }

    #[test]
    fn reads_flip_and_rollback_persist_and_are_audited() {
        let dir = std::env::temp_dir().join(format!("turnout-ctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.json");
        let audit = dir.join("audit.jsonl");
        let limits = GuardLimits {
            window_secs: 60,
            min_compared_reads: Some(10),
            max_mismatch_rate: 0.01,
            max_mirror_errors: 0,
            ..GuardLimits::default()
        };
        let c = Controller::start(Phase::Mirror, Some(&state), Some(&audit), limits).unwrap();
        let bad = Figures {
            compared: 5,
            mismatches: 1,
            mirror_errors: 2,
            sampling: true,
        };
        let refused = c
            .apply(
                Change::FlipReads,
                FlipRequest {
                    figures: bad,
                    ..Default::default()
                },
                "test",
            )
            .unwrap_err();
        assert!(
            refused.contains("only 5 read(s)")
                && refused.contains("rate 0.2000")
                && refused.contains("2 mirror error(s)"),
            "{refused}"
        );
        let good = Figures {
            compared: 500,
            mismatches: 1,
            mirror_errors: 0,
            sampling: true,
        };
        let dry = c
            .apply(
                Change::FlipReads,
                FlipRequest {
                    dry_run: true,
                    figures: good,
                    ..Default::default()
                },
                "test",
            )
            .unwrap();
        assert!(dry.dry_run);
        assert_eq!(c.routing().snapshot().phase, Phase::Mirror);
        let none = FlipRequest::default();
        let forced = FlipRequest {
            force: true,
            figures: bad,
            ..Default::default()
        };
        let o = c.apply(Change::FlipReads, forced.clone(), "test").unwrap();
        assert_eq!((o.to.as_str(), o.epoch), ("reads_new", 1));
        assert!(c.apply(Change::FlipReads, forced, "test").is_err());
        // A restart keeps the phase.
        let again = Controller::start(Phase::Passthrough, Some(&state), None, limits).unwrap();
        assert_eq!(again.routing().snapshot().phase, Phase::ReadsNew);
        let o = c.apply(Change::Rollback, none.clone(), "test").unwrap();
        assert_eq!((o.to.as_str(), o.epoch), ("mirror", 2));
        assert!(c
            .apply(Change::Rollback, none, "test")
            .unwrap_err()
            .contains("nothing to roll back"));
        let lines = std::fs::read_to_string(&audit).unwrap();
        assert_eq!(lines.lines().count(), 6, "{lines}");
        assert!(
            lines.contains("flip reads --force (overriding: only 5 read(s)"),
            "{lines}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    #[test]
    fn the_flag_file_names_the_next_flip_or_a_rollback_and_finalize_ends_rollbacks() {
        let c = Controller::start(Phase::Mirror, None, None, GuardLimits::default()).unwrap();
        let go = |c: &Controller, to: &str| {
            let change = c.change_to(to).unwrap().unwrap();
            let plan = c.plan(change, &FlipRequest::default()).unwrap();
            (plan.needs_barrier(), c.commit(&plan).unwrap())
        };
        assert_eq!(c.change_to("mirror"), Ok(None));
        assert!(c.change_to("writes_new").unwrap_err().contains("neither"));
        assert!(c
            .change_to("sideways")
            .unwrap_err()
            .contains("unknown phase"));
        assert!(!go(&c, "reads_new").0);
        let (barrier, o) = go(&c, "writes_new");
        assert!(barrier);
        assert_eq!(
            (o.from.as_str(), o.to.as_str()),
            ("reads_new", "writes_new")
        );
        assert_eq!(c.routing().snapshot().phase.authority(), crate::Side::New);
        assert_eq!(c.change_to("reads_new"), Ok(Some(Change::Rollback)));
        let (barrier, _) = go(&c, "reads_new");
        assert!(barrier);
        go(&c, "writes_new");
        // What stands in the way refuses a rollback; --force overrides it
        // and the plan names what it overrode. The guards' figures do not.
        let blocked = FlipRequest {
            blockers: vec!["old missed 2 write(s)".into()],
            ..FlipRequest::default()
        };
        let refused = c.plan(Change::Rollback, &blocked).unwrap_err();
        assert!(
            refused.contains("rollback refused: old missed 2"),
            "{refused}"
        );
        let forced = FlipRequest {
            force: true,
            ..blocked
        };
        let plan = c.plan(Change::Rollback, &forced).unwrap();
        assert_eq!(plan.overridden, vec!["old missed 2 write(s)".to_string()]);
        let (barrier, o) = go(&c, "finalized");
        assert!(!barrier);
        assert_eq!(o.epoch, 5);
        let refused = c
            .plan(Change::Rollback, &FlipRequest::default())
            .unwrap_err();
        assert!(refused.contains("finalized"), "{refused}");
        assert!(c
            .plan(Change::FlipWrites, &FlipRequest::default())
            .unwrap_err()
            .contains("needs phase reads_new"));
    }
}
