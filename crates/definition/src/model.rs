//! The compiled, checked model: what the client crate and the CLI use.
//!
//! Nothing in here can hold an unchecked reference: every placeholder of an operation has a
//! `ParamSpec`, every action points at an existing operation, every webhook entity at an existing
//! resource. `compile` is the only way to build these values from a definition file.

use std::collections::BTreeSet;
use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde_json::Value;

use crate::params::ParamType;
use crate::params::{ParamError, ParamSpec, Params, find_spec, known_names};
use crate::selector::Selector;
use crate::template::{BodyTemplate, Segment, segment_names, value_as_text};

/// A flat record: field name to value, in the resource's field order.
pub type Record = serde_json::Map<String, Value>;

/// A compiled connector.
#[derive(Debug, Clone, Serialize)]
pub struct Connector {
    /// The service: base URL and auth.
    pub service: Service,
    /// Resources in definition order.
    pub resources: Vec<Resource>,
    /// Named actions.
    pub actions: Vec<Action>,
    /// Webhook events routed to resources (Toggl routes by `metadata.model` + `metadata.action`).
    pub webhooks: Vec<WebhookEvent>,
}

impl Connector {
    /// A resource by name.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// An operation by resource and operation name.
    pub fn operation(&self, resource: &str, op: &str) -> Option<&Operation> {
        self.resource(resource)?.operation(op)
    }

    /// A named action.
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// The operation an action runs. Always `Some` for a compiled connector's own actions.
    pub fn action_operation(&self, action: &Action) -> Option<&Operation> {
        self.operation(&action.resource, &action.operation)
    }

    /// Renders an action: its defaults, overlaid by `given`, checked against its required list.
    pub fn render_action(
        &self,
        action: &Action,
        given: &Params,
    ) -> Result<RenderedRequest, RenderError> {
        let op = self
            .action_operation(action)
            .ok_or_else(|| RenderError::UnknownOperation {
                name: format!("{}.{}", action.resource, action.operation),
            })?;
        let params = action.defaults.merged(given);
        let missing: Vec<String> = action
            .required
            .iter()
            .filter(|n| !params.contains(n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(RenderError::MissingRequired { names: missing });
        }
        op.render(&params)
    }

    /// The resource that flattens a webhook payload of this entity/action.
    pub fn webhook_resource(&self, entity: &str, action: &str) -> Option<&Resource> {
        let ev = self
            .webhooks
            .iter()
            .find(|w| w.entity == entity && (w.action == action || w.action == "*"))?;
        self.resource(&ev.resource)
    }
}

/// The service block.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// Machine name.
    pub handle: String,
    /// Display name (`meta.short`, else the handle).
    pub name: String,
    /// Base URL without a trailing slash; join paths with [`join_url`].
    pub base_url: String,
    /// Authentication.
    pub auth: Auth,
}

/// How requests authenticate.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Auth {
    /// No auth declared.
    None,
    /// HTTP Basic with templated username and password (Toggl: `{{apiToken}}` : `api_token`).
    Basic {
        /// Username template text.
        username: String,
        /// Password template text.
        password: String,
        /// Declared placeholders (secrets: never log their values).
        placeholders: Vec<ParamSpec>,
    },
}

impl Auth {
    /// Renders Basic credentials, taking placeholder values (e.g. the API token) from `lookup`.
    /// Returns `None` for [`Auth::None`]. The values are secrets: callers must not log them.
    pub fn basic_credentials(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<(String, String)>, RenderError> {
        let Self::Basic {
            username, password, ..
        } = self
        else {
            return Ok(None);
        };
        let fill = |t: &str| -> Result<String, RenderError> {
            let mut out = String::new();
            for seg in crate::template::parse_segments(t) {
                match seg {
                    Segment::Text(s) => out.push_str(&s),
                    Segment::Placeholder(n) => {
                        out.push_str(&lookup(&n).ok_or_else(|| RenderError::MissingRequired {
                            names: vec![n.clone()],
                        })?);
                    }
                }
            }
            Ok(out)
        };
        Ok(Some((fill(username)?, fill(password)?)))
    }
}

/// A resource: fields for flat records and its operations.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    /// Resource name (`time_entries`).
    pub name: String,
    /// Human description.
    pub description: Option<String>,
    /// Fields of the flat record.
    pub fields: Vec<Field>,
    /// Operations in definition order.
    pub operations: Vec<Operation>,
}

impl Resource {
    /// An operation by name.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Turns one response object into a flat record by the resource's fields. Missing values are
    /// `null`; multivalue fields are arrays.
    pub fn flatten(&self, item: &Value) -> Record {
        self.fields
            .iter()
            .map(|f| (f.name.clone(), f.extract(item)))
            .collect()
    }

    /// Flattens every item of a list response (`null` gives no record, an object gives one).
    pub fn flatten_all(&self, body: &Value) -> Vec<Record> {
        match body {
            Value::Array(items) => items.iter().map(|i| self.flatten(i)).collect(),
            Value::Null => Vec::new(),
            other => vec![self.flatten(other)],
        }
    }
}

/// A field of a resource.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Declared type.
    pub ty: ParamType,
    /// Where the value sits in a response object.
    pub selector: Selector,
    /// Collect every value at index steps.
    pub multivalue: bool,
    /// Human description.
    pub description: Option<String>,
}

impl Field {
    /// The field's value in one response object.
    pub fn extract(&self, item: &Value) -> Value {
        if self.multivalue {
            Value::Array(self.selector.select_all(item))
        } else {
            self.selector.select(item)
        }
    }
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// Parses a method name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// The method name in upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    /// Whether the method changes data.
    pub fn is_write(self) -> bool {
        self != Self::Get
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which Toggl API an operation belongs to (for quota accounting and display). Paths are always
/// relative to the host root or to the base URL as [`join_url`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// Track API v9 (`/api/v9`).
    Track,
    /// Webhooks API v1 (`/webhooks/api/v1`).
    Webhooks,
    /// Reports API v3 (`/reports/api/v3`).
    Reports,
}

impl Api {
    /// The path prefix of this API on the host.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Track => "/api/v9",
            Self::Webhooks => "/webhooks/api/v1",
            Self::Reports => "/reports/api/v3",
        }
    }

    /// Parses `track`, `webhooks` or `reports`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "track" => Self::Track,
            "webhooks" => Self::Webhooks,
            "reports" => Self::Reports,
            _ => return None,
        })
    }

    /// The API a host-root path belongs to (`Track` unless it starts with another prefix).
    pub fn infer(path: &str) -> Self {
        [Self::Webhooks, Self::Reports]
            .into_iter()
            .find(|a| has_prefix(path, a.prefix()))
            .unwrap_or(Self::Track)
    }
}

fn has_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
}

/// Joins a base URL and a path without doubling an API prefix.
///
/// If the path starts with a known API prefix (`/api/v9`, `/webhooks/api/v1`,
/// `/reports/api/v3`) it is taken as relative to the host root, and an API prefix at the end of
/// the base is dropped: the seed's `https://api.track.toggl.com/api/v9` + `/api/v9/me` gives
/// `https://api.track.toggl.com/api/v9/me`, and the same base + `/webhooks/api/v1/limits/1`
/// gives `https://api.track.toggl.com/webhooks/api/v1/limits/1`. Other paths are appended.
///
/// ```
/// use toggl_connect_definition::join_url;
/// assert_eq!(join_url("https://h/api/v9", "/api/v9/me"), "https://h/api/v9/me");
/// assert_eq!(join_url("https://h/", "/api/v9/me"), "https://h/api/v9/me");
/// assert_eq!(join_url("https://h/api/v9", "/me"), "https://h/api/v9/me");
/// ```
pub fn join_url(base: &str, path: &str) -> String {
    let mut base = base.trim_end_matches('/');
    let path_is_rooted = [Api::Track, Api::Webhooks, Api::Reports]
        .iter()
        .any(|a| has_prefix(path, a.prefix()));
    if path_is_rooted {
        for a in [Api::Track, Api::Webhooks, Api::Reports] {
            if let Some(host) = base.strip_suffix(a.prefix()) {
                base = host;
                break;
            }
        }
    }
    if path.is_empty() {
        return base.to_owned();
    }
    if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

/// How a list operation pages. The client follows it; the definition only declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Pagination {
    /// Query `page` (from 1) and `per_page`; the last page is a short one.
    PagePerPage {
        /// Page number query parameter.
        page_param: String,
        /// Page size query parameter.
        per_page_param: String,
        /// Page size to ask for.
        per_page: u32,
        /// Largest page size the API accepts.
        max_per_page: Option<u32>,
    },
    /// Reports v3: read the cursor from response headers and send it back as JSON body fields;
    /// stop when the headers are absent.
    ReportsCursor {
        /// Header with the next first id (`X-Next-ID`).
        next_id_header: String,
        /// Header with the next row number (`X-Next-Row-Number`).
        next_row_header: String,
        /// Body field to send the id in (`first_id`).
        first_id_field: String,
        /// Body field to send the row number in (`first_row_number`).
        first_row_field: String,
        /// Body field for the page size (`page_size`).
        page_size_field: String,
        /// Page size to ask for, if any (Toggl's default is 50).
        page_size: Option<u32>,
    },
    /// A paged envelope `{data: [...], total_count, ...}` with page / per_page query parameters.
    Envelope {
        /// Key of the item array.
        data_key: String,
        /// Page number query parameter.
        page_param: String,
        /// Page size query parameter.
        per_page_param: String,
        /// Page size to ask for.
        per_page: Option<u32>,
        /// Key of the total item count, if the API gives one.
        total_key: Option<String>,
    },
}

/// What a successful response body looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum ResponseShape {
    /// One object.
    Object,
    /// One object, or `null` (e.g. `GET /me/time_entries/current` when nothing runs).
    ObjectOrNull,
    /// A bare array.
    Array,
    /// An object whose `data_key` holds the items.
    Envelope {
        /// Key of the item array.
        data_key: String,
    },
    /// No meaningful body.
    Empty,
}

impl ResponseShape {
    /// The items of a response body of this shape (an object gives one item).
    pub fn items<'a>(&self, body: &'a Value) -> Vec<&'a Value> {
        match (self, body) {
            (_, Value::Null) | (Self::Empty, _) => Vec::new(),
            (Self::Envelope { data_key }, b) => match b.get(data_key) {
                Some(Value::Array(a)) => a.iter().collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(other) => vec![other],
            },
            (_, Value::Array(a)) => a.iter().collect(),
            (_, other) => vec![other],
        }
    }
}

/// How to check whether a create already happened (for a retried create whose response was lost):
/// run `operation` of the same resource, passing it those of the create's parameters it declares
/// (e.g. `workspace_id`), flatten the items and look for a record whose `field` equals the value
/// of the create's parameter `param`. Only declared where that field is unique in the listed scope
/// (names of clients, projects, tags, tasks of a project; webhook descriptions per workspace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lookup {
    /// Listing operation of the same resource.
    pub operation: String,
    /// Field of the flattened record.
    pub field: String,
    /// Parameter of the create.
    pub param: String,
}

/// A query parameter template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryTemplate {
    /// Query key.
    pub key: String,
    /// Value template text as written (`{{since}}`).
    pub source: String,
    /// Parsed value template.
    #[serde(skip)]
    pub value: Vec<Segment>,
}

/// A compiled operation.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// Operation name (`create`).
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// HTTP method.
    pub method: Method,
    /// Path template from the host root (or the base URL), e.g. `/api/v9/workspaces/{{workspace_id}}/clients`.
    pub path: String,
    /// Parsed path template.
    #[serde(skip)]
    pub path_segments: Vec<Segment>,
    /// Query templates.
    pub query: Vec<QueryTemplate>,
    /// Body template.
    pub body: Option<BodyTemplate>,
    /// Which API.
    pub api: Api,
    /// Every parameter the templates use.
    pub params: Vec<ParamSpec>,
    /// How it pages.
    pub pagination: Option<Pagination>,
    /// Response body shape.
    pub response: ResponseShape,
    /// Whether repeating it is harmless (GET/PUT/DELETE by default; POST/PATCH when declared).
    pub idempotent: bool,
    /// How to detect a create that already happened.
    pub lookup: Option<Lookup>,
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedRequest {
    /// HTTP method.
    pub method: Method,
    /// Path starting with `/`, placeholders filled and percent-encoded; join with [`join_url`].
    pub path: String,
    /// Query pairs, NOT percent-encoded (the HTTP client encodes them).
    pub query: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
    /// Which API.
    pub api: Api,
    /// Pagination to follow (the client adds page or cursor values itself).
    pub pagination: Option<Pagination>,
    /// Response shape.
    pub response: ResponseShape,
    /// Whether the client may retry it blindly.
    pub idempotent: bool,
}

/// A request that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A value does not fit its parameter, or the parameter is unknown.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// Required parameters were not given.
    #[error("missing required parameter{} {}", if names.len() == 1 { "" } else { "s" }, names.join(", "))]
    MissingRequired {
        /// Their names.
        names: Vec<String>,
    },
    /// A path parameter rendered to empty text (it would change the path's shape).
    #[error("parameter {name}: a path parameter cannot be empty")]
    EmptyPathValue {
        /// Parameter name.
        name: String,
    },
    /// An action names an operation the connector does not have.
    #[error("unknown operation {name}")]
    UnknownOperation {
        /// `resource.operation`.
        name: String,
    },
}

/// Characters kept as they are in a path segment: RFC 3986 unreserved only. Everything else,
/// `/`, `?`, `#`, `%` and `,` included, is encoded, so a value cannot leave its segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode_segment(name: &str, text: &str) -> Result<String, RenderError> {
    if text.is_empty() {
        return Err(RenderError::EmptyPathValue {
            name: name.to_owned(),
        });
    }
    if text.bytes().all(|b| b == b'.') {
        // `.` and `..` would be resolved away by URL normalization.
        return Ok("%2E".repeat(text.len()));
    }
    Ok(utf8_percent_encode(text, SEGMENT).to_string())
}

impl Operation {
    /// The spec of a parameter.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        find_spec(&self.params, name)
    }

    /// Checks and types `given` against the parameter specs: rejects unknown names, coerces
    /// values by type, applies defaults and reports every missing required parameter.
    pub fn resolve(&self, given: &Params) -> Result<Params, RenderError> {
        let mut out = Params::new();
        for (name, value) in given.iter() {
            let spec = self.param(name).ok_or_else(|| ParamError::Unknown {
                name: name.to_owned(),
                known: known_names(&self.params),
            })?;
            out.insert(name, spec.ty.coerce_value(name, value.clone())?);
        }
        let mut missing = Vec::new();
        for spec in &self.params {
            if out.contains(&spec.name) {
                continue;
            }
            if let Some(d) = &spec.default {
                out.insert(spec.name.clone(), d.clone());
            } else if spec.required {
                missing.push(spec.name.clone());
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(RenderError::MissingRequired { names: missing })
        }
    }

    /// Renders the request. Fails before anything is sent when a required parameter is missing
    /// or a value does not fit its type.
    pub fn render(&self, given: &Params) -> Result<RenderedRequest, RenderError> {
        let values = self.resolve(given)?;
        let mut path = String::new();
        for seg in &self.path_segments {
            match seg {
                Segment::Text(t) => path.push_str(t),
                Segment::Placeholder(n) => {
                    let v = values.get(n).ok_or_else(|| RenderError::MissingRequired {
                        names: vec![n.clone()],
                    })?;
                    let encoded = match v {
                        // Toggl takes id lists in a segment: `/time_entries/1,2,3`.
                        Value::Array(items) if !items.is_empty() => items
                            .iter()
                            .map(|i| encode_segment(n, &value_as_text(i)))
                            .collect::<Result<Vec<_>, _>>()?
                            .join(","),
                        other => encode_segment(n, &value_as_text(other))?,
                    };
                    path.push_str(&encoded);
                }
            }
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let mut query = Vec::new();
        'pairs: for q in &self.query {
            let mut text = String::new();
            for seg in &q.value {
                match seg {
                    Segment::Text(t) => text.push_str(t),
                    Segment::Placeholder(n) => match values.get(n) {
                        Some(Value::Null) | None => continue 'pairs,
                        Some(v) => text.push_str(&value_as_text(v)),
                    },
                }
            }
            query.push((q.key.clone(), text));
        }
        let body = self
            .body
            .as_ref()
            .and_then(|b| b.render(&|n| values.get(n)));
        Ok(RenderedRequest {
            method: self.method,
            path,
            query,
            body,
            api: self.api,
            pagination: self.pagination.clone(),
            response: self.response.clone(),
            idempotent: self.idempotent,
        })
    }

    /// Names of the placeholders in the path.
    pub fn path_params(&self) -> BTreeSet<&str> {
        segment_names(&self.path_segments).collect()
    }
}

/// A named action: an operation with defaults, for automations and the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// Action name (`create-client`).
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Resource name.
    pub resource: String,
    /// Operation name.
    pub operation: String,
    /// Values used when the caller gives none.
    pub defaults: Params,
    /// Parameters the caller must give (beyond the operation's own required ones).
    pub required: Vec<String>,
}

/// A webhook event routed to a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookEvent {
    /// Toggl entity (`metadata.model`), e.g. `time_entry`.
    pub entity: String,
    /// `created`, `updated`, `deleted` or `*`.
    pub action: String,
    /// Resource whose fields flatten the payload.
    pub resource: String,
}

/// A compact, stable view of a connector for `definition show` (human or `--json`): no template
/// trees, one line of facts per operation.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorSummary {
    /// Service handle.
    pub handle: String,
    /// Display name.
    pub name: String,
    /// Base URL.
    pub base_url: String,
    /// `basic` or `none`.
    pub auth: &'static str,
    /// Resources.
    pub resources: Vec<ResourceSummary>,
    /// Actions.
    pub actions: Vec<ActionSummary>,
    /// Webhook routing: `entity.action -> resource`.
    pub webhooks: Vec<String>,
}

/// A resource in a [`ConnectorSummary`].
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSummary {
    /// Resource name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// `name: Type` of every field.
    pub fields: Vec<String>,
    /// Operations.
    pub operations: Vec<OperationSummary>,
}

/// An operation in a [`ConnectorSummary`].
#[derive(Debug, Clone, Serialize)]
pub struct OperationSummary {
    /// Operation name.
    pub name: String,
    /// HTTP method.
    pub method: Method,
    /// Path template.
    pub path: String,
    /// Which API.
    pub api: Api,
    /// Parameters: `name: Type` with ` (required)` or ` = default`.
    pub params: Vec<String>,
    /// Pagination kind, if any.
    pub pagination: Option<&'static str>,
    /// Whether blind retries are safe.
    pub idempotent: bool,
    /// Description.
    pub description: Option<String>,
}

/// An action in a [`ConnectorSummary`].
#[derive(Debug, Clone, Serialize)]
pub struct ActionSummary {
    /// Action name.
    pub name: String,
    /// `resource.operation`.
    pub runs: String,
    /// Parameters the caller must give (the operation's required ones without a default, and the
    /// action's own).
    pub required: Vec<String>,
    /// Description.
    pub description: Option<String>,
}

fn describe_param(p: &ParamSpec) -> String {
    let mut s = format!("{}: {}", p.name, p.ty);
    if let Some(d) = &p.default {
        s.push_str(&format!(" = {d}"));
    } else if p.required {
        s.push_str(" (required)");
    }
    s
}

impl Connector {
    /// A compact view for display.
    pub fn summary(&self) -> ConnectorSummary {
        ConnectorSummary {
            handle: self.service.handle.clone(),
            name: self.service.name.clone(),
            base_url: self.service.base_url.clone(),
            auth: match self.service.auth {
                Auth::None => "none",
                Auth::Basic { .. } => "basic",
            },
            resources: self
                .resources
                .iter()
                .map(|r| ResourceSummary {
                    name: r.name.clone(),
                    description: r.description.clone(),
                    fields: r
                        .fields
                        .iter()
                        .map(|f| format!("{}: {}", f.name, f.ty))
                        .collect(),
                    operations: r
                        .operations
                        .iter()
                        .map(|o| OperationSummary {
                            name: o.name.clone(),
                            method: o.method,
                            path: o.path.clone(),
                            api: o.api,
                            params: o.params.iter().map(describe_param).collect(),
                            pagination: o.pagination.as_ref().map(|p| match p {
                                Pagination::PagePerPage { .. } => "page_per_page",
                                Pagination::ReportsCursor { .. } => "reports_cursor",
                                Pagination::Envelope { .. } => "envelope",
                            }),
                            idempotent: o.idempotent,
                            description: o.description.clone(),
                        })
                        .collect(),
                })
                .collect(),
            actions: self
                .actions
                .iter()
                .map(|a| {
                    let mut required: Vec<String> = self
                        .action_operation(a)
                        .map(|o| {
                            o.params
                                .iter()
                                .filter(|p| {
                                    p.required
                                        && p.default.is_none()
                                        && !a.defaults.contains(&p.name)
                                })
                                .map(|p| p.name.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    for r in &a.required {
                        if !required.contains(r) {
                            required.push(r.clone());
                        }
                    }
                    ActionSummary {
                        name: a.name.clone(),
                        runs: format!("{}.{}", a.resource, a.operation),
                        required,
                        description: a.description.clone(),
                    }
                })
                .collect(),
            webhooks: self
                .webhooks
                .iter()
                .map(|w| format!("{}.{} -> {}", w.entity, w.action, w.resource))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn join_never_doubles_the_prefix() {
        let seed = "https://api.track.toggl.com/api/v9";
        assert_eq!(
            join_url(seed, "/api/v9/me/time_entries"),
            "https://api.track.toggl.com/api/v9/me/time_entries"
        );
        assert_eq!(
            join_url(seed, "/webhooks/api/v1/limits/1"),
            "https://api.track.toggl.com/webhooks/api/v1/limits/1"
        );
        assert_eq!(
            join_url(seed, "/me"),
            "https://api.track.toggl.com/api/v9/me"
        );
        assert_eq!(
            join_url("https://api.track.toggl.com/", "/reports/api/v3/x"),
            "https://api.track.toggl.com/reports/api/v3/x"
        );
        assert_eq!(
            join_url("http://127.0.0.1:1", "/api/v9x"),
            "http://127.0.0.1:1/api/v9x"
        );
        assert_eq!(join_url("http://h/base", ""), "http://h/base");
    }

    #[test]
    fn api_is_inferred_from_the_prefix() {
        assert_eq!(
            Api::infer("/webhooks/api/v1/subscriptions/1"),
            Api::Webhooks
        );
        assert_eq!(
            Api::infer("/reports/api/v3/workspace/1/search/time_entries"),
            Api::Reports
        );
        assert_eq!(Api::infer("/api/v9/me"), Api::Track);
        assert_eq!(Api::infer("/reports/api/v30"), Api::Track);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(
            encode_segment("x", "a/b?c#d%e f"),
            Ok("a%2Fb%3Fc%23d%25e%20f".into())
        );
        assert_eq!(encode_segment("x", ".."), Ok("%2E%2E".into()));
        assert_eq!(encode_segment("x", "a.b"), Ok("a.b".into()));
        assert!(encode_segment("x", "").is_err());
    }

    #[test]
    fn response_items() {
        let env = ResponseShape::Envelope {
            data_key: "data".into(),
        };
        let body = json!({"data":[1,2],"total_count":2});
        assert_eq!(env.items(&body).len(), 2);
        assert_eq!(ResponseShape::ObjectOrNull.items(&Value::Null).len(), 0);
        assert_eq!(ResponseShape::Array.items(&json!([1, 2, 3])).len(), 3);
        assert_eq!(ResponseShape::Object.items(&json!({"a":1})).len(), 1);
    }
}
