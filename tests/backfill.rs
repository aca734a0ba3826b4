//! Backfill and verify over PostgreSQL: rows that predate mirroring are
//! copied to new while clients write through turnout, a killed turnout
//! resumes from its checkpoint, verify names the rows that differ and
//! `--repair` fixes them; the reads flip waits for both.

mod common;

use common::*;
use std::process::Child;
use std::time::{Duration, Instant};

fn setup(rows: u32, backfill: &str) -> Setup {
    let mut s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        backfill_guard: true,
        ..Options::default()
    });
    if !backfill.is_empty() {
        let mut text = std::fs::read_to_string(&s.proxy.config).unwrap();
        text.push_str(&format!("\n[backfill]\n{backfill}\n"));
        std::fs::write(&s.proxy.config, text).unwrap();
        s.restart_proxy("turnout-backfill.log");
    }
    let table = "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text)";
    run_direct_ok(&s.direct_new_url(), &[table]);
    // Rows written before mirroring began: on old only.
    run_direct_ok(
        &s.direct_url(),
        &[
            table,
            &format!(
                "INSERT INTO items SELECT g, g % 100, md5(g::text) FROM generate_series(1, {rows}) g"
            ),
            "ANALYZE items",
        ],
    );
    s
}

/// Writers through turnout on the table being copied: updates and deletes
/// of old rows, inserts of new ones.
fn writers(s: &Setup, rows: u32, seconds: u32) -> Child {
    let script = s.dir.path().join("writers.sql");
    std::fs::write(
        &script,
        format!(
            "\\set a random(1, {rows})\n\
             \\set b random(1, {rows})\n\
             \\set c random({}, {})\n\
             UPDATE items SET v = v + 1 WHERE id = :a;\n\
             DELETE FROM items WHERE id = :b AND v % 7 = 3;\n\
             INSERT INTO items (id, v, note) VALUES (:c, 1, 'new') ON CONFLICT (id) DO UPDATE SET v = items.v + 1;\n",
            rows + 1,
            rows * 2
        ),
    )
    .unwrap();
    pgbench_script(s, &script, 4, seconds)
}

fn no_client_errors(c: Child) -> String {
    let out = c.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "pgbench failed:\n{text}");
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    text
}

#[test]
fn a_million_rows_are_backfilled_under_writers_and_verify_finds_no_difference() {
    let rows = 1_000_000;
    let s = setup(rows, "batch_size = 2000");
    // The reads flip waits for the backfill and a clean verify.
    let refused = s.ctl(&["flip", "reads"]);
    assert!(
        stderr(&refused).contains("backfill of every table is not complete"),
        "{}",
        stderr(&refused)
    );
    let load = writers(&s, rows, 25);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    println!("{}", s.ctl_ok(&["backfill", "start"]));
    let watched = s.ctl_ok(&["backfill", "status", "--watch"]);
    println!("{}", watched.lines().last().unwrap_or_default());
    let st = wait_job(&s, "backfill", Duration::from_secs(600));
    println!(
        "backfill of {rows} rows under load: {:.1} s, {}",
        started.elapsed().as_secs_f64(),
        st
    );
    assert!(st["rows"].as_u64().unwrap() >= rows as u64 / 2, "{st}");
    let text = no_client_errors(load);
    println!(
        "{}",
        text.lines()
            .filter(|l| l.contains("tps") || l.contains("failed"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    s.ctl_ok(&["verify", "start"]);
    let v = wait_job(&s, "verify", Duration::from_secs(600));
    println!("verify: {v}");
    for k in ["missing", "extra", "differing"] {
        assert_eq!(v[k], 0, "{v}");
    }
    assert_eq!(v["last_clean"], true);
    assert_sides_identical(&s, &[("items", "id")]);
    let flipped = s.ctl_ok(&["flip", "reads"]);
    assert!(flipped.contains("done: mirror -> reads_new"), "{flipped}");
}

#[test]
fn a_killed_turnout_resumes_its_backfill_from_the_checkpoint() {
    let rows = 60_000;
    let mut s = setup(rows, "batch_size = 500\nrows_per_sec = 15000");
    let load = writers(&s, rows, 12);
    s.ctl_ok(&["backfill", "start"]);
    std::thread::sleep(Duration::from_millis(1500));
    // Killed mid-copy: the checkpoint says how far it got.
    s.proxy.kill();
    let checkpoint = s.dir.path().join("state.json.backfill.json");
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    println!("checkpoint at the kill: {cp}");
    assert_eq!(cp["state"], "running");
    let copied = cp["tables"]["items"]["rows"].as_u64().unwrap();
    assert!(copied > 0 && copied < rows as u64, "{cp}");
    let _ = load.wait_with_output();
    s.restart_proxy("turnout2.log");
    // It goes on by itself, from where it stopped.
    let st = wait_job(&s, "backfill", Duration::from_secs(120));
    println!("after the restart: {st}");
    let total = st["rows"].as_u64().unwrap();
    assert!(
        total >= rows as u64 - 2_000 && total < rows as u64 + copied,
        "{st}"
    );
    assert!(s
        .proxy
        .log_text()
        .contains("backfill resumes from its checkpoint"));
    s.ctl_ok(&["verify", "start"]);
    let v = wait_job(&s, "verify", Duration::from_secs(120));
    if v["last_clean"] != true {
        // A kill between the mirror's COMMIT and the authority's leaves that
        // write on new alone, with no record (turnout had no time to write
        // one): verify finds it by key and repair fixes it.
        println!("verify after the kill: {v}");
        repair_then_verify_clean(&s);
    }
    assert_sides_identical(&s, &[("items", "id")]);
}

#[test]
fn verify_names_rows_changed_on_new_and_repair_fixes_them() {
    let s = setup(5_000, "");
    s.ctl_ok(&["backfill", "start", "items"]);
    wait_job(&s, "backfill", Duration::from_secs(60));
    run_direct_ok(
        &s.direct_new_url(),
        &[
            "UPDATE items SET note = 'changed on new' WHERE id = 17",
            "DELETE FROM items WHERE id = 2500",
            "INSERT INTO items VALUES (999999, 0, 'only on new')",
        ],
    );
    s.ctl_ok(&["verify", "start"]);
    wait_job(&s, "verify", Duration::from_secs(60));
    // Differences found: said, and in the exit code.
    let out = s.ctl(&["verify", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    println!("{report}");
    for expected in [
        "missing on new: id=2500",
        "extra on new: id=999999",
        "differs on new: id=17",
        "1 missing, 1 extra, 1 differing",
        "differences found",
    ] {
        assert!(report.contains(expected), "{expected:?} missing:\n{report}");
    }
    let refused = s.ctl(&["flip", "reads"]);
    assert!(
        stderr(&refused).contains("no verify of every table has found both sides equal"),
        "{}",
        stderr(&refused)
    );
    s.ctl_ok(&["verify", "start", "--repair"]);
    let v = wait_job(&s, "verify", Duration::from_secs(60));
    assert_eq!(v["repaired"], 3, "{v}");
    assert_sides_identical(&s, &[("items", "id")]);
    s.ctl_ok(&["verify", "start"]);
    let v = wait_job(&s, "verify", Duration::from_secs(60));
    assert_eq!(v["last_clean"], true, "{v}");
    assert!(s.ctl_ok(&["verify", "status"]).contains("both sides equal"));
    s.ctl_ok(&["flip", "reads"]);
    // Every command that starts a job is on the record, the repair above all.
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    for command in [
        "\"command\":\"backfill start items\"",
        "\"command\":\"verify start --repair\"",
        "\"command\":\"verify start\"",
    ] {
        assert!(audit.contains(command), "{command} not in:\n{audit}");
    }
}

#[test]
fn backfill_and_verify_go_through_the_schema_mapping() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        backfill_guard: true,
        ..Options::default()
    });
    run_direct_ok(
        &s.direct_url(),
        &[
            "CREATE TABLE users (id int PRIMARY KEY, name text, email text, legacy int)",
            "INSERT INTO users SELECT g, 'n' || g, 'e' || g || '@x', g FROM generate_series(1, 3000) g",
        ],
    );
    run_direct_ok(
        &s.direct_new_url(),
        &[
            "CREATE TABLE accounts (id int PRIMARY KEY, full_name text, email_address text, \
           created_at timestamptz NOT NULL DEFAULT now())",
        ],
    );
    let mut text = std::fs::read_to_string(&s.proxy.config).unwrap();
    text.push_str(
        "\n[[mapping.tables]]\nold = \"users\"\nnew = \"accounts\"\ndrop = [\"legacy\"]\n\
         [mapping.tables.columns]\nname = \"full_name\"\nemail = \"email_address\"\n",
    );
    std::fs::write(&s.proxy.config, text).unwrap();
    s.ctl_ok(&["reload"]);
    s.ctl_ok(&["backfill", "start"]);
    wait_job(&s, "backfill", Duration::from_secs(60));
    let rows = |url: &str, sql: &str| {
        let out = psql(url, &["-c", &format!("COPY ({sql}) TO STDOUT")], &[]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let old = rows(
        &s.direct_url(),
        "SELECT id, name, email FROM users ORDER BY id",
    );
    let new = rows(
        &s.direct_new_url(),
        "SELECT id, full_name, email_address FROM accounts ORDER BY id",
    );
    assert_eq!(old.lines().count(), 3000);
    assert_same_rows("users -> accounts", &old, &new);
    run_direct_ok(
        &s.direct_new_url(),
        &["UPDATE accounts SET full_name = 'x' WHERE id = 42"],
    );
    s.ctl_ok(&["verify", "start", "--repair"]);
    let v = wait_job(&s, "verify", Duration::from_secs(60));
    assert_eq!(v["differing"], 1, "{v}");
    assert_eq!(v["repaired"], 1, "{v}");
    assert_eq!(
        scalar(
            &s.direct_new_url(),
            "SELECT full_name FROM accounts WHERE id = 42"
        ),
        "n42"
    );
    s.ctl_ok(&["flip", "reads"]);
}

#[test]
fn verify_yields_to_clients_that_lock_rows_in_any_order() {
    // Found by a chaos schedule: verify's share locks, taken in the order
    // the table was scanned, deadlocked with transfers between accounts,
    // and the server broke the deadlock by failing a client. Verify now
    // locks in key order and gives up a lock wait after 250 ms (before the
    // server looks for a deadlock), then tries again.
    let s = setup(200, "");
    s.ctl_ok(&["backfill", "start"]);
    wait_job(&s, "backfill", Duration::from_secs(60));
    // One client locks two rows highest key first, with a pause between.
    let script = s.dir.path().join("transfer.sql");
    std::fs::write(
        &script,
        "\\set a random(1, 200)\n\
         \\set b random(1, 200)\n\
         BEGIN;\n\
         UPDATE items SET v = v + 1 WHERE id = greatest(:a, :b);\n\
         SELECT pg_sleep(0.005);\n\
         UPDATE items SET v = v - 1 WHERE id = least(:a, :b);\n\
         COMMIT;\n",
    )
    .unwrap();
    let clients = pgbench_script(&s, &script, 1, 10);
    let started = Instant::now();
    let mut verifies = 0;
    while started.elapsed() < Duration::from_secs(8) {
        s.ctl_ok(&["verify", "start"]);
        let v = wait_job(&s, "verify", Duration::from_secs(60));
        assert_eq!(v["state"], "done", "{v}");
        verifies += 1;
    }
    let text = no_client_errors(clients);
    println!(
        "{verifies} verifies while the client ran: {}",
        text.lines()
            .find(|l| l.contains("failed transactions"))
            .unwrap_or_default()
    );
    s.ctl_ok(&["verify", "start"]);
    let v = wait_job(&s, "verify", Duration::from_secs(60));
    assert_eq!(v["last_clean"], true, "{v}");
}

/// An ordinary schema: orders reference users (and sort before them), a
/// table exists on old only. The backfill copies users before orders, the
/// table new lacks is reported by name and the others are copied; progress
/// counts are exact (no statistics were taken).
#[test]
fn backfill_goes_in_foreign_key_order_and_one_table_does_not_stop_the_rest() {
    let s = setup(10, "");
    let fk = [
        "CREATE TABLE users (id int PRIMARY KEY, name text)",
        "CREATE TABLE orders (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users, amount int)",
        "CREATE TABLE lines (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders)",
    ];
    run_direct_ok(&s.direct_new_url(), &fk);
    run_direct_ok(&s.direct_url(), &fk);
    run_direct_ok(
        &s.direct_url(),
        &[
            "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 300) g",
            "INSERT INTO orders SELECT g, 1 + g % 300, g FROM generate_series(1, 900) g",
            "INSERT INTO lines SELECT g, 1 + g % 900 FROM generate_series(1, 1200) g",
            "CREATE TABLE archive (id int PRIMARY KEY)",
            "INSERT INTO archive VALUES (1)",
        ],
    );
    s.ctl_ok(&["backfill", "start"]);
    let started = Instant::now();
    let st = loop {
        let st = job_status(&s, "backfill");
        if st["state"] != "running" {
            break st;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(st["state"], "failed", "{st}");
    let error = st["error"].as_str().unwrap();
    assert!(
        error.contains("1 table(s) could not be copied") && error.contains("archive"),
        "{st}"
    );
    for t in st["tables"].as_array().unwrap() {
        match t["table"].as_str().unwrap() {
            "archive" => assert!(t["error"].as_str().is_some(), "{t}"),
            _ => {
                assert_eq!(t["done"], true, "{t}");
                assert_eq!(t["rows"], t["estimated"], "exact counts: {t}");
            }
        }
    }
    assert_sides_identical(&s, &[("users", "id"), ("orders", "id"), ("lines", "id")]);
    // The status command says it failed, and why.
    let out = s.ctl(&["backfill", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("archive"), "{}", stdout(&out));
}
