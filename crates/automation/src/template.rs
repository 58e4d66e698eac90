//! Step parameter templates: `{{event.payload.id}}`, `{{steps.create_task.id}}`.
//!
//! The same semantics as the definition engine's body templates, over paths instead of names:
//!
//! - a string that is exactly one placeholder (`"{{event.payload.id}}"`) is a typed hole: it
//!   takes the referenced value with its JSON type (number, boolean, array, object, null);
//! - a placeholder inside a longer string (`"Kickoff for {{event.payload.name}}"`) is rendered as
//!   text (strings as they are, `null` as nothing, arrays of scalars comma-joined, anything else
//!   as compact JSON);
//! - a reference to something that does not exist makes its value absent: the parameter (or the
//!   object key, or the array element) is left out, so a required parameter then fails with
//!   "missing required parameter" instead of sending an empty value.
//!
//! Unlike the definition engine, a malformed placeholder (`{{`, `{{ }}`, `{{a..b}}`) is an error
//! here, not literal text: rules are written by hand and `rules check` should catch the typo.

use serde_json::{Map, Value};
use toggl_connect_definition::value_as_text;

use crate::filter::{Path, Segment};

/// A template that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
}

/// A piece of a text template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Ref(Path),
}

/// A parsed template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A value without placeholders.
    Literal(Value),
    /// A string that is exactly one placeholder: typed.
    Hole(Path),
    /// A string mixing text and placeholders: text.
    Text(Vec<TemplateText>),
    /// An object, keys in source order.
    Object(Vec<(String, Template)>),
    /// An array.
    Array(Vec<Template>),
}

/// A piece of a text template (public form of the internal pieces).
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateText {
    /// Literal text.
    Text(String),
    /// A placeholder rendered as text.
    Ref(Path),
}

impl From<Piece> for TemplateText {
    fn from(p: Piece) -> Self {
        match p {
            Piece::Text(t) => TemplateText::Text(t),
            Piece::Ref(r) => TemplateText::Ref(r),
        }
    }
}

fn parse_pieces(text: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError {
            message: format!("unclosed `{{{{` in {text:?}"),
        })?;
        let inner = after[..end].trim();
        if inner.is_empty() {
            return Err(TemplateError {
                message: format!("empty placeholder `{{{{}}}}` in {text:?}"),
            });
        }
        let path = Path::parse(inner).map_err(|e| TemplateError {
            message: format!("bad placeholder `{{{{{inner}}}}}`: {}", e.message),
        })?;
        out.push(Piece::Ref(path));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    Ok(out)
}

impl Template {
    /// Parses every string inside `value` for placeholders.
    pub fn parse(value: &Value) -> Result<Template, TemplateError> {
        Ok(match value {
            Value::String(s) => {
                let mut pieces = parse_pieces(s)?;
                match pieces.as_slice() {
                    [] => Template::Literal(Value::String(String::new())),
                    [Piece::Text(_)] => Template::Literal(value.clone()),
                    [Piece::Ref(_)] => match pieces.pop() {
                        Some(Piece::Ref(p)) => Template::Hole(p),
                        _ => unreachable!("matched a single reference"),
                    },
                    _ => Template::Text(pieces.into_iter().map(TemplateText::from).collect()),
                }
            }
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .map(Template::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Template::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Template::parse(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }

    /// Every path referenced.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Template::Literal(_) => Vec::new(),
            Template::Hole(p) => vec![p],
            Template::Text(pieces) => pieces
                .iter()
                .filter_map(|p| match p {
                    TemplateText::Ref(r) => Some(r),
                    TemplateText::Text(_) => None,
                })
                .collect(),
            Template::Object(entries) => entries.iter().flat_map(|(_, t)| t.paths()).collect(),
            Template::Array(items) => items.iter().flat_map(Template::paths).collect(),
        }
    }

    /// The value when it holds no placeholder at all (for checking literal parameters early).
    pub fn as_literal(&self) -> Option<Value> {
        if !self.paths().is_empty() {
            return None;
        }
        self.render(&Value::Null)
    }

    /// Renders against `context` (`{"event": ..., "steps": {...}}`); `None` when absent.
    pub fn render(&self, context: &Value) -> Option<Value> {
        match self {
            Template::Literal(v) => Some(v.clone()),
            Template::Hole(p) => p.lookup(context).cloned(),
            Template::Text(pieces) => {
                let mut out = String::new();
                for piece in pieces {
                    match piece {
                        TemplateText::Text(t) => out.push_str(t),
                        TemplateText::Ref(r) => out.push_str(&value_as_text(r.lookup(context)?)),
                    }
                }
                Some(Value::String(out))
            }
            Template::Object(entries) => {
                let map: Map<String, Value> = entries
                    .iter()
                    .filter_map(|(k, t)| t.render(context).map(|v| (k.clone(), v)))
                    .collect();
                Some(Value::Object(map))
            }
            Template::Array(items) => Some(Value::Array(
                items.iter().filter_map(|t| t.render(context)).collect(),
            )),
        }
    }
}

/// Checks a path against what a step can see: `event...`, or `steps.<name>...` for a step named
/// in `earlier`. Returns the problem as text.
pub fn check_path(path: &Path, earlier: &[&str], allow_steps: bool) -> Result<(), String> {
    match path.root() {
        Some("event") => Ok(()),
        Some("steps") if allow_steps => match path.0.get(1) {
            Some(Segment::Key(name)) if earlier.contains(&name.as_str()) => Ok(()),
            Some(Segment::Key(name)) => Err(if earlier.is_empty() {
                format!("`{path}` refers to step `{name}`, but no step runs before this one")
            } else {
                format!(
                    "`{path}` refers to step `{name}`, which is not an earlier step of this rule (earlier: {})",
                    earlier.join(", ")
                )
            }),
            _ => Err(format!("`{path}`: write `steps.<step name>.<field>`")),
        },
        Some("steps") => Err(format!(
            "`{path}`: a filter runs before any step, so it can only read `event`"
        )),
        Some(other) => Err(format!(
            "`{path}`: unknown root `{other}`; templates read `event` (the Toggl event) or `steps.<name>` (an earlier step's result)"
        )),
        None => Err(format!("`{path}` must start with `event` or `steps`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "event": {"payload": {"id": 42, "name": "Apollo", "workspace_id": 9, "tags": ["a", "b"], "pid": null}},
            "steps": {"create_task": {"id": 7, "active": true}}
        })
    }

    fn render(v: Value) -> Option<Value> {
        Template::parse(&v).expect("parses").render(&ctx())
    }

    #[test]
    fn whole_placeholder_keeps_the_type() {
        assert_eq!(render(json!("{{event.payload.id}}")), Some(json!(42)));
        assert_eq!(
            render(json!("{{ steps.create_task.active }}")),
            Some(json!(true))
        );
        assert_eq!(
            render(json!("{{event.payload.tags}}")),
            Some(json!(["a", "b"]))
        );
        assert_eq!(render(json!("{{event.payload.pid}}")), Some(Value::Null));
    }

    #[test]
    fn placeholder_in_text_is_text() {
        assert_eq!(
            render(json!(
                "Kickoff: {{event.payload.name}} #{{event.payload.id}}"
            )),
            Some(json!("Kickoff: Apollo #42"))
        );
        assert_eq!(
            render(json!("tags={{event.payload.tags}}")),
            Some(json!("tags=a,b"))
        );
        assert_eq!(render(json!("x{{event.payload.pid}}y")), Some(json!("xy")));
    }

    #[test]
    fn missing_values_are_absent() {
        assert_eq!(render(json!("{{event.payload.nope}}")), None);
        assert_eq!(render(json!("a {{event.payload.nope}}")), None);
        assert_eq!(
            render(
                json!({"a": "{{event.payload.nope}}", "b": "{{event.payload.id}}", "c": ["{{event.nope}}", 1]})
            ),
            Some(json!({"b": 42, "c": [1]}))
        );
    }

    #[test]
    fn literals_pass_through() {
        assert_eq!(render(json!(5)), Some(json!(5)));
        assert_eq!(render(json!("plain {text}")), Some(json!("plain {text}")));
        assert_eq!(
            Template::parse(&json!("x")).expect("parses").as_literal(),
            Some(json!("x"))
        );
        assert_eq!(
            Template::parse(&json!("{{event.a}}"))
                .expect("parses")
                .as_literal(),
            None
        );
    }

    #[test]
    fn bad_placeholders_are_errors() {
        assert!(
            Template::parse(&json!("{{event.payload.id"))
                .expect_err("unclosed")
                .message
                .contains("unclosed")
        );
        assert!(
            Template::parse(&json!("{{ }}"))
                .expect_err("empty")
                .message
                .contains("empty")
        );
        assert!(
            Template::parse(&json!("{{event..id}}"))
                .expect_err("bad path")
                .message
                .contains("bad placeholder")
        );
    }

    #[test]
    fn paths_are_checked_against_earlier_steps() {
        let p = Path::parse("steps.create_task.id").expect("path");
        assert!(check_path(&p, &["create_task"], true).is_ok());
        assert!(
            check_path(&p, &[], true)
                .expect_err("no earlier")
                .contains("no step runs before")
        );
        assert!(
            check_path(&p, &["other"], true)
                .expect_err("not earlier")
                .contains("not an earlier step")
        );
        assert!(check_path(&p, &["create_task"], false).is_err());
        let p = Path::parse("evnt.payload.id").expect("path");
        assert!(
            check_path(&p, &[], true)
                .expect_err("root")
                .contains("unknown root `evnt`")
        );
    }

    proptest! {
        #[test]
        fn text_without_braces_is_literal(s in "[^{}]{0,40}") {
            let t = Template::parse(&Value::String(s.clone())).expect("plain text parses");
            prop_assert_eq!(t.render(&ctx()), Some(Value::String(s)));
        }

        #[test]
        fn parser_never_panics(s in ".{0,60}") {
            let _ = Template::parse(&Value::String(s));
        }

        #[test]
        fn integers_keep_their_type(n in any::<i64>()) {
            let t = Template::parse(&json!("{{event.n}}")).expect("parses");
            prop_assert_eq!(t.render(&json!({"event": {"n": n}})), Some(json!(n)));
        }
    }
}
