//! `mirror.mode = "async"` on MySQL: the engine's queue
//! ([`crate::engine::queue`]) applies the session's mirror work on a
//! connection of its own. This is how that connection is driven: commands
//! sent one exchange at a time and their answers read, and the client's
//! prepared statements prepared there when first executed, under the
//! mirror's ids (the session never waits for the mirror to learn them).

use super::packet::{PacketError, Packets};
use super::response::{self, Answer, Expect};
use super::session::Legs;
use crate::engine::queue::{Applier, Queue};
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::Arc;
use turnout_control::Side;

use super::packet::command::{
    COM_QUERY, COM_QUIT, COM_RESET_CONNECTION, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE,
    COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
};

/// What one job sends.
pub(super) enum Work {
    /// Commands for the mirror, each its own exchange: queries in the
    /// mirror's form, statement commands under the client's statement id.
    Commands(Vec<Vec<u8>>),
    /// A statement the client prepared (by its id), in the mirror's form or
    /// why it has none: prepared on the mirror when first executed there.
    Prepare {
        id: u32,
        sql: Result<String, String>,
    },
}

/// The mirror's answers to one job, and why a command of it could not run
/// there (a statement the mirror cannot prepare).
#[derive(Default)]
pub(super) struct Reply {
    pub answers: Vec<Answer>,
    pub refused: Option<String>,
}

/// A statement the client prepared, as the queue's connection knows it.
pub(super) struct Known {
    pub sql: Result<String, String>,
    /// Its id on the queue's connection, once prepared there.
    pub mirror_id: Option<u32>,
}

pub(super) type Replay = Arc<Vec<Vec<u8>>>;
pub(super) type AsyncMirror = Queue<MyApplier>;

/// The queue's connection to the mirror.
pub(super) struct MyApplier {
    shared: Arc<Shared>,
    side: Side,
    legs: Legs,
    conn: Option<Packets>,
    statements: HashMap<u32, Known>,
}

/// Starts the task that applies a session's queue on `conn` (when
/// connected), which has the statements `known` prepared.
pub(super) fn start(
    shared: Arc<Shared>,
    side: Side,
    legs: Legs,
    conn: Option<Packets>,
    known: HashMap<u32, Known>,
) -> AsyncMirror {
    let applier = MyApplier {
        shared: shared.clone(),
        side,
        legs,
        conn,
        statements: known,
    };
    shared.queue(applier)
}

fn statement_id(p: &[u8]) -> Option<u32> {
    p.get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl MyApplier {
    /// The mirror's id for the client's statement `id`, preparing it on
    /// the connection first. `Ok(Err)`: the mirror cannot run it (why).
    async fn mirror_id(&mut self, id: u32) -> Result<Result<u32, String>, PacketError> {
        let Some(known) = self.statements.get(&id) else {
            return Ok(Err(format!(
                "statement {id} is unknown to the mirror's queue"
            )));
        };
        if let Some(m) = known.mirror_id {
            return Ok(Ok(m));
        }
        let sql = match &known.sql {
            Ok(sql) => sql.clone(),
            Err(why) => return Ok(Err(why.clone())),
        };
        let Some(conn) = self.conn.as_mut() else {
            return Err(PacketError::Closed);
        };
        let mut p = vec![COM_STMT_PREPARE];
        p.extend_from_slice(sql.as_bytes());
        conn.write(0, &p).await?;
        let a = response::read(conn, Expect::Prepare).await?;
        if let Some(e) = a.error {
            return Ok(Err(e));
        }
        let Some((mirror_id, _)) = a.statement else {
            return Ok(Err("no statement id in the answer".into()));
        };
        if let Some(k) = self.statements.get_mut(&id) {
            k.mirror_id = Some(mirror_id);
        }
        Ok(Ok(mirror_id))
    }

    async fn run(&mut self, commands: &[Vec<u8>]) -> Result<Reply, PacketError> {
        let mut reply = Reply::default();
        for c in commands {
            let command = c.first().copied().unwrap_or(0);
            let mut payload = c.clone();
            if matches!(
                command,
                COM_STMT_EXECUTE | COM_STMT_SEND_LONG_DATA | COM_STMT_RESET | COM_STMT_CLOSE
            ) {
                let Some(id) = statement_id(c) else {
                    reply
                        .refused
                        .get_or_insert("malformed statement command".into());
                    continue;
                };
                let prepared = self.statements.get(&id).and_then(|k| k.mirror_id);
                if command == COM_STMT_CLOSE {
                    self.statements.remove(&id);
                    if let (Some(m), Some(conn)) = (prepared, self.conn.as_mut()) {
                        payload[1..5].copy_from_slice(&m.to_le_bytes());
                        conn.write(0, &payload).await?;
                    }
                    continue;
                }
                if command == COM_STMT_RESET && prepared.is_none() {
                    // Nothing of it on the mirror to reset.
                    continue;
                }
                match self.mirror_id(id).await? {
                    Ok(m) => payload[1..5].copy_from_slice(&m.to_le_bytes()),
                    Err(why) => {
                        reply.refused.get_or_insert(why);
                        continue;
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                return Err(PacketError::Closed);
            };
            conn.write(0, &payload).await?;
            if command == COM_STMT_SEND_LONG_DATA {
                continue;
            }
            reply
                .answers
                .push(response::read(conn, Expect::Result).await?);
            if command == COM_RESET_CONNECTION {
                // The server dropped the session's statements.
                self.statements.clear();
            }
        }
        Ok(reply)
    }
}

impl Applier for MyApplier {
    type Work = Work;
    type Replay = Replay;
    type Reply = Reply;

    fn side(&self) -> Side {
        self.side
    }

    fn connected(&self) -> bool {
        self.conn.is_some()
    }

    async fn connect(&mut self, replay: &Replay) -> Result<(), String> {
        let (conn, _) =
            super::session::connect_replayed(&self.shared, self.side, &self.legs, replay).await?;
        self.disconnect();
        self.conn = Some(conn);
        Ok(())
    }

    fn always_applies(work: &Work) -> bool {
        matches!(work, Work::Prepare { .. })
    }

    fn note(&mut self, work: &Work) -> Option<Reply> {
        match work {
            Work::Prepare { id, sql } => {
                let sql = sql.clone();
                self.statements.insert(
                    *id,
                    Known {
                        sql,
                        mirror_id: None,
                    },
                );
                Some(Reply::default())
            }
            // A statement closed while the mirror is not connected: there
            // is nothing of it there.
            Work::Commands(list)
                if self.conn.is_none()
                    && list.iter().all(|c| c.first() == Some(&COM_STMT_CLOSE)) =>
            {
                for c in list {
                    if let Some(id) = statement_id(c) {
                        self.statements.remove(&id);
                    }
                }
                Some(Reply::default())
            }
            Work::Commands(_) => None,
        }
    }

    async fn apply(&mut self, work: &Work) -> Result<Reply, String> {
        match work {
            Work::Commands(list) => self.run(list).await.map_err(|e| e.to_string()),
            Work::Prepare { .. } => Ok(Reply::default()),
        }
    }

    fn disconnect(&mut self) {
        self.conn = None;
        for k in self.statements.values_mut() {
            k.mirror_id = None;
        }
    }

    fn error_of(reply: &Reply) -> Option<String> {
        reply
            .refused
            .clone()
            .or_else(|| reply.answers.iter().find_map(|a| a.error.clone()))
    }

    fn rollback() -> Work {
        let mut p = vec![COM_QUERY];
        p.extend_from_slice(b"ROLLBACK");
        Work::Commands(vec![p])
    }

    async fn close(self) {
        if let Some(mut conn) = self.conn {
            let _ = conn.write(0, &[COM_QUIT]).await;
        }
    }
}

/// Whether a job of `commands` ends its transaction (its last command is
/// a COMMIT or ROLLBACK): an overflow then voids nothing after it.
pub(super) fn ends_transaction(commands: &[&[u8]]) -> bool {
    let Some(last) = commands.last() else {
        return false;
    };
    if last.first() != Some(&COM_QUERY) {
        return false;
    }
    let sql = String::from_utf8_lossy(&last[1..]);
    let word = sql.trim().trim_end_matches(';').trim().to_ascii_uppercase();
    word == "COMMIT" || word == "ROLLBACK"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_ending_in_commit_or_rollback_ends_its_transaction() {
        let q = |s: &str| {
            let mut p = vec![COM_QUERY];
            p.extend_from_slice(s.as_bytes());
            p
        };
        let (begin, insert, commit, rollback) = (
            q("BEGIN"),
            q("insert into t values (1)"),
            q(" commit; "),
            q("ROLLBACK"),
        );
        assert!(ends_transaction(&[&begin, &insert, &commit]));
        assert!(ends_transaction(&[&rollback]));
        assert!(!ends_transaction(&[&begin, &insert]));
        assert!(!ends_transaction(&[]));
    }
}
