//! The passes of a row group: the fused row kernel (`shaders/rows.wgsl`, a static skeleton with
//! the group's term list spliced in), and before it the statistics passes of its batch-wide
//! terms ([`crate::losses::statistics`]).

use super::kernel::{row_term, Buffers, RowKernel, FIRST_BINDING, ROWS_PER_INVOCATION};
use crate::kernel::{bind, internal, Bind, Params, PassSpec, Shader, Work, WG};
use crate::losses::common::{coef_index, TermAux};
use crate::losses::family::Resolved;
use crate::losses::statistics::{self, BatchWide};
use crate::wgsl::Specialization;
use std::fmt::Write;

/// The passes of a row group.
pub(crate) struct RowPasses {
    /// Statistics, selections and prepare, in order (empty without batch-wide terms).
    pub pre: Vec<PassSpec>,
    pub forward: PassSpec,
    /// None when the forward pass writes the gradients itself (fused).
    pub backward: Option<PassSpec>,
    /// Tensors whose gradient the backward pass writes, in binding order.
    pub grads: Vec<String>,
    /// Partial-sum slots per workgroup: one per term, then the statistics slots.
    pub partial_slots: usize,
}

/// The row's factor dL/dl_i·(1/coefficient) of term `k` (`f{k}`) and, for F1, the gradient every
/// row gets through tp (`e{k}`); `w{k}` and `lg{k}` are in scope, and `key{k}` for OHEM.
fn factor(k: usize, term: &Resolved, aux: &TermAux, v: &dyn Fn(&str) -> String) -> String {
    let row = row_term(term);
    match row.batch_wide() {
        Some(bw) => statistics::factor(k, row, bw, aux, v),
        None => format!("let f{k} = w{k};"),
    }
}

impl RowKernel<'_> {
    /// `w{k}`, `lg{k}` (loss, derivative), `f{k}` (row factor) and for F1 `e{k}`, of every term.
    fn term_values(&self, src: &mut String, indent: &str) {
        let value = |n: &str| self.value(n);
        self.weights(src, indent);
        for (j, (k, _)) in self.keys.iter().enumerate() {
            let _ = writeln!(src, "{indent}let key{k} = keys{j}[r];");
        }
        for (k, t) in self.terms.iter().enumerate() {
            let row = row_term(t);
            // A row function that reads batch-wide factors gets them as `bw{k}`.
            let prelude = row
                .batch_wide()
                .and_then(|bw| statistics::prelude(k, bw, &self.aux[k]));
            let batch_wide = match prelude {
                Some(lines) => {
                    let _ = writeln!(src, "{indent}{lines}");
                    format!("bw{k}")
                }
                None => String::new(),
            };
            let _ = writeln!(
                src,
                "{indent}let lg{k} = {};",
                row.call(&value, &batch_wide)
            );
            for line in factor(k, t, &self.aux[k], &value).lines() {
                let _ = writeln!(src, "{indent}{line}");
            }
        }
    }

    /// Σ_k coef_k · (f_k · dl_k/dx + e_k) into each gradient.
    fn write_grads(&self, src: &mut String, indent: &str, grad_accumulates: &dyn Fn(&str) -> bool) {
        for (i, n) in self.grads.names.iter().enumerate() {
            match self.columns(n) {
                1 => writeln!(src, "{indent}var g{i} = 0.0;"),
                c => writeln!(src, "{indent}var g{i} = vec{c}<f32>(0.0);"),
            }
            .expect("writing to a String");
        }
        for (k, t) in self.terms.iter().enumerate() {
            let _ = writeln!(
                src,
                "{indent}{{\n{indent}    let c = scalars[{}];",
                coef_index(t.slot),
            );
            let extra = if matches!(row_term(t).batch_wide(), Some(BatchWide::F1 { .. })) {
                format!(" + e{k}")
            } else {
                String::new()
            };
            for (g, comp) in row_term(t).grads() {
                let i = self.grads.position(&g);
                let _ = writeln!(
                    src,
                    "{indent}    g{i} = g{i} + c * (f{k} * lg{k}.{comp}{extra});"
                );
            }
            let _ = writeln!(src, "{indent}}}");
        }
        for (i, n) in self.grads.names.iter().enumerate() {
            let c = self.columns(n);
            // A tensor read by rows of c values gets its gradient written value by value.
            let targets: Vec<(String, String)> = if c == 1 {
                vec![(format!("grad{i}[r]"), format!("g{i}"))]
            } else {
                let parts = ["x", "y", "z", "w"];
                (0..c as usize)
                    .map(|j| {
                        (
                            format!("grad{i}[{c}u * r + {j}u]"),
                            format!("g{i}.{}", parts[j]),
                        )
                    })
                    .collect()
            };
            for (at, value) in targets {
                if grad_accumulates(n) {
                    let _ = writeln!(src, "{indent}{at} = {at} + {value};");
                } else {
                    let _ = writeln!(src, "{indent}{at} = {value};");
                }
            }
        }
    }

    /// rows.wgsl's `terms` splice: the tensors' `bindings`, one accumulator per term,
    /// `forward_row` (with the gradients when `fused`), `write_partials` and `backward_row`.
    /// The accumulators are separate variables and the partials are written term by term: a
    /// private array indexed in a loop stays in memory on llvmpipe (a third slower).
    fn splice(
        &self,
        bindings: &str,
        fused: bool,
        grad_accumulates: &dyn Fn(&str) -> bool,
    ) -> String {
        let mut src = bindings.to_string();
        let indent = "    ";
        for k in 0..self.terms.len() {
            let _ = writeln!(src, "var<private> acc{k}: vec4<f32>;");
        }
        src.push_str("\nfn forward_row(r: u32) {\n");
        self.load(&mut src, indent);
        self.term_values(&mut src, indent);
        for k in 0..self.terms.len() {
            let _ = writeln!(
                src,
                "{indent}acc{k} = acc{k} + vec4<f32>(f{k} * lg{k}.x, f{k}, select(0.0, 1.0, f{k} != 0.0), 0.0);"
            );
        }
        self.write_predictions(&mut src, indent);
        if fused {
            self.write_grads(&mut src, indent, grad_accumulates);
        }
        src.push_str("}\n\nfn write_partials(lid: u32, wg: u32) {\n");
        for k in 0..self.terms.len() {
            let _ = writeln!(
                src,
                "{indent}let sum{k} = workgroup_sum(lid, acc{k});\n\
                 {indent}if (lid == 0u && wg < chunk.wgs) {{ partials[partial_index(chunk, {k}u, wg)] = sum{k}; }}"
            );
        }
        src.push_str("}\n\nfn backward_row(r: u32) {\n");
        self.load(&mut src, indent);
        self.term_values(&mut src, indent);
        self.write_grads(&mut src, indent, grad_accumulates);
        src.push_str("}\n");
        src
    }
}

/// Builds the passes of a row group of `rows` rows. `aux_of(slot)` says where a batch-wide term
/// keeps its data. `grad_accumulates(tensor)` says whether an earlier pass already wrote that
/// gradient this step (then this one adds to it). With `fused`, every term's gradient
/// coefficient is known before the step (the `coefficients` dispatch), so the forward pass also
/// writes the gradients and there is no backward pass.
pub(crate) fn passes(
    terms: &[Resolved],
    rows: u64,
    buffers: Buffers,
    aux_of: &dyn Fn(usize) -> TermAux,
    fused: bool,
    grad_accumulates: &dyn Fn(&str) -> bool,
) -> RowPasses {
    let kernel = RowKernel::new(terms, terms.iter().map(|t| aux_of(t.slot)).collect());
    let label = kernel.label();
    let generated = kernel.bindings(FIRST_BINDING, Some("read"), true);
    let spec = Specialization::new().splice(
        "terms",
        kernel.splice(&generated.wgsl, fused, grad_accumulates),
    );
    let mut binds = vec![
        bind("chunk", Bind::Chunk),
        internal("partials", buffers.partials),
        internal("aux", buffers.aux),
        internal("scalars", buffers.scalars),
    ];
    binds.extend(generated.binds);
    // Forward: per-term vec4(Σ f·l, Σ f, #{f ≠ 0}, 0) per workgroup (and, fused, the gradients).
    let forward = PassSpec {
        label: format!(
            "{label} {}",
            if fused { "forward+gradient" } else { "forward" }
        ),
        shader: Shader::File("rows.wgsl", spec.clone()),
        entry: "forward",
        binds: binds.clone(),
        work: Work::Rows {
            rows_per_wg: WG * ROWS_PER_INVOCATION,
        },
        reads: kernel.inputs.names.clone(),
        params: Params::none(),
    };
    // Backward: one invocation per row.
    let backward = (!fused).then(|| PassSpec {
        label: format!("{label} backward"),
        shader: Shader::File("rows.wgsl", spec),
        entry: "backward",
        binds,
        work: Work::Rows { rows_per_wg: WG },
        reads: kernel.inputs.names.clone(),
        params: Params::none(),
    });
    let (pre, stat_slots) = statistics::passes(&kernel, rows, buffers, &label);
    RowPasses {
        pre,
        forward,
        backward,
        grads: kernel.grads.names,
        partial_slots: terms.len() + stat_slots,
    }
}
