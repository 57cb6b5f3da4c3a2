//! Laying a plan's passes out over chunks and partial sums: each group's rows split into chunks
//! whose row-bound buffers fit one storage binding (offsets aligned), each pass dispatched once
//! per chunk with its own parameters, and each term's partial sums given their place in the
//! `partials` buffer, recorded in the combine pass's term table.

use super::alloc::{Core, Limits};
use crate::combine::{self, TermInfo, KIND_PAIRS};
use crate::config::LossConfig;
use crate::error::{Error, Result};
use crate::kernel::{chunk_rows, grid, Bind, Chunk, PassSpec, Source, Work};
use crate::layout::Layout;
use crate::losses::family::{Form, Resolved};

/// The passes of one group, before they are laid out.
pub(crate) struct GroupPasses {
    /// Every pass before the combine, in order.
    pub forward: Vec<PassSpec>,
    /// How the passes writing partials are dispatched (the partials' stride).
    pub partial_work: Work,
    pub backward: Vec<PassSpec>,
    pub rows: u64,
    pub terms: Vec<Resolved>,
    /// The partial slot of each term's second part (JRC's listwise part), if any.
    pub ge_slots: Vec<Option<u32>>,
    /// Partial slots per workgroup: the terms', then any statistics' or second parts'.
    pub partial_slots: usize,
    /// Every row-bound buffer must fit one binding (the session and embedding sweeps index
    /// them whole).
    pub single_chunk: bool,
    /// The passes run only when this tensor comes as a device buffer (the GPU value checks).
    pub device_only: Option<String>,
}

/// One dispatch of a pass: its rows and its parameter words (chunk first).
#[derive(Clone, Debug)]
pub(crate) struct Dispatch {
    pub row_base: u64,
    pub rows: u64,
    /// None for the combine passes, which take no parameters.
    pub params: Option<Vec<u32>>,
    pub grid: (u32, u32),
}

/// A pass with its dispatches.
#[derive(Clone, Debug)]
pub(crate) struct PassBlueprint {
    pub spec: PassSpec,
    pub dispatches: Vec<Dispatch>,
    /// Recorded only when this tensor comes as a device buffer.
    pub device_only: Option<String>,
}

/// Every group's passes laid out, and the term table.
pub(crate) struct LaidOut {
    pub forwards: Vec<PassBlueprint>,
    pub backwards: Vec<PassBlueprint>,
    pub term_table: Vec<TermInfo>,
    /// vec4 partial sums of the whole step.
    pub partial_count: u64,
}

/// Lays out every group's passes in order.
pub(crate) fn lay_out(
    config: &LossConfig,
    groups: Vec<GroupPasses>,
    limits: &Limits,
    layout: &Layout,
) -> Result<LaidOut> {
    let mut out = LaidOut {
        forwards: Vec::new(),
        backwards: Vec::new(),
        term_table: vec![TermInfo::default(); config.losses.len()],
        partial_count: 0,
    };
    for gp in groups {
        lay_out_group(gp, limits, layout, &mut out)?;
    }
    if out.partial_count > u32::MAX as u64 {
        return Err(Error::Unsupported(
            "too many partial sums for one step".into(),
        ));
    }
    Ok(out)
}

/// The group's terms, for errors: "term 'a', term 'b'" (or the checked tensor of a value scan).
fn who(gp: &GroupPasses) -> String {
    if gp.terms.is_empty() {
        return format!(
            "the value check of '{}'",
            gp.device_only.as_deref().unwrap_or("?")
        );
    }
    gp.terms
        .iter()
        .map(|t| format!("term '{}'", t.term.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The chunks of a group: (first row, rows), each chunk's row-bound buffers within one binding.
fn chunks(gp: &GroupPasses, limits: &Limits) -> Result<Vec<(u64, u64)>> {
    let row_binds: Vec<(u64, &Source)> = gp
        .forward
        .iter()
        .chain(gp.backward.iter())
        .flat_map(|p| p.binds.iter())
        .filter_map(|b| match &b.bind {
            Bind::Rows { row_bytes, source } => Some((*row_bytes, source)),
            _ => None,
        })
        .collect();
    let row_bytes: Vec<u64> = row_binds.iter().map(|(b, _)| *b).collect();
    let max_binding = limits.max_binding;
    let per_chunk =
        chunk_rows(gp.rows, &row_bytes, max_binding, limits.align).ok_or_else(|| {
            let (bytes, source) = row_binds
                .iter()
                .max_by_key(|(b, _)| *b)
                .copied()
                .unwrap_or((0, &Source::Internal(0)));
            let tensor = match source {
                Source::Input(n) => format!("a row of tensor '{n}'"),
                Source::Grad(n) => format!("a row of the gradient of '{n}'"),
                Source::Internal(_) => "a row of an internal buffer".to_string(),
            };
            Error::Unsupported(format!(
            "{}: {tensor} needs {bytes} bytes, more than one storage binding ({max_binding} bytes)",
            who(gp)
        ))
        })?;
    // The session sweeps bind their sorted rows (16 bytes each) whole.
    if gp.single_chunk && (per_chunk < gp.rows || gp.rows * 16 > max_binding) {
        return Err(Error::Unsupported(format!(
            "{}: {} rows need more than one storage binding ({max_binding} bytes) for the \
             buffers these terms index whole; split the batch",
            who(gp),
            gp.rows
        )));
    }
    Ok((0..gp.rows)
        .step_by(per_chunk as usize)
        .map(|s| (s, per_chunk.min(gp.rows - s)))
        .collect())
}

fn lay_out_group(
    gp: GroupPasses,
    limits: &Limits,
    layout: &Layout,
    out: &mut LaidOut,
) -> Result<()> {
    let ranges = chunks(&gp, limits)?;
    let stride: u64 = ranges
        .iter()
        .map(|&(_, n)| gp.partial_work.workgroups(n))
        .sum();
    let group_base = out.partial_count;
    for (k, t) in gp.terms.iter().enumerate() {
        let base = group_base + k as u64 * stride;
        let ge_base = gp.ge_slots[k].map(|ge| group_base + ge as u64 * stride);
        out.term_table[t.slot] = term_info(t, base, stride, gp.rows, ge_base, layout);
    }
    out.partial_count += stride * gp.partial_slots as u64;
    let whole = [(0u64, gp.rows)];
    let specs = gp
        .forward
        .into_iter()
        .map(|p| (p, true))
        .chain(gp.backward.into_iter().map(|b| (b, false)));
    for (spec, is_forward) in specs {
        // A one-workgroup pass of the group (prepare, selection pick) sees the whole group.
        let pass_ranges: &[(u64, u64)] = match spec.work {
            Work::Single => &whole,
            Work::Rows { .. } => &ranges,
        };
        let mut wg_base = group_base;
        let mut dispatches = Vec::new();
        for &(row_base, rows) in pass_ranges {
            let wgs = spec.work.workgroups(rows);
            let chunk = Chunk {
                row_base: row_base as u32,
                rows: rows as u32,
                wgs: wgs as u32,
                wg_base: wg_base as u32,
                term_stride: stride as u32,
            };
            if is_forward {
                wg_base += wgs;
            }
            dispatches.push(Dispatch {
                row_base,
                rows,
                params: Some(spec.params.with_chunk(&chunk)),
                grid: grid(wgs, limits.max_grid)?,
            });
        }
        let pass = PassBlueprint {
            spec,
            dispatches,
            device_only: gp.device_only.clone(),
        };
        if is_forward {
            out.forwards.push(pass);
        } else {
            out.backwards.push(pass);
        }
    }
    Ok(())
}

/// A term's record of the combine pass's term table: where its partials are (`base`, `stride`
/// workgroups; its second part's at `ge_base`), how they reduce, and its family's own fields.
fn term_info(
    t: &Resolved,
    base: u64,
    stride: u64,
    rows: u64,
    ge_base: Option<u64>,
    layout: &Layout,
) -> TermInfo {
    let mut info = TermInfo {
        partial_base: base as u32,
        partial_count: stride as u32,
        reduction: combine::reduction_code(t.reduction()),
        learn: t.term.learn_loss_weight as u32,
        rows: rows as f32,
        weight: t.term.weight as f32,
        half: if t.loss_type.regression { 0.5 } else { 1.0 },
        static_denom: t.static_denominator().unwrap_or(0.0) as f32,
        ..Default::default()
    };
    match &t.form {
        Form::Session(s) => s.term_info(t, layout, &mut info),
        // Partials (Σ w·l, Σ w, #{w ≠ 0}, #counted rows): `mean` divides by `.w`.
        Form::Embedding { .. } => info.kind = KIND_PAIRS,
        Form::Row(_) | Form::Softmax(_) => {}
    }
    if let Some(ge) = ge_base {
        info.ge_partial_base = ge as u32;
    }
    info
}

/// The passes in the order a step runs them: `coefficients` (when some row group is fused),
/// every forward pass, `combine`, `weigh`, every backward pass.
pub(crate) fn step_order(laid: LaidOut, core: Core, any_fused: bool) -> Vec<PassBlueprint> {
    let [coefficients, reduce, weigh] = combine::passes(
        core.settings,
        core.term_table,
        core.partials,
        core.scalars,
        core.state,
        core.aux,
    );
    let single = |spec: PassSpec| PassBlueprint {
        spec,
        dispatches: vec![Dispatch {
            row_base: 0,
            rows: 1,
            params: None,
            grid: (1, 1),
        }],
        device_only: None,
    };
    let mut passes = Vec::new();
    if any_fused {
        passes.push(single(coefficients));
    }
    passes.extend(laid.forwards);
    passes.push(single(reduce));
    passes.push(single(weigh));
    passes.extend(laid.backwards);
    passes
}
