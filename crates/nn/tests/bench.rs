//! Throughput of `Trainer::step` for the IWAE network of Burda et al. (2016): 784-200-200-50,
//! tanh, Bernoulli likelihood, exp-parametrised σ. Ignored by default; run with
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-nn cargo test --release -p vaepipe-nn --test bench -- \
//!     --ignored --nocapture --test-threads=1
//! ```
//!
//! It prints images per second (examples per second, each with k samples) for
//! (k, batch) = (1, 20), (5, 20), (50, 20), (50, 100). Timing is reported, never asserted.

use std::time::Instant;

use vaepipe_nn::*;

fn iwae_net() -> VaeConfig {
    VaeConfig::burda_mnist()
}

#[test]
#[ignore]
fn trainer_step_throughput() {
    let cfg = iwae_net();
    let n_data = 1000;
    let mut rng = stream_rng(1, 0);
    let u: Vec<f64> = standard_normal_noise(&mut rng, n_data * 784);
    let x: Vec<f32> = u.iter().map(|v| if *v > 0.8 { 1.0 } else { 0.0 }).collect();
    println!("rayon threads: {}", rayon::current_num_threads());
    for (k, b) in [(1usize, 20usize), (5, 20), (50, 20), (50, 100)] {
        let vae = Vae::new(&cfg, 7).unwrap();
        let mut tr = Trainer::new(
            vae,
            Prior::StandardNormal,
            Objective::iwae(k).unwrap(),
            AdamHyper::default(),
            Trainable::MODEL,
        )
        .unwrap();
        let steps_for = |secs: f64, per_step: f64| ((secs / per_step).ceil() as u64).clamp(3, 2000);
        // Warm-up, then time enough steps for about 3 seconds.
        let t0 = Instant::now();
        for s in 0..2u64 {
            let start = (s as usize * b) % (n_data - b);
            tr.step(&x[start * 784..(start + b) * 784], b, &mut stream_rng(2, s))
                .unwrap();
        }
        let per = t0.elapsed().as_secs_f64() / 2.0;
        let steps = steps_for(3.0, per);
        let t = Instant::now();
        for s in 0..steps {
            let start = (s as usize * b) % (n_data - b);
            tr.step(&x[start * 784..(start + b) * 784], b, &mut stream_rng(3, s))
                .unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "k={k:>3} batch={b:>3}: {steps} steps in {secs:.2} s, {:.1} ms/step, {:.0} images/s",
            1e3 * secs / steps as f64,
            (steps as usize * b) as f64 / secs
        );
    }
}

/// Inference-path log-density of the exact aggregate posterior of 60 000 points (M = 60 000
/// components, d = 50), evaluated at 2 000 latent rows.
#[test]
#[ignore]
fn aggregate_posterior_log_density_throughput() {
    let cfg = iwae_net();
    let vae: Vae<f32> = Vae::new(&cfg, 7).unwrap();
    let m = 60_000;
    let mut rng = stream_rng(4, 0);
    let u: Vec<f64> = standard_normal_noise(&mut rng, m * 784);
    let x: Vec<f32> = u.iter().map(|v| if *v > 0.8 { 1.0 } else { 0.0 }).collect();
    let t = Instant::now();
    let prior = Prior::aggregate_posterior(&vae, &x).unwrap();
    println!("encoding {m} points: {:.2} s", t.elapsed().as_secs_f64());
    let rows = 2000;
    let z = prior.sample(&vae, rows, &mut rng).unwrap();
    let t = Instant::now();
    let lp = prior.log_density(&vae, &z, rows).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(lp.iter().all(|v| v.is_finite()));
    println!(
        "log-density of {rows} rows under M = {m} components: {secs:.2} s ({:.0} rows/s; \
         GEMM work / total time = {:.1} GFLOP/s, f64)",
        rows as f64 / secs,
        2.0 * rows as f64 * m as f64 * 100.0 / secs / 1e9
    );
}
