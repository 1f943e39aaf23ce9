//! Two stochastic layers (Burda et al. 2016, §5): gradients of every objective equal central
//! finite differences (f64) for every parameter group, DReG is unbiased, checkpoints round
//! trip, the evaluator's log-weights are the generic path's at the same noise, the prior lives
//! on the top layer, and a trainer improves the bound.

mod common;

use std::num::NonZeroUsize;

use common::*;
use vaepipe_nn::*;

/// D=6, x → [5] → z1 (3) → [4] → z2 (2); decoder z2 → [3] → z1 → [4] → x.
fn two_layer_cfg() -> VaeConfig {
    VaeConfig {
        upper: vec![UpperLayer {
            encoder_hidden: vec![4],
            latent_dim: 2,
            decoder_hidden: vec![3],
        }],
        ..bernoulli_cfg()
    }
}

/// A model whose parameters are all non-trivial (biases drawn too) with an active σ head.
fn model(cfg: &VaeConfig, seed: u64) -> Vae<f64> {
    let init = Init {
        scheme: InitScheme::Pytorch,
        output_bias: OutputBias::Scheme,
        std_head_scale: 1.0,
    };
    Vae::with_init(cfg, &init, seed).unwrap()
}

fn m(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

fn objectives() -> Vec<Objective> {
    let mk = |kind, k| Objective::new(kind, k, Estimator::Reparam, false).unwrap();
    vec![
        mk(ObjectiveKind::Elbo, 3),
        mk(ObjectiveKind::Iwae, 5),
        mk(ObjectiveKind::Miwae { m: m(2) }, 3),
        mk(
            ObjectiveKind::Ciwae {
                beta: Beta::new(0.3).unwrap(),
            },
            4,
        ),
    ]
}

fn noise(cfg: &VaeConfig, n: usize, obj: &Objective, seed: u64) -> Vec<f64> {
    standard_normal_noise(
        &mut stream_rng(seed, 1),
        n * obj.samples() * cfg.noise_dim(),
    )
}

#[test]
fn gradients_of_every_objective_match_finite_differences() {
    let cfg = two_layer_cfg();
    let n = 2;
    let x = binary_data(n, cfg.input_dim, 3);
    let vae = model(&cfg, 7);
    for (i, obj) in objectives().into_iter().enumerate() {
        let eps = noise(&cfg, n, &obj, 40 + i as u64);
        let (_, g) = objective_and_grads_with_noise(
            &vae,
            &Prior::StandardNormal,
            &obj,
            Trainable::MODEL,
            &x,
            n,
            &eps,
        )
        .unwrap();
        // Every parameter group of both layers has a gradient, none identically zero.
        for group in [
            "encoder.0.",
            "encoder.z2.0.",
            "encoder.z2.log_std.",
            "decoder.z1.mean.",
        ] {
            assert!(
                g.iter()
                    .filter(|t| t.name.starts_with(group))
                    .any(|t| t.data.iter().any(|v| *v != 0.0)),
                "{obj:?}: no gradient for {group}"
            );
        }
        let worst = check_gradients(
            &vae,
            &Prior::StandardNormal,
            &obj,
            Trainable::MODEL,
            Batch {
                x: &x,
                n,
                eps: &eps,
            },
            6,
        );
        println!("{:?}: worst relative error {worst:.2e}", obj.kind);
    }
}

fn grads_of(
    vae: &Vae<f64>,
    prior: &Prior<f64>,
    obj: &Objective,
    tr: Trainable,
    x: &[f64],
    n: usize,
    eps: &[f64],
) -> Vec<NamedTensor<f64>> {
    objective_and_grads_with_noise(vae, prior, obj, tr, x, n, eps)
        .unwrap()
        .1
}

/// PIWAE(M, K) (Rainforth et al. 2018): the decoder's (and prior's) gradient is that of
/// IWAE with MK samples, the encoder's that of MIWAE(M, K), at the same noise; both are checked
/// against finite differences above.
fn check_piwae_parts(vae: &Vae<f64>, prior: &Prior<f64>, tr: Trainable, x: &[f64], n: usize) {
    let cfg = vae.config();
    for estimator in [Estimator::Reparam, Estimator::Dreg] {
        let mk = |kind, k| Objective::new(kind, k, estimator, false).unwrap();
        let piwae = mk(ObjectiveKind::Piwae { m: m(2) }, 3);
        let miwae = mk(ObjectiveKind::Miwae { m: m(2) }, 3);
        let iwae = mk(ObjectiveKind::Iwae, 6);
        let eps = noise(cfg, n, &piwae, 60);
        let gp = grads_of(vae, prior, &piwae, tr, x, n, &eps);
        let gm = grads_of(vae, prior, &miwae, tr, x, n, &eps);
        let gi = grads_of(vae, prior, &iwae, tr, x, n, &eps);
        let (vp, vi) = (
            objective_and_grads_with_noise(vae, prior, &piwae, tr, x, n, &eps)
                .unwrap()
                .0,
            objective_and_grads_with_noise(vae, prior, &iwae, tr, x, n, &eps)
                .unwrap()
                .0,
        );
        assert!(
            (vp - vi).abs() < 1e-12,
            "PIWAE's value is L_MK: {vp} vs {vi}"
        );
        for ((p, mi), io) in gp.iter().zip(&gm).zip(&gi) {
            let want = if p.name.starts_with("encoder.") {
                mi
            } else {
                io
            };
            assert_eq!(p.name, want.name);
            for (a, b) in p.data.iter().zip(&want.data) {
                assert!(
                    (a - b).abs() <= 1e-10 * b.abs().max(1.0),
                    "{estimator:?} {}: PIWAE {a} vs {b}",
                    p.name
                );
            }
        }
    }
}

#[test]
fn piwae_gradient_parts_are_iwae_for_the_decoder_and_miwae_for_the_encoder() {
    let cfg = two_layer_cfg();
    let n = 2;
    let x = binary_data(n, cfg.input_dim, 3);
    let vae = model(&cfg, 7);
    check_piwae_parts(&vae, &Prior::StandardNormal, Trainable::MODEL, &x, n);
    let prior = Prior::<f64>::mixture(
        2,
        2,
        vec![0.1, -0.2],
        vec![0.5, -0.3, 0.0, 0.2],
        vec![-0.2, 0.1, 0.0, -0.1],
    )
    .unwrap();
    check_piwae_parts(&vae, &prior, Trainable::ALL, &x, n);
}

#[test]
fn gradients_under_a_mixture_prior_on_the_top_layer_match_finite_differences() {
    let cfg = two_layer_cfg();
    let n = 2;
    let x = binary_data(n, cfg.input_dim, 4);
    let vae = model(&cfg, 8);
    let prior = Prior::<f64>::mixture(
        3,
        2,
        vec![0.1, -0.2, 0.3],
        vec![0.5, -0.3, 0.0, 0.2, -0.6, 0.4],
        vec![-0.2, 0.1, 0.0, -0.1, 0.2, 0.05],
    )
    .unwrap();
    for obj in [
        Objective::iwae(4).unwrap(),
        Objective::new(
            ObjectiveKind::Miwae { m: m(2) },
            2,
            Estimator::Reparam,
            false,
        )
        .unwrap(),
    ] {
        let eps = noise(&cfg, n, &obj, 50);
        for tr in [Trainable::ALL, Trainable::PRIOR] {
            check_gradients(
                &vae,
                &prior,
                &obj,
                tr,
                Batch {
                    x: &x,
                    n,
                    eps: &eps,
                },
                6,
            );
        }
    }
    // A prior of the first layer's dimension does not fit.
    let wrong = Prior::<f64>::mixture(1, 3, vec![0.0], vec![0.0; 3], vec![0.0; 3]).unwrap();
    let obj = Objective::iwae(2).unwrap();
    let eps = noise(&cfg, n, &obj, 51);
    let e = objective_and_grads_with_noise(&vae, &wrong, &obj, Trainable::MODEL, &x, n, &eps)
        .unwrap_err();
    assert!(e.to_string().contains("top stochastic layer"), "{e}");
}

/// Mean over `draws` noise draws of the encoder gradient under each estimator, as
/// (largest |mean(DReG − standard)| / SE over the encoder coordinates).
fn dreg_bias_z(vae: &Vae<f64>, obj: Objective, x: &[f64], n: usize, draws: usize) -> f64 {
    let cfg = vae.config();
    let dreg = Objective {
        estimator: Estimator::Dreg,
        ..obj
    };
    let mut rng = stream_rng(17, 3);
    let mut stats: Vec<[f64; 2]> = Vec::new();
    for _ in 0..draws {
        let eps: Vec<f64> = standard_normal_noise(&mut rng, n * obj.samples() * cfg.noise_dim());
        let run = |o: &Objective| {
            objective_and_grads_with_noise(
                vae,
                &Prior::StandardNormal,
                o,
                Trainable::MODEL,
                x,
                n,
                &eps,
            )
            .unwrap()
            .1
        };
        let (gs, gr) = (run(&obj), run(&dreg));
        let flat = |g: &[NamedTensor<f64>], p: &str| -> Vec<f64> {
            g.iter()
                .filter(|t| t.name.starts_with(p))
                .flat_map(|t| t.data.iter().copied())
                .collect()
        };
        // The decoder keeps the estimator-free gradient.
        for (a, b) in flat(&gs, "decoder.").iter().zip(flat(&gr, "decoder.")) {
            assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
        }
        let (es, er) = (flat(&gs, "encoder."), flat(&gr, "encoder."));
        stats.resize(es.len(), [0.0; 2]);
        for (st, (s, r)) in stats.iter_mut().zip(es.iter().zip(&er)) {
            st[0] += r - s;
            st[1] += (r - s) * (r - s);
        }
    }
    let md = draws as f64;
    stats
        .iter()
        .filter_map(|st| {
            let var = ((st[1] - st[0] * st[0] / md) / (md - 1.0)).max(0.0);
            let se = (var / md).sqrt();
            (se > 0.0).then(|| (st[0] / md / se).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn dreg_is_unbiased_for_iwae_and_piwae() {
    let cfg = two_layer_cfg();
    let n = 1;
    let x = binary_data(n, cfg.input_dim, 5);
    let vae = model(&cfg, 9);
    for obj in [
        Objective::iwae(4).unwrap(),
        Objective::new(
            ObjectiveKind::Piwae { m: m(2) },
            2,
            Estimator::Reparam,
            false,
        )
        .unwrap(),
    ] {
        let z = dreg_bias_z(&vae, obj, &x, n, 1500);
        println!("{:?}: largest |mean(DReG − reparam)|/SE = {z:.2}", obj.kind);
        assert!(z < 4.5, "{:?}: DReG is biased (z = {z})", obj.kind);
    }
}

#[test]
fn named_tensors_round_trip_and_init_scales_every_sigma_head() {
    let cfg = two_layer_cfg();
    let vae: Vae<f32> = Vae::new(&cfg, 3).unwrap();
    let t = vae.named_tensors();
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"encoder.z2.log_std.weight"));
    assert!(names.contains(&"decoder.z1.mean.bias"));
    assert_eq!(
        t.iter().map(|t| t.data.len()).sum::<usize>(),
        cfg.parameter_count()
    );
    let back = Vae::from_named_tensors(&cfg, &t).unwrap();
    assert_eq!(back.named_tensors(), t);
    assert_eq!(
        vae.cast::<f64>()
            .unwrap()
            .cast::<f32>()
            .unwrap()
            .named_tensors(),
        t
    );
    // A missing upper-layer tensor is an error naming it.
    let short: Vec<_> = t
        .iter()
        .filter(|t| t.name != "decoder.z1.log_std.bias")
        .cloned()
        .collect();
    let e = Vae::from_named_tensors(&cfg, &short).unwrap_err();
    assert!(e.to_string().contains("decoder.z1.log_std.bias"), "{e}");
    // std_head_scale = 0 zeroes both encoders' σ heads and nothing else.
    let zero = Vae::<f32>::with_init(&cfg, &Init::default(), 3).unwrap();
    for t in zero.named_tensors() {
        let is_head =
            t.name.starts_with("encoder.log_std.") || t.name.starts_with("encoder.z2.log_std.");
        let all_zero = t.data.iter().all(|v| *v == 0.0);
        if is_head {
            assert!(all_zero, "{} not zeroed", t.name);
        } else if t.name.ends_with(".weight") {
            assert!(!all_zero, "{} zeroed", t.name);
        }
    }
}

#[test]
fn evaluator_log_weights_match_the_generic_path_at_the_same_noise() {
    let cfg = VaeConfig {
        input_dim: 12,
        encoder_hidden: vec![10],
        latent_dim: 4,
        decoder_hidden: vec![8],
        ..two_layer_cfg()
    };
    let vae: Vae<f32> = Vae::new(&cfg, 11).unwrap();
    let x: Vec<f32> = binary_data(3, 12, 6).iter().map(|&v| v as f32).collect();
    let k = 37;
    let prior = Prior::StandardNormal;
    let ev = Evaluator::new(&vae, &prior).unwrap().with_chunk(8);
    let post = ev.encode(&x).unwrap();
    let opts = SampleOptions {
        k,
        seed: 21,
        first_stream: 5,
        keep_log_weights: true,
    };
    let est = ev.estimate(&x, &post, &opts).unwrap();
    for (i, e) in est.iter().enumerate() {
        let mut rng = stream_rng(21, 5 + i as u64);
        let lw = log_weights(&vae, &prior, &x[i * 12..(i + 1) * 12], 1, k, &mut rng).unwrap();
        let worst = lw
            .iter()
            .zip(&e.log_weights)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2e-3, "image {i}: {worst}");
        let bound = bound_from_log_weights(&lw, 1, k).unwrap()[0];
        assert!((bound - e.bound).abs() < 1e-3, "{bound} vs {}", e.bound);
        assert!((e.elbo - (e.recon - e.kl)).abs() < 1e-9);
    }
    // Chunking does not change the result.
    let other = Evaluator::new(&vae, &prior)
        .unwrap()
        .with_chunk(5)
        .estimate(&x, &post, &opts)
        .unwrap();
    for (a, b) in est.iter().zip(&other) {
        assert_eq!(a.log_weights, b.log_weights);
    }
    // The VampPrior is rejected with a reason.
    let vamp = Prior::<f32>::vamp(2, 12, vec![0.5; 24]).unwrap();
    let e = Evaluator::new(&vae, &vamp).unwrap_err();
    assert!(e.to_string().contains("one stochastic layer"), "{e}");
}

#[test]
fn top_layer_api_prior_samples_decode_and_posterior_means() {
    let cfg = two_layer_cfg();
    let vae: Vae<f32> = Vae::new(&cfg, 12).unwrap();
    let x: Vec<f32> = binary_data(5, 6, 7).iter().map(|&v| v as f32).collect();
    let z = Prior::StandardNormal
        .sample(&vae, 4, &mut stream_rng(1, 1))
        .unwrap();
    assert_eq!(z.len(), 4 * 2);
    let mean = vae.decode_top_mean(&z).unwrap();
    assert_eq!(mean.len(), 4 * 6);
    assert!(mean.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(vae.decode_top_mean(&[0.0; 3]).is_err());
    let pm = vae.posterior_means(&x, 1024, 3).unwrap();
    assert_eq!(pm.len(), 2);
    assert_eq!(pm[0], vae.encode(&x).unwrap().mean);
    assert_eq!(pm[1].len(), 5 * 2);
    // Monte Carlo over more draws converges: 1024 vs 4096 draws agree.
    let fine = vae.posterior_means(&x, 4096, 4).unwrap();
    for (a, b) in pm[1].iter().zip(&fine[1]) {
        assert!((a - b).abs() < 0.1, "{a} vs {b}");
    }
    // The aggregate posterior is a mixture over the top layer, one component per row.
    let agg = Prior::aggregate_posterior(&vae, &x).unwrap();
    assert_eq!(agg.kind(), PriorKind::Mixture { components: 5 });
    let lp = agg.log_density(&vae, &z, 4).unwrap();
    assert!(lp.iter().all(|v| v.is_finite()));
}

#[test]
fn a_trainer_improves_the_two_layer_bound() {
    let cfg = two_layer_cfg();
    let data: Vec<f32> = binary_data(40, 6, 8).iter().map(|&v| v as f32).collect();
    let vae: Vae<f32> = Vae::new(&cfg, 13).unwrap();
    let obj = Objective::new(ObjectiveKind::Miwae { m: m(2) }, 3, Estimator::Dreg, false).unwrap();
    let mut tr = Trainer::new(
        vae,
        Prior::StandardNormal,
        obj,
        AdamHyper {
            lr: 1e-2,
            ..AdamHyper::default()
        },
        Trainable::MODEL,
    )
    .unwrap();
    assert!(!tr.uses_fast_path());
    let mut first = 0.0;
    let mut last = 0.0;
    for s in 0..300u64 {
        let st = tr.step(&data, 40, &mut stream_rng(2, s)).unwrap();
        if s < 20 {
            first += st.bound / 20.0;
        }
        if s >= 280 {
            last += st.bound / 20.0;
        }
    }
    println!("MIWAE(2,3) DReG: bound {first:.3} → {last:.3}");
    assert!(last > first + 0.3, "{first} → {last}");
    // analytic_kl needs one stochastic layer.
    let analytic = Objective {
        analytic_kl: true,
        ..Objective::elbo()
    };
    let e = Trainer::new(
        Vae::<f32>::new(&cfg, 1).unwrap(),
        Prior::StandardNormal,
        analytic,
        AdamHyper::default(),
        Trainable::MODEL,
    )
    .unwrap_err();
    assert!(e.to_string().contains("one stochastic layer"), "{e}");
}

/// The kinds' special cases hold on the two-layer tape as on one layer (Rainforth et al.
/// 2018): CIWAE(β = 1) is the ELBO and CIWAE(β = 0) is L_k, MIWAE(M = 1, K) is L_K, values and
/// gradients, with both estimators.
#[test]
fn special_cases_of_the_variants_are_the_elbo_and_the_iwae_bound() {
    let cfg = two_layer_cfg();
    let n = 2;
    let x = binary_data(n, cfg.input_dim, 9);
    let vae = model(&cfg, 10);
    let prior = Prior::StandardNormal;
    for estimator in [Estimator::Reparam, Estimator::Dreg] {
        let mk = |kind| Objective::new(kind, 4, estimator, false).unwrap();
        let ciwae = |b: f64| {
            mk(ObjectiveKind::Ciwae {
                beta: Beta::new(b).unwrap(),
            })
        };
        let pairs = [
            (ciwae(1.0), mk(ObjectiveKind::Elbo)),
            (ciwae(0.0), mk(ObjectiveKind::Iwae)),
            (
                mk(ObjectiveKind::Miwae { m: m(1) }),
                mk(ObjectiveKind::Iwae),
            ),
        ];
        for (a, b) in pairs {
            let eps = noise(&cfg, n, &a, 70);
            let run = |o: &Objective| {
                objective_and_grads_with_noise(&vae, &prior, o, Trainable::MODEL, &x, n, &eps)
                    .unwrap()
            };
            let ((va, ga), (vb, gb)) = (run(&a), run(&b));
            assert!((va - vb).abs() < 1e-12, "{a:?} vs {b:?}: {va} vs {vb}");
            for (ta, tb) in ga.iter().zip(&gb) {
                for (u, v) in ta.data.iter().zip(&tb.data) {
                    assert!(
                        (u - v).abs() <= 1e-10 * v.abs().max(1.0),
                        "{a:?} vs {b:?}, {}: {u} vs {v}",
                        ta.name
                    );
                }
            }
        }
    }
}

/// A two-layer trainer's state restores exactly: the continued run is bit-identical.
#[test]
fn trainer_state_of_a_two_layer_model_resumes_bit_for_bit() {
    let cfg = two_layer_cfg();
    let data: Vec<f32> = binary_data(20, 6, 11).iter().map(|&v| v as f32).collect();
    let new = || {
        Trainer::new(
            Vae::<f32>::new(&cfg, 4).unwrap(),
            Prior::StandardNormal,
            Objective::iwae(3).unwrap(),
            AdamHyper::default(),
            Trainable::MODEL,
        )
        .unwrap()
    };
    let mut a = new();
    for s in 0..5 {
        a.step(&data, 20, &mut stream_rng(1, s)).unwrap();
    }
    let mut b = new();
    b.restore(&a.state()).unwrap();
    for s in 5..8 {
        let sa = a.step(&data, 20, &mut stream_rng(1, s)).unwrap();
        let sb = b.step(&data, 20, &mut stream_rng(1, s)).unwrap();
        assert_eq!(sa.bound.to_bits(), sb.bound.to_bits());
    }
    assert_eq!(a.state(), b.state());
}

/// Throughput of Burda et al.'s two-layer MNIST net on this machine (run with `--ignored
/// --nocapture`): training IWAE k = 50, batch 100, on the tape; evaluation at k = 5000.
#[test]
#[ignore = "measurement, ~1 minute"]
fn throughput_of_the_two_layer_mnist_net() {
    let cfg = VaeConfig::burda_mnist_two_layers();
    let vae: Vae<f32> = Vae::new(&cfg, 1).unwrap();
    let x: Vec<f32> = binary_data(100, 784, 2).iter().map(|&v| v as f32).collect();
    let mut tr = Trainer::new(
        vae.clone(),
        Prior::StandardNormal,
        Objective::iwae(50).unwrap(),
        AdamHyper::default(),
        Trainable::MODEL,
    )
    .unwrap();
    tr.step(&x, 100, &mut stream_rng(1, 0)).unwrap();
    let steps = 10;
    let t = std::time::Instant::now();
    for s in 1..=steps {
        tr.step(&x, 100, &mut stream_rng(1, s)).unwrap();
    }
    let train = (steps * 100) as f64 / t.elapsed().as_secs_f64();
    // For comparison: the one-layer net on the same tape.
    let one: Vae<f32> = Vae::new(&VaeConfig::burda_mnist(), 1).unwrap();
    let mut tr1 = Trainer::new(
        one,
        Prior::StandardNormal,
        Objective::iwae(50).unwrap(),
        AdamHyper::default(),
        Trainable::MODEL,
    )
    .unwrap();
    tr1.set_fast_path(false);
    tr1.step(&x, 100, &mut stream_rng(1, 0)).unwrap();
    let t = std::time::Instant::now();
    for s in 1..=steps {
        tr1.step(&x, 100, &mut stream_rng(1, s)).unwrap();
    }
    let train1 = (steps * 100) as f64 / t.elapsed().as_secs_f64();
    println!("one-layer burda_mnist on the tape: {train1:.1} images/s");
    let ev = Evaluator::new(&vae, &Prior::StandardNormal).unwrap();
    let images = 8;
    let post = ev.encode(&x[..images * 784]).unwrap();
    let opts = SampleOptions {
        k: 5000,
        seed: 3,
        first_stream: 0,
        keep_log_weights: false,
    };
    let t = std::time::Instant::now();
    ev.estimate(&x[..images * 784], &post, &opts).unwrap();
    let eval = images as f64 / t.elapsed().as_secs_f64();
    println!(
        "burda_mnist_two_layers on {} threads: train IWAE k=50 batch 100 (tape) {train:.1} images/s; \
         eval k=5000 {eval:.2} images/s ({:.0} s per 1000 test images)",
        rayon::current_num_threads(),
        1000.0 / eval
    );
}
