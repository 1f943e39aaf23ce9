//! `vaepipe run`: plans the selection, executes it with progress, publishes the report, and
//! prints a summary (or the `--json` document); SIGTERM/USR1/INT checkpoint and stop.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use serde_json::json;
use vaepipe_engine::{Action, Outcome, RunOptions, RunReport};

use super::common::{
    EXIT_FAILED, EXIT_INTERRUPTED, Global, check_stages, git_revision, labels, load_spec,
    open_store, prepare, prepare_failed, truncate, usage_error,
};
use crate::cli::RunArgs;
use crate::progress::Display;

/// SIGTERM, SIGUSR1 and SIGINT ask running stages to checkpoint and stop (the returned flag).
/// A second signal *of the same kind* ends the process at once (exit 130), so a SLURM USR1
/// warning followed by the TERM of the time limit still lets the checkpoint finish.
fn signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGINT,
    ] {
        let seen = Arc::new(AtomicBool::new(false));
        // Order matters: the shutdown check runs before this signal marks itself as seen.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, seen.clone());
        let _ = signal_hook::flag::register(sig, seen);
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    stop
}

#[derive(Serialize)]
struct JsonInstance<'a> {
    stage: &'a str,
    points: &'a [vaepipe_engine::PointRef],
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    key: &'a str,
    dir: &'a Path,
    log: &'a Path,
    duration_s: f64,
}

#[derive(Serialize)]
struct JsonMetrics {
    stage: String,
    points: Vec<vaepipe_engine::PointRef>,
    path: PathBuf,
}

fn json_instances(report: &RunReport) -> Vec<JsonInstance<'_>> {
    report
        .instances
        .iter()
        .map(|i| JsonInstance {
            stage: &i.stage,
            points: &i.points,
            status: i.outcome.name(),
            detail: match &i.outcome {
                Outcome::Failed(d) | Outcome::Skipped(d) => Some(d),
                _ => None,
            },
            key: &i.key,
            dir: &i.dir,
            log: &i.log,
            duration_s: i.duration_s,
        })
        .collect()
}

fn metrics_files(report: &RunReport) -> Vec<JsonMetrics> {
    let mut out = Vec::new();
    for i in &report.instances {
        if !matches!(i.outcome, Outcome::Ran | Outcome::Cached) {
            continue;
        }
        for f in &i.files {
            if f == "metrics.json" || f.ends_with("/metrics.json") {
                out.push(JsonMetrics {
                    stage: i.stage.clone(),
                    points: i.points.clone(),
                    path: i.dir.join(f),
                });
            }
        }
    }
    out
}

pub fn run(g: &Global, a: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = match load_spec(g, &a.spec) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let registry = vaepipe_stages::registry();
    if let Err(e) = check_stages(&registry, &a.selection) {
        return usage_error(e);
    }
    if a.jobs == 0 {
        return usage_error("--jobs must be at least 1");
    }
    let store = open_store(g)?;
    let (p, decisions) = match prepare(&store, &registry, &spec, &a.selection) {
        Ok(x) => x,
        Err(e) => return prepare_failed(e),
    };
    let to_run = decisions.iter().filter(|d| d.action == Action::Run).count();
    if !a.spec.json {
        eprintln!(
            "{}: {} point{}, {} stage instance{} ({} to run, {} up to date); store {}",
            spec.name(),
            p.points.len(),
            if p.points.len() == 1 { "" } else { "s" },
            p.instances.len(),
            if p.instances.len() == 1 { "" } else { "s" },
            to_run,
            p.instances.len() - to_run,
            store.root().display()
        );
    }
    let checkpoint_every = match (
        a.checkpoint_every,
        std::env::var("VAEPIPE_CHECKPOINT_EVERY"),
    ) {
        (Some(n), _) => Some(n),
        (None, Ok(s)) => match s.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return usage_error(format!(
                    "VAEPIPE_CHECKPOINT_EVERY={s:?} is not a number of steps"
                ));
            }
        },
        (None, Err(_)) => None,
    };
    let options = RunOptions {
        jobs: a.jobs,
        checkpoint_every,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: spec.path.parent().and_then(git_revision),
        only_stages: None,
        lock: vaepipe_slurm::lock_options(),
    };
    let cancel = signals();
    // With --json, stdout carries the JSON summary; progress goes to stderr as plain lines
    // (as when stderr is not a terminal), so a batch log of a --json run shows what happens.
    let display = Display::new(
        &p,
        g.color && std::io::stderr().is_terminal() && !a.spec.json,
        false,
    );
    let report = vaepipe_engine::execute(
        &registry, &store, &p, &decisions, &options, &display, &cancel,
    )?;
    display.finish();
    let reports_dir = a
        .reports
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports"));
    let published = vaepipe_stages::publish_report(&report, &reports_dir, spec.name())?;
    let failed: Vec<_> = report.failed().collect();
    let status = if report.interrupted {
        "interrupted"
    } else if !failed.is_empty() {
        "failed"
    } else {
        "ok"
    };
    if a.spec.json {
        let out = json!({
            "pipeline": spec.name(),
            "status": status,
            "store": store.root(),
            "instances": json_instances(&report),
            "report": published.as_ref().map(|d| json!({
                "dir": d, "markdown": d.join("index.md"), "html": d.join("index.html"),
            })),
            "metrics": metrics_files(&report),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_summary(&report, p.points.len());
        if let Some(d) = &published {
            println!("report: {}", d.join("index.html").display());
        }
        for f in &failed {
            eprintln!(
                "FAILED {} ({}): see {}",
                f.stage,
                labels(&f.points, p.points.len()),
                f.log.display()
            );
        }
        if report.interrupted {
            eprintln!("interrupted: checkpoints are saved; run the same command again to resume");
        }
    }
    Ok(ExitCode::from(match status {
        "ok" => 0,
        "interrupted" => EXIT_INTERRUPTED,
        _ => EXIT_FAILED,
    }))
}

fn print_summary(report: &RunReport, total: usize) {
    println!(
        "{:<8} {:<12} {:>9}  {:<22} output",
        "stage", "status", "seconds", "points"
    );
    for i in &report.instances {
        println!(
            "{:<8} {:<12} {:>9.1}  {:<22} {}",
            i.stage,
            i.outcome.name(),
            i.duration_s,
            truncate(&labels(&i.points, total), 22),
            if matches!(i.outcome, Outcome::Ran | Outcome::Cached) {
                i.dir.display().to_string()
            } else {
                String::new()
            }
        );
    }
}
