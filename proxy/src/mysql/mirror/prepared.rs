//! Prepared statements and the other commands that name one: the
//! authority's and the mirror's ids for the client's statement, its
//! parameter types, and the database each side knows it in.

use super::{
    first_error, query, statement_id, types_of, with_types, MyMirror, Prepared, Step, Stop,
    COM_INIT_DB, COM_QUERY, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE,
    COM_STMT_SEND_LONG_DATA,
};
use crate::engine::route::Route;
use crate::mapping::Translation;
use crate::mysql::packet::{encode, err_payload};
use crate::mysql::queue::{Replay, Work};
use crate::mysql::response::{self, Expect};
use tracing::warn;
use turnout_control::Side;

impl MyMirror<'_> {
    /// What the mirror runs for the client's `packet`: an execute is given
    /// the mirror's statement id (preparing it there first) and its types.
    pub(super) async fn mirror_packet(&mut self, packet: &[u8]) -> Result<Vec<u8>, String> {
        let databases = self.shared.databases();
        if packet.first() == Some(&COM_QUERY) {
            let sql = String::from_utf8_lossy(&packet[1..]);
            let mapping = self.shared.mapping();
            let p = match mapping.toward(self.mirror_side).translate(&sql) {
                Ok(Translation::Sql(mapped)) => query(&mapped),
                Ok(_) => packet.to_vec(),
                Err(e) => return Err(format!("mapping: {e}")),
            };
            return Ok(databases.packet_for(self.mirror_side, &p)?.unwrap_or(p));
        }
        if packet.first() == Some(&COM_INIT_DB) {
            return Ok(databases
                .packet_for(self.mirror_side, packet)?
                .unwrap_or_else(|| packet.to_vec()));
        }
        if packet.first() != Some(&COM_STMT_EXECUTE)
            && packet.first() != Some(&COM_STMT_SEND_LONG_DATA)
        {
            return Ok(packet.to_vec());
        }
        let id = statement_id(packet).ok_or("malformed statement command")?;
        // The queue's connection knows statements by the client's id.
        let mirror_id = match self.queue {
            Some(_) => id,
            None => self.mirror_statement(id).await?,
        };
        let mut out = packet.to_vec();
        out[1..5].copy_from_slice(&mirror_id.to_le_bytes());
        if packet[0] == COM_STMT_EXECUTE {
            let s = self.statements.get(&id).ok_or("unknown statement")?;
            out = with_types(&out, s.params, s.types.as_deref());
        }
        Ok(out)
    }

    /// `packet` (a query, prepare or COM_INIT_DB) with `side`'s database
    /// (checked mappable first, by [`Self::database_refusal`]).
    pub(super) fn with_database(&self, side: Side, packet: Vec<u8>) -> Vec<u8> {
        match self.shared.databases().packet_for(side, &packet) {
            Ok(Some(mapped)) => mapped,
            _ => packet,
        }
    }

    /// Why the client's `packet` cannot run: it names a database neither
    /// side has, or the authority's form of it cannot be made.
    pub(super) fn database_refusal(&self, packet: &[u8]) -> Option<String> {
        let databases = self.shared.databases();
        if databases.same() {
            return None;
        }
        databases.packet_for(self.mirror_side.other(), packet).err()
    }

    /// The mirror's id for the client's statement `id`, preparing it there.
    pub(super) async fn mirror_statement(&mut self, id: u32) -> Result<u32, String> {
        let (sql, known) = match self.statements.get(&id) {
            Some(s) => (s.sql.clone(), s.mirror_id),
            None => return Err(format!("statement {id} is unknown to turnout")),
        };
        if let Some(m) = known {
            return Ok(m);
        }
        // The callers connect again where a transaction starts; a new
        // connection never takes over inside one (it would apply the rest
        // of it on its own).
        if self.mirror.is_none() {
            return Err(format!(
                "no connection to {} in this transaction",
                self.mirror_side
            ));
        }
        let sql = self.prepared_for_mirror(sql)?;
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let mut p = vec![COM_STMT_PREPARE];
        p.extend_from_slice(sql.as_bytes());
        m.write(0, &p).await.map_err(|e| e.to_string())?;
        let a = response::read(m, Expect::Prepare)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(e) = a.error {
            return Err(e);
        }
        let (mirror_id, _) = a.statement.ok_or("no statement id in the answer")?;
        if let Some(s) = self.statements.get_mut(&id) {
            s.mirror_id = Some(mirror_id);
        }
        Ok(mirror_id)
    }

    /// A statement the client prepared (`sql`, written for old) as the
    /// mirror's side prepares it, or why it cannot.
    pub(super) fn prepared_for_mirror(&self, sql: String) -> Result<String, String> {
        let mapping = self.shared.mapping();
        let sql = match mapping.toward(self.mirror_side).translate_prepared(&sql) {
            Ok(Translation::Sql(mapped)) => mapped,
            Ok(Translation::Unchanged) => sql,
            Ok(_) => {
                return Err(
                    "mapping: this prepared statement changes shape for new (values dropped or added); not translated"
                        .into(),
                )
            }
            Err(e) => return Err(format!("mapping: {e}")),
        };
        Ok(self
            .shared
            .databases()
            .sql_for(self.mirror_side, &sql)?
            .unwrap_or(sql))
    }

    pub(super) async fn prepare(&mut self, packet: &[u8]) -> Step {
        let sql = String::from_utf8_lossy(&packet[1..]).into_owned();
        if crate::mysql::kill::parse(&sql).is_some() {
            return self.tell(&crate::mysql::kill::prepare_refused()).await;
        }
        if let Some(reason) = self.not_for_authority(&sql, true) {
            let msg = format!(
                "turnout: this statement cannot be translated for new, which is the authority now: {reason}"
            );
            return self.tell(&err_payload(1235, "42000", &msg)).await;
        }
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Prepare)
            .await?;
        if let Some((id, params)) = a.statement {
            // Classified when the command came in (`command_class`).
            let class = self.unit_class.clone();
            if self.queue.is_some() {
                // The queue's connection prepares it when first executed.
                let work = Work::Prepare {
                    id,
                    sql: self.prepared_for_mirror(sql.clone()),
                };
                let in_transaction = self.in_tx;
                if let Some(q) = self.queue.as_mut() {
                    q.push(work, &class, false, in_transaction, &self.replay)
                        .await;
                }
            }
            self.statements.insert(
                id,
                Prepared {
                    auth_id: id,
                    sql,
                    class,
                    params,
                    mirror_id: None,
                    types: None,
                },
            );
        }
        self.relay(&a).await
    }

    pub(super) async fn execute(&mut self, packet: &[u8]) -> Step {
        let Some(id) = statement_id(packet) else {
            return self.authority(packet).await.map(|_| ());
        };
        let Some(s) = self.statements.get_mut(&id) else {
            return self.authority(packet).await.map(|_| ());
        };
        if let Some(t) = types_of(packet, s.params) {
            s.types = Some(t);
        }
        let class = s.class.clone();
        let sql = s.sql.clone();
        self.statement(packet, &class, &sql).await
    }

    /// COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA: no answer; a write's
    /// go to the mirror too.
    pub(super) async fn no_answer(&mut self, packet: &[u8]) -> Step {
        use tokio::io::AsyncWriteExt;
        self.auth
            .stream
            .write_all(&encode(0, &self.for_auth(packet)).0)
            .await
            .map_err(|e| Stop::Authority(e.into()))?;
        let Some(id) = statement_id(packet) else {
            return Ok(());
        };
        let mirrored = self.statements.get(&id).and_then(|s| s.mirror_id);
        if packet[0] == COM_STMT_CLOSE {
            self.statements.remove(&id);
            if self.queue.is_some() {
                // The queue's connection closes its own copy, if it has one.
                let _ = self.on_mirror(&[packet], false).await;
            }
            if let (Some(mid), Some(m)) = (mirrored, self.mirror.as_mut()) {
                let mut p = packet.to_vec();
                p[1..5].copy_from_slice(&mid.to_le_bytes());
                let _ = m.write(0, &p).await;
            }
            return Ok(());
        }
        let write = self
            .statements
            .get(&id)
            .is_some_and(|s| matches!(self.route(&s.class), Route::Write | Route::Unwrapped));
        if write {
            match self.mirror_packet(packet).await {
                Ok(p) if self.queue.is_some() => {
                    let _ = self.on_mirror(&[&p], false).await;
                }
                Ok(p) => {
                    if let Some(m) = self.mirror.as_mut() {
                        let _ = m.write(0, &p).await;
                    }
                }
                Err(e) => self.mirror_failed(&self.packet_sql(packet), &e),
            }
        }
        Ok(())
    }

    pub(super) async fn reset(&mut self, packet: &[u8]) -> Step {
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Result)
            .await?;
        if let Some(mid) = statement_id(packet)
            .and_then(|id| self.statements.get(&id))
            .and_then(|s| s.mirror_id)
        {
            let mut p = packet.to_vec();
            p[1..5].copy_from_slice(&mid.to_le_bytes());
            let _ = self.on_mirror(&[&p], false).await;
        } else if self.queue.is_some() {
            let _ = self.on_mirror(&[packet], false).await;
        }
        self.relay(&a).await
    }

    /// COM_RESET_CONNECTION: both sides drop the session's state (open
    /// transaction, settings, prepared statements); so does turnout.
    pub(super) async fn reset_connection(&mut self, packet: &[u8]) -> Step {
        let a = self.on_auth(&encode(0, packet).0, Expect::Result).await?;
        if self.mirroring() {
            if let Err(e) = self.on_mirror(&[packet], false).await.and_then(first_error) {
                // The mirror's session state is unknown now: start afresh.
                warn!(side = %self.mirror_side, error = %e, "mirror connection reset failed; reconnecting");
                self.drop_mirror();
            }
        }
        self.replay = Replay::default();
        self.statements.clear();
        self.in_tx = false;
        self.autocommit = true;
        self.relay(&a).await
    }
}
