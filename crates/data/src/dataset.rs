//! The in-memory dataset (a dense row-major f32 matrix with optional integer labels) and its
//! summary statistics. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::DataError;

/// Name of the Parquet column that holds a row's position in the original source file.
pub const INDEX_COLUMN: &str = "index";
/// Name of the Parquet column that holds labels in files written by [`crate::write_dataset`].
pub const LABEL_COLUMN: &str = "label";

/// A dense dataset: `rows` rows of `features` f32 values, row-major, plus optional labels.
///
/// Invariants (checked by [`Dataset::validate`], which every writer and transform calls):
/// `x.len() == rows * features`, `feature_names.len() == features`, `index.len() == rows`,
/// `labels` (if any) has `rows` entries, and `image_shape` (if any) multiplies to `features`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Feature values, row-major: value `(i, j)` is `x[i * features + j]`.
    pub x: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Number of features per row.
    pub features: usize,
    /// One integer label per row, if the source had labels.
    pub labels: Option<Vec<i64>>,
    /// One name per feature, unique (they become Parquet column names).
    pub feature_names: Vec<String>,
    /// `(height, width)` when the rows are images (IDX images give `(28, 28)` for MNIST).
    pub image_shape: Option<(usize, usize)>,
    /// For each row, its 0-based position in the file it was first read from. Kept through
    /// [`crate::subset`] and [`crate::split_validation`] so results can be traced to source rows.
    pub index: Vec<usize>,
}

impl Dataset {
    /// Builds a dataset from row-major values; `index` becomes `0..rows`.
    ///
    /// `features` is `feature_names.len()`. Fails if the sizes disagree.
    pub fn new(
        x: Vec<f32>,
        rows: usize,
        feature_names: Vec<String>,
        labels: Option<Vec<i64>>,
        image_shape: Option<(usize, usize)>,
    ) -> Result<Dataset, DataError> {
        let dataset = Dataset {
            x,
            rows,
            features: feature_names.len(),
            labels,
            feature_names,
            image_shape,
            index: (0..rows).collect(),
        };
        dataset.validate()?;
        Ok(dataset)
    }

    /// The feature values of row `i`. Panics if `i >= rows` (like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// Checks that the fields agree with each other (see the type's documentation).
    pub fn validate(&self) -> Result<(), DataError> {
        let expected = self.rows.checked_mul(self.features).ok_or_else(|| {
            DataError::Shape(format!(
                "rows ({}) × features ({}) overflows",
                self.rows, self.features
            ))
        })?;
        if self.x.len() != expected {
            return Err(DataError::Shape(format!(
                "x has {} values, expected rows ({}) × features ({}) = {expected}",
                self.x.len(),
                self.rows,
                self.features
            )));
        }
        if self.feature_names.len() != self.features {
            return Err(DataError::Shape(format!(
                "{} feature names for {} features",
                self.feature_names.len(),
                self.features
            )));
        }
        if self.index.len() != self.rows {
            return Err(DataError::Shape(format!(
                "index has {} entries for {} rows",
                self.index.len(),
                self.rows
            )));
        }
        if let Some(labels) = &self.labels
            && labels.len() != self.rows
        {
            return Err(DataError::Shape(format!(
                "{} labels for {} rows",
                labels.len(),
                self.rows
            )));
        }
        if let Some((h, w)) = self.image_shape
            && h.checked_mul(w) != Some(self.features)
        {
            return Err(DataError::Shape(format!(
                "image shape {h}×{w} does not match {} features",
                self.features
            )));
        }
        Ok(())
    }

    /// Checks that feature names are non-empty, unique and not `index`/`label`, as the Parquet
    /// dataset format needs.
    pub(crate) fn validate_names(&self, origin: &str) -> Result<(), DataError> {
        let mut seen = BTreeSet::new();
        for name in &self.feature_names {
            let problem = if name.is_empty() {
                Some("empty name (an unnamed column, such as an index written by pandas?)")
            } else if name == INDEX_COLUMN || name == LABEL_COLUMN {
                Some(
                    "reserved for the index/label column (if it holds the labels, name it as the label column)",
                )
            } else if !seen.insert(name.as_str()) {
                Some("repeated")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(DataError::ColumnName {
                    origin: origin.to_string(),
                    column: name.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }
}

/// Summary statistics of a dataset, for logs and reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Number of rows.
    pub rows: usize,
    /// Number of features.
    pub features: usize,
    /// Rows per label (empty when the dataset has no labels), in label order.
    pub label_counts: BTreeMap<i64, usize>,
    /// Smallest feature value (`None` when there are no values).
    pub min: Option<f64>,
    /// Largest feature value (`None` when there are no values).
    pub max: Option<f64>,
    /// Mean of all feature values, accumulated in f64 (`None` when there are no values).
    pub mean: Option<f64>,
}

/// Computes row/feature counts, label counts and the range and mean of all feature values.
pub fn summary(dataset: &Dataset) -> Summary {
    let mut label_counts = BTreeMap::new();
    for &label in dataset.labels.iter().flatten() {
        *label_counts.entry(label).or_insert(0) += 1;
    }
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &v in &dataset.x {
        let v = f64::from(v);
        min = min.min(v);
        max = max.max(v);
        sum += v;
    }
    let has_values = !dataset.x.is_empty();
    Summary {
        rows: dataset.rows,
        features: dataset.features,
        label_counts,
        min: has_values.then_some(min),
        max: has_values.then_some(max),
        mean: has_values.then(|| sum / dataset.x.len() as f64),
    }
}
