//! The fast path's backward passes: through the decoder (weight gradients and ∂/∂z), the
//! encoder's cotangents of μ and ln σ, and through the encoder (its weight gradients and, for a
//! VampPrior's pseudo-inputs, the input's).

use super::work::{Ctx, LaneWork, sized};
use crate::config::PosteriorStd;
use crate::kernels::{
    self,
    gemm::{Lhs, Rhs, gemm},
};
use crate::task::Estimator;

/// Backward through the decoder: weight gradients (accumulated over the lane's chunks) and
/// ∂/∂z into `dz` (when the encoder is trained). The surrogate is Σ_r c_r log p(x|z_r), with
/// the encoder's c for ∂/∂z and the decoder's for the weights: for PIWAE, where they differ, the
/// rows are carried under the encoder's c and rescaled by ρ = c_dec / c_enc where a weight
/// gradient is accumulated (one backward pass instead of two).
pub(super) fn decoder_backward(ctx: &Ctx<'_>, w: &mut LaneWork, rows: usize, first: bool) {
    let net = ctx.net;
    let (dd, d) = (net.dd, net.d);
    let hidden = net.dec.len() - 1;
    let (dec_tr, enc_tr) = (ctx.tr.decoder, ctx.tr.encoder);
    let split = ctx.obj.kind.splits_weights();
    let acc = !first;
    let e = &w.out[..rows * dd];
    if hidden == 0 {
        // Linear decoder: the output layer's input is z.
        let p = &ctx.pk.dec[0];
        if enc_tr {
            let dz = sized(&mut w.dz, rows * d);
            gemm(
                rows,
                d,
                dd,
                Lhs::Rows(e, dd),
                Rhs::Packed(&p.bwd),
                dz,
                d,
                false,
                &mut w.scratch,
            );
            for (row, &c) in dz.chunks_exact_mut(d).zip(&w.c) {
                row.iter_mut().for_each(|v| *v *= c);
            }
        }
        if dec_tr {
            let zs = sized(&mut w.zs, rows * (d + 1));
            zs.copy_from_slice(&w.z[..rows * (d + 1)]);
            let c = if split { &w.cdec } else { &w.c };
            kernels::scale_rows(zs, d + 1, rows, d, &c[..rows]);
            let g = &mut w.grad[ctx.off.dec[0]..];
            gemm(
                d + 1,
                dd,
                rows,
                Lhs::Cols(zs, d + 1),
                Rhs::Rows(e, dd),
                g,
                dd,
                acc,
                &mut w.scratch,
            );
        }
        return;
    }
    // Output layer: dA of the last hidden layer = c ⊙ (E · Wᵀ) ⊙ act′.
    let (i_out, _) = net.dec[hidden];
    let pout = &ctx.pk.dec[hidden];
    {
        let db = sized(&mut w.db0, rows * i_out);
        gemm(
            rows,
            i_out,
            dd,
            Lhs::Rows(e, dd),
            Rhs::Packed(&pout.bwd),
            db,
            i_out,
            false,
            &mut w.scratch,
        );
        let h = &mut w.dec_h[hidden - 1];
        kernels::activation_grad(
            db,
            i_out,
            h,
            i_out + 1,
            rows,
            i_out,
            net.act,
            Some(&w.c[..rows]),
        );
        if dec_tr {
            let c = if split { &w.cdec } else { &w.c };
            kernels::scale_rows(h, i_out + 1, rows, i_out, &c[..rows]);
            let g = &mut w.grad[ctx.off.dec[hidden]..];
            gemm(
                i_out + 1,
                dd,
                rows,
                Lhs::Cols(h, i_out + 1),
                Rhs::Rows(e, dd),
                g,
                dd,
                acc,
                &mut w.scratch,
            );
        }
    }
    // Hidden layers, last to first; dA of layer l is in db0.
    for l in (0..hidden).rev() {
        let (i, o) = net.dec[l];
        let p = &ctx.pk.dec[l];
        let (input, ld): (&[f32], usize) = if l == 0 {
            (&w.z, d + 1)
        } else {
            (&w.dec_h[l - 1], i + 1)
        };
        let da = &w.db0[..rows * o];
        if dec_tr {
            let g = &mut w.grad[ctx.off.dec[l]..];
            let da_dec: &[f32] = if split {
                let das = sized(&mut w.das, rows * o);
                for ((dst, src), &r) in das
                    .chunks_exact_mut(o)
                    .zip(da.chunks_exact(o))
                    .zip(&w.ratio)
                {
                    dst.iter_mut().zip(src).for_each(|(a, &b)| *a = b * r);
                }
                das
            } else {
                da
            };
            gemm(
                i + 1,
                o,
                rows,
                Lhs::Cols(input, ld),
                Rhs::Rows(da_dec, o),
                g,
                o,
                acc,
                &mut w.scratch,
            );
        }
        if l > 0 {
            let next = sized(&mut w.db1, rows * i);
            gemm(
                rows,
                i,
                o,
                Lhs::Rows(da, o),
                Rhs::Packed(&p.bwd),
                next,
                i,
                false,
                &mut w.scratch,
            );
            kernels::activation_grad(next, i, input, ld, rows, i, net.act, None);
            std::mem::swap(&mut w.db0, &mut w.db1);
        } else if enc_tr {
            let dz = sized(&mut w.dz, rows * d);
            gemm(
                rows,
                d,
                o,
                Lhs::Rows(da, o),
                Rhs::Packed(&p.bwd),
                dz,
                d,
                false,
                &mut w.scratch,
            );
        }
    }
}

/// Cotangents of the batch objective with respect to μ and ln σ, accumulated over the chunk's
/// samples (as crate::objective::encoder_cotangents, in `f64`).
pub(super) fn encoder_cotangents(
    ctx: &Ctx<'_>,
    w: &mut LaneWork,
    e0: usize,
    start: usize,
    rows: usize,
) {
    let obj = ctx.obj;
    let (d, k) = (ctx.net.d, obj.samples());
    let reparam = obj.estimator == Estimator::Reparam;
    for r in 0..rows {
        let li = start + r / k;
        let er = (e0 + li) * k + r % k;
        let e = &ctx.eps[er * d..(er + 1) * d];
        let c = w.cf[r];
        let wt = w.wt[r];
        for (l, &el) in e.iter().enumerate() {
            let ev = el as f64;
            let s = w.sigma[li * d + l] as f64;
            let mut g = w.dz[r * d + l] as f64;
            if !obj.analytic_kl {
                // The prior's term of the surrogate: ∂(c log p(z))/∂z, −c z under N(0, I).
                match &ctx.pk.mix {
                    None => g -= c * w.z[r * (d + 1) + l] as f64,
                    Some(_) => g += c * w.gz[r * d + l],
                }
            }
            let g = match obj.estimator {
                Estimator::Reparam => g,
                Estimator::Dreg => wt * (g + c * ev / s),
            };
            w.g_mu[li * d + l] += g;
            w.g_ls[li * d + l] += g * ev * s;
            if reparam && !obj.analytic_kl {
                w.g_ls[li * d + l] += c;
            }
        }
    }
}

/// Backward through the encoder from the cotangents of μ and ln σ: its weight gradients when
/// it is trained, and with [`Ctx::input_grad`] the input rows' gradient into `gx`.
pub(super) fn encoder_backward(ctx: &Ctx<'_>, w: &mut LaneWork, ne: usize) {
    let weights = ctx.tr.encoder;
    let net = ctx.net;
    let (dd, d, hl) = (net.dd, net.d, net.hl);
    let n = ctx.n as f64;
    let genc = sized(&mut w.genc, ne * 2 * d);
    for r in 0..ne {
        for j in 0..d {
            let idx = r * d + j;
            let (mut gm, mut gl) = (w.g_mu[idx], w.g_ls[idx]);
            if ctx.obj.analytic_kl {
                // −KL/n with KL = Σ ½(μ² + σ² − 1) − ln σ.
                let (m, s) = (w.mu[idx] as f64, w.sigma[idx] as f64);
                gm -= m / n;
                gl -= (s * s - 1.0) / n;
            }
            let gs = match net.pstd {
                PosteriorStd::Exp => gl,
                PosteriorStd::Softplus => {
                    // ln σ = ln softplus(s): d ln σ/ds = sigmoid(s) / softplus(s).
                    let s = w.heads[r * 2 * d + d + j] as f64;
                    let sp = s.max(0.0) + (-s.abs()).exp().ln_1p();
                    gl * (1.0 / (1.0 + (-s).exp())) / sp
                }
            };
            genc[r * 2 * d + j] = gm as f32;
            genc[r * 2 * d + d + j] = gs as f32;
        }
    }
    let genc = &w.genc[..ne * 2 * d];
    let (input, ld): (&[f32], usize) = match w.enc_h.last() {
        Some(h) => (h, hl + 1),
        None => (&w.xin, dd + 1),
    };
    let off = ctx.off;
    if weights {
        gemm(
            hl + 1,
            d,
            ne,
            Lhs::Cols(input, ld),
            Rhs::Rows(genc, 2 * d),
            &mut w.grad[off.mean..],
            d,
            false,
            &mut w.scratch,
        );
        gemm(
            hl + 1,
            d,
            ne,
            Lhs::Cols(input, ld),
            Rhs::Rows(&genc[d..], 2 * d),
            &mut w.grad[off.std..],
            d,
            false,
            &mut w.scratch,
        );
    }
    let layers = net.enc.len();
    if layers == 0 {
        return;
    }
    {
        let db = sized(&mut w.eb0, ne * hl);
        gemm(
            ne,
            hl,
            2 * d,
            Lhs::Rows(genc, 2 * d),
            Rhs::Packed(&ctx.pk.head_bwd),
            db,
            hl,
            false,
            &mut w.scratch,
        );
        kernels::activation_grad(db, hl, &w.enc_h[layers - 1], hl + 1, ne, hl, net.act, None);
    }
    for l in (0..layers).rev() {
        let (i, o) = net.enc[l];
        let (input, ld): (&[f32], usize) = if l == 0 {
            (&w.xin, dd + 1)
        } else {
            (&w.enc_h[l - 1], i + 1)
        };
        let da = &w.eb0[..ne * o];
        if weights {
            gemm(
                i + 1,
                o,
                ne,
                Lhs::Cols(input, ld),
                Rhs::Rows(da, o),
                &mut w.grad[off.enc[l]..],
                o,
                false,
                &mut w.scratch,
            );
        }
        if l == 0 && ctx.input_grad {
            let gx = sized(&mut w.gx, ne * i);
            gemm(
                ne,
                i,
                o,
                Lhs::Rows(da, o),
                Rhs::Packed(&ctx.pk.enc[0].bwd),
                gx,
                i,
                false,
                &mut w.scratch,
            );
        }
        if l > 0 {
            let next = sized(&mut w.eb1, ne * i);
            gemm(
                ne,
                i,
                o,
                Lhs::Rows(da, o),
                Rhs::Packed(&ctx.pk.enc[l].bwd),
                next,
                i,
                false,
                &mut w.scratch,
            );
            kernels::activation_grad(next, i, input, ld, ne, i, net.act, None);
            std::mem::swap(&mut w.eb0, &mut w.eb1);
        }
    }
}
