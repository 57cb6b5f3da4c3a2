//! Softmax cross-entropy for one row in f64 (docs/LOSSES.md, "Softmax cross-entropy"; PyTorch
//! `F.cross_entropy` semantics, plus the PaLM z-loss).
//!
//! With z = x/T, lse = ln Σ_c e^{z_c}, p = softmax(z), the row's target distribution q (one-hot
//! class y or probabilities t, both mixed with the uniform distribution by ε) and the class weights
//! c (all 1 when none), the row loss is
//!
//! l = Σ_c c_c·q_c·(lse − z_c) + z_loss·lse²,
//!
//! which for a class id is (1−ε)·c_y·(lse − z_y) + (ε/C)·Σ_c c_c·(lse − z_c) as docs/LOSSES.md writes
//! it. Its gradient with respect to x_c is [(Σ_k c_k q_k)·p_c − c_c q_c + 2·z_loss·lse·p_c] / T.
//! Ignored rows, sample weights and the reduction are handled by the caller.

use super::combine::{self, scale_rows};
use super::inputs::{bound, id_column, sample_weights};
use super::terms::TermValue;
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::losses::softmax::params::SoftmaxParams;
use crate::tensor::{HostBatch, HostData};

/// What a row is scored against.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// A class id in [0, C) (already checked, not the ignore index).
    Class(usize),
    /// A probability row t of length C: t' = t(1 − ε) + ε/C. With class weights the loss is
    /// PyTorch's Σ_c c_c·t'_c·(lse − z_c) (docs/LOSSES.md does not cover that combination).
    Probabilities(&'a [f64]),
}

/// Loss and gradient (length C) of one row of logits `x` (see the module documentation).
/// `params.class_weights`, when set, must have C entries (checked by the caller).
pub(crate) fn softmax_ce_row(x: &[f64], target: Target, params: &SoftmaxParams) -> (f64, Vec<f64>) {
    let classes = x.len();
    let t = params.temperature;
    let eps = params.label_smoothing;
    let z: Vec<f64> = x.iter().map(|v| v / t).collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    let p: Vec<f64> = z.iter().map(|v| (v - lse).exp()).collect();
    let class_weight = |k: usize| params.class_weights.as_ref().map_or(1.0, |c| c[k]);
    let uniform = eps / classes as f64;
    // a_k = c_k·q_k: the class-weighted target.
    let a: Vec<f64> = (0..classes)
        .map(|k| {
            let q = match target {
                Target::Class(y) if k == y => 1.0 - eps + uniform,
                Target::Class(_) => uniform,
                Target::Probabilities(prob) => prob[k] * (1.0 - eps) + uniform,
            };
            class_weight(k) * q
        })
        .collect();
    let a_sum: f64 = a.iter().sum();
    let mut loss: f64 = a.iter().zip(&z).map(|(ak, zk)| ak * (lse - zk)).sum();
    loss += params.z_loss * lse * lse;
    let grad = (0..classes)
        .map(|k| (a_sum * p[k] - a[k] + 2.0 * params.z_loss * lse * p[k]) / t)
        .collect();
    (loss, grad)
}

/// Softmax CE over `[B, C]` logits (docs/LOSSES.md, "Softmax cross-entropy") with class-id labels
/// (integers, `[B]`; rows equal to `ignore_index` get w_i = 0, ω_i = c_{y_i}·w_i) or probability
/// labels (reals, `[B, C]`; ω_i = w_i; `ignore_index` has no effect there, as in PyTorch).
pub(crate) fn evaluate(
    term: &LossTerm,
    batch: &HostBatch,
    params: &SoftmaxParams,
) -> Result<TermValue> {
    let (name, t) = bound(batch, term, "logits")?;
    let x = t.reals(name, Some(&term.name))?;
    if t.shape.len() != 2 || t.shape[1] < 2 {
        return Err(Error::tensor(
            name,
            Some(&term.name),
            format!(
                "softmax CE expects logits of shape [B, C] with C ≥ 2, got {:?}",
                t.shape
            ),
        ));
    }
    let (b, c) = (t.shape[0], t.shape[1]);
    if let Some(weights) = &params.class_weights {
        if weights.len() != c {
            return Err(Error::tensor(
                name,
                Some(&term.name),
                format!(
                    "class_weights has {} entries but the logits have C = {c} classes (shape {:?})",
                    weights.len(),
                    t.shape
                ),
            ));
        }
    }
    let rows = (b, name);
    let (label_name, labels) = bound(batch, term, "labels")?;
    let mut w = sample_weights(batch, term, rows)?;
    let mut omega = w.clone();
    let mut loss = vec![0.0; b];
    let mut grad = vec![0.0; b * c];
    match &labels.data {
        HostData::Int(_) => {
            let ids = id_column(label_name, &term.name, labels, rows, "class ids")?;
            for (i, &id) in ids.iter().enumerate() {
                if Some(id) == params.ignore_index {
                    w[i] = 0.0;
                    omega[i] = 0.0;
                    continue;
                }
                if id < 0 || id >= c as i64 {
                    let ignore = params
                        .ignore_index
                        .map(|v| format!(" and is not ignore_index ({v})"))
                        .unwrap_or_default();
                    return Err(Error::tensor(
                        label_name,
                        Some(&term.name),
                        format!("class id {id} in row {i} is outside [0, {c}){ignore}"),
                    ));
                }
                let y = id as usize;
                let (l, g) = softmax_ce_row(&x[i * c..(i + 1) * c], Target::Class(y), params);
                loss[i] = l;
                grad[i * c..(i + 1) * c].copy_from_slice(&g);
                omega[i] *= params.class_weights.as_ref().map_or(1.0, |cw| cw[y]);
            }
        }
        HostData::Real(probs) => {
            if labels.shape != [b, c] {
                return Err(Error::tensor(
                    label_name,
                    Some(&term.name),
                    format!(
                        "expected class ids (integers, shape [{b}]) or probabilities (reals, \
                         shape [{b}, {c}], from '{name}'), got reals of shape {:?}",
                        labels.shape
                    ),
                ));
            }
            for i in 0..b {
                let target = Target::Probabilities(&probs[i * c..(i + 1) * c]);
                let (l, g) = softmax_ce_row(&x[i * c..(i + 1) * c], target, params);
                loss[i] = l;
                grad[i * c..(i + 1) * c].copy_from_slice(&g);
            }
        }
    }
    let reduced = combine::reduce(term.effective_reduction(), &w, &omega, &loss);
    Ok(TermValue::plain(
        reduced.value,
        vec![(name.to_string(), scale_rows(grad, c, &reduced))],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn hand_computed_row() {
        // x = [1, 2, 3], y = 0: lse = ln(e + e² + e³) = 3.40760596444438, loss = lse − 1.
        let params = SoftmaxParams::default();
        let (l, g) = softmax_ce_row(&[1.0, 2.0, 3.0], Target::Class(0), &params);
        assert!(close(l, 2.40760596444438, 1e-13), "{l}");
        let s = 1f64.exp() + 2f64.exp() + 3f64.exp();
        let want = [1f64.exp() / s - 1.0, 2f64.exp() / s, 3f64.exp() / s];
        for (gk, wk) in g.iter().zip(want) {
            assert!(close(*gk, wk, 1e-14), "{gk} vs {wk}");
        }
    }

    #[test]
    fn smoothing_weights_temperature_and_z_loss_by_hand() {
        // The docs/LOSSES.md form, term by term, at x = [0.5, −1, 2, 0], y = 2.
        let x = [0.5, -1.0, 2.0, 0.0];
        let c = [0.5, 2.0, 1.5, 1.0];
        let params = SoftmaxParams {
            label_smoothing: 0.1,
            temperature: 2.0,
            ignore_index: None,
            class_weights: Some(c.to_vec()),
            z_loss: 0.01,
        };
        let z: Vec<f64> = x.iter().map(|v| v / 2.0).collect();
        let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
        let smooth: f64 = (0..4).map(|k| c[k] * (lse - z[k])).sum();
        let want = 0.9 * c[2] * (lse - z[2]) + 0.1 / 4.0 * smooth + 0.01 * lse * lse;
        let (l, _) = softmax_ce_row(&x, Target::Class(2), &params);
        assert!(close(l, want, 1e-14), "{l} vs {want}");
    }

    #[test]
    fn one_hot_probabilities_equal_the_class_id() {
        let params = SoftmaxParams {
            label_smoothing: 0.2,
            temperature: 0.7,
            ignore_index: None,
            class_weights: Some(vec![1.0, 3.0, 0.5]),
            z_loss: 0.1,
        };
        let x = [0.3, -0.2, 1.1];
        let (a, ga) = softmax_ce_row(&x, Target::Class(1), &params);
        let (b, gb) = softmax_ce_row(&x, Target::Probabilities(&[0.0, 1.0, 0.0]), &params);
        assert!(close(a, b, 1e-14));
        for (u, v) in ga.iter().zip(&gb) {
            assert!(close(*u, *v, 1e-14));
        }
    }

    #[test]
    fn large_logits_stay_finite() {
        let (l, g) = softmax_ce_row(
            &[800.0, -800.0],
            Target::Class(1),
            &SoftmaxParams::default(),
        );
        assert!(close(l, 1600.0, 1e-14), "{l}");
        assert!(close(g[0], 1.0, 1e-14) && close(g[1], -1.0, 1e-14));
    }
}
