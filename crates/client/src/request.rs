//! Requests and responses as the client sees them.

use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::quota::{QuotaHeaders, QuotaScope};

/// One call to Toggl. `path` starts at the host root (`/api/v9/me`, `/webhooks/api/v1/...`,
/// `/reports/api/v3/...`) and holds already-encoded path segments; query values are encoded by the
/// client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path from the host root, without query.
    pub path: String,
    /// Query parameters, in order.
    pub query: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// True when sending it twice has the effect of sending it once (GET, PUT, DELETE, searches).
    /// Only idempotent requests are retried after a 5xx or a timeout.
    pub idempotent: bool,
    /// The quota it draws from; [`ApiRequest::new`] derives it from the path.
    pub scope: QuotaScope,
}

impl ApiRequest {
    /// A request with no query or body. Idempotence follows the method (POST and PATCH are not);
    /// the scope follows the path ([`QuotaScope::for_path`]).
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let path = path.into();
        let idempotent = !matches!(method, Method::POST | Method::PATCH);
        Self {
            scope: QuotaScope::for_path(&path),
            method,
            path,
            query: Vec::new(),
            body: None,
            idempotent,
        }
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// `POST path` with a JSON body (not idempotent).
    pub fn post(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::POST, path).with_body(body)
    }

    /// Adds a query parameter.
    #[must_use]
    pub fn with_query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Sets the JSON body.
    #[must_use]
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Overrides whether the request may be re-sent after an unknown outcome.
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Sets or replaces a query parameter.
    pub(crate) fn set_query(&mut self, key: &str, value: String) {
        if let Some(slot) = self.query.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.query.push((key.to_owned(), value));
        }
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers worth keeping: `Content-Type`, `Retry-After`, `Link`, `Date` and every `X-*` header.
    pub headers: HeaderMap,
    /// Parsed JSON body; `Null` when the body is empty.
    pub body: Value,
    /// Quota headers of this response, as Toggl sent them.
    pub quota: Option<QuotaHeaders>,
    /// The budget the request was counted against (a workspace becomes its organization once
    /// known); see [`crate::Client::budget_snapshot`] for the client's estimate.
    pub scope: QuotaScope,
}

impl ApiResponse {
    /// A header value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) fn keep_header(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    (n.starts_with("x-") && !n.contains("auth") && !n.contains("cookie") && !n.contains("token"))
        || matches!(n, "content-type" | "retry-after" | "link" | "date")
}

/// The path with ids and anything that might be a code or secret replaced, for logs and errors:
/// `/api/v9/workspaces/42/time_entries/7` becomes `/api/v9/workspaces/{id}/time_entries/{id}`.
/// Only lowercase words (`me`, `time_entries`, `v9`, `time_entries.csv`) are kept verbatim, so an
/// invitation or validation code in a path never reaches a log.
pub fn path_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit() || b == b',') {
            out.push_str("{id}");
        } else if is_word(segment) {
            out.push_str(segment);
        } else {
            out.push_str("{value}");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn is_word(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let version = bytes.first() == Some(&b'v')
        && bytes.len() <= 4
        && bytes[1..].iter().all(u8::is_ascii_digit);
    version
        || (segment.len() <= 40
            && bytes.first().is_some_and(u8::is_ascii_lowercase)
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || *b == b'_' || *b == b'.' || *b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_hide_ids_and_codes() {
        assert_eq!(
            path_template("/api/v9/workspaces/42/time_entries/3730303299/stop"),
            "/api/v9/workspaces/{id}/time_entries/{id}/stop"
        );
        assert_eq!(
            path_template("/webhooks/api/v1/validate/1/2/a1B2-c3d4"),
            "/webhooks/api/v1/validate/{id}/{id}/{value}"
        );
        assert_eq!(
            path_template("/reports/api/v3/workspace/1/search/time_entries.csv"),
            "/reports/api/v3/workspace/{id}/search/time_entries.csv"
        );
        assert_eq!(path_template("/api/v9/me?x=1"), "/api/v9/me");
        assert_eq!(path_template(""), "/");
    }

    #[test]
    fn constructors_pick_idempotence_and_scope() {
        let r = ApiRequest::post("/api/v9/workspaces/5/time_entries", Value::Null);
        assert!(!r.idempotent);
        assert_eq!(r.scope, QuotaScope::Workspace(5));
        let r = ApiRequest::new(Method::PUT, "/api/v9/me");
        assert!(r.idempotent);
        assert_eq!(r.scope, QuotaScope::User);
        let mut r = ApiRequest::get("/x").with_query("page", "1");
        r.set_query("page", "2".into());
        r.set_query("per_page", "50".into());
        assert_eq!(
            r.query,
            vec![
                ("page".into(), "2".into()),
                ("per_page".into(), "50".into())
            ]
        );
    }
}
