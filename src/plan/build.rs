//! Building a plan without a device: every group's passes, every internal buffer as a request,
//! the regions of the shared word buffers, the term table and the host checks. What the adapter
//! contributes is only its limits ([`Limits`]), so the whole build runs (and is tested) without
//! one; [`super::Plan::new`] then makes the buffers and pipelines.
//!
//! Group order: fused row groups first (their gradients are written before any backward pass),
//! then the rest in config order. A gradient that an earlier group already wrote is added to.

use super::alloc::{BufferRequest, Buffers};
pub(crate) use super::alloc::{Core, Limits};
use super::checks::HostChecks;
use super::chunking::{self, GroupPasses, PassBlueprint};
use super::persist::{StateKind, StateMap, StateRegion};
use crate::batch::{DType, Shapes, TensorSpec};
use crate::combine::{self, Settings, TermInfo};
use crate::config::{LossConfig, Strategy};
use crate::error::{Error, Result};
use crate::kernel::{Bind, PassSpec, Source, Work, WG};
use crate::layout::{Layout, LayoutBuilder, PLAN};
use crate::losses::common::TermAux;
use crate::losses::embedding::Ctx;
use crate::losses::family::{Form, Resolved};
use crate::losses::labels;
use crate::losses::session::{self, Grouping, SessionBuffers, SessionCtx, Shared};
use crate::losses::statistics::BatchWide;
use crate::losses::{pairwise, rows, softmax, statistics};
use crate::schedule::{schedule, Group};
use std::collections::BTreeMap;

/// A plan before it meets the device.
#[derive(Debug)]
pub(crate) struct Blueprint {
    pub buffers: Vec<BufferRequest>,
    /// Bytes of the gradient of every differentiable input.
    pub grads: BTreeMap<String, u64>,
    /// Every pass, in the order a step runs them.
    pub passes: Vec<PassBlueprint>,
    pub core: Core,
    /// Words of the state buffer.
    pub state_words: usize,
    /// Internal buffers saved with the state after its words (memory banks), in order.
    pub state_buffers: Vec<usize>,
    /// Memory banks: (first state word of (head, fill), rows M).
    pub banks: Vec<(u32, u64)>,
    /// What the state words hold.
    pub state_map: StateMap,
    pub checks: HostChecks,
    /// The internal buffer and rows of each per-row prediction, by term name.
    pub predictions: BTreeMap<String, (usize, u64)>,
}

/// Builds the blueprint of `config` over `shapes` for an adapter with `limits`.
pub(crate) fn build(config: &LossConfig, shapes: &Shapes, limits: &Limits) -> Result<Blueprint> {
    config.validate()?;
    // The kernels read labels of other dtypes through their cast views.
    let (viewed, casts) = labels::views(config, shapes)?;
    let (given, shapes) = (shapes, &viewed);
    let groups = groups(config, shapes, limits)?;
    let terms = || groups.iter().flat_map(|(g, _)| g.terms());
    let checks = HostChecks::of(terms(), given, config.nonfinite);
    let grads = gradient_sizes(terms(), shapes, limits)?;
    let layout = layout(config, &groups, checks.value_checks().len() as u32);
    let mut buffers = Buffers::new(limits.max_buffer);
    let core = core_buffers(&mut buffers, config, &layout)?;
    let mut predictions = BTreeMap::new();
    let term_aux = row_term_aux(terms(), &layout, &mut buffers, &mut predictions)?;
    let mut builder = GroupBuilder {
        buffers,
        shapes,
        limits,
        core,
        layout: &layout,
        term_aux,
        written: Vec::new(),
        state_buffers: Vec::new(),
        banks: Vec::new(),
        state_map: term_state_map(terms(), &layout),
    };
    let mut group_passes = value_scans(&checks, shapes, &layout, core);
    for (g, fused) in &groups {
        group_passes.push(builder.group(g, *fused)?);
    }
    let GroupBuilder {
        mut buffers,
        state_buffers,
        banks,
        state_map,
        ..
    } = builder;
    let cast_passes = label_casts(&casts, &mut buffers, &mut group_passes)?;
    group_passes.splice(0..0, cast_passes);
    let laid = chunking::lay_out(config, group_passes, limits, &layout)?;
    buffers.resize(core.partials, laid.partial_count * 16)?;
    buffers.set_init(
        core.term_table,
        bytemuck::cast_slice(&laid.term_table).to_vec(),
    );
    let mut settings = Settings::new(config);
    let commit = layout.commit;
    (
        settings.commit_src,
        settings.commit_dst,
        settings.commit_count,
    ) = (commit.src, commit.dst, commit.count);
    let finite = layout.aux(PLAN, "finite").unwrap_or_default();
    (settings.finite_base, settings.finite_count) = (finite.offset, finite.words);
    buffers.set_init(core.settings, bytemuck::bytes_of(&settings).to_vec());
    let any_fused = groups.iter().any(|(_, fused)| *fused);
    let passes = chunking::step_order(laid, core, any_fused);
    Ok(Blueprint {
        buffers: buffers.requests,
        grads,
        passes,
        core,
        state_words: layout.state_words as usize,
        state_buffers,
        banks,
        state_map,
        checks,
        predictions,
    })
}

/// The state regions of GHM-C, JRC and listwise terms (memory banks are added with their buffers).
fn term_state_map<'a>(terms: impl Iterator<Item = &'a Resolved>, layout: &Layout) -> StateMap {
    let mut map = StateMap::default();
    for t in terms {
        let region = |kind, name| {
            let r = layout.state(t.slot, name)?;
            Some(StateRegion {
                term: t.term.name.clone(),
                offset: r.offset,
                kind,
            })
        };
        let found = match batch_wide(t) {
            Some(BatchWide::Ghm { bins, .. }) => region(StateKind::Ghm { bins }, "ghm"),
            _ => region(StateKind::Jrc, "jrc").or_else(|| region(StateKind::Scale, "scale")),
        };
        map.regions.extend(found);
    }
    map
}

/// The scheduled groups, split to the adapter's storage-buffer limit, each with whether it is
/// fused: a row group writes its gradients in its forward pass when every coefficient is known
/// before the step (no flooding or EMA reweighting, which scale by this step's values, and no
/// denominator that depends on the data). Decided before splitting, so the parts of a group
/// agree.
fn groups(config: &LossConfig, shapes: &Shapes, limits: &Limits) -> Result<Vec<(Group, bool)>> {
    let fusable = !matches!(config.strategy, Strategy::EmaReweight(_)) && config.flooding.is_none();
    let mut groups = Vec::new();
    for g in schedule(config, shapes)? {
        let fused = fusable
            && matches!(g, Group::Rows { .. })
            && g.terms().iter().all(|t| t.static_denominator().is_some());
        for part in g.split(limits.max_storage_buffers, |g| match g {
            Group::Rows { terms, .. } => rows::kernel::storage_bindings(terms),
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
    Ok(groups)
}

/// Bytes of the gradient of every tensor bound to a differentiable role.
fn gradient_sizes<'a>(
    terms: impl Iterator<Item = &'a Resolved>,
    shapes: &Shapes,
    limits: &Limits,
) -> Result<BTreeMap<String, u64>> {
    let mut grads = BTreeMap::new();
    for t in terms {
        for role in t.loss_type.differentiable_roles() {
            let name = t.input(role).to_string();
            let bytes = shapes.get(&name).expect("checked by the scheduler").bytes();
            super::alloc::check_size(&format!("grad/{name}"), bytes, limits.max_buffer)?;
            grads.insert(name, bytes);
        }
    }
    Ok(grads)
}

/// One group per cast label tensor, first in the step, writing its view into a buffer of its
/// own that every other pass then binds in the tensor's place.
fn label_casts(
    casts: &[labels::Cast],
    buffers: &mut Buffers,
    groups: &mut [GroupPasses],
) -> Result<Vec<GroupPasses>> {
    let mut views = BTreeMap::new();
    let mut passes = Vec::new();
    for cast in casts {
        let out = buffers.storage(format!("view/{}", cast.tensor), cast.len * 4)?;
        views.insert(cast.tensor.clone(), out);
        passes.push(GroupPasses {
            forward: vec![labels::pass(cast, out)],
            partial_work: Work::Rows { rows_per_wg: WG },
            backward: Vec::new(),
            rows: cast.len,
            terms: Vec::new(),
            ge_slots: Vec::new(),
            partial_slots: 0,
            single_chunk: false,
            device_only: None,
        });
    }
    let specs = groups
        .iter_mut()
        .flat_map(|g| g.forward.iter_mut().chain(g.backward.iter_mut()));
    for spec in specs {
        for b in &mut spec.binds {
            let source = match &mut b.bind {
                Bind::Whole(s) | Bind::Rows { source: s, .. } => s,
                Bind::Chunk => continue,
            };
            if let Source::Input(t) = source {
                if let Some(&k) = views.get(t.as_str()) {
                    *source = Source::Internal(k);
                }
            }
        }
    }
    Ok(passes)
}

/// The GPU value checks of device-buffer inputs, one group each (run only for device buffers).
fn value_scans(
    checks: &HostChecks,
    shapes: &Shapes,
    layout: &Layout,
    core: Core,
) -> Vec<GroupPasses> {
    let base = layout.aux(PLAN, "finite").map_or(0, |r| r.offset);
    checks
        .value_checks()
        .iter()
        .enumerate()
        .map(|(i, check)| GroupPasses {
            forward: vec![check.scan_pass(base + i as u32, core.aux)],
            partial_work: Work::Rows { rows_per_wg: WG },
            backward: Vec::new(),
            rows: shapes.get(&check.tensor).map_or(0, |s| s.len() as u64),
            terms: Vec::new(),
            ge_slots: Vec::new(),
            partial_slots: 0,
            single_chunk: false,
            device_only: Some(check.tensor.clone()),
        })
        .collect()
}

/// The regions of `aux` and the state: GHM-C's accumulators (committed when a step succeeds),
/// each batch-wide term's statistics, then what the session and embedding terms ask for, then
/// one word per GPU value check (`value_checks`).
fn layout(config: &LossConfig, groups: &[(Group, bool)], value_checks: u32) -> Layout {
    let mut layout = LayoutBuilder::new(combine::state_len(config.losses.len()) as u32);
    let terms = || groups.iter().flat_map(|(g, _)| g.terms());
    let batch_wide = || terms().filter_map(|t| Some((t, batch_wide(t)?)));
    for (t, bw) in batch_wide() {
        if let BatchWide::Ghm { bins, .. } = bw {
            layout.committed(t.slot, "ghm", bins);
        }
    }
    for (t, bw) in batch_wide() {
        layout.aux(t.slot, "stats", statistics::aux_words(bw));
    }
    for t in terms() {
        match &t.form {
            Form::Session(s) => s.regions(t, &mut layout),
            Form::Embedding { term, .. } => term.regions(t, &mut layout),
            Form::Row(_) | Form::Softmax(_) => {}
        }
    }
    layout.aux(PLAN, "finite", value_checks);
    layout.finish()
}

/// The batch-wide quantity a row term needs, if any.
fn batch_wide(t: &Resolved) -> Option<BatchWide> {
    match &t.form {
        Form::Row(r) => r.batch_wide(),
        _ => None,
    }
}

/// The buffers every plan has: partials (sized once the passes are laid out), scalars, state,
/// settings, the term table and aux.
fn core_buffers(buffers: &mut Buffers, config: &LossConfig, layout: &Layout) -> Result<Core> {
    let n_terms = config.losses.len();
    let partials = buffers.storage("partials", 16)?;
    let scalars = buffers.storage("scalars", combine::scalars_len(n_terms) as u64 * 4)?;
    let state = buffers.storage("state", layout.state_words as u64 * 4)?;
    let settings = buffers.constant("settings", vec![0; std::mem::size_of::<Settings>()])?;
    let table = vec![0; std::mem::size_of::<TermInfo>() * n_terms];
    let term_table = buffers.constant("terms", table)?;
    let aux = buffers.storage("aux", layout.aux_words as u64 * 4)?;
    Ok(Core {
        partials,
        scalars,
        state,
        settings,
        term_table,
        aux,
    })
}

/// Where each row term keeps its data: a batch-wide term's regions and an OHEM term's key
/// buffer, and the per-row prediction buffer of a term with a prediction (also listed by term
/// name in `predictions`).
fn row_term_aux<'a>(
    terms: impl Iterator<Item = &'a Resolved>,
    layout: &Layout,
    buffers: &mut Buffers,
    predictions: &mut BTreeMap<String, (usize, u64)>,
) -> Result<BTreeMap<usize, TermAux>> {
    let mut aux = BTreeMap::new();
    for t in terms {
        let Form::Row(row) = &t.form else { continue };
        let bw = row.batch_wide();
        if bw.is_none() && row.prediction().is_none() {
            continue;
        }
        let offset = |r: Option<crate::layout::Region>| r.map_or(0, |r| r.offset);
        let keys = match bw {
            Some(BatchWide::Ohem { .. }) => {
                Some(buffers.storage(format!("ohem_keys/{}", t.term.name), t.rows * 4)?)
            }
            _ => None,
        };
        let prediction = match row.prediction() {
            Some(_) => {
                let b = buffers.storage(format!("prediction/{}", t.term.name), t.rows * 4)?;
                predictions.insert(t.term.name.clone(), (b, t.rows));
                Some(b)
            }
            None => None,
        };
        let a = TermAux {
            base: offset(layout.aux(t.slot, "stats")),
            keys,
            pending: offset(layout.aux(t.slot, "ghm")),
            acc: offset(layout.state(t.slot, "ghm")),
            prediction,
        };
        aux.insert(t.slot, a);
    }
    Ok(aux)
}

/// What building the groups' passes shares.
struct GroupBuilder<'a> {
    buffers: Buffers,
    shapes: &'a Shapes,
    limits: &'a Limits,
    core: Core,
    layout: &'a Layout,
    term_aux: BTreeMap<usize, TermAux>,
    /// Gradients written by the groups built so far.
    written: Vec<String>,
    state_buffers: Vec<usize>,
    banks: Vec<(u32, u64)>,
    state_map: StateMap,
}

impl GroupBuilder<'_> {
    fn spec(&self, name: &str) -> &TensorSpec {
        self.shapes.get(name).expect("checked by the scheduler")
    }

    fn written(&self, name: &str) -> bool {
        self.written.iter().any(|w| w == name)
    }

    fn group(&mut self, g: &Group, fused: bool) -> Result<GroupPasses> {
        match g {
            Group::Rows { rows, terms } => self.rows(*rows, terms, fused),
            Group::Softmax { logits, terms } => self.softmax(logits, terms),
            Group::Sessions {
                rows,
                session,
                terms,
            } => self.sessions(*rows, session.as_deref(), terms),
            Group::Embedding { terms } => self.embedding(&terms[0]),
        }
    }

    fn rows(&mut self, rows: u64, terms: &[Resolved], fused: bool) -> Result<GroupPasses> {
        // Workgroup memory of the statistics pass: the reduction buffer, one counter per GHM-C
        // bin, one per OHEM term.
        let shared: u64 = 16 * 256
            + terms
                .iter()
                .map(|t| match batch_wide(t) {
                    Some(BatchWide::Ghm { bins, .. }) => 4 * bins as u64,
                    Some(BatchWide::Ohem { .. } | BatchWide::Ziln) => 4,
                    _ => 0,
                })
                .sum::<u64>();
        let limit = self.limits.workgroup_bytes;
        if shared > limit {
            return Err(Error::Unsupported(format!(
                "the ghm_c terms over {rows} rows need {shared} bytes of workgroup memory for \
                 their bins, the adapter has {limit}; use fewer bins"
            )));
        }
        let buffers = rows::kernel::Buffers {
            partials: self.core.partials,
            scalars: self.core.scalars,
            aux: self.core.aux,
            state: self.core.state,
        };
        let aux_of = |slot: usize| self.term_aux.get(&slot).copied().unwrap_or_default();
        let p = rows::passes::passes(terms, rows, buffers, &aux_of, fused, &|n| self.written(n));
        self.written.extend(p.grads.iter().cloned());
        let partial_work = p.forward.work;
        let mut forward = p.pre;
        forward.push(p.forward);
        Ok(GroupPasses {
            forward,
            partial_work,
            backward: p.backward.into_iter().collect(),
            rows,
            terms: terms.to_vec(),
            ge_slots: vec![None; terms.len()],
            partial_slots: p.partial_slots,
            single_chunk: false,
            device_only: None,
        })
    }

    fn softmax(&mut self, logits: &str, terms: &[Resolved]) -> Result<GroupPasses> {
        let rows = terms[0].rows;
        let Form::Softmax(first) = &terms[0].form else {
            unreachable!("softmax groups hold softmax terms")
        };
        let classes = first.classes;
        let mut buffers = Vec::new();
        for t in terms {
            let Form::Softmax(form) = &t.form else {
                unreachable!("softmax groups hold softmax terms")
            };
            let class_weights = match &form.params.class_weights {
                Some(w) => {
                    let data: Vec<f32> = w.iter().map(|&x| x as f32).collect();
                    let label = format!("class_weights/{}", t.term.name);
                    let bytes = bytemuck::cast_slice(&data).to_vec();
                    Some(self.buffers.storage_with(label, bytes)?)
                }
                None => None,
            };
            let stats = self.buffers.storage(
                format!("row_stats/{}", t.term.name),
                rows * form.stats_bytes(),
            )?;
            buffers.push(softmax::TermBuffers {
                class_weights,
                stats,
            });
        }
        let accumulate = self.written(logits);
        let input = softmax::GroupInput {
            logits,
            classes,
            terms,
            buffers: &buffers,
        };
        let dtype = |n: &str| self.spec(n).dtype;
        let p = softmax::passes(
            input,
            self.core.partials,
            self.core.scalars,
            &dtype,
            accumulate,
        );
        self.written.push(logits.to_string());
        Ok(GroupPasses {
            partial_work: p.forward.work,
            forward: vec![p.forward],
            backward: vec![p.backward],
            rows,
            terms: terms.to_vec(),
            ge_slots: vec![None; terms.len()],
            partial_slots: terms.len(),
            single_chunk: false,
            device_only: None,
        })
    }

    /// The session grouping's passes and buffers (none without a session tensor).
    fn grouping(&mut self, rows: u64, session: Option<&str>) -> Result<(Vec<PassSpec>, Grouping)> {
        let Some(name) = session else {
            return Ok((Vec::new(), Grouping::Batch));
        };
        let mut idx = Vec::new();
        for (i, size) in SessionBuffers::sizes(rows).iter().enumerate() {
            idx.push(self.buffers.storage(format!("session/{name}/{i}"), *size)?);
        }
        let b = SessionBuffers {
            keys: [idx[0], idx[1]],
            vals: [idx[2], idx[3]],
            counts: idx[4],
            bounds: idx[5],
        };
        let label = format!("sessions[{name}]");
        let passes = session::passes(&label, name, self.spec(name).dtype, b);
        let grouping = Grouping::Sessions {
            bounds: b.bounds,
            order: b.vals[0],
        };
        Ok((passes, grouping))
    }

    fn sessions(
        &mut self,
        rows: u64,
        session: Option<&str>,
        terms: &[Resolved],
    ) -> Result<GroupPasses> {
        let (mut forward, grouping) = self.grouping(rows, session)?;
        let shared = Shared {
            grouping,
            partials: self.core.partials,
            scalars: self.core.scalars,
            aux: self.core.aux,
            state: self.core.state,
        };
        let mut backward = Vec::new();
        let mut ge_slots = Vec::new();
        let mut next_slot = terms.len() as u32;
        for (k, t) in terms.iter().enumerate() {
            let Form::Session(term) = &t.form else {
                unreachable!("session groups hold session terms")
            };
            let logits = t.input("logits").to_string();
            let accumulate = self.written(&logits);
            let buffers = &mut self.buffers;
            let mut alloc = |label: String, bytes: u64| buffers.storage(label, bytes);
            let mut ctx = SessionCtx {
                alloc: &mut alloc,
                shared,
                slot: k as u32,
                next_slot: &mut next_slot,
                accumulate,
                layout: self.layout,
                cpu: self.limits.cpu,
                block_rows: self.limits.block_rows,
            };
            let passes = term.passes(t, &mut ctx)?;
            ge_slots.push(passes.second_slot);
            self.written.push(logits);
            forward.extend(passes.forward);
            backward.push(passes.apply);
        }
        Ok(GroupPasses {
            forward,
            partial_work: Work::Rows { rows_per_wg: WG },
            backward,
            rows,
            terms: terms.to_vec(),
            ge_slots,
            partial_slots: next_slot as usize,
            single_chunk: true,
            device_only: None,
        })
    }

    /// A memory bank's buffers join the saved state (after the state words, in order), and its
    /// head, fill and values join the state map.
    fn add_bank(&mut self, t: &Resolved, bank: &crate::losses::embedding::Bank) {
        let words_of =
            |i: usize| (super::alloc::padded(self.buffers.requests[i].size) / 4) as usize;
        let first = self.layout.state_words as usize
            + self
                .state_buffers
                .iter()
                .map(|&i| words_of(i))
                .sum::<usize>();
        let values: Vec<usize> = bank
            .parts
            .iter()
            .map(|&(b, _, _)| b)
            .chain([bank.bias])
            .collect();
        let count = values.iter().map(|&i| words_of(i)).sum();
        self.banks.push((bank.state_word, bank.rows));
        self.state_buffers.extend(values);
        self.state_buffers.push(bank.ids);
        self.state_map.regions.push(StateRegion {
            term: t.term.name.clone(),
            offset: bank.state_word,
            kind: StateKind::Bank {
                rows: bank.rows,
                first,
                count,
            },
        });
    }

    fn embedding(&mut self, t: &Resolved) -> Result<GroupPasses> {
        let Form::Embedding { dim, term } = &t.form else {
            unreachable!("embedding groups hold embedding terms")
        };
        let written_before = self.written.clone();
        let shapes = self.shapes;
        let buffers = &mut self.buffers;
        let mut alloc = |label: String, bytes: u64| buffers.storage(label, bytes);
        let mut ctx = Ctx {
            alloc: &mut alloc,
            partials: self.core.partials,
            scalars: self.core.scalars,
            state: self.core.state,
            workgroup_bytes: self.limits.workgroup_bytes,
            tiled: self.limits.tiled,
            cpu: self.limits.cpu,
            block_rows: self.limits.block_rows,
            max_binding: self.limits.max_binding,
            dtype: &|n| shapes.get(n).map_or(DType::F32, |s| s.dtype),
            written: &|n| written_before.iter().any(|w| w == n),
        };
        let p = term.passes(t, *dim, self.layout, &mut ctx)?;
        self.written.extend(p.grads);
        if let Some(bank) = p.bank {
            self.add_bank(t, &bank);
        }
        Ok(GroupPasses {
            forward: p.forward,
            partial_work: crate::losses::embedding::ROWS,
            backward: p.backward,
            rows: p.rows,
            terms: vec![t.clone()],
            ge_slots: vec![None],
            partial_slots: 1,
            single_chunk: true,
            device_only: None,
        })
    }
}
