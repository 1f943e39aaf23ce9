//! Command-line arguments (clap). Names and `--json` outputs are a contract with users'
//! scripts: extend, never rename (docs/cli.md).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "vaepipe",
    version,
    about = "Reproducible VAE experiments from a TOML pipeline spec",
    propagate_version = true
)]
pub struct Cli {
    /// Artifact store directory [env: VAEPIPE_STORE] [default: .vaepipe]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// When to use colours and progress bars.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline: plan, skip what is up to date, run the rest, write the report.
    Run(RunArgs),
    /// Show the plan: every stage instance, whether it would run, and why.
    Plan(PlanArgs),
    /// Check a spec (and overrides) without running anything.
    Validate(SpecArgs),
    /// Show what is done, running, failed or missing for a spec.
    Status(StatusArgs),
    /// Re-render the report from stored artifacts only (nothing is recomputed).
    Report(ReportArgs),
    /// Remove store entries that no given spec (or, without specs, no recorded run) refers to.
    Gc(GcArgs),
    /// Measure speed (JSON with --json): training steps, evaluation, and this machine's GEMM peak.
    Bench(crate::commands::bench::BenchArgs),
    /// Submit a sweep to a batch cluster (SLURM array jobs sharing this store).
    Submit(SubmitArgs),
    /// Compare the points of specs from the store only (nothing runs): differing parameters,
    /// test NLL ± se, ELBO, active units, epochs, training time; or two points with --diff.
    Compare(CompareArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The pipeline specs whose points are compared (all their sweep points).
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
    /// Override a key of every spec, e.g. --set train.k=50 (validated like the file). Relative
    /// paths given with --set are resolved against the working directory.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Sort by a metric (test_nll, elbo, active_units, epochs, train_seconds, …) or a
    /// parameter (dotted key such as train.k, or its last part when unambiguous).
    #[arg(long, value_name = "KEY")]
    pub sort: Option<String>,
    /// Two points side by side (each an id, a label, an index or PIPELINE:INDEX).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub diff: Option<Vec<String>>,
    /// Table width in characters.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub width: usize,
    /// Print machine-readable JSON on stdout (docs/cli.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SpecArgs {
    /// The pipeline spec (TOML).
    pub spec: PathBuf,
    /// Override a key of the spec, e.g. --set train.k=50 (validated like the file). Relative
    /// paths given with --set are resolved against the working directory.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct Selection {
    /// Only these sweep points (index or id; repeatable). Gather stages (the report) run only
    /// when every point is selected.
    #[arg(long = "point", value_name = "I")]
    pub points: Vec<String>,
    /// Recompute every instance of this stage and everything downstream of it (repeatable).
    #[arg(long = "force", value_name = "STAGE")]
    pub force: Vec<String>,
    /// Run only this stage and the stages it needs (repeatable), e.g. `--stage data`.
    #[arg(long = "stage", value_name = "STAGE")]
    pub stages: Vec<String>,
    /// Run only the stage instances that several sweep points share (and what they need), e.g.
    /// before a SLURM array runs each point with --point.
    #[arg(long)]
    pub shared: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub selection: Selection,
    /// Stage instances to run at the same time (independent sweep points).
    #[arg(long, short = 'j', default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// Save a training checkpoint at least every N optimizer steps (always at epoch ends).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Where reports are published [default: reports].
    #[arg(long, value_name = "DIR")]
    pub reports: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// The pipeline spec, or a report entry of the store (`.vaepipe/store/report/<key>`).
    pub target: PathBuf,
    /// Override a key of the spec (relative paths: against the working directory).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Where reports are published [default: reports].
    #[arg(long, value_name = "DIR")]
    pub reports: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct GcArgs {
    /// Specs whose artifacts are kept (all their points). Without any, every key recorded by
    /// an earlier run is kept.
    pub specs: Vec<PathBuf>,
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

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
