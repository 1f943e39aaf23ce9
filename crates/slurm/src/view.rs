//! The queue view `vaepipe status` adds when the store holds a SLURM submission of the spec:
//! each sweep point's state joined from the store ([`vaepipe_engine::Store::state`], aggregated
//! over the point's own instances) and from ONE `squeue` call for the whole submission, with
//! what the next attempt does and where lost runs went on ([`crate::history`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};
use vaepipe_engine::{EngineError, Instance, Plan, Registry, Scope, Store};

use crate::history::node_history;
use crate::queue::QueueEntry;
use crate::script::JobKind;
use crate::state::{PointState, StoreState, describe, point_state};
use crate::submission::{Submission, Tools};

/// The queue view `status` adds: the spec's latest submission, each point's state from the
/// store and from ONE squeue call for the whole submission. `None` without a submission.
pub struct QueueView {
    pub submission: Submission,
    pub points: Vec<PointRow>,
    /// The queue entries of the shared and report jobs.
    pub shared: Option<QueueEntry>,
    pub report: Option<QueueEntry>,
    /// Why the queue could not be read (the store's view is shown alone then).
    pub queue_error: Option<String>,
}

pub struct PointRow {
    /// The point's index in the spec (as `vaepipe run --point I` takes it).
    pub index: usize,
    /// Its array task in the submission (the same unless the spec was reordered since).
    pub task_index: usize,
    pub id: String,
    pub label: String,
    pub state: PointState,
    pub detail: String,
    pub task: Option<QueueEntry>,
    /// The store log of the instance that failed (if one did).
    pub log: Option<PathBuf>,
    /// The SLURM log of the point's array task.
    pub slurm_log: Option<PathBuf>,
    /// Runs of this submission's task that were lost and continued elsewhere, e.g. "requeued
    /// after node n1 failed, resumed train on n2 at epoch 7" ([`node_history`](crate::history::node_history)).
    pub history: Vec<String>,
}

/// Builds the queue view of `plan` (all points) if the store holds a submission of it.
pub fn queue_view(
    registry: &Registry,
    store: &Store,
    plan: &Plan,
) -> Result<Option<QueueView>, EngineError> {
    let ids: Vec<String> = plan.points.iter().map(|p| p.id.clone()).collect();
    let Some(submission) = crate::submission::latest(store.root(), &plan.pipeline, &ids) else {
        return Ok(None);
    };
    let (entries, queue_error) =
        match crate::queue::query(&Tools::default().squeue, &submission.job_name) {
            Ok(e) => (e, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
    let job_id = |k: JobKind| submission.job(k).and_then(|j| j.id.clone());
    let array_id = job_id(JobKind::Points);
    let single = |k: JobKind| {
        let id = job_id(k)?;
        entries
            .iter()
            .find(|e| e.job_id == id && e.array_task.is_none())
            .cloned()
    };
    let mut points = Vec::new();
    for p in &plan.points {
        let mut states = Vec::new();
        let mut failure: Option<(String, PathBuf)> = None;
        // The first unfinished instance: where the next attempt starts, and whether it resumes.
        let mut next: Option<(&str, bool)> = None;
        // The point's own instances and the shared ones it reads, not gather stages.
        let own = |i: &&Instance| {
            i.points.contains(&p.index)
                && registry
                    .get(i.stage)
                    .is_some_and(|s| s.scope() == Scope::PerPoint)
        };
        for inst in plan.instances.iter().filter(own) {
            let instance = store.state(inst.stage, &inst.key)?;
            let s = StoreState::from(&instance);
            if s == StoreState::Failed && failure.is_none() {
                failure = Some((
                    format!("{}: {}", inst.stage, instance.detail()),
                    store.log_path(inst.stage, &inst.key),
                ));
            }
            if s != StoreState::Done && next.is_none() {
                // Only a resumable stage continues from what its work directory holds.
                let resumes = store.work_dir(inst.stage, &inst.key).exists()
                    && registry.get(inst.stage).is_some_and(|st| st.resumable());
                next = Some((inst.stage, resumes));
            }
            states.push(s);
        }
        let store_state = StoreState::aggregate(states);
        // Tasks run their points by id: the point's task in the submission, whatever its index
        // in the spec today.
        let task_index = submission.task_of(&p.id).unwrap_or(p.index);
        let task = array_id
            .as_ref()
            .and_then(|a| {
                entries
                    .iter()
                    .find(|e| &e.array_job_id == a && e.array_task == Some(task_index))
            })
            .cloned();
        let state = point_state(store_state, task.as_ref());
        let mut detail = Vec::new();
        if let Some(t) = &task {
            detail.push(describe(t));
        }
        if let (PointState::Failed, Some((what, _))) = (state, &failure) {
            detail.push(what.clone());
        }
        let history = node_history(
            store,
            plan.instances.iter().filter(own),
            array_id.as_deref(),
        );
        detail.extend(history.iter().cloned());
        // Stopped without a stage failure (cancelled, timed out, checkpointed): what the next
        // attempt does.
        let stopped = matches!(state, PointState::Cancelled | PointState::Interrupted)
            || (state == PointState::Failed && store_state != StoreState::Failed);
        if let (true, Some((stage, resumes))) = (stopped, next) {
            detail.push(if resumes {
                format!(
                    "the next `vaepipe submit` or `vaepipe run` resumes {stage} from its checkpoint"
                )
            } else {
                format!(
                    "the next `vaepipe submit` or `vaepipe run` restarts {stage} (finished stages are reused)"
                )
            });
        }
        points.push(PointRow {
            index: p.index,
            task_index,
            id: p.id.clone(),
            label: p.label.clone(),
            state,
            detail: detail.join("; "),
            log: failure.map(|f| f.1),
            slurm_log: submission.task_log(task_index),
            task,
            history,
        });
    }
    Ok(Some(QueueView {
        shared: single(JobKind::Shared),
        report: single(JobKind::Report),
        submission,
        points,
        queue_error,
    }))
}

impl QueueView {
    /// The `slurm` and `points` keys `status --json` adds.
    pub fn json(&self) -> (Value, Value) {
        let s = &self.submission;
        let job = |k: JobKind, q: &Option<QueueEntry>| {
            s.job(k).map(|j| {
                json!({"id": j.id, "script": s.dir.join(&j.script), "log": s.job_log(k), "queue": q.as_ref().map(queue_json)})
            })
        };
        let slurm = json!({
            "submission": s.id,
            "job_name": s.job_name,
            "dir": s.dir,
            "submitted": s.submitted,
            "array_job": s.job(JobKind::Points).and_then(|j| j.id.clone()),
            "array_size": s.array_size,
            "shared_job": job(JobKind::Shared, &self.shared),
            // The name of version 1, when the first job ran the data stage only.
            "data_job": job(JobKind::Shared, &self.shared),
            "report_job": job(JobKind::Report, &self.report),
            "queue_error": self.queue_error,
        });
        let points: Vec<Value> = self
            .points
            .iter()
            .map(|p| {
                json!({
                    "index": p.index, "task": p.task_index, "id": p.id, "label": p.label, "state": p.state.name(), "detail": p.detail,
                    "queue": p.task.as_ref().map(queue_json), "log": p.log, "slurm_log": p.slurm_log,
                    "history": p.history,
                })
            })
            .collect();
        (slurm, Value::Array(points))
    }

    /// The lines `status` prints after its table (starting with an empty line).
    pub fn render(&self) -> String {
        let s = &self.submission;
        let mut out = String::from("\n");
        let _ = writeln!(
            out,
            "SLURM submission {} (job name {}, submitted {})",
            s.id, s.job_name, s.submitted
        );
        if let Some(e) = &self.queue_error {
            let _ = writeln!(
                out,
                "  queue unavailable ({e}); states below are from the store only"
            );
        }
        for (kind, q) in [
            (JobKind::Shared, &self.shared),
            (JobKind::Report, &self.report),
        ] {
            if let Some(j) = s.job(kind) {
                let state = q
                    .as_ref()
                    .map_or_else(|| "not in the queue".to_string(), describe);
                let log = s
                    .job_log(kind)
                    .map(|l| format!(" (log: {})", l.display()))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {:<6} job {:<10} {state}{log}",
                    kind.name(),
                    j.id.as_deref().unwrap_or("-")
                );
            }
        }
        let _ = writeln!(
            out,
            "  {:<5} {:<10} {:<28} detail",
            "point", "state", "label"
        );
        for p in &self.points {
            let mut detail = p.detail.clone();
            // The store's failure detail already names the stage's log; add the task's (if the
            // task ran at all: SLURM cancels the array when the shared job fails).
            if p.state == PointState::Failed
                && let Some(l) = &p.slurm_log
                && l.exists()
            {
                detail.push_str(&format!(" (SLURM log: {})", l.display()));
            }
            let label = if p.label.is_empty() {
                "-"
            } else {
                p.label.as_str()
            };
            let _ = writeln!(
                out,
                "  {:<5} {:<10} {:<28} {detail}",
                p.index,
                p.state.name(),
                label
            );
        }
        let count = |st: PointState| self.points.iter().filter(|p| p.state == st).count();
        let _ = writeln!(
            out,
            "  points: {} done, {} running, {} queued, {} requeued, {} failed (of {})",
            count(PointState::Done),
            count(PointState::Running),
            count(PointState::Queued),
            count(PointState::Requeued) + count(PointState::Preempted),
            count(PointState::Failed),
            self.points.len()
        );
        out
    }
}

fn queue_json(q: &QueueEntry) -> Value {
    json!({
        "job": q.display_id(), "job_id": q.job_id, "state": q.raw_state, "reason": q.reason,
        "restarts": q.restarts, "exit_code": q.exit_code, "signal": q.signal,
    })
}
