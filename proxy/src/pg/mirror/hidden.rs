//! Writes hidden in reads: a statement the classifier takes for a read
//! (`SELECT f()`, `EXPLAIN ANALYZE SELECT f()`, a function in FROM) can
//! write when it calls a function that writes. When the mirror is fed by
//! the session (row images, statements), such a read that calls a
//! user-defined volatile function of the authority's runs where its
//! transaction id shows whether it wrote
//! (`pg_current_xact_id_if_assigned()`): a write is recorded as an
//! `unmirrored_write`, and statements of its shape are mirrored from then
//! on. (From the log, whatever the authority writes reaches the mirror.)

use super::{collect, query, MirrorSession, Step, Stop};
use crate::engine::{Classification, Kind};
use crate::pg::codec;
use crate::pg::framed::Frame;
use crate::shared::Shared;
use bytes::BytesMut;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;
use turnout_control::Side;

/// How long the authority's list of functions is trusted before it is
/// read again (DDL through turnout forgets it at once).
const FUNCTIONS_FOR: Duration = Duration::from_secs(10);

/// The authority's volatile functions outside `pg_catalog` (lower-case
/// names): the ones a read may call to write.
const FUNCTIONS_QUERY: &str = "SELECT DISTINCT lower(p.proname) AS name FROM pg_catalog.pg_proc p \
     WHERE p.provolatile = 'v' AND p.prokind = 'f' \
     AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)";

/// The (lower-case) names `sql` calls as functions: each word right
/// before an opening parenthesis, outside quotes.
pub(super) fn called_names(sql: &str) -> Vec<String> {
    let mut names = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    let mut word_start = None;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                // A string literal: skipped whole.
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                word_start = None;
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                let name = &sql[start..i.min(sql.len())];
                if b.get(i + 1) == Some(&b'(') {
                    names.push(name.to_lowercase());
                }
                word_start = None;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                word_start.get_or_insert(i);
            }
            b'(' => {
                if let Some(s) = word_start.take() {
                    names.push(sql[s..i].to_lowercase());
                }
            }
            _ => word_start = None,
        }
        i += 1;
    }
    names
}

/// The authority's list of functions a read may write through (read
/// again after [`FUNCTIONS_FOR`]); empty when its catalog cannot be read.
async fn volatile_functions(shared: &Shared, side: Side) -> Arc<HashSet<String>> {
    if let Some((at, s, set)) = &*shared
        .pg
        .functions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
    {
        if *s == side && at.elapsed() < FUNCTIONS_FOR {
            return set.clone();
        }
    }
    let read = async {
        let mut conn = crate::backend::pg::open_simple(shared.target(side)).await?;
        let rows = crate::backend::pg::run(&mut conn, FUNCTIONS_QUERY, side).await;
        crate::backend::pg::close(&mut conn).await;
        rows
    };
    let set: HashSet<String> = match read.await {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.str("name").ok().map(String::from))
            .collect(),
        Err(e) => {
            warn!(%side, error = %e, "the authority's functions could not be read: reads that call them are not watched for writes");
            HashSet::new()
        }
    };
    let set = Arc::new(set);
    *shared
        .pg
        .functions
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), side, set.clone()));
    set
}

impl MirrorSession<'_> {
    /// Whether `sql`, a read the authority alone runs, calls a function
    /// that may write (see the module's words).
    pub(super) async fn may_write(&mut self, class: &Classification, sql: &str) -> bool {
        if self.log.on
            || self.routing.phase.mirror().is_none()
            || class.ruled_to_one_side()
            || class.statements.len() != 1
            || !matches!(class.kind(), Kind::Read | Kind::Other)
        {
            return false;
        }
        let first = crate::engine::text::first_word(sql);
        if self.img.cursors_write && matches!(first.as_str(), "fetch" | "move") {
            // A cursor over such a read runs it as it is fetched.
            return true;
        }
        if !sql.contains('(') {
            return false;
        }
        let calls = called_names(sql);
        if calls.is_empty() {
            return false;
        }
        let functions = volatile_functions(self.shared, self.auth_side()).await;
        let may = calls.iter().any(|c| functions.contains(c));
        if may && first == "declare" {
            self.img.cursors_write = true;
        }
        may
    }

    /// A read that may write, by the simple protocol: run on the authority
    /// with its transaction id asked right after it (in a transaction of
    /// turnout's when the client has none), the client getting the read's
    /// answer only.
    pub(super) async fn read_watched(&mut self, raw: &[u8], class: &Classification) -> Step {
        let wrap = self.status == b'I';
        if !wrap && self.wrote_in_tx {
            // The transaction has an id already: nothing to tell by it.
            self.send_auth(raw).await.map_err(Stop::Authority)?;
            return self.relay_authority().await.map(|_| ());
        }
        let mut msgs = BytesMut::new();
        if wrap {
            msgs.extend_from_slice(&query("BEGIN"));
        }
        msgs.extend_from_slice(raw);
        msgs.extend_from_slice(&query(
            "SELECT pg_catalog.pg_current_xact_id_if_assigned()::text",
        ));
        if wrap {
            msgs.extend_from_slice(&query("COMMIT"));
        }
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        if wrap {
            collect(&mut self.auth).await.map_err(Stop::Authority)?;
        }
        let mut failed = false;
        loop {
            let f = self.auth.read().await.map_err(Stop::Authority)?;
            self.check_unmirrored(&f, self.auth_side(), false);
            match f.tag {
                b'Z' => break,
                b'E' => {
                    failed = true;
                    if codec::is_server_failure(f.body()) {
                        self.shared.coord.authority_failed(self.auth_side());
                    }
                    self.queue(&f.raw);
                }
                _ => {
                    self.queue(&f.raw);
                    if self.out.len() >= super::OUT_CHUNK {
                        self.flush_client().await?;
                    }
                }
            }
        }
        let asked = collect(&mut self.auth).await.map_err(Stop::Authority)?;
        let mut status = asked.status;
        if wrap {
            status = collect(&mut self.auth)
                .await
                .map_err(Stop::Authority)?
                .status;
        }
        let wrote = asked
            .frames
            .iter()
            .find(|f| f.tag == b'D')
            .and_then(|f| {
                codec::data_row_values(f.body())
                    .into_iter()
                    .next()
                    .flatten()
            })
            .is_some();
        if wrote && !failed {
            let (d, _) = self.shared.unmirrored_write(
                &class.fingerprint,
                self.auth_side(),
                "gave its transaction an id (it wrote, through a function it calls)",
            );
            self.shared.records.located(d, raw);
        }
        self.note_status(status);
        self.queue(&codec::ready_for_query(status));
        self.flush_client().await
    }

    /// [`Self::read_watched`] for an extended-protocol batch that runs on
    /// the authority alone: its messages up to a Flush, the transaction id
    /// asked in its transaction (implicit or the client's), then its Sync.
    pub(super) async fn watched_range(
        &mut self,
        from: usize,
        upto: usize,
        sync: &Frame,
        class: &Classification,
    ) -> Result<(), Stop> {
        let known = self.status != b'I' && self.wrote_in_tx;
        let failed = self.auth_range(from, upto, None).await?;
        if failed.is_none() && !known {
            let (rows, error) = self
                .auth_own(
                    "SELECT pg_catalog.pg_current_xact_id_if_assigned()::text",
                    false,
                )
                .await?;
            let wrote = rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .is_some();
            if error.is_none() && wrote {
                let (d, _) = self.shared.unmirrored_write(
                    &class.fingerprint,
                    self.auth_side(),
                    "gave its transaction an id (it wrote, through a function it calls)",
                );
                let sent = super::extended::raw_of(&self.batch[from..upto]);
                self.shared.records.located(d, &sent);
            }
        }
        self.auth_range(upto, upto, Some(sync)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_called_are_found_outside_quotes() {
        assert_eq!(
            called_names("SELECT count(*), Audit_It(id), \"Mixed\"(1) FROM t WHERE s = 'f(x)'"),
            ["count", "audit_it", "mixed"]
        );
        assert!(called_names("SELECT a FROM t WHERE b IN (1, 2)").is_empty());
    }
}
