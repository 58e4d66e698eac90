//! Shared state of a running sandbox and the gate every request passes.
//!
//! Gate order, outermost first (it mirrors a proxy in front of an API server):
//! 1. added latency and injected 5xx (`Faults`): before auth, nothing is counted or changed;
//! 2. authentication (Track API: 401/403 here; Webhooks/Reports: a failed auth is passed on so
//!    those routers answer it themselves, e.g. for unauthenticated validation links);
//! 3. the leaky bucket per user (429);
//! 4. the hourly quota (402, not counted);
//! 5. the handler; quota headers are added to its response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use parking_lot::{Mutex, RwLock};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::config::SandboxConfig;
use crate::edge::{ApiError, Call, Caller, json_response};
use crate::limits::{Buckets, Quota, QuotaKey, QuotaStatus};
use crate::model::Db;
use crate::webhooks::{Action, Change, Hub, HubConfig, WebhookAccess};

/// Handle to the state of one sandbox; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) db: RwLock<Db>,
    pub(crate) config: SandboxConfig,
    pub(crate) quota: Mutex<Quota>,
    pub(crate) buckets: Mutex<Buckets>,
    pub(crate) changes: broadcast::Sender<Change>,
    pub(crate) fault_rng: Mutex<ChaCha8Rng>,
    pub(crate) hub: Arc<Hub>,
}

/// Capacity of the change broadcast; slow test subscribers see `Lagged` rather than blocking
/// the API.
const CHANGE_CAPACITY: usize = 4096;

impl AppState {
    pub(crate) fn from_db(db: Db, config: SandboxConfig) -> AppState {
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        let hub = Hub::new(HubConfig {
            drop_share: config.faults.webhook_drop_share.clamp(0.0, 1.0),
            delivery_delay_ms: config.faults.webhook_delay_ms,
            rng_seed: config.seed_value ^ 0x7765_6268,
            ..HubConfig::default()
        });
        AppState {
            inner: Arc::new(Shared {
                db: RwLock::new(db),
                quota: Mutex::new(Quota::new(config.quota_window)),
                buckets: Mutex::new(Buckets::default()),
                fault_rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed_value ^ 0x5eed_fa17)),
                changes,
                hub,
                config,
            }),
        }
    }

    /// The configuration the sandbox runs with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Runs `f` with read access to all data (one consistent snapshot, under the state lock:
    /// keep `f` short and do not call back into the API from it).
    ///
    /// This is the read API for the Reports v3 router: [`Db`] has accessors for users,
    /// workspaces, projects, clients, tasks, tags and time entries.
    pub fn read<R>(&self, f: impl FnOnce(&Db) -> R) -> R {
        f(&self.inner.db.read())
    }

    /// A copy of all data (for snapshots and the state file).
    pub fn snapshot(&self) -> Db {
        self.inner.db.read().clone()
    }

    /// The webhook hub every change is published to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// Subscribes to every [`Change`] made through the API from now on.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Reports one successful mutation.
    pub(crate) fn publish(&self, change: Change) {
        tracing::debug!(
            entity = change.entity,
            action = change.action.as_str(),
            entity_id = change.entity_id,
            "change"
        );
        self.inner.hub.publish(change.clone());
        // No subscriber is fine: nobody listens in most tests.
        let _ = self.inner.changes.send(change);
    }

    /// Publishes the events a mutation collected, with the request's path, method and body.
    pub(crate) fn publish_all(&self, call: &Call, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let body = call.body_text();
        for e in events {
            self.publish(Change {
                workspace_id: e.workspace_id,
                entity: e.entity,
                action: e.action,
                entity_id: e.entity_id,
                creator_id: call.user_id,
                model_owner_id: e.model_owner_id.unwrap_or(call.user_id),
                payload: e.payload,
                path: call.path.clone(),
                request_type: call.method.as_str().to_owned(),
                request_body: body.clone(),
                project: e.project,
            });
        }
    }

    /// Authenticates Basic credentials (`token:api_token` or `email:password`).
    ///
    /// No `Authorization` header: 401, empty body, `X-Authorization-Missing: true` (recorded).
    /// Anything else that does not identify a user: 403 with an empty body (Toggl's 403 body is
    /// unconfirmed; clients treat it as empty).
    #[allow(
        clippy::result_large_err,
        reason = "the signature is fixed by webhooks::WebhookAccess"
    )]
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<i64, Response> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r.headers_mut()
                .insert("X-Authorization-Missing", HeaderValue::from_static("true"));
            return Err(r);
        };
        let forbidden = || {
            ApiError {
                status: StatusCode::FORBIDDEN,
                message: None,
            }
            .into_response()
        };
        let encoded = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .ok_or_else(forbidden)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(forbidden)?;
        let (name, secret) = decoded.split_once(':').ok_or_else(forbidden)?;
        let db = self.inner.db.read();
        let user = if secret == "api_token" {
            db.users()
                .find(|u| !u.api_token.is_empty() && u.api_token == name)
        } else {
            db.users()
                .find(|u| u.email.eq_ignore_ascii_case(name) && u.password == secret)
        };
        user.map(|u| u.id).ok_or_else(forbidden)
    }

    /// `Some(is_admin)` when the user is an active member of the workspace.
    pub fn workspace_access(&self, user_id: i64, workspace_id: i64) -> Option<bool> {
        self.inner.db.read().access(user_id, workspace_id)
    }

    /// Webhook limits of the workspace's plan (the plan is sandbox-wide).
    pub fn webhook_limits(&self, _workspace_id: i64) -> (u32, u32) {
        self.inner.config.plan.webhook_limits()
    }

    /// The quota key of a request path for a user.
    fn quota_key(&self, user_id: i64, path: &str) -> QuotaKey {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let db = self.inner.db.read();
        let org_of_ws = |raw: &str| {
            raw.parse::<i64>()
                .ok()
                .and_then(|w| db.workspace(w))
                .map(|w| w.organization_id)
        };
        let org = match segs.as_slice() {
            ["api", "v9", "workspaces", wid, ..] => org_of_ws(wid),
            ["api", "v9", "organizations", oid, ..] => oid
                .parse::<i64>()
                .ok()
                .filter(|o| db.organizations.contains_key(o)),
            ["reports", "api", "v3", "workspace", wid, ..] => org_of_ws(wid),
            [
                "webhooks",
                "api",
                "v1",
                "subscriptions" | "ping" | "validate" | "limits",
                wid,
                ..,
            ] => org_of_ws(wid),
            _ => None,
        };
        match org {
            Some(organization_id) => QuotaKey::Org {
                user_id,
                organization_id,
            },
            None => QuotaKey::User(user_id),
        }
    }

    fn quota_total(&self, key: QuotaKey) -> u32 {
        let plan = self.inner.config.plan;
        match key {
            QuotaKey::User(_) => plan.user_quota(),
            QuotaKey::Org { .. } => plan.org_quota(),
        }
    }

    /// Current quota windows of a user: the user-level one and one per organization.
    pub(crate) fn quota_overview(&self, user_id: i64) -> Vec<(Option<i64>, QuotaStatus)> {
        let orgs = self.inner.db.read().organizations_of(user_id);
        let now = Instant::now();
        let mut quota = self.inner.quota.lock();
        let mut out = Vec::with_capacity(orgs.len() + 1);
        let user_key = QuotaKey::User(user_id);
        out.push((None, quota.peek(user_key, self.quota_total(user_key), now)));
        for organization_id in orgs {
            let key = QuotaKey::Org {
                user_id,
                organization_id,
            };
            out.push((
                Some(organization_id),
                quota.peek(key, self.quota_total(key), now),
            ));
        }
        out
    }
}

impl WebhookAccess for AppState {
    fn authenticate(&self, headers: &HeaderMap) -> Result<i64, Response> {
        AppState::authenticate(self, headers)
    }

    fn workspace_access(&self, user_id: i64, workspace_id: i64) -> Option<bool> {
        AppState::workspace_access(self, user_id, workspace_id)
    }

    fn webhook_limits(&self, workspace_id: i64) -> (u32, u32) {
        AppState::webhook_limits(self, workspace_id)
    }
}

/// A mutation's event, completed into a [`Change`] with request data by
/// [`AppState::publish_all`].
#[derive(Debug)]
pub(crate) struct Event {
    pub workspace_id: i64,
    pub entity: &'static str,
    pub action: Action,
    pub entity_id: i64,
    pub model_owner_id: Option<i64>,
    pub payload: Value,
    pub project: Option<(i64, bool)>,
}

/// Which gate rules apply to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `/api/v9/status`: no auth, no quota.
    Public,
    /// Track API: the gate authenticates.
    Track,
    /// Webhooks and Reports: their routers authenticate; the gate only counts.
    External,
}

fn scope(path: &str) -> Scope {
    if path == "/api/v9/status" {
        Scope::Public
    } else if path.starts_with("/webhooks/") || path.starts_with("/reports/") {
        Scope::External
    } else {
        Scope::Track
    }
}

fn set_quota_headers(headers: &mut HeaderMap, q: QuotaStatus) {
    headers.insert("X-Toggl-Quota-Remaining", HeaderValue::from(q.remaining));
    headers.insert(
        "X-Toggl-Quota-Resets-In",
        HeaderValue::from(q.resets_in_secs),
    );
}

fn request_id(headers: &mut HeaderMap) {
    let id = uuid::Uuid::new_v4();
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        headers.insert("X-Toggl-Request-Id", v);
    }
    headers.insert("X-Service-Level", HeaderValue::from_static("GREEN"));
}

const NGINX_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
const NGINX_503: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
const NGINX_429: &str = "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn html(status: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

/// An injected failure: a JSON 500 from the app, or an HTML 502/503 from the proxy.
fn fault_response(pick: u32) -> Response {
    match pick % 3 {
        0 => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &Value::String("Internal Server Error".into()),
        ),
        1 => html(StatusCode::BAD_GATEWAY, NGINX_502),
        _ => html(StatusCode::SERVICE_UNAVAILABLE, NGINX_503),
    }
}

/// The gate middleware (see the module docs for the order).
pub(crate) async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if let Some(early) = gate_inner(&state, &mut req).await {
        return finish(early, None);
    }
    let q = req.extensions().get::<PendingQuota>().map(|p| p.0);
    let resp = next.run(req).await;
    // A handler's 402 means "paid feature": it goes out without quota headers, so clients can
    // tell it from the quota 402 (which always has them) and never wait for a reset.
    let q = q.filter(|_| resp.status() != StatusCode::PAYMENT_REQUIRED);
    finish(resp, q)
}

fn finish(mut resp: Response, q: Option<QuotaStatus>) -> Response {
    if let Some(q) = q {
        set_quota_headers(resp.headers_mut(), q);
    }
    request_id(resp.headers_mut());
    resp
}

/// Runs the gate up to the handler; `Some(response)` answers early.
async fn gate_inner(state: &AppState, req: &mut Request) -> Option<Response> {
    let faults = state.inner.config.faults;
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.share_5xx > 0.0 {
        let mut rng = state.inner.fault_rng.lock();
        if rng.gen_bool(faults.share_5xx.clamp(0.0, 1.0)) {
            return Some(fault_response(rng.r#gen()));
        }
    }
    let path = req.uri().path().to_owned();
    let scope = scope(&path);
    if scope == Scope::Public {
        return None;
    }
    let user_id = match state.authenticate(req.headers()) {
        Ok(u) => u,
        Err(resp) if scope == Scope::Track => return Some(resp),
        Err(_) => return None,
    };
    let key = state.quota_key(user_id, &path);
    let total = state.quota_total(key);
    let now = Instant::now();
    if state.inner.config.rate_limit
        && let Err(wait) = state.inner.buckets.lock().admit(user_id, now)
    {
        let q = state.inner.quota.lock().peek(key, total, now);
        let mut r = html(StatusCode::TOO_MANY_REQUESTS, NGINX_429);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        set_quota_headers(r.headers_mut(), q);
        return Some(r);
    }
    let enforce = state.inner.config.plan.enforces_quota();
    let q = state.inner.quota.lock().hit(key, total, enforce, now);
    if !q.allowed {
        let msg = format!(
            "You have hit your hourly API quota. It resets in {} seconds.",
            q.resets_in_secs
        );
        let mut r = json_response(StatusCode::PAYMENT_REQUIRED, &Value::String(msg));
        set_quota_headers(r.headers_mut(), q);
        return Some(r);
    }
    req.extensions_mut().insert(Caller { user_id });
    req.extensions_mut().insert(PendingQuota(q));
    None
}

/// The quota status of an admitted request, carried to the response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingQuota(pub QuotaStatus);
