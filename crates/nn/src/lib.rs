//! The VAE mathematics of vaepipe on dfdx 0.13 (CPU): models, priors, importance-weighted
//! bounds, gradient estimators, Adam training with exact resume, and checkpoint files.
//!
//! This crate does numerics only — no spec parsing, tables or CLI. Everything random takes an
//! explicit RNG from the caller; the numeric core is generic over [`Real`] (`f32` for training,
//! `f64` for finite-difference checks), and both precisions run the same code.
//!
//! * [`Vae`]: Gaussian encoder q(z|x), Bernoulli or Gaussian decoder p(x|z), run-time sizes
//!   from [`VaeConfig`]; parameters as [`NamedTensor`]s. Optionally several stochastic layers
//!   ([`VaeConfig::upper`], Burda et al.'s two-layer nets): q(z₁|x) q(z₂|z₁) …, p(z_L) …
//!   p(z₁|z₂) p(x|z₁), the prior on the top layer; they train on the tape (crate-private
//!   `stack`), and evaluate with [`Evaluator`] (`stack_eval` for the upper layers).
//! * [`Prior`]: standard normal, Gaussian mixture (also the exact aggregate posterior), and
//!   the VampPrior (Tomczak & Welling 2018).
//! * Bounds (Burda et al. 2016): [`log_weights`], [`bound_from_log_weights`], [`elbo_terms`].
//! * Training: [`Objective`] (ELBO/IWAE, reparameterisation or DReG — Tucker et al. 2019),
//!   [`Trainer`] (Adam via dfdx's kernel), [`objective_and_grads_with_noise`].
//!   Standard-normal models in `f32` on CPUs with AVX2+FMA train on a fast path (crate-private
//!   `fast` and `kernels` modules: packed matrix kernel, vectorized elementwise passes, two
//!   lanes on rayon) that computes the same values and gradients as the dfdx tape
//!   ([`fast_path_available`], [`Trainer::set_fast_path`]).
//! * Evaluation: [`Evaluator`] (importance-sampled NLL at large k), [`lk_curve`].
//! * Files: [`save_safetensors`], [`load_safetensors`].
//! * Benchmarks: [`gemm_gflops`] measures the machine's f32 matrix-product throughput.
//!
//! Data are row-major `&[E]` slices; every function checks lengths and values before any
//! tensor is built and returns [`NnError`] rather than panicking.

mod analysis;
mod bounds;
mod checkpoint;
mod config;
mod error;
mod estimate;
mod fast;
mod fit;
mod flops;
mod kernels;
mod lse;
mod model;
mod named;
mod objective;
mod param;
mod prior;
mod real;
mod stack;
mod stack_eval;
mod task;
mod throughput;
mod train;
mod weights;

pub use analysis::{CurvePoint, Projection, latent_variances, lk_curve, principal_components};
pub use bounds::{
    ElboTerms, bound_from_log_weights, elbo_terms, log_weights, log_weights_with_noise,
};
pub use checkpoint::{load_safetensors, save_safetensors};
pub use config::{
    Activation, DATA_MEAN_CLIP, DataLogits, Init, InitScheme, Likelihood, OutputBias, PosteriorStd,
    UpperLayer, VaeConfig,
};
pub use error::{NnError, Result};
pub use estimate::{Evaluator, ImageEstimate, SampleOptions};
pub use fit::{AggregateMoments, EmStep, MeanStderr, aggregate_moments, em_step};
pub use flops::{eval_flops_per_image, gemm_shapes, train_flops_per_image};
pub use kernels::{DenormalsAreZero, Isa};
pub use lse::log_sum_exp;
pub use model::{Posterior, Vae, standard_normal_noise};
pub use named::NamedTensor;
pub use objective::{
    fast_path_available, objective_and_grads_with_noise, objective_and_grads_with_noise_reference,
};
pub use prior::{AGGREGATE_SEED, Mixture, Prior, PriorKind, Vamp};
pub use real::Real;
pub use task::{Beta, Estimator, Objective, ObjectiveKind, Trainable};
pub use throughput::{GemmBackend, fma_peak_gflops, gemm_gflops};
pub use train::{AdamHyper, StepStats, Trainer};

/// A portable seeded generator for stream `stream` of run `seed` (ChaCha8; the same on every
/// platform). Deriving each step's generator as `stream_rng(seed, step)` makes training
/// resumable bit for bit.
pub fn stream_rng(seed: u64, stream: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}
