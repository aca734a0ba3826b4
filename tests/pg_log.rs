//! The mirror fed from the authority's own log (`mirror.source = "log"`):
//! every change old commits, by any statement, trigger, function or client,
//! reaches new exactly and in commit order.

mod common;

use common::exact::{assert_identical, rows_text, schema};
use common::{psql, run_direct_ok, scalar, stderr, stdout, Options, Setup};

fn log_setup(extra: &'static str) -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        logical: true,
        admin: true,
        mirror_extra: extra,
        ..Options::default()
    })
}

#[test]
fn writes_through_turnout_reach_new_exactly_from_the_log() {
    let s = log_setup("source = \"log\"");
    let status = s.ctl_ok(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["mirror_source"]["source"], "log", "{status}");
    schema(
        &s,
        &[
            "CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb, f float8, r real, a int[], t text, n numeric)",
        ],
    );
    // Wait for the publication to take the table (created after start).
    common::eventually("the new table is in the log", || {
        scalar(
            &format!(
                "host=127.0.0.1 port={} dbname=app user=postgres password=postgres",
                s.old.port
            ),
            "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'docs'",
        ) == "1"
    });
    s.run_ok(&[
        r#"INSERT INTO docs VALUES (1, '{"a":  1, "a": 2,  "n": 1.50}', 'null', '-0', 0.1, '[0:1]={1,2}', 'héllo', 1.10)"#,
        "INSERT INTO docs VALUES (2, '[]', '{\"x\": null}', 'NaN', '-Infinity', '{}', NULL, 'NaN')",
        "UPDATE docs SET t = 'changed', f = 1e-300 WHERE id = 2",
        "INSERT INTO docs VALUES (3, NULL, NULL, 3.141592653589793, 1.17549435e-38, '[-2:-1]={7,8}', E'tab\\there', 0)",
        "DELETE FROM docs WHERE id = 3",
    ]);
    assert_identical(&s, "docs", "id");
    // Under extra_float_digits = 0 and a LATIN1 client, too.
    let out = psql(
        &s.app_url(),
        &[
            "-c",
            "SET extra_float_digits = 0",
            "-c",
            "INSERT INTO docs (id, f, t) VALUES (4, 0.1::float8 + 0.2::float8, 'Grüße, ça va')",
        ],
        &[("PGCLIENTENCODING", "LATIN1")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_identical(&s, "docs", "id");
    let f = scalar(&s.direct_new_url(), "SELECT f::text FROM docs WHERE id = 4");
    assert_eq!(f, "0.30000000000000004");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// Sync mode: once a client's commit is answered, new has it: read
/// straight from new at once, for autocommit writes by either protocol and
/// for transactions.
#[test]
fn a_commit_is_answered_once_new_has_it() {
    let s = log_setup("source = \"log\"");
    schema(&s, &["CREATE TABLE t (id int PRIMARY KEY, v text)"]);
    common::block_on(async {
        let client = common::pg_client(&s.app_url()).await;
        let new = common::pg_client(&s.direct_new_url()).await;
        for i in 0..150i32 {
            match i % 3 {
                0 => {
                    client
                        .execute("INSERT INTO t VALUES ($1, 'extended')", &[&i])
                        .await
                        .unwrap();
                }
                1 => client
                    .batch_execute(&format!("INSERT INTO t VALUES ({i}, 'simple')"))
                    .await
                    .unwrap(),
                _ => {
                    client.batch_execute("BEGIN").await.unwrap();
                    client
                        .execute("INSERT INTO t VALUES ($1, 'block')", &[&i])
                        .await
                        .unwrap();
                    client
                        .execute("UPDATE t SET v = v || '!' WHERE id = $1", &[&i])
                        .await
                        .unwrap();
                    client.batch_execute("COMMIT").await.unwrap();
                }
            }
            let n: i64 = new
                .query_one("SELECT count(*) FROM t WHERE id = $1", &[&i])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1, "row {i} not on new when its commit was answered");
        }
    });
    assert_identical(&s, "t", "id");
    let v: serde_json::Value = serde_json::from_str(&s.ctl_ok(&["--json", "status"])).unwrap();
    assert_eq!(v["mirror_source"]["commits_not_waited"], 0, "{v}");
    assert_eq!(v["mirror_source"]["foreign_transactions"], 0, "{v}");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// A writer connected to old directly (a batch job bypassing turnout):
/// its rows reach new, and the report counts its transactions by table.
#[test]
fn writes_that_bypass_turnout_reach_new_and_are_counted() {
    let s = log_setup("");
    schema(
        &s,
        &[
            "CREATE TABLE batch (id int PRIMARY KEY, v int)",
            "CREATE TABLE app (id int PRIMARY KEY)",
        ],
    );
    s.run_ok(&["INSERT INTO app VALUES (1)", "INSERT INTO app VALUES (2)"]);
    run_direct_ok(
        &s.direct_url(),
        &[
            "INSERT INTO batch SELECT g, g * 2 FROM generate_series(1, 500) g",
            "UPDATE batch SET v = v + 1 WHERE id % 7 = 0",
            "DELETE FROM batch WHERE id > 490",
        ],
    );
    common::eventually("the batch job's rows are on new", || {
        rows_text(&s.direct_url(), "batch", "id") == rows_text(&s.direct_new_url(), "batch", "id")
    });
    assert_identical(&s, "app", "id");
    let v: serde_json::Value = serde_json::from_str(&s.ctl_ok(&["--json", "status"])).unwrap();
    let log = &v["mirror_source"];
    assert_eq!(log["source"], "log", "{v}");
    assert_eq!(log["foreign_transactions"], 3, "{v}");
    assert_eq!(
        log["foreign_tables"],
        serde_json::json!([{"table": "public.batch", "transactions": 3}]),
        "{v}"
    );
    // The report says so too.
    let out = std::process::Command::new(common::turnout_bin())
        .args(["report", "--config"])
        .arg(&s.proxy.config)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("writes that bypass turnout") && text.contains("public.batch (3)"),
        "{text}"
    );
}

/// turnout killed between old's commit and new's apply: the transaction
/// is on new once turnout runs again (the slot kept it), applied once.
#[test]
fn a_commit_not_applied_when_turnout_dies_is_applied_after_restart() {
    let mut s = log_setup("source = \"log\"");
    schema(&s, &["CREATE TABLE t (id int PRIMARY KEY, v int)"]);
    s.run_ok(&["INSERT INTO t VALUES (1, 1)"]);
    assert_identical(&s, "t", "id");
    // new's table held: the applier waits on it with the next change.
    let mut lock = common::hold_lock(&s.direct_new_url(), "t IN SHARE MODE", 6);
    common::eventually("new's table is held", || {
        scalar(
            &s.direct_new_url(),
            "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND mode = 'ShareLock' AND granted",
        ) == "1"
    });
    run_direct_ok(
        &s.direct_url(),
        &[
            "INSERT INTO t VALUES (2, 2)",
            "UPDATE t SET v = 10 WHERE id = 1",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(scalar(&s.direct_new_url(), "SELECT count(*) FROM t"), "1");
    // Killed with the group sent: new commits it (with its place in the
    // log) or not at all once the lock goes.
    s.proxy.kill();
    let _ = lock.wait();
    // Now with new down: old commits, nothing can be applied, turnout dies.
    s.new.as_mut().unwrap().kill().unwrap();
    s.restart_proxy("turnout-2.log");
    run_direct_ok(
        &s.direct_url(),
        &["INSERT INTO t VALUES (3, 3)", "DELETE FROM t WHERE id = 2"],
    );
    s.run_ok(&["INSERT INTO t VALUES (4, 4)"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.proxy.kill();
    s.new.as_mut().unwrap().restart().unwrap();
    s.restart_proxy("turnout-3.log");
    common::eventually("every commit of old is on new", || {
        rows_text(&s.direct_new_url(), "t", "id") == rows_text(&s.direct_url(), "t", "id")
    });
    s.run_ok(&["INSERT INTO t VALUES (5, 5)"]);
    assert_identical(&s, "t", "id");
    assert_eq!(
        rows_text(&s.direct_new_url(), "t", "id"),
        "(1,10)\n(3,3)\n(4,4)\n(5,5)"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// Triggers that stamp, count and audit, and cascades: new's own triggers
/// do not fire again for what the log applies; old's effects (its audit
/// rows, its cascaded deletes) arrive as old wrote them.
#[test]
fn triggers_and_cascades_leave_new_as_old_wrote_it() {
    let s = log_setup("");
    schema(
        &s,
        &[
            "CREATE TABLE parent (id int PRIMARY KEY, name text, touched timestamptz, edits int NOT NULL DEFAULT 0)",
            "CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent ON DELETE CASCADE, v text)",
            "CREATE TABLE audit (id bigserial PRIMARY KEY, tbl text, op text, at timestamptz DEFAULT clock_timestamp(), who text DEFAULT current_user)",
            "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched := clock_timestamp(); NEW.edits := COALESCE(OLD.edits, 0) + 1; RETURN NEW; END $$",
            "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (tbl, op) VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$",
            "CREATE TRIGGER parent_stamp BEFORE INSERT OR UPDATE ON parent FOR EACH ROW EXECUTE FUNCTION stamp()",
            "CREATE TRIGGER parent_audit AFTER INSERT OR UPDATE OR DELETE ON parent FOR EACH ROW EXECUTE FUNCTION audit()",
            "CREATE TRIGGER child_audit AFTER INSERT OR DELETE ON child FOR EACH ROW EXECUTE FUNCTION audit()",
        ],
    );
    s.run_ok(&[
        "INSERT INTO parent (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "INSERT INTO child VALUES (10, 1, 'x'), (11, 1, 'y'), (20, 2, 'z')",
        "UPDATE parent SET name = name || '!' WHERE id <= 2",
        "BEGIN",
        "UPDATE parent SET name = 'again' WHERE id = 1",
        "DELETE FROM parent WHERE id = 1",
        "COMMIT",
    ]);
    for (t, o) in [("parent", "id"), ("child", "id"), ("audit", "id")] {
        assert_identical(&s, t, o);
    }
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT count(*) FROM child"),
        "1"
    );
    // The sequence behind audit's ids was not moved on new by the log
    // (sequences catch up at the writes flip): a value is what old gave.
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// The table old writes is the one new gets, whatever the client's
/// search_path; a column added on both sides outside turnout is written
/// on new from then on.
#[test]
fn the_table_and_columns_are_the_ones_old_wrote() {
    let s = log_setup("");
    schema(
        &s,
        &[
            "CREATE SCHEMA other",
            "CREATE TABLE public.t (id int PRIMARY KEY, v text)",
            "CREATE TABLE other.t (id int PRIMARY KEY, v text)",
        ],
    );
    let out = psql(
        &s.app_url(),
        &[
            "-c",
            "SET search_path = other, public",
            "-c",
            "INSERT INTO t VALUES (1, 'in other')",
            "-c",
            "RESET search_path",
            "-c",
            "INSERT INTO t VALUES (1, 'in public')",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_identical(&s, "public.t", "id");
    assert_identical(&s, "other.t", "id");
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT v FROM other.t"),
        "in other"
    );
    schema(&s, &["ALTER TABLE public.t ADD COLUMN extra int"]);
    s.run_ok(&[
        "INSERT INTO t VALUES (2, 'two', 22)",
        "UPDATE t SET extra = 11 WHERE id = 1",
    ]);
    assert_identical(&s, "public.t", "id");
    assert_eq!(
        scalar(
            &s.direct_new_url(),
            "SELECT string_agg(extra::text, ',' ORDER BY id) FROM t"
        ),
        "11,22"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// Values drawn on old (volatile defaults behind a view, in COPY, ids from
/// a sequence) are on new as old drew them.
#[test]
fn volatile_values_behind_views_and_copy_are_old_s() {
    let s = log_setup("");
    schema(
        &s,
        &[
            "CREATE TABLE things (id bigserial PRIMARY KEY, token uuid NOT NULL DEFAULT gen_random_uuid(), at timestamptz NOT NULL DEFAULT clock_timestamp(), r float8 NOT NULL DEFAULT random(), name text)",
            "CREATE VIEW named_things AS SELECT id, name FROM things",
        ],
    );
    s.run_ok(&[
        "INSERT INTO named_things (name) VALUES ('through a view')",
        "INSERT INTO things (name) SELECT 'select ' || g FROM generate_series(1, 20) g",
    ]);
    let copy = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            &s.app_url(),
            "-c",
            "COPY things (name) FROM STDIN",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = copy.stdin.as_ref().unwrap();
        for i in 0..50 {
            writeln!(stdin, "copied {i}").unwrap();
        }
    }
    let out = copy.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_identical(&s, "things", "id");
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT count(*) FROM things"),
        "71"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// Writes no statement parser sees: a function that writes, called from
/// a SELECT (its list, its FROM, a cursor, COPY ... TO), EXPLAIN ANALYSE,
/// nextval, DO blocks drawing random(), SQL-level PREPARE/EXECUTE.
#[test]
fn writes_hidden_from_the_classifier_reach_new() {
    let s = log_setup("");
    schema(
        &s,
        &[
            "CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)",
            "INSERT INTO counter VALUES (1, 0)",
            "CREATE TABLE notes (id serial PRIMARY KEY, r float8, v text)",
            "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS $$ UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n $$",
            "CREATE SEQUENCE tickets",
        ],
    );
    s.run_ok(&[
        "SELECT bump()",
        "SELECT * FROM bump()",
        "BEGIN",
        "DECLARE c CURSOR FOR SELECT bump() FROM generate_series(1, 3)",
        "FETCH ALL FROM c",
        "COMMIT",
        "COPY (SELECT bump()) TO STDOUT",
        "EXPLAIN ANALYSE INSERT INTO notes (r, v) VALUES (random(), 'explained')",
        "SELECT nextval('tickets')",
        "DO $$ BEGIN INSERT INTO notes (r, v) VALUES (random(), 'do'); END $$",
    ]);
    let out = psql(
        &s.app_url(),
        &[
            "-c",
            "PREPARE ins(text) AS INSERT INTO notes (r, v) VALUES (random(), $1)",
            "-c",
            "EXECUTE ins('prepared')",
            "-c",
            "EXECUTE ins('again')",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    common::eventually("the hidden writes are on new", || {
        rows_text(&s.direct_url(), "counter", "id")
            == rows_text(&s.direct_new_url(), "counter", "id")
            && rows_text(&s.direct_url(), "notes", "id")
                == rows_text(&s.direct_new_url(), "notes", "id")
    });
    assert_eq!(scalar(&s.direct_new_url(), "SELECT n FROM counter"), "6");
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT count(*) FROM notes"),
        "4"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// A partitioned table: rows reach new through its root, including an
/// update that moves a row to another partition.
#[test]
fn partitioned_tables_are_mirrored_through_their_root() {
    let s = log_setup("");
    schema(
        &s,
        &[
            "CREATE TABLE events (id int, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)",
            "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
            "CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')",
        ],
    );
    s.run_ok(&[
        "INSERT INTO events VALUES (1, '2026-03-01', 'a'), (2, '2026-06-01', 'b'), (3, '2027-02-01', 'c')",
        "UPDATE events SET day = '2027-03-01' WHERE id = 1",
        "UPDATE events SET v = 'bb' WHERE id = 2",
        "DELETE FROM events WHERE id = 3",
    ]);
    assert_identical(&s, "events", "id, day");
    assert_identical(&s, "events_2027", "id, day");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// What a client's role may not do directly it may not do through turnout,
/// and what it may it still can: from the log nothing is added to its
/// statements (no RETURNING an INSERT-only role could not read).
#[test]
fn narrow_roles_rls_rules_and_odd_json_answer_as_directly() {
    let s = log_setup("");
    common::exact::narrow_role_writes_answer_as_directly(&s);
    // The UPDATE of a row this role cannot see is refused alike (it needs
    // SELECT to find the row by id): both failed, or both succeeded.
    for (t, o) in common::exact::NARROW_ROLE_TABLES {
        common::eventually(&format!("{t} is the same on new"), || {
            rows_text(&s.direct_url(), t, o) == rows_text(&s.direct_new_url(), t, o)
        });
    }
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// DDL under `mirror.ddl = "both"` travels in the log at its place: a
/// table made through turnout is made on new before its first rows, a
/// column added in a transaction before the rows that fill it.
#[test]
fn ddl_travels_in_the_log_at_its_place() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        logical: true,
        admin: true,
        ddl: Some("both"),
        ..Options::default()
    });
    s.run_ok(&[
        "CREATE TABLE made (id int PRIMARY KEY, v text)",
        "INSERT INTO made VALUES (1, 'one')",
        "BEGIN",
        "ALTER TABLE made ADD COLUMN extra int DEFAULT 7",
        "INSERT INTO made VALUES (2, 'two', 2)",
        "COMMIT",
        "CREATE INDEX CONCURRENTLY made_v ON made (v)",
        "SET search_path = public",
        "CREATE TABLE made2 (LIKE made INCLUDING ALL)",
        "INSERT INTO made2 SELECT * FROM made",
    ]);
    assert_identical(&s, "made", "id");
    assert_identical(&s, "made2", "id");
    assert_eq!(
        scalar(
            &s.direct_new_url(),
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'made_v'"
        ),
        "1"
    );
    assert_eq!(
        scalar(
            &s.direct_new_url(),
            "SELECT tableowner FROM pg_tables WHERE tablename = 'made'"
        ),
        "app",
        "made on new as the session's role"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// A change new cannot take (a column old gained alone) stops the applier,
/// recorded and counted; nothing is guessed and nothing is lost: once new
/// has the column, everything since is applied.
#[test]
fn a_relation_new_cannot_take_stops_the_applier_until_it_can() {
    let s = log_setup("");
    schema(&s, &["CREATE TABLE t (id int PRIMARY KEY, v text)"]);
    s.run_ok(&["INSERT INTO t VALUES (1, 'before')"]);
    run_direct_ok(&s.direct_url(), &["ALTER TABLE t ADD COLUMN added int"]);
    s.run_ok(&[
        "INSERT INTO t VALUES (2, 'after', 2)",
        "INSERT INTO t VALUES (3, 'after', 3)",
    ]);
    common::eventually("the applier says it stopped", || {
        let v: serde_json::Value =
            serde_json::from_str(&s.ctl_ok(&["--json", "status"])).unwrap_or_default();
        v["mirror_source"]["applier"] == "stopped"
    });
    let records = s.divergences();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("no column") && records[0].contains("added"),
        "{records:?}"
    );
    assert_eq!(scalar(&s.direct_new_url(), "SELECT count(*) FROM t"), "1");
    run_direct_ok(&s.direct_new_url(), &["ALTER TABLE t ADD COLUMN added int"]);
    common::eventually("everything since is on new", || {
        rows_text(&s.direct_url(), "t", "id") == rows_text(&s.direct_new_url(), "t", "id")
    });
    let v: serde_json::Value = serde_json::from_str(&s.ctl_ok(&["--json", "status"])).unwrap();
    assert_eq!(v["mirror_source"]["applier"], "applying", "{v}");
    assert_eq!(s.divergences().len(), 1);
}

/// A table without a replica identity: publishing its updates would make
/// old refuse them, so the log carries its inserts only. Its UPDATEs and
/// DELETEs are recorded (each one through turnout, with its table), never
/// run on new beside the log, and the table is recorded once with what
/// puts it in the log.
#[test]
fn a_table_without_replica_identity_has_its_updates_recorded() {
    let mut s = log_setup("");
    schema(&s, &["CREATE TABLE loose (a int, b text)"]);
    // Known when turnout starts: recorded at start, with what to change.
    s.restart_proxy("turnout-2.log");
    s.run_ok(&[
        "INSERT INTO loose VALUES (1, 'x'), (2, 'y')",
        "UPDATE loose SET b = 'z' WHERE a = 2",
        "DELETE FROM loose WHERE a = 1",
        "INSERT INTO loose VALUES (3, 'w')",
    ]);
    // Old took them all (nothing refused its updates).
    assert_eq!(rows_text(&s.direct_url(), "loose", "a"), "(2,z)\n(3,w)");
    assert_eq!(
        rows_text(&s.direct_new_url(), "loose", "a"),
        "(1,x)\n(2,y)\n(3,w)"
    );
    let log = s.proxy.log_text();
    assert!(
        log.contains("public.loose has no replica identity")
            && log.contains("REPLICA IDENTITY FULL"),
        "{log}"
    );
    let records = s.divergences();
    let per_statement = records
        .iter()
        .filter(|r| r.contains("mirror_error") && r.contains("\"table\":\"loose\""))
        .count();
    assert_eq!(per_statement, 2, "{records:?}");
    // With a replica identity, the log carries all of it.
    run_direct_ok(
        &s.direct_url(),
        &["ALTER TABLE loose REPLICA IDENTITY FULL"],
    );
    run_direct_ok(
        &s.direct_new_url(),
        &["ALTER TABLE loose REPLICA IDENTITY FULL"],
    );
    run_direct_ok(
        &s.direct_new_url(),
        &[
            "DELETE FROM loose WHERE a = 1",
            "UPDATE loose SET b = 'z' WHERE a = 2",
        ],
    );
    s.run_ok(&[
        "UPDATE loose SET b = 'full' WHERE a = 2",
        "DELETE FROM loose WHERE a = 3",
    ]);
    assert_identical(&s, "loose", "a");
    assert_eq!(rows_text(&s.direct_new_url(), "loose", "a"), "(2,full)");
}

/// A primary key added through turnout (as `pgbench -i` does, alone or in
/// a transaction): its answer comes once the log carries the table's
/// updates, so the very next UPDATE is in the log, not recorded.
#[test]
fn a_primary_key_added_through_turnout_puts_the_next_update_in_the_log() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        logical: true,
        admin: true,
        ddl: Some("both"),
        ..Options::default()
    });
    for (t, alter) in [
        ("keyed_later", "ALTER TABLE keyed_later ADD PRIMARY KEY (a)"),
        (
            "keyed_in_tx",
            "BEGIN; ALTER TABLE keyed_in_tx ADD PRIMARY KEY (a); COMMIT",
        ),
    ] {
        s.run_ok(&[
            &format!("CREATE TABLE {t} (a int NOT NULL, b text)"),
            &format!("INSERT INTO {t} VALUES (1, 'x'), (2, 'y')"),
            alter,
            &format!("UPDATE {t} SET b = 'z' WHERE a = 2"),
            &format!("DELETE FROM {t} WHERE a = 1"),
        ]);
        assert_identical(&s, t, "a");
        assert_eq!(rows_text(&s.direct_new_url(), t, "a"), "(2,z)");
    }
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// `check-config --connect` says which source turnout would take and what
/// to change on the servers; `mirror.source = "log"` where the log cannot
/// be had is an error with the reason.
#[test]
fn check_config_names_the_source_and_what_to_change() {
    let s = log_setup("");
    schema(
        &s,
        &[
            "CREATE TABLE loose (a int)",
            "CREATE TABLE keyed (id int PRIMARY KEY)",
        ],
    );
    let out = std::process::Command::new(common::turnout_bin())
        .args(["check-config", "--connect"])
        .arg(&s.proxy.config)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("mirror source: the log of old (logical decoding)"),
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE \"public\".\"loose\" REPLICA IDENTITY FULL"),
        "{text}"
    );
    assert!(text.contains("max_slot_wal_keep_size"), "{text}");
    // A cluster without wal_level = logical.
    let plain = Setup::start(Options {
        phase: Some("mirror"),
        ..Options::default()
    });
    let config = std::fs::read_to_string(&plain.proxy.config).unwrap();
    let out = std::process::Command::new(common::turnout_bin())
        .args(["check-config", "--connect"])
        .arg(&plain.proxy.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "mirror source: statements (row images), because old has wal_level = replica"
        ),
        "{}",
        stdout(&out)
    );
    let strict = plain.dir.path().join("strict.toml");
    std::fs::write(
        &strict,
        config.replace("[mirror]\n", "[mirror]\nsource = \"log\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(common::turnout_bin())
        .args(["check-config", "--connect"])
        .arg(&strict)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("mirror.source = \"log\": old has wal_level = replica; its log can feed the mirror with wal_level = logical"),
        "{}",
        stderr(&out)
    );
    // And turnout itself does not start on it.
    let port = turnout_harness::free_port().unwrap();
    let strict_run = plain.dir.path().join("strict-run.toml");
    std::fs::write(
        &strict_run,
        std::fs::read_to_string(&strict).unwrap().replace(
            &format!("127.0.0.1:{}", plain.proxy.port),
            &format!("127.0.0.1:{port}"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::turnout_bin())
        .args(["run", "--config"])
        .arg(&strict_run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("wal_level = logical"),
        "{}",
        stderr(&out)
    );
}

/// Through the whole cutover from the log: each change of authority turns
/// the log around (new's feeds old after the writes flip), and finalize
/// leaves no slot, publication or event trigger behind on either side.
#[test]
fn the_log_turns_around_at_the_writes_flip_and_finalize_leaves_nothing_behind() {
    let s = log_setup("");
    schema(&s, &["CREATE TABLE t (id serial PRIMARY KEY, v text)"]);
    s.run_ok(&["INSERT INTO t (v) VALUES ('mirror')"]);
    s.ctl_ok(&["flip", "reads"]);
    s.run_ok(&["INSERT INTO t (v) VALUES ('reads_new')"]);
    let flipped = s.ctl_ok(&["flip", "writes"]);
    assert!(flipped.contains("new's log feeds old now"), "{flipped}");
    s.run_ok(&[
        "INSERT INTO t (v) VALUES ('writes_new')",
        "UPDATE t SET v = v || '!' WHERE id = 1",
    ]);
    // Written on new first, applied to old from new's log.
    assert_identical(&s, "t", "id");
    let v: serde_json::Value = serde_json::from_str(&s.ctl_ok(&["--json", "status"])).unwrap();
    assert_eq!(v["mirror_source"]["log_of"], "new", "{v}");
    let superuser = |port: u16| {
        format!("host=127.0.0.1 port={port} dbname=app user=postgres password=postgres")
    };
    let (old, new) = (
        superuser(s.old.port),
        superuser(s.new.as_ref().unwrap().port),
    );
    let leftovers = |url: &str| {
        scalar(
            url,
            "SELECT (SELECT count(*) FROM pg_replication_slots) || ' ' || (SELECT count(*) FROM pg_publication) || ' ' || (SELECT count(*) FROM pg_event_trigger)",
        )
    };
    common::eventually("old's slot is gone once new's log feeds old", || {
        leftovers(&old) == "0 0 0"
    });
    assert_eq!(leftovers(&new), "1 2 1");
    let done = s.ctl_ok(&["finalize", "--yes"]);
    assert!(
        done.contains("slot and publications on new dropped"),
        "{done}"
    );
    assert_eq!(leftovers(&new), "0 0 0");
    assert_eq!(leftovers(&old), "0 0 0");
    s.run_ok(&["INSERT INTO t (v) VALUES ('finalized')"]);
    assert_eq!(scalar(&s.direct_new_url(), "SELECT count(*) FROM t"), "4");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// A large value stored out of line (TOAST) that an update leaves alone is
/// not in the log's row: it stays as it is on new.
#[test]
fn unchanged_large_values_stay_as_they_are_on_new() {
    let s = log_setup("");
    schema(
        &s,
        &["CREATE TABLE big (id int PRIMARY KEY, n int, body text)"],
    );
    // Incompressible, so it is stored out of line.
    s.run_ok(&[
        "INSERT INTO big SELECT 1, 0, string_agg(md5(g::text), '') FROM generate_series(1, 2000) g",
        "UPDATE big SET n = n + 1 WHERE id = 1",
        "UPDATE big SET n = n + 1 WHERE id = 1",
    ]);
    assert_identical(&s, "big", "id");
    assert_eq!(
        scalar(
            &s.direct_new_url(),
            "SELECT n || ':' || length(body) FROM big"
        ),
        "2:64000"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// A SKIP LOCKED job queue through a [mapping]: each job goes to the
/// worker that took it on old, on new's renamed table and column too.
#[test]
fn a_skip_locked_queue_through_the_mapping_keeps_each_worker_s_jobs() {
    let mut s = log_setup("");
    run_direct_ok(
        &s.direct_new_url(),
        &["CREATE TABLE tasks (id int PRIMARY KEY, taken_by int, done_at timestamptz)"],
    );
    run_direct_ok(
        &s.direct_url(),
        &["CREATE TABLE jobs (id int PRIMARY KEY, worker int, done_at timestamptz)"],
    );
    // The mapping, checked against both catalogs at start.
    let mut config = std::fs::read_to_string(&s.proxy.config).unwrap();
    config.push_str(
        "\n[[mapping.tables]]\nold = \"jobs\"\nnew = \"tasks\"\n[mapping.tables.columns]\nworker = \"taken_by\"\n",
    );
    std::fs::write(&s.proxy.config, config).unwrap();
    s.restart_proxy("turnout-2.log");
    s.run_ok(&["INSERT INTO jobs SELECT g FROM generate_series(1, 300) g"]);
    let url = s.app_url();
    let workers: Vec<_> = (1..=6)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                common::block_on(async move {
                    let client = common::pg_client(&url).await;
                    loop {
                        let taken = client
                            .query(
                                "UPDATE jobs SET worker = $1, done_at = clock_timestamp() WHERE id = (SELECT id FROM jobs WHERE worker IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
                                &[&w],
                            )
                            .await
                            .unwrap();
                        if taken.is_empty() {
                            break;
                        }
                    }
                })
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let old = scalar(
        &s.direct_url(),
        "SELECT string_agg(id || ':' || worker || ':' || done_at, ',' ORDER BY id) FROM jobs",
    );
    let new = scalar(
        &s.direct_new_url(),
        "SELECT string_agg(id || ':' || taken_by || ':' || done_at, ',' ORDER BY id) FROM tasks",
    );
    assert_eq!(old.split(',').count(), 300);
    assert_eq!(old, new);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// Large objects are not in the log: each write of one is recorded.
#[test]
fn large_object_writes_are_recorded() {
    let s = log_setup("");
    s.run_ok(&["SELECT lo_from_bytea(424242, '\\xdeadbeef')"]);
    let records = s.divergences();
    assert!(
        records
            .iter()
            .any(|r| r.contains("large objects are not in the log")),
        "{records:?}"
    );
}
