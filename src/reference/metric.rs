//! Metric-learning terms in f64 (docs/LOSSES.md, "Retrieval and embedding terms"): `circle_loss` (Sun
//! et al. CVPR 2020; EasyRec `circle_loss`) and `multi_similarity_loss` (Wang et al. CVPR 2019;
//! EasyRec `ms_loss`, with its `ms_mining`) over one batch of embeddings e `[B, d]` with class
//! labels and optional session ids.
//!
//! Both use the cosine matrix S_ij = ê_i·ê_j with ê = e / max(‖e‖, 1e-12). For j ≠ i, (i, j) is a
//! positive when the labels are equal and (without session ids, or) the sessions are equal, and a
//! negative otherwise (a different label or a different session). S is symmetric, so S_ij enters
//! l_i and l_j: the gradient of every pair goes to ê_i (·ê_j) and to ê_j (·ê_i), then through the
//! normalisation. S is never stored: each row is computed when needed.

use super::binary::{sigmoid, softplus};
use super::combine;
use super::inputs::ClassLabels;
use super::inputs::{class_labels, embeddings, sample_weights, session_ids};
use super::retrieval::{add_scaled, dot, log_sum_exp, normalise, normalise_backward, row};
use super::terms::TermValue;
use crate::config::{LossTerm, Reduction};
use crate::error::Result;
use crate::losses::metric::params::{CircleParams, MultiSimilarityParams};
use crate::tensor::HostBatch;

/// What (i, j) is to row i.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Relation {
    /// j = i.
    Itself,
    /// Same label and same session (or no session ids).
    Positive,
    /// A different label or a different session.
    Negative,
}

/// The labels and optional session ids that decide positives and negatives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relations<'a> {
    /// Class labels, compared for exact equality.
    pub labels: ClassLabels<'a>,
    /// Session ids (None: one session).
    pub session: Option<&'a [i64]>,
}

impl Relations<'_> {
    /// What (i, j) is to row i.
    pub fn of(&self, i: usize, j: usize) -> Relation {
        let same_session = self.session.is_none_or(|s| s[i] == s[j]);
        if i == j {
            Relation::Itself
        } else if self.labels.same(i, j) && same_session {
            Relation::Positive
        } else {
            Relation::Negative
        }
    }
}

/// The parameters of `circle_loss`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Circle {
    /// m.
    pub margin: f64,
    /// γ.
    pub gamma: f64,
}

/// The detached factor of pair (i, j) at similarity `s`: a_p = relu(1 + m − s) for a positive,
/// a_n = relu(s + m) for a negative, 0 for j = i.
pub(crate) fn circle_factor(margin: f64, relation: Relation, s: f64) -> f64 {
    match relation {
        Relation::Itself => 0.0,
        Relation::Positive => (1.0 + margin - s).max(0.0),
        Relation::Negative => (s + margin).max(0.0),
    }
}

/// The detached factors a_ij of every pair at the embeddings `e` (B·B values, row-major), for
/// [`circle_with_factors`] (the tests freeze them to take finite differences).
#[cfg(test)]
pub(crate) fn circle_factors(
    margin: f64,
    e: &[f64],
    dim: usize,
    relations: &Relations,
) -> Vec<f64> {
    let unit = normalise(e, dim);
    let rows = e.len() / dim;
    (0..rows)
        .flat_map(|i| (0..rows).map(move |j| (i, j)))
        .map(|(i, j)| {
            let s = dot(row(&unit, dim, i), row(&unit, dim, j));
            circle_factor(margin, relations.of(i, j), s)
        })
        .collect()
}

/// `circle_loss` with the factors a_ij computed from this batch's S and detached: value and dL/de.
pub(crate) fn circle(
    circle: &Circle,
    e: &[f64],
    dim: usize,
    relations: &Relations,
    reduction: Reduction,
    w: &[f64],
) -> (f64, Vec<f64>) {
    circle_with_factors(circle, e, dim, relations, None, reduction, w)
}

/// `circle_loss`: value and dL/de, with the detached factors a_ij taken from `frozen` (B·B values,
/// [`circle_factors`]) when given, else computed from this batch's S ([`circle_factor`]).
///
/// l_i = softplus(LN_i + LP_i), LN_i = lse_{j neg}(γ·a_ij·(S_ij − m)),
/// LP_i = lse_{j pos}(−γ·a_ij·(S_ij − (1 − m))). Row i counts when it has at least one positive
/// and one negative ([`combine::reduce_counted`] with the sample weights w). With the a_ij held
/// constant, dl_i/dS_ij = σ(LN_i + LP_i)·softmax_neg(·)_j·γ·a_ij for a negative and
/// σ(LN_i + LP_i)·softmax_pos(·)_j·(−γ·a_ij) for a positive.
#[allow(clippy::too_many_arguments)] // the signature mirrors the term's parameters one to one
pub(crate) fn circle_with_factors(
    circle: &Circle,
    e: &[f64],
    dim: usize,
    relations: &Relations,
    frozen: Option<&[f64]>,
    reduction: Reduction,
    w: &[f64],
) -> (f64, Vec<f64>) {
    let (b, d, m, gamma) = (w.len(), dim, circle.margin, circle.gamma);
    let unit = normalise(e, d);
    // Row i: (j, logit, d logit/d S_ij) of its negatives and of its positives.
    type Terms = Vec<(usize, f64, f64)>;
    let pairs = |i: usize| -> (Terms, Terms) {
        let (mut negatives, mut positives) = (Vec::new(), Vec::new());
        for j in 0..b {
            let relation = relations.of(i, j);
            if relation == Relation::Itself {
                continue;
            }
            let s = dot(row(&unit, d, i), row(&unit, d, j));
            let a = frozen.map_or_else(|| circle_factor(m, relation, s), |f| f[i * b + j]);
            if relation == Relation::Negative {
                negatives.push((j, gamma * a * (s - m), gamma * a));
            } else {
                positives.push((j, -gamma * a * (s - (1.0 - m)), -gamma * a));
            }
        }
        (negatives, positives)
    };
    let logits = |terms: &Terms| terms.iter().map(|t| t.1).collect::<Vec<f64>>();
    let mut counted = vec![false; b];
    let mut loss = vec![0.0; b];
    for i in 0..b {
        let (negatives, positives) = pairs(i);
        if negatives.is_empty() || positives.is_empty() {
            continue;
        }
        counted[i] = true;
        loss[i] = softplus(log_sum_exp(&logits(&negatives)) + log_sum_exp(&logits(&positives)));
    }
    let reduced = combine::reduce_counted(reduction, w, &loss, &counted);
    let mut de = vec![0.0; b * d];
    for i in 0..b {
        let factor = reduced.row_factor[i];
        if factor == 0.0 {
            continue;
        }
        let (negatives, positives) = pairs(i);
        let ln = log_sum_exp(&logits(&negatives));
        let lp = log_sum_exp(&logits(&positives));
        let outer = factor * sigmoid(ln + lp);
        for (terms, lse) in [(&negatives, ln), (&positives, lp)] {
            for &(j, z, slope) in terms {
                let g = outer * (z - lse).exp() * slope;
                add_scaled(&mut de[i * d..(i + 1) * d], g, row(&unit, d, j));
                add_scaled(&mut de[j * d..(j + 1) * d], g, row(&unit, d, i));
            }
        }
    }
    (reduced.value, normalise_backward(e, d, de))
}

/// The parameters of `multi_similarity_loss`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MultiSimilarity {
    /// α (positives).
    pub alpha: f64,
    /// β (negatives).
    pub beta: f64,
    /// λ.
    pub lamb: f64,
    /// With `ms_mining`: ε, the margin of the pair mining (None: every pair counts).
    pub mining: Option<f64>,
}

/// Row i's mining bounds (max over its negatives of S_ik, min over its positives of S_ij), on the
/// clamped S; an empty set gives −∞ (no negative) or +∞ (no positive), so that nothing is mined
/// on the other side (the paper's max and min over an empty set).
fn mining_bounds(unit: &[f64], d: usize, relations: &Relations, i: usize) -> (f64, f64) {
    let rows = unit.len() / d;
    let (mut max_neg, mut min_pos) = (f64::NEG_INFINITY, f64::INFINITY);
    for j in 0..rows {
        let s = dot(row(unit, d, i), row(unit, d, j)).max(0.0);
        match relations.of(i, j) {
            Relation::Itself => {}
            Relation::Positive => min_pos = min_pos.min(s),
            Relation::Negative => max_neg = max_neg.max(s),
        }
    }
    (max_neg, min_pos)
}

/// `multi_similarity_loss`: value and dL/de. S_ij = max(ê_i·ê_j, 0) (dS/dcos = 1 where the
/// cosine is > 0, else 0);
/// l_i = log(1 + Σ_pos e^{−α(S_ij − λ)})/α + log(1 + Σ_neg e^{β(S_ij − λ)})/β, each log(1 + Σ e^x)
/// computed as lse({0} ∪ {x}) (0 for an empty set). Every row counts, with the sample weights w.
/// With mining (Wang et al. 2019, §3.3; EasyRec `ms_mining`), row i's sums run only over the
/// positives with S_ij < max_neg S_ik + ε and the negatives with S_ik > min_pos S_ij − ε
/// ([`mining_bounds`]); the selection is a constant of the step (no gradient through it).
/// dl_i/dS_ij = −softmax_j for a positive and +softmax_j for a negative (softmax over {0} ∪ {x}).
pub(crate) fn multi_similarity(
    ms: &MultiSimilarity,
    e: &[f64],
    dim: usize,
    relations: &Relations,
    reduction: Reduction,
    w: &[f64],
) -> (f64, Vec<f64>) {
    let (b, d) = (w.len(), dim);
    let unit = normalise(e, d);
    // Row i: the exponents x of the positives and of the negatives, each with (j, cos_ij), after
    // the leading 0 of lse({0} ∪ {x}).
    type Exponents = (Vec<f64>, Vec<(usize, f64)>);
    let bounds: Vec<(f64, f64)> = match ms.mining {
        Some(_) => (0..b)
            .map(|i| mining_bounds(&unit, d, relations, i))
            .collect(),
        None => Vec::new(),
    };
    let exponents = |i: usize| -> (Exponents, Exponents) {
        let (mut pos, mut neg): (Exponents, Exponents) =
            ((vec![0.0], Vec::new()), (vec![0.0], Vec::new()));
        let (max_neg, min_pos) = bounds.get(i).copied().unwrap_or((f64::NAN, f64::NAN));
        let eps = ms.mining.unwrap_or(0.0);
        for j in 0..b {
            let cos = dot(row(&unit, d, i), row(&unit, d, j));
            let s = cos.max(0.0);
            match relations.of(i, j) {
                Relation::Itself => {}
                Relation::Positive if ms.mining.is_none() || s < max_neg + eps => {
                    pos.0.push(-ms.alpha * (s - ms.lamb));
                    pos.1.push((j, cos));
                }
                Relation::Negative if ms.mining.is_none() || s > min_pos - eps => {
                    neg.0.push(ms.beta * (s - ms.lamb));
                    neg.1.push((j, cos));
                }
                Relation::Positive | Relation::Negative => {}
            }
        }
        (pos, neg)
    };
    let loss: Vec<f64> = (0..b)
        .map(|i| {
            let (pos, neg) = exponents(i);
            log_sum_exp(&pos.0) / ms.alpha + log_sum_exp(&neg.0) / ms.beta
        })
        .collect();
    let reduced = combine::reduce(reduction, w, w, &loss);
    let mut de = vec![0.0; b * d];
    for i in 0..b {
        let factor = reduced.row_factor[i];
        if factor == 0.0 {
            continue;
        }
        let (pos, neg) = exponents(i);
        for ((x, pairs), sign) in [(pos, -1.0), (neg, 1.0)] {
            let lse = log_sum_exp(&x);
            for (&xj, &(j, cos)) in x[1..].iter().zip(&pairs) {
                if cos <= 0.0 {
                    continue;
                }
                let g = factor * sign * (xj - lse).exp();
                add_scaled(&mut de[i * d..(i + 1) * d], g, row(&unit, d, j));
                add_scaled(&mut de[j * d..(j + 1) * d], g, row(&unit, d, i));
            }
        }
    }
    (reduced.value, normalise_backward(e, d, de))
}

/// `circle_loss` or `multi_similarity_loss`, by the term's parameters.
pub(crate) fn evaluate(term: &LossTerm, batch: &HostBatch) -> Result<TermValue> {
    if let Some(p) = term.kind.params::<CircleParams>() {
        let c = Circle {
            margin: p.margin,
            gamma: p.gamma,
        };
        return metric_term(term, batch, |e, dim, relations, reduction, w| {
            circle(&c, e, dim, relations, reduction, w)
        });
    }
    let p: &MultiSimilarityParams = term
        .kind
        .params()
        .ok_or_else(|| crate::losses::family::wrong_params(term))?;
    let ms = MultiSimilarity {
        alpha: p.alpha,
        beta: p.beta,
        lamb: p.lamb,
        mining: p.ms_mining.then_some(p.eps),
    };
    metric_term(term, batch, |e, dim, relations, reduction, w| {
        multi_similarity(&ms, e, dim, relations, reduction, w)
    })
}

/// `circle_loss` or `multi_similarity_loss` (`loss` is [`circle`] or
/// [`multi_similarity`]): embeddings `[B, d]` (finite), class labels with B rows (finite
/// reals or integers), optional integer session ids with B rows, sample weights.
fn metric_term(
    term: &LossTerm,
    batch: &HostBatch,
    loss: impl Fn(&[f64], usize, &Relations, Reduction, &[f64]) -> (f64, Vec<f64>),
) -> Result<TermValue> {
    let e = embeddings(batch, term, "embeddings", None)?;
    let rows = (e.rows, e.name);
    let relations = Relations {
        labels: class_labels(batch, term, rows)?,
        session: session_ids(batch, term, rows)?,
    };
    let w = sample_weights(batch, term, rows)?;
    let (value, grad) = loss(e.values, e.dim, &relations, term.effective_reduction(), &w);
    Ok(TermValue::plain(value, vec![(e.name.to_string(), grad)]))
}
