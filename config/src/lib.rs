//! turnout's configuration: the TOML file's types, their defaults, and validation
//! with errors that name the offending key.
//!
//! Parsing rejects unknown keys; validation collects every problem at once so an
//! operator fixes the file in one pass.

mod secret;
mod types;
mod validate;

pub use secret::Secret;
pub use types::*;
pub use validate::{ConfigError, ConfigErrors};

use std::path::Path;

/// Parses and validates a config file's text. `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let de = toml::Deserializer::new(text);
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().to_string();
        let location = inner
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigErrors::one(ConfigError::new(
            if path == "." { String::new() } else { path },
            format!("{message}{location}"),
        ))
    })?;
    validate::validate(&config)
        .map_err(|errors| errors.with_origin(origin))
        .map(|()| config)
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
