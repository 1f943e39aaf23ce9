//! Shared helpers for the integration tests: small model configurations, synthetic data, a
//! finite-difference gradient checker and a dense Cholesky log-density for reference values.
#![allow(dead_code)]

pub mod linear;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vaepipe_nn::*;

/// A small Bernoulli VAE: D=6, encoder [5], d=3, decoder [4].
pub fn small_cfg(
    activation: Activation,
    likelihood: Likelihood,
    posterior_std: PosteriorStd,
) -> VaeConfig {
    VaeConfig {
        input_dim: 6,
        encoder_hidden: vec![5],
        latent_dim: 3,
        decoder_hidden: vec![4],
        activation,
        likelihood,
        posterior_std,
        upper: Vec::new(),
    }
}

pub fn bernoulli_cfg() -> VaeConfig {
    small_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp)
}

/// `n × d` binary data from a seeded generator.
pub fn binary_data(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d)
        .map(|_| if rng.r#gen::<f64>() < 0.4 { 1.0 } else { 0.0 })
        .collect()
}

/// `n × d` standard-normal data.
pub fn gaussian_data(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    standard_normal_noise(&mut rng, n * d)
}

/// Replaces one scalar of one named tensor.
pub fn with_value(
    tensors: &[NamedTensor<f64>],
    name: &str,
    idx: usize,
    v: f64,
) -> Vec<NamedTensor<f64>> {
    let mut out = tensors.to_vec();
    let t = out
        .iter_mut()
        .find(|t| t.name == name)
        .expect("tensor exists");
    t.data[idx] = v;
    out
}

/// A data batch with its fixed noise.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub x: &'a [f64],
    pub n: usize,
    pub eps: &'a [f64],
}

/// Checks every gradient entry of `objective_and_grads_with_noise` against a central finite
/// difference (f64) of its value; returns the largest relative error seen.
pub fn check_gradients(
    vae: &Vae<f64>,
    prior: &Prior<f64>,
    objective: &Objective,
    trainable: Trainable,
    batch: Batch<'_>,
    max_entries_per_tensor: usize,
) -> f64 {
    let Batch { x, n, eps } = batch;
    let (_, grads) =
        objective_and_grads_with_noise(vae, prior, objective, trainable, x, n, eps).unwrap();
    assert!(!grads.is_empty());
    let cfg = vae.config().clone();
    let kind = prior.kind();
    let model = vae.named_tensors();
    let prior_t = prior.named_tensors();
    let value_at = |name: &str, idx: usize, v: f64| -> f64 {
        let (m, p) = if name.starts_with("prior.") {
            (model.clone(), with_value(&prior_t, name, idx, v))
        } else {
            (with_value(&model, name, idx, v), prior_t.clone())
        };
        let vae2 = Vae::from_named_tensors(&cfg, &m).unwrap();
        let prior2 = Prior::from_named_tensors(kind, &cfg, &p).unwrap();
        objective_and_grads_with_noise(&vae2, &prior2, objective, trainable, x, n, eps)
            .unwrap()
            .0
    };
    let mut worst = 0.0f64;
    for g in &grads {
        let base = model
            .iter()
            .chain(prior_t.iter())
            .find(|t| t.name == g.name)
            .unwrap_or_else(|| panic!("gradient {} has a parameter", g.name));
        assert_eq!(base.shape, g.shape, "gradient shape of {}", g.name);
        let stride = (g.data.len() / max_entries_per_tensor).max(1);
        for idx in (0..g.data.len()).step_by(stride) {
            let theta = base.data[idx];
            let h = 1e-5 * theta.abs().max(1.0);
            let fd =
                (value_at(&g.name, idx, theta + h) - value_at(&g.name, idx, theta - h)) / (2.0 * h);
            let an = g.data[idx];
            let err = (fd - an).abs() / an.abs().max(1e-2);
            assert!(
                (fd - an).abs() <= 1e-6 * an.abs().max(1.0),
                "{objective:?}: d/d {}[{idx}]: analytic {an:.12e}, finite difference {fd:.12e}",
                g.name
            );
            worst = worst.max(err);
        }
    }
    worst
}

/// log N(x; mean, cov) by Cholesky (dense, small dimensions).
pub fn gaussian_log_density(x: &[f64], mean: &[f64], cov: &[Vec<f64>]) -> f64 {
    let n = x.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|p| l[i][p] * l[j][p]).sum();
            if i == j {
                l[i][i] = (cov[i][i] - s).sqrt();
            } else {
                l[i][j] = (cov[i][j] - s) / l[j][j];
            }
        }
    }
    // Solve L y = x − mean.
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|p| l[i][p] * y[p]).sum();
        y[i] = (x[i] - mean[i] - s) / l[i][i];
    }
    let logdet: f64 = (0..n).map(|i| 2.0 * l[i][i].ln()).sum();
    -0.5 * (y.iter().map(|v| v * v).sum::<f64>()
        + logdet
        + n as f64 * (2.0 * std::f64::consts::PI).ln())
}

/// Mean and standard error of `draws` independent estimates of L_k (first example) under the
/// standard-normal prior.
pub fn lk_mean_stderr(vae: &Vae<f64>, x: &[f64], k: usize, draws: usize, seed: u64) -> (f64, f64) {
    let mut rng = stream_rng(seed, k as u64);
    let vals: Vec<f64> = (0..draws)
        .map(|_| {
            let lw = log_weights(vae, &Prior::StandardNormal, x, 1, k, &mut rng).unwrap();
            bound_from_log_weights(&lw, 1, k).unwrap()[0]
        })
        .collect();
    let mean = vals.iter().sum::<f64>() / draws as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (draws - 1) as f64;
    (mean, (var / draws as f64).sqrt())
}
