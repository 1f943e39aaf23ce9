//! Training: Adam on a small VAE over synthetic binary data improves the bound; runs are
//! bit-identical for equal seeds; saving the state after step s, restoring it into a fresh
//! trainer (through a checkpoint file) and continuing equals the uninterrupted run bit for bit;
//! divergence is reported before any update; trainable groups are respected.

use std::collections::BTreeMap;

use vaepipe_nn::*;

const D: usize = 16;

fn cfg() -> VaeConfig {
    VaeConfig {
        input_dim: D,
        encoder_hidden: vec![12],
        latent_dim: 2,
        decoder_hidden: vec![12],
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        posterior_std: PosteriorStd::Exp,
        upper: Vec::new(),
    }
}

/// 200 binary vectors: noisy copies (5 % flips) of four prototypes.
fn dataset() -> Vec<f32> {
    let protos = [
        0b1111_0000_1111_0000u32,
        0b0000_1111_0000_1111,
        0b1010_1010_1010_1010,
        0b1100_0011_1100_0011,
    ];
    let mut rng = stream_rng(77, 0);
    let flips: Vec<f64> = standard_normal_noise(&mut rng, 200 * D);
    let mut x = Vec::with_capacity(200 * D);
    for i in 0..200 {
        for j in 0..D {
            let bit = (protos[i % 4] >> j) & 1 == 1;
            let flip = flips[i * D + j] > 1.645; // P ≈ 0.05
            x.push(if bit != flip { 1.0 } else { 0.0 });
        }
    }
    x
}

fn batch(x: &[f32], step: u64) -> &[f32] {
    let b = (step as usize % 10) * 20;
    &x[b * D..(b + 20) * D]
}

fn mean_bound(vae: &Vae<f32>, x: &[f32], k: usize) -> f64 {
    let lw = log_weights(
        vae,
        &Prior::StandardNormal,
        x,
        200,
        k,
        &mut stream_rng(5, 5),
    )
    .unwrap();
    let b = bound_from_log_weights(&lw, 200, k).unwrap();
    b.iter().sum::<f64>() / b.len() as f64
}

fn trainer(objective: Objective) -> Trainer<f32> {
    let vae = Vae::new(&cfg(), 3).unwrap();
    let hyper = AdamHyper {
        lr: 3e-3,
        ..AdamHyper::default()
    };
    Trainer::new(
        vae,
        Prior::StandardNormal,
        objective,
        hyper,
        Trainable::MODEL,
    )
    .unwrap()
}

fn run(tr: &mut Trainer<f32>, x: &[f32], steps: std::ops::Range<u64>) {
    for s in steps {
        let stats = tr.step(batch(x, s), 20, &mut stream_rng(11, s)).unwrap();
        assert!(stats.bound.is_finite() && stats.grad_norm.is_finite() && stats.grad_norm > 0.0);
    }
}

fn bits(t: &[NamedTensor]) -> Vec<(String, Vec<u32>)> {
    t.iter()
        .map(|t| (t.name.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn training_improves_the_bound() {
    let x = dataset();
    for objective in [
        Objective::iwae(5).unwrap(),
        Objective::elbo(),
        Objective {
            estimator: Estimator::Dreg,
            ..Objective::iwae(5).unwrap()
        },
    ] {
        let mut tr = trainer(objective);
        let before = mean_bound(tr.vae(), &x, 20);
        run(&mut tr, &x, 0..600);
        let after = mean_bound(tr.vae(), &x, 20);
        println!("{objective:?}: L_20 on the data {before:.3} -> {after:.3} nats");
        // Random data with these marginals costs ≈ 16·ln 2 ≈ 11 nats; the prototypes are
        // nearly free once learned, leaving the flip noise (≈ 16·H(0.05) ≈ 3.2 nats).
        assert!(after > before + 3.0, "{objective:?}: {before} -> {after}");
    }
}

#[test]
fn equal_seeds_give_bit_identical_runs_and_resume_is_exact() {
    let x = dataset();
    let objective = Objective::iwae(5).unwrap();
    let mut a = trainer(objective);
    run(&mut a, &x, 0..40);
    let mut b = trainer(objective);
    run(&mut b, &x, 0..40);
    assert_eq!(bits(&a.state()), bits(&b.state()), "two equal runs differ");

    // Interrupted run: 17 steps, save to a file, restore into a fresh trainer, 23 more steps.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let mut c = trainer(objective);
    run(&mut c, &x, 0..17);
    save_safetensors(&path, &c.state(), &BTreeMap::new()).unwrap();
    drop(c);
    let (state, _) = load_safetensors(&path).unwrap();
    let mut d = trainer(objective);
    d.restore(&state).unwrap();
    assert_eq!(d.steps(), 17);
    run(&mut d, &x, 17..40);
    assert_eq!(
        bits(&a.state()),
        bits(&d.state()),
        "resumed run differs from the uninterrupted run"
    );
}

#[test]
fn step_counter_round_trips_beyond_f32_integers() {
    let x = dataset();
    let mut tr = trainer(Objective::iwae(2).unwrap());
    let mut state = tr.state();
    let st = state.iter_mut().find(|t| t.name == "trainer.step").unwrap();
    // 2^24 + 1 is not representable as one f32.
    st.data = vec![1.0, 1.0];
    tr.restore(&state).unwrap();
    assert_eq!(tr.steps(), (1 << 24) + 1);
    run(&mut tr, &x, 0..1);
    let st = tr
        .state()
        .into_iter()
        .find(|t| t.name == "trainer.step")
        .unwrap();
    assert_eq!(st.data, vec![1.0, 2.0]);
}

#[test]
fn restore_rejects_mismatched_state_and_leaves_the_trainer_unchanged() {
    let x = dataset();
    let mut tr = trainer(Objective::iwae(3).unwrap());
    run(&mut tr, &x, 0..3);
    let before = bits(&tr.state());
    let good = tr.state();

    let mut missing = good.clone();
    missing.retain(|t| t.name != "adam.v.decoder.out.bias");
    let err = tr.restore(&missing).unwrap_err();
    assert!(err.to_string().contains("adam.v.decoder.out.bias"), "{err}");

    let mut extra = good.clone();
    extra.push(NamedTensor::new("optimizer.lr", vec![1], vec![0.1f32]).unwrap());
    let err = tr.restore(&extra).unwrap_err();
    assert!(err.to_string().contains("optimizer.lr"), "{err}");

    let mut shape = good.clone();
    shape
        .iter_mut()
        .find(|t| t.name == "adam.m.encoder.0.weight")
        .unwrap()
        .shape = vec![12, 16];
    let err = tr.restore(&shape).unwrap_err();
    assert!(
        err.to_string().contains("adam.m.encoder.0.weight") && err.to_string().contains("[16, 12]"),
        "{err}"
    );

    let mut negative = good.clone();
    negative
        .iter_mut()
        .find(|t| t.name == "adam.v.encoder.0.bias")
        .unwrap()
        .data[0] = -1.0;
    assert!(tr.restore(&negative).is_err());

    assert_eq!(before, bits(&tr.state()));
}

#[test]
fn divergence_is_reported_before_any_update() {
    // A Gaussian decoder whose output bias overflows the squared error to +∞ in f32.
    let cfg = VaeConfig {
        likelihood: Likelihood::Gaussian {
            std: 1.0,
            learned: false,
        },
        ..cfg()
    };
    let mut t = Vae::<f32>::new(&cfg, 1).unwrap().named_tensors();
    t.iter_mut()
        .find(|t| t.name == "decoder.out.bias")
        .unwrap()
        .data[0] = 3e19;
    let vae = Vae::from_named_tensors(&cfg, &t).unwrap();
    let mut tr = Trainer::new(
        vae,
        Prior::StandardNormal,
        Objective::iwae(3).unwrap(),
        AdamHyper::default(),
        Trainable::MODEL,
    )
    .unwrap();
    let before = bits(&tr.state());
    let x = vec![0.5f32; 4 * D];
    let err = tr.step(&x, 4, &mut stream_rng(1, 1)).unwrap_err();
    assert!(matches!(err, NnError::Diverged { .. }), "{err:?}");
    assert_eq!(
        before,
        bits(&tr.state()),
        "parameters changed on a diverged step"
    );
    assert_eq!(tr.steps(), 0);
}

#[test]
fn trainable_groups_are_respected() {
    let x = dataset();
    let vae: Vae<f32> = Vae::new(&cfg(), 4).unwrap();
    let mut rng = stream_rng(2, 0);
    let prior = Prior::mixture_init(&vae, &x, 200, 5, &mut rng).unwrap();
    let hyper = AdamHyper {
        lr: 1e-2,
        ..AdamHyper::default()
    };

    // Prior refit: only prior.* moves, and the bound under the prior improves.
    let mut refit = Trainer::new(
        vae.clone(),
        prior.clone(),
        Objective::iwae(5).unwrap(),
        hyper,
        Trainable::PRIOR,
    )
    .unwrap();
    let start = refit
        .step(batch(&x, 0), 20, &mut stream_rng(1, 0))
        .unwrap()
        .bound;
    for s in 1..200 {
        refit.step(batch(&x, s), 20, &mut stream_rng(1, s)).unwrap();
    }
    let end = refit
        .step(batch(&x, 0), 20, &mut stream_rng(1, 0))
        .unwrap()
        .bound;
    assert!(
        end > start,
        "prior refit did not improve the bound: {start} -> {end}"
    );
    let (vae2, prior2) = refit.into_parts();
    assert_eq!(bits(&vae2.named_tensors()), bits(&vae.named_tensors()));
    assert_ne!(bits(&prior2.named_tensors()), bits(&prior.named_tensors()));
    let state_names: Vec<String> = Trainer::new(
        vae.clone(),
        prior.clone(),
        Objective::iwae(5).unwrap(),
        hyper,
        Trainable::PRIOR,
    )
    .unwrap()
    .state()
    .into_iter()
    .filter(|t| t.name.starts_with("adam."))
    .map(|t| t.name)
    .collect();
    assert_eq!(
        state_names,
        [
            "adam.m.prior.logits",
            "adam.v.prior.logits",
            "adam.m.prior.means",
            "adam.v.prior.means",
            "adam.m.prior.log_stds",
            "adam.v.prior.log_stds"
        ]
    );

    // Fine-tuning under the fixed (refit) prior: the prior does not move, the model does.
    let mut tune = Trainer::new(
        vae.clone(),
        prior2.clone(),
        Objective::iwae(5).unwrap(),
        hyper,
        Trainable::MODEL,
    )
    .unwrap();
    run(&mut tune, &x, 0..5);
    let (vae3, prior3) = tune.into_parts();
    assert_eq!(bits(&prior3.named_tensors()), bits(&prior2.named_tensors()));
    assert_ne!(bits(&vae3.named_tensors()), bits(&vae.named_tensors()));

    // Nothing to train is an error, as is an analytic KL under a non-normal prior.
    let err = Trainer::new(
        vae.clone(),
        Prior::StandardNormal,
        Objective::elbo(),
        hyper,
        Trainable::PRIOR,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nothing to train"), "{err}");
    let analytic = Objective {
        analytic_kl: true,
        ..Objective::elbo()
    };
    let err = Trainer::new(vae, prior2, analytic, hyper, Trainable::MODEL).unwrap_err();
    assert!(err.to_string().contains("standard-normal"), "{err}");
}

#[test]
fn vamp_prior_trains_pseudo_inputs_and_model_together() {
    let x = dataset();
    let vae: Vae<f32> = Vae::new(&cfg(), 4).unwrap();
    let prior = Prior::vamp_init(vae.config(), &x, 200, 8, &mut stream_rng(3, 0)).unwrap();
    let hyper = AdamHyper {
        lr: 3e-3,
        ..AdamHyper::default()
    };
    let mut tr = Trainer::new(
        vae,
        prior.clone(),
        Objective::iwae(5).unwrap(),
        hyper,
        Trainable::ALL,
    )
    .unwrap();
    let first = tr
        .step(batch(&x, 0), 20, &mut stream_rng(1, 0))
        .unwrap()
        .bound;
    for s in 1..300 {
        tr.step(batch(&x, s), 20, &mut stream_rng(1, s)).unwrap();
    }
    let last = tr
        .step(batch(&x, 0), 20, &mut stream_rng(1, 0))
        .unwrap()
        .bound;
    assert!(last > first + 2.0, "{first} -> {last}");
    assert_ne!(
        bits(&tr.prior().named_tensors()),
        bits(&prior.named_tensors())
    );
}
