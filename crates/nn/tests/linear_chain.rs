//! A linear-Gaussian chain with two stochastic layers, z₂ → z₁ → x, where log p(x) and the
//! exact posterior are known in closed form:
//! p(z₂) = N(0, 1), p(z₁|z₂) = N(a z₂ + c, s²), p(x|z₁) = N(w z₁ + b, σ² I) (1-D latents, x in
//! ℝ³). Marginally z₁ ~ N(c, v) with v = a² + s², so x ~ N(w c + b, v w wᵀ + σ² I). The
//! posterior factorises as p(z₁|x) p(z₂|z₁) (z₂ ⟂ x | z₁), both Gaussian with means linear in
//! the conditioning variable and constant variances, which the model's linear encoders
//! represent exactly.
//!
//! * With q = the exact posterior every log-weight equals log p(x), on the generic path, the
//!   training path and the evaluator.
//! * With q perturbed, L_1 < L_5 < L_50 < log p(x) beyond Monte Carlo error (Burda et al.
//!   2016, Theorem 1) and L_5000 is within 0.05 nats of log p(x).

mod common;

use common::lk_mean_stderr;
use vaepipe_nn::*;

const D: usize = 3;
const SIGMA: f64 = 0.5;
const W: [f64; D] = [0.9, -0.5, 1.3];
const B: [f64; D] = [0.2, 0.0, -0.4];
const A: f64 = 1.4;
const C: f64 = -0.3;
const S: f64 = 0.7;

fn cfg() -> VaeConfig {
    VaeConfig {
        input_dim: D,
        encoder_hidden: vec![],
        latent_dim: 1,
        decoder_hidden: vec![],
        activation: Activation::Tanh,
        likelihood: Likelihood::Gaussian {
            std: SIGMA as f32,
            learned: false,
        },
        posterior_std: PosteriorStd::Exp,
        upper: vec![UpperLayer {
            encoder_hidden: vec![],
            latent_dim: 1,
            decoder_hidden: vec![],
        }],
    }
}

/// log p(x) = log N(x; w c + b, v w wᵀ + σ² I) by Sherman–Morrison.
fn log_px(x: &[f64]) -> f64 {
    let v = A * A + S * S;
    let s2 = SIGMA * SIGMA;
    let ww: f64 = W.iter().map(|w| w * w).sum();
    let r: Vec<f64> = (0..D).map(|i| x[i] - W[i] * C - B[i]).collect();
    let rr: f64 = r.iter().map(|v| v * v).sum();
    let wr: f64 = r.iter().zip(W).map(|(a, b)| a * b).sum();
    let quad = (rr - v / (s2 + v * ww) * wr * wr) / s2;
    let log_det = D as f64 * s2.ln() + (1.0 + v * ww / s2).ln();
    -0.5 * (quad + log_det + D as f64 * (2.0 * std::f64::consts::PI).ln())
}

/// The model with q = the exact posterior, its means shifted by `shift` and its standard
/// deviations scaled by `scale` (both layers).
fn model(shift: f64, scale: f64) -> Vae<f64> {
    let v = A * A + S * S;
    let s2 = SIGMA * SIGMA;
    let ww: f64 = W.iter().map(|w| w * w).sum();
    let wb: f64 = W.iter().zip(B).map(|(a, b)| a * b).sum();
    // p(z₁|x): precision p1 = 1/v + |w|²/σ², mean (c/v + wᵀ(x − b)/σ²)/p1.
    let p1 = 1.0 / v + ww / s2;
    // p(z₂|z₁): precision p2 = 1 + a²/s², mean a (z₁ − c)/(s² p2).
    let p2 = 1.0 + A * A / (S * S);
    let t = |name: &str, shape: Vec<usize>, data: Vec<f64>| {
        NamedTensor::new(name, shape, data).unwrap()
    };
    let tensors = vec![
        t(
            "encoder.mean.weight",
            vec![D, 1],
            W.iter().map(|w| w / (s2 * p1)).collect(),
        ),
        t(
            "encoder.mean.bias",
            vec![1],
            vec![(C / v - wb / s2) / p1 + shift],
        ),
        t("encoder.log_std.weight", vec![D, 1], vec![0.0; D]),
        t(
            "encoder.log_std.bias",
            vec![1],
            vec![-0.5 * p1.ln() + scale.ln()],
        ),
        t("decoder.out.weight", vec![1, D], W.to_vec()),
        t("decoder.out.bias", vec![D], B.to_vec()),
        t("encoder.z2.mean.weight", vec![1, 1], vec![A / (S * S * p2)]),
        t(
            "encoder.z2.mean.bias",
            vec![1],
            vec![-A * C / (S * S * p2) - shift],
        ),
        t("encoder.z2.log_std.weight", vec![1, 1], vec![0.0]),
        t(
            "encoder.z2.log_std.bias",
            vec![1],
            vec![-0.5 * p2.ln() + scale.ln()],
        ),
        t("decoder.z1.mean.weight", vec![1, 1], vec![A]),
        t("decoder.z1.mean.bias", vec![1], vec![C]),
        t("decoder.z1.log_std.weight", vec![1, 1], vec![0.0]),
        t("decoder.z1.log_std.bias", vec![1], vec![S.ln()]),
    ];
    Vae::from_named_tensors(&cfg(), &tensors).unwrap()
}

fn data() -> Vec<f64> {
    vec![
        0.3, -0.5, 1.2, //
        -1.0, 0.4, 0.0, //
        2.0, 1.5, -0.7,
    ]
}

#[test]
fn exact_posterior_gives_log_px_for_every_weight() {
    let x = data();
    let n = 3;
    let truth: Vec<f64> = x.chunks(D).map(log_px).collect();
    let vae = model(0.0, 1.0);
    let prior = Prior::StandardNormal;
    let mut rng = stream_rng(7, 0);
    for k in [1, 5, 50] {
        let lw = log_weights(&vae, &prior, &x, n, k, &mut rng).unwrap();
        for (i, row) in lw.chunks(k).enumerate() {
            for &v in row {
                assert!(
                    (v - truth[i]).abs() < 1e-10,
                    "k={k}: log w = {v}, log p(x) = {}",
                    truth[i]
                );
            }
        }
    }
    // The one-sample ELBO's terms: reconstruction − KL (log q − log p over both layers) is
    // log p(x) at every draw.
    let terms = elbo_terms(&vae, &prior, &x, n, &mut rng).unwrap();
    for ((r, kl), t) in terms.reconstruction.iter().zip(&terms.kl).zip(&truth) {
        assert!(
            (r - kl - t).abs() < 1e-10,
            "recon {r} − kl {kl} vs log p(x) {t}"
        );
    }
    // The training path reports the same value for every kind.
    for obj in [
        Objective::iwae(5).unwrap(),
        Objective::new(
            ObjectiveKind::Miwae {
                m: std::num::NonZeroUsize::new(2).unwrap(),
            },
            3,
            Estimator::Dreg,
            false,
        )
        .unwrap(),
    ] {
        let eps: Vec<f64> = standard_normal_noise(&mut rng, n * obj.samples() * 2);
        let (value, _) =
            objective_and_grads_with_noise(&vae, &prior, &obj, Trainable::MODEL, &x, n, &eps)
                .unwrap();
        let mean_truth = truth.iter().sum::<f64>() / n as f64;
        assert!(
            (value - mean_truth).abs() < 1e-10,
            "{value} vs {mean_truth}"
        );
    }
    // The evaluator (f32): L_k = log p(x), the ELBO too, and KL = recon − log p(x).
    let vae32: Vae<f32> = vae.cast().unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let ev = Evaluator::new(&vae32, &Prior::StandardNormal).unwrap();
    let post = ev.encode(&x32).unwrap();
    let opts = SampleOptions {
        k: 100,
        seed: 1,
        first_stream: 0,
        keep_log_weights: false,
    };
    for (e, t) in ev.estimate(&x32, &post, &opts).unwrap().iter().zip(&truth) {
        assert!(
            (e.bound - t).abs() < 1e-4,
            "L_100 = {}, log p(x) = {t}",
            e.bound
        );
        assert!(
            (e.elbo - t).abs() < 1e-4,
            "ELBO = {}, log p(x) = {t}",
            e.elbo
        );
    }
}

#[test]
fn perturbed_posterior_bounds_are_ordered_and_converge() {
    let x = &data()[..D];
    let truth = log_px(x);
    let vae = model(0.5, 1.0);
    let (l1, s1) = lk_mean_stderr(&vae, x, 1, 4000, 1);
    let (l5, s5) = lk_mean_stderr(&vae, x, 5, 2000, 2);
    let (l50, s50) = lk_mean_stderr(&vae, x, 50, 400, 3);
    let (l5000, s5000) = lk_mean_stderr(&vae, x, 5000, 40, 4);
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

/// At the exact posterior every log-weight is constant in z, so the DReG encoder gradient
/// (q's parameters stopped inside log q, through both layers' z's) is exactly zero at every
/// draw — the zero-variance property of DReG and sticking the landing (Tucker et al. 2019;
/// Roeder et al. 2017) — while the reparameterised gradient keeps its non-zero score term.
#[test]
fn dreg_encoder_gradient_vanishes_at_the_exact_posterior() {
    let x = data();
    let n = 3;
    let vae = model(0.0, 1.0);
    let mut rng = stream_rng(9, 0);
    for kind in [
        ObjectiveKind::Elbo,
        ObjectiveKind::Iwae,
        ObjectiveKind::Piwae {
            m: std::num::NonZeroUsize::new(2).unwrap(),
        },
    ] {
        let reparam = Objective::new(kind, 4, Estimator::Reparam, false).unwrap();
        let dreg = Objective {
            estimator: Estimator::Dreg,
            ..reparam
        };
        let eps: Vec<f64> = standard_normal_noise(&mut rng, n * reparam.samples() * 2);
        let enc = |obj: &Objective| -> Vec<f64> {
            objective_and_grads_with_noise(
                &vae,
                &Prior::StandardNormal,
                obj,
                Trainable::MODEL,
                &x,
                n,
                &eps,
            )
            .unwrap()
            .1
            .iter()
            .filter(|t| t.name.starts_with("encoder."))
            .flat_map(|t| t.data.clone())
            .collect()
        };
        let largest = |v: &[f64]| v.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        let (r, d) = (largest(&enc(&reparam)), largest(&enc(&dreg)));
        println!("{kind:?}: largest encoder gradient, reparam {r:.3e}, DReG {d:.3e}");
        assert!(
            d < 1e-10,
            "{kind:?}: DReG encoder gradient {d} at the exact posterior"
        );
        assert!(r > 1e-3, "{kind:?}: reparam encoder gradient {r}");
    }
}
