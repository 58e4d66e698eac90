//! Durable state for toggl-connect: webhook events, jobs with leases, subscriptions,
//! checkpoints and leader leases, behind one [`Store`] with two backends.
//!
//! * **SQLite** (`sqlite://PATH`, default; `sqlite::memory:` for tests): WAL journal. One
//!   writer thread owns the write connection and folds every write request waiting in its
//!   queue into one transaction (group commit); a syncer thread fsyncs the WAL once for every
//!   batch committed meanwhile and only then answers the callers, so a write is on disk when
//!   its call returns, many concurrent inserts share one fsync, and the writer never waits for
//!   the disk. Reads use a small pool of read-only connections.
//! * **PostgreSQL** (`postgres://...`): a deadpool pool, ordinary transactions, jobs claimed
//!   with `FOR UPDATE SKIP LOCKED`, leases timed by the server's clock so several instances
//!   agree. Concurrent event inserts are batched by batchers on their own thread into one
//!   transaction of two pipelined round trips (the same group commit).
//!
//! Invariants:
//! * a write's future resolves `Ok` only after its transaction committed durably; callers may
//!   acknowledge (answer Toggl 2xx) exactly then;
//! * an event is stored at most once per dedupe key (`evt:<event_id>` for webhook deliveries —
//!   Toggl signs no timestamp, so this is the replay defence), and its entity state and jobs
//!   are written in the same transaction, or not at all for a duplicate;
//! * a job is handed to one worker at a time (until its lease expires), and a worker that lost
//!   its lease can change nothing ([`StoreError::LeaseLost`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), toggl_connect_store::StoreError> {
//! use toggl_connect_store::{NewEvent, NewJob, Store, StoreOptions};
//! let store = Store::open("sqlite://toggl-connect.db", StoreOptions::default()).await?;
//! let outcome = store
//!     .insert_event(NewEvent {
//!         event_id: 8_100_000_000_000_001,
//!         entity: "time_entry".into(),
//!         action: "created".into(),
//!         trigger: "time_entry_started".into(),
//!         received_at: chrono::Utc::now(),
//!         envelope: r#"{"event_id":8100000000000001}"#.into(),
//!         jobs: vec![NewJob {
//!             rule: "notify".into(),
//!             step_index: 0,
//!             step_name: "post".into(),
//!             payload: serde_json::json!({}),
//!             not_before: None,
//!             priority: 0,
//!         }],
//!         ..NewEvent::default()
//!     })
//!     .await?;
//! if !outcome.duplicate { /* answer 2xx: the event and its job are durable */ }
//! let jobs = store.claim_jobs("worker-1", 10, std::time::Duration::from_secs(60)).await?;
//! for job in jobs {
//!     store.complete_job(job.id, "worker-1", serde_json::json!({"ok": true})).await?;
//! }
//! # Ok(()) }
//! ```

mod error;
mod migrations;
mod postgres;
mod snapshot;
mod sqlite;
mod types;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use error::{BoxError, StoreError};
pub use snapshot::{Fields, ObjectKey, Snapshot, json_lenient_i64, json_string, lenient_i64};
pub use types::{
    AttemptOutcome, AttemptRecord, DEFAULT_LIST_LIMIT, Derive, Derived, EntityState, EventFilter,
    EventSource, InsertOutcome, Job, JobDetail, JobFilter, JobStatus, MAX_LIST_LIMIT,
    MIN_EVENT_RETENTION, NewEvent, NewJob, PruneCounts, RetentionPolicy, Secret, StepResult,
    StoreOptions, StoreStats, StoredEvent, Subscription,
};

/// A PostgreSQL schema (see [`StoreOptions::schema`]) that is dropped, with everything in it,
/// when this value is: for tests and tooling that give each run a schema of its own in a shared
/// database, so that runs that pass or fail leave nothing behind.
#[derive(Debug)]
pub struct TempSchema {
    url: String,
    schema: String,
}

impl TempSchema {
    /// `schema` in the database at `url`; it need not exist yet.
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> TempSchema {
        TempSchema {
            url: url.into(),
            schema: schema.into(),
        }
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop may run inside a runtime, which must not block: a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::unavailable(format!("a runtime for cleanup: {e}")))
                .and_then(|rt| rt.block_on(postgres::drop_schema(&url, &schema)));
            if let Err(e) = result {
                tracing::warn!(schema, error = %e, "could not drop a temporary schema");
            }
        })
        .join();
    }
}

/// The store. Cheap to clone: every clone shares the same connections.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($s) => $call.await,
            Backend::Postgres($s) => $call.await,
        }
    };
}

impl Store {
    /// Opens (creating if needed) and migrates a store.
    ///
    /// `url` is `sqlite://PATH` (e.g. `sqlite:///var/lib/toggl-connect/store.db` or
    /// `sqlite://store.db`), `sqlite::memory:` (private to this `Store` and its clones), or a
    /// `postgres://` / `postgresql://` URL (options such as `?options=-csearch_path%3Dx` pass
    /// through; [`StoreOptions::schema`] is simpler).
    ///
    /// Call it inside a Tokio runtime and use the store there: the PostgreSQL backend spawns
    /// its insert batchers and connection tasks on it.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let backend = if url == "sqlite::memory:" {
            Backend::Sqlite(sqlite::SqliteStore::open(None, &options).await?)
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Config("sqlite:// needs a file path".into()));
            }
            Backend::Sqlite(sqlite::SqliteStore::open(Some(path.into()), &options).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::PgStore::open(url, &options).await?)
        } else {
            return Err(StoreError::Config(
                "store url must start with sqlite://, sqlite::memory: or postgres://".into(),
            ));
        };
        Ok(Store { backend })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Stores an event unless its dedupe key is already stored; with it, in the same
    /// transaction, upserts `entity_state` and enqueues `jobs`. Resolves after a durable commit.
    pub async fn insert_event(&self, event: NewEvent) -> Result<InsertOutcome, StoreError> {
        event.validate()?;
        dispatch!(self, s => s.insert_event(event, None))
    }

    /// Stores an event whose triggers and jobs depend on the entity's previous state: `derive`
    /// runs inside the write transaction, after the dedupe check, with the state stored for
    /// `event.entity` / `event.entity_id`, and its answer replaces `event.trigger` and
    /// `event.jobs` (or refuses the event as [`Derived::AlreadyStored`]). Reading the state in
    /// the same transaction closes the race between two concurrent deliveries for one entity
    /// and saves a separate read.
    pub async fn insert_event_derived(
        &self,
        event: NewEvent,
        derive: Derive,
    ) -> Result<InsertOutcome, StoreError> {
        event.validate()?;
        dispatch!(self, s => s.insert_event(event, Some(derive)))
    }

    /// The latest state stored for an entity, with its `at`.
    pub async fn get_entity_state(
        &self,
        entity: &str,
        entity_id: i64,
    ) -> Result<Option<(Value, DateTime<Utc>)>, StoreError> {
        dispatch!(self, s => s.get_entity_state(entity.to_owned(), entity_id))
    }

    /// Events matching `filter`, ordered by row id.
    pub async fn list_events(&self, filter: EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        dispatch!(self, s => s.list_events(filter))
    }

    /// One event by row id.
    pub async fn get_event(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        dispatch!(self, s => s.get_event(id))
    }

    /// Enqueues jobs for an already stored event; returns their ids in order.
    pub async fn enqueue_jobs(
        &self,
        event_row_id: i64,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<i64>, StoreError> {
        jobs.iter().try_for_each(NewJob::validate)?;
        dispatch!(self, s => s.enqueue_jobs(event_row_id, jobs))
    }

    /// Claims up to `limit` runnable jobs for `worker`: pending ones whose `not_before` has
    /// passed, and running ones whose lease expired. Ordered by priority (lower first), then
    /// `not_before`, then id. Each claimed job's `attempts` grows by one and its lease runs
    /// for `lease`.
    pub async fn claim_jobs(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        dispatch!(self, s => s.claim_jobs(worker.to_owned(), limit, lease))
    }

    /// Extends `worker`'s lease on a running job to `lease` from now; returns the new expiry.
    ///
    /// A worker whose lease expired may still renew or finish the job as long as no other
    /// worker claimed it meanwhile: nobody else can have acted on it.
    pub async fn renew_lease(
        &self,
        job_id: i64,
        worker: &str,
        lease: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        dispatch!(self, s => s.renew_lease(job_id, worker.to_owned(), lease))
    }

    /// Appends an attempt to a job's history. No lease check: the attempt happened whatever
    /// became of the lease, and operators want to see it.
    pub async fn record_attempt(
        &self,
        job_id: i64,
        attempt: AttemptRecord,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_attempt(job_id, attempt))
    }

    /// Records, durably, that a non-idempotent request identified by `fingerprint` is about to
    /// be sent. Call it BEFORE sending: after a crash the next attempt sees
    /// [`Job::sent_fingerprint`] and must check whether the request took effect.
    pub async fn mark_sent(
        &self,
        job_id: i64,
        worker: &str,
        fingerprint: String,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.mark_sent(job_id, worker.to_owned(), fingerprint))
    }

    /// Marks a running job succeeded with its `result` (readable through
    /// [`Store::step_results_for_event`]).
    pub async fn complete_job(
        &self,
        job_id: i64,
        worker: &str,
        result: Value,
    ) -> Result<(), StoreError> {
        self.complete_job_with_followups(job_id, worker, result, Vec::new())
            .await
            .map(|_| ())
    }

    /// Like [`Store::complete_job`], and in the same transaction enqueues `followups` for the
    /// same event (e.g. the rule's next step), so a crash cannot lose them. Returns their ids.
    pub async fn complete_job_with_followups(
        &self,
        job_id: i64,
        worker: &str,
        result: Value,
        followups: Vec<NewJob>,
    ) -> Result<Vec<i64>, StoreError> {
        followups.iter().try_for_each(NewJob::validate)?;
        dispatch!(self, s => s.complete_job(job_id, worker.to_owned(), result, followups))
    }

    /// Puts a running job back to pending, claimable from `at`, remembering `error`. A worker
    /// that is shutting down hands its jobs back this way with `at` = now.
    pub async fn retry_job_later(
        &self,
        job_id: i64,
        worker: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.retry_job_later(job_id, worker.to_owned(), at, error.to_owned()))
    }

    /// Gives up on a running job (dead letter), remembering `error`.
    pub async fn dead_letter(
        &self,
        job_id: i64,
        worker: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.dead_letter(job_id, worker.to_owned(), error.to_owned()))
    }

    /// Jobs matching `filter`, ordered by id.
    pub async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError> {
        dispatch!(self, s => s.list_jobs(filter))
    }

    /// One job with its attempt history.
    pub async fn get_job(&self, job_id: i64) -> Result<Option<JobDetail>, StoreError> {
        dispatch!(self, s => s.get_job(job_id))
    }

    /// Puts a dead job back to pending, claimable now. Fails with [`StoreError::WrongState`]
    /// for any other status.
    pub async fn retry_dead(&self, job_id: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.retry_dead(job_id))
    }

    /// Cancels a pending, running or dead job (a running job's worker then gets
    /// [`StoreError::LeaseLost`]). Fails with [`StoreError::WrongState`] when the job already
    /// succeeded or was cancelled.
    pub async fn cancel_job(&self, job_id: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.cancel_job(job_id))
    }

    /// Results of the succeeded steps of `rule` for an event, by step index, for templating
    /// later steps (`{{steps.create_task.id}}`).
    pub async fn step_results_for_event(
        &self,
        event_row_id: i64,
        rule: &str,
    ) -> Result<Vec<StepResult>, StoreError> {
        dispatch!(self, s => s.step_results_for_event(event_row_id, rule.to_owned()))
    }

    /// Inserts or replaces our record of a subscription; `updated_at` is set to now.
    pub async fn upsert_subscription(&self, subscription: Subscription) -> Result<(), StoreError> {
        dispatch!(self, s => s.upsert_subscription(subscription))
    }

    /// One subscription.
    pub async fn get_subscription(
        &self,
        workspace_id: i64,
        subscription_id: i64,
    ) -> Result<Option<Subscription>, StoreError> {
        dispatch!(self, s => s.get_subscription(workspace_id, subscription_id))
    }

    /// All subscriptions, or those of one workspace, ordered by (workspace, subscription).
    pub async fn list_subscriptions(
        &self,
        workspace_id: Option<i64>,
    ) -> Result<Vec<Subscription>, StoreError> {
        dispatch!(self, s => s.list_subscriptions(workspace_id))
    }

    /// Deletes a subscription record; true when it existed.
    pub async fn delete_subscription(
        &self,
        workspace_id: i64,
        subscription_id: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_subscription(workspace_id, subscription_id))
    }

    /// A checkpoint value (e.g. the last `since` polled for a workspace).
    pub async fn get_checkpoint(&self, key: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.get_checkpoint(key.to_owned()))
    }

    /// Sets a checkpoint value, durably.
    pub async fn set_checkpoint(&self, key: &str, value: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_checkpoint(key.to_owned(), value.to_owned()))
    }

    /// Takes or renews the leadership lease `name` for `holder` for `ttl`; true when `holder`
    /// leads now.
    ///
    /// A lease row with an expiry, not a PostgreSQL advisory lock: a killed or partitioned
    /// holder loses leadership after `ttl` whatever happened to its connection, and the same
    /// code works on SQLite. On PostgreSQL the expiry uses the server's clock, so instances
    /// with skewed clocks still agree. Renew well within `ttl` (e.g. every `ttl / 3`).
    pub async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.try_lead(name.to_owned(), holder.to_owned(), ttl))
    }

    /// Gives up leadership if `holder` has it; true when it did.
    pub async fn release_lead(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release_lead(name.to_owned(), holder.to_owned()))
    }

    /// Deletes finished jobs (succeeded, dead, cancelled) finished before
    /// `finished_jobs_older_than`, then events received before `events_older_than` that have
    /// no job left. Fails with [`StoreError::InvalidInput`] when `events_older_than` is below
    /// [`MIN_EVENT_RETENTION`].
    pub async fn prune(&self, policy: RetentionPolicy) -> Result<PruneCounts, StoreError> {
        if policy.events_older_than < MIN_EVENT_RETENTION {
            return Err(StoreError::InvalidInput(format!(
                "events_older_than must be at least {} days: a pruned event's dedupe key no longer stops a redelivery",
                MIN_EVENT_RETENTION.as_secs() / 86_400
            )));
        }
        let now = Utc::now();
        let events_before = now - to_chrono(policy.events_older_than)?;
        let jobs_before = now - to_chrono(policy.finished_jobs_older_than)?;
        dispatch!(self, s => s.prune(events_before, jobs_before))
    }

    /// Checks the database answers (PostgreSQL: a query on a pooled connection; SQLite: a
    /// round trip through the writer thread).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping())
    }

    /// Counters since this store was opened.
    pub fn stats(&self) -> StoreStats {
        match &self.backend {
            Backend::Sqlite(s) => s.counters().snapshot(),
            Backend::Postgres(s) => s.counters().snapshot(),
        }
    }
}

pub(crate) fn to_chrono(d: Duration) -> Result<chrono::Duration, StoreError> {
    chrono::Duration::from_std(d)
        .map_err(|_| StoreError::InvalidInput("duration out of range".into()))
}

/// Counters behind [`StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    max_writes_per_commit: AtomicU64,
    events_inserted: AtomicU64,
    duplicates: AtomicU64,
    jobs_enqueued: AtomicU64,
    jobs_claimed: AtomicU64,
}

impl Counters {
    pub(crate) fn committed(&self, writes: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes, Ordering::Relaxed);
        self.max_writes_per_commit
            .fetch_max(writes, Ordering::Relaxed);
    }

    pub(crate) fn inserted(&self, outcome: &InsertOutcome) {
        if outcome.duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.events_inserted.fetch_add(1, Ordering::Relaxed);
            self.enqueued(outcome.job_ids.len());
        }
    }

    pub(crate) fn enqueued(&self, n: usize) {
        self.jobs_enqueued.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn claimed(&self, n: usize) {
        self.jobs_claimed.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            max_writes_per_commit: self.max_writes_per_commit.load(Ordering::Relaxed),
            events_inserted: self.events_inserted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            jobs_enqueued: self.jobs_enqueued.load(Ordering::Relaxed),
            jobs_claimed: self.jobs_claimed.load(Ordering::Relaxed),
        }
    }
}

/// Checks a job's lease: shared by both backends so they agree on what "held" means.
pub(crate) fn check_lease(
    job_id: i64,
    worker: &str,
    row: Option<(JobStatus, Option<String>)>,
) -> Result<(), StoreError> {
    match row {
        None => Err(StoreError::not_found("job", job_id)),
        Some((JobStatus::Running, Some(owner))) if owner == worker => Ok(()),
        Some(_) => Err(StoreError::lease_lost(job_id, worker)),
    }
}
