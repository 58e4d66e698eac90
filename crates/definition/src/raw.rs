//! Raw serde types: the definition format exactly as users write it.
//!
//! Three file shapes are accepted:
//! - a *service file* (`{"handle", "meta", "service": {"baseURL", "auth", ...}}`),
//! - a *resources file* (a JSON array of resources),
//! - a *combined file* `{"service": <service file>, "resources": [...], "actions": [...],
//!   "webhooks": [...]}` (actions and top-level webhooks are our extensions).
//!
//! Nothing here is checked beyond JSON shapes; `compile` does the checking. Unknown keys do not
//! fail loading (users' files vary): they are reported as `unknown-key` warnings.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

use crate::diagnostic::Diagnostic;

/// A JSON object kept as an ordered list of entries (the order operations are written in).
#[derive(Debug, Clone, PartialEq)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A declared auth or endpoint placeholder (`{"name", "type", "description", "required"}`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawPlaceholder {
    /// Placeholder name.
    pub name: String,
    /// Type name, e.g. `String`.
    #[serde(rename = "type", default)]
    pub ty: Option<String>,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether it must be given.
    #[serde(default)]
    pub required: bool,
}

/// A `{"value": "...", "placeholders": [...]}` text.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawText {
    /// The text, possibly with `{{placeholders}}`.
    pub value: String,
    /// Declared placeholders (the seed declares them only for auth).
    #[serde(default)]
    pub placeholders: Vec<RawPlaceholder>,
}

/// A service file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawServiceFile {
    /// Short machine name of the connector.
    pub handle: String,
    /// `active` etc. (informational).
    #[serde(default)]
    pub status: Option<String>,
    /// Free-form metadata (`short` is the display name).
    #[serde(default)]
    pub meta: Option<Value>,
    /// The service block.
    pub service: RawService,
}

/// The `service` block of a service file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RawService {
    /// Base URL every path is joined to.
    #[serde(rename = "baseURL")]
    pub base_url: RawText,
    /// `https` (informational).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Request content type (informational; the client always sends JSON).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Default headers (informational).
    #[serde(default)]
    pub headers: Option<Value>,
    /// Authentication.
    #[serde(default)]
    pub auth: Option<RawAuth>,
}

/// `{"method": "basic", "params": {"basic": {...}}}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawAuth {
    /// Only `basic` is supported.
    pub method: String,
    /// Method parameters.
    #[serde(default)]
    pub params: RawAuthParams,
}

/// Auth parameters by method.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RawAuthParams {
    /// Basic auth username and password templates.
    #[serde(default)]
    pub basic: Option<RawBasic>,
}

/// Basic auth templates.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawBasic {
    /// Username template (`{{apiToken}}` for Toggl).
    pub username: RawText,
    /// Password template (the literal `api_token` for Toggl).
    pub password: RawText,
}

/// A resource.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawResource {
    /// Resource name (`time_entries`).
    pub handle: String,
    /// Free-form metadata.
    #[serde(default)]
    pub meta: Option<Value>,
    /// Path prefix of every operation.
    #[serde(default)]
    pub endpoint: Option<RawText>,
    /// Fields of the flat record.
    #[serde(default)]
    pub fields: Vec<RawField>,
    /// Operations by name, in file order.
    #[serde(default)]
    pub operations: Ordered<RawOperation>,
    /// The seed's per-resource webhook events.
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

/// A field: `{"name", "type", "selector", "meta", "multivalue"}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawField {
    /// Field name.
    pub name: String,
    /// Type name.
    #[serde(rename = "type", default)]
    pub ty: Option<String>,
    /// Keys and indexes (kept raw so `compile` can explain bad steps).
    #[serde(default)]
    pub selector: Option<Vec<Value>>,
    /// Free-form metadata (`description`).
    #[serde(default)]
    pub meta: Option<Value>,
    /// Collect all values at index steps.
    #[serde(default)]
    pub multivalue: bool,
}

/// An operation.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RawOperation {
    /// HTTP method.
    #[serde(default)]
    pub method: Option<String>,
    /// Path after the resource endpoint.
    #[serde(default)]
    pub path: Option<RawText>,
    /// Headers (informational).
    #[serde(default)]
    pub headers: Option<Value>,
    /// Query parameter templates by name.
    #[serde(default)]
    pub query_params: Ordered<Value>,
    /// JSON body template text.
    #[serde(default)]
    pub body_template: Option<RawText>,
    /// Extension: what the operation does.
    #[serde(default)]
    pub description: Option<String>,
    /// Extension: `track`, `webhooks` or `reports` (inferred from the path when absent).
    #[serde(default)]
    pub api: Option<String>,
    /// Extension: declared parameters.
    #[serde(default)]
    pub params: Vec<RawParam>,
    /// Extension: pagination.
    #[serde(default)]
    pub pagination: Option<RawPagination>,
    /// Extension: `object`, `object_or_null`, `array`, `empty` or `envelope:<data key>`.
    #[serde(default)]
    pub response: Option<String>,
    /// Extension: whether repeating the call is harmless.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// Extension: how to find out whether a create already happened.
    #[serde(default)]
    pub lookup: Option<RawLookup>,
}

/// Extension: a declared operation parameter.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawParam {
    /// Placeholder name.
    pub name: String,
    /// Type name (defaults to the same-named field's type, else `String`).
    #[serde(rename = "type", default)]
    pub ty: Option<String>,
    /// Whether rendering fails without it.
    #[serde(default)]
    pub required: bool,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
    /// Used when absent.
    #[serde(default)]
    pub default: Option<Value>,
}

/// Extension: pagination, tagged by `type`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawPagination {
    /// `page` / `per_page` query parameters; stop on a short page.
    PagePerPage {
        /// Page number parameter.
        #[serde(default = "d_page")]
        page_param: String,
        /// Page size parameter.
        #[serde(default = "d_per_page")]
        per_page_param: String,
        /// Page size to ask for.
        per_page: u32,
        /// Largest page size the API accepts.
        #[serde(default)]
        max_per_page: Option<u32>,
    },
    /// Reports v3: cursor in response headers, sent back in the JSON body.
    ReportsCursor {
        /// Header with the next id.
        #[serde(default = "d_next_id")]
        next_id_header: String,
        /// Header with the next row number.
        #[serde(default = "d_next_row")]
        next_row_header: String,
        /// Body field for the next id.
        #[serde(default = "d_first_id")]
        first_id_field: String,
        /// Body field for the next row number.
        #[serde(default = "d_first_row")]
        first_row_field: String,
        /// Body field for the page size.
        #[serde(default = "d_page_size")]
        page_size_field: String,
        /// Page size to ask for.
        #[serde(default)]
        page_size: Option<u32>,
    },
    /// A `{data: [...], total_count}` envelope with page / per_page query parameters.
    Envelope {
        /// Key of the item array.
        #[serde(default = "d_data")]
        data_key: String,
        /// Page number parameter.
        #[serde(default = "d_page")]
        page_param: String,
        /// Page size parameter.
        #[serde(default = "d_per_page")]
        per_page_param: String,
        /// Page size to ask for.
        #[serde(default)]
        per_page: Option<u32>,
        /// Key of the total count.
        #[serde(default)]
        total_key: Option<String>,
    },
}

fn d_page() -> String {
    "page".into()
}
fn d_per_page() -> String {
    "per_page".into()
}
fn d_next_id() -> String {
    "X-Next-ID".into()
}
fn d_next_row() -> String {
    "X-Next-Row-Number".into()
}
fn d_first_id() -> String {
    "first_id".into()
}
fn d_first_row() -> String {
    "first_row_number".into()
}
fn d_page_size() -> String {
    "page_size".into()
}
fn d_data() -> String {
    "data".into()
}

/// Extension: list with `operation` and match the record's `field` to the parameter `param`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawLookup {
    /// Operation of the same resource that lists candidates (usually `list`).
    pub operation: String,
    /// Field of the resource to compare.
    pub field: String,
    /// Parameter of the create whose value must equal the field.
    pub param: String,
}

/// The seed's per-resource webhook: `{"event", "path", "payload"}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawWebhook {
    /// Event name such as `time_entry_created`.
    pub event: String,
    /// Delivery path (Toggl never calls per-event paths).
    #[serde(default)]
    pub path: Option<String>,
    /// Payload fields.
    #[serde(default)]
    pub payload: Vec<RawField>,
}

/// Extension: a named action.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawAction {
    /// Action name (`create-client`).
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Resource handle.
    pub resource: String,
    /// Operation name.
    pub operation: String,
    /// Parameter defaults.
    #[serde(default)]
    pub defaults: serde_json::Map<String, Value>,
    /// Parameters the action requires beyond the operation's own.
    #[serde(default)]
    pub required: Vec<String>,
}

/// Extension: Toggl webhook entity routed to a resource.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawWebhookEntity {
    /// Toggl entity (`metadata.model`), e.g. `time_entry`.
    pub entity: String,
    /// Actions (`created`, `updated`, `deleted`).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Resource whose fields flatten the payload.
    pub resource: String,
}

/// A whole definition: the combined form.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RawDefinition {
    /// The service file.
    pub service: RawServiceFile,
    /// Resources.
    #[serde(default)]
    pub resources: Vec<RawResource>,
    /// Extension: named actions.
    #[serde(default)]
    pub actions: Vec<RawAction>,
    /// Extension: webhook entities.
    #[serde(default)]
    pub webhooks: Vec<RawWebhookEntity>,
    /// Diagnostics found while reading (unknown keys); `compile` passes them on.
    #[serde(skip)]
    pub read_diagnostics: Vec<Diagnostic>,
}

/// A definition file that could not be read as JSON of the expected shape.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The text is not JSON.
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A value has the wrong JSON shape; `path` is a JSON path in the file.
    #[error("{path}: {message}")]
    Shape {
        /// JSON path in the file.
        path: String,
        /// What serde expected.
        message: String,
    },
    /// The file is none of the three accepted shapes.
    #[error(
        "not a definition file: expected a service file (with \"handle\" and \"service\"), a resources array, or {{\"service\", \"resources\"}}"
    )]
    UnknownKind,
}

/// What a parsed file holds.
#[derive(Debug, Clone)]
pub enum RawFile {
    /// A service file.
    Service(Box<RawServiceFile>, Value),
    /// A resources file.
    Resources(Vec<RawResource>, Value),
    /// A combined file.
    Combined(Box<RawDefinition>),
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, prefix: &str) -> Result<T, ReadError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") => prefix.to_owned(),
            (false, p) if p.starts_with('[') => format!("{prefix}{p}"),
            (false, p) => format!("{prefix}.{p}"),
        };
        ReadError::Shape {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Parses one file's text and tells which kind it is.
pub fn read_file(text: &str) -> Result<RawFile, ReadError> {
    let v: Value = serde_json::from_str(text).map_err(ReadError::Json)?;
    match &v {
        Value::Array(_) => Ok(RawFile::Resources(typed(&v, "")?, v)),
        Value::Object(m) if m.contains_key("resources") => {
            let mut def: RawDefinition = typed(&v, "")?;
            unknown_keys_combined(&v, &mut def.read_diagnostics);
            Ok(RawFile::Combined(Box::new(def)))
        }
        Value::Object(m) if m.contains_key("handle") && m.contains_key("service") => {
            Ok(RawFile::Service(Box::new(typed(&v, "")?), v))
        }
        _ => Err(ReadError::UnknownKind),
    }
}

impl RawDefinition {
    /// Parses a combined file.
    pub fn from_json(text: &str) -> Result<Self, ReadError> {
        match read_file(text)? {
            RawFile::Combined(d) => Ok(*d),
            _ => Err(ReadError::UnknownKind),
        }
    }

    /// Builds a definition from a service file and a resources file, as the seed ships.
    pub fn from_parts(service: &str, resources: &str) -> Result<Self, ReadError> {
        let (RawFile::Service(s, sv), RawFile::Resources(r, rv)) =
            (read_file(service)?, read_file(resources)?)
        else {
            return Err(ReadError::UnknownKind);
        };
        let mut read_diagnostics = Vec::new();
        unknown_keys_service_file(&sv, "service", &mut read_diagnostics);
        unknown_keys_resources(&rv, 0, &mut read_diagnostics);
        Ok(Self {
            service: *s,
            resources: r,
            actions: Vec::new(),
            webhooks: Vec::new(),
            read_diagnostics,
        })
    }
}

// ---- unknown keys -------------------------------------------------------------------------

fn check(v: &Value, path: &str, known: &[&str], out: &mut Vec<Diagnostic>) {
    if let Value::Object(m) = v {
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                out.push(Diagnostic::warning(
                    "unknown-key",
                    format!("{path}.{k}"),
                    format!("unknown key {k:?} is ignored"),
                    format!(
                        "remove it, or check its spelling (known here: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
}

fn each<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

const TEXT: &[&str] = &["value", "placeholders"];
const PLACEHOLDER: &[&str] = &["name", "type", "description", "required"];

fn text(v: Option<&Value>, path: &str, out: &mut Vec<Diagnostic>) {
    if let Some(v) = v {
        check(v, path, TEXT, out);
        for (i, p) in each(v, "placeholders") {
            check(p, &format!("{path}.placeholders[{i}]"), PLACEHOLDER, out);
        }
    }
}

pub(crate) fn unknown_keys_combined(v: &Value, out: &mut Vec<Diagnostic>) {
    check(v, "", &["service", "resources", "actions", "webhooks"], out);
    // `check` on the root gives ".key"; strip the leading dot for readability.
    for d in out.iter_mut() {
        if let Some(p) = d.path.strip_prefix('.') {
            d.path = p.to_owned();
        }
    }
    if let Some(s) = v.get("service") {
        unknown_keys_service_file(s, "service", out);
    }
    if let Some(r) = v.get("resources") {
        unknown_keys_resources(r, 0, out);
    }
    for (i, a) in each(v, "actions") {
        check(
            a,
            &format!("actions[{i}]"),
            &[
                "name",
                "description",
                "resource",
                "operation",
                "defaults",
                "required",
            ],
            out,
        );
    }
    for (i, w) in each(v, "webhooks") {
        check(
            w,
            &format!("webhooks[{i}]"),
            &["entity", "actions", "resource"],
            out,
        );
    }
}

pub(crate) fn unknown_keys_service_file(v: &Value, p: &str, out: &mut Vec<Diagnostic>) {
    check(v, p, &["handle", "status", "meta", "service"], out);
    let Some(s) = v.get("service") else { return };
    let p = format!("{p}.service");
    check(
        s,
        &p,
        &["baseURL", "protocol", "contentType", "headers", "auth"],
        out,
    );
    text(s.get("baseURL"), &format!("{p}.baseURL"), out);
    if let Some(a) = s.get("auth") {
        let p = format!("{p}.auth");
        check(a, &p, &["method", "params"], out);
        if let Some(params) = a.get("params") {
            check(params, &format!("{p}.params"), &["basic"], out);
            if let Some(b) = params.get("basic") {
                let p = format!("{p}.params.basic");
                check(b, &p, &["username", "password"], out);
                text(b.get("username"), &format!("{p}.username"), out);
                text(b.get("password"), &format!("{p}.password"), out);
            }
        }
    }
}

/// `resources[3].x` -> `resources[3 + shift].x`; other paths unchanged.
pub(crate) fn shift_resource_index(path: &str, shift: usize) -> String {
    let Some(rest) = path.strip_prefix("resources[") else {
        return path.to_owned();
    };
    let Some((n, tail)) = rest.split_once(']') else {
        return path.to_owned();
    };
    match n.parse::<usize>() {
        Ok(i) => format!("resources[{}]{tail}", i + shift),
        Err(_) => path.to_owned(),
    }
}

const FIELD: &[&str] = &["name", "type", "selector", "meta", "multivalue"];
const OPERATION: &[&str] = &[
    "method",
    "path",
    "headers",
    "queryParams",
    "bodyTemplate",
    "description",
    "api",
    "params",
    "pagination",
    "response",
    "idempotent",
    "lookup",
];
const PAGINATION: &[&str] = &[
    "type",
    "page_param",
    "per_page_param",
    "per_page",
    "max_per_page",
    "next_id_header",
    "next_row_header",
    "first_id_field",
    "first_row_field",
    "page_size_field",
    "page_size",
    "data_key",
    "total_key",
];

pub(crate) fn unknown_keys_resources(v: &Value, offset: usize, out: &mut Vec<Diagnostic>) {
    let Some(items) = v.as_array() else { return };
    for (i, r) in items.iter().enumerate() {
        let p = format!("resources[{}]", i + offset);
        check(
            r,
            &p,
            &[
                "handle",
                "meta",
                "endpoint",
                "fields",
                "operations",
                "webhooks",
            ],
            out,
        );
        text(r.get("endpoint"), &format!("{p}.endpoint"), out);
        for (j, f) in each(r, "fields") {
            check(f, &format!("{p}.fields[{j}]"), FIELD, out);
        }
        if let Some(Value::Object(ops)) = r.get("operations") {
            for (name, op) in ops {
                let p = format!("{p}.operations.{name}");
                check(op, &p, OPERATION, out);
                text(op.get("path"), &format!("{p}.path"), out);
                text(op.get("bodyTemplate"), &format!("{p}.bodyTemplate"), out);
                for (k, prm) in each(op, "params") {
                    check(
                        prm,
                        &format!("{p}.params[{k}]"),
                        &["name", "type", "required", "description", "default"],
                        out,
                    );
                }
                if let Some(pg) = op.get("pagination") {
                    check(pg, &format!("{p}.pagination"), PAGINATION, out);
                }
                if let Some(l) = op.get("lookup") {
                    check(
                        l,
                        &format!("{p}.lookup"),
                        &["operation", "field", "param"],
                        out,
                    );
                }
            }
        }
        for (j, w) in each(r, "webhooks") {
            let wp = format!("{p}.webhooks[{j}]");
            check(w, &wp, &["event", "path", "payload"], out);
            for (k, f) in each(w, "payload") {
                check(f, &format!("{wp}.payload[{k}]"), FIELD, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_warn_and_shape_errors_have_paths() {
        let text = r#"{"service":{"handle":"x","service":{"baseURL":{"value":"https://h"},"extra":1}},
            "resources":[{"handle":"r","operations":{"list":{"method":"GET","path":{"value":""},"colour":"red"}}}],
            "bogus":true}"#;
        let d = RawDefinition::from_json(text).expect("loads");
        let paths: Vec<_> = d.read_diagnostics.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "bogus",
                "service.service.extra",
                "resources[0].operations.list.colour"
            ]
        );

        let bad = r#"{"service":{"handle":"x","service":{"baseURL":{"value":"h"}}},
            "resources":[{"handle":"r","fields":[{"name":"a","multivalue":"yes"}]}]}"#;
        let err = RawDefinition::from_json(bad).expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("resources[0].fields[0].multivalue: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn operations_keep_file_order() {
        let text = r#"[{"handle":"r","operations":{"update":{},"create":{},"list":{}}}]"#;
        let RawFile::Resources(r, _) = read_file(text).expect("reads") else {
            panic!("expected a resources file")
        };
        let names: Vec<_> = r[0].operations.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["update", "create", "list"]);
    }
}
