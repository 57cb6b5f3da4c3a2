//! Loss configuration: the terms, their inputs and parameters, and how they are combined.
//!
//! TOML and JSON share one schema (see the README). Names follow EasyRec (`loss_type` in snake_case,
//! `gamma`, `alpha`, `label_smoothing`, ...); formulas and defaults are in `shared/LOSSES.md`.
//! Parsing is strict: unknown keys, unknown loss types and bad values are errors naming the term
//! and the key.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// How a term's per-row losses are reduced to one number (LOSSES.md, "Reduction").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Σ w·l / #{w ≠ 0} (EasyRec / TF `SUM_BY_NONZERO_WEIGHTS`); 0 when no weight is non-zero.
    NonzeroMean,
    /// Σ w·l / Σ w (PyTorch with class or sample weights); 0 when Σ w = 0.
    WeightedMean,
    /// Σ w·l / B.
    Mean,
    /// Σ w·l.
    Sum,
}

impl Reduction {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "nonzero_mean" => Self::NonzeroMean,
            "weighted_mean" => Self::WeightedMean,
            "mean" => Self::Mean,
            "sum" => Self::Sum,
            _ => return None,
        })
    }
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonzeroMean => "nonzero_mean",
            Self::WeightedMean => "weighted_mean",
            Self::Mean => "mean",
            Self::Sum => "sum",
        }
    }
}

/// How the terms are combined into the total (LOSSES.md, "Combining terms").
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// total = Σ weight_k · L_k.
    Fixed,
    /// Kendall et al. 2018: learned log-variances s_k for terms with `learn_loss_weight`.
    Uncertainty(Optimizer),
    /// RLW (Lin et al. 2021): weights = softmax(N(0, I)) drawn each step from `seed` and the step.
    Random {
        /// Seed of the counter-based generator.
        seed: u32,
    },
    /// θ-EMA reweighting of an auxiliary term against a main term.
    EmaReweight(EmaReweight),
}

/// The engine's own optimiser step on the learned uncertainty weights, applied on the GPU.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    /// The trainer applies d/ds itself (it is in the output); s never changes inside lossfuse.
    None,
    /// s ← s − lr · d/ds.
    Sgd {
        /// Learning rate.
        learning_rate: f64,
    },
    /// Adam (Kingma & Ba 2015) with bias correction.
    Adam {
        /// Learning rate.
        learning_rate: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator guard.
        epsilon: f64,
    },
}

/// Parameters of `ema_reweight`: θ̃ = L_main / (L_main + λ L_aux); θ ← α θ̃ + (1 − α) θ.
#[derive(Clone, Debug, PartialEq)]
pub struct EmaReweight {
    /// Name of the main term (weight 1).
    pub main: String,
    /// Name of the auxiliary term (weight θ).
    pub aux: String,
    /// EMA rate α.
    pub alpha: f64,
    /// λ in θ̃.
    pub lambda: f64,
    /// Initial θ.
    pub theta0: f64,
}

/// Options shared by the softmax cross-entropy forms (PyTorch `F.cross_entropy` semantics).
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxParams {
    /// ε: mixes the target with the uniform distribution.
    pub label_smoothing: f64,
    /// T: logits are divided by it.
    pub temperature: f64,
    /// Rows whose class id equals this contribute nothing.
    pub ignore_index: Option<i64>,
    /// Per-class weights c (length C).
    pub class_weights: Option<Vec<f64>>,
    /// PaLM z-loss coefficient: adds z_loss · lse².
    pub z_loss: f64,
}

impl Default for SoftmaxParams {
    fn default() -> Self {
        Self {
            label_smoothing: 0.0,
            temperature: 1.0,
            ignore_index: None,
            class_weights: None,
            z_loss: 0.0,
        }
    }
}

/// The per-pair loss of a pairwise-in-session term (LOSSES.md, "Pairwise-in-session terms"), with
/// d = (x_i − x_j)/T for a pair whose first row has the higher label.
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
    /// `pairwise_hinge_loss`: relu((y_i − y_j) − d) with use_label_margin, else relu(margin − d).
    Hinge {
        /// Margin when the label gap is not used.
        margin: f64,
        /// Use the label gap y_i − y_j as the margin.
        use_label_margin: bool,
    },
}

impl PairLoss {
    /// EasyRec's loss type name in snake_case.
    pub fn loss_type(&self) -> &'static str {
        match self {
            Self::Logistic { .. } => "pair_wise_loss",
            Self::LogisticMargin { .. } => "pairwise_logistic_loss",
            Self::Focal { .. } => "pairwise_focal_loss",
            Self::Hinge { .. } => "pairwise_hinge_loss",
        }
    }
}

/// How `jrc_loss` combines its calibration (CE) and ranking (generalisation) parts.
#[derive(Clone, Debug, PartialEq)]
pub enum JrcWeighting {
    /// α·ce + (1 − α)·ge.
    Fixed,
    /// e^{−u1}·ce + 0.5·u1 + e^{−u2}·ge + 0.5·u2 with u1, u2 learned (start 0), kept in the
    /// state and stepped by the given optimiser (`none`: the trainer applies d/du itself).
    Uncertainty(Optimizer),
}

/// How a retrieval or contrastive term scores a pair of embeddings (LOSSES.md, "Retrieval and
/// embedding terms").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Similarity {
    /// u·v.
    Dot,
    /// û·v̂ with x̂ = x / max(‖x‖, 1e-12) (PyTorch `F.normalize`), gradient through the
    /// normalisation.
    Cosine,
}

impl Similarity {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dot => "dot",
            Self::Cosine => "cosine",
        }
    }
}

/// The parameters shared by `in_batch_softmax` and `cross_batch_softmax`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrievalParams {
    /// T: s_ij = sim(u_i, v_j)/T − log_q_j.
    pub temperature: f64,
    /// Dot or cosine.
    pub similarity: Similarity,
    /// Columns j ≠ i (and bank rows) with item_id_j = item_id_i get −∞ (needs `item_ids`;
    /// default: true when `item_ids` is given).
    pub remove_accidental_hits: bool,
}

/// Which InfoNCE form `contrastive_loss` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContrastiveVariant {
    /// Rows a_i against columns b_j; the positive is b_i (EasyRec `info_nce_loss`).
    InfoNce,
    /// SimCLR NT-Xent over the 2B rows of [a; b]: each row's positive is its other view, the
    /// negatives are the other 2B − 2 rows (EasyRec `nce_loss`).
    NtXent,
}

/// Every `loss_type` a config may name (LOSSES.md), in the order LOSSES.md lists them.
pub const LOSS_TYPES: &[&str] = &[
    "classification",
    "softmax_cross_entropy",
    "l2_loss",
    "sigmoid_l2_loss",
    "cross_entropy_loss",
    "binary_focal_loss",
    "esmm",
    "ghm_c",
    "f1_reweighted_loss",
    "pair_wise_loss",
    "pairwise_logistic_loss",
    "pairwise_focal_loss",
    "pairwise_hinge_loss",
    "jrc_loss",
    "in_batch_softmax",
    "cross_batch_softmax",
    "contrastive_loss",
    "softmax_cross_entropy_with_negative_mining",
    "circle_loss",
    "multi_similarity_loss",
];

/// Every `loss_weight_strategy` (LOSSES.md, "Combining terms").
pub const WEIGHT_STRATEGIES: &[&str] = &["fixed", "uncertainty", "random", "ema_reweight"];

/// The largest `bank_size` of `cross_batch_softmax`.
pub const MAX_BANK_SIZE: u32 = 1 << 24;

/// The largest `bins` of `ghm_c`: the GPU keeps one workgroup counter per bin.
pub const MAX_GHM_BINS: u32 = 1024;

/// A loss type with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum TermKind {
    /// EasyRec `CLASSIFICATION`: sigmoid CE for one logit, softmax CE for C ≥ 2 (decided by shape).
    Classification {
        /// Binary label smoothing (one logit) or ε (softmax).
        label_smoothing: f64,
        /// PyTorch `BCEWithLogits` pos_weight (one logit only).
        pos_weight: Option<f64>,
        /// Softmax options when the logits have C ≥ 2 columns.
        softmax: SoftmaxParams,
    },
    /// Softmax cross-entropy over [B, C] logits.
    SoftmaxCrossEntropy(SoftmaxParams),
    /// (x − y)² on predictions.
    L2,
    /// (σ(x) − y)².
    SigmoidL2,
    /// Binary CE on probabilities with ε = 1e-7.
    CrossEntropy,
    /// EasyRec `BINARY_FOCAL_LOSS`.
    BinaryFocal {
        /// Focusing parameter γ.
        gamma: f64,
        /// Class balance α (none: 1 for both classes).
        alpha: Option<f64>,
        /// OHEM keep ratio (1: all rows).
        ohem_ratio: f64,
        /// Binary label smoothing.
        label_smoothing: f64,
    },
    /// ESMM (Ma et al. SIGIR 2018): CE(σ(a), click) + CE(σ(a)σ(b), buy).
    Esmm,
    /// GHM-C (Li et al. AAAI 2019; mmdetection `GHMC`): sigmoid CE reweighted by the inverse
    /// density of the gradient norm g = |σ(x) − y| over `bins` equal bins (weights detached).
    GhmC {
        /// Number of bins of g in [0, 1] (1..=1024).
        bins: u32,
        /// Momentum of the per-bin EMA of the counts (0: this batch's counts only).
        momentum: f64,
    },
    /// EasyRec `F1_REWEIGHTED_LOSS`: sigmoid CE with negatives weighted by
    /// tp / ((β² − 1)·n_pos + tp + 1e-8), tp = Σ σ(x), not detached.
    F1Reweighted {
        /// β²: > 1 favours recall, < 1 precision.
        f1_beta_square: f64,
        /// Binary label smoothing of the CE label.
        label_smoothing: f64,
    },
    /// EasyRec's pairwise losses within sessions: pairs (i, j) with y_i > y_j in the same session
    /// (every pair of the batch without a `session` tensor), pair weight w_i.
    Pairwise {
        /// The per-pair loss.
        loss: PairLoss,
        /// T: d = (x_i − x_j)/T.
        temperature: f64,
        /// OHEM keep ratio over pairs (1: all pairs).
        ohem_ratio: f64,
    },
    /// EasyRec `JRC_LOSS` (Sheng et al. 2023, joint ranking-calibration): softmax CE over two
    /// columns plus a listwise loss over the rows of each session.
    Jrc {
        /// α of the fixed combination.
        alpha: f64,
        /// Each row competes with every row of its session (true) or only with the rows of the
        /// other label (false).
        same_label_loss: bool,
        /// How ce and ge are combined.
        weighting: JrcWeighting,
    },
    /// Sampled softmax over the other rows of the batch (TFRS `Retrieval`; Yi et al. RecSys 2019
    /// for the logQ correction).
    InBatchSoftmax(RetrievalParams),
    /// Cross-batch negative sampling (Wang et al. SIGIR 2021): the batch plus a GPU-resident FIFO
    /// bank of earlier items.
    CrossBatchSoftmax {
        /// Temperature, similarity, accidental hits.
        retrieval: RetrievalParams,
        /// M: rows of the bank.
        bank_size: u32,
        /// Steps during which the bank is filled but not used as negatives.
        warmup_steps: u32,
    },
    /// Self-supervised contrastive loss between two views (Yao et al. CIKM 2021).
    Contrastive {
        /// τ.
        temperature: f64,
        /// Dot or cosine (default cosine).
        similarity: Similarity,
        /// InfoNCE or NT-Xent.
        variant: ContrastiveVariant,
    },
    /// EasyRec `softmax_loss_with_negative_mining` (SV-softmax, Wang et al. AAAI 2020): cyclic
    /// shifts of the item batch as negatives, support-vector reweighting of hard negatives.
    NegativeMining {
        /// K: shifts per row (< B).
        num_negative_samples: u32,
        /// Margin subtracted from the positive's logit.
        margin: f64,
        /// Scale of every logit.
        gamma: f64,
        /// t: a hard negative's logit s becomes t·s + t − 1.
        coefficient_of_support_vector: f64,
        /// Shifts drawn per step from (seed, step); none: shifts 1..K.
        seed: Option<u32>,
    },
    /// Circle loss (Sun et al. CVPR 2020; EasyRec `circle_loss`) over a batch of embeddings.
    Circle {
        /// m.
        margin: f64,
        /// γ.
        gamma: f64,
    },
    /// Multi-similarity loss (Wang et al. CVPR 2019; EasyRec `ms_loss`).
    MultiSimilarity {
        /// α (positives).
        alpha: f64,
        /// β (negatives).
        beta: f64,
        /// λ.
        lamb: f64,
        /// EasyRec's mining margin; it only acts with EasyRec's `ms_mining`, which lossfuse does
        /// not implement (the formula of LOSSES.md has no mining), so it is accepted and kept.
        eps: f64,
    },
}

impl TermKind {
    /// EasyRec's loss type name in snake_case.
    pub fn loss_type(&self) -> &'static str {
        match self {
            Self::Classification { .. } => "classification",
            Self::SoftmaxCrossEntropy(_) => "softmax_cross_entropy",
            Self::L2 => "l2_loss",
            Self::SigmoidL2 => "sigmoid_l2_loss",
            Self::CrossEntropy => "cross_entropy_loss",
            Self::BinaryFocal { .. } => "binary_focal_loss",
            Self::Esmm => "esmm",
            Self::GhmC { .. } => "ghm_c",
            Self::F1Reweighted { .. } => "f1_reweighted_loss",
            Self::Pairwise { loss, .. } => loss.loss_type(),
            Self::Jrc { .. } => "jrc_loss",
            Self::InBatchSoftmax(_) => "in_batch_softmax",
            Self::CrossBatchSoftmax { .. } => "cross_batch_softmax",
            Self::Contrastive { .. } => "contrastive_loss",
            Self::NegativeMining { .. } => "softmax_cross_entropy_with_negative_mining",
            Self::Circle { .. } => "circle_loss",
            Self::MultiSimilarity { .. } => "multi_similarity_loss",
        }
    }

    /// The input roles this loss type reads: (role, required).
    pub fn roles(&self) -> &'static [(&'static str, bool)] {
        match self {
            Self::Classification { .. }
            | Self::SoftmaxCrossEntropy(_)
            | Self::SigmoidL2
            | Self::BinaryFocal { .. }
            | Self::GhmC { .. }
            | Self::F1Reweighted { .. } => &[("logits", true), ("labels", true)],
            Self::L2 => &[("predictions", true), ("labels", true)],
            Self::CrossEntropy => &[("probabilities", true), ("labels", true)],
            Self::Pairwise { .. } => &[("logits", true), ("labels", true), ("session", false)],
            Self::Jrc { .. } => &[("logits", true), ("labels", true), ("session", true)],
            Self::InBatchSoftmax(_) | Self::CrossBatchSoftmax { .. } => &[
                ("user", true),
                ("item", true),
                ("item_ids", false),
                ("log_q", false),
            ],
            Self::Contrastive { .. } => &[("view_a", true), ("view_b", true)],
            Self::NegativeMining { .. } => &[("user", true), ("item", true), ("labels", false)],
            Self::Circle { .. } | Self::MultiSimilarity { .. } => {
                &[("embeddings", true), ("labels", true), ("session", false)]
            }
            Self::Esmm => &[
                ("ctr_logits", true),
                ("cvr_logits", true),
                ("ctr_labels", true),
                ("ctcvr_labels", true),
            ],
        }
    }

    /// Roles whose tensors receive a gradient.
    pub fn differentiable_roles(&self) -> &'static [&'static str] {
        match self {
            Self::L2 => &["predictions"],
            Self::CrossEntropy => &["probabilities"],
            Self::Esmm => &["ctr_logits", "cvr_logits"],
            Self::InBatchSoftmax(_)
            | Self::CrossBatchSoftmax { .. }
            | Self::NegativeMining { .. } => &["user", "item"],
            Self::Contrastive { .. } => &["view_a", "view_b"],
            Self::Circle { .. } | Self::MultiSimilarity { .. } => &["embeddings"],
            _ => &["logits"],
        }
    }

    /// Whether the uncertainty strategy uses the 0.5·e^{−s} form (regression terms).
    pub fn is_regression(&self) -> bool {
        matches!(self, Self::L2 | Self::SigmoidL2)
    }
}

/// A term's per-row sample weights: one tensor, or a linear combination of label tensors.
#[derive(Clone, Debug, PartialEq)]
pub enum SampleWeights {
    /// w_i = tensor_i.
    Tensor(String),
    /// w_i = Σ coefficient · tensor_i (e.g. click·1 + finish·3 + long_view·5).
    Combination(Vec<(String, f64)>),
}

impl SampleWeights {
    /// The tensors read, with their coefficient (1 for a plain tensor).
    pub fn parts(&self) -> Vec<(String, f64)> {
        match self {
            Self::Tensor(t) => vec![(t.clone(), 1.0)],
            Self::Combination(v) => v.clone(),
        }
    }
}

/// One configured loss term.
#[derive(Clone, Debug, PartialEq)]
pub struct LossTerm {
    /// Unique name (defaults to the loss type).
    pub name: String,
    /// Loss type and parameters.
    pub kind: TermKind,
    /// Fixed weight (ignored by learned uncertainty weights and by `random`).
    pub weight: f64,
    /// Whether `uncertainty` learns this term's weight.
    pub learn_loss_weight: bool,
    /// Reduction; `None` means the loss type's default.
    pub reduction: Option<Reduction>,
    /// role → tensor name.
    pub inputs: BTreeMap<String, String>,
    /// Optional per-row sample weights.
    pub sample_weights: Option<SampleWeights>,
}

impl LossTerm {
    /// The tensor bound to a role.
    pub fn input(&self, role: &str) -> Option<&str> {
        self.inputs.get(role).map(String::as_str)
    }

    /// Whether this is a `jrc_loss` term that learns its own (u1, u2) (LOSSES.md, JRC with
    /// `loss_weight_strategy = "uncertainty"`), so that d total / d(u1, u2) is reported.
    pub fn learns_jrc_weights(&self) -> bool {
        matches!(
            self.kind,
            TermKind::Jrc {
                weighting: JrcWeighting::Uncertainty(_),
                ..
            }
        )
    }

    /// The reduction in force: the configured one, else the loss type's default
    /// (`weighted_mean` for softmax CE with class weights, as PyTorch; `nonzero_mean` otherwise).
    pub fn effective_reduction(&self) -> Reduction {
        if let Some(r) = self.reduction {
            return r;
        }
        let has_class_weights = match &self.kind {
            TermKind::SoftmaxCrossEntropy(p) => p.class_weights.is_some(),
            TermKind::Classification { softmax, .. } => softmax.class_weights.is_some(),
            _ => false,
        };
        if has_class_weights {
            Reduction::WeightedMean
        } else {
            Reduction::NonzeroMean
        }
    }
}

/// The whole configuration: terms and how they are combined.
#[derive(Clone, Debug, PartialEq)]
pub struct LossConfig {
    /// How the terms are combined.
    pub strategy: Strategy,
    /// Flood level b (Ishida et al. 2020): total ← |total − b| + b.
    pub flooding: Option<f64>,
    /// The terms, in order.
    pub losses: Vec<LossTerm>,
}

const TERM_COMMON_KEYS: &[&str] = &[
    "name",
    "loss_type",
    "weight",
    "learn_loss_weight",
    "reduction",
    "sample_weights",
];

impl LossConfig {
    /// Parses the TOML form.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let value: Value =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
        Self::from_value(&value)
    }

    /// Parses the JSON form.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("invalid JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Reads a `.toml` or `.json` file (by extension; TOML otherwise).
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        }
    }

    /// Builds a config from an already parsed JSON/TOML value.
    pub fn from_value(value: &Value) -> Result<Self> {
        let top = value
            .as_object()
            .ok_or_else(|| Error::Config("the config must be a table".into()))?;
        const TOP_KEYS: &[&str] = &[
            "loss_weight_strategy",
            "flooding",
            "losses",
            "uncertainty",
            "random",
            "ema_reweight",
        ];
        for key in top.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                return Err(Error::Config(format!(
                    "unknown top-level key '{key}'; expected one of {}",
                    TOP_KEYS.join(", ")
                )));
            }
        }
        let strategy_name = match top.get("loss_weight_strategy") {
            None => "fixed",
            Some(v) => v
                .as_str()
                .ok_or_else(|| Error::Config("'loss_weight_strategy' must be a string".into()))?,
        };
        for (table, owner) in [
            ("uncertainty", "uncertainty"),
            ("random", "random"),
            ("ema_reweight", "ema_reweight"),
        ] {
            if top.contains_key(table) && strategy_name != owner {
                return Err(Error::Config(format!(
                    "table [{table}] is only valid with loss_weight_strategy = \"{owner}\" (it is \"{strategy_name}\")"
                )));
            }
        }
        let strategy = match strategy_name {
            "fixed" => Strategy::Fixed,
            "uncertainty" => {
                Strategy::Uncertainty(parse_optimizer(top.get("uncertainty"), "[uncertainty]")?)
            }
            "random" => {
                let t = Table::new(top.get("random"), "[random]")?;
                t.only(&["seed"])?;
                let seed = t.u32_or("seed", 0)?;
                Strategy::Random { seed }
            }
            "ema_reweight" => {
                let t = Table::new(top.get("ema_reweight"), "[ema_reweight]")?;
                t.only(&["main", "aux", "alpha", "lambda", "theta0"])?;
                let ema = EmaReweight {
                    main: t.string("main")?,
                    aux: t.string("aux")?,
                    alpha: t.f64_or("alpha", 0.1)?,
                    lambda: t.f64_or("lambda", 1.0)?,
                    theta0: t.f64_or("theta0", 0.0)?,
                };
                if !(0.0..=1.0).contains(&ema.alpha) {
                    return Err(Error::Config(format!(
                        "[ema_reweight] alpha must be in [0, 1], got {}",
                        ema.alpha
                    )));
                }
                Strategy::EmaReweight(ema)
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown loss_weight_strategy '{other}'; expected one of {}",
                    WEIGHT_STRATEGIES.join(", ")
                )))
            }
        };
        let flooding = match top.get("flooding") {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| Error::Config("'flooding' must be a number".into()))?,
            ),
        };
        let list = top
            .get("losses")
            .ok_or_else(|| Error::Config("no [[losses]] given".into()))?
            .as_array()
            .ok_or_else(|| Error::Config("'losses' must be an array of tables".into()))?;
        let mut losses = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let obj = item
                .as_object()
                .ok_or_else(|| Error::Config(format!("losses[{i}] must be a table")))?;
            losses.push(parse_term(i, obj)?);
        }
        let config = LossConfig {
            strategy,
            flooding,
            losses,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-term rules: unique names, terms named by the strategy exist.
    pub fn validate(&self) -> Result<()> {
        if self.losses.is_empty() {
            return Err(Error::Config("no [[losses]] given".into()));
        }
        for (i, t) in self.losses.iter().enumerate() {
            if self.losses[..i].iter().any(|u| u.name == t.name) {
                return Err(Error::term(
                    &t.name,
                    "duplicate term name; give each term a unique 'name'",
                ));
            }
        }
        if let Strategy::EmaReweight(ema) = &self.strategy {
            for (key, name) in [("main", &ema.main), ("aux", &ema.aux)] {
                if !self.losses.iter().any(|t| &t.name == name) {
                    return Err(Error::Config(format!(
                        "[ema_reweight] {key} = '{name}' names no term"
                    )));
                }
            }
            if ema.main == ema.aux {
                return Err(Error::Config(
                    "[ema_reweight] main and aux must be different terms".into(),
                ));
            }
        }
        if self.losses.iter().any(|t| t.learn_loss_weight)
            && !matches!(self.strategy, Strategy::Uncertainty(_))
        {
            let t = self.losses.iter().find(|t| t.learn_loss_weight).unwrap();
            return Err(Error::term(
                &t.name,
                "learn_loss_weight = true needs loss_weight_strategy = \"uncertainty\"",
            ));
        }
        Ok(())
    }

    /// The term with this name.
    pub fn term(&self, name: &str) -> Option<&LossTerm> {
        self.losses.iter().find(|t| t.name == name)
    }
}

fn parse_optimizer(v: Option<&Value>, owner: &str) -> Result<Optimizer> {
    let t = Table::new(v, owner)?;
    t.only(&["optimizer", "learning_rate", "beta1", "beta2", "epsilon"])?;
    let kind = t.string_or("optimizer", "none")?;
    let lr = t.f64_or("learning_rate", 0.01)?;
    Ok(match kind.as_str() {
        "none" => Optimizer::None,
        "sgd" => Optimizer::Sgd { learning_rate: lr },
        "adam" => Optimizer::Adam {
            learning_rate: lr,
            beta1: t.f64_or("beta1", 0.9)?,
            beta2: t.f64_or("beta2", 0.999)?,
            epsilon: t.f64_or("epsilon", 1e-8)?,
        },
        other => {
            return Err(Error::Config(format!(
                "{owner} optimizer '{other}' unknown; expected none, sgd or adam"
            )))
        }
    })
}

/// Typed access to a table with errors that name the table and key.
struct Table<'a> {
    map: Option<&'a Map<String, Value>>,
    owner: String,
    term: Option<String>,
}

impl<'a> Table<'a> {
    fn new(v: Option<&'a Value>, owner: &str) -> Result<Self> {
        let map = match v {
            None => None,
            Some(v) => Some(
                v.as_object()
                    .ok_or_else(|| Error::Config(format!("{owner} must be a table")))?,
            ),
        };
        Ok(Self {
            map,
            owner: owner.to_string(),
            term: None,
        })
    }

    fn err(&self, message: String) -> Error {
        match &self.term {
            Some(t) => Error::term(t, message),
            None => Error::Config(format!("{}: {message}", self.owner)),
        }
    }

    fn only(&self, allowed: &[&str]) -> Result<()> {
        if let Some(map) = self.map {
            for k in map.keys() {
                if !allowed.contains(&k.as_str()) {
                    return Err(self.err(format!(
                        "unknown key '{k}'; expected one of {}",
                        allowed.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.err(format!("'{key}' must be a finite number, got {v}"))),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    fn u32_or(&self, key: &str, default: u32) -> Result<u32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| self.err(format!("'{key}' must be an integer in 0..2^32, got {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("'{key}' must be true or false, got {v}"))),
        }
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.get(key) {
            None => Err(self.err(format!("'{key}' is required"))),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.err(format!("'{key}' must be a string, got {v}"))),
        }
    }

    fn string_or(&self, key: &str, default: &str) -> Result<String> {
        if self.get(key).is_none() {
            return Ok(default.to_string());
        }
        self.string(key)
    }

    fn in_range(&self, key: &str, x: f64, lo: f64, hi: f64) -> Result<f64> {
        if x < lo || x > hi {
            return Err(self.err(format!("'{key}' must be in [{lo}, {hi}], got {x}")));
        }
        Ok(x)
    }

    fn positive(&self, key: &str, x: f64) -> Result<f64> {
        if x <= 0.0 {
            return Err(self.err(format!("'{key}' must be > 0, got {x}")));
        }
        Ok(x)
    }
}

fn parse_softmax(t: &Table) -> Result<SoftmaxParams> {
    let label_smoothing = t.f64_or("label_smoothing", 0.0)?;
    t.in_range("label_smoothing", label_smoothing, 0.0, 1.0)?;
    let temperature = t.f64_or("temperature", 1.0)?;
    t.positive("temperature", temperature)?;
    let ignore_index = match t.get("ignore_index") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|x| i32::try_from(*x).is_ok())
                .ok_or_else(|| {
                    t.err(format!("'ignore_index' must be a 32-bit integer, got {v}"))
                })?,
        ),
    };
    let class_weights = match t.get("class_weights") {
        None => None,
        Some(v) => {
            let arr = v
                .as_array()
                .ok_or_else(|| t.err("'class_weights' must be an array of numbers".into()))?;
            let mut out = Vec::with_capacity(arr.len());
            for x in arr {
                let x = x
                    .as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        t.err(format!(
                            "'class_weights' must hold finite non-negative numbers, got {x}"
                        ))
                    })?;
                out.push(x);
            }
            Some(out)
        }
    };
    let z_loss = t.f64_or("z_loss", 0.0)?;
    if z_loss < 0.0 {
        return Err(t.err(format!("'z_loss' must be >= 0, got {z_loss}")));
    }
    Ok(SoftmaxParams {
        label_smoothing,
        temperature,
        ignore_index,
        class_weights,
        z_loss,
    })
}

/// Focal parameters, shared by `binary_focal_loss` and `pairwise_focal_loss`: gamma (2, ≥ 0) and
/// alpha (unset, in [0, 1]).
fn focal_params(t: &Table) -> Result<(f64, Option<f64>)> {
    let gamma = t.f64_or("gamma", 2.0)?;
    if gamma < 0.0 {
        return Err(t.err(format!("'gamma' must be >= 0, got {gamma}")));
    }
    let alpha = t.f64_opt("alpha")?;
    if let Some(a) = alpha {
        t.in_range("alpha", a, 0.0, 1.0)?;
    }
    Ok((gamma, alpha))
}

/// The OHEM keep ratio (1: keep everything), in (0, 1].
fn ohem_ratio(t: &Table) -> Result<f64> {
    let ohem_ratio = t.f64_or("ohem_ratio", 1.0)?;
    if ohem_ratio <= 0.0 || ohem_ratio > 1.0 {
        return Err(t.err(format!("'ohem_ratio' must be in (0, 1], got {ohem_ratio}")));
    }
    Ok(ohem_ratio)
}

/// The four pairwise loss types: their own parameters, then temperature and ohem_ratio.
fn parse_pairwise(t: &Table, loss_type: &str) -> Result<(TermKind, &'static [&'static str])> {
    let temperature = t.f64_or("temperature", 1.0)?;
    t.positive("temperature", temperature)?;
    let ohem_ratio = ohem_ratio(t)?;
    let (loss, params): (PairLoss, &'static [&'static str]) = match loss_type {
        "pair_wise_loss" => (
            PairLoss::Logistic {
                margin: t.f64_or("margin", 0.0)?,
            },
            &["margin", "temperature", "ohem_ratio"],
        ),
        "pairwise_logistic_loss" => (
            PairLoss::LogisticMargin {
                hinge_margin: t.f64_opt("hinge_margin")?,
                use_label_margin: t.bool_or("use_label_margin", false)?,
            },
            &[
                "hinge_margin",
                "use_label_margin",
                "temperature",
                "ohem_ratio",
            ],
        ),
        "pairwise_focal_loss" => {
            let (gamma, alpha) = focal_params(t)?;
            (
                PairLoss::Focal {
                    gamma,
                    alpha,
                    hinge_margin: t.f64_opt("hinge_margin")?,
                },
                &[
                    "gamma",
                    "alpha",
                    "hinge_margin",
                    "temperature",
                    "ohem_ratio",
                ],
            )
        }
        _ => (
            PairLoss::Hinge {
                margin: t.f64_or("margin", 1.0)?,
                use_label_margin: t.bool_or("use_label_margin", true)?,
            },
            &["margin", "use_label_margin", "temperature", "ohem_ratio"],
        ),
    };
    Ok((
        TermKind::Pairwise {
            loss,
            temperature,
            ohem_ratio,
        },
        params,
    ))
}

fn similarity(t: &Table, default: Similarity) -> Result<Similarity> {
    match t.string_or("similarity", default.as_str())?.as_str() {
        "dot" => Ok(Similarity::Dot),
        "cosine" => Ok(Similarity::Cosine),
        other => Err(t.err(format!(
            "unknown similarity '{other}'; expected dot or cosine"
        ))),
    }
}

fn temperature(t: &Table, default: f64) -> Result<f64> {
    let temperature = t.f64_or("temperature", default)?;
    t.positive("temperature", temperature)
}

/// The retrieval and embedding terms (LOSSES.md, "Retrieval and embedding terms").
fn parse_embedding_term(
    t: &Table,
    loss_type: &str,
    obj: &Map<String, Value>,
) -> Result<(TermKind, &'static [&'static str])> {
    let retrieval = |t: &Table| -> Result<RetrievalParams> {
        let has_ids = obj.contains_key("item_ids");
        let remove_accidental_hits = t.bool_or("remove_accidental_hits", has_ids)?;
        if remove_accidental_hits && !has_ids {
            return Err(t.err(
                "'remove_accidental_hits' needs the 'item_ids' role (the ids to compare)".into(),
            ));
        }
        Ok(RetrievalParams {
            temperature: temperature(t, 1.0)?,
            similarity: similarity(t, Similarity::Dot)?,
            remove_accidental_hits,
        })
    };
    Ok(match loss_type {
        "in_batch_softmax" => (
            TermKind::InBatchSoftmax(retrieval(t)?),
            &["temperature", "similarity", "remove_accidental_hits"],
        ),
        "cross_batch_softmax" => {
            let bank_size = match t.get("bank_size") {
                None => {
                    return Err(t.err("'bank_size' (rows of the memory bank) is required".into()))
                }
                Some(_) => t.u32_or("bank_size", 0)?,
            };
            if !(1..=MAX_BANK_SIZE).contains(&bank_size) {
                return Err(t.err(format!(
                    "'bank_size' must be in [1, {MAX_BANK_SIZE}], got {bank_size}"
                )));
            }
            (
                TermKind::CrossBatchSoftmax {
                    retrieval: retrieval(t)?,
                    bank_size,
                    warmup_steps: t.u32_or("warmup_steps", 0)?,
                },
                &[
                    "temperature",
                    "similarity",
                    "remove_accidental_hits",
                    "bank_size",
                    "warmup_steps",
                ],
            )
        }
        "contrastive_loss" => {
            let variant = match t.string_or("variant", "info_nce")?.as_str() {
                "info_nce" => ContrastiveVariant::InfoNce,
                "nt_xent" => ContrastiveVariant::NtXent,
                other => {
                    return Err(t.err(format!(
                        "unknown variant '{other}'; expected info_nce or nt_xent"
                    )))
                }
            };
            (
                TermKind::Contrastive {
                    temperature: temperature(t, 0.1)?,
                    similarity: similarity(t, Similarity::Cosine)?,
                    variant,
                },
                &["temperature", "similarity", "variant"],
            )
        }
        "softmax_cross_entropy_with_negative_mining" => {
            let num_negative_samples = t.u32_or("num_negative_samples", 4)?;
            if num_negative_samples == 0 {
                return Err(t.err("'num_negative_samples' must be >= 1".into()));
            }
            let gamma = t.f64_or("gamma", 1.0)?;
            t.positive("gamma", gamma)?;
            let seed = match t.get("seed") {
                None => None,
                Some(_) => Some(t.u32_or("seed", 0)?),
            };
            (
                TermKind::NegativeMining {
                    num_negative_samples,
                    margin: t.f64_or("margin", 0.0)?,
                    gamma,
                    coefficient_of_support_vector: t
                        .f64_or("coefficient_of_support_vector", 1.0)?,
                    seed,
                },
                &[
                    "num_negative_samples",
                    "margin",
                    "gamma",
                    "coefficient_of_support_vector",
                    "seed",
                ],
            )
        }
        "circle_loss" => {
            let gamma = t.f64_or("gamma", 32.0)?;
            t.positive("gamma", gamma)?;
            (
                TermKind::Circle {
                    margin: t.f64_or("margin", 0.25)?,
                    gamma,
                },
                &["margin", "gamma"],
            )
        }
        _ => {
            let alpha = t.f64_or("alpha", 2.0)?;
            t.positive("alpha", alpha)?;
            let beta = t.f64_or("beta", 50.0)?;
            t.positive("beta", beta)?;
            let eps = t.f64_or("eps", 0.1)?;
            if eps < 0.0 {
                return Err(t.err(format!("'eps' must be >= 0, got {eps}")));
            }
            (
                TermKind::MultiSimilarity {
                    alpha,
                    beta,
                    lamb: t.f64_or("lamb", 1.0)?,
                    eps,
                },
                &["alpha", "beta", "lamb", "eps"],
            )
        }
    })
}

fn parse_term(index: usize, obj: &Map<String, Value>) -> Result<LossTerm> {
    let loss_type = match obj.get("loss_type") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(Error::Config(format!(
                "losses[{index}].loss_type must be a string, got {v}"
            )))
        }
        None => return Err(Error::Config(format!("losses[{index}] has no loss_type"))),
    };
    let name = match obj.get("name") {
        None => loss_type.clone(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(v) => {
            return Err(Error::Config(format!(
                "losses[{index}].name must be a non-empty string, got {v}"
            )))
        }
    };
    let t = Table {
        map: Some(obj),
        owner: format!("losses[{index}]"),
        term: Some(name.clone()),
    };
    let (kind, params): (TermKind, &[&str]) = match loss_type.as_str() {
        "classification" => {
            let softmax = parse_softmax(&t)?;
            let pos_weight = t.f64_opt("pos_weight")?;
            if let Some(pw) = pos_weight {
                t.positive("pos_weight", pw)?;
            }
            (
                TermKind::Classification {
                    label_smoothing: softmax.label_smoothing,
                    pos_weight,
                    softmax,
                },
                &[
                    "label_smoothing",
                    "pos_weight",
                    "temperature",
                    "ignore_index",
                    "class_weights",
                    "z_loss",
                ],
            )
        }
        "softmax_cross_entropy" => (
            TermKind::SoftmaxCrossEntropy(parse_softmax(&t)?),
            &[
                "label_smoothing",
                "temperature",
                "ignore_index",
                "class_weights",
                "z_loss",
            ],
        ),
        "l2_loss" => (TermKind::L2, &[]),
        "sigmoid_l2_loss" => (TermKind::SigmoidL2, &[]),
        "cross_entropy_loss" => (TermKind::CrossEntropy, &[]),
        "binary_focal_loss" => {
            let (gamma, alpha) = focal_params(&t)?;
            let ohem_ratio = ohem_ratio(&t)?;
            let label_smoothing = t.f64_or("label_smoothing", 0.0)?;
            t.in_range("label_smoothing", label_smoothing, 0.0, 1.0)?;
            (
                TermKind::BinaryFocal {
                    gamma,
                    alpha,
                    ohem_ratio,
                    label_smoothing,
                },
                &["gamma", "alpha", "ohem_ratio", "label_smoothing"],
            )
        }
        "esmm" => (TermKind::Esmm, &[]),
        "ghm_c" => {
            let bins = t.u32_or("bins", 10)?;
            if !(1..=MAX_GHM_BINS).contains(&bins) {
                return Err(t.err(format!("'bins' must be in [1, {MAX_GHM_BINS}], got {bins}")));
            }
            let momentum = t.f64_or("momentum", 0.0)?;
            if !(0.0..1.0).contains(&momentum) {
                return Err(t.err(format!("'momentum' must be in [0, 1), got {momentum}")));
            }
            if obj.contains_key("reduction") {
                return Err(t.err(
                    "'reduction' does not apply to ghm_c: it is normalised by the number of \
                     valid rows (mmdetection GHMC)"
                        .into(),
                ));
            }
            (TermKind::GhmC { bins, momentum }, &["bins", "momentum"])
        }
        "f1_reweighted_loss" => {
            let f1_beta_square = t.f64_or("f1_beta_square", 1.0)?;
            t.positive("f1_beta_square", f1_beta_square)?;
            let label_smoothing = t.f64_or("label_smoothing", 0.0)?;
            t.in_range("label_smoothing", label_smoothing, 0.0, 1.0)?;
            (
                TermKind::F1Reweighted {
                    f1_beta_square,
                    label_smoothing,
                },
                &["f1_beta_square", "label_smoothing"],
            )
        }
        "pair_wise_loss"
        | "pairwise_logistic_loss"
        | "pairwise_focal_loss"
        | "pairwise_hinge_loss" => parse_pairwise(&t, &loss_type)?,
        "jrc_loss" => {
            let alpha = t.f64_or("alpha", 0.5)?;
            t.in_range("alpha", alpha, 0.0, 1.0)?;
            let same_label_loss = t.bool_or("same_label_loss", true)?;
            let weighting = match t.string_or("loss_weight_strategy", "fixed")?.as_str() {
                "fixed" => {
                    if t.get("uncertainty").is_some() {
                        return Err(t.err(
                            "'uncertainty' applies only with loss_weight_strategy = \"uncertainty\""
                                .into(),
                        ));
                    }
                    JrcWeighting::Fixed
                }
                "uncertainty" => JrcWeighting::Uncertainty(parse_optimizer(
                    t.get("uncertainty"),
                    &format!("term '{name}' [uncertainty]"),
                )?),
                other => {
                    return Err(t.err(format!(
                        "unknown loss_weight_strategy '{other}' for jrc_loss; expected fixed or uncertainty"
                    )))
                }
            };
            (
                TermKind::Jrc {
                    alpha,
                    same_label_loss,
                    weighting,
                },
                &[
                    "alpha",
                    "same_label_loss",
                    "loss_weight_strategy",
                    "uncertainty",
                ],
            )
        }
        "in_batch_softmax"
        | "cross_batch_softmax"
        | "contrastive_loss"
        | "softmax_cross_entropy_with_negative_mining"
        | "circle_loss"
        | "multi_similarity_loss" => parse_embedding_term(&t, &loss_type, obj)?,
        other => {
            return Err(Error::term(
                &name,
                format!(
                    "unknown loss_type '{other}'; expected one of {}",
                    LOSS_TYPES.join(", ")
                ),
            ))
        }
    };
    let roles = kind.roles();
    for key in obj.keys() {
        let k = key.as_str();
        if !TERM_COMMON_KEYS.contains(&k)
            && !params.contains(&k)
            && !roles.iter().any(|(r, _)| *r == k)
        {
            let mut expected: Vec<&str> = TERM_COMMON_KEYS.to_vec();
            expected.extend(roles.iter().map(|(r, _)| *r));
            expected.extend(params.iter());
            return Err(Error::term(
                &name,
                format!(
                    "unknown key '{k}' for loss_type '{loss_type}'; expected one of {}",
                    expected.join(", ")
                ),
            ));
        }
    }
    let mut inputs = BTreeMap::new();
    for (role, required) in roles {
        match obj.get(*role) {
            Some(Value::String(s)) if !s.is_empty() => {
                inputs.insert(role.to_string(), s.clone());
            }
            Some(v) => {
                return Err(Error::term(
                    &name,
                    format!("role '{role}' must name a tensor (a string), got {v}"),
                ))
            }
            None if *required => {
                return Err(Error::term(
                    &name,
                    format!("role '{role}' is required for loss_type '{loss_type}'"),
                ))
            }
            None => {}
        }
    }
    let sample_weights = match obj.get("sample_weights") {
        None => None,
        Some(Value::String(s)) => Some(SampleWeights::Tensor(s.clone())),
        Some(Value::Object(m)) => {
            if m.is_empty() {
                return Err(t.err("'sample_weights' table is empty".into()));
            }
            let mut parts = Vec::new();
            for (k, v) in m {
                let c = v.as_f64().filter(|c| c.is_finite()).ok_or_else(|| {
                    t.err(format!(
                        "sample_weights.{k} must be a finite coefficient, got {v}"
                    ))
                })?;
                parts.push((k.clone(), c));
            }
            Some(SampleWeights::Combination(parts))
        }
        Some(v) => {
            return Err(t.err(format!(
                "'sample_weights' must be a tensor name or a table {{ tensor = coefficient, .. }}, got {v}"
            )))
        }
    };
    let reduction = match obj.get("reduction") {
        None => None,
        Some(Value::String(s)) => Some(Reduction::parse(s).ok_or_else(|| {
            t.err(format!(
                "unknown reduction '{s}'; expected nonzero_mean, weighted_mean, mean or sum"
            ))
        })?),
        Some(v) => return Err(t.err(format!("'reduction' must be a string, got {v}"))),
    };
    let weight = t.f64_or("weight", 1.0)?;
    let learn_loss_weight = t.bool_or("learn_loss_weight", false)?;
    Ok(LossTerm {
        name,
        kind,
        weight,
        learn_loss_weight,
        reduction,
        inputs,
        sample_weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_example() {
        let c = LossConfig::from_toml_str(
            r#"
loss_weight_strategy = "fixed"
[[losses]]
name = "ctr_focal"
loss_type = "binary_focal_loss"
weight = 1.0
learn_loss_weight = false
reduction = "nonzero_mean"
logits = "ctr_logits"
labels = "click"
sample_weights = "w"
gamma = 2.0
alpha = 0.25
"#,
        )
        .unwrap();
        assert_eq!(c.losses.len(), 1);
        assert_eq!(
            c.losses[0].kind,
            TermKind::BinaryFocal {
                gamma: 2.0,
                alpha: Some(0.25),
                ohem_ratio: 1.0,
                label_smoothing: 0.0
            }
        );
    }

    #[test]
    fn unknown_key_names_term_and_key() {
        let e = LossConfig::from_toml_str(
            "[[losses]]\nname='f'\nloss_type='binary_focal_loss'\nlogits='x'\nlabels='y'\ngama=2.0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'f'") && e.contains("gama"), "{e}");
    }

    #[test]
    fn unknown_loss_type_and_missing_role() {
        let e = LossConfig::from_toml_str("[[losses]]\nloss_type='nope'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        let e = LossConfig::from_toml_str("[[losses]]\nloss_type='l2_loss'\nlabels='y'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("predictions"), "{e}");
    }

    #[test]
    fn json_and_toml_agree() {
        let a = LossConfig::from_toml_str(
            "flooding = 0.1\n[[losses]]\nloss_type='l2_loss'\npredictions='p'\nlabels='y'\nsample_weights={click=1.0, buy=3.0}\n",
        )
        .unwrap();
        let b = LossConfig::from_json_str(
            r#"{"flooding":0.1,"losses":[{"loss_type":"l2_loss","predictions":"p","labels":"y","sample_weights":{"click":1.0,"buy":3.0}}]}"#,
        )
        .unwrap();
        assert_eq!(a, b);
    }
}
