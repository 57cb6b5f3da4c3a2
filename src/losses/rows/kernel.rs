//! What the generated code of a row group shares (the fused row kernel, `shaders/rows.wgsl`, and
//! the statistics pass, `shaders/statistics.wgsl`): the tensors it binds, each once, their WGSL
//! names and bindings, the terms' sample weights and where their batch-wide data lives.

use crate::kernel::{bind, Bind, Generated, Source};
use crate::losses::common::{weight_expr, Inputs, TermAux};
use crate::losses::family::{Form, Resolved, RowTerm};
use crate::losses::statistics::params::BatchWide;
use std::fmt::Write;

/// Rows each invocation of the forward and statistics passes sums before the workgroup reduction
/// (`ROWS_PER_INVOCATION` in binary.wgsl).
pub(crate) const ROWS_PER_INVOCATION: u32 = 8;

/// The first binding index of a row kernel's generated tensor bindings (rows.wgsl,
/// statistics.wgsl).
pub(crate) const FIRST_BINDING: usize = 10;

/// The internal buffers a row group binds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buffers {
    pub partials: usize,
    pub scalars: usize,
    pub aux: usize,
    pub state: usize,
}

/// The row term of a resolved term of a row group.
pub(crate) fn row_term(term: &Resolved) -> &dyn RowTerm {
    match &term.form {
        Form::Row(r) => &**r,
        _ => unreachable!("row groups hold row terms"),
    }
}

/// The tensors the group reads and those whose gradient it writes, each once, in binding order.
fn bound_tensors(terms: &[Resolved]) -> (Inputs, Inputs) {
    let mut inputs = Inputs::default();
    let mut grads = Inputs::default();
    for t in terms {
        for n in row_term(t).tensors() {
            inputs.index(&n);
        }
        for (w, _) in &t.weights {
            inputs.index(w);
        }
        for (g, _) in row_term(t).grads() {
            grads.index(&g);
        }
    }
    (inputs, grads)
}

/// Storage buffers the passes of a row group bind (the largest of its passes).
pub(crate) fn storage_bindings(terms: &[Resolved]) -> u32 {
    let (inputs, grads) = bound_tensors(terms);
    let keys = terms.iter().filter(|t| is_ohem(t)).count() as u32;
    // chunk, partials, scalars and aux (all in a fused forward pass), inputs, OHEM keys, gradients
    4 + inputs.names.len() as u32 + keys + grads.names.len() as u32
}

/// Whether the term selects its rows by OHEM.
pub(crate) fn is_ohem(term: &Resolved) -> bool {
    matches!(row_term(term).batch_wide(), Some(BatchWide::Ohem { .. }))
}

/// What the generated code of a row group shares: the tensors, their WGSL names, the terms and
/// where their batch-wide data lives.
pub(crate) struct RowKernel<'a> {
    pub terms: &'a [Resolved],
    pub inputs: Inputs,
    pub grads: Inputs,
    /// (term index in the group, its keys buffer) for the OHEM terms, in binding order.
    pub keys: Vec<(usize, usize)>,
    pub aux: Vec<TermAux>,
}

impl<'a> RowKernel<'a> {
    /// The kernel of `terms`, with `aux[k]` the batch-wide data of term k.
    pub(crate) fn new(terms: &'a [Resolved], aux: Vec<TermAux>) -> Self {
        let (inputs, grads) = bound_tensors(terms);
        let keys = terms
            .iter()
            .enumerate()
            .filter(|(_, t)| is_ohem(t))
            .map(|(k, _)| (k, aux[k].keys.expect("OHEM terms have a keys buffer")))
            .collect();
        RowKernel {
            terms,
            inputs,
            grads,
            keys,
            aux,
        }
    }

    pub(crate) fn value(&self, name: &str) -> String {
        format!("v{}", self.inputs.position(name))
    }

    /// The generated bindings from binding `first`: the inputs, then (with `keys`, and that
    /// access) the OHEM keys, then (with `with_grads`) the gradients. Each binding's WGSL
    /// declaration and the buffer bound to it come from one value, so they cannot disagree.
    pub(crate) fn bindings(&self, first: usize, keys: Option<&str>, with_grads: bool) -> Generated {
        let mut generated = Generated::from(first);
        let rows = |source: Source| Bind::Rows {
            source,
            row_bytes: 4,
        };
        for (i, n) in self.inputs.names.iter().enumerate() {
            let decl = format!("var<storage, read> in{i}: array<f32>; // {n}");
            generated.push(decl, bind(format!("in{i}"), rows(Source::Input(n.clone()))));
        }
        if let Some(access) = keys {
            for (j, (k, buffer)) in self.keys.iter().enumerate() {
                let name = &self.terms[*k].term.name;
                let decl = format!("var<storage, {access}> keys{j}: array<u32>; // {name}");
                let b = bind(format!("keys{j}"), rows(Source::Internal(*buffer)));
                generated.push(decl, b);
            }
        }
        if with_grads {
            for (i, n) in self.grads.names.iter().enumerate() {
                let decl = format!("var<storage, read_write> grad{i}: array<f32>; // {n}");
                generated.push(
                    decl,
                    bind(format!("grad{i}"), rows(Source::Grad(n.clone()))),
                );
            }
        }
        generated
    }

    /// `let v{i} = in{i}[r];` for every input.
    pub(crate) fn load(&self, src: &mut String, indent: &str) {
        for i in 0..self.inputs.names.len() {
            let _ = writeln!(src, "{indent}let v{i} = in{i}[r];");
        }
    }

    /// `w{k}` (sample weight) of every term.
    pub(crate) fn weights(&self, src: &mut String, indent: &str) {
        let value = |n: &str| self.value(n);
        for (k, t) in self.terms.iter().enumerate() {
            let _ = writeln!(
                src,
                "{indent}let w{k} = {}; // {}",
                weight_expr(&t.weights, value),
                t.term.name
            );
        }
    }

    pub(crate) fn label(&self) -> String {
        format!(
            "rows[{}]",
            self.terms
                .iter()
                .map(|t| t.term.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}
