//! The parameters of `circle_loss` and `multi_similarity_loss` (docs/LOSSES.md, "Retrieval and
//! embedding terms").

use crate::losses::params::{non_negative, positive, ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// `circle_loss` (Sun et al. CVPR 2020; EasyRec `circle_loss`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircleParams {
    /// m.
    pub margin: f64,
    /// γ > 0.
    pub gamma: f64,
}

impl Default for CircleParams {
    fn default() -> Self {
        Self {
            margin: 0.25,
            gamma: 32.0,
        }
    }
}

impl Params for CircleParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        positive("gamma", self.gamma)
    }
}

/// `multi_similarity_loss` (Wang et al. CVPR 2019; EasyRec `ms_loss`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiSimilarityParams {
    /// α > 0 (positives).
    pub alpha: f64,
    /// β > 0 (negatives).
    pub beta: f64,
    /// λ.
    pub lamb: f64,
    /// EasyRec's mining margin ≥ 0; it only acts with EasyRec's `ms_mining`, which lossfuse
    /// does not implement yet, so it is accepted and kept.
    pub eps: f64,
}

impl Default for MultiSimilarityParams {
    fn default() -> Self {
        Self {
            alpha: 2.0,
            beta: 50.0,
            lamb: 1.0,
            eps: 0.1,
        }
    }
}

impl Params for MultiSimilarityParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        positive("alpha", self.alpha)?;
        positive("beta", self.beta)?;
        non_negative("lamb", self.lamb)?;
        non_negative("eps", self.eps)
    }
}
