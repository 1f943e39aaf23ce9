//! How a training loop runs: [`FitSettings`] (epochs, batch size, patience, time limit,
//! binarization, seed and tag) and the learning-rate schedule ([`FitSettings::lr_at`]).

use vaepipe_spec::{Schedule, TrainSection};

/// How [`fit`](super::fit) trains.
#[derive(Debug, Clone)]
pub(crate) struct FitSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub schedule: Schedule,
    pub lr: f64,
    pub step_epochs: usize,
    pub step_gamma: f64,
    pub patience: usize,
    /// Wall-clock budget in seconds (the train stage's `train.time_limit`; `None` for
    /// fine-tuning): the loop stops at the end of the epoch in which it runs out.
    pub time_limit: Option<f64>,
    /// Draw a fresh binarization of every batch (and one fixed binarization of the validation set).
    pub dynamic: bool,
    pub seed: u64,
    /// Names the checkpoint files and the random streams, so two loops in one stage differ.
    pub tag: &'static str,
}

impl FitSettings {
    pub fn from_train(
        t: &TrainSection,
        seed: u64,
        dynamic: bool,
        epochs: usize,
        tag: &'static str,
    ) -> Self {
        FitSettings {
            epochs,
            batch_size: t.batch_size,
            schedule: t.schedule,
            lr: t.lr,
            step_epochs: t.step_epochs,
            step_gamma: t.step_gamma,
            patience: t.patience,
            time_limit: None,
            dynamic,
            seed,
            tag,
        }
    }

    /// Learning rate of (0-based) `epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step => {
                self.lr
                    * self
                        .step_gamma
                        .powi((epoch / self.step_epochs.max(1)) as i32)
            }
            Schedule::Iwae => {
                // Burda et al. 2016: stage i has 3^i epochs at lr · 10^(−i/7).
                let (mut stage, mut end) = (0i32, 1usize);
                while epoch >= end {
                    stage += 1;
                    end += 3usize.pow(stage as u32);
                }
                self.lr * 10f64.powf(-(stage as f64) / 7.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(schedule: Schedule) -> FitSettings {
        FitSettings {
            epochs: 100,
            batch_size: 20,
            schedule,
            lr: 1e-3,
            step_epochs: 10,
            step_gamma: 0.5,
            patience: 0,
            time_limit: None,
            dynamic: false,
            seed: 1,
            tag: "t",
        }
    }

    #[test]
    fn iwae_schedule_has_stages_of_3_to_the_i_epochs() {
        let s = settings(Schedule::Iwae);
        // Stage 0: epoch 0; stage 1: epochs 1..4; stage 2: 4..13; stage 3: 13..40.
        let lr = |e| s.lr_at(e);
        assert_eq!(lr(0), 1e-3);
        for e in 1..4 {
            assert!((lr(e) - 1e-3 * 10f64.powf(-1.0 / 7.0)).abs() < 1e-15);
        }
        for e in 4..13 {
            assert!((lr(e) - 1e-3 * 10f64.powf(-2.0 / 7.0)).abs() < 1e-15);
        }
        assert!((lr(13) - 1e-3 * 10f64.powf(-3.0 / 7.0)).abs() < 1e-15);
        assert!(
            (lr(3279) - 1e-3 * 10f64.powf(-7.0 / 7.0)).abs() < 1e-15,
            "the paper's 3280 passes end in stage 7"
        );
    }

    #[test]
    fn step_schedule_decays_every_step_epochs() {
        let s = settings(Schedule::Step);
        assert_eq!(s.lr_at(9), 1e-3);
        assert_eq!(s.lr_at(10), 5e-4);
        assert_eq!(s.lr_at(25), 2.5e-4);
    }
}
