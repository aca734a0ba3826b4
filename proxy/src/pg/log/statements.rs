//! The statements that apply the log's changes to the other side, one per
//! table, kind of change and shape of row: built from the log's relation
//! (the source's columns and key) and the target's catalog, through the
//! `[mapping]`. Pure text; the applier prepares and runs them.
//!
//! Every value travels as text (a parameter declared `text`) and is cast
//! to the target column's type, so it is read by the target's own input
//! function exactly as the source's output function wrote it (both ends
//! share `LOG_SETTINGS`).

use crate::backend::pglog::ident;
use crate::backend::pgoutput::{Relation, Value};
use crate::mapping::rows::RowMap;

/// One column of the target table, from its catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    pub name: String,
    /// Its type, without modifiers (`format_type(atttypid, NULL)`): values
    /// are cast to it, and the column's own modifier applies on assignment.
    pub ty: String,
    /// Generated (stored): computed by the target, never written.
    pub generated: bool,
    /// `GENERATED ALWAYS AS IDENTITY`.
    pub always_identity: bool,
}

/// The target table, from its catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetTable {
    pub schema: String,
    pub name: String,
    pub columns: Vec<TargetColumn>,
    /// Its primary key's columns.
    pub key: Vec<String>,
}

/// How a relation's changes are applied: each source column's target
/// column, the key, the columns computed by the mapping.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `schema.table` as the source names it (records name it so).
    pub source: String,
    /// The target, quoted and qualified.
    pub target: String,
    /// Per source column: the target column's quoted name and type, or
    /// `None` (dropped by the mapping, or generated on the target).
    cols: Vec<Option<(String, String, bool)>>,
    /// Source columns of the replica identity.
    key: Vec<usize>,
    /// Replica identity full: UPDATE and DELETE match the whole old row.
    full: bool,
    /// The target's primary key, as source column indexes, when every one
    /// of its columns comes from the source.
    conflict: Option<Vec<usize>>,
    /// Target columns computed from the row: quoted name, SQL with source
    /// columns as `$n` parameters (1-based source index).
    computed: Vec<(String, String)>,
    overriding: bool,
}

/// Why a relation cannot be applied to the target.
pub type Refusal = String;

/// The statement for one change, with the parameters it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    /// Parameters: 1..=n the row's columns, n+1..=2n the old row's (full
    /// identity).
    pub params: usize,
    /// What its CommandComplete says.
    pub reads: Reads,
}

/// How a statement's CommandComplete count is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Rows it wrote: 1 is right, 0 means the target lacked the row.
    Found,
    /// An insert that updates a row already there: 1 means the target had
    /// the row already.
    Existed,
    /// An update that inserts a row that was not there: 1 means the target
    /// lacked it.
    Missing,
    /// An insert that does nothing when the row is there: 0 means the
    /// target had it already.
    Fresh,
    /// Nothing to check (TRUNCATE, a plain insert).
    Nothing,
}

/// Which change, in the shape that decides its statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    Insert,
    /// `present`: a bit per source column the change carries (unchanged
    /// large values are not sent); `moved`: the key changed (or the old row
    /// is given whole).
    Update {
        present: u128,
        moved: bool,
    },
    Delete,
}

impl Plan {
    /// The plan of `rel` (from the log) toward `target` through `map`;
    /// `type_name` names a source type (for columns a computed column uses
    /// that the target does not have).
    pub fn new(
        rel: &Relation,
        map: &RowMap,
        target: &TargetTable,
        type_name: &dyn Fn(u32) -> Option<String>,
    ) -> Result<Plan, Refusal> {
        let source = format!("{}.{}", rel.schema, rel.name);
        if rel.columns.len() > 128 {
            return Err(format!(
                "{source} has {} columns; the log applier takes at most 128",
                rel.columns.len()
            ));
        }
        let mut cols = Vec::with_capacity(rel.columns.len());
        for c in &rel.columns {
            let Some(name) = map.column(&c.name) else {
                cols.push(None);
                continue;
            };
            let Some(t) = target.columns.iter().find(|t| t.name == name) else {
                return Err(format!(
                    "{source}.{} has no column {} on {}.{} to go to (add it there, or map or drop it in [mapping])",
                    c.name,
                    ident(&name),
                    target.schema,
                    target.name
                ));
            };
            cols.push((!t.generated).then(|| (ident(&t.name), t.ty.clone(), t.always_identity)));
        }
        let key: Vec<usize> = rel
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect();
        let full = rel.replica_identity == b'f';
        if !full {
            if let Some(&k) = key.iter().find(|&&k| cols[k].is_none()) {
                return Err(format!(
                    "{source}'s key column {} has no column on the target to find rows by",
                    rel.columns[k].name
                ));
            }
        }
        let conflict = (!target.key.is_empty())
            .then(|| {
                target
                    .key
                    .iter()
                    .map(|k| {
                        cols.iter()
                            .position(|c| c.as_ref().is_some_and(|(n, _, _)| *n == ident(k)))
                    })
                    .collect::<Option<Vec<usize>>>()
            })
            .flatten();
        let mut computed = Vec::new();
        if map.has_computed() {
            let param = |name: &str| {
                let i = rel
                    .columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(name))?;
                let ty = cols[i]
                    .as_ref()
                    .map(|(_, t, _)| t.clone())
                    .or_else(|| type_name(rel.columns[i].type_oid));
                Some(match ty {
                    Some(t) => format!("${}::{t}", i + 1),
                    None => format!("${}", i + 1),
                })
            };
            for (column, sql) in map.computed_sql(param) {
                let sql = sql.map_err(|e| format!("{source}: {e}"))?;
                let Some(t) = target.columns.iter().find(|t| t.name == column) else {
                    return Err(format!(
                        "{source}: computed column {} is not on {}.{}",
                        ident(&column),
                        target.schema,
                        target.name
                    ));
                };
                computed.push((ident(&t.name), sql));
            }
        }
        Ok(Plan {
            source,
            target: format!("{}.{}", ident(&target.schema), ident(&target.name)),
            overriding: cols.iter().flatten().any(|(_, _, always)| *always),
            cols,
            key,
            full,
            conflict,
            computed,
        })
    }

    /// The source column count (parameters of the row).
    pub fn width(&self) -> usize {
        self.cols.len()
    }

    /// Whether updates and deletes can find their row (by the replica
    /// identity's key, or the whole old row): tables without one are in
    /// the log for their inserts only.
    pub fn finds_rows(&self) -> bool {
        self.full || !self.key.is_empty()
    }

    /// Parameter `i` (0-based source column) cast to its target type.
    fn value(&self, i: usize) -> String {
        let ty = self.cols[i].as_ref().map_or("text", |(_, t, _)| t.as_str());
        format!("${}::{ty}", i + 1)
    }

    /// `$n` of the old row's column `i` (full identity), as text.
    fn old_text(&self, i: usize) -> String {
        format!("${}", self.width() + i + 1)
    }

    fn key_match(&self, from_old: bool) -> String {
        if self.full {
            // The whole old row, by each value's text (types without an
            // equality operator, such as json, compare so too), one row.
            let conds: Vec<String> = self
                .cols
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|(n, _, _)| (i, n)))
                .map(|(i, n)| format!("{n}::text IS NOT DISTINCT FROM {}", self.old_text(i)))
                .collect();
            return format!(
                "ctid = (SELECT ctid FROM {} WHERE {} LIMIT 1)",
                self.target,
                if conds.is_empty() {
                    "true".to_string()
                } else {
                    conds.join(" AND ")
                }
            );
        }
        self.key
            .iter()
            .map(|&k| {
                let (n, ty, _) = self.cols[k].as_ref().expect("key columns are mapped");
                let p = if from_old {
                    self.width() + k + 1
                } else {
                    k + 1
                };
                format!("{n} = ${p}::{ty}")
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The columns of an insert with their values.
    fn insert_parts(&self) -> (Vec<String>, Vec<String>) {
        let mut names = Vec::new();
        let mut values = Vec::new();
        for (i, c) in self.cols.iter().enumerate() {
            if let Some((n, _, _)) = c {
                names.push(n.clone());
                values.push(self.value(i));
            }
        }
        for (n, sql) in &self.computed {
            names.push(n.clone());
            values.push(sql.clone());
        }
        (names, values)
    }

    fn insert_head(&self, names: &[String]) -> String {
        format!(
            "INSERT INTO {} ({}){}",
            self.target,
            names.join(", "),
            if self.overriding {
                " OVERRIDING SYSTEM VALUE"
            } else {
                ""
            }
        )
    }

    /// `SET` of the present columns (with the computed ones); key columns
    /// only when the key moved; never an always-identity column (the
    /// source could not assign one either).
    fn assignments(&self, present: u128, moved: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, c) in self.cols.iter().enumerate() {
            let Some((n, _, always)) = c else { continue };
            if present & (1u128 << i) == 0 || *always {
                continue;
            }
            if !self.full && !moved && self.key.contains(&i) {
                continue;
            }
            out.push((n.clone(), self.value(i)));
        }
        if present.count_ones() as usize == self.cols.len() {
            for (n, sql) in &self.computed {
                out.push((n.clone(), sql.clone()));
            }
        }
        out
    }

    /// The statement for a change of `shape`; `None`: nothing to do (an
    /// update that assigns nothing the target keeps).
    pub fn statement(&self, shape: Shape) -> Option<Statement> {
        if !matches!(shape, Shape::Insert) && !self.finds_rows() {
            return None;
        }
        // The old row (or key) follows the row's values when the
        // statement finds its row by it.
        let with_old = self.width() * 2;
        match shape {
            Shape::Insert => {
                let (names, values) = self.insert_parts();
                let insert = format!(
                    "{} VALUES ({})",
                    self.insert_head(&names),
                    values.join(", ")
                );
                let Some(conflict) = &self.conflict else {
                    return Some(Statement {
                        sql: insert,
                        params: self.width(),
                        reads: Reads::Nothing,
                    });
                };
                let target_key: Vec<String> = conflict
                    .iter()
                    .filter_map(|&i| self.cols[i].as_ref().map(|(n, _, _)| n.clone()))
                    .collect();
                let on_conflict = format!("ON CONFLICT ({}) DO NOTHING", target_key.join(", "));
                let all = if self.width() == 128 {
                    u128::MAX
                } else {
                    (1u128 << self.width()) - 1
                };
                let set: Vec<(String, String)> = self
                    .assignments(all, false)
                    .into_iter()
                    .filter(|(column, _)| {
                        !conflict
                            .iter()
                            .any(|&i| self.cols[i].as_ref().is_some_and(|(n, _, _)| n == column))
                    })
                    .collect();
                if set.is_empty() {
                    return Some(Statement {
                        sql: format!("{insert} {on_conflict}"),
                        params: self.width(),
                        reads: Reads::Fresh,
                    });
                }
                let by_key = conflict
                    .iter()
                    .map(|&i| {
                        let (n, _, _) = self.cols[i].as_ref().expect("conflict columns are mapped");
                        format!("{n} = {}", self.value(i))
                    })
                    .collect::<Vec<_>>()
                    .join(" AND ");
                // A row there already is overwritten only where it differs
                // (compared as text: json has no equality), and only then
                // counted.
                let columns: Vec<&str> = set.iter().map(|(c, _)| c.as_str()).collect();
                let values: Vec<&str> = set.iter().map(|(_, v)| v.as_str()).collect();
                Some(Statement {
                    sql: format!(
                        "WITH inserted AS ({insert} {on_conflict} RETURNING 1) UPDATE {} SET {} WHERE {by_key} AND NOT EXISTS (SELECT FROM inserted) AND ROW({})::text IS DISTINCT FROM ROW({})::text",
                        self.target,
                        join_set(&set),
                        columns.join(", "),
                        values.join(", ")
                    ),
                    params: self.width(),
                    reads: Reads::Existed,
                })
            }
            Shape::Update { present, moved } => {
                let set = self.assignments(present, moved);
                if set.is_empty() {
                    return None;
                }
                let update = format!(
                    "UPDATE {} SET {} WHERE {}",
                    self.target,
                    join_set(&set),
                    self.key_match(moved)
                );
                let params = if moved || self.full {
                    with_old
                } else {
                    self.width()
                };
                let whole = present.count_ones() as usize == self.width();
                if !whole || self.conflict.is_none() || self.full {
                    return Some(Statement {
                        sql: update,
                        params,
                        reads: Reads::Found,
                    });
                }
                // A row the target lacks is added whole.
                let (names, values) = self.insert_parts();
                Some(Statement {
                    sql: format!(
                        "WITH updated AS ({update} RETURNING 1) {} SELECT {} WHERE NOT EXISTS (SELECT FROM updated)",
                        self.insert_head(&names),
                        values.join(", ")
                    ),
                    params,
                    reads: Reads::Missing,
                })
            }
            Shape::Delete => Some(Statement {
                sql: format!("DELETE FROM {} WHERE {}", self.target, self.key_match(true)),
                params: with_old,
                reads: Reads::Found,
            }),
        }
    }

    /// The key of a change's row as records show it: `col=value, ...`.
    pub fn key_text(&self, rel: &Relation, row: &[Value]) -> Option<String> {
        let parts: Vec<String> = self
            .key
            .iter()
            .filter_map(|&k| {
                let v = row.get(k)?.text()?;
                Some(format!(
                    "{}={}",
                    rel.columns.get(k)?.name,
                    String::from_utf8_lossy(v)
                ))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// The parameters of a change: the row's values, then (updates and
    /// deletes) the old row's or key's values at their columns.
    pub fn bind_values<'v>(
        &self,
        statement: &Statement,
        row: Option<&'v [Value]>,
        old: Option<&'v [Value]>,
    ) -> Vec<Option<&'v [u8]>> {
        let mut out: Vec<Option<&[u8]>> = vec![None; statement.params];
        let w = self.width();
        if let Some(row) = row {
            for (i, v) in row.iter().enumerate().take(w) {
                out[i] = v.text();
            }
        }
        if statement.params > w {
            // The old row (or key): at n+1.., or where the row's key would
            // be when only a key is given.
            let from = old.or(row);
            if let Some(from) = from {
                for (i, v) in from.iter().enumerate().take(w) {
                    out[w + i] = v.text();
                }
            }
        }
        out
    }
}

/// `col = value, ...`.
fn join_set(set: &[(String, String)]) -> String {
    set.iter()
        .map(|(c, v)| format!("{c} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The shape of an update: which columns it carries, whether its row moved.
pub fn update_shape(new: &[Value], old: Option<&[Value]>) -> Shape {
    let mut present = 0u128;
    for (i, v) in new.iter().enumerate().take(128) {
        if *v != Value::Unchanged {
            present |= 1 << i;
        }
    }
    Shape::Update {
        present,
        moved: old.is_some(),
    }
}

#[cfg(test)]
mod tests;
