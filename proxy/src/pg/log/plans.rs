//! The log's relations as the applier applies them: each one's plan,
//! made from the other side's catalog when first needed (and again after
//! DDL), or the reason it cannot be applied (the applier then stops).

use super::applier::{Ended, Rel, Run};
use super::conn::ApplyConn;
use super::statements::{Plan, TargetColumn, TargetTable};
use crate::backend::pglog::ident;
use crate::backend::pgoutput::Relation;
use std::collections::HashMap;
use std::sync::Arc;
use turnout_control::divergence::DivergenceKind;

impl Run<'_> {
    /// The plan of relation `id`, made when first needed.
    pub(super) async fn plan(
        &mut self,
        apply: &mut ApplyConn,
        rels: &mut HashMap<u32, Rel>,
        types: &HashMap<u32, String>,
        id: u32,
    ) -> Result<Arc<Plan>, Ended> {
        let Some(r) = rels.get_mut(&id) else {
            return Err(Ended::Retry(format!(
                "a change of relation {id} before its description in the log"
            )));
        };
        if r.plan.is_none() {
            let made = self.make_plan(apply, &r.rel, types).await?;
            tracing::debug!(relation = %format!("{}.{}", r.rel.schema, r.rel.name), plan = ?made.as_ref().map(|p| p.target.clone()), "log relation planned");
            r.plan = Some(made.map(Arc::new));
        }
        match r.plan.as_ref() {
            Some(Ok(p)) => Ok(p.clone()),
            Some(Err(why)) => Err(self.refuse(&r.rel, why)),
            None => Err(Ended::Retry("no plan".into())),
        }
    }

    pub(super) fn refuse(&mut self, rel: &Relation, why: &str) -> Ended {
        let detail = format!(
            "the log applier stopped: {why}; nothing after it is applied to {} until it can be (the authority keeps its log meanwhile)",
            self.to()
        );
        if self.refused.as_deref() != Some(why) {
            self.record(
                DivergenceKind::LogStalled,
                &format!("{}.{}", rel.schema, rel.name),
                None,
                &detail,
            );
            *self.refused = Some(why.to_string());
        }
        Ended::Refused(detail)
    }

    pub(super) async fn make_plan(
        &mut self,
        apply: &mut ApplyConn,
        rel: &Relation,
        types: &HashMap<u32, String>,
    ) -> Result<Result<Plan, String>, Ended> {
        let mapping = self.shared.mapping();
        let map = mapping.rows_toward(self.to(), &rel.name);
        let target_name = format!("{}.{}", ident(&rel.schema), ident(&map.table));
        let rows = apply
            .query(
                "SELECT a.attname AS name, format_type(a.atttypid, NULL) AS ty, \
                 a.attgenerated <> '' AS generated, a.attidentity = 'a' AS always, \
                 coalesce(a.attnum = ANY (i.indkey), false) AS key \
                 FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[Some(&target_name)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if rows.is_empty() {
            return Ok(Err(format!(
                "{}.{} has no table {target_name} on {} to go to",
                rel.schema,
                rel.name,
                self.to()
            )));
        }
        let mut target = TargetTable {
            schema: rel.schema.clone(),
            name: map.table.clone(),
            ..TargetTable::default()
        };
        for r in rows.iter() {
            let name = r.str("name").unwrap_or_default().to_string();
            if r.str("key") == Ok("t") {
                target.key.push(name.clone());
            }
            target.columns.push(TargetColumn {
                name,
                ty: r.str("ty").unwrap_or("text").to_string(),
                generated: r.str("generated") == Ok("t"),
                always_identity: r.str("always") == Ok("t"),
            });
        }
        let type_name = |oid: u32| types.get(&oid).cloned().or_else(|| builtin_type(oid));
        Ok(Plan::new(rel, &map, &target, &type_name))
    }
}

/// Names of built-in types (the log sends names for the others).
fn builtin_type(oid: u32) -> Option<String> {
    let name = match oid {
        16 => "boolean",
        17 => "bytea",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        114 => "json",
        700 => "real",
        701 => "double precision",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1083 => "time without time zone",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1186 => "interval",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return None,
    };
    Some(name.to_string())
}
