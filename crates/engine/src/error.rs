//! [`EngineError`]: errors of the engine itself (not of a stage); each names its file.

use std::path::PathBuf;

/// Errors of the engine itself (not of a stage).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Plan(String),
    #[error("{path}: invalid manifest: {message}")]
    Manifest { path: PathBuf, message: String },
}

impl EngineError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}
