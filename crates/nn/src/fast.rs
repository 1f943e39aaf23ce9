//! The fast `f32` training path: the objective and its gradient for the standard-normal prior
//! computed with the crate's own kernels on the parameters of the dfdx tensors, written into
//! plain buffers that the trainer hands to dfdx's Adam kernel.
//!
//! It computes exactly what the generic path (crate::objective, dfdx's tape) computes — the
//! same surrogate, the same encoder cotangents — with the work arranged for the CPU:
//!
//! * **one matrix product per layer over all samples of a chunk** of whole examples (at most
//!   [`CHUNK_ROWS`] rows, so a chunk's activations stay in the L2 cache), forward and backward,
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
//! normal or a Gaussian mixture of at most [`MAX_MIXTURE`] components (fixed, as when
//! fine-tuning under a refit prior, or trained, as in a gradient refit), for every activation,
//! likelihood, posterior parametrization, objective and estimator; everything else (the
//! VampPrior, whose density runs through the encoder) takes the generic path.

use dfdx::prelude::*;

use crate::config::{Activation, Likelihood, PosteriorStd, VaeConfig};
use crate::error::{NnError, Result};
use crate::kernels::{
    self, AdamStep,
    gemm::{self, Lhs, Panels, Rhs, gemm},
};
use crate::lse::shifted_exp_sum;
use crate::model::{Linear, Vae};
use crate::param::ParamMut;
use crate::prior::{Mixture, Prior, PriorKind};
use crate::real::{LN_2PI, Mat};
use crate::task::{Estimator, Objective, Trainable};
use crate::weights::{SampleWeights, weigh_example};

/// Independent lanes the batch is split into (fixed: results do not depend on the threads).
pub(crate) const LANES: usize = 2;
/// Target sample rows per chunk (whole examples; at least one example per chunk).
pub(crate) const CHUNK_ROWS: usize = 128;

/// Largest mixture prior the fast path takes (its per-sample responsibilities are kept for the
/// prior's gradient); larger ones, such as an exact aggregate posterior, use the generic path.
pub(crate) const MAX_MIXTURE: usize = 4096;

/// Whether the fast path handles this combination (the caller has validated it).
pub(crate) fn supported(prior: PriorKind) -> bool {
    let prior_ok = match prior {
        PriorKind::StandardNormal => true,
        PriorKind::Mixture { components } => components <= MAX_MIXTURE,
        PriorKind::Vamp { .. } => false,
    };
    kernels::avx2_fma() && prior_ok
}

/// Layer sizes and settings.
#[derive(Clone, Debug)]
struct Net {
    dd: usize,
    d: usize,
    /// Encoder hidden layers `(in, out)`.
    enc: Vec<(usize, usize)>,
    /// Width feeding the heads.
    hl: usize,
    /// Decoder layers `(in, out)`, the output layer last.
    dec: Vec<(usize, usize)>,
    act: Activation,
    lik: Likelihood,
    pstd: PosteriorStd,
}

impl Net {
    fn new(cfg: &VaeConfig) -> Net {
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
struct Offsets {
    enc: Vec<usize>,
    mean: usize,
    std: usize,
    dec: Vec<usize>,
    log_std: usize,
    /// A trained mixture prior's logits, means and log-stds.
    prior: Option<[usize; 3]>,
    /// Every trainable tensor: (offset, length), canonical order.
    tensors: Vec<(usize, usize)>,
    len: usize,
}

impl Offsets {
    fn new(cfg: &VaeConfig, tr: Trainable, mixture: Option<usize>) -> Offsets {
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
        let prior = match mixture {
            Some(kc) if tr.prior => {
                let d = cfg.latent_dim;
                let at = [off, off + kc, off + kc + kc * d];
                for (o, len) in at.iter().zip([kc, kc * d, kc * d]) {
                    tensors.push((*o, len));
                }
                off += kc + 2 * kc * d;
                Some(at)
            }
            _ => None,
        };
        let l = cfg.encoder_hidden.len();
        let m = cfg.decoder_hidden.len() + 1;
        Offsets {
            prior,
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
struct LayerPack {
    w: Vec<f32>,
    b: Vec<f32>,
    /// W (`in × out`) for the forward product.
    fwd: Panels,
    /// Wᵀ (`out × in`) for the backward data product.
    bwd: Panels,
    pack_fwd: bool,
    pack_bwd: bool,
}

impl LayerPack {
    /// Copies the bias and, with `weights`, copies and packs the weight matrix.
    fn load(&mut self, l: &Linear<f32>, weights: bool) {
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
struct WeightCopy<'a> {
    w: &'a mut Vec<f32>,
    fwd: Option<&'a mut Panels>,
    bwd: Option<&'a mut Panels>,
}

/// Where [`Engine::adam`] keeps a parameter's current values.
enum Target<'a> {
    /// A weight matrix: the engine's copy, packed in the same pass.
    Weight(WeightCopy<'a>),
    /// Copied out of the tensor for the update (into the buffer given, if any).
    Scratch(Option<&'a mut Vec<f32>>),
}

impl WeightCopy<'_> {
    /// Adam on the weight matrix (`in × out`, the current values in `self.w`) with moments
    /// `m`, `v` and gradient parts `g0`, `g1`, packing each block of [`gemm::NR`] rows while it
    /// is in the L1 cache; then writes the new values into the model's tensor `dst`.
    fn adam(
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
fn adam_tensor(
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
struct LikPack {
    /// Gaussian: c_j = −½ σ_j⁻².
    coef: Vec<f32>,
    /// Gaussian: −Σ ln σ_j − (D/2) ln 2π.
    constant: f64,
}

/// A mixture prior's parameters for one step, in `f64`: log p(z) = logsumexp_c(a_c − ½ Σ_j
/// (z_j − μ_cj)² / σ_cj²) with a_c = log π_c − Σ_j ln σ_cj − (d/2) ln 2π.
#[derive(Clone, Debug, Default)]
struct MixPack {
    k: usize,
    pi: Vec<f64>,
    a: Vec<f64>,
    means: Vec<f64>,
    inv_var: Vec<f64>,
}

impl MixPack {
    fn load(&mut self, m: &Mixture<f32>) {
        let (k, d) = (m.components(), m.dim());
        let logits: Vec<f64> = m.logits().iter().map(|&v| v as f64).collect();
        let (max, sum) = shifted_exp_sum(logits.iter().copied());
        let lse = max + sum.ln();
        let log_stds: Vec<f64> = m.log_stds().iter().map(|&v| v as f64).collect();
        self.k = k;
        self.pi = logits.iter().map(|v| (v - lse).exp()).collect();
        self.a = (0..k)
            .map(|c| {
                logits[c]
                    - lse
                    - log_stds[c * d..(c + 1) * d].iter().sum::<f64>()
                    - 0.5 * d as f64 * LN_2PI
            })
            .collect();
        self.means = m.means().iter().map(|&v| v as f64).collect();
        self.inv_var = log_stds.iter().map(|l| (-2.0 * l).exp()).collect();
    }

    /// log p(z) of one sample; its gradient ∂/∂z into `gz` and the responsibilities into `rho`.
    fn eval(&self, z: &[f32], gz: &mut [f64], rho: &mut [f64]) -> f64 {
        let d = z.len();
        let mut max = f64::NEG_INFINITY;
        for (c, r) in rho.iter_mut().enumerate() {
            let (mu, iv) = (
                &self.means[c * d..(c + 1) * d],
                &self.inv_var[c * d..(c + 1) * d],
            );
            let mut q = 0.0;
            for j in 0..d {
                let t = z[j] as f64 - mu[j];
                q += t * t * iv[j];
            }
            *r = self.a[c] - 0.5 * q;
            max = max.max(*r);
        }
        let mut sum = 0.0;
        for r in rho.iter_mut() {
            *r = (*r - max).exp();
            sum += *r;
        }
        gz.fill(0.0);
        for (c, r) in rho.iter_mut().enumerate() {
            *r /= sum;
            let (mu, iv) = (
                &self.means[c * d..(c + 1) * d],
                &self.inv_var[c * d..(c + 1) * d],
            );
            for j in 0..d {
                gz[j] += *r * (mu[j] - z[j] as f64) * iv[j];
            }
        }
        max + sum.ln()
    }
}

/// Parameters of one step, packed.
#[derive(Clone, Debug, Default)]
struct Packed {
    enc: Vec<LayerPack>,
    mean: LayerPack,
    std: LayerPack,
    /// [W_μ | W_σ] (`hl × 2d`).
    head_fwd: Panels,
    /// [W_μ | W_σ]ᵀ (`2d × hl`), for the backward data product into the last hidden layer.
    head_bwd: Panels,
    /// [b_μ | b_σ].
    head_b: Vec<f32>,
    dec: Vec<LayerPack>,
    lik: LikPack,
    /// The mixture prior (absent under N(0, I)).
    mix: Option<MixPack>,
}

impl Packed {
    fn new(net: &Net, tr: Trainable) -> Packed {
        let enc = (0..net.enc.len())
            .map(|i| LayerPack {
                pack_fwd: true,
                pack_bwd: tr.encoder && i > 0,
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
            ..Packed::default()
        }
    }

    /// Copies the model's parameters and packs them (tensors in parallel). Without `weights`
    /// the weight matrices are taken as they are: packed by [`Engine::adam`] from the values
    /// it wrote into the model.
    fn load(&mut self, vae: &Vae<f32>, net: &Net, tr: Trainable, weights: bool) {
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
        if tr.encoder && !net.enc.is_empty() {
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

/// Read-only inputs of the lanes.
struct Ctx<'a> {
    net: &'a Net,
    off: &'a Offsets,
    pk: &'a Packed,
    obj: &'a Objective,
    tr: Trainable,
    x: &'a [f32],
    eps: &'a [f32],
    /// Batch size.
    n: usize,
}

/// Buffers of one lane, reused across steps.
#[derive(Clone, Debug, Default)]
struct LaneWork {
    /// The lane's gradient (ascent direction), `Offsets::len` values.
    grad: Vec<f32>,
    /// Learned decoder log-std gradient, accumulated in `f64`.
    grad_log_std: Vec<f64>,
    /// Mixture prior: ∂ log p(z)/∂z per sample (rows × d), responsibilities (rows × K), and
    /// the trained prior's gradient (logits, means, log-stds) accumulated in `f64`.
    gz: Vec<f64>,
    rho: Vec<f64>,
    grad_prior: Vec<f64>,
    // Encoder, one row per example of the lane.
    xin: Vec<f32>,
    enc_h: Vec<Vec<f32>>,
    heads: Vec<f32>,
    mu: Vec<f32>,
    sigma: Vec<f32>,
    log_std: Vec<f32>,
    sum_log_std: Vec<f64>,
    g_mu: Vec<f64>,
    g_ls: Vec<f64>,
    genc: Vec<f32>,
    eb0: Vec<f32>,
    eb1: Vec<f32>,
    // Decoder, one row per sample of a chunk.
    z: Vec<f32>,
    zs: Vec<f32>,
    dec_h: Vec<Vec<f32>>,
    out: Vec<f32>,
    db0: Vec<f32>,
    db1: Vec<f32>,
    dz: Vec<f32>,
    ll: Vec<f64>,
    lp: Vec<f64>,
    lq: Vec<f64>,
    /// The encoder's weights a^z / n per sample (`f32` and `f64`): the backward pass through
    /// the decoder runs under them, so that ∂/∂z is the encoder's.
    c: Vec<f32>,
    cf: Vec<f64>,
    /// The decoder's (and prior's) weights / n per sample; equal to `cf` except for PIWAE.
    cd: Vec<f64>,
    /// PIWAE only: the decoder's weights in `f32`, and ρ = decoder / encoder weight per sample
    /// (M·S_g/S_all ∈ [0, M]: finite, while its inverse can overflow), which rescales the rows
    /// of the backward pass when the decoder's weight gradients are accumulated.
    cdec: Vec<f32>,
    ratio: Vec<f32>,
    /// PIWAE only: a hidden layer's backward rows rescaled by ρ.
    das: Vec<f32>,
    wt: Vec<f64>,
    /// One example's log-weights (scratch of `weigh`).
    lw: Vec<f64>,
    tmp: Vec<f32>,
    scratch: Vec<f32>,
}

/// Sets `v` to `len` values (contents unspecified; keeps the allocation).
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
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
}

impl Engine {
    /// An engine for this model and objective, or `None` where the generic path must be used.
    pub(crate) fn new(
        cfg: &VaeConfig,
        prior: PriorKind,
        obj: &Objective,
        tr: Trainable,
    ) -> Option<Engine> {
        let mixture = match prior {
            PriorKind::Mixture { components } => Some(components),
            _ => None,
        };
        if !supported(prior) || !(tr.encoder || tr.decoder || (tr.prior && mixture.is_some())) {
            return None;
        }
        let net = Net::new(cfg);
        let mut packed = Packed::new(&net, tr);
        packed.mix = mixture.map(|_| MixPack::default());
        Some(Engine {
            off: Offsets::new(cfg, tr, mixture),
            packed,
            net,
            obj: *obj,
            tr,
            lanes: vec![LaneWork::default(); LANES],
            values: Vec::new(),
            lane_examples: [0; LANES],
            weights_current: false,
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
        self.packed
            .load(vae, &self.net, self.tr, !self.weights_current);
        self.weights_current = true;
        match (&mut self.packed.mix, prior) {
            (None, Prior::StandardNormal) => {}
            (Some(mix), Prior::Mixture(m)) if m.components() <= MAX_MIXTURE => mix.load(m),
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
        };
        // Contiguous ranges of examples, the first lanes one larger.
        let mut starts = [0usize; LANES + 1];
        for l in 0..LANES {
            starts[l + 1] = starts[l] + n / LANES + usize::from(l < n % LANES);
        }
        for l in 0..LANES {
            self.lane_examples[l] = starts[l + 1] - starts[l];
        }
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

/// One lane: examples `e0 .. e0 + values.len()` of the batch.
fn run_lane(ctx: &Ctx<'_>, w: &mut LaneWork, e0: usize, values: &mut [f64]) -> Result<()> {
    let ne = values.len();
    if ne == 0 {
        return Ok(());
    }
    let net = ctx.net;
    let (d, k) = (net.d, ctx.obj.samples());
    if w.grad.len() != ctx.off.len {
        w.grad.resize(ctx.off.len, 0.0);
    }
    encoder_forward(ctx, w, e0, ne);
    if ctx.tr.decoder && matches!(net.lik, Likelihood::Gaussian { learned: true, .. }) {
        w.grad_log_std.clear();
        w.grad_log_std.resize(net.dd, 0.0);
    }
    if let Some(at) = ctx.off.prior {
        w.grad_prior.clear();
        w.grad_prior.resize(ctx.off.len - at[0], 0.0);
    }
    w.g_mu.clear();
    w.g_mu.resize(ne * d, 0.0);
    w.g_ls.clear();
    w.g_ls.resize(ne * d, 0.0);
    let per_chunk = (CHUNK_ROWS / k).max(1);
    let mut start = 0;
    while start < ne {
        let m = per_chunk.min(ne - start);
        chunk(
            ctx,
            w,
            e0,
            start,
            m,
            &mut values[start..start + m],
            start == 0,
        )?;
        start += m;
    }
    if ctx.tr.decoder && matches!(net.lik, Likelihood::Gaussian { learned: true, .. }) {
        let o = ctx.off.log_std;
        for (g, &v) in w.grad[o..o + net.dd].iter_mut().zip(&w.grad_log_std) {
            *g = v as f32;
        }
    }
    if let Some(at) = ctx.off.prior {
        for (g, &v) in w.grad[at[0]..].iter_mut().zip(&w.grad_prior) {
            *g = v as f32;
        }
    }
    if ctx.tr.encoder {
        encoder_backward(ctx, w, ne);
    }
    Ok(())
}

/// Forward through hidden layers `(in, out)` on `rows` rows: `outs[l]` becomes layer l's
/// activations, `rows × (out + 1)` with a trailing column of ones (as is `input`, `rows ×
/// (in₀ + 1)`), so that the backward weight product also yields the bias gradient.
#[allow(clippy::too_many_arguments)]
fn hidden_forward(
    input: &[f32],
    rows: usize,
    layers: &[(usize, usize)],
    packs: &[LayerPack],
    act: Activation,
    outs: &mut Vec<Vec<f32>>,
    scratch: &mut Vec<f32>,
) {
    outs.resize_with(layers.len(), Vec::new);
    for (l, (&(i, o), p)) in layers.iter().zip(packs).enumerate() {
        let (before, after) = outs.split_at_mut(l);
        let src: &[f32] = if l == 0 { input } else { &before[l - 1] };
        let dst = sized(&mut after[0], rows * (o + 1));
        gemm(
            rows,
            o,
            i,
            Lhs::Rows(src, i + 1),
            Rhs::Packed(&p.fwd),
            dst,
            o + 1,
            false,
            scratch,
        );
        kernels::activation_rows(dst, o + 1, rows, &p.b, act);
    }
}

/// Encoder forward for the lane's examples: μ, σ, ln σ.
fn encoder_forward(ctx: &Ctx<'_>, w: &mut LaneWork, e0: usize, ne: usize) {
    let net = ctx.net;
    let (dd, d) = (net.dd, net.d);
    let xin = sized(&mut w.xin, ne * (dd + 1));
    for (r, row) in xin.chunks_exact_mut(dd + 1).enumerate() {
        row[..dd].copy_from_slice(&ctx.x[(e0 + r) * dd..(e0 + r + 1) * dd]);
        row[dd] = 1.0;
    }
    hidden_forward(
        &w.xin,
        ne,
        &net.enc,
        &ctx.pk.enc,
        net.act,
        &mut w.enc_h,
        &mut w.scratch,
    );
    let (src, ld): (&[f32], usize) = match w.enc_h.last() {
        Some(h) => (h, net.hl + 1),
        None => (&w.xin, dd + 1),
    };
    let heads = sized(&mut w.heads, ne * 2 * d);
    gemm(
        ne,
        2 * d,
        net.hl,
        Lhs::Rows(src, ld),
        Rhs::Packed(&ctx.pk.head_fwd),
        heads,
        2 * d,
        false,
        &mut w.scratch,
    );
    for row in heads.chunks_exact_mut(2 * d) {
        for (v, b) in row.iter_mut().zip(&ctx.pk.head_b) {
            *v += b;
        }
    }
    let mu = sized(&mut w.mu, ne * d);
    let sigma = sized(&mut w.sigma, ne * d);
    let log_std = sized(&mut w.log_std, ne * d);
    w.sum_log_std.clear();
    for r in 0..ne {
        let h = &w.heads[r * 2 * d..(r + 1) * 2 * d];
        mu[r * d..(r + 1) * d].copy_from_slice(&h[..d]);
        let mut s = 0.0f64;
        for j in 0..d {
            let pre = h[d + j];
            let ls = match net.pstd {
                PosteriorStd::Exp => pre,
                PosteriorStd::Softplus => softplus_f32(pre).ln(),
            };
            log_std[r * d + j] = ls;
            sigma[r * d + j] = ls.exp();
            s += ls as f64;
        }
        w.sum_log_std.push(s);
    }
}

/// softplus in `f32` (libm), for the per-example σ head.
fn softplus_f32(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Examples `start .. start + m` of the lane (whole examples): decoder forward, weights,
/// decoder backward, encoder cotangents.
#[allow(clippy::too_many_arguments)]
fn chunk(
    ctx: &Ctx<'_>,
    w: &mut LaneWork,
    e0: usize,
    start: usize,
    m: usize,
    values: &mut [f64],
    first: bool,
) -> Result<()> {
    let net = ctx.net;
    let obj = ctx.obj;
    let (dd, d, k) = (net.dd, net.d, obj.samples());
    let rows = m * k;
    let const_d = 0.5 * d as f64 * LN_2PI;

    // z = μ + σ ε, log q(z|x) and log p(z).
    let z = sized(&mut w.z, rows * (d + 1));
    w.lq.clear();
    w.lp.clear();
    for r in 0..rows {
        let li = start + r / k;
        let er = (e0 + li) * k + r % k;
        let e = &ctx.eps[er * d..(er + 1) * d];
        let zr = &mut z[r * (d + 1)..(r + 1) * (d + 1)];
        let (mu, sd) = (&w.mu[li * d..(li + 1) * d], &w.sigma[li * d..(li + 1) * d]);
        let (mut sq_e, mut sq_z) = (0.0f64, 0.0f64);
        for j in 0..d {
            let v = mu[j] + sd[j] * e[j];
            zr[j] = v;
            sq_e += e[j] as f64 * e[j] as f64;
            sq_z += v as f64 * v as f64;
        }
        zr[d] = 1.0;
        w.lq.push(-w.sum_log_std[li] - 0.5 * sq_e - const_d);
        w.lp.push(-0.5 * sq_z - const_d);
    }
    if let Some(mix) = &ctx.pk.mix {
        w.gz.resize(rows * d, 0.0);
        w.rho.resize(rows * mix.k, 0.0);
        for r in 0..rows {
            w.lp[r] = mix.eval(
                &z[r * (d + 1)..r * (d + 1) + d],
                &mut w.gz[r * d..(r + 1) * d],
                &mut w.rho[r * mix.k..(r + 1) * mix.k],
            );
        }
    }

    // Decoder forward.
    let hidden = net.dec.len() - 1;
    hidden_forward(
        &w.z,
        rows,
        &net.dec[..hidden],
        &ctx.pk.dec[..hidden],
        net.act,
        &mut w.dec_h,
        &mut w.scratch,
    );
    let (i_out, _) = net.dec[hidden];
    let (src, ld): (&[f32], usize) = match w.dec_h.last() {
        Some(h) => (h, i_out + 1),
        None => (&w.z, d + 1),
    };
    let out = sized(&mut w.out, rows * dd);
    let pout = &ctx.pk.dec[hidden];
    gemm(
        rows,
        dd,
        i_out,
        Lhs::Rows(src, ld),
        Rhs::Packed(&pout.fwd),
        out,
        dd,
        false,
        &mut w.scratch,
    );
    w.ll.clear();
    w.ll.resize(rows, 0.0);
    let tmp = sized(&mut w.tmp, dd);
    let xc = &ctx.x[(e0 + start) * dd..(e0 + start + m) * dd];
    match net.lik {
        Likelihood::Bernoulli => {
            kernels::bernoulli_grad_rows(out, &pout.b, xc, k, &mut w.ll, tmp);
        }
        Likelihood::Gaussian { .. } => {
            let lk = &ctx.pk.lik;
            kernels::gaussian_grad_rows(out, &pout.b, xc, k, &lk.coef, lk.constant, &mut w.ll, tmp);
        }
    }

    // Importance weights and the surrogate's weights c.
    weigh(ctx, w, e0, start, m, values)?;

    // Learned Gaussian log-std: Σ_r c_r ((μ − x)² σ⁻² − 1), with (μ − x)² σ⁻² = g² σ² for the
    // stored gradient g = −(μ − x) σ⁻².
    if ctx.tr.decoder && matches!(net.lik, Likelihood::Gaussian { learned: true, .. }) {
        for r in 0..rows {
            let c = w.cd[r];
            for (j, acc) in w.grad_log_std.iter_mut().enumerate() {
                let g = w.out[r * dd + j] as f64;
                let var = -0.5 / ctx.pk.lik.coef[j] as f64;
                *acc += c * (g * g * var - 1.0);
            }
        }
    }

    if ctx.tr.encoder || ctx.tr.decoder {
        decoder_backward(ctx, w, rows, first);
    }
    if let (Some(mix), Some(_)) = (&ctx.pk.mix, ctx.off.prior) {
        prior_gradient(mix, w, rows, d);
    }
    if ctx.tr.encoder {
        encoder_cotangents(ctx, w, e0, start, rows);
    }
    Ok(())
}

/// A trained mixture prior's gradient of the surrogate Σ_r c_r log p(z_r): with
/// responsibilities ρ_rc, ∂/∂a_c = ρ_rc − π_c, ∂/∂μ_cj = ρ_rc (z_j − μ_cj)/σ_cj² and ∂/∂ln σ_cj =
/// ρ_rc ((z_j − μ_cj)²/σ_cj² − 1); accumulated into the lane's `grad_prior`.
// Several arrays with different strides are indexed by the same (c, j): indices read better here.
#[allow(clippy::needless_range_loop)]
fn prior_gradient(mix: &MixPack, w: &mut LaneWork, rows: usize, d: usize) {
    let kc = mix.k;
    let (g_logits, rest) = w.grad_prior.split_at_mut(kc);
    let (g_means, g_ls) = rest.split_at_mut(kc * d);
    for r in 0..rows {
        let c_r = w.cd[r];
        let z = &w.z[r * (d + 1)..r * (d + 1) + d];
        for c in 0..kc {
            let p = w.rho[r * kc + c];
            g_logits[c] += c_r * (p - mix.pi[c]);
            let cp = c_r * p;
            if cp == 0.0 {
                continue;
            }
            for j in 0..d {
                let i = c * d + j;
                let t = z[j] as f64 - mix.means[i];
                let tv = t * mix.inv_var[i];
                g_means[i] += cp * tv;
                g_ls[i] += cp * (t * tv - 1.0);
            }
        }
    }
}

/// log w = log p(x|z) + log p(z) − log q(z|x) per sample; the objective per example into
/// `values`; w̃ (`wt`) and the surrogate weights c (`c`, `cf`) per sample.
fn weigh(
    ctx: &Ctx<'_>,
    w: &mut LaneWork,
    e0: usize,
    start: usize,
    m: usize,
    values: &mut [f64],
) -> Result<()> {
    let obj = ctx.obj;
    let (k, n, d) = (obj.samples(), ctx.n as f64, ctx.net.d);
    let rows = m * k;
    w.wt.clear();
    w.wt.resize(rows, 0.0);
    w.cf.clear();
    w.cf.resize(rows, 0.0);
    w.cd.clear();
    w.cd.resize(rows, 0.0);
    for (q, value) in values.iter_mut().enumerate() {
        let li = start + q;
        if obj.analytic_kl {
            // k = 1: reconstruction − KL(q ‖ N(0, I)).
            let mut kl = 0.0f64;
            for j in 0..d {
                let (mu, ls) = (w.mu[li * d + j] as f64, w.log_std[li * d + j] as f64);
                kl += 0.5 * (mu * mu + (2.0 * ls).exp() - 1.0) - ls;
            }
            *value = w.ll[q] - kl;
            w.wt[q] = 1.0;
            w.cf[q] = 1.0 / n;
            w.cd[q] = 1.0 / n;
            continue;
        }
        let r0 = q * k;
        for r in r0..r0 + k {
            w.wt[r] = w.ll[r] + w.lp[r] - w.lq[r];
        }
        w.lw.clear();
        w.lw.extend_from_slice(&w.wt[r0..r0 + k]);
        // `cf` (the weights of the one backward pass) is the encoder's, `cd` the decoder's
        // (they differ for PIWAE only) and `wt` is DReG's factor (w̃ for IWAE, 1 for the ELBO).
        *value = weigh_example(
            obj.kind,
            &w.lw,
            SampleWeights {
                dec: &mut w.cd[r0..r0 + k],
                enc: &mut w.cf[r0..r0 + k],
                dreg_factor: &mut w.wt[r0..r0 + k],
            },
        )
        .map_err(|e| match e {
            NnError::Diverged { what } => NnError::Diverged {
                what: format!("example {}: {what}", e0 + li),
            },
            e => e,
        })?;
        for c in &mut w.cf[r0..r0 + k] {
            *c /= n;
        }
        for c in &mut w.cd[r0..r0 + k] {
            *c /= n;
        }
    }
    w.c.clear();
    w.c.extend(w.cf.iter().map(|&v| v as f32));
    if obj.kind.splits_weights() {
        w.cdec.clear();
        w.cdec.extend(w.cd.iter().map(|&v| v as f32));
        w.ratio.clear();
        w.ratio.extend(
            w.cd.iter()
                .zip(&w.cf)
                .map(|(&dec, &enc)| if enc > 0.0 { (dec / enc) as f32 } else { 0.0 }),
        );
    }
    Ok(())
}

/// Backward through the decoder: weight gradients (accumulated over the lane's chunks) and
/// ∂/∂z into `dz` (when the encoder is trained). The surrogate is Σ_r c_r log p(x|z_r), with
/// the encoder's c for ∂/∂z and the decoder's for the weights: for PIWAE, where they differ, the
/// rows are carried under the encoder's c and rescaled by ρ = c_dec / c_enc where a weight
/// gradient is accumulated (one backward pass instead of two).
fn decoder_backward(ctx: &Ctx<'_>, w: &mut LaneWork, rows: usize, first: bool) {
    let net = ctx.net;
    let (dd, d) = (net.dd, net.d);
    let hidden = net.dec.len() - 1;
    let (dec_tr, enc_tr) = (ctx.tr.decoder, ctx.tr.encoder);
    let split = ctx.obj.kind.splits_weights();
    let acc = !first;
    let e = &w.out[..rows * dd];
    if hidden == 0 {
        // Linear decoder: the output layer's input is z.
        let p = &ctx.pk.dec[0];
        if enc_tr {
            let dz = sized(&mut w.dz, rows * d);
            gemm(
                rows,
                d,
                dd,
                Lhs::Rows(e, dd),
                Rhs::Packed(&p.bwd),
                dz,
                d,
                false,
                &mut w.scratch,
            );
            for (row, &c) in dz.chunks_exact_mut(d).zip(&w.c) {
                row.iter_mut().for_each(|v| *v *= c);
            }
        }
        if dec_tr {
            let zs = sized(&mut w.zs, rows * (d + 1));
            zs.copy_from_slice(&w.z[..rows * (d + 1)]);
            let c = if split { &w.cdec } else { &w.c };
            kernels::scale_rows(zs, d + 1, rows, d, &c[..rows]);
            let g = &mut w.grad[ctx.off.dec[0]..];
            gemm(
                d + 1,
                dd,
                rows,
                Lhs::Cols(zs, d + 1),
                Rhs::Rows(e, dd),
                g,
                dd,
                acc,
                &mut w.scratch,
            );
        }
        return;
    }
    // Output layer: dA of the last hidden layer = c ⊙ (E · Wᵀ) ⊙ act′.
    let (i_out, _) = net.dec[hidden];
    let pout = &ctx.pk.dec[hidden];
    {
        let db = sized(&mut w.db0, rows * i_out);
        gemm(
            rows,
            i_out,
            dd,
            Lhs::Rows(e, dd),
            Rhs::Packed(&pout.bwd),
            db,
            i_out,
            false,
            &mut w.scratch,
        );
        let h = &mut w.dec_h[hidden - 1];
        kernels::activation_grad(
            db,
            i_out,
            h,
            i_out + 1,
            rows,
            i_out,
            net.act,
            Some(&w.c[..rows]),
        );
        if dec_tr {
            let c = if split { &w.cdec } else { &w.c };
            kernels::scale_rows(h, i_out + 1, rows, i_out, &c[..rows]);
            let g = &mut w.grad[ctx.off.dec[hidden]..];
            gemm(
                i_out + 1,
                dd,
                rows,
                Lhs::Cols(h, i_out + 1),
                Rhs::Rows(e, dd),
                g,
                dd,
                acc,
                &mut w.scratch,
            );
        }
    }
    // Hidden layers, last to first; dA of layer l is in db0.
    for l in (0..hidden).rev() {
        let (i, o) = net.dec[l];
        let p = &ctx.pk.dec[l];
        let (input, ld): (&[f32], usize) = if l == 0 {
            (&w.z, d + 1)
        } else {
            (&w.dec_h[l - 1], i + 1)
        };
        let da = &w.db0[..rows * o];
        if dec_tr {
            let g = &mut w.grad[ctx.off.dec[l]..];
            let da_dec: &[f32] = if split {
                let das = sized(&mut w.das, rows * o);
                for ((dst, src), &r) in das
                    .chunks_exact_mut(o)
                    .zip(da.chunks_exact(o))
                    .zip(&w.ratio)
                {
                    dst.iter_mut().zip(src).for_each(|(a, &b)| *a = b * r);
                }
                das
            } else {
                da
            };
            gemm(
                i + 1,
                o,
                rows,
                Lhs::Cols(input, ld),
                Rhs::Rows(da_dec, o),
                g,
                o,
                acc,
                &mut w.scratch,
            );
        }
        if l > 0 {
            let next = sized(&mut w.db1, rows * i);
            gemm(
                rows,
                i,
                o,
                Lhs::Rows(da, o),
                Rhs::Packed(&p.bwd),
                next,
                i,
                false,
                &mut w.scratch,
            );
            kernels::activation_grad(next, i, input, ld, rows, i, net.act, None);
            std::mem::swap(&mut w.db0, &mut w.db1);
        } else if enc_tr {
            let dz = sized(&mut w.dz, rows * d);
            gemm(
                rows,
                d,
                o,
                Lhs::Rows(da, o),
                Rhs::Packed(&p.bwd),
                dz,
                d,
                false,
                &mut w.scratch,
            );
        }
    }
}

/// Cotangents of the batch objective with respect to μ and ln σ, accumulated over the chunk's
/// samples (as crate::objective::encoder_cotangents, in `f64`).
fn encoder_cotangents(ctx: &Ctx<'_>, w: &mut LaneWork, e0: usize, start: usize, rows: usize) {
    let obj = ctx.obj;
    let (d, k) = (ctx.net.d, obj.samples());
    let reparam = obj.estimator == Estimator::Reparam;
    for r in 0..rows {
        let li = start + r / k;
        let er = (e0 + li) * k + r % k;
        let e = &ctx.eps[er * d..(er + 1) * d];
        let c = w.cf[r];
        let wt = w.wt[r];
        for (l, &el) in e.iter().enumerate() {
            let ev = el as f64;
            let s = w.sigma[li * d + l] as f64;
            let mut g = w.dz[r * d + l] as f64;
            if !obj.analytic_kl {
                // The prior's term of the surrogate: ∂(c log p(z))/∂z, −c z under N(0, I).
                match &ctx.pk.mix {
                    None => g -= c * w.z[r * (d + 1) + l] as f64,
                    Some(_) => g += c * w.gz[r * d + l],
                }
            }
            let g = match obj.estimator {
                Estimator::Reparam => g,
                Estimator::Dreg => wt * (g + c * ev / s),
            };
            w.g_mu[li * d + l] += g;
            w.g_ls[li * d + l] += g * ev * s;
            if reparam && !obj.analytic_kl {
                w.g_ls[li * d + l] += c;
            }
        }
    }
}

/// Backward through the encoder from the cotangents of μ and ln σ.
fn encoder_backward(ctx: &Ctx<'_>, w: &mut LaneWork, ne: usize) {
    let net = ctx.net;
    let (dd, d, hl) = (net.dd, net.d, net.hl);
    let n = ctx.n as f64;
    let genc = sized(&mut w.genc, ne * 2 * d);
    for r in 0..ne {
        for j in 0..d {
            let idx = r * d + j;
            let (mut gm, mut gl) = (w.g_mu[idx], w.g_ls[idx]);
            if ctx.obj.analytic_kl {
                // −KL/n with KL = Σ ½(μ² + σ² − 1) − ln σ.
                let (m, s) = (w.mu[idx] as f64, w.sigma[idx] as f64);
                gm -= m / n;
                gl -= (s * s - 1.0) / n;
            }
            let gs = match net.pstd {
                PosteriorStd::Exp => gl,
                PosteriorStd::Softplus => {
                    // ln σ = ln softplus(s): d ln σ/ds = sigmoid(s) / softplus(s).
                    let s = w.heads[r * 2 * d + d + j] as f64;
                    let sp = s.max(0.0) + (-s.abs()).exp().ln_1p();
                    gl * (1.0 / (1.0 + (-s).exp())) / sp
                }
            };
            genc[r * 2 * d + j] = gm as f32;
            genc[r * 2 * d + d + j] = gs as f32;
        }
    }
    let genc = &w.genc[..ne * 2 * d];
    let (input, ld): (&[f32], usize) = match w.enc_h.last() {
        Some(h) => (h, hl + 1),
        None => (&w.xin, dd + 1),
    };
    let off = ctx.off;
    gemm(
        hl + 1,
        d,
        ne,
        Lhs::Cols(input, ld),
        Rhs::Rows(genc, 2 * d),
        &mut w.grad[off.mean..],
        d,
        false,
        &mut w.scratch,
    );
    gemm(
        hl + 1,
        d,
        ne,
        Lhs::Cols(input, ld),
        Rhs::Rows(&genc[d..], 2 * d),
        &mut w.grad[off.std..],
        d,
        false,
        &mut w.scratch,
    );
    let layers = net.enc.len();
    if layers == 0 {
        return;
    }
    {
        let db = sized(&mut w.eb0, ne * hl);
        gemm(
            ne,
            hl,
            2 * d,
            Lhs::Rows(genc, 2 * d),
            Rhs::Packed(&ctx.pk.head_bwd),
            db,
            hl,
            false,
            &mut w.scratch,
        );
        kernels::activation_grad(db, hl, &w.enc_h[layers - 1], hl + 1, ne, hl, net.act, None);
    }
    for l in (0..layers).rev() {
        let (i, o) = net.enc[l];
        let (input, ld): (&[f32], usize) = if l == 0 {
            (&w.xin, dd + 1)
        } else {
            (&w.enc_h[l - 1], i + 1)
        };
        let da = &w.eb0[..ne * o];
        gemm(
            i + 1,
            o,
            ne,
            Lhs::Cols(input, ld),
            Rhs::Rows(da, o),
            &mut w.grad[off.enc[l]..],
            o,
            false,
            &mut w.scratch,
        );
        if l > 0 {
            let next = sized(&mut w.eb1, ne * i);
            gemm(
                ne,
                i,
                o,
                Lhs::Rows(da, o),
                Rhs::Packed(&ctx.pk.enc[l].bwd),
                next,
                i,
                false,
                &mut w.scratch,
            );
            kernels::activation_grad(next, i, input, ld, ne, i, net.act, None);
            std::mem::swap(&mut w.eb0, &mut w.eb1);
        }
    }
}
