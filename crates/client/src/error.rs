//! The client's error type, and how error bodies become readable messages.
//!
//! Toggl answers errors with a JSON string (`"Time entry not found"`), sometimes a JSON object,
//! plain text, an HTML page from a proxy (`<title>429 Too Many Requests</title>`) or nothing at all.
//! [`body_message`] turns each of them into one bounded line. Every text that reaches an error has
//! been through the redactor first, so a body echoing the token (`GET /me` carries `api_token`) or a
//! transport message cannot leak it.
//!
//! The variants separate what a caller does next: wait (quota, rate limit), fix the setup
//! (unauthorized, paid feature, gone), check before retrying (outcome unknown) or give up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::quota::QuotaScope;

/// Longest excerpt of a response body kept in an error.
pub const BODY_EXCERPT_CHARS: usize = 300;

/// Everything that can go wrong talking to Toggl.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable (base URL, empty token, ...).
    #[error("invalid client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The request itself is malformed (path not starting with `/`, ...); nothing was sent.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// No response arrived (connection refused, DNS, TLS, timeout of an idempotent request).
    #[error("could not reach toggl: {message}")]
    Transport {
        /// The transport failure, without URL or credentials.
        message: String,
    },
    /// Toggl answered with an error status not covered by a more specific variant (400, 5xx, ...).
    #[error("toggl answered {status}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Readable excerpt of the error body.
        message: String,
    },
    /// Toggl's per-token rate limit answered 429 and retries did not help.
    #[error("rate limited by toggl (429){}", retry_after_text(*retry_after))]
    RateLimited {
        /// When Toggl said to come back, if it said.
        retry_after: Option<Duration>,
    },
    /// The hourly quota of the scope is spent and resets later than the client may wait.
    #[error(
        "toggl {scope} is spent; it resets in {}s (at {})",
        resets_in.as_secs(),
        resets_at.format("%Y-%m-%d %H:%M:%S UTC")
    )]
    QuotaExhausted {
        /// Time until the quota window resets.
        resets_in: Duration,
        /// Wall-clock time of the reset.
        resets_at: DateTime<Utc>,
        /// The quota that is spent.
        scope: QuotaScope,
    },
    /// A 402 without quota headers: the feature needs a paid Toggl plan; retrying cannot help.
    #[error("toggl says this needs a paid plan: {message}")]
    PaidFeature {
        /// Readable excerpt of the error body.
        message: String,
    },
    /// 401 or 403: missing or wrong credentials, or no access to the resource.
    #[error(
        "toggl refused the credentials or access ({status}): {message}; hint: check TOGGL_API_TOKEN and that the account can access this workspace"
    )]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// Readable excerpt of the error body.
        message: String,
    },
    /// 410: this API generation or endpoint has been shut down by Toggl.
    #[error(
        "toggl says this api endpoint is gone (410): {message}; this api generation was shut down, the connector definition must move to the current api (v9)"
    )]
    Gone {
        /// Readable excerpt of the error body.
        message: String,
    },
    /// 404: the resource (or the endpoint) does not exist.
    #[error("not found (404): {message}")]
    NotFound {
        /// Readable excerpt of the error body.
        message: String,
    },
    /// 409: the request conflicts with the current state (e.g. stopping a stopped entry).
    #[error("conflict (409): {message}")]
    Conflict {
        /// Readable excerpt of the error body.
        message: String,
    },
    /// A non-idempotent request may or may not have taken effect; check before retrying it.
    #[error(
        "outcome of {method} {path} is unknown ({reason}); check whether it took effect before retrying"
    )]
    OutcomeUnknown {
        /// HTTP method.
        method: String,
        /// Path template (ids replaced).
        path: String,
        /// What happened (timeout after sending, connection reset, 5xx).
        reason: String,
    },
    /// A successful response whose body is not the JSON expected.
    #[error(
        "could not decode the response of {path}: {message}{}",
        body_text(body)
    )]
    Decode {
        /// Path template (ids replaced).
        path: String,
        /// What the decoder said.
        message: String,
        /// Redacted, bounded excerpt of the body.
        body: String,
    },
}

fn body_text(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!("; body starts with: {body}")
    }
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| {
        format!("; retry after {}s", d.as_secs().max(1))
    })
}

impl ClientError {
    /// True when the same request may succeed later without changes: transport failures, 429,
    /// a spent quota, 5xx. `OutcomeUnknown` is not: the caller must check first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::RateLimited { .. } | Self::QuotaExhausted { .. } => true,
            Self::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status Toggl answered, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Unauthorized { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            Self::QuotaExhausted { .. } | Self::PaidFeature { .. } => Some(402),
            Self::Gone { .. } => Some(410),
            Self::NotFound { .. } => Some(404),
            Self::Conflict { .. } => Some(409),
            _ => None,
        }
    }

    pub(crate) fn quota_exhausted(scope: QuotaScope, resets_in: Duration) -> Self {
        let resets_at = Utc::now()
            + chrono::Duration::from_std(resets_in).unwrap_or_else(|_| chrono::Duration::zero());
        Self::QuotaExhausted {
            resets_in,
            resets_at,
            scope,
        }
    }
}

/// One readable, bounded line from an error body of any shape. Empty bodies read `empty body`.
pub fn body_message(content_type: Option<&str>, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "empty body".to_owned();
    }
    let is_html = content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("html"))
        || trimmed.starts_with('<');
    if !is_html {
        if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
            return bound(&json_message(&value));
        }
    }
    if is_html {
        if let Some(title) = html_title(trimmed) {
            return bound(&title);
        }
        return bound(&strip_tags(trimmed));
    }
    bound(trimmed)
}

fn json_message(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null body".to_owned(),
        Value::Object(map) => {
            for key in [
                "message",
                "error_message",
                "error",
                "errors",
                "detail",
                "tip",
            ] {
                match map.get(key) {
                    Some(Value::String(s)) if !s.trim().is_empty() => return s.clone(),
                    Some(v @ (Value::Object(_) | Value::Array(_))) => return json_message(v),
                    _ => {}
                }
            }
            let mut redacted = value.clone();
            redact_json(&mut redacted);
            redacted.to_string()
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().take(5).map(json_message).collect();
            parts.join("; ")
        }
        other => other.to_string(),
    }
}

/// Replaces the values of keys that name secrets (`api_token`, `password`, `secret`, ...), so an
/// excerpt of a `/me` or subscription body shows its shape but not the secrets inside.
pub(crate) fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let k = key.to_ascii_lowercase();
                if k.contains("token") || k.contains("password") || k.contains("secret") {
                    *v = Value::String("[redacted]".to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = collapse_whitespace(html.get(start..end)?);
    (!title.is_empty()).then_some(title)
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(1024));
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    collapse_whitespace(&out)
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Cuts text to [`BODY_EXCERPT_CHARS`] characters on one line (never inside a character).
pub(crate) fn bound(text: &str) -> String {
    let line = collapse_whitespace(text);
    if line.chars().count() <= BODY_EXCERPT_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(BODY_EXCERPT_CHARS).collect();
    cut.push_str("...");
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_body() {
        assert_eq!(
            body_message(
                Some("application/json; charset=utf-8"),
                br#""'since' and 'before' can not be present simultaneously""#
            ),
            "'since' and 'before' can not be present simultaneously"
        );
    }

    #[test]
    fn json_object_body() {
        assert_eq!(
            body_message(None, br#"{"error_message":"bad thing","code":3}"#),
            "bad thing"
        );
        assert_eq!(
            body_message(None, br#"{"code":3,"api_token":"abcdef"}"#),
            r#"{"code":3,"api_token":"[redacted]"}"#
        );
    }

    #[test]
    fn html_body_uses_the_title() {
        let html = b"<html>\n<head><title>429 Too Many\n Requests</title></head><body><center>nginx</center></body></html>";
        assert_eq!(
            body_message(Some("text/html"), html),
            "429 Too Many Requests"
        );
        assert_eq!(
            body_message(None, b"<html><body><h1>Bad   gateway</h1></body></html>"),
            "Bad gateway"
        );
    }

    #[test]
    fn plain_and_empty_bodies() {
        assert_eq!(
            body_message(Some("text/plain"), b"Invalid start date\n"),
            "Invalid start date"
        );
        assert_eq!(body_message(None, b""), "empty body");
        assert_eq!(body_message(None, b"   \n"), "empty body");
    }

    #[test]
    fn long_bodies_are_bounded_on_a_char_boundary() {
        let long = "é".repeat(5000);
        let msg = body_message(Some("text/plain"), long.as_bytes());
        assert_eq!(msg.chars().count(), BODY_EXCERPT_CHARS + 3);
    }

    #[test]
    fn retryable_classification() {
        assert!(
            ClientError::Api {
                status: 503,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ClientError::Api {
                status: 400,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(ClientError::RateLimited { retry_after: None }.is_retryable());
        assert!(
            !ClientError::PaidFeature {
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ClientError::OutcomeUnknown {
                method: "POST".into(),
                path: "/x".into(),
                reason: "timeout".into()
            }
            .is_retryable()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_body_gives_a_bounded_single_line(body in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let msg = body_message(None, &body);
            proptest::prop_assert!(msg.chars().count() <= BODY_EXCERPT_CHARS + 3);
            proptest::prop_assert!(!msg.contains('\n'));
        }
    }
}
