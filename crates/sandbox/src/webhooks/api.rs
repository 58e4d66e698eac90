//! HTTP handlers for `/webhooks/api/v1/...`.
//!
//! Decisions on points the reference leaves UNCONFIRMED:
//! - Create, PUT, and PATCH that enables a subscription ping `url_callback` synchronously; a
//!   non-2xx answer or transport failure refuses the request with 400 (`URL endpoint {url}
//!   responded with status {code} instead of 200` / `... request failed with error: {err}`) and
//!   changes nothing. If the 2xx answer echoes `{"validation_code": "<code>"}` the subscription
//!   is validated on the spot; otherwise it waits for `GET /validate/...`.
//! - PUT is a full update with Go zero values: an omitted `enabled` means `false`, an omitted
//!   `secret` keeps the current one, an empty `secret` is refused. Changing `url_callback`
//!   clears `validated_at` and issues a new validation code: the new endpoint must prove itself.
//! - The enabled-subscriptions limit (`max_webhooks`) counts per user per workspace, as Toggl's
//!   message says. Unknown entity names that match `[A-Za-z0-9_]+` are accepted (Toggl has no
//!   message for them) and simply never match.
//! - `POST /ping` answers `{"status":"OK"}` when the endpoint answered 2xx and 400 with the same
//!   messages as create otherwise; a successful ping validates (if the code is echoed) and gives
//!   failed events a fresh round of attempts.
//! - A non-admin sees and manages only their own subscriptions; others' answer 404.
//! - `/status` and `/validate` need no authentication; everything else does.
//! - `GET /subscriptions/{wid}/{sid}/events` (V8 doc only) returns the event log, oldest first:
//!   `event_id, created_at, creator_id, status (pending|delivered|failed), delivery_attempts
//!   [{attempted_at, status_code, error, duration_ms}], failed_delivery_attempts,
//!   last_delivery_error, delivered_at, next_attempt_at, metadata, payload`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::Utc;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::WebhookAccess;
use super::hub::{Hub, PingOutcome};
use super::model::{ACTIONS, ENTITIES, EventFilter, Subscription, validate_filters};

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";

#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    access: Arc<dyn WebhookAccess>,
}

/// The Webhooks API v1 under its full paths (`/webhooks/api/v1/...`), ready to `.merge`.
///
/// Also hands `access` to the hub, which uses it to filter events by the subscription owner's
/// permissions, and (inside a runtime) starts delivery of events imported earlier.
pub fn router(hub: Arc<Hub>, access: Arc<dyn WebhookAccess>) -> Router {
    *hub.inner.access.write() = Some(Arc::clone(&access));
    hub.inner.ensure_fanout();
    Router::new()
        .route("/webhooks/api/v1/status", get(status))
        .route("/webhooks/api/v1/event_filters", get(event_filters))
        .route("/webhooks/api/v1/limits/{workspace_id}", get(limits))
        .route(
            "/webhooks/api/v1/subscriptions/{workspace_id}",
            get(list).post(create),
        )
        .route(
            "/webhooks/api/v1/subscriptions/{workspace_id}/{subscription_id}",
            put(update).patch(set_enabled).delete(remove),
        )
        .route(
            "/webhooks/api/v1/subscriptions/{workspace_id}/{subscription_id}/events",
            get(events),
        )
        .route(
            "/webhooks/api/v1/ping/{workspace_id}/{subscription_id}",
            post(ping),
        )
        .route(
            "/webhooks/api/v1/validate/{workspace_id}/{subscription_id}/{validation_code}",
            get(validate),
        )
        .with_state(App { hub, access })
}

/// A refused request: Toggl's JSON string message, or the access layer's own response.
enum Rejection {
    Message(StatusCode, String),
    Access(Box<Response>),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            // Errors are JSON string bodies, like Toggl's.
            Rejection::Message(status, text) => {
                (status, axum::Json(Value::String(text))).into_response()
            }
            Rejection::Access(resp) => *resp,
        }
    }
}

fn message(status: StatusCode, text: impl Into<String>) -> Rejection {
    Rejection::Message(status, text.into())
}

fn finish(result: Result<Response, Rejection>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

fn not_found(workspace_id: i64, subscription_id: i64) -> Rejection {
    message(
        StatusCode::NOT_FOUND,
        format!("subscription {subscription_id} for workspace {workspace_id} was not found"),
    )
}

fn parse_id(raw: &str, what: &str) -> Result<i64, Rejection> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| message(StatusCode::BAD_REQUEST, format!("Invalid {what} id")))
}

impl App {
    /// The caller's user id and admin flag in the workspace.
    fn authorize(&self, headers: &HeaderMap, workspace_id: i64) -> Result<(i64, bool), Rejection> {
        let user_id = self
            .access
            .authenticate(headers)
            .map_err(|r| Rejection::Access(Box::new(r)))?;
        match self.access.workspace_access(user_id, workspace_id) {
            Some(admin) => Ok((user_id, admin)),
            None => Err(message(
                StatusCode::FORBIDDEN,
                "User not found/accessible for workspace",
            )),
        }
    }

    /// A snapshot of a subscription the caller may see.
    fn visible(
        &self,
        workspace_id: i64,
        subscription_id: i64,
        user_id: i64,
        admin: bool,
    ) -> Result<Subscription, Rejection> {
        let state = self.hub.inner.state.lock();
        state
            .subscriptions
            .get(&subscription_id)
            .filter(|s| s.workspace_id == workspace_id && (admin || s.user_id == user_id))
            .cloned()
            .ok_or_else(|| not_found(workspace_id, subscription_id))
    }
}

#[derive(Deserialize)]
struct FilterBody {
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    action: Option<String>,
}

#[derive(Deserialize)]
struct SubscriptionBody {
    #[serde(default)]
    url_callback: Option<String>,
    #[serde(default)]
    event_filters: Option<Vec<FilterBody>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

#[derive(Deserialize)]
struct EnabledBody {
    #[serde(default)]
    enabled: Option<bool>,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Rejection> {
    serde_json::from_slice(body).map_err(|e| {
        message(
            StatusCode::BAD_REQUEST,
            format!("Invalid request body: {e}"),
        )
    })
}

/// The checked fields of a create/PUT body.
struct Checked {
    description: String,
    filters: Vec<EventFilter>,
    url_callback: String,
    enabled: bool,
}

fn check_body(body: SubscriptionBody, max_filters: u32) -> Result<Checked, Rejection> {
    let bad = |text: String| message(StatusCode::BAD_REQUEST, text);
    let description = body.description.unwrap_or_default();
    if description.trim().is_empty() {
        return Err(bad("Subscription description must not be empty".to_owned()));
    }
    let filters: Vec<EventFilter> = body
        .event_filters
        .unwrap_or_default()
        .into_iter()
        .map(|f| EventFilter {
            entity: f.entity.unwrap_or_default(),
            action: f.action.unwrap_or_default(),
        })
        .collect();
    validate_filters(&filters, max_filters).map_err(bad)?;
    let url_callback = body.url_callback.unwrap_or_default();
    let scheme_ok = url::Url::parse(&url_callback)
        .map(|u| matches!(u.scheme(), "http" | "https"))
        .unwrap_or(false);
    if !scheme_ok {
        return Err(bad(format!(
            "URL endpoint {url_callback} request failed with error: invalid http(s) URL"
        )));
    }
    Ok(Checked {
        description,
        filters,
        url_callback,
        enabled: body.enabled.unwrap_or(false),
    })
}

fn limit_reached(user_id: i64, max: u32, workspace_id: i64) -> Rejection {
    message(
        StatusCode::BAD_REQUEST,
        format!(
            "User {user_id} already reached the limit of {max} enabled subscriptions for workspace {workspace_id}"
        ),
    )
}

fn enabled_count(hub: &Hub, workspace_id: i64, user_id: i64, except: Option<i64>) -> usize {
    hub.inner
        .state
        .lock()
        .subscriptions
        .values()
        .filter(|s| {
            s.workspace_id == workspace_id
                && s.user_id == user_id
                && s.enabled
                && Some(s.subscription_id) != except
        })
        .count()
}

fn description_taken(hub: &Hub, workspace_id: i64, description: &str, except: Option<i64>) -> bool {
    hub.inner.state.lock().subscriptions.values().any(|s| {
        s.workspace_id == workspace_id
            && s.description == description
            && Some(s.subscription_id) != except
    })
}

fn description_in_use(description: &str, workspace_id: i64) -> Rejection {
    message(
        StatusCode::BAD_REQUEST,
        format!(
            "Subscription description '{description}' is already in use for workspace {workspace_id}"
        ),
    )
}

async fn status() -> Response {
    ok(json!({"status": "OK"}))
}

async fn event_filters(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(resp) = app.access.authenticate(&headers) {
        return resp;
    }
    let mut filters = Map::new();
    for entity in ENTITIES {
        filters.insert(entity.to_owned(), json!(ACTIONS));
    }
    ok(Value::Object(filters))
}

async fn limits(State(app): State<App>, Path(wid): Path<String>, headers: HeaderMap) -> Response {
    let result = (|| {
        let wid = parse_id(&wid, "workspace")?;
        app.authorize(&headers, wid)?;
        let (max_webhooks, max_events) = app.access.webhook_limits(wid);
        Ok::<_, Rejection>(ok(
            json!({"max_webhooks": max_webhooks, "max_events_per_webhook": max_events}),
        ))
    })();
    finish(result)
}

async fn list(State(app): State<App>, Path(wid): Path<String>, headers: HeaderMap) -> Response {
    let result = (|| {
        let wid = parse_id(&wid, "workspace")?;
        let (uid, admin) = app.authorize(&headers, wid)?;
        let state = app.hub.inner.state.lock();
        let subs: Vec<Value> = state
            .subscriptions
            .values()
            .filter(|s| s.workspace_id == wid && (admin || s.user_id == uid))
            .map(|s| s.to_json(None))
            .collect();
        Ok::<_, Rejection>(ok(Value::Array(subs)))
    })();
    finish(result)
}

async fn create(
    State(app): State<App>,
    Path(wid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match create_inner(&app, &wid, &headers, &body).await {
        Ok(resp) => resp,
        Err(rejection) => rejection.into_response(),
    }
}

async fn create_inner(
    app: &App,
    wid: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Rejection> {
    let wid = parse_id(wid, "workspace")?;
    let (uid, _) = app.authorize(headers, wid)?;
    let body: SubscriptionBody = parse_body(body)?;
    let (max_webhooks, max_filters) = app.access.webhook_limits(wid);
    let secret = body.secret.clone().filter(|s| !s.is_empty());
    let checked = check_body(body, max_filters)?;
    let inner = &app.hub.inner;
    let secret = secret.unwrap_or_else(|| inner.random_token(20, ALPHANUMERIC));
    let validation_code = inner.random_token(32, HEX);
    let sub = {
        let mut state = inner.state.lock();
        let taken = state
            .subscriptions
            .values()
            .any(|s| s.workspace_id == wid && s.description == checked.description);
        if taken {
            return Err(description_in_use(&checked.description, wid));
        }
        let enabled_now = state
            .subscriptions
            .values()
            .filter(|s| s.workspace_id == wid && s.user_id == uid && s.enabled)
            .count();
        if checked.enabled && enabled_now >= max_webhooks as usize {
            return Err(limit_reached(uid, max_webhooks, wid));
        }
        let subscription_id = state.next_subscription_id;
        state.next_subscription_id += 1;
        let sub = Subscription {
            subscription_id,
            workspace_id: wid,
            user_id: uid,
            enabled: checked.enabled,
            description: checked.description,
            event_filters: checked.filters,
            url_callback: checked.url_callback,
            secret,
            validation_code,
            validated_at: None,
            created_at: Utc::now(),
            updated_at: None,
            events: Default::default(),
        };
        // Inserted before the ping so an endpoint that calls `validation_code_url` while
        // answering the ping finds the subscription.
        state.subscriptions.insert(subscription_id, sub.clone());
        sub
    };
    let sid = sub.subscription_id;
    let echoed = match inner.ping(&sub, uid).await {
        PingOutcome::Answered(echoed) => echoed,
        PingOutcome::Failed(text) => {
            inner.state.lock().subscriptions.remove(&sid);
            return Err(message(StatusCode::BAD_REQUEST, text));
        }
    };
    let json = {
        let mut state = inner.state.lock();
        let Some(sub) = state.subscriptions.get_mut(&sid) else {
            return Err(not_found(wid, sid));
        };
        if sub.validated_at.is_none() && echoed.as_deref() == Some(sub.validation_code.as_str()) {
            sub.validated_at = Some(Utc::now());
        }
        sub.to_json(None)
    };
    tracing::info!(
        workspace_id = wid,
        subscription_id = sid,
        "webhook subscription created"
    );
    inner.wake(sid);
    Ok(ok(json))
}

async fn update(
    State(app): State<App>,
    Path((wid, sid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match update_inner(&app, &wid, &sid, &headers, &body).await {
        Ok(resp) => resp,
        Err(rejection) => rejection.into_response(),
    }
}

async fn update_inner(
    app: &App,
    wid: &str,
    sid: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Rejection> {
    let wid = parse_id(wid, "workspace")?;
    let sid = parse_id(sid, "subscription")?;
    let (uid, admin) = app.authorize(headers, wid)?;
    let current = app.visible(wid, sid, uid, admin)?;
    let body: SubscriptionBody = parse_body(body)?;
    let new_secret = match body.secret.clone() {
        Some(s) if s.is_empty() => {
            return Err(message(
                StatusCode::BAD_REQUEST,
                "Subscription secret must not be empty",
            ));
        }
        other => other,
    };
    let (max_webhooks, max_filters) = app.access.webhook_limits(wid);
    let checked = check_body(body, max_filters)?;
    if description_taken(&app.hub, wid, &checked.description, Some(sid)) {
        return Err(description_in_use(&checked.description, wid));
    }
    if checked.enabled
        && !current.enabled
        && enabled_count(&app.hub, wid, current.user_id, Some(sid)) >= max_webhooks as usize
    {
        return Err(limit_reached(current.user_id, max_webhooks, wid));
    }
    let inner = &app.hub.inner;
    let mut candidate = current.clone();
    let url_changed = candidate.url_callback != checked.url_callback;
    if url_changed {
        candidate.validated_at = None;
        candidate.validation_code = inner.random_token(32, HEX);
    }
    candidate.url_callback = checked.url_callback;
    if let Some(secret) = new_secret {
        candidate.secret = secret;
    }
    let echoed = match inner.ping(&candidate, uid).await {
        PingOutcome::Answered(echoed) => echoed,
        PingOutcome::Failed(text) => return Err(message(StatusCode::BAD_REQUEST, text)),
    };
    let json = {
        let mut state = inner.state.lock();
        let Some(sub) = state.subscriptions.get_mut(&sid) else {
            return Err(not_found(wid, sid));
        };
        sub.description = checked.description;
        sub.event_filters = checked.filters;
        sub.enabled = checked.enabled;
        sub.url_callback = candidate.url_callback;
        sub.secret = candidate.secret;
        if url_changed {
            sub.validated_at = None;
            sub.validation_code = candidate.validation_code;
        }
        if sub.validated_at.is_none() && echoed.as_deref() == Some(sub.validation_code.as_str()) {
            sub.validated_at = Some(Utc::now());
        }
        sub.updated_at = Some(Utc::now());
        if sub.deliverable() {
            sub.requeue_failed();
        }
        sub.to_json(None)
    };
    inner.wake(sid);
    Ok(ok(json))
}

async fn set_enabled(
    State(app): State<App>,
    Path((wid, sid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match set_enabled_inner(&app, &wid, &sid, &headers, &body).await {
        Ok(resp) => resp,
        Err(rejection) => rejection.into_response(),
    }
}

async fn set_enabled_inner(
    app: &App,
    wid: &str,
    sid: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Rejection> {
    let wid = parse_id(wid, "workspace")?;
    let sid = parse_id(sid, "subscription")?;
    let (uid, admin) = app.authorize(headers, wid)?;
    let current = app.visible(wid, sid, uid, admin)?;
    let body: EnabledBody = parse_body(body)?;
    let Some(enabled) = body.enabled else {
        return Err(message(
            StatusCode::BAD_REQUEST,
            "Field 'enabled' must be set",
        ));
    };
    let inner = &app.hub.inner;
    let mut echoed = None;
    if enabled && !current.enabled {
        let (max_webhooks, _) = app.access.webhook_limits(wid);
        if enabled_count(&app.hub, wid, current.user_id, Some(sid)) >= max_webhooks as usize {
            return Err(limit_reached(current.user_id, max_webhooks, wid));
        }
        match inner.ping(&current, uid).await {
            PingOutcome::Answered(code) => echoed = code,
            PingOutcome::Failed(text) => return Err(message(StatusCode::BAD_REQUEST, text)),
        }
    }
    let json = {
        let mut state = inner.state.lock();
        let Some(sub) = state.subscriptions.get_mut(&sid) else {
            return Err(not_found(wid, sid));
        };
        if sub.enabled != enabled {
            sub.enabled = enabled;
            sub.updated_at = Some(Utc::now());
        }
        if sub.validated_at.is_none() && echoed.as_deref() == Some(sub.validation_code.as_str()) {
            sub.validated_at = Some(Utc::now());
        }
        if sub.deliverable() {
            sub.requeue_failed();
        }
        sub.to_json(None)
    };
    inner.wake(sid);
    Ok(ok(json))
}

async fn remove(
    State(app): State<App>,
    Path((wid, sid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        let wid = parse_id(&wid, "workspace")?;
        let sid = parse_id(&sid, "subscription")?;
        let (uid, admin) = app.authorize(&headers, wid)?;
        app.visible(wid, sid, uid, admin)?;
        let removed = app.hub.inner.state.lock().subscriptions.remove(&sid);
        let Some(sub) = removed else {
            return Err(not_found(wid, sid));
        };
        app.hub.inner.forget_worker(sid);
        tracing::info!(
            workspace_id = wid,
            subscription_id = sid,
            "webhook subscription deleted"
        );
        Ok(ok(sub.to_json(Some(Utc::now()))))
    })();
    finish(result)
}

async fn events(
    State(app): State<App>,
    Path((wid, sid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        let wid = parse_id(&wid, "workspace")?;
        let sid = parse_id(&sid, "subscription")?;
        let (uid, admin) = app.authorize(&headers, wid)?;
        let sub = app.visible(wid, sid, uid, admin)?;
        Ok::<_, Rejection>(ok(Value::Array(
            sub.events.iter().map(|e| e.log_json()).collect(),
        )))
    })();
    finish(result)
}

async fn ping(
    State(app): State<App>,
    Path((wid, sid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match ping_inner(&app, &wid, &sid, &headers).await {
        Ok(resp) => resp,
        Err(rejection) => rejection.into_response(),
    }
}

async fn ping_inner(
    app: &App,
    wid: &str,
    sid: &str,
    headers: &HeaderMap,
) -> Result<Response, Rejection> {
    let wid = parse_id(wid, "workspace")?;
    let sid = parse_id(sid, "subscription")?;
    let (uid, admin) = app.authorize(headers, wid)?;
    let current = app.visible(wid, sid, uid, admin)?;
    let inner = &app.hub.inner;
    let echoed = match inner.ping(&current, uid).await {
        PingOutcome::Answered(echoed) => echoed,
        PingOutcome::Failed(text) => return Err(message(StatusCode::BAD_REQUEST, text)),
    };
    {
        let mut state = inner.state.lock();
        if let Some(sub) = state.subscriptions.get_mut(&sid) {
            if sub.validated_at.is_none() && echoed.as_deref() == Some(sub.validation_code.as_str())
            {
                sub.validated_at = Some(Utc::now());
            }
            if sub.deliverable() {
                sub.requeue_failed();
            }
        }
    }
    inner.wake(sid);
    Ok(ok(json!({"status": "OK"})))
}

async fn validate(
    State(app): State<App>,
    Path((wid, sid, code)): Path<(String, String, String)>,
) -> Response {
    let unknown = || {
        message(
            StatusCode::BAD_REQUEST,
            format!(
                "subscription {sid} for workspace {wid} and validation code '{code}' was not found"
            ),
        )
    };
    let (Ok(wid_n), Ok(sid_n)) = (wid.parse::<i64>(), sid.parse::<i64>()) else {
        return unknown().into_response();
    };
    {
        let mut state = app.hub.inner.state.lock();
        let Some(sub) = state.subscriptions.get_mut(&sid_n).filter(|s| {
            s.workspace_id == wid_n
                && bool::from(s.validation_code.as_bytes().ct_eq(code.as_bytes()))
        }) else {
            return unknown().into_response();
        };
        if sub.validated_at.is_some() {
            return message(
                StatusCode::BAD_REQUEST,
                format!("subscription {sid_n} has already been validated"),
            )
            .into_response();
        }
        sub.validated_at = Some(Utc::now());
        if sub.deliverable() {
            sub.requeue_failed();
        }
    }
    app.hub.inner.wake(sid_n);
    ok(Value::String("OK".to_owned()))
}
