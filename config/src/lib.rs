//! turnout's configuration: the TOML file's types, their defaults, and validation
//! with errors that name the offending key.
//!
//! Parsing rejects unknown keys; validation collects every problem at once so an
//! operator fixes the file in one pass.

mod fleet;
mod secret;
mod types;
mod validate;

pub use fleet::{Fleet, FleetStore};
pub use secret::Secret;
pub use types::*;
pub use validate::{ConfigError, ConfigErrors};

use std::path::Path;

/// Parses and validates a config file's text. `origin` names the file in
/// errors. Every unknown key is reported (with the validation problems of
/// the rest), not only the first.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let de = toml::Deserializer::new(text);
    let first = serde_path_to_error::deserialize::<_, Config>(de);
    let e = match first {
        Ok(config) => {
            return validate::validate(&config)
                .map_err(|errors| errors.with_origin(origin))
                .map(|()| config)
        }
        Err(e) => e,
    };
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.message().to_string();
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let location = inner
        .span()
        .map(|span| format!(" (line {})", line_of(span.start)))
        .unwrap_or_default();
    let one = ConfigErrors::one(ConfigError::new(
        if path == "." { String::new() } else { path },
        format!("{message}{location}"),
    ));
    let one = one.with_origin(origin);
    if unknown_field(&message).is_none() {
        return Err(one);
    }
    // Unknown keys: take each out of the document and read it again, so
    // that every one is named in one pass.
    let Ok(mut doc) = toml::from_str::<toml::Value>(text) else {
        return Err(one);
    };
    let mut errors = Vec::new();
    loop {
        match serde_path_to_error::deserialize::<_, Config>(doc.clone()) {
            Ok(config) => {
                // In the file's order.
                errors.sort_by_key(|e: &ConfigError| line_in(&e.message));
                if let Err(problems) = validate::validate(&config) {
                    errors.extend(problems.errors);
                }
                return Err(ConfigErrors {
                    origin: None,
                    errors,
                }
                .with_origin(origin));
            }
            Err(e) => {
                let path = e.path().to_string();
                // The first line: the rest repeats the path.
                let message = e.into_inner().to_string();
                let message = message
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let removed = unknown_field(&message)
                    .filter(|_| errors.len() < 100)
                    .and_then(|key| remove_key(&mut doc, &path, &key).map(|at| (key, at)));
                let Some((key, at)) = removed else {
                    if errors.is_empty() {
                        return Err(one);
                    }
                    errors.push(ConfigError::new(path, message));
                    return Err(ConfigErrors {
                        origin: None,
                        errors,
                    }
                    .with_origin(origin));
                };
                let line = text
                    .lines()
                    .position(|l| {
                        let l = l.trim_start();
                        l.strip_prefix(key.as_str())
                            .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                            .is_some_and(|rest| rest.trim_start().starts_with('='))
                    })
                    .map(|i| format!(" (line {})", i + 1))
                    .unwrap_or_default();
                errors.push(ConfigError::new(at, format!("{message}{line}")));
            }
        }
    }
}

/// The line a message ends with (`... (line N)`), for ordering.
fn line_in(message: &str) -> usize {
    message
        .rsplit_once("(line ")
        .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
        .unwrap_or(usize::MAX)
}

/// The key an "unknown field `x`" message names.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Removes `key` from the table at `path` (as serde_path_to_error prints
/// it: `backends.new`, `users[0]`, or the key itself at the end); the
/// table's path when it was there.
fn remove_key(doc: &mut toml::Value, path: &str, key: &str) -> Option<String> {
    let mut parts: Vec<&str> = if path == "." || path.is_empty() {
        Vec::new()
    } else {
        path.split('.').collect()
    };
    if parts.last() == Some(&key) {
        parts.pop();
    }
    let mut at = &mut *doc;
    for part in &parts {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (*part, ""),
        };
        if !name.is_empty() {
            at = at.get_mut(name)?;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            at = at.get_mut(index.parse::<usize>().ok()?)?;
        }
    }
    at.as_table_mut()?.remove(key)?;
    Some(parts.join("."))
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(ConfigError::new(
            String::new(),
            format!("cannot read {origin}: {e}"),
        ))
    })?;
    parse(&text, &origin)
}

#[cfg(test)]
mod tests;

/// `admin.socket` of a config file, read without checking the rest of it:
/// `turnout ctl --config` works with a file that has errors elsewhere.
pub fn admin_socket(path: &Path) -> Result<Option<std::path::PathBuf>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: toml::Value = toml::from_str(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.message().trim_end_matches('\n')))?;
    match doc.get("admin").and_then(|a| a.get("socket")) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.into())),
        Some(other) => Err(format!(
            "{}: admin.socket: expected a path, got a {}",
            path.display(),
            other.type_str()
        )),
    }
}
