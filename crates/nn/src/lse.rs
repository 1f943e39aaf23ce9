//! Log-sum-exp, the crate's one implementation (two passes: the maximum, then the shifted
//! exponentials). The vectorized row kernels of `kernels.rs` and the streaming accumulator of
//! `estimate.rs` (one pass over values that are never stored) are separate by design.

/// The maximum m of `v` and Σ exp(vᵢ − m), in iteration order (m = −∞ for no values).
///
/// log Σ exp(vᵢ) = m + ln Σ exp(vᵢ − m); softmax weights are exp(vᵢ − m) / Σ. Callers that need
/// both take them from one call, so the weights and the bound share their rounding.
pub(crate) fn shifted_exp_sum<I>(v: I) -> (f64, f64)
where
    I: Iterator<Item = f64> + Clone,
{
    let max = v.clone().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = v.map(|x| (x - max).exp()).sum();
    (max, sum)
}

/// Numerically stable log Σ exp(vᵢ) in `f64` (−∞ for an empty slice or all −∞; NaN propagates).
pub fn log_sum_exp(v: &[f64]) -> f64 {
    if v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let (max, sum) = shifted_exp_sum(v.iter().copied());
    if max.is_infinite() {
        return max;
    }
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_shift_invariant_and_handles_edge_cases() {
        let v = [-1e4, -1e4 + 1.0, -1e4 - 2.0];
        let shifted = log_sum_exp(&[0.0, 1.0, -2.0]) - 1e4;
        assert!((log_sum_exp(&v) - shifted).abs() < 1e-9);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY; 2]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(log_sum_exp(&[1.0, f64::NAN]).is_nan());
    }
}
