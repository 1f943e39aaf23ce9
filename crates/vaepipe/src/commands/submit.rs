//! `vaepipe submit`: hands a sweep to a batch cluster through the vaepipe-slurm crate — a job
//! for the stage instances several points share (`vaepipe run --shared`), one array task per
//! sweep point, and a report job after the array (docs/slurm.md). The queue view `vaepipe
//! status` adds is `vaepipe_slurm::queue_view`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};
use vaepipe_engine::Action;
use vaepipe_slurm::{JobKind, PointInfo, Resources, Submission, Tools};

use super::common::{Global, load_spec, open_store, prepare, prepare_failed, usage_error};
use crate::cli::{Selection, SpecArgs, SubmitArgs};

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
        Err(e) => return prepare_failed(e),
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
