//! The passes a row group runs before its loss pass when some of its terms need a quantity of the
//! whole batch (LOSSES.md: GHM-C's bin counts, OHEM's k-th largest value, F1's Σσ(x)):
//!
//! 1. the statistics pass reads the tensors of those terms once: GHM-C counts valid rows per bin
//!    (workgroup atomics, then one global add per bin), OHEM writes each row's order key
//!    (`order_key(w·l)`) and counts the positive values, F1 sums σ(x) and the class sums into
//!    per-workgroup partials;
//! 2. OHEM terms run the selection ([`super::select`]) over their keys;
//! 3. one `prepare` workgroup turns all of it into the factors the loss pass reads (prepare.wgsl).
//!
//! Everything stays on the GPU, in the step's single submission. With these terms the group reads
//! its tensors twice (statistics, then loss and gradient), three times when the gradient scale
//! depends on this step's values (flooding, EMA reweighting).

use super::binary::{Buffers, RowKernel, FIRST_BINDING, ROWS_PER_INVOCATION};
use super::{select, TermAux};
use crate::combine::reduction_code;
use crate::kernel::{bind, internal, Bind, Params, PassSpec, Shader, Work, WG};
use crate::wgsl::{f32_literal, Specialization};

fn lit(x: f64) -> String {
    f32_literal(x as f32)
}
use crate::schedule::{Form, Resolved};
use std::fmt::Write;

/// Words of `aux` a batch-wide term needs (0 for other terms).
pub(crate) fn aux_words(form: &Form) -> u32 {
    match form {
        Form::Focal { ohem: Some(_), .. } => select::STATE_WORDS + 2,
        Form::Ghm { bins, .. } => 2 * bins,
        Form::F1 { .. } => 3,
        _ => 0,
    }
}

/// OHEM region: (selection state, count of positive values, scale 1/count).
pub(crate) fn ohem_words(base: u32) -> (u32, u32, u32) {
    let positive = base + select::STATE_WORDS;
    (base, positive, positive + 1)
}

/// GHM-C region: (bin counts, β/tot per bin).
pub(crate) fn ghm_words(base: u32, bins: u32) -> (u32, u32) {
    (base, base + bins)
}

/// The statistics pass, the selections and the prepare dispatch of a row group (empty when no
/// term needs them), and how many partial slots per workgroup the statistics use (after the
/// group's term slots).
pub(crate) fn passes(
    group: &RowKernel,
    rows: u64,
    buffers: Buffers,
    label: &str,
) -> (Vec<PassSpec>, usize) {
    let chosen: Vec<usize> = (0..group.terms.len())
        .filter(|&k| group.terms[k].form.needs_statistics())
        .collect();
    if chosen.is_empty() {
        return (Vec::new(), 0);
    }
    let terms: Vec<Resolved> = chosen.iter().map(|&k| group.terms[k].clone()).collect();
    let aux: Vec<TermAux> = chosen.iter().map(|&k| group.aux[k]).collect();
    let kernel = RowKernel::new(&terms, aux);
    let first_slot = group.terms.len();
    // F1 terms take two statistics slots each, in order.
    let mut f1_slots = Vec::new();
    for (k, t) in terms.iter().enumerate() {
        if matches!(t.form, Form::F1 { .. }) {
            f1_slots.push((k, first_slot + 2 * f1_slots.len()));
        }
    }
    let slot_of = |k: usize| f1_slots.iter().find(|(j, _)| *j == k).unwrap().1;

    let mut binds = vec![
        bind("chunk", Bind::Chunk),
        internal("partials", buffers.partials),
        internal("aux", buffers.aux),
    ];
    binds.extend(kernel.binds(true, false));
    let spec = Specialization::new().splice("terms", stats_splice(&kernel, &slot_of));
    let mut out = vec![PassSpec {
        label: format!("{label} statistics"),
        shader: Shader::File("statistics.wgsl", spec),
        entry: "statistics",
        binds,
        work: Work::Rows {
            rows_per_wg: WG * ROWS_PER_INVOCATION,
        },
        reads: kernel.inputs.names.clone(),
        params: Params::none(),
    }];

    // Selections of the OHEM terms.
    for (k, t) in terms.iter().enumerate() {
        if let Form::Focal {
            ohem: Some(ratio), ..
        } = t.form
        {
            let a = kernel.aux[k];
            out.extend(select::passes(
                &format!("ohem[{}]", t.term.name),
                buffers.aux,
                a.keys.expect("OHEM keys"),
                a.base,
                select::keep_count(rows, ratio),
                rows,
            ));
        }
    }

    // Prepare.
    let spec = Specialization::new().splice("terms", prepare_splice(&kernel, &f1_slots, rows));
    out.push(PassSpec {
        label: format!("{label} prepare"),
        shader: Shader::File("prepare.wgsl", spec),
        entry: "prepare",
        binds: vec![
            bind("chunk", Bind::Chunk),
            internal("partials", buffers.partials),
            internal("aux", buffers.aux),
            internal("state", buffers.state),
        ],
        work: Work::Single,
        reads: Vec::new(),
        params: Params::none(),
    });
    (out, 2 * f1_slots.len())
}

/// statistics.wgsl's `terms` splice: bindings, the terms' counters and sums, `stats_begin`,
/// `stats_row` and `stats_end`. `slot_of(k)` is F1 term k's first partial slot.
fn stats_splice(kernel: &RowKernel, slot_of: &dyn Fn(usize) -> usize) -> String {
    let terms = kernel.terms;
    let value = |n: &str| kernel.value(n);
    let mut s = String::new();
    kernel.declare(&mut s, FIRST_BINDING, Some("read_write"), false);
    for (k, t) in terms.iter().enumerate() {
        let _ = match &t.form {
            Form::Ghm { bins, .. } => {
                writeln!(s, "var<workgroup> ghm_hist{k}: array<atomic<u32>, {bins}>;")
            }
            Form::Focal { .. } => writeln!(
                s,
                "var<workgroup> positive{k}: atomic<u32>;\nvar<private> count{k}: u32;"
            ),
            Form::F1 { .. } => writeln!(
                s,
                "var<private> sa{k}: vec4<f32>;\nvar<private> sb{k}: vec4<f32>;"
            ),
            _ => unreachable!("only batch-wide terms have statistics"),
        };
    }
    s.push_str("\nfn stats_begin(lid: u32) {\n");
    for (k, t) in terms.iter().enumerate() {
        let _ = match &t.form {
            Form::Ghm { bins, .. } => writeln!(
                s,
                "    for (var i = lid; i < {bins}u; i = i + WG) {{ atomicStore(&ghm_hist{k}[i], 0u); }}"
            ),
            Form::Focal { .. } => {
                writeln!(s, "    if (lid == 0u) {{ atomicStore(&positive{k}, 0u); }}")
            }
            _ => Ok(()),
        };
    }
    s.push_str("}\n\nfn stats_row(r: u32) {\n");
    let indent = "    ";
    kernel.load(&mut s, indent);
    kernel.weights(&mut s, indent);
    let mut key_index = 0;
    for (k, t) in terms.iter().enumerate() {
        let x = || value(t.input("logits"));
        let y = || value(t.input("labels"));
        let _ = match &t.form {
            Form::Ghm { bins, .. } => writeln!(
                s,
                "{indent}if (w{k} > 0.0) {{ atomicAdd(&ghm_hist{k}[ghm_bin(ghm_g({}, {}), {bins}u)], 1u); }}",
                x(),
                y()
            ),
            Form::Focal { .. } => {
                key_index += 1;
                writeln!(
                    s,
                    "{indent}let v{k}_ = w{k} * {}.x;\n{indent}keys{}[r] = order_key(v{k}_);\n{indent}count{k} = count{k} + select(0u, 1u, v{k}_ > 0.0);",
                    super::binary::call(t, &value),
                    key_index - 1
                )
            }
            Form::F1 { .. } => writeln!(
                s,
                "{indent}let ce{k} = w{k} * {}.x;\n\
                 {indent}let pos{k} = {} == 1.0;\n\
                 {indent}let nz{k} = select(0.0, 1.0, w{k} != 0.0);\n\
                 {indent}sa{k} = sa{k} + vec4<f32>(sigmoid({}), select(0.0, 1.0, pos{k}), select(0.0, ce{k}, pos{k}), select(ce{k}, 0.0, pos{k}));\n\
                 {indent}sb{k} = sb{k} + vec4<f32>(select(0.0, w{k}, pos{k}), select(w{k}, 0.0, pos{k}), select(0.0, nz{k}, pos{k}), select(nz{k}, 0.0, pos{k}));",
                super::binary::call(t, &value),
                y(),
                x()
            ),
            _ => unreachable!(),
        };
    }
    s.push_str("}\n\nfn stats_end(lid: u32, wg: u32) {\n");
    for (k, t) in terms.iter().enumerate() {
        if let Form::Focal { .. } = t.form {
            let _ = writeln!(s, "    atomicAdd(&positive{k}, count{k});");
        }
    }
    s.push_str("    workgroupBarrier();\n");
    for (k, t) in terms.iter().enumerate() {
        let base = kernel.aux[k].base;
        let _ = match &t.form {
            Form::Ghm { bins, .. } => writeln!(
                s,
                "    for (var i = lid; i < {bins}u; i = i + WG) {{\n        let c = atomicLoad(&ghm_hist{k}[i]);\n        if (c != 0u && wg < chunk.wgs) {{ atomicAdd(&aux[{base}u + i], c); }}\n    }}"
            ),
            Form::Focal { .. } => writeln!(
                s,
                "    if (lid == 0u && wg < chunk.wgs) {{ atomicAdd(&aux[{}u], atomicLoad(&positive{k})); }}",
                ohem_words(base).1
            ),
            Form::F1 { .. } => {
                let slot = slot_of(k);
                writeln!(
                    s,
                    "    let ta{k} = workgroup_sum(lid, sa{k});\n    let tb{k} = workgroup_sum(lid, sb{k});\n    if (lid == 0u && wg < chunk.wgs) {{\n        partials[partial_index(chunk, {slot}u, wg)] = ta{k};\n        partials[partial_index(chunk, {}u, wg)] = tb{k};\n    }}",
                    slot + 1
                )
            }
            _ => unreachable!(),
        };
    }
    s.push_str("}\n");
    s
}

/// prepare.wgsl's `terms` splice: `prepare_sums` (the F1 terms' statistics over every
/// workgroup, at their `f1_slots`) and `prepare_terms` (each term's factors).
fn prepare_splice(kernel: &RowKernel, f1_slots: &[(usize, usize)], rows: u64) -> String {
    let mut p = String::new();
    for &(k, _) in f1_slots {
        let _ = writeln!(
            p,
            "var<private> fa{k}: vec4<f32>;\nvar<private> fb{k}: vec4<f32>;"
        );
    }
    p.push_str("\nfn prepare_sums(lid: u32) {\n");
    for &(k, slot) in f1_slots {
        let _ = writeln!(
            p,
            "    fa{k} = slot_sum(lid, {slot}u);\n    fb{k} = slot_sum(lid, {}u);",
            slot + 1
        );
    }
    p.push_str("}\n\nfn prepare_terms() {\n");
    for (k, t) in kernel.terms.iter().enumerate() {
        let a = kernel.aux[k];
        let _ = match &t.form {
            Form::Ghm { bins, momentum } => {
                let (hist, beta) = ghm_words(a.base, *bins);
                writeln!(
                    p,
                    "    ghm_prepare({hist}u, {beta}u, {}u, {}u, {bins}u, {}); // {}",
                    a.pending,
                    a.acc,
                    lit(*momentum),
                    t.term.name
                )
            }
            Form::F1 { beta_square, .. } => writeln!(
                p,
                "    f1_prepare({}u, fa{k}, fb{k}, {}, {}u, {}); // {}",
                a.base,
                lit(*beta_square),
                reduction_code(t.term.effective_reduction()),
                lit(rows as f64),
                t.term.name
            ),
            Form::Focal {
                ohem: Some(ratio), ..
            } => {
                let (_, positive, scale) = ohem_words(a.base);
                writeln!(
                    p,
                    "    ohem_prepare({positive}u, {scale}u, {}u); // {}",
                    select::keep_count(rows, *ratio),
                    t.term.name
                )
            }
            _ => unreachable!(),
        };
    }
    p.push_str("}\n");
    p
}
