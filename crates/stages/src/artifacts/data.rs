//! The data stage's artifacts: the splits (`train.parquet`, `validation.parquet`,
//! `test.parquet`), the evaluated test set under dynamic binarization
//! (`test_binarized.parquet`: one fixed draw shared by every stage that measures on the test
//! set) and `summary.json` ([`DataSummary`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use vaepipe_data::Dataset;
use vaepipe_spec::Binarize;

/// The file of the evaluated test set under dynamic binarization.
pub const TEST_BINARIZED: &str = "test_binarized.parquet";

/// `summary.json` of the data stage (written in field order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataSummary {
    pub features: usize,
    /// `[h, w]`, or `[c, h, w]` with more than one channel; `None` when not images.
    pub image_shape: Option<Vec<usize>>,
    /// Where the shape came from: `spec`, `idx`, `square` (inferred from the feature count);
    /// `None` when not images.
    #[serde(default)]
    pub image_shape_source: Option<String>,
    pub scale_factor: f32,
    pub binarize: Binarize,
    pub splits: BTreeMap<String, SplitSummary>,
    /// The held-out test split of the training source; `None` with a test file.
    #[serde(default)]
    pub test_split: Option<TestSplit>,
    pub seconds: f64,
    /// Under dynamic binarization: the evaluated test set's file and seed (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_binarized: Option<TestBinarized>,
}

/// `test_split` in `summary.json`: how the test rows were held out of the training source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestSplit {
    /// `fraction` or `rows` (the spec's form).
    pub method: String,
    /// The spec's fraction (null for `rows`).
    pub fraction: Option<f64>,
    /// Rows of the source (after nothing else: before `train_rows`/`test_rows`).
    pub source_rows: usize,
    /// Rows held out as the test split (before `test_rows`).
    pub test_rows: usize,
    /// Rows left for training and validation (before `train_rows`).
    pub train_rows: usize,
    /// The split's seed: `seed_for(pipeline.seed, "data/test-split")`.
    pub seed: u64,
    pub pipeline_seed: u64,
    /// Stratified by label (labels present and `data.stratify` on).
    pub stratified: bool,
    /// Rows per label of the held-out part and the remaining part (empty without labels).
    pub test_label_counts: BTreeMap<i64, usize>,
    pub train_label_counts: BTreeMap<i64, usize>,
}

/// One split in `summary.json`: [`vaepipe_data::Summary`]'s statistics and whether the values
/// are binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    pub rows: usize,
    pub features: usize,
    /// Rows per label (empty without labels), in label order.
    pub label_counts: BTreeMap<i64, usize>,
    /// Smallest, largest and mean feature value (`None` without values).
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Every value is 0 or 1 (absent in files of data stage version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<bool>,
}

impl SplitSummary {
    /// The summary of a split as the data stage writes it.
    pub fn of(ds: &Dataset) -> SplitSummary {
        let s = vaepipe_data::summary(ds);
        SplitSummary {
            rows: s.rows,
            features: s.features,
            label_counts: s.label_counts,
            min: s.min,
            max: s.max,
            mean: s.mean,
            binary: Some(ds.x.iter().all(|v| *v == 0.0 || *v == 1.0)),
        }
    }
}

/// `test_binarized` in `summary.json`: the evaluated test set under dynamic binarization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestBinarized {
    /// The file ([`TEST_BINARIZED`]).
    pub file: String,
    /// The draw's seed: `eval.binarization_seed`.
    pub seed: u64,
}

impl DataSummary {
    /// Reads `summary.json` of a data stage directory.
    pub fn read(data_dir: &Path) -> anyhow::Result<DataSummary> {
        crate::read_json(&data_dir.join("summary.json"))
    }
}

/// Reads one split (`train`, `validation`, `test`) written by the data stage.
pub fn read_split(data_dir: &Path, split: &str) -> anyhow::Result<Dataset> {
    Ok(vaepipe_data::read_dataset(
        &data_dir.join(format!("{split}.parquet")),
    )?)
}

/// The test set's one fixed binarization with `seed` (Burda et al. 2016): the draw the data
/// stage writes to [`TEST_BINARIZED`], with the data crate's drawing rule.
pub fn binarize_test(test: &Dataset, seed: u64) -> Dataset {
    Dataset {
        x: crate::fit::binarize_fixed(&test.x, seed),
        ..test.clone()
    }
}

/// The test set as evaluated: under dynamic binarization the data stage's fixed draw with
/// `binarization_seed` ([`TEST_BINARIZED`]); otherwise the stored `test.parquet`. A data output
/// that holds no draw with this seed (written before the draw was an artifact) gets the same
/// draw computed here.
pub fn read_test_binarized(
    data_dir: &Path,
    summary: &DataSummary,
    binarization_seed: u64,
) -> anyhow::Result<Dataset> {
    if summary.binarize != Binarize::Dynamic {
        return read_split(data_dir, "test");
    }
    match &summary.test_binarized {
        Some(t) if t.seed == binarization_seed => {
            let path = data_dir.join(super::checkpoint::plain(&t.file)?);
            Ok(vaepipe_data::read_dataset(&path)
                .with_context(|| format!("reading the binarized test set {}", path.display()))?)
        }
        _ => Ok(binarize_test(
            &read_split(data_dir, "test")?,
            binarization_seed,
        )),
    }
}
