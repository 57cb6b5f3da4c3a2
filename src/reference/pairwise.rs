//! Pairwise-in-session losses in f64 (docs/LOSSES.md, "Pairwise-in-session terms"; EasyRec
//! `pair_wise_loss`, `pairwise_logistic_loss`, `pairwise_focal_loss`, `pairwise_hinge_loss`).
//!
//! The pairs are the (i, j) with y_i > y_j (strict) and session_i = session_j (every pair of the
//! batch without session ids). For a pair, d = (x_i − x_j)/T, its weight is pw = w_i (the sample
//! weight of the higher-label row) and its loss l(d) is one of [`PairLoss`]. The term is the
//! configured reduction over the pairs, or OHEM over the pairs, and the gradient of every pair
//! adds +dL/dd/T to x_i and −dL/dd/T to x_j.
//!
//! Rows are grouped by session first (row indices sorted by (session, index)), so the work is
//! Σ_S |S|² rather than B²; nothing of size B × B is ever stored.

use super::binary::{self, sigmoid, softplus, Focal};
use super::combine;
use super::inputs::{bound, finite, real_column, sample_weights, session_ids};
use super::terms::TermValue;
use crate::config::{LossTerm, Reduction};
use crate::error::Result;
use crate::losses::pairwise::params::PairLoss;
use crate::tensor::HostBatch;

/// The rows of each session, each session's rows in ascending row order (sessions in ascending id
/// order); one group holding every row when there are no session ids.
pub(crate) fn session_groups(rows: usize, session: Option<&[i64]>) -> Vec<Vec<usize>> {
    let Some(ids) = session else {
        return vec![(0..rows).collect()];
    };
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by_key(|&i| (ids[i], i));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(group) if ids[group[0]] == ids[i] => group.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// Calls `f(i, j)` for every pair: rows i, j of one group with y_i > y_j. Within a group the pairs
/// come in lexicographic (i, j) order; across groups they do not.
fn for_each_pair(groups: &[Vec<usize>], y: &[f64], mut f: impl FnMut(usize, usize)) {
    for group in groups {
        for &i in group {
            for &j in group {
                if y[i] > y[j] {
                    f(i, j);
                }
            }
        }
    }
}

/// The loss of one pair and its derivative dl/dd, or `None` when the pair does not exist
/// (`pairwise_focal_loss` with d ≥ hinge_margin). `d` = (x_i − x_j)/T, `gap` = y_i − y_j.
///
/// - `Logistic { margin }`: l = softplus(−(d − margin)), dl/dd = −σ(−(d − margin)).
/// - `LogisticMargin`: d' = d − hinge_margin (0 when unset) − gap/T when use_label_margin;
///   l = softplus(−d'), dl/dd = −σ(−d').
/// - `Focal`: binary focal with label 1 at logit d ([`binary::focal`], no smoothing).
/// - `Hinge`: l = relu(a) with a = gap − d (use_label_margin) or margin − d; dl/dd = −1 when
///   a > 0, else 0 (0 at the kink). With `use_exponent`, l = relu(e^min(a, 88) − 1), dl/dd = −e^a
///   for 0 < a < 88, else 0. (d and gap from [`row_scores`].)
pub(crate) fn pair_loss(loss: &PairLoss, d: f64, gap: f64, temperature: f64) -> Option<(f64, f64)> {
    match *loss {
        PairLoss::Logistic { margin } => {
            let z = d - margin;
            Some((softplus(-z), -sigmoid(-z)))
        }
        PairLoss::LogisticMargin {
            hinge_margin,
            use_label_margin,
        } => {
            let label_margin = if use_label_margin {
                gap / temperature
            } else {
                0.0
            };
            let z = d - hinge_margin.unwrap_or(0.0) - label_margin;
            Some((softplus(-z), -sigmoid(-z)))
        }
        PairLoss::Focal {
            gamma,
            alpha,
            hinge_margin,
        } => {
            if hinge_margin.is_some_and(|m| d >= m) {
                return None;
            }
            let focal = Focal {
                gamma,
                alpha,
                label_smoothing: 0.0,
            };
            Some(binary::focal(d, 1.0, &focal))
        }
        PairLoss::Hinge {
            margin,
            use_label_margin,
            use_exponent,
            ..
        } => {
            let a = if use_label_margin { gap } else { margin } - d;
            if a <= 0.0 {
                Some((0.0, 0.0))
            } else if use_exponent {
                // EasyRec clips a to ±88 (e^88 is near f32's largest): flat beyond.
                let slope = if a < EXP_CLIP { -a.exp() } else { 0.0 };
                Some((a.min(EXP_CLIP).exp() - 1.0, slope))
            } else {
                Some((a, -1.0))
            }
        }
    }
}

/// Where `pairwise_hinge_loss` with `use_exponent` clips its argument (EasyRec's threshold).
const EXP_CLIP: f64 = 88.0;

/// Each row's score s (d = s_i − s_j), label score t (gap = t_i − t_j) and T·ds/dx.
///
/// - Every loss but the hinge: s = x/T, t = y (the logistic label margin divides the gap by T
///   itself), T·ds/dx = 1.
/// - `pairwise_hinge_loss` (EasyRec): s = x/T and t = y/T (`label_is_logits`, the default) or y;
///   with `use_exponent` both through σ: s = σ(x/T), t = σ(·), T·ds/dx = σ'(x/T). (EasyRec's
///   code sets the logits to σ of the labels there, which leaves no gradient; we follow the
///   evident intent, σ of the logits.)
pub(crate) fn row_scores(
    loss: &PairLoss,
    temperature: f64,
    x: &[f64],
    y: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let scaled: Vec<f64> = x.iter().map(|v| v / temperature).collect();
    let PairLoss::Hinge {
        label_is_logits,
        use_exponent,
        ..
    } = *loss
    else {
        return (scaled, y.to_vec(), vec![1.0; x.len()]);
    };
    let label_scale = if label_is_logits { temperature } else { 1.0 };
    let t = y.iter().map(|v| v / label_scale);
    if !use_exponent {
        return (scaled, t.collect(), vec![1.0; x.len()]);
    }
    let s: Vec<f64> = scaled.iter().map(|&v| sigmoid(v)).collect();
    let ds = s.iter().map(|p| p * (1.0 - p)).collect();
    (s, t.map(sigmoid).collect(), ds)
}

/// One existing pair, kept for OHEM.
struct Pair {
    /// The higher-label row.
    i: usize,
    /// The lower-label row.
    j: usize,
    /// Pair weight w_i.
    weight: f64,
    /// Pair loss l(d).
    loss: f64,
    /// dl/dd.
    slope: f64,
}

/// A pairwise term: returns L and dL/dx (one value per row).
///
/// Without OHEM (`ohem_ratio` ≥ 1): L = Σ pw·l / D with D = #{pairs with pw ≠ 0}
/// (`nonzero_mean`), Σ pw (`weighted_mean`), #pairs (`mean`) or 1 (`sum`); L = 0 with a zero
/// gradient when D = 0 (no pairs included). With OHEM (ratio r < 1) the reduction is ignored:
/// v = pw·l per pair, the k = clamp(rint(P·r), 1, P) ([`combine::keep_count`]) largest are kept (ties at the k-th value:
/// lowest pair index i·B + j first), kept v ≤ 0 are dropped, and L is the plain mean of the rest
/// ([`combine::ohem`] over the pairs in pair-index order). Each pair adds c·(dl/dd)·ds_i/dx_i to
/// x_i and subtracts c·(dl/dd)·ds_j/dx_j from x_j ([`row_scores`]; ds/dx = 1/T but for the hinge
/// with `use_exponent`), c = dL/dl of the pair (pw/D, or pw/count for a pair kept by OHEM).
#[allow(clippy::too_many_arguments)] // the signature mirrors the term's parameters one to one
pub(crate) fn pairwise(
    loss: &PairLoss,
    temperature: f64,
    ohem_ratio: f64,
    reduction: Reduction,
    x: &[f64],
    y: &[f64],
    w: &[f64],
    session: Option<&[i64]>,
) -> (f64, Vec<f64>) {
    let rows = x.len();
    let groups = session_groups(rows, session);
    let mut grad = vec![0.0; rows];
    let (s, t, ds) = row_scores(loss, temperature, x, y);
    let score = |i: usize, j: usize| pair_loss(loss, s[i] - s[j], t[i] - t[j], temperature);

    if ohem_ratio < 1.0 {
        let mut pairs = Vec::new();
        for_each_pair(&groups, y, |i, j| {
            if let Some((l, slope)) = score(i, j) {
                pairs.push(Pair {
                    i,
                    j,
                    weight: w[i],
                    loss: l,
                    slope,
                });
            }
        });
        // Pair index order i·B + j, so that OHEM breaks ties by the lowest pair index.
        pairs.sort_by_key(|p| (p.i, p.j));
        let weights: Vec<f64> = pairs.iter().map(|p| p.weight).collect();
        let losses: Vec<f64> = pairs.iter().map(|p| p.loss).collect();
        let reduced = combine::ohem(ohem_ratio, &weights, &losses);
        for (p, c) in pairs.iter().zip(&reduced.row_factor) {
            let g = c * p.slope / temperature;
            grad[p.i] += g * ds[p.i];
            grad[p.j] -= g * ds[p.j];
        }
        return (reduced.value, grad);
    }

    // Σ pw·l, the three possible denominators, and the gradient of Σ pw·l.
    let mut numerator = 0.0;
    let (mut pairs, mut nonzero, mut weight_sum) = (0usize, 0usize, 0.0);
    for_each_pair(&groups, y, |i, j| {
        let Some((l, slope)) = score(i, j) else {
            return;
        };
        let pw = w[i];
        pairs += 1;
        nonzero += usize::from(pw != 0.0);
        weight_sum += pw;
        numerator += pw * l;
        let g = pw * slope / temperature;
        grad[i] += g * ds[i];
        grad[j] -= g * ds[j];
    });
    let denominator = match reduction {
        Reduction::NonzeroMean => nonzero as f64,
        Reduction::WeightedMean => weight_sum,
        Reduction::Mean => pairs as f64,
        Reduction::Sum => 1.0,
    };
    if pairs == 0 || denominator == 0.0 {
        return (0.0, vec![0.0; rows]);
    }
    grad.iter_mut().for_each(|g| *g /= denominator);
    (numerator / denominator, grad)
}

/// A pairwise-in-session term (docs/LOSSES.md, "Pairwise-in-session terms"; [`pairwise::pairwise`]):
/// finite logits `[B]` or `[B, 1]`, finite graded labels (any reals) with B rows, optional integer
/// session ids with B rows, sample weights.
pub(crate) fn evaluate(
    term: &LossTerm,
    batch: &HostBatch,
    loss: &PairLoss,
    temperature: f64,
    ohem_ratio: f64,
) -> Result<TermValue> {
    let (name, t) = bound(batch, term, "logits")?;
    let x = real_column(name, &term.name, t, None)?;
    finite(name, &term.name, x, "logits")?;
    let rows = (x.len(), name);
    let (label_name, labels) = bound(batch, term, "labels")?;
    let y = real_column(label_name, &term.name, labels, Some(rows))?;
    finite(label_name, &term.name, y, "labels")?;
    let session = session_ids(batch, term, rows)?;
    let w = sample_weights(batch, term, rows)?;
    let (value, grad) = pairwise(
        loss,
        temperature,
        ohem_ratio,
        term.effective_reduction(),
        x,
        y,
        &w,
        session,
    );
    Ok(TermValue::plain(value, vec![(name.to_string(), grad)]))
}
