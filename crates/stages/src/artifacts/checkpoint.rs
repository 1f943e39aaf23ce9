//! Model and prior checkpoints (safetensors) with their JSON configuration in the metadata
//! (`vaepipe.model`, `vaepipe.prior`; docs/artifacts.md).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use serde::{Deserialize, Serialize};
use vaepipe_nn::{NamedTensor, Prior, PriorKind, Vae, VaeConfig};
use vaepipe_spec::{Activation, Likelihood, ModelSection, PosteriorStd};

/// The model's configuration as stored in checkpoint metadata (`vaepipe.model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub input_dim: usize,
    #[serde(flatten)]
    pub model: ModelSection,
}

impl ModelConfig {
    /// The network configuration for vaepipe-nn.
    pub fn vae_config(&self) -> VaeConfig {
        let m = &self.model;
        VaeConfig {
            input_dim: self.input_dim,
            encoder_hidden: m.encoder.clone(),
            latent_dim: m.latent,
            decoder_hidden: m.decoder.clone(),
            activation: match m.activation {
                Activation::Tanh => vaepipe_nn::Activation::Tanh,
                Activation::Relu => vaepipe_nn::Activation::Relu,
                Activation::Softplus => vaepipe_nn::Activation::Softplus,
            },
            likelihood: match m.likelihood {
                Likelihood::Bernoulli => vaepipe_nn::Likelihood::Bernoulli,
                Likelihood::Gaussian => vaepipe_nn::Likelihood::Gaussian {
                    std: m.observation_std as f32,
                    learned: m.learn_std,
                },
            },
            posterior_std: match m.posterior_std {
                PosteriorStd::Exp => vaepipe_nn::PosteriorStd::Exp,
                PosteriorStd::Softplus => vaepipe_nn::PosteriorStd::Softplus,
            },
            upper: m
                .upper
                .iter()
                .map(|l| vaepipe_nn::UpperLayer {
                    encoder_hidden: l.encoder.clone(),
                    latent_dim: l.latent,
                    decoder_hidden: l.decoder.clone(),
                })
                .collect(),
        }
    }
}

/// Saves a model with its configuration in the metadata.
pub fn save_model(path: &Path, vae: &Vae, config: &ModelConfig) -> anyhow::Result<()> {
    let mut meta = BTreeMap::new();
    meta.insert("vaepipe.model".to_string(), serde_json::to_string(config)?);
    vaepipe_nn::save_safetensors(path, &vae.named_tensors(), &meta)?;
    Ok(())
}

/// Loads a model saved by [`save_model`]; errors name the file.
pub fn load_model(path: &Path) -> anyhow::Result<(Vae, ModelConfig)> {
    let (tensors, meta) = vaepipe_nn::load_safetensors(path)?;
    let json = meta.get("vaepipe.model").ok_or_else(|| {
        anyhow!(
            "{}: not a vaepipe model (no `vaepipe.model` metadata)",
            path.display()
        )
    })?;
    let config: ModelConfig = serde_json::from_str(json)
        .with_context(|| format!("{}: invalid `vaepipe.model` metadata", path.display()))?;
    let vae = Vae::from_named_tensors(&config.vae_config(), &tensors)
        .with_context(|| format!("{}: does not match its configuration", path.display()))?;
    Ok((vae, config))
}

/// Description stored with a prior (`vaepipe.prior`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorInfo {
    /// `standard-normal`, `mixture` or `vamp`.
    pub kind: String,
    pub components: usize,
    /// The spec's method (`aggregate-posterior`, `mog`, `vamp`).
    pub method: String,
    /// Aggregate posterior: the number of training posteriors used (0 = all).
    pub subset: usize,
    pub seed: u64,
}

pub fn prior_kind_name(p: &Prior) -> (&'static str, usize) {
    match p.kind() {
        PriorKind::StandardNormal => ("standard-normal", 0),
        PriorKind::Mixture { components } => ("mixture", components),
        PriorKind::Vamp { components } => ("vamp", components),
    }
}

pub fn save_prior(path: &Path, prior: &Prior, info: &PriorInfo) -> anyhow::Result<()> {
    let mut meta = BTreeMap::new();
    meta.insert("vaepipe.prior".to_string(), serde_json::to_string(info)?);
    vaepipe_nn::save_safetensors(path, &prior.named_tensors(), &meta)?;
    Ok(())
}

/// Loads a prior saved by [`save_prior`] for a model of configuration `cfg`.
pub fn load_prior(path: &Path, cfg: &VaeConfig) -> anyhow::Result<(Prior, PriorInfo)> {
    let (tensors, meta) = vaepipe_nn::load_safetensors(path)?;
    let json = meta.get("vaepipe.prior").ok_or_else(|| {
        anyhow!(
            "{}: not a vaepipe prior (no `vaepipe.prior` metadata)",
            path.display()
        )
    })?;
    let info: PriorInfo = serde_json::from_str(json)
        .with_context(|| format!("{}: invalid `vaepipe.prior` metadata", path.display()))?;
    let kind = match info.kind.as_str() {
        "standard-normal" => PriorKind::StandardNormal,
        "mixture" => PriorKind::Mixture {
            components: info.components,
        },
        "vamp" => PriorKind::Vamp {
            components: info.components,
        },
        other => return Err(anyhow!("{}: unknown prior kind `{other}`", path.display())),
    };
    let tensors: Vec<NamedTensor> = tensors;
    let prior = Prior::from_named_tensors(kind, cfg, &tensors)
        .with_context(|| format!("{}: does not fit the model", path.display()))?;
    Ok((prior, info))
}

/// A file name read from an artifact: only a plain name inside the stage's directory.
pub(crate) fn plain(file: &str) -> anyhow::Result<&str> {
    if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
        return Err(anyhow!("`{file}` is not a plain file name"));
    }
    Ok(file)
}
