//! Auto-increment catch-up for a writes flip over MySQL: each table's
//! counter on the side taking over is raised to the other side's when that
//! is further along, so the next generated id is new on both sides.

use super::packet::Packets;
use crate::backend::catch_up::{Apply, CatchUp};
use crate::backend::mysql::rows;
use crate::backend::rows::RowError;
use crate::shared::Shared;
use turnout_control::Side;

/// Raises the auto-increment counters of `to` past those of `from`.
/// Runs inside a writes flip's barrier (no transaction open).
pub async fn catch_up(
    shared: &Shared,
    from: Side,
    to: Side,
    apply: Apply,
) -> Result<CatchUp, String> {
    let sql = "SELECT TABLE_NAME AS table_name, AUTO_INCREMENT AS next_value \
               FROM information_schema.TABLES \
               WHERE TABLE_SCHEMA = DATABASE() AND AUTO_INCREMENT IS NOT NULL";
    let read = |side: Side| move |e: RowError| format!("on {side}: {e}");
    let mut src = open(shared, from).await?;
    let theirs = rows(&mut src, sql)
        .await
        .map_err(|e| format!("on {from}: {e}"))?;
    let mut dst = open(shared, to).await?;
    let mut ours = std::collections::HashMap::new();
    for r in rows(&mut dst, sql)
        .await
        .map_err(|e| format!("on {to}: {e}"))?
        .iter()
    {
        let value: u64 = r.get("next_value").map_err(read(to))?;
        ours.insert(r.str("table_name").map_err(read(to))?.to_string(), value);
    }
    let mut done = CatchUp {
        seen: theirs.len(),
        ..CatchUp::default()
    };
    let mapping = shared.mapping();
    for r in theirs.iter() {
        let table = r.str("table_name").map_err(read(from))?;
        let value: u64 = r.get("next_value").map_err(read(from))?;
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

/// A connection of turnout's own to `side`: catch-up and catalog reads.
pub(crate) async fn open(shared: &Shared, side: Side) -> Result<Packets, String> {
    let (conn, version) = crate::backend::mysql::open_simple(shared.target(side)).await?;
    shared.note_mysql_version(version);
    Ok(conn)
}
