//! `KILL [QUERY | CONNECTION] <id>` across connections. Clients know
//! turnout's connection ids (from its handshake), not the backends' thread
//! ids, so turnout answers KILL itself: it finds the session by its id and
//! kills that session's backend thread on the authority it runs on.

use super::packet::{err_payload, ok_payload};
use super::session::{connect, own_caps};
use crate::shared::Shared;
use sqlparser::ast::{KillType, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use tracing::info;

pub use crate::shared::Registered;

/// A KILL statement: whether only the running query goes, and the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub query_only: bool,
    pub id: u64,
}

/// The KILL in `sql`: `None` when there is none; `Some(Ok)` for the one
/// spelling turnout carries out (`KILL [QUERY | CONNECTION] <id>`, alone);
/// `Some(Err)` with the message to refuse any other with. The text is read
/// as the server reads it (comments, `/*! ... */` and `/*M! ... */`, which
/// the server runs, several statements), so no spelling reaches a backend,
/// where turnout's shared role could kill any session's thread; nor does a
/// KILL inside `PREPARE ... FROM '...'` or `EXECUTE IMMEDIATE '...'`.
pub fn parse(sql: &str) -> Option<Result<Kill, String>> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    if !may_be_kill(sql.as_bytes()) {
        return None;
    }
    let alone = "turnout: KILL must be sent alone, as KILL [QUERY | CONNECTION] <id> with the id turnout gave the connection";
    let text = sql.replace("/*M!", "/*!");
    let Ok(tokens) = Tokenizer::new(&MySqlDialect {}, &text).tokenize() else {
        // Unreadable here: refused if it might be a KILL at all.
        return text
            .to_ascii_lowercase()
            .contains("kill")
            .then(|| Err(alone.to_string()));
    };
    let mut statements: Vec<Vec<Token>> = vec![Vec::new()];
    for t in tokens
        .into_iter()
        .filter(|t| !crate::engine::cache_key::is_layout(t))
    {
        match t {
            Token::SemiColon => statements.push(Vec::new()),
            t => statements.last_mut().expect("one at least").push(t),
        }
    }
    statements.retain(|s| !s.is_empty());
    let first_word = |s: &[Token]| match s.first() {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
        _ => String::new(),
    };
    let kills = statements
        .iter()
        .filter(|s| first_word(s) == "kill")
        .count();
    let hidden = statements.iter().any(|s| {
        matches!(first_word(s).as_str(), "prepare" | "execute")
            && s.iter().any(|t| match t {
                Token::SingleQuotedString(v) | Token::DoubleQuotedString(v) => {
                    v.to_ascii_lowercase().contains("kill")
                }
                _ => false,
            })
    });
    if hidden {
        return Some(Err(
            "turnout: KILL cannot be prepared through turnout; send it alone, as KILL [QUERY | CONNECTION] <id>".into(),
        ));
    }
    if kills == 0 {
        return None;
    }
    if kills > 1 || statements.len() > 1 {
        return Some(Err(alone.into()));
    }
    match Parser::parse_sql(&MySqlDialect {}, &text).ok().as_deref() {
        Some([Statement::Kill { modifier, id }])
            if !matches!(modifier, Some(KillType::Mutation)) =>
        {
            Some(Ok(Kill {
                query_only: matches!(modifier, Some(KillType::Query)),
                id: *id,
            }))
        }
        _ => Some(Err(alone.into())),
    }
}

/// Whether `text` could be read as a KILL, or as one hidden in a string
/// [`parse`] refuses: only when its bytes, backslashes left out, hold
/// `kill` in any case. A KILL word needs those letters in the text, and so
/// does a string's value that holds them: no escape of the server's makes
/// a letter out of another character (`\\k` is `k`, `\\n` a newline).
/// Every statement without them (nearly all) skips the tokenizer.
pub fn may_be_kill(text: &[u8]) -> bool {
    const WORD: &[u8; 4] = b"kill";
    let mut matched = 0;
    for &b in text {
        if b == b'\\' {
            continue;
        }
        let b = b.to_ascii_lowercase();
        matched = if b == WORD[matched] {
            matched + 1
        } else if b == WORD[0] {
            1
        } else {
            0
        };
        if matched == WORD.len() {
            return true;
        }
    }
    false
}

/// The ERR payload for a COM_STMT_PREPARE of a KILL (in any spelling): the
/// id it would take at execution is a backend's, never checked.
pub fn prepare_refused() -> Vec<u8> {
    err_payload(
        1235,
        "42000",
        "turnout: KILL cannot be prepared through turnout; send it alone, as KILL [QUERY | CONNECTION] <id>",
    )
}

/// Carries out `kill` for a client logged in as `user` (refusing a
/// spelling [`parse`] refused); the OK or ERR payload to answer it with.
pub async fn run(shared: &Shared, user: &str, kill: Result<Kill, String>) -> Vec<u8> {
    let kill = match kill {
        Ok(k) => k,
        Err(refused) => return err_payload(1235, "42000", &refused),
    };
    let target = u32::try_from(kill.id)
        .ok()
        .and_then(|id| shared.mysql.sessions.get(&id).map(|r| r.clone()));
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
        // As the session's own backend role: the backend's check of who may
        // kill whom applies as well.
        let login = shared.session_target(target.side, &target.user);
        let (mut conn, _) = connect(shared, &login, own_caps(), 45, None).await?;
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

    /// The tokenizer's answer for `text`, without the byte check before it.
    fn parse_tokenized(text: &str) -> bool {
        let text = &text.replace("/*M!", "/*!");
        let tokenized = sqlparser::tokenizer::Tokenizer::new(&MySqlDialect {}, text)
            .tokenize()
            .map(|tokens| {
                tokens.iter().any(|t| match t {
                    sqlparser::tokenizer::Token::Word(w) => w.value.eq_ignore_ascii_case("kill"),
                    sqlparser::tokenizer::Token::SingleQuotedString(v)
                    | sqlparser::tokenizer::Token::DoubleQuotedString(v) => {
                        v.to_ascii_lowercase().contains("kill")
                    }
                    _ => false,
                })
            });
        tokenized.unwrap_or_else(|_| text.to_ascii_lowercase().contains("kill"))
    }

    #[test]
    fn the_byte_check_lets_every_spelling_of_a_kill_through() {
        for text in [
            "KILL 5",
            "kIlL QUERY 7",
            "/*!KILL*/ 3",
            "/*M!KILL 3*/",
            "SELECT 1; KILL 2",
            "PREPARE s FROM 'ki\\ll 5'",
            "PREPARE s FROM '\\k\\i\\l\\l 5'",
            "EXECUTE IMMEDIATE \"KiLL 4\"",
            "PREPARE s FROM 'KI\\LL 9'",
        ] {
            assert!(parse_tokenized(text), "{text}");
            assert!(may_be_kill(text.as_bytes()), "{text}");
        }
        assert!(may_be_kill(b"kkill 1") && may_be_kill(b"x killl"));
        for text in [
            "SELECT c FROM sbtest1 WHERE id=5",
            "UPDATE t SET k = k + 1 WHERE id = 3",
            "SELECT 'kil' 'l'",
            "KI/**/LL 3",
            "SELECT skil, l FROM t",
        ] {
            assert!(!may_be_kill(text.as_bytes()), "{text}");
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn kill_statements_parse_and_others_do_not() {
        assert_eq!(
            parse("KILL QUERY 12"),
            Some(Ok(Kill {
                query_only: true,
                id: 12
            }))
        );
        assert_eq!(
            parse("  kill 7"),
            Some(Ok(Kill {
                query_only: false,
                id: 7
            }))
        );
        assert_eq!(
            parse("kill connection 3").map(|k| k.map(|k| k.query_only)),
            Some(Ok(false))
        );
        // Read as the server reads them: turnout carries them out by its
        // own ids (never forwarded with a backend's).
        for sql in [
            "/* x */ KILL QUERY 5",
            "/*! KILL 5 */",
            "/*!100000 KILL QUERY 5 */",
            "/*M!100000 KILL 5 */",
        ] {
            assert_eq!(parse(sql).map(|k| k.map(|k| k.id)), Some(Ok(5)), "{sql}");
        }
        assert_eq!(parse("SELECT 1"), None);
        assert_eq!(parse("kil"), None);
        assert_eq!(parse("killer"), None);
        assert_eq!(parse("SELECT 'kill 5'"), None);
    }

    #[test]
    fn every_other_spelling_of_kill_is_refused() {
        for sql in [
            "SELECT 1; KILL 5",
            "KILL 5; KILL 6",
            "KILL HARD QUERY 5",
            "KILL USER app",
            "KILL QUERY ID 5",
            "PREPARE s FROM 'KILL 5'",
            "EXECUTE IMMEDIATE 'kill query 5'",
            "kill 'open",
        ] {
            assert!(
                matches!(parse(sql), Some(Err(_))),
                "{sql}: {:?}",
                parse(sql)
            );
        }
    }
}
