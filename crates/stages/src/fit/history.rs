//! One row per epoch of a training loop, and `history.parquet` (docs/artifacts.md).

use serde::{Deserialize, Serialize};
use vaepipe_data::{Column, Table};

use super::state::exact_f64;

/// One row of `history.parquet`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HistoryRow {
    pub epoch: usize,
    pub step: u64,
    #[serde(with = "exact_f64")]
    pub train_bound: f64,
    #[serde(with = "exact_f64")]
    pub validation_bound: f64,
    #[serde(with = "exact_f64")]
    pub lr: f64,
    #[serde(with = "exact_f64")]
    pub seconds: f64,
    #[serde(with = "exact_f64")]
    pub images_per_s: f64,
}

/// Writes `history.parquet`: one row per epoch.
pub(crate) fn write_history(path: &std::path::Path, h: &[HistoryRow]) -> anyhow::Result<()> {
    let table = Table::new()
        .with(
            "epoch",
            Column::I64(h.iter().map(|r| r.epoch as i64).collect()),
        )
        .with(
            "step",
            Column::I64(h.iter().map(|r| r.step as i64).collect()),
        )
        .with(
            "train_bound",
            Column::F64(h.iter().map(|r| r.train_bound).collect()),
        )
        .with(
            "validation_bound",
            Column::F64(h.iter().map(|r| r.validation_bound).collect()),
        )
        .with("lr", Column::F64(h.iter().map(|r| r.lr).collect()))
        .with(
            "seconds",
            Column::F64(h.iter().map(|r| r.seconds).collect()),
        )
        .with(
            "images_per_s",
            Column::F64(h.iter().map(|r| r.images_per_s).collect()),
        );
    vaepipe_data::write_table(path, &table)?;
    Ok(())
}
