//! The admin socket's commands: one line each, parsed into one type per
//! command. Anything else is refused with what was expected.

use crate::controller::Change;

/// A command line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Status,
    Diffs,
    /// `ack`: the guards' counted errors acknowledged after a clean verify.
    Ack {
        dry_run: bool,
    },
    /// `flip reads|writes`, `finalize`, `rollback`.
    Phase {
        change: Change,
        dry_run: bool,
        force: bool,
    },
    Pause {
        dry_run: bool,
    },
    Resume {
        dry_run: bool,
    },
    Sample {
        rate: f64,
        dry_run: bool,
    },
    Reload {
        dry_run: bool,
    },
    /// `backfill start|pause|resume|status [TABLE]`; `start --dry-run`
    /// names the tables it would copy.
    Backfill {
        action: JobAction,
        table: Option<String>,
        dry_run: bool,
    },
    /// `verify start|status [TABLE] [--repair]`; `start --dry-run` names
    /// the tables it would compare.
    Verify {
        action: JobAction,
        table: Option<String>,
        repair: bool,
        dry_run: bool,
    },
}

/// What to do with a backfill or a verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Start,
    Pause,
    Resume,
    Status,
}

pub const USAGE: &str = "commands: status, diffs, flip mirror|reads|writes [--force], finalize [--force], rollback [--force], ack, pause, resume, sample RATE, reload (each change takes --dry-run), backfill start|pause|resume|status [TABLE], verify start|status [TABLE] [--repair]";

impl Command {
    /// Parses one line: words separated by blanks, flags anywhere after
    /// the command's name.
    pub fn parse(line: &str) -> Result<Command, String> {
        let mut words = Vec::new();
        let (mut dry_run, mut force, mut repair) = (false, false, false);
        for w in line.split_whitespace() {
            match w {
                "--dry-run" => dry_run = true,
                "--force" => force = true,
                "--repair" => repair = true,
                w if w.starts_with("--") => {
                    return Err(format!(
                        "unknown option {w}; options: --dry-run, --force, --repair"
                    ))
                }
                w => words.push(w),
            }
        }
        if repair && !matches!(words.as_slice(), ["verify", "start", ..]) {
            return Err("--repair only goes with verify start".into());
        }
        if let ["backfill" | "verify", ..] = words.as_slice() {
            if force {
                return Err(format!("{} takes no --force", words.join(" ")));
            }
            if dry_run && words.get(1) != Some(&"start") {
                return Err(format!(
                    "{} takes no --dry-run (backfill start and verify start do)",
                    words.join(" ")
                ));
            }
            let action = match words.get(1).copied() {
                Some("start") => JobAction::Start,
                Some("pause") if words[0] == "backfill" => JobAction::Pause,
                Some("resume") if words[0] == "backfill" => JobAction::Resume,
                Some("status") => JobAction::Status,
                other => {
                    return Err(format!(
                        "{} what? expected {}, got {:?}",
                        words[0],
                        if words[0] == "backfill" {
                            "start, pause, resume or status"
                        } else {
                            "start or status"
                        },
                        other.unwrap_or("nothing")
                    ))
                }
            };
            let table = match words.get(2..).unwrap_or_default() {
                [] => None,
                [t] if matches!(action, JobAction::Start | JobAction::Status) => {
                    Some(t.to_string())
                }
                [_] => return Err(format!("{} {} takes no table", words[0], words[1])),
                more => return Err(format!("one table at most, got {}", more.join(" "))),
            };
            return Ok(if words[0] == "backfill" {
                Command::Backfill {
                    action,
                    table,
                    dry_run,
                }
            } else {
                Command::Verify {
                    action,
                    table,
                    repair,
                    dry_run,
                }
            });
        }
        let takes_force = matches!(
            words.as_slice(),
            ["flip", "mirror" | "reads" | "writes"] | ["finalize"] | ["rollback"]
        );
        if force && !takes_force {
            return Err(format!(
                "--force only goes with flip reads, flip writes, finalize and rollback, not {:?}",
                words.join(" ")
            ));
        }
        let read_only = |c: Command| {
            if dry_run {
                Err(format!(
                    "{} changes nothing: it takes no --dry-run",
                    words.join(" ")
                ))
            } else {
                Ok(c)
            }
        };
        let phase = |change| Command::Phase {
            change,
            dry_run,
            force,
        };
        match words.as_slice() {
            ["status"] => read_only(Command::Status),
            ["diffs"] => read_only(Command::Diffs),
            ["flip", "mirror"] => Ok(phase(Change::EnterMirror)),
            ["flip", "reads"] => Ok(phase(Change::FlipReads)),
            ["flip", "writes"] => Ok(phase(Change::FlipWrites)),
            ["flip", other] => Err(format!(
                "flip what? expected mirror, reads or writes, got {other:?}"
            )),
            ["flip"] => Err("flip what? expected flip reads or flip writes".into()),
            ["finalize"] => Ok(phase(Change::Finalize)),
            ["rollback"] => Ok(phase(Change::Rollback)),
            ["ack"] => Ok(Command::Ack { dry_run }),
            ["pause"] => Ok(Command::Pause { dry_run }),
            ["resume"] => Ok(Command::Resume { dry_run }),
            ["reload"] => Ok(Command::Reload { dry_run }),
            ["sample", rate] => {
                let rate = rate
                    .parse::<f64>()
                    .map_err(|_| format!("sample needs a number 0.0-1.0, got {rate:?}"))?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err(format!("sampling rate must be 0.0-1.0, got {rate}"));
                }
                Ok(Command::Sample { rate, dry_run })
            }
            ["sample"] => Err("sample needs a rate 0.0-1.0, e.g. sample 0.05".into()),
            [] => Err("empty command; try: status".into()),
            _ => Err(format!("unknown command {:?}; {USAGE}", line.trim())),
        }
    }

    /// Whether a line (parsed or not) starts with the name of a command
    /// that changes something: those are audited even when refused.
    pub fn names_a_change(line: &str) -> bool {
        matches!(
            line.split_whitespace().find(|w| !w.starts_with("--")),
            Some(
                "flip"
                    | "finalize"
                    | "rollback"
                    | "pause"
                    | "resume"
                    | "sample"
                    | "reload"
                    | "ack"
                    | "backfill"
                    | "verify"
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_and_verify_commands() {
        assert_eq!(
            Command::parse("backfill start users"),
            Ok(Command::Backfill {
                action: JobAction::Start,
                table: Some("users".into()),
                dry_run: false,
            })
        );
        assert_eq!(
            Command::parse("verify start --repair"),
            Ok(Command::Verify {
                action: JobAction::Start,
                table: None,
                repair: true,
                dry_run: false,
            })
        );
        assert!(Command::parse("backfill")
            .unwrap_err()
            .contains("backfill what?"));
        assert!(Command::parse("verify pause")
            .unwrap_err()
            .contains("start or status"));
        assert!(Command::parse("backfill pause users")
            .unwrap_err()
            .contains("takes no table"));
        assert!(Command::parse("backfill status --repair")
            .unwrap_err()
            .contains("--repair only"));
        assert!(Command::parse("backfill status --dry-run")
            .unwrap_err()
            .contains("backfill start and verify start do"));
        assert!(matches!(
            Command::parse("verify start --dry-run"),
            Ok(Command::Verify { dry_run: true, .. })
        ));
        assert!(Command::parse("backfill start a b")
            .unwrap_err()
            .contains("one table at most"));
    }

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert_eq!(Command::parse(" status "), Ok(Command::Status));
        assert_eq!(
            Command::parse("flip writes --dry-run"),
            Ok(Command::Phase {
                change: Change::FlipWrites,
                dry_run: true,
                force: false
            })
        );
        assert_eq!(
            Command::parse("--force finalize"),
            Ok(Command::Phase {
                change: Change::Finalize,
                dry_run: false,
                force: true
            })
        );
        assert_eq!(
            Command::parse("sample 0.25"),
            Ok(Command::Sample {
                rate: 0.25,
                dry_run: false
            })
        );
        for (line, says) in [
            ("", "empty command"),
            ("flip sideways", "expected mirror, reads or writes"),
            ("status --dry-run", "takes no --dry-run"),
            ("sample lots", "needs a number"),
            ("sample 2", "must be 0.0-1.0"),
            ("flip reads --yes", "unknown option --yes"),
            ("drop everything", "unknown command"),
        ] {
            let e = Command::parse(line).unwrap_err();
            assert!(e.contains(says), "{line:?}: {e}");
        }
    }
}
