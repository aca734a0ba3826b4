use serde::{Deserialize, Deserializer};
use std::fmt;

/// A password or other secret: never printed by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's text, for the one place that must use it (authentication).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// A secret as the config writes it: the text itself, `${NAME}` (the
    /// environment variable NAME, e.g. from a Kubernetes Secret or a
    /// systemd `EnvironmentFile`), or `file:PATH` (the file's content
    /// without its final newline, e.g. a mounted secret or a systemd
    /// credential).
    pub fn resolve(text: &str) -> Result<Secret, String> {
        if let Some(name) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{text:?} is not an environment variable's name (${{NAME}}: letters, digits, _)"));
            }
            return match std::env::var(name) {
                Ok(v) => Ok(Secret(v)),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("the environment variable {name} is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("the environment variable {name} is not UTF-8"))
                }
            };
        }
        if let Some(path) = text.strip_prefix("file:") {
            return match std::fs::read_to_string(path) {
                Ok(v) => Ok(Secret(
                    v.strip_suffix('\n')
                        .map(|v| v.strip_suffix('\r').unwrap_or(v))
                        .unwrap_or(&v)
                        .to_string(),
                )),
                Err(e) => Err(format!("cannot read the secret file {path}: {e}")),
            };
        }
        Ok(Secret(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Secret::resolve(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_text_the_environment_or_a_file() {
        assert_eq!(Secret::resolve("plain").unwrap().expose(), "plain");
        std::env::set_var("TURNOUT_TEST_SECRET_A", "from env");
        assert_eq!(
            Secret::resolve("${TURNOUT_TEST_SECRET_A}")
                .unwrap()
                .expose(),
            "from env"
        );
        let e = Secret::resolve("${TURNOUT_TEST_SECRET_UNSET}").unwrap_err();
        assert!(e.contains("TURNOUT_TEST_SECRET_UNSET is not set"), "{e}");
        let path = std::env::temp_dir().join(format!("turnout-secret-{}", std::process::id()));
        std::fs::write(&path, "from file\n").unwrap();
        let text = format!("file:{}", path.display());
        assert_eq!(Secret::resolve(&text).unwrap().expose(), "from file");
        std::fs::remove_file(&path).unwrap();
        assert!(Secret::resolve(&text)
            .unwrap_err()
            .contains("cannot read the secret file"));
    }
}
