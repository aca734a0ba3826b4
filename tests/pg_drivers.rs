//! Application drivers of other ecosystems through turnout in phase mirror:
//! psycopg 3, asyncpg, node-postgres, pgjdbc and Go pgx (installed by
//! `.ci/run`), and tokio-postgres.
//! Each runs concurrent workers whose transactions commit and roll back,
//! with savepoints, batches and pipelines, prepared statements reused past
//! the driver's threshold and inserts relying on defaults. Old must then
//! hold exactly what the clients committed, and new must equal old row for
//! row, with nothing recorded as diverged.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKERS: &str = "6";
const STEPS: &str = "30";
const TABLES: [(&str, &str); 3] = [("ledger", "id"), ("accounts", "id"), ("items", "id")];

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

fn mirrored_with_schema() -> Setup {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ..Options::default()
    });
    let schema = std::fs::read_to_string(drivers_dir().join("schema.sql")).expect("schema.sql");
    // New first: from the log, old's rows go to new's tables at once.
    for url in [s.direct_new_url(), s.direct_url()] {
        let out = psql(&url, &["-v", "ON_ERROR_STOP=1", "-c", &schema], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    s
}

fn uri(s: &Setup) -> String {
    format!(
        "postgresql://app:{APP_PASSWORD}@127.0.0.1:{}/app",
        s.proxy.port
    )
}

fn jdbc_url(port: u16, password: &str) -> String {
    format!("jdbc:postgresql://127.0.0.1:{port}/app?user=app&password={password}")
}

/// pgjdbc, from Debian's libpostgresql-jdbc-java (SCRAM support inside).
const PGJDBC: &str = "/usr/share/java/postgresql.jar";

fn ids(v: &serde_json::Value, key: &str) -> BTreeSet<i64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .iter()
        .map(|i| i.as_i64().expect("an id"))
        .collect()
}

/// Old holds exactly what the clients committed, new equals old, and
/// nothing was recorded as diverged.
fn check(s: &Setup, report: &serde_json::Value) {
    let committed = ids(report, "committed");
    let rolled_back = ids(report, "rolled_back");
    assert!(!committed.is_empty() && !rolled_back.is_empty(), "{report}");
    let on_old: BTreeSet<i64> = contents(&s.direct_url(), "ledger", "id")
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    let missing: Vec<_> = committed.difference(&on_old).take(5).collect();
    let extra: Vec<_> = on_old.difference(&committed).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "old's ledger is not what the clients committed: {} committed, {} on old; missing {missing:?}, extra {extra:?} (rolled back: {})",
        committed.len(),
        on_old.len(),
        rolled_back.iter().filter(|i| on_old.contains(i)).count()
    );
    let items: i64 = scalar(&s.direct_url(), "SELECT count(*) FROM items")
        .parse()
        .unwrap();
    assert_eq!(Some(items), report["items"].as_i64(), "items on old");
    // Every transfer moved one unit: the total never changes.
    for url in [s.direct_url(), s.direct_new_url()] {
        assert_eq!(scalar(&url, "SELECT sum(balance) FROM accounts"), "800000");
    }
    assert_sides_identical(s, &TABLES);
    let records = s.divergences();
    assert!(
        records.is_empty(),
        "{} divergence records, e.g.:\n{}",
        records.len(),
        records
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!(
        "{} committed and {} rolled-back ledger rows as the clients said; old and new identical",
        committed.len(),
        rolled_back.len()
    );
}

#[test]
fn psycopg3_pipelines_executemany_savepoints_and_rollbacks() {
    let s = mirrored_with_schema();
    let mut cmd = Command::new("python3");
    cmd.arg(drivers_dir().join("pg_psycopg.py"))
        .args([&s.app_url(), WORKERS, STEPS]);
    let report = run_workload(cmd);
    check(&s, &report);
}

#[test]
fn asyncpg_prepare_with_flush_and_executemany() {
    let s = mirrored_with_schema();
    let mut cmd = Command::new("python3");
    cmd.arg(drivers_dir().join("pg_asyncpg.py"))
        .args([&uri(&s), WORKERS, STEPS]);
    let report = run_workload(cmd);
    check(&s, &report);
}

#[test]
fn node_postgres_named_and_pipelined_queries() {
    let s = mirrored_with_schema();
    let mut cmd = Command::new("node");
    cmd.arg(drivers_dir().join("pg_node.js"))
        .args([&uri(&s), WORKERS, STEPS])
        .env("NODE_PATH", drivers_dir().join("node/node_modules"));
    let report = run_workload(cmd);
    check(&s, &report);
}

#[test]
fn pgjdbc_begin_in_the_batch_named_statements_and_execute_batch() {
    let s = mirrored_with_schema();
    let mut cmd = Command::new("java");
    cmd.args(["-cp", PGJDBC])
        .arg(drivers_dir().join("JdbcWorkload.java"))
        .args([&jdbc_url(s.proxy.port, APP_PASSWORD), WORKERS, STEPS]);
    let report = run_workload(cmd);
    check(&s, &report);
}

#[test]
fn go_pgx_statement_cache_batches_and_savepoints() {
    let s = mirrored_with_schema();
    let mut cmd = Command::new("go");
    cmd.arg("run")
        .arg(drivers_dir().join("pg_pgx.go"))
        .args([&uri(&s), WORKERS, STEPS])
        // Debian's Go libraries, without modules (nothing is fetched).
        .env("GOPATH", "/usr/share/gocode")
        .env("GO111MODULE", "off")
        .env("GOCACHE", std::env::temp_dir().join("turnout-test-gocache"));
    let report = run_workload(cmd);
    check(&s, &report);
}

/// tokio-postgres: named statements (`s0`, ...) prepared once and reused,
/// pipelines when futures are polled together, savepoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_pipelines_prepared_statements_and_savepoints() {
    let s = tokio::task::spawn_blocking(mirrored_with_schema)
        .await
        .unwrap();
    let workers: i64 = WORKERS.parse().unwrap();
    let steps: i64 = STEPS.parse().unwrap();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let url = s.app_url();
        tasks.push(tokio::spawn(async move {
            let (mut c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let ins = c
                .prepare("INSERT INTO ledger (id, worker, n, amount, note) VALUES ($1, $2, $3, $4::float8::numeric, $5)")
                .await
                .unwrap();
            let (mut committed, mut rolled_back) = (Vec::new(), Vec::new());
            for step in 0..steps {
                let base = w * 1_000_000 + step * 10;
                let (w4, n4) = (w as i32, step as i32);
                let mut ab = [(w + step) % 8 + 1, (w + step + 3) % 8 + 1];
                ab.sort();
                let tx = c.transaction().await.unwrap();
                tx.execute(&ins, &[&base, &w4, &n4, &(step as f64 * 1.25), &"t"])
                    .await
                    .unwrap();
                for (id, delta) in [(ab[0], -1i64), (ab[1], 1)] {
                    tx.execute(
                        "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                        &[&delta, &(id as i32)],
                    )
                    .await
                    .unwrap();
                }
                if step % 3 == 0 {
                    tx.rollback().await.unwrap();
                    rolled_back.push(base);
                } else {
                    tx.commit().await.unwrap();
                    committed.push(base);
                }
                let mut tx = c.transaction().await.unwrap();
                let none: Option<&str> = None;
                tx.execute(&ins, &[&(base + 1), &w4, &n4, &1.0f64, &none])
                    .await
                    .unwrap();
                let sp = tx.savepoint("s").await.unwrap();
                let dup = sp
                    .execute(&ins, &[&(base + 1), &w4, &n4, &2.0f64, &none])
                    .await
                    .unwrap_err();
                assert_eq!(
                    dup.code(),
                    Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
                );
                sp.rollback().await.unwrap();
                tx.execute(&ins, &[&(base + 2), &w4, &n4, &3.0f64, &none])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                committed.extend([base + 1, base + 2]);
                // Polled together: one pipeline of three autocommit inserts.
                let (a, b, d) = (base + 3, base + 4, base + 5);
                type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
                let pa: [Param; 5] = [&a, &w4, &n4, &3.0f64, &none];
                let pb: [Param; 5] = [&b, &w4, &n4, &4.0f64, &none];
                let pd: [Param; 5] = [&d, &w4, &n4, &5.0f64, &none];
                let (r1, r2, r3) = futures_util::join!(
                    c.execute(&ins, &pa),
                    c.execute(&ins, &pb),
                    c.execute(&ins, &pd),
                );
                for r in [r1, r2, r3] {
                    r.unwrap();
                }
                committed.extend([a, b, d]);
                c.execute("INSERT INTO items (id, worker) VALUES ($1, $2)", &[&base, &w4])
                    .await
                    .unwrap();
                c.execute(&ins, &[&(base + 6), &w4, &n4, &6.0f64, &none])
                    .await
                    .unwrap();
                committed.push(base + 6);
            }
            (committed, rolled_back)
        }));
    }
    let (mut committed, mut rolled_back) = (Vec::new(), Vec::new());
    for t in tasks {
        let (c, r) = t.await.unwrap();
        committed.extend(c);
        rolled_back.extend(r);
    }
    let report = serde_json::json!({
        "committed": committed,
        "rolled_back": rolled_back,
        "items": workers * steps,
    });
    tokio::task::block_in_place(|| check(&s, &report));
}

/// pgjdbc sends BEGIN in the same batch as the transaction's first
/// statement: a rolled-back transaction must stay rolled back.
#[test]
fn pgjdbc_rolled_back_transactions_stay_rolled_back() {
    let s = mirrored_with_schema();
    for url in [s.direct_url(), s.direct_new_url()] {
        run_direct_ok(&url, &["CREATE TABLE alternate (id int PRIMARY KEY)"]);
    }
    let run = |port: u16, password: &str| {
        let out = Command::new("java")
            .args(["-cp", PGJDBC])
            .arg(drivers_dir().join("PgJdbcRollbacks.java"))
            .arg(jdbc_url(port, password))
            .output()
            .expect("run java");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // Through turnout: five of ten transactions committed, as directly.
    assert_eq!(run(s.proxy.port, APP_PASSWORD), "5");
    assert_eq!(
        scalar(&s.direct_url(), "SELECT count(*) FROM alternate"),
        "5"
    );
    assert_eq!(
        contents(&s.direct_url(), "alternate", "id"),
        "0\n2\n4\n6\n8\n"
    );
    assert_sides_identical(&s, &[("alternate", "id")]);
    run_direct_ok(&s.direct_url(), &["TRUNCATE alternate"]);
    assert_eq!(run(s.old.port, "backend-pw"), "5");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

// The same workloads with the mirror fed from old's log.

#[test]
fn psycopg3_pipelines_executemany_savepoints_and_rollbacks_from_the_log() {
    from_the_log(psycopg3_pipelines_executemany_savepoints_and_rollbacks);
}

#[test]
fn asyncpg_prepare_with_flush_and_executemany_from_the_log() {
    from_the_log(asyncpg_prepare_with_flush_and_executemany);
}

#[test]
fn node_postgres_named_and_pipelined_queries_from_the_log() {
    from_the_log(node_postgres_named_and_pipelined_queries);
}

#[test]
fn pgjdbc_begin_in_the_batch_named_statements_and_execute_batch_from_the_log() {
    from_the_log(pgjdbc_begin_in_the_batch_named_statements_and_execute_batch);
}

#[test]
fn pgjdbc_rolled_back_transactions_stay_rolled_back_from_the_log() {
    from_the_log(pgjdbc_rolled_back_transactions_stay_rolled_back);
}

#[test]
fn go_pgx_statement_cache_batches_and_savepoints_from_the_log() {
    from_the_log(go_pgx_statement_cache_batches_and_savepoints);
}

#[test]
fn tokio_postgres_pipelines_prepared_statements_and_savepoints_from_the_log() {
    from_the_log(tokio_postgres_pipelines_prepared_statements_and_savepoints);
}
