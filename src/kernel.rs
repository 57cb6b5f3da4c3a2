//! Shader sources, their validation, and what a pass binds and dispatches.
//!
//! Kernels are WGSL: the files under `shaders/` hold the loss functions and reductions, and each
//! family module (`losses/*.rs`) generates the small entry point that binds a group's tensors and
//! calls them for every term of the group. Term parameters are baked into the generated source as
//! constants, so a plan's pipelines are specialised once at plan time and cached by the engine.

use crate::error::{Error, Result};

/// Invocations per workgroup of every kernel (`WG` in common.wgsl).
pub(crate) const WG: u32 = 256;

/// `shaders/common.wgsl`: numerics, chunk struct, reductions.
pub(crate) const COMMON: &str = include_str!("../shaders/common.wgsl");
/// `shaders/binary.wgsl`: per-row binary and regression losses.
pub(crate) const BINARY: &str = include_str!("../shaders/binary.wgsl");
/// `shaders/softmax.wgsl`: online log-sum-exp helpers.
pub(crate) const SOFTMAX: &str = include_str!("../shaders/softmax.wgsl");
/// `shaders/combine.wgsl`: the combine pass.
pub(crate) const COMBINE: &str = include_str!("../shaders/combine.wgsl");
/// `shaders/ghm.wgsl`: GHM-C gradient norm and bins.
pub(crate) const GHM: &str = include_str!("../shaders/ghm.wgsl");
/// `shaders/select.wgsl`: the deterministic top-k selection passes.
pub(crate) const SELECT: &str = include_str!("../shaders/select.wgsl");
/// `shaders/prepare.wgsl`: statistics → per-row factors of the batch-wide terms.
pub(crate) const PREPARE: &str = include_str!("../shaders/prepare.wgsl");

/// `shaders/session.wgsl`: grouping rows by session (radix sort, session ranges).
pub(crate) const SESSION: &str = include_str!("../shaders/session.wgsl");
/// `shaders/pairwise.wgsl`: per-pair losses of the pairwise-in-session terms.
pub(crate) const PAIRWISE: &str = include_str!("../shaders/pairwise.wgsl");
/// `shaders/jrc.wgsl`: JRC's per-row calibration CE and online log-sum-exp.
pub(crate) const JRC: &str = include_str!("../shaders/jrc.wgsl");

/// `shaders/embedding.wgsl`: rows of the similarity terms, and their gradient's last pass.
pub(crate) const EMBEDDING: &str = include_str!("../shaders/embedding.wgsl");
/// `shaders/retrieval.wgsl`: in-batch, cross-batch and contrastive softmax over columns.
pub(crate) const RETRIEVAL: &str = include_str!("../shaders/retrieval.wgsl");
/// `shaders/metric.wgsl`: circle and multi-similarity losses.
pub(crate) const METRIC: &str = include_str!("../shaders/metric.wgsl");
/// `shaders/mining.wgsl`: softmax CE with negative mining.
pub(crate) const MINING: &str = include_str!("../shaders/mining.wgsl");

/// The shader files with the files each needs before it, for validation and assembly.
pub const SHADER_FILES: &[(&str, &[&str])] = &[
    ("common.wgsl", &[]),
    ("binary.wgsl", &["common.wgsl"]),
    ("softmax.wgsl", &["common.wgsl"]),
    ("combine.wgsl", &["common.wgsl"]),
    ("ghm.wgsl", &["common.wgsl"]),
    ("select.wgsl", &["common.wgsl"]),
    ("prepare.wgsl", &["common.wgsl"]),
    ("session.wgsl", &["common.wgsl"]),
    ("pairwise.wgsl", &["common.wgsl", "binary.wgsl"]),
    ("jrc.wgsl", &["common.wgsl"]),
];

/// The text of a shader file by name.
pub fn shader_file(name: &str) -> Option<&'static str> {
    Some(match name {
        "common.wgsl" => COMMON,
        "binary.wgsl" => BINARY,
        "softmax.wgsl" => SOFTMAX,
        "combine.wgsl" => COMBINE,
        "ghm.wgsl" => GHM,
        "select.wgsl" => SELECT,
        "prepare.wgsl" => PREPARE,
        "session.wgsl" => SESSION,
        "pairwise.wgsl" => PAIRWISE,
        "jrc.wgsl" => JRC,
        _ => return None,
    })
}

/// Parses and validates WGSL with naga; the error names `label` and the line at fault.
pub fn validate_wgsl(label: &str, source: &str) -> std::result::Result<(), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| e.emit_to_string_with_path(source, label))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string_with_path(source, label))?;
    Ok(())
}

/// An f32 WGSL literal for a config value (exact round trip of the f32 value).
pub(crate) fn lit(x: f64) -> String {
    let v = x as f32;
    let s = format!("{v:?}");
    let s = if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    };
    format!("f32({s})")
}

/// Where a bound buffer comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A batch tensor: the plan's upload buffer or the trainer's own buffer.
    Input(String),
    /// The gradient buffer of a tensor.
    Grad(String),
    /// A buffer owned by the plan (partials, scalars, class weights, row statistics...).
    Internal(usize),
}

/// One binding of a pass, in binding-index order.
#[derive(Clone, Debug)]
pub(crate) enum Bind {
    /// The per-chunk parameters (`Chunk` in common.wgsl), a read-only storage buffer.
    Chunk,
    /// The whole buffer.
    Whole(Source),
    /// The rows of the current chunk: `row_bytes` per row.
    Rows { source: Source, row_bytes: u64 },
}

/// How many workgroups a chunk of `rows` rows needs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Work {
    /// `rows_per_wg` rows per workgroup.
    Rows { rows_per_wg: u32 },
    /// One workgroup in all.
    Single,
}

impl Work {
    pub(crate) fn workgroups(self, rows: u64) -> u64 {
        match self {
            Work::Rows { rows_per_wg } => rows.div_ceil(rows_per_wg as u64),
            Work::Single => 1,
        }
    }
}

/// A kernel launch as a family describes it; the plan turns it into pipelines and bind groups.
#[derive(Clone, Debug)]
pub(crate) struct PassSpec {
    pub label: String,
    pub source: String,
    pub entry: &'static str,
    pub binds: Vec<Bind>,
    pub work: Work,
    /// Batch tensors the pass reads (for the per-step counters).
    pub reads: Vec<String>,
    /// Parameters of the pass itself, `Chunk::p0..p2` (e.g. a selection's round).
    pub params: [u32; 3],
}

/// A 2-D grid for `n` workgroups under the per-dimension limit; kernels linearise it and skip
/// the spare workgroups (`Chunk::wgs`).
pub(crate) fn grid(n: u64, max_per_dim: u32) -> Result<(u32, u32)> {
    let max = max_per_dim.max(1) as u64;
    let x = n.clamp(1, max);
    let y = n.div_ceil(x).max(1);
    if y > max {
        return Err(Error::Unsupported(format!(
            "{n} workgroups exceed the adapter's {max}x{max} grid"
        )));
    }
    Ok((x as u32, y as u32))
}

/// Rows per chunk so that every row-bound buffer fits one binding and every chunk offset is
/// aligned; `None` when a single row is larger than a binding.
pub(crate) fn chunk_rows(
    rows: u64,
    row_bytes: &[u64],
    max_binding: u64,
    align: u64,
) -> Option<u64> {
    let widest = row_bytes.iter().copied().max().unwrap_or(4).max(1);
    let fit = max_binding / widest;
    if fit == 0 {
        return None;
    }
    if fit >= rows {
        return Some(rows.max(1));
    }
    // Chunk starts must be multiples of `align` bytes in every buffer.
    let mut step = 1u64;
    for &b in row_bytes {
        let need = align / gcd(align, b.max(1));
        step = step / gcd(step, need) * need;
    }
    let r = fit / step * step;
    (r > 0).then_some(r)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_round_trip() {
        assert_eq!(lit(1.0), "f32(1.0)");
        assert_eq!(lit(0.25), "f32(0.25)");
        assert_eq!(lit(-2.0), "f32(-2.0)");
        assert_eq!(lit(1e-7), "f32(1e-7)");
    }

    #[test]
    fn chunks_fit_and_align() {
        // 8193 floats per row, 128 MiB binding, 256-byte alignment.
        let r = chunk_rows(4096, &[8193 * 4, 4], 128 << 20, 256).unwrap();
        assert!(r * 8193 * 4 <= 128 << 20);
        assert_eq!((r * 8193 * 4) % 256, 0);
        assert_eq!((r * 4) % 256, 0);
        assert_eq!(chunk_rows(10, &[4], 1 << 20, 256), Some(10));
        assert_eq!(chunk_rows(10, &[1 << 21], 1 << 20, 256), None);
    }

    #[test]
    fn grids_cover_large_counts() {
        assert_eq!(grid(10, 65535).unwrap(), (10, 1));
        let (x, y) = grid(70_000, 65535).unwrap();
        assert!(x as u64 * y as u64 >= 70_000);
    }
}
