//! The parameters of `softmax_cross_entropy_with_negative_mining` (docs/LOSSES.md, "Retrieval and
//! embedding terms"; EasyRec `softmax_loss_with_negative_mining`).

use crate::losses::params::positive;
use crate::losses::params::{ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// SV-softmax (Wang et al. AAAI 2020) with cyclic shifts of the item batch as negatives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiningParams {
    /// K: shifts per row (≥ 1, < B).
    pub num_negative_samples: u32,
    /// Margin subtracted from the positive's logit.
    pub margin: f64,
    /// Scale of every logit (> 0).
    pub gamma: f64,
    /// t: a hard negative's logit s becomes t·s + t − 1.
    pub coefficient_of_support_vector: f64,
    /// Shifts drawn per step from (seed, step); unset: shifts 1..K.
    pub seed: Option<u32>,
}

impl Default for MiningParams {
    fn default() -> Self {
        Self {
            num_negative_samples: 4,
            margin: 0.0,
            gamma: 1.0,
            coefficient_of_support_vector: 1.0,
            seed: None,
        }
    }
}

impl Params for MiningParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        if self.num_negative_samples == 0 {
            return Err(ParamError::new(
                "num_negative_samples",
                "'num_negative_samples' must be >= 1",
            ));
        }
        positive("gamma", self.gamma)?;
        // SV-softmax (Wang et al. 2018) weighs the hard negatives by t ≥ 1; t < 1 would weigh
        // them below the easy ones.
        let t = self.coefficient_of_support_vector;
        if !t.is_finite() || t < 1.0 {
            return Err(ParamError::new(
                "coefficient_of_support_vector",
                format!(
                    "'coefficient_of_support_vector' (t) must be >= 1, got {}",
                    self.coefficient_of_support_vector
                ),
            ));
        }
        Ok(())
    }
}
