//! Pure transforms on datasets: scaling, binarization, seeded validation and held-out test
//! splits (stratified by label) and row subsets.
//!
//! All randomness comes from a ChaCha8 generator seeded by the caller's `u64`
//! (`rand_chacha::ChaCha8Rng::seed_from_u64`), and the draws are built from its raw `u32`/`u64`
//! outputs with the formulas documented below, so results do not depend on `rand`'s
//! distribution implementations.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::Dataset;
use crate::error::DataError;

/// How to scale feature values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Leave the values unchanged (factor 1).
    #[default]
    None,
    /// Divide every value by the largest feature value of the dataset being fitted (the
    /// training set); apply the same factor to validation/test sets with [`apply_scale`].
    Max,
}

/// Fits `scale` on `dataset`, divides its values by the factor and returns the factor.
///
/// For [`Scale::Max`] the factor is the largest value, which must be finite and positive
/// (an all-zero or all-negative dataset cannot be max-scaled). For [`Scale::None`] it is 1.
pub fn scale(dataset: &mut Dataset, scale: Scale) -> Result<f32, DataError> {
    dataset.validate()?;
    let factor = match scale {
        Scale::None => return Ok(1.0),
        Scale::Max => {
            let max = dataset.x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if !(max.is_finite() && max > 0.0) {
                return Err(DataError::InvalidArgument(format!(
                    "cannot scale by the maximum: the largest value is {max} \
                     (it must be finite and positive)"
                )));
            }
            max
        }
    };
    apply_scale(dataset, factor)?;
    Ok(factor)
}

/// Divides every feature value by `factor` (as returned by [`scale`] on the training set).
pub fn apply_scale(dataset: &mut Dataset, factor: f32) -> Result<(), DataError> {
    if !(factor.is_finite() && factor > 0.0) {
        return Err(DataError::InvalidArgument(format!(
            "scale factor {factor} must be finite and positive"
        )));
    }
    if factor != 1.0 {
        dataset.x.iter_mut().for_each(|v| *v /= factor);
    }
    Ok(())
}

/// Sets each value to 1 if it is strictly greater than `threshold`, else 0.
pub fn binarize_threshold(dataset: &mut Dataset, threshold: f32) {
    for v in &mut dataset.x {
        *v = if *v > threshold { 1.0 } else { 0.0 };
    }
}

/// Replaces each value `p` (which must lie in [0, 1]) by one draw of Bernoulli(`p`), seeded.
///
/// Draw for each value in row-major order: `u = (next_u32 >> 8) · 2⁻²⁴` (uniform on [0, 1)
/// with 24 random bits), result `1` if `u < p` else `0`; so `p = 0` always gives 0 and `p = 1`
/// always 1. All values are checked before any is changed: on error the dataset is untouched,
/// and the error names the first offending row and column.
pub fn binarize_static(dataset: &mut Dataset, seed: u64) -> Result<(), DataError> {
    dataset.validate()?;
    check_unit_interval(dataset)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for p in &mut dataset.x {
        *p = bernoulli(*p, &mut rng);
    }
    Ok(())
}

/// Writes one Bernoulli draw of each probability in `p` into `out`, drawing from `rng` with the
/// rule of [`binarize_static`] (for per-batch dynamic binarization with the caller's stream).
/// Probabilities are not checked here: values ≤ 0 give 0 and values ≥ 1 give 1.
pub fn bernoulli_into(p: &[f32], out: &mut [f32], rng: &mut impl RngCore) {
    for (o, p) in out.iter_mut().zip(p) {
        *o = bernoulli(*p, rng);
    }
}

fn bernoulli(p: f32, rng: &mut impl RngCore) -> f32 {
    let u = (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
    if u < p { 1.0 } else { 0.0 }
}

/// A seeded random permutation of `0..n`: Fisher–Yates driven by ChaCha8 with unbiased raw
/// draws (independent of `rand`'s sampling algorithms, so stable across `rand` versions).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..order.len()).rev() {
        let j = uniform_below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// Checks that every value lies in [0, 1]; the error names the first offending row and column.
pub fn check_unit_interval(dataset: &Dataset) -> Result<(), DataError> {
    let features = dataset.features.max(1);
    match dataset.x.iter().position(|v| !(0.0..=1.0).contains(v)) {
        None => Ok(()),
        Some(k) => Err(DataError::OutOfRange {
            row: k / features,
            column: k % features,
            value: dataset.x[k],
            expected: "[0, 1] (a Bernoulli probability)",
        }),
    }
}

/// Splits off `n_val` rows chosen uniformly at random (seeded) as a validation set.
///
/// Returns `(train, validation)`. Every row lands in exactly one part, and each part keeps
/// the rows in their original order (the `index` field tells where each came from).
/// The choice is a Fisher–Yates shuffle of `0..rows` driven by a ChaCha8 generator seeded
/// with `seed`, taking the first `n_val` positions; `n_val` may be 0 or `rows`.
pub fn split_validation(
    dataset: &Dataset,
    n_val: usize,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    dataset.validate()?;
    if n_val > dataset.rows {
        return Err(DataError::InvalidArgument(format!(
            "cannot take {n_val} validation rows from a dataset of {} rows",
            dataset.rows
        )));
    }
    let order = permutation(dataset.rows, seed);
    let mut in_val = vec![false; dataset.rows];
    for &row in &order[..n_val] {
        in_val[row] = true;
    }
    let (val_rows, train_rows): (Vec<usize>, Vec<usize>) =
        (0..dataset.rows).partition(|&row| in_val[row]);
    Ok((subset(dataset, &train_rows)?, subset(dataset, &val_rows)?))
}

/// Splits off `n_test` rows as a held-out test set, seeded; with `stratify` and labels, every
/// label keeps its share of the rows.
///
/// Returns `(train, test)`; both keep the rows in their original order. Without
/// stratification (or labels) the test rows are the first `n_test` positions of
/// [`permutation`]`(rows, seed)`. With stratification the per-label quotas are
/// `n_test · count / rows`, rounded down, the remaining rows going to the labels with the
/// largest remainders (ties: smaller label first); each label's rows are then chosen by its own
/// permutation (seed mixed with the label). `n_test` must be between 1 and `rows − 1`.
pub fn split_holdout(
    dataset: &Dataset,
    n_test: usize,
    seed: u64,
    stratify: bool,
) -> Result<(Dataset, Dataset), DataError> {
    dataset.validate()?;
    if n_test == 0 || n_test >= dataset.rows {
        return Err(DataError::InvalidArgument(format!(
            "cannot hold out {n_test} test rows from a dataset of {} rows (need 1 to {})",
            dataset.rows,
            dataset.rows.saturating_sub(1)
        )));
    }
    let mut in_test = vec![false; dataset.rows];
    match (&dataset.labels, stratify) {
        (Some(labels), true) => {
            let mut groups: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
            for (row, &label) in labels.iter().enumerate() {
                groups.entry(label).or_default().push(row);
            }
            let n = dataset.rows as u128;
            // (label, quota, remainder numerator)
            let mut quotas: Vec<(i64, usize, u128)> = groups
                .iter()
                .map(|(&label, rows)| {
                    let exact = n_test as u128 * rows.len() as u128;
                    (label, (exact / n) as usize, exact % n)
                })
                .collect();
            let assigned: usize = quotas.iter().map(|q| q.1).sum();
            let mut by_remainder: Vec<usize> = (0..quotas.len()).collect();
            by_remainder.sort_by(|&a, &b| quotas[b].2.cmp(&quotas[a].2).then(a.cmp(&b)));
            for &i in by_remainder.iter().take(n_test - assigned) {
                quotas[i].1 += 1;
            }
            for (label, quota, _) in quotas {
                let rows = &groups[&label];
                let order = permutation(
                    rows.len(),
                    seed ^ (label as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                for &k in &order[..quota.min(rows.len())] {
                    in_test[rows[k]] = true;
                }
            }
        }
        _ => {
            for &row in &permutation(dataset.rows, seed)[..n_test] {
                in_test[row] = true;
            }
        }
    }
    let (test_rows, train_rows): (Vec<usize>, Vec<usize>) =
        (0..dataset.rows).partition(|&row| in_test[row]);
    Ok((subset(dataset, &train_rows)?, subset(dataset, &test_rows)?))
}

/// Returns the given rows (by position, in the given order; repeats allowed) as a new dataset.
pub fn subset(dataset: &Dataset, rows: &[usize]) -> Result<Dataset, DataError> {
    dataset.validate()?;
    if let Some(&bad) = rows.iter().find(|&&r| r >= dataset.rows) {
        return Err(DataError::InvalidArgument(format!(
            "row {bad} requested from a dataset of {} rows",
            dataset.rows
        )));
    }
    let f = dataset.features;
    let mut x = Vec::with_capacity(rows.len() * f);
    for &r in rows {
        x.extend_from_slice(&dataset.x[r * f..(r + 1) * f]);
    }
    Ok(Dataset {
        x,
        rows: rows.len(),
        features: f,
        labels: dataset
            .labels
            .as_ref()
            .map(|labels| rows.iter().map(|&r| labels[r]).collect()),
        feature_names: dataset.feature_names.clone(),
        image_shape: dataset.image_shape,
        index: rows.iter().map(|&r| dataset.index[r]).collect(),
    })
}

/// Uniform integer in `0..n` (n ≥ 1) by rejection from raw `u64`s: unbiased and independent
/// of `rand`'s range-sampling algorithm.
fn uniform_below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    // Largest multiple of n that fits: accept draws below it.
    let zone = u64::MAX - (u64::MAX % n + 1) % n;
    loop {
        let r = rng.next_u64();
        if r <= zone {
            return r % n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_below_covers_range_without_bias() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[uniform_below(&mut rng, 3) as usize] += 1;
        }
        // Each count ~ Binomial(30000, 1/3): sd ≈ 82, so ±600 is > 7 sd.
        for c in counts {
            assert!((9_400..=10_600).contains(&c), "{counts:?}");
        }
        assert_eq!(uniform_below(&mut rng, 1), 0);
    }
}
