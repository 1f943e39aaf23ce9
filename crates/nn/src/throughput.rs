//! Matrix-product throughput of this machine, for `vaepipe bench`: the f32 GEMM peak that the
//! training and evaluation figures are compared to, measured through the two products this
//! crate uses — dfdx's matmul (the `gemm` crate) and the packed AVX2+FMA kernel of
//! crate::kernels::gemm (evaluation and the fast training path).
//!
//! Timing lives here rather than in the CLI so that only this crate depends on dfdx and the
//! kernels stay private.

use std::time::Instant;

use dfdx::prelude::*;

/// Which implementation multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmBackend {
    /// dfdx 0.13's `matmul` (the `gemm` 0.15 crate), multi-threaded on the current rayon pool.
    Dfdx,
    /// This crate's 6 × 16 register-blocked AVX2+FMA kernel on a packed right operand,
    /// single-threaded (callers run one product per thread). Unavailable without AVX2+FMA.
    Packed,
}

impl GemmBackend {
    /// A short human description (for reports).
    pub fn describe(self) -> &'static str {
        match self {
            GemmBackend::Dfdx => "dfdx 0.13 matmul (gemm 0.15), f32",
            GemmBackend::Packed => "vaepipe-nn packed 6x16 AVX2+FMA kernel, f32",
        }
    }

    /// Whether this CPU can run the backend.
    pub fn available(self) -> bool {
        match self {
            GemmBackend::Dfdx => true,
            GemmBackend::Packed => crate::kernels::avx2_fma(),
        }
    }
}

/// GFLOP/s (2·m·k·n FLOPs per product) of `a (m × k) · b (k × n)` in f32: `repeat`
/// measurements, each repeating the product for at least `min_seconds`. `None` when the
/// backend is unavailable on this CPU or a size is zero.
///
/// [`GemmBackend::Dfdx`] uses the current rayon pool (install a one-thread pool to measure one
/// core); [`GemmBackend::Packed`] is single-threaded by design (the packing of the right
/// operand is done once, outside the timing, as in the callers).
pub fn gemm_gflops(
    backend: GemmBackend,
    m: usize,
    k: usize,
    n: usize,
    repeat: usize,
    min_seconds: f64,
) -> Option<Vec<f64>> {
    if m == 0 || k == 0 || n == 0 || !backend.available() {
        return None;
    }
    let fill =
        |len: usize| -> Vec<f32> { (0..len).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect() };
    let flop = 2.0 * (m * k * n) as f64;
    let (a, b) = (fill(m * k), fill(k * n));
    let mut product: Box<dyn FnMut()> = match backend {
        GemmBackend::Dfdx => {
            let dev = Cpu::default();
            let a: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(a, (m, k));
            let b: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(b, (k, n));
            Box::new(move || {
                let c = a.clone().matmul(b.clone());
                std::hint::black_box(&c);
            })
        }
        GemmBackend::Packed => {
            let panels = crate::kernels::gemm::Panels::new(&b, k, n)?;
            let mut c = vec![0.0f32; m * n];
            Box::new(move || {
                panels.multiply(&mut c, &a, m);
                std::hint::black_box(&c);
            })
        }
    };
    let t = Instant::now();
    product();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let iters = ((min_seconds / once).ceil() as usize).clamp(1, 100_000);
    Some(
        (0..repeat)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..iters {
                    product();
                }
                flop * iters as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .collect(),
    )
}
