//! Client configuration.

use std::time::Duration;

use crate::error::ClientError;
use crate::secret::Secret;

/// Toggl's API host. Paths of requests start from this root (`/api/v9/...`, `/webhooks/...`).
pub const DEFAULT_BASE_URL: &str = "https://api.track.toggl.com";

/// How the client authenticates (HTTP Basic in both cases).
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An API token: sent as `token:api_token`.
    Token(Secret),
    /// Email and password (not accepted by the Webhooks API).
    EmailPassword {
        /// Account email.
        email: String,
        /// Account password.
        password: Secret,
    },
}

/// When and how often a failed request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total for 429, 5xx and transport failures (1 = never retry).
    pub max_attempts: u32,
    /// First backoff delay; doubles with each attempt, with jitter.
    pub base_backoff: Duration,
    /// Upper bound of one backoff delay.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// Everything the client needs to talk to Toggl.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Host root (default [`DEFAULT_BASE_URL`]). A URL ending in `/api/v9` (as `TOGGL_API_URL` is
    /// often set) is accepted and trimmed to the root, so paths are never doubled.
    pub base_url: String,
    /// Credentials for HTTP Basic auth.
    pub credentials: Credentials,
    /// `User-Agent` header (default `toggl-connect/<version>`).
    pub user_agent: String,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole attempt (send and read the response).
    pub request_timeout: Duration,
    /// Minimum spacing between request starts for this token (Toggl's leaky bucket allows about 1
    /// per second). `None` turns pacing off (benchmarks, sandboxes).
    pub pacing: Option<Duration>,
    /// Longest wait for a quota window to reset before failing with `QuotaExhausted`.
    pub max_quota_wait: Duration,
    /// Retries of 429, 5xx and transport failures.
    pub retry: RetryPolicy,
    /// Learn the organization of a workspace with one `GET /api/v9/me/workspaces` (user quota) the
    /// first time a workspace of unknown organization is used, so all workspaces of an
    /// organization share one budget. Off: workspaces are budgeted alone until their organization
    /// is learned from responses that pass by.
    pub resolve_workspace_orgs: bool,
}

impl ClientConfig {
    /// Defaults for the given credentials.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            credentials,
            user_agent: format!("toggl-connect/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            pacing: Some(Duration::from_secs(1)),
            max_quota_wait: Duration::from_secs(15 * 60),
            retry: RetryPolicy::default(),
            resolve_workspace_orgs: true,
        }
    }

    /// Defaults with an API token.
    pub fn with_token(token: impl Into<Secret>) -> Self {
        Self::new(Credentials::Token(token.into()))
    }

    /// Sets the base URL (host root or `.../api/v9`).
    #[must_use]
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }
}

/// The host root of `base_url`: trailing slashes and a trailing `/api/v9` removed; must be an
/// absolute http(s) URL without query or fragment.
pub(crate) fn normalize_base_url(base_url: &str) -> Result<String, ClientError> {
    // Echo the URL only when it cannot hold credentials (`user:password@host`).
    let shown = if base_url.contains('@') {
        "(hidden)".to_owned()
    } else {
        format!("{base_url:?}")
    };
    let invalid = |why: &str| ClientError::Config {
        message: format!("base url {shown} {why}"),
    };
    let parsed =
        url::Url::parse(base_url.trim()).map_err(|e| invalid(&format!("is not a url ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("must use http or https"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry credentials; use the token setting"));
    }
    let mut root = parsed.as_str().trim_end_matches('/').to_owned();
    for suffix in ["/api/v9", "/api/v9/"] {
        if let Some(stripped) = root.strip_suffix(suffix) {
            root = stripped.trim_end_matches('/').to_owned();
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_accepts_root_and_api_v9() {
        for input in [
            "https://api.track.toggl.com",
            "https://api.track.toggl.com/",
            "https://api.track.toggl.com/api/v9",
            "https://api.track.toggl.com/api/v9/",
        ] {
            assert_eq!(
                normalize_base_url(input).expect("valid"),
                "https://api.track.toggl.com",
                "{input}"
            );
        }
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080/prefix/api/v9").expect("valid"),
            "http://127.0.0.1:8080/prefix"
        );
    }

    #[test]
    fn base_url_rejects_garbage() {
        assert!(normalize_base_url("api.track.toggl.com").is_err());
        assert!(normalize_base_url("ftp://x").is_err());
        assert!(normalize_base_url("https://x/?a=b").is_err());
        let err = normalize_base_url("https://user:pw-secret@x/").expect_err("credentials");
        assert!(!err.to_string().contains("pw-secret"));
    }

    #[test]
    fn default_user_agent_names_the_version() {
        let c = ClientConfig::with_token("t0ken-value");
        assert!(c.user_agent.starts_with("toggl-connect/"));
        assert!(!format!("{c:?}").contains("t0ken-value"));
    }
}
