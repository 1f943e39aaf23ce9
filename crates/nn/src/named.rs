//! Named tensors: the interchange format between models, optimizer state and checkpoint files,
//! with a lookup helper that reports missing, extra and mis-shaped tensors by name.

use std::collections::BTreeMap;

use crate::error::{NnError, Result};
use crate::real::Real;

/// A named, row-major tensor (`data.len()` = product of `shape`; `shape = []` is a scalar).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor<E = f32> {
    /// Dotted name, e.g. `encoder.0.weight`.
    pub name: String,
    /// Shape; weights are `[in, out]`.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<E>,
}

impl<E: Real> NamedTensor<E> {
    /// Creates a tensor, checking that `data` matches `shape`.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<E>) -> Result<Self> {
        let name = name.into();
        let numel = numel(&shape).ok_or_else(|| NnError::BadTensor {
            name: name.clone(),
            reason: format!("shape {shape:?} overflows"),
        })?;
        if numel != data.len() {
            return Err(NnError::BadTensor {
                name,
                reason: format!(
                    "shape {shape:?} needs {numel} values, data has {}",
                    data.len()
                ),
            });
        }
        Ok(Self { name, shape, data })
    }

    /// The same tensor in another precision.
    pub fn cast<F: Real>(&self) -> NamedTensor<F> {
        NamedTensor {
            name: self.name.clone(),
            shape: self.shape.clone(),
            data: self.data.iter().map(|v| F::of_f64(v.as_f64())).collect(),
        }
    }
}

/// Number of elements of a shape, `None` on overflow.
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

/// Looks tensors up by name within one namespace and reports what was never asked for.
pub(crate) struct Lookup<'a, E> {
    by_name: BTreeMap<&'a str, &'a NamedTensor<E>>,
}

impl<'a, E: Real> Lookup<'a, E> {
    /// Indexes the tensors accepted by `owns` (a namespace test); duplicate names are errors.
    pub fn new(tensors: &'a [NamedTensor<E>], owns: impl Fn(&str) -> bool) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        for t in tensors.iter().filter(|t| owns(&t.name)) {
            if by_name.insert(t.name.as_str(), t).is_some() {
                return Err(NnError::BadTensor {
                    name: t.name.clone(),
                    reason: "appears more than once".into(),
                });
            }
        }
        Ok(Self { by_name })
    }

    /// Removes and returns the values of `name`, which must have shape `shape`, consistent
    /// data and only finite values.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<&'a [E]> {
        let t = self
            .by_name
            .remove(name)
            .ok_or_else(|| NnError::MissingTensor {
                name: name.to_string(),
                expected: shape.to_vec(),
            })?;
        if t.shape != shape {
            return Err(NnError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        if numel(&t.shape) != Some(t.data.len()) {
            return Err(NnError::BadTensor {
                name: name.to_string(),
                reason: format!(
                    "shape {:?} does not match its {} values",
                    t.shape,
                    t.data.len()
                ),
            });
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(NnError::BadTensor {
                name: name.to_string(),
                reason: format!("value at index {i} is {} (not finite)", t.data[i]),
            });
        }
        Ok(&t.data)
    }

    /// Fails on the first (by name) tensor that was never taken.
    pub fn finish(self, context: &str) -> Result<()> {
        match self.by_name.into_keys().next() {
            None => Ok(()),
            Some(name) => Err(NnError::UnexpectedTensor {
                name: name.to_string(),
                context: context.to_string(),
            }),
        }
    }
}
