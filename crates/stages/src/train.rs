//! The train stage: fits a VAE under the spec's objective (ELBO or the importance-weighted bound
//! L_k of Burda et al. 2016) and gradient estimator (reparameterization or DReG, Tucker et al.
//! 2019) with Adam, and writes `model.safetensors`, `history.parquet` and `train.json`.
//!
//! The loop ([`fit`], in `crate::fit`) is shared with the prior stage; the spec's values become
//! the numerics' types in `crate::convert`.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use serde::Deserialize;
use serde_json::Value;
use vaepipe_engine::{Context, Stage, StageError, pick};
use vaepipe_nn::{Prior, Trainable, Trainer, Vae};
use vaepipe_spec::{Binarize, ModelSection, TrainSection};

use crate::artifacts::{
    ModelConfig, TrainOutcome, TrainSummary, TrainedWith, read_split, save_model, write_sorted,
};
use crate::convert::{adam_of, init_of, objective_label, objective_of};
use crate::fit::{FitSettings, fit, write_history};
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
        let objective = objective_of(&p.train)?;
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
            objective_label(&objective),
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
        let summary = TrainSummary {
            trained_with: TrainedWith {
                objective: p.train.objective,
                k: p.train.k,
                estimator: p.train.estimator,
                m: p.train.m,
                beta: p.train.beta,
            },
            analytic_kl: p.train.analytic_kl,
            outcome: TrainOutcome {
                epochs_run: outcome.history.len(),
                best_epoch: (outcome.best_epoch > 0).then_some(outcome.best_epoch),
                best_validation_bound: outcome
                    .best_validation
                    .is_finite()
                    .then_some(outcome.best_validation),
                final_train_bound: last.map(|h| h.train_bound),
                final_validation_bound: last.map(|h| h.validation_bound),
                stopped_early: outcome.stopped_early,
                steps: outcome.steps,
                seconds: last.map_or(0.0, |h| h.seconds),
                parameters: config.vae_config().parameter_count(),
                resumed: outcome.resumed,
                stopped_by: outcome.stopped_by.as_str().to_string(),
                time_limit: p.train.time_limit,
                elapsed_seconds: outcome.elapsed,
            },
        };
        write_sorted(&ctx.out.join("train.json"), &summary)?;
        Ok(())
    }
}

/// The binarization mode recorded by the data stage.
pub(crate) fn data_binarization(data_dir: &Path) -> anyhow::Result<Binarize> {
    Ok(crate::artifacts::DataSummary::read(data_dir)?.binarize)
}
