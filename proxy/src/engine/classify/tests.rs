use super::*;
use proptest::prelude::*;
use std::sync::Arc;

fn kind(sql: &str) -> Kind {
    classify_uncached(SqlDialect::Postgres, sql).kind()
}

fn my_kind(sql: &str) -> Kind {
    classify_uncached(SqlDialect::Mysql, sql).kind()
}

#[test]
fn reads_and_writes() {
    assert_eq!(
        kind("SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
        Kind::Read
    );
    assert_eq!(kind("SELECT * FROM t FOR UPDATE"), Kind::LockingRead);
    assert_eq!(kind("SELECT * FROM t FOR SHARE"), Kind::LockingRead);
    assert_eq!(kind("UPDATE t SET x = x + 1 WHERE id = 1"), Kind::Write);
    assert_eq!(
        kind("INSERT INTO t (a) VALUES (1) RETURNING id"),
        Kind::Write
    );
    assert_eq!(kind("DELETE FROM t WHERE id = 1"), Kind::Write);
    assert_eq!(kind("TRUNCATE pgbench_history"), Kind::Write);
    assert_eq!(
        kind("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 2"),
        Kind::Write
    );
}

#[test]
fn selects_with_side_effects_are_writes() {
    assert_eq!(kind("SELECT nextval('t_id_seq')"), Kind::Write);
    assert_eq!(kind("SELECT pg_advisory_lock(1)"), Kind::Write);
    assert_eq!(
        kind("WITH moved AS (DELETE FROM a RETURNING *) SELECT count(*) FROM moved"),
        Kind::Write
    );
    assert_eq!(kind("SELECT * INTO new_table FROM t"), Kind::Ddl);
}

#[test]
fn copy_direction_decides() {
    assert_eq!(kind("COPY t FROM STDIN WITH (FORMAT csv)"), Kind::Write);
    assert_eq!(kind("COPY t TO STDOUT"), Kind::Read);
    assert_eq!(kind("COPY (SELECT * FROM t) TO STDOUT"), Kind::Read);
}

#[test]
fn transaction_control() {
    use TxControl::*;
    assert_eq!(kind("BEGIN"), Kind::Transaction(Begin));
    assert_eq!(
        kind("START TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        Kind::Transaction(Begin)
    );
    assert_eq!(kind("COMMIT"), Kind::Transaction(Commit));
    assert_eq!(kind("END"), Kind::Transaction(Commit));
    assert_eq!(kind("ROLLBACK"), Kind::Transaction(Rollback));
    assert_eq!(kind("SAVEPOINT s1"), Kind::Transaction(Savepoint));
    assert_eq!(kind("RELEASE SAVEPOINT s1"), Kind::Transaction(Release));
    assert_eq!(
        kind("ROLLBACK TO SAVEPOINT s1"),
        Kind::Transaction(RollbackTo)
    );
}

#[test]
fn session_ddl_and_other() {
    assert_eq!(kind("SET search_path TO app, public"), Kind::Session);
    assert_eq!(kind("SET TIME ZONE 'UTC'"), Kind::Session);
    assert_eq!(kind("RESET ALL"), Kind::Session);
    assert_eq!(kind("DISCARD ALL"), Kind::Session);
    assert_eq!(kind("CREATE TABLE t (id serial PRIMARY KEY)"), Kind::Ddl);
    assert_eq!(kind("ALTER TABLE t ADD COLUMN x int"), Kind::Ddl);
    assert_eq!(kind("DROP TABLE t"), Kind::Ddl);
    assert_eq!(kind("CREATE INDEX ON t (x)"), Kind::Ddl);
    assert_eq!(kind("LISTEN jobs"), Kind::Other);
    assert_eq!(kind("NOTIFY jobs, 'x'"), Kind::Write);
    assert_eq!(kind("EXPLAIN SELECT 1"), Kind::Other);
    assert_eq!(kind("EXPLAIN ANALYZE DELETE FROM t"), Kind::Write);
}

#[test]
fn unparsable_and_unknown_statements_are_writes() {
    let c = classify_uncached(SqlDialect::Postgres, "FROBNICATE the_table");
    assert_eq!(c.kind(), Kind::Write);
    assert!(c.parse_error.is_some());
    assert_eq!(kind("VACUUM ANALYZE t"), Kind::Other);
    let c = classify_uncached(SqlDialect::Postgres, "CALL refresh_totals()");
    assert_eq!(c.kind(), Kind::Write);
    assert!(c.unsafe_reason().is_some());
}

#[test]
fn nondeterministic_writes_are_flagged() {
    let c = classify_uncached(
        SqlDialect::Postgres,
        "INSERT INTO t (id, at, token) VALUES (1, now(), gen_random_uuid())",
    );
    assert!(c.nondeterministic());
    let c = classify_uncached(SqlDialect::Postgres, "UPDATE t SET x = 1 WHERE id = 2");
    assert!(!c.nondeterministic());
    // A read's now() needs no care.
    let c = classify_uncached(SqlDialect::Postgres, "SELECT now()");
    assert!(!c.nondeterministic());
}

#[test]
fn multi_statement_texts_take_the_strongest_kind() {
    assert_eq!(kind("SELECT 1; SELECT 2"), Kind::Read);
    assert_eq!(kind("SELECT 1; UPDATE t SET x = 1"), Kind::Write);
    assert_eq!(kind("BEGIN; UPDATE t SET x = 1; COMMIT"), Kind::Write);
    assert_eq!(
        kind("UPDATE t SET x = 1; ALTER TABLE t ADD y int"),
        Kind::Ddl
    );
}

#[test]
fn mysql_dialect() {
    assert_eq!(my_kind("SELECT * FROM `t` WHERE id = ?"), Kind::Read);
    assert_eq!(my_kind("INSERT INTO t (a) VALUES (UUID())"), Kind::Write);
    assert_eq!(my_kind("USE app"), Kind::Session);
    assert_eq!(
        my_kind("SELECT * FROM t LOCK IN SHARE MODE"),
        Kind::LockingRead
    );
    assert!(
        classify_uncached(SqlDialect::Mysql, "INSERT INTO t VALUES (UUID())").nondeterministic()
    );
}

#[test]
fn the_cache_answers_repeat_texts_and_stays_bounded() {
    let c = Classifier::new(SqlDialect::Postgres, 3);
    let a = c.classify("SELECT 1");
    let b = c.classify("SELECT 1");
    assert!(Arc::ptr_eq(&a, &b));
    for i in 0..10 {
        c.classify(&format!("SELECT {i}"));
    }
    assert!(c.cache.len() <= 3);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let c = classify_uncached(SqlDialect::Postgres, &sql);
    assert_eq!(c.kind(), Kind::Write);
    assert!(c.parse_error.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_gets_a_classification(sql in ".{0,300}") {
        let _ = classify_uncached(SqlDialect::Postgres, &sql);
        let _ = classify_uncached(SqlDialect::Mysql, &sql);
    }

    #[test]
    fn sql_shaped_noise_gets_a_classification(
        words in proptest::collection::vec(
            prop_oneof![
                Just("SELECT"), Just("INSERT"), Just("INTO"), Just("FROM"), Just("WHERE"),
                Just("("), Just(")"), Just(","), Just("'x'"), Just("$1"), Just("1"),
                Just("t"), Just("WITH"), Just("AS"), Just("UPDATE"), Just("SET"), Just("="),
                Just(";"), Just("BEGIN"), Just("COPY"), Just("RETURNING"), Just("*"),
            ],
            0..40,
        )
    ) {
        let sql = words.join(" ");
        let c = classify_uncached(SqlDialect::Postgres, &sql);
        // Whatever could not be parsed is mirrored, never dropped: a
        // write, or a transaction statement or DDL known by its keyword.
        if c.parse_error.is_some() {
            prop_assert!(matches!(c.kind(), Kind::Write | Kind::Transaction(_) | Kind::Ddl), "{:?}", c.kind());
        }
    }
}

#[test]
fn mysql_writes_that_statement_context_cannot_replay_are_unsafe() {
    let c = |sql| classify_uncached(SqlDialect::Mysql, sql);
    assert!(c("INSERT INTO t (id, v) VALUES (UUID(), 1)")
        .unsafe_reason()
        .is_some());
    assert!(c("UPDATE t SET v = RAND() WHERE id = 1")
        .unsafe_reason()
        .is_some());
    assert!(c("DELETE FROM t WHERE v > 1 LIMIT 10")
        .unsafe_reason()
        .is_some());
    assert!(c("DELETE FROM t WHERE v > 1 ORDER BY id LIMIT 10")
        .unsafe_reason()
        .is_none());
    assert!(c("INSERT INTO t (v, at) VALUES (1, NOW())")
        .unsafe_reason()
        .is_none());
    assert!(
        c("SELECT UUID()").unsafe_reason().is_none(),
        "reads are not mirrored"
    );
    // Values of each server's own.
    for sql in [
        "INSERT INTO t (v, n) VALUES (CONNECTION_ID(), 1)",
        "INSERT INTO t (v, n) VALUES ('x', @@port)",
        "INSERT INTO t (v) VALUES (@@hostname)",
        "UPDATE t SET v = @@global.server_id",
        "INSERT INTO t (v) SELECT @@SESSION.hostname",
    ] {
        assert!(c(sql).unsafe_reason().is_some(), "{sql}");
    }
    assert!(c("INSERT INTO t (v) VALUES (@@max_allowed_packet)")
        .unsafe_reason()
        .is_none());
}

#[test]
fn reads_of_no_table_are_told_apart() {
    assert!(
        classify_uncached(SqlDialect::Mysql, "SELECT @@max_allowed_packet, @@socket").no_tables
    );
    assert!(classify_uncached(SqlDialect::Postgres, "SELECT now()").no_tables);
    assert!(!classify_uncached(SqlDialect::Postgres, "SELECT id FROM users").no_tables);
    assert!(!classify_uncached(SqlDialect::Postgres, "SELECT (SELECT 1 FROM t)").no_tables);
}

#[test]
fn transaction_control_the_parser_cannot_read_keeps_its_kind() {
    use TxControl::*;
    for (sql, tx) in [
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
            Begin,
        ),
        (
            "start transaction isolation level serializable, read only, deferrable",
            Begin,
        ),
        ("BEGIN NOT DEFERRABLE", Begin),
        ("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ", Begin),
        ("START TRANSACTION WITH CONSISTENT SNAPSHOT", Begin),
        ("COMMIT AND CHAIN", Commit),
        ("END", Commit),
        ("ABORT", Rollback),
        ("ROLLBACK TO SAVEPOINT a", RollbackTo),
        ("ROLLBACK AND NO CHAIN", Rollback),
    ] {
        assert_eq!(kind(sql), Kind::Transaction(tx), "{sql}");
    }
    assert_eq!(
        my_kind("START TRANSACTION WITH CONSISTENT SNAPSHOT"),
        Kind::Transaction(Begin)
    );
    // Two-phase commit and MariaDB's anonymous blocks are not transaction
    // control of the session: they stay writes.
    assert_eq!(kind("COMMIT PREPARED 'x'"), Kind::Write);
    assert_eq!(kind("PREPARE TRANSACTION 'x'"), Kind::Write);
    assert_eq!(
        my_kind("BEGIN NOT ATOMIC UPDATE t SET a = 1; END"),
        Kind::Write
    );
    // A transaction keyword followed by another statement is not one.
    assert_eq!(kind("BEGIN DEFERRABLE; DELETE FROM t"), Kind::Write);
    assert_eq!(kind("BEGIN SELECT"), Kind::Write);
}

#[test]
fn ddl_is_ddl_whether_the_parser_reads_it_or_not() {
    // MySQL/MariaDB: every spelling of a column type, stored programs,
    // views, triggers, indexes; creating and dropping alike.
    for sql in [
        "CREATE TABLE t (a INT PRIMARY KEY, b LONG BYTE)",
        "CREATE TABLE t (b LONG VARBINARY, c LONG VARCHAR, d MEDIUMBLOB, e TINYTEXT)",
        "CREATE TABLE t (a INT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "DROP TABLE t",
        "DROP TABLE IF EXISTS t, u",
        "CREATE PROCEDURE p() BEGIN UPDATE t SET a = 1; DELETE FROM u; END",
        "CREATE DEFINER = CURRENT_USER PROCEDURE p(IN x INT) BEGIN SELECT x; END",
        "DROP PROCEDURE p",
        "DROP PROCEDURE IF EXISTS p",
        "CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x + 1",
        "DROP FUNCTION f",
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
        "DROP TRIGGER tr",
        "CREATE VIEW v AS SELECT a FROM t",
        "CREATE OR REPLACE VIEW v AS SELECT a FROM t",
        "DROP VIEW v",
        "CREATE INDEX i ON t (a)",
        "DROP INDEX i ON t",
        "ALTER TABLE t ADD COLUMN c LONG BYTE",
        "RENAME TABLE t TO u",
    ] {
        assert_eq!(my_kind(sql), Kind::Ddl, "{sql}");
    }
    for sql in [
        "CREATE TABLE t (a int PRIMARY KEY, b bytea)",
        "DROP TABLE t",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
        "DROP FUNCTION f()",
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        "CREATE INDEX CONCURRENTLY i ON t (a)",
        "DROP INDEX i",
        "CREATE VIEW v AS SELECT a FROM t",
        "ALTER TABLE t ADD COLUMN c text",
    ] {
        assert_eq!(kind(sql), Kind::Ddl, "{sql}");
    }
    // A DDL keyword ahead of another statement is not taken on its word.
    assert_eq!(
        my_kind("DROP TABLE t LONG BYTE; DELETE FROM u"),
        Kind::Write
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The cache never answers for a text what another text got: a text
    /// and the same text with other literal values (often one cache key),
    /// classified through one cache, each get their own classification,
    /// whatever comments, quotes, dollar signs and nesting they hold.
    #[test]
    fn the_cache_answers_each_text_as_the_parser_reads_it(
        words in proptest::collection::vec(
            prop_oneof![
                Just("SELECT"), Just("DELETE"), Just("FROM"), Just("t"), Just("WHERE"),
                Just("id"), Just("="), Just("1"), Just("'x'"), Just("$1"), Just("?"), Just(";"),
                Just("/*"), Just("*/"), Just("--"), Just("\n"), Just("#"), Just("a$b"),
                Just("$b$"), Just("$$"), Just("UPDATE"), Just("SET"), Just("EXPLAIN"),
                Just("("), Just(")"), Just("ANALYZE"), Just(","), Just("true"), Just("--1"),
                Just("/*!"), Just("/*M!"), Just("E'\\\\'"), Just("'\\\\'"), Just("\""),
                Just("`"), Just("INSERT"), Just("INTO"), Just("VALUES"), Just("BEGIN"),
            ],
            0..24,
        ),
        glue in proptest::collection::vec(prop_oneof![Just(" "), Just("")], 24),
    ) {
        let mut sql = String::new();
        for (w, g) in words.iter().zip(&glue) {
            sql.push_str(w);
            sql.push_str(g);
        }
        let other = crate::fuzzing::other_literals(&sql);
        for dialect in [SqlDialect::Postgres, SqlDialect::Mysql] {
            prop_assert!(crate::fuzzing::cache_agrees(dialect, &sql, &other).is_ok(),
                "{}", crate::fuzzing::cache_agrees(dialect, &sql, &other).unwrap_err());
            prop_assert!(crate::fuzzing::cache_agrees(dialect, &other, &sql).is_ok(),
                "{}", crate::fuzzing::cache_agrees(dialect, &other, &sql).unwrap_err());
        }
    }
}

#[test]
fn the_review_s_poisoning_texts_do_not_poison() {
    use crate::fuzzing::cache_agrees;
    use SqlDialect::*;
    for (dialect, poison, victim) in [
        (
            Postgres,
            "/* /* */ DELETE FROM t WHERE id = 1 -- */ SELECT 'harmless'",
            "DELETE FROM t WHERE id = 3",
        ),
        (
            Postgres,
            "SELECT a$b FROM t WHERE x = $b$ DELETE FROM t WHERE id = 1 $b$",
            "SELECT a$b FROM t WHERE x = 1",
        ),
        (Mysql, "SELECT 1 --1; UPDATE t SET a = 1", "SELECT 1"),
        (Mysql, "SELECT 1", "SELECT 1 --1; UPDATE t SET a = 1"),
        (Mysql, "SELECT 1 /*M! ; DELETE FROM t */", "SELECT 1"),
    ] {
        cache_agrees(dialect, poison, victim).unwrap();
    }
    // What runs is what is classified: MariaDB runs `/*M!` and `/*!` texts.
    assert_eq!(
        classify_uncached(Mysql, "SELECT 1 /*M!100100 ; DELETE FROM t */").kind(),
        Kind::Write
    );
    assert_eq!(
        classify_uncached(Mysql, "/*! DELETE FROM t */").kind(),
        Kind::Write
    );
}

#[test]
fn a_flood_of_shapes_makes_room_without_forgetting_what_is_what() {
    let cache = Classifier::new(SqlDialect::Postgres, 1000);
    assert_eq!(
        cache.classify("DELETE FROM t WHERE id = 1").kind(),
        Kind::Write
    );
    for i in 0..10_050 {
        let c = cache.classify(&format!("SELECT c{i} FROM t"));
        assert_eq!(c.kind(), Kind::Read);
        assert!(cache.cached() <= 1000);
    }
    assert_eq!(
        cache.classify("DELETE FROM t WHERE id = 3").kind(),
        Kind::Write
    );
    assert!(cache.cached() > 800, "room is made an eighth at a time");
}

#[test]
fn explain_analyze_in_every_spelling_runs_the_write() {
    for sql in [
        "EXPLAIN ANALYZE UPDATE t SET a = 1",
        "EXPLAIN (ANALYZE) UPDATE t SET a = 1",
        "EXPLAIN (ANALYZE true, COSTS false) DELETE FROM t WHERE id = 1",
        "EXPLAIN (ANALYZE, BUFFERS) WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d",
        "EXPLAIN (analyze on) INSERT INTO t VALUES (1)",
        "EXPLAIN (ANALYZE 1) DELETE FROM t",
        "EXPLAIN (ANALYZE 'yes') DELETE FROM t",
        "EXPLAIN (VERBOSE, ANALYZE) MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
    ] {
        assert_eq!(kind(sql), Kind::Write, "{sql}");
    }
    for sql in [
        "EXPLAIN UPDATE t SET a = 1",
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        "EXPLAIN (ANALYZE off, COSTS true) DELETE FROM t",
        "EXPLAIN (ANALYZE) SELECT * FROM t",
    ] {
        assert_eq!(kind(sql), Kind::Other, "{sql}");
    }
    assert_eq!(
        my_kind("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1"),
        Kind::Write
    );
    // MariaDB's ANALYZE runs the statement it reports on.
    assert_eq!(my_kind("ANALYZE DELETE FROM t WHERE id = 1"), Kind::Write);
    assert_eq!(my_kind("ANALYZE UPDATE t SET a = 1"), Kind::Write);
    assert_ne!(my_kind("ANALYZE TABLE t"), Kind::Write);
}

#[test]
fn large_object_writes_are_writes() {
    for sql in [
        "SELECT lo_from_bytea(0, '\\xdeadbeef')",
        "SELECT lo_put(16500, 0, 'abc')",
        "SELECT lo_creat(-1)",
        "SELECT lo_truncate(lo_open(16500, 131072), 0)",
        "SELECT lowrite(0, 'x')",
        "SELECT lo_unlink(16500)",
    ] {
        assert_eq!(kind(sql), Kind::Write, "{sql}");
    }
    assert_eq!(kind("SELECT lo_get(16500)"), Kind::Read);
}

#[test]
fn mysql_select_into_a_variable_sets_it_on_both_sides() {
    // A session variable, not a table: the mirror needs it as well (a
    // later INSERT ... VALUES (@x) runs there too).
    assert_eq!(my_kind("SELECT 1 INTO @x"), Kind::Session);
    assert_eq!(
        my_kind("SELECT a INTO @x FROM t WHERE id = 1"),
        Kind::Session
    );
    assert_eq!(
        my_kind("SELECT @n := @n + 1 AS rank, a FROM t"),
        Kind::Session
    );
    assert_eq!(kind("SELECT * INTO new_table FROM t"), Kind::Ddl);
}

#[test]
fn a_session_that_may_turn_backslash_escapes_around_mirrors_texts_with_backslashes() {
    let pg = Classifier::new(SqlDialect::Postgres, 100);
    // With standard_conforming_strings off, PostgreSQL reads this as
    // `SELECT 'a'' , '` and then runs the DELETE; the parser (conforming
    // strings) sees two strings.
    let text = "SELECT 'a\\' , ' ; DELETE FROM t WHERE id = 2; --'";
    assert_eq!(pg.classify(text).kind(), Kind::Read);
    assert!(pg.changes_lexing("SET standard_conforming_strings = off"));
    assert!(pg.changes_lexing("select set_config('STANDARD_CONFORMING_STRINGS', 'off', false)"));
    assert!(!pg.changes_lexing("SELECT 1"));
    assert_eq!(pg.classify_in_session(text, true).kind(), Kind::Write);
    assert_eq!(
        pg.classify_in_session("SELECT 'a'", true).kind(),
        Kind::Read
    );
    let my = Classifier::new(SqlDialect::Mysql, 100);
    assert!(my.changes_lexing("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'"));
    assert!(my.changes_lexing("SET STATEMENT SQL_MODE='' FOR SELECT 1"));
    assert_eq!(
        my.classify_in_session("SELECT 'a\\' ; UPDATE t SET v = 9; -- '", true)
            .kind(),
        Kind::Write
    );
}

#[test]
fn ddl_that_writes_rows_through_with_is_a_write() {
    assert_eq!(
        kind("CREATE TEMP TABLE gone AS WITH d AS (DELETE FROM t WHERE id = 2 RETURNING *) SELECT * FROM d"),
        Kind::Write
    );
    assert_eq!(kind("CREATE TABLE c AS SELECT * FROM t"), Kind::Ddl);
    // A PostgreSQL function whose body the parser cannot read is DDL only
    // up to its `;`: what follows is a statement of its own.
    assert_ne!(
        kind("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$ PARALLEL WEIRD; DELETE FROM t WHERE id = 2"),
        Kind::Ddl
    );
}

#[test]
fn other_spellings_of_explain_analyse_and_large_object_writes_are_writes() {
    for sql in [
        "EXPLAIN (ANALYSE) UPDATE t SET a = 1",
        "EXPLAIN (ANALYSE true, COSTS off) DELETE FROM t WHERE id = 2",
        "EXPLAIN ANALYSE INSERT INTO t VALUES (6, 6)",
        "SELECT * FROM lo_from_bytea(0, '\\x01'::bytea)",
        "SELECT * FROM pg_catalog.lo_put(1, 1, '\\x0203'::bytea)",
        "SELECT U&\"lo\\005Ffrom\\005Fbytea\"(0, '\\x02'::bytea)",
        "SELECT u&\"lo!005Fput\" UESCAPE '!' (1, 0, 'x')",
        "DECLARE c CURSOR FOR SELECT lo_from_bytea(0, '\\x03'::bytea)",
    ] {
        let c = classify_uncached(SqlDialect::Postgres, sql);
        assert_eq!(c.kind(), Kind::Write, "{sql}: {c:?}");
    }
    assert_eq!(kind("DECLARE c CURSOR FOR SELECT * FROM t"), Kind::Other);
}
