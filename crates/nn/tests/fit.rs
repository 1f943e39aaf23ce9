//! The refit numerics: EM on draws from a two-posterior aggregate posterior recovers its
//! components and its moments; EM never lowers the sample log-likelihood; one component gives
//! the sample moments exactly (with the σ floor); the aggregate posterior's moments obey the law
//! of total variance; Monte Carlo means carry the right standard errors; bad input is an error.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use vaepipe_nn::*;

/// `n` draws (d = means.len() / weights.len()) from Σ_c w_c N(μ_c, diag σ_c²).
fn sample_mixture(weights: &[f64], means: &[f64], stds: &[f64], n: usize, seed: u64) -> Vec<f64> {
    let d = means.len() / weights.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let total: f64 = weights.iter().sum();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let mut u = rng.r#gen::<f64>() * total;
        let mut c = 0;
        while c + 1 < weights.len() && u >= weights[c] {
            u -= weights[c];
            c += 1;
        }
        for j in 0..d {
            let e: f64 = StandardNormal.sample(&mut rng);
            out.push(means[c * d + j] + stds[c * d + j] * e);
        }
    }
    out
}

fn run_em(init: Prior<f64>, z: &[f64], rows: usize, steps: usize) -> (Prior<f64>, Vec<f64>) {
    let mut prior = init;
    let mut trace = Vec::with_capacity(steps);
    for _ in 0..steps {
        let s = em_step(&prior, z, rows, 1e-3).unwrap();
        trace.push(s.log_likelihood);
        prior = s.prior;
    }
    (prior, trace)
}

fn parts(p: &Prior<f64>) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let Prior::Mixture(m) = p else {
        panic!("EM returned a {:?} prior", p.kind())
    };
    let logits = m.logits();
    let lse = log_sum_exp(&logits);
    let weights = logits.iter().map(|l| (l - lse).exp()).collect();
    (
        weights,
        m.means(),
        m.log_stds().iter().map(|v| v.exp()).collect(),
    )
}

#[test]
fn em_with_two_components_recovers_a_two_posterior_aggregate() {
    // q(z|x1) = N(−2, 0.5²), q(z|x2) = N(1.5, 1²); q_agg is their equal mixture.
    let (mu, sd) = ([-2.0, 1.5], [0.5, 1.0]);
    let n = 40_000;
    let z = sample_mixture(&[0.5, 0.5], &mu, &sd, n, 11);
    // A deliberately poor start: both components near the middle, too wide.
    let init = Prior::mixture(2, 1, vec![0.3, -0.3], vec![-0.5, 0.5], vec![0.7, 0.7]).unwrap();
    let (fit, trace) = run_em(init, &z, n, 300);
    let (w, m, s) = parts(&fit);
    let order: Vec<usize> = if m[0] < m[1] { vec![0, 1] } else { vec![1, 0] };
    // Standard errors with known labels: σ/√(n/2) ≈ 0.0035 and 0.007 for the means, σ/√n for
    // the stds, 0.0025 for the weight; the tolerances are ≳ 7 of them.
    for (c, &i) in order.iter().enumerate() {
        assert!(
            (m[i] - mu[c]).abs() < 0.05,
            "component {c}: mean {} vs {}",
            m[i],
            mu[c]
        );
        assert!(
            (s[i] - sd[c]).abs() < 0.04,
            "component {c}: std {} vs {}",
            s[i],
            sd[c]
        );
        assert!((w[i] - 0.5).abs() < 0.02, "component {c}: weight {}", w[i]);
    }
    // The fitted mixture's moments are those of q_agg: mean −0.25, variance
    // ½(0.25 + 4) + ½(1 + 2.25) − 0.0625 = 3.6875.
    let mean: f64 = (0..2).map(|i| w[i] * m[i]).sum();
    let second: f64 = (0..2).map(|i| w[i] * (s[i] * s[i] + m[i] * m[i])).sum();
    let var = second - mean * mean;
    assert!((mean + 0.25).abs() < 0.05, "mixture mean {mean}");
    assert!((var - 3.6875).abs() < 0.12, "mixture variance {var}");
    // EM preserves the first two sample moments exactly at every M-step (no σ floor active).
    let sm = z.iter().sum::<f64>() / n as f64;
    let sv = z.iter().map(|v| v * v).sum::<f64>() / n as f64 - sm * sm;
    assert!((mean - sm).abs() < 1e-9, "{mean} vs sample mean {sm}");
    assert!((var - sv).abs() < 1e-8, "{var} vs sample variance {sv}");
    // And it got there by climbing.
    assert!(
        trace[trace.len() - 1] > trace[0] + 0.1,
        "log-likelihood {} → {}",
        trace[0],
        trace[trace.len() - 1]
    );
}

#[test]
fn em_never_lowers_the_sample_log_likelihood() {
    let (k_true, d) = (6, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let means: Vec<f64> = (0..k_true * d)
        .map(|_| 3.0 * rng.r#gen::<f64>() - 1.5)
        .collect();
    let stds: Vec<f64> = (0..k_true * d)
        .map(|_| 0.1 + 0.5 * rng.r#gen::<f64>())
        .collect();
    let weights: Vec<f64> = (0..k_true).map(|c| 1.0 + c as f64).collect();
    let n = 5000;
    let z = sample_mixture(&weights, &means, &stds, n, 4);
    let init = Prior::mixture(4, d, vec![0.0; 4], z[..4 * d].to_vec(), vec![0.0; 4 * d]).unwrap();
    let (_, trace) = run_em(init, &z, n, 60);
    for (i, w) in trace.windows(2).enumerate() {
        assert!(
            w[1] >= w[0] - 1e-12 * w[0].abs(),
            "iteration {}: {} → {}",
            i + 1,
            w[0],
            w[1]
        );
    }
    assert!(
        trace[59] > trace[0] + 0.5,
        "EM barely moved: {} → {}",
        trace[0],
        trace[59]
    );
}

#[test]
fn one_component_em_gives_the_sample_moments_and_respects_the_floor() {
    let d = 2;
    let n = 1000;
    // Dimension 0 is spread out; dimension 1 is nearly constant (std 1e-5 < the floor 1e-3).
    let z = sample_mixture(&[1.0], &[0.7, -3.0], &[2.0, 1e-5], n, 5);
    let init = Prior::mixture(1, d, vec![0.0], vec![5.0, 5.0], vec![1.0, 1.0]).unwrap();
    let step = em_step(&init, &z, n, 1e-3).unwrap();
    let (w, m, s) = parts(&step.prior);
    assert!((w[0] - 1.0).abs() < 1e-12);
    for j in 0..d {
        let col: Vec<f64> = z.iter().skip(j).step_by(d).copied().collect();
        let mean = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        assert!(
            (m[j] - mean).abs() < 1e-10,
            "dim {j}: mean {} vs {mean}",
            m[j]
        );
        let expected = var.sqrt().max(1e-3);
        assert!(
            (s[j] - expected).abs() < 1e-9 * expected.max(1.0),
            "dim {j}: std {} vs {expected}",
            s[j]
        );
    }
    assert!(
        (s[1] - 1e-3).abs() < 1e-15,
        "the floor binds in dimension 1: {}",
        s[1]
    );
}

#[test]
fn em_rejects_what_it_cannot_fit() {
    let z = vec![0.0f64, 1.0, 2.0, 3.0];
    let mix = Prior::mixture(1, 2, vec![0.0], vec![0.0, 0.0], vec![0.0, 0.0]).unwrap();
    assert!(matches!(
        em_step(&Prior::<f64>::StandardNormal, &z, 2, 1e-3),
        Err(NnError::InvalidArgument { .. })
    ));
    assert!(matches!(
        em_step(&mix, &z, 3, 1e-3),
        Err(NnError::Length { .. })
    ));
    assert!(matches!(
        em_step(&mix, &z, 0, 1e-3),
        Err(NnError::InvalidArgument { .. })
    ));
    assert!(em_step(&mix, &[0.0, f64::NAN, 1.0, 2.0], 2, 1e-3).is_err());
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(em_step(&mix, &z, 2, bad).is_err(), "min_std {bad} accepted");
    }
}

#[test]
fn aggregate_moments_follow_the_law_of_total_variance() {
    // Three posteriors in two dimensions; dimension 1 has identical means (an inactive unit).
    let post = Posterior {
        rows: 3,
        dim: 2,
        mean: vec![-1.0, 0.2, 0.5, 0.2, 2.0, 0.2],
        std: vec![0.3, 1.0, 0.2, 1.0, 0.5, 1.0],
        log_std: [0.3f64, 1.0, 0.2, 1.0, 0.5, 1.0]
            .iter()
            .map(|s| s.ln())
            .collect(),
    };
    let m = aggregate_moments(&post).unwrap();
    // Direct check against draws from q_agg.
    let z = sample_mixture(&[1.0, 1.0, 1.0], &post.mean, &post.std, 400_000, 6);
    for j in 0..2 {
        let col: Vec<f64> = z.iter().skip(j).step_by(2).copied().collect();
        let est = MeanStderr::of(&col);
        let var = col
            .iter()
            .map(|v| (v - est.mean) * (v - est.mean))
            .sum::<f64>()
            / col.len() as f64;
        assert!(
            (est.mean - m.mean[j]).abs() < 6.0 * est.stderr,
            "dim {j}: mean {} vs {}",
            est.mean,
            m.mean[j]
        );
        assert!(
            (var - m.variance[j]).abs() < 0.02 * m.variance[j],
            "dim {j}: variance {var} vs {}",
            m.variance[j]
        );
    }
    assert!(
        (m.mean_variance[0] - (1.0 + 0.25 + 4.0) / 3.0 + 0.25).abs() < 1e-12,
        "{:?}",
        m.mean_variance
    );
    assert!(
        m.mean_variance[1] < 1e-30,
        "an inactive unit: {}",
        m.mean_variance[1]
    );
    let empty = Posterior::<f64> {
        rows: 0,
        dim: 2,
        mean: vec![],
        std: vec![],
        log_std: vec![],
    };
    assert!(aggregate_moments(&empty).is_err());
}

#[test]
fn mean_stderr_and_paired_differences() {
    let e = MeanStderr::of(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(e.mean, 2.5);
    assert!((e.stderr - (5.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-15);
    // A common shift cancels in the paired difference: its standard error is that of the
    // small per-draw differences, not of the values.
    let a: Vec<f64> = (0..100).map(|i| (i as f64).sin() * 10.0).collect();
    let b: Vec<f64> = a
        .iter()
        .enumerate()
        .map(|(i, v)| v - 1.0 - 0.01 * (i % 2) as f64)
        .collect();
    let d = MeanStderr::paired_difference(&a, &b).unwrap();
    assert!((d.mean - 1.005).abs() < 1e-12);
    assert!(d.stderr < 0.001 && MeanStderr::of(&a).stderr > 0.5);
    assert!(MeanStderr::paired_difference(&a, &b[1..]).is_err());
    assert!(MeanStderr::of(&[]).mean.is_nan());
}
