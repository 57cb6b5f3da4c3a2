//! What the families' kernels share: the scalars record of a term, a generated kernel's bound
//! tensors, sample-weight expressions, and how many rows a sweep invocation holds.

use crate::kernel::{bind, Bind, Binding, Source};
use crate::wgsl::f32_literal;
use std::fmt::Write;

/// Offset of term `slot`'s gradient coefficient in the scalars block (see combine.wgsl).
pub(crate) fn coef_index(slot: usize) -> usize {
    crate::combine::S_TERM_BASE + slot * crate::combine::S_TERM_STRIDE + crate::combine::T_COEF
}

/// Where a row term keeps its data on the GPU: a batch-wide term's (GHM-C, OHEM, F1, ZILN)
/// regions and buffers, and a term's per-row prediction.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TermAux {
    /// First word of the term's region of the `aux` buffer ([`statistics::aux_words`]).
    pub base: u32,
    /// OHEM: the internal buffer holding one order key per row.
    pub keys: Option<usize>,
    /// GHM-C: first word of this step's new accumulators in `aux` (committed when the step
    /// succeeds).
    pub pending: u32,
    /// GHM-C: first word of the committed accumulators in the state buffer.
    pub acc: u32,
    /// A term with a per-row prediction (`ziln_loss`): the internal buffer of one f32 per row
    /// its loss pass writes.
    pub prediction: Option<usize>,
}

/// The tensors a generated kernel binds, each once, in binding order.
#[derive(Default, Debug, Clone)]
pub(crate) struct Inputs {
    pub names: Vec<String>,
}

impl Inputs {
    /// Index of `name`, adding it on first use.
    pub fn index(&mut self, name: &str) -> usize {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        self.names.push(name.to_string());
        self.names.len() - 1
    }

    pub fn position(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("tensor registered before use")
    }
}

/// WGSL expression of a row's sample weight: 1, one tensor, or a linear combination; `value`
/// maps a tensor name to the WGSL expression of its value for the row.
pub(crate) fn weight_expr(weights: &[(String, f64)], value: impl Fn(&str) -> String) -> String {
    if weights.is_empty() {
        return "1.0".into();
    }
    let mut s = String::from("(");
    for (i, (t, c)) in weights.iter().enumerate() {
        if i > 0 {
            s.push_str(" + ");
        }
        if *c == 1.0 {
            let _ = write!(s, "{}", value(t));
        } else {
            let _ = write!(s, "{} * {}", f32_literal(*c as f32), value(t));
        }
    }
    s.push(')');
    s
}

/// First binding index of the weight tensors a generated `sample_weight` reads (weights.wgsl).
const WEIGHT_BINDINGS: usize = 40;

/// The `sample_weight` splice of weights.wgsl for a term's sample weights (tensor, coefficient):
/// the generated function with the declarations of the tensors it reads (`weight<k>`), and those
/// tensors bound by rows. `None` without sample weights (the file's default returns 1).
pub(crate) fn sample_weight_splice(weights: &[(String, f64)]) -> Option<(String, Vec<Binding>)> {
    if weights.is_empty() {
        return None;
    }
    let mut src = String::new();
    let mut binds = Vec::new();
    for (k, (tensor, _)) in weights.iter().enumerate() {
        let _ = writeln!(
            src,
            "@group(0) @binding({}) var<storage, read> weight{k}: array<f32>; // {tensor}",
            WEIGHT_BINDINGS + k
        );
        let rows = Bind::Rows {
            source: Source::Input(tensor.clone()),
            row_bytes: 4,
        };
        binds.push(bind(format!("weight{k}"), rows));
    }
    let expr = weight_expr(weights, |n| {
        let k = weights.iter().position(|(t, _)| t == n).expect("listed");
        format!("weight{k}[r]")
    });
    let _ = writeln!(
        src,
        "fn sample_weight(r: u32) -> f32 {{\n    return {expr};\n}}"
    );
    Some((src, binds))
}

/// Rows one invocation of a sweep over `rows` rows holds in registers, so that each item it
/// visits is loaded once for all of them: on CPU adapters, where a load costs about 100 FMAs,
/// up to `fit` (what the kernel's registers take) while the pass keeps one workgroup of 256
/// invocations per core for the driver's threads (lavapipe and llvmpipe run one per core); on
/// other adapters 1, until a GPU has measured the trade against occupancy (a block of 8 rows
/// leaves B/8 invocations). `chosen` (`EngineOptions::sweep_block_rows`) overrides that,
/// within `fit`.
pub(crate) fn held_rows(cpu: bool, chosen: Option<u32>, fit: u32, rows: u64) -> u32 {
    let fit = fit.max(1);
    if let Some(n) = chosen {
        return n.clamp(1, fit);
    }
    if !cpu {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let parallel = (rows / (cores * crate::kernel::WG as u64)).max(1);
    parallel.min(fit as u64) as u32
}
