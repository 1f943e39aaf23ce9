//! The fast `f32` training path: the objective and its gradient computed with the crate's own
//! kernels on the parameters of the dfdx tensors, written into plain buffers from which the
//! trainer's Adam step (the same arithmetic as dfdx's kernel) updates them.
//!
//! It computes exactly what the generic path (crate::objective, dfdx's tape) computes — the
//! same surrogate, the same encoder cotangents — with the work arranged for the CPU:
//!
//! * **one matrix product per layer over all samples of a chunk** of whole examples (at most
//!   `CHUNK_ROWS` rows, so a chunk's activations stay in the L2 cache), forward and backward,
//!   with the 6 × 16 AVX2+FMA kernel of [`crate::kernels::gemm`] on weights packed once per
//!   step (Wᵀ packed too, for the backward data products);
//! * **weight and bias gradients in one product**: every activation buffer carries a constant
//!   column of ones, so Xᵀ·dY also yields Σ dY; the IWAE weights c_r scale the last hidden
//!   layer's rows (200 wide) instead of the 784-wide output gradient;
//! * **fused vectorized elementwise passes** (bias + tanh, the Bernoulli log-likelihood and its
//!   gradient x − sigmoid(l) in one pass, activation derivatives times c_r) with the polynomial
//!   exp/log1p of [`crate::kernels::math`];
//! * **[`LANES`] independent lanes**: the batch is split into that many contiguous ranges of
//!   examples, each run on its own (rayon) with its own gradient buffer; the lane gradients are
//!   summed in lane order. The split does not depend on the number of threads, so results are
//!   bit-identical with one thread or many.
//!
//! Used when the CPU has AVX2 and FMA, the element type is `f32` and the prior is the standard
//! normal, a Gaussian mixture of at most [`MAX_MIXTURE`] components (fixed, as when
//! fine-tuning under a refit prior, or trained, as in a gradient refit) or a VampPrior with at
//! most that many pseudo-inputs, for every activation, likelihood, posterior parametrization,
//! objective and estimator (one stochastic layer; several take crate::stack's tape).
//!
//! **The VampPrior** (Tomczak & Welling 2018), p(z) = (1/K) Σ_c q(z|u_c), is an equal-weight
//! mixture whose means and log-stds are the encoder's outputs at the pseudo-inputs u_c. Each
//! step encodes the K pseudo-inputs first (split across the lanes), evaluates that mixture as
//! a [`MixPack`], accumulates the surrogate's gradient with respect to its means and log-stds
//! exactly as for a trained mixture (under the decoder's weights, as the tape's model pass
//! does), and pulls it back through the encoder (`vamp.rs`): into the encoder's weight
//! gradients when the encoder is trained and into the pseudo-inputs when the prior is.
//!
//! The pieces, by concern, each depending only on those before it: `mixture` (a mixture prior's
//! density and gradients as `f64` matrix products), `pack` (the network's shape,
//! the gradient's layout, the parameters copied out of the dfdx tensors and packed once per step,
//! Adam fused with packing), `work` (a step's read-only context and each lane's buffers),
//! `backward` (through decoder and encoder), `lane` (one lane's work: encoder forward, then per
//! chunk the decoder, log p(z), the importance weights and the backward passes), `vamp` (the
//! VampPrior's encoder passes over its pseudo-inputs) and this file (the [`Engine`]: a step's
//! lanes and the Adam update).

use crate::config::VaeConfig;
use crate::error::{NnError, Result};
use crate::kernels::{self, AdamStep};
use crate::model::Vae;
use crate::param::ParamMut;
use crate::prior::{Prior, PriorKind};
use crate::task::{Objective, Trainable};

mod backward;
mod lane;
mod mixture;
mod pack;
mod vamp;
mod work;

use lane::run_lane;
use mixture::MixPack;
use pack::{LayerPack, Net, Offsets, Packed, Target, WeightCopy, adam_tensor};
use vamp::{Setup, VampWork};
use work::{Ctx, LANES, LaneWork};

/// Largest mixture prior the fast path takes (its per-sample responsibilities are kept for the
/// prior's gradient); larger ones, such as an exact aggregate posterior, use the generic path.
pub(crate) const MAX_MIXTURE: usize = 4096;

/// Whether the fast path handles this combination (the caller has validated it).
pub(crate) fn supported(prior: PriorKind) -> bool {
    let prior_ok = match prior {
        PriorKind::StandardNormal => true,
        PriorKind::Mixture { components } => components <= MAX_MIXTURE,
        PriorKind::Vamp { components } => components <= MAX_MIXTURE,
    };
    kernels::avx2_fma() && prior_ok
}

/// The fast path's state: packed parameters and per-lane buffers.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    net: Net,
    off: Offsets,
    obj: Objective,
    tr: Trainable,
    packed: Packed,
    lanes: Vec<LaneWork>,
    values: Vec<f64>,
    /// Examples in each lane at the last evaluation.
    lane_examples: [usize; LANES],
    /// Whether the packed weight matrices hold the model's current weights (set by a load
    /// and by [`Engine::adam`]; cleared by [`Engine::invalidate`]), so that the next
    /// evaluation need not copy and pack them again.
    weights_current: bool,
    /// Under a VampPrior: its per-step work.
    vamp: Option<VampWork>,
    /// Whether the lanes accumulate the mixture's gradient (see [`Ctx::prior_grad`]).
    prior_grad: bool,
}

impl Engine {
    /// An engine for this model and objective, or `None` where the generic path must be used.
    pub(crate) fn new(
        cfg: &VaeConfig,
        prior: PriorKind,
        obj: &Objective,
        tr: Trainable,
    ) -> Option<Engine> {
        let (mixture, vamp) = match prior {
            PriorKind::StandardNormal => (false, false),
            PriorKind::Mixture { .. } => (true, false),
            PriorKind::Vamp { .. } => (false, true),
        };
        // The VampPrior's backward pass into the pseudo-inputs goes through the encoder's
        // first hidden layer (an encoder without hidden layers takes the generic path).
        let vamp_ok = !vamp || !cfg.encoder_hidden.is_empty();
        let has_params = mixture || vamp;
        if !supported(prior) || !vamp_ok || !(tr.encoder || tr.decoder || (tr.prior && has_params))
        {
            return None;
        }
        let net = Net::new(cfg);
        let mut packed = Packed::new(&net, tr, vamp && tr.prior);
        packed.mix = has_params.then(MixPack::default);
        Some(Engine {
            off: Offsets::new(cfg, tr, prior),
            packed,
            net,
            obj: *obj,
            tr,
            lanes: vec![LaneWork::default(); LANES],
            values: Vec::new(),
            lane_examples: [0; LANES],
            weights_current: false,
            vamp: vamp.then(VampWork::default),
            prior_grad: (mixture && tr.prior) || (vamp && (tr.encoder || tr.prior)),
        })
    }

    /// The batch-mean objective at noise `eps`; afterwards [`Engine::gradient_parts`] gives the
    /// gradient. Inputs are validated by the caller.
    pub(crate) fn evaluate(
        &mut self,
        vae: &Vae<f32>,
        prior: &Prior<f32>,
        x: &[f32],
        n: usize,
        eps: &[f32],
    ) -> Result<f64> {
        self.packed.load(vae, &self.net, !self.weights_current);
        self.weights_current = true;
        // Contiguous ranges of examples, the first lanes one larger.
        let mut starts = [0usize; LANES + 1];
        for l in 0..LANES {
            starts[l + 1] = starts[l] + n / LANES + usize::from(l < n % LANES);
        }
        for l in 0..LANES {
            self.lane_examples[l] = starts[l + 1] - starts[l];
        }
        match (&mut self.packed.mix, prior, self.vamp.is_some()) {
            (None, Prior::StandardNormal, false) => {}
            (Some(mix), Prior::Mixture(m), false) if m.components() <= MAX_MIXTURE => mix.load(m),
            (Some(_), Prior::Vamp(v), true) if v.components() <= MAX_MIXTURE => {
                let active = self.lane_examples.iter().filter(|&&e| e > 0).count();
                let Engine {
                    net,
                    off,
                    obj,
                    tr,
                    packed,
                    vamp,
                    ..
                } = self;
                if let Some(vw) = vamp.as_mut() {
                    let s = Setup {
                        net,
                        off,
                        obj,
                        tr: *tr,
                    };
                    vw.forward(s, packed, v, active);
                }
            }
            _ => {
                return Err(NnError::InvalidConfig(format!(
                    "the fast path was set up for another prior than {:?}",
                    prior.kind()
                )));
            }
        }
        self.values.clear();
        self.values.resize(n, 0.0);
        let ctx = Ctx {
            net: &self.net,
            off: &self.off,
            pk: &self.packed,
            obj: &self.obj,
            tr: self.tr,
            x,
            eps,
            n,
            prior_grad: self.prior_grad,
            input_grad: false,
        };
        let (v0, v1) = self.values.split_at_mut(starts[1]);
        let (w0, w1) = self.lanes.split_at_mut(1);
        // Flush-to-zero inside the lanes: underflowing IWAE weights otherwise make whole rows
        // subnormal (kernels::DenormalsAreZero).
        let (r0, r1) = rayon::join(
            || {
                let _ftz = kernels::DenormalsAreZero::new();
                run_lane(&ctx, &mut w0[0], 0, v0)
            },
            || {
                let _ftz = kernels::DenormalsAreZero::new();
                run_lane(&ctx, &mut w1[0], starts[1], v1)
            },
        );
        r0?;
        r1?;
        if let (Some(vw), true) = (self.vamp.as_mut(), self.prior_grad) {
            let s = Setup {
                net: &self.net,
                off: &self.off,
                obj: &self.obj,
                tr: self.tr,
            };
            vw.backward(s, &self.packed, &mut self.lanes);
        }
        let value = self.values.iter().sum::<f64>() / n as f64;
        if !value.is_finite() {
            return Err(NnError::Diverged {
                what: format!("objective ({value})"),
            });
        }
        Ok(value)
    }

    /// The gradient of trainable tensor `t` (canonical order) after [`Engine::evaluate`]: the
    /// per-lane parts, to be summed in order.
    pub(crate) fn gradient_parts(&self, t: usize) -> impl Iterator<Item = &[f32]> + '_ {
        let (o, len) = self.off.tensors[t];
        self.lanes
            .iter()
            .zip(self.lane_examples)
            .filter(|(_, n)| *n > 0)
            .map(move |(w, _)| &w.grad[o..o + len])
    }

    /// Σ g² (in `f64`) of the loss gradient g = −Σ parts of trainable tensor `t`, rounded to
    /// `f32` as [`Engine::adam`] uses it.
    pub(crate) fn gradient_sq(&self, t: usize) -> f64 {
        let mut parts = self.gradient_parts(t);
        let g0 = parts.next().unwrap_or(&[]);
        let g1 = parts.next().unwrap_or(&[]);
        debug_assert!(parts.next().is_none());
        let mut out = 0.0;
        kernels::sum_squares(g0, g1, &mut out);
        out
    }

    /// Tells the engine that the model's weights changed behind its back (a restored state, a
    /// step on the generic path): the next evaluation copies and packs them again.
    pub(crate) fn invalidate(&mut self) {
        self.weights_current = false;
    }

    /// One Adam step after [`Engine::evaluate`] on the model and prior it evaluated: the
    /// trainable tensors `params` (canonical order, the engine's trainable set) with their
    /// moments, at the loss gradient −Σ lanes' parts, tensors in parallel. The same
    /// arithmetic as dfdx's Adam kernel ([`kernels::AdamStep`]); each weight matrix is updated
    /// in the engine's copy, packed for the next step in the same pass and written into the
    /// model, so that the next evaluation need not copy or pack it.
    pub(crate) fn adam(
        &mut self,
        vae: &mut Vae<f32>,
        prior: &mut Prior<f32>,
        names: &[&str],
        moments: Vec<(&mut [f32], &mut [f32])>,
        s: &AdamStep,
    ) -> Result<()> {
        use rayon::prelude::*;
        // Set again only once every tensor is written.
        self.weights_current = false;
        let Engine {
            packed,
            lanes,
            lane_examples,
            off,
            ..
        } = self;
        let specs = vae.config().param_specs();
        // What the engine keeps of each model parameter, canonical order (weight and bias of
        // each layer, then the learned log-std), then the prior's tensors.
        let mut targets: Vec<Target<'_>> = Vec::new();
        for lp in packed
            .enc
            .iter_mut()
            .chain([&mut packed.mean, &mut packed.std])
            .chain(packed.dec.iter_mut())
        {
            let LayerPack {
                w,
                b,
                fwd,
                bwd,
                pack_fwd,
                pack_bwd,
            } = lp;
            targets.push(Target::Weight(WeightCopy {
                w,
                fwd: pack_fwd.then_some(fwd),
                bwd: pack_bwd.then_some(bwd),
            }));
            targets.push(Target::Scratch(Some(b)));
        }
        let params: Vec<(String, ParamMut<'_, f32>)> = vae
            .params_mut()
            .into_iter()
            .chain(prior.params_mut())
            .collect();
        // The layers' tensors come first in canonical order; after them the model may only
        // have the learned log-std (a model with more, e.g. upper stochastic layers, is not
        // the one the engine packed).
        let layer_tensors = targets.len();
        let model_tensors = specs.len();
        let rest_ok = specs[layer_tensors.min(model_tensors)..]
            .iter()
            .all(|s| s.name == "decoder.log_std");
        if model_tensors < layer_tensors || !rest_ok || moments.len() != names.len() {
            return Err(NnError::InvalidConfig(
                "the fast path's Adam got another model than it evaluated".into(),
            ));
        }
        targets.resize_with(params.len(), || Target::Scratch(None));
        let mut jobs = Vec::with_capacity(names.len());
        for ((name, p), target) in params.into_iter().zip(targets) {
            if names.contains(&name.as_str()) {
                jobs.push((p, target));
            }
        }
        if jobs.len() != names.len() || jobs.len() != off.tensors.len() {
            return Err(NnError::InvalidConfig(
                "the fast path's Adam got another trainable set than it evaluated".into(),
            ));
        }
        let lanes = &*lanes;
        let lane_examples = *lane_examples;
        let mut jobs: Vec<_> = jobs
            .into_iter()
            .zip(moments)
            .zip(&off.tensors)
            .map(|(((p, target), (m, v)), &(o, len))| {
                let mut parts = lanes
                    .iter()
                    .zip(lane_examples)
                    .filter(|(_, n)| *n > 0)
                    .map(move |(w, _)| &w.grad[o..o + len]);
                let g0 = parts.next().unwrap_or(&[]);
                let g1 = parts.next().unwrap_or(&[]);
                (p, target, m, v, g0, g1)
            })
            .collect();
        if let Some((.., m, v, g0, _)) = jobs
            .iter()
            .find(|(.., m, v, g0, _)| m.len() != g0.len() || v.len() != g0.len())
        {
            return Err(NnError::InvalidConfig(format!(
                "the fast path's Adam: moments of {} and {} values for a gradient of {}",
                m.len(),
                v.len(),
                g0.len()
            )));
        }
        // Largest first, so that the two big layers go to different threads.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.2.len()));
        jobs.into_par_iter()
            .with_max_len(1)
            .for_each(|(p, target, m, v, g0, g1)| match (target, p) {
                (Target::Weight(wc), ParamMut::Mat(dst)) => wc.adam(dst, m, v, g0, g1, s),
                (Target::Weight(_), p) | (Target::Scratch(None), p) => {
                    adam_tensor(p, m, v, g0, g1, s, None)
                }
                (Target::Scratch(Some(b)), p) => adam_tensor(p, m, v, g0, g1, s, Some(b)),
            });
        self.weights_current = true;
        Ok(())
    }

    /// The summed gradient of trainable tensor `t`.
    pub(crate) fn gradient(&self, t: usize) -> Vec<f32> {
        let mut parts = self.gradient_parts(t);
        let mut g = parts.next().map(<[f32]>::to_vec).unwrap_or_default();
        for p in parts {
            for (a, b) in g.iter_mut().zip(p) {
                *a += b;
            }
        }
        g
    }
}
