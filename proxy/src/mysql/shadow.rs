//! Shadow reads over MySQL: a sampled text-protocol read (COM_QUERY) is
//! captured as it is relayed, run again on the shadow side over a pooled
//! connection with the session's settings, and compared by value through
//! the protocol-agnostic check (`engine::shadowcheck`).

use super::response::{self, lenenc, Answer, Expect};
use super::session::{connect, Legs};
use crate::engine::compare::{self, oid, ResultSet};
use crate::engine::shadowcheck::{self, Answered, Found, SampleError};
use crate::engine::SqlDialect;
use crate::shared::Shared;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;
use turnout_control::Side;

/// Session settings: the commands (`USE`, `SET ...`) applied on a connection.
pub use crate::shared::registry::Settings;

/// One sampled read to check.
pub struct Sample {
    pub fingerprint: String,
    pub sql: String,
    pub target: Side,
    pub shadow: Side,
    /// The client's answer, as values.
    pub rows: ResultSet,
    pub legs: Legs,
    /// The session's settings (`USE`, `SET ...` commands), applied on the
    /// sample's connections so the query means the same there.
    pub settings: Settings,
}

/// The values of a single text result set; `Err` when the answer is not
/// one (several result sets, no rows, an error).
pub fn result_set(a: &Answer) -> Result<ResultSet, SampleError> {
    let undecodable = |why: &str| Err(SampleError::Undecodable(why.to_string()));
    let Some((_, first)) = a.packets.first() else {
        return undecodable("empty answer");
    };
    if matches!(first.first(), Some(0x00 | 0xFF)) {
        return undecodable("not a result set");
    }
    let Some((columns, _)) = lenenc(first) else {
        return undecodable("bad column count");
    };
    // A count the answer does not hold is refused, not trusted.
    let columns = usize::try_from(columns).unwrap_or(usize::MAX);
    if columns >= a.packets.len() {
        return undecodable("more columns announced than the answer holds");
    }
    let definitions = a.packets.get(1..1 + columns).unwrap_or_default();
    let defs: Vec<Column> = definitions.iter().map(|(_, d)| column(d)).collect();
    let types: Vec<(String, u32)> = defs.iter().map(|c| (c.name.clone(), c.type_oid)).collect();
    // Column count, definitions, EOF, rows..., EOF: exactly one result set.
    let rows = a
        .packets
        .get(columns + 2..a.packets.len().saturating_sub(1))
        .unwrap_or_default();
    let mut out = ResultSet {
        columns: types.iter().map(|t| t.0.clone()).collect(),
        rows: Vec::with_capacity(rows.len()),
        key: primary_key(&defs),
    };
    for (_, raw) in rows {
        if raw.first() == Some(&0xFE) && raw.len() < 9 {
            return undecodable("several result sets");
        }
        let mut row = Vec::with_capacity(types.len());
        let mut rest = &raw[..];
        for (_, type_oid) in types.iter().take(columns) {
            if rest.first() == Some(&0xFB) {
                row.push(None);
                rest = &rest[1..];
                continue;
            }
            let Some((len, n)) = lenenc(rest) else {
                return undecodable("short row");
            };
            let Some(end) = usize::try_from(len).ok().and_then(|l| n.checked_add(l)) else {
                return undecodable("short row");
            };
            let Some(value) = rest.get(n..end) else {
                return undecodable("short row");
            };
            let text =
                compare::normalize(*type_oid, false, value).map_err(SampleError::Undecodable)?;
            row.push(Some(text));
            rest = &rest[end..];
        }
        out.rows.push(row);
    }
    Ok(out)
}

/// What the shadow check needs of a column definition.
struct Column {
    name: String,
    /// The PostgreSQL type whose text form normalizes its values the same way.
    type_oid: u32,
    /// The table it comes from (`org_table`), when it is a table's column.
    table: String,
    /// `PRI_KEY_FLAG`: part of that table's primary key.
    primary: bool,
}

/// The positions of the primary-key columns of the tables whose whole key
/// the result carries (the server flags each key column).
fn primary_key(defs: &[Column]) -> Vec<usize> {
    (0..defs.len())
        .filter(|&i| defs[i].primary && !defs[i].table.is_empty())
        .collect()
}

fn column(def: &[u8]) -> Column {
    let mut rest = def;
    let mut out = Column {
        name: String::new(),
        type_oid: oid::TEXT,
        table: String::new(),
        primary: false,
    };
    // catalog, schema, table, org_table, name, org_name
    for i in 0..6 {
        let Some((len, n)) = lenenc(rest) else {
            return out;
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| n.checked_add(l))
            .map_or(rest.len(), |e| e.min(rest.len()));
        let text = || String::from_utf8_lossy(rest.get(n..end).unwrap_or_default()).into_owned();
        match i {
            3 => out.table = text(),
            4 => out.name = text(),
            _ => {}
        }
        rest = &rest[end..];
    }
    // 0x0c, charset (2), length (4), type (1)
    let type_oid = match rest.get(7) {
        Some(0 | 246) => oid::NUMERIC,             // DECIMAL, NEWDECIMAL
        Some(1 | 2 | 3 | 8 | 9 | 13) => oid::INT8, // integers, YEAR
        Some(4 | 5) => oid::FLOAT8,                // FLOAT, DOUBLE
        Some(10 | 14) => oid::DATE,                // DATE, NEWDATE
        Some(7 | 12) => oid::TIMESTAMP,            // TIMESTAMP, DATETIME
        _ => oid::TEXT,
    };
    out.type_oid = type_oid;
    // ... type (1), flags (2, little-endian): PRI_KEY_FLAG = 2.
    out.primary = rest
        .get(8..10)
        .is_some_and(|f| u16::from_le_bytes([f[0], f[1]]) & 2 != 0);
    out
}

/// Runs the check off the client's path; the permit bounds the work.
pub fn spawn(shared: Arc<Shared>, sample: Sample, permit: OwnedSemaphorePermit) {
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = check(&shared, &sample).await {
            if matches!(e, SampleError::NotReadOnly(_)) {
                shared.read_wrote(&sample.fingerprint, sample.target, &sample.sql);
            }
            debug!(fingerprint = %sample.fingerprint, reason = %e, "shadow sample skipped");
            shared
                .sampler
                .log
                .skipped(&sample.fingerprint, e.skip_reason());
        }
    });
}

/// A read failed on `sample.target` (the read target) because an object or
/// privilege is missing: it counts against that side for the watch window
/// when the other side runs it without an error, never when both fail (the
/// client's own mistake). Off the client's path, under the sampler's bound.
pub fn confirm_read_failure(shared: Arc<Shared>, sample: Sample) {
    let Some(permit) = shared.sampler.permit() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        if let Ok(Answered { error: None, .. }) = run(&shared, sample.shadow, &sample).await {
            tracing::warn!(side = %sample.target, other = %sample.shadow, "a read failed on the read target and not on the other side: counted as the read target's failure");
            shared
                .coord
                .mirror_read_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

async fn check(shared: &Shared, sample: &Sample) -> Result<(), SampleError> {
    let first = run(shared, sample.shadow, sample).await?;
    let found = Found {
        fingerprint: &sample.fingerprint,
        sql: &sample.sql,
        params: None,
        target: sample.target,
        shadow: sample.shadow,
    };
    shadowcheck::settle(
        shared.sampler.settings(),
        found,
        sample.rows.clone(),
        first,
        SqlDialect::Mysql,
        |side| run(shared, side, sample),
    )
    .await
}

/// Runs the sample's query on `side`, bounded by the mirror time limit.
async fn run(shared: &Shared, side: Side, sample: &Sample) -> Result<Answered, SampleError> {
    let unavailable = |e: String| SampleError::Unavailable(format!("{side}: {e}"));
    // On `new` the read runs through the schema mapping.
    let sql = match side {
        Side::New => match shared.mapping().translate(&sample.sql) {
            Ok(crate::mapping::Translation::Sql(sql)) => sql,
            Ok(_) => sample.sql.clone(),
            Err(e) => return Err(SampleError::Undecodable(format!("mapping: {e}"))),
        },
        Side::Old => sample.sql.clone(),
    };
    // And names qualified with old's database get new's.
    let sql = match shared.databases().sql_for(side, &sql) {
        Ok(Some(mapped)) => mapped,
        Ok(None) => sql,
        Err(e) => return Err(SampleError::Undecodable(e)),
    };
    let sql = &sql;
    let pool = &shared.mysql.idle;
    let exchange = async {
        let (mut conn, applied) = match pool.take(side, &sample.settings) {
            Some(c) => c,
            None => {
                let legs = &sample.legs;
                let (c, _) = connect(
                    shared,
                    shared.target(side),
                    legs.caps,
                    legs.collation,
                    legs.db.as_deref(),
                )
                .await?;
                (c, Arc::new(Vec::new()))
            }
        };
        if applied != sample.settings {
            for p in sample.settings.iter() {
                conn.write(0, p).await.map_err(|e| e.to_string())?;
                response::read(&mut conn, Expect::Result)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        // In a read-only transaction, rolled back: a read with side effects
        // (a function that writes) fails there and changes nothing; the
        // client's own read ran once, on the read target.
        let mut a = None;
        for (i, text) in ["START TRANSACTION READ ONLY", sql.as_str(), "ROLLBACK"]
            .into_iter()
            .enumerate()
        {
            let mut p = vec![0x03];
            p.extend_from_slice(text.as_bytes());
            conn.write(0, &p).await.map_err(|e| e.to_string())?;
            let answer = response::read(&mut conn, Expect::Result)
                .await
                .map_err(|e| e.to_string())?;
            if i == 0 && answer.error.is_some() {
                return Err(format!("no read-only transaction: {:?}", answer.error));
            }
            if i == 1 {
                a = Some(answer);
            }
        }
        let a = a.unwrap_or_default();
        pool.give_back(side, conn, sample.settings.clone());
        Ok::<_, String>(a)
    };
    let a = tokio::time::timeout(shared.mirror_timeout, exchange)
        .await
        .map_err(|_| unavailable("no answer in time".into()))?
        .map_err(unavailable)?;
    if a.error_code == Some(1792) {
        return Err(SampleError::NotReadOnly(format!(
            "{side}: the read writes: {}",
            a.error.unwrap_or_default()
        )));
    }
    if let Some(e) = a.error {
        return Ok(Answered {
            set: ResultSet::default(),
            error: Some(e),
        });
    }
    Ok(Answered {
        set: result_set(&a)?,
        error: None,
    })
}
