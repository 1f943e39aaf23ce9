//! Transform tests: max scaling and its reuse on held-out data, threshold and seeded static
//! binarization (including its mean), the validation split (deterministic, disjoint,
//! covering), subsets and the summary.

use std::collections::BTreeSet;

use vaepipe_data::{
    Dataset, Scale, apply_scale, binarize_static, binarize_threshold, check_unit_interval, scale,
    split_validation, subset, summary,
};

/// `rows` rows of `features` values (k * 7) % 256 as f32, labels row % 10.
fn ramp(rows: usize, features: usize) -> Dataset {
    let x = (0..rows * features)
        .map(|k| ((k * 7) % 256) as f32)
        .collect();
    let names = (0..features).map(|j| format!("f{j}")).collect();
    let labels = (0..rows).map(|i| (i % 10) as i64).collect();
    Dataset::new(x, rows, names, Some(labels), None).unwrap()
}

#[test]
fn max_scaling_uses_the_training_factor_everywhere() {
    let mut train = ramp(50, 8);
    let mut test = ramp(5, 8);
    test.x[0] = 510.0; // larger than anything in train
    let original = train.x.clone();
    let factor = scale(&mut train, Scale::Max).unwrap();
    assert_eq!(factor, 255.0);
    assert_eq!(train.x.iter().copied().fold(f32::MIN, f32::max), 1.0);
    for (s, o) in train.x.iter().zip(&original) {
        assert_eq!(*s, o / 255.0);
    }
    apply_scale(&mut test, factor).unwrap();
    assert_eq!(
        test.x[0], 2.0,
        "test data must be divided by the training factor, not its own max"
    );
    let mut unchanged = ramp(3, 2);
    assert_eq!(scale(&mut unchanged, Scale::None).unwrap(), 1.0);
    assert_eq!(unchanged, ramp(3, 2));
}

#[test]
fn max_scaling_rejects_zero_data_and_bad_factors() {
    let mut zeros = Dataset::new(
        vec![0.0; 6],
        2,
        vec!["a".into(), "b".into(), "c".into()],
        None,
        None,
    )
    .unwrap();
    let e = scale(&mut zeros, Scale::Max).unwrap_err().to_string();
    assert!(e.contains("largest value is 0"), "{e}");
    assert!(zeros.x.iter().all(|&v| v == 0.0));
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(apply_scale(&mut ramp(2, 2), bad).is_err(), "{bad}");
    }
}

#[test]
fn threshold_binarization() {
    let mut ds = Dataset::new(
        vec![0.0, 0.5, 0.50001, 1.0],
        1,
        (0..4).map(|j| j.to_string()).collect(),
        None,
        None,
    )
    .unwrap();
    binarize_threshold(&mut ds, 0.5);
    assert_eq!(ds.x, vec![0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn static_binarization_is_seeded_and_unbiased() {
    let mut probs = ramp(400, 50);
    scale(&mut probs, Scale::Max).unwrap();
    let mean_p = summary(&probs).mean.unwrap();
    let (mut a, mut b, mut c) = (probs.clone(), probs.clone(), probs.clone());
    binarize_static(&mut a, 1).unwrap();
    binarize_static(&mut b, 1).unwrap();
    binarize_static(&mut c, 2).unwrap();
    assert_eq!(a, b, "same seed, same draw");
    assert_ne!(a, c, "different seeds must give different draws");
    assert!(a.x.iter().all(|&v| v == 0.0 || v == 1.0));
    // 20 000 draws: the mean of Bernoulli(p_ij) has sd ≤ 0.5/√20000 ≈ 0.0035.
    let mean_a = summary(&a).mean.unwrap();
    assert!(
        (mean_a - mean_p).abs() < 0.02,
        "binary mean {mean_a} vs intensity mean {mean_p}"
    );
    // Extreme probabilities are deterministic.
    for (p, v) in probs.x.iter().zip(&a.x) {
        if *p == 0.0 {
            assert_eq!(*v, 0.0);
        }
        if *p == 1.0 {
            assert_eq!(*v, 1.0);
        }
    }
    // Per-pixel frequency over many seeds tracks the pixel's probability.
    let one = Dataset::new(
        vec![0.2, 0.9],
        1,
        vec!["lo".into(), "hi".into()],
        None,
        None,
    )
    .unwrap();
    let mut hits = [0u32; 2];
    for seed in 0..2000 {
        let mut d = one.clone();
        binarize_static(&mut d, seed).unwrap();
        hits[0] += d.x[0] as u32;
        hits[1] += d.x[1] as u32;
    }
    assert!((320..480).contains(&hits[0]), "{hits:?}"); // 400 ± 4.5 sd
    assert!((1750..1850).contains(&hits[1]), "{hits:?}"); // 1800 ± 3.7 sd
}

#[test]
fn static_binarization_checks_the_unit_interval_first() {
    let mut ds = ramp(4, 5); // raw 0..255 values: not probabilities
    let before = ds.clone();
    let e = binarize_static(&mut ds, 0).unwrap_err().to_string();
    // Value (0, 1) is 7: the first outside [0, 1].
    assert!(
        e.contains("row 0, column 1") && e.contains("value 7"),
        "{e}"
    );
    assert_eq!(ds, before, "a failed draw must leave the data untouched");
    let mut nan = Dataset::new(
        vec![0.5, 0.5, f32::NAN, 0.1],
        2,
        vec!["a".into(), "b".into()],
        None,
        None,
    )
    .unwrap();
    let e = check_unit_interval(&nan).unwrap_err().to_string();
    assert!(e.contains("row 1, column 0"), "{e}");
    assert!(binarize_static(&mut nan, 0).is_err());
}

#[test]
fn validation_split_is_deterministic_disjoint_and_covering() {
    let ds = ramp(1000, 3);
    let (train, val) = split_validation(&ds, 100, 7).unwrap();
    let (train2, val2) = split_validation(&ds, 100, 7).unwrap();
    assert_eq!((&train, &val), (&train2, &val2));
    assert_eq!((train.rows, val.rows), (900, 100));
    let t: BTreeSet<usize> = train.index.iter().copied().collect();
    let v: BTreeSet<usize> = val.index.iter().copied().collect();
    assert_eq!((t.len(), v.len()), (900, 100), "no duplicates");
    assert!(t.is_disjoint(&v));
    assert_eq!(
        t.union(&v).copied().collect::<Vec<_>>(),
        (0..1000).collect::<Vec<_>>()
    );
    // Rows travel with their labels and values, in source order.
    assert!(val.index.windows(2).all(|w| w[0] < w[1]));
    for (k, &src) in val.index.iter().enumerate() {
        assert_eq!(val.row(k), ds.row(src));
        assert_eq!(
            val.labels.as_ref().unwrap()[k],
            ds.labels.as_ref().unwrap()[src]
        );
    }
    // Not simply the last rows, and another seed gives another split.
    assert_ne!(val.index, (900..1000).collect::<Vec<_>>());
    let (_, val3) = split_validation(&ds, 100, 8).unwrap();
    assert_ne!(val.index, val3.index);
    // Each row is equally likely to be chosen: over 200 seeds row 0 is picked ~20 times.
    let picked = (0..200)
        .filter(|&s| split_validation(&ds, 100, s).unwrap().1.index.contains(&0))
        .count();
    assert!((5..=40).contains(&picked), "row 0 picked {picked} times");
}

#[test]
fn validation_split_edges() {
    let ds = ramp(10, 2);
    let (train, val) = split_validation(&ds, 0, 1).unwrap();
    assert_eq!((train.rows, val.rows), (10, 0));
    assert_eq!(train, ds);
    let (train, val) = split_validation(&ds, 10, 1).unwrap();
    assert_eq!((train.rows, val.rows), (0, 10));
    let e = split_validation(&ds, 11, 1).unwrap_err().to_string();
    assert!(e.contains("11") && e.contains("10 rows"), "{e}");
}

#[test]
fn subset_keeps_rows_labels_and_index() {
    let ds = ramp(10, 4);
    let sub = subset(&ds, &[9, 2, 2]).unwrap();
    assert_eq!(sub.rows, 3);
    assert_eq!(sub.index, vec![9, 2, 2]);
    assert_eq!(sub.row(0), ds.row(9));
    assert_eq!(sub.labels, Some(vec![9, 2, 2]));
    // Indices compose through nested subsets.
    assert_eq!(subset(&sub, &[0]).unwrap().index, vec![9]);
    let e = subset(&ds, &[3, 10]).unwrap_err().to_string();
    assert!(e.contains("row 10") && e.contains("10 rows"), "{e}");
}

#[test]
fn summary_counts_and_ranges() {
    let ds = Dataset::new(
        vec![1.0, -2.0, 3.0, 6.0],
        2,
        vec!["a".into(), "b".into()],
        Some(vec![5, 5]),
        None,
    )
    .unwrap();
    let s = summary(&ds);
    assert_eq!((s.rows, s.features), (2, 2));
    assert_eq!(s.label_counts.into_iter().collect::<Vec<_>>(), vec![(5, 2)]);
    assert_eq!((s.min, s.max, s.mean), (Some(-2.0), Some(6.0), Some(2.0)));
    let empty = subset(&ds, &[]).unwrap();
    let s = summary(&empty);
    assert_eq!((s.rows, s.min, s.mean), (0, None, None));
    let json = serde_json::to_string(&summary(&ds)).unwrap();
    assert!(json.contains("\"label_counts\":{\"5\":2}"), "{json}");
}

#[test]
fn inconsistent_datasets_are_rejected() {
    let e = Dataset::new(vec![1.0; 5], 2, vec!["a".into(), "b".into()], None, None).unwrap_err();
    assert!(e.to_string().contains("x has 5 values"), "{e}");
    let e = Dataset::new(
        vec![1.0; 4],
        2,
        vec!["a".into(), "b".into()],
        Some(vec![1]),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("1 labels for 2 rows"), "{e}");
    let e = Dataset::new(
        vec![1.0; 4],
        2,
        vec!["a".into(), "b".into()],
        None,
        Some((2, 2)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("image shape 2×2"), "{e}");
    let mut broken = ramp(3, 2);
    broken.rows = 4;
    assert!(split_validation(&broken, 1, 0).is_err());
    assert!(subset(&broken, &[0]).is_err());
}
