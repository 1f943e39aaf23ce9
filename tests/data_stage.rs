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

#[test]
fn test_columns_are_matched_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.csv"),
        "a,b,y\n0.1,0.9,0\n0.2,0.8,1\n0.3,0.7,0\n",
    )
    .unwrap();
    // Same columns, other order.
    std::fs::write(dir.path().join("test.csv"), "y,b,a\n1,0.6,0.4\n0,0.5,0.5\n").unwrap();
    let r = run(
        &dir.path().join("store"),
        &spec(dir.path(), "none"),
        &[],
        &["data"],
    );
    assert_eq!(
        r.instances[0].outcome,
        Outcome::Ran,
        "{:?}",
        r.instances[0].outcome
    );
    let test = vaepipe_data::read_dataset(&r.instances[0].dir.join("test.parquet")).unwrap();
    assert_eq!(test.feature_names, ["a", "b"]);
    assert_eq!(test.x, [0.4, 0.6, 0.5, 0.5]);
    assert_eq!(test.labels.as_deref(), Some(&[1, 0][..]));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.instances[0].dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["splits"]["test"]["binary"], false);

    // Other columns: an error naming both files and the column.
    std::fs::write(dir.path().join("test.csv"), "y,b,c\n1,0.6,0.4\n").unwrap();
    let r = run(
        &dir.path().join("store"),
        &spec(dir.path(), "none"),
        &[],
        &["data"],
    );
    match &r.instances[0].outcome {
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.csv"),
        "a,b,y\n0.1,0.9,0\n0.2,0.8,1\n0.3,0.7,0\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("test.csv"), "a,b,y\n0.4,0.6,1\n").unwrap();
    let r = run(
        &dir.path().join("store"),
        &spec(dir.path(), "static"),
        &[],
        &["data"],
    );
    assert_eq!(
        r.instances[0].outcome,
        Outcome::Ran,
        "{:?}",
        r.instances[0].outcome
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.instances[0].dir.join("summary.json")).unwrap())
            .unwrap();
    for split in ["train", "validation", "test"] {
        assert_eq!(summary["splits"][split]["binary"], true, "{split}");
    }
    // The test split's static draw does not depend on the run's seed.
    let other = run(
        &dir.path().join("store2"),
        &spec(dir.path(), "static").replace("name = \"csv\"", "name = \"csv\"\nseed = 9"),
        &[],
        &["data"],
    );
    let a = vaepipe_data::read_dataset(&r.instances[0].dir.join("test.parquet")).unwrap();
    let b = vaepipe_data::read_dataset(&other.instances[0].dir.join("test.parquet")).unwrap();
    assert_eq!(a.x, b.x);
}
