//! The fused row kernel: every per-row term over the same B rows (classification with one logit,
//! l2_loss, sigmoid_l2_loss, cross_entropy_loss, binary_focal_loss, ESMM) in one forward and one
//! backward pass. Each tensor is read once per pass whatever the number of terms; adding a term
//! adds arithmetic, not passes. Loss functions: `shaders/binary.wgsl`; reference:
//! `reference/binary.rs`.

use super::{coef_index, weight_expr, Inputs};
use crate::kernel::{lit, Bind, PassSpec, Source, Work, BINARY, COMMON, WG};
use crate::schedule::{Form, Resolved};
use std::fmt::Write;

/// Rows each invocation of the forward pass sums before the workgroup reduction.
const ROWS_PER_INVOCATION: u32 = 8;

/// The forward and backward passes of a row group.
pub(crate) struct RowPasses {
    pub forward: PassSpec,
    /// None when the forward pass writes the gradients itself (fused).
    pub backward: Option<PassSpec>,
    /// Tensors whose gradient the backward pass writes, in binding order.
    pub grads: Vec<String>,
}

/// The WGSL call for one term: `vec2(loss, dloss/dx)` (`vec3` with two inputs for ESMM), with
/// the row's values given by `v`.
fn call(term: &Resolved, v: &dyn Fn(&str) -> String) -> String {
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
        Form::Softmax { .. } => unreachable!("softmax terms have their own kernel"),
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

/// Storage buffers the passes of a row group bind (the larger of forward and backward).
pub(crate) fn storage_bindings(terms: &[Resolved]) -> u32 {
    let (inputs, grads) = bound_tensors(terms);
    // partials and scalars (both in a fused forward pass), inputs, gradients
    2 + inputs.names.len() as u32 + grads.names.len() as u32
}

const HEADER_ARGS: &str = "@builtin(local_invocation_index) lid: u32, \
@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>";

/// Builds the passes of a row group. `grad_accumulates(tensor)` says whether an earlier pass
/// already wrote that gradient this step (then this one adds to it). With `fused`, every term's
/// gradient coefficient is known before the step (the `coefficients` dispatch), so the forward
/// pass also writes the gradients and there is no backward pass: one read of each tensor.
pub(crate) fn passes(
    terms: &[Resolved],
    partials: usize,
    scalars: usize,
    fused: bool,
    grad_accumulates: &dyn Fn(&str) -> bool,
) -> RowPasses {
    let (inputs, grads) = bound_tensors(terms);
    let value = |name: &str| format!("v{}", inputs.position(name));
    // Bindings: 0 chunk, then partials and/or scalars, then the inputs, then the gradients.
    let declare = |src: &mut String, first: usize, with_grads: bool| {
        for (i, n) in inputs.names.iter().enumerate() {
            let _ = writeln!(
                src,
                "@group(0) @binding({}) var<storage, read> in{i}: array<f32>; // {n}",
                first + i
            );
        }
        if with_grads {
            for (i, n) in grads.names.iter().enumerate() {
                let _ = writeln!(
                    src,
                    "@group(0) @binding({}) var<storage, read_write> grad{i}: array<f32>; // {n}",
                    first + inputs.names.len() + i
                );
            }
        }
    };
    // The row's values, then Σ_k coef_k · w · dl_k/dx into each gradient (`indent` spaces deep).
    let load = |src: &mut String, indent: &str| {
        for i in 0..inputs.names.len() {
            let _ = writeln!(src, "{indent}let v{i} = in{i}[r];");
        }
    };
    // `w{k}` and `lg{k}` are the row's weight and (loss, gradient) of term k, computed once.
    let term_values = |src: &mut String, indent: &str| {
        for (k, t) in terms.iter().enumerate() {
            let _ = writeln!(
                src,
                "{indent}let w{k} = {}; // {}\n{indent}let lg{k} = {};",
                weight_expr(&t.weights, value),
                t.term.name,
                call(t, &value)
            );
        }
    };
    let write_grads = |src: &mut String, indent: &str| {
        for i in 0..grads.names.len() {
            let _ = writeln!(src, "{indent}var g{i} = 0.0;");
        }
        for (k, t) in terms.iter().enumerate() {
            let _ = writeln!(
                src,
                "{indent}{{\n{indent}    let c = scalars[{}] * w{k};\n{indent}    let lg = lg{k};",
                coef_index(t.slot),
            );
            for (g, comp) in grad_components(t) {
                let i = grads.position(g);
                let _ = writeln!(src, "{indent}    g{i} = g{i} + c * lg.{comp};");
            }
            let _ = writeln!(src, "{indent}}}");
        }
        for (i, n) in grads.names.iter().enumerate() {
            if grad_accumulates(n) {
                let _ = writeln!(src, "{indent}grad{i}[r] = grad{i}[r] + g{i};");
            } else {
                let _ = writeln!(src, "{indent}grad{i}[r] = g{i};");
            }
        }
    };

    // Forward: per-term vec4(Σ w·l, Σ w, #{w ≠ 0}, 0) per workgroup (and, fused, the gradients).
    let mut f = format!("{COMMON}\n{BINARY}\n");
    f.push_str("@group(0) @binding(0) var<uniform> chunk: Chunk;\n");
    f.push_str("@group(0) @binding(1) var<storage, read_write> partials: array<vec4<f32>>;\n");
    if fused {
        f.push_str("@group(0) @binding(2) var<storage, read> scalars: array<f32>;\n");
    }
    let first_forward = if fused { 3 } else { 2 };
    declare(&mut f, first_forward, fused);
    let _ = writeln!(
        f,
        "const ROWS_PER_INVOCATION: u32 = {ROWS_PER_INVOCATION}u;"
    );
    let _ = writeln!(
        f,
        "\n@compute @workgroup_size({WG})\nfn forward({HEADER_ARGS}) {{"
    );
    f.push_str("    let wg = linear_workgroup(wid, nwg);\n");
    for k in 0..terms.len() {
        let _ = writeln!(f, "    var acc{k} = vec4<f32>(0.0);");
    }
    // Each invocation sums several rows before the barrier-bound workgroup reduction; the rows of
    // one step of the loop stay contiguous across the workgroup, for coalesced loads.
    f.push_str("    for (var j = 0u; j < ROWS_PER_INVOCATION; j = j + 1u) {\n");
    f.push_str("        let r = (wg * ROWS_PER_INVOCATION + j) * WG + lid;\n");
    f.push_str("        if (wg < chunk.wgs && r < chunk.rows) {\n");
    load(&mut f, "            ");
    term_values(&mut f, "            ");
    for k in 0..terms.len() {
        let _ = writeln!(
            f,
            "            acc{k} = acc{k} + vec4<f32>(w{k} * lg{k}.x, w{k}, select(0.0, 1.0, w{k} != 0.0), 0.0);"
        );
    }
    if fused {
        write_grads(&mut f, "            ");
    }
    f.push_str("        }\n    }\n");
    for k in 0..terms.len() {
        let _ = writeln!(
            f,
            "    let sum{k} = workgroup_sum(lid, acc{k});\n    if (lid == 0u && wg < chunk.wgs) {{ partials[partial_index(chunk, {k}u, wg)] = sum{k}; }}"
        );
    }
    f.push_str("}\n");

    let row_binds = |names: &[String], grad: bool| -> Vec<Bind> {
        names
            .iter()
            .map(|n| Bind::Rows {
                source: if grad {
                    Source::Grad(n.clone())
                } else {
                    Source::Input(n.clone())
                },
                row_bytes: 4,
            })
            .collect()
    };
    let label = format!(
        "rows[{}]",
        terms
            .iter()
            .map(|t| t.term.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut fwd_binds = vec![Bind::Chunk, Bind::Whole(Source::Internal(partials))];
    if fused {
        fwd_binds.push(Bind::Whole(Source::Internal(scalars)));
    }
    fwd_binds.extend(row_binds(&inputs.names, false));
    if fused {
        fwd_binds.extend(row_binds(&grads.names, true));
    }
    let forward = PassSpec {
        label: format!(
            "{label} {}",
            if fused { "forward+gradient" } else { "forward" }
        ),
        source: f,
        entry: "forward",
        binds: fwd_binds,
        work: Work::Rows {
            rows_per_wg: WG * ROWS_PER_INVOCATION,
        },
        reads: inputs.names.clone(),
    };

    // Backward: one invocation per row.
    let backward = (!fused).then(|| {
        let mut b = format!("{COMMON}\n{BINARY}\n");
        b.push_str("@group(0) @binding(0) var<uniform> chunk: Chunk;\n");
        b.push_str("@group(0) @binding(1) var<storage, read> scalars: array<f32>;\n");
        declare(&mut b, 2, true);
        let _ = writeln!(
            b,
            "\n@compute @workgroup_size({WG})\nfn backward({HEADER_ARGS}) {{"
        );
        b.push_str("    let wg = linear_workgroup(wid, nwg);\n    let r = wg * WG + lid;\n");
        b.push_str("    if (wg >= chunk.wgs || r >= chunk.rows) {\n        return;\n    }\n");
        load(&mut b, "    ");
        term_values(&mut b, "    ");
        write_grads(&mut b, "    ");
        b.push_str("}\n");
        let mut binds = vec![Bind::Chunk, Bind::Whole(Source::Internal(scalars))];
        binds.extend(row_binds(&inputs.names, false));
        binds.extend(row_binds(&grads.names, true));
        PassSpec {
            label: format!("{label} backward"),
            source: b,
            entry: "backward",
            binds,
            work: Work::Rows { rows_per_wg: WG },
            reads: inputs.names.clone(),
        }
    });
    RowPasses {
        forward,
        backward,
        grads: grads.names,
    }
}
