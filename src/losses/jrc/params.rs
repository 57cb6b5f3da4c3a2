//! The parameters of `jrc_loss` (docs/LOSSES.md, "jrc_loss"; EasyRec `jrc_loss`).

use crate::config::{parse_optimizer, Optimizer};
use crate::error::Error;
use crate::losses::params::in_range;
use crate::losses::params::{ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// How `jrc_loss` combines its calibration (CE) and ranking (generalisation) parts.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum JrcWeighting {
    /// α·ce + (1 − α)·ge.
    #[default]
    Fixed,
    /// e^{−u1}·ce + 0.5·u1 + e^{−u2}·ge + 0.5·u2 with u1, u2 learned (start 0), kept in the
    /// state and stepped by the given optimiser (`none`: the trainer applies d/du itself).
    Uncertainty(Optimizer),
}

/// `jrc_loss`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JrcParams {
    /// α of the fixed combination, in [0, 1].
    pub alpha: f64,
    /// Each row competes with every row of its session (true) or only with the rows of the
    /// other label (false).
    pub same_label_loss: bool,
    /// `fixed` or `uncertainty`.
    pub loss_weight_strategy: String,
    /// The optimiser of the learned u (with `uncertainty`): `{ optimizer, learning_rate, ... }`.
    pub uncertainty: Option<serde_json::Value>,
    /// How ce and ge are combined, from the two keys above.
    #[serde(skip)]
    pub weighting: JrcWeighting,
}

impl Default for JrcParams {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            same_label_loss: true,
            loss_weight_strategy: "fixed".into(),
            uncertainty: None,
            weighting: JrcWeighting::Fixed,
        }
    }
}

impl Params for JrcParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        in_range("alpha", self.alpha, 0.0, 1.0)?;
        self.weighting = match self.loss_weight_strategy.as_str() {
            "fixed" if self.uncertainty.is_some() => {
                return Err(ParamError::new(
                    "uncertainty",
                    "'uncertainty' applies only with loss_weight_strategy = \"uncertainty\"",
                ))
            }
            "fixed" => JrcWeighting::Fixed,
            "uncertainty" => {
                let optimizer = parse_optimizer(self.uncertainty.as_ref(), "[uncertainty]")
                    .map_err(|e| match e {
                        Error::Config(m) => ParamError::new("uncertainty", m),
                        other => ParamError::new("uncertainty", other.to_string()),
                    })?;
                JrcWeighting::Uncertainty(optimizer)
            }
            other => {
                return Err(ParamError::new(
                    "loss_weight_strategy",
                    format!(
                        "unknown loss_weight_strategy '{other}' for jrc_loss; expected fixed or \
                         uncertainty"
                    ),
                ))
            }
        };
        Ok(())
    }
}
