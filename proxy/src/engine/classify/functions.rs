//! Which function calls make a statement write or differ on the mirror,
//! by the name the server resolves (quotes and Unicode escapes undone).

use sqlparser::ast::{visit_expressions, Expr, Statement};
use std::ops::ControlFlow;

/// Functions whose call changes state even inside a SELECT.
const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "pg_advisory_lock",
    "pg_advisory_xact_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_xact_lock",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_notify",
    "set_config",
    // Large objects: every server-side function that creates, opens,
    // writes or removes one.
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_create",
    "lo_creat",
    "lo_from_bytea",
    "lo_put",
    "lo_open",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "txid_current",
    "pg_current_xact_id",
    "get_lock",
    "release_lock",
    "last_insert_id",
];

/// Functions whose value differs between the authority's run and the mirror's.
const NONDETERMINISTIC_FUNCTIONS: &[&str] = &[
    "now",
    "current_timestamp",
    "localtimestamp",
    "current_time",
    "current_date",
    "localtime",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "random",
    "rand",
    "gen_random_uuid",
    "uuid_generate_v4",
    "uuid",
    "uuid_short",
    "sysdate",
    "utc_timestamp",
    "unix_timestamp",
    "nextval",
];

pub(super) fn function_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Function(f) => f.name.0.last().map(|part| plain_name(&part.to_string())),
        _ => None,
    }
}

/// A name as the server resolves it, lower-case: quotes dropped, and the
/// escapes of a Unicode identifier (`U&"lo\005Ffrom\005Fbytea"`) decoded,
/// so no spelling hides a function from the lists above.
pub(super) fn plain_name(raw: &str) -> String {
    let raw = raw
        .strip_prefix("U&")
        .or_else(|| raw.strip_prefix("u&"))
        .unwrap_or(raw);
    let name = raw.trim_matches('"');
    if !name.contains('\\') {
        return name.to_lowercase();
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let (digits, skip) = match tail.strip_prefix('+') {
            Some(t) => (t.get(..6), 7),
            None => (tail.get(..4), 4),
        };
        match digits
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .and_then(char::from_u32)
        {
            Some(c) => {
                out.push(c);
                rest = &tail[skip..];
            }
            None => {
                out.push('\\');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out.to_lowercase()
}

pub(super) struct Calls {
    pub side_effects: bool,
    pub nondeterministic: bool,
}

pub(super) fn calls(statement: &Statement) -> Calls {
    let mut c = Calls {
        side_effects: false,
        nondeterministic: false,
    };
    let _ = visit_expressions(statement, |e: &Expr| {
        if let Some(name) = function_name(e) {
            c.side_effects |= SIDE_EFFECT_FUNCTIONS.contains(&name.as_str());
            c.nondeterministic |= NONDETERMINISTIC_FUNCTIONS.contains(&name.as_str());
        }
        ControlFlow::<()>::Continue(())
    });
    // A function called in FROM (`SELECT * FROM lo_from_bytea(...)`) is a
    // relation to the parser.
    let _ = sqlparser::ast::visit_relations(statement, |name| {
        if let Some(last) = name.0.last() {
            let name = plain_name(&last.to_string());
            c.side_effects |= SIDE_EFFECT_FUNCTIONS.contains(&name.as_str());
        }
        ControlFlow::<()>::Continue(())
    });
    c
}
