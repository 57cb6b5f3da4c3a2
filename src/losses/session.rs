//! Rows grouped by session on the GPU (`shaders/session.wgsl`), shared by the pairwise terms,
//! JRC and the listwise terms: a stable LSD radix sort of (session id, row) with 8-bit digits (4 passes for 32-bit ids,
//! 8 for 64-bit; a pass whose keys all share one digit is a copy, and a key's rank among its
//! workgroup's equal digits is counted 16 digits per load), then every sorted row's session
//! range [start, end). The host never reads the
//! ids; no buffer grows faster than B. Without a session tensor the whole batch is one session
//! and nothing is sorted.
//!
//! The kernels built on the grouping (`pairwise.wgsl`, `jrc.wgsl`) find a sorted row's session
//! and batch row through `grouping.wgsl`, and walk each session with the tile sweep of
//! `sweep.wgsl`: work is Σ over sessions of size² (each pair is visited from both ends, so every
//! row sums its own gradient without atomics), memory O(B).

use crate::batch::DType;
use crate::kernel::{
    bind, internal, Bind, Binding, Chunk, Params, PassSpec, Shader, Source, Work, WG,
};
use crate::wgsl::Specialization;

/// Internal buffers of a session grouping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionBuffers {
    /// Ping-pong key buffers (8 bytes per row); the sorted keys end in `keys[0]`.
    pub keys: [usize; 2],
    /// Ping-pong row buffers (4 bytes per row); `vals[0]` ends as the sorted order: the row at
    /// each sorted position.
    pub vals: [usize; 2],
    /// Digit counts: 256 per sort workgroup, then the scan's one-digit flag.
    pub counts: usize,
    /// [start, end) of every sorted row's session (8 bytes per row).
    pub bounds: usize,
}

impl SessionBuffers {
    /// Bytes of each buffer for `rows` rows, in the order keys, keys, vals, vals, counts, bounds.
    pub(crate) fn sizes(rows: u64) -> [u64; 6] {
        let workgroups = rows.div_ceil(WG as u64);
        [
            rows * 8,
            rows * 8,
            rows * 4,
            rows * 4,
            workgroups * 256 * 4 + 4,
            rows * 8,
        ]
    }
}

crate::gpu_struct! {
    /// One dispatch of the grouping (`SessionPass` in session.wgsl).
    pub(crate) struct SessionPass in "session.wgsl" test session_pass_layout {
        /// Filled in per dispatch by the plan.
        chunk: Chunk,
        /// The radix pass: digit 0..7, low word first.
        pass_index: u32,
        /// Words per id: 1, or 2 for 64-bit ids.
        id_words: u32,
    }
}

/// Radix passes for ids of `dtype`: one per byte.
pub(crate) fn radix_passes(dtype: DType) -> u32 {
    if dtype.size() == 8 {
        8
    } else {
        4
    }
}

/// The passes grouping `rows` rows by the ids of tensor `session`.
pub(crate) fn passes(label: &str, session: &str, dtype: DType, b: SessionBuffers) -> Vec<PassSpec> {
    let id_words = (dtype.size() / 4) as u32;
    let binds = |input: usize, output: usize| {
        vec![
            bind("params", Bind::Chunk),
            bind(
                "ids",
                Bind::Rows {
                    source: Source::Input(session.to_string()),
                    row_bytes: dtype.size(),
                },
            ),
            internal("keys_in", b.keys[input]),
            internal("vals_in", b.vals[input]),
            internal("keys_out", b.keys[output]),
            internal("vals_out", b.vals[output]),
            internal("counts", b.counts),
            internal("bounds", b.bounds),
        ]
    };
    let pass =
        |name: &str, entry: &'static str, binds: Vec<Binding>, work: Work, p: u32| PassSpec {
            label: format!("{label} session {name}"),
            shader: Shader::File("session.wgsl", Specialization::new()),
            entry,
            binds,
            work,
            reads: Vec::new(),
            params: Params::of(&SessionPass {
                chunk: Chunk::default(),
                pass_index: p,
                id_words,
            }),
        };
    let rows_work = Work::Rows { rows_per_wg: WG };
    let mut out = vec![PassSpec {
        reads: vec![session.to_string()],
        ..pass("init", "session_init", binds(1, 0), rows_work, 0)
    }];
    for i in 0..radix_passes(dtype) {
        let (input, output) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        out.push(pass(
            &format!("digit {i} histogram"),
            "session_histogram",
            binds(input, output),
            rows_work,
            i,
        ));
        out.push(pass(
            &format!("digit {i} scan"),
            "session_scan",
            binds(input, output),
            Work::Single,
            i,
        ));
        out.push(pass(
            &format!("digit {i} scatter"),
            "session_scatter",
            binds(input, output),
            rows_work,
            i,
        ));
    }
    out.push(pass("bounds", "session_bounds", binds(0, 1), rows_work, 0));
    out
}

/// How a kernel finds the rows of a sorted row's session (`grouping.wgsl`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Grouping {
    /// Sorted by session: `bounds` and `order` buffers.
    Sessions { bounds: usize, order: usize },
    /// No session tensor: every row is in one session, in batch order.
    Batch,
}

impl Grouping {
    /// grouping.wgsl's `GROUPED`.
    pub(crate) fn specialize(&self, spec: Specialization) -> Specialization {
        spec.bool("GROUPED", matches!(self, Grouping::Sessions { .. }))
    }

    /// The buffers grouping.wgsl reads.
    pub(crate) fn binds(&self) -> Vec<Binding> {
        match self {
            Grouping::Sessions { bounds, order } => {
                vec![internal("bounds", *bounds), internal("order", *order)]
            }
            Grouping::Batch => Vec::new(),
        }
    }
}

/// The group-wide buffers a pairwise, JRC or listwise term binds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shared {
    pub grouping: Grouping,
    pub partials: usize,
    pub scalars: usize,
    pub aux: usize,
    /// The state (read by the forward passes of a listwise term that learns its scale).
    pub state: usize,
}

/// The passes of one term: those before the combine pass, and the one after it.
pub(crate) struct TermPasses {
    pub forward: Vec<PassSpec>,
    pub apply: PassSpec,
    /// The second partial slot the term took (JRC's listwise part).
    pub second_slot: Option<u32>,
}

/// What a session term builds its passes with.
pub(crate) struct SessionCtx<'a> {
    /// Creates an internal buffer of the given bytes; returns its index.
    pub alloc: &'a mut dyn FnMut(String, u64) -> crate::error::Result<usize>,
    pub shared: Shared,
    /// The term's partial slot in its group.
    pub slot: u32,
    /// The next free slot of the group, for a second part.
    pub next_slot: &'a mut u32,
    /// Whether an earlier pass wrote the logits' gradient this step (then this one adds to it).
    pub accumulate: bool,
    /// The regions of the shared buffers.
    pub layout: &'a crate::layout::Layout,
    /// Whether the adapter is a CPU (then the sweeps hold blocks of rows).
    pub cpu: bool,
    /// `EngineOptions::sweep_block_rows`.
    pub block_rows: Option<u32>,
}

/// The specialisation and bindings every kernel of a term shares: its grouping, and its sample
/// weight (`weights`, weights.wgsl).
pub(crate) fn term_shader(
    weights: &[(String, f64)],
    grouping: Grouping,
) -> (Specialization, Vec<Binding>) {
    let mut spec = grouping.specialize(Specialization::new());
    let mut binds = grouping.binds();
    if let Some((code, weight_binds)) = super::common::sample_weight_splice(weights) {
        spec = spec.splice("sample_weight", code);
        binds.extend(weight_binds);
    }
    (spec, binds)
}
