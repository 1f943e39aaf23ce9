//! Performance check on the full MNIST (70 000 × 784), ignored by default because it needs
//! `/work/shared/data/mnist`. Run with
//! `cargo test --release -p vaepipe-data --test mnist_full -- --ignored --nocapture`.
//! It prints the time of each step and asserts only correctness (exact round trips).

use std::path::Path;
use std::time::Instant;

use vaepipe_data::{
    Scale, apply_scale, read_dataset, read_idx, scale, split_validation, write_dataset,
};

#[test]
#[ignore = "needs the full MNIST in /work/shared/data/mnist; prints timings"]
fn full_mnist_pipeline_timings() {
    let src = Path::new("/work/shared/data/mnist");
    let dir = tempfile::tempdir().unwrap();
    let step = |name: &str, t: Instant| println!("{name:<32} {:>8.3} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let train = read_idx(
        &src.join("train-images-idx3-ubyte.gz"),
        Some(&src.join("train-labels-idx1-ubyte.gz")),
    )
    .unwrap();
    step("read IDX train (60000, gzip)", t);
    let t = Instant::now();
    let mut test = read_idx(
        &src.join("t10k-images-idx3-ubyte.gz"),
        Some(&src.join("t10k-labels-idx1-ubyte.gz")),
    )
    .unwrap();
    step("read IDX test (10000, gzip)", t);
    assert_eq!(
        (train.rows, test.rows, train.features),
        (60_000, 10_000, 784)
    );

    let t = Instant::now();
    let (mut train, mut val) = split_validation(&train, 10_000, 1).unwrap();
    step("split 50000/10000", t);
    let t = Instant::now();
    let factor = scale(&mut train, Scale::Max).unwrap();
    apply_scale(&mut val, factor).unwrap();
    apply_scale(&mut test, factor).unwrap();
    step("scale max (all three)", t);

    for (name, part) in [("train", &train), ("val", &val), ("test", &test)] {
        let path = dir.path().join(format!("{name}.parquet"));
        let t = Instant::now();
        write_dataset(&path, part).unwrap();
        step(&format!("write Parquet {name} ({} rows)", part.rows), t);
        let size = std::fs::metadata(&path).unwrap().len();
        let t = Instant::now();
        let back = read_dataset(&path).unwrap();
        step(
            &format!("read Parquet {name} ({:.1} MB)", size as f64 / 1e6),
            t,
        );
        assert_eq!(&back, part);
    }
}
