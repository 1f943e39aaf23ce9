//! The VampPrior on the fast path (Tomczak & Welling 2018): each step encodes the pseudo-inputs
//! (split across the lanes), makes them the step's equal-weight mixture, and afterwards pulls the
//! lanes' gradient with respect to that mixture back through the encoder.

use super::backward::encoder_backward;
use super::lane::encoder_forward;
use super::pack::{Net, Offsets, Packed};
use super::work::{Ctx, LANES, LaneWork};
use crate::kernels;
use crate::prior::Vamp;
use crate::task::{Objective, Trainable};

/// A VampPrior's per-step work: the pseudo-inputs and one encoder work area per active lane
/// (the K rows split as the batch is, so the result does not depend on the threads).
#[derive(Clone, Debug, Default)]
pub(super) struct VampWork {
    pub(super) u: Vec<f32>,
    pub(super) halves: Vec<LaneWork>,
    /// Pseudo-input rows of each half: `starts[h] .. starts[h + 1]`.
    pub(super) starts: [usize; LANES + 1],
    /// Active halves (= active lanes of the step).
    pub(super) active: usize,
    pub(super) means: Vec<f32>,
    pub(super) log_stds: Vec<f32>,
    /// The summed lanes' gradient with respect to the mixture's means and log-stds (`f64`).
    pub(super) g_means: Vec<f64>,
    pub(super) g_ls: Vec<f64>,
}

/// What a VampPrior's encoder passes read of the engine.
#[derive(Clone, Copy)]
pub(super) struct Setup<'a> {
    pub(super) net: &'a Net,
    pub(super) off: &'a Offsets,
    pub(super) obj: &'a Objective,
    pub(super) tr: Trainable,
}

impl Setup<'_> {
    /// The read-only context of an encoder pass over the pseudo-inputs `u` under `obj` (the
    /// step's objective without the analytic KL, which this prior does not allow).
    fn ctx<'a>(&'a self, pk: &'a Packed, obj: &'a Objective, u: &'a [f32]) -> Ctx<'a> {
        Ctx {
            net: self.net,
            off: self.off,
            pk,
            obj,
            tr: self.tr,
            x: u,
            eps: &[],
            n: u.len() / self.net.dd,
            prior_grad: false,
            input_grad: self.off.pseudo.is_some(),
        }
    }

    fn objective(&self) -> Objective {
        Objective {
            analytic_kl: false,
            ..*self.obj
        }
    }
}

impl VampWork {
    /// Encodes the VampPrior's pseudo-inputs, split across the step's `active` lanes, and sets
    /// the step's mixture in `packed` (equal weights; the encoder's means and log-stds).
    pub(super) fn forward(
        &mut self,
        s: Setup<'_>,
        packed: &mut Packed,
        v: &Vamp<f32>,
        active: usize,
    ) {
        let (k, d) = (v.components(), s.net.d);
        self.u.clear();
        self.u.extend(v.pseudo_inputs());
        self.active = active.clamp(1, LANES);
        for h in 0..LANES {
            let rows = if h < self.active {
                k / self.active + usize::from(h < k % self.active)
            } else {
                0
            };
            self.starts[h + 1] = self.starts[h] + rows;
        }
        self.halves.resize_with(LANES, LaneWork::default);
        {
            let obj = s.objective();
            let ctx = s.ctx(packed, &obj, &self.u);
            on_halves(&mut self.halves, self.starts, |w, first, rows| {
                encoder_forward(&ctx, w, first, rows)
            });
        }
        self.means.clear();
        self.log_stds.clear();
        for (h, w) in self.halves.iter().enumerate().take(self.active) {
            let rows = self.starts[h + 1] - self.starts[h];
            self.means.extend_from_slice(&w.mu[..rows * d]);
            self.log_stds.extend_from_slice(&w.log_std[..rows * d]);
        }
        if let Some(mix) = packed.mix.as_mut() {
            mix.load_equal(&self.means, &self.log_stds, d);
        }
    }

    /// After the lanes: pulls their gradient with respect to the VampPrior's means and
    /// log-stds back through the encoder at the pseudo-inputs, adding the encoder's weight
    /// gradients (when it is trained) to the lanes' and writing the pseudo-inputs' gradient
    /// (when they are trained), each half into its own lane.
    pub(super) fn backward(&mut self, s: Setup<'_>, packed: &Packed, lanes: &mut [LaneWork]) {
        let (d, dd, off) = (s.net.d, s.net.dd, s.off);
        let k = self.starts[LANES];
        self.g_means.clear();
        self.g_means.resize(k * d, 0.0);
        self.g_ls.clear();
        self.g_ls.resize(k * d, 0.0);
        // Active lanes are the first ones (lanes fill first-to-last), summed in lane order.
        for lane in &lanes[..self.active] {
            let gp = &lane.grad_prior;
            for (a, b) in self.g_means.iter_mut().zip(&gp[k..k + k * d]) {
                *a += b;
            }
            for (a, b) in self.g_ls.iter_mut().zip(&gp[k + k * d..k + 2 * k * d]) {
                *a += b;
            }
        }
        for (h, w) in self.halves.iter_mut().enumerate() {
            let rows = (self.starts[h] * d)..(self.starts[h + 1] * d);
            w.g_mu.clear();
            w.g_mu.extend_from_slice(&self.g_means[rows.clone()]);
            w.g_ls.clear();
            w.g_ls.extend_from_slice(&self.g_ls[rows]);
            if w.grad.len() != off.len {
                w.grad.resize(off.len, 0.0);
            }
        }
        let obj = s.objective();
        let ctx = s.ctx(packed, &obj, &self.u);
        let st = self.starts;
        on_halves(&mut self.halves, st, |w, _, rows| {
            encoder_backward(&ctx, w, rows)
        });
        for (h, (lane, w)) in lanes
            .iter_mut()
            .zip(&self.halves)
            .enumerate()
            .take(self.active)
        {
            if s.tr.encoder {
                let e = off.enc_end;
                for (a, b) in lane.grad[..e].iter_mut().zip(&w.grad[..e]) {
                    *a += b;
                }
            }
            if let Some(o) = off.pseudo {
                let dst = &mut lane.grad[o..o + k * dd];
                dst.fill(0.0);
                let rows = st[h + 1] - st[h];
                dst[st[h] * dd..st[h + 1] * dd].copy_from_slice(&w.gx[..rows * dd]);
            }
        }
    }
}

/// Runs `f(work, first_row, rows)` on each half that has pseudo-input rows (`starts` as in
/// [`VampWork::starts`]), the two in parallel, with flush-to-zero as in the lanes.
fn on_halves(
    halves: &mut [LaneWork],
    starts: [usize; LANES + 1],
    f: impl Fn(&mut LaneWork, usize, usize) + Sync,
) {
    let (h0, h1) = halves.split_at_mut(1);
    let run = |w: &mut LaneWork, h: usize| {
        if starts[h + 1] > starts[h] {
            let _ftz = kernels::DenormalsAreZero::new();
            f(w, starts[h], starts[h + 1] - starts[h]);
        }
    };
    rayon::join(|| run(&mut h0[0], 0), || run(&mut h1[0], 1));
}
