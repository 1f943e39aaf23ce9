//! Builds the embedded default dataset `data/mnist-subset/` from a full MNIST copy: the FIRST
//! 10 000 training images/labels and the FIRST 2 000 test images/labels, written as gzipped IDX
//! (level 9, mtime 0, no file name: deterministic) under the standard file names, and prints
//! the row and label counts of each part. The README's md5s come from `md5sum`.
//!
//! Usage (from the workspace root):
//! `cargo run --release -p vaepipe-data --example make_subset -- /work/shared/data/mnist data/mnist-subset`

use std::path::PathBuf;
use std::process::ExitCode;

use vaepipe_data::{IdxCompression, read_idx, subset, summary, write_idx};

const PARTS: [(&str, &str, usize); 2] = [
    (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        10_000,
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        2_000,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, target] = &args[..] else {
        eprintln!("usage: make_subset <full-mnist-dir> <output-dir>");
        return ExitCode::FAILURE;
    };
    match run(PathBuf::from(source), PathBuf::from(target)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(source: PathBuf, target: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&target)?;
    for (images, labels, n) in PARTS {
        let full = read_idx(&source.join(images), Some(&source.join(labels)))?;
        if full.rows < n {
            return Err(format!("{images} has only {} rows, need {n}", full.rows).into());
        }
        let first: Vec<usize> = (0..n).collect();
        let part = subset(&full, &first)?;
        write_idx(
            &target.join(images),
            Some(&target.join(labels)),
            &part,
            IdxCompression::Gzip,
        )?;
        let s = summary(&part);
        println!(
            "{images}: first {n} of {} rows, label counts {:?}",
            full.rows, s.label_counts
        );
    }
    Ok(())
}
