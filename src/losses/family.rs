//! What every loss family declares and what the plan asks of it.
//!
//! A loss type ([`LossType`]) is EasyRec's name, its roles, its typed parameters and its family;
//! the family ([`Family`]) checks a term against the batch's shapes (its form and group), points
//! to its f64 reference, and builds its passes through the group it belongs to: the fused row
//! group ([`RowTerm`]), a softmax group, a session group ([`SessionTerm`]) or a group of its own
//! ([`EmbeddingTerm`]). Each family module (`src/losses/<family>/`) lists its loss types; the
//! registry ([`super::registry`]) is their union.

use super::params::ParamSpec;
use crate::batch::Shapes;
use crate::config::{LossTerm, Reduction, TermParams};
use crate::error::{Error, Result};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use std::fmt;
use std::sync::Arc;

/// What a role's tensor means: its shape, dtype and values (for checks and example batches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    /// Real scores a gradient is returned for: `[B]` or `[B, 1]` (or the family's shape).
    Logits,
    /// Probabilities in [0, 1], differentiable.
    Probabilities,
    /// Reals in [0, 1] (binary, or soft, labels).
    BinaryLabels,
    /// Labels that are exactly 0 or 1.
    ZeroOneLabels,
    /// Any real labels (regression targets, graded relevance).
    RealLabels,
    /// Real labels ≥ 0 (amounts: `ziln_loss`'s lifetime value, 0 for a row without one).
    NonNegativeLabels,
    /// Class ids, or probabilities over the classes.
    ClassLabels,
    /// Labels compared for equality: reals or integers.
    AnyLabels,
    /// Integer session ids.
    SessionIds,
    /// Integer item ids.
    ItemIds,
    /// The log of a sampling probability (not differentiable).
    LogQ,
    /// Rows of embeddings `[B, d]`, differentiable.
    Embeddings,
}

impl RoleKind {
    /// Whether the tensor gets a gradient.
    pub fn differentiable(self) -> bool {
        matches!(self, Self::Logits | Self::Probabilities | Self::Embeddings)
    }
}

/// One input role of a loss type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// Its key in the config (`logits`, `labels`, ...).
    pub name: &'static str,
    /// Whether a term must bind it.
    pub required: bool,
    /// What its tensor means.
    pub kind: RoleKind,
}

impl Role {
    /// A required role.
    pub const fn required(name: &'static str, kind: RoleKind) -> Self {
        Self {
            name,
            required: true,
            kind,
        }
    }

    /// An optional role.
    pub const fn optional(name: &'static str, kind: RoleKind) -> Self {
        Self {
            name,
            required: false,
            kind,
        }
    }
}

/// A loss type: EasyRec's name (in snake_case), its roles, its parameters and its family.
pub(crate) struct LossType {
    pub name: &'static str,
    pub roles: &'static [Role],
    pub params: ParamSpec,
    /// The uncertainty strategy weighs it 0.5·e^{−s}·L + 0.5·s (regression terms), not
    /// e^{−s}·L + 0.5·s.
    pub regression: bool,
    pub family: &'static dyn Family,
}

impl fmt::Debug for LossType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl LossType {
    /// Whether its terms refuse non-finite inputs even with `nonfinite = "propagate"`: those
    /// that group rows by session or normalise and compare embeddings, where a NaN would reorder
    /// or poison other rows (and a memory bank) rather than stay in its own row.
    pub(crate) fn refuses_nonfinite(&self) -> bool {
        self.roles
            .iter()
            .any(|r| matches!(r.kind, RoleKind::Embeddings | RoleKind::SessionIds))
    }

    /// The roles that get a gradient.
    pub fn differentiable_roles(&self) -> impl Iterator<Item = &'static str> {
        self.roles
            .iter()
            .filter(|r| r.kind.differentiable())
            .map(|r| r.name)
    }
}

/// What a family does for each of its terms.
pub(crate) trait Family: Sync {
    /// Checks `term` against the shapes: its form (and so its group) and the rows it covers.
    /// (`'static`: a form may point to its family's data.)
    fn resolve(
        &'static self,
        loss_type: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)>;
    /// The f64 reference of one term (of `loss_type`) on a batch, from the state before the step.
    fn reference(
        &self,
        loss_type: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        state: TermState,
    ) -> Result<TermValue>;
    /// The reduction when the term names none.
    fn default_reduction(&self, term: &LossTerm) -> Reduction {
        let _ = term;
        Reduction::NonzeroMean
    }
    /// Rules across the term's keys beyond its parameters' own checks.
    fn validate(&self, term: &LossTerm) -> Result<()> {
        let _ = term;
        Ok(())
    }
}

/// What a term is once its shapes are known: the group mechanism that evaluates it, and the
/// family's data for it.
#[derive(Clone, Debug)]
pub(crate) enum Form {
    /// A term of the fused row group over its rows.
    Row(Arc<dyn RowTerm>),
    /// Softmax CE over [B, C] logits (grouped by logits tensor).
    Softmax(crate::losses::softmax::params::SoftmaxForm),
    /// A term over rows grouped by session (grouped by rows and session tensor).
    Session(Arc<dyn SessionTerm>),
    /// A term with passes of its own (retrieval, metric, mining) over embeddings of `dim`.
    Embedding {
        dim: u64,
        term: &'static dyn EmbeddingTerm,
    },
}

/// A term once its shapes are checked: its slot (its index in the config, its record in the
/// scalars), form, rows and sample weights.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub slot: usize,
    pub term: LossTerm,
    pub loss_type: &'static LossType,
    pub form: Form,
    pub rows: u64,
    /// (tensor, coefficient) making up the sample weight; empty means 1.
    pub weights: Vec<(String, f64)>,
}

impl Resolved {
    /// The tensor bound to a role the loss type requires.
    pub(crate) fn input(&self, role: &str) -> &str {
        self.term.input(role).expect("role checked at resolve time")
    }

    /// Every bound role with its tensor: the row loss's roles for a row term (the sigmoid form of
    /// `classification` reads binary labels), a distillation term's by what its inputs hold,
    /// else the loss type's.
    pub(crate) fn bound_roles(&self) -> Vec<(Role, String)> {
        match &self.form {
            Form::Row(r) => r.bound_roles(),
            Form::Softmax(f) if f.distill.is_some() => {
                // A distillation input that holds probabilities is checked in [0, 1].
                let k = f.distill.expect("checked").teacher;
                let kind = |role: &Role| match role.name {
                    "logits" if !k.pred_is_logits => RoleKind::Probabilities,
                    "labels" if !k.label_is_logits => RoleKind::BinaryLabels,
                    _ => role.kind,
                };
                self.loss_type
                    .roles
                    .iter()
                    .filter_map(|r| {
                        let role = Role {
                            kind: kind(r),
                            ..*r
                        };
                        Some((role, self.term.input(r.name)?.to_string()))
                    })
                    .collect()
            }
            _ => self
                .loss_type
                .roles
                .iter()
                .filter_map(|r| Some((*r, self.term.input(r.name)?.to_string())))
                .collect(),
        }
    }

    /// The reduction in force.
    pub(crate) fn reduction(&self) -> Reduction {
        self.term
            .reduction
            .unwrap_or_else(|| self.loss_type.family.default_reduction(&self.term))
    }
}

/// The WGSL call of a row function on the row's values (`v(role)` gives a role's value).
pub(crate) type RowCall = fn(&dyn TermParams, &dyn Fn(&str) -> String) -> String;

/// The f64 reference of one row: (loss, up to two derivatives) from the roles' values.
pub(crate) type RowReference = fn(&dyn TermParams, &[f64]) -> (f64, [f64; 2]);

/// A plain per-row term: l_i = f(row i of its inputs), its gradient to each differentiable input,
/// reduced with the term's reduction. One `static` per loss type in its family module, beside its
/// WGSL function.
pub(crate) struct RowLoss {
    /// The WGSL call of its function on the row's values (`v(role)`): `vec2(loss, d/d input)`,
    /// or `vec3` with two differentiable inputs.
    pub call: RowCall,
    /// The differentiable roles and the component of `call`'s result holding each derivative.
    pub grads: &'static [(&'static str, &'static str)],
    /// The f64 reference of one row: (loss, the derivatives in `grads` order) from the values
    /// of the roles in the loss type's order.
    pub reference: RowReference,
    /// The reduction when the term names none.
    pub default_reduction: Reduction,
}

/// A term of the fused row group (see `src/losses/rows/`).
pub(crate) trait RowTerm: fmt::Debug + Send + Sync {
    /// The WGSL call of the term's function on the row's values (`v(tensor)`: an `f32`, or a
    /// `vecN<f32>` for a tensor of N > 1 [`columns`](Self::columns)); `batch_wide` names the
    /// WGSL value of the term's batch-wide factors when its row function reads them
    /// ([`crate::losses::statistics::prelude`]), else it is empty.
    fn call(&self, v: &dyn Fn(&str) -> String, batch_wide: &str) -> String;
    /// The tensors that get a gradient, with the component of `call`'s result holding it
    /// (an `f32`, or a `vecN<f32>` for a tensor of N columns).
    fn grads(&self) -> Vec<(String, &'static str)>;
    /// Every tensor the term reads per row.
    fn tensors(&self) -> Vec<String>;
    /// Values per row of `tensor`: 1 for a column `[B]` or `[B, 1]`, N for a `[B, N]` row
    /// read whole (N ≤ 4; `ziln_loss`'s logits are [B, 3]).
    fn columns(&self, tensor: &str) -> u32 {
        let _ = tensor;
        1
    }
    /// The tensors the row group's statistics pass reads for this term's batch-wide quantity
    /// (all of them unless the term says less).
    fn statistics_tensors(&self) -> Vec<String> {
        self.tensors()
    }
    /// The component of `call`'s result holding the row's prediction, when the term reports a
    /// per-row prediction ([`crate::StepOutput::prediction`]).
    fn prediction(&self) -> Option<&'static str> {
        None
    }
    /// The batch-wide quantity the term needs before its loss (GHM-C, OHEM, F1), if any.
    fn batch_wide(&self) -> Option<crate::losses::statistics::params::BatchWide>;
    /// The tensor bound to `role`.
    fn role_tensor(&self, role: &str) -> Option<String>;
    /// Every role the row loss reads, with its tensor (what the host checks of its values).
    fn bound_roles(&self) -> Vec<(Role, String)>;
}

/// A term over rows grouped by session (see `src/losses/pairwise/`, `src/losses/jrc/`).
pub(crate) trait SessionTerm: fmt::Debug + Send + Sync {
    /// Its passes: those before the combine pass, the one after it, and the partial slots it
    /// uses beyond its own.
    fn passes(
        &self,
        term: &Resolved,
        ctx: &mut crate::losses::session::SessionCtx,
    ) -> Result<crate::losses::session::TermPasses>;
    /// Its regions of the shared buffers.
    fn regions(&self, term: &Resolved, layout: &mut crate::layout::LayoutBuilder) {
        let _ = (term, layout);
    }
    /// Its record of the combine pass's term table.
    fn term_info(
        &self,
        term: &Resolved,
        layout: &crate::layout::Layout,
        info: &mut crate::combine::TermInfo,
    );
}

/// A term with passes of its own over embeddings (see `src/losses/retrieval/`, `metric/`,
/// `mining/`).
pub(crate) trait EmbeddingTerm: fmt::Debug + Sync {
    /// Its passes.
    fn passes(
        &self,
        term: &Resolved,
        dim: u64,
        layout: &crate::layout::Layout,
        ctx: &mut crate::losses::embedding::Ctx,
    ) -> Result<crate::losses::embedding::TermPasses>;
    /// Its regions of the shared buffers (a memory bank's head and fill).
    fn regions(&self, term: &Resolved, layout: &mut crate::layout::LayoutBuilder) {
        let _ = (term, layout);
    }
}

/// The error of a term whose parameters are not of its loss type (a config built in code).
pub(crate) fn wrong_params(term: &LossTerm) -> Error {
    Error::term(
        &term.name,
        format!(
            "its parameters are not those of loss_type '{}': {:?}",
            term.kind.loss_type(),
            term.kind.raw_params()
        ),
    )
}
