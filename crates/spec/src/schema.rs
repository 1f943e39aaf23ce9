//! The pipeline schema: the types of one fully resolved configuration per run, with every
//! default explicit. Serialization (serde) is the canonical form the engine hashes and stores;
//! `resolve.rs` reads these types from a [`Node`](crate::node::Node) tree and checks every value.
//!
//! The reference of every key, type and default is docs/spec.md; keep the two in step.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::string_enum;

/// A path to an input file. Serialized as `{"$file": "<absolute path>"}`: the engine replaces
/// such objects by the file's content hash when it computes cache keys, so moving a data set
/// does not invalidate results and changing its content does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    #[serde(rename = "$file")]
    pub path: PathBuf,
}

/// One fully resolved run: what every stage of one sweep point reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub pipeline: PipelineSection,
    pub data: DataSection,
    pub model: ModelSection,
    pub train: TrainSection,
    pub prior: PriorSection,
    pub eval: EvalSection,
    pub report: ReportSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    pub name: String,
    pub seed: u64,
    pub description: String,
}

string_enum!(
    /// Input file format of `[data]`.
    DataFormat { Idx = "idx", Csv = "csv", Parquet = "parquet" }
);
string_enum!(
    /// Feature scaling: `max` divides by the largest training value, mapping features to [0, 1].
    Scale { None = "none", Max = "max" }
);
string_enum!(
    /// Binarization of features in [0, 1].
    Binarize {
        None = "none",
        /// x > threshold.
        Threshold = "threshold",
        /// One seeded Bernoulli draw, fixed for the whole run.
        Static = "static",
        /// A fresh Bernoulli draw every time a training batch is drawn (Burda et al. 2016).
        Dynamic = "dynamic"
    }
);

/// Where one split of the data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DataSource {
    /// IDX image file and optional label file (raw or gzip).
    Idx {
        images: FileRef,
        labels: Option<FileRef>,
    },
    /// One CSV or Parquet table.
    Table { path: FileRef },
    /// `data.test` only: rows held out of the training source (seeded, stratified by label
    /// when the data have labels and `data.stratify` is on).
    Split { held_out: Holdout },
}

/// Rows held out of the training split for validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Holdout {
    Rows(usize),
    Fraction(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub format: DataFormat,
    pub train: DataSource,
    pub test: DataSource,
    pub label_column: Option<String>,
    pub scale: Scale,
    pub binarize: Binarize,
    pub threshold: f64,
    pub validation: Holdout,
    /// Use only the first N training rows (before the validation split); 0 = all.
    pub train_rows: usize,
    /// Use only the first N test rows; 0 = all.
    pub test_rows: usize,
    /// A held-out test split (`test = { fraction | rows }`) keeps the label proportions.
    /// Serialized only when off, so specs without it keep their cache keys.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub stratify: bool,
    /// Image shape `[h, w]` or `[c, h, w]`; `[]` = not images; absent = inferred (IDX
    /// dimensions, or a square feature count). Serialized only when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

string_enum!(Activation { Tanh = "tanh", Relu = "relu", Softplus = "softplus" });
string_enum!(
    /// Decoder likelihood: Bernoulli with logits (binary data) or Gaussian (continuous data).
    Likelihood { Bernoulli = "bernoulli", Gaussian = "gaussian" }
);
string_enum!(
    /// Parameterization of the encoder's standard deviation: σ = exp(linear) (Burda et al.) or softplus.
    PosteriorStd { Exp = "exp", Softplus = "softplus" }
);

string_enum!(
    /// Initialisation of the linear layers: PyTorch's `nn.Linear` default (weights and biases
    /// U(±1/√fan_in)) or Glorot-uniform weights with zero biases.
    InitScheme { Pytorch = "pytorch", Glorot = "glorot" }
);
string_enum!(
    /// Initial decoder output bias: as the init scheme draws it, or the logit of the mean
    /// training value per dimension (Bernoulli likelihoods; Burda et al.'s code).
    OutputBias { Init = "init", Data = "data" }
);

/// The settings of models trained before `init`, `output_bias` and `std_head_scale` existed
/// (read from older checkpoint metadata).
fn legacy_init() -> InitScheme {
    InitScheme::Glorot
}
fn legacy_output_bias() -> OutputBias {
    OutputBias::Init
}
fn legacy_std_head_scale() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub latent: usize,
    pub encoder: Vec<usize>,
    pub decoder: Vec<usize>,
    pub activation: Activation,
    pub likelihood: Likelihood,
    /// Gaussian likelihood: the observation standard deviation (initial value if learned).
    pub observation_std: f64,
    pub learn_std: bool,
    pub posterior_std: PosteriorStd,
    #[serde(default = "legacy_init")]
    pub init: InitScheme,
    #[serde(default = "legacy_output_bias")]
    pub output_bias: OutputBias,
    /// Factor on the initial weights and bias of the encoder's σ head (0: every posterior
    /// starts at σ = 1 for `posterior_std = "exp"`).
    #[serde(default = "legacy_std_head_scale")]
    pub std_head_scale: f64,
    /// Stochastic layers above the first, bottom up (`[[model.layers]]` after the first entry;
    /// empty for one stochastic layer, and then not serialized, so one-layer specs keep their
    /// canonical form and cache keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upper: Vec<UpperLayerSection>,
}

/// A stochastic layer above the first (`[[model.layers]]`, Burda et al. 2016, §5): the encoder
/// q(z_l|z_{l-1}) and the decoder p(z_{l-1}|z_l), diagonal Gaussians with σ = exp(linear).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpperLayerSection {
    /// Dimension of z_l.
    pub latent: usize,
    /// Hidden widths of q(z_l|z_{l-1}), from z_{l-1} up.
    pub encoder: Vec<usize>,
    /// Hidden widths of p(z_{l-1}|z_l), from z_l down.
    pub decoder: Vec<usize>,
}

impl ModelSection {
    /// The number of stochastic layers (1 + `upper.len()`).
    pub fn stochastic_layers(&self) -> usize {
        1 + self.upper.len()
    }

    /// The dimensions of the stochastic layers, bottom up.
    pub fn latent_dims(&self) -> Vec<usize> {
        std::iter::once(self.latent)
            .chain(self.upper.iter().map(|l| l.latent))
            .collect()
    }
}

string_enum!(
    /// Training objective: the ELBO (k samples averaged), the importance-weighted bound L_k
    /// (Burda et al. 2016), or a variant of Rainforth et al. (2018): `miwae` (the mean over
    /// `train.m` groups of L_k), `ciwae` (β·ELBO + (1 − β)·L_k with β = `train.beta`), `piwae`
    /// (decoder on L_{mk}, encoder on MIWAE(m, k)).
    Objective {
        Elbo = "elbo",
        Iwae = "iwae",
        Miwae = "miwae",
        Ciwae = "ciwae",
        Piwae = "piwae"
    }
);
string_enum!(
    /// Gradient estimator: plain reparameterization, or doubly reparameterized (Tucker et al. 2019).
    Estimator { Reparam = "reparam", Dreg = "dreg" }
);
string_enum!(
    /// Learning-rate schedule: constant; `step` multiplies by `step_gamma` every `step_epochs`;
    /// `iwae` is Burda et al.'s: stage i lasts 3^i epochs at lr·10^(−i/7).
    Schedule { Constant = "constant", Step = "step", Iwae = "iwae" }
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub objective: Objective,
    pub k: usize,
    pub estimator: Estimator,
    pub analytic_kl: bool,
    pub batch_size: usize,
    pub epochs: usize,
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub schedule: Schedule,
    pub step_epochs: usize,
    pub step_gamma: f64,
    /// Stop when the validation bound has not improved for this many epochs; 0 = never.
    pub patience: usize,
    /// Wall-clock budget of the training loop in seconds: training stops at the end of the
    /// epoch in which it runs out. `None` = no budget.
    #[serde(default)]
    pub time_limit: Option<f64>,
    /// Groups M of MIWAE and PIWAE (`k` samples each); 1 for the other objectives. Left out of
    /// the canonical form when 1, so that specs without it keep their cache keys.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub m: usize,
    /// CIWAE's β ∈ [0, 1] (the ELBO's share); `None` for the other objectives (and then left
    /// out of the canonical form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

string_enum!(
    /// Empirical-Bayes prior refit.
    PriorMethod {
        StandardNormal = "standard-normal",
        AggregatePosterior = "aggregate-posterior",
        Mog = "mog",
        Vamp = "vamp"
    }
);
string_enum!(
    /// How a mixture-of-Gaussians prior is fitted: EM on samples of the aggregate posterior
    /// (maximizes E_q_agg log p, the ELBO's prior term) or gradient ascent on the average L_k.
    MogFit { Em = "em", Gradient = "gradient" }
);
string_enum!(
    /// Initialization of VampPrior pseudo-inputs.
    VampInit { Data = "data", Random = "random" }
);
string_enum!(
    /// What to do after the refit: nothing, or fine-tune encoder and decoder under the new prior.
    Then { None = "none", Finetune = "finetune" }
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorSection {
    pub method: PriorMethod,
    /// Mixture components (mog) or pseudo-inputs (vamp).
    pub components: usize,
    /// Aggregate posterior: use a seeded subset of M training posteriors; 0 = all.
    pub subset: usize,
    pub fit: MogFit,
    /// EM iterations or gradient steps.
    pub steps: usize,
    pub lr: f64,
    /// Samples drawn from the aggregate posterior for EM.
    pub samples: usize,
    pub init: VampInit,
    pub then: Then,
    pub finetune_epochs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Importance samples for the test NLL (Burda et al.: 5000).
    pub k: usize,
    /// Test images evaluated; 0 = all.
    pub images: usize,
    /// The k values of the L_k curve (sorted, distinct).
    pub curve_k: Vec<usize>,
    pub curve_images: usize,
    pub active_threshold: f64,
    /// Prior samples drawn for the report.
    pub samples: usize,
    pub reconstructions: usize,
    /// Seed of the single binarization of the test set (fixed across runs, as in Burda et al.).
    pub binarization_seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    pub title: String,
}

/// The top-level keys a spec may have.
pub const TOP_LEVEL: &[&str] = &[
    "pipeline", "data", "model", "train", "prior", "eval", "report", "sweep",
];
