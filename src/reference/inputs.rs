//! Reading a term's input tensors from a batch and checking them.
//!
//! Every check failure is an [`Error::Tensor`] that names the tensor, the term that reads it, and
//! what was expected against what was found, so that a trainer's log line is enough to fix the
//! input. Nothing here computes a loss.

use crate::config::{LossTerm, NonFinite, SampleWeights};
use crate::error::{Error, Result};
use crate::losses::family::LossType;
use crate::tensor::{HostBatch, HostData, HostTensor};

/// The tensor bound to `role` of `term`, with its name.
///
/// Fails with [`Error::Term`] when the role is not bound (a config built in code without it) and
/// with [`Error::Tensor`] when the batch has no tensor of that name.
pub(crate) fn bound<'a>(
    batch: &'a HostBatch,
    term: &'a LossTerm,
    role: &str,
) -> Result<(&'a str, &'a HostTensor)> {
    let name = term.input(role).ok_or_else(|| {
        Error::term(
            &term.name,
            format!(
                "role '{role}' is not bound to a tensor (loss_type '{}')",
                term.kind.loss_type()
            ),
        )
    })?;
    let tensor = batch.get(name).ok_or_else(|| {
        Error::tensor(
            name,
            Some(&term.name),
            format!("missing from the batch (bound to role '{role}')"),
        )
    })?;
    check_len(name, &term.name, tensor)?;
    Ok((name, tensor))
}

/// Checks that a tensor holds as many values as its shape says.
fn check_len(name: &str, term: &str, t: &HostTensor) -> Result<()> {
    let want: usize = t.shape.iter().product();
    if t.len() != want {
        return Err(Error::tensor(
            name,
            Some(term),
            format!(
                "holds {} values but its shape {:?} needs {want}",
                t.len(),
                t.shape
            ),
        ));
    }
    Ok(())
}

/// Whether a shape is a per-row column: `[B]` or `[B, 1]`.
pub(crate) fn is_column(shape: &[usize]) -> bool {
    shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)
}

/// Checks that `t` is a per-row column (`[B]` or `[B, 1]`) with `rows` rows when given, and
/// returns its row count.
fn column_rows(
    name: &str,
    term: &str,
    t: &HostTensor,
    rows: Option<(usize, &str)>,
) -> Result<usize> {
    let ok = is_column(&t.shape) && rows.is_none_or(|(b, _)| t.shape[0] == b);
    if !ok {
        let expected = match rows {
            Some((b, from)) => format!("[{b}] or [{b}, 1] (B = {b} rows, from '{from}')"),
            None => "[B] or [B, 1]".to_string(),
        };
        return Err(Error::tensor(
            name,
            Some(term),
            format!("expected shape {expected}, got {:?}", t.shape),
        ));
    }
    Ok(t.shape[0])
}

/// The real values of a per-row column (`[B]` or `[B, 1]`).
///
/// `rows` is `(B, tensor that fixed B)`; `None` lets this tensor fix B.
pub(crate) fn real_column<'a>(
    name: &str,
    term: &str,
    t: &'a HostTensor,
    rows: Option<(usize, &str)>,
) -> Result<&'a [f64]> {
    let values = t.reals(name, Some(term))?;
    column_rows(name, term, t, rows)?;
    Ok(values)
}

/// The integer ids of a per-row column (`[B]` or `[B, 1]`) with `rows.0` rows; `what` names them
/// in the error ("class ids", "session ids").
pub(crate) fn id_column<'a>(
    name: &str,
    term: &str,
    t: &'a HostTensor,
    rows: (usize, &str),
    what: &str,
) -> Result<&'a [i64]> {
    let HostData::Int(ids) = &t.data else {
        return Err(Error::tensor(
            name,
            Some(term),
            format!("expected integer {what} (I32/I64), got reals"),
        ));
    };
    column_rows(name, term, t, Some(rows))?;
    Ok(ids)
}

/// The session ids of a term with `rows.0` rows: `None` when its optional `session` role is not
/// bound, else the integer ids of the bound tensor (`[B]` or `[B, 1]`; reals are refused).
pub(crate) fn session_ids<'a>(
    batch: &'a HostBatch,
    term: &'a LossTerm,
    rows: (usize, &str),
) -> Result<Option<&'a [i64]>> {
    if term.input("session").is_none() {
        return Ok(None);
    }
    let (name, t) = bound(batch, term, "session")?;
    id_column(name, &term.name, t, rows, "session ids").map(Some)
}

/// The real values of a `[B, cols]` matrix (row-major) and its row count B; `what` says what the
/// tensor holds, for the error.
pub(crate) fn real_matrix<'a>(
    name: &str,
    term: &str,
    t: &'a HostTensor,
    cols: usize,
    what: &str,
) -> Result<(&'a [f64], usize)> {
    let values = t.reals(name, Some(term))?;
    if t.shape.len() != 2 || t.shape[1] != cols {
        return Err(Error::tensor(
            name,
            Some(term),
            format!("expected {what} of shape [B, {cols}], got {:?}", t.shape),
        ));
    }
    Ok((values, t.shape[0]))
}

/// Checks that every value is finite (no NaN, no ±∞); `what` names the values in the error.
pub(crate) fn finite(name: &str, term: &str, values: &[f64], what: &str) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::tensor(
            name,
            Some(term),
            format!("{what} must be finite; value {i} is {v}"),
        ));
    }
    Ok(())
}

/// Checks the values of every real tensor `term` reads, before anything is computed: each must
/// be finite (unless `mode` propagates and the loss type tolerates it), and sample weights must
/// be ≥ 0. Integer tensors and missing ones are left to the term's own reading.
pub(crate) fn check_values(
    term: &LossTerm,
    loss_type: &LossType,
    batch: &HostBatch,
    mode: NonFinite,
) -> Result<()> {
    let strict = mode == NonFinite::Error || loss_type.refuses_nonfinite();
    let reals = |name: &str| match batch.get(name).map(|t| (&t.data, &t.shape)) {
        Some((HostData::Real(v), shape)) => Some((v.as_slice(), shape.clone())),
        _ => None,
    };
    if strict {
        for role in loss_type.roles {
            let Some(name) = term.input(role.name) else {
                continue;
            };
            if let Some((v, shape)) = reals(name) {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::tensor(
                        name,
                        Some(&term.name),
                        format!(
                            "values must be finite; element {i} of shape {shape:?} holds {}",
                            v[i]
                        ),
                    ));
                }
            }
        }
    }
    for (name, _) in term.sample_weights.iter().flat_map(|w| w.parts()) {
        // A tensor of the wrong shape is the term's reading to refuse, first.
        let Some((v, _)) = reals(&name).filter(|(_, shape)| is_column(shape)) else {
            continue;
        };
        let bad = |x: &f64| *x < 0.0 || x.is_infinite() || (strict && x.is_nan());
        if let Some(i) = v.iter().position(bad) {
            return Err(Error::tensor(
                &name,
                Some(&term.name),
                format!(
                    "sample weights must be finite and >= 0; row {i} holds {}",
                    v[i]
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that every label is exactly 0 or 1 (`jrc_loss`).
pub(crate) fn zero_or_one(name: &str, term: &str, values: &[f64]) -> Result<()> {
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| **v != 0.0 && **v != 1.0)
    {
        return Err(Error::tensor(
            name,
            Some(term),
            format!("labels must be exactly 0 or 1; row {i} holds {v}"),
        ));
    }
    Ok(())
}

/// Checks that every value lies in [0, 1] (binary labels, probabilities). NaN is left to
/// [`check_values`] (refused before, or propagated with `nonfinite = "propagate"`).
pub(crate) fn unit_interval(name: &str, term: &str, values: &[f64], what: &str) -> Result<()> {
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_nan() && !(0.0..=1.0).contains(*v))
    {
        return Err(Error::tensor(
            name,
            Some(term),
            format!("{what} must lie in [0, 1]; row {i} holds {v}"),
        ));
    }
    Ok(())
}

/// The binary labels bound to `role`: reals in [0, 1], one per row.
pub(crate) fn binary_labels<'a>(
    batch: &'a HostBatch,
    term: &'a LossTerm,
    role: &str,
    rows: (usize, &str),
) -> Result<&'a [f64]> {
    let (name, t) = bound(batch, term, role)?;
    let y = real_column(name, &term.name, t, Some(rows))?;
    unit_interval(name, &term.name, y, "binary labels")?;
    Ok(y)
}

/// The per-row sample weights w_i of a term (docs/LOSSES.md, "Reduction"): 1 without `sample_weights`,
/// the tensor's values for a tensor, Σ coefficient·tensor_i for a combination.
pub(crate) fn sample_weights(
    batch: &HostBatch,
    term: &LossTerm,
    rows: (usize, &str),
) -> Result<Vec<f64>> {
    let Some(spec) = &term.sample_weights else {
        return Ok(vec![1.0; rows.0]);
    };
    let mut w = vec![0.0; rows.0];
    let parts = match spec {
        SampleWeights::Tensor(name) => vec![(name.clone(), 1.0)],
        SampleWeights::Combination(parts) => parts.clone(),
    };
    for (name, coefficient) in &parts {
        let t = batch.get(name).ok_or_else(|| {
            Error::tensor(
                name,
                Some(&term.name),
                "missing from the batch (named by sample_weights)",
            )
        })?;
        check_len(name, &term.name, t)?;
        let values = real_column(name, &term.name, t, Some(rows))?;
        for (wi, v) in w.iter_mut().zip(values) {
            *wi += coefficient * v;
        }
    }
    Ok(w)
}

/// A `[B, d]` embedding tensor: its name, row-major values, B and d.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Embeddings<'a> {
    /// The tensor's name.
    pub name: &'a str,
    /// B·d finite values, row-major.
    pub values: &'a [f64],
    /// B.
    pub rows: usize,
    /// d.
    pub dim: usize,
}

/// The embeddings bound to `role`: reals of shape `[B, d]` with B ≥ 1 and d ≥ 1, every value
/// finite. With `like` (embeddings read before) the shape must be exactly `like`'s `[B, d]`.
pub(crate) fn embeddings<'a>(
    batch: &'a HostBatch,
    term: &'a LossTerm,
    role: &str,
    like: Option<&Embeddings>,
) -> Result<Embeddings<'a>> {
    let (name, t) = bound(batch, term, role)?;
    let values = t.reals(name, Some(&term.name))?;
    let ok = match like {
        Some(e) => t.shape == [e.rows, e.dim],
        None => t.shape.len() == 2 && t.shape[0] >= 1 && t.shape[1] >= 1,
    };
    if !ok {
        let expected = match like {
            Some(e) => format!(
                "[{}, {}] (B = {} rows and d = {} from '{}')",
                e.rows, e.dim, e.rows, e.dim, e.name
            ),
            None => "[B, d] with B ≥ 1 and d ≥ 1".to_string(),
        };
        return Err(Error::tensor(
            name,
            Some(&term.name),
            format!("expected embeddings of shape {expected}, got {:?}", t.shape),
        ));
    }
    finite(name, &term.name, values, "embeddings")?;
    Ok(Embeddings {
        name,
        values,
        rows: t.shape[0],
        dim: t.shape[1],
    })
}

/// The optional per-row real column bound to `role` (`log_q`, `labels` of negative mining):
/// `None` when the role is not bound, else finite reals `[B]` or `[B, 1]` with `rows.0` rows.
pub(crate) fn optional_real_column<'a>(
    batch: &'a HostBatch,
    term: &'a LossTerm,
    role: &str,
    rows: (usize, &str),
) -> Result<Option<&'a [f64]>> {
    if term.input(role).is_none() {
        return Ok(None);
    }
    let (name, t) = bound(batch, term, role)?;
    let values = real_column(name, &term.name, t, Some(rows))?;
    finite(name, &term.name, values, role)?;
    Ok(Some(values))
}

/// The optional integer ids bound to `role` (`item_ids`): `None` when the role is not bound,
/// else integers `[B]` or `[B, 1]` with `rows.0` rows (reals are refused).
pub(crate) fn optional_ids<'a>(
    batch: &'a HostBatch,
    term: &'a LossTerm,
    role: &str,
    rows: (usize, &str),
    what: &str,
) -> Result<Option<&'a [i64]>> {
    if term.input(role).is_none() {
        return Ok(None);
    }
    let (name, t) = bound(batch, term, role)?;
    id_column(name, &term.name, t, rows, what).map(Some)
}

/// Class labels of `circle_loss` and `multi_similarity_loss`: reals or integers, compared for
/// exact equality.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ClassLabels<'a> {
    /// Finite reals.
    Real(&'a [f64]),
    /// Integer ids.
    Int(&'a [i64]),
}

impl ClassLabels<'_> {
    /// Whether rows i and j have the same label.
    pub fn same(&self, i: usize, j: usize) -> bool {
        match self {
            Self::Real(y) => y[i] == y[j],
            Self::Int(y) => y[i] == y[j],
        }
    }
}

/// The class labels bound to `labels`: finite reals or integers, `[B]` or `[B, 1]` with `rows.0`
/// rows.
pub(crate) fn class_labels<'a>(
    batch: &'a HostBatch,
    term: &'a LossTerm,
    rows: (usize, &str),
) -> Result<ClassLabels<'a>> {
    let (name, t) = bound(batch, term, "labels")?;
    match &t.data {
        HostData::Int(_) => id_column(name, &term.name, t, rows, "labels").map(ClassLabels::Int),
        HostData::Real(_) => {
            let y = real_column(name, &term.name, t, Some(rows))?;
            finite(name, &term.name, y, "labels")?;
            Ok(ClassLabels::Real(y))
        }
    }
}
