//! The one training loop of the stages ([`fit`]), used by training, by the prior stage's
//! fine-tuning and — through its minibatch stream [`Batches`] — by the prior stage's gradient
//! refit. Small pieces in their own modules:
//!
//! * `batches`: the minibatch stream (shuffling, dynamic binarization, one step per batch with
//!   its noise);
//! * `settings`: [`FitSettings`] and the learning-rate schedule;
//! * `state`: the resumable loop position, its checkpoint files and the early-stopping
//!   bookkeeping;
//! * `history`: one row per epoch and `history.parquet`.
//!
//! The loop is resumable bit for bit: every random draw is derived from (seed, purpose, epoch
//! or step), so a checkpoint only needs the trainer state (parameters, Adam moments, step) and
//! the loop position. Checkpoints are written at every epoch end, every `--checkpoint-every`
//! steps, and when a stop is requested (SIGTERM/USR1), atomically (safetensors file first, then
//! the JSON that points to it).

mod batches;
mod history;
mod settings;
mod state;

use std::time::Instant;

use anyhow::anyhow;
use serde::{Deserialize, Serialize};
use vaepipe_data::Dataset;
use vaepipe_engine::{Context, StageError};
use vaepipe_nn::{NamedTensor, NnError, Objective, Prior, Trainer, Vae};

use crate::util::seed_for;

pub(crate) use batches::{Batches, binarize_fixed};
pub(crate) use history::{HistoryRow, write_history};
pub(crate) use settings::FitSettings;
use state::{
    Position, Verdict, checkpoint_paths, load_checkpoint, remove_checkpoints, save_checkpoint,
};

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

/// Mean bound on a dataset (the objective's value: L_k for IWAE, the k-sample ELBO, MIWAE's or
/// CIWAE's value, L_{mk} for PIWAE), with fixed noise;
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
        let lw = vaepipe_nn::log_weights(vae, prior, xs, n, objective.samples(), &mut rng)?;
        total += objective
            .values_from_log_weights(&lw, n)?
            .iter()
            .sum::<f64>();
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
    if train.rows == 0 {
        return Err(anyhow!("the training split is empty").into());
    }
    let mut stream = Batches::new(train, s.batch_size, s.dynamic, s.seed, s.tag);
    let batches = stream.per_epoch();
    let total_steps = (batches * s.epochs) as u64;
    // The validation draw and noise do not depend on the loop's tag, so fine-tuning reports
    // bounds comparable with training's.
    let val_x = if s.dynamic {
        binarize_fixed(&validation.x, seed_for(s.seed, "validation-binarization"))
    } else {
        validation.x.clone()
    };
    let val_seed = seed_for(s.seed, "validation-noise");
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
        None => Position::fresh(),
    };
    // The time limit's clock: banked into `pos.elapsed` before every checkpoint.
    let mut clock = Instant::now();
    let bank = |pos: &mut Position, clock: &mut Instant| {
        pos.elapsed += clock.elapsed().as_secs_f64();
        *clock = Instant::now();
    };
    let mut last_save = trainer.steps();
    while pos.epoch < s.epochs && !pos.stopped_early && pos.stopped_by == StoppedBy::Epochs {
        let lr = s.lr_at(pos.epoch);
        trainer.set_lr(lr).map_err(anyhow::Error::from)?;
        let mut t_epoch = Instant::now();
        while pos.batch < batches {
            let step = trainer.steps();
            let (stats, b) = match stream.step(trainer, pos.epoch, pos.batch) {
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
        match pos.judge(val, validation.rows > 0, s.patience) {
            Verdict::Improved if s.patience > 0 => {
                vaepipe_nn::save_safetensors(
                    &best_path,
                    &trainer.vae().named_tensors(),
                    &Default::default(),
                )
                .map_err(anyhow::Error::from)?;
            }
            Verdict::Stop => ctx.log(format!(
                "early stopping: no improvement for {} epochs (best epoch {})",
                s.patience, pos.best_epoch
            )),
            Verdict::Improved | Verdict::Continue => {}
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
