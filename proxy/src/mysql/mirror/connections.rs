//! The session's connections: the authority's and the mirror's (or the
//! async queue that owns the mirror's), their roles at a writes flip, and
//! how commands are sent on them and answered.

use super::{
    commands, query, statement_id, with_types, MyMirror, Stop, COM_INIT_DB, COM_PING, COM_QUERY,
    COM_QUIT, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA, ER_LOCK_DEADLOCK,
};
use crate::engine::Classification;
use crate::mapping::Translation;
use crate::mysql::packet::{is_server_failure_code, PacketError};
use crate::mysql::queue::{self, Work};
use crate::mysql::response::{self, Answer, Expect, AUTOCOMMIT, IN_TRANS};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::warn;
use turnout_control::Side;

impl MyMirror<'_> {
    /// Between transactions, makes the connections' roles match the
    /// routing: after a writes flip (or its rollback) the mirror's
    /// connection is the authority's and the other way round; in a phase
    /// without a mirror (`finalized`) the mirror's connection closes.
    pub(super) async fn adopt_roles(&mut self) -> Result<(), String> {
        let phase = self.routing.phase;
        if phase.authority() != self.mirror_side.other() {
            // An async queue is empty here (the flip's barrier waited for
            // it); dropped, its task closes its connection, and the
            // promoted side gets a connection of the session's own.
            self.queue = None;
            // The mirror's connection may have died unnoticed (a session
            // that only read meanwhile never used it): a ping says whether
            // it can serve as the authority, else a new one does.
            if let Some(m) = self.mirror.as_mut() {
                let ping = tokio::time::timeout(self.shared.mirror_timeout, async {
                    m.write(0, &[COM_PING]).await?;
                    response::read(m, Expect::Result).await
                })
                .await;
                if !matches!(ping, Ok(Ok(a)) if a.error.is_none()) {
                    self.drop_mirror();
                }
            }
            if self.mirror.is_none() {
                self.reconnect_mirror().await?;
            }
            let promoted = self.mirror.take().ok_or("no connection")?;
            let demoted = std::mem::replace(&mut self.auth, promoted);
            self.mirror = Some(demoted);
            self.mirror_side = self.mirror_side.other();
            // KILL now reaches the promoted side's thread.
            if let Some(mut r) = self.shared.mysql.sessions.get_mut(&self.id) {
                let promoted_thread = self.mirror_thread.unwrap_or(0);
                self.mirror_thread = Some(r.thread);
                r.thread = promoted_thread;
                r.side = self.mirror_side.other();
            }
            // The promoted side knows each statement by its mirror id, or
            // gets it prepared now.
            let ids: Vec<u32> = self.statements.keys().copied().collect();
            for id in ids {
                let Some(s) = self.statements.get(&id) else {
                    continue;
                };
                let (old_auth, known, sql) = (s.auth_id, s.mirror_id, s.sql.clone());
                let new_auth = match known {
                    Some(m) => m,
                    None => {
                        let mut p = vec![COM_STMT_PREPARE];
                        p.extend_from_slice(sql.as_bytes());
                        // Written for old; translated when new takes over.
                        let p = self.for_auth(&p);
                        self.auth.write(0, &p).await.map_err(|e| e.to_string())?;
                        let a = response::read(&mut self.auth, Expect::Prepare)
                            .await
                            .map_err(|e| e.to_string())?;
                        match a.statement {
                            Some((m, _)) => m,
                            None => {
                                warn!(statement = %sql, error = ?a.error, "prepared statement could not be prepared on the new authority");
                                u32::MAX
                            }
                        }
                    }
                };
                if let Some(s) = self.statements.get_mut(&id) {
                    s.auth_id = new_auth;
                    s.mirror_id = Some(old_auth);
                    // The demoted side saw the types of earlier executes.
                }
            }
            if self.shared.async_queue.is_some() && phase.mirror().is_some() {
                self.queue_demoted();
            }
        }
        if phase.mirror().is_none() {
            self.queue = None;
            if let Some(mut m) = self.mirror.take() {
                let _ = m.write(0, &[COM_QUIT]).await;
            }
        }
        Ok(())
    }

    /// Async mode, at a writes flip: the demoted authority's connection
    /// goes to a new queue, which knows the statements prepared on it by
    /// the client's ids.
    pub(super) fn queue_demoted(&mut self) {
        let mut known = HashMap::new();
        let ids: Vec<u32> = self.statements.keys().copied().collect();
        for id in ids {
            let Some(s) = self.statements.get(&id) else {
                continue;
            };
            let sql = self.prepared_for_mirror(s.sql.clone());
            known.insert(
                id,
                queue::Known {
                    sql,
                    mirror_id: s.mirror_id,
                },
            );
            if let Some(s) = self.statements.get_mut(&id) {
                s.mirror_id = None;
            }
        }
        self.queue = Some(queue::start(
            self.shared_arc.clone(),
            self.mirror_side,
            self.legs.clone(),
            self.mirror.take(),
            known,
        ));
    }

    /// Runs `list` (command payloads, each its own exchange) on the mirror
    /// and reads their answers. `Err`: what went wrong, in words (the
    /// connection is dropped when its state is unknown). In async mode the
    /// commands are queued and no answer comes back.
    pub(super) async fn on_mirror(
        &mut self,
        list: &[&[u8]],
        fresh: bool,
    ) -> Result<Vec<Answer>, String> {
        use tokio::io::AsyncWriteExt;
        if let Some(q) = self.queue.as_mut() {
            let in_transaction = self.in_tx && !queue::ends_transaction(list);
            let work = Work::Commands(list.iter().map(|c| c.to_vec()).collect());
            q.push(work, &self.unit_class, fresh, in_transaction, &self.replay)
                .await;
            return Ok(Vec::new());
        }
        let (bytes, n) = (commands(list), list.len());
        if self.mirror.is_none() {
            if !fresh {
                return Err(format!(
                    "no connection to {} in this transaction",
                    self.mirror_side
                ));
            }
            self.reconnect_mirror().await?;
        }
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let run = async {
            m.stream.write_all(&bytes).await?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(response::read(m, Expect::Result).await?);
            }
            Ok::<_, PacketError>(out)
        };
        match tokio::time::timeout(self.shared.mirror_timeout, run).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.drop_mirror();
                Err(format!("connection to {} lost: {e}", self.mirror_side))
            }
            Err(_) => {
                self.drop_mirror();
                Err(crate::engine::lockstep::mirror_timed_out(
                    self.mirror_side,
                    self.shared.mirror_timeout,
                ))
            }
        }
    }

    /// The mirror's connection is gone (its state unknown): so are the
    /// statements prepared on it.
    pub(super) fn drop_mirror(&mut self) {
        self.mirror = None;
        for s in self.statements.values_mut() {
            s.mirror_id = None;
        }
    }

    pub(super) async fn reconnect_mirror(&mut self) -> Result<(), String> {
        let (m, thread) = crate::mysql::session::connect_replayed(
            self.shared,
            self.mirror_side,
            &self.legs,
            &self.replay,
        )
        .await?;
        self.mirror_thread = Some(thread);
        for s in self.statements.values_mut() {
            s.mirror_id = None;
        }
        self.mirror = Some(m);
        Ok(())
    }

    /// The client's command as the authority knows it: a statement command
    /// under the authority's id for the statement.
    pub(super) fn for_auth(&self, packet: &[u8]) -> Vec<u8> {
        // Clients write for old: when new is the authority, statements go
        // through the schema mapping (found translatable first, by
        // `not_for_authority`), and the database is new's.
        if matches!(packet.first(), Some(&(COM_QUERY | COM_STMT_PREPARE)))
            && self.mirror_side == Side::Old
        {
            let sql = String::from_utf8_lossy(&packet[1..]);
            if let Ok(Translation::Sql(mapped)) = self.shared.mapping().translate(&sql) {
                if mapped != sql {
                    self.shared.old_names.note(&sql);
                }
                let mut out = vec![packet[0]];
                out.extend_from_slice(mapped.as_bytes());
                return self.with_database(Side::New, out);
            }
        }
        if matches!(
            packet.first(),
            Some(&(COM_QUERY | COM_STMT_PREPARE | COM_INIT_DB))
        ) {
            return self.with_database(self.mirror_side.other(), packet.to_vec());
        }
        let mut out = packet.to_vec();
        let stmt_command = matches!(
            packet.first(),
            Some(
                &(COM_STMT_EXECUTE
                    | COM_STMT_SEND_LONG_DATA
                    | COM_STMT_CLOSE
                    | COM_STMT_RESET
                    | 0x1C)
            )
        );
        if stmt_command {
            if let Some(s) = statement_id(packet).and_then(|id| self.statements.get(&id)) {
                out[1..5].copy_from_slice(&s.auth_id.to_le_bytes());
                if packet[0] == COM_STMT_EXECUTE {
                    // A side that became the authority may not have seen
                    // the types an earlier execute sent.
                    out = with_types(&out, s.params, s.types.as_deref());
                }
            }
        }
        out
    }

    pub(super) async fn on_auth(&mut self, bytes: &[u8], expect: Expect) -> Result<Answer, Stop> {
        use tokio::io::AsyncWriteExt;
        self.auth
            .stream
            .write_all(bytes)
            .await
            .map_err(|e| Stop::Authority(e.into()))?;
        let a = response::read(&mut self.auth, expect)
            .await
            .map_err(Stop::Authority)?;
        self.note_auth(&a).await;
        Ok(a)
    }

    /// Follows the authority's transaction state from its answer. An ERR
    /// says nothing of it, except a deadlock: the server rolled the whole
    /// transaction back, so the mirror's part of it goes too (or a later
    /// BEGIN would commit it there).
    pub(super) async fn note_auth(&mut self, a: &Answer) {
        if a.error_code.is_some_and(is_server_failure_code) {
            self.shared.coord.authority_failed(self.mirror_side.other());
        }
        if a.status_known {
            self.in_tx = a.status & IN_TRANS != 0;
            self.autocommit = a.status & AUTOCOMMIT != 0;
            return;
        }
        if a.error_code == Some(ER_LOCK_DEADLOCK) && self.in_tx {
            self.in_tx = false;
            if self.mirroring() {
                // A failed rollback drops the connection (and with it the
                // mirror's part of the transaction).
                let _ = self.on_mirror(&[&query("ROLLBACK")], false).await;
            }
        }
    }

    /// Reads `n` answers from the authority after sending `bytes`.
    pub(super) async fn on_auth_n(&mut self, bytes: &[u8], n: usize) -> Result<Vec<Answer>, Stop> {
        use tokio::io::AsyncWriteExt;
        self.auth
            .stream
            .write_all(bytes)
            .await
            .map_err(|e| Stop::Authority(e.into()))?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let a = response::read(&mut self.auth, Expect::Result)
                .await
                .map_err(Stop::Authority)?;
            self.note_auth(&a).await;
            out.push(a);
        }
        Ok(out)
    }

    /// Whether the session has a mirror to send to (a connection, or the
    /// async queue that owns one).
    pub(super) fn mirroring(&self) -> bool {
        self.mirror.is_some() || self.queue.is_some()
    }

    /// The classification a client's command is recorded under when a
    /// piece of it is queued for the mirror (a query's own is set when it
    /// runs, by [`Self::statement`]).
    pub(super) fn command_class(&mut self, packet: &[u8]) -> Arc<Classification> {
        match packet.first() {
            Some(&COM_INIT_DB) => {
                let db = String::from_utf8_lossy(&packet[1..]).replace('`', "``");
                self.classify(&format!("USE `{db}`"))
            }
            Some(&COM_STMT_PREPARE) => {
                let sql = String::from_utf8_lossy(&packet[1..]).into_owned();
                self.classify(&sql)
            }
            Some(
                &(COM_STMT_EXECUTE | COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET),
            ) => statement_id(packet)
                .and_then(|id| self.statements.get(&id))
                .map(|s| s.class.clone())
                .unwrap_or_default(),
            _ => Arc::default(),
        }
    }
}
