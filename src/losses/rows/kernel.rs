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

/// The tensors the group reads (all of each term's, or with `statistics` those its statistics
/// pass needs) and those whose gradient it writes, each once, in binding order.
fn bound_tensors(terms: &[Resolved], statistics: bool) -> (Inputs, Inputs) {
    let mut inputs = Inputs::default();
    let mut grads = Inputs::default();
    for t in terms {
        let row = row_term(t);
        let read = if statistics {
            row.statistics_tensors()
        } else {
            row.tensors()
        };
        for n in read {
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
    let (inputs, grads) = bound_tensors(terms, false);
    let keys = terms.iter().filter(|t| is_ohem(t)).count() as u32;
    let predictions = terms
        .iter()
        .filter(|t| row_term(t).prediction().is_some())
        .count() as u32;
    // chunk, partials, scalars and aux (all in a fused forward pass), inputs, OHEM keys,
    // gradients, predictions
    4 + inputs.names.len() as u32 + keys + grads.names.len() as u32 + predictions
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
    /// (term index in the group, its prediction buffer) for the terms with a per-row
    /// prediction, in binding order.
    pub predictions: Vec<(usize, usize)>,
    pub aux: Vec<TermAux>,
}

impl<'a> RowKernel<'a> {
    /// The loss kernel of `terms`, with `aux[k]` the data of term k on the GPU.
    pub(crate) fn new(terms: &'a [Resolved], aux: Vec<TermAux>) -> Self {
        Self::with(terms, aux, false)
    }

    /// The statistics kernel of `terms`: it binds only what their batch-wide quantities read.
    pub(crate) fn statistics(terms: &'a [Resolved], aux: Vec<TermAux>) -> Self {
        Self::with(terms, aux, true)
    }

    fn with(terms: &'a [Resolved], aux: Vec<TermAux>, statistics: bool) -> Self {
        let (inputs, grads) = bound_tensors(terms, statistics);
        let keys = terms
            .iter()
            .enumerate()
            .filter(|(_, t)| is_ohem(t))
            .map(|(k, _)| (k, aux[k].keys.expect("OHEM terms have a keys buffer")))
            .collect();
        let predictions = terms
            .iter()
            .enumerate()
            .filter(|(_, t)| row_term(t).prediction().is_some())
            .map(|(k, _)| (k, aux[k].prediction.expect("a prediction buffer")))
            .collect();
        RowKernel {
            terms,
            inputs,
            grads,
            keys,
            predictions,
            aux,
        }
    }

    pub(crate) fn value(&self, name: &str) -> String {
        format!("v{}", self.inputs.position(name))
    }

    /// Values per row of `tensor`, as the terms that read it say (1 unless a term reads whole
    /// rows of a [B, N] tensor).
    pub(crate) fn columns(&self, tensor: &str) -> u32 {
        self.terms
            .iter()
            .map(|t| row_term(t).columns(tensor))
            .max()
            .unwrap_or(1)
    }

    /// The generated bindings from binding `first`: the inputs, then (with `keys`, and that
    /// access) the OHEM keys, then (with `with_grads`) the gradients. Each binding's WGSL
    /// declaration and the buffer bound to it come from one value, so they cannot disagree.
    pub(crate) fn bindings(&self, first: usize, keys: Option<&str>, with_grads: bool) -> Generated {
        let mut generated = Generated::from(first);
        let rows = |source: Source, columns: u32| Bind::Rows {
            source,
            row_bytes: 4 * columns as u64,
        };
        for (i, n) in self.inputs.names.iter().enumerate() {
            let decl = format!("var<storage, read> in{i}: array<f32>; // {n}");
            let b = rows(Source::Input(n.clone()), self.columns(n));
            generated.push(decl, bind(format!("in{i}"), b));
        }
        if let Some(access) = keys {
            for (j, (k, buffer)) in self.keys.iter().enumerate() {
                let name = &self.terms[*k].term.name;
                let decl = format!("var<storage, {access}> keys{j}: array<u32>; // {name}");
                let b = bind(format!("keys{j}"), rows(Source::Internal(*buffer), 1));
                generated.push(decl, b);
            }
        }
        if with_grads {
            for (i, n) in self.grads.names.iter().enumerate() {
                let decl = format!("var<storage, read_write> grad{i}: array<f32>; // {n}");
                let b = rows(Source::Grad(n.clone()), self.columns(n));
                generated.push(decl, bind(format!("grad{i}"), b));
            }
            // A term's per-row prediction, written by the forward pass.
            for (j, (k, buffer)) in self.predictions.iter().enumerate() {
                let name = &self.terms[*k].term.name;
                let decl = format!("var<storage, read_write> pred{j}: array<f32>; // {name}");
                let b = bind(format!("pred{j}"), rows(Source::Internal(*buffer), 1));
                generated.push(decl, b);
            }
        }
        generated
    }

    /// `let v{i} = in{i}[r];` for every input: an `f32`, or the row's `vecN<f32>` for a tensor
    /// read by rows of N values.
    pub(crate) fn load(&self, src: &mut String, indent: &str) {
        for (i, n) in self.inputs.names.iter().enumerate() {
            match self.columns(n) {
                1 => {
                    let _ = writeln!(src, "{indent}let v{i} = in{i}[r];");
                }
                c => {
                    let parts: Vec<String> =
                        (0..c).map(|j| format!("in{i}[{c}u * r + {j}u]")).collect();
                    let _ = writeln!(src, "{indent}let v{i} = vec{c}<f32>({});", parts.join(", "));
                }
            }
        }
    }

    /// `pred{j}[r] = lg{k}.<component>;` for every term with a per-row prediction.
    pub(crate) fn write_predictions(&self, src: &mut String, indent: &str) {
        for (j, (k, _)) in self.predictions.iter().enumerate() {
            let comp = row_term(&self.terms[*k])
                .prediction()
                .expect("a term with a prediction");
            let _ = writeln!(src, "{indent}pred{j}[r] = lg{k}.{comp};");
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
