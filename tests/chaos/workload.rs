//! Workloads whose results can be checked: a bank (transfers between
//! accounts in transactions; the total never changes), an append-only log
//! (every acknowledged insert must exist exactly once), and a register per
//! key (last acknowledged write wins; each write read back through turnout).
//! Each client keeps a history of what it was told; a failed statement ends
//! its connection and the client connects again.

use super::db::{Db, Engine, Target};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ACCOUNTS: i64 = 20;
pub const OPENING_BALANCE: i64 = 1_000;
pub const TOTAL: i64 = ACCOUNTS * OPENING_BALANCE;
pub const BANK_CLIENTS: i64 = 3;
pub const LOG_CLIENTS: i64 = 2;
pub const REGISTER_CLIENTS: i64 = 2;
pub const KEYS_PER_CLIENT: i64 = 5;

/// The tables, created on both sides before traffic starts.
pub fn schema(engine: Engine) -> Vec<String> {
    let log = match engine {
        Engine::Postgres => {
            "CREATE TABLE log (id bigserial PRIMARY KEY, client bigint NOT NULL, \
             seq bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())"
        }
        Engine::MariaDb => {
            "CREATE TABLE log (id bigint AUTO_INCREMENT PRIMARY KEY, client bigint NOT NULL, \
             seq bigint NOT NULL, at timestamp(6) NOT NULL DEFAULT current_timestamp(6))"
        }
    };
    let mut s = vec![
        "CREATE TABLE bank (id bigint PRIMARY KEY, balance bigint NOT NULL)".to_string(),
        log.to_string(),
        "CREATE TABLE reg (k bigint PRIMARY KEY, v bigint NOT NULL, writer bigint NOT NULL)"
            .to_string(),
    ];
    let accounts: Vec<String> = (1..=ACCOUNTS)
        .map(|i| format!("({i}, {OPENING_BALANCE})"))
        .collect();
    s.push(format!("INSERT INTO bank VALUES {}", accounts.join(", ")));
    let keys: Vec<String> = (0..REGISTER_CLIENTS)
        .flat_map(|c| (0..KEYS_PER_CLIENT).map(move |k| format!("({}, 0, {c})", key(c, k))))
        .collect();
    s.push(format!("INSERT INTO reg VALUES {}", keys.join(", ")));
    s
}

pub fn key(client: i64, k: i64) -> i64 {
    client * 100 + k
}

/// `SELECT` of the bank's total as a bigint.
pub fn bank_total_sql(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "SELECT sum(balance)::bigint, count(*) FROM bank",
        Engine::MariaDb => "SELECT CAST(SUM(balance) AS SIGNED), COUNT(*) FROM bank",
    }
}

#[derive(Debug, Clone)]
pub struct ClientError {
    pub at_ms: u64,
    pub client: String,
    pub what: &'static str,
    pub message: String,
}

/// One key of the register: the last acknowledged value and the values
/// written after it whose outcome the client does not know.
#[derive(Debug, Clone, Default)]
pub struct Register {
    pub acked: i64,
    pub unknown: Vec<i64>,
}

#[derive(Debug, Default)]
pub struct History {
    pub errors: Vec<ClientError>,
    pub acknowledged: u64,
    /// (client, seq) of log inserts acknowledged.
    pub log_acked: Vec<(i64, i64)>,
    /// (client, seq) of log inserts whose outcome is unknown.
    pub log_unknown: Vec<(i64, i64)>,
    pub registers: BTreeMap<i64, Register>,
    /// Reads through turnout that broke an invariant (bank total, a write
    /// not read back).
    pub anomalies: Vec<(u64, &'static str, String)>,
}

pub struct Run {
    pub target: Target,
    pub started: Instant,
    pub stop: AtomicBool,
    pub history: Mutex<History>,
}

impl Run {
    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn error(&self, client: &str, what: &'static str, message: String) {
        let at_ms = self.ms();
        self.history.lock().unwrap().errors.push(ClientError {
            at_ms,
            client: client.to_string(),
            what,
            message,
        });
    }

    fn anomaly(&self, table: &'static str, text: String) {
        let at = self.ms();
        self.history
            .lock()
            .unwrap()
            .anomalies
            .push((at, table, text));
    }

    fn acked(&self) {
        self.history.lock().unwrap().acknowledged += 1;
    }
}

/// Starts every client on the current runtime; they run until `run.stop`.
pub fn start(run: &Arc<Run>, seed: u64) -> Vec<tokio::task::JoinHandle<()>> {
    {
        let mut h = run.history.lock().unwrap();
        for c in 0..REGISTER_CLIENTS {
            for k in 0..KEYS_PER_CLIENT {
                h.registers.insert(key(c, k), Register::default());
            }
        }
    }
    let mut tasks = Vec::new();
    for c in 0..BANK_CLIENTS {
        tasks.push(tokio::spawn(client(
            run.clone(),
            format!("bank-{c}"),
            seed + c as u64,
            Kind::Bank,
        )));
    }
    tasks.push(tokio::spawn(client(
        run.clone(),
        "bank-reader".into(),
        seed + 10,
        Kind::BankReader,
    )));
    for c in 0..LOG_CLIENTS {
        tasks.push(tokio::spawn(client(
            run.clone(),
            format!("log-{c}"),
            seed + 20 + c as u64,
            Kind::Log(c),
        )));
    }
    for c in 0..REGISTER_CLIENTS {
        tasks.push(tokio::spawn(client(
            run.clone(),
            format!("register-{c}"),
            seed + 30 + c as u64,
            Kind::Register(c),
        )));
    }
    tasks
}

#[derive(Clone, Copy)]
enum Kind {
    Bank,
    BankReader,
    Log(i64),
    Register(i64),
}

async fn client(run: Arc<Run>, name: String, seed: u64, kind: Kind) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut db: Option<Db> = None;
    let mut seq = 0i64;
    let mut value = 0i64;
    while !run.stop.load(Ordering::Relaxed) {
        let conn = match db.as_mut() {
            Some(c) => c,
            None => match Db::connect(&run.target).await {
                Ok(c) => db.insert(c),
                Err(e) => {
                    run.error(&name, "connect", e);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            },
        };
        let result = match kind {
            Kind::Bank => transfer(&run, conn, &mut rng).await,
            Kind::BankReader => read_total(&run, conn).await,
            Kind::Log(c) => append(&run, conn, &mut rng, c, &mut seq).await,
            Kind::Register(c) => write_register(&run, conn, &mut rng, c, &mut value).await,
        };
        match result {
            Ok(()) => run.acked(),
            Err((what, e)) => {
                run.error(&name, what, e);
                // The connection's state is unknown: a new one.
                db = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if matches!(kind, Kind::BankReader) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type Step = Result<(), (&'static str, String)>;

fn at(what: &'static str) -> impl Fn(String) -> (&'static str, String) {
    move |e| (what, e)
}

/// A transfer in a transaction, rows locked in key order (no deadlock);
/// one in ten rolled back on purpose.
async fn transfer(run: &Run, db: &mut Db, rng: &mut StdRng) -> Step {
    let from = rng.gen_range(1..=ACCOUNTS);
    let mut to = rng.gen_range(1..=ACCOUNTS - 1);
    if to >= from {
        to += 1;
    }
    let amount = rng.gen_range(1..=50);
    let moves = if from < to {
        [(from, -amount), (to, amount)]
    } else {
        [(to, amount), (from, -amount)]
    };
    db.simple("BEGIN").await.map_err(at("transfer BEGIN"))?;
    for (id, delta) in moves {
        let n = db
            .exec(
                "UPDATE bank SET balance = balance + $1 WHERE id = $2",
                &[delta, id],
            )
            .await
            .map_err(at("transfer UPDATE"))?;
        if n != 1 {
            run.anomaly("bank", format!("UPDATE of account {id} matched {n} rows"));
        }
    }
    if rng.gen_ratio(1, 10) {
        db.simple("ROLLBACK").await.map_err(at("transfer ROLLBACK"))
    } else {
        db.simple("COMMIT").await.map_err(at("transfer COMMIT"))
    }
}

/// The bank's total through turnout (old or new, whichever serves reads).
async fn read_total(run: &Run, db: &mut Db) -> Step {
    let row = db
        .rows(bank_total_sql(run.target.engine), &[])
        .await
        .map_err(at("bank total"))?;
    let (sum, count) = match row.first().map(|r| r.as_slice()) {
        Some([s, c]) => (*s, *c),
        _ => (None, None),
    };
    if sum != Some(TOTAL) || count != Some(ACCOUNTS) {
        run.anomaly(
            "bank",
            format!("total read through turnout: {sum:?} in {count:?} accounts, not {TOTAL}"),
        );
    }
    Ok(())
}

/// One insert on its own (its id generated by the server and returned), or
/// two in a transaction; each (client, seq) is written once.
async fn append(run: &Run, db: &mut Db, rng: &mut StdRng, client: i64, seq: &mut i64) -> Step {
    let pair = rng.gen_ratio(1, 3);
    let first = *seq + 1;
    *seq += if pair { 2 } else { 1 };
    let mine: Vec<(i64, i64)> = (first..=*seq).map(|s| (client, s)).collect();
    let result = async {
        if pair {
            db.simple("BEGIN").await.map_err(at("log BEGIN"))?;
            for (c, s) in &mine {
                db.exec("INSERT INTO log (client, seq) VALUES ($1, $2)", &[*c, *s])
                    .await
                    .map_err(at("log INSERT"))?;
            }
            db.simple("COMMIT").await.map_err(at("log COMMIT"))
        } else {
            let (c, s) = mine[0];
            let id = db
                .value(
                    "INSERT INTO log (client, seq) VALUES ($1, $2) RETURNING id",
                    &[c, s],
                )
                .await
                .map_err(at("log INSERT RETURNING"))?;
            if id.is_none() {
                run.anomaly(
                    "log",
                    format!("INSERT ... RETURNING id of ({c}, {s}) returned no id"),
                );
            }
            Ok(())
        }
    }
    .await;
    let mut h = run.history.lock().unwrap();
    match &result {
        Ok(()) => h.log_acked.extend(mine),
        Err(_) => h.log_unknown.extend(mine),
    }
    result
}

/// A new value for one of the client's keys (on its own, or in a
/// transaction that reads the row FOR UPDATE first), then read back
/// through turnout.
async fn write_register(
    run: &Run,
    db: &mut Db,
    rng: &mut StdRng,
    client: i64,
    value: &mut i64,
) -> Step {
    let k = key(client, rng.gen_range(0..KEYS_PER_CLIENT));
    *value += 1;
    let v = *value;
    run.history
        .lock()
        .unwrap()
        .registers
        .entry(k)
        .or_default()
        .unknown
        .push(v);
    let locked = rng.gen_bool(0.5);
    let written = async {
        if locked {
            db.simple("BEGIN").await.map_err(at("register BEGIN"))?;
            let seen = db
                .value("SELECT v FROM reg WHERE k = $1 FOR UPDATE", &[k])
                .await
                .map_err(at("register SELECT FOR UPDATE"))?;
            let possible = {
                let h = run.history.lock().unwrap();
                let r = &h.registers[&k];
                let mut p = r.unknown.clone();
                p.push(r.acked);
                p
            };
            if !seen.is_some_and(|s| possible.contains(&s)) {
                run.anomaly(
                    "reg",
                    format!("key {k} read {seen:?} FOR UPDATE, not one of {possible:?}"),
                );
            }
        }
        let n = db
            .exec(
                "UPDATE reg SET v = $1, writer = $2 WHERE k = $3",
                &[v, client, k],
            )
            .await
            .map_err(at("register UPDATE"))?;
        if n != 1 {
            run.anomaly("reg", format!("UPDATE of key {k} matched {n} rows"));
        }
        if locked {
            db.simple("COMMIT").await.map_err(at("register COMMIT"))?;
        }
        Ok(())
    }
    .await;
    written?;
    {
        let mut h = run.history.lock().unwrap();
        let r = h.registers.entry(k).or_default();
        r.acked = v;
        r.unknown.clear();
    }
    let read = db
        .value("SELECT v FROM reg WHERE k = $1", &[k])
        .await
        .map_err(at("register read-back"))?;
    if read != Some(v) {
        run.anomaly(
            "reg",
            format!("key {k}: wrote {v}, read back {read:?} through turnout"),
        );
    }
    Ok(())
}
