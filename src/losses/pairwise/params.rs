//! The parameters of the pairwise-in-session terms (docs/LOSSES.md, "Pairwise-in-session terms";
//! EasyRec's pairwise losses): each loss type's own, and the per-pair loss they define.

use crate::losses::params::{positive, ParamContext, ParamError, Params};
use crate::losses::rows::params::{check_focal, check_ohem_ratio};
use serde::{Deserialize, Serialize};

/// The per-pair loss of a pairwise-in-session term, with d = (x_i − x_j)/T for a pair whose first
/// row has the higher label.
#[derive(Clone, Debug, PartialEq)]
pub enum PairLoss {
    /// `pair_wise_loss`: softplus(−(d − margin)).
    Logistic {
        /// Margin subtracted from d.
        margin: f64,
    },
    /// `pairwise_logistic_loss`: softplus(−d') with d' = d − hinge_margin (when set) − (y_i − y_j)/T
    /// (when use_label_margin).
    LogisticMargin {
        /// Margin subtracted from d (none: 0).
        hinge_margin: Option<f64>,
        /// Subtract the label gap (y_i − y_j)/T from d.
        use_label_margin: bool,
    },
    /// `pairwise_focal_loss`: binary focal with label 1 on d; pairs with d ≥ hinge_margin are
    /// removed (from the denominator too).
    Focal {
        /// Focusing parameter γ.
        gamma: f64,
        /// Class balance α (none: 1).
        alpha: Option<f64>,
        /// Pairs with d at or above it are not pairs (none: all kept).
        hinge_margin: Option<f64>,
    },
    /// `pairwise_hinge_loss`: relu(a), or relu(e^a − 1) with `use_exponent`, where a = gap − d
    /// with use_label_margin, else margin − d; d and gap are taken between the rows' scores
    /// s = x/T and label scores t = y/T (y with `label_is_logits` false), both through σ with
    /// `use_exponent` (docs/LOSSES.md §5.4).
    Hinge {
        /// Margin when the label gap is not used.
        margin: f64,
        /// Use the label gap t_i − t_j as the margin.
        use_label_margin: bool,
        /// The labels are divided by T too (EasyRec's default).
        label_is_logits: bool,
        /// σ of the scores and label scores, and e^a − 1 in place of a.
        use_exponent: bool,
    },
}

/// What every pairwise loss type's parameters give: the per-pair loss, T and the OHEM ratio.
pub(crate) trait PairParams {
    /// (loss, temperature, ohem_ratio).
    fn pair(&self) -> (PairLoss, f64, f64);
}

fn check_common(temperature: f64, ohem_ratio: f64) -> Result<(), ParamError> {
    positive("temperature", temperature)?;
    check_ohem_ratio(ohem_ratio)
}

/// `pair_wise_loss`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairWiseParams {
    /// Margin subtracted from d.
    pub margin: f64,
    /// T: d = (x_i − x_j)/T.
    pub temperature: f64,
    /// OHEM keep ratio over pairs.
    pub ohem_ratio: f64,
}

impl Default for PairWiseParams {
    fn default() -> Self {
        Self {
            margin: 0.0,
            temperature: 1.0,
            ohem_ratio: 1.0,
        }
    }
}

impl Params for PairWiseParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        check_common(self.temperature, self.ohem_ratio)
    }
}

impl PairParams for PairWiseParams {
    fn pair(&self) -> (PairLoss, f64, f64) {
        let loss = PairLoss::Logistic {
            margin: self.margin,
        };
        (loss, self.temperature, self.ohem_ratio)
    }
}

/// `pairwise_logistic_loss`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairwiseLogisticParams {
    /// Margin subtracted from d (unset: 0).
    pub hinge_margin: Option<f64>,
    /// Subtract the label gap (y_i − y_j)/T from d.
    pub use_label_margin: bool,
    /// T.
    pub temperature: f64,
    /// OHEM keep ratio over pairs.
    pub ohem_ratio: f64,
}

impl Default for PairwiseLogisticParams {
    fn default() -> Self {
        Self {
            hinge_margin: None,
            use_label_margin: false,
            temperature: 1.0,
            ohem_ratio: 1.0,
        }
    }
}

impl Params for PairwiseLogisticParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        check_common(self.temperature, self.ohem_ratio)
    }
}

impl PairParams for PairwiseLogisticParams {
    fn pair(&self) -> (PairLoss, f64, f64) {
        let loss = PairLoss::LogisticMargin {
            hinge_margin: self.hinge_margin,
            use_label_margin: self.use_label_margin,
        };
        (loss, self.temperature, self.ohem_ratio)
    }
}

/// `pairwise_focal_loss`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairwiseFocalParams {
    /// Focusing parameter γ ≥ 0.
    pub gamma: f64,
    /// Class balance α in [0, 1] (unset: 1).
    pub alpha: Option<f64>,
    /// Pairs with d at or above it are removed (unset: all kept).
    pub hinge_margin: Option<f64>,
    /// T.
    pub temperature: f64,
    /// OHEM keep ratio over pairs.
    pub ohem_ratio: f64,
}

impl Default for PairwiseFocalParams {
    fn default() -> Self {
        Self {
            gamma: 2.0,
            alpha: None,
            hinge_margin: None,
            temperature: 1.0,
            ohem_ratio: 1.0,
        }
    }
}

impl Params for PairwiseFocalParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        check_common(self.temperature, self.ohem_ratio)?;
        check_focal(self.gamma, self.alpha)
    }
}

impl PairParams for PairwiseFocalParams {
    fn pair(&self) -> (PairLoss, f64, f64) {
        let loss = PairLoss::Focal {
            gamma: self.gamma,
            alpha: self.alpha,
            hinge_margin: self.hinge_margin,
        };
        (loss, self.temperature, self.ohem_ratio)
    }
}

/// `pairwise_hinge_loss`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairwiseHingeParams {
    /// Margin when the label gap is not used.
    pub margin: f64,
    /// Use the label gap as the margin.
    pub use_label_margin: bool,
    /// T.
    pub temperature: f64,
    /// OHEM keep ratio over pairs.
    pub ohem_ratio: f64,
    /// The labels are logits: divided by T like the logits (EasyRec's default, true).
    pub label_is_logits: bool,
    /// Compare σ of the scores and labels, and take relu(e^a − 1) for relu(a) (EasyRec's option).
    pub use_exponent: bool,
}

impl Default for PairwiseHingeParams {
    fn default() -> Self {
        Self {
            margin: 1.0,
            use_label_margin: true,
            temperature: 1.0,
            ohem_ratio: 1.0,
            label_is_logits: true,
            use_exponent: false,
        }
    }
}

impl Params for PairwiseHingeParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        check_common(self.temperature, self.ohem_ratio)
    }
}

impl PairParams for PairwiseHingeParams {
    fn pair(&self) -> (PairLoss, f64, f64) {
        let loss = PairLoss::Hinge {
            margin: self.margin,
            use_label_margin: self.use_label_margin,
            label_is_logits: self.label_is_logits,
            use_exponent: self.use_exponent,
        };
        (loss, self.temperature, self.ohem_ratio)
    }
}
