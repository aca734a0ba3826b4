//! The mirror fed from the authority's own log (`mirror.source = "log"`):
//! every change old commits, by any statement, trigger, function or client,
//! reaches new exactly and in commit order.

mod common;

use common::{psql, run_direct_ok, scalar, stderr, stdout, Options, Setup};

/// Both sides' rows of `table`, each as its text (`t::text`), in key order.
fn rows_text(url: &str, table: &str, order: &str) -> String {
    scalar(
        url,
        &format!("SELECT string_agg(t::text, E'\\n' ORDER BY {order}) FROM {table} t"),
    )
}

fn assert_identical(s: &Setup, table: &str, order: &str) {
    let old = rows_text(&s.direct_url(), table, order);
    let new = rows_text(&s.direct_new_url(), table, order);
    assert!(!old.is_empty(), "{table} is empty on old");
    assert_eq!(old, new, "{table} differs between old and new");
}

fn log_setup(extra: &'static str) -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        logical: true,
        admin: true,
        mirror_extra: extra,
        ..Options::default()
    })
}

/// The same schema on both sides, made directly.
fn schema(s: &Setup, sql: &[&str]) {
    run_direct_ok(&s.direct_url(), sql);
    run_direct_ok(&s.direct_new_url(), sql);
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
    println!(
        "{}",
        stdout(&psql(
            &s.app_url(),
            &["-c", "SELECT count(*) FROM docs"],
            &[]
        ))
    );
}
