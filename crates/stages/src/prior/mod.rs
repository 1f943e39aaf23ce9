//! The prior stage (empirical Bayes): refits the prior of a trained model — the exact aggregate
//! posterior, a mixture of Gaussians, or the VampPrior — measures what it gains, and optionally
//! fine-tunes the model under the new prior. Artifacts: docs/artifacts.md, section `prior/`.
//!
//! The science (../shared/notes/science.md): the dataset-average ELBO depends on the prior only
//! through E_{q_agg} log p(z) with q_agg(z) = (1/N) Σ_n q(z|x_n), so the best prior for it is
//! q_agg itself (Gibbs' inequality; Hoffman & Johnson 2016, "ELBO surgery"), a mixture of N
//! Gaussians. Cheaper approximations: a K-component mixture fitted by EM to draws from q_agg
//! (maximizes exactly that term), or fitted — like the VampPrior of Tomczak & Welling (2018),
//! p(z) = (1/K) Σ_k q(z|u_k) — by gradient ascent on the average bound of the training objective
//! (L_k for k > 1, where q_agg is no longer exactly optimal) with encoder and decoder fixed.
//!
//! Every comparison uses common random numbers: the same rows and the same noise ε under every
//! prior, so differences between priors are far more precise than the bounds themselves. The
//! refit never lowers what it maximizes: if the fitted prior scores below its starting point on
//! the refit's own draws, the starting point is kept (and the log says so). The test rows are
//! binarized (under `binarize = "dynamic"`) with `eval.binarization_seed`, exactly as the eval
//! stage does, so `refit.json`'s test numbers and the eval NLL see the same test draw.
//!
//! Code map: `phase` (encoding, refit and measurements: the refit phase), `refit` (the refit
//! methods), `measure` (bounds and densities on fixed rows and noise, and their tables),
//! `resume` (the marker between the phases), `finetune` (the fine-tuning phase).
//!
//! Resumable: the stage works in two phases. The refit phase (encoding, refit, measurements)
//! writes `prior.safetensors`, `latent_samples.parquet`, `refit.parquet` and, last and
//! atomically, the marker [`REFIT_MARKER`] holding everything else the stage still has to write.
//! The fine-tuning phase runs the train stage's loop ([`crate::fit::fit`]), which checkpoints
//! itself. An interrupted attempt (`StageError::Interrupted`) leaves the work directory to the
//! next one, which — finding a marker whose files verify — skips the refit and resumes the
//! fine-tuning from its checkpoint; without one it starts over. Both phases always fine-tune the
//! prior as read back from `prior.safetensors`, so a resumed run writes the same bytes as an
//! uninterrupted one.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use vaepipe_data::Dataset;
use vaepipe_engine::{Context, Stage, StageError, pick};
use vaepipe_nn::{Objective, Posterior, Prior, Vae};
use vaepipe_spec::{Binarize, MogFit, PriorMethod, PriorSection, Then, TrainSection};

use crate::artifacts::{
    ModelConfig, RefitSummary, Variant, load_model, load_prior, read_split, write_sorted,
};
use crate::convert::objective_of;
use crate::train::{SeedOnly, data_binarization};

mod finetune;
mod measure;
mod phase;
mod refit;
mod resume;

use finetune::finetune;
use phase::refit_phase;
use resume::{RefitState, clear_dir, resume_state, write_marker};

/// Training and test rows on which the bounds are measured: a seeded subset of at most this many.
const MEASURE_ROWS: usize = 2000;
/// Draws z ~ q_agg for the KL(q_agg ‖ p) estimates (and the aggregate posterior's objective).
const KL_SAMPLES: usize = 2000;
/// Draws of each distribution in `latent_samples.parquet`.
const PLOT_SAMPLES: usize = 2000;
/// Rows per block of a measurement: progress and stop requests are handled between blocks.
const BLOCK_ROWS: usize = 250;
/// Smallest standard deviation of an EM-fitted component (no collapse onto a single draw).
const EM_MIN_STD: f64 = 1e-3;
/// Burda et al. (2016): a latent unit is active if Cov_x E_q[z_j] > 10⁻².
const ACTIVE_THRESHOLD: f64 = 0.01;
/// Written last (atomically) by the refit phase: what the fine-tuning phase still needs. Removed
/// when the stage finishes, so it is never part of the output.
const REFIT_MARKER: &str = "refit-state.json";
/// Format of [`REFIT_MARKER`]; a marker of another format is ignored (the stage starts over).
const MARKER_FORMAT: u32 = 1;

pub struct PriorStage;

#[derive(Deserialize)]
struct Params {
    prior: PriorSection,
    train: TrainSection,
    pipeline: SeedOnly,
    eval: EvalSeed,
}

/// The eval stage's binarization seed: the prior stage measures the same draw of the test set.
#[derive(Deserialize)]
struct EvalSeed {
    binarization_seed: u64,
}

impl Stage for PriorStage {
    fn name(&self) -> &'static str {
        "prior"
    }
    fn version(&self) -> u32 {
        // 2: resumable fine-tuning at the training schedule's final lr; test rows binarized with
        // eval.binarization_seed; the data crate's permutation.
        2
    }
    fn inputs(&self) -> &'static [&'static str] {
        &["data", "train"]
    }
    fn params(&self, point: &Value) -> Value {
        pick(
            point,
            &["prior", "train", "pipeline.seed", "eval.binarization_seed"],
        )
    }
    fn resumable(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        let started = Instant::now();
        let p: Params = serde_json::from_value(ctx.params.clone())
            .map_err(|e| anyhow!("prior stage parameters: {e}"))?;
        let data = ctx.input("data")?;
        let trained = ctx.input("train")?;
        let (vae, config) = load_model(&trained.dir.join("model.safetensors"))?;
        let train = read_split(&data.dir, "train")?;
        let validation = read_split(&data.dir, "validation")?;
        for (name, split) in [("train", &train), ("validation", &validation)] {
            check_features(name, split, &config, &data.dir, &trained.dir)?;
        }
        if train.rows == 0 {
            return Err(anyhow!(
                "{}: the training split is empty: nothing to refit the prior to",
                data.dir.display()
            )
            .into());
        }
        let dynamic = data_binarization(&data.dir)? == Binarize::Dynamic;
        let resumable = if ctx.resumed { resume_state(ctx) } else { None };
        let (state, since) = match resumable {
            Some(state) => {
                ctx.log(format!(
                    "resuming after a complete refit ({REFIT_MARKER} verified): skipping the refit and its measurements"
                ));
                (state, started)
            }
            None => {
                if ctx.resumed {
                    clear_dir(ctx.out)?;
                    ctx.log("no complete refit to resume from: starting over");
                }
                let dirs = (data.dir.as_path(), trained.dir.as_path());
                let state = refit_phase(ctx, &p, &vae, &config, dirs, &train, dynamic)?;
                let state = RefitState {
                    seconds: started.elapsed().as_secs_f64(),
                    ..state
                };
                write_marker(ctx.out, &state)?;
                (state, Instant::now())
            }
        };
        finish(
            ctx,
            &p,
            &vae,
            &config,
            &train,
            &validation,
            dynamic,
            state,
            since,
        )
    }
}

/// A split must have the model's input dimension (empty splits are exempt).
fn check_features(
    name: &str,
    split: &Dataset,
    config: &ModelConfig,
    data_dir: &Path,
    train_dir: &Path,
) -> anyhow::Result<()> {
    if split.rows > 0 && split.features != config.input_dim {
        bail!(
            "{}: the {name} split has {} features, the model in {} expects {}",
            data_dir.display(),
            split.features,
            train_dir.display(),
            config.input_dim
        );
    }
    Ok(())
}

/// The fine-tuning phase (if asked for), then `variants.json` and `refit.json`; removes the
/// marker. `since`: when this attempt's share of the remaining work began.
#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &Context,
    p: &Params,
    vae: &Vae,
    config: &ModelConfig,
    train: &Dataset,
    validation: &Dataset,
    dynamic: bool,
    state: RefitState,
    since: Instant,
) -> Result<(), StageError> {
    let out = ctx.out;
    let mut variants = state.variants;
    let finetune = if p.prior.then == Then::Finetune {
        // The prior as the eval stage will read it (both phases, resumed or not).
        let prior = match &state.prior_file {
            Some(file) => load_prior(&out.join(file), vae.config())?.0,
            None => Prior::StandardNormal,
        };
        let summary = Some(finetune(
            ctx, p, vae, &prior, config, train, validation, dynamic,
        )?);
        variants.push(Variant {
            name: "finetuned".into(),
            label: format!(
                "{} + finetune ({} epochs)",
                state.label, p.prior.finetune_epochs
            ),
            model_stage: "prior".into(),
            model_file: "finetuned.safetensors".into(),
            prior_file: state.prior_file.clone(),
        });
        summary
    } else {
        None
    };
    crate::write_json(&out.join("variants.json"), &variants)?;
    let mut phase = state.refit;
    let seconds = state.seconds + since.elapsed().as_secs_f64();
    phase.insert("seconds".into(), Value::from(seconds));
    let mut refit: RefitSummary = serde_json::from_value(Value::Object(phase))
        .context("the refit phase's summary (refit.json without finetune)")?;
    refit.finetune = finetune;
    write_sorted(&out.join("refit.json"), &refit)?;
    // The marker (and any temporary file of an interrupted write of it) is not an output.
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name == REFIT_MARKER || name.starts_with(&format!(".{REFIT_MARKER}")) {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    Ok(())
}

/// The refit's objective: the training objective, with Monte Carlo KL (the analytic KL exists
/// only for the standard normal).
fn refit_objective(t: &TrainSection) -> anyhow::Result<Objective> {
    Ok(Objective {
        analytic_kl: false,
        ..objective_of(t)?
    })
}

/// For people: `aggregate posterior (M=9600)`, `MoG K=10 (EM)`, `VampPrior K=50`.
fn method_label(p: &PriorSection, components: usize) -> String {
    match p.method {
        PriorMethod::StandardNormal => "N(0, I)".into(),
        PriorMethod::AggregatePosterior if components > 0 => {
            format!("aggregate posterior (M={components})")
        }
        PriorMethod::AggregatePosterior => "aggregate posterior".into(),
        PriorMethod::Mog => format!(
            "MoG K={} ({})",
            p.components,
            if p.fit == MogFit::Em {
                "EM"
            } else {
                "gradient"
            }
        ),
        PriorMethod::Vamp => format!("VampPrior K={}", p.components),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.4}"))
}

/// The two dimensions of largest variance (ties to the lower index); `[0, 0]` in one dimension.
fn top_two(variance: &[f64]) -> [usize; 2] {
    let mut idx: Vec<usize> = (0..variance.len()).collect();
    idx.sort_by(|&a, &b| variance[b].total_cmp(&variance[a]).then(a.cmp(&b)));
    [idx[0], *idx.get(1).unwrap_or(&idx[0])]
}

/// The equal-weight mixture of the posteriors of `rows` (all rows if `None`): the aggregate
/// posterior of those rows.
fn mixture_of(post: &Posterior, rows: Option<&[usize]>) -> anyhow::Result<Prior> {
    let d = post.dim;
    let (means, log_stds, m) = match rows {
        None => (post.mean.clone(), post.log_std.clone(), post.rows),
        Some(r) => {
            let take = |v: &[f32]| {
                r.iter()
                    .flat_map(|&i| v[i * d..(i + 1) * d].iter().copied())
                    .collect::<Vec<f32>>()
            };
            (take(&post.mean), take(&post.log_std), r.len())
        }
    };
    Ok(Prior::mixture(m, d, vec![0.0; m], means, log_stds)?)
}

/// Components the refit prior will have (0 for N(0, I)).
fn planned_components(s: &PriorSection, n: usize) -> usize {
    match s.method {
        PriorMethod::StandardNormal => 0,
        PriorMethod::AggregatePosterior if s.subset > 0 && s.subset < n => s.subset,
        PriorMethod::AggregatePosterior => n,
        PriorMethod::Mog | PriorMethod::Vamp => s.components,
    }
}

/// Units of work ([`Work`]) a run will do: refit steps, measurement and KL blocks.
fn planned_work(s: &PriorSection, train_rows: usize, test_rows: usize, n: usize) -> u64 {
    let (tr, te, kl) = (
        train_rows.div_ceil(BLOCK_ROWS),
        test_rows.div_ceil(BLOCK_ROWS),
        KL_SAMPLES.div_ceil(BLOCK_ROWS),
    );
    let total = match s.method {
        PriorMethod::StandardNormal => 2 * kl + tr + te,
        PriorMethod::AggregatePosterior => {
            2 * kl + if s.subset > 0 && s.subset < n { kl } else { 0 } + 2 * tr + 2 * te
        }
        PriorMethod::Mog if s.fit == MogFit::Em => s.steps + 3 * kl + 2 * tr + 2 * te,
        PriorMethod::Mog => 2 * s.steps + 3 * kl + 3 * tr + 2 * te,
        PriorMethod::Vamp => s.steps + 3 * kl + 3 * tr + 2 * te,
    };
    total as u64
}
