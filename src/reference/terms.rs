//! Evaluating one configured term on a batch: read and check its tensors, compute every row's loss
//! and derivative ([`super::binary`], [`super::softmax`]), reduce ([`super::combine`]), and scale
//! the row derivatives into dL/d(tensor). Pairwise terms ([`super::pairwise`]) and `jrc_loss`
//! ([`super::jrc`]) reduce over pairs and sessions themselves; so do the retrieval and embedding
//! terms ([`super::retrieval`], [`super::metric`]), whose rows interact.

use super::binary::{self, Focal};
use super::combine::{self, Reduced};
use super::inputs::{
    binary_labels, bound, class_labels, embeddings, finite, id_column, is_column, optional_ids,
    optional_real_column, real_column, real_matrix, sample_weights, session_ids, unit_interval,
    zero_or_one,
};
use super::metric::{self, Relations};
use super::retrieval::{self, Towers, TwoGrads};
use super::softmax::{softmax_ce_row, Target};
use super::{f1, ghm, jrc, pairwise, BankState};
use crate::config::{
    JrcWeighting, LossTerm, PairLoss, Reduction, RetrievalParams, SoftmaxParams, TermKind,
};
use crate::error::{Error, Result};
use crate::tensor::{HostBatch, HostData, HostTensor};

/// One term's value L_k and dL_k/d(tensor) for each tensor bound to a differentiable role
/// (same length as the tensor). A tensor read through two roles appears twice; the caller sums.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TermValue {
    /// The reduced term value L_k.
    pub value: f64,
    /// (tensor name, dL_k/d tensor).
    pub grads: Vec<(String, Vec<f64>)>,
    /// GHM-C momentum accumulators after this step (empty for other terms).
    pub ghm_acc: Vec<f64>,
    /// dL_k/d(u1, u2) of a `jrc_loss` term with uncertainty weighting (0 otherwise).
    pub jrc_du: [f64; 2],
    /// The memory bank of a `cross_batch_softmax` term after this step (None otherwise).
    pub bank: Option<BankState>,
}

impl TermValue {
    /// A term value without state: no GHM-C accumulators, no JRC d/du, no bank.
    fn plain(value: f64, grads: Vec<(String, Vec<f64>)>) -> Self {
        Self {
            value,
            grads,
            ghm_acc: Vec::new(),
            jrc_du: [0.0; 2],
            bank: None,
        }
    }
}

/// What one term reads from the state before the step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TermState<'a> {
    /// Successful steps so far (the seeded shifts of negative mining, the warm-up of
    /// `cross_batch_softmax`).
    pub step: u64,
    /// The term's GHM-C accumulators (empty for other terms).
    pub ghm_acc: &'a [f64],
    /// The learned (u1, u2) of a `jrc_loss` term with uncertainty weighting (unused otherwise).
    pub jrc_u: [f64; 2],
    /// The memory bank of a `cross_batch_softmax` term (None for other terms).
    pub bank: Option<&'a BankState>,
}

/// Evaluates `term` on `batch` from the state `state` before the step, checking every tensor it
/// reads.
pub(crate) fn evaluate(term: &LossTerm, batch: &HostBatch, state: TermState) -> Result<TermValue> {
    let TermState {
        step,
        ghm_acc,
        jrc_u,
        bank,
    } = state;
    match &term.kind {
        TermKind::Classification {
            label_smoothing,
            pos_weight,
            softmax,
        } => {
            let (name, logits) = bound(batch, term, "logits")?;
            if is_column(&logits.shape) {
                reject_softmax_options(term, name, logits, softmax)?;
                let (ls, pw) = (*label_smoothing, *pos_weight);
                column_term(term, batch, "logits", Labels::Binary, None, |x, y| {
                    binary::sigmoid_ce(x, y, ls, pw)
                })
            } else {
                if pos_weight.is_some() && logits.shape.len() == 2 {
                    return Err(Error::tensor(
                        name,
                        Some(&term.name),
                        format!(
                            "pos_weight needs one logit per row ([B] or [B, 1]), got shape {:?} \
                             (C ≥ 2 classes are scored with softmax CE)",
                            logits.shape
                        ),
                    ));
                }
                softmax_term(term, batch, softmax)
            }
        }
        TermKind::SoftmaxCrossEntropy(params) => softmax_term(term, batch, params),
        TermKind::L2 => column_term(term, batch, "predictions", Labels::Any, None, binary::l2),
        TermKind::SigmoidL2 => {
            column_term(term, batch, "logits", Labels::Any, None, binary::sigmoid_l2)
        }
        TermKind::CrossEntropy => {
            let (name, t) = bound(batch, term, "probabilities")?;
            let p = real_column(name, &term.name, t, None)?;
            unit_interval(name, &term.name, p, "probabilities")?;
            column_term(
                term,
                batch,
                "probabilities",
                Labels::Binary,
                None,
                binary::prob_ce,
            )
        }
        TermKind::BinaryFocal {
            gamma,
            alpha,
            ohem_ratio,
            label_smoothing,
        } => {
            let focal = Focal {
                gamma: *gamma,
                alpha: *alpha,
                label_smoothing: *label_smoothing,
            };
            let ohem = (*ohem_ratio < 1.0).then_some(*ohem_ratio);
            column_term(term, batch, "logits", Labels::Binary, ohem, |x, y| {
                binary::focal(x, y, &focal)
            })
        }
        TermKind::Esmm => esmm_term(term, batch),
        TermKind::InBatchSoftmax(params) => retrieval_term(term, batch, params, None),
        TermKind::CrossBatchSoftmax {
            retrieval,
            warmup_steps,
            ..
        } => {
            let bank = bank.ok_or_else(|| {
                Error::State(format!(
                    "term '{}' has no memory bank in the state",
                    term.name
                ))
            })?;
            let used = step >= u64::from(*warmup_steps);
            retrieval_term(term, batch, retrieval, Some((bank, used)))
        }
        TermKind::Contrastive {
            temperature,
            similarity,
            variant,
        } => {
            let a = embeddings(batch, term, "view_a", None)?;
            let b = embeddings(batch, term, "view_b", Some(&a))?;
            let w = sample_weights(batch, term, (a.rows, a.name))?;
            let r = retrieval::contrastive(
                *temperature,
                *similarity,
                *variant,
                a.values,
                b.values,
                a.dim,
                term.effective_reduction(),
                &w,
            );
            Ok(two_tower_value(r, a.name, b.name))
        }
        TermKind::NegativeMining {
            num_negative_samples,
            margin,
            gamma,
            coefficient_of_support_vector,
            seed,
        } => {
            let user = embeddings(batch, term, "user", None)?;
            let item = embeddings(batch, term, "item", Some(&user))?;
            if *num_negative_samples as usize >= user.rows {
                return Err(Error::tensor(
                    user.name,
                    Some(&term.name),
                    format!(
                        "num_negative_samples = {num_negative_samples} must be less than the \
                         batch's B rows, but the shape is [{}, {}] (B = {})",
                        user.rows, user.dim, user.rows
                    ),
                ));
            }
            let rows = (user.rows, user.name);
            let labels = optional_real_column(batch, term, "labels", rows)?;
            let w = sample_weights(batch, term, rows)?;
            let mining = retrieval::Mining {
                margin: *margin,
                gamma: *gamma,
                t: *coefficient_of_support_vector,
            };
            let shifts = retrieval::mining_shifts(*num_negative_samples, *seed, step, user.rows);
            let r = retrieval::negative_mining(
                &mining,
                user.values,
                item.values,
                user.dim,
                labels,
                &shifts,
                term.effective_reduction(),
                &w,
            );
            Ok(two_tower_value(r, user.name, item.name))
        }
        TermKind::Circle { margin, gamma } => {
            let circle = metric::Circle {
                margin: *margin,
                gamma: *gamma,
            };
            metric_term(term, batch, |e, dim, relations, reduction, w| {
                metric::circle(&circle, e, dim, relations, reduction, w)
            })
        }
        TermKind::MultiSimilarity {
            alpha, beta, lamb, ..
        } => {
            let ms = metric::MultiSimilarity {
                alpha: *alpha,
                beta: *beta,
                lamb: *lamb,
            };
            metric_term(term, batch, |e, dim, relations, reduction, w| {
                metric::multi_similarity(&ms, e, dim, relations, reduction, w)
            })
        }
        TermKind::Pairwise {
            loss,
            temperature,
            ohem_ratio,
        } => pairwise_term(term, batch, loss, *temperature, *ohem_ratio),
        TermKind::Jrc {
            alpha,
            same_label_loss,
            weighting,
        } => jrc_term(term, batch, *alpha, *same_label_loss, weighting, jrc_u),
        TermKind::GhmC { bins, momentum } => {
            let (name, x, y, w) = binary_column(term, batch)?;
            let r = ghm::ghm_c(&x, &y, &w, *bins, *momentum, ghm_acc);
            Ok(TermValue {
                value: r.value,
                grads: vec![(name, r.grad)],
                ghm_acc: r.acc,
                jrc_du: [0.0; 2],
                bank: None,
            })
        }
        TermKind::F1Reweighted {
            f1_beta_square,
            label_smoothing,
        } => {
            let (name, x, y, w) = binary_column(term, batch)?;
            let (value, grad) = f1::f1_reweighted(
                term.effective_reduction(),
                &x,
                &y,
                &w,
                *f1_beta_square,
                *label_smoothing,
            );
            Ok(TermValue {
                value,
                grads: vec![(name, grad)],
                ghm_acc: Vec::new(),
                jrc_du: [0.0; 2],
                bank: None,
            })
        }
    }
}

/// Logits, binary labels and sample weights of a one-column term.
type Column = (String, Vec<f64>, Vec<f64>, Vec<f64>);

fn binary_column(term: &LossTerm, batch: &HostBatch) -> Result<Column> {
    let (name, t) = bound(batch, term, "logits")?;
    let x = real_column(name, &term.name, t, None)?;
    let rows = (x.len(), name);
    let y = binary_labels(batch, term, "labels", rows)?;
    let w = sample_weights(batch, term, rows)?;
    Ok((name.to_string(), x.to_vec(), y.to_vec(), w))
}

/// What the `labels` of a one-column term must hold.
#[derive(Clone, Copy, PartialEq)]
enum Labels {
    /// Binary labels: reals in [0, 1].
    Binary,
    /// Any real (regression targets).
    Any,
}

/// A term with one real column `role` and one `labels` column, scored row by row with
/// `row(x, y) = (l, dl/dx)`; reduced with OHEM when `ohem` is `Some(ratio)`, else with the term's
/// reduction and ω = w.
fn column_term(
    term: &LossTerm,
    batch: &HostBatch,
    role: &str,
    labels: Labels,
    ohem: Option<f64>,
    row: impl Fn(f64, f64) -> (f64, f64),
) -> Result<TermValue> {
    let (name, t) = bound(batch, term, role)?;
    let x = real_column(name, &term.name, t, None)?;
    let rows = (x.len(), name);
    let y = match labels {
        Labels::Binary => binary_labels(batch, term, "labels", rows)?,
        Labels::Any => {
            let (label_name, labels) = bound(batch, term, "labels")?;
            real_column(label_name, &term.name, labels, Some(rows))?
        }
    };
    let w = sample_weights(batch, term, rows)?;
    let (loss, grad): (Vec<f64>, Vec<f64>) = x.iter().zip(y).map(|(&x, &y)| row(x, y)).unzip();
    let reduced = match ohem {
        Some(ratio) => combine::ohem(ratio, &w, &loss),
        None => combine::reduce(term.effective_reduction(), &w, &w, &loss),
    };
    Ok(TermValue {
        value: reduced.value,
        grads: vec![(name.to_string(), scale_rows(grad, 1, &reduced))],
        ghm_acc: Vec::new(),
        jrc_du: [0.0; 2],
        bank: None,
    })
}

/// Multiplies each row's derivatives (`width` values per row) by its factor dL/dl_i.
fn scale_rows(mut grad: Vec<f64>, width: usize, reduced: &Reduced) -> Vec<f64> {
    if width > 0 {
        for (row, factor) in grad.chunks_mut(width).zip(&reduced.row_factor) {
            row.iter_mut().for_each(|g| *g *= factor);
        }
    }
    grad
}

/// One logit per row is scored with sigmoid CE, which has no softmax options: refuse them rather
/// than ignore them.
fn reject_softmax_options(
    term: &LossTerm,
    name: &str,
    logits: &HostTensor,
    p: &SoftmaxParams,
) -> Result<()> {
    let mut set = Vec::new();
    if p.temperature != 1.0 {
        set.push("temperature");
    }
    if p.ignore_index.is_some() {
        set.push("ignore_index");
    }
    if p.class_weights.is_some() {
        set.push("class_weights");
    }
    if p.z_loss != 0.0 {
        set.push("z_loss");
    }
    if set.is_empty() {
        return Ok(());
    }
    Err(Error::tensor(
        name,
        Some(&term.name),
        format!(
            "has one logit per row (shape {:?}), scored with sigmoid CE, but the softmax-only \
             option(s) {} are set; they need [B, C] logits with C ≥ 2",
            logits.shape,
            set.join(", ")
        ),
    ))
}

/// Softmax CE over `[B, C]` logits (LOSSES.md, "Softmax cross-entropy") with class-id labels
/// (integers, `[B]`; rows equal to `ignore_index` get w_i = 0, ω_i = c_{y_i}·w_i) or probability
/// labels (reals, `[B, C]`; ω_i = w_i; `ignore_index` has no effect there, as in PyTorch).
fn softmax_term(term: &LossTerm, batch: &HostBatch, params: &SoftmaxParams) -> Result<TermValue> {
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
    Ok(TermValue {
        value: reduced.value,
        grads: vec![(name.to_string(), scale_rows(grad, c, &reduced))],
        ghm_acc: Vec::new(),
        jrc_du: [0.0; 2],
        bank: None,
    })
}

/// ESMM: per row ce(σ(a), click) + ce(σ(a)σ(b), buy), gradients to both logit tensors.
fn esmm_term(term: &LossTerm, batch: &HostBatch) -> Result<TermValue> {
    let (a_name, a_tensor) = bound(batch, term, "ctr_logits")?;
    let a = real_column(a_name, &term.name, a_tensor, None)?;
    let rows = (a.len(), a_name);
    let (b_name, b_tensor) = bound(batch, term, "cvr_logits")?;
    let b = real_column(b_name, &term.name, b_tensor, Some(rows))?;
    let click = binary_labels(batch, term, "ctr_labels", rows)?;
    let buy = binary_labels(batch, term, "ctcvr_labels", rows)?;
    let w = sample_weights(batch, term, rows)?;
    let mut loss = Vec::with_capacity(a.len());
    let mut grad_a = Vec::with_capacity(a.len());
    let mut grad_b = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        let (l, da, db) = binary::esmm(a[i], b[i], click[i], buy[i]);
        loss.push(l);
        grad_a.push(da);
        grad_b.push(db);
    }
    let reduced = combine::reduce(term.effective_reduction(), &w, &w, &loss);
    Ok(TermValue {
        value: reduced.value,
        grads: vec![
            (a_name.to_string(), scale_rows(grad_a, 1, &reduced)),
            (b_name.to_string(), scale_rows(grad_b, 1, &reduced)),
        ],
        ghm_acc: Vec::new(),
        jrc_du: [0.0; 2],
        bank: None,
    })
}

/// A pairwise-in-session term (LOSSES.md, "Pairwise-in-session terms"; [`pairwise::pairwise`]):
/// finite logits `[B]` or `[B, 1]`, finite graded labels (any reals) with B rows, optional integer
/// session ids with B rows, sample weights.
fn pairwise_term(
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
    let (value, grad) = pairwise::pairwise(
        loss,
        temperature,
        ohem_ratio,
        term.effective_reduction(),
        x,
        y,
        &w,
        session,
    );
    Ok(TermValue {
        value,
        grads: vec![(name.to_string(), grad)],
        ghm_acc: Vec::new(),
        jrc_du: [0.0; 2],
        bank: None,
    })
}

/// `jrc_loss` (LOSSES.md, "jrc_loss"; [`jrc::jrc`]): finite logits `[B, 2]`, labels exactly 0 or
/// 1 with B rows, integer session ids with B rows, sample weights (for ce only). Combines the
/// parts as
/// - `fixed`: L = α·ce + (1 − α)·ge;
/// - `uncertainty` with the learned (u1, u2): L = e^{−u1}·ce + 0.5·u1 + e^{−u2}·ge + 0.5·u2,
///   dL/du1 = −e^{−u1}·ce + 0.5, dL/du2 = −e^{−u2}·ge + 0.5 (returned in `jrc_du`).
fn jrc_term(
    term: &LossTerm,
    batch: &HostBatch,
    alpha: f64,
    same_label_loss: bool,
    weighting: &JrcWeighting,
    u: [f64; 2],
) -> Result<TermValue> {
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
    let parts = jrc::jrc(
        z,
        y,
        session,
        &w,
        term.effective_reduction(),
        same_label_loss,
    );
    let (a_ce, a_ge, value, jrc_du) = match weighting {
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
    Ok(TermValue {
        value,
        grads: vec![(name.to_string(), grad)],
        ghm_acc: Vec::new(),
        jrc_du,
        bank: None,
    })
}

/// The term value of a loss over two embedding tensors, with their gradients.
fn two_tower_value(r: TwoGrads, first: &str, second: &str) -> TermValue {
    TermValue::plain(
        r.value,
        vec![(first.to_string(), r.first), (second.to_string(), r.second)],
    )
}

/// `in_batch_softmax`, or `cross_batch_softmax` with `bank` = (its bank before the step, whether
/// the bank is used this step) ([`retrieval::sampled_softmax`]): user and item `[B, d]` (finite,
/// the same shape), optional integer item ids and finite log_q with B rows, sample weights.
/// remove_accidental_hits needs `item_ids` (a config built in code may lack it). The bank's
/// embeddings must have d values. The bank after the step (the batch written at the head, also
/// during warm-up) goes into the term value.
fn retrieval_term(
    term: &LossTerm,
    batch: &HostBatch,
    params: &RetrievalParams,
    bank: Option<(&BankState, bool)>,
) -> Result<TermValue> {
    let user = embeddings(batch, term, "user", None)?;
    let item = embeddings(batch, term, "item", Some(&user))?;
    let rows = (user.rows, user.name);
    let item_ids = optional_ids(batch, term, "item_ids", rows, "item ids")?;
    if params.remove_accidental_hits && item_ids.is_none() {
        return Err(Error::term(
            &term.name,
            "remove_accidental_hits needs the 'item_ids' role (the ids to compare)",
        ));
    }
    let log_q = optional_real_column(batch, term, "log_q", rows)?;
    let w = sample_weights(batch, term, rows)?;
    if let Some(dim) = bank
        .and_then(|(b, _)| b.rows().next())
        .map(|r| r.embedding.len())
    {
        if dim != item.dim {
            return Err(Error::tensor(
                item.name,
                Some(&term.name),
                format!(
                    "has shape [{}, {}] but the memory bank holds embeddings of d = {dim} from \
                     earlier steps",
                    item.rows, item.dim
                ),
            ));
        }
    }
    let towers = Towers {
        user: user.values,
        item: item.values,
        rows: user.rows,
        dim: user.dim,
        item_ids,
        log_q,
    };
    let negatives: Vec<_> = match bank {
        Some((bank, true)) => bank.rows().collect(),
        _ => Vec::new(),
    };
    let r = retrieval::sampled_softmax(params, &towers, &negatives, term.effective_reduction(), &w);
    let mut value = two_tower_value(r, user.name, item.name);
    value.bank = bank.map(|(bank, _)| retrieval::write_bank(bank, params.similarity, &towers));
    Ok(value)
}

/// `circle_loss` or `multi_similarity_loss` (`loss` is [`metric::circle`] or
/// [`metric::multi_similarity`]): embeddings `[B, d]` (finite), class labels with B rows (finite
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
