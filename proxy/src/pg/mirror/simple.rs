//! Simple-protocol units and the lockstep steps shared with batches:
//! reads, settings, COMMIT, writes.

use super::*;

impl MirrorSession<'_> {
    pub(super) async fn simple(&mut self, frame: Frame) -> Step {
        let sql = cstr(frame.body()).map(|(s, _)| s.to_string());
        let Some(sql) = sql else {
            // Not valid text: the authority gives its own error; nothing to copy.
            self.auth.send(&frame.raw).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            return Ok(());
        };
        let class = self.shared.classifier.classify(&sql);
        if class.kind() == Kind::Ddl {
            // Column defaults may have changed.
            self.table_defaults.clear();
        }
        let route = classify_route(&class, self.shared.ddl_policy);
        if route == Route::Write && class.statements.len() == 1 && sql_is_copy_from(&sql) {
            return self.copy_statement(&frame.raw, &class).await;
        }
        match route {
            Route::Authority => {
                self.auth.send(&frame.raw).await.map_err(Stop::Authority)?;
                self.relay_authority().await.map(|_| ())
            }
            Route::Reject => self.reject(&class).await,
            Route::Both => {
                let remember = class.kind() == Kind::Session;
                self.both(&frame.raw, &frame.raw, &class).await?;
                if remember && self.replay.len() < MAX_REPLAY && self.status == b'I' {
                    self.replay.push(sql);
                }
                Ok(())
            }
            Route::Commit => self.commit(&frame.raw, &frame.raw, &class).await,
            Route::Write => self.simple_write(&frame.raw, &sql, &class).await,
            Route::Unwrapped => self.unwrapped(&frame.raw, &frame.raw, &class).await,
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
        if kind == Kind::Transaction(TxControl::Rollback) {
            // Whatever failed on the mirror is being undone on both sides.
            self.drain_mirror(false).await;
            self.deferred_failure = None;
        }
        self.auth.send(to_auth).await.map_err(Stop::Authority)?;
        let result = self.collect_authority().await?;
        if result.status == b'I' {
            self.deferred_failure = None;
        }
        if result.error.is_none()
            && kind == Kind::Transaction(TxControl::Begin)
            && self.mirror.is_some()
        {
            self.mirror_defer(to_mirror, 1, class).await;
        } else if result.error.is_none() {
            if let Err(detail) = self.on_mirror(to_mirror, 1, fresh).await.and_then(no_error) {
                // A setting the mirror refused is recorded; it fails nothing.
                self.shared.metrics_mirror_error();
                self.shared.record_divergence(Divergence::new(
                    DivergenceKind::MirrorError,
                    self.mirror_side,
                    &class.fingerprint,
                    &detail,
                ));
            }
        } else if self.mirror.is_some() {
            // Keep the mirror's transaction state in step with the authority's.
            let _ = self.on_mirror(to_mirror, 1, false).await;
        }
        // The client hears back once both sides have it.
        self.relay_collected(&result, result.status).await
    }

    /// Rolls the authority's transaction back and tells the client why
    /// (`msg`), ending with ReadyForQuery(idle).
    async fn roll_back_authority_and_fail(&mut self, msg: &str) -> Step {
        self.auth
            .send(&query("ROLLBACK"))
            .await
            .map_err(Stop::Authority)?;
        self.collect_authority().await?;
        self.queue(&codec::error_response(Severity::Error, "40003", msg));
        self.queue(&codec::ready_for_query(b'I'));
        self.flush_client().await
    }

    /// COMMIT: the mirror commits first, then the authority.
    pub(super) async fn commit(
        &mut self,
        to_auth: &[u8],
        to_mirror: &[u8],
        class: &Classification,
    ) -> Step {
        if self.status != b'T' {
            self.drain_mirror(false).await;
            self.deferred_failure = None;
            // Nothing to commit on the authority (no transaction, or a failed
            // one that COMMIT rolls back): the mirror rolls back too.
            let rollback = query("ROLLBACK");
            let to_mirror: &[u8] = if self.status == b'E' {
                &rollback
            } else {
                to_mirror
            };
            self.auth.send(to_auth).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            if self.mirror.is_some() {
                let _ = self.on_mirror(to_mirror, 1, false).await;
            }
            return Ok(());
        }
        self.drain_mirror(true).await;
        if let Some(detail) = self.deferred_failure.take() {
            // Under `fail`: a statement of this transaction failed on the mirror.
            let _ = self.on_mirror(&query("ROLLBACK"), 1, false).await;
            let msg = format!(
                "turnout: the transaction was rolled back on both sides because {} refused one of its writes: {detail}",
                self.mirror_side
            );
            return self.roll_back_authority_and_fail(&msg).await;
        }
        let outcome = self.on_mirror(to_mirror, 1, false).await.and_then(|c| {
            if let Some(e) = c.error {
                Err(e)
            } else if c.command_tags().any(|t| t == b"ROLLBACK") {
                Err(format!(
                    "{} rolled back the transaction at COMMIT (an earlier statement failed there)",
                    self.mirror_side
                ))
            } else {
                Ok(())
            }
        });
        if let Err(detail) = outcome {
            if self.mirror_failed(class, &detail) {
                let msg = format!(
                    "turnout: the transaction was rolled back on both sides because {} could not commit it: {detail}",
                    self.mirror_side
                );
                return self.roll_back_authority_and_fail(&msg).await;
            }
        }
        self.auth.send(to_auth).await.map_err(Stop::Authority)?;
        if let Some(err) = self.relay_authority().await? {
            self.shared.record_divergence(Divergence::new(
                DivergenceKind::AuthorityCommitFailed,
                self.mirror_side,
                &class.fingerprint,
                &format!("the authority's COMMIT failed after the mirror committed: {err}"),
            ));
        }
        Ok(())
    }

    /// A simple-protocol write: an INSERT that leaves columns to volatile
    /// defaults gets them evaluated on the authority first (see
    /// `engine::defaults`), then the write runs in lockstep.
    async fn simple_write(&mut self, raw: &[u8], sql: &str, class: &Classification) -> Step {
        let mut text = sql.to_string();
        let mut begun = false;
        if self.status != b'E' && class.statements.len() == 1 {
            if let Some(table) = class.insert_table.as_deref() {
                let table_defaults = self.table_defaults(table).await?;
                match defaults::plan(sql, &table_defaults) {
                    Ok(None) => {}
                    Err(reason) => self.shared.record_divergence(Divergence::new(
                        DivergenceKind::UnsafeStatement,
                        self.mirror_side,
                        &class.fingerprint,
                        reason,
                    )),
                    Ok(Some(plan)) => {
                        if self.status == b'I' {
                            self.auth
                                .send(&query("BEGIN"))
                                .await
                                .map_err(Stop::Authority)?;
                            self.collect_authority().await?;
                            begun = true;
                        }
                        self.auth
                            .send(&query(&plan.values_query()))
                            .await
                            .map_err(Stop::Authority)?;
                        let generated = self.collect_authority().await?;
                        if generated.error.is_some() {
                            // The INSERT itself would have failed the same way.
                            if begun {
                                self.auth
                                    .send(&query("ROLLBACK"))
                                    .await
                                    .map_err(Stop::Authority)?;
                                self.collect_authority().await?;
                            }
                            let status = if begun { b'I' } else { generated.status };
                            return self.relay_collected(&generated, status).await;
                        }
                        let rows: Vec<Vec<Option<String>>> = generated
                            .frames
                            .iter()
                            .filter(|f| f.tag == b'D')
                            .map(|f| data_row_texts(f.body()))
                            .collect();
                        match plan.apply(sql, &rows) {
                            Ok(rewritten) => text = rewritten,
                            Err(e) => self.shared.record_divergence(Divergence::new(
                                DivergenceKind::UnsafeStatement,
                                self.mirror_side,
                                &class.fingerprint,
                                &format!("generated values could not be applied: {e}"),
                            )),
                        }
                    }
                }
            }
        }
        let unit = if text == sql {
            Bytes::copy_from_slice(raw)
        } else {
            query(&text)
        };
        let time_needed = class.nondeterministic();
        self.write(
            &unit,
            time_needed,
            class,
            |t| mirror_text(&text, class, t).map(|s| query(&s)),
            begun,
        )
        .await
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
            self.auth.send(unit).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            return Ok(());
        }
        let wrap = begun || self.status == b'I';
        let fetch_time = time_needed && self.tx_time.is_none();
        let mut msgs = BytesMut::new();
        if wrap && !begun {
            msgs.extend_from_slice(&query("BEGIN"));
        }
        if fetch_time {
            msgs.extend_from_slice(&query("SELECT now()::text"));
        }
        msgs.extend_from_slice(unit);
        self.auth.send(&msgs).await.map_err(Stop::Authority)?;
        if wrap && !begun {
            self.collect_authority().await?;
        }
        if fetch_time {
            self.collect_time().await?;
        }
        let result = self.collect_authority().await?;
        if result.error.is_some() {
            if wrap {
                self.auth
                    .send(&query("ROLLBACK"))
                    .await
                    .map_err(Stop::Authority)?;
                self.collect_authority().await?;
            }
            let status = if wrap { b'I' } else { result.status };
            return self.relay_collected(&result, status).await;
        }

        let mirrored = match mirror_unit(self.tx_time.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                // Run as written: the values may differ; say so.
                self.shared.record_divergence(Divergence::new(
                    DivergenceKind::UnsafeStatement,
                    self.mirror_side,
                    &class.fingerprint,
                    &e.to_string(),
                ));
                mirror_unit(None).unwrap_or_else(|_| Bytes::copy_from_slice(unit))
            }
        };
        if let Some(reason) = class.unsafe_reason() {
            self.shared.record_divergence(Divergence::new(
                DivergenceKind::UnsafeStatement,
                self.mirror_side,
                &class.fingerprint,
                reason,
            ));
        }
        if !wrap {
            // Inside the client's transaction: the mirror's answer is read
            // later (at the latest before COMMIT, which it makes first).
            self.mirror_defer(&mirrored, 1, class).await;
            return self.relay_collected(&result, result.status).await;
        }
        let mut m = BytesMut::new();
        m.extend_from_slice(&query("BEGIN"));
        m.extend_from_slice(&mirrored);
        m.extend_from_slice(&query("COMMIT"));
        let outcome = self.on_mirror(&m, 3, true).await.and_then(no_error);
        if let Err(detail) = outcome {
            if self.mirror_failed(class, &detail) {
                return self.fail_write(wrap, &detail).await;
            }
        }
        if wrap {
            self.auth
                .send(&query("COMMIT"))
                .await
                .map_err(Stop::Authority)?;
            let commit = self.collect_authority().await?;
            if let Some(err) = &commit.error {
                self.shared.record_divergence(Divergence::new(
                    DivergenceKind::AuthorityCommitFailed,
                    self.mirror_side,
                    &class.fingerprint,
                    &format!("the authority's COMMIT failed after the mirror committed: {err}"),
                ));
                return self.relay_collected(&commit, b'I').await;
            }
        }
        let status = if wrap { b'I' } else { result.status };
        self.relay_collected(&result, status).await
    }

    /// Under `mirror.on_error = fail`: undo the write on the authority and
    /// tell the client.
    pub(super) async fn fail_write(&mut self, wrapped: bool, detail: &str) -> Step {
        let msg = format!(
            "turnout: the write was not applied because {} refused it: {detail}",
            self.mirror_side
        );
        if wrapped {
            self.auth
                .send(&query("ROLLBACK"))
                .await
                .map_err(Stop::Authority)?;
            self.collect_authority().await?;
            self.queue(&codec::error_response(Severity::Error, "XX000", &msg));
            self.queue(&codec::ready_for_query(b'I'));
        } else {
            // Put the authority's transaction into the failed state, as the
            // client's own failed statement would have.
            self.auth
                .send(&query(
                    "DO $turnout$ BEGIN RAISE EXCEPTION 'turnout: mirror failed'; END $turnout$",
                ))
                .await
                .map_err(Stop::Authority)?;
            let c = self.collect_authority().await?;
            self.queue(&codec::error_response(Severity::Error, "XX000", &msg));
            self.queue(&codec::ready_for_query(c.status));
        }
        self.flush_client().await
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
        self.auth.send(to_auth).await.map_err(Stop::Authority)?;
        let result = self.collect_authority().await?;
        let detail = if result.error.is_none() {
            self.on_mirror(to_mirror, 1, fresh)
                .await
                .and_then(no_error)
                .err()
        } else if class.statements.len() > 1 {
            // Statements before the failing one may have taken effect.
            Some(
                "the authority failed part of this multi-statement text; it was not mirrored"
                    .to_string(),
            )
        } else {
            None
        };
        if let Some(detail) = detail {
            self.shared.metrics_mirror_error();
            self.shared.record_divergence(Divergence::new(
                DivergenceKind::MirrorError,
                self.mirror_side,
                &class.fingerprint,
                &detail,
            ));
        }
        self.relay_collected(&result, result.status).await
    }
}
