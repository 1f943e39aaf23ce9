//! What a training step optimises and updates: the [`Objective`] (ELBO, IWAE and the IWAE
//! variants of Rainforth et al. 2018 with k ≥ 1 samples, and the encoder's gradient estimator)
//! and the [`Trainable`] parameter groups. Plain data below both gradient paths (`objective.rs`,
//! the dfdx tape, and `fast/`), which import it; how each kind weighs its samples, and
//! `Objective::values_from_log_weights`, are in `weights.rs` (which imports this module, not
//! the other way round).

use std::num::NonZeroUsize;

use crate::config::Group;
use crate::error::{NnError, Result};
use crate::prior::Prior;
use crate::real::Real;

/// Which bound is maximised. With `k` samples per group and `m` groups, every kind draws
/// [`ObjectiveKind::samples`]`(k)` samples per example (`m·k` for the grouped kinds).
///
/// The variants of Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh (2018), "Tighter
/// variational bounds are not necessarily better":
/// * MIWAE(M, K) = (1/M) Σ_m L_K(group m), trained end to end;
/// * CIWAE(β) = β·ELBO + (1 − β)·L_k over the same k samples;
/// * PIWAE(M, K): the decoder (and prior) ascend L_{MK} over all samples, the encoder ascends
///   MIWAE(M, K); the value reported is L_{MK}.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectiveKind {
    /// The (k-sample) evidence lower bound, mean_i log w_i.
    Elbo,
    /// The importance-weighted bound L̂_k (Burda et al. 2016).
    Iwae,
    /// The mean over `m` groups of the k-sample IWAE bound.
    Miwae {
        /// Number of groups M.
        m: NonZeroUsize,
    },
    /// β·ELBO + (1 − β)·L_k.
    Ciwae {
        /// The ELBO's share β ∈ [0, 1].
        beta: Beta,
    },
    /// Decoder on L_{mk}, encoder on MIWAE(m, k).
    Piwae {
        /// Number of groups M.
        m: NonZeroUsize,
    },
}

impl ObjectiveKind {
    /// Samples drawn per example for `k` samples per group: `m·k` for MIWAE and PIWAE, else `k`.
    /// `None` if the product overflows.
    pub fn samples(&self, k: usize) -> Option<usize> {
        match self {
            ObjectiveKind::Miwae { m } | ObjectiveKind::Piwae { m } => m.get().checked_mul(k),
            _ => Some(k),
        }
    }

    /// The number of groups M (1 for the ungrouped kinds).
    pub fn groups(&self) -> usize {
        match self {
            ObjectiveKind::Miwae { m } | ObjectiveKind::Piwae { m } => m.get(),
            _ => 1,
        }
    }

    /// Whether the decoder and the encoder weigh the samples differently (PIWAE), so that the
    /// gradient with respect to z must be taken under the encoder's weights separately.
    pub fn splits_weights(&self) -> bool {
        matches!(self, ObjectiveKind::Piwae { .. })
    }
}

/// CIWAE's mixing weight β, a finite value in [0, 1] by construction ([`Beta::new`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Beta(f64);

impl Beta {
    /// β, or an error if it is not a finite value in [0, 1].
    pub fn new(beta: f64) -> Result<Beta> {
        if beta.is_finite() && (0.0..=1.0).contains(&beta) {
            Ok(Beta(beta))
        } else {
            Err(NnError::InvalidConfig(format!(
                "CIWAE's beta must lie in [0, 1], found {beta}"
            )))
        }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Eq for Beta {}

impl std::hash::Hash for Beta {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// Gradient estimator for the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Estimator {
    /// Plain reparameterisation gradient of the objective.
    Reparam,
    /// Doubly reparameterised gradient (Tucker et al. 2019); sticking-the-landing for the ELBO.
    Dreg,
}

/// A training objective. The number of samples `k` is at least one by construction
/// ([`Objective::new`] checks it where it enters); the combination with a prior is checked by
/// [`Objective::validate`] when a trainer is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Objective {
    /// ELBO or IWAE.
    pub kind: ObjectiveKind,
    /// Number of importance samples per example (per group for MIWAE and PIWAE; see
    /// [`Objective::samples`]).
    pub k: NonZeroUsize,
    /// Encoder gradient estimator.
    pub estimator: Estimator,
    /// Use KL(q ‖ N(0, I)) in closed form (ELBO, k = 1, standard-normal prior, reparam only).
    pub analytic_kl: bool,
}

impl Objective {
    /// An objective with `k` samples per example (per group); errors if `k` is 0 or the total
    /// number of samples overflows.
    pub fn new(
        kind: ObjectiveKind,
        k: usize,
        estimator: Estimator,
        analytic_kl: bool,
    ) -> Result<Self> {
        let k = NonZeroUsize::new(k).ok_or_else(|| {
            NnError::InvalidConfig(format!(
                "objective {kind:?} with k = 0: k must be at least 1"
            ))
        })?;
        if kind.samples(k.get()).is_none() {
            return Err(NnError::InvalidConfig(format!(
                "objective {kind:?} with k = {k}: too many samples per example"
            )));
        }
        Ok(Objective {
            kind,
            k,
            estimator,
            analytic_kl,
        })
    }

    /// The one-sample ELBO with the reparameterisation gradient.
    pub fn elbo() -> Self {
        Objective {
            kind: ObjectiveKind::Elbo,
            k: NonZeroUsize::MIN,
            estimator: Estimator::Reparam,
            analytic_kl: false,
        }
    }

    /// The k-sample IWAE bound with the reparameterisation gradient; errors if `k` is 0.
    pub fn iwae(k: usize) -> Result<Self> {
        Objective::new(ObjectiveKind::Iwae, k, Estimator::Reparam, false)
    }

    /// The number of samples drawn per example: `k`, or `m·k` for MIWAE and PIWAE (checked
    /// not to overflow where the objective was built).
    pub fn samples(&self) -> usize {
        self.kind.samples(self.k.get()).unwrap_or(usize::MAX)
    }

    /// Checks the combination against the prior it will be used with.
    pub fn validate<E: Real>(&self, prior: &Prior<E>) -> Result<()> {
        let bad = |m: &str| Err(NnError::InvalidConfig(format!("objective {self:?}: {m}")));
        if self.kind.samples(self.k.get()).is_none() {
            return bad("m·k overflows");
        }
        if self.analytic_kl {
            if self.kind != ObjectiveKind::Elbo {
                return bad("analytic_kl is only defined for the ELBO");
            }
            if self.k != NonZeroUsize::MIN {
                return bad("analytic_kl requires k = 1");
            }
            if !matches!(prior, Prior::StandardNormal) {
                return bad("analytic_kl requires the standard-normal prior");
            }
            if self.estimator != Estimator::Reparam {
                return bad("analytic_kl has no score term to remove; use estimator = Reparam");
            }
        }
        Ok(())
    }
}

/// Which parameter groups receive gradients (and are updated by the trainer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Trainable {
    /// Encoder parameters (`encoder.*`).
    pub encoder: bool,
    /// Decoder parameters (`decoder.*`).
    pub decoder: bool,
    /// Prior parameters (`prior.*`).
    pub prior: bool,
}

impl Trainable {
    /// Encoder and decoder (normal training, or fine-tuning under a fixed prior).
    pub const MODEL: Trainable = Trainable {
        encoder: true,
        decoder: true,
        prior: false,
    };
    /// Only the prior (prior refit with the model fixed).
    pub const PRIOR: Trainable = Trainable {
        encoder: false,
        decoder: false,
        prior: true,
    };
    /// Everything.
    pub const ALL: Trainable = Trainable {
        encoder: true,
        decoder: true,
        prior: true,
    };

    pub(crate) fn includes(&self, g: Group) -> bool {
        match g {
            Group::Encoder => self.encoder,
            Group::Decoder => self.decoder,
            Group::Prior => self.prior,
        }
    }
}
