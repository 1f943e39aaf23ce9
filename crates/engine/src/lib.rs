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

pub mod atomic;
pub mod attempts;
pub mod error;
pub mod events;
pub mod exec;
pub mod gc;
pub mod hash;
pub mod lock;
pub mod names;
pub mod plan;
pub mod point;
pub mod select;
pub mod stage;
pub mod state;
pub mod store;
pub mod time;

pub use attempts::{Attempt, PreviousAttempt, attempts};
pub use error::EngineError;
pub use events::{Event, Events, NoEvents, Outcome};
pub use exec::{InstanceReport, RunOptions, RunReport, execute, rerun_entry};
pub use gc::{Collected, Leftover, RemovedEntry};
pub use lock::{HolderCheck, Liveness, LockHolder, LockOptions};
pub use plan::{Action, Decision, Instance, Plan, Point, explain, pick, plan};
pub use select::{SelectError, Selection, check_stages, prepare, select_points};
pub use stage::{Context, Input, Missing, PointRef, Registry, Scope, Stage, StageError};
pub use state::InstanceState;
pub use store::{Manifest, Store};
