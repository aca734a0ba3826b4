//! Phase `mirror` against two real PostgreSQL clusters: writes land on both
//! sides in the same order with the same values; mirror failures are recorded
//! or fail the statement, as configured.

mod common;

use common::*;
use std::process::Command;

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
    let s = mirrored();
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

/// Sessions spread over several session threads (each its own event loop):
/// writers on every thread leave both sides identical, and a cancel request,
/// which arrives on a connection of its own and so on another thread than
/// the query it cancels, reaches that query's backend and no other.
#[test]
fn sessions_on_several_threads_mirror_alike_and_cancel_across_threads() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        worker_threads: Some(3),
        ..Options::default()
    });
    let url = s.app_url();
    pgbench(&url, &["-i", "-s", "1", "-q"]);
    for mode in ["simple", "prepared"] {
        let text = pgbench(&url, &["-n", "-M", mode, "-c", "7", "-j", "2", "-t", "100"]);
        assert!(text.contains("number of failed transactions: 0"), "{text}");
    }
    assert_sides_identical(&s, &PGBENCH_TABLES);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    block_on(async {
        let sleeper = pg_client(&url).await;
        let others = [pg_client(&url).await, pg_client(&url).await];
        let token = sleeper.cancel_token();
        let started = std::time::Instant::now();
        let slept = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(30)").await });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("send cancel");
        let err = slept.await.unwrap().unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(15));
        for other in &others {
            let row = other
                .query_one("SELECT 'untouched'::text", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), "untouched");
        }
    });
}

#[test]
fn concurrent_writers_in_and_out_of_transactions_stay_identical() {
    let s = mirrored();
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
        // What turnout recorded, shown first: it explains any difference.
        println!("after -M {mode}: divergence records: {:?}", s.divergences());
        assert_sides_identical(&s, &[("counters", "id")]);
    }
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// A proxy in phase `mirror` with DDL applied to both sides.
fn mirrored() -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        ..Options::default()
    })
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
    let out = s.psql(
        &url,
        &["-c", "UPDATE events SET what = 'changed' WHERE id = 1"],
    );
    assert!(
        out.status.success(),
        "client saw an error: {}",
        stderr(&out)
    );
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM events"), 6);
    let log = s.divergences();
    assert_eq!(log.len(), 6, "{log:?}");
    assert!(
        log[..5]
            .iter()
            .all(|l| l.contains("\"kind\":\"mirror_error\"")
                && l.contains("\"table\":\"events\"")
                && l.contains("insert into events values (?)")
                && l.contains("\"side\":\"new\"")),
        "{log:?}"
    );
    // The record names the row: table and key.
    assert!(
        log[5].contains("\"table\":\"events\"") && log[5].contains("\"key\":\"id=1\""),
        "{log:?}"
    );
    // Statements themselves stay out of the log unless configured.
    assert!(log.iter().all(|l| !l.contains("\"statement\"")), "{log:?}");
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
    assert_eq!(s.divergences().len(), 6);
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
    let s = mirrored();
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
fn inserts_from_a_select_with_serial_ids_carry_the_authoritys_rows() {
    let s = mirrored();
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
    // new's sequence is not used: the ids are the authority's.
    let out = psql(
        &s.direct_new_url(),
        &["-c", "SELECT setval('dst_id_seq', 100)"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.psql(
        &url,
        &[
            "-c",
            "INSERT INTO dst (v) SELECT v * 10 FROM src ORDER BY v DESC",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_sides_identical(&s, &[("dst", "id"), ("src", "v")]);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
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

#[test]
fn random_and_uuid_calls_in_insert_values_give_the_same_rows_on_both_sides() {
    let s = mirror_with_table(
        None,
        "CREATE TABLE draws (id int PRIMARY KEY, token uuid, r float8, at timestamptz, s bigint)",
    );
    let url = s.app_url();
    let out = s.psql(
        &url,
        &[
            "-c",
            "CREATE SEQUENCE draw_seq",
            "-c",
            "INSERT INTO draws VALUES (1, gen_random_uuid(), random(), clock_timestamp(), nextval('draw_seq')), \
             (2, gen_random_uuid(), random() * 100, clock_timestamp(), nextval('draw_seq'))",
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO draws VALUES (3, md5(random()::text)::uuid, floor(random() * 10), now(), NULL)",
            "-c",
            "COMMIT",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_sides_identical(&s, &[("draws", "id")]);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    println!("{}", contents(&s.direct_new_url(), "draws", "id"));

    // Per-row values in an UPDATE are carried over in the row images.
    let out = s.psql(&url, &["-c", "UPDATE draws SET r = random()"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_sides_identical(&s, &[("draws", "id")]);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    // Unless the key moves: then it is a statement again, and recorded.
    let out = s.psql(&url, &["-c", "UPDATE draws SET id = id + 10, r = random()"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = s.divergences();
    assert!(
        log.iter().any(
            |l| l.contains("\"kind\":\"unsafe_statement\"") && l.contains("primary-key column")
        ),
        "{log:?}"
    );
}

#[test]
fn on_unsafe_fail_refuses_writes_that_cannot_be_reproduced_before_either_side_runs_them() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        mirror_extra: "on_unsafe = \"fail\"",
        ..Options::default()
    });
    let url = s.app_url();
    let out = s.psql(
        &url,
        &[
            "-c",
            "CREATE TABLE draws (id int PRIMARY KEY, r float8)",
            "-c",
            "CREATE TABLE log (id serial PRIMARY KEY, v int)",
            "-c",
            "CREATE TABLE plain (v int)",
            "-c",
            "INSERT INTO plain VALUES (1)",
            "-c",
            "INSERT INTO draws VALUES (1, 0.5), (2, random())",
            "-c",
            // Per-row values are carried over in the row images.
            "UPDATE draws SET r = random() WHERE id = 2",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_sides_identical(&s, &[("draws", "id")]);

    // A key that moves cannot be carried in a row image (it names the new
    // key only): mirrored as a statement, which is refused here.
    let out = s.psql(&url, &["-c", "UPDATE draws SET id = id + 10, r = random()"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refused because new could not reproduce its effect exactly")
            && err.contains("mirror.on_unsafe"),
        "{err}"
    );
    println!("refused: {err}");
    assert_eq!(
        count(&s.direct_url(), "SELECT count(*) FROM draws WHERE r = 0.5"),
        1
    );
    // In a transaction: the transaction fails, as on any error.
    let out = s.psql(
        &url,
        &[
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO log (v) VALUES (1)",
            "-c",
            "UPDATE plain SET v = v + 1",
            "-c",
            "COMMIT",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no primary key"), "{}", stderr(&out));
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM log"), 0);
    assert_eq!(count(&s.direct_new_url(), "SELECT count(*) FROM log"), 0);
    assert_sides_identical(&s, &[("draws", "id")]);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn rules_route_statements_by_fingerprint() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        mirror_extra: r#"
[[mirror.rules]]
fingerprint = "insert into audit values (?)"
action = "never_mirror"

[[mirror.rules]]
fingerprint = "SELECT count(*) FROM only_on_new"
action = "new"

[[mirror.rules]]
fingerprint = "select bump(?)"
action = "always_mirror"
"#,
        ..Options::default()
    });
    let url = s.app_url();
    let out = s.psql(
        &url,
        &[
            "-c",
            "CREATE TABLE audit (v int)",
            "-c",
            "CREATE TABLE hits (id int PRIMARY KEY, n int)",
            "-c",
            "INSERT INTO hits VALUES (1, 0)",
            "-c",
            "CREATE FUNCTION bump(i int) RETURNS int LANGUAGE sql AS \
             'UPDATE hits SET n = n + 1 WHERE id = i RETURNING n'",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = psql(
        &s.direct_new_url(),
        &[
            "-c",
            "CREATE TABLE only_on_new (v int)",
            "-c",
            "INSERT INTO only_on_new VALUES (1), (2), (3)",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = s.psql(
        &url,
        &[
            "-c",
            "INSERT INTO audit VALUES (7)",
            "-c",
            "SELECT bump(1)",
            "-c",
            "SELECT bump(1)",
            "-c",
            "select  count(*)  from only_on_new",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n2\n3");
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM audit"), 1);
    assert_eq!(count(&s.direct_new_url(), "SELECT count(*) FROM audit"), 0);
    // A SELECT that writes, mirrored because a rule says so.
    assert_sides_identical(&s, &[("hits", "id")]);
    assert_eq!(count(&s.direct_new_url(), "SELECT n FROM hits"), 2);
    // The same through the extended protocol.
    let script = s.dir.path().join("rules.sql");
    std::fs::write(
        &script,
        "SELECT count(*) FROM only_on_new;\nSELECT bump(1);\n",
    )
    .unwrap();
    pgbench(
        &url,
        &[
            "-n",
            "-M",
            "prepared",
            "-t",
            "3",
            "-f",
            &script.display().to_string(),
        ],
    );
    assert_eq!(count(&s.direct_new_url(), "SELECT n FROM hits"), 5);
    assert_sides_identical(&s, &[("hits", "id")]);
}

#[test]
fn async_mode_applies_pgbench_on_new_after_the_clients_finish() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        mirror_extra: "mode = \"async\"",
        ..Options::default()
    });
    let url = s.app_url();
    pgbench(&url, &["-i", "-s", "1", "-q"]);
    // Queues are per session: order holds within one session, not across
    // sessions. Let pgbench -i's session reach new before others update its rows.
    eventually("new has pgbench's accounts", || {
        count(&s.direct_new_url(), "SELECT count(*) FROM pgbench_accounts") == 100_000
    });
    for mode in ["simple", "prepared"] {
        let text = pgbench(&url, &["-n", "-M", mode, "-c", "8", "-j", "2", "-t", "100"]);
        assert!(text.contains("number of failed transactions: 0"), "{text}");
    }
    let expected = count(&s.direct_url(), "SELECT count(*) FROM pgbench_history");
    assert_eq!(expected, 2 * 8 * 100);
    eventually("new has every history row", || {
        count(&s.direct_new_url(), "SELECT count(*) FROM pgbench_history") == expected
    });
    // TPC-B's writes commute across sessions, so the order the session
    // queues drain in does not matter: both sides end identical.
    println!("divergence log: {:?}", s.divergences());
    assert_sides_identical(&s, &PGBENCH_TABLES);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// turnout in async mirror mode (`extra` more `[mirror]` keys) with an
/// `events` table created through it and present on new.
fn async_with_events(mirror_extra: &'static str) -> Setup {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        mirror_extra,
        ..Options::default()
    });
    let out = s.psql(
        &s.app_url(),
        &["-c", "CREATE TABLE events (id int PRIMARY KEY)"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("the table exists on new", || {
        count(&s.direct_new_url(), "SELECT count(*) FROM events") == 0
    });
    s
}

#[test]
fn async_mode_does_not_wait_for_a_stalled_new_and_records_what_overflows() {
    let s = async_with_events("mode = \"async\"\nasync_queue = 3");
    let url = s.app_url();
    // Stall new: a session of its own holds the table locked.
    let mut locker = hold_lock(&s.direct_new_url(), "events", 3);
    // One session, ten autocommit inserts: the client gets every answer
    // from old while new is stalled (the lock is held until after they return).
    let mut args = Vec::new();
    for i in 1..=10 {
        args.push("-c".to_string());
        args.push(format!("INSERT INTO events VALUES ({i})"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s.psql(&url, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        locker.try_wait().unwrap().is_none(),
        "new's lock ended before the client finished: {}",
        s.proxy.log_text()
    );
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM events"), 10);
    locker.wait().unwrap();

    // One insert waits on the lock, three fill the queue, the rest overflow:
    // each one that did not reach new is in the log.
    eventually("new has what was queued", || {
        let on_new = count(&s.direct_new_url(), "SELECT count(*) FROM events");
        let overflowed = s
            .divergences()
            .iter()
            .filter(|l| l.contains("\"kind\":\"async_overflow\""))
            .count() as i64;
        overflowed > 0 && on_new + overflowed == 10
    });
    println!("divergence log:\n{}", s.divergences().join("\n"));
}

#[test]
fn stopping_turnout_lets_open_transactions_and_async_queues_finish() {
    let mut s = async_with_events("mode = \"async\"");
    let url = s.app_url();
    // new is stalled, so what the session writes waits in its queue.
    let mut locker = hold_lock(&s.direct_new_url(), "events", 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("INSERT INTO events VALUES (1)")
            .await
            .unwrap();
        let tx = client.transaction().await.unwrap();
        tx.batch_execute("INSERT INTO events VALUES (2)")
            .await
            .unwrap();
        // Stop requested mid-transaction: the transaction still commits.
        s.proxy.terminate();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        tx.batch_execute("INSERT INTO events VALUES (3)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Then, between transactions, the session is closed with a clear error.
        let err = client
            .batch_execute("SELECT 1")
            .await
            .expect_err("the session should be closed");
        let text = err.to_string();
        assert!(
            err.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN)
                || text.contains("closed"),
            "{text}"
        );
        println!("after the transaction: {text}");
    });
    // turnout exits once new has taken the queue (the lock ends after 2 s).
    let status = s.proxy.wait_exit(std::time::Duration::from_secs(20));
    assert!(status.is_some(), "turnout did not stop");
    // SIGTERM, and nothing cut short: exit code 0.
    assert_eq!(status.unwrap().code(), Some(0));
    locker.wait().unwrap();
    assert_eq!(count(&s.direct_url(), "SELECT count(*) FROM events"), 3);
    assert_eq!(count(&s.direct_new_url(), "SELECT count(*) FROM events"), 3);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

// TPC-B and the concurrent writers with the mirror fed from old's log.

#[test]
fn pgbench_tpcb_from_the_log() {
    from_the_log(pgbench_tpcb_leaves_both_sides_identical_in_every_mode);
}

#[test]
fn concurrent_writers_from_the_log() {
    from_the_log(concurrent_writers_in_and_out_of_transactions_stay_identical);
}
