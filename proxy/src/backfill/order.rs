//! The order tables are copied in: a referenced table before the tables
//! that reference it, so new's foreign keys hold row by row.

use super::sql::{Conn, Dialect, TableShape};
use tracing::warn;
use turnout_control::Side;

/// `tables` in an order that copies a referenced table before the tables
/// referencing it (`edges`: child, parent), by name otherwise; tables in a
/// cycle of foreign keys keep their name order.
pub fn foreign_key_order(tables: Vec<TableShape>, edges: &[(String, String)]) -> Vec<TableShape> {
    let mut left: Vec<TableShape> = tables;
    left.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let names: std::collections::HashSet<&str> = left.iter().map(|t| t.name.as_str()).collect();
        let ready = left.iter().position(|t| {
            !edges.iter().any(|(child, parent)| {
                child == &t.name && parent != &t.name && names.contains(parent.as_str())
            })
        });
        // A cycle: the first by name goes (new's constraints decide).
        out.push(left.remove(ready.unwrap_or(0)));
    }
    out
}

/// `side`'s foreign keys between its tables (child, parent); none when
/// its catalog cannot be read (said in the log).
pub(crate) async fn foreign_keys(conn: &mut Conn, d: Dialect, side: Side) -> Vec<(String, String)> {
    match conn.query(d.foreign_keys_query(), side).await {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.str("child").ok()?.to_string(),
                    r.str("parent").ok()?.to_string(),
                ))
            })
            .collect(),
        Err(e) => {
            warn!(%side, error = %e, "foreign keys could not be read: tables go by name");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referenced_tables_are_copied_first() {
        let shape = |n: &str| TableShape {
            name: n.into(),
            columns: vec!["id".into()],
            key: vec!["id".into()],
            estimated_rows: 0,
        };
        let edges = [
            ("orders".to_string(), "users".to_string()),
            ("items".to_string(), "orders".to_string()),
            ("a".to_string(), "b".to_string()),
            ("b".to_string(), "a".to_string()),
        ];
        let order: Vec<String> = foreign_key_order(
            ["items", "orders", "users", "a", "b", "zz"]
                .map(shape)
                .to_vec(),
            &edges,
        )
        .into_iter()
        .map(|t| t.name)
        .collect();
        assert_eq!(order, ["users", "orders", "items", "zz", "a", "b"]);
    }
}
