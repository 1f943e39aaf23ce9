//! Priors p(z): the standard normal, a mixture of K diagonal Gaussians (which also represents the
//! exact aggregate posterior q_agg(z) = (1/N) Σ_n q(z|x_n) and fitted mixtures), and the
//! VampPrior of Tomczak & Welling (2018), p(z) = (1/K) Σ_k q(z|u_k) with learned pseudo-inputs.
//!
//! Mixture log-densities expand the Gaussian exponent so that the component term is a matrix
//! product: Σ_j (z_j − μ_kj)²/σ_kj² = z²·(1/σ²)ᵀ − 2 z·(μ/σ²)ᵀ + Σ_j μ_kj²/σ_kj², followed by a
//! log-sum-exp over components. The inference path does this in `f64` (the expansion cancels
//! when σ is small relative to |z|, e.g. for an aggregate posterior) in row chunks with rayon;
//! the training path does it on the dfdx tape in the model's precision, differentiable with
//! respect to z and the prior's own parameters (and, for the VampPrior, the encoder).

use dfdx::prelude::*;
use rand::Rng;
use rand::seq::index::sample as sample_indices;
use rayon::prelude::*;

use crate::config::VaeConfig;
use crate::error::{NnError, Result, check_finite, check_len, checked_product};
use crate::lse::{log_sum_exp, shifted_exp_sum};
use crate::model::{Vae, standard_normal_noise};
use crate::named::{Lookup, NamedTensor};
use crate::param::{ParamMut, ParamRef, mat_from, vec_from};
use crate::real::{Dev, LN_2PI, Mat, Real, Taped, Vector, to_f64};

/// Seed of the ancestral draws of [`Prior::aggregate_posterior`] for several stochastic layers.
pub const AGGREGATE_SEED: u64 = 0x5eed_a66e;

/// Largest number of `f64` values of the (rows × components) block formed at once.
const BLOCK_VALUES: usize = 1 << 23;

/// Which prior, with its size: enough to check tensors when loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PriorKind {
    /// N(0, I).
    StandardNormal,
    /// Mixture of `components` diagonal Gaussians in latent space.
    Mixture {
        /// Number of components K.
        components: usize,
    },
    /// VampPrior with `components` pseudo-inputs in data space.
    Vamp {
        /// Number of pseudo-inputs K.
        components: usize,
    },
}

/// A mixture of K diagonal Gaussians with learnable logits, means and log-stds.
#[derive(Clone)]
pub struct Mixture<E: Real = f32> {
    logits: Vector<E>,
    means: Mat<E>,
    log_stds: Mat<E>,
}

/// A VampPrior: K learnable pseudo-inputs u_k, p(z) = (1/K) Σ_k q(z|u_k) under the current encoder.
#[derive(Clone)]
pub struct Vamp<E: Real = f32> {
    pseudo_inputs: Mat<E>,
}

/// A prior over the latent space.
#[derive(Clone, Debug)]
pub enum Prior<E: Real = f32> {
    /// p(z) = N(0, I) (no parameters).
    StandardNormal,
    /// p(z) = Σ_k π_k N(z; μ_k, diag σ_k²), π = softmax(logits).
    Mixture(Mixture<E>),
    /// p(z) = (1/K) Σ_k q(z|u_k) (Tomczak & Welling 2018).
    Vamp(Vamp<E>),
}

impl<E: Real> std::fmt::Debug for Mixture<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixture")
            .field("components", &self.components())
            .field("dim", &self.dim())
            .finish_non_exhaustive()
    }
}

impl<E: Real> std::fmt::Debug for Vamp<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vamp")
            .field("components", &self.components())
            .field("input_dim", &self.pseudo_inputs.shape().1)
            .finish_non_exhaustive()
    }
}

impl<E: Real> Mixture<E> {
    /// Number of components K.
    pub fn components(&self) -> usize {
        self.means.shape().0
    }
    /// Latent dimension d.
    pub fn dim(&self) -> usize {
        self.means.shape().1
    }
    /// Unnormalised log mixing weights (K).
    pub fn logits(&self) -> Vec<E> {
        self.logits.as_vec()
    }
    /// Component means (K × d, row-major).
    pub fn means(&self) -> Vec<E> {
        self.means.as_vec()
    }
    /// Component log standard deviations (K × d, row-major).
    pub fn log_stds(&self) -> Vec<E> {
        self.log_stds.as_vec()
    }
}

impl<E: Real> Vamp<E> {
    /// Number of pseudo-inputs K.
    pub fn components(&self) -> usize {
        self.pseudo_inputs.shape().0
    }
    /// Pseudo-inputs (K × input_dim, row-major).
    pub fn pseudo_inputs(&self) -> Vec<E> {
        self.pseudo_inputs.as_vec()
    }
}

fn positive(what: &str, v: usize) -> Result<()> {
    if v == 0 {
        Err(NnError::InvalidArgument {
            what: what.into(),
            reason: "must be at least 1".into(),
        })
    } else {
        Ok(())
    }
}

impl<E: Real> Prior<E> {
    /// A mixture prior from its parameters: `logits` (K), `means` and `log_stds` (K × dim).
    pub fn mixture(
        components: usize,
        dim: usize,
        logits: Vec<E>,
        means: Vec<E>,
        log_stds: Vec<E>,
    ) -> Result<Self> {
        positive("components", components)?;
        positive("dim", dim)?;
        let kd = checked_product("means", &[components, dim])?;
        check_len(
            || format!("logits (K={components})"),
            components,
            logits.len(),
        )?;
        check_len(
            || format!("means (K={components} × d={dim})"),
            kd,
            means.len(),
        )?;
        check_len(
            || format!("log_stds (K={components} × d={dim})"),
            kd,
            log_stds.len(),
        )?;
        check_finite("logits", &logits)?;
        check_finite("means", &means)?;
        check_finite("log_stds", &log_stds)?;
        Ok(Prior::Mixture(Mixture {
            logits: vec_from(logits)?,
            means: mat_from(components, dim, means)?,
            log_stds: mat_from(components, dim, log_stds)?,
        }))
    }

    /// A VampPrior from its pseudo-inputs (K × input_dim, row-major).
    pub fn vamp(components: usize, input_dim: usize, pseudo_inputs: Vec<E>) -> Result<Self> {
        positive("components", components)?;
        positive("input_dim", input_dim)?;
        let n = checked_product("pseudo_inputs", &[components, input_dim])?;
        check_len(
            || format!("pseudo_inputs (K={components} × input_dim={input_dim})"),
            n,
            pseudo_inputs.len(),
        )?;
        check_finite("pseudo_inputs", &pseudo_inputs)?;
        Ok(Prior::Vamp(Vamp {
            pseudo_inputs: mat_from(components, input_dim, pseudo_inputs)?,
        }))
    }

    /// The exact aggregate posterior q_agg(z) = (1/N) Σ_n q(z|x_n) of the rows of `x`, as an
    /// equal-weight mixture of the N encoder posteriors (the optimal prior for the
    /// dataset-average ELBO).
    ///
    /// With several stochastic layers it is the aggregate posterior of the top layer, on which
    /// the prior lives: q_agg(z_L) = (1/N) Σ_n ∫ q(z_L|z_{L−1}) q(z_{<L}|x_n) dz, represented by
    /// one ancestral draw of the lower layers per row ([`Vae::top_posterior`] with the fixed
    /// seed [`AGGREGATE_SEED`], so the result is deterministic): component i is
    /// q(z_L|z_{L−1}⁽ⁱ⁾), an unbiased one-draw estimate of row i's marginal q(z_L|x_i).
    pub fn aggregate_posterior(vae: &Vae<E>, x: &[E]) -> Result<Self> {
        let post = vae.top_posterior(x, AGGREGATE_SEED)?;
        Self::mixture(
            post.rows,
            post.dim,
            vec![E::zero(); post.rows],
            post.mean,
            post.log_std,
        )
    }

    /// A starting point for a mixture refit: K distinct random rows of `x` (n rows) are encoded;
    /// their posterior means and log-stds become the components, with equal weights.
    pub fn mixture_init<R: Rng + ?Sized>(
        vae: &Vae<E>,
        x: &[E],
        n: usize,
        components: usize,
        rng: &mut R,
    ) -> Result<Self> {
        let rows = pick_rows(vae.config(), x, n, components, rng)?;
        Self::aggregate_posterior(vae, &rows)
    }

    /// A starting point for a VampPrior: K distinct random rows of `x` (n rows) as pseudo-inputs.
    pub fn vamp_init<R: Rng + ?Sized>(
        cfg: &VaeConfig,
        x: &[E],
        n: usize,
        components: usize,
        rng: &mut R,
    ) -> Result<Self> {
        let rows = pick_rows(cfg, x, n, components, rng)?;
        Self::vamp(components, cfg.input_dim, rows)
    }

    /// Which prior this is, with its size.
    pub fn kind(&self) -> PriorKind {
        match self {
            Prior::StandardNormal => PriorKind::StandardNormal,
            Prior::Mixture(m) => PriorKind::Mixture {
                components: m.components(),
            },
            Prior::Vamp(v) => PriorKind::Vamp {
                components: v.components(),
            },
        }
    }

    /// Parameters as named tensors: `prior.logits` (shape `[K]`), `prior.means` and
    /// `prior.log_stds` (`[K, d]`) for a mixture, or `prior.pseudo_inputs` (`[K, D]`) for a
    /// VampPrior.
    pub fn named_tensors(&self) -> Vec<NamedTensor<E>> {
        self.params()
            .iter()
            .map(|(name, p)| p.named(name))
            .collect()
    }

    /// Rebuilds a prior of `kind` for a model with configuration `cfg` from named tensors.
    /// The prior owns the `prior.` namespace: missing, unexpected or mis-shaped tensors there
    /// are errors naming the tensor; other namespaces are ignored.
    pub fn from_named_tensors(
        kind: PriorKind,
        cfg: &VaeConfig,
        tensors: &[NamedTensor<E>],
    ) -> Result<Self> {
        cfg.validate()?;
        let mut lookup = Lookup::new(tensors, |n| n.starts_with("prior."))?;
        let prior = match kind {
            PriorKind::StandardNormal => Prior::StandardNormal,
            PriorKind::Mixture { components: k } => {
                positive("components", k)?;
                let d = cfg.prior_dim();
                let logits = lookup.take("prior.logits", &[k])?.to_vec();
                let means = lookup.take("prior.means", &[k, d])?.to_vec();
                let log_stds = lookup.take("prior.log_stds", &[k, d])?.to_vec();
                Self::mixture(k, d, logits, means, log_stds)?
            }
            PriorKind::Vamp { components: k } => {
                positive("components", k)?;
                let u = lookup
                    .take("prior.pseudo_inputs", &[k, cfg.input_dim])?
                    .to_vec();
                Self::vamp(k, cfg.input_dim, u)?
            }
        };
        lookup.finish(&format!("not a parameter of a {kind:?} prior"))?;
        Ok(prior)
    }

    /// The same prior in another precision.
    pub fn cast<F: Real>(&self) -> Result<Prior<F>> {
        Ok(match self {
            Prior::StandardNormal => Prior::StandardNormal,
            Prior::Mixture(m) => Prior::mixture(
                m.components(),
                m.dim(),
                cast_vec(&m.logits()),
                cast_vec(&m.means()),
                cast_vec(&m.log_stds()),
            )?,
            Prior::Vamp(v) => Prior::vamp(
                v.components(),
                v.pseudo_inputs.shape().1,
                cast_vec(&v.pseudo_inputs()),
            )?,
        })
    }

    /// Checks that the prior fits the model (the top layer's dimension, or the input dimension
    /// for the VampPrior, which needs a model with one stochastic layer: with several,
    /// q(z_L|u) is not Gaussian).
    pub(crate) fn check_compatible(&self, vae: &Vae<E>) -> Result<()> {
        let cfg = vae.config();
        match self {
            Prior::StandardNormal => Ok(()),
            Prior::Mixture(m) if m.dim() != cfg.prior_dim() => {
                Err(NnError::InvalidConfig(if cfg.stochastic_layers() == 1 {
                    format!(
                        "mixture prior has dimension {}, the model's latent_dim is {}",
                        m.dim(),
                        cfg.latent_dim
                    )
                } else {
                    format!(
                        "mixture prior has dimension {}, the model's top stochastic layer \
                         (z{}) has {}",
                        m.dim(),
                        cfg.stochastic_layers(),
                        cfg.prior_dim()
                    )
                }))
            }
            Prior::Vamp(_) if cfg.stochastic_layers() > 1 => Err(NnError::InvalidConfig(format!(
                "the VampPrior needs one stochastic layer, the model has {} (q(z_L|u) of a \
                 hierarchical encoder is not Gaussian); use a standard-normal or mixture prior",
                cfg.stochastic_layers()
            ))),
            Prior::Vamp(v) if v.pseudo_inputs.shape().1 != cfg.input_dim => {
                Err(NnError::InvalidConfig(format!(
                    "VampPrior pseudo-inputs have dimension {}, the model's input_dim is {}",
                    v.pseudo_inputs.shape().1,
                    cfg.input_dim
                )))
            }
            _ => Ok(()),
        }
    }

    /// log p(z) for the rows of `z` (`rows × d` with d the top stochastic layer's dimension,
    /// [`VaeConfig::prior_dim`]), without a tape, computed in `f64`. For the VampPrior the
    /// pseudo-inputs are encoded with `vae`'s encoder.
    pub fn log_density(&self, vae: &Vae<E>, z: &[E], rows: usize) -> Result<Vec<f64>> {
        self.check_compatible(vae)?;
        let d = vae.config().prior_dim();
        positive("rows", rows)?;
        let expected = checked_product("z", &[rows, d])?;
        check_len(
            || format!("z (rows={rows} × prior dimension={d})"),
            expected,
            z.len(),
        )?;
        check_finite("z", z)?;
        self.log_density_unchecked(vae, z, rows)
    }

    /// [`Prior::log_density`] for inputs the caller has validated.
    pub(crate) fn log_density_unchecked(
        &self,
        vae: &Vae<E>,
        z: &[E],
        rows: usize,
    ) -> Result<Vec<f64>> {
        let d = vae.config().prior_dim();
        match self {
            Prior::StandardNormal => Ok(z
                .par_chunks(d)
                .map(|row| {
                    let sq: f64 = row.iter().map(|v| v.as_f64() * v.as_f64()).sum();
                    -0.5 * sq - 0.5 * d as f64 * LN_2PI
                })
                .collect()),
            Prior::Mixture(m) => {
                let logits = to_f64(&m.logits());
                let log_pi = log_softmax_f64(&logits);
                mixture_log_density_f64(
                    z,
                    rows,
                    d,
                    &log_pi,
                    &to_f64(&m.means()),
                    &to_f64(&m.log_stds()),
                )
            }
            Prior::Vamp(v) => {
                let k = v.components();
                let (mu, ls) = vae.encode_values(&v.pseudo_inputs(), k)?;
                let log_pi = vec![-(k as f64).ln(); k];
                mixture_log_density_f64(z, rows, d, &log_pi, &to_f64(&mu), &to_f64(&ls))
            }
        }
    }

    /// `n` draws z ~ p(z) of the top stochastic layer (row-major `n × d`,
    /// d = [`VaeConfig::prior_dim`]; decode them with
    /// [`Vae::decode_top_mean`](crate::Vae::decode_top_mean)).
    pub fn sample<R: Rng + ?Sized>(&self, vae: &Vae<E>, n: usize, rng: &mut R) -> Result<Vec<E>> {
        self.check_compatible(vae)?;
        let d = vae.config().prior_dim();
        let len = checked_product("samples", &[n, d])?;
        let (log_pi, means, log_stds) = match self {
            Prior::StandardNormal => return Ok(standard_normal_noise(rng, len)),
            Prior::Mixture(m) => (
                log_softmax_f64(&to_f64(&m.logits())),
                m.means(),
                m.log_stds(),
            ),
            Prior::Vamp(v) => {
                let k = v.components();
                let (mu, ls) = vae.encode_values(&v.pseudo_inputs(), k)?;
                (vec![-(k as f64).ln(); k], mu, ls)
            }
        };
        // Inverse-CDF choice of the component from cumulative weights.
        let mut cdf = Vec::with_capacity(log_pi.len());
        let mut acc = 0.0;
        for lp in &log_pi {
            acc += lp.exp();
            cdf.push(acc);
        }
        let mut out = Vec::with_capacity(len);
        for _ in 0..n {
            let u: f64 = rng.r#gen::<f64>() * acc;
            let c = cdf.partition_point(|&v| v <= u).min(cdf.len() - 1);
            let eps: Vec<E> = standard_normal_noise(rng, d);
            for j in 0..d {
                out.push(means[c * d + j] + log_stds[c * d + j].exp() * eps[j]);
            }
        }
        Ok(out)
    }

    /// log p(z) on the tape, per row of `z`: differentiable with respect to `z`, the prior's
    /// parameters and (VampPrior) the encoder. Same expansion as the inference path, in `E`.
    pub(crate) fn log_density_t(&self, vae: &Vae<E>, z: Mat<E, Taped<E>>) -> Vector<E, Taped<E>> {
        let d = z.shape().1;
        match self {
            Prior::StandardNormal => {
                z.square().sum::<(usize,), Axis<1>>() * E::of_f64(-0.5)
                    - E::of_f64(0.5 * d as f64 * LN_2PI)
            }
            Prior::Mixture(m) => mixture_log_density_t(
                z,
                Some(m.logits.retaped::<Taped<E>>()),
                m.means.retaped::<Taped<E>>(),
                m.log_stds.retaped::<Taped<E>>(),
            ),
            Prior::Vamp(v) => {
                let (mu, ls) = vae.encode_t(v.pseudo_inputs.retaped::<Taped<E>>());
                mixture_log_density_t(z, None, mu, ls)
            }
        }
    }

    /// Parameters in canonical order with their names.
    pub(crate) fn params(&self) -> Vec<(String, ParamRef<'_, E>)> {
        match self {
            Prior::StandardNormal => Vec::new(),
            Prior::Mixture(m) => vec![
                ("prior.logits".into(), ParamRef::Vec(&m.logits)),
                ("prior.means".into(), ParamRef::Mat(&m.means)),
                ("prior.log_stds".into(), ParamRef::Mat(&m.log_stds)),
            ],
            Prior::Vamp(v) => vec![(
                "prior.pseudo_inputs".into(),
                ParamRef::Mat(&v.pseudo_inputs),
            )],
        }
    }

    /// Mutable parameters in canonical order with their names.
    pub(crate) fn params_mut(&mut self) -> Vec<(String, ParamMut<'_, E>)> {
        match self {
            Prior::StandardNormal => Vec::new(),
            Prior::Mixture(m) => vec![
                ("prior.logits".into(), ParamMut::Vec(&mut m.logits)),
                ("prior.means".into(), ParamMut::Mat(&mut m.means)),
                ("prior.log_stds".into(), ParamMut::Mat(&mut m.log_stds)),
            ],
            Prior::Vamp(v) => vec![(
                "prior.pseudo_inputs".into(),
                ParamMut::Mat(&mut v.pseudo_inputs),
            )],
        }
    }
}

fn cast_vec<E: Real, F: Real>(v: &[E]) -> Vec<F> {
    v.iter().map(|x| F::of_f64(x.as_f64())).collect()
}

/// `components` distinct random rows of `x` (which has `n` rows).
fn pick_rows<E: Real, R: Rng + ?Sized>(
    cfg: &VaeConfig,
    x: &[E],
    n: usize,
    components: usize,
    rng: &mut R,
) -> Result<Vec<E>> {
    cfg.validate()?;
    positive("components", components)?;
    let d_in = cfg.input_dim;
    let expected = checked_product("x", &[n, d_in])?;
    check_len(
        || format!("x (n={n} × input_dim={d_in})"),
        expected,
        x.len(),
    )?;
    if components > n {
        return Err(NnError::InvalidArgument {
            what: "components".into(),
            reason: format!("{components} components need at least as many data rows, found {n}"),
        });
    }
    let mut idx = sample_indices(rng, n, components).into_vec();
    idx.sort_unstable();
    let mut out = Vec::with_capacity(components * d_in);
    for i in idx {
        out.extend_from_slice(&x[i * d_in..(i + 1) * d_in]);
    }
    check_finite("x", &out)?;
    Ok(out)
}

/// Numerically stable log-softmax in `f64`.
pub(crate) fn log_softmax_f64(logits: &[f64]) -> Vec<f64> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|l| l - lse).collect()
}

/// Mixture log-density of the rows of `z` in `f64`: one GEMM per row block of
/// `[−½ z², z] (rows × 2d)` against `[1/σ², μ/σ²]ᵀ (2d × K)`, plus per-component constants,
/// then a log-sum-exp per row (rayon).
pub(crate) fn mixture_log_density_f64<E: Real>(
    z: &[E],
    rows: usize,
    d: usize,
    log_pi: &[f64],
    means: &[f64],
    log_stds: &[f64],
) -> Result<Vec<f64>> {
    let k = log_pi.len();
    let mut rt = vec![0.0f64; k * 2 * d];
    let mut consts = vec![0.0f64; k];
    rt.par_chunks_mut(2 * d)
        .zip(consts.par_iter_mut())
        .enumerate()
        .for_each(|(c, (row, cst))| {
            let mut acc = log_pi[c] - 0.5 * d as f64 * LN_2PI;
            for j in 0..d {
                let ls = log_stds[c * d + j];
                let mu = means[c * d + j];
                let a = (-2.0 * ls).exp();
                row[j] = a;
                row[d + j] = mu * a;
                acc += -ls - 0.5 * mu * mu * a;
            }
            *cst = acc;
        });
    let dev = Dev::<f64>::default();
    let rt: Mat<f64> = dev.try_tensor_from_vec(rt, (k, 2 * d))?;
    let r = rt.permute::<(usize, usize), Axes2<1, 0>>();
    let block = (BLOCK_VALUES / k).clamp(1, rows);
    let mut out = Vec::with_capacity(rows);
    for start in (0..rows).step_by(block) {
        let m = block.min(rows - start);
        let mut left = vec![0.0f64; m * 2 * d];
        left.par_chunks_mut(2 * d).enumerate().for_each(|(i, row)| {
            for j in 0..d {
                let v = z[(start + i) * d + j].as_f64();
                row[j] = -0.5 * v * v;
                row[d + j] = v;
            }
        });
        let left: Mat<f64> = dev.try_tensor_from_vec(left, (m, 2 * d))?;
        let e = left.matmul(r.clone()).as_vec();
        let lse: Vec<f64> = e
            .par_chunks(k)
            .map(|row| {
                let (max, s) = shifted_exp_sum(row.iter().zip(&consts).map(|(a, b)| a + b));
                if !max.is_finite() {
                    return max;
                }
                max + s.ln()
            })
            .collect();
        out.extend(lse);
    }
    Ok(out)
}

/// Mixture log-density on the tape (see the module documentation). `logits = None` means equal
/// weights 1/K (VampPrior).
pub(crate) fn mixture_log_density_t<E: Real>(
    z: Mat<E, Taped<E>>,
    logits: Option<Vector<E, Taped<E>>>,
    means: Mat<E, Taped<E>>,
    log_stds: Mat<E, Taped<E>>,
) -> Vector<E, Taped<E>> {
    let (b, d) = *z.shape();
    let k = means.shape().0;
    let inv_var = (log_stds.with_empty_tape() * E::of_f64(-2.0)).exp();
    let mu_inv_var = means.with_empty_tape() * inv_var.with_empty_tape();
    let consts = (means * mu_inv_var.with_empty_tape()).sum::<(usize,), Axis<1>>()
        * E::of_f64(-0.5)
        - log_stds.sum::<(usize,), Axis<1>>();
    let consts = match logits {
        Some(l) => consts + l.log_softmax::<Axis<0>>(),
        None => consts - E::of_f64((k as f64).ln()),
    } - E::of_f64(0.5 * d as f64 * LN_2PI);
    let quad = (z.with_empty_tape().square() * E::of_f64(-0.5))
        .matmul(inv_var.permute::<(usize, usize), Axes2<1, 0>>());
    let cross = z.matmul(mu_inv_var.permute::<(usize, usize), Axes2<1, 0>>());
    let e = quad + cross + consts.broadcast_like::<(usize, usize), Axis<0>>(&(b, k));
    e.logsumexp::<(usize,), Axis<1>>()
}
