//! Importance-weighted bounds without a tape (Burda, Grosse & Salakhutdinov 2016):
//! log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x) with z_i = μ + σ ε_i, and
//! L̂_k = logsumexp_i log w_i − log k, all in log space.
//!
//! The encoder runs once per example and the decoder once over all n·k samples (in chunks of
//! whole examples of at most [`CHUNK_ROWS`](crate::model) rows, to bound memory at large k).

use std::num::NonZeroUsize;

use rand::Rng;

use crate::config::VaeConfig;
use crate::error::{NnError, Result, check_finite, check_len, checked_product};
use crate::lse::log_sum_exp;
use crate::model::{CHUNK_ROWS, Vae, check_data, standard_normal_noise};
use crate::param::mat_from;
use crate::prior::Prior;
use crate::real::{LN_2PI, Real};
use crate::stack::stack_terms;

/// Per-example terms of a one-sample ELBO, `reconstruction − kl`.
#[derive(Clone, Debug, PartialEq)]
pub struct ElboTerms {
    /// log p(x|z) at one draw z ~ q(z|x), per example.
    pub reconstruction: Vec<f64>,
    /// KL(q(z|x) ‖ p(z)): analytic for the standard-normal prior and one stochastic layer,
    /// otherwise the one-sample Monte Carlo estimate log q(z|x) − log p(z) at the same draw
    /// (over all layers: log q(z₁, …, z_L|x) − log p(z₁, …, z_L)).
    pub kl: Vec<f64>,
}

/// z = μ + σ ε for n examples × k samples (row `i·k + j`), in the model's precision.
pub(crate) fn sample_z<E: Real>(mean: &[E], std: &[E], eps: &[E], k: usize, d: usize) -> Vec<E> {
    let mut z = Vec::with_capacity(eps.len());
    for (r, e_row) in eps.chunks(d).enumerate() {
        let i = r / k;
        let (mu, sd) = (&mean[i * d..(i + 1) * d], &std[i * d..(i + 1) * d]);
        z.extend(
            e_row
                .iter()
                .zip(mu.iter().zip(sd))
                .map(|(&e, (&m, &s))| m + s * e),
        );
    }
    z
}

/// log q(z|x) = −Σ ln σ − ½ Σ ε² − (d/2) ln 2π per sample row, in `f64`.
pub(crate) fn log_q<E: Real>(log_std: &[E], eps: &[E], k: usize, d: usize) -> Vec<f64> {
    eps.chunks(d)
        .enumerate()
        .map(|(r, e_row)| {
            let i = r / k;
            let ls: f64 = log_std[i * d..(i + 1) * d].iter().map(|v| v.as_f64()).sum();
            let sq: f64 = e_row.iter().map(|v| v.as_f64() * v.as_f64()).sum();
            -ls - 0.5 * sq - 0.5 * d as f64 * LN_2PI
        })
        .collect()
}

/// Validates the common arguments of the bound functions (where a raw `k` enters); returns
/// n·k·d.
pub(crate) fn check_inputs<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    x: &[E],
    n: usize,
    k: usize,
) -> Result<usize> {
    prior.check_compatible(vae)?;
    let k = NonZeroUsize::new(k).ok_or_else(|| NnError::InvalidArgument {
        what: "k".into(),
        reason: "the number of importance samples must be at least 1".into(),
    })?;
    check_batch(vae, x, n, k)
}

/// Validates a batch of `n` rows for `k` samples each (the per-step check of a trainer, whose
/// model, prior and objective were checked when it was built); returns n·k·d.
pub(crate) fn check_batch<E: Real>(
    vae: &Vae<E>,
    x: &[E],
    n: usize,
    k: NonZeroUsize,
) -> Result<usize> {
    check_data(vae.config(), x, n)?;
    checked_product("eps", &[n, k.get(), vae.config().noise_dim()])
}

/// Validates caller-supplied noise of length n·k·d, d = `cfg`'s
/// [`VaeConfig::noise_dim`](crate::VaeConfig::noise_dim) (the latent dimension for one
/// stochastic layer).
pub(crate) fn check_noise<E: Real>(
    eps: &[E],
    n: usize,
    k: usize,
    cfg: &VaeConfig,
    len: usize,
) -> Result<()> {
    let d = cfg.noise_dim();
    let what = if cfg.stochastic_layers() == 1 {
        "latent_dim"
    } else {
        "noise_dim"
    };
    check_len(
        || format!("eps (n={n} × k={k} × {what}={d})"),
        len,
        eps.len(),
    )?;
    check_finite("eps", eps)
}

/// log-weights log w (n × k, row-major) with fresh noise ε ~ N(0, I) drawn from `rng`.
pub fn log_weights<E: Real, R: Rng + ?Sized>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    x: &[E],
    n: usize,
    k: usize,
    rng: &mut R,
) -> Result<Vec<E>> {
    let len = check_inputs(vae, prior, x, n, k)?;
    let eps = standard_normal_noise(rng, len);
    log_weights_with_noise(vae, prior, x, n, k, &eps)
}

/// log-weights log w (n × k, row-major) at caller-supplied noise `eps` (n·k·noise_dim values;
/// sample j of example i uses `eps[(i·k + j)·d ..][..d]` with d =
/// [`VaeConfig::noise_dim`](crate::VaeConfig::noise_dim): ε₁ then ε₂ … for several stochastic
/// layers, whose log-weights are log p(x|z₁) + Σ log p(z_l|z_{l+1}) + log p(z_L) − log q(z₁|x)
/// − Σ log q(z_{l+1}|z_l)).
pub fn log_weights_with_noise<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    x: &[E],
    n: usize,
    k: usize,
    eps: &[E],
) -> Result<Vec<E>> {
    let len = check_inputs(vae, prior, x, n, k)?;
    check_noise(eps, n, k, vae.config(), len)?;
    let terms = row_terms(vae, prior, x, n, k, eps)?;
    Ok(terms
        .ll
        .iter()
        .zip(&terms.lp)
        .zip(&terms.lq)
        .map(|((ll, lp), lq)| E::of_f64(ll + lp - lq))
        .collect())
}

/// L̂_k per example from log-weights (n × k): logsumexp_i log w_i − log k, in `f64`
/// (stable for log-weights of any magnitude; −∞ only if every weight is zero).
pub fn bound_from_log_weights<E: Real>(log_w: &[E], n: usize, k: usize) -> Result<Vec<f64>> {
    if n == 0 || k == 0 {
        return Err(NnError::InvalidArgument {
            what: "n, k".into(),
            reason: format!("both must be at least 1, found n={n}, k={k}"),
        });
    }
    let len = checked_product("log_w", &[n, k])?;
    check_len(|| format!("log_w (n={n} × k={k})"), len, log_w.len())?;
    let ln_k = (k as f64).ln();
    Ok(log_w
        .chunks(k)
        .map(|row| {
            let row: Vec<f64> = row.iter().map(|v| v.as_f64()).collect();
            log_sum_exp(&row) - ln_k
        })
        .collect())
}

/// Reconstruction and KL terms of the one-sample ELBO for each example (fresh noise from `rng`).
pub fn elbo_terms<E: Real, R: Rng + ?Sized>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    x: &[E],
    n: usize,
    rng: &mut R,
) -> Result<ElboTerms> {
    let len = check_inputs(vae, prior, x, n, 1)?;
    let eps: Vec<E> = standard_normal_noise(rng, len);
    let d = vae.config().latent_dim;
    let terms = row_terms(vae, prior, x, n, 1, &eps)?;
    let kl = match prior {
        Prior::StandardNormal if vae.config().stochastic_layers() == 1 => {
            analytic_kl(&terms.mean, &terms.log_std, d)
        }
        _ => terms.lq.iter().zip(&terms.lp).map(|(q, p)| q - p).collect(),
    };
    Ok(ElboTerms {
        reconstruction: terms.ll,
        kl,
    })
}

/// KL(N(μ, σ²) ‖ N(0, I)) = Σ ½(μ² + σ² − 1) − ln σ per row, in `f64`.
pub(crate) fn analytic_kl<E: Real>(mean: &[E], log_std: &[E], d: usize) -> Vec<f64> {
    mean.chunks(d)
        .zip(log_std.chunks(d))
        .map(|(mu, ls)| {
            mu.iter()
                .zip(ls)
                .map(|(&m, &l)| {
                    let (m, l) = (m.as_f64(), l.as_f64());
                    0.5 * (m * m + (2.0 * l).exp() - 1.0) - l
                })
                .sum()
        })
        .collect()
}

/// Per-sample-row terms of the log-weights (`lp` and `lq` over all stochastic layers), plus
/// the first layer's encoder output.
pub(crate) struct RowTerms<E> {
    pub ll: Vec<f64>,
    pub lp: Vec<f64>,
    pub lq: Vec<f64>,
    pub mean: Vec<E>,
    pub log_std: Vec<E>,
}

/// Evaluates log p(x|z), log p(z), log q(z|x) for every sample row without a tape.
pub(crate) fn row_terms<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    x: &[E],
    n: usize,
    k: usize,
    eps: &[E],
) -> Result<RowTerms<E>> {
    let cfg = vae.config();
    let (dd, d) = (cfg.input_dim, cfg.latent_dim);
    let (mean, log_std) = vae.encode_values(x, n)?;
    if cfg.stochastic_layers() > 1 {
        let nd = cfg.noise_dim();
        let per_chunk = (CHUNK_ROWS / k).max(1);
        let (mut ll, mut lp, mut lq) = (Vec::new(), Vec::new(), Vec::new());
        for start in (0..n).step_by(per_chunk) {
            let m = per_chunk.min(n - start);
            let t = stack_terms(
                vae,
                prior,
                &x[start * dd..(start + m) * dd],
                m,
                k,
                &eps[start * k * nd..(start + m) * k * nd],
            )?;
            ll.extend(t.ll);
            lp.extend(t.lp);
            lq.extend(t.lq);
        }
        return Ok(RowTerms {
            ll,
            lp,
            lq,
            mean,
            log_std,
        });
    }
    let std: Vec<E> = log_std.iter().map(|v| v.exp()).collect();
    let lq = log_q(&log_std, eps, k, d);
    let per_chunk = (CHUNK_ROWS / k).max(1);
    let mut ll = Vec::with_capacity(n * k);
    let mut lp = Vec::with_capacity(n * k);
    for start in (0..n).step_by(per_chunk) {
        let m = per_chunk.min(n - start);
        let rows = m * k;
        let z = sample_z(
            &mean[start * d..(start + m) * d],
            &std[start * d..(start + m) * d],
            &eps[start * k * d..(start + m) * k * d],
            k,
            d,
        );
        let xt = mat_from(m, dd, x[start * dd..(start + m) * dd].to_vec())?;
        let out = vae.decode_t(mat_from(rows, d, z.clone())?);
        ll.extend(
            vae.log_likelihood_t(out, &xt, m, k)
                .as_vec()
                .iter()
                .map(|v| v.as_f64()),
        );
        lp.extend(prior.log_density_unchecked(vae, &z, rows)?);
    }
    Ok(RowTerms {
        ll,
        lp,
        lq,
        mean,
        log_std,
    })
}
