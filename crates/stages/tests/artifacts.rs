//! The typed artifacts (vaepipe_stages::artifacts) against files the stages wrote before the
//! types existed (tests/fixtures/artifacts/, from `vaepipe run pipelines/quickstart.toml` with a
//! short training and `prior.then = "finetune"`): each file reads into its type, and writing the
//! value back gives the same bytes, so no key is lost, renamed or reordered and every float is
//! written as before.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use vaepipe_stages::artifacts::{
    DataSummary, EvaluatedVariant, Metrics, RefitSummary, TrainSummary, Variant, write_sorted,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/artifacts")
        .join(name)
}

/// Reads `name` as `T`, writes it back with `write`, and compares the text: the same keys in
/// the same order and layout, the same nulls, and the same numbers. (serde_json's default float
/// parser may be one unit in the last place off, so numbers are compared as floats to that
/// precision; how a float in memory is *written* is checked by `artifacts::float`'s tests.)
fn round_trip<T: DeserializeOwned + Serialize>(
    name: &str,
    write: fn(&Path, &T) -> anyhow::Result<()>,
) -> T {
    let path = fixture(name);
    let value: T = vaepipe_stages::read_json(&path).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(name);
    write(&out, &value).unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    let after = std::fs::read_to_string(&out).unwrap();
    let (text_b, nums_b) = split_numbers(&before);
    let (text_a, nums_a) = split_numbers(&after);
    assert_eq!(text_a, text_b, "{name}: written differently");
    assert_eq!(nums_a.len(), nums_b.len(), "{name}: numbers differ");
    for (a, b) in nums_a.iter().zip(&nums_b) {
        if a != b {
            let (x, y): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
            assert!(
                (x - y).abs() <= 2.0 * f64::EPSILON * y.abs(),
                "{name}: {a} written for {b}"
            );
        }
    }
    value
}

/// The text with every number outside strings replaced by `#`, and the numbers.
fn split_numbers(json: &str) -> (String, Vec<String>) {
    let (mut text, mut nums) = (String::new(), Vec::new());
    let mut chars = json.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            text.push(c);
            match c {
                '\\' => text.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '-' || c.is_ascii_digit() {
            let mut n = c.to_string();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || matches!(d, '.' | 'e' | 'E' | '+' | '-') {
                    n.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            // Integers must match exactly; floats to the last place.
            if n.contains(['.', 'e', 'E']) {
                text.push('#');
                nums.push(n);
            } else {
                text.push_str(&n);
            }
        } else {
            in_string = c == '"';
            text.push(c);
        }
    }
    (text, nums)
}

#[test]
fn data_summary_round_trips_in_field_order() {
    let s: DataSummary = round_trip("summary.json", vaepipe_stages::write_json);
    assert_eq!(s.splits["test"].rows, 300);
    assert_eq!(s.splits["test"].binary, Some(false));
}

#[test]
fn train_summary_round_trips() {
    let t: TrainSummary = round_trip("train.json", write_sorted);
    assert_eq!(t.outcome.stopped_by, "epochs");
}

#[test]
fn metrics_round_trip_with_and_without_the_paired_keys() {
    let m: Metrics = round_trip("metrics_standard.json", write_sorted);
    assert!(m.paired.is_none());
    assert!(m.swept.contains_key("train.k"));
    let m: Metrics = round_trip("metrics_paired.json", write_sorted);
    assert_eq!(m.paired.map(|p| p.paired_with).as_deref(), Some("standard"));
}

/// The prior stage's files: `refit.json` (with `finetune`) and its `variants.json`.
#[test]
fn prior_artifacts_read_what_the_prior_stage_writes() {
    let r: RefitSummary = round_trip("refit.json", write_sorted);
    assert!(r.finetune.is_some());
    assert!(r.train.images > 0 && r.test.images > 0);
    let v: Vec<Variant> = round_trip("prior_variants.json", |p, v| {
        vaepipe_stages::write_json(p, v)
    });
    assert_eq!(v[0].name, "standard");
}

#[test]
fn eval_variants_round_trip() {
    let v: Vec<EvaluatedVariant> = round_trip("eval_variants.json", |p, v| {
        vaepipe_stages::write_json(p, v)
    });
    assert!(v.iter().all(|v| v.name == v.directory));
}

/// A refit without a fitted prior (`standard-normal`): null objectives, no finetune, and a
/// non-finite estimate written as `null` read as NaN.
#[test]
fn refit_summary_reads_nulls() {
    let mut v: serde_json::Value = vaepipe_stages::read_json(&fixture("refit.json")).unwrap();
    v["objective_before"] = serde_json::Value::Null;
    v["objective_after"] = serde_json::Value::Null;
    v["finetune"] = serde_json::Value::Null;
    v["kl_qagg_refit_stderr"] = serde_json::Value::Null;
    let r: RefitSummary = serde_json::from_value(v.clone()).unwrap();
    assert!(r.objective_before.is_none() && r.finetune.is_none());
    assert!(r.kl_qagg_refit_stderr.is_nan());
    assert_eq!(serde_json::to_value(&r).unwrap(), v);
}
