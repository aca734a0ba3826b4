//! What the mirror runs for a batch of extended-protocol messages: the
//! client's messages with statements translated for the mirror's side,
//! pinned to the authority's values, or turned into row images; and the
//! Parse messages turnout adds.

use super::extended::{bind, close, parse};
use super::{cstr, MirrorSession, Msg};
use crate::engine::pin::{pin_transaction_time, PinError};
use bytes::{Bytes, BytesMut};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

pub(super) enum Part {
    Raw(Bytes),
    PinnedParse { sql: Arc<str>, types: Bytes },
}

pub(super) struct MirrorPlan {
    parts: Vec<Part>,
    prepared: HashSet<String>,
    /// For each Parse sent, in order: whether turnout added it (its
    /// ParseComplete is not the client's).
    pub(super) parses: VecDeque<bool>,
    /// What each row-image apply in it must find on the mirror, in order.
    pub(super) expects: Vec<crate::engine::row_image::Expect>,
    /// Apply statements it prepares on the mirror (name, text).
    pub(super) applies: Vec<(String, Arc<str>)>,
}

impl MirrorPlan {
    pub(super) fn build(&self, time: Option<&str>) -> Result<Bytes, PinError> {
        let mut out = BytesMut::new();
        for part in &self.parts {
            match part {
                Part::Raw(b) => out.extend_from_slice(b),
                Part::PinnedParse { sql, types } => {
                    let text = match time {
                        Some(t) => pin_transaction_time(sql, t)?.0,
                        None => sql.to_string(),
                    };
                    out.extend_from_slice(&parse("", &text, types));
                }
            }
        }
        Ok(out.freeze())
    }

    pub(super) fn prepares_named(&self) -> impl Iterator<Item = String> + '_ {
        self.prepared.iter().cloned()
    }
}

impl MirrorSession<'_> {
    /// Works out the mirror's messages: Parse lazily for statements the
    /// mirror lacks, Describe dropped unless `answers` (only the side whose
    /// answers the client gets describes), statements that need the
    /// authority's time re-parsed unnamed.
    pub(super) fn mirror_plan(&self, batch: &[Msg], answers: bool) -> MirrorPlan {
        let mut parts = Vec::new();
        let mut parsed_here: HashSet<String> = HashSet::new();
        let mut prepared = self.mirror_prepared.clone();
        let mut parses = VecDeque::new();
        let mut expects = Vec::new();
        let mut applies = Vec::new();
        for m in batch {
            let f = &m.frame;
            let body = f.body();
            if let Some(imaged) = m.imaged() {
                // Row images: the mirror applies the authority's rows; the
                // statement itself only where they cannot be applied by key
                // (then in the form the authority ran, so the two sides'
                // statements of one name stay alike across a role swap).
                let table = self.image_route(&imaged.target);
                match f.tag {
                    b'P' => {
                        let name = cstr(body).map(|(n, _)| n.to_string()).unwrap_or_default();
                        if !name.is_empty() && prepared.remove(&name) {
                            parts.push(Part::Raw(close(b'S', &name)));
                        }
                        parsed_here.remove(&name);
                        continue;
                    }
                    b'B' if table.is_none() => {
                        let Some((portal, rest)) = cstr(body) else {
                            continue;
                        };
                        let Some((stmt, _)) = cstr(rest) else {
                            continue;
                        };
                        let known = parsed_here.contains(stmt)
                            || (!stmt.is_empty() && prepared.contains(stmt));
                        if !known {
                            parses.push_back(true);
                            let p = m.stmt.as_ref().map(|p| p.types.clone()).unwrap_or_default();
                            parts.push(Part::Raw(parse(stmt, &imaged.capture, &p)));
                            parsed_here.insert(stmt.to_string());
                            if !stmt.is_empty() {
                                prepared.insert(stmt.to_string());
                            }
                        }
                        let _ = portal;
                        parts.push(Part::Raw(m.for_authority().clone()));
                        continue;
                    }
                    b'B' => continue,
                    b'E' => {
                        match table {
                            None => parts.push(Part::Raw(m.for_authority().clone())),
                            Some(_) if m.images.is_empty() => {}
                            Some((t, check)) => {
                                let target = &imaged.target;
                                let Ok(unit) = self.apply_unit(
                                    target.op,
                                    (&t, &check),
                                    &m.images,
                                    &mut applies,
                                ) else {
                                    // Recorded before the plan was made.
                                    continue;
                                };
                                parts.push(Part::Raw(unit));
                                // The mirror's unnamed portal (and, for a
                                // text parsed each time, its unnamed
                                // statement) is turnout's now.
                                parsed_here.remove("");
                                expects.push(crate::engine::row_image::Expect {
                                    op: target.op,
                                    rows: m.images.len(),
                                    table: target.table.clone(),
                                    fingerprint: m
                                        .stmt
                                        .as_ref()
                                        .map(|p| p.class.fingerprint.clone())
                                        .unwrap_or_default(),
                                });
                            }
                        }
                        continue;
                    }
                    b'D' => continue,
                    _ => {}
                }
            }
            match f.tag {
                b'P' => {
                    let Some((name, rest)) = cstr(body) else {
                        continue;
                    };
                    let Some((sql, types)) = cstr(rest) else {
                        continue;
                    };
                    let class = self.shared.classifier.classify(sql);
                    if class.nondeterministic() {
                        // Parsed at its Bind, with the time pinned.
                        continue;
                    }
                    if !answers && !name.is_empty() && prepared.contains(name) {
                        // The mirror still has an older statement of this
                        // name: the client closed it where the mirror was
                        // not sent the Close.
                        parts.push(Part::Raw(close(b'S', name)));
                    }
                    parsed_here.insert(name.to_string());
                    parses.push_back(false);
                    let mapped = self.mirror_sql(sql);
                    if mapped == sql {
                        parts.push(Part::Raw(f.raw.clone()));
                    } else {
                        parts.push(Part::Raw(parse(name, &mapped, types)));
                    }
                    if !name.is_empty() {
                        prepared.insert(name.to_string());
                    }
                }
                b'B' => {
                    let Some((portal, rest)) = cstr(body) else {
                        continue;
                    };
                    let Some((stmt, tail)) = cstr(rest) else {
                        continue;
                    };
                    let Some(p) = m.stmt.as_ref() else {
                        parts.push(Part::Raw(f.raw.clone()));
                        continue;
                    };
                    if p.class.nondeterministic() {
                        parts.push(Part::PinnedParse {
                            sql: self.mirror_sql(&p.sql).into(),
                            types: p.types.clone(),
                        });
                        parses.push_back(true);
                        parts.push(Part::Raw(bind(portal, "", tail)));
                        // The mirror's unnamed statement is this one now.
                        parsed_here.remove("");
                        continue;
                    }
                    let known =
                        parsed_here.contains(stmt) || (!stmt.is_empty() && prepared.contains(stmt));
                    if !known {
                        parses.push_back(true);
                        parts.push(Part::Raw(parse(stmt, &self.mirror_sql(&p.sql), &p.types)));
                        parsed_here.insert(stmt.to_string());
                        if !stmt.is_empty() {
                            prepared.insert(stmt.to_string());
                        }
                    }
                    parts.push(Part::Raw(f.raw.clone()));
                }
                b'C' => {
                    let named = body.get(1..).and_then(cstr).map(|(n, _)| n.to_string());
                    match (body.first(), named) {
                        (Some(b'S'), Some(n)) if prepared.contains(&n) => {
                            prepared.remove(&n);
                            parts.push(Part::Raw(f.raw.clone()));
                        }
                        (Some(b'S'), _) => {}
                        _ => parts.push(Part::Raw(f.raw.clone())),
                    }
                }
                b'D' if answers => parts.push(Part::Raw(f.raw.clone())),
                b'D' | b'H' => {}
                _ => parts.push(Part::Raw(f.raw.clone())),
            }
        }
        MirrorPlan {
            parts,
            prepared,
            parses,
            expects,
            applies,
        }
    }
}
