//! The backends checked before turnout serves (and by `check-config
//! --connect`): it logs in to each side the phase needs, as its configured
//! user, and reads its catalog; a failure names the backend and the reason,
//! so a wrong backend password is never taken for a client's.

use crate::shared::Shared;
use turnout_control::Side;

/// What one side's check found: `Ok` with a line saying what was reached,
/// or `Err` with why not.
pub type Checked = Result<String, String>;

/// Checks `sides` (both at once when there are two).
pub async fn check(shared: &Shared, sides: &[Side]) -> Vec<(Side, Checked)> {
    match sides {
        [a, b] => {
            let (x, y) = tokio::join!(one(shared, *a), one(shared, *b));
            vec![(*a, x), (*b, y)]
        }
        _ => {
            let mut out = Vec::with_capacity(sides.len());
            for &side in sides {
                out.push((side, one(shared, side).await));
            }
            out
        }
    }
}

async fn one(shared: &Shared, side: Side) -> Checked {
    let t = shared.target(side);
    let what = format!(
        "backend {side} ({}, database {}, user {})",
        t.address(),
        t.database,
        t.user
    );
    let limit = std::time::Duration::from_secs(15);
    let work = async {
        let mut conn = crate::backfill::sql::Conn::open(shared.backends(), side).await?;
        let tables = crate::backfill::tables(shared.backends(), &mut conn, side).await?;
        Ok::<_, String>(tables.len())
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(n)) => Ok(format!("{what}: logged in, catalog read ({n} table(s))")),
        Ok(Err(e)) => {
            // The side and address are said once, in front.
            let e = e.strip_prefix(&format!("{side}: ")).unwrap_or(&e);
            let e = e.replace(&format!(" to backend {side} ({})", t.address()), "");
            Err(format!("{what}: {e}"))
        }
        Err(_) => Err(format!("{what}: no answer within {} s", limit.as_secs())),
    }
}
