//! The admin commands that start, steer and report on the backfill and
//! verify jobs.

use crate::backfill::JobError;
use crate::shared::Shared;
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::{info, warn};
use turnout_control::command::JobAction;
use turnout_control::controller::Controller;

/// A job started for one table: the table must be one of old's (checked
/// before anything starts, so a typo is refused, not started). The tables
/// the start would take (empty for other actions).
pub(super) async fn known_table(
    shared: &Shared,
    action: JobAction,
    table: Option<&str>,
) -> Result<Vec<String>, String> {
    if action != JobAction::Start {
        return Ok(Vec::new());
    }
    let side = turnout_control::Side::Old;
    let mut conn = crate::backfill::sql::Conn::open(shared.backends(), side)
        .await
        .map_err(|e| format!("cannot read the tables of {side}: {e}"))?;
    let all = crate::backfill::tables(shared.backends(), &mut conn, side).await?;
    let mut names: Vec<String> = all.into_iter().map(|t| t.name).collect();
    names.sort_unstable();
    let Some(table) = table else {
        return Ok(names);
    };
    if names.iter().any(|t| t == table) {
        return Ok(vec![table.to_string()]);
    }
    Err(format!(
        "no table {table:?} on {side}; its tables: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

/// `backfill start --dry-run`, `verify start --dry-run`: what would run.
pub(super) fn job_preview(what: &str, tables: &[String]) -> Value {
    json!({
        "ok": true,
        "dry_run": true,
        "done": format!("dry run: would {what} {} table(s): {}", tables.len(), tables.join(", ")),
    })
}

/// `backfill start|pause|resume|status [TABLE]`.
pub(super) fn backfill(
    shared: &Arc<Shared>,
    action: JobAction,
    table: Option<String>,
    caller: &str,
) -> Value {
    let b = &shared.backfill;
    let result = match action {
        JobAction::Status => return b.status(table.as_deref()),
        JobAction::Start => b.start(&shared.jobs(), table),
        JobAction::Pause => b.pause(),
        JobAction::Resume => b.resume(&shared.jobs()),
    };
    job_reply(result, "backfill", caller)
}

/// `verify start|status [TABLE] [--repair]`.
pub(super) fn verify(
    shared: &Arc<Shared>,
    action: JobAction,
    table: Option<String>,
    repair: bool,
    caller: &str,
) -> Value {
    let v = &shared.backfill.verify;
    let result = match action {
        JobAction::Start => v.start(&shared.jobs(), table, repair),
        _ => return v.status(table.as_deref()),
    };
    job_reply(result, "verify", caller)
}

/// Every command that starts or steers a job is audited (a verify with
/// `--repair` deletes and writes rows on new).
pub(super) fn audit_job(controller: &Controller, line: &str, caller: &str, reply: &Value) {
    let result = if reply["ok"] == true {
        Ok(reply["done"].as_str().unwrap_or_default().to_string())
    } else {
        Err(reply["error"].as_str().unwrap_or_default().to_string())
    };
    controller.audit_job(line.trim(), caller, &result);
}

fn job_reply(result: Result<String, JobError>, what: &str, caller: &str) -> Value {
    match result {
        Ok(done) => {
            info!(%caller, "{done}");
            json!({"ok": true, "done": done})
        }
        Err(e) => {
            warn!(%caller, error = %e, "{what} refused");
            json!({"ok": false, "error": e.to_string()})
        }
    }
}

/// `command` could not be shared with the fleet: audited and answered.
pub(super) fn fleet_refused(
    ctx: &super::Context<'_>,
    command: &str,
    caller: &str,
    e: String,
) -> Value {
    let error = format!("not done: the fleet's store: {e}");
    ctx.controller
        .audit(command, false, caller, &Err(error.clone()));
    json!({"ok": false, "error": error})
}
