//! safetensors files <-> host tensors: reading a batch (F32/F64 reals, I32/I64/U32/U64 ids) and
//! writing the f32 results of `lossfuse eval`.

use crate::error::{CliError, CliResult};
use lossfuse::{HostBatch, HostTensor};
use safetensors::tensor::{Dtype, TensorView, View};
use safetensors::SafeTensors;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads every tensor of a safetensors file. Reals (F32, F64) become [`lossfuse::HostData::Real`],
/// ids (I32, I64, U32, U64) [`lossfuse::HostData::Int`]; any other dtype is an error naming the
/// tensor.
pub fn read_batch(path: &Path) -> CliResult<HostBatch> {
    let bytes = std::fs::read(path).map_err(|e| CliError::file(path, e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| CliError::file(path, format!("not a valid safetensors file: {e}")))?;
    let mut batch = HostBatch::new();
    for (name, view) in file.tensors() {
        let tensor = host_tensor(&name, &view)?;
        batch.insert(name, tensor);
    }
    Ok(batch)
}

fn tensor_error(name: &str, message: String) -> CliError {
    CliError::Lib(lossfuse::Error::Tensor {
        tensor: name.to_string(),
        term: None,
        message,
    })
}

fn words<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(|c| {
        let mut w = [0u8; N];
        w.copy_from_slice(c);
        w
    })
}

/// Converts one safetensors tensor (little-endian) to a host tensor.
pub fn host_tensor(name: &str, view: &TensorView<'_>) -> CliResult<HostTensor> {
    let shape = view.shape().to_vec();
    let data = view.data();
    let tensor = match view.dtype() {
        Dtype::F32 => HostTensor::real(
            shape,
            words::<4>(data)
                .map(|w| f32::from_le_bytes(w) as f64)
                .collect(),
        ),
        Dtype::F64 => HostTensor::real(shape, words::<8>(data).map(f64::from_le_bytes).collect()),
        Dtype::I32 => HostTensor::int(
            shape,
            words::<4>(data)
                .map(|w| i32::from_le_bytes(w) as i64)
                .collect(),
        ),
        Dtype::U32 => HostTensor::int(
            shape,
            words::<4>(data)
                .map(|w| u32::from_le_bytes(w) as i64)
                .collect(),
        ),
        Dtype::I64 => HostTensor::int(shape, words::<8>(data).map(i64::from_le_bytes).collect()),
        Dtype::U64 => {
            let mut ids = Vec::with_capacity(data.len() / 8);
            for (i, w) in words::<8>(data).enumerate() {
                let v = u64::from_le_bytes(w);
                ids.push(i64::try_from(v).map_err(|_| {
                    tensor_error(
                        name,
                        format!("U64 id {v} at element {i} does not fit in i64"),
                    )
                })?);
            }
            HostTensor::int(shape, ids)
        }
        other => {
            return Err(tensor_error(
                name,
                format!(
                    "unsupported dtype {other:?}; use F32 or F64 for real values and \
                     I32, I64, U32 or U64 for ids"
                ),
            ))
        }
    };
    Ok(tensor)
}

/// An f32 tensor to be written: shape and row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct OutTensor {
    /// Dimensions; `[]` for a scalar.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl OutTensor {
    /// A scalar (shape `[]`).
    pub fn scalar(value: f32) -> Self {
        Self {
            shape: Vec::new(),
            values: vec![value],
        }
    }
}

impl View for &OutTensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.values.len() * 4
    }
}

/// Writes named f32 tensors to a safetensors file.
pub fn write_tensors(path: &Path, tensors: &BTreeMap<String, OutTensor>) -> CliResult<()> {
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| CliError::file(path, format!("cannot serialise: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| CliError::file(path, e))
}

/// A host tensor as safetensors sees it: reals as F32 (what the GPU reads), ids as I64.
struct HostView<'a>(&'a HostTensor);

impl View for HostView<'_> {
    fn dtype(&self) -> Dtype {
        match self.0.data {
            lossfuse::HostData::Real(_) => Dtype::F32,
            lossfuse::HostData::Int(_) => Dtype::I64,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(match &self.0.data {
            lossfuse::HostData::Real(v) => {
                v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
            }
            lossfuse::HostData::Int(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }
    fn data_len(&self) -> usize {
        match &self.0.data {
            lossfuse::HostData::Real(v) => v.len() * 4,
            lossfuse::HostData::Int(v) => v.len() * 8,
        }
    }
}

/// Writes a batch of host tensors to a safetensors file (reals F32, ids I64).
pub fn write_batch(path: &Path, batch: &HostBatch) -> CliResult<()> {
    let views = batch.iter().map(|(k, v)| (k.as_str(), HostView(v)));
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| CliError::file(path, format!("cannot serialise: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| CliError::file(path, e))
}
