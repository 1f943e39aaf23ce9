//! A Gaussian-mixture prior on the fast path (a refit `mog` prior, or a VampPrior's encoded
//! pseudo-inputs): log p(z), ∂ log p(z)/∂z and the gradient with respect to the mixture's
//! logits, means and log-stds for a chunk of samples, as `f64` matrix products.
//!
//! With a_c = log π_c − Σ_j ln σ_cj − (d/2) ln 2π and v_cj = σ_cj⁻²,
//! log N(z; μ_c, σ_c) + log π_c = a_c − ½ Σ_j (z_j − μ_cj)² v_cj
//!                              = [z² | z] · [−½ v_c ; μ_c v_c] + (a_c − ½ Σ_j μ_cj² v_cj),
//! so the K component terms of a chunk's rows are one product with a matrix fixed for the step;
//! with responsibilities ρ = softmax_c, ∂/∂z_j = Σ_c ρ_c μ_cj v_cj − z_j Σ_c ρ_c v_cj is a second,
//! and the parameters' gradient under the surrogate Σ_r c_r log p(z_r) needs only
//! S = (c ⊙ ρ)ᵀ · [z² | z | 1]: with s0 = Σ_r c_r ρ_rc, ∂/∂μ_cj = v_cj (S_z − μ_cj s0),
//! ∂/∂ln σ_cj = v_cj (S_z² − 2 μ_cj S_z + μ_cj² s0) − s0, ∂/∂a_c = s0 − π_c Σ_r c_r.
//! The expansion cancels: in `f64` its error (≈ 10⁻¹⁶ of Σ_j z_j² v_cj) stays far below `f32`
//! resolution, which is why these products run in `f64` (the `gemm` crate; it picks its own
//! kernels for the CPU, so these terms are bit-identical on one machine, not across instruction
//! sets). Measured against the per-sample scalar loops they replace: see docs/performance.md.

use crate::lse::shifted_exp_sum;
use crate::prior::Mixture;
use crate::real::{LN_2PI, matmul_strided as matmul_f64};

/// A mixture prior's parameters for one step, in `f64`.
#[derive(Clone, Debug, Default)]
pub(super) struct MixPack {
    /// Components K and dimension d.
    pub(super) k: usize,
    d: usize,
    /// Mixing weights π_c.
    pi: Vec<f64>,
    /// Means μ (K × d).
    means: Vec<f64>,
    /// v = σ⁻² (K × d).
    inv_var: Vec<f64>,
    /// [−½ vᵀ ; (μ ⊙ v)ᵀ] (2d × K): the forward product's right-hand side.
    fwd: Vec<f64>,
    /// a_c − ½ Σ_j μ_cj² v_cj (K).
    bias: Vec<f64>,
    /// [μ ⊙ v | v] (K × 2d): the right-hand side of ∂/∂z.
    back: Vec<f64>,
}

/// Per-lane scratch of [`MixPack`] for one chunk.
#[derive(Clone, Debug, Default)]
pub(super) struct MixWork {
    /// [z² | z | 1] (rows × (2d + 1)).
    x: Vec<f64>,
    /// Component terms, then responsibilities (rows × K); scaled by c_r for the gradient.
    rho: Vec<f64>,
    /// ρ · [μ ⊙ v | v] (rows × 2d).
    g: Vec<f64>,
    /// (c ⊙ ρ)ᵀ · [z² | z | 1] (K × (2d + 1)).
    s: Vec<f64>,
}

fn sized(v: &mut Vec<f64>, len: usize) -> &mut [f64] {
    v.clear();
    v.resize(len, 0.0);
    &mut v[..]
}

impl MixPack {
    /// A trained or fixed mixture (`prior.logits`, `prior.means`, `prior.log_stds`).
    pub(super) fn load(&mut self, m: &Mixture<f32>) {
        let logits: Vec<f64> = m.logits().iter().map(|&v| v as f64).collect();
        let (max, sum) = shifted_exp_sum(logits.iter().copied());
        let lse = max + sum.ln();
        let log_pi: Vec<f64> = logits.iter().map(|v| v - lse).collect();
        self.set(&log_pi, &m.means(), &m.log_stds(), m.dim());
    }

    /// The VampPrior's mixture: K equal weights, means and log-stds the encoder's outputs at
    /// the pseudo-inputs (`K × d` each).
    pub(super) fn load_equal(&mut self, means: &[f32], log_stds: &[f32], d: usize) {
        let k = means.len() / d;
        self.set(&vec![-(k as f64).ln(); k], means, log_stds, d);
    }

    fn set(&mut self, log_pi: &[f64], means: &[f32], log_stds: &[f32], d: usize) {
        let k = log_pi.len();
        self.k = k;
        self.d = d;
        self.pi = log_pi.iter().map(|l| l.exp()).collect();
        self.means = means.iter().map(|&v| v as f64).collect();
        self.inv_var = log_stds.iter().map(|&l| (-2.0 * l as f64).exp()).collect();
        sized(&mut self.fwd, 2 * d * k);
        sized(&mut self.back, k * 2 * d);
        self.bias.clear();
        for c in 0..k {
            let mut q = 0.0;
            let mut sum_ls = 0.0;
            for j in 0..d {
                let (mu, v) = (self.means[c * d + j], self.inv_var[c * d + j]);
                self.fwd[j * k + c] = -0.5 * v;
                self.fwd[(d + j) * k + c] = mu * v;
                self.back[c * 2 * d + j] = mu * v;
                self.back[c * 2 * d + d + j] = v;
                q += mu * mu * v;
                sum_ls += log_stds[c * d + j] as f64;
            }
            self.bias
                .push(log_pi[c] - sum_ls - 0.5 * d as f64 * LN_2PI - 0.5 * q);
        }
    }

    /// log p(z) of `rows` samples (`z`: rows of `ld ≥ d` values, the first d used) into `lp`,
    /// ∂ log p/∂z into `gz` (rows × d); the responsibilities stay in `w` for
    /// [`MixPack::gradient`].
    pub(super) fn eval(
        &self,
        z: &[f32],
        ld: usize,
        rows: usize,
        w: &mut MixWork,
        lp: &mut [f64],
        gz: &mut [f64],
    ) {
        let (k, d) = (self.k, self.d);
        let xw = 2 * d + 1;
        let x = sized(&mut w.x, rows * xw);
        for (r, row) in x.chunks_exact_mut(xw).enumerate() {
            for j in 0..d {
                let v = z[r * ld + j] as f64;
                row[j] = v * v;
                row[d + j] = v;
            }
            row[2 * d] = 1.0;
        }
        let e = sized(&mut w.rho, rows * k);
        matmul_f64(e, &w.x, (1, xw), &self.fwd, (1, k), rows, 2 * d, k);
        for (row, out) in e.chunks_exact_mut(k).zip(lp.iter_mut()) {
            let mut max = f64::NEG_INFINITY;
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
                max = max.max(*v);
            }
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|v| *v *= inv);
            *out = max + sum.ln();
        }
        let g = sized(&mut w.g, rows * 2 * d);
        matmul_f64(g, &w.rho, (1, k), &self.back, (1, 2 * d), rows, k, 2 * d);
        for r in 0..rows {
            for j in 0..d {
                let zj = w.x[r * xw + d + j];
                gz[r * d + j] = g[r * 2 * d + j] - zj * g[r * 2 * d + d + j];
            }
        }
    }

    /// Adds the gradient of Σ_r c_r log p(z_r) over the rows of the last [`MixPack::eval`]
    /// with respect to the logits, the means and the log-stds to `grad` (K + 2Kd values).
    pub(super) fn gradient(&self, c: &[f64], w: &mut MixWork, grad: &mut [f64]) {
        let (k, d) = (self.k, self.d);
        let xw = 2 * d + 1;
        let rows = c.len();
        for (row, &cr) in w.rho.chunks_exact_mut(k).zip(c) {
            row.iter_mut().for_each(|v| *v *= cr);
        }
        // S = Pᵀ · X with P = c ⊙ ρ (rows × K): Pᵀ read with strides (column K, row 1).
        let s = sized(&mut w.s, k * xw);
        matmul_f64(s, &w.rho, (k, 1), &w.x, (1, xw), k, rows, xw);
        let c_sum: f64 = c.iter().sum();
        let (g_logits, rest) = grad.split_at_mut(k);
        let (g_means, g_ls) = rest.split_at_mut(k * d);
        for cc in 0..k {
            let sr = &s[cc * xw..(cc + 1) * xw];
            let s0 = sr[2 * d];
            g_logits[cc] += s0 - self.pi[cc] * c_sum;
            for j in 0..d {
                let i = cc * d + j;
                let (mu, v) = (self.means[i], self.inv_var[i]);
                let (s2, s1) = (sr[j], sr[d + j]);
                g_means[i] += v * (s1 - mu * s0);
                g_ls[i] += v * (s2 - 2.0 * mu * s1 + mu * mu * s0) - s0;
            }
        }
    }
}
