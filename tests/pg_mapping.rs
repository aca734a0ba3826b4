//! Old and new schemas over PostgreSQL: old `users(id, name, email, legacy)`
//! and new `accounts(id, full_name, email_address, created_at)`; writes
//! through turnout land on both, translated through `[mapping]`, and a
//! mapping that does not match the catalogs is refused with names.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const MAPPING: &str = r#"
[[mapping.tables]]
old = "users"
new = "accounts"
drop = ["legacy"]
[mapping.tables.columns]
name = "full_name"
email = "email_address"
"#;

fn setup() -> Setup {
    setup_with(
        "int",
        "rate = 1.0\nper_fingerprint_per_sec = 0\nrecheck_delay_ms = 20",
    )
}

/// turnout in phase mirror with old's `users` and new's `accounts`, their
/// ids of type `id` (`int`, `serial`), and `sampling`'s keys.
fn setup_with(id: &str, sampling: &'static str) -> Setup {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        sampling,
        ..Options::default()
    });
    run_direct_ok(
        &s.direct_url(),
        &[&format!(
            "CREATE TABLE users (id {id} PRIMARY KEY, name text, email text, legacy int)"
        )],
    );
    run_direct_ok(
        &s.direct_new_url(),
        &[&format!(
            "CREATE TABLE accounts (id {id} PRIMARY KEY, full_name text, email_address text, \
             created_at timestamptz NOT NULL DEFAULT now())"
        )],
    );
    s
}

/// The running config with `extra` appended, written where turnout reads it.
fn with_config(s: &Setup, extra: &str) {
    let base = std::fs::read_to_string(s.dir.path().join("turnout.toml.base"))
        .or_else(|_| {
            let text = std::fs::read_to_string(&s.proxy.config)?;
            std::fs::write(s.dir.path().join("turnout.toml.base"), &text)?;
            Ok::<_, std::io::Error>(text)
        })
        .unwrap();
    std::fs::write(&s.proxy.config, format!("{base}\n{extra}")).unwrap();
}

#[test]
fn writes_land_on_both_schemas_through_the_mapping() {
    let s = setup();
    with_config(&s, MAPPING);
    let reloaded = s.ctl_ok(&["reload"]);
    assert!(reloaded.contains("done: reload"), "{reloaded}");
    s.run_ok(&[
        "INSERT INTO users (id, name, email, legacy) VALUES (1, 'Ann', 'ann@x', 7), (2, 'Bo', 'bo@y', 8), (3, 'Cy', 'cy@z', 9)",
        "UPDATE users SET email = 'ann@new', legacy = 70 WHERE id = 1",
        "UPDATE users SET legacy = 80 WHERE id = 2",
        "DELETE FROM users WHERE id = 3",
        "INSERT INTO users (id, name, email) VALUES (2, 'Bob', 'bo@y') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        "BEGIN",
        "INSERT INTO users (id, name, email) VALUES (4, 'Di', 'di@w')",
        "COMMIT",
    ]);
    let old = scalar(
        &s.direct_url(),
        "SELECT string_agg(id || ':' || name || ':' || email, ',' ORDER BY id) FROM users",
    );
    let new = scalar(
        &s.direct_new_url(),
        "SELECT string_agg(id || ':' || full_name || ':' || email_address, ',' ORDER BY id) FROM accounts",
    );
    assert_eq!(old, "1:Ann:ann@new,2:Bob:bo@y,4:Di:di@w");
    assert_eq!(new, old);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());

    // The extended protocol (a driver's prepared statements) too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = pg_client(&s.app_url()).await;
        client
            .execute(
                "INSERT INTO users (id, name, email) VALUES ($1, $2, $3)",
                &[&5i32, &"Ed", &"ed@v"],
            )
            .await
            .unwrap();
        let update = client
            .prepare("UPDATE users SET name = $1 WHERE id = $2")
            .await
            .unwrap();
        client.execute(&update, &[&"Eddie", &5i32]).await.unwrap();
        client.execute(&update, &[&"Edward", &5i32]).await.unwrap();
    });
    let pick = |url: &str, sql: &str| scalar(url, sql);
    assert_eq!(
        pick(
            &s.direct_new_url(),
            "SELECT full_name || ':' || email_address FROM accounts WHERE id = 5"
        ),
        "Edward:ed@v"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    run_direct_ok(&s.direct_url(), &["DELETE FROM users WHERE id = 5"]);
    run_direct_ok(&s.direct_new_url(), &["DELETE FROM accounts WHERE id = 5"]);

    // Old-style reads compare equal on the new schema (columns selected
    // under their old names); a row changed on new alone is found.
    for _ in 0..3 {
        s.run_ok(&[
            "SELECT id, name, email FROM users ORDER BY id",
            "SELECT name FROM users WHERE email = 'bo@y'",
        ]);
    }
    run_direct_ok(
        &s.direct_new_url(),
        &["UPDATE accounts SET full_name = 'Dee' WHERE id = 4"],
    );
    s.run_ok(&["SELECT name, email FROM users WHERE id = 4"]);
    eventually("the planted difference is confirmed", || {
        s.ctl_ok(&["status"]).contains("1 mismatched")
    });
    let diffs = s.ctl_ok(&["diffs"]);
    assert!(
        diffs.contains("select id, name, email from users order by id")
            && diffs.contains("select name, email from users where id = ?"),
        "{diffs}"
    );
    let status: serde_json::Value = serde_json::from_str(&s.ctl_ok(&["--json", "status"])).unwrap();
    assert!(
        status["sampling"]["matches"].as_u64().unwrap() >= 6,
        "{status}"
    );
    // After the reads flip, old-style reads are translated for new on the
    // client's path (simple and extended protocol); SELECT * cannot be,
    // and old serves it.
    s.ctl_ok(&["flip", "reads", "--force"]);
    assert_eq!(
        scalar(&s.app_url(), "SELECT name FROM users WHERE id = 4"),
        "Dee"
    );
    rt.block_on(async {
        let client = pg_client(&s.app_url()).await;
        let row = client
            .query_one("SELECT name, email FROM users WHERE id = $1", &[&4i32])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>("name"), "Dee");
        assert_eq!(row.get::<_, String>(1), "di@w");
    });
    assert_eq!(
        scalar(&s.app_url(), "SELECT * FROM users WHERE id = 4"),
        "4|Di|di@w|"
    );
    s.ctl_ok(&["rollback"]);
    run_direct_ok(
        &s.direct_new_url(),
        &["UPDATE accounts SET full_name = 'Di' WHERE id = 4"],
    );

    // A statement the mapping cannot translate: the authority alone,
    // recorded with the reason; the client sees no error.
    s.run_ok(&["DELETE FROM users WHERE legacy = 70"]);
    assert_eq!(scalar(&s.direct_url(), "SELECT count(*) FROM users"), "2");
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT count(*) FROM accounts"),
        "3"
    );
    let d = s.divergences();
    assert!(
        d.len() == 1 && d[0].contains("mapping: uses column users.legacy"),
        "{d:?}"
    );
    // COPY's rows are in old's layout: old alone, recorded.
    let rows = s.dir.path().join("rows.tsv");
    std::fs::write(&rows, "6\tFay\tfay@u\n").unwrap();
    let copy = format!("\\copy users (id, name, email) FROM '{}'", rows.display());
    let out = s.psql(&s.app_url(), &["-c", &copy]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        scalar(&s.direct_url(), "SELECT name FROM users WHERE id = 6"),
        "Fay"
    );
    let d = s.divergences();
    assert!(
        d.len() == 2 && d[1].contains("COPY on the mapped table users"),
        "{d:?}"
    );
}

#[test]
fn mapping_errors_are_named_and_turnout_does_not_mirror_through_them() {
    let s = setup();
    run_direct_ok(&s.direct_url(), &["CREATE TABLE notes (body text)"]);
    run_direct_ok(&s.direct_new_url(), &["CREATE TABLE notes (body int)"]);
    let bad = r#"
[[mapping.tables]]
old = "users"
new = "accounts"
[mapping.tables.columns]
nmae = "full_name"
email = "email_address"

[[mapping.tables]]
old = "notes"

[[mapping.tables]]
old = "orders"
"#;
    with_config(&s, bad);
    let out = s.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let why = stderr(&out);
    for expected in [
        "column users.nmae does not exist on old",
        "column users.name has no counterpart in accounts",
        "type clash: notes.body (text) -> notes.body (integer)",
        "table notes on old has no primary key",
        "table orders does not exist on old",
    ] {
        assert!(why.contains(expected), "{expected:?} not in: {why}");
    }
    // The running (identity) config stays: writes go on.
    s.run_ok(&["INSERT INTO notes VALUES ('x')"]);

    // Started with it, turnout refuses to enter mirror and says why.
    let config = std::fs::read_to_string(&s.proxy.config).unwrap();
    let port = turnout_harness::free_port().unwrap();
    let other = s.dir.path().join("other.toml");
    std::fs::write(
        &other,
        config.replace(&format!(":{}\"", s.proxy.port), &format!(":{port}\"")),
    )
    .unwrap();
    let out = Command::new(turnout_bin())
        .args(["run", "--config"])
        .arg(&other)
        .output()
        .unwrap();
    // Its admin socket is the running turnout's: refused, never taken over.
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("in use by a running turnout"),
        "{}",
        stderr(&out)
    );
    s.ctl_ok(&["status"]);
    std::fs::write(
        &other,
        std::fs::read_to_string(&other)
            .unwrap()
            .replace("admin.sock", "admin2.sock"),
    )
    .unwrap();
    let out = Command::new(turnout_bin())
        .args(["run", "--config"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not enter mirror")
            && stderr(&out).contains("column users.nmae does not exist on old"),
        "{}",
        stderr(&out)
    );
}

/// Old's rows and new's, each as `id|name|email` lines in id order.
fn both_sides(s: &Setup) -> (String, String) {
    let rows = |url: &str, sql: &str| {
        let out = psql(url, &["-c", &format!("COPY ({sql}) TO STDOUT")], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (
        rows(
            &s.direct_url(),
            "SELECT id, name, email FROM users ORDER BY id",
        ),
        rows(
            &s.direct_new_url(),
            "SELECT id, full_name, email_address FROM accounts ORDER BY id",
        ),
    )
}

#[test]
fn writes_flip_through_the_mapping_under_load() {
    let s = setup_with("serial", "");
    with_config(&s, MAPPING);
    let reloaded = s.ctl_ok(&["reload"]);
    assert!(reloaded.contains("done: reload"), "{reloaded}");
    let seed = format!(
        "INSERT INTO users (name, email) VALUES {}",
        (1..=20)
            .map(|i| format!("('n{i}', 'e{i}@x')"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.run_ok(&[&seed]);
    s.ctl_ok(&["flip", "reads", "--force"]);

    // Old-style writes from pgbench while the writes flip, roll back and
    // flip again: ids come from whichever side is the authority.
    let script = s.dir.path().join("users.sql");
    std::fs::write(
        &script,
        "\\set r random(1, 20)\n\
         INSERT INTO users (name, email) VALUES ('p', 'p@x');\n\
         UPDATE users SET email = 'u' || :r WHERE id = :r;\n\
         SELECT name, email FROM users WHERE id = :r;\n",
    )
    .unwrap();
    let load = Command::new("pgbench")
        .args(["-n", "-c", "3", "-T", "8", "-M", "simple", "-f"])
        .arg(&script)
        .arg(s.app_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let flipped = s.ctl_ok(&["flip", "writes", "--force"]);
    println!("{flipped}");
    assert!(
        flipped.contains("done: reads_new -> writes_new"),
        "{flipped}"
    );
    std::thread::sleep(Duration::from_millis(2000));
    let back = s.ctl_ok(&["rollback"]);
    println!("{back}");
    std::thread::sleep(Duration::from_millis(1500));
    s.ctl_ok(&["flip", "writes", "--force"]);
    let out = load.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    println!("{text}");
    assert!(out.status.success(), "pgbench failed:\n{text}");
    assert!(text.contains("number of failed transactions: 0"), "{text}");

    // With new the authority: old-style statements are translated for it,
    // RETURNING answers under old's names, and ids are new's, past old's.
    let (old, new) = both_sides(&s);
    let before = old.lines().count();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(async {
        let client = pg_client(&s.app_url()).await;
        // (Simple protocol: an extended-protocol INSERT that leaves a serial
        // to its default is not mirrored, a known limit.)
        let answer = client
            .simple_query(
                "INSERT INTO users (name, email) VALUES ('After', 'after@x') RETURNING id, name",
            )
            .await
            .unwrap();
        let row = answer
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .unwrap();
        assert_eq!(row.get("name"), Some("After"));
        let id: i32 = row.get("id").unwrap().parse().unwrap();
        let update = client
            .prepare("UPDATE users SET email = $1 WHERE id = $2")
            .await
            .unwrap();
        client.execute(&update, &[&"later@x", &id]).await.unwrap();
        let back = client
            .query_one("SELECT name, email FROM users WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(back.get::<_, String>("email"), "later@x");
        id
    });
    assert_eq!(old, new, "sides differ after the load");
    assert_eq!(id as usize, before + 1, "the next id continues old's");
    assert_eq!(
        scalar(
            &s.direct_new_url(),
            &format!("SELECT full_name || ':' || email_address FROM accounts WHERE id = {id}")
        ),
        "After:later@x"
    );
    // SELECT * has no translation: old, written in step, serves it.
    assert_eq!(
        scalar(
            &s.app_url(),
            &format!("SELECT * FROM users WHERE id = {id}")
        ),
        format!("{id}|After|later@x|")
    );
    // A write new cannot take is refused with the reason.
    let out = s.psql(&s.app_url(), &["-c", "DELETE FROM users WHERE legacy = 7"]);
    assert!(
        stderr(&out).contains("cannot be translated for new, which is the authority now"),
        "{}",
        stderr(&out)
    );

    // Back to old as the authority: its sequence was moved past new's ids.
    s.ctl_ok(&["rollback"]);
    s.run_ok(&["INSERT INTO users (name, email) VALUES ('Back', 'back@x')"]);
    let (old, new) = both_sides(&s);
    assert_eq!(old, new);
    assert_eq!(old.lines().count(), before + 2);
    assert!(old
        .lines()
        .last()
        .unwrap()
        .starts_with(&format!("{}\tBack", id + 1)));
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// Finalize cannot break an application still written with old's names:
/// it refuses, naming the statements, until the application moved to new's
/// names or `mapping.after_finalize = "translate"` keeps turnout
/// translating them; then they answer after finalize as before.
#[test]
fn finalize_refuses_while_old_names_arrive_unless_turnout_keeps_translating() {
    let s = setup();
    with_config(&s, MAPPING);
    s.ctl_ok(&["reload"]);
    s.run_ok(&["INSERT INTO users (id, name, email) VALUES (1, 'Ann', 'ann@x')"]);
    s.ctl_ok(&["flip", "reads", "--force"]);
    s.ctl_ok(&["flip", "writes", "--force"]);
    s.run_ok(&["UPDATE users SET email = 'ann@y' WHERE id = 1"]);
    let (code, refused) = {
        let out = s.ctl(&["finalize", "--yes"]);
        (out.status.code(), stderr(&out))
    };
    assert_eq!(code, Some(1), "{refused}");
    assert!(
        refused.contains("used old's names")
            && refused.contains("UPDATE users SET email = 'ann@y' WHERE id = 1")
            && refused.contains("mapping.after_finalize = \"translate\""),
        "{refused}"
    );
    // The dry run says the same, and the plan names the choice.
    let out = s.ctl(&["finalize", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let plan = Command::new(env!("CARGO_BIN_EXE_turnout"))
        .args(["plan", "--config"])
        .arg(&s.proxy.config)
        .output()
        .unwrap();
    assert!(
        stdout(&plan).contains("mapping.after_finalize"),
        "{}",
        stdout(&plan)
    );
    with_config(
        &s,
        &MAPPING.replace(
            "[[mapping.tables]]",
            "[mapping]\nafter_finalize = \"translate\"\n\n[[mapping.tables]]",
        ),
    );
    s.ctl_ok(&["reload"]);
    let done = s.ctl_ok(&["finalize", "--yes"]);
    assert!(done.contains("finalized"), "{done}");
    // Old's names still answer, by both protocols, on new alone.
    s.run_ok(&["INSERT INTO users (id, name, email) VALUES (2, 'Bo', 'bo@x')"]);
    assert_eq!(
        scalar(
            &s.app_url(),
            "SELECT name || ' ' || email FROM users WHERE id = 1"
        ),
        "Ann ann@y"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = pg_client(&s.app_url()).await;
        let row = client
            .query_one("SELECT name FROM users WHERE id = $1", &[&2i32])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "Bo");
    });
    assert_eq!(
        scalar(
            &s.direct_new_url(),
            "SELECT full_name FROM accounts WHERE id = 2"
        ),
        "Bo"
    );
    assert_eq!(
        scalar(&s.direct_url(), "SELECT count(*) FROM users WHERE id = 2"),
        "0"
    );
}
