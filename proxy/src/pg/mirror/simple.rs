//! Simple-protocol units and the lockstep steps shared with batches:
//! reads, settings, COMMIT, writes.

use super::{
    cstr, data_row_texts, mirror_text, no_error, query, sql_is_copy_from, written, Checks,
    Collected, MirrorSession, ReadSample, Step, Stop, MAX_REPLAY, PROBE_TIME,
};
use crate::engine::lockstep;
use crate::engine::pin::{self, PinError};
use crate::engine::route::Route;
use crate::engine::{defaults, Classification, Kind, TxControl};
use crate::mapping::Translation;
use crate::pg::codec::{self, Severity};
use crate::pg::framed::Frame;
use crate::pg::shadow::ShadowQuery;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use tracing::{debug, warn};
use turnout_config::UnsafePolicy;
use turnout_control::divergence::{Divergence, DivergenceKind};

impl MirrorSession<'_> {
    pub(super) async fn simple(&mut self, frame: Frame) -> Step {
        let sql = cstr(frame.body()).map(|(s, _)| s.to_string());
        let Some(sql) = sql else {
            return self.simple_foreign(frame).await;
        };
        let class = self.classify(&sql);
        self.unit_class = class.clone();
        if class.kind() == Kind::Ddl {
            // Column defaults (and keys, columns) may have changed.
            self.table_defaults.clear();
            self.shared.image_tables.clear();
        }
        if let Some(reason) = self.not_for_authority(&sql, false) {
            return self
                .untranslatable(&frame.raw, &frame.raw, &class, &reason)
                .await;
        }
        let route = self.route(&class);
        self.expect_no_writes(route, &class, &frame.raw);
        if route == Route::Write && class.statements.len() == 1 && sql_is_copy_from(&sql) {
            let mapped = self.shared.mapping();
            if let Err(reason) = mapped.toward(self.mirror_side).translate(&sql) {
                // Rows in old's layout: the authority alone, recorded (or refused).
                let reason = format!("mapping: {reason}");
                if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason, &frame.raw) {
                    return self.refuse(&msg, false).await;
                }
                self.send_auth(&frame.raw).await.map_err(Stop::Authority)?;
                return self.relay_authority().await.map(|_| ());
            }
            return self.copy_statement(&frame.raw, &class).await;
        }
        if !matches!(route, Route::Authority | Route::Both | Route::Reject) {
            self.wrote_in_tx = true;
        }
        match route {
            Route::Authority if self.log.on && class.ruled_to_one_side() => {
                self.logged_skip(&frame.raw, &sql, &class).await
            }
            Route::Authority => {
                // A read calling a function that may write runs where its
                // transaction id tells (see `hidden`).
                if self.may_write(&class, &sql).await {
                    return self.read_watched(&frame.raw, &class).await;
                }
                if class.kind() == Kind::Read
                    && class.statements.len() == 1
                    && self.reads_from_mirror()
                {
                    let sample = self.sample_choice(&class).map(|permit| ReadSample {
                        query: ShadowQuery {
                            sql: sql.as_str().into(),
                            param_types: Bytes::new(),
                            params: None,
                        },
                        result_formats: Vec::new(),
                        permit,
                    });
                    // Through the schema mapping; a read it cannot translate
                    // is served by old (written in step, so it is current).
                    let mapping = self.shared.mapping();
                    let on_new = match mapping.toward(self.mirror_side).translate(&sql) {
                        Ok(Translation::Sql(mapped)) => query(&mapped),
                        Ok(_) => Bytes::copy_from_slice(&frame.raw),
                        Err(e) => {
                            debug!(reason = %e, "read served by the authority: not translated for the read target");
                            self.send_auth(&frame.raw).await.map_err(Stop::Authority)?;
                            return self.relay_authority().await.map(|_| ());
                        }
                    };
                    self.read_query = Some(ShadowQuery {
                        sql: sql.as_str().into(),
                        param_types: Bytes::new(),
                        params: None,
                    });
                    return self
                        .read_on_mirror(&on_new, &frame.raw, sample, &class)
                        .await;
                }
                if let Some(permit) = self.sample_choice(&class) {
                    let query = ShadowQuery {
                        sql: sql.as_str().into(),
                        param_types: Bytes::new(),
                        params: None,
                    };
                    return self
                        .sampled_read(&frame.raw, query, Vec::new(), &class, permit)
                        .await;
                }
                self.send_auth(&frame.raw).await.map_err(Stop::Authority)?;
                self.relay_authority().await.map(|_| ())
            }
            Route::Reject => self.reject(&class).await,
            Route::Both => {
                let remember = class.kind() == Kind::Session;
                self.both(&frame.raw, &frame.raw, &class).await?;
                if remember && self.replay.len() < MAX_REPLAY && self.status == b'I' {
                    Arc::make_mut(&mut self.replay).push(sql);
                }
                Ok(())
            }
            Route::Commit => self.commit(&frame.raw, &frame.raw, &class).await,
            Route::Logged => self.logged_simple(&frame.raw, &sql, &class, false).await,
            Route::LoggedDdl => self.logged_simple(&frame.raw, &sql, &class, true).await,
            Route::Write => self.simple_write(&frame.raw, &sql, &class).await,
            Route::Unwrapped => self.unwrapped(&frame.raw, &frame.raw, &class).await,
            Route::MirrorOnly => self.mirror_only(&frame.raw).await,
        }
    }

    /// A simple-protocol text that is not UTF-8: the session's
    /// `client_encoding` is another (`LATIN1`, `WIN1252`, ...). It is read
    /// one character per byte (see [`crate::engine::text`]) and handled as
    /// any text, every text turnout makes from it framed back to the
    /// client's bytes; the mirror's connection has the client's encoding
    /// (its settings are replayed there), so both sides read the same.
    async fn simple_foreign(&mut self, frame: Frame) -> Step {
        let body = frame.body();
        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
        let text = crate::engine::text::lossless(&body[..end]).into_owned();
        let class = self.classify(&text);
        self.unit_class = class.clone();
        if class.kind() == Kind::Ddl {
            self.table_defaults.clear();
            self.shared.image_tables.clear();
        }
        let route = self.route(&class);
        self.expect_no_writes(route, &class, &frame.raw);
        if !matches!(route, Route::Authority | Route::Both | Route::Reject) {
            self.wrote_in_tx = true;
        }
        let raw = &frame.raw;
        self.foreign = true;
        let step = match route {
            Route::Authority => {
                if self.may_write(&class, &text).await {
                    self.read_watched(raw, &class).await
                } else {
                    match self.send_auth(raw).await.map_err(Stop::Authority) {
                        Ok(()) => self.relay_authority().await.map(|_| ()),
                        Err(e) => Err(e),
                    }
                }
            }
            Route::Reject => self.reject(&class).await,
            Route::Both => {
                if class.kind() == Kind::Session {
                    warn!(fingerprint = %class.fingerprint, "a setting in a client encoding other than UTF-8 is not replayed on a new connection to the mirror");
                }
                self.both(raw, raw, &class).await
            }
            Route::Commit => self.commit(raw, raw, &class).await,
            Route::Logged => self.logged_simple(raw, &text, &class, false).await,
            Route::LoggedDdl => self.logged_simple(raw, &text, &class, true).await,
            Route::Write => self.simple_write(raw, &text, &class).await,
            Route::Unwrapped => self.unwrapped(raw, raw, &class).await,
            Route::MirrorOnly => self.mirror_only(raw).await,
        };
        self.foreign = false;
        step
    }

    /// A Query message of `sql`, a text turnout made from the client's
    /// (see [`Self::simple_foreign`]).
    pub(super) fn frame_text(&self, sql: &str) -> Bytes {
        text_query(sql, self.foreign)
    }

    /// A statement a rule sends to the mirror's side alone: the client gets
    /// that side's answer.
    pub(super) async fn mirror_only(&mut self, unit: &[u8]) -> Step {
        let fresh = self.status == b'I';
        let status = self.status;
        let answer = if self.async_mirror.is_some() {
            self.ask_queued(unit, fresh).await
        } else {
            self.on_mirror(unit, 1, fresh).await
        };
        match answer {
            Ok(c) => {
                self.answered_by = self.mirror_side;
                self.relay_collected(&c, status).await
            }
            Err(detail) => {
                let msg = format!(
                    "turnout: a rule (mirror.rules) sends this statement to {} alone, which could not run it: {detail}",
                    self.mirror_side
                );
                self.queue(&codec::error_response(Severity::Error, "08006", &msg));
                self.queue(&codec::ready_for_query(status));
                self.flush_client().await
            }
        }
    }

    pub(super) async fn reject(&mut self, class: &Classification) -> Step {
        let msg = format!(
            "turnout: schema changes are refused while mirroring (mirror.ddl = \"reject\"): {}",
            class.fingerprint
        );
        let status = self.status;
        self.queue(&codec::error_response(Severity::Error, "0A000", &msg));
        self.queue(&codec::ready_for_query(status));
        self.flush_client().await
    }

    /// Session settings and transaction control: both sides, the client sees
    /// the authority's answer.
    pub(super) async fn both(
        &mut self,
        to_auth: &[u8],
        to_mirror: &[u8],
        class: &Classification,
    ) -> Step {
        let fresh = self.status == b'I';
        let kind = class.kind();
        if self.mirror_idle() {
            // From the log, with reads on the authority: the mirror's side
            // is not used (settings are kept for when it is).
            self.send_auth(to_auth).await.map_err(Stop::Authority)?;
            return self.relay_authority().await.map(|_| ());
        }
        if kind == Kind::Transaction(TxControl::Rollback) {
            // Whatever failed on the mirror is being undone on both sides.
            self.drain_mirror(false).await;
            self.deferred_failure = None;
        }
        self.send_auth(to_auth).await.map_err(Stop::Authority)?;
        let result = self.collect_authority().await?;
        if result.status == b'I' {
            self.deferred_failure = None;
        }
        if result.error.is_none()
            && kind == Kind::Transaction(TxControl::Begin)
            && (self.mirror.is_some() || self.async_mirror.is_some())
        {
            self.mirror_defer(to_mirror, 1, class, fresh).await;
        } else if result.error.is_none() {
            if let Err(detail) = self.on_mirror(to_mirror, 1, fresh).await.and_then(no_error) {
                // A setting the mirror refused is recorded; it fails nothing.
                self.record_mirror_error(&class.fingerprint, &detail, to_mirror);
            }
        } else if self.mirror.is_some() {
            // Keep the mirror's transaction state in step with the authority's.
            let _ = self.on_mirror(to_mirror, 1, false).await;
        }
        // The client hears back once both sides have it.
        self.relay_collected(&result, result.status).await
    }

    /// The authority failed the client's statement (`result`): turnout's
    /// own wrapping transaction, if `wrapped`, is rolled back, and the client
    /// gets the authority's answer.
    pub(super) async fn relay_failure(&mut self, result: &Collected, wrapped: bool) -> Step {
        if wrapped {
            self.auth
                .send(&query("ROLLBACK"))
                .await
                .map_err(Stop::Authority)?;
            self.collect_authority().await?;
        }
        let status = if wrapped { b'I' } else { result.status };
        self.relay_collected(result, status).await
    }

    /// A simple-protocol write. An INSERT whose VALUES call per-call
    /// functions (`random()`, `gen_random_uuid()`, ...) or that leaves columns
    /// to volatile defaults gets those values evaluated on the authority
    /// first (see `engine::pin` and `engine::defaults`); then the write runs
    /// in lockstep with both sides inserting the same values.
    async fn simple_write(&mut self, raw: &[u8], sql: &str, class: &Classification) -> Step {
        // Row images first: the mirror applies the rows the authority wrote.
        self.check_write(class).await?;
        let mut imaged = self.imaged(sql, class);
        if let Some(i) = imaged.take() {
            if let Some(step) = self.image_write(raw, class, &i).await {
                return step;
            }
        }
        if let Some(why) = self.statement_risk(class) {
            if let Some(msg) = self.statement_mirrored(class, &why, raw) {
                return self.refuse(&msg, false).await;
            }
        }
        // Through the schema mapping (`[mapping]`) first: what cannot be
        // translated runs on the authority alone, recorded (or refused).
        let mapping = self.shared.live().mapping.clone();
        let mapping = mapping.toward(self.mirror_side);
        match mapping.translate(sql) {
            Err(reason) => {
                let reason = format!("mapping: {reason}");
                if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason, raw) {
                    return self.refuse(&msg, false).await;
                }
                self.send_auth(raw).await.map_err(Stop::Authority)?;
                return self.relay_authority().await.map(|_| ());
            }
            Ok(Translation::Skip) => {
                self.send_auth(raw).await.map_err(Stop::Authority)?;
                return self.relay_authority().await.map(|_| ());
            }
            Ok(_) => {}
        }
        let mut text = sql.to_string();
        let mut begun = false;
        let single_insert = class.statements.len() == 1 && class.insert_table.is_some();
        if self.status != b'E' && single_insert && class.nondeterministic() {
            if let Some(plan) = pin::per_call_plan(&text) {
                let Some(rows) = self
                    .authority_values(&plan.values_query(), &mut begun)
                    .await?
                else {
                    return Ok(());
                };
                let applied = rows
                    .first()
                    .ok_or_else(|| "the authority returned no row".to_string())
                    .and_then(|row| plan.apply(row));
                match applied {
                    Ok(rewritten) => text = rewritten,
                    Err(e) => {
                        let reason = format!("per-call values could not be applied: {e}");
                        if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason, raw) {
                            return self.refuse(&msg, begun).await;
                        }
                    }
                }
            }
        }
        if self.status != b'E' && single_insert {
            let table = class.insert_table.as_deref().unwrap_or_default();
            let table_defaults = self.table_defaults(table).await?;
            match defaults::plan(&text, &table_defaults) {
                Ok(None) => {}
                Err(reason) => {
                    if let Some(msg) = self.unsafe_write(&class.fingerprint, reason, raw) {
                        return self.refuse(&msg, begun).await;
                    }
                }
                Ok(Some(plan)) => {
                    let Some(rows) = self
                        .authority_values(&plan.values_query(), &mut begun)
                        .await?
                    else {
                        return Ok(());
                    };
                    match plan.apply(&text, &rows) {
                        Ok(rewritten) => text = rewritten,
                        Err(e) => {
                            let reason = format!("generated values could not be applied: {e}");
                            if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason, raw) {
                                return self.refuse(&msg, begun).await;
                            }
                        }
                    }
                }
            }
        }
        let unit = if text == sql {
            Bytes::copy_from_slice(raw)
        } else {
            self.frame_text(&text)
        };
        let foreign = self.foreign;
        let time_needed = class.nondeterministic();
        self.write(
            &unit,
            time_needed,
            class,
            |t| {
                mirror_text(&text, class, t)
                    .map(|s| text_query(&mapping.translated_or_same(&s), foreign))
            },
            begun,
        )
        .await
    }

    /// Runs `sql` (a SELECT of values a write will use) on the authority,
    /// inside the write's transaction: opened first when the client has none
    /// (`begun` is then set). An error goes to the client as the write's own
    /// (the write would have failed the same way) and gives `None`.
    async fn authority_values(
        &mut self,
        sql: &str,
        begun: &mut bool,
    ) -> Result<Option<Vec<Vec<Option<String>>>>, Stop> {
        let mut msgs = BytesMut::new();
        let opens = self.status == b'I' && !*begun;
        if opens {
            msgs.extend_from_slice(&query("BEGIN"));
        }
        msgs.extend_from_slice(&self.frame_text(sql));
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        if opens {
            self.collect_authority().await?;
            *begun = true;
        }
        let values = self.collect_authority().await?;
        if values.error.is_some() {
            self.relay_failure(&values, *begun).await?;
            return Ok(None);
        }
        Ok(Some(
            values
                .frames
                .iter()
                .filter(|f| f.tag == b'D')
                .map(|f| data_row_texts(f.body()))
                .collect(),
        ))
    }

    /// A write: authority first (its row locks held), then the mirror, which
    /// commits before the authority does. `begun`: the caller already opened
    /// the wrapping transaction on the authority.
    pub(super) async fn write(
        &mut self,
        unit: &[u8],
        time_needed: bool,
        class: &Classification,
        mirror_unit: impl Fn(Option<&str>) -> Result<Bytes, PinError>,
        begun: bool,
    ) -> Step {
        if self.status == b'E' {
            // The authority refuses it in a failed transaction; nothing to copy.
            self.send_auth(unit).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            return Ok(());
        }
        if self.shared.unsafe_policy == UnsafePolicy::Fail {
            // Refused before either side runs it.
            let reason = match class.unsafe_reason() {
                Some(r) => Some(r.to_string()),
                None if time_needed => mirror_unit(Some(PROBE_TIME)).err().map(|e| e.to_string()),
                None => None,
            };
            if let Some(reason) = reason {
                let msg = self
                    .unsafe_write(&class.fingerprint, &reason, unit)
                    .unwrap_or_default();
                return self.refuse(&msg, begun).await;
            }
        }
        let fresh = self.status == b'I';
        // In async mode an autocommit write needs no wrapping transaction,
        // unless the authority's transaction time is to be read.
        let wrap = begun
            || (fresh && (self.async_mirror.is_none() || (time_needed && self.tx_time.is_none())));
        let fetch_time = time_needed && self.tx_time.is_none();
        let mut msgs = BytesMut::new();
        if wrap && !begun {
            msgs.extend_from_slice(&query("BEGIN"));
        }
        if fetch_time {
            msgs.extend_from_slice(&query("SELECT now()::text"));
        }
        msgs.extend_from_slice(unit);
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        if wrap && !begun {
            self.collect_authority().await?;
        }
        if fetch_time {
            self.collect_time().await?;
        }
        let result = self.collect_authority().await?;
        if result.error.is_some() {
            return self.relay_failure(&result, wrap).await;
        }

        let mirrored = match mirror_unit(self.tx_time.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                // Run as written: the values may differ; say so. (Under
                // `on_unsafe = fail` it was refused above.)
                let _ = self.unsafe_write(&class.fingerprint, &e.to_string(), unit);
                mirror_unit(None).unwrap_or_else(|_| Bytes::copy_from_slice(unit))
            }
        };
        if let Some(reason) = class.unsafe_reason() {
            let _ = self.unsafe_write(&class.fingerprint, reason, unit);
        }
        if !wrap {
            // Inside the client's transaction: the mirror's answer is read
            // later (at the latest before COMMIT, which it makes first),
            // and its count compared with the authority's then.
            let checks = Checks {
                rows: written(&result.frames),
                ..Checks::default()
            };
            self.mirror_defer_checked(&mirrored, 1, class, fresh, checks, unit)
                .await;
            return self.relay_collected(&result, result.status).await;
        }
        let mut m = BytesMut::new();
        m.extend_from_slice(&query("BEGIN"));
        m.extend_from_slice(&mirrored);
        m.extend_from_slice(&query("COMMIT"));
        let outcome = self.on_mirror(&m, 3, true).await;
        match outcome
            .as_ref()
            .map_err(Clone::clone)
            .map(|c| c.error.clone())
        {
            Err(detail) | Ok(Some(detail)) => {
                if self.mirror_failed(class, &detail, &m) {
                    return self.fail_write(wrap, &detail).await;
                }
            }
            Ok(None) => {
                if let Ok(c) = &outcome {
                    self.compare_counts(class, &result, c, unit);
                }
            }
        }
        self.finish_write(&result, wrap, class).await
    }

    /// A write mirrored as a statement: the rows each side's
    /// CommandComplete reports must agree, or the sides held different
    /// rows (`row_count_mismatch`, recorded: the mirror has committed).
    fn compare_counts(
        &self,
        class: &Classification,
        authority: &Collected,
        mirror: &Collected,
        sent: &[u8],
    ) {
        // An async queue answers nothing: no count to compare.
        if let (Some(a), Some(m)) = (written(&authority.frames), written(&mirror.frames)) {
            self.counts_agree(&class.fingerprint, a, m, sent);
        }
    }

    /// The authority wrote `a` rows for the statement `sent`, the mirror
    /// `m`: a difference is a `row_count_mismatch` (rows missing on new
    /// while a backfill has not copied the table are expected).
    pub(super) fn counts_agree(&self, fingerprint: &str, a: u64, m: u64, sent: &[u8]) {
        if a == m {
            return;
        }
        let loc = crate::engine::locate::locate(sent);
        let table = loc.table.clone().unwrap_or_default();
        if m < a && self.shared.backfill.may_lack_rows(&table) {
            return;
        }
        self.shared.records.mirror_error();
        let detail = format!(
            "the authority reported {a} written row(s), {} reported {m}: the sides held different rows",
            self.mirror_side
        );
        self.shared.records.located(
            Divergence::new(
                DivergenceKind::RowCountMismatch,
                self.mirror_side,
                fingerprint,
                &detail,
            ),
            sent,
        );
    }

    /// After the mirror applied a write: commits turnout's wrapping
    /// transaction on the authority, if `wrapped`, and relays the write's
    /// answer. A failed authority COMMIT (the mirror has committed) is
    /// recorded as a divergence.
    pub(super) async fn finish_write(
        &mut self,
        result: &Collected,
        wrapped: bool,
        class: &Classification,
    ) -> Step {
        if wrapped {
            let commit = match self.auth.send(&query("COMMIT")).await {
                Ok(()) => self.collect_authority().await,
                Err(e) => Err(Stop::Authority(e)),
            };
            let commit = match commit {
                Err(Stop::Authority(e)) => {
                    self.authority_lost_at_commit(class, &e.to_string());
                    return Err(Stop::Authority(e));
                }
                other => other?,
            };
            if let Some(err) = &commit.error {
                self.shared
                    .records
                    .divergence(lockstep::authority_commit_failed(
                        self.mirror_side,
                        &class.fingerprint,
                        err,
                    ));
                return self.relay_collected(&commit, b'I').await;
            }
            // Notifications and notices of turnout's COMMIT (a NOTIFY is
            // delivered at commit) belong to the client's statement.
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
            return self.relay_collected(&answer, b'I').await;
        }
        self.relay_collected(result, result.status).await
    }

    /// Under `mirror.on_error = fail`: undo the write on the authority and
    /// tell the client.
    pub(super) async fn fail_write(&mut self, wrapped: bool, detail: &str) -> Step {
        let msg = format!(
            "turnout: the write was not applied because {} refused it: {detail}",
            self.mirror_side
        );
        self.refuse(&msg, wrapped).await
    }

    /// Fails the client's statement with `msg` as if the authority had:
    /// `wrapped` (turnout's own transaction around the write) is rolled back;
    /// the client's own transaction is put into the failed state, as the
    /// client's failed statement would have put it.
    pub(super) async fn refuse(&mut self, msg: &str, wrapped: bool) -> Step {
        self.refuse_with("XX000", msg, wrapped).await
    }

    /// [`Self::refuse`] with the SQLSTATE `code`.
    pub(super) async fn refuse_with(&mut self, code: &str, msg: &str, wrapped: bool) -> Step {
        let status = if wrapped {
            self.auth
                .send(&query("ROLLBACK"))
                .await
                .map_err(Stop::Authority)?;
            self.collect_authority().await?;
            b'I'
        } else if self.status == b'T' {
            self.auth
                .send(&query(
                    "DO $turnout$ BEGIN RAISE EXCEPTION 'turnout: statement refused'; END $turnout$",
                ))
                .await
                .map_err(Stop::Authority)?;
            self.collect_authority().await?.status
        } else {
            self.status
        };
        self.queue(&codec::error_response(Severity::Error, code, msg));
        self.queue(&codec::ready_for_query(status));
        self.flush_client().await
    }

    /// A write whose effect the mirror may not reproduce: recorded as an
    /// `unsafe_statement` divergence, or under `mirror.on_unsafe = fail`
    /// the message to refuse it with.
    /// `sent`: the statement's messages, for the record's table and key.
    pub(super) fn unsafe_write(
        &self,
        fingerprint: &str,
        reason: &str,
        sent: &[u8],
    ) -> Option<String> {
        if self.shared.unsafe_policy == UnsafePolicy::Fail {
            return Some(format!(
                "turnout: refused because {} could not reproduce its effect exactly (mirror.on_unsafe = \"fail\"): {reason}",
                self.mirror_side
            ));
        }
        self.shared.records.located(
            Divergence::new(
                DivergenceKind::UnsafeStatement,
                self.mirror_side,
                fingerprint,
                reason,
            ),
            sent,
        );
        None
    }

    /// Several statements with transaction control among them: the authority
    /// runs them, then the mirror does; ordering is not locked in step.
    pub(super) async fn unwrapped(
        &mut self,
        to_auth: &[u8],
        to_mirror: &[u8],
        class: &Classification,
    ) -> Step {
        let fresh = self.status == b'I';
        self.send_auth(to_auth).await.map_err(Stop::Authority)?;
        let result = self.collect_authority().await?;
        let detail = if result.error.is_none() {
            self.on_mirror(to_mirror, 1, fresh)
                .await
                .and_then(no_error)
                .err()
        } else if class.statements.len() > 1 && !(fresh && nothing_took_effect(&result)) {
            // Statements before the failing one may have taken effect.
            Some(
                "the authority failed part of this multi-statement text; it was not mirrored"
                    .to_string(),
            )
        } else {
            None
        };
        if let Some(detail) = detail {
            self.record_mirror_error(&class.fingerprint, &detail, to_mirror);
        }
        self.relay_collected(&result, result.status).await
    }
}

/// A multi-statement text run from outside a transaction failed on the
/// authority and left it outside one, with no COMMIT answered before its
/// error: its statements ran in transactions that were rolled back (a
/// deferred constraint refused at COMMIT, a failing statement of an
/// implicit transaction), so nothing of it is on the authority and the
/// mirror owes nothing: the client's own error.
fn nothing_took_effect(result: &Collected) -> bool {
    if result.status != b'I' {
        return false;
    }
    for f in &result.frames {
        match f.tag {
            b'E' => return true,
            b'C' if f.body().starts_with(b"COMMIT") || f.body().starts_with(b"PREPARE") => {
                return false;
            }
            _ => {}
        }
    }
    false
}

/// A Query message of `sql`; `foreign`: `sql` was read from bytes that are
/// not UTF-8, one character per byte, and goes back as those bytes.
fn text_query(sql: &str, foreign: bool) -> Bytes {
    if !foreign {
        return query(sql);
    }
    let mut body = BytesMut::from(&crate::engine::text::bytes_of(sql)[..]);
    body.put_u8(0);
    codec::frame(b'Q', &body)
}
