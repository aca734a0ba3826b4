//! Row images (PostgreSQL): a mixed write workload of everyday shapes
//! (server defaults, RETURNING, upserts, a `FOR UPDATE SKIP LOCKED` queue,
//! UPDATE/DELETE with subqueries and `ORDER BY ... LIMIT`, `INSERT ...
//! SELECT`, `UPDATE ... FROM`, rolled-back transactions, a table without a
//! key) through turnout by 8 concurrent workers with psycopg 3, node-postgres,
//! tokio-postgres and pgbench (`-M extended`, `-M prepared`); old and new
//! must then be identical row for row and value for value. Drift planted on
//! new is found and recorded (`row_count_mismatch`), never silent.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKERS: u32 = 8;
/// Seconds each workload runs (`TURNOUT_MIXED_SECS` to change it).
fn seconds() -> u32 {
    std::env::var("TURNOUT_MIXED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

const KEYED: [(&str, &str); 4] = [
    ("accounts", "id"),
    ("jobs", "id"),
    ("counters", "k"),
    ("events", "id"),
];

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

fn start(on_error: Option<&'static str>) -> Setup {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        on_error,
        ..Options::default()
    });
    let schema =
        std::fs::read_to_string(drivers_dir().join("mixed_schema.sql")).expect("mixed_schema.sql");
    // New first: from the log, old's rows go to new's tables at once.
    for url in [s.direct_new_url(), s.direct_url()] {
        let out = psql(&url, &["-v", "ON_ERROR_STOP=1", "-c", &schema], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Seeded through turnout: ids, owners and times come from old.
    let out = s.psql(
        &s.app_url(),
        &[
            "-c",
            "INSERT INTO accounts (balance, tags, meta) SELECT g * 100, ARRAY['seed'], jsonb_build_object('g', g) FROM generate_series(1, 20) g",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    s
}

/// Old and new identical in every keyed table; the only records are the
/// keyless table's writes mirrored as statements; no row_count_mismatch.
fn check(s: &Setup, what: &str) {
    let records = s.divergences();
    println!("{what}: {} divergence record(s)", records.len());
    for r in records.iter().take(5) {
        println!("  {r}");
    }
    assert_sides_identical(s, &KEYED);
    let unexpected: Vec<&String> = records
        .iter()
        .filter(|r| !keyless_audit_record(r))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{what}: {} unexpected record(s), e.g. {:?}",
        unexpected.len(),
        unexpected.iter().take(3).collect::<Vec<_>>()
    );
    for table in ["accounts", "jobs", "events"] {
        let n: i64 = scalar(&s.direct_url(), &format!("SELECT count(*) FROM {table}"))
            .parse()
            .unwrap();
        assert!(n > 0, "{what}: {table} is empty");
    }
}

fn run_report(mut cmd: Command, what: &str) {
    cmd.arg(WORKERS.to_string()).arg(seconds().to_string());
    let report = run_workload(cmd);
    println!("{what}: {report}");
    assert!(report["ops"].as_i64().unwrap_or(0) > 0, "{report}");
    assert!(report["rolled_back"].as_i64().unwrap_or(0) > 0, "{report}");
    let errors = report["errors"].as_array().map_or(0, Vec::len);
    assert_eq!(errors, 0, "{what}: the workload saw errors: {report}");
}

/// The keyless table's UPDATEs: mirrored as statements and recorded
/// (row images), or recorded as not in the log (the log source).
fn keyless_audit_record(r: &str) -> bool {
    (r.contains("\"kind\":\"unsafe_statement\"") && r.contains("audit has no primary key"))
        || (r.contains("\"kind\":\"mirror_error\"")
            && r.contains("\"table\":\"audit\"")
            && r.contains("table without a replica identity"))
}

fn audit_recorded(s: &Setup) {
    assert!(
        s.divergences().iter().any(|r| keyless_audit_record(r)),
        "the keyless table's UPDATE was not recorded: {:?}",
        s.divergences()
    );
}

#[test]
fn psycopg3_mixed_workload_leaves_both_sides_identical() {
    let s = start(None);
    let mut cmd = Command::new("python3");
    cmd.arg(drivers_dir().join("pg_mixed.py")).arg(s.app_url());
    run_report(cmd, "psycopg 3");
    check(&s, "psycopg 3");
    audit_recorded(&s);
}

#[test]
fn node_postgres_mixed_workload_leaves_both_sides_identical() {
    let s = start(None);
    let mut cmd = Command::new("node");
    cmd.arg(drivers_dir().join("pg_mixed.js"))
        .arg(format!(
            "postgresql://app:{APP_PASSWORD}@127.0.0.1:{}/app",
            s.proxy.port
        ))
        .env("NODE_PATH", drivers_dir().join("node/node_modules"));
    run_report(cmd, "node-postgres");
    check(&s, "node-postgres");
    audit_recorded(&s);
}

#[test]
fn pgbench_extended_and_prepared_mixed_scripts_leave_both_sides_identical() {
    for mode in ["extended", "prepared"] {
        let s = start(None);
        let out = Command::new("pgbench")
            .args(["-n", "-M", mode, "-c", &WORKERS.to_string(), "-j", "2"])
            .args(["-T", &seconds().to_string(), "-f"])
            .arg(drivers_dir().join("pg_mixed.pgbench"))
            .arg(s.app_url())
            .output()
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "{text}");
        assert!(text.contains("number of failed transactions: 0"), "{text}");
        check(&s, &format!("pgbench -M {mode}"));
        // The keyless table took INSERT images only: identical as well.
        assert_same_rows(
            "audit",
            &contents(&s.direct_url(), "audit", "at, note"),
            &contents(&s.direct_new_url(), "audit", "at, note"),
        );
    }
}

/// The tokio-postgres workers: prepared statements, binary parameters and
/// results (the image column arrives as binary jsonb).
async fn tokio_worker(url: String, w: i32, secs: u32) -> (u64, u64) {
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = client;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs.into());
    let insert = client
        .prepare(
            "INSERT INTO accounts (balance, tags, half, mood) \
             VALUES ($1::int / 100.0, ARRAY[$2::text, 'x'], $3::float8::real, 'busy') \
             RETURNING id, owner::text, opened::text, score",
        )
        .await
        .unwrap();
    let claim = client
        .prepare(
            "UPDATE jobs SET state = 'claimed', worker = $1::int, claimed = clock_timestamp() \
             WHERE id = (SELECT id FROM jobs WHERE state = 'new' ORDER BY id LIMIT 1 \
             FOR UPDATE SKIP LOCKED) RETURNING id, claimed::text",
        )
        .await
        .unwrap();
    let (mut ops, mut rolled_back) = (0u64, 0u64);
    let mut n = w as i64 * 7919;
    while std::time::Instant::now() < deadline {
        n = (n * 1_103_515_245 + 12345) % 2_147_483_648;
        let k = n % 10;
        let v = (n % 2000 - 1000) as i32;
        match k {
            0 => {
                let rows = client
                    .query(&insert, &[&v, &format!("w{w}"), &(v as f64 / 7.0)])
                    .await
                    .unwrap();
                assert_eq!(rows[0].columns().len(), 4);
            }
            1 => {
                client
                    .execute(
                        "INSERT INTO counters (k, n) VALUES ($1::text, 1) \
                         ON CONFLICT (k) DO UPDATE SET n = counters.n + 1, at = now()",
                        &[&format!("c{}", n % 17)],
                    )
                    .await
                    .unwrap();
            }
            2 => {
                client
                    .execute(
                        "INSERT INTO jobs (payload) VALUES (jsonb_build_object('by', $1::int))",
                        &[&w],
                    )
                    .await
                    .unwrap();
            }
            3 => {
                let rows = client.query(&claim, &[&w]).await.unwrap();
                assert!(rows.len() <= 1);
            }
            4 => {
                client
                    .execute(
                        "UPDATE accounts SET balance = balance + $1::int, touched = clock_timestamp(), \
                         score = random() WHERE id = (SELECT max(id) FROM accounts)",
                        &[&v],
                    )
                    .await
                    .unwrap();
            }
            5 => {
                client
                    .execute(
                        "DELETE FROM events WHERE id = (SELECT id FROM events ORDER BY at LIMIT 1)",
                        &[],
                    )
                    .await
                    .unwrap();
            }
            6 => {
                client
                    .execute(
                        "INSERT INTO events (account, kind, amount) \
                         SELECT id, 'interest', balance * 0.01 FROM accounts ORDER BY id DESC LIMIT 3",
                        &[],
                    )
                    .await
                    .unwrap();
            }
            7 => {
                let tx = client.transaction().await.unwrap();
                tx.execute("INSERT INTO accounts (balance) VALUES (1.5)", &[])
                    .await
                    .unwrap();
                tx.execute("UPDATE counters SET n = n + 1000 WHERE k = 'c1'", &[])
                    .await
                    .unwrap();
                tx.rollback().await.unwrap();
                rolled_back += 1;
            }
            8 => {
                let a = (n % 10 + 1) as i32;
                let b = a + 10;
                let tx = client.transaction().await.unwrap();
                tx.execute(
                    "UPDATE accounts SET balance = balance - 1 WHERE id = $1::int",
                    &[&a],
                )
                .await
                .unwrap();
                tx.execute(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = $1::int",
                    &[&b],
                )
                .await
                .unwrap();
                let row = tx
                    .query_one(
                        "INSERT INTO events (account, kind, amount) VALUES ($1::int, 'transfer', 1) RETURNING id",
                        &[&b],
                    )
                    .await
                    .unwrap();
                let _: i64 = row.get(0);
                tx.commit().await.unwrap();
            }
            _ => {
                client
                    .execute(
                        "INSERT INTO audit (note) VALUES ($1::text)",
                        &[&format!("w{w} {n}")],
                    )
                    .await
                    .unwrap();
            }
        }
        ops += 1;
    }
    client
        .execute(
            "UPDATE audit SET note = note || '!' WHERE note LIKE $1::text",
            &[&format!("w{w} %")],
        )
        .await
        .unwrap();
    (ops, rolled_back)
}

#[test]
fn tokio_postgres_mixed_workload_leaves_both_sides_identical() {
    let s = start(None);
    let url = s.app_url();
    let secs = seconds();
    let (ops, rolled_back) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let tasks: Vec<_> = (1..=WORKERS as i32)
                .map(|w| tokio::spawn(tokio_worker(url.clone(), w, secs)))
                .collect();
            let mut total = (0, 0);
            for t in tasks {
                let (o, r) = t.await.unwrap();
                total.0 += o;
                total.1 += r;
            }
            total
        });
    println!("tokio-postgres: {ops} operations, {rolled_back} rolled back");
    assert!(ops > 0 && rolled_back > 0);
    check(&s, "tokio-postgres");
    audit_recorded(&s);
}

#[test]
fn after_a_writes_flip_old_receives_the_row_images() {
    let s = start(None);
    let mut cmd = Command::new("python3");
    cmd.arg(drivers_dir().join("pg_mixed.py")).arg(s.app_url());
    run_report(cmd, "psycopg 3 before the flip");
    s.ctl_ok(&["flip", "reads"]);
    let flipped = s.ctl_ok(&["flip", "writes"]);
    assert!(flipped.contains("-> writes_new"), "{flipped}");
    let mut cmd = Command::new("python3");
    cmd.arg(drivers_dir().join("pg_mixed.py")).arg(s.app_url());
    run_report(cmd, "psycopg 3 after the flip");
    check(&s, "after the writes flip");
    // The ids new handed out after the flip continue old's.
    let max_old: i64 = scalar(&s.direct_url(), "SELECT max(id) FROM events")
        .parse()
        .unwrap();
    assert!(max_old > 0);
}

#[test]
fn answers_are_the_clients_own_and_drift_on_new_is_recorded() {
    let s = start(None);
    let url = s.app_url();
    // What the client sees is what PostgreSQL answers it: the same tags,
    // columns and rows through turnout as directly.
    let statements = [
        "UPDATE accounts SET balance = balance + 1 WHERE id <= 3",
        "UPDATE accounts SET balance = balance + 1 WHERE id <= 3 RETURNING id, balance",
        "INSERT INTO counters (k) VALUES ('one'), ('two') RETURNING *",
        "DELETE FROM counters WHERE k = 'two'",
    ];
    for sql in statements {
        let through = s.psql(&url, &["-c", sql]);
        assert!(through.status.success(), "{}", stderr(&through));
        let shown = stdout(&through);
        assert!(
            !shown.contains("to_jsonb") && !shown.contains("\"id\""),
            "{sql}: {shown}"
        );
        println!("{sql}\n{shown}");
    }
    let described = block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let none = client
            .prepare("UPDATE accounts SET half = $1 WHERE id = $2")
            .await
            .unwrap();
        let two = client
            .prepare("UPDATE accounts SET half = $1 WHERE id = $2 RETURNING id, half")
            .await
            .unwrap();
        let rows = client.query(&two, &[&2.5f32, &1i32]).await.unwrap();
        let n = client.execute(&none, &[&1.5f32, &2i32]).await.unwrap();
        (
            none.columns().len(),
            two.columns().len(),
            rows.len(),
            rows[0].len(),
            n,
        )
    });
    assert_eq!(described, (0, 2, 1, 2, 1));
    assert_sides_identical(&s, &[("accounts", "id"), ("counters", "k")]);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());

    // Drift planted on new: each kind is found by the next write.
    for sql in [
        "DELETE FROM accounts WHERE id = 5",
        "INSERT INTO counters (k) VALUES ('planted')",
        "DELETE FROM jobs",
    ] {
        let out = psql(&s.direct_new_url(), &["-c", sql], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = s.psql(
        &url,
        &[
            "-c",
            "UPDATE accounts SET balance = 0 WHERE id IN (4, 5, 6)",
            "-c",
            "INSERT INTO counters (k) VALUES ('planted')",
            "-c",
            "INSERT INTO jobs (payload) VALUES ('{}'), ('{}')",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = psql(&s.direct_new_url(), &["-c", "DELETE FROM jobs"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.psql(&url, &["-c", "DELETE FROM jobs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = s.divergences();
    println!("{}", records.join("\n"));
    let mismatch = |table: &str, words: &str| {
        records.iter().any(|r| {
            r.contains("\"kind\":\"row_count_mismatch\"")
                && r.contains(&format!("\"table\":\"{table}\""))
                && r.contains(words)
        })
    };
    assert!(
        mismatch("accounts", "1 of them were missing on new"),
        "{records:?}"
    );
    assert!(
        mismatch("counters", "1 of them already existed on new"),
        "{records:?}"
    );
    assert!(
        mismatch(
            "jobs",
            "the authority deleted 2 row(s) from jobs; new deleted 0"
        ),
        "{records:?}"
    );
    // The update healed the missing row from the authority's image.
    assert_sides_identical(&s, &[("accounts", "id")]);

    // A write mirrored as a statement (the table has no key): the two
    // sides' CommandComplete counts are compared.
    let out = s.psql(
        &url,
        &["-c", "INSERT INTO audit (note) VALUES ('a'), ('b')"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = psql(
        &s.direct_new_url(),
        &["-c", "DELETE FROM audit WHERE note = 'b'"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.psql(&url, &["-c", "UPDATE audit SET note = 'z'"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // And in the client's transaction (the mirror's answer is read later).
    let out = s.psql(
        &url,
        &["-c", "INSERT INTO audit (note) VALUES ('c'), ('d')"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = psql(
        &s.direct_new_url(),
        &["-c", "DELETE FROM audit WHERE note = 'd'"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.psql(
        &url,
        &[
            "-c",
            "BEGIN",
            "-c",
            "UPDATE audit SET note = 'y' WHERE note IN ('c', 'd')",
            "-c",
            "COMMIT",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let records = s.divergences();
    let found = records
        .iter()
        .filter(|r| {
            r.contains("\"kind\":\"row_count_mismatch\"")
                && r.contains("\"table\":\"audit\"")
                && r.contains("the authority reported 2 written row(s), new reported 1")
        })
        .count();
    assert_eq!(found, 2, "{records:?}");
}

#[test]
fn under_fail_a_count_that_disagrees_fails_the_write_on_both_sides() {
    let s = start(Some("fail"));
    let url = s.app_url();
    let out = psql(
        &s.direct_new_url(),
        &["-c", "DELETE FROM accounts WHERE id = 7"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [
        vec![
            "-c",
            "UPDATE accounts SET balance = -1 WHERE id BETWEEN 6 AND 8",
        ],
        vec![
            "-c",
            "BEGIN",
            "-c",
            "UPDATE accounts SET balance = -1 WHERE id BETWEEN 6 AND 8",
            "-c",
            "COMMIT",
        ],
    ] {
        let out = s.psql(&url, &args);
        assert!(!out.status.success(), "{args:?} should fail");
        println!("refused: {}", stderr(&out));
        assert_eq!(
            scalar(
                &s.direct_url(),
                "SELECT count(*) FROM accounts WHERE balance = -1"
            ),
            "0"
        );
        assert_eq!(
            scalar(
                &s.direct_new_url(),
                "SELECT count(*) FROM accounts WHERE balance = -1"
            ),
            "0"
        );
    }
    // Extended protocol, in an implicit transaction.
    let failed = block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .execute(
                "UPDATE accounts SET balance = -1 WHERE id BETWEEN $1 AND $2",
                &[&6i32, &8i32],
            )
            .await
            .is_err()
    });
    assert!(failed);
    assert_eq!(
        scalar(
            &s.direct_url(),
            "SELECT count(*) FROM accounts WHERE balance = -1"
        ),
        "0"
    );
}

#[test]
fn with_replica_role_the_mirrors_triggers_do_not_fire_for_applied_rows() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        mirror_extra: "replica_role = true",
        ..Options::default()
    });
    // session_replication_role is a superuser's setting.
    s.new
        .as_ref()
        .unwrap()
        .psql("postgres", "ALTER ROLE app SUPERUSER")
        .unwrap();
    let schema = "CREATE TABLE t (id int PRIMARY KEY, v int); \
                  CREATE TABLE fired (n int); \
                  CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS \
                  $$ BEGIN INSERT INTO fired VALUES (1); RETURN NEW; END $$; \
                  CREATE TRIGGER t_note AFTER INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION note()";
    for url in [s.direct_url(), s.direct_new_url()] {
        let out = psql(&url, &["-v", "ON_ERROR_STOP=1", "-c", schema], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = s.psql(
        &s.app_url(),
        &[
            "-c",
            "INSERT INTO t VALUES (1, 1), (2, 1)",
            "-c",
            "UPDATE t SET v = 2 WHERE id = 1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_sides_identical(&s, &[("t", "id")]);
    assert_eq!(scalar(&s.direct_url(), "SELECT count(*) FROM fired"), "3");
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT count(*) FROM fired"),
        "0"
    );
    // What old's trigger wrote (fired) is not in the row images: said once.
    let records = s.divergences();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("t has triggers") && records[0].contains("do not fire on the mirror"),
        "{records:?}"
    );
}

#[test]
fn writes_that_cannot_carry_row_images_are_mirrored_as_statements_and_recorded() {
    let s = start(None);
    let url = s.app_url();
    let out = s.psql(
        &url,
        &[
            "-c",
            "INSERT INTO jobs (state) VALUES ('x'), ('x')",
            "-c",
            "WITH d AS (DELETE FROM jobs WHERE state = 'x' RETURNING id) \
             INSERT INTO events (account, kind) SELECT id, 'moved' FROM d",
            "-c",
            "INSERT INTO audit (note) VALUES ('a')",
            "-c",
            "UPDATE audit SET note = 'b'",
            "-c",
            "INSERT INTO counters (k) VALUES ('x')",
            "-c",
            "UPDATE counters SET k = 'y' WHERE k = 'x'",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let records = s.divergences();
    println!("{}", records.join("\n"));
    for why in [
        "a write inside a WITH clause",
        "audit has no primary key",
        "assigns a primary-key column of counters",
    ] {
        assert!(
            records
                .iter()
                .any(|r| r.contains("\"kind\":\"unsafe_statement\"")
                    && r.contains("mirrored as a statement")
                    && r.contains(why)),
            "{why}: {records:?}"
        );
    }
    // The moved key, mirrored as a statement on a quiet table: the same on
    // both sides. (The WITH statement's `events.at` defaults to
    // clock_timestamp(), evaluated again on new: exactly why it is recorded.)
    assert_sides_identical(&s, &[("counters", "k")]);
}

#[test]
fn deallocate_all_and_discard_all_between_writes_lose_nothing() {
    // turnout prepares its apply statements on new once per connection;
    // a client's `DEALLOCATE ALL` or `DISCARD ALL` drops them there too.
    let s = start(None);
    let out = s.psql(
        &s.app_url(),
        &[
            "-c",
            "UPDATE accounts SET balance = 1 WHERE id = 1",
            "-c",
            "DEALLOCATE ALL",
            "-c",
            "UPDATE accounts SET balance = 2 WHERE id = 2",
            "-c",
            "DISCARD ALL",
            "-c",
            "UPDATE accounts SET balance = 3 WHERE id = 3",
            "-c",
            "BEGIN",
            "-c",
            "UPDATE accounts SET balance = 4 WHERE id = 4",
            "-c",
            "DEALLOCATE ALL",
            "-c",
            "UPDATE accounts SET balance = 5 WHERE id = 5",
            "-c",
            "COMMIT",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_sides_identical(&s, &[("accounts", "id")]);
    assert_eq!(
        scalar(
            &s.direct_new_url(),
            "SELECT string_agg(balance::text, ',' ORDER BY id) FROM accounts WHERE id <= 5"
        ),
        "1.00,2.00,3.00,4.00,5.00"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn an_unreachable_mirror_is_a_mirror_error_not_an_unsafe_statement() {
    // Under on_unsafe = "fail" a write whose rows cannot be applied by key
    // is refused; a mirror that cannot be reached is no such write: under
    // on_error = "record" the client's write succeeds and the miss is
    // recorded as a mirror error.
    let mut s = Setup::start(Options {
        phase: Some("mirror"),
        mirror_extra: "on_unsafe = \"fail\"",
        ..Options::default()
    });
    for url in [s.direct_url(), s.direct_new_url()] {
        let out = psql(
            &url,
            &["-c", "CREATE TABLE kv (k text PRIMARY KEY, v int)"],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    s.new.as_mut().unwrap().kill().unwrap();
    let out = s.psql(&s.app_url(), &["-c", "INSERT INTO kv VALUES ('a', 1)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(scalar(&s.direct_url(), "SELECT count(*) FROM kv"), "1");
    let records = s.divergences();
    assert!(
        !records.is_empty()
            && records
                .iter()
                .all(|r| r.contains("\"kind\":\"mirror_error\"")),
        "{records:?}"
    );
}

// The same workloads with the mirror fed from old's log.

#[test]
fn psycopg3_mixed_workload_from_the_log() {
    from_the_log(psycopg3_mixed_workload_leaves_both_sides_identical);
}

#[test]
fn node_postgres_mixed_workload_from_the_log() {
    from_the_log(node_postgres_mixed_workload_leaves_both_sides_identical);
}

#[test]
fn pgbench_mixed_scripts_from_the_log() {
    from_the_log(pgbench_extended_and_prepared_mixed_scripts_leave_both_sides_identical);
}

#[test]
fn tokio_postgres_mixed_workload_from_the_log() {
    from_the_log(tokio_postgres_mixed_workload_leaves_both_sides_identical);
}
