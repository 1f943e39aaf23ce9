//! How each objective weighs its samples: from one example's log-weights, the objective's
//! value and the per-sample coefficients that both gradient paths (`objective.rs` on the dfdx
//! tape, `fast/`) turn into gradients. The one place that knows the kinds' formulas.
//!
//! With S samples of one example, log-weights ℓ_s = log w_s, and w̃ the softmax of ℓ over all S
//! samples (w̃ᵍ over the sample's group of K = S/M for the grouped kinds), every objective's
//! reparameterised gradient is Σ_s a_s ∇ℓ_s with coefficients a_s held constant (Burda et al.
//! 2016, eq. 8; Rainforth et al. 2018, §4):
//!
//! | kind | value | decoder a_s | encoder a_s | DReG encoder b_s |
//! |---|---|---|---|---|
//! | ELBO | mean ℓ | 1/S | 1/S | 1/S (sticking the landing) |
//! | IWAE | lse ℓ − ln S | w̃ | w̃ | w̃² |
//! | MIWAE(M,K) | (1/M) Σ_g (lse ℓ_g − ln K) | w̃ᵍ/M | w̃ᵍ/M | (w̃ᵍ)²/M |
//! | CIWAE(β) | β·ELBO + (1−β)·IWAE | β/S + (1−β)w̃ | same | β/S + (1−β)w̃² |
//! | PIWAE(M,K) | IWAE over all MK | w̃ | w̃ᵍ/M | (w̃ᵍ)²/M |
//!
//! The DReG encoder gradient (Tucker et al. 2019, eq. 6 and §6 for the PIWAE family) is
//! Σ_s b_s (∂ℓ_s/∂z_s)(∂z_s/∂φ) with q's parameters stopped inside ℓ_s; CIWAE's is the
//! combination of sticking the landing for its ELBO part and DReG for its IWAE part, each
//! unbiased. The paths compute G_s = a_s^z ∂ℓ_s/∂z_s with the *z weight* a^z (the encoder's a,
//! which is the decoder's except for PIWAE, where the model is run backward twice) and form
//! the DReG cotangent as `dreg_factor`_s · (G_s + a^z_s ∂(−log q_stop)/∂z_s), with
//! `dreg_factor` = b/a^z computed without dividing (so an underflowed weight gives 0, not NaN).
//! All coefficients here are per example; the paths divide by the batch size n.

use crate::error::{NnError, Result};
use crate::lse::shifted_exp_sum;
use crate::real::Real;
use crate::task::{Objective, ObjectiveKind};

/// A per-row coefficient divided by the batch size `n`, flushed to zero when it is so small
/// that the cotangents it seeds on a dfdx tape would reach subnormal numbers (each subnormal
/// operation costs ~100 normal ones on x86: a two-layer IWAE k = 50 step ran 3× slower at
/// initialisation). The threshold, E's smallest normal number × 10¹⁸ (≈ 10⁻²⁰ in `f32`), is far
/// below the rounding of any gradient entry, since an example's coefficients sum to one. The
/// fast path instead runs its kernels with flush-to-zero (`kernels::DenormalsAreZero`).
pub(crate) fn per_batch<E: Real>(c: f64, n: usize) -> f64 {
    let v = c / n as f64;
    if v.abs() < E::min_positive_value().as_f64() * 1e18 {
        0.0
    } else {
        v
    }
}

/// One example's coefficients, written by [`weigh_example`] (each slice has S entries).
pub(crate) struct SampleWeights<'a> {
    /// Coefficient of ∇_θ ℓ_s for the decoder's and the prior's parameters.
    pub dec: &'a mut [f64],
    /// Coefficient of ∇_φ ℓ_s for the encoder (reparameterised), and the weight under which
    /// the gradient with respect to z_s is taken.
    pub enc: &'a mut [f64],
    /// b_s / enc_s (see the module documentation): the DReG cotangent is
    /// `dreg_factor`_s · (G_s + enc_s · ∂(−log q_stop)/∂z_s).
    pub dreg_factor: &'a mut [f64],
}

/// The value of `kind` for one example with log-weights `lw` (S = `lw.len()` samples, a
/// multiple of the kind's groups) and its coefficients into `out`. A non-finite log-weight is
/// a divergence, named by its sample index.
pub(crate) fn weigh_example(
    kind: ObjectiveKind,
    lw: &[f64],
    out: SampleWeights<'_>,
) -> Result<f64> {
    let s = lw.len();
    let groups = kind.groups();
    debug_assert!(s > 0 && s.is_multiple_of(groups));
    debug_assert!(out.dec.len() == s && out.enc.len() == s && out.dreg_factor.len() == s);
    if let Some(j) = lw.iter().position(|v| !v.is_finite()) {
        return Err(NnError::Diverged {
            what: format!("log-weight of sample {j} ({})", lw[j]),
        });
    }
    let uniform = 1.0 / s as f64;
    let (max, sum) = shifted_exp_sum(lw.iter().copied());
    let iwae = max + sum.ln() - (s as f64).ln();
    let softmax = |v: f64| (v - max).exp() / sum;
    match kind {
        ObjectiveKind::Elbo => {
            out.dec.fill(uniform);
            out.enc.fill(uniform);
            out.dreg_factor.fill(1.0);
            Ok(lw.iter().sum::<f64>() * uniform)
        }
        ObjectiveKind::Iwae => {
            for (r, &v) in lw.iter().enumerate() {
                let wt = softmax(v);
                out.dec[r] = wt;
                out.enc[r] = wt;
                out.dreg_factor[r] = wt;
            }
            Ok(iwae)
        }
        ObjectiveKind::Ciwae { beta } => {
            let beta = beta.get();
            for (r, &v) in lw.iter().enumerate() {
                let wt = softmax(v);
                let a = beta * uniform + (1.0 - beta) * wt;
                let b = beta * uniform + (1.0 - beta) * wt * wt;
                out.dec[r] = a;
                out.enc[r] = a;
                out.dreg_factor[r] = if a > 0.0 { b / a } else { 0.0 };
            }
            Ok(beta * lw.iter().sum::<f64>() * uniform + (1.0 - beta) * iwae)
        }
        ObjectiveKind::Miwae { .. } | ObjectiveKind::Piwae { .. } => {
            let kk = s / groups;
            let mut miwae = 0.0;
            for g in 0..groups {
                let rows = g * kk..(g + 1) * kk;
                let (gmax, gsum) = shifted_exp_sum(lw[rows.clone()].iter().copied());
                miwae += gmax + gsum.ln() - (kk as f64).ln();
                for r in rows {
                    let wg = (lw[r] - gmax).exp() / gsum;
                    out.enc[r] = wg / groups as f64;
                    out.dreg_factor[r] = wg;
                    out.dec[r] = if kind.splits_weights() {
                        softmax(lw[r])
                    } else {
                        out.enc[r]
                    };
                }
            }
            Ok(if kind.splits_weights() {
                iwae
            } else {
                miwae / groups as f64
            })
        }
    }
}

// Here rather than in task.rs, so that task.rs (plain data) does not import this module.
impl Objective {
    /// The objective's value for each of `n` examples from their log-weights (`n ×`
    /// [`Objective::samples`] values, example-major, as [`log_weights`](crate::log_weights)
    /// returns them). Errors if the length does not match or a log-weight is not finite.
    pub fn values_from_log_weights<E: Real>(&self, log_w: &[E], n: usize) -> Result<Vec<f64>> {
        let s = self.samples();
        if n.checked_mul(s) != Some(log_w.len()) {
            return Err(NnError::InvalidArgument {
                what: "log_w".into(),
                reason: format!(
                    "{} values for n = {n} examples of {s} samples each",
                    log_w.len()
                ),
            });
        }
        let (mut dec, mut enc, mut f) = (vec![0.0; s], vec![0.0; s], vec![0.0; s]);
        let mut lw = vec![0.0; s];
        (0..n)
            .map(|i| {
                for (dst, v) in lw.iter_mut().zip(&log_w[i * s..(i + 1) * s]) {
                    *dst = v.as_f64();
                }
                weigh_example(
                    self.kind,
                    &lw,
                    SampleWeights {
                        dec: &mut dec,
                        enc: &mut enc,
                        dreg_factor: &mut f,
                    },
                )
                .map_err(|e| match e {
                    NnError::Diverged { what } => NnError::Diverged {
                        what: format!("example {i}: {what}"),
                    },
                    e => e,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use crate::task::Beta;

    fn weigh(kind: ObjectiveKind, lw: &[f64]) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
        let s = lw.len();
        let (mut dec, mut enc, mut f) = (vec![0.0; s], vec![0.0; s], vec![0.0; s]);
        let v = weigh_example(
            kind,
            lw,
            SampleWeights {
                dec: &mut dec,
                enc: &mut enc,
                dreg_factor: &mut f,
            },
        )
        .unwrap();
        (v, dec, enc, f)
    }

    fn m(v: usize) -> NonZeroUsize {
        NonZeroUsize::new(v).unwrap()
    }

    const LW: [f64; 6] = [-90.0, -88.5, -95.0, -87.0, -91.0, -89.25];

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn ciwae_at_the_ends_is_the_elbo_and_the_iwae_bound() {
        let one = weigh(
            ObjectiveKind::Ciwae {
                beta: Beta::new(1.0).unwrap(),
            },
            &LW,
        );
        let elbo = weigh(ObjectiveKind::Elbo, &LW);
        assert!((one.0 - elbo.0).abs() < 1e-12);
        assert!(close(&one.1, &elbo.1) && close(&one.2, &elbo.2) && close(&one.3, &elbo.3));
        let zero = weigh(
            ObjectiveKind::Ciwae {
                beta: Beta::new(0.0).unwrap(),
            },
            &LW,
        );
        let iwae = weigh(ObjectiveKind::Iwae, &LW);
        assert!((zero.0 - iwae.0).abs() < 1e-12);
        assert!(close(&zero.1, &iwae.1) && close(&zero.2, &iwae.2) && close(&zero.3, &iwae.3));
    }

    #[test]
    fn miwae_with_one_group_is_iwae_and_with_singletons_is_the_elbo() {
        let one = weigh(ObjectiveKind::Miwae { m: m(1) }, &LW);
        let iwae = weigh(ObjectiveKind::Iwae, &LW);
        assert!((one.0 - iwae.0).abs() < 1e-12);
        assert!(close(&one.1, &iwae.1) && close(&one.3, &iwae.3));
        let singletons = weigh(ObjectiveKind::Miwae { m: m(6) }, &LW);
        let elbo = weigh(ObjectiveKind::Elbo, &LW);
        assert!((singletons.0 - elbo.0).abs() < 1e-12);
        assert!(close(&singletons.1, &elbo.1));
    }

    #[test]
    fn piwae_weighs_the_decoder_like_iwae_and_the_encoder_like_miwae() {
        let p = weigh(ObjectiveKind::Piwae { m: m(2) }, &LW);
        let mi = weigh(ObjectiveKind::Miwae { m: m(2) }, &LW);
        let iwae = weigh(ObjectiveKind::Iwae, &LW);
        assert!((p.0 - iwae.0).abs() < 1e-12);
        assert!(close(&p.1, &iwae.1));
        assert!(close(&p.2, &mi.2) && close(&p.3, &mi.3));
        // The bounds are ordered: MIWAE(2, 3) ≤ L_6.
        assert!(mi.0 <= iwae.0);
    }

    #[test]
    fn coefficients_sum_to_one_and_dreg_factor_times_enc_is_b() {
        for kind in [
            ObjectiveKind::Elbo,
            ObjectiveKind::Iwae,
            ObjectiveKind::Miwae { m: m(3) },
            ObjectiveKind::Ciwae {
                beta: Beta::new(0.3).unwrap(),
            },
            ObjectiveKind::Piwae { m: m(2) },
        ] {
            let (_, dec, enc, f) = weigh(kind, &LW);
            assert!((dec.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{kind:?}");
            assert!((enc.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{kind:?}");
            assert!(
                f.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_non_finite_log_weight_is_a_divergence_naming_the_sample() {
        let mut lw = LW;
        lw[4] = f64::NAN;
        let s = lw.len();
        let (mut a, mut b, mut c) = (vec![0.0; s], vec![0.0; s], vec![0.0; s]);
        let e = weigh_example(
            ObjectiveKind::Iwae,
            &lw,
            SampleWeights {
                dec: &mut a,
                enc: &mut b,
                dreg_factor: &mut c,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("sample 4"), "{e}");
    }
}
