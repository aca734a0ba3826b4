//! MariaDB through turnout in phase mirror with application drivers: PyMySQL
//! (text protocol), mysql2 with `execute` and MariaDB Connector/J with
//! server-side prepared statements (installed by `.ci/run`), mysql_async. Transactions commit and roll back, savepoints, batches,
//! and inserts that rely on volatile column defaults (`UUID()`, `RAND()`,
//! `UUID_SHORT()`), which statement context does not carry.

mod common;

use common::mysql::*;
use common::run_workload;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn mirrored_with_schema() -> MySetup {
    let s = MySetup::start("mirror", "");
    let schema = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/my_schema.sql"),
    )
    .expect("my_schema.sql");
    // new first, as a cutover does; from the log, old's rows reach new
    // through it (seeding new too would put them there twice).
    let new_schema: String = if common::log_source() {
        schema
            .split_inclusive(';')
            .filter(|st| !st.trim_start().starts_with("INSERT"))
            .collect()
    } else {
        schema.clone()
    };
    s.new_sql(&new_schema);
    s.old.sql("app", &schema).expect("create the schema");
    s
}

fn ledger_ids(s: &MySetup) -> BTreeSet<i64> {
    s.old
        .sql("app", "SELECT id FROM ledger ORDER BY id")
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn drivers_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// Old holds what the clients committed and not what they rolled back;
/// the ledger and the accounts are the same on new; the total never moved.
fn check_ledger(s: &MySetup, report: &serde_json::Value) {
    let ids = |k: &str| -> BTreeSet<i64> {
        report[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    assert!(!ids("rolled_back").is_empty(), "{report}");
    assert_eq!(ledger_ids(s), ids("committed"));
    assert!(ids("rolled_back").is_disjoint(&ledger_ids(s)));
    let items = s.old.sql("app", "SELECT count(*) FROM items").unwrap();
    assert_eq!(items.trim(), report["items"].to_string());
    for (table, order) in [("ledger", "id"), ("accounts", "id")] {
        s.assert_identical(table, order);
    }
    for side in [&s.old, &s.new] {
        let total = side
            .sql("app", "SELECT sum(balance) FROM accounts")
            .unwrap();
        assert_eq!(total.trim(), "800000");
    }
}

/// A prepared-statement driver: inserts relying on UUID()/RAND() defaults
/// cannot be given the authority's values through the binary protocol, so
/// each is recorded with its table; every other column is the same.
fn check_prepared_driver(s: &MySetup, report: &serde_json::Value) {
    check_ledger(s, report);
    if common::log_source() {
        // From the binary log the rows are old's, defaults and all.
        s.assert_identical("items", "id");
        assert!(s.divergences().is_empty(), "{:?}", s.divergences());
        return;
    }
    let q = "SELECT id, worker, status FROM items ORDER BY id";
    let (old, new) = (s.old.sql("app", q).unwrap(), s.new.sql("app", q).unwrap());
    common::assert_same_rows("items (id, worker, status)", &old, &new);
    let records: Vec<serde_json::Value> = s
        .divergences()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .all(|r| r["kind"] == "unsafe_statement" && r["table"] == "items"),
        "{records:?}"
    );
    assert_eq!(Some(records.len() as i64), report["items"].as_i64());
}

#[test]
fn pymysql_transactions_savepoints_batches_and_volatile_defaults() {
    pymysql_workload();
}

/// The drivers with the mirror fed from old's binary log.
#[test]
fn pymysql_from_the_log() {
    common::from_the_log(pymysql_workload);
}

#[test]
fn mysql2_from_the_log() {
    common::from_the_log(mysql2_execute_prepared_statements_pipelined);
}

#[test]
fn mariadb_connector_j_from_the_log() {
    common::from_the_log(mariadb_connector_j_server_side_prepared_statements);
}

fn pymysql_workload() {
    let s = mirrored_with_schema();
    let mut cmd = Command::new("python3");
    cmd.arg(drivers_dir().join("my_pymysql.py")).args([
        &s.proxy.port.to_string(),
        MY_PASSWORD,
        "4",
        "25",
    ]);
    let report = run_workload(cmd);
    check_ledger(&s, &report);
    // UUID(), RAND() and UUID_SHORT() defaults: the same values on new.
    s.assert_identical("items", "id");
    let distinct = s
        .old
        .sql(
            "app",
            "SELECT count(DISTINCT token), count(DISTINCT score) FROM items",
        )
        .unwrap();
    assert_eq!(
        distinct.trim(),
        format!("{}\t{}", report["items"], report["items"]),
        "each row got its own UUID() and RAND()"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn mysql2_execute_prepared_statements_pipelined() {
    let s = mirrored_with_schema();
    let mut cmd = Command::new("node");
    cmd.arg(drivers_dir().join("my_mysql2.js"))
        .args([&s.proxy.port.to_string(), MY_PASSWORD, "4", "20"])
        .env("NODE_PATH", drivers_dir().join("node/node_modules"));
    let report = run_workload(cmd);
    check_prepared_driver(&s, &report);
}

#[test]
fn mariadb_connector_j_server_side_prepared_statements() {
    let s = mirrored_with_schema();
    let url = format!(
        "jdbc:mariadb://127.0.0.1:{}/app?user=app&password={MY_PASSWORD}&useServerPrepStmts=true",
        s.proxy.port
    );
    let mut cmd = Command::new("java");
    cmd.args(["-cp", "/usr/share/java/mariadb-java-client.jar"])
        .arg(drivers_dir().join("JdbcWorkload.java"))
        .args([&url, "4", "20"]);
    let report = run_workload(cmd);
    check_prepared_driver(&s, &report);
}

/// A prepared INSERT (binary protocol) that leaves a column to UUID() cannot
/// be given the authority's value: it is recorded with its table, never
/// diverged silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_insert_leaving_uuid_to_the_default_is_recorded_with_its_table() {
    use mysql_async::prelude::*;
    let s = mirrored_with_schema();
    let url = format!("mysql://app:{MY_PASSWORD}@127.0.0.1:{}/app", s.proxy.port);
    let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .unwrap();
    c.exec_drop("INSERT INTO items (id, worker) VALUES (?, ?)", (1, 1))
        .await
        .unwrap();
    // Naming every volatile column leaves nothing to record.
    c.exec_drop(
        "INSERT INTO items (id, worker, token, score, short_id) VALUES (?, ?, ?, ?, ?)",
        (2, 1, "t-2", 0.5, 7),
    )
    .await
    .unwrap();
    drop(c);
    let records = s.divergences();
    if common::log_source() {
        // From the binary log: old's UUID() is on new too, nothing recorded.
        s.assert_identical("items", "id");
        assert!(records.is_empty(), "{records:?}");
        return;
    }
    assert_eq!(records.len(), 1, "{records:?}");
    let r: serde_json::Value = serde_json::from_str(&records[0]).unwrap();
    assert_eq!(r["kind"], "unsafe_statement");
    assert_eq!(r["table"], "items");
    assert_eq!(
        r["fingerprint"],
        "insert into items (id, worker) values (?)"
    );
    let detail = r["detail"].as_str().unwrap();
    assert!(
        detail.contains("token") && detail.contains("score") && detail.contains("short_id"),
        "{detail}"
    );
}
