//! vaepipe-slurm: runs a vaepipe sweep on a SLURM cluster. It writes sbatch scripts (sorted
//! `#SBATCH` lines; every value from a spec, a flag or the file system shell-quoted), submits a
//! job for the stage instances several points share (`vaepipe run --shared`), one array task
//! per sweep point (selected by id) and a report job that depends on the array, records
//! the submission in the store, and answers "what is each point doing?" with one `squeue` call
//! per poll for the whole submission.
//!
//! All jobs share the store (on a shared file system): the engine's per-key locks make
//! concurrent tasks compute each stage instance once, and its checkpoints let a task stopped by
//! SIGUSR1 (time limit warning, `scancel --signal=USR1 --batch`) requeue itself and resume.
//! The user-facing description is docs/slurm.md.
//!
//! ```text
//! prepare(Request) ──▶ <store>/slurm/<pipeline>/<id>/{shared,points,report}.sbatch, logs/, submission.json
//! submit(Submission, Tools) ──sbatch ×3──▶ Submission with job ids
//! latest(store, pipeline, point ids) + query(squeue, job name) + point_state(..) ──▶ status
//! queue_view(registry, store, plan) ──▶ QueueView: its `json()` and `render()` for `vaepipe status`
//! ```

pub mod history;
pub mod holder;
pub mod queue;
pub mod quote;
pub mod resources;
pub mod script;
pub mod state;
pub mod submission;
pub mod view;

use std::path::PathBuf;

pub use history::node_history;
pub use holder::{QueueCheck, lock_options, placement_from_env};
pub use queue::{JobState, QueueEntry, query};
pub use quote::{shell_quote, shell_quote_str};
pub use resources::Resources;
pub use script::JobKind;
pub use state::{PointState, StoreState, point_state};
pub use submission::{PointInfo, Request, Submission, Tools, latest, prepare, submit};
pub use view::{PointRow, QueueView, queue_view};

/// Errors of this crate; each names the value, file or command involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or value that cannot be used (bad time limit, unsafe partition name, …).
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// A SLURM command that could not run or failed.
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("cannot parse {what}: {message}")]
    Parse { what: String, message: String },
    #[error("submission failed: {message}")]
    Submit { message: String },
}
