//! The webhook receiver: `POST {callback_path}` (and the seed's per-event paths below it).
//!
//! Order of checks, and why:
//! 1. method (405) and size (413) before reading anything else, so a hostile sender cannot make
//!    us buffer more than the limit;
//! 2. the signature over the raw bytes (401, no detail, nothing stored): nothing about the body is
//!    trusted before this, so the secret is chosen by trying every known one (a handful: current
//!    and previous secret of each subscription, plus secrets of subscriptions being created, whose
//!    id we do not know yet when Toggl's validation ping arrives);
//! 3. the envelope (400);
//! 4. pings are answered by echoing `validation_code` and are not events;
//! 5. events are classified and stored durably, deduped by `event_id` (Toggl signs no timestamp,
//!    so a captured delivery can be replayed at will: the dedupe key is the replay defence), and
//!    only then answered 200. A store that cannot take the event answers 503 so Toggl redelivers.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset, Utc};
use parking_lot::RwLock;
use serde_json::{Value, json};
use toggl_connect_store::{
    Derive, Derived, EntityState, EventSource, NewEvent, NewJob, Snapshot, Store, StoreError,
};
use tokio::sync::{Notify, broadcast};

use crate::classify::{Classification, classify};
use crate::envelope::{self, Delivery, Event};
use crate::metrics::{Metrics, Rejection};
use crate::signature::{self, SIGNATURE_HEADER, SignatureError, SigningSecret};
use crate::subscriptions::PendingValidations;

/// Default largest delivery body accepted.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default path Toggl delivers to.
pub const DEFAULT_CALLBACK_PATH: &str = "/webhooks/toggl";

/// The secrets deliveries may be signed with.
#[derive(Debug, Default)]
pub struct SecretRing {
    entries: RwLock<Vec<RingEntry>>,
}

#[derive(Debug, Clone)]
struct RingEntry {
    /// `None` while the subscription is being created and Toggl has not told us its id.
    subscription_id: Option<i64>,
    secret: SigningSecret,
}

impl SecretRing {
    /// Accepts `secret` for `subscription_id` (or for a subscription being created).
    pub fn add(&self, subscription_id: Option<i64>, secret: SigningSecret) {
        let mut entries = self.entries.write();
        if !entries
            .iter()
            .any(|e| e.subscription_id == subscription_id && e.secret == secret)
        {
            entries.push(RingEntry {
                subscription_id,
                secret,
            });
        }
    }

    /// Records the id of a subscription created with `secret`.
    pub fn bind(&self, secret: &SigningSecret, subscription_id: i64) {
        for e in self.entries.write().iter_mut() {
            if e.subscription_id.is_none() && &e.secret == secret {
                e.subscription_id = Some(subscription_id);
            }
        }
    }

    /// Stops accepting every secret of `subscription_id` except `keep`.
    pub fn retain_for(&self, subscription_id: i64, keep: &[SigningSecret]) {
        self.entries
            .write()
            .retain(|e| e.subscription_id != Some(subscription_id) || keep.contains(&e.secret));
    }

    /// Forgets an unbound secret (a create that failed).
    pub fn remove_unbound(&self, secret: &SigningSecret) {
        self.entries
            .write()
            .retain(|e| !(e.subscription_id.is_none() && &e.secret == secret));
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether no secret is accepted (every delivery will be refused).
    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }

    /// [`signature::verify`] against every accepted secret, under the read lock (no copies of
    /// the secrets per delivery).
    fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<usize, SignatureError> {
        signature::verify(header, body, self.entries.read().iter().map(|e| &e.secret))
    }
}

/// Decides which jobs an event starts; the automation crate provides the real one.
pub trait JobPlanner: Send + Sync + 'static {
    /// Jobs for `event`, which fires every trigger in `classification`.
    fn plan(&self, event: &Event, classification: &Classification, envelope: &Value)
    -> Vec<NewJob>;
}

/// A stored event, announced to in-process listeners after it is durable.
#[derive(Debug, Clone)]
pub struct StoredNotice {
    /// The store's row id.
    pub id: i64,
    /// Every trigger the event fired.
    pub triggers: Vec<String>,
    /// How many jobs were enqueued with it.
    pub jobs: usize,
}

/// Configuration of the receiver.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Where Toggl delivers (`/webhooks/toggl`). Sub-paths are accepted too.
    pub callback_path: String,
    /// Largest body accepted (413 above).
    pub max_body_bytes: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            callback_path: DEFAULT_CALLBACK_PATH.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Everything a delivery handler needs.
pub struct Receiver {
    store: Store,
    secrets: Arc<SecretRing>,
    metrics: Arc<Metrics>,
    planner: Option<Arc<dyn JobPlanner>>,
    validations: Option<Arc<PendingValidations>>,
    notices: broadcast::Sender<StoredNotice>,
    jobs_wake: Option<Arc<Notify>>,
    config: ReceiverConfig,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver storing into `store`, accepting the secrets in `secrets`.
    pub fn new(store: Store, secrets: Arc<SecretRing>, config: ReceiverConfig) -> Self {
        let (notices, _) = broadcast::channel(1024);
        Self {
            store,
            secrets,
            metrics: Arc::default(),
            planner: None,
            validations: None,
            notices,
            jobs_wake: None,
            config,
        }
    }

    /// Enqueues jobs for each stored event with `planner`.
    #[must_use]
    pub fn with_planner(mut self, planner: Arc<dyn JobPlanner>) -> Self {
        self.planner = Some(planner);
        self
    }

    /// Remembers the validation URLs of pings, for the subscription manager to confirm.
    #[must_use]
    pub fn with_validations(mut self, validations: Arc<PendingValidations>) -> Self {
        self.validations = Some(validations);
        self
    }

    /// Wakes `wake` (the automation worker) whenever a stored event enqueued jobs. Cheaper than
    /// a [`Receiver::subscribe`] listener, which is woken for every event.
    #[must_use]
    pub fn with_jobs_wake(mut self, wake: Arc<Notify>) -> Self {
        self.jobs_wake = Some(wake);
        self
    }

    /// The store events go to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The receiver's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Stored events, announced after they are durable (lossy for slow listeners: the store is
    /// the record, this is only a wake-up).
    pub fn subscribe(&self) -> broadcast::Receiver<StoredNotice> {
        self.notices.subscribe()
    }

    /// Classifies and stores one verified event. Returns the row id and whether it was a duplicate.
    ///
    /// Classification needs the entity's previous state, so it runs inside the store's write
    /// transaction ([`Store::insert_event_derived`]): two deliveries for one entity are classified
    /// one after the other, and there is no separate read.
    pub async fn store_event(
        &self,
        event: Event,
        raw_envelope: &str,
        source: EventSource,
        dedupe_key: Option<String>,
    ) -> Result<(i64, bool), StoreError> {
        // The rules see the whole envelope; parse it only when there are rules to see it.
        let envelope_value = self
            .planner
            .as_ref()
            .map(|_| serde_json::from_str::<Value>(raw_envelope).unwrap_or(Value::Null));
        let entity_state = event.entity_id.is_some().then(|| EntityState {
            state: Arc::clone(&event.payload),
            at: event
                .payload
                .fields()
                .at
                .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
            offset_in_envelope: event.payload_offset,
        });
        let new_event = NewEvent {
            event_id: event.event_id,
            subscription_id: event.subscription_id,
            workspace_id: event.workspace_id,
            entity: event.entity.clone(),
            action: event.action.clone(),
            trigger: String::new(),
            entity_id: event.entity_id,
            received_at: Utc::now(),
            envelope: raw_envelope.to_owned(),
            source,
            dedupe_key,
            entity_state,
            jobs: Vec::new(),
        };
        let event_id = event.event_id;
        let derive = derivation(
            Arc::new(event),
            source,
            self.planner.clone(),
            envelope_value,
        );
        let started = Instant::now();
        let outcome = self.store.insert_event_derived(new_event, derive).await?;
        self.metrics.store_latency(started.elapsed());
        if outcome.duplicate {
            self.metrics.duplicate();
            if outcome.id == 0 {
                tracing::debug!(event_id, "version already stored by catch-up or polling");
            }
        } else {
            self.metrics.stored();
            if !outcome.job_ids.is_empty() {
                if let Some(wake) = &self.jobs_wake {
                    wake.notify_one();
                }
            }
            // Built only for someone to read it (the triggers' names are a vector of strings).
            if self.notices.receiver_count() > 0 {
                let _ = self.notices.send(StoredNotice {
                    id: outcome.id,
                    triggers: outcome.trigger.split(' ').map(str::to_owned).collect(),
                    jobs: outcome.job_ids.len(),
                });
            }
        }
        Ok((outcome.id, outcome.duplicate))
    }
}

/// What the store runs, in its write transaction, once the entity's previous state is known:
/// refuse a webhook that brings a version catch-up or polling already stored, and a catch-up or
/// polling item no newer than what a webhook already stored (one change is one event: polling
/// checks this before storing too, but a webhook may land between that check and the insert;
/// here, under the entity's lock, nothing can), else classify against the previous state and
/// plan the rules' jobs.
fn derivation(
    event: Arc<Event>,
    source: EventSource,
    planner: Option<Arc<dyn JobPlanner>>,
    envelope: Option<Value>,
) -> Derive {
    Arc::new(move |previous: Option<&Snapshot>| {
        let already = match source {
            EventSource::Webhook => {
                previous.is_some_and(|state| same_snapshot_version(state, &event.payload))
            }
            // A deletion is news even when `at` did not move.
            EventSource::Poll | EventSource::Catchup => {
                event.action != "deleted"
                    && previous.is_some_and(|state| {
                        at_not_newer(state.fields().at, event.payload.fields().at)
                    })
            }
            EventSource::Replay => false,
        };
        if already {
            return Derived::AlreadyStored;
        }
        let classification = classify(&event, previous);
        let jobs = match (&planner, &envelope) {
            (Some(planner), Some(envelope)) => planner.plan(&event, &classification, envelope),
            _ => Vec::new(),
        };
        let trigger = classification.joined();
        Derived::Store { trigger, jobs }
    })
}

/// Whether `incoming` (a webhook payload) is the version of the entity we already stored.
///
/// Catch-up and polling store what a listing returns; the webhook of the same change may arrive
/// later (Toggl retries for days). The two copies are not byte-equal (a listing has extra keys, and
/// timestamps may differ in form and precision), and `at` alone cannot decide: Toggl gives it to
/// the second, so two quick updates share it. So: same version when both have `at` and every key
/// both copies have holds the same value, timestamps compared as instants (to the second when
/// either side has no sub-second digits). A real change differs in some shared field.
pub fn same_version(stored: &Value, incoming: &Value) -> bool {
    let (Some(a), Some(b)) = (stored.as_object(), incoming.as_object()) else {
        return false;
    };
    if !(a.contains_key("at") && b.contains_key("at")) {
        return false;
    }
    b.iter()
        .all(|(k, vb)| a.get(k).is_none_or(|va| same_value(va, vb)))
}

fn same_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a.as_str(), b.as_str()) {
        (Some(x), Some(y)) => {
            match (
                chrono::DateTime::parse_from_rfc3339(x),
                chrono::DateTime::parse_from_rfc3339(y),
            ) {
                (Ok(tx), Ok(ty)) => same_instant(tx, x.contains('.'), ty, y.contains('.')),
                _ => false,
            }
        }
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() < f64::EPSILON,
            _ => false,
        },
    }
}

/// Two timestamps of one version: equal instants, or equal to the second when either is given
/// to the second only.
fn same_instant(
    x: DateTime<FixedOffset>,
    x_fractional: bool,
    y: DateTime<FixedOffset>,
    y_fractional: bool,
) -> bool {
    if x_fractional && y_fractional {
        x == y
    } else {
        x.timestamp() == y.timestamp()
    }
}

/// [`same_version`] of two snapshots, without parsing them when their `at` already differs
/// (every delivery but a repeat of the same second): `at` is one of the keys that must match.
fn same_snapshot_version(stored: &Snapshot, incoming: &Snapshot) -> bool {
    let (a, b) = (stored.fields(), incoming.fields());
    if !(a.is_object && b.is_object && a.has_at && b.has_at) {
        return false;
    }
    if let (Some(x), Some(y)) = (a.at, b.at) {
        if !same_instant(x, a.at_fractional, y, b.at_fractional) {
            return false;
        }
    }
    same_version(stored.value(), incoming.value())
}

/// Whether `stored` is at least as new as `incoming` (by `at`), so `incoming` tells nothing new.
pub fn not_newer(stored: &Value, incoming: &Value) -> bool {
    let at = |v: &Value| {
        v.get("at")
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    at_not_newer(at(stored), at(incoming))
}

fn at_not_newer(
    stored: Option<DateTime<FixedOffset>>,
    incoming: Option<DateTime<FixedOffset>>,
) -> bool {
    match (stored, incoming) {
        (Some(s), Some(i)) => s >= i,
        _ => false,
    }
}

/// The receiver's routes: the callback path (and everything below it), `/healthz`, `/metrics`.
/// Serve it with `axum::serve(listener, router(receiver))`.
pub fn router(receiver: Arc<Receiver>) -> ReceiverService {
    let trimmed = receiver.config.callback_path.trim_end_matches('/');
    let base: Arc<str> = if trimmed.is_empty() { "/" } else { trimmed }.into();
    let others = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&receiver));
    ReceiverService {
        receiver,
        base,
        others,
    }
}

/// The service [`router`] returns. Deliveries, the one path under load, are matched by hand
/// and go straight to the handler; everything else goes through an axum [`Router`]. Routing
/// every delivery through the router (path match, extensions, boxed layers) cost about 4 % of
/// the receiver's CPU at saturation (`bench/ingest/README.md`, session 6).
#[derive(Clone)]
pub struct ReceiverService {
    receiver: Arc<Receiver>,
    /// The callback path without a trailing `/`.
    base: Arc<str>,
    others: Router,
}

impl std::fmt::Debug for ReceiverService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverService")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ReceiverService {
    /// The callback path itself, or a path below it (the seed's per-event paths).
    fn is_delivery(&self, path: &str) -> bool {
        let base = &*self.base;
        path == base
            || (base != "/"
                && path.len() > base.len() + 1
                && path.starts_with(base)
                && path.as_bytes()[base.len()] == b'/')
    }
}

impl tower::Service<Request> for ReceiverService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if self.is_delivery(request.uri().path()) {
            let receiver = Arc::clone(&self.receiver);
            Box::pin(async move { Ok(deliver(State(receiver), request).await) })
        } else {
            Box::pin(tower::ServiceExt::oneshot(self.others.clone(), request))
        }
    }
}

/// What `axum::serve` needs: a service for each connection (a clone).
impl<'a, L: axum::serve::Listener> tower::Service<axum::serve::IncomingStream<'a, L>>
    for ReceiverService
{
    type Response = ReceiverService;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<ReceiverService, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: axum::serve::IncomingStream<'a, L>) -> Self::Future {
        std::future::ready(Ok(self.clone()))
    }
}

async fn healthz(State(r): State<Arc<Receiver>>) -> Response {
    match r.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "store": r.store.backend_name()})),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(r): State<Arc<Receiver>>) -> Response {
    let mut text = r.metrics.render();
    let stats = r.store.stats();
    text.push_str(&format!(
        "# HELP toggl_connect_store_commits_total Store transactions committed.\n# TYPE toggl_connect_store_commits_total counter\ntoggl_connect_store_commits_total {}\n",
        stats.commits
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn reject(r: &Receiver, why: Rejection, status: StatusCode, message: &'static str) -> Response {
    r.metrics.rejected(why);
    tracing::info!(
        reason = why.label(),
        status = status.as_u16(),
        "delivery rejected"
    );
    if message.is_empty() {
        status.into_response()
    } else {
        (status, Json(json!({"error": message}))).into_response()
    }
}

async fn deliver(State(r): State<Arc<Receiver>>, request: Request) -> Response {
    // The request taken whole and split, not through `Method` and `HeaderMap` extractors, which
    // copy the method and every header of each delivery.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    r.metrics.received();
    if parts.method != Method::POST {
        let mut resp = reject(&r, Rejection::Method, StatusCode::METHOD_NOT_ALLOWED, "");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return resp;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > r.config.max_body_bytes as u64) {
        return reject(
            &r,
            Rejection::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large",
        );
    }
    let bytes: Bytes = match axum::body::to_bytes(body, r.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            return if too_large {
                reject(
                    &r,
                    Rejection::TooLarge,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body too large",
                )
            } else {
                reject(
                    &r,
                    Rejection::Malformed,
                    StatusCode::BAD_REQUEST,
                    "could not read body",
                )
            };
        }
    };
    let sig = headers
        .get(SIGNATURE_HEADER)
        .map(axum::http::HeaderValue::as_bytes);
    if r.secrets.verify(sig, &bytes).is_err() {
        return reject(&r, Rejection::Signature, StatusCode::UNAUTHORIZED, "");
    }
    let Ok(delivery) = envelope::parse(&bytes) else {
        return reject(
            &r,
            Rejection::Malformed,
            StatusCode::BAD_REQUEST,
            "not a Toggl webhook envelope",
        );
    };
    match delivery {
        Delivery::Ping {
            subscription_id,
            validation_code,
            validation_code_url,
        } => {
            r.metrics.ping();
            if let (Some(v), Some(sid), Some(url)) =
                (&r.validations, subscription_id, validation_code_url)
            {
                v.record(sid, url);
            }
            tracing::info!(
                subscription_id,
                with_code = validation_code.is_some(),
                "validation ping answered"
            );
            match validation_code {
                Some(code) => {
                    (StatusCode::OK, Json(json!({"validation_code": code}))).into_response()
                }
                None => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
            }
        }
        Delivery::Event(event) => {
            let Ok(raw) = std::str::from_utf8(&bytes) else {
                return reject(
                    &r,
                    Rejection::Malformed,
                    StatusCode::BAD_REQUEST,
                    "body is not UTF-8",
                );
            };
            let event_id = event.event_id;
            match r.store_event(event, raw, EventSource::Webhook, None).await {
                Ok((id, duplicate)) => {
                    tracing::debug!(id, event_id, duplicate, "event acknowledged");
                    // The two possible answers, written once: every delivery gets one.
                    let body = if duplicate {
                        r#"{"stored":false,"duplicate":true}"#
                    } else {
                        r#"{"stored":true,"duplicate":false}"#
                    };
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                        .into_response()
                }
                Err(e) if e.is_unavailable() => {
                    tracing::error!(error = %e, "store unavailable: delivery refused so Toggl redelivers");
                    reject(
                        &r,
                        Rejection::Unavailable,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store unavailable",
                    )
                }
                Err(e) => {
                    tracing::error!(error = %e, "storing event failed");
                    reject(
                        &r,
                        Rejection::Unavailable,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error",
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_change_from_a_listing_and_a_webhook_is_one_version() {
        let listed = json!({"id": 1, "description": "a", "stop": "2025-01-10T09:01:00+00:00", "at": "2025-01-10T09:01:01+00:00", "permissions": null});
        let hook = json!({"id": 1, "description": "a", "stop": "2025-01-10T09:01:00Z", "at": "2025-01-10T09:01:01.948Z"});
        assert!(same_version(&listed, &hook));
        // A second update within the same second differs in content: a new version.
        let renamed = json!({"id": 1, "description": "b", "stop": "2025-01-10T09:01:00Z", "at": "2025-01-10T09:01:01Z"});
        assert!(!same_version(&hook, &renamed));
        let restarted =
            json!({"id": 1, "description": "a", "stop": null, "at": "2025-01-10T09:01:01Z"});
        assert!(!same_version(&listed, &restarted));
        assert!(!same_version(&json!({"id": 1}), &hook), "no at, no verdict");
    }

    async fn service(callback_path: &str) -> ReceiverService {
        let store = Store::open(
            "sqlite::memory:",
            toggl_connect_store::StoreOptions::default(),
        )
        .await
        .expect("store");
        let config = ReceiverConfig {
            callback_path: callback_path.into(),
            ..ReceiverConfig::default()
        };
        router(Arc::new(Receiver::new(store, Arc::default(), config)))
    }

    #[tokio::test]
    async fn deliveries_are_the_callback_path_and_the_paths_below_it() {
        for callback in ["/webhooks/toggl", "/webhooks/toggl/"] {
            let s = service(callback).await;
            for path in [
                "/webhooks/toggl",
                "/webhooks/toggl/time_entry_created",
                "/webhooks/toggl/a/b",
            ] {
                assert!(s.is_delivery(path), "{callback}: {path}");
            }
            for path in [
                "/webhooks/toggl/",
                "/webhooks/togglx",
                "/webhooks/tog",
                "/webhooks",
                "/healthz",
                "/",
            ] {
                assert!(!s.is_delivery(path), "{callback}: {path}");
            }
        }
        let root = service("/").await;
        assert!(root.is_delivery("/"));
        assert!(
            !root.is_delivery("/healthz"),
            "the other routes stay reachable"
        );
    }

    /// The snapshots' shortcut (a differing `at` decides without parsing) gives the same answer
    /// as comparing the parsed values, whichever way `at` is written.
    #[test]
    fn snapshot_versions_compare_as_their_values_do() {
        let states = [
            json!({"id": 1, "description": "a", "at": "2025-01-10T09:01:01+00:00"}),
            json!({"id": 1, "description": "a", "at": "2025-01-10T09:01:01.948Z"}),
            json!({"id": 1, "description": "a", "at": "2025-01-10T09:01:01.5Z"}),
            json!({"id": 1, "description": "b", "at": "2025-01-10T09:01:01Z"}),
            json!({"id": 1, "description": "a", "at": "2025-01-10T10:01:01+01:00"}),
            json!({"id": 1, "description": "a", "at": "2025-01-10T09:01:02Z"}),
            json!({"id": 1, "description": "a", "at": "yesterday"}),
            json!({"id": 1, "description": "a", "at": 1_736_499_661}),
            json!({"id": 1, "description": "a", "at": null}),
            json!({"id": 1, "description": "a"}),
            json!(["at"]),
        ];
        for a in &states {
            for b in &states {
                let (sa, sb) = (
                    Snapshot::from_value(a.clone()),
                    Snapshot::from_value(b.clone()),
                );
                assert_eq!(
                    same_snapshot_version(&sa, &sb),
                    same_version(a, b),
                    "{a} / {b}"
                );
            }
        }
    }

    fn event(action: &str, at: &str) -> Arc<Event> {
        Arc::new(crate::envelope::test_time_entry_event(
            action,
            json!({"id": 7, "description": "a", "at": at}),
            None,
        ))
    }

    fn refused(derive: &Derive, previous: &Value) -> bool {
        let previous = Snapshot::from_value(previous.clone());
        matches!(derive(Some(&previous)), Derived::AlreadyStored)
    }

    /// Catch-up and polling check what is stored before they store an item, but a webhook can
    /// land in between; the derivation, run under the entity's lock, decides for good.
    #[test]
    fn a_listed_item_no_newer_than_the_stored_state_is_refused_unless_a_deletion() {
        let stored = json!({"id": 7, "description": "a", "at": "2025-01-10T09:01:01Z"});
        for source in [EventSource::Catchup, EventSource::Poll] {
            let same = derivation(event("updated", "2025-01-10T09:01:01Z"), source, None, None);
            assert!(refused(&same, &stored), "{source:?}: same version");
            let older = derivation(event("updated", "2025-01-10T09:00:00Z"), source, None, None);
            assert!(refused(&older, &stored), "{source:?}: older");
            let newer = derivation(event("updated", "2025-01-10T09:02:00Z"), source, None, None);
            assert!(!refused(&newer, &stored), "{source:?}: newer is stored");
            assert!(
                matches!(newer(None), Derived::Store { .. }),
                "nothing stored yet"
            );
            let deleted = derivation(event("deleted", "2025-01-10T09:01:01Z"), source, None, None);
            assert!(
                !refused(&deleted, &stored),
                "{source:?}: a deletion is news"
            );
        }
        let replay = derivation(
            event("updated", "2025-01-10T09:01:01Z"),
            EventSource::Replay,
            None,
            None,
        );
        assert!(!refused(&replay, &stored), "a replay runs again on purpose");
    }
}
