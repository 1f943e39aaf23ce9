//! Reading and writing IDX files (the MNIST format), raw or gzip-compressed.
//!
//! Format: big-endian; magic `0x00000803` for unsigned-byte images (3 dimensions: count,
//! height, width) or `0x00000801` for unsigned-byte labels (1 dimension: count), then one `u32`
//! per dimension, then the bytes row-major. Compression is detected from the gzip magic bytes
//! `1f 8b`, never from the file extension.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

use crate::atomic::write_atomic;
use crate::dataset::Dataset;
use crate::error::DataError;

/// Magic number of an unsigned-byte IDX file with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an unsigned-byte IDX file with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Whether [`write_idx`] compresses its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxCompression {
    /// Plain IDX bytes.
    Raw,
    /// gzip, level 9, no file name and modification time 0 (so output is deterministic).
    Gzip,
}

/// Reads IDX images (and optionally labels) into a dataset of `count` rows and
/// `height × width` features holding the raw byte values 0–255 as f32.
///
/// Feature names are `pixel_0`, `pixel_1`, … (row-major), `image_shape` is
/// `Some((height, width))` and `index` is `0..count`.
pub fn read_idx(images: &Path, labels: Option<&Path>) -> Result<Dataset, DataError> {
    let image_file = read_idx_file(images, IDX_IMAGES_MAGIC)?;
    // The images magic number fixes 3 dimensions; checked again rather than assumed.
    let [count, height, width] = image_file.dims[..] else {
        return Err(DataError::IdxDims {
            path: images.to_path_buf(),
            dims: image_file.dims,
            problem: "expected 3 dimensions (count, height, width)",
        });
    };
    let (count, height, width) = (count as usize, height as usize, width as usize);
    let labels = match labels {
        None => None,
        Some(label_path) => {
            let label_file = read_idx_file(label_path, IDX_LABELS_MAGIC)?;
            if label_file.data.len() != count {
                return Err(DataError::CountMismatch {
                    images: images.to_path_buf(),
                    labels: label_path.to_path_buf(),
                    images_count: count,
                    labels_count: label_file.data.len(),
                });
            }
            Some(label_file.data.iter().map(|&b| i64::from(b)).collect())
        }
    };
    let features = height * width;
    Ok(Dataset {
        x: image_file.data.iter().map(|&b| f32::from(b)).collect(),
        rows: count,
        features,
        labels,
        feature_names: (0..features).map(|j| format!("pixel_{j}")).collect(),
        image_shape: Some((height, width)),
        index: (0..count).collect(),
    })
}

/// Writes a dataset as IDX images (and labels, if `labels` is given), atomically.
///
/// The dataset must have an `image_shape`, every value must be an integer in 0–255, and when
/// `labels` is given it must have labels in 0–255. Reading the files back with [`read_idx`]
/// gives the same values, labels and shape (feature names and `index` are not stored).
pub fn write_idx(
    images: &Path,
    labels: Option<&Path>,
    dataset: &Dataset,
    compression: IdxCompression,
) -> Result<(), DataError> {
    dataset.validate()?;
    let (height, width) = dataset.image_shape.ok_or_else(|| {
        DataError::InvalidArgument(format!(
            "cannot write {} as IDX images: the dataset has no image shape",
            images.display()
        ))
    })?;
    let features = dataset.features.max(1);
    let mut pixels = Vec::with_capacity(dataset.x.len());
    for (k, &v) in dataset.x.iter().enumerate() {
        if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
            return Err(DataError::OutOfRange {
                row: k / features,
                column: k % features,
                value: v,
                expected: "the integers 0..=255 (IDX unsigned bytes)",
            });
        }
        pixels.push(v as u8);
    }
    let label_bytes = match labels {
        None => None,
        Some(path) => {
            let values = dataset.labels.as_ref().ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "cannot write {}: the dataset has no labels",
                    path.display()
                ))
            })?;
            let mut bytes = Vec::with_capacity(values.len());
            for (row, &label) in values.iter().enumerate() {
                let byte = u8::try_from(label).map_err(|_| {
                    DataError::InvalidArgument(format!(
                        "cannot write {}: label {label} at row {row} is outside 0..=255",
                        path.display()
                    ))
                })?;
                bytes.push(byte);
            }
            Some((path, bytes))
        }
    };
    let dim = |n: usize, what: &str| {
        u32::try_from(n).map_err(|_| {
            DataError::InvalidArgument(format!("{what} {n} does not fit in an IDX u32 dimension"))
        })
    };
    let image_dims = [
        dim(dataset.rows, "row count")?,
        dim(height, "height")?,
        dim(width, "width")?,
    ];
    write_idx_file(images, IDX_IMAGES_MAGIC, &image_dims, &pixels, compression)?;
    if let Some((path, bytes)) = label_bytes {
        write_idx_file(
            path,
            IDX_LABELS_MAGIC,
            &[dim(dataset.rows, "row count")?],
            &bytes,
            compression,
        )?;
    }
    Ok(())
}

/// A parsed IDX file: its dimensions and its data bytes.
struct IdxFile {
    dims: Vec<u32>,
    data: Vec<u8>,
}

fn magic_meaning(magic: u32) -> &'static str {
    match magic {
        IDX_IMAGES_MAGIC => "unsigned-byte images with 3 dimensions",
        _ => "unsigned-byte labels with 1 dimension",
    }
}

/// Reads and validates one IDX file whose magic number must be `magic`.
fn read_idx_file(path: &Path, magic: u32) -> Result<IdxFile, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, "open", e))?;
    let mut reader = BufReader::new(file);
    let mut head = [0u8; 2];
    let n = read_full(&mut reader, &mut head).map_err(|e| DataError::io(path, "read", e))?;
    let is_gzip = n == 2 && head == [0x1f, 0x8b];
    let prefix = std::io::Cursor::new(head[..n].to_vec());
    if is_gzip {
        let decoder = MultiGzDecoder::new(prefix.chain(reader));
        parse_idx(path, decoder, magic, true)
    } else {
        parse_idx(path, prefix.chain(reader), magic, false)
    }
}

/// Parses IDX content from `input` (already decompressed if it was gzip).
fn parse_idx(
    path: &Path,
    mut input: impl Read,
    magic: u32,
    gzip: bool,
) -> Result<IdxFile, DataError> {
    let what = if gzip { "decompressed content" } else { "file" };
    let read_err = |e: std::io::Error| {
        if gzip {
            DataError::Gzip {
                path: path.to_path_buf(),
                source: e,
            }
        } else {
            DataError::io(path, "read", e)
        }
    };
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    let mut header = vec![0u8; header_len];
    let got = read_full(&mut input, &mut header).map_err(read_err)?;
    if got >= 4 {
        let found = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if found != magic {
            return Err(DataError::IdxMagic {
                path: path.to_path_buf(),
                found,
                expected: magic,
                what: magic_meaning(magic),
            });
        }
    }
    if got < header_len {
        return Err(DataError::Size {
            path: path.to_path_buf(),
            what,
            expected: header_len as u64,
            found: got as u64,
        });
    }
    let dims: Vec<u32> = header[4..]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if dims[0] == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            what: "the IDX header declares 0 items",
        });
    }
    if dims[1..].contains(&0) {
        return Err(DataError::IdxDims {
            path: path.to_path_buf(),
            dims,
            problem: "an image dimension is 0",
        });
    }
    let data_len = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| DataError::IdxDims {
            path: path.to_path_buf(),
            dims: dims.clone(),
            problem: "their product overflows",
        })?;
    // Read at most one byte more than declared: enough to detect trailing data without
    // trusting the header for an allocation size.
    let mut data = Vec::new();
    (&mut input)
        .take(data_len + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    let found = data.len() as u64;
    if found != data_len {
        return Err(DataError::Size {
            path: path.to_path_buf(),
            what,
            expected: header_len as u64 + data_len,
            found: header_len as u64 + found,
        });
    }
    Ok(IdxFile { dims, data })
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn write_idx_file(
    path: &Path,
    magic: u32,
    dims: &[u32],
    data: &[u8],
    compression: IdxCompression,
) -> Result<(), DataError> {
    let mut bytes = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    bytes.extend_from_slice(&magic.to_be_bytes());
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    write_atomic(path, |out| {
        let io_err = |e| DataError::io(path, "write", e);
        match compression {
            IdxCompression::Raw => out.write_all(&bytes).map_err(io_err),
            IdxCompression::Gzip => {
                // mtime 0 and OS byte 3 (Unix), like `gzip -9 -n` on Linux: deterministic.
                let mut encoder = GzBuilder::new()
                    .mtime(0)
                    .operating_system(3)
                    .write(out, Compression::best());
                encoder.write_all(&bytes).map_err(io_err)?;
                encoder.finish().map_err(io_err)?;
                Ok(())
            }
        }
    })
}
