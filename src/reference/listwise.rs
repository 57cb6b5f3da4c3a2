//! The listwise terms in f64 (docs/LOSSES.md §6a; EasyRec `easy_rec/python/loss/listwise_loss.py`,
//! `listwise_rank_loss` with `_list_wise_loss` and `listwise_distill_loss` with
//! `_list_prob_loss`).
//!
//! Notation: x the logits, y the labels, S a session (the rows with one session id), N the number
//! of sessions in the batch. With `scale_logits` the logits first become x·|w| + b (learned w, b);
//! then z = x/T. Per session, with a_i the row's target weight:
//! - raw targets (`listwise_rank_loss`, label_is_logits = false): a_i = y_i, and
//!   l_S = −Σ_{i∈S} a_i·log softmax_S(z)_i = A·lse_S(z) − Σ a_i z_i with A = Σ_S a_i (not
//!   normalised: a session whose labels are all 0 gives 0 and still counts in N);
//! - label logits: t = softmax_S(y/T); distill: y' = log1p(c) − log(clip(y, 1, c)), t = y'/Σ_S y';
//!   then l_S = lse_S(z) − Σ t_i z_i.
//!
//! L = Σ_S l_S / N (EasyRec's `tf.reduce_mean` over `tf.unique` sessions); `sum` gives Σ_S l_S.
//! dl_S/dz_i = A·softmax_S(z)_i − a_i (raw) or softmax_S(z)_i − t_i; dz/dx = |w|/T,
//! dz/dw = sign(w)·x/T, dz/db = 1/T (so dL/db = 0 up to rounding: a shift per session does not
//! change a softmax).

use super::inputs::{bound, finite, id_column, real_column};
use super::pairwise::session_groups;
use super::terms::TermValue;
use crate::config::{LossTerm, Reduction};
use crate::error::{Error, Result};
use crate::losses::listwise::params::{ListSpec, ListTargets};
use crate::tensor::HostBatch;

/// The value and gradients of one listwise term.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Listwise {
    /// L (mean or sum of l_S).
    pub value: f64,
    /// dL/dx per row.
    pub grad: Vec<f64>,
    /// dL/d(w, b) (meaningful with `scale_logits`).
    pub scale_grad: [f64; 2],
}

/// lse of a non-empty set.
fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// The per-row target weights a_i of one session (they sum to 1 unless the targets are raw).
fn targets(targets: ListTargets, y: &[f64], temperature: f64) -> Vec<f64> {
    match targets {
        ListTargets::Raw => y.to_vec(),
        ListTargets::LabelLogits => {
            let u: Vec<f64> = y.iter().map(|v| v / temperature).collect();
            let lse = log_sum_exp(&u);
            u.iter().map(|v| (v - lse).exp()).collect()
        }
        ListTargets::Distill { clip_max } => {
            // EasyRec: clip_by_value(labels, 1, c), then log1p(c) − log(labels), then / Σ_S.
            let t: Vec<f64> = y
                .iter()
                .map(|v| clip_max.ln_1p() - v.clamp(1.0, clip_max).ln())
                .collect();
            let sum: f64 = t.iter().sum();
            t.iter().map(|v| v / sum).collect()
        }
    }
}

/// One session's l_S and dl_S/dz_i for its logits `z` and labels `y`.
pub(crate) fn session_loss(spec: &ListSpec, z: &[f64], y: &[f64]) -> (f64, Vec<f64>) {
    let a = targets(spec.targets, y, spec.temperature);
    let lse = log_sum_exp(z);
    let total: f64 = a.iter().sum();
    let loss = -a.iter().zip(z).map(|(ai, zi)| ai * (zi - lse)).sum::<f64>();
    let grad = z
        .iter()
        .zip(&a)
        .map(|(zi, ai)| total * (zi - lse).exp() - ai)
        .collect();
    (loss, grad)
}

/// The listwise term for logits `x`, labels `y`, session ids and the learned (w, b) (used only
/// with `spec.scale`), reduced with `reduction` (`mean` over sessions or `sum`).
pub(crate) fn listwise(
    spec: &ListSpec,
    x: &[f64],
    y: &[f64],
    session: &[i64],
    scale: [f64; 2],
    reduction: Reduction,
) -> Listwise {
    let rows = x.len();
    let (w, b) = match spec.scale {
        Some(_) => (scale[0], scale[1]),
        None => (1.0, 0.0),
    };
    let t = spec.temperature;
    let z: Vec<f64> = x.iter().map(|xi| (xi * w.abs() + b) / t).collect();
    let groups = session_groups(rows, Some(session));
    let denom = match reduction {
        Reduction::Sum => 1.0,
        _ => groups.len() as f64,
    };
    let mut value = 0.0;
    let mut dz = vec![0.0; rows];
    for group in &groups {
        let zs: Vec<f64> = group.iter().map(|&i| z[i]).collect();
        let ys: Vec<f64> = group.iter().map(|&i| y[i]).collect();
        let (l, g) = session_loss(spec, &zs, &ys);
        value += l;
        for (&i, gi) in group.iter().zip(g) {
            dz[i] = gi / denom;
        }
    }
    let sign = if w > 0.0 {
        1.0
    } else if w < 0.0 {
        -1.0
    } else {
        0.0
    };
    let dw = dz.iter().zip(x).map(|(g, xi)| g * xi).sum::<f64>() * sign / t;
    let db = dz.iter().sum::<f64>() / t;
    Listwise {
        value: value / denom,
        grad: dz.iter().map(|g| g * w.abs() / t).collect(),
        scale_grad: [dw, db],
    }
}

/// A listwise term (docs/LOSSES.md §6a): finite logits and labels `[B]` (or `[B, 1]`), integer
/// session ids with B rows; `scale` is the learned (w, b) before the step. dL/d(w, b) goes to
/// `jrc_du` (the term's learned pair, as JRC's u).
pub(crate) fn evaluate(
    term: &LossTerm,
    batch: &HostBatch,
    spec: &ListSpec,
    scale: [f64; 2],
) -> Result<TermValue> {
    let (name, t) = bound(batch, term, "logits")?;
    let x = real_column(name, &term.name, t, None)?;
    finite(name, &term.name, x, "logits")?;
    if x.is_empty() {
        return Err(Error::tensor(
            name,
            Some(&term.name),
            "a listwise term needs at least one row",
        ));
    }
    let rows = (x.len(), name);
    let (label_name, labels) = bound(batch, term, "labels")?;
    let y = real_column(label_name, &term.name, labels, Some(rows))?;
    finite(label_name, &term.name, y, "labels")?;
    let (session_name, session) = bound(batch, term, "session")?;
    let session = id_column(session_name, &term.name, session, rows, "session ids")?;
    let out = listwise(spec, x, y, session, scale, term.effective_reduction());
    let mut value = TermValue::plain(out.value, vec![(name.to_string(), out.grad)]);
    if spec.scale.is_some() {
        value.jrc_du = out.scale_grad;
    }
    Ok(value)
}
