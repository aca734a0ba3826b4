//! Schema changes that travel in the log (`mirror.ddl = "both"`): run on
//! the other side as the session that made them, with its search_path, at
//! their place among the changes.

use super::applier::{Ended, Group, Run};
use super::conn::{ApplyConn, ConnError};
use crate::backend::pg::literal;
use crate::backend::pglog::ident;
use tracing::{debug, warn};
use turnout_control::divergence::DivergenceKind;

impl Run<'_> {
    /// A schema change that travelled in the log (`mirror.ddl = "both"`):
    /// run on the other side as the session that made it, with its
    /// search_path, at its place.
    pub(super) async fn ddl(
        &mut self,
        apply: &mut ApplyConn,
        group: &mut Group,
        text: &str,
    ) -> Result<(), Ended> {
        let parsed: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "a schema change in the log could not be read; not applied");
                return Ok(());
            }
        };
        let sql = parsed["sql"].as_str().unwrap_or_default();
        let search_path = parsed["search_path"]
            .as_str()
            .unwrap_or("\"$user\", public");
        let role = parsed["role"].as_str().unwrap_or_default();
        let mapping = self.shared.mapping();
        let sql = match mapping.toward(self.to()).translate(sql) {
            Ok(crate::mapping::Translation::Sql(s)) => s,
            Ok(crate::mapping::Translation::Skip) => return Ok(()),
            Ok(crate::mapping::Translation::Unchanged) => sql.to_string(),
            Err(why) => {
                self.record(
                    DivergenceKind::MirrorError,
                    "",
                    None,
                    &format!(
                        "a schema change in the log could not be translated for {}: {why}",
                        self.to()
                    ),
                );
                return Ok(());
            }
        };
        group.changes += 1;
        if outside_a_block(&sql) {
            return self.ddl_alone(apply, group, &sql, search_path, role).await;
        }
        let text = format!(
            "SELECT set_config('search_path', {}, true); {}{sql}; RESET ROLE; SELECT set_config('search_path', '\"$user\", public', true)",
            literal(search_path),
            if role.is_empty() {
                String::new()
            } else {
                format!("SET LOCAL ROLE {}; ", ident(role))
            }
        );
        if self.careful_until.is_some() {
            apply
                .simple("SAVEPOINT turnout_change")
                .await
                .map_err(|e| self.failed(e))?;
        }
        match apply.simple(&text).await {
            Ok(()) => {
                if self.careful_until.is_some() {
                    apply
                        .simple("RELEASE SAVEPOINT turnout_change")
                        .await
                        .map_err(|e| self.failed(e))?;
                }
                debug!(to = %self.to(), "schema change applied from the log");
                Ok(())
            }
            Err(ConnError::Failed { error, .. }) if self.careful_until.is_some() => {
                self.record(
                    DivergenceKind::MirrorError,
                    "",
                    None,
                    &format!(
                        "{} refused a schema change from the log: {error}",
                        self.to()
                    ),
                );
                apply
                    .simple("ROLLBACK TO SAVEPOINT turnout_change")
                    .await
                    .map_err(|e| self.failed(e))
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// DDL that PostgreSQL runs only outside a transaction block (`CREATE
    /// INDEX CONCURRENTLY`, ...): what the group applied so far commits
    /// (its place in the log moves with the group's end, later), the DDL
    /// runs alone, and the group goes on in a new transaction.
    pub(super) async fn ddl_alone(
        &mut self,
        apply: &mut ApplyConn,
        group: &mut Group,
        sql: &str,
        search_path: &str,
        role: &str,
    ) -> Result<(), Ended> {
        let committed = async {
            apply.exec("COMMIT", &[]).await?;
            apply.sync().await
        };
        if let Err(e) = committed.await {
            return Err(self.failed(e));
        }
        for (n, count) in apply.take_counts() {
            if let Some(s) = group.sent.remove(&n) {
                self.check(&s, count);
            }
        }
        let mut steps = vec![format!("SET search_path TO {search_path}")];
        if !role.is_empty() {
            steps.push(format!("SET ROLE {}", ident(role)));
        }
        steps.push(sql.to_string());
        let mut failed = None;
        for step in &steps {
            if let Err(e) = apply.simple(step).await {
                match e {
                    ConnError::Failed { error, .. } => {
                        failed = Some(error);
                        break;
                    }
                    other => return Err(self.failed(other)),
                }
            }
        }
        if let Err(e) = apply.simple("RESET ROLE; RESET search_path").await {
            return Err(self.failed(e));
        }
        if let Some(error) = failed {
            self.record(
                DivergenceKind::MirrorError,
                "",
                None,
                &format!(
                    "{} refused a schema change from the log: {error}",
                    self.to()
                ),
            );
        }
        apply.exec("BEGIN", &[]).await.map_err(|e| self.failed(e))?;
        Ok(())
    }
}

/// Whether PostgreSQL runs `sql` only outside a transaction block.
fn outside_a_block(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    let first = lower.split_whitespace().next().unwrap_or_default();
    lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| w == "concurrently")
        || matches!(first, "vacuum" | "reindex" | "cluster")
        || lower.starts_with("create database")
        || lower.starts_with("drop database")
        || lower.starts_with("alter system")
        || lower.starts_with("create tablespace")
        || lower.starts_with("drop tablespace")
}
