//! What the store says about one stage instance — done, running, failed, interrupted or
//! missing — for `vaepipe status` and the SLURM queue view ([`Store::state`]).

use crate::error::EngineError;
use crate::store::{FailureRecord, Store};

/// The state of one instance in the store, checked in this order: a verified output (done),
/// a held lock (running), a failure record (failed), a work directory left to resume
/// (interrupted), nothing (missing).
#[derive(Debug, Clone)]
pub enum InstanceState {
    Done,
    /// A process holds the instance's lock.
    Running,
    /// The last attempt failed (the record is kept until a success).
    Failed(FailureRecord),
    /// A work directory (checkpoint) waits to be resumed.
    Interrupted,
    Missing,
}

impl InstanceState {
    /// The name `vaepipe status` prints: `done`, `running`, `failed`, `interrupted`, `missing`.
    pub fn name(&self) -> &'static str {
        match self {
            InstanceState::Done => "done",
            InstanceState::Running => "running",
            InstanceState::Failed(_) => "failed",
            InstanceState::Interrupted => "interrupted",
            InstanceState::Missing => "missing",
        }
    }

    /// The detail `vaepipe status` prints next to the name (empty for most states).
    pub fn detail(&self) -> String {
        match self {
            InstanceState::Failed(f) => format!(
                "{} (log: {})",
                f.error.lines().next().unwrap_or(""),
                f.log.display()
            ),
            InstanceState::Interrupted => "resumes on the next run".into(),
            InstanceState::Done | InstanceState::Running | InstanceState::Missing => String::new(),
        }
    }
}

impl Store {
    /// The state of instance `stage`/`key` (see [`InstanceState`] for the order of checks).
    pub fn state(&self, stage: &str, key: &str) -> Result<InstanceState, EngineError> {
        if self.verify(stage, key)?.is_none() {
            return Ok(InstanceState::Done);
        }
        if self.is_locked(stage, key) {
            return Ok(InstanceState::Running);
        }
        if let Some(f) = self.failure(stage, key) {
            return Ok(InstanceState::Failed(f));
        }
        if self.work_dir(stage, key).exists() {
            return Ok(InstanceState::Interrupted);
        }
        Ok(InstanceState::Missing)
    }
}
