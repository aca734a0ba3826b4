//! Sequence catch-up for a writes flip. Mirrored writes carry the
//! authority's generated ids as literals, so the mirror's sequences (serial
//! and identity columns included) never move. Before the mirror becomes the
//! authority, each of its sequences is set to the current authority's value
//! when that is further along, so the next id it hands out is new on both
//! sides.

use crate::backend::catch_up::{Apply, CatchUp};
use crate::backend::pg::{literal, run};
use crate::backend::rows::RowError;
use crate::shared::Shared;
use tracing::warn;
use turnout_control::Side;

/// A connection of turnout's own to `side`, for catalog reads and catch-up.
async fn open(shared: &Shared, side: Side) -> Result<crate::wire::pg_framed::Framed, String> {
    Ok(crate::backend::pg::open_simple(shared.target(side)).await?)
}

/// Reads every sequence's value on `from` and moves the same-named
/// sequences of `to` past it (never backwards). Runs while no transaction
/// is open (inside a writes flip's barrier), so the values are final. When
/// `from` cannot be asked (a rollback because it failed), each sequence of
/// `to` that a column owns is moved past the largest value in that column
/// instead: the mirrored rows carry the ids `from` handed out.
pub async fn catch_up(
    shared: &Shared,
    from: Side,
    to: Side,
    apply: Apply,
) -> Result<CatchUp, String> {
    let values = match read_values(shared, from).await {
        Ok(v) => v,
        Err(e) => {
            warn!(side = %from, error = %e, "sequences cannot be read; {to}'s are moved past the ids in its own rows");
            let mut done = from_own_rows(shared, to, apply).await?;
            done.fallback = Some(e);
            return Ok(done);
        }
    };
    let mut done = CatchUp {
        seen: values.len(),
        ..CatchUp::default()
    };
    if !shared.mapping().is_identity() {
        // Renamed tables own differently named sequences: each column-owned
        // sequence of `to` is also moved past the ids in its own rows,
        // which mirroring made the same as `from`'s.
        let own = from_own_rows(shared, to, apply).await?;
        done.moved.extend(own.moved);
    }
    if values.is_empty() {
        return Ok(done);
    }
    let mut dst = open(shared, to).await?;
    let rows = run(&mut dst, &move_query(&values, apply), to).await?;
    crate::backend::pg::close(&mut dst).await;
    let mapped = !shared.mapping().is_identity();
    let read = |e: RowError| format!("on {to}: {e}");
    for r in rows.iter() {
        let name = r.str("sequence").map_err(read)?.to_string();
        match r.text("value").map_err(read)? {
            // Under a mapping, a sequence of old's name may well be gone.
            None if mapped => {}
            None => done.missing.push(name),
            Some(value) => done.moved.push((name, value.to_string())),
        }
    }
    Ok(done)
}

async fn read_values(shared: &Shared, side: Side) -> Result<Vec<(String, String)>, String> {
    let mut src = open(shared, side).await?;
    let rows = run(
        &mut src,
        "SELECT format('%I.%I', schemaname, sequencename) AS sequence, last_value::text AS value \
         FROM pg_sequences WHERE last_value IS NOT NULL ORDER BY 1",
        side,
    )
    .await?;
    crate::backend::pg::close(&mut src).await;
    let read = |e: RowError| format!("on {side}: {e}");
    rows.iter()
        .map(|r| {
            Ok((
                r.str("sequence").map_err(read)?.to_string(),
                r.str("value").map_err(read)?.to_string(),
            ))
        })
        .collect()
}

/// Moves each sequence of `side` owned by a column (serial, identity) past
/// the largest value in that column.
async fn from_own_rows(shared: &Shared, side: Side, apply: Apply) -> Result<CatchUp, String> {
    let mut conn = open(shared, side).await?;
    let owned = run(
        &mut conn,
        "SELECT format('%I.%I', sn.nspname, s.relname) AS sequence, \
                format('%I.%I', tn.nspname, t.relname) AS owner_table, \
                quote_ident(a.attname) AS owner_column \
         FROM pg_class s \
         JOIN pg_namespace sn ON sn.oid = s.relnamespace \
         JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid \
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
         JOIN pg_class t ON t.oid = d.refobjid \
         JOIN pg_namespace tn ON tn.oid = t.relnamespace \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
         WHERE s.relkind = 'S' ORDER BY 1",
        side,
    )
    .await?;
    let read = |e: RowError| format!("on {side}: {e}");
    let mut parts: Vec<String> = Vec::new();
    for r in owned.iter() {
        let (seq, table, column) = (
            r.str("sequence").map_err(read)?,
            r.str("owner_table").map_err(read)?,
            r.str("owner_column").map_err(read)?,
        );
        parts.push(format!(
            "SELECT {lit}::text AS name, (SELECT max({column})::bigint FROM {table}) AS v",
            lit = literal(seq)
        ));
    }
    let mut done = CatchUp {
        seen: parts.len(),
        ..CatchUp::default()
    };
    if parts.is_empty() {
        return Ok(done);
    }
    let set = match apply {
        Apply::Move => "setval(m.name::regclass, m.v)::text",
        Apply::Preview => "m.v::text",
    };
    let sql = format!(
        "SELECT m.name AS sequence, {set} AS value FROM ({}) AS m \
         JOIN pg_sequences p ON format('%I.%I', p.schemaname, p.sequencename) = m.name \
         WHERE m.v IS NOT NULL AND p.increment_by > 0 \
           AND m.v > COALESCE(p.last_value, p.start_value - 1) ORDER BY 1",
        parts.join(" UNION ALL ")
    );
    for r in run(&mut conn, &sql, side).await?.iter() {
        done.moved.push((
            r.str("sequence").map_err(read)?.to_string(),
            r.str("value").map_err(read)?.to_string(),
        ));
    }
    crate::backend::pg::close(&mut conn).await;
    Ok(done)
}

/// One statement that sets each listed sequence that is behind, and names
/// those that do not exist (NULL value).
fn move_query(values: &[(String, String)], apply: Apply) -> String {
    let list: Vec<String> = values
        .iter()
        .map(|(name, value)| format!("({}, {}::bigint)", literal(name), literal(value)))
        .collect();
    let set = match apply {
        Apply::Move => "setval(t.name::regclass, t.v)::text",
        Apply::Preview => "t.v::text",
    };
    format!(
        "SELECT t.name AS sequence, CASE WHEN p.sequencename IS NULL THEN NULL \
           ELSE {set} END AS value \
         FROM (VALUES {}) AS t(name, v) \
         LEFT JOIN pg_sequences p ON format('%I.%I', p.schemaname, p.sequencename) = t.name \
         WHERE p.sequencename IS NULL \
            OR (p.increment_by > 0 AND t.v > COALESCE(p.last_value, p.start_value - 1)) \
            OR (p.increment_by < 0 AND t.v < COALESCE(p.last_value, p.start_value + 1)) \
         ORDER BY 1",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_as_literals() {
        let q = move_query(&[("public.\"o'dd\"".into(), "42".into())], Apply::Move);
        assert!(q.contains("('public.\"o''dd\"', '42'::bigint)"), "{q}");
        assert!(q.contains("setval("), "{q}");
        // A preview reads the same and moves nothing.
        let q = move_query(&[("s".into(), "1".into())], Apply::Preview);
        assert!(!q.contains("setval("), "{q}");
    }
}
