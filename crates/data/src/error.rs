//! The crate's error type: one enum whose messages name the file, the column, the row and what
//! was expected versus found, so that a user can fix the input without reading the source.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading, transforming or writing data.
///
/// Rows are 0-based data rows (a CSV header line is not counted), matching the `index` column
/// written by [`crate::write_dataset`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The operating system refused an operation on a file.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being attempted ("open", "read", "rename to ...").
        action: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A gzip stream could not be decompressed (corrupt, truncated, bad checksum).
    #[error("{}: corrupt or truncated gzip stream: {source}", path.display())]
    Gzip {
        /// The compressed file.
        path: PathBuf,
        /// The decompressor's error.
        source: std::io::Error,
    },

    /// An IDX file starts with the wrong magic number.
    #[error(
        "{}: bad IDX magic number 0x{found:08x}, expected 0x{expected:08x} ({what})",
        path.display()
    )]
    IdxMagic {
        /// The IDX file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        found: u32,
        /// The magic number this reader accepts here.
        expected: u32,
        /// What that magic number stands for.
        what: &'static str,
    },

    /// An IDX header declares dimensions this crate cannot use.
    #[error("{}: invalid IDX dimensions {dims:?}: {problem}", path.display())]
    IdxDims {
        /// The IDX file.
        path: PathBuf,
        /// The dimensions as declared in the header.
        dims: Vec<u32>,
        /// Why they are unusable.
        problem: &'static str,
    },

    /// A file (or its decompressed content) is shorter or longer than its header says.
    #[error(
        "{}: {what} has the wrong size: expected {expected} bytes, found {found}{}",
        path.display(),
        if found < expected { " (truncated)" } else { " (trailing bytes)" }
    )]
    Size {
        /// The file.
        path: PathBuf,
        /// "file" or "decompressed content".
        what: &'static str,
        /// Size implied by the header.
        expected: u64,
        /// Size found (for an over-long file, at least this many bytes).
        found: u64,
    },

    /// An image file and a label file disagree on the number of items.
    #[error(
        "{} has {labels_count} labels but {} has {images_count} images",
        labels.display(),
        images.display()
    )]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// Number of images.
        images_count: usize,
        /// Number of labels.
        labels_count: usize,
    },

    /// A requested column does not exist.
    #[error("{origin}: no column `{column}`; columns present: [{}]", present.join(", "))]
    MissingColumn {
        /// The file the table came from, or "in-memory table".
        origin: String,
        /// The requested column.
        column: String,
        /// The columns that do exist, in order.
        present: Vec<String>,
    },

    /// A column has a type that cannot be used where it is.
    #[error("{origin}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        /// The file the table came from, or "in-memory table".
        origin: String,
        /// The offending column.
        column: String,
        /// What was needed ("a number", "integer labels", "f64", ...).
        expected: String,
        /// The type present.
        found: String,
    },

    /// A column has a different number of values than the others.
    #[error(
        "{origin}: column `{column}` has {found} values, expected {expected} (the length of the first column)"
    )]
    ColumnLength {
        /// The file being written or read, or "in-memory table".
        origin: String,
        /// The offending column.
        column: String,
        /// Length of the first column.
        expected: usize,
        /// Length of this column.
        found: usize,
    },

    /// A column name is empty, reserved or repeated.
    #[error("{origin}: invalid column name `{column}`: {problem}")]
    ColumnName {
        /// The file being written, or "in-memory table".
        origin: String,
        /// The offending name.
        column: String,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// A cell is empty / null.
    #[error("{}: missing value in column `{column}`, row {row}", path.display())]
    MissingValue {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The first row with a missing value.
        row: usize,
    },

    /// A feature value is NaN or infinite (or does not fit in an f32).
    #[error("{}: non-finite value {value} in column `{column}`, row {row}", path.display())]
    NonFinite {
        /// The file read or written.
        path: PathBuf,
        /// The column.
        column: String,
        /// The first offending row.
        row: usize,
        /// The value as text ("NaN", "inf", "1e300 (overflows f32)").
        value: String,
    },

    /// A table or file holds no rows or no feature columns.
    #[error("{}: {what}", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// What is missing ("no data rows", "no feature columns").
        what: &'static str,
    },

    /// A file is not in the expected format, or the format library rejected it.
    #[error("{}: {action}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What was being done ("reading Parquet", "parsing CSV", ...).
        action: &'static str,
        /// The reason, as reported by the parser.
        message: String,
    },

    /// A value lies outside the range an operation requires.
    #[error("value {value} at row {row}, column {column} is outside {expected}")]
    OutOfRange {
        /// Row of the offending value.
        row: usize,
        /// Column (feature) index of the offending value.
        column: usize,
        /// The value.
        value: f32,
        /// The allowed range, as text.
        expected: &'static str,
    },

    /// A [`crate::Dataset`] whose fields contradict each other.
    #[error("inconsistent dataset: {0}")]
    Shape(String),

    /// An argument to a transform is invalid (for example more validation rows than rows).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl DataError {
    pub(crate) fn io(path: &Path, action: impl Into<String>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            action: action.into(),
            source,
        }
    }

    pub(crate) fn format(path: &Path, action: &'static str, message: impl fmt::Display) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            action,
            message: message.to_string(),
        }
    }
}
