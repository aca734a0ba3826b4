//! The mapping's translations, both ways, on both dialects.

use super::*;
use turnout_config::TableMapping;

fn users_to_accounts(dialect: SqlDialect) -> SchemaMap {
    let mapping = Mapping {
        after_finalize: Default::default(),
        tables: vec![TableMapping {
            old: "users".into(),
            new: Some("accounts".into()),
            columns: [("name", "full_name"), ("email", "email_address")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            drop: vec!["legacy".into()],
            computed: [("email_domain".to_string(), "lower(email)".to_string())]
                .into_iter()
                .collect(),
        }],
    };
    SchemaMap::new(&mapping, dialect).unwrap()
}

fn sql(t: Translation) -> String {
    match t {
        Translation::Sql(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn returning_keeps_old_names_and_the_other_direction_is_named() {
    let m = users_to_accounts(SqlDialect::Postgres);
    assert_eq!(
        sql(m
            .translate("UPDATE users SET email = 'x' WHERE id = 1 RETURNING id, name")
            .unwrap()),
        "UPDATE accounts SET email_address = 'x', email_domain = lower(('x')) WHERE id = 1 RETURNING id, full_name AS name"
    );
    // Toward old nothing is translated: clients write for old.
    assert_eq!(
        m.toward(Side::Old)
            .translate("UPDATE users SET name = 'x'")
            .unwrap(),
        Translation::Unchanged
    );
    assert!(m
        .translate("COPY users FROM STDIN")
        .unwrap_err()
        .contains("COPY on the mapped table users"));
    assert_eq!(m.counterpart("USERS", Side::Old), "accounts");
    assert_eq!(m.counterpart("accounts", Side::New), "users");
    assert_eq!(m.counterpart("orders", Side::New), "orders");
    let (table, back) = m.table_on_new("public.users").unwrap();
    assert_eq!(table, "public.accounts");
    assert_eq!(back.old_name("full_name").as_deref(), Some("name"));
    assert_eq!(back.old_name("email_domain"), None);
    // Until old's catalog is known, a column of new's own name is
    // taken to be old's too; once known, only old's columns are.
    assert_eq!(back.old_name("created_at").as_deref(), Some("created_at"));
    let known: catalog::OldColumns = [(
        "users".to_string(),
        ["id", "name", "email", "legacy"]
            .into_iter()
            .map(String::from)
            .collect(),
    )]
    .into_iter()
    .collect();
    let m = m.with_old_columns(known);
    let (_, back) = m.table_on_new("users").unwrap();
    assert_eq!(back.old_name("created_at"), None);
    assert_eq!(back.old_name("id").as_deref(), Some("id"));
}

#[test]
fn writes_are_rewritten_for_the_new_schema() {
    let m = users_to_accounts(SqlDialect::Postgres);
    assert_eq!(
        sql(m.translate("INSERT INTO users (id, name, email, legacy) VALUES (1, 'Ann', 'A@X', 7), (2, 'Bo', 'b@y', 8)").unwrap()),
        "INSERT INTO accounts (id, full_name, email_address, email_domain) VALUES (1, 'Ann', 'A@X', lower(('A@X'))), (2, 'Bo', 'b@y', lower(('b@y')))"
    );
    let m = users_to_accounts(SqlDialect::Postgres);
    assert_eq!(
        sql(m
            .translate("DELETE FROM users WHERE name = 'Ann' RETURNING id")
            .unwrap()),
        "DELETE FROM accounts WHERE full_name = 'Ann' RETURNING id"
    );
    assert_eq!(m.translate("SELECT 1").unwrap(), Translation::Unchanged);
    assert!(m
        .translate("INSERT INTO users VALUES (1, 'a', 'b', 2)")
        .unwrap_err()
        .contains("without a column list"));
    assert!(m
        .translate("DELETE FROM users WHERE legacy = 1")
        .unwrap_err()
        .contains("users.legacy"));
    assert!(m
        .translate("INSERT INTO users (id, name) VALUES (1, 'a')")
        .unwrap_err()
        .contains("needs users.email"));
    // A computed column follows the columns it is computed from.
    assert_eq!(
        sql(m
            .translate("UPDATE users SET email = 'X@Y' WHERE id = 1")
            .unwrap()),
        "UPDATE accounts SET email_address = 'X@Y', email_domain = lower(('X@Y')) WHERE id = 1"
    );
    assert_eq!(
        sql(m
            .translate("UPDATE users SET name = 'Z' WHERE id = 1")
            .unwrap()),
        "UPDATE accounts SET full_name = 'Z' WHERE id = 1"
    );
}

#[test]
fn renames_only_and_upserts() {
    let mapping = Mapping {
        after_finalize: Default::default(),
        tables: vec![TableMapping {
            old: "users".into(),
            new: Some("accounts".into()),
            columns: [("name".to_string(), "full_name".to_string())]
                .into_iter()
                .collect(),
            drop: vec!["legacy".into()],
            computed: Default::default(),
        }],
    };
    let m = SchemaMap::new(&mapping, SqlDialect::Postgres).unwrap();
    assert_eq!(
        sql(m
            .translate("UPDATE users SET name = 'x', legacy = 2 WHERE id = 1")
            .unwrap()),
        "UPDATE accounts SET full_name = 'x' WHERE id = 1"
    );
    assert_eq!(
        m.translate("UPDATE users SET legacy = 2 WHERE id = 1")
            .unwrap(),
        Translation::Skip
    );
    assert_eq!(
        sql(m.translate("INSERT INTO users (id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name").unwrap()),
        "INSERT INTO accounts (id, full_name) VALUES (1, 'a') ON CONFLICT(id) DO UPDATE SET full_name = EXCLUDED.full_name"
    );
    let my = SchemaMap::new(&mapping, SqlDialect::Mysql).unwrap();
    assert_eq!(
        sql(my.translate("INSERT INTO users (id, name) VALUES (1, 'a') ON DUPLICATE KEY UPDATE name = VALUES(name)").unwrap()),
        "INSERT INTO accounts (id, full_name) VALUES (1, 'a') ON DUPLICATE KEY UPDATE full_name = VALUES(full_name)"
    );
}
