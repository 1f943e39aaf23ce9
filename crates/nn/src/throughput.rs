//! Matrix-product throughput of this machine, for `vaepipe bench`: the f32 GEMM peak that the
//! training and evaluation figures are compared to, measured through every product this crate
//! has — dfdx's matmul (the `gemm` crate) and the packed kernels of crate::kernels::gemm
//! (evaluation and the fast training path) for each instruction set the CPU supports — and a
//! plain FMA loop per core, the arithmetic ceiling no product can pass.
//!
//! Timing lives here rather than in the CLI so that only this crate depends on dfdx and the
//! kernels stay private.

use std::time::Instant;

use dfdx::prelude::*;

use crate::kernels::Isa;

/// Which implementation multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmBackend {
    /// dfdx 0.13's `matmul` (the `gemm` 0.15 crate), multi-threaded on the current rayon pool.
    Dfdx,
    /// This crate's packed kernel with the active instruction set ([`Isa::active`]),
    /// single-threaded (callers run one product per thread). Unavailable without AVX2+FMA.
    Packed,
    /// This crate's packed kernel with a given instruction set (12 × 32 with AVX-512, 6 × 16
    /// with AVX2+FMA), single-threaded. Unavailable where the CPU lacks it, and for
    /// [`Isa::Generic`].
    Kernel(Isa),
}

impl GemmBackend {
    /// A short human description (for reports).
    pub fn describe(self) -> &'static str {
        match self {
            GemmBackend::Dfdx => "dfdx 0.13 matmul (gemm 0.15), f32",
            GemmBackend::Packed => GemmBackend::Kernel(Isa::active()).describe(),
            GemmBackend::Kernel(Isa::Avx512) => "vaepipe-nn packed 12x32 AVX-512 kernel, f32",
            GemmBackend::Kernel(Isa::Avx2) => "vaepipe-nn packed 6x16 AVX2+FMA kernel, f32",
            GemmBackend::Kernel(Isa::Generic) => "vaepipe-nn portable loop, f32",
        }
    }

    /// Whether this CPU can run the backend.
    pub fn available(self) -> bool {
        match self {
            GemmBackend::Dfdx => true,
            GemmBackend::Packed => crate::kernels::avx2_fma(),
            GemmBackend::Kernel(isa) => isa >= Isa::Avx2 && isa <= Isa::detected(),
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
        GemmBackend::Packed | GemmBackend::Kernel(_) => {
            let isa = match backend {
                GemmBackend::Kernel(isa) => isa,
                _ => Isa::active(),
            };
            let panels = crate::kernels::gemm::Panels::new(&b, k, n)?;
            let mut c = vec![0.0f32; m * n];
            Box::new(move || {
                panels.multiply_with(isa, &mut c, &a, m);
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

/// GFLOP/s of one core running independent vector fused multiply-adds with `isa` (16 zmm or 12
/// ymm accumulators: enough to hide the latency of two FMA pipes, few enough to stay in
/// registers): the arithmetic ceiling of a core, `repeat` measurements of at least `min_seconds` each. `None` for [`Isa::Generic`] or an
/// instruction set the CPU lacks.
pub fn fma_peak_gflops(isa: Isa, repeat: usize, min_seconds: f64) -> Option<Vec<f64>> {
    if isa == Isa::Generic || isa > Isa::detected() {
        return None;
    }
    // (lanes, accumulators)
    let (lanes, accs) = if isa == Isa::Avx512 {
        (16.0, 16.0)
    } else {
        (8.0, 12.0)
    };
    // FLOPs of one call: iterations × accumulators × lanes × 2.
    let run = |iters: u64| -> f64 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports `isa` (checked above).
        unsafe {
            match isa {
                Isa::Avx512 => fma_loop_avx512(iters),
                _ => fma_loop_avx2(iters),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        0.0
    };
    let flop = |iters: u64| iters as f64 * accs * lanes * 2.0;
    let mut iters = 1u64 << 16;
    loop {
        let t = Instant::now();
        std::hint::black_box(run(iters));
        if t.elapsed().as_secs_f64() >= min_seconds / 4.0 || iters >= 1 << 40 {
            break;
        }
        iters *= 2;
    }
    Some(
        (0..repeat)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(run(iters));
                flop(iters) / t.elapsed().as_secs_f64() / 1e9
            })
            .collect(),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop_avx512(iters: u64) -> f64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 16];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let s = acc
        .iter()
        .fold(_mm512_set1_ps(0.0), |s, &v| _mm512_add_ps(s, v));
    _mm512_reduce_add_ps(std::hint::black_box(s)) as f64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop_avx2(iters: u64) -> f64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let s = acc
        .iter()
        .fold(_mm256_set1_ps(0.0), |s, &v| _mm256_add_ps(s, v));
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds eight f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), std::hint::black_box(s)) };
    out.iter().map(|&v| v as f64).sum()
}
