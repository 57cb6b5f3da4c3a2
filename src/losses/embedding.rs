//! What the embedding families (`retrieval`, `metric`, `mining`) share: kernel assembly from the
//! sections of their WGSL files, the `prep` pass that writes the rows a similarity reads
//! (normalised under cosine), the `rowinfo` pass that gathers each row's weight, ids and keys
//! from the batch, and the `apply` pass after the combine that scales a row's gradient by the
//! term's coefficient and takes it through the normalisation into the raw input's gradient
//! (`shaders/embedding.wgsl`).

use crate::batch::DType;
use crate::error::{Error, Result};
use crate::kernel::{Bind, PassSpec, Source, Work, COMMON, EMBEDDING, WG};
use crate::schedule::Resolved;
use std::fmt::Write;

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
    pub bank: Option<super::retrieval::Bank>,
}

/// Refuses a buffer of `bytes` that one storage binding (`max` bytes) cannot cover.
pub(crate) fn check_binding(term: &Resolved, what: &str, bytes: u64, max: u64) -> Result<()> {
    if bytes > max {
        return Err(Error::Unsupported(format!(
            "term '{}': {what} needs {bytes} bytes in one storage binding, the adapter allows \
             {max}; use a smaller batch",
            term.term.name
        )));
    }
    Ok(())
}

/// One invocation per row, 256 rows per workgroup.
pub(crate) const ROWS: Work = Work::Rows { rows_per_wg: WG };

/// A WGSL constant of a generated kernel.
pub(crate) enum Const {
    U32(u32),
    F32(f64),
    Bool(bool),
}

/// The text of section `name` of a sectioned WGSL file (a line "//// kernel" and a name starts
/// sections; the text before the first is shared by all).
fn section(file: &str, name: &str) -> (String, String) {
    let mut parts = file.split("//// kernel ");
    let shared = parts.next().unwrap_or_default().to_string();
    let body = parts
        .find_map(|p| {
            let (first, rest) = p.split_once('\n')?;
            (first.trim() == name).then(|| rest.to_string())
        })
        .unwrap_or_else(|| panic!("no section '{name}' in the shader file"));
    (shared, body)
}

/// Assembles a kernel: common.wgsl, the constants, embedding.wgsl's shared part, the family
/// file's shared part (when it is not embedding.wgsl itself), then the section. `sections` may
/// name several sections of the family file, concatenated (bindings, then the entry point).
pub(crate) fn kernel(family: &str, sections: &[&str], consts: &[(&str, Const)]) -> String {
    let mut src = format!("{COMMON}\n");
    for (name, c) in consts {
        let _ = match c {
            Const::U32(v) => writeln!(src, "const {name}: u32 = {v}u;"),
            Const::F32(v) => writeln!(src, "const {name}: f32 = {};", crate::kernel::lit(*v)),
            Const::Bool(v) => writeln!(src, "const {name}: bool = {v};"),
        };
    }
    let (embedding_shared, _) = section(EMBEDDING, "prep");
    src.push_str(&embedding_shared);
    let mut shared_done = std::ptr::eq(family, EMBEDDING);
    for s in sections {
        let (shared, body) = section(family, s);
        if !shared_done {
            src.push_str(&shared);
            shared_done = true;
        }
        src.push_str(&body);
    }
    src
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
    let source = kernel(
        EMBEDDING,
        &["prep"],
        &[
            ("D", Const::U32(d as u32)),
            ("N", Const::U32(n as u32)),
            ("OUT_OFF", Const::U32(offset as u32)),
            ("COSINE", Const::Bool(cosine)),
        ],
    );
    PassSpec {
        label: format!("{label} prep {input}"),
        source,
        entry: "prep",
        binds: vec![
            Bind::Chunk,
            Bind::Whole(Source::Input(input.to_string())),
            Bind::Whole(Source::Internal(out)),
        ],
        work: ROWS,
        reads: vec![input.to_string()],
        params: [0; 3],
    }
}

/// One output of the `rowinfo` pass: internal buffer, WGSL element type, expression over `r`
/// and the bound inputs `in{k}`.
pub(crate) struct RowOut {
    pub buffer: usize,
    pub ty: &'static str,
    pub expr: String,
    /// Also write the value at row r + offset.
    pub offset: Option<u64>,
}

/// The batch tensors a `rowinfo` pass reads, each bound once, with their element type.
#[derive(Default)]
pub(crate) struct RowInputs {
    names: Vec<(String, DType)>,
}

impl RowInputs {
    fn slot(&mut self, name: &str, dtype: DType) -> usize {
        if let Some(i) = self.names.iter().position(|(n, _)| n == name) {
            return i;
        }
        self.names.push((name.to_string(), dtype));
        self.names.len() - 1
    }

    /// The f32 value of tensor `name` at row `r`.
    pub fn real(&mut self, name: &str) -> String {
        format!("in{}[r]", self.slot(name, DType::F32))
    }

    /// An integer (or f32 label) of tensor `name` at row `r` as 64 bits (lo, hi): equal values
    /// give equal keys (f32 −0 and 0 too).
    pub fn key(&mut self, name: &str, dtype: DType) -> String {
        let k = self.slot(name, dtype);
        match dtype {
            DType::F32 => {
                format!("vec2<u32>(bitcast<u32>(select(in{k}[r], 0.0, in{k}[r] == 0.0)), 0u)")
            }
            DType::I32 => {
                format!("vec2<u32>(bitcast<u32>(in{k}[r]), select(0u, 0xffffffffu, in{k}[r] < 0))")
            }
            DType::U32 => format!("vec2<u32>(in{k}[r], 0u)"),
            DType::I64 => format!("vec2<u32>(in{k}[2u * r], in{k}[2u * r + 1u])"),
        }
    }

    /// The sample weight of `weights` (tensor, coefficient) at row `r`.
    pub fn weight(&mut self, weights: &[(String, f64)]) -> String {
        for (t, _) in weights {
            self.slot(t, DType::F32);
        }
        super::weight_expr(weights, |n| {
            let k = self.names.iter().position(|(m, _)| m == n).expect("added");
            format!("in{k}[r]")
        })
    }
}

/// The `rowinfo` pass: for rows r in [0, n), `out[r] = expr` for every output.
pub(crate) fn rowinfo(label: &str, n: u64, inputs: RowInputs, outputs: &[RowOut]) -> PassSpec {
    let mut src = format!("{COMMON}\n@group(0) @binding(0) var<storage, read> chunk: Chunk;\n");
    let mut binds = vec![Bind::Chunk];
    for (k, o) in outputs.iter().enumerate() {
        let _ = writeln!(
            src,
            "@group(0) @binding({}) var<storage, read_write> out{k}: array<{}>;",
            binds.len(),
            o.ty
        );
        binds.push(Bind::Whole(Source::Internal(o.buffer)));
    }
    for (k, (name, dtype)) in inputs.names.iter().enumerate() {
        let ty = match dtype {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::U32 | DType::I64 => "u32",
        };
        let _ = writeln!(
            src,
            "@group(0) @binding({}) var<storage, read> in{k}: array<{ty}>; // {name}",
            binds.len()
        );
        binds.push(Bind::Whole(Source::Input(name.clone())));
    }
    let _ = write!(
        src,
        "\n@compute @workgroup_size({WG})\nfn rowinfo(@builtin(local_invocation_index) lid: u32, \
         @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{\n    \
         let wg = linear_workgroup(wid, nwg);\n    let r = wg * WG + lid;\n    \
         if (wg >= chunk.wgs || r >= {n}u) {{\n        return;\n    }}\n"
    );
    for (k, o) in outputs.iter().enumerate() {
        let _ = writeln!(src, "    let v{k} = {};\n    out{k}[r] = v{k};", o.expr);
        if let Some(off) = o.offset {
            let _ = writeln!(src, "    out{k}[r + {off}u] = v{k};");
        }
    }
    src.push_str("}\n");
    PassSpec {
        label: format!("{label} rowinfo"),
        source: src,
        entry: "rowinfo",
        binds,
        work: ROWS,
        reads: inputs.names.into_iter().map(|(n, _)| n).collect(),
        params: [0; 3],
    }
}

/// What the `apply` pass of one input computes.
pub(crate) struct Apply<'a> {
    /// The input whose gradient is written (also read for the normalisation's Jacobian).
    pub input: &'a str,
    /// Its rows and dimension.
    pub n: u64,
    pub d: u64,
    pub cosine: bool,
    /// The scalars buffer and the index of the term's coefficient in it.
    pub scalars: usize,
    pub coef: usize,
    /// Internal buffers the expression reads, with their WGSL names (all `array<f32>`).
    pub parts: &'a [(usize, &'a str)],
    /// Extra WGSL constants of the expression.
    pub consts: Vec<(&'a str, Const)>,
    /// WGSL body of `fn grad_component(r: u32, c: u32) -> f32`: the gradient with respect to
    /// component c of row r of the similarity-ready rows, before the coefficient.
    pub body: String,
    /// Add to the gradient (another term or role already wrote it this step).
    pub accumulate: bool,
}

/// The `apply` pass (see [`Apply`]).
pub(crate) fn apply(label: &str, a: Apply) -> PassSpec {
    let mut consts = vec![
        ("D", Const::U32(a.d as u32)),
        ("N", Const::U32(a.n as u32)),
        ("COEF", Const::U32(a.coef as u32)),
        ("COSINE", Const::Bool(a.cosine)),
        ("ACCUMULATE", Const::Bool(a.accumulate)),
    ];
    consts.extend(a.consts);
    let src = kernel(EMBEDDING, &["apply"], &consts);
    let mut decls = String::new();
    for (k, (_, name)) in a.parts.iter().enumerate() {
        let _ = writeln!(
            decls,
            "@group(0) @binding({}) var<storage, read> {name}: array<f32>;",
            4 + k
        );
    }
    let _ = writeln!(
        decls,
        "\nfn grad_component(r: u32, c: u32) -> f32 {{\n{}\n}}",
        a.body
    );
    let src = src.replace("//// bindings\n", &decls);
    let mut binds = vec![
        Bind::Chunk,
        Bind::Whole(Source::Internal(a.scalars)),
        Bind::Whole(Source::Grad(a.input.to_string())),
        Bind::Whole(Source::Input(a.input.to_string())),
    ];
    binds.extend(
        a.parts
            .iter()
            .map(|(b, _)| Bind::Whole(Source::Internal(*b))),
    );
    PassSpec {
        label: format!("{label} apply {}", a.input),
        source: src,
        entry: "apply",
        binds,
        work: ROWS,
        reads: vec![a.input.to_string()],
        params: [0; 3],
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

/// Columns (or rows) one sweep dispatch visits per invocation for rows of `d` floats: llvmpipe
/// stops any invocation's loops after 65,535 iterations in all (its loop limiter; a real GPU has
/// no such limit), and a visit costs up to 2·d + 8 iterations (the dot product, the gradient's
/// axpy, the tile loads), so the sweeps split their columns into ranges of this many.
pub(crate) fn columns_per_dispatch(d: u64) -> u64 {
    (60_000 / (2 * d + 8)).max(1)
}
