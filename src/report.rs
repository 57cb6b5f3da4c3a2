//! What a step returns: gradient buffers that stay on the GPU, and the scalars (total, each term's
//! value and effective weight, learned-weight gradients) read back only when asked, blocking or
//! as a future.

use crate::batch::Shapes;
use crate::combine::{self, S_INVALID, S_RAW_TOTAL, S_SIGN, S_TOTAL};
use crate::config::LossConfig;
use crate::engine::EngineInner;
use crate::error::{Error, Result};
use crate::losses::jrc::params::JrcParams;
use crate::plan::checks::ValueCheck;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Work counters of a step (or, summed, of a plan), so tests can assert one submission per step
/// and that adding a term on the same tensor adds no pass over it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepCounters {
    /// Queue submissions.
    pub submissions: u64,
    /// Compute dispatches.
    pub dispatches: u64,
    /// Bytes uploaded from host slices.
    pub bytes_uploaded: u64,
    /// Passes that read each batch tensor.
    pub tensor_passes: BTreeMap<String, u64>,
}

impl StepCounters {
    pub(crate) fn add(&mut self, other: &StepCounters) {
        self.submissions += other.submissions;
        self.dispatches += other.dispatches;
        self.bytes_uploaded += other.bytes_uploaded;
        for (k, v) in &other.tensor_passes {
            *self.tensor_passes.entry(k.clone()).or_default() += v;
        }
    }

    /// Passes of this step that read `tensor`.
    pub fn passes_over(&self, tensor: &str) -> u64 {
        self.tensor_passes.get(tensor).copied().unwrap_or(0)
    }
}

/// One term's results.
#[derive(Clone, Debug, PartialEq)]
pub struct TermReport {
    /// Term name.
    pub name: String,
    /// L_k, the reduced loss.
    pub value: f32,
    /// Effective weight of L_k in the total this step (before the flooding sign).
    pub weight: f32,
    /// d total / d s_k for learned uncertainty weights (0 otherwise).
    pub log_var_grad: f32,
    /// s_k used this step (0 when not learned).
    pub log_var: f32,
    /// The parts of a `jrc_loss` term (None for other terms).
    pub jrc: Option<JrcReport>,
    /// The learned affine of a listwise term with `scale_logits` (None otherwise).
    pub scale: Option<ScaleReport>,
}

/// The learned x·|w| + b of a listwise term with `scale_logits` (docs/LOSSES.md §6a) in one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleReport {
    /// The (w, b) used this step (before this step's optimiser update).
    pub wb: [f32; 2],
    /// d total / d(w, b).
    pub grad: [f32; 2],
}

/// The parts of a `jrc_loss` term in one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JrcReport {
    /// The calibration part: softmax CE over the two columns, reduced.
    pub ce: f32,
    /// The listwise (generalisation) part.
    pub ge: f32,
    /// The learned (u1, u2) used this step (0 with the fixed combination).
    pub u: [f32; 2],
    /// d total / d (u1, u2) (0 with the fixed combination).
    pub u_grad: [f32; 2],
}

/// The scalars of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The total loss (after flooding).
    pub total: f32,
    /// The total before flooding.
    pub raw_total: f32,
    /// d total / d raw total: the flooding sign (1 without flooding).
    pub flood_sign: f32,
    /// Every term, in config order.
    pub terms: Vec<TermReport>,
}

impl Report {
    /// A term's report by name.
    pub fn term(&self, name: &str) -> Option<&TermReport> {
        self.terms.iter().find(|t| t.name == name)
    }

    fn parse(outputs: &Outputs, words: &[f32]) -> Result<Self> {
        let config = outputs.config;
        let field =
            |k: usize, f: usize| words[combine::S_TERM_BASE + k * combine::S_TERM_STRIDE + f];
        let nonfinite = words[combine::S_NONFINITE].to_bits();
        if nonfinite != 0 {
            return Err(refused_value(
                outputs,
                nonfinite,
                words[combine::S_NONFINITE_AT].to_bits(),
            ));
        }
        if words[S_INVALID] != 0.0 {
            // Only class ids read from device buffers get here; host ids are checked before upload.
            let k = (0..config.losses.len())
                .find(|&k| field(k, combine::T_INVALID) != 0.0)
                .unwrap_or(0);
            let term = &config.losses[k];
            return Err(Error::Tensor {
                tensor: term.input("labels").unwrap_or("labels").to_string(),
                term: Some(term.name.clone()),
                message: format!(
                    "{} row(s) had class ids outside [0, C) that are not ignore_index (device \
                     buffer input); they were ignored and the state was not updated",
                    field(k, combine::T_INVALID)
                ),
            });
        }
        let terms = config
            .losses
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let name = &t.name;
                let at = |f: usize| field(k, f);
                TermReport {
                    name: name.clone(),
                    value: at(combine::T_VALUE),
                    weight: at(combine::T_WEIGHT),
                    log_var_grad: at(combine::T_LOG_VAR_GRAD),
                    log_var: at(combine::T_LOG_VAR),
                    jrc: t.kind.params::<JrcParams>().is_some().then(|| JrcReport {
                        ce: at(combine::T_CE),
                        ge: at(combine::T_GE),
                        u: [at(combine::T_U1), at(combine::T_U2)],
                        u_grad: [at(combine::T_DU1), at(combine::T_DU2)],
                    }),
                    scale: t.learns_listwise_scale().then(|| ScaleReport {
                        wb: [at(combine::T_U1), at(combine::T_U2)],
                        grad: [at(combine::T_DU1), at(combine::T_DU2)],
                    }),
                }
            })
            .collect();
        Ok(Report {
            total: words[S_TOTAL],
            raw_total: words[S_RAW_TOTAL],
            flood_sign: words[S_SIGN],
            terms,
        })
    }
}

/// What a step's output reads of its plan: the gradients, the scalars' read-back buffer, and
/// what its GPU value checks were (to name a refused input).
#[derive(Clone, Copy)]
pub(crate) struct Outputs<'p> {
    pub engine: &'p EngineInner,
    pub config: &'p LossConfig,
    pub shapes: &'p Shapes,
    pub grads: &'p BTreeMap<String, wgpu::Buffer>,
    pub predictions: &'p BTreeMap<String, Prediction>,
    pub readback: &'p wgpu::Buffer,
    pub value_checks: &'p [ValueCheck],
}

/// A term's per-row prediction: its buffer (f32 per row) and its rows.
#[derive(Clone, Debug)]
pub(crate) struct Prediction {
    pub buffer: wgpu::Buffer,
    pub rows: u64,
}

/// The error of a step whose GPU value check `check` (index + 1) refused element `at` of a
/// device buffer.
fn refused_value(outputs: &Outputs, check: u32, at: u32) -> Error {
    let Some(c) = outputs.value_checks.get(check as usize - 1) else {
        return Error::Gpu(format!(
            "internal: value check {check} flagged but not planned"
        ));
    };
    let shape = outputs
        .shapes
        .get(&c.tensor)
        .map(|s| s.shape.clone())
        .unwrap_or_default();
    let width: usize = shape.iter().skip(1).product::<usize>().max(1);
    let row = at as usize / width;
    let what = match (c.finite, c.non_negative) {
        (true, true) => {
            "is not finite or is negative (sample weights and amount labels must be finite and \
             >= 0)"
        }
        (false, true) => "is negative (sample weights and amount labels must be >= 0)",
        _ => "is not finite (NaN or ±Inf)",
    };
    Error::Tensor {
        tensor: c.tensor.clone(),
        term: Some(c.term.clone()),
        message: format!(
            "element {at} (row {row} of shape {shape:?}) {what}; the device buffer was checked \
             on the GPU, and the step was refused and committed no state"
        ),
    }
}

/// The gradient buffer of `tensor` among `grads`, or an error listing those there are.
pub(crate) fn grad_of<'a>(
    grads: &'a BTreeMap<String, wgpu::Buffer>,
    tensor: &str,
) -> Result<&'a wgpu::Buffer> {
    grads.get(tensor).ok_or_else(|| {
        Error::tensor(
            tensor,
            None,
            format!(
                "no gradient: not a differentiable input of this plan (those are: {})",
                grads.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// The result of [`crate::Plan::step`]. Borrows the plan: the next step overwrites these
/// outputs.
pub struct StepOutput<'p> {
    outputs: Outputs<'p>,
    counters: StepCounters,
}

impl<'p> StepOutput<'p> {
    pub(crate) fn new(outputs: Outputs<'p>, counters: StepCounters) -> Self {
        Self { outputs, counters }
    }

    /// This step's counters.
    pub fn counters(&self) -> &StepCounters {
        &self.counters
    }

    /// d total / d tensor, on the GPU, f32, the tensor's shape.
    pub fn grad(&self, tensor: &str) -> Result<&'p wgpu::Buffer> {
        grad_of(self.outputs.grads, tensor)
    }

    /// d total / d tensor read back to the host (blocking).
    pub fn read_grad(&self, tensor: &str) -> Result<Vec<f32>> {
        let b = self.grad(tensor)?;
        let n = self
            .outputs
            .shapes
            .get(tensor)
            .map(|s| s.len())
            .unwrap_or(0);
        let bytes = read_buffer(self.outputs.engine, b, 0, (n as u64 * 4).max(4))?;
        let mut v: Vec<f32> = bytemuck::cast_slice(&bytes).to_vec();
        v.truncate(n);
        Ok(v)
    }

    /// The per-row prediction of term `term`, on the GPU: f32, one per row, written by this
    /// step's forward pass like the gradients (`ziln_loss`: its predicted mean
    /// σ(x₀)·exp(μ + σ²/2), EasyRec `zero_inflated_lognormal_pred`; docs/LOSSES.md).
    pub fn prediction(&self, term: &str) -> Result<&'p wgpu::Buffer> {
        self.prediction_of(term).map(|p| &p.buffer)
    }

    fn prediction_of(&self, term: &str) -> Result<&'p Prediction> {
        self.outputs.predictions.get(term).ok_or_else(|| {
            Error::term(
                term,
                format!(
                    "no prediction: not a term of this plan with a per-row prediction (those \
                     are: {})",
                    self.outputs
                        .predictions
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// The per-row prediction of term `term` read back to the host (blocking).
    pub fn read_prediction(&self, term: &str) -> Result<Vec<f32>> {
        let p = self.prediction_of(term)?;
        let n = p.rows as usize;
        let bytes = read_buffer(self.outputs.engine, &p.buffer, 0, (p.rows * 4).max(4))?;
        let mut v: Vec<f32> = bytemuck::cast_slice(&bytes).to_vec();
        v.truncate(n);
        Ok(v)
    }

    /// Waits for the step and reads the scalars. The calling thread blocks in the device's wait
    /// (no spinning: on the CPU adapters a spinning thread takes a core from the driver's own).
    pub fn report_blocking(&self) -> Result<Report> {
        let state = self.map_scalars();
        let waited = self
            .outputs
            .engine
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| e.to_string());
        let mapped = state.lock().unwrap().mapped.take();
        finish_map(self.outputs.engine, mapped, Some(waited)).unwrap_or_else(|| {
            Err(Error::Gpu(
                "internal: the device wait returned before mapping the scalars".into(),
            ))
        })?;
        read_scalars(self.outputs)
    }

    /// The scalars as a future. Polled while the step runs, it starts one thread that blocks in
    /// the device's wait and wakes the future when the scalars are mapped, so it completes under
    /// any executor without spinning.
    pub fn report(&self) -> impl Future<Output = Result<Report>> + 'p {
        let outputs = self.outputs;
        let state = self.map_scalars();
        async move {
            MapFuture {
                engine: outputs.engine,
                state,
            }
            .await?;
            read_scalars(outputs)
        }
    }

    /// Asks for the scalars' read-back buffer to be mapped; the callback records the result and
    /// wakes whoever waits.
    fn map_scalars(&self) -> Arc<Mutex<MapState>> {
        let state = Arc::new(Mutex::new(MapState::default()));
        let sink = state.clone();
        self.outputs
            .readback
            .map_async(wgpu::MapMode::Read, .., move |r| {
                let mut s = sink.lock().unwrap();
                s.mapped = Some(r);
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            });
        state
    }
}

/// What the map callback and the waiting thread leave for the report future.
#[derive(Default)]
struct MapState {
    /// The map callback's result.
    mapped: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    /// The device wait's end (its error, if any), once the waiting thread has returned.
    waited: Option<std::result::Result<(), String>>,
    /// Whether the waiting thread was started.
    waiting: bool,
    /// The task to wake.
    waker: Option<Waker>,
}

/// The mapping's outcome, if there is one yet: the callback's result, else (the wait having
/// ended without a callback, or the device lost) an error.
fn finish_map(
    engine: &EngineInner,
    mapped: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waited: Option<std::result::Result<(), String>>,
) -> Option<Result<()>> {
    match mapped {
        Some(Ok(())) => return Some(Ok(())),
        Some(Err(e)) => return Some(Err(Error::Gpu(format!("mapping the scalars: {e}")))),
        None => {}
    }
    // A lost device never calls back: report it instead of waiting for ever.
    if let Err(e) = engine.check_alive() {
        return Some(Err(e));
    }
    waited.map(|w| {
        w.map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        Err(Error::Gpu(
            "the GPU finished the step without mapping the scalars".into(),
        ))
    })
}

struct MapFuture<'a> {
    engine: &'a EngineInner,
    state: Arc<Mutex<MapState>>,
}

impl Future for MapFuture<'_> {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Fires the callbacks of work already done, without blocking.
        let _ = self.engine.device.poll(wgpu::PollType::Poll);
        let mut state = self.state.lock().unwrap();
        let (mapped, waited) = (state.mapped.take(), state.waited.take());
        if let Some(done) = finish_map(self.engine, mapped, waited) {
            return Poll::Ready(done);
        }
        state.waker = Some(cx.waker().clone());
        if !state.waiting {
            state.waiting = true;
            let (device, shared) = (self.engine.device.clone(), self.state.clone());
            std::thread::spawn(move || {
                let waited = device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let mut s = shared.lock().unwrap();
                s.waited = Some(waited);
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            });
        }
        Poll::Pending
    }
}

/// Reads the mapped scalars and unmaps the buffer.
fn read_scalars(outputs: Outputs) -> Result<Report> {
    let buffer = outputs.readback;
    let words: Vec<f32> = {
        let view = buffer
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("reading the scalars: {e}")))?;
        bytemuck::cast_slice(&view).to_vec()
    };
    buffer.unmap();
    if let Some(e) = outputs.engine.take_uncaptured() {
        return Err(Error::Gpu(e));
    }
    Report::parse(&outputs, &words)
}

/// Copies `size` bytes of `buffer` from `offset` to the host (blocking; outside any step).
pub(crate) fn read_buffer(
    engine: &EngineInner,
    buffer: &wgpu::Buffer,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>> {
    let size = size.next_multiple_of(4);
    let staging = engine.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read back"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = engine.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
    engine.queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    engine
        .device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
    rx.recv()
        .map_err(|_| Error::Gpu("map callback dropped".into()))?
        .map_err(|e| Error::Gpu(format!("mapping: {e}")))?;
    let bytes = staging
        .get_mapped_range(..)
        .map_err(|e| Error::Gpu(format!("reading: {e}")))?
        .to_vec();
    staging.unmap();
    Ok(bytes)
}
