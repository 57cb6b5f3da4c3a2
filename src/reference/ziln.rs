//! The reference of `ziln_loss` (docs/LOSSES.md, "ziln_loss"; EasyRec
//! `zero_inflated_lognormal_loss` and `zero_inflated_lognormal_pred` in
//! `easy_rec/python/loss/zero_inflated_lognormal.py`), in f64: the term value, its gradient to
//! the [B, 3] logits, and the per-row predicted mean.

use super::inputs::{bound, real_column, real_matrix};
use super::terms::TermValue;
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::losses::ziln::params::{sigma_floor, ZilnParams};
use crate::tensor::HostBatch;

/// ln(2π)/2, the Normal's constant.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// σ = clip(softplus(x₂), sqrt(1e-7), max_sigma) and dσ/dx₂: σ(x₂) inside the clip, 0 outside
/// (TensorFlow's `clip_by_value` passes the gradient where min ≤ value ≤ max).
pub(crate) fn sigma(x2: f64, max_sigma: f64) -> (f64, f64) {
    let s = softplus(x2);
    let floor = sigma_floor();
    if s < floor {
        (floor, 0.0)
    } else if s > max_sigma {
        (max_sigma, 0.0)
    } else {
        (s, sigmoid(x2))
    }
}

/// The term value, d value / d logits (row-major [B, 3]) and the predictions of rows `x`
/// ([B, 3]: p logit, μ, σ logit) with labels `y` ≥ 0:
///   value = cw·mean(BCE(x₀, y > 0)) + rw·Σ_{y>0} NLL_LogNormal(y; μ, σ) / (#{y > 0} + 1e-8)
///           + mu_reg·mean(μ²) + sigma_reg·mean(x₂²).
pub(crate) fn ziln(x: &[f64], y: &[f64], p: &ZilnParams) -> (f64, Vec<f64>, Vec<f64>) {
    let b = y.len();
    let inv_b = 1.0 / b as f64;
    let positives = y.iter().filter(|&&v| v > 0.0).count();
    let inv_pos = 1.0 / (positives as f64 + 1e-8);
    let mut value = 0.0;
    let mut grad = vec![0.0; 3 * b];
    let mut prediction = Vec::with_capacity(b);
    for (i, &yi) in y.iter().enumerate() {
        let (x0, mu, x2) = (x[3 * i], x[3 * i + 1], x[3 * i + 2]);
        let pos = if yi > 0.0 { 1.0 } else { 0.0 };
        let bce = softplus(x0) - pos * x0;
        value += inv_b
            * (p.classification_weight * bce
                + p.mu_regularization * mu * mu
                + p.sigma_regularization * x2 * x2);
        let g = &mut grad[3 * i..3 * i + 3];
        g[0] = inv_b * p.classification_weight * (sigmoid(x0) - pos);
        g[1] = inv_b * 2.0 * p.mu_regularization * mu;
        g[2] = inv_b * 2.0 * p.sigma_regularization * x2;
        let (sig, dsig) = sigma(x2, p.max_sigma);
        if yi > 0.0 {
            let ln_y = yi.ln();
            let z = (ln_y - mu) / sig;
            let nll = 0.5 * z * z + sig.ln() + HALF_LN_2PI + ln_y;
            let scale = p.regression_weight * inv_pos;
            value += scale * nll;
            g[1] += scale * (-z / sig);
            g[2] += scale * (1.0 - z * z) / sig * dsig;
        }
        prediction.push(predict(x0, mu, sig, p));
    }
    (value, grad, prediction)
}

/// EasyRec's `zero_inflated_lognormal_pred`: log p = log σ(x₀) + μ + σ²/2, and the prediction
/// exp(clip(log p, −100, max_log_clip_value)), or log p itself with `return_log_pred_value`.
pub(crate) fn predict(x0: f64, mu: f64, sig: f64, p: &ZilnParams) -> f64 {
    let log_pred = -softplus(-x0) + mu + 0.5 * sig * sig;
    if p.return_log_pred_value {
        log_pred
    } else {
        log_pred.clamp(-100.0, p.max_log_clip_value).exp()
    }
}

/// A `ziln_loss` term on a batch: logits [B, 3], labels [B] (or [B, 1]) ≥ 0.
pub(crate) fn evaluate(term: &LossTerm, batch: &HostBatch, p: &ZilnParams) -> Result<TermValue> {
    let (name, t) = bound(batch, term, "logits")?;
    let (x, b) = real_matrix(name, &term.name, t, 3, "ZILN logits (p logit, μ, σ logit)")?;
    if b == 0 {
        return Err(Error::tensor(
            name,
            Some(&term.name),
            "the batch has no rows",
        ));
    }
    let (label_name, labels) = bound(batch, term, "labels")?;
    let y = real_column(label_name, &term.name, labels, Some((b, name)))?;
    // As the plan's checks: labels are amounts, finite and >= 0 (NaN is the finite checks').
    if let Some(i) = y.iter().position(|v| *v < 0.0 || v.is_infinite()) {
        return Err(Error::tensor(
            label_name,
            Some(&term.name),
            format!(
                "values must be finite and >= 0 (sample weights, amount labels); row {i} holds {}",
                y[i]
            ),
        ));
    }
    let (value, grad, prediction) = ziln(x, y, p);
    let mut out = TermValue::plain(value, vec![(name.to_string(), grad)]);
    out.prediction = Some(prediction);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ZilnParams {
        ZilnParams::default()
    }

    /// Central differences of the value against the analytic gradient, every logit of every row.
    fn check_fd(x: &[f64], y: &[f64], p: &ZilnParams) {
        let (_, grad, _) = ziln(x, y, p);
        let h = 1e-6;
        for k in 0..x.len() {
            let (mut lo, mut hi) = (x.to_vec(), x.to_vec());
            lo[k] -= h;
            hi[k] += h;
            let fd = (ziln(&hi, y, p).0 - ziln(&lo, y, p).0) / (2.0 * h);
            assert!(
                (fd - grad[k]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "logit {k} (row {}, column {}): finite difference {fd}, analytic {}",
                k / 3,
                k % 3,
                grad[k]
            );
        }
    }

    #[test]
    fn hand_computed_value_and_prediction() {
        // σ logit ln(e − 1): softplus = 1, so σ = 1; y = e: ln y = 1.
        let x2 = (std::f64::consts::E - 1.0).ln();
        let x = [0.0, 0.0, x2, 2.0, 0.5, x2];
        let y = [std::f64::consts::E, 0.0];
        let (value, grad, pred) = ziln(&x, &y, &defaults());
        let ln2 = std::f64::consts::LN_2;
        // Row 0: BCE(0, 1) = ln 2, NLL = ½(1 − 0)² + ln 1 + ½ ln 2π + ln e; row 1: BCE(2, 0) =
        // softplus(2). One positive row. Penalties: 0.01·mean(μ²) + 0.01·mean(x₂²).
        let nll = 0.5 + HALF_LN_2PI + 1.0;
        let softplus2 = (1.0 + 2f64.exp()).ln();
        let want = (ln2 + softplus2) / 2.0
            + nll / (1.0 + 1e-8)
            + 0.01 * (0.25) / 2.0
            + 0.01 * (2.0 * x2 * x2) / 2.0;
        assert!((value - want).abs() < 1e-12, "{value} vs {want}");
        // dμ of row 0: −(ln y − μ)/σ² per positive; of row 1 only the penalty 2·0.01·μ/B.
        assert!((grad[1] - (-1.0 / (1.0 + 1e-8))).abs() < 1e-12);
        assert!((grad[4] - 0.01 * 0.5).abs() < 1e-15);
        // dx₀ of row 1: (σ(2) − 0)/B.
        assert!((grad[3] - 0.5 / (1.0 + (-2f64).exp())).abs() < 1e-15);
        // Predictions: σ(x₀)·exp(μ + σ²/2).
        assert!((pred[0] - 0.5 * 0.5f64.exp()).abs() < 1e-12);
        let p1 = 1.0 / (1.0 + (-2f64).exp()) * (0.5f64 + 0.5).exp();
        assert!((pred[1] - p1).abs() < 1e-12);
    }

    #[test]
    fn finite_differences_sigma_inside_the_clip() {
        let x = [
            0.3, 1.2, 0.4, -1.5, 0.2, -0.8, 2.0, -0.7, 1.5, 0.1, 3.0, 0.9,
        ];
        let y = [2.5, 0.0, 0.3, 40.0];
        check_fd(&x, &y, &defaults());
        let p = ZilnParams {
            classification_weight: 0.7,
            regression_weight: 1.9,
            mu_regularization: 0.3,
            sigma_regularization: 0.2,
            ..defaults()
        };
        check_fd(&x, &y, &p);
    }

    #[test]
    fn sigma_outside_the_clip_has_no_gradient_through_sigma() {
        // softplus(8) > max_sigma 5 and softplus(−20) < sqrt(1e-7): only the penalty remains.
        // The floored row's μ is near ln y, so that its NLL stays moderate at σ = 3.2e-4.
        let x = [0.5, 0.3, 8.0, -0.2, 0.7f64.ln() + 1e-5, -20.0];
        let y = [1.5, 0.7];
        let p = defaults();
        let (_, grad, _) = ziln(&x, &y, &p);
        assert!((grad[2] - 2.0 * 0.01 * 8.0 / 2.0).abs() < 1e-15);
        assert!((grad[5] - 2.0 * 0.01 * -20.0 / 2.0).abs() < 1e-15);
        check_fd(&x, &y, &p);
        // A smaller max_sigma clips a σ that the default leaves inside.
        let clipped = ZilnParams {
            max_sigma: 0.5,
            ..defaults()
        };
        let x = [0.5, 0.3, 1.0, -0.2, 0.1, -1.0];
        check_fd(&x, &y, &clipped);
        let (_, g, _) = ziln(&x, &y, &clipped);
        assert!(
            (g[2] - 0.01 * 1.0).abs() < 1e-15,
            "σ clipped at 0.5: {}",
            g[2]
        );
    }

    #[test]
    fn only_zero_labels() {
        // No positive row: the regression part is 0/(0 + 1e-8) = 0, μ and x₂ only penalised.
        let x = [0.5, 3.0, 1.0, -1.0, -2.0, 0.2];
        let y = [0.0, 0.0];
        let p = defaults();
        let (value, grad, _) = ziln(&x, &y, &p);
        let sp = |z: f64| (1.0 + z.exp()).ln();
        let want = (sp(0.5) + sp(-1.0)) / 2.0 + 0.01 * (9.0 + 4.0) / 2.0 + 0.01 * 1.04 / 2.0;
        assert!((value - want).abs() < 1e-12, "{value} vs {want}");
        assert_eq!(grad[1], 0.01 * 3.0);
        check_fd(&x, &y, &p);
    }

    #[test]
    fn only_positive_labels() {
        let x = [1.0, 0.5, 0.3, -0.5, 2.0, -0.4, 0.0, -1.0, 1.2];
        let y = [0.2, 7.0, 1.0];
        let p = defaults();
        let (value, _, _) = ziln(&x, &y, &p);
        // Every row is a positive: the NLL is a plain mean over the three rows.
        let nll: f64 = (0..3)
            .map(|i| {
                let (sig, _) = sigma(x[3 * i + 2], 5.0);
                let z = (y[i].ln() - x[3 * i + 1]) / sig;
                0.5 * z * z + sig.ln() + HALF_LN_2PI + y[i].ln()
            })
            .sum::<f64>()
            / (3.0 + 1e-8);
        let bce: f64 = (0..3).map(|i| (1.0 + (-x[3 * i]).exp()).ln()).sum::<f64>() / 3.0;
        let pen = (0.25 + 4.0 + 1.0) * 0.01 / 3.0 + (0.09 + 0.16 + 1.44) * 0.01 / 3.0;
        assert!((value - (bce + nll + pen)).abs() < 1e-12);
        check_fd(&x, &y, &p);
    }

    #[test]
    fn prediction_clip_and_log() {
        let p = defaults();
        // log prediction 30 > max_log_clip_value 20: exp(20).
        let sig = sigma(0.0, 5.0).0;
        let mu = 30.0 - 0.5 * sig * sig + (1.0 + (-40f64).exp()).ln();
        assert!((predict(40.0, mu, sig, &p) - 20f64.exp()).abs() < 1e-6);
        let log = ZilnParams {
            return_log_pred_value: true,
            ..defaults()
        };
        assert!((predict(40.0, mu, sig, &log) - 30.0).abs() < 1e-12);
    }
}
