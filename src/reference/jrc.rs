//! `jrc_loss` in f64 (docs/LOSSES.md, "jrc_loss"; EasyRec `JRC_LOSS`, Sheng et al. 2023, joint
//! ranking-calibration): a calibration part ce (softmax CE over the two columns of each row) and a
//! ranking part ge (a listwise softmax over the rows of each session). Combining them (fixed α or
//! learned uncertainty weights) happens in [`evaluate`].
//!
//! Notation: z_{i,0}, z_{i,1} the two logits of row i, y_i ∈ {0, 1}, S the session of a row,
//! lse(A) = log Σ_{a∈A} e^a. Gradients are returned as 2B values, row-major like the logits.

use super::combine;
use super::inputs::{
    bound, finite, id_column, real_column, real_matrix, sample_weights, zero_or_one,
};
use super::pairwise::session_groups;
use super::terms::TermValue;
use crate::config::{LossTerm, Reduction};
use crate::error::Result;
use crate::losses::jrc::params::JrcParams;
use crate::losses::jrc::params::JrcWeighting;
use crate::tensor::HostBatch;

/// The two parts of `jrc_loss` and their gradients with respect to the [B, 2] logits.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JrcParts {
    /// The reduced calibration loss ce.
    pub ce: f64,
    /// The ranking loss ge.
    pub ge: f64,
    /// d ce / d z (2B values, row-major).
    pub grad_ce: Vec<f64>,
    /// d ge / d z (2B values, row-major).
    pub grad_ge: Vec<f64>,
}

/// lse(A) = max + log Σ e^{a − max}; −∞ for an empty set.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Both parts of `jrc_loss` for logits `z` ([B, 2] row-major), labels `y` (each 0 or 1, checked
/// by the caller), session ids and sample weights `w`.
///
/// - ce_i = lse(z_{i,0}, z_{i,1}) − z_{i,y_i}, reduced with `reduction` and the weights w
///   ([`combine::reduce`]); d ce_i/d z_{i,c} = softmax(z_i)_c − [c = y_i].
/// - ge = Σ_i L_i / B, unweighted (sample weights do not apply to ge), 0 for an empty batch.
///   With `same_label_loss`, L_i = lse_{j∈S}(z_{j,c}) − z_{i,c} with c = y_i: each row competes
///   with every row of its session in the column of its label. Without it, row i competes only
///   with the opposite-label rows O of its session: L_i = E_i − z_{i,c},
///   E_i = lse({z_{i,c}} ∪ {z_{j,c} : j ∈ O}); the gradient gives row i softmax weight − 1 and
///   each j ∈ O e^{z_{j,c} − E_i}, in column c (so a negative row receives gradient in column 1
///   from the positive rows of its session).
pub(crate) fn jrc(
    z: &[f64],
    y: &[f64],
    session: &[i64],
    w: &[f64],
    reduction: Reduction,
    same_label_loss: bool,
) -> JrcParts {
    let rows = y.len();
    let label = |i: usize| usize::from(y[i] == 1.0);
    let logit = |i: usize, c: usize| z[2 * i + c];

    // Calibration: softmax CE over the two columns of each row.
    let mut ce_rows = vec![0.0; rows];
    let mut grad_ce = vec![0.0; 2 * rows];
    for i in 0..rows {
        let lse = log_sum_exp([logit(i, 0), logit(i, 1)].into_iter());
        ce_rows[i] = lse - logit(i, label(i));
        for c in 0..2 {
            let target = if c == label(i) { 1.0 } else { 0.0 };
            grad_ce[2 * i + c] = (logit(i, c) - lse).exp() - target;
        }
    }
    let reduced = combine::reduce(reduction, w, w, &ce_rows);
    for i in 0..rows {
        grad_ce[2 * i] *= reduced.row_factor[i];
        grad_ce[2 * i + 1] *= reduced.row_factor[i];
    }

    // Ranking: a softmax over the rows of each session, per column.
    let mut ge_sum = 0.0;
    let mut grad_ge = vec![0.0; 2 * rows];
    for group in session_groups(rows, Some(session)) {
        for c in 0..2 {
            // The rows of the session whose label is c, and the others.
            let own: Vec<usize> = group.iter().copied().filter(|&i| label(i) == c).collect();
            let other: Vec<usize> = group.iter().copied().filter(|&i| label(i) != c).collect();
            if same_label_loss {
                // L_i = lse_S(z_{·,c}) − z_{i,c} for each i with label c; d/d z_{j,c} over the
                // |own| rows = n_c·softmax_S(z_{·,c})_j − [y_j = c].
                let lse = log_sum_exp(group.iter().map(|&j| logit(j, c)));
                for &i in &own {
                    ge_sum += lse - logit(i, c);
                    grad_ge[2 * i + c] -= 1.0;
                }
                for &j in &group {
                    grad_ge[2 * j + c] += own.len() as f64 * (logit(j, c) - lse).exp();
                }
            } else {
                // A = lse over the opposite-label rows in column c (−∞ when there are none), so
                // E_i = lse(z_{i,c}, A). Each j ∈ O gets Σ_i e^{z_{j,c} − E_i}, computed stably
                // as e^{z_{j,c} − A}·Σ_i e^{A − E_i} (both exponents ≤ 0).
                let a = log_sum_exp(other.iter().map(|&j| logit(j, c)));
                let mut to_others = 0.0;
                for &i in &own {
                    let e = log_sum_exp([logit(i, c), a].into_iter());
                    ge_sum += e - logit(i, c);
                    grad_ge[2 * i + c] += (logit(i, c) - e).exp() - 1.0;
                    to_others += (a - e).exp();
                }
                for &j in &other {
                    grad_ge[2 * j + c] += (logit(j, c) - a).exp() * to_others;
                }
            }
        }
    }
    let ge = if rows == 0 { 0.0 } else { ge_sum / rows as f64 };
    grad_ge.iter_mut().for_each(|g| *g /= rows.max(1) as f64);
    JrcParts {
        ce: reduced.value,
        ge,
        grad_ce,
        grad_ge,
    }
}

/// `jrc_loss` (docs/LOSSES.md, "jrc_loss"; [`jrc::jrc`]): finite logits `[B, 2]`, labels exactly 0 or
/// 1 with B rows, integer session ids with B rows, sample weights (for ce only). Combines the
/// parts as
/// - `fixed`: L = α·ce + (1 − α)·ge;
/// - `uncertainty` with the learned (u1, u2): L = e^{−u1}·ce + 0.5·u1 + e^{−u2}·ge + 0.5·u2,
///   dL/du1 = −e^{−u1}·ce + 0.5, dL/du2 = −e^{−u2}·ge + 0.5 (returned in `jrc_du`).
pub(crate) fn evaluate(
    term: &LossTerm,
    batch: &HostBatch,
    p: &JrcParams,
    u: [f64; 2],
) -> Result<TermValue> {
    let (alpha, same_label_loss) = (p.alpha, p.same_label_loss);
    let (name, t) = bound(batch, term, "logits")?;
    let (z, b) = real_matrix(name, &term.name, t, 2, "logits")?;
    finite(name, &term.name, z, "logits")?;
    let rows = (b, name);
    let (label_name, labels) = bound(batch, term, "labels")?;
    let y = real_column(label_name, &term.name, labels, Some(rows))?;
    zero_or_one(label_name, &term.name, y)?;
    let (session_name, session) = bound(batch, term, "session")?;
    let session = id_column(session_name, &term.name, session, rows, "session ids")?;
    let w = sample_weights(batch, term, rows)?;
    let parts = jrc(
        z,
        y,
        session,
        &w,
        term.effective_reduction(),
        same_label_loss,
    );
    let (a_ce, a_ge, value, jrc_du) = match &p.weighting {
        JrcWeighting::Fixed => {
            let value = alpha * parts.ce + (1.0 - alpha) * parts.ge;
            (alpha, 1.0 - alpha, value, [0.0; 2])
        }
        JrcWeighting::Uncertainty(_) => {
            let (e1, e2) = ((-u[0]).exp(), (-u[1]).exp());
            let value = e1 * parts.ce + 0.5 * u[0] + e2 * parts.ge + 0.5 * u[1];
            let du = [-e1 * parts.ce + 0.5, -e2 * parts.ge + 0.5];
            (e1, e2, value, du)
        }
    };
    let grad = parts
        .grad_ce
        .iter()
        .zip(&parts.grad_ge)
        .map(|(gc, gg)| a_ce * gc + a_ge * gg)
        .collect();
    let mut value = TermValue::plain(value, vec![(name.to_string(), grad)]);
    value.jrc_du = jrc_du;
    Ok(value)
}
