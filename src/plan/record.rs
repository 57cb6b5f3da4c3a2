//! The device side of a plan's passes: pipelines, per-dispatch parameter buffers, bind groups
//! (rebuilt only when the batch's buffers change), recording into the step's one compute pass,
//! and the optional timestamps around every pass.

use super::alloc::{padded, Usage};
use super::chunking::{Dispatch, PassBlueprint};
use crate::engine::{EngineInner, Pipeline};
use crate::error::{Error, Result};
use crate::kernel::{Bind, PassSpec, Source};
use crate::report::StepCounters;
use std::collections::BTreeMap;

/// A pipeline with its dispatches, their parameter buffers and (cached) bind groups.
pub(crate) struct Pass {
    pub spec: PassSpec,
    /// The composed WGSL.
    pub source: String,
    pipeline: Pipeline,
    pub dispatches: Vec<Dispatch>,
    /// Recorded only when this tensor comes as a device buffer (a GPU value check).
    pub device_only: Option<String>,
    params: Vec<Option<wgpu::Buffer>>,
    bind_groups: Vec<wgpu::BindGroup>,
}

impl Pass {
    /// Compiles the pass, checks that it binds every buffer variable its entry point uses, and
    /// makes its parameter buffers.
    pub(crate) fn new(engine: &EngineInner, blueprint: PassBlueprint) -> Result<Self> {
        let PassBlueprint {
            spec,
            dispatches,
            device_only,
        } = blueprint;
        let source = spec.shader.source(&spec.label)?;
        let pipeline = engine.pipeline(&spec.label, &source, spec.entry)?;
        check_bindings(&spec, pipeline.bindings.iter().map(|b| b.name.as_str()))?;
        let params = dispatches
            .iter()
            .map(|d| {
                d.params.as_ref().map(|words| {
                    let buffer = engine.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&format!("{} chunk", spec.label)),
                        size: padded(words.len() as u64 * 4),
                        usage: Usage::Constant.wgpu(),
                        mapped_at_creation: false,
                    });
                    engine
                        .queue
                        .write_buffer(&buffer, 0, bytemuck::cast_slice(words));
                    buffer
                })
            })
            .collect();
        Ok(Self {
            spec,
            source,
            pipeline,
            dispatches,
            device_only,
            params,
            bind_groups: Vec::new(),
        })
    }

    /// Records every dispatch of the pass.
    pub(crate) fn record(&self, cpass: &mut wgpu::ComputePass, counters: &mut StepCounters) {
        cpass.set_pipeline(&self.pipeline.pipeline);
        for (d, bg) in self.dispatches.iter().zip(&self.bind_groups) {
            cpass.set_bind_group(0, bg, &[]);
            cpass.dispatch_workgroups(d.grid.0, d.grid.1, 1);
            counters.dispatches += 1;
        }
        for t in &self.spec.reads {
            *counters.tensor_passes.entry(t.clone()).or_default() += 1;
        }
    }

    /// Builds a bind group per dispatch, `resolve` giving each source's buffer.
    pub(crate) fn bind(
        &mut self,
        device: &wgpu::Device,
        resolve: &dyn Fn(&Source) -> (wgpu::Buffer, u64),
    ) {
        let layout = self.pipeline.pipeline.get_bind_group_layout(0);
        let groups = self
            .dispatches
            .iter()
            .zip(&self.params)
            .map(|(d, params)| {
                let buffers: Vec<(u32, wgpu::Buffer, u64, Option<u64>)> = self
                    .pipeline
                    .bindings
                    .iter()
                    .map(|used| {
                        let bind = &self
                            .spec
                            .binds
                            .iter()
                            .find(|b| b.name == used.name)
                            .expect("checked when the pass was built")
                            .bind;
                        let (buffer, offset, size) = match bind {
                            Bind::Chunk => (params.clone().expect("a chunked pass"), 0, None),
                            Bind::Whole(s) => {
                                let (buffer, base) = resolve(s);
                                (buffer, base, None)
                            }
                            Bind::Rows { source, row_bytes } => {
                                let (buffer, base) = resolve(source);
                                (
                                    buffer,
                                    base + d.row_base * row_bytes,
                                    Some(d.rows * row_bytes),
                                )
                            }
                        };
                        (used.binding, buffer, offset, size)
                    })
                    .collect();
                let entries: Vec<wgpu::BindGroupEntry> = buffers
                    .iter()
                    .map(|(binding, buffer, offset, size)| wgpu::BindGroupEntry {
                        binding: *binding,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset: *offset,
                            size: size.and_then(std::num::NonZeroU64::new),
                        }),
                    })
                    .collect();
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&self.spec.label),
                    layout: &layout,
                    entries: &entries,
                })
            })
            .collect();
        self.bind_groups = groups;
    }
}

/// Refuses a pass that binds nothing to a buffer variable its entry point uses (`used`).
pub(crate) fn check_bindings<'a>(
    spec: &PassSpec,
    mut used: impl Iterator<Item = &'a str>,
) -> Result<()> {
    match used.find(|name| !spec.binds.iter().any(|b| b.name == *name)) {
        Some(name) => Err(Error::Gpu(format!(
            "internal: pass '{}' binds nothing to its variable '{name}'",
            spec.label
        ))),
        None => Ok(()),
    }
}

/// Timestamp queries around every pass, when enabled (`Plan::enable_pass_timing`).
pub(crate) struct Timing {
    pub queries: wgpu::QuerySet,
    pub resolved: wgpu::Buffer,
    pub readback: wgpu::Buffer,
}

impl Timing {
    /// Queries for `passes` passes.
    pub(crate) fn new(device: &wgpu::Device, passes: usize) -> Self {
        let n = 2 * passes as u32;
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: n as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        Timing {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: n,
            }),
            resolved: buffer(
                "timestamps",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "timestamps readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
        }
    }

    /// Reads the ticks of the last step: two per pass.
    pub(crate) fn ticks(&self, engine: &EngineInner) -> Result<Vec<u64>> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        engine
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("map callback dropped".into()))?
            .map_err(|e| Error::Gpu(format!("mapping timestamps: {e}")))?;
        let ticks: Vec<u64> = bytemuck::cast_slice(
            &self
                .readback
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("reading timestamps: {e}")))?,
        )
        .to_vec();
        self.readback.unmap();
        Ok(ticks)
    }
}

/// Records every pass into `encoder` but those `skip` says (a device buffer's value check when
/// the tensor came from the host): one compute pass, or with `timing` one per kernel so that
/// each gets its own timestamps (a skipped pass gets an empty one, so indices stay put).
pub(crate) fn record(
    encoder: &mut wgpu::CommandEncoder,
    passes: &[Pass],
    timing: Option<&Timing>,
    counters: &mut StepCounters,
    skip: &dyn Fn(&Pass) -> bool,
) {
    let Some(timing) = timing else {
        let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("lossfuse step"),
            timestamp_writes: None,
        });
        for pass in passes.iter().filter(|p| !skip(p)) {
            pass.record(&mut cpass, counters);
        }
        return;
    };
    for (i, pass) in passes.iter().enumerate() {
        let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&pass.spec.label),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &timing.queries,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            }),
        });
        if !skip(pass) {
            pass.record(&mut cpass, counters);
        }
    }
    let n = 2 * passes.len() as u32;
    encoder.resolve_query_set(&timing.queries, 0..n, &timing.resolved, 0);
    encoder.copy_buffer_to_buffer(&timing.resolved, 0, &timing.readback, 0, n as u64 * 8);
}

/// The buffers (and byte offsets) the batch's tensors were bound from, to tell when bind groups
/// must be rebuilt.
pub(crate) type Bound = BTreeMap<String, (wgpu::Buffer, u64)>;
