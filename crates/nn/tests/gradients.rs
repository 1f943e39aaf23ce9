//! Gradients of the objectives at fixed noise equal central finite differences in f64
//! (reparameterisation estimator; ELBO, IWAE for k = 1, 5, 50, analytic KL; all model variants).

mod common;

use common::*;
use vaepipe_nn::*;

fn run(cfg: &VaeConfig, objective: Objective, data: &[f64], n: usize, seed: u64) -> f64 {
    let vae: Vae<f64> = Vae::new(cfg, seed).unwrap();
    let prior = Prior::StandardNormal;
    let mut rng = stream_rng(seed, 1);
    let eps: Vec<f64> = standard_normal_noise(&mut rng, n * objective.samples() * cfg.latent_dim);
    check_gradients(
        &vae,
        &prior,
        &objective,
        Trainable::MODEL,
        Batch {
            x: data,
            n,
            eps: &eps,
        },
        12,
    )
}

#[test]
fn iwae_gradients_match_finite_differences_for_k_1_5_50() {
    let cfg = bernoulli_cfg();
    let x = binary_data(2, cfg.input_dim, 3);
    for k in [1, 5, 50] {
        let worst = run(&cfg, Objective::iwae(k).unwrap(), &x, 2, 10 + k as u64);
        println!("IWAE k={k}: worst relative error {worst:.2e}");
    }
}

#[test]
fn elbo_gradients_match_finite_differences() {
    let cfg = bernoulli_cfg();
    let x = binary_data(3, cfg.input_dim, 4);
    let mut obj = Objective::elbo();
    obj.k = std::num::NonZeroUsize::new(5).unwrap();
    run(&cfg, obj, &x, 3, 21);
    let analytic = Objective {
        analytic_kl: true,
        ..Objective::elbo()
    };
    run(&cfg, analytic, &x, 3, 22);
}

#[test]
fn gradients_match_for_gaussian_softplus_and_relu_variants() {
    let gauss = small_cfg(
        Activation::Softplus,
        Likelihood::Gaussian {
            std: 0.7,
            learned: true,
        },
        PosteriorStd::Softplus,
    );
    let x = gaussian_data(2, gauss.input_dim, 5);
    run(&gauss, Objective::iwae(5).unwrap(), &x, 2, 31);
    let fixed = small_cfg(
        Activation::Relu,
        Likelihood::Gaussian {
            std: 0.5,
            learned: false,
        },
        PosteriorStd::Exp,
    );
    run(&fixed, Objective::iwae(5).unwrap(), &x, 2, 32);
}
