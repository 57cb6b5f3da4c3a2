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
    /// ε ≥ 0, the margin of the pair mining (acts only with `ms_mining`).
    pub eps: f64,
    /// The pair mining of the MS paper (§3.3; EasyRec `ms_loss(ms_mining=True)`): row i keeps a
    /// positive j when S_ij < max_neg S_ik + ε and a negative k when S_ik > min_pos S_ij − ε.
    pub ms_mining: bool,
}

impl Default for MultiSimilarityParams {
    fn default() -> Self {
        Self {
            alpha: 2.0,
            beta: 50.0,
            lamb: 1.0,
            eps: 0.1,
            ms_mining: false,
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
