//! The hub: subscriptions, their event logs, fan-out of [`Change`]s and background delivery.
//!
//! Decisions on points the reference leaves UNCONFIRMED (chosen to be defensive):
//! - Each event gets `1 + retry_backoff_ms.len()` attempts, spaced by the backoff schedule. After
//!   the last one it is marked `failed`, kept, and the subscription keeps `has_pending_events`.
//! - Failed events get a fresh round of attempts when the subscription is re-enabled, validated,
//!   updated or successfully pinged, and when a snapshot is imported (a restart); events created while it was deliverable but not yet sent
//!   when it was disabled wait (paused) and resume on re-enable. No events are created for a
//!   subscription that is disabled or not validated at the time of the change.
//! - Per subscription, events are attempted strictly in creation order (a failing event blocks
//!   later ones until it is delivered or marked failed); requeued failed events go first again.
//! - Event logs keep events for `event_retention_secs` (default one week, like Toggl's v8 doc)
//!   and at most `max_events_per_subscription`; the oldest are dropped first, with a warning
//!   when one was undelivered.
//! - A non-admin subscription owner gets no time entry events about other users' entries
//!   (reference 5.2), and nothing at all once they lose access to the workspace.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::model::{Attempt, EventRecord, EventStatus, Subscription, nanos};
use super::signature::{SIGNATURE_HEADER, sign};
use super::{Change, WebhookAccess};

/// How the hub delivers events. Durations are milliseconds so tests can use seconds, not hours.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Share (0.0..=1.0) of event delivery attempts dropped before sending; a dropped attempt is
    /// recorded as failed and retried like any other failure. Pings are never dropped.
    pub drop_share: f64,
    /// Extra delay added before every event delivery attempt.
    pub delivery_delay_ms: u64,
    /// Waits between attempts of one event; the number of attempts is `len() + 1`.
    pub retry_backoff_ms: Vec<u64>,
    /// Timeout of one outbound request (event delivery or ping), including reading the answer.
    pub request_timeout_ms: u64,
    /// Public base URL of the sandbox (`http://127.0.0.1:PORT`), used to build
    /// `validation_code_url`; usually set after bind with [`Hub::set_base_url`].
    pub base_url: String,
    /// Seed of the RNG behind secrets, validation codes and fault injection.
    pub rng_seed: u64,
    /// How long events stay in a subscription's event log.
    pub event_retention_secs: u64,
    /// At most this many events per subscription's event log.
    pub max_events_per_subscription: usize,
    /// Capacity of the queue between [`Hub::publish`] and the fan-out task; when full, changes
    /// are dropped with a warning rather than blocking the Track API.
    pub queue_capacity: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            drop_share: 0.0,
            delivery_delay_ms: 0,
            retry_backoff_ms: vec![1_000, 2_000, 4_000, 8_000, 16_000],
            request_timeout_ms: 5_000,
            base_url: "http://127.0.0.1".to_owned(),
            rng_seed: 0x7066_6c67,
            event_retention_secs: 7 * 24 * 3600,
            max_events_per_subscription: 10_000,
            queue_capacity: 10_000,
        }
    }
}

/// Why a `--state` snapshot could not be loaded into the hub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The JSON does not have the shape [`Hub::export_state`] writes.
    #[error("invalid webhooks state")]
    Invalid(#[from] serde_json::Error),
    /// The snapshot was written by an unknown, newer format version.
    #[error("unsupported webhooks state version {0}")]
    Version(u64),
}

const STATE_VERSION: u64 = 1;
/// Ids above 2^31 on purpose: clients must treat ids as int64 (reference 3).
const FIRST_SUBSCRIPTION_ID: i64 = 2_200_000_001;
/// Real event ids are around 8e15 (reference 3).
const FIRST_EVENT_ID: i64 = 8_100_000_000_000_001;

/// Where a fresh hub starts numbering events: above [`FIRST_EVENT_ID`] by 100 per millisecond
/// since the epoch. Toggl's event ids are unique for all time; a sandbox restarted without a
/// state file must not reuse the ids of its previous run, or a receiver with a persistent store
/// would (rightly) drop the new events as replays.
fn fresh_first_event_id() -> i64 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    FIRST_EVENT_ID.saturating_add(millis.saturating_mul(100))
}
/// Attempts kept per event in the log, so a long-failing event cannot grow without bound.
const MAX_ATTEMPTS_LOGGED: usize = 100;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HubState {
    pub next_subscription_id: i64,
    pub next_event_id: i64,
    pub subscriptions: BTreeMap<i64, Subscription>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u64,
    next_subscription_id: i64,
    next_event_id: i64,
    subscriptions: Vec<Subscription>,
}

/// A change waiting for fan-out, with the subscriptions that matched when it was published.
struct Queued {
    change: Change,
    /// `(subscription_id, owner user_id)`.
    candidates: Vec<(i64, i64)>,
    at: DateTime<Utc>,
}

struct Worker {
    notify: Arc<Notify>,
    join: JoinHandle<()>,
}

/// The Webhooks API v1 engine: shared by the router and the Track API (through [`Hub::publish`]).
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: HubConfig,
    base_url: RwLock<String>,
    pub(crate) state: Mutex<HubState>,
    rng: Mutex<ChaCha8Rng>,
    http: reqwest::Client,
    pub(crate) access: RwLock<Option<Arc<dyn WebhookAccess>>>,
    changes_tx: mpsc::Sender<Queued>,
    changes_rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    fanout: Mutex<Option<JoinHandle<()>>>,
    workers: Mutex<HashMap<i64, Worker>>,
    shutdown_tx: watch::Sender<bool>,
    dropped_changes: AtomicU64,
}

/// What a ping to a callback URL produced.
pub(crate) enum PingOutcome {
    /// 2xx; carries the `validation_code` the endpoint echoed, if any.
    Answered(Option<String>),
    /// Non-2xx or transport failure; carries Toggl's 400 message.
    Failed(String),
}

impl Hub {
    /// A hub with no subscriptions. Background tasks start on first use inside a Tokio runtime.
    pub fn new(config: HubConfig) -> Arc<Hub> {
        let (changes_tx, changes_rx) = mpsc::channel(config.queue_capacity.max(1));
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "toggl-connect-sandbox-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a rustls client without custom roots always builds");
        let inner = Arc::new(Inner {
            base_url: RwLock::new(config.base_url.clone()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.rng_seed)),
            config,
            state: Mutex::new(HubState {
                next_subscription_id: FIRST_SUBSCRIPTION_ID,
                next_event_id: fresh_first_event_id(),
                subscriptions: BTreeMap::new(),
            }),
            http,
            access: RwLock::new(None),
            changes_tx,
            changes_rx: Mutex::new(Some(changes_rx)),
            fanout: Mutex::new(None),
            workers: Mutex::new(HashMap::new()),
            shutdown_tx: watch::channel(false).0,
            dropped_changes: AtomicU64::new(0),
        });
        inner.ensure_fanout();
        Arc::new(Hub { inner })
    }

    /// Sets the public base URL (`http://127.0.0.1:PORT`) used in `validation_code_url`.
    pub fn set_base_url(&self, base_url: impl Into<String>) {
        *self.inner.base_url.write() = base_url.into().trim_end_matches('/').to_owned();
    }

    /// The public base URL currently used in `validation_code_url`.
    pub fn base_url(&self) -> String {
        self.inner.base_url.read().clone()
    }

    /// Queues a change for fan-out. Never blocks and never fails the caller: when the queue is
    /// full the change is dropped with a warning (see [`Hub::dropped_changes`]).
    ///
    /// The subscriptions that get an event are those enabled, validated and matching *now*;
    /// permissions and delivery happen later in background tasks. Only the hub's own short lock
    /// is taken here, so the caller may hold its state lock.
    pub fn publish(&self, change: Change) {
        self.inner.ensure_fanout();
        let candidates = self.inner.candidates(&change);
        if candidates.is_empty() {
            return;
        }
        let queued = Queued {
            change,
            candidates,
            at: Utc::now(),
        };
        if let Err(err) = self.inner.changes_tx.try_send(queued) {
            self.inner.dropped_changes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason = %err, "webhook change dropped: fan-out queue unavailable");
        }
    }

    /// How many changes [`Hub::publish`] had to drop because the queue was full or closed.
    pub fn dropped_changes(&self) -> u64 {
        self.inner.dropped_changes.load(Ordering::Relaxed)
    }

    /// Subscriptions (with secrets, validation codes and event logs) as JSON for `--state`.
    pub fn export_state(&self) -> Value {
        let state = self.inner.state.lock();
        let snapshot = Snapshot {
            version: STATE_VERSION,
            next_subscription_id: state.next_subscription_id,
            next_event_id: state.next_event_id,
            subscriptions: state.subscriptions.values().cloned().collect(),
        };
        serde_json::to_value(snapshot).expect("the snapshot has string keys only")
    }

    /// Replaces all subscriptions with a snapshot from [`Hub::export_state`]; undelivered events
    /// (failed ones included) are retried once a runtime is available.
    pub fn import_state(&self, state: Value) -> Result<(), StateError> {
        let version = state.get("version").and_then(Value::as_u64).unwrap_or(0);
        if version != STATE_VERSION {
            return Err(StateError::Version(version));
        }
        let snapshot: Snapshot = serde_json::from_value(state)?;
        let ids: Vec<i64> = {
            let mut st = self.inner.state.lock();
            st.next_subscription_id = snapshot.next_subscription_id.max(FIRST_SUBSCRIPTION_ID);
            st.next_event_id = snapshot.next_event_id.max(FIRST_EVENT_ID);
            st.subscriptions = snapshot
                .subscriptions
                .into_iter()
                .map(|mut s| {
                    // A restart is a fresh chance for events that ran out of attempts.
                    if s.deliverable() {
                        s.requeue_failed();
                    }
                    (s.subscription_id, s)
                })
                .collect();
            st.subscriptions.keys().copied().collect()
        };
        for id in ids {
            self.inner.wake(id);
        }
        Ok(())
    }

    /// Stops the fan-out and delivery tasks and waits for them; in-flight attempts are abandoned
    /// and their events stay pending (so a snapshot taken afterwards retries them).
    pub async fn shutdown(&self) {
        self.inner.shutdown_tx.send_replace(true);
        let mut joins: Vec<JoinHandle<()>> = self
            .inner
            .workers
            .lock()
            .drain()
            .map(|(_, w)| w.join)
            .collect();
        joins.extend(self.inner.fanout.lock().take());
        for join in joins {
            if let Err(err) = join.await {
                tracing::warn!(error = %err, "webhook task ended abnormally");
            }
        }
    }
}

enum Step {
    Gone,
    Idle,
    Wait(Duration),
    Deliver {
        event: Box<EventRecord>,
        url: String,
        secret: String,
    },
}

impl Inner {
    fn is_shut_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// Starts the fan-out task on first use inside a runtime, then resumes delivery for every
    /// subscription with undelivered events (e.g. imported before the runtime existed).
    pub(crate) fn ensure_fanout(self: &Arc<Self>) {
        if self.is_shut_down() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut fanout = self.fanout.lock();
            if fanout.is_some() {
                return;
            }
            let Some(mut rx) = self.changes_rx.lock().take() else {
                return;
            };
            let inner = Arc::clone(self);
            let mut shutdown = self.shutdown_tx.subscribe();
            *fanout = Some(runtime.spawn(async move {
                loop {
                    tokio::select! {
                        queued = rx.recv() => match queued {
                            Some(queued) => inner.fan_out(queued),
                            None => return,
                        },
                        _ = shutdown.changed() => return,
                    }
                }
            }));
        }
        let pending: Vec<i64> = self
            .state
            .lock()
            .subscriptions
            .values()
            .filter(|s| s.has_pending_events())
            .map(|s| s.subscription_id)
            .collect();
        for sid in pending {
            self.wake(sid);
        }
    }

    /// Starts the subscription's delivery task if needed and tells it to look at its log.
    pub(crate) fn wake(self: &Arc<Self>, subscription_id: i64) {
        self.ensure_fanout();
        if self.is_shut_down() {
            return;
        }
        let mut workers = self.workers.lock();
        if let Some(worker) = workers.get(&subscription_id)
            && !worker.join.is_finished()
        {
            worker.notify.notify_one();
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                subscription_id,
                "no tokio runtime: delivery starts on next use"
            );
            return;
        };
        let notify = Arc::new(Notify::new());
        notify.notify_one();
        let join = runtime.spawn(Arc::clone(self).run_worker(
            subscription_id,
            Arc::clone(&notify),
            self.shutdown_tx.subscribe(),
        ));
        workers.insert(subscription_id, Worker { notify, join });
    }

    /// Lets a deleted subscription's delivery task notice and end.
    pub(crate) fn forget_worker(&self, subscription_id: i64) {
        if let Some(worker) = self.workers.lock().remove(&subscription_id) {
            worker.notify.notify_one();
        }
    }

    pub(crate) fn random_token(&self, len: usize, alphabet: &[u8]) -> String {
        let mut rng = self.rng.lock();
        (0..len)
            .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
            .collect()
    }

    pub(crate) fn validation_code_url(
        &self,
        workspace_id: i64,
        subscription_id: i64,
        code: &str,
    ) -> String {
        format!(
            "{}/webhooks/api/v1/validate/{workspace_id}/{subscription_id}/{code}",
            self.base_url.read()
        )
    }

    fn candidates(&self, change: &Change) -> Vec<(i64, i64)> {
        let action = change.action.as_str();
        let state = self.state.lock();
        state
            .subscriptions
            .values()
            .filter(|s| {
                s.workspace_id == change.workspace_id
                    && s.deliverable()
                    && s.matches(change.entity, action)
            })
            .map(|s| (s.subscription_id, s.user_id))
            .collect()
    }

    fn fan_out(self: &Arc<Self>, queued: Queued) {
        let Queued {
            change,
            candidates,
            at,
        } = queued;
        let change = &change;
        // Asked outside our lock: the access implementation may take the Track API's state lock.
        let access = self.access.read().clone();
        let allowed: Vec<i64> = candidates
            .into_iter()
            .filter(|&(_, owner)| permitted(access.as_deref(), owner, change))
            .map(|(sid, _)| sid)
            .collect();
        let metadata = metadata(change);
        let mut woken = Vec::new();
        {
            let mut state = self.state.lock();
            let state = &mut *state;
            for sid in allowed {
                // A subscription disabled since the change still gets the event; it waits paused.
                let Some(sub) = state.subscriptions.get_mut(&sid) else {
                    continue;
                };
                let event_id = state.next_event_id;
                state.next_event_id += 1;
                sub.events.push_back(EventRecord {
                    event_id,
                    created_at: at,
                    creator_id: change.creator_id,
                    metadata: metadata.clone(),
                    payload: change.payload.clone(),
                    status: EventStatus::Pending,
                    attempts: Vec::new(),
                    round_attempts: 0,
                    next_attempt_at: None,
                    delivered_at: None,
                });
                self.prune(sub, Utc::now());
                woken.push(sid);
            }
        }
        for sid in woken {
            self.wake(sid);
        }
    }

    fn prune(&self, sub: &mut Subscription, now: DateTime<Utc>) {
        let retention = chrono::Duration::seconds(
            i64::try_from(self.config.event_retention_secs).unwrap_or(i64::MAX / 1_000_000),
        );
        let max = self.config.max_events_per_subscription.max(1);
        while let Some(front) = sub.events.front() {
            let expired = now.signed_duration_since(front.created_at) > retention;
            if !expired && sub.events.len() <= max {
                break;
            }
            if front.status != EventStatus::Delivered {
                tracing::warn!(
                    subscription_id = sub.subscription_id,
                    event_id = front.event_id,
                    "undelivered webhook event dropped from the event log"
                );
            }
            sub.events.pop_front();
        }
    }

    fn next_step(&self, subscription_id: i64) -> Step {
        let mut state = self.state.lock();
        let Some(sub) = state.subscriptions.get_mut(&subscription_id) else {
            return Step::Gone;
        };
        let now = Utc::now();
        self.prune(sub, now);
        if !sub.deliverable() {
            return Step::Idle;
        }
        let Some(event) = sub.events.iter().find(|e| e.status == EventStatus::Pending) else {
            return Step::Idle;
        };
        if let Some(due) = event.next_attempt_at
            && due > now
        {
            return Step::Wait(due.signed_duration_since(now).to_std().unwrap_or_default());
        }
        Step::Deliver {
            event: Box::new(event.clone()),
            url: sub.url_callback.clone(),
            secret: sub.secret.clone(),
        }
    }

    async fn run_worker(
        self: Arc<Self>,
        subscription_id: i64,
        notify: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.next_step(subscription_id) {
                Step::Gone => return,
                Step::Idle => tokio::select! {
                    () = notify.notified() => {}
                    _ = shutdown.changed() => return,
                },
                Step::Wait(wait) => tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = notify.notified() => {}
                    _ = shutdown.changed() => return,
                },
                Step::Deliver { event, url, secret } => {
                    let attempt = tokio::select! {
                        attempt = self.attempt(subscription_id, &event, &url, &secret) => attempt,
                        _ = shutdown.changed() => return,
                    };
                    self.record(subscription_id, event.event_id, attempt);
                }
            }
        }
    }

    async fn attempt(
        &self,
        subscription_id: i64,
        event: &EventRecord,
        url: &str,
        secret: &str,
    ) -> Attempt {
        if self.config.delivery_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.delivery_delay_ms)).await;
        }
        let attempted_at = Utc::now();
        let dropped =
            self.config.drop_share > 0.0 && self.rng.lock().r#gen::<f64>() < self.config.drop_share;
        if dropped {
            tracing::debug!(
                subscription_id,
                event_id = event.event_id,
                "delivery dropped by fault injection"
            );
            return Attempt {
                attempted_at,
                status_code: None,
                error: Some("delivery dropped by fault injection".to_owned()),
                duration_ms: 0,
            };
        }
        let body = serde_json::to_vec(&event.envelope(subscription_id, url, attempted_at))
            .expect("a json value always serializes");
        let started = Instant::now();
        let result = self.post(url, secret, body).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status_code, error) = match result {
            Ok((status, _)) if status.is_success() => (Some(status.as_u16()), None),
            Ok((status, _)) => (
                Some(status.as_u16()),
                Some(format!(
                    "URL endpoint {url} responded with status {} instead of 200",
                    status.as_u16()
                )),
            ),
            Err(err) => (
                None,
                Some(format!(
                    "URL endpoint {url} request failed with error: {err}"
                )),
            ),
        };
        tracing::debug!(
            subscription_id,
            event_id = event.event_id,
            status_code,
            ok = error.is_none(),
            "webhook delivery attempt"
        );
        Attempt {
            attempted_at,
            status_code,
            error,
            duration_ms,
        }
    }

    fn record(&self, subscription_id: i64, event_id: i64, attempt: Attempt) {
        let mut state = self.state.lock();
        let Some(sub) = state.subscriptions.get_mut(&subscription_id) else {
            return;
        };
        let Some(event) = sub.events.iter_mut().find(|e| e.event_id == event_id) else {
            return;
        };
        let now = Utc::now();
        let ok = attempt.error.is_none();
        event.attempts.push(attempt);
        if event.attempts.len() > MAX_ATTEMPTS_LOGGED {
            let excess = event.attempts.len() - MAX_ATTEMPTS_LOGGED;
            event.attempts.drain(..excess);
        }
        if ok {
            event.status = EventStatus::Delivered;
            event.delivered_at = Some(now);
            event.next_attempt_at = None;
            return;
        }
        event.round_attempts += 1;
        let backoff = &self.config.retry_backoff_ms;
        match backoff.get(event.round_attempts as usize - 1) {
            Some(&wait_ms) => {
                let wait =
                    chrono::Duration::milliseconds(i64::try_from(wait_ms).unwrap_or(i64::MAX / 2));
                // A huge configured wait means "not before the end of time", not a panic.
                event.next_attempt_at = Some(
                    now.checked_add_signed(wait)
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                );
            }
            None => {
                event.status = EventStatus::Failed;
                event.next_attempt_at = None;
                tracing::warn!(
                    subscription_id,
                    event_id,
                    attempts = event.round_attempts,
                    "webhook event failed after all attempts"
                );
            }
        }
    }

    /// POSTs a signed body; returns the status and the answer body.
    async fn post(
        &self,
        url: &str,
        secret: &str,
        body: Vec<u8>,
    ) -> Result<(http::StatusCode, bytes::Bytes), String> {
        let signature = sign(secret, &body);
        let response = self
            .http
            .post(url)
            .timeout(Duration::from_millis(self.config.request_timeout_ms))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let answer = response.bytes().await.map_err(|e| error_chain(&e))?;
        Ok((status, answer))
    }

    /// Sends a PING (with the validation code while the subscription is not validated).
    pub(crate) async fn ping(&self, sub: &Subscription, creator_id: i64) -> PingOutcome {
        let now = nanos(Utc::now());
        let mut envelope = json!({
            "event_id": 0,
            "created_at": now,
            "creator_id": creator_id,
            "metadata": {"request_type": "POST", "event_user_id": creator_id},
            "payload": "ping",
            "subscription_id": sub.subscription_id,
            "timestamp": now,
            "url_callback": sub.url_callback,
        });
        if sub.validated_at.is_none() {
            envelope["validation_code"] = json!(sub.validation_code);
            envelope["validation_code_url"] = json!(self.validation_code_url(
                sub.workspace_id,
                sub.subscription_id,
                &sub.validation_code
            ));
        }
        let body = serde_json::to_vec(&envelope).expect("a json value always serializes");
        let url = &sub.url_callback;
        match self.post(url, &sub.secret, body).await {
            Ok((status, answer)) if status.is_success() => {
                let echoed = serde_json::from_slice::<Value>(&answer).ok().and_then(|v| {
                    v.get("validation_code")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                PingOutcome::Answered(echoed)
            }
            Ok((status, _)) => PingOutcome::Failed(format!(
                "URL endpoint {url} responded with status {} instead of 200",
                status.as_u16()
            )),
            Err(err) => PingOutcome::Failed(format!(
                "URL endpoint {url} request failed with error: {err}"
            )),
        }
    }
}

/// Whether the subscription owner may see this change (reference 5.2: events follow the
/// creator's permissions). Without an access implementation, only the owner's own time entries.
fn permitted(access: Option<&dyn WebhookAccess>, owner: i64, change: &Change) -> bool {
    let own_or_not_personal = change.entity != "time_entry" || change.model_owner_id == owner;
    match access.map(|a| a.workspace_access(owner, change.workspace_id)) {
        None | Some(Some(false)) => own_or_not_personal,
        Some(Some(true)) => true,
        Some(None) => false,
    }
}

/// Metadata of a real event: every value is a string (reference 5.4).
fn metadata(change: &Change) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_owned(), Value::String(v));
    };
    put("action", change.action.as_str().to_owned());
    put("event_user_id", change.creator_id.to_string());
    put("model", change.entity.to_owned());
    put("model_owner_id", change.model_owner_id.to_string());
    put("path", change.path.clone());
    if let Some((project_id, private)) = change.project {
        put("project_id", project_id.to_string());
        put("project_is_private", private.to_string());
    }
    put("request_body", change.request_body.clone());
    put("request_type", change.request_type.clone());
    put(
        &format!("{}_id", change.entity),
        change.entity_id.to_string(),
    );
    put("workspace_id", change.workspace_id.to_string());
    m
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
