//! What the binary log source needs of the servers, checked with the
//! reason when it is missing, and what turnout keeps on the mirror's side:
//! the GTID position applied (`turnout_log.position`, written in the same
//! transaction as the rows it covers).

use crate::backend::binlog::{parse_position, Position};
use crate::backend::mysql::{open_simple, rows};
use crate::backend::transport::BackendTarget;
use crate::wire::my_packet::Packets;

/// The database and table of the applied position, on the mirror's server.
pub const POSITION_TABLE: &str = "turnout_log.position";

/// turnout's replica server id and the GTID domain its applied changes
/// are written in (so they are told from the authority's and never
/// applied back): both from the slot name, away from the small numbers
/// servers are given.
pub fn server_id(slot: &str) -> u32 {
    0x7000_0000 | (crc32fast::hash(slot.as_bytes()) & 0x0fff_ffff)
}

pub fn domain(slot: &str) -> u32 {
    0x7400_0000 | (crc32fast::hash(slot.as_bytes()) & 0x00ff_ffff)
}

async fn one_row(conn: &mut Packets, sql: &str) -> Result<Vec<Option<String>>, String> {
    let r = rows(conn, sql).await.map_err(|e| e.to_string())?;
    Ok(r.into_data().into_iter().next().unwrap_or_default())
}

async fn grants(conn: &mut Packets) -> Result<String, String> {
    let r = rows(conn, "SHOW GRANTS").await.map_err(|e| e.to_string())?;
    Ok(r.into_data()
        .into_iter()
        .flatten()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
        .to_uppercase())
}

fn global_grant(grants: &str, any: &[&str]) -> bool {
    grants.lines().any(|l| {
        l.contains(" ON *.* ")
            && (l.contains("ALL PRIVILEGES") || any.iter().any(|p| l.contains(p)))
    })
}

/// Whether `from`'s binary log can feed `to`: `Err` with the reason.
pub async fn check(from: &BackendTarget, to: &BackendTarget) -> Result<(), String> {
    let side = from.side;
    let login = |t: &BackendTarget| format!("{}'s login {:?}", t.side, t.replication.0);
    let (mut conn, version) = open_simple(&from.as_replication())
        .await
        .map_err(|e| format!("{} cannot log in: {e}", login(from)))?;
    if !version.to_ascii_lowercase().contains("mariadb") {
        return Err(format!(
            "{side} is MySQL {version}: the log source reads MariaDB's binary log (its GTIDs); MySQL's is not read yet"
        ));
    }
    let row = one_row(
        &mut conn,
        "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@global.binlog_expire_logs_seconds",
    )
    .await?;
    let at = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    if at(0) != "1" {
        return Err(format!(
            "{side} keeps no binary log (log_bin = OFF): start it with --log-bin and binlog_format = ROW"
        ));
    }
    if !at(1).eq_ignore_ascii_case("ROW") {
        return Err(format!(
            "{side}'s binlog_format is {}: the log carries rows only with ROW (SET GLOBAL binlog_format = 'ROW', and in its config)",
            at(1)
        ));
    }
    if !at(2).eq_ignore_ascii_case("FULL") {
        return Err(format!(
            "{side}'s binlog_row_image is {}: FULL is needed (every column of each row)",
            at(2)
        ));
    }
    let g = grants(&mut conn).await?;
    if !global_grant(&g, &["REPLICATION SLAVE", "REPLICATION REPLICA", "SUPER"]) {
        return Err(format!(
            "{} may not read the binary log (GRANT REPLICATION SLAVE ON *.* TO it)",
            login(from)
        ));
    }
    let (mut theirs, _) = open_simple(&to.as_replication())
        .await
        .map_err(|e| format!("{} cannot log in: {e}", login(to)))?;
    let g = grants(&mut theirs).await?;
    if !global_grant(&g, &["BINLOG REPLAY", "SUPER"]) {
        return Err(format!(
            "{} may not replay row events (GRANT BINLOG REPLAY ON *.* TO it, or SUPER)",
            login(to)
        ));
    }
    Ok(())
}

/// What to change on the servers (notes of `check-config --connect`).
pub async fn notes(from: &BackendTarget) -> Vec<String> {
    let Ok((mut conn, _)) = open_simple(&from.as_replication()).await else {
        return Vec::new();
    };
    let row = one_row(
        &mut conn,
        "SELECT @@global.binlog_expire_logs_seconds, @@global.gtid_binlog_pos",
    )
    .await
    .unwrap_or_default();
    let keep = row.first().cloned().flatten().unwrap_or_default();
    let mut out = Vec::new();
    if keep != "0" && keep.parse::<u64>().is_ok_and(|s| s < 86_400) {
        out.push(format!(
            "SET GLOBAL binlog_expire_logs_seconds = 604800;  -- on {}: its binary logs go after {keep} s; an applier stopped longer cannot continue (then a backfill)",
            from.side
        ));
    }
    out
}

/// The applying connection to `to`: its changes in turnout's own GTID
/// domain, as a replica applies them; `turnout_log.position` made.
pub async fn apply_conn(to: &BackendTarget, slot: &str) -> Result<Packets, String> {
    let (mut conn, _) = open_simple(&to.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    for sql in [
        format!("SET SESSION gtid_domain_id = {}", domain(slot)),
        "SET SESSION pseudo_slave_mode = 1".to_string(),
        "SET SESSION foreign_key_checks = 0".to_string(),
        "SET SESSION unique_checks = 1".to_string(),
    ] {
        rows(&mut conn, &sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
    }
    for sql in [
        "CREATE DATABASE IF NOT EXISTS turnout_log",
        "CREATE TABLE IF NOT EXISTS turnout_log.position (slot VARCHAR(64) PRIMARY KEY, gtid TEXT NOT NULL, updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)) ENGINE = InnoDB",
    ] {
        rows(&mut conn, sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
    }
    Ok(conn)
}

/// The position kept for `slot` on `to`'s applying connection.
pub async fn kept(conn: &mut Packets, slot: &str) -> Result<Option<Position>, String> {
    let row = one_row(
        conn,
        &format!(
            "SELECT gtid FROM {POSITION_TABLE} WHERE slot = '{}'",
            slot.replace('\'', "")
        ),
    )
    .await?;
    Ok(row.first().cloned().flatten().map(|g| parse_position(&g)))
}

/// The statement keeping `position` for `slot` (in the applied
/// transaction).
pub fn keep_sql(slot: &str, position: &str) -> String {
    format!(
        "INSERT INTO {POSITION_TABLE} (slot, gtid) VALUES ('{}', '{}') ON DUPLICATE KEY UPDATE gtid = VALUES(gtid)",
        slot.replace('\'', ""),
        position.replace('\'', "")
    )
}

/// `side`'s binary log position now (what it has committed).
pub async fn position_now(target: &BackendTarget) -> Result<Position, String> {
    let (mut conn, _) = open_simple(&target.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    position_on(&mut conn).await
}

pub async fn position_on(conn: &mut Packets) -> Result<Position, String> {
    let row = one_row(conn, "SELECT @@global.gtid_binlog_pos").await?;
    Ok(parse_position(
        &row.first().cloned().flatten().unwrap_or_default(),
    ))
}

/// Forgets `slot`'s position on `to` (finalized: nothing is applied any
/// more).
pub async fn forget(to: &BackendTarget, slot: &str) -> Result<(), String> {
    let mut conn = apply_conn(to, slot).await?;
    rows(
        &mut conn,
        &format!(
            "DELETE FROM {POSITION_TABLE} WHERE slot = '{}'",
            slot.replace('\'', "")
        ),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}
