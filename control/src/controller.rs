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
}

/// What the guards look at: counts over their window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Reads compared on the shadow.
    pub compared: u64,
    /// Confirmed mismatches among them.
    pub mismatches: u64,
    pub mirror_errors: u64,
}

/// The guards' limits (config `[guards]`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GuardLimits {
    pub window_secs: u64,
    pub min_compared_reads: u64,
    pub max_mismatch_rate: f64,
    pub max_mirror_errors: u64,
    /// After a flip: how long to watch the promoted side (0: off), and how
    /// many failed reads there make turnout roll back by itself.
    pub watch_secs: u64,
    pub abort_errors: u64,
}

impl GuardLimits {
    /// Every reason `figures` fail the guards, in words.
    pub fn failures(&self, f: &Figures) -> Vec<String> {
        let w = self.window_secs;
        let mut out = Vec::new();
        if f.compared < self.min_compared_reads {
            out.push(format!(
                "only {} read(s) compared in the last {w} s (guards.min_compared_reads = {})",
                f.compared, self.min_compared_reads
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

/// A forward flip's request: dry run, `--force`, and the guards' figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlipRequest {
    pub dry_run: bool,
    pub force: bool,
    pub figures: Figures,
}

pub struct Controller {
    guards: Mutex<GuardLimits>,
    routing: Arc<RoutingState>,
    state: Option<StateFile>,
    /// Earlier phases, oldest first.
    history: Mutex<Vec<Phase>>,
    audit: Option<PathBuf>,
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
        })
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

    /// Whether this build can move sessions from `from` to `to`.
    fn supported(from: Phase, to: Phase) -> Result<(), String> {
        match (from, to) {
            (Phase::Mirror, Phase::ReadsNew) | (Phase::ReadsNew, Phase::Mirror) => Ok(()),
            _ => Err(format!(
                "{from} -> {to} is not available in this build yet (only the reads flip between mirror and reads_new and its rollback are)"
            )),
        }
    }

    pub fn guards(&self) -> GuardLimits {
        *self.guards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New limits, from a reloaded config.
    pub fn set_guards(&self, limits: GuardLimits) {
        *self.guards.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// `flip reads`: mirror -> reads_new, if the guards pass (or `force`).
    pub fn flip_reads(&self, req: FlipRequest, caller: &str) -> Result<Outcome, String> {
        let from = self.routing.snapshot().phase;
        let failures = self.guards().failures(&req.figures);
        let result = if from != Phase::Mirror {
            Err(format!(
                "flip reads needs phase mirror; the phase is {from}"
            ))
        } else if !failures.is_empty() && !req.force {
            Err(format!(
                "guards refuse the flip: {} (--force overrides)",
                failures.join("; ")
            ))
        } else {
            self.change(from, Phase::ReadsNew, req.dry_run, true)
        };
        let command = if req.force && !failures.is_empty() {
            format!("flip reads --force (overriding: {})", failures.join("; "))
        } else {
            "flip reads".to_string()
        };
        self.audit(&command, req.dry_run, caller, &result);
        result
    }

    /// Moves to `desired` (a flag file's content), as the matching admin
    /// command would: the reads flip, or a rollback to the phase before.
    /// `Ok(None)`: already there.
    pub fn go_to(
        &self,
        desired: &str,
        caller: &str,
        figures: Figures,
    ) -> Result<Option<Outcome>, String> {
        let current = self.routing.snapshot().phase;
        let to = match desired.parse::<Phase>() {
            Ok(p) => p,
            Err(e) => {
                let result = Err(e.to_string());
                self.audit("flag file", false, caller, &result);
                return result.map(|_: Outcome| None);
            }
        };
        if to == current {
            return Ok(None);
        }
        if current == Phase::Mirror && to == Phase::ReadsNew {
            let req = FlipRequest {
                figures,
                ..FlipRequest::default()
            };
            return self.flip_reads(req, caller).map(Some);
        }
        if self.history().last() == Some(&to) {
            return self.rollback(false, caller).map(Some);
        }
        let result = Self::supported(current, to).and_then(|()| {
            Err(format!(
                "{current} -> {to} is neither the next flip nor a rollback"
            ))
        });
        self.audit("flag file", false, caller, &result);
        result.map(|_: Outcome| None)
    }

    /// `rollback`: back to the phase before this one.
    pub fn rollback(&self, dry_run: bool, caller: &str) -> Result<Outcome, String> {
        let from = self.routing.snapshot().phase;
        let previous = self.history().last().copied();
        let result = match previous {
            _ if from == Phase::Finalized => {
                Err("the phase is finalized: there is no rollback".to_string())
            }
            None => Err(format!(
                "nothing to roll back to: {from} is the first phase"
            )),
            Some(to) => self.change(from, to, dry_run, false),
        };
        self.audit("rollback", dry_run, caller, &result);
        result
    }

    fn change(
        &self,
        from: Phase,
        to: Phase,
        dry_run: bool,
        forward: bool,
    ) -> Result<Outcome, String> {
        Self::supported(from, to)?;
        let current = *self.routing.snapshot();
        if dry_run {
            return Ok(Outcome {
                from: from.name().into(),
                to: to.name().into(),
                epoch: current.epoch + 1,
                dry_run,
            });
        }
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut next_history = history.clone();
        if forward {
            next_history.push(from);
        } else {
            next_history.pop();
        }
        let next = Routing {
            phase: to,
            epoch: current.epoch + 1,
        };
        // Persisted before it takes effect: a restart never goes back.
        if let Some(f) = &self.state {
            f.save(&Saved {
                routing: next,
                history: next_history.clone(),
            })
            .map_err(|e| format!("not flipped: {e}"))?;
        }
        let applied = self.routing.set_phase(to);
        *history = next_history;
        Ok(Outcome {
            from: from.name().into(),
            to: to.name().into(),
            epoch: applied.epoch,
            dry_run,
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
        let line = serde_json::json!({
            "at": crate::readdiff::now_rfc3339(),
            "command": command,
            "dry_run": dry_run,
            "caller": caller,
            "outcome": match result {
                Ok(o) => serde_json::json!({"ok": true, "from": o.from, "to": o.to, "epoch": o.epoch}),
                Err(e) => serde_json::json!({"ok": false, "error": e}),
            },
        });
        if let Some(path) = &self.audit {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| {
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

    #[test]
    fn reads_flip_and_rollback_persist_and_are_audited() {
        let dir = std::env::temp_dir().join(format!("turnout-ctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.json");
        let audit = dir.join("audit.jsonl");
        let limits = GuardLimits {
            window_secs: 60,
            min_compared_reads: 10,
            max_mismatch_rate: 0.01,
            max_mirror_errors: 0,
            ..GuardLimits::default()
        };
        let c = Controller::start(Phase::Mirror, Some(&state), Some(&audit), limits).unwrap();
        let bad = Figures {
            compared: 5,
            mismatches: 1,
            mirror_errors: 2,
        };
        let refused = c
            .flip_reads(
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
        };
        let dry = c
            .flip_reads(
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
        let forced = FlipRequest {
            force: true,
            figures: bad,
            ..Default::default()
        };
        let o = c.flip_reads(forced, "test").unwrap();
        assert_eq!((o.to.as_str(), o.epoch), ("reads_new", 1));
        assert!(c.flip_reads(forced, "test").is_err());
        // A restart keeps the phase.
        let again = Controller::start(Phase::Passthrough, Some(&state), None, limits).unwrap();
        assert_eq!(again.routing().snapshot().phase, Phase::ReadsNew);
        let o = c.rollback(false, "test").unwrap();
        assert_eq!((o.to.as_str(), o.epoch), ("mirror", 2));
        assert!(c
            .rollback(false, "test")
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
