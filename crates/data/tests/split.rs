//! The held-out test split (`split_holdout`): sizes, disjointness, determinism, and per-label
//! quotas under stratification.

use std::collections::BTreeMap;

use vaepipe_data::{Dataset, split_holdout, summary};

/// `rows` rows of 2 features; row i has label `labels[i]` and features (i, −i).
fn dataset(labels: &[i64]) -> Dataset {
    let rows = labels.len();
    let x: Vec<f32> = (0..rows).flat_map(|i| [i as f32, -(i as f32)]).collect();
    Dataset::new(
        x,
        rows,
        vec!["a".into(), "b".into()],
        Some(labels.to_vec()),
        None,
    )
    .unwrap()
}

/// Labels 0..4 with very different counts (5, 17, 40, 3, 35 rows), interleaved.
fn uneven_labels() -> Vec<i64> {
    let counts = [5usize, 17, 40, 3, 35];
    let mut labels = Vec::new();
    let mut left = counts;
    while left.iter().any(|c| *c > 0) {
        for (l, c) in left.iter_mut().enumerate() {
            if *c > 0 {
                labels.push(l as i64);
                *c -= 1;
            }
        }
    }
    labels
}

#[test]
fn every_row_lands_in_exactly_one_part_in_source_order() {
    let d = dataset(&uneven_labels());
    for stratify in [false, true] {
        let (train, test) = split_holdout(&d, 30, 7, stratify).unwrap();
        assert_eq!(test.rows, 30);
        assert_eq!(train.rows, d.rows - 30);
        let mut all: Vec<usize> = train.index.iter().chain(&test.index).copied().collect();
        all.sort();
        assert_eq!(all, (0..d.rows).collect::<Vec<_>>());
        for part in [&train, &test] {
            assert!(part.index.windows(2).all(|w| w[0] < w[1]), "source order");
            for (r, &i) in part.index.iter().enumerate() {
                assert_eq!(
                    part.row(r),
                    &[i as f32, -(i as f32)],
                    "rows keep their values"
                );
                assert_eq!(
                    part.labels.as_ref().unwrap()[r],
                    d.labels.as_ref().unwrap()[i]
                );
            }
        }
    }
}

#[test]
fn the_seed_decides_the_split() {
    let d = dataset(&uneven_labels());
    for stratify in [false, true] {
        let (_, a) = split_holdout(&d, 30, 7, stratify).unwrap();
        let (_, b) = split_holdout(&d, 30, 7, stratify).unwrap();
        let (_, c) = split_holdout(&d, 30, 8, stratify).unwrap();
        assert_eq!(a, b, "same seed, same split");
        assert_ne!(a.index, c.index, "another seed, another split");
    }
}

#[test]
fn stratification_keeps_each_labels_share() {
    let labels = uneven_labels();
    let d = dataset(&labels);
    let n = d.rows as f64;
    let totals = summary(&d).label_counts;
    for n_test in [1usize, 10, 30, 51, 99] {
        for seed in 0..5 {
            let (_, test) = split_holdout(&d, n_test, seed, true).unwrap();
            let counts: BTreeMap<i64, usize> = summary(&test).label_counts;
            assert_eq!(counts.values().sum::<usize>(), n_test);
            for (label, total) in &totals {
                let got = counts.get(label).copied().unwrap_or(0) as f64;
                let exact = n_test as f64 * *total as f64 / n;
                // Largest-remainder quotas: floor or ceil of the exact share.
                assert!(
                    got == exact.floor() || got == exact.ceil(),
                    "n_test {n_test}, seed {seed}: label {label} has {got}, exact share {exact}"
                );
            }
        }
    }
    // Without stratification, small labels are not protected: some seed leaves label 3 (3 of
    // 100 rows) out of a 30-row test split or over-represents it.
    let off = (0..50u64).any(|seed| {
        let (_, t) = split_holdout(&d, 30, seed, false).unwrap();
        summary(&t).label_counts.get(&3).copied().unwrap_or(0) != 1
    });
    assert!(off, "unstratified splits vary in label counts");
}

#[test]
fn impossible_sizes_are_errors() {
    let d = dataset(&[0, 1, 0, 1]);
    for n in [0, 4, 5] {
        assert!(split_holdout(&d, n, 1, true).is_err(), "{n} rows of 4");
    }
    // Without labels, stratification is simply not possible and not required.
    let mut u = d.clone();
    u.labels = None;
    let (train, test) = split_holdout(&u, 3, 1, true).unwrap();
    assert_eq!((train.rows, test.rows), (1, 3));
}
