//! The fine-tuning phase of the prior stage: encoder and decoder trained further under the
//! refit prior through the train stage's loop.

use anyhow::Context as _;
use vaepipe_data::Dataset;
use vaepipe_engine::{Context, StageError};
use vaepipe_nn::{AdamHyper, Prior, Trainable, Trainer, Vae};
use vaepipe_spec::{Schedule, TrainSection};

use crate::artifacts::{FinetuneSummary, ModelConfig, save_model};
use crate::convert::{adam_of, objective_of};
use crate::fit::{FitSettings, write_history};

use super::Params;

/// Continues training encoder and decoder under the refit prior through the train stage's loop
/// (resumed from its checkpoint in the stage's directory, if any); writes
/// `finetuned.safetensors` and `finetune_history.parquet`.
///
/// Fine-tuning continues training: it runs at a constant learning rate equal to the training
/// schedule's rate in its last epoch (`train.lr` for `constant`, lower for `step` and `iwae`),
/// never restarting the schedule at full rate.
#[allow(clippy::too_many_arguments)]
pub(super) fn finetune(
    ctx: &Context,
    p: &Params,
    vae: &Vae,
    prior: &Prior,
    config: &ModelConfig,
    train: &Dataset,
    validation: &Dataset,
    dynamic: bool,
) -> Result<FinetuneSummary, StageError> {
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
    Ok(FinetuneSummary {
        epochs_run: outcome.history.len(),
        best_epoch: outcome.best_epoch,
        final_train_bound: last.map(|h| h.train_bound),
        final_validation_bound: last.map(|h| h.validation_bound),
        steps: outcome.steps,
        seconds: last.map_or(0.0, |h| h.seconds),
        lr: settings.lr,
        resumed: outcome.resumed,
    })
}

/// The fine-tuning loop's settings: the training section's, for `epochs` epochs, at the constant
/// learning rate the training schedule had in its last epoch (`train.epochs`).
pub(super) fn finetune_settings(
    t: &TrainSection,
    seed: u64,
    dynamic: bool,
    epochs: usize,
) -> FitSettings {
    let trained = FitSettings::from_train(t, seed, dynamic, t.epochs, "train");
    FitSettings {
        schedule: Schedule::Constant,
        lr: trained.lr_at(t.epochs.saturating_sub(1)),
        ..FitSettings::from_train(t, seed, dynamic, epochs, "finetune")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
