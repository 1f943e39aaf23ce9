//! The evaluator's `f32` path for the layers above the first (models with several stochastic
//! layers, `stack.rs`): for a chunk of one image's samples, the ancestral draws z₁ … z_L from
//! ε₁ then ε₂ … per sample, log q(z₁, …, z_L|x) and Σ_l log p(z_l|z_{l+1}), with the packed
//! matrix kernel (`kernels::gemm`). The first layer's decoder p(x|z₁) and the prior p(z_L)
//! stay in `estimate.rs`.
//!
//! Noise is drawn exactly as [`crate::log_weights`] draws it (f64 standard normals rounded to
//! `f32`, sample by sample, ε₁ then ε₂ …), sums of log-densities in `f64`.

use dfdx::prelude::HasShape;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::config::Activation;
use crate::error::Result;
use crate::kernels::{
    self,
    gemm::{Lhs, Panels, Rhs},
};
use crate::model::{GaussNet, Vae};
use crate::real::LN_2PI;

/// A dense layer with `W` row-major `[inputs, outputs]`, packed when the CPU allows.
#[derive(Clone, Debug)]
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
    outputs: usize,
    packed: Option<Panels>,
}

impl Dense {
    fn new(w: Vec<f32>, b: Vec<f32>, inputs: usize, outputs: usize) -> Dense {
        let packed = Panels::new(&w, inputs, outputs);
        Dense {
            w,
            b,
            inputs,
            outputs,
            packed,
        }
    }

    /// `dst (m × outputs) = src (m × inputs) · W` (no bias).
    fn multiply(&self, dst: &mut [f32], src: &[f32], m: usize, scratch: &mut Vec<f32>) {
        match &self.packed {
            Some(p) => p.multiply(dst, src, m),
            None => kernels::gemm::gemm(
                m,
                self.outputs,
                self.inputs,
                Lhs::Rows(src, self.inputs),
                Rhs::Rows(&self.w, self.outputs),
                dst,
                self.outputs,
                false,
                scratch,
            ),
        }
    }
}

/// A Gaussian conditional: hidden layers, then one product for the mean and log-std heads
/// side by side (`2d` outputs: μ then ln σ).
#[derive(Clone, Debug)]
struct Net {
    hidden: Vec<Dense>,
    head: Dense,
    d: usize,
}

impl Net {
    fn new(g: &GaussNet<f32>) -> Net {
        let dense = |l: &crate::model::Linear<f32>| {
            let (i, o) = *l.w.shape();
            Dense::new(l.w.as_vec(), l.b.as_vec(), i, o)
        };
        let (i, d) = *g.mean.w.shape();
        let (mw, lw) = (g.mean.w.as_vec(), g.log_std.w.as_vec());
        let mut w = Vec::with_capacity(i * 2 * d);
        for r in 0..i {
            w.extend_from_slice(&mw[r * d..(r + 1) * d]);
            w.extend_from_slice(&lw[r * d..(r + 1) * d]);
        }
        let mut b = g.mean.b.as_vec();
        b.extend(g.log_std.b.as_vec());
        Net {
            hidden: g.hidden.iter().map(dense).collect(),
            head: Dense::new(w, b, i, 2 * d),
            d,
        }
    }

    /// `m × 2d` head outputs (μ then ln σ per row, bias added) for the rows of `src`.
    fn forward(&self, act: Activation, src: &[f32], m: usize, s: &mut Scratch) -> Vec<f32> {
        let mut cur = src.to_vec();
        for l in &self.hidden {
            let mut out = vec![0.0f32; m * l.outputs];
            l.multiply(&mut out, &cur, m, &mut s.gemm);
            kernels::bias_activation(&mut out, &l.b, act);
            cur = out;
        }
        let mut out = vec![0.0f32; m * self.head.outputs];
        self.head.multiply(&mut out, &cur, m, &mut s.gemm);
        for row in out.chunks_exact_mut(self.head.outputs) {
            for (v, b) in row.iter_mut().zip(&self.head.b) {
                *v += b;
            }
        }
        out
    }
}

/// Scratch space of one thread.
#[derive(Default)]
pub(crate) struct Scratch {
    gemm: Vec<f32>,
}

/// The upper layers of a model, prepared for the evaluator.
#[derive(Clone, Debug)]
pub(crate) struct StackEval {
    enc: Vec<Net>,
    dec: Vec<Net>,
    act: Activation,
    d1: usize,
}

/// One chunk's draws: z₁ and z_L (row-major), and per row log q and Σ log p(z_l|z_{l+1}).
pub(crate) struct Draws {
    pub z1: Vec<f32>,
    pub top: Vec<f32>,
    pub lq: Vec<f64>,
    pub lp_cond: Vec<f64>,
}

impl StackEval {
    /// `None` for a model with one stochastic layer.
    pub(crate) fn new(vae: &Vae<f32>) -> Option<StackEval> {
        if vae.upper.is_empty() {
            return None;
        }
        Some(StackEval {
            enc: vae.upper.iter().map(|u| Net::new(&u.enc)).collect(),
            dec: vae.upper.iter().map(|u| Net::new(&u.dec)).collect(),
            act: vae.config().activation,
            d1: vae.config().latent_dim,
        })
    }

    /// The chain of means μ_L(… μ₂(μ₁)) from the first layer's posterior mean (the point a
    /// mixture prior's `f32` path centres on).
    pub(crate) fn mean_chain(&self, mean1: &[f32], s: &mut Scratch) -> Vec<f32> {
        let mut z = mean1.to_vec();
        for net in &self.enc {
            let out = net.forward(self.act, &z, 1, s);
            z = out[..net.d].to_vec();
        }
        z
    }

    /// `m` fresh samples of one image with posterior q(z₁|x) = N(`mean`, `std`²) (and
    /// Σ ln σ₁ = `sum_log_std`).
    pub(crate) fn draw<R: Rng>(
        &self,
        mean: &[f32],
        std: &[f32],
        sum_log_std: f64,
        rng: &mut R,
        m: usize,
        s: &mut Scratch,
    ) -> Result<Draws> {
        let d1 = self.d1;
        let nd = d1 + self.enc.iter().map(|n| n.d).sum::<usize>();
        let noise: Vec<f32> = (0..m * nd)
            .map(|_| {
                let e: f64 = StandardNormal.sample(rng);
                e as f32
            })
            .collect();
        let mut lq = Vec::with_capacity(m);
        let mut z1 = Vec::with_capacity(m * d1);
        let const_q = -sum_log_std - 0.5 * d1 as f64 * LN_2PI;
        for r in 0..m {
            let e = &noise[r * nd..r * nd + d1];
            let mut sq = 0.0f64;
            for j in 0..d1 {
                sq += e[j] as f64 * e[j] as f64;
                z1.push(mean[j] + std[j] * e[j]);
            }
            lq.push(const_q - 0.5 * sq);
        }
        // Up: z_{l+1} = μ + σ ε and log q(z_{l+1}|z_l).
        let mut zs = vec![z1];
        let mut offset = d1;
        for net in &self.enc {
            let d = net.d;
            let head = net.forward(self.act, zs.last().map_or(&[][..], |v| v), m, s);
            let mut z = Vec::with_capacity(m * d);
            for r in 0..m {
                let h = &head[r * 2 * d..(r + 1) * 2 * d];
                let e = &noise[r * nd + offset..r * nd + offset + d];
                let mut acc = -0.5 * d as f64 * LN_2PI;
                for j in 0..d {
                    let ls = h[d + j];
                    z.push(h[j] + ls.exp() * e[j]);
                    acc -= ls as f64 + 0.5 * e[j] as f64 * e[j] as f64;
                }
                lq[r] += acc;
            }
            zs.push(z);
            offset += d;
        }
        // Down: log p(z_l|z_{l+1}).
        let mut lp_cond = vec![0.0f64; m];
        for (l, net) in self.dec.iter().enumerate() {
            let d = net.d;
            let head = net.forward(self.act, &zs[l + 1], m, s);
            let target = &zs[l];
            for r in 0..m {
                let h = &head[r * 2 * d..(r + 1) * 2 * d];
                let mut acc = -0.5 * d as f64 * LN_2PI;
                for j in 0..d {
                    let ls = h[d + j];
                    let u = (target[r * d + j] - h[j]) * (-ls).exp();
                    acc -= ls as f64 + 0.5 * u as f64 * u as f64;
                }
                lp_cond[r] += acc;
            }
        }
        let top = zs.pop().unwrap_or_default();
        let z1 = if zs.is_empty() {
            top.clone()
        } else {
            zs.swap_remove(0)
        };
        Ok(Draws {
            z1,
            top,
            lq,
            lp_cond,
        })
    }
}
