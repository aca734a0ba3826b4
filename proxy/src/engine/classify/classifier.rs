//! The classifier: classifications cached per statement shape, the
//! routing rules of `mirror.rules`, and shapes proven to write.

use super::{
    classify_text, dialect_of, executable_comments, Classification, Kind, SqlDialect,
    StatementClass,
};
use crate::engine::cache_key::cache_key;
use crate::engine::fingerprint::fingerprint;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use turnout_config::{Rule, RuleAction};

/// Classifies statements, remembering each statement shape's answer.
pub struct Classifier {
    dialect: SqlDialect,
    pub(super) cache: DashMap<Box<[u8]>, Arc<Classification>>,
    capacity: usize,
    /// Rule actions by fingerprint (replaced whole on reload).
    rules: ArcSwap<HashMap<String, RuleAction>>,
    /// Shapes the servers' answers proved to write although they were
    /// classified otherwise ([`Classifier::mark_write`]).
    proven_writes: DashMap<String, ()>,
}

impl Classifier {
    /// `capacity` bounds the cache: past it, an eighth of the entries make
    /// room (a flood of new shapes costs parsing, never a wrong answer).
    pub fn new(dialect: SqlDialect, capacity: usize) -> Self {
        Classifier {
            dialect,
            cache: DashMap::new(),
            capacity: capacity.max(1),
            rules: ArcSwap::from_pointee(HashMap::new()),
            proven_writes: DashMap::new(),
        }
    }

    /// Adds routing overrides. A rule's text is fingerprinted, so it may be
    /// written as the fingerprint or as any statement of that shape.
    pub fn with_rules(self, rules: &[Rule]) -> Self {
        self.set_rules(rules);
        self
    }

    /// Replaces the routing overrides; cached answers are dropped so every
    /// statement is looked up again.
    pub fn set_rules(&self, rules: &[Rule]) {
        let d = dialect_of(self.dialect);
        let map = rules
            .iter()
            .map(|r| (fingerprint(d, &r.fingerprint), r.action))
            .collect();
        self.rules.store(Arc::new(map));
        self.cache.clear();
    }

    /// The classification of `sql`, parsed once per statement shape: texts
    /// that differ only in literal values share one answer. The shape is read
    /// by the parser's own tokenizer ([`cache_key`]), so no text can reuse
    /// the answer of a text the parser reads differently.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        let text = executable_comments(self.dialect, sql);
        let d = dialect_of(self.dialect);
        let Some(key) = cache_key(d, &text) else {
            return Arc::new(self.with_rule(classify_text(self.dialect, d, &text)));
        };
        if let Some(hit) = self.cache.get(key.as_slice()) {
            return hit.clone();
        }
        let answer = Arc::new(self.with_rule(classify_text(self.dialect, d, &text)));
        if self.cache.len() >= self.capacity {
            self.make_room();
        }
        self.cache.insert(key.into_boxed_slice(), answer.clone());
        answer
    }

    /// [`Self::classify`] for a session whose server may end strings where
    /// the parser does not (`unsure`: PostgreSQL after a change of
    /// `standard_conforming_strings`, MySQL after a change of `sql_mode`,
    /// which may turn backslash escapes off): a text with a backslash is then
    /// a write whatever the parser read in it, so it is mirrored (the mirror
    /// has the same setting, replayed, and reads it as the authority does).
    pub fn classify_in_session(&self, sql: &str, unsure: bool) -> Arc<Classification> {
        let answer = self.classify(sql);
        if !unsure || !sql.contains('\\') || matches!(answer.kind(), Kind::Write | Kind::Ddl) {
            return answer;
        }
        let mut written = (*answer).clone();
        for s in &mut written.statements {
            if matches!(s.kind, Kind::Read | Kind::LockingRead | Kind::Other) {
                s.kind = Kind::Write;
            }
        }
        if written.statements.is_empty() {
            written.statements.push(StatementClass {
                kind: Kind::Write,
                unsafe_reason: None,
                nondeterministic: false,
            });
        }
        Arc::new(written)
    }

    /// Whether `sql` may change how the server ends strings for the rest of
    /// the session (see [`Self::classify_in_session`]).
    pub fn changes_lexing(&self, sql: &str) -> bool {
        // Each name has an underscore: only around those is it looked for
        // (a statement has few), at the offset of the name's own.
        let words: &[(&[u8], usize)] = match self.dialect {
            SqlDialect::Postgres => &[(b"standard_conforming_strings", 8), (b"backslash_quote", 9)],
            SqlDialect::Mysql => &[(b"sql_mode", 3)],
        };
        let b = sql.as_bytes();
        b.iter()
            .enumerate()
            .filter(|(_, &c)| c == b'_')
            .any(|(at, _)| {
                words.iter().any(|(w, offset)| {
                    at.checked_sub(*offset)
                        .and_then(|start| b.get(start..start + w.len()))
                        .is_some_and(|x| x.eq_ignore_ascii_case(w))
                })
            })
    }

    fn with_rule(&self, mut answer: Classification) -> Classification {
        answer.rule = self.rules.load().get(&answer.fingerprint).copied();
        if self.proven_writes.contains_key(&answer.fingerprint) {
            for s in &mut answer.statements {
                if matches!(s.kind, Kind::Read | Kind::LockingRead | Kind::Other) {
                    s.kind = Kind::Write;
                }
            }
        }
        answer
    }

    /// A server answered a statement of this fingerprint with written rows
    /// although it was not classified as a write: from now on every
    /// statement of the shape is a write (mirrored), whatever the parser
    /// makes of it. Bounded: past the cache's capacity the oldest proofs
    /// are not kept apart (the shapes are then classified afresh).
    pub fn mark_write(&self, fingerprint: &str) {
        if self.proven_writes.len() >= self.capacity {
            self.proven_writes.clear();
        }
        self.proven_writes.insert(fingerprint.to_string(), ());
        self.cache.retain(|_, v| v.fingerprint != fingerprint);
    }

    /// Drops an eighth of the cached shapes (at least one).
    fn make_room(&self) {
        let drop = (self.capacity / 8).max(1);
        let victims: Vec<Box<[u8]>> = self
            .cache
            .iter()
            .take(drop)
            .map(|e| e.key().clone())
            .collect();
        for key in victims {
            self.cache.remove(&key);
        }
    }

    /// How many shapes are cached (for tests).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}
