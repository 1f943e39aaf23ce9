//! The linear-Gaussian model p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I), where log p(x) and the
//! exact posterior are known in closed form (W has orthogonal columns, so the exact posterior
//! covariance is diagonal and the encoder can represent it exactly).
//!
//! * With q = the exact posterior every importance weight equals p(x): L̂_k = log p(x) for every
//!   draw and every k.
//! * With q perturbed, the averaged bounds satisfy L_1 < L_5 < L_50 < log p(x) beyond Monte
//!   Carlo error (Burda et al. 2016, Theorem 1), and L_5000 is within 0.05 nats of log p(x).

mod common;

use common::linear::{D, LATENT, log_px, model};
use common::lk_mean_stderr;

use vaepipe_nn::*;

fn data() -> Vec<f64> {
    vec![
        0.3, -0.5, 1.2, 0.1, 0.9, //
        -1.0, 0.4, 0.0, -0.3, 0.2, //
        2.0, 1.5, -0.7, 0.6, 1.1,
    ]
}

#[test]
fn exact_posterior_gives_log_px_for_every_draw_and_k() {
    let x = data();
    let n = 3;
    let truth: Vec<f64> = x.chunks(D).map(log_px).collect();
    let vae = model(0.0, 1.0);
    let vae32: Vae<f32> = vae.cast().unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let prior = Prior::StandardNormal;
    let mut rng = stream_rng(7, 0);
    for k in [1, 5, 50] {
        for _ in 0..5 {
            let lw = log_weights(&vae, &prior, &x, n, k, &mut rng).unwrap();
            // Every single weight equals p(x), not just the bound.
            for (i, row) in lw.chunks(k).enumerate() {
                for &v in row {
                    assert!(
                        (v - truth[i]).abs() < 1e-10,
                        "log w = {v}, log p(x) = {}",
                        truth[i]
                    );
                }
            }
            let bound = bound_from_log_weights(&lw, n, k).unwrap();
            for (b, t) in bound.iter().zip(&truth) {
                assert!((b - t).abs() < 1e-10, "f64: L_{k} = {b}, log p(x) = {t}");
            }
            let lw32 = log_weights(&vae32, &Prior::StandardNormal, &x32, n, k, &mut rng).unwrap();
            let bound32 = bound_from_log_weights(&lw32, n, k).unwrap();
            for (b, t) in bound32.iter().zip(&truth) {
                assert!(
                    (b - t).abs() < 2e-5 * t.abs().max(1.0),
                    "f32: L_{k} = {b}, log p(x) = {t}"
                );
            }
        }
    }
    // The training path reports the same value.
    let eps: Vec<f64> = standard_normal_noise(&mut rng, n * 5 * LATENT);
    let (value, _) = objective_and_grads_with_noise(
        &vae,
        &prior,
        &Objective::iwae(5).unwrap(),
        Trainable::MODEL,
        &x,
        n,
        &eps,
    )
    .unwrap();
    let mean_truth = truth.iter().sum::<f64>() / n as f64;
    assert!(
        (value - mean_truth).abs() < 1e-10,
        "{value} vs {mean_truth}"
    );
}

#[test]
fn perturbed_posterior_bounds_are_ordered_and_converge() {
    let x = &data()[..D];
    let truth = log_px(x);
    let vae = model(0.6, 1.6);
    let (l1, s1) = lk_mean_stderr(&vae, x, 1, 4000, 1);
    let (l5, s5) = lk_mean_stderr(&vae, x, 5, 2000, 2);
    let (l50, s50) = lk_mean_stderr(&vae, x, 50, 400, 3);
    let (l5000, s5000) = lk_mean_stderr(&vae, x, 5000, 20, 4);
    println!(
        "log p(x) = {truth:.4}; L1 = {l1:.4} ± {s1:.4}; L5 = {l5:.4} ± {s5:.4}; \
         L50 = {l50:.4} ± {s50:.4}; L5000 = {l5000:.4} ± {s5000:.4}"
    );
    let beyond =
        |lo: (f64, f64), hi: (f64, f64)| hi.0 - lo.0 > 4.0 * (lo.1.powi(2) + hi.1.powi(2)).sqrt();
    assert!(beyond((l1, s1), (l5, s5)), "L1 < L5 not resolved");
    assert!(beyond((l5, s5), (l50, s50)), "L5 < L50 not resolved");
    assert!(
        beyond((l50, s50), (truth, 0.0)),
        "L50 < log p(x) not resolved"
    );
    assert!(
        (l5000 - truth).abs() < 0.05,
        "L5000 = {l5000}, log p(x) = {truth}"
    );
    assert!(l5000 <= truth + 4.0 * s5000);
}
