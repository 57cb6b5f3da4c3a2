//! How a loss type reads its parameters: a serde struct per loss type
//! (`#[serde(deny_unknown_fields, default)]`, EasyRec's names, `Default` holding EasyRec's
//! defaults) checked against the meaning of each value ([`Params::check`]). The keys a config
//! may give come from the struct itself (serde's field list), so no list of keys is kept by
//! hand; each error names the key at fault.

use crate::config::TermParams;
use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// A parameter value that makes no sense for its key.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamError {
    /// The key at fault.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ParamError {
    /// `'key' must ...`.
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// What a loss type's parameters may check beside their own values.
pub struct ParamContext<'a> {
    /// role → tensor name, as the term binds them.
    pub inputs: &'a std::collections::BTreeMap<String, String>,
}

impl ParamContext<'_> {
    /// Whether the term binds `role`.
    pub fn binds(&self, role: &str) -> bool {
        self.inputs.contains_key(role)
    }
}

/// A loss type's parameters: a serde struct with `#[serde(deny_unknown_fields, default)]`
/// whose `Default` holds EasyRec's defaults, checked against the meaning of each value.
pub(crate) trait Params:
    DeserializeOwned
    + serde::Serialize
    + Clone
    + Default
    + fmt::Debug
    + PartialEq
    + Send
    + Sync
    + 'static
{
    /// Checks (and completes) the values, naming the key at fault.
    fn check(&mut self, ctx: &ParamContext) -> std::result::Result<(), ParamError> {
        let _ = ctx;
        Ok(())
    }
}

/// No parameters beyond the common keys.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

impl Params for NoParams {}

/// Parses and checks parameters from a term's table of parameter keys.
pub(crate) type ParseParams =
    fn(&Map<String, Value>, &ParamContext) -> std::result::Result<Arc<dyn TermParams>, ParamError>;

/// How a loss type reads its parameters.
pub(crate) struct ParamSpec {
    /// The keys it takes, in declaration order.
    pub fields: fn() -> &'static [&'static str],
    /// Parses and checks them from the term's table (only the parameter keys).
    pub parse: ParseParams,
    /// Whether `params` are of this loss type's parameter type (a config built in code).
    pub accepts: fn(&dyn TermParams) -> bool,
    /// Checks parameters of this type against their meaning (a config built in code).
    pub check: fn(&dyn TermParams, &ParamContext) -> std::result::Result<(), ParamError>,
}

impl ParamSpec {
    /// The spec of parameter type `P`.
    pub const fn of<P: Params>() -> Self {
        Self {
            fields: field_names::<P>,
            parse: parse_params::<P>,
            accepts: |p| p.as_any().is::<P>(),
            check: check_params::<P>,
        }
    }
}

/// Runs `P`'s checks on a copy of `params` (those of a config built in code).
fn check_params<P: Params>(
    params: &dyn TermParams,
    ctx: &ParamContext,
) -> std::result::Result<(), ParamError> {
    match params.as_any().downcast_ref::<P>() {
        Some(p) => p.clone().check(ctx),
        None => Err(ParamError::new("", "parameters of another loss type")),
    }
}

/// The field names serde's derive hands `deserialize_struct`: the keys of `P`.
fn field_names<P: DeserializeOwned>() -> &'static [&'static str] {
    struct Names(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field names read")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Stop
        }
    }
    impl<'de> de::Deserializer<'de> for &mut Names {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut names = Names(None);
    let _ = P::deserialize(&mut names);
    names.0.unwrap_or(&[])
}

/// Parses parameters of type `P` from `table` (the term's parameter keys), naming the key at
/// fault: a value that is not a number where one is expected (NaN and infinities arrive as no
/// value), a wrong type, or a value outside its meaning.
fn parse_params<P: Params>(
    table: &Map<String, Value>,
    ctx: &ParamContext,
) -> std::result::Result<Arc<dyn TermParams>, ParamError> {
    for (key, value) in table {
        if value.is_null() {
            return Err(ParamError::new(
                key,
                format!("'{key}' must be a finite number or a value of its type, got null (NaN and infinities are not accepted)"),
            ));
        }
        let one: Map<String, Value> = [(key.clone(), value.clone())].into_iter().collect();
        if let Err(e) = serde_json::from_value::<P>(Value::Object(one)) {
            return Err(ParamError::new(key, format!("'{key}': {e}, got {value}")));
        }
    }
    let mut params: P = serde_json::from_value(Value::Object(table.clone()))
        .map_err(|e| ParamError::new("", e.to_string()))?;
    params.check(ctx)?;
    Ok(Arc::new(params))
}

/// Checks that `x` lies in [lo, hi].
pub(crate) fn in_range(key: &str, x: f64, lo: f64, hi: f64) -> Result<(), ParamError> {
    if x < lo || x > hi {
        return Err(ParamError::new(
            key,
            format!("'{key}' must be in [{lo}, {hi}], got {x}"),
        ));
    }
    Ok(())
}

/// Checks that `x` > 0.
pub(crate) fn positive(key: &str, x: f64) -> Result<(), ParamError> {
    if x <= 0.0 {
        return Err(ParamError::new(
            key,
            format!("'{key}' must be > 0, got {x}"),
        ));
    }
    Ok(())
}

/// Checks that `x` ≥ 0.
pub(crate) fn non_negative(key: &str, x: f64) -> Result<(), ParamError> {
    if x < 0.0 {
        return Err(ParamError::new(
            key,
            format!("'{key}' must be >= 0, got {x}"),
        ));
    }
    Ok(())
}
