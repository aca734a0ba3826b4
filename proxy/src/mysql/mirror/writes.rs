//! Writes in a mirrored MySQL session: on the authority first with the
//! time fixed, then on the mirror with the same time and generated id;
//! COMMIT through the engine's lockstep sequence (the mirror commits
//! first); settings on both sides.

use super::{
    commands, first_error, now_timestamp, query, Defaults, MyMirror, Step, Stop, COM_QUERY,
    MAX_REPLAY,
};
use crate::engine::defaults;
use crate::engine::lockstep::{self, Interrupted, Sides};
use crate::engine::Classification;
use crate::mysql::packet::{encode, err_payload};
use crate::mysql::response::{self, Answer, Expect};
use std::sync::Arc;
use turnout_config::{MirrorErrorPolicy, UnsafePolicy};
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::Side;

struct MyCommit<'s, 'a> {
    s: &'s mut MyMirror<'a>,
    packet: &'s [u8],
    class: Arc<Classification>,
    sql: String,
}

impl Sides for MyCommit<'_, '_> {
    type Stop = Stop;

    async fn settle_mirror(&mut self) -> Option<String> {
        self.s.unmirrored_in_tx.take()
    }

    async fn mirror_commit(&mut self) -> Result<(), String> {
        self.s.mirror_once(self.packet, false).await
    }

    async fn mirror_rollback(&mut self) {
        let _ = self.s.mirror_once(&query("ROLLBACK"), false).await;
    }

    async fn authority_commit(&mut self) -> Result<Option<String>, Interrupted<Stop>> {
        let to_auth = encode(0, &self.s.for_auth(self.packet)).0;
        let a = match self.s.on_auth(&to_auth, Expect::Result).await {
            Ok(a) => a,
            Err(stop) => {
                let authority_lost = match &stop {
                    Stop::Authority(e) => Some(e.to_string()),
                    _ => None,
                };
                return Err(Interrupted {
                    stop,
                    authority_lost,
                });
            }
        };
        if let Err(stop) = self.s.relay(&a).await {
            // The client is gone; what the authority said is kept.
            if let Some(e) = &a.error {
                let side = self.s.mirror_side;
                self.record(lockstep::authority_commit_failed(
                    side,
                    &self.class.fingerprint,
                    e,
                ));
            }
            return Err(Interrupted {
                stop,
                authority_lost: None,
            });
        }
        Ok(a.error)
    }

    async fn fail_both(&mut self, message: String) -> Step {
        self.s
            .on_auth(&encode(0, &query("ROLLBACK")).0, Expect::Result)
            .await?;
        self.s.tell(&err_payload(1180, "HY000", &message)).await
    }

    fn record(&self, d: Divergence) {
        self.s.record_located(d, &self.class, &self.sql);
    }
}

impl MyMirror<'_> {
    /// An INSERT that leaves columns to volatile defaults (`UUID()`,
    /// `RAND()`, `UUID_SHORT()`, `SYSDATE()`, which statement context does
    /// not carry): a text statement gets the values evaluated on the
    /// authority first and written in, so both sides insert the same; a
    /// prepared one is recorded as unsafe (or refused under
    /// `mirror.on_unsafe = "fail"`).
    pub(super) async fn volatile_defaults(
        &mut self,
        packet: &[u8],
        class: &Classification,
        sql: &str,
    ) -> Result<Defaults, Stop> {
        let Some(table) = class.insert_table.as_deref() else {
            return Ok(Defaults::Kept);
        };
        if class.statements.len() != 1 {
            return Ok(Defaults::Kept);
        }
        let found = self.volatile_columns(table).await?;
        let reason = match defaults::plan_mysql(sql, &found) {
            Ok(None) => return Ok(Defaults::Kept),
            Ok(Some(plan)) if packet.first() == Some(&COM_QUERY) => {
                let values = crate::backend::mysql::rows(&mut self.auth, &plan.values_query())
                    .await
                    .map_err(String::from);
                match values.and_then(|rows| plan.apply(sql, &rows.into_data())) {
                    Ok(written) => return Ok(Defaults::Written(written)),
                    Err(e) => format!("generated values could not be applied: {e}"),
                }
            }
            Ok(Some(plan)) => format!(
                "a prepared INSERT leaves {} to volatile defaults; their values differ on the mirror",
                plan.missing_columns()
            ),
            Err(reason) => reason.to_string(),
        };
        if self.shared.unsafe_policy == UnsafePolicy::Fail {
            return Ok(Defaults::Refused(format!(
                "turnout: refused, not safe to mirror: {reason} (mirror.on_unsafe = fail)"
            )));
        }
        self.record(DivergenceKind::UnsafeStatement, class, &reason, sql);
        Ok(Defaults::Kept)
    }

    /// `table`'s columns with volatile defaults, asked of the authority
    /// once per session (under old's names when new is the authority).
    pub(super) async fn volatile_columns(
        &mut self,
        table: &str,
    ) -> Result<defaults::TableDefaults, Stop> {
        if let Some(d) = self.table_defaults.get(table) {
            return Ok(d.clone());
        }
        let mapped = match self.mirror_side {
            Side::Old => self.shared.mapping().table_on_new(table),
            Side::New => None,
        };
        let on_authority = mapped.as_ref().map_or(table, |(t, _)| t.as_str());
        let rows = crate::backend::mysql::rows(
            &mut self.auth,
            &defaults::mysql_catalog_query(on_authority),
        )
        .await;
        let Ok(rows) = rows else {
            // Not cached: asked again next time.
            return Ok(defaults::TableDefaults::default());
        };
        let rows = match &mapped {
            Some((_, back)) => back.rows_under_old_names(rows, "column_name"),
            None => rows,
        };
        let d = defaults::mysql_from_catalog_rows(&rows);
        self.table_defaults.insert(table.to_string(), d.clone());
        Ok(d)
    }

    /// Session settings and transaction control: the authority answers,
    /// the mirror follows. `keep`: a setting, replayed on a new mirror
    /// connection.
    pub(super) async fn both(&mut self, packet: &[u8], keep: bool) -> Step {
        if self.routing.phase.mirror().is_none() {
            return self.authority(packet).await.map(|_| ());
        }
        let fresh = !self.in_tx;
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Result)
            .await?;
        if a.error.is_none() {
            if keep && self.replay.len() < MAX_REPLAY {
                Arc::make_mut(&mut self.replay).push(packet.to_vec());
            }
            if let Err(e) = self.mirror_once(packet, fresh).await {
                self.mirror_failed(&self.packet_sql(packet), &e);
            }
        }
        self.relay(&a).await
    }

    /// Runs the client's command `packet` on the mirror (an execute under
    /// the mirror's statement id) and reads its answer.
    pub(super) async fn mirror_once(&mut self, packet: &[u8], fresh: bool) -> Result<(), String> {
        if self.mirror.is_none() && self.queue.is_none() && fresh {
            self.reconnect_mirror().await?;
        }
        let p = self.mirror_packet(packet).await?;
        self.on_mirror(&[&p], fresh).await.and_then(first_error)
    }

    /// COMMIT: the mirror commits first, then the authority (the engine's
    /// lockstep sequence).
    pub(super) async fn commit(&mut self, packet: &[u8]) -> Step {
        let policy = self.shared.mirror_policy;
        let records = self.shared.records.clone();
        let sql = self.packet_sql(packet);
        let class = self.shared.classifier.classify(&sql);
        let side = self.mirror_side;
        let mut sides = MyCommit {
            s: self,
            packet,
            class: class.clone(),
            sql,
        };
        lockstep::commit(&mut sides, side, &class.fingerprint, policy, &records).await
    }

    /// The authority's connection was lost during a COMMIT the mirror had
    /// already made: the transaction may be on the mirror's side alone.
    pub(super) fn authority_lost_at_commit(&self, sql: &str, e: &Stop) {
        if let Stop::Authority(e) = e {
            let class = self.shared.classifier.classify(sql);
            let d = lockstep::authority_lost_at_commit(
                self.mirror_side,
                &class.fingerprint,
                &e.to_string(),
            );
            self.record_located(d, &class, sql);
        }
    }

    /// A write: on the authority in a transaction with the time fixed, then
    /// on the mirror with the same time and first generated id.
    pub(super) async fn write(&mut self, packet: &[u8], sql: &str) -> Step {
        // With autocommit off the server opens the transaction itself and
        // the client ends it.
        let wrap = !self.in_tx && self.autocommit;
        // The client's own `SET timestamp` stands on both sides (it went to
        // both): turnout's pin keeps it rather than overriding it.
        let (ts, reset) = if self.context.client_timestamp {
            ("@@timestamp".to_string(), "SET TIMESTAMP = @@timestamp")
        } else {
            (now_timestamp(), "SET TIMESTAMP = DEFAULT")
        };
        let set_ts = query(&format!("SET TIMESTAMP = {ts}"));
        let reset_ts = query(reset);
        let begin = query("BEGIN");
        let mut list: Vec<&[u8]> = Vec::new();
        if wrap {
            list.push(&begin);
        }
        let to_auth = self.for_auth(packet);
        // MariaDB's INSERT ... RETURNING answers with rows, not an OK
        // carrying the first generated id: it is asked for.
        let returning = inserts_returning(sql);
        let last_id = query("SELECT LAST_INSERT_ID()");
        list.extend([&set_ts[..], &to_auth[..]]);
        if returning {
            list.push(&last_id);
        }
        list.push(&reset_ts);
        let mut answers = self.on_auth_n(&commands(&list), list.len()).await?;
        let generated = match returning {
            true => answers
                .remove(answers.len() - 2)
                .first_text_value()
                .and_then(|v| v.parse::<u64>().ok()),
            false => None,
        };
        let mut answer = answers.remove(answers.len() - 2);
        if answer.insert_id == 0 {
            answer.insert_id = generated.unwrap_or(0);
        }
        if answer.error.is_some() {
            if wrap {
                self.on_auth(&encode(0, &query("ROLLBACK")).0, Expect::Result)
                    .await?;
                answer.outside_transaction();
            }
            return self.relay(&answer).await;
        }
        if wrap && self.mirror.is_none() && self.queue.is_none() {
            if let Err(e) = self.reconnect_mirror().await {
                return self.after_mirror(Err(e), wrap, answer, sql).await;
            }
        }
        let packet = match self.mirror_packet(packet).await {
            Ok(p) => p,
            Err(e) => {
                return self.after_mirror(Err(e), wrap, answer, sql).await;
            }
        };
        let mut context = format!("SET TIMESTAMP = {ts}");
        if answer.insert_id > 0 {
            context.push_str(&format!(", INSERT_ID = {}", answer.insert_id));
        }
        let set_context = query(&context);
        let commit = query("COMMIT");
        let mut list: Vec<&[u8]> = Vec::new();
        if wrap {
            list.push(&begin);
        }
        list.extend([&set_context[..], &packet[..], &reset_ts[..]]);
        if wrap {
            list.push(&commit);
        }
        let at = usize::from(wrap) + 1;
        let mirrored = self.on_mirror(&list, wrap).await.and_then(|answers| {
            let affected = answers.get(at).map(|a| a.affected_total);
            first_error(answers).map(|()| affected)
        });
        let mirrored = match mirrored {
            Ok(Some(n)) if n != answer.affected_total => {
                self.row_count_mismatch(sql, answer.affected_total, n)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        // turnout's own statements after the client's (the pin's reset, its
        // COMMIT) reset ROW_COUNT(): the client's next text gets this count.
        self.context.wrapped_count = Some(answer.affected_total);
        self.after_mirror(mirrored, wrap, answer, sql).await
    }

    /// Why the write `sql` is not the same on the mirror because of a
    /// trigger of its table that draws values of each server's own (from
    /// the authority's catalog, once per table).
    pub(super) async fn drawn_trigger(&mut self, sql: &str) -> Option<String> {
        let table = crate::mysql::log::written_table(sql)?;
        let table = table
            .rsplit('.')
            .next()
            .unwrap_or(&table)
            .trim_matches('`')
            .to_string();
        let event = match crate::engine::text::first_word(sql)
            .to_ascii_uppercase()
            .as_str()
        {
            "UPDATE" => "'UPDATE'",
            "DELETE" => "'DELETE'",
            "REPLACE" => "'INSERT', 'DELETE'",
            _ => "'INSERT', 'UPDATE'",
        };
        let key = format!("{table} {event}");
        if let Some(&drawn) = self.context.drawn_triggers.get(&key) {
            return drawn.then(|| drawn_trigger_reason(&table));
        }
        let q = super::context::drawn_trigger_query(&table, event);
        let rows = crate::backend::mysql::rows(&mut self.auth, &q).await.ok()?;
        let drawn = rows
            .iter()
            .next()
            .and_then(|r| r.text("n").ok().flatten().map(|n| n != "0"))
            .unwrap_or(false);
        self.context.drawn_triggers.insert(key, drawn);
        drawn.then(|| drawn_trigger_reason(&table))
    }

    /// Why a read `sql` writes on the authority alone: it calls a stored
    /// function that writes (from the authority's catalog).
    pub(super) async fn writing_function(&mut self, sql: &str) -> Option<String> {
        if self.context.writing_functions.is_none() {
            let rows =
                crate::backend::mysql::rows(&mut self.auth, super::context::WRITING_FUNCTIONS)
                    .await
                    .ok()?;
            let names = rows
                .iter()
                .filter_map(|r| r.text("name").ok().flatten().map(str::to_string))
                .collect();
            self.context.writing_functions = Some(names);
        }
        let f = super::context::calls_one_of(sql, self.context.writing_functions.as_deref()?)?;
        Some(format!(
            "calls {f}(), a stored function that writes: its writes are on the authority alone (not mirrored)"
        ))
    }

    /// The sides reported different affected-row counts for one mirrored
    /// write: they held different rows. Recorded as `row_count_mismatch`
    /// with both counts; under `mirror.on_error = "fail"` the write fails
    /// (`Err`, rolled back on both sides).
    pub(super) fn row_count_mismatch(
        &self,
        sql: &str,
        authority: u64,
        mirror: u64,
    ) -> Result<(), String> {
        let loc = crate::engine::locate::locate_text(sql);
        let table = loc.table.as_deref().unwrap_or_default();
        if mirror < authority && self.shared.backfill.may_lack_rows(table) {
            // The backfill has not copied this table yet: new lacks rows
            // by design.
            return Ok(());
        }
        let detail = format!(
            "the authority reported {authority} affected row(s), {} reported {mirror}: the sides held different rows",
            self.mirror_side
        );
        if self.shared.mirror_policy == MirrorErrorPolicy::Fail {
            return Err(detail);
        }
        self.shared.records.mirror_error();
        let class = self.shared.classifier.classify(sql);
        let mut d = Divergence::new(
            DivergenceKind::RowCountMismatch,
            self.mirror_side,
            &class.fingerprint,
            &detail,
        );
        d.table = loc.table;
        d.key = loc.key;
        if self.shared.records.log_statements {
            d.statement = Some(sql.to_string());
        }
        self.shared.records.divergence(d);
        Ok(())
    }

    /// The mirror's outcome decides: on success (or under `record`) the
    /// authority commits (when turnout wrapped the write) and the client
    /// gets its answer; under `fail` both roll back and the client gets
    /// an error.
    pub(super) async fn after_mirror(
        &mut self,
        mirrored: Result<(), String>,
        wrap: bool,
        mut answer: Answer,
        sql: &str,
    ) -> Step {
        if let Err(e) = mirrored {
            if self.fails(sql, &e) {
                self.on_auth(&encode(0, &query("ROLLBACK")).0, Expect::Result)
                    .await?;
                if !wrap {
                    if let Some(m) = self.mirror.as_mut() {
                        let _ = m.write(0, &query("ROLLBACK")).await;
                        let _ = response::read(m, Expect::Result).await;
                    }
                }
                let msg = format!("turnout: the write failed on the mirror ({}): {e}; rolled back on both sides (mirror.on_error = fail)", self.mirror_side);
                return self.tell(&err_payload(1180, "HY000", &msg)).await;
            }
        }
        if wrap {
            let c = self
                .on_auth(&encode(0, &query("COMMIT")).0, Expect::Result)
                .await
                .inspect_err(|e| self.authority_lost_at_commit(sql, e))?;
            if let Some(e) = &c.error {
                self.record_text(DivergenceKind::AuthorityCommitFailed, sql, e);
                return self.relay(&c).await;
            }
            answer.outside_transaction();
        }
        self.relay(&answer).await
    }

    /// Several statements (or DDL under `mirror.ddl = both`): the
    /// authority, then the mirror, as they are.
    pub(super) async fn unwrapped(&mut self, packet: &[u8]) -> Step {
        let fresh = !self.in_tx;
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Result)
            .await?;
        if a.error.is_none() {
            if let Err(e) = self.mirror_once(packet, fresh).await {
                self.mirror_failed(&self.packet_sql(packet), &e);
            }
        }
        self.relay(&a).await
    }

    /// A write (or DDL) whose effect the authority's binary log carries to
    /// the mirror: the authority alone, as the client sent it (no time or
    /// id pinned, nothing added on its connection); once it committed
    /// (autocommit, or a text of several), the answer waits in sync mode
    /// until the applier passed it.
    pub(super) async fn logged(&mut self, packet: &[u8], class: &Classification) -> Step {
        if class.kind() == crate::engine::Kind::Ddl {
            // The applier knows it by the thread that runs it.
            let thread = self.shared.mysql.sessions.get(&self.id).map(|r| r.thread);
            if let Some(thread) = thread {
                *self
                    .shared
                    .mysql
                    .binlog
                    .ddl_threads
                    .entry(thread)
                    .or_insert(0) += 1;
            }
        }
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Result)
            .await?;
        if a.error.is_none() && a.affected_total > 0 {
            let sql = self.packet_sql(packet);
            if let Some(t) = crate::mysql::log::written_table(&sql) {
                if !self.log_tables.contains(&t) {
                    self.log_tables.push(t);
                }
            }
        }
        if !self.in_tx && (a.error.is_none() || class.statements.len() > 1) {
            let tables = std::mem::take(&mut self.log_tables);
            crate::mysql::log::committed(self.shared, &tables).await;
        }
        self.relay(&a).await
    }

    /// COMMIT while the binary log feeds the mirror: the authority commits;
    /// the mirror's connection (reads only) ends its transaction too; a
    /// transaction that wrote (or whose reads the mirror serves) is
    /// answered once the applier passed it.
    pub(super) async fn logged_commit(&mut self, packet: &[u8]) -> Step {
        let a = self
            .on_auth(&encode(0, &self.for_auth(packet)).0, Expect::Result)
            .await?;
        let reads_on_mirror = self.routing.phase.read_target() == self.mirror_side;
        if self.mirror.is_some() && reads_on_mirror {
            let _ = self.mirror_once(packet, false).await;
        }
        let tables = std::mem::take(&mut self.log_tables);
        if a.error.is_none() && (self.wrote || reads_on_mirror) {
            crate::mysql::log::committed(self.shared, &tables).await;
        }
        self.relay(&a).await
    }

    /// A statement the mirror did not run ended the authority's transaction
    /// (MySQL commits implicitly before `ANALYZE TABLE`, schema changes and
    /// the like): the mirror commits its part too.
    pub(super) async fn implicit_commit(&mut self) {
        if !self.mirroring() {
            return;
        }
        let committed = self
            .on_mirror(&[&query("COMMIT")], false)
            .await
            .and_then(first_error);
        if let Err(e) = committed {
            self.mirror_failed("COMMIT", &e);
        }
    }
}

fn drawn_trigger_reason(table: &str) -> String {
    format!("{table} has a trigger that draws values of each server's own (UUID(), RAND(), ...) or inserts rows (ids of the mirror's own counter): the rows it writes may differ on the mirror")
}

/// An INSERT or REPLACE with a RETURNING clause (MariaDB): its answer is a
/// result set, which carries no generated id. On every write, so it looks
/// without allocating.
fn inserts_returning(sql: &str) -> bool {
    let text = sql.trim_start().as_bytes();
    let starts = |w: &[u8]| {
        text.get(..w.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(w))
    };
    if !starts(b"INSERT") && !starts(b"REPLACE") {
        return false;
    }
    let word = |b: Option<&u8>| b.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
    text.windows(9).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(b"RETURNING")
            && !word(i.checked_sub(1).and_then(|j| text.get(j)))
            && !word(text.get(i + 9))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn inserts_returning_is_told_by_its_words() {
        for (sql, says) in [
            ("INSERT INTO t (a) VALUES (1) RETURNING id", true),
            ("  insert into t values (1)\nreturning *", true),
            ("REPLACE INTO t VALUES (1) RETURNING id", true),
            ("INSERT INTO returning_log VALUES (1)", false),
            ("INSERT INTO t (not_returning) VALUES (1)", false),
            ("UPDATE t SET a = 1 RETURNING id", false),
            ("DELETE FROM t RETURNING id", false),
            ("INSERT", false),
        ] {
            assert_eq!(super::inserts_returning(sql), says, "{sql}");
        }
    }
}
