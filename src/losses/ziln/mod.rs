//! `ziln_loss`, the zero-inflated lognormal loss for lifetime value (EasyRec `ZILN_LOSS`:
//! `zero_inflated_lognormal_loss` and `zero_inflated_lognormal_pred` in
//! `easy_rec/python/loss/zero_inflated_lognormal.py`; docs/LOSSES.md, "ziln_loss"; reference
//! `src/reference/ziln.rs`; WGSL `ziln` in `shaders/binary.wgsl`).
//!
//! A term of the fused row group that reads a [B, 3] row of logits (p logit, μ, σ logit) and a
//! label per row. Its regression part is divided by the number of positive rows, a batch-wide
//! quantity: the row group's statistics pass counts them from the labels alone (not the logits),
//! and the prepare dispatch turns the count into the factors 1/B and 1/(#pos + 1e-8), which the
//! loss pass reads, so the term's partials sum to its value and the group stays fused. Each row
//! also writes its predicted mean to a per-row output that stays on the GPU
//! (`StepOutput::prediction`).

pub(crate) mod params;

use super::family::{wrong_params, Family, Form, LossType, Role, RoleKind, RowTerm};
use super::params::ParamSpec;
use super::shapes::{expect_vector, spec};
use super::statistics::params::BatchWide;
use crate::batch::{DType, Shapes};
use crate::config::{LossTerm, TermParams};
use crate::error::{Error, Result};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::f32_literal;
use params::ZilnParams;
use std::sync::Arc;

const ROLES: &[Role] = &[
    Role::required("logits", RoleKind::Logits),
    Role::required("labels", RoleKind::NonNegativeLabels),
];

/// `ziln_loss` (EasyRec `ZILN_LOSS`).
static ZILN_TYPE: LossType = LossType {
    name: "ziln_loss",
    roles: ROLES,
    params: ParamSpec::of::<ZilnParams>(),
    regression: false,
    family: &ZilnFamily,
};

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[&ZILN_TYPE];

/// A resolved `ziln_loss` term: its tensors and parameters.
#[derive(Debug)]
struct ZilnTerm {
    logits: String,
    labels: String,
    params: Arc<dyn TermParams>,
}

impl ZilnTerm {
    fn params(&self) -> &ZilnParams {
        self.params
            .as_any()
            .downcast_ref()
            .expect("ziln_loss parameters")
    }
}

fn lit(x: f64) -> String {
    f32_literal(x as f32)
}

impl RowTerm for ZilnTerm {
    fn call(&self, v: &dyn Fn(&str) -> String, batch_wide: &str) -> String {
        let p = self.params();
        format!(
            "ziln({}, {}, {batch_wide}, vec4<f32>({}, {}, {}, {}), vec3<f32>({}, {}, {}), {})",
            v(&self.logits),
            v(&self.labels),
            lit(p.classification_weight),
            lit(p.regression_weight),
            lit(p.mu_regularization),
            lit(p.sigma_regularization),
            lit(params::sigma_floor()),
            lit(p.max_sigma),
            lit(p.max_log_clip_value),
            p.return_log_pred_value,
        )
    }

    fn grads(&self) -> Vec<(String, &'static str)> {
        vec![(self.logits.clone(), "y")]
    }

    fn tensors(&self) -> Vec<String> {
        vec![self.logits.clone(), self.labels.clone()]
    }

    fn columns(&self, tensor: &str) -> u32 {
        if tensor == self.logits {
            3
        } else {
            1
        }
    }

    fn statistics_tensors(&self) -> Vec<String> {
        // The count of positive rows needs the labels only.
        vec![self.labels.clone()]
    }

    fn prediction(&self) -> Option<&'static str> {
        Some("p")
    }

    fn batch_wide(&self) -> Option<BatchWide> {
        Some(BatchWide::Ziln)
    }

    fn role_tensor(&self, role: &str) -> Option<String> {
        match role {
            "logits" => Some(self.logits.clone()),
            "labels" => Some(self.labels.clone()),
            _ => None,
        }
    }

    fn bound_roles(&self) -> Vec<(Role, String)> {
        vec![
            (ROLES[0], self.logits.clone()),
            (ROLES[1], self.labels.clone()),
        ]
    }
}

struct ZilnFamily;

impl Family for ZilnFamily {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let _: &ZilnParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let logits = input(term, "logits");
        let s = spec(shapes, term, logits, "logits")?;
        let b = match s.shape.as_slice() {
            [b, 3] if *b > 0 => *b as u64,
            _ => {
                return Err(Error::tensor(
                    logits,
                    Some(&term.name),
                    format!(
                        "role 'logits' of ziln_loss expects shape [B, 3] (p logit, μ, σ logit) \
                         with B >= 1, got {:?}",
                        s.shape
                    ),
                ))
            }
        };
        if s.dtype != DType::F32 {
            return Err(Error::tensor(
                logits,
                Some(&term.name),
                format!("role 'logits' expects F32, got {}", s.dtype.name()),
            ));
        }
        let labels = input(term, "labels");
        expect_vector(shapes, term, labels, "labels", Some(b), &[DType::F32])?;
        let row = ZilnTerm {
            logits: logits.to_string(),
            labels: labels.to_string(),
            params: term.kind.params_arc(),
        };
        Ok((Form::Row(Arc::new(row)), b))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
        let p: &ZilnParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        crate::reference::ziln::evaluate(term, batch, p)
    }

    /// EasyRec's means are fixed (the BCE and the penalties over B rows, the NLL over the
    /// positives), and `loss_builder.build` passes ZILN no sample weights (a weight tensor is
    /// ignored there): refuse both rather than ignore them.
    fn validate(&self, term: &LossTerm) -> Result<()> {
        if term.sample_weights.is_some() {
            return Err(Error::term(
                &term.name,
                "'sample_weights' does not apply to ziln_loss: EasyRec's ZILN_LOSS ignores \
                 per-row sample weights (loss_builder.build multiplies only by a scalar loss \
                 weight); use the term's 'weight'",
            ));
        }
        if term.reduction.is_some() {
            return Err(Error::term(
                &term.name,
                "'reduction' does not apply to ziln_loss: EasyRec fixes its means (BCE and \
                 penalties over the B rows, the lognormal NLL over the positive rows)",
            ));
        }
        Ok(())
    }
}

fn input<'a>(term: &'a LossTerm, role: &str) -> &'a str {
    term.input(role)
        .expect("required roles are checked by the config")
}
