//! Property tests of the mapping: whatever text comes in, translation
//! gives an answer or an error and never a panic.

use super::*;
use proptest::prelude::*;
use turnout_config::TableMapping;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the statement, the translator answers (translated,
    /// unchanged, skipped, or why not) and never panics.
    #[test]
    fn any_statement_is_translated_or_refused(
        words in proptest::collection::vec(
            prop_oneof![
                Just("INSERT"), Just("INTO"), Just("users"), Just("(id, name, legacy)"),
                Just("VALUES"), Just("(1, 'a', 2)"), Just("UPDATE"), Just("SET"),
                Just("name"), Just("="), Just("'x'"), Just("legacy"), Just("WHERE"),
                Just("DELETE"), Just("FROM"), Just("SELECT"), Just("*"), Just(","),
                Just("RETURNING"), Just("ON CONFLICT (id) DO UPDATE SET"), Just(";"),
            ],
            0..24,
        )
    ) {
        let mapping = Mapping {
            after_finalize: Default::default(),
            tables: vec![TableMapping {
                old: "users".into(),
                new: Some("accounts".into()),
                columns: [("name".to_string(), "full_name".to_string())].into_iter().collect(),
                drop: vec!["legacy".into()],
                computed: [("tag".to_string(), "upper(name)".to_string())].into_iter().collect(),
            }],
        };
        let sql = words.join(" ");
        for d in [SqlDialect::Postgres, SqlDialect::Mysql] {
            let _ = SchemaMap::new(&mapping, d).unwrap().translate(&sql);
        }
    }
}
