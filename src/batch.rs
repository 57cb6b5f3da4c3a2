//! Named inputs of one step: host slices (uploaded by the step) or the trainer's own device
//! buffers (bound as they are, no copy), and the shapes a plan is built for.

use crate::error::Result;
use crate::tensor::{HostBatch, HostData};
use std::collections::BTreeMap;

/// Element type of a tensor as the trainer hands it over.
///
/// Logits, embeddings and weights are F32. Labels of every kind may also be integers (I32, I64,
/// U32, U64: EasyRec's callers pass int64 clicks) or F64; the plan converts those to what its
/// kernels read in one pass on the GPU (see `docs/ARCHITECTURE.md`, "Label dtypes"). Ids
/// (sessions, items) are any integer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float: logits, labels in [0, 1], weights, probabilities.
    F32,
    /// 32-bit signed integers (labels, class ids, session ids).
    I32,
    /// 32-bit unsigned integers.
    U32,
    /// 64-bit signed integers (PyTorch's and TensorFlow's default integer type).
    I64,
    /// 64-bit unsigned integers.
    U64,
    /// 64-bit floats (labels only).
    F64,
}

impl DType {
    /// Whether the tensor holds integers rather than real values.
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F32 | DType::F64)
    }
    /// Name as used in messages and safetensors.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::I64 => "I64",
            DType::U64 => "U64",
            DType::F64 => "F64",
        }
    }
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::I64 | DType::U64 | DType::F64 => 8,
            _ => 4,
        }
    }
    /// Every dtype a labels role accepts.
    pub const LABELS: [DType; 6] = [
        DType::F32,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::F64,
    ];
    /// Every integer dtype (ids).
    pub const INTEGERS: [DType; 4] = [DType::I32, DType::U32, DType::I64, DType::U64];
}

/// Shape and element type of one named tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Size in bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * self.dtype.size()
    }
}

/// The tensors a plan is built for: name → shape and dtype.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shapes {
    tensors: BTreeMap<String, TensorSpec>,
}

impl Shapes {
    /// No tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor.
    pub fn tensor(mut self, name: impl Into<String>, shape: &[usize], dtype: DType) -> Self {
        self.insert(name, shape, dtype);
        self
    }

    /// Adds a tensor in place.
    pub fn insert(&mut self, name: impl Into<String>, shape: &[usize], dtype: DType) {
        self.tensors.insert(
            name.into(),
            TensorSpec {
                shape: shape.to_vec(),
                dtype,
            },
        );
    }

    /// The tensor's spec.
    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.get(name)
    }

    /// All tensors, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &TensorSpec)> {
        self.tensors.iter()
    }

    /// The shapes of a host batch (reals become F32, ids I32, or I64 when some id does not fit
    /// 32 bits: only session ids may).
    pub fn of_host(batch: &HostBatch) -> Self {
        let mut s = Self::new();
        for (name, t) in batch {
            let dtype = match &t.data {
                HostData::Real(_) => DType::F32,
                HostData::Int(v) if v.iter().any(|&x| i32::try_from(x).is_err()) => DType::I64,
                HostData::Int(_) => DType::I32,
            };
            s.insert(name.clone(), &t.shape, dtype);
        }
        s
    }
}

/// Where one input's values come from.
#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// f32 values on the host, uploaded with `queue.write_buffer`.
    F32(&'a [f32]),
    /// i32 ids on the host.
    I32(&'a [i32]),
    /// u32 ids on the host.
    U32(&'a [u32]),
    /// i64 values on the host (ids, integer labels).
    I64(&'a [i64]),
    /// u64 values on the host (ids, integer labels).
    U64(&'a [u64]),
    /// f64 values on the host (labels).
    F64(&'a [f64]),
    /// A buffer on the plan's device holding the tensor (from offset 0, tightly packed, in the
    /// plan's dtype); it needs `BufferUsages::STORAGE`. Bound directly: no copy.
    Buffer(&'a wgpu::Buffer),
    /// A region of a buffer on the plan's device, from byte `offset` (a multiple of the device's
    /// `min_storage_buffer_offset_alignment`), tightly packed, in the plan's dtype: how a
    /// trainer's tensor sits in its allocator's pooled buffers (Burn's, say). Bound directly: no
    /// copy.
    BufferAt(&'a wgpu::Buffer, u64),
}

impl Input<'_> {
    /// The device buffer and byte offset of a device input (none for a host input).
    pub fn device_buffer(&self) -> Option<(&wgpu::Buffer, u64)> {
        match self {
            Input::Buffer(b) => Some((b, 0)),
            Input::BufferAt(b, offset) => Some((b, *offset)),
            _ => None,
        }
    }
    pub(crate) fn host_dtype(&self) -> Option<DType> {
        match self {
            Input::F32(_) => Some(DType::F32),
            Input::I32(_) => Some(DType::I32),
            Input::U32(_) => Some(DType::U32),
            Input::I64(_) => Some(DType::I64),
            Input::U64(_) => Some(DType::U64),
            Input::F64(_) => Some(DType::F64),
            Input::Buffer(_) | Input::BufferAt(..) => None,
        }
    }
    pub(crate) fn host_len(&self) -> Option<usize> {
        match self {
            Input::F32(v) => Some(v.len()),
            Input::I32(v) => Some(v.len()),
            Input::U32(v) => Some(v.len()),
            Input::I64(v) => Some(v.len()),
            Input::U64(v) => Some(v.len()),
            Input::F64(v) => Some(v.len()),
            Input::Buffer(_) | Input::BufferAt(..) => None,
        }
    }
    pub(crate) fn host_bytes(&self) -> Option<&[u8]> {
        match self {
            Input::F32(v) => Some(bytemuck::cast_slice(v)),
            Input::I32(v) => Some(bytemuck::cast_slice(v)),
            Input::U32(v) => Some(bytemuck::cast_slice(v)),
            Input::I64(v) => Some(bytemuck::cast_slice(v)),
            Input::U64(v) => Some(bytemuck::cast_slice(v)),
            Input::F64(v) => Some(bytemuck::cast_slice(v)),
            Input::Buffer(_) | Input::BufferAt(..) => None,
        }
    }
    /// A host input's values as f64 (none for a device buffer): what the host checks of labels
    /// read, whatever the dtype.
    pub(crate) fn host_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            Input::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Input::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Input::U32(v) => v.iter().map(|&x| x as f64).collect(),
            Input::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Input::U64(v) => v.iter().map(|&x| x as f64).collect(),
            Input::F64(v) => v.to_vec(),
            Input::Buffer(_) | Input::BufferAt(..) => return None,
        })
    }
    /// A host input's values as i64 when it holds integers (u64 above i64::MAX saturate).
    pub(crate) fn host_i64(&self) -> Option<Vec<i64>> {
        Some(match self {
            Input::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Input::U32(v) => v.iter().map(|&x| x as i64).collect(),
            Input::I64(v) => v.to_vec(),
            Input::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).unwrap_or(i64::MAX))
                .collect(),
            _ => return None,
        })
    }
}

/// The named tensors of one step.
#[derive(Clone, Debug, Default)]
pub struct Batch<'a> {
    inputs: BTreeMap<String, Input<'a>>,
}

impl<'a> Batch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds f32 values from the host.
    pub fn tensor(mut self, name: impl Into<String>, values: &'a [f32]) -> Self {
        self.inputs.insert(name.into(), Input::F32(values));
        self
    }
    /// Adds i32 ids from the host.
    pub fn ids(mut self, name: impl Into<String>, values: &'a [i32]) -> Self {
        self.inputs.insert(name.into(), Input::I32(values));
        self
    }
    /// Adds u32 ids from the host.
    pub fn ids_u32(mut self, name: impl Into<String>, values: &'a [u32]) -> Self {
        self.inputs.insert(name.into(), Input::U32(values));
        self
    }
    /// Adds i64 values from the host (ids, integer labels).
    pub fn ids_i64(mut self, name: impl Into<String>, values: &'a [i64]) -> Self {
        self.inputs.insert(name.into(), Input::I64(values));
        self
    }
    /// Adds u64 values from the host (ids, integer labels).
    pub fn ids_u64(mut self, name: impl Into<String>, values: &'a [u64]) -> Self {
        self.inputs.insert(name.into(), Input::U64(values));
        self
    }
    /// Adds f64 values from the host (labels).
    pub fn tensor_f64(mut self, name: impl Into<String>, values: &'a [f64]) -> Self {
        self.inputs.insert(name.into(), Input::F64(values));
        self
    }
    /// Binds the trainer's own buffer (no copy).
    pub fn buffer(mut self, name: impl Into<String>, buffer: &'a wgpu::Buffer) -> Self {
        self.inputs.insert(name.into(), Input::Buffer(buffer));
        self
    }
    /// Binds a region of the trainer's own buffer from byte `offset` (no copy); see
    /// [`Input::BufferAt`].
    pub fn buffer_at(
        mut self,
        name: impl Into<String>,
        buffer: &'a wgpu::Buffer,
        offset: u64,
    ) -> Self {
        self.inputs
            .insert(name.into(), Input::BufferAt(buffer, offset));
        self
    }
    /// Adds any input.
    pub fn input(mut self, name: impl Into<String>, input: Input<'a>) -> Self {
        self.inputs.insert(name.into(), input);
        self
    }
    /// The input for a name.
    pub fn get(&self, name: &str) -> Option<&Input<'a>> {
        self.inputs.get(name)
    }
    /// Names of all inputs.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.inputs.keys()
    }
}

/// A host batch converted to the values the GPU reads (reals to f32, ids to i32, or kept as i64
/// when some id does not fit 32 bits, as [`Shapes::of_host`] says); keeps the storage alive for a
/// [`Batch`] that borrows it.
#[derive(Clone, Debug, Default)]
pub struct OwnedBatch {
    reals: BTreeMap<String, Vec<f32>>,
    ids: BTreeMap<String, Vec<i32>>,
    wide_ids: BTreeMap<String, Vec<i64>>,
}

impl OwnedBatch {
    /// Converts to the GPU's types: reals to f32 (a finite value outside f32's range is an
    /// error naming the tensor and element, not a silent ±Inf), ids to i32 (ids outside the i32
    /// range stay i64).
    pub fn from_host(batch: &HostBatch) -> Result<Self> {
        let mut out = Self::default();
        for (name, t) in batch {
            match &t.data {
                HostData::Real(v) => {
                    let narrowed: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    let overflow = v
                        .iter()
                        .zip(&narrowed)
                        .position(|(x, y)| x.is_finite() && !y.is_finite());
                    if let Some(i) = overflow {
                        return Err(crate::error::Error::tensor(
                            name,
                            None,
                            format!(
                                "element {i} holds {:e}, outside the range of f32 (±3.4e38) \
                                 that the GPU computes in",
                                v[i]
                            ),
                        ));
                    }
                    out.reals.insert(name.clone(), narrowed);
                }
                HostData::Int(v) => match v.iter().map(|&x| i32::try_from(x)).collect() {
                    Ok(ids) => {
                        out.ids.insert(name.clone(), ids);
                    }
                    Err(_) => {
                        out.wide_ids.insert(name.clone(), v.clone());
                    }
                },
            }
        }
        Ok(out)
    }

    /// Adds (or replaces) an f32 tensor.
    pub fn insert_real(&mut self, name: impl Into<String>, values: Vec<f32>) {
        self.reals.insert(name.into(), values);
    }

    /// Adds (or replaces) an i32 id tensor.
    pub fn insert_ids(&mut self, name: impl Into<String>, values: Vec<i32>) {
        self.ids.insert(name.into(), values);
    }

    /// A batch borrowing these values.
    pub fn batch(&self) -> Batch<'_> {
        let mut b = Batch::new();
        for (n, v) in &self.reals {
            b = b.tensor(n.clone(), v);
        }
        for (n, v) in &self.ids {
            b = b.ids(n.clone(), v);
        }
        for (n, v) in &self.wide_ids {
            b = b.ids_i64(n.clone(), v);
        }
        b
    }
}
