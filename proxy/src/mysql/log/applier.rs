//! The binary log applier: reads the authority's row events from where the
//! mirror's kept position says, and replays each transaction on the
//! mirror with `BINLOG` (the server applies the rows exactly as the
//! authority logged them, as a replica does: no value is rebuilt, and the
//! mirror's triggers do not fire again), table maps renamed to the
//! mirror's database and tables; the position is kept in the same
//! transaction. Consecutive transactions already at hand go in one.

use super::mapped;
use super::setup::{self, keep_sql};
use crate::backend::binlog::{self, is_rows, position_text, Event, Gtid, Position, Reader};
use crate::backend::mysql::rows;
use crate::shared::Shared;
use crate::wire::my_packet::Packets;
use crate::wire::my_response::{self as response, Expect};
use base64::Engine as _;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::EventStreamReader;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use turnout_config::DdlPolicy;
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::Side;

/// How a run of the applier ended.
pub enum Ended {
    Stopped,
    /// A connection failed: start again from the kept position.
    Retry(String),
    /// The mirror cannot take a change: stopped with a record until it can.
    Refused(String),
}

/// One transaction of the log, as the mirror gets it.
#[derive(Default)]
struct Tx {
    gtid: Option<Gtid>,
    /// Table maps (renamed) and rows events, in their order; the
    /// transaction's savepoint statements between them.
    events: Vec<Step>,
    tables: Vec<String>,
    rows: u64,
    /// A schema change (its default database and text).
    ddl: Option<(String, String)>,
    /// The position after this transaction (kept with it).
    after: Position,
}

/// A piece of a transaction: events replayed together, or a statement
/// (`SAVEPOINT`, `ROLLBACK TO SAVEPOINT`) at its place.
enum Step {
    Event(Event),
    Sql(String),
}

/// Server errors that say the mirror cannot take a table's rows (no such
/// table, another shape): the applier stops until it can.
const REFUSING: [u16; 4] = [1146, 1535, 1677, 1054];

pub struct Run<'a> {
    pub shared: &'a Arc<Shared>,
    pub from: Side,
    pub stop: &'a mut tokio::sync::watch::Receiver<bool>,
}

impl Run<'_> {
    fn to(&self) -> Side {
        self.from.other()
    }

    pub async fn run(&mut self) -> Ended {
        let shared = self.shared;
        let (from_t, to_t) = (shared.target(self.from), shared.target(self.to()));
        let slot = shared.log_slot.clone();
        let mut apply = match setup::apply_conn(to_t, &slot).await {
            Ok(c) => c,
            Err(e) => return Ended::Retry(format!("{}: {e}", self.to())),
        };
        let start = match setup::kept(&mut apply, &slot).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ended::Retry("no position kept yet".into()),
            Err(e) => return Ended::Retry(e),
        };
        *shared
            .mysql
            .binlog
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = start.clone();
        let mut reader =
            match Reader::open(from_t, setup::server_id(&slot), &position_text(&start)).await {
                Ok(r) => r,
                Err(e) => return Ended::Retry(format!("{}'s binary log: {e}", self.from)),
            };
        let own = setup::domain(&slot);
        let mut position = start;
        let mut tables: HashMap<u64, (String, String, bool)> = HashMap::new();
        // Mapped tables' rows are decoded: the reader keeps their table maps.
        let mut esr = EventStreamReader::new(BinlogVersion::Version4);
        let mut catalog: HashMap<String, Vec<mapped::Column>> = HashMap::new();
        let mut target_catalog: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        let mut old_conn: Option<Packets> = None;
        let mut fde_sent = false;
        let mut tx: Option<Tx> = None;
        let mut group: Vec<Tx> = Vec::new();
        // Where in old's files the events read so far end (published once
        // they are applied: the bytes the applier is behind).
        let mut read_at = (String::new(), 0u64);
        shared.log.running();
        loop {
            let event = tokio::select! {
                e = reader.next() => e,
                _ = self.stop.changed() => return Ended::Stopped,
            };
            let event = match event {
                Ok(e) => e,
                Err(e) if e.contains("(1236") => {
                    let why = format!(
                        "the log applier stopped: {} no longer has its binary log from GTID {} ({e}); what it committed since may not be on {} (backfill and verify --repair, then mirror again)",
                        self.from,
                        position_text(&position),
                        self.to()
                    );
                    record(shared, self.to(), "", &why);
                    return Ended::Refused(why);
                }
                Err(e) => return Ended::Retry(format!("{}'s binary log: {e}", self.from)),
            };
            let kind = event.kind();
            if kind == binlog::ROTATE {
                if let Some(file) = event.rotate_file() {
                    read_at = (file, 4);
                }
            } else if event.log_pos() > 0 {
                read_at.1 = event.log_pos();
            }
            match kind {
                binlog::FORMAT_DESCRIPTION => {
                    if let Err(e) = feed(&mut esr, &event) {
                        return Ended::Refused(e);
                    }
                    if !fde_sent {
                        if let Err(e) = replay(&mut apply, &[&event]).await {
                            return Ended::Retry(format!("{}: {e}", self.to()));
                        }
                        fde_sent = true;
                    }
                }
                binlog::GTID => {
                    tx = Some(Tx {
                        gtid: event.gtid(),
                        ..Tx::default()
                    });
                }
                binlog::TABLE_MAP => {
                    let Some((id, db, table)) = event.table_map() else {
                        continue;
                    };
                    let map = shared.live().mapping.rows_toward(self.to(), &table);
                    let plain = map.is_plain(&table);
                    tables.insert(id, (db.clone(), table.clone(), !plain));
                    if let Some(t) = tx.as_mut().filter(|_| db == from_t.database) {
                        if !plain {
                            // Its rows become statements through the mapping.
                            if let Err(e) = feed(&mut esr, &event) {
                                return Ended::Refused(e);
                            }
                        } else {
                            match event.renamed(&to_t.database, &map.table) {
                                Some(e) => t.events.push(Step::Event(e)),
                                None => {
                                    return Ended::Refused(format!(
                                        "a table map of {table} could not be read"
                                    ))
                                }
                            }
                        }
                        if !t.tables.contains(&table) {
                            t.tables.push(table);
                        }
                    }
                }
                k if is_rows(k) => {
                    let Some((db, table, is_mapped)) =
                        event.rows_table().and_then(|id| tables.get(&id)).cloned()
                    else {
                        continue;
                    };
                    let Some(t) = tx.as_mut().filter(|_| db == from_t.database) else {
                        continue;
                    };
                    t.rows += 1;
                    if !is_mapped {
                        t.events.push(Step::Event(event));
                        continue;
                    }
                    if !catalog.contains_key(&table) {
                        if old_conn.is_none() {
                            match crate::backend::mysql::open_simple(&from_t.as_replication()).await
                            {
                                Ok((c, _)) => old_conn = Some(c),
                                Err(e) => return Ended::Retry(e.to_string()),
                            }
                        }
                        let Some(c) = old_conn.as_mut() else { continue };
                        match mapped::columns(c, &db, &table).await {
                            Ok(cols) => {
                                catalog.insert(table.clone(), cols);
                            }
                            Err(e) => return Ended::Retry(e),
                        }
                    }
                    let map = shared.live().mapping.rows_toward(self.to(), &table);
                    if !target_catalog.contains_key(&map.table) {
                        match mapped::columns(&mut apply, &to_t.database, &map.table).await {
                            Ok(cols) => {
                                let names = cols.iter().map(|c| c.name.to_lowercase()).collect();
                                target_catalog.insert(map.table.clone(), names);
                            }
                            Err(e) => {
                                let why = format!("the log applier stopped: {} cannot take the rows of {table} ({e}); it tries again every second", self.to());
                                record(shared, self.to(), &table, &why);
                                return Ended::Refused(why);
                            }
                        }
                    }
                    let made = decode(&mut esr, &event).and_then(|data| {
                        let tme = event
                            .rows_table()
                            .and_then(|id| esr.get_tme(id))
                            .ok_or("its table map was not read")?;
                        mapped::statements(
                            &data,
                            tme,
                            &catalog[&table],
                            &map,
                            &to_t.database,
                            &target_catalog[&map.table],
                        )
                    });
                    match made {
                        Ok(list) => t.events.extend(list.into_iter().map(Step::Sql)),
                        Err(e) => {
                            let why = format!(
                                "the log applier stopped: a row of {table} cannot be applied to {} through the mapping ({e}); it tries again every second",
                                self.to()
                            );
                            record(shared, self.to(), &table, &why);
                            return Ended::Refused(why);
                        }
                    }
                }
                binlog::XID => {
                    if let Some(t) = tx.take() {
                        group.push(t);
                    }
                }
                binlog::QUERY => {
                    let Some((db, text)) = event.query() else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&text).trim().to_string();
                    let word = crate::engine::text::first_word(&text).to_ascii_uppercase();
                    if !matches!(
                        word.as_str(),
                        "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE"
                    ) {
                        // A schema change: the columns are read again.
                        catalog.clear();
                        target_catalog.clear();
                    }
                    match word.as_str() {
                        "BEGIN" => {}
                        "COMMIT" => {
                            if let Some(t) = tx.take() {
                                group.push(t);
                            }
                        }
                        "ROLLBACK" if !is_savepoint(&text) => tx = None,
                        _ if tx.as_ref().is_some_and(|t| !t.standalone()) => {
                            // Inside a transaction: its savepoints, at their
                            // place; anything else is said, not guessed at.
                            let t = tx.as_mut().expect("checked");
                            if is_savepoint(&text) {
                                t.events.push(Step::Sql(text));
                            } else {
                                warn!(side = %self.from, "a statement inside a transaction of {}'s log is not applied to {}: {text}", self.from, self.to());
                            }
                        }
                        _ => {
                            let mut t = tx.take().unwrap_or_default();
                            if db == from_t.database
                                && self.through_turnout(event.query_thread(), &word, &text)
                            {
                                t.ddl = Some((db, text));
                            }
                            group.push(t);
                        }
                    }
                }
                binlog::QUERY_COMPRESSED => {
                    return Ended::Refused(format!(
                    "{} writes compressed events (log_bin_compress = ON): turnout cannot read them",
                    self.from
                ))
                }
                _ => {}
            }
            if group.is_empty() || (reader.has_buffered() && group.len() < 64) {
                continue;
            }
            let done = std::mem::take(&mut group);
            match self.apply(&mut apply, done, &mut position, own).await {
                Ok(()) => {
                    *shared
                        .mysql
                        .binlog
                        .read_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = read_at.clone();
                }
                Err(end) => return end,
            }
        }
    }

    /// Whether a statement of the log (not rows) is to be applied: a schema
    /// change a turnout session sent (by its thread), or a TRUNCATE from
    /// anyone (it removes rows). Another schema change made outside turnout
    /// is left (said in turnout's log): new's schema is the operator's.
    fn through_turnout(&self, thread: Option<u32>, word: &str, text: &str) -> bool {
        let threads = &self.shared.mysql.binlog.ddl_threads;
        if let Some(thread) = thread {
            let mut ours = false;
            threads.remove_if_mut(&thread, |_, n| {
                ours = true;
                *n -= 1;
                *n == 0
            });
            if ours {
                return true;
            }
        }
        if word == "TRUNCATE" {
            return true;
        }
        metrics::counter!("turnout_log_foreign_schema_changes_total").increment(1);
        warn!(
            side = %self.from,
            "a schema change on {} outside turnout is not applied to {}: {text}",
            self.from,
            self.to()
        );
        false
    }

    /// Applies `group` (consecutive transactions) on the mirror in one
    /// transaction with the position after them; DDL on its own.
    async fn apply(
        &self,
        conn: &mut Packets,
        group: Vec<Tx>,
        position: &mut Position,
        own: u32,
    ) -> Result<(), Ended> {
        let slot = &self.shared.log_slot;
        let mut batch: Vec<Tx> = Vec::new();
        let (mut transactions, mut rows_applied) = (0u64, 0u64);
        for mut t in group {
            if let Some(g) = t.gtid {
                position.insert(g.domain, (g.server, g.seq));
            }
            t.after = position.clone();
            let skip = t.gtid.is_some_and(|g| g.domain == own);
            if skip || (t.events.is_empty() && t.ddl.is_none()) {
                continue;
            }
            if t.ddl.is_some() {
                self.commit(conn, &mut batch, &mut transactions, &mut rows_applied)
                    .await?;
                self.ddl(conn, &t).await;
                let keep = keep_sql(slot, &position_text(&t.after));
                exec(conn, &keep)
                    .await
                    .map_err(|e| Ended::Retry(e.to_string()))?;
                transactions += 1;
                continue;
            }
            batch.push(t);
        }
        self.commit(conn, &mut batch, &mut transactions, &mut rows_applied)
            .await?;
        // (Transactions of other databases or turnout's own are passed over
        // without keeping the position for them: writing it would be a
        // transaction of turnout's own again, in the same log on one server;
        // after a restart they are passed over again.)
        self.shared
            .log
            .note_applied(transactions, rows_applied, position_text(position));
        self.passed(position);
        Ok(())
    }

    /// The transactions of `batch` in one transaction of the mirror's with
    /// `position` kept; a refused one is found by applying them one by one.
    async fn commit(
        &self,
        conn: &mut Packets,
        batch: &mut Vec<Tx>,
        transactions: &mut u64,
        rows_applied: &mut u64,
    ) -> Result<(), Ended> {
        if batch.is_empty() {
            return Ok(());
        }
        let list = std::mem::take(batch);
        match self.try_commit(conn, &list).await? {
            Ok(()) => {}
            Err(_) if list.len() > 1 => {
                for t in &list {
                    if let Err(e) = self.try_commit(conn, std::slice::from_ref(t)).await? {
                        self.refused(t, e)?;
                    }
                }
            }
            Err(e) => self.refused(&list[0], e)?,
        }
        let db = self.shared.target(self.from).database.clone();
        for t in &list {
            for table in &t.tables {
                *self
                    .shared
                    .mysql
                    .binlog
                    .applied
                    .entry(super::qualified(&db, table))
                    .or_insert(0) += 1;
            }
        }
        super::note_foreign(self.shared);
        *transactions += list.len() as u64;
        *rows_applied += list.iter().map(|t| t.rows).sum::<u64>();
        Ok(())
    }

    /// `Ok(Err((code, message)))`: the mirror refused the rows (rolled
    /// back); `Err`: the connection failed.
    async fn try_commit(
        &self,
        conn: &mut Packets,
        list: &[Tx],
    ) -> Result<Result<(), (u16, String)>, Ended> {
        // The position after the last of them, kept with them.
        let Some(position) = list.last().map(|t| &t.after) else {
            return Ok(Ok(()));
        };
        let mut statements = vec!["BEGIN".to_string()];
        for t in list {
            let mut run: Vec<&Event> = Vec::new();
            let mut run_bytes = 0;
            for step in &t.events {
                match step {
                    Step::Event(e) => {
                        run_bytes += e.raw.len();
                        run.push(e);
                        // A large transaction goes in several statements,
                        // each ending where one of old's statements ended.
                        if run_bytes > MAX_BINLOG_STATEMENT && ends_statement(e) {
                            statements.push(binlog_sql(&std::mem::take(&mut run)));
                            run_bytes = 0;
                        }
                    }
                    Step::Sql(sql) => {
                        if !run.is_empty() {
                            statements.push(binlog_sql(&std::mem::take(&mut run)));
                            run_bytes = 0;
                        }
                        statements.push(sql.clone());
                    }
                }
            }
            if !run.is_empty() {
                statements.push(binlog_sql(&run));
            }
        }
        statements.push(keep_sql(&self.shared.log_slot, &position_text(position)));
        // Sent at once (one exchange), each statement on its own (MariaDB
        // does not go on reliably after a BINLOG inside a multi-statement
        // text); the COMMIT only once every one of them went through, so a
        // refused transaction leaves neither rows nor position behind.
        let mut out = Vec::new();
        for st in &statements {
            let mut p = vec![0x03];
            p.extend_from_slice(st.as_bytes());
            out.extend_from_slice(&crate::wire::my_packet::encode(0, &p).0);
        }
        use tokio::io::AsyncWriteExt;
        let broken = |e: &dyn std::fmt::Display| Ended::Retry(format!("{}: {e}", self.to()));
        conn.stream.write_all(&out).await.map_err(|e| broken(&e))?;
        conn.stream.flush().await.map_err(|e| broken(&e))?;
        let mut first_error = None;
        for _ in 0..statements.len() {
            let a = response::read(conn, Expect::Result)
                .await
                .map_err(|e| broken(&e))?;
            if let (None, Some(e)) = (&first_error, a.error) {
                first_error = Some((a.error_code.unwrap_or(0), e));
            }
        }
        let end = if first_error.is_some() {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        exec(conn, end).await.map_err(|e| broken(&e))?;
        match first_error {
            Some(e) => Ok(Err(e)),
            None => Ok(Ok(())),
        }
    }

    /// A transaction the mirror refused: a table it cannot take stops the
    /// applier (with a record) until it can; any other refusal (a row
    /// missing or already there) is recorded with its tables, and the log
    /// goes on.
    fn refused(&self, t: &Tx, (code, message): (u16, String)) -> Result<(), Ended> {
        let gtid = t.gtid.map(|g| g.to_string()).unwrap_or_default();
        let tables = t.tables.join(", ");
        if REFUSING.contains(&code) {
            let why = format!(
                "the log applier stopped at {gtid}: {} cannot take the rows of {tables} ({message}); it tries again every second",
                self.to()
            );
            record(self.shared, self.to(), &tables, &why);
            return Err(Ended::Refused(why));
        }
        let lacking = t
            .tables
            .iter()
            .any(|table| self.shared.backfill.may_lack_rows(table));
        if lacking && matches!(code, 1032) {
            return Ok(());
        }
        record(
            self.shared,
            self.to(),
            &tables,
            &format!(
                "{} refused transaction {gtid} of the log ({message}): its rows of {tables} are not on {} (verify --repair)",
                self.to(),
                self.to()
            ),
        );
        Ok(())
    }

    /// A schema change in the log: applied under `mirror.ddl = "both"` in
    /// the mirror's database (a failure recorded), else left.
    async fn ddl(&self, conn: &mut Packets, t: &Tx) {
        let Some((_, text)) = &t.ddl else { return };
        if self.shared.ddl_policy != DdlPolicy::Both {
            return;
        }
        let to = self.shared.target(self.to());
        let from = self.shared.target(self.from);
        if from.database != to.database && qualifies_with(text, &from.database) {
            record(
                self.shared,
                self.to(),
                "",
                &format!(
                    "a schema change names {}'s database ({}): not applied to {} ({text})",
                    self.from,
                    from.database,
                    self.to()
                ),
            );
            return;
        }
        let run = async {
            exec(conn, &format!("USE `{}`", to.database.replace('`', "``"))).await?;
            exec(conn, text).await
        };
        match run.await {
            Ok(_) => info!(side = %self.to(), "schema change applied from the log: {text}"),
            Err(e) => {
                warn!(side = %self.to(), error = %e, "schema change from the log refused");
                record(
                    self.shared,
                    self.to(),
                    "",
                    &format!(
                        "{} refused a schema change from the log ({e}): {text}",
                        self.to()
                    ),
                );
            }
        }
    }

    /// The applier reached `position`: commits waiting for it are answered.
    fn passed(&self, position: &Position) {
        let b = &self.shared.mysql.binlog;
        *b.seen.lock().unwrap_or_else(|p| p.into_inner()) = position.clone();
        let done: Vec<String> = {
            let mut pending = b.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (done, left): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|(p, _)| reached(position, p));
            *pending = left;
            done.into_iter().map(|(_, t)| t).collect()
        };
        for token in done {
            self.shared.log.applied(&token);
        }
    }
}

/// Whether `seen` is at or past `wanted` in every domain.
pub fn reached(seen: &Position, wanted: &Position) -> bool {
    wanted
        .iter()
        .all(|(d, (_, n))| seen.get(d).is_some_and(|(_, s)| s >= n))
}

impl Tx {
    fn standalone(&self) -> bool {
        self.gtid.is_some_and(|g| g.standalone)
    }
}

/// Whether `sql` names something in database `db` (`db.t`, `` `db`.t ``).
fn qualifies_with(sql: &str, db: &str) -> bool {
    let lower = sql.to_lowercase();
    let db = db.to_lowercase();
    lower.match_indices(&db).any(|(i, _)| {
        let b = lower.as_bytes();
        let before = i.checked_sub(1).map(|j| b[j]);
        let mut after = i + db.len();
        if before == Some(b'`') && b.get(after) == Some(&b'`') {
            after += 1;
        } else if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'`') {
            return false;
        }
        b.get(after) == Some(&b'.')
    })
}

/// Gives `event` to the reader that decodes mapped tables' rows (its
/// format description and table maps).
fn feed(esr: &mut EventStreamReader, event: &Event) -> Result<(), String> {
    decode_event(esr, event).map(|_| ())
}

fn decode_event(
    esr: &mut EventStreamReader,
    event: &Event,
) -> Result<mysql_common::binlog::events::Event, String> {
    // (The reader trusts the size in the header.)
    let size = event
        .raw
        .get(9..13)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if size != Some(event.raw.len() as u32) {
        return Err("an event of the log does not have the size it says".into());
    }
    esr.read(&event.raw[..])
        .map_err(|e| format!("an event of the log could not be read: {e}"))?
        .ok_or_else(|| "an empty event".to_string())
}

/// A rows event, decoded.
fn decode(
    esr: &mut EventStreamReader,
    event: &Event,
) -> Result<mysql_common::binlog::events::EventData<'static>, String> {
    let e = decode_event(esr, event)?;
    e.read_data()
        .map_err(|e| format!("a rows event could not be read: {e}"))?
        .map(|d| d.into_owned())
        .ok_or_else(|| "a rows event of an unknown kind".to_string())
}

/// `SAVEPOINT x`, `ROLLBACK TO [SAVEPOINT] x`, `RELEASE SAVEPOINT x`.
fn is_savepoint(text: &str) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .take(2)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    matches!(
        (
            words.first().map(String::as_str),
            words.get(1).map(String::as_str)
        ),
        (Some("SAVEPOINT"), _)
            | (Some("ROLLBACK"), Some("TO"))
            | (Some("RELEASE"), Some("SAVEPOINT"))
    )
}

/// `BINLOG '...'` replaying `events`.
fn binlog_sql(events: &[&Event]) -> String {
    let mut raw = Vec::new();
    for e in events {
        raw.extend_from_slice(&e.raw);
    }
    format!(
        "BINLOG '{}'",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

async fn replay(conn: &mut Packets, events: &[&Event]) -> Result<(), String> {
    exec(conn, &binlog_sql(events)).await.map(|_| ())
}

async fn exec(conn: &mut Packets, sql: &str) -> Result<(), String> {
    rows(conn, sql).await.map(|_| ()).map_err(|e| e.to_string())
}

pub fn record(shared: &Shared, side: Side, table: &str, detail: &str) {
    // A refusal lasting through the applier's retries is recorded once.
    if detail.contains("stopped") {
        let mut last = shared
            .mysql
            .binlog
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(detail) {
            return;
        }
        *last = Some(detail.to_string());
    }
    let mut d = Divergence::new(DivergenceKind::MirrorError, side, "(log)", detail);
    if !table.is_empty() {
        d.table = Some(table.to_string());
    }
    shared.records.mirror_error();
    shared.records.divergence(d);
}

/// Raw bytes of events per `BINLOG` statement (at most, where old's
/// statements end).
const MAX_BINLOG_STATEMENT: usize = 1 << 20;

/// Whether a rows event ends one of old's statements (`STMT_END_F`): the
/// table maps before it are not needed after it.
fn ends_statement(e: &Event) -> bool {
    is_rows(e.kind()) && e.body().get(6).is_some_and(|f| f & 1 != 0)
}

/// The applier's pause after a refusal.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_change_naming_old_s_database_is_told() {
        assert!(qualifies_with("ALTER TABLE app.t ADD c INT", "app"));
        assert!(qualifies_with("ALTER TABLE `app`.`t` ADD c INT", "app"));
        assert!(!qualifies_with(
            "CREATE DEFINER=`app`@`%` FUNCTION f() RETURNS INT RETURN 1",
            "app"
        ));
        assert!(!qualifies_with("ALTER TABLE myapp.t ADD c INT", "app"));
        assert!(is_savepoint("SAVEPOINT `s`") && is_savepoint("ROLLBACK TO `s`"));
        assert!(!is_savepoint("ROLLBACK"));
    }
}
