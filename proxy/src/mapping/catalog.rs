//! The mapping checked against both live catalogs: every table and column
//! it names exists, mapped columns have compatible types, nothing of `old`
//! is left without a counterpart, and the tables have primary keys. Each
//! problem names its table and column; turnout does not mirror while any
//! remain.

use crate::server::Shared;
use std::collections::{BTreeMap, HashMap, HashSet};
use turnout_config::{Mapping, Protocol};
use turnout_control::Side;

/// One column as a catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    pub has_default: bool,
    /// The default's text, when there is one.
    pub default: Option<String>,
}

/// The tables of one side that the mapping names: columns in order, and
/// whether a primary key exists.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tables: HashMap<String, (Vec<Column>, bool)>,
    /// Estimated rows per table (only when read whole).
    pub rows: HashMap<String, i64>,
    /// Foreign keys: table, column, referenced table (only when read whole).
    pub foreign_keys: Vec<(String, String, String)>,
}

/// Reads what `names` are on `side`.
pub async fn read(shared: &Shared, side: Side, names: &[String]) -> Result<Catalog, String> {
    if names.is_empty() {
        return Ok(Catalog::default());
    }
    read_filtered(shared, side, Some(names)).await
}

/// Reads every table of `side` (its search path, or its database), with
/// estimated sizes and foreign keys.
pub async fn read_all(shared: &Shared, side: Side) -> Result<Catalog, String> {
    let mut catalog = read_filtered(shared, side, None).await?;
    let (rows_sql, fk_sql) = match shared.protocol {
        Protocol::Postgres => (
            "SELECT c.relname, c.reltuples::bigint::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname = ANY (current_schemas(false))",
            "SELECT kcu.table_name, kcu.column_name, ccu.table_name \
             FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name \
               AND kcu.table_schema = tc.table_schema \
             JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = tc.constraint_name \
               AND ccu.table_schema = tc.table_schema \
             WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = ANY (current_schemas(false)) \
             ORDER BY 1, 2",
        ),
        Protocol::Mysql => (
            "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'",
            "SELECT TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME \
             FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY 1, 2",
        ),
    };
    let mut answers = queries(shared, side, &[rows_sql, fk_sql])
        .await?
        .into_iter();
    let (rows, fks) = (
        answers.next().unwrap_or_default(),
        answers.next().unwrap_or_default(),
    );
    for r in rows {
        if let (Some(Some(t)), Some(Some(n))) = (r.first(), r.get(1)) {
            catalog.rows.insert(t.clone(), n.parse().unwrap_or(0));
        }
    }
    for r in fks {
        if let (Some(Some(t)), Some(Some(c)), Some(Some(to))) = (r.first(), r.get(1), r.get(2)) {
            catalog
                .foreign_keys
                .push((t.clone(), c.clone(), to.clone()));
        }
    }
    Ok(catalog)
}

/// Rows as text, one per query.
type Answers = Vec<Vec<Vec<Option<String>>>>;

/// Runs catalog queries on `side` over one connection; their rows as text.
async fn queries(shared: &Shared, side: Side, sqls: &[&str]) -> Result<Answers, String> {
    let mut out = Vec::with_capacity(sqls.len());
    match shared.protocol {
        Protocol::Postgres => {
            let mut conn = crate::pg::sequences::open(shared, side).await?;
            for sql in sqls {
                out.push(crate::pg::sequences::run(&mut conn, sql, side).await?);
            }
        }
        Protocol::Mysql => {
            let mut conn = crate::mysql::counters::open(shared, side).await?;
            for sql in sqls {
                out.push(
                    crate::mysql::counters::rows(&mut conn, sql)
                        .await
                        .map_err(|e| format!("on {side}: {e}"))?,
                );
            }
        }
    }
    Ok(out)
}

async fn read_filtered(
    shared: &Shared,
    side: Side,
    names: Option<&[String]>,
) -> Result<Catalog, String> {
    let list = names
        .unwrap_or_default()
        .iter()
        .map(|n| crate::pg::sequences::literal(n))
        .collect::<Vec<_>>()
        .join(", ");
    let (pg_filter, my_filter) = match names {
        Some(_) => (
            format!("AND table_name IN ({list})"),
            format!("AND TABLE_NAME IN ({list})"),
        ),
        None => (String::new(), String::new()),
    };
    let (columns_sql, keys_sql) = match shared.protocol {
        Protocol::Postgres => (
            format!(
                "SELECT table_name, column_name, data_type, is_nullable, \
                 CASE WHEN column_default IS NULL AND is_identity = 'NO' THEN 'NO' ELSE 'YES' END, \
                 column_default \
                 FROM information_schema.columns \
                 WHERE table_schema = ANY (current_schemas(false)) {pg_filter} \
                 AND table_name IN (SELECT table_name FROM information_schema.tables \
                   WHERE table_schema = ANY (current_schemas(false)) AND table_type = 'BASE TABLE') \
                 ORDER BY table_name, ordinal_position"
            ),
            format!(
                "SELECT table_name FROM information_schema.table_constraints \
                 WHERE constraint_type = 'PRIMARY KEY' AND table_schema = ANY (current_schemas(false)) \
                 {pg_filter}"
            ),
        ),
        Protocol::Mysql => (
            format!(
                "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, IS_NULLABLE, \
                 CASE WHEN COLUMN_DEFAULT IS NULL AND EXTRA NOT LIKE '%auto_increment%' THEN 'NO' ELSE 'YES' END, \
                 COLUMN_DEFAULT \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() {my_filter} \
                 ORDER BY TABLE_NAME, ORDINAL_POSITION"
            ),
            format!(
                "SELECT TABLE_NAME FROM information_schema.TABLE_CONSTRAINTS \
                 WHERE CONSTRAINT_TYPE = 'PRIMARY KEY' AND TABLE_SCHEMA = DATABASE() \
                 {my_filter}"
            ),
        ),
    };
    let mut answers = queries(shared, side, &[&columns_sql, &keys_sql])
        .await?
        .into_iter();
    let (columns, keys) = (
        answers.next().unwrap_or_default(),
        answers.next().unwrap_or_default(),
    );
    let mut catalog = Catalog::default();
    for row in columns {
        let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let entry = catalog.tables.entry(text(0)).or_default();
        entry.0.push(Column {
            name: text(1),
            data_type: text(2).to_ascii_lowercase(),
            nullable: text(3) == "YES",
            has_default: text(4) == "YES",
            default: row.get(5).cloned().flatten(),
        });
    }
    for row in keys {
        if let Some(Some(table)) = row.first() {
            if let Some(t) = catalog.tables.get_mut(table) {
                t.1 = true;
            }
        }
    }
    Ok(catalog)
}

/// The type family a column's type belongs to: mapped columns must share
/// one, so a value written on one side means the same on the other.
fn family(data_type: &str) -> &'static str {
    let t = data_type.to_ascii_lowercase();
    let t = t.as_str();
    match t {
        "smallint" | "integer" | "bigint" | "int" | "tinyint" | "mediumint" | "int2" | "int4"
        | "int8" => "integer",
        "numeric" | "decimal" => "numeric",
        "real" | "double precision" | "double" | "float" | "float4" | "float8" => "float",
        "text" | "character varying" | "character" | "varchar" | "char" | "tinytext"
        | "mediumtext" | "longtext" | "citext" | "name" => "text",
        "boolean" | "bool" => "boolean",
        "date" => "date",
        "timestamp without time zone" | "datetime" | "timestamp" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "uuid" => "uuid",
        "json" | "jsonb" => "json",
        "bytea" | "blob" | "binary" | "varbinary" | "longblob" | "mediumblob" | "tinyblob" => {
            "binary"
        }
        _ => "other",
    }
}

/// Whether a column's values come from a sequence or an auto-increment
/// counter (serial, identity, AUTO_INCREMENT).
fn generates_ids(c: &Column) -> bool {
    let d = c.default.as_deref().unwrap_or_default().to_lowercase();
    d.contains("nextval(") || (c.has_default && c.default.is_none() && !c.nullable)
}

/// Every problem of `mapping` against the two catalogs, in words.
pub fn problems(mapping: &Mapping, old: &Catalog, new: &Catalog) -> Vec<String> {
    let mut out = Vec::new();
    for t in &mapping.tables {
        let new_name = t.new_name();
        let o = old.tables.get(&t.old);
        let n = new.tables.get(new_name);
        if o.is_none() {
            out.push(format!("table {} does not exist on old", t.old));
        }
        if n.is_none() {
            out.push(format!(
                "table {new_name} does not exist on new (mapped from old {})",
                t.old
            ));
        }
        let (Some((old_cols, old_key)), Some((new_cols, new_key))) = (o, n) else {
            continue;
        };
        if !old_key {
            out.push(format!(
                "table {} on old has no primary key (backfill and verify need one)",
                t.old
            ));
        }
        if !new_key {
            out.push(format!(
                "table {new_name} on new has no primary key (backfill and verify need one)"
            ));
        }
        let find = |cols: &Vec<Column>, name: &str| cols.iter().find(|c| c.name == name).cloned();
        for (from, to) in &t.columns {
            if find(old_cols, from).is_none() {
                out.push(format!(
                    "column {}.{from} does not exist on old (mapping.columns)",
                    t.old
                ));
            }
            if find(new_cols, to).is_none() {
                out.push(format!(
                    "column {new_name}.{to} does not exist on new (mapped from {}.{from})",
                    t.old
                ));
            }
        }
        for d in &t.drop {
            if find(old_cols, d).is_none() {
                out.push(format!(
                    "column {}.{d} does not exist on old (mapping.drop)",
                    t.old
                ));
            }
        }
        for c in t.computed.keys() {
            if find(new_cols, c).is_none() {
                out.push(format!(
                    "column {new_name}.{c} does not exist on new (mapping.computed)"
                ));
            }
        }
        // Each old column: where it goes, and whether the types agree.
        let mut mapped_new: BTreeMap<String, ()> = BTreeMap::new();
        for col in old_cols {
            if t.drop.contains(&col.name) {
                continue;
            }
            let target = t.columns.get(&col.name).unwrap_or(&col.name);
            match find(new_cols, target) {
                None if !t.columns.contains_key(&col.name) => out.push(format!(
                    "column {}.{} has no counterpart in {new_name} (rename it in mapping.columns or list it in mapping.drop)",
                    t.old, col.name
                )),
                None => {}
                Some(nc) => {
                    mapped_new.insert(nc.name.clone(), ());
                    if generates_ids(col) && !nc.has_default {
                        out.push(format!(
                            "{}.{} takes ids from a sequence or auto-increment but {new_name}.{} has none: ids generated on new after the writes flip would have nothing to come from",
                            t.old, col.name, nc.name
                        ));
                    }
                    let (a, b) = (family(&col.data_type), family(&nc.data_type));
                    if a != b {
                        out.push(format!(
                            "type clash: {}.{} ({}) -> {new_name}.{} ({})",
                            t.old, col.name, col.data_type, nc.name, nc.data_type
                        ));
                    }
                }
            }
        }
        for nc in new_cols {
            let fed = mapped_new.contains_key(&nc.name) || t.computed.contains_key(&nc.name);
            if !fed && !nc.nullable && !nc.has_default {
                out.push(format!(
                    "column {new_name}.{} is NOT NULL without a default and nothing maps to it (add it to mapping.computed)",
                    nc.name
                ));
            }
        }
    }
    out
}

/// The columns each mapped table has on old (names lower-case, by old's
/// table name lower-case): what a write run on old may name.
pub type OldColumns = HashMap<String, HashSet<String>>;

/// Reads both catalogs and checks `mapping` against them: old's columns
/// of the mapped tables, or every problem found.
pub async fn check(shared: &Shared, mapping: &Mapping) -> Result<OldColumns, Vec<String>> {
    let old_names: Vec<String> = mapping.tables.iter().map(|t| t.old.clone()).collect();
    let new_names: Vec<String> = mapping
        .tables
        .iter()
        .map(|t| t.new_name().to_string())
        .collect();
    let (old, new) = tokio::join!(
        read(shared, Side::Old, &old_names),
        read(shared, Side::New, &new_names)
    );
    match (old, new) {
        (Ok(o), Ok(n)) => {
            let found = problems(mapping, &o, &n);
            if !found.is_empty() {
                return Err(found);
            }
            Ok(o.tables
                .iter()
                .map(|(table, (cols, _))| {
                    let names = cols.iter().map(|c| c.name.to_lowercase()).collect();
                    (table.to_lowercase(), names)
                })
                .collect())
        }
        (o, n) => Err([o.err(), n.err()]
            .into_iter()
            .flatten()
            .map(|e| format!("catalog could not be read: {e}"))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnout_config::TableMapping;

    fn col(name: &str, t: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type: t.into(),
            nullable,
            has_default: false,
            default: None,
        }
    }

    #[test]
    fn each_problem_is_named() {
        let mut old = Catalog::default();
        old.tables.insert(
            "users".into(),
            (
                vec![
                    Column {
                        default: Some("nextval('users_id_seq'::regclass)".into()),
                        has_default: true,
                        ..col("id", "integer", false)
                    },
                    col("name", "text", true),
                    col("email", "text", true),
                    col("age", "integer", true),
                ],
                true,
            ),
        );
        old.tables
            .insert("logs".into(), (vec![col("line", "text", true)], false));
        let mut new = Catalog::default();
        new.tables.insert(
            "accounts".into(),
            (
                vec![
                    col("id", "bigint", false),
                    col("full_name", "text", true),
                    col("email_address", "integer", true),
                    col("created_at", "timestamp with time zone", false),
                ],
                true,
            ),
        );
        let mapping = Mapping {
            tables: vec![
                TableMapping {
                    old: "users".into(),
                    new: Some("accounts".into()),
                    columns: [
                        ("name", "full_name"),
                        ("email", "email_address"),
                        ("nmae", "x"),
                    ]
                    .into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                    drop: vec![],
                    computed: Default::default(),
                },
                TableMapping {
                    old: "logs".into(),
                    new: Some("log_lines".into()),
                    columns: Default::default(),
                    drop: vec![],
                    computed: Default::default(),
                },
            ],
        };
        let p = problems(&mapping, &old, &new).join("\n");
        for expected in [
            "column users.nmae does not exist on old",
            "column accounts.x does not exist on new",
            "type clash: users.email (text) -> accounts.email_address (integer)",
            "column users.age has no counterpart in accounts",
            "column accounts.created_at is NOT NULL without a default",
            "table log_lines does not exist on new",
            "users.id takes ids from a sequence or auto-increment but accounts.id has none",
        ] {
            assert!(p.contains(expected), "{expected:?} not in:\n{p}");
        }
        assert!(
            !p.contains("type clash: users.id"),
            "integer -> bigint is one family:\n{p}"
        );
    }
}
