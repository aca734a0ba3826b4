//! What the authority says of a table before a session's writes to it carry
//! row images ([`crate::engine::image_check`]): asked once per table in the
//! client's own session (its search_path, role and temporary tables), kept
//! until a setting, a role or the schema changes.

use super::image::NotImaged;
use super::{cstr, MirrorSession, Stop};
use crate::backend::rows::Rows;
use crate::engine::image_check::{self, TableCheck, Verdict};
use crate::engine::row_image::{ImageTarget, MirrorTable};
use crate::engine::{Classification, Kind};
use crate::pg::framed::Frame;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use turnout_config::UnsafePolicy;

/// A session's row-image state.
#[derive(Default)]
pub(super) struct ImageState {
    /// Shapes (and table notes) recorded as not mirrored exactly by row
    /// images, once per session each.
    pub noted: HashSet<String>,
    /// Row-image apply statements prepared on the mirror's connection, by
    /// name (with their text), valid for generation `gen` only: any mirror
    /// failure or new connection starts a new generation, so a name never
    /// stands for a statement that may not exist there.
    pub names: HashMap<String, Arc<str>>,
    pub names_gen: u64,
    pub gen: AtomicU64,
    /// The authority's word on each table name as the session writes it.
    pub checks: HashMap<String, Arc<TableCheck>>,
    /// A setting changed inside the current transaction: the checks are
    /// forgotten again when it ends (`SET LOCAL` ends with it).
    pub local: bool,
    /// The write just tried with its image was refused for the image
    /// alone and undone: it runs as a statement.
    pub refused: bool,
    /// A cursor was declared over a read that may write: FETCH and MOVE
    /// are watched too (see `hidden`).
    pub cursors_write: bool,
}

impl ImageState {
    /// A statement the session runs (`class`; `status`: the transaction's):
    /// settings, roles and schema changes can make a name resolve to
    /// another table, or the added `RETURNING` fail.
    pub fn saw(&mut self, class: &Classification, status: u8) {
        let changes = matches!(class.kind(), Kind::Session | Kind::Ddl)
            || class.fingerprint.contains("set_config")
            || class.parse_error.is_some();
        if changes {
            self.checks.clear();
            self.local |= status != b'I';
        }
    }

    /// The transaction ended.
    pub fn ended(&mut self) {
        if std::mem::take(&mut self.local) {
            self.checks.clear();
        }
    }
}

impl MirrorSession<'_> {
    /// The authority's word on `table` (as the client's statement names
    /// it), asked in the client's session when not known yet.
    pub(super) async fn check_table(&mut self, table: &str) -> Result<Arc<TableCheck>, Stop> {
        if let Some(c) = self.img.checks.get(table) {
            return Ok(c.clone());
        }
        let statement = |why: String| TableCheck {
            name: table.to_string(),
            columns: Vec::new(),
            verdict: Verdict::Statement { why, record: true },
        };
        let check = if image_check::askable(table) {
            let sync = self.own_query_syncs();
            let (rows, error) = self
                .auth_own(&image_check::check_query(table), sync)
                .await?;
            let rows = Rows::new(image_check::CHECK_COLUMNS.map(String::from).to_vec(), rows);
            match error {
                Some(e) => statement(format!("the authority could not say what {table} is: {e}")),
                None => image_check::table_check(table, &rows, self.shared.replica_role)
                    .unwrap_or_else(statement),
            }
        } else {
            statement(format!("{table} is not a name turnout looks up"))
        };
        let check = Arc::new(check);
        self.img.checks.insert(table.to_string(), check.clone());
        Ok(check)
    }

    /// A Parse coming: the table its write would carry row images of is
    /// asked about now, before its text is fixed for the authority.
    pub(super) async fn check_parse(&mut self, frame: &Frame) -> Result<(), Stop> {
        if frame.tag != b'P' {
            return Ok(());
        }
        let Some((_, (sql, _))) = cstr(frame.body()).and_then(|(n, rest)| Some((n, cstr(rest)?)))
        else {
            return Ok(());
        };
        let class = self.classify(sql);
        if self.status == b'E' || !self.images_on(&class) {
            return Ok(());
        }
        if let Some(t) = class.image.target() {
            let table = t.table.clone();
            self.check_table(&table).await?;
        }
        Ok(())
    }

    /// A simple-protocol write: its table asked about first (see
    /// [`Self::check_parse`]).
    pub(super) async fn check_write(&mut self, class: &Classification) -> Result<(), Stop> {
        if self.status == b'E' || !self.images_on(class) {
            return Ok(());
        }
        if let Some(t) = class.image.target() {
            self.check_table(&t.table.clone()).await?;
        }
        Ok(())
    }

    /// What row images of `target` do not carry (its table's triggers),
    /// recorded once per session (or, under `mirror.on_unsafe = "fail"`,
    /// the message the write is refused with).
    pub(super) fn image_noted(
        &mut self,
        class: &Classification,
        target: &ImageTarget,
        sent: &[u8],
    ) -> Option<String> {
        let note = match self.img.checks.get(&target.table).map(|c| &c.verdict) {
            Some(Verdict::Image { note: Some(n) }) => n.clone(),
            _ => return None,
        };
        if self.shared.unsafe_policy != UnsafePolicy::Fail && !self.img.noted.insert(note.clone()) {
            return None;
        }
        self.unsafe_write(&class.fingerprint, &format!("row images: {note}"), sent)
    }

    /// The tables for applying `images` of `target`, read again where the
    /// images show them out of date: the authority's columns when a row
    /// has another number of values, the mirror's when it lacks one of
    /// them (a column added on both sides outside turnout). `Err`: why the
    /// images cannot be applied.
    pub(super) async fn ready_images(
        &mut self,
        target: &ImageTarget,
        images: &[Bytes],
    ) -> Result<Result<(Arc<MirrorTable>, Arc<TableCheck>), String>, Stop> {
        let mut check = self.check_table(&target.table).await?;
        let width = images
            .first()
            .and_then(|i| image_check::parse_record(i).ok())
            .map(|f| f.len());
        if width.is_some_and(|w| w != check.columns.len()) {
            self.img.checks.remove(&target.table);
            check = self.check_table(&target.table).await?;
        }
        let mut fresh = false;
        loop {
            let table = match self.mirror_table(&check.name, fresh).await {
                Ok(t) => t,
                Err(NotImaged::Unreachable) => {
                    return Ok(Err(format!("{} could not be reached", self.mirror_side)))
                }
                Err(NotImaged::ByStatement(why)) => return Ok(Err(why)),
            };
            if fresh || check.columns.iter().all(|c| table.order.contains(c)) {
                return Ok(Ok((table, check)));
            }
            fresh = true;
        }
    }
}
