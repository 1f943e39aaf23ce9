//! A user's own data set, end to end: one CSV of 8×8 digit images (64 feature columns and a
//! label, 1 797 rows like scikit-learn's digits, generated here from the embedded MNIST subset)
//! with a held-out test split `test = { fraction = 0.15 }`; the image shape is inferred from
//! the 64 features and the report draws 8×8 sample and reconstruction grids. Then
//! `vaepipe compare` on the same store: a table and JSON from the store alone, missing points,
//! sorting, and `--diff`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_exit, bin, describe, json_of, subset};
use serde_json::Value;

/// Rows of scikit-learn's digits data set.
const ROWS: usize = 1797;

/// Writes `digits.csv`: the first 1797 training images of the MNIST subset, padded to 32×32 and
/// reduced to 8×8 by counting the pixels above 127 in each 4×4 block (0..=16, as the UCI
/// optical digits were made), then `pixel_0`…`pixel_63` and `label`.
fn write_digits_csv(dir: &Path) -> PathBuf {
    let src = subset();
    let mnist = vaepipe_data::read_idx(
        &src.join("train-images-idx3-ubyte.gz"),
        Some(&src.join("train-labels-idx1-ubyte.gz")),
    )
    .expect("embedded MNIST subset");
    let labels = mnist.labels.as_ref().expect("labels");
    let mut csv = String::new();
    for j in 0..64 {
        write!(csv, "pixel_{j},").unwrap();
    }
    csv.push_str("label\n");
    for (r, label) in labels.iter().enumerate().take(ROWS) {
        let img = mnist.row(r);
        for by in 0..8 {
            for bx in 0..8 {
                let mut count = 0;
                for y in by * 4..by * 4 + 4 {
                    for x in bx * 4..bx * 4 + 4 {
                        // 32×32 with a 2-pixel border around the 28×28 image.
                        let (yy, xx) = (y as isize - 2, x as isize - 2);
                        if (0..28).contains(&yy)
                            && (0..28).contains(&xx)
                            && img[yy as usize * 28 + xx as usize] > 127.0
                        {
                            count += 1;
                        }
                    }
                }
                write!(csv, "{count},").unwrap();
            }
        }
        writeln!(csv, "{label}").unwrap();
    }
    let path = dir.join("digits.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn write_spec(dir: &Path, extra: &str) -> PathBuf {
    let spec = format!(
        r#"[pipeline]
name = "digits"
seed = 3

[data]
format = "csv"
train = {{ path = "digits.csv" }}
test = {{ fraction = 0.15 }}
label_column = "label"
{extra}
[model]
latent = 4
encoder = [32]

[train]
epochs = 3
batch_size = 50

[eval]
k = 20
curve_k = [1, 5, 20]
curve_images = 50
samples = 20
reconstructions = 8

[sweep]
"train.k" = [1, 2]
"#
    );
    let path = dir.join("digits.toml");
    std::fs::write(&path, spec).unwrap();
    path
}

fn vaepipe(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(dir)
        .args(["--store", "store"])
        .args(args)
        .output()
        .expect("run vaepipe")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn the_data_entry(dir: &Path) -> PathBuf {
    common::the_entry(&dir.join("store"), "data")
}

#[test]
fn e2e_one_csv_with_a_held_out_split_runs_and_draws_8x8_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_digits_csv(dir);
    let spec = write_spec(dir, "");
    let spec_s = spec.to_str().unwrap();
    let o = vaepipe(dir, &["run", spec_s, "--json", "--reports", "reports"]);
    assert_exit(&o, 0);
    // --json: JSON on stdout, progress as plain lines on stderr.
    let run = json_of(&o);
    assert_eq!(run["status"], "ok");
    let stderr = String::from_utf8_lossy(&o.stderr);
    for stage in ["data", "train", "eval"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with('[') && l.contains(&format!("s] {stage}"))),
            "no timed progress line of {stage} on stderr:\n{}",
            describe(&o)
        );
    }

    // The split: 15% of 1797 rows (270), stratified by label, in summary.json.
    let summary = read_json(&the_data_entry(dir).join("summary.json"));
    assert_eq!(summary["image_shape"], serde_json::json!([8, 8]));
    assert_eq!(summary["image_shape_source"], "square");
    let split = &summary["test_split"];
    assert_eq!(split["method"], "fraction");
    assert_eq!(split["source_rows"], ROWS);
    assert_eq!(split["test_rows"], 270);
    assert_eq!(split["train_rows"], ROWS - 270);
    assert_eq!(split["stratified"], true);
    assert_eq!(summary["splits"]["test"]["rows"], 270);
    assert_eq!(summary["splits"]["train"]["rows"], ROWS - 270);
    let test_counts: BTreeMap<String, u64> =
        serde_json::from_value(split["test_label_counts"].clone()).unwrap();
    let train_counts: BTreeMap<String, u64> =
        serde_json::from_value(split["train_label_counts"].clone()).unwrap();
    assert_eq!(test_counts.len(), 10, "every digit in the test split");
    for (label, n_test) in &test_counts {
        let total = n_test + train_counts[label];
        let expected = 0.15 * total as f64;
        assert!(
            (*n_test as f64 - expected).abs() <= 1.0,
            "label {label}: {n_test} test rows of {total}, expected ≈ {expected:.1} (stratified)"
        );
    }

    // The report: 8×8 grids of samples and reconstructions, and the split in the text.
    let report = dir.join("reports/digits");
    let md = std::fs::read_to_string(report.join("index.md")).unwrap();
    assert!(!md.contains("no image shape"), "{md}");
    assert!(md.contains("8×8 pixels"), "{md}");
    assert!(md.contains("held out of the 1797 rows"), "{md}");
    assert!(md.contains("stratified by label"), "{md}");
    let figures: Vec<String> = std::fs::read_dir(report.join("figures"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for stem in ["samples_p0_", "reconstructions_p0_", "test_nll_vs_"] {
        assert!(
            figures
                .iter()
                .any(|f| f.starts_with(stem) && f.ends_with(".png")),
            "no {stem}*.png in {figures:?}"
        );
    }

    // The same spec and seed give the same split; another seed another one.
    let first_test = vaepipe_data::read_dataset(&the_data_entry(dir).join("test.parquet")).unwrap();
    let o = vaepipe(
        dir,
        &["run", spec_s, "--stage", "data", "--set", "pipeline.seed=4"],
    );
    assert_exit(&o, 0);
    let entries: Vec<PathBuf> = std::fs::read_dir(dir.join("store/store/data"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 2, "a new seed is a new data entry");
    let other = entries
        .iter()
        .map(|e| vaepipe_data::read_dataset(&e.join("test.parquet")).unwrap())
        .find(|d| d.index != first_test.index)
        .expect("another seed holds out other rows");
    assert_eq!(other.rows, 270);

    // compare: every point from the store, nothing run.
    let before = common::verify_store(&dir.join("store")).len();
    let o = vaepipe(dir, &["compare", spec_s, "--json"]);
    assert_exit(&o, 0);
    let c = json_of(&o);
    // Every key docs/cli.md documents (a contract: keys may be added, never removed).
    let has_keys = |v: &Value, keys: &[&str]| {
        for k in keys {
            assert!(v.get(k).is_some(), "no `{k}` in {v:#}");
        }
    };
    has_keys(&c, &["specs", "columns", "rows"]);
    assert_eq!(c["columns"], serde_json::json!(["train.k"]));
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        2,
        "two points × one variant (standard-normal prior)"
    );
    for r in rows {
        has_keys(
            r,
            &[
                "pipeline", "index", "id", "label", "variant", "state", "params", "metrics",
                "eval_dir",
            ],
        );
        assert_eq!(r["state"], "done");
        let m = &r["metrics"];
        has_keys(
            m,
            &[
                "test_nll",
                "test_nll_stderr",
                "elbo",
                "active_units",
                "eval_k",
                "images",
                "epochs",
                "train_seconds",
            ],
        );
        let nll = m["test_nll"].as_f64().unwrap();
        assert!(nll.is_finite() && nll > 0.0, "{r}");
        assert!(m["test_nll_stderr"].as_f64().unwrap() > 0.0);
        assert_eq!(m["epochs"], 3.0);
        assert!(m["train_seconds"].as_f64().unwrap() > 0.0);
        assert!(
            m["elbo"].as_f64().unwrap() < -nll + 1e-9,
            "ELBO ≤ L_k in expectation: {r}"
        );
        // The metrics are the eval stage's own.
        let metrics = read_json(
            &Path::new(r["eval_dir"].as_str().unwrap())
                .join(r["variant"].as_str().unwrap())
                .join("metrics.json"),
        );
        assert_eq!(metrics["test_nll"], m["test_nll"]);
        assert_eq!(metrics["point_id"], r["id"]);
    }
    // Sorted by test NLL, best first.
    let o = vaepipe(dir, &["compare", spec_s, "--json", "--sort", "test_nll"]);
    let sorted = json_of(&o);
    let nll: Vec<f64> = sorted["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metrics"]["test_nll"].as_f64().unwrap())
        .collect();
    assert!(nll[0] <= nll[1], "{nll:?}");
    // The table fits in 100 columns and names both points.
    let o = vaepipe(dir, &["compare", spec_s, "--sort", "k"]);
    assert_exit(&o, 0);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    assert!(
        table.contains("test NLL ± se") && table.contains('±'),
        "{table}"
    );
    assert!(table.contains("2 points, 0 not evaluated"), "{table}");
    // Points not run yet are shown as missing, and nothing runs.
    let o = vaepipe(
        dir,
        &["compare", spec_s, "--set", "train.epochs=4", "--json"],
    );
    assert_exit(&o, 0);
    let missing = json_of(&o);
    for r in missing["rows"].as_array().unwrap() {
        assert_eq!(r["state"], "missing");
        assert!(r["metrics"].is_null());
    }
    assert_eq!(
        common::verify_store(&dir.join("store")).len(),
        before,
        "compare never runs anything"
    );
    // --diff: by id and by label.
    let (a, b) = (
        rows[0]["id"].as_str().unwrap(),
        rows[1]["label"].as_str().unwrap(),
    );
    let o = vaepipe(dir, &["compare", spec_s, "--diff", a, b, "--json"]);
    assert_exit(&o, 0);
    let d = json_of(&o);
    let differing: Vec<&str> = d["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["differs"] == true)
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(differing, ["train.k"]);
    let o = vaepipe(dir, &["compare", spec_s, "--diff", a, "nope"]);
    assert_exit(&o, 2);
}

#[test]
fn held_out_split_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_digits_csv(dir);
    // Invalid in the spec: the key is named.
    for (test, key) in [
        ("{ fraction = 1.5 }", "data.test.fraction"),
        ("{ fraction = 0.0 }", "data.test.fraction"),
        ("{ rows = 0 }", "data.test.rows"),
        ("{ rows = 5, fraction = 0.1 }", "data.test.rows"),
        ("{ rows = 5, path = \"digits.csv\" }", "data.test.path"),
    ] {
        let spec = write_spec(dir, "").to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&spec)
            .unwrap()
            .replace("{ fraction = 0.15 }", test);
        std::fs::write(&spec, text).unwrap();
        let o = vaepipe(dir, &["validate", &spec, "--json"]);
        assert_exit(&o, 2);
        let keys: Vec<String> = json_of(&o)["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(keys.iter().any(|k| k == key), "{test}: {keys:?}");
    }
    // More rows than the table: the data stage fails naming the key and the file.
    let spec = write_spec(dir, "").to_str().unwrap().to_string();
    let o = vaepipe(
        dir,
        &[
            "run",
            &spec,
            "--stage",
            "data",
            "--set",
            "data.test={ rows = 1797 }",
        ],
    );
    assert_exit(&o, 1);
    let log = walk_logs(&dir.join("store/logs/data")) + &describe(&o);
    assert!(
        log.contains("data.test.rows = 1797") && log.contains("digits.csv"),
        "{log}\n{}",
        describe(&o)
    );
    // A shape that does not fit the features.
    let o = vaepipe(
        dir,
        &[
            "run",
            &spec,
            "--stage",
            "data",
            "--set",
            "data.shape=[3, 5]",
        ],
    );
    assert_exit(&o, 1);
    let log = walk_logs(&dir.join("store/logs/data")) + &describe(&o);
    assert!(log.contains("data.shape = [3, 5]"), "{log}");
}

fn walk_logs(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    s
}

/// The split of a table read from the summary of the one data entry under `store`.
fn split_of(store: &Path) -> Value {
    let summary = read_json(&common::the_entry(store, "data").join("summary.json"));
    summary["test_split"].clone()
}

/// The held-out split is the same for every format (it runs on the rows once they are read):
/// a Parquet copy of the digits table and the embedded MNIST IDX files, stratified by default
/// and not with `data.stratify = false`; an explicit non-square shape and `shape = []` (not
/// images) reach summary.json as given.
#[test]
fn held_out_splits_of_parquet_and_idx_and_explicit_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Parquet: the digits CSV written as a plain Parquet table (f64 features, i64 label).
    let csv = vaepipe_data::read_csv(&write_digits_csv(dir), Some("label")).unwrap();
    let mut table = vaepipe_data::Table::new();
    for (j, name) in csv.feature_names.iter().enumerate() {
        let col = (0..csv.rows).map(|r| csv.row(r)[j] as f64).collect();
        table.push(name.clone(), vaepipe_data::Column::F64(col));
    }
    table.push(
        "label",
        vaepipe_data::Column::I64(csv.labels.clone().unwrap()),
    );
    vaepipe_data::write_table(&dir.join("digits.parquet"), &table).unwrap();
    let spec = write_spec(dir, "");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("format = \"csv\"", "format = \"parquet\"")
        .replace("digits.csv", "digits.parquet");
    std::fs::write(&spec, text).unwrap();
    let spec_s = spec.to_str().unwrap();
    let run_data = |sets: &[&str], store: &str| {
        let mut args = vec!["--store", store, "run", spec_s, "--stage", "data"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let o = Command::new(bin())
            .current_dir(dir)
            .args(&args)
            .output()
            .unwrap();
        assert_exit(&o, 0);
        dir.join(store)
    };
    let split = split_of(&run_data(&[], "s-parquet"));
    assert_eq!(split["source_rows"], ROWS);
    assert_eq!(split["test_rows"], 270);
    assert_eq!(split["stratified"], true);

    // Not stratified: the same sizes, recorded as such, and other rows held out.
    let store = run_data(&["data.stratify=false"], "s-plain");
    let plain = split_of(&store);
    assert_eq!(plain["stratified"], false, "{plain:#}");
    assert_eq!(plain["test_rows"], 270);
    assert_ne!(plain["test_label_counts"], split["test_label_counts"]);

    // Explicit shapes: [2, 32] is taken as given; [] says the rows are not images.
    let summary =
        |store: PathBuf| read_json(&common::the_entry(&store, "data").join("summary.json"));
    let s = summary(run_data(&["data.shape=[2, 32]"], "s-shape"));
    assert_eq!(s["image_shape"], serde_json::json!([2, 32]));
    assert_eq!(s["image_shape_source"], "spec");
    let s = summary(run_data(&["data.shape=[]"], "s-noshape"));
    assert!(s["image_shape"].is_null(), "{s:#}");

    // IDX: the embedded MNIST training files alone, 100 rows held out, the 28×28 shape read
    // from the file.
    let src = subset();
    let idx_spec = dir.join("idx.toml");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("format = \"parquet\"", "format = \"idx\"")
        .replace(
            "train = { path = \"digits.parquet\" }",
            &format!(
                "train = {{ images = \"{}\", labels = \"{}\" }}",
                src.join("train-images-idx3-ubyte.gz").display(),
                src.join("train-labels-idx1-ubyte.gz").display()
            ),
        )
        .replace("test = { fraction = 0.15 }", "test = { rows = 100 }")
        .replace("label_column = \"label\"\n", "");
    std::fs::write(&idx_spec, text).unwrap();
    let o = Command::new(bin())
        .current_dir(dir)
        .args([
            "--store",
            "s-idx",
            "run",
            idx_spec.to_str().unwrap(),
            "--stage",
            "data",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let s = read_json(&common::the_entry(&dir.join("s-idx"), "data").join("summary.json"));
    let split = &s["test_split"];
    assert_eq!(split["method"], "rows");
    assert_eq!(split["test_rows"], 100);
    assert_eq!(split["stratified"], true);
    assert_eq!(s["image_shape"], serde_json::json!([28, 28]));
    assert_eq!(s["image_shape_source"], "idx");
    let n_test: u64 = split["test_label_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(n_test, 100);
}
