//! `compile`: raw definition -> checked [`Connector`] plus diagnostics.
//!
//! Where a placeholder's declaration comes from, in order:
//! 1. the operation's `params` (our extension);
//! 2. a resource field of the same name (its type; the seed declares nothing else);
//! 3. a multivalue field whose selector starts with that name (the seed's `tags_0` with
//!    `["tags", 0]` declares the `tags` list) — with a `placeholder-matched-by-selector` warning;
//! 4. a path placeholder declares itself (required, `String`, encoded as one segment);
//! 5. a query placeholder whose key has the same name declares itself (optional, `String`).
//!
//! Anything else is an `unknown-placeholder` error. Placeholders used in the path are always
//! required; the seed's body placeholders are optional (an absent one omits its key), since the
//! seed cannot say otherwise.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::model::{
    Action, Api, Auth, Connector, Field, Lookup, Method, Operation, Pagination, QueryTemplate,
    Resource, ResponseShape, Service, WebhookEvent,
};
use crate::params::{ParamSpec, ParamType, Params};
use crate::raw::{RawDefinition, RawField, RawOperation, RawPagination, RawResource};
use crate::selector::Selector;
use crate::template::{BodyTemplate, Node, Segment, parse_segments, segment_names};

/// A checked connector with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The checked connector.
    pub connector: Connector,
    /// Warnings (never errors: a definition with errors does not compile).
    pub diagnostics: Vec<Diagnostic>,
}

/// A definition with at least one error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("definition has {} error{}: {}", self.error_count(), if self.error_count() == 1 { "" } else { "s" }, self.first_error())]
pub struct CompileError {
    /// Every diagnostic, warnings included, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

impl CompileError {
    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    fn first_error(&self) -> String {
        self.diagnostics
            .iter()
            .find(|d| d.is_error())
            .map(|d| format!("{}: {}", d.path, d.message))
            .unwrap_or_default()
    }
}

/// Bodies Toggl v8 wrapped in a key named after the entity; v9 takes them flat.
const V8_WRAPPERS: &[&str] = &[
    "time_entry",
    "project",
    "client",
    "task",
    "tag",
    "workspace",
    "user",
    "project_user",
    "workspace_user",
];

/// Entities Toggl's webhooks report in `metadata.model`.
const WEBHOOK_ENTITIES: &[&str] = &[
    "client",
    "project",
    "project_group",
    "project_user",
    "tag",
    "task",
    "time_entry",
    "workspace",
    "workspace_user",
    "*",
];

const WEBHOOK_ACTIONS: &[&str] = &["created", "updated", "deleted", "*"];

/// Checks a raw definition and builds the connector.
pub fn compile(raw: &RawDefinition) -> Result<Compiled, CompileError> {
    let mut cx = Cx {
        diags: raw.read_diagnostics.clone(),
    };
    let service = cx.service(raw);
    let base_has_v9 = url_path(&service.base_url).ends_with("/api/v9");

    let mut resources = Vec::new();
    let mut webhooks = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, r) in raw.resources.iter().enumerate() {
        let p = format!("resources[{i}]");
        if !seen.insert(r.handle.as_str()) {
            cx.error(
                "duplicate-resource",
                format!("{p}.handle"),
                format!("resource {:?} is defined twice", r.handle),
                "rename or remove one of them",
            );
        }
        resources.push(cx.resource(&p, r, base_has_v9));
        for (j, w) in r.webhooks.iter().enumerate() {
            let wp = format!("{p}.webhooks[{j}]");
            if let Some(path) = &w.path {
                cx.warning(
                    "webhook-delivery-path",
                    format!("{wp}.path"),
                    format!(
                        "Toggl never calls per-event paths such as {path:?}: a subscription has one url_callback and events are told apart by metadata.model and metadata.action"
                    ),
                    "drop the path; subscribe once with event_filters and let the receiver route by model/action",
                );
            }
            for (k, f) in w.payload.iter().enumerate() {
                cx.field(&format!("{wp}.payload[{k}]"), f);
            }
            match split_event(&w.event) {
                Some((entity, action)) => webhooks.push(WebhookEvent {
                    entity: entity.to_owned(),
                    action: action.to_owned(),
                    resource: r.handle.clone(),
                }),
                None => cx.warning(
                    "unknown-webhook-event",
                    format!("{wp}.event"),
                    format!(
                        "event {:?} is not <entity>_<created|updated|deleted>",
                        w.event
                    ),
                    "name events like time_entry_created",
                ),
            }
        }
    }

    for (k, w) in raw.webhooks.iter().enumerate() {
        let p = format!("webhooks[{k}]");
        if !resources.iter().any(|r| r.name == w.resource) {
            cx.error(
                "unknown-resource",
                format!("{p}.resource"),
                format!(
                    "webhook entity {:?} names unknown resource {:?}",
                    w.entity, w.resource
                ),
                format!(
                    "use one of: {}",
                    names(resources.iter().map(|r| r.name.as_str()))
                ),
            );
            continue;
        }
        if !WEBHOOK_ENTITIES.contains(&w.entity.as_str()) {
            cx.warning(
                "unknown-webhook-entity",
                format!("{p}.entity"),
                format!("Toggl sends no events for entity {:?}", w.entity),
                format!("use one of: {}", WEBHOOK_ENTITIES.join(", ")),
            );
        }
        let actions: Vec<&str> = if w.actions.is_empty() {
            vec!["*"]
        } else {
            w.actions.iter().map(String::as_str).collect()
        };
        for (a_i, a) in actions.into_iter().enumerate() {
            if !WEBHOOK_ACTIONS.contains(&a) {
                cx.error(
                    "unknown-webhook-action",
                    format!("{p}.actions[{a_i}]"),
                    format!("unknown webhook action {a:?}"),
                    "use created, updated, deleted or *",
                );
                continue;
            }
            webhooks.push(WebhookEvent {
                entity: w.entity.clone(),
                action: a.to_owned(),
                resource: w.resource.clone(),
            });
        }
    }

    let actions = cx.actions(raw, &resources);

    if cx.diags.iter().any(Diagnostic::is_error) {
        return Err(CompileError {
            diagnostics: cx.diags,
        });
    }
    Ok(Compiled {
        connector: Connector {
            service,
            resources,
            actions,
            webhooks,
        },
        diagnostics: cx.diags,
    })
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}

fn split_event(event: &str) -> Option<(&str, &str)> {
    ["created", "updated", "deleted"].iter().find_map(|a| {
        event
            .strip_suffix(a)
            .and_then(|e| e.strip_suffix('_'))
            .filter(|e| !e.is_empty())
            .map(|e| (e, *a))
    })
}

/// The path part of a URL (`https://h/api/v9/` -> `/api/v9`).
fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    after_scheme
        .find('/')
        .map_or("", |i| after_scheme[i..].trim_end_matches('/'))
}

fn description(meta: Option<&Value>) -> Option<String> {
    meta?
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The path with placeholders replaced by `{}`, split into segments, for shape matching.
fn shape(path: &str) -> Vec<String> {
    parse_segments(path)
        .iter()
        .map(|s| match s {
            Segment::Text(t) => t.clone(),
            Segment::Placeholder(_) => "{}".to_owned(),
        })
        .collect::<String>()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn contains_seq(hay: &[String], needle: &[&str]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.iter().zip(needle).all(|(a, b)| a == b))
}

struct Cx {
    diags: Vec<Diagnostic>,
}

/// Where a placeholder was used.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Path,
    Query,
    Body,
}

impl Cx {
    fn error(&mut self, code: &'static str, path: String, msg: String, fix: impl Into<String>) {
        self.diags.push(Diagnostic::error(code, path, msg, fix));
    }

    fn warning(&mut self, code: &'static str, path: String, msg: String, fix: impl Into<String>) {
        self.diags.push(Diagnostic::warning(code, path, msg, fix));
    }

    fn ty(&mut self, path: String, name: Option<&str>) -> ParamType {
        match name {
            None => ParamType::String,
            Some(n) => ParamType::parse(n).unwrap_or_else(|| {
                self.warning(
                    "unknown-type",
                    path,
                    format!("unknown type {n:?}, treated as String"),
                    "use Integer, Number, Boolean, String, DateTime, Array, Array<Integer> or Object",
                );
                ParamType::String
            }),
        }
    }

    fn service(&mut self, raw: &RawDefinition) -> Service {
        let s = &raw.service;
        let base = s
            .service
            .base_url
            .value
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            self.error(
                "invalid-base-url",
                "service.service.baseURL.value".into(),
                format!("base URL {base:?} is not an http(s) URL"),
                "write it like https://api.track.toggl.com",
            );
        }
        if segment_names(&parse_segments(&base)).next().is_some() {
            self.error(
                "unsupported-placeholder",
                "service.service.baseURL.value".into(),
                "placeholders are not supported in the base URL".into(),
                "write the base URL literally; put variable parts in resource paths",
            );
        }
        let auth = match &s.service.auth {
            None => Auth::None,
            Some(a) if a.method.eq_ignore_ascii_case("basic") => {
                match &a.params.basic {
                    Some(b) => {
                        let mut placeholders = Vec::new();
                        for (key, t) in [("username", &b.username), ("password", &b.password)] {
                            for (j, ph) in t.placeholders.iter().enumerate() {
                                let ty = self.ty(
                                format!("service.service.auth.params.basic.{key}.placeholders[{j}].type"),
                                ph.ty.as_deref(),
                            );
                                placeholders.push(ParamSpec {
                                    name: ph.name.clone(),
                                    ty,
                                    required: ph.required,
                                    description: ph.description.clone(),
                                    default: None,
                                });
                            }
                        }
                        for (key, t) in [("username", &b.username), ("password", &b.password)] {
                            for n in segment_names(&parse_segments(&t.value)) {
                                if !placeholders.iter().any(|p| p.name == n) {
                                    self.error(
                                    "unknown-placeholder",
                                    format!("service.service.auth.params.basic.{key}.value"),
                                    format!("placeholder {{{{{n}}}}} is not declared"),
                                    format!("declare it in service.service.auth.params.basic.{key}.placeholders"),
                                );
                                }
                            }
                        }
                        Auth::Basic {
                            username: b.username.value.clone(),
                            password: b.password.value.clone(),
                            placeholders,
                        }
                    }
                    None => {
                        self.error(
                            "missing-auth-params",
                            "service.service.auth.params".into(),
                            "basic auth without params.basic".into(),
                            "add params.basic.username and params.basic.password",
                        );
                        Auth::None
                    }
                }
            }
            Some(a) => {
                self.error(
                    "unsupported-auth",
                    "service.service.auth.method".into(),
                    format!("auth method {:?} is not supported", a.method),
                    "use \"basic\" (Toggl: username {{apiToken}}, password api_token)",
                );
                Auth::None
            }
        };
        let name = s
            .meta
            .as_ref()
            .and_then(|m| m.get("short"))
            .and_then(Value::as_str)
            .map_or_else(|| s.handle.clone(), str::to_owned);
        Service {
            handle: s.handle.clone(),
            name,
            base_url: base,
            auth,
        }
    }

    fn field(&mut self, p: &str, f: &RawField) -> Field {
        let ty = self.ty(format!("{p}.type"), f.ty.as_deref());
        let selector = match &f.selector {
            None => Selector(vec![crate::selector::Step::Key(f.name.clone())]),
            Some(raw) => Selector::from_raw(raw).unwrap_or_else(|msg| {
                self.error(
                    "invalid-selector",
                    format!("{p}.selector"),
                    format!("field {:?}: {msg}", f.name),
                    "write the selector as an array of keys (strings) and indexes (integers >= 0)",
                );
                Selector(Vec::new())
            }),
        };
        Field {
            name: f.name.clone(),
            ty,
            selector,
            multivalue: f.multivalue,
            description: description(f.meta.as_ref()),
        }
    }

    fn resource(&mut self, p: &str, r: &RawResource, base_has_v9: bool) -> Resource {
        let mut fields: Vec<Field> = Vec::new();
        for (j, f) in r.fields.iter().enumerate() {
            let fp = format!("{p}.fields[{j}]");
            if fields.iter().any(|x| x.name == f.name) {
                self.error(
                    "duplicate-field",
                    format!("{fp}.name"),
                    format!("field {:?} is defined twice", f.name),
                    "rename or remove one of them",
                );
            }
            let field = self.field(&fp, f);
            fields.push(field);
        }
        let endpoint = r.endpoint.as_ref().map_or("", |e| e.value.as_str());
        let ep_path = format!("{p}.endpoint.value");
        let mut reported: BTreeSet<&'static str> = BTreeSet::new();

        // Resource-wide path defects are reported once, on the endpoint when it holds them.
        let ep_shape = shape(endpoint);
        if base_has_v9
            && ep_shape.first().is_some_and(|s| s == "api")
            && ep_shape.get(1).is_some_and(|s| s == "v9")
        {
            self.doubled_prefix(ep_path.clone());
            reported.insert("doubled-prefix");
        }
        for (code, hit) in path_defects(&ep_shape) {
            if hit {
                self.path_defect(code, ep_path.clone());
                reported.insert(code);
            }
        }

        let mut operations = Vec::new();
        for (name, op) in &r.operations.0 {
            let op_p = format!("{p}.operations.{name}");
            if let Some(o) = self.operation(
                &op_p,
                name,
                op,
                r,
                endpoint,
                &fields,
                base_has_v9,
                &mut reported,
            ) {
                operations.push(o);
            }
        }
        // Lookups can name any operation of the resource, so they are checked once all exist.
        for (name, op) in &r.operations.0 {
            let Some(l) = &op.lookup else { continue };
            let lp = format!("{p}.operations.{name}.lookup");
            if !operations.iter().any(|o| o.name == l.operation) {
                self.error(
                    "unknown-operation",
                    format!("{lp}.operation"),
                    format!(
                        "lookup operation {:?} is not an operation of {:?}",
                        l.operation, r.handle
                    ),
                    format!(
                        "use one of: {}",
                        names(operations.iter().map(|o| o.name.as_str()))
                    ),
                );
            }
        }
        Resource {
            name: r.handle.clone(),
            description: description(r.meta.as_ref()),
            fields,
            operations,
        }
    }

    fn doubled_prefix(&mut self, path: String) {
        self.warning(
            "doubled-prefix",
            path,
            "the base URL already ends with /api/v9 and this path starts with /api/v9 again: joined naively that is /api/v9/api/v9/... (404)".into(),
            "use the host root (https://api.track.toggl.com) as baseURL, or drop /api/v9 from the paths; toggl-connect joins without doubling meanwhile",
        );
    }

    fn path_defect(&mut self, code: &'static str, path: String) {
        let (msg, fix) = match code {
            "wrong-project-users-path" => (
                "/workspaces/{wid}/projects/{pid}/project_users does not exist in Toggl v9; project members live at /workspaces/{wid}/project_users",
                "use /api/v9/workspaces/{{workspace_id}}/project_users with project_id in the body (list with ?project_ids=)",
            ),
            "wrong-invitations-path" => (
                "/workspaces/{wid}/invitations is not a Toggl v9 route; v9 invites only through the organization",
                "POST /api/v9/organizations/{{organization_id}}/invitations with {\"emails\":[...],\"workspaces\":[{\"workspace_id\":...,\"role\":...}]}",
            ),
            _ => ("", ""),
        };
        self.warning(code, path, msg.into(), fix);
    }

    #[allow(clippy::too_many_arguments)]
    fn operation(
        &mut self,
        p: &str,
        name: &str,
        op: &RawOperation,
        r: &RawResource,
        endpoint: &str,
        fields: &[Field],
        base_has_v9: bool,
        reported: &mut BTreeSet<&'static str>,
    ) -> Option<Operation> {
        let method = match op.method.as_deref() {
            None => {
                self.error(
                    "missing-method",
                    p.to_owned(),
                    format!("operation {name:?} has no method"),
                    "add \"method\": \"GET\" (or POST, PUT, PATCH, DELETE)",
                );
                None
            }
            Some(m) => Method::parse(m).or_else(|| {
                self.error(
                    "invalid-method",
                    format!("{p}.method"),
                    format!("unknown HTTP method {m:?}"),
                    "use GET, POST, PUT, PATCH or DELETE",
                );
                None
            }),
        };
        let Some(op_path) = &op.path else {
            self.error(
                "missing-path",
                p.to_owned(),
                format!("operation {name:?} has no path"),
                "add \"path\": {\"value\": \"\"} (the resource endpoint) or a sub-path like \"/{{id}}\"",
            );
            return None;
        };
        // Without a usable method the rest is still checked (as a GET, which triggers the fewest
        // method-specific lints) so one run reports every problem; the operation is dropped.
        let method_ok = method.is_some();
        let method = method.unwrap_or(Method::Get);
        let full = format!("{endpoint}{}", op_path.value);
        let path_p = format!("{p}.path.value");
        if !full.is_empty() && !full.starts_with('/') {
            self.error(
                "invalid-path",
                path_p.clone(),
                format!("path {full:?} does not start with /"),
                "write paths from the host root, like /api/v9/me",
            );
        }
        let full_shape = shape(&full);

        if base_has_v9
            && !reported.contains("doubled-prefix")
            && full_shape.first().is_some_and(|s| s == "api")
            && full_shape.get(1).is_some_and(|s| s == "v9")
        {
            self.doubled_prefix(path_p.clone());
        }
        for (code, hit) in path_defects(&full_shape) {
            if hit && !reported.contains(code) {
                self.path_defect(code, path_p.clone());
                reported.insert(code);
            }
        }
        if method.is_write() && contains_seq(&full_shape, &["me", "time_entries"]) {
            self.warning(
                "write-to-read-only",
                path_p.clone(),
                format!("{method} to /me/time_entries: that path is read-only (GET) in Toggl v9"),
                "write time entries at /api/v9/workspaces/{{workspace_id}}/time_entries[/{{id}}]",
            );
        }
        if matches!(method, Method::Put | Method::Patch)
            && full_shape.last().is_some_and(|s| s == "workspace_users")
        {
            self.warning(
                "workspace-user-update-without-id",
                path_p.clone(),
                "workspace users are updated one at a time at /workspace_users/{workspace_user_id}; this path has no id".into(),
                "append /{{workspace_user_id}} (the workspace-user id, not the user id)",
            );
        }

        let api = match op.api.as_deref() {
            None => Api::infer(&full),
            Some(a) => Api::parse(a).unwrap_or_else(|| {
                self.error(
                    "invalid-api",
                    format!("{p}.api"),
                    format!("unknown api {a:?}"),
                    "use track, webhooks or reports",
                );
                Api::Track
            }),
        };

        // Declared parameters first.
        let mut params: Vec<ParamSpec> = Vec::new();
        for (k, rp) in op.params.iter().enumerate() {
            let pp = format!("{p}.params[{k}]");
            if params.iter().any(|x| x.name == rp.name) {
                self.error(
                    "duplicate-parameter",
                    format!("{pp}.name"),
                    format!("parameter {:?} is declared twice", rp.name),
                    "remove one declaration",
                );
                continue;
            }
            let ty = match rp.ty.as_deref() {
                Some(t) => self.ty(format!("{pp}.type"), Some(t)),
                None => fields
                    .iter()
                    .find(|f| f.name == rp.name)
                    .map_or(ParamType::String, |f| f.ty),
            };
            let default = rp
                .default
                .clone()
                .and_then(|d| match ty.coerce_value(&rp.name, d) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.error(
                            "invalid-default",
                            format!("{pp}.default"),
                            e.to_string(),
                            format!("give a default of type {ty}"),
                        );
                        None
                    }
                });
            params.push(ParamSpec {
                name: rp.name.clone(),
                ty,
                required: rp.required,
                description: rp.description.clone(),
                default,
            });
        }

        let path_segments = parse_segments(&full);
        let mut uses: Vec<(String, Place, String)> = Vec::new();
        for n in segment_names(&path_segments) {
            uses.push((n.to_owned(), Place::Path, path_p.clone()));
        }
        let mut query = Vec::new();
        for (key, v) in &op.query_params.0 {
            let qp = format!("{p}.queryParams.{key}");
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                other => {
                    self.error(
                        "invalid-query",
                        qp,
                        format!("query value must be text, got {other}"),
                        "write the value as a string, e.g. \"{{name}}\"",
                    );
                    continue;
                }
            };
            let segs = parse_segments(&text);
            for n in segment_names(&segs) {
                uses.push((n.to_owned(), Place::Query, qp.clone()));
            }
            query.push(QueryTemplate {
                key: key.clone(),
                source: text,
                value: segs,
            });
        }
        let body_p = format!("{p}.bodyTemplate.value");
        let body = op.body_template.as_ref().and_then(|t| match BodyTemplate::parse(&t.value) {
            Ok(b) => Some(b),
            Err(e) => {
                self.error(
                    "invalid-body-template",
                    body_p.clone(),
                    format!("body template is not valid JSON once placeholders are values: {e}"),
                    "write JSON where each {{placeholder}} stands for a whole value or sits inside a string",
                );
                None
            }
        });
        let body_uses = body
            .as_ref()
            .map(BodyTemplate::placeholders)
            .unwrap_or_default();
        for u in &body_uses {
            uses.push((u.name.clone(), Place::Body, body_p.clone()));
        }

        for (n, place, at) in &uses {
            if let Some(spec) = params.iter_mut().find(|s| s.name == *n) {
                if *place == Place::Path {
                    spec.required = true;
                }
                continue;
            }
            let in_path = *place == Place::Path;
            if let Some(f) = fields.iter().find(|f| f.name == *n) {
                params.push(ParamSpec {
                    name: n.clone(),
                    ty: f.ty,
                    required: in_path,
                    description: f.description.clone(),
                    default: None,
                });
            } else if let Some(f) = fields
                .iter()
                .find(|f| f.multivalue && f.selector.first_key() == Some(n.as_str()))
            {
                let ty = if f.ty == ParamType::Integer {
                    ParamType::IntegerArray
                } else {
                    ParamType::Array
                };
                self.warning(
                    "placeholder-matched-by-selector",
                    at.clone(),
                    format!(
                        "placeholder {{{{{n}}}}} is not a field name; taken as the list read by multivalue field {:?} (selector starts with {n:?}), type {ty}",
                        f.name
                    ),
                    format!("declare it: \"params\": [{{\"name\": \"{n}\", \"type\": \"Array\"}}]"),
                );
                params.push(ParamSpec {
                    name: n.clone(),
                    ty,
                    required: in_path,
                    description: f.description.clone(),
                    default: None,
                });
            } else if in_path
                || (*place == Place::Query && op.query_params.0.iter().any(|(k, _)| k == n))
            {
                params.push(ParamSpec {
                    name: n.clone(),
                    ty: ParamType::String,
                    required: in_path,
                    description: None,
                    default: None,
                });
            } else {
                self.error(
                    "unknown-placeholder",
                    at.clone(),
                    format!("placeholder {{{{{n}}}}} is declared by no field of {:?} and no parameter of operation {name:?}", r.handle),
                    format!("add a field named {n:?} or declare it in \"params\""),
                );
            }
        }

        if let Some(b) = &body {
            self.body_lints(&body_p, name, method, r, &full_shape, b, &params);
        }

        let pagination = op.pagination.as_ref().map(|pg| match pg.clone() {
            RawPagination::PagePerPage {
                page_param,
                per_page_param,
                per_page,
                max_per_page,
            } => {
                if max_per_page.is_some_and(|m| per_page > m) || per_page == 0 {
                    self.error(
                        "invalid-pagination",
                        format!("{p}.pagination.per_page"),
                        format!("per_page {per_page} is 0 or above max_per_page"),
                        "choose 1..=max_per_page",
                    );
                }
                Pagination::PagePerPage {
                    page_param,
                    per_page_param,
                    per_page,
                    max_per_page,
                }
            }
            RawPagination::ReportsCursor {
                next_id_header,
                next_row_header,
                first_id_field,
                first_row_field,
                page_size_field,
                page_size,
            } => Pagination::ReportsCursor {
                next_id_header,
                next_row_header,
                first_id_field,
                first_row_field,
                page_size_field,
                page_size,
            },
            RawPagination::Envelope {
                data_key,
                page_param,
                per_page_param,
                per_page,
                total_key,
            } => Pagination::Envelope {
                data_key,
                page_param,
                per_page_param,
                per_page,
                total_key,
            },
        });
        if matches!(pagination, Some(Pagination::ReportsCursor { .. })) && method == Method::Get {
            self.error(
                "invalid-pagination",
                format!("{p}.pagination"),
                "a reports cursor travels in the JSON body, which a GET has none of".into(),
                "use POST for Reports searches",
            );
        }

        let response = match op.response.as_deref() {
            None => match (&pagination, method, name) {
                (Some(Pagination::Envelope { data_key, .. }), _, _) => ResponseShape::Envelope {
                    data_key: data_key.clone(),
                },
                (Some(_), _, _) | (None, Method::Get, "list") => ResponseShape::Array,
                _ => ResponseShape::Object,
            },
            Some("object") => ResponseShape::Object,
            Some("object_or_null") => ResponseShape::ObjectOrNull,
            Some("array") => ResponseShape::Array,
            Some("empty") => ResponseShape::Empty,
            Some(s) => match s.strip_prefix("envelope:") {
                Some(k) if !k.is_empty() => ResponseShape::Envelope {
                    data_key: k.to_owned(),
                },
                _ => {
                    self.error(
                        "invalid-response",
                        format!("{p}.response"),
                        format!("unknown response shape {s:?}"),
                        "use object, object_or_null, array, empty or envelope:<data key>",
                    );
                    ResponseShape::Object
                }
            },
        };

        let lookup = op.lookup.as_ref().map(|l| {
            if !fields.iter().any(|f| f.name == l.field) {
                self.error(
                    "unknown-field",
                    format!("{p}.lookup.field"),
                    format!(
                        "lookup compares field {:?}, which {:?} does not have",
                        l.field, r.handle
                    ),
                    format!(
                        "use one of: {}",
                        names(fields.iter().map(|f| f.name.as_str()))
                    ),
                );
            }
            if !params.iter().any(|s| s.name == l.param) {
                self.error(
                    "unknown-parameter",
                    format!("{p}.lookup.param"),
                    format!(
                        "lookup parameter {:?} is not a parameter of {name:?}",
                        l.param
                    ),
                    "name a parameter the operation uses",
                );
            }
            Lookup {
                operation: l.operation.clone(),
                field: l.field.clone(),
                param: l.param.clone(),
            }
        });

        let idempotent = op
            .idempotent
            .unwrap_or(matches!(method, Method::Get | Method::Put | Method::Delete));

        if !method_ok {
            return None;
        }
        Some(Operation {
            name: name.to_owned(),
            description: op.description.clone(),
            method,
            path: if full.is_empty() {
                "/".to_owned()
            } else {
                full
            },
            path_segments,
            query,
            body,
            api,
            params,
            pagination,
            response,
            idempotent,
            lookup,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn body_lints(
        &mut self,
        at: &str,
        name: &str,
        method: Method,
        r: &RawResource,
        full_shape: &[String],
        body: &BodyTemplate,
        params: &[ParamSpec],
    ) {
        for u in body.placeholders() {
            let Some(spec) = params.iter().find(|s| s.name == u.name) else {
                continue;
            };
            if u.quoted && spec.ty.is_scalar_non_text() {
                let key = u.location.join(".");
                self.warning(
                    "quoted-non-string",
                    at.to_owned(),
                    format!(
                        "\"{{{{{n}}}}}\" at {key} is quoted but {n} is {ty}: naive rendering sends a string and Toggl answers 400 Unexpected \"{last}\" type string; toggl-connect renders it as {ty} anyway",
                        n = u.name,
                        ty = spec.ty,
                        last = u.location.last().map_or("", String::as_str),
                    ),
                    format!("remove the quotes: \"{}\":{{{{{}}}}}", u.location.last().map_or("", String::as_str), u.name),
                );
            }
        }
        let mut flat = &body.root;
        if let Node::Object(entries) = &body.root {
            if let [(k, inner @ Node::Object(_))] = entries.as_slice() {
                if V8_WRAPPERS.contains(&k.as_str()) {
                    self.warning(
                        "v8-wrapped-body",
                        at.to_owned(),
                        format!("body is wrapped in {{\"{k}\": ...}} (Toggl v8 style); v9 takes the object flat, and with the wrapper its required fields are missing (400)"),
                        format!("remove the {k:?} wrapper and put its keys at the top level"),
                    );
                    flat = inner;
                }
            }
        }
        let keys: Vec<&str> = match flat {
            Node::Object(e) => e.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        };
        // Reports' `/search/time_entries` is a POST too, but a search, not a create.
        let is_track = full_shape.first().is_none_or(|s| s == "api");
        let is_te_create = method == Method::Post
            && is_track
            && (full_shape.last().is_some_and(|s| s == "time_entries")
                || (r.handle == "time_entries" && name == "create"));
        if is_te_create {
            if !keys.contains(&"created_with") {
                self.warning(
                    "missing-created-with",
                    at.to_owned(),
                    "time entry create without created_with: Toggl answers 400 \"created_with needs to be provided an a valid string\"".into(),
                    "add \"created_with\":\"{{created_with}}\" with a default such as \"toggl-connect\"",
                );
            }
            if !keys.contains(&"workspace_id") && !keys.contains(&"wid") {
                self.warning(
                    "missing-workspace-id",
                    at.to_owned(),
                    "time entry create without workspace_id: Toggl requires it and it must equal the workspace in the path".into(),
                    "add \"workspace_id\":{{workspace_id}} (an integer, unquoted)",
                );
            }
        }
        if keys.contains(&"admin")
            && (contains_seq(full_shape, &["workspace_users"])
                || contains_seq(full_shape, &["invitations"]))
        {
            self.warning(
                "deprecated-admin-flag",
                at.to_owned(),
                "\"admin\" is deprecated for workspace users and invitations in Toggl v9".into(),
                "send \"role\" (admin, user, projectlead, teamlead) instead",
            );
        }
    }

    fn actions(&mut self, raw: &RawDefinition, resources: &[Resource]) -> Vec<Action> {
        let mut out: Vec<Action> = Vec::new();
        for (k, a) in raw.actions.iter().enumerate() {
            let p = format!("actions[{k}]");
            if out.iter().any(|x| x.name == a.name) {
                self.error(
                    "duplicate-action",
                    format!("{p}.name"),
                    format!("action {:?} is defined twice", a.name),
                    "rename or remove one of them",
                );
                continue;
            }
            let Some(res) = resources.iter().find(|r| r.name == a.resource) else {
                self.error(
                    "unknown-resource",
                    format!("{p}.resource"),
                    format!(
                        "action {:?} names unknown resource {:?}",
                        a.name, a.resource
                    ),
                    format!(
                        "use one of: {}",
                        names(resources.iter().map(|r| r.name.as_str()))
                    ),
                );
                continue;
            };
            let Some(op) = res.operation(&a.operation) else {
                self.error(
                    "unknown-operation",
                    format!("{p}.operation"),
                    format!(
                        "resource {:?} has no operation {:?}",
                        a.resource, a.operation
                    ),
                    format!(
                        "use one of: {}",
                        names(res.operations.iter().map(|o| o.name.as_str()))
                    ),
                );
                continue;
            };
            let mut defaults = Params::new();
            for (name, v) in &a.defaults {
                match op.param(name) {
                    None => self.error(
                        "unknown-parameter",
                        format!("{p}.defaults.{name}"),
                        format!("{}.{} has no parameter {name:?}", a.resource, a.operation),
                        format!(
                            "use one of: {}",
                            names(op.params.iter().map(|s| s.name.as_str()))
                        ),
                    ),
                    Some(spec) => match spec.ty.coerce_value(name, v.clone()) {
                        Ok(v) => defaults.insert(name.clone(), v),
                        Err(e) => self.error(
                            "invalid-default",
                            format!("{p}.defaults.{name}"),
                            e.to_string(),
                            format!("give a value of type {}", spec.ty),
                        ),
                    },
                }
            }
            for (j, n) in a.required.iter().enumerate() {
                if op.param(n).is_none() {
                    self.error(
                        "unknown-parameter",
                        format!("{p}.required[{j}]"),
                        format!("{}.{} has no parameter {n:?}", a.resource, a.operation),
                        format!(
                            "use one of: {}",
                            names(op.params.iter().map(|s| s.name.as_str()))
                        ),
                    );
                }
            }
            out.push(Action {
                name: a.name.clone(),
                description: a.description.clone(),
                resource: a.resource.clone(),
                operation: a.operation.clone(),
                defaults,
                required: a.required.clone(),
            });
        }
        out
    }
}

/// Known wrong paths, by code, for a path shape.
fn path_defects(shape: &[String]) -> [(&'static str, bool); 2] {
    [
        (
            "wrong-project-users-path",
            contains_seq(shape, &["projects", "{}", "project_users"]),
        ),
        (
            "wrong-invitations-path",
            contains_seq(shape, &["workspaces", "{}", "invitations"]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_into_entity_and_action() {
        assert_eq!(
            split_event("time_entry_created"),
            Some(("time_entry", "created"))
        );
        assert_eq!(
            split_event("workspace_deleted"),
            Some(("workspace", "deleted"))
        );
        assert_eq!(split_event("created"), None);
        assert_eq!(split_event("_created"), None);
        assert_eq!(split_event("time_entry_started"), None);
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("https://api.track.toggl.com/api/v9/"), "/api/v9");
        assert_eq!(url_path("https://api.track.toggl.com"), "");
        assert_eq!(
            shape("/api/v9/workspaces/{{wid}}/x"),
            vec!["api", "v9", "workspaces", "{}", "x"]
        );
    }
}
