//! What the authority says of a table before its writes carry row images
//! ([`super::row_image`]), asked in the client's own session so that its
//! `search_path`, role and temporary tables count: which table the name
//! resolves to, its columns in order (a row image is the row's text,
//! `ROW(t.*)::text`, positional), and whether the added `RETURNING` could
//! make the client's statement fail or the image not be the whole effect.
//!
//! Also the row text itself: parsed as PostgreSQL's record input parses it,
//! and written again in the mirror's column order, as an array of the
//! mirror table's row type (`$1::t[]`), so every value goes from one
//! server's text output to the other's text input under the same session
//! settings: no JSON round trip, nothing rounded or re-spelled.

use super::row_image::MirrorTable;
use crate::backend::rows::Rows;

/// What turnout does with a table's writes in one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Row images; `note`: what they do not carry (recorded once).
    Image { note: Option<String> },
    /// Mirrored as a statement: why, and whether that is recorded (a
    /// temporary table's writes are the session's own scratch: not).
    Statement { why: String, record: bool },
}

/// The authority's answer for one table name, as one session resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    /// Schema-qualified and quoted (`pg_temp` for the session's own).
    pub name: String,
    /// The columns a row image carries, in order.
    pub columns: Vec<String>,
    pub verdict: Verdict,
}

/// Whether a table name as a statement writes it can be asked about: one
/// or two parts, nothing a session's string settings could read otherwise.
pub fn askable(table: &str) -> bool {
    !table.contains(['\\', '$', '\'', '\0']) && split_name(table).is_some_and(|p| p.len() <= 2)
}

/// The parts of a (quoted or plain) dotted name.
fn split_name(name: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = name.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    parts.push(cur);
    Some(parts)
}

/// The columns of [`check_query`]'s answer, in order.
pub const CHECK_COLUMNS: [&str; 11] = [
    "name",
    "kind",
    "can_select",
    "rls",
    "rules",
    "triggers",
    "cascades",
    "floats",
    "float_digits",
    "encoding",
    "columns",
];

/// The question, for a table name as the statement writes it (see
/// [`askable`]). One row, or none when the name resolves to nothing.
pub fn check_query(table: &str) -> String {
    format!(
        "SELECT CASE WHEN n.oid = pg_catalog.pg_my_temp_schema() THEN 'pg_temp' \
                ELSE pg_catalog.quote_ident(n.nspname) END || '.' || pg_catalog.quote_ident(c.relname) AS name, \
         c.relkind::text AS kind, \
         pg_catalog.has_table_privilege(c.oid, 'SELECT')::text AS can_select, \
         pg_catalog.row_security_active(c.oid)::text AS rls, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.ev_type <> '1')::text AS rules, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal \
                 AND t.tgenabled <> 'D')::text AS triggers, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f WHERE f.confrelid = c.oid AND f.contype = 'f' \
                 AND (f.confdeltype IN ('c', 'n', 'd') OR f.confupdtype IN ('c', 'n', 'd')))::text AS cascades, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type y ON y.oid = a.atttypid \
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 AND (a.atttypid IN (700, 701, 1021, 1022) OR y.typbasetype IN (700, 701, 1021, 1022) \
                      OR y.typelem IN (700, 701) OR y.typtype = 'c'))::text AS floats, \
         pg_catalog.current_setting('extra_float_digits') AS float_digits, \
         pg_catalog.current_setting('client_encoding') AS encoding, \
         (SELECT pg_catalog.json_agg(a.attname ORDER BY a.attnum) FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text AS columns \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = pg_catalog.to_regclass('{}')",
        table.replace('\'', "''")
    )
}

/// The [`TableCheck`] from [`check_query`]'s answer. `replica_role`: the
/// mirror applies with `session_replication_role = replica` (its foreign
/// keys' cascades do not fire there).
pub fn table_check(table: &str, rows: &Rows, replica_role: bool) -> Result<TableCheck, String> {
    // (Failing, the caller mirrors the table's writes as statements.)
    let Some(r) = rows.iter().next() else {
        return Ok(TableCheck {
            name: table.to_string(),
            columns: Vec::new(),
            verdict: Verdict::Statement {
                why: format!("{table} is not a table this session can name"),
                record: true,
            },
        });
    };
    let read = |e: crate::backend::rows::RowError| format!("{table}: the catalog's answer: {e}");
    let flag = |c: &str| r.str(c).map(|v| v == "true").map_err(read);
    let name = r.str("name").map_err(read)?.to_string();
    let columns: Vec<String> =
        serde_json::from_str(r.str("columns").map_err(read)?).unwrap_or_default();
    let kind = r.str("kind").map_err(read)?;
    let digits: i32 = r.str("float_digits").map_err(read)?.parse().unwrap_or(1);
    let encoding = r.str("encoding").map_err(read)?;
    let statement = |why: String, record: bool| Verdict::Statement { why, record };
    let verdict = if name.starts_with("pg_temp.") {
        statement(format!("{table} is a temporary table"), false)
    } else if !matches!(kind, "r" | "p") {
        statement(
            format!("{table} is a view or a foreign table: its rows are not the table's"),
            true,
        )
    } else if !flag("can_select")? {
        statement(
            format!("the session's role may not read {table}, which RETURNING needs"),
            true,
        )
    } else if flag("rls")? {
        statement(
            format!("row-level security applies to {table}: RETURNING would be held to its SELECT policies"),
            true,
        )
    } else if flag("rules")? {
        statement(
            format!("{table} has rules: its writes may go elsewhere"),
            true,
        )
    } else if digits < 1 && flag("floats")? {
        statement(
            format!("extra_float_digits = {digits} rounds the float values of {table} in the session's text"),
            true,
        )
    } else if super::text::ascii_unsafe_encoding(encoding) {
        statement(
            format!("client_encoding {encoding} cannot be read byte by byte"),
            true,
        )
    } else if flag("triggers")? {
        Verdict::Image {
            note: Some(format!(
                "{table} has triggers: what they did on the authority beyond the row written (other tables' rows, values they set after) is not in the row images, and {} {}",
                if replica_role { "they do not fire on the mirror" } else { "they fire again on the mirror" },
                "(the log source carries all of it)"
            )),
        }
    } else if replica_role && flag("cascades")? {
        Verdict::Image {
            note: Some(format!(
                "foreign keys cascade from {table}: with mirror.replica_role the mirror's cascades do not fire, so rows they change on the authority are not changed on the mirror"
            )),
        }
    } else {
        Verdict::Image { note: None }
    };
    Ok(TableCheck {
        name,
        columns,
        verdict,
    })
}

/// A row's fields from its text (`ROW(t.*)::text`), as record input reads
/// them: `None` is NULL.
pub fn parse_record(text: &[u8]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let bad = |why: &str| format!("a row image could not be read: {why}");
    let inner = text
        .strip_prefix(b"(")
        .and_then(|t| t.strip_suffix(b")"))
        .ok_or_else(|| bad("not in parentheses"))?;
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        if i >= inner.len() || inner[i] == b',' {
            fields.push(None);
        } else {
            let mut value = Vec::new();
            let mut quoted = false;
            while i < inner.len() {
                let c = inner[i];
                match c {
                    b'\\' => {
                        i += 1;
                        value.push(*inner.get(i).ok_or_else(|| bad("a trailing backslash"))?);
                    }
                    b'"' if !quoted => quoted = true,
                    b'"' if inner.get(i + 1) == Some(&b'"') => {
                        value.push(b'"');
                        i += 1;
                    }
                    b'"' => quoted = false,
                    b',' if !quoted => break,
                    c => value.push(c),
                }
                i += 1;
            }
            if quoted {
                return Err(bad("an unterminated quote"));
            }
            fields.push(Some(value));
        }
        if i >= inner.len() {
            break;
        }
        i += 1; // the comma
    }
    Ok(fields)
}

fn push_quoted(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    for &c in value {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}

/// The parameter that carries rows to the mirror: an array of the mirror
/// table's row type in text (`{"(...)","(...)"}`), each row's fields in the
/// mirror's column order, taken by name from the authority's `columns`
/// (the mirror's other columns NULL: they are not written). `Err`: a
/// column the authority's rows carry that the mirror lacks, or a row of
/// another shape than `columns`.
pub fn rows_param(
    table: &MirrorTable,
    columns: &[String],
    rows: &[Vec<Option<Vec<u8>>>],
) -> Result<Vec<u8>, String> {
    let place: Vec<Option<usize>> = table
        .order
        .iter()
        .map(|c| columns.iter().position(|o| o == c))
        .collect();
    if let Some(missing) = columns.iter().find(|c| !table.order.contains(c)) {
        return Err(format!(
            "the authority's {} has a column {missing:?} that the mirror's lacks",
            table.name
        ));
    }
    let mut out = Vec::new();
    out.push(b'{');
    for (n, row) in rows.iter().enumerate() {
        if row.len() != columns.len() {
            return Err(format!(
                "a row image of {} has {} values for {} columns",
                table.name,
                row.len(),
                columns.len()
            ));
        }
        if n > 0 {
            out.push(b',');
        }
        let mut record = vec![b'('];
        for (i, at) in place.iter().enumerate() {
            if i > 0 {
                record.push(b',');
            }
            if let Some(Some(v)) = at.map(|at| &row[at]) {
                push_quoted(&mut record, v);
            }
        }
        record.push(b')');
        push_quoted(&mut out, &record);
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_text_reads_as_postgresql_reads_it() {
        let f = parse_record(br#"(1,,"",abc,"a ""b"" \\c","(x,y)")"#).unwrap();
        assert_eq!(
            f,
            vec![
                Some(b"1".to_vec()),
                None,
                Some(Vec::new()),
                Some(b"abc".to_vec()),
                Some(br#"a "b" \c"#.to_vec()),
                Some(b"(x,y)".to_vec()),
            ]
        );
        assert_eq!(parse_record(b"()").unwrap(), vec![None]);
        assert_eq!(parse_record(b"(,)").unwrap(), vec![None, None]);
        assert!(parse_record(b"(\"open)").is_err());
        assert!(parse_record(b"1,2").is_err());
        // LATIN1 bytes pass as they are.
        assert_eq!(
            parse_record(b"(caf\xe9)").unwrap(),
            vec![Some(b"caf\xe9".to_vec())]
        );
    }

    #[test]
    fn rows_go_in_the_mirror_s_order_by_name() {
        let t = MirrorTable {
            name: "public.t".into(),
            columns: vec![
                ("id".into(), true),
                ("b".into(), false),
                ("extra".into(), false),
            ],
            generated: Vec::new(),
            order: vec!["b".into(), "id".into(), "extra".into()],
            partitioned: false,
        };
        let cols = vec!["id".to_string(), "b".to_string()];
        let rows = vec![
            vec![Some(b"1".to_vec()), Some(br#"say "hi" \o/"#.to_vec())],
            vec![Some(b"2".to_vec()), None],
        ];
        let p = rows_param(&t, &cols, &rows).unwrap();
        assert_eq!(
            String::from_utf8(p).unwrap(),
            r#"{"(\"say \\\"hi\\\" \\\\o/\",\"1\",)","(,\"2\",)"}"#
        );
        let wrong = vec!["id".to_string(), "gone".to_string()];
        assert!(rows_param(&t, &wrong, &rows)
            .unwrap_err()
            .contains("\"gone\""));
        assert!(rows_param(&t, &cols, &[vec![None]]).is_err());
    }

    #[test]
    fn names_are_asked_about_when_plain() {
        assert!(askable("t") && askable("app.\"My.T\"") && askable("\"a\"\"b\""));
        assert!(!askable("db.app.t") && !askable("t$x") && !askable("a\\b"));
        assert!(check_query("\"o'k\"").contains("to_regclass('\"o''k\"')"));
    }
}
