//! End-to-end tests of the `vaepipe` binary as users run it: exit codes, spec errors, `plan`
//! reasons, `--json` contracts, concurrent runs on one store (real processes), and training
//! killed with SIGKILL or stopped with SIGTERM that resumes to bit-identical weights.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exit, bin, json_of, missing_or_empty, subset, the_entry, verify_store};

/// A small data + train pipeline on the embedded subset.
fn spec(dir: &Path, name: &str, epochs: usize, extra: &str) -> PathBuf {
    let d = subset();
    let text = format!(
        r#"[pipeline]
name = "{name}"
seed = 7

[data]
format = "idx"
train = {{ images = "{d}/train-images-idx3-ubyte.gz", labels = "{d}/train-labels-idx1-ubyte.gz" }}
test = {{ images = "{d}/t10k-images-idx3-ubyte.gz", labels = "{d}/t10k-labels-idx1-ubyte.gz" }}
train_rows = 2000
test_rows = 200
validation = 200

[model]
latent = 8
encoder = [64]

[train]
objective = "iwae"
k = 3
epochs = {epochs}
batch_size = 25
{extra}
"#,
        d = d.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `vaepipe` in `dir`, without colours, not yet started.
fn command(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir).env("NO_COLOR", "1");
    c
}

/// Runs `vaepipe <args>` in `dir` to the end.
fn vaepipe(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().expect("run vaepipe")
}

/// `vaepipe run <spec> --stage train --store <store>` in `dir`, not yet started (callers
/// may add arguments and redirect its output).
fn train_command(dir: &Path, spec: &Path, store: &Path) -> Command {
    let mut c = command(dir);
    c.args([
        "run",
        spec.to_str().unwrap(),
        "--stage",
        "train",
        "--store",
        store.to_str().unwrap(),
    ]);
    c
}

/// Runs [`train_command`] to the end and asserts that it succeeded.
fn train(dir: &Path, spec: &Path, store: &Path) {
    let o = train_command(dir, spec, store)
        .output()
        .expect("run vaepipe");
    assert_exit(&o, 0);
}

#[test]
fn invalid_spec_exits_2_with_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"nope.gz\" }\ntest = { images = \"nope.gz\" }\n[train]\nepoch = 3\n").unwrap();
    let o = vaepipe(dir.path(), &["validate", "bad.toml"]);
    assert_exit(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml:5:20") && err.contains("data.train.images"),
        "{err}"
    );
    assert!(err.contains("did you mean `epochs`"), "{err}");
    let o = vaepipe(dir.path(), &["run", "bad.toml", "--json"]);
    assert_exit(&o, 2);
    let v = json_of(&o);
    assert_eq!(v["valid"], false);
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == "train.epoch" && e["line"] == 8)
    );
    // Usage errors are exit 2 too.
    let good = spec(dir.path(), "ok", 1, "");
    let o = vaepipe(
        dir.path(),
        &["run", good.to_str().unwrap(), "--force", "trian"],
    );
    assert_exit(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such stage"));
    let o = vaepipe(dir.path(), &["run", good.to_str().unwrap(), "--point", "9"]);
    assert_exit(&o, 2);
}

#[test]
fn a_failing_stage_exits_1_and_names_its_log() {
    let dir = tempfile::tempdir().unwrap();
    // 2000 training rows, 5000 held out: the data stage must fail.
    let path = spec(dir.path(), "fails", 1, "");
    let o = vaepipe(
        dir.path(),
        &[
            "run",
            path.to_str().unwrap(),
            "--set",
            "data.validation=5000",
            "--stage",
            "data",
        ],
    );
    assert_exit(&o, 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("FAILED data") && err.contains(".log"), "{err}");
    let log = std::fs::read_dir(dir.path().join(".vaepipe/logs/data"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("holds out 5000 rows")
    );
    assert!(missing_or_empty(&dir.path().join(".vaepipe/store/data")));
}

#[test]
fn plan_explains_and_a_rerun_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let path = spec(dir.path(), "cache", 1, "");
    let p = path.to_str().unwrap();
    let o = vaepipe(dir.path(), &["run", p, "--stage", "train", "--json"]);
    assert_exit(&o, 0);
    let v = json_of(&o);
    assert_eq!(v["status"], "ok");
    let statuses: Vec<_> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["stage"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("data".to_string(), "ran".to_string()),
            ("train".to_string(), "ran".to_string())
        ]
    );
    for key in ["dir", "log", "key", "points", "duration_s"] {
        assert!(
            v["instances"][0].get(key).is_some(),
            "missing `{key}` in --json output"
        );
    }
    let v = json_of(&vaepipe(
        dir.path(),
        &["run", p, "--stage", "train", "--json"],
    ));
    assert!(
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "cached"),
        "{v}"
    );
    let o = vaepipe(
        dir.path(),
        &["plan", p, "--stage", "train", "--set", "train.lr=0.0003"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("parameter `train.lr` changed (0.001 → 0.0003)"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("skip") && l.contains("data")),
        "{out}"
    );
}

#[test]
fn concurrent_runs_on_one_store_both_finish_and_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = spec(dir.path(), "concurrent", 2, "");
    let store = dir.path().join("shared-store");
    let run = || {
        train_command(dir.path(), &path, &store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = run();
    let b = run();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_exit(&a, 0);
    assert_exit(&b, 0);
    // Each instance was computed by exactly one process: one attempt in each log.
    for stage in ["data", "train"] {
        let log_dir = store.join("logs").join(stage);
        let logs: Vec<_> = std::fs::read_dir(&log_dir).unwrap().flatten().collect();
        assert_eq!(logs.len(), 1);
        let log = std::fs::read_to_string(logs[0].path()).unwrap();
        assert_eq!(
            log.matches("== starting").count(),
            1,
            "{stage} computed more than once:\n{log}"
        );
    }
    verify_store(&store);
}

/// Waits until `path` contains `needle`.
fn wait_for(path: &Path, needle: &str, timeout: Duration) {
    let t0 = Instant::now();
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out waiting for {needle:?} in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn train_log(store: &Path) -> PathBuf {
    let t0 = Instant::now();
    loop {
        if let Ok(rd) = std::fs::read_dir(store.join("logs/train"))
            && let Some(e) = rd.flatten().next()
        {
            return e.path();
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no train log");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the pipeline uninterrupted in its own store and returns the model bytes.
fn reference_model(dir: &Path, path: &Path) -> Vec<u8> {
    let store = dir.join("reference-store");
    train(dir, path, &store);
    std::fs::read(the_entry(&store, "train").join("model.safetensors")).unwrap()
}

#[test]
fn e2e_sigkill_during_training_resumes_to_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    // Enough epochs that the kill lands mid-run however fast the machine trains (with 4, a fast
    // machine finished the last three epochs within the 300 ms wait and committed the stage).
    const EPOCHS: i64 = 30;
    let path = spec(dir.path(), "killed", EPOCHS as usize, "");
    let store = dir.path().join("store");
    let mut child = train_command(dir.path(), &path, &store)
        .args(["--checkpoint-every", "7"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = train_log(&store);
    // Kill in the middle of epoch 2 (after at least one epoch and some mid-epoch checkpoints).
    wait_for(
        &log,
        &format!("epoch 1/{EPOCHS}:"),
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(30));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(
        missing_or_empty(&store.join("store/train")),
        "a killed stage must not be committed"
    );
    train(dir.path(), &path, &store);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("resuming from the checkpoint"),
        "{log_text}"
    );
    let out = the_entry(&store, "train");
    let history = vaepipe_data::read_table(&out.join("history.parquet")).unwrap();
    assert_eq!(
        history.i64("epoch").unwrap(),
        (1..=EPOCHS).collect::<Vec<_>>(),
        "no repeated or missing epochs"
    );
    let resumed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("train.json")).unwrap()).unwrap();
    assert_eq!(resumed["resumed"], 1);
    let model = std::fs::read(out.join("model.safetensors")).unwrap();
    assert!(
        model == reference_model(dir.path(), &path),
        "resumed weights differ from an uninterrupted run"
    );
}

#[test]
fn e2e_sigterm_checkpoints_exits_3_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = spec(dir.path(), "stopped", 3, "");
    let store = dir.path().join("store");
    let child = train_command(dir.path(), &path, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = train_log(&store);
    wait_for(&log, "epoch 1/3:", Duration::from_secs(120));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 3);
    assert!(String::from_utf8_lossy(&o.stderr).contains("run the same command again to resume"));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("stop requested: checkpoint saved")
    );
    train(dir.path(), &path, &store);
    let model = std::fs::read(the_entry(&store, "train").join("model.safetensors")).unwrap();
    assert!(
        model == reference_model(dir.path(), &path),
        "resumed weights differ from an uninterrupted run"
    );
}

#[test]
fn gc_removes_what_no_spec_refers_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = spec(dir.path(), "gc", 1, "");
    let p = path.to_str().unwrap();
    assert_exit(&vaepipe(dir.path(), &["run", p, "--stage", "data"]), 0);
    assert_exit(
        &vaepipe(
            dir.path(),
            &["run", p, "--stage", "data", "--set", "data.validation=300"],
        ),
        0,
    );
    let v = json_of(&vaepipe(dir.path(), &["gc", p, "--dry-run", "--json"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
    assert_exit(&vaepipe(dir.path(), &["gc", p]), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join(".vaepipe/store/data"))
            .unwrap()
            .count(),
        1
    );
    // The kept entry is still up to date.
    let v = json_of(&vaepipe(
        dir.path(),
        &["run", p, "--stage", "data", "--json"],
    ));
    assert_eq!(v["instances"][0]["status"], "cached");
}

/// The README's main command, shortened with overrides: the quickstart runs every stage and
/// publishes a report, and `--json` and `metrics.json` keep their documented keys.
#[test]
fn e2e_quickstart_runs_every_stage_and_publishes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::repo().join("pipelines/quickstart.toml");
    let store = dir.path().join("store");
    let reports = dir.path().join("reports");
    let o = vaepipe(
        dir.path(),
        &[
            "run",
            spec.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--reports",
            reports.to_str().unwrap(),
            "--json",
            "--set",
            "data.train_rows=2500",
            "--set",
            "train.epochs=2",
            "--set",
            "eval.k=50",
            "--set",
            "eval.images=200",
            "--set",
            "eval.curve_k=[1, 10, 50]",
            "--set",
            "eval.curve_images=50",
        ],
    );
    assert_exit(&o, 0);
    let v = json_of(&o);
    assert_eq!(v["status"], "ok");
    let stages: std::collections::BTreeSet<_> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        stages.into_iter().collect::<Vec<_>>(),
        ["data", "eval", "prior", "report", "train"]
    );
    let html = PathBuf::from(v["report"]["html"].as_str().unwrap());
    assert!(
        html.starts_with(&reports) && html.is_file(),
        "{}",
        html.display()
    );
    assert!(PathBuf::from(v["report"]["markdown"].as_str().unwrap()).is_file());
    let metrics = v["metrics"].as_array().unwrap();
    assert!(
        metrics.len() >= 2,
        "one metrics.json per evaluated model: {metrics:?}"
    );
    for m in metrics {
        let path = PathBuf::from(m["path"].as_str().unwrap());
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
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
            "point",
            "train.objective",
            "train.k",
        ] {
            assert!(json.get(key).is_some(), "{} lacks `{key}`", path.display());
        }
        assert_eq!(json["eval_k"], 50);
        assert!(json["test_nll"].as_f64().unwrap() > 0.0);
    }
}
