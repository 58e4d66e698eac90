//! Selectors: where a field's value sits in a response object.
//!
//! The seed's form is an array of keys and integer indexes: `["project", "name"]`,
//! `["tags", 0]`. With `multivalue: true` every index step collects all elements at that level
//! instead of one, so `["tags", 0]` gives all tags and `["time_entries", 0, "id"]` gives every
//! nested id. Selecting never panics: a missing key, a wrong type or an index out of range give
//! `null` (or an empty list when multivalue).

use serde::Serialize;
use serde_json::Value;

/// One step of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Step {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Selector(pub Vec<Step>);

impl Selector {
    /// Builds a selector from the raw JSON steps of a definition file. Errors name the bad step.
    pub fn from_raw(raw: &[Value]) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("a selector needs at least one step".to_owned());
        }
        raw.iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(k) => Ok(Step::Key(k.clone())),
                Value::Number(n) => n
                    .as_u64()
                    .and_then(|u| usize::try_from(u).ok())
                    .map(Step::Index)
                    .ok_or_else(|| format!("step {i} is not a non-negative integer index: {n}")),
                other => Err(format!(
                    "step {i} must be a key (string) or an index (integer), got {other}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The first key, if the selector starts with one.
    pub fn first_key(&self) -> Option<&str> {
        match self.0.first() {
            Some(Step::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The single value at this path, or `null`.
    pub fn select(&self, v: &Value) -> Value {
        let mut cur = v;
        for step in &self.0 {
            let next = match (step, cur) {
                (Step::Key(k), Value::Object(m)) => m.get(k),
                (Step::Index(i), Value::Array(a)) => a.get(*i),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => return Value::Null,
            }
        }
        cur.clone()
    }

    /// All values at this path, index steps acting as "every element". A final array is
    /// returned as its elements; a missing or `null` value gives an empty list.
    pub fn select_all(&self, v: &Value) -> Vec<Value> {
        let mut level: Vec<&Value> = vec![v];
        for step in &self.0 {
            let mut next = Vec::new();
            for cur in level {
                match (step, cur) {
                    (Step::Key(k), Value::Object(m)) => next.extend(m.get(k)),
                    (Step::Index(_), Value::Array(a)) => next.extend(a.iter()),
                    _ => {}
                }
            }
            level = next;
        }
        let mut out = Vec::new();
        for v in level {
            match v {
                Value::Null => {}
                Value::Array(items) => out.extend(items.iter().cloned()),
                other => out.push(other.clone()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(raw: Value) -> Selector {
        Selector::from_raw(raw.as_array().expect("array")).expect("valid")
    }

    #[test]
    fn single_and_multi() {
        let v = json!({"tags":["a","b"],"p":{"n":"x"},"rows":[{"id":1},{"id":2}]});
        assert_eq!(sel(json!(["tags", 0])).select(&v), json!("a"));
        assert_eq!(sel(json!(["tags", 5])).select(&v), Value::Null);
        assert_eq!(sel(json!(["p", "n"])).select(&v), json!("x"));
        assert_eq!(
            sel(json!(["tags", 0])).select_all(&v),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(
            sel(json!(["tags"])).select_all(&v),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(
            sel(json!(["rows", 0, "id"])).select_all(&v),
            vec![json!(1), json!(2)]
        );
        assert!(
            sel(json!(["nope", 0]))
                .select_all(&json!({"nope": null}))
                .is_empty()
        );
    }

    #[test]
    fn bad_steps_are_rejected() {
        assert!(Selector::from_raw(&[]).is_err());
        assert!(Selector::from_raw(&[json!(-1)]).is_err());
        assert!(Selector::from_raw(&[json!(1.5)]).is_err());
        assert!(Selector::from_raw(&[json!(true)]).is_err());
    }
}
