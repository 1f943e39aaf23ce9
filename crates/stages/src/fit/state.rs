//! The loop's resumable state ([`Position`]: where it is and what it has recorded) and its
//! checkpoint files: the trainer state as safetensors, then — atomically — the JSON position
//! that points to it. Also the early-stopping bookkeeping ([`Position::judge`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vaepipe_engine::Context;
use vaepipe_nn::Trainer;

use super::StoppedBy;
use super::history::HistoryRow;

/// f64 in checkpoint JSON as the shortest round-trip decimal *string*: serde_json's default
/// number parser may be one ulp off, and a resumed run must reproduce its history bit for bit.
pub(crate) mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Loop position and bookkeeping saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Position {
    /// 0-based epoch in progress.
    pub(super) epoch: usize,
    /// Next batch of that epoch.
    pub(super) batch: usize,
    #[serde(with = "exact_f64")]
    pub(super) epoch_bound_sum: f64,
    pub(super) epoch_images: usize,
    #[serde(with = "exact_f64")]
    pub(super) epoch_seconds: f64,
    #[serde(with = "exact_f64")]
    pub(super) seconds: f64,
    pub(super) history: Vec<HistoryRow>,
    #[serde(with = "exact_f64")]
    pub(super) best_validation: f64,
    pub(super) best_epoch: usize,
    pub(super) since_best: usize,
    pub(super) stopped_early: bool,
    /// Why the loop ended (`epochs` while it runs).
    #[serde(default)]
    pub(super) stopped_by: StoppedBy,
    /// Wall-clock seconds of the loop up to this checkpoint, over all attempts (the time
    /// limit's clock; time after the last checkpoint of a killed attempt is not counted).
    #[serde(default, with = "exact_f64")]
    pub(super) elapsed: f64,
    pub(super) resumed: u32,
    /// The safetensors file (in the same directory) with the trainer state.
    pub(super) state_file: String,
}

impl Position {
    /// The start of a loop that has not run.
    pub(super) fn fresh() -> Self {
        Position {
            epoch: 0,
            batch: 0,
            epoch_bound_sum: 0.0,
            epoch_images: 0,
            epoch_seconds: 0.0,
            seconds: 0.0,
            history: Vec::new(),
            best_validation: f64::NEG_INFINITY,
            best_epoch: 0,
            since_best: 0,
            stopped_early: false,
            stopped_by: StoppedBy::Epochs,
            elapsed: 0.0,
            resumed: 0,
            state_file: String::new(),
        }
    }

    /// Early stopping: records the validation bound `val` of the epoch in progress (without a
    /// validation split the last epoch is the result) and says what it means.
    pub(super) fn judge(&mut self, val: f64, has_validation: bool, patience: usize) -> Verdict {
        if !has_validation {
            // Nothing to compare: the last epoch is the result (early stopping needs a split).
            self.best_epoch = self.epoch + 1;
            Verdict::Continue
        } else if val > self.best_validation {
            self.best_validation = val;
            self.best_epoch = self.epoch + 1;
            self.since_best = 0;
            Verdict::Improved
        } else {
            self.since_best += 1;
            if patience > 0 && self.since_best >= patience {
                self.stopped_early = true;
                Verdict::Stop
            } else {
                Verdict::Continue
            }
        }
    }
}

/// What an epoch's validation bound means for early stopping ([`Position::judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A new best epoch.
    Improved,
    /// No new best; keep going.
    Continue,
    /// No improvement for `patience` epochs: stop.
    Stop,
}

pub(super) fn checkpoint_paths(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{tag}-checkpoint.json")),
        dir.join(format!("{tag}-best.safetensors")),
    )
}

pub(super) fn save_checkpoint(
    dir: &Path,
    tag: &str,
    trainer: &Trainer,
    pos: &mut Position,
) -> anyhow::Result<()> {
    let state_file = format!("{tag}-checkpoint-{}.safetensors", trainer.steps());
    vaepipe_nn::save_safetensors(dir.join(&state_file), &trainer.state(), &Default::default())?;
    let previous = std::mem::replace(&mut pos.state_file, state_file);
    let (json, _) = checkpoint_paths(dir, tag);
    vaepipe_engine::store::write_atomic(&json, &serde_json::to_vec_pretty(pos)?)?;
    if !previous.is_empty() && previous != pos.state_file {
        let _ = std::fs::remove_file(dir.join(previous));
    }
    Ok(())
}

pub(super) fn load_checkpoint(ctx: &Context, tag: &str, trainer: &mut Trainer) -> Option<Position> {
    let (json, _) = checkpoint_paths(ctx.out, tag);
    let pos: Position = match std::fs::read(&json) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(p) => p,
            Err(e) => {
                ctx.log(format!(
                    "ignoring unreadable checkpoint {}: {e}",
                    json.display()
                ));
                return None;
            }
        },
        Err(_) => return None,
    };
    let state = match vaepipe_nn::load_safetensors(ctx.out.join(&pos.state_file)) {
        Ok((s, _)) => s,
        Err(e) => {
            ctx.log(format!("ignoring checkpoint: {e}"));
            return None;
        }
    };
    if let Err(e) = trainer.restore(&state) {
        ctx.log(format!(
            "ignoring checkpoint that does not fit the model: {e}"
        ));
        return None;
    }
    Some(pos)
}

/// Removes the loop's checkpoint files, including temporary files of writes that a kill
/// interrupted (`.{tag}-…`), so that none of them is published with the stage's output.
pub(super) fn remove_checkpoints(dir: &Path, tag: &str) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("{tag}-checkpoint"))
                || name == format!("{tag}-best.safetensors")
                || name.starts_with(&format!(".{tag}-"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_positions_round_trip_exactly() {
        let awkward = [-227.117_919_391_632_48, 0.1 + 0.2, 1e-310, f64::MAX, -0.0];
        let rows: Vec<HistoryRow> = awkward
            .iter()
            .enumerate()
            .map(|(i, v)| HistoryRow {
                epoch: i,
                step: i as u64,
                train_bound: *v,
                validation_bound: -*v,
                lr: v.abs(),
                seconds: *v,
                images_per_s: *v,
            })
            .collect();
        let pos = Position {
            epoch: 1,
            batch: 2,
            epoch_bound_sum: 0.1 + 0.7,
            epoch_images: 3,
            epoch_seconds: 1.0 / 3.0,
            seconds: 2.0 / 3.0,
            history: rows,
            best_validation: f64::NEG_INFINITY,
            best_epoch: 0,
            since_best: 0,
            stopped_early: false,
            stopped_by: StoppedBy::TimeLimit,
            elapsed: 0.1 + 0.2,
            resumed: 0,
            state_file: "x".into(),
        };
        let back: Position = serde_json::from_slice(&serde_json::to_vec(&pos).unwrap()).unwrap();
        assert_eq!(back.best_validation, f64::NEG_INFINITY);
        assert_eq!(
            back.epoch_bound_sum.to_bits(),
            pos.epoch_bound_sum.to_bits()
        );
        assert_eq!(back.epoch_seconds.to_bits(), pos.epoch_seconds.to_bits());
        assert_eq!(back.elapsed.to_bits(), pos.elapsed.to_bits());
        assert_eq!(back.stopped_by, StoppedBy::TimeLimit);
        for (a, b) in back.history.iter().zip(&pos.history) {
            for (x, y) in [
                (a.train_bound, b.train_bound),
                (a.validation_bound, b.validation_bound),
                (a.lr, b.lr),
                (a.seconds, b.seconds),
            ] {
                assert_eq!(x.to_bits(), y.to_bits());
            }
        }
    }
}
