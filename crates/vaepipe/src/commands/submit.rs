//! `vaepipe submit`: hands a sweep to a batch cluster through the vaepipe-slurm crate — a job
//! for the stage instances several points share (`vaepipe run --shared`), one array task per
//! sweep point, and a report job after the array — and the queue view that `vaepipe status`
//! adds when the store holds a submission of the spec (docs/slurm.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};
use vaepipe_engine::{Action, Plan, Registry, Store};
use vaepipe_slurm::{
    JobKind, PointInfo, PointState, QueueEntry, Resources, StoreState, Submission, Tools,
};

use super::{Global, instance_state, load_spec, open_store, prepare, usage_error};
use crate::cli::{Selection, SpecArgs};

#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    /// The pipeline spec.
    pub spec: PathBuf,
    /// Override a key of the spec (passed on to every job), e.g. --set train.epochs=10.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Submit to SLURM (the only batch system supported today).
    #[arg(long)]
    pub slurm: bool,
    /// SLURM partition(s) for every job [default: the cluster's].
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,
    /// Time limit of each job (SLURM format: HH:MM:SS, D-HH:MM:SS, minutes).
    #[arg(long, value_name = "HH:MM:SS")]
    pub time: Option<String>,
    /// CPUs per job (vaepipe uses them as threads).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus_per_task: u32,
    /// Memory per job (e.g. 4G; SLURM's default unit is MB) [default: the cluster's].
    #[arg(long, value_name = "M")]
    pub mem: Option<String>,
    /// At most N sweep points run at once [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<usize>,
    /// Seconds of warning (SIGUSR1) before the time limit: training checkpoints, the job
    /// requeues itself and resumes.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub grace: u32,
    /// Write and show the scripts; submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the submission record as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: SubmitArgs) -> anyhow::Result<ExitCode> {
    if !a.slurm {
        return usage_error(
            "choose a batch system: `vaepipe submit SPEC --slurm` (SLURM is the only one supported); to run locally use `vaepipe run SPEC --jobs N`",
        );
    }
    let spec_args = SpecArgs {
        spec: a.spec.clone(),
        overrides: a.overrides.clone(),
        json: a.json,
    };
    let spec = match load_spec(g, &spec_args) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let resources = Resources {
        partition: a.partition.clone(),
        time: a.time.clone(),
        cpus_per_task: a.cpus_per_task,
        mem: a.mem.clone(),
        grace_s: a.grace,
        max_parallel: a.max_parallel,
    };
    if let Err(e) = resources.validate() {
        return usage_error(e);
    }
    let store = open_store(g)?;
    let registry = vaepipe_stages::registry();
    // The first job runs what several points share (`vaepipe run SPEC --shared`): exactly the
    // plan of `vaepipe plan SPEC --shared`. No job when none of it has to run.
    let everything = Selection {
        points: Vec::new(),
        force: Vec::new(),
        stages: Vec::new(),
        shared: true,
    };
    let (shared, decisions) = match prepare(&store, &registry, &spec, &everything) {
        Ok(x) => x,
        Err(e) => return e.exit(),
    };
    let mut to_run: Vec<&str> = Vec::new();
    for (inst, d) in shared.instances.iter().zip(&decisions) {
        if d.action == Action::Run && !to_run.contains(&inst.stage) {
            to_run.push(inst.stage);
        }
    }
    let vaepipe = std::env::current_exe()
        .context("cannot find the path of the vaepipe binary (std::env::current_exe)")?;
    let workdir = std::env::current_dir().context("cannot read the current directory")?;
    let request = vaepipe_slurm::Request {
        pipeline: spec.name().to_string(),
        spec: spec.path.clone(),
        overrides: a.overrides.clone(),
        store: store.root().to_path_buf(),
        workdir,
        vaepipe,
        points: spec
            .runs
            .iter()
            .map(|r| PointInfo {
                index: r.index,
                id: r.id.clone(),
                label: r.label.clone(),
            })
            .collect(),
        resources,
        shared_job: !to_run.is_empty(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let prepared = vaepipe_slurm::prepare(&request).context("preparing the batch scripts")?;
    if a.dry_run {
        print_dry_run(&prepared, a.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let record = vaepipe_slurm::submit(prepared, &Tools::default())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print_submitted(&record, &a.spec, g, &a.overrides, &to_run);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_dry_run(record: &Submission, json: bool) -> anyhow::Result<()> {
    if json {
        let scripts: Vec<Value> = record
            .jobs
            .iter()
            .map(|j| {
                let path = record.dir.join(&j.script);
                json!({"kind": j.kind, "path": path, "text": std::fs::read_to_string(&path).unwrap_or_default()})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"submission": record, "scripts": scripts}))?
        );
        return Ok(());
    }
    for j in &record.jobs {
        let path = record.dir.join(&j.script);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        println!("==> {} <==\n{text}", path.display());
    }
    let deps = if record.job(JobKind::Shared).is_some() {
        "sbatch --parsable shared.sbatch, then points.sbatch with --dependency=afterok:<shared job>, then report.sbatch with --dependency=afterany:<array job>"
    } else {
        "sbatch --parsable points.sbatch, then report.sbatch with --dependency=afterany:<array job>"
    };
    eprintln!(
        "dry run: nothing submitted. The scripts are in {}; from there: {deps}",
        record.dir.display()
    );
    Ok(())
}

fn print_submitted(
    r: &Submission,
    spec: &Path,
    g: &Global,
    overrides: &[String],
    shared_stages: &[&str],
) {
    let id = |k: JobKind| {
        r.job(k)
            .and_then(|j| j.id.clone())
            .unwrap_or_else(|| "-".into())
    };
    let limit = r
        .resources
        .max_parallel
        .map(|m| format!(", at most {m} at once"))
        .unwrap_or_default();
    match r.job(JobKind::Shared) {
        Some(_) => println!(
            "shared job {}: what several points share ({})",
            id(JobKind::Shared),
            shared_stages.join(", ")
        ),
        None => println!("shared: nothing several points share has to run, no job"),
    }
    println!(
        "array job {}: {} sweep point{} (tasks 0-{}{limit}){}",
        id(JobKind::Points),
        r.array_size,
        if r.array_size == 1 { "" } else { "s" },
        r.array_size.saturating_sub(1),
        if r.job(JobKind::Shared).is_some() {
            ", after the shared job succeeds"
        } else {
            ""
        }
    );
    println!("report job {}: after every task ended", id(JobKind::Report));
    println!(
        "job name {} · scripts and logs in {}",
        r.job_name,
        r.dir.display()
    );
    let sets: String = overrides
        .iter()
        .map(|o| format!(" --set {}", vaepipe_slurm::shell_quote_str(o)))
        .collect();
    println!(
        "follow with: vaepipe --store {} status {}{sets}",
        vaepipe_slurm::shell_quote(g.store.as_os_str()),
        vaepipe_slurm::shell_quote(spec.as_os_str())
    );
}

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
    /// after node n1 failed, resumed train on n2 at epoch 7" ([`node_history`]).
    pub history: Vec<String>,
}

/// Builds the queue view of `plan` (all points) if the store holds a submission of it.
pub fn queue_view(
    registry: &Registry,
    store: &Store,
    plan: &Plan,
) -> anyhow::Result<Option<QueueView>> {
    let ids: Vec<String> = plan.points.iter().map(|p| p.id.clone()).collect();
    let Some(submission) = vaepipe_slurm::latest(store.root(), &plan.pipeline, &ids) else {
        return Ok(None);
    };
    let (entries, queue_error) =
        match vaepipe_slurm::query(&Tools::default().squeue, &submission.job_name) {
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
        let own = |i: &&vaepipe_engine::Instance| {
            i.points.contains(&p.index)
                && registry
                    .get(i.stage)
                    .is_some_and(|s| s.scope() == vaepipe_engine::Scope::PerPoint)
        };
        for inst in plan.instances.iter().filter(own) {
            let (state, detail) = instance_state(store, inst.stage, &inst.key)?;
            let s = StoreState::parse(state);
            debug_assert_eq!(s.name(), state, "a state vaepipe-slurm does not know");
            if s == StoreState::Failed && failure.is_none() {
                failure = Some((
                    format!("{}: {detail}", inst.stage),
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
        let state = vaepipe_slurm::point_state(store_state, task.as_ref());
        let mut detail = Vec::new();
        if let Some(t) = &task {
            detail.push(vaepipe_slurm::state::describe(t));
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

    /// The lines `status` prints after its table.
    pub fn print(&self) {
        let s = &self.submission;
        println!();
        println!(
            "SLURM submission {} (job name {}, submitted {})",
            s.id, s.job_name, s.submitted
        );
        if let Some(e) = &self.queue_error {
            println!("  queue unavailable ({e}); states below are from the store only");
        }
        for (kind, q) in [
            (JobKind::Shared, &self.shared),
            (JobKind::Report, &self.report),
        ] {
            if let Some(j) = s.job(kind) {
                let state = q.as_ref().map_or_else(
                    || "not in the queue".to_string(),
                    vaepipe_slurm::state::describe,
                );
                let log = s
                    .job_log(kind)
                    .map(|l| format!(" (log: {})", l.display()))
                    .unwrap_or_default();
                println!(
                    "  {:<6} job {:<10} {state}{log}",
                    kind.name(),
                    j.id.as_deref().unwrap_or("-")
                );
            }
        }
        println!("  {:<5} {:<10} {:<28} detail", "point", "state", "label");
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
            println!(
                "  {:<5} {:<10} {:<28} {detail}",
                p.index,
                p.state.name(),
                label
            );
        }
        let count = |st: PointState| self.points.iter().filter(|p| p.state == st).count();
        println!(
            "  points: {} done, {} running, {} queued, {} requeued, {} failed (of {})",
            count(PointState::Done),
            count(PointState::Running),
            count(PointState::Queued),
            count(PointState::Requeued) + count(PointState::Preempted),
            count(PointState::Failed),
            self.points.len()
        );
    }
}

fn queue_json(q: &QueueEntry) -> Value {
    json!({
        "job": q.display_id(), "job_id": q.job_id, "state": q.raw_state, "reason": q.reason,
        "restarts": q.restarts, "exit_code": q.exit_code, "signal": q.signal,
    })
}

/// What the instances' attempt records (vaepipe_engine::attempts) say about runs of the array
/// job `array` that were lost: for each attempt that found the lock of a run on another node
/// unreleased (that run died with its node, or was killed) or took it over, where it went on
/// and from which epoch, e.g. "requeued after node n1 failed (its run there ended without
/// releasing its lock), resumed train on n2 at epoch 7".
pub fn node_history<'a>(
    store: &Store,
    instances: impl Iterator<Item = &'a vaepipe_engine::Instance>,
    array: Option<&str>,
) -> Vec<String> {
    let text = |p: &std::collections::BTreeMap<String, Value>, k: &str| {
        p.get(k)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
    };
    let mut out = Vec::new();
    for inst in instances {
        for (a, lines) in vaepipe_engine::attempts(store, inst.stage, &inst.key) {
            let Some(prev) = &a.previous else { continue };
            let ours = text(&a.placement, "slurm_array_job_id");
            if array.is_some() && ours.as_deref() != array {
                continue;
            }
            let (Some(was), Some(now)) = (
                text(&prev.holder.placement, "slurm_node"),
                text(&a.placement, "slurm_node"),
            ) else {
                continue;
            };
            let restart = |p: &std::collections::BTreeMap<String, Value>| {
                p.get("slurm_restart_count").and_then(Value::as_u64)
            };
            let requeued = restart(&a.placement) > restart(&prev.holder.placement);
            let cause = match prev.how.strip_prefix("taken over: ") {
                Some(reason) => format!("its run on node {was} was found gone ({reason})"),
                None if was != now => {
                    format!("node {was} failed (its run there ended without releasing its lock)")
                }
                None => format!("its run on node {was} was killed"),
            };
            let epoch = lines
                .iter()
                .find_map(|l| l.split("resuming from the checkpoint at epoch ").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .map(|e| format!(" at epoch {e}"))
                .unwrap_or_default();
            let what = if a.resumed {
                format!("resumed {} on {now}{epoch}", inst.stage)
            } else {
                format!("restarted {} on {now}", inst.stage)
            };
            let how = if requeued { "requeued" } else { "taken over" };
            out.push(format!("{how} after {cause}, {what}"));
        }
    }
    out
}

/// How `vaepipe run` takes instance locks: under SLURM it records its job, array task, restart
/// count and node (also in manifests), and a lock held by a SLURM job that has left the queue,
/// ended or been requeued since is taken over (docs/slurm.md, "Locks").
pub fn lock_options() -> vaepipe_engine::LockOptions {
    let placement = vaepipe_slurm::placement_from_env();
    vaepipe_engine::LockOptions {
        check: Some(std::sync::Arc::new(vaepipe_slurm::QueueCheck {
            squeue: Tools::default().squeue,
            me: placement.clone(),
        })),
        placement,
        ..Default::default()
    }
}
