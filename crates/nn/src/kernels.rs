//! `f32` kernels shared by the evaluation path (crate::estimate) and the fast training path
//! (crate::fast), and the one place that chooses the instruction set they run with ([`Isa`]):
//!
//! * [`math`]: branch-free approximations of exp, log1p, softplus and tanh, written so that the
//!   compiler vectorizes the loops that call them (accurate to a few units in the last place);
//! * row kernels built on them (bias + activation, Bernoulli and Gaussian log-likelihoods and
//!   their gradients, activation derivatives, a blocked log-sum-exp), each instantiated three
//!   times — generic, AVX2+FMA and AVX-512 — and chosen at run time ([`dispatched!`]); every
//!   instantiation computes identical values (no fused multiply-adds are introduced: `mul_add`
//!   is `fmaf` where FMA is not enabled, and the wider vectors only change how many lanes run
//!   at once);
//! * [`gemm`]: register-blocked matrix kernels on packed right operands — 12 × 32 with AVX-512,
//!   6 × 16 with AVX2+FMA — whose every output is one sequential sum over the depth, so both
//!   give bit-identical products;
//! * [`DenormalsAreZero`]: flush-to-zero / denormals-are-zero for the duration of a kernel
//!   region (subnormal floats cost ~100 cycles per operation on Intel cores).
//!
//! Nothing here allocates per call except where a scratch buffer is passed in.

use crate::config::Activation;

/// Scalar approximations (inlined into the vectorized loops).
pub(crate) mod math {
    /// 1.5 · 2²³: adding it to |t| < 2²² rounds t to the nearest integer in the mantissa.
    const MAGIC: f32 = 12_582_912.0;

    /// a·b + c rounded once (a single instruction where FMA is enabled; `fmaf` elsewhere). Both
    /// instantiations of the kernels therefore compute identical values.
    #[inline(always)]
    pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    /// eˣ to ~1 ulp on [−87, 88] (clamped outside; NaN propagates): Cody–Waite reduction
    /// x = n ln 2 + r, |r| ≤ ½ ln 2, and the Cephes `expf` polynomial.
    #[inline(always)]
    pub(crate) fn exp(x: f32) -> f32 {
        let x = if x < -87.0 { -87.0 } else { x };
        let x = if x > 88.0 { 88.0 } else { x };
        let j = fma(x, std::f32::consts::LOG2_E, MAGIC);
        let n = j - MAGIC;
        let r = fma(n, 2.121_944_4e-4, fma(n, -0.693_359_4, x));
        let mut p = fma(1.987_569_2e-4, r, 1.398_199_9e-3);
        p = fma(p, r, 8.333_452e-3);
        p = fma(p, r, 4.166_579_6e-2);
        p = fma(p, r, 0.166_666_65);
        p = fma(p, r, 0.5);
        let p = fma(p, r * r, r) + 1.0;
        let e = ((j.to_bits() as i32).wrapping_sub(0x4B40_0000) + 127) << 23;
        p * f32::from_bits(e as u32)
    }

    /// ln(1 + e) for e ∈ [0, 1]: 2 atanh(s) with s = e/(2 + e) ≤ ⅓, by its series to s¹³
    /// (truncation error < 2·10⁻⁸ relative).
    #[inline(always)]
    pub(crate) fn log1p_unit(e: f32) -> f32 {
        let s = e / (2.0 + e);
        let s2 = s * s;
        let mut p = fma(1.0 / 13.0, s2, 1.0 / 11.0);
        p = fma(p, s2, 1.0 / 9.0);
        p = fma(p, s2, 1.0 / 7.0);
        p = fma(p, s2, 1.0 / 5.0);
        p = fma(p, s2, 1.0 / 3.0);
        p = fma(p, s2, 1.0);
        2.0 * s * p
    }

    /// softplus(x) = ln(1 + eˣ) = max(x, 0) + ln(1 + e^−|x|), stable for every x.
    #[inline(always)]
    pub(crate) fn softplus(x: f32) -> f32 {
        let pos = if x > 0.0 { x } else { 0.0 };
        pos + log1p_unit(exp(-x.abs()))
    }

    /// tanh(x) = sign(x) (1 − t)/(1 + t) with t = e^−2|x| (absolute error ~1e-7).
    #[inline(always)]
    pub(crate) fn tanh(x: f32) -> f32 {
        let t = exp(-2.0 * x.abs());
        let y = (1.0 - t) / (1.0 + t);
        if x < 0.0 { -y } else { y }
    }

    #[inline(always)]
    pub(crate) fn relu(x: f32) -> f32 {
        if x < 0.0 { 0.0 } else { x }
    }
}

use math::{exp, fma, log1p_unit, relu, softplus, tanh};

/// Lane count of the row sums (lets the compiler keep the partial sums in vector registers).
const LANES: usize = 16;

/// Σ of a row in LANES partial sums, then combined in `f64`.
#[inline(always)]
fn row_sum(row: &[f32]) -> f64 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    acc.iter().map(|&v| v as f64).sum::<f64>() + tail
}

#[inline(always)]
fn activate_row(row: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        Activation::Tanh => {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = tanh(*v + b);
            }
        }
        Activation::Relu => {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = relu(*v + b);
            }
        }
        Activation::Softplus => {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = softplus(*v + b);
            }
        }
    }
}

#[inline(always)]
fn bias_activation_impl(buf: &mut [f32], bias: &[f32], act: Activation) {
    for row in buf.chunks_exact_mut(bias.len()) {
        activate_row(row, bias, act);
    }
}

/// Rows of width `bias.len()` at stride `ld`: v = act(v + b); with `ld > width`, the value
/// after the row (column `width`) is set to 1 (the constant input that turns a weight-gradient
/// product into weight and bias gradients at once).
#[inline(always)]
fn activation_rows_impl(buf: &mut [f32], ld: usize, rows: usize, bias: &[f32], act: Activation) {
    let w = bias.len();
    for r in 0..rows {
        let row = &mut buf[r * ld..r * ld + w];
        activate_row(row, bias, act);
        if ld > w {
            buf[r * ld + w] = 1.0;
        }
    }
}

/// d ← d ⊙ act′ (· scale per row), with act′ written in terms of the activation's output y:
/// tanh′ = 1 − y², relu′ = [y > 0], softplus′ = sigmoid = 1 − e^−y. `d` is `rows × w` at stride
/// `ldd`, `y` at stride `ldy`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn activation_grad_impl(
    d: &mut [f32],
    ldd: usize,
    y: &[f32],
    ldy: usize,
    rows: usize,
    w: usize,
    act: Activation,
    scale: Option<&[f32]>,
) {
    for r in 0..rows {
        let dr = &mut d[r * ldd..r * ldd + w];
        let yr = &y[r * ldy..r * ldy + w];
        let s = scale.map_or(1.0, |s| s[r]);
        match act {
            Activation::Tanh => {
                for (g, &v) in dr.iter_mut().zip(yr) {
                    *g *= s * (1.0 - v * v);
                }
            }
            Activation::Relu => {
                for (g, &v) in dr.iter_mut().zip(yr) {
                    *g = if v > 0.0 { *g * s } else { 0.0 };
                }
            }
            Activation::Softplus => {
                for (g, &v) in dr.iter_mut().zip(yr) {
                    *g *= s * (1.0 - exp(-v));
                }
            }
        }
    }
}

/// One Adam step's constants in `f32`, computed as dfdx 0.13's Adam kernel computes them
/// (`AdamConfig` through `try_update`): β₁, β₂, ε and the learning rate rounded from `f64`,
/// 1 − β₁, 1 − β₂ and the bias corrections c₁ = (1 − β₁ᵗ)⁻¹, c₂ = (1 − β₂ᵗ)⁻¹ with `powi`
/// (dfdx evaluates the same two expressions for every element; here they are hoisted).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdamStep {
    pub lr: f32,
    pub b1: f32,
    pub b2: f32,
    pub omb1: f32,
    pub omb2: f32,
    pub c1: f32,
    pub c2: f32,
    pub eps: f32,
}

impl AdamStep {
    /// The constants of step `t` (≥ 1).
    pub(crate) fn new(lr: f64, betas: [f64; 2], eps: f64, t: i32) -> AdamStep {
        let (b1, b2) = (betas[0] as f32, betas[1] as f32);
        AdamStep {
            lr: lr as f32,
            b1,
            b2,
            omb1: 1.0 - b1,
            omb2: 1.0 - b2,
            c1: (1.0 - b1.powi(t)).recip(),
            c2: (1.0 - b2.powi(t)).recip(),
            eps: eps as f32,
        }
    }
}

/// One element of Adam, the operations of dfdx's kernel in its order (no fused multiply-add,
/// so every instruction set rounds identically): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
/// p ← p − lr·(c₁m) / (√(c₂v) + ε).
#[inline(always)]
fn adam_one(p: &mut f32, m: &mut f32, v: &mut f32, g: f32, s: &AdamStep) {
    *m = *m * s.b1 + g * s.omb1;
    *v = *v * s.b2 + (g * g) * s.omb2;
    let m_hat = *m * s.c1;
    let v_hat = *v * s.c2;
    *p -= s.lr * m_hat / (v_hat.sqrt() + s.eps);
}

/// Adam on `p` with moments `m`, `v` and the loss gradient g = −(`g0` + `g1`) (the negated sum
/// of the lanes' ascent directions; `g1` empty: g = −`g0`), rounded as the trainer rounded it.
#[inline(always)]
fn adam_impl(p: &mut [f32], m: &mut [f32], v: &mut [f32], g0: &[f32], g1: &[f32], s: &AdamStep) {
    let n = p.len();
    let (m, v, g0) = (&mut m[..n], &mut v[..n], &g0[..n]);
    if g1.is_empty() {
        for (((p, m), v), &a) in p.iter_mut().zip(m).zip(v).zip(g0) {
            adam_one(p, m, v, -a, s);
        }
    } else {
        for ((((p, m), v), &a), &b) in p.iter_mut().zip(m).zip(v).zip(g0).zip(&g1[..n]) {
            adam_one(p, m, v, -(a + b), s);
        }
    }
}

/// Σ g² in `f64` of g = −(`g0` + `g1`) rounded to `f32` (`g1` empty: g = −`g0`), with eight
/// interleaved partial sums over blocks of eight, then the tail, in a fixed order (the
/// trainer's gradient norm; identical on every instruction set).
#[inline(always)]
fn sum_squares_impl(g0: &[f32], g1: &[f32], out: &mut f64) {
    #[inline(always)]
    fn sq(g: f32) -> f64 {
        let x = g as f64;
        x * x
    }
    let n = g0.len();
    let mut acc = [0.0f64; 8];
    let full = n / 8 * 8;
    if g1.is_empty() {
        for c in g0[..full].chunks_exact(8) {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += sq(-x);
            }
        }
    } else {
        for (c, d) in g0[..full].chunks_exact(8).zip(g1[..full].chunks_exact(8)) {
            for ((a, &x), &y) in acc.iter_mut().zip(c).zip(d) {
                *a += sq(-(x + y));
            }
        }
    }
    let tail: f64 = (full..n)
        .map(|i| sq(-(g0[i] + g1.get(i).copied().unwrap_or(0.0))))
        .sum();
    *out = acc.iter().sum::<f64>() + tail;
}

/// Row r of `h` (width `w`, stride `ld > w`) times `c[r]`, and column `w` set to `c[r]`.
#[inline(always)]
fn scale_rows_impl(h: &mut [f32], ld: usize, rows: usize, w: usize, c: &[f32]) {
    for r in 0..rows {
        let row = &mut h[r * ld..r * ld + w + 1];
        let s = c[r];
        for v in row[..w].iter_mut() {
            *v *= s;
        }
        row[w] = s;
    }
}

/// log Bernoulli(x | sigmoid(l)) = −(max(l, 0) − l x + ln(1 + e^−|l|)) summed over a row,
/// with l = logits + bias (the logits are overwritten).
#[inline(always)]
fn bernoulli_rows_impl(logits: &mut [f32], bias: &[f32], x: &[f32], out: &mut [f64]) {
    let dd = bias.len();
    for (row, o) in logits.chunks_exact_mut(dd).zip(out.iter_mut()) {
        for ((v, b), &xv) in row.iter_mut().zip(bias).zip(x) {
            let l = *v + b;
            let pos = if l > 0.0 { l } else { 0.0 };
            *v = fma(l, xv, -pos) - log1p_unit(exp(-l.abs()));
        }
        *o = row_sum(row);
    }
}

/// The Bernoulli log-likelihood and its gradient for training: for each row r (example
/// `r / k` of `x`), l = logits + bias, ll[r] = Σ_j x_j l_j − softplus(l_j), and the logits are
/// overwritten by ∂ll/∂l = x − sigmoid(l). `tmp` holds one row.
#[inline(always)]
fn bernoulli_grad_rows_impl(
    logits: &mut [f32],
    bias: &[f32],
    x: &[f32],
    k: usize,
    ll: &mut [f64],
    tmp: &mut [f32],
) {
    let dd = bias.len();
    let tmp = &mut tmp[..dd];
    for (r, (row, o)) in logits.chunks_exact_mut(dd).zip(ll.iter_mut()).enumerate() {
        let xr = &x[(r / k) * dd..(r / k + 1) * dd];
        for (((v, t), b), &xv) in row.iter_mut().zip(tmp.iter_mut()).zip(bias).zip(xr) {
            let l = *v + b;
            let e = exp(-l.abs());
            let pos = if l > 0.0 { l } else { 0.0 };
            *t = fma(l, xv, -pos) - log1p_unit(e);
            let num = if l >= 0.0 { 1.0 } else { e };
            *v = xv - num / (1.0 + e);
        }
        *o = row_sum(tmp);
    }
}

/// Σ_j c_j (μ_j − x_j)² + constant per row, with μ = out + bias (overwritten).
#[inline(always)]
fn gaussian_rows_impl(
    out: &mut [f32],
    bias: &[f32],
    x: &[f32],
    coef: &[f32],
    constant: f64,
    ll: &mut [f64],
) {
    let dd = bias.len();
    for (row, o) in out.chunks_exact_mut(dd).zip(ll.iter_mut()) {
        for (((v, b), &xv), c) in row.iter_mut().zip(bias).zip(x).zip(coef) {
            let r = *v + b - xv;
            *v = r * r * c;
        }
        *o = row_sum(row) + constant;
    }
}

/// The Gaussian log-likelihood and its gradient for training: ll[r] = Σ_j c_j (μ_j − x_j)² +
/// constant (c_j = −½ σ_j⁻²) with μ = out + bias, and `out` overwritten by ∂ll/∂μ =
/// 2 c_j (μ_j − x_j). Row r belongs to example `r / k` of `x`. `tmp` holds one row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gaussian_grad_rows_impl(
    out: &mut [f32],
    bias: &[f32],
    x: &[f32],
    k: usize,
    coef: &[f32],
    constant: f64,
    ll: &mut [f64],
    tmp: &mut [f32],
) {
    let dd = bias.len();
    let tmp = &mut tmp[..dd];
    for (r, (row, o)) in out.chunks_exact_mut(dd).zip(ll.iter_mut()).enumerate() {
        let xr = &x[(r / k) * dd..(r / k + 1) * dd];
        for ((((v, t), b), &xv), &c) in row
            .iter_mut()
            .zip(tmp.iter_mut())
            .zip(bias)
            .zip(xr)
            .zip(coef)
        {
            let d = *v + b - xv;
            let cd = c * d;
            *t = cd * d;
            *v = 2.0 * cd;
        }
        *o = row_sum(tmp) + constant;
    }
}

/// One block of a mixture's log-sum-exp: for each row, e = row + consts; the row's running
/// (max, Σ exp(e − max)) in `f64` absorbs the block's own maximum and sum (NaN propagates
/// through the sum).
#[inline(always)]
fn lse_block_impl(tile: &mut [f32], consts: &[f32], maxes: &mut [f64], sums: &mut [f64]) {
    let cols = consts.len();
    for ((row, mx), sm) in tile
        .chunks_exact_mut(cols)
        .zip(maxes.iter_mut())
        .zip(sums.iter_mut())
    {
        let mut lane_max = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        let mut cs = consts.chunks_exact(LANES);
        for (c, k) in (&mut chunks).zip(&mut cs) {
            for l in 0..LANES {
                c[l] += k[l];
                lane_max[l] = lane_max[l].max(c[l]);
            }
        }
        let mut bmax = lane_max.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for (v, k) in chunks.into_remainder().iter_mut().zip(cs.remainder()) {
            *v += k;
            bmax = bmax.max(*v);
        }
        let mut acc = [0.0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                acc[l] += exp(c[l] - bmax);
            }
        }
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&v| exp(v - bmax) as f64)
            .sum();
        let bsum = acc.iter().map(|&v| v as f64).sum::<f64>() + tail;
        let bmax = bmax as f64;
        if bmax > *mx {
            *sm = *sm * (*mx - bmax).exp() + bsum;
            *mx = bmax;
        } else {
            *sm += bsum * (bmax - *mx).exp();
        }
    }
}

/// The instruction sets the kernels are compiled for, best last. [`Isa::active`] is the one
/// they run with: the best the CPU has, unless `VAEPIPE_ISA` (`generic`, `avx2` or `avx512`,
/// read once per process) asks for a lower one — for comparing kernels in one process and for
/// testing the paths a machine would otherwise never take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust (the compiler's baseline target: SSE2 on x86-64).
    Generic,
    /// 256-bit AVX2 with FMA.
    Avx2,
    /// 512-bit AVX-512 (F, BW, DQ, VL) with FMA.
    Avx512,
}

impl Isa {
    /// Every instruction set, worst first.
    pub const ALL: [Isa; 3] = [Isa::Generic, Isa::Avx2, Isa::Avx512];

    /// The name used in `VAEPIPE_ISA`, in `vaepipe bench` JSON and in test output.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses [`Isa::name`].
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The best instruction set this CPU supports (cached by the standard library).
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f")
                && has!("avx512bw")
                && has!("avx512dq")
                && has!("avx512vl")
                && has!("avx2")
                && has!("fma")
            {
                return Isa::Avx512;
            }
            if has!("avx2") && has!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }

    /// The instruction set the kernels run with: [`Isa::detected`], capped by `VAEPIPE_ISA`.
    /// An unknown `VAEPIPE_ISA` value is ignored (with a warning on stderr).
    pub fn active() -> Isa {
        static ACTIVE: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let best = Isa::detected();
            match std::env::var("VAEPIPE_ISA") {
                Ok(v) if !v.is_empty() => match Isa::from_name(&v) {
                    Some(cap) => cap.min(best),
                    None => {
                        eprintln!(
                            "warning: VAEPIPE_ISA={v:?} is not one of generic, avx2, avx512; \
                             using {}",
                            best.name()
                        );
                        best
                    }
                },
                _ => best,
            }
        })
    }

    /// Every instruction set this CPU can run, worst first (for tests and benchmarks).
    pub fn supported() -> Vec<Isa> {
        let best = Isa::detected();
        Isa::ALL.into_iter().filter(|&i| i <= best).collect()
    }
}

/// Whether the active kernels use AVX2+FMA or better.
pub(crate) fn avx2_fma() -> bool {
    Isa::active() >= Isa::Avx2
}

/// Flush-to-zero and denormals-are-zero (MXCSR bits 15 and 6) on this thread while the value
/// lives; the previous mode is restored on drop.
///
/// Why: an IWAE step at large k scales whole rows by normalized weights w̃ that underflow, and
/// every product and exponential of a subnormal float then takes a microcode assist (~100
/// cycles on Intel cores; AMD's Zen handles most of them at full speed). XLA flushes them by
/// default, and so does this crate inside its kernels. The numerical effect is that values
/// below 2⁻¹²⁶ ≈ 1.2·10⁻³⁸ (f32) or 2.2·10⁻³⁰⁸ (f64) become zero: far below the f32 tolerance
/// of any result (crates/nn/tests/fast_path.rs checks the fast path against the tape with
/// underflowing weights).
pub struct DenormalsAreZero {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl DenormalsAreZero {
    /// Sets FTZ and DAZ on the current thread until the guard is dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> DenormalsAreZero {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = read_mxcsr();
            if !keep_denormals() {
                write_mxcsr(saved | FTZ_DAZ);
            }
            DenormalsAreZero { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        DenormalsAreZero {}
    }

    /// Whether FTZ and DAZ are both set on the current thread (for tests).
    pub fn active() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            read_mxcsr() & FTZ_DAZ == FTZ_DAZ
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

impl Drop for DenormalsAreZero {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write_mxcsr(self.saved);
    }
}

/// `VAEPIPE_DENORMALS=keep` (read once) leaves the floating-point mode alone: a diagnostic
/// switch for measuring what subnormals cost on a CPU (docs/performance.md), not a setting.
fn keep_denormals() -> bool {
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEP.get_or_init(|| std::env::var("VAEPIPE_DENORMALS").is_ok_and(|v| v == "keep"))
}

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr stores the 32-bit MXCSR register to the given, valid address.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags));
    }
    v
}

#[cfg(target_arch = "x86_64")]
fn write_mxcsr(v: u32) {
    // SAFETY: ldmxcsr loads MXCSR from a valid address; `v` comes from stmxcsr with only the
    // FTZ/DAZ bits changed (both defined on every x86-64 CPU), so no reserved bit is set.
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly, preserves_flags));
    }
}

/// Defines `pub(crate) fn $name` calling `$imp` compiled for the active [`Isa`]: with
/// AVX-512, with AVX2+FMA, or generic.
macro_rules! dispatched {
    ($(fn $name:ident / $avx:ident, $avx512:ident => $imp:ident ($($arg:ident : $ty:ty),*);)*) => {$(
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        fn $avx($($arg: $ty),*) {
            $imp($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        fn $avx512($($arg: $ty),*) {
            $imp($($arg),*)
        }

        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            match Isa::active() {
                // SAFETY: `Isa::active()` is Avx512 only on CPUs with the AVX-512 features
                // this instantiation is compiled for.
                Isa::Avx512 => return unsafe { $avx512($($arg),*) },
                // SAFETY: `Isa::active()` is Avx2 only on CPUs with AVX2 and FMA.
                Isa::Avx2 => return unsafe { $avx($($arg),*) },
                Isa::Generic => {}
            }
            $imp($($arg),*)
        }
    )*};
}

dispatched! {
    fn bias_activation / bias_activation_avx2, bias_activation_avx512 => bias_activation_impl(
        buf: &mut [f32], bias: &[f32], act: Activation);
    fn activation_rows / activation_rows_avx2, activation_rows_avx512 => activation_rows_impl(
        buf: &mut [f32], ld: usize, rows: usize, bias: &[f32], act: Activation);
    fn activation_grad / activation_grad_avx2, activation_grad_avx512 => activation_grad_impl(
        d: &mut [f32], ldd: usize, y: &[f32], ldy: usize, rows: usize, w: usize,
        act: Activation, scale: Option<&[f32]>);
    fn scale_rows / scale_rows_avx2, scale_rows_avx512 => scale_rows_impl(
        h: &mut [f32], ld: usize, rows: usize, w: usize, c: &[f32]);
    fn bernoulli_rows / bernoulli_rows_avx2, bernoulli_rows_avx512 => bernoulli_rows_impl(
        logits: &mut [f32], bias: &[f32], x: &[f32], out: &mut [f64]);
    fn bernoulli_grad_rows / bernoulli_grad_rows_avx2, bernoulli_grad_rows_avx512 => bernoulli_grad_rows_impl(
        logits: &mut [f32], bias: &[f32], x: &[f32], k: usize, ll: &mut [f64],
        tmp: &mut [f32]);
    fn adam / adam_avx2, adam_avx512 => adam_impl(
        p: &mut [f32], m: &mut [f32], v: &mut [f32], g0: &[f32], g1: &[f32], s: &AdamStep);
    fn sum_squares / sum_squares_avx2, sum_squares_avx512 => sum_squares_impl(
        g0: &[f32], g1: &[f32], out: &mut f64);
    fn lse_block / lse_block_avx2, lse_block_avx512 => lse_block_impl(
        tile: &mut [f32], consts: &[f32], maxes: &mut [f64], sums: &mut [f64]);
    fn gaussian_rows / gaussian_rows_avx2, gaussian_rows_avx512 => gaussian_rows_impl(
        out: &mut [f32], bias: &[f32], x: &[f32], coef: &[f32], constant: f64,
        ll: &mut [f64]);
    fn gaussian_grad_rows / gaussian_grad_rows_avx2, gaussian_grad_rows_avx512 => gaussian_grad_rows_impl(
        out: &mut [f32], bias: &[f32], x: &[f32], k: usize, coef: &[f32], constant: f64,
        ll: &mut [f64], tmp: &mut [f32]);
}

/// Matrix products `C = [C +] A · B` in `f32` for the network's shapes: the right operand in
/// panels of 16 columns (packed once, or read in place from a row-major matrix), a 6 × 16
/// AVX2+FMA register-blocked kernel (twelve 8-lane accumulators), depth blocked by [`KC`] so
/// that a panel block stays in the L1 cache while the left operand streams from L2.
///
/// Every output is one sequential sum over the depth (a k-block continues from the previous
/// block's partial sums), so results depend neither on the number of rows multiplied together
/// nor on how callers split rows or columns among threads. Without AVX2+FMA a plain loop
/// computes the same sums (up to the rounding of the fused multiply-adds).
pub(crate) mod gemm {
    /// Columns per panel (two 8-lane vectors).
    pub(crate) const NR: usize = 16;
    /// Rows per kernel call.
    const MR: usize = 6;
    /// Depth of a k-block: a KC × 16 panel block (16 KiB) stays in the L1 cache.
    const KC: usize = 256;

    /// A right operand `k × n` in panels: panel j holds `B[p][16j .. 16j + 16]` for p = 0..k
    /// (zero-padded).
    #[derive(Clone, Debug, Default)]
    pub(crate) struct Panels {
        k: usize,
        n: usize,
        data: Vec<f32>,
    }

    impl Panels {
        /// Packs `w` (`k × n`, row-major), or `None` without AVX2+FMA (the evaluator then uses
        /// the `gemm` crate).
        pub(crate) fn new(w: &[f32], k: usize, n: usize) -> Option<Panels> {
            if !super::avx2_fma() || w.len() != k * n || k == 0 || n == 0 {
                return None;
            }
            let mut p = Panels::default();
            p.repack(w, k, n);
            Some(p)
        }

        /// Packs another `k × n` row-major matrix into the same storage.
        pub(crate) fn repack(&mut self, w: &[f32], k: usize, n: usize) {
            assert_eq!(w.len(), k * n);
            self.reset(k, n);
            for (j, panel) in self.data.chunks_exact_mut(k * NR).enumerate() {
                let c0 = j * NR;
                let cols = NR.min(n - c0);
                if cols == NR {
                    // Fixed-size copies (inlined vector moves, not a memmove call per row).
                    for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                        let src: &[f32; NR] = w[p * n + c0..p * n + c0 + NR].try_into().unwrap();
                        let dst: &mut [f32; NR] = row.try_into().unwrap();
                        *dst = *src;
                    }
                } else {
                    for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                        for (d, s) in row[..cols]
                            .iter_mut()
                            .zip(&w[p * n + c0..p * n + c0 + cols])
                        {
                            *d = *s;
                        }
                    }
                }
            }
        }

        /// Packs the transpose of `w` (`rows × cols`, row-major): B = wᵀ is `cols × rows`.
        pub(crate) fn repack_transposed(&mut self, w: &[f32], rows: usize, cols: usize) {
            assert_eq!(w.len(), rows * cols);
            let (k, n) = (cols, rows);
            self.reset(k, n);
            // 16 × 16 tiles: a tile's 16 source rows and its 1 KiB of panel stay in L1 even
            // when the whole panel (k × 16) does not.
            const T: usize = 16;
            for (j, panel) in self.data.chunks_exact_mut(k * NR).enumerate() {
                let c0 = j * NR;
                let width = NR.min(n - c0);
                for p0 in (0..k).step_by(T) {
                    let depth = T.min(k - p0);
                    for c in 0..width {
                        let src = &w[(c0 + c) * cols + p0..(c0 + c) * cols + p0 + depth];
                        for (p, &v) in src.iter().enumerate() {
                            panel[(p0 + p) * NR + c] = v;
                        }
                    }
                }
            }
        }

        /// Sizes the storage for a `k × n` operand whose rows are then packed block by block
        /// ([`Panels::repack_rows`], [`Panels::repack_transposed_rows`]).
        pub(crate) fn ensure(&mut self, k: usize, n: usize) {
            self.reset(k, n);
        }

        /// Packs rows `p0 .. p0 + block.len() / n` of the `k × n` operand sized by
        /// [`Panels::ensure`], from `block` (those rows, row-major): the same values as
        /// [`Panels::repack`] of the whole matrix puts there.
        pub(crate) fn repack_rows(&mut self, block: &[f32], p0: usize) {
            let (k, n) = (self.k, self.n);
            let rows = block.len() / n;
            assert!(block.len() == rows * n && p0 + rows <= k);
            for (j, panel) in self.data.chunks_exact_mut(k * NR).enumerate() {
                let c0 = j * NR;
                let cols = NR.min(n - c0);
                let dst = &mut panel[p0 * NR..(p0 + rows) * NR];
                for (row, src) in dst.chunks_exact_mut(NR).zip(block.chunks_exact(n)) {
                    if cols == NR {
                        // A fixed-size copy (vector moves, not a memmove call per row).
                        let src: &[f32; NR] = src[c0..c0 + NR].try_into().unwrap();
                        let dst: &mut [f32; NR] = row.try_into().unwrap();
                        *dst = *src;
                    } else {
                        row[..cols].copy_from_slice(&src[c0..c0 + cols]);
                    }
                }
            }
        }

        /// Packs the transpose of rows `r0 .. r0 + block.len() / k` (`r0` a multiple of
        /// [`NR`], at most `NR` rows) of a row-major `n × k` matrix into the `k × n` operand
        /// sized by [`Panels::ensure`]: they are panel `r0 / NR`, with the values
        /// [`Panels::repack_transposed`] of the whole matrix puts there.
        pub(crate) fn repack_transposed_rows(&mut self, block: &[f32], r0: usize) {
            let (k, n) = (self.k, self.n);
            let rows = block.len() / k;
            assert!(
                block.len() == rows * k && r0.is_multiple_of(NR) && rows <= NR && r0 + rows <= n
            );
            let panel = &mut self.data[r0 / NR * k * NR..(r0 / NR + 1) * k * NR];
            if rows == NR {
                // Row p of the panel gathers column p of the block (16 loads from L1, one
                // 64-byte store) instead of 16 scattered stores.
                for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                    let dst: &mut [f32; NR] = dst.try_into().unwrap();
                    *dst = std::array::from_fn(|c| block[c * k + p]);
                }
            } else {
                for (c, src) in block.chunks_exact(k).enumerate() {
                    for (p, &v) in src.iter().enumerate() {
                        panel[p * NR + c] = v;
                    }
                }
            }
        }

        /// Packs B(p, c) = `f(p, c)` for a `k × n` operand.
        pub(crate) fn repack_with(&mut self, k: usize, n: usize, f: impl Fn(usize, usize) -> f32) {
            self.reset(k, n);
            for (j, panel) in self.data.chunks_exact_mut(k * NR).enumerate() {
                let c0 = j * NR;
                let width = NR.min(n - c0);
                for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                    for (c, v) in row[..width].iter_mut().enumerate() {
                        *v = f(p, c0 + c);
                    }
                }
            }
        }

        /// Sizes the storage for a `k × n` operand. The padding columns of a partial last
        /// panel are zero (they are never written otherwise, so a repack of the same shape
        /// keeps them).
        fn reset(&mut self, k: usize, n: usize) {
            if (self.k, self.n) != (k, n) {
                self.k = k;
                self.n = n;
                self.data.clear();
                self.data.resize(n.div_ceil(NR) * k * NR, 0.0);
            }
        }

        /// `dst (m × n) = a (m × k) · B`, row-major (the evaluator's product).
        pub(crate) fn multiply(&self, dst: &mut [f32], a: &[f32], m: usize) {
            self.multiply_with(super::Isa::active(), dst, a, m);
        }

        /// [`Panels::multiply`] with the kernel of `isa` (benchmarks and tests).
        pub(crate) fn multiply_with(&self, isa: super::Isa, dst: &mut [f32], a: &[f32], m: usize) {
            assert!(
                m == 0 || (dst.len() >= m * self.n && a.len() >= m * self.k),
                "Panels::multiply: operands too small"
            );
            gemm_with(
                isa,
                m,
                self.n,
                self.k,
                Lhs::Rows(a, self.k),
                Rhs::Packed(self),
                dst,
                self.n,
                false,
                &mut Vec::new(),
            );
        }
    }

    /// The left operand `m × k`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Lhs<'a> {
        /// A(r, p) = `data[r·ld + p]` (row-major).
        Rows(&'a [f32], usize),
        /// A(r, p) = `data[p·ld + r]`: the transpose of a row-major `k × m` matrix (weight
        /// gradients Xᵀ · dY).
        Cols(&'a [f32], usize),
    }

    /// The right operand `k × n`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Rhs<'a> {
        Packed(&'a Panels),
        /// B(p, c) = `data[p·ld + c]`, read in place (a partial last panel is copied to the
        /// scratch buffer).
        Rows(&'a [f32], usize),
    }

    /// `C (m × n, row stride ldc) = A · B`, or `C += A · B` with `acc`. Single-threaded, with
    /// the kernel of the active [`Isa`](super::Isa).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: Lhs<'_>,
        b: Rhs<'_>,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
        scratch: &mut Vec<f32>,
    ) {
        gemm_with(super::Isa::active(), m, n, k, a, b, c, ldc, acc, scratch);
    }

    /// [`gemm`] with the kernel of `isa` (which the CPU must support; checked). The AVX-512 and
    /// AVX2 kernels give bit-identical results.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm_with(
        isa: super::Isa,
        m: usize,
        n: usize,
        k: usize,
        a: Lhs<'_>,
        b: Rhs<'_>,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
        scratch: &mut Vec<f32>,
    ) {
        assert!(
            isa <= super::Isa::detected(),
            "gemm: {isa:?} is not supported here"
        );
        if m == 0 || n == 0 {
            return;
        }
        // These checks guard the raw-pointer kernels below.
        assert!(
            ldc >= n && c.len() >= (m - 1) * ldc + n,
            "gemm: C too small"
        );
        if k == 0 {
            if !acc {
                for r in 0..m {
                    c[r * ldc..r * ldc + n].fill(0.0);
                }
            }
            return;
        }
        match a {
            Lhs::Rows(d, ld) => assert!(ld >= k && d.len() >= (m - 1) * ld + k, "gemm: A"),
            Lhs::Cols(d, ld) => assert!(ld >= m && d.len() >= (k - 1) * ld + m, "gemm: A"),
        }
        match b {
            Rhs::Packed(p) => assert!(p.k == k && p.n == n, "gemm: packed B shape"),
            Rhs::Rows(d, ld) => assert!(ld >= n && d.len() >= (k - 1) * ld + n, "gemm: B"),
        }
        #[cfg(target_arch = "x86_64")]
        match isa {
            // SAFETY: the CPU has the features (asserted above); the operand sizes were checked.
            super::Isa::Avx512 => {
                // SAFETY: as above, for the AVX-512 kernel.
                unsafe { gemm_avx512(m, n, k, a, b, c.as_mut_ptr(), ldc, acc, scratch) };
                return;
            }
            super::Isa::Avx2 => {
                // SAFETY: as above, for the AVX2+FMA kernel.
                unsafe { gemm_avx2(m, n, k, a, b, c.as_mut_ptr(), ldc, acc, scratch) };
                return;
            }
            super::Isa::Generic => {}
        }
        let _ = scratch;
        gemm_portable(m, n, k, a, b, c, ldc, acc);
    }

    /// The same sums without SIMD (CPUs without AVX2+FMA).
    #[allow(clippy::too_many_arguments)]
    fn gemm_portable(
        m: usize,
        n: usize,
        k: usize,
        a: Lhs<'_>,
        b: Rhs<'_>,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
    ) {
        let av = |r: usize, p: usize| match a {
            Lhs::Rows(d, ld) => d[r * ld + p],
            Lhs::Cols(d, ld) => d[p * ld + r],
        };
        let bv = |p: usize, col: usize| match b {
            Rhs::Packed(pk) => pk.data[(col / NR) * k * NR + p * NR + col % NR],
            Rhs::Rows(d, ld) => d[p * ld + col],
        };
        for r in 0..m {
            for col in 0..n {
                let mut s = if acc { c[r * ldc + col] } else { 0.0 };
                for p in 0..k {
                    s = av(r, p).mul_add(bv(p, col), s);
                }
                c[r * ldc + col] = s;
            }
        }
    }

    /// k-blocks outer, panels, then blocks of MR rows inner (the panel block stays in L1).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_avx2(
        m: usize,
        n: usize,
        k: usize,
        a: Lhs<'_>,
        b: Rhs<'_>,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        scratch: &mut Vec<f32>,
    ) {
        let panels = n.div_ceil(NR);
        let mut kb = 0;
        while kb < k {
            let kc = KC.min(k - kb);
            let accumulate = acc || kb > 0;
            for j in 0..panels {
                let col = j * NR;
                let cols = NR.min(n - col);
                let (bp, ldb) = match b {
                    Rhs::Packed(p) => (p.data[j * k * NR + kb * NR..].as_ptr(), NR),
                    Rhs::Rows(d, ld) if cols == NR => (d[kb * ld + col..].as_ptr(), ld),
                    Rhs::Rows(d, ld) => {
                        scratch.clear();
                        scratch.resize(kc * NR, 0.0);
                        for p in 0..kc {
                            let src = &d[(kb + p) * ld + col..(kb + p) * ld + col + cols];
                            scratch[p * NR..p * NR + cols].copy_from_slice(src);
                        }
                        (scratch.as_ptr(), NR)
                    }
                };
                // SAFETY: (all kernel calls) rows i..i+R of A and C and the kc × 16 block of B
                // at `bp` (stride ldb) are in bounds: i + R ≤ m, col + cols ≤ n, kb + kc ≤ k and
                // the operand sizes were checked by `gemm`; a full panel of `Rows` has 16
                // readable columns.
                unsafe {
                    match a {
                        Lhs::Rows(d, ld) => {
                            let ap = |i: usize| d.as_ptr().wrapping_add(i * ld + kb);
                            row_blocks::<false>(
                                m, kc, ap, ld, bp, ldb, c, ldc, col, cols, accumulate,
                            );
                        }
                        Lhs::Cols(d, ld) => {
                            let ap = |i: usize| d.as_ptr().wrapping_add(kb * ld + i);
                            row_blocks::<true>(
                                m, kc, ap, ld, bp, ldb, c, ldc, col, cols, accumulate,
                            );
                        }
                    }
                }
            }
            kb += kc;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row_blocks<const COLS: bool>(
        m: usize,
        kc: usize,
        ap: impl Fn(usize) -> *const f32,
        ld: usize,
        bp: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        col: usize,
        cols: usize,
        acc: bool,
    ) {
        let mut i = 0;
        while i + MR <= m {
            // SAFETY: see `gemm_avx2`.
            unsafe {
                kernel::<MR, COLS>(kc, ap(i), ld, bp, ldb, c.add(i * ldc + col), ldc, cols, acc)
            };
            i += MR;
        }
        if i < m {
            let (a, cp) = (ap(i), c.wrapping_add(i * ldc + col));
            // SAFETY: see `gemm_avx2`.
            unsafe {
                match m - i {
                    1 => kernel::<1, COLS>(kc, a, ld, bp, ldb, cp, ldc, cols, acc),
                    2 => kernel::<2, COLS>(kc, a, ld, bp, ldb, cp, ldc, cols, acc),
                    3 => kernel::<3, COLS>(kc, a, ld, bp, ldb, cp, ldc, cols, acc),
                    4 => kernel::<4, COLS>(kc, a, ld, bp, ldb, cp, ldc, cols, acc),
                    _ => kernel::<5, COLS>(kc, a, ld, bp, ldb, cp, ldc, cols, acc),
                }
            }
        }
    }

    /// `R` rows × 16 columns: c[r][0..cols] (+)= Σ_p A(r, p) · b[p·ldb .. p·ldb + cols], with
    /// A(r, p) = a[r·ld + p] (`COLS = false`) or a[p·ld + r] (`COLS = true`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const R: usize, const COLS: bool>(
        k: usize,
        a: *const f32,
        ld: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        acc: bool,
    ) {
        use std::arch::x86_64::*;
        let mut s = [[_mm256_setzero_ps(); 2]; R];
        if acc {
            for (r, row) in s.iter_mut().enumerate() {
                // SAFETY: row r of `c` has `cols` readable values from `c + r·ldc`.
                unsafe {
                    let src = c.add(r * ldc);
                    if cols == NR {
                        row[0] = _mm256_loadu_ps(src);
                        row[1] = _mm256_loadu_ps(src.add(8));
                    } else {
                        let mut tmp = [0.0f32; NR];
                        std::ptr::copy_nonoverlapping(src, tmp.as_mut_ptr(), cols);
                        row[0] = _mm256_loadu_ps(tmp.as_ptr());
                        row[1] = _mm256_loadu_ps(tmp.as_ptr().add(8));
                    }
                }
            }
        }
        for p in 0..k {
            // SAFETY: p < k, so row p of the B block and A(r, p) (r < R) are in bounds.
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(p * ldb));
                let b1 = _mm256_loadu_ps(b.add(p * ldb + 8));
                for (r, row) in s.iter_mut().enumerate() {
                    let src = if COLS {
                        a.add(p * ld + r)
                    } else {
                        a.add(r * ld + p)
                    };
                    let x = _mm256_broadcast_ss(&*src);
                    row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(x, b1, row[1]);
                }
            }
        }
        for (r, row) in s.iter().enumerate() {
            // SAFETY: row r of `c` has `cols` writable values from `c + r·ldc`.
            unsafe {
                let out = c.add(r * ldc);
                if cols == NR {
                    _mm256_storeu_ps(out, row[0]);
                    _mm256_storeu_ps(out.add(8), row[1]);
                } else {
                    let mut tmp = [0.0f32; NR];
                    _mm256_storeu_ps(tmp.as_mut_ptr(), row[0]);
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(8), row[1]);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), out, cols);
                }
            }
        }
    }

    /// Rows per AVX-512 kernel call: 12 rows × 2 zmm accumulators = 24 of the 32 registers.
    const MR512: usize = 12;

    /// The AVX-512 loop nest: as [`gemm_avx2`], over pairs of 16-column panels (32 columns, two
    /// zmm per row), the last partial columns masked.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_avx512(
        m: usize,
        n: usize,
        k: usize,
        a: Lhs<'_>,
        b: Rhs<'_>,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        scratch: &mut Vec<f32>,
    ) {
        let panels = n.div_ceil(NR);
        let mut kb = 0;
        while kb < k {
            let kc = KC.min(k - kb);
            let accumulate = acc || kb > 0;
            let mut j = 0;
            while j < panels {
                let col = j * NR;
                let cols = (2 * NR).min(n - col);
                let two = cols > NR;
                // Both halves' B blocks share one stride.
                let (b0, b1, ldb) = match b {
                    Rhs::Packed(p) => {
                        let b0 = p.data[j * k * NR + kb * NR..].as_ptr();
                        let b1 = if two {
                            p.data[(j + 1) * k * NR + kb * NR..].as_ptr()
                        } else {
                            b0
                        };
                        (b0, b1, NR)
                    }
                    Rhs::Rows(d, ld) if cols == 2 * NR || cols == NR => {
                        let b0 = d[kb * ld + col..].as_ptr();
                        (b0, b0.wrapping_add(NR), ld)
                    }
                    Rhs::Rows(d, ld) => {
                        // A partial block: copied to a zero-padded 2·16-wide scratch block.
                        scratch.clear();
                        scratch.resize(kc * 2 * NR, 0.0);
                        for p in 0..kc {
                            let src = &d[(kb + p) * ld + col..(kb + p) * ld + col + cols];
                            scratch[p * 2 * NR..p * 2 * NR + cols].copy_from_slice(src);
                        }
                        (scratch.as_ptr(), scratch[NR..].as_ptr(), 2 * NR)
                    }
                };
                // SAFETY: as in `gemm_avx2`; the second half is read only when `two`, and then
                // a full 16-column block exists there (packed panel, in-place full panel pair,
                // or the padded scratch block).
                unsafe {
                    match a {
                        Lhs::Rows(d, ld) => {
                            let ap = |i: usize| d.as_ptr().wrapping_add(i * ld + kb);
                            row_blocks512::<false>(
                                m, kc, ap, ld, b0, b1, ldb, c, ldc, col, cols, accumulate,
                            );
                        }
                        Lhs::Cols(d, ld) => {
                            let ap = |i: usize| d.as_ptr().wrapping_add(kb * ld + i);
                            row_blocks512::<true>(
                                m, kc, ap, ld, b0, b1, ldb, c, ldc, col, cols, accumulate,
                            );
                        }
                    }
                }
                j += if two { 2 } else { 1 };
            }
            kb += kc;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row_blocks512<const COLS: bool>(
        m: usize,
        kc: usize,
        ap: impl Fn(usize) -> *const f32,
        ld: usize,
        b0: *const f32,
        b1: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        col: usize,
        cols: usize,
        acc: bool,
    ) {
        macro_rules! call {
            ($r:literal, $i:expr) => {{
                let (a, cp) = (ap($i), c.wrapping_add($i * ldc + col));
                // SAFETY: see `gemm_avx512`.
                unsafe {
                    if cols > NR {
                        kernel512::<$r, 2, COLS>(kc, a, ld, b0, b1, ldb, cp, ldc, cols, acc)
                    } else {
                        kernel512::<$r, 1, COLS>(kc, a, ld, b0, b1, ldb, cp, ldc, cols, acc)
                    }
                }
            }};
        }
        let mut i = 0;
        while i + MR512 <= m {
            call!(12, i);
            i += MR512;
        }
        match m - i {
            0 => {}
            1 => call!(1, i),
            2 => call!(2, i),
            3 => call!(3, i),
            4 => call!(4, i),
            5 => call!(5, i),
            6 => call!(6, i),
            7 => call!(7, i),
            8 => call!(8, i),
            9 => call!(9, i),
            10 => call!(10, i),
            _ => call!(11, i),
        }
    }

    /// `R` rows × `16·W` columns with AVX-512: c[r][0..cols] (+)= Σ_p A(r, p) · B(p, ·), B's
    /// first 16 columns at `b0 + p·ldb` and (W = 2) the next 16 at `b1 + p·ldb`; A as in
    /// [`kernel`]. The same sequence of fused multiply-adds per output as the AVX2 kernel.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel512<const R: usize, const W: usize, const COLS: bool>(
        k: usize,
        a: *const f32,
        ld: usize,
        b0: *const f32,
        b1: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        acc: bool,
    ) {
        use std::arch::x86_64::*;
        let mask = |lo: usize| -> __mmask16 {
            let w = cols.saturating_sub(lo).min(NR);
            if w == NR {
                0xFFFF
            } else {
                ((1u32 << w) - 1) as __mmask16
            }
        };
        let masks = [mask(0), mask(NR)];
        let mut s = [[_mm512_setzero_ps(); W]; R];
        if acc {
            for (r, row) in s.iter_mut().enumerate() {
                for (h, v) in row.iter_mut().enumerate() {
                    // SAFETY: the masked lanes of row r of `c` are in bounds; the others are
                    // not accessed.
                    *v = unsafe { _mm512_maskz_loadu_ps(masks[h], c.add(r * ldc + h * NR)) };
                }
            }
        }
        for p in 0..k {
            // SAFETY: p < k, so row p of the B block(s) and A(r, p) (r < R) are in bounds.
            unsafe {
                let bv = [
                    _mm512_loadu_ps(b0.add(p * ldb)),
                    if W == 2 {
                        _mm512_loadu_ps(b1.add(p * ldb))
                    } else {
                        _mm512_setzero_ps()
                    },
                ];
                for (r, row) in s.iter_mut().enumerate() {
                    let src = if COLS {
                        a.add(p * ld + r)
                    } else {
                        a.add(r * ld + p)
                    };
                    let x = _mm512_set1_ps(*src);
                    for (h, v) in row.iter_mut().enumerate() {
                        *v = _mm512_fmadd_ps(x, bv[h], *v);
                    }
                }
            }
        }
        for (r, row) in s.iter().enumerate() {
            for (h, v) in row.iter().enumerate() {
                // SAFETY: only the masked, in-bounds lanes of row r of `c` are written.
                unsafe { _mm512_mask_storeu_ps(c.add(r * ldc + h * NR), masks[h], *v) };
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn rand_vec(len: usize, seed: &mut u32) -> Vec<f32> {
            (0..len)
                .map(|_| {
                    *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (*seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        }

        /// Packing a matrix block by block gives the panels of packing it whole, for the
        /// forward and the transposed layouts, with full and partial blocks and panels.
        #[test]
        fn packing_by_blocks_matches_packing_whole() {
            let mut seed = 7;
            for (rows, cols) in [(37, 50), (16, 16), (5, 33), (48, 7)] {
                let w = rand_vec(rows * cols, &mut seed);
                let (mut fwd, mut bwd) = (Panels::default(), Panels::default());
                fwd.repack(&w, rows, cols);
                bwd.repack_transposed(&w, rows, cols);
                let (mut fb, mut bb) = (Panels::default(), Panels::default());
                fb.ensure(rows, cols);
                bb.ensure(cols, rows);
                for (r, block) in w.chunks(NR * cols).enumerate() {
                    fb.repack_rows(block, r * NR);
                    bb.repack_transposed_rows(block, r * NR);
                }
                assert_eq!(fb.data, fwd.data, "{rows} × {cols}");
                assert_eq!(bb.data, bwd.data, "{rows} × {cols} transposed");
            }
        }

        #[test]
        fn packed_product_matches_gemm() {
            if !super::super::avx2_fma() {
                return;
            }
            let mut seed = 1u32;
            for &(m, k, n) in &[
                (1, 1, 1),
                (5, 3, 17),
                (6, 50, 16),
                (7, 200, 200),
                (13, 20, 784),
                (256, 200, 40),
                (9, 700, 33),
            ] {
                let a = rand_vec(m * k, &mut seed);
                let w = rand_vec(k * n, &mut seed);
                let mut got = vec![f32::NAN; m * n];
                Panels::new(&w, k, n).unwrap().multiply(&mut got, &a, m);
                let mut want = vec![0.0; m * n];
                crate::estimate::matmul(&mut want, &a, &w, m, k, n);
                for i in 0..m {
                    for j in 0..n {
                        let exact: f64 = (0..k)
                            .map(|p| a[i * k + p] as f64 * w[p * n + j] as f64)
                            .sum();
                        let scale: f64 = (0..k)
                            .map(|p| (a[i * k + p] * w[p * n + j]).abs() as f64)
                            .sum();
                        let (g, h) = (got[i * n + j] as f64, want[i * n + j] as f64);
                        assert!(
                            (g - exact).abs() <= 1e-6 * scale + 1e-30,
                            "({m},{k},{n}) [{i},{j}]: {g} vs {exact}"
                        );
                        assert!(
                            (g - h).abs() <= 2e-6 * scale + 1e-30,
                            "gemm {h}, packed {g}"
                        );
                    }
                }
                // Row results do not depend on how many rows are multiplied together.
                if m > 1 {
                    let mut one = vec![0.0; n];
                    Panels::new(&w, k, n)
                        .unwrap()
                        .multiply(&mut one, &a[k..2 * k], 1);
                    assert_eq!(one, got[n..2 * n]);
                }
            }
        }

        /// Single-thread GFLOP/s of the training path's products (timing only; run with
        /// `cargo test --release -p vaepipe-nn --lib gemm_throughput -- --ignored --nocapture`).
        #[test]
        #[ignore]
        fn gemm_throughput() {
            let rows: usize = std::env::var("GEMM_ROWS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(150);
            let mut seed = 3u32;
            // Time on this CPU (not wall time): robust to sharing the cores with other work.
            let on_cpu = || -> f64 {
                std::fs::read_to_string("/proc/thread-self/schedstat")
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                    .map_or(f64::NAN, |ns| ns * 1e-9)
            };
            let report = |name: &str, m: usize, n: usize, k: usize, f: &mut dyn FnMut()| {
                f();
                let (t, c) = (std::time::Instant::now(), on_cpu());
                let mut it = 0;
                while t.elapsed().as_secs_f64() < 0.3 {
                    f();
                    it += 1;
                }
                let flop = 2.0 * (m * n * k) as f64 * it as f64;
                let gf = flop / t.elapsed().as_secs_f64() / 1e9;
                let gc = flop / (on_cpu() - c) / 1e9;
                println!(
                    "{name:<34} m={m:>4} n={n:>4} k={k:>4}: {gf:6.1} GFLOP/s wall, {gc:6.1} on-CPU"
                );
            };
            for &(i, o) in &[(50usize, 200usize), (200, 200), (200, 784)] {
                let a = rand_vec(rows * (i + 1), &mut seed);
                let w = rand_vec(i * o, &mut seed);
                let mut p = Panels::default();
                p.repack(&w, i, o);
                let mut pt = Panels::default();
                pt.repack_transposed(&w, i, o);
                let dy = rand_vec(rows * o, &mut seed);
                let mut c = vec![0.0f32; rows * (o + 1)];
                let mut cx = vec![0.0f32; rows * i];
                let mut g = vec![0.0f32; (i + 1) * o];
                let mut s = Vec::new();
                report("forward  X·W (packed)", rows, o, i, &mut || {
                    gemm(
                        rows,
                        o,
                        i,
                        Lhs::Rows(&a, i + 1),
                        Rhs::Packed(&p),
                        &mut c,
                        o + 1,
                        false,
                        &mut s,
                    )
                });
                report("forward  X·W (in place)", rows, o, i, &mut || {
                    gemm(
                        rows,
                        o,
                        i,
                        Lhs::Rows(&a, i + 1),
                        Rhs::Rows(&w, o),
                        &mut c,
                        o + 1,
                        false,
                        &mut s,
                    )
                });
                report("backward dY·Wᵀ (packed)", rows, i, o, &mut || {
                    gemm(
                        rows,
                        i,
                        o,
                        Lhs::Rows(&dy, o),
                        Rhs::Packed(&pt),
                        &mut cx,
                        i,
                        false,
                        &mut s,
                    )
                });
                report("weights  Xᵀ·dY (acc)", i + 1, o, rows, &mut || {
                    gemm(
                        i + 1,
                        o,
                        rows,
                        Lhs::Cols(&a, i + 1),
                        Rhs::Rows(&dy, o),
                        &mut g,
                        o,
                        true,
                        &mut s,
                    )
                });
            }
        }

        /// Every operand layout and accumulation against an f64 reference, and the SIMD path
        /// against the portable one bit for bit.
        #[test]
        fn all_layouts_match_the_reference() {
            let mut seed = 7u32;
            for &(m, k, n) in &[
                (1, 1, 1),
                (6, 16, 16),
                (11, 300, 37),
                (201, 130, 50),
                (3, 600, 8),
                (25, 40, 32),
                (13, 270, 48),
                (12, 7, 81),
            ] {
                let a = rand_vec(m * k + 3, &mut seed); // row-major m × k, ld = k + 1 where used
                let at = rand_vec(k * (m + 2), &mut seed); // k × m at ld = m + 2
                let b = rand_vec(k * (n + 5), &mut seed); // k × n at ld = n + 5
                let c0 = rand_vec(m * (n + 1), &mut seed);
                let mut packed = Panels::default();
                packed.repack_with(k, n, |p, c| b[p * (n + 5) + c]);
                let mut packed_t = Panels::default();
                // bᵀ as an n × k row-major matrix, packed transposed back to k × n.
                let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * (n + 5) + i / k]).collect();
                packed_t.repack_transposed(&bt, n, k);
                type Entry<'a> = Box<dyn Fn(usize, usize) -> f32 + 'a>;
                let lhs_cases: [(Lhs<'_>, Entry<'_>); 2] = [
                    (Lhs::Rows(&a, k), Box::new(|r, p| a[r * k + p])),
                    (Lhs::Cols(&at, m + 2), Box::new(|r, p| at[p * (m + 2) + r])),
                ];
                for (lhs, av) in &lhs_cases {
                    for rhs in [
                        Rhs::Packed(&packed),
                        Rhs::Packed(&packed_t),
                        Rhs::Rows(&b, n + 5),
                    ] {
                        for (acc, isa) in [false, true].into_iter().flat_map(|a| {
                            super::super::Isa::supported()
                                .into_iter()
                                .map(move |i| (a, i))
                        }) {
                            let mut c = c0.clone();
                            gemm_with(isa, m, n, k, *lhs, rhs, &mut c, n + 1, acc, &mut Vec::new());
                            let mut portable = c0.clone();
                            gemm_portable(m, n, k, *lhs, rhs, &mut portable, n + 1, acc);
                            for r in 0..m {
                                for j in 0..n {
                                    let base = if acc { c0[r * (n + 1) + j] as f64 } else { 0.0 };
                                    let exact: f64 = base
                                        + (0..k)
                                            .map(|p| av(r, p) as f64 * b[p * (n + 5) + j] as f64)
                                            .sum::<f64>();
                                    let got = c[r * (n + 1) + j] as f64;
                                    assert!(
                                        (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                                        "({m},{k},{n}) {lhs:?} acc={acc}: {got} vs {exact}"
                                    );
                                    // Every kernel computes the same FMA chain per output.
                                    assert_eq!(
                                        got as f32,
                                        portable[r * (n + 1) + j],
                                        "{isa:?} and portable sums differ"
                                    );
                                }
                                // The column after the row is untouched.
                                assert_eq!(c[r * (n + 1) + n], c0[r * (n + 1) + n]);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .collect()
    }

    /// Checks `f` against `exact` on `xs`; with `act`, also checks that the dispatched
    /// (vectorized) activation kernel gives the scalar values bit for bit.
    fn check(
        name: &str,
        f: fn(f32) -> f32,
        exact: fn(f64) -> f64,
        xs: &[f32],
        (rel, abs): (f64, f64),
        act: Option<Activation>,
    ) {
        let mut v = xs.to_vec();
        if let Some(a) = act {
            bias_activation(&mut v, &[0.0], a);
        }
        for (&x, &y) in xs.iter().zip(&v) {
            let s = f(x);
            let e = exact(x as f64);
            assert!(
                (s as f64 - e).abs() <= rel * e.abs() + abs,
                "{name}({x}) = {s}, exact {e}"
            );
            if act.is_some() {
                assert_eq!(y.to_bits(), s.to_bits(), "vectorized {name}({x})");
            }
        }
    }

    #[test]
    fn exp_is_accurate_to_a_few_ulp() {
        check(
            "exp",
            exp,
            f64::exp,
            &grid(-87.0, 88.0, 200_001),
            (3e-7, 0.0),
            None,
        );
    }

    #[test]
    fn log1p_and_softplus_are_accurate() {
        let xs = grid(0.0, 1.0, 100_001);
        check("log1p", log1p_unit, f64::ln_1p, &xs, (3e-7, 0.0), None);
        let sp = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
        let xs = grid(-100.0, 100.0, 200_001);
        check(
            "softplus",
            softplus,
            sp,
            &xs,
            (4e-7, 1e-30),
            Some(Activation::Softplus),
        );
    }

    #[test]
    fn tanh_is_accurate() {
        let xs = grid(-20.0, 20.0, 400_001);
        check(
            "tanh",
            tanh,
            f64::tanh,
            &xs,
            (0.0, 2.5e-7),
            Some(Activation::Tanh),
        );
        let xs = grid(-1e-3, 1e-3, 1_001);
        check(
            "tanh",
            tanh,
            f64::tanh,
            &xs,
            (0.0, 1e-7),
            Some(Activation::Tanh),
        );
    }

    #[test]
    fn non_finite_inputs_propagate() {
        assert!(exp(f32::NAN).is_nan());
        assert!(softplus(f32::NAN).is_nan());
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(softplus(f32::INFINITY), f32::INFINITY);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
    }

    /// The training likelihood kernels: values against f64 formulas, gradients x − sigmoid(l)
    /// and 2c(μ − x), for logits across the whole range (saturated ones included).
    #[test]
    fn likelihood_gradient_kernels_are_accurate() {
        let dd = 37;
        let k = 2;
        let rows = 6;
        let x: Vec<f32> = (0..rows / k * dd).map(|i| [0.0, 1.0, 0.3][i % 3]).collect();
        let logits: Vec<f32> = (0..rows * dd)
            .map(|i| ((i * 7919) % 2001) as f32 * 0.05 - 50.0)
            .collect();
        let bias: Vec<f32> = (0..dd).map(|j| j as f32 * 0.01 - 0.2).collect();
        let mut g = logits.clone();
        let mut ll = vec![0.0; rows];
        let mut tmp = vec![0.0; dd];
        bernoulli_grad_rows(&mut g, &bias, &x, k, &mut ll, &mut tmp);
        for r in 0..rows {
            let mut want = 0.0f64;
            for j in 0..dd {
                let l = (logits[r * dd + j] + bias[j]) as f64;
                let xv = x[(r / k) * dd + j] as f64;
                want += xv * l - (l.max(0.0) + (-l.abs()).exp().ln_1p());
                let sig = 1.0 / (1.0 + (-l).exp());
                let gv = g[r * dd + j] as f64;
                assert!((gv - (xv - sig)).abs() < 3e-7, "{gv} vs {}", xv - sig);
            }
            assert!(
                (ll[r] - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{} vs {want}",
                ll[r]
            );
        }
        let coef: Vec<f32> = (0..dd)
            .map(|j| -0.5 / (0.5 + j as f32 * 0.1).powi(2))
            .collect();
        let mut g = logits.clone();
        gaussian_grad_rows(&mut g, &bias, &x, k, &coef, -3.0, &mut ll, &mut tmp);
        for r in 0..rows {
            let mut want = -3.0f64;
            for j in 0..dd {
                let d = (logits[r * dd + j] + bias[j] - x[(r / k) * dd + j]) as f64;
                want += coef[j] as f64 * d * d;
                let gv = g[r * dd + j] as f64;
                let gw = 2.0 * coef[j] as f64 * d;
                assert!((gv - gw).abs() < 1e-6 * (1.0 + gw.abs()));
            }
            assert!((ll[r] - want).abs() < 1e-5 * (1.0 + want.abs()));
        }
    }

    /// Every instantiation of the row kernels (generic, AVX2, AVX-512 where the CPU has them)
    /// computes bit-identical values.
    #[test]
    fn every_instruction_set_gives_identical_row_kernels() {
        let dd = 37;
        let rows = 5;
        let logits: Vec<f32> = grid(-30.0, 30.0, rows * dd)[..rows * dd].to_vec();
        let bias: Vec<f32> = grid(-2.0, 2.0, dd)[..dd].to_vec();
        let x: Vec<f32> = (0..2 * dd).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let run = |isa: Isa| {
            let (mut l, mut ll, mut tmp) = (logits.clone(), vec![0.0f64; rows], vec![0.0f32; dd]);
            let mut act = logits.clone();
            let mut d = logits.clone();
            // The three row kernels with the instantiations of one instruction set.
            macro_rules! run_with {
                ($bern:ident, $act:ident, $grad:ident) => {{
                    $bern(&mut l, &bias, &x, 3, &mut ll, &mut tmp);
                    $act(&mut act, &bias, Activation::Tanh);
                    $grad(&mut d, dd, &act, dd, rows, dd, Activation::Softplus, None);
                }};
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` is supported by this CPU (Isa::supported).
            unsafe {
                match isa {
                    Isa::Avx512 => run_with!(
                        bernoulli_grad_rows_avx512,
                        bias_activation_avx512,
                        activation_grad_avx512
                    ),
                    Isa::Avx2 => run_with!(
                        bernoulli_grad_rows_avx2,
                        bias_activation_avx2,
                        activation_grad_avx2
                    ),
                    Isa::Generic => run_with!(
                        bernoulli_grad_rows_impl,
                        bias_activation_impl,
                        activation_grad_impl
                    ),
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (
                bits(&l),
                ll.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                bits(&act),
                bits(&d),
            )
        };
        let isas = Isa::supported();
        println!("row kernels compared on: {isas:?}");
        let reference = run(Isa::Generic);
        for isa in isas {
            assert!(
                run(isa) == reference,
                "{isa:?} differs from the generic instantiation"
            );
        }
    }

    /// The flush-to-zero guard flushes subnormal results and restores the previous mode.
    #[test]
    fn denormals_are_zero_is_scoped() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        assert!(!DenormalsAreZero::active());
        assert!(tiny * half > 0.0, "subnormals are kept by default");
        {
            let _g = DenormalsAreZero::new();
            assert!(DenormalsAreZero::active());
            #[cfg(target_arch = "x86_64")]
            assert_eq!(std::hint::black_box(tiny) * std::hint::black_box(half), 0.0);
        }
        assert!(!DenormalsAreZero::active());
        assert!(std::hint::black_box(tiny) * half > 0.0);
    }
}
