//! CSV and Parquet tests: good files, every validation error (checked for the file name, the
//! column and the row), exact dataset and table round trips, byte-identical output, atomic
//! writes, and truncated/corrupted Parquet files.

use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vaepipe_data::{
    Column, DataError, Dataset, Table, read_csv, read_dataset, read_parquet, read_table,
    split_validation, write_dataset, write_table,
};

fn put(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn err_text<T: std::fmt::Debug>(result: Result<T, DataError>) -> String {
    result.expect_err("expected an error").to_string()
}

/// A dataset whose values exercise f32 exactly: subnormals, -0.0, extremes, odd fractions.
fn awkward(rows: usize, features: usize) -> Dataset {
    let specials = [
        0.0f32,
        -0.0,
        1.0e-40,
        f32::MAX,
        f32::MIN_POSITIVE,
        -1.5,
        1.0 / 3.0,
        255.0,
    ];
    let x = (0..rows * features)
        .map(|k| specials[k % specials.len()] * if k % 3 == 0 { 1.0 } else { 0.999 })
        .collect();
    let names = (0..features).map(|j| format!("feat {j}")).collect();
    let labels = (0..rows).map(|i| i as i64 * 1_000_003 - 7).collect();
    Dataset::new(x, rows, names, Some(labels), None).unwrap()
}

fn no_leftovers(dir: &Path) {
    let tmp: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

#[test]
fn csv_with_labels_in_any_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = put(
        dir.path(),
        "good.csv",
        "a,digit,b\n1,3,0.5\n2,-4,1e-3\n-3.25,0,7\n",
    );
    let ds = read_csv(&p, Some("digit")).unwrap();
    assert_eq!((ds.rows, ds.features), (3, 2));
    assert_eq!(ds.feature_names, vec!["a", "b"]);
    assert_eq!(ds.x, vec![1.0, 0.5, 2.0, 1e-3, -3.25, 7.0]);
    assert_eq!(ds.labels, Some(vec![3, -4, 0]));
    assert_eq!(ds.image_shape, None);
    let all = read_csv(&p, None).unwrap();
    assert_eq!(all.feature_names, vec!["a", "digit", "b"]);
    assert_eq!(all.labels, None);
}

#[test]
fn csv_errors_name_file_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = put(dir.path(), "nolabel.csv", "x1,x2\n1,2\n");
    let e = err_text(read_csv(&p, Some("label")));
    assert!(
        e.contains("nolabel.csv") && e.contains("`label`") && e.contains("[x1, x2]"),
        "{e}"
    );

    let p = put(dir.path(), "text.csv", "x1,name,y\n1,abc,0\n2,def,1\n");
    let e = err_text(read_csv(&p, Some("y")));
    assert!(
        e.contains("text.csv") && e.contains("`name`") && e.contains("str"),
        "{e}"
    );

    let p = put(dir.path(), "floatlabel.csv", "x1,y\n1,0.5\n");
    let e = err_text(read_csv(&p, Some("y")));
    assert!(
        e.contains("floatlabel.csv") && e.contains("`y`") && e.contains("integers"),
        "{e}"
    );

    let p = put(dir.path(), "nan.csv", "x1,x2\n1,2\n3,NaN\n");
    let e = err_text(read_csv(&p, None));
    assert!(
        e.contains("nan.csv") && e.contains("`x2`") && e.contains("row 1") && e.contains("NaN"),
        "{e}"
    );

    let p = put(dir.path(), "inf.csv", "x1,x2\n1,2\ninf,3\n");
    let e = err_text(read_csv(&p, None));
    assert!(
        e.contains("inf.csv") && e.contains("`x1`") && e.contains("row 1") && e.contains("inf"),
        "{e}"
    );

    let p = put(dir.path(), "huge.csv", "x1\n1\n1e300\n");
    let e = err_text(read_csv(&p, None));
    assert!(
        e.contains("huge.csv") && e.contains("row 1") && e.contains("overflows f32"),
        "{e}"
    );

    let p = put(dir.path(), "hole.csv", "x1,x2\n1,2\n3,\n5,6\n");
    let e = err_text(read_csv(&p, None));
    assert!(
        e.contains("hole.csv")
            && e.contains("missing value")
            && e.contains("`x2`")
            && e.contains("row 1"),
        "{e}"
    );

    let p = put(dir.path(), "header-only.csv", "x1,x2\n");
    let e = err_text(read_csv(&p, None));
    assert!(
        e.contains("header-only.csv") && e.contains("no data rows"),
        "{e}"
    );

    let p = put(dir.path(), "empty.csv", "");
    let e = err_text(read_csv(&p, None));
    assert!(e.contains("empty.csv") && e.contains("no data rows"), "{e}");

    let p = put(dir.path(), "only-label.csv", "y\n1\n");
    let e = err_text(read_csv(&p, Some("y")));
    assert!(
        e.contains("only-label.csv") && e.contains("no feature columns"),
        "{e}"
    );

    let p = put(dir.path(), "ragged.csv", "x1,x2\n1,2\n3,4,5\n");
    let e = err_text(read_csv(&p, None));
    assert!(e.contains("ragged.csv") && e.contains("more fields"), "{e}");
    assert!(
        !e.contains("truncate_ragged_lines"),
        "polars-only advice must be cut: {e}"
    );

    let p = put(dir.path(), "dup.csv", "x1,x2,x1\n1,2,3\n");
    let e = err_text(read_csv(&p, None));
    assert!(
        e.contains("dup.csv") && e.contains("`x1`") && e.contains("repeated"),
        "{e}"
    );

    let p = put(dir.path(), "bad-utf8.csv", "x1,x2\n1,2\n");
    std::fs::write(&p, b"x1,x2\n1,2\n\xff\xfe,1\n").unwrap();
    let e = err_text(read_csv(&p, None));
    assert!(e.contains("bad-utf8.csv") && e.contains("utf-8"), "{e}");

    let e = err_text(read_csv(&dir.path().join("absent.csv"), None));
    assert!(e.contains("cannot open") && e.contains("absent.csv"), "{e}");
}

#[test]
fn dataset_round_trip_is_exact_and_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let ds = awkward(37, 11);
    let (train, val) = split_validation(&ds, 9, 3).unwrap();
    for (name, part) in [("all", &ds), ("train", &train), ("val", &val)] {
        let p = dir.path().join(format!("{name}.parquet"));
        write_dataset(&p, part).unwrap();
        let back = read_dataset(&p).unwrap();
        assert_eq!(back.index, part.index);
        assert_eq!(back.feature_names, part.feature_names);
        assert_eq!(back.labels, part.labels);
        // Bitwise equality (distinguishes -0.0 from 0.0).
        let bits = |d: &Dataset| d.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(part));
        assert_eq!(&back, part);
        // Same input, same bytes.
        let q = dir.path().join(format!("{name}-again.parquet"));
        write_dataset(&q, part).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
    }
    no_leftovers(dir.path());
}

#[test]
fn dataset_round_trip_keeps_image_shape_and_missing_labels() {
    let dir = tempfile::tempdir().unwrap();
    let names = (0..6).map(|j| format!("pixel_{j}")).collect();
    let mut ds = Dataset::new(
        (0..12).map(|v| v as f32).collect(),
        2,
        names,
        None,
        Some((2, 3)),
    )
    .unwrap();
    let p = dir.path().join("img.parquet");
    write_dataset(&p, &ds).unwrap();
    assert_eq!(read_dataset(&p).unwrap(), ds);
    // Overwriting an existing file replaces it.
    ds.x[0] = 99.0;
    ds.image_shape = None;
    write_dataset(&p, &ds).unwrap();
    assert_eq!(read_dataset(&p).unwrap(), ds);
    // A dataset with no rows (an empty validation split) also round-trips.
    let (_, empty) = split_validation(&ds, 0, 0).unwrap();
    write_dataset(&p, &empty).unwrap();
    assert_eq!(read_dataset(&p).unwrap(), empty);
}

#[test]
fn write_dataset_rejects_bad_names_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.parquet");
    let mk = |names: Vec<&str>, x: Vec<f32>| {
        Dataset::new(
            x,
            1,
            names.into_iter().map(String::from).collect(),
            None,
            None,
        )
        .unwrap()
    };
    let e = err_text(write_dataset(&p, &mk(vec!["a", "a"], vec![1.0, 2.0])));
    assert!(
        e.contains("bad.parquet") && e.contains("`a`") && e.contains("repeated"),
        "{e}"
    );
    let e = err_text(write_dataset(&p, &mk(vec!["a", "label"], vec![1.0, 2.0])));
    assert!(e.contains("`label`") && e.contains("reserved"), "{e}");
    let e = err_text(write_dataset(
        &p,
        &mk(vec!["a", "b"], vec![1.0, f32::INFINITY]),
    ));
    assert!(
        e.contains("bad.parquet") && e.contains("`b`") && e.contains("row 0"),
        "{e}"
    );
    assert!(!p.exists());
    no_leftovers(dir.path());
}

#[test]
fn generic_parquet_reader_uses_numeric_columns_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plain.parquet");
    let table = Table::new()
        .with("z", Column::F64(vec![0.5, 1.5]))
        .with("cls", Column::I64(vec![4, 2]))
        .with("a", Column::I64(vec![10, -20]));
    write_table(&p, &table).unwrap();
    let ds = read_parquet(&p, Some("cls")).unwrap();
    assert_eq!(ds.feature_names, vec!["z", "a"]);
    assert_eq!(ds.x, vec![0.5, 10.0, 1.5, -20.0]);
    assert_eq!(ds.labels, Some(vec![4, 2]));

    let e = err_text(read_parquet(&p, Some("target")));
    assert!(
        e.contains("plain.parquet") && e.contains("`target`") && e.contains("[z, cls, a]"),
        "{e}"
    );
    let e = err_text(read_parquet(&p, Some("z")));
    assert!(e.contains("`z`") && e.contains("integers"), "{e}");

    let with_text = table
        .clone()
        .with("who", Column::Str(vec!["p".into(), "q".into()]));
    write_table(&p, &with_text).unwrap();
    let e = err_text(read_parquet(&p, Some("cls")));
    assert!(
        e.contains("plain.parquet") && e.contains("`who`") && e.contains("str"),
        "{e}"
    );

    let with_nan = Table::new().with("v", Column::F64(vec![1.0, 2.0, f64::NAN]));
    write_table(&p, &with_nan).unwrap();
    let e = err_text(read_parquet(&p, None));
    assert!(
        e.contains("`v`") && e.contains("row 2") && e.contains("NaN"),
        "{e}"
    );

    let empty = Table::new().with("v", Column::F64(vec![]));
    write_table(&p, &empty).unwrap();
    let e = err_text(read_parquet(&p, None));
    assert!(
        e.contains("plain.parquet") && e.contains("no data rows"),
        "{e}"
    );

    // A plain table is not a dataset file.
    let e = err_text(read_dataset(&p));
    assert!(
        e.contains("plain.parquet") && e.contains("vaepipe.format"),
        "{e}"
    );
}

#[test]
fn table_round_trip_is_exact_and_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::new()
        .with("epoch", Column::I64(vec![1, 2, 3, i64::MIN]))
        .with("loss", Column::F64(vec![-0.0, f64::INFINITY, 1e-310, 0.1]))
        .with(
            "note",
            Column::Str(vec![
                "".into(),
                "ünïcode".into(),
                "a,b\n\"c\"".into(),
                "x".into(),
            ]),
        )
        .with("best", Column::Bool(vec![true, false, false, true]));
    let p = dir.path().join("history.parquet");
    write_table(&p, &table).unwrap();
    let back = read_table(&p).unwrap();
    assert_eq!(back, table);
    assert_eq!(back.source(), Some(p.as_path()));
    let bits: Vec<u64> = back
        .f64("loss")
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(
        bits,
        table
            .f64("loss")
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    let q = dir.path().join("history-again.parquet");
    write_table(&q, &table).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
    // NaN survives too (compared bitwise since NaN != NaN).
    let nan = Table::new().with("v", Column::F64(vec![f64::NAN]));
    write_table(&q, &nan).unwrap();
    assert!(read_table(&q).unwrap().f64("v").unwrap()[0].is_nan());
    no_leftovers(dir.path());
}

#[test]
fn table_accessors_and_validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("results.parquet");
    let table = Table::new()
        .with("nll", Column::F64(vec![1.0, 2.0]))
        .with("image", Column::I64(vec![0, 1]));
    write_table(&p, &table).unwrap();
    let back = read_table(&p).unwrap();
    assert_eq!(back.rows(), 2);
    assert_eq!(back.names(), vec!["nll", "image"]);
    assert_eq!(back.i64("image").unwrap(), &[0, 1]);
    let e = back.f64("elbo").unwrap_err().to_string();
    assert!(
        e.contains("results.parquet") && e.contains("`elbo`") && e.contains("[nll, image]"),
        "{e}"
    );
    let e = back.f64("image").unwrap_err().to_string();
    assert!(
        e.contains("results.parquet")
            && e.contains("`image`")
            && e.contains("i64")
            && e.contains("f64"),
        "{e}"
    );
    let e = back.str("nll").unwrap_err().to_string();
    assert!(e.contains("`nll`"), "{e}");
    let e = table.bool("missing").unwrap_err().to_string();
    assert!(e.contains("in-memory table"), "{e}");

    let ragged = table.clone().with("extra", Column::Bool(vec![true]));
    let q = dir.path().join("ragged.parquet");
    let e = err_text(write_table(&q, &ragged));
    assert!(
        e.contains("ragged.parquet") && e.contains("`extra`") && e.contains("1 values, expected 2"),
        "{e}"
    );
    let dup = table.clone().with("nll", Column::F64(vec![0.0, 0.0]));
    let e = err_text(write_table(&q, &dup));
    assert!(e.contains("`nll`") && e.contains("repeated"), "{e}");
    assert!(!q.exists());
    no_leftovers(dir.path());
}

#[test]
fn corrupted_parquet_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    write_dataset(&good, &awkward(20, 5)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.path().join("broken.parquet");

    std::fs::write(&bad, b"x1,x2\n1,2\n").unwrap();
    let e = err_text(read_dataset(&bad));
    assert!(
        e.contains("broken.parquet") && e.contains("not a Parquet file"),
        "{e}"
    );

    // Truncations at many offsets, through every reader.
    let step = (bytes.len() / 60).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let e = err_text(read_dataset(&bad));
        assert!(e.contains("broken.parquet"), "cut {cut}: {e}");
        assert!(read_parquet(&bad, None).is_err(), "cut {cut}");
        assert!(read_table(&bad).is_err(), "cut {cut}");
    }
    // Random byte flips inside a valid file: an error or a consistent dataset, never a panic.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..100 {
        let mut flipped = bytes.clone();
        let k = (rng.next_u32() as usize) % flipped.len();
        flipped[k] ^= 1 << (rng.next_u32() % 8);
        std::fs::write(&bad, &flipped).unwrap();
        match read_dataset(&bad) {
            Ok(ds) => ds.validate().unwrap(),
            Err(e) => assert!(e.to_string().contains("broken.parquet"), "{e}"),
        }
    }
    // Random bytes framed by valid magic numbers.
    for _ in 0..50 {
        let mut junk = vec![0u8; 64 + (rng.next_u32() % 256) as usize];
        rng.fill_bytes(&mut junk);
        junk[..4].copy_from_slice(b"PAR1");
        let n = junk.len();
        junk[n - 4..].copy_from_slice(b"PAR1");
        std::fs::write(&bad, &junk).unwrap();
        assert!(read_table(&bad).is_err());
    }
}
