//! The FLOP model of the VAE network: how many floating-point operations one image costs in
//! evaluation and in a training step, and which matrix products a forward pass makes. `vaepipe
//! bench` turns images per second into GFLOP/s with it. Only matrix products count, 2·m·n·k
//! each (activations, sampling and the bound's reductions are not counted).

use crate::config::VaeConfig;

/// Forward FLOPs of the evaluation bound for one image with `k` importance samples: the
/// encoder once, the decoder `k` times (matrix products only, 2·m·n·k each).
pub fn eval_flops_per_image(cfg: &VaeConfig, k: usize) -> f64 {
    encoder_flops(cfg) + k as f64 * decoder_flops(cfg)
}

/// FLOPs of one training step per image with `k` samples (matrix products only).
pub fn train_flops_per_image(cfg: &VaeConfig, k: usize) -> f64 {
    // Forward: encoder once per image, decoder once per sample. Backward: two products per
    // forward product (gradients of the input and of the weights), except the input gradient
    // of the encoder's first layer, which is not needed.
    let forward = encoder_flops(cfg) + k as f64 * decoder_flops(cfg);
    let first = 2.0
        * (cfg.input_dim
            * encoder_widths(cfg)
                .get(1)
                .copied()
                .unwrap_or(2 * cfg.latent_dim)) as f64;
    3.0 * forward - first
}

/// Multiply-adds of one pass through a stack of dense layers of widths `widths`.
fn macs(widths: &[usize]) -> f64 {
    widths.windows(2).map(|w| (w[0] * w[1]) as f64).sum()
}

fn encoder_widths(cfg: &VaeConfig) -> Vec<usize> {
    let mut w = vec![cfg.input_dim];
    w.extend(&cfg.encoder_hidden);
    w
}

fn decoder_widths(cfg: &VaeConfig) -> Vec<usize> {
    let mut w = vec![cfg.latent_dim];
    w.extend(&cfg.decoder_hidden);
    w.push(cfg.input_dim);
    w
}

/// Forward FLOPs of the encoder for one image (hidden layers and both heads).
fn encoder_flops(cfg: &VaeConfig) -> f64 {
    let widths = encoder_widths(cfg);
    let last = *widths.last().unwrap_or(&cfg.input_dim);
    2.0 * (macs(&widths) + 2.0 * (last * cfg.latent_dim) as f64)
}

/// Forward FLOPs of the decoder for one latent sample.
fn decoder_flops(cfg: &VaeConfig) -> f64 {
    2.0 * macs(&decoder_widths(cfg))
}

/// The matrix products of one forward pass of the network on `rows` rows: `(m, k, n)`.
pub fn gemm_shapes(cfg: &VaeConfig, rows: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for w in encoder_widths(cfg)
        .windows(2)
        .chain(decoder_widths(cfg).windows(2))
    {
        if !out.contains(&(rows, w[0], w[1])) {
            out.push((rows, w[0], w[1]));
        }
    }
    out
}
