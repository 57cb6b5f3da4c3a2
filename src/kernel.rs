//! What a family hands the plan for each kernel launch: the shader (a file under `shaders/`, or
//! a row group's generated text, composed by [`crate::wgsl`]), its entry point, the buffers
//! bound to it **by the names of the kernel's variables** (reflection finds their binding
//! indices, so no list of bindings must agree with the shader by position), how many
//! workgroups it needs, and its own parameters.
//!
//! Every kernel binds its parameters as a read-only storage struct whose first member is the
//! [`Chunk`] the plan fills in per dispatch; a kernel with parameters of its own declares a
//! struct that starts with `chunk: Chunk` and mirrors it with a [`crate::gpu_struct!`].

use crate::error::{Error, Result};
use crate::wgsl::{self, Specialization};

pub use crate::wgsl::{shader_file, validate_wgsl};

/// Invocations per workgroup of every kernel (`WG` in common.wgsl).
pub(crate) const WG: u32 = 256;

/// Every shader file with the files it needs before it. Each file imports what it needs
/// (`//#import`), so [`shader_file`] is complete on its own and the lists are empty.
pub const SHADER_FILES: &[(&str, &[&str])] = &[
    ("common.wgsl", &[]),
    ("binary.wgsl", &[]),
    ("softmax.wgsl", &[]),
    ("combine.wgsl", &[]),
    ("ghm.wgsl", &[]),
    ("select.wgsl", &[]),
    ("prepare.wgsl", &[]),
    ("session.wgsl", &[]),
    ("sweep.wgsl", &[]),
    ("rows.wgsl", &[]),
    ("statistics.wgsl", &[]),
    ("pairwise.wgsl", &[]),
    ("jrc.wgsl", &[]),
    ("listwise.wgsl", &[]),
    ("select_words.wgsl", &[]),
    ("grouping.wgsl", &[]),
    ("weights.wgsl", &[]),
    ("embedding.wgsl", &[]),
    ("retrieval.wgsl", &[]),
    ("metric.wgsl", &[]),
    ("mining.wgsl", &[]),
    ("finite.wgsl", &[]),
    ("cast.wgsl", &[]),
];

crate::gpu_struct! {
    /// The rows a dispatch covers (`Chunk` in common.wgsl). Tensors are bound from `row_base`,
    /// so kernels index rows relative to the chunk. Partial sums of a group's k-th slot go to
    /// `partials[wg_base + k * term_stride + workgroup]`.
    pub(crate) struct Chunk in "common.wgsl" test chunk_layout {
        /// First row of the chunk in the batch.
        row_base: u32,
        /// Rows of the chunk.
        rows: u32,
        /// Workgroups that do work (the 2-D grid may have spare ones).
        wgs: u32,
        /// This chunk's first workgroup among the group's partials.
        wg_base: u32,
        /// Workgroups of the whole group: the stride between its partial slots.
        term_stride: u32,
    }
}

/// Words of [`Chunk`].
pub(crate) const CHUNK_WORDS: usize = 5;

/// A kernel's parameters beyond the chunk, as the words after it: built from a
/// [`crate::gpu_struct!`] whose first field is the chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params(Vec<u32>);

impl Params {
    /// No parameters beyond the chunk.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// The words of `params` after its leading chunk.
    pub fn of<T: bytemuck::Pod>(params: &T) -> Self {
        let words: &[u32] = bytemuck::cast_slice(bytemuck::bytes_of(params));
        Self(words[CHUNK_WORDS..].to_vec())
    }

    /// The whole struct: `chunk`, then these words.
    pub fn with_chunk(&self, chunk: &Chunk) -> Vec<u32> {
        let mut words: Vec<u32> = bytemuck::cast_slice(bytemuck::bytes_of(chunk)).to_vec();
        words.extend_from_slice(&self.0);
        words
    }
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

/// What is bound to one variable of a kernel.
#[derive(Clone, Debug)]
pub(crate) enum Bind {
    /// The kernel's parameters: its [`Chunk`] and [`Params`], a read-only storage buffer.
    Chunk,
    /// The whole buffer.
    Whole(Source),
    /// The rows of the current chunk: `row_bytes` per row.
    Rows { source: Source, row_bytes: u64 },
}

/// A buffer bound to the kernel variable `name`.
#[derive(Clone, Debug)]
pub(crate) struct Binding {
    pub name: String,
    pub bind: Bind,
}

/// `name` bound to `bind`.
pub(crate) fn bind(name: impl Into<String>, bind: Bind) -> Binding {
    Binding {
        name: name.into(),
        bind,
    }
}

/// `name` bound to the whole internal buffer `index`.
pub(crate) fn internal(name: impl Into<String>, index: usize) -> Binding {
    bind(name, Bind::Whole(Source::Internal(index)))
}

/// Bindings a kernel's generated code declares (a row group's tensors, a softmax group's
/// labels and class weights): each one's WGSL declaration and what is bound to it come from one
/// `push`, so the two cannot disagree.
#[derive(Clone, Debug, Default)]
pub(crate) struct Generated {
    /// The binding index of the next declaration.
    next: usize,
    /// `@group(0) @binding(i) var<...> name: ...;` lines.
    pub wgsl: String,
    pub binds: Vec<Binding>,
}

impl Generated {
    /// Declarations from binding index `first`.
    pub(crate) fn from(first: usize) -> Self {
        Self {
            next: first,
            ..Self::default()
        }
    }

    /// Declares `decl` (`var<...> name: type;`, with any comment) at the next binding index,
    /// bound to `binding`.
    pub(crate) fn push(&mut self, decl: String, binding: Binding) {
        use std::fmt::Write;
        let _ = writeln!(self.wgsl, "@group(0) @binding({}) {decl}", self.next);
        self.next += 1;
        self.binds.push(binding);
    }
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

/// The WGSL of a kernel: a shader file and how it is specialised (constants, `//#if` branches,
/// and for a fused row group its generated term list).
#[derive(Clone, Debug)]
pub(crate) enum Shader {
    File(&'static str, Specialization),
}

impl Shader {
    /// The composed source; errors name the pass.
    pub(crate) fn source(&self, label: &str) -> Result<String> {
        let Shader::File(file, spec) = self;
        wgsl::compose(file, spec).map_err(|e| Error::Gpu(format!("pass '{label}': {e}")))
    }
}

/// A kernel launch as a family describes it; the plan turns it into pipelines and bind groups.
#[derive(Clone, Debug)]
pub(crate) struct PassSpec {
    pub label: String,
    pub shader: Shader,
    pub entry: &'static str,
    pub binds: Vec<Binding>,
    pub work: Work,
    /// Batch tensors the pass reads (for the per-step counters).
    pub reads: Vec<String>,
    /// The kernel's parameters after its chunk.
    pub params: Params,
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

    #[test]
    fn params_follow_the_chunk() {
        let chunk = Chunk {
            row_base: 1,
            rows: 2,
            wgs: 3,
            wg_base: 4,
            term_stride: 5,
        };
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct P {
            chunk: Chunk,
            a: u32,
            b: u32,
        }
        let p = Params::of(&P {
            chunk: Chunk::default(),
            a: 7,
            b: 8,
        });
        assert_eq!(p.with_chunk(&chunk), vec![1, 2, 3, 4, 5, 7, 8]);
    }
}
