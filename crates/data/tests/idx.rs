//! IDX reader/writer tests: hand-built raw and gzip fixtures, round trips, every validation
//! error (checked for the file name and the problem), truncation/corruption fuzzing, and the
//! embedded MNIST subset shipped in `data/mnist-subset`.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vaepipe_data::{DataError, Dataset, IdxCompression, read_idx, summary, write_idx};

/// Builds IDX bytes by hand (independently of `write_idx`).
fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Three 2×3 images with pixel values 10*i + j and labels 7, 0, 255.
fn fixture() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3u8)
        .flat_map(|i| (0..6u8).map(move |j| 10 * i + j))
        .collect();
    (
        idx_bytes(0x803, &[3, 2, 3], &pixels),
        idx_bytes(0x801, &[3], &[7, 0, 255]),
    )
}

fn assert_fixture(ds: &Dataset) {
    assert_eq!((ds.rows, ds.features, ds.image_shape), (3, 6, Some((2, 3))));
    assert_eq!(ds.row(1), &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0]);
    assert_eq!(ds.labels.as_deref(), Some(&[7, 0, 255][..]));
    assert_eq!(ds.index, vec![0, 1, 2]);
    assert_eq!(ds.feature_names[5], "pixel_5");
}

fn err_text(result: Result<Dataset, DataError>) -> String {
    match result {
        Ok(ds) => panic!("expected an error, got a dataset of {} rows", ds.rows),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_raw_and_gzip_fixtures_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = fixture();
    // Misleading extensions: detection must use the magic bytes.
    let raw_i = put(dir.path(), "raw-images.gz", &images);
    let raw_l = put(dir.path(), "raw-labels.gz", &labels);
    let gz_i = put(dir.path(), "gz-images.idx", &gzip(&images));
    let gz_l = put(dir.path(), "gz-labels.idx", &gzip(&labels));
    let raw = read_idx(&raw_i, Some(&raw_l)).unwrap();
    let gz = read_idx(&gz_i, Some(&gz_l)).unwrap();
    assert_fixture(&raw);
    assert_eq!(raw, gz);
    let unlabeled = read_idx(&gz_i, None).unwrap();
    assert_eq!(unlabeled.labels, None);
    assert_eq!(unlabeled.x, raw.x);
}

#[test]
fn write_idx_round_trips_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = fixture();
    let src = read_idx(
        &put(dir.path(), "i", &images),
        Some(&put(dir.path(), "l", &labels)),
    )
    .unwrap();
    for (compression, tag) in [(IdxCompression::Raw, "raw"), (IdxCompression::Gzip, "gz")] {
        let (pi, pl) = (
            dir.path().join(format!("{tag}-i")),
            dir.path().join(format!("{tag}-l")),
        );
        write_idx(&pi, Some(&pl), &src, compression).unwrap();
        let first = (std::fs::read(&pi).unwrap(), std::fs::read(&pl).unwrap());
        assert_eq!(read_idx(&pi, Some(&pl)).unwrap(), src);
        if compression == IdxCompression::Raw {
            // The raw writer must produce exactly the standard layout.
            assert_eq!(first, (images.clone(), labels.clone()));
        } else {
            assert_eq!(&first.0[..2], &[0x1f, 0x8b]);
        }
        write_idx(&pi, Some(&pl), &src, compression).unwrap();
        assert_eq!(
            first,
            (std::fs::read(&pi).unwrap(), std::fs::read(&pl).unwrap())
        );
    }
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn write_idx_rejects_values_that_are_not_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let names = (0..4).map(|j| format!("p{j}")).collect();
    let mut ds = Dataset::new(
        vec![0.0, 1.0, 2.0, 0.5],
        1,
        names,
        Some(vec![3]),
        Some((2, 2)),
    )
    .unwrap();
    let out = dir.path().join("x.idx");
    let e = write_idx(&out, None, &ds, IdxCompression::Raw)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 0, column 3") && e.contains("0..=255"),
        "{e}"
    );
    ds.x[3] = 3.0;
    ds.labels = Some(vec![300]);
    let e = write_idx(
        &out,
        Some(&dir.path().join("l.idx")),
        &ds,
        IdxCompression::Raw,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("label 300"), "{e}");
    ds.image_shape = None;
    let e = write_idx(&out, None, &ds, IdxCompression::Raw)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no image shape"), "{e}");
    assert!(!out.exists());
}

#[test]
fn bad_magic_names_file_and_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = fixture();
    let i = put(dir.path(), "imgs.idx", &images);
    let l = put(dir.path(), "labs.idx", &labels);
    // Files swapped: labels given as images and vice versa.
    let e = err_text(read_idx(&l, Some(&i)));
    assert!(
        e.contains("labs.idx") && e.contains("0x00000801") && e.contains("0x00000803"),
        "{e}"
    );
    let e = err_text(read_idx(&i, Some(&i)));
    assert!(
        e.contains("imgs.idx") && e.contains("expected 0x00000801"),
        "{e}"
    );
    // Another element type (0x0d = float) with gzip.
    let f = put(
        dir.path(),
        "float.gz",
        &gzip(&idx_bytes(0xd03, &[1, 1, 1], &[0; 4])),
    );
    let e = err_text(read_idx(&f, None));
    assert!(e.contains("float.gz") && e.contains("0x00000d03"), "{e}");
}

#[test]
fn wrong_dims_and_empty_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let zero_height = put(dir.path(), "zh.idx", &idx_bytes(0x803, &[2, 0, 3], &[]));
    let e = err_text(read_idx(&zero_height, None));
    assert!(
        e.contains("zh.idx") && e.contains("[2, 0, 3]") && e.contains("dimension is 0"),
        "{e}"
    );
    let zero_items = put(dir.path(), "zero.idx", &idx_bytes(0x803, &[0, 28, 28], &[]));
    let e = err_text(read_idx(&zero_items, None));
    assert!(e.contains("zero.idx") && e.contains("0 items"), "{e}");
    let huge = put(
        dir.path(),
        "huge.idx",
        &idx_bytes(0x803, &[u32::MAX; 3], &[1, 2, 3]),
    );
    let e = err_text(read_idx(&huge, None));
    // Either the product overflows or the file is far too short; never an allocation attempt.
    assert!(
        e.contains("huge.idx") && (e.contains("overflows") || e.contains("truncated")),
        "{e}"
    );
    let empty = put(dir.path(), "empty.idx", &[]);
    let e = err_text(read_idx(&empty, None));
    assert!(
        e.contains("empty.idx") && e.contains("expected 16 bytes, found 0"),
        "{e}"
    );
    let missing = dir.path().join("nope.idx");
    let e = err_text(read_idx(&missing, None));
    assert!(e.contains("cannot open") && e.contains("nope.idx"), "{e}");
}

#[test]
fn size_errors_give_expected_and_found_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = fixture();
    let short = put(dir.path(), "short.idx", &images[..images.len() - 5]);
    let e = err_text(read_idx(&short, None));
    assert!(
        e.contains("short.idx")
            && e.contains("expected 34 bytes, found 29")
            && e.contains("truncated"),
        "{e}"
    );
    let mut long = images.clone();
    long.push(0);
    let long = put(dir.path(), "long.idx", &long);
    let e = err_text(read_idx(&long, None));
    assert!(e.contains("long.idx") && e.contains("trailing"), "{e}");
    let gz_short = put(dir.path(), "short.gz", &gzip(&images[..30]));
    let e = err_text(read_idx(&gz_short, None));
    assert!(
        e.contains("decompressed content") && e.contains("expected 34 bytes, found 30"),
        "{e}"
    );
    let _ = labels;
}

#[test]
fn label_count_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = fixture();
    let i = put(dir.path(), "three-images", &images);
    let l = put(dir.path(), "two-labels", &idx_bytes(0x801, &[2], &[1, 2]));
    let e = err_text(read_idx(&i, Some(&l)));
    assert!(
        e.contains("three-images")
            && e.contains("two-labels")
            && e.contains("2 labels")
            && e.contains("3 images"),
        "{e}"
    );
}

#[test]
fn gzip_corruption_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = fixture();
    let good = gzip(&images);
    // Corrupt the CRC32 in the trailer: decompression succeeds, the checksum does not.
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 6] ^= 0xff;
    let p = put(dir.path(), "crc.gz", &bad_crc);
    let e = err_text(read_idx(&p, None));
    assert!(e.contains("crc.gz") && e.contains("gzip"), "{e}");
    // Garbage after a complete gzip member.
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage!");
    let p = put(dir.path(), "trail.gz", &trailing);
    let e = err_text(read_idx(&p, None));
    assert!(e.contains("trail.gz"), "{e}");
}

#[test]
fn truncation_at_every_offset_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = fixture();
    let full_l = put(dir.path(), "labels", &labels);
    for bytes in [images.clone(), gzip(&images)] {
        for cut in 0..bytes.len() {
            let p = put(dir.path(), "cut", &bytes[..cut]);
            let e = err_text(read_idx(&p, Some(&full_l)));
            assert!(e.contains("cut"), "cut at {cut}: {e}");
        }
    }
    for bytes in [labels.clone(), gzip(&labels)] {
        for cut in 0..bytes.len() {
            let p = put(dir.path(), "cut-labels", &bytes[..cut]);
            let i = put(dir.path(), "images", &images);
            let e = err_text(read_idx(&i, Some(&p)));
            assert!(e.contains("cut-labels"), "cut at {cut}: {e}");
        }
    }
}

#[test]
fn random_and_bit_flipped_inputs_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (images, _) = fixture();
    let gz = gzip(&images);
    for round in 0..300 {
        let len = (rng.next_u32() % 64) as usize;
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if round % 3 == 0 && len >= 2 {
            bytes[..2].copy_from_slice(&[0x1f, 0x8b]); // pretend to be gzip
        }
        let p = put(dir.path(), "random", &bytes);
        // Random bytes are (overwhelmingly) invalid; the point is no panic and a named file.
        if let Err(e) = read_idx(&p, None) {
            assert!(e.to_string().contains("random"), "{e}");
        }
        // Flip one byte of a valid gzip file.
        let mut flipped = gz.clone();
        let k = (rng.next_u32() as usize) % flipped.len();
        flipped[k] ^= 1 << (rng.next_u32() % 8);
        let p = put(dir.path(), "flipped", &flipped);
        match read_idx(&p, None) {
            Ok(ds) => assert_eq!(ds.rows * ds.features, ds.x.len()),
            Err(e) => assert!(e.to_string().contains("flipped"), "{e}"),
        }
    }
}

fn subset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-subset")
}

#[test]
fn embedded_mnist_subset_has_the_documented_shape() {
    let dir = subset_dir();
    for (images, labels, rows) in [
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
    ] {
        let ds = read_idx(&dir.join(images), Some(&dir.join(labels))).unwrap();
        assert_eq!(
            (ds.rows, ds.features, ds.image_shape),
            (rows, 784, Some((28, 28)))
        );
        let s = summary(&ds);
        // Every digit occurs, and nothing else.
        assert_eq!(
            s.label_counts.keys().copied().collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert!(
            s.label_counts.values().all(|&c| c > rows / 20),
            "{:?}",
            s.label_counts
        );
        assert_eq!((s.min, s.max), (Some(0.0), Some(255.0)));
        // MNIST's mean intensity is about 33.3/255 of the maximum.
        let mean = s.mean.unwrap();
        assert!((30.0..37.0).contains(&mean), "mean {mean}");
    }
}

/// The subset must be exactly the first rows of the full MNIST (when the full set is present).
#[test]
fn embedded_subset_is_a_prefix_of_full_mnist() {
    let full = Path::new("/work/shared/data/mnist");
    if !full.exists() {
        eprintln!("full MNIST not present; skipping prefix check");
        return;
    }
    let sub = read_idx(
        &subset_dir().join("t10k-images-idx3-ubyte.gz"),
        Some(&subset_dir().join("t10k-labels-idx1-ubyte.gz")),
    )
    .unwrap();
    let all = read_idx(
        &full.join("t10k-images-idx3-ubyte.gz"),
        Some(&full.join("t10k-labels-idx1-ubyte.gz")),
    )
    .unwrap();
    let n = sub.rows;
    assert_eq!(sub.x[..], all.x[..n * 784]);
    assert_eq!(sub.labels.unwrap()[..], all.labels.unwrap()[..n]);
}
