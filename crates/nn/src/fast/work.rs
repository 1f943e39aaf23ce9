//! What the lanes share and own: the read-only context of a step ([`Ctx`]), each lane's
//! reusable buffers ([`LaneWork`]) and the constants that fix how a batch is split.

use super::mixture::MixWork;
use super::pack::{Net, Offsets, Packed};
use crate::task::{Objective, Trainable};

/// Independent lanes the batch is split into (fixed: results do not depend on the threads).
pub(super) const LANES: usize = 2;
/// Target sample rows per chunk (whole examples; at least one example per chunk).
pub(super) const CHUNK_ROWS: usize = 128;

/// Read-only inputs of the lanes.
pub(super) struct Ctx<'a> {
    pub(super) net: &'a Net,
    pub(super) off: &'a Offsets,
    pub(super) pk: &'a Packed,
    pub(super) obj: &'a Objective,
    pub(super) tr: Trainable,
    pub(super) x: &'a [f32],
    pub(super) eps: &'a [f32],
    /// Batch size (the pseudo-inputs' count K for a VampPrior's encoder pass).
    pub(super) n: usize,
    /// Whether the lanes accumulate the mixture's gradient (`LaneWork::grad_prior`): a trained
    /// mixture, or a VampPrior whose encoder or pseudo-inputs are trained.
    pub(super) prior_grad: bool,
    /// Whether the encoder's backward pass runs into its input (`LaneWork::gx`): a VampPrior's
    /// trained pseudo-inputs.
    pub(super) input_grad: bool,
}

/// Buffers of one lane, reused across steps.
#[derive(Clone, Debug, Default)]
pub(super) struct LaneWork {
    /// The lane's gradient (ascent direction), `Offsets::len` values.
    pub(super) grad: Vec<f32>,
    /// Learned decoder log-std gradient, accumulated in `f64`.
    pub(super) grad_log_std: Vec<f64>,
    /// Mixture prior: ∂ log p(z)/∂z per sample (rows × d), the chunk's scratch (with the
    /// responsibilities), and the prior's gradient (logits, means, log-stds) accumulated in
    /// `f64`.
    pub(super) gz: Vec<f64>,
    pub(super) mix: MixWork,
    pub(super) grad_prior: Vec<f64>,
    // Encoder, one row per example of the lane.
    pub(super) xin: Vec<f32>,
    pub(super) enc_h: Vec<Vec<f32>>,
    pub(super) heads: Vec<f32>,
    pub(super) mu: Vec<f32>,
    pub(super) sigma: Vec<f32>,
    pub(super) log_std: Vec<f32>,
    pub(super) sum_log_std: Vec<f64>,
    pub(super) g_mu: Vec<f64>,
    pub(super) g_ls: Vec<f64>,
    pub(super) genc: Vec<f32>,
    pub(super) eb0: Vec<f32>,
    pub(super) eb1: Vec<f32>,
    // Decoder, one row per sample of a chunk.
    pub(super) z: Vec<f32>,
    pub(super) zs: Vec<f32>,
    pub(super) dec_h: Vec<Vec<f32>>,
    pub(super) out: Vec<f32>,
    pub(super) db0: Vec<f32>,
    pub(super) db1: Vec<f32>,
    pub(super) dz: Vec<f32>,
    pub(super) ll: Vec<f64>,
    pub(super) lp: Vec<f64>,
    pub(super) lq: Vec<f64>,
    /// The encoder's weights a^z / n per sample (`f32` and `f64`): the backward pass through
    /// the decoder runs under them, so that ∂/∂z is the encoder's.
    pub(super) c: Vec<f32>,
    pub(super) cf: Vec<f64>,
    /// The decoder's (and prior's) weights / n per sample; equal to `cf` except for PIWAE.
    pub(super) cd: Vec<f64>,
    /// PIWAE only: the decoder's weights in `f32`, and ρ = decoder / encoder weight per sample
    /// (M·S_g/S_all ∈ [0, M]: finite, while its inverse can overflow), which rescales the rows
    /// of the backward pass when the decoder's weight gradients are accumulated.
    pub(super) cdec: Vec<f32>,
    pub(super) ratio: Vec<f32>,
    /// PIWAE only: a hidden layer's backward rows rescaled by ρ.
    pub(super) das: Vec<f32>,
    pub(super) wt: Vec<f64>,
    /// One example's log-weights (scratch of `weigh`).
    pub(super) lw: Vec<f64>,
    pub(super) tmp: Vec<f32>,
    pub(super) scratch: Vec<f32>,
    /// ∂/∂ of the encoder's input rows (a VampPrior's pseudo-inputs), `rows × input_dim`.
    pub(super) gx: Vec<f32>,
}

/// Sets `v` to `len` values (contents unspecified; keeps the allocation).
pub(super) fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}
