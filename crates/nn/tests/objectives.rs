//! The IWAE variants of Rainforth et al. (2018) on the f64 tape path: MIWAE, CIWAE and PIWAE
//! gradients equal central finite differences of their own objectives (PIWAE's decoder part
//! those of L_{MK}, its encoder part those of MIWAE(M, K)); CIWAE at β = 1 is the ELBO and at
//! β = 0 the IWAE bound, MIWAE with one group is IWAE (values and gradients, both estimators);
//! DReG's encoder gradient is unbiased for each variant's.

mod common;

use std::num::NonZeroUsize;

use common::*;
use vaepipe_nn::*;

fn m(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

fn beta(v: f64) -> ObjectiveKind {
    ObjectiveKind::Ciwae {
        beta: Beta::new(v).unwrap(),
    }
}

fn obj(kind: ObjectiveKind, k: usize, estimator: Estimator) -> Objective {
    Objective::new(kind, k, estimator, false).unwrap()
}

/// Value and gradients on the f64 tape, under N(0, I), encoder and decoder trained.
fn eval(vae: &Vae<f64>, o: &Objective, x: &[f64], n: usize, eps: &[f64]) -> Grads {
    let (v, g) =
        objective_and_grads_with_noise(vae, &Prior::StandardNormal, o, Trainable::MODEL, x, n, eps)
            .unwrap();
    Grads(v, g)
}

struct Grads(f64, Vec<NamedTensor<f64>>);

impl Grads {
    fn part(&self, prefix: &str) -> Vec<f64> {
        self.1
            .iter()
            .filter(|t| t.name.starts_with(prefix))
            .flat_map(|t| t.data.iter().copied())
            .collect()
    }
}

/// Checks the gradient entries of `grads` whose names start with `prefix` against central
/// finite differences of `value_of`'s value (at most `per_tensor` entries per tensor); returns
/// the number of entries checked.
fn check_part(
    vae: &Vae<f64>,
    grads: &Grads,
    value_of: &Objective,
    prefix: &str,
    batch: Batch<'_>,
    per_tensor: usize,
) -> usize {
    let cfg = vae.config().clone();
    let model = vae.named_tensors();
    let value = |name: &str, idx: usize, v: f64| {
        let vae2 = Vae::from_named_tensors(&cfg, &with_value(&model, name, idx, v)).unwrap();
        eval(&vae2, value_of, batch.x, batch.n, batch.eps).0
    };
    let mut checked = 0;
    for g in grads.1.iter().filter(|t| t.name.starts_with(prefix)) {
        let base = model.iter().find(|t| t.name == g.name).unwrap();
        let stride = (g.data.len() / per_tensor).max(1);
        for idx in (0..g.data.len()).step_by(stride) {
            let theta = base.data[idx];
            let h = 1e-5 * theta.abs().max(1.0);
            let fd = (value(&g.name, idx, theta + h) - value(&g.name, idx, theta - h)) / (2.0 * h);
            let an = g.data[idx];
            assert!(
                (fd - an).abs() <= 1e-6 * an.abs().max(1.0),
                "{value_of:?}: d/d {}[{idx}]: gradient {an:.12e}, finite difference {fd:.12e}",
                g.name
            );
            checked += 1;
        }
    }
    checked
}

fn setup(n: usize, samples: usize, seed: u64) -> (Vae<f64>, Vec<f64>, Vec<f64>) {
    let cfg = bernoulli_cfg();
    let vae: Vae<f64> = Vae::new(&cfg, seed).unwrap();
    let x = binary_data(n, cfg.input_dim, seed + 1);
    let eps = standard_normal_noise(&mut stream_rng(seed, 2), n * samples * cfg.latent_dim);
    (vae, x, eps)
}

#[test]
fn miwae_and_ciwae_gradients_match_finite_differences() {
    let n = 2;
    for (kind, k) in [
        (ObjectiveKind::Miwae { m: m(3) }, 4),
        (ObjectiveKind::Miwae { m: m(2) }, 1),
        (beta(0.3), 6),
        (beta(0.05), 1),
    ] {
        let o = obj(kind, k, Estimator::Reparam);
        let (vae, x, eps) = setup(n, o.samples(), 40 + k as u64);
        let g = eval(&vae, &o, &x, n, &eps);
        let batch = Batch {
            x: &x,
            n,
            eps: &eps,
        };
        let checked = check_part(&vae, &g, &o, "", batch, 8);
        assert!(checked > 40, "{o:?}: only {checked} entries");
    }
}

/// PIWAE's decoder ascends L_{MK} and its encoder MIWAE(M, K): each part of its gradient is
/// the finite-difference gradient of its own objective, and not of the other one.
#[test]
fn each_piwae_gradient_part_matches_its_own_objective() {
    let n = 2;
    for estimator in [Estimator::Reparam, Estimator::Dreg] {
        for (groups, k) in [(3, 4), (2, 1)] {
            let piwae = obj(ObjectiveKind::Piwae { m: m(groups) }, k, estimator);
            let lmk = obj(ObjectiveKind::Iwae, groups * k, Estimator::Reparam);
            let miwae = obj(ObjectiveKind::Miwae { m: m(groups) }, k, Estimator::Reparam);
            let (vae, x, eps) = setup(n, piwae.samples(), 50 + k as u64);
            let g = eval(&vae, &piwae, &x, n, &eps);
            // The value reported is L_{MK}.
            let v_lmk = eval(&vae, &lmk, &x, n, &eps).0;
            assert!((g.0 - v_lmk).abs() < 1e-12, "{} vs {v_lmk}", g.0);
            let batch = Batch {
                x: &x,
                n,
                eps: &eps,
            };
            check_part(&vae, &g, &lmk, "decoder.", batch, 8);
            if estimator == Estimator::Reparam {
                check_part(&vae, &g, &miwae, "encoder.", batch, 8);
            }
            // The parts are those of the two objectives, and these differ.
            let g_lmk = eval(&vae, &lmk, &x, n, &eps);
            let g_mi = eval(&vae, &miwae, &x, n, &eps);
            assert_close(
                &g.part("decoder."),
                &g_lmk.part("decoder."),
                "decoder vs L_MK",
            );
            if estimator == Estimator::Reparam {
                assert_close(
                    &g.part("encoder."),
                    &g_mi.part("encoder."),
                    "encoder vs MIWAE",
                );
            }
            assert!(max_diff(&g_lmk.part("encoder."), &g_mi.part("encoder.")) > 1e-6);
        }
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(u, v)| (u - v).abs())
        .fold(0.0, f64::max)
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    let scale = b.iter().fold(1.0f64, |s, v| s.max(v.abs()));
    let d = max_diff(a, b);
    assert!(d <= 1e-12 * scale, "{what}: differ by {d:e}");
}

/// Same value and same gradients (every tensor) at the same noise.
fn assert_same(vae: &Vae<f64>, a: &Objective, b: &Objective, n: usize, seed: u64) {
    assert_eq!(a.samples(), b.samples());
    let cfg = vae.config();
    let x = binary_data(n, cfg.input_dim, seed);
    let eps = standard_normal_noise(&mut stream_rng(seed, 3), n * a.samples() * cfg.latent_dim);
    let (ga, gb) = (eval(vae, a, &x, n, &eps), eval(vae, b, &x, n, &eps));
    assert!(
        (ga.0 - gb.0).abs() <= 1e-12 * ga.0.abs().max(1.0),
        "{a:?} vs {b:?}: values"
    );
    for (ta, tb) in ga.1.iter().zip(&gb.1) {
        assert_eq!(ta.name, tb.name);
        assert_close(&ta.data, &tb.data, &format!("{a:?} vs {b:?}: {}", ta.name));
    }
}

#[test]
fn ciwae_at_beta_one_is_the_elbo_and_at_zero_the_iwae_bound() {
    let vae: Vae<f64> = Vae::new(&bernoulli_cfg(), 7).unwrap();
    for estimator in [Estimator::Reparam, Estimator::Dreg] {
        for k in [1, 5] {
            let elbo = obj(ObjectiveKind::Elbo, k, estimator);
            let iwae = obj(ObjectiveKind::Iwae, k, estimator);
            assert_same(&vae, &obj(beta(1.0), k, estimator), &elbo, 3, 8);
            assert_same(&vae, &obj(beta(0.0), k, estimator), &iwae, 3, 9);
        }
    }
}

#[test]
fn miwae_with_one_group_is_iwae_and_piwae_with_one_group_too() {
    let vae: Vae<f64> = Vae::new(&bernoulli_cfg(), 8).unwrap();
    for estimator in [Estimator::Reparam, Estimator::Dreg] {
        let iwae = obj(ObjectiveKind::Iwae, 6, estimator);
        let one = ObjectiveKind::Miwae { m: m(1) };
        assert_same(&vae, &obj(one, 6, estimator), &iwae, 3, 10);
        let one = ObjectiveKind::Piwae { m: m(1) };
        assert_same(&vae, &obj(one, 6, estimator), &iwae, 3, 11);
    }
}

/// Over many noise draws, DReG's encoder gradient has the mean of the reparameterised one
/// (largest |mean difference| / standard error over the coordinates below 4.5) and the
/// decoder gradient is untouched; returns that largest z.
fn dreg_z(vae: &Vae<f64>, kind: ObjectiveKind, k: usize, draws: usize, seed: u64) -> f64 {
    let (n, d) = (2, vae.config().latent_dim);
    let x = binary_data(n, vae.config().input_dim, seed);
    let standard = obj(kind, k, Estimator::Reparam);
    let dreg = obj(kind, k, Estimator::Dreg);
    let mut rng = stream_rng(seed, 4);
    let mut sums: Vec<[f64; 2]> = Vec::new();
    for _ in 0..draws {
        let eps = standard_normal_noise(&mut rng, n * standard.samples() * d);
        let gs = eval(vae, &standard, &x, n, &eps);
        let gr = eval(vae, &dreg, &x, n, &eps);
        assert_eq!(gs.part("decoder."), gr.part("decoder."), "{kind:?}");
        let (es, er) = (gs.part("encoder."), gr.part("encoder."));
        sums.resize(es.len(), [0.0; 2]);
        for (s, (a, b)) in sums.iter_mut().zip(es.iter().zip(&er)) {
            let diff = b - a;
            s[0] += diff;
            s[1] += diff * diff;
        }
    }
    let t = draws as f64;
    let mut worst = 0.0f64;
    for s in &sums {
        let var = ((s[1] - s[0] * s[0] / t) / (t - 1.0)).max(0.0);
        let se = (var / t).sqrt();
        if se > 0.0 {
            worst = worst.max((s[0] / t / se).abs());
        }
    }
    worst
}

#[test]
fn dreg_is_unbiased_for_miwae_ciwae_and_piwae() {
    let vae: Vae<f64> = Vae::new(&bernoulli_cfg(), 5).unwrap();
    for (kind, k) in [
        (ObjectiveKind::Miwae { m: m(3) }, 4),
        (beta(0.3), 8),
        (ObjectiveKind::Piwae { m: m(3) }, 4),
    ] {
        let z = dreg_z(&vae, kind, k, 600, 21);
        println!("{kind:?}, k = {k}: largest |mean(DReG − reparam)|/SE = {z:.2}");
        assert!(z < 4.5, "{kind:?}: DReG's mean differs (z = {z})");
    }
}
