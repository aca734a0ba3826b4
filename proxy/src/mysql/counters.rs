//! Auto-increment catch-up for a writes flip over MySQL: each table's
//! counter on the side taking over is raised to the other side's when that
//! is further along, so the next generated id is new on both sides.

use super::packet::Packets;
use super::response::{self, lenenc, Expect};
use super::session::{connect, own_caps};
use crate::backend::catch_up::{Apply, CatchUp};
use crate::server::Shared;
use turnout_control::Side;

/// utf8mb4_general_ci
const COLLATION: u8 = 45;

/// Raises the auto-increment counters of `to` past those of `from`.
/// Runs inside a writes flip's barrier (no transaction open).
pub async fn catch_up(
    shared: &Shared,
    from: Side,
    to: Side,
    apply: Apply,
) -> Result<CatchUp, String> {
    let sql = "SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES \
               WHERE TABLE_SCHEMA = DATABASE() AND AUTO_INCREMENT IS NOT NULL";
    let mut src = open(shared, from).await?;
    let theirs = rows(&mut src, sql)
        .await
        .map_err(|e| format!("on {from}: {e}"))?;
    let mut dst = open(shared, to).await?;
    let ours: std::collections::HashMap<String, u64> = rows(&mut dst, sql)
        .await
        .map_err(|e| format!("on {to}: {e}"))?
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.as_deref()?.parse().ok()?)))
        .collect();
    let mut done = CatchUp {
        seen: theirs.len(),
        ..CatchUp::default()
    };
    let mapping = shared.mapping.load();
    for r in theirs {
        let (Some(Some(table)), Some(Some(value))) = (r.first(), r.get(1)) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        // A renamed table's counter is the same counter under new's name.
        let table = &mapping.counterpart(table, from);
        match ours.get(table) {
            None => done.missing.push(table.clone()),
            Some(&mine) if mine < value => {
                let alter = format!(
                    "ALTER TABLE `{}` AUTO_INCREMENT = {value}",
                    table.replace('`', "``")
                );
                if apply == Apply::Move {
                    rows(&mut dst, &alter)
                        .await
                        .map_err(|e| format!("on {to}: {e}"))?;
                }
                done.moved.push((table.clone(), value.to_string()));
            }
            Some(_) => {}
        }
    }
    Ok(done)
}

pub(crate) async fn open(shared: &Shared, side: Side) -> Result<Packets, String> {
    connect(shared, shared.target(side), own_caps(), COLLATION, None)
        .await
        .map(|(conn, _)| conn)
        .map_err(|e| format!("{side}: {e}"))
}

/// Runs `sql`; its rows as text (`None` for NULL), or its error.
pub(crate) async fn rows(
    conn: &mut Packets,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    conn.write(0, &p).await.map_err(|e| e.to_string())?;
    let a = response::read(conn, Expect::Result)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(e) = a.error {
        return Err(e);
    }
    // Column count, definitions, EOF, rows, EOF.
    let Some((_, first)) = a.packets.first() else {
        return Ok(Vec::new());
    };
    if first.first() == Some(&0x00) {
        return Ok(Vec::new());
    }
    // A count the answer does not hold is refused, not trusted.
    let columns = lenenc(first)
        .and_then(|(n, _)| usize::try_from(n).ok())
        .unwrap_or(0);
    if columns >= a.packets.len() {
        return Err("more columns announced than the answer holds".into());
    }
    let body = a
        .packets
        .get(columns + 2..a.packets.len().saturating_sub(1))
        .unwrap_or_default();
    Ok(body.iter().map(|(_, row)| text_row(row, columns)).collect())
}

fn text_row(mut row: &[u8], columns: usize) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(columns);
    for _ in 0..columns {
        if row.first() == Some(&0xFB) {
            out.push(None);
            row = &row[1..];
            continue;
        }
        let Some((len, n)) = lenenc(row) else { break };
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| n.checked_add(l))
            .map_or(row.len(), |e| e.min(row.len()));
        out.push(Some(String::from_utf8_lossy(&row[n..end]).into_owned()));
        row = &row[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_decode_and_short_ones_do_not_panic() {
        assert_eq!(
            text_row(&[2, b'a', b'b', 0xFB, 1, b'7'], 3),
            vec![Some("ab".into()), None, Some("7".into())]
        );
        assert_eq!(text_row(&[5, b'a'], 2), vec![Some("a".into())]);
    }
}
