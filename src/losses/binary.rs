//! The fused row kernel: every per-row term over the same B rows (classification with one logit,
//! l2_loss, sigmoid_l2_loss, cross_entropy_loss, binary_focal_loss, ESMM, and the batch-wide
//! ghm_c, OHEM focal and f1_reweighted_loss) in one forward and one backward pass. Each tensor is
//! read once per pass whatever the number of terms; adding a term adds arithmetic, not passes.
//!
//! Batch-wide terms first need a quantity of the whole batch; their group then starts with the
//! passes of [`super::statistics`] (one more read of the tensors those terms use), and their
//! per-row factor (GHM-C's β/tot, OHEM's kept·1/count, F1's row weight/D) comes from `aux`.
//! Loss functions: `shaders/binary.wgsl`, `shaders/ghm.wgsl`; reference: `reference/binary.rs`,
//! `reference/ghm.rs`, `reference/f1.rs`.

use super::{coef_index, statistics, weight_expr, Inputs, TermAux};
use crate::kernel::{bind, internal, Bind, Binding, Params, PassSpec, Shader, Source, Work, WG};
use crate::wgsl::{f32_literal, Specialization};

fn lit(x: f64) -> String {
    f32_literal(x as f32)
}
use crate::schedule::{Form, Resolved};
use std::fmt::Write;

/// Rows each invocation of the forward and statistics passes sums before the workgroup reduction.
pub(crate) const ROWS_PER_INVOCATION: u32 = 8;

/// The internal buffers a row group binds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buffers {
    pub partials: usize,
    pub scalars: usize,
    pub aux: usize,
    pub state: usize,
}

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

/// The WGSL call for one term: `vec2(loss, dloss/dx)` (`vec3` with two inputs for ESMM), with
/// the row's values given by `v`.
pub(crate) fn call(term: &Resolved, v: &dyn Fn(&str) -> String) -> String {
    let input = |role: &str| v(term.input(role));
    let smoothed = |ls: f64, y: String| {
        if ls == 0.0 {
            y
        } else {
            format!("({y} * {} + {})", lit(1.0 - ls), lit(0.5 * ls))
        }
    };
    match &term.form {
        Form::Sigmoid {
            label_smoothing,
            pos_weight,
        } => {
            let y = smoothed(*label_smoothing, input("labels"));
            match pos_weight {
                None => format!("sigmoid_ce({}, {y})", input("logits")),
                Some(pw) => format!(
                    "sigmoid_ce_pos_weight({}, {y}, {})",
                    input("logits"),
                    lit(*pw)
                ),
            }
        }
        Form::L2 => format!("l2({}, {})", input("predictions"), input("labels")),
        Form::SigmoidL2 => format!("sigmoid_l2({}, {})", input("logits"), input("labels")),
        Form::ProbCe => format!("prob_ce({}, {})", input("probabilities"), input("labels")),
        Form::Focal {
            gamma,
            alpha,
            label_smoothing,
            ..
        } => format!(
            "focal({}, {}, {}, {}, {})",
            input("logits"),
            input("labels"),
            smoothed(*label_smoothing, input("labels")),
            lit(*gamma),
            lit(alpha.unwrap_or(-1.0)),
        ),
        Form::Esmm => format!(
            "esmm({}, {}, {}, {})",
            input("ctr_logits"),
            input("cvr_logits"),
            input("ctr_labels"),
            input("ctcvr_labels")
        ),
        Form::Ghm { .. } => format!("sigmoid_ce({}, {})", input("logits"), input("labels")),
        Form::F1 {
            label_smoothing, ..
        } => format!(
            "sigmoid_ce({}, {})",
            input("logits"),
            smoothed(*label_smoothing, input("labels"))
        ),
        Form::Softmax { .. } | Form::Pair { .. } | Form::Jrc { .. } | Form::Embedding { .. } => {
            unreachable!("softmax, pairwise and JRC terms have their own kernels")
        }
    }
}

/// The first binding index of a row kernel's generated tensor bindings (rows.wgsl,
/// statistics.wgsl).
pub(crate) const FIRST_BINDING: usize = 10;

/// The row's factor dL/dl_i·(1/coefficient) of term `k` (`f{k}`) and, for F1, the gradient every
/// row gets through tp (`e{k}`); `w{k}` and `lg{k}` are in scope, and `key{k}` for OHEM.
fn factor(k: usize, term: &Resolved, aux: &TermAux, v: &dyn Fn(&str) -> String) -> String {
    let input = |role: &str| v(term.input(role));
    match &term.form {
        Form::Focal { ohem: Some(_), .. } => {
            let (state, _, scale) = statistics::ohem_words(aux.base);
            format!(
                "let kept{k} = select_kept(key{k}, chunk.row_base + r, aux[{}u], aux[{}u]);\n\
                 let f{k} = select(0.0, w{k} * aux_f32({scale}u), kept{k} && key{k} > 0x80000000u);",
                state + super::select::PREFIX,
                state + super::select::INDEX,
            )
        }
        Form::Ghm { bins, .. } => format!(
            "let f{k} = select(0.0, aux_f32({}u + ghm_bin(ghm_g({}, {}), {bins}u)) * w{k}, w{k} > 0.0);",
            statistics::ghm_words(aux.base, *bins).1,
            input("logits"),
            input("labels"),
        ),
        Form::F1 { .. } => format!(
            "let f{k} = select(aux_f32({}u), 1.0, {} == 1.0) * w{k} * aux_f32({}u);\n\
             let e{k} = aux_f32({}u) * sigmoid({x}) * sigmoid(-{x});",
            aux.base,
            input("labels"),
            aux.base + 1,
            aux.base + 2,
            x = input("logits"),
        ),
        _ => format!("let f{k} = w{k};"),
    }
}

/// Roles whose gradient the term produces, with the component of `call`'s result that holds it.
fn grad_components(term: &Resolved) -> Vec<(&str, &'static str)> {
    match term.form {
        Form::Esmm => vec![
            (term.input("ctr_logits"), "y"),
            (term.input("cvr_logits"), "z"),
        ],
        _ => vec![(term.input(term.term.kind.differentiable_roles()[0]), "y")],
    }
}

fn tensors_of(term: &Resolved) -> Vec<String> {
    let mut v: Vec<String> = term
        .term
        .kind
        .roles()
        .iter()
        .map(|(r, _)| term.input(r).to_string())
        .collect();
    v.extend(term.weights.iter().map(|(t, _)| t.clone()));
    v
}

/// The tensors the group reads and those whose gradient it writes, each once, in binding order.
fn bound_tensors(terms: &[Resolved]) -> (Inputs, Inputs) {
    let mut inputs = Inputs::default();
    let mut grads = Inputs::default();
    for t in terms {
        for n in tensors_of(t) {
            inputs.index(&n);
        }
        for (g, _) in grad_components(t) {
            grads.index(g);
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

pub(crate) fn is_ohem(term: &Resolved) -> bool {
    matches!(term.form, Form::Focal { ohem: Some(_), .. })
}

/// Binds every name of `names` by rows (4 bytes each), as inputs (`in<i>`) or as gradients
/// (`grad<i>`).
pub(crate) fn row_binds(names: &[String], grad: bool) -> Vec<Binding> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (var, source) = if grad {
                (format!("grad{i}"), Source::Grad(n.clone()))
            } else {
                (format!("in{i}"), Source::Input(n.clone()))
            };
            bind(
                var,
                Bind::Rows {
                    source,
                    row_bytes: 4,
                },
            )
        })
        .collect()
}

/// What the generated kernels of a row group share: the tensors, their WGSL names, the terms and
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

    /// `@binding` declarations of the inputs from `first`, then (optionally) the OHEM keys and
    /// the gradients; returns the next free binding.
    pub(crate) fn declare(
        &self,
        src: &mut String,
        first: usize,
        keys: Option<&str>,
        with_grads: bool,
    ) -> usize {
        let mut b = first;
        for (i, n) in self.inputs.names.iter().enumerate() {
            let _ = writeln!(
                src,
                "@group(0) @binding({b}) var<storage, read> in{i}: array<f32>; // {n}"
            );
            b += 1;
        }
        if let Some(access) = keys {
            for (j, (k, _)) in self.keys.iter().enumerate() {
                let _ = writeln!(
                    src,
                    "@group(0) @binding({b}) var<storage, {access}> keys{j}: array<u32>; // {}",
                    self.terms[*k].term.name
                );
                b += 1;
            }
        }
        if with_grads {
            for (i, n) in self.grads.names.iter().enumerate() {
                let _ = writeln!(
                    src,
                    "@group(0) @binding({b}) var<storage, read_write> grad{i}: array<f32>; // {n}"
                );
                b += 1;
            }
        }
        b
    }

    /// The binds matching [`RowKernel::declare`].
    pub(crate) fn binds(&self, keys: bool, with_grads: bool) -> Vec<Binding> {
        let mut v = row_binds(&self.inputs.names, false);
        if keys {
            v.extend(self.keys.iter().enumerate().map(|(j, (_, buffer))| {
                let rows = Bind::Rows {
                    source: Source::Internal(*buffer),
                    row_bytes: 4,
                };
                bind(format!("keys{j}"), rows)
            }));
        }
        if with_grads {
            v.extend(row_binds(&self.grads.names, true));
        }
        v
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

    /// `w{k}`, `lg{k}` (loss, derivative), `f{k}` (row factor) and for F1 `e{k}`, of every term.
    fn term_values(&self, src: &mut String, indent: &str) {
        let value = |n: &str| self.value(n);
        self.weights(src, indent);
        for (j, (k, _)) in self.keys.iter().enumerate() {
            let _ = writeln!(src, "{indent}let key{k} = keys{j}[r];");
        }
        for (k, t) in self.terms.iter().enumerate() {
            let _ = writeln!(src, "{indent}let lg{k} = {};", call(t, &value));
            for line in factor(k, t, &self.aux[k], &value).lines() {
                let _ = writeln!(src, "{indent}{line}");
            }
        }
    }

    /// Σ_k coef_k · (f_k · dl_k/dx + e_k) into each gradient.
    fn write_grads(&self, src: &mut String, indent: &str, grad_accumulates: &dyn Fn(&str) -> bool) {
        for i in 0..self.grads.names.len() {
            let _ = writeln!(src, "{indent}var g{i} = 0.0;");
        }
        for (k, t) in self.terms.iter().enumerate() {
            let _ = writeln!(
                src,
                "{indent}{{\n{indent}    let c = scalars[{}];",
                coef_index(t.slot),
            );
            let extra = if matches!(t.form, Form::F1 { .. }) {
                format!(" + e{k}")
            } else {
                String::new()
            };
            for (g, comp) in grad_components(t) {
                let i = self.grads.position(g);
                let _ = writeln!(
                    src,
                    "{indent}    g{i} = g{i} + c * (f{k} * lg{k}.{comp}{extra});"
                );
            }
            let _ = writeln!(src, "{indent}}}");
        }
        for (i, n) in self.grads.names.iter().enumerate() {
            if grad_accumulates(n) {
                let _ = writeln!(src, "{indent}grad{i}[r] = grad{i}[r] + g{i};");
            } else {
                let _ = writeln!(src, "{indent}grad{i}[r] = g{i};");
            }
        }
    }

    /// rows.wgsl's `terms` splice: the tensors' bindings, `forward_row` (with the gradients when
    /// `fused`) and `backward_row`.
    fn splice(&self, fused: bool, grad_accumulates: &dyn Fn(&str) -> bool) -> String {
        let mut src = String::new();
        self.declare(&mut src, FIRST_BINDING, Some("read"), true);
        let indent = "    ";
        src.push_str("\nfn forward_row(r: u32) {\n");
        self.load(&mut src, indent);
        self.term_values(&mut src, indent);
        for k in 0..self.terms.len() {
            let _ = writeln!(
                src,
                "{indent}acc[{k}] = acc[{k}] + vec4<f32>(f{k} * lg{k}.x, f{k}, select(0.0, 1.0, f{k} != 0.0), 0.0);"
            );
        }
        if fused {
            self.write_grads(&mut src, indent, grad_accumulates);
        }
        src.push_str("}\n\nfn backward_row(r: u32) {\n");
        self.load(&mut src, indent);
        self.term_values(&mut src, indent);
        self.write_grads(&mut src, indent, grad_accumulates);
        src.push_str("}\n");
        src
    }

    fn label(&self) -> String {
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

/// Builds the passes of a row group of `rows` rows. `aux_of(slot)` says where a batch-wide term
/// keeps its data; `keys_of(slot)` gives an OHEM term's keys buffer. `grad_accumulates(tensor)`
/// says whether an earlier pass already wrote that gradient this step (then this one adds to it).
/// With `fused`, every term's gradient coefficient is known before the step (the `coefficients`
/// dispatch), so the forward pass also writes the gradients and there is no backward pass.
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
    let spec = Specialization::new()
        .u32("TERMS", terms.len() as u32)
        .splice("terms", kernel.splice(fused, grad_accumulates));
    let mut binds = vec![
        bind("chunk", Bind::Chunk),
        internal("partials", buffers.partials),
        internal("aux", buffers.aux),
        internal("scalars", buffers.scalars),
    ];
    binds.extend(kernel.binds(true, true));
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
