//! A session's roles follow the phase: at the start of a transaction, when
//! a writes flip (or its rollback) moved the authority, the mirror's
//! connection becomes the authority's and the authority's the mirror's; in
//! a phase without a mirror (`finalized`) the mirror's connection closes.
//! This only ever runs between transactions, after the barrier let no
//! transaction stay open across the change.

use super::queue;
use super::{collect, MirrorSession};
use crate::pg::codec::{self, put_cstr};
use crate::pg::framed::{Framed, FramedError};
use bytes::{BufMut, BytesMut};
use std::collections::HashSet;
use tracing::warn;
impl MirrorSession<'_> {
    /// Makes the session's connections match `self.routing`.
    pub(super) async fn adopt_roles(&mut self) -> Result<(), String> {
        if self.routing.phase.authority() != self.auth_side() {
            self.swap_roles().await?;
        }
        if self.routing.phase.mirror().is_none() {
            self.stop_mirroring().await;
        }
        Ok(())
    }

    /// The authority's side changes: each connection takes the other's role.
    async fn swap_roles(&mut self) -> Result<(), String> {
        // Whatever the mirror still owes is read (and recorded) first.
        self.drain_mirror(true).await;
        let promoted = self.mirror_side;
        let demoted = self.auth_side();
        let reusable = if self.async_mirror.is_none() {
            self.mirror.take().zip(self.mirror_key)
        } else {
            None
        };
        // The mirror's connection may have died unnoticed (a session that
        // only read meanwhile never used it): one round trip says whether it
        // can serve as the authority, else a new one does.
        let reusable = match reusable {
            Some((mut conn, key)) => {
                let alive = tokio::time::timeout(self.shared.mirror_timeout, async {
                    conn.send(b"S\0\0\0\x04").await?;
                    collect(&mut conn).await
                })
                .await;
                match alive {
                    Ok(Ok(c)) if c.status == b'I' && c.error.is_none() => Some((conn, key)),
                    _ => None,
                }
            }
            None => None,
        };
        // An async queue is empty here (the barrier waited for it); dropped,
        // its task closes its connection.
        self.async_mirror = None;
        let (mut conn, key, prepared) = match reusable {
            Some((conn, key)) => (conn, key, std::mem::take(&mut self.mirror_prepared)),
            None => {
                let (conn, key) =
                    queue::connect_mirror(self.shared, promoted, &self.client_params, &self.replay)
                        .await?;
                (conn, key, HashSet::new())
            }
        };
        self.prepare_missing(&mut conn, &prepared).await?;
        let old_auth = std::mem::replace(&mut self.auth, conn);
        let old_key = std::mem::replace(&mut self.auth_key, key);
        self.mirror_side = demoted;
        // The demoted side has every statement the client prepared, under
        // the client's names.
        self.mirror_prepared = self
            .statements
            .keys()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        match self.shared.async_queue {
            Some(_) => {
                self.async_mirror = Some(queue::start(
                    self.shared_arc.clone(),
                    demoted,
                    self.client_params.clone(),
                    Some(old_auth),
                ));
                self.mirror_key = None;
            }
            None => {
                self.mirror = Some(old_auth);
                self.mirror_key = Some(old_key);
            }
        }
        // The apply statements prepared on the old mirror are not on it now.
        self.forget_applies();
        // Volatile defaults and the transaction time are the authority's.
        self.table_defaults.clear();
        self.img.checks.clear();
        self.tx_time = None;
        if let Some(mut target) = self.shared.pg.cancels.get_mut(&self.cancel_key) {
            target.side = promoted;
            target.pid = self.auth_key.pid;
            target.secret = self.auth_key.secret;
        }
        Ok(())
    }

    /// Prepares on `conn` (the side becoming the authority) the client's
    /// statements it does not have yet, so the client's Binds find them.
    /// A statement the side refuses is logged; the client's Bind on it will
    /// fail there with the side's own error.
    async fn prepare_missing(
        &mut self,
        conn: &mut Framed,
        prepared: &HashSet<String>,
    ) -> Result<(), String> {
        let mut out = BytesMut::new();
        let mut names = Vec::new();
        // The client's statements are written for old.
        let mapping = self.shared.mapping();
        let mapping = mapping.toward(self.mirror_side);
        for (name, p) in &self.statements {
            if name.is_empty() || !prepared.contains(name) {
                let mut body = BytesMut::new();
                put_cstr(&mut body, name);
                match &p.image {
                    // The form the client's answers are taken from.
                    Some(i) => put_cstr(&mut body, &i.capture),
                    None => put_cstr(&mut body, &mapping.translated_or_same(&p.sql)),
                }
                body.put_slice(&p.types);
                out.extend_from_slice(&codec::frame(b'P', &body));
                // A Sync each, so one refused statement does not void the rest.
                out.extend_from_slice(&codec::frame(b'S', &[]));
                names.push(name.clone());
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        let run = async {
            conn.send(&out).await?;
            let mut refused = Vec::new();
            for name in &names {
                if let Some(e) = collect(conn).await?.error {
                    refused.push((name, e));
                }
            }
            Ok::<_, FramedError>(refused)
        };
        match tokio::time::timeout(self.shared.mirror_timeout, run).await {
            Ok(Ok(refused)) => {
                for (name, e) in refused {
                    warn!(side = %self.mirror_side, statement = %name, error = %e, "prepared statement could not be prepared on the new authority");
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(crate::engine::lockstep::mirror_timed_out(
                self.mirror_side,
                self.shared.mirror_timeout,
            )),
        }
    }

    /// The mirror's connection closes (from the log with reads on the
    /// authority it is not used; a later read there connects again, with
    /// the session's settings replayed).
    pub(super) async fn drop_mirror(&mut self) {
        if self.mirror.is_none() || self.async_mirror.is_some() {
            return;
        }
        self.drain_mirror(false).await;
        if let Some(mut m) = self.mirror.take() {
            let _ = m.send(&codec::frame(b'X', &[])).await;
        }
        self.mirror_key = None;
        self.mirror_prepared.clear();
        self.forget_applies();
    }

    /// `finalized`: the mirror's connection closes after what it owes.
    async fn stop_mirroring(&mut self) {
        if self.mirror.is_none() && self.async_mirror.is_none() {
            return;
        }
        self.drain_mirror(true).await;
        self.async_mirror = None;
        if let Some(mut m) = self.mirror.take() {
            let _ = m.send(&codec::frame(b'X', &[])).await;
        }
        self.mirror_key = None;
        self.mirror_prepared.clear();
        self.forget_applies();
    }
}
