//! The floating-point element types the numeric core is generic over: `f32` for training and
//! evaluation, `f64` for finite-difference checks. Both run the same code.

use std::fmt;
use std::ops::DerefMut;

use dfdx::dtypes::NotMixedPrecision;
use dfdx::prelude::*;
use dfdx::tensor_ops::Device;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type of the numeric core (implemented for `f32` and `f64` only).
///
/// The associated device is always dfdx's CPU device; it is an associated type only so that
/// generic code needs no extra `where` clauses.
pub trait Real:
    Dtype
    + num_traits::Float
    + NotMixedPrecision
    + std::iter::Sum
    + fmt::Display
    + fmt::Debug
    + Send
    + Sync
    + 'static
    + sealed::Sealed
{
    /// The dfdx device (always `dfdx::tensor::Cpu`).
    #[doc(hidden)]
    type Dev: Device<Self>
        + Default
        + Send
        + Sync
        + Storage<Self, Vec: DerefMut<Target = Vec<Self>> + Send + Sync>
        + HasErr<Err = CpuError>;
    /// `"f32"` or `"f64"`, for messages.
    const NAME: &'static str;
    /// Converts from `f64` (rounding to nearest for `f32`).
    fn of_f64(v: f64) -> Self;
    /// Converts to `f64` (exact).
    fn as_f64(self) -> f64;
    /// Converts from `f32` (exact).
    fn of_f32(v: f32) -> Self;
    /// Converts to `f32` (rounding to nearest for `f64`).
    fn as_f32(self) -> f32;
    /// The slice itself when `Self` is `f32` (the fast training path is `f32`-only).
    #[doc(hidden)]
    fn f32_slice(v: &[Self]) -> Option<&[f32]>;
}

impl Real for f32 {
    type Dev = Cpu;
    const NAME: &'static str = "f32";
    fn of_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn of_f32(v: f32) -> Self {
        v
    }
    fn as_f32(self) -> f32 {
        self
    }
    fn f32_slice(v: &[Self]) -> Option<&[f32]> {
        Some(v)
    }
}

impl Real for f64 {
    type Dev = Cpu;
    const NAME: &'static str = "f64";
    fn of_f64(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn of_f32(v: f32) -> Self {
        v as f64
    }
    fn as_f32(self) -> f32 {
        self as f32
    }
    fn f32_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

/// The device of element type `E`.
pub(crate) type Dev<E> = <E as Real>::Dev;
/// A run-time-shaped matrix on the CPU, optionally carrying a tape.
pub(crate) type Mat<E, T = NoneTape> = Tensor<(usize, usize), E, Dev<E>, T>;
/// A run-time-shaped vector on the CPU, optionally carrying a tape.
pub(crate) type Vector<E, T = NoneTape> = Tensor<(usize,), E, Dev<E>, T>;
/// The recording tape.
pub(crate) type Taped<E> = OwnedTape<E, Dev<E>>;
/// A gradient buffer of dfdx's CPU device (dereferences to `Vec<E>`).
pub(crate) type Buf<E> = <Dev<E> as Storage<E>>::Vec;

/// Tapes the forward code is generic over: [`Taped`] (records) or [`NoneTape`] (inference).
pub(crate) trait TapeOf<E: Real>: Tape<E, Dev<E>> + Merge<Self> + Merge<NoneTape> {}
impl<E: Real, T: Tape<E, Dev<E>> + Merge<T> + Merge<NoneTape>> TapeOf<E> for T {}

/// `ln(2π)`.
pub(crate) const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Converts a slice to `f64`.
pub(crate) fn to_f64<E: Real>(v: &[E]) -> Vec<f64> {
    v.iter().map(|x| x.as_f64()).collect()
}

/// `dst (m × n, row-major) = A (m × k) · B (k × n)` through the `gemm` crate (its kernels, chosen
/// for the CPU), single-threaded (callers parallelize around it); A and B are given with their
/// (column, row) strides, so a transposed operand costs nothing. The one place that calls it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_strided<E: Real>(
    dst: &mut [E],
    a: &[E],
    (a_cs, a_rs): (usize, usize),
    b: &[E],
    (b_cs, b_rs): (usize, usize),
    m: usize,
    k: usize,
    n: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() >= m * n,
        "matmul: {} values for {m} × {n}",
        dst.len()
    );
    if k == 0 {
        dst[..m * n].fill(E::zero());
        return;
    }
    // The last element each operand's strides address: these checks guard the raw-pointer call.
    let last = |rows: usize, cols: usize, cs: usize, rs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(a.len() > last(m, k, a_cs, a_rs) && b.len() > last(k, n, b_cs, b_rs));
    // SAFETY: every element the strides address lies inside its slice (checked above); `dst`
    // holds m × n row-major values and does not alias the inputs (&mut borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            E::zero(),
            E::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
