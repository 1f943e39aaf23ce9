//! The one float adapter of the JSON artifacts: a non-finite `f64` (NaN, ±∞) is written as
//! `null`, and `null` reads back as NaN. Finite values are written as serde_json writes any
//! `f64` (the shortest text that round-trips), so typed writers produce the bytes the `json!`
//! writers did.
//!
//! Use it as `#[serde(with = "crate::artifacts::float")]` on an `f64` field. A field that is
//! `null` for a reason of its own (e.g. `best_validation_bound` without a validation split) is
//! an `Option<f64>` instead.

use serde::{Deserialize, Deserializer, Serializer};

/// Writes `v`, or `null` when it is not finite.
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

/// Reads a number, or NaN for `null`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct X {
        #[serde(with = "super")]
        v: f64,
    }

    #[test]
    fn non_finite_values_are_null_and_null_reads_as_nan() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(serde_json::to_string(&X { v }).unwrap(), r#"{"v":null}"#);
        }
        let x: X = serde_json::from_str(r#"{"v":null}"#).unwrap();
        assert!(x.v.is_nan());
    }

    #[test]
    fn finite_values_are_written_as_serde_json_writes_them() {
        for v in [0.1 + 0.2, -171.64790626811973, 1e-300, 255.0, 0.0] {
            let typed = serde_json::to_string(&X { v }).unwrap();
            let untyped = serde_json::json!({ "v": v }).to_string();
            assert_eq!(typed, untyped);
            let back: X = serde_json::from_str(&typed).unwrap();
            assert_eq!(back.v.to_bits(), v.to_bits());
        }
    }
}
