//! The eval stage's JSON artifacts: `variants.json` ([`EvaluatedVariant`]) and each variant's
//! `metrics.json` ([`Metrics`]); its tables are documented in docs/artifacts.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vaepipe_spec::Binarize;

use super::train::TrainedWith;

/// An entry of the eval stage's `variants.json` (written in field order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatedVariant {
    pub name: String,
    /// For people (readers take `name` when it is absent or empty).
    #[serde(default)]
    pub label: String,
    /// The variant's subdirectory: a plain name, equal to `name`. Readers also accept `dir` or
    /// `path`, and take `name` when it is absent or empty.
    #[serde(default, alias = "dir", alias = "path")]
    pub directory: String,
}

/// `metrics.json` of one evaluated variant: flat keys, written with sorted keys
/// ([`super::write_sorted`]). All values in nats; non-finite values are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The estimates (what the report reads).
    #[serde(flatten)]
    pub estimates: Estimates,
    /// Images asked for (more than `images` only for a large mixture prior).
    pub images_requested: usize,
    /// Every variant after the first: the paired difference to the first one.
    #[serde(flatten)]
    pub paired: Option<Paired>,
    /// `objective`, `k`, `estimator` from `train.json`.
    #[serde(flatten)]
    pub trained_with: TrainedWith,
    /// The prior's method: `standard-normal`, `aggregate-posterior`, `mog`, `vamp`.
    pub prior: String,
    /// Mixture components of the prior (0 for N(0, I)).
    pub prior_components: usize,
    pub variant: String,
    pub variant_label: String,
    /// The sweep point's label and id.
    pub point: String,
    pub point_id: String,
    pub active_threshold: f64,
    pub latent_dim: usize,
    pub curve_images: usize,
    pub binarize: Binarize,
    pub binarization_seed: u64,
    /// Seconds of the NLL alone, and its images per second.
    pub nll_seconds: f64,
    pub images_per_s: f64,
    pub seconds: f64,
    /// Every swept key of the point with its value (`"train.k": 5`).
    #[serde(flatten)]
    pub swept: BTreeMap<String, Value>,
}

/// The estimates of `metrics.json`: the test NLL with its standard error, the ELBO
/// decomposition, active units, and what qualifies the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimates {
    /// −mean L̂_k over the images.
    #[serde(with = "super::float")]
    pub test_nll: f64,
    /// Standard error across images (`null` for one image).
    #[serde(with = "super::float")]
    pub test_nll_stderr: f64,
    /// k of the NLL.
    pub eval_k: usize,
    /// Means over the images (`elbo = recon − kl`).
    #[serde(with = "super::float")]
    pub elbo: f64,
    #[serde(with = "super::float")]
    pub kl: f64,
    #[serde(with = "super::float")]
    pub recon: f64,
    /// Active units of the first stochastic layer (z1).
    pub active_units: usize,
    /// Active units of each stochastic layer, bottom up (`[active_units]` for one layer; empty
    /// in files written before several layers existed, and then not written back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_units_per_layer: Vec<usize>,
    /// The dimensions of the stochastic layers, bottom up (empty in older files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latent_dims: Vec<usize>,
    /// Images of the NLL.
    pub images: usize,
    /// What qualifies the numbers (several joined with "; "); absent when nothing does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The paired comparison of a variant with the first one: same images, same noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// The first variant's name.
    pub paired_with: String,
    /// Images both NLLs cover.
    pub paired_images: usize,
    /// Mean over the common images of this NLL minus the first variant's.
    #[serde(with = "super::float")]
    pub paired_nll_difference: f64,
    /// Its standard error (`null` for one common image).
    #[serde(with = "super::float")]
    pub paired_nll_difference_stderr: f64,
}
