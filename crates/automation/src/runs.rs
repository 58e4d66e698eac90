//! What `runs list | show | retry | cancel` print: data only, the CLI formats it.
//!
//! A run is one rule's work for one event; each of its steps is a job. `list` gives one row per
//! step job; `show` takes any job id of a run and gives the whole run, step by step, with every
//! attempt (request as method + path template, never a rendered URL or a token; status; error).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use toggl_connect_client::Client;
use toggl_connect_store::{AttemptRecord, Job, JobFilter, Store, StoreError};

use crate::rules::{ACTION_PRIORITY, POLL_PRIORITY};
use crate::worker::WorkerConfig;

/// One step job of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStep {
    /// Job id (what `runs show/retry/cancel` take).
    pub job_id: i64,
    /// The event's row id in the store.
    pub event_row_id: i64,
    /// Rule name.
    pub rule: String,
    /// Step position (0-based).
    pub step_index: u32,
    /// Step name.
    pub step_name: String,
    /// `pending`, `running`, `succeeded`, `dead`, `cancelled`.
    pub status: String,
    /// Times claimed.
    pub attempts: u32,
    /// Not run before.
    pub not_before: DateTime<Utc>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Enqueued at.
    pub created_at: DateTime<Utc>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&Job> for RunStep {
    fn from(j: &Job) -> Self {
        Self {
            job_id: j.id,
            event_row_id: j.event_row_id,
            rule: j.rule.clone(),
            step_index: j.step_index,
            step_name: j.step_name.clone(),
            status: j.status.as_str().to_owned(),
            attempts: j.attempts,
            not_before: j.not_before,
            last_error: j.last_error.clone(),
            created_at: j.created_at,
            finished_at: j.finished_at,
        }
    }
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptView {
    /// Attempt number.
    pub attempt: u32,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// `POST /api/v9/workspaces/{{workspace_id}}/projects/{{project_id}}/tasks`, `lookup: GET ...`.
    pub request: Option<String>,
    /// HTTP status.
    pub status: Option<u16>,
    /// Failure text.
    pub error: Option<String>,
    /// `ok`, `retry`, `dead`, `waiting_quota`.
    pub outcome: String,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            started_at: a.started_at,
            finished_at: a.finished_at,
            request: a.request.clone(),
            status: a.status,
            error: a.error.clone(),
            outcome: a.outcome.as_str().to_owned(),
        }
    }
}

/// A step with its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepHistory {
    /// The step job.
    #[serde(flatten)]
    pub step: RunStep,
    /// Its attempts, oldest first.
    pub history: Vec<AttemptView>,
    /// The step's result (secret-looking keys redacted), once succeeded.
    pub result: Option<Value>,
}

/// A whole run: the event and every step so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetail {
    /// Rule name.
    pub rule: String,
    /// The event's row id.
    pub event_row_id: i64,
    /// The triggers the event fired (space-separated).
    pub trigger: Option<String>,
    /// The entity id the event was about.
    pub entity_id: Option<i64>,
    /// When the event arrived.
    pub received_at: Option<DateTime<Utc>>,
    /// Steps enqueued so far, in order (later steps appear once earlier ones succeed).
    pub steps: Vec<StepHistory>,
}

/// Step jobs matching `filter`, ordered by id.
pub async fn list_runs(store: &Store, filter: JobFilter) -> Result<Vec<RunStep>, StoreError> {
    Ok(store
        .list_jobs(filter)
        .await?
        .iter()
        .map(RunStep::from)
        .collect())
}

/// The run that job `job_id` belongs to; `None` when there is no such job.
pub async fn show_run(store: &Store, job_id: i64) -> Result<Option<RunDetail>, StoreError> {
    let Some(detail) = store.get_job(job_id).await? else {
        return Ok(None);
    };
    let job = detail.job;
    let event = store.get_event(job.event_row_id).await?;
    let jobs = store
        .list_jobs(JobFilter {
            event_row_id: Some(job.event_row_id),
            rule: Some(job.rule.clone()),
            ..JobFilter::default()
        })
        .await?;
    let mut steps = Vec::new();
    for j in &jobs {
        let history = store
            .get_job(j.id)
            .await?
            .map(|d| d.attempts.iter().map(AttemptView::from).collect())
            .unwrap_or_default();
        let result = j.result.clone().map(|mut v| {
            redact(&mut v);
            v
        });
        steps.push(StepHistory {
            step: RunStep::from(j),
            history,
            result,
        });
    }
    steps.sort_by_key(|s| (s.step.step_index, s.step.job_id));
    Ok(Some(RunDetail {
        rule: job.rule.clone(),
        event_row_id: job.event_row_id,
        trigger: event.as_ref().map(|e| e.trigger.clone()),
        entity_id: event.as_ref().and_then(|e| e.entity_id),
        received_at: event.as_ref().map(|e| e.received_at),
        steps,
    }))
}

/// Puts a dead step back to pending (it runs again at once). Fails for other statuses.
pub async fn retry_run(store: &Store, job_id: i64) -> Result<(), StoreError> {
    store.retry_dead(job_id).await
}

/// Cancels a pending, running or dead step; the rest of its run is never enqueued.
pub async fn cancel_run(store: &Store, job_id: i64) -> Result<(), StoreError> {
    store.cancel_job(job_id).await
}

/// The budget in use, for `serve` to print at start-up.
pub fn budget_text(client: &Client, config: &WorkerConfig) -> String {
    let mut out = format!(
        "quota: one budget shared by all work of this token (rule steps run at priority {ACTION_PRIORITY}, before polling at {POLL_PRIORITY}); \
         when a quota is spent, jobs wait for its reset without holding a lease\n\
         worker {}: {} concurrent step(s), lease {}s, up to {} attempts, backoff {}s..{}s",
        config.worker_id,
        config.concurrency,
        config.lease.as_secs(),
        config.max_attempts,
        config.backoff.base.as_secs(),
        config.backoff.max.as_secs()
    );
    let scopes = client.budget_snapshot();
    if scopes.is_empty() {
        out.push_str(
            "\nquota scopes: none seen yet (the first request of each scope learns its quota)",
        );
    }
    for s in scopes {
        let remaining = s
            .remaining
            .map_or_else(|| "unknown".to_owned(), |r| r.to_string());
        let resets = s
            .resets_in
            .map_or_else(String::new, |d| format!(", resets in {}s", d.as_secs()));
        out.push_str(&format!(
            "\n{}: {remaining} request(s) left{resets}",
            s.scope
        ));
    }
    out
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if k.contains("token") || k.contains("password") || k.contains("secret") {
                    *v = Value::String("[redacted]".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}
