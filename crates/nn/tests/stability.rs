//! Numerical stability: the Bernoulli log-likelihood with logits up to ±1e4 is finite and exact,
//! log-sum-exp of log-weights near −1e4 is finite and exact, and training gradients stay finite
//! there (both in f32).

use vaepipe_nn::*;

const D: usize = 4;

/// A linear Bernoulli decoder with zero weights and output bias `bias`, so the logits equal
/// `bias` whatever z is.
fn saturated(bias: [f32; D]) -> Vae<f32> {
    let cfg = VaeConfig {
        input_dim: D,
        encoder_hidden: vec![3],
        latent_dim: 2,
        decoder_hidden: vec![],
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        posterior_std: PosteriorStd::Exp,
        upper: Vec::new(),
    };
    let mut t = Vae::<f32>::new(&cfg, 1).unwrap().named_tensors();
    for x in t.iter_mut() {
        match x.name.as_str() {
            "decoder.out.weight" => x.data.iter_mut().for_each(|v| *v = 0.0),
            "decoder.out.bias" => x.data = bias.to_vec(),
            _ => {}
        }
    }
    Vae::from_named_tensors(&cfg, &t).unwrap()
}

#[test]
fn bernoulli_log_likelihood_is_exact_for_huge_logits() {
    let vae = saturated([1e4, -1e4, 1e4, -1e4]);
    // Agreeing pixels cost ln(1 + e^-1e4) = 0; each disagreeing pixel costs 1e4 nats.
    let x = [
        1.0, 0.0, 1.0, 0.0, /**/ 1.0, 0.0, 0.0, 1.0, /**/ 0.0, 1.0, 0.0, 1.0,
    ];
    let terms = elbo_terms(&vae, &Prior::StandardNormal, &x, 3, &mut stream_rng(1, 1)).unwrap();
    let want = [0.0, -2e4, -4e4];
    for (got, want) in terms.reconstruction.iter().zip(want) {
        assert!(
            got.is_finite() && (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
    assert!(terms.kl.iter().all(|v| v.is_finite() && *v >= 0.0));
    // Moderate logits against the direct formula −ln(1 + e^{−l}) for x = 1.
    for l in [-30.0f32, -3.0, 0.0, 3.0, 30.0] {
        let vae = saturated([l; D]);
        let r = elbo_terms(
            &vae,
            &Prior::StandardNormal,
            &[1.0; D],
            1,
            &mut stream_rng(1, 2),
        )
        .unwrap()
        .reconstruction[0];
        let want = -(D as f64) * (1.0 + (-(l as f64)).exp()).ln();
        assert!(
            (r - want).abs() <= 1e-5 * want.abs().max(1.0),
            "logit {l}: {r} vs {want}"
        );
    }
}

#[test]
fn log_sum_exp_is_stable_near_minus_1e4() {
    let k = 4;
    let lw: Vec<f32> = vec![
        -1e4,
        -1e4 - 1.0,
        -1e4 - 2.0,
        -1e4 - 50.0,
        -20000.0,
        -20000.0,
        -20000.0,
        -20000.0,
    ];
    let b = bound_from_log_weights(&lw, 2, k).unwrap();
    let exact0 =
        -1e4 + (1.0 + (-1.0f64).exp() + (-2.0f64).exp() + (-50.0f64).exp()).ln() - (k as f64).ln();
    assert!((b[0] - exact0).abs() < 1e-9, "{} vs {exact0}", b[0]);
    assert!((b[1] - (-20000.0)).abs() < 1e-9, "{}", b[1]);
    // All weights zero gives −∞, not NaN.
    let z = bound_from_log_weights(&[f32::NEG_INFINITY; 3], 1, 3).unwrap();
    assert_eq!(z[0], f64::NEG_INFINITY);
}

#[test]
fn training_gradients_stay_finite_with_saturated_decoder() {
    let vae = saturated([1e4, -1e4, 1e4, -1e4]);
    let x = [1.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0];
    let mut rng = stream_rng(3, 0);
    for obj in [
        Objective::iwae(5).unwrap(),
        Objective::elbo(),
        Objective {
            estimator: Estimator::Dreg,
            ..Objective::iwae(5).unwrap()
        },
    ] {
        let eps: Vec<f32> = standard_normal_noise(&mut rng, 2 * obj.samples() * 2);
        let (value, grads) = objective_and_grads_with_noise(
            &vae,
            &Prior::StandardNormal,
            &obj,
            Trainable::MODEL,
            &x,
            2,
            &eps,
        )
        .unwrap();
        // Mean over the batch of about −2e4 (first row) and 0 (second row), minus small KL terms.
        assert!(
            value.is_finite() && (value + 1e4).abs() < 10.0,
            "{obj:?}: {value}"
        );
        for g in &grads {
            assert!(
                g.data.iter().all(|v| v.is_finite()),
                "{obj:?}: {} not finite",
                g.name
            );
        }
        // d/d bias of −BCE is x − sigmoid(l): exactly ±1 or 0 here, averaged over the batch.
        let gb = &grads
            .iter()
            .find(|g| g.name == "decoder.out.bias")
            .unwrap()
            .data;
        for (g, want) in gb.iter().zip([0.0, 0.0, -0.5, 0.5]) {
            assert!((g - want).abs() < 1e-6, "{obj:?}: bias gradient {gb:?}");
        }
    }
}
