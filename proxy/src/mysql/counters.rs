//! Auto-increment catch-up for a writes flip over MySQL: each table's
//! counter on the side taking over is raised to the other side's when that
//! is further along, so the next generated id is new on both sides.

use super::packet::Packets;
use crate::backend::catch_up::{Apply, CatchUp};
use crate::backend::mysql::rows;
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
    let mapping = shared.mapping();
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

/// A connection of turnout's own to `side`: catch-up and catalog reads.
pub(crate) async fn open(shared: &Shared, side: Side) -> Result<Packets, String> {
    let (conn, version) = crate::backend::mysql::open_simple(shared.target(side)).await?;
    shared.note_mysql_version(version);
    Ok(conn)
}
