//! Smoke test of `vaepipe bench` with tiny settings: each subcommand exits 0 and prints the
//! JSON keys documented in docs/performance.md, with consistent values (min ≤ median ≤ max,
//! positive rates, the settings echoed back). Timing is never asserted.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vaepipe"))
        .arg("bench")
        .args(args)
        .args([
            "--hidden", "16,8", "--latent", "4", "--repeat", "2", "--json",
        ])
        .output()
        .expect("run vaepipe");
    assert!(
        out.status.success(),
        "vaepipe bench {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

fn stats(v: &Value, key: &str) {
    let s = &v[key];
    let (min, med, max) = (
        s["min"]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}.min in {v:#}")),
        s["median"].as_f64().unwrap(),
        s["max"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= med && med <= max, "{key}: {s}");
}

fn has(v: &Value, keys: &[&str]) {
    for k in keys {
        assert!(v.get(*k).is_some(), "missing `{k}` in {v:#}");
    }
}

#[test]
fn bench_eval_json_has_the_documented_keys() {
    let v = bench(&["eval", "--k", "30", "--images", "3"]);
    has(
        &v,
        &[
            "bench",
            "model",
            "prior",
            "k",
            "images",
            "repeat",
            "threads",
            "seconds",
            "images_per_s",
            "gflop_per_image",
            "gflops",
            "gemm_peak_gflops",
            "ratio_to_peak",
            "test_set_10000_seconds",
        ],
    );
    assert_eq!(v["bench"], "eval");
    assert_eq!((v["k"].as_u64(), v["images"].as_u64()), (Some(30), Some(3)));
    assert_eq!(v["model"]["encoder"], serde_json::json!([16, 8]));
    assert_eq!(v["model"]["decoder"], serde_json::json!([8, 16]));
    stats(&v, "images_per_s");
    stats(&v, "gflops");
    stats(&v, "seconds");
    // FLOPs per image: encoder 784·16 + 16·8 + 2·8·4, decoder 30 × (4·8 + 8·16 + 16·784), ×2.
    let expected =
        2.0 * ((784 * 16 + 16 * 8 + 2 * 8 * 4) + 30 * (4 * 8 + 8 * 16 + 16 * 784)) as f64;
    assert!((v["gflop_per_image"].as_f64().unwrap() * 1e9 - expected).abs() < 1e-3);
    assert!(v["gemm_peak_gflops"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_train_json_has_the_documented_keys() {
    let v = bench(&[
        "train",
        "--objective",
        "iwae",
        "--k",
        "3",
        "--batch",
        "5",
        "--seconds",
        "0.05",
    ]);
    has(
        &v,
        &[
            "bench",
            "model",
            "objective",
            "estimator",
            "k",
            "batch",
            "repeat",
            "threads",
            "steps",
            "images_per_s",
            "gflop_per_image",
            "gflops",
            "gemm_peak_gflops",
            "ratio_to_peak",
        ],
    );
    assert_eq!(v["objective"], "iwae");
    assert_eq!(v["batch"], 5);
    assert_eq!(v["steps"].as_array().unwrap().len(), 2);
    assert_eq!(
        (&v["prior"], &v["components"], &v["trainable"]),
        (&"standard-normal".into(), &Value::Null, &"model".into())
    );
    stats(&v, "images_per_s");
    stats(&v, "gflops");
}

/// `--prior` and `--trainable`: the VampPrior and a mixture, trained with the model or alone,
/// and the generic path beside the fast one.
#[test]
fn bench_train_measures_every_prior() {
    for (prior, trainable, generic) in [
        ("vamp", "all", false),
        ("vamp", "prior", true),
        ("mog", "model", false),
    ] {
        let mut args = vec![
            "train",
            "--k",
            "2",
            "--batch",
            "4",
            "--seconds",
            "0.05",
            "--prior",
            prior,
            "--components",
            "3",
            "--trainable",
            trainable,
        ];
        if generic {
            args.push("--generic");
        }
        let v = bench(&args);
        assert_eq!(
            (&v["prior"], v["components"].as_u64(), &v["trainable"]),
            (&prior.into(), Some(3), &trainable.into()),
            "{v:#}"
        );
        if generic {
            assert_eq!(v["fast_path"], false);
        }
        stats(&v, "images_per_s");
    }
}

#[test]
fn bench_gemm_json_lists_the_network_shapes() {
    let v = bench(&["gemm", "--rows", "64"]);
    has(
        &v,
        &[
            "bench",
            "backend",
            "threads",
            "repeat",
            "shapes",
            "peak_gflops_1_thread",
            "peak_gflops",
            "peak_gflops_independent",
        ],
    );
    let shapes = v["shapes"].as_array().unwrap();
    let dims: Vec<(u64, u64, u64)> = shapes
        .iter()
        .map(|s| {
            stats(s, "gflops_1_thread");
            stats(s, "gflops_all_threads");
            (
                s["m"].as_u64().unwrap(),
                s["k"].as_u64().unwrap(),
                s["n"].as_u64().unwrap(),
            )
        })
        .collect();
    // Encoder 784→16→8 and decoder 4→8→16→784, each product once.
    assert_eq!(
        dims,
        [
            (64, 784, 16),
            (64, 16, 8),
            (64, 4, 8),
            (64, 8, 16),
            (64, 16, 784)
        ]
    );
    let best = shapes
        .iter()
        .map(|s| s["gflops_all_threads"]["median"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(v["peak_gflops"].as_f64().unwrap(), best);
    let threads = v["threads"].as_f64().unwrap();
    let one = v["peak_gflops_1_thread"].as_f64().unwrap();
    assert!((v["peak_gflops_independent"].as_f64().unwrap() - threads * one).abs() < 1e-9 * one);
}

#[test]
fn bad_settings_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_vaepipe"))
        .args(["bench", "eval", "--k", "0", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--k must be positive"));
    let out = Command::new(env!("CARGO_BIN_EXE_vaepipe"))
        .args(["bench", "train", "--trainable", "prior", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a prior with parameters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vaepipe"))
        .args(["bench", "nothing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
