use arc_swap::ArcSwap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// One of the two databases of a cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Old,
    New,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Old => "old",
            Side::New => "new",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Old => Side::New,
            Side::New => Side::Old,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The phases of a migration, in order (see DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Passthrough,
    Mirror,
    ReadsNew,
    WritesNew,
    /// The point of no return: `old` no longer receives writes.
    Finalized,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Passthrough,
        Phase::Mirror,
        Phase::ReadsNew,
        Phase::WritesNew,
        Phase::Finalized,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Passthrough => "passthrough",
            Phase::Mirror => "mirror",
            Phase::ReadsNew => "reads_new",
            Phase::WritesNew => "writes_new",
            Phase::Finalized => "finalized",
        }
    }

    /// Side whose answer the client sees for reads.
    pub fn read_target(self) -> Side {
        match self {
            Phase::Passthrough | Phase::Mirror => Side::Old,
            Phase::ReadsNew | Phase::WritesNew | Phase::Finalized => Side::New,
        }
    }

    /// Side that runs writes first and orders concurrent writers.
    pub fn authority(self) -> Side {
        match self {
            Phase::Passthrough | Phase::Mirror | Phase::ReadsNew => Side::Old,
            Phase::WritesNew | Phase::Finalized => Side::New,
        }
    }

    /// Side that receives a copy of each write, if any.
    pub fn mirror(self) -> Option<Side> {
        match self {
            Phase::Passthrough | Phase::Finalized => None,
            Phase::Mirror | Phase::ReadsNew | Phase::WritesNew => Some(self.authority().other()),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown phase {0:?}: expected one of passthrough, mirror, reads_new, writes_new, finalized"
)]
pub struct PhaseParseError(pub String);

impl FromStr for Phase {
    type Err = PhaseParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| PhaseParseError(s.to_string()))
    }
}

/// An immutable routing decision: a phase and the epoch at which it took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    pub phase: Phase,
    pub epoch: u64,
}

/// The one owner of the current routing; sessions take a snapshot per transaction.
#[derive(Debug)]
pub struct RoutingState {
    current: ArcSwap<Routing>,
}

impl RoutingState {
    pub fn new(phase: Phase, epoch: u64) -> Self {
        RoutingState {
            current: ArcSwap::from_pointee(Routing { phase, epoch }),
        }
    }

    /// The routing a session should use for its next transaction.
    pub fn snapshot(&self) -> Arc<Routing> {
        self.current.load_full()
    }

    /// Replaces the routing with `routing` (a fleet's commit).
    pub fn set(&self, routing: Routing) {
        self.current.store(Arc::new(routing));
    }

    /// Replaces the routing with `phase` at the next epoch and returns it.
    pub fn set_phase(&self, phase: Phase) -> Routing {
        let mut next = Routing { phase, epoch: 0 };
        self.current.rcu(|cur| {
            next.epoch = cur.epoch + 1;
            Arc::new(next)
        });
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_route_as_the_design_table_says() {
        assert_eq!(Phase::Passthrough.mirror(), None);
        assert_eq!(Phase::Mirror.read_target(), Side::Old);
        assert_eq!(Phase::Mirror.mirror(), Some(Side::New));
        assert_eq!(Phase::ReadsNew.read_target(), Side::New);
        assert_eq!(Phase::ReadsNew.authority(), Side::Old);
        assert_eq!(Phase::WritesNew.authority(), Side::New);
        assert_eq!(Phase::WritesNew.mirror(), Some(Side::Old));
        assert_eq!(Phase::Finalized.mirror(), None);
    }

    #[test]
    fn phase_names_round_trip_and_garbage_is_refused() {
        for p in Phase::ALL {
            assert_eq!(p.name().parse::<Phase>(), Ok(p));
        }
        assert!("reads-new".parse::<Phase>().is_err());
    }

    #[test]
    fn set_phase_bumps_the_epoch() {
        let s = RoutingState::new(Phase::Passthrough, 7);
        let r = s.set_phase(Phase::Mirror);
        assert_eq!(r.epoch, 8);
        assert_eq!(*s.snapshot(), r);
    }
}
