//! Where a statement goes in a mirroring phase: one decision, written once
//! for both protocol adapters, as a pure function of the statement's
//! classification and the session's context.
//!
//! Differences between the protocols are inputs, settled here on purpose:
//! - several statements in one text: PostgreSQL runs a multi-statement
//!   simple Query as one implicit transaction, so wrapping it in turnout's
//!   own transaction changes nothing and the mirror gets it in step
//!   (`Write`); MySQL commits each statement of a multi-statement text on
//!   its own, so wrapping would change what the client asked for: it runs
//!   as it is on each side (`Unwrapped`), like a text with transaction
//!   control in it on either protocol;
//! - rules `old` and `new` send a statement to that side alone on both
//!   protocols (`MirrorOnly` when that side is the mirror, `Authority` when
//!   it is the authority);
//! - without a mirror (`finalized`) everything but a refusal goes to the
//!   authority, on both.

use super::classify::{Classification, Kind, TxControl};
use turnout_config::{DdlPolicy, RuleAction};
use turnout_control::Side;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Reads and statements with no effect to copy.
    Authority,
    /// Session settings and transaction control other than COMMIT.
    Both,
    Commit,
    Write,
    /// Run on the authority, then on the mirror, as it is (not wrapped in a
    /// transaction of turnout's).
    Unwrapped,
    Reject,
    /// A `mirror.rules` entry sends it to the mirror's side alone.
    MirrorOnly,
    /// A write whose effect the authority's log carries to the mirror
    /// (`mirror.source = "log"`): the authority alone; its commit is marked
    /// and (sync mode) answered once the mirror applied it.
    Logged,
    /// DDL under `mirror.ddl = "both"` from the log: the authority runs it
    /// and the log carries it to the mirror at its place.
    LoggedDdl,
}

/// What the route depends on besides the statement.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub ddl: DdlPolicy,
    pub mirror_side: Side,
    /// The phase has a mirror (every phase but `finalized` and `passthrough`).
    pub mirroring: bool,
    /// A text of several statements runs as one transaction on the server
    /// (PostgreSQL's simple Query), so it may be wrapped.
    pub texts_are_atomic: bool,
    /// The authority's log feeds the mirror: writes are not mirrored by
    /// the session.
    pub log: bool,
}

impl Context {
    /// A session's context: the config's DDL policy, its mirror side, and
    /// its routing's phase.
    pub fn of(
        ddl: DdlPolicy,
        mirror_side: Side,
        phase: turnout_control::Phase,
        texts_are_atomic: bool,
    ) -> Context {
        Context {
            ddl,
            mirror_side,
            mirroring: phase.mirror().is_some(),
            texts_are_atomic,
            log: false,
        }
    }

    /// This context with the authority's log feeding the mirror (or not).
    pub fn with_log(mut self, log: bool) -> Context {
        self.log = log;
        self
    }
}

/// The route of `class` in `ctx`.
pub fn route(class: &Classification, ctx: &Context) -> Route {
    let statements = &class.statements;
    let kind = class.kind();
    let has_tx = statements
        .iter()
        .any(|s| matches!(s.kind, Kind::Transaction(_)));
    let several = statements.len() > 1;
    let route = if several && (has_tx || (kind == Kind::Write && !ctx.texts_are_atomic)) {
        Route::Unwrapped
    } else {
        match kind {
            Kind::Read | Kind::LockingRead | Kind::Other => Route::Authority,
            Kind::Session => Route::Both,
            Kind::Transaction(TxControl::Commit) => Route::Commit,
            Kind::Transaction(_) => Route::Both,
            Kind::Write => Route::Write,
            Kind::Ddl => match ctx.ddl {
                DdlPolicy::AuthorityOnly => Route::Authority,
                // Schema changes are not wrapped: some cannot run in a
                // transaction block (CREATE INDEX CONCURRENTLY), and they
                // take their own locks.
                DdlPolicy::Both => Route::Unwrapped,
                DdlPolicy::Reject => Route::Reject,
            },
        }
    };
    if !ctx.mirroring {
        return match route {
            Route::Reject => Route::Reject,
            _ => Route::Authority,
        };
    }
    let route = match class.rule {
        None => route,
        Some(RuleAction::NeverMirror) => Route::Authority,
        Some(RuleAction::Old) if ctx.mirror_side == Side::Old => Route::MirrorOnly,
        Some(RuleAction::New) if ctx.mirror_side == Side::New => Route::MirrorOnly,
        Some(RuleAction::Old | RuleAction::New) => Route::Authority,
        Some(RuleAction::AlwaysMirror) => match route {
            Route::Authority | Route::Reject if kind == Kind::Ddl => Route::Unwrapped,
            Route::Authority => Route::Write,
            other => other,
        },
    };
    if !ctx.log {
        return route;
    }
    // The log carries every change the authority commits: the session
    // mirrors no write itself.
    match route {
        Route::Write | Route::Unwrapped if kind == Kind::Ddl => Route::LoggedDdl,
        Route::Write | Route::Unwrapped => Route::Logged,
        other => other,
    }
}

/// The route of several units run as one (a PostgreSQL extended-protocol
/// batch): the most demanding of theirs; a COMMIT among other units runs
/// them as they are.
pub fn combine(routes: &[Route]) -> Route {
    for r in [
        Route::Reject,
        Route::MirrorOnly,
        Route::Unwrapped,
        Route::Commit,
        Route::Write,
        Route::LoggedDdl,
        Route::Logged,
        Route::Both,
    ] {
        if routes.contains(&r) {
            return if r == Route::Commit && routes.len() > 1 {
                Route::Unwrapped
            } else {
                r
            };
        }
    }
    Route::Authority
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::classify::{Classifier, SqlDialect};

    fn classify(sql: &str, dialect: SqlDialect, rule: Option<RuleAction>) -> Classification {
        let c = Classifier::new(dialect, 64);
        let mut class = (*c.classify(sql)).clone();
        class.rule = rule;
        class
    }

    /// The route table: every kind of statement, each DDL policy, rules,
    /// several statements, a phase without a mirror, for both protocols.
    #[test]
    fn the_route_table() {
        use Route::*;
        let pg = |ddl, mirroring, side| Context {
            ddl,
            mirror_side: side,
            mirroring,
            texts_are_atomic: true,
            log: false,
        };
        let my = |ddl, mirroring, side| Context {
            texts_are_atomic: false,
            ..pg(ddl, mirroring, side)
        };
        let a = DdlPolicy::AuthorityOnly;
        let n = Side::New;
        // (sql, rule, ddl policy, mirroring, mirror side, PostgreSQL's
        // route, MySQL's route)
        type Case = (
            &'static str,
            Option<RuleAction>,
            DdlPolicy,
            bool,
            Side,
            Route,
            Route,
        );
        let (o, nm, am) = (Side::Old, RuleAction::NeverMirror, RuleAction::AlwaysMirror);
        let (both, reject) = (DdlPolicy::Both, DdlPolicy::Reject);
        #[rustfmt::skip]
        let table: &[Case] = &[
            ("SELECT 1", None, a, true, n, Authority, Authority),
            ("SELECT * FROM t FOR UPDATE", None, a, true, n, Authority, Authority),
            ("SET search_path = x", None, a, true, n, Both, Both),
            ("BEGIN", None, a, true, n, Both, Both),
            ("ROLLBACK", None, a, true, n, Both, Both),
            ("SAVEPOINT s", None, a, true, n, Both, Both),
            ("COMMIT", None, a, true, n, Commit, Commit),
            ("INSERT INTO t VALUES (1)", None, a, true, n, Write, Write),
            ("UPDATE t SET v = 1 WHERE id = 2", None, a, true, n, Write, Write),
            ("DELETE FROM t WHERE id = 2", None, a, true, n, Write, Write),
            // Several statements: atomic on PostgreSQL, one by one on MySQL.
            ("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)", None, a, true, n, Write, Unwrapped),
            ("BEGIN; INSERT INTO t VALUES (1); COMMIT", None, a, true, n, Unwrapped, Unwrapped),
            ("SELECT 1; SELECT 2", None, a, true, n, Authority, Authority),
            // DDL by policy.
            ("CREATE TABLE x (id int)", None, a, true, n, Authority, Authority),
            ("CREATE TABLE x (id int)", None, both, true, n, Unwrapped, Unwrapped),
            ("CREATE TABLE x (id int)", None, reject, true, n, Reject, Reject),
            // Rules.
            ("INSERT INTO t VALUES (1)", Some(nm), a, true, n, Authority, Authority),
            ("SELECT f(1)", Some(am), a, true, n, Write, Write),
            ("CREATE TABLE x (id int)", Some(am), a, true, n, Unwrapped, Unwrapped),
            ("CREATE TABLE x (id int)", Some(am), reject, true, n, Unwrapped, Unwrapped),
            ("SELECT * FROM v2", Some(RuleAction::New), a, true, n, MirrorOnly, MirrorOnly),
            ("SELECT * FROM v1", Some(RuleAction::Old), a, true, n, Authority, Authority),
            // After the writes flip, old is the mirror.
            ("SELECT * FROM v1", Some(RuleAction::Old), a, true, o, MirrorOnly, MirrorOnly),
            ("SELECT * FROM v2", Some(RuleAction::New), a, true, o, Authority, Authority),
            // No mirror (finalized): the authority alone, refusals kept.
            ("INSERT INTO t VALUES (1)", None, a, false, o, Authority, Authority),
            ("COMMIT", None, a, false, o, Authority, Authority),
            ("SELECT * FROM v1", Some(RuleAction::Old), a, false, o, Authority, Authority),
            ("CREATE TABLE x (id int)", None, reject, false, o, Reject, Reject),
        ];
        for &(sql, rule, ddl, mirroring, side, on_pg, on_my) in table {
            let class = classify(sql, SqlDialect::Postgres, rule);
            assert_eq!(
                route(&class, &pg(ddl, mirroring, side)),
                on_pg,
                "PostgreSQL: {sql} {rule:?} {ddl:?} mirroring={mirroring} mirror={side}"
            );
            let class = classify(sql, SqlDialect::Mysql, rule);
            assert_eq!(
                route(&class, &my(ddl, mirroring, side)),
                on_my,
                "MySQL: {sql} {rule:?} {ddl:?} mirroring={mirroring} mirror={side}"
            );
        }
    }

    /// From the log, no write is mirrored by the session; DDL under
    /// `both` travels in the log; the rest is routed as before.
    #[test]
    fn the_log_carries_writes_and_ddl() {
        use Route::*;
        let ctx = |ddl| Context {
            ddl,
            mirror_side: Side::New,
            mirroring: true,
            texts_are_atomic: true,
            log: true,
        };
        let a = DdlPolicy::AuthorityOnly;
        for (sql, ddl, expected) in [
            ("INSERT INTO t VALUES (1)", a, Logged),
            ("BEGIN; INSERT INTO t VALUES (1); COMMIT", a, Logged),
            ("SELECT f(1)", a, Authority),
            ("COMMIT", a, Commit),
            ("BEGIN", a, Both),
            ("SET x = 1", a, Both),
            ("CREATE TABLE x (id int)", a, Authority),
            ("CREATE TABLE x (id int)", DdlPolicy::Both, LoggedDdl),
            ("CREATE TABLE x (id int)", DdlPolicy::Reject, Reject),
        ] {
            let class = classify(sql, SqlDialect::Postgres, None);
            assert_eq!(route(&class, &ctx(ddl)), expected, "{sql} {ddl:?}");
        }
        let class = classify(
            "SELECT f(1)",
            SqlDialect::Postgres,
            Some(RuleAction::AlwaysMirror),
        );
        assert_eq!(route(&class, &ctx(a)), Logged);
        // No mirror: the authority alone whatever the source.
        let class = classify("INSERT INTO t VALUES (1)", SqlDialect::Postgres, None);
        let none = Context {
            mirroring: false,
            ..ctx(a)
        };
        assert_eq!(route(&class, &none), Authority);
        assert_eq!(combine(&[Both, Logged]), Logged);
    }

    #[test]
    fn a_batch_takes_its_most_demanding_route() {
        use Route::*;
        assert_eq!(combine(&[Authority, Both]), Both);
        assert_eq!(combine(&[Both, Write, Authority]), Write);
        assert_eq!(combine(&[Commit]), Commit);
        assert_eq!(combine(&[Write, Commit]), Unwrapped);
        assert_eq!(combine(&[Write, MirrorOnly]), MirrorOnly);
        assert_eq!(combine(&[Write, Reject]), Reject);
        assert_eq!(combine(&[]), Authority);
    }
}
