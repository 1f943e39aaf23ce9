//! Evaluation of a trained VAE by importance sampling (Burda, Grosse & Salakhutdinov 2016, §5):
//! the test log-likelihood estimate L̂_k = logsumexp_i log w_i − log k with k = 5000 and the ELBO
//! decomposition. Summaries of its output (the L_k curve, active units, PCA) are in `analysis.rs`.
//!
//! [`Evaluator`] is a no-tape `f32` inference path built for large k. One image at k = 5000 is
//! the decoder on a 5000 × d batch, so the work is GEMM-bound; this module therefore
//!
//! * runs images in parallel with rayon, each image on one thread with buffers reused across
//!   chunks (no allocation in the sample loop);
//! * multiplies with a register-blocked AVX2+FMA kernel on weights packed once (`packed`; the
//!   `gemm` crate that dfdx uses is the fallback on CPUs without those features);
//! * evaluates the samples of an image in chunks of [`Evaluator::with_chunk`] rows, so memory is
//!   bounded (about chunk × 2 × widest layer × 4 bytes per thread) whatever k is;
//! * replaces scalar libm `exp`/`log1p`/`tanh` by branch-free polynomial versions that the
//!   compiler vectorizes (compiled for AVX2+FMA when the CPU has it, detected at run time),
//!   accurate to a few units in the last place of `f32`;
//! * accumulates the log-sum-exp per sample with a running maximum, in `f64`;
//! * evaluates a mixture prior with many components (the exact aggregate posterior) as one
//!   more `f32` matrix product per chunk, centred on the image's posterior mean ([`MixtureF32`];
//!   within ~10⁻⁴ nats of the `f64` density, K × 2d × 4 bytes per thread).
//!
//! Determinism: the noise of image i comes from `stream_rng(seed, first_stream + i)` and is
//! drawn in sample order, and every output of a matrix product is one sequential sum, so results
//! do not depend on the number of threads nor on the chunk size (with the `gemm` fallback a
//! chunk is never a single row, which would take its matrix-vector path). The noise of image i
//! is exactly the noise [`crate::log_weights`] draws for that image alone from the same
//! generator, which is how the tests check this path against the generic one.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::bounds::analytic_kl;
use crate::config::{Activation, Likelihood};
use crate::error::{NnError, Result, check_len, checked_product};
use crate::kernels::{self, gemm::Panels};
use crate::model::{Posterior, Vae, check_data};
use crate::named::NamedTensor;
use crate::prior::Prior;
use crate::real::LN_2PI;
use crate::stack_eval::{Scratch, StackEval};
use crate::stream_rng;

/// Default number of sample rows per chunk (keeps a chunk's activations in the L2 cache).
const DEFAULT_CHUNK: usize = 256;
/// Mixture priors with more components than this take the `f32` GEMM path ([`MixtureF32`]).
const FAST_MIXTURE_MIN: usize = 64;
/// Mixture components per block of that path (a multiple of the kernel's 16 columns).
const COMPONENT_BLOCK: usize = 1024;

/// Options of one [`Evaluator::estimate`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleOptions {
    /// Importance samples per image (≥ 1).
    pub k: usize,
    /// Seed of the noise streams.
    pub seed: u64,
    /// Stream of the first image (image i uses `stream_rng(seed, first_stream + i)`), so that a
    /// data set evaluated in batches gets the same noise as in one call.
    pub first_stream: u64,
    /// Return every image's k log-weights (for the L_k curve) in [`ImageEstimate::log_weights`].
    pub keep_log_weights: bool,
}

/// What [`Evaluator::estimate`] returns for one image (nats).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageEstimate {
    /// L̂_k = logsumexp_i log w_i − log k, a stochastic lower bound on log p(x); the test NLL is
    /// its negative.
    pub bound: f64,
    /// ELBO estimate `recon − kl`.
    pub elbo: f64,
    /// E_q log p(x|z), the mean of log p(x|z_i) over the k samples.
    pub recon: f64,
    /// KL(q(z|x) ‖ p(z)): analytic for the standard-normal prior, otherwise the mean of
    /// log q(z_i|x) − log p(z_i) over the k samples.
    pub kl: f64,
    /// The k log-weights in sample order if requested, else empty.
    pub log_weights: Vec<f64>,
}

/// A dense layer `y = x · W + b` with `W` row-major `[inputs, outputs]`.
#[derive(Clone, Debug)]
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
    outputs: usize,
    /// `w` packed for the AVX2+FMA kernel, when the CPU has those features.
    packed: Option<Panels>,
}

impl Dense {
    /// `dst (m × outputs) = src (m × inputs) · W`.
    fn multiply(&self, dst: &mut [f32], src: &[f32], m: usize) {
        match &self.packed {
            Some(p) => p.multiply(dst, src, m),
            None => matmul(dst, src, &self.w, m, self.inputs, self.outputs),
        }
    }
}

/// The observation model, prepared for the row kernels.
#[derive(Clone, Debug)]
enum Lik {
    Bernoulli,
    /// Σ_j c_j (μ_j − x_j)² + constant, with c_j = −½ σ_j⁻² and constant = −Σ ln σ_j − (D/2) ln 2π.
    Gaussian {
        coef: Vec<f32>,
        constant: f64,
    },
}

/// Importance-sampling evaluation of one model under one prior (see the module documentation).
#[derive(Clone)]
pub struct Evaluator {
    vae: Vae<f32>,
    /// The prior; a VampPrior is replaced by the equal-weight mixture of its encoded
    /// pseudo-inputs (the same density, encoded once instead of at every call).
    prior: Prior<f32>,
    /// A large mixture prior, prepared for the `f32` GEMM path.
    mixture: Option<MixtureF32>,
    layers: Vec<Dense>,
    activation: Activation,
    likelihood: Lik,
    chunk: usize,
    /// The layers above the first, for a model with several stochastic layers.
    stack: Option<StackEval>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("vae", &self.vae)
            .field("prior", &self.prior.kind())
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

impl Evaluator {
    /// Prepares `vae` and `prior` for evaluation (copies the decoder's parameters).
    pub fn new(vae: &Vae<f32>, prior: &Prior<f32>) -> Result<Self> {
        prior.check_compatible(vae)?;
        let cfg = vae.config();
        let tensors = vae.named_tensors();
        let take = |name: &str| -> Result<&NamedTensor<f32>> {
            tensors
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| NnError::MissingTensor {
                    name: name.to_string(),
                    expected: vec![],
                })
        };
        let dense = |prefix: &str| -> Result<Dense> {
            let w = take(&format!("{prefix}.weight"))?;
            let b = take(&format!("{prefix}.bias"))?;
            Ok(Dense {
                w: w.data.clone(),
                b: b.data.clone(),
                inputs: w.shape[0],
                outputs: w.shape[1],
                packed: Panels::new(&w.data, w.shape[0], w.shape[1]),
            })
        };
        let mut layers = Vec::with_capacity(cfg.decoder_hidden.len() + 1);
        for i in 0..cfg.decoder_hidden.len() {
            layers.push(dense(&format!("decoder.{i}"))?);
        }
        layers.push(dense("decoder.out")?);
        let dd = cfg.input_dim;
        let likelihood = match cfg.likelihood {
            Likelihood::Bernoulli => Lik::Bernoulli,
            Likelihood::Gaussian { learned: true, .. } => {
                let ls = &take("decoder.log_std")?.data;
                Lik::Gaussian {
                    coef: ls.iter().map(|l| (l * -2.0).exp() * -0.5).collect(),
                    constant: -ls.iter().map(|&l| l as f64).sum::<f64>() - 0.5 * LN_2PI * dd as f64,
                }
            }
            Likelihood::Gaussian { std, .. } => {
                let s = std as f64;
                Lik::Gaussian {
                    coef: vec![(-0.5 / (s * s)) as f32; dd],
                    constant: -(dd as f64) * (s.ln() + 0.5 * LN_2PI),
                }
            }
        };
        let prior = match prior {
            Prior::Vamp(v) => {
                let k = v.components();
                let (mean, log_std) = vae.encode_values(&v.pseudo_inputs(), k)?;
                Prior::mixture(k, cfg.latent_dim, vec![0.0; k], mean, log_std)?
            }
            other => other.clone(),
        };
        let mixture = match &prior {
            Prior::Mixture(m) if m.components() > FAST_MIXTURE_MIN => {
                Some(MixtureF32::new(&m.logits(), &m.means(), &m.log_stds()))
            }
            _ => None,
        };
        Ok(Self {
            vae: vae.clone(),
            prior,
            mixture,
            layers,
            activation: cfg.activation,
            likelihood,
            chunk: DEFAULT_CHUNK,
            stack: StackEval::new(vae),
        })
    }

    /// Sets the number of sample rows evaluated at once (at least 2; results do not depend on
    /// it). Memory per thread is about `rows × (2 · widest layer + 2 · latent) × 4` bytes.
    pub fn with_chunk(mut self, rows: usize) -> Self {
        self.chunk = rows.max(2);
        self
    }

    /// The model.
    pub fn vae(&self) -> &Vae<f32> {
        &self.vae
    }

    /// The posterior q(z|x) of the rows of `x` (the model's encoder; batch-size independent up
    /// to the backend's rounding, so encode a data set once and slice it).
    pub fn encode(&self, x: &[f32]) -> Result<Posterior<f32>> {
        self.vae.encode(x)
    }

    /// Estimates L_k, the ELBO, its reconstruction term and the KL for every row of `x`
    /// (`post.rows × input_dim`, with `post` = [`Evaluator::encode`] of those rows), images in
    /// parallel.
    pub fn estimate(
        &self,
        x: &[f32],
        post: &Posterior<f32>,
        opts: &SampleOptions,
    ) -> Result<Vec<ImageEstimate>> {
        let cfg = self.vae.config();
        let (n, d, dd) = (post.rows, cfg.latent_dim, cfg.input_dim);
        check_data(cfg, x, n)?;
        if post.dim != d {
            return Err(NnError::InvalidArgument {
                what: "post".into(),
                reason: format!(
                    "posterior dimension {} differs from the model's latent_dim {d}",
                    post.dim
                ),
            });
        }
        let nd = checked_product("post", &[n, d])?;
        for (name, v) in [
            ("post.mean", &post.mean),
            ("post.std", &post.std),
            ("post.log_std", &post.log_std),
        ] {
            check_len(|| format!("{name} (rows={n} × dim={d})"), nd, v.len())?;
        }
        if opts.k == 0 {
            return Err(NnError::InvalidArgument {
                what: "k".into(),
                reason: "the number of importance samples must be at least 1".into(),
            });
        }
        if opts.keep_log_weights {
            checked_product("log_weights", &[n, opts.k])?;
        }
        let standard = matches!(self.prior, Prior::StandardNormal) && self.stack.is_none();
        let kl = if standard {
            analytic_kl(&post.mean, &post.log_std, d)
        } else {
            vec![0.0; n]
        };
        (0..n)
            .into_par_iter()
            .map_init(
                || Work::new(self),
                |ws, i| {
                    let _ftz = kernels::DenormalsAreZero::new();
                    let image = Image {
                        x: &x[i * dd..(i + 1) * dd],
                        mean: &post.mean[i * d..(i + 1) * d],
                        std: &post.std[i * d..(i + 1) * d],
                        sum_log_std: post.log_std[i * d..(i + 1) * d]
                            .iter()
                            .map(|&v| v as f64)
                            .sum(),
                    };
                    let mut rng = stream_rng(opts.seed, opts.first_stream.wrapping_add(i as u64));
                    let mut est = self.image(ws, &image, &mut rng, opts)?;
                    if standard {
                        est.kl = kl[i];
                        est.elbo = est.recon - est.kl;
                    }
                    Ok(est)
                },
            )
            .collect()
    }

    /// All k samples of one image, chunk by chunk.
    fn image<R: Rng + Clone>(
        &self,
        ws: &mut Work,
        image: &Image<'_>,
        rng: &mut R,
        opts: &SampleOptions,
    ) -> Result<ImageEstimate> {
        let k = opts.k;
        let center = match &self.stack {
            Some(st) => st.mean_chain(image.mean, &mut ws.stack),
            None => image.mean.to_vec(),
        };
        if let Some(mix) = &self.mixture {
            mix.prepare(&mut ws.mix, &center);
        }
        let mut lse = LogSumExp::default();
        let (mut sum_ll, mut sum_kl) = (0.0f64, 0.0f64);
        let mut kept = Vec::with_capacity(if opts.keep_log_weights { k } else { 0 });
        let mut done = 0;
        while done < k {
            let m = chunk_rows(k - done, self.chunk);
            self.chunk_terms(ws, image, &center, rng, m)?;
            for r in 0..m {
                let lw = ws.ll[r] + ws.lp[r] - ws.lq[r];
                lse.push(lw);
                sum_ll += ws.ll[r];
                sum_kl += ws.lq[r] - ws.lp[r];
                if opts.keep_log_weights {
                    kept.push(lw);
                }
            }
            done += m;
        }
        let recon = sum_ll / k as f64;
        let kl = sum_kl / k as f64;
        Ok(ImageEstimate {
            bound: lse.value() - (k as f64).ln(),
            elbo: recon - kl,
            recon,
            kl,
            log_weights: kept,
        })
    }

    /// log p(x|z), log p(z) and log q(z|x) of `m` fresh samples into `ws.ll`, `ws.lp`, `ws.lq`.
    fn chunk_terms<R: Rng>(
        &self,
        ws: &mut Work,
        image: &Image<'_>,
        center: &[f32],
        rng: &mut R,
        m: usize,
    ) -> Result<()> {
        let d1 = image.mean.len();
        let mut lp_cond = Vec::new();
        let top_draws;
        let z: &[f32] = match &self.stack {
            Some(st) => {
                let draws = st.draw(
                    image.mean,
                    image.std,
                    image.sum_log_std,
                    rng,
                    m,
                    &mut ws.stack,
                )?;
                ws.bufs[0][..m * d1].copy_from_slice(&draws.z1);
                ws.lq = draws.lq;
                lp_cond = draws.lp_cond;
                top_draws = draws.top;
                &top_draws
            }
            None => {
                let z = &mut ws.bufs[0][..m * d1];
                draw_z(image, rng, z, &mut ws.lq);
                z
            }
        };
        let d = center.len();
        let const_p = -0.5 * d as f64 * LN_2PI;
        ws.lp.clear();
        match (&self.prior, &self.mixture) {
            (_, Some(mix)) => mix.log_density(&mut ws.mix, z, center, m, &mut ws.lp),
            (Prior::StandardNormal, None) => {
                for row in z.chunks_exact(d) {
                    let sq: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
                    ws.lp.push(const_p - 0.5 * sq);
                }
            }
            (prior, None) => ws.lp = prior.log_density_unchecked(&self.vae, z, m)?,
        }
        for (p, c) in ws.lp.iter_mut().zip(&lp_cond) {
            *p += c;
        }
        // Decoder: hidden layers alternate between the two buffers; the output layer feeds the
        // likelihood kernel directly.
        ws.ll.clear();
        ws.ll.resize(m, 0.0);
        let last = self.layers.len() - 1;
        for (li, layer) in self.layers.iter().enumerate() {
            let (a, b) = ws.bufs.split_at_mut(1);
            let (src, dst) = if li % 2 == 0 {
                (&a[0], &mut b[0])
            } else {
                (&b[0], &mut a[0])
            };
            let src = &src[..m * layer.inputs];
            let dst = &mut dst[..m * layer.outputs];
            layer.multiply(dst, src, m);
            if li < last {
                kernels::bias_activation(dst, &layer.b, self.activation);
            } else {
                match &self.likelihood {
                    Lik::Bernoulli => kernels::bernoulli_rows(dst, &layer.b, image.x, &mut ws.ll),
                    Lik::Gaussian { coef, constant } => {
                        kernels::gaussian_rows(dst, &layer.b, image.x, coef, *constant, &mut ws.ll)
                    }
                }
            }
        }
        Ok(())
    }
}

/// One image's data and posterior.
struct Image<'a> {
    x: &'a [f32],
    mean: &'a [f32],
    std: &'a [f32],
    sum_log_std: f64,
}

/// Draws the next `z.len() / d` samples z = μ + σ ε of an image into `z` and their
/// log q(z|x) = −Σ ln σ − ½ Σ ε² − (d/2) ln 2π into `lq`, exactly as crate::bounds does (noise
/// drawn in f64 and rounded, sums in f64 in the same order).
fn draw_z<R: Rng>(image: &Image<'_>, rng: &mut R, z: &mut [f32], lq: &mut Vec<f64>) {
    let d = image.mean.len();
    let const_q = -image.sum_log_std - 0.5 * d as f64 * LN_2PI;
    lq.clear();
    for row in z.chunks_exact_mut(d) {
        let mut sq = 0.0f64;
        for ((zj, &mu), &sd) in row.iter_mut().zip(image.mean).zip(image.std) {
            let e: f64 = StandardNormal.sample(rng);
            let e = e as f32;
            sq += e as f64 * e as f64;
            *zj = mu + sd * e;
        }
        lq.push(const_q - 0.5 * sq);
    }
}

/// A mixture prior with many components (e.g. the exact aggregate posterior, K up to 60 000)
/// evaluated with the `f32` matrix kernel.
///
/// For image x with posterior mean μ, write a sample as z = μ + δ and a component's mean as
/// m_c = μ + a_c. Then log(π_c N(z; c)) = C_c − ½ Σ_j δ_j²/σ_cj² + Σ_j a_cj δ_j/σ_cj² with
/// C_c = log π_c − Σ_j ln σ_cj − (d/2) ln 2π − ½ Σ_j a_cj²/σ_cj² (in `f64`): one product of the
/// samples' `[δ², δ]` (m × 2d) with a per-image `[−½σ⁻², aσ⁻²]` (2d × K). Centring on the
/// image keeps the terms small for the components that matter (those near μ), so `f32` loses
/// ~10⁻⁵ nats where the uncentred expansion would lose ~10⁻². The log-sum-exp over components
/// runs block by block with a running maximum (`f32` exponentials, sums in `f64`).
#[derive(Clone, Debug)]
struct MixtureF32 {
    d: usize,
    /// log π_c − Σ_j ln σ_cj − (d/2) ln 2π.
    norm: Vec<f64>,
    /// σ_cj⁻², K × d.
    iv: Vec<f64>,
    /// m_cj, K × d.
    means: Vec<f64>,
}

/// Per-thread buffers of the mixture path.
#[derive(Default)]
struct MixWork {
    /// Per component block: the per-image matrix, packed or row-major, and the constants C_c.
    blocks: Vec<MixBlock>,
    /// `[δ², δ]` of a chunk (m × 2d).
    lhs: Vec<f32>,
    /// One block of exponents (m × COMPONENT_BLOCK).
    tile: Vec<f32>,
    max: Vec<f64>,
    sum: Vec<f64>,
}

#[derive(Default)]
struct MixBlock {
    /// 2d × cols, row-major (kept only without the packed kernel).
    w: Vec<f32>,
    packed: Option<Panels>,
    consts: Vec<f32>,
}

impl MixtureF32 {
    fn new(logits: &[f32], means: &[f32], log_stds: &[f32]) -> Self {
        let kk = logits.len();
        let d = means.len() / kk.max(1);
        let lse = lse_slice(&logits.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let norm = (0..kk)
            .map(|c| {
                let ls: f64 = log_stds[c * d..(c + 1) * d].iter().map(|&v| v as f64).sum();
                logits[c] as f64 - lse - ls - 0.5 * d as f64 * LN_2PI
            })
            .collect();
        Self {
            d,
            norm,
            iv: log_stds.iter().map(|&l| (-2.0 * l as f64).exp()).collect(),
            means: means.iter().map(|&v| v as f64).collect(),
        }
    }

    /// Builds the per-image matrix and constants for posterior mean `mu`.
    fn prepare(&self, w: &mut MixWork, mu: &[f32]) {
        let (d, kk) = (self.d, self.norm.len());
        let blocks = kk.div_ceil(COMPONENT_BLOCK);
        w.blocks.resize_with(blocks, MixBlock::default);
        let mut rows = Vec::new();
        for (b, block) in w.blocks.iter_mut().enumerate() {
            let c0 = b * COMPONENT_BLOCK;
            let cols = COMPONENT_BLOCK.min(kk - c0);
            rows.clear();
            rows.resize(2 * d * cols, 0.0f32);
            block.consts.clear();
            for c in 0..cols {
                let g = c0 + c;
                let mut quad = 0.0f64;
                for j in 0..d {
                    let iv = self.iv[g * d + j];
                    let a = self.means[g * d + j] - mu[j] as f64;
                    quad += iv * a * a;
                    rows[j * cols + c] = (-0.5 * iv) as f32;
                    rows[(d + j) * cols + c] = (iv * a) as f32;
                }
                block.consts.push((self.norm[g] - 0.5 * quad) as f32);
            }
            match &mut block.packed {
                Some(p) => p.repack(&rows, 2 * d, cols),
                None => match Panels::new(&rows, 2 * d, cols) {
                    Some(p) => block.packed = Some(p),
                    None => block.w.clone_from(&rows),
                },
            }
        }
    }

    /// log p(z) for the `m` rows of `z` (samples of the image `prepare` was called for) into
    /// `out`.
    fn log_density(&self, w: &mut MixWork, z: &[f32], mu: &[f32], m: usize, out: &mut Vec<f64>) {
        let d = self.d;
        w.lhs.clear();
        for row in z.chunks_exact(d) {
            let start = w.lhs.len();
            w.lhs.resize(start + 2 * d, 0.0);
            for j in 0..d {
                let delta = row[j] - mu[j];
                w.lhs[start + j] = delta * delta;
                w.lhs[start + d + j] = delta;
            }
        }
        w.max.clear();
        w.max.resize(m, f64::NEG_INFINITY);
        w.sum.clear();
        w.sum.resize(m, 0.0);
        w.tile.resize(m * COMPONENT_BLOCK, 0.0);
        for block in &w.blocks {
            let cols = block.consts.len();
            let tile = &mut w.tile[..m * cols];
            match &block.packed {
                Some(p) => p.multiply(tile, &w.lhs, m),
                None => matmul(tile, &w.lhs, &block.w, m, 2 * d, cols),
            }
            kernels::lse_block(tile, &block.consts, &mut w.max, &mut w.sum);
        }
        out.clear();
        out.extend(w.max.iter().zip(&w.sum).map(|(mx, s)| mx + s.ln()));
    }
}

/// Per-thread buffers, reused across chunks and images.
struct Work {
    bufs: [Vec<f32>; 2],
    mix: MixWork,
    stack: Scratch,
    ll: Vec<f64>,
    lp: Vec<f64>,
    lq: Vec<f64>,
}

impl Work {
    fn new(ev: &Evaluator) -> Self {
        let rows = ev.chunk + 1;
        let widest = ev
            .layers
            .iter()
            .map(|l| l.inputs.max(l.outputs))
            .max()
            .unwrap_or(0);
        Work {
            bufs: [vec![0.0; rows * widest], vec![0.0; rows * widest]],
            mix: MixWork::default(),
            stack: Scratch::default(),
            ll: Vec::with_capacity(rows),
            lp: Vec::with_capacity(rows),
            lq: Vec::with_capacity(rows),
        }
    }
}

/// Rows of the next chunk when `remaining` samples are left: at most `chunk`, except that a
/// single leftover row is merged into this chunk (gemm treats one-row products differently).
fn chunk_rows(remaining: usize, chunk: usize) -> usize {
    let m = chunk.min(remaining);
    if remaining - m == 1 { m + 1 } else { m }
}

/// `dst (m × n) = a (m × k) · b (k × n)`, all row-major, single-threaded (callers parallelize
/// over images).
pub(crate) fn matmul(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    // Sizes are fixed by the evaluator's own buffers.
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n);
    crate::real::matmul_strided(dst, a, (1, k), b, (1, n), m, k, n);
}

/// A log-sum-exp accumulated one value at a time with a running maximum (independent of how
/// the values are chunked), in `f64`.
#[derive(Clone, Copy, Debug)]
struct LogSumExp {
    max: f64,
    sum: f64,
    nan: bool,
}

impl Default for LogSumExp {
    fn default() -> Self {
        Self {
            max: f64::NEG_INFINITY,
            sum: 0.0,
            nan: false,
        }
    }
}

impl LogSumExp {
    fn push(&mut self, v: f64) {
        if v.is_nan() {
            self.nan = true;
        } else if v > self.max {
            self.sum = self.sum * (self.max - v).exp() + 1.0;
            self.max = v;
        } else if v > f64::NEG_INFINITY {
            self.sum += (v - self.max).exp();
        }
    }

    fn value(&self) -> f64 {
        if self.nan {
            f64::NAN
        } else if self.max == f64::NEG_INFINITY || self.max == f64::INFINITY {
            self.max
        } else {
            self.max + self.sum.ln()
        }
    }
}

/// Stable log Σ exp over a slice (NaN propagates).
pub(crate) fn lse_slice(v: &[f64]) -> f64 {
    let mut acc = LogSumExp::default();
    v.iter().for_each(|&x| acc.push(x));
    acc.value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, Likelihood};

    #[test]
    fn running_log_sum_exp_matches_the_two_pass_one() {
        let v = [-3.0, 10.0, f64::NEG_INFINITY, 9.5, -700.0, 11.0, 11.0];
        let two_pass = crate::lse::log_sum_exp(&v);
        assert!((lse_slice(&v) - two_pass).abs() < 1e-12);
        assert_eq!(lse_slice(&[f64::NEG_INFINITY; 3]), f64::NEG_INFINITY);
        assert!(lse_slice(&[1.0, f64::NAN]).is_nan());
    }

    #[test]
    fn single_leftover_rows_are_merged() {
        assert_eq!(chunk_rows(5000, 256), 256);
        assert_eq!(chunk_rows(257, 256), 257);
        assert_eq!(chunk_rows(258, 256), 256);
        assert_eq!(chunk_rows(1, 256), 1);
        assert_eq!(chunk_rows(3, 2), 3);
    }

    #[test]
    fn f32_mixture_density_matches_the_f64_one() {
        // 300 components of width 0.05–0.2 around points spread over [−3, 3]^d, samples near
        // an image's posterior mean.
        let (kk, d, m) = (300, 6, 50);
        let mut state = 7u64;
        let mut unif = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let means: Vec<f32> = (0..kk * d).map(|_| (6.0 * unif() - 3.0) as f32).collect();
        let log_stds: Vec<f32> = (0..kk * d)
            .map(|_| (0.05 + 0.15 * unif()).ln() as f32)
            .collect();
        let logits: Vec<f32> = (0..kk).map(|_| unif() as f32).collect();
        let mu: Vec<f32> = means[..d].iter().map(|v| v + 0.05).collect();
        let z: Vec<f32> = (0..m * d)
            .map(|i| mu[i % d] + (0.3 * unif() - 0.15) as f32)
            .collect();
        let prior = Prior::mixture(kk, d, logits.clone(), means.clone(), log_stds.clone()).unwrap();
        let cfg = crate::VaeConfig {
            input_dim: 3,
            encoder_hidden: vec![],
            latent_dim: d,
            decoder_hidden: vec![],
            activation: Activation::Tanh,
            likelihood: Likelihood::Bernoulli,
            posterior_std: crate::PosteriorStd::Exp,
            upper: Vec::new(),
        };
        let vae = Vae::<f32>::new(&cfg, 1).unwrap();
        let exact = prior.log_density(&vae, &z, m).unwrap();
        let mix = MixtureF32::new(&logits, &means, &log_stds);
        let mut w = MixWork::default();
        mix.prepare(&mut w, &mu);
        let mut got = Vec::new();
        mix.log_density(&mut w, &z, &mu, m, &mut got);
        let worst = got
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "largest |Δ log p(z)| = {worst:.2e}; {:?} vs {:?}",
            &got[..3],
            &exact[..3]
        );
        assert!(worst < 2e-5, "{worst}");
    }
}
