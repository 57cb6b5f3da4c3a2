//! Burn tensors as wgpu buffers: a fusion tensor resolved to its cubecl tensor (the pending fused
//! work that produces it runs first), made contiguous, and its storage resource (buffer and byte
//! offset in cubecl's memory pool) taken, kept alive until lossfuse's step is submitted.

use burn::backend::ops::FloatTensorOps;
use burn::backend::{DType, FloatDType, Shape, TensorMetadata};
use burn_cubecl::cubecl::wgpu::{AutoCompiler, WgpuResource, WgpuServer};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{Cube, CubeBackend};
use cubecl::server::Handle;
use cubecl_runtime::storage::ManagedResource;
use lossfuse::{Error, Result};

/// A float or int primitive of Burn's wgpu backend (fusion on).
pub(crate) type FusionPrimitive = burn::backend::tensor::FloatTensor<Cube>;

/// A Burn tensor bound for one step: its cubecl tensor (holding the memory) and the resource.
pub(crate) struct BoundTensor {
    pub cube: CubeTensor,
    pub resource: ManagedResource<WgpuResource>,
}

impl BoundTensor {
    /// The wgpu buffer and the tensor's byte offset in it.
    pub fn buffer(&self) -> (&lossfuse::wgpu::Buffer, u64) {
        let r = self.resource.resource();
        (&r.buffer, r.offset)
    }
}

fn burn_error(tensor: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tensor {
        tensor: tensor.to_string(),
        term: None,
        message: format!("{what}: {e}"),
    }
}

/// Resolves a float (`int = false`) or int fusion tensor and takes its storage.
pub(crate) fn bind(name: &str, tensor: FusionPrimitive, int: bool) -> Result<BoundTensor> {
    let client = tensor.client.clone();
    let cube = match int {
        false => client.resolve_tensor_float::<CubeBackend>(tensor),
        true => client.resolve_tensor_int::<CubeBackend>(tensor),
    }
    .map_err(|e| burn_error(name, "Burn could not produce the tensor", e))?;
    let cube = into_contiguous(cube);
    let resource = resource_of(name, &cube, cube.handle.clone())?;
    Ok(BoundTensor { cube, resource })
}

fn resource_of(
    name: &str,
    cube: &CubeTensor,
    handle: Handle,
) -> Result<ManagedResource<WgpuResource>> {
    cube.client
        .get_resource::<WgpuServer<AutoCompiler>>(handle)
        .map_err(|e| {
            burn_error(
                name,
                "not a tensor of Burn's wgpu backend (lossfuse binds wgpu buffers)",
                e,
            )
        })
}

/// Submits the work Burn has queued, so that the tensors lossfuse reads are written before its
/// step (one queue: what is submitted first runs first).
pub(crate) fn flush(bound: &BoundTensor) -> Result<()> {
    bound
        .cube
        .client
        .flush()
        .map_err(|e| Error::Gpu(format!("Burn could not submit its queued work: {e}")))
}

/// A new f32 fusion tensor of `shape` on `like`'s device, and its storage to write into.
pub(crate) fn empty_f32(
    name: &str,
    like: &CubeTensor,
    shape: Shape,
) -> Result<(FusionPrimitive, BoundTensor)> {
    let out = <Cube as FloatTensorOps<Cube>>::float_empty(shape, &like.device, FloatDType::F32);
    let bound = bind(name, out.clone(), false)?;
    debug_assert_eq!(out.dtype(), DType::F32);
    Ok((out, bound))
}
