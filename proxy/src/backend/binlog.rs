//! MariaDB's binary log, read as a replica reads it: logged in as the
//! side's replication login, registered with a server id of turnout's own,
//! streamed from a GTID position (`@slave_connect_state`), each event kept
//! as its bytes (the applier replays them with `BINLOG`, so no value goes
//! through a parser) with the few fields the applier needs read from them.
//!
//! Event layout (MariaDB's binlog version 4): a 19-byte header (timestamp,
//! type, server id, size, next position, flags), the body, and a CRC32 of
//! both when `binlog_checksum = CRC32`.

use super::mysql::{open_simple, rows};
use super::transport::BackendTarget;
use crate::wire::my_packet::{err_text, Packets};
use mysql_common::packets::{ComBinlogDump, ComRegisterSlave};
use mysql_common::proto::MySerialize;

pub const QUERY: u8 = 2;
pub const ROTATE: u8 = 4;
pub const FORMAT_DESCRIPTION: u8 = 15;
pub const XID: u8 = 16;
pub const TABLE_MAP: u8 = 19;
pub const HEARTBEAT: u8 = 27;
pub const ANNOTATE_ROWS: u8 = 160;
pub const GTID: u8 = 162;
pub const QUERY_COMPRESSED: u8 = 165;

const HEADER: usize = 19;

/// Whether `kind` is a rows event (write, update, delete; v1, v2, and
/// MariaDB's compressed ones).
pub fn is_rows(kind: u8) -> bool {
    matches!(kind, 23..=25 | 30..=32 | 166..=171)
}

/// One event, as the server sent it.
#[derive(Debug, Clone)]
pub struct Event {
    pub raw: Vec<u8>,
    /// Whether `raw` ends with a CRC32.
    pub checksummed: bool,
}

impl Event {
    pub fn kind(&self) -> u8 {
        self.raw.get(4).copied().unwrap_or(0)
    }

    pub fn server_id(&self) -> u32 {
        u32_at(&self.raw, 5).unwrap_or(0)
    }

    /// The body between the header and the checksum.
    pub fn body(&self) -> &[u8] {
        let end = self
            .raw
            .len()
            .saturating_sub(if self.checksummed { 4 } else { 0 });
        self.raw.get(HEADER..end.max(HEADER)).unwrap_or(&[])
    }

    /// A GTID event's domain, sequence number and whether it stands alone
    /// (a statement outside a transaction, DDL: no XID ends its group).
    pub fn gtid(&self) -> Option<Gtid> {
        let b = self.body();
        let seq = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let domain = u32_at(b, 8)?;
        let flags = *b.get(12)?;
        Some(Gtid {
            domain,
            server: self.server_id(),
            seq,
            standalone: flags & 1 != 0,
        })
    }

    /// A table map's table id, database and table.
    pub fn table_map(&self) -> Option<(u64, String, String)> {
        let b = self.body();
        let id = table_id(b)?;
        let (db, table, _) = names(b)?;
        Some((
            id,
            String::from_utf8_lossy(db).into_owned(),
            String::from_utf8_lossy(table).into_owned(),
        ))
    }

    /// A rows event's table id.
    pub fn rows_table(&self) -> Option<u64> {
        table_id(self.body())
    }

    /// The end position of this event in its binary log file.
    pub fn log_pos(&self) -> u64 {
        u64::from(u32_at(&self.raw, 13).unwrap_or(0))
    }

    /// A rotate event's next file name.
    pub fn rotate_file(&self) -> Option<String> {
        let b = self.body();
        Some(String::from_utf8_lossy(b.get(8..)?).into_owned())
    }

    /// A query event's session (the server's thread id of the connection
    /// that ran it).
    pub fn query_thread(&self) -> Option<u32> {
        u32_at(self.body(), 0)
    }

    /// A query event's default database and text.
    pub fn query(&self) -> Option<(String, Vec<u8>)> {
        let b = self.body();
        let db_len = usize::from(*b.get(8)?);
        let vars = usize::from(u16::from_le_bytes(b.get(11..13)?.try_into().ok()?));
        let db_at = 13 + vars;
        let db = b.get(db_at..db_at + db_len)?;
        let text = b.get(db_at + db_len + 1..)?;
        Some((String::from_utf8_lossy(db).into_owned(), text.to_vec()))
    }

    /// This table map naming `db`.`table` instead (the checksum made
    /// again): how a row reaches a database or table of another name.
    pub fn renamed(&self, db: &str, table: &str) -> Option<Event> {
        let b = self.body();
        let (_, _, rest) = names(b)?;
        let mut body = b.get(..8)?.to_vec();
        for name in [db.as_bytes(), table.as_bytes()] {
            body.push(u8::try_from(name.len()).ok()?);
            body.extend_from_slice(name);
            body.push(0);
        }
        body.extend_from_slice(rest);
        let mut raw = self.raw.get(..HEADER)?.to_vec();
        raw.extend_from_slice(&body);
        let size = raw.len() + if self.checksummed { 4 } else { 0 };
        raw[9..13].copy_from_slice(&u32::try_from(size).ok()?.to_le_bytes());
        if self.checksummed {
            let crc = crc32fast::hash(&raw);
            raw.extend_from_slice(&crc.to_le_bytes());
        }
        Some(Event {
            raw,
            checksummed: self.checksummed,
        })
    }
}

/// A MariaDB GTID: domain, server, sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
    pub standalone: bool,
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn table_id(b: &[u8]) -> Option<u64> {
    let mut id = [0u8; 8];
    id[..6].copy_from_slice(b.get(0..6)?);
    Some(u64::from_le_bytes(id))
}

/// A table map body's database, table, and what follows them.
fn names(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let db_len = usize::from(*b.get(8)?);
    let db = b.get(9..9 + db_len)?;
    let t_at = 9 + db_len + 1;
    let t_len = usize::from(*b.get(t_at)?);
    let table = b.get(t_at + 1..t_at + 1 + t_len)?;
    let rest = b.get(t_at + 1 + t_len + 1..)?;
    Some((db, table, rest))
}

/// A GTID position (`@@gtid_binlog_pos`): the last sequence number per
/// domain.
pub type Position = std::collections::BTreeMap<u32, (u32, u64)>;

/// `0-1-7,3-2-9` as a position; what does not parse is left out.
pub fn parse_position(text: &str) -> Position {
    text.split(',')
        .filter_map(|g| {
            let mut it = g.trim().splitn(3, '-');
            let d = it.next()?.parse().ok()?;
            let s = it.next()?.parse().ok()?;
            let n = it.next()?.parse().ok()?;
            Some((d, (s, n)))
        })
        .collect()
}

pub fn position_text(p: &Position) -> String {
    p.iter()
        .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The stream of one side's binary log.
pub struct Reader {
    conn: Packets,
    checksummed: bool,
}

impl Reader {
    /// Logs in to `target` as its replication login and asks for its log
    /// after `from` (a GTID position), as replica `server_id`.
    pub async fn open(
        target: &BackendTarget,
        server_id: u32,
        from: &str,
    ) -> Result<Reader, String> {
        let (mut conn, _) = open_simple(&target.as_replication())
            .await
            .map_err(|e| e.to_string())?;
        let alg = rows(&mut conn, "SELECT @@global.binlog_checksum AS alg")
            .await
            .map_err(|e| e.to_string())?;
        let checksummed = alg
            .iter()
            .next()
            .and_then(|r| r.str("alg").ok().map(|a| !a.eq_ignore_ascii_case("NONE")))
            .unwrap_or(true);
        for sql in [
            "SET @master_binlog_checksum = @@global.binlog_checksum".to_string(),
            "SET @mariadb_slave_capability = 4".to_string(),
            format!("SET @slave_connect_state = '{}'", from.replace('\'', "")),
            "SET @slave_gtid_strict_mode = 0".to_string(),
            "SET @slave_gtid_ignore_duplicates = 0".to_string(),
        ] {
            rows(&mut conn, &sql).await.map_err(|e| e.to_string())?;
        }
        let mut out = Vec::new();
        ComRegisterSlave::new(server_id).serialize(&mut out);
        conn.write(0, &out).await.map_err(|e| e.to_string())?;
        let (_, ok) = conn.read().await.map_err(|e| e.to_string())?;
        if ok.first() != Some(&0) {
            return Err(format!("registering as a replica: {}", err_text(&ok)));
        }
        let mut out = Vec::new();
        ComBinlogDump::new(server_id)
            .with_pos(4)
            .with_filename(&b""[..])
            .serialize(&mut out);
        conn.write(0, &out).await.map_err(|e| e.to_string())?;
        // An event may be larger than a client's statement.
        conn.set_max(1 << 30);
        Ok(Reader { conn, checksummed })
    }

    /// The next event; `Err` when the stream ends or fails (the server's
    /// message, e.g. a position its log no longer holds).
    pub async fn next(&mut self) -> Result<Event, String> {
        let (_, p) = self.conn.read().await.map_err(|e| e.to_string())?;
        match p.first() {
            Some(0) if p.len() > HEADER => Ok(Event {
                raw: p[1..].to_vec(),
                checksummed: self.checksummed,
            }),
            Some(0xFF) => Err(err_text(&p)),
            Some(0xFE) => Err("the server ended the log stream".into()),
            _ => Err("a malformed packet in the log stream".into()),
        }
    }

    /// Whether another event is already at hand (read, not yet taken).
    pub fn has_buffered(&self) -> bool {
        self.conn.buf.len() >= 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_map(db: &str, table: &str) -> Event {
        let mut body = vec![7, 0, 0, 0, 0, 0, 1, 0];
        for n in [db, table] {
            body.push(n.len() as u8);
            body.extend_from_slice(n.as_bytes());
            body.push(0);
        }
        body.extend_from_slice(&[2, 3, 15, 0]);
        let mut raw = vec![0u8; HEADER];
        raw[4] = TABLE_MAP;
        raw.extend_from_slice(&body);
        let size = (raw.len() + 4) as u32;
        raw[9..13].copy_from_slice(&size.to_le_bytes());
        let crc = crc32fast::hash(&raw);
        raw.extend_from_slice(&crc.to_le_bytes());
        Event {
            raw,
            checksummed: true,
        }
    }

    #[test]
    fn a_table_map_is_renamed_with_its_size_and_checksum_made_again() {
        let e = table_map("app", "t");
        assert_eq!(e.table_map(), Some((7, "app".into(), "t".into())));
        let r = e.renamed("app_v2", "things").unwrap();
        assert_eq!(r.table_map(), Some((7, "app_v2".into(), "things".into())));
        assert_eq!(u32_at(&r.raw, 9), Some(r.raw.len() as u32));
        let n = r.raw.len();
        assert_eq!(
            crc32fast::hash(&r.raw[..n - 4]).to_le_bytes(),
            r.raw[n - 4..]
        );
        assert_eq!(&r.body()[r.body().len() - 4..], &[2, 3, 15, 0]);
    }

    #[test]
    fn positions_read_and_write_back() {
        let p = parse_position("0-11-7, 3-2-9,bad");
        assert_eq!(p.get(&0), Some(&(11, 7)));
        assert_eq!(position_text(&p), "0-11-7,3-2-9");
    }

    #[test]
    fn short_events_give_nothing_rather_than_panic() {
        let e = Event {
            raw: vec![0; 5],
            checksummed: true,
        };
        assert!(e.gtid().is_none() && e.table_map().is_none() && e.query().is_none());
        assert!(e.renamed("a", "b").is_none());
    }
}
