//! Bad input never panics, checked at scale (proptest): arbitrary bytes, and valid files with
//! random byte edits and truncations, fed to the IDX (raw and gzip), CSV, Parquet and
//! vaepipe-dataset readers. Every call returns `Ok` or a `DataError` naming the file; none
//! panics. Case counts are small so that the suite stays fast.

use std::path::Path;

use proptest::prelude::*;
use vaepipe_data::{
    Dataset, IdxCompression, read_csv, read_dataset, read_idx, read_parquet, write_dataset,
    write_idx,
};

/// A small labelled 3×4 image dataset.
fn sample() -> Dataset {
    let rows = 5;
    let x: Vec<f32> = (0..rows * 12).map(|i| (i * 37 % 256) as f32).collect();
    let names = (0..12).map(|i| format!("pixel_{i}")).collect();
    Dataset::new(x, rows, names, Some(vec![0, 1, 2, 1, 0]), Some((3, 4))).unwrap()
}

/// The bytes of valid files written by this crate's writers (and a CSV by hand).
struct Valid {
    idx_images: Vec<u8>,
    idx_labels: Vec<u8>,
    idx_gz: Vec<u8>,
    parquet: Vec<u8>,
    csv: Vec<u8>,
}

fn valid() -> Valid {
    let dir = tempfile::tempdir().unwrap();
    let d = sample();
    let (im, lb) = (dir.path().join("im"), dir.path().join("lb"));
    write_idx(&im, Some(&lb), &d, IdxCompression::Raw).unwrap();
    let (gz, gzl) = (dir.path().join("gz"), dir.path().join("gzl"));
    write_idx(&gz, Some(&gzl), &d, IdxCompression::Gzip).unwrap();
    let pq = dir.path().join("d.parquet");
    write_dataset(&pq, &d).unwrap();
    let mut csv = String::from("a,b,label\n");
    for i in 0..6 {
        csv.push_str(&format!("{i},{}.5,{}\n", i * 2, i % 3));
    }
    Valid {
        idx_images: std::fs::read(&im).unwrap(),
        idx_labels: std::fs::read(&lb).unwrap(),
        idx_gz: std::fs::read(&gz).unwrap(),
        parquet: std::fs::read(&pq).unwrap(),
        csv: csv.into_bytes(),
    }
}

/// `base` with up to 8 bytes overwritten and an optional truncation.
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = base.to_vec();
    for (pos, val) in edits {
        if !b.is_empty() {
            let i = pos % b.len();
            b[i] = *val;
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (base.len() + 1));
    }
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs every reader on `bytes` (as each kind of file); only errors or values, no panic.
fn read_all(bytes: &[u8], labels: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "input", bytes);
    let l = write(dir.path(), "labels", labels);
    for r in [
        read_idx(&f, None).map(|_| ()),
        read_idx(&f, Some(&l)).map(|_| ()),
        read_csv(&f, None).map(|_| ()),
        read_csv(&f, Some("label")).map(|_| ()),
        read_parquet(&f, None).map(|_| ()),
        read_parquet(&f, Some("label")).map(|_| ()),
        read_dataset(&f).map(|_| ()),
    ] {
        if let Err(e) = r {
            // Errors name the file they are about.
            let text = e.to_string();
            assert!(
                text.contains("input") || text.contains("labels"),
                "error without the file name: {text}"
            );
        }
    }
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)
}

/// Truncations, mostly inside headers.
fn cut() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        1 => Just(None),
        3 => prop_oneof![3 => 0usize..24, 1 => any::<usize>()].prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_errors_not_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        labels in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        read_all(&bytes, &labels);
    }

    #[test]
    fn damaged_idx_files_are_errors_not_panics(
        which in 0..3usize,
        e in edits(),
        cut in cut(),
        le in edits(),
        lcut in cut(),
    ) {
        let v = valid();
        let base = [&v.idx_images, &v.idx_gz, &v.idx_labels][which];
        read_all(&mutate(base, &e, cut), &mutate(&v.idx_labels, &le, lcut));
    }

    #[test]
    fn damaged_parquet_and_csv_files_are_errors_not_panics(
        parquet in any::<bool>(),
        e in edits(),
        cut in cut(),
    ) {
        let v = valid();
        let base = if parquet { &v.parquet } else { &v.csv };
        read_all(&mutate(base, &e, cut), &v.idx_labels);
    }
}

#[test]
fn the_unmodified_files_read() {
    let v = valid();
    let dir = tempfile::tempdir().unwrap();
    let im = write(dir.path(), "im", &v.idx_images);
    let lb = write(dir.path(), "lb", &v.idx_labels);
    let gz = write(dir.path(), "gz", &v.idx_gz);
    assert_eq!(read_idx(&im, Some(&lb)).unwrap().rows, 5);
    assert_eq!(read_idx(&gz, Some(&lb)).unwrap().rows, 5);
    let pq = write(dir.path(), "d.parquet", &v.parquet);
    assert_eq!(read_dataset(&pq).unwrap(), sample());
    let csv = write(dir.path(), "d.csv", &v.csv);
    assert_eq!(read_csv(&csv, Some("label")).unwrap().rows, 6);
}
