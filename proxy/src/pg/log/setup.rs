//! What the log source needs on the servers, checked and made: the log
//! side's `wal_level`, login, slot and publications; the applying side's
//! rights. Each check names the side and what to change.

use crate::backend::pg::{close, literal, open_simple, run, BackendTarget};
use crate::backend::pglog::ident;
use crate::backend::rows::Rows;
use crate::backend::QueryError;
use crate::mapping::SchemaMap;
use std::collections::BTreeSet;
use turnout_control::Side;

/// The publication of tables whose every change is in the log (they have
/// a replica identity).
pub fn publication(slot: &str) -> String {
    slot.to_string()
}

/// The publication of tables without a replica identity: only their
/// inserts and truncates (publishing their updates would make the server
/// refuse them).
pub fn inserts_publication(slot: &str) -> String {
    format!("{slot}_inserts")
}

async fn query(
    conn: &mut crate::wire::pg_framed::Framed,
    sql: &str,
    side: Side,
) -> Result<Rows, String> {
    run(conn, sql, side).await.map_err(|e| e.to_string())
}

fn one<'a>(
    rows: &'a Rows,
    side: Side,
    what: &str,
) -> Result<crate::backend::rows::Row<'a>, String> {
    rows.iter()
        .next()
        .ok_or_else(|| format!("{side}: {what} gave no row"))
}

/// Why `from`'s log cannot feed `to` (`target(side)` reaches each side as
/// its replication login); `Ok` when it can.
pub async fn check(from: &BackendTarget, to: &BackendTarget, slot: &str) -> Result<(), String> {
    let login = |t: &BackendTarget| {
        format!(
            "backends.{}.replication_user ({:?})",
            t.side, t.replication.0
        )
    };
    let mut conn = open_simple(&from.as_replication())
        .await
        .map_err(|e| format!("{} cannot log in: {e}", login(from)))?;
    let checked = async {
        let side = from.side;
        let rows = query(
            &mut conn,
            &format!(
                "SELECT current_setting('wal_level') AS wal_level, \
                 current_setting('server_version_num')::int AS version, \
                 r.rolsuper AS super, r.rolreplication AS replication, \
                 current_setting('max_replication_slots')::int AS max_slots, \
                 (SELECT count(*) FROM pg_replication_slots) AS slots, \
                 EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {}) AS ours, \
                 current_setting('max_wal_senders')::int AS max_senders, \
                 (SELECT count(*) FROM pg_stat_replication) AS senders \
                 FROM pg_roles r WHERE r.rolname = current_user",
                literal(slot)
            ),
            side,
        )
        .await?;
        let r = one(&rows, side, "the log check")?;
        let wal_level = r.str("wal_level").map_err(|e| e.to_string())?;
        if wal_level != "logical" {
            return Err(format!(
                "{side} has wal_level = {wal_level}; its log can feed the mirror with wal_level = logical (a server restart)"
            ));
        }
        let version: u32 = r.get("version").map_err(|e| e.to_string())?;
        if version < 140000 {
            return Err(format!(
                "{side} is PostgreSQL {}; the log source needs 14 or later",
                version / 10000
            ));
        }
        let superuser = r.str("super").map_err(|e| e.to_string())? == "t";
        if !superuser && r.str("replication").map_err(|e| e.to_string())? != "t" {
            return Err(format!(
                "{} has neither REPLICATION nor superuser on {side} (ALTER ROLE ... REPLICATION, and ownership of the tables to publish)",
                login(from)
            ));
        }
        let ours = r.str("ours").map_err(|e| e.to_string())? == "t";
        let slots: u64 = r.get("slots").map_err(|e| e.to_string())?;
        let max_slots: u64 = r.get("max_slots").map_err(|e| e.to_string())?;
        if !ours && slots >= max_slots {
            return Err(format!(
                "{side} has no free replication slot ({slots} of max_replication_slots = {max_slots} used)"
            ));
        }
        let senders: u64 = r.get("senders").map_err(|e| e.to_string())?;
        let max_senders: u64 = r.get("max_senders").map_err(|e| e.to_string())?;
        if senders >= max_senders {
            return Err(format!(
                "{side} has no free WAL sender ({senders} of max_wal_senders = {max_senders} in use)"
            ));
        }
        Ok(())
    }
    .await;
    close(&mut conn).await;
    checked?;
    let mut conn = open_simple(&to.as_replication())
        .await
        .map_err(|e| format!("{} cannot log in: {e}", login(to)))?;
    let side = to.side;
    let checked = async {
        let rows = query(
            &mut conn,
            "SELECT r.rolsuper AS super, \
             has_function_privilege('pg_replication_origin_session_setup(text)', 'execute') AS origins, \
             current_setting('server_version_num')::int AS version \
             FROM pg_roles r WHERE r.rolname = current_user",
            side,
        )
        .await?;
        let r = one(&rows, side, "the apply check")?;
        let superuser = r.str("super").map_err(|e| e.to_string())? == "t";
        if superuser {
            return Ok(());
        }
        let version: u32 = r.get("version").map_err(|e| e.to_string())?;
        let role_ok = version >= 150000
            && query(
                &mut conn,
                "SELECT has_parameter_privilege('session_replication_role', 'SET') AS ok",
                side,
            )
            .await
            .ok()
            .and_then(|rows| rows.iter().next().map(|r| r.str("ok") == Ok("t")))
            .unwrap_or(false);
        if !role_ok {
            return Err(format!(
                "{} may not set session_replication_role on {side} (superuser, or GRANT SET ON PARAMETER session_replication_role): without it the applied rows would fire {side}'s triggers again",
                login(to)
            ));
        }
        if r.str("origins").map_err(|e| e.to_string())? != "t" {
            return Err(format!(
                "{} may not use replication origins on {side} (superuser, or GRANT EXECUTE on the pg_replication_origin_* functions): turnout keeps its place in the log there",
                login(to)
            ));
        }
        Ok(())
    }
    .await;
    close(&mut conn).await;
    checked
}

/// What to change on the servers for the log source: the authority's
/// tables without a replica identity (their updates would not be in the
/// log), tables the mirror lacks, and an unlimited `max_slot_wal_keep_size`
/// (a stalled applier would keep the authority's log until its disk fills).
pub async fn notes(
    from: &BackendTarget,
    to: &BackendTarget,
    mapping: &SchemaMap,
) -> Result<Vec<String>, String> {
    let side = from.side;
    let mut theirs = open_simple(&to.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    let on_to = tables(&mut theirs, to.side).await;
    close(&mut theirs).await;
    let on_to: BTreeSet<Table> = on_to?.into_iter().map(|(t, _)| t).collect();
    let mut conn = open_simple(&from.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let mut out = Vec::new();
        for (t, identity) in tables(&mut conn, side).await? {
            let counterpart = Table {
                schema: t.schema.clone(),
                name: mapping.rows_toward(to.side, &t.name).table,
            };
            if !on_to.contains(&counterpart) {
                out.push(format!(
                    "{}.{} is not on {}: its writes would not be mirrored (make it there first)",
                    t.schema, t.name, to.side
                ));
            } else if !identity {
                out.push(format!(
                    "ALTER TABLE {} REPLICA IDENTITY FULL;  -- on {side}: {}.{} has no primary key, so its UPDATEs and DELETEs are not in the log (each one is recorded)",
                    t.quoted(),
                    t.schema,
                    t.name
                ));
            }
        }
        let keep = query(&mut conn, "SELECT current_setting('max_slot_wal_keep_size') AS keep", side).await?;
        if keep.iter().next().and_then(|r| r.str("keep").ok()) == Some("-1") {
            out.push(format!(
                "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB';  -- on {side} (then SELECT pg_reload_conf()): unlimited now, so a stalled applier keeps {side}'s log until its disk fills; with a limit {side} gives turnout's slot up first, and turnout records what {} may lack",
                to.side
            ));
        }
        Ok(out)
    }
    .await;
    close(&mut conn).await;
    result
}

/// One table of a side, by schema and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Table {
    pub schema: String,
    pub name: String,
}

impl Table {
    pub fn quoted(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
}

/// The user tables of a side (partitions under their root), with whether
/// each has a replica identity.
async fn tables(
    conn: &mut crate::wire::pg_framed::Framed,
    side: Side,
) -> Result<Vec<(Table, bool)>, String> {
    let rows = query(
        conn,
        "SELECT n.nspname AS schema, c.relname AS name, \
         CASE c.relreplident \
           WHEN 'f' THEN true \
           WHEN 'n' THEN false \
           WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) \
           ELSE EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
         END AS identity \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'turnout') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
         ORDER BY 1, 2",
        side,
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                Table {
                    schema: r.str("schema").map_err(|e| e.to_string())?.to_string(),
                    name: r.str("name").map_err(|e| e.to_string())?.to_string(),
                },
                r.str("identity").map_err(|e| e.to_string())? == "t",
            ))
        })
        .collect()
}

/// What the publications hold after [`publish`].
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// Tables whose every change is in the log.
    pub full: Vec<Table>,
    /// Tables without a replica identity: inserts and truncates only.
    pub inserts: Vec<Table>,
    /// Tables the other side does not have: not published.
    pub missing: Vec<Table>,
    /// Tables this call had to add (none of the publications held them).
    pub added: Vec<Table>,
}

/// Makes `from`'s publications hold its tables (those with a replica
/// identity in the full one, the others in the inserts one), but those in
/// `left_out` (tables `to` did not have when mirroring began: first, pass
/// `None` and they are found). `to`'s tables are read through `mapping`.
pub async fn publish(
    from: &BackendTarget,
    to: &BackendTarget,
    slot: &str,
    mapping: &SchemaMap,
    left_out: Option<&[Table]>,
) -> Result<Published, String> {
    let mut theirs = open_simple(&to.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    let on_to = tables(&mut theirs, to.side).await;
    close(&mut theirs).await;
    let on_to: BTreeSet<Table> = on_to?.into_iter().map(|(t, _)| t).collect();
    let mut conn = open_simple(&from.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let side = from.side;
        let mut out = Published::default();
        for (t, identity) in tables(&mut conn, side).await? {
            let counterpart = Table {
                schema: t.schema.clone(),
                name: mapping.rows_toward(to.side, &t.name).table,
            };
            let missing = !on_to.contains(&counterpart);
            let leave = match left_out {
                None => missing,
                Some(list) => list.contains(&t),
            };
            if missing {
                out.missing.push(t.clone());
            }
            if leave {
                continue;
            }
            if identity {
                out.full.push(t);
            } else {
                out.inserts.push(t);
            }
        }
        // What either publication held before: a table that joins now was
        // left out of the log until now.
        let before = query(
            &mut conn,
            &format!(
                "SELECT schemaname AS schema, tablename AS name FROM pg_publication_tables WHERE pubname IN ({}, {})",
                literal(&publication(slot)),
                literal(&inserts_publication(slot))
            ),
            side,
        )
        .await?;
        let other_held: BTreeSet<Table> = before
            .iter()
            .filter_map(|r| {
                Some(Table {
                    schema: r.str("schema").ok()?.to_string(),
                    name: r.str("name").ok()?.to_string(),
                })
            })
            .collect();
        for (name, members, publish) in [
            (publication(slot), &out.full, "insert, update, delete, truncate"),
            (inserts_publication(slot), &out.inserts, "insert, truncate"),
        ] {
            let rows = query(
                &mut conn,
                &format!(
                    "SELECT schemaname AS schema, tablename AS name FROM pg_publication_tables WHERE pubname = {}",
                    literal(&name)
                ),
                side,
            )
            .await?;
            let exists = !query(
                &mut conn,
                &format!("SELECT 1 AS one FROM pg_publication WHERE pubname = {}", literal(&name)),
                side,
            )
            .await?
            .is_empty();
            let held: BTreeSet<Table> = rows
                .iter()
                .filter_map(|r| {
                    Some(Table {
                        schema: r.str("schema").ok()?.to_string(),
                        name: r.str("name").ok()?.to_string(),
                    })
                })
                .collect();
            let wanted: BTreeSet<Table> = members.iter().cloned().collect();
            if !exists {
                let list = if wanted.is_empty() {
                    String::new()
                } else {
                    format!(
                        " FOR TABLE {}",
                        wanted.iter().map(Table::quoted).collect::<Vec<_>>().join(", ")
                    )
                };
                query(
                    &mut conn,
                    &format!(
                        "CREATE PUBLICATION {}{list} WITH (publish = '{publish}', publish_via_partition_root = true)",
                        ident(&name)
                    ),
                    side,
                )
                .await
                .map_err(|e| format!("publication {name} could not be created on {side}: {e}"))?;
                continue;
            }
            let joined: Vec<&Table> = wanted
                .difference(&held)
                .filter(|t| !other_held.contains(t))
                .collect();
            out.added.extend(joined.into_iter().cloned());
            let add: Vec<String> = wanted.difference(&held).map(Table::quoted).collect();
            if !add.is_empty() {
                query(
                    &mut conn,
                    &format!("ALTER PUBLICATION {} ADD TABLE {}", ident(&name), add.join(", ")),
                    side,
                )
                .await
                .map_err(|e| format!("tables could not be added to publication {name} on {side}: {e}"))?;
            }
            // A table leaves a publication only for the other one (its
            // replica identity came or went).
            let moved: BTreeSet<Table> = out
                .full
                .iter()
                .chain(&out.inserts)
                .filter(|t| !wanted.contains(t))
                .cloned()
                .collect();
            let drop: Vec<String> = held.intersection(&moved).map(Table::quoted).collect();
            if !drop.is_empty() {
                query(
                    &mut conn,
                    &format!("ALTER PUBLICATION {} DROP TABLE {}", ident(&name), drop.join(", ")),
                    side,
                )
                .await
                .map_err(|e| format!("tables could not be taken out of publication {name} on {side}: {e}"))?;
            }
        }
        Ok(out)
    }
    .await;
    close(&mut conn).await;
    result
}

/// The event trigger that puts a table into the log in the transaction
/// that creates it (or gives it a replica identity, or takes it away), so
/// no row written to a new table is left out of the log. It needs a
/// superuser to make; `Ok(false)` when the login is not one (tables then
/// join at the next upkeep, a few seconds later, recorded).
pub async fn ensure_event_trigger(from: &BackendTarget, slot: &str) -> Result<bool, String> {
    let side = from.side;
    let mut conn = open_simple(&from.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let rows = query(
            &mut conn,
            "SELECT rolsuper AS super FROM pg_roles WHERE rolname = current_user",
            side,
        )
        .await?;
        if rows.iter().next().and_then(|r| r.str("super").ok()) != Some("t") {
            return Ok(false);
        }
        let function = ident(&format!("turnout_{slot}_publish"));
        let body = format!(
            r#"CREATE OR REPLACE FUNCTION public.{function}() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $turnout$
DECLARE
  r record;
  has_identity boolean;
  wanted name;
  other name;
BEGIN
  FOR r IN SELECT DISTINCT c.oid, c.relreplident
           FROM pg_event_trigger_ddl_commands() d JOIN pg_class c ON c.oid = d.objid
           WHERE d.classid = 'pg_class'::regclass AND c.relkind IN ('r', 'p')
             AND c.relpersistence = 'p' AND NOT c.relispartition
             AND (SELECT n.nspname FROM pg_namespace n WHERE n.oid = c.relnamespace) <> 'turnout'
  LOOP
    BEGIN
      has_identity := CASE r.relreplident
        WHEN 'f' THEN true
        WHEN 'n' THEN false
        WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = r.oid AND i.indisreplident)
        ELSE EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = r.oid AND i.indisprimary) END;
      IF has_identity THEN wanted := {full}; other := {inserts};
      ELSE wanted := {inserts}; other := {full}; END IF;
      IF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                 WHERE pr.prrelid = r.oid AND p.pubname = other) THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', other, r.oid::regclass);
      END IF;
      IF NOT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                     WHERE pr.prrelid = r.oid AND p.pubname = wanted) THEN
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', wanted, r.oid::regclass);
      END IF;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'turnout: % could not be put into the log: %', r.oid::regclass, SQLERRM;
    END;
  END LOOP;
END
$turnout$"#,
            full = literal(&publication(slot)),
            inserts = literal(&inserts_publication(slot)),
        );
        query(&mut conn, &body, side).await?;
        let trigger = ident(&format!("turnout_{slot}_publish"));
        query(
            &mut conn,
            &format!(
                "DO $turnout$ BEGIN                  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = {name}) THEN                    CREATE EVENT TRIGGER {trigger} ON ddl_command_end                    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')                    EXECUTE FUNCTION public.{function}();                  END IF; END $turnout$",
                name = literal(&format!("turnout_{slot}_publish")),
            ),
            side,
        )
        .await?;
        Ok(true)
    }
    .await;
    close(&mut conn).await;
    result.map_err(|e: String| {
        format!(
            "the event trigger that puts new tables into the log could not be made on {side}: {e}"
        )
    })
}

/// The slot's state on its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Made now (nothing before it is in it).
    Created,
    /// There already, usable.
    Kept,
}

/// Makes sure `from` has turnout's logical slot. A slot the server
/// invalidated (`wal_status = lost`) is made again, and said so.
pub async fn ensure_slot(
    from: &BackendTarget,
    slot: &str,
) -> Result<(Slot, Option<String>), String> {
    let side = from.side;
    let mut conn = open_simple(&from.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let rows = query(
            &mut conn,
            &format!(
                "SELECT plugin, database = current_database() AS here, coalesce(wal_status, '') AS wal_status \
                 FROM pg_replication_slots WHERE slot_name = {}",
                literal(slot)
            ),
            side,
        )
        .await?;
        let mut note = None;
        if let Some(r) = rows.iter().next() {
            let plugin = r.text("plugin").ok().flatten().unwrap_or_default();
            if plugin != "pgoutput" || r.str("here") != Ok("t") {
                return Err(format!(
                    "{side} has a replication slot {slot:?} that is not turnout's (plugin {plugin:?}, or another database): choose another mirror.slot"
                ));
            }
            if r.str("wal_status") != Ok("lost") {
                return Ok((Slot::Kept, None));
            }
            query(&mut conn, &format!("SELECT pg_drop_replication_slot({})", literal(slot)), side).await?;
            note = Some(format!(
                "{side} invalidated turnout's slot {slot:?} (the log it kept passed max_slot_wal_keep_size): it was made again, and writes of the time between may be missing on the other side: run verify --repair"
            ));
        }
        query(
            &mut conn,
            &format!(
                "SELECT lsn FROM pg_create_logical_replication_slot({}, 'pgoutput')",
                literal(slot)
            ),
            side,
        )
        .await
        .map_err(|e| format!("the replication slot {slot:?} could not be made on {side}: {e}"))?;
        Ok((Slot::Created, note))
    }
    .await;
    close(&mut conn).await;
    result
}

/// Drops turnout's slot and publications on `from` (finalize, a failed
/// start that made them). What could not be dropped, in words.
pub async fn drop_all(from: &BackendTarget, slot: &str) -> Result<(), String> {
    let side = from.side;
    let mut conn = open_simple(&from.as_replication())
        .await
        .map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    // The reader may take a moment to let go of the slot.
    for attempt in 0..50 {
        let dropped = query(
            &mut conn,
            &format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}",
                literal(slot)
            ),
            side,
        )
        .await;
        match dropped {
            Ok(_) => break,
            Err(e) if attempt == 49 => problems.push(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    for sql in [
        format!(
            "DROP EVENT TRIGGER IF EXISTS {}",
            ident(&format!("turnout_{slot}_publish"))
        ),
        format!(
            "DROP FUNCTION IF EXISTS public.{}()",
            ident(&format!("turnout_{slot}_publish"))
        ),
        format!(
            "DROP PUBLICATION IF EXISTS {}, {}",
            ident(&publication(slot)),
            ident(&inserts_publication(slot))
        ),
    ] {
        if let Err(e) = query(&mut conn, &sql, side).await {
            problems.push(e);
        }
    }
    close(&mut conn).await;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Bytes of log `from` keeps for the slot, and whether the server gave
/// the slot up (`wal_status = lost`).
pub async fn lag(
    conn: &mut crate::wire::pg_framed::Framed,
    side: Side,
    slot: &str,
) -> Result<(u64, bool), QueryError> {
    let rows = run(
        conn,
        &format!(
            "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint AS lag, \
             coalesce(wal_status, '') = 'lost' AS lost FROM pg_replication_slots WHERE slot_name = {}",
            literal(slot)
        ),
        side,
    )
    .await?;
    let Some(r) = rows.iter().next() else {
        return Ok((0, true));
    };
    let lag: i64 = r
        .get("lag")
        .map_err(|e| QueryError::Malformed(e.to_string()))?;
    Ok((lag.max(0) as u64, r.str("lost") == Ok("t")))
}
