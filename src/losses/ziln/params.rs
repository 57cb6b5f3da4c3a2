//! The parameters of `ziln_loss` (docs/LOSSES.md, "ziln_loss"): EasyRec's `ZILNLoss` message
//! (`easy_rec/python/protos/loss.proto`) with its names and defaults, checked against their
//! meaning.

use crate::losses::params::{in_range, non_negative, ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// The lower clip of σ: sqrt(Keras' epsilon 1e-7), computed in f32 as TensorFlow does
/// (`tf.math.sqrt(tf.keras.backend.epsilon())` in `zero_inflated_lognormal_loss`).
pub fn sigma_floor() -> f64 {
    f64::from(1e-7f32.sqrt())
}

/// `ziln_loss` (EasyRec `ZILN_LOSS`, `zero_inflated_lognormal_loss` and
/// `zero_inflated_lognormal_pred` in `easy_rec/python/loss/zero_inflated_lognormal.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZilnParams {
    /// Weight of the classification part, the mean BCE of p = σ(x₀) against y > 0.
    pub classification_weight: f64,
    /// Weight of the regression part, the lognormal NLL over the positive rows.
    pub regression_weight: f64,
    /// Coefficient of mean(μ²).
    pub mu_regularization: f64,
    /// Coefficient of mean(x₂²) (the raw σ logit, as EasyRec).
    pub sigma_regularization: f64,
    /// Upper clip of σ = softplus(x₂) (the lower clip is sqrt(1e-7)).
    pub max_sigma: f64,
    /// Upper clip of the log of the prediction before exp (the lower clip is −100).
    pub max_log_clip_value: f64,
    /// The prediction is log σ(x₀) + μ + σ²/2 (unclipped) instead of its exp.
    pub return_log_pred_value: bool,
}

impl Default for ZilnParams {
    fn default() -> Self {
        Self {
            classification_weight: 1.0,
            regression_weight: 1.0,
            mu_regularization: 0.01,
            sigma_regularization: 0.01,
            max_sigma: 5.0,
            max_log_clip_value: 20.0,
            return_log_pred_value: false,
        }
    }
}

/// The largest `max_log_clip_value`: exp of more overflows f32.
pub const MAX_LOG_CLIP: f64 = 88.0;

impl Params for ZilnParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        for (key, x) in [
            ("classification_weight", self.classification_weight),
            ("regression_weight", self.regression_weight),
            ("mu_regularization", self.mu_regularization),
            ("sigma_regularization", self.sigma_regularization),
        ] {
            non_negative(key, x)?;
            if !x.is_finite() {
                return Err(ParamError::new(
                    key,
                    format!("'{key}' must be finite, got {x}"),
                ));
            }
        }
        // The clip range [sqrt(1e-7), max_sigma] must not be empty, and σ² must stay finite.
        let floor = sigma_floor();
        if !(self.max_sigma > floor && self.max_sigma <= 1e4) {
            return Err(ParamError::new(
                "max_sigma",
                format!(
                    "'max_sigma' must be in ({floor:e}, 1e4] (σ is clipped to [sqrt(1e-7), \
                     max_sigma]), got {}",
                    self.max_sigma
                ),
            ));
        }
        in_range(
            "max_log_clip_value",
            self.max_log_clip_value,
            -100.0,
            MAX_LOG_CLIP,
        )
    }
}
