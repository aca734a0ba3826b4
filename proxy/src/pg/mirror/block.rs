//! The transaction block a PostgreSQL backend is in while it runs an
//! extended-protocol batch, followed message by message between two Syncs.
//!
//! ReadyForQuery tells a session's state only at a Sync; inside a batch the
//! client's own `BEGIN`, `COMMIT` and `ROLLBACK` (sent by Execute, as pgjdbc
//! and psycopg do) move it, and the first statement outside a block opens an
//! implicit one that the Sync commits. turnout holds the Sync back while the
//! mirror applies a batch, so it needs this state before the server reports
//! it; the ReadyForQuery that ends the batch checks it.

use crate::engine::{Kind, TxControl};

/// Where the backend stands after the messages it has run so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Block {
    /// No transaction: the next statement opens an implicit one.
    #[default]
    Idle,
    /// Statements ran outside `BEGIN`: they commit at the Sync (or at a
    /// `COMMIT` executed in the batch); a `BEGIN` turns the block explicit.
    Implicit,
    /// The client's own transaction block.
    Explicit,
    /// The client's block after an error: only `ROLLBACK` (or `COMMIT`,
    /// which rolls back) and `ROLLBACK TO SAVEPOINT` run.
    Failed,
}

/// What ends a transaction when executed: the points where the mirror has
/// to have caught up (and, for a commit, commit first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Commit,
    Rollback,
}

impl Block {
    /// The state a ReadyForQuery status byte reports.
    pub fn from_status(status: u8) -> Block {
        match status {
            b'T' => Block::Explicit,
            b'E' => Block::Failed,
            _ => Block::Idle,
        }
    }

    /// The ReadyForQuery status the backend answers a Sync with in this
    /// state (an implicit block commits at the Sync).
    pub fn status_at_sync(self) -> u8 {
        match self {
            Block::Idle | Block::Implicit => b'I',
            Block::Explicit => b'T',
            Block::Failed => b'E',
        }
    }

    /// A transaction is open, whose writes are not committed yet.
    pub fn open(self) -> bool {
        matches!(self, Block::Implicit | Block::Explicit)
    }

    /// The state after a statement of `kind` ran without error (`chain`:
    /// `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN` open a new block at once).
    pub fn after(self, kind: Kind, chain: bool) -> Block {
        match (self, kind) {
            (_, Kind::Transaction(TxControl::Begin)) => match self {
                // A BEGIN inside a block only warns.
                Block::Failed => Block::Failed,
                _ => Block::Explicit,
            },
            (Block::Failed, Kind::Transaction(TxControl::RollbackTo)) => Block::Explicit,
            (_, Kind::Transaction(TxControl::Commit | TxControl::Rollback)) => {
                if chain && self == Block::Explicit {
                    Block::Explicit
                } else {
                    Block::Idle
                }
            }
            (Block::Idle, _) => Block::Implicit,
            (other, _) => other,
        }
    }

    /// The state after a message failed: the backend skips to the Sync; an
    /// explicit block is left failed, anything else is rolled back there.
    pub fn after_error(self) -> Block {
        match self {
            Block::Explicit | Block::Failed => Block::Failed,
            Block::Idle | Block::Implicit => Block::Idle,
        }
    }
}

/// Whether executing a statement of `kind` ends a transaction.
pub fn ends(kind: Kind) -> Option<End> {
    match kind {
        Kind::Transaction(TxControl::Commit) => Some(End::Commit),
        Kind::Transaction(TxControl::Rollback) => Some(End::Rollback),
        _ => None,
    }
}

/// `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN` (not `AND NO CHAIN`).
pub fn chains(sql: &str) -> bool {
    // Word by word, nothing allocated: this runs for every message of a
    // batch.
    let mut after_and = false;
    for w in sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
    {
        if after_and && w.eq_ignore_ascii_case("chain") {
            return true;
        }
        after_and = w.eq_ignore_ascii_case("and");
    }
    false
}

/// Message replies that answer one frontend message each: ParseComplete,
/// BindComplete, CloseComplete, RowDescription/NoData (a Describe's last
/// reply), CommandComplete, EmptyQueryResponse, PortalSuspended.
pub fn is_final_reply(tag: u8) -> bool {
    matches!(tag, b'1' | b'2' | b'3' | b'T' | b'n' | b'C' | b'I' | b's')
}

/// Frontend messages the backend answers once each before a Sync.
pub fn is_answered(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Kind::*;
    use crate::engine::TxControl::*;

    #[test]
    fn the_block_follows_what_postgresql_does() {
        // pgjdbc: BEGIN by Execute, then a write, in one batch.
        let b = Block::Idle.after(Transaction(Begin), false);
        assert_eq!(b, Block::Explicit);
        assert_eq!(b.after(Write, false), Block::Explicit);
        assert_eq!(b.status_at_sync(), b'T');
        // Statements before a BEGIN in the same batch join the block.
        let b = Block::Idle.after(Write, false);
        assert_eq!(b, Block::Implicit);
        assert_eq!(b.status_at_sync(), b'I');
        assert_eq!(b.after(Transaction(Begin), false), Block::Explicit);
        // COMMIT in an implicit block commits it; the next statement opens
        // another.
        let b = Block::Implicit.after(Transaction(Commit), false);
        assert_eq!(b, Block::Idle);
        assert_eq!(b.after(Read, false), Block::Implicit);
        // Errors: an explicit block fails, an implicit one is rolled back.
        assert_eq!(Block::Explicit.after_error(), Block::Failed);
        assert_eq!(Block::Implicit.after_error(), Block::Idle);
        assert_eq!(
            Block::Failed.after(Transaction(RollbackTo), false),
            Block::Explicit
        );
        assert_eq!(Block::Failed.after(Transaction(Commit), false), Block::Idle);
        assert_eq!(
            Block::Failed.after(Transaction(Begin), false),
            Block::Failed
        );
        // AND CHAIN opens the next block at once.
        assert_eq!(
            Block::Explicit.after(Transaction(Commit), true),
            Block::Explicit
        );
        assert!(chains("COMMIT AND CHAIN"));
        assert!(!chains("commit and no chain"));
        assert!(!chains("COMMIT"));
        for s in [b'I', b'T', b'E'] {
            assert_eq!(Block::from_status(s).status_at_sync(), s);
        }
    }
}
