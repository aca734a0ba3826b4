//! A mirrored session when the authority's log feeds the mirror
//! (`mirror.source = "log"`): the session mirrors no write itself. Each
//! transaction that wrote is marked in the log before it commits (a
//! message the applier sees in the same transaction); in sync mode the
//! client's answer to the commit waits until the mirror applied it.
//!
//! Where the mark goes:
//! - a `COMMIT` (simple or extended): just before it, in the transaction;
//! - an autocommit write by the simple protocol: wrapped as `BEGIN`, the
//!   write, the mark, `COMMIT`, sent at once;
//! - an extended-protocol batch that commits at its Sync: just before it;
//! - what cannot be wrapped (COPY, CALL, DO, a text with its own
//!   transaction control): a mark of its own right after, in a
//!   transaction of its own (committed after the client's).
//!
//! DDL under `mirror.ddl = "both"` travels in the log too, at its place in
//! its transaction, with the session's search_path and role.

use super::{collect, query, Collected, MirrorSession, Step, Stop};
use crate::backend::pg::literal;
use crate::engine::logsync::{Waiter, DDL_PREFIX, MARK_PREFIX, SKIP_PREFIX};
use crate::engine::{Classification, Kind};
use crate::pg::codec;
use bytes::BytesMut;
use turnout_control::divergence::{Divergence, DivergenceKind};

/// The session's part in the log source, for the current transaction.
#[derive(Default)]
pub(super) struct LogState {
    /// The authority's log feeds the mirror in this transaction.
    pub on: bool,
    /// A mark made in the current transaction, not committed yet.
    pub mark: Option<Waiter>,
    /// A committed mark: the client's next answer waits for the mirror.
    pub wait: Option<Waiter>,
    /// ReadyForQuery is queued but not sent yet (a mark still follows).
    pub hold_ready: bool,
    /// DDL ran: once it committed, the client's answer waits until the
    /// publications carry what it changed.
    pub ddl: bool,
}

/// Whether `sql` calls a function that writes a large object.
fn writes_large_objects(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| crate::engine::row_image::LARGE_OBJECT_WRITES.contains(&w))
}

/// Whether `sql` may run inside a transaction of turnout's (no
/// transaction control of its own; not a statement PostgreSQL refuses in
/// a block or one that manages transactions itself).
fn wrappable(sql: &str, class: &Classification) -> bool {
    if class
        .statements
        .iter()
        .any(|s| matches!(s.kind, Kind::Transaction(_)))
    {
        return false;
    }
    let first = crate::engine::text::first_word(sql);
    !matches!(
        first.as_str(),
        "call" | "do" | "copy" | "vacuum" | "cluster" | "reindex" | "checkpoint"
    )
}

impl MirrorSession<'_> {
    /// The statement that marks the current transaction in the log when
    /// it wrote (a row comes back then).
    pub(super) fn mark_sql(&mut self) -> String {
        let (token, w) = self.shared.log.mark();
        if let Some(old) = self.log.mark.replace(w) {
            self.shared.log.forget(old);
        }
        format!(
            "SELECT pg_catalog.pg_logical_emit_message(true, {}, {}) WHERE pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL",
            literal(MARK_PREFIX),
            literal(&token)
        )
    }

    /// The mark query's answer: a row when it marked.
    pub(super) fn marked(&mut self, rows: usize) {
        if rows == 0 {
            if let Some(w) = self.log.mark.take() {
                self.shared.log.forget(w);
            }
        }
    }

    /// The transaction ended; `committed`: it did, with the mark `mark`
    /// taken before its end (the client's answer then waits, in sync mode).
    pub(super) fn mark_ended(&mut self, mark: Option<Waiter>, committed: bool) {
        let Some(w) = mark else { return };
        if committed && self.shared.log.sync {
            if let Some(old) = self.log.wait.replace(w) {
                self.shared.log.forget(old);
            }
        } else {
            self.shared.log.forget(w);
        }
    }

    /// Before an answer goes to the client: a committed mark waits until
    /// the mirror applied its transaction (or the applier is known to be
    /// behind: then at once, counted).
    pub(super) async fn await_mirror(&mut self) {
        if let Some(w) = self.log.wait.take() {
            self.shared.log.wait(w).await;
        }
        if self.log.ddl && self.status == b'I' {
            self.log.ddl = false;
            self.shared
                .log
                .refresh_after_ddl(std::time::Duration::from_secs(5))
                .await;
        }
    }

    /// The bracket (`on` or `off`) around a statement whose changes the
    /// applier skips.
    fn skip_sql(on: bool) -> String {
        format!(
            "SELECT pg_catalog.pg_logical_emit_message(true, {}, {})",
            literal(SKIP_PREFIX),
            literal(if on { "on" } else { "off" })
        )
    }

    /// A statement a rule keeps on the authority (`never_mirror`, or `old`
    /// / `new` naming the authority): its changes are bracketed in the log
    /// so the applier skips them; a lone statement gets a transaction of
    /// turnout's for the brackets.
    pub(super) async fn logged_skip(
        &mut self,
        raw: &[u8],
        sql: &str,
        class: &Classification,
    ) -> Step {
        if !wrappable(sql, class) {
            // Its own transaction control, or COPY: the brackets cannot
            // surround it; the log carries it to the mirror, recorded.
            let mut d = Divergence::new(
                DivergenceKind::UnsafeStatement,
                self.mirror_side,
                &class.fingerprint,
                "a rule keeps this statement on one side, but it manages its own transactions (or is COPY): the log carries its changes to the mirror",
            );
            d.statement = None;
            self.shared.records.located(d, raw);
            self.send_auth(raw).await.map_err(Stop::Authority)?;
            return self.relay_authority().await.map(|_| ());
        }
        let fresh = self.status == b'I';
        let mut msgs = BytesMut::new();
        if fresh {
            msgs.extend_from_slice(&query("BEGIN"));
        }
        msgs.extend_from_slice(&query(&Self::skip_sql(true)));
        msgs.extend_from_slice(raw);
        msgs.extend_from_slice(&query(&Self::skip_sql(false)));
        if fresh {
            msgs.extend_from_slice(&query("COMMIT"));
        }
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        if fresh {
            collect(&mut self.auth).await.map_err(Stop::Authority)?;
        }
        collect(&mut self.auth).await.map_err(Stop::Authority)?;
        let result = self.collect_authority().await?;
        collect(&mut self.auth).await.map_err(Stop::Authority)?;
        if !fresh {
            return self.relay_collected(&result, result.status).await;
        }
        let commit = self.collect_authority().await?;
        if result.error.is_some() {
            return self.relay_collected(&result, b'I').await;
        }
        if commit.error.is_some() {
            let mut answer = Collected {
                frames: result
                    .frames
                    .into_iter()
                    .filter(|f| !matches!(f.tag, b'C' | b'Z'))
                    .collect(),
                error: commit.error.clone(),
                status: b'I',
            };
            answer.frames.extend(commit.frames);
            return self.relay_collected(&answer, b'I').await;
        }
        self.relay_collected(&result, b'I').await
    }

    /// The statement that puts `sql` (DDL the authority just ran) into the
    /// log at this place, with the session's search_path and role.
    fn ddl_message_sql(sql: &str) -> String {
        format!(
            "SELECT pg_catalog.pg_logical_emit_message(true, {}, pg_catalog.json_build_object('sql', {}::text, 'search_path', pg_catalog.current_setting('search_path'), 'role', current_user)::text)",
            literal(DDL_PREFIX),
            literal(sql)
        )
    }

    /// A write (or DDL travelling in the log) by the simple protocol.
    pub(super) async fn logged_simple(
        &mut self,
        raw: &[u8],
        sql: &str,
        class: &Classification,
        ddl: bool,
    ) -> Step {
        if class.kind() == Kind::Ddl {
            self.shared.log.ddl_seen.notify_one();
            self.log.ddl = true;
        }
        self.record_unlogged(class, raw);
        self.record_large_objects(sql, class, raw);
        self.wrote_in_tx = true;
        if self.status == b'I' && wrappable(sql, class) {
            // `None`: PostgreSQL refused it inside a block; it runs as it is.
            if let Some(c) = self.logged_wrapped(raw, sql, ddl).await? {
                return self.relay_collected(&c, b'I').await;
            }
        }
        let fresh = self.status == b'I';
        self.log.hold_ready = true;
        let sent = self.send_auth(raw).await.map_err(Stop::Authority);
        let relayed = match sent {
            Ok(()) => self.relay_authority().await,
            Err(e) => Err(e),
        };
        self.log.hold_ready = false;
        let error = relayed?;
        if error.is_none() && (ddl || (fresh && self.status == b'I')) {
            // After the fact, in the client's transaction when it is still
            // open, else in one of its own.
            let mut text = String::new();
            if ddl {
                text.push_str(&Self::ddl_message_sql(sql));
                text.push(';');
            }
            let own = self.status == b'I';
            if own {
                let (token, w) = self.shared.log.mark();
                text.push_str(&format!(
                    "SELECT pg_catalog.pg_logical_emit_message(true, {}, {})",
                    literal(MARK_PREFIX),
                    literal(&token)
                ));
                text = format!("BEGIN;{text};COMMIT");
                self.own_query(&text).await?;
                self.mark_ended(Some(w), true);
            } else {
                self.own_query(&text).await?;
            }
        }
        self.flush_client().await
    }

    /// `BEGIN`, the client's statement, the DDL's message, the mark,
    /// `COMMIT`, sent at once; the client's answer as a lone autocommit
    /// statement gets it. `None`: PostgreSQL refused the statement inside
    /// a transaction block (nothing ran).
    async fn logged_wrapped(
        &mut self,
        raw: &[u8],
        sql: &str,
        ddl: bool,
    ) -> Result<Option<Collected>, Stop> {
        let mut msgs = BytesMut::new();
        msgs.extend_from_slice(&query("BEGIN"));
        msgs.extend_from_slice(raw);
        if ddl {
            msgs.extend_from_slice(&self.frame_text(&Self::ddl_message_sql(sql)));
        }
        let mark = self.mark_sql();
        msgs.extend_from_slice(&query(&mark));
        msgs.extend_from_slice(&query("COMMIT"));
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        self.collect_authority().await?;
        let result = self.collect_authority().await?;
        if ddl {
            self.collect_authority().await?;
        }
        let marked = self.collect_authority().await?;
        let mark = self.log.mark.take();
        let commit = self.collect_authority().await?;
        let emitted = marked.frames.iter().filter(|f| f.tag == b'D').count();
        if let Some(e) = &result.error {
            self.mark_ended(mark, false);
            let refused_in_block = result
                .frames
                .iter()
                .find(|f| f.tag == b'E')
                .is_some_and(|f| {
                    codec::error_fields(f.body()).get(&b'C').map(String::as_str) == Some("25001")
                });
            if refused_in_block {
                tracing::debug!(error = %e, "statement runs outside a transaction block: run as it is");
                return Ok(None);
            }
            return Ok(Some(result));
        }
        if commit.error.is_some() {
            // The implicit commit failed (a deferred constraint): the
            // client gets that error in place of its statement's completion.
            self.mark_ended(mark, false);
            let mut answer = Collected {
                frames: result
                    .frames
                    .into_iter()
                    .filter(|f| !matches!(f.tag, b'C' | b'Z'))
                    .collect(),
                error: commit.error.clone(),
                status: b'I',
            };
            answer.frames.extend(commit.frames);
            return Ok(Some(answer));
        }
        self.mark_ended(mark, emitted > 0);
        // Notifications and notices of the COMMIT belong to the statement.
        let mut answer = Collected {
            frames: Vec::with_capacity(result.frames.len() + 1),
            error: None,
            status: b'I',
        };
        let (body, ready) = result
            .frames
            .split_at(result.frames.len().saturating_sub(1));
        answer.frames.extend_from_slice(body);
        answer.frames.extend(
            commit
                .frames
                .into_iter()
                .filter(|f| matches!(f.tag, b'A' | b'N' | b'S')),
        );
        answer.frames.extend_from_slice(ready);
        Ok(Some(answer))
    }

    /// Runs `sql` (turnout's own, by the simple protocol) on the authority
    /// between the client's statements; only notifications reach the
    /// client. Its rows.
    async fn own_query(&mut self, sql: &str) -> Result<usize, Stop> {
        let q = self.frame_text(sql);
        self.auth.send(&q).await.map_err(Stop::Authority)?;
        let c = collect(&mut self.auth).await.map_err(Stop::Authority)?;
        for f in &c.frames {
            if matches!(f.tag, b'A' | b'N') {
                self.queue(&f.raw);
            }
        }
        self.status = c.status;
        Ok(c.frames.iter().filter(|f| f.tag == b'D').count())
    }

    /// A simple-protocol COMMIT from the log: the mark, then the COMMIT,
    /// sent at once; the mirror's own connection (reads only) commits
    /// without being waited for.
    pub(super) async fn log_commit(
        &mut self,
        to_auth: &[u8],
        to_mirror: &[u8],
        class: &Classification,
    ) -> Step {
        if !self.mirror_idle() && (self.mirror.is_some() || self.async_mirror.is_some()) {
            // Its block held reads only: no wait, nothing to record.
            self.mirror_defer(to_mirror, 1, class, false).await;
        }
        if self.status != b'T' {
            self.send_auth(to_auth).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            return Ok(());
        }
        let mut msgs = BytesMut::new();
        let mark = self.mark_sql();
        msgs.extend_from_slice(&query(&mark));
        msgs.extend_from_slice(to_auth);
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        let marked = collect(&mut self.auth).await.map_err(Stop::Authority)?;
        self.marked(marked.frames.iter().filter(|f| f.tag == b'D').count());
        let mark = self.log.mark.take();
        let commit = self.collect_authority().await?;
        let committed = commit.error.is_none() && commit.command_tags().any(|t| t == b"COMMIT");
        self.mark_ended(mark, committed);
        self.relay_collected(&commit, commit.status).await
    }

    /// Whether `class` updates or deletes rows of a table the log carries
    /// the inserts of only.
    pub(super) fn unlogged_target(&self, class: &Classification) -> bool {
        use crate::engine::row_image::Op;
        class
            .image
            .target()
            .is_some_and(|t| t.op != Op::Insert && self.shared.log.unlogged_table(&t.table))
    }

    /// From the log, with reads on the authority: the session has no use
    /// for the mirror's side (no connection is held to it).
    pub(super) fn mirror_idle(&self) -> bool {
        self.log.on && self.routing.phase.read_target() != self.mirror_side
    }

    /// In log mode the mirror's connection holds no write of the session:
    /// its failures are not the mirror's.
    pub(super) fn mirror_holds_no_write(&self) -> bool {
        self.log.on
    }

    /// A large object written: not in the log (PostgreSQL does not decode
    /// large objects), so not on the mirror: recorded.
    pub(super) fn record_large_objects(&self, sql: &str, class: &Classification, sent: &[u8]) {
        if !writes_large_objects(sql) {
            return;
        }
        self.record_not_in_log(
            class,
            "a large object written: large objects are not in the log, so not on the mirror (copy them before the writes flip)",
            sent,
        );
    }

    /// A write the log does not carry to the mirror: a mirror error, with
    /// the statement as sent.
    fn record_not_in_log(&self, class: &Classification, detail: &str, sent: &[u8]) {
        self.shared.records.mirror_error();
        self.shared.records.located(
            Divergence::new(
                DivergenceKind::MirrorError,
                self.mirror_side,
                &class.fingerprint,
                detail,
            ),
            sent,
        );
    }

    /// An UPDATE or DELETE of a table without a replica identity: the log
    /// has it not (publishing such updates would make old refuse them),
    /// and the session does not run it on new beside the log: recorded,
    /// with its table and key, for verify --repair.
    pub(super) fn record_unlogged(&self, class: &Classification, sent: &[u8]) {
        if !self.unlogged_target(class) {
            return;
        }
        let reason = "an UPDATE or DELETE of a table without a replica identity: not in the log, so not on the mirror (ALTER TABLE ... REPLICA IDENTITY FULL, or a primary key, puts its changes in the log)";
        self.record_not_in_log(class, reason, sent);
    }

    /// In a batch, after the messages up to `upto` ran on the authority:
    /// each DDL among them that travels in the log gets its message, in
    /// its transaction; `mark`: the batch commits at its Sync, so the
    /// transaction is marked too.
    pub(super) async fn logged_batch(
        &mut self,
        from: usize,
        upto: usize,
        mark: bool,
    ) -> Result<(), Stop> {
        // Each executed statement with the Bind that gave its values (so the
        // record names its table and key).
        let mut bound: Option<&bytes::Bytes> = None;
        let mut executed = Vec::new();
        for m in &self.batch[from..upto] {
            match (m.frame.tag, &m.stmt) {
                (b'B', _) => bound = Some(&m.frame.raw),
                (b'E', Some(p)) => {
                    let mut sent =
                        BytesMut::from(&super::extended::parse("", &p.sql, &p.types)[..]);
                    sent.extend_from_slice(bound.map_or(&[][..], |b| &b[..]));
                    executed.push((p.class.clone(), p.sql.clone(), sent));
                }
                _ => {}
            }
        }
        for (class, sql, sent) in executed {
            if class.kind() == Kind::Ddl {
                self.shared.log.ddl_seen.notify_one();
                self.log.ddl = true;
            }
            self.record_unlogged(&class, &sent);
            self.record_large_objects(&sql, &class, &sent);
        }
        let ddl: Vec<String> = self.batch[from..upto]
            .iter()
            .filter(|m| m.frame.tag == b'E')
            .filter(|m| {
                self.route(&super::extended::exec_class(m))
                    == crate::engine::route::Route::LoggedDdl
            })
            .filter_map(|m| m.stmt.as_ref().map(|p| p.sql.to_string()))
            .collect();
        if !ddl.is_empty() {
            self.shared.log.ddl_seen.notify_one();
        }
        for sql in ddl {
            let (_, error) = self.auth_own(&Self::ddl_message_sql(&sql), false).await?;
            if error.is_some() {
                return Ok(());
            }
        }
        if mark {
            let sql = self.mark_sql();
            let (rows, error) = self.auth_own(&sql, false).await?;
            self.marked(if error.is_some() { 0 } else { rows.len() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_object_writes_are_told_by_the_function_called() {
        for sql in [
            "SELECT lo_from_bytea(0, 'x')",
            "select LO_PUT(1, 0, 'a')",
            "SELECT * FROM lo_unlink(5)",
            "SELECT lowrite(lo_open(1, 131072), 'x')",
        ] {
            assert!(super::writes_large_objects(sql), "{sql}");
        }
        for sql in [
            "SELECT lo_get(1)",
            "SELECT * FROM lo_putter",
            "UPDATE t SET lo_put_x = 1",
        ] {
            assert!(!super::writes_large_objects(sql), "{sql}");
        }
    }
}
