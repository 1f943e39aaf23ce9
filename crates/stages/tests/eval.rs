//! The eval stage through the engine, on the embedded MNIST subset.
//!
//! * A briefly trained model (data → train → prior with a K = 3 mixture → eval): every artifact
//!   of docs/artifacts.md (`eval/`) with its columns and keys, both variants evaluated on the
//!   same images, and an L_k curve that rises with k beyond its Monte Carlo error
//!   (Burda et al. 2016, Theorem 1) and meets the test NLL at k = eval.k (shared samples).
//! * Re-running the stage gives byte-identical tables (determinism).
//! * A Bernoulli likelihood on non-binary test data (`binarize = "none"`) is flagged in
//!   `metrics.json`'s `note` (the "NLL" is a cross-entropy); one image has no standard error.
//! * A truncated model file, a model whose tensors do not match its configuration and a
//!   truncated prior file each fail the stage with an error naming the file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use vaepipe_engine::{
    Context, NoEvents, Outcome, Point, Registry, RunOptions, RunReport, Stage, StageError, Store,
    execute, explain, pick, plan,
};
use vaepipe_nn::Vae;
use vaepipe_spec::ModelSection;
use vaepipe_stages::artifacts::{ModelConfig, PriorInfo, save_model, save_prior};
use vaepipe_stages::{DataStage, EvalStage};

const IMAGES: usize = 150;
const CURVE_IMAGES: usize = 60;

fn spec_text(prior: &str) -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-subset");
    let f = |name: &str| data.join(name).display().to_string();
    format!(
        r#"
[pipeline]
name = "eval-test"
seed = 3
[data]
format = "idx"
train = {{ images = "{}", labels = "{}" }}
test = {{ images = "{}", labels = "{}" }}
validation = 500
[model]
encoder = [64]
decoder = [64]
latent = 8
[train]
objective = "iwae"
k = 5
epochs = 2
batch_size = 100
[prior]
{prior}
[eval]
k = 500
images = {IMAGES}
curve_k = [1, 2, 5, 10, 50, 100, 500]
curve_images = {CURVE_IMAGES}
samples = 6
reconstructions = 4
"#,
        f("train-images-idx3-ubyte.gz"),
        f("train-labels-idx1-ubyte.gz"),
        f("t10k-images-idx3-ubyte.gz"),
        f("t10k-labels-idx1-ubyte.gz"),
    )
}

/// The spec's points (with `--set` overrides), as the CLI's `points_of` builds them.
fn points_with(prior: &str, overrides: &[&str]) -> (String, Vec<Point>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let spec = vaepipe_spec::load_str("eval-test.toml", &spec_text(prior), dir, &overrides, dir)
        .unwrap_or_else(|e| panic!("invalid test spec: {e:?}"));
    let points = vaepipe_stages::points_of(&spec);
    (spec.name().to_string(), points)
}

fn run(registry: &Registry, store: &Path, prior: &str, force: &[String]) -> RunReport {
    run_with(registry, store, prior, force, &[])
}

/// [`run`] with `--set` overrides.
fn run_with(
    registry: &Registry,
    store: &Path,
    prior: &str,
    force: &[String],
    overrides: &[&str],
) -> RunReport {
    let (name, points) = points_with(prior, overrides);
    let store = Store::open(store).unwrap();
    let p = plan(registry, &store, &name, points, false).unwrap();
    let decisions = explain(&p, &store, force).unwrap();
    let options = RunOptions {
        jobs: 1,
        tool_version: "test".into(),
        ..Default::default()
    };
    execute(
        registry,
        &store,
        &p,
        &decisions,
        &options,
        &NoEvents,
        &AtomicBool::new(false),
    )
    .unwrap()
}

fn outcome<'a>(report: &'a RunReport, stage: &str) -> (&'a Outcome, &'a Path) {
    let i = report
        .instances
        .iter()
        .find(|i| i.stage == stage)
        .unwrap_or_else(|| panic!("no `{stage}` instance"));
    (&i.outcome, &i.dir)
}

const MOG: &str = "method = \"mog\"\ncomponents = 3\nsteps = 20\nsamples = 2000";

/// The shared store: the real pipeline (without the report) run once.
fn pipeline() -> &'static (tempfile::TempDir, PathBuf) {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let report = run(&vaepipe_stages::registry(), tmp.path(), MOG, &[]);
        for stage in ["data", "train", "prior", "eval"] {
            let (o, _) = outcome(&report, stage);
            assert!(matches!(o, Outcome::Ran), "{stage}: {o:?}");
        }
        let dir = outcome(&report, "eval").1.to_path_buf();
        (tmp, dir)
    })
}

/// The single output directory of `stage` in the store that holds `eval_dir`.
fn stage_dir(eval_dir: &Path, stage: &str) -> PathBuf {
    let dir = eval_dir.parent().unwrap().parent().unwrap().join(stage);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{}", dir.display());
    entries.pop().unwrap()
}

fn table(path: &Path) -> vaepipe_data::Table {
    vaepipe_data::read_table(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v:#}"))
}

#[test]
fn eval_writes_every_documented_artifact() {
    let (_, dir) = pipeline();
    let listed: Value = vaepipe_stages::read_json(&dir.join("variants.json")).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["standard", "refit"]);
    let test = vaepipe_stages::artifacts::read_split(&stage_dir(dir, "data"), "test").unwrap();
    let mut nll_by_variant = Vec::new();
    for v in listed.as_array().unwrap() {
        assert_eq!(v["directory"], v["name"]);
        let vdir = dir.join(v["directory"].as_str().unwrap());
        let m: Value = vaepipe_stages::read_json(&vdir.join("metrics.json")).unwrap();
        for key in [
            "test_nll",
            "test_nll_stderr",
            "eval_k",
            "elbo",
            "kl",
            "recon",
            "active_units",
            "images",
            "objective",
            "k",
            "estimator",
            "prior",
            "variant",
            "point",
            "point_id",
            "seconds",
        ] {
            assert!(m.get(key).is_some(), "metrics.json lacks `{key}`: {m:#}");
        }
        assert_eq!(m["eval_k"], 500);
        assert_eq!(m["images"], IMAGES);
        assert_eq!(m["objective"], "iwae");
        assert_eq!(m["k"], 5);
        assert_eq!(m["variant"], v["name"]);
        assert_eq!(m["point_id"], "base");
        let nll = f(&m, "test_nll");
        // A briefly trained 8-unit model: far from the paper's 85 nats, far from chance (543).
        assert!(nll > 60.0 && nll < 250.0, "test NLL {nll}");
        assert!(f(&m, "test_nll_stderr") > 0.0);
        // NLL ≤ −ELBO (L_500 ≥ L_1 on average), and ELBO = recon − KL.
        assert!(nll < -f(&m, "elbo"), "{m:#}");
        assert!((f(&m, "elbo") - (f(&m, "recon") - f(&m, "kl"))).abs() < 1e-6);
        assert!(f(&m, "kl") > 0.0);

        let per = table(&vdir.join("per_image.parquet"));
        assert_eq!(per.rows(), IMAGES);
        let idx = per.i64("index").unwrap();
        let labels = per.i64("label").unwrap();
        for i in 0..IMAGES {
            assert_eq!(idx[i], test.index[i] as i64);
            assert_eq!(labels[i], test.labels.as_ref().unwrap()[i]);
        }
        let nlls = per.f64("nll").unwrap();
        let mean = nlls.iter().sum::<f64>() / IMAGES as f64;
        assert!((mean - nll).abs() < 1e-9);
        for col in ["elbo", "kl", "recon"] {
            assert!(per.f64(col).unwrap().iter().all(|v| v.is_finite()));
        }
        nll_by_variant.push(nlls.to_vec());

        let units = table(&vdir.join("units.parquet"));
        assert_eq!(units.rows(), 8);
        let active = units.bool("active").unwrap().iter().filter(|a| **a).count();
        assert_eq!(m["active_units"], active);
        for (var, a) in units
            .f64("variance")
            .unwrap()
            .iter()
            .zip(units.bool("active").unwrap())
        {
            assert_eq!(*a, *var > 0.01);
        }

        let samples = table(&vdir.join("samples.parquet"));
        assert_eq!(samples.rows(), 6);
        assert_eq!(samples.names().len(), 1 + 784);
        let p = samples.f64("p0783").unwrap();
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));

        let rec = table(&vdir.join("reconstructions.parquet"));
        assert_eq!(rec.rows(), 8);
        assert_eq!(
            rec.str("kind").unwrap()[..2],
            ["original".to_string(), "reconstruction".to_string()]
        );
        assert_eq!(rec.i64("index").unwrap()[0], test.index[0] as i64);
        // Originals are the evaluated (binarized) images.
        assert!(
            rec.f64("p0300")
                .unwrap()
                .iter()
                .step_by(2)
                .all(|v| *v == 0.0 || *v == 1.0)
        );

        let lat = table(&vdir.join("latents.parquet"));
        assert_eq!(lat.rows(), IMAGES);
        let x = lat.f64("x").unwrap();
        let y = lat.f64("y").unwrap();
        let var = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            v.iter().map(|a| (a - m).powi(2)).sum::<f64>()
        };
        assert!(var(x) >= var(y) && var(y) > 0.0, "PCA order");
    }
    // Both variants were evaluated on the same images; the refit prior changes the numbers.
    assert_eq!(nll_by_variant[0].len(), nll_by_variant[1].len());
    assert_ne!(nll_by_variant[0], nll_by_variant[1]);
    // The refit variant is compared with the first one on the same images and noise: the
    // paired difference is the difference of the means, and far more precise than either.
    let m: Value = vaepipe_stages::read_json(&dir.join("refit/metrics.json")).unwrap();
    let first: Value = vaepipe_stages::read_json(&dir.join("standard/metrics.json")).unwrap();
    assert!(first.get("paired_with").is_none());
    assert_eq!(m["paired_with"], "standard");
    assert_eq!(m["paired_images"], IMAGES);
    let diff = f(&m, "paired_nll_difference");
    assert!((diff - (f(&m, "test_nll") - f(&first, "test_nll"))).abs() < 1e-9);
    let se = f(&m, "paired_nll_difference_stderr");
    assert!(
        se > 0.0 && se < 0.25 * f(&first, "test_nll_stderr"),
        "paired stderr {se}"
    );
    // A K = 3 mixture is cheap: every requested image is evaluated.
    assert_eq!(m["prior_components"], 3);
    assert_eq!(m["images_requested"], IMAGES);
    assert!(m.get("note").is_none());
}

#[test]
fn lk_curve_rises_with_k_beyond_monte_carlo_error() {
    let (_, dir) = pipeline();
    for variant in ["standard", "refit"] {
        let vdir = dir.join(variant);
        let t = table(&vdir.join("lk_curve.parquet"));
        let k = t.i64("k").unwrap();
        assert_eq!(k, [1, 2, 5, 10, 50, 100, 500]);
        let bound = t.f64("bound").unwrap();
        let delta = t.f64("delta").unwrap();
        let delta_se = t.f64("delta_stderr").unwrap();
        assert!(
            t.i64("images")
                .unwrap()
                .iter()
                .all(|&n| n == CURVE_IMAGES as i64)
        );
        for i in 1..k.len() {
            assert!(
                delta[i] > -3.0 * delta_se[i],
                "{variant}: L_{} − L_{} = {} ± {}",
                k[i],
                k[i - 1],
                delta[i],
                delta_se[i]
            );
            assert!((bound[i] - bound[i - 1] - delta[i]).abs() < 1e-9);
        }
        // Strictly better at k = 500 than at k = 1, by far more than the MC error (L_2 − L_1
        // alone by five paired standard errors: a one-sided p-value below 3·10⁻⁷).
        let gain: f64 = delta[1..].iter().sum();
        assert!(
            gain > 1.0 && delta[1] > 5.0 * delta_se[1],
            "{variant}: gain {gain}; L_2 − L_1 = {} ± {}",
            delta[1],
            delta_se[1]
        );
        // Shared samples: at k = eval.k the curve is the mean NLL of the same first images.
        let nll = table(&vdir.join("per_image.parquet"));
        let first: f64 =
            nll.f64("nll").unwrap()[..CURVE_IMAGES].iter().sum::<f64>() / CURVE_IMAGES as f64;
        assert!((bound[k.len() - 1] + first).abs() < 1e-9);
    }
}

#[test]
fn rerunning_eval_gives_identical_tables() {
    let (tmp, dir) = pipeline();
    let before: Vec<(String, Vec<u8>)> = ["standard", "refit"]
        .iter()
        .flat_map(|v| {
            [
                "per_image.parquet",
                "lk_curve.parquet",
                "units.parquet",
                "latents.parquet",
            ]
            .map(|f| {
                (
                    format!("{v}/{f}"),
                    std::fs::read(dir.join(v).join(f)).unwrap(),
                )
            })
        })
        .collect();
    let metrics: Value = vaepipe_stages::read_json(&dir.join("standard/metrics.json")).unwrap();
    let report = run(
        &vaepipe_stages::registry(),
        tmp.path(),
        MOG,
        &["eval".into()],
    );
    let (o, again) = outcome(&report, "eval");
    assert!(matches!(o, Outcome::Ran), "{o:?}");
    assert_eq!(again, dir.as_path());
    for (file, bytes) in before {
        assert!(
            std::fs::read(again.join(&file)).unwrap() == bytes,
            "{file} changed"
        );
    }
    let m2: Value = vaepipe_stages::read_json(&again.join("standard/metrics.json")).unwrap();
    assert_eq!(metrics["test_nll"], m2["test_nll"]);
}

/// A stand-in train stage that writes a damaged checkpoint (and a valid train.json).
struct DamagedTrain(&'static str);

impl Stage for DamagedTrain {
    fn name(&self) -> &'static str {
        "train"
    }
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> &'static [&'static str] {
        &["data"]
    }
    fn params(&self, point: &Value) -> Value {
        pick(point, &["model", "train"])
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        let model: ModelSection = serde_json::from_value(ctx.params["model"].clone()).unwrap();
        let config = ModelConfig {
            input_dim: 784,
            model,
        };
        let path = ctx.out.join("model.safetensors");
        let vae = Vae::new(&config.vae_config(), 1).map_err(anyhow::Error::from)?;
        match self.0 {
            "truncated" => {
                save_model(&path, &vae, &config)?;
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }
            "shapes" => {
                // Tensors of a 6-unit latent under metadata that says 8 units.
                let mut other = config.clone();
                other.model.latent = 6;
                let small = Vae::new(&other.vae_config(), 1).map_err(anyhow::Error::from)?;
                save_model(&path, &small, &config)?;
                let (tensors, _) = vaepipe_nn::load_safetensors(&path).unwrap();
                let meta = [(
                    "vaepipe.model".to_string(),
                    serde_json::to_string(&config).unwrap(),
                )]
                .into_iter()
                .collect();
                vaepipe_nn::save_safetensors(&path, &tensors, &meta).unwrap();
            }
            _ => save_model(&path, &vae, &config)?,
        }
        let summary = json!({"objective": "iwae", "k": 5, "estimator": "reparam"});
        vaepipe_stages::write_json(&ctx.out.join("train.json"), &summary)?;
        Ok(())
    }
}

/// A stand-in prior stage: the standard variant plus a mixture prior (truncated if asked).
struct FakePrior(bool);

impl Stage for FakePrior {
    fn name(&self) -> &'static str {
        "prior"
    }
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> &'static [&'static str] {
        &["data", "train"]
    }
    fn params(&self, point: &Value) -> Value {
        pick(point, &["prior"])
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        let path = ctx.out.join("prior.safetensors");
        let prior = vaepipe_nn::Prior::mixture(2, 8, vec![0.0; 2], vec![0.5; 16], vec![0.0; 16])
            .map_err(anyhow::Error::from)?;
        let info = PriorInfo {
            kind: "mixture".into(),
            components: 2,
            method: "mog".into(),
            subset: 0,
            seed: 0,
        };
        save_prior(&path, &prior, &info)?;
        if self.0 {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        }
        let variants = json!([
            {"name": "standard", "label": "N(0, I)", "model_stage": "train",
             "model_file": "model.safetensors", "prior_file": null},
            {"name": "refit", "label": "MoG", "model_stage": "train",
             "model_file": "model.safetensors", "prior_file": "prior.safetensors"},
        ]);
        vaepipe_stages::write_json(&ctx.out.join("variants.json"), &variants)?;
        Ok(())
    }
}

fn eval_failure(train: &'static str, prior_truncated: bool) -> String {
    let mut r = Registry::new();
    r.register(Box::new(DataStage)).unwrap();
    r.register(Box::new(DamagedTrain(train))).unwrap();
    r.register(Box::new(FakePrior(prior_truncated))).unwrap();
    r.register(Box::new(EvalStage)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let report = run(&r, tmp.path(), MOG, &[]);
    match outcome(&report, "eval").0 {
        Outcome::Failed(msg) => {
            println!("{train}, prior truncated {prior_truncated}: {msg}");
            msg.clone()
        }
        other => panic!("eval with a damaged input ({train}, {prior_truncated}): {other:?}"),
    }
}

#[test]
fn damaged_checkpoints_fail_with_the_file_named() {
    let msg = eval_failure("truncated", false);
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "truncated model: {msg}"
    );
    let msg = eval_failure("shapes", false);
    assert!(
        msg.contains("model.safetensors") && msg.contains("expected shape"),
        "mismatched model: {msg}"
    );
    let msg = eval_failure("valid", true);
    assert!(
        msg.contains("prior.safetensors") && msg.contains("refit"),
        "truncated prior: {msg}"
    );
}

#[test]
fn a_bernoulli_likelihood_on_intensities_is_flagged_as_a_cross_entropy() {
    // Intensities in [0, 1] (no binarization) under the Bernoulli likelihood; one image.
    let tmp = tempfile::tempdir().unwrap();
    let prior = "method = \"mog\"\ncomponents = 2\nsteps = 5\nsamples = 500";
    let report = run_with(
        &vaepipe_stages::registry(),
        tmp.path(),
        prior,
        &[],
        &[
            "data.binarize=\"none\"",
            "data.train_rows=600",
            "data.validation=100",
            "data.test_rows=20",
            "train.epochs=1",
            "eval.images=1",
            "eval.k=50",
            "eval.curve_k=[1, 50]",
        ],
    );
    let (o, dir) = outcome(&report, "eval");
    assert!(matches!(o, Outcome::Ran), "eval: {o:?}");
    for variant in ["standard", "refit"] {
        let m: Value = vaepipe_stages::read_json(&dir.join(variant).join("metrics.json")).unwrap();
        let note = m["note"]
            .as_str()
            .unwrap_or_else(|| panic!("{variant}: no note in {m:#}"));
        assert!(
            note.contains("Bernoulli likelihood") && note.contains("cross-entropy"),
            "{variant}: {note}"
        );
        assert_eq!(m["binarize"], "none");
        assert_eq!(m["images"], 1);
        assert!(f(&m, "test_nll").is_finite());
        // One image: the spread between images is unknown (null), not zero.
        assert!(m["test_nll_stderr"].is_null(), "{variant}: {m:#}");
    }
    let m: Value = vaepipe_stages::read_json(&dir.join("refit/metrics.json")).unwrap();
    assert_eq!(m["paired_images"], 1);
    assert!(f(&m, "paired_nll_difference").is_finite());
    assert!(m["paired_nll_difference_stderr"].is_null(), "{m:#}");
}
