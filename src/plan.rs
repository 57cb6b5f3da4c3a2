//! A plan: every buffer, pipeline and bind group for one config and one set of shapes, built once;
//! `step` records one command buffer and submits it once.
//!
//! A step runs: the `coefficients` dispatch (when some row group is fused, below), for every group
//! its statistics passes if it has batch-wide terms (statistics, OHEM selection, prepare: see
//! [`crate::losses::statistics`]) and its forward pass (per-workgroup partial sums), `combine`
//! (term values), `weigh` (weights, flooding, gradient coefficients, state, GHM-C accumulators),
//! the backward pass of every unfused group, then a copy of the scalars into a mappable buffer.
//!
//! A row group is fused when every gradient coefficient is known before the step (no flooding, no
//! EMA reweighting, denominators independent of the data): its forward pass writes the gradients
//! too, so each tensor is read once per step. Otherwise each tensor is read twice (forward and
//! backward), however many terms read it: every gradient then needs this step's batch-wide values.

use crate::batch::{Batch, Input, Shapes, TensorSpec};
use crate::combine::{self, Settings, TermInfo};
use crate::config::{JrcWeighting, LossConfig, Strategy, TermKind};
use crate::engine::{EngineInner, Pipeline};
use crate::error::{Error, Result};
use crate::kernel::{chunk_rows, grid, Bind, Chunk, PassSpec, Source, Work};
use crate::losses::embedding::{self, Ctx};
use crate::losses::jrc::{self, JrcBuffers};
use crate::losses::pairwise::{self, PairBuffers};
use crate::losses::session::{self, Grouping, SessionBuffers, Shared};
use crate::losses::{binary, metric, mining, retrieval, select, softmax, statistics, TermAux};
use crate::report::{read_buffer, StepCounters, StepOutput};
use crate::schedule::{schedule, Form, Group, Resolved};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One dispatch of a pass over a chunk of rows.
struct ChunkDispatch {
    row_base: u64,
    rows: u64,
    params: Option<wgpu::Buffer>,
    grid: (u32, u32),
}

/// A pipeline with its chunks and (cached) bind groups.
struct Pass {
    spec: PassSpec,
    /// The composed WGSL.
    source: String,
    pipeline: Pipeline,
    chunks: Vec<ChunkDispatch>,
    bind_groups: Vec<wgpu::BindGroup>,
}

impl Pass {
    /// Compiles `spec` and checks that it binds every buffer variable its entry point uses.
    fn new(engine: &EngineInner, spec: PassSpec, chunks: Vec<ChunkDispatch>) -> Result<Self> {
        let source = spec.shader.source(&spec.label)?;
        let pipeline = engine.pipeline(&spec.label, &source, spec.entry)?;
        for used in pipeline.bindings.iter() {
            if !spec.binds.iter().any(|b| b.name == used.name) {
                return Err(Error::Gpu(format!(
                    "internal: pass '{}' binds nothing to its variable '{}'",
                    spec.label, used.name
                )));
            }
        }
        Ok(Self {
            spec,
            source,
            pipeline,
            chunks,
            bind_groups: Vec::new(),
        })
    }

    fn record(&self, cpass: &mut wgpu::ComputePass, counters: &mut StepCounters) {
        cpass.set_pipeline(&self.pipeline.pipeline);
        for (chunk, bg) in self.chunks.iter().zip(&self.bind_groups) {
            cpass.set_bind_group(0, bg, &[]);
            cpass.dispatch_workgroups(chunk.grid.0, chunk.grid.1, 1);
            counters.dispatches += 1;
        }
        for t in &self.spec.reads {
            *counters.tensor_passes.entry(t.clone()).or_default() += 1;
        }
    }
}

/// Host-side checks of class ids before upload: (tensor, term, classes, ignore_index).
struct IdCheck {
    tensor: String,
    term: String,
    classes: u64,
    ignore: Option<i64>,
}

/// A host-side check of f32 values: in [0, 1], or exactly 0 or 1 when `binary`.
struct UnitCheck {
    tensor: String,
    term: String,
    what: &'static str,
    binary: bool,
}

/// Buffers, pipelines and bind groups for one config and shapes. See the module docs.
pub struct Plan {
    engine: Arc<EngineInner>,
    config: LossConfig,
    shapes: Shapes,
    /// Upload buffers, created on the first host upload of each tensor.
    uploads: BTreeMap<String, wgpu::Buffer>,
    grads: BTreeMap<String, wgpu::Buffer>,
    internal: Vec<wgpu::Buffer>,
    passes: Vec<Pass>,
    scalars: usize,
    state: usize,
    /// Words of the state buffer (combine's block, then the GHM-C accumulators).
    state_words: usize,
    /// Internal buffers saved with the state after its words (memory banks).
    state_buffers: Vec<usize>,
    /// Memory banks: (first state word of (head, fill), rows M).
    banks: Vec<(u32, u64)>,
    /// Host f32 inputs of embedding terms that must be finite: (tensor, term).
    finite_checks: Vec<(String, String)>,
    readback: wgpu::Buffer,
    /// Buffers the cached bind groups were built with, per read tensor.
    bound: Option<BTreeMap<String, wgpu::Buffer>>,
    id_checks: Vec<IdCheck>,
    /// Host-side checks of values that must lie in [0, 1] (or be exactly 0 or 1).
    unit_checks: Vec<UnitCheck>,
    totals: StepCounters,
    timing: Option<Timing>,
}

/// Timestamp queries around every pass, when enabled (`Plan::enable_pass_timing`).
struct Timing {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
}

fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC
}

impl Plan {
    pub(crate) fn new(
        engine: Arc<EngineInner>,
        config: &LossConfig,
        shapes: &Shapes,
    ) -> Result<Self> {
        config.validate()?;
        let device = engine.device.clone();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let built = Self::build(engine.clone(), config, shapes);
        let oom_error = pollster::block_on(oom.pop());
        let validation_error = pollster::block_on(scope.pop());
        let plan = built?;
        if let Some(e) = oom_error {
            return Err(Error::Gpu(format!("out of memory building the plan: {e}")));
        }
        if let Some(e) = validation_error {
            return Err(Error::Gpu(format!("building the plan: {e}")));
        }
        Ok(plan)
    }

    fn build(engine: Arc<EngineInner>, config: &LossConfig, shapes: &Shapes) -> Result<Self> {
        let device = engine.device.clone();
        let max_storage = engine.limits.max_storage_buffers_per_shader_stage;
        // A row group writes its gradients in its forward pass when every coefficient is known
        // before the step: no flooding or EMA reweighting (they scale by this step's values) and
        // no denominator that depends on the data. Decided before splitting, so the parts of a
        // group agree.
        let fusable =
            !matches!(config.strategy, Strategy::EmaReweight(_)) && config.flooding.is_none();
        let mut groups: Vec<(Group, bool)> = Vec::new();
        for g in schedule(config, shapes)? {
            let fused = fusable
                && matches!(g, Group::Rows { .. })
                && g.terms().iter().all(|t| t.static_denominator().is_some());
            for part in g.split(max_storage, |g| match g {
                Group::Rows { terms, .. } => binary::storage_bindings(terms),
                Group::Softmax { terms, .. } => softmax::storage_bindings(terms),
                Group::Sessions { terms, .. } => pairwise::storage_bindings(terms),
                // One term each; its widest pass binds 9 storage buffers and the chunk.
                Group::Embedding { .. } => 10,
            })? {
                groups.push((part, fused));
            }
        }
        // Fused groups first: their gradients are written before any backward pass runs.
        groups.sort_by_key(|(_, fused)| !fused);
        let any_fused = groups.iter().any(|(_, fused)| *fused);
        let spec_of =
            |name: &str| -> &TensorSpec { shapes.get(name).expect("checked by the scheduler") };
        let max_buffer = engine.limits.max_buffer_size;
        let make = |label: &str, size: u64, usage: wgpu::BufferUsages| -> Result<wgpu::Buffer> {
            if size > max_buffer {
                return Err(Error::Unsupported(format!(
                    "buffer '{label}' needs {size} bytes, the adapter's largest buffer is {max_buffer}"
                )));
            }
            Ok(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(16).next_multiple_of(4),
                usage,
                mapped_at_creation: false,
            }))
        };

        // Gradient buffers for every differentiable input, and the host-side id checks.
        let mut grads = BTreeMap::new();
        let mut id_checks = Vec::new();
        let mut unit_checks = Vec::new();
        let mut finite_checks: Vec<(String, String)> = Vec::new();
        for (g, _) in &groups {
            for t in g.terms() {
                let unit_roles: &[(&str, &'static str)] = match t.form {
                    Form::Sigmoid { .. }
                    | Form::Focal { .. }
                    | Form::Ghm { .. }
                    | Form::F1 { .. } => &[("labels", "binary labels")],
                    Form::ProbCe => &[
                        ("labels", "binary labels"),
                        ("probabilities", "probabilities"),
                    ],
                    Form::Esmm => &[
                        ("ctr_labels", "binary labels"),
                        ("ctcvr_labels", "binary labels"),
                    ],
                    _ => &[],
                };
                for (role, what) in unit_roles {
                    unit_checks.push(UnitCheck {
                        tensor: t.input(role).to_string(),
                        term: t.term.name.clone(),
                        what,
                        binary: false,
                    });
                }
                if let Form::Embedding { .. } = t.form {
                    for (role, _) in t.term.kind.roles() {
                        if let Some(n) = t.term.input(role) {
                            if spec_of(n).dtype == crate::batch::DType::F32
                                && !finite_checks.iter().any(|(f, _)| f == n)
                            {
                                finite_checks.push((n.to_string(), t.term.name.clone()));
                            }
                        }
                    }
                }
                if let Form::Jrc { .. } = t.form {
                    unit_checks.push(UnitCheck {
                        tensor: t.input("labels").to_string(),
                        term: t.term.name.clone(),
                        what: "jrc_loss labels",
                        binary: true,
                    });
                }
                for role in t.term.kind.differentiable_roles() {
                    let name = t.input(role).to_string();
                    if !grads.contains_key(&name) {
                        let spec = spec_of(&name);
                        grads.insert(
                            name.clone(),
                            make(&format!("grad/{name}"), spec.bytes(), storage_usage())?,
                        );
                    }
                }
                if let Form::Softmax {
                    params,
                    classes,
                    ids: true,
                    ..
                } = &t.form
                {
                    id_checks.push(IdCheck {
                        tensor: t.input("labels").to_string(),
                        term: t.term.name.clone(),
                        classes: *classes,
                        ignore: params.ignore_index,
                    });
                }
            }
        }

        // Batch-wide terms (GHM-C, OHEM, F1): their regions of the `aux` buffer, OHEM key
        // buffers, and GHM-C accumulators. The accumulators of every GHM-C term form one block at
        // the start of `aux` (this step's new values) and one at the end of the state (the
        // committed values): `weigh` copies the first onto the second when the step succeeds.
        let n_terms = config.losses.len();
        let mut term_aux: BTreeMap<usize, TermAux> = BTreeMap::new();
        let global_terms: Vec<&Resolved> = groups
            .iter()
            .flat_map(|(g, _)| g.terms())
            .filter(|t| t.form.needs_statistics())
            .collect();
        let mut aux_cursor = 0u32;
        let mut state_cursor = combine::state_len(n_terms) as u32;
        for t in &global_terms {
            if let Form::Ghm { bins, .. } = t.form {
                term_aux.insert(
                    t.slot,
                    TermAux {
                        pending: aux_cursor,
                        acc: state_cursor,
                        ..Default::default()
                    },
                );
                aux_cursor += bins;
                state_cursor += bins;
            }
        }
        let commit = (0u32, combine::state_len(n_terms) as u32, aux_cursor);
        for t in &global_terms {
            let a = term_aux.entry(t.slot).or_default();
            a.base = aux_cursor;
            aux_cursor += statistics::aux_words(&t.form);
        }
        // Pairwise OHEM: a selection state each. JRC with learned weights: u1, u2 and their
        // optimiser moments in the state.
        let mut jrc_state: BTreeMap<usize, u32> = BTreeMap::new();
        let mut bank_state: BTreeMap<usize, u32> = BTreeMap::new();
        for (g, _) in &groups {
            for t in g.terms() {
                match &t.form {
                    Form::Pair { ohem: Some(_), .. } => {
                        term_aux.entry(t.slot).or_default().base = aux_cursor;
                        aux_cursor += select::STATE_WORDS;
                    }
                    Form::Jrc {
                        weighting: JrcWeighting::Uncertainty(_),
                        ..
                    } => {
                        jrc_state.insert(t.slot, state_cursor);
                        state_cursor += combine::JRC_STATE_WORDS;
                    }
                    Form::Embedding { .. }
                        if matches!(t.term.kind, TermKind::CrossBatchSoftmax { .. }) =>
                    {
                        bank_state.insert(t.slot, state_cursor);
                        state_cursor += retrieval::BANK_STATE_WORDS;
                    }
                    _ => {}
                }
            }
        }
        let state_words = state_cursor as usize;

        // Internal buffers: partials (sized below), scalars, state, settings, term table, aux.
        let mut internal: Vec<wgpu::Buffer> = Vec::new();
        let partials = 0usize;
        internal.push(make("partials", 16, storage_usage())?); // resized once the layout is known
        let scalars = internal.len();
        internal.push(make(
            "scalars",
            combine::scalars_len(n_terms) as u64 * 4,
            storage_usage(),
        )?);
        let state = internal.len();
        internal.push(make("state", state_words as u64 * 4, storage_usage())?);
        let settings = internal.len();
        internal.push(make(
            "settings",
            std::mem::size_of::<Settings>() as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?);
        let term_table = internal.len();
        internal.push(make(
            "terms",
            (std::mem::size_of::<TermInfo>() * n_terms) as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?);
        let aux = internal.len();
        internal.push(make("aux", aux_cursor as u64 * 4, storage_usage())?);
        for t in &global_terms {
            if binary::is_ohem(t) {
                internal.push(make(
                    &format!("ohem_keys/{}", t.term.name),
                    t.rows * 4,
                    storage_usage(),
                )?);
                term_aux.get_mut(&t.slot).expect("registered above").keys =
                    Some(internal.len() - 1);
            }
        }
        let buffers = binary::Buffers {
            partials,
            scalars,
            aux,
            state,
        };

        // Family passes, in group order; a gradient written by an earlier group is accumulated.
        let mut written: Vec<String> = Vec::new();
        struct GroupPasses {
            /// Every pass before the combine, in order.
            forward: Vec<PassSpec>,
            /// How the passes writing partials are dispatched (the partials' stride).
            partial_work: Work,
            backward: Vec<PassSpec>,
            rows: u64,
            slots: Vec<usize>,
            /// JRC terms: the partial slot of their listwise part.
            ge_slots: Vec<Option<usize>>,
            /// Partial slots per workgroup: the terms', then any statistics' or JRC parts'.
            partial_slots: usize,
            static_denominators: Vec<f64>,
            /// Every row-bound buffer must fit one binding (the session sweeps index them whole).
            single_chunk: bool,
        }
        let mut group_passes = Vec::new();
        // Internal buffers that are part of the saved state (memory banks), in order.
        let mut state_buffers: Vec<usize> = Vec::new();
        let mut banks: Vec<(u32, u64)> = Vec::new();
        for (g, fused) in &groups {
            let static_denominators = g
                .terms()
                .iter()
                .map(|t| t.static_denominator().unwrap_or(0.0))
                .collect();
            match g {
                Group::Rows { rows, terms } => {
                    // Workgroup memory of the statistics pass: the reduction buffer, one counter
                    // per GHM-C bin, one per OHEM term.
                    let shared: u64 = 16 * 256
                        + terms
                            .iter()
                            .map(|t| match t.form {
                                Form::Ghm { bins, .. } => 4 * bins as u64,
                                Form::Focal { ohem: Some(_), .. } => 4,
                                _ => 0,
                            })
                            .sum::<u64>();
                    let limit = engine.limits.max_compute_workgroup_storage_size as u64;
                    if shared > limit {
                        return Err(Error::Unsupported(format!(
                            "the ghm_c terms over {rows} rows need {shared} bytes of workgroup \
                             memory for their bins, the adapter has {limit}; use fewer bins"
                        )));
                    }
                    let aux_of = |slot: usize| term_aux.get(&slot).copied().unwrap_or_default();
                    let p = binary::passes(terms, *rows, buffers, &aux_of, *fused, &|n| {
                        written.iter().any(|w| w == n)
                    });
                    written.extend(p.grads.iter().cloned());
                    let partial_work = p.forward.work;
                    let mut forward = p.pre;
                    forward.push(p.forward);
                    group_passes.push(GroupPasses {
                        forward,
                        partial_work,
                        backward: p.backward.into_iter().collect(),
                        rows: *rows,
                        slots: terms.iter().map(|t| t.slot).collect(),
                        ge_slots: vec![None; terms.len()],
                        partial_slots: p.partial_slots,
                        static_denominators,
                        single_chunk: false,
                    });
                }
                Group::Softmax { logits, terms } => {
                    let rows = terms[0].rows;
                    let classes = match terms[0].form {
                        Form::Softmax { classes, .. } => classes,
                        _ => unreachable!(),
                    };
                    let mut buffers = Vec::new();
                    for t in terms {
                        let class_weights = match &t.form {
                            Form::Softmax { params, .. } => {
                                params.class_weights.as_ref().map(|w| {
                                    let data: Vec<f32> = w.iter().map(|&x| x as f32).collect();
                                    let b = make(
                                        &format!("class_weights/{}", t.term.name),
                                        classes * 4,
                                        storage_usage(),
                                    );
                                    b.map(|b| {
                                        engine.queue.write_buffer(
                                            &b,
                                            0,
                                            bytemuck::cast_slice(&data),
                                        );
                                        internal.push(b);
                                        internal.len() - 1
                                    })
                                })
                            }
                            _ => None,
                        }
                        .transpose()?;
                        internal.push(make(
                            &format!("row_stats/{}", t.term.name),
                            rows * 8,
                            storage_usage(),
                        )?);
                        buffers.push(softmax::TermBuffers {
                            class_weights,
                            stats: internal.len() - 1,
                        });
                    }
                    let accumulate = written.iter().any(|w| w == logits);
                    let p = softmax::passes(
                        softmax::GroupInput {
                            logits,
                            classes,
                            terms,
                            buffers: &buffers,
                        },
                        partials,
                        scalars,
                        &|n| spec_of(n).dtype,
                        accumulate,
                    );
                    written.push(logits.clone());
                    group_passes.push(GroupPasses {
                        partial_work: p.forward.work,
                        forward: vec![p.forward],
                        backward: vec![p.backward],
                        rows,
                        slots: terms.iter().map(|t| t.slot).collect(),
                        ge_slots: vec![None; terms.len()],
                        partial_slots: terms.len(),
                        static_denominators,
                        single_chunk: false,
                    });
                }
                Group::Sessions {
                    rows,
                    session,
                    terms,
                } => {
                    let internal_rows = |internal: &mut Vec<wgpu::Buffer>,
                                         label: String,
                                         bytes_per_row: u64|
                     -> Result<usize> {
                        internal.push(make(&label, rows * bytes_per_row, storage_usage())?);
                        Ok(internal.len() - 1)
                    };
                    let mut forward = Vec::new();
                    let grouping = match session {
                        Some(name) => {
                            let mut idx = Vec::new();
                            for (i, size) in SessionBuffers::sizes(*rows).iter().enumerate() {
                                internal.push(make(
                                    &format!("session/{name}/{i}"),
                                    *size,
                                    storage_usage(),
                                )?);
                                idx.push(internal.len() - 1);
                            }
                            let b = SessionBuffers {
                                keys: [idx[0], idx[1]],
                                vals: [idx[2], idx[3]],
                                counts: idx[4],
                                bounds: idx[5],
                            };
                            forward.extend(session::passes(
                                &format!("sessions[{name}]"),
                                name,
                                spec_of(name).dtype,
                                b,
                            ));
                            Grouping::Sessions {
                                bounds: b.bounds,
                                order: b.vals[0],
                            }
                        }
                        None => Grouping::Batch,
                    };
                    let shared = Shared {
                        grouping,
                        partials,
                        scalars,
                        aux,
                    };
                    let mut backward = Vec::new();
                    let mut ge_slots = Vec::new();
                    let mut next_slot = terms.len();
                    for (k, t) in terms.iter().enumerate() {
                        let logits = t.input("logits").to_string();
                        let accumulate = written.contains(&logits);
                        let name = &t.term.name;
                        let passes = match t.form {
                            Form::Pair { .. } => {
                                ge_slots.push(None);
                                let buffers = PairBuffers {
                                    rows: internal_rows(
                                        &mut internal,
                                        format!("pair_rows/{name}"),
                                        16,
                                    )?,
                                    grad: internal_rows(
                                        &mut internal,
                                        format!("pair_grad/{name}"),
                                        4,
                                    )?,
                                    select_base: term_aux.get(&t.slot).map(|a| a.base).unwrap_or(0),
                                };
                                pairwise::passes(t, k as u32, shared, buffers, accumulate)
                            }
                            Form::Jrc { .. } => {
                                ge_slots.push(Some(next_slot));
                                next_slot += 1;
                                let buffers = JrcBuffers {
                                    rows: internal_rows(
                                        &mut internal,
                                        format!("jrc_rows/{name}"),
                                        16,
                                    )?,
                                    rows_lse: internal_rows(
                                        &mut internal,
                                        format!("jrc_rows_lse/{name}"),
                                        16,
                                    )?,
                                    grad: internal_rows(
                                        &mut internal,
                                        format!("jrc_grad/{name}"),
                                        8,
                                    )?,
                                };
                                jrc::passes(
                                    t,
                                    k as u32,
                                    (next_slot - 1) as u32,
                                    shared,
                                    buffers,
                                    accumulate,
                                )
                            }
                            _ => unreachable!("session groups hold pairwise and JRC terms"),
                        };
                        written.push(logits);
                        forward.extend(passes.forward);
                        backward.push(passes.apply);
                    }
                    group_passes.push(GroupPasses {
                        forward,
                        partial_work: Work::Rows {
                            rows_per_wg: crate::kernel::WG,
                        },
                        backward,
                        rows: *rows,
                        slots: terms.iter().map(|t| t.slot).collect(),
                        ge_slots,
                        partial_slots: next_slot,
                        static_denominators,
                        single_chunk: true,
                    });
                }
                Group::Embedding { terms } => {
                    let t = &terms[0];
                    let Form::Embedding { dim } = t.form else {
                        unreachable!("embedding groups hold embedding terms")
                    };
                    let written_before = written.clone();
                    let mut alloc = |label: String, bytes: u64| -> Result<usize> {
                        internal.push(make(&label, bytes, storage_usage())?);
                        Ok(internal.len() - 1)
                    };
                    let mut ctx = Ctx {
                        alloc: &mut alloc,
                        partials,
                        scalars,
                        state,
                        workgroup_bytes: engine.limits.max_compute_workgroup_storage_size as u64,
                        tiled: !engine.summary.backend.eq_ignore_ascii_case("gl"),
                        max_binding: engine.max_binding(),
                        dtype: &|n| spec_of(n).dtype,
                        written: &|n| written_before.iter().any(|w| w == n),
                    };
                    let p = match t.term.kind {
                        TermKind::NegativeMining { .. } => mining::passes(t, dim, &mut ctx)?,
                        TermKind::Circle { .. } | TermKind::MultiSimilarity { .. } => {
                            metric::passes(t, dim, &mut ctx)?
                        }
                        _ => retrieval::passes(t, dim, bank_state.get(&t.slot).copied(), &mut ctx)?,
                    };
                    written.extend(p.grads);
                    if let Some(bank) = p.bank {
                        banks.push((bank.state_word, bank.rows));
                        state_buffers.extend(bank.parts.iter().map(|&(b, _, _)| b));
                        state_buffers.push(bank.bias);
                        state_buffers.push(bank.ids);
                    }
                    group_passes.push(GroupPasses {
                        forward: p.forward,
                        partial_work: embedding::ROWS,
                        backward: p.backward,
                        rows: p.rows,
                        slots: vec![t.slot],
                        ge_slots: vec![None],
                        partial_slots: 1,
                        static_denominators,
                        single_chunk: true,
                    });
                }
            }
        }

        // Chunks, partial layout and chunk parameters.
        let max_binding = engine.max_binding();
        let align = engine.limits.min_storage_buffer_offset_alignment as u64;
        let max_dim = engine.limits.max_compute_workgroups_per_dimension;
        let mut term_table_data = vec![TermInfo::default(); n_terms];
        let mut partial_cursor = 0u64;
        let mut forwards = Vec::new();
        let mut backwards = Vec::new();
        for gp in group_passes {
            let row_bytes: Vec<u64> = gp
                .forward
                .iter()
                .chain(gp.backward.iter())
                .flat_map(|p| p.binds.iter())
                .filter_map(|b| match &b.bind {
                    Bind::Rows { row_bytes, .. } => Some(*row_bytes),
                    _ => None,
                })
                .collect();
            let per_chunk = chunk_rows(gp.rows, &row_bytes, max_binding, align).ok_or_else(|| {
                Error::Unsupported(format!(
                    "one row of {} needs {} bytes, more than one storage binding ({max_binding} bytes)",
                    gp.forward[0].label,
                    row_bytes.iter().max().unwrap_or(&0)
                ))
            })?;
            // The session sweeps bind their sorted rows (16 bytes each) whole.
            if gp.single_chunk && (per_chunk < gp.rows || gp.rows * 16 > max_binding) {
                return Err(Error::Unsupported(format!(
                    "{}: {} rows of pairwise or JRC terms need more than one storage binding \
                     ({max_binding} bytes); split the batch",
                    gp.forward[0].label, gp.rows
                )));
            }
            let ranges: Vec<(u64, u64)> = (0..gp.rows)
                .step_by(per_chunk as usize)
                .map(|s| (s, per_chunk.min(gp.rows - s)))
                .collect();
            let fwd_wgs: Vec<u64> = ranges
                .iter()
                .map(|&(_, n)| gp.partial_work.workgroups(n))
                .collect();
            let stride: u64 = fwd_wgs.iter().sum();
            for (k, &slot) in gp.slots.iter().enumerate() {
                let t = &config.losses[slot];
                let mut info = TermInfo {
                    partial_base: (partial_cursor + k as u64 * stride) as u32,
                    partial_count: stride as u32,
                    reduction: combine::reduction_code(t.effective_reduction()),
                    learn: t.learn_loss_weight as u32,
                    rows: gp.rows as f32,
                    weight: t.weight as f32,
                    half: if t.kind.is_regression() { 0.5 } else { 1.0 },
                    static_denom: gp.static_denominators[k] as f32,
                    ..Default::default()
                };
                match &t.kind {
                    crate::config::TermKind::Pairwise { ohem_ratio, .. } => {
                        info.kind = combine::KIND_PAIRS;
                        if *ohem_ratio < 1.0 {
                            // OHEM: plain mean over the kept positive pairs, counted in `.z`.
                            info.reduction = 0;
                        }
                    }
                    TermKind::InBatchSoftmax(_)
                    | TermKind::CrossBatchSoftmax { .. }
                    | TermKind::Contrastive { .. }
                    | TermKind::NegativeMining { .. }
                    | TermKind::Circle { .. }
                    | TermKind::MultiSimilarity { .. } => {
                        // Partials (Σ w·l, Σ w, #{w ≠ 0}, #counted rows): `mean` divides by `.w`.
                        info.kind = combine::KIND_PAIRS;
                    }
                    crate::config::TermKind::Jrc {
                        alpha, weighting, ..
                    } => {
                        info.kind = combine::KIND_JRC;
                        info.alpha = *alpha as f32;
                        let ge = gp.ge_slots[k].expect("JRC terms have a listwise slot") as u64;
                        info.ge_partial_base = (partial_cursor + ge * stride) as u32;
                        if let JrcWeighting::Uncertainty(opt) = weighting {
                            info.jrc_learn = 1;
                            info.jrc_state = jrc_state[&slot];
                            let (code, [lr, b1, b2, eps]) = combine::optimizer_words(opt);
                            info.optimizer = code;
                            info.learning_rate = lr;
                            info.beta1 = b1;
                            info.beta2 = b2;
                            info.epsilon = eps;
                        }
                    }
                    _ => {}
                }
                term_table_data[slot] = info;
            }
            let group_base = partial_cursor;
            partial_cursor += stride * gp.partial_slots as u64;
            let specs = gp
                .forward
                .into_iter()
                .map(|p| (p, true))
                .chain(gp.backward.into_iter().map(|b| (b, false)));
            for (spec, is_forward) in specs {
                let mut chunks = Vec::new();
                let mut wg_base = group_base;
                // A one-workgroup pass of the group (prepare, selection pick) sees the whole group.
                let whole = [(0u64, gp.rows)];
                let pass_ranges: &[(u64, u64)] = match spec.work {
                    Work::Single => &whole,
                    Work::Rows { .. } => &ranges,
                };
                for &(row_base, rows) in pass_ranges {
                    let wgs = spec.work.workgroups(rows);
                    let chunk = Chunk {
                        row_base: row_base as u32,
                        rows: rows as u32,
                        wgs: wgs as u32,
                        wg_base: wg_base as u32,
                        term_stride: stride as u32,
                    };
                    let words = spec.params.with_chunk(&chunk);
                    let params = make(
                        &format!("{} chunk", spec.label),
                        words.len() as u64 * 4,
                        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    )?;
                    engine
                        .queue
                        .write_buffer(&params, 0, bytemuck::cast_slice(&words));
                    if is_forward {
                        wg_base += wgs;
                    }
                    chunks.push(ChunkDispatch {
                        row_base,
                        rows,
                        params: Some(params),
                        grid: grid(wgs, max_dim)?,
                    });
                }
                let pass = Pass::new(&engine, spec, chunks)?;
                if is_forward {
                    forwards.push(pass);
                } else {
                    backwards.push(pass);
                }
            }
        }
        if partial_cursor > u32::MAX as u64 {
            return Err(Error::Unsupported(
                "too many partial sums for one step".into(),
            ));
        }
        internal[partials] = make("partials", partial_cursor * 16, storage_usage())?;

        let mut combine_passes = Vec::new();
        let [coefficients, reduce, weigh] =
            combine::passes(settings, term_table, partials, scalars, state, aux);
        let mut combine_specs = vec![reduce, weigh];
        if any_fused {
            combine_specs.insert(0, coefficients);
        }
        for spec in combine_specs {
            let chunk = ChunkDispatch {
                row_base: 0,
                rows: 1,
                params: None,
                grid: (1, 1),
            };
            combine_passes.push(Pass::new(&engine, spec, vec![chunk])?);
        }
        let mut settings_data = Settings::new(config);
        (
            settings_data.commit_src,
            settings_data.commit_dst,
            settings_data.commit_count,
        ) = commit;
        engine
            .queue
            .write_buffer(&internal[settings], 0, bytemuck::bytes_of(&settings_data));
        engine.queue.write_buffer(
            &internal[term_table],
            0,
            bytemuck::cast_slice(&term_table_data),
        );
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scalars readback"),
            size: combine::scalars_len(n_terms) as u64 * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // [coefficients], forward passes, combine, weigh, backward passes.
        let mut passes = Vec::new();
        if any_fused {
            passes.push(combine_passes.remove(0));
        }
        passes.extend(forwards);
        passes.extend(combine_passes);
        passes.extend(backwards);
        let plan = Plan {
            engine,
            config: config.clone(),
            shapes: shapes.clone(),
            uploads: BTreeMap::new(),
            grads,
            internal,
            passes,
            scalars,
            state,
            state_words,
            state_buffers,
            banks,
            finite_checks,
            readback,
            bound: None,
            id_checks,
            unit_checks,
            totals: StepCounters::default(),
            timing: None,
        };
        // Fresh buffers are zero, and so are the banks of the initial state.
        plan.write_state(&plan.initial_state()[..plan.state_words]);
        Ok(plan)
    }

    fn state_buffer_words(&self) -> usize {
        self.state_buffers
            .iter()
            .map(|&i| (self.internal[i].size() / 4) as usize)
            .sum()
    }

    /// The state a fresh plan starts with: its words, then the (zeroed) memory banks.
    fn initial_state(&self) -> Vec<u32> {
        let mut words = vec![0u32; self.state_words + self.state_buffer_words()];
        if let crate::config::Strategy::EmaReweight(e) = &self.config.strategy {
            words[combine::ST_THETA] = (e.theta0 as f32).to_bits();
        }
        words
    }

    /// Writes state words: the state buffer's, then (when given) the memory banks'.
    fn write_state(&self, words: &[u32]) {
        let (head, mut rest) = words.split_at(self.state_words.min(words.len()));
        self.engine
            .queue
            .write_buffer(&self.internal[self.state], 0, bytemuck::cast_slice(head));
        for &i in &self.state_buffers {
            let b = &self.internal[i];
            let n = ((b.size() / 4) as usize).min(rest.len());
            if n > 0 {
                self.engine
                    .queue
                    .write_buffer(b, 0, bytemuck::cast_slice(&rest[..n]));
            }
            rest = &rest[n..];
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

    /// Counters summed over every step so far.
    pub fn counters(&self) -> &StepCounters {
        &self.totals
    }

    /// The gradient buffer of a tensor (valid until the next step writes it).
    pub fn grad(&self, tensor: &str) -> Result<&wgpu::Buffer> {
        self.grads.get(tensor).ok_or_else(|| {
            Error::tensor(
                tensor,
                None,
                format!(
                    "no gradient: not a differentiable input of this plan (those are: {})",
                    self.grads.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    pub(crate) fn engine(&self) -> &EngineInner {
        &self.engine
    }

    pub(crate) fn readback(&self) -> &wgpu::Buffer {
        &self.readback
    }

    /// Fills every output (gradients and scalars) with NaN, so that a test can tell an element
    /// the next step did not write.
    pub fn poison_outputs(&self) {
        for b in self.grads.values().chain([&self.internal[self.scalars]]) {
            let words = vec![f32::NAN.to_bits(); (b.size() / 4) as usize];
            self.engine
                .queue
                .write_buffer(b, 0, bytemuck::cast_slice(&words));
        }
        self.engine.queue.submit([]);
    }

    /// Reads back the GPU-resident state (learned weights, optimiser moments, EMA θ, step count)
    /// as bytes for a checkpoint. Blocks until the GPU is idle.
    pub fn save_state(&self) -> Result<Vec<u8>> {
        let b = &self.internal[self.state];
        let bytes = read_buffer(&self.engine, b, 0, b.size())?;
        let mut words: Vec<u32> = bytemuck::cast_slice(&bytes)[..self.state_words].to_vec();
        for &i in &self.state_buffers {
            let b = &self.internal[i];
            let bytes = read_buffer(&self.engine, b, 0, b.size())?;
            words.extend_from_slice(bytemuck::cast_slice(&bytes));
        }
        Ok(crate::state::encode(
            crate::state::fingerprint(&self.config),
            &words,
        ))
    }

    /// Restores a state saved by a plan of the same config; the next step continues exactly as
    /// the saved run would have.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let words = crate::state::decode(
            bytes,
            crate::state::fingerprint(&self.config),
            self.state_words + self.state_buffer_words(),
        )?;
        self.write_state(&words);
        Ok(())
    }

    /// Marks every memory bank (`cross_batch_softmax`) full, keeping its rows as they are (zero in
    /// a fresh plan), so that a benchmark measures the cost of a full bank without first stepping
    /// M/B times. The next step uses all M rows as negatives.
    pub fn fill_banks(&mut self) {
        for &(word, rows) in &self.banks {
            self.engine.queue.write_buffer(
                &self.internal[self.state],
                (word as u64 + 1) * 4,
                bytemuck::bytes_of(&(rows as u32)),
            );
        }
    }

    /// Restores the state a fresh plan starts with.
    pub fn reset_state(&mut self) {
        let words = self.initial_state();
        self.write_state(&words);
    }

    /// Checks the batch against the plan before anything is uploaded or recorded, so that a bad
    /// batch changes nothing.
    fn check(&self, batch: &Batch) -> Result<()> {
        for pass in &self.passes {
            for name in &pass.spec.reads {
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
                match input {
                    Input::Buffer(b) => {
                        if !b.usage().contains(wgpu::BufferUsages::STORAGE) {
                            return Err(Error::tensor(
                                name,
                                None,
                                "the buffer needs BufferUsages::STORAGE",
                            ));
                        }
                        if b.size() < spec.bytes() {
                            return Err(Error::tensor(
                                name,
                                None,
                                format!(
                                    "the buffer holds {} bytes, shape {:?} needs {}",
                                    b.size(),
                                    spec.shape,
                                    spec.bytes()
                                ),
                            ));
                        }
                    }
                    _ => {
                        let dtype = input.host_dtype().unwrap();
                        let len = input.host_len().unwrap();
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
                    }
                }
            }
        }
        for c in &self.unit_checks {
            if let Some(Input::F32(v)) = batch.get(&c.tensor) {
                let bad = |x: &f32| {
                    if c.binary {
                        *x != 0.0 && *x != 1.0
                    } else {
                        !(0.0..=1.0).contains(x)
                    }
                };
                if let Some(row) = v.iter().position(bad) {
                    let rule = if c.binary {
                        "must be 0 or 1"
                    } else {
                        "must lie in [0, 1]"
                    };
                    return Err(Error::tensor(
                        &c.tensor,
                        Some(&c.term),
                        format!("{} {rule}; row {row} holds {}", c.what, v[row]),
                    ));
                }
            }
        }
        for (tensor, term) in &self.finite_checks {
            if let Some(Input::F32(v)) = batch.get(tensor) {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    let spec = self.shapes.get(tensor).expect("plan tensors have shapes");
                    return Err(Error::tensor(
                        tensor,
                        Some(term),
                        format!(
                            "values must be finite; element {i} of shape {:?} holds {}",
                            spec.shape, v[i]
                        ),
                    ));
                }
            }
        }
        for c in &self.id_checks {
            let ids: Box<dyn Iterator<Item = i64>> = match batch.get(&c.tensor) {
                Some(Input::I32(v)) => Box::new(v.iter().map(|&x| x as i64)),
                Some(Input::U32(v)) => Box::new(v.iter().map(|&x| x as i64)),
                _ => continue, // device buffers are checked on the GPU (invalid rows are reported)
            };
            for (row, y) in ids.enumerate() {
                if Some(y) != c.ignore && !(0..c.classes as i64).contains(&y) {
                    return Err(Error::tensor(
                        &c.tensor,
                        Some(&c.term),
                        format!(
                            "class id {y} at row {row} is outside [0, {}) and is not ignore_index",
                            c.classes
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs one step: uploads host inputs, records every pass into one command buffer and
    /// submits it once. Nothing is read back; see [`StepOutput`].
    pub fn step(&mut self, batch: &Batch) -> Result<StepOutput<'_>> {
        self.check(batch)?;
        if let Some(e) = self.engine.take_uncaptured() {
            return Err(Error::Gpu(e));
        }
        let mut counters = StepCounters::default();
        // Upload host tensors; resolve every read tensor to a buffer.
        let mut sources: BTreeMap<String, wgpu::Buffer> = BTreeMap::new();
        let names: Vec<String> = self
            .passes
            .iter()
            .flat_map(|p| p.spec.reads.iter().cloned())
            .collect();
        for name in names {
            if sources.contains_key(&name) {
                continue;
            }
            let buffer = match batch.get(&name).expect("checked") {
                Input::Buffer(b) => (*b).clone(),
                input => {
                    let bytes = input.host_bytes().unwrap();
                    let spec = self.shapes.get(&name).unwrap();
                    let buffer = match self.uploads.get(&name) {
                        Some(b) => b.clone(),
                        None => {
                            let b = self.engine.device.create_buffer(&wgpu::BufferDescriptor {
                                label: Some(&format!("input/{name}")),
                                size: spec.bytes().max(16).next_multiple_of(4),
                                usage: storage_usage(),
                                mapped_at_creation: false,
                            });
                            self.uploads.insert(name.clone(), b.clone());
                            b
                        }
                    };
                    if !bytes.is_empty() {
                        self.engine.queue.write_buffer(&buffer, 0, bytes);
                    }
                    counters.bytes_uploaded += bytes.len() as u64;
                    buffer
                }
            };
            sources.insert(name, buffer);
        }
        if self.bound.as_ref() != Some(&sources) {
            self.rebuild_bind_groups(&sources);
            self.bound = Some(sources);
        }

        let scope = self
            .engine
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder =
            self.engine
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("lossfuse step"),
                });
        match &self.timing {
            None => {
                let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("lossfuse step"),
                    timestamp_writes: None,
                });
                for pass in &self.passes {
                    pass.record(&mut cpass, &mut counters);
                }
            }
            Some(timing) => {
                // One compute pass per kernel, so each gets its own timestamps.
                for (i, pass) in self.passes.iter().enumerate() {
                    let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&pass.spec.label),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &timing.queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    pass.record(&mut cpass, &mut counters);
                }
                let n = 2 * self.passes.len() as u32;
                encoder.resolve_query_set(&timing.queries, 0..n, &timing.resolved, 0);
                encoder.copy_buffer_to_buffer(
                    &timing.resolved,
                    0,
                    &timing.readback,
                    0,
                    n as u64 * 8,
                );
            }
        }
        let scalars = &self.internal[self.scalars];
        encoder.copy_buffer_to_buffer(scalars, 0, &self.readback, 0, self.readback.size());
        self.engine.queue.submit([encoder.finish()]);
        counters.submissions += 1;
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("recording the step: {e}")));
        }
        self.totals.add(&counters);
        Ok(StepOutput::new(self, counters))
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
        let n = 2 * self.passes.len() as u32;
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: n as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        self.timing = Some(Timing {
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
        });
        Ok(())
    }

    /// GPU seconds of every pass of the last step (label, seconds), when timing is enabled.
    pub fn pass_times(&self) -> Result<Vec<(String, f64)>> {
        let timing = self
            .timing
            .as_ref()
            .ok_or_else(|| Error::Unsupported("pass timing is not enabled".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        timing
            .readback
            .map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r);
            });
        self.engine
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("map callback dropped".into()))?
            .map_err(|e| Error::Gpu(format!("mapping timestamps: {e}")))?;
        let ticks: Vec<u64> = bytemuck::cast_slice(
            &timing
                .readback
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("reading timestamps: {e}")))?,
        )
        .to_vec();
        timing.readback.unmap();
        let period = self.engine.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(self
            .passes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                (p.spec.label.clone(), dt as f64 * period)
            })
            .collect())
    }

    fn rebuild_bind_groups(&mut self, sources: &BTreeMap<String, wgpu::Buffer>) {
        let device = &self.engine.device;
        for pass in &mut self.passes {
            let layout = pass.pipeline.pipeline.get_bind_group_layout(0);
            let resolve = |s: &Source| -> &wgpu::Buffer {
                match s {
                    Source::Input(n) => &sources[n],
                    Source::Grad(n) => &self.grads[n],
                    Source::Internal(k) => &self.internal[*k],
                }
            };
            pass.bind_groups = pass
                .chunks
                .iter()
                .map(|chunk| {
                    let entries: Vec<wgpu::BindGroupEntry> = pass
                        .pipeline
                        .bindings
                        .iter()
                        .map(|used| {
                            let bind = &pass
                                .spec
                                .binds
                                .iter()
                                .find(|b| b.name == used.name)
                                .expect("checked when the pass was built")
                                .bind;
                            let resource = match bind {
                                Bind::Chunk => chunk
                                    .params
                                    .as_ref()
                                    .expect("chunked pass")
                                    .as_entire_binding(),
                                Bind::Whole(s) => resolve(s).as_entire_binding(),
                                Bind::Rows { source, row_bytes } => {
                                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                        buffer: resolve(source),
                                        offset: chunk.row_base * row_bytes,
                                        size: std::num::NonZeroU64::new(chunk.rows * row_bytes),
                                    })
                                }
                            };
                            wgpu::BindGroupEntry {
                                binding: used.binding,
                                resource,
                            }
                        })
                        .collect();
                    device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&pass.spec.label),
                        layout: &layout,
                        entries: &entries,
                    })
                })
                .collect();
        }
    }

    /// Describes the passes (for docs, `lossfuse bench` and tests): label, dispatches, tensors read.
    pub fn describe(&self) -> Vec<(String, usize, Vec<String>)> {
        self.passes
            .iter()
            .map(|p| (p.spec.label.clone(), p.chunks.len(), p.spec.reads.clone()))
            .collect()
    }

    /// The generated WGSL of every pass (label, source), for inspection and validation.
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
    /// value is not tied beyond k, so with OHEM this is an upper bound.
    pub fn bytes_per_step(&self) -> u64 {
        let mut bytes = 0u64;
        for p in &self.passes {
            for t in &p.spec.reads {
                bytes += self.shapes.get(t).map(|s| s.bytes()).unwrap_or(0);
            }
            for b in &p.spec.binds {
                if let Bind::Rows {
                    source: Source::Internal(_),
                    row_bytes,
                } = &b.bind
                {
                    bytes += p.chunks.iter().map(|c| c.rows * row_bytes).sum::<u64>();
                }
            }
        }
        bytes + self.grads.values().map(|b| b.size()).sum::<u64>()
    }
}
