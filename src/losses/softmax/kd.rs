//! The generated WGSL of a distillation term in a softmax group (docs/LOSSES.md §10.2):
//! `kl_divergence_loss` and `l2_distill_loss` over [B, C] logits, beside the cross-entropy terms
//! on the same logits (the logits are read once per sweep for all of them).
//!
//! Each term keeps the student's and the teacher's online log-sum-exp in the first sweep of the
//! forward pass. Keras' clip of both distributions (KL) and the L2 gradient need every element's
//! probability against the final lse, so a second sweep over the row (SECOND_SWEEP in
//! softmax.wgsl; compiled out when a group has no distillation term) sums the row loss and
//! the row sum its gradient needs: S = Σ_{p_c ≥ ε} q̂_c (KL) or A = Σ_c (p_c − q_c)·p_c (L2). The
//! row statistics are vec4(student lse, teacher lse, S or A, 0).
//!
//! A cross-entropy term at another temperature on the same logits keeps its own lse; what is
//! shared is the loads, not the exponentials (each term divides by its own T).

use super::{lit, Group};
use crate::losses::distill::params::{DistillKind, Teacher};
use std::fmt::Write;

/// ln 1e-7: Keras' clip of a probability at ε = 1e-7, in logs.
const LN_EPS: f64 = -16.11809565095832;

impl Group<'_> {
    /// The teacher's WGSL value at element `idx` of term k.
    fn kd_teacher(&self, k: usize, idx: &str) -> String {
        let probs = self.probs_at(k, idx);
        let t = self.views[k].distill.expect("a distillation term").teacher;
        input_logit(&probs, t.label_is_logits)
    }
}

/// The logit of a class input: itself, or log(p + 1e-7) for a probability (EasyRec; the
/// batch-wide max it subtracts is a constant that softmax ignores).
fn input_logit(value: &str, is_logit: bool) -> String {
    if is_logit {
        value.to_string()
    } else {
        format!("log({value} + 1e-7)")
    }
}

fn teacher_of(g: &Group, k: usize) -> (DistillKind, Teacher) {
    let d = g.views[k].distill.expect("a distillation term");
    (d.kind, d.teacher)
}

/// Declarations of term k's private sums.
pub(super) fn declarations(k: usize) -> String {
    format!(
        "var<private> part{k}: vec4<f32>;\nvar<private> acc_lse{k}: vec2<f32>;\n\
         var<private> acc_tse{k}: vec2<f32>;\nvar<private> acc_lin{k}: vec4<f32>;\n\
         var<private> lse_s{k}: f32;\nvar<private> lse_t{k}: f32;\n"
    )
}

/// `forward_begin` of term k.
pub(super) fn begin(k: usize) -> String {
    format!(
        "    acc_lse{k} = vec2<f32>(NEG_BIG, 0.0);\n    acc_tse{k} = vec2<f32>(NEG_BIG, 0.0);\n    \
         acc_lin{k} = vec4<f32>(0.0);\n"
    )
}

/// `forward_visit` of term k: both log-sum-exps.
pub(super) fn visit(g: &Group, k: usize) -> String {
    let (_, t) = teacher_of(g, k);
    let inv_t = lit(1.0 / t.temperature);
    format!(
        "            {{\n                let z = {} * {inv_t};\n                \
         acc_lse{k} = lse_push(acc_lse{k}, z);\n                let v = {} * {inv_t};\n                \
         acc_tse{k} = lse_push(acc_tse{k}, v);\n            }}\n",
        input_logit("xv", t.pred_is_logits),
        g.kd_teacher(k, "base + c"),
    )
}

/// `forward_reduce` of term k: merge both across the row's invocations, then the lses.
pub(super) fn reduce(k: usize) -> String {
    format!(
        "    acc_lse{k} = segment_lse(lid, R, acc_lse{k});\n    acc_tse{k} = segment_lse(lid, R, acc_tse{k});\n    \
         lse_s{k} = acc_lse{k}.x + log(acc_lse{k}.y);\n    lse_t{k} = acc_tse{k}.x + log(acc_tse{k}.y);\n"
    )
}

/// `forward_visit2` of term k: the row loss into acc_lin.x and the gradient's row sum into
/// acc_lin.y.
pub(super) fn visit2(g: &Group, k: usize) -> String {
    let (kind, t) = teacher_of(g, k);
    let inv_t = lit(1.0 / t.temperature);
    let mut f = format!(
        "    {{\n        let lp = {} * {inv_t} - lse_s{k};\n        let lq = {} * {inv_t} - lse_t{k};\n",
        input_logit("xv", t.pred_is_logits),
        g.kd_teacher(k, "base + c"),
    );
    let _ = match kind {
        DistillKind::Kl => writeln!(
            f,
            "        let lpc = max(lp, {ln});\n        let lqc = max(lq, {ln});\n        let qc = exp(lqc);\n        \
             acc_lin{k}.x = acc_lin{k}.x + qc * (lqc - lpc);\n        \
             acc_lin{k}.y = acc_lin{k}.y + select(0.0, qc, lp >= {ln});",
            ln = lit(LN_EPS)
        ),
        _ => writeln!(
            f,
            "        let p = exp(lp);\n        let d = p - exp(lq);\n        \
             acc_lin{k}.x = acc_lin{k}.x + d * d;\n        acc_lin{k}.y = acc_lin{k}.y + d * p;"
        ),
    };
    f.push_str("    }\n");
    f
}

/// `forward_reduce2` of term k.
pub(super) fn reduce2(k: usize) -> String {
    format!("    acc_lin{k} = segment_sum(lid, R, acc_lin{k});\n")
}

/// `forward_row` of term k: its partials (sample weight w{k}) and row statistics.
pub(super) fn row(k: usize, name: &str, weight: &str) -> String {
    format!(
        "        {{ // {name}\n            let w{k} = {weight};\n            let l = acc_lin{k}.x;\n            \
         part{k} = vec4<f32>(w{k} * l, w{k}, select(0.0, 1.0, w{k} != 0.0), 0.0);\n            \
         stats{k}[row] = vec4<f32>(lse_s{k}, lse_t{k}, acc_lin{k}.y, 0.0);\n        }}\n"
    )
}

/// `backward_element` of term k: coef · dl/dx_c, from the row statistics b_st{k}.
pub(super) fn element(g: &Group, k: usize) -> String {
    let (kind, t) = teacher_of(g, k);
    let inv_t = lit(1.0 / t.temperature);
    let mut b = format!(
        "    {{\n        let st{k} = b_st{k};\n        let lp = {} * {inv_t} - st{k}.x;\n        \
         let p = exp(lp);\n        let lq = {} * {inv_t} - st{k}.y;\n",
        input_logit("xv", t.pred_is_logits),
        g.kd_teacher(k, "e"),
    );
    let _ = match kind {
        DistillKind::Kl => writeln!(
            b,
            "        var gk = select(0.0, -exp(max(lq, {ln})), lp >= {ln}) + p * st{k}.z;",
            ln = lit(LN_EPS)
        ),
        _ => writeln!(b, "        var gk = 2.0 * p * ((p - exp(lq)) - st{k}.z);"),
    };
    if !t.pred_is_logits {
        // d log(x + ε)/dx
        let _ = writeln!(b, "        gk = gk / (xv + 1e-7);");
    }
    let _ = writeln!(b, "        g = g + b_coef{k} * gk;\n    }}");
    b
}
