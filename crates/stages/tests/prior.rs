//! The prior-refit stage and the science it rests on.
//!
//! * With encoder and decoder fixed, the exact aggregate posterior of the training rows gives a
//!   higher average ELBO on those rows than N(0, I) and than an EM-fitted mixture (and the
//!   mixture beats N(0, I)), by many paired standard errors (Hoffman & Johnson 2016).
//! * A VampPrior whose pseudo-inputs are the training rows, written and read back as a prior
//!   artifact, has the aggregate posterior's log-density (Tomczak & Welling 2018; the in-memory
//!   identity is `vamp_with_data_pseudo_inputs_equals_aggregate_posterior` in vaepipe-nn).
//! * Run through the engine on a tiny pipeline, every refit (mog/em, mog/gradient, vamp,
//!   aggregate posterior, standard normal) never lowers its objective, writes artifacts that
//!   load back, fine-tunes when asked, measures the ELBO gain of the exact aggregate posterior
//!   as KL(q_agg ‖ N(0, I)) (the ELBO-surgery identity), and is deterministic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use vaepipe_engine::{NoEvents, Outcome, Point, RunOptions, Store, execute, explain, plan};
use vaepipe_nn::{
    AdamHyper, MeanStderr, Objective, Prior, PriorKind, Trainable, Trainer, Vae, VaeConfig,
    em_step, log_weights_with_noise, standard_normal_noise, stream_rng,
};
use vaepipe_stages::artifacts::{PriorInfo, Variant, load_model, load_prior, save_prior};

fn subset_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist-subset")
        .join(name)
}

/// The first `n` training images of the embedded subset, in [0, 1], binarized at 0.5.
fn mnist_rows(n: usize) -> Vec<f32> {
    let ds = vaepipe_data::read_idx(&subset_file("train-images-idx3-ubyte.gz"), None).unwrap();
    ds.x[..n * ds.features]
        .iter()
        .map(|v| if *v > 127.5 { 1.0 } else { 0.0 })
        .collect()
}

const N: usize = 2000;

/// A small VAE (784-100-10) trained for 3 epochs on the first 2000 images (shared by tests).
fn trained() -> &'static (Vae, Vec<f32>) {
    static MODEL: OnceLock<(Vae, Vec<f32>)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let x = mnist_rows(N);
        let cfg = VaeConfig {
            input_dim: 784,
            encoder_hidden: vec![100],
            latent_dim: 10,
            decoder_hidden: vec![100],
            activation: vaepipe_nn::Activation::Tanh,
            likelihood: vaepipe_nn::Likelihood::Bernoulli,
            posterior_std: vaepipe_nn::PosteriorStd::Exp,
        };
        let vae = Vae::new(&cfg, 1).unwrap();
        let mut trainer = Trainer::new(
            vae,
            Prior::StandardNormal,
            Objective::elbo(),
            AdamHyper::default(),
            Trainable::MODEL,
        )
        .unwrap();
        let batch = 50;
        let mut step = 0u64;
        for _epoch in 0..3 {
            for b in 0..N / batch {
                let xb = &x[b * batch * 784..(b + 1) * batch * 784];
                trainer.step(xb, batch, &mut stream_rng(7, step)).unwrap();
                step += 1;
            }
        }
        (trainer.into_parts().0, x)
    })
}

/// Per-row k-sample ELBO (mean of log w) at fixed noise.
fn elbo_rows(vae: &Vae, prior: &Prior, x: &[f32], n: usize, k: usize, eps: &[f32]) -> Vec<f64> {
    let lw = log_weights_with_noise(vae, prior, x, n, k, eps).unwrap();
    lw.chunks(k)
        .map(|r| r.iter().map(|v| *v as f64).sum::<f64>() / k as f64)
        .collect()
}

#[test]
fn the_aggregate_posterior_is_the_best_prior_for_the_average_elbo() {
    let (vae, x) = trained();
    let d = vae.config().latent_dim;
    let q_agg = Prior::aggregate_posterior(vae, x).unwrap();
    // A K = 10 mixture fitted by EM to 20 000 draws from q_agg.
    let init = Prior::mixture_init(vae, x, N, 10, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
    let draws = q_agg
        .sample(vae, 20_000, &mut ChaCha8Rng::seed_from_u64(3))
        .unwrap();
    let z: Vec<f64> = draws.iter().map(|v| *v as f64).collect();
    let mut mog: Prior<f64> = init.cast().unwrap();
    for _ in 0..100 {
        mog = em_step(&mog, &z, 20_000, 1e-3).unwrap().prior;
    }
    let mog: Prior = mog.cast().unwrap();

    // The same rows whose posteriors make up q_agg, the same noise under every prior.
    let k = 4;
    let eps: Vec<f32> = standard_normal_noise(&mut stream_rng(11, 0), N * k * d);
    let std = elbo_rows(vae, &Prior::StandardNormal, x, N, k, &eps);
    let agg = elbo_rows(vae, &q_agg, x, N, k, &eps);
    let fit = elbo_rows(vae, &mog, x, N, k, &eps);
    let gain = |a: &[f64], b: &[f64]| MeanStderr::paired_difference(a, b).unwrap();
    for (what, g) in [
        ("q_agg over N(0, I)", gain(&agg, &std)),
        ("q_agg over the MoG", gain(&agg, &fit)),
        ("the MoG over N(0, I)", gain(&fit, &std)),
    ] {
        eprintln!("{what}: ELBO gain {:.4} ± {:.4} nats", g.mean, g.stderr);
        assert!(
            g.mean > 5.0 * g.stderr && g.mean > 0.0,
            "{what}: ELBO gain {:.4} ± {:.4} nats",
            g.mean,
            g.stderr
        );
    }
}

#[test]
fn a_vamp_prior_on_the_training_rows_read_back_from_disk_is_the_aggregate_posterior() {
    let (vae, x) = trained();
    let n = 300;
    let x = &x[..n * 784];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prior.safetensors");
    let info = PriorInfo {
        kind: "vamp".into(),
        components: n,
        method: "vamp".into(),
        subset: 0,
        seed: 0,
    };
    save_prior(&path, &Prior::vamp(n, 784, x.to_vec()).unwrap(), &info).unwrap();
    let (vamp, read_info) = load_prior(&path, vae.config()).unwrap();
    assert_eq!(read_info, info);
    assert_eq!(vamp.kind(), PriorKind::Vamp { components: n });
    let q_agg = Prior::aggregate_posterior(vae, x).unwrap();
    // Points where q_agg has its mass, and far away.
    let mut z = q_agg
        .sample(vae, 200, &mut ChaCha8Rng::seed_from_u64(5))
        .unwrap();
    z.extend(
        standard_normal_noise::<f32, _>(&mut stream_rng(6, 0), 50 * 10)
            .iter()
            .map(|v| 3.0 * v),
    );
    let a = q_agg.log_density(vae, &z, 250).unwrap();
    let b = vamp.log_density(vae, &z, 250).unwrap();
    for (i, (u, v)) in a.iter().zip(&b).enumerate() {
        assert!(
            (u - v).abs() <= 1e-6 * u.abs().max(1.0),
            "draw {i}: q_agg {u} vs VampPrior {v}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The stage, through the engine.

/// A tiny pipeline: 500 training rows (dynamic binarization), one epoch of a 784-50-5 model.
fn spec_text(prior: &str) -> String {
    let f = |name: &str| subset_file(name).display().to_string();
    format!(
        r#"
[pipeline]
name = "prior-test"
seed = 3
[data]
format = "idx"
train = {{ images = "{}", labels = "{}" }}
test = {{ images = "{}", labels = "{}" }}
train_rows = 600
test_rows = 300
validation = 100
[model]
latent = 5
encoder = [50]
decoder = [50]
[train]
objective = "iwae"
k = 3
epochs = 1
batch_size = 50
[prior]
{prior}
"#,
        f("train-images-idx3-ubyte.gz"),
        f("train-labels-idx1-ubyte.gz"),
        f("t10k-images-idx3-ubyte.gz"),
        f("t10k-labels-idx1-ubyte.gz"),
    )
}

/// Runs data → train → prior for the spec in `store`; returns the prior stage's outcome and
/// output directory (the data and train stages must succeed).
fn run_prior(store: &Path, prior: &str) -> (Outcome, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = vaepipe_spec::load_str("prior-test.toml", &spec_text(prior), dir, &[], dir)
        .unwrap_or_else(|e| panic!("invalid test spec: {e:?}"));
    // As the CLI's `points_of`: the resolved spec plus `point`.
    let points: Vec<Point> = spec
        .runs
        .iter()
        .map(|r| {
            let mut config = serde_json::to_value(&r.config).unwrap();
            config.as_object_mut().unwrap().insert(
                "point".into(),
                json!({"id": r.id, "label": r.label, "values": r.assignments}),
            );
            Point {
                index: r.index,
                id: r.id.clone(),
                label: r.label.clone(),
                config,
            }
        })
        .collect();
    let registry = vaepipe_stages::registry();
    let store = Store::open(store).unwrap();
    let p = plan(&registry, &store, spec.name(), points, false).unwrap();
    let decisions = explain(&p, &store, &[]).unwrap();
    let options = RunOptions {
        jobs: 1,
        tool_version: "test".into(),
        only_stages: Some(vec!["data".into(), "train".into(), "prior".into()]),
        ..Default::default()
    };
    let report = execute(
        &registry,
        &store,
        &p,
        &decisions,
        &options,
        &NoEvents,
        &AtomicBool::new(false),
    )
    .unwrap();
    let mut prior_outcome = None;
    for inst in &report.instances {
        match inst.stage.as_str() {
            "data" | "train" => assert!(
                matches!(inst.outcome, Outcome::Ran | Outcome::Cached),
                "{} stage: {:?}",
                inst.stage,
                inst.outcome
            ),
            "prior" => prior_outcome = Some((inst.outcome.clone(), inst.dir.clone())),
            _ => {}
        }
    }
    prior_outcome.expect("the plan has a prior stage")
}

/// Runs the pipeline and insists that the prior stage succeeded; returns its directory and refit.json.
fn refit_ok(store: &Path, prior: &str) -> (PathBuf, Value) {
    let (outcome, dir) = run_prior(store, prior);
    assert!(
        matches!(outcome, Outcome::Ran | Outcome::Cached),
        "prior stage: {outcome:?}"
    );
    let refit: Value = vaepipe_stages::read_json(&dir.join("refit.json")).unwrap();
    (dir, refit)
}

fn variants(dir: &Path) -> Vec<Variant> {
    vaepipe_stages::read_json(&dir.join("variants.json")).unwrap()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

/// The model of the train stage that fed `prior_dir` (the store has one).
fn model_config(prior_dir: &Path) -> VaeConfig {
    let train_dir = prior_dir.parent().unwrap().parent().unwrap().join("train");
    let key = std::fs::read_dir(&train_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    load_model(&key.join("model.safetensors"))
        .unwrap()
        .1
        .vae_config()
}

/// Checks what every refit that produced a prior writes, and returns the loaded prior.
fn check_refit_artifacts(dir: &Path, refit: &Value, kind: PriorKind) -> Prior {
    assert!(
        f(refit, "objective_after") >= f(refit, "objective_before"),
        "the refit lowered its objective: {refit:#}"
    );
    let (prior, info) = load_prior(&dir.join("prior.safetensors"), &model_config(dir)).unwrap();
    assert_eq!(prior.kind(), kind);
    assert_eq!(info.method, refit["method"].as_str().unwrap());
    let v = variants(dir);
    assert_eq!(v[0].name, "standard");
    assert_eq!(v[0].prior_file, None);
    assert_eq!(v[1].name, "refit");
    assert_eq!(v[1].prior_file.as_deref(), Some("prior.safetensors"));
    assert_eq!(v[1].model_stage, "train");
    // Measurements of both splits, with their standard errors.
    let table = vaepipe_data::read_table(&dir.join("refit.parquet")).unwrap();
    assert_eq!(
        table.rows(),
        2 * 2 * 2 + 2,
        "split × prior × {{elbo, lk}} + 2 KL rows"
    );
    assert!(
        table
            .f64("stderr")
            .unwrap()
            .iter()
            .all(|s| s.is_finite() && *s >= 0.0)
    );
    for split in ["train", "test"] {
        assert_eq!(
            refit[split]["images"],
            if split == "train" { 500 } else { 300 }
        );
    }
    let samples = vaepipe_data::read_table(&dir.join("latent_samples.parquet")).unwrap();
    let sources = samples.str("source").unwrap();
    for s in ["standard normal", "refit prior", "aggregate posterior"] {
        assert_eq!(sources.iter().filter(|x| *x == s).count(), 2000, "{s}");
    }
    prior
}

#[test]
fn mog_em_never_lowers_its_objective_and_finetunes_under_the_new_prior() {
    let store = tempfile::tempdir().unwrap();
    let (dir, refit) = refit_ok(
        store.path(),
        "method = \"mog\"\ncomponents = 5\nsteps = 30\nsamples = 3000\nthen = \"finetune\"\nfinetune_epochs = 2",
    );
    check_refit_artifacts(&dir, &refit, PriorKind::Mixture { components: 5 });
    assert_eq!(refit["fit"], "em");
    let v = variants(&dir);
    assert_eq!(v.len(), 3);
    assert_eq!(v[2].name, "finetuned");
    assert_eq!(v[2].model_stage, "prior");
    assert_eq!(v[2].prior_file.as_deref(), Some("prior.safetensors"));
    let (tuned, cfg) = load_model(&dir.join(&v[2].model_file)).unwrap();
    assert_eq!(cfg.vae_config(), model_config(&dir));
    let history = vaepipe_data::read_table(&dir.join("finetune_history.parquet")).unwrap();
    assert_eq!(history.rows(), 2);
    assert!(
        history
            .f64("validation_bound")
            .unwrap()
            .iter()
            .all(|b| b.is_finite() && *b < 0.0)
    );
    // Fine-tuning changed the model.
    let train_dir = dir.parent().unwrap().parent().unwrap().join("train");
    let key = std::fs::read_dir(&train_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (original, _) = load_model(&key.join("model.safetensors")).unwrap();
    assert_ne!(
        original.named_tensors()[0].data,
        tuned.named_tensors()[0].data
    );
    assert_eq!(refit["finetune"]["epochs_run"], 2);
}

#[test]
fn mog_gradient_never_lowers_its_objective_and_is_deterministic() {
    let prior = "method = \"mog\"\nfit = \"gradient\"\ncomponents = 5\nsteps = 30\nlr = 0.05";
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (dir, refit) = refit_ok(a.path(), prior);
    check_refit_artifacts(&dir, &refit, PriorKind::Mixture { components: 5 });
    assert_eq!(refit["fit"], "gradient");
    assert!(!dir.join("finetuned.safetensors").exists());
    // A second store computes the same bytes and the same measurements.
    let (dir2, mut refit2) = refit_ok(b.path(), prior);
    for file in [
        "prior.safetensors",
        "refit.parquet",
        "latent_samples.parquet",
        "variants.json",
    ] {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(dir2.join(file)).unwrap(),
            "{file}"
        );
    }
    let mut refit = refit;
    for r in [&mut refit, &mut refit2] {
        let m = r.as_object_mut().unwrap();
        for timing in ["seconds", "refit_seconds", "encode_seconds"] {
            m.remove(timing);
        }
    }
    assert_eq!(refit, refit2);
}

#[test]
fn vamp_never_lowers_its_objective() {
    for init in ["data", "random"] {
        let store = tempfile::tempdir().unwrap();
        let (dir, refit) = refit_ok(
            store.path(),
            &format!("method = \"vamp\"\ncomponents = 8\nsteps = 30\ninit = \"{init}\""),
        );
        check_refit_artifacts(&dir, &refit, PriorKind::Vamp { components: 8 });
    }
}

#[test]
fn the_exact_aggregate_posterior_gains_its_kl_from_the_standard_normal() {
    let store = tempfile::tempdir().unwrap();
    let (dir, refit) = refit_ok(store.path(), "method = \"aggregate-posterior\"");
    check_refit_artifacts(&dir, &refit, PriorKind::Mixture { components: 500 });
    assert_eq!(refit["components"], 500);
    assert_eq!(
        f(&refit, "kl_qagg_refit"),
        0.0,
        "the refit prior is q_agg itself"
    );
    // ELBO surgery: averaged over the rows that make up q_agg (all 500 training rows are
    // measured), the ELBO gain of q_agg over N(0, I) is KL(q_agg ‖ N(0, I)); the two are
    // estimated from independent draws.
    let train = &refit["train"];
    let (gain, gain_se) = (f(train, "elbo_gain"), f(train, "elbo_gain_stderr"));
    let (kl, kl_se) = (
        f(&refit, "kl_qagg_standard"),
        f(&refit, "kl_qagg_standard_stderr"),
    );
    assert!(gain > 5.0 * gain_se, "ELBO gain {gain} ± {gain_se}");
    assert!(
        (gain - kl).abs() < 4.0 * (gain_se * gain_se + kl_se * kl_se).sqrt(),
        "ELBO gain {gain} ± {gain_se} vs KL(q_agg ‖ N(0, I)) {kl} ± {kl_se}"
    );

    // A seeded subset of M posteriors is a different (worse) prior, and says so.
    let (dir, refit) = refit_ok(
        store.path(),
        "method = \"aggregate-posterior\"\nsubset = 100",
    );
    check_refit_artifacts(&dir, &refit, PriorKind::Mixture { components: 100 });
    assert_eq!(refit["subset"], 100);
    let (_, info) = load_prior(&dir.join("prior.safetensors"), &model_config(&dir)).unwrap();
    assert_eq!(info.subset, 100);
    assert!(f(&refit, "kl_qagg_refit") > 0.0);
}

#[test]
fn the_standard_normal_method_refits_nothing() {
    let store = tempfile::tempdir().unwrap();
    let (dir, refit) = refit_ok(store.path(), "method = \"standard-normal\"");
    assert!(!dir.join("prior.safetensors").exists());
    let v = variants(&dir);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].name, "standard");
    assert_eq!(refit["kl_qagg_refit"], refit["kl_qagg_standard"]);
    assert_eq!(refit["train"]["elbo_gain"], 0.0);
    assert!(refit["objective_before"].is_null());
}

#[test]
fn more_components_than_training_rows_is_an_error_naming_the_key() {
    let store = tempfile::tempdir().unwrap();
    let (outcome, _) = run_prior(store.path(), "method = \"mog\"\ncomponents = 501");
    match outcome {
        Outcome::Failed(msg) => assert!(msg.contains("prior.components"), "{msg}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}
