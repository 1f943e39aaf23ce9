//! The error type of the crate: every failure on bad input (sizes, tensors, files, divergence)
//! is reported here with enough context to act on, never as a panic.

use std::path::PathBuf;

/// Errors of `vaepipe-nn`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnError {
    /// A model, prior, objective or optimizer setting is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A data buffer has the wrong number of values.
    #[error("`{what}` has {found} values, expected {expected}")]
    Length {
        /// Which argument, with how its size is derived (e.g. `x (n=20 × input_dim=784)`).
        what: String,
        /// Required number of values.
        expected: usize,
        /// Number of values passed.
        found: usize,
    },

    /// An argument is outside its valid range (zero sizes, non-finite values, ...).
    #[error("invalid argument `{what}`: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A named tensor has the wrong shape.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    TensorShape {
        /// Tensor name.
        name: String,
        /// Shape required by the configuration.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },

    /// A tensor required by the configuration is absent.
    #[error("missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// Tensor name.
        name: String,
        /// Shape it should have.
        expected: Vec<usize>,
    },

    /// A tensor is present that the configuration does not use.
    #[error("unexpected tensor `{name}`: {context}")]
    UnexpectedTensor {
        /// Tensor name.
        name: String,
        /// Why it is unexpected.
        context: String,
    },

    /// A tensor's contents are unusable (non-finite values, inconsistent length, duplicate name).
    #[error("tensor `{name}`: {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// A loss, log-weight or gradient became NaN or infinite; no parameter was updated.
    #[error("training diverged: non-finite {what}")]
    Diverged {
        /// What became non-finite (e.g. `gradient of encoder.0.weight`).
        what: String,
    },

    /// A checkpoint file is unreadable, truncated, corrupted or inconsistent.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the tensor where one is at fault).
        reason: String,
    },

    /// An I/O operation on a checkpoint file failed.
    #[error("checkpoint {}: {op}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operation that failed (`open`, `write`, `rename`, ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The tensor backend reported an error (e.g. an allocation failed).
    #[error("tensor backend: {0}")]
    Backend(String),
}

impl From<dfdx::tensor::CpuError> for NnError {
    fn from(e: dfdx::tensor::CpuError) -> Self {
        NnError::Backend(format!("{e:?}"))
    }
}

/// Result alias of the crate.
pub type Result<T, E = NnError> = std::result::Result<T, E>;

/// Checks that `found == expected`, naming `what` in the error.
pub(crate) fn check_len(
    what: impl FnOnce() -> String,
    expected: usize,
    found: usize,
) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(NnError::Length {
            what: what(),
            expected,
            found,
        })
    }
}

/// `a · b` or an error naming the product (sizes that overflow `usize` are bad input).
pub(crate) fn checked_product(what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| NnError::InvalidArgument {
            what: what.to_string(),
            reason: format!("size {factors:?} overflows"),
        })
}

/// Rejects non-finite values in a data buffer.
pub(crate) fn check_finite<E: crate::Real>(what: &str, v: &[E]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(NnError::InvalidArgument {
            what: what.to_string(),
            reason: format!("value at index {i} is {} (not finite)", v[i]),
        }),
    }
}
