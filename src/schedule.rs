//! The scheduler: resolves every term through its family (its form and rows, checked against the
//! shapes) and groups terms into passes so that terms reading the same rows share one pass over
//! them.
//!
//! Groups: all per-row terms over the same B rows form one row group (one forward and one
//! backward pass over their tensors, however many terms); softmax terms form one group per
//! logits tensor; session terms one group per (B, session tensor); every embedding term is a
//! group of its own. A group splits only when its bindings would exceed the adapter's
//! storage-buffer limit.

use crate::batch::Shapes;
use crate::config::{LossConfig, LossTerm, Reduction};
use crate::error::{Error, Result};
use crate::losses::family::{Form, Resolved};
use crate::losses::{registry, shapes};

/// A term resolved against the shapes: its family decides its form and rows.
pub(crate) fn resolve(slot: usize, term: &LossTerm, shapes: &Shapes) -> Result<Resolved> {
    let loss_type = registry::lookup(term.kind.loss_type()).ok_or_else(|| {
        Error::term(
            &term.name,
            format!("unknown loss_type '{}'", term.kind.loss_type()),
        )
    })?;
    let (form, rows) = loss_type.family.resolve(loss_type, term, shapes)?;
    let weights = shapes::sample_weights(term, shapes, rows)?;
    Ok(Resolved {
        slot,
        term: term.clone(),
        loss_type,
        form,
        rows,
        weights,
    })
}

impl Resolved {
    /// Whether the term needs a batch-wide quantity (histogram, top-k threshold, Σσ) before any
    /// row's loss: its group then runs a statistics pass first.
    pub(crate) fn needs_statistics(&self) -> bool {
        matches!(&self.form, Form::Row(r) if r.batch_wide().is_some())
    }

    /// The reduction's denominator when it does not depend on the batch's values: `sum` (1),
    /// `mean` (B), and the weighted forms without sample weights (every w_i = 1, so B). Only row
    /// terms have one: softmax terms' ignore_index and class weights make theirs data-dependent,
    /// and the session and embedding terms' counts come from their passes.
    ///
    /// Terms that need statistics have their normaliser folded into a per-row factor computed
    /// before their loss pass (GHM-C's β/tot, OHEM's 1/count, F1's 1/D), so their partials are
    /// already the value: denominator 1.
    pub(crate) fn static_denominator(&self) -> Option<f64> {
        if !matches!(self.form, Form::Row(_)) {
            return None;
        }
        if self.needs_statistics() {
            return Some(1.0);
        }
        match self.reduction() {
            Reduction::Sum => Some(1.0),
            Reduction::Mean => Some(self.rows as f64),
            Reduction::NonzeroMean | Reduction::WeightedMean if self.weights.is_empty() => {
                Some(self.rows as f64)
            }
            _ => None,
        }
    }
}

/// A set of terms evaluated by shared passes.
#[derive(Clone, Debug)]
pub(crate) enum Group {
    Rows {
        rows: u64,
        terms: Vec<Resolved>,
    },
    Softmax {
        logits: String,
        terms: Vec<Resolved>,
    },
    /// Terms over the same rows grouped by the same session tensor (or none): the grouping is
    /// computed once for all of them.
    Sessions {
        rows: u64,
        session: Option<String>,
        terms: Vec<Resolved>,
    },
    /// One embedding term: its passes are its own.
    Embedding {
        terms: Vec<Resolved>,
    },
}

/// Resolves every term and groups them into passes.
pub(crate) fn schedule(config: &LossConfig, shapes: &Shapes) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    for (slot, term) in config.losses.iter().enumerate() {
        let r = resolve(slot, term, shapes)?;
        match &r.form {
            Form::Softmax(_) => {
                let logits = r.input("logits").to_string();
                match groups
                    .iter_mut()
                    .find(|g| matches!(g, Group::Softmax { logits: l, .. } if *l == logits))
                {
                    Some(Group::Softmax { terms, .. }) => terms.push(r),
                    _ => groups.push(Group::Softmax {
                        logits,
                        terms: vec![r],
                    }),
                }
            }
            Form::Session(_) => {
                let session = r.term.input("session").map(str::to_string);
                let rows = r.rows;
                match groups.iter_mut().find(|g| {
                    matches!(g, Group::Sessions { rows: b, session: s, .. } if *b == rows && *s == session)
                }) {
                    Some(Group::Sessions { terms, .. }) => terms.push(r),
                    _ => groups.push(Group::Sessions {
                        rows,
                        session,
                        terms: vec![r],
                    }),
                }
            }
            Form::Embedding { .. } => groups.push(Group::Embedding { terms: vec![r] }),
            Form::Row(_) => {
                let rows = r.rows;
                match groups
                    .iter_mut()
                    .find(|g| matches!(g, Group::Rows { rows: b, .. } if *b == rows))
                {
                    Some(Group::Rows { terms, .. }) => terms.push(r),
                    _ => groups.push(Group::Rows {
                        rows,
                        terms: vec![r],
                    }),
                }
            }
        }
    }
    Ok(groups)
}

impl Group {
    pub(crate) fn terms(&self) -> &[Resolved] {
        match self {
            Group::Rows { terms, .. }
            | Group::Softmax { terms, .. }
            | Group::Sessions { terms, .. }
            | Group::Embedding { terms } => terms,
        }
    }

    /// Splits the group into groups whose passes bind at most `max_storage` storage buffers;
    /// `count` gives the storage buffers a candidate group needs.
    pub(crate) fn split(
        self,
        max_storage: u32,
        count: impl Fn(&Group) -> u32,
    ) -> Result<Vec<Group>> {
        if count(&self) <= max_storage {
            return Ok(vec![self]);
        }
        let make = |terms: Vec<Resolved>| match &self {
            Group::Rows { rows, .. } => Group::Rows { rows: *rows, terms },
            Group::Softmax { logits, .. } => Group::Softmax {
                logits: logits.clone(),
                terms,
            },
            Group::Sessions { rows, session, .. } => Group::Sessions {
                rows: *rows,
                session: session.clone(),
                terms,
            },
            Group::Embedding { .. } => Group::Embedding { terms },
        };
        let mut out = Vec::new();
        let mut current: Vec<Resolved> = Vec::new();
        for t in self.terms().iter().cloned() {
            let mut candidate = current.clone();
            candidate.push(t.clone());
            if count(&make(candidate.clone())) <= max_storage {
                current = candidate;
                continue;
            }
            if current.is_empty() {
                return Err(Error::Unsupported(format!(
                    "term '{}' alone needs more storage bindings than the adapter's {max_storage}",
                    t.term.name
                )));
            }
            out.push(make(std::mem::take(&mut current)));
            current.push(t);
        }
        if !current.is_empty() {
            out.push(make(current));
        }
        Ok(out)
    }
}
