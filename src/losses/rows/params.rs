//! The parameters of the per-row terms (docs/LOSSES.md, "Per-row terms"): EasyRec's names and
//! defaults, checked against their meaning.

use crate::losses::params::{in_range, non_negative, positive, ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// `classification`: sigmoid CE for one logit per row, softmax CE for C ≥ 2 (by shape; the
/// softmax options are those of `softmax_cross_entropy`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassificationParams {
    /// Binary label smoothing (one logit) or ε (softmax).
    pub label_smoothing: f64,
    /// PyTorch `BCEWithLogits` pos_weight (one logit only).
    pub pos_weight: Option<f64>,
    /// Softmax temperature T.
    pub temperature: f64,
    /// Rows whose class id equals it contribute nothing (softmax).
    pub ignore_index: Option<i64>,
    /// Per-class weights (softmax).
    pub class_weights: Option<Vec<f64>>,
    /// PaLM z-loss coefficient (softmax).
    pub z_loss: f64,
}

impl Default for ClassificationParams {
    fn default() -> Self {
        Self {
            label_smoothing: 0.0,
            pos_weight: None,
            temperature: 1.0,
            ignore_index: None,
            class_weights: None,
            z_loss: 0.0,
        }
    }
}

impl ClassificationParams {
    /// The softmax options, for C ≥ 2.
    pub fn softmax(&self) -> crate::losses::softmax::params::SoftmaxParams {
        crate::losses::softmax::params::SoftmaxParams {
            label_smoothing: self.label_smoothing,
            temperature: self.temperature,
            ignore_index: self.ignore_index,
            class_weights: self.class_weights.clone(),
            z_loss: self.z_loss,
        }
    }

    /// Whether an option that only softmax CE has is set.
    pub fn has_softmax_options(&self) -> bool {
        self.temperature != 1.0
            || self.ignore_index.is_some()
            || self.class_weights.is_some()
            || self.z_loss != 0.0
    }
}

impl Params for ClassificationParams {
    fn check(&mut self, ctx: &ParamContext) -> Result<(), ParamError> {
        self.softmax().check(ctx)?;
        if let Some(pw) = self.pos_weight {
            positive("pos_weight", pw)?;
        }
        Ok(())
    }
}

/// `binary_focal_loss` (EasyRec `BINARY_FOCAL_LOSS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FocalParams {
    /// Focusing parameter γ ≥ 0.
    pub gamma: f64,
    /// Class balance α in [0, 1] (unset: 1 for both classes).
    pub alpha: Option<f64>,
    /// OHEM keep ratio in (0, 1] (1: all rows).
    pub ohem_ratio: f64,
    /// Binary label smoothing of the CE label.
    pub label_smoothing: f64,
}

impl Default for FocalParams {
    fn default() -> Self {
        Self {
            gamma: 2.0,
            alpha: None,
            ohem_ratio: 1.0,
            label_smoothing: 0.0,
        }
    }
}

/// Checks focal parameters (shared with `pairwise_focal_loss`).
pub(crate) fn check_focal(gamma: f64, alpha: Option<f64>) -> Result<(), ParamError> {
    non_negative("gamma", gamma)?;
    if let Some(a) = alpha {
        in_range("alpha", a, 0.0, 1.0)?;
    }
    Ok(())
}

/// Checks an OHEM keep ratio: (0, 1].
pub(crate) fn check_ohem_ratio(ratio: f64) -> Result<(), ParamError> {
    if ratio <= 0.0 || ratio > 1.0 {
        return Err(ParamError::new(
            "ohem_ratio",
            format!("'ohem_ratio' must be in (0, 1], got {ratio}"),
        ));
    }
    Ok(())
}

impl Params for FocalParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        check_focal(self.gamma, self.alpha)?;
        check_ohem_ratio(self.ohem_ratio)?;
        in_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
    }
}
