//! The prior stage's JSON artifacts: `variants.json` ([`Variant`], the models the eval stage
//! evaluates) and `refit.json` ([`RefitSummary`]); its prior checkpoint is in
//! [`super::checkpoint`].

use serde::{Deserialize, Serialize};

/// One model to evaluate: which stage's directory holds the model file, and the prior file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Directory name and identifier: `standard`, `refit`, `finetuned`.
    pub name: String,
    /// For people: `N(0, I)`, `aggregate posterior (M=9600)`, `mog K=10 + finetune`, …
    pub label: String,
    /// `train` or `prior`.
    pub model_stage: String,
    pub model_file: String,
    /// In the prior stage's directory; `None` for the standard normal.
    pub prior_file: Option<String>,
}

/// `refit.json` of the prior stage (written with sorted keys, [`super::write_sorted`]); the
/// conventions are in docs/artifacts.md. Non-finite estimates are `null` (NaN here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefitSummary {
    /// The spec's method: `standard-normal`, `aggregate-posterior`, `mog`, `vamp`.
    pub method: String,
    /// `em`, `gradient`, or `None` (no fit).
    #[serde(default)]
    pub fit: Option<String>,
    /// The refit variant's label.
    #[serde(default)]
    pub label: Option<String>,
    pub components: usize,
    pub subset: usize,
    pub seed: u64,
    /// `train.k` of the measurements.
    pub k: usize,
    /// What the refit maximizes (a sentence).
    pub objective: String,
    /// The objective at the starting point and after the refit (`None` for `standard-normal`).
    pub objective_before: Option<f64>,
    pub objective_after: Option<f64>,
    /// `refit`, or `initial` when the starting point was kept.
    #[serde(default)]
    pub kept: Option<String>,
    pub train: RefitSide,
    pub test: RefitSide,
    #[serde(with = "super::float")]
    pub kl_qagg_standard: f64,
    #[serde(default = "nan", with = "super::float")]
    pub kl_qagg_standard_stderr: f64,
    #[serde(with = "super::float")]
    pub kl_qagg_refit: f64,
    #[serde(default = "nan", with = "super::float")]
    pub kl_qagg_refit_stderr: f64,
    /// Draws z ~ q_agg of the KL estimates, and the rows of q_agg.
    #[serde(default)]
    pub kl_samples: usize,
    #[serde(default)]
    pub kl_rows: usize,
    #[serde(default)]
    pub training_rows: usize,
    pub active_units: usize,
    /// The two latent dimensions of highest aggregate-posterior variance.
    pub plot_dims: [usize; 2],
    #[serde(default)]
    pub encode_seconds: f64,
    #[serde(default)]
    pub refit_seconds: f64,
    /// With `then = "finetune"`: the fine-tuning's summary.
    #[serde(default)]
    pub finetune: Option<FinetuneSummary>,
    /// The whole stage.
    pub seconds: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// `train` / `test` in `refit.json`: the bounds under both priors on the same rows and noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefitSide {
    #[serde(with = "super::float")]
    pub elbo_standard: f64,
    #[serde(with = "super::float")]
    pub elbo_refit: f64,
    #[serde(with = "super::float")]
    pub lk_standard: f64,
    #[serde(with = "super::float")]
    pub lk_refit: f64,
    /// Refit − standard, with paired standard errors.
    #[serde(default = "nan", with = "super::float")]
    pub elbo_gain: f64,
    #[serde(default = "nan", with = "super::float")]
    pub elbo_gain_stderr: f64,
    #[serde(default = "nan", with = "super::float")]
    pub lk_gain: f64,
    #[serde(default = "nan", with = "super::float")]
    pub lk_gain_stderr: f64,
    pub images: usize,
}

/// `finetune` in `refit.json`: fine-tuning under the refit prior at a constant learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSummary {
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub final_train_bound: Option<f64>,
    pub final_validation_bound: Option<f64>,
    pub steps: u64,
    pub seconds: f64,
    pub lr: f64,
    #[serde(default)]
    pub resumed: u32,
}
