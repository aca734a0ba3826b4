//! The mapping checked against both live catalogs: every table and column
//! it names exists, mapped columns have compatible types, nothing of `old`
//! is left without a counterpart, and the tables have primary keys. Each
//! problem names its table and column; turnout does not mirror while any
//! remain.

use std::collections::{BTreeMap, HashMap, HashSet};
use turnout_config::Mapping;

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

/// The type family a column's type belongs to: mapped columns must share
/// one, so a value written on one side means the same on the other.
fn family(data_type: &str) -> &'static str {
    // The full type (`character varying(255)`, `int(11) unsigned`) without
    // its length, precision and attributes.
    let mut t = String::new();
    let mut depth = 0;
    for c in data_type.to_ascii_lowercase().chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => t.push(c),
            _ => {}
        }
    }
    let t = t
        .replace(" unsigned", "")
        .replace(" zerofill", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
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
/// What the tables the mapping does not name lack on new (they are
/// mirrored as they are): a table only on old, a column only on old, a
/// column only on new that an insert cannot leave out (the first list:
/// writes would fail); a missing key, types of other families (the second:
/// notes).
pub fn unmapped_problems(
    mapping: &Mapping,
    old: &Catalog,
    new: &Catalog,
) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mapped: HashSet<&str> = mapping.tables.iter().map(|t| t.old.as_str()).collect();
    let mut names: Vec<&String> = old.tables.keys().collect();
    names.sort();
    for name in names {
        if mapped.contains(name.as_str()) {
            continue;
        }
        let (old_cols, old_key) = &old.tables[name];
        let Some((new_cols, new_key)) = new.tables.get(name) else {
            out.push(format!(
                "table {name} exists on old only: every write to it would fail on new (create it on new, or map it in [mapping])"
            ));
            continue;
        };
        for c in old_cols {
            if !new_cols.iter().any(|n| n.name == c.name) {
                out.push(format!(
                    "column {name}.{} exists on old only: writes naming it would fail on new (add it on new, or drop it in [mapping])",
                    c.name
                ));
            }
        }
        for c in new_cols {
            if !c.nullable && !c.has_default && !old_cols.iter().any(|o| o.name == c.name) {
                out.push(format!(
                    "column {name}.{} exists on new only, NOT NULL without a default: inserts mirrored from old would fail (give it a default, or compute it in [mapping])",
                    c.name
                ));
            }
        }
        for c in old_cols {
            if let Some(n) = new_cols.iter().find(|n| n.name == c.name) {
                if family(&c.data_type) != family(&n.data_type) {
                    notes.push(format!(
                        "column {name}.{} is {} on old and {} on new: values may not mean the same",
                        c.name, c.data_type, n.data_type
                    ));
                }
            }
        }
        if !old_key || !new_key {
            notes.push(format!(
                "table {name} has no primary key on {}: backfill and verify skip it, and row images cannot name its rows",
                if !old_key { "old" } else { "new" }
            ));
        }
    }
    (out, notes)
}

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
            after_finalize: Default::default(),
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
