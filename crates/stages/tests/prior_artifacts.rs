//! The prior stage's JSON files read into their types (vaepipe_stages::artifacts): a tiny
//! data → train → prior pipeline (the real stages) for a fitted prior with fine-tuning and for
//! the standard normal; every key of `refit.json` and `variants.json` is a field of the type
//! (writing the typed value back gives the same JSON value, nulls included).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use vaepipe_engine::{NoEvents, Outcome, RunOptions, Store, execute, explain, plan};
use vaepipe_stages::artifacts::{RefitSummary, Variant};

fn subset_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist-subset")
        .join(name)
        .display()
        .to_string()
}

/// 300 training rows (dynamic binarization), one epoch of a 784-20-3 model.
fn spec_text(prior: &str) -> String {
    format!(
        r#"
[pipeline]
name = "prior-artifacts"
seed = 5
[data]
format = "idx"
train = {{ images = "{}", labels = "{}" }}
test = {{ images = "{}", labels = "{}" }}
train_rows = 300
test_rows = 100
validation = 50
[model]
latent = 3
encoder = [20]
decoder = [20]
[train]
epochs = 1
batch_size = 50
[prior]
{prior}
"#,
        subset_file("train-images-idx3-ubyte.gz"),
        subset_file("train-labels-idx1-ubyte.gz"),
        subset_file("t10k-images-idx3-ubyte.gz"),
        subset_file("t10k-labels-idx1-ubyte.gz"),
    )
}

/// Runs data → train → prior; returns the prior stage's output directory.
fn run_prior(store: &Path, prior: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = vaepipe_spec::load_str("prior-artifacts.toml", &spec_text(prior), dir, &[], dir)
        .unwrap_or_else(|e| panic!("invalid test spec: {e:?}"));
    let registry = vaepipe_stages::registry();
    let store = Store::open(store).unwrap();
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
    let ran = ["data", "train", "prior"];
    for inst in report
        .instances
        .iter()
        .filter(|i| ran.contains(&i.stage.as_str()))
    {
        assert!(
            matches!(inst.outcome, Outcome::Ran),
            "{}: {:?}",
            inst.stage,
            inst.outcome
        );
    }
    let prior = report.instances.iter().find(|i| i.stage == "prior");
    prior.expect("the plan has a prior stage").dir.clone()
}

/// Reads `file` as `T` and checks that the typed value covers the file: written back, it is the
/// same JSON value.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(file: &Path) -> T {
    let raw: Value = vaepipe_stages::read_json(file).unwrap();
    let value: T = vaepipe_stages::read_json(file).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        serde_json::to_value(&value).unwrap(),
        raw,
        "{}: the type does not cover the file",
        file.display()
    );
    value
}

#[test]
fn refit_and_variants_of_a_fitted_prior_with_finetuning_read_into_their_types() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_prior(
        tmp.path(),
        "method = \"mog\"\ncomponents = 2\nsteps = 5\nsamples = 300\nthen = \"finetune\"\nfinetune_epochs = 1",
    );
    let refit: RefitSummary = typed(&dir.join("refit.json"));
    assert_eq!(refit.method, "mog");
    assert_eq!(refit.components, 2);
    assert!(refit.objective_before.is_some() && refit.objective_after.is_some());
    assert_eq!(refit.finetune.map(|f| f.epochs_run), Some(1));
    let variants: Vec<Variant> = typed(&dir.join("variants.json"));
    let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["standard", "refit", "finetuned"]);
}

#[test]
fn refit_of_the_standard_normal_reads_into_its_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_prior(tmp.path(), "method = \"standard-normal\"");
    let refit: RefitSummary = typed(&dir.join("refit.json"));
    assert_eq!(refit.method, "standard-normal");
    assert!(refit.objective_before.is_none() && refit.finetune.is_none());
    let variants: Vec<Variant> = typed(&dir.join("variants.json"));
    assert_eq!(variants[0].name, "standard");
}
