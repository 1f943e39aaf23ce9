//! Active units of the eval stage against an independent computation, on a model whose
//! posterior means are known: a linear encoder with mean_j = w_j · x_{p_j} + b_j for four
//! latent dimensions (two strongly, one weakly dependent on a pixel), constant means for the
//! other four, and σ = 1 everywhere. Cov_x(E_q[z_j]) is computed here from the data stage's
//! test rows and compared with `units.parquet` and `metrics.json`. The variance of one posterior
//! *sample* per image would be about 1 in every dimension (8 active units), so computing active
//! units from samples instead of means fails this test.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use vaepipe_engine::{
    Context, NoEvents, Outcome, Registry, RunOptions, Stage, StageError, Store, execute, explain,
    pick, plan,
};
use vaepipe_nn::Vae;
use vaepipe_spec::ModelSection;
use vaepipe_stages::artifacts::{ModelConfig, save_model};
use vaepipe_stages::{DataStage, EvalStage};

const IMAGES: usize = 200;
const LATENT: usize = 8;
/// (latent dimension, pixel, weight): the means that depend on the data. 0.05 on a binary
/// pixel gives a variance of at most 0.05² / 4 ≈ 6e-4: below the 0.01 threshold.
const DEPENDENT: [(usize, usize, f32); 3] = [(0, 400, 2.0), (2, 435, -1.5), (5, 462, 0.05)];
/// Constant offsets of every mean (the bias of the mean head).
const BIAS: [f32; LATENT] = [0.3, -0.2, 0.1, 0.7, -1.0, 0.0, 0.5, 2.0];

fn spec_text() -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-subset");
    let f = |name: &str| data.join(name).display().to_string();
    format!(
        r#"
[pipeline]
name = "active-units"
seed = 5
[data]
format = "idx"
train = {{ images = "{}", labels = "{}" }}
test = {{ images = "{}", labels = "{}" }}
binarize = "threshold"
train_rows = 200
test_rows = 300
[model]
encoder = []
decoder = [16]
latent = {LATENT}
[eval]
k = 10
images = {IMAGES}
curve_k = [1, 10]
curve_images = 20
samples = 0
reconstructions = 0
"#,
        f("train-images-idx3-ubyte.gz"),
        f("train-labels-idx1-ubyte.gz"),
        f("t10k-images-idx3-ubyte.gz"),
        f("t10k-labels-idx1-ubyte.gz"),
    )
}

/// A stand-in train stage: the linear encoder described above, σ = 1.
struct KnownTrain;

impl Stage for KnownTrain {
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
        let model: ModelSection =
            serde_json::from_value(ctx.params["model"].clone()).map_err(anyhow::Error::from)?;
        let config = ModelConfig {
            input_dim: 784,
            model,
        };
        let cfg = config.vae_config();
        let mut t = Vae::<f32>::new(&cfg, 1)
            .map_err(anyhow::Error::from)?
            .named_tensors();
        for x in t.iter_mut() {
            match x.name.as_str() {
                // [in, out]: weight (i, j) at i · LATENT + j.
                "encoder.mean.weight" => {
                    x.data.iter_mut().for_each(|v| *v = 0.0);
                    for (j, pixel, w) in DEPENDENT {
                        x.data[pixel * LATENT + j] = w;
                    }
                }
                "encoder.mean.bias" => x.data = BIAS.to_vec(),
                "encoder.log_std.weight" | "encoder.log_std.bias" => {
                    x.data.iter_mut().for_each(|v| *v = 0.0)
                }
                _ => {}
            }
        }
        let vae = Vae::from_named_tensors(&cfg, &t).map_err(anyhow::Error::from)?;
        save_model(&ctx.out.join("model.safetensors"), &vae, &config)?;
        let summary = json!({"objective": "elbo", "k": 1, "estimator": "reparam"});
        vaepipe_stages::write_json(&ctx.out.join("train.json"), &summary)?;
        Ok(())
    }
}

/// A stand-in prior stage: only the standard variant (the trained model under N(0, I)).
struct StandardOnly;

impl Stage for StandardOnly {
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
        let variants = json!([{"name": "standard", "label": "N(0, I)", "model_stage": "train",
            "model_file": "model.safetensors", "prior_file": null}]);
        vaepipe_stages::write_json(&ctx.out.join("variants.json"), &variants)?;
        Ok(())
    }
}

#[test]
fn active_units_are_the_variance_of_posterior_means() {
    let mut registry = Registry::new();
    registry.register(Box::new(DataStage)).unwrap();
    registry.register(Box::new(KnownTrain)).unwrap();
    registry.register(Box::new(StandardOnly)).unwrap();
    registry.register(Box::new(EvalStage)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let spec = vaepipe_spec::load_str("au.toml", &spec_text(), dir, &[], dir)
        .unwrap_or_else(|e| panic!("invalid test spec: {e:?}"));
    let store = Store::open(&dir.join("store")).unwrap();
    let p = plan(
        &registry,
        &store,
        spec.name(),
        vaepipe_stages::points_of(&spec),
        false,
    )
    .unwrap();
    let decisions = explain(&p, &store, &[]).unwrap();
    let options = RunOptions {
        jobs: 1,
        tool_version: "test".into(),
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
    let dir_of = |stage: &str| {
        let i = report.instances.iter().find(|i| i.stage == stage).unwrap();
        assert!(
            matches!(i.outcome, Outcome::Ran),
            "{stage}: {:?}",
            i.outcome
        );
        i.dir.clone()
    };
    let (data, eval) = (dir_of("data"), dir_of("eval"));

    // The independent computation: means from the test rows the eval stage evaluates.
    let test = vaepipe_data::read_dataset(&data.join("test.parquet")).unwrap();
    assert!(test.rows >= IMAGES);
    let mut want = vec![0.0f64; LATENT];
    for (j, pixel, w) in DEPENDENT {
        let means: Vec<f64> = (0..IMAGES)
            .map(|r| f64::from(w) * f64::from(test.row(r)[pixel]) + f64::from(BIAS[j]))
            .collect();
        let m = means.iter().sum::<f64>() / IMAGES as f64;
        want[j] = means.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (IMAGES - 1) as f64;
    }
    let want_active: Vec<bool> = want.iter().map(|v| *v > 0.01).collect();
    // The data make the dependent dimensions informative: both strong pixels vary.
    assert!(
        want[0] > 0.1 && want[2] > 0.1,
        "pixels 400/435 vary: {want:?}"
    );
    assert!(want[5] > 0.0 && want[5] < 0.01, "weak dimension: {want:?}");
    assert_eq!(want_active.iter().filter(|a| **a).count(), 2);

    let units = vaepipe_data::read_table(&eval.join("standard/units.parquet")).unwrap();
    let got = units.f64("variance").unwrap();
    let active = units.bool("active").unwrap();
    assert_eq!(got.len(), LATENT);
    for j in 0..LATENT {
        assert!(
            (got[j] - want[j]).abs() <= 1e-5 * want[j].max(1e-3),
            "dimension {j}: variance {} vs Cov_x(E_q[z_j]) = {} (all: {got:?})",
            got[j],
            want[j]
        );
        assert_eq!(active[j], want_active[j], "dimension {j}");
    }
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(eval.join("standard/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["active_units"], 2, "{metrics:#}");
}
