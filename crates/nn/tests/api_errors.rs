//! Bad input never panics: invalid configurations, wrong buffer lengths, non-finite or
//! out-of-range data, zero sizes and mismatched priors all return errors that say what is wrong.

mod common;

use common::*;
use vaepipe_nn::*;

fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn invalid_configurations_are_rejected_with_the_field() {
    let ok = bernoulli_cfg();
    let cases: Vec<(VaeConfig, &str)> = vec![
        (
            VaeConfig {
                input_dim: 0,
                ..ok.clone()
            },
            "input_dim",
        ),
        (
            VaeConfig {
                latent_dim: 0,
                ..ok.clone()
            },
            "latent_dim",
        ),
        (
            VaeConfig {
                encoder_hidden: vec![4, 0],
                ..ok.clone()
            },
            "encoder_hidden[1]",
        ),
        (
            VaeConfig {
                decoder_hidden: vec![0],
                ..ok.clone()
            },
            "decoder_hidden[0]",
        ),
        (
            VaeConfig {
                likelihood: Likelihood::Gaussian {
                    std: 0.0,
                    learned: false,
                },
                ..ok.clone()
            },
            "std",
        ),
        (
            VaeConfig {
                likelihood: Likelihood::Gaussian {
                    std: -1.0,
                    learned: true,
                },
                ..ok.clone()
            },
            "std",
        ),
        (
            VaeConfig {
                likelihood: Likelihood::Gaussian {
                    std: f32::NAN,
                    learned: false,
                },
                ..ok.clone()
            },
            "std",
        ),
        (
            VaeConfig {
                input_dim: 1 << 20,
                encoder_hidden: vec![1 << 20],
                ..ok.clone()
            },
            "too large",
        ),
        (
            VaeConfig {
                input_dim: usize::MAX,
                ..ok.clone()
            },
            "too large",
        ),
    ];
    for (cfg, needle) in cases {
        let e = msg(Vae::<f32>::new(&cfg, 0));
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(cfg.validate().is_err());
    }
    assert!(ok.validate().is_ok());
    assert_eq!(
        ok.parameter_count(),
        6 * 5 + 5 + 2 * (5 * 3 + 3) + 3 * 4 + 4 + 4 * 6 + 6
    );
}

#[test]
fn wrong_lengths_and_values_are_errors() {
    let cfg = bernoulli_cfg();
    let vae: Vae<f32> = Vae::new(&cfg, 0).unwrap();
    let prior = Prior::StandardNormal;
    let x = vec![1.0f32; 2 * 6];
    let mut rng = stream_rng(0, 0);

    assert!(msg(vae.encode(&x[..7])).contains("input_dim = 6"));
    assert!(msg(vae.encode(&[])).contains("positive multiple"));
    assert!(msg(vae.encode(&[f32::NAN; 6])).contains("not finite"));
    assert!(msg(vae.decode_mean(&[0.0; 4])).contains("latent_dim = 3"));
    assert!(msg(vae.decode_mean(&[f32::INFINITY; 3])).contains("not finite"));

    let e = msg(log_weights(&vae, &prior, &x, 3, 5, &mut rng));
    assert!(
        e.contains("`x (n=3 × input_dim=6)` has 12 values, expected 18"),
        "{e}"
    );
    assert!(msg(log_weights(&vae, &prior, &x, 0, 5, &mut rng)).contains("at least one"));
    assert!(msg(log_weights(&vae, &prior, &x, 2, 0, &mut rng)).contains("at least 1"));
    let mut x_bad = x.clone();
    x_bad[3] = 1.5;
    assert!(msg(log_weights(&vae, &prior, &x_bad, 2, 1, &mut rng)).contains("outside [0, 1]"));
    let e = msg(log_weights_with_noise(&vae, &prior, &x, 2, 4, &[0.0; 5]));
    assert!(
        e.contains("eps (n=2 × k=4 × latent_dim=3)") && e.contains("expected 24"),
        "{e}"
    );
    assert!(
        msg(log_weights_with_noise(
            &vae,
            &prior,
            &x,
            2,
            1,
            &[f32::NAN; 6]
        ))
        .contains("eps")
    );
    assert!(msg(bound_from_log_weights(&[0.0f32; 5], 2, 3)).contains("expected 6"));
    assert!(msg(bound_from_log_weights(&[0.0f32; 0], 0, 3)).contains("at least 1"));
    assert!(msg(elbo_terms(&vae, &prior, &x, 3, &mut rng)).contains("expected 18"));
    assert!(msg(prior.log_density(&vae, &[0.0; 5], 2)).contains("expected 6"));
    let e = msg(objective_and_grads_with_noise(
        &vae,
        &prior,
        &Objective::iwae(2).unwrap(),
        Trainable::MODEL,
        &x,
        2,
        &[0.0; 3],
    ));
    assert!(e.contains("expected 12"), "{e}");
    // k = 0 is refused where it enters: no objective holds it.
    assert!(msg(Objective::iwae(0)).contains("k must be"));

    let mut tr = Trainer::new(
        vae.clone(),
        prior.clone(),
        Objective::iwae(2).unwrap(),
        AdamHyper::default(),
        Trainable::MODEL,
    )
    .unwrap();
    assert!(msg(tr.step(&x, 3, &mut rng)).contains("expected 18"));
    assert!(msg(tr.step_with_noise(&x, 2, &[0.0; 11])).contains("expected 12"));
    assert!(tr.set_lr(f64::NAN).is_err() && tr.set_lr(-1.0).is_err());
    tr.set_lr(0.5).unwrap();
    assert_eq!(tr.lr(), 0.5);
    assert_eq!(tr.steps(), 0);

    for bad in [
        AdamHyper {
            beta1: 1.0,
            ..AdamHyper::default()
        },
        AdamHyper {
            beta2: -0.1,
            ..AdamHyper::default()
        },
        AdamHyper {
            eps: 0.0,
            ..AdamHyper::default()
        },
        AdamHyper {
            lr: f64::INFINITY,
            ..AdamHyper::default()
        },
    ] {
        assert!(
            Trainer::new(
                vae.clone(),
                prior.clone(),
                Objective::iwae(2).unwrap(),
                bad,
                Trainable::MODEL
            )
            .is_err()
        );
    }
}

#[test]
fn prior_constructors_and_mismatches_are_errors() {
    let cfg = bernoulli_cfg();
    let vae: Vae<f32> = Vae::new(&cfg, 0).unwrap();
    assert!(
        msg(Prior::<f32>::mixture(
            2,
            3,
            vec![0.0; 2],
            vec![0.0; 5],
            vec![0.0; 6]
        ))
        .contains("means (K=2 × d=3)")
    );
    assert!(msg(Prior::<f32>::mixture(0, 3, vec![], vec![], vec![])).contains("components"));
    assert!(
        msg(Prior::<f32>::mixture(
            1,
            1,
            vec![f32::NAN],
            vec![0.0],
            vec![0.0]
        ))
        .contains("logits")
    );
    assert!(msg(Prior::<f32>::vamp(2, 6, vec![0.0; 11])).contains("pseudo_inputs"));
    let wrong_vamp = Prior::<f32>::vamp(2, 5, vec![0.0; 10]).unwrap();
    let x = vec![0.0f32; 6];
    assert!(
        msg(log_weights(
            &vae,
            &wrong_vamp,
            &x,
            1,
            1,
            &mut stream_rng(0, 0)
        ))
        .contains("input_dim")
    );
    assert!(
        msg(Trainer::new(
            vae.clone(),
            wrong_vamp,
            Objective::iwae(1).unwrap(),
            AdamHyper::default(),
            Trainable::ALL
        ))
        .contains("input_dim")
    );
    let e = msg(Prior::<f32>::vamp_init(
        &cfg,
        &x,
        1,
        2,
        &mut stream_rng(0, 0),
    ));
    assert!(
        e.contains("2 components need at least as many data rows"),
        "{e}"
    );
    let e = msg(Prior::<f32>::mixture_init(
        &vae,
        &x,
        2,
        1,
        &mut stream_rng(0, 0),
    ));
    assert!(e.contains("expected 12"), "{e}");
    assert!(NamedTensor::<f32>::new("t", vec![2, 2], vec![0.0; 3]).is_err());
}

#[test]
fn f32_and_f64_models_agree() {
    let cfg = bernoulli_cfg();
    let a: Vae<f32> = Vae::new(&cfg, 9).unwrap();
    let b: Vae<f64> = Vae::new(&cfg, 9).unwrap();
    // Same seed: the f32 model is the f64 model rounded.
    assert_eq!(b.cast::<f32>().unwrap().named_tensors(), a.named_tensors());
    let x = binary_data(3, 6, 1);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let eps: Vec<f64> = standard_normal_noise(&mut stream_rng(1, 1), 3 * 4 * 3);
    let eps32: Vec<f32> = eps.iter().map(|&v| v as f32).collect();
    let b32 = b.cast::<f32>().unwrap().cast::<f64>().unwrap();
    let lw64 = log_weights_with_noise(&b32, &Prior::StandardNormal, &x, 3, 4, &eps).unwrap();
    let lw32 = log_weights_with_noise(&a, &Prior::StandardNormal, &x32, 3, 4, &eps32).unwrap();
    for (u, v) in lw64.iter().zip(&lw32) {
        assert!(
            (u - *v as f64).abs() < 1e-4 * u.abs().max(1.0),
            "{u} vs {v}"
        );
    }
    let post = a.encode(&x32).unwrap();
    assert_eq!((post.rows, post.dim), (3, 3));
    assert!(
        post.std
            .iter()
            .zip(&post.log_std)
            .all(|(s, l)| *s == l.exp())
    );
    let mean = a.decode_mean(&post.mean).unwrap();
    assert_eq!(mean.len(), 3 * 6);
    assert!(mean.iter().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn public_types_are_thread_safe_and_debug_is_short() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Vae<f32>>();
    assert_send_sync::<Prior<f32>>();
    assert_send_sync::<Trainer<f32>>();
    assert_send_sync::<NnError>();
    let vae: Vae<f32> = Vae::new(&bernoulli_cfg(), 0).unwrap();
    let s = format!("{vae:?}");
    assert!(s.contains("parameters: 117") && s.len() < 400, "{s}");
}
