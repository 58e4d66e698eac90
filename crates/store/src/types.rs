//! Values that go into and come out of the store. Both backends share them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{Snapshot, StoreError};

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventSource {
    /// Delivered by a Toggl webhook subscription.
    #[default]
    Webhook,
    /// Derived from polling the Track API.
    Poll,
    /// Derived from a catch-up read (`since=`) after downtime.
    Catchup,
    /// Re-inserted by an operator to run rules again.
    Replay,
}

impl EventSource {
    /// The stored spelling (`webhook`, `poll`, `catchup`, `replay`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Webhook => "webhook",
            EventSource::Poll => "poll",
            EventSource::Catchup => "catchup",
            EventSource::Replay => "replay",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "webhook" => EventSource::Webhook,
            "poll" => EventSource::Poll,
            "catchup" => EventSource::Catchup,
            "replay" => EventSource::Replay,
            _ => return None,
        })
    }
}

impl fmt::Display for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The latest known state of one Toggl entity, written with an event so that the next event
/// for the same entity can derive `started`/`stopped` triggers by comparing against it.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityState {
    /// The entity's JSON as last seen (e.g. the webhook `payload`, as delivered). Its text is
    /// what gets stored. Shared, not copied: the receiver's derivation reads the same snapshot,
    /// and the stores keep it in their caches.
    pub state: Arc<Snapshot>,
    /// When Toggl last modified it (its `at`). An update with an older `at` than the stored
    /// one is ignored, so out-of-order deliveries never move the state backwards.
    pub at: DateTime<Utc>,
    /// Where the state's text begins in the event's `envelope` (a byte offset), when the caller
    /// knows it: the receiver does, having parsed the payload out of the body. A store that
    /// keeps the state as a reference into the envelope (SQLite) checks it with one comparison
    /// instead of searching the envelope; a wrong hint only costs that search.
    pub offset_in_envelope: Option<usize>,
}

impl EntityState {
    /// The state of a parsed value (stored as the value serialized).
    pub fn new(state: Value, at: DateTime<Utc>) -> Self {
        Self {
            state: Arc::new(Snapshot::from_value(state)),
            at,
            offset_in_envelope: None,
        }
    }
}

/// An event to store. `Default` gives an empty webhook event to fill in.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// Toggl's `event_id` (0 when the event was derived, not delivered).
    pub event_id: i64,
    /// The webhook subscription it arrived through.
    pub subscription_id: Option<i64>,
    /// The Toggl workspace.
    pub workspace_id: Option<i64>,
    /// `metadata.model`, e.g. `time_entry`.
    pub entity: String,
    /// `metadata.action`: `created`, `updated`, `deleted`.
    pub action: String,
    /// The triggers the event fires, space-separated, e.g. `time_entry_created time_entry_started`.
    pub trigger: String,
    /// The entity's id.
    pub entity_id: Option<i64>,
    /// When we received it.
    pub received_at: DateTime<Utc>,
    /// The raw body exactly as received (kept byte for byte).
    pub envelope: String,
    /// Where it came from.
    pub source: EventSource,
    /// The dedupe key for events that have no Toggl `event_id` (poll, catch-up), e.g.
    /// `time_entry:123:at=2025-01-10T09:00:01Z`. `None` means `evt:<event_id>`. A webhook event
    /// must leave it `None`: Toggl signs no timestamp, so its `event_id` is the only replay
    /// defence and must not be overridable by the caller.
    pub dedupe_key: Option<String>,
    /// Upserted into `entity_state` in the same transaction (only when not a duplicate;
    /// needs `entity_id`).
    pub entity_state: Option<EntityState>,
    /// Jobs enqueued in the same transaction (only when not a duplicate), so an acknowledged
    /// event can never lose its jobs.
    pub jobs: Vec<NewJob>,
}

impl NewEvent {
    /// The unique key this event is deduplicated on.
    pub fn effective_dedupe_key(&self) -> String {
        match &self.dedupe_key {
            Some(key) => key.clone(),
            None => format!("evt:{}", self.event_id),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        match (&self.dedupe_key, self.source) {
            (Some(_), EventSource::Webhook) => Err(StoreError::InvalidInput(
                "a webhook event is deduplicated by its event_id; dedupe_key must be None".into(),
            )),
            (Some(key), _) if key.is_empty() || key.starts_with("evt:") => {
                Err(StoreError::InvalidInput(
                    "dedupe_key must be non-empty and not start with `evt:`".into(),
                ))
            }
            _ if self.entity_state.is_some() && self.entity_id.is_none() => Err(
                StoreError::InvalidInput("entity_state needs entity_id".into()),
            ),
            _ => self.jobs.iter().try_for_each(NewJob::validate),
        }
    }
}

/// Entity states a store keeps in memory (see each backend's `StateCache`), keyed by entity
/// and id, at most `N` of them: a new key in a full map empties it first. Simple, and an entry
/// that is gone costs one read.
pub(crate) struct StateMap<V, const N: usize> {
    entries: HashMap<(String, i64), V>,
}

impl<V, const N: usize> Default for StateMap<V, N> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<V, const N: usize> StateMap<V, N> {
    pub fn get(&self, key: &(String, i64)) -> Option<&V> {
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: (String, i64), value: V) {
        if self.entries.len() >= N && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        self.entries.insert(key, value);
    }

    pub fn remove(&mut self, key: &(String, i64)) {
        self.entries.remove(key);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// An event with the part of its insert that needs no connection already made: its dedupe
/// key. Both stores make it in the caller's task, before the insert is queued: their writer
/// (SQLite) and batchers (PostgreSQL) are the serial stage every event waits on, so work done
/// here is work taken off that path. (The entity state's text needs no work: a [`Snapshot`]
/// carries it.)
pub(crate) struct PreparedEvent {
    pub ev: NewEvent,
    pub key: String,
}

impl PreparedEvent {
    pub fn new(ev: NewEvent) -> Self {
        let key = ev.effective_dedupe_key();
        Self { ev, key }
    }
}

/// What [`crate::Store::insert_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    /// The event's row id (the existing row's id for a duplicate; 0 when
    /// [`Derived::AlreadyStored`] refused it).
    pub id: i64,
    /// True when the dedupe key was already stored, or the derivation said this version was:
    /// nothing was written.
    pub duplicate: bool,
    /// Ids of the jobs enqueued with the event, in the order given (empty for a duplicate).
    pub job_ids: Vec<i64>,
    /// The triggers stored with the event (the derivation's, for a derived insert); empty for
    /// a duplicate.
    pub trigger: String,
}

/// What an event becomes once the entity's previous state is known. Returned by a [`Derive`].
#[derive(Debug, Clone, PartialEq)]
pub enum Derived {
    /// Store it, firing these triggers (space-separated) and enqueuing these jobs.
    Store {
        /// Replaces [`NewEvent::trigger`].
        trigger: String,
        /// Replace [`NewEvent::jobs`].
        jobs: Vec<NewJob>,
    },
    /// This version of the entity is already stored (another path brought the same change):
    /// acknowledge it as a duplicate and write nothing.
    AlreadyStored,
}

impl Derived {
    /// The derivation, with the jobs it plans checked as [`NewEvent`]'s own jobs are.
    pub(crate) fn checked(self) -> Result<Derived, StoreError> {
        if let Derived::Store { jobs, .. } = &self {
            jobs.iter().try_for_each(NewJob::validate)?;
        }
        Ok(self)
    }
}

/// Decides an event's triggers and jobs from the entity's previously stored state (`None` when
/// there is none). [`crate::Store::insert_event_derived`] calls it inside the write transaction
/// that stores the event, so that two deliveries of one entity are classified one after the
/// other, each against the state the other left. It must be pure: it may be called more than
/// once for one event (a failed batch is retried event by event), and for a redelivery that the
/// dedupe key then refuses (the stores check the key in the insert itself, after deriving);
/// what it returns for a duplicate is dropped.
pub type Derive = std::sync::Arc<dyn Fn(Option<&Snapshot>) -> Derived + Send + Sync>;

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Row id (increasing with insertion order).
    pub id: i64,
    /// Toggl's `event_id`.
    pub event_id: i64,
    /// The unique key it was deduplicated on.
    pub dedupe_key: String,
    /// The webhook subscription it arrived through.
    pub subscription_id: Option<i64>,
    /// The Toggl workspace.
    pub workspace_id: Option<i64>,
    /// Entity name.
    pub entity: String,
    /// Toggl action.
    pub action: String,
    /// Classified trigger.
    pub trigger: String,
    /// Entity id.
    pub entity_id: Option<i64>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Raw body as received.
    pub envelope: String,
    /// Where it came from.
    pub source: EventSource,
}

/// Selects events for [`crate::Store::list_events`]; results are ordered by row id.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events that fired this trigger (one of the space-separated names in `trigger`).
    pub trigger: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// Only rows with a larger id (for paging).
    pub after_id: Option<i64>,
    /// At most this many (default 100, capped at 10 000).
    pub limit: Option<u32>,
}

/// Default page size for list operations.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Largest page a list operation returns.
pub const MAX_LIST_LIMIT: u32 = 10_000;

pub(crate) fn effective_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT)
}

/// A job to enqueue: one step of one rule for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The rule's name.
    pub rule: String,
    /// The step's position in the rule.
    pub step_index: u32,
    /// The step's name (`{{steps.<name>.id}}` in templates).
    pub step_name: String,
    /// Whatever the worker needs to run the step.
    pub payload: Value,
    /// Not claimable before this instant (`None`: now).
    pub not_before: Option<DateTime<Utc>>,
    /// Lower runs sooner (actions before polling).
    pub priority: i32,
}

impl NewJob {
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.step_index > i32::MAX as u32 {
            return Err(StoreError::InvalidInput("step_index too large".into()));
        }
        Ok(())
    }
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting to be claimed (possibly not before `not_before`).
    Pending,
    /// Claimed by a worker under a lease; claimable again once the lease expires.
    Running,
    /// Completed; its result is readable.
    Succeeded,
    /// Given up (dead letter); [`crate::Store::retry_dead`] puts it back.
    Dead,
    /// Cancelled by an operator.
    Cancelled,
}

impl JobStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "dead" => JobStatus::Dead,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// True for the statuses a job never leaves on its own.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Row id.
    pub id: i64,
    /// The event it belongs to.
    pub event_row_id: i64,
    /// Rule name.
    pub rule: String,
    /// Step position.
    pub step_index: u32,
    /// Step name.
    pub step_name: String,
    /// Step input.
    pub payload: Value,
    /// Current status.
    pub status: JobStatus,
    /// Lower runs sooner.
    pub priority: i32,
    /// Not claimable before.
    pub not_before: DateTime<Utc>,
    /// How many times it was claimed.
    pub attempts: u32,
    /// The worker holding (or last holding) the lease while running.
    pub lease_owner: Option<String>,
    /// When the lease expires.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Set by [`crate::Store::mark_sent`]: a non-idempotent request may have reached Toggl, so
    /// the next attempt must check before sending again.
    pub sent_fingerprint: Option<String>,
    /// When it was marked sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// The step's result once succeeded.
    pub result: Option<Value>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a finished status.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job with its attempt history ([`crate::Store::get_job`]).
#[derive(Debug, Clone, PartialEq)]
pub struct JobDetail {
    /// The job.
    pub job: Job,
    /// Its recorded attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The step succeeded.
    Ok,
    /// It failed and will be retried.
    Retry,
    /// It failed for good.
    Dead,
    /// It waits for the Toggl quota to reset.
    WaitingQuota,
}

impl AttemptOutcome {
    /// The stored spelling (`ok`, `retry`, `dead`, `waiting_quota`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::WaitingQuota => "waiting_quota",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => AttemptOutcome::Ok,
            "retry" => AttemptOutcome::Retry,
            "dead" => AttemptOutcome::Dead,
            "waiting_quota" => AttemptOutcome::WaitingQuota,
            _ => return None,
        })
    }
}

/// One attempt at running a job, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// Attempt number (the job's `attempts` when it ran).
    pub attempt: u32,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Method and path template of the outbound call (`POST /workspaces/{wid}/tasks`), never a
    /// rendered URL or a token.
    pub request: Option<String>,
    /// HTTP status of the answer.
    pub status: Option<u16>,
    /// Failure text.
    pub error: Option<String>,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// Selects jobs for [`crate::Store::list_jobs`]; results are ordered by id.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only jobs of this event.
    pub event_row_id: Option<i64>,
    /// At most this many (default 100, capped at 10 000).
    pub limit: Option<u32>,
}

/// A succeeded step's result ([`crate::Store::step_results_for_event`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// The job.
    pub job_id: i64,
    /// Step position.
    pub step_index: u32,
    /// Step name.
    pub step_name: String,
    /// What the step returned.
    pub result: Value,
}

/// A secret that never prints: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for signing; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Our record of a Toggl webhook subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Workspace.
    pub workspace_id: i64,
    /// Toggl's subscription id.
    pub subscription_id: i64,
    /// Where Toggl delivers.
    pub url_callback: String,
    /// The signing secret.
    pub secret: Secret,
    /// The secret before the last rotation, accepted while deliveries signed with it drain.
    pub previous_secret: Option<Secret>,
    /// The `event_filters` array as sent to Toggl.
    pub event_filters: Value,
    /// Enabled on Toggl's side.
    pub enabled: bool,
    /// Validated on Toggl's side.
    pub validated: bool,
    /// Last change (set by the store on upsert).
    pub updated_at: DateTime<Utc>,
}

/// What [`crate::Store::prune`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Events received longer ago than this, once none of their jobs remains. Must be at least
    /// [`MIN_EVENT_RETENTION`]: a pruned event's dedupe key is gone, and Toggl keeps retrying
    /// undelivered events for about a week (UNCONFIRMED), so a shorter window would let a
    /// late redelivery or a replayed capture run twice.
    pub events_older_than: Duration,
    /// Succeeded, dead and cancelled jobs finished longer ago than this.
    pub finished_jobs_older_than: Duration,
}

/// The shortest event retention [`crate::Store::prune`] accepts (8 days).
pub const MIN_EVENT_RETENTION: Duration = Duration::from_secs(8 * 24 * 3600);

/// What [`crate::Store::prune`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneCounts {
    /// Events deleted.
    pub events: u64,
    /// Jobs deleted (with their attempts).
    pub jobs: u64,
}

/// Counters since the store was opened (per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Durable flushes: SQLite WAL fsyncs (each covering every batch committed since the last),
    /// PostgreSQL commits.
    pub commits: u64,
    /// Write requests carried by those flushes (group commit puts many in one).
    pub writes: u64,
    /// Largest number of write requests in one commit.
    pub max_writes_per_commit: u64,
    /// New events stored.
    pub events_inserted: u64,
    /// Inserts rejected as duplicates.
    pub duplicates: u64,
    /// Jobs enqueued.
    pub jobs_enqueued: u64,
    /// Jobs handed out by `claim_jobs`.
    pub jobs_claimed: u64,
}

impl StoreStats {
    /// Write requests per commit: the group-commit headline figure.
    pub fn writes_per_commit(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.writes as f64 / self.commits as f64
        }
    }
}

/// Tuning for [`crate::Store::open`]. `Default` is sensible for both backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// PostgreSQL: most connections opened in all: [`StoreOptions::insert_connections`] of them
    /// for the event insert batchers, the rest pooled for everything else.
    pub pool_size: usize,
    /// PostgreSQL: connections (each with its batcher) that store events, out of `pool_size`.
    /// `None` picks a quarter of `pool_size` (1 to 4), but no more than half this machine's
    /// cores: each batch keeps a server backend busy, and on a small machine where the
    /// database shares the cores, more batchers only split the same events into more, smaller
    /// transactions (2 cores, 16 clients: 1 batcher stored 4,554 events/s, 2 stored 4,254 and
    /// 4 stored 3,951; with one round trip per batch, 1 batcher reached 0.79-0.80 of pgbench
    /// and 2 reached 0.66-0.68; bench/ingest_pg). Set it when the database has cores of its own.
    pub insert_connections: Option<usize>,
    /// PostgreSQL: TCP connect timeout; also how long to wait for a free pooled connection.
    pub connect_timeout: Duration,
    /// PostgreSQL: server-side `statement_timeout`.
    pub statement_timeout: Duration,
    /// PostgreSQL: schema to use (created if missing, then the only entry of `search_path`).
    /// Letters, digits and `_` only.
    pub schema: Option<String>,
    /// SQLite: how long a connection waits on a lock before failing (`busy_timeout`).
    pub busy_timeout: Duration,
    /// Capacity of the write queue (SQLite: all writes; PostgreSQL: event inserts); callers
    /// wait when it is full (back-pressure).
    pub write_queue: usize,
    /// Most write requests folded into one transaction (group commit).
    pub max_batch: usize,
    /// SQLite: read connections kept open.
    pub read_connections: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 16,
            insert_connections: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            schema: None,
            busy_timeout: Duration::from_secs(5),
            write_queue: 1024,
            max_batch: 256,
            read_connections: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StateMap;

    #[test]
    fn a_state_map_empties_itself_for_a_new_key_when_full_only() {
        let key = |id: i64| ("time_entry".to_owned(), id);
        let mut map: StateMap<i64, 2> = StateMap::default();
        map.insert(key(1), 10);
        map.insert(key(2), 20);
        map.insert(key(2), 21);
        assert_eq!(
            map.get(&key(1)),
            Some(&10),
            "replacing a key keeps the rest"
        );
        map.insert(key(3), 30);
        assert_eq!(map.get(&key(1)), None, "a new key in a full map empties it");
        assert_eq!(map.get(&key(2)), None);
        assert_eq!(map.get(&key(3)), Some(&30));
    }
}
