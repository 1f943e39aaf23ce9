//! The VAE: a Gaussian encoder q(z|x) = N(μ(x), diag σ(x)²) and a Bernoulli or Gaussian decoder
//! p(x|z), as in Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders";
//! optionally with further stochastic layers q(z_{l+1}|z_l), p(z_l|z_{l+1}) (their §5; the
//! objective and bounds of such models are in `stack.rs`).
//!
//! The forward functions are generic over the dfdx tape, so inference (no tape) and training
//! (recording tape) run the same code, and over the element type (`f32`/`f64`).

use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};

use crate::config::{
    Activation, Init, InitScheme, Likelihood, OutputBias, PosteriorStd, VaeConfig,
};
use crate::error::{NnError, Result, check_finite, check_len, checked_product};
use crate::named::{Lookup, NamedTensor};
use crate::param::{ParamMut, ParamRef, mat_from, vec_from};
use crate::real::{Dev, LN_2PI, Mat, Real, TapeOf, Vector};

/// Rows per chunk in the inference paths (bounds memory for large batches).
pub(crate) const CHUNK_ROWS: usize = 8192;

/// A dense layer `y = x · W + b` with `W` stored `[in, out]`.
#[derive(Clone)]
pub(crate) struct Linear<E: Real> {
    pub w: Mat<E>,
    pub b: Vector<E>,
}

impl<E: Real> Linear<E> {
    pub fn forward<T: TapeOf<E>>(&self, x: Mat<E, T>) -> Mat<E, T> {
        let n = x.shape().0;
        let o = self.b.shape().0;
        x.matmul(self.w.retaped::<T>())
            + self
                .b
                .retaped::<T>()
                .broadcast_like::<(usize, usize), Axis<0>>(&(n, o))
    }
}

/// softplus(x) = ln(1 + eˣ), via dfdx's stable BCE-with-logits against a zero target.
pub(crate) fn softplus<E: Real, T: TapeOf<E>>(x: Mat<E, T>) -> Mat<E, T> {
    let s = *x.shape();
    let zeros = x
        .device()
        .zeros_like(&())
        .broadcast_like::<(usize, usize), Axes2<0, 1>>(&s);
    x.bce_with_logits(zeros)
}

fn activate<E: Real, T: TapeOf<E>>(a: Activation, x: Mat<E, T>) -> Mat<E, T> {
    match a {
        Activation::Tanh => x.tanh(),
        Activation::Relu => x.relu(),
        Activation::Softplus => softplus(x),
    }
}

/// The encoder's output for a batch: row-major `rows × dim` arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct Posterior<E = f32> {
    /// Number of rows (data points).
    pub rows: usize,
    /// Latent dimension d.
    pub dim: usize,
    /// Posterior means μ(x).
    pub mean: Vec<E>,
    /// Posterior standard deviations σ(x) = exp(`log_std`).
    pub std: Vec<E>,
    /// ln σ(x) (exactly the encoder's head output for [`PosteriorStd::Exp`]).
    pub log_std: Vec<E>,
}

/// A variational autoencoder with run-time layer sizes.
///
/// Generic over the element type (default `f32`); `Vae::new(&cfg, seed)` infers it from use,
/// or write `Vae::<f32>::new`.
#[derive(Clone)]
pub struct Vae<E: Real = f32> {
    cfg: VaeConfig,
    enc: Vec<Linear<E>>,
    enc_mean: Linear<E>,
    enc_std: Linear<E>,
    dec: Vec<Linear<E>>,
    dec_out: Linear<E>,
    dec_log_std: Option<Vector<E>>,
    /// The stochastic layers above the first, bottom up (empty for one layer).
    pub(crate) upper: Vec<UpperNets<E>>,
}

/// A diagonal Gaussian conditional N(μ(h), diag exp(ls(h))²) on an MLP: `hidden`, then the
/// mean and log-std heads (q(z_{l+1}|z_l) or p(z_l|z_{l+1}); Burda et al. 2016, §5).
#[derive(Clone)]
pub(crate) struct GaussNet<E: Real> {
    pub hidden: Vec<Linear<E>>,
    pub mean: Linear<E>,
    pub log_std: Linear<E>,
}

/// The networks of one stochastic layer above the first: q(z_{l+1}|z_l) and p(z_l|z_{l+1}).
#[derive(Clone)]
pub(crate) struct UpperNets<E: Real> {
    pub enc: GaussNet<E>,
    pub dec: GaussNet<E>,
}

impl<E: Real> GaussNet<E> {
    /// `(mean, log_std)` of the rows of `h`. Tape invariant as for [`Vae::encode_t`]: the ops
    /// upstream of the heads are recorded on `log_std`'s tape.
    pub(crate) fn forward_t<T: TapeOf<E>>(
        &self,
        act: Activation,
        x: Mat<E, T>,
    ) -> (Mat<E, T>, Mat<E, T>) {
        let mut h = x;
        for l in &self.hidden {
            h = activate(act, l.forward(h));
        }
        let mean = self.mean.forward(h.with_empty_tape());
        (mean, self.log_std.forward(h))
    }

    /// A copy whose tensors are new (other ids than the parameters'), so that a tape through
    /// it records no gradient for the parameters: q's parameters stopped (DReG).
    pub(crate) fn stopped(&self) -> GaussNet<E> {
        let dev = Dev::<E>::default();
        let copy = |l: &Linear<E>| Linear {
            w: l.w.to_device(&dev),
            b: l.b.to_device(&dev),
        };
        GaussNet {
            hidden: self.hidden.iter().map(copy).collect(),
            mean: copy(&self.mean),
            log_std: copy(&self.log_std),
        }
    }

    fn linears(&self) -> impl Iterator<Item = &Linear<E>> {
        self.hidden.iter().chain([&self.mean, &self.log_std])
    }

    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear<E>> {
        self.hidden
            .iter_mut()
            .chain([&mut self.mean, &mut self.log_std])
    }
}

impl<E: Real> std::fmt::Debug for Vae<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vae")
            .field("precision", &E::NAME)
            .field("config", &self.cfg)
            .field("parameters", &self.cfg.parameter_count())
            .finish()
    }
}

impl<E: Real> Vae<E> {
    /// A freshly initialised model with [`Init::glorot`]: Glorot-uniform weights
    /// (U(±√(6/(in+out)))), zero biases, `decoder.log_std` = ln(std); all drawn from a ChaCha8
    /// stream seeded with `seed`.
    pub fn new(cfg: &VaeConfig, seed: u64) -> Result<Self> {
        Self::with_init(cfg, &Init::glorot(), seed)
    }

    /// A freshly initialised model. Every linear layer is drawn by `init.scheme` in canonical
    /// parameter order from a ChaCha8 stream seeded with `seed` (weights, then the layer's bias);
    /// then every encoder σ head (the first layer's and each `encoder.z{l}.log_std`) is scaled
    /// by `init.std_head_scale` and the decoder's output
    /// bias replaced by `init.output_bias`'s logits, if any. `decoder.log_std` (learned
    /// Gaussian σ) starts at ln(std). Errors if `cfg` or `init` is invalid
    /// ([`VaeConfig::validate`], [`Init::validate`]).
    pub fn with_init(cfg: &VaeConfig, init: &Init, seed: u64) -> Result<Self> {
        cfg.validate()?;
        init.validate(cfg)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let std_head = cfg.std_head_name();
        let mut fan_in = 1usize;
        let tensors = cfg
            .param_specs()
            .into_iter()
            .map(|spec| {
                let n: usize = spec.shape.iter().product();
                let layer = spec
                    .name
                    .rsplit_once('.')
                    .map_or(spec.name.as_str(), |(l, _)| l);
                let scale = if layer == std_head
                    || (layer.starts_with("encoder.z") && layer.ends_with(".log_std"))
                {
                    init.std_head_scale
                } else {
                    1.0
                };
                let uniform = |a: f64, rng: &mut ChaCha8Rng| -> Vec<E> {
                    let u = Uniform::new_inclusive(-a, a);
                    (0..n).map(|_| E::of_f64(scale * u.sample(rng))).collect()
                };
                let data: Vec<E> = if spec.name.ends_with(".weight") {
                    fan_in = spec.shape[0];
                    let a = match init.scheme {
                        InitScheme::Glorot => (6.0 / (spec.shape[0] + spec.shape[1]) as f64).sqrt(),
                        InitScheme::Pytorch => 1.0 / (fan_in as f64).sqrt(),
                    };
                    uniform(a, &mut rng)
                } else if spec.name == "decoder.log_std" {
                    let std = match cfg.likelihood {
                        Likelihood::Gaussian { std, .. } => std as f64,
                        Likelihood::Bernoulli => 1.0,
                    };
                    vec![E::of_f64(std.ln()); n]
                } else {
                    match (init.scheme, &init.output_bias) {
                        (_, OutputBias::Logits(l)) if spec.name == "decoder.out.bias" => {
                            l.values().iter().map(|&v| E::of_f32(v)).collect()
                        }
                        (InitScheme::Pytorch, _) => uniform(1.0 / (fan_in as f64).sqrt(), &mut rng),
                        (InitScheme::Glorot, _) => vec![E::zero(); n],
                    }
                };
                NamedTensor {
                    name: spec.name,
                    shape: spec.shape,
                    data,
                }
            })
            .collect::<Vec<_>>();
        Self::from_named_tensors(cfg, &tensors)
    }

    /// Builds a model from named tensors (see [`Vae::named_tensors`] for the names).
    ///
    /// The VAE owns the `encoder.` and `decoder.` namespaces: a tensor there that the
    /// configuration does not use, a missing tensor, a wrong shape or a non-finite value is an
    /// error naming the tensor. Tensors of other namespaces (`prior.`, `adam.`, ...) are ignored.
    pub fn from_named_tensors(cfg: &VaeConfig, tensors: &[NamedTensor<E>]) -> Result<Self> {
        cfg.validate()?;
        let mut lookup = Lookup::new(tensors, |n| {
            n.starts_with("encoder.") || n.starts_with("decoder.")
        })?;
        let mut take_linear = |prefix: &str, i: usize, o: usize| -> Result<Linear<E>> {
            let w = lookup.take(&format!("{prefix}.weight"), &[i, o])?.to_vec();
            let b = lookup.take(&format!("{prefix}.bias"), &[o])?.to_vec();
            Ok(Linear {
                w: mat_from(i, o, w)?,
                b: vec_from(b)?,
            })
        };
        let mut width = cfg.input_dim;
        let mut enc = Vec::with_capacity(cfg.encoder_hidden.len());
        for (i, &h) in cfg.encoder_hidden.iter().enumerate() {
            enc.push(take_linear(&format!("encoder.{i}"), width, h)?);
            width = h;
        }
        let enc_mean = take_linear("encoder.mean", width, cfg.latent_dim)?;
        let enc_std = take_linear(cfg.std_head_name(), width, cfg.latent_dim)?;
        let mut width = cfg.latent_dim;
        let mut dec = Vec::with_capacity(cfg.decoder_hidden.len());
        for (i, &h) in cfg.decoder_hidden.iter().enumerate() {
            dec.push(take_linear(&format!("decoder.{i}"), width, h)?);
            width = h;
        }
        let dec_out = take_linear("decoder.out", width, cfg.input_dim)?;
        let mut take_gauss = |prefix: &str, i: usize, hidden: &[usize], o: usize| {
            let mut width = i;
            let mut layers = Vec::with_capacity(hidden.len());
            for (j, &h) in hidden.iter().enumerate() {
                layers.push(take_linear(&format!("{prefix}.{j}"), width, h)?);
                width = h;
            }
            Ok::<_, NnError>(GaussNet {
                hidden: layers,
                mean: take_linear(&format!("{prefix}.mean"), width, o)?,
                log_std: take_linear(&format!("{prefix}.log_std"), width, o)?,
            })
        };
        let mut upper = Vec::with_capacity(cfg.upper.len());
        let mut below = cfg.latent_dim;
        for (l, layer) in cfg.upper.iter().enumerate() {
            let (lo, hi) = (l + 1, l + 2);
            let enc = take_gauss(
                &format!("encoder.z{hi}"),
                below,
                &layer.encoder_hidden,
                layer.latent_dim,
            )?;
            let dec = take_gauss(
                &format!("decoder.z{lo}"),
                layer.latent_dim,
                &layer.decoder_hidden,
                below,
            )?;
            upper.push(UpperNets { enc, dec });
            below = layer.latent_dim;
        }
        let dec_log_std = match cfg.likelihood {
            Likelihood::Gaussian { learned: true, .. } => Some(vec_from(
                lookup.take("decoder.log_std", &[cfg.input_dim])?.to_vec(),
            )?),
            _ => None,
        };
        lookup.finish("not a parameter of this VAE configuration")?;
        Ok(Self {
            cfg: cfg.clone(),
            enc,
            enc_mean,
            enc_std,
            dec,
            dec_out,
            dec_log_std,
            upper,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// All parameters in canonical order: `encoder.{i}.weight|bias` (hidden layers),
    /// `encoder.mean.*`, `encoder.log_std.*` (or `encoder.std_pre.*` for softplus σ),
    /// `decoder.{i}.*`, `decoder.out.*`; then for each stochastic layer above the first
    /// (z_{l+1}, l ≥ 1) `encoder.z{l+1}.{i}.*`, `encoder.z{l+1}.mean.*`,
    /// `encoder.z{l+1}.log_std.*`, `decoder.z{l}.{i}.*`, `decoder.z{l}.mean.*`,
    /// `decoder.z{l}.log_std.*`; and `decoder.log_std` for a learned Gaussian std.
    pub fn named_tensors(&self) -> Vec<NamedTensor<E>> {
        self.params()
            .iter()
            .map(|(name, p)| p.named(name))
            .collect()
    }

    /// The same model in another precision (`f32` → `f64` is exact; `f64` → `f32` rounds, and
    /// fails only if a value overflows `f32`).
    pub fn cast<F: Real>(&self) -> Result<Vae<F>> {
        let tensors: Vec<NamedTensor<F>> = self.named_tensors().iter().map(|t| t.cast()).collect();
        Vae::from_named_tensors(&self.cfg, &tensors)
    }

    /// The posterior q(z|x) for the rows of `x` (row-major `rows × input_dim`).
    pub fn encode(&self, x: &[E]) -> Result<Posterior<E>> {
        let d_in = self.cfg.input_dim;
        if x.is_empty() || !x.len().is_multiple_of(d_in) {
            return Err(NnError::InvalidArgument {
                what: "x".into(),
                reason: format!(
                    "{} values is not a positive multiple of input_dim = {d_in}",
                    x.len()
                ),
            });
        }
        check_finite("x", x)?;
        let rows = x.len() / d_in;
        let (mean, log_std) = self.encode_values(x, rows)?;
        let std = log_std.iter().map(|v| v.exp()).collect();
        Ok(Posterior {
            rows,
            dim: self.cfg.latent_dim,
            mean,
            std,
            log_std,
        })
    }

    /// The decoder's mean for the rows of `z` (row-major `rows × latent_dim`): Bernoulli
    /// probabilities sigmoid(logits), or the Gaussian mean.
    pub fn decode_mean(&self, z: &[E]) -> Result<Vec<E>> {
        let d = self.cfg.latent_dim;
        if z.is_empty() || !z.len().is_multiple_of(d) {
            return Err(NnError::InvalidArgument {
                what: "z".into(),
                reason: format!(
                    "{} values is not a positive multiple of latent_dim = {d}",
                    z.len()
                ),
            });
        }
        check_finite("z", z)?;
        let rows = z.len() / d;
        let mut out = Vec::with_capacity(rows * self.cfg.input_dim);
        for start in (0..rows).step_by(CHUNK_ROWS) {
            let m = CHUNK_ROWS.min(rows - start);
            let zt = mat_from(m, d, z[start * d..(start + m) * d].to_vec())?;
            let o = self.decode_t(zt);
            let o = match self.cfg.likelihood {
                Likelihood::Bernoulli => o.sigmoid(),
                Likelihood::Gaussian { .. } => o,
            };
            out.extend(o.as_vec());
        }
        Ok(out)
    }

    /// The decoder's mean for draws of the top stochastic layer (row-major `rows × d`, d =
    /// [`VaeConfig::prior_dim`]): the means of p(z_l|z_{l+1}) from the top down to z₁, then
    /// [`Vae::decode_mean`]. For one stochastic layer this is `decode_mean`.
    pub fn decode_top_mean(&self, z_top: &[E]) -> Result<Vec<E>> {
        if self.upper.is_empty() {
            return self.decode_mean(z_top);
        }
        let d = self.cfg.prior_dim();
        let rows = check_rows("z_top", z_top, d, "the top layer's dimension")?;
        let mut z1 = Vec::with_capacity(rows * self.cfg.latent_dim);
        for start in (0..rows).step_by(CHUNK_ROWS) {
            let m = CHUNK_ROWS.min(rows - start);
            let mut z = mat_from(m, d, z_top[start * d..(start + m) * d].to_vec())?;
            for u in self.upper.iter().rev() {
                z = u.dec.forward_t(self.cfg.activation, z).0;
            }
            z1.extend(z.as_vec());
        }
        self.decode_mean(&z1)
    }

    /// The posterior means E_q[z_l|x] of every stochastic layer for the rows of `x`: per layer,
    /// `rows × d_l` row-major. Layer 1 is exact (μ₁(x)); layer l+1 averages μ_{l+1}(z_l) over
    /// `samples` ancestral draws of the layers below (row i's noise from
    /// `stream_rng(seed, i)`, ε₁ then ε₂ … per draw). Active units per layer (Burda et al.
    /// 2016, §5: Cov_x E_q(u_j) > 10⁻²) are the [`latent_variances`](crate::latent_variances)
    /// of each.
    pub fn posterior_means(&self, x: &[E], samples: usize, seed: u64) -> Result<Vec<Vec<E>>> {
        if samples == 0 {
            return Err(NnError::InvalidArgument {
                what: "samples".into(),
                reason: "at least one ancestral draw per row is needed".into(),
            });
        }
        let rows = check_rows("x", x, self.cfg.input_dim, "input_dim")?;
        let mut out: Vec<Vec<E>> = self.cfg.latent_dims().iter().map(|_| Vec::new()).collect();
        let per_chunk = (CHUNK_ROWS / samples).max(1);
        for start in (0..rows).step_by(per_chunk) {
            let m = per_chunk.min(rows - start);
            let chunk = self.ancestral(x, start, m, samples, seed)?;
            out[0].extend(chunk.mean1);
            for (l, (mean, _)) in chunk.upper.iter().enumerate() {
                let d = self.cfg.upper[l].latent_dim;
                for i in 0..m {
                    for j in 0..d {
                        let s: f64 = (0..samples)
                            .map(|s| mean[(i * samples + s) * d + j].as_f64())
                            .sum();
                        out[l + 1].push(E::of_f64(s / samples as f64));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The posterior of the top stochastic layer, on which the prior lives, for the rows of
    /// `x`: [`Vae::encode`] for one layer; with several, q(z_L|z_{L−1}⁽ⁱ⁾) at one ancestral
    /// draw z_{<L}⁽ⁱ⁾ ~ q(z_{<L}|x_i) per row (row i's noise from `stream_rng(seed, i)`), so
    /// that the equal-weight mixture of the rows' Gaussians is an unbiased one-draw estimate
    /// of the top layer's aggregate posterior (what
    /// [`Prior::aggregate_posterior`](crate::Prior::aggregate_posterior) builds, with a fixed
    /// seed).
    pub fn top_posterior(&self, x: &[E], seed: u64) -> Result<Posterior<E>> {
        if self.upper.is_empty() {
            return self.encode(x);
        }
        let (rows, mean, log_std) = self.top_posterior_values(x, seed)?;
        let std = log_std.iter().map(|v| v.exp()).collect();
        Ok(Posterior {
            rows,
            dim: self.cfg.prior_dim(),
            mean,
            std,
            log_std,
        })
    }

    /// For the rows of `x`: q(z_L|z_{L−1}) at one ancestral draw of the layers below (row i's
    /// noise from `stream_rng(seed, i)`): `(rows, means, log_stds)`, each `rows × d_L`.
    fn top_posterior_values(&self, x: &[E], seed: u64) -> Result<(usize, Vec<E>, Vec<E>)> {
        let rows = check_rows("x", x, self.cfg.input_dim, "input_dim")?;
        let (mut mean, mut log_std) = (Vec::new(), Vec::new());
        for start in (0..rows).step_by(CHUNK_ROWS) {
            let m = CHUNK_ROWS.min(rows - start);
            let mut chunk = self.ancestral(x, start, m, 1, seed)?;
            match chunk.upper.pop() {
                Some((mu, ls)) => {
                    mean.extend(mu);
                    log_std.extend(ls);
                }
                None => {
                    mean.extend(chunk.mean1);
                    log_std.extend(chunk.log_std1);
                }
            }
        }
        Ok((rows, mean, log_std))
    }

    /// Rows `start..start + m` of `x`, `samples` ancestral draws each (see
    /// [`Vae::posterior_means`]).
    fn ancestral(
        &self,
        x: &[E],
        start: usize,
        m: usize,
        samples: usize,
        seed: u64,
    ) -> Result<Ancestral<E>> {
        let (d_in, d1) = (self.cfg.input_dim, self.cfg.latent_dim);
        let nd = self.cfg.noise_dim();
        let (mean1, log_std1) = self.encode_values(&x[start * d_in..(start + m) * d_in], m)?;
        let mut noise = Vec::with_capacity(m * samples * nd);
        for i in 0..m {
            let mut rng = crate::stream_rng(seed, (start + i) as u64);
            noise.extend(standard_normal_noise::<E, _>(&mut rng, samples * nd));
        }
        let rows = m * samples;
        let mut z = Vec::with_capacity(rows * d1);
        for r in 0..rows {
            let i = r / samples;
            for j in 0..d1 {
                let e = noise[r * nd + j];
                z.push(mean1[i * d1 + j] + log_std1[i * d1 + j].exp() * e);
            }
        }
        let mut upper = Vec::with_capacity(self.upper.len());
        let (mut below, mut offset) = (d1, d1);
        for (l, u) in self.upper.iter().enumerate() {
            let d = self.cfg.upper[l].latent_dim;
            let (mu, ls) = u
                .enc
                .forward_t(self.cfg.activation, mat_from(rows, below, z)?);
            let (mu, ls) = (mu.as_vec(), ls.as_vec());
            z = (0..rows * d)
                .map(|t| {
                    let (r, j) = (t / d, t % d);
                    mu[t] + ls[t].exp() * noise[r * nd + offset + j]
                })
                .collect();
            upper.push((mu, ls));
            below = d;
            offset += d;
        }
        Ok(Ancestral {
            mean1,
            log_std1,
            upper,
        })
    }

    /// Encoder means and log-stds for `rows` rows (inference, chunked).
    pub(crate) fn encode_values(&self, x: &[E], rows: usize) -> Result<(Vec<E>, Vec<E>)> {
        let (d_in, d) = (self.cfg.input_dim, self.cfg.latent_dim);
        let mut mean = Vec::with_capacity(rows * d);
        let mut log_std = Vec::with_capacity(rows * d);
        for start in (0..rows).step_by(CHUNK_ROWS) {
            let m = CHUNK_ROWS.min(rows - start);
            let xt = mat_from(m, d_in, x[start * d_in..(start + m) * d_in].to_vec())?;
            let (mu, ls) = self.encode_t(xt);
            mean.extend(mu.as_vec());
            log_std.extend(ls.as_vec());
        }
        Ok((mean, log_std))
    }

    /// Encoder forward: `(mean, log_std)`, each `rows × latent_dim`.
    ///
    /// Tape invariant: the ops upstream of the heads are recorded on `log_std`'s tape, so a
    /// caller that differentiates must include `log_std` in its loss (every caller does).
    pub(crate) fn encode_t<T: TapeOf<E>>(&self, x: Mat<E, T>) -> (Mat<E, T>, Mat<E, T>) {
        let mut h = x;
        for l in &self.enc {
            h = activate(self.cfg.activation, l.forward(h));
        }
        let mean = self.enc_mean.forward(h.with_empty_tape());
        let s = self.enc_std.forward(h);
        let log_std = match self.cfg.posterior_std {
            PosteriorStd::Exp => s,
            PosteriorStd::Softplus => softplus(s).ln(),
        };
        (mean, log_std)
    }

    /// Decoder forward: logits (Bernoulli) or means (Gaussian), `rows × input_dim`.
    pub(crate) fn decode_t<T: TapeOf<E>>(&self, z: Mat<E, T>) -> Mat<E, T> {
        let mut h = z;
        for l in &self.dec {
            h = activate(self.cfg.activation, l.forward(h));
        }
        self.dec_out.forward(h)
    }

    /// log p(x|z) per row of the decoder output `out` (`(n·k) × D`, rows ordered example-major:
    /// row `i·k + j` is sample `j` of example `i`), against `x` (`n × D`).
    pub(crate) fn log_likelihood_t<T: TapeOf<E>>(
        &self,
        out: Mat<E, T>,
        x: &Mat<E>,
        n: usize,
        k: usize,
    ) -> Vector<E, T> {
        let dd = self.cfg.input_dim;
        let shape3 = (n, k, dd);
        let out3 = out.reshape_like(&shape3);
        let xb = x
            .clone()
            .broadcast_like::<(usize, usize, usize), Axis<1>>(&shape3);
        let per_row = match (self.cfg.likelihood, &self.dec_log_std) {
            (Likelihood::Bernoulli, _) => out3
                .bce_with_logits(xb)
                .sum::<(usize, usize), Axis<2>>()
                .negate(),
            (Likelihood::Gaussian { learned: true, .. }, Some(ls)) => {
                let ls_b = ls
                    .retaped::<T>()
                    .broadcast_like::<(usize, usize, usize), Axes2<0, 1>>(&shape3);
                let inv_var = (ls_b.with_empty_tape() * E::of_f64(-2.0)).exp();
                ((out3 - xb).square() * inv_var * E::of_f64(-0.5) - ls_b)
                    .sum::<(usize, usize), Axis<2>>()
                    - E::of_f64(0.5 * LN_2PI * dd as f64)
            }
            (Likelihood::Gaussian { std, .. }, _) => {
                let std = std as f64;
                (out3 - xb).square().sum::<(usize, usize), Axis<2>>()
                    * E::of_f64(-0.5 / (std * std))
                    - E::of_f64(dd as f64 * (std.ln() + 0.5 * LN_2PI))
            }
        };
        per_row.reshape_like(&(n * k,))
    }

    /// The layers, for the fast training path: encoder hidden layers, the mean and σ heads,
    /// decoder layers (the output layer last) and the learned decoder log-std.
    pub(crate) fn layers(&self) -> Layers<'_, E> {
        Layers {
            enc: &self.enc,
            mean: &self.enc_mean,
            std: &self.enc_std,
            dec: self.dec.iter().chain([&self.dec_out]).collect(),
            log_std: self.dec_log_std.as_ref(),
        }
    }

    /// Parameters in canonical order with their names.
    pub(crate) fn params(&self) -> Vec<(String, ParamRef<'_, E>)> {
        let mut refs: Vec<ParamRef<'_, E>> = Vec::new();
        for l in self.enc.iter().chain([&self.enc_mean, &self.enc_std]) {
            refs.push(ParamRef::Mat(&l.w));
            refs.push(ParamRef::Vec(&l.b));
        }
        for l in self.dec.iter().chain([&self.dec_out]) {
            refs.push(ParamRef::Mat(&l.w));
            refs.push(ParamRef::Vec(&l.b));
        }
        for u in &self.upper {
            for l in u.enc.linears().chain(u.dec.linears()) {
                refs.push(ParamRef::Mat(&l.w));
                refs.push(ParamRef::Vec(&l.b));
            }
        }
        if let Some(ls) = &self.dec_log_std {
            refs.push(ParamRef::Vec(ls));
        }
        let names = self.cfg.param_specs().into_iter().map(|s| s.name);
        names.zip(refs).collect()
    }

    /// Mutable parameters in canonical order with their names.
    pub(crate) fn params_mut(&mut self) -> Vec<(String, ParamMut<'_, E>)> {
        let names: Vec<String> = self.cfg.param_specs().into_iter().map(|s| s.name).collect();
        let mut refs: Vec<ParamMut<'_, E>> = Vec::new();
        for l in self
            .enc
            .iter_mut()
            .chain([&mut self.enc_mean, &mut self.enc_std])
        {
            refs.push(ParamMut::Mat(&mut l.w));
            refs.push(ParamMut::Vec(&mut l.b));
        }
        for l in self.dec.iter_mut().chain([&mut self.dec_out]) {
            refs.push(ParamMut::Mat(&mut l.w));
            refs.push(ParamMut::Vec(&mut l.b));
        }
        for u in &mut self.upper {
            for l in u.enc.linears_mut().chain(u.dec.linears_mut()) {
                refs.push(ParamMut::Mat(&mut l.w));
                refs.push(ParamMut::Vec(&mut l.b));
            }
        }
        if let Some(ls) = &mut self.dec_log_std {
            refs.push(ParamMut::Vec(ls));
        }
        names.into_iter().zip(refs).collect()
    }
}

/// One chunk of ancestral draws: q(z₁|x) and, per upper layer, the mean and log-std of
/// q(z_{l+1}|z_l) at every draw (`rows·samples × d_{l+1}`).
struct Ancestral<E> {
    mean1: Vec<E>,
    log_std1: Vec<E>,
    upper: Vec<(Vec<E>, Vec<E>)>,
}

/// Checks that `v` is a positive number of finite rows of `d` values; returns the rows.
fn check_rows<E: Real>(what: &str, v: &[E], d: usize, dim: &str) -> Result<usize> {
    if v.is_empty() || !v.len().is_multiple_of(d) {
        return Err(NnError::InvalidArgument {
            what: what.into(),
            reason: format!(
                "{} values is not a positive multiple of {dim} = {d}",
                v.len()
            ),
        });
    }
    check_finite(what, v)?;
    Ok(v.len() / d)
}

/// Borrowed layers of a [`Vae`] (see [`Vae::layers`]).
pub(crate) struct Layers<'a, E: Real> {
    pub enc: &'a [Linear<E>],
    pub mean: &'a Linear<E>,
    pub std: &'a Linear<E>,
    pub dec: Vec<&'a Linear<E>>,
    pub log_std: Option<&'a Vector<E>>,
}

/// Checks a data batch: `n ≥ 1`, `n × input_dim` finite values, and values in [0, 1] for a
/// Bernoulli likelihood.
pub(crate) fn check_data<E: Real>(cfg: &VaeConfig, x: &[E], n: usize) -> Result<()> {
    if n == 0 {
        return Err(NnError::InvalidArgument {
            what: "n".into(),
            reason: "the batch must hold at least one example".into(),
        });
    }
    let expected = checked_product("x", &[n, cfg.input_dim])?;
    check_len(
        || format!("x (n={n} × input_dim={})", cfg.input_dim),
        expected,
        x.len(),
    )?;
    check_finite("x", x)?;
    if cfg.likelihood == Likelihood::Bernoulli
        && let Some(i) = x.iter().position(|&v| v < E::zero() || v > E::one())
    {
        return Err(NnError::InvalidArgument {
            what: "x".into(),
            reason: format!(
                "value {} at index {i} is outside [0, 1], required by the Bernoulli likelihood",
                x[i]
            ),
        });
    }
    Ok(())
}

/// `len` independent standard-normal draws (sampled in `f64`, so `f32` and `f64` callers that
/// share a seed get the same noise up to rounding).
pub fn standard_normal_noise<E: Real, R: Rng + ?Sized>(rng: &mut R, len: usize) -> Vec<E> {
    (0..len)
        .map(|_| E::of_f64(StandardNormal.sample(rng)))
        .collect()
}
