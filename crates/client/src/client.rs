//! The client: one token, one budget, one pacer, shared by every clone.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rand::Rng as _;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{ClientConfig, Credentials, RetryPolicy, normalize_base_url};
use crate::error::{ClientError, body_message, bound, redact_json};
use crate::pacing::Pacer;
use crate::quota::{Observation, QuotaBudget, QuotaHeaders, QuotaScope, QuotaSnapshot};
use crate::request::{ApiRequest, ApiResponse, keep_header, path_template};
use crate::secret::Redactor;

/// After this many 402 "quota spent" answers in one `send`, give up: Toggl keeps saying the
/// window is spent although the client waited for every announced reset.
const MAX_SPENT_ANSWERS: u32 = 30;

/// A Toggl client. Cheap to clone; clones share the connection pool, the quota budget and the
/// pacer, so all work of one token is budgeted together.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    redactor: Redactor,
    retry: RetryPolicy,
    max_quota_wait: Duration,
    budget: Arc<QuotaBudget>,
    pacer: Option<Pacer>,
    resolve_orgs: bool,
    /// True once the one `GET /me/workspaces` lookup ran; the async lock makes it single-flight.
    org_lookup_done: tokio::sync::Mutex<bool>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base)
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

/// Why an attempt got no usable response.
struct SendFailure {
    /// True when the request certainly did not reach Toggl (connection refused, connect timeout).
    not_sent: bool,
    message: String,
}

struct RawResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Client {
    /// A client with its own quota budget.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        Self::with_budget(config, Arc::new(QuotaBudget::new()))
    }

    /// A client drawing on an existing budget: use it when several clients share one token.
    /// Pacing is per client; prefer cloning one client, which shares the pacer too.
    pub fn with_budget(
        config: ClientConfig,
        budget: Arc<QuotaBudget>,
    ) -> Result<Self, ClientError> {
        let base = normalize_base_url(&config.base_url)?;
        let (basic, needles) = match &config.credentials {
            Credentials::Token(token) => {
                if token.is_empty() {
                    return Err(ClientError::Config {
                        message: "the api token is empty; set TOGGL_API_TOKEN".to_owned(),
                    });
                }
                (
                    format!("{}:api_token", token.expose()),
                    vec![token.expose().to_owned()],
                )
            }
            Credentials::EmailPassword { email, password } => {
                if password.is_empty() {
                    return Err(ClientError::Config {
                        message: "the password is empty".to_owned(),
                    });
                }
                (
                    format!("{email}:{}", password.expose()),
                    vec![password.expose().to_owned()],
                )
            }
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(basic.as_bytes());
        let mut auth = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
            ClientError::Config {
                message: "the credentials contain characters not allowed in a header".to_owned(),
            }
        })?;
        auth.set_sensitive(true);
        let redactor = Redactor::new(needles.into_iter().chain([encoded]));

        let mut default_headers = HeaderMap::new();
        default_headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .default_headers(default_headers)
            // Toggl's API does not redirect; following one could only end at a login page.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Config {
                message: redactor.scrub(&describe(e)),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                redactor,
                retry: config.retry,
                max_quota_wait: config.max_quota_wait,
                budget,
                pacer: config.pacing.map(Pacer::new),
                resolve_orgs: config.resolve_workspace_orgs,
                org_lookup_done: tokio::sync::Mutex::new(false),
            }),
        })
    }

    /// The host root requests are sent to.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The shared quota budget of this client's token.
    pub fn budget(&self) -> &Arc<QuotaBudget> {
        &self.inner.budget
    }

    /// What is known about each quota scope (for `serve` and metrics).
    pub fn budget_snapshot(&self) -> Vec<QuotaSnapshot> {
        self.inner.budget.snapshot()
    }

    /// Sends a request: waits for quota and pacing, retries what is safe to retry, and returns the
    /// parsed body of a 2xx answer or a typed error.
    ///
    /// Retries: 429 (after `Retry-After` or a backoff), 402 with quota headers (after the reset),
    /// transport failures before sending, and 5xx or timeouts of idempotent requests. A
    /// non-idempotent request whose outcome is unknown fails with
    /// [`ClientError::OutcomeUnknown`] and is never sent again by the client.
    pub async fn send(&self, req: ApiRequest) -> Result<ApiResponse, ClientError> {
        let template = path_template(&req.path);
        let span = tracing::debug_span!("toggl_request", method = %req.method, path = %template);
        tracing::Instrument::instrument(
            async move {
                if let QuotaScope::Workspace(wid) = req.scope {
                    self.resolve_org_once(wid).await;
                }
                self.execute(&req, &template).await
            },
            span,
        )
        .await
    }

    /// Fetches `GET /api/v9/me/workspaces` (one user-level request) and records the organization
    /// of every workspace in the budget. Returns how many workspaces were mapped.
    pub async fn resolve_workspace_orgs(&self) -> Result<usize, ClientError> {
        let req = ApiRequest::get("/api/v9/me/workspaces");
        let template = path_template(&req.path);
        let resp = self.execute(&req, &template).await?;
        Ok(learn_workspace_orgs(&self.inner.budget, &resp.body))
    }

    async fn resolve_org_once(&self, wid: u64) {
        if !self.inner.resolve_orgs || self.inner.budget.workspace_org(wid).is_some() {
            return;
        }
        let mut done = self.inner.org_lookup_done.lock().await;
        if *done || self.inner.budget.workspace_org(wid).is_some() {
            return;
        }
        if self.inner.budget.is_spent(QuotaScope::User) {
            // Spending a wait on the user quota to budget a workspace request better is a bad
            // trade; the workspace is budgeted alone until the lookup can run.
            tracing::debug!(
                workspace_id = wid,
                "user quota spent; organization lookup deferred"
            );
            return;
        }
        *done = true;
        match self.resolve_workspace_orgs().await {
            Ok(n) => tracing::debug!(workspaces = n, "learned workspace organizations"),
            Err(e) => tracing::warn!(
                error = %e,
                "could not learn workspace organizations; budgeting workspaces separately"
            ),
        }
    }

    async fn execute(&self, req: &ApiRequest, template: &str) -> Result<ApiResponse, ClientError> {
        let url = self.build_url(req)?;
        let retry = &self.inner.retry;
        let max_attempts = retry.max_attempts.max(1);
        let mut attempt: u32 = 0;
        let mut spent_answers: u32 = 0;
        loop {
            attempt += 1;
            let admission = self
                .inner
                .budget
                .admit(req.scope, self.inner.max_quota_wait)
                .await?;
            let scope = admission.key();
            if let Some(pacer) = &self.inner.pacer {
                pacer.wait().await;
            }
            let started = Instant::now();
            let raw = match self.attempt(req, url.clone()).await {
                Ok(raw) => raw,
                Err(failure) => {
                    admission.complete(Observation::NoResponse);
                    let elapsed_ms = started.elapsed().as_millis();
                    if !failure.not_sent && !req.idempotent {
                        tracing::warn!(attempt, elapsed_ms, error = %failure.message, "toggl request outcome unknown; not re-sending");
                        return Err(ClientError::OutcomeUnknown {
                            method: req.method.to_string(),
                            path: template.to_owned(),
                            reason: failure.message,
                        });
                    }
                    if attempt >= max_attempts {
                        tracing::warn!(attempt, elapsed_ms, error = %failure.message, "toggl request failed");
                        return Err(ClientError::Transport {
                            message: failure.message,
                        });
                    }
                    let delay = backoff(retry, attempt);
                    tracing::info!(attempt, elapsed_ms, delay_ms = delay.as_millis(), error = %failure.message, "toggl request failed; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let quota = QuotaHeaders::from_headers(&raw.headers);
            let status = raw.status;
            let spent = status == StatusCode::PAYMENT_REQUIRED && quota.is_some();
            admission.complete(Observation::Response {
                headers: quota,
                spent,
            });
            tracing::debug!(
                attempt,
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis(),
                quota_remaining = quota.and_then(|q| q.remaining),
                "toggl response"
            );

            if status.is_success() {
                return self.success(req, template, raw, quota, scope);
            }
            let message = || {
                let ct = raw
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                self.inner.redactor.scrub(&body_message(ct, &raw.body))
            };
            match status.as_u16() {
                402 if spent => {
                    spent_answers += 1;
                    // Waiting for a quota reset is not a failed attempt.
                    attempt -= 1;
                    tracing::info!(scope = %scope, resets_in_secs = quota.and_then(|q| q.resets_in).map(|d| d.as_secs()), "toggl quota spent (402)");
                    if spent_answers >= MAX_SPENT_ANSWERS {
                        let resets_in = quota
                            .and_then(|q| q.resets_in)
                            .unwrap_or(Duration::from_secs(60));
                        return Err(ClientError::quota_exhausted(scope, resets_in));
                    }
                }
                402 => return Err(ClientError::PaidFeature { message: message() }),
                429 => {
                    let retry_after = parse_retry_after(&raw.headers);
                    if attempt >= max_attempts
                        || retry_after.is_some_and(|d| d > retry.max_retry_after)
                    {
                        return Err(ClientError::RateLimited { retry_after });
                    }
                    let delay = retry_after.unwrap_or_else(|| backoff(retry, attempt));
                    if let Some(pacer) = &self.inner.pacer {
                        pacer.defer_until(Instant::now() + delay);
                    }
                    tracing::info!(
                        attempt,
                        delay_ms = delay.as_millis(),
                        "rate limited by toggl (429); backing off"
                    );
                    tokio::time::sleep(delay).await;
                }
                s if s >= 500 => {
                    if !req.idempotent {
                        return Err(ClientError::OutcomeUnknown {
                            method: req.method.to_string(),
                            path: template.to_owned(),
                            reason: format!("toggl answered {s}: {}", message()),
                        });
                    }
                    if attempt >= max_attempts {
                        return Err(ClientError::Api {
                            status: s,
                            message: message(),
                        });
                    }
                    let delay = backoff(retry, attempt);
                    tracing::info!(
                        attempt,
                        status = s,
                        delay_ms = delay.as_millis(),
                        "toggl server error; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                s @ (401 | 403) => {
                    return Err(ClientError::Unauthorized {
                        status: s,
                        message: message(),
                    });
                }
                404 => return Err(ClientError::NotFound { message: message() }),
                409 => return Err(ClientError::Conflict { message: message() }),
                410 => return Err(ClientError::Gone { message: message() }),
                s => {
                    return Err(ClientError::Api {
                        status: s,
                        message: message(),
                    });
                }
            }
        }
    }

    async fn attempt(&self, req: &ApiRequest, url: url::Url) -> Result<RawResponse, SendFailure> {
        let mut builder = self
            .inner
            .http
            .request(req.method.clone(), url)
            .header(http::header::AUTHORIZATION, self.inner.auth.clone());
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let resp = builder.send().await.map_err(|e| self.failure(e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        match resp.bytes().await {
            Ok(body) => Ok(RawResponse {
                status,
                headers,
                body,
            }),
            // The status line arrived but the body did not: for an error status the status says
            // enough; for a success the result is lost, which is an unknown outcome.
            Err(_) if !status.is_success() => Ok(RawResponse {
                status,
                headers,
                body: Bytes::new(),
            }),
            Err(e) => Err(SendFailure {
                not_sent: false,
                message: format!(
                    "answered {status} but the body could not be read: {}",
                    self.inner.redactor.scrub(&describe(e))
                ),
            }),
        }
    }

    fn failure(&self, e: reqwest::Error) -> SendFailure {
        // A connect error (refused, unreachable, connect timeout) means no byte of the request
        // left; anything else may have reached Toggl.
        let not_sent = e.is_connect();
        let timeout = e.is_timeout();
        let mut message = self.inner.redactor.scrub(&describe(e));
        if timeout && !not_sent {
            message = format!("timed out waiting for the response ({message})");
        }
        SendFailure { not_sent, message }
    }

    fn success(
        &self,
        req: &ApiRequest,
        template: &str,
        raw: RawResponse,
        quota: Option<QuotaHeaders>,
        scope: QuotaScope,
    ) -> Result<ApiResponse, ClientError> {
        let body = if raw.body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&raw.body).map_err(|e| ClientError::Decode {
                path: template.to_owned(),
                message: e.to_string(),
                body: self.excerpt(&raw.body),
            })?
        };
        if req.method == Method::GET
            && matches!(
                template,
                "/api/v9/me/workspaces" | "/api/v9/workspaces" | "/api/v9/workspaces/{id}"
            )
        {
            learn_workspace_orgs(&self.inner.budget, &body);
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &raw.headers {
            if keep_header(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Ok(ApiResponse {
            status: raw.status,
            headers,
            body,
            quota,
            scope,
        })
    }

    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = match serde_json::from_str::<Value>(&text) {
            Ok(mut v) => {
                redact_json(&mut v);
                v.to_string()
            }
            Err(_) => text.into_owned(),
        };
        bound(&self.inner.redactor.scrub(&text))
    }

    fn build_url(&self, req: &ApiRequest) -> Result<url::Url, ClientError> {
        let invalid = |why: &str| ClientError::InvalidRequest {
            message: format!("path {} {why}", path_template(&req.path)),
        };
        if !req.path.starts_with('/') {
            return Err(invalid("must start with '/'"));
        }
        if req.path.starts_with("//") || req.path.contains(['?', '#', ' ', '\n', '\r', '\t']) {
            return Err(invalid(
                "must be a plain path (query goes in the query list, no '//' prefix or spaces)",
            ));
        }
        let mut url = url::Url::parse(&format!("{}{}", self.inner.base, req.path))
            .map_err(|e| invalid(&format!("does not form a url ({e})")))?;
        if !req.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        Ok(url)
    }
}

/// Records `organization_id` of every workspace object in `body` (array or single object).
fn learn_workspace_orgs(budget: &QuotaBudget, body: &Value) -> usize {
    let one = |v: &Value| -> bool {
        match (
            v.get("id").and_then(Value::as_u64),
            v.get("organization_id").and_then(Value::as_u64),
        ) {
            (Some(wid), Some(oid)) => {
                budget.set_workspace_org(wid, oid);
                true
            }
            _ => false,
        }
    };
    match body {
        Value::Array(items) => items.iter().filter(|v| one(v)).count(),
        v @ Value::Object(_) => usize::from(one(v)),
        _ => 0,
    }
}

/// The error chain as one line, without the URL (it may carry query values).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    bound(&parts.join(": "))
}

/// Exponential backoff with equal jitter: half the delay fixed, half random, capped.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let capped = exp.min(policy.max_backoff);
    let half = capped / 2;
    let jitter = rand::thread_rng().gen_range(0.0..=1.0);
    half + half.mul_f64(jitter)
}

/// `Retry-After` as seconds or an HTTP date; a date in the past means "now".
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() {
            return Some(Duration::from_secs_f64(secs.clamp(0.0, 1.0e9)));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_str(v).expect("valid"),
        );
        h
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            parse_retry_after(&with_retry_after("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&with_retry_after(" 0 ")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(&with_retry_after("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO)
        );
        let future = (chrono::Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse_retry_after(&with_retry_after(&future)).expect("date");
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after(&with_retry_after("soon")), None);
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(60),
        };
        for attempt in 1..40 {
            let d = backoff(&policy, attempt);
            assert!(d <= Duration::from_secs(2), "{attempt}: {d:?}");
        }
        let first = backoff(&policy, 1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        assert!(backoff(&policy, 5) >= Duration::from_millis(800));
    }

    #[test]
    fn learns_organizations_from_workspace_lists() {
        let budget = QuotaBudget::new();
        let body = serde_json::json!([
            {"id": 1, "organization_id": 10},
            {"id": 2, "organization_id": 10},
            {"id": 3}
        ]);
        assert_eq!(learn_workspace_orgs(&budget, &body), 2);
        assert_eq!(budget.workspace_org(2), Some(10));
        assert_eq!(budget.workspace_org(3), None);
    }
}
