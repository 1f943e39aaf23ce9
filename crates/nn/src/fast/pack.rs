//! The fast path's parameters: the network's shape, the flat gradient's layout, each layer's
//! weights copied out of the dfdx tensors and packed for the GEMM kernels, the mixture prior in
//! `f64`, and the Adam update fused with packing the next step's weights.

use dfdx::prelude::*;

use super::mixture::MixPack;
use crate::config::{Activation, Likelihood, PosteriorStd, VaeConfig};
use crate::kernels::{
    self, AdamStep,
    gemm::{self, Panels},
};
use crate::model::{Linear, Vae};
use crate::param::ParamMut;
use crate::prior::PriorKind;
use crate::real::{LN_2PI, Mat};
use crate::task::Trainable;

/// Layer sizes and settings.
#[derive(Clone, Debug)]
pub(super) struct Net {
    pub(super) dd: usize,
    pub(super) d: usize,
    /// Encoder hidden layers `(in, out)`.
    pub(super) enc: Vec<(usize, usize)>,
    /// Width feeding the heads.
    pub(super) hl: usize,
    /// Decoder layers `(in, out)`, the output layer last.
    pub(super) dec: Vec<(usize, usize)>,
    pub(super) act: Activation,
    pub(super) lik: Likelihood,
    pub(super) pstd: PosteriorStd,
}

impl Net {
    pub(super) fn new(cfg: &VaeConfig) -> Net {
        let mut enc = Vec::new();
        let mut w = cfg.input_dim;
        for &h in &cfg.encoder_hidden {
            enc.push((w, h));
            w = h;
        }
        let hl = w;
        let mut dec = Vec::new();
        let mut w = cfg.latent_dim;
        for &h in cfg.decoder_hidden.iter().chain([&cfg.input_dim]) {
            dec.push((w, h));
            w = h;
        }
        Net {
            dd: cfg.input_dim,
            d: cfg.latent_dim,
            enc,
            hl,
            dec,
            act: cfg.activation,
            lik: cfg.likelihood,
            pstd: cfg.posterior_std,
        }
    }
}

/// Offsets of the trainable tensors in the flat gradient (canonical order: each layer's weight
/// `in × out` is followed by its bias, exactly the `(in + 1) × out` output of a weight-gradient
/// product with the ones column).
#[derive(Clone, Debug)]
pub(super) struct Offsets {
    pub(super) enc: Vec<usize>,
    pub(super) mean: usize,
    pub(super) std: usize,
    pub(super) dec: Vec<usize>,
    pub(super) log_std: usize,
    /// A trained mixture prior's logits, means and log-stds.
    pub(super) prior: Option<[usize; 3]>,
    /// A trained VampPrior's pseudo-inputs (`K × input_dim`).
    pub(super) pseudo: Option<usize>,
    /// End of the encoder's tensors (they come first in canonical order; meaningful when the
    /// encoder is trained).
    pub(super) enc_end: usize,
    /// Every trainable tensor: (offset, length), canonical order.
    pub(super) tensors: Vec<(usize, usize)>,
    pub(super) len: usize,
}

impl Offsets {
    pub(super) fn new(cfg: &VaeConfig, tr: Trainable, prior_kind: PriorKind) -> Offsets {
        let specs = cfg.param_specs();
        let mut off = 0;
        let mut at = Vec::with_capacity(specs.len());
        let mut tensors = Vec::new();
        for s in &specs {
            at.push(off);
            let trainable = if s.name.starts_with("encoder.") {
                tr.encoder
            } else {
                tr.decoder
            };
            if trainable {
                let len: usize = s.shape.iter().product();
                tensors.push((off, len));
                off += len;
            }
        }
        let (mut prior, mut pseudo) = (None, None);
        match prior_kind {
            PriorKind::Mixture { components: kc } if tr.prior => {
                let d = cfg.latent_dim;
                let at = [off, off + kc, off + kc + kc * d];
                for (o, len) in at.iter().zip([kc, kc * d, kc * d]) {
                    tensors.push((*o, len));
                }
                off += kc + 2 * kc * d;
                prior = Some(at);
            }
            PriorKind::Vamp { components: kc } if tr.prior => {
                tensors.push((off, kc * cfg.input_dim));
                pseudo = Some(off);
                off += kc * cfg.input_dim;
            }
            _ => {}
        }
        let l = cfg.encoder_hidden.len();
        let m = cfg.decoder_hidden.len() + 1;
        Offsets {
            prior,
            pseudo,
            enc_end: at[2 * l + 3] + cfg.latent_dim,
            enc: (0..l).map(|i| at[2 * i]).collect(),
            mean: at[2 * l],
            std: at[2 * l + 2],
            dec: (0..m).map(|i| at[2 * l + 4 + 2 * i]).collect(),
            log_std: at.get(2 * l + 4 + 2 * m).copied().unwrap_or(0),
            tensors,
            len: off,
        }
    }
}

/// One layer's parameters, copied out of the dfdx tensors and packed for the kernels.
#[derive(Clone, Debug, Default)]
pub(super) struct LayerPack {
    pub(super) w: Vec<f32>,
    pub(super) b: Vec<f32>,
    /// W (`in × out`) for the forward product.
    pub(super) fwd: Panels,
    /// Wᵀ (`out × in`) for the backward data product.
    pub(super) bwd: Panels,
    pub(super) pack_fwd: bool,
    pub(super) pack_bwd: bool,
}

impl LayerPack {
    /// Copies the bias and, with `weights`, copies and packs the weight matrix.
    pub(super) fn load(&mut self, l: &Linear<f32>, weights: bool) {
        let (i, o) = *l.w.shape();
        self.b.resize(o, 0.0);
        l.b.copy_into(&mut self.b);
        if !weights {
            return;
        }
        self.w.resize(i * o, 0.0);
        l.w.copy_into(&mut self.w);
        if self.pack_fwd {
            self.fwd.repack(&self.w, i, o);
        }
        if self.pack_bwd {
            self.bwd.repack_transposed(&self.w, i, o);
        }
    }
}

/// The engine's copy of one weight matrix and its packed forms (those the layer uses).
pub(super) struct WeightCopy<'a> {
    pub(super) w: &'a mut Vec<f32>,
    pub(super) fwd: Option<&'a mut Panels>,
    pub(super) bwd: Option<&'a mut Panels>,
}

/// Where [`Engine::adam`] keeps a parameter's current values.
pub(super) enum Target<'a> {
    /// A weight matrix: the engine's copy, packed in the same pass.
    Weight(WeightCopy<'a>),
    /// Copied out of the tensor for the update (into the buffer given, if any).
    Scratch(Option<&'a mut Vec<f32>>),
}

impl WeightCopy<'_> {
    /// Adam on the weight matrix (`in × out`, the current values in `self.w`) with moments
    /// `m`, `v` and gradient parts `g0`, `g1`, packing each block of [`gemm::NR`] rows while it
    /// is in the L1 cache; then writes the new values into the model's tensor `dst`.
    pub(super) fn adam(
        self,
        dst: &mut Mat<f32>,
        m: &mut [f32],
        v: &mut [f32],
        g0: &[f32],
        g1: &[f32],
        s: &AdamStep,
    ) {
        let (i, o) = *dst.shape();
        debug_assert_eq!(self.w.len(), i * o);
        let WeightCopy {
            w,
            mut fwd,
            mut bwd,
        } = self;
        if let Some(f) = fwd.as_deref_mut() {
            f.ensure(i, o);
        }
        if let Some(b) = bwd.as_deref_mut() {
            b.ensure(o, i);
        }
        let blk = gemm::NR * o;
        for (r, p) in w.chunks_mut(blk).enumerate() {
            let at = r * blk;
            let end = at + p.len();
            let g1 = if g1.is_empty() { g1 } else { &g1[at..end] };
            kernels::adam(p, &mut m[at..end], &mut v[at..end], &g0[at..end], g1, s);
            if let Some(f) = fwd.as_deref_mut() {
                f.repack_rows(p, r * gemm::NR);
            }
            if let Some(b) = bwd.as_deref_mut() {
                b.repack_transposed_rows(p, r * gemm::NR);
            }
        }
        dst.copy_from(w);
    }
}

/// Adam on a parameter the engine keeps no copy of (a bias, the learned decoder log-std, a
/// mixture prior's tensors): copied out, updated, copied back.
pub(super) fn adam_tensor(
    dst: ParamMut<'_, f32>,
    m: &mut [f32],
    v: &mut [f32],
    g0: &[f32],
    g1: &[f32],
    s: &AdamStep,
    cur: Option<&mut Vec<f32>>,
) {
    let mut own = Vec::new();
    let buf = cur.unwrap_or(&mut own);
    buf.resize(m.len(), 0.0);
    match &dst {
        ParamMut::Mat(t) => t.copy_into(buf),
        ParamMut::Vec(t) => t.copy_into(buf),
    }
    kernels::adam(buf, m, v, g0, g1, s);
    match dst {
        ParamMut::Mat(t) => t.copy_from(buf),
        ParamMut::Vec(t) => t.copy_from(buf),
    }
}

/// The observation model's constants.
#[derive(Clone, Debug, Default)]
pub(super) struct LikPack {
    /// Gaussian: c_j = −½ σ_j⁻².
    pub(super) coef: Vec<f32>,
    /// Gaussian: −Σ ln σ_j − (D/2) ln 2π.
    pub(super) constant: f64,
}

/// Parameters of one step, packed.
#[derive(Clone, Debug, Default)]
pub(super) struct Packed {
    pub(super) enc: Vec<LayerPack>,
    pub(super) mean: LayerPack,
    pub(super) std: LayerPack,
    /// [W_μ | W_σ] (`hl × 2d`).
    pub(super) head_fwd: Panels,
    /// [W_μ | W_σ]ᵀ (`2d × hl`), for the backward data product into the last hidden layer.
    pub(super) head_bwd: Panels,
    /// [b_μ | b_σ].
    pub(super) head_b: Vec<f32>,
    pub(super) dec: Vec<LayerPack>,
    pub(super) lik: LikPack,
    /// The mixture prior (absent under N(0, I)); for the VampPrior, set each step from the
    /// encoded pseudo-inputs.
    pub(super) mix: Option<MixPack>,
    /// Whether backward passes run through the encoder (it is trained, or a VampPrior's
    /// pseudo-inputs are).
    pub(super) enc_back: bool,
}

impl Packed {
    /// `pseudo_grad`: a VampPrior's pseudo-inputs are trained, so the backward pass also runs
    /// into the encoder's input.
    pub(super) fn new(net: &Net, tr: Trainable, pseudo_grad: bool) -> Packed {
        let enc_back = tr.encoder || pseudo_grad;
        let enc = (0..net.enc.len())
            .map(|i| LayerPack {
                pack_fwd: true,
                pack_bwd: enc_back && (i > 0 || pseudo_grad),
                ..LayerPack::default()
            })
            .collect();
        let m = net.dec.len();
        let dec = (0..m)
            .map(|i| LayerPack {
                pack_fwd: true,
                // Backward data products: into hidden layer i − 1, or into z (encoder only).
                pack_bwd: i > 0 || tr.encoder,
                ..LayerPack::default()
            })
            .collect();
        Packed {
            enc,
            dec,
            enc_back,
            ..Packed::default()
        }
    }

    /// Copies the model's parameters and packs them (tensors in parallel). Without `weights`
    /// the weight matrices are taken as they are: packed by [`Engine::adam`] from the values
    /// it wrote into the model.
    pub(super) fn load(&mut self, vae: &Vae<f32>, net: &Net, weights: bool) {
        use rayon::prelude::*;
        let layers = vae.layers();
        let mut jobs: Vec<(&mut LayerPack, &Linear<f32>)> = Vec::new();
        jobs.extend(self.enc.iter_mut().zip(layers.enc));
        jobs.push((&mut self.mean, layers.mean));
        jobs.push((&mut self.std, layers.std));
        jobs.extend(self.dec.iter_mut().zip(layers.dec.iter().copied()));
        if weights {
            // Largest first, so that the two big layers go to different threads.
            jobs.sort_by_key(|(_, l)| std::cmp::Reverse(l.w.shape().0 * l.w.shape().1));
            jobs.into_par_iter()
                .with_max_len(1)
                .for_each(|(p, l)| p.load(l, true));
        } else {
            for (p, l) in jobs {
                p.load(l, false);
            }
        }
        let (hl, d) = (net.hl, net.d);
        let (wm, ws) = (&self.mean.w, &self.std.w);
        self.head_fwd.repack_with(hl, 2 * d, |p, c| {
            if c < d {
                wm[p * d + c]
            } else {
                ws[p * d + c - d]
            }
        });
        if self.enc_back && !net.enc.is_empty() {
            self.head_bwd.repack_with(2 * d, hl, |p, c| {
                if p < d {
                    wm[c * d + p]
                } else {
                    ws[c * d + p - d]
                }
            });
        }
        self.head_b.clear();
        self.head_b.extend_from_slice(&self.mean.b);
        self.head_b.extend_from_slice(&self.std.b);
        let dd = net.dd;
        match (net.lik, layers.log_std) {
            (Likelihood::Bernoulli, _) => {}
            (Likelihood::Gaussian { learned: true, .. }, Some(ls)) => {
                let mut v = vec![0.0f32; dd];
                ls.copy_into(&mut v);
                self.lik.coef = v.iter().map(|l| (l * -2.0).exp() * -0.5).collect();
                self.lik.constant =
                    -v.iter().map(|&l| l as f64).sum::<f64>() - 0.5 * LN_2PI * dd as f64;
            }
            (Likelihood::Gaussian { std, .. }, _) => {
                let s = std as f64;
                self.lik.coef = vec![(-0.5 / (s * s)) as f32; dd];
                self.lik.constant = -(dd as f64) * (s.ln() + 0.5 * LN_2PI);
            }
        }
    }
}
