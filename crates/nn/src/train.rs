//! Adam training — dfdx's own Adam kernel (`AdamConfig::try_update`) on the generic path, the
//! same arithmetic vectorized and fused with the weights' packing on the fast path —, optimizer
//! moments in plain buffers, divergence detection before any update, and exact save/restore of
//! the full training state (bit-identical continuation).

use std::any::Any;
use std::fmt;

use dfdx::prelude::*;
use rand::Rng;

use crate::bounds::{check_batch, check_noise};
use crate::config::Group;
use crate::error::{NnError, Result};
use crate::fast::Engine;
use crate::kernels::AdamStep;
use crate::model::{Vae, standard_normal_noise};
use crate::named::{Lookup, NamedTensor};
use crate::objective::{evaluate_fast, evaluate_reference, fast_engine, trainable_names};
use crate::param::ParamMut;
use crate::prior::Prior;
use crate::real::{Buf, Dev, Real};
use crate::task::{Objective, Trainable};

/// Name of the step-counter tensor in [`Trainer::state`].
const STEP_TENSOR: &str = "trainer.step";
/// The step counter is stored as two exactly representable values `[step >> 24, step & 0xFFFFFF]`.
const STEP_SPLIT: u64 = 1 << 24;

/// Σ v² in `f64` with eight interleaved partial sums (vectorizes; a fixed order).
fn sum_squares<E: Real>(v: &[E]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            let x = x.as_f64();
            *a += x * x;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|x| x.as_f64() * x.as_f64())
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// Adam hyperparameters (Kingma & Ba 2015). Burda et al. (2016) used β = (0.9, 0.999), ε = 1e-4.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    /// Learning rate (≥ 0).
    pub lr: f64,
    /// First-moment decay β₁ ∈ [0, 1).
    pub beta1: f64,
    /// Second-moment decay β₂ ∈ [0, 1).
    pub beta2: f64,
    /// Denominator offset ε (> 0).
    pub eps: f64,
}

impl Default for AdamHyper {
    fn default() -> Self {
        AdamHyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl AdamHyper {
    /// Checks the ranges above.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(NnError::InvalidConfig(format!("Adam: {m}")));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("lr must be finite and ≥ 0, found {}", self.lr));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} must lie in [0, 1), found {b}"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad(format!("eps must be finite and > 0, found {}", self.eps));
        }
        Ok(())
    }
}

/// What one optimisation step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Batch mean of the objective before the update: L̂_k for IWAE, mean_i log w_i for the
    /// ELBO (reconstruction − KL with `analytic_kl`).
    pub bound: f64,
    /// Euclidean norm of the gradient over all trained parameters.
    pub grad_norm: f64,
}

struct Slot<E: Real> {
    name: String,
    shape: Vec<usize>,
    m: Buf<E>,
    v: Buf<E>,
    g: Buf<E>,
}

/// Trains a VAE and/or its prior with Adam on one objective.
pub struct Trainer<E: Real = f32> {
    vae: Vae<E>,
    prior: Prior<E>,
    objective: Objective,
    hyper: AdamHyper,
    trainable: Trainable,
    step: u64,
    slots: Vec<Slot<E>>,
    /// The fast `f32` path's state, when it supports this model and objective.
    fast: Option<Engine>,
    /// Whether steps use `fast` (see [`Trainer::set_fast_path`]).
    use_fast: bool,
}

impl<E: Real> fmt::Debug for Trainer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trainer")
            .field("objective", &self.objective)
            .field("hyper", &self.hyper)
            .field("trainable", &self.trainable)
            .field("step", &self.step)
            .field("prior", &self.prior.kind())
            .finish_non_exhaustive()
    }
}

impl<E: Real> Trainer<E> {
    /// A trainer at step 0 with zero Adam moments. Errors if the objective does not fit the
    /// prior, the prior does not fit the model, or `trainable` selects no parameter.
    pub fn new(
        vae: Vae<E>,
        prior: Prior<E>,
        objective: Objective,
        hyper: AdamHyper,
        trainable: Trainable,
    ) -> Result<Self> {
        objective.validate(&prior)?;
        prior.check_compatible(&vae)?;
        if objective.analytic_kl && vae.config().stochastic_layers() > 1 {
            return Err(NnError::InvalidConfig(
                "analytic_kl is defined for one stochastic layer only".into(),
            ));
        }
        hyper.validate()?;
        let names = trainable_names(&vae, &prior, trainable)?;
        let dev = Dev::<E>::default();
        let mut slots = Vec::with_capacity(names.len());
        for (name, p) in vae.params().into_iter().chain(prior.params()) {
            if names.contains(&name) {
                let len = p.len();
                slots.push(Slot {
                    name,
                    shape: p.shape(),
                    m: Storage::<E>::try_alloc_len(&dev, len)?,
                    v: Storage::<E>::try_alloc_len(&dev, len)?,
                    g: Storage::<E>::try_alloc_len(&dev, len)?,
                });
            }
        }
        let fast = fast_engine(&vae, &prior, &objective, trainable);
        Ok(Trainer {
            use_fast: fast.is_some(),
            fast,
            vae,
            prior,
            objective,
            hyper,
            trainable,
            step: 0,
            slots,
        })
    }

    /// Samples per example (m·k for the grouped objectives), never 0.
    fn samples(&self) -> std::num::NonZeroUsize {
        std::num::NonZeroUsize::new(self.objective.samples()).unwrap_or(self.objective.k)
    }

    /// Sets the learning rate (for schedules; not part of [`Trainer::state`]).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        AdamHyper { lr, ..self.hyper }.validate()?;
        self.hyper.lr = lr;
        Ok(())
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.hyper.lr
    }

    /// Number of completed steps.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The model.
    pub fn vae(&self) -> &Vae<E> {
        &self.vae
    }

    /// The prior.
    pub fn prior(&self) -> &Prior<E> {
        &self.prior
    }

    /// The objective.
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// Model and prior, consuming the trainer.
    pub fn into_parts(self) -> (Vae<E>, Prior<E>) {
        (self.vae, self.prior)
    }

    /// One Adam step on the batch `x` (n × input_dim), with noise drawn from `rng`.
    ///
    /// For exact resumption, derive `rng` from the run seed and the step number (e.g. with
    /// [`stream_rng`](crate::stream_rng)) rather than carrying one generator across steps.
    /// A non-finite objective or gradient returns [`NnError::Diverged`] and leaves every
    /// parameter and moment unchanged.
    pub fn step<R: Rng + ?Sized>(&mut self, x: &[E], n: usize, rng: &mut R) -> Result<StepStats> {
        let len = check_batch(&self.vae, x, n, self.samples())?;
        let eps = standard_normal_noise(rng, len);
        self.step_checked(x, n, &eps)
    }

    /// Whether steps take the fast `f32` path (see
    /// [`fast_path_available`](crate::fast_path_available)).
    pub fn uses_fast_path(&self) -> bool {
        self.use_fast
    }

    /// Chooses between the fast `f32` path (when available; the default) and the generic
    /// dfdx-tape path, e.g. to compare the two. Returns whether the fast path is now in use.
    pub fn set_fast_path(&mut self, enabled: bool) -> bool {
        self.use_fast = enabled && self.fast.is_some();
        if let Some(engine) = self.fast.as_mut() {
            engine.invalidate();
        }
        self.use_fast
    }

    /// [`Trainer::step`] at caller-supplied noise (n × S × [`VaeConfig::noise_dim`](crate::VaeConfig::noise_dim)
    /// values for the objective's S = [`Objective::samples`] samples per example: k, or m·k for
    /// MIWAE and PIWAE).
    pub fn step_with_noise(&mut self, x: &[E], n: usize, eps: &[E]) -> Result<StepStats> {
        let k = self.samples();
        let len = check_batch(&self.vae, x, n, k)?;
        check_noise(eps, n, k.get(), self.vae.config(), len)?;
        self.step_checked(x, n, eps)
    }

    /// One Adam step on a batch checked once by the caller (the objective, prior and trainable
    /// set were checked when the trainer was built and do not change).
    fn step_checked(&mut self, x: &[E], n: usize, eps: &[E]) -> Result<StepStats> {
        use rayon::prelude::*;
        debug_assert_eq!(
            eps.len(),
            n * self.objective.samples() * self.vae.config().noise_dim()
        );
        // Each slot's squared gradient norm; on the generic path the gradient of the loss to
        // minimise (−objective) is written into the slots, on the fast path it stays in the
        // engine's lane buffers, which its Adam reads.
        let fast = self.use_fast && self.fast.is_some();
        let (value, sq): (f64, Vec<f64>) = match (self.use_fast, self.fast.as_mut()) {
            (true, Some(engine)) => {
                let value = evaluate_fast(engine, &self.vae, &self.prior, x, n, eps)?;
                let engine = &*engine;
                let sq = (0..self.slots.len())
                    .into_par_iter()
                    .with_max_len(1)
                    .map(|t| engine.gradient_sq(t))
                    .collect();
                (value, sq)
            }
            _ => {
                let ev = evaluate_reference(
                    &self.vae,
                    &self.prior,
                    &self.objective,
                    self.trainable,
                    x,
                    n,
                    eps,
                )?;
                let sq = self
                    .slots
                    .iter_mut()
                    .zip(&ev.grads)
                    .map(|(slot, (gname, g))| {
                        // Invariant: slots and gradients are both in canonical order filtered
                        // by the same trainable set.
                        debug_assert!(slot.name == *gname);
                        for (dst, &src) in slot.g.iter_mut().zip(g) {
                            *dst = -src; // Adam minimises; the objective is maximised.
                        }
                        sum_squares(&slot.g)
                    })
                    .collect();
                (ev.value, sq)
            }
        };
        for (slot, s) in self.slots.iter().zip(&sq) {
            // (Σ g² of f32 values cannot overflow f64: it is infinite or NaN exactly when an
            // element is.)
            if !s.is_finite() && (fast || slot.g.iter().any(|v| !v.is_finite())) {
                return Err(NnError::Diverged {
                    what: format!("gradient of {}", slot.name),
                });
            }
        }
        let sq: f64 = sq.iter().sum();
        if !sq.is_finite() {
            return Err(NnError::Diverged {
                what: "gradient norm".into(),
            });
        }
        let t = i32::try_from(self.step + 1).map_err(|_| {
            NnError::InvalidConfig("step counter exceeds the i32 range of dfdx's Adam".into())
        })?;
        if fast {
            self.fast_adam(t)?;
            self.step += 1;
            return Ok(StepStats {
                bound: value,
                grad_norm: sq.sqrt(),
            });
        }
        if let Some(engine) = self.fast.as_mut() {
            // The generic path changes the weights the engine has packed.
            engine.invalidate();
        }
        let cfg = AdamConfig {
            lr: self.hyper.lr,
            betas: [self.hyper.beta1, self.hyper.beta2],
            eps: self.hyper.eps,
            weight_decay: None,
        };
        let Trainer {
            vae, prior, slots, ..
        } = self;
        let names: Vec<&String> = slots.iter().map(|s| &s.name).collect();
        let params: Vec<(String, ParamMut<'_, E>)> = vae
            .params_mut()
            .into_iter()
            .chain(prior.params_mut())
            .filter(|(n, _)| names.contains(&n))
            .collect();
        // dfdx's Adam kernel, one tensor per task (each tensor's update is independent of the
        // others, so the result does not depend on the threads).
        slots
            .par_iter_mut()
            .zip(params)
            .with_max_len(1)
            .try_for_each(|(slot, (name, mut p))| {
                debug_assert!(slot.name == name);
                p.adam_update(&cfg, t, &mut slot.m, &mut slot.v, &slot.g)
            })?;
        self.step += 1;
        Ok(StepStats {
            bound: value,
            grad_norm: sq.sqrt(),
        })
    }

    /// Adam step `t` on the fast path: [`Engine::adam`], the same arithmetic as dfdx's kernel
    /// (tested bit for bit in crates/nn/tests/adam.rs), with the weights packed for the next
    /// step in the same pass.
    fn fast_adam(&mut self, t: i32) -> Result<()> {
        let s = AdamStep::new(
            self.hyper.lr,
            [self.hyper.beta1, self.hyper.beta2],
            self.hyper.eps,
            t,
        );
        let Trainer {
            vae,
            prior,
            slots,
            fast,
            ..
        } = self;
        let mut names = Vec::with_capacity(slots.len());
        let mut moments = Vec::with_capacity(slots.len());
        for Slot { name, m, v, .. } in slots.iter_mut() {
            names.push(name.as_str());
            let m = (&mut **m as &mut dyn Any).downcast_mut::<Vec<f32>>();
            let v = (&mut **v as &mut dyn Any).downcast_mut::<Vec<f32>>();
            if let (Some(m), Some(v)) = (m, v) {
                moments.push((m.as_mut_slice(), v.as_mut_slice()));
            }
        }
        match (
            fast.as_mut(),
            (vae as &mut dyn Any).downcast_mut::<Vae<f32>>(),
            (prior as &mut dyn Any).downcast_mut::<Prior<f32>>(),
        ) {
            (Some(engine), Some(vae), Some(prior)) if moments.len() == names.len() => {
                engine.adam(vae, prior, &names, moments, &s)
            }
            _ => Err(NnError::InvalidConfig(
                "the fast training path needs an f32 model".into(),
            )),
        }
    }

    /// The complete training state: model tensors, prior tensors (`prior.*`), Adam moments
    /// `adam.m.<name>` and `adam.v.<name>` of every trained parameter, and the step counter
    /// `trainer.step` = `[step >> 24, step & 0xFFFFFF]` (exact in `f32`).
    pub fn state(&self) -> Vec<NamedTensor<E>> {
        let mut out = self.vae.named_tensors();
        out.extend(self.prior.named_tensors());
        for s in &self.slots {
            out.push(NamedTensor {
                name: format!("adam.m.{}", s.name),
                shape: s.shape.clone(),
                data: s.m.to_vec(),
            });
            out.push(NamedTensor {
                name: format!("adam.v.{}", s.name),
                shape: s.shape.clone(),
                data: s.v.to_vec(),
            });
        }
        out.push(NamedTensor {
            name: STEP_TENSOR.into(),
            shape: vec![2],
            data: vec![
                E::of_f64((self.step / STEP_SPLIT) as f64),
                E::of_f64((self.step % STEP_SPLIT) as f64),
            ],
        });
        out
    }

    /// Restores a state written by [`Trainer::state`] of a trainer with the same model
    /// configuration, prior kind and trainable set. Every tensor must be used and well-formed;
    /// on error the trainer is unchanged.
    pub fn restore(&mut self, state: &[NamedTensor<E>]) -> Result<()> {
        if let Some(t) = state.iter().find(|t| {
            Group::of(&t.name).is_none()
                && !t.name.starts_with("adam.")
                && !t.name.starts_with("trainer.")
        }) {
            return Err(NnError::UnexpectedTensor {
                name: t.name.clone(),
                context:
                    "not in a trainer-state namespace (encoder., decoder., prior., adam., trainer.)"
                        .into(),
            });
        }
        let vae = Vae::from_named_tensors(self.vae.config(), state)?;
        let prior = Prior::from_named_tensors(self.prior.kind(), self.vae.config(), state)?;
        let mut lookup = Lookup::new(state, |n| {
            n.starts_with("adam.") || n.starts_with("trainer.")
        })?;
        let mut moments = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let m = lookup
                .take(&format!("adam.m.{}", s.name), &s.shape)?
                .to_vec();
            let vname = format!("adam.v.{}", s.name);
            let v = lookup.take(&vname, &s.shape)?.to_vec();
            if let Some(i) = v.iter().position(|&x| x < E::zero()) {
                return Err(NnError::BadTensor {
                    name: vname,
                    reason: format!("second moment at index {i} is negative ({})", v[i]),
                });
            }
            moments.push((m, v));
        }
        let st = lookup.take(STEP_TENSOR, &[2])?;
        let part = |x: E| -> Option<u64> {
            let f = x.as_f64();
            (f >= 0.0 && f < STEP_SPLIT as f64 && f.fract() == 0.0).then_some(f as u64)
        };
        let step = match (part(st[0]), part(st[1])) {
            (Some(hi), Some(lo)) => hi * STEP_SPLIT + lo,
            _ => {
                return Err(NnError::BadTensor {
                    name: STEP_TENSOR.into(),
                    reason: format!(
                        "expected two integers in [0, 2^24), found [{}, {}]",
                        st[0], st[1]
                    ),
                });
            }
        };
        lookup.finish("not part of this trainer's state (different trainable set or prior?)")?;
        for (s, (m, v)) in self.slots.iter_mut().zip(moments) {
            s.m.copy_from_slice(&m);
            s.v.copy_from_slice(&v);
        }
        self.vae = vae;
        self.prior = prior;
        self.step = step;
        if let Some(engine) = self.fast.as_mut() {
            engine.invalidate();
        }
        Ok(())
    }
}
