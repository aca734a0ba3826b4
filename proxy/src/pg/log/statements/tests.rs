use super::*;
use crate::backend::pgoutput::RelColumn;
use crate::engine::SqlDialect;
use crate::mapping::SchemaMap;
use bytes::Bytes;
use turnout_config::{Mapping, TableMapping};
use turnout_control::Side;

fn rel(identity: u8, columns: &[(&str, bool)]) -> Relation {
    Relation {
        id: 1,
        schema: "public".into(),
        name: "customers".into(),
        replica_identity: identity,
        columns: columns
            .iter()
            .map(|(n, key)| RelColumn {
                key: *key,
                name: n.to_string(),
                type_oid: 25,
                typmod: -1,
            })
            .collect(),
    }
}

fn col(name: &str, ty: &str) -> TargetColumn {
    TargetColumn {
        name: name.into(),
        ty: ty.into(),
        generated: false,
        always_identity: false,
    }
}

fn target(name: &str, columns: Vec<TargetColumn>, key: &[&str]) -> TargetTable {
    TargetTable {
        schema: "public".into(),
        name: name.into(),
        columns,
        key: key.iter().map(|k| k.to_string()).collect(),
    }
}

fn plan(r: &Relation, t: &TargetTable) -> Result<Plan, Refusal> {
    Plan::new(
        r,
        &SchemaMap::default().rows_toward(Side::New, &r.name),
        t,
        &|_| None,
    )
}

#[test]
fn an_insert_adds_the_row_or_overwrites_one_already_there_and_says_which() {
    let r = rel(b'd', &[("id", true), ("name", false)]);
    let t = target(
        "customers",
        vec![col("id", "integer"), col("name", "text")],
        &["id"],
    );
    let s = plan(&r, &t).unwrap().statement(Shape::Insert).unwrap();
    assert_eq!(
        s.sql,
        "WITH inserted AS (INSERT INTO \"public\".\"customers\" (\"id\", \"name\") VALUES ($1::integer, $2::text) ON CONFLICT (\"id\") DO NOTHING RETURNING 1) UPDATE \"public\".\"customers\" SET \"name\" = $2::text WHERE \"id\" = $1::integer AND NOT EXISTS (SELECT FROM inserted) AND ROW(\"name\")::text IS DISTINCT FROM ROW($2::text)::text"
    );
    assert_eq!((s.params, s.reads), (2, Reads::Existed));
    // Only key columns: nothing to overwrite.
    let r = rel(b'd', &[("id", true)]);
    let t = target("customers", vec![col("id", "integer")], &["id"]);
    let s = plan(&r, &t).unwrap().statement(Shape::Insert).unwrap();
    assert!(
        s.sql.ends_with("ON CONFLICT (\"id\") DO NOTHING"),
        "{}",
        s.sql
    );
    assert_eq!(s.reads, Reads::Fresh);
}

#[test]
fn updates_find_rows_by_key_and_add_a_lacking_row_when_it_is_whole() {
    let r = rel(b'd', &[("id", true), ("name", false), ("doc", false)]);
    let t = target(
        "customers",
        vec![
            col("id", "integer"),
            col("name", "text"),
            col("doc", "json"),
        ],
        &["id"],
    );
    let p = plan(&r, &t).unwrap();
    let whole = p
        .statement(Shape::Update {
            present: 0b111,
            moved: false,
        })
        .unwrap();
    assert!(
        whole.sql.starts_with("WITH updated AS (UPDATE \"public\".\"customers\" SET \"name\" = $2::text, \"doc\" = $3::json WHERE \"id\" = $1::integer RETURNING 1) INSERT INTO"),
        "{}",
        whole.sql
    );
    assert_eq!((whole.params, whole.reads), (3, Reads::Missing));
    // An unchanged large value is not sent: not assigned, and a lacking
    // row cannot be added.
    let part = p
        .statement(Shape::Update {
            present: 0b011,
            moved: false,
        })
        .unwrap();
    assert_eq!(
        part.sql,
        "UPDATE \"public\".\"customers\" SET \"name\" = $2::text WHERE \"id\" = $1::integer"
    );
    assert_eq!(part.reads, Reads::Found);
    // The key moved: found by the old key (after the row's values).
    let moved = p
        .statement(Shape::Update {
            present: 0b111,
            moved: true,
        })
        .unwrap();
    assert!(
        moved
            .sql
            .contains("SET \"id\" = $1::integer, \"name\" = $2::text"),
        "{}",
        moved.sql
    );
    assert!(
        moved.sql.contains("WHERE \"id\" = $4::integer"),
        "{}",
        moved.sql
    );
    assert_eq!(moved.params, 6);
    let old = vec![Value::Text(Bytes::from("7")), Value::Null, Value::Null];
    let new = vec![
        Value::Text(Bytes::from("8")),
        Value::Text(Bytes::from("a")),
        Value::Unchanged,
    ];
    let bound = p.bind_values(&moved, Some(&new), Some(&old));
    assert_eq!(bound[0], Some(&b"8"[..]));
    assert_eq!(bound[2], None);
    assert_eq!(bound[3], Some(&b"7"[..]));
    // Only the key, unmoved: nothing to do.
    assert!(p
        .statement(Shape::Update {
            present: 0b001,
            moved: false,
        })
        .is_none());
    let delete = p.statement(Shape::Delete).unwrap();
    assert_eq!(
        delete.sql,
        "DELETE FROM \"public\".\"customers\" WHERE \"id\" = $4::integer"
    );
    assert_eq!(p.key_text(&r, &old).as_deref(), Some("id=7"));
}

#[test]
fn full_identity_finds_one_row_by_all_its_values() {
    let r = rel(b'f', &[("a", true), ("doc", true)]);
    let t = target(
        "customers",
        vec![col("a", "integer"), col("doc", "json")],
        &[],
    );
    let p = plan(&r, &t).unwrap();
    let d = p.statement(Shape::Delete).unwrap();
    assert_eq!(
        d.sql,
        "DELETE FROM \"public\".\"customers\" WHERE ctid = (SELECT ctid FROM \"public\".\"customers\" WHERE \"a\"::text IS NOT DISTINCT FROM $3 AND \"doc\"::text IS NOT DISTINCT FROM $4 LIMIT 1)"
    );
    let i = p.statement(Shape::Insert).unwrap();
    assert_eq!(i.reads, Reads::Nothing);
    assert!(i.sql.starts_with("INSERT INTO"));
}

#[test]
fn rows_go_through_the_mapping_and_a_column_the_target_lacks_is_refused() {
    let m = SchemaMap::new(
        &Mapping {
            after_finalize: Default::default(),
            tables: vec![TableMapping {
                old: "customers".into(),
                new: Some("clients".into()),
                columns: [("name".to_string(), "full_name".to_string())]
                    .into_iter()
                    .collect(),
                drop: vec!["legacy".into()],
                computed: [(
                    "domain".to_string(),
                    "split_part(email, '@', 2)".to_string(),
                )]
                .into_iter()
                .collect(),
            }],
        },
        SqlDialect::Postgres,
    )
    .unwrap();
    let r = rel(
        b'd',
        &[
            ("id", true),
            ("name", false),
            ("email", false),
            ("legacy", false),
        ],
    );
    let t = target(
        "clients",
        vec![
            col("id", "bigint"),
            col("full_name", "text"),
            col("email", "text"),
            col("domain", "text"),
        ],
        &["id"],
    );
    let map = m.rows_toward(Side::New, "customers");
    let p = Plan::new(&r, &map, &t, &|_| None).unwrap();
    let s = p.statement(Shape::Insert).unwrap();
    assert!(
        s.sql.contains("INSERT INTO \"public\".\"clients\" (\"id\", \"full_name\", \"email\", \"domain\") VALUES ($1::bigint, $2::text, $3::text, split_part(($3::text), '@', 2))"),
        "{}",
        s.sql
    );
    assert_eq!(s.params, 4);
    let lacking = target("clients", vec![col("id", "bigint")], &["id"]);
    let e = Plan::new(&r, &map, &lacking, &|_| None).unwrap_err();
    assert!(
        e.contains("public.customers.name has no column \"full_name\""),
        "{e}"
    );
    // No replica identity: inserts only.
    let none = rel(b'n', &[("id", false)]);
    let t = target("customers", vec![col("id", "bigint")], &[]);
    let p = plan(&none, &t).unwrap();
    assert!(!p.finds_rows());
    assert!(p.statement(Shape::Insert).is_some());
    assert!(p.statement(Shape::Delete).is_none());
}
