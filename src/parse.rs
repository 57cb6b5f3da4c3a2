//! Reading a [`LossConfig`] from TOML or JSON (one schema, README "Configuration"), strictly:
//! unknown keys, unknown loss types and values outside their meaning are errors naming the term
//! and the key. Each term's loss type, roles and parameters come from the registry
//! ([`crate::losses::registry`]).

use crate::config::{
    parse_optimizer, EmaReweight, LossConfig, LossTerm, NonFinite, Reduction, SampleWeights,
    Strategy, Table, TermKind, TERM_COMMON_KEYS, WEIGHT_STRATEGIES,
};
use crate::error::{Error, Result};
use crate::losses::family::LossType;
use crate::losses::params::ParamContext;
use crate::losses::registry;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Every `loss_type` a config may name (docs/LOSSES.md), from the families' declarations.
pub fn loss_types() -> Vec<&'static str> {
    registry::loss_type_names()
}

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

    /// Reads a `.toml` or `.json` file: the format is chosen by the extension (TOML for any
    /// other), and an error says which was chosen and why.
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase());
        let (parsed, how) = match extension.as_deref() {
            Some("json") => (Self::from_json_str(&text), "as JSON (extension .json)".to_string()),
            Some("toml") => (Self::from_toml_str(&text), "as TOML (extension .toml)".to_string()),
            Some(other) => (
                Self::from_toml_str(&text),
                format!("as TOML: the format is chosen by the extension, and .{other} is neither .toml nor .json"),
            ),
            None => (
                Self::from_toml_str(&text),
                "as TOML: the format is chosen by the extension, and the file has none (.json reads JSON)".to_string(),
            ),
        };
        parsed.map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{} read {how}: {m}", path.display())),
            other => other,
        })
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
            "nonfinite",
        ];
        if let Some(key) = top.keys().find(|k| !TOP_KEYS.contains(&k.as_str())) {
            return Err(Error::Config(format!(
                "unknown top-level key '{key}'; expected one of {}",
                TOP_KEYS.join(", ")
            )));
        }
        let strategy = parse_strategy(top)?;
        let flooding = match top.get("flooding") {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| Error::Config("'flooding' must be a number".into()))?,
            ),
        };
        let nonfinite = match top.get("nonfinite") {
            None => NonFinite::Error,
            Some(Value::String(s)) if s == "error" => NonFinite::Error,
            Some(Value::String(s)) if s == "propagate" => NonFinite::Propagate,
            Some(v) => {
                return Err(Error::Config(format!(
                    "'nonfinite' must be \"error\" or \"propagate\", got {v}"
                )))
            }
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
            nonfinite,
            losses,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules across terms (unique names, terms named by the strategy exist) and each
    /// term's loss type, roles and parameters (a config built in code is checked here too).
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
            validate_term(t)?;
        }
        check_strategy(&self.strategy)?;
        if let Some(b) = self.flooding {
            if !(b.is_finite() && b >= 0.0) {
                return Err(Error::Config(format!(
                    "'flooding' (the flood level b) must be a finite number >= 0, got {b}"
                )));
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
        if let Some(t) = self.losses.iter().find(|t| t.learn_loss_weight) {
            if !matches!(self.strategy, Strategy::Uncertainty(_)) {
                return Err(Error::term(
                    &t.name,
                    "learn_loss_weight = true needs loss_weight_strategy = \"uncertainty\"",
                ));
            }
        }
        Ok(())
    }
}

/// The strategy's values against their meaning: its optimiser, and EMA's α, λ and θ0.
fn check_strategy(strategy: &Strategy) -> Result<()> {
    match strategy {
        Strategy::Uncertainty(optimizer) => optimizer.check("[uncertainty]"),
        Strategy::EmaReweight(ema) => {
            let bad = |key: &str, rule: &str, x: f64| {
                Err(Error::Config(format!(
                    "[ema_reweight] '{key}' must be {rule}, got {x}"
                )))
            };
            if !(0.0..=1.0).contains(&ema.alpha) {
                return bad("alpha", "in [0, 1]", ema.alpha);
            }
            if !(ema.lambda.is_finite() && ema.lambda >= 0.0) {
                return bad("lambda", "a finite number >= 0", ema.lambda);
            }
            if !(0.0..=1.0).contains(&ema.theta0) {
                return bad(
                    "theta0",
                    "in [0, 1] (θ = L_main / (L_main + λ·L_aux))",
                    ema.theta0,
                );
            }
            Ok(())
        }
        Strategy::Fixed | Strategy::Random { .. } => Ok(()),
    }
}

/// A term's loss type is known, its parameters are its type's, its required roles are bound,
/// and its family's rules across keys hold.
fn validate_term(t: &LossTerm) -> Result<()> {
    if !(t.weight.is_finite() && t.weight >= 0.0) {
        return Err(Error::term(
            &t.name,
            format!("'weight' must be a finite number >= 0, got {}", t.weight),
        ));
    }
    if let Some(sw) = &t.sample_weights {
        let bad = sw
            .parts()
            .into_iter()
            .find(|(_, c)| !(c.is_finite() && *c >= 0.0));
        if let Some((name, c)) = bad {
            return Err(Error::term(
                &t.name,
                format!(
                    "'sample_weights' coefficient of '{name}' must be a finite number >= 0 \
                     (sample weights are never negative), got {c}"
                ),
            ));
        }
    }
    let lt = unknown_type(&t.name, t.kind.loss_type())?;
    if !(lt.params.accepts)(t.kind.raw_params()) {
        return Err(crate::losses::family::wrong_params(t));
    }
    let ctx = ParamContext { inputs: &t.inputs };
    (lt.params.check)(t.kind.raw_params(), &ctx).map_err(|e| Error::term(&t.name, e.message))?;
    if let Some(r) = lt
        .roles
        .iter()
        .find(|r| r.required && t.input(r.name).is_none())
    {
        return Err(Error::term(
            &t.name,
            format!("role '{}' is required for loss_type '{}'", r.name, lt.name),
        ));
    }
    lt.family.validate(t)
}

fn unknown_type(term: &str, loss_type: &str) -> Result<&'static LossType> {
    registry::lookup(loss_type).ok_or_else(|| {
        Error::term(
            term,
            format!(
                "unknown loss_type '{loss_type}'; expected one of {}",
                loss_types().join(", ")
            ),
        )
    })
}

/// `loss_weight_strategy` and its table.
fn parse_strategy(top: &Map<String, Value>) -> Result<Strategy> {
    let name = match top.get("loss_weight_strategy") {
        None => "fixed",
        Some(v) => v
            .as_str()
            .ok_or_else(|| Error::Config("'loss_weight_strategy' must be a string".into()))?,
    };
    for table in ["uncertainty", "random", "ema_reweight"] {
        if top.contains_key(table) && name != table {
            return Err(Error::Config(format!(
                "table [{table}] is only valid with loss_weight_strategy = \"{table}\" (it is \"{name}\")"
            )));
        }
    }
    Ok(match name {
        "fixed" => Strategy::Fixed,
        "uncertainty" => {
            Strategy::Uncertainty(parse_optimizer(top.get("uncertainty"), "[uncertainty]")?)
        }
        "random" => {
            let t = Table::new(top.get("random"), "[random]")?;
            t.only(&["seed"])?;
            Strategy::Random {
                seed: t.u32_or("seed", 0)?,
            }
        }
        "ema_reweight" => {
            let t = Table::new(top.get("ema_reweight"), "[ema_reweight]")?;
            t.only(&["main", "aux", "alpha", "lambda", "theta0", "detach_theta"])?;
            let ema = EmaReweight {
                main: t.string("main")?,
                aux: t.string("aux")?,
                alpha: t.f64_or("alpha", 0.1)?,
                lambda: t.f64_or("lambda", 1.0)?,
                theta0: t.f64_or("theta0", 0.0)?,
                detach_theta: t.bool_or("detach_theta", true)?,
            };
            Strategy::EmaReweight(ema)
        }
        other => {
            return Err(Error::Config(format!(
                "unknown loss_weight_strategy '{other}'; expected one of {}",
                WEIGHT_STRATEGIES.join(", ")
            )))
        }
    })
}

/// The term's `loss_type` and `name`.
fn term_names(index: usize, obj: &Map<String, Value>) -> Result<(String, String)> {
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
    Ok((loss_type, name))
}

fn parse_term(index: usize, obj: &Map<String, Value>) -> Result<LossTerm> {
    let (loss_type, name) = term_names(index, obj)?;
    let lt = unknown_type(&name, &loss_type)?;
    let t = Table::of_term(obj, format!("losses[{index}]"), &name);
    let fields = (lt.params.fields)();
    let is_role = |k: &str| lt.roles.iter().any(|r| r.name == k);
    if let Some(k) = obj
        .keys()
        .map(String::as_str)
        .find(|k| !TERM_COMMON_KEYS.contains(k) && !fields.contains(k) && !is_role(k))
    {
        let mut expected: Vec<&str> = TERM_COMMON_KEYS.to_vec();
        expected.extend(lt.roles.iter().map(|r| r.name));
        expected.extend(fields.iter());
        return Err(Error::term(
            &name,
            format!(
                "unknown key '{k}' for loss_type '{loss_type}'; expected one of {}",
                expected.join(", ")
            ),
        ));
    }
    let inputs = parse_roles(lt, obj, &name)?;
    let params: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| fields.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ctx = ParamContext { inputs: &inputs };
    let params = (lt.params.parse)(&params, &ctx).map_err(|e| Error::term(&name, e.message))?;
    Ok(LossTerm {
        kind: TermKind::from_arc(lt.name, params),
        weight: t.f64_or("weight", 1.0)?,
        learn_loss_weight: t.bool_or("learn_loss_weight", false)?,
        reduction: parse_reduction(&t)?,
        sample_weights: parse_sample_weights(&t)?,
        inputs,
        name,
    })
}

/// role → tensor, every required role bound to a tensor name.
fn parse_roles(
    lt: &LossType,
    obj: &Map<String, Value>,
    name: &str,
) -> Result<BTreeMap<String, String>> {
    let mut inputs = BTreeMap::new();
    for role in lt.roles {
        match obj.get(role.name) {
            Some(Value::String(s)) if !s.is_empty() => {
                inputs.insert(role.name.to_string(), s.clone());
            }
            Some(v) => {
                return Err(Error::term(
                    name,
                    format!(
                        "role '{}' must name a tensor (a string), got {v}",
                        role.name
                    ),
                ))
            }
            None if role.required => {
                return Err(Error::term(
                    name,
                    format!(
                        "role '{}' is required for loss_type '{}'",
                        role.name, lt.name
                    ),
                ))
            }
            None => {}
        }
    }
    Ok(inputs)
}

fn parse_sample_weights(t: &Table) -> Result<Option<SampleWeights>> {
    Ok(match t.get("sample_weights") {
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
    })
}

fn parse_reduction(t: &Table) -> Result<Option<Reduction>> {
    Ok(match t.get("reduction") {
        None => None,
        Some(Value::String(s)) => Some(Reduction::parse(s).ok_or_else(|| {
            t.err(format!(
                "unknown reduction '{s}'; expected nonzero_mean, weighted_mean, mean or sum"
            ))
        })?),
        Some(v) => return Err(t.err(format!("'reduction' must be a string, got {v}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::rows::params::FocalParams;

    #[test]
    fn parses_the_readme_example() {
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
            c.losses[0].kind.params::<FocalParams>(),
            Some(&FocalParams {
                gamma: 2.0,
                alpha: Some(0.25),
                ohem_ratio: 1.0,
                label_smoothing: 0.0
            })
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

    #[test]
    fn parameter_errors_name_the_key() {
        let bad = [
            ("gamma = 'x'", "gamma"),
            ("gamma = -1.0", "gamma"),
            ("alpha = 1.5", "alpha"),
            ("ohem_ratio = 0.0", "ohem_ratio"),
            ("gamma = nan", "gamma"),
        ];
        for (line, key) in bad {
            let text = format!(
                "[[losses]]\nname='f'\nloss_type='binary_focal_loss'\nlogits='x'\nlabels='y'\n{line}\n"
            );
            let e = LossConfig::from_toml_str(&text).unwrap_err().to_string();
            assert!(e.contains("'f'") && e.contains(key), "{line}: {e}");
        }
    }

    /// Every parameter of every term and strategy is checked against its meaning; the error
    /// names the term (or table) and the key.
    #[test]
    fn values_that_make_no_sense_are_refused_naming_the_key() {
        let term = |loss: &str, extra: &str| {
            format!("[[losses]]\nname = 't'\nloss_type = '{loss}'\n{extra}\n")
        };
        let rows = "logits = 'x'\nlabels = 'y'";
        let emb = "user = 'u'\nitem = 'v'";
        let cases: Vec<(String, &[&str])> = vec![
            (term("classification", &format!("{rows}\nweight = -1.0")), &["'t'", "'weight'", "-1"]),
            (format!("flooding = -0.5\n{}", term("classification", rows)), &["'flooding'", "-0.5"]),
            (
                format!("loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'adam'\nlearning_rate = -0.1\n{}", term("classification", rows)),
                &["[uncertainty]", "'learning_rate'", "-0.1"],
            ),
            (
                format!("loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'adam'\nbeta1 = 1.0\nbeta2 = 1.0\nepsilon = 0.0\n{}", term("classification", rows)),
                &["[uncertainty]", "'beta1'", "[0, 1)"],
            ),
            (
                format!("loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'adam'\nepsilon = 0.0\n{}", term("classification", rows)),
                &["'epsilon'", "> 0"],
            ),
            (
                format!("loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'sgd'\nlearning_rate = -1.0\n{}", term("classification", rows)),
                &["'learning_rate'"],
            ),
            (
                format!("loss_weight_strategy = 'ema_reweight'\n[ema_reweight]\nmain = 'a'\naux = 'b'\nlambda = -1.0\n[[losses]]\nname = 'a'\nloss_type = 'classification'\n{rows}\n[[losses]]\nname = 'b'\nloss_type = 'classification'\n{rows}\n"),
                &["[ema_reweight]", "'lambda'"],
            ),
            (
                format!("loss_weight_strategy = 'ema_reweight'\n[ema_reweight]\nmain = 'a'\naux = 'b'\ntheta0 = 1.5\n[[losses]]\nname = 'a'\nloss_type = 'classification'\n{rows}\n[[losses]]\nname = 'b'\nloss_type = 'classification'\n{rows}\n"),
                &["[ema_reweight]", "'theta0'"],
            ),
            (term("multi_similarity_loss", "embeddings = 'e'\nlabels = 'c'\nlamb = -0.5"), &["'t'", "'lamb'"]),
            (term("softmax_cross_entropy_with_negative_mining", &format!("{emb}\ncoefficient_of_support_vector = 0.5")), &["'t'", "coefficient_of_support_vector"]),
            (term("classification", &format!("{rows}\nsample_weights = {{ a = 1.0, b = -2.0 }}")), &["'t'", "'b'", ">= 0"]),
            (term("ghm_c", &format!("{rows}\nbins = 0")), &["'bins'"]),
            (term("ghm_c", &format!("{rows}\nmomentum = 1.0")), &["'momentum'"]),
            (term("classification", &format!("{rows}\nlabel_smoothing = 2.0")), &["'label_smoothing'"]),
            (term("classification", &format!("{rows}\npos_weight = 0.0")), &["'pos_weight'"]),
            (term("softmax_cross_entropy", &format!("{rows}\ntemperature = 0.0")), &["'temperature'"]),
            (term("softmax_cross_entropy", &format!("{rows}\nclass_weights = [1.0, -1.0]")), &["'class_weights'"]),
            (term("softmax_cross_entropy", &format!("{rows}\nz_loss = -1.0")), &["'z_loss'"]),
            (term("softmax_cross_entropy", &format!("{rows}\nignore_index = 9999999999")), &["'ignore_index'"]),
            (term("binary_focal_loss", &format!("{rows}\nohem_ratio = 1.5")), &["'ohem_ratio'"]),
            (term("f1_reweighted_loss", &format!("{rows}\nf1_beta_square = 0.0")), &["'f1_beta_square'"]),
            (term("pair_wise_loss", &format!("{rows}\ntemperature = -1.0")), &["'temperature'"]),
            (term("pairwise_focal_loss", &format!("{rows}\nalpha = 2.0")), &["'alpha'"]),
            (term("jrc_loss", &format!("{rows}\nsession = 's'\nalpha = 2.0")), &["'alpha'"]),
            (
                term("jrc_loss", &format!("{rows}\nsession = 's'\nloss_weight_strategy = 'uncertainty'\nuncertainty = {{ optimizer = 'adam', beta2 = 1.0 }}")),
                &["'t'", "beta2"],
            ),
            (term("cross_batch_softmax", &format!("{emb}\nbank_size = 0")), &["'bank_size'"]),
            (term("in_batch_softmax", &format!("{emb}\ntemperature = 0.0")), &["'temperature'"]),
            (term("contrastive_loss", "view_a = 'a'\nview_b = 'b'\ntemperature = -0.1"), &["'temperature'"]),
            (term("softmax_cross_entropy_with_negative_mining", &format!("{emb}\nnum_negative_samples = 0")), &["'num_negative_samples'"]),
            (term("circle_loss", "embeddings = 'e'\nlabels = 'c'\ngamma = 0.0"), &["'gamma'"]),
            (term("multi_similarity_loss", "embeddings = 'e'\nlabels = 'c'\nbeta = 0.0"), &["'beta'"]),
        ];
        for (text, wanted) in cases {
            let e = LossConfig::from_toml_str(&text)
                .map(|_| ())
                .expect_err(&format!("accepted:\n{text}"))
                .to_string();
            for w in wanted {
                assert!(e.contains(w), "{e}\n(for:\n{text})");
            }
        }
    }

    #[test]
    fn a_config_built_in_code_gets_the_same_checks() {
        use crate::losses::rows::params::FocalParams;
        let mut config = LossConfig::from_toml_str(
            "[[losses]]\nname = 'f'\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\n",
        )
        .unwrap();
        let bad = FocalParams {
            gamma: -1.0,
            ..FocalParams::default()
        };
        config.losses[0].kind = TermKind::new("binary_focal_loss", bad);
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("'f'") && e.contains("'gamma'"), "{e}");
        config.losses[0].kind = TermKind::new("binary_focal_loss", FocalParams::default());
        config.losses[0].weight = f64::NAN;
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("'weight'"), "{e}");
    }
}
