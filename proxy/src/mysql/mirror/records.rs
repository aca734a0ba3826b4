//! What a mirrored MySQL session records: mirror failures under
//! `mirror.on_error`, divergences with the table and statement they concern.

use super::{statement_id, MyMirror, COM_INIT_DB, COM_QUERY};
use crate::engine::lockstep;
use crate::engine::Classification;
use tracing::debug;
use turnout_control::divergence::{Divergence, DivergenceKind};

impl MyMirror<'_> {
    /// Under `mirror.on_error = fail`: true (the caller fails the
    /// statement). Under `record`: the divergence is written; false.
    /// `sql`: the statement that failed (its text, or a prepared
    /// statement's).
    pub(super) fn fails(&self, sql: &str, detail: &str) -> bool {
        let class = self.shared.classifier.classify(sql);
        lockstep::mirror_failed(
            self.shared.mirror_policy,
            &self.shared.records,
            self.mirror_side,
            &class.fingerprint,
            detail,
            |d| self.record_located(d, &class, sql),
        )
    }

    /// A failure of the mirror recorded whatever `mirror.on_error` says
    /// (a setting, or a write whose client already has its answer).
    pub(super) fn mirror_failed(&self, sql: &str, detail: &str) {
        self.shared.records.mirror_error();
        self.record_text(DivergenceKind::MirrorError, sql, detail);
    }

    /// The SQL a client's command packet runs: a query's text, or the
    /// prepared statement's (by the client's statement id).
    pub(super) fn packet_sql(&self, packet: &[u8]) -> String {
        match packet.first() {
            Some(&COM_QUERY) | Some(&COM_INIT_DB) => {
                String::from_utf8_lossy(&packet[1..]).into_owned()
            }
            _ => statement_id(packet)
                .and_then(|id| self.statements.get(&id))
                .map(|s| s.sql.clone())
                .unwrap_or_else(|| {
                    format!("(command 0x{:02x})", packet.first().copied().unwrap_or(0))
                }),
        }
    }

    pub(super) fn record(
        &self,
        kind: DivergenceKind,
        class: &Classification,
        detail: &str,
        sql: &str,
    ) {
        let d = Divergence::new(kind, self.mirror_side, &class.fingerprint, detail);
        self.record_located(d, class, sql);
    }

    /// Records `d` with the table `class` writes and, under
    /// `mirror.log_statements`, the statement `sql`.
    pub(super) fn record_located(&self, mut d: Divergence, class: &Classification, sql: &str) {
        d.table = class.insert_table.clone();
        if self.shared.records.log_statements {
            d.statement = Some(sql.to_string());
        }
        self.shared.records.divergence(d);
    }

    pub(super) fn record_text(&self, kind: DivergenceKind, sql: &str, detail: &str) {
        let class = self.shared.classifier.classify(sql);
        if kind != DivergenceKind::UnsafeStatement {
            debug!(%sql, %detail, "mysql divergence");
        }
        self.record(kind, &class, detail, sql);
    }
}
