//! F1-reweighted sigmoid CE in f64 (docs/LOSSES.md, "F1-reweighted"; EasyRec `F1_REWEIGHTED_LOSS`).
//!
//! tp = Σ_all σ(x_i), n_pos = #{y_i = 1}, neg_w = tp / ((β² − 1)·n_pos + tp + 1e-8). A row is a
//! positive when its (unsmoothed) label is exactly 1; positives weigh 1, the other rows neg_w,
//! times w_i. The term is the configured reduction of CE(x_i, y'_i) under the row weights
//! ω_i = r_i·w_i: L = N / D with N = Σ ω_i·CE_i and D = #{ω_i ≠ 0} (`nonzero_mean`), Σ ω_i
//! (`weighted_mean`), B (`mean`) or 1 (`sum`). neg_w is not detached: every logit also gets
//! dL/dneg_w · dneg_w/dtp · σ(x_j)(1 − σ(x_j)).

use super::binary::{sigmoid, smooth, softplus};
use crate::config::Reduction;

/// The constant in neg_w's denominator.
pub(crate) const F1_EPS: f64 = 1e-8;

/// The term value and dL/dx per row.
pub(crate) fn f1_reweighted(
    reduction: Reduction,
    x: &[f64],
    y: &[f64],
    w: &[f64],
    beta_square: f64,
    label_smoothing: f64,
) -> (f64, Vec<f64>) {
    let s: Vec<f64> = x.iter().map(|&xi| sigmoid(xi)).collect();
    let tp: f64 = s.iter().sum();
    let n_pos = y.iter().filter(|&&yi| yi == 1.0).count() as f64;
    let den = (beta_square - 1.0) * n_pos + tp + F1_EPS;
    let neg_w = tp / den;
    let dneg_dtp = ((beta_square - 1.0) * n_pos + F1_EPS) / (den * den);
    let positive = |i: usize| y[i] == 1.0;
    let rw = |i: usize| if positive(i) { 1.0 } else { neg_w };
    let ce = |i: usize| {
        let ys = smooth(y[i], label_smoothing);
        (softplus(x[i]) - x[i] * ys, s[i] - ys)
    };
    let rows = x.len();
    let omega: Vec<f64> = (0..rows).map(|i| rw(i) * w[i]).collect();
    let d = match reduction {
        Reduction::NonzeroMean => omega.iter().filter(|&&o| o != 0.0).count() as f64,
        Reduction::WeightedMean => omega.iter().sum(),
        Reduction::Mean => rows as f64,
        Reduction::Sum => 1.0,
    };
    if d == 0.0 {
        return (0.0, vec![0.0; rows]);
    }
    let n: f64 = (0..rows).map(|i| omega[i] * ce(i).0).sum();
    // ∂N/∂neg_w and ∂D/∂neg_w (the count of `nonzero_mean` is piecewise constant).
    let dn: f64 = (0..rows)
        .filter(|&i| !positive(i))
        .map(|i| w[i] * ce(i).0)
        .sum();
    let dd: f64 = match reduction {
        Reduction::WeightedMean => (0..rows).filter(|&i| !positive(i)).map(|i| w[i]).sum(),
        _ => 0.0,
    };
    let dl_dneg = dn / d - n * dd / (d * d);
    let through_tp = dl_dneg * dneg_dtp;
    let grad = (0..rows)
        .map(|i| omega[i] * ce(i).1 / d + through_tp * s[i] * (1.0 - s[i]))
        .collect();
    (n / d, grad)
}
