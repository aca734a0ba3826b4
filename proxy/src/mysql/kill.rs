//! `KILL [QUERY | CONNECTION] <id>` across connections. Clients know
//! turnout's connection ids (from its handshake), not the backends' thread
//! ids, so turnout answers KILL itself: it finds the session by its id and
//! kills that session's backend thread on the authority it runs on.

use super::packet::{err_payload, ok_payload};
use super::session::{connect, own_caps};
use crate::server::Shared;
use sqlparser::ast::{KillType, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use tracing::info;
use turnout_control::Side;

/// A session's backend thread, as KILL needs it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub user: String,
    pub side: Side,
    pub thread: u32,
}

/// A KILL statement: whether only the running query goes, and the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub query_only: bool,
    pub id: u64,
}

/// The KILL in `sql`, if `sql` is one.
pub fn parse(sql: &str) -> Option<Kill> {
    let head = sql.trim_start();
    if !head.get(..4)?.eq_ignore_ascii_case("kill") {
        return None;
    }
    match Parser::parse_sql(&MySqlDialect {}, sql).ok()?.as_slice() {
        [Statement::Kill { modifier, id }] => Some(Kill {
            query_only: matches!(modifier, Some(KillType::Query)),
            id: *id,
        }),
        _ => None,
    }
}

/// Carries out `kill` for a client logged in as `user`; the OK or ERR
/// payload to answer it with.
pub async fn run(shared: &Shared, user: &str, kill: Kill) -> Vec<u8> {
    let target = u32::try_from(kill.id)
        .ok()
        .and_then(|id| shared.mysql_sessions.get(&id).map(|r| r.clone()));
    let Some(target) = target else {
        return err_payload(1094, "HY000", &format!("Unknown thread id: {}", kill.id));
    };
    if target.user != user {
        return err_payload(
            1095,
            "HY000",
            &format!("You are not owner of thread {}", kill.id),
        );
    }
    let what = if kill.query_only {
        "QUERY"
    } else {
        "CONNECTION"
    };
    let sql = format!("KILL {what} {}", target.thread);
    let done = async {
        let (mut conn, _) =
            connect(shared, shared.target(target.side), own_caps(), 45, None).await?;
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        conn.write(0, &p).await.map_err(|e| e.to_string())?;
        let (_, answer) = conn.read().await.map_err(|e| e.to_string())?;
        let _ = conn.write(0, &[0x01]).await;
        Ok::<_, String>(answer)
    };
    match done.await {
        Ok(answer) if answer.first() == Some(&0xFF) => answer,
        Ok(_) => {
            info!(id = kill.id, side = %target.side, thread = target.thread, what, "kill carried out");
            ok_payload()
        }
        Err(e) => err_payload(
            1105,
            "HY000",
            &format!("turnout: KILL could not reach {}: {e}", target.side),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_statements_parse_and_others_do_not() {
        assert_eq!(
            parse("KILL QUERY 12"),
            Some(Kill {
                query_only: true,
                id: 12
            })
        );
        assert_eq!(
            parse("  kill 7"),
            Some(Kill {
                query_only: false,
                id: 7
            })
        );
        assert_eq!(
            parse("kill connection 3").map(|k| k.query_only),
            Some(false)
        );
        assert_eq!(parse("SELECT 1"), None);
        assert_eq!(parse("kil"), None);
        assert_eq!(parse("killer"), None);
    }
}
