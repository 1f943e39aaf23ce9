//! Measures how much a model learns per epoch under different initialisations and Adam settings
//! (issue 13): IWAE or ELBO on dynamically binarized MNIST, printing the mean train bound and
//! the time of every epoch.
//!
//! `cargo run --release -p vaepipe-nn --example init_study -- DIR [KEY=VALUE ...]` where DIR holds
//! the *uncompressed* `train-images-idx3-ubyte` (gunzip the standard file), and the settings are
//! `init=pytorch|glorot`, `bias=data|scheme`, `std_scale=F` (σ-head scale), `epochs=N`,
//! `k=N`, `batch=N`, `objective=iwae|elbo`, `lr=F`, `eps=F`, `seed=N`, `rows=N` (training
//! images, default all). Defaults: the PyTorch reference's setting (IWAE k = 5, batch 100, Adam
//! 1e-3, β 0.9/0.999, ε 1e-4), `init=pytorch bias=data std_scale=1`, 3 epochs, seed 1.
use std::collections::BTreeMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vaepipe_nn::*;

fn read_images(path: &std::path::Path) -> (usize, usize, Vec<f32>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
    assert_eq!(be(0), 0x0803, "{}: not an IDX image file", path.display());
    let (n, d) = (be(4), be(8) * be(12));
    let x = b[16..16 + n * d]
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect();
    (n, d, x)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.first().expect("usage: init_study DIR [KEY=VALUE...]"));
    let kv: BTreeMap<&str, &str> = args[1..]
        .iter()
        .map(|a| a.split_once('=').expect("settings are KEY=VALUE"))
        .collect();
    let get = |k: &str, d: &str| kv.get(k).copied().unwrap_or(d).to_string();
    let num = |k: &str, d: &str| get(k, d).parse::<f64>().expect(k);

    let (n_all, d, x) = read_images(&dir.join("train-images-idx3-ubyte"));
    let rows = (num("rows", "0") as usize).clamp(0, n_all);
    let n = if rows == 0 { n_all } else { rows };
    let cfg = VaeConfig::burda_mnist();
    assert_eq!(cfg.input_dim, d);
    let output_bias = match get("bias", "data").as_str() {
        "data" => {
            let mut mean = vec![0f64; d];
            for row in x[..n * d].chunks(d) {
                for (m, v) in mean.iter_mut().zip(row) {
                    *m += *v as f64;
                }
            }
            OutputBias::data_logits(&mean.iter().map(|m| m / n as f64).collect::<Vec<_>>()).unwrap()
        }
        "scheme" => OutputBias::Scheme,
        other => panic!("bias={other}"),
    };
    let init = Init {
        scheme: match get("init", "pytorch").as_str() {
            "pytorch" => InitScheme::Pytorch,
            "glorot" => InitScheme::Glorot,
            other => panic!("init={other}"),
        },
        output_bias,
        std_head_scale: num("std_scale", "1"),
    };
    let seed = num("seed", "1") as u64;
    let k = num("k", "5") as usize;
    let batch = num("batch", "100") as usize;
    let epochs = num("epochs", "3") as usize;
    let objective = Objective {
        kind: match get("objective", "iwae").as_str() {
            "iwae" => ObjectiveKind::Iwae,
            "elbo" => ObjectiveKind::Elbo,
            other => panic!("objective={other}"),
        },
        k: std::num::NonZeroUsize::new(k).expect("k must be at least 1"),
        estimator: Estimator::Reparam,
        analytic_kl: false,
    };
    let hyper = AdamHyper {
        lr: num("lr", "0.001"),
        beta1: 0.9,
        beta2: 0.999,
        eps: num("eps", "0.0001"),
    };
    let mut tr = Trainer::new(
        Vae::with_init(&cfg, &init, seed).unwrap(),
        Prior::StandardNormal,
        objective,
        hyper,
        Trainable::MODEL,
    )
    .unwrap();
    println!("{kv:?} rows={n} fast={}", tr.uses_fast_path());
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut xb = vec![0f32; batch * d];
    let mut total = 0.0;
    for epoch in 1..=epochs {
        for i in (1..n).rev() {
            order.swap(i, rng.gen_range(0..=i));
        }
        let t = Instant::now();
        let (mut sum, mut seen) = (0.0, 0usize);
        for rows in order.chunks(batch) {
            for (i, &r) in rows.iter().enumerate() {
                for (dst, &p) in xb[i * d..(i + 1) * d]
                    .iter_mut()
                    .zip(&x[r * d..(r + 1) * d])
                {
                    *dst = if rng.r#gen::<f32>() < p { 1.0 } else { 0.0 };
                }
            }
            let b = rows.len();
            let st = tr.step(&xb[..b * d], b, &mut rng).unwrap();
            sum += st.bound * b as f64;
            seen += b;
        }
        total += t.elapsed().as_secs_f64();
        println!(
            "epoch {epoch}: train bound {:.2} ({:.1} s)",
            sum / seen as f64,
            total
        );
    }
}
