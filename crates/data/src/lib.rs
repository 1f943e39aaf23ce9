//! Datasets and small tables on disk for vaepipe.
//!
//! - [`Dataset`]: a dense row-major f32 matrix with optional integer labels, read from IDX
//!   ([`read_idx`], raw or gzip), CSV ([`read_csv`]) or Parquet ([`read_parquet`]), and stored
//!   between stages with [`write_dataset`] / [`read_dataset`] (exact round trip).
//! - Pure transforms: [`scale`], [`apply_scale`], [`binarize_threshold`], [`binarize_static`],
//!   [`split_validation`], [`split_holdout`], [`subset`], plus [`summary`].
//! - [`Table`]: small typed tables (training history, per-image results) stored as Parquet with
//!   [`write_table`] / [`read_table`].
//!
//! All writes are atomic (temporary file in the same directory, fsync, rename) and produce
//! byte-identical files for identical input. Readers never panic on malformed input: every
//! problem is a [`DataError`] naming the file and, where it applies, the column and row.
//! Polars is an implementation detail: it appears in no public signature.

mod atomic;
mod dataset;
mod error;
mod frame;
mod idx;
mod table;
mod transform;

pub use dataset::{Dataset, INDEX_COLUMN, LABEL_COLUMN, Summary, summary};
pub use error::DataError;
pub use frame::{read_csv, read_dataset, read_parquet, read_table, write_dataset, write_table};
pub use idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxCompression, read_idx, write_idx};
pub use table::{Column, Table};
pub use transform::{
    Scale, apply_scale, bernoulli_into, binarize_static, binarize_threshold, check_unit_interval,
    permutation, scale, split_holdout, split_validation, subset,
};
