//! The scheduler: checks every term's inputs against the shapes, decides each term's form
//! (sigmoid CE or softmax CE for `classification`, ...), and groups terms into passes so that
//! terms reading the same rows share one pass over them.
//!
//! Groups: all per-row terms over the same B rows form one row group (one forward and one
//! backward pass over their tensors, however many terms); softmax terms form one group per
//! logits tensor. A group splits only when its bindings would exceed the adapter's storage-buffer
//! limit.

use crate::batch::{DType, Shapes, TensorSpec};
use crate::config::{
    JrcWeighting, LossConfig, LossTerm, PairLoss, Reduction, SampleWeights, SoftmaxParams, TermKind,
};
use crate::error::{Error, Result};

/// What a term computes once its shapes are known.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Form {
    /// Sigmoid CE with binary label smoothing and optional pos_weight.
    Sigmoid {
        label_smoothing: f64,
        pos_weight: Option<f64>,
    },
    L2,
    SigmoidL2,
    ProbCe,
    Focal {
        gamma: f64,
        alpha: Option<f64>,
        label_smoothing: f64,
        /// OHEM keep ratio when < 1: the term keeps the k largest row values (`select`).
        ohem: Option<f64>,
    },
    Esmm,
    /// GHM-C: needs the histogram of g before its loss (`ghm`).
    Ghm {
        bins: u32,
        momentum: f64,
    },
    /// F1-reweighted sigmoid CE: needs Σσ(x) and the class sums before its loss.
    F1 {
        beta_square: f64,
        label_smoothing: f64,
    },
    /// A pairwise-in-session term; `ohem` is the keep ratio over pairs when < 1.
    Pair {
        loss: PairLoss,
        temperature: f64,
        ohem: Option<f64>,
    },
    /// `jrc_loss` over logits [B, 2].
    Jrc {
        alpha: f64,
        same_label_loss: bool,
        weighting: JrcWeighting,
    },
    /// A retrieval, contrastive, metric or mining term over embeddings of dimension `dim`; its
    /// parameters are the term's `TermKind`.
    Embedding {
        dim: u64,
    },
    /// Softmax CE over `classes` columns; `ids` when the labels are class ids (else probabilities).
    Softmax {
        params: SoftmaxParams,
        classes: u64,
        ids: bool,
    },
}

/// A term with its form, rows and the tensors its roles name.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    /// Index in the config: the term's slot in the scalars block.
    pub slot: usize,
    pub term: LossTerm,
    pub form: Form,
    pub rows: u64,
    /// (tensor, coefficient) making up the sample weight; empty means 1.
    pub weights: Vec<(String, f64)>,
}

impl Form {
    /// Whether the term needs a batch-wide quantity (histogram, top-k threshold, Σσ) before any
    /// row's loss: its group then runs a statistics pass first.
    pub(crate) fn needs_statistics(&self) -> bool {
        matches!(
            self,
            Form::Ghm { .. } | Form::F1 { .. } | Form::Focal { ohem: Some(_), .. }
        )
    }
}

impl Resolved {
    pub(crate) fn input(&self, role: &str) -> &str {
        self.term.input(role).expect("role checked at resolve time")
    }

    /// The reduction's denominator when it does not depend on the batch's values: `sum` (1),
    /// `mean` (B), and the weighted forms without sample weights (every w_i = 1, so B). Softmax
    /// terms are left out: ignore_index and class weights make theirs data-dependent, and their
    /// gradient needs the row's lse from a first pass anyway.
    ///
    /// Terms that need statistics have their normaliser folded into a per-row factor computed
    /// before their loss pass (GHM-C's β/tot, OHEM's 1/count, F1's 1/D), so their partials are
    /// already the value: denominator 1.
    pub(crate) fn static_denominator(&self) -> Option<f64> {
        if matches!(
            self.form,
            Form::Softmax { .. } | Form::Pair { .. } | Form::Jrc { .. } | Form::Embedding { .. }
        ) {
            return None;
        }
        if self.form.needs_statistics() {
            return Some(1.0);
        }
        match self.term.effective_reduction() {
            Reduction::Sum => Some(1.0),
            Reduction::Mean => Some(self.rows as f64),
            Reduction::NonzeroMean | Reduction::WeightedMean if self.weights.is_empty() => {
                Some(self.rows as f64)
            }
            _ => None,
        }
    }
}

/// A set of terms evaluated by one forward and one backward pass.
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
    /// Pairwise and JRC terms over the same rows grouped by the same session tensor (or none):
    /// the grouping is computed once for all of them.
    Sessions {
        rows: u64,
        session: Option<String>,
        terms: Vec<Resolved>,
    },
    /// One retrieval, contrastive, metric or mining term: its passes are its own.
    Embedding {
        terms: Vec<Resolved>,
    },
}

fn rows_of(spec: &TensorSpec) -> Option<u64> {
    match spec.shape.as_slice() {
        [b] => Some(*b as u64),
        [b, 1] => Some(*b as u64),
        _ => None,
    }
}

fn spec<'a>(
    shapes: &'a Shapes,
    term: &LossTerm,
    tensor: &str,
    role: &str,
) -> Result<&'a TensorSpec> {
    shapes.get(tensor).ok_or_else(|| {
        Error::tensor(
            tensor,
            Some(&term.name),
            format!("role '{role}' names a tensor that is not in the batch"),
        )
    })
}

fn expect_vector(
    shapes: &Shapes,
    term: &LossTerm,
    tensor: &str,
    role: &str,
    rows: Option<u64>,
    dtype_ok: &[DType],
) -> Result<u64> {
    let s = spec(shapes, term, tensor, role)?;
    let b = rows_of(s).ok_or_else(|| {
        Error::tensor(
            tensor,
            Some(&term.name),
            format!(
                "role '{role}' expects shape [B] or [B, 1], got {:?}",
                s.shape
            ),
        )
    })?;
    if !dtype_ok.contains(&s.dtype) {
        return Err(Error::tensor(
            tensor,
            Some(&term.name),
            format!(
                "role '{role}' expects {}, got {}",
                dtype_ok
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
                s.dtype.name()
            ),
        ));
    }
    if let Some(rows) = rows {
        if b != rows {
            return Err(Error::tensor(
                tensor,
                Some(&term.name),
                format!(
                    "role '{role}' has {b} rows, expected {rows} (shape {:?})",
                    s.shape
                ),
            ));
        }
    }
    if b == 0 {
        return Err(Error::tensor(
            tensor,
            Some(&term.name),
            "the batch has no rows",
        ));
    }
    Ok(b)
}

fn resolve(slot: usize, term: &LossTerm, shapes: &Shapes) -> Result<Resolved> {
    let input = |role: &str| {
        term.input(role)
            .expect("required roles are checked by the config")
    };
    let softmax_options = |p: &SoftmaxParams| {
        p.temperature != 1.0
            || p.ignore_index.is_some()
            || p.class_weights.is_some()
            || p.z_loss != 0.0
    };
    let (form, rows) = match &term.kind {
        TermKind::Classification {
            label_smoothing,
            pos_weight,
            softmax,
        } => {
            let logits = spec(shapes, term, input("logits"), "logits")?;
            if rows_of(logits).is_some() {
                if softmax_options(softmax) {
                    return Err(Error::term(
                        &term.name,
                        "temperature, ignore_index, class_weights and z_loss apply to softmax \
                         classification (logits [B, C], C >= 2); these logits have one column",
                    ));
                }
                let b =
                    expect_vector(shapes, term, input("logits"), "logits", None, &[DType::F32])?;
                (
                    Form::Sigmoid {
                        label_smoothing: *label_smoothing,
                        pos_weight: *pos_weight,
                    },
                    b,
                )
            } else {
                if pos_weight.is_some() {
                    return Err(Error::term(
                        &term.name,
                        format!(
                            "pos_weight applies to one logit per row; logits '{}' have shape {:?}",
                            input("logits"),
                            logits.shape
                        ),
                    ));
                }
                resolve_softmax(term, shapes, softmax)?
            }
        }
        TermKind::SoftmaxCrossEntropy(p) => resolve_softmax(term, shapes, p)?,
        TermKind::L2
        | TermKind::SigmoidL2
        | TermKind::CrossEntropy
        | TermKind::BinaryFocal { .. }
        | TermKind::GhmC { .. }
        | TermKind::F1Reweighted { .. } => {
            let primary = term.kind.differentiable_roles()[0];
            let b = expect_vector(shapes, term, input(primary), primary, None, &[DType::F32])?;
            let form = match &term.kind {
                TermKind::L2 => Form::L2,
                TermKind::SigmoidL2 => Form::SigmoidL2,
                TermKind::CrossEntropy => Form::ProbCe,
                TermKind::BinaryFocal {
                    gamma,
                    alpha,
                    ohem_ratio,
                    label_smoothing,
                } => Form::Focal {
                    gamma: *gamma,
                    alpha: *alpha,
                    label_smoothing: *label_smoothing,
                    ohem: (*ohem_ratio < 1.0).then_some(*ohem_ratio),
                },
                TermKind::GhmC { bins, momentum } => Form::Ghm {
                    bins: *bins,
                    momentum: *momentum,
                },
                TermKind::F1Reweighted {
                    f1_beta_square,
                    label_smoothing,
                } => Form::F1 {
                    beta_square: *f1_beta_square,
                    label_smoothing: *label_smoothing,
                },
                _ => unreachable!(),
            };
            (form, b)
        }
        TermKind::Pairwise {
            loss,
            temperature,
            ohem_ratio,
        } => {
            let b = expect_vector(shapes, term, input("logits"), "logits", None, &[DType::F32])?;
            let ohem = (*ohem_ratio < 1.0).then_some(*ohem_ratio);
            if ohem.is_some() && b > crate::losses::pairwise::MAX_OHEM_ROWS {
                return Err(Error::Unsupported(format!(
                    "term '{}': ohem_ratio over pairs needs B <= {} rows (pair indices i*B + j \
                     must fit 32 bits), the logits have {b}",
                    term.name,
                    crate::losses::pairwise::MAX_OHEM_ROWS
                )));
            }
            (
                Form::Pair {
                    loss: loss.clone(),
                    temperature: *temperature,
                    ohem,
                },
                b,
            )
        }
        TermKind::Jrc {
            alpha,
            same_label_loss,
            weighting,
        } => {
            let name = input("logits");
            let logits = spec(shapes, term, name, "logits")?;
            let b = match logits.shape.as_slice() {
                [b, 2] if *b > 0 && logits.dtype == DType::F32 => *b as u64,
                other => {
                    return Err(Error::tensor(
                        name,
                        Some(&term.name),
                        format!(
                            "jrc_loss expects logits [B, 2] F32 with B >= 1, got {other:?} {}",
                            logits.dtype.name()
                        ),
                    ))
                }
            };
            (
                Form::Jrc {
                    alpha: *alpha,
                    same_label_loss: *same_label_loss,
                    weighting: weighting.clone(),
                },
                b,
            )
        }
        TermKind::InBatchSoftmax(_)
        | TermKind::CrossBatchSoftmax { .. }
        | TermKind::Contrastive { .. }
        | TermKind::NegativeMining { .. }
        | TermKind::Circle { .. }
        | TermKind::MultiSimilarity { .. } => resolve_embedding(term, shapes)?,
        TermKind::Esmm => {
            let b = expect_vector(
                shapes,
                term,
                input("ctr_logits"),
                "ctr_logits",
                None,
                &[DType::F32],
            )?;
            expect_vector(
                shapes,
                term,
                input("cvr_logits"),
                "cvr_logits",
                Some(b),
                &[DType::F32],
            )?;
            (Form::Esmm, b)
        }
    };
    // Binary labels and the other per-row roles.
    for (role, _) in term.kind.roles() {
        let is_primary = term.kind.differentiable_roles().contains(role);
        let Some(tensor) = term.input(role) else {
            continue; // an optional role left out
        };
        if is_primary || matches!(form, Form::Softmax { .. } | Form::Embedding { .. }) {
            continue;
        }
        let dtypes: &[DType] = if *role == "session" {
            &[DType::I32, DType::U32, DType::I64]
        } else {
            &[DType::F32]
        };
        expect_vector(shapes, term, tensor, role, Some(rows), dtypes)?;
    }
    let weights = match &term.sample_weights {
        None => Vec::new(),
        Some(sw) => {
            for (t, _) in sw.parts() {
                expect_vector(
                    shapes,
                    term,
                    &t,
                    "sample_weights",
                    Some(rows),
                    &[DType::F32],
                )?;
            }
            match sw {
                SampleWeights::Tensor(t) => vec![(t.clone(), 1.0)],
                SampleWeights::Combination(v) => v.clone(),
            }
        }
    };
    Ok(Resolved {
        slot,
        term: term.clone(),
        form,
        rows,
        weights,
    })
}

/// Embedding terms: every differentiable role is F32 [B, d] with one B and one d; the other roles
/// are per-row vectors (ids and keys of any integer type, labels also F32; log_q F32).
fn resolve_embedding(term: &LossTerm, shapes: &Shapes) -> Result<(Form, u64)> {
    let mut dims: Option<(u64, u64, &str)> = None;
    for role in term.kind.differentiable_roles() {
        let name = term.input(role).expect("required");
        let s = spec(shapes, term, name, role)?;
        let (b, d) = match (s.shape.as_slice(), s.dtype) {
            ([b, d], DType::F32) if *b > 0 && *d > 0 => (*b as u64, *d as u64),
            (shape, dtype) => {
                return Err(Error::tensor(
                    name,
                    Some(&term.name),
                    format!(
                    "role '{role}' expects embeddings [B, d] F32 with B, d >= 1, got {shape:?} {}",
                    dtype.name()
                ),
                ))
            }
        };
        if let Some((b0, d0, first)) = dims {
            if (b, d) != (b0, d0) {
                return Err(Error::tensor(
                    name,
                    Some(&term.name),
                    format!(
                        "role '{role}' has shape [{b}, {d}], but '{first}' has [{b0}, {d0}]: the \
                         embeddings of a term must agree"
                    ),
                ));
            }
        } else {
            dims = Some((b, d, name));
        }
    }
    let (b, d, first) = dims.expect("embedding terms have differentiable roles");
    let ints = [DType::I32, DType::U32, DType::I64];
    let any = [DType::F32, DType::I32, DType::U32, DType::I64];
    for (role, _) in term.kind.roles() {
        let Some(name) = term.input(role) else {
            continue;
        };
        let dtypes: &[DType] = match *role {
            "item_ids" | "session" => &ints,
            "labels" if !matches!(term.kind, TermKind::NegativeMining { .. }) => &any,
            "log_q" | "labels" => &[DType::F32],
            _ => continue,
        };
        expect_vector(shapes, term, name, role, Some(b), dtypes)?;
    }
    if let TermKind::NegativeMining {
        num_negative_samples,
        ..
    } = term.kind
    {
        if num_negative_samples as u64 >= b {
            return Err(Error::tensor(
                first,
                Some(&term.name),
                format!(
                    "num_negative_samples = {num_negative_samples} must be < B, and the batch has \
                     B = {b} rows (shape [{b}, {d}])"
                ),
            ));
        }
    }
    Ok((Form::Embedding { dim: d }, b))
}

fn resolve_softmax(term: &LossTerm, shapes: &Shapes, p: &SoftmaxParams) -> Result<(Form, u64)> {
    let name = term.input("logits").expect("checked");
    let logits = spec(shapes, term, name, "logits")?;
    let (b, c) = match logits.shape.as_slice() {
        [b, c] if *c >= 2 => (*b as u64, *c as u64),
        other => {
            return Err(Error::tensor(
                name,
                Some(&term.name),
                format!("softmax cross-entropy expects logits [B, C] with C >= 2, got {other:?}"),
            ))
        }
    };
    if logits.dtype != DType::F32 {
        return Err(Error::tensor(name, Some(&term.name), "logits must be F32"));
    }
    if b == 0 {
        return Err(Error::tensor(
            name,
            Some(&term.name),
            "the batch has no rows",
        ));
    }
    if let Some(w) = &p.class_weights {
        if w.len() as u64 != c {
            return Err(Error::term(
                &term.name,
                format!(
                    "class_weights has {} entries, the logits have C = {c} classes",
                    w.len()
                ),
            ));
        }
    }
    let labels_name = term.input("labels").expect("checked");
    let labels = spec(shapes, term, labels_name, "labels")?;
    let ids = match (labels.shape.as_slice(), labels.dtype) {
        (s, DType::I32 | DType::U32) if s == [b as usize] || s == [b as usize, 1] => true,
        (s, DType::F32) if s == [b as usize, c as usize] => false,
        (s, d) => {
            return Err(Error::tensor(
                labels_name,
                Some(&term.name),
                format!(
                    "softmax labels must be class ids [{b}] (I32/U32) or probabilities [{b}, {c}] (F32), got {s:?} {}",
                    d.name()
                ),
            ))
        }
    };
    Ok((
        Form::Softmax {
            params: p.clone(),
            classes: c,
            ids,
        },
        b,
    ))
}

/// Resolves every term and groups them into passes.
pub(crate) fn schedule(config: &LossConfig, shapes: &Shapes) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    for (slot, term) in config.losses.iter().enumerate() {
        let r = resolve(slot, term, shapes)?;
        match &r.form {
            Form::Softmax { .. } => {
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
            Form::Pair { .. } | Form::Jrc { .. } => {
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
            _ => {
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
