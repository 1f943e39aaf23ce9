//! The eval stage: test log-likelihood by importance sampling (L_k with k = 5000, Burda et al.
//! 2016, §5), the L_k-against-k curve, active units, the ELBO decomposition, and the samples,
//! reconstructions and latent codes the report draws. Artifacts: docs/artifacts.md, `eval/`.
//!
//! Protocol (Burda et al. 2016): with `data.binarize = "dynamic"` the test set is the data
//! stage's one binarization with `eval.binarization_seed` (`test_binarized.parquet`, the same
//! draw for every run and variant); the test NLL is
//! −mean L̂_k over the first `eval.images` test images (0 = all), with its standard error across
//! images. Every variant listed by the prior stage (model × prior) is evaluated on the same
//! images with the same noise (common random numbers), so differences between variants are
//! more precise than the NLLs themselves. The numerics live in `vaepipe_nn::Evaluator`.
//!
//! Cost: under a mixture prior with K components, log p(z) costs k·K Gaussian terms per image
//! (K up to 60 000 for the exact aggregate posterior; the evaluator runs them as an `f32`
//! matrix product, ~4–8·10⁸ terms/s on two cores at d = 50, so ~0.4–0.8 s per image at
//! k = 5000 and K = 60 000). The NLL of such a variant uses the first
//! ⌊[`MIXTURE_TERMS`] / (k·K)⌋ images (at least one) when that is fewer than requested, at the
//! same k; `metrics.json` records the images used, the images requested and why, and every
//! variant's difference to the first one on their common images (paired: same images, same
//! noise).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use vaepipe_data::{Column, Dataset, Table};
use vaepipe_engine::{Context, Stage, StageError, pick};
use vaepipe_nn::{
    CurvePoint, Evaluator, ImageEstimate, Likelihood, MeanStderr, Posterior, Prior, PriorKind,
    SampleOptions, Vae, latent_variances, lk_curve, principal_components, stream_rng,
};
use vaepipe_spec::{Binarize, EvalSection};

use crate::artifacts::{
    DataSummary, Estimates, EvaluatedVariant, Metrics, Paired, TrainedWith, Variant, load_model,
    load_prior, read_test_binarized, write_sorted,
};
use crate::train::SeedOnly;
use crate::util::seed_for;

/// Budget of mixture-density terms (samples × components) for one variant's NLL: about ten
/// minutes on two cores at d = 50 (1333 images at k = 5000 and K = 60 000).
const MIXTURE_TERMS: f64 = 4e11;
/// Images evaluated (in parallel) between two progress reports and stop checks.
const BATCH_IMAGES: usize = 64;
/// Largest number of log-weights kept in memory for the L_k curve (8 bytes each).
const MAX_CURVE_VALUES: usize = 1 << 27;

pub struct EvalStage;

#[derive(Deserialize)]
struct Params {
    eval: EvalSection,
    pipeline: SeedOnly,
    point: PointInfo,
}

/// The sweep point the run serves (`point` in the configuration).
#[derive(Deserialize)]
struct PointInfo {
    id: String,
    label: String,
    #[serde(default)]
    values: BTreeMap<String, Value>,
}

impl Stage for EvalStage {
    fn name(&self) -> &'static str {
        "eval"
    }
    fn version(&self) -> u32 {
        // 2: `note` on a Bernoulli likelihood over non-binary test data; MeanStderr.
        2
    }
    fn inputs(&self) -> &'static [&'static str] {
        &["data", "train", "prior"]
    }
    fn params(&self, point: &Value) -> Value {
        pick(point, &["eval", "pipeline.seed", "point"])
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        let p: Params = serde_json::from_value(ctx.params.clone())
            .map_err(|e| anyhow!("eval stage parameters: {e}"))?;
        let data_dir = &ctx.input("data")?.dir;
        let train_dir = &ctx.input("train")?.dir;
        let prior_dir = &ctx.input("prior")?.dir;

        let summary = DataSummary::read(data_dir)?;
        let binarize = summary.binarize;
        // The test set as evaluated: under dynamic binarization the data stage's fixed draw.
        let test = read_test_binarized(data_dir, &summary, p.eval.binarization_seed)
            .context("reading the test split")?;
        if test.rows == 0 {
            return Err(anyhow!("the test split is empty").into());
        }
        let x_all: &[f32] = &test.x;
        let n = if p.eval.images == 0 {
            test.rows
        } else {
            p.eval.images.min(test.rows)
        };
        let binary = binary_test_data(&summary, x_all);
        // Only the objective: what metrics.json repeats from train.json.
        let trained_with: TrainedWith = crate::read_json(&train_dir.join("train.json"))?;
        let variants_path = prior_dir.join("variants.json");
        let variants: Vec<Variant> = crate::read_json(&variants_path)?;
        if variants.is_empty() {
            return Err(anyhow!("{}: lists no variant", variants_path.display()).into());
        }
        // Load every model and prior first: a damaged file fails the stage before any work.
        let mut loaded = Vec::with_capacity(variants.len());
        for (i, v) in variants.iter().enumerate() {
            check_name(&v.name, &variants_path)?;
            if variants[..i].iter().any(|o| o.name == v.name) {
                let path = variants_path.display();
                return Err(anyhow!("{path}: variant `{}` is listed twice", v.name).into());
            }
            loaded.push(load_variant(v, train_dir, prior_dir, &test)?);
        }
        let ctx_info = RunInfo {
            params: &p,
            trained_with,
            binarize,
            binary,
        };
        let plans: Vec<Plan> = loaded
            .iter()
            .map(|l| Plan::new(&p.eval, n, l.components))
            .collect::<anyhow::Result<_>>()?;
        let total: u64 = plans.iter().map(|pl| pl.work()).sum();
        let mut progress = Progress {
            ctx,
            done: 0,
            total,
        };
        ctx.log(format!(
            "{} variant(s); {n} of {} test images; k = {}; binarization: {binarize}{}",
            variants.len(),
            test.rows,
            p.eval.k,
            if binarize == Binarize::Dynamic {
                format!(" (one draw, seed {})", p.eval.binarization_seed)
            } else {
                String::new()
            }
        ));
        let mut listed = Vec::new();
        let mut first: Option<(&str, Vec<f64>)> = None;
        for ((v, l), plan) in variants.iter().zip(&loaded).zip(&plans) {
            let dir = ctx.out.join(&v.name);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let paired = first.as_ref().map(|(name, nll)| (*name, nll.as_slice()));
            let nll = evaluate(
                ctx,
                &ctx_info,
                v,
                l,
                plan,
                &test,
                x_all,
                &dir,
                &mut progress,
                paired,
            )?;
            if first.is_none() {
                first = Some((&v.name, nll));
            }
            listed.push(EvaluatedVariant {
                name: v.name.clone(),
                label: v.label.clone(),
                directory: v.name.clone(),
            });
        }
        crate::write_json(&ctx.out.join("variants.json"), &listed)?;
        Ok(())
    }
}

/// What every variant's metrics share.
struct RunInfo<'a> {
    params: &'a Params,
    trained_with: TrainedWith,
    binarize: Binarize,
    /// Every evaluated test value is 0 or 1.
    binary: bool,
}

/// Whether the evaluated test data are binary: always under dynamic binarization (one fixed
/// draw), otherwise what the data stage recorded (`splits.test.binary` in `summary.json`), or —
/// for data stages that do not record it — every loaded test value is 0 or 1.
fn binary_test_data(summary: &DataSummary, x: &[f32]) -> bool {
    if summary.binarize == Binarize::Dynamic {
        return true;
    }
    match summary.splits.get("test").and_then(|s| s.binary) {
        Some(b) => b,
        None => x.iter().all(|v| *v == 0.0 || *v == 1.0),
    }
}

/// Why the "test NLL" of a Bernoulli likelihood on non-binary data is not one.
const CROSS_ENTROPY_NOTE: &str = "the model has a Bernoulli likelihood but the test data are not \
     binary (values between 0 and 1, e.g. data.binarize = \"none\"): test_nll is then a \
     cross-entropy between the data and the decoder's Bernoulli means, not a negative \
     log-likelihood (a Bernoulli assigns no probability to values other than 0 and 1); compare \
     it only with other cross-entropies on the same data";

/// A variant's model and prior, loaded and checked.
struct Loaded {
    vae: Vae,
    prior: Prior,
    /// The prior's method (`standard-normal`, `aggregate-posterior`, `mog`, `vamp`).
    method: String,
    /// Mixture components whose densities log p(z) sums (0 for the standard normal).
    components: usize,
}

fn load_variant(
    v: &Variant,
    train_dir: &Path,
    prior_dir: &Path,
    test: &Dataset,
) -> anyhow::Result<Loaded> {
    let model_dir = match v.model_stage.as_str() {
        "train" => train_dir,
        "prior" => prior_dir,
        other => bail!(
            "variant `{}`: unknown model_stage `{other}` (expected `train` or `prior`)",
            v.name
        ),
    };
    let model_path = model_dir.join(plain_name(&v.model_file, &v.name)?);
    let (vae, _) = load_model(&model_path).with_context(|| format!("variant `{}`", v.name))?;
    if vae.config().input_dim != test.features {
        bail!(
            "{}: the model reads {} features, the test split has {}",
            model_path.display(),
            vae.config().input_dim,
            test.features
        );
    }
    let (prior, method) = match &v.prior_file {
        None => (Prior::StandardNormal, "standard-normal".to_string()),
        Some(f) => {
            let path = prior_dir.join(plain_name(f, &v.name)?);
            let (prior, info) =
                load_prior(&path, vae.config()).with_context(|| format!("variant `{}`", v.name))?;
            (prior, info.method)
        }
    };
    let components = match prior.kind() {
        PriorKind::StandardNormal => 0,
        PriorKind::Mixture { components } | PriorKind::Vamp { components } => components,
    };
    Ok(Loaded {
        vae,
        prior,
        method,
        components,
    })
}

/// A file name from `variants.json`: only a plain name inside the stage's directory.
fn plain_name<'a>(file: &'a str, variant: &str) -> anyhow::Result<&'a str> {
    if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
        bail!("variant `{variant}`: `{file}` is not a plain file name");
    }
    Ok(file)
}

fn check_name(name: &str, path: &Path) -> anyhow::Result<()> {
    plain_name(name, name)
        .map(|_| ())
        .with_context(|| format!("{}: invalid variant name", path.display()))
}

/// How many images a variant's NLL and curve use.
struct Plan {
    /// Images requested (`eval.images`, 0 = all, capped at the test set).
    requested: usize,
    /// Images of the L_k curve (the first ones, at most `nll`).
    curve: usize,
    /// Samples per curve image (the largest k of the curve).
    curve_k: usize,
    /// Whether the curve reuses the NLL's samples (its largest k is `eval.k`).
    shared: bool,
    /// Images of the NLL: `requested`, or fewer for a mixture beyond the budget.
    nll: usize,
    /// Why `nll < requested`.
    note: Option<String>,
}

impl Plan {
    fn new(e: &EvalSection, requested: usize, components: usize) -> anyhow::Result<Plan> {
        let mut nll = requested;
        let mut note = None;
        if components > 0 {
            let per_image = e.k as f64 * components as f64;
            let affordable = ((MIXTURE_TERMS / per_image).floor() as usize).max(1);
            if affordable < requested {
                nll = affordable;
                note = Some(format!(
                    "mixture prior with {components} components: log p(z) costs k·K = \
                     {per_image:.2e} Gaussian terms per image; the NLL uses the first {nll} of \
                     {requested} images (budget {MIXTURE_TERMS:.1e} terms per variant)"
                ));
            }
        }
        let curve_k = e.curve_k.iter().copied().max().unwrap_or(1);
        let curve = e.curve_images.min(nll);
        if curve.saturating_mul(curve_k) > MAX_CURVE_VALUES {
            bail!(
                "the L_k curve needs {curve} images × {curve_k} samples in memory; lower \
                 eval.curve_images or the largest eval.curve_k (at most {MAX_CURVE_VALUES} values)"
            );
        }
        Ok(Plan {
            requested,
            curve,
            curve_k,
            shared: curve_k == e.k,
            nll,
            note,
        })
    }

    /// Images to process (progress units).
    fn work(&self) -> u64 {
        (self.nll + if self.shared { 0 } else { self.curve }) as u64
    }
}

struct Progress<'a, 'c> {
    ctx: &'a Context<'c>,
    done: u64,
    total: u64,
}

impl Progress<'_, '_> {
    fn advance(&mut self, images: usize, msg: &str) -> Result<(), StageError> {
        self.done += images as u64;
        self.ctx
            .progress(self.done.min(self.total), self.total, msg);
        if self.ctx.cancelled() {
            self.ctx
                .log("stop requested: the evaluation ends here (it restarts from the beginning)");
            return Err(StageError::Interrupted);
        }
        Ok(())
    }
}

/// Rows `start..end` of a posterior.
fn slice_posterior(p: &Posterior, start: usize, end: usize) -> Posterior {
    let d = p.dim;
    Posterior {
        rows: end - start,
        dim: d,
        mean: p.mean[start * d..end * d].to_vec(),
        std: p.std[start * d..end * d].to_vec(),
        log_std: p.log_std[start * d..end * d].to_vec(),
    }
}

/// Estimates for the first `images` rows in batches of [`BATCH_IMAGES`] (progress and stop
/// checks in between); log-weights are kept for the first `keep` images.
#[allow(clippy::too_many_arguments)]
fn estimate_batched(
    ev: &Evaluator,
    x: &[f32],
    post: &Posterior,
    images: usize,
    k: usize,
    seed: u64,
    keep: usize,
    progress: &mut Progress<'_, '_>,
    what: &str,
) -> Result<Vec<ImageEstimate>, StageError> {
    let dd = ev.vae().config().input_dim;
    let mut out = Vec::with_capacity(images);
    for start in (0..images).step_by(BATCH_IMAGES) {
        let end = (start + BATCH_IMAGES).min(images);
        let opts = SampleOptions {
            k,
            seed,
            first_stream: start as u64,
            keep_log_weights: start < keep,
        };
        let est = ev
            .estimate(
                &x[start * dd..end * dd],
                &slice_posterior(post, start, end),
                &opts,
            )
            .map_err(anyhow::Error::from)?;
        for (i, mut e) in est.into_iter().enumerate() {
            if start + i >= keep {
                e.log_weights = Vec::new();
            }
            if !e.bound.is_finite() {
                return Err(anyhow!(
                    "{what}: the estimate for test image {} is {} (non-finite log-weights)",
                    start + i,
                    e.bound
                )
                .into());
            }
            out.push(e);
        }
        progress.advance(end - start, &format!("{what}: {end}/{images} images"))?;
    }
    Ok(out)
}

/// Mean and standard error across images ([`MeanStderr`]), except that the standard error of a
/// single value is unknown (NaN, `null` in JSON) rather than `MeanStderr`'s 0: one image says
/// nothing about the spread between images.
fn across_images(e: MeanStderr, n: usize) -> MeanStderr {
    if n < 2 {
        MeanStderr {
            stderr: f64::NAN,
            ..e
        }
    } else {
        e
    }
}

/// Evaluates one variant into `dir`.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    ctx: &Context,
    info: &RunInfo<'_>,
    v: &Variant,
    l: &Loaded,
    plan: &Plan,
    test: &Dataset,
    x_all: &[f32],
    dir: &Path,
    progress: &mut Progress<'_, '_>,
    first: Option<(&str, &[f64])>,
) -> Result<Vec<f64>, StageError> {
    let started = Instant::now();
    let e = &info.params.eval;
    let seed = info.params.pipeline.seed;
    let dd = test.features;
    let n = plan.requested;
    let x = &x_all[..n * dd];
    let ev = Evaluator::new(&l.vae, &l.prior).with_context(|| format!("variant `{}`", v.name))?;
    let post = ev
        .encode(x)
        .with_context(|| format!("variant `{}`: encoding the test images", v.name))?;
    if let Some(note) = &plan.note {
        ctx.log(format!("variant `{}`: {note}", v.name));
    }
    ctx.log(format!(
        "variant `{}` ({}): NLL at k = {} on {} images",
        v.name, v.label, e.k, plan.nll
    ));

    // Test NLL (and the curve's samples when its largest k is eval.k).
    let t_nll = Instant::now();
    let nll_seed = seed_for(seed, "eval/nll");
    let keep = if plan.shared { plan.curve } else { 0 };
    let what = format!("{}: NLL", v.name);
    let mut est = estimate_batched(
        &ev, x, &post, plan.nll, e.k, nll_seed, keep, progress, &what,
    )?;
    let nll_seconds = t_nll.elapsed().as_secs_f64();
    let m = est.len();
    let curve_images = plan.curve;
    // Notes that qualify the numbers, joined with "; ".
    let mut notes: Vec<&str> = plan.note.iter().map(String::as_str).collect();
    if matches!(l.vae.config().likelihood, Likelihood::Bernoulli) && !info.binary {
        ctx.log(format!("variant `{}`: {CROSS_ENTROPY_NOTE}", v.name));
        notes.push(CROSS_ENTROPY_NOTE);
    }

    // The L_k curve from shared samples.
    let curve_lw: Vec<f64> = if plan.shared {
        est.iter_mut()
            .take(curve_images)
            .flat_map(|e| std::mem::take(&mut e.log_weights))
            .collect()
    } else {
        let what = format!("{}: L_k curve", v.name);
        let curve_seed = seed_for(seed, "eval/curve");
        let c = estimate_batched(
            &ev,
            x,
            &post,
            curve_images,
            plan.curve_k,
            curve_seed,
            curve_images,
            progress,
            &what,
        )?;
        c.into_iter().flat_map(|e| e.log_weights).collect()
    };
    let curve = lk_curve(&curve_lw, curve_images, plan.curve_k, &e.curve_k)
        .with_context(|| format!("variant `{}`: L_k curve", v.name))?;
    drop(curve_lw);

    // Per-image results.
    let labels: Vec<i64> = match &test.labels {
        Some(l) => l[..n].to_vec(),
        None => vec![-1; n],
    };
    let index: Vec<i64> = test.index[..n].iter().map(|&i| i as i64).collect();
    let nll: Vec<f64> = est.iter().map(|e| -e.bound).collect();
    let field = |f: fn(&ImageEstimate) -> f64| est.iter().map(f).collect::<Vec<f64>>();
    let (elbo, kl, recon) = (field(|e| e.elbo), field(|e| e.kl), field(|e| e.recon));
    write(
        dir,
        "per_image.parquet",
        Table::new()
            .with("index", Column::I64(index[..m].to_vec()))
            .with("label", Column::I64(labels[..m].to_vec()))
            .with("nll", Column::F64(nll.clone()))
            .with("elbo", Column::F64(elbo.clone()))
            .with("kl", Column::F64(kl.clone()))
            .with("recon", Column::F64(recon.clone())),
    )?;
    write_curve(dir, &curve)?;

    // Active units over the requested images.
    let d = post.dim;
    let variances = latent_variances(&post.mean, n, d).map_err(anyhow::Error::from)?;
    let active: Vec<bool> = variances.iter().map(|&s| s > e.active_threshold).collect();
    let active_units = active.iter().filter(|a| **a).count();
    let units_per_layer = units_per_layer(&l.vae, x, n, active_units, e.active_threshold, seed)?;
    write(
        dir,
        "units.parquet",
        Table::new()
            .with("dim", Column::I64((0..d as i64).collect()))
            .with("variance", Column::F64(variances))
            .with("active", Column::Bool(active)),
    )?;

    // For the report: prior samples, reconstructions, latent codes.
    let samples = if e.samples > 0 {
        let mut rng = stream_rng(seed_for(seed, "eval/samples"), 0);
        let z = l
            .prior
            .sample(&l.vae, e.samples, &mut rng)
            .map_err(anyhow::Error::from)?;
        l.vae.decode_top_mean(&z).map_err(anyhow::Error::from)?
    } else {
        Vec::new()
    };
    let mut t = Table::new().with("image", Column::I64((0..e.samples as i64).collect()));
    for (name, col) in pixel_columns(&samples, dd) {
        t.push(name, col);
    }
    write(dir, "samples.parquet", t)?;

    let r = e.reconstructions.min(n);
    let recon_px = if r > 0 {
        l.vae
            .decode_mean(&post.mean[..r * d])
            .map_err(anyhow::Error::from)?
    } else {
        Vec::new()
    };
    let mut rows = Vec::with_capacity(2 * r * dd);
    let (mut image, mut idx, mut kind) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..r {
        for (k, src) in [("original", x), ("reconstruction", &recon_px[..])] {
            rows.extend_from_slice(&src[i * dd..(i + 1) * dd]);
            image.push(i as i64);
            idx.push(index[i]);
            kind.push(k.to_string());
        }
    }
    let mut t = Table::new()
        .with("image", Column::I64(image))
        .with("index", Column::I64(idx))
        .with("kind", Column::Str(kind));
    for (name, col) in pixel_columns(&rows, dd) {
        t.push(name, col);
    }
    write(dir, "reconstructions.parquet", t)?;

    let means: Vec<f64> = post.mean.iter().map(|&v| v as f64).collect();
    let pca = principal_components(&means, n, d, 2).map_err(anyhow::Error::from)?;
    write(
        dir,
        "latents.parquet",
        Table::new()
            .with("index", Column::I64(index.clone()))
            .with("label", Column::I64(labels))
            .with(
                "x",
                Column::F64(pca.points.iter().step_by(2).copied().collect()),
            )
            .with(
                "y",
                Column::F64(pca.points.iter().skip(1).step_by(2).copied().collect()),
            ),
    )?;

    // metrics.json (a contract: docs/artifacts.md).
    let nll_est = across_images(MeanStderr::of(&nll), nll.len());
    let (test_nll, test_nll_stderr) = (nll_est.mean, nll_est.stderr);
    let elbo_mean = MeanStderr::of(&elbo).mean;
    let seconds = started.elapsed().as_secs_f64();
    let paired = match first {
        // Paired with the first variant: same images, same noise.
        Some((name, other)) => {
            let common = other.len().min(m);
            let diff = MeanStderr::paired_difference(&nll[..common], &other[..common])
                .map_err(anyhow::Error::from)?;
            let diff = across_images(diff, common);
            Some(Paired {
                paired_with: name.to_string(),
                paired_images: common,
                paired_nll_difference: diff.mean,
                paired_nll_difference_stderr: diff.stderr,
            })
        }
        None => None,
    };
    let metrics = Metrics {
        estimates: Estimates {
            test_nll,
            test_nll_stderr,
            eval_k: e.k,
            elbo: elbo_mean,
            kl: MeanStderr::of(&kl).mean,
            recon: MeanStderr::of(&recon).mean,
            active_units,
            active_units_per_layer: units_per_layer.clone(),
            latent_dims: l.vae.config().latent_dims(),
            images: m,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        },
        images_requested: n,
        paired,
        trained_with: info.trained_with,
        prior: l.method.clone(),
        prior_components: l.components,
        variant: v.name.clone(),
        variant_label: v.label.clone(),
        point: info.params.point.label.clone(),
        point_id: info.params.point.id.clone(),
        active_threshold: e.active_threshold,
        latent_dim: d,
        curve_images,
        binarize: info.binarize,
        binarization_seed: e.binarization_seed,
        nll_seconds,
        images_per_s: m as f64 / nll_seconds.max(1e-9),
        seconds,
        swept: info.params.point.values.clone(),
    };
    write_sorted(&dir.join("metrics.json"), &metrics)?;
    ctx.log(format!(
        "variant `{}`: test NLL {test_nll:.3} ± {test_nll_stderr:.3} (k = {}, {} images, \
         {:.1} images/s); ELBO {:.3}; active units {} (per layer, of {:?}); {seconds:.1} s",
        v.name,
        e.k,
        m,
        m as f64 / nll_seconds.max(1e-9),
        elbo_mean,
        units_per_layer
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        l.vae.config().latent_dims()
    ));
    Ok(nll)
}

/// Ancestral draws per image behind E_q[z_l|x] of the layers above the first.
const POSTERIOR_MEAN_SAMPLES: usize = 16;

/// Active units of every stochastic layer, bottom up: the first layer's count `first` (from the
/// exact posterior means), then for each layer above the units whose Monte Carlo E_q[z_l|x]
/// ([`POSTERIOR_MEAN_SAMPLES`] ancestral draws per image) varies across the `n` images of `x`
/// by more than `threshold` (Burda et al. 2016, §5.2).
fn units_per_layer(
    vae: &Vae,
    x: &[f32],
    n: usize,
    first: usize,
    threshold: f64,
    seed: u64,
) -> anyhow::Result<Vec<usize>> {
    let mut out = vec![first];
    if vae.config().stochastic_layers() == 1 || n == 0 {
        return Ok(out);
    }
    let means = vae
        .posterior_means(
            x,
            POSTERIOR_MEAN_SAMPLES,
            seed_for(seed, "eval/posterior-means"),
        )
        .context("posterior means of the upper layers")?;
    for (mean, d) in means.iter().zip(vae.config().latent_dims()).skip(1) {
        let variances = latent_variances(mean, n, d)?;
        out.push(variances.iter().filter(|&&v| v > threshold).count());
    }
    Ok(out)
}

/// `p0000`, `p0001`, … columns of row-major pixel rows (`f32` values stored as `f64`).
fn pixel_columns(rows: &[f32], width: usize) -> Vec<(String, Column)> {
    let n = rows.len().checked_div(width).unwrap_or(0);
    (0..width)
        .map(|j| {
            let col = (0..n).map(|i| rows[i * width + j] as f64).collect();
            (format!("p{j:04}"), Column::F64(col))
        })
        .collect()
}

fn write_curve(dir: &Path, curve: &[CurvePoint]) -> anyhow::Result<()> {
    write(
        dir,
        "lk_curve.parquet",
        Table::new()
            .with("k", Column::I64(curve.iter().map(|c| c.k as i64).collect()))
            .with(
                "bound",
                Column::F64(curve.iter().map(|c| c.bound).collect()),
            )
            .with(
                "stderr",
                Column::F64(curve.iter().map(|c| c.stderr).collect()),
            )
            .with(
                "delta",
                Column::F64(curve.iter().map(|c| c.delta).collect()),
            )
            .with(
                "delta_stderr",
                Column::F64(curve.iter().map(|c| c.delta_stderr).collect()),
            )
            .with(
                "images",
                Column::I64(curve.iter().map(|c| c.images as i64).collect()),
            ),
    )
}

fn write(dir: &Path, file: &str, table: Table) -> anyhow::Result<()> {
    let path = dir.join(file);
    vaepipe_data::write_table(&path, &table).with_context(|| format!("writing {}", path.display()))
}
