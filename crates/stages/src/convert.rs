//! The one translation from the spec's plain data (`vaepipe-spec`) to the numerics' types
//! (`vaepipe-nn`): the objective, Adam's hyper-parameters and the initialisation. The stages
//! and `vaepipe bench` call it; nothing else names the enums of both crates.
//!
//! The spec has already checked every value (e.g. `train.k ≥ 1`); the nn types check their own
//! preconditions once more where they are built ([`vaepipe_nn::Objective::new`]), so a value
//! that bypassed the spec (a hand-edited parameter file) is an error, never a panic.

use std::num::NonZeroUsize;

use anyhow::{anyhow, bail};
use vaepipe_data::Dataset;
use vaepipe_nn::{
    AdamHyper, Beta, Estimator, Init, InitScheme, Objective, ObjectiveKind, OutputBias,
};
use vaepipe_spec::{ModelSection, TrainSection};

/// The bound a spec names, with its groups `m` (MIWAE, PIWAE; must be 1 otherwise) and its β
/// (CIWAE only, required there). Errors name the keys `train.m` and `train.beta`.
pub fn objective_kind(
    o: vaepipe_spec::Objective,
    m: usize,
    beta: Option<f64>,
) -> anyhow::Result<ObjectiveKind> {
    use vaepipe_spec::Objective as O;
    let groups =
        || NonZeroUsize::new(m).ok_or_else(|| anyhow!("train.m = 0: {o} needs at least one group"));
    if m != 1 && !matches!(o, O::Miwae | O::Piwae) {
        bail!("train.m = {m}, but objective = \"{o}\" has no groups");
    }
    if beta.is_some() && o != O::Ciwae {
        bail!("train.beta is CIWAE's mixing weight, but objective = \"{o}\"");
    }
    Ok(match o {
        O::Elbo => ObjectiveKind::Elbo,
        O::Iwae => ObjectiveKind::Iwae,
        O::Miwae => ObjectiveKind::Miwae { m: groups()? },
        O::Piwae => ObjectiveKind::Piwae { m: groups()? },
        O::Ciwae => {
            let b = beta.ok_or_else(|| anyhow!("objective = \"ciwae\" needs train.beta"))?;
            ObjectiveKind::Ciwae {
                beta: Beta::new(b).map_err(|e| anyhow!("train.beta: {e}"))?,
            }
        }
    })
}

/// A readable name of an objective, as the logs, the report and `vaepipe bench` print it:
/// "ELBO", "IWAE", "MIWAE(8,8)", "CIWAE(β=0.05)", "PIWAE(8,8)" (groups M, samples per group K:
/// Rainforth et al. 2018's notation).
pub fn objective_label(o: &Objective) -> String {
    let (m, beta) = match o.kind {
        ObjectiveKind::Miwae { m } | ObjectiveKind::Piwae { m } => (m.get(), None),
        ObjectiveKind::Ciwae { beta } => (1, Some(beta.get())),
        ObjectiveKind::Elbo | ObjectiveKind::Iwae => (1, None),
    };
    let kind = match o.kind {
        ObjectiveKind::Elbo => vaepipe_spec::Objective::Elbo,
        ObjectiveKind::Iwae => vaepipe_spec::Objective::Iwae,
        ObjectiveKind::Miwae { .. } => vaepipe_spec::Objective::Miwae,
        ObjectiveKind::Ciwae { .. } => vaepipe_spec::Objective::Ciwae,
        ObjectiveKind::Piwae { .. } => vaepipe_spec::Objective::Piwae,
    };
    spec_objective_label(kind, m, o.k.get(), beta)
}

/// [`objective_label`] from the spec's values `train.objective`, `m`, `k`, `beta`.
pub fn spec_objective_label(
    o: vaepipe_spec::Objective,
    m: usize,
    k: usize,
    beta: Option<f64>,
) -> String {
    use vaepipe_spec::Objective as O;
    match o {
        O::Elbo => "ELBO".into(),
        O::Iwae => "IWAE".into(),
        O::Miwae => format!("MIWAE({m},{k})"),
        O::Piwae => format!("PIWAE({m},{k})"),
        O::Ciwae => match beta {
            Some(b) => format!("CIWAE(β={b})"),
            None => "CIWAE".into(),
        },
    }
}

/// The gradient estimator a spec names.
pub fn estimator(e: vaepipe_spec::Estimator) -> Estimator {
    match e {
        vaepipe_spec::Estimator::Reparam => Estimator::Reparam,
        vaepipe_spec::Estimator::Dreg => Estimator::Dreg,
    }
}

/// The training objective from its spec values `[train] objective, m, beta, k, estimator,
/// analytic_kl` (errors if `k` or `m` is 0, or `m`/`beta` do not fit the objective).
pub fn objective(
    kind: vaepipe_spec::Objective,
    m: usize,
    beta: Option<f64>,
    k: usize,
    est: vaepipe_spec::Estimator,
    analytic_kl: bool,
) -> anyhow::Result<Objective> {
    Ok(Objective::new(
        objective_kind(kind, m, beta)?,
        k,
        estimator(est),
        analytic_kl,
    )?)
}

/// The objective of `[train]`.
pub fn objective_of(t: &TrainSection) -> anyhow::Result<Objective> {
    objective(t.objective, t.m, t.beta, t.k, t.estimator, t.analytic_kl)
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
