//! What a writes flip's catch-up of sequences (PostgreSQL) or
//! AUTO_INCREMENT counters (MySQL) did, or would do.

use turnout_control::Side;

/// Whether a catch-up moves the sequences or only says which it would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Move,
    /// `--dry-run`: the same reads, no change.
    Preview,
}

/// What a catch-up did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// Sequences read on the current authority.
    pub seen: usize,
    /// Sequences moved on the promoted side, with their new value.
    pub moved: Vec<(String, String)>,
    /// Sequences the promoted side does not have.
    pub missing: Vec<String>,
    /// Why the other side's values could not be read, when the catch-up
    /// went by the promoted side's own rows instead.
    pub fallback: Option<String>,
}

impl CatchUp {
    /// A line for the flip's reply and the log (or, for a preview, what
    /// the flip would do).
    pub fn summary(&self, from: Side, to: Side, apply: Apply) -> String {
        let moved = match apply {
            Apply::Move => "moved",
            Apply::Preview => "would move",
        };
        if let Some(why) = &self.fallback {
            return format!(
                "sequences: {from} could not be read ({why}); {} of {to}'s {} column-owned sequence(s) {moved} past the largest id in their column",
                self.moved.len(),
                self.seen
            );
        }
        let mut s = format!(
            "sequences: {} read on {from}, {} {moved} on {to} past {from}'s values",
            self.seen,
            self.moved.len()
        );
        if !self.missing.is_empty() {
            s.push_str(&format!("; missing on {to}: {}", self.missing.join(", ")));
        }
        s
    }
}
