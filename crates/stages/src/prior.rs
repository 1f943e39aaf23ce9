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
//! Resumable: the stage works in two phases. The refit phase (encoding, refit, measurements)
//! writes `prior.safetensors`, `latent_samples.parquet`, `refit.parquet` and, last and
//! atomically, the marker [`REFIT_MARKER`] holding everything else the stage still has to write.
//! The fine-tuning phase runs the train stage's loop ([`crate::fit::fit`]), which checkpoints
//! itself. An interrupted attempt (`StageError::Interrupted`) leaves the work directory to the
//! next one, which — finding a marker whose files verify — skips the refit and resumes the
//! fine-tuning from its checkpoint; without one it starts over. Both phases always fine-tune the
//! prior as read back from `prior.safetensors`, so a resumed run writes the same bytes as an
//! uninterrupted one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use vaepipe_data::{Column, Dataset, Table, permutation};
use vaepipe_engine::{Context, Stage, StageError, pick};
use vaepipe_nn::{
    AdamHyper, MeanStderr, NnError, Objective, ObjectiveKind, Posterior, Prior, Trainable, Trainer,
    Vae, aggregate_moments, em_step, log_weights_with_noise, standard_normal_noise, stream_rng,
};
use vaepipe_spec::{
    Binarize, MogFit, PriorMethod, PriorSection, Schedule, Then, TrainSection, VampInit,
};

use crate::artifacts::{
    ModelConfig, PriorInfo, Variant, load_model, load_prior, prior_kind_name, read_split,
    save_model, save_prior,
};
use crate::convert::{adam_of, objective_of};
use crate::fit::{Batches, FitSettings, binarize_fixed, write_history};
use crate::train::{SeedOnly, data_binarization};
use crate::util::seed_for;

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

/// What the refit phase leaves for the fine-tuning phase (the content of [`REFIT_MARKER`]).
#[derive(Clone, Serialize, Deserialize)]
struct RefitState {
    format: u32,
    /// `refit.json` without `finetune` and `seconds`.
    refit: Map<String, Value>,
    /// `variants.json` without the fine-tuned model.
    variants: Vec<Variant>,
    /// The refit variant's label (the fine-tuned variant's label starts with it).
    label: String,
    /// The refit prior's file, if the prior is not N(0, I).
    prior_file: Option<String>,
    /// Every file written before the marker, with its blake3 hash (hex).
    files: BTreeMap<String, String>,
    /// Seconds the refit phase took.
    seconds: f64,
}

/// Encoding, refit and measurements; writes `prior.safetensors` (unless N(0, I)),
/// `latent_samples.parquet` and `refit.parquet`, and returns what the rest of the stage needs
/// (the caller writes it to [`REFIT_MARKER`]).
#[allow(clippy::too_many_arguments)]
fn refit_phase(
    ctx: &Context,
    p: &Params,
    vae: &Vae,
    config: &ModelConfig,
    (data_dir, train_dir): (&Path, &Path),
    train: &Dataset,
    dynamic: bool,
) -> Result<RefitState, StageError> {
    let seed = p.pipeline.seed;
    let test = read_split(data_dir, "test")?;
    check_features("test", &test, config, data_dir, train_dir)?;
    // Under dynamic binarization every measurement uses one fixed draw of the data: the training
    // rows one derived from the pipeline seed, the test rows the eval stage's draw.
    let train_x = if dynamic {
        binarize_fixed(&train.x, seed_for(seed, "prior/train-binarization"))
    } else {
        train.x.clone()
    };
    let test_x =
        crate::train::evaluated_test_x(&test, dynamic, p.eval.binarization_seed).into_owned();

    // The exact aggregate posterior of every training row.
    let encode_started = Instant::now();
    let post = vae.encode(&train_x).context("encoding the training rows")?;
    let moments = aggregate_moments(&post).context("moments of the aggregate posterior")?;
    let q_agg = mixture_of(&post, None).context("building the aggregate posterior")?;
    let encode_seconds = encode_started.elapsed().as_secs_f64();
    let active_units = moments
        .mean_variance
        .iter()
        .filter(|v| **v > ACTIVE_THRESHOLD)
        .count();
    let plot_dims = top_two(&moments.variance);
    let objective = refit_objective(&p.train)?;
    let k = objective.samples();
    let d = post.dim;
    ctx.log(format!(
        "aggregate posterior of {} training rows: {} of {} units active, widest dimensions {:?}; refit `{}`",
        post.rows,
        active_units,
        d,
        plot_dims,
        method_label(&p.prior, planned_components(&p.prior, post.rows))
    ));

    let train_probe = Probe::new(
        &train_x,
        train.rows,
        train.features,
        k,
        d,
        seed_for(seed, "prior/measure/train"),
    );
    let test_probe = Probe::new(
        &test_x,
        test.rows,
        test.features,
        k,
        d,
        seed_for(seed, "prior/measure/test"),
    );
    let kl_draws = q_agg
        .sample(
            vae,
            KL_SAMPLES,
            &mut ChaCha8Rng::seed_from_u64(seed_for(seed, "prior/kl-draws")),
        )
        .context("sampling the aggregate posterior")?;

    let mut work = Work {
        done: 0,
        total: planned_work(&p.prior, train_probe.rows, test_probe.rows, post.rows),
    };

    let standard = Prior::StandardNormal;
    let log_q = log_density_blocks(ctx, &mut work, vae, &q_agg, &kl_draws, "log q_agg")?;
    let log_p_std = log_density_blocks(ctx, &mut work, vae, &standard, &kl_draws, "log N(0, I)")?;
    let refit_started = Instant::now();
    let data = RefitData {
        train,
        train_x: &train_x,
        post: &post,
        q_agg: &q_agg,
        dynamic,
        seed,
        kl_draws: &kl_draws,
        log_q: &log_q,
        log_p_std: &log_p_std,
        probe: &train_probe,
        objective,
    };
    let refit = refit(ctx, &mut work, p, vae, &data)?;
    let refit_seconds = refit_started.elapsed().as_secs_f64();
    let prior = &refit.prior;
    if p.prior.method == PriorMethod::StandardNormal {
        ctx.log("no refit: the prior stays N(0, I)");
    } else {
        ctx.log(format!(
            "refit in {refit_seconds:.1} s (after {encode_seconds:.1} s encoding the training rows): {} {} → {} ({})",
            refit.objective,
            fmt_opt(refit.before),
            fmt_opt(refit.after),
            if refit.kept_initial {
                "kept the initial prior"
            } else {
                "kept the fitted prior"
            }
        ));
    }

    // Measurements: the same rows, noise and draws under N(0, I) and the refit prior.
    // (Under N(0, I) itself the refit measurements are the standard ones.)
    let is_standard = matches!(prior, Prior::StandardNormal);
    let train_std = bounds(
        ctx,
        &mut work,
        vae,
        &standard,
        &train_probe,
        "train, N(0, I)",
    )?;
    let train_refit = match &refit.train_bounds {
        Some(b) => b.clone(),
        None if is_standard => train_std.clone(),
        None => bounds(
            ctx,
            &mut work,
            vae,
            prior,
            &train_probe,
            "train, refit prior",
        )?,
    };
    let test_std = bounds(ctx, &mut work, vae, &standard, &test_probe, "test, N(0, I)")?;
    let test_refit = if is_standard {
        test_std.clone()
    } else {
        bounds(ctx, &mut work, vae, prior, &test_probe, "test, refit prior")?
    };
    let log_p_refit = match &refit.log_p_kl {
        Some(v) => v.clone(),
        None if is_standard => log_p_std.clone(),
        None => log_density_blocks(ctx, &mut work, vae, prior, &kl_draws, "log p")?,
    };
    let kl_std = MeanStderr::paired_difference(&log_q, &log_p_std).map_err(anyhow::Error::from)?;
    let kl_refit =
        MeanStderr::paired_difference(&log_q, &log_p_refit).map_err(anyhow::Error::from)?;
    let train_cmp = Comparison::new(&train_std, &train_refit)?;
    let test_cmp = Comparison::new(&test_std, &test_refit)?;
    ctx.log(format!(
        "ELBO gain train {:+.3} ± {:.3} test {:+.3} ± {:.3} nats; L_{k} gain train {:+.3} ± {:.3} test {:+.3} ± {:.3}; KL(q_agg‖p) {:.2} → {:.2}",
        train_cmp.elbo_gain.mean,
        train_cmp.elbo_gain.stderr,
        test_cmp.elbo_gain.mean,
        test_cmp.elbo_gain.stderr,
        train_cmp.lk_gain.mean,
        train_cmp.lk_gain.stderr,
        test_cmp.lk_gain.mean,
        test_cmp.lk_gain.stderr,
        kl_std.mean,
        kl_refit.mean
    ));

    // Artifacts of the refit phase.
    let out = ctx.out;
    let refit_label = method_label(&p.prior, refit.components)
        + if refit.kept_initial {
            " [initial kept]"
        } else {
            ""
        };
    let mut files = Vec::new();
    let prior_file = (!is_standard).then(|| "prior.safetensors".to_string());
    if let Some(file) = &prior_file {
        let (kind, components) = prior_kind_name(prior);
        let info = PriorInfo {
            kind: kind.to_string(),
            components,
            method: p.prior.method.to_string(),
            subset: refit.subset,
            seed,
        };
        save_prior(&out.join(file), prior, &info)?;
        files.push(file.clone());
    }
    let mut variants = vec![Variant {
        name: "standard".into(),
        label: "N(0, I)".into(),
        model_stage: "train".into(),
        model_file: "model.safetensors".into(),
        prior_file: None,
    }];
    if prior_file.is_some() {
        variants.push(Variant {
            name: "refit".into(),
            label: refit_label.clone(),
            model_stage: "train".into(),
            model_file: "model.safetensors".into(),
            prior_file: prior_file.clone(),
        });
    }
    write_samples(
        &out.join("latent_samples.parquet"),
        vae,
        prior,
        &q_agg,
        plot_dims,
        seed,
    )?;
    files.push("latent_samples.parquet".into());
    write_measures(
        &out.join("refit.parquet"),
        &[("train", &train_cmp), ("test", &test_cmp)],
        &kl_std,
        &kl_refit,
    )?;
    files.push("refit.parquet".into());

    let refit_json = json!({
        "method": p.prior.method.to_string(),
        "fit": match p.prior.method { PriorMethod::Mog => Value::from(p.prior.fit.to_string()), PriorMethod::Vamp => Value::from("gradient"), _ => Value::Null },
        "label": refit_label,
        "components": refit.components,
        "subset": refit.subset,
        "seed": seed,
        "k": k,
        "objective": refit.objective,
        "objective_before": refit.before,
        "objective_after": refit.after,
        "kept": if refit.kept_initial { "initial" } else { "refit" },
        "train": train_cmp.json(),
        "test": test_cmp.json(),
        "kl_qagg_standard": kl_std.mean,
        "kl_qagg_standard_stderr": kl_std.stderr,
        "kl_qagg_refit": kl_refit.mean,
        "kl_qagg_refit_stderr": kl_refit.stderr,
        "kl_samples": KL_SAMPLES,
        "kl_rows": post.rows,
        "training_rows": post.rows,
        "active_units": active_units,
        "plot_dims": plot_dims,
        "encode_seconds": encode_seconds,
        "refit_seconds": refit_seconds,
    });
    let Value::Object(refit_map) = refit_json else {
        unreachable!("json!({{…}}) is an object")
    };
    let mut hashes = BTreeMap::new();
    for file in files {
        let path = out.join(&file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // Durable before the marker that vouches for it.
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
        hashes.insert(file, blake3::hash(&bytes).to_hex().to_string());
    }
    Ok(RefitState {
        format: MARKER_FORMAT,
        refit: refit_map,
        variants,
        label: refit_label,
        prior_file,
        files: hashes,
        seconds: 0.0,
    })
}

/// Writes [`REFIT_MARKER`] atomically (temporary file, fsync, rename), every float as its exact
/// decimal text: serde_json may read a float back one ulp off, and a resumed run must write the
/// same `refit.json` as an uninterrupted one.
fn write_marker(out: &Path, state: &RefitState) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(state)?;
    v["refit"] = exact_encode(&v["refit"]);
    v["seconds"] = exact_encode(&v["seconds"]);
    vaepipe_engine::store::write_atomic(&out.join(REFIT_MARKER), &serde_json::to_vec_pretty(&v)?)
        .map_err(anyhow::Error::from)
}

/// The state of a complete refit phase left by an interrupted attempt, if its marker is readable,
/// of this format, and every file it lists is there with the recorded hash; otherwise `None`
/// (and the log says why).
fn resume_state(ctx: &Context) -> Option<RefitState> {
    let path = ctx.out.join(REFIT_MARKER);
    let bytes = std::fs::read(&path).ok()?;
    let parsed = serde_json::from_slice::<Value>(&bytes)
        .map_err(anyhow::Error::from)
        .and_then(|mut v| {
            v["refit"] = exact_decode(&v["refit"])?;
            v["seconds"] = exact_decode(&v["seconds"])?;
            Ok(serde_json::from_value::<RefitState>(v)?)
        });
    let state = match parsed {
        Ok(s) if s.format == MARKER_FORMAT => s,
        Ok(s) => {
            ctx.log(format!(
                "ignoring {REFIT_MARKER} of format {} (expected {MARKER_FORMAT})",
                s.format
            ));
            return None;
        }
        Err(e) => {
            ctx.log(format!("ignoring unreadable {}: {e:#}", path.display()));
            return None;
        }
    };
    for (file, hash) in &state.files {
        let ok = std::fs::read(ctx.out.join(file))
            .is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == hash);
        if !ok {
            ctx.log(format!(
                "ignoring {REFIT_MARKER}: {file} is missing or differs from the refit's"
            ));
            return None;
        }
    }
    Some(state)
}

/// Non-integer numbers as `{"$f64": "<shortest round-trip text>"}`.
fn exact_encode(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            json!({ "$f64": format!("{:?}", n.as_f64().unwrap_or(f64::NAN)) })
        }
        Value::Array(a) => Value::Array(a.iter().map(exact_encode).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), exact_encode(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The inverse of [`exact_encode`].
fn exact_decode(v: &Value) -> anyhow::Result<Value> {
    Ok(match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("$f64") => {
            let text = m["$f64"]
                .as_str()
                .ok_or_else(|| anyhow!("`$f64` is not a string"))?;
            let x: f64 = text.parse().map_err(|e| anyhow!("`$f64` {text:?}: {e}"))?;
            serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(|| anyhow!("`$f64` {text:?} is not finite"))?
        }
        Value::Array(a) => Value::Array(a.iter().map(exact_decode).collect::<Result<_, _>>()?),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), exact_decode(x)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// Empties the work directory (what an attempt without a usable marker left).
fn clear_dir(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
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
        let summary = finetune(ctx, p, vae, &prior, config, train, validation, dynamic)?;
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
        Value::Null
    };
    crate::write_json(&out.join("variants.json"), &variants)?;
    let mut refit = state.refit;
    refit.insert("finetune".into(), finetune);
    refit.insert(
        "seconds".into(),
        json!(state.seconds + since.elapsed().as_secs_f64()),
    );
    crate::write_json(&out.join("refit.json"), &refit)?;
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

/// Counts work for the progress display and honours stop requests.
struct Work {
    done: u64,
    total: u64,
}

impl Work {
    fn tick(&mut self, ctx: &Context, msg: &str) -> Result<(), StageError> {
        self.done += 1;
        self.total = self.total.max(self.done);
        ctx.progress(self.done, self.total, msg);
        if ctx.cancelled() {
            ctx.log(format!("stop requested during {msg}"));
            return Err(StageError::Interrupted);
        }
        Ok(())
    }
}

/// Fixed rows and noise on which bounds are measured (common random numbers across priors).
struct Probe {
    x: Vec<f32>,
    rows: usize,
    features: usize,
    k: usize,
    latent: usize,
    eps: Vec<f32>,
}

impl Probe {
    /// A seeded subset of at most [`MEASURE_ROWS`] of the `n` rows of `x`, in source order, and
    /// standard-normal noise for k samples per row.
    fn new(x: &[f32], n: usize, features: usize, k: usize, latent: usize, seed: u64) -> Self {
        let rows: Vec<usize> = if n <= MEASURE_ROWS {
            (0..n).collect()
        } else {
            let mut r = permutation(n, seed_for(seed, "rows"))[..MEASURE_ROWS].to_vec();
            r.sort_unstable();
            r
        };
        let mut xs = Vec::with_capacity(rows.len() * features);
        for &r in &rows {
            xs.extend_from_slice(&x[r * features..(r + 1) * features]);
        }
        let eps = standard_normal_noise(
            &mut stream_rng(seed_for(seed, "noise"), 0),
            rows.len() * k * latent,
        );
        Probe {
            x: xs,
            rows: rows.len(),
            features,
            k,
            latent,
            eps,
        }
    }
}

/// Per-row bounds at the probe's noise: the k-sample ELBO mean_i log w_i and
/// L_k = logsumexp_i log w_i − log k (Burda et al. 2016).
#[derive(Clone)]
struct Bounds {
    elbo: Vec<f64>,
    lk: Vec<f64>,
}

impl Bounds {
    /// The per-row value of what `objective` maximizes.
    fn of(&self, objective: &Objective) -> &[f64] {
        match objective.kind {
            ObjectiveKind::Iwae => &self.lk,
            ObjectiveKind::Elbo => &self.elbo,
        }
    }
}

fn bounds(
    ctx: &Context,
    work: &mut Work,
    vae: &Vae,
    prior: &Prior,
    probe: &Probe,
    what: &str,
) -> Result<Bounds, StageError> {
    let (k, f, l) = (probe.k, probe.features, probe.latent);
    let mut out = Bounds {
        elbo: Vec::with_capacity(probe.rows),
        lk: Vec::with_capacity(probe.rows),
    };
    for start in (0..probe.rows).step_by(BLOCK_ROWS) {
        let m = BLOCK_ROWS.min(probe.rows - start);
        let lw = log_weights_with_noise(
            vae,
            prior,
            &probe.x[start * f..(start + m) * f],
            m,
            k,
            &probe.eps[start * k * l..(start + m) * k * l],
        )
        .with_context(|| format!("log-weights ({what}, rows {start}..{})", start + m))?;
        for row in lw.chunks(k) {
            let row: Vec<f64> = row.iter().map(|v| *v as f64).collect();
            out.elbo.push(row.iter().sum::<f64>() / k as f64);
            out.lk.push(vaepipe_nn::log_sum_exp(&row) - (k as f64).ln());
        }
        work.tick(ctx, &format!("measuring {what}"))?;
    }
    Ok(out)
}

/// log p(z) for the rows of `z` (latent-dimensional), in blocks.
fn log_density_blocks(
    ctx: &Context,
    work: &mut Work,
    vae: &Vae,
    prior: &Prior,
    z: &[f32],
    what: &str,
) -> Result<Vec<f64>, StageError> {
    let d = vae.config().latent_dim;
    let rows = z.len() / d;
    let mut out = Vec::with_capacity(rows);
    for start in (0..rows).step_by(BLOCK_ROWS) {
        let m = BLOCK_ROWS.min(rows - start);
        out.extend(
            prior
                .log_density(vae, &z[start * d..(start + m) * d], m)
                .with_context(|| format!("{what} of the draws from q_agg"))?,
        );
        work.tick(ctx, &format!("KL(q_agg ‖ p): {what}"))?;
    }
    Ok(out)
}

/// Bounds under two priors on the same probe, with paired standard errors of the gains.
struct Comparison {
    standard: Bounds,
    refit: Bounds,
    elbo_gain: MeanStderr,
    lk_gain: MeanStderr,
}

impl Comparison {
    fn new(standard: &Bounds, refit: &Bounds) -> anyhow::Result<Self> {
        Ok(Comparison {
            elbo_gain: MeanStderr::paired_difference(&refit.elbo, &standard.elbo)?,
            lk_gain: MeanStderr::paired_difference(&refit.lk, &standard.lk)?,
            standard: standard.clone(),
            refit: refit.clone(),
        })
    }

    fn json(&self) -> Value {
        let m = |v: &[f64]| MeanStderr::of(v);
        json!({
            "elbo_standard": m(&self.standard.elbo).mean,
            "elbo_refit": m(&self.refit.elbo).mean,
            "lk_standard": m(&self.standard.lk).mean,
            "lk_refit": m(&self.refit.lk).mean,
            "elbo_gain": self.elbo_gain.mean,
            "elbo_gain_stderr": self.elbo_gain.stderr,
            "lk_gain": self.lk_gain.mean,
            "lk_gain_stderr": self.lk_gain.stderr,
            "images": self.standard.elbo.len(),
        })
    }
}

/// Everything a refit reads.
struct RefitData<'a> {
    train: &'a Dataset,
    /// The training rows as measured (one fixed binarization under dynamic binarization).
    train_x: &'a [f32],
    post: &'a Posterior,
    q_agg: &'a Prior,
    dynamic: bool,
    seed: u64,
    kl_draws: &'a [f32],
    log_q: &'a [f64],
    /// log N(z; 0, I) of the same draws.
    log_p_std: &'a [f64],
    probe: &'a Probe,
    objective: Objective,
}

/// What a refit produced.
struct Refit {
    prior: Prior,
    /// What the refit maximizes, for people.
    objective: String,
    before: Option<f64>,
    after: Option<f64>,
    kept_initial: bool,
    components: usize,
    /// Aggregate posterior: training posteriors used (0 = all).
    subset: usize,
    /// Already measured on the training probe (gradient refits) or the KL draws (aggregate
    /// posterior), for the kept prior.
    train_bounds: Option<Bounds>,
    log_p_kl: Option<Vec<f64>>,
}

fn refit(
    ctx: &Context,
    work: &mut Work,
    p: &Params,
    vae: &Vae,
    r: &RefitData,
) -> Result<Refit, StageError> {
    let s = &p.prior;
    let n = r.post.rows;
    let rng = |purpose: &str| ChaCha8Rng::seed_from_u64(seed_for(r.seed, purpose));
    let need_rows = |what: &str| -> anyhow::Result<()> {
        if s.components > n {
            bail!(
                "prior.components = {} {what}, but the training split has only {n} rows",
                s.components
            );
        }
        Ok(())
    };
    match s.method {
        PriorMethod::StandardNormal => Ok(Refit {
            prior: Prior::StandardNormal,
            objective: "none (the standard normal is kept)".into(),
            before: None,
            after: None,
            kept_initial: false,
            components: 0,
            subset: 0,
            train_bounds: None,
            log_p_kl: None,
        }),
        PriorMethod::AggregatePosterior => {
            // Maximizes E_q_agg log p(z) exactly (Gibbs); the "initial" prior is N(0, I).
            let (fitted, subset) = if s.subset > 0 && s.subset < n {
                let mut rows =
                    permutation(n, seed_for(r.seed, "prior/aggregate/subset"))[..s.subset].to_vec();
                rows.sort_unstable();
                (mixture_of(r.post, Some(&rows))?, s.subset)
            } else {
                if s.subset >= n {
                    ctx.log(format!(
                        "prior.subset = {} ≥ {n} training rows: using all of them",
                        s.subset
                    ));
                }
                (r.q_agg.clone(), 0)
            };
            let log_p = if subset == 0 {
                r.log_q.to_vec()
            } else {
                log_density_blocks(ctx, work, vae, &fitted, r.kl_draws, "log p")?
            };
            let (before, after) = (
                MeanStderr::of(r.log_p_std).mean,
                MeanStderr::of(&log_p).mean,
            );
            let components = if subset == 0 { n } else { subset };
            let objective = format!(
                "E_q_agg[log p(z)] on {} draws from q_agg (initial: N(0, I))",
                r.kl_draws.len() / r.post.dim
            );
            if after < before {
                ctx.log(format!("the aggregate posterior scores below N(0, I) on the draws ({after:.4} < {before:.4}): keeping N(0, I)"));
                return Ok(Refit {
                    prior: Prior::StandardNormal,
                    objective,
                    before: Some(before),
                    after: Some(after),
                    kept_initial: true,
                    components,
                    subset,
                    train_bounds: None,
                    log_p_kl: None,
                });
            }
            Ok(Refit {
                prior: fitted,
                objective,
                before: Some(before),
                after: Some(after),
                kept_initial: false,
                components,
                subset,
                train_bounds: None,
                log_p_kl: Some(log_p),
            })
        }
        PriorMethod::Mog => {
            need_rows("mixture components initialised from distinct training rows")?;
            let init =
                Prior::mixture_init(vae, r.train_x, n, s.components, &mut rng("prior/mog/init"))
                    .context("initialising the mixture (prior.components)")?;
            match s.fit {
                MogFit::Em => em_refit(ctx, work, s, vae, r, init),
                // Gradient ascent on L_k starts from the EM fit: the encoded rows alone are far
                // too narrow a mixture, and EM is cheap.
                MogFit::Gradient => {
                    let em = em_refit(ctx, work, s, vae, r, init)?;
                    ctx.log("gradient refit of the mixture starts from the EM fit");
                    gradient_refit(ctx, work, p, vae, r, em.prior)
                }
            }
        }
        PriorMethod::Vamp => {
            let d_in = vae.config().input_dim;
            let init = match s.init {
                VampInit::Data => {
                    need_rows("pseudo-inputs initialised from distinct training rows")?;
                    Prior::vamp_init(
                        vae.config(),
                        r.train_x,
                        n,
                        s.components,
                        &mut rng("prior/vamp/init"),
                    )
                }
                VampInit::Random => {
                    let mut g = rng("prior/vamp/init-random");
                    Prior::vamp(
                        s.components,
                        d_in,
                        (0..s.components * d_in).map(|_| g.r#gen::<f32>()).collect(),
                    )
                }
            }
            .context("initialising the VampPrior's pseudo-inputs")?;
            gradient_refit(ctx, work, p, vae, r, init)
        }
    }
}

/// EM on `prior.samples` draws from q_agg (maximizes their mean log p(z), the Monte Carlo
/// estimate of the ELBO's prior term), `prior.steps` iterations in `f64`.
fn em_refit(
    ctx: &Context,
    work: &mut Work,
    s: &PriorSection,
    vae: &Vae,
    r: &RefitData,
    init: Prior,
) -> Result<Refit, StageError> {
    let draws = r
        .q_agg
        .sample(
            vae,
            s.samples,
            &mut ChaCha8Rng::seed_from_u64(seed_for(r.seed, "prior/mog/em-draws")),
        )
        .context("sampling the aggregate posterior for EM")?;
    let z: Vec<f64> = draws.iter().map(|v| *v as f64).collect();
    let mut current: Prior<f64> = init.cast().map_err(anyhow::Error::from)?;
    let mut first = None;
    let mut last = f64::NAN;
    for it in 0..s.steps {
        let step = em_step(&current, &z, s.samples, EM_MIN_STD)
            .with_context(|| format!("EM iteration {}", it + 1))?;
        first.get_or_insert(step.log_likelihood);
        last = step.log_likelihood;
        current = step.prior;
        work.tick(
            ctx,
            &format!(
                "EM {}/{}: mean log p(z) {:.4}",
                it + 1,
                s.steps,
                step.log_likelihood
            ),
        )?;
    }
    ctx.log(format!(
        "EM: mean log-density of {} draws {:.4} → {:.4} over {} iterations",
        s.samples,
        first.unwrap_or(f64::NAN),
        last,
        s.steps
    ));
    let fitted: Prior = current.cast().context("the EM fit does not fit in f32")?;
    let mean_log_p = |prior: &Prior| -> anyhow::Result<f64> {
        let lp = prior.log_density(vae, &draws, s.samples)?;
        Ok(MeanStderr::of(&lp).mean)
    };
    let before = mean_log_p(&init)?;
    let after = mean_log_p(&fitted)?;
    let objective = format!(
        "E_q_agg[log p(z)] on {} draws from q_agg (EM, {} iterations; initial: {} encoded training rows)",
        s.samples, s.steps, s.components
    );
    Ok(keep_better(
        ctx,
        init,
        fitted,
        before,
        after,
        objective,
        s.components,
    ))
}

/// Gradient ascent with Adam on the average training bound over the prior's parameters only
/// (Trainable::PRIOR; encoder and decoder fixed), minibatches like the train loop.
fn gradient_refit(
    ctx: &Context,
    work: &mut Work,
    p: &Params,
    vae: &Vae,
    r: &RefitData,
    init: Prior,
) -> Result<Refit, StageError> {
    let s = &p.prior;
    let t = &p.train;
    let train = r.train;
    let adam = AdamHyper {
        lr: s.lr,
        ..adam_of(t)
    };
    let mut trainer = Trainer::new(
        vae.clone(),
        init.clone(),
        r.objective,
        adam,
        Trainable::PRIOR,
    )
    .context("building the prior's optimizer")?;
    // The train loop's minibatch stream: the same shuffling, binarization and noise streams,
    // under the tag `prior/gradient`.
    let mut stream = Batches::new(train, t.batch_size, r.dynamic, r.seed, "prior/gradient");
    let batches = stream.per_epoch();
    let (mut sum, mut count, mut windows) = (0.0, 0usize, Vec::new());
    let window = (s.steps / 10).max(1);
    for step in 0..s.steps {
        let stats = match stream.step(&mut trainer, step / batches, step % batches) {
            Ok((st, _)) => st,
            Err(NnError::Diverged { what }) => {
                return Err(anyhow!(
                    "the prior refit diverged at step {}: {what}; lower prior.lr",
                    step + 1
                )
                .into());
            }
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("prior refit step {}", step + 1))
                    .into());
            }
        };
        sum += stats.bound;
        count += 1;
        if count == window {
            windows.push(sum / count as f64);
            (sum, count) = (0.0, 0);
        }
        work.tick(
            ctx,
            &format!(
                "prior refit step {}/{}: bound {:.3}",
                step + 1,
                s.steps,
                stats.bound
            ),
        )?;
    }
    let (_, fitted) = trainer.into_parts();
    ctx.log(format!(
        "gradient refit: mean batch bound {} over the first {window} steps, {} over the last",
        fmt_opt(windows.first().copied()),
        fmt_opt(windows.last().copied())
    ));
    let per_row =
        |prior: &Prior, what: &str, work: &mut Work| bounds(ctx, work, vae, prior, r.probe, what);
    let b_init = per_row(&init, "train, initial prior", work)?;
    let b_fit = per_row(&fitted, "train, fitted prior", work)?;
    let before = MeanStderr::of(b_init.of(&r.objective)).mean;
    let after = MeanStderr::of(b_fit.of(&r.objective)).mean;
    let what = match r.objective.kind {
        ObjectiveKind::Iwae => format!("L_{}", r.objective.k),
        ObjectiveKind::Elbo => format!("{}-sample ELBO", r.objective.k),
    };
    let objective = format!(
        "mean {what} over {} training rows at fixed noise, encoder and decoder fixed (Adam, {} steps at lr {})",
        r.probe.rows, s.steps, s.lr
    );
    let components = s.components;
    let mut refit = keep_better(ctx, init, fitted, before, after, objective, components);
    refit.train_bounds = Some(if refit.kept_initial { b_init } else { b_fit });
    Ok(refit)
}

/// The refit never lowers what it maximizes: keeps `initial` if `fitted` scores lower on the
/// same draws.
#[allow(clippy::too_many_arguments)]
fn keep_better(
    ctx: &Context,
    initial: Prior,
    fitted: Prior,
    before: f64,
    after: f64,
    objective: String,
    components: usize,
) -> Refit {
    // Also keeps the initial prior if either value is NaN.
    let kept_initial = !matches!(
        after.partial_cmp(&before),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    );
    if kept_initial {
        ctx.log(format!("the fitted prior scores below its starting point ({after:.4} < {before:.4}) on the refit's draws: keeping the starting point"));
    }
    Refit {
        prior: if kept_initial { initial } else { fitted },
        objective,
        before: Some(before),
        after: Some(after),
        kept_initial,
        components,
        subset: 0,
        train_bounds: None,
        log_p_kl: None,
    }
}

/// Continues training encoder and decoder under the refit prior through the train stage's loop
/// (resumed from its checkpoint in the stage's directory, if any); writes
/// `finetuned.safetensors` and `finetune_history.parquet`.
///
/// Fine-tuning continues training: it runs at a constant learning rate equal to the training
/// schedule's rate in its last epoch (`train.lr` for `constant`, lower for `step` and `iwae`),
/// never restarting the schedule at full rate.
#[allow(clippy::too_many_arguments)]
fn finetune(
    ctx: &Context,
    p: &Params,
    vae: &Vae,
    prior: &Prior,
    config: &ModelConfig,
    train: &Dataset,
    validation: &Dataset,
    dynamic: bool,
) -> Result<Value, StageError> {
    let mut objective = objective_of(&p.train)?;
    if !matches!(prior, Prior::StandardNormal) {
        objective.analytic_kl = false;
    }
    let settings = finetune_settings(&p.train, p.pipeline.seed, dynamic, p.prior.finetune_epochs);
    let mut trainer = Trainer::new(
        vae.clone(),
        prior.clone(),
        objective,
        AdamHyper {
            lr: settings.lr,
            ..adam_of(&p.train)
        },
        Trainable::MODEL,
    )
    .context("building the fine-tuning trainer")?;
    ctx.log(format!(
        "fine-tuning encoder and decoder for {} epochs under the refit prior at lr {:e} (the training schedule's last)",
        settings.epochs, settings.lr
    ));
    let outcome = crate::fit::fit(ctx, &mut trainer, train, validation, &settings)?;
    let (tuned, _) = trainer.into_parts();
    let tuned = match &outcome.best_model {
        Some(best) => Vae::from_named_tensors(&config.vae_config(), best)
            .context("restoring the best fine-tuning epoch")?,
        None => tuned,
    };
    save_model(&ctx.out.join("finetuned.safetensors"), &tuned, config)?;
    write_history(&ctx.out.join("finetune_history.parquet"), &outcome.history)?;
    let last = outcome.history.last();
    Ok(json!({
        "epochs_run": outcome.history.len(),
        "best_epoch": outcome.best_epoch,
        "final_train_bound": last.map(|h| h.train_bound),
        "final_validation_bound": last.map(|h| h.validation_bound),
        "steps": outcome.steps,
        "seconds": last.map_or(0.0, |h| h.seconds),
        "lr": settings.lr,
        "resumed": outcome.resumed,
    }))
}

/// The fine-tuning loop's settings: the training section's, for `epochs` epochs, at the constant
/// learning rate the training schedule had in its last epoch (`train.epochs`).
fn finetune_settings(t: &TrainSection, seed: u64, dynamic: bool, epochs: usize) -> FitSettings {
    let trained = FitSettings::from_train(t, seed, dynamic, t.epochs, "train");
    FitSettings {
        schedule: Schedule::Constant,
        lr: trained.lr_at(t.epochs.saturating_sub(1)),
        ..FitSettings::from_train(t, seed, dynamic, epochs, "finetune")
    }
}

/// `latent_samples.parquet`: draws of N(0, I), the refit prior and q_agg on the plot dimensions.
fn write_samples(
    path: &std::path::Path,
    vae: &Vae,
    prior: &Prior,
    q_agg: &Prior,
    dims: [usize; 2],
    seed: u64,
) -> anyhow::Result<()> {
    let d = vae.config().latent_dim;
    let mut source = Vec::new();
    let (mut z1, mut z2) = (Vec::new(), Vec::new());
    let sets: [(&str, &Prior, &str); 3] = [
        ("standard normal", &Prior::StandardNormal, "standard"),
        ("refit prior", prior, "refit"),
        ("aggregate posterior", q_agg, "aggregate"),
    ];
    for (name, dist, purpose) in sets {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed_for(seed, &format!("prior/plot-samples/{purpose}")));
        let z = dist
            .sample(vae, PLOT_SAMPLES, &mut rng)
            .with_context(|| format!("sampling the {name}"))?;
        for row in z.chunks(d) {
            source.push(name.to_string());
            z1.push(row[dims[0]] as f64);
            z2.push(row[dims[1]] as f64);
        }
    }
    let table = Table::new()
        .with("source", Column::Str(source))
        .with("z1", Column::F64(z1))
        .with("z2", Column::F64(z2));
    vaepipe_data::write_table(path, &table)?;
    Ok(())
}

/// `refit.parquet`: every measurement with its standard error.
fn write_measures(
    path: &std::path::Path,
    splits: &[(&str, &Comparison)],
    kl_std: &MeanStderr,
    kl_refit: &MeanStderr,
) -> anyhow::Result<()> {
    let (mut split, mut prior, mut measure, mut value, mut stderr) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut push = |s: &str, p: &str, m: &str, e: MeanStderr| {
        split.push(s.to_string());
        prior.push(p.to_string());
        measure.push(m.to_string());
        value.push(e.mean);
        stderr.push(e.stderr);
    };
    for (name, c) in splits {
        for (p, b) in [("standard", &c.standard), ("refit", &c.refit)] {
            push(name, p, "elbo", MeanStderr::of(&b.elbo));
            push(name, p, "lk", MeanStderr::of(&b.lk));
        }
    }
    push("train", "standard", "kl_qagg", *kl_std);
    push("train", "refit", "kl_qagg", *kl_refit);
    let table = Table::new()
        .with("split", Column::Str(split))
        .with("prior", Column::Str(prior))
        .with("measure", Column::Str(measure))
        .with("value", Column::F64(value))
        .with("stderr", Column::F64(stderr));
    vaepipe_data::write_table(path, &table)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train_section(schedule: &str, epochs: usize) -> TrainSection {
        serde_json::from_value(json!({
            "objective": "iwae", "k": 5, "estimator": "reparam", "analytic_kl": false,
            "batch_size": 20, "epochs": epochs, "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-4,
            "schedule": schedule, "step_epochs": 2, "step_gamma": 0.5, "patience": 0
        }))
        .expect("a train section")
    }

    #[test]
    fn finetuning_runs_at_the_training_schedules_last_rate() {
        for (schedule, epochs, lr) in [
            ("constant", 7, 1e-3),
            ("step", 5, 1e-3 * 0.25),
            ("iwae", 4, 1e-3 * 10f64.powf(-1.0 / 7.0)),
            ("iwae", 5, 1e-3 * 10f64.powf(-2.0 / 7.0)),
        ] {
            let s = finetune_settings(&train_section(schedule, epochs), 1, true, 3);
            assert_eq!(s.schedule, Schedule::Constant);
            assert_eq!((s.epochs, s.tag), (3, "finetune"));
            for e in 0..3 {
                assert!(
                    (s.lr_at(e) - lr).abs() < 1e-18,
                    "{schedule}, {epochs} epochs: fine-tuning epoch {e} at {}, expected {lr}",
                    s.lr_at(e)
                );
            }
        }
    }

    #[test]
    fn marker_floats_round_trip_exactly() {
        let awkward = [
            -227.117_919_391_632_48,
            0.1 + 0.2,
            1e-310,
            f64::MAX,
            -0.0,
            1.0 / 3.0,
        ];
        let v = json!({"a": awkward, "b": {"c": 0.1 + 0.7, "n": 3, "s": "x", "z": null}});
        let text = serde_json::to_vec(&exact_encode(&v)).unwrap();
        let back = exact_decode(&serde_json::from_slice(&text).unwrap()).unwrap();
        assert_eq!(back, v);
        for (x, y) in back["a"].as_array().unwrap().iter().zip(awkward) {
            assert_eq!(x.as_f64().unwrap().to_bits(), y.to_bits());
        }
    }
}
