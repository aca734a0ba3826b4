//! Phase `mirror` against two real PostgreSQL clusters: writes land on both
//! sides in the same order with the same values; mirror failures are recorded
//! or fail the statement, as configured.

mod common;

use common::*;
use std::process::Command;

/// Full contents of a table, in a fixed order, as text.
fn contents(url: &str, table: &str, order: &str) -> String {
    let out = psql(
        url,
        &[
            "-c",
            &format!("COPY (SELECT * FROM {table} ORDER BY {order}) TO STDOUT"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PGBENCH_TABLES: [(&str, &str); 4] = [
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
    ("pgbench_accounts", "aid"),
    ("pgbench_history", "tid, bid, aid, delta, mtime"),
];

fn assert_sides_identical(s: &Setup, tables: &[(&str, &str)]) {
    for (table, order) in tables {
        let old = contents(&s.direct_url(), table, order);
        let new = contents(&s.direct_new_url(), table, order);
        assert!(
            !old.is_empty() || *table == "pgbench_history",
            "{table} is empty"
        );
        if old != new {
            let first = old
                .lines()
                .zip(new.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("old: {a}\nnew: {b}"))
                .unwrap_or_else(|| {
                    format!("{} vs {} rows", old.lines().count(), new.lines().count())
                });
            panic!("{table} differs between old and new; first difference:\n{first}");
        }
        println!(
            "{table}: {} rows identical on both sides",
            old.lines().count()
        );
    }
}

fn pgbench(url: &str, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args(args)
        .arg(url)
        .output()
        .expect("run pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[test]
fn pgbench_tpcb_leaves_both_sides_identical_in_every_mode() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        ..Options::default()
    });
    let url = s.app_url();
    // Schema and rows through turnout: DDL runs on both, COPY is mirrored.
    pgbench(&url, &["-i", "-s", "1", "-q"]);
    assert_sides_identical(&s, &PGBENCH_TABLES);
    for mode in ["simple", "extended", "prepared"] {
        let text = pgbench(&url, &["-n", "-M", mode, "-c", "8", "-j", "2", "-t", "150"]);
        assert!(text.contains("number of failed transactions: 0"), "{text}");
        assert_sides_identical(&s, &PGBENCH_TABLES);
    }
    // pgbench_history.mtime comes from CURRENT_TIMESTAMP: pinned to the
    // authority's value, so it matched above. Nothing was recorded.
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn concurrent_writers_in_and_out_of_transactions_stay_identical() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        ..Options::default()
    });
    let url = s.app_url();
    let out = s.psql(
        &url,
        &[
            "-c",
            "CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL, touched timestamptz)",
            "-c",
            "INSERT INTO counters SELECT i, 0, now() FROM generate_series(1, 5) i",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Many sessions update the same five rows: some in transactions that
    // commit, some that roll back, some in autocommit.
    let script = s.dir.path().join("conflicts.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 4)\n\\set d random(-5, 5)\n\
         BEGIN;\n\
         UPDATE counters SET n = n + :d, touched = now() WHERE id = :id;\n\
         UPDATE counters SET n = n + 1 WHERE id = :id + 1;\n\
         COMMIT;\n\
         BEGIN;\n\
         UPDATE counters SET n = n + 1000 WHERE id = :id;\n\
         ROLLBACK;\n\
         UPDATE counters SET n = n * 2 WHERE id = :id AND abs(n) < 1000;\n",
    )
    .unwrap();
    for mode in ["simple", "prepared"] {
        let text = pgbench(
            &url,
            &[
                "-n",
                "-M",
                mode,
                "-c",
                "8",
                "-j",
                "2",
                "-t",
                "100",
                "-f",
                &script.display().to_string(),
            ],
        );
        assert!(text.contains("number of failed transactions: 0"), "{text}");
    }
    assert_sides_identical(&s, &[("counters", "id")]);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// A proxy in phase `mirror` with DDL applied to both sides, failure policy
/// `on_error`, and `create` run through it.
fn mirror_with_table(on_error: Option<&'static str>, create: &str) -> Setup {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        on_error,
        ..Options::default()
    });
    let out = s.psql(&s.app_url(), &["-c", create]);
    assert!(out.status.success(), "{}", stderr(&out));
    s
}

fn count(url: &str, sql: &str) -> i64 {
    stdout(&psql(url, &["-c", sql], &[])).parse().unwrap_or(-1)
}

#[test]
fn new_stopped_under_record_clients_see_no_errors_and_the_log_lists_the_misses() {
    let mut s = mirror_with_table(None, "CREATE TABLE events (id int PRIMARY KEY, what text)");
    let url = s.app_url();
    let out = s.psql(&url, &["-c", "INSERT INTO events VALUES (1, 'before')"]);
    assert!(out.status.success(), "{}", stderr(&out));

    s.new.as_mut().unwrap().kill().unwrap();
    for i in 2..=6 {
        let out = s.psql(
            &url,
            &["-c", &format!("INSERT INTO events VALUES ({i}, 'during')")],
        );
        assert!(
            out.status.success(),
            "client saw an error: {}",
            stderr(&out)
        );
    }
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM events"), 6);
    let log = s.divergences();
    assert_eq!(log.len(), 5, "{log:?}");
    assert!(
        log.iter().all(|l| l.contains("\"kind\":\"mirror_error\"")
            && l.contains("insert into events values (?)")
            && l.contains("\"side\":\"new\"")),
        "{log:?}"
    );
    println!("divergence log while new was down:\n{}", log.join("\n"));

    // Back up: mirroring resumes on the next write.
    s.new.as_mut().unwrap().restart().unwrap();
    let out = s.psql(&url, &["-c", "INSERT INTO events VALUES (7, 'after')"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        count(
            &s.direct_new_url(),
            "SELECT count(*) FROM events WHERE id IN (1, 7)"
        ),
        2
    );
    assert_eq!(s.divergences().len(), 5);
}

#[test]
fn new_stopped_under_fail_clients_get_errors_and_nothing_is_half_applied() {
    let mut s = mirror_with_table(
        Some("fail"),
        "CREATE TABLE events (id int PRIMARY KEY, what text)",
    );
    let url = s.app_url();

    s.new.as_mut().unwrap().kill().unwrap();
    let out = s.psql(&url, &["-c", "INSERT INTO events VALUES (1, 'autocommit')"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("turnout: the write was not applied because new refused it"),
        "{err}"
    );
    println!("autocommit write with new down: {err}");
    let out = s.psql(
        &url,
        &[
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO events VALUES (2, 'in a transaction')",
            "-c",
            "COMMIT",
        ],
    );
    assert!(!out.status.success());
    println!("transaction with new down: {}", stderr(&out));
    // Reads still work.
    let out = s.psql(&url, &["-c", "SELECT count(*) FROM events"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Nothing of the failed writes is on old.
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM events"), 0);
    s.new.as_mut().unwrap().restart().unwrap();
    assert_eq!(count(&s.direct_new_url(), "SELECT count(*) FROM events"), 0);
    let out = s.psql(&url, &["-c", "INSERT INTO events VALUES (3, 'after')"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_sides_identical(&s, &[("events", "id")]);
}

#[test]
fn serial_ids_and_default_now_are_identical_under_concurrent_inserts() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        ..Options::default()
    });
    let url = s.app_url();
    let out = s.psql(
        &url,
        &[
            "-c",
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL, \
                 amount int NOT NULL, placed_at timestamptz NOT NULL DEFAULT now(), \
                 token uuid NOT NULL DEFAULT gen_random_uuid(), note text DEFAULT 'none')",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Inserts with server-generated values, alone, in batches, in
    // transactions that commit and that roll back.
    let script = s.dir.path().join("inserts.sql");
    std::fs::write(
        &script,
        "\\set c random(1, 100)\n\
         INSERT INTO orders (customer, amount) VALUES (:c, 1);\n\
         BEGIN;\n\
         INSERT INTO orders (customer, amount) VALUES (:c, 2), (:c, 3) RETURNING id;\n\
         INSERT INTO orders (customer, amount, note) VALUES (:c, 4, 'x') RETURNING placed_at;\n\
         COMMIT;\n\
         BEGIN;\n\
         INSERT INTO orders (customer, amount) VALUES (:c, 99);\n\
         ROLLBACK;\n",
    )
    .unwrap();
    let text = pgbench(
        &url,
        &[
            "-n",
            "-M",
            "simple",
            "-c",
            "8",
            "-j",
            "2",
            "-t",
            "50",
            "-f",
            &script.display().to_string(),
        ],
    );
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    assert_sides_identical(&s, &[("orders", "id")]);
    assert_eq!(
        count(&s.direct_new_url(), "SELECT count(*) FROM orders"),
        8 * 50 * 4
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn inserts_whose_generated_values_cannot_be_pinned_are_recorded_as_unsafe() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        ..Options::default()
    });
    let url = s.app_url();
    let out = s.psql(
        &url,
        &[
            "-c",
            "CREATE TABLE src (v int)",
            "-c",
            "CREATE TABLE dst (id serial PRIMARY KEY, v int)",
            "-c",
            "INSERT INTO src VALUES (1), (2)",
            "-c",
            "INSERT INTO dst (v) SELECT v FROM src",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let log = s.divergences();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].contains("\"kind\":\"unsafe_statement\"") && log[0].contains("INSERT ... SELECT"),
        "{log:?}"
    );
}

#[test]
fn a_write_the_mirror_refuses_fails_the_transaction_at_commit_under_fail() {
    let s = mirror_with_table(
        Some("fail"),
        "CREATE TABLE items (id int PRIMARY KEY, qty int)",
    );
    let url = s.app_url();
    // new has a rule old lacks: it will refuse negative quantities.
    let out = psql(
        &s.direct_new_url(),
        &["-c", "ALTER TABLE items ADD CHECK (qty >= 0)"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.psql(
        &url,
        &[
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO items VALUES (1, 5)",
            "-c",
            "INSERT INTO items VALUES (2, -1)",
            "-c",
            "COMMIT",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("rolled back on both sides"), "{err}");
    println!("COMMIT after new refused a write: {err}");
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM items"), 0);
    assert_eq!(count(&s.direct_new_url(), "SELECT count(*) FROM items"), 0);
    // An autocommit write the mirror refuses fails at once.
    let out = s.psql(&url, &["-c", "INSERT INTO items VALUES (3, -1)"]);
    assert!(!out.status.success());
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM items"), 0);
}
