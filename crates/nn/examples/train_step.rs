//! Steps `Trainer` on the IWAE network for profiling (`perf record`):
//! `cargo run --release -p vaepipe-nn --example train_step -- [iwae|elbo] K BATCH SECONDS [generic|fast]
//! [mogC]` (mogC: fine-tune under a fixed C-component mixture prior).
use std::time::Instant;

use vaepipe_nn::*;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let kind = a.get(1).map_or("iwae", String::as_str);
    let k: usize = a.get(2).map_or(50, |s| s.parse().unwrap());
    let b: usize = a.get(3).map_or(20, |s| s.parse().unwrap());
    let secs: f64 = a.get(4).map_or(5.0, |s| s.parse().unwrap());
    let generic = a.get(5).is_some_and(|s| s == "generic");
    let components: Option<usize> = a
        .get(6)
        .and_then(|s| s.strip_prefix("mog"))
        .map(|c| c.parse().unwrap());
    let cfg = VaeConfig::burda_mnist();
    let objective = Objective {
        kind: if kind == "elbo" {
            ObjectiveKind::Elbo
        } else {
            ObjectiveKind::Iwae
        },
        k: std::num::NonZeroUsize::new(k).expect("k must be at least 1"),
        estimator: Estimator::Reparam,
        analytic_kl: false,
    };
    let mut tr = Trainer::new(
        Vae::new(&cfg, 1).unwrap(),
        match components {
            None => Prior::StandardNormal,
            Some(c) => {
                let d = cfg.latent_dim;
                let u: Vec<f32> = standard_normal_noise(&mut stream_rng(5, 1), c * d);
                Prior::mixture(c, d, vec![0.0; c], u, vec![-0.5; c * d]).unwrap()
            }
        },
        objective,
        AdamHyper::default(),
        Trainable::MODEL,
    )
    .unwrap();
    tr.set_fast_path(!generic);
    let rows = (b * 16).max(1000);
    let u: Vec<f64> = standard_normal_noise(&mut stream_rng(7, 0), rows * 784);
    let x: Vec<f32> = u
        .iter()
        .map(|&v| if v > 0.84 { 1.0 } else { 0.0 })
        .collect();
    let t = Instant::now();
    let mut steps = 0usize;
    while t.elapsed().as_secs_f64() < secs {
        let start = (steps * b) % (rows - b + 1);
        tr.step(
            &x[start * 784..(start + b) * 784],
            b,
            &mut stream_rng(3, steps as u64),
        )
        .unwrap();
        steps += 1;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{kind} k={k} batch={b} fast={}: {steps} steps, {:.3} ms/step, {:.0} images/s",
        tr.uses_fast_path(),
        1e3 * s / steps as f64,
        (steps * b) as f64 / s
    );
}
