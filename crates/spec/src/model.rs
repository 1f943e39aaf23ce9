//! Reading `[model]`: the one-layer keys (`latent`, `encoder`, `decoder`) or the stochastic
//! layers of `[[model.layers]]` (docs/spec.md), and the network settings.

use crate::node::{Node, Value};
use crate::read::{Reader, Table, positive, positive_f};
use crate::schema::*;

fn sizes(v: &[usize]) -> Result<(), String> {
    match v.iter().position(|s| *s == 0) {
        Some(i) => Err(format!("layer sizes must be at least 1 (entry {i} is 0)")),
        None => Ok(()),
    }
}

/// `decoder` of a model table or a layer entry: the reverse of `encoder` if absent.
fn read_decoder(t: &mut Table, r: &mut Reader, encoder: &[usize]) -> Vec<usize> {
    let decoder = t.opt::<Vec<usize>>(r, "decoder");
    if let Some((d, o)) = &decoder
        && let Err(e) = sizes(d)
    {
        let path = t.key_path("decoder");
        r.error(o, &path, e);
    }
    decoder.map_or_else(|| encoder.iter().rev().copied().collect(), |(d, _)| d)
}

/// `[[model.layers]]`: the stochastic layers bottom up, each `latent` (required), `encoder`
/// (required: hidden widths from the layer below, x for the first) and `decoder` (default: the
/// reverse of `encoder`). Errors are recorded; a bad entry is left out.
fn read_layers(node: &Node, r: &mut Reader) -> Vec<UpperLayerSection> {
    let Value::Array(items) = &node.value else {
        r.error_help(
            &node.origin,
            "model.layers",
            format!(
                "expected an array of tables, found {}",
                node.value.type_name()
            ),
            "write each stochastic layer as [[model.layers]] with latent, encoder (and decoder)",
        );
        return Vec::new();
    };
    if items.is_empty() {
        r.error(&node.origin, "model.layers", "needs at least one layer");
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(mut t) = r.table(item, &format!("model.layers[{i}]")) else {
            continue;
        };
        let latent = t.req::<usize>(r, "latent");
        if let Some((v, o)) = &latent
            && let Err(e) = positive(v)
        {
            r.error(o, &t.key_path("latent"), e);
        }
        let encoder = t.req::<Vec<usize>>(r, "encoder");
        if let Some((v, o)) = &encoder
            && let Err(e) = sizes(v)
        {
            r.error(o, &t.key_path("encoder"), e);
        }
        let encoder = encoder.map(|(v, _)| v).unwrap_or_default();
        let decoder = read_decoder(&mut t, r, &encoder);
        t.finish(r, &["latent", "encoder", "decoder"]);
        if let Some((latent, _)) = latent {
            out.push(UpperLayerSection {
                latent,
                encoder,
                decoder,
            });
        }
    }
    out
}

pub(crate) fn read_model(node: &Node, r: &mut Reader) -> Option<ModelSection> {
    let mut t = r.table(node, "model")?;
    let (latent, encoder, decoder, upper) = match t.node("layers") {
        Some(layers) => {
            for key in ["latent", "encoder", "decoder"] {
                if let Some(n) = t.node(key) {
                    r.error_help(
                        &n.origin,
                        &format!("model.{key}"),
                        format!("`model.{key}` and `model.layers` cannot both be set"),
                        "with [[model.layers]], give each layer's `latent`, `encoder` and `decoder` in its entry (the first entry is the layer next to the data)",
                    );
                }
            }
            let mut layers = read_layers(layers, r).into_iter();
            let first = layers.next()?;
            let upper = layers.collect();
            (first.latent, first.encoder, first.decoder, upper)
        }
        None => {
            let latent = t.get_checked(r, "latent", 50usize, positive);
            let encoder =
                t.get_checked(r, "encoder", vec![200usize, 200], |v: &Vec<usize>| sizes(v));
            let decoder = read_decoder(&mut t, r, &encoder);
            (latent, encoder, decoder, Vec::new())
        }
    };
    let activation = t.get(r, "activation", Activation::Tanh);
    let likelihood = t.get(r, "likelihood", Likelihood::Bernoulli);
    let observation_std = t.get_checked(r, "observation_std", 1.0f64, positive_f);
    let learn_std = t.get(r, "learn_std", false);
    let posterior_std = t.get(r, "posterior_std", PosteriorStd::Exp);
    let init = t.get(r, "init", InitScheme::Pytorch);
    let output_bias = match t.opt::<OutputBias>(r, "output_bias") {
        Some((OutputBias::Data, origin)) if likelihood != Likelihood::Bernoulli => {
            r.error_help(
                origin,
                "model.output_bias",
                format!(
                    "output_bias = \"data\" sets Bernoulli logits, but likelihood = \"{likelihood}\""
                ),
                "use output_bias = \"init\" with a Gaussian likelihood",
            );
            OutputBias::Init
        }
        Some((v, _)) => v,
        None if likelihood == Likelihood::Bernoulli => OutputBias::Data,
        None => OutputBias::Init,
    };
    let std_head_scale = t.get_checked(r, "std_head_scale", 0.0f64, |v| {
        if *v >= 0.0 {
            Ok(())
        } else {
            Err(format!("must be at least 0, found {v}"))
        }
    });
    t.finish(
        r,
        &[
            "latent",
            "encoder",
            "decoder",
            "activation",
            "likelihood",
            "observation_std",
            "learn_std",
            "posterior_std",
            "init",
            "output_bias",
            "std_head_scale",
            "layers",
        ],
    );
    Some(ModelSection {
        latent,
        encoder,
        decoder,
        upper,
        activation,
        likelihood,
        observation_std,
        learn_std,
        posterior_std,
        init,
        output_bias,
        std_head_scale,
    })
}
