//! The evaluation path ([`Evaluator`]): agreement with the generic bounds code, exactness on
//! models whose log p(x) is known (linear-Gaussian in closed form, a 2-D Bernoulli model by
//! quadrature), determinism (threads, chunk size), the L_k curve, active units and the PCA.

mod common;

use common::linear;

use vaepipe_nn::*;

fn opts(k: usize, seed: u64, keep: bool) -> SampleOptions {
    SampleOptions {
        k,
        seed,
        first_stream: 0,
        keep_log_weights: keep,
    }
}

fn cfg(
    encoder: Vec<usize>,
    latent: usize,
    decoder: Vec<usize>,
    activation: Activation,
    likelihood: Likelihood,
    posterior_std: PosteriorStd,
) -> VaeConfig {
    VaeConfig {
        input_dim: 12,
        encoder_hidden: encoder,
        latent_dim: latent,
        decoder_hidden: decoder,
        activation,
        likelihood,
        posterior_std,
        upper: Vec::new(),
    }
}

/// Data in [0, 1] (binary for the Bernoulli tests).
fn data(n: usize, d: usize, seed: u64, binary: bool) -> Vec<f32> {
    let mut rng = stream_rng(seed, 99);
    let u: Vec<f64> = standard_normal_noise(&mut rng, n * d);
    u.iter()
        .map(|v| {
            if binary {
                if *v > 0.3 { 1.0 } else { 0.0 }
            } else {
                (0.5 + 0.3 * v).clamp(0.0, 1.0) as f32
            }
        })
        .collect()
}

/// Scales every decoder weight so the likelihood varies strongly with z (random
/// initialisations are nearly flat).
fn sharpen(vae: &Vae<f32>, factor: f32) -> Vae<f32> {
    let mut t = vae.named_tensors();
    for w in t
        .iter_mut()
        .filter(|t| t.name.starts_with("decoder.") && t.name.ends_with("weight"))
    {
        w.data.iter_mut().for_each(|v| *v *= factor);
    }
    Vae::from_named_tensors(vae.config(), &t).unwrap()
}

#[test]
fn log_weights_agree_with_the_generic_path() {
    let gauss = Likelihood::Gaussian {
        std: 0.3,
        learned: false,
    };
    let learned = Likelihood::Gaussian {
        std: 0.5,
        learned: true,
    };
    let cases = [
        (Activation::Tanh, Likelihood::Bernoulli, PosteriorStd::Exp),
        (
            Activation::Relu,
            Likelihood::Bernoulli,
            PosteriorStd::Softplus,
        ),
        (Activation::Softplus, gauss, PosteriorStd::Exp),
        (Activation::Tanh, learned, PosteriorStd::Softplus),
    ];
    let (n, k) = (5, 300);
    for (ci, (act, lik, ps)) in cases.into_iter().enumerate() {
        let c = cfg(vec![16, 8], 4, vec![8, 16], act, lik, ps);
        let vae = sharpen(&Vae::<f32>::new(&c, 3 + ci as u64).unwrap(), 2.0);
        let x = data(n, 12, ci as u64, lik == Likelihood::Bernoulli);
        let priors = [
            Prior::StandardNormal,
            Prior::mixture_init(&vae, &x, n, 3, &mut stream_rng(1, 1)).unwrap(),
            Prior::vamp_init(vae.config(), &x, n, 2, &mut stream_rng(1, 2)).unwrap(),
        ];
        for prior in &priors {
            let ev = Evaluator::new(&vae, prior).unwrap().with_chunk(64);
            let post = ev.encode(&x).unwrap();
            let est = ev.estimate(&x, &post, &opts(k, 11, true)).unwrap();
            for (i, e) in est.iter().enumerate() {
                // The generic path, for this image alone, from the same stream.
                let xi = &x[i * 12..(i + 1) * 12];
                let lw = log_weights(&vae, prior, xi, 1, k, &mut stream_rng(11, i as u64)).unwrap();
                assert_eq!(e.log_weights.len(), k);
                for (j, (a, b)) in e.log_weights.iter().zip(&lw).enumerate() {
                    let b = *b as f64;
                    assert!(
                        (a - b).abs() <= 2e-5 * b.abs().max(1.0),
                        "case {ci} {:?} image {i} sample {j}: fast {a}, generic {b}",
                        prior.kind()
                    );
                }
                let bound = bound_from_log_weights(&lw, 1, k).unwrap()[0];
                assert!((e.bound - bound).abs() <= 2e-5 * bound.abs().max(1.0));
                assert!((e.elbo - (e.recon - e.kl)).abs() < 1e-9);
            }
        }
    }
}

#[test]
fn large_mixtures_take_the_f32_path_with_the_generic_values() {
    // Narrow posteriors (σ ≈ 0.1) spread over the latent space: the exact aggregate posterior
    // of 600 rows (600 components), and a VampPrior of 100 random pseudo-inputs.
    let c = cfg(
        vec![16],
        4,
        vec![16],
        Activation::Tanh,
        Likelihood::Bernoulli,
        PosteriorStd::Exp,
    );
    let mut t = Vae::<f32>::new(&c, 4).unwrap().named_tensors();
    for tensor in t.iter_mut() {
        match tensor.name.as_str() {
            "encoder.mean.weight" => tensor.data.iter_mut().for_each(|v| *v *= 4.0),
            "encoder.log_std.weight" => tensor.data.iter_mut().for_each(|v| *v *= 0.1),
            "encoder.log_std.bias" => tensor.data.iter_mut().for_each(|v| *v = -2.3),
            _ => {}
        }
    }
    let vae = sharpen(&Vae::from_named_tensors(&c, &t).unwrap(), 2.0);
    let train = data(600, 12, 21, false);
    let priors = [
        Prior::aggregate_posterior(&vae, &train).unwrap(),
        Prior::vamp(100, 12, train[..100 * 12].to_vec()).unwrap(),
        Prior::StandardNormal,
    ];
    let (n, k) = (6, 700);
    let x = data(n, 12, 22, true);
    for prior in &priors {
        let run = |threads: usize, chunk: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let ev = Evaluator::new(&vae, prior).unwrap().with_chunk(chunk);
                    let post = ev.encode(&x).unwrap();
                    ev.estimate(&x, &post, &opts(k, 8, true)).unwrap()
                })
        };
        let est = run(2, 96);
        let ev = Evaluator::new(&vae, prior).unwrap();
        let mut worst = 0.0f64;
        for i in 0..n {
            // Each image encoded alone, as the generic path does: log p(z) is steep far from
            // the components, so even the encoder's rounding would show.
            let xi = &x[i * 12..(i + 1) * 12];
            let mut o = opts(k, 8, true);
            o.first_stream = i as u64;
            let e = &ev.estimate(xi, &ev.encode(xi).unwrap(), &o).unwrap()[0];
            let lw = log_weights(&vae, prior, xi, 1, k, &mut stream_rng(8, i as u64)).unwrap();
            for (a, b) in e.log_weights.iter().zip(&lw) {
                let b = *b as f64;
                worst = worst.max((a - b).abs());
                assert!(
                    (a - b).abs() <= 5e-6 * b.abs().max(1.0),
                    "{:?} image {i}: f32 path {a}, generic {b}",
                    prior.kind()
                );
            }
        }
        println!("{:?}: largest |Δ log w| = {worst:.2e}", prior.kind());
        // Deterministic across threads and chunk sizes.
        let again = run(1, 700);
        for (a, b) in est.iter().zip(&again) {
            assert_eq!(a.bound.to_bits(), b.bound.to_bits());
        }
    }
}

#[test]
fn linear_gaussian_nll_at_k_5000_is_within_0_05_nats_and_never_below_the_truth() {
    let n = 40;
    let x = linear::sample(n, 3);
    let truth: Vec<f64> = x
        .chunks(linear::D)
        .map(|r| -linear::log_px(&r.iter().map(|&v| v as f64).collect::<Vec<_>>()))
        .collect();
    // An imperfect posterior: mean shifted by 0.25 (≈ 0.7 posterior sd), 1.3× too wide.
    let ev = Evaluator::new(
        &linear::model(0.25, 1.3).cast::<f32>().unwrap(),
        &Prior::StandardNormal,
    )
    .unwrap();
    let post = ev.encode(&x).unwrap();
    let mut diffs = Vec::new();
    for rep in 0..5 {
        let est = ev
            .estimate(&x, &post, &opts(5000, 100 + rep, false))
            .unwrap();
        for (e, t) in est.iter().zip(&truth) {
            let nll = -e.bound;
            assert!(
                (nll - t).abs() < 0.05,
                "NLL estimate {nll} vs exact {t} (rep {rep})"
            );
            diffs.push(nll - t);
            // The ELBO is a (much) looser bound: it must sit below L_5000 here.
            assert!(e.elbo < e.bound, "ELBO {} vs L_5000 {}", e.elbo, e.bound);
        }
    }
    let m = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / m;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (m - 1.0)).sqrt();
    println!("mean NLL − exact = {mean:.5} ± {:.5}", sd / m.sqrt());
    // In expectation the estimate is an upper bound on the NLL (L_k ≤ log p(x)).
    assert!(mean >= -3.0 * sd / m.sqrt(), "mean gap {mean} below zero");
    // With the exact posterior every weight is p(x): the estimate is exact for any k.
    let exact = Evaluator::new(
        &linear::model(0.0, 1.0).cast::<f32>().unwrap(),
        &Prior::StandardNormal,
    )
    .unwrap();
    let post = exact.encode(&x).unwrap();
    for (e, t) in exact
        .estimate(&x, &post, &opts(7, 1, false))
        .unwrap()
        .iter()
        .zip(&truth)
    {
        assert!((-e.bound - t).abs() < 1e-4, "{} vs {t}", -e.bound);
    }
}

/// log p(x) of a model with a 2-D latent by the trapezoidal rule on [−7, 7]², in log space.
fn log_px_quadrature(vae: &Vae<f64>, x: &[f64]) -> f64 {
    let points = 561;
    let h = 14.0 / (points - 1) as f64;
    let mut z = Vec::with_capacity(points * points * 2);
    for a in 0..points {
        for b in 0..points {
            z.push(-7.0 + h * a as f64);
            z.push(-7.0 + h * b as f64);
        }
    }
    let probs = vae.decode_mean(&z).unwrap();
    let dd = x.len();
    let terms: Vec<f64> = (0..points * points)
        .map(|g| {
            let (a, b) = (g / points, g % points);
            let p = &probs[g * dd..(g + 1) * dd];
            let ll: f64 = p
                .iter()
                .zip(x)
                .map(|(&p, &xv)| xv * p.ln() + (1.0 - xv) * (1.0 - p).ln())
                .sum();
            let (z1, z2) = (z[2 * g], z[2 * g + 1]);
            let wa = if a == 0 || a == points - 1 { 0.5 } else { 1.0 };
            let wb = if b == 0 || b == points - 1 { 0.5 } else { 1.0 };
            ll - 0.5 * (z1 * z1 + z2 * z2) - (2.0 * std::f64::consts::PI).ln()
                + (wa * wb * h * h).ln()
        })
        .collect();
    log_sum_exp(&terms)
}

#[test]
fn bernoulli_2d_latent_nll_matches_quadrature() {
    let c = cfg(
        vec![10],
        2,
        vec![10],
        Activation::Tanh,
        Likelihood::Bernoulli,
        PosteriorStd::Exp,
    );
    let vae64 = {
        let v = Vae::<f64>::new(&c, 5).unwrap();
        let mut t = v.named_tensors();
        for w in t.iter_mut().filter(|t| t.name.starts_with("decoder.")) {
            w.data.iter_mut().for_each(|v| *v *= 3.0);
        }
        Vae::from_named_tensors(&c, &t).unwrap()
    };
    let vae: Vae<f32> = vae64.cast().unwrap();
    let x = data(4, 12, 8, true);
    let ev = Evaluator::new(&vae, &Prior::StandardNormal).unwrap();
    // A fixed proposal q(z|x) = N(0, 1.3² I) that covers the posterior of every image.
    let post = Posterior {
        rows: 4,
        dim: 2,
        mean: vec![0.0; 8],
        std: vec![1.3; 8],
        log_std: vec![1.3f32.ln(); 8],
    };
    let est = ev.estimate(&x, &post, &opts(5000, 4, false)).unwrap();
    for (i, e) in est.iter().enumerate() {
        let xi: Vec<f64> = x[i * 12..(i + 1) * 12].iter().map(|&v| v as f64).collect();
        let truth = log_px_quadrature(&vae64, &xi);
        println!(
            "image {i}: quadrature {truth:.4}, L_5000 {:.4}, ELBO {:.4}",
            e.bound, e.elbo
        );
        assert!(
            (e.bound - truth).abs() < 0.1,
            "L_5000 = {}, quadrature {truth}",
            e.bound
        );
        assert!(e.elbo < truth);
    }
}

#[test]
fn estimates_do_not_depend_on_threads_chunks_or_batching() {
    let c = cfg(
        vec![32, 32],
        8,
        vec![32, 32],
        Activation::Tanh,
        Likelihood::Bernoulli,
        PosteriorStd::Exp,
    );
    let vae = sharpen(&Vae::<f32>::new(&c, 9).unwrap(), 2.0);
    let n = 12;
    let x = data(n, 12, 3, true);
    let run = |threads: usize, chunk: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let ev = Evaluator::new(&vae, &Prior::StandardNormal)
                .unwrap()
                .with_chunk(chunk);
            let post = ev.encode(&x).unwrap();
            ev.estimate(&x, &post, &opts(1001, 5, false)).unwrap()
        })
    };
    let a = run(1, 256);
    let b = run(2, 256);
    let c2 = run(2, 37);
    let d = run(1, 5000);
    let bits = |v: &[ImageEstimate]| {
        v.iter()
            .map(|e| [e.bound.to_bits(), e.elbo.to_bits(), e.kl.to_bits()])
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&a), bits(&b), "1 vs 2 threads");
    assert_eq!(bits(&a), bits(&c2), "chunk 256 vs 37");
    assert_eq!(bits(&a), bits(&d), "chunk 256 vs one chunk");
    // Same seed, same numbers; another seed, other numbers.
    assert_eq!(bits(&a), bits(&run(2, 256)));
    let ev = Evaluator::new(&vae, &Prior::StandardNormal).unwrap();
    let post = ev.encode(&x).unwrap();
    let other = ev.estimate(&x, &post, &opts(1001, 6, false)).unwrap();
    assert_ne!(bits(&a), bits(&other));
    // Evaluating in two batches with `first_stream` gives the same numbers as one call.
    let slice = |p: &Posterior, r: std::ops::Range<usize>| Posterior {
        rows: r.len(),
        dim: p.dim,
        mean: p.mean[r.start * p.dim..r.end * p.dim].to_vec(),
        std: p.std[r.start * p.dim..r.end * p.dim].to_vec(),
        log_std: p.log_std[r.start * p.dim..r.end * p.dim].to_vec(),
    };
    let mut batched = ev
        .estimate(&x[..5 * 12], &slice(&post, 0..5), &opts(1001, 5, false))
        .unwrap();
    let mut o = opts(1001, 5, false);
    o.first_stream = 5;
    batched.extend(ev.estimate(&x[5 * 12..], &slice(&post, 5..n), &o).unwrap());
    assert_eq!(bits(&a), bits(&batched), "batched");
}

#[test]
fn curve_is_flat_for_equal_weights_and_rises_with_shared_samples() {
    // Equal log-weights: every L_k equals that value exactly.
    let lw = vec![-3.25; 2 * 100];
    for p in lk_curve(&lw, 2, 100, &[1, 3, 10, 100]).unwrap() {
        assert!((p.bound + 3.25).abs() < 1e-12, "{p:?}");
        assert!(p.delta.abs() < 1e-12);
    }
    // A real model: the curve rises beyond its Monte Carlo error.
    let c = cfg(
        vec![16],
        3,
        vec![16],
        Activation::Tanh,
        Likelihood::Bernoulli,
        PosteriorStd::Exp,
    );
    let vae = sharpen(&Vae::<f32>::new(&c, 2).unwrap(), 3.0);
    let n = 20;
    let x = data(n, 12, 1, true);
    let ev = Evaluator::new(&vae, &Prior::StandardNormal).unwrap();
    let post = ev.encode(&x).unwrap();
    let est = ev.estimate(&x, &post, &opts(1000, 3, true)).unwrap();
    let lw: Vec<f64> = est.iter().flat_map(|e| e.log_weights.clone()).collect();
    let curve = lk_curve(&lw, n, 1000, &[1000, 1, 10, 100, 10]).unwrap();
    assert_eq!(
        curve.iter().map(|p| p.k).collect::<Vec<_>>(),
        vec![1, 10, 100, 1000]
    );
    for w in curve.windows(2) {
        assert!(w[1].delta > 3.0 * w[1].delta_stderr, "{w:?}");
        assert!((w[1].bound - w[0].bound - w[1].delta).abs() < 1e-9);
    }
    // The largest k uses every sample once: it is exactly the mean L̂_1000.
    let mean = est.iter().map(|e| e.bound).sum::<f64>() / n as f64;
    assert!((curve[3].bound - mean).abs() < 1e-9);
    // L_1 is the average log-weight.
    assert!((curve[0].bound - lw.iter().sum::<f64>() / lw.len() as f64).abs() < 1e-9);
    assert!(lk_curve(&lw, n, 1000, &[2000]).is_err());
    assert!(lk_curve(&lw[1..], n, 1000, &[1]).is_err());
}

#[test]
fn active_units_count_the_informative_dimensions() {
    // Linear encoder with d = 6 latent units of which exactly m carry the input; the others
    // have (near) constant posterior means.
    let (d_in, d) = (12, 6);
    let c = VaeConfig {
        input_dim: d_in,
        encoder_hidden: vec![],
        latent_dim: d,
        decoder_hidden: vec![8],
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        posterior_std: PosteriorStd::Exp,
        upper: Vec::new(),
    };
    let x = data(400, d_in, 2, true);
    for m in [0usize, 1, 4, 6] {
        let mut t = Vae::<f32>::new(&c, 1).unwrap().named_tensors();
        for tensor in t.iter_mut() {
            if tensor.name == "encoder.mean.weight" {
                for (idx, v) in tensor.data.iter_mut().enumerate() {
                    let unit = idx % d;
                    // Informative units get weights of order 1; the rest 1e-3 (variance ≈ 1e-6).
                    *v = if unit < m { *v * 2.0 } else { *v * 1e-3 };
                }
            }
        }
        let vae = Vae::from_named_tensors(&c, &t).unwrap();
        let post = vae.encode(&x).unwrap();
        let var = latent_variances(&post.mean, 400, d).unwrap();
        let active = var.iter().filter(|&&v| v > 0.01).count();
        assert_eq!(active, m, "variances {var:?}");
    }
    assert!(latent_variances(&[1.0; 5], 2, 3).is_err());
}

#[test]
fn pca_finds_the_direction_of_largest_variance() {
    // Points spread along (1, 2, 2)/3 with small isotropic noise.
    let mut rng = stream_rng(4, 4);
    let rows = 500;
    let t: Vec<f64> = standard_normal_noise(&mut rng, rows);
    let e: Vec<f64> = standard_normal_noise(&mut rng, rows * 3);
    let dir = [1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0];
    let x: Vec<f64> = (0..rows)
        .flat_map(|r| (0..3).map(move |j| (r, j)))
        .map(|(r, j)| 5.0 + 3.0 * t[r] * dir[j] + 0.1 * e[r * 3 + j])
        .collect();
    let p = principal_components(&x, rows, 3, 2).unwrap();
    let c0 = &p.components[..3];
    let cos: f64 = c0.iter().zip(dir).map(|(a, b)| a * b).sum();
    assert!(cos > 0.999, "first component {c0:?}");
    assert!((p.variances[0] - 9.0).abs() < 1.5, "{:?}", p.variances);
    assert!(p.variances[1] < 0.05);
    // The projections are centred and carry the variance of each direction.
    let xs: Vec<f64> = (0..rows).map(|r| p.points[r * 2]).collect();
    let mean = xs.iter().sum::<f64>() / rows as f64;
    let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (rows - 1) as f64;
    assert!(mean.abs() < 1e-9);
    assert!((var - p.variances[0]).abs() < 1e-9 * var);
    // One latent dimension: the second direction is zero.
    let p1 = principal_components(&t, rows, 1, 2).unwrap();
    assert_eq!(p1.components, vec![1.0, 0.0]);
    assert!(p1.points.iter().skip(1).step_by(2).all(|v| *v == 0.0));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let c = cfg(
        vec![4],
        2,
        vec![4],
        Activation::Tanh,
        Likelihood::Bernoulli,
        PosteriorStd::Exp,
    );
    let vae = Vae::<f32>::new(&c, 1).unwrap();
    let ev = Evaluator::new(&vae, &Prior::StandardNormal).unwrap();
    let x = data(2, 12, 1, true);
    let post = ev.encode(&x).unwrap();
    assert!(ev.estimate(&x[..13], &post, &opts(5, 1, false)).is_err());
    assert!(ev.estimate(&x, &post, &opts(0, 1, false)).is_err());
    let mut gray = x.clone();
    gray[3] = 1.5;
    assert!(ev.estimate(&gray, &post, &opts(5, 1, false)).is_err());
    let mut short = post.clone();
    short.mean.pop();
    assert!(ev.estimate(&x, &short, &opts(5, 1, false)).is_err());
    let wrong_dim = Prior::mixture(1, 3, vec![0.0], vec![0.0; 3], vec![0.0; 3]).unwrap();
    assert!(Evaluator::new(&vae, &wrong_dim).is_err());
}

/// Throughput at k = 5000 on the IWAE net (784-200-200-50, random weights). Run with
/// `cargo test --release -p vaepipe-nn --test estimate -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_at_k_5000() {
    let c = VaeConfig::burda_mnist();
    let vae = Vae::<f32>::new(&c, 1).unwrap();
    let n = 40;
    let x = data(n, 784, 1, true);
    for chunk in [128, 256, 512, 1024] {
        let ev = Evaluator::new(&vae, &Prior::StandardNormal)
            .unwrap()
            .with_chunk(chunk);
        let post = ev.encode(&x).unwrap();
        let t = std::time::Instant::now();
        ev.estimate(&x, &post, &opts(5000, 1, false)).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!("chunk {chunk}: {:.1} images/s", n as f64 / s);
    }
}

/// Throughput at k = 5000 under a 60 000-component mixture prior (the size of the exact
/// aggregate posterior of MNIST's training set), d = 50. Run like `throughput_at_k_5000`.
#[test]
#[ignore]
fn mixture_throughput_at_k_5000() {
    let c = VaeConfig::burda_mnist();
    let vae = Vae::<f32>::new(&c, 1).unwrap();
    let kk = 60_000;
    let mut rng = stream_rng(3, 3);
    let means: Vec<f32> = standard_normal_noise(&mut rng, kk * 50);
    let log_stds = vec![(0.2f32).ln(); kk * 50];
    let prior = Prior::mixture(kk, 50, vec![0.0; kk], means, log_stds).unwrap();
    let n = 8;
    let x = data(n, 784, 1, true);
    let ev = Evaluator::new(&vae, &prior).unwrap();
    let post = ev.encode(&x).unwrap();
    let t = std::time::Instant::now();
    ev.estimate(&x, &post, &opts(5000, 1, false)).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "K = {kk}: {:.2} images/s ({:.2e} component terms/s)",
        n as f64 / s,
        n as f64 * 5000.0 * kk as f64 / s
    );
}
