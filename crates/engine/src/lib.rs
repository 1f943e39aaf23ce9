//! vaepipe-engine: plans, caches and executes stages. It knows nothing about VAEs: a stage is
//! anything implementing [`Stage`], its parameters are JSON picked from a point's config, and
//! its outputs are the files it writes into a fresh directory.
//!
//! ```text
//! points (JSON configs) ──plan──▶ DAG of stage instances, each with a cache key
//!        ──execute──▶ Stage::run writes into work/<stage>/<key>/ ──commit (rename)──▶ store/<stage>/<key>/
//! ```
//!
//! Invariants (see ARCHITECTURE.md):
//! - A key is a hash of (stage name, stage version, canonical parameters with `{"$file": p}`
//!   replaced by the file's content hash, the keys of the inputs). Cosmetic spec edits change
//!   nothing; a parameter change re-keys exactly the dependent stages.
//! - An output directory is complete iff it holds a `manifest.json` whose file hashes verify.
//!   Work happens in `work/`, and only a rename publishes it, so an interrupted stage never
//!   looks complete.
//! - One process computes an instance at a time (a lock file per key); others wait, then reuse.
//!   A lock names its holder; only a holder that is provably gone is taken over (crate::lock).

pub mod exec;
pub mod hash;
pub mod lock;
pub mod plan;
pub mod stage;
pub mod store;
pub mod time;

pub use exec::{
    Attempt, Event, Events, InstanceReport, NoEvents, Outcome, PreviousAttempt, RunOptions,
    RunReport, attempts, execute, rerun_entry,
};
pub use lock::{HolderCheck, Liveness, LockHolder, LockOptions};
pub use plan::{Action, Decision, Instance, Plan, Point, explain, pick, plan};
pub use stage::{Context, Input, Missing, PointRef, Registry, Scope, Stage, StageError};
pub use store::{Manifest, Store};

/// Errors of the engine itself (not of a stage).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Plan(String),
    #[error("{path}: invalid manifest: {message}")]
    Manifest {
        path: std::path::PathBuf,
        message: String,
    },
}

impl EngineError {
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}
