//! The engine: one device (owned, or borrowed from the trainer), its limits, and the pipeline
//! cache shared by every plan built on it.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What `lossfuse adapters` prints and what conformance reports carry about an adapter.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdapterSummary {
    /// Adapter name as the driver reports it.
    pub name: String,
    /// Vulkan, Gl, Metal, Dx12.
    pub backend: String,
    /// Cpu, DiscreteGpu, IntegratedGpu, ...
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Smallest and largest subgroup size (0 when unknown).
    pub subgroup_sizes: (u32, u32),
    /// Largest storage binding in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer in bytes.
    pub max_buffer: u64,
    /// Storage buffers one compute stage may bind.
    pub max_storage_buffers_per_stage: u32,
    /// Largest workgroup count in one dimension.
    pub max_workgroups_per_dimension: u32,
    /// Largest number of invocations in one workgroup.
    pub max_invocations_per_workgroup: u32,
    /// Workgroup memory in bytes.
    pub max_workgroup_storage: u32,
    /// Whether timestamp queries are supported.
    pub timestamps: bool,
}

impl AdapterSummary {
    fn new(info: &wgpu::AdapterInfo, limits: &wgpu::Limits, features: wgpu::Features) -> Self {
        Self {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
            ..Self::of_limits(limits, features)
        }
    }

    /// A summary with only the limits known (a trainer's device, whose adapter we do not see).
    fn of_limits(limits: &wgpu::Limits, features: wgpu::Features) -> Self {
        Self {
            name: "trainer device".into(),
            backend: "external".into(),
            device_type: "external".into(),
            driver: String::new(),
            subgroup_sizes: (0, 0),
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        }
    }

    /// A label that tells adapters apart when two share a name (lavapipe and llvmpipe do).
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.backend)
    }
}

/// Options for building an engine.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Caps the bytes one storage binding may cover below the adapter's own limit, so that the
    /// splitting of large tensors can be exercised on adapters with huge limits.
    pub max_binding_bytes: Option<u64>,
}

/// A compute pipeline and the buffer variables its entry point binds.
#[derive(Clone)]
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub bindings: Arc<Vec<crate::wgsl::UsedBinding>>,
}

pub(crate) struct EngineInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub summary: AdapterSummary,
    pub options: EngineOptions,
    pipelines: Mutex<HashMap<String, Pipeline>>,
    /// Errors the device reported outside an error scope (instead of wgpu's default panic).
    pub uncaptured: Arc<Mutex<Vec<String>>>,
}

impl EngineInner {
    /// Largest bytes one storage binding may cover.
    pub fn max_binding(&self) -> u64 {
        let adapter = self.limits.max_storage_buffer_binding_size;
        let cap = self.options.max_binding_bytes.unwrap_or(adapter);
        // Round down to the offset alignment so that chunk boundaries stay aligned.
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        (cap.min(adapter) / align * align).max(align)
    }

    /// A compute pipeline for (source, entry), built once per engine, with the buffer variables
    /// the entry point uses (their names and binding indices, from naga's reflection).
    pub fn pipeline(&self, label: &str, source: &str, entry: &str) -> Result<Pipeline> {
        let key = format!("{entry}\u{0}{source}");
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let bindings =
            Arc::new(crate::wgsl::used_bindings(label, source, entry).map_err(Error::Gpu)?);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("pipeline '{label}': {e}")));
        }
        let pipeline = Pipeline { pipeline, bindings };
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Takes the errors reported outside error scopes since the last call.
    pub fn take_uncaptured(&self) -> Option<String> {
        let mut v = self.uncaptured.lock().unwrap();
        if v.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut *v).join("; "))
        }
    }
}

/// A GPU device ready to build loss plans. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

const NO_ADAPTER_HELP: &str = "no GPU adapter found. On Debian/Ubuntu install Mesa's software \
drivers: `apt-get update && apt-get install -y mesa-vulkan-drivers libegl1 libgl1-mesa-dri` \
(Vulkan lavapipe and GL llvmpipe)";

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::all();
    }
    wgpu::Instance::new(desc)
}

impl Engine {
    /// The adapter named by `LOSSFUSE_ADAPTER` (a case-insensitive substring of "name (backend)",
    /// e.g. `vulkan`, `gl`, `llvmpipe`), else the default high-performance adapter; `WGPU_BACKEND`
    /// restricts the backends searched.
    pub fn new() -> Result<Self> {
        Self::with_options(EngineOptions::default())
    }

    /// As [`Engine::new`], with options.
    pub fn with_options(options: EngineOptions) -> Result<Self> {
        match std::env::var("LOSSFUSE_ADAPTER") {
            Ok(name) if !name.is_empty() => Self::with_adapter(&name, options),
            _ => {
                let instance = instance();
                let adapter =
                    pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                        power_preference: wgpu::PowerPreference::HighPerformance,
                        ..Default::default()
                    }))
                    .map_err(|e| Error::Adapter(format!("{NO_ADAPTER_HELP} ({e})")))?;
                Self::from_adapter(&adapter, options)
            }
        }
    }

    /// The first adapter whose "name (backend)" contains `name`, case-insensitively.
    pub fn with_adapter(name: &str, options: EngineOptions) -> Result<Self> {
        let adapters = Self::enumerate();
        if adapters.is_empty() {
            return Err(Error::Adapter(NO_ADAPTER_HELP.into()));
        }
        let needle = name.to_lowercase();
        let found = adapters.iter().find(|a| {
            let info = a.get_info();
            format!("{} ({:?})", info.name, info.backend)
                .to_lowercase()
                .contains(&needle)
        });
        match found {
            Some(a) => Self::from_adapter(a, options),
            None => Err(Error::Adapter(format!(
                "no adapter matches '{name}'; found: {}",
                adapters
                    .iter()
                    .map(|a| {
                        let i = a.get_info();
                        format!("{} ({:?})", i.name, i.backend)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Every adapter the machine has, on every backend (restricted by `WGPU_BACKEND`).
    pub fn enumerate() -> Vec<wgpu::Adapter> {
        let instance = instance();
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        // Browser-only and software-fallback duplicates are not distinct adapters for us.
        adapters.retain(|a| a.get_info().backend != wgpu::Backend::Noop);
        adapters
    }

    /// Summaries of every adapter, for `lossfuse adapters` and reports.
    pub fn adapters() -> Vec<AdapterSummary> {
        Self::enumerate()
            .iter()
            .map(|a| AdapterSummary::new(&a.get_info(), &a.limits(), a.features()))
            .collect()
    }

    /// An engine on every adapter found, one each (for tests and conformance runs).
    pub fn all(options: EngineOptions) -> Result<Vec<Self>> {
        let adapters = Self::enumerate();
        if adapters.is_empty() {
            return Err(Error::Adapter(NO_ADAPTER_HELP.into()));
        }
        adapters
            .iter()
            .map(|a| Self::from_adapter(a, options.clone()))
            .collect()
    }

    /// Opens a device on `adapter` with the adapter's own limits (not wgpu's defaults).
    pub fn from_adapter(adapter: &wgpu::Adapter, options: EngineOptions) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("lossfuse"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Adapter(format!("cannot open {}: {e}", info.name)))?;
        let summary = AdapterSummary::new(&info, &limits, features);
        Ok(Self::build(device, queue, summary, options, true))
    }

    /// Runs inside a trainer that owns its device: plans use `device` and `queue` as they are.
    /// The device's limits are read back from it; its uncaptured-error handler is left alone.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let limits = device.limits();
        let summary = AdapterSummary::of_limits(&limits, device.features());
        Ok(Self::build(
            device,
            queue,
            summary,
            EngineOptions::default(),
            false,
        ))
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        summary: AdapterSummary,
        options: EngineOptions,
        owned: bool,
    ) -> Self {
        let limits = device.limits();
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        if owned {
            // wgpu's default handler panics; a library must not, so record and report instead.
            let sink = uncaptured.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                sink.lock().unwrap().push(e.to_string());
            }));
        }
        Self {
            inner: Arc::new(EngineInner {
                device,
                queue,
                limits,
                summary,
                options,
                pipelines: Mutex::new(HashMap::new()),
                uncaptured,
            }),
        }
    }

    /// The device plans run on.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The queue steps are submitted to.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// What this adapter is and its key limits.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.inner.summary
    }

    /// Measures the adapter's buffer-to-buffer copy bandwidth in bytes per second
    /// (copies of `bytes`, median of `repeats`); the yardstick of `lossfuse bench`.
    pub fn copy_bandwidth(&self, bytes: u64, repeats: usize) -> f64 {
        let d = &self.inner.device;
        let bytes = bytes.min(self.inner.limits.max_buffer_size) / 4 * 4;
        let make = |usage| {
            d.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bandwidth"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        let src = make(wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST);
        let dst = make(wgpu::BufferUsages::COPY_DST);
        let mut times = Vec::new();
        for i in 0..repeats + 1 {
            let mut enc = d.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
            let t = std::time::Instant::now();
            self.inner.queue.submit([enc.finish()]);
            let _ = d.poll(wgpu::PollType::wait_indefinitely());
            if i > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        // A copy reads and writes every byte.
        2.0 * bytes as f64 / times[times.len() / 2].max(1e-9)
    }
}
