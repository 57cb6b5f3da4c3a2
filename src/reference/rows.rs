//! The per-row terms' reference (docs/LOSSES.md, "Per-row terms", "Gradient-density terms",
//! "F1-reweighted"): read and check the term's columns by the meaning of their roles, score each
//! row with the loss type's f64 row function ([`RowLoss::reference`], in [`super::binary`]),
//! reduce ([`super::combine`]), and scale the row derivatives into dL/d(tensor).

use super::combine::{self, scale_rows};
use super::inputs::{binary_labels, bound, is_column, real_column, sample_weights, unit_interval};
use super::terms::TermValue;
use super::{f1, ghm};
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::losses::family::{Role, RoleKind, RowLoss};
use crate::losses::rows::params::ClassificationParams;
use crate::losses::softmax::params::SoftmaxParams;
use crate::losses::statistics::params::F1Params;
use crate::tensor::{HostBatch, HostTensor};

/// Reads the column bound to `role` with the checks its kind asks for; the first role sets B.
fn column(
    term: &LossTerm,
    batch: &HostBatch,
    role: &Role,
    rows: Option<(usize, &str)>,
) -> Result<(String, Vec<f64>)> {
    let (name, t) = bound(batch, term, role.name)?;
    let values = match (role.kind, rows) {
        (RoleKind::BinaryLabels, Some(rows)) => binary_labels(batch, term, role.name, rows)?,
        (RoleKind::Probabilities, _) => {
            let p = real_column(name, &term.name, t, rows)?;
            unit_interval(name, &term.name, p, "probabilities")?;
            p
        }
        _ => real_column(name, &term.name, t, rows)?,
    };
    Ok((name.to_string(), values.to_vec()))
}

/// A per-row term: each role's column (the first sets B), the sample weights, `def`'s row loss
/// and derivatives, reduced with OHEM when `ohem` is `Some(ratio)` (plain mean over the kept
/// rows), else with the term's reduction and ω = w.
pub(crate) fn evaluate(
    term: &LossTerm,
    roles: &[Role],
    def: &RowLoss,
    ohem: Option<f64>,
    batch: &HostBatch,
) -> Result<TermValue> {
    let mut names: Vec<String> = Vec::with_capacity(roles.len());
    let mut columns: Vec<Vec<f64>> = Vec::with_capacity(roles.len());
    for role in roles {
        let rows = names.first().map(|n| (columns[0].len(), n.as_str()));
        let (name, values) = column(term, batch, role, rows)?;
        names.push(name);
        columns.push(values);
    }
    let b = columns[0].len();
    let w = sample_weights(batch, term, (b, &names[0]))?;
    let params = term.kind.raw_params();
    let mut loss = Vec::with_capacity(b);
    let mut grads = vec![Vec::with_capacity(b); def.grads.len()];
    let mut row = vec![0.0; roles.len()];
    for i in 0..b {
        for (x, column) in row.iter_mut().zip(&columns) {
            *x = column[i];
        }
        let (l, g) = (def.reference)(params, &row);
        loss.push(l);
        for (k, grad) in grads.iter_mut().enumerate() {
            grad.push(g[k]);
        }
    }
    let reduced = match ohem {
        Some(ratio) => combine::ohem(ratio, &w, &loss),
        None => combine::reduce(term.effective_reduction(), &w, &w, &loss),
    };
    let grads = def
        .grads
        .iter()
        .zip(grads)
        .map(|((role, _), grad)| {
            let k = roles.iter().position(|r| r.name == *role).expect("a role");
            (names[k].clone(), scale_rows(grad, 1, &reduced))
        })
        .collect();
    Ok(TermValue::plain(reduced.value, grads))
}

/// `classification`: sigmoid CE (`sigmoid`, over `sigmoid_roles`) on one logit per row, softmax
/// CE on [B, C].
pub(crate) fn classification(
    term: &LossTerm,
    batch: &HostBatch,
    p: &ClassificationParams,
    sigmoid: &RowLoss,
    sigmoid_roles: &[Role],
) -> Result<TermValue> {
    let (name, logits) = bound(batch, term, "logits")?;
    if is_column(&logits.shape) {
        reject_softmax_options(term, name, logits, p)?;
        return evaluate(term, sigmoid_roles, sigmoid, None, batch);
    }
    if p.pos_weight.is_some() && logits.shape.len() == 2 {
        return Err(Error::tensor(
            name,
            Some(&term.name),
            format!(
                "pos_weight needs one logit per row ([B] or [B, 1]), got shape {:?} (C ≥ 2 \
                 classes are scored with softmax CE)",
                logits.shape
            ),
        ));
    }
    let softmax: SoftmaxParams = p.softmax();
    super::softmax::evaluate(term, batch, &softmax)
}

/// One logit per row is scored with sigmoid CE, which has no softmax options: refuse them rather
/// than ignore them.
fn reject_softmax_options(
    term: &LossTerm,
    name: &str,
    logits: &HostTensor,
    p: &ClassificationParams,
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

/// `ghm_c` ([`ghm::ghm_c`]) from the term's accumulators before the step (`acc`).
pub(crate) fn ghm(
    term: &LossTerm,
    batch: &HostBatch,
    bins: u32,
    momentum: f64,
    acc: &[f64],
) -> Result<TermValue> {
    let (name, x, y, w) = binary_column(term, batch)?;
    let r = ghm::ghm_c(&x, &y, &w, bins, momentum, acc);
    let mut value = TermValue::plain(r.value, vec![(name, r.grad)]);
    value.ghm_acc = r.acc;
    Ok(value)
}

/// `f1_reweighted_loss` ([`f1::f1_reweighted`]).
pub(crate) fn f1(term: &LossTerm, batch: &HostBatch, p: &F1Params) -> Result<TermValue> {
    let (name, x, y, w) = binary_column(term, batch)?;
    let (value, grad) = f1::f1_reweighted(
        term.effective_reduction(),
        &x,
        &y,
        &w,
        p.f1_beta_square,
        p.label_smoothing,
    );
    Ok(TermValue::plain(value, vec![(name, grad)]))
}
