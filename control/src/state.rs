//! The persisted phase: `state.file` keeps the phase, the epoch and the
//! phases before it (for `rollback`) across restarts. It is replaced
//! atomically (written to a temporary file, synced, renamed over, and the
//! folder synced), so it is never left half-written.

use crate::routing::{Phase, Routing};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub phase: String,
    pub epoch: u64,
    /// Earlier phases, oldest first: where `rollback` goes.
    #[serde(default)]
    pub history: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path}: not a turnout state file ({reason}); fix or remove it")]
    Invalid { path: String, reason: String },
}

/// The routing and history a state file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub routing: Routing,
    pub history: Vec<Phase>,
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: &Path) -> Self {
        StateFile {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file holds; `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<Saved>, StateError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.display().to_string(),
                    source,
                })
            }
        };
        let invalid = |reason: String| StateError::Invalid {
            path: self.path.display().to_string(),
            reason,
        };
        let p: Persisted = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        let phase = p
            .phase
            .parse::<Phase>()
            .map_err(|e| invalid(e.to_string()))?;
        let history = p
            .history
            .iter()
            .map(|h| h.parse::<Phase>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Some(Saved {
            routing: Routing {
                phase,
                epoch: p.epoch,
            },
            history,
        }))
    }

    /// Replaces the file with `saved`, atomically.
    pub fn save(&self, saved: &Saved) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let p = Persisted {
            phase: saved.routing.phase.name().to_string(),
            epoch: saved.routing.epoch,
            history: saved.history.iter().map(|h| h.name().to_string()).collect(),
        };
        let mut text = serde_json::to_vec_pretty(&p).map_err(|e| io(std::io::Error::other(e)))?;
        text.push(b'\n');
        crate::files::write_atomically(&self.path, &text).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_bad_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("turnout-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = StateFile::new(&dir.join("state.json"));
        assert_eq!(f.load().unwrap(), None);
        let saved = Saved {
            routing: Routing {
                phase: Phase::ReadsNew,
                epoch: 4,
            },
            history: vec![Phase::Passthrough, Phase::Mirror],
        };
        f.save(&saved).unwrap();
        assert_eq!(f.load().unwrap(), Some(saved));
        assert!(!dir.join("state.json.tmp").exists());
        std::fs::write(
            dir.join("state.json"),
            "{\"phase\": \"sideways\", \"epoch\": 1}",
        )
        .unwrap();
        let err = f.load().unwrap_err().to_string();
        assert!(
            err.contains("sideways") && err.contains("state.json"),
            "{err}"
        );
        std::fs::write(dir.join("state.json"), "{\"pha").unwrap();
        assert!(f.load().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
