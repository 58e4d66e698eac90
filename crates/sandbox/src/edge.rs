//! Request and response plumbing shared by all handlers: the error type, JSON responses with
//! Toggl's content type, type-strict body decoding and query parsing.
//!
//! Why the body is decoded by hand: Toggl's Go decoder rejects a number sent as a string with
//! `Unexpected "workspace_id" type string` (recorded in client issues), and accepts `null` for
//! optional fields. A serde derive would produce different messages, so fields are read one by
//! one from a `serde_json::Value` and type-checked with Toggl's wording.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value};

/// Toggl's JSON content type.
pub const JSON_CT: &str = "application/json; charset=utf-8";

/// A JSON response with Toggl's content type.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("a serde_json::Value always serializes");
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CT));
    r
}

/// 200 with a JSON body.
pub fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &body))
}

/// An API error: a status and a JSON string body (Toggl's usual error shape), or no body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The message sent as a JSON string; `None` sends an empty body.
    pub message: Option<String>,
}

impl ApiError {
    /// An error with a JSON string body.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: Some(message.into()),
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403 with the swagger's generic message.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "User does not have access to this resource.",
        )
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.message {
            Some(m) => json_response(self.status, &Value::String(m)),
            None => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = self.status;
                r
            }
        }
    }
}

/// What a handler returns.
pub type ApiResult = Result<Response, ApiError>;

/// The authenticated caller, put into request extensions by the gate middleware.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The user id.
    pub user_id: i64,
}

/// Everything about a request a handler needs besides path parameters: the caller, method,
/// path, query pairs and the raw body.
#[derive(Debug)]
pub struct Call {
    /// The authenticated user.
    pub user_id: i64,
    /// Request method.
    pub method: Method,
    /// Path without query.
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Raw body.
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Call {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let user_id = req
            .extensions()
            .get::<Caller>()
            .map(|c| c.user_id)
            .ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())?;
        let method = req.method().clone();
        // Nested routers see a stripped path; events need the full one.
        let path = req
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| req.uri().path().to_owned(), |u| u.path().to_owned());
        let query = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Call {
            user_id,
            method,
            path,
            query,
            body,
        })
    }
}

impl Call {
    /// The last value of a query parameter.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean query parameter (`true`/`false`; anything else is false).
    pub fn q_bool(&self, key: &str) -> bool {
        self.q(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// An integer query parameter; a non-integer is a 400.
    pub fn q_i64(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.q(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("Invalid {key}"))),
        }
    }

    /// A comma-separated list of integers (`project_ids=1,2`); a bad element is a 400.
    pub fn q_ids(&self, key: &str) -> Result<Option<Vec<i64>>, ApiError> {
        match self.q(key) {
            None | Some("") => Ok(None),
            Some(v) => parse_id_list(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid {key}"))),
        }
    }

    /// The body as a JSON object (empty body = empty object).
    pub fn input(&self) -> Result<Input, ApiError> {
        Input::parse(&self.body)
    }

    /// The raw body as text, for webhook `request_body`.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses `1,2,3`.
pub fn parse_id_list(s: &str) -> Option<Vec<i64>> {
    s.split(',').map(|p| p.trim().parse().ok()).collect()
}

/// Parses a path id; a non-number is a 400 `Invalid {what}` (the swagger's wording).
pub fn path_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("Invalid {what}")))
}

/// Whether a field was absent, explicitly null, or set.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    /// Not in the body.
    Absent,
    /// `null`.
    Null,
    /// A value of the right type.
    Set(T),
}

impl<T> Field<T> {
    /// The value when set.
    pub fn value(self) -> Option<T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the key was in the body (even as null).
    pub fn present(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    /// Applies to a nullable target: set, null clears, absent keeps.
    pub fn apply_opt(self, target: &mut Option<T>) {
        match self {
            Field::Absent => {}
            Field::Null => *target = None,
            Field::Set(v) => *target = Some(v),
        }
    }

    /// Applies to a non-nullable target: only a set value changes it.
    pub fn apply(self, target: &mut T) {
        if let Field::Set(v) = self {
            *target = v;
        }
    }
}

/// A decoded JSON object body with Toggl-style type checks.
#[derive(Debug, Clone, Default)]
pub struct Input {
    map: Map<String, Value>,
}

/// The Go decoder's name for a JSON value's type.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn unexpected(key: &str, v: &Value) -> ApiError {
    ApiError::bad_request(format!("Unexpected \"{key}\" type {}", type_name(v)))
}

impl Input {
    /// Parses a body; empty means `{}`. Malformed JSON is 400 `Invalid JSON input`.
    pub fn parse(bytes: &[u8]) -> Result<Input, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Input::default());
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|_| ApiError::bad_request("Invalid JSON input"))?;
        match v {
            Value::Object(map) => Ok(Input { map }),
            other => Err(ApiError::bad_request(format!(
                "Unexpected type {}",
                type_name(&other)
            ))),
        }
    }

    /// Wraps an object (used for JSON-patch application).
    pub fn from_map(map: Map<String, Value>) -> Input {
        Input { map }
    }

    /// Whether the key is present.
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn raw(&self, key: &str) -> Field<&Value> {
        match self.map.get(key) {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(v) => Field::Set(v),
        }
    }

    /// The first of `keys` that is present (new name first, then the legacy alias).
    fn pick<'a>(&self, keys: &[&'a str]) -> (&'a str, Field<&Value>) {
        for &k in keys {
            let f = self.raw(k);
            if f.present() {
                return (k, f);
            }
        }
        (keys[0], Field::Absent)
    }

    /// An int64 field (integers only; `1.5` or `"1"` are type errors).
    pub fn i64(&self, keys: &[&str]) -> Result<Field<i64>, ApiError> {
        let (k, f) = self.pick(keys);
        Ok(match f {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => Field::Set(v.as_i64().ok_or_else(|| unexpected(k, v))?),
        })
    }

    /// A number field (float allowed).
    pub fn f64(&self, keys: &[&str]) -> Result<Field<f64>, ApiError> {
        let (k, f) = self.pick(keys);
        Ok(match f {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => Field::Set(v.as_f64().ok_or_else(|| unexpected(k, v))?),
        })
    }

    /// A string field.
    pub fn str(&self, keys: &[&str]) -> Result<Field<String>, ApiError> {
        let (k, f) = self.pick(keys);
        Ok(match f {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => Field::Set(v.as_str().ok_or_else(|| unexpected(k, v))?.to_owned()),
        })
    }

    /// A boolean field.
    pub fn bool(&self, keys: &[&str]) -> Result<Field<bool>, ApiError> {
        let (k, f) = self.pick(keys);
        Ok(match f {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => Field::Set(v.as_bool().ok_or_else(|| unexpected(k, v))?),
        })
    }

    /// An array of strings.
    pub fn str_list(&self, keys: &[&str]) -> Result<Field<Vec<String>>, ApiError> {
        let (k, f) = self.pick(keys);
        Ok(match f {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => {
                let arr = v.as_array().ok_or_else(|| unexpected(k, v))?;
                let mut out = Vec::with_capacity(arr.len());
                for item in arr {
                    out.push(item.as_str().ok_or_else(|| unexpected(k, item))?.to_owned());
                }
                Field::Set(out)
            }
        })
    }

    /// An array of int64.
    pub fn i64_list(&self, keys: &[&str]) -> Result<Field<Vec<i64>>, ApiError> {
        let (k, f) = self.pick(keys);
        Ok(match f {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => {
                let arr = v.as_array().ok_or_else(|| unexpected(k, v))?;
                let mut out = Vec::with_capacity(arr.len());
                for item in arr {
                    out.push(item.as_i64().ok_or_else(|| unexpected(k, item))?);
                }
                Field::Set(out)
            }
        })
    }

    /// An array of objects.
    pub fn object_list(&self, key: &str) -> Result<Field<Vec<Input>>, ApiError> {
        Ok(match self.raw(key) {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => {
                let arr = v.as_array().ok_or_else(|| unexpected(key, v))?;
                let mut out = Vec::with_capacity(arr.len());
                for item in arr {
                    match item {
                        Value::Object(m) => out.push(Input { map: m.clone() }),
                        other => return Err(unexpected(key, other)),
                    }
                }
                Field::Set(out)
            }
        })
    }
}

/// One operation of a JSON-patch body (RFC 6902 subset: add, remove, replace on top-level
/// fields).
#[derive(Debug, Clone)]
pub struct PatchOp {
    /// `add`, `remove` or `replace`.
    pub op: String,
    /// The field name without the leading `/`.
    pub field: String,
    /// The value (`null` for remove).
    pub value: Value,
}

/// Parses a JSON-patch array.
pub fn parse_patch(bytes: &[u8]) -> Result<Vec<PatchOp>, ApiError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|_| ApiError::bad_request("Invalid JSON input"))?;
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::bad_request(format!("Unexpected type {}", type_name(&v))))?;
    let mut ops = Vec::with_capacity(arr.len());
    for item in arr {
        let obj = item
            .as_object()
            .ok_or_else(|| ApiError::bad_request("Invalid JSON input"))?;
        let op = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("Invalid patch operation"))?;
        if !matches!(op, "add" | "remove" | "replace") {
            return Err(ApiError::bad_request(format!(
                "Invalid patch operation: {op}"
            )));
        }
        let path = obj
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("Invalid patch path"))?;
        let field = path
            .strip_prefix('/')
            .filter(|f| !f.is_empty() && !f.contains('/'))
            .ok_or_else(|| ApiError::bad_request(format!("Invalid patch path: {path}")))?;
        ops.push(PatchOp {
            op: op.to_owned(),
            field: field.to_owned(),
            value: obj.get("value").cloned().unwrap_or(Value::Null),
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_use_toggl_wording() {
        let i = Input::parse(br#"{"workspace_id":"1","wid":2,"tags":["a",1]}"#).expect("json");
        let e = i.i64(&["workspace_id", "wid"]).expect_err("string id");
        assert_eq!(
            e.message.as_deref(),
            Some(r#"Unexpected "workspace_id" type string"#)
        );
        let e = i.str_list(&["tags"]).expect_err("number in tags");
        assert_eq!(
            e.message.as_deref(),
            Some(r#"Unexpected "tags" type number"#)
        );
    }

    #[test]
    fn aliases_absent_null_and_set() {
        let i = Input::parse(br#"{"wid":2,"project_id":null}"#).expect("json");
        assert_eq!(i.i64(&["workspace_id", "wid"]).expect("ok"), Field::Set(2));
        assert_eq!(i.i64(&["project_id", "pid"]).expect("ok"), Field::Null);
        assert_eq!(i.i64(&["task_id", "tid"]).expect("ok"), Field::Absent);
    }

    #[test]
    fn malformed_and_non_object_bodies() {
        let e = Input::parse(b"{nope").expect_err("malformed");
        assert_eq!(e.message.as_deref(), Some("Invalid JSON input"));
        assert!(Input::parse(b"[1]").is_err());
        assert!(Input::parse(b"  ").is_ok());
    }

    #[test]
    fn patch_parsing() {
        let ops =
            parse_patch(br#"[{"op":"replace","path":"/description","value":"x"}]"#).expect("patch");
        assert_eq!(ops[0].field, "description");
        assert!(parse_patch(br#"[{"op":"move","path":"/a"}]"#).is_err());
        assert!(parse_patch(br#"[{"op":"add","path":"a/b"}]"#).is_err());
    }
}
