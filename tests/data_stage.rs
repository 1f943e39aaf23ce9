//! The data stage on CSV files: test features are matched to the training features by name
//! (reordered when only the order differs, an error naming both files otherwise), and
//! summary.json says whether each split is binary.

use vaepipe_engine::Outcome;
use vaepipe_tests::run;

fn spec(dir: &std::path::Path, binarize: &str) -> String {
    format!(
        "[pipeline]\nname = \"csv\"\n[data]\nformat = \"csv\"\ntrain = {{ path = \"{d}/train.csv\" }}\ntest = {{ path = \"{d}/test.csv\" }}\n\
         label_column = \"y\"\nscale = \"none\"\nbinarize = \"{binarize}\"\n",
        d = dir.display()
    )
}

/// Writes `train.csv` (features a, b and label y) and `test.csv` (as given) into a new
/// directory.
fn csv_dir(test_csv: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.csv"),
        "a,b,y\n0.1,0.9,0\n0.2,0.8,1\n0.3,0.7,0\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("test.csv"), test_csv).unwrap();
    dir
}

/// Runs the data stage alone into `store` and returns its outcome and output directory.
fn run_data(store: &std::path::Path, spec: &str) -> (Outcome, std::path::PathBuf) {
    let r = run(store, spec, &[], &["data"]);
    let i = r.instances.into_iter().next().expect("one data instance");
    (i.outcome, i.dir)
}

/// summary.json of a data stage output.
fn summary(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn test_columns_are_matched_by_name() {
    // Same columns, other order.
    let dir = csv_dir("y,b,a\n1,0.6,0.4\n0,0.5,0.5\n");
    let (outcome, out) = run_data(&dir.path().join("store"), &spec(dir.path(), "none"));
    assert_eq!(outcome, Outcome::Ran, "{outcome:?}");
    let test = vaepipe_data::read_dataset(&out.join("test.parquet")).unwrap();
    assert_eq!(test.feature_names, ["a", "b"]);
    assert_eq!(test.x, [0.4, 0.6, 0.5, 0.5]);
    assert_eq!(test.labels.as_deref(), Some(&[1, 0][..]));
    assert_eq!(summary(&out)["splits"]["test"]["binary"], false);

    // Other columns: an error naming both files and the column.
    std::fs::write(dir.path().join("test.csv"), "y,b,c\n1,0.6,0.4\n").unwrap();
    let (outcome, _) = run_data(&dir.path().join("store"), &spec(dir.path(), "none"));
    match &outcome {
        Outcome::Failed(msg) => {
            assert!(
                msg.contains("`a`") && msg.contains("train.csv") && msg.contains("test.csv"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn binarized_splits_are_marked_binary() {
    let dir = csv_dir("a,b,y\n0.4,0.6,1\n");
    let (outcome, out) = run_data(&dir.path().join("store"), &spec(dir.path(), "static"));
    assert_eq!(outcome, Outcome::Ran, "{outcome:?}");
    let summary = summary(&out);
    for split in ["train", "validation", "test"] {
        assert_eq!(summary["splits"][split]["binary"], true, "{split}");
    }
    // The test split's static draw does not depend on the run's seed.
    let (outcome, other) = run_data(
        &dir.path().join("store2"),
        &spec(dir.path(), "static").replace("name = \"csv\"", "name = \"csv\"\nseed = 9"),
    );
    assert_eq!(outcome, Outcome::Ran, "{outcome:?}");
    let a = vaepipe_data::read_dataset(&out.join("test.parquet")).unwrap();
    let b = vaepipe_data::read_dataset(&other.join("test.parquet")).unwrap();
    assert_eq!(a.x, b.x);
}
