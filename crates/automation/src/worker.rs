//! The worker: claims jobs from the store, runs one step each, records what happened.
//!
//! Delivery is at-least-once inside (a job whose worker died is claimed again when its lease
//! expires) and exactly-once in effect outside:
//! - a step that succeeded is never run again: its result and the next step's job are written in
//!   one transaction ([`Store::complete_job_with_followups`]);
//! - before a non-idempotent request (a create) leaves, the job is durably marked sent
//!   ([`Store::mark_sent`]). A job found marked on a later attempt (the previous one crashed, or
//!   the answer never came) first lists and matches ([`crate::lookup`]): if the record exists, that
//!   is the step's result, and nothing is sent again;
//! - retryable failures back off exponentially with jitter up to `max_attempts`, then dead-letter
//!   with the last error; fatal failures (400, 401/403, 404, paid-feature 402, bad parameters)
//!   dead-letter at once;
//! - when the token's quota is spent, a job does not wait holding its lease: it records an
//!   attempt `waiting_quota` and is rescheduled at the reset. Quota waits do not count against
//!   `max_attempts`.
//!
//! Steps are enqueued one at a time: only step 0 at event time, step k+1 when step k completes,
//! so later steps can template over earlier results (`{{steps.create_task.id}}`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use toggl_connect_client::{ApiRequest, Client, ClientError, QuotaScope};
use toggl_connect_definition::{Connector, Operation, Params, RenderedRequest};
use toggl_connect_store::{AttemptOutcome, AttemptRecord, Job, NewJob, Store, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::lookup::{LookupError, LookupPlan};
use crate::rules::{RunPlan, StepSpec, StepTarget};
use crate::template::Template;
use toggl_connect_client::api_request;

/// Header carrying the HMAC-SHA256 signature of an `http` step's body (Toggl's scheme).
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature-256";
/// Header carrying the job id of an `http` step, so the receiver can drop a redelivery.
pub const DELIVERY_HEADER: &str = "X-Toggl-Connect-Delivery";

/// A worker that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The HTTP client for `http` steps could not be built (TLS backend unavailable).
    #[error("cannot build the http client for http steps")]
    HttpClient(#[source] reqwest::Error),
}

/// Exponential backoff with jitter for retryable failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure (before jitter).
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            max: Duration::from_secs(15 * 60),
        }
    }
}

impl Backoff {
    /// The delay after `failures` failures (1 = the first): `base * 2^(failures-1)`, capped at
    /// `max`, with "equal jitter" (half fixed, half random) so retries of many jobs spread out.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)));
        let capped = exp.min(self.max);
        let half = capped / 2;
        half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    }
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Lease owner name; unique per process (e.g. `hostname-pid`).
    pub worker_id: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Lease per claim; renewed every third of it while a step runs.
    pub lease: Duration,
    /// Failed attempts (quota waits excluded) before a job is dead-lettered.
    pub max_attempts: u32,
    /// Delay between retries.
    pub backoff: Backoff,
    /// Longest sleep between looks at the store when nobody wakes the worker (rescheduled jobs
    /// become due without a wake-up).
    pub poll_interval: Duration,
    /// Timeout of one `http` step request.
    pub http_timeout: Duration,
    /// Where `secret_env` names are looked up (the process environment by default).
    pub secrets: SecretSource,
}

/// Reads `http` step signing secrets by variable name.
#[derive(Clone)]
pub struct SecretSource(Arc<SecretFn>);

type SecretFn = dyn Fn(&str) -> Option<String> + Send + Sync;

impl SecretSource {
    /// Secrets from the process environment.
    pub fn env() -> Self {
        Self(Arc::new(|name| std::env::var(name).ok()))
    }

    /// Secrets from a function (tests, or a secret store).
    pub fn from_fn(f: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The secret named `name`, when set and not empty.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|s| !s.is_empty())
    }
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSource")
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", std::process::id()),
            concurrency: 4,
            lease: Duration::from_secs(120),
            max_attempts: 8,
            backoff: Backoff::default(),
            poll_interval: Duration::from_millis(500),
            http_timeout: Duration::from_secs(30),
            secrets: SecretSource::env(),
        }
    }
}

/// The automation worker. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    client: Client,
    connector: Arc<Connector>,
    config: WorkerConfig,
    notify: Arc<Notify>,
    http: reqwest::Client,
}

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    Done { result: Value },
    Retry { error: String },
    Fatal { error: String },
    WaitQuota { until: DateTime<Utc>, error: String },
    LeaseLost,
}

/// What an attempt did, for its record.
#[derive(Debug, Default)]
struct Trace {
    request: Option<String>,
    status: Option<u16>,
}

impl Worker {
    /// A worker over `store`, sending through `client` (whose quota budget all work of the token
    /// shares), rendering with `connector`.
    ///
    /// Jobs carry their rule's steps ([`RunPlan`]), so the worker needs no rule set: a run
    /// finishes with the steps it started with even if the rules are edited meanwhile.
    pub fn new(
        store: Store,
        client: Client,
        connector: Arc<Connector>,
        config: WorkerConfig,
    ) -> Result<Self, WorkerError> {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("toggl-connect/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WorkerError::HttpClient)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                client,
                connector,
                config,
                notify: Arc::new(Notify::new()),
                http,
            }),
        })
    }

    /// Call `notify_one()` on this after storing jobs: the worker claims at once instead of at
    /// its next poll.
    pub fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.notify)
    }

    /// Runs until `shutdown` is cancelled; then claims nothing more and waits for the steps in
    /// flight to finish (each is bounded by the client's and the http step's timeouts).
    pub fn run(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move { self.run_loop(shutdown).await })
    }

    async fn run_loop(self, shutdown: CancellationToken) {
        let inner = &self.inner;
        let concurrency = inner.config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut tasks = JoinSet::new();
        tracing::info!(worker = %inner.config.worker_id, concurrency, "automation worker started");
        loop {
            while tasks.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                break;
            }
            let free = slots.available_permits();
            let mut claimed = 0;
            let mut failed = false;
            if free > 0 {
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match inner
                    .store
                    .claim_jobs(&inner.config.worker_id, limit, inner.config.lease)
                    .await
                {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            let permit = Arc::clone(&slots)
                                .acquire_owned()
                                .await
                                .expect("the semaphore is never closed");
                            let worker = self.clone();
                            tasks.spawn(async move {
                                worker.run_job(job).await;
                                drop(permit);
                                worker.inner.notify.notify_one();
                            });
                        }
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(error = %e, "could not claim jobs");
                    }
                }
            }
            if claimed > 0 && claimed == free && !failed {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = inner.notify.notified() => {}
                () = tokio::time::sleep(inner.config.poll_interval) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!(worker = %inner.config.worker_id, "automation worker stopped");
    }

    /// Runs one claimed job: one attempt at its step, renewing the lease meanwhile.
    pub async fn run_job(&self, job: Job) {
        let inner = &self.inner;
        let started = Utc::now();
        let heartbeat = {
            let store = inner.store.clone();
            let worker = inner.config.worker_id.clone();
            let lease = inner.config.lease;
            let id = job.id;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    if let Err(e) = store.renew_lease(id, &worker, lease).await {
                        tracing::warn!(job_id = id, error = %e, "could not renew the lease");
                        if matches!(e, StoreError::LeaseLost { .. }) {
                            break;
                        }
                    }
                }
            })
        };
        let mut trace = Trace::default();
        let outcome = self.attempt(&job, &mut trace).await;
        heartbeat.abort();
        self.finish(&job, started, trace, outcome).await;
    }

    async fn attempt(&self, job: &Job, trace: &mut Trace) -> Outcome {
        let plan: RunPlan = match serde_json::from_value(job.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Fatal {
                    error: format!("the job's payload is not a run plan: {e}"),
                };
            }
        };
        let Some(step) = usize::try_from(job.step_index)
            .ok()
            .and_then(|i| plan.steps.get(i))
        else {
            return Outcome::Fatal {
                error: format!("the run plan has no step {}", job.step_index),
            };
        };
        let event = match self.inner.store.get_event(job.event_row_id).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Outcome::Fatal {
                    error: format!("event {} is gone", job.event_row_id),
                };
            }
            Err(e) => {
                return Outcome::Retry {
                    error: format!("store: {e}"),
                };
            }
        };
        if let StepTarget::Http { url, secret_env } = &step.target {
            return self
                .http_step(job, url, secret_env.as_deref(), &event.envelope, trace)
                .await;
        }
        let envelope: Value = serde_json::from_str(&event.envelope).unwrap_or(Value::Null);
        let steps = match self
            .inner
            .store
            .step_results_for_event(job.event_row_id, &job.rule)
            .await
        {
            Ok(results) => results
                .into_iter()
                .map(|r| (r.step_name, r.result))
                .collect::<Map<_, _>>(),
            Err(e) => {
                return Outcome::Retry {
                    error: format!("store: {e}"),
                };
            }
        };
        let context = json!({ "event": envelope, "steps": steps });
        self.api_step(job, step, &context, trace).await
    }

    async fn api_step(
        &self,
        job: &Job,
        step: &StepSpec,
        context: &Value,
        trace: &mut Trace,
    ) -> Outcome {
        let connector = &self.inner.connector;
        let mut given = Params::new();
        for (key, value) in &step.with {
            match Template::parse(value) {
                Ok(t) => {
                    if let Some(v) = t.render(context) {
                        given.insert(key.clone(), v);
                    }
                }
                Err(e) => {
                    return Outcome::Fatal {
                        error: format!("parameter `{key}`: {e}"),
                    };
                }
            }
        }
        let (resource, op, params) = match &step.target {
            StepTarget::Action { action } => {
                let Some(a) = connector.action(action) else {
                    return Outcome::Fatal {
                        error: format!("the connector has no action `{action}`"),
                    };
                };
                let Some(op) = connector.action_operation(a) else {
                    return Outcome::Fatal {
                        error: format!("action `{action}` has no operation"),
                    };
                };
                (a.resource.as_str(), op, a.defaults.merged(&given))
            }
            StepTarget::Operation {
                resource,
                operation,
            } => {
                let Some(op) = connector.operation(resource, operation) else {
                    return Outcome::Fatal {
                        error: format!("the connector has no operation `{resource}.{operation}`"),
                    };
                };
                (resource.as_str(), op, given)
            }
            StepTarget::Http { .. } => unreachable!("http steps are handled before"),
        };
        trace.request = Some(format!("{} {}", op.method, op.path));
        let rendered = match render(connector, step, op, &params) {
            Ok(r) => r,
            Err(error) => return Outcome::Fatal { error },
        };
        let req = api_request(&rendered);
        if let Some(until) = self.quota_wait(&req) {
            return Outcome::WaitQuota {
                until,
                error: "the token's quota is spent; waiting for the reset".into(),
            };
        }
        if !req.idempotent {
            if needs_check(job) {
                match self.check_created(resource, op, &params, trace).await {
                    Ok(Some(found)) => return Outcome::Done { result: found },
                    Ok(None) => {}
                    Err(outcome) => return outcome,
                }
                trace.request = Some(format!("{} {}", op.method, op.path));
            }
            let fingerprint = fingerprint(&req);
            match self
                .inner
                .store
                .mark_sent(job.id, &self.inner.config.worker_id, fingerprint)
                .await
            {
                Ok(()) => {}
                Err(StoreError::LeaseLost { .. }) => return Outcome::LeaseLost,
                Err(e) => {
                    return Outcome::Retry {
                        error: format!("store: {e}"),
                    };
                }
            }
        }
        let idempotent = req.idempotent;
        let fingerprint = fingerprint(&req);
        match self.inner.client.send(req).await {
            Ok(resp) => {
                trace.status = Some(resp.status.as_u16());
                Outcome::Done { result: resp.body }
            }
            Err(e) => {
                trace.status = e.status();
                if !idempotent && certainly_not_applied(&e) {
                    // Overwrite the mark so the next attempt sends without a lookup (which would
                    // spend another request of a quota that is just spent). If this write fails,
                    // the next attempt looks up first: safe, one request dearer.
                    let unsent = format!("{UNSENT_PREFIX}{fingerprint}");
                    if let Err(err) = self
                        .inner
                        .store
                        .mark_sent(job.id, &self.inner.config.worker_id, unsent)
                        .await
                    {
                        tracing::debug!(job_id = job.id, error = %err, "could not clear the sent mark");
                    }
                }
                classify(&e)
            }
        }
    }

    /// For a create that may already have happened: `Ok(Some(record))` when it did, `Ok(None)`
    /// when it certainly did not, `Err(outcome)` when that cannot be told now.
    async fn check_created(
        &self,
        resource: &str,
        op: &Operation,
        params: &Params,
        trace: &mut Trace,
    ) -> Result<Option<Value>, Outcome> {
        let Some(plan) = LookupPlan::for_operation(&self.inner.connector, resource, op) else {
            return Err(Outcome::Fatal {
                error: format!(
                    "an earlier attempt of {resource}.{} may have taken effect (its outcome is unknown) and there is no way to check; \
                     not sending it again to avoid a duplicate: check Toggl, then cancel this run",
                    op.name
                ),
            });
        };
        let resolved = op.resolve(params).map_err(|e| Outcome::Fatal {
            error: e.to_string(),
        })?;
        trace.request = Some(format!("lookup: {}", plan.describe()));
        match plan.find(&self.inner.client, &resolved).await {
            Ok(found) => {
                tracing::info!(resource, operation = %op.name, found = found.is_some(), "checked for an earlier create");
                Ok(found)
            }
            Err(LookupError::Client(e)) => {
                trace.status = e.status();
                Err(classify(&e))
            }
            Err(e) => Err(Outcome::Fatal {
                error: format!("an earlier attempt may have taken effect; cannot check: {e}"),
            }),
        }
    }

    /// When the request's quota scope is known to be spent: the reset time.
    fn quota_wait(&self, req: &ApiRequest) -> Option<DateTime<Utc>> {
        let budget = self.inner.client.budget();
        if !budget.is_spent(req.scope) {
            return None;
        }
        let key = match req.scope {
            QuotaScope::Workspace(w) => budget
                .workspace_org(w)
                .map_or(req.scope, QuotaScope::Organization),
            other => other,
        };
        let resets_in = budget
            .snapshot()
            .into_iter()
            .find(|s| s.scope == key)
            .and_then(|s| s.resets_in)
            .unwrap_or(Duration::from_secs(1));
        Some(
            Utc::now()
                + chrono::Duration::from_std(resets_in)
                    .unwrap_or_else(|_| chrono::Duration::seconds(1)),
        )
    }

    async fn http_step(
        &self,
        job: &Job,
        url: &str,
        secret_env: Option<&str>,
        envelope: &str,
        trace: &mut Trace,
    ) -> Outcome {
        trace.request = Some(format!("POST {}", display_url(url)));
        let mut req = self
            .inner
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, job.id.to_string())
            .body(envelope.to_owned());
        if let Some(var) = secret_env {
            let Some(secret) = self.inner.config.secrets.get(var) else {
                return Outcome::Fatal {
                    error: format!("environment variable {var} (the signing secret) is not set"),
                };
            };
            req = req.header(SIGNATURE_HEADER, sign(&secret, envelope.as_bytes()));
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                trace.status = Some(status.as_u16());
                if status.is_success() {
                    Outcome::Done {
                        result: json!({ "status": status.as_u16() }),
                    }
                } else if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
                    Outcome::Retry {
                        error: format!("{} answered {status}", display_url(url)),
                    }
                } else {
                    Outcome::Fatal {
                        error: format!("{} answered {status}", display_url(url)),
                    }
                }
            }
            Err(e) => Outcome::Retry {
                error: format!("could not reach {}: {}", display_url(url), e.without_url()),
            },
        }
    }

    async fn finish(&self, job: &Job, started: DateTime<Utc>, trace: Trace, outcome: Outcome) {
        let inner = &self.inner;
        let worker = &inner.config.worker_id;
        let store = &inner.store;
        let (attempt_outcome, error, transition) = match outcome {
            Outcome::LeaseLost => {
                tracing::warn!(
                    job_id = job.id,
                    "lost the lease; another worker has the job"
                );
                return;
            }
            Outcome::Done { result } => {
                let followups = next_step(job);
                let has_next = !followups.is_empty();
                let r = store
                    .complete_job_with_followups(job.id, worker, result, followups)
                    .await
                    .map(|_| ());
                if has_next {
                    inner.notify.notify_one();
                }
                (AttemptOutcome::Ok, None, r)
            }
            Outcome::WaitQuota { until, error } => {
                tracing::info!(job_id = job.id, until = %until, "quota spent; job waits for the reset");
                (
                    AttemptOutcome::WaitingQuota,
                    Some(error.clone()),
                    store.retry_job_later(job.id, worker, until, &error).await,
                )
            }
            Outcome::Fatal { error } => {
                tracing::warn!(job_id = job.id, rule = %job.rule, step = %job.step_name, error = %error, "step failed; dead-lettered");
                (
                    AttemptOutcome::Dead,
                    Some(error.clone()),
                    store.dead_letter(job.id, worker, &error).await,
                )
            }
            Outcome::Retry { error } => {
                let failures = self.failures(job).await + 1;
                if failures >= inner.config.max_attempts {
                    let error = format!("gave up after {failures} attempts: {error}");
                    tracing::warn!(job_id = job.id, rule = %job.rule, step = %job.step_name, error = %error, "step dead-lettered");
                    (
                        AttemptOutcome::Dead,
                        Some(error.clone()),
                        store.dead_letter(job.id, worker, &error).await,
                    )
                } else {
                    let delay = inner.config.backoff.delay(failures);
                    let at = Utc::now()
                        + chrono::Duration::from_std(delay)
                            .unwrap_or_else(|_| chrono::Duration::seconds(60));
                    tracing::info!(job_id = job.id, failures, delay_ms = delay.as_millis(), error = %error, "step failed; will retry");
                    (
                        AttemptOutcome::Retry,
                        Some(error.clone()),
                        store.retry_job_later(job.id, worker, at, &error).await,
                    )
                }
            }
        };
        if let Err(e) = transition {
            // The job stays running under an expiring lease and is claimed again later: at
            // least once, and the sent mark prevents a duplicate create.
            tracing::warn!(job_id = job.id, error = %e, "could not record the step's outcome");
            return;
        }
        let record = AttemptRecord {
            attempt: job.attempts,
            started_at: started,
            finished_at: Utc::now(),
            request: trace.request,
            status: trace.status,
            error,
            outcome: attempt_outcome,
        };
        if let Err(e) = store.record_attempt(job.id, record).await {
            tracing::warn!(job_id = job.id, error = %e, "could not record the attempt");
        }
    }

    /// Failed attempts so far (quota waits excluded).
    async fn failures(&self, job: &Job) -> u32 {
        match self.inner.store.get_job(job.id).await {
            Ok(Some(detail)) => {
                let n = detail
                    .attempts
                    .iter()
                    .filter(|a| matches!(a.outcome, AttemptOutcome::Retry | AttemptOutcome::Dead))
                    .count();
                u32::try_from(n).unwrap_or(u32::MAX)
            }
            _ => job.attempts.saturating_sub(1),
        }
    }
}

fn render(
    connector: &Connector,
    step: &StepSpec,
    op: &Operation,
    params: &Params,
) -> Result<RenderedRequest, String> {
    let result = match &step.target {
        StepTarget::Action { action } => {
            let a = connector
                .action(action)
                .ok_or_else(|| format!("the connector has no action `{action}`"))?;
            // `params` already holds the action's defaults.
            connector.render_action(a, params)
        }
        _ => op.render(params),
    };
    result.map_err(|e| format!("cannot build the request: {e} (a template may point at a value the event does not have)"))
}

fn next_step(job: &Job) -> Vec<NewJob> {
    let Ok(plan) = serde_json::from_value::<RunPlan>(job.payload.clone()) else {
        return Vec::new();
    };
    let next = job.step_index + 1;
    usize::try_from(next)
        .ok()
        .and_then(|i| plan.steps.get(i))
        .map(|s| NewJob {
            rule: job.rule.clone(),
            step_index: next,
            step_name: s.name.clone(),
            payload: job.payload.clone(),
            not_before: None,
            priority: job.priority,
        })
        .into_iter()
        .collect()
}

/// Prefix of a sent mark that records "the request was refused before it could act".
const UNSENT_PREFIX: &str = "unsent:";

/// Whether a claimed job may hold a create that already happened: it was marked sent and the
/// mark was not later cleared by an answer that proves nothing happened.
fn needs_check(job: &Job) -> bool {
    job.sent_fingerprint
        .as_deref()
        .is_some_and(|f| !f.starts_with(UNSENT_PREFIX))
}

/// Errors after which a request certainly had no effect: quota refused (402 with quota headers,
/// or not admitted at all), rate limited (429), not sent (the client only reports `Transport` for
/// a non-idempotent request when nothing left), or refused with a 4xx (Toggl validates before it
/// acts; a 5xx or a lost answer stays unknown).
fn certainly_not_applied(e: &ClientError) -> bool {
    match e {
        ClientError::QuotaExhausted { .. }
        | ClientError::RateLimited { .. }
        | ClientError::Transport { .. }
        | ClientError::PaidFeature { .. }
        | ClientError::Unauthorized { .. }
        | ClientError::Gone { .. }
        | ClientError::NotFound { .. }
        | ClientError::Conflict { .. } => true,
        ClientError::Api { status, .. } => *status < 500,
        _ => false,
    }
}

/// Retry or give up, by the client's error.
fn classify(e: &ClientError) -> Outcome {
    match e {
        ClientError::QuotaExhausted { resets_at, .. } => Outcome::WaitQuota {
            until: *resets_at,
            error: e.to_string(),
        },
        // The sent mark is set: the next attempt checks before sending again.
        ClientError::OutcomeUnknown { .. } => Outcome::Retry {
            error: e.to_string(),
        },
        e if e.is_retryable() => Outcome::Retry {
            error: e.to_string(),
        },
        e => Outcome::Fatal {
            error: e.to_string(),
        },
    }
}

/// Identifies a request without holding it: method, path template and a digest of the body.
fn fingerprint(req: &ApiRequest) -> String {
    let body = req.body.as_ref().map(Value::to_string).unwrap_or_default();
    let digest = Sha256::digest(body.as_bytes());
    format!(
        "{} {} sha256:{}",
        req.method,
        toggl_connect_client::path_template(&req.path),
        hex::encode(&digest[..8])
    )
}

/// `sha256=<hex hmac(secret, body)>`, Toggl's webhook signature scheme.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A URL without query or fragment (they may carry credentials) for records and logs.
fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => "(invalid url)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_toggls_known_answer() {
        // Toggl's "Validating Received Events" example: this secret over this ping body.
        let body = r#"{"event_id":0,"created_at":"2022-06-25T03:58:10.207820267Z","creator_id":6,"metadata":{"request_type":"POST","event_user_id":6},"payload":"ping","subscription_id":6,"timestamp":"2022-06-25T03:58:10.207820267Z","url_callback":"https://callback-url.com"}"#;
        assert_eq!(
            sign("PGuRrhCFajIyEvFlreKL", body.as_bytes()),
            "sha256=bf829606cda0ca6923defb5ca70a43135adc7e8887486a201a19cb50ca6006b1"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let first = b.delay(1);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        assert!(b.delay(4) >= Duration::from_millis(400));
        for n in 1..50 {
            assert!(b.delay(n) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            display_url("http://u:p@127.0.0.1:9/x?token=1#f"),
            "http://127.0.0.1:9/x"
        );
    }
}
