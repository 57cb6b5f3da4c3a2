//! Loss configuration: the terms, their inputs and parameters, and how they are combined.
//!
//! TOML and JSON share one schema (README, "Configuration"; parsed in [`crate::parse`]). Names
//! follow EasyRec (`loss_type` in snake_case, `gamma`, `alpha`, `label_smoothing`, ...);
//! formulas and defaults are in docs/LOSSES.md. Every loss type, with its roles and typed
//! parameters, is declared by its family module under `src/losses/` and found through the
//! registry ([`crate::losses::registry`]); this module holds what every term shares.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// How a term's per-row losses are reduced to one number (docs/LOSSES.md, "Reduction").
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
    /// The reduction a config names.
    pub fn parse(s: &str) -> Option<Self> {
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

/// How the terms are combined into the total (docs/LOSSES.md, "Combining terms").
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

/// The engine's own optimiser step on learned weights, applied on the GPU.
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

impl Optimizer {
    /// Checks the optimiser's values against their meaning (PyTorch's `Adam` and `SGD` rules,
    /// and ε > 0, without which a zero gradient gives 0/0 at the first step); errors name
    /// `owner` and the key.
    pub fn check(&self, owner: &str) -> Result<()> {
        let bad = |key: &str, rule: &str, x: f64| {
            Err(Error::Config(format!(
                "{owner} '{key}' must be {rule}, got {x}"
            )))
        };
        let lr = match *self {
            Optimizer::None => return Ok(()),
            Optimizer::Sgd { learning_rate } => learning_rate,
            Optimizer::Adam { learning_rate, .. } => learning_rate,
        };
        if !(lr.is_finite() && lr >= 0.0) {
            return bad("learning_rate", "a finite number >= 0", lr);
        }
        if let Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
            ..
        } = *self
        {
            for (key, beta) in [("beta1", beta1), ("beta2", beta2)] {
                if !(0.0..1.0).contains(&beta) {
                    return bad(key, "in [0, 1)", beta);
                }
            }
            if !(epsilon.is_finite() && epsilon > 0.0) {
                return bad("epsilon", "a finite number > 0", epsilon);
            }
        }
        Ok(())
    }
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
    /// Whether θ̃ is a constant of the step (true, the default); false lets the gradient flow
    /// through θ̃ = L_main / (L_main + λ L_aux) within the step, as the published PyTorch code of
    /// the method does (θ of earlier steps stays detached).
    pub detach_theta: bool,
}

/// Every `loss_weight_strategy` (docs/LOSSES.md, "Combining terms").
pub const WEIGHT_STRATEGIES: &[&str] = &["fixed", "uncertainty", "random", "ema_reweight"];

/// A loss type's parameters: a family's typed, serde-parsed struct (e.g. the focal loss's
/// `gamma`, `alpha`, ...), held behind [`TermKind`]. Implemented for every `'static` type that
/// is `Debug + PartialEq + Serialize + Send + Sync`.
pub trait TermParams: Any + fmt::Debug + Send + Sync {
    /// Whether `other` holds the same parameters.
    fn same_as(&self, other: &dyn TermParams) -> bool;
    /// The parameters as a JSON object (for fingerprints and reports).
    fn to_value(&self) -> Value;
    /// For downcasting to the family's type.
    fn as_any(&self) -> &dyn Any;
}

impl<T> TermParams for T
where
    T: Any + fmt::Debug + PartialEq + serde::Serialize + Send + Sync,
{
    fn same_as(&self, other: &dyn TermParams) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }

    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A loss type (EasyRec's name in snake_case) with its parameters. The loss type's roles and
/// family come from the registry ([`crate::losses::registry`]).
#[derive(Clone)]
pub struct TermKind {
    loss_type: &'static str,
    params: Arc<dyn TermParams>,
}

impl TermKind {
    /// `loss_type` with `params` (its family's parameter type; checked when the config is
    /// validated).
    pub fn new(loss_type: &'static str, params: impl TermParams) -> Self {
        Self {
            loss_type,
            params: Arc::new(params),
        }
    }

    /// `loss_type` with parameters already shared.
    pub(crate) fn from_arc(loss_type: &'static str, params: Arc<dyn TermParams>) -> Self {
        Self { loss_type, params }
    }

    /// EasyRec's loss type name in snake_case.
    pub fn loss_type(&self) -> &'static str {
        self.loss_type
    }

    /// The parameters, shared.
    pub(crate) fn params_arc(&self) -> Arc<dyn TermParams> {
        self.params.clone()
    }

    /// The parameters as their family's type `P`, when they are one.
    pub fn params<P: 'static>(&self) -> Option<&P> {
        self.params.as_any().downcast_ref::<P>()
    }

    /// The parameters as held.
    pub fn raw_params(&self) -> &dyn TermParams {
        &*self.params
    }
}

impl PartialEq for TermKind {
    fn eq(&self, other: &Self) -> bool {
        self.loss_type == other.loss_type && self.params.same_as(&*other.params)
    }
}

impl fmt::Debug for TermKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.loss_type, self.params)
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
}

/// What a step does with a NaN or ±Inf input (`nonfinite` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// Refuse the step, naming the tensor and the first bad element; nothing is committed
    /// (host tensors are checked before upload, device buffers on the GPU).
    #[default]
    Error,
    /// Let NaN and ±Inf flow into the values and gradients, as PyTorch does. The terms that
    /// sort, group or normalise by their inputs (pairwise, `jrc_loss`, the embedding terms)
    /// still refuse them; negative sample weights are refused either way.
    Propagate,
}

impl NonFinite {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            NonFinite::Error => "error",
            NonFinite::Propagate => "propagate",
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
    /// What a step does with non-finite inputs.
    pub nonfinite: NonFinite,
    /// The terms, in order.
    pub losses: Vec<LossTerm>,
}

impl LossConfig {
    /// The term with this name.
    pub fn term(&self, name: &str) -> Option<&LossTerm> {
        self.losses.iter().find(|t| t.name == name)
    }
}

/// The keys every term takes beside its roles and its loss type's parameters.
pub(crate) const TERM_COMMON_KEYS: &[&str] = &[
    "name",
    "loss_type",
    "weight",
    "learn_loss_weight",
    "reduction",
    "sample_weights",
];

/// Parses an optimiser table (`{ optimizer = "adam", learning_rate, beta1, beta2, epsilon }`);
/// `owner` names the table in errors.
pub(crate) fn parse_optimizer(v: Option<&Value>, owner: &str) -> Result<Optimizer> {
    let t = Table::new(v, owner)?;
    t.only(&["optimizer", "learning_rate", "beta1", "beta2", "epsilon"])?;
    let kind = t.string_or("optimizer", "none")?;
    let lr = t.f64_or("learning_rate", 0.01)?;
    let optimizer = match kind.as_str() {
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
    };
    optimizer.check(owner)?;
    Ok(optimizer)
}

/// Typed access to a table with errors that name the table and key.
pub(crate) struct Table<'a> {
    map: Option<&'a Map<String, Value>>,
    owner: String,
    term: Option<String>,
}

impl<'a> Table<'a> {
    /// The table `v` (absent: empty), named `owner` in errors.
    pub fn new(v: Option<&'a Value>, owner: &str) -> Result<Self> {
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

    /// A term's table: errors name the term.
    pub fn of_term(map: &'a Map<String, Value>, owner: String, term: &str) -> Self {
        Self {
            map: Some(map),
            owner,
            term: Some(term.to_string()),
        }
    }

    /// An error naming the table (or term).
    pub fn err(&self, message: String) -> Error {
        match &self.term {
            Some(t) => Error::term(t, message),
            None => Error::Config(format!("{}: {message}", self.owner)),
        }
    }

    /// Refuses keys outside `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<()> {
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

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    /// A finite number, when given.
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.err(format!("'{key}' must be a finite number, got {v}"))),
        }
    }

    /// A finite number, else `default`.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    /// An integer in 0..2^32, else `default`.
    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| self.err(format!("'{key}' must be an integer in 0..2^32, got {v}"))),
        }
    }

    /// A boolean, else `default`.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("'{key}' must be true or false, got {v}"))),
        }
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<String> {
        match self.get(key) {
            None => Err(self.err(format!("'{key}' is required"))),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.err(format!("'{key}' must be a string, got {v}"))),
        }
    }

    /// A string, else `default`.
    pub fn string_or(&self, key: &str, default: &str) -> Result<String> {
        if self.get(key).is_none() {
            return Ok(default.to_string());
        }
        self.string(key)
    }
}
