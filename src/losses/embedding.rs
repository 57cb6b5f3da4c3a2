//! What the embedding families (`retrieval`, `metric`, `mining`) share (`shaders/embedding.wgsl`):
//! the `prep` pass that writes the rows a similarity reads (normalised under cosine), the keys
//! of id and label columns, and the `apply` pass after the combine that scales a row's gradient
//! by the term's coefficient and takes it through the normalisation into the raw input's
//! gradient. Each family's file imports embedding.wgsl and defines its `grad_component` and its
//! `rowinfo` pass (each row's weight, ids and keys, gathered from the batch).

use crate::batch::DType;
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Binding, Params, PassSpec, Shader, Source, Work, WG};
use crate::wgsl::Specialization;

/// What the plan gives an embedding family to build its passes with.
pub(crate) struct Ctx<'a> {
    /// Creates an internal buffer of the given bytes; returns its index.
    pub alloc: &'a mut dyn FnMut(String, u64) -> Result<usize>,
    pub partials: usize,
    pub scalars: usize,
    pub state: usize,
    /// Bytes of workgroup memory a kernel may use.
    pub workgroup_bytes: u64,
    /// Whether the sweeps stage rows through workgroup memory (all backends but GL: GL llvmpipe
    /// takes minutes to compile a tile loop inside a loop with barriers).
    pub tiled: bool,
    /// Whether the adapter is a CPU one (`Limits::cpu`).
    pub cpu: bool,
    /// `EngineOptions::sweep_block_rows`.
    pub block_rows: Option<u32>,
    /// Bytes one storage binding may cover.
    pub max_binding: u64,
    /// The dtype of a batch tensor.
    pub dtype: &'a dyn Fn(&str) -> DType,
    /// Whether a tensor's gradient was already written by an earlier pass of the step.
    pub written: &'a dyn Fn(&str) -> bool,
}

/// The passes of one embedding term, and the tensors whose gradients they write.
pub(crate) struct TermPasses {
    pub forward: Vec<PassSpec>,
    pub backward: Vec<PassSpec>,
    /// Invocations the passes need (the loss rows, the largest count).
    pub rows: u64,
    pub grads: Vec<String>,
    /// The memory bank of a `cross_batch_softmax` term.
    pub bank: Option<Bank>,
}

/// The memory bank of one `cross_batch_softmax` term: its internal buffers, saved with the state.
#[derive(Clone, Debug)]
pub(crate) struct Bank {
    /// Embedding parts: (buffer, first row, rows).
    pub parts: Vec<(usize, u64, u64)>,
    /// log_q per row [M].
    pub bias: usize,
    /// Ids per row [M] (two words each).
    pub ids: usize,
    /// First word of (head, fill) in the state.
    pub state_word: u32,
    /// M.
    pub rows: u64,
}

/// Refuses a buffer of `bytes` that one storage binding (`max` bytes) cannot cover.
pub(crate) fn check_binding(term: &str, what: &str, bytes: u64, max: u64) -> Result<()> {
    if bytes > max {
        return Err(Error::Unsupported(format!(
            "term '{term}': {what} needs {bytes} bytes in one storage binding, the adapter allows \
             {max}; use a smaller batch"
        )));
    }
    Ok(())
}

/// One invocation per row, 256 rows per workgroup.
pub(crate) const ROWS: Work = Work::Rows { rows_per_wg: WG };

/// How embedding.wgsl's `column_key` reads an id or label column of `dtype`.
pub(crate) fn id_kind(dtype: DType) -> u32 {
    match dtype {
        DType::F32 => 1,
        DType::I32 => 2,
        DType::U32 => 3,
        DType::I64 | DType::U64 => 4,
        DType::F64 => unreachable!("F64 labels are read through an F32 view (losses::labels)"),
    }
}

/// A pass of one embedding kernel: `file` and its entry, one invocation per row.
pub(crate) fn pass(
    label: String,
    file: &'static str,
    entry: &'static str,
    spec: Specialization,
    binds: Vec<Binding>,
    params: Params,
) -> PassSpec {
    PassSpec {
        label,
        shader: Shader::File(file, spec),
        entry,
        binds,
        work: ROWS,
        reads: Vec::new(),
        params,
    }
}

/// The `prep` pass: rows [0, n) of tensor `input` ([n, d]) into rows [offset, offset + n) of the
/// internal buffer `out`, normalised when `cosine`.
pub(crate) fn prep(
    label: &str,
    input: &str,
    n: u64,
    d: u64,
    cosine: bool,
    out: usize,
    offset: u64,
) -> PassSpec {
    let spec = Specialization::new()
        .u32("D", d as u32)
        .u32("N", n as u32)
        .u32("OUT_OFF", offset as u32)
        .bool("COSINE", cosine);
    let binds = vec![
        bind("chunk", Bind::Chunk),
        bind("input", Bind::Whole(Source::Input(input.to_string()))),
        internal("rows", out),
    ];
    PassSpec {
        reads: vec![input.to_string()],
        ..pass(
            format!("{label} prep {input}"),
            "embedding.wgsl",
            "prep",
            spec,
            binds,
            Params::none(),
        )
    }
}

/// A term's `rowinfo` pass in `file`: `spec` with its sample weight (`weights`) spliced in, the
/// chunk and `binds`; the batch tensors it reads are every input bound.
pub(crate) fn rowinfo(
    label: &str,
    file: &'static str,
    weights: &[(String, f64)],
    spec: Specialization,
    mut binds: Vec<Binding>,
) -> PassSpec {
    let mut spec = spec;
    if let Some((code, weight_binds)) = super::common::sample_weight_splice(weights) {
        spec = spec.splice("sample_weight", code);
        // Whole tensors: the group's chunk covers its loss rows (2B for NT-Xent), not B.
        binds.extend(weight_binds.into_iter().map(|b| match b.bind {
            Bind::Rows { source, .. } => bind(b.name, Bind::Whole(source)),
            other => bind(b.name, other),
        }));
    }
    binds.push(bind("chunk", Bind::Chunk));
    let reads = binds
        .iter()
        .filter_map(|b| match &b.bind {
            Bind::Whole(Source::Input(n))
            | Bind::Rows {
                source: Source::Input(n),
                ..
            } => Some(n.clone()),
            _ => None,
        })
        .collect();
    PassSpec {
        reads,
        ..pass(
            format!("{label} rowinfo"),
            file,
            "rowinfo",
            spec,
            binds,
            Params::none(),
        )
    }
}

/// What the `apply` pass of one input computes.
pub(crate) struct Apply<'a> {
    /// The family's file (it defines `grad_component`).
    pub file: &'static str,
    /// The input whose gradient is written (also read for the normalisation's Jacobian).
    pub input: &'a str,
    /// Its rows and dimension.
    pub n: u64,
    pub d: u64,
    pub cosine: bool,
    /// The scalars buffer and the index of the term's coefficient in it.
    pub scalars: usize,
    pub coef: usize,
    /// The family's constants of `grad_component`.
    pub spec: Specialization,
    /// The internal buffers `grad_component` reads, by name.
    pub parts: Vec<Binding>,
    /// Add to the gradient (another term or role already wrote it this step).
    pub accumulate: bool,
}

/// The `apply` pass (see [`Apply`]).
pub(crate) fn apply(label: &str, a: Apply) -> PassSpec {
    let spec = a
        .spec
        .u32("D", a.d as u32)
        .u32("N", a.n as u32)
        .u32("COEF", a.coef as u32)
        .bool("COSINE", a.cosine)
        .bool("ACCUMULATE", a.accumulate);
    let mut binds = vec![
        bind("chunk", Bind::Chunk),
        internal("scalars", a.scalars),
        bind("grad", Bind::Whole(Source::Grad(a.input.to_string()))),
        bind("input", Bind::Whole(Source::Input(a.input.to_string()))),
    ];
    binds.extend(a.parts);
    PassSpec {
        reads: vec![a.input.to_string()],
        ..pass(
            format!("{label} apply {}", a.input),
            a.file,
            "apply",
            spec,
            binds,
            Params::none(),
        )
    }
}

/// Columns per tile of a sweep: as many rows of `d` floats (plus `extra` bytes each) as fit
/// the workgroup memory left beside the reduction buffer, at most 256; `None` when not one fits.
pub(crate) fn tile_columns(d: u64, extra: u64, workgroup_bytes: u64) -> Option<u32> {
    let budget = workgroup_bytes.saturating_sub(16 * WG as u64 + 64);
    let per = 4 * d + extra;
    let tc = (budget / per).min(256);
    (tc > 0).then_some(tc as u32)
}

/// Rows of `d` floats one invocation of a retrieval sweep over `rows` rows holds in registers
/// ([`super::common::held_rows`]): as many as fit 512 floats, up to 8.
pub(crate) fn block_rows(cpu: bool, chosen: Option<u32>, d: u64, rows: u64) -> u32 {
    let fit = (512 / d.max(1)).clamp(1, 8) as u32;
    super::common::held_rows(cpu, chosen, fit, rows)
}

/// Columns one sweep dispatch visits per invocation that holds `rb` rows of `d` floats:
/// llvmpipe stops any invocation's loops after 65,535 iterations in all (its loop limiter; a
/// real GPU has no such limit), so the sweeps split their columns into ranges of this many.
pub(crate) fn columns_per_dispatch_block(d: u64, rb: u32) -> u64 {
    if rb <= 1 {
        return columns_per_dispatch(d);
    }
    // Per visit: the dot products (d outer and d·rb inner iterations), the gradient's axpy as
    // many again, and a few loops over the rb rows.
    let rb = rb as u64;
    (60_000 / (2 * d * (rb + 1) + 4 * rb + 8)).max(1)
}

/// Columns (or rows) one sweep dispatch visits per invocation for rows of `d` floats, one row
/// per invocation: a visit costs up to 2·d + 8 iterations (the dot product, the gradient's axpy,
/// the tile loads).
pub(crate) fn columns_per_dispatch(d: u64) -> u64 {
    (60_000 / (2 * d + 8)).max(1)
}
