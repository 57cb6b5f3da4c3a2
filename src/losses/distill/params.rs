//! The parameters of the distillation terms (docs/LOSSES.md §10): EasyRec's `KD` message
//! (`easy_rec/python/protos/easy_rec_model.proto`: `temperature` 1, `label_is_logits` true,
//! `pred_is_logits` true) and AutoFAS's temperature, checked against their meaning.

use crate::losses::params::{positive, ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// How a distillation term reads its student and teacher: the temperature T (> 0) divides both
/// logits, and a probability input is first turned into a logit as EasyRec's `build_kd_loss`
/// does (one column: clip to [1e-7, 1 − 1e-7], log(p/(1 − p)); C ≥ 2 classes: log(p + 1e-7)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Teacher {
    /// T.
    pub temperature: f64,
    /// The labels are the teacher's logits (else its probabilities).
    pub label_is_logits: bool,
    /// The student's input is logits (else probabilities).
    pub pred_is_logits: bool,
}

impl Teacher {
    /// EasyRec's defaults at temperature `t`: both inputs are logits.
    pub fn logits(temperature: f64) -> Self {
        Self {
            temperature,
            label_is_logits: true,
            pred_is_logits: true,
        }
    }
}

/// `kl_divergence_loss` (EasyRec `KL_DIVERGENCE_LOSS` in `build_kd_loss`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KlParams {
    /// T (> 0): divides the student's and the teacher's logits.
    pub temperature: f64,
    /// The labels are the teacher's logits (else probabilities in [0, 1]).
    pub label_is_logits: bool,
    /// The student's input is logits (else probabilities in [0, 1]).
    pub pred_is_logits: bool,
}

impl Default for KlParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            label_is_logits: true,
            pred_is_logits: true,
        }
    }
}

impl KlParams {
    /// How the term reads its inputs.
    pub fn teacher(&self) -> Teacher {
        Teacher {
            temperature: self.temperature,
            label_is_logits: self.label_is_logits,
            pred_is_logits: self.pred_is_logits,
        }
    }
}

impl Params for KlParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        check_temperature(self.temperature)
    }
}

/// EasyRec applies T only when it is > 0 (`if kd.temperature > 0`); lossfuse asks for T > 0 (T = 1
/// is EasyRec's "no temperature"), so that a typo is not silently a different loss.
fn check_temperature(t: f64) -> Result<(), ParamError> {
    if !t.is_finite() {
        return Err(ParamError::new(
            "temperature",
            format!("'temperature' must be a finite number > 0, got {t}"),
        ));
    }
    positive("temperature", t)
}

/// `binary_cross_entropy_loss`: EasyRec's `BINARY_CROSS_ENTROPY_LOSS`, in two forms. With any of
/// the teacher keys (`temperature`, `label_is_logits`, `pred_is_logits`, which only EasyRec's `KD`
/// message has) it is the distillation branch of `build_kd_loss` (unset keys take the `KD`
/// defaults 1, true, true); with none it is the plain loss of `loss_builder.build` (labels are
/// targets in [0, 1], no temperature).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BceParams {
    /// T (> 0), distillation only.
    pub temperature: Option<f64>,
    /// The labels are the teacher's logits (else its probabilities), distillation only.
    pub label_is_logits: Option<bool>,
    /// The student's input is logits (else probabilities), distillation only.
    pub pred_is_logits: Option<bool>,
}

impl BceParams {
    /// The distillation form's teacher, `None` for the plain loss.
    pub fn teacher(&self) -> Option<Teacher> {
        let any = self.temperature.is_some()
            || self.label_is_logits.is_some()
            || self.pred_is_logits.is_some();
        any.then(|| Teacher {
            temperature: self.temperature.unwrap_or(1.0),
            label_is_logits: self.label_is_logits.unwrap_or(true),
            pred_is_logits: self.pred_is_logits.unwrap_or(true),
        })
    }
}

impl Params for BceParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        match self.temperature {
            Some(t) => check_temperature(t),
            None => Ok(()),
        }
    }
}

/// `l2_distill_loss` (AutoFAS, Li et al. KDD 2022): the teacher's and the student's logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L2DistillParams {
    /// T (> 0): divides the student's and the teacher's logits.
    pub temperature: f64,
}

impl Default for L2DistillParams {
    fn default() -> Self {
        Self { temperature: 1.0 }
    }
}

impl Params for L2DistillParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        check_temperature(self.temperature)
    }
}

/// Which distillation term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistillKind {
    /// `kl_divergence_loss`.
    Kl,
    /// `binary_cross_entropy_loss` (with or without a teacher).
    Bce,
    /// `l2_distill_loss`.
    L2,
}

/// Refuses sample weights where EasyRec takes none (docs/LOSSES.md §10.4): the plain
/// `binary_cross_entropy_loss` (EasyRec's `build` returns `tf.reduce_mean(losses)` and drops its
/// `loss_weight`), and the element-wise `binary_cross_entropy_loss` over [B, C] (one weight per
/// row would have to reach C elements, which EasyRec's `reduce_mean(losses) * loss_weight` does
/// not define). `columns` says whether the term has one value per row.
pub(crate) fn check_weights(
    term: &crate::config::LossTerm,
    kind: DistillKind,
    teacher: Option<Teacher>,
    columns: bool,
) -> crate::error::Result<()> {
    if term.sample_weights.is_none() || kind != DistillKind::Bce {
        return Ok(());
    }
    let why = if teacher.is_none() {
        "EasyRec's BINARY_CROSS_ENTROPY_LOSS without a teacher ignores sample weights \
         (tf.reduce_mean of the per-row losses); for weighted sigmoid CE use loss_type \
         'classification', for distillation give a teacher key (label_is_logits, \
         pred_is_logits or temperature)"
    } else if !columns {
        "binary_cross_entropy_loss over [B, C] is a mean over all B·C elements and takes no \
         per-row sample weights"
    } else {
        return Ok(());
    };
    Err(crate::error::Error::term(
        &term.name,
        format!("sample_weights: {why}"),
    ))
}
