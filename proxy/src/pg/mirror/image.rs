//! Row images in a PostgreSQL session ([`crate::engine::row_image`]): the
//! authority's answer loses the column turnout added, the mirror gets the
//! rows, and what the mirror found is checked against what the authority
//! wrote.

use super::{cstr, no_error, query, Checks, MirrorSession, Step, Stop};
use crate::engine::image_check::{self, TableCheck, Verdict};
use crate::engine::row_image::{self, Expect, ImageTarget, MirrorTable, Op, APPLIED};
use crate::engine::Classification;
use crate::pg::codec::{self, put_cstr};
use crate::pg::framed::Frame;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use turnout_config::{MirrorErrorPolicy, UnsafePolicy};
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::Side;

/// A statement whose writes the authority answers with row images.
#[derive(Debug, Clone)]
pub(super) struct Imaged {
    pub target: ImageTarget,
    /// The text the authority runs (the client's, with the image added).
    pub capture: Arc<str>,
}

/// The RowDescription the client gets: without turnout's last field, or
/// NoData when the client asked for no rows.
pub(super) fn strip_description(f: &Frame, client_returning: bool) -> Bytes {
    if !client_returning {
        return codec::frame(b'n', &[]);
    }
    let body = f.body();
    let Some(count) = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return f.raw.clone();
    };
    let mut at = 2;
    let mut kept_end = 2;
    for i in 0..count {
        let Some(name_end) = body[at..].iter().position(|&b| b == 0) else {
            return f.raw.clone();
        };
        at += name_end + 1 + 18;
        if at > body.len() {
            return f.raw.clone();
        }
        if i + 1 < count {
            kept_end = at;
        }
    }
    let mut out = BytesMut::with_capacity(kept_end);
    out.put_u16(count.saturating_sub(1));
    out.extend_from_slice(&body[2..kept_end]);
    codec::frame(b'T', &out)
}

/// A DataRow's last value (the image: the row's text, whose binary form
/// is the same bytes) and the row the client gets without it (`None` when
/// the client asked for no rows).
pub(super) fn split_row(f: &Frame, client_returning: bool) -> (Option<Bytes>, Option<Bytes>) {
    let values = codec::data_row_values(f.body());
    let Some((last, kept)) = values.split_last() else {
        return (client_returning.then(|| f.raw.clone()), None);
    };
    let image = last.map(Bytes::copy_from_slice);
    if !client_returning {
        return (None, image);
    }
    let mut out = BytesMut::new();
    out.put_u16(kept.len() as u16);
    for v in kept {
        match v {
            None => out.put_i32(-1),
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.extend_from_slice(v);
            }
        }
    }
    (Some(codec::frame(b'D', &out)), image)
}

/// A Bind for an imaged statement: with one result format per column, the
/// added column's (text) is added.
pub(super) fn bind_with_image(raw: &Bytes) -> Option<Bytes> {
    let (portal, stmt, params, formats) = super::extended::split_bind(&raw[5..])?;
    if formats.len() <= 1 {
        return None;
    }
    let mut tail = BytesMut::from(&params[..]);
    tail.put_u16(formats.len() as u16 + 1);
    for f in formats {
        tail.put_u16(f);
    }
    tail.put_u16(0);
    Some(super::extended::bind(portal, stmt, &tail))
}

/// An Execute for an imaged portal: every row at once (the rows are the
/// mirror's to apply; a client that asked for none gets none anyway).
pub(super) fn execute_whole(raw: &Bytes) -> Option<Bytes> {
    let body = &raw[5..];
    let (portal, rest) = cstr(body)?;
    if rest.get(..4)? == [0, 0, 0, 0] {
        return None;
    }
    let mut out = BytesMut::new();
    put_cstr(&mut out, portal);
    out.put_i32(0);
    Some(codec::frame(b'E', &out))
}

/// The statement that applies `images` (see
/// [`row_image::apply_statement`]) and its one parameter, the rows; `Err`
/// when an image cannot be read or does not fit the tables (see
/// [`image_check::rows_param`]).
pub(super) fn apply_of(
    op: Op,
    table: &MirrorTable,
    check: &TableCheck,
    images: &[Bytes],
) -> Result<(String, Vec<u8>), String> {
    let rows = images
        .iter()
        .map(|i| image_check::parse_record(i))
        .collect::<Result<Vec<_>, _>>()?;
    let param = image_check::rows_param(table, &check.columns, &rows)?;
    Ok((row_image::apply_statement(op, table, &check.columns), param))
}

/// The messages that run an apply on the mirror (no Sync): the statement
/// named `name` (parsed first when `parse`), bound to `rows` (text).
/// `replica`: it runs with `session_replication_role = replica`
/// (`mirror.replica_role`), so the mirror's triggers do not fire for it.
pub(super) fn apply_messages(name: &str, sql: Option<&str>, rows: &[u8], replica: bool) -> Bytes {
    let mut out = BytesMut::new();
    let mut exec = BytesMut::new();
    put_cstr(&mut exec, "");
    exec.put_i32(0);
    let exec = codec::frame(b'E', &exec);
    if replica {
        out.extend_from_slice(&super::extended::parse(
            "",
            "SET LOCAL session_replication_role = replica",
            &[0, 0],
        ));
        out.extend_from_slice(&super::extended::bind("", "", &[0, 0, 0, 0, 0, 0]));
        out.extend_from_slice(&exec);
    }
    if let Some(sql) = sql {
        out.extend_from_slice(&super::extended::parse(name, sql, &[0, 0]));
    }
    let mut tail = BytesMut::new();
    tail.put_u16(0);
    tail.put_u16(1);
    tail.put_i32(rows.len() as i32);
    tail.extend_from_slice(rows);
    tail.put_u16(0);
    out.extend_from_slice(&super::extended::bind("", name, &tail));
    out.extend_from_slice(&exec);
    out.freeze()
}

/// The rows each apply in `frames` inserted (or deleted), in order.
pub(super) fn applied_counts(frames: &[Frame]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f.tag == b'D')
        .filter_map(|f| {
            let v = codec::data_row_values(f.body());
            match v.as_slice() {
                [Some(marker), Some(n)] if *marker == APPLIED.as_bytes() => {
                    std::str::from_utf8(n).ok()?.parse().ok()
                }
                _ => None,
            }
        })
        .collect()
}

/// Errors the authority gives a write for what the added `RETURNING` asks
/// (reading the row back): no privilege to read (42501), a rule or policy
/// that cannot return rows (0A000, 42P17), a value the row's text cannot
/// carry (22P05).
const RETURNING_CODES: [&str; 4] = ["42501", "0A000", "42P17", "22P05"];

/// Why a write's rows are not applied as images.
pub(super) enum NotImaged {
    /// The mirror's catalog could not be read: the mirror cannot be
    /// reached, which mirroring the statement meets and records as a
    /// mirror failure (never as an unsafe statement).
    Unreachable,
    /// Rows cannot be applied by key (the reason): mirrored as a
    /// statement, and recorded as such.
    ByStatement(String),
}

/// Whether `target`'s rows can be applied to `t` by key: an UPDATE or
/// DELETE needs a key, and a write that assigns a key column moves the row,
/// which its image (the new row only) cannot say.
fn fits(t: &MirrorTable, target: &ImageTarget, side: Side) -> Result<(), String> {
    let key = t.key();
    if key.is_empty() && target.op != Op::Insert {
        return Err(format!(
            "{} has no primary key on {side}: rows cannot be found by key",
            target.table
        ));
    }
    if target
        .assigned
        .iter()
        .any(|a| key.iter().any(|k| k.eq_ignore_ascii_case(a)))
    {
        return Err(format!(
            "the statement assigns a primary-key column of {}: a row image carries the new key only",
            target.table
        ));
    }
    Ok(())
}

impl MirrorSession<'_> {
    /// The mirror's prepared apply statements are not to be trusted any
    /// more (a failure, a new connection, a role swap).
    pub(super) fn forget_applies(&self) {
        self.img.gen.fetch_add(1, Ordering::Relaxed);
    }

    /// The messages applying `images` on the mirror: its statement prepared
    /// there once per connection (`fresh` collects the names this adds,
    /// registered with [`Self::applies_sent`] once sent). `Err`: the images
    /// could not be applied (see [`apply_of`]).
    pub(super) fn apply_unit(
        &self,
        op: Op,
        (table, check): (&MirrorTable, &TableCheck),
        images: &[Bytes],
        fresh: &mut Vec<(String, Arc<str>)>,
    ) -> Result<Bytes, String> {
        let (sql, rows) = apply_of(op, table, check, images)?;
        let gen = self.img.gen.load(Ordering::Relaxed);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&sql, &mut h);
        let name = format!("turnout_apply_{gen}_{:016x}", std::hash::Hasher::finish(&h));
        let known = |n: &str| {
            (self.img.names_gen == gen && self.img.names.get(n).is_some_and(|s| **s == *sql))
                || fresh.iter().any(|(f, s)| f == n && **s == *sql)
        };
        let taken = |n: &str| {
            (self.img.names_gen == gen && self.img.names.contains_key(n))
                || fresh.iter().any(|(f, _)| f == n)
        };
        let replica = self.shared.replica_role;
        if known(&name) {
            return Ok(apply_messages(&name, None, &rows, replica));
        }
        if taken(&name) {
            // Another text with this hash: unnamed, parsed each time.
            return Ok(apply_messages("", Some(&sql), &rows, replica));
        }
        let sql: Arc<str> = sql.into();
        fresh.push((name.clone(), sql.clone()));
        Ok(apply_messages(&name, Some(&sql), &rows, replica))
    }

    /// The apply statements of `fresh` were sent to the mirror.
    pub(super) fn applies_sent(&mut self, fresh: Vec<(String, Arc<str>)>) {
        let gen = self.img.gen.load(Ordering::Relaxed);
        if self.img.names_gen != gen {
            self.img.names.clear();
            self.img.names_gen = gen;
        }
        self.img.names.extend(fresh);
    }

    /// How the authority runs `sql` so that the mirror can apply its rows;
    /// `None`: mirrored as a statement (row images off, the statement's
    /// shape, or what the authority said of its table, [`Self::check_table`]).
    pub(super) fn imaged(&self, sql: &str, class: &Classification) -> Option<Arc<Imaged>> {
        if !self.images_on(class) {
            return None;
        }
        let target = class.image.target()?;
        if self
            .img
            .checks
            .get(&target.table)
            .is_some_and(|c| matches!(c.verdict, Verdict::Statement { .. }))
        {
            return None;
        }
        let capture = row_image::capture_text(sql, target)?;
        Some(Arc::new(Imaged {
            target: target.clone(),
            capture: capture.into(),
        }))
    }

    /// Why a write that is mirrored as a statement (not as row images,
    /// though row images are on) may do otherwise on the mirror.
    pub(super) fn statement_risk(&self, class: &Classification) -> Option<String> {
        if !self.images_on(class) {
            return None;
        }
        if let Some(t) = class.image.target() {
            if let Some(Verdict::Statement { why, record: true }) =
                self.img.checks.get(&t.table).map(|c| &c.verdict)
            {
                return Some(why.clone());
            }
        }
        class.image.statement_risk().map(String::from)
    }

    /// Whether writes of `class` go as row images when they can: on
    /// (`mirror.row_images`), not in async mode (queues drain per session,
    /// in no order across sessions, so an older image could overwrite a
    /// newer one), not under a `[mapping]` (the statement is translated for
    /// new), and not ruled to one side (run as the client wrote it).
    pub(super) fn images_on(&self, class: &Classification) -> bool {
        self.shared.row_images
            && !self.log.on
            && self.shared.async_queue.is_none()
            && class.rule.is_none()
            && self.shared.mapping().is_identity()
    }

    /// The mirror's table `table` (schema-qualified, as the authority
    /// resolved the client's name), from the shared cache or the mirror's
    /// catalog; `fresh`: read again from the catalog. `Err`: why rows
    /// cannot be applied to it by key (the write is then mirrored as a
    /// statement).
    pub(super) async fn mirror_table(
        &self,
        table: &str,
        fresh: bool,
    ) -> Result<Arc<MirrorTable>, NotImaged> {
        let side = self.mirror_side;
        let key = (side, table.to_string());
        if fresh {
            self.shared.image_tables.remove(&key);
        }
        if let Some(t) = self.shared.image_tables.get(&key) {
            return t.clone().map_err(NotImaged::ByStatement);
        }
        let mut conn = crate::backend::pg::open_simple(self.shared.target(side))
            .await
            .map_err(|_| NotImaged::Unreachable)?;
        let rows = crate::backend::pg::run(&mut conn, &row_image::catalog_query(table), side).await;
        crate::backend::pg::close(&mut conn).await;
        let rows = rows.map_err(|_| NotImaged::Unreachable)?;
        let found = row_image::mirror_table(table, &rows).map(Arc::new);
        self.shared.image_tables.insert(key, found.clone());
        found.map_err(NotImaged::ByStatement)
    }

    /// The name the mirror's table of `target` goes by: as the authority
    /// resolved it for this session, else as written.
    fn resolved(&self, target: &ImageTarget) -> String {
        self.img
            .checks
            .get(&target.table)
            .map_or_else(|| target.table.clone(), |c| c.name.clone())
    }

    /// Whether a write on `target` is applied as row images now: its
    /// mirror table has a key, and an UPDATE does not move rows by
    /// changing it. `Err`: why not, for the record.
    pub(super) async fn image_table(
        &self,
        target: &ImageTarget,
    ) -> Result<Arc<MirrorTable>, NotImaged> {
        let t = self.mirror_table(&self.resolved(target), false).await?;
        fits(&t, target, self.mirror_side).map_err(NotImaged::ByStatement)?;
        Ok(t)
    }

    /// The mirror's table for `target` and the authority's word on it when
    /// its rows are applied as images, from what [`Self::image_table`] and
    /// [`Self::check_table`] found before; `None`: the statement is
    /// mirrored instead.
    pub(super) fn image_route(
        &self,
        target: &ImageTarget,
    ) -> Option<(Arc<MirrorTable>, Arc<TableCheck>)> {
        let check = self.img.checks.get(&target.table)?;
        let found = self
            .shared
            .image_tables
            .get(&(self.mirror_side, check.name.clone()))?;
        let t = found.as_ref().ok()?;
        fits(t, target, self.mirror_side).ok()?;
        Some((t.clone(), check.clone()))
    }

    /// A write mirrored as a statement because its rows cannot be applied
    /// by key: recorded once per shape and session (or refused under
    /// `mirror.on_unsafe = "fail"`).
    pub(super) fn statement_mirrored(
        &mut self,
        class: &Classification,
        why: &str,
        sent: &[u8],
    ) -> Option<String> {
        if self.shared.unsafe_policy != UnsafePolicy::Fail
            && !self.img.noted.insert(class.fingerprint.clone())
        {
            return None;
        }
        let reason = format!("mirrored as a statement, not as row images: {why}");
        self.unsafe_write(&class.fingerprint, &reason, sent)
    }

    /// The mirror applied a write's rows and answered `applied`: a count
    /// that shows the sides held different rows is a `row_count_mismatch`.
    /// `Some(detail)` under `mirror.on_error = "fail"` (the write fails).
    pub(super) fn check_applied(&mut self, expects: &[Expect], frames: &[Frame]) -> Option<String> {
        let counts = applied_counts(frames);
        let mut failure = None;
        for (e, n) in expects.iter().zip(counts) {
            let Some(detail) = e.mismatch(n, self.mirror_side.name()) else {
                continue;
            };
            if e.missing_rows(n) && self.shared.backfill.may_lack_rows(&e.table) {
                // The backfill has not copied this table yet: new lacks old
                // rows by design (an update's image adds the row meanwhile).
                continue;
            }
            self.shared.records.mirror_error();
            let mut d = Divergence::new(
                DivergenceKind::RowCountMismatch,
                self.mirror_side,
                &e.fingerprint,
                &detail,
            );
            d.table = Some(e.table.clone());
            self.shared.records.divergence(d);
            if self.shared.mirror_policy == MirrorErrorPolicy::Fail {
                failure.get_or_insert(detail);
            }
        }
        failure
    }

    /// A simple-protocol write the mirror applies as row images. `None`
    /// when it is to be mirrored as a statement after all (nothing ran).
    pub(super) async fn image_write(
        &mut self,
        raw: &[u8],
        class: &Classification,
        imaged: &Imaged,
    ) -> Option<Step> {
        if self.status == b'E' {
            return None;
        }
        match self.image_table(&imaged.target).await {
            Ok(_) => {}
            // The statement path meets the same mirror and records that.
            Err(NotImaged::Unreachable) => return None,
            Err(NotImaged::ByStatement(why)) => {
                if let Some(msg) = self.statement_mirrored(class, &why, raw) {
                    return Some(self.refuse(&msg, false).await);
                }
                return None;
            }
        };
        if let Some(msg) = self.image_noted(class, &imaged.target, raw) {
            return Some(self.refuse(&msg, false).await);
        }
        self.image_write_to(raw, class, imaged).await
    }

    /// The write with its image on the authority, then the images on the
    /// mirror. `None`: the authority refused the statement only for the
    /// `RETURNING` turnout added (a privilege, a policy, a rule; found as
    /// the statement ran in a transaction of turnout's, rolled back):
    /// nothing ran, the statement is mirrored as the client sent it.
    async fn image_write_to(
        &mut self,
        raw: &[u8],
        class: &Classification,
        imaged: &Imaged,
    ) -> Option<Step> {
        let step = self.image_write_run(raw, class, imaged).await;
        if std::mem::take(&mut self.img.refused) {
            return None;
        }
        Some(step)
    }

    async fn image_write_run(
        &mut self,
        raw: &[u8],
        class: &Classification,
        imaged: &Imaged,
    ) -> Step {
        let target = &imaged.target;
        let wrap = self.status == b'I';
        let mut msgs = BytesMut::new();
        if wrap {
            msgs.extend_from_slice(&query("BEGIN"));
        }
        msgs.extend_from_slice(&self.frame_text(&imaged.capture));
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        if wrap {
            self.collect_authority().await?;
        }
        let (mut result, over) = self.collect_authority_capped(self.shared.max_image).await?;
        if over && result.error.is_none() {
            // More rows than turnout holds for one statement: refused, as
            // the authority would refuse it, and undone there.
            crate::shared::client_limit_hit("max_image_bytes");
            let msg = format!(
                "turnout: the statement writes more than {} bytes of rows (limits.max_image_bytes); it was not applied; write the rows in smaller statements",
                self.shared.max_image
            );
            return self.refuse_with("54000", &msg, wrap).await;
        }
        let mut images = Vec::new();
        let mut frames = Vec::with_capacity(result.frames.len());
        let mut refused = None;
        for f in result.frames.drain(..) {
            match f.tag {
                b'T' => {
                    let raw = strip_description(&f, target.returning);
                    if target.returning {
                        frames.push(Frame { tag: b'T', raw });
                    }
                }
                b'D' => {
                    let (row, image) = split_row(&f, target.returning);
                    images.extend(image);
                    if let Some(raw) = row {
                        frames.push(Frame { tag: b'D', raw });
                    }
                }
                b'E' => {
                    let fields = codec::error_fields(f.body());
                    if fields
                        .get(&b'C')
                        .is_some_and(|c| RETURNING_CODES.contains(&c.as_str()))
                    {
                        refused = fields.get(&b'M').cloned();
                    }
                    frames.push(f);
                }
                _ => frames.push(f),
            }
        }
        result.frames = frames;
        if let (Some(why), true) = (&refused, wrap) {
            // Perhaps for turnout's RETURNING alone: undone, and the
            // table's writes go as statements from now on, recorded.
            self.auth
                .send(&query("ROLLBACK"))
                .await
                .map_err(Stop::Authority)?;
            self.collect_authority().await?;
            let why =
                format!("the authority refused the statement with the row image added ({why})");
            self.img.checks.insert(
                target.table.clone(),
                Arc::new(TableCheck {
                    name: target.table.clone(),
                    columns: Vec::new(),
                    verdict: Verdict::Statement { why, record: true },
                }),
            );
            self.img.refused = true;
            return Ok(());
        }
        if result.error.is_some() {
            return self.relay_failure(&result, wrap).await;
        }
        self.wrote_in_tx = true;
        if images.is_empty() {
            return self.finish_write(&result, wrap, class).await;
        }
        let tables = match self.ready_images(target, &images).await? {
            Ok(t) => t,
            Err(detail) => {
                if self.mirror_failed(class, &detail, raw) {
                    return self.fail_write(wrap, &detail).await;
                }
                return self.finish_write(&result, wrap, class).await;
            }
        };
        let expect = Expect {
            op: target.op,
            rows: images.len(),
            table: target.table.clone(),
            fingerprint: class.fingerprint.clone(),
        };
        let mut fresh = Vec::new();
        let unit = self.apply_unit(target.op, (&tables.0, &tables.1), &images, &mut fresh);
        let mut apply = match unit {
            Ok(u) => BytesMut::from(&u[..]),
            Err(detail) => {
                if self.mirror_failed(class, &detail, raw) {
                    return self.fail_write(wrap, &detail).await;
                }
                return self.finish_write(&result, wrap, class).await;
            }
        };
        apply.extend_from_slice(&codec::frame(b'S', &[]));
        self.applies_sent(fresh);
        if !wrap {
            // In the client's block: read later, checked then.
            self.mirror_defer_checked(
                &apply,
                1,
                class,
                false,
                Checks {
                    expects: vec![expect],
                    rows: None,
                },
                raw,
            )
            .await;
            return self.relay_collected(&result, result.status).await;
        }
        let mut m = BytesMut::new();
        m.extend_from_slice(&query("BEGIN"));
        m.extend_from_slice(&apply);
        let fail = self.shared.mirror_policy == MirrorErrorPolicy::Fail;
        if !fail {
            m.extend_from_slice(&query("COMMIT"));
        }
        let readies = if fail { 2 } else { 3 };
        let outcome = self
            .on_mirror(&m, readies, true)
            .await
            .and_then(|c| match c.error {
                Some(e) => Err(e),
                None => Ok(c),
            });
        match outcome {
            Err(detail) => {
                if fail && self.mirror.is_some() {
                    let _ = self.on_mirror(&query("ROLLBACK"), 1, false).await;
                }
                if self.mirror_failed(class, &detail, raw) {
                    return self.fail_write(wrap, &detail).await;
                }
            }
            Ok(c) => {
                let mismatch = self.check_applied(&[expect], &c.frames);
                if fail {
                    let end = if mismatch.is_some() {
                        "ROLLBACK"
                    } else {
                        "COMMIT"
                    };
                    let ended = self.on_mirror(&query(end), 1, false).await;
                    if let Some(detail) = mismatch {
                        return self.fail_write(wrap, &detail).await;
                    }
                    if let Err(detail) = ended.and_then(no_error) {
                        self.mirror_failed(class, &detail, raw);
                        return self.fail_write(wrap, &detail).await;
                    }
                }
            }
        }
        self.finish_write(&result, wrap, class).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame {
            tag,
            raw: codec::frame(tag, body),
        }
    }

    fn description(names: &[&str]) -> Frame {
        let mut b = BytesMut::new();
        b.put_u16(names.len() as u16);
        for n in names {
            put_cstr(&mut b, n);
            b.extend_from_slice(&[0u8; 18]);
        }
        frame(b'T', &b)
    }

    fn row(values: &[Option<&[u8]>]) -> Frame {
        let mut b = BytesMut::new();
        b.put_u16(values.len() as u16);
        for v in values {
            match v {
                None => b.put_i32(-1),
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.extend_from_slice(v);
                }
            }
        }
        frame(b'D', &b)
    }

    #[test]
    fn the_added_column_is_taken_off_every_answer() {
        let stripped = strip_description(&description(&["id", "row"]), true);
        assert_eq!(stripped, description(&["id"]).raw);
        assert_eq!(
            strip_description(&description(&["row"]), false),
            codec::frame(b'n', &[])
        );
        let (kept, image) = split_row(&row(&[Some(b"7"), None, Some(b"(7,x)")]), true);
        assert_eq!(kept.unwrap(), row(&[Some(b"7"), None]).raw);
        assert_eq!(image.as_deref(), Some(&b"(7,x)"[..]));
        // Text's binary form is its bytes, whatever the encoding.
        let (kept, image) = split_row(&row(&[Some(b"(8,caf\xe9)")]), false);
        assert!(kept.is_none());
        assert_eq!(image.as_deref(), Some(&b"(8,caf\xe9)"[..]));
    }

    #[test]
    fn binds_and_executes_are_fitted_to_the_added_column() {
        let mut tail = BytesMut::new();
        tail.put_u16(1);
        tail.put_u16(1); // binary parameters
        tail.put_u16(1);
        tail.put_i32(4);
        tail.put_i32(42);
        tail.put_u16(2);
        tail.put_u16(1);
        tail.put_u16(0); // two result columns
        let bind = super::super::extended::bind("p", "s", &tail);
        let fitted = bind_with_image(&bind).unwrap();
        let mut want = BytesMut::from(&tail[..tail.len() - 6]);
        want.put_u16(3);
        want.put_u16(1);
        want.put_u16(0);
        want.put_u16(0);
        assert_eq!(fitted, super::super::extended::bind("p", "s", &want));
        // One format for all columns (or none): left as it is.
        let mut one = BytesMut::from(&tail[..tail.len() - 6]);
        one.put_u16(1);
        one.put_u16(1);
        assert_eq!(
            bind_with_image(&super::super::extended::bind("", "", &one)),
            None
        );
        let mut exec = BytesMut::new();
        put_cstr(&mut exec, "p");
        exec.put_i32(10);
        let whole = execute_whole(&codec::frame(b'E', &exec)).unwrap();
        assert_eq!(&whole[5..], b"p\0\0\0\0\0");
    }
}
