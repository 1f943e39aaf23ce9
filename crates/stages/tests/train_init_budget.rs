//! The train stage's initialisation and wall-clock budget, through the engine on a tiny pipeline:
//!
//! * `output_bias = "data"` sets the decoder's output bias to the logit of the per-pixel mean of
//!   the *training* split (clipped to [10⁻³, 1 − 10⁻³]), not of the validation rows;
//! * `train.time_limit` stops training at the end of the epoch in which the budget runs out,
//!   and train.json says so (`stopped_by`);
//! * the elapsed time is part of the checkpoint: an interrupted run resumes to the uninterrupted
//!   result when the budget is not binding, and a resumed run counts the time already spent.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use vaepipe_engine::{
    Event, Events, NoEvents, Outcome, Point, RunOptions, Store, execute, explain, plan,
};

fn subset_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist-subset")
        .join(name)
}

/// 500 training rows after a 100-row validation split, dynamic binarization, a 784-50-5 model,
/// batches of 20 (25 steps per epoch), three epochs.
fn spec_text() -> String {
    let f = |name: &str| subset_file(name).display().to_string();
    format!(
        r#"
[pipeline]
name = "train-test"
seed = 5
[data]
format = "idx"
train = {{ images = "{}", labels = "{}" }}
test = {{ images = "{}", labels = "{}" }}
train_rows = 600
test_rows = 100
validation = 100
[model]
latent = 5
encoder = [50]
decoder = [50]
[train]
objective = "iwae"
k = 3
epochs = 3
batch_size = 20
"#,
        f("train-images-idx3-ubyte.gz"),
        f("train-labels-idx1-ubyte.gz"),
        f("t10k-images-idx3-ubyte.gz"),
        f("t10k-labels-idx1-ubyte.gz"),
    )
}

/// Runs data → train with `--set` overrides; returns the train stage's outcome and directory.
fn run_train(
    store: &Path,
    overrides: &[&str],
    events: &dyn Events,
    cancel: &AtomicBool,
) -> (Outcome, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let spec = vaepipe_spec::load_str("train-test.toml", &spec_text(), dir, &overrides, dir)
        .unwrap_or_else(|e| panic!("invalid test spec: {e:?}"));
    let points: Vec<Point> = vaepipe_stages::points_of(&spec);
    let registry = vaepipe_stages::registry();
    let store = Store::open(store).unwrap();
    let p = plan(&registry, &store, spec.name(), points, false).unwrap();
    let decisions = explain(&p, &store, &[]).unwrap();
    let options = RunOptions {
        jobs: 1,
        tool_version: "test".into(),
        only_stages: Some(vec!["data".into(), "train".into()]),
        ..Default::default()
    };
    let report = execute(&registry, &store, &p, &decisions, &options, events, cancel).unwrap();
    let mut out = None;
    for inst in &report.instances {
        match inst.stage.as_str() {
            "data" => assert!(
                matches!(inst.outcome, Outcome::Ran | Outcome::Cached),
                "data stage: {:?}",
                inst.outcome
            ),
            "train" => out = Some((inst.outcome.clone(), inst.dir.clone())),
            _ => {}
        }
    }
    out.expect("the plan has a train stage")
}

fn train_ok(store: &Path, overrides: &[&str]) -> (PathBuf, Value) {
    let (outcome, dir) = run_train(store, overrides, &NoEvents, &AtomicBool::new(false));
    assert!(matches!(outcome, Outcome::Ran), "train stage: {outcome:?}");
    let summary = vaepipe_stages::read_json(&dir.join("train.json")).unwrap();
    (dir, summary)
}

fn data_dir(train_dir: &Path) -> PathBuf {
    let manifest: Value = vaepipe_stages::read_json(&train_dir.join("manifest.json")).unwrap();
    let key = manifest["inputs"]["data"]
        .as_str()
        .or_else(|| manifest["input_keys"]["data"].as_str())
        .unwrap_or_else(|| panic!("no data input key in {manifest:#}"))
        .to_string();
    train_dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("data")
        .join(key)
}

fn per_pixel_logits(x: &[f32], rows: usize, d: usize) -> Vec<f64> {
    let mut mean = vec![0f64; d];
    for row in x.chunks(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    mean.iter()
        .map(|m| {
            let p = (m / rows as f64).clamp(1e-3, 1.0 - 1e-3);
            (p / (1.0 - p)).ln()
        })
        .collect()
}

#[test]
fn the_data_output_bias_is_the_logit_of_the_training_mean() {
    // At a learning rate of 1e-12 Adam moves no parameter by more than ~1e-10 in 25 steps, so
    // the trained bias is the initial one.
    let store = tempfile::tempdir().unwrap();
    let (dir, _) = train_ok(
        store.path(),
        &[
            "model.output_bias=\"data\"",
            "train.lr=1e-12",
            "train.epochs=1",
        ],
    );
    let data = data_dir(&dir);
    let train = vaepipe_data::read_dataset(&data.join("train.parquet")).unwrap();
    let validation = vaepipe_data::read_dataset(&data.join("validation.parquet")).unwrap();
    assert_eq!((train.rows, validation.rows), (500, 100));
    let d = train.features;
    let expected = per_pixel_logits(&train.x, train.rows, d);
    // Including the validation rows gives visibly different logits: the test can tell them apart.
    let all: Vec<f32> = train.x.iter().chain(&validation.x).copied().collect();
    let with_validation = per_pixel_logits(&all, 600, d);
    let gap = expected
        .iter()
        .zip(&with_validation)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        gap > 0.05,
        "training and all-row logits differ by only {gap}"
    );

    let (tensors, _) = vaepipe_nn::load_safetensors(dir.join("model.safetensors")).unwrap();
    let bias: &vaepipe_nn::NamedTensor<f32> = tensors
        .iter()
        .find(|t| t.name == "decoder.out.bias")
        .unwrap();
    for (j, (&b, e)) in bias.data.iter().zip(&expected).enumerate() {
        assert!(
            (b as f64 - e).abs() < 1e-4,
            "pixel {j}: bias {b}, logit of the clipped training mean {e}"
        );
    }
    // Clipping: MNIST's corner pixels are never on.
    assert!((bias.data[0] as f64 + 6.906_755).abs() < 1e-4);
}

#[test]
fn a_time_limit_stops_at_the_end_of_an_epoch() {
    let store = tempfile::tempdir().unwrap();
    // Any epoch takes longer than a microsecond: the budget runs out in the first.
    let (dir, summary) = train_ok(store.path(), &["train.time_limit=1e-6"]);
    assert_eq!(summary["stopped_by"], "time_limit", "{summary:#}");
    assert_eq!(summary["epochs_run"], 1, "{summary:#}");
    assert_eq!(summary["steps"], 25, "stopped inside an epoch: {summary:#}");
    assert_eq!(summary["time_limit"], 1e-6);
    assert_eq!(summary["stopped_early"], false);
    assert!(summary["elapsed_seconds"].as_f64().unwrap() > 0.0);
    let history = vaepipe_data::read_table(&dir.join("history.parquet")).unwrap();
    assert_eq!(history.i64("step").unwrap(), vec![25]);

    // Without a budget every epoch runs.
    let (_, summary) = train_ok(store.path(), &[]);
    assert_eq!(summary["stopped_by"], "epochs", "{summary:#}");
    assert_eq!(summary["epochs_run"], 3);
    assert_eq!(summary["time_limit"], Value::Null);
}

/// Sets the stop flag from the train stage's own progress events (deterministic, no timing).
struct StopTraining<'a> {
    cancel: &'a AtomicBool,
    train: Mutex<Option<usize>>,
    seen: Mutex<Vec<String>>,
    stop_at: Option<&'static str>,
    /// Progress messages matching `stop_at` to let pass before stopping.
    skip: Mutex<usize>,
}

impl<'a> StopTraining<'a> {
    fn new(cancel: &'a AtomicBool, stop_at: Option<&'static str>) -> Self {
        StopTraining {
            cancel,
            train: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            stop_at,
            skip: Mutex::new(1),
        }
    }
}

impl Events for StopTraining<'_> {
    fn event(&self, e: &Event) {
        match e {
            Event::Start {
                instance, stage, ..
            } if stage == "train" => *self.train.lock().unwrap() = Some(*instance),
            Event::Progress {
                instance, message, ..
            } if Some(*instance) == *self.train.lock().unwrap() => {
                self.seen.lock().unwrap().push(message.clone());
                if self.stop_at.is_some_and(|m| message.starts_with(m)) {
                    let mut skip = self.skip.lock().unwrap();
                    if *skip == 0 {
                        self.cancel.store(true, Ordering::SeqCst);
                    } else {
                        *skip -= 1;
                    }
                }
            }
            Event::Log { instance, line } if Some(*instance) == *self.train.lock().unwrap() => {
                self.seen.lock().unwrap().push(line.clone())
            }
            _ => {}
        }
    }
}

/// Interrupts training fifteen batches into epoch 2 (progress every 10 steps: the second
/// message of epoch 2 is step 40); returns the work directory holding the checkpoint.
fn interrupt_in_epoch_2(store: &Path, overrides: &[&str]) -> PathBuf {
    let cancel = AtomicBool::new(false);
    let events = StopTraining::new(&cancel, Some("epoch 2/"));
    let (outcome, dir) = run_train(store, overrides, &events, &cancel);
    assert_eq!(
        outcome,
        Outcome::Interrupted,
        "the stop flag was not honoured"
    );
    assert!(!dir.exists(), "an interrupted stage must not be committed");
    let key = dir.file_name().unwrap().to_str().unwrap().to_string();
    Store::open(store).unwrap().work_dir("train", &key)
}

fn checkpoint(work: &Path) -> Value {
    vaepipe_stages::read_json(&work.join("train-checkpoint.json")).unwrap()
}

fn elapsed(checkpoint: &Value) -> f64 {
    checkpoint["elapsed"]
        .as_str()
        .expect("elapsed is an exact decimal string")
        .parse()
        .unwrap()
}

#[test]
fn an_interrupted_run_with_a_budget_resumes_to_the_uninterrupted_result() {
    let overrides = ["train.time_limit=100000"];
    let reference = tempfile::tempdir().unwrap();
    let (ref_dir, ref_summary) = train_ok(reference.path(), &overrides);
    assert_eq!(ref_summary["stopped_by"], "epochs");

    let store = tempfile::tempdir().unwrap();
    let work = interrupt_in_epoch_2(store.path(), &overrides);
    let cp = checkpoint(&work);
    assert_eq!(
        (cp["epoch"].as_u64(), cp["batch"].as_u64()),
        (Some(1), Some(15))
    );
    let spent = elapsed(&cp);
    // The budget's clock covers the first epoch and the part of the second before the stop.
    let exact = |key: &str| -> f64 { cp[key].as_str().unwrap().parse().unwrap() };
    let trained = exact("seconds") + exact("epoch_seconds");
    assert!(
        spent >= trained && trained > 0.0,
        "the checkpoint's elapsed time {spent} s is less than the training time {trained} s: {cp:#}"
    );

    let (dir, summary) = train_ok(store.path(), &overrides);
    assert_eq!(summary["resumed"], 1);
    assert_eq!(summary["stopped_by"], "epochs");
    assert_eq!(summary["epochs_run"], 3);
    assert!(
        summary["elapsed_seconds"].as_f64().unwrap() >= spent,
        "the resumed run's elapsed time does not include the first attempt's {spent} s"
    );
    assert!(
        std::fs::read(dir.join("model.safetensors")).unwrap()
            == std::fs::read(ref_dir.join("model.safetensors")).unwrap(),
        "resumed weights differ from an uninterrupted run"
    );
}

#[test]
fn a_resumed_run_counts_the_time_already_spent() {
    // A budget of 1000 s that the first attempt (per its checkpoint) has already used up: the
    // resumed run finishes the epoch it is in (epoch 2) and stops there.
    let overrides = ["train.time_limit=1000"];
    let store = tempfile::tempdir().unwrap();
    let work = interrupt_in_epoch_2(store.path(), &overrides);
    let mut cp = checkpoint(&work);
    assert!(elapsed(&cp) < 1000.0);
    cp["elapsed"] = Value::String("1000.5".into());
    std::fs::write(
        work.join("train-checkpoint.json"),
        serde_json::to_vec_pretty(&cp).unwrap(),
    )
    .unwrap();

    let (dir, summary) = train_ok(store.path(), &overrides);
    assert_eq!(summary["resumed"], 1, "{summary:#}");
    assert_eq!(summary["stopped_by"], "time_limit", "{summary:#}");
    assert_eq!(summary["epochs_run"], 2, "{summary:#}");
    assert_eq!(summary["steps"], 50, "{summary:#}");
    assert!(summary["elapsed_seconds"].as_f64().unwrap() > 1000.5);
    let history = vaepipe_data::read_table(&dir.join("history.parquet")).unwrap();
    assert_eq!(history.i64("step").unwrap(), vec![25, 50]);
}
