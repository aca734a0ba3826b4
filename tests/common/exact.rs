//! Helpers of the exactness tests (tests/pg_log.rs, tests/pg_image_exact.rs):
//! both sides' rows as text, one schema made on both sides, and a narrow
//! role's statements run directly and through turnout.

use super::{psql, run_direct_ok, scalar, stderr, stdout, Setup};

/// Both sides' rows of `table`, each as its text (`t::text`), in key order.
pub fn rows_text(url: &str, table: &str, order: &str) -> String {
    scalar(
        url,
        &format!("SELECT string_agg(t::text, E'\\n' ORDER BY {order}) FROM {table} t"),
    )
}

pub fn assert_identical(s: &Setup, table: &str, order: &str) {
    let old = rows_text(&s.direct_url(), table, order);
    let new = rows_text(&s.direct_new_url(), table, order);
    assert!(!old.is_empty(), "{table} is empty on old");
    assert_eq!(old, new, "{table} differs between old and new");
}

/// The same schema on both sides, made directly: new first, as a cutover
/// does (old's rows go to new's tables as soon as old commits them).
pub fn schema(s: &Setup, sql: &[&str]) {
    run_direct_ok(&s.direct_new_url(), sql);
    run_direct_ok(&s.direct_url(), sql);
}

/// The tables [`narrow_role_writes_answer_as_directly`] writes, and their keys.
pub const NARROW_ROLE_TABLES: [(&str, &str); 4] = [
    ("inbox", "id"),
    ("mine", "id"),
    ("log_target", "id"),
    ("docs", "id"),
];

/// A role that may insert but not read (column privileges, row-level
/// security, a rule, json holding a \u0000 escape) writes the same statements directly
/// (rows 100 + i) and through turnout (rows i): each answers alike.
pub fn narrow_role_writes_answer_as_directly(s: &Setup) {
    for side in [&s.new.as_ref().unwrap(), &&s.old] {
        side.psql(
            "app",
            "CREATE ROLE writer LOGIN PASSWORD 'pw-writer'; \
             CREATE TABLE inbox (id int PRIMARY KEY, body text, secret text); \
             GRANT INSERT ON inbox TO writer; \
             GRANT UPDATE (body) ON inbox TO writer; \
             CREATE TABLE mine (id int PRIMARY KEY, owner text DEFAULT current_user, v text); \
             ALTER TABLE mine ENABLE ROW LEVEL SECURITY; ALTER TABLE mine FORCE ROW LEVEL SECURITY; \
             CREATE POLICY ins ON mine FOR INSERT TO writer WITH CHECK (true); \
             CREATE POLICY sel ON mine FOR SELECT TO writer USING (owner = 'nobody'); \
             GRANT INSERT, SELECT ON mine TO writer; \
             CREATE TABLE log_target (id serial PRIMARY KEY, v text); \
             CREATE TABLE ruled (id int PRIMARY KEY, v text); \
             CREATE RULE redirect AS ON INSERT TO ruled DO INSTEAD INSERT INTO log_target (v) VALUES (NEW.v); \
             GRANT INSERT ON ruled, log_target TO writer; GRANT USAGE ON SEQUENCE log_target_id_seq TO writer; \
             CREATE TABLE docs (id int PRIMARY KEY, j json); GRANT INSERT ON docs TO writer",
        )
        .unwrap();
    }
    let mut config = std::fs::read_to_string(&s.proxy.config).unwrap();
    config.push_str("\n[[users]]\nname = \"w\"\npassword = \"pw-w\"\nbackend_user = \"writer\"\nbackend_password = \"pw-writer\"\n");
    std::fs::write(&s.proxy.config, config).unwrap();
    s.ctl_ok(&["reload"]);
    let through = s.url("w", "pw-w");
    let direct = format!(
        "host=127.0.0.1 port={} dbname=app user=writer password=pw-writer",
        s.old.port
    );
    let statements = [
        "INSERT INTO inbox (id, body) VALUES ({n}, 'hello')",
        "UPDATE inbox SET body = 'edited' WHERE id = {n}",
        "INSERT INTO mine (id, v) VALUES ({n}, 'hidden from me')",
        "INSERT INTO ruled VALUES ({n}, 'instead')",
        r#"INSERT INTO docs VALUES ({n}, '{"nul": "\u0000"}')"#,
    ];
    for (i, sql) in statements.iter().enumerate() {
        // The same statement directly (row 100 + i) and through turnout (i).
        let d = psql(
            &direct,
            &["-c", &sql.replace("{n}", &(100 + i).to_string())],
            &[],
        );
        let t = psql(&through, &["-c", &sql.replace("{n}", &i.to_string())], &[]);
        assert_eq!(
            (d.status.success(), stdout(&d)),
            (t.status.success(), stdout(&t)),
            "{sql}: directly {} / through turnout {}",
            stderr(&d),
            stderr(&t)
        );
    }
}
