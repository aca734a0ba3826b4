//! The mirror built from row images (`mirror.source = "statements"`, the
//! source without logical decoding), tried on the cases the log source
//! handles exactly: each leaves the sides identical, or says in the record
//! what it could not carry. Nothing differs silently.

mod common;

use common::exact::{assert_identical, rows_text, schema};
use common::{psql, scalar, stderr, Options, Setup};

fn images_setup() -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        ..Options::default()
    })
}

/// The records whose text holds `needle`.
fn records_with(s: &Setup, needle: &str) -> Vec<String> {
    s.divergences()
        .into_iter()
        .filter(|r| r.contains(needle))
        .collect()
}

/// Values the jsonb round trip used to change, a LATIN1 client's text:
/// identical. A session with `extra_float_digits = 0` prints rounded
/// floats, so its writes go as statements, and the record says why.
#[test]
fn odd_values_and_encodings_reach_new_exactly_or_are_recorded() {
    let s = images_setup();
    schema(
        &s,
        &["CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb, f float8, r real, a int[], t text, n numeric)"],
    );
    s.run_ok(&[
        r#"INSERT INTO docs VALUES (1, '{"a":  1, "a": 2,  "n": 1.50}', 'null', '-0', 0.1, '[0:1]={1,2}', 'héllo', 1.10)"#,
        "INSERT INTO docs VALUES (2, '[]', '{\"x\": null}', 'NaN', '-Infinity', '{}', NULL, 'NaN')",
        "UPDATE docs SET t = 'changed', f = 1e-300 WHERE id = 2",
        "INSERT INTO docs VALUES (3, NULL, NULL, 3.141592653589793, 1.17549435e-38, '[-2:-1]={7,8}', E'tab\\there', 0)",
        "DELETE FROM docs WHERE id = 3",
    ]);
    assert_identical(&s, "docs", "id");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    // A LATIN9 client's bytes (a script in its encoding).
    let script = s.dir.path().join("latin9.sql");
    let text = "INSERT INTO docs (id, t) VALUES (4, 'Grüße, ça va');\n\
                UPDATE docs SET t = t || ' €' WHERE id = 4;\n";
    let bytes: Vec<u8> = text
        .chars()
        .map(|c| if c == '€' { 0xA4 } else { c as u32 as u8 })
        .collect();
    std::fs::write(&script, bytes).unwrap();
    let out = psql(
        &s.app_url(),
        &["-v", "ON_ERROR_STOP=1", "-f", script.to_str().unwrap()],
        &[("PGCLIENTENCODING", "LATIN9")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_identical(&s, "docs", "id");
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT t FROM docs WHERE id = 4"),
        "Grüße, ça va €"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    let out = psql(
        &s.app_url(),
        &[
            "-c",
            "SET extra_float_digits = 0",
            "-c",
            "INSERT INTO docs (id, f) VALUES (5, 0.1::float8 + 0.2::float8)",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_identical(&s, "docs", "id");
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT f::text FROM docs WHERE id = 5"),
        "0.30000000000000004"
    );
    let records = s.divergences();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("extra_float_digits = 0 rounds"),
        "{records:?}"
    );
}

/// Row triggers: the images carry the row old wrote; what the triggers
/// did beyond it is not in them, and the record says so once per table.
#[test]
fn tables_with_triggers_are_recorded() {
    let s = images_setup();
    schema(
        &s,
        &[
            "CREATE TABLE parent (id int PRIMARY KEY, name text, edits int NOT NULL DEFAULT 0)",
            "CREATE TABLE audit (id bigserial PRIMARY KEY, op text)",
            "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (op) VALUES (TG_OP); RETURN NULL; END $$",
            "CREATE TRIGGER parent_audit AFTER INSERT OR UPDATE ON parent FOR EACH ROW EXECUTE FUNCTION audit()",
        ],
    );
    s.run_ok(&[
        "INSERT INTO parent (id, name) VALUES (1, 'a'), (2, 'b')",
        "UPDATE parent SET name = name || '!'",
    ]);
    assert_identical(&s, "parent", "id");
    let records = records_with(&s, "parent has triggers");
    assert_eq!(records.len(), 1, "{:?}", s.divergences());
    assert!(
        records[0].contains("fire again on the mirror"),
        "{records:?}"
    );
}

/// The table the images go to is the one old wrote, whatever the client's
/// search_path; a column added on both sides outside turnout is written.
#[test]
fn the_table_and_columns_are_the_ones_old_wrote() {
    let s = images_setup();
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

/// A partitioned table takes images through its root, a row moving to
/// another partition included.
#[test]
fn partitioned_tables_are_mirrored() {
    let s = images_setup();
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
        "UPDATE events SET day = '2027-03-01' WHERE id = 1 AND day = '2026-03-01'",
        "UPDATE events SET v = 'bb' WHERE id = 2",
        "DELETE FROM events WHERE id = 3",
        "INSERT INTO events VALUES (2, '2026-06-01', 'again') ON CONFLICT (id, day) DO UPDATE SET v = excluded.v",
    ]);
    assert_identical(&s, "events", "id, day");
    assert_identical(&s, "events_2027", "id, day");
    // Moving a row to another partition assigns a key column: it went as
    // a statement, and the record says so; nothing else is recorded.
    let records = s.divergences();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].contains("primary-key column"), "{records:?}");
}

/// Volatile values behind a view and in COPY: drawn on old; what cannot
/// be carried is recorded, nothing differs silently.
#[test]
fn views_and_copy_with_volatile_defaults_are_identical_or_recorded() {
    let s = images_setup();
    schema(
        &s,
        &[
            "CREATE TABLE things (id bigserial PRIMARY KEY, token uuid NOT NULL DEFAULT gen_random_uuid(), r float8 NOT NULL DEFAULT random(), name text)",
            "CREATE VIEW named_things AS SELECT id, name FROM things",
        ],
    );
    s.run_ok(&[
        "INSERT INTO things (name) SELECT 'select ' || g FROM generate_series(1, 20) g",
        "INSERT INTO named_things (name) VALUES ('through a view')",
    ]);
    let view = records_with(&s, "view");
    assert_eq!(view.len(), 1, "{:?}", s.divergences());
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
    // The rows written by statements with images are identical.
    let same =
        "SELECT string_agg(t::text, E'\\n' ORDER BY id) FROM things t WHERE name LIKE 'select %'";
    assert_eq!(
        scalar(&s.direct_url(), same),
        scalar(&s.direct_new_url(), same)
    );
    let old = rows_text(&s.direct_url(), "things", "id");
    let new = rows_text(&s.direct_new_url(), "things", "id");
    // COPY's rows go as a statement, drawing new's defaults (new's own
    // sequence, which the images did not move): what fails there is a
    // recorded mirror error, never a silent difference.
    if old != new {
        assert!(
            !records_with(&s, "copy things (name) from stdin").is_empty(),
            "COPY left the sides different without a record: {:?}",
            s.divergences()
        );
    }
}

/// Writes the classifier cannot see from the text: each is found (the
/// authority says the read wrote) and recorded, or recorded as unread.
#[test]
fn hidden_writes_are_recorded() {
    let s = images_setup();
    schema(
        &s,
        &[
            "CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)",
            "INSERT INTO counter VALUES (1, 0)",
            "CREATE TABLE notes (id serial PRIMARY KEY, r float8, v text)",
            "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS $$ UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n $$",
        ],
    );
    let cases: [(&[&str], &str); 6] = [
        (&["SELECT bump()"], "unmirrored_write"),
        (&["SELECT * FROM bump()"], "unmirrored_write"),
        (
            &[
                "BEGIN",
                "DECLARE c CURSOR FOR SELECT bump() FROM generate_series(1, 3)",
                "FETCH ALL FROM c",
                "COMMIT",
            ],
            "unmirrored_write",
        ),
        (&["COPY (SELECT bump()) TO STDOUT"], "unmirrored_write"),
        (
            &["DO $$ BEGIN INSERT INTO notes (r, v) VALUES (random(), 'do'); END $$"],
            "a statement turnout's parser cannot read",
        ),
        (
            &[
                "PREPARE ins(text) AS INSERT INTO notes (r, v) VALUES (random(), $1)",
                "EXECUTE ins('prepared')",
            ],
            "EXECUTE of a statement prepared by SQL",
        ),
    ];
    for (statements, needle) in cases {
        let before = s.divergences().len();
        let mut args = Vec::new();
        for sql in statements {
            args.extend(["-c", *sql]);
        }
        let out = psql(&s.app_url(), &args, &[]);
        assert!(out.status.success(), "{statements:?}: {}", stderr(&out));
        common::eventually(&format!("{statements:?} is recorded"), || {
            s.divergences()[before..].iter().any(|r| r.contains(needle))
        });
    }
    println!("{}", s.divergences().join("\n"));
    // Reads that write nothing are not recorded.
    let before = s.divergences().len();
    s.run_ok(&["SELECT n FROM counter", "SELECT count(*) FROM notes"]);
    assert_eq!(s.divergences().len(), before, "{:?}", s.divergences());
}

/// A narrow role answers through turnout as it does directly: nothing is
/// added to its statements that it could not run.
#[test]
fn narrow_roles_rls_rules_and_odd_json_answer_as_directly() {
    let s = images_setup();
    common::exact::narrow_role_writes_answer_as_directly(&s);
    // Each table is the same on new, or what made it differ is recorded.
    for (t, o) in common::exact::NARROW_ROLE_TABLES {
        if rows_text(&s.direct_url(), t, o) != rows_text(&s.direct_new_url(), t, o) {
            assert!(
                !records_with(&s, t).is_empty(),
                "{t} differs without a record: {:?}",
                s.divergences()
            );
        }
    }
    println!("{}", s.divergences().join("\n"));
}
