use crate::*;

const GOOD: &str = r#"
[listen]
address = "127.0.0.1:6432"

[backends.old]
host = "127.0.0.1"
port = 5432
database = "app"
user = "app"
password = "secret"

[backends.new]
host = "127.0.0.1"
port = 5433
database = "app"
user = "app"
password = "secret"

[[users]]
name = "app"
password = "apppw"
"#;

#[test]
fn good_config_parses_with_defaults() {
    let c = parse(GOOD, "t.toml").expect("valid");
    assert_eq!(c.protocol, Protocol::Postgres);
    assert_eq!(c.backends.new.port_u16(), 5433);
    assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
    assert_eq!(c.mirror.on_error, MirrorErrorPolicy::Record);
    assert_eq!(c.limits.max_message_bytes(), 64 * 1024 * 1024);
}

#[test]
fn out_of_range_port_names_the_key() {
    let text = GOOD.replace("port = 5433", "port = 70000");
    let err = parse(&text, "t.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.toml: backends.new.port: expected 1-65535, got 70000"
    );
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    let text = GOOD.replace("port = 5433", "port = 5433\nprot = 1");
    let err = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("backends.new"), "{err}");
    assert!(err.contains("unknown field `prot`"), "{err}");
}

#[test]
fn every_unknown_key_is_reported_with_the_other_problems() {
    let text = GOOD
        .replace("port = 5433", "port = 70000\nprot = 1")
        .replace("[[users]]", "bogus = true\n[[users]]\nnmae = \"x\"");
    let err = parse(&text, "t.toml").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("unknown field `prot`"), "{text}");
    assert!(text.contains("unknown field `bogus`"), "{text}");
    assert!(text.contains("unknown field `nmae`"), "{text}");
    assert!(
        text.contains("backends.new.port: expected 1-65535"),
        "{text}"
    );
    assert!(text.contains("(line "), "{text}");
}

#[test]
fn wrong_type_is_rejected_with_its_path() {
    let text = GOOD.replace("port = 5433", "port = \"x\"");
    let err = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("backends.new.port"), "{err}");
}

#[test]
fn every_problem_is_listed() {
    let text = GOOD
        .replace("port = 5433", "port = 0")
        .replace("address = \"127.0.0.1:6432\"", "address = \"nowhere\"")
        + "\n[sampling]\nrate = 2.0\n";
    let err = parse(&text, "t.toml").unwrap_err();
    let keys: Vec<_> = err.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["listen.address", "backends.new.port", "sampling.rate"]
    );
}

#[test]
fn passwords_never_show_in_debug_output() {
    let c = parse(GOOD, "t.toml").unwrap();
    let dump = format!("{c:?}");
    assert!(!dump.contains("secret"), "{dump}");
    assert!(!dump.contains("apppw"), "{dump}");
}

#[test]
fn verify_full_needs_a_ca() {
    let text = GOOD.replace("port = 5433", "port = 5433\ntls = \"verify-full\"");
    let err = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("backends.new.ca"), "{err}");
}

#[test]
fn garbage_is_a_clear_error() {
    let err = parse("[[[ nonsense", "t.toml").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/turnout.toml");
    let c = load(std::path::Path::new(path)).expect("example config is valid");
    assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
    // Every section is shown, and the text is not stale.
    let text = std::fs::read_to_string(path).unwrap();
    for section in [
        "[listen]",
        "[listen.tls]",
        "[backends.old]",
        "[backends.new]",
        "[[users]]",
        "[mirror]",
        "[[mirror.rules]]",
        "[sampling]",
        "[sampling.ignore_columns]",
        "[admin]",
        "[metrics]",
        "[state]",
        "[guards]",
        "[backfill]",
        "[[mapping.tables]]",
        "[mapping.tables.columns]",
        "[mapping.tables.computed]",
        "[limits]",
        "[log]",
    ] {
        assert!(text.contains(section), "{section} missing from the example");
    }
    assert!(!text.contains("pass-through so far"), "stale text");
}

#[test]
fn mirror_rules_and_policies_parse_and_are_checked() {
    let text = format!(
        "{GOOD}\n[mirror]\nmode = \"async\"\non_unsafe = \"fail\"\n\n\
         [[mirror.rules]]\nfingerprint = \"select bump(?)\"\naction = \"always_mirror\"\n\n\
         [[mirror.rules]]\nfingerprint = \"SELECT * FROM v2_only\"\naction = \"new\"\n"
    );
    let c = parse(&text, "t.toml").expect("valid");
    assert_eq!(c.mirror.mode, MirrorMode::Async);
    assert_eq!(c.mirror.on_unsafe, UnsafePolicy::Fail);
    assert_eq!(c.mirror.rules.len(), 2);
    assert_eq!(c.mirror.rules[1].action, RuleAction::New);

    let bad_action = text.replace("\"always_mirror\"", "\"sometimes\"");
    let err = parse(&bad_action, "t.toml").unwrap_err().to_string();
    assert!(err.contains("mirror.rules[0].action"), "{err}");

    let duplicate = text.replace("SELECT * FROM v2_only", "SELECT bump(?)");
    let err = parse(&duplicate, "t.toml").unwrap_err().to_string();
    assert!(err.contains("mirror.rules[1].fingerprint"), "{err}");

    let fail_async = text.replace("on_unsafe = \"fail\"", "on_error = \"fail\"");
    let err = parse(&fail_async, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("mirror.on_error") && err.contains("mirror.mode"),
        "{err}"
    );
}

#[test]
fn auth_methods_must_suit_the_protocol() {
    let mysql = format!("protocol = \"mysql\"\n{GOOD}");
    assert!(parse(&mysql, "t.toml").is_ok());
    let text = format!("{mysql}auth = \"md5\"\n");
    let err = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("users[0].auth") && err.contains("PostgreSQL method"),
        "{err}"
    );
    let text = format!("{GOOD}auth = \"caching_sha2_password\"\n");
    let err = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("users[0].auth") && err.contains("are for protocol"),
        "{err}"
    );
    let text = mysql.replace("\"apppw\"", &format!("\"*{}\"", "A".repeat(40)))
        + "auth = \"caching_sha2_password\"\n";
    let err = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("needs the plain password"), "{err}");
}

#[test]
fn any_text_is_a_config_or_a_clear_error() {
    // A fixed pseudo-random walk over config-shaped text: parse never panics.
    let pieces = [
        "[listen]\n",
        "address = \"127.0.0.1:1\"\n",
        "[backends.old]\n",
        "[backends.new]\n",
        "host = \"h\"\n",
        "port = 70000\n",
        "port = \"x\"\n",
        "[[users]]\n",
        "name = \"\"\n",
        "password = \"p\"\n",
        "[[mapping.tables]]\n",
        "old = \"t\"\n",
        "drop = [\"a\"]\n",
        "[mapping.tables.columns]\n",
        "a = \"b\"\n",
        "protocol = \"mysql\"\n",
        "rate = 2.0\n",
        "[sampling]\n",
        "]\n",
        "= =\n",
        "\u{0}\n",
        "[guards]\n",
        "barrier_ms = 0\n",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..2000 {
        let mut text = String::new();
        let n = (state % 12) as usize;
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(pieces[(state % pieces.len() as u64) as usize]);
        }
        let _ = parse(&text, "fuzz.toml");
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
}

#[test]
fn backfill_settings_default_and_are_checked() {
    let c = parse(GOOD, "t.toml").expect("valid");
    assert_eq!(c.backfill.batch_size, 1000);
    assert!(c.backfill.required);
    let text = format!("{GOOD}\n[backfill]\nbatch_size = 0\nmax_latency_factor = 0.5\n");
    let err = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("backfill.batch_size: expected 1-1000000, got 0"),
        "{err}"
    );
    assert!(
        err.contains("backfill.max_latency_factor: must be 1.0 or more"),
        "{err}"
    );
}

#[test]
fn fleet_stores_parse_and_bad_ones_name_the_key() {
    let with = |fleet: &str| parse(&format!("{GOOD}\n[fleet]\n{fleet}\n"), "t.toml");
    let c = with("").expect("a fleet on old's server");
    let f = c.fleet.as_ref().unwrap();
    assert_eq!(f.lease_ms, 3000);
    match f.store_of(c.protocol, &c.backends).unwrap() {
        FleetStore::Sql { protocol, login } => {
            assert_eq!(protocol, Protocol::Postgres);
            assert_eq!((login.host.as_str(), login.port), ("127.0.0.1", 5432));
        }
        other => panic!("{other:?}"),
    }
    let c =
        with("store = \"etcd://10.0.0.1:2379,10.0.0.2:2379/cutover\"\ninstance = \"a\"").unwrap();
    let f = c.fleet.as_ref().unwrap();
    match f.store_of(c.protocol, &c.backends).unwrap() {
        FleetStore::Etcd { endpoints, prefix } => {
            assert_eq!(endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
            assert_eq!(prefix, "cutover");
        }
        other => panic!("{other:?}"),
    }
    let c = with("store = \"mysql://fleet:pw@db:3307/ops\"").unwrap();
    let f = c.fleet.as_ref().unwrap();
    match f.store_of(c.protocol, &c.backends).unwrap() {
        FleetStore::Sql { protocol, login } => {
            assert_eq!(protocol, Protocol::Mysql);
            assert_eq!(
                (
                    login.host.as_str(),
                    login.port,
                    login.user.as_str(),
                    login.database.as_str()
                ),
                ("db", 3307, "fleet", "ops")
            );
            assert_eq!(login.password.expose(), "pw");
        }
        other => panic!("{other:?}"),
    }
    for (bad, says) in [
        ("store = \"zookeeper://x:1/p\"", "unknown store"),
        ("store = \"etcd://:2379/p\"", "host:port"),
        ("store = \"etcd://h:2379/\"", "key prefix"),
        ("store = \"postgres://h:99999/db\"", "host:port"),
        ("lease_ms = 10", "fleet.lease_ms"),
        ("instance = \"a/b\"", "fleet.instance"),
        ("stor = \"x\"", "stor"),
    ] {
        let err = with(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
    let text = format!("{GOOD}\n[mirror]\nsource = \"log\"\n\n[fleet]\n");
    parse(&text, "t.toml").expect("PostgreSQL's log with a fleet");
    let text = format!("protocol = \"mysql\"\n{GOOD}\n[mirror]\nsource = \"log\"\n\n[fleet]\n");
    let err = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("mirror.source") && err.contains("[fleet]"),
        "{err}"
    );
}
