//! The writes flip against real PostgreSQL: `new` becomes the authority
//! through a barrier while pgbench runs, with sequences moved so ids stay
//! unique, `old` kept current for rollback, and `finalize` as the end.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn setup(extra: &'static str, guards: &'static str) -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        mirror_extra: extra,
        sampling: guards,
        ..Options::default()
    })
}

/// pgbench's tables and the one with a serial id, alike on both sides.
fn assert_identical(s: &Setup) {
    assert_sides_identical_once_applied(s, &PGBENCH_TABLES);
    assert_sides_identical_once_applied(s, &[("events", "id")]);
}

/// pgbench in three protocol modes plus a script that inserts into a
/// serial-keyed table (ids come from whichever side is the authority).
fn start_load(s: &Setup, seconds: u32) -> Vec<Child> {
    let script = s.dir.path().join("events.sql");
    std::fs::write(
        &script,
        "INSERT INTO events (note, at) VALUES ('x', now());\n",
    )
    .unwrap();
    let url = s.app_url();
    let secs = seconds.to_string();
    let mut runs: Vec<Vec<String>> = ["simple", "extended", "prepared"]
        .iter()
        .map(|m| vec!["-M".to_string(), m.to_string()])
        .collect();
    // Simple protocol: extended-protocol INSERTs that leave a serial to its
    // default are recorded as unsafe (a known limit).
    runs.push(vec![
        "-M".into(),
        "simple".into(),
        "-f".into(),
        script.display().to_string(),
    ]);
    runs.into_iter()
        .map(|args| {
            Command::new("pgbench")
                .args(["-n", "-c", "2", "-T", &secs])
                .args(args)
                .arg(&url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn prepare(s: &Setup) {
    let out = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(s.app_url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let seed = format!(
        "INSERT INTO events (note, at) VALUES {}",
        vec!["('seed', now())"; 100].join(", ")
    );
    s.run_ok(&[
        "CREATE TABLE events (id serial PRIMARY KEY, note text, at timestamptz)",
        &seed,
    ]);
}

#[test]
fn writes_flip_and_rollback_under_pgbench_have_no_client_errors_and_no_divergence() {
    let s = setup("", "");
    prepare(&s);
    // Mirrored inserts carry old's ids: new's sequence has not moved.
    let next_on_new = stdout(&psql(
        &s.direct_new_url(),
        &["-c", "SELECT last_value FROM events_id_seq"],
        &[],
    ));
    assert_eq!(next_on_new, "1");
    s.ctl_ok(&["flip", "reads"]);

    let clients = start_load(&s, 10);
    std::thread::sleep(Duration::from_millis(1500));
    let dry = s.ctl_ok(&["flip", "writes", "--dry-run"]);
    println!("{dry}");
    // The dry run walks the flip's own steps: the barrier, the sequences
    // it would move (read, not moved), the new phase (not taken).
    assert!(
        dry.contains("dry run: would go reads_new -> writes_new")
            && dry.contains("barrier: new transactions would wait up to")
            && dry.contains("would move on new past old's values")
            && dry.contains("then new would become the authority"),
        "{dry}"
    );
    assert_eq!(s.phase(), "reads_new");
    let still = stdout(&psql(
        &s.direct_new_url(),
        &["-c", "SELECT last_value FROM events_id_seq"],
        &[],
    ));
    assert_eq!(still, "1", "a dry run moves no sequence");
    for _ in 0..3 {
        let flipped = s.ctl_ok(&["flip", "writes"]);
        println!("{flipped}");
        assert!(
            flipped.contains("done: reads_new -> writes_new"),
            "{flipped}"
        );
        assert!(
            flipped.contains("moved on new past old's values"),
            "{flipped}"
        );
        std::thread::sleep(Duration::from_millis(1200));
        let back = s.ctl_ok(&["rollback"]);
        println!("{back}");
        assert!(back.contains("done: writes_new -> reads_new"), "{back}");
        assert!(back.contains("moved on old past new's values"), "{back}");
        std::thread::sleep(Duration::from_millis(800));
    }
    s.ctl_ok(&["flip", "writes"]);
    assert_no_failed_pgbench(clients);

    // Ids handed out by new after the flip continue old's.
    let ids = stdout(&psql(
        &s.app_url(),
        &[
            "-c",
            "SELECT count(*) = count(DISTINCT id) AND min(id) = 1 FROM events",
        ],
        &[],
    ));
    assert_eq!(ids, "t");
    assert_identical(&s);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("writes to   new first"), "{status}");
}

#[test]
fn the_barrier_waits_for_open_transactions_and_gives_up_past_its_window() {
    let s = setup("", "[guards]\nbarrier_ms = 800");
    prepare(&s);
    s.ctl_ok(&["flip", "reads"]);
    // A transaction left open through turnout keeps the barrier from closing.
    let open = hold_lock(&s.app_url(), "events", 4);
    let started = std::time::Instant::now();
    let out = s.ctl(&["flip", "writes"]);
    assert_eq!(out.status.code(), Some(1));
    let why = stderr(&out);
    assert!(
        why.contains("flip abandoned: 1 session(s) still in a transaction")
            && why.contains("guards.barrier_ms")
            && why.contains("traffic resumed on reads_new"),
        "{why}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(s.phase(), "reads_new");
    // Traffic goes on on the old routing.
    s.run_ok(&["UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1"]);
    assert!(open.wait_with_output().unwrap().status.success());

    // A transaction that finishes within the window only delays the flip,
    // and a statement arriving meanwhile waits rather than fails.
    let short = Command::new("psql")
        .args(["-X", "-q", &s.app_url()])
        .args(["-c", "BEGIN", "-c", "SELECT pg_sleep(0.5)", "-c", "COMMIT"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let during = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &s.app_url()])
        .args([
            "-c",
            "INSERT INTO events (note) VALUES ('during the barrier')",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let flipped = s.ctl_ok(&["flip", "writes"]);
    assert!(
        flipped.contains("done: reads_new -> writes_new"),
        "{flipped}"
    );
    assert!(short.wait_with_output().unwrap().status.success());
    let during = during.wait_with_output().unwrap();
    assert!(during.status.success(), "{}", stderr(&during));
    s.run_ok(&["INSERT INTO events (note) VALUES ('after')"]);
    assert_identical(&s);
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("flip abandoned"), "{audit}");
}

#[test]
fn the_flag_file_flips_writes_and_finalize_leaves_old_behind_for_good() {
    let mut s = setup("", "");
    prepare(&s);
    let flag = s.dir.path().join("phase.flag");
    std::fs::write(&flag, "reads_new").unwrap();
    eventually("the flag file flips reads", || s.phase() == "reads_new");
    // A session opened before the flip, with a statement prepared on old.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&s.app_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    });
    let add = rt
        .block_on(
            client.prepare("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = 1"),
        )
        .unwrap();
    let run = |n: i32| rt.block_on(client.execute(&add, &[&n])).unwrap();
    assert_eq!(run(1), 1);
    std::fs::write(&flag, "writes_new").unwrap();
    eventually("the flag file flips writes", || s.phase() == "writes_new");
    // The statement prepared on old runs on new, now the authority.
    assert_eq!(run(10), 1);
    // A cancel reaches the session's backend on new.
    let cancel = client.cancel_token();
    let started = std::time::Instant::now();
    let slept = rt.block_on(async {
        let sleep = client.simple_query("SELECT pg_sleep(30)");
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
        };
        tokio::join!(sleep, cancel).0
    });
    let e = slept.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    s.run_ok(&["INSERT INTO events (note) VALUES ('after the writes flip')"]);
    assert_identical(&s);

    let dry = s.ctl_ok(&["finalize", "--dry-run"]);
    assert!(dry.contains("would go writes_new -> finalized"), "{dry}");
    s.ctl_ok(&["finalize", "--yes"]);
    assert_eq!(run(100), 1);
    drop(client);
    s.run_ok(&["INSERT INTO events (note) VALUES ('new session after finalize')"]);
    let balance = |url: &str| scalar(url, "SELECT bbalance FROM pgbench_branches WHERE bid = 1");
    assert_eq!(balance(&s.direct_new_url()), "111");
    assert_eq!(
        balance(&s.direct_url()),
        "11",
        "old gets nothing after finalize"
    );
    let count = |url: &str| scalar(url, "SELECT count(*) FROM events WHERE note <> 'seed'");
    assert_eq!(count(&s.direct_new_url()), "2");
    assert_eq!(count(&s.direct_url()), "1");

    let out = s.ctl(&["rollback"]);
    assert!(stderr(&out).contains("finalized: there is no rollback"));
    // Kept across a restart.
    s.restart_proxy("turnout2.log");
    assert_eq!(s.phase(), "finalized");
    assert_eq!(count(&s.app_url()), "2");
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"command\":\"flip writes\"")
                && l.contains("\"caller\":\"flag file")
                && l.contains("\"ok\":true")),
        "{audit}"
    );
    // The flag file still says writes_new: a restart does not act on it.
    assert_eq!(audit.matches("there is no rollback").count(), 1, "{audit}");
}

#[test]
fn async_mode_writes_flip_drains_the_queue_first() {
    let s = setup("mode = \"async\"\nasync_queue = 10000", "");
    prepare(&s);
    s.ctl_ok(&["flip", "reads"]);
    let clients = start_load(&s, 6);
    std::thread::sleep(Duration::from_millis(1500));
    s.ctl_ok(&["flip", "writes"]);
    std::thread::sleep(Duration::from_millis(1500));
    s.ctl_ok(&["rollback"]);
    std::thread::sleep(Duration::from_millis(800));
    s.ctl_ok(&["flip", "writes"]);
    assert_no_failed_pgbench(clients);
    eventually("the async queues are empty", || {
        s.ctl_ok(&["status"]).contains("async queue 0 statement(s)")
    });
    assert_identical(&s);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn new_failing_as_the_authority_makes_turnout_roll_the_writes_flip_back_by_itself() {
    let mut s = setup("", "[guards]\nwatch_secs = 30\nabort_errors = 0");
    prepare(&s);
    s.ctl_ok(&["flip", "reads"]);
    s.ctl_ok(&["flip", "writes"]);
    s.run_ok(&["INSERT INTO events (note) VALUES ('on new')"]);
    // The client's own errors on new count for nothing (abort_errors = 0):
    // its statement timeout, a division by zero, a missing table.
    fail_three_times_each(
        &s,
        &[
        "SET statement_timeout = 1\n SELECT pg_sleep(0.2)",
        "SET statement_timeout = 1\n UPDATE events SET note = note WHERE pg_sleep(0.2) IS NOT NULL",
        "SELECT 1/0",
        "SELECT * FROM no_side_has_this",
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        s.phase(),
        "writes_new",
        "client errors rolled the flip back"
    );
    // new goes away: sessions on it fail, and turnout goes back to old as
    // the authority (its sequences moved past the ids in its own rows).
    s.new.as_mut().unwrap().stop().unwrap();
    let out = s.psql(
        &s.app_url(),
        &["-c", "INSERT INTO events (note) VALUES ('lost')"],
    );
    assert!(!out.status.success());
    eventually("turnout rolls back by itself", || s.phase() == "reads_new");
    s.run_ok(&["INSERT INTO events (note) VALUES ('on old again')"]);
    assert_eq!(
        scalar(
            &s.direct_url(),
            "SELECT string_agg(id || ':' || note, ',' ORDER BY id) FROM events WHERE note <> 'seed'"
        ),
        "101:on new,102:on old again"
    );
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"caller\":\"watch window: 1 failure(s) of new as the authority"),
        "{audit}"
    );
    assert!(s
        .proxy
        .log_text()
        .contains("moved past the largest id in their column"));
}

#[test]
fn rolling_writes_back_is_refused_while_old_lacks_writes_it_missed_as_the_mirror() {
    // A chaos schedule's finding: with new the authority, old (the mirror)
    // missed writes; rolled back, old served without them.
    let mut s = setup("", "");
    s.run_ok(&["CREATE TABLE notes (id int PRIMARY KEY, body text)"]);
    s.ctl_ok(&["flip", "reads"]);
    s.ctl_ok(&["flip", "writes"]);
    s.old.kill().unwrap();
    s.run_ok(&["INSERT INTO notes VALUES (1, 'only on new')"]);
    s.old.restart().unwrap();
    let refused = |s: &Setup| {
        let out = s.ctl(&["rollback"]);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        println!("rollback: {text}");
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("old missed 1 write(s)"), "{text}");
        assert_eq!(s.phase(), "writes_new");
    };
    refused(&s);
    // With new the authority, verify compares new to old and repairs old;
    // once it found them equal, the rollback goes.
    s.ctl_ok(&["verify", "start", "--repair"]);
    let v = wait_job(&s, "verify", Duration::from_secs(60));
    println!("verify --repair in writes_new: {v}");
    assert_eq!(v["missing"], 1, "{v}");
    assert_eq!(v["repaired"], 1, "{v}");
    assert!(v.to_string().contains("missing on old: id=1"), "{v}");
    assert_eq!(
        scalar(&s.direct_url(), "SELECT body FROM notes"),
        "only on new"
    );
    let back = s.ctl_ok(&["rollback"]);
    assert!(back.contains("writes_new -> reads_new"), "{back}");
    assert_eq!(
        scalar(&s.app_url(), "SELECT body FROM notes"),
        "only on new"
    );
    // Writes old misses later count again; --force overrides, audited.
    // (The guards count the mirror error of the first kill.)
    s.ctl_ok(&["flip", "writes", "--force"]);
    s.old.kill().unwrap();
    s.run_ok(&["INSERT INTO notes VALUES (2, 'again')"]);
    s.old.restart().unwrap();
    refused(&s);
    s.ctl_ok(&["rollback", "--force"]);
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("rollback --force (overriding: old missed 1"),
        "{audit}"
    );
}

#[test]
fn a_session_that_only_read_while_the_mirror_restarted_survives_the_rollback_of_writes() {
    // Found by a chaos schedule: a session's connection to the mirror died
    // while the session only read; the rollback made that side the
    // authority and the session's next query failed on the dead connection.
    let mut s = setup("", "");
    s.run_ok(&["CREATE TABLE notes (id int PRIMARY KEY, body text)"]);
    block_on(async {
        let client = pg_client(&s.app_url()).await;
        let count = "SELECT count(*) FROM notes";
        client.query_one(count, &[]).await.unwrap();
        s.ctl_ok(&["flip", "reads"]);
        s.ctl_ok(&["flip", "writes"]);
        client.query_one(count, &[]).await.unwrap();
        println!("injected: old (the mirror) killed and started again");
        s.old.kill().unwrap();
        s.old.restart().unwrap();
        client.query_one(count, &[]).await.unwrap();
        s.ctl_ok(&["rollback"]);
        client
            .query_one(count, &[])
            .await
            .expect("a read after the rollback");
        client
            .execute("INSERT INTO notes VALUES (1, 'after')", &[])
            .await
            .expect("a write after the rollback");
    });
    assert_eq!(scalar(&s.direct_url(), "SELECT body FROM notes"), "after");
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT body FROM notes"),
        "after"
    );
}

#[test]
fn a_writes_flip_is_refused_while_new_lacks_writes_it_missed_as_the_mirror() {
    // A chaos schedule's finding: new missed writes while its server was
    // down, a forced writes flip made it the authority, and acknowledged
    // rows were gone. What new missed is named first; verify --repair puts
    // it back and the flip goes.
    let mut s = setup("", "");
    s.run_ok(&["CREATE TABLE notes (id int PRIMARY KEY, body text)"]);
    s.ctl_ok(&["flip", "reads"]);
    s.new.as_mut().unwrap().kill().unwrap();
    s.run_ok(&["INSERT INTO notes VALUES (1, 'only on old')"]);
    s.new.as_mut().unwrap().restart().unwrap();
    let out = s.ctl(&["flip", "writes"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    println!("flip writes: {text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("new missed 1 write(s)"), "{text}");
    s.ctl_ok(&["verify", "start", "--repair"]);
    let v = wait_job(&s, "verify", Duration::from_secs(60));
    assert_eq!(v["repaired"], 1, "{v}");
    // The guards' count of mirror errors is acknowledged once a verify
    // found the sides equal: the refusal names that way out.
    let out = s.ctl(&["flip", "writes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("turnout ctl ack") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    s.ctl_ok(&["ack"]);
    // The report agrees with itself and with turnout: GO, no FAIL row, and
    // it says when it was made, the phase, and the last verify.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_turnout"))
        .args(["report", "--check", "--config"])
        .arg(&s.proxy.config)
        .output()
        .unwrap();
    let text = stdout(&report);
    println!("{text}");
    assert_eq!(report.status.code(), Some(0), "{text}{}", stderr(&report));
    assert!(text.starts_with("VERDICT: GO"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert!(
        text.contains("phase reads_new") && text.contains("last verify: done, started "),
        "{text}"
    );
    let done = s.ctl_ok(&["flip", "writes"]);
    assert!(done.contains("reads_new -> writes_new"), "{done}");
    assert_eq!(
        scalar(&s.app_url(), "SELECT body FROM notes"),
        "only on old"
    );
}

// The flips with the mirror fed from the log: each change of authority
// finishes applying the old authority's log and turns the log around.

#[test]
fn writes_flip_and_rollback_under_pgbench_from_the_log() {
    from_the_log(writes_flip_and_rollback_under_pgbench_have_no_client_errors_and_no_divergence);
}

#[test]
fn async_mode_writes_flip_from_the_log() {
    from_the_log(async_mode_writes_flip_drains_the_queue_first);
}

#[test]
fn new_failing_as_the_authority_rolls_back_from_the_log() {
    from_the_log(new_failing_as_the_authority_makes_turnout_roll_the_writes_flip_back_by_itself);
}

#[test]
fn the_flag_file_flips_and_finalizes_from_the_log() {
    from_the_log(the_flag_file_flips_writes_and_finalize_leaves_old_behind_for_good);
}
