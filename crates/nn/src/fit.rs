//! Numerics of the empirical-Bayes prior refit: fitting a mixture of diagonal Gaussians to
//! samples of the aggregate posterior by EM, the moments of the aggregate posterior, and means
//! with standard errors for Monte Carlo estimates.
//!
//! The prior that maximizes the dataset-average ELBO is the aggregate posterior
//! q_agg(z) = (1/N) Σ_n q(z|x_n): the only prior-dependent term of the average ELBO is
//! E_{q_agg} log p(z), maximized over densities by p = q_agg (Gibbs' inequality; Hoffman &
//! Johnson 2016, "ELBO surgery"). A K-component mixture fitted by EM to draws z_s ~ q_agg
//! maximizes the Monte Carlo estimate (1/S) Σ_s log p(z_s) of exactly that term over the
//! mixture's parameters (Dempster, Laird & Rubin 1977); each EM iteration never lowers it.
//! The VampPrior (Tomczak & Welling 2018) is the other practical approximation; it is fitted by
//! gradient ascent with [`Trainer`](crate::Trainer) and [`Trainable::PRIOR`](crate::Trainable).

use dfdx::prelude::*;
use rayon::prelude::*;

use crate::error::{NnError, Result, check_finite, check_len, checked_product};
use crate::lse::shifted_exp_sum;
use crate::model::Posterior;
use crate::prior::{Prior, log_softmax_f64};
use crate::real::{Dev, LN_2PI, Mat, Real, to_f64};

/// Largest number of `f64` values of the (rows × components) responsibility block formed at once.
const BLOCK_VALUES: usize = 1 << 22;

/// The outcome of one EM iteration ([`em_step`]).
#[derive(Clone, Debug)]
pub struct EmStep<E: Real = f32> {
    /// The updated mixture.
    pub prior: Prior<E>,
    /// Mean log-density (1/S) Σ_s log p(z_s) of the samples under the mixture that was passed
    /// in (EM guarantees that the returned mixture scores at least as high).
    pub log_likelihood: f64,
}

/// One EM iteration for a mixture of diagonal Gaussians on the samples `z` (`rows × d`).
///
/// E-step: responsibilities r_sk ∝ π_k N(z_s; μ_k, diag σ_k²), computed as one matrix product
/// per row block (the expansion of the Gaussian exponent used by [`Prior::log_density`]) in
/// `f64`. M-step: π_k = N_k/S, μ_k = Σ_s r_sk z_s / N_k, σ_kj² = Σ_s r_sk z_sj² / N_k − μ_kj²,
/// with σ_kj ≥ `min_std` (the constrained maximizer, so the iteration stays monotone and no
/// component can collapse onto one sample). A component that receives no responsibility keeps
/// its mean and standard deviations and gets the smallest positive weight.
///
/// Errors if `mixture` is not a [`Prior::Mixture`], if `z` does not hold `rows × d` finite
/// values, or if `min_std` is not positive and finite.
pub fn em_step<E: Real>(
    mixture: &Prior<E>,
    z: &[E],
    rows: usize,
    min_std: f64,
) -> Result<EmStep<E>> {
    let Prior::Mixture(m) = mixture else {
        return Err(NnError::InvalidArgument {
            what: "mixture".into(),
            reason: format!(
                "EM fits a mixture of Gaussians, found a {:?} prior",
                mixture.kind()
            ),
        });
    };
    if !(min_std.is_finite() && min_std > 0.0) {
        return Err(NnError::InvalidArgument {
            what: "min_std".into(),
            reason: format!("must be positive and finite, found {min_std}"),
        });
    }
    if rows == 0 {
        return Err(NnError::InvalidArgument {
            what: "rows".into(),
            reason: "EM needs at least one sample".into(),
        });
    }
    let (k, d) = (m.components(), m.dim());
    let expected = checked_product("z", &[rows, d])?;
    check_len(|| format!("z (rows={rows} × d={d})"), expected, z.len())?;
    check_finite("z", z)?;

    let log_pi = log_softmax_f64(&to_f64(&m.logits()));
    let means = to_f64(&m.means());
    let log_stds = to_f64(&m.log_stds());

    // Component matrix [1/σ², μ/σ²] (K × 2d) and constants log π_k − Σ ln σ − ½ Σ μ²/σ² − (d/2) ln 2π.
    let mut a = vec![0.0f64; k * 2 * d];
    let mut consts = vec![0.0f64; k];
    for c in 0..k {
        let mut acc = log_pi[c] - 0.5 * d as f64 * LN_2PI;
        for j in 0..d {
            let (mu, ls) = (means[c * d + j], log_stds[c * d + j]);
            let inv_var = (-2.0 * ls).exp();
            a[c * 2 * d + j] = inv_var;
            a[c * 2 * d + d + j] = mu * inv_var;
            acc += -ls - 0.5 * mu * mu * inv_var;
        }
        consts[c] = acc;
    }
    let dev = Dev::<f64>::default();
    let a: Mat<f64> = dev.try_tensor_from_vec(a, (k, 2 * d))?;
    let a_t = a.permute::<(usize, usize), Axes2<1, 0>>();

    // Sufficient statistics, accumulated block by block in a fixed order (deterministic).
    let mut log_lik = 0.0f64;
    let mut n_k = vec![0.0f64; k];
    let mut s12 = vec![0.0f64; k * 2 * d]; // [Σ r z, Σ r z²] per component
    let block = (BLOCK_VALUES / k.max(2 * d)).clamp(1, rows);
    for start in (0..rows).step_by(block) {
        let b = block.min(rows - start);
        let zs = &z[start * d..(start + b) * d];
        // [−½ z², z] (b × 2d) for the exponents and [z, z²] (b × 2d) for the statistics.
        let mut left = vec![0.0f64; b * 2 * d];
        let mut stats = vec![0.0f64; b * 2 * d];
        left.par_chunks_mut(2 * d)
            .zip(stats.par_chunks_mut(2 * d))
            .enumerate()
            .for_each(|(i, (l, s))| {
                for j in 0..d {
                    let v = zs[i * d + j].as_f64();
                    l[j] = -0.5 * v * v;
                    l[d + j] = v;
                    s[j] = v;
                    s[d + j] = v * v;
                }
            });
        let left: Mat<f64> = dev.try_tensor_from_vec(left, (b, 2 * d))?;
        let mut e = left.matmul(a_t.clone()).as_vec();
        // Row-wise log-sum-exp and responsibilities, in place.
        let lse: Vec<f64> = e
            .par_chunks_mut(k)
            .map(|row| {
                for (v, c) in row.iter_mut().zip(&consts) {
                    *v += c;
                }
                let (max, sum) = shifted_exp_sum(row.iter().copied());
                let lse = max + sum.ln();
                for v in row.iter_mut() {
                    *v = (*v - lse).exp();
                }
                lse
            })
            .collect();
        if let Some(i) = lse.iter().position(|v| !v.is_finite()) {
            return Err(NnError::Diverged {
                what: format!("mixture log-density of sample {} ({})", start + i, lse[i]),
            });
        }
        log_lik += lse.iter().sum::<f64>();
        for row in e.chunks(k) {
            for (acc, r) in n_k.iter_mut().zip(row) {
                *acc += r;
            }
        }
        let r: Mat<f64> = dev.try_tensor_from_vec(e, (b, k))?;
        let stats: Mat<f64> = dev.try_tensor_from_vec(stats, (b, 2 * d))?;
        let s = r
            .permute::<(usize, usize), Axes2<1, 0>>()
            .matmul(stats)
            .as_vec();
        for (acc, v) in s12.iter_mut().zip(&s) {
            *acc += v;
        }
    }

    // M-step.
    let min_var = min_std * min_std;
    let mut logits = Vec::with_capacity(k);
    let mut new_means = Vec::with_capacity(k * d);
    let mut new_log_stds = Vec::with_capacity(k * d);
    for c in 0..k {
        let nk = n_k[c];
        logits.push((nk / rows as f64).max(f64::MIN_POSITIVE).ln());
        // Below this the statistics are rounding noise: keep the component where it is.
        if nk <= 1e-12 * rows as f64 {
            new_means.extend_from_slice(&means[c * d..(c + 1) * d]);
            new_log_stds.extend(
                log_stds[c * d..(c + 1) * d]
                    .iter()
                    .map(|ls| ls.max(min_std.ln())),
            );
            continue;
        }
        for j in 0..d {
            let mu = s12[c * 2 * d + j] / nk;
            let var = (s12[c * 2 * d + d + j] / nk - mu * mu).max(min_var);
            new_means.push(mu);
            new_log_stds.push(0.5 * var.ln());
        }
    }
    let cast = |v: Vec<f64>| v.into_iter().map(E::of_f64).collect::<Vec<E>>();
    let prior = Prior::mixture(k, d, cast(logits), cast(new_means), cast(new_log_stds))?;
    Ok(EmStep {
        prior,
        log_likelihood: log_lik / rows as f64,
    })
}

/// Per-dimension moments of an aggregate posterior q_agg(z) = (1/N) Σ_n N(z; μ_n, diag σ_n²).
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateMoments {
    /// E_{q_agg}[z_j] = mean_n μ_nj.
    pub mean: Vec<f64>,
    /// Var_{q_agg}(z_j) = Var_n(μ_nj) + mean_n σ_nj² (law of total variance).
    pub variance: Vec<f64>,
    /// Var_n(μ_nj) = Cov_x(E_q[z_j]): a unit is active when this exceeds 10⁻² (Burda et al. 2016).
    pub mean_variance: Vec<f64>,
}

/// The moments of the aggregate posterior of the encoder outputs `post` (all rows weighted
/// equally; variances with divisor N, the exact moments of the mixture). Errors on an empty
/// posterior.
pub fn aggregate_moments<E: Real>(post: &Posterior<E>) -> Result<AggregateMoments> {
    let (n, d) = (post.rows, post.dim);
    if n == 0 || d == 0 {
        return Err(NnError::InvalidArgument {
            what: "posterior".into(),
            reason: format!("has {n} rows × {d} dimensions"),
        });
    }
    let len = checked_product("posterior", &[n, d])?;
    check_len(
        || format!("posterior mean (rows={n} × d={d})"),
        len,
        post.mean.len(),
    )?;
    check_len(
        || format!("posterior log_std (rows={n} × d={d})"),
        len,
        post.log_std.len(),
    )?;
    let mut mean = vec![0.0f64; d];
    let mut second = vec![0.0f64; d];
    for (mu, ls) in post.mean.chunks(d).zip(post.log_std.chunks(d)) {
        for j in 0..d {
            mean[j] += mu[j].as_f64();
            second[j] += (2.0 * ls[j].as_f64()).exp();
        }
    }
    for j in 0..d {
        mean[j] /= n as f64;
        second[j] /= n as f64;
    }
    // Two passes for Var_n(μ): no cancellation.
    let mut mean_variance = vec![0.0f64; d];
    for mu in post.mean.chunks(d) {
        for j in 0..d {
            let c = mu[j].as_f64() - mean[j];
            mean_variance[j] += c * c;
        }
    }
    for v in &mut mean_variance {
        *v /= n as f64;
    }
    let variance = mean_variance
        .iter()
        .zip(&second)
        .map(|(a, b)| a + b)
        .collect();
    Ok(AggregateMoments {
        mean,
        variance,
        mean_variance,
    })
}

/// A Monte Carlo estimate: the mean of independent values and its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanStderr {
    /// Sample mean.
    pub mean: f64,
    /// Sample standard deviation / √n (0 for a single value).
    pub stderr: f64,
}

impl MeanStderr {
    /// Mean and standard error of `values` (NaN mean for an empty slice).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return MeanStderr {
                mean: f64::NAN,
                stderr: f64::NAN,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return MeanStderr { mean, stderr: 0.0 };
        }
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
        MeanStderr {
            mean,
            stderr: (var / n as f64).sqrt(),
        }
    }

    /// The paired difference `a − b` of two estimates on the same draws (common random
    /// numbers): its standard error is that of the per-draw differences, usually far smaller
    /// than either estimate's own. Errors if the lengths differ.
    pub fn paired_difference(a: &[f64], b: &[f64]) -> Result<Self> {
        check_len(|| "paired values".to_string(), a.len(), b.len())?;
        let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        Ok(Self::of(&diff))
    }
}
