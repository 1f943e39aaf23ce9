//! The linear-Gaussian model p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I) with orthogonal columns
//! of W: the exact posterior is representable by a linear encoder (diagonal covariance) and
//! log p(x) is known in closed form. Used by linear_gaussian.rs and estimate.rs.
use super::gaussian_log_density;
use vaepipe_nn::*;

pub const D: usize = 5;
pub const LATENT: usize = 2;
const SIGMA: f64 = 0.5;
const B: [f64; D] = [0.1, -0.2, 0.3, 0.0, 0.5];

/// Columns w₁ ⟂ w₂ of W (D × d).
fn w_col(j: usize) -> [f64; D] {
    match j {
        0 => [0.8, 0.8, 0.0, 0.0, 0.8],
        _ => [1.1, -1.1, 0.55, 0.0, 0.0],
    }
}

/// A linear encoder and decoder with the model's fixed observation noise σ.
pub fn cfg() -> VaeConfig {
    VaeConfig {
        input_dim: D,
        encoder_hidden: vec![],
        latent_dim: LATENT,
        decoder_hidden: vec![],
        activation: Activation::Tanh,
        likelihood: Likelihood::Gaussian {
            std: SIGMA as f32,
            learned: false,
        },
        posterior_std: PosteriorStd::Exp,
        upper: Vec::new(),
    }
}

/// The model with encoder = the exact posterior, optionally perturbed (mean shift, std scale).
pub fn model(mean_shift: f64, std_scale: f64) -> Vae<f64> {
    let s2 = SIGMA * SIGMA;
    let s: Vec<f64> = (0..LATENT)
        .map(|j| 1.0 / (1.0 + w_col(j).iter().map(|v| v * v).sum::<f64>() / s2))
        .collect();
    let mut a = vec![0.0; D * LATENT];
    let mut c = [0.0; LATENT];
    for i in 0..D {
        for j in 0..LATENT {
            a[i * LATENT + j] = w_col(j)[i] * s[j] / s2;
            c[j] -= B[i] * a[i * LATENT + j];
        }
    }
    let c: Vec<f64> = c.iter().map(|v| v + mean_shift).collect();
    let log_std: Vec<f64> = s.iter().map(|v| 0.5 * v.ln() + std_scale.ln()).collect();
    let mut dec_w = vec![0.0; LATENT * D];
    for j in 0..LATENT {
        for i in 0..D {
            dec_w[j * D + i] = w_col(j)[i];
        }
    }
    let t = |name: &str, shape: Vec<usize>, data: Vec<f64>| {
        NamedTensor::new(name, shape, data).unwrap()
    };
    let tensors = vec![
        t("encoder.mean.weight", vec![D, LATENT], a),
        t("encoder.mean.bias", vec![LATENT], c),
        t(
            "encoder.log_std.weight",
            vec![D, LATENT],
            vec![0.0; D * LATENT],
        ),
        t("encoder.log_std.bias", vec![LATENT], log_std),
        t("decoder.out.weight", vec![LATENT, D], dec_w),
        t("decoder.out.bias", vec![D], B.to_vec()),
    ];
    Vae::<f64>::from_named_tensors(&cfg(), &tensors)
        .unwrap()
        .cast()
        .unwrap()
}

/// log p(x) = log N(x; b, WWᵀ + σ²I), by Cholesky.
pub fn log_px(x: &[f64]) -> f64 {
    let cov: Vec<Vec<f64>> = (0..D)
        .map(|i| {
            (0..D)
                .map(|k| {
                    let wwt: f64 = (0..LATENT).map(|j| w_col(j)[i] * w_col(j)[k]).sum();
                    wwt + if i == k { SIGMA * SIGMA } else { 0.0 }
                })
                .collect()
        })
        .collect();
    gaussian_log_density(x, &B, &cov)
}

/// `n` draws from the model itself.
pub fn sample(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = stream_rng(seed, 5);
    let mut out = Vec::with_capacity(n * D);
    for _ in 0..n {
        let z: Vec<f64> = standard_normal_noise(&mut rng, LATENT);
        let e: Vec<f64> = standard_normal_noise(&mut rng, D);
        for i in 0..D {
            let m: f64 = B[i] + (0..LATENT).map(|j| w_col(j)[i] * z[j]).sum::<f64>();
            out.push((m + SIGMA * e[i]) as f32);
        }
    }
    out
}
