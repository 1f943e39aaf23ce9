//! Numerical stability of the generic (dfdx-tape) training path, forced with
//! `objective_and_grads_with_noise_reference` so that CPUs with the fast AVX2 path exercise it
//! too: log-weights near −1e4 and logits near ±1e4 give the exact objective (against
//! a log-sum-exp written out in this file in f64, independent of the crate's `lse`) and exact, finite gradients, in f32 and f64.
//! Without the max-shift of the tape path's log-sum-exp, e^(−1e4) underflows to 0 and the
//! objective becomes −∞.

use vaepipe_nn::*;

const D: usize = 4;

/// A linear Bernoulli decoder with zero output weights and output bias `bias`: the logits equal
/// `bias` whatever z is.
fn saturated<E: Real>(bias: [f32; D]) -> Vae<E> {
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
    let mut t = Vae::<E>::new(&cfg, 1).unwrap().named_tensors();
    for x in t.iter_mut() {
        match x.name.as_str() {
            "decoder.out.weight" => x.data.iter_mut().for_each(|v| *v = E::of_f64(0.0)),
            "decoder.out.bias" => x.data = bias.iter().map(|b| E::of_f64(*b as f64)).collect(),
            _ => {}
        }
    }
    Vae::from_named_tensors(&cfg, &t).unwrap()
}

/// log (1/k) Σ e^{v_i}, shifted by the maximum, in f64: the reference, written out here so that
/// it shares no code with the path under test.
fn log_mean_exp(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + (v.iter().map(|x| (x - m).exp()).sum::<f64>() / v.len() as f64).ln()
}

fn check<E: Real>(what: &str) {
    let vae = saturated::<E>([1e4, -1e4, 1e4, -1e4]);
    // Row 0: pixel 2 disagrees with its logit (log w ≈ −1e4); row 1: pixels 0 and 2 (≈ −2e4);
    // row 2 agrees everywhere (log w ≈ small).
    let x: Vec<E> = [
        1.0, 0.0, 0.0, 0.0, /**/ 0.0, 0.0, 0.0, 0.0, /**/ 1.0, 0.0, 1.0, 0.0,
    ]
    .iter()
    .map(|v| E::of_f64(*v))
    .collect();
    let n = 3;
    let mut rng = stream_rng(11, 0);
    for obj in [
        Objective::iwae(5).unwrap(),
        Objective::elbo(),
        Objective {
            estimator: Estimator::Dreg,
            ..Objective::iwae(5).unwrap()
        },
    ] {
        let k = obj.samples();
        let eps: Vec<E> = standard_normal_noise(&mut rng, n * k * 2);
        let (value, grads) = objective_and_grads_with_noise_reference(
            &vae,
            &Prior::StandardNormal,
            &obj,
            Trainable::MODEL,
            &x,
            n,
            &eps,
        )
        .unwrap_or_else(|e| panic!("{what} {obj:?}: the tape path failed: {e}"));
        // The same quantity from the log-weights, by an independent log-sum-exp.
        let lw = log_weights_with_noise(&vae, &Prior::StandardNormal, &x, n, k, &eps).unwrap();
        let lw64: Vec<f64> = lw.iter().map(|v| v.as_f64()).collect();
        assert!(
            lw64[..k].iter().all(|v| (v + 1e4).abs() < 50.0),
            "row 0 has log-weights near −1e4: {:?}",
            &lw64[..k]
        );
        let per_row: Vec<f64> = match obj.kind {
            ObjectiveKind::Elbo => lw64
                .chunks(k)
                .map(|r| r.iter().sum::<f64>() / k as f64)
                .collect(),
            ObjectiveKind::Iwae => lw64.chunks(k).map(log_mean_exp).collect(),
            other => panic!("this test covers the ELBO and IWAE, not {other:?}"),
        };
        let want = per_row.iter().sum::<f64>() / n as f64;
        assert!(
            value.is_finite() && (value - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{what} {obj:?}: objective {value} vs {want}"
        );
        assert!((value + 1e4).abs() < 100.0, "{what} {obj:?}: {value}");
        for g in &grads {
            assert!(
                g.data.iter().all(|v| v.as_f64().is_finite()),
                "{what} {obj:?}: gradient {} not finite",
                g.name
            );
        }
        // ∂/∂bias of log p(x|z) = x − sigmoid(l) = ±1 on disagreeing pixels, 0 elsewhere (the
        // logits do not depend on z, so every normalised weight multiplies the same value),
        // averaged over the batch.
        let gb = &grads
            .iter()
            .find(|g| g.name == "decoder.out.bias")
            .unwrap()
            .data;
        for (g, want) in gb.iter().zip([-1.0 / 3.0, 0.0, -2.0 / 3.0, 0.0]) {
            assert!(
                (g.as_f64() - want).abs() < 1e-6,
                "{what} {obj:?}: bias gradient {gb:?}"
            );
        }
    }
}

#[test]
fn tape_path_is_exact_at_log_weights_near_minus_1e4_in_f32() {
    check::<f32>("f32");
}

#[test]
fn tape_path_is_exact_at_log_weights_near_minus_1e4_in_f64() {
    check::<f64>("f64");
}
