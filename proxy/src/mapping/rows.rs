//! The mapping as the log applier sees it: a row of one side's table, as
//! the other side's table takes it (its name there, each column's name or
//! none, and the columns computed from the row).

use super::{key, SchemaMap};
use sqlparser::ast::{Expr, Ident};
use std::collections::HashMap;
use std::ops::ControlFlow;
use turnout_control::Side;

/// One table's rows toward one side.
#[derive(Debug, Clone)]
pub struct RowMap {
    /// The table's name on the target side (unqualified: the schema is the
    /// source's).
    pub table: String,
    /// Source column (folded) to target column; `None`: the target has none.
    columns: HashMap<String, Option<String>>,
    /// Target columns computed from the source row (old's columns, toward
    /// new).
    computed: Vec<(String, Expr)>,
}

impl RowMap {
    /// The target's name of the source's `column`; `None` when the target
    /// does not have it.
    pub fn column(&self, column: &str) -> Option<String> {
        match self.columns.get(&column.to_lowercase()) {
            Some(mapped) => mapped.clone(),
            None => Some(column.to_string()),
        }
    }

    /// Whether rows of `table` reach the target as they are (same table
    /// name, same columns, nothing computed).
    pub fn is_plain(&self, table: &str) -> bool {
        self.table == table
            && self.computed.is_empty()
            && self
                .columns
                .iter()
                .all(|(k, v)| v.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(k)))
    }

    /// Whether the target has columns computed from the row.
    pub fn has_computed(&self) -> bool {
        !self.computed.is_empty()
    }

    /// Each computed target column with its expression as SQL, the source
    /// columns it uses written as `value_of` gives them (e.g. a parameter);
    /// `Err` names a column `value_of` has no value for.
    pub fn computed_sql(
        &self,
        value_of: impl Fn(&str) -> Option<String>,
    ) -> Vec<(String, Result<String, String>)> {
        self.computed
            .iter()
            .map(|(column, expr)| {
                let mut e = expr.clone();
                let mut missing = None;
                let _ = sqlparser::ast::visit_expressions_mut(&mut e, |x| {
                    if let Expr::Identifier(i) = x {
                        match value_of(&key(i)) {
                            Some(v) => *x = Expr::Identifier(Ident::new(format!("({v})"))),
                            None => {
                                missing = Some(i.value.clone());
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    ControlFlow::Continue(())
                });
                let sql = match missing {
                    Some(m) => Err(format!(
                        "computed column {column} needs {m}, which the log's row does not carry"
                    )),
                    None => Ok(e.to_string()),
                };
                (column.clone(), sql)
            })
            .collect()
    }
}

impl SchemaMap {
    /// The rows of `table` (as `to.other()` names it) toward `to`.
    pub fn rows_toward(&self, to: Side, table: &str) -> RowMap {
        let folded = table.to_lowercase();
        let same = || RowMap {
            table: table.to_string(),
            columns: HashMap::new(),
            computed: Vec::new(),
        };
        match to {
            Side::New => {
                let Some(t) = self.tables.get(&folded).or_else(|| self.tables.get(table)) else {
                    return same();
                };
                let mut columns: HashMap<String, Option<String>> = t
                    .renames
                    .iter()
                    .map(|(old, new)| (old.clone(), Some(new.clone())))
                    .collect();
                for d in &t.dropped {
                    columns.insert(d.clone(), None);
                }
                RowMap {
                    table: t.new.clone(),
                    columns,
                    computed: t.computed.clone(),
                }
            }
            Side::Old => {
                let Some((old, t)) = self
                    .tables
                    .iter()
                    .find(|(_, t)| t.new.eq_ignore_ascii_case(table))
                else {
                    return same();
                };
                let mut columns: HashMap<String, Option<String>> = t
                    .renames
                    .iter()
                    .map(|(old, new)| (new.to_lowercase(), Some(old.clone())))
                    .collect();
                for (c, _) in &t.computed {
                    columns.insert(c.to_lowercase(), None);
                }
                RowMap {
                    table: old.clone(),
                    columns,
                    computed: Vec::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SqlDialect;
    use turnout_config::{Mapping, TableMapping};

    fn map() -> SchemaMap {
        let t = TableMapping {
            old: "customers".into(),
            new: Some("clients".into()),
            columns: [("name".to_string(), "full_name".to_string())]
                .into_iter()
                .collect(),
            drop: vec!["legacy_code".into()],
            computed: [(
                "email_domain".to_string(),
                "split_part(email, '@', 2)".to_string(),
            )]
            .into_iter()
            .collect(),
        };
        SchemaMap::new(
            &Mapping {
                tables: vec![t],
                after_finalize: Default::default(),
            },
            SqlDialect::Postgres,
        )
        .unwrap()
    }

    #[test]
    fn rows_go_toward_new_renamed_with_computed_columns_and_back() {
        let m = map();
        let to_new = m.rows_toward(Side::New, "customers");
        assert_eq!(to_new.table, "clients");
        assert_eq!(to_new.column("name").as_deref(), Some("full_name"));
        assert_eq!(to_new.column("legacy_code"), None);
        assert_eq!(to_new.column("email").as_deref(), Some("email"));
        let computed = to_new.computed_sql(|c| (c == "email").then(|| "$3::text".to_string()));
        assert_eq!(computed[0].0, "email_domain");
        assert_eq!(
            computed[0].1.as_deref(),
            Ok("split_part(($3::text), '@', 2)")
        );
        assert!(to_new.computed_sql(|_| None)[0].1.is_err());
        let to_old = m.rows_toward(Side::Old, "clients");
        assert_eq!(to_old.table, "customers");
        assert_eq!(to_old.column("full_name").as_deref(), Some("name"));
        assert_eq!(to_old.column("email_domain"), None);
        assert!(!to_old.has_computed());
        // Not mapped: as it is.
        let other = m.rows_toward(Side::New, "orders");
        assert_eq!(other.table, "orders");
        assert_eq!(other.column("id").as_deref(), Some("id"));
    }
}
