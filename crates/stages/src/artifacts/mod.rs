//! The artifacts stages exchange (docs/artifacts.md), one typed module per producing stage: each
//! JSON file has one serde type, shared by the stage that writes it and every stage that reads
//! it (the report included). Checkpoints (safetensors with JSON metadata) live in
//! [`checkpoint`]; the one float adapter (non-finite ⇄ `null`) in [`float`].
//!
//! Files that earlier versions wrote through `json!` have their keys in alphabetical order;
//! their types are written through [`write_sorted`], which keeps that order (and the bytes).
//! Keys added after a file first shipped are `#[serde(default)]`, so older files still read.

pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod float;
pub mod prior;
pub mod train;

use std::path::Path;

pub use checkpoint::{
    ModelConfig, PriorInfo, load_model, load_prior, prior_kind_name, save_model, save_prior,
};
pub use data::{
    DataSummary, SplitSummary, TEST_BINARIZED, TestBinarized, TestSplit, binarize_test, read_split,
    read_test_binarized,
};
pub use eval::{Estimates, EvaluatedVariant, Metrics, Paired};
pub use prior::{FinetuneSummary, RefitSide, RefitSummary, Variant};
pub use train::{TrainOutcome, TrainSummary, TrainedWith};

/// Writes a JSON artifact with its keys in alphabetical order (at every level), pretty, with a
/// final newline: the layout of the files earlier versions built with `json!`.
pub fn write_sorted<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let value = serde_json::to_value(value)
        .map_err(|e| anyhow::anyhow!("cannot encode {}: {e}", path.display()))?;
    crate::write_json(path, &value)
}
