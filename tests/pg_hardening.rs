//! Issue 30, PostgreSQL side: what a client with a login tried against
//! turnout, each attack reproduced and now doing no harm (shadow reads
//! without side effects, the server's word on how it reads SQL text, writes
//! by other spellings, reads of what a client kept on one side, a COMMIT
//! refused on both sides, the flag file, the report in a terminal).

mod common;

use common::*;
use serde_json::Value;

const SAMPLE_ALL: &str = "rate = 1.0\nper_fingerprint_per_sec = 0\nrecheck_delay_ms = 50";

fn n_on(url: &str) -> i64 {
    scalar(url, "SELECT n FROM counter WHERE id = 1")
        .parse()
        .unwrap()
}

#[test]
fn a_sampled_read_with_side_effects_runs_once_and_its_write_is_recorded() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        sampling: SAMPLE_ALL,
        ..Options::default()
    });
    s.run_ok(&[
        "CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)",
        "INSERT INTO counter VALUES (1, 0)",
    ]);
    // Made on each side directly: turnout's catalog of functions that may
    // write has not seen it (the review's case).
    for url in [s.direct_url(), s.direct_new_url()] {
        run_direct_ok(
            &url,
            &[
                "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS \
               $$ UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n $$",
                "CREATE VIEW bumped AS SELECT bump() AS n",
            ],
        );
    }
    // New serves reads; the shadow read runs on old.
    s.ctl_ok(&["flip", "reads", "--force"]);
    let out = s.psql(&s.app_url(), &["-c", "SELECT * FROM bumped"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1", "the client's read ran once");
    eventually("the sample is counted as not read-only", || {
        s.read_diff_summary()["skipped"]["not_read_only"].as_u64() == Some(1)
    });
    // Once, on the read target; the shadow and its re-checks changed nothing.
    assert_eq!(n_on(&s.direct_new_url()), 1);
    assert_eq!(
        n_on(&s.direct_url()),
        0,
        "the shadow read ran the function on old"
    );
    assert!(
        !std::fs::read_to_string(s.read_diffs())
            .unwrap_or_default()
            .contains("bumped"),
        "no read-diff record"
    );
    // The client's read wrote on new alone: found by its shadow, recorded,
    // and the shape is mirrored from now on.
    let records = s.divergences();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("\"kind\":\"unmirrored_write\""),
        "{records:?}"
    );
    assert!(records[0].contains("\"side\":\"old\""), "{records:?}");
    s.run_ok(&["SELECT * FROM bumped"]);
    assert_eq!(n_on(&s.direct_new_url()), 2);
    assert_eq!(n_on(&s.direct_url()), 1, "the next one reached old too");
}

fn mirrored(extra: &'static str) -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        sampling: extra,
        ..Options::default()
    })
}

const T: [(&str, &str); 1] = [("t", "id")];

/// The review's text: with `standard_conforming_strings` off the server
/// reads an INSERT where a parser that assumes it on reads a string.
const HIDDEN_INSERT: &str = "SELECT 'a\\' , ' ; INSERT INTO t VALUES (ID, 1); -- '";

#[test]
fn string_settings_changed_by_any_path_are_followed_from_the_server_s_word() {
    let s = mirrored("");
    s.run_ok(&["CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)"]);
    // A setting built from pieces: no statement text names it.
    let hidden = |id: u32| HIDDEN_INSERT.replace("ID", &id.to_string());
    s.run_ok(&[
        "SELECT set_config('standard_' || 'conforming_strings', 'off', false)",
        &hidden(1),
    ]);
    assert_eq!(scalar(&s.direct_url(), "SELECT count(*) FROM t"), "1");
    // Set for the role: the session starts with it (reported at startup).
    for url in [s.direct_url(), s.direct_new_url()] {
        run_direct_ok(
            &url,
            &["ALTER ROLE app SET standard_conforming_strings = off"],
        );
    }
    s.run_ok(&[&hidden(2)]);
    // Through a function's SET clause.
    for url in [s.direct_url(), s.direct_new_url()] {
        run_direct_ok(&url, &["ALTER ROLE app RESET standard_conforming_strings"]);
    }
    s.run_ok(&[
        "CREATE FUNCTION lax() RETURNS void LANGUAGE plpgsql AS $$ BEGIN \
         PERFORM set_config('standard_conforming_' || 'strings', 'off', false); END $$",
        "SELECT lax()",
        &hidden(3),
    ]);
    assert_eq!(scalar(&s.direct_url(), "SELECT count(*) FROM t"), "3");
    assert_sides_identical(&s, &T);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    assert!(
        s.proxy
            .log_text()
            .contains("with backslash escapes or an encoding"),
        "the session's change is in the log"
    );
}

#[test]
fn explain_analyse_and_large_objects_by_other_spellings_reach_the_mirror_or_the_record() {
    let s = mirrored("");
    s.run_ok(&[
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)",
        "INSERT INTO t SELECT i, i FROM generate_series(1, 5) i",
    ]);
    s.run_ok(&[
        "EXPLAIN (ANALYSE) UPDATE t SET v = v + 10 WHERE id = 1",
        "EXPLAIN (ANALYSE true, COSTS off) DELETE FROM t WHERE id = 2",
        "EXPLAIN ANALYSE INSERT INTO t VALUES (6, 6)",
        "SELECT * FROM lo_from_bytea(515151, '\\x01'::bytea)",
        "SELECT U&\"lo\\005Ffrom\\005Fbytea\"(525252, '\\x02'::bytea)",
        "SELECT * FROM pg_catalog.lo_put(515151, 1, '\\x0203'::bytea)",
    ]);
    assert_sides_identical(&s, &T);
    for oid in ["515151", "525252"] {
        let sql = format!("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = {oid}");
        assert_eq!(
            scalar(&s.direct_new_url(), &sql),
            "1",
            "large object {oid} on new"
        );
    }
    let sql = "SELECT encode(lo_get(515151), 'hex')";
    assert_eq!(
        scalar(&s.direct_new_url(), sql),
        scalar(&s.direct_url(), sql)
    );
    // A cursor runs its query at each FETCH, on old alone: recorded.
    s.run_ok(&[
        "BEGIN; DECLARE c CURSOR FOR SELECT lo_from_bytea(535353, '\\x03'::bytea); FETCH c; COMMIT",
    ]);
    let on_new = scalar(
        &s.direct_new_url(),
        "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 535353",
    );
    let records = s.divergences();
    assert!(
        on_new == "1"
            || records
                .iter()
                .any(|r| r.contains("a cursor over a query with side effects")),
        "the cursor's large object is on old alone, unrecorded: {records:?}"
    );
}

#[test]
fn a_table_a_client_kept_on_old_is_read_from_old_and_trips_no_rollback() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        sampling: "rate = 0.0\n[guards]\nwatch_secs = 20\nabort_errors = 0",
        ..Options::default()
    });
    // `mirror.ddl = authority_only`: the table is made on old alone.
    s.run_ok(&[
        "CREATE TABLE mine (id int PRIMARY KEY)",
        "INSERT INTO mine VALUES (1)",
    ]);
    s.ctl_ok(&["flip", "reads", "--force"]);
    for _ in 0..3 {
        let out = s.psql(&s.app_url(), &["-c", "SELECT count(*) FROM mine"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "1");
    }
    // A table no side has is the client's own error, and counts for nothing.
    let out = s.psql(&s.app_url(), &["-c", "SELECT * FROM no_side_has_it"]);
    assert!(!out.status.success());
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(s.phase(), "reads_new", "the reads flip was rolled back");
    assert!(!s.proxy.log_text().contains("rolled back by itself"));
}

#[test]
fn a_deferred_key_refused_at_commit_on_both_sides_is_the_client_s_error_only() {
    let s = mirrored("");
    s.run_ok(&[
        "CREATE TABLE parent (id int PRIMARY KEY)",
        "CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)",
    ]);
    let text = "BEGIN; INSERT INTO child VALUES (1, 99); COMMIT";
    let direct = psql(&s.direct_url(), &["-c", text], &[]);
    let through = s.psql(&s.app_url(), &["-c", text]);
    assert!(!direct.status.success() && !through.status.success());
    assert_eq!(
        stderr(&through),
        stderr(&direct),
        "the same error as directly"
    );
    // By statements in one transaction, extended protocol.
    let url = s.app_url();
    block_on(async move {
        let mut c = pg_client(&url).await;
        let tx = c.transaction().await.unwrap();
        tx.execute("INSERT INTO child VALUES ($1, $2)", &[&2i32, &98i32])
            .await
            .unwrap();
        let e = tx.commit().await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
            "{e}"
        );
    });
    for url in [s.direct_url(), s.direct_new_url()] {
        assert_eq!(scalar(&url, "SELECT count(*) FROM child"), "0");
    }
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    let status = s.ctl_ok(&["--json", "status"]);
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["mirror_errors"].as_u64().unwrap_or(0), 0, "{status}");
}

#[test]
fn a_flag_file_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = mirrored("");
    let flag = s.dir.path().join("phase.flag");
    std::fs::write(&flag, "mirror\n").unwrap();
    std::fs::set_permissions(&flag, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::write(&flag, "reads_new\n").unwrap();
    eventually("the file is refused in the log", || {
        s.proxy.log_text().contains("writable by group or others")
    });
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(s.phase(), "mirror");
    // Its owner's own file, not writable by others: obeyed.
    std::fs::set_permissions(&flag, std::fs::Permissions::from_mode(0o600)).unwrap();
    eventually("the flag file flips reads", || s.phase() == "reads_new");
}

#[test]
fn row_keys_with_terminal_escapes_are_shown_escaped_by_the_report() {
    let s = mirrored(SAMPLE_ALL);
    let key = "k\u{1b}[2K\r\u{1b}[1AVERDICT: GO. forged\nline";
    s.run_ok(&["CREATE TABLE kv (k text PRIMARY KEY, v int)"]);
    let url = s.app_url();
    let k = key.to_string();
    block_on(async move {
        let c = pg_client(&url).await;
        c.execute("INSERT INTO kv VALUES ($1, 1)", &[&k])
            .await
            .unwrap();
    });
    // Drift planted on new: the sampled read finds it.
    run_direct_ok(&s.direct_new_url(), &["UPDATE kv SET v = 2"]);
    eventually("the mismatch is in the report file", || {
        std::fs::read_to_string(s.read_diffs())
            .unwrap_or_default()
            .contains("confirmed")
            || {
                s.run_ok(&["SELECT k, v FROM kv"]);
                false
            }
    });
    let out = std::process::Command::new(turnout_bin())
        .args(["report", &s.read_diffs().display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    assert!(!text.contains('\u{1b}'), "an escape reached the terminal");
    assert!(!text.contains('\r'));
    assert!(text.starts_with("VERDICT: NO-GO"));
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("VERDICT: GO") || l.starts_with("line")),
        "a forged line"
    );
    assert!(text.contains("\\u{1b}[2K\\r"), "the key shown escaped");
}

/// turnout started again with `lines` added to its `[limits]` section.
fn restart_with_limits(s: &mut Setup, lines: &str) {
    let text = std::fs::read_to_string(&s.proxy.config)
        .unwrap()
        .replace("[limits]\n", &format!("[limits]\n{lines}\n"));
    std::fs::write(&s.proxy.config, text).unwrap();
    s.restart_proxy("turnout2.log");
}

#[test]
fn one_client_cannot_make_turnout_hold_unbounded_messages_statements_or_images() {
    use common::raw::{field, msg, parse, Raw};
    use std::io::Write;
    let mut s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        backend_auth: Some("trust"),
        admin: true,
        ..Options::default()
    });
    restart_with_limits(
        &mut s,
        "max_pipeline_bytes = 8388608\nmax_prepared_statements = 50\nmax_image_bytes = 1048576",
    );
    s.run_ok(&["CREATE TABLE big (id int PRIMARY KEY, pad text NOT NULL)"]);
    for url in [s.direct_url(), s.direct_new_url()] {
        run_direct_ok(
            &url,
            &["INSERT INTO big SELECT i, repeat('x', 2000) FROM generate_series(1, 2000) i"],
        );
    }
    let port = s.proxy.port;
    let fatal = |raw: &mut Raw| loop {
        let (tag, body) = raw.read();
        if tag == b'E' {
            return (field(&body, b'C'), field(&body, b'M'));
        }
    };
    // Parse messages of 1 MiB with no Sync, past 8 MiB.
    let mut raw = Raw::connect(port, "md5user", MD5_PASSWORD);
    for i in 0..9 {
        let big = parse("", &format!("SELECT '{}' AS c{i}", "y".repeat(1 << 20)));
        if raw.s.write_all(&big).is_err() {
            break;
        }
    }
    let (code, message) = fatal(&mut raw);
    assert_eq!(code, "54000", "{message}");
    assert!(message.contains("limits.max_pipeline_bytes"), "{message}");
    // Named statements past the limit, in batches.
    let mut raw = Raw::connect(port, "md5user", MD5_PASSWORD);
    let mut out = Vec::new();
    for i in 0..40 {
        raw.s
            .write_all(&parse(&format!("s{i}"), "SELECT 1"))
            .unwrap();
    }
    raw.s.write_all(&msg(b'S', &[])).unwrap();
    raw.replies(true, &mut out);
    assert!(!out.iter().any(|l| l.starts_with('E')), "{out:?}");
    for i in 40..60 {
        raw.s
            .write_all(&parse(&format!("s{i}"), "SELECT 1"))
            .unwrap();
    }
    let _ = raw.s.write_all(&msg(b'S', &[]));
    let (code, message) = fatal(&mut raw);
    assert_eq!(code, "54000", "{message}");
    assert!(
        message.contains("limits.max_prepared_statements"),
        "{message}"
    );
    // A write whose rows are more than 1 MiB: refused, undone on old.
    let out = s.psql(&s.app_url(), &["-c", "UPDATE big SET pad = pad || 'z'"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("limits.max_image_bytes"),
        "{}",
        stderr(&out)
    );
    let changed = "SELECT count(*) FROM big WHERE pad LIKE '%z'";
    assert_eq!(
        scalar(&s.direct_url(), changed),
        "0",
        "the write stayed on old"
    );
    // Smaller writes go, and other clients never noticed.
    s.run_ok(&["UPDATE big SET pad = pad || 'z' WHERE id <= 100"]);
    assert_eq!(scalar(&s.direct_url(), changed), "100");
    assert_sides_identical(&s, &[("big", "id")]);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn idle_connections_to_the_metrics_port_never_fail_a_health_probe() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let port = turnout_harness::free_port().unwrap();
    let s = Setup::start(Options {
        metrics: Some(port),
        ..Options::default()
    });
    // 24 connections that send nothing, each opened again as soon as it
    // is cut (the review's attack).
    let stop = Arc::new(AtomicBool::new(false));
    let idlers: Vec<_> = (0..24)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    c.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                        .unwrap();
                    let mut b = [0u8; 16];
                    // Held until turnout cuts it (or the test ends).
                    while !stop.load(Ordering::Relaxed) {
                        match c.read(&mut b) {
                            Ok(0) => break,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                            _ => break,
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mut failed = 0;
    for _ in 0..20 {
        let answered = (|| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            // An orchestrator's probe (a generous four seconds to answer:
            // an idle connection held a slot for five).
            c.set_read_timeout(Some(std::time::Duration::from_secs(4)))
                .ok()?;
            c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").ok()?;
            let mut body = String::new();
            c.read_to_string(&mut body).ok()?;
            Some(body.contains("200 OK"))
        })();
        if answered != Some(true) {
            failed += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in idlers {
        let _ = t.join();
    }
    assert_eq!(failed, 0, "health probes failed under idle connections");
    assert!(s.psql(&s.app_url(), &["-c", "SELECT 1"]).status.success());
}

#[test]
fn notifications_of_one_transaction_reach_the_client_together() {
    let s = mirrored("");
    // psycopg's own check (test_stop_after_batch): notifications the server
    // sent in one batch are read in one go.
    let script = r#"
import sys, psycopg
dsn = sys.argv[1]
got = []
for i in range(20):
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn, autocommit=True) as sender:
        listener.execute("LISTEN ch")
        with sender.transaction():
            sender.execute("NOTIFY ch, 'a'")
            sender.execute("NOTIFY ch, 'b'")
        got.append(len(list(listener.notifies(timeout=5, stop_after=1))))
print(got)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(format!(
            "host=127.0.0.1 port={} dbname=app user=app password={APP_PASSWORD}",
            s.proxy.port
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("{:?}", [2; 20]),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_user_name_gets_one_challenge_and_salts_survive_a_reload() {
    use common::raw::challenge;
    let s = mirrored("");
    let port = s.proxy.port;
    // Known: app (SCRAM), md5user (md5). Unknown names are challenged
    // one way or the other, each always the same way.
    let names: Vec<String> = (0..40).map(|i| format!("ghost{i}")).collect();
    let first: Vec<(u32, Option<String>)> = names.iter().map(|n| challenge(port, n)).collect();
    for (n, c) in names.iter().zip(&first) {
        assert_eq!(&challenge(port, n), c, "{n} was challenged two ways");
    }
    let md5 = first.iter().filter(|c| c.0 == 5).count();
    assert!(
        md5 > 0 && md5 < names.len(),
        "{md5} of {} unknown names got md5",
        names.len()
    );
    assert_eq!(challenge(port, "md5user").0, 5);
    // A real user's salt is the same after a reload, as an unknown name's is.
    let (code, salt) = challenge(port, "app");
    assert_eq!(code, 10);
    s.ctl_ok(&["reload"]);
    assert_eq!(
        challenge(port, "app"),
        (10, salt),
        "the salt changed at the reload"
    );
    assert_eq!(challenge(port, "ghost0"), first[0].clone());
    // And logins still work.
    s.run_ok(&["SELECT 1"]);
    let md5 = format!("host=127.0.0.1 port={port} dbname=app user=md5user password={MD5_PASSWORD}");
    assert_eq!(scalar(&md5, "SELECT 1"), "1");
}
