//! One step: check the batch against the plan (nothing is uploaded or recorded for a bad batch),
//! upload host tensors, rebind when the batch's buffers changed, record every pass into one
//! command buffer, submit it once.

use super::record::{record, Bound};
use super::Plan;
use crate::batch::{Batch, DType, Input, TensorSpec};
use crate::error::{Error, Result};
use crate::kernel::Source;
use crate::report::{StepCounters, StepOutput};

impl Plan {
    /// Every tensor some pass reads, each once, in pass order.
    fn read_tensors(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self.passes.iter().flat_map(|p| p.spec.reads.iter()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Checks the batch against the plan before anything is uploaded or recorded, so that a bad
    /// batch changes nothing.
    fn check(&self, batch: &Batch, reads: &[String]) -> Result<()> {
        for name in reads {
            let spec = self.shapes.get(name).expect("plan tensors have shapes");
            let input = batch.get(name).ok_or_else(|| {
                Error::tensor(
                    name,
                    None,
                    format!(
                        "missing from the batch (expected {:?} {})",
                        spec.shape,
                        spec.dtype.name()
                    ),
                )
            })?;
            check_input(name, spec, input)?;
        }
        self.checks.check(batch, &self.shapes)
    }

    /// Uploads the host tensors of `batch`; returns the buffer of every read tensor.
    fn upload(&mut self, batch: &Batch, reads: &[String], counters: &mut StepCounters) -> Bound {
        let mut sources = Bound::new();
        for name in reads {
            let input = batch.get(name).expect("checked");
            let bound = match input.device_buffer() {
                Some((b, offset)) => (b.clone(), offset),
                None => {
                    let bytes = input.host_bytes().expect("a host input");
                    let spec = self.shapes.get(name).expect("plan tensors have shapes");
                    let engine = &self.engine;
                    let buffer = self
                        .uploads
                        .entry(name.clone())
                        .or_insert_with(|| {
                            engine.device.create_buffer(&wgpu::BufferDescriptor {
                                label: Some(&format!("input/{name}")),
                                size: super::alloc::padded(spec.bytes()),
                                usage: super::alloc::storage_usage(),
                                mapped_at_creation: false,
                            })
                        })
                        .clone();
                    if !bytes.is_empty() {
                        self.engine.queue.write_buffer(&buffer, 0, bytes);
                    }
                    counters.bytes_uploaded += bytes.len() as u64;
                    (buffer, 0)
                }
            };
            sources.insert(name.clone(), bound);
        }
        sources
    }

    /// Runs one step: uploads host inputs, records every pass into one command buffer and
    /// submits it once. Nothing is read back; see [`StepOutput`].
    pub fn step(&mut self, batch: &Batch) -> Result<StepOutput<'_>> {
        self.engine.check_alive()?;
        let reads = self.read_tensors();
        self.check(batch, &reads)?;
        self.check_offsets(batch, &reads)?;
        if let Some(e) = self.engine.take_uncaptured() {
            return Err(Error::Gpu(e));
        }
        self.check_buffers(batch, &reads)?;
        let mut counters = StepCounters::default();
        let sources = self.upload(batch, &reads, &mut counters);
        if self.bound.as_ref() != Some(&sources) {
            self.rebind(&sources);
            self.bound = Some(sources);
        }
        let device = &self.engine.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("lossfuse step"),
        });
        // The GPU value checks run for the tensors that came as device buffers.
        let from_host = |p: &super::record::Pass| {
            p.device_only
                .as_ref()
                .is_some_and(|t| batch.get(t).and_then(Input::device_buffer).is_none())
        };
        record(
            &mut encoder,
            &self.passes,
            self.timing.as_ref(),
            &mut counters,
            &from_host,
        );
        if self.timing.is_some() {
            self.skipped = self.passes.iter().map(from_host).collect();
        }
        let scalars = &self.internal[self.core.scalars];
        encoder.copy_buffer_to_buffer(scalars, 0, &self.readback, 0, self.readback.size());
        self.engine.queue.submit([encoder.finish()]);
        counters.submissions += 1;
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("recording the step: {e}")));
        }
        self.totals.add(&counters);
        Ok(StepOutput::new(self.outputs(), counters))
    }

    /// Checks the batch's device buffers that differ from the last step's: none may be one of the
    /// plan's own buffers, and each must belong to the plan's device (a one-entry bind group in an
    /// error scope; a buffer of another wgpu instance makes wgpu panic, which is caught here).
    fn check_buffers(&self, batch: &Batch, reads: &[String]) -> Result<()> {
        for name in reads {
            let Some((buffer, offset)) = batch.get(name).and_then(Input::device_buffer) else {
                continue;
            };
            if self.bound.as_ref().and_then(|b| b.get(name)) == Some(&(buffer.clone(), offset)) {
                continue;
            }
            let own = self.internal.iter().chain(self.grads.values());
            if own.chain(self.uploads.values()).any(|b| b == buffer) {
                return Err(Error::tensor(
                    name,
                    None,
                    "the buffer is one of the plan's own (or has the same id in another wgpu \
                     instance: create input buffers on the engine's device)",
                ));
            }
            super::alloc::probe_device(&self.engine, buffer)
                .map_err(|why| Error::tensor(name, None, why))?;
        }
        Ok(())
    }

    /// Refuses device-buffer regions whose offset the device cannot bind.
    fn check_offsets(&self, batch: &Batch, reads: &[String]) -> Result<()> {
        let align = self.engine.limits.min_storage_buffer_offset_alignment as u64;
        for name in reads {
            if let Some((_, offset)) = batch.get(name).and_then(Input::device_buffer) {
                if offset % align != 0 {
                    return Err(Error::tensor(
                        name,
                        None,
                        format!(
                            "buffer offset {offset} is not a multiple of the device's \
                             min_storage_buffer_offset_alignment ({align})"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Rebuilds every pass's bind groups over `sources` (the batch's buffers).
    fn rebind(&mut self, sources: &Bound) {
        let (grads, internal) = (&self.grads, &self.internal);
        let resolve = |s: &Source| -> (wgpu::Buffer, u64) {
            match s {
                Source::Input(n) => sources[n].clone(),
                Source::Grad(n) => (grads[n].clone(), 0),
                Source::Internal(k) => (internal[*k].clone(), 0),
            }
        };
        for pass in &mut self.passes {
            pass.bind(&self.engine.device, &resolve);
        }
    }
}

/// Checks one input against its spec: a device buffer's usage and size, a host tensor's dtype and
/// length.
fn check_input(name: &str, spec: &TensorSpec, input: &Input) -> Result<()> {
    if let Some((b, offset)) = input.device_buffer() {
        if !b.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::tensor(
                name,
                None,
                "the buffer needs BufferUsages::STORAGE",
            ));
        }
        if b.size() < offset.saturating_add(spec.bytes()) {
            return Err(Error::tensor(
                name,
                None,
                format!(
                    "the buffer holds {} bytes from offset {offset}, shape {:?} needs {}",
                    b.size().saturating_sub(offset),
                    spec.shape,
                    spec.bytes()
                ),
            ));
        }
        return Ok(());
    }
    let dtype = input.host_dtype().expect("a host input");
    let len = input.host_len().expect("a host input");
    if let (Input::I64(ids), DType::I32) = (input, spec.dtype) {
        // `OwnedBatch` keeps I64 ids as I32 when they fit: these did not.
        if let Some((i, v)) = ids
            .iter()
            .enumerate()
            .find(|(_, v)| i32::try_from(**v).is_err())
        {
            return Err(Error::tensor(
                name,
                None,
                format!(
                    "id {v} at element {i} is outside the i32 range of the plan's {} ids",
                    spec.dtype.name()
                ),
            ));
        }
    }
    if dtype != spec.dtype {
        return Err(Error::tensor(
            name,
            None,
            format!(
                "dtype {} given, the plan expects {}",
                dtype.name(),
                spec.dtype.name()
            ),
        ));
    }
    if len != spec.len() {
        return Err(Error::tensor(
            name,
            None,
            format!(
                "{len} values given, shape {:?} needs {}",
                spec.shape,
                spec.len()
            ),
        ));
    }
    Ok(())
}
