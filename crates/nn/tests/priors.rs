//! Priors: the mixture log-density equals a naive per-component reference (also when σ is tiny,
//! where the expanded exponent cancels); a VampPrior whose pseudo-inputs are N data points
//! reproduces the aggregate posterior of those points; the training path's log-density equals
//! the inference path's; prior gradients (mixture parameters, pseudo-inputs, and the encoder
//! through the VampPrior) match finite differences; sampling follows the mixture weights.

mod common;

use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vaepipe_nn::*;

/// log Σ_k π_k N(z; μ_k, σ_k²) evaluated component by component, dimension by dimension.
fn naive_mixture(z: &[f64], logits: &[f64], means: &[f64], log_stds: &[f64], d: usize) -> f64 {
    let lse_logits = log_sum_exp(logits);
    let terms: Vec<f64> = (0..logits.len())
        .map(|c| {
            let mut t = logits[c] - lse_logits;
            for j in 0..d {
                let s = log_stds[c * d + j].exp();
                let u = (z[j] - means[c * d + j]) / s;
                t += -0.5 * u * u - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
            }
            t
        })
        .collect();
    log_sum_exp(&terms)
}

fn random_mixture(k: usize, d: usize, std_scale: f64, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let logits: Vec<f64> = standard_normal_noise(&mut rng, k);
    let means: Vec<f64> = standard_normal_noise::<f64, _>(&mut rng, k * d)
        .iter()
        .map(|v| 2.0 * v)
        .collect();
    let log_stds: Vec<f64> = standard_normal_noise::<f64, _>(&mut rng, k * d)
        .iter()
        .map(|v| 0.3 * v + std_scale.ln())
        .collect();
    (logits, means, log_stds)
}

#[test]
fn mixture_log_density_matches_naive_reference() {
    let cfg = bernoulli_cfg();
    let d = cfg.latent_dim;
    let vae: Vae<f64> = Vae::new(&cfg, 1).unwrap();
    for (k, scale, tol) in [(7, 1.0, 1e-11), (40, 0.01, 1e-6)] {
        let (logits, means, log_stds) = random_mixture(k, d, scale, k as u64);
        let prior = Prior::mixture(k, d, logits.clone(), means.clone(), log_stds.clone()).unwrap();
        // Points near component centres (the hard case for the expansion when σ is tiny) and
        // far from everything.
        let mut z = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let noise: Vec<f64> = standard_normal_noise(&mut rng, 20 * d);
        for r in 0..20 {
            for j in 0..d {
                let c = r % k;
                let near = means[c * d + j] + log_stds[c * d + j].exp() * noise[r * d + j];
                z.push(if r < 15 { near } else { 3.0 * noise[r * d + j] });
            }
        }
        let got = prior.log_density(&vae, &z, 20).unwrap();
        for r in 0..20 {
            let want = naive_mixture(&z[r * d..(r + 1) * d], &logits, &means, &log_stds, d);
            assert!(
                (got[r] - want).abs() <= tol * want.abs().max(1.0),
                "K={k}, σ≈{scale}: row {r}: {} vs naive {want}",
                got[r]
            );
        }
    }
}

#[test]
fn vamp_with_data_pseudo_inputs_equals_aggregate_posterior() {
    let cfg = bernoulli_cfg();
    let n = 30;
    let x: Vec<f32> = binary_data(n, cfg.input_dim, 2)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let vae: Vae<f32> = Vae::new(&cfg, 3).unwrap();
    let agg = Prior::aggregate_posterior(&vae, &x).unwrap();
    assert_eq!(agg.kind(), PriorKind::Mixture { components: n });
    let vamp = Prior::vamp(n, cfg.input_dim, x.clone()).unwrap();
    let mut rng = stream_rng(4, 0);
    let z: Vec<f32> = agg.sample(&vae, 50, &mut rng).unwrap();
    let a = agg.log_density(&vae, &z, 50).unwrap();
    let b = vamp.log_density(&vae, &z, 50).unwrap();
    for (u, v) in a.iter().zip(&b) {
        assert!(
            (u - v).abs() <= 1e-12 * u.abs().max(1.0),
            "aggregate {u} vs VampPrior {v}"
        );
    }
}

#[test]
fn training_path_log_density_equals_inference_path() {
    // The objective's value (tape, f64) equals the bound from the inference path's log-weights
    // at the same noise, for every prior.
    let cfg = bernoulli_cfg();
    let n = 4;
    let k = 6;
    let x = binary_data(n, cfg.input_dim, 5);
    let vae: Vae<f64> = Vae::new(&cfg, 2).unwrap();
    let (logits, means, log_stds) = random_mixture(5, cfg.latent_dim, 0.5, 3);
    let priors = [
        Prior::StandardNormal,
        Prior::mixture(5, cfg.latent_dim, logits, means, log_stds).unwrap(),
        Prior::vamp(3, cfg.input_dim, binary_data(3, cfg.input_dim, 6)).unwrap(),
    ];
    let mut rng = stream_rng(8, 0);
    let eps: Vec<f64> = standard_normal_noise(&mut rng, n * k * cfg.latent_dim);
    for prior in &priors {
        let lw = log_weights_with_noise(&vae, prior, &x, n, k, &eps).unwrap();
        let bound = bound_from_log_weights(&lw, n, k).unwrap();
        let mean = bound.iter().sum::<f64>() / n as f64;
        let (value, _) = objective_and_grads_with_noise(
            &vae,
            prior,
            &Objective::iwae(k).unwrap(),
            Trainable::ALL,
            &x,
            n,
            &eps,
        )
        .unwrap();
        assert!(
            (value - mean).abs() < 1e-10 * mean.abs(),
            "{:?}: {value} vs {mean}",
            prior.kind()
        );
    }
}

#[test]
fn prior_gradients_match_finite_differences() {
    let cfg = bernoulli_cfg();
    let n = 2;
    let x = binary_data(n, cfg.input_dim, 7);
    let vae: Vae<f64> = Vae::new(&cfg, 4).unwrap();
    let (logits, means, log_stds) = random_mixture(4, cfg.latent_dim, 0.7, 5);
    let mixture = Prior::mixture(4, cfg.latent_dim, logits, means, log_stds).unwrap();
    let mut rng = stream_rng(6, 0);
    let vamp = Prior::vamp_init(&cfg, &binary_data(10, cfg.input_dim, 8), 10, 3, &mut rng).unwrap();
    for (prior, trainable) in [
        (&mixture, Trainable::PRIOR),
        (&mixture, Trainable::ALL),
        (&vamp, Trainable::PRIOR),
        // The VampPrior depends on the encoder: its gradient flows into the encoder too.
        (&vamp, Trainable::ALL),
    ] {
        for k in [1, 5] {
            let eps: Vec<f64> = standard_normal_noise(&mut rng, n * k * cfg.latent_dim);
            let worst = check_gradients(
                &vae,
                prior,
                &Objective::iwae(k).unwrap(),
                trainable,
                Batch {
                    x: &x,
                    n,
                    eps: &eps,
                },
                10,
            );
            println!(
                "{:?} {trainable:?} k={k}: worst relative error {worst:.2e}",
                prior.kind()
            );
        }
    }
}

#[test]
fn mixture_samples_follow_the_weights() {
    let cfg = bernoulli_cfg();
    let d = cfg.latent_dim;
    let vae: Vae<f32> = Vae::new(&cfg, 1).unwrap();
    // π = (0.25, 0.75) via logits (0, ln 3); components at −5 and +5 with σ = 0.5.
    let prior = Prior::mixture(
        2,
        d,
        vec![0.0, 3f32.ln()],
        [vec![-5.0; d], vec![5.0; d]].concat(),
        vec![0.5f32.ln(); 2 * d],
    )
    .unwrap();
    let n = 4000;
    let z = prior.sample(&vae, n, &mut stream_rng(1, 2)).unwrap();
    let positive = z.chunks(d).filter(|r| r[0] > 0.0).count() as f64 / n as f64;
    let se = (0.75 * 0.25 / n as f64).sqrt();
    assert!(
        (positive - 0.75).abs() < 4.0 * se,
        "fraction from the heavier component: {positive}"
    );
    // Every coordinate of a row comes from the same component.
    assert!(
        z.chunks(d)
            .all(|r| r.iter().all(|v| (v > &0.0) == (r[0] > 0.0)))
    );
}

#[test]
fn priors_round_trip_through_named_tensors_and_reject_bad_ones() {
    let cfg = bernoulli_cfg();
    let (logits, means, log_stds) = random_mixture(3, cfg.latent_dim, 1.0, 1);
    let prior: Prior<f64> = Prior::mixture(3, cfg.latent_dim, logits, means, log_stds).unwrap();
    let t = prior.named_tensors();
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["prior.logits", "prior.means", "prior.log_stds"]);
    let back = Prior::from_named_tensors(prior.kind(), &cfg, &t).unwrap();
    assert_eq!(back.named_tensors(), t);
    let err =
        Prior::from_named_tensors(PriorKind::Mixture { components: 4 }, &cfg, &t).unwrap_err();
    assert!(
        err.to_string().contains("prior.logits") && err.to_string().contains("[4]"),
        "{err}"
    );
    let err = Prior::from_named_tensors(PriorKind::Vamp { components: 3 }, &cfg, &t).unwrap_err();
    assert!(err.to_string().contains("prior.pseudo_inputs"), "{err}");
    let err = Prior::from_named_tensors(PriorKind::StandardNormal, &cfg, &t).unwrap_err();
    assert!(
        err.to_string()
            .contains("unexpected tensor `prior.log_stds`"),
        "{err}"
    );
    // A prior whose dimension does not fit the model is rejected before any computation.
    let wrong: Prior<f64> = Prior::mixture(
        2,
        cfg.latent_dim + 1,
        vec![0.0; 2],
        vec![0.0; 8],
        vec![0.0; 8],
    )
    .unwrap();
    let vae: Vae<f64> = Vae::new(&cfg, 1).unwrap();
    let err = wrong.log_density(&vae, &[0.0; 3], 1).unwrap_err();
    assert!(err.to_string().contains("latent_dim"), "{err}");
}
