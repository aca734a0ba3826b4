//! Same values for server-generated columns: an INSERT that leaves a column
//! to a volatile default (`serial`/identity ids, `DEFAULT now()`,
//! `DEFAULT gen_random_uuid()`) is rewritten so that the authority evaluates
//! those defaults first and both sides insert the same explicit values.
//!
//! The engine asks the authority's catalog which columns have such defaults
//! ([`catalog_query`]), evaluates them once per row ([`InsertPlan::values_query`],
//! inside the write's transaction) and sends both sides [`InsertPlan::apply`]'s text.

use crate::backend::rows::Rows;
use sqlparser::ast::{Expr, Ident, InsertOverriding, ObjectName, SetExpr, Statement, TableObject};
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::{Parser, ParserOptions};

/// A column whose default must be evaluated once, on the authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDefault {
    pub column: String,
    /// The default as SQL (`nextval('t_id_seq'::regclass)`, `now()`, ...).
    pub expr: String,
    /// `GENERATED ALWAYS AS IDENTITY`: explicit values need OVERRIDING SYSTEM VALUE.
    pub identity_always: bool,
}

/// The catalog's answer for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDefaults {
    pub volatile: Vec<ColumnDefault>,
}

const VOLATILE: &[&str] = &[
    "nextval(",
    "now()",
    "current_timestamp",
    "localtimestamp",
    "current_date",
    "current_time",
    "localtime",
    "clock_timestamp(",
    "statement_timestamp(",
    "transaction_timestamp(",
    "timeofday(",
    "random(",
    "gen_random_uuid(",
    "uuid_generate_v",
];

/// True when a default expression gives a different value per call or per
/// transaction.
pub fn is_volatile(expr: &str) -> bool {
    let e = expr.to_ascii_lowercase();
    VOLATILE.iter().any(|v| e.contains(v))
}

/// SQL listing `table`'s columns with defaults or identity, as
/// (name, default expression, attidentity). `table` is the name as written
/// in the statement.
pub fn catalog_query(table: &str) -> String {
    let literal = table.replace('\'', "''");
    format!(
        "SELECT a.attname::text AS column_name, \
                COALESCE(pg_get_expr(d.adbin, d.adrelid), \
                         format('nextval(%L::regclass)', pg_get_serial_sequence(a.attrelid::regclass::text, a.attname))) \
                  AS default_expr, \
                a.attidentity::text AS identity \
         FROM pg_attribute a \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = to_regclass('{literal}') AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attgenerated = '' AND (d.adbin IS NOT NULL OR a.attidentity <> '') \
         ORDER BY a.attnum"
    )
}

/// The columns of [`catalog_query`]'s and [`mysql_catalog_query`]'s
/// answers, by name.
pub const CATALOG_COLUMNS: [&str; 3] = ["column_name", "default_expr", "identity"];

/// Reads the rows of [`catalog_query`].
pub fn from_catalog_rows(rows: &Rows) -> TableDefaults {
    let volatile = rows
        .iter()
        .filter_map(|r| {
            let column = r.str("column_name").ok()?.to_string();
            let expr = r.str("default_expr").ok()?.to_string();
            let identity = r.text("identity").ok().flatten().unwrap_or_default();
            (is_volatile(&expr) || !identity.is_empty()).then_some(ColumnDefault {
                column,
                expr,
                identity_always: identity == "a",
            })
        })
        .collect();
    TableDefaults { volatile }
}

/// MySQL/MariaDB column defaults that statement context (`SET TIMESTAMP`,
/// `SET INSERT_ID`) does not make the same on the mirror.
const MYSQL_VOLATILE: &[&str] = &[
    "uuid(",
    "uuid_short(",
    "rand(",
    "sysdate(",
    "random_bytes(",
    "sys_guid(",
    "connection_id(",
];

/// SQL listing a MySQL/MariaDB table's columns with a default expression,
/// as (name, default, ''). `table` is the name as written in the statement
/// (`t`, `` `t` ``, `db.t`).
pub fn mysql_catalog_query(table: &str) -> String {
    let parts: Vec<String> = table
        .split('.')
        .map(|p| {
            p.trim()
                .trim_matches('`')
                .replace('\\', "\\\\")
                .replace('\'', "''")
        })
        .collect();
    let (schema, name) = match parts.as_slice() {
        [schema, name] => (format!("'{schema}'"), name.clone()),
        _ => (
            "DATABASE()".to_string(),
            parts.last().cloned().unwrap_or_default(),
        ),
    };
    format!(
        "SELECT COLUMN_NAME AS column_name, COLUMN_DEFAULT AS default_expr, '' AS identity \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = {schema} AND TABLE_NAME = '{name}' AND COLUMN_DEFAULT IS NOT NULL \
         ORDER BY ORDINAL_POSITION"
    )
}

/// Reads the rows of [`mysql_catalog_query`]: the columns whose default
/// differs per call.
pub fn mysql_from_catalog_rows(rows: &Rows) -> TableDefaults {
    let volatile = rows
        .iter()
        .filter_map(|r| {
            let column = r.str("column_name").ok()?.to_string();
            let expr = r.str("default_expr").ok()?.to_string();
            let lower = expr.to_ascii_lowercase();
            MYSQL_VOLATILE
                .iter()
                .any(|v| lower.contains(v))
                .then_some(ColumnDefault {
                    column,
                    expr,
                    identity_always: false,
                })
        })
        .collect();
    TableDefaults { volatile }
}

fn parse_one(sql: &str, mysql: bool) -> Option<Statement> {
    let mut statements = if mysql {
        // Literals kept as written: unescaped and printed again, MySQL's
        // backslash escapes would change the client's values.
        Parser::new(&MySqlDialect {})
            .with_options(ParserOptions::new().with_unescape(false))
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statements())
            .ok()?
    } else {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?
    };
    (statements.len() == 1).then(|| statements.remove(0))
}

/// The target table of a single INSERT statement, as written.
pub fn insert_target(sql: &str) -> Option<String> {
    match parse_one(sql, false)? {
        Statement::Insert(insert) => match &insert.table {
            TableObject::TableName(name) => Some(name.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// What to evaluate on the authority before an INSERT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertPlan {
    pub missing: Vec<ColumnDefault>,
    pub rows: usize,
    /// MySQL/MariaDB syntax (else PostgreSQL's).
    pub mysql: bool,
}

/// Why an INSERT's generated values cannot be made the same on both sides.
pub const UNSAFE_INSERT_SELECT: &str =
    "INSERT ... SELECT leaves columns to volatile defaults; their values may differ on the mirror";

/// Plans `sql` (one INSERT) against its table's defaults: `Ok(None)` when no
/// volatile default is left to the server.
pub fn plan(sql: &str, defaults: &TableDefaults) -> Result<Option<InsertPlan>, &'static str> {
    plan_in(sql, defaults, false)
}

/// [`plan`] for a MySQL/MariaDB INSERT.
pub fn plan_mysql(sql: &str, defaults: &TableDefaults) -> Result<Option<InsertPlan>, &'static str> {
    plan_in(sql, defaults, true)
}

fn plan_in(
    sql: &str,
    defaults: &TableDefaults,
    mysql: bool,
) -> Result<Option<InsertPlan>, &'static str> {
    if defaults.volatile.is_empty() {
        return Ok(None);
    }
    let Some(Statement::Insert(insert)) = parse_one(sql, mysql) else {
        return Ok(None);
    };
    let named: Vec<String> = insert
        .columns
        .iter()
        .map(|c| {
            c.to_string()
                .trim_matches(|c| c == '"' || c == '`')
                .to_string()
        })
        .collect();
    if named.is_empty() {
        // No column list: every column is given (or DEFAULT VALUES).
        return if insert.source.is_none() {
            Err("INSERT ... DEFAULT VALUES leaves columns to volatile defaults; their values may differ on the mirror")
        } else {
            Ok(None)
        };
    }
    let missing: Vec<ColumnDefault> = defaults
        .volatile
        .iter()
        .filter(|d| !named.iter().any(|n| n == &d.column))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    match insert.source.as_deref().map(|q| &*q.body) {
        Some(SetExpr::Values(values)) => Ok(Some(InsertPlan {
            missing,
            rows: values.rows.len(),
            mysql,
        })),
        _ => Err(UNSAFE_INSERT_SELECT),
    }
}

impl InsertPlan {
    /// The columns left to their defaults, for a message: `id, made_at`.
    pub fn missing_columns(&self) -> String {
        self.missing
            .iter()
            .map(|d| d.column.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Evaluates the missing defaults once per row, in row order.
    pub fn values_query(&self) -> String {
        if self.mysql {
            // Each row's own call (RAND() and UUID() differ per row).
            let row: Vec<String> = self
                .missing
                .iter()
                .map(|d| format!("CAST(({}) AS CHAR)", d.expr))
                .collect();
            let row = format!("SELECT {}", row.join(", "));
            return vec![row; self.rows].join(" UNION ALL ");
        }
        let exprs: Vec<String> = self
            .missing
            .iter()
            .map(|d| format!("({})::text", d.expr))
            .collect();
        format!(
            "SELECT {} FROM generate_series(1, {}) AS turnout_row ORDER BY turnout_row",
            exprs.join(", "),
            self.rows
        )
    }

    /// The INSERT with the evaluated values as explicit columns.
    pub fn apply(&self, sql: &str, values: &[Vec<Option<String>>]) -> Result<String, String> {
        let Some(Statement::Insert(mut insert)) = parse_one(sql, self.mysql) else {
            return Err("the INSERT no longer parses".into());
        };
        if values.len() != self.rows || values.iter().any(|r| r.len() != self.missing.len()) {
            return Err(format!(
                "expected {} rows of {} generated values, got {}",
                self.rows,
                self.missing.len(),
                values.len()
            ));
        }
        let (pg, my) = (PostgreSqlDialect {}, MySqlDialect {});
        let literal = |v: &Option<String>| -> Result<Expr, String> {
            let text = match v {
                Some(s) if self.mysql => {
                    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
                }
                Some(s) => format!("'{}'", s.replace('\'', "''")),
                None => "NULL".to_string(),
            };
            let parser = if self.mysql {
                Parser::new(&my).with_options(ParserOptions::new().with_unescape(false))
            } else {
                Parser::new(&pg)
            };
            parser
                .try_with_sql(&text)
                .and_then(|mut p| p.parse_expr())
                .map_err(|e| e.to_string())
        };
        let quote = if self.mysql { '`' } else { '"' };
        for d in &self.missing {
            insert.columns.push(ObjectName::from(vec![Ident::with_quote(
                quote,
                d.column.clone(),
            )]));
        }
        if self.missing.iter().any(|d| d.identity_always) {
            insert.overriding = Some(InsertOverriding::System);
        }
        let Some(SetExpr::Values(rows)) = insert.source.as_deref_mut().map(|q| &mut *q.body) else {
            return Err("the INSERT has no VALUES list".into());
        };
        for (row, generated) in rows.rows.iter_mut().zip(values) {
            for v in generated {
                row.content.push(literal(v)?);
            }
        }
        Ok(Statement::Insert(insert).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TableDefaults {
        from_catalog_rows(&catalog(vec![
            vec![
                Some("id".into()),
                Some("nextval('orders_id_seq'::regclass)".into()),
                Some("".into()),
            ],
            vec![
                Some("placed_at".into()),
                Some("now()".into()),
                Some("".into()),
            ],
            vec![
                Some("status".into()),
                Some("'new'::text".into()),
                Some("".into()),
            ],
        ]))
    }

    fn catalog(data: Vec<Vec<Option<String>>>) -> Rows {
        Rows::new(CATALOG_COLUMNS.map(String::from).to_vec(), data)
    }

    #[test]
    fn only_volatile_defaults_are_kept() {
        let d = defaults();
        let names: Vec<_> = d.volatile.iter().map(|c| c.column.as_str()).collect();
        assert_eq!(names, vec!["id", "placed_at"]);
    }

    #[test]
    fn a_values_insert_gets_the_generated_columns() {
        let sql = "INSERT INTO orders (customer_id, amount) VALUES (1, 10), (2, 20) RETURNING id";
        let plan = plan(sql, &defaults()).unwrap().expect("a plan");
        assert_eq!(plan.rows, 2);
        assert_eq!(
            plan.values_query(),
            "SELECT (nextval('orders_id_seq'::regclass))::text, (now())::text FROM generate_series(1, 2) AS turnout_row ORDER BY turnout_row"
        );
        let values = vec![
            vec![Some("41".into()), Some("2026-11-24 23:00:00+00".into())],
            vec![Some("42".into()), Some("2026-11-24 23:00:00+00".into())],
        ];
        assert_eq!(
            plan.apply(sql, &values).unwrap(),
            "INSERT INTO orders (customer_id, amount, \"id\", \"placed_at\") VALUES (1, 10, '41', '2026-11-24 23:00:00+00'), (2, 20, '42', '2026-11-24 23:00:00+00') RETURNING id"
        );
    }

    #[test]
    fn inserts_that_name_every_generated_column_are_left_alone() {
        let sql = "INSERT INTO orders (id, placed_at, customer_id) VALUES (1, now(), 2)";
        assert_eq!(plan(sql, &defaults()), Ok(None));
        assert_eq!(plan(sql, &TableDefaults::default()), Ok(None));
    }

    #[test]
    fn insert_select_with_generated_columns_is_unsafe() {
        let sql = "INSERT INTO orders (customer_id) SELECT id FROM customers";
        assert_eq!(plan(sql, &defaults()), Err(UNSAFE_INSERT_SELECT));
    }

    #[test]
    fn identity_always_gets_overriding_system_value() {
        let d = from_catalog_rows(&catalog(vec![vec![
            Some("id".into()),
            Some("nextval('t_id_seq'::regclass)".into()),
            Some("a".into()),
        ]]));
        let sql = "INSERT INTO t (x) VALUES ('it''s')";
        let plan = plan(sql, &d).unwrap().unwrap();
        let out = plan.apply(sql, &[vec![Some("7".into())]]).unwrap();
        assert_eq!(
            out,
            "INSERT INTO t (x, \"id\") OVERRIDING SYSTEM VALUE VALUES ('it''s', '7')"
        );
        assert!(plan.apply(sql, &[]).is_err());
    }

    #[test]
    fn mysql_volatile_defaults_are_evaluated_once_per_row() {
        let d = mysql_from_catalog_rows(&catalog(vec![
            vec![Some("id".into()), Some("uuid()".into()), Some("".into())],
            vec![
                Some("made".into()),
                Some("current_timestamp()".into()),
                Some("".into()),
            ],
            vec![Some("score".into()), Some("rand()".into()), Some("".into())],
            vec![Some("status".into()), Some("'new'".into()), Some("".into())],
        ]));
        let names: Vec<_> = d.volatile.iter().map(|c| c.column.as_str()).collect();
        // CURRENT_TIMESTAMP is made the same by SET TIMESTAMP.
        assert_eq!(names, vec!["id", "score"]);
        let sql = r"INSERT INTO `t` (`note`) VALUES ('a\\b'), ('it''s \'q\'')";
        let plan = plan_mysql(sql, &d).unwrap().expect("a plan");
        assert_eq!(
            plan.values_query(),
            "SELECT CAST((uuid()) AS CHAR), CAST((rand()) AS CHAR) UNION ALL SELECT CAST((uuid()) AS CHAR), CAST((rand()) AS CHAR)"
        );
        let out = plan
            .apply(
                sql,
                &[
                    vec![Some("u-1".into()), Some("0.25".into())],
                    vec![Some("u'2".into()), Some("0.5".into())],
                ],
            )
            .unwrap();
        assert_eq!(
            out,
            r"INSERT INTO `t` (`note`, `id`, `score`) VALUES ('a\\b', 'u-1', '0.25'), ('it''s \'q\'', 'u''2', '0.5')"
        );
        assert_eq!(
            plan_mysql("INSERT INTO t (id, score) VALUES (1, 2)", &d),
            Ok(None)
        );
        assert!(mysql_catalog_query("app.`it's`")
            .contains("TABLE_SCHEMA = 'app' AND TABLE_NAME = 'it''s'"));
        assert!(mysql_catalog_query("t").contains("TABLE_SCHEMA = DATABASE()"));
    }

    #[test]
    fn target_and_catalog_query() {
        assert_eq!(
            insert_target("INSERT INTO app.\"Orders\" (a) VALUES (1)").as_deref(),
            Some("app.\"Orders\"")
        );
        assert_eq!(insert_target("UPDATE t SET a = 1"), None);
        assert!(catalog_query("o'brien").contains("to_regclass('o''brien')"));
    }
}
