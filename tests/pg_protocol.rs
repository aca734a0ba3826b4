//! Differential runs of the extended query protocol: random legal message
//! sequences (Parse/Bind/Describe/Execute/Close/Flush/Sync in any grouping,
//! pipelines, BEGIN/COMMIT/ROLLBACK/SAVEPOINT by Execute inside batches,
//! errors mid-batch, named and unnamed statements re-bound across batches)
//! are sent straight to PostgreSQL and through turnout in phase mirror. Every
//! reply and ReadyForQuery state must be the same, old must hold the same
//! rows as the direct run, and new the same as old.

mod common;

use common::raw::{cstr, msg, parse, Raw};
use common::*;
use std::io::Write;

/// The seeds run in the normal test run; `TURNOUT_PROTOCOL_SEEDS=a..b`
/// runs others.
const SEEDS: std::ops::Range<u64> = 1..25;
const OPS: usize = 60;

/// The statements the sequences execute; `{t}` is the table.
#[derive(Clone, Copy, Debug)]
enum Stmt {
    Begin,
    Commit,
    Rollback,
    Savepoint,
    RollbackTo,
    Release,
    Insert,
    Update,
    Count,
    Fail,
    Duplicate,
    /// Calls now(): the mirror gets the authority's transaction time.
    InsertNow,
    /// Executed with a row limit: ends in PortalSuspended.
    Scan,
}

impl Stmt {
    fn sql(self) -> &'static str {
        match self {
            Stmt::Begin => "BEGIN",
            Stmt::Commit => "COMMIT",
            Stmt::Rollback => "ROLLBACK",
            Stmt::Savepoint => "SAVEPOINT sp",
            Stmt::RollbackTo => "ROLLBACK TO SAVEPOINT sp",
            Stmt::Release => "RELEASE SAVEPOINT sp",
            Stmt::Insert => "INSERT INTO {t} (id, v) VALUES ($1, $2)",
            Stmt::Update => "UPDATE {t} SET v = v || 'u' WHERE id = $1",
            Stmt::Count => "SELECT count(*), coalesce(sum(id), 0) FROM {t}",
            Stmt::Fail => "SELECT 1 / 0",
            Stmt::Duplicate => "INSERT INTO {t} (id, v) VALUES (0, 'dup')",
            Stmt::InsertNow => "INSERT INTO {t} (id, v) VALUES ($1, (now() > '2000-01-01')::text)",
            Stmt::Scan => "SELECT id, v FROM {t} ORDER BY id LIMIT 3",
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Parse (named or unnamed), Bind, maybe Describe, Execute.
    Exec {
        stmt: Stmt,
        named: bool,
        describe: bool,
        param: i64,
    },
    /// Bind and Execute the unnamed statement parsed before (perhaps in an
    /// earlier batch).
    Rebind {
        param: i64,
    },
    /// Close the named insert statement (it is parsed again when next used).
    CloseNamed,
    Flush {
        wait: bool,
    },
    Sync,
}

/// xorshift: the same seed gives the same sequence.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn sequence(seed: u64) -> Vec<Op> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut ops = Vec::new();
    let mut next_id = seed as i64 * 1000;
    let mut last_unnamed_insert = false;
    for _ in 0..OPS {
        let op = match r.next(20) {
            0 => Op::Sync,
            1 | 2 => Op::Flush {
                wait: r.next(2) == 0,
            },
            3 if last_unnamed_insert => {
                next_id += 1;
                Op::Rebind { param: next_id }
            }
            4 => Op::CloseNamed,
            n => {
                let stmt = match n {
                    5 => Stmt::Begin,
                    6 => Stmt::Commit,
                    7 => Stmt::Rollback,
                    8 => Stmt::Savepoint,
                    9 => Stmt::RollbackTo,
                    10 => Stmt::Release,
                    11 => Stmt::Count,
                    12 if r.next(3) == 0 => Stmt::Fail,
                    13 if r.next(3) == 0 => Stmt::Duplicate,
                    14 | 15 => Stmt::Update,
                    16 => Stmt::InsertNow,
                    17 if r.next(2) == 0 => Stmt::Scan,
                    _ => Stmt::Insert,
                };
                next_id += 1;
                let named = matches!(stmt, Stmt::Insert) && r.next(2) == 0;
                if matches!(stmt, Stmt::Insert) {
                    last_unnamed_insert = !named;
                } else if !named {
                    last_unnamed_insert = false;
                }
                Op::Exec {
                    stmt,
                    named,
                    describe: r.next(4) == 0,
                    param: if matches!(stmt, Stmt::Update) {
                        seed as i64 * 1000 + 1 + r.next(20) as i64
                    } else {
                        next_id
                    },
                }
            }
        };
        ops.push(op);
    }
    ops.push(Op::Sync);
    ops
}

fn bind(stmt: &str, params: &[String]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, stmt);
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'B', &b)
}

fn params(stmt: Stmt, param: i64) -> Vec<String> {
    match stmt {
        Stmt::Insert => vec![param.to_string(), format!("v{param}")],
        Stmt::InsertNow => vec![param.to_string()],
        Stmt::Update => vec![param.to_string()],
        _ => Vec::new(),
    }
}

/// Runs `ops` on one connection against table `t`; every reply, in order.
fn run(raw: &mut Raw, ops: &[Op], t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut named_parsed = false;
    for op in ops {
        let mut bytes = Vec::new();
        match op {
            Op::Exec {
                stmt,
                named,
                describe,
                param,
            } => {
                let sql = stmt.sql().replace("{t}", t);
                let name = if *named { "s_ins" } else { "" };
                if !*named || !named_parsed {
                    bytes.extend(parse(name, &sql));
                    raw.pending += 1;
                    named_parsed |= *named;
                }
                bytes.extend(bind(name, &params(*stmt, *param)));
                if *describe {
                    // The portal, or (for an even id) the statement: its
                    // answer is ParameterDescription then RowDescription/NoData.
                    let mut d = Vec::new();
                    if param % 2 == 0 {
                        d.push(b'S');
                        cstr(&mut d, name);
                    } else {
                        d.push(b'P');
                        cstr(&mut d, "");
                    }
                    bytes.extend(msg(b'D', &d));
                }
                let mut e = Vec::new();
                cstr(&mut e, "");
                let limit: i32 = if matches!(stmt, Stmt::Scan) { 2 } else { 0 };
                e.extend_from_slice(&limit.to_be_bytes());
                bytes.extend(msg(b'E', &e));
                raw.pending += 2 + usize::from(*describe);
            }
            Op::Rebind { param } => {
                bytes.extend(bind("", &params(Stmt::Insert, *param)));
                let mut e = Vec::new();
                cstr(&mut e, "");
                e.extend_from_slice(&0i32.to_be_bytes());
                bytes.extend(msg(b'E', &e));
                raw.pending += 2;
            }
            Op::CloseNamed => {
                let mut b = vec![b'S'];
                cstr(&mut b, "s_ins");
                bytes.extend(msg(b'C', &b));
                raw.pending += 1;
                named_parsed = false;
            }
            Op::Flush { .. } => bytes.extend(msg(b'H', &[])),
            Op::Sync => bytes.extend(msg(b'S', &[])),
        }
        raw.s.write_all(&bytes).unwrap();
        match op {
            Op::Flush { wait: true } => raw.replies(false, &mut out),
            Op::Sync => raw.replies(true, &mut out),
            _ => {}
        }
    }
    // Whatever is left open is rolled back, the same way on both runs.
    let mut bytes = parse("", "ROLLBACK");
    bytes.extend(bind("", &[]));
    let mut e = Vec::new();
    cstr(&mut e, "");
    e.extend_from_slice(&0i32.to_be_bytes());
    bytes.extend(msg(b'E', &e));
    bytes.extend(msg(b'S', &[]));
    raw.s.write_all(&bytes).unwrap();
    raw.replies(true, &mut out);
    out
}

#[test]
fn random_extended_protocol_sequences_behave_as_postgresql_and_leave_new_equal() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        backend_auth: Some("trust"),
        admin: true,
        ..Options::default()
    });
    let create = |t: &str, seed: std::ops::Range<u64>| {
        let rows: Vec<String> = seed
            .flat_map(|k| (1..=20).map(move |i| format!("({}, 'seed')", k * 1000 + i)))
            .chain(["(0, 'taken')".to_string()])
            .collect();
        vec![
            format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text NOT NULL)"),
            format!("INSERT INTO {t} VALUES {}", rows.join(", ")),
        ]
    };
    let seeds = std::env::var("TURNOUT_PROTOCOL_SEEDS")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(SEEDS);
    let setup = |url: &str, t: &str| {
        let stmts = create(t, seeds.clone());
        let stmts: Vec<&str> = stmts.iter().map(String::as_str).collect();
        run_direct_ok(url, &stmts);
    };
    // New first (from the log, old's rows go to new's tables at once); new
    // has t_direct too, which only the direct runs write (on old).
    setup(&s.direct_new_url(), "t");
    setup(&s.direct_new_url(), "t_direct");
    setup(&s.direct_url(), "t");
    setup(&s.direct_url(), "t_direct");
    for seed in seeds.clone() {
        // Even seeds run in reads_new: reads are served by new (which the
        // mirror keeps equal), writes still go to old first.
        let phase = if seed % 2 == 0 { "reads_new" } else { "mirror" };
        if s.phase() != phase {
            let command: &[&str] = if phase == "reads_new" {
                &["flip", "reads"]
            } else {
                &["rollback"]
            };
            s.ctl_ok(command);
        }
        let mut ops = sequence(seed);
        if let Some(n) = std::env::var("TURNOUT_PROTOCOL_OPS")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            ops.truncate(n);
            ops.push(Op::Sync);
        }
        let mut direct = Raw::connect(s.old.port, "app", "");
        let mut through = Raw::connect(s.proxy.port, "md5user", MD5_PASSWORD);
        eprintln!("seed {seed}: direct");
        let want = run(&mut direct, &ops, "t_direct");
        eprintln!("seed {seed}: through turnout");
        let got = run(&mut through, &ops, "t");
        if want != got {
            let at = want.iter().zip(&got).position(|(a, b)| a != b);
            panic!(
                "seed {seed} ({phase}): replies differ at {at:?}\nops: {ops:?}\ndirect:  {want:?}\nturnout: {got:?}"
            );
        }
        let old = contents(&s.direct_url(), "t", "id");
        if std::env::var("TURNOUT_PROTOCOL_DUMP").is_ok() {
            eprintln!(
                "replies: {got:?}\nold:\n{old}\nnew:\n{}\nlog:\n{}",
                contents(&s.direct_new_url(), "t", "id"),
                s.proxy.log_text()
            );
        }
        assert_same_rows(
            &format!("seed {seed}: old through turnout vs the direct run"),
            &contents(&s.direct_url(), "t_direct", "id"),
            &old,
        );
        assert_same_rows(
            &format!("seed {seed}: new vs old"),
            &old,
            &contents(&s.direct_new_url(), "t", "id"),
        );
        let records = s.divergences();
        assert!(
            records.is_empty(),
            "seed {seed}: divergence records: {records:?}"
        );
    }
    println!(
        "{} sequences of {OPS} messages: same replies, same rows",
        seeds.count()
    );
}

#[test]
#[ignore]
fn print_sequence() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    for op in sequence(seed) {
        println!("{op:?}");
    }
}

#[test]
fn random_extended_protocol_sequences_from_the_log() {
    from_the_log(random_extended_protocol_sequences_behave_as_postgresql_and_leave_new_equal);
}
