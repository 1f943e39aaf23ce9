//! The train stage: fits a VAE under the spec's objective (ELBO or the importance-weighted bound
//! L_k of Burda et al. 2016) and gradient estimator (reparameterization or DReG, Tucker et al.
//! 2019) with Adam, and writes `model.safetensors`, `history.parquet` and `train.json`.
//!
//! The loop ([`fit`]) is shared with the prior stage's fine-tuning. It is resumable bit for bit:
//! every random draw is derived from (seed, purpose, epoch or step), so a checkpoint only needs
//! the trainer state (parameters, Adam moments, step) and the loop position. Checkpoints are
//! written at every epoch end, every `--checkpoint-every` steps, and when a stop is requested
//! (SIGTERM/USR1), atomically (safetensors file first, then the JSON that points to it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vaepipe_data::{Column, Dataset, Table};
use vaepipe_engine::{Context, Stage, StageError, pick};
use vaepipe_nn::{
    AdamHyper, Estimator, Init, InitScheme, NamedTensor, NnError, Objective, ObjectiveKind,
    OutputBias, Prior, Trainable, Trainer, Vae,
};
use vaepipe_spec::{Binarize, ModelSection, Schedule, TrainSection};

use crate::artifacts::{ModelConfig, read_split, save_model};
use crate::util::seed_for;

pub struct TrainStage;

#[derive(Deserialize)]
struct Params {
    model: ModelSection,
    train: TrainSection,
    pipeline: SeedOnly,
}

#[derive(Deserialize)]
pub(crate) struct SeedOnly {
    pub seed: u64,
}

impl Stage for TrainStage {
    fn name(&self) -> &'static str {
        "train"
    }
    fn version(&self) -> u32 {
        2
    }
    fn inputs(&self) -> &'static [&'static str] {
        &["data"]
    }
    fn params(&self, point: &Value) -> Value {
        pick(point, &["model", "train", "pipeline.seed"])
    }
    fn resumable(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        let p: Params = serde_json::from_value(ctx.params.clone())
            .map_err(|e| anyhow!("train stage parameters: {e}"))?;
        let data = ctx.input("data")?;
        let train = read_split(&data.dir, "train")?;
        let validation = read_split(&data.dir, "validation")?;
        let binarize = data_binarization(&data.dir)?;
        let config = ModelConfig {
            input_dim: train.features,
            model: p.model.clone(),
        };
        if train.rows == 0 {
            return Err(anyhow!("the training split is empty").into());
        }
        let vae = Vae::with_init(
            &config.vae_config(),
            &init_of(&p.model, &train)?,
            seed_for(p.pipeline.seed, "train/init"),
        )
        .context("building the model")?;
        let objective = objective_of(&p.train);
        let mut trainer = Trainer::new(
            vae,
            Prior::StandardNormal,
            objective,
            adam_of(&p.train),
            Trainable::MODEL,
        )
        .context("building the trainer")?;
        ctx.log(format!(
            "{} parameters; {} training / {} validation rows; objective {} k={} estimator {}{}",
            config.vae_config().parameter_count(),
            train.rows,
            validation.rows,
            p.train.objective,
            p.train.k,
            p.train.estimator,
            if p.train.analytic_kl {
                " (analytic KL)"
            } else {
                ""
            }
        ));
        let settings = FitSettings {
            time_limit: p.train.time_limit,
            ..FitSettings::from_train(
                &p.train,
                p.pipeline.seed,
                binarize == Binarize::Dynamic,
                p.train.epochs,
                "train",
            )
        };
        let outcome = fit(ctx, &mut trainer, &train, &validation, &settings)?;
        let (vae, _) = trainer.into_parts();
        let vae = match &outcome.best_model {
            Some(best) => Vae::from_named_tensors(&config.vae_config(), best)
                .context("restoring the best epoch's parameters")?,
            None => vae,
        };
        save_model(&ctx.out.join("model.safetensors"), &vae, &config)?;
        write_history(&ctx.out.join("history.parquet"), &outcome.history)?;
        let last = outcome.history.last();
        let summary = serde_json::json!({
            "objective": p.train.objective,
            "k": p.train.k,
            "estimator": p.train.estimator,
            "analytic_kl": p.train.analytic_kl,
            "epochs_run": outcome.history.len(),
            "best_epoch": (outcome.best_epoch > 0).then_some(outcome.best_epoch),
            "best_validation_bound": outcome.best_validation.is_finite().then_some(outcome.best_validation),
            "final_train_bound": last.map(|h| h.train_bound),
            "final_validation_bound": last.map(|h| h.validation_bound),
            "stopped_early": outcome.stopped_early,
            "steps": outcome.steps,
            "seconds": last.map_or(0.0, |h| h.seconds),
            "parameters": config.vae_config().parameter_count(),
            "resumed": outcome.resumed,
            "stopped_by": outcome.stopped_by.as_str(),
            "time_limit": p.train.time_limit,
            "elapsed_seconds": outcome.elapsed,
        });
        crate::write_json(&ctx.out.join("train.json"), &summary)?;
        Ok(())
    }
}

/// The binarization mode recorded by the data stage.
pub(crate) fn data_binarization(data_dir: &Path) -> anyhow::Result<Binarize> {
    let summary: Value = crate::read_json(&data_dir.join("summary.json"))?;
    serde_json::from_value(summary["binarize"].clone()).map_err(|e| {
        anyhow!(
            "{}: `binarize`: {e}",
            data_dir.join("summary.json").display()
        )
    })
}

/// The initialisation of `[model]`: its scheme and σ-head scale, and for `output_bias = "data"`
/// the logits of the training split's per-feature means (clipped to [10⁻³, 1 − 10⁻³]; under
/// dynamic binarization the split holds intensities, whose mean is the binarized data's).
pub(crate) fn init_of(m: &ModelSection, train: &Dataset) -> anyhow::Result<Init> {
    let output_bias = match m.output_bias {
        vaepipe_spec::OutputBias::Init => OutputBias::Scheme,
        vaepipe_spec::OutputBias::Data => {
            OutputBias::data_logits(&feature_means(train)).map_err(|e| {
                anyhow!("model.output_bias = \"data\" needs training means in [0, 1]: {e}")
            })?
        }
    };
    Ok(Init {
        scheme: match m.init {
            vaepipe_spec::InitScheme::Pytorch => InitScheme::Pytorch,
            vaepipe_spec::InitScheme::Glorot => InitScheme::Glorot,
        },
        output_bias,
        std_head_scale: m.std_head_scale,
    })
}

/// The mean of every feature over the rows of `d` (in `f64`; NaN for no rows).
pub(crate) fn feature_means(d: &Dataset) -> Vec<f64> {
    let mut sum = vec![0f64; d.features];
    for row in d.x.chunks_exact(d.features.max(1)) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    sum.iter().map(|s| s / d.rows as f64).collect()
}

pub(crate) fn objective_of(t: &TrainSection) -> Objective {
    Objective {
        kind: match t.objective {
            vaepipe_spec::Objective::Elbo => ObjectiveKind::Elbo,
            vaepipe_spec::Objective::Iwae => ObjectiveKind::Iwae,
        },
        k: t.k,
        estimator: match t.estimator {
            vaepipe_spec::Estimator::Reparam => Estimator::Reparam,
            vaepipe_spec::Estimator::Dreg => Estimator::Dreg,
        },
        analytic_kl: t.analytic_kl,
    }
}

pub(crate) fn adam_of(t: &TrainSection) -> AdamHyper {
    AdamHyper {
        lr: t.lr,
        beta1: t.betas[0],
        beta2: t.betas[1],
        eps: t.eps,
    }
}

/// How [`fit`] trains.
#[derive(Debug, Clone)]
pub(crate) struct FitSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub schedule: Schedule,
    pub lr: f64,
    pub step_epochs: usize,
    pub step_gamma: f64,
    pub patience: usize,
    /// Wall-clock budget in seconds (the train stage's `train.time_limit`; `None` for
    /// fine-tuning): the loop stops at the end of the epoch in which it runs out.
    pub time_limit: Option<f64>,
    /// Draw a fresh binarization of every batch (and one fixed binarization of the validation set).
    pub dynamic: bool,
    pub seed: u64,
    /// Names the checkpoint files and the random streams, so two loops in one stage differ.
    pub tag: &'static str,
}

impl FitSettings {
    pub fn from_train(
        t: &TrainSection,
        seed: u64,
        dynamic: bool,
        epochs: usize,
        tag: &'static str,
    ) -> Self {
        FitSettings {
            epochs,
            batch_size: t.batch_size,
            schedule: t.schedule,
            lr: t.lr,
            step_epochs: t.step_epochs,
            step_gamma: t.step_gamma,
            patience: t.patience,
            time_limit: None,
            dynamic,
            seed,
            tag,
        }
    }

    /// Learning rate of (0-based) `epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step => {
                self.lr
                    * self
                        .step_gamma
                        .powi((epoch / self.step_epochs.max(1)) as i32)
            }
            Schedule::Iwae => {
                // Burda et al. 2016: stage i has 3^i epochs at lr · 10^(−i/7).
                let (mut stage, mut end) = (0i32, 1usize);
                while epoch >= end {
                    stage += 1;
                    end += 3usize.pow(stage as u32);
                }
                self.lr * 10f64.powf(-(stage as f64) / 7.0)
            }
        }
    }
}

/// One row of `history.parquet`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HistoryRow {
    pub epoch: usize,
    pub step: u64,
    #[serde(with = "exact_f64")]
    pub train_bound: f64,
    #[serde(with = "exact_f64")]
    pub validation_bound: f64,
    #[serde(with = "exact_f64")]
    pub lr: f64,
    #[serde(with = "exact_f64")]
    pub seconds: f64,
    #[serde(with = "exact_f64")]
    pub images_per_s: f64,
}

/// f64 in checkpoint JSON as the shortest round-trip decimal *string*: serde_json's default
/// number parser may be one ulp off, and a resumed run must reproduce its history bit for bit.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why [`fit`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoppedBy {
    /// Every epoch ran.
    #[default]
    Epochs,
    /// Early stopping (`train.patience`).
    Patience,
    /// The wall-clock budget (`train.time_limit`) ran out.
    TimeLimit,
}

impl StoppedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            StoppedBy::Epochs => "epochs",
            StoppedBy::Patience => "patience",
            StoppedBy::TimeLimit => "time_limit",
        }
    }
}

/// What [`fit`] hands back.
pub(crate) struct FitOutcome {
    pub history: Vec<HistoryRow>,
    pub best_epoch: usize,
    pub best_validation: f64,
    /// The best epoch's parameters, when early stopping is on.
    pub best_model: Option<Vec<NamedTensor>>,
    pub stopped_early: bool,
    pub stopped_by: StoppedBy,
    /// Wall-clock seconds of the loop (training and validation) over all attempts, as counted
    /// against the time limit.
    pub elapsed: f64,
    pub steps: u64,
    pub resumed: u32,
}

/// Loop position and bookkeeping saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    /// 0-based epoch in progress.
    epoch: usize,
    /// Next batch of that epoch.
    batch: usize,
    #[serde(with = "exact_f64")]
    epoch_bound_sum: f64,
    epoch_images: usize,
    #[serde(with = "exact_f64")]
    epoch_seconds: f64,
    #[serde(with = "exact_f64")]
    seconds: f64,
    history: Vec<HistoryRow>,
    #[serde(with = "exact_f64")]
    best_validation: f64,
    best_epoch: usize,
    since_best: usize,
    stopped_early: bool,
    /// Why the loop ended (`epochs` while it runs).
    #[serde(default)]
    stopped_by: StoppedBy,
    /// Wall-clock seconds of the loop up to this checkpoint, over all attempts (the time
    /// limit's clock; time after the last checkpoint of a killed attempt is not counted).
    #[serde(default, with = "exact_f64")]
    elapsed: f64,
    resumed: u32,
    /// The safetensors file (in the same directory) with the trainer state.
    state_file: String,
}

fn checkpoint_paths(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{tag}-checkpoint.json")),
        dir.join(format!("{tag}-best.safetensors")),
    )
}

fn save_checkpoint(
    dir: &Path,
    tag: &str,
    trainer: &Trainer,
    pos: &mut Position,
) -> anyhow::Result<()> {
    let state_file = format!("{tag}-checkpoint-{}.safetensors", trainer.steps());
    vaepipe_nn::save_safetensors(dir.join(&state_file), &trainer.state(), &Default::default())?;
    let previous = std::mem::replace(&mut pos.state_file, state_file);
    let (json, _) = checkpoint_paths(dir, tag);
    vaepipe_engine::store::write_atomic(&json, &serde_json::to_vec_pretty(pos)?)?;
    if !previous.is_empty() && previous != pos.state_file {
        let _ = std::fs::remove_file(dir.join(previous));
    }
    Ok(())
}

fn load_checkpoint(ctx: &Context, tag: &str, trainer: &mut Trainer) -> Option<Position> {
    let (json, _) = checkpoint_paths(ctx.out, tag);
    let pos: Position = match std::fs::read(&json) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(p) => p,
            Err(e) => {
                ctx.log(format!(
                    "ignoring unreadable checkpoint {}: {e}",
                    json.display()
                ));
                return None;
            }
        },
        Err(_) => return None,
    };
    let state = match vaepipe_nn::load_safetensors(ctx.out.join(&pos.state_file)) {
        Ok((s, _)) => s,
        Err(e) => {
            ctx.log(format!("ignoring checkpoint: {e}"));
            return None;
        }
    };
    if let Err(e) = trainer.restore(&state) {
        ctx.log(format!(
            "ignoring checkpoint that does not fit the model: {e}"
        ));
        return None;
    }
    Some(pos)
}

/// Removes the loop's checkpoint files, including temporary files of writes that a kill
/// interrupted (`.{tag}-…`), so that none of them is published with the stage's output.
fn remove_checkpoints(dir: &Path, tag: &str) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("{tag}-checkpoint"))
                || name == format!("{tag}-best.safetensors")
                || name.starts_with(&format!(".{tag}-"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A fixed Bernoulli draw of a dataset (for validation and test under dynamic binarization),
/// with the data crate's drawing rule.
pub(crate) fn binarize_fixed(x: &[f32], seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0.0; x.len()];
    vaepipe_data::bernoulli_into(x, &mut out, &mut rng);
    out
}

/// The test data as evaluated (Burda et al. 2016): under dynamic binarization one fixed draw
/// with `eval.binarization_seed`, shared by every stage that measures on the test set;
/// otherwise the stored values.
pub(crate) fn evaluated_test_x(
    test: &Dataset,
    dynamic: bool,
    binarization_seed: u64,
) -> std::borrow::Cow<'_, [f32]> {
    if dynamic {
        std::borrow::Cow::Owned(binarize_fixed(&test.x, binarization_seed))
    } else {
        std::borrow::Cow::Borrowed(&test.x)
    }
}

/// Mean bound on a dataset (L_k for IWAE, the k-sample ELBO otherwise), with fixed noise;
/// NaN for an empty dataset (no validation split).
pub(crate) fn mean_bound(
    vae: &Vae,
    prior: &Prior,
    objective: &Objective,
    x: &[f32],
    rows: usize,
    seed: u64,
) -> anyhow::Result<f64> {
    if rows == 0 {
        return Ok(f64::NAN);
    }
    let chunk = 500usize;
    let mut total = 0.0;
    for (c, start) in (0..rows).step_by(chunk).enumerate() {
        let n = chunk.min(rows - start);
        let xs = &x[start * vae.config().input_dim..(start + n) * vae.config().input_dim];
        let mut rng = vaepipe_nn::stream_rng(seed, c as u64);
        let lw = vaepipe_nn::log_weights(vae, prior, xs, n, objective.k, &mut rng)?;
        total += match objective.kind {
            ObjectiveKind::Iwae => vaepipe_nn::bound_from_log_weights(&lw, n, objective.k)?
                .iter()
                .sum::<f64>(),
            ObjectiveKind::Elbo => lw.iter().map(|v| *v as f64).sum::<f64>() / objective.k as f64,
        };
    }
    Ok(total / rows as f64)
}

/// Trains `trainer` on `train`, validating on `validation` after every epoch, with checkpoints
/// in the stage's output directory (resumed if present).
pub(crate) fn fit(
    ctx: &Context,
    trainer: &mut Trainer,
    train: &Dataset,
    validation: &Dataset,
    s: &FitSettings,
) -> Result<FitOutcome, StageError> {
    let d = train.features;
    let n = train.rows;
    if n == 0 {
        return Err(anyhow!("the training split is empty").into());
    }
    let batches = n.div_ceil(s.batch_size);
    let total_steps = (batches * s.epochs) as u64;
    // The validation draw and noise do not depend on the loop's tag, so fine-tuning reports
    // bounds comparable with training's.
    let val_x = if s.dynamic {
        binarize_fixed(&validation.x, seed_for(s.seed, "validation-binarization"))
    } else {
        validation.x.clone()
    };
    let val_seed = seed_for(s.seed, "validation-noise");
    let noise_seed = seed_for(s.seed, &format!("{}/noise", s.tag));
    let bin_seed = seed_for(s.seed, &format!("{}/binarize", s.tag));
    let (_, best_path) = checkpoint_paths(ctx.out, s.tag);

    let mut pos = match load_checkpoint(ctx, s.tag, trainer) {
        Some(mut p) => {
            p.resumed += 1;
            ctx.log(format!(
                "resuming from the checkpoint at epoch {} batch {} (step {})",
                p.epoch + 1,
                p.batch,
                trainer.steps()
            ));
            p
        }
        None => Position {
            epoch: 0,
            batch: 0,
            epoch_bound_sum: 0.0,
            epoch_images: 0,
            epoch_seconds: 0.0,
            seconds: 0.0,
            history: Vec::new(),
            best_validation: f64::NEG_INFINITY,
            best_epoch: 0,
            since_best: 0,
            stopped_early: false,
            stopped_by: StoppedBy::Epochs,
            elapsed: 0.0,
            resumed: 0,
            state_file: String::new(),
        },
    };
    // The time limit's clock: banked into `pos.elapsed` before every checkpoint.
    let mut clock = Instant::now();
    let bank = |pos: &mut Position, clock: &mut Instant| {
        pos.elapsed += clock.elapsed().as_secs_f64();
        *clock = Instant::now();
    };
    let mut xb = vec![0f32; s.batch_size * d];
    let mut last_save = trainer.steps();
    while pos.epoch < s.epochs && !pos.stopped_early && pos.stopped_by == StoppedBy::Epochs {
        let lr = s.lr_at(pos.epoch);
        trainer.set_lr(lr).map_err(anyhow::Error::from)?;
        let order = vaepipe_data::permutation(
            n,
            seed_for(s.seed, &format!("{}/shuffle/{}", s.tag, pos.epoch)),
        );
        let mut t_epoch = Instant::now();
        while pos.batch < batches {
            let rows = &order[pos.batch * s.batch_size..((pos.batch + 1) * s.batch_size).min(n)];
            let b = rows.len();
            let step = trainer.steps();
            if s.dynamic {
                let mut rng = vaepipe_nn::stream_rng(bin_seed, step);
                for (i, r) in rows.iter().enumerate() {
                    vaepipe_data::bernoulli_into(
                        train.row(*r),
                        &mut xb[i * d..(i + 1) * d],
                        &mut rng,
                    );
                }
            } else {
                for (i, r) in rows.iter().enumerate() {
                    xb[i * d..(i + 1) * d].copy_from_slice(train.row(*r));
                }
            }
            let mut rng = vaepipe_nn::stream_rng(noise_seed, step);
            let stats = match trainer.step(&xb[..b * d], b, &mut rng) {
                Ok(st) => st,
                Err(NnError::Diverged { what }) => {
                    let kept = if pos.state_file.is_empty() {
                        "no checkpoint was written yet".to_string()
                    } else {
                        format!(
                            "the last good checkpoint ({}) is kept in {}",
                            pos.state_file,
                            ctx.out.display()
                        )
                    };
                    return Err(anyhow!("training diverged at epoch {} step {}: {what}; {kept}. Lower train.lr or change the seed", pos.epoch + 1, step + 1).into());
                }
                Err(e) => return Err(anyhow::Error::from(e).into()),
            };
            pos.batch += 1;
            pos.epoch_bound_sum += stats.bound * b as f64;
            pos.epoch_images += b;
            let done = trainer.steps();
            if done % 10 == 0 || pos.batch == batches {
                let msg = format!(
                    "epoch {}/{} bound {:.2}",
                    pos.epoch + 1,
                    s.epochs,
                    pos.epoch_bound_sum / pos.epoch_images as f64
                );
                ctx.progress(done.min(total_steps), total_steps, &msg);
            }
            let every = ctx.checkpoint_every.unwrap_or(0);
            let stop = ctx.cancelled();
            if stop || (every > 0 && done - last_save >= every) {
                pos.epoch_seconds += t_epoch.elapsed().as_secs_f64();
                t_epoch = Instant::now();
                bank(&mut pos, &mut clock);
                save_checkpoint(ctx.out, s.tag, trainer, &mut pos)?;
                last_save = done;
                if stop {
                    ctx.log(format!(
                        "stop requested: checkpoint saved at epoch {} step {}",
                        pos.epoch + 1,
                        done
                    ));
                    return Err(StageError::Interrupted);
                }
            }
        }
        // End of epoch: validate, record, maybe stop early, checkpoint.
        let epoch_seconds = pos.epoch_seconds + t_epoch.elapsed().as_secs_f64();
        let val = mean_bound(
            trainer.vae(),
            trainer.prior(),
            trainer.objective(),
            &val_x,
            validation.rows,
            val_seed,
        )?;
        if validation.rows > 0 && !val.is_finite() {
            return Err(anyhow!(
                "the validation bound is {val} after epoch {}",
                pos.epoch + 1
            )
            .into());
        }
        pos.seconds += epoch_seconds;
        let row = HistoryRow {
            epoch: pos.epoch + 1,
            step: trainer.steps(),
            train_bound: pos.epoch_bound_sum / pos.epoch_images.max(1) as f64,
            validation_bound: val,
            lr,
            seconds: pos.seconds,
            images_per_s: pos.epoch_images as f64 / epoch_seconds.max(1e-9),
        };
        let validation_text = if row.validation_bound.is_finite() {
            format!(" validation {:.3}", row.validation_bound)
        } else {
            String::new()
        };
        ctx.log(format!(
            "epoch {}/{}: train {:.3}{validation_text} lr {:.2e} ({:.0} images/s)",
            row.epoch, s.epochs, row.train_bound, lr, row.images_per_s
        ));
        pos.history.push(row);
        if validation.rows == 0 {
            // Nothing to compare: the last epoch is the result (early stopping needs a split).
            pos.best_epoch = pos.epoch + 1;
        } else if val > pos.best_validation {
            pos.best_validation = val;
            pos.best_epoch = pos.epoch + 1;
            pos.since_best = 0;
            if s.patience > 0 {
                vaepipe_nn::save_safetensors(
                    &best_path,
                    &trainer.vae().named_tensors(),
                    &Default::default(),
                )
                .map_err(anyhow::Error::from)?;
            }
        } else {
            pos.since_best += 1;
            if s.patience > 0 && pos.since_best >= s.patience {
                ctx.log(format!(
                    "early stopping: no improvement for {} epochs (best epoch {})",
                    s.patience, pos.best_epoch
                ));
                pos.stopped_early = true;
            }
        }
        pos.epoch += 1;
        pos.batch = 0;
        pos.epoch_bound_sum = 0.0;
        pos.epoch_images = 0;
        pos.epoch_seconds = 0.0;
        bank(&mut pos, &mut clock);
        if pos.stopped_early {
            pos.stopped_by = StoppedBy::Patience;
        } else if let Some(limit) = s.time_limit
            && pos.epoch < s.epochs
            && pos.elapsed >= limit
        {
            ctx.log(format!(
                "time limit: {:.1} s of {limit} s used after epoch {}/{}; stopping",
                pos.elapsed, pos.epoch, s.epochs
            ));
            pos.stopped_by = StoppedBy::TimeLimit;
        }
        save_checkpoint(ctx.out, s.tag, trainer, &mut pos)?;
        last_save = trainer.steps();
    }
    let best_model = if s.patience > 0 && best_path.exists() {
        Some(
            vaepipe_nn::load_safetensors(&best_path)
                .map_err(anyhow::Error::from)?
                .0,
        )
    } else {
        None
    };
    remove_checkpoints(ctx.out, s.tag);
    bank(&mut pos, &mut clock);
    Ok(FitOutcome {
        best_epoch: pos.best_epoch,
        best_validation: pos.best_validation,
        best_model,
        stopped_early: pos.stopped_early,
        stopped_by: if pos.stopped_early {
            StoppedBy::Patience
        } else {
            pos.stopped_by
        },
        elapsed: pos.elapsed,
        steps: trainer.steps(),
        resumed: pos.resumed,
        history: pos.history,
    })
}

pub(crate) fn write_history(path: &Path, h: &[HistoryRow]) -> anyhow::Result<()> {
    let table = Table::new()
        .with(
            "epoch",
            Column::I64(h.iter().map(|r| r.epoch as i64).collect()),
        )
        .with(
            "step",
            Column::I64(h.iter().map(|r| r.step as i64).collect()),
        )
        .with(
            "train_bound",
            Column::F64(h.iter().map(|r| r.train_bound).collect()),
        )
        .with(
            "validation_bound",
            Column::F64(h.iter().map(|r| r.validation_bound).collect()),
        )
        .with("lr", Column::F64(h.iter().map(|r| r.lr).collect()))
        .with(
            "seconds",
            Column::F64(h.iter().map(|r| r.seconds).collect()),
        )
        .with(
            "images_per_s",
            Column::F64(h.iter().map(|r| r.images_per_s).collect()),
        );
    vaepipe_data::write_table(path, &table)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(schedule: Schedule) -> FitSettings {
        FitSettings {
            epochs: 100,
            batch_size: 20,
            schedule,
            lr: 1e-3,
            step_epochs: 10,
            step_gamma: 0.5,
            patience: 0,
            time_limit: None,
            dynamic: false,
            seed: 1,
            tag: "t",
        }
    }

    #[test]
    fn iwae_schedule_has_stages_of_3_to_the_i_epochs() {
        let s = settings(Schedule::Iwae);
        // Stage 0: epoch 0; stage 1: epochs 1..4; stage 2: 4..13; stage 3: 13..40.
        let lr = |e| s.lr_at(e);
        assert_eq!(lr(0), 1e-3);
        for e in 1..4 {
            assert!((lr(e) - 1e-3 * 10f64.powf(-1.0 / 7.0)).abs() < 1e-15);
        }
        for e in 4..13 {
            assert!((lr(e) - 1e-3 * 10f64.powf(-2.0 / 7.0)).abs() < 1e-15);
        }
        assert!((lr(13) - 1e-3 * 10f64.powf(-3.0 / 7.0)).abs() < 1e-15);
        assert!(
            (lr(3279) - 1e-3 * 10f64.powf(-7.0 / 7.0)).abs() < 1e-15,
            "the paper's 3280 passes end in stage 7"
        );
    }

    #[test]
    fn step_schedule_decays_every_step_epochs() {
        let s = settings(Schedule::Step);
        assert_eq!(s.lr_at(9), 1e-3);
        assert_eq!(s.lr_at(10), 5e-4);
        assert_eq!(s.lr_at(25), 2.5e-4);
    }

    #[test]
    fn checkpoint_positions_round_trip_exactly() {
        let awkward = [-227.117_919_391_632_48, 0.1 + 0.2, 1e-310, f64::MAX, -0.0];
        let rows: Vec<HistoryRow> = awkward
            .iter()
            .enumerate()
            .map(|(i, v)| HistoryRow {
                epoch: i,
                step: i as u64,
                train_bound: *v,
                validation_bound: -*v,
                lr: v.abs(),
                seconds: *v,
                images_per_s: *v,
            })
            .collect();
        let pos = Position {
            epoch: 1,
            batch: 2,
            epoch_bound_sum: 0.1 + 0.7,
            epoch_images: 3,
            epoch_seconds: 1.0 / 3.0,
            seconds: 2.0 / 3.0,
            history: rows,
            best_validation: f64::NEG_INFINITY,
            best_epoch: 0,
            since_best: 0,
            stopped_early: false,
            stopped_by: StoppedBy::TimeLimit,
            elapsed: 0.1 + 0.2,
            resumed: 0,
            state_file: "x".into(),
        };
        let back: Position = serde_json::from_slice(&serde_json::to_vec(&pos).unwrap()).unwrap();
        assert_eq!(back.best_validation, f64::NEG_INFINITY);
        assert_eq!(
            back.epoch_bound_sum.to_bits(),
            pos.epoch_bound_sum.to_bits()
        );
        assert_eq!(back.epoch_seconds.to_bits(), pos.epoch_seconds.to_bits());
        assert_eq!(back.elapsed.to_bits(), pos.elapsed.to_bits());
        assert_eq!(back.stopped_by, StoppedBy::TimeLimit);
        for (a, b) in back.history.iter().zip(&pos.history) {
            for (x, y) in [
                (a.train_bound, b.train_bound),
                (a.validation_bound, b.validation_bound),
                (a.lr, b.lr),
                (a.seconds, b.seconds),
            ] {
                assert_eq!(x.to_bits(), y.to_bits());
            }
        }
    }

    #[test]
    fn fixed_binarization_is_seeded_and_follows_the_probabilities() {
        let p: Vec<f32> = (0..20_000).map(|i| (i % 5) as f32 / 4.0).collect();
        let a = binarize_fixed(&p, 3);
        assert_eq!(a, binarize_fixed(&p, 3));
        assert_ne!(a, binarize_fixed(&p, 4));
        for level in 0..5 {
            let draws: Vec<f32> = a
                .iter()
                .zip(&p)
                .filter(|(_, q)| **q == level as f32 / 4.0)
                .map(|(v, _)| *v)
                .collect();
            let mean = draws.iter().sum::<f32>() / draws.len() as f32;
            assert!(
                (mean - level as f32 / 4.0).abs() < 0.03,
                "level {level}: {mean}"
            );
        }
    }
}
