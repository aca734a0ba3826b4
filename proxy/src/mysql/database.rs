//! MySQL/MariaDB: the client's database, per side. Clients write for old;
//! when old and new are databases of different names (`app` and `app_v2`,
//! often on one server), each side gets its own: the handshake's database,
//! `USE`, COM_INIT_DB and database-qualified names (`app.t`) are mapped. A
//! database that is neither side's (nor a system schema) is refused.

use sqlparser::ast::{ObjectNamePart, VisitMut, VisitorMut};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;
use turnout_control::Side;

/// Schemas every server has: left as they are.
const SYSTEM: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

use super::packet::command::{COM_INIT_DB, COM_QUERY, COM_STMT_PREPARE};

/// The two sides' configured databases.
#[derive(Debug, Clone)]
pub struct Databases {
    pub old: String,
    pub new: String,
}

impl Databases {
    fn name(&self, side: Side) -> &str {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// Both sides have the same name: nothing is mapped.
    pub fn same(&self) -> bool {
        self.old.eq_ignore_ascii_case(&self.new)
    }

    /// `client`'s database (as a client names it) on `side`. `Err`: why it
    /// is refused.
    pub fn for_side(&self, side: Side, client: &str) -> Result<String, String> {
        if self.same() || SYSTEM.iter().any(|s| s.eq_ignore_ascii_case(client)) {
            return Ok(client.to_string());
        }
        if client.eq_ignore_ascii_case(&self.old) || client.eq_ignore_ascii_case(&self.new) {
            return Ok(self.name(side).to_string());
        }
        Err(format!(
            "turnout: unknown database '{client}': this proxy serves '{}' (old; '{}' on new)",
            self.old, self.new
        ))
    }

    /// `sql` (a client's, written for old) for `side`: `USE` and names
    /// qualified with old's database mapped. `Ok(None)`: unchanged.
    pub fn sql_for(&self, side: Side, sql: &str) -> Result<Option<String>, String> {
        if self.same() {
            return Ok(None);
        }
        let trimmed = sql.trim_start();
        if trimmed.len() > 4 && trimmed[..4].eq_ignore_ascii_case("use ") {
            let db = trimmed[4..]
                .trim()
                .trim_end_matches(';')
                .trim()
                .trim_matches('`');
            let mapped = self.for_side(side, db)?;
            return Ok(Some(format!("USE `{}`", mapped.replace('`', "``"))));
        }
        if side == Side::Old {
            return Ok(None);
        }
        let lower = sql.to_ascii_lowercase();
        let old = self.old.to_ascii_lowercase();
        if !lower.contains(&format!("{old}.")) && !lower.contains(&format!("`{old}`.")) {
            return Ok(None);
        }
        let mut statements = Parser::parse_sql(&MySqlDialect {}, sql).map_err(|e| {
            format!(
                "a statement naming database {} could not be parsed to map it for new: {e}",
                self.old
            )
        })?;
        let mut renamer = Renamer {
            from: &self.old,
            to: &self.new,
            changed: false,
        };
        let _ = statements.visit(&mut renamer);
        if !renamer.changed {
            return Ok(None);
        }
        Ok(Some(
            statements
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }

    /// A client's command packet for `side`: COM_INIT_DB, a query or a
    /// prepare mapped. `Ok(None)`: unchanged.
    pub fn packet_for(&self, side: Side, packet: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if self.same() {
            return Ok(None);
        }
        let Some((&command, rest)) = packet.split_first() else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(rest);
        let mapped = match command {
            COM_INIT_DB => Some(self.for_side(side, &text)?),
            COM_QUERY | COM_STMT_PREPARE => self.sql_for(side, &text)?,
            _ => None,
        };
        Ok(mapped.map(|m| {
            let mut out = vec![command];
            out.extend_from_slice(m.as_bytes());
            out
        }))
    }
}

struct Renamer<'a> {
    from: &'a str,
    to: &'a str,
    changed: bool,
}

impl VisitorMut for Renamer<'_> {
    type Break = ();

    fn pre_visit_relation(
        &mut self,
        name: &mut sqlparser::ast::ObjectName,
    ) -> ControlFlow<Self::Break> {
        let n = name.0.len();
        if n >= 2 {
            if let ObjectNamePart::Identifier(db) = &mut name.0[n - 2] {
                if db.value.eq_ignore_ascii_case(self.from) {
                    db.value = self.to.to_string();
                    self.changed = true;
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Each side's configured database, for mapping the client's: MySQL's
/// view of the shared backends.
impl crate::shared::Shared {
    pub fn databases(&self) -> Databases {
        Databases {
            old: self.target(Side::Old).database.clone(),
            new: self.target(Side::New).database.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbs() -> Databases {
        Databases {
            old: "app".into(),
            new: "app_v2".into(),
        }
    }

    #[test]
    fn each_side_gets_its_own_database() {
        let d = dbs();
        assert_eq!(d.for_side(Side::New, "app").unwrap(), "app_v2");
        assert_eq!(d.for_side(Side::Old, "APP").unwrap(), "app");
        assert_eq!(
            d.for_side(Side::New, "information_schema").unwrap(),
            "information_schema"
        );
        assert!(d
            .for_side(Side::New, "other")
            .unwrap_err()
            .contains("unknown database 'other'"));
        assert_eq!(
            d.sql_for(Side::New, "use `app`;").unwrap().as_deref(),
            Some("USE `app_v2`")
        );
        let mapped = d
            .sql_for(
                Side::New,
                "INSERT INTO app.t SELECT * FROM `app`.u JOIN v ON 1",
            )
            .unwrap()
            .unwrap();
        assert!(
            mapped.contains("app_v2.t") && mapped.contains("`app_v2`.u"),
            "{mapped}"
        );
        assert_eq!(
            d.sql_for(Side::Old, "INSERT INTO app.t VALUES (1)")
                .unwrap(),
            None
        );
        assert_eq!(d.sql_for(Side::New, "SELECT 'app.x'").unwrap(), None);
        let init = d.packet_for(Side::New, b"\x02app").unwrap().unwrap();
        assert_eq!(init, b"\x02app_v2");
    }
}
