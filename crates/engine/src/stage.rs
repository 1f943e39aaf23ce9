//! The one small trait every stage implements, the context a stage runs in, and the registry
//! that lists the stages of a product in dependency order. Adding a stage means implementing
//! [`Stage`] and registering it; the engine itself never names a stage.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::events::{Event, Events};
pub use crate::point::PointRef;

/// How many instances of a stage a plan has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One instance per sweep point (instances with equal keys are shared between points).
    PerPoint,
    /// One instance that reads the outputs of every point (e.g. a report).
    Gather,
}

/// A unit of work with declared inputs and parameters, writing files into a fresh directory.
pub trait Stage: Send + Sync {
    /// Stable name: the store's subdirectory and what `--force` and `plan` call it.
    fn name(&self) -> &'static str;
    /// Bump whenever the implementation changes what it writes: part of the cache key.
    fn version(&self) -> u32;
    /// Names of the upstream stages whose outputs this stage reads.
    fn inputs(&self) -> &'static [&'static str];
    fn scope(&self) -> Scope {
        Scope::PerPoint
    }
    /// The parameters this stage depends on, picked from one point's configuration. Everything
    /// that changes the stage's output must be in here (or in its inputs), nothing else.
    /// `{"$file": path}` objects are hashed by content. For [`Scope::Gather`] stages the
    /// result must be the same for every point; the engine adds `"points"`: every point's
    /// index, id, label and full configuration.
    fn params(&self, point: &Value) -> Value;
    /// May an interrupted attempt continue from what it left in its output directory
    /// (checkpoints)? If false, the engine empties the directory before every attempt.
    fn resumable(&self) -> bool {
        false
    }
    /// Run even if some inputs failed (the context lists them in `missing`).
    fn accepts_missing_inputs(&self) -> bool {
        false
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError>;
}

/// Why a stage did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
    /// Stopped on request (signal) after saving what can be resumed.
    #[error("interrupted")]
    Interrupted,
}

/// The stages of a product, in an order where every stage comes after its inputs.
#[derive(Default)]
pub struct Registry {
    stages: Vec<Box<dyn Stage>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stage; its inputs must already be registered.
    pub fn register(&mut self, stage: Box<dyn Stage>) -> Result<(), crate::error::EngineError> {
        for input in stage.inputs() {
            if self.get(input).is_none() {
                return Err(crate::error::EngineError::Plan(format!(
                    "stage `{}` reads `{input}`, which is not registered before it",
                    stage.name()
                )));
            }
        }
        if self.get(stage.name()).is_some() {
            return Err(crate::error::EngineError::Plan(format!(
                "stage `{}` is registered twice",
                stage.name()
            )));
        }
        self.stages.push(stage);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&dyn Stage> {
        self.stages
            .iter()
            .find(|s| s.name() == name)
            .map(|s| s.as_ref())
    }

    pub fn stages(&self) -> impl Iterator<Item = &dyn Stage> {
        self.stages.iter().map(|s| s.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }
}

/// One upstream output a stage reads.
#[derive(Debug, Clone)]
pub struct Input {
    pub stage: String,
    pub key: String,
    /// The committed output directory (read-only).
    pub dir: PathBuf,
    /// The points this upstream instance serves.
    pub points: Vec<PointRef>,
}

/// An upstream instance that did not produce output (only for stages that accept that).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Missing {
    pub stage: String,
    pub key: String,
    pub points: Vec<PointRef>,
    pub reason: String,
    pub log: Option<PathBuf>,
}

/// What a running stage can see and do.
pub struct Context<'a> {
    pub stage: &'a str,
    pub key: &'a str,
    pub params: &'a Value,
    pub points: &'a [PointRef],
    pub inputs: &'a [Input],
    pub missing: &'a [Missing],
    /// Write outputs here (and only here).
    pub out: &'a Path,
    /// True if `out` holds what an interrupted earlier attempt left (resumable stages only).
    pub resumed: bool,
    /// Save a checkpoint at least every N steps (iterative stages; they always save at the end
    /// of an epoch and when stopped): the run's `--checkpoint-every`.
    pub checkpoint_every: Option<u64>,
    pub(crate) id: usize,
    pub(crate) events: &'a dyn Events,
    pub(crate) cancel: &'a AtomicBool,
    pub(crate) log: Mutex<Option<File>>,
    pub(crate) started: Instant,
}

impl Context<'_> {
    /// The output of upstream stage `name` (the single one, for per-point stages).
    pub fn input(&self, name: &str) -> anyhow::Result<&Input> {
        let mut it = self.inputs.iter().filter(|i| i.stage == name);
        match (it.next(), it.next()) {
            (Some(i), None) => Ok(i),
            (None, _) => anyhow::bail!("stage `{}` has no input `{name}`", self.stage),
            (Some(_), Some(_)) => anyhow::bail!(
                "stage `{}` has several inputs `{name}`; iterate `inputs`",
                self.stage
            ),
        }
    }

    /// Appends a line to the stage's log (kept in the store) and shows it to the user.
    pub fn log(&self, line: impl AsRef<str>) {
        let line = line.as_ref();
        let t = self.started.elapsed().as_secs_f64();
        if let Ok(mut guard) = self.log.lock()
            && let Some(f) = guard.as_mut()
        {
            let _ = writeln!(f, "[{t:9.2}s] {line}");
        }
        self.events.event(&Event::Log {
            instance: self.id,
            line: line.to_string(),
        });
    }

    /// Reports progress: `done` of `total` units, with a short message.
    pub fn progress(&self, done: u64, total: u64, message: &str) {
        self.events.event(&Event::Progress {
            instance: self.id,
            done,
            total,
            message: message.to_string(),
        });
    }

    /// True once a stop was requested (SIGTERM/USR1): save a checkpoint and return
    /// [`StageError::Interrupted`].
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}
