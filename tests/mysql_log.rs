//! MySQL/MariaDB with the mirror fed from old's row-based binary log
//! (`mirror.source = "log"`): what old committed, by any statement,
//! trigger, function, character set or client, reaches new exactly, and
//! clients get the answers they get directly.

mod common;

use common::mysql::{MySetup, MY_PASSWORD};
use std::process::Command;

fn logged() -> MySetup {
    MySetup::start_mirror("mirror", "source = \"log\"", "")
}

/// The same schema on both sides, made directly (new first).
fn schema(s: &MySetup, sql: &str) {
    s.new_sql(sql);
    s.old.sql("app", sql).expect("schema on old");
}

const SCHEMA: &str = "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), n BIGINT, ts DATETIME(6), who VARCHAR(64)); \
    CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT, token CHAR(36)); \
    CREATE TRIGGER t_who BEFORE INSERT ON t FOR EACH ROW SET NEW.who = IFNULL(NEW.who, CONCAT('', UUID())); \
    CREATE TRIGGER t_audit AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (t_id, token) VALUES (NEW.id, UUID())";

/// Runs Python with PyMySQL through turnout: `code` gets a connection `c`
/// (autocommit, multi-statement texts allowed) in character set `charset`.
fn pymysql(s: &MySetup, charset: &str, code: &str) -> String {
    let script = format!(
        "import pymysql, pymysql.constants.CLIENT as C\n\
         c = pymysql.connect(host='127.0.0.1', port={}, user='app', password='{MY_PASSWORD}', database='app', charset='{charset}', autocommit=True, client_flag=C.MULTI_STATEMENTS)\n\
         cur = c.cursor()\n{code}\n",
        s.proxy.port
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn every_case_the_statements_could_not_carry_is_identical_from_the_log() {
    every_case(logged());
}

/// The same with old and new two databases (`app`, `app_v2`) of one
/// server: the log's table maps name new's database, and `DATABASE()` is
/// old's value on both.
#[test]
fn every_case_is_identical_from_the_log_with_two_databases_of_one_server() {
    common::from_the_log(|| every_case(MySetup::start_one_server("mirror", "")));
}

fn every_case(s: MySetup) {
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("source      the log of old"), "{status}");
    schema(&s, SCHEMA);
    // A schema change through turnout reaches new through the log.
    pymysql(
        &s,
        "utf8mb4",
        "cur.execute(\"CREATE FUNCTION bump() RETURNS INT MODIFIES SQL DATA BEGIN INSERT INTO t (v) VALUES ('from a function'); RETURN 1; END\")",
    );
    // User variables holding volatile values; server functions whose value
    // differs between the servers; triggers drawing UUIDs.
    s.sql_ok(
        "SET @x = UUID(); INSERT INTO t (v) VALUES (@x); \
         SELECT @y := UUID(); INSERT INTO t (v) VALUES (@y); \
         SET @r = RAND(); INSERT INTO t (v, n) VALUES ('rand', @r * 1000000000); \
         INSERT INTO t (v, n) VALUES (CONNECTION_ID(), @@port); \
         INSERT INTO t (v, n) VALUES (@@hostname, @@server_id); \
         INSERT INTO t (v) VALUES (DATABASE())",
    );
    // AUTO_INCREMENT after a statement that failed on old (it consumed
    // ids there), and ids of a multi-statement text and of the trigger.
    let out = s.mariadb(
        "app",
        MY_PASSWORD,
        "INSERT INTO t (id, v) VALUES (1000, 'x'); INSERT INTO t (id, v) VALUES (1000, 'dup'); INSERT INTO t (v) VALUES ('after a failure')",
        &["--force"],
    );
    assert!(!out.status.success(), "the duplicate fails as directly");
    pymysql(
        &s,
        "utf8mb4",
        "cur.execute(\"INSERT INTO t (v) VALUES ('m1'); INSERT INTO t (v) VALUES ('m2')\")\n\
         while cur.nextset(): pass",
    );
    // SQL-level PREPARE of volatile text.
    s.sql_ok(
        "PREPARE s FROM 'INSERT INTO t (v, ts) VALUES (''prepared'', SYSDATE(6))'; EXECUTE s; EXECUTE s",
    );
    // gbk: 0xBF 0x5C is one character whose second byte is a backslash.
    pymysql(
        &s,
        "gbk",
        "cur.execute(b\"SELECT '\\xbf\\x5c'; INSERT INTO t (v) VALUES ('after gbk')\".decode('gbk'))\n\
         while cur.nextset(): pass",
    );
    // A stored function that writes, called from a SELECT.
    assert_eq!(s.sql_ok("SELECT bump()"), "1");
    // ROW_COUNT() after an autocommit write, as directly; the client's own
    // SET timestamp.
    assert_eq!(
        s.sql_ok("UPDATE t SET n = 7 WHERE v IN ('m1', 'm2'); SELECT ROW_COUNT()"),
        "2"
    );
    s.sql_ok("UPDATE t SET n = 8 WHERE v LIKE 'm%'; INSERT INTO t (v, n) VALUES ('row count', ROW_COUNT())");
    assert_eq!(
        s.sql_ok(
            "SET timestamp = 1700000000; INSERT INTO t (v, ts) VALUES ('client time', NOW(6)); SELECT UNIX_TIMESTAMP(ts) FROM t WHERE v = 'client time'"
        ),
        "1700000000.000000"
    );
    for (table, order) in [("t", "id"), ("audit", "id")] {
        s.assert_identical(table, order);
    }
    assert_eq!(
        s.old
            .sql("app", "SELECT n FROM t WHERE v = 'row count'")
            .unwrap(),
        "2"
    );
    // new's triggers did not fire again: one audit row per row of t.
    assert_eq!(
        s.new_sql("SELECT COUNT(*) = (SELECT COUNT(*) FROM t) FROM audit"),
        "1"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// A batch job writing to old directly: its rows reach new and are counted
/// as writes that bypass turnout, by table.
#[test]
fn writes_that_bypass_turnout_reach_new_and_are_counted() {
    let s = logged();
    schema(
        &s,
        "CREATE TABLE batch (id INT PRIMARY KEY, v INT); CREATE TABLE mine (id INT PRIMARY KEY)",
    );
    s.sql_ok("INSERT INTO mine VALUES (1); INSERT INTO mine VALUES (2); UPDATE mine SET id = 3 WHERE id = 2");
    s.old
        .sql(
            "app",
            "INSERT INTO batch SELECT seq, seq * 2 FROM seq_1_to_500; \
             UPDATE batch SET v = v + 1 WHERE id % 7 = 0; DELETE FROM batch WHERE id > 490",
        )
        .unwrap();
    let q = "SELECT * FROM batch ORDER BY id";
    common::eventually("the batch job's rows are on new", || {
        s.old.sql("app", q).unwrap() == s.new_sql(q)
    });
    s.assert_identical("mine", "id");
    let v: serde_json::Value = serde_json::from_str(&s.ctl_ok(&["--json", "status"])).unwrap();
    let log = &v["mirror_source"];
    assert_eq!(log["source"], "log", "{v}");
    assert_eq!(log["foreign_transactions"], 3, "{v}");
    assert_eq!(
        log["foreign_tables"],
        serde_json::json!([{"table": "app.batch", "transactions": 3}]),
        "{v}"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// turnout killed while new held the applier up, then restarted while new
/// was down: every commit of old is on new once both run again, applied
/// once (the position is kept on new with the rows).
#[test]
fn commits_not_applied_when_turnout_dies_are_applied_after_restart() {
    let mut s = logged();
    schema(&s, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    s.sql_ok("INSERT INTO t VALUES (1, 1)");
    s.assert_identical("t", "id");
    // new's table held: the applier waits on it with the next changes.
    let new_port = if s.one_server { s.old.port } else { s.new.port };
    let mut lock = Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &new_port.to_string()])
        .args(["-u", "root", "--password=root-pw", "-D", "app"])
        .args(["-e", "LOCK TABLES t READ; SELECT SLEEP(4)"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::eventually("new's table is held", || {
        s.new_sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'",
        ) == "1"
    });
    s.old
        .sql(
            "app",
            "INSERT INTO t VALUES (2, 2); UPDATE t SET v = 10 WHERE id = 1",
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(s.new_sql("SELECT COUNT(*) FROM t"), "1");
    // What the applier has not applied shows as bytes behind.
    common::eventually("the status shows the applier behind", || {
        let v: serde_json::Value = serde_json::from_str(&s.ctl_ok(&["--json", "status"])).unwrap();
        v["mirror_source"]["lag_bytes"].as_u64().unwrap_or(0) > 0
    });
    s.proxy.kill();
    let _ = lock.wait();
    // Now with new down: old commits, nothing can be applied, turnout dies.
    s.new.kill().unwrap();
    s.restart_proxy("turnout-2.log");
    s.old
        .sql(
            "app",
            "INSERT INTO t VALUES (3, 3); DELETE FROM t WHERE id = 2",
        )
        .unwrap();
    s.sql_ok("INSERT INTO t VALUES (4, 4)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.proxy.kill();
    s.new.restart().unwrap();
    s.restart_proxy("turnout-3.log");
    let q = "SELECT * FROM t ORDER BY id";
    common::eventually("every commit of old is on new", || {
        s.old.sql("app", q).unwrap() == s.new_sql(q)
    });
    s.sql_ok("INSERT INTO t VALUES (5, 5)");
    s.assert_identical("t", "id");
    assert_eq!(s.new_sql(q), "1\t10\n3\t3\n4\t4\n5\t5");
}

/// The writes flip waits until the applier reached old's last GTID, then
/// new's binary log feeds old: what turnout applied to new is never applied
/// back (its own GTID domain), and a rollback turns it around again.
#[test]
fn the_log_turns_around_at_the_writes_flip_and_back_at_the_rollback() {
    let s = logged();
    schema(&s, "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40), at DATETIME(6) DEFAULT NOW(6))");
    s.sql_ok("INSERT INTO t (v) VALUES ('old is the authority'), (UUID())");
    s.ctl_ok(&["flip", "reads", "--force"]);
    let flipped = s.ctl_ok(&["flip", "writes", "--force"]);
    assert!(
        flipped.contains("every commit of old applied to new")
            && flipped.contains("new's binary log feeds old"),
        "{flipped}"
    );
    s.sql_ok("INSERT INTO t (v) VALUES ('new is the authority'), (UUID()); UPDATE t SET v = 'changed on new' WHERE id = 1");
    // A writer on new directly reaches old too.
    s.new_sql("INSERT INTO t (v) VALUES ('beside turnout, on new')");
    let q = "SELECT * FROM t ORDER BY id";
    common::eventually("new's commits are on old", || {
        s.old.sql("app", q).unwrap() == s.new_sql(q)
    });
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("source      the log of new"), "{status}");
    let back = s.ctl_ok(&["rollback"]);
    assert!(back.contains("old's binary log feeds new"), "{back}");
    s.sql_ok("INSERT INTO t (v) VALUES ('old again')");
    s.assert_identical("t", "id");
    // Six rows, each once: nothing came back around.
    assert_eq!(s.new_sql("SELECT COUNT(*) FROM t"), "6");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// `check-config --connect` names the source and why: a server without a
/// binary log gets statements with the reason; `source = "log"` there is an
/// error naming what is missing.
#[test]
fn check_config_names_the_source_and_why_the_log_cannot_be_used() {
    let check = |config: &std::path::Path| {
        Command::new(common::turnout_bin())
            .args(["check-config", "--connect"])
            .arg(config)
            .output()
            .unwrap()
    };
    let s = logged();
    let out = check(&s.dir.path().join("turnout.toml"));
    let text = common::stdout(&out);
    assert!(out.status.success(), "{text}{}", common::stderr(&out));
    assert!(
        text.contains("mirror source: the binary log of old (row events replayed), applied to new in commit order"),
        "{text}"
    );
    let plain = MySetup::start("mirror", "");
    let config = plain.dir.path().join("turnout.toml");
    let out = check(&config);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stdout(&out).contains(
            "mirror source: statements (pinned), because old keeps no binary log (log_bin = OFF)"
        ),
        "{}",
        common::stdout(&out)
    );
    let strict = plain.dir.path().join("strict.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &strict,
        text.replace("[mirror]\n", "[mirror]\nsource = \"log\"\n"),
    )
    .unwrap();
    let out = check(&strict);
    assert_eq!(out.status.code(), Some(2), "{}", common::stdout(&out));
    assert!(
        common::stderr(&out).contains("mirror.source = \"log\": old keeps no binary log"),
        "{}",
        common::stderr(&out)
    );
}

/// Without a binary log (statements mirror each write): each case the log
/// carries exactly is the same on both sides or recorded, and the client
/// gets the answers it gets directly.
#[test]
fn with_statements_each_case_is_identical_or_recorded() {
    let s = MySetup::start_mirror("mirror", "source = \"statements\"", "");
    schema(&s, SCHEMA);
    schema(
        &s,
        "CREATE TABLE plain (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), n BIGINT, ts DATETIME(6))",
    );
    let function = "CREATE FUNCTION bump() RETURNS INT MODIFIES SQL DATA BEGIN INSERT INTO audit (t_id) VALUES (-1); RETURN 1; END";
    s.new_sql(&format!("DELIMITER //\n{function}//"));
    s.old
        .sql("app", &format!("DELIMITER //\n{function}//"))
        .unwrap();
    let recorded = |needle: &str| {
        s.divergences()
            .iter()
            .any(|r| r.contains("unsafe_statement") && r.contains(needle))
    };
    // Identical: the client's own timestamp, ROW_COUNT() as directly,
    // a gbk text whose string ends in a backslash byte.
    assert_eq!(
        s.sql_ok(
            "SET timestamp = 1700000000; INSERT INTO plain (v, ts) VALUES ('client time', NOW(6)); SELECT UNIX_TIMESTAMP(ts) FROM plain WHERE v = 'client time'"
        ),
        "1700000000.000000"
    );
    assert_eq!(
        s.sql_ok("UPDATE plain SET n = 7 WHERE v = 'client time'; SELECT ROW_COUNT()"),
        "1"
    );
    s.sql_ok("UPDATE plain SET n = 8 WHERE v = 'client time'; INSERT INTO plain (v, n) VALUES ('row count', ROW_COUNT())");
    pymysql(
        &s,
        "gbk",
        "cur.execute(b\"SELECT '\\xbf\\x5c'; INSERT INTO plain (v) VALUES ('after gbk')\".decode('gbk'))\n\
         while cur.nextset(): pass",
    );
    let q = "SELECT * FROM plain ORDER BY id";
    assert_eq!(s.old.sql("app", q).unwrap(), s.new_sql(q));
    assert_eq!(
        s.old
            .sql("app", "SELECT n FROM plain WHERE v = 'row count'")
            .unwrap(),
        "1"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    // Recorded: user variables holding drawn values, each server's own
    // values, a trigger drawing UUID(), a function that writes from a
    // SELECT.
    s.sql_ok("SET @x = UUID(); INSERT INTO plain (v) VALUES (@x)");
    assert!(recorded("uses @x"), "{:?}", s.divergences());
    s.sql_ok("INSERT INTO plain (v, n) VALUES (CONNECTION_ID(), @@port)");
    assert!(recorded("CONNECTION_ID()"), "{:?}", s.divergences());
    s.sql_ok("INSERT INTO t (v) VALUES ('trigger draws')");
    assert!(
        recorded("has a trigger that draws"),
        "{:?}",
        s.divergences()
    );
    assert_eq!(s.sql_ok("SELECT bump()"), "1");
    assert!(recorded("calls bump()"), "{:?}", s.divergences());
    pymysql(
        &s,
        "utf8mb4",
        "cur.execute(\"INSERT INTO plain (v) VALUES ('m1'); INSERT INTO plain (v) VALUES ('m2')\")\n\
         while cur.nextset(): pass",
    );
    assert!(recorded("inserts after its first"), "{:?}", s.divergences());
}

/// DDL through turnout reaches new at its place in the log (`mirror.ddl =
/// "both"`); a table new does not have stops the applier with one record,
/// nothing after it applied and nothing lost, until new has it.
#[test]
fn ddl_travels_in_the_log_and_a_table_new_lacks_holds_the_applier() {
    let s = logged();
    schema(&s, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    s.sql_ok("INSERT INTO t VALUES (1, 1); ALTER TABLE t ADD COLUMN w VARCHAR(10) DEFAULT 'x'; INSERT INTO t VALUES (2, 2, 'two')");
    s.assert_identical("t", "id");
    // A table made on old alone (outside turnout), then written through it.
    s.old
        .sql("app", "CREATE TABLE only_old (id INT PRIMARY KEY)")
        .unwrap();
    s.sql_ok("INSERT INTO only_old VALUES (1)");
    s.sql_ok("INSERT INTO t VALUES (3, 3, 'three')");
    common::eventually("the applier stopped with a record", || {
        s.divergences()
            .iter()
            .any(|r| r.contains("the log applier stopped") && r.contains("only_old"))
    });
    assert_eq!(
        s.new_sql("SELECT COUNT(*) FROM t"),
        "2",
        "nothing after it applied"
    );
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("stopped"), "{status}");
    s.new_sql("CREATE TABLE only_old (id INT PRIMARY KEY)");
    let q = "SELECT * FROM t ORDER BY id";
    common::eventually("the applier goes on once new has the table", || {
        s.old.sql("app", q).unwrap() == s.new_sql(q)
    });
    s.assert_identical("only_old", "id");
    let stops = s
        .divergences()
        .iter()
        .filter(|r| r.contains("the log applier stopped"))
        .count();
    assert_eq!(stops, 1, "{:?}", s.divergences());
}
