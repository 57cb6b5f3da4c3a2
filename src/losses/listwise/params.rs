//! The parameters of the listwise terms (docs/LOSSES.md §6a; EasyRec
//! `easy_rec/python/loss/listwise_loss.py`, `listwise_rank_loss` and `listwise_distill_loss`, with
//! the defaults of `easy_rec/python/builders/loss_builder.py`).

use crate::config::{parse_optimizer, Optimizer};
use crate::error::Error;
use crate::losses::params::{positive, ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// How the per-session targets come from the labels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ListTargets {
    /// `listwise_rank_loss` with `label_is_logits = false`: the raw graded labels weight
    /// −log softmax, not normalised (EasyRec `_list_wise_loss`).
    Raw,
    /// `listwise_rank_loss` with `label_is_logits = true`: softmax_S(y/T).
    LabelLogits,
    /// `listwise_distill_loss`: y ← log1p(c) − log(clip(y, 1, c)), then y / Σ_S y
    /// (EasyRec `_list_prob_loss`).
    Distill {
        /// The clip c = `label_clip_max_value`.
        clip_max: f64,
    },
}

/// What a resolved listwise term needs from its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ListSpec {
    /// How the targets come from the labels.
    pub targets: ListTargets,
    /// T: z = x/T (and y/T with label logits).
    pub temperature: f64,
    /// Learned affine x·|w| + b before T, with the optimiser stepping (w, b) on the GPU.
    pub scale: Option<Optimizer>,
}

/// The optimiser of (w, b) from the `scale_optimizer` table, refused without `scale_logits`.
fn scale_optimizer(
    scale_logits: bool,
    table: Option<&serde_json::Value>,
) -> Result<Option<Optimizer>, ParamError> {
    if !scale_logits {
        return match table {
            Some(_) => Err(ParamError::new(
                "scale_optimizer",
                "'scale_optimizer' applies only with scale_logits = true",
            )),
            None => Ok(None),
        };
    }
    parse_optimizer(table, "[scale_optimizer]")
        .map(Some)
        .map_err(|e| match e {
            Error::Config(m) => ParamError::new("scale_optimizer", m),
            other => ParamError::new("scale_optimizer", other.to_string()),
        })
}

/// `listwise_rank_loss` (EasyRec `LISTWISE_RANK_LOSS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListwiseRankParams {
    /// T > 0: z = x/T, and the labels are divided by T too when `label_is_logits`.
    pub temperature: f64,
    /// The targets are softmax_S(y/T) (true) or the raw labels (false).
    pub label_is_logits: bool,
    /// Learn x ← x·|w| + b (w from 1, b from 0) before T.
    pub scale_logits: bool,
    /// The optimiser of (w, b) with `scale_logits`: `{ optimizer, learning_rate, ... }`
    /// (`none` when absent: d total/d(w, b) is reported and the trainer applies it).
    pub scale_optimizer: Option<serde_json::Value>,
    /// The resolved optimiser, from the key above.
    #[serde(skip)]
    pub scale: Option<Optimizer>,
}

impl Default for ListwiseRankParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            label_is_logits: false,
            scale_logits: false,
            scale_optimizer: None,
            scale: None,
        }
    }
}

impl Params for ListwiseRankParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        positive("temperature", self.temperature)?;
        self.scale = scale_optimizer(self.scale_logits, self.scale_optimizer.as_ref())?;
        Ok(())
    }
}

/// `listwise_distill_loss` (EasyRec `LISTWISE_DISTILL_LOSS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListwiseDistillParams {
    /// T > 0: z = x/T (the targets are not divided by T).
    pub temperature: f64,
    /// c ≥ 1: the teacher's positions are clipped to [1, c].
    pub label_clip_max_value: f64,
    /// Learn x ← x·|w| + b (w from 1, b from 0) before T.
    pub scale_logits: bool,
    /// The optimiser of (w, b) with `scale_logits` (as for `listwise_rank_loss`).
    pub scale_optimizer: Option<serde_json::Value>,
    /// The resolved optimiser, from the key above.
    #[serde(skip)]
    pub scale: Option<Optimizer>,
}

impl Default for ListwiseDistillParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            label_clip_max_value: 512.0,
            scale_logits: false,
            scale_optimizer: None,
            scale: None,
        }
    }
}

impl Params for ListwiseDistillParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        positive("temperature", self.temperature)?;
        // Below 1 the clip to [1, c] has an empty range (and log1p(c) − log(y) can go negative).
        // (Non-finite numbers are refused for every key before this.)
        if self.label_clip_max_value < 1.0 {
            return Err(ParamError::new(
                "label_clip_max_value",
                format!(
                    "must be >= 1 (teacher positions are clipped to [1, label_clip_max_value]), \
                     got {}",
                    self.label_clip_max_value
                ),
            ));
        }
        self.scale = scale_optimizer(self.scale_logits, self.scale_optimizer.as_ref())?;
        Ok(())
    }
}

/// What every listwise loss type's parameters give.
pub(crate) trait ListParams {
    /// The resolved spec.
    fn spec(&self) -> ListSpec;
}

impl ListParams for ListwiseRankParams {
    fn spec(&self) -> ListSpec {
        ListSpec {
            targets: if self.label_is_logits {
                ListTargets::LabelLogits
            } else {
                ListTargets::Raw
            },
            temperature: self.temperature,
            scale: self.scale.clone(),
        }
    }
}

impl ListParams for ListwiseDistillParams {
    fn spec(&self) -> ListSpec {
        ListSpec {
            targets: ListTargets::Distill {
                clip_max: self.label_clip_max_value,
            },
            temperature: self.temperature,
            scale: self.scale.clone(),
        }
    }
}
