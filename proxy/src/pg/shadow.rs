//! Shadow reads (DESIGN.md invariant 3): a sample of reads also runs on the
//! shadow side, off the client's path. The client's answer is captured as it
//! is relayed; a task of its own runs the query on the shadow, compares by
//! value, re-checks a mismatch on both sides after a delay, and records what
//! it finds in the read-diff report. Work is bounded: a semaphore caps the
//! samples in flight and a result cap bounds each one's memory; a sample that
//! cannot be taken is skipped and counted, never queued.

use super::backend;
use super::codec::{self, put_cstr};
use super::framed::{Frame, Framed, FramedError};
use crate::engine::compare::{self, ResultSet};
use crate::engine::sampler::Sampler;
use crate::engine::shadowcheck::{self, Answered, Found, SampleError};
use crate::engine::SqlDialect;
use crate::shared::Shared;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;
use turnout_control::Side;

/// The query to run again: its text, and for the extended protocol its
/// parameter types (Parse) and parameters (Bind).
#[derive(Clone)]
pub struct ShadowQuery {
    pub sql: Arc<str>,
    /// Parse's parameter type section (count and OIDs); empty for a simple Query.
    pub param_types: Bytes,
    /// Bind's parameter section (format codes, count, values); `None` for a
    /// simple Query.
    pub params: Option<Bytes>,
}

impl ShadowQuery {
    /// The messages that run it with text results and describe them.
    fn messages(&self) -> Bytes {
        let mut out = BytesMut::new();
        let Some(params) = &self.params else {
            return codec::query(&self.sql);
        };
        let mut parse = BytesMut::new();
        put_cstr(&mut parse, "");
        put_cstr(&mut parse, &self.sql);
        if self.param_types.is_empty() {
            parse.put_u16(0);
        } else {
            parse.put_slice(&self.param_types);
        }
        out.extend_from_slice(&codec::frame(b'P', &parse));
        let mut bind = BytesMut::new();
        put_cstr(&mut bind, "");
        put_cstr(&mut bind, "");
        bind.put_slice(params);
        bind.put_u16(0); // all results in text
        out.extend_from_slice(&codec::frame(b'B', &bind));
        out.extend_from_slice(&codec::frame(b'D', b"P\0"));
        let mut exec = BytesMut::new();
        put_cstr(&mut exec, "");
        exec.put_u32(0);
        out.extend_from_slice(&codec::frame(b'E', &exec));
        out.extend_from_slice(&codec::frame(b'S', &[]));
        out.freeze()
    }

    /// The parameter values as text, for a record (binary ones by size).
    fn param_texts(&self) -> Option<Vec<Option<String>>> {
        crate::engine::locate::param_texts(self.params.as_ref()?)
    }
}

/// The client's answer, captured while it is relayed.
#[derive(Default)]
pub struct Capture {
    pub description: Option<Bytes>,
    pub rows: Vec<Bytes>,
    bytes: usize,
    pub too_large: bool,
    pub failed: bool,
}

impl Capture {
    /// Notes one frame of the answer; past `max` bytes the capture is given up.
    pub fn see(&mut self, f: &Frame, max: usize) {
        match f.tag {
            b'T' => self.description = Some(f.raw.clone()),
            b'D' if !self.too_large => {
                self.bytes += f.raw.len();
                if self.bytes > max {
                    self.too_large = true;
                    self.rows = Vec::new();
                } else {
                    self.rows.push(f.raw.clone());
                }
            }
            b'E' => self.failed = true,
            _ => {}
        }
    }
}

/// One sampled read to check.
pub struct Sample {
    pub fingerprint: String,
    pub query: ShadowQuery,
    pub target: Side,
    pub shadow: Side,
    pub capture: Capture,
    /// Result format codes the client asked for (empty: all text).
    pub result_formats: Vec<u16>,
    pub params: Vec<(String, String)>,
    /// The session's settings (`SET search_path ...`), applied on the
    /// sample's connections so the query means the same there.
    pub settings: Arc<Vec<String>>,
}

/// Runs the check off the client's path; the permit bounds the work in flight.
pub fn spawn(shared: Arc<Shared>, sample: Sample, permit: OwnedSemaphorePermit) {
    tokio::spawn(async move {
        let _permit = permit;
        let sampler = &shared.sampler;
        if sample.capture.too_large {
            sampler.log.skipped(&sample.fingerprint, "result_too_large");
            return;
        }
        if sample.capture.failed {
            // The client got an error: nothing to compare.
            return;
        }
        if let Err(e) = check(&shared, sampler, &sample).await {
            if matches!(e, SampleError::NotReadOnly(_)) {
                shared.read_wrote(&sample.fingerprint, sample.target, &sample.query.sql);
            }
            debug!(fingerprint = %sample.fingerprint, reason = %e, "shadow sample skipped");
            sampler.log.skipped(&sample.fingerprint, e.skip_reason());
        }
    });
}

/// A read failed on `failed` (the read target) with an error about an
/// object or privilege: it counts against that side for the watch window
/// when the other side runs it without an error (so the target lacks what
/// the other has), never when both fail (the client's own mistake). Runs
/// off the client's path, under the sampler's bound on work in flight.
pub fn confirm_read_failure(
    shared: Arc<Shared>,
    query: ShadowQuery,
    failed: Side,
    params: Vec<(String, String)>,
    settings: Arc<Vec<String>>,
) {
    let Some(permit) = shared.sampler.permit() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let other = failed.other();
        // Clients write for old: on new the read goes through the mapping.
        let query = if other == Side::New {
            match shared.mapping().translate(&query.sql) {
                Ok(crate::mapping::Translation::Sql(sql)) => ShadowQuery {
                    sql: sql.into(),
                    ..query
                },
                Ok(_) => query,
                Err(_) => return,
            }
        } else {
            query
        };
        match run(&shared, &shared.sampler, other, &query, &params, &settings).await {
            Ok(a) if a.error.is_none() => {
                tracing::warn!(side = %failed, other = %other, "a read failed on the read target and not on the other side: counted as the read target's failure");
                shared
                    .coord
                    .mirror_read_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    });
}

/// What one side answered.
struct Answer {
    description: Option<Bytes>,
    rows: Vec<Bytes>,
    error: Option<String>,
}

async fn check(shared: &Shared, sampler: &Sampler, sample: &Sample) -> Result<(), SampleError> {
    // On `new` the read runs through the schema mapping.
    let on_new = match shared.mapping().translate(&sample.query.sql) {
        Ok(crate::mapping::Translation::Sql(sql)) => ShadowQuery {
            sql: sql.into(),
            ..sample.query.clone()
        },
        Ok(_) => sample.query.clone(),
        Err(e) => return Err(SampleError::Undecodable(format!("mapping: {e}"))),
    };
    let on_new = &on_new;
    let on = |side: Side| async move {
        let query = if side == Side::New {
            on_new
        } else {
            &sample.query
        };
        let a = run(
            shared,
            sampler,
            side,
            query,
            &sample.params,
            &sample.settings,
        )
        .await?;
        Ok::<_, SampleError>((answer_set(&a)?, a.error, a.description))
    };
    let (shadow, shadow_error, shadow_description) = on(sample.shadow).await?;
    // The client's answer has its RowDescription only when it asked to
    // describe; the shadow's says the same of the same query.
    let (types, described_by) = match (&sample.capture.description, &shadow_description) {
        (Some(d), _) => (describe(Some(d)), sample.target),
        (None, d) => (describe(d.as_ref()), sample.shadow),
    };
    let mut target = result_set(&types, &sample.capture.rows, &sample.result_formats)?;
    target.key = primary_key(shared, sampler, described_by, &types, sample).await;
    let runner = |side: Side| async move {
        let (set, error, _) = on(side).await?;
        Ok(Answered { set, error })
    };
    let found = Found {
        fingerprint: &sample.fingerprint,
        sql: &sample.query.sql,
        params: sample.query.param_texts(),
        target: sample.target,
        shadow: sample.shadow,
    };
    shadowcheck::settle(
        sampler.settings(),
        found,
        target,
        Answered {
            set: shadow,
            error: shadow_error,
        },
        SqlDialect::Postgres,
        runner,
    )
    .await
}

/// A side's text-format answer as normalized values.
fn answer_set(a: &Answer) -> Result<ResultSet, SampleError> {
    result_set(&describe(a.description.as_ref()), &a.rows, &[])
}

/// The positions of the result's columns that are the primary key of a
/// table whose whole key the result carries, from the RowDescription's table
/// OIDs and column numbers (as `side` numbers them), each table's key read
/// once from that side's catalog. Empty when unknown.
async fn primary_key(
    shared: &Shared,
    sampler: &Sampler,
    side: Side,
    columns: &[Described],
    sample: &Sample,
) -> Vec<usize> {
    let mut tables: Vec<u32> = columns
        .iter()
        .map(|c| c.table)
        .filter(|&t| t != 0)
        .collect();
    tables.sort_unstable();
    tables.dedup();
    let mut key = Vec::new();
    for table in tables {
        let attnums = match shared.pg.primary_keys.get(&(side, table)) {
            Some(k) => k.clone(),
            None => {
                let query = ShadowQuery {
                    sql: format!(
                        "SELECT array_to_string(indkey, ' ') FROM pg_index \
                         WHERE indrelid = {table} AND indisprimary"
                    )
                    .into(),
                    param_types: Bytes::new(),
                    params: None,
                };
                let Ok(a) = run(
                    shared,
                    sampler,
                    side,
                    &query,
                    &sample.params,
                    &sample.settings,
                )
                .await
                else {
                    continue;
                };
                if a.error.is_some() {
                    continue;
                }
                let found: Vec<i16> = a
                    .rows
                    .first()
                    .and_then(|raw| {
                        let values = codec::data_row_values(raw.get(5..).unwrap_or_default());
                        let text = String::from_utf8_lossy(values.first()?.as_ref()?).into_owned();
                        text.split_whitespace().map(|n| n.parse().ok()).collect()
                    })
                    .unwrap_or_default();
                let found = Arc::new(found);
                shared.pg.primary_keys.insert((side, table), found.clone());
                found
            }
        };
        let positions: Vec<usize> = attnums
            .iter()
            .filter_map(|n| {
                columns
                    .iter()
                    .position(|c| c.table == table && c.column == *n)
            })
            .collect();
        if !attnums.is_empty() && positions.len() == attnums.len() {
            key.extend(positions);
        }
    }
    key.sort_unstable();
    key
}

/// A RowDescription's column: its name, type OID, and the table OID and
/// column number it comes from (0 when it is no table's column).
struct Described {
    name: String,
    type_oid: u32,
    table: u32,
    column: i16,
}

/// The columns of a RowDescription frame.
fn describe(raw: Option<&Bytes>) -> Vec<Described> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    let body = raw.get(5..).unwrap_or_default();
    let Some(n) = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Vec::new();
    };
    let mut rest = &body[2..];
    let mut out = Vec::new();
    for _ in 0..n {
        let Some(end) = rest.iter().position(|&c| c == 0) else {
            break;
        };
        let name = String::from_utf8_lossy(&rest[..end]).into_owned();
        let Some(fixed) = rest.get(end + 1..end + 19) else {
            break;
        };
        out.push(Described {
            name,
            table: u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]),
            column: i16::from_be_bytes([fixed[4], fixed[5]]),
            type_oid: u32::from_be_bytes([fixed[6], fixed[7], fixed[8], fixed[9]]),
        });
        rest = &rest[end + 19..];
    }
    out
}

/// DataRow frames as normalized values.
fn result_set(
    types: &[Described],
    rows: &[Bytes],
    formats: &[u16],
) -> Result<ResultSet, SampleError> {
    let mut out = ResultSet {
        columns: types.iter().map(|c| c.name.clone()).collect(),
        rows: Vec::with_capacity(rows.len()),
        key: Vec::new(),
    };
    for raw in rows {
        let values = codec::data_row_values(raw.get(5..).unwrap_or_default());
        let mut row = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            let Some(v) = v else {
                row.push(None);
                continue;
            };
            let binary = match formats.len() {
                0 => false,
                1 => formats[0] == 1,
                _ => formats.get(i) == Some(&1),
            };
            let type_oid = types.get(i).map(|t| t.type_oid).unwrap_or(25);
            let value =
                compare::normalize(type_oid, binary, v).map_err(SampleError::Undecodable)?;
            row.push(Some(value));
        }
        out.rows.push(row);
    }
    Ok(out)
}

/// Runs the query on `side` over a pooled connection (time zone UTC, so
/// timestamps compare with binary ones), bounded by the mirror time limit.
async fn run(
    shared: &Shared,
    sampler: &Sampler,
    side: Side,
    query: &ShadowQuery,
    params: &[(String, String)],
    settings: &Arc<Vec<String>>,
) -> Result<Answer, SampleError> {
    let unavailable = |e: String| SampleError::Unavailable(format!("{side}: {e}"));
    let pool = &shared.pg.idle;
    let (mut conn, applied) = match pool.take(side, settings) {
        Some(p) => p,
        None => {
            let c = tokio::time::timeout(
                shared.mirror_timeout,
                backend::connect(shared.target(side), params),
            )
            .await
            .map_err(|_| unavailable("connect timed out".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
            (
                Framed::new(c.stream, c.leftover, usize::MAX),
                // Nothing applied yet: the settings go first below.
                Arc::new(vec!["(new connection)".into()]),
            )
        }
    };
    // The session's settings, then UTC and ISO dates (timestamps compare
    // with binary ones), unless this connection has them already.
    let mut prefix = BytesMut::new();
    let mut prefix_answers = 0;
    if applied != *settings {
        let sqls = std::iter::once("RESET ALL")
            .chain(settings.iter().map(String::as_str))
            .chain(std::iter::once(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'",
            ));
        for sql in sqls {
            prefix.extend_from_slice(&codec::query(sql));
            prefix_answers += 1;
        }
    }
    // In a read-only transaction, rolled back: a read with side effects (a
    // function that writes, `nextval`) fails there and changes nothing; the
    // client's own read ran once, on the read target.
    prefix.extend_from_slice(&codec::query("BEGIN READ ONLY"));
    let exchange = async {
        prefix.extend_from_slice(&query.messages());
        prefix.extend_from_slice(&codec::query("ROLLBACK"));
        conn.send(&prefix).await?;
        for _ in 0..=prefix_answers {
            read_answer(&mut conn, usize::MAX).await?;
        }
        let answer = read_answer(&mut conn, sampler.max_result_bytes).await?;
        read_answer(&mut conn, usize::MAX).await?;
        Ok::<_, FramedError>(answer)
    };
    let outcome = tokio::time::timeout(shared.mirror_timeout, exchange).await;
    let give_back = |conn| pool.give_back(side, conn, settings.clone());
    match outcome {
        Ok(Ok(Some(a))) => {
            give_back(conn);
            match &a.error {
                Some(e) if e.contains("(25006)") => Err(SampleError::NotReadOnly(format!(
                    "{side}: the read writes: {e}"
                ))),
                _ => Ok(a),
            }
        }
        Ok(Ok(None)) => {
            give_back(conn);
            Err(SampleError::Unavailable(format!(
                "{side}: result larger than sampling.max_result_bytes"
            )))
        }
        Ok(Err(e)) => Err(unavailable(e.to_string())),
        Err(_) => Err(unavailable("no answer in time".into())),
    }
}

/// Frames up to ReadyForQuery; `None` when the rows exceed `max` bytes.
async fn read_answer(f: &mut Framed, max: usize) -> Result<Option<Answer>, FramedError> {
    let mut a = Answer {
        description: None,
        rows: Vec::new(),
        error: None,
    };
    let mut bytes = 0usize;
    let mut too_large = false;
    loop {
        let frame = f.read().await?;
        match frame.tag {
            b'Z' => return Ok((!too_large).then_some(a)),
            b'T' => a.description = Some(frame.raw),
            b'D' if !too_large => {
                bytes += frame.raw.len();
                if bytes > max {
                    too_large = true;
                    a.rows = Vec::new();
                } else {
                    a.rows.push(frame.raw);
                }
            }
            b'E' if a.error.is_none() => a.error = Some(codec::error_text(frame.body())),
            b'G' | b'H' => {
                // A COPY is no read; refuse it.
                let mut body = BytesMut::new();
                put_cstr(&mut body, "turnout: not a read");
                f.send(&codec::frame(b'f', &body)).await?;
            }
            _ => {}
        }
    }
}
