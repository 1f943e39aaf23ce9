//! End-to-end check of the Bernoulli evaluation path with nonlinear networks: for a model with a
//! one-dimensional latent, log p(x) = log ∫ p(x|z) N(z; 0, 1) dz is computed by quadrature on a
//! fine grid (through `decode_mean`), and the importance-weighted bounds must satisfy
//! L_1 ≤ L_50 ≤ log p(x) with L_5000 within 0.05 nats of it.

use vaepipe_nn::*;

fn cfg() -> VaeConfig {
    VaeConfig {
        input_dim: 8,
        encoder_hidden: vec![6],
        latent_dim: 1,
        decoder_hidden: vec![6],
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        posterior_std: PosteriorStd::Exp,
        upper: Vec::new(),
    }
}

/// log p(x) by the trapezoidal rule on z ∈ [−10, 10] with 20 001 points, in log space.
fn log_px_quadrature(vae: &Vae<f64>, x: &[f64]) -> f64 {
    let points = 20_001;
    let h = 20.0 / (points - 1) as f64;
    let z: Vec<f64> = (0..points).map(|i| -10.0 + h * i as f64).collect();
    let probs = vae.decode_mean(&z).unwrap();
    let log_f: Vec<f64> = z
        .iter()
        .enumerate()
        .map(|(i, &zi)| {
            let p = &probs[i * 8..(i + 1) * 8];
            let ll: f64 = p
                .iter()
                .zip(x)
                .map(|(&p, &xv)| xv * p.ln() + (1.0 - xv) * (1.0 - p).ln())
                .sum();
            let w = if i == 0 || i == points - 1 { 0.5 } else { 1.0 };
            ll - 0.5 * zi * zi - 0.5 * (2.0 * std::f64::consts::PI).ln() + f64::ln(w * h)
        })
        .collect();
    log_sum_exp(&log_f)
}

fn mean_bound(vae: &Vae<f64>, x: &[f64], k: usize, draws: usize) -> f64 {
    let mut rng = stream_rng(17, k as u64);
    (0..draws)
        .map(|_| {
            let lw = log_weights(vae, &Prior::StandardNormal, x, 1, k, &mut rng).unwrap();
            bound_from_log_weights(&lw, 1, k).unwrap()[0]
        })
        .sum::<f64>()
        / draws as f64
}

#[test]
fn importance_weighted_bounds_approach_quadrature_log_px() {
    // A larger output scale makes p(x|z) vary strongly with z.
    let mut t = Vae::<f64>::new(&cfg(), 21).unwrap().named_tensors();
    for w in t.iter_mut().filter(|t| t.name.starts_with("decoder.")) {
        w.data.iter_mut().for_each(|v| *v *= 3.0);
    }
    let vae = Vae::from_named_tensors(&cfg(), &t).unwrap();
    for x in [[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0], [0.0; 8]] {
        let truth = log_px_quadrature(&vae, &x);
        let l1 = mean_bound(&vae, &x, 1, 2000);
        let l50 = mean_bound(&vae, &x, 50, 200);
        let l5000 = mean_bound(&vae, &x, 5000, 200);
        println!("log p(x) = {truth:.4}: L1 = {l1:.4}, L50 = {l50:.4}, L5000 = {l5000:.4}");
        assert!(l1 < l50 && l50 < truth + 0.01, "{l1} {l50} {truth}");
        assert!(
            (l5000 - truth).abs() < 0.05,
            "L5000 = {l5000}, quadrature {truth}"
        );
    }
}
