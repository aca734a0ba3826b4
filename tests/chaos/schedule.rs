//! A seeded random schedule: what happens to the cutover and when. The same
//! seed gives the same schedule (what the run did with it is in its log).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    FlipReads {
        force: bool,
    },
    FlipWrites {
        force: bool,
    },
    Rollback,
    /// `pause`, then `resume` when it ends.
    Pause,
    Reload,
    BackfillStart,
    BackfillPause,
    BackfillResume,
    Verify,
    /// The mirror's traffic (whichever side mirrors at the time) delayed by
    /// this many ms per chunk, until it ends.
    MirrorDelay(u64),
    MirrorStall,
    /// Every open connection to the mirror closed (FIN).
    MirrorCut,
    /// Every open connection to the mirror reset (RST).
    MirrorReset,
    /// The mirror's server killed, started again when it ends.
    MirrorKill,
    /// The authority's server killed, started again when it ends.
    AuthorityKill,
    /// turnout killed (SIGKILL) and started again at once.
    TurnoutKill,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::FlipReads { force } => {
                write!(f, "flip reads{}", if *force { " --force" } else { "" })
            }
            Action::FlipWrites { force } => {
                write!(f, "flip writes{}", if *force { " --force" } else { "" })
            }
            Action::Rollback => write!(f, "rollback"),
            Action::Pause => write!(f, "pause"),
            Action::Reload => write!(f, "reload"),
            Action::BackfillStart => write!(f, "backfill start"),
            Action::BackfillPause => write!(f, "backfill pause"),
            Action::BackfillResume => write!(f, "backfill resume"),
            Action::Verify => write!(f, "verify start"),
            Action::MirrorDelay(ms) => write!(f, "mirror delayed {ms} ms per chunk"),
            Action::MirrorStall => write!(f, "mirror stalled"),
            Action::MirrorCut => write!(f, "mirror's connections cut (FIN)"),
            Action::MirrorReset => write!(f, "mirror's connections reset (RST)"),
            Action::MirrorKill => write!(f, "mirror's server killed"),
            Action::AuthorityKill => write!(f, "authority's server killed"),
            Action::TurnoutKill => write!(f, "turnout killed (SIGKILL) and restarted"),
        }
    }
}

impl Action {
    /// Whether the action lasts (and is undone by an `End` event).
    pub fn lasts(self) -> bool {
        matches!(
            self,
            Action::Pause
                | Action::MirrorDelay(_)
                | Action::MirrorStall
                | Action::MirrorKill
                | Action::AuthorityKill
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Start,
    /// The end of the lasting action started by event `of`.
    End {
        of: usize,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub at_ms: u64,
    pub id: usize,
    pub action: Action,
    pub step: Step,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.at_ms as f64 / 1000.0;
        match self.step {
            Step::Start => write!(f, "t={t:>6.1}s #{:<3} {}", self.id, self.action),
            Step::End { of } => write!(
                f,
                "t={t:>6.1}s #{:<3} end of #{of} ({})",
                self.id, self.action
            ),
        }
    }
}

/// Draws one action (with its own parameters).
type Draw = fn(&mut StdRng) -> Action;

/// Which actions the schedule draws (weights, out of their sum).
const WEIGHTS: &[(u32, Draw)] = &[
    (4, |r| Action::FlipReads {
        force: r.gen_bool(0.5),
    }),
    (4, |r| Action::FlipWrites {
        force: r.gen_bool(0.5),
    }),
    (3, |_| Action::Rollback),
    (1, |_| Action::Pause),
    (1, |_| Action::Reload),
    (1, |_| Action::BackfillStart),
    (1, |_| Action::BackfillPause),
    (1, |_| Action::BackfillResume),
    (1, |_| Action::Verify),
    (1, |r| Action::MirrorDelay(r.gen_range(5..40))),
    (1, |_| Action::MirrorStall),
    (1, |_| Action::MirrorCut),
    (1, |_| Action::MirrorReset),
    (1, |_| Action::MirrorKill),
    (1, |_| Action::AuthorityKill),
    (1, |_| Action::TurnoutKill),
];

/// The schedule of `seed` for a run of `seconds`: events in time order.
pub fn schedule(seed: u64, seconds: u64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total: u32 = WEIGHTS.iter().map(|(w, _)| w).sum();
    let mut events = Vec::new();
    let mut at = 1_500u64;
    let end = seconds * 1000;
    while at < end {
        let mut pick = rng.gen_range(0..total);
        let mut action = Action::Reload;
        for (w, make) in WEIGHTS {
            if pick < *w {
                action = make(&mut rng);
                break;
            }
            pick -= w;
        }
        let id = events.len();
        events.push(Event {
            at_ms: at,
            id,
            action,
            step: Step::Start,
        });
        if action.lasts() {
            let lasts = rng.gen_range(500..4_000);
            events.push(Event {
                at_ms: (at + lasts).min(end),
                id: id + 1,
                action,
                step: Step::End { of: id },
            });
        }
        at += rng.gen_range(300..2_500);
    }
    events.sort_by_key(|e| (e.at_ms, e.id));
    events
}

#[test]
fn a_seed_gives_the_same_schedule() {
    let a: Vec<String> = schedule(7, 60).iter().map(|e| e.to_string()).collect();
    let b: Vec<String> = schedule(7, 60).iter().map(|e| e.to_string()).collect();
    let c: Vec<String> = schedule(8, 60).iter().map(|e| e.to_string()).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.len() > 20, "{a:?}");
}
