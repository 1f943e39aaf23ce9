//! One lane of the fast path: the encoder forward pass over its examples, then per chunk of
//! whole examples z = μ + σ ε, the decoder forward pass, log p(z) (N(0, I) or a mixture), the
//! importance weights and the surrogate's coefficients.

use super::backward::{decoder_backward, encoder_backward, encoder_cotangents};
use super::pack::LayerPack;
use super::work::{CHUNK_ROWS, Ctx, LaneWork, sized};
use crate::config::{Activation, Likelihood, PosteriorStd};
use crate::error::{NnError, Result};
use crate::kernels::{
    self,
    gemm::{Lhs, Rhs, gemm},
};
use crate::real::LN_2PI;
use crate::weights::{SampleWeights, weigh_example};

/// One lane: examples `e0 .. e0 + values.len()` of the batch.
pub(super) fn run_lane(
    ctx: &Ctx<'_>,
    w: &mut LaneWork,
    e0: usize,
    values: &mut [f64],
) -> Result<()> {
    let ne = values.len();
    if ne == 0 {
        return Ok(());
    }
    let net = ctx.net;
    let (d, k) = (net.d, ctx.obj.samples());
    if w.grad.len() != ctx.off.len {
        w.grad.resize(ctx.off.len, 0.0);
    }
    encoder_forward(ctx, w, e0, ne);
    if ctx.tr.decoder && matches!(net.lik, Likelihood::Gaussian { learned: true, .. }) {
        w.grad_log_std.clear();
        w.grad_log_std.resize(net.dd, 0.0);
    }
    if let (true, Some(mix)) = (ctx.prior_grad, &ctx.pk.mix) {
        w.grad_prior.clear();
        w.grad_prior.resize(mix.k + 2 * mix.k * d, 0.0);
    }
    w.g_mu.clear();
    w.g_mu.resize(ne * d, 0.0);
    w.g_ls.clear();
    w.g_ls.resize(ne * d, 0.0);
    let per_chunk = (CHUNK_ROWS / k).max(1);
    let mut start = 0;
    while start < ne {
        let m = per_chunk.min(ne - start);
        chunk(
            ctx,
            w,
            e0,
            start,
            m,
            &mut values[start..start + m],
            start == 0,
        )?;
        start += m;
    }
    if ctx.tr.decoder && matches!(net.lik, Likelihood::Gaussian { learned: true, .. }) {
        let o = ctx.off.log_std;
        for (g, &v) in w.grad[o..o + net.dd].iter_mut().zip(&w.grad_log_std) {
            *g = v as f32;
        }
    }
    if let Some(at) = ctx.off.prior {
        for (g, &v) in w.grad[at[0]..].iter_mut().zip(&w.grad_prior) {
            *g = v as f32;
        }
    }
    if ctx.tr.encoder {
        encoder_backward(ctx, w, ne);
    }
    Ok(())
}

/// Forward through hidden layers `(in, out)` on `rows` rows: `outs[l]` becomes layer l's
/// activations, `rows × (out + 1)` with a trailing column of ones (as is `input`, `rows ×
/// (in₀ + 1)`), so that the backward weight product also yields the bias gradient.
#[allow(clippy::too_many_arguments)]
pub(super) fn hidden_forward(
    input: &[f32],
    rows: usize,
    layers: &[(usize, usize)],
    packs: &[LayerPack],
    act: Activation,
    outs: &mut Vec<Vec<f32>>,
    scratch: &mut Vec<f32>,
) {
    outs.resize_with(layers.len(), Vec::new);
    for (l, (&(i, o), p)) in layers.iter().zip(packs).enumerate() {
        let (before, after) = outs.split_at_mut(l);
        let src: &[f32] = if l == 0 { input } else { &before[l - 1] };
        let dst = sized(&mut after[0], rows * (o + 1));
        gemm(
            rows,
            o,
            i,
            Lhs::Rows(src, i + 1),
            Rhs::Packed(&p.fwd),
            dst,
            o + 1,
            false,
            scratch,
        );
        kernels::activation_rows(dst, o + 1, rows, &p.b, act);
    }
}

/// Encoder forward for the lane's examples: μ, σ, ln σ.
pub(super) fn encoder_forward(ctx: &Ctx<'_>, w: &mut LaneWork, e0: usize, ne: usize) {
    let net = ctx.net;
    let (dd, d) = (net.dd, net.d);
    let xin = sized(&mut w.xin, ne * (dd + 1));
    for (r, row) in xin.chunks_exact_mut(dd + 1).enumerate() {
        row[..dd].copy_from_slice(&ctx.x[(e0 + r) * dd..(e0 + r + 1) * dd]);
        row[dd] = 1.0;
    }
    hidden_forward(
        &w.xin,
        ne,
        &net.enc,
        &ctx.pk.enc,
        net.act,
        &mut w.enc_h,
        &mut w.scratch,
    );
    let (src, ld): (&[f32], usize) = match w.enc_h.last() {
        Some(h) => (h, net.hl + 1),
        None => (&w.xin, dd + 1),
    };
    let heads = sized(&mut w.heads, ne * 2 * d);
    gemm(
        ne,
        2 * d,
        net.hl,
        Lhs::Rows(src, ld),
        Rhs::Packed(&ctx.pk.head_fwd),
        heads,
        2 * d,
        false,
        &mut w.scratch,
    );
    for row in heads.chunks_exact_mut(2 * d) {
        for (v, b) in row.iter_mut().zip(&ctx.pk.head_b) {
            *v += b;
        }
    }
    let mu = sized(&mut w.mu, ne * d);
    let sigma = sized(&mut w.sigma, ne * d);
    let log_std = sized(&mut w.log_std, ne * d);
    w.sum_log_std.clear();
    for r in 0..ne {
        let h = &w.heads[r * 2 * d..(r + 1) * 2 * d];
        mu[r * d..(r + 1) * d].copy_from_slice(&h[..d]);
        let mut s = 0.0f64;
        for j in 0..d {
            let pre = h[d + j];
            let ls = match net.pstd {
                PosteriorStd::Exp => pre,
                PosteriorStd::Softplus => softplus_f32(pre).ln(),
            };
            log_std[r * d + j] = ls;
            sigma[r * d + j] = ls.exp();
            s += ls as f64;
        }
        w.sum_log_std.push(s);
    }
}

/// softplus in `f32` (libm), for the per-example σ head.
pub(super) fn softplus_f32(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Examples `start .. start + m` of the lane (whole examples): decoder forward, weights,
/// decoder backward, encoder cotangents.
#[allow(clippy::too_many_arguments)]
pub(super) fn chunk(
    ctx: &Ctx<'_>,
    w: &mut LaneWork,
    e0: usize,
    start: usize,
    m: usize,
    values: &mut [f64],
    first: bool,
) -> Result<()> {
    let net = ctx.net;
    let obj = ctx.obj;
    let (dd, d, k) = (net.dd, net.d, obj.samples());
    let rows = m * k;
    let const_d = 0.5 * d as f64 * LN_2PI;

    // z = μ + σ ε, log q(z|x) and log p(z).
    let z = sized(&mut w.z, rows * (d + 1));
    w.lq.clear();
    w.lp.clear();
    for r in 0..rows {
        let li = start + r / k;
        let er = (e0 + li) * k + r % k;
        let e = &ctx.eps[er * d..(er + 1) * d];
        let zr = &mut z[r * (d + 1)..(r + 1) * (d + 1)];
        let (mu, sd) = (&w.mu[li * d..(li + 1) * d], &w.sigma[li * d..(li + 1) * d]);
        let (mut sq_e, mut sq_z) = (0.0f64, 0.0f64);
        for j in 0..d {
            let v = mu[j] + sd[j] * e[j];
            zr[j] = v;
            sq_e += e[j] as f64 * e[j] as f64;
            sq_z += v as f64 * v as f64;
        }
        zr[d] = 1.0;
        w.lq.push(-w.sum_log_std[li] - 0.5 * sq_e - const_d);
        w.lp.push(-0.5 * sq_z - const_d);
    }
    if let Some(mix) = &ctx.pk.mix {
        w.gz.clear();
        w.gz.resize(rows * d, 0.0);
        mix.eval(z, d + 1, rows, &mut w.mix, &mut w.lp, &mut w.gz);
    }

    // Decoder forward.
    let hidden = net.dec.len() - 1;
    hidden_forward(
        &w.z,
        rows,
        &net.dec[..hidden],
        &ctx.pk.dec[..hidden],
        net.act,
        &mut w.dec_h,
        &mut w.scratch,
    );
    let (i_out, _) = net.dec[hidden];
    let (src, ld): (&[f32], usize) = match w.dec_h.last() {
        Some(h) => (h, i_out + 1),
        None => (&w.z, d + 1),
    };
    let out = sized(&mut w.out, rows * dd);
    let pout = &ctx.pk.dec[hidden];
    gemm(
        rows,
        dd,
        i_out,
        Lhs::Rows(src, ld),
        Rhs::Packed(&pout.fwd),
        out,
        dd,
        false,
        &mut w.scratch,
    );
    w.ll.clear();
    w.ll.resize(rows, 0.0);
    let tmp = sized(&mut w.tmp, dd);
    let xc = &ctx.x[(e0 + start) * dd..(e0 + start + m) * dd];
    match net.lik {
        Likelihood::Bernoulli => {
            kernels::bernoulli_grad_rows(out, &pout.b, xc, k, &mut w.ll, tmp);
        }
        Likelihood::Gaussian { .. } => {
            let lk = &ctx.pk.lik;
            kernels::gaussian_grad_rows(out, &pout.b, xc, k, &lk.coef, lk.constant, &mut w.ll, tmp);
        }
    }

    // Importance weights and the surrogate's weights c.
    weigh(ctx, w, e0, start, m, values)?;

    // Learned Gaussian log-std: Σ_r c_r ((μ − x)² σ⁻² − 1), with (μ − x)² σ⁻² = g² σ² for the
    // stored gradient g = −(μ − x) σ⁻².
    if ctx.tr.decoder && matches!(net.lik, Likelihood::Gaussian { learned: true, .. }) {
        for r in 0..rows {
            let c = w.cd[r];
            for (j, acc) in w.grad_log_std.iter_mut().enumerate() {
                let g = w.out[r * dd + j] as f64;
                let var = -0.5 / ctx.pk.lik.coef[j] as f64;
                *acc += c * (g * g * var - 1.0);
            }
        }
    }

    if ctx.tr.encoder || ctx.tr.decoder {
        decoder_backward(ctx, w, rows, first);
    }
    if let (true, Some(mix)) = (ctx.prior_grad, &ctx.pk.mix) {
        mix.gradient(&w.cd[..rows], &mut w.mix, &mut w.grad_prior);
    }
    if ctx.tr.encoder {
        encoder_cotangents(ctx, w, e0, start, rows);
    }
    Ok(())
}

/// log w = log p(x|z) + log p(z) − log q(z|x) per sample; the objective per example into
/// `values`; w̃ (`wt`) and the surrogate weights c (`c`, `cf`) per sample.
pub(super) fn weigh(
    ctx: &Ctx<'_>,
    w: &mut LaneWork,
    e0: usize,
    start: usize,
    m: usize,
    values: &mut [f64],
) -> Result<()> {
    let obj = ctx.obj;
    let (k, n, d) = (obj.samples(), ctx.n as f64, ctx.net.d);
    let rows = m * k;
    w.wt.clear();
    w.wt.resize(rows, 0.0);
    w.cf.clear();
    w.cf.resize(rows, 0.0);
    w.cd.clear();
    w.cd.resize(rows, 0.0);
    for (q, value) in values.iter_mut().enumerate() {
        let li = start + q;
        if obj.analytic_kl {
            // k = 1: reconstruction − KL(q ‖ N(0, I)).
            let mut kl = 0.0f64;
            for j in 0..d {
                let (mu, ls) = (w.mu[li * d + j] as f64, w.log_std[li * d + j] as f64);
                kl += 0.5 * (mu * mu + (2.0 * ls).exp() - 1.0) - ls;
            }
            *value = w.ll[q] - kl;
            w.wt[q] = 1.0;
            w.cf[q] = 1.0 / n;
            w.cd[q] = 1.0 / n;
            continue;
        }
        let r0 = q * k;
        for r in r0..r0 + k {
            w.wt[r] = w.ll[r] + w.lp[r] - w.lq[r];
        }
        w.lw.clear();
        w.lw.extend_from_slice(&w.wt[r0..r0 + k]);
        // `cf` (the weights of the one backward pass) is the encoder's, `cd` the decoder's
        // (they differ for PIWAE only) and `wt` is DReG's factor (w̃ for IWAE, 1 for the ELBO).
        *value = weigh_example(
            obj.kind,
            &w.lw,
            SampleWeights {
                dec: &mut w.cd[r0..r0 + k],
                enc: &mut w.cf[r0..r0 + k],
                dreg_factor: &mut w.wt[r0..r0 + k],
            },
        )
        .map_err(|e| match e {
            NnError::Diverged { what } => NnError::Diverged {
                what: format!("example {}: {what}", e0 + li),
            },
            e => e,
        })?;
        for c in &mut w.cf[r0..r0 + k] {
            *c /= n;
        }
        for c in &mut w.cd[r0..r0 + k] {
            *c /= n;
        }
    }
    w.c.clear();
    w.c.extend(w.cf.iter().map(|&v| v as f32));
    if obj.kind.splits_weights() {
        w.cdec.clear();
        w.cdec.extend(w.cd.iter().map(|&v| v as f32));
        w.ratio.clear();
        w.ratio.extend(
            w.cd.iter()
                .zip(&w.cf)
                .map(|(&dec, &enc)| if enc > 0.0 { (dec / enc) as f32 } else { 0.0 }),
        );
    }
    Ok(())
}
