//! Models with several stochastic layers (Burda, Grosse & Salakhutdinov 2016, §5: the
//! two-stochastic-layer nets of Table 1) on dfdx's tape and without one.
//!
//! q(z₁|x) q(z₂|z₁) … q(z_L|z_{L−1}) and p(z_L) p(z_{L−1}|z_L) … p(x|z₁), every conditional
//! between latents a diagonal Gaussian with σ = exp(linear) on an MLP. One sample's noise is
//! ε₁ (d₁ values) then ε₂ … ([`VaeConfig::noise_dim`](crate::VaeConfig::noise_dim) per
//! sample), z₁ = μ₁(x) + σ₁(x) ε₁ and z_{l+1} = μ_{l+1}(z_l) + σ_{l+1}(z_l) ε_{l+1}, and
//!
//! log w = log p(x|z₁) + Σ_l log p(z_l|z_{l+1}) + log p(z_L) − log q(z₁|x) − Σ_l log q(z_{l+1}|z_l).
//!
//! # Gradients (one surrogate per tape)
//! Every objective's gradient is Σ_s a_s ∇ℓ_s with constant coefficients from
//! `weights::weigh_example` (ℓ_s = log w_s). The tape is built once with z live and
//! differentiated at the surrogate Σ_s c_s ℓ_s:
//!
//! * Reparameterisation, kinds whose decoder and encoder weights agree: one pass, c = a, every
//!   parameter's gradient from it.
//! * Otherwise the encoder's gradient comes from one pass and the decoder's and the prior's from
//!   a second with every z a constant (c = the decoder weights). The encoder pass uses c = the
//!   encoder weights (PIWAE), or, for DReG (Tucker et al. 2019), c = b (`dreg_factor · enc`)
//!   with q's *parameters* stopped inside every log q: log q(z₁|x) uses constant μ₁(x), σ₁(x),
//!   and log q(z_{l+1}|z_l) runs a copy of q's network (new tensors, so the tape records no
//!   gradient for the parameters) on the live z_l. ∂z_{l+1}/∂φ keeps its path through z_l.

use dfdx::prelude::*;

use crate::config::Group;
use crate::error::{NnError, Result};
use crate::model::{GaussNet, Vae};
use crate::param::mat_from;
use crate::prior::Prior;
use crate::real::{LN_2PI, Mat, Real, TapeOf, Taped, Vector};
use crate::task::{Estimator, Objective, Trainable};
use crate::weights::{SampleWeights, per_batch, weigh_example};

/// The noise of `rows` samples split by layer: per layer, the `rows × d_l` matrix of ε_l and,
/// per row, ½ Σ ε² + (d_l/2) ln 2π (the part of −log q that does not depend on φ).
pub(crate) struct LayerNoise<E: Real> {
    pub eps: Vec<Mat<E>>,
    pub consts: Vec<Vec<f64>>,
}

/// Splits `eps` (`rows × Σ d_l`, each row ε₁ then ε₂ …) by layer.
pub(crate) fn split_noise<E: Real>(
    eps: &[E],
    rows: usize,
    dims: &[usize],
) -> Result<LayerNoise<E>> {
    let total: usize = dims.iter().sum();
    debug_assert_eq!(eps.len(), rows * total);
    let mut out = LayerNoise {
        eps: Vec::with_capacity(dims.len()),
        consts: Vec::with_capacity(dims.len()),
    };
    let mut offset = 0;
    for &d in dims {
        let mut m = Vec::with_capacity(rows * d);
        let mut c = Vec::with_capacity(rows);
        for row in eps.chunks_exact(total) {
            let part = &row[offset..offset + d];
            m.extend_from_slice(part);
            let sq: f64 = part.iter().map(|v| v.as_f64() * v.as_f64()).sum();
            c.push(0.5 * sq + 0.5 * d as f64 * LN_2PI);
        }
        out.eps.push(mat_from(rows, d, m)?);
        out.consts.push(c);
        offset += d;
    }
    Ok(out)
}

/// How log q enters the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QMode {
    /// log q_φ(z(ε)) = −Σ ln σ − const: the reparameterised total derivative.
    Reparam,
    /// log q with q's parameters stopped, a function of the live z's (DReG).
    Stopped,
}

/// The encoder side of the samples: z₁ … z_L (`rows × d_l`, on the tape) and log q per row.
pub(crate) struct Chain<E: Real, T> {
    pub z: Vec<Mat<E, T>>,
    pub lq: Vector<E, T>,
}

/// A constant vector of `rows` values.
fn const_vec<E: Real>(v: &[f64]) -> Result<Vector<E>> {
    crate::param::vec_from(v.iter().map(|&x| E::of_f64(x)).collect())
}

/// Σ over columns of a `rows × d` matrix.
fn row_sum<E: Real, T: TapeOf<E>>(m: Mat<E, T>) -> Vector<E, T> {
    m.sum::<(usize,), Axis<1>>()
}

/// log N(target; mean, diag exp(ls)²) per row, without the −(d/2) ln 2π constant.
fn gauss_log_density<E: Real, T: TapeOf<E>>(
    target: Mat<E, T>,
    mean: Mat<E, T>,
    ls: Mat<E, T>,
) -> Vector<E, T> {
    let inv = (ls.with_empty_tape() * E::of_f64(-1.0)).exp();
    let u = (target - mean) * inv;
    row_sum(u.square()) * E::of_f64(-0.5) - row_sum(ls)
}

/// Runs the encoder chain for `n` examples × `k` samples (rows example-major) from `x` (on the
/// tape `T` if its gradient is wanted).
pub(crate) fn chain_t<E: Real, T: TapeOf<E>>(
    vae: &Vae<E>,
    x: Mat<E, T>,
    noise: &LayerNoise<E>,
    n: usize,
    k: usize,
    mode: QMode,
    stopped: &[GaussNet<E>],
) -> Result<Chain<E, T>> {
    let cfg = vae.config();
    let act = cfg.activation;
    let rows = n * k;
    let d1 = cfg.latent_dim;
    let (mu, ls) = vae.encode_t(x);
    let bc = |t: Mat<E, T>| -> Mat<E, T> {
        t.broadcast_like::<(usize, usize, usize), Axis<1>>(&(n, k, d1))
            .reshape_like(&(rows, d1))
    };
    let mut lq = match mode {
        QMode::Reparam => {
            row_sum(bc(ls.with_empty_tape())).negate() - const_vec::<E>(&noise.consts[0])?
        }
        QMode::Stopped => {
            // Constant μ₁, σ₁ (new tensors): filled in below once z₁ exists.
            const_vec::<E>(&vec![0.0; rows])?.retaped::<T>()
        }
    };
    let mu_c: Mat<E> = mat_from(n, d1, mu.as_vec())?;
    let ls_c: Mat<E> = mat_from(n, d1, ls.as_vec())?;
    let z1 = bc(mu) + bc(ls).exp() * noise.eps[0].clone();
    if mode == QMode::Stopped {
        let b0 = |t: Mat<E>| -> Mat<E, T> {
            t.broadcast_like::<(usize, usize, usize), Axis<1>>(&(n, k, d1))
                .reshape_like(&(rows, d1))
                .retaped::<T>()
        };
        lq = lq + gauss_log_density(z1.with_empty_tape(), b0(mu_c), b0(ls_c))
            - E::of_f64(0.5 * d1 as f64 * LN_2PI);
    }
    let mut z = vec![z1];
    for (l, upper) in vae.upper.iter().enumerate() {
        let below = z[l].with_empty_tape();
        let (mu, ls) = upper.enc.forward_t(act, below);
        let d = cfg.upper[l].latent_dim;
        match mode {
            QMode::Reparam => {
                lq = lq - row_sum(ls.with_empty_tape()) - const_vec::<E>(&noise.consts[l + 1])?;
            }
            QMode::Stopped => {}
        }
        let next = mu + ls.exp() * noise.eps[l + 1].clone();
        if mode == QMode::Stopped {
            let (mu_s, ls_s) = stopped[l].forward_t(act, z[l].with_empty_tape());
            lq = lq + gauss_log_density(next.with_empty_tape(), mu_s, ls_s)
                - E::of_f64(0.5 * d as f64 * LN_2PI);
        }
        z.push(next);
    }
    Ok(Chain { z, lq })
}

/// The model side: log p(x|z₁) and Σ_l log p(z_l|z_{l+1}) per row, and z_L for the prior
/// (consumes the chain's z's, which carry the tape).
pub(crate) fn model_t<E: Real, T: TapeOf<E>>(
    vae: &Vae<E>,
    z: Vec<Mat<E, T>>,
    x: &Mat<E>,
    n: usize,
    k: usize,
) -> ModelTerms<E, T> {
    let cfg = vae.config();
    let act = cfg.activation;
    let ll = vae.log_likelihood_t(vae.decode_t(z[0].with_empty_tape()), x, n, k);
    let mut lp: Option<Vector<E, T>> = None;
    let mut z = z.into_iter();
    let mut below = z.next().expect("at least one stochastic layer");
    for (l, upper) in vae.upper.iter().enumerate() {
        let above = z.next().expect("one z per layer");
        let (mu, ls) = upper.dec.forward_t(act, above.with_empty_tape());
        let d = if l == 0 {
            cfg.latent_dim
        } else {
            cfg.upper[l - 1].latent_dim
        };
        let term = gauss_log_density(below, mu, ls) - E::of_f64(0.5 * d as f64 * LN_2PI);
        lp = Some(match lp {
            Some(acc) => acc + term,
            None => term,
        });
        below = above;
    }
    ModelTerms { ll, lp, top: below }
}

/// What [`model_t`] returns: log p(x|z₁), Σ_l log p(z_l|z_{l+1}) (`None` for one layer) and
/// z_L, all per row and on the tape.
pub(crate) struct ModelTerms<E: Real, T> {
    pub ll: Vector<E, T>,
    pub lp: Option<Vector<E, T>>,
    pub top: Mat<E, T>,
}

/// Gradients by parameter name, in canonical order.
pub(crate) type NamedGrads<E> = Vec<(String, Vec<E>)>;

/// log p(x|z), log p(z) (all layers' prior terms) and log q per sample row, without a tape,
/// for `n` examples × `k` samples at noise `eps` (validated by the caller).
pub(crate) struct StackTerms {
    pub ll: Vec<f64>,
    pub lp: Vec<f64>,
    pub lq: Vec<f64>,
}

/// Evaluates [`StackTerms`] for inputs the caller has validated (one chunk).
pub(crate) fn stack_terms<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    x: &[E],
    n: usize,
    k: usize,
    eps: &[E],
) -> Result<StackTerms> {
    let cfg = vae.config();
    let rows = n * k;
    let noise = split_noise(eps, rows, &cfg.latent_dims())?;
    let x_t: Mat<E> = mat_from(n, cfg.input_dim, x.to_vec())?;
    let chain = chain_t::<E, NoneTape>(vae, x_t.clone(), &noise, n, k, QMode::Reparam, &[])?;
    let lq = chain.lq.as_vec();
    let ModelTerms {
        ll,
        lp: lp_cond,
        top,
    } = model_t(vae, chain.z, &x_t, n, k);
    let mut lp = prior.log_density_unchecked(vae, &top.as_vec(), rows)?;
    if let Some(c) = lp_cond {
        for (a, b) in lp.iter_mut().zip(c.as_vec()) {
            *a += b.as_f64();
        }
    }
    Ok(StackTerms {
        ll: ll.as_vec().iter().map(|v| v.as_f64()).collect(),
        lp,
        lq: lq.iter().map(|v| v.as_f64()).collect(),
    })
}

/// The batch-mean objective and its gradient (trainable parameters `names`, canonical order)
/// on the tape for a model with several stochastic layers (inputs validated by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_stack<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    obj: &Objective,
    tr: Trainable,
    names: &[String],
    x: &[E],
    n: usize,
    eps: &[E],
) -> Result<(f64, NamedGrads<E>)> {
    if obj.analytic_kl {
        return Err(NnError::InvalidConfig(
            "analytic_kl is defined for one stochastic layer only (the KL of a hierarchical \
             posterior has no closed form)"
                .into(),
        ));
    }
    let cfg = vae.config();
    let k = obj.samples();
    let rows = n * k;
    let noise = split_noise(eps, rows, &cfg.latent_dims())?;
    let x_c: Mat<E> = mat_from(n, cfg.input_dim, x.to_vec())?;
    let joint = tr.encoder && obj.estimator == Estimator::Reparam && !obj.kind.splits_weights();
    let model_pass = (tr.decoder || tr.prior) && !joint;

    // The encoder pass (when the encoder is trained), whose values give the weights.
    let mode = match obj.estimator {
        Estimator::Reparam => QMode::Reparam,
        Estimator::Dreg => QMode::Stopped,
    };
    let stopped: Vec<GaussNet<E>> = match mode {
        QMode::Stopped => vae.upper.iter().map(|u| u.enc.stopped()).collect(),
        QMode::Reparam => Vec::new(),
    };
    let (enc_pass, lw, z_vals) = if tr.encoder {
        let chain = chain_t(
            vae,
            x_c.clone().retaped::<Taped<E>>(),
            &noise,
            n,
            k,
            mode,
            &stopped,
        )?;
        let z_vals: Vec<Vec<E>> = chain.z.iter().map(|z| z.as_vec()).collect();
        let l = log_weight_t(vae, prior, chain, &x_c, n, k);
        let lw: Vec<f64> = l.as_vec().iter().map(|v| v.as_f64()).collect();
        (Some(l), lw, z_vals)
    } else {
        let chain = chain_t::<E, NoneTape>(vae, x_c.clone(), &noise, n, k, QMode::Reparam, &[])?;
        let z_vals: Vec<Vec<E>> = chain.z.iter().map(|z| z.as_vec()).collect();
        let lq = chain.lq.as_vec();
        let ModelTerms { ll, lp, top } = model_t(vae, chain.z, &x_c, n, k);
        let ll = ll.as_vec();
        let lp = lp.map(|v| v.as_vec());
        let mut lw: Vec<f64> = prior.log_density_unchecked(vae, &top.as_vec(), rows)?;
        for (r, w) in lw.iter_mut().enumerate() {
            let cond = lp.as_ref().map_or(0.0, |v| v[r].as_f64());
            *w += ll[r].as_f64() - lq[r].as_f64() + cond;
        }
        (None, lw, z_vals)
    };

    // Weights.
    let (mut dec, mut enc, mut f) = (vec![0.0; rows], vec![0.0; rows], vec![0.0; rows]);
    let mut total = 0.0;
    for i in 0..n {
        let r = i * k..(i + 1) * k;
        total += weigh_example(
            obj.kind,
            &lw[r.clone()],
            SampleWeights {
                dec: &mut dec[r.clone()],
                enc: &mut enc[r.clone()],
                dreg_factor: &mut f[r],
            },
        )
        .map_err(|e| match e {
            NnError::Diverged { what } => NnError::Diverged {
                what: format!("example {i}: {what}"),
            },
            e => e,
        })?;
    }
    let value = total / n as f64;
    if !value.is_finite() {
        return Err(NnError::Diverged {
            what: format!("objective ({value})"),
        });
    }
    // Coefficients below the subnormal range of the backward pass are flushed (`per_batch`).
    let scale = |c: Vec<f64>| -> Vec<f64> { c.into_iter().map(|v| per_batch::<E>(v, n)).collect() };

    let mut grads_enc = None;
    if let Some(l) = enc_pass {
        let c: Vec<f64> = match (obj.estimator, joint) {
            (_, true) => dec.clone(),
            (Estimator::Reparam, false) => enc.clone(),
            (Estimator::Dreg, false) => enc.iter().zip(&f).map(|(a, b)| a * b).collect(),
        };
        let c_t = const_vec::<E>(&scale(c))?;
        grads_enc = Some((l * c_t).sum::<(), _>().try_backward()?);
    }
    let mut grads_model = None;
    if model_pass {
        let z: Vec<Mat<E, Taped<E>>> = z_vals
            .into_iter()
            .zip(cfg.latent_dims())
            .map(|(v, d)| Ok(mat_from(rows, d, v)?.retaped::<Taped<E>>()))
            .collect::<Result<_>>()?;
        let ModelTerms { ll, lp, top } = model_t(vae, z, &x_c, n, k);
        let mut s = ll + prior.log_density_t(vae, top);
        if let Some(lp) = lp {
            s = s + lp;
        }
        let c_t = const_vec::<E>(&scale(dec))?;
        grads_model = Some((s * c_t).sum::<(), _>().try_backward()?);
    }

    let mut grads = Vec::with_capacity(names.len());
    for (name, p) in vae.params().into_iter().chain(prior.params()) {
        if !names.contains(&name) {
            continue;
        }
        let mut acc = vec![E::zero(); p.len()];
        let from_enc = joint || Group::of(&name) == Some(Group::Encoder);
        let source = if from_enc {
            grads_enc.as_mut()
        } else {
            grads_model.as_mut()
        };
        if let Some(g) = source {
            p.add_grad_to(g, &mut acc)?;
        }
        grads.push((name, acc));
    }
    Ok((value, grads))
}

/// ℓ = log p(x|z₁) + Σ log p(z_l|z_{l+1}) + log p(z_L) − log q per row, on the tape.
fn log_weight_t<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    chain: Chain<E, Taped<E>>,
    x: &Mat<E>,
    n: usize,
    k: usize,
) -> Vector<E, Taped<E>> {
    let lq = chain.lq;
    let ModelTerms { ll, lp, top } = model_t(vae, chain.z, x, n, k);
    let mut l = ll + prior.log_density_t(vae, top) - lq;
    if let Some(lp) = lp {
        l = l + lp;
    }
    l
}
