//! The authority's connection and the client's: what is sent to the
//! authority, how its answers are collected or relayed, and what the client
//! is told.

use super::{
    collect_capped, error_message, first_column_text, rewrite_statements, Collected, End,
    MirrorSession, Step, Stop, OUT_CHUNK,
};
use crate::backend::rows::Rows;
use crate::engine::defaults::{self, TableDefaults};
use crate::pg::codec::{self, Severity};
use crate::pg::framed::{Frame, FramedError};
use crate::pg::shadow::Capture;
use tracing::warn;
use turnout_control::Side;

impl MirrorSession<'_> {
    /// Sends collected authority frames to the client, with `status` in the
    /// final ReadyForQuery (the client's view of its transaction).
    pub(super) async fn relay_collected(&mut self, c: &Collected, status: u8) -> Step {
        for f in &c.frames {
            if f.tag == b'Z' {
                self.queue(&codec::ready_for_query(status));
            } else {
                self.queue(&f.raw);
            }
        }
        self.flush_client().await
    }

    pub(super) fn note_status(&mut self, status: u8) {
        self.unmirrored = None;
        self.status = status;
        if status == b'I' {
            self.img.ended();
            self.tx_time = None;
            self.wrote_in_tx = false;
            // A mark its commit did not take (a rollback) goes.
            if let Some(w) = self.log.mark.take() {
                self.shared.log.forget(w);
            }
        }
    }

    /// Streams the authority's answer to the client up to ReadyForQuery,
    /// forwarding COPY data in either direction. Returns the first error seen.
    pub(super) async fn relay_authority(&mut self) -> Result<Option<String>, Stop> {
        self.relay_authority_capturing(None).await
    }

    /// [`Self::relay_authority`], keeping a copy of the answer for a shadow
    /// read's comparison.
    pub(super) async fn relay_authority_capturing(
        &mut self,
        mut capture: Option<&mut Capture>,
    ) -> Result<Option<String>, Stop> {
        let mut error = None;
        let max = self.capture_limit();
        let mut copied_in = false;
        loop {
            let f = self.auth.read().await.map_err(Stop::Authority)?;
            if let Some(c) = capture.as_deref_mut() {
                c.see(&f, max);
            }
            self.check_unmirrored(&f, self.auth_side(), copied_in);
            match f.tag {
                b'Z' => {
                    self.note_status(f.body().first().copied().unwrap_or(b'I'));
                    self.queue(&f.raw);
                    if !self.log.hold_ready {
                        self.flush_client().await?;
                    }
                    return Ok(error);
                }
                b'E' => {
                    if error.is_none() {
                        error = Some(error_message(&f));
                    }
                    if codec::is_server_failure(f.body()) {
                        self.shared.coord.authority_failed(self.auth_side());
                    }
                    self.queue(&f.raw);
                }
                b'G' => {
                    copied_in = true;
                    self.queue(&f.raw);
                    self.flush_client().await?;
                    self.copy_in_authority().await?;
                }
                _ => {
                    self.queue(&f.raw);
                    if self.out.len() >= OUT_CHUNK {
                        self.flush_client().await?;
                    }
                }
            }
        }
    }

    pub(super) async fn collect_authority(&mut self) -> Result<Collected, Stop> {
        self.collect_authority_capped(usize::MAX)
            .await
            .map(|(c, _)| c)
    }

    /// [`Self::collect_authority`] holding at most `cap` bytes of rows;
    /// true when some were dropped.
    pub(super) async fn collect_authority_capped(
        &mut self,
        cap: usize,
    ) -> Result<(Collected, bool), Stop> {
        let (c, over) = collect_capped(&mut self.auth, cap)
            .await
            .map_err(Stop::Authority)?;
        if c.error.is_some()
            && c.frames
                .iter()
                .any(|f| f.tag == b'E' && codec::is_server_failure(f.body()))
        {
            self.shared.coord.authority_failed(self.auth_side());
        }
        self.note_status(c.status);
        Ok((c, over))
    }

    /// Reads the authority's `now()` answer (a RowDescription, one DataRow).
    /// The volatile defaults of `table` (as written in a statement), asked of
    /// the authority once per session and table.
    pub(super) async fn table_defaults(&mut self, table: &str) -> Result<TableDefaults, Stop> {
        if let Some(d) = self.table_defaults.get(table) {
            return Ok(d.clone());
        }
        // When new is the authority, a mapped table's defaults are new's,
        // under old's column names (the statement is the client's, for
        // old); the columns old does not have are not the mirror's concern.
        let mapped = match self.auth_side() {
            Side::New => self.shared.mapping().table_on_new(table),
            Side::Old => None,
        };
        let on_authority = mapped.as_ref().map_or(table, |(t, _)| t.as_str());
        // By turnout's own statement name: the client's unnamed statement
        // stays; inside a batch that already ran in part, in its transaction.
        let sync = self.own_query_syncs();
        let (rows, error) = self
            .auth_own(&defaults::catalog_query(on_authority), sync)
            .await?;
        // Read by the names the catalog query gives its columns.
        let rows = Rows::new(defaults::CATALOG_COLUMNS.map(String::from).to_vec(), rows);
        let rows = match &mapped {
            Some((_, back)) => back.rows_under_old_names(rows, "column_name"),
            None => rows,
        };
        let d = defaults::from_catalog_rows(&rows);
        if error.is_none() {
            self.table_defaults.insert(table.to_string(), d.clone());
        }
        Ok(d)
    }

    pub(super) async fn collect_time(&mut self) -> Result<(), Stop> {
        let c = self.collect_authority().await?;
        self.tx_time = c
            .frames
            .iter()
            .find(|f| f.tag == b'D')
            .and_then(|f| first_column_text(f.body()));
        Ok(())
    }

    pub(super) async fn flush_client(&mut self) -> Step {
        if self.log.wait.is_some() || self.log.ddl {
            self.await_mirror().await;
        }
        if !self.out.is_empty() {
            let out = self.out.split().freeze();
            self.client.send(&out).await.map_err(Stop::Client)?;
        }
        Ok(())
    }

    pub(super) fn queue(&mut self, raw: &[u8]) {
        self.out.extend_from_slice(raw);
    }

    pub(super) async fn client_error(
        &mut self,
        severity: Severity,
        code: &str,
        message: &str,
    ) -> Step {
        self.queue(&codec::error_response(severity, code, message));
        self.flush_client().await
    }

    /// Sends `msgs` to the authority. Clients write for old: when new is
    /// the authority, each statement goes through the schema mapping
    /// (found translatable first, by [`Self::not_for_authority`]).
    pub(super) async fn send_auth(&mut self, msgs: &[u8]) -> Result<(), FramedError> {
        if self.auth_side() == Side::Old {
            return self.auth.send(msgs).await;
        }
        let mapping = self.shared.live().mapping.clone();
        if mapping.is_identity() {
            return self.auth.send(msgs).await;
        }
        let old_names = &self.shared.old_names;
        let msgs = rewrite_statements(msgs, |sql| match mapping.translate(sql) {
            Ok(crate::mapping::Translation::Sql(mapped)) => {
                if mapped != sql {
                    old_names.note(sql);
                }
                Some(mapped)
            }
            _ => None,
        });
        self.auth.send(&msgs).await
    }

    /// A message the authority sent while no statement of the client's was
    /// running: notifications, notices and parameter changes reach the
    /// client; an error (a FATAL before the backend closes) too.
    pub(super) async fn unprompted(&mut self, f: Frame) -> Result<(), FramedError> {
        // With what the server sent in the same write (the notifications of
        // one transaction), in one write to the client.
        let mut out = bytes::BytesMut::new();
        let mut next = Some(f);
        while let Some(f) = next {
            match f.tag {
                b'A' | b'N' | b'S' | b'E' => out.extend_from_slice(&f.raw),
                other => warn!(
                    side = %self.auth_side(),
                    message = %codec::tag_name(other),
                    "unexpected message from the backend between statements; ignored"
                ),
            }
            next = self.auth.buffered().ok().flatten();
        }
        if out.is_empty() {
            return Ok(());
        }
        self.client.send(&out).await
    }

    /// The authority's connection failed: the client is told, the session ends.
    pub(super) async fn authority_lost(&mut self, e: FramedError) -> End {
        self.shared.coord.authority_failed(self.auth_side());
        let msg = format!(
            "turnout: backend {} closed the connection unexpectedly: {e}",
            self.auth_side()
        );
        let _ = self.client_error(Severity::Fatal, "08006", &msg).await;
        End::AuthorityLost(e.to_string())
    }
}
