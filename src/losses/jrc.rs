//! `jrc_loss` (joint ranking-calibration; EasyRec `JRC_LOSS`, LOSSES.md) on the GPU. Reference:
//! `reference/jrc.rs`; row functions: `shaders/jrc.wgsl`.
//!
//! After the session grouping, the term gathers (z0, z1, y, w) into sorted order. With
//! `same_label_loss` one sweep gives every row its session's log-sum-exp of both columns and
//! label counts, hence its listwise loss and d ge/dz. Without it, a first sweep gives each row the
//! log-sum-exp over itself and the opposite-label rows of its session (E_i), and a second sweep
//! sums, for each row, what it receives through the other rows' E. The calibration CE is per row.
//! Partials: ce in the term's slot ((Σ w·ce, Σ w, #{w ≠ 0}, 0), reduced as configured), ge in a
//! second slot (Σ L_i, divided by B). The combine pass forms α·ce + (1 − α)·ge, or the learned
//! uncertainty form, and writes a coefficient for each part; `apply` scatters both into the
//! logits gradient.

use super::coef_index;
use super::session::{self, apply_pass, Apply, Shared, Sweep, TermPasses};
use crate::combine::T_COEF2;
use crate::kernel::{Bind, PassSpec, Source, Work, COMMON, JRC, WG};
use crate::schedule::{Form, Resolved};

/// Internal buffers of one JRC term.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JrcBuffers {
    /// The sorted rows: (z0, z1, y, w).
    pub rows: usize,
    /// Without same_label_loss: (z0, z1, y, E_i) per sorted row.
    pub rows_lse: usize,
    /// d ge/dz per sorted row (vec2), before the coefficient.
    pub grad: usize,
}

/// The passes of JRC term `term`: ce partials in slot `slot`, ge partials in `ge_slot`.
pub(crate) fn passes(
    term: &Resolved,
    slot: u32,
    ge_slot: u32,
    shared: Shared,
    buffers: JrcBuffers,
    grad_accumulates: bool,
) -> TermPasses {
    let same_label = match &term.form {
        Form::Jrc {
            same_label_loss, ..
        } => *same_label_loss,
        _ => unreachable!("jrc terms only"),
    };
    let label = format!("jrc[{}]", term.term.name);

    let gather = session::gather(&label, term, shared.grouping, buffers.rows, 2, |z, y, w| {
        [
            format!("{z}[2u * r]"),
            format!("{z}[2u * r + 1u]"),
            format!("{y}[r]"),
            w,
        ]
    });
    let mut forward = vec![gather];

    // A sweep over `rows` writing `out` (vec4, when some) and `jrc_grad`, with partials.
    let sweep =
        |name: &str, rows: usize, out: Option<usize>, before: &str, visit: &str, after: &str| {
            let mut src = format!("{COMMON}\n{JRC}\n");
            src.push_str("@group(0) @binding(0) var<storage, read> chunk: Chunk;\n");
            src.push_str(
                "@group(0) @binding(1) var<storage, read_write> partials: array<vec4<f32>>;\n",
            );
            src.push_str("@group(0) @binding(2) var<storage, read> rows: array<vec4<f32>>;\n");
            src.push_str(
                "@group(0) @binding(3) var<storage, read_write> jrc_grad: array<vec2<f32>>;\n",
            );
            let mut next = 4;
            let mut binds = vec![
                Bind::Chunk,
                Bind::Whole(Source::Internal(shared.partials)),
                Bind::Whole(Source::Internal(rows)),
                Bind::Whole(Source::Internal(buffers.grad)),
            ];
            if let Some(out) = out {
                src.push_str(
                    "@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;\n",
                );
                binds.push(Bind::Whole(Source::Internal(out)));
                next = 5;
            }
            shared.grouping.declare(&mut src, next);
            binds.extend(shared.grouping.binds());
            let before = format!(
                "    _ = partials[0];\n    _ = jrc_grad[0];\n    _ = batch_row(0u);\n{before}"
            );
            session::sweep(
                &mut src,
                &Sweep {
                    entry: "jrc_sweep",
                    before: &before,
                    visit,
                    after,
                },
                "false",
            );
            PassSpec {
                label: format!("{label} {name}"),
                source: src,
                entry: "jrc_sweep",
                binds,
                work: Work::Rows { rows_per_wg: WG },
                reads: Vec::new(),
                params: [0; 3],
            }
        };
    let partials = format!(
        "    let ce_sum = workgroup_sum(lid, ce_acc);
    let ge_sum = workgroup_sum(lid, ge_acc);
    if (lid == 0u && wg < chunk.wgs) {{
        partials[partial_index(chunk, {slot}u, wg)] = ce_sum;
        partials[partial_index(chunk, {ge_slot}u, wg)] = ge_sum;
    }}"
    );
    if same_label {
        forward.push(sweep(
            "session softmax",
            buffers.rows,
            None,
            "    var lse1 = vec2<f32>(NEG_BIG, 0.0);\n    var lse0 = vec2<f32>(NEG_BIG, 0.0);\n    \
             var positives = 0.0;\n    var negatives = 0.0;",
            "            lse1 = lse_push(lse1, o.y);
            lse0 = lse_push(lse0, o.x);
            if (o.z == 1.0) {
                positives = positives + 1.0;
            } else {
                negatives = negatives + 1.0;
            }",
            &format!(
                "    var ce_acc = vec4<f32>(0.0);
    var ge_acc = vec4<f32>(0.0);
    if (valid) {{
        let l1 = lse1.x + log(lse1.y);
        let l0 = lse0.x + log(lse0.y);
        let positive = me.z == 1.0;
        ce_acc = jrc_ce_partial(me);
        ge_acc = vec4<f32>(select(l0 - me.x, l1 - me.y, positive), 0.0, 0.0, 0.0);
        jrc_grad[p] = vec2<f32>(
            select(-1.0, 0.0, positive) + negatives * exp(me.x - l0),
            select(0.0, -1.0, positive) + positives * exp(me.y - l1),
        );
    }}
{partials}"
            ),
        ));
    } else {
        forward.push(sweep(
            "opposite-label softmax",
            buffers.rows,
            Some(buffers.rows_lse),
            "    let column1 = me.z == 1.0;\n    var lse = vec2<f32>(select(me.x, me.y, column1), 1.0);",
            "            if (o.z != me.z) {
                lse = lse_push(lse, select(o.x, o.y, column1));
            }",
            &format!(
                "    var ce_acc = vec4<f32>(0.0);
    var ge_acc = vec4<f32>(0.0);
    if (valid) {{
        let e = lse.x + log(lse.y);
        out[p] = vec4<f32>(me.x, me.y, me.z, e);
        ce_acc = jrc_ce_partial(me);
        ge_acc = vec4<f32>(e - select(me.x, me.y, column1), 0.0, 0.0, 0.0);
    }}
{partials}"
            ),
        ));
        // Rows now hold E_i in .w: each row's own term, plus its logit in the column of every
        // opposite-label row i of its session through E_i.
        forward.push(sweep(
            "opposite-label gradient",
            buffers.rows_lse,
            None,
            "    var g = vec2<f32>(0.0);",
            "            if (o.z != me.z) {
                if (o.z == 1.0) {
                    g.y = g.y + exp(me.y - o.w);
                } else {
                    g.x = g.x + exp(me.x - o.w);
                }
            }",
            "    if (valid) {
        if (me.z == 1.0) {
            g.y = g.y + exp(me.y - me.w) - 1.0;
        } else {
            g.x = g.x + exp(me.x - me.w) - 1.0;
        }
        jrc_grad[p] = g;
    }",
        ));
    }
    let expr = format!(
        "scalars[{}] * jrc_ce_grad(values0[p]) + scalars[{}] * values1[p]",
        coef_index(term.slot),
        coef_index(term.slot) - crate::combine::T_COEF + T_COEF2
    );
    let apply = apply_pass(
        &label,
        term,
        shared,
        Apply {
            values: &[(buffers.rows, "vec4<f32>"), (buffers.grad, "vec2<f32>")],
            functions: JRC,
            expr: &expr,
            width: 2,
        },
        grad_accumulates,
    );
    TermPasses { forward, apply }
}
