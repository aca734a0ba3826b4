//! Rows of a table the `[mapping]` renames or reshapes: the log's row
//! events decoded (`mysql_common`), each row written as a statement on new
//! through the mapping (its table's and columns' names there, dropped
//! columns left out, computed columns evaluated from the row), keyed by
//! the primary key. Column names, signedness and character sets come from
//! old's catalog (the log carries positions).
//!
//! Values travel as the server logged them: strings as their bytes in the
//! column's character set (`CONVERT(X'..' USING cs)`), binary as hex,
//! floats with every digit (`{:e}` of the exact double), decimals and
//! temporals as their text.

use crate::backend::mysql::rows;
use crate::mapping::rows::RowMap;
use crate::wire::my_packet::Packets;
use mysql_common::binlog::events::{EventData, RowsEventData, TableMapEvent};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::value::Value;

/// One column of old's table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `int`, `varchar`, `decimal`, ... (lower-case).
    pub data_type: String,
    pub unsigned: bool,
    pub charset: Option<String>,
    pub key: bool,
}

/// old's columns of `db`.`table`, in their order.
pub async fn columns(conn: &mut Packets, db: &str, table: &str) -> Result<Vec<Column>, String> {
    let q = format!(
        "SELECT COLUMN_NAME AS n, DATA_TYPE AS t, COLUMN_TYPE AS ct, CHARACTER_SET_NAME AS cs, COLUMN_KEY AS k \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{}' ORDER BY ORDINAL_POSITION",
        db.replace('\'', "''"),
        table.replace('\'', "''")
    );
    let r = rows(conn, &q).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in r.iter() {
        let text = |c: &str| row.text(c).ok().flatten().unwrap_or_default().to_string();
        out.push(Column {
            name: text("n"),
            data_type: text("t").to_lowercase(),
            unsigned: text("ct").to_lowercase().contains("unsigned"),
            charset: row.text("cs").ok().flatten().map(str::to_string),
            key: text("k") == "PRI",
        });
    }
    if out.is_empty() {
        return Err(format!("{db}.{table} is not in old's catalog"));
    }
    Ok(out)
}

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2 + 3);
    s.push_str("X'");
    for b in bytes {
        s.push_str(&format!("{b:02X}"));
    }
    s.push('\'');
    s
}

/// `v` of `column` as a SQL literal.
pub fn literal(column: &Column, v: &BinlogValue<'_>) -> Result<String, String> {
    let v = match v {
        BinlogValue::Value(v) => v,
        _ => {
            return Err(format!(
                "{}: a binary JSON value (MySQL's) is not applied through the mapping",
                column.name
            ))
        }
    };
    let bits = |t: &str| match t {
        "tinyint" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" | "integer" => 32,
        _ => 64,
    };
    Ok(match v {
        Value::NULL => "NULL".into(),
        Value::Int(i) if column.unsigned && *i < 0 => {
            let b = bits(&column.data_type);
            if b == 64 {
                format!("{}", *i as u64)
            } else {
                format!("{}", (*i as i128) + (1i128 << b))
            }
        }
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => format!("{:e}", f64::from(*f)),
        Value::Double(d) => format!("{d:e}"),
        Value::Bytes(b) => match (column.data_type.as_str(), &column.charset) {
            ("decimal" | "numeric", _) => format!("'{}'", String::from_utf8_lossy(b)),
            (_, Some(cs)) => format!("CONVERT({} USING {cs})", hex(b)),
            _ => hex(b),
        },
        other => other.as_sql(true),
    })
}

/// The statements that apply a rows event of a mapped table on the
/// target: `db`.`map.table`, old's `columns` named through `map`.
pub fn statements(
    data: &EventData<'_>,
    tme: &TableMapEvent<'_>,
    columns: &[Column],
    map: &RowMap,
    db: &str,
    target_columns: &std::collections::HashSet<String>,
) -> Result<Vec<String>, String> {
    let EventData::RowsEvent(re) = data else {
        return Err("not a rows event".into());
    };
    if tme.columns_count() as usize != columns.len() {
        return Err(format!(
            "the log's row has {} columns, old's catalog {} (its table changed since)",
            tme.columns_count(),
            columns.len()
        ));
    }
    let target = format!("{}.{}", ident(db), ident(&map.table));
    let mut out = Vec::new();
    for row in re.rows(tme) {
        let (before, after) =
            row.map_err(|e| format!("a row of the log could not be read: {e}"))?;
        let values =
            |r: Option<mysql_common::binlog::row::BinlogRow>| -> Result<Vec<String>, String> {
                let Some(r) = r else { return Ok(Vec::new()) };
                let vals = r.unwrap();
                columns
                    .iter()
                    .zip(vals.iter())
                    .map(|(c, v)| literal(c, v))
                    .collect()
            };
        let (before, after) = (values(before)?, values(after)?);
        let set = |vals: &[String]| -> Result<Vec<(String, String)>, String> {
            let mut pairs: Vec<(String, String)> = columns
                .iter()
                .zip(vals)
                .filter_map(|(c, v)| map.column(&c.name).map(|n| (n, v.clone())))
                // (A column the target does not have is not written.)
                .filter(|(n, _)| target_columns.contains(&n.to_lowercase()))
                .map(|(n, v)| (ident(&n), v))
                .collect();
            for (name, sql) in map.computed_sql(|col| {
                columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(col))
                    .and_then(|i| vals.get(i).cloned())
            }) {
                pairs.push((ident(&name), sql?));
            }
            Ok(pairs)
        };
        let key = |vals: &[String]| -> Result<String, String> {
            let keyed: Vec<(&Column, &String)> =
                columns.iter().zip(vals).filter(|(c, _)| c.key).collect();
            let keyed_only = !keyed.is_empty();
            let chosen: Vec<(&Column, &String)> = if keyed.is_empty() {
                columns.iter().zip(vals).collect()
            } else {
                keyed
            };
            let mut parts = Vec::new();
            for (c, v) in chosen {
                let Some(n) = map
                    .column(&c.name)
                    .filter(|n| target_columns.contains(&n.to_lowercase()))
                else {
                    if keyed_only {
                        return Err(format!("key column {} is not on the target", c.name));
                    }
                    continue;
                };
                parts.push(format!("{} <=> {v}", ident(&n)));
            }
            Ok(parts.join(" AND "))
        };
        match re {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                let pairs = set(&after)?;
                out.push(format!(
                    "INSERT INTO {target} ({}) VALUES ({})",
                    pairs
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    pairs
                        .iter()
                        .map(|(_, v)| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => {
                let pairs = set(&after)?;
                out.push(format!(
                    "UPDATE {target} SET {} WHERE {} LIMIT 1",
                    pairs
                        .iter()
                        .map(|(n, v)| format!("{n} = {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    key(&before)?
                ));
            }
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                out.push(format!(
                    "DELETE FROM {target} WHERE {} LIMIT 1",
                    key(&before)?
                ));
            }
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(
                    "a partial JSON update (MySQL's) is not applied through the mapping".into(),
                )
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: &str, unsigned: bool, cs: Option<&str>) -> Column {
        Column {
            name: "c".into(),
            data_type: t.into(),
            unsigned,
            charset: cs.map(str::to_string),
            key: false,
        }
    }

    #[test]
    fn values_are_written_exactly() {
        let v = |x: Value| BinlogValue::Value(x);
        assert_eq!(
            literal(&col("int", true, None), &v(Value::Int(-1))).unwrap(),
            "4294967295"
        );
        assert_eq!(
            literal(&col("bigint", true, None), &v(Value::Int(-1))).unwrap(),
            "18446744073709551615"
        );
        assert_eq!(
            literal(&col("double", false, None), &v(Value::Double(1e-300))).unwrap(),
            "1e-300"
        );
        assert_eq!(
            literal(&col("float", false, None), &v(Value::Float(0.1)))
                .unwrap()
                .parse::<f64>()
                .unwrap() as f32,
            0.1f32
        );
        assert_eq!(
            literal(
                &col("varchar", false, Some("latin1")),
                &v(Value::Bytes(vec![0xe9, b'\'']))
            )
            .unwrap(),
            "CONVERT(X'E927' USING latin1)"
        );
        assert_eq!(
            literal(
                &col("decimal", false, None),
                &v(Value::Bytes(b"-3.50".to_vec()))
            )
            .unwrap(),
            "'-3.50'"
        );
        assert_eq!(
            literal(&col("blob", false, None), &v(Value::Bytes(vec![0, 1]))).unwrap(),
            "X'0001'"
        );
        assert_eq!(
            literal(&col("int", false, None), &v(Value::NULL)).unwrap(),
            "NULL"
        );
    }
}
