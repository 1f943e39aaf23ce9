//! The subcommands. Each loads the spec, builds the plan with the engine and prints people- or
//! script-facing output; exit codes are defined here.

pub mod bench;
pub mod submit;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;
use vaepipe_engine::{
    Action, Outcome, Plan, Point, Registry, RunOptions, RunReport, Store, explain, plan,
};
use vaepipe_spec::Spec;

use crate::cli::{
    Cli, Color, Command, CompareArgs, GcArgs, PlanArgs, ReportArgs, RunArgs, Selection, SpecArgs,
    StatusArgs,
};
use crate::progress::Display;

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 3;

/// Global options every command needs.
pub struct Global {
    pub store: PathBuf,
    pub color: bool,
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let store = cli
        .store
        .clone()
        .or_else(|| std::env::var_os("VAEPIPE_STORE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".vaepipe"));
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let g = Global { store, color };
    match cli.command {
        Command::Run(a) => run(&g, a),
        Command::Plan(a) => plan_cmd(&g, a),
        Command::Validate(a) => validate(&g, a),
        Command::Status(a) => status(&g, a),
        Command::Report(a) => report(&g, a),
        Command::Gc(a) => gc(&g, a),
        Command::Bench(a) => bench::run(a),
        Command::Submit(a) => submit::run(&g, a),
        Command::Compare(a) => compare(&g, a),
    }
}

/// Loads a spec, printing its errors (exit 2) if it is invalid.
pub fn load_spec(g: &Global, args: &SpecArgs) -> Result<Spec, ExitCode> {
    match vaepipe_spec::load(&args.spec, &args.overrides) {
        Ok(s) => Ok(s),
        Err(errors) => {
            if args.json {
                let out = json!({ "valid": false, "errors": errors.records() });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                eprint!("{}", errors.render(g.color));
            }
            Err(ExitCode::from(EXIT_INVALID))
        }
    }
}

pub fn open_store(g: &Global) -> anyhow::Result<Store> {
    Store::open(&g.store).with_context(|| format!("cannot open the store at {}", g.store.display()))
}

/// For commands that only look at a store: it must exist.
pub fn open_existing_store(g: &Global) -> anyhow::Result<Store> {
    Ok(Store::open_existing(&g.store)?)
}

pub use vaepipe_stages::points_of;

/// Selects points by index or id; returns them and whether all points are selected.
pub fn select(spec: &Spec, selection: &[String]) -> Result<(Vec<Point>, bool), String> {
    let all = points_of(spec);
    if selection.is_empty() {
        return Ok((all, true));
    }
    let mut chosen = Vec::new();
    for s in selection {
        let found = match s.parse::<usize>() {
            Ok(i) => all.iter().find(|p| p.index == i),
            Err(_) => all.iter().find(|p| p.id == *s),
        };
        match found {
            Some(p) if !chosen.iter().any(|c: &Point| c.index == p.index) => chosen.push(p.clone()),
            Some(_) => {}
            None => {
                return Err(format!(
                    "no sweep point `{s}`: the spec has {} point{} (indices 0..{}); see `vaepipe plan`",
                    all.len(),
                    if all.len() == 1 { "" } else { "s" },
                    all.len().saturating_sub(1)
                ));
            }
        }
    }
    chosen.sort_by_key(|p| p.index);
    let complete = chosen.len() == all.len();
    Ok((chosen, complete))
}

fn check_stages(registry: &Registry, selection: &Selection) -> Result<(), String> {
    let names = registry.names();
    for (flag, list) in [
        ("--force", &selection.force),
        ("--stage", &selection.stages),
    ] {
        for f in list {
            if !names.contains(&f.as_str()) {
                return Err(format!(
                    "{flag} {f}: no such stage (stages: {})",
                    names.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// The stages `--stage` selects, with everything they read (transitively); `None` = all.
fn stage_closure(registry: &Registry, stages: &[String]) -> Option<Vec<String>> {
    if stages.is_empty() {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let mut todo: Vec<String> = stages.to_vec();
    while let Some(s) = todo.pop() {
        if out.contains(&s) {
            continue;
        }
        if let Some(stage) = registry.get(&s) {
            todo.extend(stage.inputs().iter().map(|i| i.to_string()));
        }
        out.push(s);
    }
    out.sort();
    Some(out)
}

fn usage_error(msg: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("error: {msg}");
    Ok(ExitCode::from(EXIT_INVALID))
}

/// Why a plan could not be made: the user's selection (exit 2) or the engine (exit 1).
enum PrepareError {
    Usage(String),
    Engine(anyhow::Error),
}

impl PrepareError {
    fn exit(self) -> anyhow::Result<ExitCode> {
        match self {
            PrepareError::Usage(msg) => usage_error(msg),
            PrepareError::Engine(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(EXIT_FAILED))
            }
        }
    }
}

/// The plan and decisions for a spec and a selection.
fn prepare(
    store: &Store,
    registry: &Registry,
    spec: &Spec,
    selection: &Selection,
) -> Result<(Plan, Vec<vaepipe_engine::Decision>), PrepareError> {
    let (points, complete) = select(spec, &selection.points).map_err(PrepareError::Usage)?;
    if !complete {
        for name in selection.stages.iter().chain(&selection.force) {
            if registry
                .get(name)
                .is_some_and(|s| s.scope() == vaepipe_engine::Scope::Gather)
            {
                return Err(PrepareError::Usage(format!(
                    "`{name}` gathers every sweep point, so it does not run with --point; drop --point (or use `vaepipe report`)"
                )));
            }
        }
    }
    let mut p = plan(registry, store, spec.name(), points, complete)
        .map_err(|e| PrepareError::Engine(e.into()))?;
    if let Some(keep) = stage_closure(registry, &selection.stages) {
        p = p.restrict(|i| keep.iter().any(|k| k == i.stage));
    }
    if selection.shared {
        // Inputs of a shared instance serve at least the same points, so the closure is kept.
        let gather: Vec<&str> = registry
            .stages()
            .filter(|s| s.scope() == vaepipe_engine::Scope::Gather)
            .map(|s| s.name())
            .collect();
        p = p.restrict(|i| i.points.len() > 1 && !gather.contains(&i.stage));
    }
    let d = explain(&p, store, &selection.force).map_err(|e| PrepareError::Engine(e.into()))?;
    Ok((p, d))
}

pub fn git_revision(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let dirty = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

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

/// Copies a committed report directory to `reports/<slug>/`, replacing the previous one.
fn publish_report(
    report: &RunReport,
    reports: &Path,
    name: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(inst) = report
        .instances
        .iter()
        .rev()
        .find(|i| i.stage == "report" && matches!(i.outcome, Outcome::Ran | Outcome::Cached))
    else {
        return Ok(None);
    };
    let dest = reports.join(vaepipe_engine::store::slug(name));
    vaepipe_stages::publish_dir(&inst.dir, &dest)
        .with_context(|| format!("cannot publish the report to {}", dest.display()))?;
    Ok(Some(dest))
}

fn run(g: &Global, a: RunArgs) -> anyhow::Result<ExitCode> {
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
        Err(e) => return e.exit(),
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
        lock: submit::lock_options(),
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
    let published = publish_report(&report, &reports_dir, spec.name())?;
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

/// The points an instance serves, for people: "all points" when it serves every point of the
/// run (`total`), else their labels.
fn labels(points: &[vaepipe_engine::PointRef], total: usize) -> String {
    let l: Vec<&str> = points
        .iter()
        .map(|p| p.label.as_str())
        .filter(|l| !l.is_empty())
        .collect();
    if l.is_empty() || (points.len() == total && total > 1) {
        "all points".into()
    } else if l.len() > 3 {
        format!("{} points", l.len())
    } else {
        l.join(" | ")
    }
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

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn plan_cmd(g: &Global, a: PlanArgs) -> anyhow::Result<ExitCode> {
    let spec = match load_spec(g, &a.spec) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let registry = vaepipe_stages::registry();
    if let Err(e) = check_stages(&registry, &a.selection) {
        return usage_error(e);
    }
    let store = open_store(g)?;
    let (p, decisions) = match prepare(&store, &registry, &spec, &a.selection) {
        Ok(x) => x,
        Err(e) => return e.exit(),
    };
    if a.spec.json {
        let instances: Vec<_> = p
            .instances
            .iter()
            .zip(&decisions)
            .map(|(i, d)| {
                json!({
                    "stage": i.stage,
                    "key": i.key,
                    "points": i.points.iter().map(|x| p.points[*x].as_ref()).collect::<Vec<_>>(),
                    "inputs": i.inputs.iter().map(|x| json!({"stage": p.instances[*x].stage, "key": p.instances[*x].key})).collect::<Vec<_>>(),
                    "action": d.action,
                    "reason": d.reason,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"pipeline": spec.name(), "instances": instances})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "plan for `{}` ({} point{}, store {})",
        spec.name(),
        p.points.len(),
        if p.points.len() == 1 { "" } else { "s" },
        store.root().display()
    );
    for (i, (inst, d)) in p.instances.iter().zip(&decisions).enumerate() {
        let deps: Vec<String> = inst.inputs.iter().map(|x| format!("#{x}")).collect();
        let action = match d.action {
            Action::Run => "RUN ",
            Action::Skip => "skip",
        };
        println!(
            "  #{i:<3} {action} {:<7} {}  {:<24} {}{}",
            inst.stage,
            &inst.key[..10],
            truncate(
                &labels(
                    &inst
                        .points
                        .iter()
                        .map(|x| p.points[*x].as_ref())
                        .collect::<Vec<_>>(),
                    p.points.len()
                ),
                24
            ),
            d.reason,
            if deps.is_empty() {
                String::new()
            } else {
                format!("  ← {}", deps.join(" "))
            }
        );
    }
    let n = decisions.iter().filter(|d| d.action == Action::Run).count();
    println!("{n} to run, {} up to date", decisions.len() - n);
    Ok(ExitCode::SUCCESS)
}

fn validate(g: &Global, a: SpecArgs) -> anyhow::Result<ExitCode> {
    let spec = match load_spec(g, &a) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if a.json {
        let runs: Vec<_> = spec
            .runs
            .iter()
            .map(|r| json!({"index": r.index, "id": r.id, "label": r.label, "config": r.config}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"valid": true, "pipeline": spec.name(), "runs": runs})
            )?
        );
    } else {
        println!(
            "{}: valid; {} run{}{}",
            a.spec.display(),
            spec.runs.len(),
            if spec.runs.len() == 1 { "" } else { "s" },
            if spec.sweep_keys.is_empty() {
                String::new()
            } else {
                format!(" (sweep over {})", spec.sweep_keys.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// State of one instance for `status`.
pub fn instance_state(
    store: &Store,
    stage: &str,
    key: &str,
) -> anyhow::Result<(&'static str, String)> {
    if store.verify(stage, key)?.is_none() {
        return Ok(("done", String::new()));
    }
    if store.is_locked(stage, key) {
        return Ok(("running", String::new()));
    }
    if let Some(f) = store.failure(stage, key) {
        return Ok((
            "failed",
            format!(
                "{} (log: {})",
                f.error.lines().next().unwrap_or(""),
                f.log.display()
            ),
        ));
    }
    if store.work_dir(stage, key).exists() {
        return Ok(("interrupted", "resumes on the next run".into()));
    }
    Ok(("missing", String::new()))
}

fn status(g: &Global, a: StatusArgs) -> anyhow::Result<ExitCode> {
    let spec = match load_spec(g, &a.spec) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let registry = vaepipe_stages::registry();
    let store = open_existing_store(g)?;
    let p = plan(&registry, &store, spec.name(), points_of(&spec), true)?;
    let mut rows = Vec::new();
    for inst in &p.instances {
        let (state, detail) = instance_state(&store, inst.stage, &inst.key)?;
        rows.push((inst, state, detail));
    }
    // With a SLURM submission of this spec in the store: each point's queue state, from one
    // squeue call for the whole submission (docs/slurm.md).
    let queue = submit::queue_view(&registry, &store, &p)?;
    if a.spec.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(i, s, d)| json!({"stage": i.stage, "key": i.key, "points": i.points.iter().map(|x| p.points[*x].as_ref()).collect::<Vec<_>>(), "state": s, "detail": d, "dir": store.output_dir(i.stage, &i.key)}))
            .collect();
        let mut doc = json!({"pipeline": spec.name(), "instances": out});
        if let (Some(q), Some(m)) = (&queue, doc.as_object_mut()) {
            let (slurm, points) = q.json();
            m.insert("slurm".into(), slurm);
            m.insert("points".into(), points);
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (i, s, d) in &rows {
            println!(
                "{:<8} {:<12} {:<28} {d}",
                i.stage,
                s,
                truncate(
                    &labels(
                        &i.points
                            .iter()
                            .map(|x| p.points[*x].as_ref())
                            .collect::<Vec<_>>(),
                        p.points.len()
                    ),
                    28
                )
            );
        }
        let done = rows.iter().filter(|r| r.1 == "done").count();
        println!("{done}/{} done", rows.len());
        if let Some(q) = &queue {
            q.print();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vaepipe compare`: reads the store only; the logic is in `vaepipe_stages::compare`.
fn compare(g: &Global, a: CompareArgs) -> anyhow::Result<ExitCode> {
    use vaepipe_stages::compare as cmp;
    let mut specs = Vec::new();
    for path in &a.specs {
        let args = SpecArgs {
            spec: path.clone(),
            overrides: a.overrides.clone(),
            json: a.json,
        };
        match load_spec(g, &args) {
            Ok(s) => specs.push(cmp::SpecPoints {
                pipeline: s.name().to_string(),
                points: points_of(&s),
            }),
            Err(code) => return Ok(code),
        }
    }
    let registry = vaepipe_stages::registry();
    let store = open_existing_store(g)?;
    let mut c = cmp::compare(&registry, &store, specs)?;
    if let Some(key) = &a.sort
        && let Err(e) = cmp::sort(&mut c, key)
    {
        return usage_error(e);
    }
    if let Some(pair) = &a.diff {
        let d = match cmp::diff(&c, &pair[0], &pair[1]) {
            Ok(d) => d,
            Err(e) => return usage_error(e),
        };
        if a.json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            print!("{}", cmp::render_diff(&d, a.width));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        let names: Vec<String> = a.specs.iter().map(|p| p.display().to_string()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&cmp::json_document(&c, &names))?
        );
    } else {
        print!("{}", cmp::render_table(&c, a.width));
    }
    Ok(ExitCode::SUCCESS)
}

fn report(g: &Global, a: ReportArgs) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(g)?;
    let reports_dir = a
        .reports
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports"));
    // A store entry: re-render from its manifest and the stored inputs alone.
    if a.target.is_dir() {
        let registry = vaepipe_stages::registry();
        let stage = std::fs::read(a.target.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|m| m["stage"].as_str().map(str::to_string));
        match stage.as_deref() {
            Some("report") => {}
            Some(other) => {
                return usage_error(format!(
                    "{} is a `{other}` entry of the store; give a report entry (<store>/store/report/<key>) or a spec",
                    a.target.display()
                ));
            }
            None => {
                return usage_error(format!(
                    "{} is neither a spec file nor a store entry with a manifest.json",
                    a.target.display()
                ));
            }
        }
        let (manifest, dir) = match vaepipe_engine::rerun_entry(&registry, &store, &a.target) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        };
        let name = manifest.params["pipeline"]["name"]
            .as_str()
            .unwrap_or("report")
            .to_string();
        let dest = reports_dir.join(vaepipe_engine::store::slug(&name));
        let published = vaepipe_stages::publish_dir(&dir, &dest);
        let _ = std::fs::remove_dir_all(&dir);
        published?;
        print_report_location(&dest, a.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let args = SpecArgs {
        spec: a.target.clone(),
        overrides: a.overrides.clone(),
        json: a.json,
    };
    let spec = match load_spec(g, &args) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let registry = vaepipe_stages::registry();
    let p = plan(&registry, &store, spec.name(), points_of(&spec), true)?;
    let mut decisions = explain(&p, &store, &["report".to_string()])?;
    // Nothing but the report is computed here: missing upstream results are listed as such.
    for (inst, d) in p.instances.iter().zip(decisions.iter_mut()) {
        if inst.stage != "report" && d.action == Action::Run {
            d.reason = "not computed (vaepipe report only renders; use vaepipe run)".into();
        }
    }
    let options = RunOptions {
        jobs: 1,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: spec.path.parent().and_then(git_revision),
        only_stages: Some(vec!["report".to_string()]),
        lock: submit::lock_options(),
        ..Default::default()
    };
    let cancel = AtomicBool::new(false);
    let display = Display::new(&p, false, true);
    let result = vaepipe_engine::execute(
        &registry, &store, &p, &decisions, &options, &display, &cancel,
    )?;
    match publish_report(&result, &reports_dir, spec.name())? {
        Some(dest) => {
            print_report_location(&dest, a.json)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            match result.instances.iter().find(|i| i.stage == "report") {
                Some(r) if matches!(r.outcome, Outcome::Failed(_)) => {
                    let detail = match &r.outcome {
                        Outcome::Failed(e) => e.as_str(),
                        _ => "",
                    };
                    eprintln!(
                        "error: rendering the report failed: {detail}\n  log: {}",
                        r.log.display()
                    );
                }
                _ => eprintln!(
                    "error: the report could not be rendered: no stage of `{}` has produced output yet (run `vaepipe run` first)",
                    spec.name()
                ),
            }
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn print_report_location(dest: &Path, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"report": {"dir": dest, "markdown": dest.join("index.md"), "html": dest.join("index.html")}})
            )?
        );
    } else {
        println!("report: {}", dest.join("index.html").display());
    }
    Ok(())
}

fn gc(g: &Global, a: GcArgs) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(g)?;
    let registry = vaepipe_stages::registry();
    let mut keep = std::collections::BTreeSet::new();
    if a.specs.is_empty() {
        keep.extend(store.slot_keys()?);
    } else {
        for s in &a.specs {
            let args = SpecArgs {
                spec: s.clone(),
                overrides: Vec::new(),
                json: a.json,
            };
            let spec = match load_spec(g, &args) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            let p = plan(&registry, &store, spec.name(), points_of(&spec), true)?;
            keep.extend(
                p.instances
                    .iter()
                    .map(|i| (i.stage.to_string(), i.key.clone())),
            );
        }
    }
    let _lock = if a.dry_run {
        None
    } else {
        Some(store.store_lock(true)?)
    };
    let mut removed = Vec::new();
    for (stage, key) in store.entries()? {
        if keep.contains(&(stage.clone(), key.clone())) {
            continue;
        }
        let dir = store.output_dir(&stage, &key);
        let bytes = dir_size(&dir);
        if !a.dry_run {
            store.remove(&stage, &key)?;
        }
        removed.push(json!({"stage": stage, "key": key, "bytes": bytes}));
    }
    // Leftovers: abandoned work directories, logs and failure records of removed keys, stale
    // locks, temporary files.
    let mut leftovers = Vec::new();
    for path in store.orphans(&keep)? {
        let bytes = if path.is_dir() {
            dir_size(&path)
        } else {
            std::fs::metadata(&path).map_or(0, |m| m.len())
        };
        if !a.dry_run {
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        leftovers.push(json!({"path": path, "bytes": bytes}));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"dry_run": a.dry_run, "removed": removed, "leftovers": leftovers})
            )?
        );
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for r in &removed {
            println!(
                "{verb} {}/{} ({} bytes)",
                r["stage"].as_str().unwrap_or(""),
                r["key"].as_str().unwrap_or(""),
                r["bytes"]
            );
        }
        let total: u64 = removed
            .iter()
            .chain(&leftovers)
            .filter_map(|r| r["bytes"].as_u64())
            .sum();
        println!(
            "{} entr{} and {} leftover file{} ({:.1} MB) {}",
            removed.len(),
            if removed.len() == 1 { "y" } else { "ies" },
            leftovers.len(),
            if leftovers.len() == 1 { "" } else { "s" },
            total as f64 / 1e6,
            if a.dry_run {
                "would be removed"
            } else {
                "removed"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += dir_size(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
