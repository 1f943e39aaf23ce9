//! Model configuration: layer sizes, activation, likelihood and posterior parametrization, with
//! validation that rejects every setting the tensor backend would panic on.

use crate::error::{NnError, Result};

/// Largest total number of parameters accepted (2^30; 4 GiB of `f32`).
const MAX_PARAMETERS: usize = 1 << 30;

/// Hidden-layer nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `tanh(x)` (Burda et al. 2016).
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `ln(1 + eˣ)`, computed stably.
    Softplus,
}

/// Observation model p(x|z).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Likelihood {
    /// Independent Bernoulli pixels; the decoder outputs logits and log p(x|z) is computed as
    /// −BCE-with-logits (stable for any logit). Data must lie in [0, 1].
    Bernoulli,
    /// Independent Gaussians N(mean(z), std²). With `learned`, a per-dimension log-std vector
    /// `decoder.log_std` is a parameter initialised to ln(`std`); otherwise `std` is fixed.
    Gaussian {
        /// Standard deviation (initial value when learned); must be finite and > 0.
        std: f32,
        /// Whether the per-dimension standard deviation is learned.
        learned: bool,
    },
}

/// How the encoder's standard deviation is obtained from its linear head `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PosteriorStd {
    /// σ = exp(s), as in Burda et al. (2016); the head is named `encoder.log_std`.
    Exp,
    /// σ = softplus(s); the head is named `encoder.std_pre` (pre-softplus).
    Softplus,
}

/// How the weights and biases of the linear layers are drawn when a model is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InitScheme {
    /// PyTorch's `nn.Linear` default: weights *and* biases ~ U(±1/√fan_in) (variance
    /// 1/(3·fan_in)), the initialisation of the PyTorch IWAE reference.
    Pytorch,
    /// Glorot & Bengio (2010) uniform weights U(±√(6/(fan_in + fan_out))), zero biases. The
    /// default: with the data output bias it learned more per epoch than `Pytorch` on MNIST
    /// (docs/spec.md, `[model] init`).
    #[default]
    Glorot,
}

/// Smallest and largest mean accepted by [`OutputBias::data_logits`] after clipping: the logit
/// of a pixel that is never (always) on in the training data stays finite (±6.9).
pub const DATA_MEAN_CLIP: f64 = 1e-3;

/// The initial bias of the decoder's output layer (`decoder.out.bias`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum OutputBias {
    /// As [`InitScheme`] draws it (zero for Glorot, U(±1/√fan_in) for PyTorch).
    #[default]
    Scheme,
    /// Fixed logits, one per data dimension: built by [`OutputBias::data_logits`] from the
    /// training data's per-dimension means, so that the initial decoder outputs the data mean
    /// (Burda et al.'s code). Bernoulli likelihoods only.
    Logits(DataLogits),
}

/// Logits of clipped per-dimension data means; constructed only by
/// [`OutputBias::data_logits`], so every value is finite and within ±logit(1 − 10⁻³).
#[derive(Clone, Debug, PartialEq)]
pub struct DataLogits(Vec<f32>);

impl DataLogits {
    /// The logits, one per data dimension.
    pub fn values(&self) -> &[f32] {
        &self.0
    }
}

impl OutputBias {
    /// logit(clip(mean_j, 10⁻³, 1 − 10⁻³)) for every dimension j. Errors if `means` is empty or
    /// holds a value that is not finite or lies outside [0, 1] (the Bernoulli likelihood's data
    /// range), naming the index.
    pub fn data_logits(means: &[f64]) -> Result<OutputBias> {
        if means.is_empty() {
            return Err(NnError::InvalidArgument {
                what: "means".into(),
                reason: "no data dimensions".into(),
            });
        }
        if let Some(i) = means
            .iter()
            .position(|m| !(m.is_finite() && (0.0..=1.0).contains(m)))
        {
            return Err(NnError::InvalidArgument {
                what: "means".into(),
                reason: format!(
                    "the mean of dimension {i} is {}, outside [0, 1] (Bernoulli data)",
                    means[i]
                ),
            });
        }
        Ok(OutputBias::Logits(DataLogits(
            means
                .iter()
                .map(|&m| {
                    let p = m.clamp(DATA_MEAN_CLIP, 1.0 - DATA_MEAN_CLIP);
                    (p / (1.0 - p)).ln() as f32
                })
                .collect(),
        )))
    }
}

/// How a new model's parameters are initialised ([`Vae::with_init`](crate::Vae::with_init)).
#[derive(Clone, Debug, PartialEq)]
pub struct Init {
    /// Weights and biases of every linear layer.
    pub scheme: InitScheme,
    /// The decoder's output bias (overrides the scheme's draw).
    pub output_bias: OutputBias,
    /// Factor applied to the initial weights and bias of the encoder's σ head (finite, ≥ 0):
    /// 1 keeps the scheme's draw, 0 starts every posterior at σ = 1 (`exp`) or
    /// σ = softplus(0) (`softplus`).
    pub std_head_scale: f64,
}

impl Default for Init {
    /// The spec's defaults apart from the data-dependent output bias: Glorot weights, zero
    /// biases, σ head at zero (every posterior starts at σ = 1 for [`PosteriorStd::Exp`]).
    fn default() -> Self {
        Init {
            scheme: InitScheme::Glorot,
            output_bias: OutputBias::Scheme,
            std_head_scale: 0.0,
        }
    }
}

impl Init {
    /// The initialisation of vaepipe before `[model] init` existed (and of
    /// [`Vae::new`](crate::Vae::new)): Glorot-uniform weights, zero biases, the σ head as drawn.
    pub fn glorot() -> Init {
        Init {
            scheme: InitScheme::Glorot,
            output_bias: OutputBias::Scheme,
            std_head_scale: 1.0,
        }
    }

    /// Checks the initialisation against a model configuration: data logits need a Bernoulli
    /// likelihood and one value per input dimension; the σ-head scale must be finite and ≥ 0.
    pub fn validate(&self, cfg: &VaeConfig) -> Result<()> {
        if !(self.std_head_scale.is_finite() && self.std_head_scale >= 0.0) {
            return Err(NnError::InvalidConfig(format!(
                "init.std_head_scale must be finite and ≥ 0, found {}",
                self.std_head_scale
            )));
        }
        if let OutputBias::Logits(l) = &self.output_bias {
            if cfg.likelihood != Likelihood::Bernoulli {
                return Err(NnError::InvalidConfig(
                    "an output bias from data logits needs a Bernoulli likelihood".into(),
                ));
            }
            if l.0.len() != cfg.input_dim {
                return Err(NnError::InvalidConfig(format!(
                    "the output-bias data logits have {} values, expected input_dim = {}",
                    l.0.len(),
                    cfg.input_dim
                )));
            }
        }
        Ok(())
    }
}

/// A stochastic layer above the first (Burda et al. 2016, §5, the two-stochastic-layer nets):
/// the encoder q(z_{l+1}|z_l) and the decoder p(z_l|z_{l+1}), both diagonal Gaussians with
/// σ = exp(linear), on MLPs of the given hidden widths with the model's activation.
///
/// Parameter names, for the layer producing z_{l+1} (l ≥ 1): `encoder.z{l+1}.{i}.*` (hidden),
/// `encoder.z{l+1}.mean.*`, `encoder.z{l+1}.log_std.*`; `decoder.z{l}.{i}.*`,
/// `decoder.z{l}.mean.*`, `decoder.z{l}.log_std.*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// Hidden widths of q(z_{l+1}|z_l)'s MLP.
    pub encoder_hidden: Vec<usize>,
    /// Dimension of z_{l+1}.
    pub latent_dim: usize,
    /// Hidden widths of p(z_l|z_{l+1})'s MLP.
    pub decoder_hidden: Vec<usize>,
}

/// Architecture of a VAE with diagonal-Gaussian posteriors: the first stochastic layer
/// q(z1|x), p(x|z1) and, in `upper`, any further layers (empty: the one-layer VAE).
///
/// Weights are stored `[in, out]` (the layer computes `x · W + b`).
#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    /// Data dimension D (e.g. 784).
    pub input_dim: usize,
    /// Encoder hidden widths (may be empty: linear encoder).
    pub encoder_hidden: Vec<usize>,
    /// Latent dimension d.
    pub latent_dim: usize,
    /// Decoder hidden widths (may be empty: linear decoder).
    pub decoder_hidden: Vec<usize>,
    /// Hidden nonlinearity (both networks).
    pub activation: Activation,
    /// Observation model.
    pub likelihood: Likelihood,
    /// Posterior standard-deviation parametrization (of the first layer; upper layers use
    /// σ = exp(linear)).
    pub posterior_std: PosteriorStd,
    /// Stochastic layers above the first, bottom up (empty for one stochastic layer).
    pub upper: Vec<UpperLayer>,
}

/// Which part of the model a parameter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group {
    Encoder,
    Decoder,
    Prior,
}

/// Name, shape and group of one parameter tensor.
#[derive(Clone, Debug)]
pub(crate) struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl VaeConfig {
    /// The MNIST network of Burda et al. (2016, Table 1, the one-stochastic-layer rows):
    /// 784-200-200-50 tanh with a mirrored decoder, Bernoulli likelihood, σ = exp(linear). The
    /// network the benchmarks and the performance figures refer to.
    pub fn burda_mnist() -> VaeConfig {
        VaeConfig {
            input_dim: 784,
            encoder_hidden: vec![200, 200],
            latent_dim: 50,
            decoder_hidden: vec![200, 200],
            activation: Activation::Tanh,
            likelihood: Likelihood::Bernoulli,
            posterior_std: PosteriorStd::Exp,
            upper: Vec::new(),
        }
    }

    /// Burda et al.'s two-stochastic-layer MNIST net (Table 1): 784-200-200-100 (z1) and
    /// 100-100-50 (z2) tanh, the decoder mirrored (50-100-100 → z1, 100-200-200 → x).
    pub fn burda_mnist_two_layers() -> VaeConfig {
        VaeConfig {
            latent_dim: 100,
            upper: vec![UpperLayer {
                encoder_hidden: vec![100, 100],
                latent_dim: 50,
                decoder_hidden: vec![100, 100],
            }],
            ..VaeConfig::burda_mnist()
        }
    }

    /// The dimensions of the stochastic layers, bottom up: `[latent_dim, upper...]`.
    pub fn latent_dims(&self) -> Vec<usize> {
        std::iter::once(self.latent_dim)
            .chain(self.upper.iter().map(|l| l.latent_dim))
            .collect()
    }

    /// The dimension of the top stochastic layer, on which the prior p(z_L) is defined.
    pub fn prior_dim(&self) -> usize {
        self.upper.last().map_or(self.latent_dim, |l| l.latent_dim)
    }

    /// Standard-normal noise values per sample: the sum of the layers' dimensions (the noise
    /// of one sample is ε₁ then ε₂ ..., layer by layer).
    pub fn noise_dim(&self) -> usize {
        self.latent_dims().iter().sum()
    }

    /// The number of stochastic layers (1 + `upper.len()`).
    pub fn stochastic_layers(&self) -> usize {
        1 + self.upper.len()
    }

    /// Checks every size and setting; the error says which field is wrong and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(NnError::InvalidConfig(msg));
        if self.input_dim == 0 {
            return bad("input_dim must be at least 1".into());
        }
        if self.latent_dim == 0 {
            return bad("latent_dim must be at least 1".into());
        }
        if let Some(i) = self.encoder_hidden.iter().position(|&h| h == 0) {
            return bad(format!(
                "encoder_hidden[{i}] is 0; layer widths must be at least 1"
            ));
        }
        if let Some(i) = self.decoder_hidden.iter().position(|&h| h == 0) {
            return bad(format!(
                "decoder_hidden[{i}] is 0; layer widths must be at least 1"
            ));
        }
        for (l, layer) in self.upper.iter().enumerate() {
            let z = l + 2;
            if layer.latent_dim == 0 {
                return bad(format!("the latent_dim of z{z} must be at least 1"));
            }
            for (what, widths) in [
                ("encoder_hidden", &layer.encoder_hidden),
                ("decoder_hidden", &layer.decoder_hidden),
            ] {
                if let Some(i) = widths.iter().position(|&h| h == 0) {
                    return bad(format!(
                        "{what}[{i}] of z{z} is 0; layer widths must be at least 1"
                    ));
                }
            }
        }
        if let Likelihood::Gaussian { std, .. } = self.likelihood
            && !(std.is_finite() && std > 0.0)
        {
            return bad(format!(
                "Gaussian likelihood std must be finite and > 0, found {std}"
            ));
        }
        let mut total = 0usize;
        for spec in self.param_specs() {
            let count = spec
                .shape
                .iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .and_then(|c| total.checked_add(c));
            match count {
                Some(c) if c <= MAX_PARAMETERS => total = c,
                _ => {
                    return bad(format!(
                        "the model is too large (more than {MAX_PARAMETERS} parameters; \
                         tensor `{}` has shape {:?})",
                        spec.name, spec.shape
                    ));
                }
            }
        }
        Ok(())
    }

    /// Total number of parameters (saturating; call [`VaeConfig::validate`] first).
    pub fn parameter_count(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|s| s.shape.iter().fold(1usize, |a, &b| a.saturating_mul(b)))
            .fold(0usize, |a, b| a.saturating_add(b))
    }

    /// Name of the encoder's standard-deviation head.
    pub(crate) fn std_head_name(&self) -> &'static str {
        match self.posterior_std {
            PosteriorStd::Exp => "encoder.log_std",
            PosteriorStd::Softplus => "encoder.std_pre",
        }
    }

    /// Every parameter in canonical order (the order of `named_tensors`).
    pub(crate) fn param_specs(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        let mut push_linear = |prefix: String, i: usize, o: usize| {
            out.push(ParamSpec {
                name: format!("{prefix}.weight"),
                shape: vec![i, o],
            });
            out.push(ParamSpec {
                name: format!("{prefix}.bias"),
                shape: vec![o],
            });
        };
        let mut width = self.input_dim;
        for (i, &h) in self.encoder_hidden.iter().enumerate() {
            push_linear(format!("encoder.{i}"), width, h);
            width = h;
        }
        push_linear("encoder.mean".into(), width, self.latent_dim);
        push_linear(self.std_head_name().into(), width, self.latent_dim);
        let mut width = self.latent_dim;
        for (i, &h) in self.decoder_hidden.iter().enumerate() {
            push_linear(format!("decoder.{i}"), width, h);
            width = h;
        }
        push_linear("decoder.out".into(), width, self.input_dim);
        let mut below = self.latent_dim;
        for (l, layer) in self.upper.iter().enumerate() {
            let (lo, hi) = (l + 1, l + 2);
            let mut width = below;
            for (i, &h) in layer.encoder_hidden.iter().enumerate() {
                push_linear(format!("encoder.z{hi}.{i}"), width, h);
                width = h;
            }
            push_linear(format!("encoder.z{hi}.mean"), width, layer.latent_dim);
            push_linear(format!("encoder.z{hi}.log_std"), width, layer.latent_dim);
            let mut width = layer.latent_dim;
            for (i, &h) in layer.decoder_hidden.iter().enumerate() {
                push_linear(format!("decoder.z{lo}.{i}"), width, h);
                width = h;
            }
            push_linear(format!("decoder.z{lo}.mean"), width, below);
            push_linear(format!("decoder.z{lo}.log_std"), width, below);
            below = layer.latent_dim;
        }
        if let Likelihood::Gaussian { learned: true, .. } = self.likelihood {
            out.push(ParamSpec {
                name: "decoder.log_std".into(),
                shape: vec![self.input_dim],
            });
        }
        out
    }
}

impl Group {
    /// The group owning a parameter name, from its namespace.
    pub(crate) fn of(name: &str) -> Option<Group> {
        if name.starts_with("encoder.") {
            Some(Group::Encoder)
        } else if name.starts_with("decoder.") {
            Some(Group::Decoder)
        } else if name.starts_with("prior.") {
            Some(Group::Prior)
        } else {
            None
        }
    }
}
