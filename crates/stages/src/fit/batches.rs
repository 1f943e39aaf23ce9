//! The minibatch stream of a training loop: each epoch a seeded permutation of the rows, each
//! batch copied — or, under dynamic binarization, freshly binarized (Burda et al. 2016) — into
//! one buffer, and one optimizer step per batch with its own noise.
//!
//! Every random draw is derived from (seed, tag, epoch or step): the permutation from
//! `"{tag}/shuffle/{epoch}"`, the binarization and the noise from the streams `"{tag}/binarize"`
//! and `"{tag}/noise"` at the trainer's step number, so a loop resumed at any step draws exactly
//! what an uninterrupted one would have.

use rand::SeedableRng;
use vaepipe_data::Dataset;
use vaepipe_nn::{NnError, StepStats, Trainer};

use crate::util::seed_for;

/// Batches of one dataset for one loop (see the module documentation).
pub(crate) struct Batches<'a> {
    data: &'a Dataset,
    size: usize,
    dynamic: bool,
    seed: u64,
    tag: &'a str,
    bin_seed: u64,
    noise_seed: u64,
    /// The epoch whose permutation `order` holds.
    epoch: Option<usize>,
    order: Vec<usize>,
    buf: Vec<f32>,
}

impl<'a> Batches<'a> {
    /// Batches of `size` rows (clamped to 1..=rows; the last batch of an epoch may be smaller)
    /// of `data`, binarized if `dynamic`, with the random streams of `seed` and `tag`.
    pub fn new(data: &'a Dataset, size: usize, dynamic: bool, seed: u64, tag: &'a str) -> Self {
        let size = size.clamp(1, data.rows.max(1));
        Batches {
            data,
            size,
            dynamic,
            seed,
            tag,
            bin_seed: seed_for(seed, &format!("{tag}/binarize")),
            noise_seed: seed_for(seed, &format!("{tag}/noise")),
            epoch: None,
            order: Vec::new(),
            buf: vec![0f32; size * data.features],
        }
    }

    /// Batches per epoch (0 for an empty dataset).
    pub fn per_epoch(&self) -> usize {
        self.data.rows.div_ceil(self.size)
    }

    /// Fills the buffer with batch `batch` of `epoch`, drawn for optimizer step `step`; returns
    /// the number of rows.
    fn fill(&mut self, epoch: usize, batch: usize, step: u64) -> usize {
        let (n, d) = (self.data.rows, self.data.features);
        if self.epoch != Some(epoch) {
            self.order = vaepipe_data::permutation(
                n,
                seed_for(self.seed, &format!("{}/shuffle/{epoch}", self.tag)),
            );
            self.epoch = Some(epoch);
        }
        let rows = &self.order[batch * self.size..((batch + 1) * self.size).min(n)];
        if self.dynamic {
            let mut rng = vaepipe_nn::stream_rng(self.bin_seed, step);
            for (i, r) in rows.iter().enumerate() {
                vaepipe_data::bernoulli_into(
                    self.data.row(*r),
                    &mut self.buf[i * d..(i + 1) * d],
                    &mut rng,
                );
            }
        } else {
            for (i, r) in rows.iter().enumerate() {
                self.buf[i * d..(i + 1) * d].copy_from_slice(self.data.row(*r));
            }
        }
        rows.len()
    }

    /// One optimizer step of `trainer` on batch `batch` (< [`Batches::per_epoch`]) of `epoch`,
    /// with the binarization and noise of the trainer's step number. Returns the step's
    /// statistics and the batch's rows. A divergence is [`NnError::Diverged`], for the caller
    /// to explain (the trainer is left unchanged).
    pub fn step(
        &mut self,
        trainer: &mut Trainer,
        epoch: usize,
        batch: usize,
    ) -> Result<(StepStats, usize), NnError> {
        let step = trainer.steps();
        let b = self.fill(epoch, batch, step);
        let d = self.data.features;
        let mut rng = vaepipe_nn::stream_rng(self.noise_seed, step);
        let stats = trainer.step(&self.buf[..b * d], b, &mut rng)?;
        Ok((stats, b))
    }
}

/// A fixed Bernoulli draw of a dataset (for validation and test under dynamic binarization),
/// with the data crate's drawing rule.
pub(crate) fn binarize_fixed(x: &[f32], seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0.0; x.len()];
    vaepipe_data::bernoulli_into(x, &mut out, &mut rng);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_binarization_is_seeded_and_follows_the_probabilities() {
        let p: Vec<f32> = (0..20_000).map(|i| (i % 5) as f32 / 4.0).collect();
        let a = binarize_fixed(&p, 3);
        assert_eq!(a, binarize_fixed(&p, 3));
        assert_ne!(a, binarize_fixed(&p, 4));
        for level in 0..5 {
            let draws: Vec<f32> = a
                .iter()
                .zip(&p)
                .filter(|(_, q)| **q == level as f32 / 4.0)
                .map(|(v, _)| *v)
                .collect();
            let mean = draws.iter().sum::<f32>() / draws.len() as f32;
            assert!(
                (mean - level as f32 / 4.0).abs() < 0.03,
                "level {level}: {mean}"
            );
        }
    }
}
