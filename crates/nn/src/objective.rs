//! Training objectives and their gradients at fixed noise.
//!
//! * ELBO with k samples: mean_i log w_i (optionally with the analytic KL for k = 1 under the
//!   standard-normal prior).
//! * IWAE (Burda et al. 2016): L̂_k = logsumexp_i log w_i − log k, whose gradient is
//!   Σ_i w̃_i ∇ log w_i with w̃ = softmax(log w) held constant.
//! * DReG (Tucker, Lawson, Gu & Maddison 2019) for the encoder: Σ_i w̃_i² (∂ log w_i/∂z_i)
//!   (∂z_i/∂φ) with q's parameters stopped inside log q(z_i|x); the decoder and the prior keep
//!   the IWAE gradient. With k = 1 this is the sticking-the-landing estimator (Roeder et al.
//!   2017). For the ELBO objective, `Dreg` means sticking-the-landing per sample:
//!   (1/k) Σ_i (∂ log w_i/∂z_i)(∂z_i/∂φ) with q stopped, i.e. the reparameterised ELBO gradient
//!   minus its zero-mean score term.
//!
//! # How the gradient is computed (two tapes)
//! The model tape (decoder, prior) starts at a leaf z; its surrogate Σ_r c_r (log p(x|z_r) +
//! log p(z_r)), with constant weights c_r (w̃/n for IWAE, 1/(nk) for the ELBO), yields the
//! decoder and prior gradients and G_r = ∂/∂z_r. The encoder cotangents are then formed outside
//! any tape — ∂/∂μ = Σ_j G, ∂/∂ln σ = σ Σ_j G ε plus, for the standard estimator, the
//! derivative of −log q = Σ ln σ + const — and pulled back through the encoder on its own tape.
//! For DReG, G_r is replaced by w̃_r (G_r + c_r ε_r/σ) (the +ε/σ is −∂ log q_stop/∂z), and the
//! score term is dropped. The value returned is the objective itself, never the surrogate.

use dfdx::prelude::*;

use std::any::Any;

use crate::bounds::{analytic_kl, check_inputs, check_noise, log_q, sample_z};
use crate::config::Group;
use crate::error::{NnError, Result};
use crate::fast::Engine;
use crate::model::Vae;
use crate::named::NamedTensor;
use crate::param::{mat_from, vec_from};
use crate::prior::Prior;
use crate::real::{Mat, Real, Taped, Vector};
use crate::task::{Estimator, Objective, Trainable};
use crate::weights::{SampleWeights, per_batch, weigh_example};

/// Result of one gradient evaluation.
pub(crate) struct Evaluation<E> {
    /// Batch mean of the objective.
    pub value: f64,
    /// Gradients of the batch-mean objective (ascent direction), trainable parameters only,
    /// in canonical order (model, then prior).
    pub grads: Vec<(String, Vec<E>)>,
}

/// Names of the trainable parameters in canonical order; errors if there are none.
pub(crate) fn trainable_names<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    tr: Trainable,
) -> Result<Vec<String>> {
    let names: Vec<String> = vae
        .params()
        .into_iter()
        .chain(prior.params())
        .map(|(n, _)| n)
        .filter(|n| Group::of(n).is_some_and(|g| tr.includes(g)))
        .collect();
    if names.is_empty() {
        return Err(NnError::InvalidConfig(format!(
            "nothing to train: {tr:?} selects no parameters (the standard-normal prior has none)"
        )));
    }
    Ok(names)
}

/// The batch-mean objective and its gradient with respect to the trainable parameters at fixed
/// noise `eps` (n·k·latent_dim values, as in
/// [`log_weights_with_noise`](crate::log_weights_with_noise)).
///
/// For `Estimator::Reparam` the gradients are exactly ∇ of the returned value (for IWAE, of the
/// batch mean of logsumexp − log k). For `Dreg` they are the DReG/STL estimates, which equal it
/// only in expectation over the noise. Gradient names are the parameter names.
///
/// For `f32` models under the standard-normal or a mixture prior on a CPU with AVX2 and FMA
/// this runs the fast training path (the one [`Trainer`](crate::Trainer) uses; see
/// [`fast_path_available`]); otherwise, and always with
/// [`objective_and_grads_with_noise_reference`], the generic dfdx-tape path. Both compute the
/// same quantities; they differ by `f32` rounding.
pub fn objective_and_grads_with_noise<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    objective: &Objective,
    trainable: Trainable,
    x: &[E],
    n: usize,
    eps: &[E],
) -> Result<(f64, Vec<NamedTensor<E>>)> {
    let ev = evaluate(vae, prior, objective, trainable, x, n, eps)?;
    Ok((ev.value, named_grads(vae, prior, ev.grads)))
}

/// [`objective_and_grads_with_noise`] on the generic path (dfdx's tape, any precision): the
/// reference the fast `f32` path is tested against.
pub fn objective_and_grads_with_noise_reference<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    objective: &Objective,
    trainable: Trainable,
    x: &[E],
    n: usize,
    eps: &[E],
) -> Result<(f64, Vec<NamedTensor<E>>)> {
    validate_inputs(vae, prior, objective, trainable, x, n, eps)?;
    let ev = evaluate_reference(vae, prior, objective, trainable, x, n, eps)?;
    Ok((ev.value, named_grads(vae, prior, ev.grads)))
}

/// Whether [`objective_and_grads_with_noise`] and [`Trainer`](crate::Trainer) take the fast
/// `f32` path for this model, prior and objective on this CPU (AVX2 and FMA, `f32`, the
/// standard-normal prior, a mixture of at most 4096 components or a VampPrior with at most
/// that many pseudo-inputs, one stochastic layer).
pub fn fast_path_available<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    objective: &Objective,
    trainable: Trainable,
) -> bool {
    fast_engine(vae, prior, objective, trainable).is_some()
}

/// A fast-path engine when the combination is supported.
pub(crate) fn fast_engine<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    objective: &Objective,
    trainable: Trainable,
) -> Option<Engine> {
    (vae as &dyn Any).downcast_ref::<Vae<f32>>()?;
    if vae.config().stochastic_layers() > 1 {
        // Several stochastic layers: the tape (`stack.rs`).
        return None;
    }
    if objective.validate(prior).is_err() {
        return None;
    }
    Engine::new(vae.config(), prior.kind(), objective, trainable)
}

fn named_grads<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    grads: Vec<(String, Vec<E>)>,
) -> Vec<NamedTensor<E>> {
    let shapes: Vec<(String, Vec<usize>)> = vae
        .params()
        .into_iter()
        .chain(prior.params())
        .map(|(name, p)| (name, p.shape()))
        .collect();
    grads
        .into_iter()
        .map(|(name, data)| {
            let shape = shapes
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            NamedTensor { name, shape, data }
        })
        .collect()
}

/// Checks the objective against the prior, the trainable set, the data and the noise; returns
/// the trainable parameter names.
pub(crate) fn validate_inputs<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    obj: &Objective,
    tr: Trainable,
    x: &[E],
    n: usize,
    eps: &[E],
) -> Result<Vec<String>> {
    obj.validate(prior)?;
    let names = trainable_names(vae, prior, tr)?;
    let len = check_inputs(vae, prior, x, n, obj.samples())?;
    check_noise(eps, n, obj.samples(), vae.config(), len)?;
    Ok(names)
}

/// See [`objective_and_grads_with_noise`]: the fast path where available, else the generic one.
pub(crate) fn evaluate<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    obj: &Objective,
    tr: Trainable,
    x: &[E],
    n: usize,
    eps: &[E],
) -> Result<Evaluation<E>> {
    let names = validate_inputs(vae, prior, obj, tr, x, n, eps)?;
    if let Some(mut engine) = fast_engine(vae, prior, obj, tr) {
        let value = evaluate_fast(&mut engine, vae, prior, x, n, eps)?;
        let grads = names
            .into_iter()
            .enumerate()
            .map(|(t, name)| {
                (
                    name,
                    engine.gradient(t).into_iter().map(E::of_f32).collect(),
                )
            })
            .collect();
        return Ok(Evaluation { value, grads });
    }
    evaluate_reference(vae, prior, obj, tr, x, n, eps)
}

/// Runs `engine` on an `f32` model (the caller has validated the inputs).
pub(crate) fn evaluate_fast<E: Real>(
    engine: &mut Engine,
    vae: &Vae<E>,
    prior: &Prior<E>,
    x: &[E],
    n: usize,
    eps: &[E],
) -> Result<f64> {
    match (
        (vae as &dyn Any).downcast_ref::<Vae<f32>>(),
        (prior as &dyn Any).downcast_ref::<Prior<f32>>(),
        E::f32_slice(x),
        E::f32_slice(eps),
    ) {
        (Some(vae), Some(prior), Some(x), Some(eps)) => engine.evaluate(vae, prior, x, n, eps),
        _ => Err(NnError::InvalidConfig(
            "the fast training path needs an f32 model".into(),
        )),
    }
}

/// The generic path on dfdx's tape (inputs validated by the caller).
pub(crate) fn evaluate_reference<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    obj: &Objective,
    tr: Trainable,
    x: &[E],
    n: usize,
    eps: &[E],
) -> Result<Evaluation<E>> {
    let names = trainable_names(vae, prior, tr)?;
    if vae.config().stochastic_layers() > 1 {
        let (value, grads) = crate::stack::evaluate_stack(vae, prior, obj, tr, &names, x, n, eps)?;
        return Ok(Evaluation { value, grads });
    }
    let k = obj.samples();
    let cfg = vae.config();
    let (dd, d) = (cfg.input_dim, cfg.latent_dim);
    let nk = n * k;

    // Encoder: on its own tape when it is trained.
    let x_t: Mat<E> = mat_from(n, dd, x.to_vec())?;
    let (enc_tape, mean, log_std) = if tr.encoder {
        let (mu_t, ls_t) = vae.encode_t(x_t.clone().leaky_traced());
        let (mu, ls) = (mu_t.as_vec(), ls_t.as_vec());
        (Some((mu_t, ls_t)), mu, ls)
    } else {
        let (mu_t, ls_t) = vae.encode_t(x_t.clone());
        (None, mu_t.as_vec(), ls_t.as_vec())
    };
    let std: Vec<E> = log_std.iter().map(|v| v.exp()).collect();
    let lq = log_q(&log_std, eps, k, d);

    // Model tape, from the leaf z.
    let z: Vec<E> = sample_z(&mean, &std, eps, k, d);
    let z_leaf: Mat<E, Taped<E>> = mat_from(nk, d, z.clone())?.leaky_traced();
    let z_ref: Mat<E> = z_leaf.retaped();
    let model = model_forward(vae, prior, obj, tr, z_leaf, &x_t, n, k);
    let (ll_vals, lp_vals) = (model.ll_vals.clone(), model.lp_vals.clone());

    let kl = if obj.analytic_kl {
        analytic_kl(&mean, &log_std, d)
    } else {
        Vec::new()
    };
    let Weights {
        value,
        dec,
        enc,
        dreg_factor,
    } = weigh(obj, &ll_vals, &lp_vals, &lq, &kl, n)?;

    // Backward through the model tape under the decoder's weights.
    let mut grads_model = model.backward(&dec)?;

    // ∂/∂z under the encoder's weights: the same gradients unless the kind splits them
    // (PIWAE), which runs the model tape a second time.
    let mut grads_enc = None;
    if let Some((mu_t, ls_t)) = enc_tape {
        let gz: Vec<E> = if obj.kind.splits_weights() {
            let z_leaf: Mat<E, Taped<E>> = mat_from(nk, d, z)?.leaky_traced();
            let z_ref2: Mat<E> = z_leaf.retaped();
            let again = model_forward(vae, prior, obj, tr, z_leaf, &x_t, n, k);
            match again.backward(&enc)? {
                Some(mut g) => g.get_or_alloc_mut(&z_ref2)?.to_vec(),
                None => vec![E::zero(); nk * d],
            }
        } else {
            match grads_model.as_mut() {
                Some(g) => g.get_or_alloc_mut(&z_ref)?.to_vec(),
                None => vec![E::zero(); nk * d],
            }
        };
        let (g_mu, g_ls) = encoder_cotangents(
            obj,
            Cotangents {
                gz: &gz,
                eps,
                mean: &mean,
                std: &std,
                enc: &enc,
                dreg_factor: &dreg_factor,
                n,
                d,
            },
        );
        let to_mat = |v: Vec<f64>| mat_from(n, d, v.into_iter().map(E::of_f64).collect());
        let s_enc = (mu_t * to_mat(g_mu)?).sum::<(), _>() + (ls_t * to_mat(g_ls)?).sum::<(), _>();
        grads_enc = Some(s_enc.try_backward()?);
    }

    // Collect gradients of the trainable parameters.
    let mut grads = Vec::with_capacity(names.len());
    for (name, p) in vae.params().into_iter().chain(prior.params()) {
        if !names.contains(&name) {
            continue;
        }
        let mut acc = vec![E::zero(); p.len()];
        if let Some(gm) = grads_model.as_mut() {
            p.add_grad_to(gm, &mut acc)?;
        }
        if Group::of(&name) == Some(Group::Encoder)
            && let Some(ge) = grads_enc.as_mut()
        {
            p.add_grad_to(ge, &mut acc)?;
        }
        grads.push((name, acc));
    }
    Ok(Evaluation { value, grads })
}

/// The model tape's outputs: log p(x|z) and log p(z) per sample row, on the tape when a
/// gradient is wanted.
struct ModelTape<E: Real> {
    ll_vals: Vec<E>,
    lp_vals: Vec<E>,
    ll: Option<Vector<E, Taped<E>>>,
    lp: Option<Vector<E, Taped<E>>>,
}

/// Runs the decoder and the prior forward from the leaf `z_leaf` (`n·k` rows).
#[allow(clippy::too_many_arguments)]
fn model_forward<E: Real>(
    vae: &Vae<E>,
    prior: &Prior<E>,
    obj: &Objective,
    tr: Trainable,
    z_leaf: Mat<E, Taped<E>>,
    x_t: &Mat<E>,
    n: usize,
    k: usize,
) -> ModelTape<E> {
    let z_ref: Mat<E> = z_leaf.retaped();
    let (ll_vals, ll) = if tr.encoder || tr.decoder {
        let ll = vae.log_likelihood_t(vae.decode_t(z_leaf.with_empty_tape()), x_t, n, k);
        (ll.as_vec(), Some(ll))
    } else {
        let ll = vae.log_likelihood_t(vae.decode_t(z_ref), x_t, n, k);
        (ll.as_vec(), None)
    };
    let (lp_vals, lp) = if obj.analytic_kl {
        (Vec::new(), None)
    } else {
        let lp = prior.log_density_t(vae, z_leaf);
        (lp.as_vec(), Some(lp))
    };
    ModelTape {
        ll_vals,
        lp_vals,
        ll,
        lp,
    }
}

impl<E: Real> ModelTape<E> {
    /// Gradients of the surrogate Σ_r c_r (log p(x|z_r) + log p(z_r)) (`None` if nothing on
    /// the model tape is differentiated).
    fn backward(self, c: &[f64]) -> Result<Option<Gradients<E, crate::real::Dev<E>>>> {
        let c_t: Vector<E> = vec_from(c.iter().map(|&v| E::of_f64(v)).collect())?;
        let surrogate = match (self.ll, self.lp) {
            (Some(ll), Some(lp)) => {
                Some((ll * c_t.clone()).sum::<(), _>() + (lp * c_t).sum::<(), _>())
            }
            (Some(ll), None) => Some((ll * c_t).sum::<(), _>()),
            (None, Some(lp)) => Some((lp * c_t).sum::<(), _>()),
            (None, None) => None,
        };
        Ok(match surrogate {
            Some(s) => Some(s.try_backward()?),
            None => None,
        })
    }
}

/// The objective's value and the per-row coefficients (already divided by the batch size n;
/// see `weights.rs`).
struct Weights {
    /// Batch mean of the objective.
    value: f64,
    /// Decoder and prior weights of ∇ log w_r.
    dec: Vec<f64>,
    /// Encoder weights of ∇ log w_r, and the weights under which ∂/∂z is taken.
    enc: Vec<f64>,
    /// DReG's b_r / enc_r.
    dreg_factor: Vec<f64>,
}

/// Forms log w = log p(x|z) + log p(z) − log q(z|x) per row (or uses the analytic KL), the
/// per-example objective, its batch mean and the weights. Non-finite log-weights are a
/// divergence.
fn weigh<E: Real>(
    obj: &Objective,
    ll: &[E],
    lp: &[E],
    lq: &[f64],
    kl: &[f64],
    n: usize,
) -> Result<Weights> {
    let k = obj.samples();
    let mut dec = vec![0.0f64; n * k];
    let mut enc = vec![0.0f64; n * k];
    let mut dreg_factor = vec![0.0f64; n * k];
    let mut total = 0.0f64;
    for i in 0..n {
        let rows = i * k..(i + 1) * k;
        if obj.analytic_kl {
            // k = 1 (validated): reconstruction − KL.
            total += ll[i].as_f64() - kl[i];
            dec[i] = 1.0 / n as f64;
            enc[i] = 1.0 / n as f64;
            dreg_factor[i] = 1.0;
            continue;
        }
        let lw: Vec<f64> = rows
            .clone()
            .map(|r| ll[r].as_f64() + lp[r].as_f64() - lq[r])
            .collect();
        total += weigh_example(
            obj.kind,
            &lw,
            SampleWeights {
                dec: &mut dec[rows.clone()],
                enc: &mut enc[rows.clone()],
                dreg_factor: &mut dreg_factor[rows.clone()],
            },
        )
        .map_err(|e| match e {
            NnError::Diverged { what } => NnError::Diverged {
                what: format!("example {i}: {what}"),
            },
            e => e,
        })?;
        for r in rows {
            dec[r] = per_batch::<E>(dec[r], n);
            enc[r] = per_batch::<E>(enc[r], n);
        }
    }
    let value = total / n as f64;
    if !value.is_finite() {
        return Err(NnError::Diverged {
            what: format!("objective ({value})"),
        });
    }
    Ok(Weights {
        value,
        dec,
        enc,
        dreg_factor,
    })
}

/// Inputs of [`encoder_cotangents`].
struct Cotangents<'a, E> {
    /// ∂(model-tape surrogate)/∂z per sample row, weighted by `enc`.
    gz: &'a [E],
    eps: &'a [E],
    mean: &'a [E],
    std: &'a [E],
    enc: &'a [f64],
    dreg_factor: &'a [f64],
    n: usize,
    d: usize,
}

/// Cotangents of the batch objective with respect to the encoder outputs μ and ln σ
/// (n × d each), from z = μ + σ ε: ∂/∂μ = Σ_j G_j, ∂/∂ln σ = σ Σ_j G_j ε_j, plus the direct
/// terms of −log q (standard estimator) or of −KL (analytic KL). For DReG,
/// G_r = f_r (G_r + a_r ε_r/σ) with a = `enc` and f = `dreg_factor` (w̃_r for IWAE, 1 for the
/// ELBO — sticking the landing; `weights.rs` for every kind) and the score term is dropped.
fn encoder_cotangents<E: Real>(obj: &Objective, a: Cotangents<'_, E>) -> (Vec<f64>, Vec<f64>) {
    let (n, d, k) = (a.n, a.d, obj.samples());
    let mut g_mu = vec![0.0f64; n * d];
    let mut g_ls = vec![0.0f64; n * d];
    for r in 0..n * k {
        let i = r / k;
        for l in 0..d {
            let e = a.eps[r * d + l].as_f64();
            let s = a.std[i * d + l].as_f64();
            let g = a.gz[r * d + l].as_f64();
            let g = match obj.estimator {
                Estimator::Reparam => g,
                Estimator::Dreg => a.dreg_factor[r] * (g + a.enc[r] * e / s),
            };
            g_mu[i * d + l] += g;
            g_ls[i * d + l] += g * e * s;
            if obj.estimator == Estimator::Reparam && !obj.analytic_kl {
                // −a_r log q(z_r|x) = a_r Σ ln σ + const.
                g_ls[i * d + l] += a.enc[r];
            }
        }
    }
    if obj.analytic_kl {
        // −KL/n with KL = Σ ½(μ² + σ² − 1) − ln σ.
        for ((gm, gl), (&m, &s)) in g_mu
            .iter_mut()
            .zip(g_ls.iter_mut())
            .zip(a.mean.iter().zip(a.std))
        {
            let (m, s) = (m.as_f64(), s.as_f64());
            *gm -= m / n as f64;
            *gl -= (s * s - 1.0) / n as f64;
        }
    }
    (g_mu, g_ls)
}
