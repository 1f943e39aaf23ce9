//! Uniform access to parameter tensors of run-time shape (matrices and vectors): reading values
//! and gradients, replacing values, and applying dfdx's Adam kernel.

use dfdx::prelude::*;

use crate::error::Result;
use crate::named::NamedTensor;
use crate::real::{Buf, Dev, Mat, Real, Vector};

/// A shared reference to one parameter tensor.
pub(crate) enum ParamRef<'a, E: Real> {
    Mat(&'a Mat<E>),
    Vec(&'a Vector<E>),
}

/// A mutable reference to one parameter tensor.
pub(crate) enum ParamMut<'a, E: Real> {
    Mat(&'a mut Mat<E>),
    Vec(&'a mut Vector<E>),
}

impl<E: Real> ParamRef<'_, E> {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            ParamRef::Mat(t) => {
                let (r, c) = *t.shape();
                vec![r, c]
            }
            ParamRef::Vec(t) => vec![t.shape().0],
        }
    }

    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn values(&self) -> Vec<E> {
        match self {
            ParamRef::Mat(t) => t.as_vec(),
            ParamRef::Vec(t) => t.as_vec(),
        }
    }

    pub fn named(&self, name: &str) -> NamedTensor<E> {
        NamedTensor {
            name: name.to_string(),
            shape: self.shape(),
            data: self.values(),
        }
    }

    /// Adds this parameter's gradient in `grads` (zero if it took no part) to `acc`.
    pub fn add_grad_to(&self, grads: &mut Gradients<E, Dev<E>>, acc: &mut [E]) -> Result<()> {
        let g: &Buf<E> = match self {
            ParamRef::Mat(t) => grads.get_or_alloc_mut(*t)?,
            ParamRef::Vec(t) => grads.get_or_alloc_mut(*t)?,
        };
        for (a, &v) in acc.iter_mut().zip(g.iter()) {
            *a += v;
        }
        Ok(())
    }
}

impl<E: Real> ParamMut<'_, E> {
    /// One Adam step with dfdx's own kernel; `grad` is the gradient of the loss to minimise.
    pub fn adam_update(
        &mut self,
        cfg: &AdamConfig,
        t: i32,
        m: &mut Buf<E>,
        v: &mut Buf<E>,
        grad: &Buf<E>,
    ) -> Result<()> {
        match self {
            ParamMut::Mat(p) => cfg.try_update(t, *p, m, v, grad)?,
            ParamMut::Vec(p) => cfg.try_update(t, *p, m, v, grad)?,
        }
        Ok(())
    }
}

/// A matrix parameter from row-major values (the caller has checked the length).
pub(crate) fn mat_from<E: Real>(rows: usize, cols: usize, data: Vec<E>) -> Result<Mat<E>> {
    Ok(Dev::<E>::default().try_tensor_from_vec(data, (rows, cols))?)
}

/// A vector parameter (the caller has checked the length).
pub(crate) fn vec_from<E: Real>(data: Vec<E>) -> Result<Vector<E>> {
    let n = data.len();
    Ok(Dev::<E>::default().try_tensor_from_vec(data, (n,))?)
}
