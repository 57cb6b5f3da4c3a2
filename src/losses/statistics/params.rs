//! The parameters of the batch-wide terms (docs/LOSSES.md, "Gradient-density terms" and
//! "F1-reweighted"), and the batch-wide quantity a row term needs before its loss.

use crate::losses::params::{in_range, positive, ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// The largest `bins` of `ghm_c`: the GPU keeps one workgroup counter per bin.
pub const MAX_GHM_BINS: u32 = 1024;

/// `ghm_c` (GHM-C, Li et al. AAAI 2019; mmdetection `GHMC`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GhmParams {
    /// Bins of g = |σ(x) − y| in [0, 1] (1..=1024).
    pub bins: u32,
    /// Momentum of the per-bin EMA of the counts, in [0, 1) (0: this batch's counts only).
    pub momentum: f64,
}

impl Default for GhmParams {
    fn default() -> Self {
        Self {
            bins: 10,
            momentum: 0.0,
        }
    }
}

impl Params for GhmParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        if !(1..=MAX_GHM_BINS).contains(&self.bins) {
            return Err(ParamError::new(
                "bins",
                format!("'bins' must be in [1, {MAX_GHM_BINS}], got {}", self.bins),
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(ParamError::new(
                "momentum",
                format!("'momentum' must be in [0, 1), got {}", self.momentum),
            ));
        }
        Ok(())
    }
}

/// `f1_reweighted_loss` (EasyRec `F1_REWEIGHTED_LOSS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct F1Params {
    /// β²: > 1 favours recall, < 1 precision.
    pub f1_beta_square: f64,
    /// Binary label smoothing of the CE label.
    pub label_smoothing: f64,
}

impl Default for F1Params {
    fn default() -> Self {
        Self {
            f1_beta_square: 1.0,
            label_smoothing: 0.0,
        }
    }
}

impl Params for F1Params {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        positive("f1_beta_square", self.f1_beta_square)?;
        in_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
    }
}

/// The batch-wide quantity a row term needs before any row's loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum BatchWide {
    /// GHM-C: the histogram of g over `bins` bins, with an EMA of the counts when `momentum`.
    Ghm { bins: u32, momentum: f64 },
    /// OHEM: the k-th largest row value, k = max(1, round(B·ratio)).
    Ohem { ratio: f64 },
    /// F1-reweighted: Σσ(x) and the class sums.
    F1 { beta_square: f64 },
    /// `ziln_loss`: the number of positive labels (y > 0), the denominator of its regression
    /// part.
    Ziln,
}
