//! MariaDB through turnout in phase mirror with application drivers: PyMySQL
//! (text protocol, installed by `.ci/run`) and mysql_async (prepared
//! statements). Transactions commit and roll back, savepoints, batches,
//! and inserts that rely on volatile column defaults (`UUID()`, `RAND()`,
//! `UUID_SHORT()`), which statement context does not carry.

mod common;

use common::mysql::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn mirrored_with_schema() -> MySetup {
    let s = MySetup::start("mirror", "");
    let schema = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/my_schema.sql"),
    )
    .expect("my_schema.sql");
    for side in [&s.old, &s.new] {
        side.sql("app", &schema).expect("create the schema");
    }
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

#[test]
fn pymysql_transactions_savepoints_batches_and_volatile_defaults() {
    let s = mirrored_with_schema();
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/my_pymysql.py"))
        .args([&s.proxy.port.to_string(), MY_PASSWORD, "4", "25"])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "PyMySQL workload failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let ids = |k: &str| -> BTreeSet<i64> {
        report[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    // Old holds what the clients committed, not what they rolled back.
    assert_eq!(ledger_ids(&s), ids("committed"));
    assert!(ids("rolled_back").is_disjoint(&ledger_ids(&s)));
    let items = s.old.sql("app", "SELECT count(*) FROM items").unwrap();
    assert_eq!(items.trim(), report["items"].to_string());
    // UUID(), RAND() and UUID_SHORT() defaults: the same values on new.
    for (table, order) in [("ledger", "id"), ("accounts", "id"), ("items", "id")] {
        s.assert_identical(table, order);
    }
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
