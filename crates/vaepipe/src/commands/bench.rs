//! `vaepipe bench`: speed measurements of this machine, printed as JSON with `--json` (a
//! contract: names and keys are documented in docs/performance.md).
//!
//! * `bench eval`: test images per second of the eval stage's importance-sampled NLL
//!   (`vaepipe_nn::Evaluator`) on the IWAE network, with the GFLOP/s achieved.
//! * `bench train`: images per second of `Trainer::step` (each image counted once whatever k).
//! * `bench gemm`: this machine's f32 GEMM throughput on the network's shapes through dfdx's
//!   matmul (one rayon thread and all of them) and through vaepipe-nn's packed kernel for each
//!   instruction set the CPU has (one thread), plus a plain FMA loop per core: the best product
//!   is the peak the other two compare to.
//!
//! Every measurement is repeated (`--repeat`) and reported as min/median/max. The networks have
//! random initial weights (seed 1) and the data are random binary images: the work per image
//! does not depend on the values. FLOPs count matrix products only, 2·m·n·k each (the model is
//! vaepipe-nn's `eval_flops_per_image` / `train_flops_per_image`).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};
use vaepipe_nn::{
    AdamHyper, Evaluator, GemmBackend, Isa, Prior, SampleOptions, Trainable, Trainer, Vae,
    VaeConfig, eval_flops_per_image, fma_peak_gflops, gemm_gflops, gemm_shapes,
    standard_normal_noise, stream_rng, train_flops_per_image,
};

use crate::cli::{Bench, BenchArgs, EvalArgs, GemmArgs, NetArgs, TrainArgs};

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Err(msg) = check_usage(&a.what) {
        eprintln!("error: {msg}");
        return Ok(ExitCode::from(crate::exit::EXIT_INVALID));
    }
    let (out, json) = match a.what {
        Bench::Eval(e) => {
            let json = e.net.json;
            (bench_eval(&e)?, json)
        }
        Bench::Train(t) => {
            let json = t.net.json;
            (bench_train(&t)?, json)
        }
        Bench::Gemm(g) => {
            let json = g.net.json;
            (bench_gemm(&g)?, json)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_human(&out);
    }
    Ok(ExitCode::SUCCESS)
}

/// min / median / max of repeated measurements.
#[derive(Serialize, Debug, Clone, Copy)]
struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    fn of(v: &[f64]) -> Stats {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        };
        Stats {
            min: s[0],
            median,
            max: s[n - 1],
        }
    }
}

/// Rejects settings that cannot be measured (exit code 2).
fn check_usage(b: &Bench) -> Result<(), String> {
    let (net, positive): (&NetArgs, Vec<(&str, bool)>) = match b {
        Bench::Eval(e) => (&e.net, vec![("--k", e.k > 0), ("--images", e.images > 0)]),
        Bench::Train(t) => (
            &t.net,
            vec![
                ("--k", t.k > 0),
                ("--batch", t.batch > 0),
                ("--seconds", t.seconds > 0.0 && t.seconds.is_finite()),
                ("--components", t.components > 0),
            ],
        ),
        Bench::Gemm(g) => (&g.net, vec![("--rows", g.rows > 0)]),
    };
    for (flag, ok) in positive.into_iter().chain([("--repeat", net.repeat > 0)]) {
        if !ok {
            return Err(format!("{flag} must be positive"));
        }
    }
    if let Bench::Train(t) = b
        && t.trainable != "model"
        && t.prior == "standard-normal"
    {
        return Err(format!(
            "--trainable {} needs a prior with parameters (--prior mog or vamp)",
            t.trainable
        ));
    }
    check_net(net).map(|_| ()).map_err(|e| format!("{e:#}"))
}

fn check_net(n: &NetArgs) -> anyhow::Result<VaeConfig> {
    // The flags' defaults give VaeConfig::burda_mnist().
    let cfg = VaeConfig {
        input_dim: n.input,
        encoder_hidden: n.hidden.clone(),
        latent_dim: n.latent,
        decoder_hidden: n.hidden.iter().rev().copied().collect(),
        ..VaeConfig::burda_mnist()
    };
    cfg.validate().context("the benchmark network")?;
    Ok(cfg)
}

fn model_json(cfg: &VaeConfig) -> Value {
    json!({
        "input_dim": cfg.input_dim,
        "encoder": cfg.encoder_hidden,
        "latent": cfg.latent_dim,
        "decoder": cfg.decoder_hidden,
        "activation": "tanh",
        "likelihood": "bernoulli",
        "parameters": cfg.parameter_count(),
        "weights": "random initialisation (seed 1)",
    })
}

/// Random binary images with about 20 % of pixels on.
fn random_images(n: usize, d: usize) -> Vec<f32> {
    let u: Vec<f64> = standard_normal_noise(&mut stream_rng(7, 0), n * d);
    u.iter()
        .map(|&v| if v > 0.84 { 1.0 } else { 0.0 })
        .collect()
}

/// The prior of `bench train --prior P --components K` (K is `None` for the standard normal):
/// a mixture with random logits, means N(0, 1.5²) and σ ≈ 0.8, or a VampPrior on K random
/// images (the work per step does not depend on the values).
fn bench_prior(
    name: &str,
    components: usize,
    cfg: &VaeConfig,
) -> anyhow::Result<(Prior<f32>, Option<usize>)> {
    let k = components;
    Ok(match name {
        "mog" => {
            let d = cfg.latent_dim;
            let u: Vec<f32> = standard_normal_noise(&mut stream_rng(8, 0), k * (1 + 2 * d));
            let (logits, rest) = u.split_at(k);
            let (means, ls) = rest.split_at(k * d);
            let prior = Prior::mixture(
                k,
                d,
                logits.to_vec(),
                means.iter().map(|v| 1.5 * v).collect(),
                ls.iter().map(|v| 0.1 * v - 0.2).collect(),
            )?;
            (prior, Some(k))
        }
        "vamp" => (
            Prior::vamp(k, cfg.input_dim, random_images(k, cfg.input_dim))?,
            Some(k),
        ),
        _ => (Prior::StandardNormal, None),
    })
}

fn bench_eval(a: &EvalArgs) -> anyhow::Result<Value> {
    let cfg = check_net(&a.net)?;
    let peaks = measure_peaks(&cfg, 1000, 2)?;
    let peak = peaks.best();
    let vae = Vae::<f32>::new(&cfg, 1)?;
    let mut ev = Evaluator::new(&vae, &Prior::StandardNormal)?;
    if let Some(c) = a.chunk {
        ev = ev.with_chunk(c);
    }
    let x = random_images(a.images, cfg.input_dim);
    let opts = SampleOptions {
        k: a.k,
        seed: 1,
        first_stream: 0,
        keep_log_weights: false,
    };
    // Warm-up: one image per thread.
    let warm = rayon::current_num_threads().min(a.images);
    let post = ev.encode(&x[..warm * cfg.input_dim])?;
    ev.estimate(&x[..warm * cfg.input_dim], &post, &opts)?;
    let mut seconds = Vec::with_capacity(a.net.repeat);
    for _ in 0..a.net.repeat {
        let t = Instant::now();
        let post = ev.encode(&x)?;
        let est = ev.estimate(&x, &post, &opts)?;
        seconds.push(t.elapsed().as_secs_f64());
        if est.iter().any(|e| !e.bound.is_finite()) {
            bail!("non-finite estimate in the benchmark");
        }
    }
    let gflop = eval_flops_per_image(&cfg, a.k) / 1e9;
    let ips: Vec<f64> = seconds.iter().map(|s| a.images as f64 / s).collect();
    let gflops: Vec<f64> = ips.iter().map(|i| i * gflop).collect();
    let ips = Stats::of(&ips);
    let gflops = Stats::of(&gflops);
    Ok(json!({
        "bench": "eval", // tidy: not a stage (the `bench` kind, a JSON contract)
        "model": model_json(&cfg),
        "prior": "standard-normal",
        "k": a.k,
        "images": a.images,
        "repeat": a.net.repeat,
        "threads": rayon::current_num_threads(),
        "seconds": Stats::of(&seconds),
        "images_per_s": ips,
        "gflop_per_image": gflop,
        "gflops": gflops,
        "gemm_peak_gflops": peak,
        "ratio_to_peak": gflops.median / peak,
        "isa": Isa::active().name(),
        "fma_peak_gflops": peaks.fma_all(),
        "ratio_to_fma_peak": peaks.fma_all().map(|f| gflops.median / f),
        "test_set_10000_seconds": 10_000.0 / ips.median,
    }))
}

fn bench_train(a: &TrainArgs) -> anyhow::Result<Value> {
    let cfg = check_net(&a.net)?;
    let peaks = measure_peaks(&cfg, 1000, 2)?;
    let peak = peaks.best();
    let objective =
        vaepipe_stages::convert::objective(a.objective, a.m, a.beta, a.k, a.estimator, false)?;
    let vae = Vae::<f32>::new(&cfg, 1)?;
    let (prior, components) = bench_prior(&a.prior, a.components, &cfg)?;
    let trainable = match a.trainable.as_str() {
        "prior" => Trainable::PRIOR, // tidy: not a stage (a trainable set)
        "all" => Trainable::ALL,
        _ => Trainable::MODEL,
    };
    let mut trainer = Trainer::new(vae, prior, objective, AdamHyper::default(), trainable)?;
    let fast_path = trainer.set_fast_path(!a.generic);
    let rows = (a.batch * 16).max(1000);
    let x = random_images(rows, cfg.input_dim);
    let d = cfg.input_dim;
    let mut step = 0u64;
    let mut next = |tr: &mut Trainer| -> anyhow::Result<()> {
        let start = (step as usize * a.batch) % (rows - a.batch + 1);
        tr.step(
            &x[start * d..(start + a.batch) * d],
            a.batch,
            &mut stream_rng(3, step),
        )?;
        step += 1;
        Ok(())
    };
    for _ in 0..2 {
        next(&mut trainer)?;
    }
    let mut ips = Vec::with_capacity(a.net.repeat);
    let mut steps_done = Vec::with_capacity(a.net.repeat);
    for _ in 0..a.net.repeat {
        let t = Instant::now();
        let mut steps = 0u64;
        while steps < 3 || t.elapsed().as_secs_f64() < a.seconds {
            next(&mut trainer)?;
            steps += 1;
        }
        ips.push((steps as usize * a.batch) as f64 / t.elapsed().as_secs_f64());
        steps_done.push(steps);
    }
    let gflop = train_flops_per_image(&cfg, objective.samples()) / 1e9;
    let gflops: Vec<f64> = ips.iter().map(|i| i * gflop).collect();
    let gflops = Stats::of(&gflops);
    Ok(json!({
        "bench": "train", // tidy: not a stage (the `bench` kind, a JSON contract)
        "model": model_json(&cfg),
        "objective": a.objective.as_str(),
        "estimator": a.estimator.as_str(),
        "k": a.k,
        "m": a.m,
        "beta": a.beta,
        "samples": objective.samples(),
        "objective_label": vaepipe_stages::convert::objective_label(&objective),
        "batch": a.batch,
        "fast_path": fast_path,
        "prior": a.prior,
        "components": components,
        "trainable": a.trainable,
        "repeat": a.net.repeat,
        "threads": rayon::current_num_threads(),
        "steps": steps_done,
        "images_per_s": Stats::of(&ips),
        "gflop_per_image": gflop,
        "gflops": gflops,
        "gemm_peak_gflops": peak,
        "ratio_to_peak": gflops.median / peak,
        "isa": Isa::active().name(),
        "fma_peak_gflops": peaks.fma_all(),
        "ratio_to_fma_peak": peaks.fma_all().map(|f| gflops.median / f),
    }))
}

/// GFLOP/s of `a (m × k) · b (k × n)` through `backend`, `repeat` measurements of at least
/// 0.2 s each (dfdx's on the current rayon pool). `None`: the backend is unavailable here.
fn time_matmul(backend: GemmBackend, m: usize, k: usize, n: usize, repeat: usize) -> Option<Stats> {
    gemm_gflops(backend, m, k, n, repeat, 0.2).map(|v| Stats::of(&v))
}

/// One shape's measurements.
struct ShapePeak {
    mkn: (usize, usize, usize),
    /// dfdx's matmul on one thread and on all of them.
    dfdx_one: Stats,
    dfdx_all: Stats,
    /// The packed kernel with the active instruction set on one thread (absent without
    /// AVX2+FMA).
    packed_one: Option<Stats>,
    /// The packed kernel with each instruction set the CPU has, on one thread.
    kernels_one: Vec<(Isa, Stats)>,
}

/// GEMM throughput of the network's shapes.
struct Peaks {
    shapes: Vec<ShapePeak>,
    /// Best dfdx median on one thread.
    one: f64,
    /// Best dfdx median with all threads on one product.
    all: f64,
    /// `one` × threads: the throughput of threads multiplying their own matrices.
    independent: f64,
    /// Best median of the packed kernel (active instruction set) on one thread.
    packed_one: Option<f64>,
    /// Best median of the packed kernel with each instruction set, on one thread.
    kernels_one: Vec<(Isa, f64)>,
    /// Median GFLOP/s of the FMA loop on one core, per instruction set.
    fma_one: Vec<(Isa, Stats)>,
}

impl Peaks {
    /// The peak the eval and train benchmarks compare to: the best f32 GEMM throughput this
    /// process reaches on the network's shapes — dfdx with all threads on one product, or any
    /// implementation (every instruction set's kernel) with each thread multiplying its own
    /// matrices.
    fn best(&self) -> f64 {
        let threads = rayon::current_num_threads() as f64;
        self.kernels_one
            .iter()
            .map(|&(_, g)| g * threads)
            .fold(self.all.max(self.independent), f64::max)
            .max(self.packed_one.unwrap_or(0.0) * threads)
    }

    /// The FMA-loop ceiling of all threads: the best instruction set's per-core figure ×
    /// threads (`None` without AVX2+FMA).
    fn fma_all(&self) -> Option<f64> {
        let threads = rayon::current_num_threads() as f64;
        self.fma_one
            .iter()
            .map(|(_, s)| s.median * threads)
            .reduce(f64::max)
    }
}

/// The instruction sets with a packed kernel on this CPU, best first.
fn kernel_isas() -> Vec<Isa> {
    let mut v: Vec<Isa> = Isa::supported()
        .into_iter()
        .filter(|&i| GemmBackend::Kernel(i).available())
        .collect();
    v.reverse();
    v
}

fn measure_peaks(cfg: &VaeConfig, rows: usize, repeat: usize) -> anyhow::Result<Peaks> {
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .context("building a one-thread pool")?;
    let mut out = Peaks {
        shapes: Vec::new(),
        one: 0.0,
        all: 0.0,
        independent: 0.0,
        packed_one: None,
        kernels_one: Vec::new(),
        fma_one: kernel_isas()
            .into_iter()
            .filter_map(|i| fma_peak_gflops(i, repeat, 0.2).map(|v| (i, Stats::of(&v))))
            .collect(),
    };
    let unavailable = || anyhow::anyhow!("dfdx's matmul could not be measured");
    for (m, k, n) in gemm_shapes(cfg, rows) {
        let dfdx_one = single
            .install(|| time_matmul(GemmBackend::Dfdx, m, k, n, repeat))
            .ok_or_else(unavailable)?;
        let dfdx_all = time_matmul(GemmBackend::Dfdx, m, k, n, repeat).ok_or_else(unavailable)?;
        let kernels_one: Vec<(Isa, Stats)> = kernel_isas()
            .into_iter()
            .filter_map(|i| time_matmul(GemmBackend::Kernel(i), m, k, n, repeat).map(|s| (i, s)))
            .collect();
        // The active kernel is one of those measured (the same code path).
        let packed_one = kernels_one
            .iter()
            .find(|(i, _)| *i == Isa::active())
            .map(|(_, s)| *s);
        out.one = out.one.max(dfdx_one.median);
        out.all = out.all.max(dfdx_all.median);
        if let Some(p) = packed_one {
            out.packed_one = Some(out.packed_one.unwrap_or(0.0).max(p.median));
        }
        for &(i, s) in &kernels_one {
            match out.kernels_one.iter_mut().find(|(j, _)| *j == i) {
                Some((_, g)) => *g = g.max(s.median),
                None => out.kernels_one.push((i, s.median)),
            }
        }
        out.shapes.push(ShapePeak {
            mkn: (m, k, n),
            dfdx_one,
            dfdx_all,
            packed_one,
            kernels_one,
        });
    }
    out.independent = out.one * rayon::current_num_threads() as f64;
    Ok(out)
}

fn bench_gemm(a: &GemmArgs) -> anyhow::Result<Value> {
    let cfg = check_net(&a.net)?;
    let peaks = measure_peaks(&cfg, a.rows, a.net.repeat)?;
    let rows: Vec<Value> = peaks
        .shapes
        .iter()
        .map(|s| {
            let (m, k, n) = s.mkn;
            let kernels: serde_json::Map<String, Value> = s
                .kernels_one
                .iter()
                .map(|(i, st)| (i.name().to_string(), json!(st)))
                .collect();
            json!({
                "m": m, "k": k, "n": n,
                "gflop": 2.0 * (m * k * n) as f64 / 1e9,
                "gflops_1_thread": s.dfdx_one,
                "gflops_all_threads": s.dfdx_all,
                "gflops_packed_1_thread": s.packed_one,
                "gflops_kernels_1_thread": kernels,
            })
        })
        .collect();
    let threads = rayon::current_num_threads();
    let kernels: Vec<Value> = peaks
        .kernels_one
        .iter()
        .map(|&(i, g)| {
            json!({
                "isa": i.name(),
                "backend": GemmBackend::Kernel(i).describe(),
                "peak_gflops_1_thread": g,
                "peak_gflops_independent": g * threads as f64,
            })
        })
        .collect();
    let fma: serde_json::Map<String, Value> = peaks
        .fma_one
        .iter()
        .map(|(i, st)| (i.name().to_string(), json!(st)))
        .collect();
    let best = peaks.best();
    Ok(json!({
        "bench": "gemm",
        "backend": GemmBackend::Dfdx.describe(),
        "packed_backend": GemmBackend::Packed.available().then(|| GemmBackend::Packed.describe()),
        "isa": Isa::active().name(),
        "isa_detected": Isa::detected().name(),
        "threads": threads,
        "repeat": a.net.repeat,
        "shapes": rows,
        "kernels": kernels,
        "peak_gflops_1_thread": peaks.one,
        "peak_gflops": peaks.all,
        "peak_gflops_independent": peaks.independent,
        "peak_gflops_packed_1_thread": peaks.packed_one,
        "peak_gflops_packed_independent": peaks.packed_one.map(|p| p * threads as f64),
        "peak_gflops_best": best,
        "fma_peak_gflops_per_core": fma,
        "fma_peak_gflops": peaks.fma_all(),
        "ratio_best_to_fma_peak": peaks.fma_all().map(|f| best / f),
    }))
}

fn print_human(v: &Value) {
    let f = |key: &str| v[key]["median"].as_f64().unwrap_or(f64::NAN);
    let range = |key: &str| {
        format!(
            "{:.1} (min {:.1}, max {:.1})",
            f(key),
            v[key]["min"].as_f64().unwrap_or(f64::NAN),
            v[key]["max"].as_f64().unwrap_or(f64::NAN)
        )
    };
    let threads = match v["threads"].as_u64() {
        Some(1) => "1 thread".to_string(),
        Some(n) => format!("{n} threads"),
        None => "? threads".to_string(),
    };
    match v["bench"].as_str() {
        Some("gemm") => {
            println!(
                "f32 GEMM via {} ({threads}, median of {}):",
                v["backend"].as_str().unwrap_or("?"),
                v["repeat"]
            );
            for s in v["shapes"].as_array().into_iter().flatten() {
                println!(
                    "  {:>5} × {:>4} @ {:>4} × {:>4}: {:>7.1} GFLOP/s on 1 thread, {:>7.1} on all; \
                     packed kernel {:>7.1} on 1 thread",
                    s["m"],
                    s["k"],
                    s["k"],
                    s["n"],
                    s["gflops_1_thread"]["median"].as_f64().unwrap_or(f64::NAN),
                    s["gflops_all_threads"]["median"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    s["gflops_packed_1_thread"]["median"]
                        .as_f64()
                        .unwrap_or(f64::NAN)
                );
            }
            println!(
                "peak: {:.1} GFLOP/s on 1 thread, {:.1} with all threads on one product, \
                 {:.1} with each thread on its own",
                v["peak_gflops_1_thread"].as_f64().unwrap_or(f64::NAN),
                v["peak_gflops"].as_f64().unwrap_or(f64::NAN),
                v["peak_gflops_independent"].as_f64().unwrap_or(f64::NAN)
            );
            for k in v["kernels"].as_array().into_iter().flatten() {
                println!(
                    "{} ({}): {:.1} GFLOP/s on 1 thread",
                    k["backend"].as_str().unwrap_or("?"),
                    k["isa"].as_str().unwrap_or("?"),
                    k["peak_gflops_1_thread"].as_f64().unwrap_or(f64::NAN)
                );
            }
            for (isa, st) in v["fma_peak_gflops_per_core"]
                .as_object()
                .into_iter()
                .flatten()
            {
                println!(
                    "FMA loop ({isa}): {:.1} GFLOP/s per core",
                    st["median"].as_f64().unwrap_or(f64::NAN)
                );
            }
            println!(
                "best peak (what train and eval compare to): {:.1} GFLOP/s with the {} kernels, \
                 {:.0} % of the FMA ceiling of {:.1}",
                v["peak_gflops_best"].as_f64().unwrap_or(f64::NAN),
                v["isa"].as_str().unwrap_or("?"),
                100.0 * v["ratio_best_to_fma_peak"].as_f64().unwrap_or(f64::NAN),
                v["fma_peak_gflops"].as_f64().unwrap_or(f64::NAN)
            );
        }
        Some(what) => {
            println!(
                "{what}: {} images/s, {} GFLOP/s ({:.0} % of the {:.1} GFLOP/s GEMM peak), \
                 {threads}",
                range("images_per_s"),
                range("gflops"),
                100.0 * v["ratio_to_peak"].as_f64().unwrap_or(f64::NAN),
                v["gemm_peak_gflops"].as_f64().unwrap_or(f64::NAN),
            );
            if let Some(fast) = v["fast_path"].as_bool() {
                println!(
                    "{} path",
                    if fast {
                        "fast f32"
                    } else {
                        "generic dfdx-tape"
                    }
                );
            }
            if let Some(s) = v["test_set_10000_seconds"].as_f64() {
                println!(
                    "a 10 000-image test NLL at k = {} takes about {s:.0} s",
                    v["k"]
                );
            }
        }
        None => println!("{v}"),
    }
}
