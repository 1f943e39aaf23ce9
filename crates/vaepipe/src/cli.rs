//! Command-line arguments (clap). Names and `--json` outputs are a contract with users'
//! scripts: extend, never rename (docs/cli.md).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use vaepipe_spec::{Estimator, Objective};

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
    Bench(BenchArgs),
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

// ---------------------------------------------------------------- vaepipe bench

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: Bench,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Bench {
    /// Test images per second of the importance-sampled NLL at k samples (the eval stage).
    Eval(EvalArgs),
    /// Images per second of a training step (Trainer::step).
    Train(TrainArgs),
    /// f32 GEMM GFLOP/s on the network's shapes (dfdx's matmul and the packed kernel).
    Gemm(GemmArgs),
}

/// The network and the reporting options every benchmark shares.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Hidden layer widths of the encoder and of the decoder (mirrored).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "200,200",
        value_name = "W,W"
    )]
    pub hidden: Vec<usize>,
    /// Latent dimension.
    #[arg(long, default_value_t = 50)]
    pub latent: usize,
    /// Input dimension (784 for MNIST).
    #[arg(long, default_value_t = 784)]
    pub input: usize,
    /// Measurements taken (reported as min/median/max).
    #[arg(long, default_value_t = 3, value_name = "R")]
    pub repeat: usize,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Importance samples per image.
    #[arg(long, default_value_t = 5000)]
    pub k: usize,
    /// Test images per measurement.
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    /// Sample rows evaluated at once (default: the evaluator's).
    #[arg(long)]
    pub chunk: Option<usize>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `--objective`: the spec's names (`elbo`, `iwae`, `miwae`, `ciwae`, `piwae`), listed in
/// `--help`.
fn objective_flag() -> impl TypedValueParser<Value = Objective> {
    PossibleValuesParser::new(Objective::ALL).try_map(|s| s.parse::<Objective>())
}

/// `--estimator`: the spec's names (`reparam`, `dreg`), listed in `--help`.
fn estimator_flag() -> impl TypedValueParser<Value = Estimator> {
    PossibleValuesParser::new(Estimator::ALL).try_map(|s| s.parse::<Estimator>())
}

/// The values of `bench train --trainable`.
const TRAINABLE: [&str; 3] = ["model", "prior", "all"]; // tidy: not a stage (a trainable set)

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    #[arg(long, value_parser = objective_flag(), default_value_t = Objective::Iwae)]
    pub objective: Objective,
    #[arg(long, value_parser = estimator_flag(), default_value_t = Estimator::Reparam)]
    pub estimator: Estimator,
    /// Importance samples per image (per group for `miwae` and `piwae`).
    #[arg(long, default_value_t = 50)]
    pub k: usize,
    /// Groups M of `miwae` and `piwae` (each of k samples), as `train.m`.
    #[arg(long, default_value_t = 1)]
    pub m: usize,
    /// CIWAE's β (the ELBO's share, in [0, 1]), as `train.beta`; required for `ciwae`.
    #[arg(long)]
    pub beta: Option<f64>,
    /// Images per step.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Seconds of stepping per measurement.
    #[arg(long, default_value_t = 3.0, value_name = "S")]
    pub seconds: f64,
    /// Step on the generic dfdx-tape path even where the fast f32 path is available (to
    /// compare the two; both compute the same values and gradients).
    #[arg(long)]
    pub generic: bool,
    /// The prior: `standard-normal`, `mog` (a random K-component Gaussian mixture, as after a
    /// `mog` refit) or `vamp` (a VampPrior on K random images).
    #[arg(long, value_parser = ["standard-normal", "mog", "vamp"], default_value = "standard-normal")]
    pub prior: String,
    /// Components K of `--prior mog` or pseudo-inputs of `--prior vamp` (Tomczak & Welling
    /// 2018 use 500).
    #[arg(long, default_value_t = 500, value_name = "K")]
    pub components: usize,
    /// What the steps train: `model` (encoder and decoder: training, fine-tuning), `prior`
    /// (the prior's parameters alone: a gradient refit) or `all`.
    #[arg(long, value_parser = TRAINABLE, default_value = "model")]
    pub trainable: String,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Args, Debug, Clone)]
pub struct GemmArgs {
    /// Rows of the left operand (a batch of samples).
    #[arg(long, default_value_t = 1000)]
    pub rows: usize,
    #[command(flatten)]
    pub net: NetArgs,
}
