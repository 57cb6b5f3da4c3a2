//! The distillation terms in f64 (docs/LOSSES.md §10): `kl_divergence_loss`,
//! `binary_cross_entropy_loss` (EasyRec `build_kd_loss` and `BINARY_CROSS_ENTROPY_LOSS`) and
//! `l2_distill_loss` (AutoFAS, Li et al. KDD 2022).
//!
//! Student x, teacher t. Each input is turned into a logit (a probability as EasyRec does: one
//! column log(c/(1 − c)) with c = clip(p, 1e-7, 1 − 1e-7), C ≥ 2 classes log(p + 1e-7)), then
//! divided by T: z = s/T, v = u/T. One column: p = σ(z), q = σ(v) on the two classes [1 − ·, ·];
//! C ≥ 2: p = softmax(z), q = softmax(v) over the row. The gradient goes to the student only.

use super::binary::{sigmoid, sigmoid_ce, softplus};
use super::combine::{self, scale_rows};
use super::inputs::{bound, is_column, sample_weights, unit_interval};
use super::terms::TermValue;
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::losses::distill::params::{check_weights, DistillKind, Teacher};
use crate::tensor::HostBatch;

/// Keras' `epsilon()`: the clip of EasyRec's probabilities and of Keras' KLD.
pub(crate) const EPS: f64 = 1e-7;

/// EasyRec's logit of a probability p: log(c/(1 − c)) with c = clip(p, ε, 1 − ε), and its
/// derivative 1/(c(1 − c)) (0 where the clip holds p, as `tf.clip_by_value`'s gradient).
pub(crate) fn prob_logit(p: f64) -> (f64, f64) {
    let c = p.clamp(EPS, 1.0 - EPS);
    let d = if (EPS..=1.0 - EPS).contains(&p) {
        1.0 / (c * (1.0 - c))
    } else {
        0.0
    };
    ((c / (1.0 - c)).ln(), d)
}

/// A one-column input as a logit divided by T, with d(logit/T)/d(input).
fn scaled_logit(x: f64, is_logit: bool, t: f64) -> (f64, f64) {
    let (s, ds) = if is_logit { (x, 1.0) } else { prob_logit(x) };
    (s / t, ds / t)
}

/// A class input as a logit divided by T (log(p + ε) for a probability), with its derivative.
fn class_logit(x: f64, is_logit: bool, t: f64) -> (f64, f64) {
    if is_logit {
        (x / t, 1.0 / t)
    } else {
        ((x + EPS).ln() / t, 1.0 / ((x + EPS) * t))
    }
}

/// `kl_divergence_loss` on one column: Keras' KLD on [1 − q, q] against [1 − p, p], both clipped
/// to [ε, 1]: l = Σ q̂·ln(q̂/p̂). dl/dz = −q̂·(1 − p)·[p ≥ ε] + (1 − q)^·p·[1 − p ≥ ε].
/// Returns (l, dl/dx).
pub(crate) fn kl_binary(x: f64, y: f64, k: &Teacher) -> (f64, f64) {
    let (z, dz) = scaled_logit(x, k.pred_is_logits, k.temperature);
    let (v, _) = scaled_logit(y, k.label_is_logits, k.temperature);
    let (p, pn) = (sigmoid(z), sigmoid(-z));
    let (q, qn) = (sigmoid(v).max(EPS), sigmoid(-v).max(EPS));
    let l = q * (q / p.max(EPS)).ln() + qn * (qn / pn.max(EPS)).ln();
    let on = |a: f64| if a >= EPS { 1.0 } else { 0.0 };
    let g = -q * pn * on(p) + qn * p * on(pn);
    (l, g * dz)
}

/// `binary_cross_entropy_loss` with a teacher: BCE-with-logits of z against the target σ(v):
/// l = q·softplus(−z) + (1 − q)·softplus(z), dl/dz = σ(z) − q. Returns (l, dl/dx).
pub(crate) fn bce_teacher(x: f64, y: f64, k: &Teacher) -> (f64, f64) {
    let (z, dz) = scaled_logit(x, k.pred_is_logits, k.temperature);
    let (v, _) = scaled_logit(y, k.label_is_logits, k.temperature);
    let (q, qn) = (sigmoid(v), sigmoid(-v));
    let l = q * softplus(-z) + qn * softplus(z);
    (l, (qn * sigmoid(z) - q * sigmoid(-z)) * dz)
}

/// `l2_distill_loss` on one column: ‖[1 − q, q] − [1 − p, p]‖² = 2(q − p)², dl/dz =
/// −4(q − p)·p(1 − p). Returns (l, dl/dx).
pub(crate) fn l2_binary(x: f64, y: f64, temperature: f64) -> (f64, f64) {
    let (z, dz) = (x / temperature, 1.0 / temperature);
    let (p, q) = (sigmoid(z), sigmoid(y / temperature));
    let d = q - p;
    (2.0 * d * d, -4.0 * d * p * sigmoid(-z) * dz)
}

/// softmax of a row, with its log-probabilities.
fn log_softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    z.iter().map(|v| v - lse).collect()
}

/// A row of C ≥ 2 classes: (l, dl/dx) of `kl_divergence_loss` (`kind` Kl) or `l2_distill_loss`
/// (L2). KL: p̂ = max(p, ε), q̂ = max(q, ε) (Keras clips to [ε, 1]; the upper bound never holds),
/// l = Σ q̂·ln(q̂/p̂), dl/dz_j = −q̂_j·[p_j ≥ ε] + p_j·S with S = Σ_{c: p_c ≥ ε} q̂_c.
/// L2: l = Σ (q − p)², dl/dz_j = 2p_j·((p_j − q_j) − A) with A = Σ_c (p_c − q_c)·p_c.
pub(crate) fn distill_row(x: &[f64], y: &[f64], kind: DistillKind, k: &Teacher) -> (f64, Vec<f64>) {
    let t = k.temperature;
    let (z, dz): (Vec<f64>, Vec<f64>) = x
        .iter()
        .map(|&v| class_logit(v, k.pred_is_logits, t))
        .unzip();
    let v: Vec<f64> = y
        .iter()
        .map(|&u| class_logit(u, k.label_is_logits, t).0)
        .collect();
    let p: Vec<f64> = log_softmax(&z).iter().map(|l| l.exp()).collect();
    let q: Vec<f64> = log_softmax(&v).iter().map(|l| l.exp()).collect();
    let (loss, gz): (f64, Vec<f64>) = match kind {
        DistillKind::Kl => {
            let qc: Vec<f64> = q.iter().map(|q| q.max(EPS)).collect();
            let l = (0..x.len())
                .map(|c| qc[c] * (qc[c] / p[c].max(EPS)).ln())
                .sum();
            let s: f64 = (0..x.len()).filter(|&c| p[c] >= EPS).map(|c| qc[c]).sum();
            let g = (0..x.len())
                .map(|j| if p[j] >= EPS { -qc[j] } else { 0.0 } + p[j] * s)
                .collect();
            (l, g)
        }
        _ => {
            let l = p.iter().zip(&q).map(|(p, q)| (q - p) * (q - p)).sum();
            let a: f64 = p.iter().zip(&q).map(|(p, q)| (p - q) * p).sum();
            let g = (0..x.len())
                .map(|j| 2.0 * p[j] * ((p[j] - q[j]) - a))
                .collect();
            (l, g)
        }
    };
    (loss, gz.iter().zip(&dz).map(|(g, d)| g * d).collect())
}

/// The values of one element of a column term (or of `binary_cross_entropy_loss` over [B, C]).
fn element(x: f64, y: f64, kind: DistillKind, teacher: Option<&Teacher>) -> (f64, f64) {
    match (kind, teacher) {
        (DistillKind::Kl, Some(k)) => kl_binary(x, y, k),
        (DistillKind::L2, Some(k)) => l2_binary(x, y, k.temperature),
        (_, Some(k)) => bce_teacher(x, y, k),
        (_, None) => sigmoid_ce(x, y, 0.0, None),
    }
}

/// One distillation term on a batch: the student `logits` and the teacher `labels` of one shape
/// ([B], [B, 1] or [B, C]); `teacher` is `None` for the plain `binary_cross_entropy_loss`.
pub(crate) fn evaluate(
    term: &LossTerm,
    batch: &HostBatch,
    kind: DistillKind,
    teacher: Option<Teacher>,
) -> Result<TermValue> {
    let (name, xt) = bound(batch, term, "logits")?;
    let (label_name, yt) = bound(batch, term, "labels")?;
    let x = xt.reals(name, Some(&term.name))?;
    let y = yt.reals(label_name, Some(&term.name))?;
    let column = is_column(&xt.shape);
    let b = xt.shape.first().copied().unwrap_or(0);
    let same = if column {
        is_column(&yt.shape) && yt.shape[0] == b
    } else {
        yt.shape == xt.shape
    };
    if !same || !(column || xt.shape.len() == 2) {
        return Err(Error::tensor(
            label_name,
            Some(&term.name),
            format!(
                "the teacher's labels must have the student logits' shape ([B], [B, 1] or [B, C]; \
                 '{name}' is {:?}), got {:?}",
                xt.shape, yt.shape
            ),
        ));
    }
    check_weights(term, kind, teacher, column)?;
    if teacher.is_some_and(|k| !k.pred_is_logits) {
        unit_interval(name, &term.name, x, "probabilities")?;
    }
    if teacher.is_none_or(|k| !k.label_is_logits) {
        unit_interval(label_name, &term.name, y, "binary labels")?;
    }
    let width = if column { 1 } else { xt.shape[1] };
    let per_row = column || kind != DistillKind::Bce;
    let rows = if per_row { b } else { x.len() };
    let (loss, grad) = match (per_row, column, teacher) {
        (true, false, Some(k)) => rows_of(x, y, width, kind, &k),
        _ => (0..x.len())
            .map(|i| element(x[i], y[i], kind, teacher.as_ref()))
            .unzip(),
    };
    let w = sample_weights(batch, term, (rows, name))?;
    let reduced = combine::reduce(term.effective_reduction(), &w, &w, &loss);
    let row_width = if per_row { width } else { 1 };
    let grad = scale_rows(grad, row_width, &reduced);
    Ok(TermValue::plain(
        reduced.value,
        vec![(name.to_string(), grad)],
    ))
}

/// Every row of a [B, C] term: (row losses, gradient row-major).
fn rows_of(x: &[f64], y: &[f64], c: usize, kind: DistillKind, k: &Teacher) -> (Vec<f64>, Vec<f64>) {
    let mut loss = Vec::with_capacity(x.len() / c);
    let mut grad = Vec::with_capacity(x.len());
    for (xr, yr) in x.chunks(c).zip(y.chunks(c)) {
        let (l, g) = distill_row(xr, yr, kind, k);
        loss.push(l);
        grad.extend(g);
    }
    (loss, grad)
}
