//! The marker between the prior stage's two phases ([`REFIT_MARKER`](super::REFIT_MARKER)):
//! what the refit phase leaves for the fine-tuning phase, written atomically with exact floats,
//! and verified (file hashes) before an interrupted attempt's refit is reused.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use vaepipe_engine::Context;

use crate::artifacts::Variant;

use super::{MARKER_FORMAT, REFIT_MARKER};

/// What the refit phase leaves for the fine-tuning phase (the content of [`REFIT_MARKER`]).
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct RefitState {
    pub(super) format: u32,
    /// `refit.json` without `finetune` and `seconds`.
    pub(super) refit: Map<String, Value>,
    /// `variants.json` without the fine-tuned model.
    pub(super) variants: Vec<Variant>,
    /// The refit variant's label (the fine-tuned variant's label starts with it).
    pub(super) label: String,
    /// The refit prior's file, if the prior is not N(0, I).
    pub(super) prior_file: Option<String>,
    /// Every file written before the marker, with its blake3 hash (hex).
    pub(super) files: BTreeMap<String, String>,
    /// Seconds the refit phase took.
    pub(super) seconds: f64,
}

/// Writes [`REFIT_MARKER`] atomically (temporary file, fsync, rename), every float as its exact
/// decimal text: serde_json may read a float back one ulp off, and a resumed run must write the
/// same `refit.json` as an uninterrupted one.
pub(super) fn write_marker(out: &Path, state: &RefitState) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(state)?;
    v["refit"] = exact_encode(&v["refit"]);
    v["seconds"] = exact_encode(&v["seconds"]);
    vaepipe_engine::store::write_atomic(&out.join(REFIT_MARKER), &serde_json::to_vec_pretty(&v)?)
        .map_err(anyhow::Error::from)
}

/// The state of a complete refit phase left by an interrupted attempt, if its marker is readable,
/// of this format, and every file it lists is there with the recorded hash; otherwise `None`
/// (and the log says why).
pub(super) fn resume_state(ctx: &Context) -> Option<RefitState> {
    let path = ctx.out.join(REFIT_MARKER);
    let bytes = std::fs::read(&path).ok()?;
    let parsed = serde_json::from_slice::<Value>(&bytes)
        .map_err(anyhow::Error::from)
        .and_then(|mut v| {
            v["refit"] = exact_decode(&v["refit"])?;
            v["seconds"] = exact_decode(&v["seconds"])?;
            Ok(serde_json::from_value::<RefitState>(v)?)
        });
    let state = match parsed {
        Ok(s) if s.format == MARKER_FORMAT => s,
        Ok(s) => {
            ctx.log(format!(
                "ignoring {REFIT_MARKER} of format {} (expected {MARKER_FORMAT})",
                s.format
            ));
            return None;
        }
        Err(e) => {
            ctx.log(format!("ignoring unreadable {}: {e:#}", path.display()));
            return None;
        }
    };
    for (file, hash) in &state.files {
        let ok = std::fs::read(ctx.out.join(file))
            .is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == hash);
        if !ok {
            ctx.log(format!(
                "ignoring {REFIT_MARKER}: {file} is missing or differs from the refit's"
            ));
            return None;
        }
    }
    Some(state)
}

/// Non-integer numbers as `{"$f64": "<shortest round-trip text>"}`.
pub(super) fn exact_encode(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            json!({ "$f64": format!("{:?}", n.as_f64().unwrap_or(f64::NAN)) })
        }
        Value::Array(a) => Value::Array(a.iter().map(exact_encode).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), exact_encode(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The inverse of [`exact_encode`].
pub(super) fn exact_decode(v: &Value) -> anyhow::Result<Value> {
    Ok(match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("$f64") => {
            let text = m["$f64"]
                .as_str()
                .ok_or_else(|| anyhow!("`$f64` is not a string"))?;
            let x: f64 = text.parse().map_err(|e| anyhow!("`$f64` {text:?}: {e}"))?;
            serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(|| anyhow!("`$f64` {text:?} is not finite"))?
        }
        Value::Array(a) => Value::Array(a.iter().map(exact_decode).collect::<Result<_, _>>()?),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), exact_decode(x)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// Empties the work directory (what an attempt without a usable marker left).
pub(super) fn clear_dir(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_floats_round_trip_exactly() {
        let awkward = [
            -227.117_919_391_632_48,
            0.1 + 0.2,
            1e-310,
            f64::MAX,
            -0.0,
            1.0 / 3.0,
        ];
        let v = json!({"a": awkward, "b": {"c": 0.1 + 0.7, "n": 3, "s": "x", "z": null}});
        let text = serde_json::to_vec(&exact_encode(&v)).unwrap();
        let back = exact_decode(&serde_json::from_slice(&text).unwrap()).unwrap();
        assert_eq!(back, v);
        for (x, y) in back["a"].as_array().unwrap().iter().zip(awkward) {
            assert_eq!(x.as_f64().unwrap().to_bits(), y.to_bits());
        }
    }
}
