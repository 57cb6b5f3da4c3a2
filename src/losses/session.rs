//! Rows grouped by session on the GPU (`shaders/session.wgsl`), and the sweep over each row's
//! session that the pairwise terms and JRC are built on.
//!
//! Grouping: a stable LSD radix sort of (session id, row) with 8-bit digits (4 passes for 32-bit
//! ids, 8 for 64-bit), then every sorted row's session range [start, end). The host never reads
//! the ids; no buffer grows faster than B. Without a session tensor the whole batch is one
//! session and nothing is sorted.
//!
//! Sweep: one invocation per sorted row p walks the rows of its session. A workgroup's rows cover
//! a contiguous span of sorted positions (from its first row's start to its last row's end); the
//! span is streamed through workgroup memory a tile of 256 rows at a time, and each invocation
//! visits only the rows of its own session in each tile. Work is Σ over sessions of size² (each
//! pair is visited from both ends, so that every row sums its own gradient without atomics), and
//! memory is O(B).
//!
//! Also shared by both families: the `gather` of a term's rows into sorted order before its
//! sweeps, and the `apply` pass after the combine that scatters coefficient · gradient back to
//! the batch rows of the logits gradient.

use super::{weight_expr, Inputs};
use crate::batch::DType;
use crate::kernel::{Bind, PassSpec, Source, Work, COMMON, SESSION, WG};
use crate::schedule::Resolved;
use std::fmt::Write;

/// Internal buffers of a session grouping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionBuffers {
    /// Ping-pong key buffers (8 bytes per row); the sorted keys end in `keys[0]`.
    pub keys: [usize; 2],
    /// Ping-pong row buffers (4 bytes per row); `vals[0]` ends as the sorted order: the row at
    /// each sorted position.
    pub vals: [usize; 2],
    /// Digit counts: 256 per sort workgroup.
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
            workgroups * 256 * 4,
            rows * 8,
        ]
    }
}

/// Radix passes for ids of `dtype`: one per byte.
pub(crate) fn radix_passes(dtype: DType) -> u32 {
    if dtype == DType::I64 {
        8
    } else {
        4
    }
}

/// The passes grouping `rows` rows by the ids of tensor `session`.
pub(crate) fn passes(label: &str, session: &str, dtype: DType, b: SessionBuffers) -> Vec<PassSpec> {
    let source = format!("{COMMON}\n{SESSION}");
    let id_words = (dtype.size() / 4) as u32;
    let binds = |input: usize, output: usize| {
        vec![
            Bind::Chunk,
            Bind::Rows {
                source: Source::Input(session.to_string()),
                row_bytes: dtype.size(),
            },
            Bind::Whole(Source::Internal(b.keys[input])),
            Bind::Whole(Source::Internal(b.vals[input])),
            Bind::Whole(Source::Internal(b.keys[output])),
            Bind::Whole(Source::Internal(b.vals[output])),
            Bind::Whole(Source::Internal(b.counts)),
            Bind::Whole(Source::Internal(b.bounds)),
        ]
    };
    let pass = |name: &str, entry: &'static str, binds: Vec<Bind>, work: Work, p0: u32| PassSpec {
        label: format!("{label} session {name}"),
        source: source.clone(),
        entry,
        binds,
        work,
        reads: Vec::new(),
        params: [p0, id_words, 0],
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

/// How a sweep kernel finds the rows of a sorted row's session.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Grouping {
    /// Sorted by session: `bounds` and `order` buffers.
    Sessions { bounds: usize, order: usize },
    /// No session tensor: every row is in one session, in batch order.
    Batch,
}

impl Grouping {
    /// WGSL of `fn session_range(p: u32) -> vec2<u32>` and `fn batch_row(p: u32) -> u32` (the
    /// batch row at sorted position p), reading `bounds` and `order` declared at bindings
    /// `first` and `first + 1` (none without sessions); returns the next free binding.
    pub(crate) fn declare(&self, src: &mut String, first: usize) -> usize {
        match self {
            Grouping::Sessions { .. } => {
                let _ = writeln!(
                    src,
                    "@group(0) @binding({first}) var<storage, read> bounds: array<vec2<u32>>;\n\
                     @group(0) @binding({}) var<storage, read> order: array<u32>;\n\
                     fn session_range(p: u32) -> vec2<u32> {{\n    return bounds[p];\n}}\n\
                     fn batch_row(p: u32) -> u32 {{\n    return order[p];\n}}",
                    first + 1
                );
                first + 2
            }
            Grouping::Batch => {
                src.push_str(
                    "fn session_range(p: u32) -> vec2<u32> {\n    return vec2<u32>(0u, chunk.rows);\n}\n\
                     fn batch_row(p: u32) -> u32 {\n    return p;\n}\n",
                );
                first
            }
        }
    }

    /// The binds matching [`Grouping::declare`].
    pub(crate) fn binds(&self) -> Vec<Bind> {
        match self {
            Grouping::Sessions { bounds, order } => vec![
                Bind::Whole(Source::Internal(*bounds)),
                Bind::Whole(Source::Internal(*order)),
            ],
            Grouping::Batch => Vec::new(),
        }
    }
}

/// The parts of a sweep kernel: `rows` is an `array<vec4<f32>>` of the sorted rows; inside the
/// loops `me` (this row, at sorted position `p`) and `o` (the visited row, at `j`) are in scope.
pub(crate) struct Sweep<'a> {
    /// Entry point name.
    pub entry: &'a str,
    /// Statements before the sweep (every invocation; `valid`, `me`, `range` in scope).
    pub before: &'a str,
    /// Statements for each visited row `o` of the session (j ≠ p is not guaranteed: j == p is
    /// visited too).
    pub visit: &'a str,
    /// Statements after the sweep (every invocation, valid or not: workgroup reductions go here).
    pub after: &'a str,
}

/// WGSL of a sweep entry point; the declarations of `chunk`, `rows`, `session_range` and whatever
/// `before`/`visit`/`after` use come first. `skip` is a WGSL condition under which the
/// workgroup does nothing (its span is empty), e.g. an idle selection round.
pub(crate) fn sweep(src: &mut String, s: &Sweep, skip: &str) {
    let _ = write!(
        src,
        r#"
var<workgroup> tile: array<vec4<f32>, 256>;
var<workgroup> span: vec2<u32>;

@compute @workgroup_size({WG})
fn {entry}(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    let valid = wg < chunk.wgs && p < chunk.rows;
    var me = vec4<f32>(0.0);
    var range = vec2<u32>(0u, 0u);
    if (valid && !({skip})) {{
        me = rows[p];
        range = session_range(p);
    }}
    // The workgroup's span of sorted rows: its first row's session start to its last row's end.
    if (lid == 0u) {{
        span.x = range.x;
    }}
    if (valid && (lid == WG - 1u || p == chunk.rows - 1u)) {{
        span.y = range.y;
    }}
    let s = workgroupUniformLoad(&span);
{before}
    for (var t0 = s.x; t0 < s.y; t0 = t0 + WG) {{
        if (t0 + lid < s.y) {{
            tile[lid] = rows[t0 + lid];
        }}
        workgroupBarrier();
        let j1 = min(range.y, t0 + WG);
        for (var j = max(range.x, t0); j < j1; j = j + 1u) {{
            let o = tile[j - t0];
{visit}
        }}
        workgroupBarrier();
    }}
{after}
}}
"#,
        entry = s.entry,
        before = s.before,
        visit = s.visit,
        after = s.after,
    );
}

/// A gather pass of one term: `out[p] = vec4(layout(logits, labels, w))` for every sorted
/// position p. `layout` gets the WGSL arrays of the term's logits (`logits_width` values per row)
/// and labels, and the WGSL expression of its sample weight, all indexed by `r` (the batch row at
/// p), and returns the four components. The sweeps then read contiguous rows.
pub(crate) fn gather(
    label: &str,
    term: &Resolved,
    grouping: Grouping,
    out: usize,
    logits_width: u64,
    layout: impl Fn(&str, &str, String) -> [String; 4],
) -> PassSpec {
    let mut names = Inputs::default();
    let logits = names.index(term.input("logits"));
    let labels = names.index(term.input("labels"));
    for (t, _) in &term.weights {
        names.index(t);
    }
    let w = weight_expr(&term.weights, |n| format!("in{}[r]", names.position(n)));
    let values = layout(&format!("in{logits}"), &format!("in{labels}"), w);
    let inputs: Vec<(String, u64)> = names
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), if i == logits { 4 * logits_width } else { 4 }))
        .collect();
    let mut src = format!("{COMMON}\n");
    src.push_str("@group(0) @binding(0) var<storage, read> chunk: Chunk;\n");
    src.push_str("@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;\n");
    let next = grouping.declare(&mut src, 2);
    for (i, (name, _)) in inputs.iter().enumerate() {
        let _ = writeln!(
            src,
            "@group(0) @binding({}) var<storage, read> in{i}: array<f32>; // {name}",
            next + i
        );
    }
    let _ = write!(
        src,
        "\n@compute @workgroup_size({WG})\nfn gather(@builtin(local_invocation_index) lid: u32, \
         @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{\n    \
         _ = session_range(0u);\n    let wg = linear_workgroup(wid, nwg);\n    let p = wg * WG + lid;\n    \
         if (wg >= chunk.wgs || p >= chunk.rows) {{\n        return;\n    }}\n    let r = batch_row(p);\n    \
         out[p] = vec4<f32>({}, {}, {}, {});\n}}\n",
        values[0], values[1], values[2], values[3]
    );
    let mut binds = vec![Bind::Chunk, Bind::Whole(Source::Internal(out))];
    binds.extend(grouping.binds());
    binds.extend(inputs.iter().map(|(name, row_bytes)| Bind::Rows {
        source: Source::Input(name.clone()),
        row_bytes: *row_bytes,
    }));
    PassSpec {
        label: format!("{label} gather"),
        source: src,
        entry: "gather",
        binds,
        work: Work::Rows { rows_per_wg: WG },
        reads: inputs.iter().map(|(n, _)| n.clone()).collect(),
        params: [0; 3],
    }
}

/// The group-wide buffers a pairwise or JRC term binds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shared {
    pub grouping: Grouping,
    pub partials: usize,
    pub scalars: usize,
    pub aux: usize,
}

/// The passes of one term: those before the combine pass, and the one after it.
pub(crate) struct TermPasses {
    pub forward: Vec<PassSpec>,
    pub apply: PassSpec,
}

/// What the pass after the combine writes: for every sorted row p, component c of `expr` goes to
/// `grad[batch_row(p) * width + c]` of the term's logits. `expr` is WGSL over `p`, `scalars`,
/// the WGSL `functions` and `values{i}`: the internal buffers `values`, each an array of the
/// given WGSL element type.
pub(crate) struct Apply<'a> {
    pub values: &'a [(usize, &'a str)],
    pub functions: &'a str,
    pub expr: &'a str,
    pub width: u32,
}

/// The pass after the combine (see [`Apply`]); the gradient is added to when `grad_accumulates`.
pub(crate) fn apply_pass(
    label: &str,
    term: &Resolved,
    shared: Shared,
    a: Apply,
    grad_accumulates: bool,
) -> PassSpec {
    let Apply {
        values,
        functions,
        expr,
        width,
    } = a;
    let grad = term.input("logits");
    let mut src = format!("{COMMON}\n{functions}\n");
    src.push_str("@group(0) @binding(0) var<storage, read> chunk: Chunk;\n");
    src.push_str("@group(0) @binding(1) var<storage, read> scalars: array<f32>;\n");
    let _ = writeln!(
        src,
        "@group(0) @binding(2) var<storage, read_write> grad: array<f32>; // {grad}"
    );
    let mut next = 3;
    for (i, (_, ty)) in values.iter().enumerate() {
        let _ = writeln!(
            src,
            "@group(0) @binding({next}) var<storage, read> values{i}: array<{ty}>;"
        );
        next += 1;
    }
    shared.grouping.declare(&mut src, next);
    let _ = write!(
        src,
        "\n@compute @workgroup_size({WG})\nfn apply(@builtin(local_invocation_index) lid: u32, \
         @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{\n    \
         _ = session_range(0u);\n    let wg = linear_workgroup(wid, nwg);\n    let p = wg * WG + lid;\n    \
         if (wg >= chunk.wgs || p >= chunk.rows) {{\n        return;\n    }}\n    \
         let g = {expr};\n    let at = batch_row(p) * {width}u;\n"
    );
    for (c, component) in ["x", "y", "z", "w"].iter().take(width as usize).enumerate() {
        let v = if width == 1 {
            "g".to_string()
        } else {
            format!("g.{component}")
        };
        if grad_accumulates {
            let _ = writeln!(src, "    grad[at + {c}u] = grad[at + {c}u] + {v};");
        } else {
            let _ = writeln!(src, "    grad[at + {c}u] = {v};");
        }
    }
    src.push_str("}\n");
    let mut binds = vec![
        Bind::Chunk,
        Bind::Whole(Source::Internal(shared.scalars)),
        Bind::Whole(Source::Grad(grad.to_string())),
    ];
    binds.extend(
        values
            .iter()
            .map(|(b, _)| Bind::Whole(Source::Internal(*b))),
    );
    binds.extend(shared.grouping.binds());
    PassSpec {
        label: format!("{label} apply"),
        source: src,
        entry: "apply",
        binds,
        work: Work::Rows { rows_per_wg: WG },
        reads: Vec::new(),
        params: [0; 3],
    }
}
