//! The trainer's Adam against dfdx 0.13's Adam kernel (`AdamConfig::try_update`), bit for bit:
//! on the fast path (crates/nn/src/kernels.rs `adam`, fused in crates/nn/src/fast/pack.rs with the
//! packing of the weights for the next step, which then skips copying and packing them) and on
//! the generic path, when switching between the two and after restoring an earlier state into
//! the same trainer; with one lane and with two, biases, a learned decoder log-std, a trained
//! mixture prior and a partial trainable set.

mod common;

use common::*;
use dfdx::prelude::*;
use vaepipe_nn::*;

/// Encoder 20-12-9, d = 4, decoder 7-18: the 20-row and 18-row weight matrices are one full
/// block of 16 rows and a partial one (the 18-row one also packed transposed); no width is a
/// multiple of the kernels' panels.
fn cfg(likelihood: Likelihood) -> VaeConfig {
    VaeConfig {
        input_dim: 20,
        encoder_hidden: vec![12, 9],
        latent_dim: 4,
        decoder_hidden: vec![7, 18],
        activation: Activation::Tanh,
        likelihood,
        posterior_std: PosteriorStd::Exp,
        upper: Vec::new(),
    }
}

fn data(cfg: &VaeConfig, n: usize) -> Vec<f32> {
    match cfg.likelihood {
        Likelihood::Bernoulli => binary_data(n, cfg.input_dim, 4),
        Likelihood::Gaussian { .. } => gaussian_data(n, cfg.input_dim, 4),
    }
    .iter()
    .map(|&v| v as f32)
    .collect()
}

fn mixture(d: usize, components: usize) -> Prior<f32> {
    let u = standard_normal_noise::<f32, _>(&mut stream_rng(8, 9), components * (1 + 2 * d));
    let (logits, rest) = u.split_at(components);
    let (means, ls) = rest.split_at(components * d);
    Prior::mixture(
        components,
        d,
        logits.to_vec(),
        means.to_vec(),
        ls.iter().map(|v| 0.2 * v).collect(),
    )
    .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The trainer's state after one more step, computed with dfdx's Adam kernel from `state` (a
/// [`Trainer::state`]) and the gradients `grads` of the objective (ascent direction).
fn reference_step(
    state: &[NamedTensor<f32>],
    grads: &[NamedTensor<f32>],
    hyper: AdamHyper,
    t: i32,
) -> Vec<NamedTensor<f32>> {
    let dev = Cpu::default();
    let cfg = AdamConfig {
        lr: hyper.lr,
        betas: [hyper.beta1, hyper.beta2],
        eps: hyper.eps,
        weight_decay: None,
    };
    let find = |name: &str| {
        state
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} missing from the state"))
            .data
            .clone()
    };
    let mut out = state.to_vec();
    for g in grads {
        let p = find(&g.name);
        let mut p = dev.tensor_from_vec(p.clone(), (p.len(),));
        let mut m: Vec<f32> = find(&format!("adam.m.{}", g.name));
        let mut v: Vec<f32> = find(&format!("adam.v.{}", g.name));
        let mut mb = dev.try_alloc_len(m.len()).unwrap();
        let mut vb = dev.try_alloc_len(v.len()).unwrap();
        let mut gb = dev.try_alloc_len(v.len()).unwrap();
        mb.copy_from_slice(&m);
        vb.copy_from_slice(&v);
        for (dst, &src) in gb.iter_mut().zip(&g.data) {
            *dst = -src;
        }
        cfg.try_update(t, &mut p, &mut mb, &mut vb, &gb).unwrap();
        m.copy_from_slice(&mb);
        v.copy_from_slice(&vb);
        for t in out.iter_mut() {
            if t.name == g.name {
                t.data = p.as_vec();
            } else if t.name == format!("adam.m.{}", g.name) {
                t.data = m.clone();
            } else if t.name == format!("adam.v.{}", g.name) {
                t.data = v.clone();
            }
        }
    }
    let step = out.last_mut().unwrap();
    assert_eq!(step.name, "trainer.step");
    step.data[1] += 1.0;
    out
}

/// Steps a trainer — fast, fast, generic, fast, restore of an earlier state, fast, fast — and
/// checks every state against dfdx's Adam applied to the gradient of the path that step took.
fn check(cfg: &VaeConfig, prior: Prior<f32>, trainable: Trainable, n: usize, hyper: AdamHyper) {
    let obj = Objective::iwae(3).unwrap();
    let mut tr = Trainer::new(Vae::new(cfg, 2).unwrap(), prior, obj, hyper, trainable).unwrap();
    assert!(tr.uses_fast_path());
    let x = data(cfg, n);
    let mut saved: Option<Vec<NamedTensor<f32>>> = None;
    for s in 0..7u64 {
        let fast = s != 2;
        // Switching only when the path changes, so that the restore at step 4 alone must make
        // the engine drop the weights it packed.
        if tr.uses_fast_path() != fast {
            assert_eq!(tr.set_fast_path(fast), fast);
        }
        if s == 4 {
            tr.restore(saved.as_ref().unwrap()).unwrap();
        }
        let eps: Vec<f32> = standard_normal_noise(&mut stream_rng(6, s), n * 3 * cfg.latent_dim);
        let grad = if fast {
            objective_and_grads_with_noise
        } else {
            objective_and_grads_with_noise_reference
        };
        let (_, grads) = grad(tr.vae(), tr.prior(), &obj, trainable, &x, n, &eps).unwrap();
        let before = tr.state();
        if s == 1 {
            saved = Some(before.clone());
        }
        let expected = reference_step(&before, &grads, hyper, tr.steps() as i32 + 1);
        tr.step_with_noise(&x, n, &eps).unwrap();
        for (a, b) in tr.state().iter().zip(&expected) {
            assert_eq!(a.name, b.name);
            assert!(
                bits(&a.data) == bits(&b.data),
                "step {s} (fast: {fast}, n = {n}): {} differs from dfdx's Adam: {:?} vs {:?}",
                a.name,
                &a.data[..a.data.len().min(4)],
                &b.data[..b.data.len().min(4)]
            );
        }
    }
}

#[test]
fn fast_adam_is_dfdx_adam_bit_for_bit() {
    let burda = AdamHyper {
        eps: 1e-4,
        ..AdamHyper::default()
    };
    let odd = AdamHyper {
        lr: 3e-2,
        beta1: 0.7,
        beta2: 0.95,
        eps: 1e-6,
    };
    let bern = cfg(Likelihood::Bernoulli);
    for n in [1, 5] {
        check(&bern, Prior::StandardNormal, Trainable::MODEL, n, burda);
    }
    check(&bern, Prior::StandardNormal, Trainable::MODEL, 4, odd);
    let encoder_only = Trainable {
        decoder: false,
        ..Trainable::MODEL
    };
    check(&bern, Prior::StandardNormal, encoder_only, 3, odd);
    // A learned decoder log-std and a trained mixture prior: tensors the engine keeps no copy
    // of.
    let gauss = cfg(Likelihood::Gaussian {
        std: 0.7,
        learned: true,
    });
    let all = Trainable {
        prior: true,
        ..Trainable::MODEL
    };
    check(&gauss, mixture(gauss.latent_dim, 3), all, 4, burda);
}
