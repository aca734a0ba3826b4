//! The extended protocol: Parse/Bind/Execute batches up to Sync (or Flush),
//! and the mirror's copy of a batch.

use super::*;
use crate::mapping::Translation;

impl MirrorSession<'_> {
    /// Registers what the batch's Parse/Bind/Close messages define, and
    /// returns the classes of the statements its Executes run.
    fn register(&mut self, batch: &[Frame]) -> Vec<Arc<Classification>> {
        let mut executed = Vec::new();
        for f in batch {
            let body = f.body();
            match f.tag {
                b'P' => {
                    if let Some((name, rest)) = cstr(body) {
                        if let Some((sql, types)) = cstr(rest) {
                            let class = self.shared.classifier.classify(sql);
                            let name = name.to_string();
                            self.mirror_prepared.remove(&name);
                            self.statements.insert(
                                name,
                                Prepared {
                                    sql: sql.into(),
                                    types: Bytes::copy_from_slice(types),
                                    class,
                                },
                            );
                        }
                    }
                }
                b'B' => {
                    if let Some((portal, rest)) = cstr(body) {
                        if let Some((stmt, _)) = cstr(rest) {
                            self.portals.insert(portal.to_string(), stmt.to_string());
                        }
                    }
                }
                b'E' => {
                    let class = cstr(body)
                        .and_then(|(portal, _)| self.portals.get(portal))
                        .and_then(|stmt| self.statements.get(stmt))
                        .map(|p| p.class.clone());
                    // A portal turnout cannot trace is treated as a write.
                    executed.push(class.unwrap_or_else(|| {
                        Arc::new(Classification {
                            statements: vec![StatementClass {
                                kind: Kind::Write,
                                unsafe_reason: None,
                                nondeterministic: false,
                            }],
                            fingerprint: "(unknown portal)".into(),
                            ..Classification::default()
                        })
                    }));
                }
                b'C' => {
                    if let Some((name, _)) = body.get(1..).and_then(cstr) {
                        if body[0] == b'S' {
                            self.statements.remove(name);
                        } else {
                            self.portals.remove(name);
                        }
                    }
                }
                _ => {}
            }
        }
        executed
    }

    /// What the schema mapping makes of the statements the batch binds:
    /// all mirrored (translated where needed), `Ok(false)` when there is
    /// nothing of them for `new`, `Err` when one cannot be translated.
    fn mapping_verdict(&self, batch: &[Frame]) -> Result<bool, String> {
        let mapping = self.shared.mapping.load();
        let mapping = mapping.toward(self.mirror_side);
        if mapping.is_identity() {
            return Ok(true);
        }
        let mut mirrored = false;
        for p in batch
            .iter()
            .filter(|f| f.tag == b'B')
            .filter_map(|f| cstr(f.body()).and_then(|(_, rest)| cstr(rest)))
            .filter_map(|(stmt, _)| self.statements.get(stmt))
        {
            match mapping.translate_prepared(&p.sql)? {
                Translation::Skip => {}
                Translation::Unchanged | Translation::Sql(_) => mirrored = true,
            }
        }
        Ok(mirrored)
    }

    /// Why a statement the batch parses or binds cannot run on the
    /// authority (new, through the schema mapping); `None` when all can.
    fn batch_not_for_authority(&self, batch: &[Frame]) -> Option<String> {
        if self.auth_side() == Side::Old {
            return None;
        }
        batch.iter().find_map(|f| {
            let body = f.body();
            let sql = match f.tag {
                b'P' => cstr(body)
                    .and_then(|(_, rest)| cstr(rest))
                    .map(|(sql, _)| sql),
                b'B' => cstr(body)
                    .and_then(|(_, rest)| cstr(rest))
                    .and_then(|(stmt, _)| self.statements.get(stmt))
                    .map(|p| &*p.sql),
                _ => None,
            }?;
            self.not_for_authority(sql, true)
        })
    }

    /// `sql` as the mirror runs it: through the schema mapping (checked
    /// translatable by [`Self::mapping_verdict`] first).
    fn mirror_sql(&self, sql: &str) -> String {
        self.shared
            .mapping
            .load()
            .toward(self.mirror_side)
            .translated_or_same(sql)
    }

    /// Flush: the messages so far go to the authority now; its answers are
    /// relayed as they come (counted, since no ReadyForQuery ends them).
    pub(super) async fn flush_batch(&mut self) -> Step {
        let batch = std::mem::take(&mut self.batch);
        let executed = self.register(&batch);
        for class in &executed {
            if matches!(
                self.route(class),
                Route::Write | Route::Commit | Route::Unwrapped
            ) {
                self.shared.record_divergence(Divergence::new(
                    DivergenceKind::UnsafeStatement,
                    self.mirror_side,
                    &class.fingerprint,
                    "executed with Flush before Sync: not mirrored",
                ));
            }
        }
        let mut msgs = BytesMut::new();
        let mut expected = 0usize;
        for f in &batch {
            msgs.extend_from_slice(&f.raw);
            expected += usize::from(matches!(f.tag, b'P' | b'B' | b'C' | b'D' | b'E'));
        }
        msgs.extend_from_slice(&codec::frame(b'H', &[]));
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        self.flushed = true;
        while expected > 0 {
            let f = self.auth.read().await.map_err(Stop::Authority)?;
            self.queue(&f.raw);
            match f.tag {
                // After an error the server skips to Sync: nothing more comes.
                b'E' => break,
                b'1' | b'2' | b'3' | b'T' | b'n' | b'C' | b'I' | b's' => expected -= 1,
                _ => {}
            }
        }
        self.flush_client().await
    }

    pub(super) async fn sync_batch(&mut self) -> Step {
        let batch = std::mem::take(&mut self.batch);
        let executed = self.register(&batch);
        let raw: BytesMut = batch.iter().fold(BytesMut::new(), |mut b, f| {
            b.extend_from_slice(&f.raw);
            b
        });
        if std::mem::take(&mut self.flushed) {
            // Part of this batch already ran: finish it on the authority.
            self.send_auth(&raw).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            return Ok(());
        }
        let routes: Vec<Route> = executed.iter().map(|c| self.route(c)).collect();
        let mirror_only = routes.iter().filter(|&&r| r == Route::MirrorOnly).count();
        if mirror_only > 0 && mirror_only < routes.len() {
            let msg = "turnout: this batch mixes statements a rule (mirror.rules) sends to one side alone with others; send them in separate batches (each up to its own Sync)";
            let status = self.status;
            self.queue(&codec::error_response(Severity::Error, "0A000", msg));
            self.queue(&codec::ready_for_query(status));
            return self.flush_client().await;
        }
        let route = combine(&routes);
        let class = executed
            .iter()
            .find(|c| self.route(c) == route)
            .cloned()
            .unwrap_or_default();
        self.unit_class = class.clone();
        if let Some(reason) = self.batch_not_for_authority(&batch) {
            let plan = self.mirror_plan(&batch, true);
            let m = plan.build(None).unwrap_or_else(|_| raw.clone().freeze());
            if executed.len() == 1 && class.kind() == Kind::Read {
                self.mirror_prepared.extend(plan.prepares_named());
                self.added_parses = plan.parses.clone();
            }
            return self.untranslatable(&raw, &m, &class, &reason).await;
        }
        let copies = executed.iter().any(|c| sql_is_copy_from(&c.fingerprint));
        let writes = matches!(route, Route::Write | Route::Unwrapped);
        let verdict = if writes {
            self.mapping_verdict(&batch)
        } else {
            Ok(true)
        };
        if verdict == Ok(false) {
            // Nothing of it for new (an UPDATE of dropped columns only).
            self.send_auth(&raw).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            return Ok(());
        }
        let not_mirrored = if copies && route == Route::Write {
            Some("COPY FROM STDIN through the extended protocol is not mirrored".to_string())
        } else {
            // Never run wrong on the mirror.
            verdict.err().map(|e| format!("mapping: {e}"))
        };
        if let Some(reason) = not_mirrored {
            // The authority alone, recorded (or refused).
            if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason) {
                return self.refuse(&msg, false).await;
            }
            self.send_auth(&raw).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            return Ok(());
        }
        if !matches!(route, Route::Authority | Route::Both | Route::Reject) {
            self.wrote_in_tx = true;
        }
        match route {
            Route::Authority => {
                // Statements defined here must exist on the authority too:
                // a batch that names or closes one stays there.
                let defines = batch.iter().any(|f| {
                    f.tag == b'C' || (f.tag == b'P' && f.body().first().is_some_and(|&b| b != 0))
                });
                let reads = !executed.is_empty()
                    && executed
                        .iter()
                        .all(|c| c.kind() == Kind::Read && c.statements.len() == 1);
                if reads
                    && !defines
                    && self.reads_from_mirror()
                    && self.mapping_verdict(&batch).is_ok()
                {
                    let sample = if executed.len() == 1 {
                        self.sample_batch(&batch, &class)
                            .map(|(query, result_formats, permit)| ReadSample {
                                query,
                                result_formats,
                                permit,
                            })
                    } else {
                        None
                    };
                    let plan = self.mirror_plan(&batch, true);
                    let m = plan.build(None).unwrap_or_else(|_| raw.clone().freeze());
                    self.mirror_prepared.extend(plan.prepares_named());
                    // ParseCompletes of Parses turnout added are not the client's.
                    self.added_parses = plan.parses.clone();
                    return self.read_on_mirror(&m, &raw, sample, &class).await;
                }
                if executed.len() == 1 {
                    if let Some((query, formats, permit)) = self.sample_batch(&batch, &class) {
                        return self
                            .sampled_read(&raw, query, formats, &class, permit)
                            .await;
                    }
                }
                self.send_auth(&raw).await.map_err(Stop::Authority)?;
                self.relay_authority().await.map(|_| ())
            }
            Route::Reject => self.reject(&class).await,
            Route::Both => {
                let m = self
                    .mirror_batch(&batch, None)
                    .unwrap_or_else(|_| raw.clone().freeze());
                self.both(&raw, &m, &class).await
            }
            Route::Commit => {
                let m = self
                    .mirror_batch(&batch, None)
                    .unwrap_or_else(|_| raw.clone().freeze());
                self.commit(&raw, &m, &class).await
            }
            Route::Unwrapped => {
                let m = self
                    .mirror_batch(&batch, None)
                    .unwrap_or_else(|_| raw.clone().freeze());
                self.unwrapped(&raw, &m, &class).await
            }
            Route::MirrorOnly => {
                let plan = self.mirror_plan(&batch, true);
                let m = plan.build(None).unwrap_or_else(|_| raw.clone().freeze());
                self.mirror_prepared.extend(plan.prepares_named());
                self.mirror_only(&m).await
            }
            Route::Write => {
                let time_needed = executed.iter().any(|c| c.nondeterministic());
                // The mirror's copy is built once the authority's time is known.
                let mirror_parts = self.mirror_plan(&batch, false);
                if let Some(msg) = self.note_unsafe_inserts(&batch).await? {
                    return self.refuse(&msg, false).await;
                }
                let result = self
                    .write(
                        &raw,
                        time_needed,
                        &class,
                        |time| mirror_parts.build(time),
                        false,
                    )
                    .await;
                self.mirror_prepared.extend(mirror_parts.prepares_named());
                result
            }
        }
    }

    /// A batch that executes one read, when it is sampled: the query to run
    /// on the shadow (statement text and the Bind's parameters) and the
    /// result formats the client asked for.
    fn sample_batch(
        &self,
        batch: &[Frame],
        class: &Classification,
    ) -> Option<(ShadowQuery, Vec<u16>, OwnedSemaphorePermit)> {
        let bind = batch.iter().rev().find(|f| f.tag == b'B')?;
        let (_, stmt, params, formats) = split_bind(bind.body())?;
        let prepared = self.statements.get(stmt)?;
        let permit = self.sample_choice(class)?;
        let query = ShadowQuery {
            sql: prepared.sql.clone(),
            param_types: prepared.types.clone(),
            params: Some(params),
        };
        Some((query, formats, permit))
    }

    /// The batch as the mirror should run it, without time pinning.
    fn mirror_batch(&mut self, batch: &[Frame], time: Option<&str>) -> Result<Bytes, PinError> {
        let plan = self.mirror_plan(batch, false);
        let out = plan.build(time);
        self.mirror_prepared.extend(plan.prepares_named());
        out
    }

    /// Works out the mirror's messages: Parse lazily for statements the
    /// mirror lacks, Describe dropped unless `answers` (only the side whose
    /// answers the client gets describes), statements that need the
    /// authority's time re-parsed unnamed.
    fn mirror_plan(&self, batch: &[Frame], answers: bool) -> MirrorPlan {
        let mut parts = Vec::new();
        let mut parsed_here: HashSet<String> = HashSet::new();
        let mut prepared = self.mirror_prepared.clone();
        let mut parses = VecDeque::new();
        for f in batch {
            let body = f.body();
            match f.tag {
                b'P' => {
                    let Some((name, rest)) = cstr(body) else {
                        continue;
                    };
                    let Some((sql, types)) = cstr(rest) else {
                        continue;
                    };
                    let class = self.shared.classifier.classify(sql);
                    if class.nondeterministic() {
                        // Parsed at its Bind, with the time pinned.
                        continue;
                    }
                    parsed_here.insert(name.to_string());
                    parses.push_back(false);
                    let mapped = self.mirror_sql(sql);
                    if mapped == sql {
                        parts.push(Part::Raw(f.raw.clone()));
                    } else {
                        parts.push(Part::Raw(parse(name, &mapped, types)));
                    }
                    if !name.is_empty() {
                        prepared.insert(name.to_string());
                    }
                }
                b'B' => {
                    let Some((portal, rest)) = cstr(body) else {
                        continue;
                    };
                    let Some((stmt, tail)) = cstr(rest) else {
                        continue;
                    };
                    let Some(p) = self.statements.get(stmt) else {
                        parts.push(Part::Raw(f.raw.clone()));
                        continue;
                    };
                    if p.class.nondeterministic() {
                        parts.push(Part::PinnedParse {
                            sql: self.mirror_sql(&p.sql).into(),
                            types: p.types.clone(),
                        });
                        parses.push_back(true);
                        parts.push(Part::Raw(bind(portal, "", tail)));
                        continue;
                    }
                    let known =
                        parsed_here.contains(stmt) || (!stmt.is_empty() && prepared.contains(stmt));
                    if !known {
                        parses.push_back(true);
                        parts.push(Part::Raw(parse(stmt, &self.mirror_sql(&p.sql), &p.types)));
                        parsed_here.insert(stmt.to_string());
                        if !stmt.is_empty() {
                            prepared.insert(stmt.to_string());
                        }
                    }
                    parts.push(Part::Raw(f.raw.clone()));
                }
                b'C' => {
                    let named = body.get(1..).and_then(cstr).map(|(n, _)| n.to_string());
                    match (body.first(), named) {
                        (Some(b'S'), Some(n)) if prepared.contains(&n) => {
                            prepared.remove(&n);
                            parts.push(Part::Raw(f.raw.clone()));
                        }
                        (Some(b'S'), _) => {}
                        _ => parts.push(Part::Raw(f.raw.clone())),
                    }
                }
                b'D' if answers => parts.push(Part::Raw(f.raw.clone())),
                b'D' | b'H' => {}
                _ => parts.push(Part::Raw(f.raw.clone())),
            }
        }
        MirrorPlan {
            parts,
            prepared,
            parses,
        }
    }

    /// INSERTs through the extended protocol that leave columns to volatile
    /// defaults are not rewritten yet: each is recorded as unsafe (or, under
    /// `mirror.on_unsafe = fail`, gives the message to refuse the batch with).
    async fn note_unsafe_inserts(&mut self, batch: &[Frame]) -> Result<Option<String>, Stop> {
        let executed: Vec<(Arc<str>, Arc<Classification>)> = batch
            .iter()
            .filter(|f| f.tag == b'E')
            .filter_map(|f| cstr(f.body()))
            .filter_map(|(portal, _)| self.portals.get(portal))
            .filter_map(|stmt| self.statements.get(stmt))
            .map(|p| (p.sql.clone(), p.class.clone()))
            .collect();
        for (sql, class) in executed {
            let Some(table) = class.insert_table.as_deref() else {
                continue;
            };
            let table_defaults = self.table_defaults(table).await?;
            let reason = match defaults::plan(&sql, &table_defaults) {
                Ok(None) => continue,
                Ok(Some(plan)) => format!(
                    "extended-protocol INSERT leaves {} to volatile defaults; their values may differ on the mirror",
                    plan.missing
                        .iter()
                        .map(|d| d.column.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(reason) => reason.to_string(),
            };
            if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason) {
                return Ok(Some(msg));
            }
        }
        Ok(None)
    }

    pub(super) async fn function_call(&mut self, frame: Frame) -> Step {
        if let Some(msg) = self.unsafe_write(
            "(function call message)",
            "the FunctionCall protocol message is not mirrored",
        ) {
            return self.refuse(&msg, false).await;
        }
        self.send_auth(&frame.raw).await.map_err(Stop::Authority)?;
        self.relay_authority().await.map(|_| ())
    }
}

enum Part {
    Raw(Bytes),
    PinnedParse { sql: Arc<str>, types: Bytes },
}

struct MirrorPlan {
    parts: Vec<Part>,
    prepared: HashSet<String>,
    /// For each Parse sent, in order: whether turnout added it (its
    /// ParseComplete is not the client's).
    parses: VecDeque<bool>,
}

impl MirrorPlan {
    pub(super) fn build(&self, time: Option<&str>) -> Result<Bytes, PinError> {
        let mut out = BytesMut::new();
        for part in &self.parts {
            match part {
                Part::Raw(b) => out.extend_from_slice(b),
                Part::PinnedParse { sql, types } => {
                    let text = match time {
                        Some(t) => pin_transaction_time(sql, t)?.0,
                        None => sql.to_string(),
                    };
                    out.extend_from_slice(&parse("", &text, types));
                }
            }
        }
        Ok(out.freeze())
    }

    pub(super) fn prepares_named(&self) -> impl Iterator<Item = String> + '_ {
        self.prepared.iter().cloned()
    }
}

fn parse(name: &str, sql: &str, types: &[u8]) -> Bytes {
    let mut body = BytesMut::new();
    put_cstr(&mut body, name);
    put_cstr(&mut body, sql);
    body.put_slice(types);
    codec::frame(b'P', &body)
}

fn bind(portal: &str, statement: &str, tail: &[u8]) -> Bytes {
    let mut body = BytesMut::new();
    put_cstr(&mut body, portal);
    put_cstr(&mut body, statement);
    body.put_slice(tail);
    codec::frame(b'B', &body)
}

/// A Bind body as (portal, statement, parameter section, result formats).
fn split_bind(body: &[u8]) -> Option<(&str, &str, Bytes, Vec<u16>)> {
    let (portal, rest) = cstr(body)?;
    let (stmt, rest) = cstr(rest)?;
    let u16_at = |b: &[u8], i: usize| -> Option<u16> {
        b.get(i..i + 2).map(|x| u16::from_be_bytes([x[0], x[1]]))
    };
    let n_formats = u16_at(rest, 0)? as usize;
    let mut at = 2 + 2 * n_formats;
    let n_params = u16_at(rest, at)? as usize;
    at += 2;
    for _ in 0..n_params {
        let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
        at += 4 + len.max(0) as usize;
    }
    let params = Bytes::copy_from_slice(rest.get(..at)?);
    let n_results = u16_at(rest, at)? as usize;
    let formats = (0..n_results)
        .map(|i| u16_at(rest, at + 2 + 2 * i))
        .collect::<Option<Vec<u16>>>()?;
    Some((portal, stmt, params, formats))
}
