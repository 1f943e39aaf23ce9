//! What the executor reports while it runs: each instance's [`Outcome`], and the [`Event`]s
//! (start, progress, log lines, finish) it and the running stages send to an [`Events`] sink,
//! e.g. the CLI's progress display.

use serde::Serialize;

use crate::point::PointRef;

/// What happened to one instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "lowercase")]
pub enum Outcome {
    Ran,
    Cached,
    Failed(String),
    /// Not run because an input failed or was interrupted.
    Skipped(String),
    Interrupted,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Cached => "cached",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
            Outcome::Interrupted => "interrupted",
        }
    }

    pub(crate) fn produced(&self) -> bool {
        matches!(self, Outcome::Ran | Outcome::Cached)
    }
}

/// Progress and log events from the executor and the running stages.
#[derive(Debug, Clone)]
pub enum Event {
    Start {
        instance: usize,
        stage: String,
        points: Vec<PointRef>,
        reason: String,
    },
    /// Another process is computing this instance; we wait for it.
    Waiting {
        instance: usize,
        holder: String,
    },
    Progress {
        instance: usize,
        done: u64,
        total: u64,
        message: String,
    },
    Log {
        instance: usize,
        line: String,
    },
    Finish {
        instance: usize,
        outcome: Outcome,
        duration_s: f64,
    },
}

/// Receives events; must be cheap and thread-safe.
pub trait Events: Send + Sync {
    fn event(&self, e: &Event);
}

/// Discards every event.
pub struct NoEvents;

impl Events for NoEvents {
    fn event(&self, _: &Event) {}
}
