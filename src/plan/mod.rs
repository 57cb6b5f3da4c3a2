//! A plan: every buffer, pipeline and bind group for one config and one set of shapes, built once;
//! `step` records one command buffer and submits it once.
//!
//! A step runs: the `coefficients` dispatch (when some row group is fused, below), for every group
//! its statistics passes if it has batch-wide terms (statistics, OHEM selection, prepare: see
//! the `statistics` family) and its forward pass (per-workgroup partial sums), `combine` (term
//! values), `weigh` (weights, flooding, gradient coefficients, state, GHM-C accumulators), the
//! backward pass of every unfused group, then a copy of the scalars into a mappable buffer.
//!
//! A row group is fused when every gradient coefficient is known before the step (no flooding, no
//! EMA reweighting, denominators independent of the data): its forward pass writes the gradients
//! too, so each tensor is read once per step. Otherwise each tensor is read twice (forward and
//! backward), however many terms read it: every gradient then needs this step's batch-wide values.
//!
//! The build ([`build`]) needs no device: it lays out every pass and buffer from the adapter's
//! limits; this module then makes them ([`alloc`], [`record`]) and runs steps ([`step`]).

mod alloc;
pub(crate) mod build;
pub(crate) mod checks;
mod chunking;
mod persist;
mod record;
mod step;
#[cfg(test)]
mod tests;

use crate::batch::Shapes;
use crate::combine;
use crate::config::LossConfig;
use crate::engine::{Engine, EngineInner};
use crate::error::{Error, Result};
use crate::kernel::{Bind, Source};
use crate::report::{Outputs, Prediction, StepCounters};
use alloc::{Core, Limits};
use build::Blueprint;
use checks::HostChecks;
use record::{Bound, Pass, Timing};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Buffers, pipelines and bind groups for one config and shapes. See the module docs.
pub struct Plan {
    engine: Arc<EngineInner>,
    config: LossConfig,
    shapes: Shapes,
    /// Upload buffers, created on the first host upload of each tensor.
    uploads: BTreeMap<String, wgpu::Buffer>,
    grads: BTreeMap<String, wgpu::Buffer>,
    /// Each per-row prediction's buffer (one of `internal`), by term name.
    predictions: BTreeMap<String, Prediction>,
    internal: Vec<wgpu::Buffer>,
    passes: Vec<Pass>,
    core: Core,
    /// Words of the state buffer (combine's block, then the terms' regions).
    state_words: usize,
    /// Internal buffers saved with the state after its words (memory banks).
    state_buffers: Vec<usize>,
    /// Memory banks: (first state word of (head, fill), rows M).
    banks: Vec<(u32, u64)>,
    /// What the state words hold (to describe a saved state and check a loaded one).
    state_map: persist::StateMap,
    checks: HostChecks,
    readback: wgpu::Buffer,
    /// Buffers the cached bind groups were built with, per read tensor.
    bound: Option<Bound>,
    /// Which passes the last step left out (the GPU value checks of tensors that came from the
    /// host), so that the pass timings leave them out too.
    skipped: Vec<bool>,
    totals: StepCounters,
    timing: Option<Timing>,
}

impl Engine {
    /// Builds a plan: every buffer, pipeline and bind group the config needs for these shapes.
    pub fn plan(&self, config: &LossConfig, shapes: &Shapes) -> Result<Plan> {
        Plan::new(self.inner.clone(), config, shapes)
    }
}

impl Limits {
    /// The limits of `engine`'s adapter (and of its options).
    pub(crate) fn of(engine: &EngineInner) -> Self {
        let l = &engine.limits;
        Limits {
            max_storage_buffers: l.max_storage_buffers_per_shader_stage,
            max_buffer: l.max_buffer_size,
            max_binding: engine.max_binding(),
            align: l.min_storage_buffer_offset_alignment as u64,
            max_grid: l.max_compute_workgroups_per_dimension,
            workgroup_bytes: l.max_compute_workgroup_storage_size as u64,
            tiled: !engine.summary.backend.eq_ignore_ascii_case("gl"),
            cpu: engine.summary.device_type == "Cpu",
            block_rows: engine.options.sweep_block_rows,
        }
    }
}

impl Plan {
    fn new(engine: Arc<EngineInner>, config: &LossConfig, shapes: &Shapes) -> Result<Self> {
        let blueprint = build::build(config, shapes, &Limits::of(&engine))?;
        let asked = blueprint.buffers.iter().map(|r| r.size).sum::<u64>()
            + blueprint.grads.values().sum::<u64>()
            + shapes.iter().map(|(_, s)| s.bytes()).sum::<u64>();
        let count = blueprint.buffers.len() + blueprint.grads.len();
        let max_buffer = engine.limits.max_buffer_size;
        let device = engine.device.clone();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let built = Self::create(engine, config, shapes, blueprint);
        let oom_error = pollster::block_on(oom.pop());
        let validation_error = pollster::block_on(scope.pop());
        let plan = built?;
        if let Some(e) = oom_error {
            return Err(Error::Gpu(format!(
                "out of memory building the plan: it asks {asked} bytes in {count} buffers and \
                 the input uploads (the adapter's largest buffer is {max_buffer} bytes): {e}"
            )));
        }
        if let Some(e) = validation_error {
            return Err(Error::Gpu(format!("building the plan: {e}")));
        }
        Ok(plan)
    }

    /// Makes the blueprint's buffers and pipelines on the device.
    fn create(
        engine: Arc<EngineInner>,
        config: &LossConfig,
        shapes: &Shapes,
        bp: Blueprint,
    ) -> Result<Self> {
        let (device, queue) = (&engine.device, &engine.queue);
        let internal: Vec<wgpu::Buffer> =
            bp.buffers.iter().map(|r| r.create(device, queue)).collect();
        let predictions = bp
            .predictions
            .iter()
            .map(|(term, &(b, rows))| {
                let buffer = internal[b].clone();
                (term.clone(), Prediction { buffer, rows })
            })
            .collect();
        let grads = bp
            .grads
            .iter()
            .map(|(name, &bytes)| {
                let request = alloc::BufferRequest {
                    label: format!("grad/{name}"),
                    size: bytes,
                    usage: alloc::Usage::Storage,
                    init: None,
                };
                (name.clone(), request.create(device, queue))
            })
            .collect();
        let passes = bp
            .passes
            .into_iter()
            .map(|p| Pass::new(&engine, p))
            .collect::<Result<Vec<_>>>()?;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scalars readback"),
            size: combine::scalars_len(config.losses.len()) as u64 * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let plan = Plan {
            engine,
            config: config.clone(),
            shapes: shapes.clone(),
            uploads: BTreeMap::new(),
            grads,
            predictions,
            internal,
            passes,
            core: bp.core,
            state_words: bp.state_words,
            state_buffers: bp.state_buffers,
            banks: bp.banks,
            state_map: bp.state_map,
            checks: bp.checks,
            readback,
            bound: None,
            skipped: Vec::new(),
            totals: StepCounters::default(),
            timing: None,
        };
        // Fresh buffers are zero, and so are the banks of the initial state.
        plan.write_state(&plan.initial_state()[..plan.state_words]);
        Ok(plan)
    }

    /// What a step's output reads.
    fn outputs(&self) -> Outputs<'_> {
        Outputs {
            engine: &self.engine,
            config: &self.config,
            shapes: &self.shapes,
            grads: &self.grads,
            predictions: &self.predictions,
            readback: &self.readback,
            value_checks: self.checks.value_checks(),
        }
    }

    /// The config the plan was built for.
    pub fn config(&self) -> &LossConfig {
        &self.config
    }

    /// The shapes the plan was built for.
    pub fn shapes(&self) -> &Shapes {
        &self.shapes
    }

    /// Tensors that receive a gradient.
    pub fn grad_names(&self) -> impl Iterator<Item = &String> {
        self.grads.keys()
    }

    /// The terms with a per-row prediction ([`crate::StepOutput::prediction`]), by name.
    pub fn prediction_names(&self) -> impl Iterator<Item = &String> {
        self.predictions.keys()
    }

    /// Counters summed over every step so far.
    pub fn counters(&self) -> &StepCounters {
        &self.totals
    }

    /// The gradient buffer of a tensor (valid until the next step writes it).
    pub fn grad(&self, tensor: &str) -> Result<&wgpu::Buffer> {
        crate::report::grad_of(&self.grads, tensor)
    }

    /// Fills every output (gradients, predictions and scalars) with NaN, so that a test can tell an element
    /// the next step did not write.
    pub fn poison_outputs(&self) {
        for b in self
            .grads
            .values()
            .chain(self.predictions.values().map(|p| &p.buffer))
            .chain([&self.internal[self.core.scalars]])
        {
            let words = vec![f32::NAN.to_bits(); (b.size() / 4) as usize];
            self.engine
                .queue
                .write_buffer(b, 0, bytemuck::cast_slice(&words));
        }
        self.engine.queue.submit([]);
    }

    /// Records GPU timestamps around every pass from the next step on (one submission still),
    /// for [`Plan::pass_times`]. Needs the adapter's `TIMESTAMP_QUERY` feature.
    pub fn enable_pass_timing(&mut self) -> Result<()> {
        let device = &self.engine.device;
        if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(Error::Unsupported(format!(
                "{} has no timestamp queries",
                self.engine.summary.label()
            )));
        }
        self.timing = Some(Timing::new(device, self.passes.len()));
        Ok(())
    }

    /// GPU seconds of every pass of the last step (label, seconds), when timing is enabled.
    pub fn pass_times(&self) -> Result<Vec<(String, f64)>> {
        let timing = self
            .timing
            .as_ref()
            .ok_or_else(|| Error::Unsupported("pass timing is not enabled".into()))?;
        let ticks = timing.ticks(&self.engine)?;
        let period = self.engine.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(self
            .passes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.skipped.get(*i).copied().unwrap_or(false))
            .map(|(i, p)| {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                (p.spec.label.clone(), dt as f64 * period)
            })
            .collect())
    }

    /// Describes the passes (for docs, `lossfuse bench` and tests): label, dispatches, tensors read.
    pub fn describe(&self) -> Vec<(String, usize, Vec<String>)> {
        self.passes
            .iter()
            .map(|p| {
                (
                    p.spec.label.clone(),
                    p.dispatches.len(),
                    p.spec.reads.clone(),
                )
            })
            .collect()
    }

    /// The composed WGSL of every pass (label, source), for inspection and validation.
    pub fn shader_sources(&self) -> Vec<(String, String)> {
        self.passes
            .iter()
            .map(|p| (p.spec.label.clone(), p.source.clone()))
            .collect()
    }

    /// Bytes of every buffer the plan owns: internal buffers (partials, state, sort and sweep
    /// buffers, ...), gradients, upload buffers created so far and the read-back buffer. What a
    /// plan allocates on the device, for checking that memory stays linear in the batch.
    pub fn allocated_bytes(&self) -> u64 {
        self.internal
            .iter()
            .chain(self.grads.values())
            .chain(self.uploads.values())
            .chain([&self.readback])
            .map(|b| b.size())
            .sum()
    }

    /// Bytes a step moves: every tensor read once per pass that reads it, every per-row internal
    /// buffer (OHEM keys, softmax row statistics) once per pass that binds it, every gradient
    /// written once. OHEM's index rounds are counted although they return at once when the k-th
    /// value is not tied beyond k, so with OHEM this is an upper bound. Inputs are taken to come
    /// from the host: each tensor that comes as a device buffer adds one read (its value check).
    pub fn bytes_per_step(&self) -> u64 {
        let mut bytes = 0u64;
        for p in self.passes.iter().filter(|p| p.device_only.is_none()) {
            for t in &p.spec.reads {
                bytes += self.shapes.get(t).map(|s| s.bytes()).unwrap_or(0);
            }
            for b in &p.spec.binds {
                if let Bind::Rows {
                    source: Source::Internal(_),
                    row_bytes,
                } = &b.bind
                {
                    bytes += p.dispatches.iter().map(|c| c.rows * row_bytes).sum::<u64>();
                }
            }
        }
        bytes + self.grads.values().map(|b| b.size()).sum::<u64>()
    }
}
