//! Parameter types, parameter specs and typed parameter values.
//!
//! Values reach an operation either as text (the CLI's `-p key=value`) or as JSON values (the
//! automation engine). Both are coerced by the declared type before anything is rendered, so a
//! request never carries `"3600"` where Toggl expects `3600` (its decoder is type-strict and
//! answers 400 `Unexpected "duration" type string`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The declared type of a field or parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// A 64-bit signed integer (Toggl ids exceed 2^31).
    Integer,
    /// Any finite JSON number (the seed spells it `Float`).
    Number,
    /// `true` or `false`.
    Boolean,
    /// Text.
    String,
    /// An RFC 3339 timestamp or a `YYYY-MM-DD` date, kept as text.
    DateTime,
    /// A list of strings (text form: `a,b` or a JSON array).
    Array,
    /// A list of integers (text form: `1,2` or a JSON array).
    IntegerArray,
    /// Any JSON object (text form: JSON).
    Object,
}

impl ParamType {
    /// Parses a type name as written in definition files. Returns `None` for unknown names.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "Integer" | "integer" | "Int" | "int" => Self::Integer,
            "Number" | "number" | "Float" | "float" | "Double" => Self::Number,
            "Boolean" | "boolean" | "Bool" | "bool" => Self::Boolean,
            "String" | "string" => Self::String,
            "DateTime" | "datetime" | "Date" | "date" => Self::DateTime,
            "Array" | "array" | "Array<String>" | "List" => Self::Array,
            "Array<Integer>" | "IntegerArray" => Self::IntegerArray,
            "Object" | "object" | "JSON" | "Json" => Self::Object,
            _ => return None,
        })
    }

    /// Whether a value of this type is a JSON number or boolean (and so must not be quoted).
    pub fn is_scalar_non_text(self) -> bool {
        matches!(self, Self::Integer | Self::Number | Self::Boolean)
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Integer => "an integer",
            Self::Number => "a number",
            Self::Boolean => "a boolean (true or false)",
            Self::String => "a string",
            Self::DateTime => "a date (YYYY-MM-DD) or an RFC 3339 timestamp",
            Self::Array => "a list of strings (a,b or a JSON array)",
            Self::IntegerArray => "a list of integers (1,2 or a JSON array)",
            Self::Object => "a JSON object",
        }
    }

    /// Coerces text (as typed on a command line) into a value of this type.
    ///
    /// The literal text `null` gives JSON `null` for every type but `String` (so a field can be
    /// cleared, e.g. `project_id=null`).
    pub fn coerce_text(self, name: &str, text: &str) -> Result<Value, ParamError> {
        let bad = || ParamError::Type {
            name: name.to_owned(),
            expected: self.expected(),
            got: quote(text),
        };
        if text == "null" && self != Self::String {
            return Ok(Value::Null);
        }
        match self {
            Self::String => Ok(Value::String(text.to_owned())),
            Self::Integer => text
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| bad()),
            Self::Number => {
                let t = text.trim();
                if let Ok(i) = t.parse::<i64>() {
                    return Ok(Value::from(i));
                }
                t.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(bad)
            }
            Self::Boolean => match text.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(bad()),
            },
            Self::DateTime => {
                if is_date_or_timestamp(text) {
                    Ok(Value::String(text.to_owned()))
                } else {
                    Err(bad())
                }
            }
            Self::Array | Self::IntegerArray => {
                let t = text.trim();
                if t.starts_with('[') {
                    let v: Value = serde_json::from_str(t).map_err(|_| bad())?;
                    return self.coerce_value(name, v);
                }
                if t.is_empty() {
                    return Ok(Value::Array(Vec::new()));
                }
                let items = t.split(',').map(|s| Value::String(s.trim().to_owned()));
                self.coerce_value(name, Value::Array(items.collect()))
            }
            Self::Object => {
                let v: Value = serde_json::from_str(text).map_err(|_| bad())?;
                self.coerce_value(name, v)
            }
        }
    }

    /// Coerces a JSON value into this type. Strings are parsed as text for non-text types, so
    /// `"3600"` becomes `3600` for an `Integer`; other mismatches are errors.
    pub fn coerce_value(self, name: &str, value: Value) -> Result<Value, ParamError> {
        let bad = |v: &Value| ParamError::Type {
            name: name.to_owned(),
            expected: self.expected(),
            got: v.to_string(),
        };
        match (self, value) {
            (_, Value::Null) => Ok(Value::Null),
            (Self::String, Value::String(s)) => Ok(Value::String(s)),
            // Numbers and booleans have one obvious text form; anything else is a mistake.
            (Self::String, v @ (Value::Number(_) | Value::Bool(_))) => {
                Ok(Value::String(v.to_string()))
            }
            (Self::Integer, Value::Number(n)) if n.is_i64() => Ok(Value::Number(n)),
            (Self::Integer, Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                // 3600.0 is an integer in JSON's eyes; keep it integral for Toggl's decoder.
                n.as_f64()
                    .filter(|f| f.abs() < 9.0e15)
                    .map(|f| Value::from(f as i64))
                    .ok_or_else(|| bad(&Value::Number(n)))
            }
            (Self::Number, Value::Number(n)) => Ok(Value::Number(n)),
            (Self::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
            (Self::DateTime, Value::String(s)) if is_date_or_timestamp(&s) => Ok(Value::String(s)),
            (Self::Object, Value::Object(o)) => Ok(Value::Object(o)),
            (Self::Array, Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(Value::String(s)),
                    Value::Number(n) => Ok(Value::String(n.to_string())),
                    // Arrays of objects (e.g. webhook event filters) pass through unchanged.
                    o @ Value::Object(_) => Ok(o),
                    other => Err(bad(&other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            (Self::IntegerArray, Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::Number(n) if n.is_i64() => Ok(Value::Number(n)),
                    Value::String(s) => s
                        .trim()
                        .parse::<i64>()
                        .map(Value::from)
                        .map_err(|_| bad(&Value::String(s))),
                    other => Err(bad(&other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            (Self::String | Self::DateTime, other) => Err(bad(&other)),
            (ty, Value::String(s)) => ty.coerce_text(name, &s),
            (_, other) => Err(bad(&other)),
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Integer => "Integer",
            Self::Number => "Number",
            Self::Boolean => "Boolean",
            Self::String => "String",
            Self::DateTime => "DateTime",
            Self::Array => "Array",
            Self::IntegerArray => "Array<Integer>",
            Self::Object => "Object",
        })
    }
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

/// `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`. A syntactic check only: Toggl
/// validates calendars itself, we only stop obvious typos before a request is spent.
fn is_date_or_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let date_ok = b.len() >= 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10);
    if !date_ok {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    if !(b.len() >= 20
        && matches!(b[10], b'T' | b't' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// A declared parameter of an operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    /// The placeholder name (`{{name}}`).
    pub name: String,
    /// The declared type; values are coerced to it.
    pub ty: ParamType,
    /// Whether rendering fails when the parameter is absent (and has no default).
    pub required: bool,
    /// Human description (from the definition's `description` or the field's `meta`).
    pub description: Option<String>,
    /// Used when the caller gives no value.
    pub default: Option<Value>,
}

/// A lookup of a parameter spec by name.
pub fn find_spec<'a>(specs: &'a [ParamSpec], name: &str) -> Option<&'a ParamSpec> {
    specs.iter().find(|s| s.name == name)
}

/// Typed parameter values by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Params(BTreeMap<String, Value>);

impl Params {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a value (builder style).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// Sets a value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(name.into(), value.into());
    }

    /// The value of a parameter, if given.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Removes a value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    /// Whether a value is given.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Values in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether no value is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Overlays `other` on `self`: values in `other` win.
    #[must_use]
    pub fn merged(&self, other: &Params) -> Params {
        let mut out = self.clone();
        for (k, v) in &other.0 {
            out.0.insert(k.clone(), v.clone());
        }
        out
    }

    /// Builds values from text pairs (`-p key=value`), coercing each by its spec.
    ///
    /// ```
    /// use toggl_connect_definition::{ParamSpec, ParamType, Params};
    /// let specs = [ParamSpec { name: "workspace_id".into(), ty: ParamType::Integer,
    ///     required: true, description: None, default: None }];
    /// let err = Params::from_text_pairs(&[("workspace_id", "abc")], &specs).expect_err("must fail");
    /// assert_eq!(err.to_string(), r#"parameter workspace_id: expected an integer, got "abc""#);
    /// ```
    pub fn from_text_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: &[(K, V)],
        specs: &[ParamSpec],
    ) -> Result<Params, ParamError> {
        let mut out = Params::new();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            let spec = find_spec(specs, k).ok_or_else(|| ParamError::Unknown {
                name: k.to_owned(),
                known: known_names(specs),
            })?;
            out.insert(k, spec.ty.coerce_text(k, v)?);
        }
        Ok(out)
    }
}

impl FromIterator<(String, Value)> for Params {
    fn from_iter<T: IntoIterator<Item = (String, Value)>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

pub(crate) fn known_names(specs: &[ParamSpec]) -> String {
    if specs.is_empty() {
        return "none".to_owned();
    }
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A parameter value that does not fit its declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// A value does not fit the declared type.
    #[error("parameter {name}: expected {expected}, got {got}")]
    Type {
        /// Parameter name.
        name: String,
        /// What the type accepts.
        expected: &'static str,
        /// What was given (JSON text).
        got: String,
    },
    /// A value was given for a parameter the operation does not declare.
    #[error("unknown parameter {name} (known: {known})")]
    Unknown {
        /// Parameter name.
        name: String,
        /// The declared names, comma separated.
        known: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_coercion_by_type() {
        let c = |t: ParamType, s: &str| t.coerce_text("p", s);
        assert_eq!(c(ParamType::Integer, "42"), Ok(json!(42)));
        assert_eq!(c(ParamType::Integer, "-1"), Ok(json!(-1)));
        assert_eq!(
            c(ParamType::Integer, "3730303299"),
            Ok(json!(3_730_303_299_i64))
        );
        assert!(c(ParamType::Integer, "1.5").is_err());
        assert_eq!(c(ParamType::Number, "1.5"), Ok(json!(1.5)));
        assert_eq!(c(ParamType::Number, "7"), Ok(json!(7)));
        assert!(c(ParamType::Number, "NaN").is_err());
        assert_eq!(c(ParamType::Boolean, "TRUE"), Ok(json!(true)));
        assert!(c(ParamType::Boolean, "yes").is_err());
        assert_eq!(c(ParamType::String, "null"), Ok(json!("null")));
        assert_eq!(c(ParamType::Integer, "null"), Ok(Value::Null));
        assert_eq!(c(ParamType::Array, "a, b"), Ok(json!(["a", "b"])));
        assert_eq!(c(ParamType::Array, r#"["x,y"]"#), Ok(json!(["x,y"])));
        assert_eq!(c(ParamType::IntegerArray, "1,2"), Ok(json!([1, 2])));
        assert!(c(ParamType::IntegerArray, "1,x").is_err());
        assert_eq!(c(ParamType::Object, r#"{"a":1}"#), Ok(json!({"a":1})));
        assert!(c(ParamType::Object, "[1]").is_err());
        assert!(c(ParamType::DateTime, "2025-01-10").is_ok());
        assert!(c(ParamType::DateTime, "2025-01-10T09:00:00Z").is_ok());
        assert!(c(ParamType::DateTime, "2025-01-10T09:00:00.123+01:00").is_ok());
        assert!(c(ParamType::DateTime, "yesterday").is_err());
        assert!(c(ParamType::DateTime, "2025-01-10T09:00").is_err());
    }

    #[test]
    fn value_coercion_parses_strings_for_numbers() {
        assert_eq!(
            ParamType::Integer.coerce_value("d", json!("3600")),
            Ok(json!(3600))
        );
        assert_eq!(
            ParamType::Integer.coerce_value("d", json!(3600.0)),
            Ok(json!(3600))
        );
        assert!(ParamType::Integer.coerce_value("d", json!(true)).is_err());
        assert_eq!(
            ParamType::String.coerce_value("d", json!(5)),
            Ok(json!("5"))
        );
        assert!(ParamType::String.coerce_value("d", json!([1])).is_err());
    }

    #[test]
    fn error_message_names_the_parameter() {
        let specs = [ParamSpec {
            name: "workspace_id".into(),
            ty: ParamType::Integer,
            required: true,
            description: None,
            default: None,
        }];
        let err =
            Params::from_text_pairs(&[("workspace_id", "abc")], &specs).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            r#"parameter workspace_id: expected an integer, got "abc""#
        );
        let err = Params::from_text_pairs(&[("wid", "1")], &specs).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "unknown parameter wid (known: workspace_id)"
        );
    }
}
