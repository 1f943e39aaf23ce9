//! Initialisation schemes (`Vae::with_init`): every linear layer's range and variance under
//! PyTorch's `nn.Linear` default and Glorot-uniform, checked with statistical bounds; the σ-head
//! scale; the decoder output bias from data means (logit of the clipped mean); and errors.

use vaepipe_nn::{
    DATA_MEAN_CLIP, Init, InitScheme, Likelihood, NamedTensor, OutputBias, PosteriorStd, Vae,
    VaeConfig,
};

/// Wide layers, so that every bias vector has thousands of draws.
fn wide() -> VaeConfig {
    VaeConfig {
        input_dim: 300,
        encoder_hidden: vec![4000],
        latent_dim: 1000,
        decoder_hidden: vec![5000],
        activation: vaepipe_nn::Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        posterior_std: PosteriorStd::Exp,
        upper: Vec::new(),
    }
}

fn tensors(cfg: &VaeConfig, init: &Init, seed: u64) -> Vec<NamedTensor<f32>> {
    Vae::<f32>::with_init(cfg, init, seed)
        .unwrap()
        .named_tensors()
}

fn get<'a>(t: &'a [NamedTensor<f32>], name: &str) -> &'a NamedTensor<f32> {
    t.iter().find(|t| t.name == name).unwrap()
}

/// Asserts that `v` looks like n independent draws of U(−a, a): inside the range, reaching its
/// ends (P(max |v| < a(1 − 20/n)) ≈ e⁻²⁰), mean 0 and variance a²/3 within 6 standard errors
/// (sd of the mean a/√(3n); sd of the sample variance a²·√(4/(45n))).
fn assert_uniform(v: &[f32], a: f64, what: &str) {
    let n = v.len() as f64;
    let max = v.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    assert!(max <= a * (1.0 + 1e-6), "{what}: |value| {max} exceeds {a}");
    assert!(
        max >= a * (1.0 - 20.0 / n),
        "{what}: largest |value| {max} is far below the bound {a}"
    );
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    assert!(
        mean.abs() < 6.0 * a / (3.0 * n).sqrt(),
        "{what}: mean {mean} (bound ±{a})"
    );
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let expected = a * a / 3.0;
    let sd = a * a * (4.0 / (45.0 * n)).sqrt();
    assert!(
        (var - expected).abs() < 6.0 * sd,
        "{what}: variance {var}, expected {expected} ± {}",
        6.0 * sd
    );
}

/// (layer prefix, fan_in, fan_out) of every linear layer of `cfg`.
fn layers(cfg: &VaeConfig) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut w = cfg.input_dim;
    for (i, &h) in cfg.encoder_hidden.iter().enumerate() {
        out.push((format!("encoder.{i}"), w, h));
        w = h;
    }
    out.push(("encoder.mean".into(), w, cfg.latent_dim));
    out.push(("encoder.log_std".into(), w, cfg.latent_dim));
    let mut w = cfg.latent_dim;
    for (i, &h) in cfg.decoder_hidden.iter().enumerate() {
        out.push((format!("decoder.{i}"), w, h));
        w = h;
    }
    out.push(("decoder.out".into(), w, cfg.input_dim));
    out
}

#[test]
fn pytorch_draws_weights_and_biases_from_u_of_one_over_sqrt_fan_in() {
    let cfg = wide();
    let init = Init {
        scheme: InitScheme::Pytorch,
        output_bias: OutputBias::Scheme,
        std_head_scale: 1.0,
    };
    let t = tensors(&cfg, &init, 7);
    for (layer, fan_in, fan_out) in layers(&cfg) {
        let a = 1.0 / (fan_in as f64).sqrt();
        let w = get(&t, &format!("{layer}.weight"));
        assert_eq!(w.shape, vec![fan_in, fan_out]);
        assert_uniform(&w.data, a, &format!("{layer}.weight"));
        assert_uniform(
            &get(&t, &format!("{layer}.bias")).data,
            a,
            &format!("{layer}.bias"),
        );
    }
}

#[test]
fn glorot_draws_weights_from_u_of_sqrt_6_over_fan_sum_and_zero_biases() {
    let cfg = wide();
    let t = tensors(&cfg, &Init::glorot(), 7);
    for (layer, fan_in, fan_out) in layers(&cfg) {
        let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
        assert_uniform(
            &get(&t, &format!("{layer}.weight")).data,
            a,
            &format!("{layer}.weight"),
        );
        let b = get(&t, &format!("{layer}.bias"));
        assert!(b.data.iter().all(|&v| v == 0.0), "{layer}.bias is not zero");
    }
    // `Vae::new` is Glorot, unchanged.
    let old = Vae::<f32>::new(&cfg, 7).unwrap().named_tensors();
    assert_eq!(old, t);
}

#[test]
fn the_std_head_scale_multiplies_only_the_std_head() {
    let cfg = wide();
    for scheme in [InitScheme::Pytorch, InitScheme::Glorot] {
        let at = |scale: f64| {
            tensors(
                &cfg,
                &Init {
                    scheme,
                    output_bias: OutputBias::Scheme,
                    std_head_scale: scale,
                },
                3,
            )
        };
        let (one, half, zero) = (at(1.0), at(0.5), at(0.0));
        for ((a, b), c) in one.iter().zip(&half).zip(&zero) {
            if a.name.starts_with("encoder.log_std.") {
                for ((x, y), z) in a.data.iter().zip(&b.data).zip(&c.data) {
                    assert_eq!(*y, 0.5 * x, "{}", a.name);
                    assert_eq!(*z, 0.0, "{}", a.name);
                }
            } else {
                assert_eq!(a, b, "{} changed with the σ-head scale", a.name);
                assert_eq!(a, c, "{} changed with the σ-head scale", a.name);
            }
        }
        // Scale 0: every posterior starts at σ = 1.
        let vae = Vae::<f32>::with_init(
            &cfg,
            &Init {
                scheme,
                output_bias: OutputBias::Scheme,
                std_head_scale: 0.0,
            },
            3,
        )
        .unwrap();
        let x: Vec<f32> = (0..2 * cfg.input_dim).map(|i| (i % 2) as f32).collect();
        assert!(vae.encode(&x).unwrap().std.iter().all(|&s| s == 1.0));
    }
}

#[test]
fn the_data_output_bias_is_the_logit_of_the_clipped_mean() {
    let mut cfg = wide();
    cfg.input_dim = 6;
    let means = [0.0, 1e-4, 0.25, 0.5, 0.999_9, 1.0];
    let bias = OutputBias::data_logits(&means).unwrap();
    for scheme in [InitScheme::Pytorch, InitScheme::Glorot] {
        let plain = Init {
            scheme,
            output_bias: OutputBias::Scheme,
            std_head_scale: 1.0,
        };
        let with_data = Init {
            output_bias: bias.clone(),
            ..plain.clone()
        };
        let (a, b) = (tensors(&cfg, &plain, 5), tensors(&cfg, &with_data, 5));
        let out = get(&b, "decoder.out.bias");
        for (j, (&m, &v)) in means.iter().zip(&out.data).enumerate() {
            let p = m.clamp(DATA_MEAN_CLIP, 1.0 - DATA_MEAN_CLIP);
            let logit = (p / (1.0 - p)).ln();
            assert!(
                (v as f64 - logit).abs() < 1e-5,
                "dimension {j}: bias {v}, logit of the clipped mean {m} is {logit}"
            );
        }
        // 1e-3 clipping: logit(0.001) = −6.9068.
        assert!((out.data[0] as f64 + 6.906_755).abs() < 1e-4);
        assert!((out.data[5] as f64 - 6.906_755).abs() < 1e-4);
        // Every other tensor is the scheme's draw.
        for (x, y) in a.iter().zip(&b) {
            if x.name != "decoder.out.bias" {
                assert_eq!(x, y, "{} changed with the output bias", x.name);
            }
        }
    }
}

#[test]
fn bad_initialisations_are_errors() {
    assert!(OutputBias::data_logits(&[]).is_err());
    for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        let e = OutputBias::data_logits(&[0.5, bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("dimension 1"), "{e}");
    }
    let cfg = wide();
    // Wrong number of logits.
    let init = Init {
        output_bias: OutputBias::data_logits(&[0.5; 10]).unwrap(),
        ..Init::default()
    };
    let e = Vae::<f32>::with_init(&cfg, &init, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("input_dim = 300"), "{e}");
    // Data logits need a Bernoulli likelihood.
    let gaussian = VaeConfig {
        likelihood: Likelihood::Gaussian {
            std: 1.0,
            learned: true,
        },
        ..cfg.clone()
    };
    let init = Init {
        output_bias: OutputBias::data_logits(&[0.5; 300]).unwrap(),
        ..Init::default()
    };
    let e = Vae::<f32>::with_init(&gaussian, &init, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Bernoulli"), "{e}");
    for scale in [-1.0, f64::NAN] {
        let init = Init {
            std_head_scale: scale,
            ..Init::default()
        };
        assert!(Vae::<f32>::with_init(&cfg, &init, 1).is_err());
    }
}
