//! The fast `f32` training path (crates/nn/src/fast.rs) against the generic dfdx-tape path:
//! objective values and gradients at fixed noise agree to `f32` accuracy for every model
//! variant, objective, estimator and trainable set it handles, with lanes and chunks of several
//! examples; its gradients match central finite differences of its own `f32` objective; the
//! trainer on the fast path is bit-identical with one or two rayon threads.

mod common;

use common::*;
use vaepipe_nn::*;

/// Encoder 20-12-9, d = 4, decoder 7-11: two hidden layers each, sizes that are not multiples
/// of the kernels' 6 × 16 blocks.
fn deep_cfg(
    activation: Activation,
    likelihood: Likelihood,
    posterior_std: PosteriorStd,
) -> VaeConfig {
    VaeConfig {
        input_dim: 20,
        encoder_hidden: vec![12, 9],
        latent_dim: 4,
        decoder_hidden: vec![7, 11],
        activation,
        likelihood,
        posterior_std,
    }
}

fn data_for(cfg: &VaeConfig, n: usize, seed: u64) -> Vec<f32> {
    match cfg.likelihood {
        Likelihood::Bernoulli => binary_data(n, cfg.input_dim, seed),
        Likelihood::Gaussian { .. } => gaussian_data(n, cfg.input_dim, seed),
    }
    .iter()
    .map(|&v| v as f32)
    .collect()
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Largest |a − b| over a tensor relative to the largest |b| (plus a floor).
fn rel_diff(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Compares the fast path with the reference (in f64 and in f32) at fixed noise.
fn compare(cfg: &VaeConfig, obj: Objective, tr: Trainable, n: usize, seed: u64) -> f64 {
    let vae: Vae<f32> = Vae::new(cfg, seed).unwrap();
    let prior = Prior::StandardNormal;
    assert!(
        fast_path_available(&vae, &prior, &obj, tr),
        "this CPU or setting does not take the fast path: {obj:?}"
    );
    let x = data_for(cfg, n, seed + 1);
    let eps: Vec<f32> = standard_normal_noise(&mut stream_rng(seed, 2), n * obj.k * cfg.latent_dim);
    let (v_fast, g_fast) =
        objective_and_grads_with_noise(&vae, &prior, &obj, tr, &x, n, &eps).unwrap();
    let (v32, g32) =
        objective_and_grads_with_noise_reference(&vae, &prior, &obj, tr, &x, n, &eps).unwrap();
    let vae64 = vae.cast::<f64>().unwrap();
    let (v64, g64) = objective_and_grads_with_noise_reference(
        &vae64,
        &Prior::StandardNormal,
        &obj,
        tr,
        &to64(&x),
        n,
        &to64(&eps),
    )
    .unwrap();
    let what = format!(
        "{obj:?} {tr:?} {:?}/{:?}/{:?}",
        cfg.activation, cfg.likelihood, cfg.posterior_std
    );
    assert!(
        (v_fast - v64).abs() <= 1e-5 * v64.abs().max(1.0),
        "{what}: value fast {v_fast} vs f64 reference {v64} (f32 reference {v32})"
    );
    assert_eq!(g_fast.len(), g64.len(), "{what}");
    let mut worst = 0.0f64;
    for ((gf, g6), g3) in g_fast.iter().zip(&g64).zip(&g32) {
        assert_eq!((&gf.name, &gf.shape), (&g6.name, &g6.shape), "{what}");
        let e = rel_diff(&gf.data, &g6.data);
        let e32 = rel_diff(&g3.data, &g6.data);
        // The fast path is as accurate as the generic f32 path, within f32 rounding.
        assert!(
            e <= 2e-4 && e <= 20.0 * e32 + 2e-5,
            "{what}: {} differs from the f64 reference by {e:.2e} (generic f32 path: {e32:.2e})",
            gf.name
        );
        worst = worst.max(e);
    }
    worst
}

#[test]
fn fast_path_matches_the_reference_for_every_variant() {
    let variants = [
        deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp),
        deep_cfg(
            Activation::Softplus,
            Likelihood::Gaussian {
                std: 0.7,
                learned: true,
            },
            PosteriorStd::Softplus,
        ),
        deep_cfg(
            Activation::Relu,
            Likelihood::Gaussian {
                std: 0.5,
                learned: false,
            },
            PosteriorStd::Exp,
        ),
        // Linear encoder and decoder (no hidden layers).
        VaeConfig {
            encoder_hidden: vec![],
            decoder_hidden: vec![],
            ..deep_cfg(
                Activation::Tanh,
                Likelihood::Bernoulli,
                PosteriorStd::Softplus,
            )
        },
        // One hidden layer each, as in the other tests.
        bernoulli_cfg(),
    ];
    let dreg = |o: Objective| Objective {
        estimator: Estimator::Dreg,
        ..o
    };
    let elbo5 = Objective {
        k: 5,
        ..Objective::elbo()
    };
    let analytic = Objective {
        analytic_kl: true,
        ..Objective::elbo()
    };
    let mut worst = 0.0f64;
    for (i, cfg) in variants.iter().enumerate() {
        // n = 7: lanes of 4 and 3 examples; k = 50: chunks of 2 examples.
        for (obj, n) in [
            (Objective::iwae(50), 7),
            (dreg(Objective::iwae(50)), 7),
            (Objective::iwae(5), 3),
            (Objective::elbo(), 5),
            (elbo5, 4),
            (dreg(elbo5), 4),
            (analytic, 6),
            (Objective::iwae(3), 1),
        ] {
            worst = worst.max(compare(cfg, obj, Trainable::MODEL, n, 10 + i as u64));
        }
        for tr in [
            Trainable {
                encoder: true,
                decoder: false,
                prior: false,
            },
            Trainable {
                encoder: false,
                decoder: true,
                prior: false,
            },
            Trainable::ALL,
        ] {
            worst = worst.max(compare(cfg, Objective::iwae(50), tr, 7, 20 + i as u64));
        }
    }
    println!("largest relative gradient difference to the f64 reference: {worst:.2e}");
}

/// The IWAE network's shapes (784-200-200-50) at k = 50, several chunks per lane.
#[test]
fn fast_path_matches_the_reference_on_the_iwae_network() {
    let cfg = VaeConfig::burda_mnist();
    let worst = compare(&cfg, Objective::iwae(50), Trainable::MODEL, 6, 3);
    println!("IWAE net, k = 50: largest relative gradient difference {worst:.2e}");
}

/// Central finite differences of the fast path's own f32 objective.
#[test]
fn fast_path_gradients_match_f32_finite_differences() {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    for obj in [Objective::iwae(5), Objective::elbo()] {
        let n = 3;
        let vae: Vae<f32> = Vae::new(&cfg, 5).unwrap();
        let prior = Prior::StandardNormal;
        assert!(fast_path_available(&vae, &prior, &obj, Trainable::MODEL));
        let x = data_for(&cfg, n, 6);
        let eps: Vec<f32> = standard_normal_noise(&mut stream_rng(5, 7), n * obj.k * 4);
        let f = |v: &Vae<f32>| {
            objective_and_grads_with_noise(v, &prior, &obj, Trainable::MODEL, &x, n, &eps).unwrap()
        };
        let (_, grads) = f(&vae);
        let base = vae.named_tensors();
        let mut checked = 0;
        for g in &grads {
            let t = base.iter().find(|t| t.name == g.name).unwrap();
            let stride = (g.data.len() / 6).max(1);
            for idx in (0..g.data.len()).step_by(stride) {
                // h = 2⁻⁷: exact in f32; rounding error of the difference quotient ≈ 1e-7·|L|/h.
                let h = 1.0 / 128.0;
                let at = |v: f32| {
                    let mut m = base.clone();
                    m.iter_mut().find(|u| u.name == g.name).unwrap().data[idx] = v;
                    f(&Vae::from_named_tensors(&cfg, &m).unwrap()).0
                };
                let fd = (at(t.data[idx] + h) - at(t.data[idx] - h)) / (2.0 * h as f64);
                let an = g.data[idx] as f64;
                assert!(
                    (fd - an).abs() <= 2e-3 + 1e-2 * an.abs(),
                    "{obj:?}: d/d {}[{idx}]: analytic {an:.6e}, finite difference {fd:.6e}",
                    g.name
                );
                checked += 1;
            }
        }
        assert!(checked > 60);
    }
}

/// Training on the fast path: bit-identical weights with one and with two rayon threads, and
/// the same as a step-by-step rerun.
#[test]
fn fast_path_training_is_bit_identical_across_thread_counts() {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    let x = data_for(&cfg, 40, 9);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut tr = Trainer::new(
                Vae::new(&cfg, 2).unwrap(),
                Prior::StandardNormal,
                Objective::iwae(50),
                AdamHyper::default(),
                Trainable::MODEL,
            )
            .unwrap();
            assert!(tr.uses_fast_path());
            for s in 0..20u64 {
                let b = (s as usize % 4) * 10;
                tr.step(&x[b * 20..(b + 10) * 20], 10, &mut stream_rng(4, s))
                    .unwrap();
            }
            tr.state()
                .iter()
                .map(|t| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
    };
    let one = run(1);
    assert_eq!(one, run(2), "1 vs 2 threads");
    assert_eq!(one, run(3), "1 vs 3 threads");
}

/// The fast and the generic trainer follow the same trajectory (to f32 accuracy over a few
/// steps), and the trainer can switch between them.
#[test]
fn fast_and_generic_trainers_agree() {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    let x = data_for(&cfg, 8, 3);
    let make = || {
        Trainer::new(
            Vae::new(&cfg, 1).unwrap(),
            Prior::StandardNormal,
            Objective::iwae(5),
            AdamHyper::default(),
            Trainable::MODEL,
        )
        .unwrap()
    };
    let (mut fast, mut generic) = (make(), make());
    assert!(fast.uses_fast_path());
    assert!(!generic.set_fast_path(false));
    for s in 0..5u64 {
        let a = fast.step(&x, 8, &mut stream_rng(1, s)).unwrap();
        let b = generic.step(&x, 8, &mut stream_rng(1, s)).unwrap();
        assert!(
            (a.bound - b.bound).abs() < 1e-4 * b.bound.abs(),
            "{a:?} vs {b:?}"
        );
        assert!(
            (a.grad_norm - b.grad_norm).abs() < 1e-3 * b.grad_norm,
            "{a:?} vs {b:?}"
        );
    }
    for (u, v) in fast
        .vae()
        .named_tensors()
        .iter()
        .zip(generic.vae().named_tensors())
    {
        for (p, q) in u.data.iter().zip(&v.data) {
            assert!((p - q).abs() < 1e-5, "{}: {p} vs {q}", u.name);
        }
    }
}
