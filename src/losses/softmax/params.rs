//! The parameters of softmax cross-entropy (docs/LOSSES.md, "Softmax cross-entropy"; PyTorch
//! `F.cross_entropy` semantics) and a resolved softmax term's form.

use crate::losses::params::{in_range, non_negative, positive, ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// Options of the softmax cross-entropy forms (`softmax_cross_entropy`, and `classification`
/// with C ≥ 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoftmaxParams {
    /// ε: mixes the target with the uniform distribution.
    pub label_smoothing: f64,
    /// T: logits are divided by it.
    pub temperature: f64,
    /// Rows whose class id equals this contribute nothing.
    pub ignore_index: Option<i64>,
    /// Per-class weights c (length C).
    pub class_weights: Option<Vec<f64>>,
    /// PaLM z-loss coefficient: adds z_loss · lse².
    pub z_loss: f64,
}

impl Default for SoftmaxParams {
    fn default() -> Self {
        Self {
            label_smoothing: 0.0,
            temperature: 1.0,
            ignore_index: None,
            class_weights: None,
            z_loss: 0.0,
        }
    }
}

impl Params for SoftmaxParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        in_range("label_smoothing", self.label_smoothing, 0.0, 1.0)?;
        positive("temperature", self.temperature)?;
        if let Some(i) = self.ignore_index {
            if i32::try_from(i).is_err() {
                return Err(ParamError::new(
                    "ignore_index",
                    format!("'ignore_index' must be a 32-bit integer, got {i}"),
                ));
            }
        }
        if let Some(w) = &self.class_weights {
            if let Some(x) = w.iter().find(|x| !x.is_finite() || **x < 0.0) {
                return Err(ParamError::new(
                    "class_weights",
                    format!("'class_weights' must hold finite non-negative numbers, got {x}"),
                ));
            }
        }
        non_negative("z_loss", self.z_loss)
    }
}

/// A softmax term once its shapes are known.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SoftmaxForm {
    pub params: SoftmaxParams,
    /// C.
    pub classes: u64,
    /// The labels are class ids (else probabilities [B, C]).
    pub ids: bool,
    /// A distillation term (KL divergence or L2 against a teacher's [B, C] logits) instead of
    /// cross-entropy; the temperature is then `params.temperature`.
    pub distill: Option<Distill>,
}

/// A distillation term of a softmax group (`src/losses/distill/`, docs/LOSSES.md §10).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Distill {
    /// `kl_divergence_loss` or `l2_distill_loss`.
    pub kind: crate::losses::distill::params::DistillKind,
    /// How the student and the teacher are read.
    pub teacher: crate::losses::distill::params::Teacher,
}

impl SoftmaxForm {
    /// Bytes of the row statistics the forward pass writes for the backward pass: vec2(lse,
    /// Σ c·t') for cross-entropy, vec4(student lse, teacher lse, the row sum of the gradient, 0)
    /// for distillation.
    pub(crate) fn stats_bytes(&self) -> u64 {
        if self.distill.is_some() {
            16
        } else {
            8
        }
    }
}
