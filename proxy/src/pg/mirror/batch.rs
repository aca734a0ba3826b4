//! Running an extended-protocol batch on both sides without changing what it
//! means.
//!
//! The authority gets exactly the client's messages, in order, with a Flush
//! where turnout needs their answers before going on; the client's Sync is
//! held back while the mirror applies the batch, so the authority's implicit
//! transaction (or the client's own block) keeps its row locks until the
//! mirror has committed. turnout never wraps a batch in a transaction of its
//! own and never sends a simple Query into a batch (which would commit an
//! implicit transaction and drop the client's unnamed statement).
//!
//! The mirror catches up at the points where the authority would commit:
//! before a `COMMIT` executed in the batch (the mirror commits first), and
//! before the Sync that commits an implicit transaction. Inside the client's
//! own block its copy is sent without waiting and read before the block's
//! COMMIT, as for the simple protocol.

use super::block::{self, Block, End};
use super::extended::{bind, close, exec_class as extended_class, parse, raw_of};
use super::{
    copy_fail, data_row_texts, error_message, image, no_error, query, Checks, MirrorSession, Msg,
    Step, Stop, OUT_CHUNK,
};
use crate::engine::lockstep;
use crate::engine::route::Route;
use crate::engine::{Classification, Kind};
use crate::pg::codec::{self, put_cstr, Severity};
use crate::pg::framed::Frame;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use tracing::warn;
use turnout_config::MirrorErrorPolicy;

/// turnout's own statement and portal name for the queries it runs on the
/// authority inside a client's batch (its time, a catalog lookup).
const OWN: &str = "turnout_internal";

/// How far the current batch has run, on each side.
#[derive(Default)]
pub(super) struct Run {
    /// Messages of the batch the authority has run (answers relayed).
    pub sent: usize,
    /// Messages of the batch the mirror was handed (or that it does not need).
    pub mirrored: usize,
    /// The authority's transaction block after the messages sent.
    pub block: Block,
    /// The authority failed a message and skips the rest up to the Sync.
    pub skipping: bool,
    /// A Flush sent part of a batch that must run whole on the authority
    /// (see `needs_whole_batch`): the rest goes there too.
    pub whole_on_authority: bool,
    /// The block was read from ReadyForQuery at the batch's start.
    pub started: bool,
    /// The status ReadyForQuery reported before the batch.
    pub start_status: u8,
    /// The batch's Sync went to the authority (with its last messages).
    pub synced: bool,
    /// A read that may write (see `hidden`): its transaction id is asked
    /// before the Sync.
    pub watch: Option<Arc<Classification>>,
}

/// Where the messages of the statement executed at `at` begin: after the
/// previous Execute (at or after `from`).
fn group_start(batch: &[Msg], from: usize, at: usize) -> usize {
    (from..at)
        .rev()
        .find(|&i| batch[i].frame.tag == b'E')
        .map_or(from, |i| i + 1)
}

/// A batch's Execute of a row-image statement: its form, class, and images
/// (`None`: past `limits.max_image_bytes`).
type ImagedExecute = (Arc<image::Imaged>, Arc<Classification>, Option<Vec<Bytes>>);

impl MirrorSession<'_> {
    /// Runs the batch's messages not yet run: up to its end for a Flush, and
    /// with `sync` through the Sync that ends it.
    pub(super) async fn advance(&mut self, sync: Option<Frame>) -> Step {
        if !self.run.started {
            self.run.started = true;
            self.run.start_status = self.status;
            self.run.block = Block::from_status(self.status);
        }
        let n = self.batch.len();
        let mut synced = false;
        while self.run.sent < n && !self.run.skipping {
            let from = self.run.sent;
            if self.run.whole_on_authority {
                self.run.mirrored = n;
                synced = sync.is_some();
                match (self.run.watch.take(), sync.as_ref()) {
                    (Some(class), Some(s)) => self.watched_range(from, n, s, &class).await?,
                    _ => {
                        self.auth_range(from, n, sync.as_ref()).await?;
                    }
                }
                break;
            }
            // The next COMMIT or ROLLBACK the batch executes.
            let end = (from..n).find_map(|i| {
                let m = &self.batch[i];
                if m.frame.tag != b'E' {
                    return None;
                }
                block::ends(self.route_kind(m)).map(|e| (i, e))
            });
            let mut upto = end.map_or(n, |(at, _)| group_start(&self.batch, from, at));
            let mut end = end;
            // The range stops after its first statement (see below).
            let mut split = false;
            if self.tx_time.is_none() && self.needs_time(self.run.mirrored.min(from), upto) {
                // The authority's transaction time is read while its
                // transaction is open (an error later in the range would
                // leave it unreadable): now, or, when the range opens the
                // transaction (or reopens a failed one with ROLLBACK TO),
                // right after its first statement.
                if self.run.block.open() {
                    self.tx_time = self.authority_now().await?;
                } else {
                    if let Some(first) = (from..upto).find(|&i| self.batch[i].frame.tag == b'E') {
                        if first + 1 < upto {
                            upto = first + 1;
                            end = None;
                            split = true;
                        }
                    }
                }
            }
            if upto > from {
                // With nothing for the mirror to apply before the Sync, the
                // Sync goes with the messages.
                let with_sync = end.is_none()
                    && !split
                    && sync.is_some()
                    && !(self.predict(from, upto) == Block::Implicit
                        && self.mirror_work(self.run.mirrored, upto));
                let block_before = self.run.block;
                let failed_at = self
                    .auth_range(from, upto, if with_sync { sync.as_ref() } else { None })
                    .await?;
                synced = with_sync;
                match failed_at {
                    Some(at) => {
                        // What ran before the failure stays in the client's
                        // block (to be rolled back or kept past a savepoint):
                        // the mirror applies the same.
                        let before = self.predict_from(block_before, from, at);
                        if before == Block::Explicit {
                            let upto = group_start(&self.batch, from, at);
                            self.handoff(upto, Block::Explicit).await?;
                        }
                        self.run.mirrored = n;
                        break;
                    }
                    None if self.run.block == Block::Explicit => {
                        self.handoff(upto, Block::Explicit).await?;
                    }
                    None => {}
                }
            }
            let Some((at, kind)) = end else { continue };
            // A COMMIT ending the batch takes the Sync along.
            let last = (at + 1..n).all(|i| !block::is_answered(self.batch[i].frame.tag));
            let with = if last { sync.as_ref() } else { None };
            self.tx_end(upto, at, kind, with).await?;
            synced |= with.is_some() && self.run.synced;
        }
        let Some(sync) = sync else {
            return self.flush_client().await;
        };
        if synced {
            return self.flush_client().await;
        }
        if !self.run.skipping && self.run.block == Block::Implicit {
            // The mirror applies and commits first; then the authority's
            // implicit transaction commits at the Sync.
            if let Some(detail) = self.handoff(self.run.sent, Block::Implicit).await? {
                self.abort_authority(&detail).await?;
            }
        }
        let mark = self.log.mark.take();
        self.auth_range(n, n, Some(&sync)).await?;
        let committed = !self.run.skipping && self.status == b'I';
        self.mark_ended(mark, committed);
        self.flush_client().await
    }

    /// The kind of the statement an Execute runs, as routing sees it.
    fn route_kind(&self, m: &Msg) -> Kind {
        extended_class(m).kind()
    }

    /// The block after the authority runs `from..upto` without error.
    fn predict(&self, from: usize, upto: usize) -> Block {
        self.predict_from(self.run.block, from, upto)
    }

    fn predict_from(&self, mut b: Block, from: usize, upto: usize) -> Block {
        for m in &self.batch[from..upto] {
            if m.frame.tag == b'E' {
                b = self.block_after(b, m);
            }
        }
        b
    }

    fn block_after(&self, b: Block, m: &Msg) -> Block {
        let chain = m.stmt.as_ref().is_some_and(|p| block::chains(&p.sql));
        b.after(self.route_kind(m), chain)
    }

    /// Whether `from..upto` executes a write whose copy needs the
    /// authority's transaction time pinned in.
    fn needs_time(&self, from: usize, upto: usize) -> bool {
        self.routing.phase.mirror().is_some()
            && self.batch[from..upto]
                .iter()
                .filter(|m| m.frame.tag == b'E' && m.imaged().is_none())
                .map(extended_class)
                .any(|c| c.nondeterministic() && self.route(&c) == Route::Write)
    }

    /// Whether `from..upto` executes something the mirror must apply.
    fn mirror_work(&self, from: usize, upto: usize) -> bool {
        self.routing.phase.mirror().is_some()
            && self.batch[from..upto]
                .iter()
                .filter(|m| m.frame.tag == b'E')
                .any(|m| {
                    matches!(
                        self.route(&extended_class(m)),
                        Route::Write
                            | Route::Both
                            | Route::Commit
                            | Route::Unwrapped
                            | Route::Logged
                            | Route::LoggedDdl
                    )
                })
    }

    /// Sends `from..upto` (and `sync`, or else a Flush) to the authority and
    /// relays its answers. Returns the index of the message that failed, if
    /// one did; the block follows what ran.
    pub(super) async fn auth_range(
        &mut self,
        from: usize,
        upto: usize,
        sync: Option<&Frame>,
    ) -> Result<Option<usize>, Stop> {
        let size: usize = self.batch[from..upto]
            .iter()
            .map(|m| m.for_authority().len())
            .sum();
        let mut msgs = BytesMut::with_capacity(size + sync.map_or(5, |s| s.raw.len()));
        let mut expected = 0usize;
        // The message each answer is for, in order.
        let mut answering = Vec::with_capacity(upto - from);
        for (i, m) in self.batch[from..upto].iter().enumerate() {
            msgs.extend_from_slice(m.for_authority());
            if block::is_answered(m.frame.tag) {
                expected += 1;
                answering.push(from + i);
            }
        }
        match sync {
            Some(s) => {
                msgs.extend_from_slice(&s.raw);
                self.run.synced = true;
            }
            None if expected == 0 => {
                self.run.sent = upto;
                return Ok(None);
            }
            None => msgs.extend_from_slice(&codec::frame(b'H', &[])),
        }
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        let mut answered = 0usize;
        let mut failed = false;
        loop {
            if sync.is_none() && (failed || answered == expected) {
                break;
            }
            let f = self.auth.read().await.map_err(Stop::Authority)?;
            self.check_unmirrored(&f, self.auth_side(), false);
            match f.tag {
                b'Z' => {
                    let status = f.body().first().copied().unwrap_or(b'I');
                    self.queue(&f.raw);
                    self.note_status(status);
                    break;
                }
                b'E' => {
                    if !failed && codec::is_server_failure(f.body()) {
                        self.shared.coord.authority_failed(self.auth_side());
                    }
                    failed = true;
                    self.queue(&f.raw);
                }
                b'G' => {
                    // COPY FROM STDIN runs whole on the authority (see
                    // `needs_whole_batch`); one that slipped by is refused.
                    self.auth
                        .send(&copy_fail("turnout: COPY FROM STDIN was not expected here"))
                        .await
                        .map_err(Stop::Authority)?;
                }
                t => {
                    // Row images: the authority's answer loses turnout's column.
                    let imaged = answering
                        .get(answered)
                        .filter(|_| !failed && matches!(t, b'T' | b'D'))
                        .and_then(|&i| Some((i, self.batch[i].imaged()?.target.returning)));
                    match imaged {
                        Some((i, returning)) if t == b'D' && self.batch[i].frame.tag == b'E' => {
                            let (row, image) = image::split_row(&f, returning);
                            let cap = self.shared.max_image;
                            let m = &mut self.batch[i];
                            if let (Some(image), Some(held)) = (image, m.image_bytes) {
                                if held + image.len() > cap {
                                    // Past the limit: none kept (recorded below).
                                    m.images = Vec::new();
                                    m.image_bytes = None;
                                } else {
                                    m.image_bytes = Some(held + image.len());
                                    m.images.push(image);
                                }
                            }
                            if let Some(row) = row {
                                self.queue(&row);
                            }
                        }
                        Some((i, returning)) if t == b'T' && self.batch[i].frame.tag == b'D' => {
                            let description = image::strip_description(&f, returning);
                            self.queue(&description);
                        }
                        _ => self.queue(&f.raw),
                    }
                    if !failed && block::is_final_reply(t) {
                        answered += 1;
                    }
                }
            }
            if self.out.len() >= OUT_CHUNK {
                self.flush_client().await?;
            }
        }
        // Follow the block through what ran.
        let mut left = answered;
        let mut failed_at = None;
        let mut b = self.run.block;
        for (i, m) in self.batch[from..upto].iter().enumerate() {
            if !block::is_answered(m.frame.tag) {
                continue;
            }
            if left == 0 {
                if failed {
                    failed_at = Some(from + i);
                }
                break;
            }
            left -= 1;
            if m.frame.tag == b'E' {
                b = self.block_after(b, m);
            }
        }
        if failed {
            b = b.after_error();
            self.run.skipping = true;
        }
        let predicted = b;
        if sync.is_some() {
            b = Block::from_status(self.status);
            if b.status_at_sync() != predicted.status_at_sync() {
                warn!(
                    predicted = ?predicted,
                    reported = %char::from(self.status),
                    "the transaction state the backend reported differs from the one turnout followed"
                );
            }
        }
        self.run.block = b;
        self.run.sent = upto;
        if failed && failed_at.is_none() {
            // The error came from turnout's own message (or the Sync).
            failed_at = Some(upto);
        }
        if let Some(at) = failed_at {
            // The backend skips the rest of the batch: nothing from the
            // failed message on defined or closed a name.
            self.not_run_from(at);
        }
        Ok(failed_at)
    }

    /// The batch's messages from `at` on did not run on the authority.
    pub(super) fn not_run_from(&mut self, at: usize) {
        let mut batch = std::mem::take(&mut self.batch);
        let at = at.min(batch.len());
        self.not_run(&mut batch[at..]);
        self.batch = batch;
    }

    /// Hands the mirror the messages from where it stands up to `upto`, run
    /// in `block` on the authority: in an implicit block the mirror applies
    /// them and commits (turnout waits); in the client's block they are sent
    /// without waiting. `Some(detail)` when the mirror failed them under
    /// `mirror.on_error = "fail"`.
    async fn handoff(&mut self, upto: usize, block: Block) -> Result<Option<String>, Stop> {
        let from = self.run.mirrored;
        self.run.mirrored = upto.max(from);
        if upto <= from || !self.mirror_work(from, upto) {
            return Ok(None);
        }
        if self.log.on {
            // The log carries the batch's writes: its DDL gets its
            // message, a transaction the Sync commits its mark.
            self.logged_batch(from, upto, block == Block::Implicit)
                .await?;
            return Ok(None);
        }
        let range = &self.batch[from..upto];
        let writes = range
            .iter()
            .any(|m| m.frame.tag == b'E' && self.route(&extended_class(m)) == Route::Write);
        let class = range
            .iter()
            .filter(|m| m.frame.tag == b'E')
            .map(extended_class)
            .find(|c| self.route(c) != Route::Authority)
            .unwrap_or_default();
        let timed = range
            .iter()
            .filter(|m| m.frame.tag == b'E' && m.imaged().is_none())
            .map(extended_class)
            .find(|c| c.nondeterministic());
        // Row images: the mirror's tables, read before the plan uses them;
        // a write whose rows cannot be applied by key is mirrored as a
        // statement, and recorded.
        // (No images: past limits.max_image_bytes.)
        let imaged: Vec<ImagedExecute> = range
            .iter()
            .filter(|m| m.frame.tag == b'E')
            .filter_map(|m| {
                let i = m.stmt.as_ref()?.image.clone()?;
                let images = m.image_bytes.map(|_| m.images.clone());
                Some((i, extended_class(m), images))
            })
            .collect();
        let sent = raw_of(range);
        for (i, c, images) in imaged {
            let Some(images) = images else {
                crate::shared::client_limit_hit("max_image_bytes");
                let detail = format!(
                    "its row images exceed limits.max_image_bytes ({} bytes): not applied on {}",
                    self.shared.max_image, self.mirror_side
                );
                self.mirror_failed(&c, &detail, &sent);
                continue;
            };
            // (Asked at its Parse; again if a setting since made it go.)
            self.check_table(&i.target.table).await?;
            if let Err(image::NotImaged::ByStatement(why)) = self.image_table(&i.target).await {
                let _ = self.statement_mirrored(&c, &why, &sent);
                continue;
            }
            if images.is_empty() {
                continue;
            }
            // Tables read again where the images show them out of date;
            // images that still do not fit are recorded (the plan leaves
            // them out).
            let fits = self
                .ready_images(&i.target, &images)
                .await?
                .and_then(|(t, k)| image::apply_of(i.target.op, &t, &k, &images).map(|_| ()));
            if let Err(detail) = fits {
                self.mirror_failed(&c, &detail, &sent);
            }
        }
        let range = &self.batch[from..upto];
        let plan = self.mirror_plan(range, false);
        let time_needed = timed.is_some();
        self.wrote_in_tx |= writes;
        if time_needed && self.tx_time.is_none() && self.run.block.open() {
            self.tx_time = self.authority_now().await?;
        }
        if time_needed && self.tx_time.is_none() {
            // The authority's transaction failed after these statements ran:
            // its time cannot be read any more. They are kept only if the
            // client rolls back to a savepoint taken before them.
            let _ = self.unsafe_write(
                &timed.unwrap_or_default().fingerprint,
                "the authority's transaction time could not be read (its transaction failed after this statement): values of now() may differ on the mirror if it is kept",
                &raw_of(&self.batch[from..upto]),
            );
        }
        let built = match plan.build(self.tx_time.as_deref()) {
            Ok(b) => b,
            Err(e) => {
                // Run as written: the values may differ; say so. (Under
                // `on_unsafe = fail` it was refused before it ran.)
                let _ = self.unsafe_write(
                    &class.fingerprint,
                    &e.to_string(),
                    &raw_of(&self.batch[from..upto]),
                );
                plan.build(None).unwrap_or_default()
            }
        };
        self.mirror_prepared.extend(plan.prepares_named());
        self.applies_sent(plan.applies);
        let expects = plan.expects;
        // Under `fail` a count that disagrees must undo the mirror's copy:
        // it runs in a block of turnout's, committed once checked.
        let checked = block == Block::Implicit
            && !expects.is_empty()
            && self.shared.mirror_policy == MirrorErrorPolicy::Fail
            && self.async_mirror.is_none();
        let mut msgs = BytesMut::new();
        if checked {
            msgs.extend_from_slice(&query("BEGIN"));
        }
        msgs.extend_from_slice(&built);
        msgs.extend_from_slice(&codec::frame(b'S', &[]));
        match block {
            Block::Implicit => {
                let readies = if checked { 2 } else { 1 };
                let outcome =
                    self.on_mirror(&msgs, readies, true)
                        .await
                        .and_then(|c| match c.error {
                            Some(e) => Err(e),
                            None => Ok(c),
                        });
                let outcome = match outcome {
                    Ok(c) => {
                        let mismatch = self.check_applied(&expects, &c.frames);
                        if checked {
                            let end = if mismatch.is_some() {
                                "ROLLBACK"
                            } else {
                                "COMMIT"
                            };
                            let ended = self.on_mirror(&query(end), 1, false).await;
                            match (mismatch, ended.and_then(no_error)) {
                                (Some(detail), _) => return Ok(Some(detail)),
                                (None, Err(detail)) => Err(detail),
                                (None, Ok(())) => Ok(()),
                            }
                        } else {
                            Ok(())
                        }
                    }
                    Err(detail) => {
                        if checked && self.mirror.is_some() {
                            let _ = self.on_mirror(&query("ROLLBACK"), 1, false).await;
                        }
                        Err(detail)
                    }
                };
                if let Err(detail) = outcome {
                    let writes = class.kind() == Kind::Write || class.kind() == Kind::Ddl;
                    if !writes {
                        // A setting the mirror refused is recorded; it fails nothing.
                        self.record_mirror_error(&class.fingerprint, &detail, &sent);
                    } else if self.mirror_failed(&class, &detail, &sent) {
                        return Ok(Some(detail));
                    }
                }
            }
            _ => {
                let fresh = self.run.start_status == b'I' && from == 0;
                if fresh && self.mirror.is_none() && self.async_mirror.is_none() {
                    // A new transaction may use a new connection.
                    let _ = self.reconnect_mirror().await;
                }
                self.mirror_defer_checked(
                    &msgs,
                    1,
                    &class,
                    fresh,
                    Checks {
                        expects,
                        rows: None,
                    },
                    &sent,
                )
                .await;
            }
        }
        Ok(None)
    }

    /// A `COMMIT` or `ROLLBACK` the batch executes at `at` (its messages
    /// from `start`): the mirror catches up, commits first, then the
    /// authority runs it.
    async fn tx_end(&mut self, start: usize, at: usize, end: End, sync: Option<&Frame>) -> Step {
        let block = self.run.block;
        let class = extended_class(&self.batch[at]);
        let commits = end == End::Commit && block.open();
        if commits {
            if let Some(detail) = self.handoff(start, block).await? {
                return self.abort_authority(&detail).await;
            }
            if self.log.on {
                // The mirror's block held reads only: it commits without
                // being waited for; the authority's is marked first.
                if !self.mirror_idle() && (self.mirror.is_some() || self.async_mirror.is_some()) {
                    self.mirror_defer(&query("COMMIT"), 1, &class, false).await;
                }
                if block == Block::Explicit {
                    let sql = self.mark_sql();
                    let (rows, error) = self.auth_own(&sql, false).await?;
                    self.marked(if error.is_some() { 0 } else { rows.len() });
                }
            } else if block == Block::Explicit {
                if let Some(detail) = self.mirror_commit(start, at, &class).await {
                    return self.abort_authority(&detail).await;
                }
            }
        } else {
            // Rolled back on both sides: what the block did is not applied.
            self.run.mirrored = start;
        }
        let upto = if sync.is_some() {
            self.batch.len()
        } else {
            at + 1
        };
        let mark = self.log.mark.take();
        let outcome = self.auth_range(start, upto, sync).await;
        self.mark_ended(mark, commits && matches!(outcome, Ok(None)));
        self.run.mirrored = upto;
        self.tx_time = None;
        match outcome {
            Err(Stop::Authority(e)) if commits => {
                self.authority_lost_at_commit(&class, &e.to_string());
                return Err(Stop::Authority(e));
            }
            Err(e) => return Err(e),
            Ok(Some(_)) if commits => {
                self.shared
                    .records
                    .divergence(lockstep::authority_commit_failed(
                        self.mirror_side,
                        &class.fingerprint,
                        "its error went to the client",
                    ));
            }
            Ok(_) => {}
        }
        if !commits && matches!(block, Block::Explicit | Block::Failed) {
            // The mirror's copy of the block is undone too.
            self.drain_mirror(false).await;
            self.deferred_failure = None;
            if self.mirror.is_some() || self.async_mirror.is_some() {
                let _ = self.on_mirror(&query("ROLLBACK"), 1, false).await;
            }
        }
        Ok(())
    }

    /// The mirror commits the client's block (the COMMIT's messages
    /// `start..=at`). `Some(detail)` when it could not and the statement is
    /// to fail (`mirror.on_error = "fail"`).
    async fn mirror_commit(
        &mut self,
        start: usize,
        at: usize,
        class: &Classification,
    ) -> Option<String> {
        self.drain_mirror(true).await;
        if let Some(detail) = self.deferred_failure.take() {
            // Under `fail`: a statement of this block failed on the mirror.
            let _ = self.on_mirror(&query("ROLLBACK"), 1, false).await;
            return Some(detail);
        }
        let plan = self.mirror_plan(&self.batch[start..=at], false);
        let mut msgs = BytesMut::from(&plan.build(None).unwrap_or_default()[..]);
        self.mirror_prepared.extend(plan.prepares_named());
        msgs.extend_from_slice(&codec::frame(b'S', &[]));
        let outcome = self
            .on_mirror(&msgs, 1, false)
            .await
            .and_then(|c| self.committed(c));
        match outcome {
            Err(detail) if self.mirror_failed(class, &detail, &msgs) => Some(detail),
            _ => None,
        }
    }

    /// Fails the authority's open transaction from inside the batch: the
    /// mirror could not apply its writes (`mirror.on_error = "fail"`). The
    /// client gets the reason as its statement's error; the backend then
    /// skips to the Sync, as after any error.
    async fn abort_authority(&mut self, detail: &str) -> Step {
        let sql = "DO $turnout$ BEGIN RAISE EXCEPTION 'turnout: statement refused'; END $turnout$";
        self.auth_own(sql, false).await?;
        let msg = lockstep::rolled_back_on_both(&format!(
            "{} refused one of its writes: {detail}",
            self.mirror_side
        ));
        self.queue(&codec::error_response(Severity::Error, "XX000", &msg));
        self.run.block = self.run.block.after_error();
        self.run.skipping = true;
        // The client's messages not sent yet never run.
        self.not_run_from(self.run.sent);
        self.run.sent = self.batch.len();
        self.run.mirrored = self.batch.len();
        Ok(())
    }

    /// Whether turnout's own query on the authority ends with a Sync: when
    /// nothing of the client's batch is pending there (none of it sent yet,
    /// or its Sync sent already). Else it ends with a Flush, inside the
    /// client's batch and transaction.
    pub(super) fn own_query_syncs(&self) -> bool {
        self.run.sent == 0 || self.run.synced
    }

    /// The authority's transaction time, asked inside the open transaction.
    async fn authority_now(&mut self) -> Result<Option<String>, Stop> {
        let sync = self.own_query_syncs();
        let (rows, _) = self.auth_own("SELECT now()::text", sync).await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    /// Runs `sql` on the authority by the extended protocol under turnout's
    /// own statement and portal names, so the client's unnamed statement and
    /// portals stay as they are; ends with a Sync when `sync` (between
    /// batches), else with a Flush (inside the client's batch, in its
    /// transaction). The rows, and the error if it failed. Nothing of it
    /// reaches the client but notifications.
    pub(super) async fn auth_own(
        &mut self,
        sql: &str,
        sync: bool,
    ) -> Result<(Vec<Vec<Option<String>>>, Option<String>), Stop> {
        let mut msgs = BytesMut::new();
        msgs.extend_from_slice(&close(b'P', OWN));
        msgs.extend_from_slice(&close(b'S', OWN));
        msgs.extend_from_slice(&parse(OWN, sql, &[0, 0]));
        msgs.extend_from_slice(&bind(OWN, OWN, &[0, 0, 0, 0, 0, 0]));
        let mut exec = BytesMut::new();
        put_cstr(&mut exec, OWN);
        exec.put_i32(0);
        msgs.extend_from_slice(&codec::frame(b'E', &exec));
        msgs.extend_from_slice(&close(b'P', OWN));
        msgs.extend_from_slice(&codec::frame(if sync { b'S' } else { b'H' }, &[]));
        self.auth.send(&msgs).await.map_err(Stop::Authority)?;
        let mut answered = 0;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            if !sync && (error.is_some() || answered == 6) {
                break;
            }
            let f = self.auth.read().await.map_err(Stop::Authority)?;
            match f.tag {
                b'Z' => break,
                b'E' => {
                    error.get_or_insert_with(|| error_message(&f));
                }
                b'D' => rows.push(data_row_texts(f.body())),
                b'A' | b'S' => self.queue(&f.raw),
                t if block::is_final_reply(t) => answered += 1,
                _ => {}
            }
        }
        Ok((rows, error))
    }
}
