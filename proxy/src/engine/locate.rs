//! Where a divergence lies, for its record in the divergence log: the table
//! a write targets and, when the statement names its rows by equality
//! (`WHERE aid = 7`), those columns and values as the row key.
//!
//! Works from the messages sent to the mirror (a simple Query, or Parse and
//! Bind with text parameters), so it serves every path that records.

use super::fingerprint::cut;
use sqlparser::ast::{
    BinaryOperator, CopySource, Expr, FromTable, Statement, TableFactor, TableObject,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Longest statement text kept in a record.
const MAX_STATEMENT: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub table: Option<String>,
    pub key: Option<String>,
    /// The statement as sent (parameters listed after it), cut at 4 KiB.
    pub statement: Option<String>,
}

/// The location of the first statement among `msgs` (PostgreSQL frontend
/// messages). Unreadable input gives an empty location.
pub fn locate(msgs: &[u8]) -> Location {
    let Some((sql, params)) = first_statement(msgs) else {
        return Location::default();
    };
    let mut loc = Location {
        statement: Some(cut(
            if params.is_empty() {
                sql.clone()
            } else {
                let listed: Vec<String> = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| match p {
                        Some(v) => format!("${}='{}'", i + 1, v.replace('\'', "''")),
                        None => format!("${}=NULL", i + 1),
                    })
                    .collect();
                format!("{sql} -- {}", listed.join(", "))
            },
            MAX_STATEMENT,
        )),
        ..Location::default()
    };
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, &sql) else {
        return loc;
    };
    let Some(statement) = statements.iter().find(|s| {
        !matches!(
            s,
            Statement::StartTransaction { .. } | Statement::Commit { .. }
        )
    }) else {
        return loc;
    };
    let (table, selection) = match statement {
        Statement::Insert(i) => match &i.table {
            TableObject::TableName(name) => (Some(name.to_string()), None),
            _ => (None, None),
        },
        Statement::Update(u) => (table_name(&u.table.relation), u.selection.as_ref()),
        Statement::Delete(d) => {
            let from = match &d.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            (
                from.first().and_then(|t| table_name(&t.relation)),
                d.selection.as_ref(),
            )
        }
        Statement::Copy {
            source: CopySource::Table { table_name, .. },
            ..
        } => (Some(table_name.to_string()), None),
        Statement::Truncate(t) => (t.table_names.first().map(|t| t.name.to_string()), None),
        _ => (None, None),
    };
    loc.table = table;
    if let Some(selection) = selection {
        let mut pairs = Vec::new();
        equalities(selection, &params, &mut pairs);
        if !pairs.is_empty() {
            loc.key = Some(pairs.join(", "));
        }
    }
    loc
}

fn table_name(f: &TableFactor) -> Option<String> {
    match f {
        TableFactor::Table { name, .. } => Some(name.to_string()),
        _ => None,
    }
}

/// `column = value` conjuncts of a WHERE clause, placeholders filled in.
fn equalities(e: &Expr, params: &[Option<String>], out: &mut Vec<String>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            equalities(left, params, out);
            equalities(right, params, out);
        }
        Expr::Nested(inner) => equalities(inner, params, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let (column, value) = match (left.as_ref(), right.as_ref()) {
                (c @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_)), Expr::Value(v))
                | (Expr::Value(v), c @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_))) => {
                    (c.to_string(), v.to_string())
                }
                _ => return,
            };
            let value = match value
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => match params.get(n.wrapping_sub(1)) {
                    Some(Some(v)) => format!("'{}'", v.replace('\'', "''")),
                    Some(None) => "NULL".to_string(),
                    None => value,
                },
                None => value,
            };
            out.push(format!("{column}={value}"));
        }
        _ => {}
    }
}

/// The SQL of the first Query or Parse message, with the parameters of the
/// first Bind after a Parse (text format only; binary ones are listed as
/// their size).
fn first_statement(msgs: &[u8]) -> Option<(String, Vec<Option<String>>)> {
    let mut rest = msgs;
    let mut sql: Option<String> = None;
    while rest.len() >= 5 {
        let tag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len < 4 || rest.len() < 1 + len {
            break;
        }
        let body = &rest[5..1 + len];
        rest = &rest[1 + len..];
        match tag {
            b'Q' if sql.is_none() => {
                let text = cstr(body)?.0;
                // Wrapping statements turnout adds are not the write.
                let trimmed = text.trim().trim_end_matches(';').to_ascii_uppercase();
                if trimmed == "BEGIN" || trimmed == "COMMIT" {
                    continue;
                }
                return Some((text.to_string(), Vec::new()));
            }
            b'P' if sql.is_none() => {
                let (_, after) = cstr(body)?;
                sql = Some(cstr(after)?.0.to_string());
            }
            b'B' if sql.is_some() => {
                return Some((sql?, bind_params(body).unwrap_or_default()));
            }
            _ => {}
        }
    }
    sql.map(|s| (s, Vec::new()))
}

fn bind_params(body: &[u8]) -> Option<Vec<Option<String>>> {
    let (_, rest) = cstr(body)?;
    let (_, rest) = cstr(rest)?;
    param_texts(rest)
}

/// The values of a Bind's parameter section (format codes, count, values)
/// as text; binary ones are listed by size.
pub fn param_texts(rest: &[u8]) -> Option<Vec<Option<String>>> {
    let n_formats = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let formats: Vec<u16> = (0..n_formats)
        .map(|i| {
            let at = 2 + 2 * i;
            rest.get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        })
        .collect::<Option<_>>()?;
    let mut rest = rest.get(2 + 2 * n_formats..)?;
    let n = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    rest = &rest[2..];
    let mut out = Vec::with_capacity(n.min(64));
    for i in 0..n {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
            continue;
        }
        let value = rest.get(..len as usize)?;
        rest = &rest[len as usize..];
        let binary = match formats.len() {
            0 => false,
            1 => formats[0] == 1,
            _ => formats.get(i) == Some(&1),
        };
        out.push(Some(if binary {
            format!("<{} bytes, binary>", value.len())
        } else {
            String::from_utf8_lossy(value).into_owned()
        }));
    }
    Some(out)
}

fn cstr(b: &[u8]) -> Option<(&str, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((std::str::from_utf8(&b[..end]).ok()?, &b[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn q(sql: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(b'Q');
        b.put_u32((sql.len() + 5) as u32);
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
        b.to_vec()
    }

    #[test]
    fn update_and_delete_give_table_and_key() {
        let mut msgs = q("BEGIN");
        msgs.extend(q(
            "UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 83910 AND bid = 2",
        ));
        msgs.extend(q("COMMIT"));
        let l = locate(&msgs);
        assert_eq!(l.table.as_deref(), Some("pgbench_accounts"));
        assert_eq!(l.key.as_deref(), Some("aid=83910, bid=2"));
        assert!(l.statement.unwrap().starts_with("UPDATE pgbench_accounts"));
        let l = locate(&q("DELETE FROM orders WHERE id = 'a''b'"));
        assert_eq!(l.table.as_deref(), Some("orders"));
        assert_eq!(l.key.as_deref(), Some("id='a''b'"));
        let l = locate(&q("INSERT INTO events VALUES (1, 'x')"));
        assert_eq!((l.table.as_deref(), l.key), (Some("events"), None));
    }

    #[test]
    fn extended_protocol_parameters_fill_the_key() {
        let mut b = BytesMut::new();
        let sql = "UPDATE t SET v = $2 WHERE id = $1";
        let mut body = BytesMut::new();
        body.put_slice(b"s1\0");
        body.put_slice(sql.as_bytes());
        body.put_u8(0);
        body.put_u16(0);
        b.put_u8(b'P');
        b.put_u32((body.len() + 4) as u32);
        b.put_slice(&body);
        let mut bind = BytesMut::new();
        bind.put_slice(b"\0s1\0");
        bind.put_u16(0);
        bind.put_u16(2);
        bind.put_i32(2);
        bind.put_slice(b"42");
        bind.put_i32(-1);
        bind.put_u16(0);
        b.put_u8(b'B');
        b.put_u32((bind.len() + 4) as u32);
        b.put_slice(&bind);
        let l = locate(&b);
        assert_eq!(l.table.as_deref(), Some("t"));
        assert_eq!(l.key.as_deref(), Some("id='42'"));
        assert_eq!(
            l.statement.as_deref(),
            Some("UPDATE t SET v = $2 WHERE id = $1 -- $1='42', $2=NULL")
        );
    }

    #[test]
    fn garbage_gives_an_empty_location() {
        assert_eq!(locate(b"\xff\xff\xff\xff\xff\xff"), Location::default());
        assert_eq!(locate(b"Q\0\0\0\x02"), Location::default());
        let l = locate(&q("NOT SQL AT ALL"));
        assert_eq!((l.table, l.key), (None, None));
    }
}
