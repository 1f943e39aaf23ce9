//! The fast `f32` training path (crates/nn/src/fast/) against the generic dfdx-tape path:
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
        upper: Vec::new(),
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
    compare_with_prior(cfg, Prior::StandardNormal, obj, tr, n, seed)
}

/// A K-component mixture prior with spread means, unequal weights and scales.
fn mixture(cfg: &VaeConfig, components: usize, seed: u64) -> Prior<f32> {
    let d = cfg.latent_dim;
    let u = standard_normal_noise::<f32, _>(&mut stream_rng(seed, 9), components * (1 + 2 * d));
    let (logits, rest) = u.split_at(components);
    let (means, ls) = rest.split_at(components * d);
    Prior::mixture(
        components,
        d,
        logits.to_vec(),
        means.iter().map(|v| 1.5 * v).collect(),
        ls.iter().map(|v| 0.3 * v - 0.2).collect(),
    )
    .unwrap()
}

/// [`compare`] under a given prior.
fn compare_with_prior(
    cfg: &VaeConfig,
    prior: Prior<f32>,
    obj: Objective,
    tr: Trainable,
    n: usize,
    seed: u64,
) -> f64 {
    let vae: Vae<f32> = Vae::new(cfg, seed).unwrap();
    assert!(
        fast_path_available(&vae, &prior, &obj, tr),
        "this CPU or setting does not take the fast path: {obj:?}"
    );
    let x = data_for(cfg, n, seed + 1);
    let eps: Vec<f32> =
        standard_normal_noise(&mut stream_rng(seed, 2), n * obj.samples() * cfg.latent_dim);
    let (v_fast, g_fast) =
        objective_and_grads_with_noise(&vae, &prior, &obj, tr, &x, n, &eps).unwrap();
    let (v32, g32) =
        objective_and_grads_with_noise_reference(&vae, &prior, &obj, tr, &x, n, &eps).unwrap();
    let vae64 = vae.cast::<f64>().unwrap();
    let (v64, g64) = objective_and_grads_with_noise_reference(
        &vae64,
        &prior.cast::<f64>().unwrap(),
        &obj,
        tr,
        &to64(&x),
        n,
        &to64(&eps),
    )
    .unwrap();
    let what = format!(
        "{obj:?} {tr:?} {:?}/{:?}/{:?} prior {:?}",
        cfg.activation,
        cfg.likelihood,
        cfg.posterior_std,
        prior.kind()
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
        k: std::num::NonZeroUsize::new(5).unwrap(),
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
            (Objective::iwae(50).unwrap(), 7),
            (dreg(Objective::iwae(50).unwrap()), 7),
            (Objective::iwae(5).unwrap(), 3),
            (Objective::elbo(), 5),
            (elbo5, 4),
            (dreg(elbo5), 4),
            (analytic, 6),
            (Objective::iwae(3).unwrap(), 1),
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
            worst = worst.max(compare(
                cfg,
                Objective::iwae(50).unwrap(),
                tr,
                7,
                20 + i as u64,
            ));
        }
    }
    println!(
        "kernels: {} (CPU has {}); largest relative gradient difference to the f64 reference: \
         {worst:.2e}",
        Isa::active().name(),
        Isa::detected().name()
    );
}

/// The IWAE variants of Rainforth et al. (2018) on the fast path: MIWAE, CIWAE and PIWAE (whose
/// decoder and encoder weigh the samples differently) with both estimators, every trainable
/// set, under N(0, I) and a mixture prior, equal the f64 tape.
#[test]
fn fast_path_matches_the_reference_for_the_iwae_variants() {
    use std::num::NonZeroUsize;
    let m = |v: usize| NonZeroUsize::new(v).unwrap();
    let beta = |v: f64| Beta::new(v).unwrap();
    let kinds = [
        (ObjectiveKind::Miwae { m: m(3) }, 4),
        (ObjectiveKind::Ciwae { beta: beta(0.3) }, 10),
        (ObjectiveKind::Piwae { m: m(3) }, 4),
        (ObjectiveKind::Piwae { m: m(8) }, 8),
    ];
    let cfgs = [
        deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp),
        deep_cfg(
            Activation::Softplus,
            Likelihood::Gaussian {
                std: 0.7,
                learned: true,
            },
            PosteriorStd::Softplus,
        ),
        VaeConfig {
            encoder_hidden: vec![],
            decoder_hidden: vec![],
            ..deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp)
        },
    ];
    let enc_only = Trainable {
        encoder: true,
        decoder: false,
        prior: false,
    };
    let dec_only = Trainable {
        encoder: false,
        decoder: true,
        prior: false,
    };
    let mut worst = 0.0f64;
    for (i, cfg) in cfgs.iter().enumerate() {
        for (kind, k) in kinds {
            for estimator in [Estimator::Reparam, Estimator::Dreg] {
                let obj = Objective::new(kind, k, estimator, false).unwrap();
                for (tr, n) in [(Trainable::MODEL, 7), (enc_only, 3), (dec_only, 2)] {
                    worst = worst.max(compare(cfg, obj, tr, n, 60 + i as u64));
                }
                if i == 0 {
                    let seed = 70;
                    let prior = mixture(cfg, 3, seed);
                    worst = worst.max(compare_with_prior(cfg, prior, obj, Trainable::ALL, 5, seed));
                }
            }
        }
    }
    println!(
        "kernels: {} (CPU has {}); MIWAE/CIWAE/PIWAE: largest relative gradient difference to \
         the f64 reference: {worst:.2e}",
        Isa::active().name(),
        Isa::detected().name()
    );
}

/// The IWAE network's shapes (784-200-200-50) at k = 50, several chunks per lane.
#[test]
fn fast_path_matches_the_reference_on_the_iwae_network() {
    let cfg = VaeConfig::burda_mnist();
    let worst = compare(&cfg, Objective::iwae(50).unwrap(), Trainable::MODEL, 6, 3);
    println!("IWAE net, k = 50: largest relative gradient difference {worst:.2e}");
}

/// Central finite differences of the fast path's own f32 objective.
#[test]
fn fast_path_gradients_match_f32_finite_differences() {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    for obj in [Objective::iwae(5).unwrap(), Objective::elbo()] {
        let n = 3;
        let vae: Vae<f32> = Vae::new(&cfg, 5).unwrap();
        let prior = Prior::StandardNormal;
        assert!(fast_path_available(&vae, &prior, &obj, Trainable::MODEL));
        let x = data_for(&cfg, n, 6);
        let eps: Vec<f32> = standard_normal_noise(&mut stream_rng(5, 7), n * obj.samples() * 4);
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
                Objective::iwae(50).unwrap(),
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

/// The fast and the generic trainer (which `prior` and `trainable` allow both) follow the same
/// trajectory, to f32 accuracy over a few steps; the trainer can switch between them.
/// `tol`: the largest difference of any state value (weights, Adam moments) relative to 1 + |v|.
fn trainers_agree(prior: Prior<f32>, trainable: Trainable, tol: f32) {
    trainers_agree_on(Objective::iwae(5).unwrap(), prior, trainable, tol);
}

/// [`trainers_agree`] for objective `obj`.
fn trainers_agree_on(obj: Objective, prior: Prior<f32>, trainable: Trainable, tol: f32) {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    let x = data_for(&cfg, 8, 3);
    let make = || {
        Trainer::new(
            Vae::new(&cfg, 1).unwrap(),
            prior.clone(),
            obj,
            AdamHyper::default(),
            trainable,
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
    for (u, v) in fast.state().iter().zip(generic.state()) {
        for (p, q) in u.data.iter().zip(&v.data) {
            assert!(
                (p - q).abs() < tol * (1.0 + q.abs()),
                "{}: {p} vs {q} (tolerance {tol})",
                u.name
            );
        }
    }
}

/// The trainer draws m·k samples per example for MIWAE and PIWAE, on both paths.
#[test]
fn fast_and_generic_trainers_agree_for_the_iwae_variants() {
    let m = std::num::NonZeroUsize::new(2).unwrap();
    let ciwae = ObjectiveKind::Ciwae {
        beta: Beta::new(0.3).unwrap(),
    };
    for (kind, estimator) in [
        (ObjectiveKind::Miwae { m }, Estimator::Reparam),
        (ciwae, Estimator::Dreg),
        (ObjectiveKind::Piwae { m }, Estimator::Reparam),
        (ObjectiveKind::Piwae { m }, Estimator::Dreg),
    ] {
        let obj = Objective::new(kind, 3, estimator, false).unwrap();
        trainers_agree_on(obj, Prior::StandardNormal, Trainable::MODEL, 1e-4);
    }
}

#[test]
fn fast_and_generic_trainers_agree() {
    trainers_agree(Prior::StandardNormal, Trainable::MODEL, 1e-5);
}

/// With a wide posterior (log σ ≈ 2.5) at k = 50 most normalized weights w̃ underflow f32 —
/// the regime where the fast path flushes subnormals to zero (kernels::DenormalsAreZero).
/// Values and gradients still agree with the f64 reference to f32 accuracy.
#[test]
fn fast_path_with_underflowing_weights_matches_the_reference() {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    let (n, k, seed) = (7, 50, 31);
    let mut tensors = Vae::<f32>::new(&cfg, seed).unwrap().named_tensors();
    let bias = tensors
        .iter_mut()
        .find(|t| t.name == "encoder.log_std.bias")
        .expect("the log-σ head's bias");
    bias.data.iter_mut().for_each(|v| *v = 2.5);
    let vae = Vae::from_named_tensors(&cfg, &tensors).unwrap();
    // The regime is real: many normalized weights are below f32's smallest normal number.
    let x = data_for(&cfg, n, seed + 1);
    let eps: Vec<f32> = standard_normal_noise(&mut stream_rng(seed, 2), n * k * cfg.latent_dim);
    let vae64 = vae.cast::<f64>().unwrap();
    let lw = log_weights_with_noise(&vae64, &Prior::StandardNormal, &to64(&x), n, k, &to64(&eps))
        .unwrap();
    let tiny = lw
        .chunks(k)
        .flat_map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            row.iter()
                .map(move |v| (v - max).exp() / sum)
                .collect::<Vec<_>>()
        })
        .filter(|&w| w > 0.0 && w < f32::MIN_POSITIVE as f64 * n as f64)
        .count();
    assert!(
        tiny >= n * k / 4,
        "only {tiny} of {} weights underflow",
        n * k
    );
    // `compare` builds its own model from the seed: compare this one directly.
    let obj = Objective::iwae(k).unwrap();
    let prior = Prior::StandardNormal;
    let (v_fast, g_fast) =
        objective_and_grads_with_noise(&vae, &prior, &obj, Trainable::MODEL, &x, n, &eps).unwrap();
    let (v64, g64) = objective_and_grads_with_noise_reference(
        &vae64,
        &Prior::StandardNormal,
        &obj,
        Trainable::MODEL,
        &to64(&x),
        n,
        &to64(&eps),
    )
    .unwrap();
    assert!(
        (v_fast - v64).abs() <= 1e-5 * v64.abs().max(1.0),
        "value fast {v_fast} vs f64 reference {v64}"
    );
    for (gf, g6) in g_fast.iter().zip(&g64) {
        let e = rel_diff(&gf.data, &g6.data);
        assert!(e <= 2e-4, "{}: relative difference {e:.2e}", gf.name);
    }
    // Flush-to-zero is confined to the kernels: this thread's mode is unchanged.
    assert!(!DenormalsAreZero::active());
}

/// Digest of the fast path's value and gradients on the IWAE network at k = 50 (several chunks
/// per lane, every layer shape of the kernels).
fn fast_path_digest() -> String {
    let cfg = VaeConfig::burda_mnist();
    let (n, k) = (6, 50);
    let vae: Vae<f32> = Vae::new(&cfg, 3).unwrap();
    let x = data_for(&cfg, n, 4);
    let eps: Vec<f32> = standard_normal_noise(&mut stream_rng(3, 2), n * k * cfg.latent_dim);
    let mut out = String::new();
    for obj in [
        Objective::iwae(k).unwrap(),
        Objective {
            estimator: Estimator::Dreg,
            ..Objective::iwae(k).unwrap()
        },
        Objective {
            kind: ObjectiveKind::Elbo,
            ..Objective::iwae(k).unwrap()
        },
    ] {
        let (v, grads) = objective_and_grads_with_noise(
            &vae,
            &Prior::StandardNormal,
            &obj,
            Trainable::MODEL,
            &x,
            n,
            &eps,
        )
        .unwrap();
        let mut h: u64 = v.to_bits();
        for g in &grads {
            for x in &g.data {
                h = (h ^ x.to_bits() as u64).wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// Every instruction set's kernels (AVX-512 and AVX2 where the CPU has them; `VAEPIPE_ISA`
/// caps the process's choice, so each runs in a child process of this test binary) give
/// bit-identical values and gradients on the fast path.
#[test]
fn fast_path_is_bit_identical_on_every_instruction_set() {
    const CHILD: &str = "VAEPIPE_TEST_ISA_CHILD";
    if std::env::var_os(CHILD).is_some() {
        println!("DIGEST {} {}", Isa::active().name(), fast_path_digest());
        return;
    }
    let isas: Vec<Isa> = Isa::supported()
        .into_iter()
        .filter(|&i| i >= Isa::Avx2)
        .collect();
    if isas.is_empty() {
        println!("no AVX2 on this CPU: the fast path is not used, nothing to compare");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut digests = Vec::new();
    for isa in &isas {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "fast_path_is_bit_identical_on_every_instruction_set",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("VAEPIPE_ISA", isa.name())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child for {isa:?} failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = text
            .lines()
            .find_map(|l| l.split_once("DIGEST ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no digest from the {isa:?} child: {text}"));
        let (ran, digest) = line.split_once(' ').unwrap();
        assert_eq!(ran, isa.name(), "the child ran other kernels than asked");
        digests.push((ran.to_string(), digest.to_string()));
    }
    println!("fast path ran with the kernels of: {digests:?}");
    for (name, d) in &digests[1..] {
        assert_eq!(
            d, &digests[0].1,
            "{name} and {} kernels give different results",
            digests[0].0
        );
    }
}

/// [`compare_with_prior`] for every trainable set and (objective, batch size), each under a
/// fresh `prior()`, asserting first that the fast path takes it; the largest relative gradient
/// difference.
fn compare_everywhere(
    cfg: &VaeConfig,
    prior: impl Fn() -> Prior<f32>,
    sets: &[Trainable],
    objectives: &[(Objective, usize)],
    seed: u64,
) -> f64 {
    let mut worst = 0.0f64;
    for &tr in sets {
        for &(obj, n) in objectives {
            let (prior, vae) = (prior(), Vae::<f32>::new(cfg, seed).unwrap());
            assert!(
                fast_path_available(&vae, &prior, &obj, tr),
                "{:?} {tr:?} {obj:?} does not take the fast path",
                prior.kind()
            );
            worst = worst.max(compare_with_prior(cfg, prior, obj, tr, n, seed));
        }
    }
    worst
}

/// Mixture priors (fine-tuning under a refit prior, and gradient refits of the prior itself)
/// take the fast path, and agree with the f64 tape for every trainable set and estimator.
#[test]
fn fast_path_with_a_mixture_prior_matches_the_reference() {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    let dreg = Objective {
        estimator: Estimator::Dreg,
        ..Objective::iwae(50).unwrap()
    };
    let elbo5 = Objective {
        k: std::num::NonZeroUsize::new(5).unwrap(),
        ..Objective::elbo()
    };
    let prior_only = Trainable {
        encoder: false,
        decoder: false,
        prior: true,
    };
    let objectives = [
        (Objective::iwae(50).unwrap(), 7),
        (dreg, 7),
        (elbo5, 4),
        (Objective::elbo(), 5),
    ];
    let mut worst = 0.0f64;
    for (i, components) in [1usize, 3, 10].into_iter().enumerate() {
        let seed = 40 + i as u64;
        let sets = [Trainable::MODEL, Trainable::ALL, prior_only];
        let prior = || mixture(&cfg, components, seed);
        worst = worst.max(compare_everywhere(&cfg, prior, &sets, &objectives, seed));
    }
    println!("mixture priors: largest relative gradient difference {worst:.2e}");
}

/// A VampPrior with `components` pseudo-inputs in (0, 1), distinct per seed.
fn vamp(cfg: &VaeConfig, components: usize, seed: u64) -> Prior<f32> {
    let u = standard_normal_noise::<f32, _>(&mut stream_rng(seed, 11), components * cfg.input_dim);
    Prior::vamp(
        components,
        cfg.input_dim,
        u.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
    )
    .unwrap()
}

/// The VampPrior (fine-tuning under it, training it with the model, refitting its pseudo-inputs
/// alone) takes the fast path — its density runs through the encoder, whose gradient and the
/// pseudo-inputs' come back through the encoder's backward pass — and agrees with the f64 tape
/// for every trainable set, estimator and objective, with one active lane (n = 1) or two, and
/// with K split unevenly between them.
#[test]
fn fast_path_with_a_vamp_prior_matches_the_reference() {
    let dreg = Objective {
        estimator: Estimator::Dreg,
        ..Objective::iwae(50).unwrap()
    };
    let elbo5 = Objective {
        k: std::num::NonZeroUsize::new(5).unwrap(),
        ..Objective::elbo()
    };
    let piwae = Objective::new(
        ObjectiveKind::Piwae {
            m: std::num::NonZeroUsize::new(2).unwrap(),
        },
        3,
        Estimator::Dreg,
        false,
    )
    .unwrap();
    let only = |encoder, decoder, prior| Trainable {
        encoder,
        decoder,
        prior,
    };
    let sets = [
        Trainable::MODEL,
        Trainable::ALL,
        only(false, false, true),
        only(true, false, false),
        only(false, true, true),
    ];
    let objectives = [
        (Objective::iwae(50).unwrap(), 7),
        (dreg, 1),
        (elbo5, 4),
        (Objective::elbo(), 5),
        (piwae, 3),
    ];
    let mut worst = 0.0f64;
    for (i, (components, pstd)) in [
        (1usize, PosteriorStd::Exp),
        (3, PosteriorStd::Softplus),
        (8, PosteriorStd::Exp),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, pstd);
        let seed = 60 + i as u64;
        let prior = || vamp(&cfg, components, seed);
        worst = worst.max(compare_everywhere(&cfg, prior, &sets, &objectives, seed));
    }
    // Without a hidden encoder layer the pseudo-inputs' gradient is not on the fast path.
    let shallow = VaeConfig {
        encoder_hidden: Vec::new(),
        ..deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp)
    };
    let vae: Vae<f32> = Vae::new(&shallow, 1).unwrap();
    assert!(!fast_path_available(
        &vae,
        &vamp(&shallow, 2, 1),
        &Objective::iwae(5).unwrap(),
        Trainable::ALL
    ));
    println!("VampPrior: largest relative gradient difference {worst:.2e}");
}

/// Training encoder, decoder and a mixture prior together: the fast and the generic trainer
/// follow the same trajectory.
#[test]
fn fast_and_generic_trainers_agree_under_a_mixture_prior() {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    trainers_agree(mixture(&cfg, 4, 5), Trainable::ALL, 1e-4);
}

/// Training encoder, decoder and a VampPrior's pseudo-inputs together: the fast and the generic
/// trainer follow the same trajectory.
#[test]
fn fast_and_generic_trainers_agree_under_a_vamp_prior() {
    let cfg = deep_cfg(Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp);
    trainers_agree(vamp(&cfg, 5, 7), Trainable::ALL, 1e-4);
}
