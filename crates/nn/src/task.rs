//! What a training step optimises and updates: the [`Objective`] (ELBO or IWAE with k ≥ 1
//! samples, and the encoder's gradient estimator) and the [`Trainable`] parameter groups. Plain
//! data below both gradient paths (`objective.rs`, the dfdx tape, and `fast.rs`), which import it.

use std::num::NonZeroUsize;

use crate::config::Group;
use crate::error::{NnError, Result};
use crate::prior::Prior;
use crate::real::Real;

/// Which bound is maximised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectiveKind {
    /// The (k-sample) evidence lower bound, mean_i log w_i.
    Elbo,
    /// The importance-weighted bound L̂_k (Burda et al. 2016).
    Iwae,
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
    /// Number of importance samples per example.
    pub k: NonZeroUsize,
    /// Encoder gradient estimator.
    pub estimator: Estimator,
    /// Use KL(q ‖ N(0, I)) in closed form (ELBO, k = 1, standard-normal prior, reparam only).
    pub analytic_kl: bool,
}

impl Objective {
    /// An objective with `k` samples per example; errors if `k` is 0.
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

    /// The number of samples per example, `k`, as a count.
    pub fn samples(&self) -> usize {
        self.k.get()
    }

    /// Checks the combination against the prior it will be used with.
    pub fn validate<E: Real>(&self, prior: &Prior<E>) -> Result<()> {
        let bad = |m: &str| Err(NnError::InvalidConfig(format!("objective {self:?}: {m}")));
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
