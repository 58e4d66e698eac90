//! Templates: body templates parsed into JSON trees with typed holes, and text templates for
//! paths, query values and auth.
//!
//! Decision: a body template is never rendered by splicing strings. Its text is parsed once into
//! a tree where each `{{name}}` is a hole; rendering fills holes with `serde_json::Value`s, so a
//! value can never inject keys or break quoting, whatever characters it holds.
//!
//! - A placeholder that is a whole JSON value (`"pid":{{pid}}`) or a whole string
//!   (`"x":"{{x}}"`) is a typed hole: it takes the parameter's value with its type (integer,
//!   boolean, array, object, null).
//! - A placeholder inside a longer string (`"Task {{n}} of {{m}}"`) is rendered as text.
//! - An absent optional parameter omits its key (in objects) or its element (in arrays); a text
//!   string with an absent placeholder is omitted the same way.
//!
//! Seed quirk: the seed writes `"duration":"{{duration}}"` for an `Integer` field. A quoted whole
//! placeholder is still a typed hole, so it renders as the JSON number the author meant (Toggl
//! rejects `"3600"`); `compile` reports the quoting as the `quoted-non-string` warning.

use serde::Serialize;
use serde_json::{Map, Value};

/// A piece of a text template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// Literal text.
    Text(String),
    /// A `{{name}}` placeholder.
    Placeholder(String),
}

/// Whether `s` is a placeholder name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_placeholder_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits text into literal and placeholder segments. `{{ name }}` (spaces allowed) is a
/// placeholder when `name` is a valid name; anything else (`{{`, `{{a b}}`) stays literal text.
pub fn parse_segments(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) if is_placeholder_name(after[..end].trim()) => {
                lit.push_str(&rest[..start]);
                if !lit.is_empty() {
                    out.push(Segment::Text(std::mem::take(&mut lit)));
                }
                out.push(Segment::Placeholder(after[..end].trim().to_owned()));
                rest = &after[end + 2..];
            }
            _ => {
                lit.push_str(&rest[..start + 2]);
                rest = after;
            }
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Segment::Text(lit));
    }
    out
}

/// The placeholder names of a list of segments, in order, with repeats.
pub fn segment_names(segments: &[Segment]) -> impl Iterator<Item = &str> {
    segments.iter().filter_map(|s| match s {
        Segment::Placeholder(n) => Some(n.as_str()),
        Segment::Text(_) => None,
    })
}

/// Renders a value as text for a placeholder inside a longer string, a query value or a path
/// segment: strings as they are, `null` as nothing, arrays of scalars comma-joined (Toggl's
/// list filters such as `project_ids=1,2`), anything else as compact JSON.
pub fn value_as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => items
            .iter()
            .map(value_as_text)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// A node of a parsed body template.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    /// A literal scalar (string without placeholders, number, boolean, null).
    Literal(Value),
    /// A placeholder that is a whole value; `quoted` when it was written as `"{{name}}"`.
    Hole {
        /// Parameter name.
        name: String,
        /// Whether the placeholder was the whole content of a JSON string.
        quoted: bool,
    },
    /// A string mixing text and placeholders.
    Text(Vec<Segment>),
    /// An object, keys in source order.
    Object(Vec<(String, Node)>),
    /// An array.
    Array(Vec<Node>),
}

/// Where a placeholder is used in a body template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceholderUse {
    /// Parameter name.
    pub name: String,
    /// Keys and indexes from the root to the value holding the placeholder.
    pub location: Vec<String>,
    /// Whole quoted string (`"{{x}}"`).
    pub quoted: bool,
    /// Inside a longer string.
    pub in_text: bool,
}

/// A body template that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {message}")]
pub struct TemplateError {
    /// Byte offset in the template text.
    pub offset: usize,
    /// What was expected.
    pub message: String,
}

/// A parsed body template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BodyTemplate {
    /// The template text as written.
    pub source: String,
    /// The parsed tree.
    #[serde(skip)]
    pub root: Node,
}

impl BodyTemplate {
    /// Parses template text: JSON where `{{name}}` may stand for any value.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut p = Parser { s: source, pos: 0 };
        p.ws();
        let root = p.value()?;
        p.ws();
        if p.pos != source.len() {
            return Err(p.err("trailing characters after the JSON value"));
        }
        Ok(Self {
            source: source.to_owned(),
            root,
        })
    }

    /// Every placeholder use, depth first in source order.
    pub fn placeholders(&self) -> Vec<PlaceholderUse> {
        fn walk(node: &Node, loc: &mut Vec<String>, out: &mut Vec<PlaceholderUse>) {
            match node {
                Node::Literal(_) => {}
                Node::Hole { name, quoted } => out.push(PlaceholderUse {
                    name: name.clone(),
                    location: loc.clone(),
                    quoted: *quoted,
                    in_text: false,
                }),
                Node::Text(segs) => {
                    for n in segment_names(segs) {
                        out.push(PlaceholderUse {
                            name: n.to_owned(),
                            location: loc.clone(),
                            quoted: false,
                            in_text: true,
                        });
                    }
                }
                Node::Object(entries) => {
                    for (k, v) in entries {
                        loc.push(k.clone());
                        walk(v, loc, out);
                        loc.pop();
                    }
                }
                Node::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        loc.push(i.to_string());
                        walk(v, loc, out);
                        loc.pop();
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut Vec::new(), &mut out);
        out
    }

    /// Fills the holes. `lookup` gives the (already typed) value of a parameter, or `None` when it
    /// is absent. Returns `None` when the root itself is an absent placeholder.
    pub fn render<'v>(&self, lookup: &dyn Fn(&str) -> Option<&'v Value>) -> Option<Value> {
        render_node(&self.root, lookup)
    }
}

fn render_node<'v>(node: &Node, lookup: &dyn Fn(&str) -> Option<&'v Value>) -> Option<Value> {
    match node {
        Node::Literal(v) => Some(v.clone()),
        Node::Hole { name, .. } => lookup(name).cloned(),
        Node::Text(segs) => {
            let mut s = String::new();
            for seg in segs {
                match seg {
                    Segment::Text(t) => s.push_str(t),
                    Segment::Placeholder(n) => s.push_str(&value_as_text(lookup(n)?)),
                }
            }
            Some(Value::String(s))
        }
        Node::Object(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                if let Some(v) = render_node(v, lookup) {
                    m.insert(k.clone(), v);
                }
            }
            Some(Value::Object(m))
        }
        Node::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|i| render_node(i, lookup))
                .collect(),
        )),
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> TemplateError {
        TemplateError {
            offset: self.pos,
            message: message.to_owned(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), TemplateError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", b as char)))
        }
    }

    fn value(&mut self) -> Result<Node, TemplateError> {
        match self.peek() {
            Some(b'{') if self.s[self.pos..].starts_with("{{") => self.hole(),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                let raw = self.string()?;
                let segs = parse_segments(&raw);
                Ok(match segs.as_slice() {
                    [] => Node::Literal(Value::String(String::new())),
                    [Segment::Text(t)] => Node::Literal(Value::String(t.clone())),
                    [Segment::Placeholder(n)] => Node::Hole {
                        name: n.clone(),
                        quoted: true,
                    },
                    _ => Node::Text(segs),
                })
            }
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a JSON value or a {{placeholder}}")),
            None => Err(self.err("unexpected end of template")),
        }
    }

    fn hole(&mut self) -> Result<Node, TemplateError> {
        let after = &self.s[self.pos + 2..];
        let end = after.find("}}").ok_or_else(|| self.err("unclosed `{{`"))?;
        let name = after[..end].trim();
        if !is_placeholder_name(name) {
            return Err(self.err(&format!("invalid placeholder name {name:?}")));
        }
        self.pos += 2 + end + 2;
        Ok(Node::Hole {
            name: name.to_owned(),
            quoted: false,
        })
    }

    fn word(&mut self, w: &str, v: Value) -> Result<Node, TemplateError> {
        if self.s[self.pos..].starts_with(w) {
            self.pos += w.len();
            Ok(Node::Literal(v))
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    fn number(&mut self) -> Result<Node, TemplateError> {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.pos += 1;
        }
        let text = &self.s[start..self.pos];
        serde_json::from_str::<serde_json::Number>(text)
            .map(|n| Node::Literal(Value::Number(n)))
            .map_err(|_| TemplateError {
                offset: start,
                message: format!("invalid number {text:?}"),
            })
    }

    fn object(&mut self) -> Result<Node, TemplateError> {
        self.expect(b'{')?;
        let mut entries: Vec<(String, Node)> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Node::Object(entries));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key_at = self.pos;
            let key = self.string()?;
            if segment_names(&parse_segments(&key)).next().is_some() {
                return Err(TemplateError {
                    offset: key_at,
                    message: format!("placeholders are not allowed in keys ({key:?})"),
                });
            }
            self.ws();
            self.expect(b':')?;
            self.ws();
            let v = self.value()?;
            if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
                // Same rule as serde_json: the last duplicate wins.
                slot.1 = v;
            } else {
                entries.push((key, v));
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Node::Object(entries));
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self) -> Result<Node, TemplateError> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Node::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node::Array(items));
                }
                _ => return Err(self.err("expected `,` or `]`")),
            }
        }
    }

    /// A JSON string literal, decoded. Delegates escape handling to serde_json so the rules are
    /// exactly JSON's.
    fn string(&mut self) -> Result<String, TemplateError> {
        let start = self.pos;
        let bytes = self.s.as_bytes();
        let mut i = self.pos + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    let lit = &self.s[start..=i];
                    self.pos = i + 1;
                    return serde_json::from_str::<String>(lit).map_err(|e| TemplateError {
                        offset: start,
                        message: format!("invalid string: {e}"),
                    });
                }
                _ => i += 1,
            }
        }
        Err(TemplateError {
            offset: start,
            message: "unterminated string".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, vals: &Value) -> Option<Value> {
        let t = BodyTemplate::parse(src).expect("parses");
        t.render(&|n| vals.get(n))
    }

    #[test]
    fn segments() {
        assert_eq!(
            parse_segments("/a/{{id}}/b{{ x }}"),
            vec![
                Segment::Text("/a/".into()),
                Segment::Placeholder("id".into()),
                Segment::Text("/b".into()),
                Segment::Placeholder("x".into())
            ]
        );
        assert_eq!(
            parse_segments("{{a b}}"),
            vec![Segment::Text("{{a b}}".into())]
        );
        assert_eq!(parse_segments("x{{"), vec![Segment::Text("x{{".into())]);
        assert!(parse_segments("").is_empty());
    }

    #[test]
    fn typed_holes_keep_types() {
        let v = json!({"pid": 7, "tags": ["a"], "b": true, "n": null, "d": 3600});
        assert_eq!(
            render(
                r#"{"pid":{{pid}},"tags":{{tags}},"b":{{b}},"n":{{n}},"d":"{{d}}"}"#,
                &v
            ),
            Some(json!({"pid":7,"tags":["a"],"b":true,"n":null,"d":3600}))
        );
    }

    #[test]
    fn text_is_escaped_by_construction() {
        let v = json!({"x": "a\"}, \"evil\": {{y}}"});
        assert_eq!(
            render(r#"{"d":"pre {{x}} post"}"#, &v),
            Some(json!({"d": "pre a\"}, \"evil\": {{y}} post"}))
        );
    }

    #[test]
    fn absent_optional_omits_key_and_element() {
        let v = json!({"a": 1});
        assert_eq!(
            render(
                r#"{"a":{{a}},"b":{{b}},"c":"x{{b}}","l":[{{a}},{{b}}]}"#,
                &v
            ),
            Some(json!({"a":1,"l":[1]}))
        );
        assert_eq!(render("{{b}}", &v), None);
    }

    #[test]
    fn placeholder_uses_are_located() {
        let t = BodyTemplate::parse(r#"{"time_entry":{"duration":"{{duration}}","d":"a{{x}}"}}"#)
            .expect("parses");
        let uses = t.placeholders();
        assert_eq!(uses.len(), 2);
        assert_eq!(uses[0].name, "duration");
        assert!(uses[0].quoted);
        assert_eq!(uses[0].location, vec!["time_entry", "duration"]);
        assert!(uses[1].in_text);
    }

    #[test]
    fn invalid_templates_are_rejected() {
        for bad in [
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":{{a}}"#,
            r#"{"{{k}}":1}"#,
            r#"{"a":{{a b}}}"#,
            r#"{"a":01x}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":1} x"#,
            "",
        ] {
            assert!(BodyTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
