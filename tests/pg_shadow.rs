//! Shadow reads against two real PostgreSQL clusters in phase `mirror`: a
//! sample of reads also runs on `new`, off the client's path, and mismatches
//! land in the read-diff report.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn counts(s: &Setup, fingerprint: &str, field: &str) -> u64 {
    s.read_diff_summary()["fingerprints"][fingerprint][field]
        .as_u64()
        .unwrap_or(0)
}

fn records(s: &Setup) -> Vec<Value> {
    std::fs::read_to_string(s.read_diffs())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn turnout(args: &[&str]) -> std::process::Output {
    Command::new(turnout_bin())
        .args(args)
        .output()
        .expect("run turnout")
}

const SAMPLE_ALL: &str = "rate = 1.0\nper_fingerprint_per_sec = 0\nrecheck_delay_ms = 50\n\
                          [sampling.ignore_columns]\naccounts = [\"score\"]";
/// [`SAMPLE_ALL`] with row values in the records (`log_values`).
const SAMPLE_ALL_WITH_VALUES: &str =
    "rate = 1.0\nper_fingerprint_per_sec = 0\nrecheck_delay_ms = 50\n\
                          log_values = true\n\
                          [sampling.ignore_columns]\naccounts = [\"score\"]";

fn setup(sampling: &'static str) -> Setup {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        sampling,
        ..Options::default()
    });
    let out = s.psql(
        &s.app_url(),
        &[
            "-c",
            "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric(12,2), \
             opened timestamptz, score float8)",
            "-c",
            "INSERT INTO accounts VALUES \
             (1, 'ann', 10.50, '2026-01-02 03:04:05.5+00', 0.25), \
             (2, 'bob', 20.00, '2026-02-03 04:05:06+00', 1.5), \
             (3, 'cy', 30.25, NULL, NULL)",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    s
}

/// Headless Chromium on `page` with `args` (and a profile of its own
/// beside the page); its output, which must be a success.
fn chromium(page: &Path, profile: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .args(args)
        .arg(format!(
            "--user-data-dir={}",
            page.with_extension(profile).display()
        ))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium is needed for this test (apt-get install chromium; .ci/run installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Renders `page` in headless Chromium and returns the DOM after its script ran.
fn render_in_chromium(page: &Path) -> String {
    String::from_utf8_lossy(&chromium(page, "profile", &["--dump-dom"]).stdout).into_owned()
}

/// Takes a 1280 px wide screenshot of `page` beside it (`<page>.png`), for
/// people to look at; the test reads the DOM.
fn screenshot(page: &Path) {
    let png = page.with_extension("png");
    let shot = format!("--screenshot={}", png.display());
    chromium(
        page,
        "shot-profile",
        &["--hide-scrollbars", "--window-size=1280,1600", &shot],
    );
    assert!(png.exists(), "no screenshot at {}", png.display());
    println!("screenshot: {}", png.display());
}

#[test]
fn rows_missing_on_new_from_an_ordered_read_are_missing_by_key_with_keys_shown_and_values_hashed() {
    let s = setup(SAMPLE_ALL);
    let url = s.app_url();
    s.run_ok(&[
        "CREATE TABLE orders (id int PRIMARY KEY, amount_cents int NOT NULL)",
        "INSERT INTO orders SELECT i, (i * 137) % 10000 FROM generate_series(1, 60) i",
    ]);
    // The plant: three rows gone from new behind turnout's back.
    let out = psql(
        &s.direct_new_url(),
        &["-c", "DELETE FROM orders WHERE id IN (7, 20, 33)"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.psql(
        &url,
        &[
            "-c",
            "SELECT id, amount_cents FROM orders WHERE id <= 50 ORDER BY id",
            // No key in the result: matched by the ORDER BY key.
            "-c",
            "SELECT amount_cents, id + 0 AS n FROM orders WHERE id <= 50 ORDER BY 2",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let by_pk = "select id, amount_cents from orders where id <= ? order by id";
    let by_order = "select amount_cents, id + ? as n from orders where id <= ? order by ?";
    eventually("both reads are confirmed", || {
        counts(&s, by_pk, "mismatches") == 1 && counts(&s, by_order, "mismatches") == 1
    });
    let recs = records(&s);
    let r = recs.iter().find(|r| r["fingerprint"] == by_pk).unwrap();
    println!("record: {r}");
    assert_eq!(
        (
            r["missing_count"].as_u64(),
            r["extra_count"].as_u64(),
            r["differing_count"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["key_columns"], serde_json::json!(["id"]));
    assert_eq!(r["missing"][0][0], "7", "keys stay visible: {r}");
    let hashed = r["missing"][0][1].as_str().unwrap_or_default();
    assert!(hashed.starts_with('#') && hashed.len() == 9, "{r}");
    assert_ne!(hashed, "959", "{r}");
    let r = recs.iter().find(|r| r["fingerprint"] == by_order).unwrap();
    assert_eq!(
        (r["missing_count"].as_u64(), r["differing_count"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    assert_eq!(r["key_columns"], serde_json::json!(["n"]));

    // The HTML report shows the verdict and where the rows are.
    let page = s.dir.path().join("ordered.html");
    let out = turnout(&[
        "report",
        &s.read_diffs().display().to_string(),
        "--format",
        "html",
        "-o",
        &page.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dom = render_in_chromium(&page);
    assert!(dom.contains("Verdict: NO-GO"), "{dom}");
    assert!(dom.contains("id=7"), "{dom}");
    assert!(dom.contains("3 missing, 0 extra, 0 differing"), "{dom}");
    screenshot(&page);
}

#[test]
fn a_row_changed_on_new_is_reported_confirmed_with_the_column_named_in_every_format() {
    let s = setup(SAMPLE_ALL_WITH_VALUES);
    let url = s.app_url();
    // The plant: one row changed behind turnout's back; and noise in a
    // column the config says to ignore.
    let out = psql(
        &s.direct_new_url(),
        &[
            "-c",
            "UPDATE accounts SET balance = 999 WHERE id = 2",
            "-c",
            "UPDATE accounts SET score = 42 WHERE id = 1",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = s.psql(
        &url,
        &[
            "-c",
            "SELECT * FROM accounts WHERE id = 2",
            "-c",
            "SELECT * FROM accounts WHERE id = 1",
            "-c",
            "SELECT owner, balance FROM accounts ORDER BY id",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The client saw old's answer.
    assert!(stdout(&out).starts_with("2|bob|20.00|"), "{}", stdout(&out));

    // Binary results through the extended protocol compare by value.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for id in [1, 3] {
            let rows = client
                .query(
                    "SELECT id, owner, opened, score FROM accounts WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
        }
    });

    let by_id = "select * from accounts where id = ?";
    let ordered = "select owner, balance from accounts order by id";
    let binary = "select id, owner, opened, score from accounts where id = ?";
    eventually("the planted row is confirmed", || {
        counts(&s, by_id, "mismatches") == 1 && counts(&s, ordered, "mismatches") == 1
    });
    eventually("the binary reads are compared", || {
        counts(&s, binary, "samples") == 2
    });
    assert_eq!(
        counts(&s, binary, "matches"),
        2,
        "{}",
        s.read_diff_summary()
    );
    assert_eq!(counts(&s, by_id, "matches"), 1, "{}", s.read_diff_summary());

    let recs = records(&s);
    let planted = recs
        .iter()
        .find(|r| r["fingerprint"] == by_id)
        .expect("a record for the planted row");
    assert_eq!(planted["status"], "confirmed");
    assert_eq!(
        planted["differing"][0]["columns"],
        serde_json::json!(["balance"])
    );
    assert_eq!(planted["differing"][0]["target"][2], "20");
    assert_eq!(planted["differing"][0]["shadow"][2], "999");
    // Statements stay out of records unless configured.
    assert!(planted.get("statement").is_none(), "{planted}");
    println!("record: {planted}");

    // The terminal table, worst first.
    let file = s.read_diffs();
    let out = turnout(&["report", &file.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    // The verdict first: confirmed mismatches over the budget.
    assert!(table.starts_with("VERDICT: NO-GO"), "{table}");
    assert!(table.contains("confirmed mismatch rate"), "{table}");
    let worst = table
        .lines()
        .skip_while(|l| !l.starts_with("fingerprints"))
        .nth(2)
        .unwrap_or_default();
    assert!(
        worst.contains("balance") && worst.contains("from accounts"),
        "{table}"
    );
    // The obvious names of the terminal format are taken.
    for name in ["terminal", "text"] {
        let out = turnout(&["report", &file.display().to_string(), "--format", name]);
        assert!(out.status.success(), "{}", stderr(&out));
        // The same report, but for the moment it was made.
        let timeless = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with("Generated "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            timeless(&String::from_utf8_lossy(&out.stdout)),
            timeless(&table)
        );
    }

    let out = turnout(&["report", &file.display().to_string(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["fingerprints"][0]["mismatches"], 1);

    let page = s.dir.path().join("report.html");
    let out = turnout(&[
        "report",
        &file.display().to_string(),
        "--format",
        "html",
        "-o",
        &page.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dom = render_in_chromium(&page);
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "the page's script did not run"
    );
    assert!(dom.contains("select * from accounts where id = ?"), "{dom}");
    assert!(dom.contains("<td class=\"cols\">balance</td>"), "{dom}");
    assert!(dom.contains("999"), "{dom}");
    assert!(dom.contains("data-verdict=\"no-go\""), "{dom}");
    assert!(dom.contains("<svg id=\"timeline\""), "{dom}");

    // Bad input to the report command is a clear error.
    let out = turnout(&["report", "/nonexistent/diffs.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/diffs.jsonl"),
        "{}",
        stderr(&out)
    );
    let out = turnout(&["report", &file.display().to_string(), "--format", "pdf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--format"), "{}", stderr(&out));
}

#[test]
fn concurrent_writes_on_the_sampled_rows_give_no_confirmed_mismatch() {
    let s = setup(
        "rate = 1.0\nper_fingerprint_per_sec = 0\nrecheck_delay_ms = 100\nmax_concurrent = 64",
    );
    let script = s.dir.path().join("rw.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 3)\n\
         UPDATE accounts SET balance = balance + 1 WHERE id = :id;\n\
         SELECT id, balance FROM accounts WHERE id = :id;\n\
         SELECT sum(balance) FROM accounts;\n",
    )
    .unwrap();
    let out = Command::new("pgbench")
        .args(["-n", "-c", "4", "-j", "2", "-t", "200", "-f"])
        .arg(&script)
        .arg(s.app_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = "select id, balance from accounts where id = ?";
    let sum = "select sum(balance) from accounts";
    eventually("samples were compared", || {
        counts(&s, one, "samples") >= 10 && counts(&s, sum, "samples") >= 10
    });
    // Let re-checks in flight finish.
    std::thread::sleep(Duration::from_secs(2));
    let sm = s.read_diff_summary();
    println!("{sm:#}");
    for fp in [one, sum] {
        assert_eq!(counts(&s, fp, "mismatches"), 0, "{sm}");
    }
}

#[test]
fn a_stalled_or_stopped_shadow_does_not_slow_reads_and_skips_are_counted() {
    let mut s = setup("rate = 1.0\nper_fingerprint_per_sec = 0\nmax_concurrent = 2");
    let url = s.app_url();
    // Stall new: a session of its own holds the table locked.
    let mut locker = hold_lock(&s.direct_new_url(), "accounts", 4);
    let mut args = Vec::new();
    for id in 0..40 {
        args.push("-c".to_string());
        args.push(format!(
            "SELECT owner FROM accounts WHERE id = {}",
            id % 3 + 1
        ));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s.psql(&url, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 40);
    assert!(
        locker.try_wait().unwrap().is_none(),
        "new's lock ended before the reads finished: they waited on it"
    );
    eventually("busy skips are counted", || {
        s.read_diff_summary()["skipped"]["shadow_busy"]
            .as_u64()
            .unwrap_or(0)
            >= 30
    });
    locker.wait().unwrap();

    // Stopped: reads go on; the samples that cannot run are counted.
    s.new.as_mut().unwrap().kill().unwrap();
    let out = s.psql(&url, &args[..20]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("unavailable skips are counted", || {
        s.read_diff_summary()["skipped"]["shadow_unavailable"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    println!("{:#}", s.read_diff_summary());
    assert!(records(&s).iter().all(|r| r["status"] != "confirmed"));
}

#[test]
fn shadow_reads_run_with_the_sessions_settings() {
    let s = setup(SAMPLE_ALL);
    let url = s.app_url();
    // Two tables named `items`, with different rows, identical on both sides.
    let out = s.psql(
        &url,
        &[
            "-c",
            "CREATE SCHEMA shop",
            "-c",
            "CREATE TABLE shop.items (id int PRIMARY KEY, v text)",
            "-c",
            "CREATE TABLE public.items (id int PRIMARY KEY, v text)",
            "-c",
            "INSERT INTO shop.items VALUES (1, 'in shop')",
            "-c",
            "INSERT INTO public.items VALUES (1, 'in public')",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The session reads through its search_path; the shadow must too.
    let out = s.psql(
        &url,
        &[
            "-c",
            "SET search_path = shop",
            "-c",
            "SELECT * FROM items",
            "-c",
            "RESET search_path",
            "-c",
            "SELECT v FROM items WHERE id = 1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1|in shop\nin public");
    eventually("both reads compared", || {
        counts(&s, "select * from items", "samples") == 1
            && counts(&s, "select v from items where id = ?", "samples") == 1
    });
    assert_eq!(
        counts(&s, "select * from items", "matches"),
        1,
        "{}",
        s.read_diff_summary()
    );
    assert_eq!(
        counts(&s, "select v from items where id = ?", "matches"),
        1,
        "{}",
        s.read_diff_summary()
    );
}

#[test]
fn after_the_reads_flip_old_is_the_shadow() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        sampling: SAMPLE_ALL,
        admin: true,
        ..Options::default()
    });
    let url = s.app_url();
    s.run_ok(&[
        "CREATE TABLE marker (id int PRIMARY KEY, v text)",
        "INSERT INTO marker VALUES (1, 'same'), (2, 'same')",
    ]);
    run_direct_ok(
        &s.direct_url(),
        &["UPDATE marker SET v = 'only old' WHERE id = 2"],
    );
    let out = s.ctl(&["flip", "reads"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.psql(&url, &["-c", "SELECT v FROM marker WHERE id = 2"]);
    assert_eq!(stdout(&out), "same", "reads come from new now");
    let fp = "select v from marker where id = ?";
    eventually("the read is compared with old", || {
        counts(&s, fp, "mismatches") == 1
    });
    let r = records(&s)
        .into_iter()
        .find(|r| r["fingerprint"] == fp)
        .unwrap();
    assert_eq!(
        (r["target"].as_str(), r["shadow"].as_str()),
        (Some("new"), Some("old"))
    );
    // Row values stay out of records unless configured (log_values): each
    // is a short keyed hash, so equal and unequal stay visible.
    let (shadow, target) = (
        r["differing"][0]["shadow"][0].as_str().unwrap_or_default(),
        r["differing"][0]["target"][0].as_str().unwrap_or_default(),
    );
    assert!(shadow.starts_with('#') && shadow.len() == 9, "{r}");
    assert!(target.starts_with('#') && target != shadow, "{r}");
    assert!(!r.to_string().contains("only old"), "{r}");
    assert_eq!(r["differing"][0]["columns"], serde_json::json!(["v"]));
}
