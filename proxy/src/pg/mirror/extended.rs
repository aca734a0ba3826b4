//! The extended protocol: Parse/Bind/Execute batches up to Sync (or Flush),
//! and the mirror's copy of a batch.

use super::{
    cstr, image, sql_is_copy_from, MirrorSession, Msg, Prepared, ReadSample, Step, Stop, Undo,
    PROBE_TIME,
};
use crate::engine::pin::PinError;
use crate::engine::route::{combine, Route};
use crate::engine::{defaults, Classification, Kind, StatementClass};
use crate::mapping::Translation;
use crate::pg::codec::{self, put_cstr, Severity};
use crate::pg::framed::Frame;
use crate::pg::shadow::ShadowQuery;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use turnout_config::UnsafePolicy;
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::Side;

impl MirrorSession<'_> {
    /// Takes a Parse/Bind/Describe/Execute/Close into the batch, resolving
    /// the names it uses as they stand now.
    pub(super) fn arrive(&mut self, frame: Frame) -> Msg {
        let body = frame.body();
        let mut stmt = None;
        let mut undo = None;
        let mut to_auth = None;
        match frame.tag {
            b'P' => {
                if let Some((name, (sql, types))) =
                    cstr(body).and_then(|(name, rest)| Some((name, cstr(rest)?)))
                {
                    let class = self.classify(sql);
                    if class.kind() == Kind::Ddl {
                        self.table_defaults.clear();
                        self.shared.image_tables.clear();
                    }
                    let image = self.imaged(sql, &class);
                    if let Some(i) = &image {
                        to_auth = Some(parse(name, &i.capture, types));
                    }
                    let before = self.statements.insert(
                        name.to_string(),
                        Prepared {
                            sql: sql.into(),
                            types: Bytes::copy_from_slice(types),
                            class,
                            image,
                        },
                    );
                    undo = Some(Undo::Statement(name.to_string(), before));
                }
            }
            b'B' => {
                if let Some((portal, (name, _))) =
                    cstr(body).and_then(|(portal, rest)| Some((portal, cstr(rest)?)))
                {
                    stmt = self.statements.get(name).cloned();
                    if stmt.as_ref().is_some_and(|p| p.image.is_some()) {
                        to_auth = image::bind_with_image(&frame.raw);
                    }
                    let before = match &stmt {
                        Some(p) => self.portals.insert(portal.to_string(), p.clone()),
                        None => self.portals.remove(portal),
                    };
                    undo = Some(Undo::Portal(portal.to_string(), before));
                }
            }
            b'E' => {
                stmt = cstr(body).and_then(|(portal, _)| self.portals.get(portal).cloned());
                if stmt.as_ref().is_some_and(|p| p.image.is_some()) {
                    to_auth = image::execute_whole(&frame.raw);
                }
            }
            b'D' => {
                // Its answer loses the image column when the statement has it.
                stmt = match (body.first(), body.get(1..).and_then(cstr)) {
                    (Some(b'S'), Some((name, _))) => self.statements.get(name).cloned(),
                    (Some(b'P'), Some((name, _))) => self.portals.get(name).cloned(),
                    _ => None,
                };
            }
            b'C' => {
                if let Some((name, _)) = body.get(1..).and_then(cstr) {
                    undo = Some(if body[0] == b'S' {
                        Undo::Statement(name.to_string(), self.statements.remove(name))
                    } else {
                        Undo::Portal(name.to_string(), self.portals.remove(name))
                    });
                }
            }
            _ => {}
        }
        Msg {
            frame,
            stmt,
            undo,
            to_auth,
            images: Vec::new(),
            image_bytes: Some(0),
        }
    }

    /// The backend did not run `msgs` (the last messages of the batch): the
    /// names they defined or closed are as they were before them.
    pub(super) fn not_run(&mut self, msgs: &mut [Msg]) {
        for m in msgs.iter_mut().rev() {
            let parsed = m.frame.tag == b'P';
            match m.undo.take() {
                // A statement a rule sends to the mirror's side alone lives
                // there (prepared when first run): the authority refusing
                // its Parse does not undo it.
                Some(Undo::Statement(name, _))
                    if parsed
                        && self
                            .statements
                            .get(&name)
                            .is_some_and(|p| self.route(&p.class) == Route::MirrorOnly) => {}
                Some(Undo::Statement(name, Some(p))) => {
                    self.statements.insert(name, p);
                }
                Some(Undo::Statement(name, None)) => {
                    self.statements.remove(&name);
                }
                Some(Undo::Portal(name, Some(p))) => {
                    self.portals.insert(name, p);
                }
                Some(Undo::Portal(name, None)) => {
                    self.portals.remove(&name);
                }
                None => {}
            }
        }
    }

    /// The classes of the statements the messages execute, in order.
    fn executed(msgs: &[Msg]) -> Vec<Arc<Classification>> {
        msgs.iter()
            .filter(|m| m.frame.tag == b'E')
            .map(exec_class)
            .collect()
    }

    /// What the schema mapping makes of the statements the batch binds:
    /// all mirrored (translated where needed), `Ok(false)` when there is
    /// nothing of them for `new`, `Err` when one cannot be translated.
    fn mapping_verdict(&self, batch: &[Msg]) -> Result<bool, String> {
        let mapping = self.shared.mapping();
        let mapping = mapping.toward(self.mirror_side);
        if mapping.is_identity() {
            return Ok(true);
        }
        let mut mirrored = false;
        for p in batch
            .iter()
            .filter(|m| m.frame.tag == b'B')
            .filter_map(|m| m.stmt.as_ref())
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
    fn batch_not_for_authority(&self, batch: &[Msg]) -> Option<String> {
        if self.auth_side() == Side::Old {
            return None;
        }
        batch.iter().find_map(|m| {
            let sql = match m.frame.tag {
                b'P' => cstr(m.frame.body())
                    .and_then(|(_, rest)| cstr(rest))
                    .map(|(sql, _)| sql),
                b'B' => m.stmt.as_ref().map(|p| &*p.sql),
                _ => None,
            }?;
            self.not_for_authority(sql, true)
        })
    }

    /// `sql` as the mirror runs it: through the schema mapping (checked
    /// translatable by [`Self::mapping_verdict`] first).
    pub(super) fn mirror_sql(&self, sql: &str) -> String {
        self.shared
            .mapping()
            .toward(self.mirror_side)
            .translated_or_same(sql)
    }

    /// Why the batch must run whole on one side, the way [`Self::sync_batch`]
    /// decides for a batch that arrives whole: a rule sends a statement to
    /// one side, DDL is refused, a statement cannot be translated, COPY.
    /// Such a batch is not run piecewise at a Flush.
    fn needs_whole_batch(&self, batch: &[Msg]) -> bool {
        let executed = Self::executed(batch);
        executed
            .iter()
            .any(|c| matches!(self.route(c), Route::Reject | Route::MirrorOnly))
            || executed.iter().any(|c| sql_is_copy_from(&c.fingerprint))
            || self.batch_not_for_authority(batch).is_some()
            || (executed.iter().any(|c| self.route(c) == Route::Write)
                && self.mapping_verdict(batch) != Ok(true))
    }

    /// Flush: what the client sent so far runs on the authority now and its
    /// answers are relayed; the batch goes on to its Sync as one.
    pub(super) async fn flush_batch(&mut self) -> Step {
        if self.run.skipping || self.batch.len() == self.run.sent {
            // Nothing new: every answer so far was relayed already.
            return Ok(());
        }
        if !self.run.whole_on_authority && self.needs_whole_batch(&self.batch[self.run.sent..]) {
            self.run.whole_on_authority = true;
            for class in Self::executed(&self.batch[self.run.sent..]) {
                if matches!(
                    self.route(&class),
                    Route::Write | Route::Commit | Route::Unwrapped | Route::MirrorOnly
                ) {
                    self.shared.records.divergence(Divergence::new(
                        DivergenceKind::UnsafeStatement,
                        self.mirror_side,
                        &class.fingerprint,
                        "executed with Flush before Sync in a batch that must run whole on one side (a rule, COPY or the schema mapping): not mirrored",
                    ));
                }
            }
        }
        self.advance(None).await
    }

    pub(super) async fn sync_batch(&mut self, sync: Frame) -> Step {
        if self.run.sent > 0 || self.run.skipping {
            // Part of the batch ran at a Flush: it ends the same way.
            return self.advance(Some(sync)).await;
        }
        let executed = Self::executed(&self.batch);
        let raw: BytesMut =
            self.batch
                .iter()
                .map(|m| &m.frame)
                .chain([&sync])
                .fold(BytesMut::new(), |mut b, f| {
                    b.extend_from_slice(&f.raw);
                    b
                });
        let routes: Vec<Route> = executed.iter().map(|c| self.route(c)).collect();
        let mirror_only = routes.iter().filter(|&&r| r == Route::MirrorOnly).count();
        if mirror_only > 0 && mirror_only < routes.len() {
            self.not_run_from(0);
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
        let raw = raw.freeze();
        self.expect_no_writes(route, &class, &raw);
        let batch = std::mem::take(&mut self.batch);
        self.sync_whole(batch, raw, sync, &executed, route, class)
            .await
    }

    /// The batch runs on the authority alone, nothing of it mirrored.
    async fn on_authority_alone(&mut self, batch: Vec<Msg>, sync: Frame) -> Step {
        self.batch = batch;
        self.run.whole_on_authority = true;
        self.advance(Some(sync)).await
    }

    /// Nothing of the batch runs on the authority (it is refused, or the
    /// mirror's side serves it): its names stay as they were there.
    fn none_on_authority(&mut self, mut batch: Vec<Msg>) {
        self.not_run(&mut batch);
    }

    /// A batch that arrived whole, up to its Sync (`raw` ends with it).
    async fn sync_whole(
        &mut self,
        batch: Vec<Msg>,
        raw: Bytes,
        sync: Frame,
        executed: &[Arc<Classification>],
        route: Route,
        class: Arc<Classification>,
    ) -> Step {
        if let Some(reason) = self.batch_not_for_authority(&batch) {
            let plan = self.mirror_plan(&batch, true);
            let m = with_sync(plan.build(None), &raw, &sync);
            if executed.len() == 1 && class.kind() == Kind::Read {
                self.mirror_prepared.extend(plan.prepares_named());
                self.added_parses = plan.parses.clone();
            }
            self.none_on_authority(batch);
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
            return self.on_authority_alone(batch, sync).await;
        }
        let not_mirrored = if copies && route == Route::Write {
            Some("COPY FROM STDIN through the extended protocol is not mirrored".to_string())
        } else {
            // Never run wrong on the mirror.
            verdict.err().map(|e| format!("mapping: {e}"))
        };
        if let Some(reason) = not_mirrored {
            // The authority alone, recorded (or refused).
            if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason, &raw) {
                self.none_on_authority(batch);
                return self.refuse(&msg, false).await;
            }
            return self.on_authority_alone(batch, sync).await;
        }
        match route {
            Route::Authority => {
                // Statements defined here must exist on the authority too:
                // a batch that names or closes one stays there.
                let defines = batch.iter().any(|m| {
                    m.frame.tag == b'C'
                        || (m.frame.tag == b'P' && m.frame.body().first().is_some_and(|&b| b != 0))
                });
                // A read calling a function that may write runs where its
                // transaction id tells (see `hidden`).
                let watched = match (executed, batch.iter().find(|m| m.frame.tag == b'E')) {
                    ([class], Some(m)) => match m.stmt.as_ref().map(|p| p.sql.clone()) {
                        Some(sql) => self.may_write(class, &sql).await,
                        None => false,
                    },
                    _ => false,
                };
                let reads = !executed.is_empty()
                    && !watched
                    && executed
                        .iter()
                        .all(|c| c.kind() == Kind::Read && c.statements.len() == 1);
                // The row-image form of a statement is answered through
                // `auth_range` only (its added column is taken off there).
                let imaged = batch.iter().any(|m| m.imaged().is_some());
                if reads
                    && !imaged
                    && !defines
                    && self.reads_from_mirror()
                    && self.mapping_verdict(&batch).is_ok()
                {
                    self.read_query = if executed.len() == 1 {
                        batch_query(&batch).map(|(q, _)| q)
                    } else {
                        None
                    };
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
                    let m = with_sync(plan.build(None), &raw, &sync);
                    self.mirror_prepared.extend(plan.prepares_named());
                    // ParseCompletes of Parses turnout added are not the client's.
                    self.added_parses = plan.parses.clone();
                    return self.read_on_mirror(&m, &raw, sample, &class).await;
                }
                if watched {
                    self.run.watch = Some(class.clone());
                } else if executed.len() == 1 && !imaged {
                    if let Some((query, formats, permit)) = self.sample_batch(&batch, &class) {
                        return self
                            .sampled_read(&raw, query, formats, &class, permit)
                            .await;
                    }
                }
                self.on_authority_alone(batch, sync).await
            }
            Route::Reject => {
                self.none_on_authority(batch);
                self.reject(&class).await
            }
            Route::MirrorOnly => {
                let plan = self.mirror_plan(&batch, true);
                let m = with_sync(plan.build(None), &raw, &sync);
                self.mirror_prepared.extend(plan.prepares_named());
                self.none_on_authority(batch);
                self.mirror_only(&m).await
            }
            Route::Both
            | Route::Commit
            | Route::Unwrapped
            | Route::Write
            | Route::Logged
            | Route::LoggedDdl => {
                if let Some(msg) = self.refusal(&batch).await? {
                    self.none_on_authority(batch);
                    return self.refuse(&msg, false).await;
                }
                self.batch = batch;
                self.advance(Some(sync)).await
            }
        }
    }

    /// Before a batch with writes runs: each write the mirror may not
    /// reproduce is recorded as unsafe, or under `mirror.on_unsafe = "fail"`
    /// gives the message the batch is refused with before either side runs it.
    async fn refusal(&mut self, batch: &[Msg]) -> Result<Option<String>, Stop> {
        // Row images carry the authority's values: only writes mirrored as
        // statements are checked here (and, under `on_unsafe = "fail"`,
        // those whose rows cannot be applied by key are refused now).
        let mut statements = Vec::new();
        for m in batch.iter().filter(|m| m.frame.tag == b'E') {
            let class = exec_class(m);
            if self.route(&class) != Route::Write {
                continue;
            }
            match m.stmt.as_ref().and_then(|p| p.image.clone()) {
                None => {
                    if let Some(why) = self.statement_risk(&class) {
                        if let Some(msg) = self.statement_mirrored(&class, &why, &raw_of(batch)) {
                            return Ok(Some(msg));
                        }
                    }
                    statements.push(class)
                }
                Some(i) => {
                    if let Some(msg) = self.image_noted(&class, &i.target, &raw_of(batch)) {
                        return Ok(Some(msg));
                    }
                    if self.shared.unsafe_policy != UnsafePolicy::Fail {
                        continue;
                    }
                    if let Err(image::NotImaged::ByStatement(why)) =
                        self.image_table(&i.target).await
                    {
                        if let Some(msg) = self.statement_mirrored(&class, &why, &raw_of(batch)) {
                            return Ok(Some(msg));
                        }
                    }
                }
            }
        }
        for class in &statements {
            let reason = match class.unsafe_reason() {
                Some(r) => Some(r.to_string()),
                None if class.nondeterministic()
                    && self.shared.unsafe_policy == UnsafePolicy::Fail =>
                {
                    // Whether the authority's time can be pinned in.
                    let plan = self.mirror_plan(batch, false);
                    plan.build(Some(PROBE_TIME)).err().map(|e| e.to_string())
                }
                None => None,
            };
            if let Some(reason) = reason {
                if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason, &raw_of(batch)) {
                    return Ok(Some(msg));
                }
            }
        }
        self.note_unsafe_inserts(batch).await
    }

    /// A batch that executes one read, when it is sampled: the query to run
    /// on the shadow (statement text and the Bind's parameters) and the
    /// result formats the client asked for.
    fn sample_batch(
        &self,
        batch: &[Msg],
        class: &Classification,
    ) -> Option<(ShadowQuery, Vec<u16>, OwnedSemaphorePermit)> {
        let (query, formats) = batch_query(batch)?;
        let permit = self.sample_choice(class)?;
        Some((query, formats, permit))
    }

    /// INSERTs through the extended protocol that leave columns to volatile
    /// defaults are not rewritten yet: each is recorded as unsafe (or, under
    /// `mirror.on_unsafe = fail`, gives the message to refuse the batch with).
    pub(super) async fn note_unsafe_inserts(
        &mut self,
        batch: &[Msg],
    ) -> Result<Option<String>, Stop> {
        // Each executed write with the Bind that gave its parameters.
        let mut bound = None;
        let mut executed = Vec::new();
        for m in batch {
            match (m.frame.tag, &m.stmt) {
                (b'B', _) => bound = Some(&m.frame.raw),
                (b'E', Some(p)) if self.route(&p.class) == Route::Write && p.image.is_none() => {
                    let mut sent = BytesMut::from(&parse("", &p.sql, &p.types)[..]);
                    sent.extend_from_slice(bound.map_or(&[][..], |b| &b[..]));
                    executed.push((p.sql.clone(), p.class.clone(), sent));
                }
                _ => {}
            }
        }
        for (sql, class, sent) in executed {
            let Some(table) = class.insert_table.as_deref() else {
                continue;
            };
            let table_defaults = self.table_defaults(table).await?;
            let reason = match defaults::plan(&sql, &table_defaults) {
                Ok(None) => continue,
                Ok(Some(plan)) => format!(
                    "extended-protocol INSERT leaves {} to volatile defaults; their values may differ on the mirror",
                    plan.missing_columns()
                ),
                Err(reason) => reason.to_string(),
            };
            if let Some(msg) = self.unsafe_write(&class.fingerprint, &reason, &sent) {
                return Ok(Some(msg));
            }
        }
        Ok(None)
    }

    pub(super) async fn function_call(&mut self, frame: Frame) -> Step {
        let why = if self.log.on {
            // (libpq's large-object API uses it.)
            "the FunctionCall protocol message: the rows it writes are in the log, but large objects are not, so not on the mirror"
        } else {
            "the FunctionCall protocol message is not mirrored"
        };
        if let Some(msg) = self.unsafe_write("(function call message)", why, &frame.raw) {
            return self.refuse(&msg, false).await;
        }
        self.send_auth(&frame.raw).await.map_err(Stop::Authority)?;
        self.relay_authority().await.map(|_| ())
    }
}

/// The read a batch runs (its last Bind's statement and parameters), to
/// run again elsewhere, and the result formats the client asked for.
fn batch_query(batch: &[Msg]) -> Option<(ShadowQuery, Vec<u16>)> {
    let bind = batch.iter().rev().find(|m| m.frame.tag == b'B')?;
    let (_, _, params, formats) = split_bind(bind.frame.body())?;
    let prepared = bind.stmt.as_ref()?;
    let query = ShadowQuery {
        sql: prepared.sql.clone(),
        param_types: prepared.types.clone(),
        params: Some(params),
    };
    Some((query, formats))
}

pub(super) fn parse(name: &str, sql: &str, types: &[u8]) -> Bytes {
    let mut body = BytesMut::new();
    put_cstr(&mut body, name);
    put_cstr(&mut body, sql);
    body.put_slice(types);
    codec::frame(b'P', &body)
}

pub(super) fn close(what: u8, name: &str) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(what);
    put_cstr(&mut body, name);
    codec::frame(b'C', &body)
}

/// A plan's messages for the mirror's side, ended by the client's Sync
/// (or, if the plan could not be built, the client's own messages).
fn with_sync(built: Result<Bytes, PinError>, raw: &Bytes, sync: &Frame) -> Bytes {
    match built {
        Ok(b) => {
            let mut out = BytesMut::from(&b[..]);
            out.extend_from_slice(&sync.raw);
            out.freeze()
        }
        Err(_) => raw.clone(),
    }
}

/// The messages as sent, one after the other.
pub(super) fn raw_of(msgs: &[Msg]) -> BytesMut {
    msgs.iter().fold(BytesMut::new(), |mut b, m| {
        b.extend_from_slice(&m.frame.raw);
        b
    })
}

/// The class of the statement an Execute runs; a portal turnout cannot
/// trace counts as a write.
pub(super) fn exec_class(m: &Msg) -> Arc<Classification> {
    match &m.stmt {
        Some(p) => p.class.clone(),
        None => Arc::new(Classification {
            statements: vec![StatementClass {
                kind: Kind::Write,
                unsafe_reason: None,
                nondeterministic: false,
            }],
            fingerprint: "(unknown portal)".into(),
            ..Classification::default()
        }),
    }
}

pub(super) fn bind(portal: &str, statement: &str, tail: &[u8]) -> Bytes {
    let mut body = BytesMut::new();
    put_cstr(&mut body, portal);
    put_cstr(&mut body, statement);
    body.put_slice(tail);
    codec::frame(b'B', &body)
}

/// A Bind body as (portal, statement, parameter section, result formats).
pub(super) fn split_bind(body: &[u8]) -> Option<(&str, &str, Bytes, Vec<u16>)> {
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
