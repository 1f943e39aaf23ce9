//! The one translation from the spec's plain data (`vaepipe-spec`) to the numerics' types
//! (`vaepipe-nn`): the objective, Adam's hyper-parameters and the initialisation. The stages
//! and `vaepipe bench` call it; nothing else names the enums of both crates.
//!
//! The spec has already checked every value (e.g. `train.k ≥ 1`); the nn types check their own
//! preconditions once more where they are built ([`vaepipe_nn::Objective::new`]), so a value
//! that bypassed the spec (a hand-edited parameter file) is an error, never a panic.

use anyhow::anyhow;
use vaepipe_data::Dataset;
use vaepipe_nn::{AdamHyper, Estimator, Init, InitScheme, Objective, ObjectiveKind, OutputBias};
use vaepipe_spec::{ModelSection, TrainSection};

/// The bound a spec names.
pub fn objective_kind(o: vaepipe_spec::Objective) -> ObjectiveKind {
    match o {
        vaepipe_spec::Objective::Elbo => ObjectiveKind::Elbo,
        vaepipe_spec::Objective::Iwae => ObjectiveKind::Iwae,
    }
}

/// The gradient estimator a spec names.
pub fn estimator(e: vaepipe_spec::Estimator) -> Estimator {
    match e {
        vaepipe_spec::Estimator::Reparam => Estimator::Reparam,
        vaepipe_spec::Estimator::Dreg => Estimator::Dreg,
    }
}

/// The training objective from its spec values (errors if `k` is 0).
pub fn objective(
    kind: vaepipe_spec::Objective,
    k: usize,
    est: vaepipe_spec::Estimator,
    analytic_kl: bool,
) -> anyhow::Result<Objective> {
    Ok(Objective::new(
        objective_kind(kind),
        k,
        estimator(est),
        analytic_kl,
    )?)
}

/// The objective of `[train]`.
pub fn objective_of(t: &TrainSection) -> anyhow::Result<Objective> {
    objective(t.objective, t.k, t.estimator, t.analytic_kl)
}

/// Adam's hyper-parameters of `[train]`.
pub fn adam_of(t: &TrainSection) -> AdamHyper {
    AdamHyper {
        lr: t.lr,
        beta1: t.betas[0],
        beta2: t.betas[1],
        eps: t.eps,
    }
}

/// The initialisation of `[model]`: its scheme and σ-head scale, and for `output_bias = "data"`
/// the logits of the training split's per-feature means (clipped to [10⁻³, 1 − 10⁻³]; under
/// dynamic binarization the split holds intensities, whose mean is the binarized data's).
pub fn init_of(m: &ModelSection, train: &Dataset) -> anyhow::Result<Init> {
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
pub fn feature_means(d: &Dataset) -> Vec<f64> {
    let mut sum = vec![0f64; d.features];
    for row in d.x.chunks_exact(d.features.max(1)) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    sum.iter().map(|s| s / d.rows as f64).collect()
}
