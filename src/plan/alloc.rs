//! The plan's internal buffers as requests (label, bytes, use, initial contents), made on the
//! device only once the whole plan is known to fit the adapter: a plan that is refused allocates
//! nothing.

use crate::error::{Error, Result};

/// What a buffer is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usage {
    /// Read and written by kernels, copied to and from (most buffers).
    Storage,
    /// Read by kernels, written by the host only (settings, the term table, kernel parameters).
    Constant,
}

impl Usage {
    pub(crate) fn wgpu(self) -> wgpu::BufferUsages {
        match self {
            Usage::Storage => storage_usage(),
            Usage::Constant => wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        }
    }
}

/// The usage of storage buffers the plan reads, writes and copies.
pub(crate) fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC
}

/// The bytes a buffer of `size` bytes is made with: at least 16 (bindings must not be empty), a
/// multiple of 4.
pub(crate) fn padded(size: u64) -> u64 {
    size.max(16).next_multiple_of(4)
}

/// One internal buffer to make.
#[derive(Clone, Debug)]
pub(crate) struct BufferRequest {
    pub label: String,
    /// Bytes the plan uses (the buffer is [`padded`]).
    pub size: u64,
    pub usage: Usage,
    /// Written once when the buffer is made (class weights, settings, the term table).
    pub init: Option<Vec<u8>>,
}

impl BufferRequest {
    /// Makes the buffer and writes its initial contents.
    pub(crate) fn create(&self, device: &wgpu::Device, queue: &wgpu::Queue) -> wgpu::Buffer {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&self.label),
            size: padded(self.size),
            usage: self.usage.wgpu(),
            mapped_at_creation: false,
        });
        if let Some(bytes) = &self.init {
            queue.write_buffer(&buffer, 0, bytes);
        }
        buffer
    }
}

/// The internal buffers requested so far; a buffer's index is its place in the list.
#[derive(Debug)]
pub(crate) struct Buffers {
    pub requests: Vec<BufferRequest>,
    max_buffer: u64,
}

impl Buffers {
    /// No buffers yet, none larger than `max_buffer` bytes allowed.
    pub(crate) fn new(max_buffer: u64) -> Self {
        Self {
            requests: Vec::new(),
            max_buffer,
        }
    }

    /// A storage buffer of `size` bytes; returns its index.
    pub(crate) fn storage(&mut self, label: impl Into<String>, size: u64) -> Result<usize> {
        self.request(label.into(), size, Usage::Storage, None)
    }

    /// A buffer kernels only read, holding `bytes`.
    pub(crate) fn constant(&mut self, label: impl Into<String>, bytes: Vec<u8>) -> Result<usize> {
        self.request(
            label.into(),
            bytes.len() as u64,
            Usage::Constant,
            Some(bytes),
        )
    }

    /// A storage buffer initialised with `bytes`.
    pub(crate) fn storage_with(
        &mut self,
        label: impl Into<String>,
        bytes: Vec<u8>,
    ) -> Result<usize> {
        self.request(
            label.into(),
            bytes.len() as u64,
            Usage::Storage,
            Some(bytes),
        )
    }

    /// Sets the size of buffer `index` (known only once the passes are laid out).
    pub(crate) fn resize(&mut self, index: usize, size: u64) -> Result<()> {
        check_size(&self.requests[index].label, size, self.max_buffer)?;
        self.requests[index].size = size;
        Ok(())
    }

    /// Replaces the initial contents of buffer `index`.
    pub(crate) fn set_init(&mut self, index: usize, bytes: Vec<u8>) {
        self.requests[index].size = bytes.len() as u64;
        self.requests[index].init = Some(bytes);
    }

    fn request(
        &mut self,
        label: String,
        size: u64,
        usage: Usage,
        init: Option<Vec<u8>>,
    ) -> Result<usize> {
        check_size(&label, size, self.max_buffer)?;
        self.requests.push(BufferRequest {
            label,
            size,
            usage,
            init,
        });
        Ok(self.requests.len() - 1)
    }
}

/// Refuses a buffer larger than the adapter's largest.
pub(crate) fn check_size(label: &str, size: u64, max_buffer: u64) -> Result<()> {
    if size > max_buffer {
        return Err(Error::Unsupported(format!(
            "buffer '{label}' needs {size} bytes, the adapter's largest buffer is {max_buffer}"
        )));
    }
    Ok(())
}

/// What the build needs to know of the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Storage buffers one kernel may bind.
    pub max_storage_buffers: u32,
    /// Bytes of the largest buffer.
    pub max_buffer: u64,
    /// Bytes one storage binding may cover (a multiple of `align`).
    pub max_binding: u64,
    /// Alignment of a binding's offset.
    pub align: u64,
    /// Workgroups per grid dimension.
    pub max_grid: u32,
    /// Bytes of workgroup memory.
    pub workgroup_bytes: u64,
    /// Whether the embedding sweeps stage rows through workgroup memory (all backends but GL:
    /// GL llvmpipe takes minutes to compile a tile loop inside a loop with barriers).
    pub tiled: bool,
    /// Whether the adapter is a CPU (software) one: the retrieval sweeps hold
    /// `losses::embedding::block_rows` rows per invocation there.
    pub cpu: bool,
    /// `EngineOptions::sweep_block_rows`.
    pub block_rows: Option<u32>,
}

/// The internal buffers every plan has, by index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Core {
    pub partials: usize,
    pub scalars: usize,
    pub state: usize,
    pub settings: usize,
    pub term_table: usize,
    pub aux: usize,
}

/// Whether `buffer` can be bound on the engine's device: binds its first word alone, in an error
/// scope. A buffer of another device is a validation error; one of another wgpu instance makes
/// wgpu look its id up in the wrong tables and panic, which is caught (the panic hook still
/// prints it) and turned into the error.
pub(crate) fn probe_device(
    engine: &crate::engine::EngineInner,
    buffer: &wgpu::Buffer,
) -> std::result::Result<(), String> {
    let Some(size) = wgpu::BufferSize::new(buffer.size().min(4)) else {
        return Ok(());
    };
    let device = &engine.device;
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("probe"),
        entries: &[wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: true },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }],
    });
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("probe"),
            layout: &layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: 0,
                    size: Some(size),
                }),
            }],
        })
    }));
    let error = pollster::block_on(scope.pop());
    match (made, error) {
        (Err(_), _) => Err(
            "the buffer belongs to another wgpu instance than the plan's device \
                            (create input buffers on the engine's device)"
                .into(),
        ),
        (Ok(_), Some(e)) => Err(format!(
            "the buffer cannot be bound on the plan's device: {e}"
        )),
        (Ok(_), None) => Ok(()),
    }
}
