//! The train stage's `train.json` ([`TrainSummary`]); its checkpoint is in
//! [`super::checkpoint`], its `history.parquet` is written by the training loop.

use serde::{Deserialize, Serialize};
use vaepipe_spec::{Estimator, Objective};

/// `train.json` of the train stage (written with sorted keys, [`super::write_sorted`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// `objective`, `k`, `estimator`: what the eval stage copies into `metrics.json`.
    #[serde(flatten)]
    pub trained_with: TrainedWith,
    pub analytic_kl: bool,
    /// How training went (what the report reads).
    #[serde(flatten)]
    pub outcome: TrainOutcome,
}

/// How training went: epochs, bounds, steps, time and why it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub epochs_run: usize,
    /// The epoch of the best validation bound; `None` when no epoch ran.
    pub best_epoch: Option<usize>,
    /// `None` without a validation split (no finite validation bound).
    pub best_validation_bound: Option<f64>,
    /// The last epoch's bounds (`None` when no epoch ran); the validation bound is NaN
    /// (`null`) without a validation split.
    pub final_train_bound: Option<f64>,
    pub final_validation_bound: Option<f64>,
    pub stopped_early: bool,
    pub steps: u64,
    /// Cumulative training seconds at the last epoch.
    pub seconds: f64,
    pub parameters: usize,
    /// Times the run was resumed from a checkpoint.
    #[serde(default)]
    pub resumed: u32,
    /// Why training ended: `epochs`, `patience` or `time_limit`.
    #[serde(default = "epochs")]
    pub stopped_by: String,
    /// `train.time_limit` in seconds.
    #[serde(default)]
    pub time_limit: Option<f64>,
    /// Wall-clock seconds of the training loop over every attempt.
    #[serde(default)]
    pub elapsed_seconds: f64,
}

/// The training objective in `train.json` and `metrics.json`: the part of `train.json` the eval
/// stage reads (a stand-in train stage may write only these keys).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainedWith {
    pub objective: Objective,
    pub k: usize,
    pub estimator: Estimator,
    /// `train.m`: the groups of MIWAE and PIWAE (absent when 1, as for the other objectives).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub m: usize,
    /// `train.beta`: CIWAE's β (absent for the other objectives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
}

impl TrainedWith {
    /// The readable name, e.g. "IWAE", "PIWAE(8,8)", "CIWAE(β=0.05)".
    pub fn label(&self) -> String {
        crate::convert::spec_objective_label(self.objective, self.m, self.k, self.beta)
    }
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

fn epochs() -> String {
    "epochs".into()
}
