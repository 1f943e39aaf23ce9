//! The local executor: runs a plan's instances in dependency order (several at once with
//! `jobs > 1`), under per-instance locks so that concurrent processes on one store compute each
//! instance once, and commits each output atomically. Progress goes to an [`Events`] sink.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use serde::Serialize;

use crate::attempts::{Attempt, PreviousAttempt, attempt_line};
use crate::error::EngineError;
use crate::events::{Event, Events, NoEvents, Outcome};
use crate::lock::{LockEvent, LockOptions};
use crate::names::hostname;
use crate::plan::{Action, Decision, Plan, key_of};
use crate::stage::{Context, Input, Missing, PointRef, Registry, StageError};
use crate::store::{FailureRecord, InputPoints, Manifest, Store};
use crate::time::now_rfc3339;

/// Options of one execution.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Instances run at the same time (at least 1).
    pub jobs: usize,
    /// Iterative stages save a checkpoint at least every N steps (they always save at the end
    /// of an epoch and when stopped).
    pub checkpoint_every: Option<u64>,
    /// Recorded in manifests.
    pub tool_version: String,
    pub git_revision: Option<String>,
    /// If set, only instances of these stages are computed; others that are not up to date
    /// are reported as skipped (e.g. re-rendering a report without recomputing anything).
    pub only_stages: Option<Vec<String>>,
    /// Who we are in lock records and manifests (`placement`), and how to judge the holders of
    /// busy locks (`check`, beyond the engine's pid rule); see crate::lock.
    pub lock: LockOptions,
}

/// The result of one instance, for summaries and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    pub stage: String,
    pub key: String,
    pub points: Vec<PointRef>,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The committed output directory (meaningful when ran or cached).
    pub dir: PathBuf,
    pub log: PathBuf,
    pub duration_s: f64,
    /// Output files, relative to `dir`.
    pub files: Vec<String>,
}

/// The result of executing a plan.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub instances: Vec<InstanceReport>,
    pub interrupted: bool,
}

impl RunReport {
    pub fn failed(&self) -> impl Iterator<Item = &InstanceReport> {
        self.instances
            .iter()
            .filter(|i| matches!(i.outcome, Outcome::Failed(_)))
    }
}

/// Executes `plan` according to `decisions` (from [`crate::explain`]). Stops starting new
/// instances once `cancel` is set; an instance that was stopped is reported as interrupted.
pub fn execute(
    registry: &Registry,
    store: &Store,
    plan: &Plan,
    decisions: &[Decision],
    options: &RunOptions,
    events: &dyn Events,
    cancel: &AtomicBool,
) -> Result<RunReport, EngineError> {
    let _store_lock = store.store_lock(false)?;
    let n = plan.instances.len();
    let mut outcomes: Vec<Option<InstanceReport>> = vec![None; n];
    let jobs = options.jobs.max(1);
    let (tx, rx) = mpsc::channel::<(usize, InstanceReport)>();
    let mut running = 0usize;
    let mut started = vec![false; n];

    std::thread::scope(|scope| {
        loop {
            // Start every ready instance, up to `jobs`.
            for i in 0..n {
                if running >= jobs {
                    break;
                }
                if started[i]
                    || !plan.instances[i]
                        .inputs
                        .iter()
                        .all(|d| outcomes[*d].is_some())
                {
                    continue;
                }
                started[i] = true;
                let inputs: Vec<&InstanceReport> = plan.instances[i]
                    .inputs
                    .iter()
                    .filter_map(|d| outcomes[*d].as_ref())
                    .collect();
                let stop = cancel.load(Ordering::SeqCst);
                let excluded = options
                    .only_stages
                    .as_ref()
                    .is_some_and(|o| !o.iter().any(|s| s == plan.instances[i].stage));
                if let Some(report) = settle_without_running(
                    registry,
                    store,
                    plan,
                    i,
                    &decisions[i],
                    &inputs,
                    stop,
                    excluded,
                ) {
                    events.event(&Event::Finish {
                        instance: i,
                        outcome: report.outcome.clone(),
                        duration_s: 0.0,
                    });
                    outcomes[i] = Some(report);
                    continue;
                }
                let inputs: Vec<InstanceReport> = inputs.into_iter().cloned().collect();
                let tx = tx.clone();
                running += 1;
                scope.spawn(move || {
                    let report = run_instance(
                        registry,
                        store,
                        plan,
                        i,
                        &decisions[i],
                        &inputs,
                        options,
                        events,
                        cancel,
                    );
                    let _ = tx.send((i, report));
                });
            }
            if running == 0 {
                break;
            }
            match rx.recv() {
                Ok((i, report)) => {
                    running -= 1;
                    outcomes[i] = Some(report);
                }
                Err(_) => break,
            }
        }
    });
    store.save_caches();
    let instances: Vec<InstanceReport> = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| unstarted(store, plan, i)))
        .collect();
    let interrupted = instances.iter().any(|r| r.outcome == Outcome::Interrupted)
        || cancel.load(Ordering::SeqCst);
    Ok(RunReport {
        instances,
        interrupted,
    })
}

fn base_report(store: &Store, plan: &Plan, i: usize, outcome: Outcome) -> InstanceReport {
    let inst = &plan.instances[i];
    InstanceReport {
        stage: inst.stage.to_string(),
        key: inst.key.clone(),
        points: inst
            .points
            .iter()
            .map(|p| plan.points[*p].as_ref())
            .collect(),
        outcome,
        dir: store.output_dir(inst.stage, &inst.key),
        log: store.log_path(inst.stage, &inst.key),
        duration_s: 0.0,
        files: Vec::new(),
    }
}

fn unstarted(store: &Store, plan: &Plan, i: usize) -> InstanceReport {
    base_report(
        store,
        plan,
        i,
        Outcome::Skipped("not started: the run was stopped".into()),
    )
}

fn files_of(store: &Store, stage: &str, key: &str) -> Vec<String> {
    store
        .manifest(stage, key)
        .ok()
        .flatten()
        .map(|m| m.files.into_iter().map(|f| f.path).collect())
        .unwrap_or_default()
}

/// Cached outputs and instances blocked by their inputs are settled here, without a thread.
#[allow(clippy::too_many_arguments)]
fn settle_without_running(
    registry: &Registry,
    store: &Store,
    plan: &Plan,
    i: usize,
    decision: &Decision,
    inputs: &[&InstanceReport],
    stop: bool,
    excluded: bool,
) -> Option<InstanceReport> {
    let inst = &plan.instances[i];
    if decision.action == Action::Skip || excluded {
        if let Ok(None) = store.verify(inst.stage, &inst.key) {
            let mut r = base_report(store, plan, i, Outcome::Cached);
            r.files = files_of(store, inst.stage, &inst.key);
            for p in &inst.points {
                store.set_slot(&plan.pipeline, &plan.points[*p].id, inst.stage, &inst.key);
            }
            return Some(r);
        }
        if excluded {
            return Some(base_report(
                store,
                plan,
                i,
                Outcome::Skipped(decision.reason.clone()),
            ));
        }
    }
    let accepts_missing = registry
        .get(inst.stage)
        .is_some_and(|s| s.accepts_missing_inputs());
    let blocked: Vec<&&InstanceReport> = inputs.iter().filter(|r| !r.outcome.produced()).collect();
    if !blocked.is_empty() && (!accepts_missing || blocked.len() == inputs.len()) {
        let b = blocked[0];
        return Some(base_report(
            store,
            plan,
            i,
            Outcome::Skipped(format!("input `{}` {}", b.stage, b.outcome.name())),
        ));
    }
    if stop {
        return Some(unstarted(store, plan, i));
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn run_instance(
    registry: &Registry,
    store: &Store,
    plan: &Plan,
    i: usize,
    decision: &Decision,
    inputs: &[InstanceReport],
    options: &RunOptions,
    events: &dyn Events,
    cancel: &AtomicBool,
) -> InstanceReport {
    let inst = &plan.instances[i];
    let t0 = Instant::now();
    let finish = |mut r: InstanceReport| {
        r.duration_s = t0.elapsed().as_secs_f64();
        events.event(&Event::Finish {
            instance: i,
            outcome: r.outcome.clone(),
            duration_s: r.duration_s,
        });
        r
    };
    let Some(stage) = registry.get(inst.stage) else {
        return finish(base_report(
            store,
            plan,
            i,
            Outcome::Failed(format!("stage `{}` is not registered", inst.stage)),
        ));
    };

    // Inputs that produced output, and (for stages that accept it) those that did not.
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for r in inputs {
        if r.outcome.produced() {
            present.push(Input {
                stage: r.stage.clone(),
                key: r.key.clone(),
                dir: r.dir.clone(),
                points: r.points.clone(),
            });
        } else {
            let reason = match &r.outcome {
                Outcome::Failed(e) | Outcome::Skipped(e) => format!("{}: {e}", r.outcome.name()),
                other => other.name().to_string(),
            };
            missing.push(Missing {
                stage: r.stage.clone(),
                key: r.key.clone(),
                points: r.points.clone(),
                reason,
                log: Some(r.log.clone()),
            });
        }
    }
    // With missing inputs the output is partial: give it its own key, which also covers why each
    // input is missing (the stage may show it), so it never stands in for another result.
    let key = if missing.is_empty() {
        inst.key.clone()
    } else {
        let mut material: Vec<(String, String)> = present
            .iter()
            .map(|p| (p.stage.clone(), p.key.clone()))
            .collect();
        material.extend(
            missing
                .iter()
                .map(|m| (format!("missing:{}:{}", m.stage, m.reason), m.key.clone())),
        );
        match key_of(store, inst.stage, inst.version, &inst.params, &material) {
            Ok((k, _)) => k,
            Err(e) => return finish(base_report(store, plan, i, Outcome::Failed(e.to_string()))),
        }
    };
    let mut report = base_report(store, plan, i, Outcome::Ran);
    report.key = key.clone();
    report.dir = store.output_dir(inst.stage, &key);
    report.log = store.log_path(inst.stage, &key);

    let mut took_over = None;
    let lock = store.lock_with(
        inst.stage,
        &key,
        &options.lock,
        |e| match e {
            LockEvent::Waiting { holder } => events.event(&Event::Waiting {
                instance: i,
                holder: holder.to_string(),
            }),
            LockEvent::TakenOver { holder, reason } => {
                let line = format!("took over the lock of {} ({reason})", holder.describe());
                events.event(&Event::Log {
                    instance: i,
                    line: line.clone(),
                });
                took_over = Some(line);
            }
        },
        || cancel.load(Ordering::SeqCst),
    );
    let lock = match lock {
        Ok(Some(l)) => l,
        // Stopped while another process holds the instance: nothing of ours to keep.
        Ok(None) => {
            return finish(InstanceReport {
                outcome: Outcome::Interrupted,
                ..report
            });
        }
        Err(e) => {
            return finish(InstanceReport {
                outcome: Outcome::Failed(e.to_string()),
                ..report
            });
        }
    };
    // Someone else may have finished it while we waited.
    if !decision.forced
        && let Ok(None) = store.verify(inst.stage, &key)
    {
        report.outcome = Outcome::Cached;
        report.files = files_of(store, inst.stage, &key);
        for p in &inst.points {
            store.set_slot(&plan.pipeline, &plan.points[*p].id, inst.stage, &key);
        }
        return finish(report);
    }
    events.event(&Event::Start {
        instance: i,
        stage: inst.stage.to_string(),
        points: report.points.clone(),
        reason: decision.reason.clone(),
    });

    let work = store.work_dir(inst.stage, &key);
    let resumed = stage.resumable() && !decision.forced && work.is_dir();
    if !resumed {
        let _ = std::fs::remove_dir_all(&work);
    }
    if let Err(e) = std::fs::create_dir_all(&work) {
        return finish(InstanceReport {
            outcome: Outcome::Failed(format!("{}: {e}", work.display())),
            ..report
        });
    }
    let log_path = store.log_path(inst.stage, &key);
    if let Some(p) = log_path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .ok();
    let started = now_rfc3339();
    if let Some(f) = log.as_mut() {
        let what = if resumed { "resuming" } else { "starting" };
        let place: String = options
            .lock
            .placement
            .iter()
            .map(|(k, v)| format!(", {k} {}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect();
        let _ = writeln!(
            f,
            "== {what} {} {} at {started} on {} (pid {}{place}): {}",
            inst.stage,
            key,
            hostname(),
            std::process::id(),
            decision.reason
        );
        let _ = writeln!(
            f,
            "{}",
            attempt_line(&Attempt {
                started: started.clone(),
                resumed,
                host: hostname(),
                pid: std::process::id(),
                placement: options.lock.placement.clone(),
                previous: lock.previous().map(|p| PreviousAttempt {
                    holder: p.holder.clone(),
                    how: p.how.clone(),
                }),
            })
        );
        if let Some(p) = lock.previous() {
            let _ = writeln!(
                f,
                "== the previous holder, {}, {}",
                p.holder.describe(),
                p.how
            );
        }
        if let Some(line) = &took_over {
            let _ = writeln!(f, "== {line}");
        }
    }
    let ctx = Context {
        stage: inst.stage,
        key: &key,
        params: &inst.params,
        points: &report.points,
        inputs: &present,
        missing: &missing,
        out: &work,
        resumed,
        checkpoint_every: options.checkpoint_every,
        id: i,
        events,
        cancel,
        log: Mutex::new(log),
        started: t0,
    };
    let result = catch_unwind(AssertUnwindSafe(|| stage.run(&ctx))).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(StageError::Failed(anyhow::anyhow!(
            "internal error (panic): {msg}"
        )))
    });
    match result {
        Ok(()) => {
            ctx.log("finished; committing outputs");
            drop(ctx);
            let manifest = Manifest {
                stage: inst.stage.to_string(),
                version: inst.version,
                key: key.clone(),
                params: inst.params.clone(),
                inputs: input_map(&present),
                input_files: inst.input_files.clone(),
                files: Vec::new(),
                started,
                finished: now_rfc3339(),
                duration_s: t0.elapsed().as_secs_f64(),
                host: hostname(),
                tool_version: options.tool_version.clone(),
                git_revision: options.git_revision.clone(),
                points: report.points.clone(),
                input_points: present
                    .iter()
                    .map(|p| InputPoints {
                        stage: p.stage.clone(),
                        key: p.key.clone(),
                        points: p.points.clone(),
                    })
                    .collect(),
                missing: missing.clone(),
                placement: options.lock.placement.clone(),
            };
            if !lock.still_held() {
                let msg = "another process took this instance's lock over (it judged this one \
                    gone); not committing over its work"
                    .to_string();
                record(store, inst.stage, &key, &msg, &log_path);
                return finish(InstanceReport {
                    outcome: Outcome::Failed(msg),
                    ..report
                });
            }
            match store.commit(&work, manifest) {
                Ok(m) => {
                    report.files = m.files.into_iter().map(|f| f.path).collect();
                    for p in &inst.points {
                        store.set_slot(&plan.pipeline, &plan.points[*p].id, inst.stage, &key);
                    }
                    finish(report)
                }
                Err(e) => {
                    let msg = format!("committing the output failed: {e}");
                    record(store, inst.stage, &key, &msg, &log_path);
                    finish(InstanceReport {
                        outcome: Outcome::Failed(msg),
                        ..report
                    })
                }
            }
        }
        Err(StageError::Interrupted) => {
            if stage.resumable() {
                ctx.log("stopped on request; the work directory is kept so the next run resumes");
            } else {
                ctx.log("stopped on request; this stage restarts from the beginning next time");
                drop(ctx);
                let _ = std::fs::remove_dir_all(&work);
            }
            finish(InstanceReport {
                outcome: Outcome::Interrupted,
                ..report
            })
        }
        Err(StageError::Failed(e)) => {
            let msg = format!("{e:#}");
            ctx.log(format!("FAILED: {msg}"));
            drop(ctx);
            record(store, inst.stage, &key, &msg, &log_path);
            finish(InstanceReport {
                outcome: Outcome::Failed(msg),
                ..report
            })
        }
    }
}

fn input_map(inputs: &[Input]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let name = if inputs.iter().filter(|x| x.stage == input.stage).count() > 1 {
            format!("{}[{i}]", input.stage)
        } else {
            input.stage.clone()
        };
        out.insert(name, input.key.clone());
    }
    out
}

fn record(store: &Store, stage: &str, key: &str, error: &str, log: &std::path::Path) {
    store.record_failure(&FailureRecord {
        stage: stage.to_string(),
        key: key.to_string(),
        error: error.to_string(),
        log: log.to_path_buf(),
        time: now_rfc3339(),
        host: hostname(),
    });
}

/// Re-runs the stage of a committed store entry from its manifest alone (same parameters, the
/// same stored inputs) into a fresh temporary directory, which is returned with the manifest.
/// Used to re-render reports from the store on any machine.
pub fn rerun_entry(
    registry: &Registry,
    store: &Store,
    entry: &std::path::Path,
) -> Result<(Manifest, PathBuf), EngineError> {
    let path = entry.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| EngineError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let stage = registry.get(&manifest.stage).ok_or_else(|| {
        EngineError::Plan(format!(
            "{}: stage `{}` is not known to this vaepipe",
            path.display(),
            manifest.stage
        ))
    })?;
    let _store_lock = store.store_lock(false)?;
    let mut inputs = Vec::new();
    for (name, key) in &manifest.inputs {
        let input_stage = name.split('[').next().unwrap_or(name);
        if let Some(problem) = store.verify(input_stage, key)? {
            return Err(EngineError::Plan(format!(
                "input {input_stage}/{key} of {} is not usable: {problem}",
                entry.display()
            )));
        }
        // The points the input served in the original run (older manifests: its own record).
        let points = match manifest
            .input_points
            .iter()
            .find(|p| p.stage == input_stage && &p.key == key)
        {
            Some(p) => p.points.clone(),
            None => store
                .manifest(input_stage, key)?
                .map(|m| m.points)
                .unwrap_or_default(),
        };
        inputs.push(Input {
            stage: input_stage.to_string(),
            key: key.clone(),
            dir: store.output_dir(input_stage, key),
            points,
        });
    }
    let out = store.root().join("tmp").join(format!(
        "rerun-{}-{}-{}",
        manifest.stage,
        manifest.key,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| EngineError::io(&out, e))?;
    let cancel = AtomicBool::new(false);
    let ctx = Context {
        stage: stage.name(),
        key: &manifest.key,
        params: &manifest.params,
        points: &manifest.points,
        inputs: &inputs,
        missing: &manifest.missing,
        out: &out,
        resumed: false,
        checkpoint_every: None,
        id: 0,
        events: &NoEvents,
        cancel: &cancel,
        log: Mutex::new(None),
        started: Instant::now(),
    };
    let result = catch_unwind(AssertUnwindSafe(|| stage.run(&ctx))).unwrap_or_else(|_| {
        Err(StageError::Failed(anyhow::anyhow!(
            "internal error (panic)"
        )))
    });
    match result {
        Ok(()) => Ok((manifest.clone(), out)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&out);
            Err(EngineError::Plan(format!(
                "re-running {}: {e:#}",
                entry.display()
            )))
        }
    }
}
