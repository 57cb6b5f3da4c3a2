//! Host-side tensors: what the CPU reference and the CLI exchange, and what a batch can be built
//! from. Reals are f64 on the host (the reference's precision); ids are i64.

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// The values of a host tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// Real values (logits, labels in [0, 1], weights, probabilities).
    Real(Vec<f64>),
    /// Integer ids (class ids, session ids, item ids).
    Int(Vec<i64>),
}

/// A named input on the host: row-major values and a shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first; `[]` is a scalar.
    pub shape: Vec<usize>,
    /// Row-major values; `shape.iter().product()` of them.
    pub data: HostData,
}

impl HostTensor {
    /// A real tensor.
    pub fn real(shape: impl Into<Vec<usize>>, data: Vec<f64>) -> Self {
        Self {
            shape: shape.into(),
            data: HostData::Real(data),
        }
    }

    /// An integer tensor.
    pub fn int(shape: impl Into<Vec<usize>>, data: Vec<i64>) -> Self {
        Self {
            shape: shape.into(),
            data: HostData::Int(data),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            HostData::Real(v) => v.len(),
            HostData::Int(v) => v.len(),
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The real values, or an error naming the tensor.
    pub fn reals(&self, name: &str, term: Option<&str>) -> Result<&[f64]> {
        match &self.data {
            HostData::Real(v) => Ok(v),
            HostData::Int(_) => Err(Error::tensor(
                name,
                term,
                "expected a real (F32/F64) tensor, got integer ids",
            )),
        }
    }

    /// The values as f32, as the GPU sees them (ids converted exactly when |id| < 2^24).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::Real(v) => v.iter().map(|&x| x as f32).collect(),
            HostData::Int(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The same tensor rounded to f32 precision, so that the reference sees exactly the GPU's input.
    pub fn rounded_to_f32(&self) -> Self {
        match &self.data {
            HostData::Real(v) => Self::real(
                self.shape.clone(),
                v.iter().map(|&x| x as f32 as f64).collect(),
            ),
            HostData::Int(_) => self.clone(),
        }
    }
}

/// A batch of named host tensors.
pub type HostBatch = BTreeMap<String, HostTensor>;
