//! The PostgreSQL backend, for several instances sharing the work.
//!
//! Every write is an ordinary transaction; PostgreSQL's own WAL makes it durable at `COMMIT`
//! (with the server's default `synchronous_commit=on`), and concurrent commits share flushes
//! on the server side (`commit_delay`). Jobs are claimed with `FOR UPDATE SKIP LOCKED`, so
//! concurrent workers on any instance never block on or take the same row. Leases and leader
//! leases are timed with the server's `now()`, so instances with skewed clocks agree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{NoTls, Row};

use crate::migrations::{self, Migration};
use crate::snapshot::stored_state_value;
use crate::{
    AttemptOutcome, AttemptRecord, Counters, Derive, Derived, EntityState, EventFilter,
    EventSource, InsertOutcome, Job, JobDetail, JobFilter, JobStatus, NewEvent, NewJob,
    PruneCounts, Secret, Snapshot, StepResult, StoreError, StoreOptions, StoredEvent, Subscription,
    check_lease,
    types::{PreparedEvent, StateMap, effective_limit},
};

/// Key of the transaction-level advisory lock that serialises migrations between instances
/// starting at the same time ("toggl" in ASCII).
const MIGRATION_LOCK: i64 = 0x74_6f_67_67_6c;

#[derive(Clone)]
pub(crate) struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    counters: Arc<Counters>,
    /// Event inserts go to the batchers (see [`run_batcher`]).
    inserts: mpsc::Sender<InsertRequest>,
}

struct InsertRequest {
    event: PreparedEvent,
    derive: Option<Derive>,
    reply: Reply,
}

/// Where an insert's answer goes.
struct Reply {
    tx: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    /// The multi-thread runtime the caller waits on: a committed batch's answers are sent from
    /// there (see [`answer`]). None for any other caller, answered directly: a current-thread
    /// runtime may have nobody running its tasks (a caller in `Handle::block_on` on a thread of
    /// its own), and there is none outside a runtime.
    runtime: Option<tokio::runtime::Handle>,
}

impl Reply {
    fn new(tx: oneshot::Sender<Result<InsertOutcome, StoreError>>) -> Reply {
        Reply {
            tx,
            runtime: tokio::runtime::Handle::try_current()
                .ok()
                .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread),
        }
    }

    /// Answers from the thread this runs on (see [`answer`] for a committed batch's).
    fn send(self, answer: Result<InsertOutcome, StoreError>) {
        let _ = self.tx.send(answer);
    }
}

/// Answers a committed batch from one task spawned on each of its callers' runtimes, which wakes
/// the callers there.
///
/// Sent from the batchers' thread, each answer wakes its caller from outside its runtime: a
/// remote schedule each, often waking a parked worker (a futex call and, on a virtual machine,
/// an interrupt to another CPU), and all of it on the batchers' thread, between a write's
/// result and the next batch. One spawn per runtime is one remote schedule; the callers are then
/// woken from inside, onto that worker's own queue. At 16 clients this took the receiver from
/// 0.77-0.80 of pgbench to 1.00-1.06 (`bench/ingest_pg/README.md`).
///
/// A caller without a runtime to answer it from (see [`Reply::runtime`]) is answered here. A
/// caller whose runtime has shut down is not waiting any more: the task is dropped unrun, and
/// so is its answer.
fn answer(answers: Vec<(Reply, InsertOutcome)>) {
    let mut by_runtime: Vec<(tokio::runtime::Handle, Vec<(Reply, InsertOutcome)>)> = Vec::new();
    for (reply, outcome) in answers {
        let Some(runtime) = reply.runtime.clone() else {
            reply.send(Ok(outcome));
            continue;
        };
        match by_runtime.iter_mut().find(|(r, _)| r.id() == runtime.id()) {
            Some((_, group)) => group.push((reply, outcome)),
            None => by_runtime.push((runtime, vec![(reply, outcome)])),
        }
    }
    for (runtime, group) in by_runtime {
        drop(runtime.spawn(async move {
            for (reply, outcome) in group {
                reply.send(Ok(outcome));
            }
        }));
    }
}

/// How many batcher tasks share the event queue (see [`StoreOptions::insert_connections`]),
/// always leaving at least one connection to everything else.
fn batcher_count(options: &StoreOptions, cores: usize) -> usize {
    let wanted = options
        .insert_connections
        .unwrap_or_else(|| (options.pool_size / 4).clamp(1, 4).min((cores / 2).max(1)));
    wanted.clamp(1, options.pool_size.saturating_sub(1).max(1))
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Maps driver errors: lost connections, timeouts, server shutdown, resource exhaustion and
/// serialization conflicts are transient (`Unavailable`); decode failures and damaged data are
/// `Corrupt`; the rest is a bug (`Database`).
fn map_err(e: tokio_postgres::Error, context: &str) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let transient = ["08", "53", "57", "58"].iter().any(|c| code.starts_with(c))
            || code == "40001"
            || code == "40P01"
            || code == "55P03";
        if transient {
            return StoreError::Unavailable {
                context: context.to_owned(),
                source: Some(Box::new(e)),
            };
        }
        if code.starts_with("XX") {
            return StoreError::Corrupt {
                message: format!("{context}: {e}"),
            };
        }
        return StoreError::Database {
            context: context.to_owned(),
            source: Box::new(e),
        };
    }
    let text = e.to_string();
    if e.is_closed()
        || text.starts_with("error connecting")
        || text.starts_with("error communicating")
        || text.starts_with("timeout")
        || text.starts_with("connection closed")
    {
        return StoreError::Unavailable {
            context: context.to_owned(),
            source: Some(Box::new(e)),
        };
    }
    if text.starts_with("error deserializing") {
        return StoreError::Corrupt {
            message: format!("{context}: {e}"),
        };
    }
    StoreError::Database {
        context: context.to_owned(),
        source: Box::new(e),
    }
}

trait Ctx<T> {
    fn ctx(self, context: &str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, context: &str) -> Result<T, StoreError> {
        self.map_err(|e| map_err(e, context))
    }
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx)
        .map_err(|e| StoreError::corrupt(format!("column {idx}: {e}")))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

const EVENT_COLS: &str = "id, event_id, dedupe_key, subscription_id, workspace_id, entity, action, \
     trigger_name, entity_id, received_at, envelope, source";

fn event_from_row(r: &Row) -> Result<StoredEvent, StoreError> {
    let source: String = get(r, 11)?;
    Ok(StoredEvent {
        id: get(r, 0)?,
        event_id: get(r, 1)?,
        dedupe_key: get(r, 2)?,
        subscription_id: get(r, 3)?,
        workspace_id: get(r, 4)?,
        entity: get(r, 5)?,
        action: get(r, 6)?,
        trigger: get(r, 7)?,
        entity_id: get(r, 8)?,
        received_at: get(r, 9)?,
        envelope: get(r, 10)?,
        source: EventSource::parse(&source)
            .ok_or_else(|| StoreError::corrupt(format!("unknown event source {source:?}")))?,
    })
}

const JOB_COLS: &str = "id, event_row_id, rule, step_index, step_name, payload, status, priority, \
     not_before, attempts, lease_owner, lease_expires_at, sent_fingerprint, sent_at, result, \
     last_error, created_at, updated_at, finished_at";

fn parse_status(s: &str) -> Result<JobStatus, StoreError> {
    JobStatus::parse(s).ok_or_else(|| StoreError::corrupt(format!("unknown job status {s:?}")))
}

fn non_negative(v: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::corrupt(format!("negative {what}")))
}

fn job_from_row(r: &Row) -> Result<Job, StoreError> {
    let status: String = get(r, 6)?;
    Ok(Job {
        id: get(r, 0)?,
        event_row_id: get(r, 1)?,
        rule: get(r, 2)?,
        step_index: non_negative(get(r, 3)?, "step_index")?,
        step_name: get(r, 4)?,
        payload: get(r, 5)?,
        status: parse_status(&status)?,
        priority: get(r, 7)?,
        not_before: get(r, 8)?,
        attempts: non_negative(get(r, 9)?, "attempts")?,
        lease_owner: get(r, 10)?,
        lease_expires_at: get(r, 11)?,
        sent_fingerprint: get(r, 12)?,
        sent_at: get(r, 13)?,
        result: get(r, 14)?,
        last_error: get(r, 15)?,
        created_at: get(r, 16)?,
        updated_at: get(r, 17)?,
        finished_at: get(r, 18)?,
    })
}

const SUBSCRIPTION_COLS: &str = "workspace_id, subscription_id, url_callback, secret, previous_secret, \
     event_filters, enabled, validated, updated_at";

fn subscription_from_row(r: &Row) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        workspace_id: get(r, 0)?,
        subscription_id: get(r, 1)?,
        url_callback: get(r, 2)?,
        secret: Secret::new(get::<String>(r, 3)?),
        previous_secret: get::<Option<String>>(r, 4)?.map(Secret::new),
        event_filters: get(r, 5)?,
        enabled: get(r, 6)?,
        validated: get(r, 7)?,
        updated_at: get(r, 8)?,
    })
}

async fn insert_jobs(
    tx: &deadpool_postgres::Transaction<'_>,
    event_row_id: i64,
    jobs: &[NewJob],
) -> Result<Vec<i64>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO jobs (event_row_id, rule, step_index, step_name, payload, status, \
             priority, not_before, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, COALESCE($7, now()), now(), now()) \
             RETURNING id",
        )
        .await
        .ctx("preparing job insert")?;
    let mut ids = Vec::with_capacity(jobs.len());
    for j in jobs {
        let step_index = i32::try_from(j.step_index)
            .map_err(|_| StoreError::InvalidInput("step_index too large".into()))?;
        let row = tx
            .query_one(
                &stmt,
                &[
                    &event_row_id,
                    &j.rule,
                    &step_index,
                    &j.step_name,
                    &j.payload,
                    &j.priority,
                    &j.not_before,
                ],
            )
            .await
            .ctx("inserting a job")?;
        ids.push(get(&row, 0)?);
    }
    Ok(ids)
}

async fn lease_row(
    tx: &deadpool_postgres::Transaction<'_>,
    job_id: i64,
) -> Result<Option<(JobStatus, Option<String>)>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT status, lease_owner FROM jobs WHERE id = $1 FOR UPDATE",
            &[&job_id],
        )
        .await
        .ctx("checking a lease")?;
    row.map(|r| Ok((parse_status(&get::<String>(&r, 0)?)?, get(&r, 1)?)))
        .transpose()
}

async fn job_status(
    tx: &deadpool_postgres::Transaction<'_>,
    job_id: i64,
) -> Result<JobStatus, StoreError> {
    lease_row(tx, job_id)
        .await?
        .map(|(s, _)| s)
        .ok_or_else(|| StoreError::not_found("job", job_id))
}

async fn migrate(
    client: &mut Object,
    schema: Option<&str>,
    list: &[Migration],
) -> Result<(), StoreError> {
    let mig = |version: u32, message: &str| {
        let message = message.to_owned();
        move |e: tokio_postgres::Error| StoreError::Migration {
            version,
            message,
            source: Some(Box::new(e)),
        }
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| map_err(e, "beginning migrations"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| map_err(e, "locking for migrations"))?;
    if let Some(schema) = schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await
            .map_err(mig(0, "creating the schema"))?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(mig(0, "creating schema_migrations"))?;
    let applied: Vec<(u32, String)> = tx
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(mig(0, "reading schema_migrations"))?
        .iter()
        .map(|r| Ok((non_negative(get(r, 0)?, "version")?, get(r, 1)?)))
        .collect::<Result<_, StoreError>>()?;
    for m in migrations::pending(list, &applied)? {
        tracing::info!(
            version = m.version,
            name = m.name,
            "applying postgres migration"
        );
        tx.batch_execute(m.sql)
            .await
            .map_err(mig(m.version, m.name))?;
        let version = i32::try_from(m.version).expect("migration versions are small");
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &m.name],
        )
        .await
        .map_err(mig(m.version, "recording migration"))?;
    }
    tx.commit().await.map_err(mig(0, "committing migrations"))
}

async fn get_client(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| match e {
        PoolError::Backend(e) => map_err(e, "connecting to postgres"),
        PoolError::Timeout(t) => {
            StoreError::unavailable(format!("timed out getting a postgres connection ({t:?})"))
        }
        PoolError::Closed => StoreError::unavailable("postgres pool is closed"),
        other => StoreError::Unavailable {
            context: "getting a postgres connection".into(),
            source: Some(Box::new(other)),
        },
    })
}

async fn commit(
    counters: &Counters,
    tx: deadpool_postgres::Transaction<'_>,
) -> Result<(), StoreError> {
    tx.commit().await.ctx("committing")?;
    counters.committed(1);
    Ok(())
}

/// Runs the batchers, with their own connections, on a runtime of their own in a thread of its
/// own. Each batch is several hops between a batcher and its connection task; on the caller's
/// runtime every hop waits behind the HTTP tasks, and on a busy two-core machine that stretched
/// a batch from under a millisecond to several (receiver at 0.16 of pgbench with the batchers on
/// the shared runtime). A dedicated thread is scheduled by the OS instead, as SQLite's writer
/// is. The thread ends when every `Store` handle is dropped (the queue closes).
fn spawn_batchers(
    pool: Pool,
    counters: Arc<Counters>,
    queue: mpsc::Receiver<InsertRequest>,
    max_batch: usize,
) -> Result<(), StoreError> {
    let unavailable = |what: &str, e: std::io::Error| StoreError::Unavailable {
        context: format!("starting the postgres insert {what}"),
        source: Some(Box::new(e)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unavailable("runtime", e))?;
    let batchers = pool.status().max_size;
    std::thread::Builder::new()
        .name("store-pg-inserts".into())
        .spawn(move || {
            let queue = Arc::new(tokio::sync::Mutex::new(queue));
            let cache = Arc::new(StateCache::default());
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..batchers)
                    .map(|_| {
                        tokio::spawn(run_batcher(
                            pool.clone(),
                            counters.clone(),
                            cache.clone(),
                            queue.clone(),
                            max_batch,
                        ))
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            });
        })
        .map_err(|e| unavailable("thread", e))?;
    Ok(())
}

/// One batcher: a connection of its own, kept while it works ([`run_batches`]) and replaced
/// when it is lost. Without one, what waits is answered 503 at once.
async fn run_batcher(
    pool: Pool,
    counters: Arc<Counters>,
    cache: Arc<StateCache>,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<InsertRequest>>>,
    max_batch: usize,
) {
    loop {
        let connected = match get_client(&pool).await {
            Ok(client) => BatchStatements::prepare(&client)
                .await
                .map(|stmts| (client, stmts)),
            Err(e) => Err(e),
        };
        let open = match connected {
            Ok((client, stmts)) => {
                run_batches(&client, &stmts, &counters, &cache, &queue, max_batch).await
            }
            // No connection: what waits now is answered 503 (Toggl redelivers), and the next
            // batch tries again.
            Err(e) => {
                tracing::warn!(error = %e, "postgres insert batcher has no connection");
                let mut rx = queue.lock().await;
                match rx.recv().await {
                    Some(first) => {
                        first.reply.send(Err(e.to_batch_failure()));
                        while let Ok(next) = rx.try_recv() {
                            next.reply.send(Err(e.to_batch_failure()));
                        }
                        true
                    }
                    None => false,
                }
            }
        };
        if !open {
            return;
        }
    }
}

/// A batch whose `COMMIT` has been sent behind its write, and the answers that wait for it.
struct Pending<'c> {
    commit: PendingCommit<'c>,
    answers: Vec<(Reply, InsertOutcome)>,
}

/// A `COMMIT` in flight on a batcher's connection.
type PendingCommit<'c> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'c>,
>;

/// Answers a batch once its `COMMIT` is back. A failed `COMMIT` leaves the batch's fate unknown
/// (503: Toggl redelivers, and the dedupe key settles what did commit), and the state cache
/// may hold states it did not commit.
fn settle(
    counters: &Counters,
    cache: &StateCache,
    answers: Vec<(Reply, InsertOutcome)>,
    committed: Result<(), tokio_postgres::Error>,
) {
    match committed {
        Ok(()) => {
            counters.committed(answers.len() as u64);
            for (_, outcome) in &answers {
                counters.inserted(outcome);
            }
            answer(answers);
        }
        Err(e) => {
            cache.clear();
            let e = map_err(e, "committing an insert batch");
            tracing::warn!(error = %e, events = answers.len(), "postgres insert batch failed at commit");
            for (reply, _) in answers {
                reply.send(Err(e.to_batch_failure()));
            }
        }
    }
}

/// A batcher's commits in flight, oldest first (one connection answers in order).
struct InFlight<'c, 'a> {
    commits: std::collections::VecDeque<Pending<'c>>,
    counters: &'a Counters,
    cache: &'a StateCache,
}

impl<'c> InFlight<'c, '_> {
    /// A batch written: answered when its `COMMIT` is back, or now if it had none (a lone
    /// statement commits by itself).
    fn add(&mut self, answers: Vec<(Reply, InsertOutcome)>, commit: Option<PendingCommit<'c>>) {
        match commit {
            Some(commit) => self.commits.push_back(Pending { commit, answers }),
            None => settle(self.counters, self.cache, answers, Ok(())),
        }
    }

    async fn settle_first(&mut self) {
        if let Some(mut first) = self.commits.pop_front() {
            let committed = first.commit.as_mut().await;
            settle(self.counters, self.cache, first.answers, committed);
        }
    }

    async fn settle_all(&mut self) {
        while !self.commits.is_empty() {
            self.settle_first().await;
        }
    }

    /// Waits for `work`, answering each commit as it comes back meanwhile.
    async fn answering_while<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            let Some(first) = self.commits.front_mut() else {
                return work.await;
            };
            tokio::select! {
                biased;
                committed = first.commit.as_mut() => {
                    let first = self.commits.pop_front().expect("the first commit");
                    settle(self.counters, self.cache, first.answers, committed);
                }
                done = work.as_mut() => return done,
            }
        }
    }
}

/// Most batches whose `COMMIT` is in flight on one connection.
const PIPELINE: usize = 2;

/// Takes every event insert waiting in the queue (up to `max_batch`) and stores them in one
/// transaction (see [`insert_batch`]), so concurrent deliveries share round trips and one
/// commit, and answers them once its `COMMIT` is back.
///
/// The `COMMIT` goes out right behind the write, and the batcher does not wait for it: as soon
/// as the write's result is in, it collects and sends the next batch, which the server runs
/// right after that `COMMIT` (up to [`PIPELINE`] commits in flight). The server never waits for
/// the batcher between two batches, and the batcher derives the next batch while the server
/// flushes the WAL. Nothing is answered before its own `COMMIT` is back, so nothing is answered
/// before it is durable. The next batch may be derived from states whose `COMMIT` is still in
/// flight; if that `COMMIT` fails, the next batch's write finds the states it expected missing
/// and takes the long way (see [`insert_batch_on`]).
///
/// If a batch fails for a reason other than a lost database, each event is retried in a batch
/// of its own, so one bad event cannot fail the others (and an ambiguous commit is settled by
/// the dedupe key: a retried event that did commit comes back as a duplicate of itself).
///
/// Returns when the connection is lost (true) or the queue has closed (false).
async fn run_batches(
    client: &Object,
    stmts: &BatchStatements,
    counters: &Counters,
    cache: &StateCache,
    queue: &tokio::sync::Mutex<mpsc::Receiver<InsertRequest>>,
    max_batch: usize,
) -> bool {
    let mut in_flight = InFlight {
        commits: std::collections::VecDeque::new(),
        counters,
        cache,
    };
    loop {
        // The queue stays locked until this batch has read what it needs and sends its write
        // (see `insert_batch`): the next batcher collects meanwhile, so it takes everything
        // that arrived during this batch's first round trip. Without this, batchers split the
        // waiting events among themselves into small batches. Commits in flight are answered
        // while this batcher waits for its turn at the queue (another batcher may hold it for
        // long) and for work.
        let mut rx = in_flight.answering_while(queue.lock()).await;
        if in_flight.commits.len() >= PIPELINE {
            in_flight.settle_first().await;
        }
        let Some(first) = in_flight.answering_while(rx.recv()).await else {
            in_flight.settle_all().await;
            return false;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let all: Vec<&InsertRequest> = batch.iter().collect();
        // The last batch's `COMMIT` comes back while this write is out: it is answered then,
        // not once this write is back. (Waiting held every answer back by a write's round trip,
        // about 250 µs: 8 clients went from 0.61-0.63 of pgbench to 0.80.)
        let result = in_flight
            .answering_while(insert_batch(client, stmts, cache, &all, Some(rx)))
            .await;
        drop(all);
        match result {
            Ok((outcomes, commit)) => {
                let answers = batch.into_iter().map(|r| r.reply).zip(outcomes).collect();
                in_flight.add(answers, commit);
            }
            Err(e) => {
                // Earlier batches first: their commits went out before this batch.
                in_flight.settle_all().await;
                if e.is_unavailable() {
                    tracing::warn!(error = %e, events = batch.len(), "postgres insert batch failed");
                    for request in batch {
                        request.reply.send(Err(e.to_batch_failure()));
                    }
                    return true;
                }
                tracing::warn!(error = %e, events = batch.len(), "postgres insert batch failed; inserting one by one");
                let mut unavailable: Option<StoreError> = None;
                for request in batch {
                    if let Some(e) = &unavailable {
                        request.reply.send(Err(e.to_batch_failure()));
                        continue;
                    }
                    match insert_batch(client, stmts, cache, &[&request], None).await {
                        Ok((outcomes, commit)) => {
                            let answers = std::iter::once(request.reply).zip(outcomes).collect();
                            in_flight.add(answers, commit);
                        }
                        Err(e) => {
                            if e.is_unavailable() {
                                unavailable = Some(e.to_batch_failure());
                            }
                            request.reply.send(Err(e));
                        }
                    }
                }
                in_flight.settle_all().await;
                if unavailable.is_some() {
                    return true;
                }
            }
        }
    }
}

/// The statements of an insert batch, prepared once per connection.
struct BatchStatements {
    lock: tokio_postgres::Statement,
    states: tokio_postgres::Statement,
    write: tokio_postgres::Statement,
}

impl BatchStatements {
    async fn prepare(client: &Object) -> Result<BatchStatements, StoreError> {
        let (lock, states, write) = tokio::try_join!(
            // One transaction-level advisory lock per entity, taken in key order (so two
            // batches touching the same entities queue up instead of deadlocking) and held
            // until COMMIT, so the next delivery for an entity is classified against the state
            // this batch leaves. A row lock would not do: the first event of an entity has no
            // row to lock. (A hash collision only serialises two unrelated entities.)
            client.prepare_cached(
                "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT \
                 hashtextextended(e || ':' || i::text, 0) AS k \
                 FROM unnest($1::text[], $2::int8[]) AS u(e, i) ORDER BY k) AS keys"
            ),
            // A statement of its own after the lock: each statement reads a fresh snapshot,
            // so this one sees what the batch we waited for committed.
            client.prepare_cached(
                "SELECT entity, entity_id, state, at, version FROM entity_state \
                 WHERE (entity, entity_id) IN (SELECT * FROM unnest($1::text[], $2::int8[]))"
            ),
            // Everything else in one statement: the events (a key someone else stored is
            // skipped), the entity states and jobs of the events this statement inserted, and
            // the ids of the batch's keys ($24) that were already there (read from the
            // statement's snapshot, which does not include its own inserts). Job ids come from
            // one identity sequence in `ord` order. The states written come back with their new
            // versions.
            //
            // `chk` makes the write conditional: $25-$27 are the entity state versions the
            // batch was derived from (NULL: no row), empty when they were just read under the
            // lock. If any row is not that version any more, nothing is written and the
            // statement says so (kind 4); the batch is then read and derived again.
            client.prepare_cached(
                "WITH chk AS ( \
                   SELECT count(*) AS moved \
                   FROM unnest($25::text[], $26::int8[], $27::int8[]) AS c(e, i, v) \
                   LEFT JOIN entity_state s ON s.entity = c.e AND s.entity_id = c.i \
                   WHERE s.version IS DISTINCT FROM c.v), \
                 ins AS ( \
                   INSERT INTO events (dedupe_key, event_id, subscription_id, workspace_id, \
                   entity, action, trigger_name, entity_id, received_at, envelope, source) \
                   SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], \
                   $5::text[], $6::text[], $7::text[], $8::int8[], $9::timestamptz[], \
                   $10::text[], $11::text[]) \
                   WHERE (SELECT moved FROM chk) = 0 \
                   ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key), \
                 st AS ( \
                   INSERT INTO entity_state (entity, entity_id, state, at) \
                   SELECT s.e, s.i, s.st, s.at FROM unnest($12::text[], $13::text[], \
                   $14::int8[], $15::text[], $16::timestamptz[]) AS s(k, e, i, st, at) \
                   JOIN ins ON ins.dedupe_key = s.k \
                   ON CONFLICT (entity, entity_id) DO UPDATE \
                   SET state = excluded.state, at = excluded.at, \
                   version = nextval('entity_state_version') \
                   WHERE excluded.at >= entity_state.at \
                   RETURNING entity, entity_id, version), \
                 jb AS ( \
                   INSERT INTO jobs (event_row_id, rule, step_index, step_name, payload, \
                   status, priority, not_before, created_at, updated_at) \
                   SELECT ins.id, u.r, u.s, u.n, u.p, 'pending', u.pr, COALESCE(u.nb, now()), \
                   now(), now() \
                   FROM unnest($17::text[], $18::text[], $19::int4[], $20::text[], \
                   $21::jsonb[], $22::int4[], $23::timestamptz[]) \
                   WITH ORDINALITY AS u(k, r, s, n, p, pr, nb, ord) \
                   JOIN ins ON ins.dedupe_key = u.k ORDER BY u.ord RETURNING id, event_row_id) \
                 SELECT 0, id, dedupe_key, NULL::int8 FROM ins \
                 UNION ALL SELECT 1, id, dedupe_key, NULL FROM events WHERE dedupe_key = ANY($24) \
                 UNION ALL SELECT 2, id, NULL, event_row_id FROM jb \
                 UNION ALL SELECT 3, version, entity, entity_id FROM st \
                 UNION ALL SELECT 4, moved, NULL, NULL FROM chk WHERE moved > 0"
            ),
        )
        .ctx("preparing the insert batch statements")?;
        Ok(BatchStatements {
            lock,
            states,
            write,
        })
    }
}

/// How many entity states the batchers keep (each a [`Snapshot`]: its JSON text, about 1 KiB).
const STATE_CACHE_ENTRIES: usize = 8192;

/// An entity's row in `entity_state` as this instance last wrote or read it.
#[derive(Clone)]
enum Known {
    /// No row.
    Absent,
    Row {
        state: Arc<Snapshot>,
        at: DateTime<Utc>,
        /// `entity_state.version` (migration 0004): a new one from a sequence on every write.
        version: i64,
    },
}

/// The entity states the batchers last wrote or read, so that a batch whose entities are all
/// known can be derived before anything is sent, and stored in one round trip (see
/// [`insert_batch_on`]).
///
/// Unlike SQLite's cache, this one is never trusted on its own: other instances write the same
/// table. The write checks, under the entities' locks, that every row is still the version the
/// derivations saw, and writes nothing when one moved. So a stale entry costs a round trip, never
/// a wrong trigger. It is cleared when full, and when a batch fails (the commit's fate may be
/// unknown).
#[derive(Default)]
pub(crate) struct StateCache {
    map: parking_lot::Mutex<StateMap<Known, STATE_CACHE_ENTRIES>>,
}

impl StateCache {
    fn clear(&self) {
        self.map.lock().clear();
    }

    fn remember(&self, entries: impl IntoIterator<Item = ((String, i64), Known)>) {
        let mut map = self.map.lock();
        for (key, known) in entries {
            map.insert(key, known);
        }
    }

    fn forget(&self, keys: &[(&str, i64)]) {
        let mut map = self.map.lock();
        for (entity, id) in keys {
            map.remove(&((*entity).to_owned(), *id));
        }
    }

    /// What the batch's entities are believed to be, when every one is known. An entity that is
    /// not known but that the batch creates is expected to have no row yet: a guess, which the
    /// write checks like the rest.
    fn lookup(&self, keys: &[(&str, i64)], created: &[(&str, i64)]) -> Option<Vec<Known>> {
        let map = self.map.lock();
        keys.iter()
            .map(|(entity, id)| match map.get(&((*entity).to_owned(), *id)) {
                Some(known) => Some(known.clone()),
                None => created.contains(&(*entity, *id)).then_some(Known::Absent),
            })
            .collect()
    }
}

/// What one event of a batch turned into before the write.
enum Planned {
    /// A later copy of a key that an earlier event of the batch carries.
    Repeat,
    /// Refused by its derivation ([`Derived::AlreadyStored`]).
    Refused,
    /// To insert, with these triggers and jobs.
    Insert { trigger: String, jobs: Vec<NewJob> },
}

/// Stores a batch in one transaction.
///
/// - Without derivations: one statement, its own transaction, one round trip.
/// - With derivations, when every entity is in the [`StateCache`]: the derivations run first,
///   against the cached states, then `BEGIN`, the entity locks, the write and `COMMIT` go
///   together, one round trip. The write checks the versions and writes nothing if a state
///   moved; the batch then goes the long way, below.
/// - Otherwise two round trips: `BEGIN`, the locks and the read of the entity states go
///   together; then the derivations run here in batch order (each seeing the state the earlier
///   events of the batch leave), and the write goes with `COMMIT`.
///
/// Returns the outcomes with the batch's `COMMIT`, sent behind the write but not yet answered
/// (`None` for a lone statement, which commits by itself): nothing is durable before the
/// caller has it back (see [`run_batches`]).
///
/// `queue`, when given, is the batchers' locked queue: it is unlocked just before the write goes
/// out.
async fn insert_batch<'c>(
    client: &'c Object,
    stmts: &BatchStatements,
    cache: &StateCache,
    batch: &[&InsertRequest],
    queue: Option<QueueGuard<'_>>,
) -> Result<(Vec<InsertOutcome>, Option<PendingCommit<'c>>), StoreError> {
    let result = insert_batch_on(client, stmts, cache, batch, queue).await;
    if result.is_err() {
        cache.clear();
        // Best effort: leave the pooled connection outside any transaction.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// The batchers' queue, held by the batcher that is collecting or reading.
type QueueGuard<'a> = tokio::sync::MutexGuard<'a, mpsc::Receiver<InsertRequest>>;

/// An entity state a batch's derivations start from.
type Previous = ((String, i64), Known);

async fn insert_batch_on<'c>(
    client: &'c Object,
    stmts: &BatchStatements,
    cache: &StateCache,
    batch: &[&InsertRequest],
    mut queue: Option<QueueGuard<'_>>,
) -> Result<(Vec<InsertOutcome>, Option<PendingCommit<'c>>), StoreError> {
    let mut lock_keys: Vec<(&str, i64)> = batch
        .iter()
        .filter(|r| r.derive.is_some())
        .filter_map(|r| Some((r.event.ev.entity.as_str(), r.event.ev.entity_id?)))
        .collect();
    lock_keys.sort_unstable();
    lock_keys.dedup();
    if lock_keys.is_empty() {
        // Nothing to read first: the write alone, its own (atomic) transaction.
        return write_batch(client, stmts, cache, batch, &[], Vec::new(), queue.take())
            .await?
            .ok_or_else(|| StoreError::corrupt("an unconditional insert batch was refused"));
    }
    let created: Vec<(&str, i64)> = batch
        .iter()
        .filter(|r| r.derive.is_some() && r.event.ev.action == "created")
        .filter_map(|r| Some((r.event.ev.entity.as_str(), r.event.ev.entity_id?)))
        .collect();
    if let Some(known) = cache.lookup(&lock_keys, &created) {
        let previous = lock_keys
            .iter()
            .map(|(e, i)| ((*e).to_owned(), *i))
            .zip(known)
            .collect();
        if let Some(outcomes) = write_batch(
            client,
            stmts,
            cache,
            batch,
            &lock_keys,
            previous,
            queue.take(),
        )
        .await?
        {
            return Ok(outcomes);
        }
        // A state moved (another instance wrote it, or a guess was wrong): read them all.
        cache.forget(&lock_keys);
    }

    // In this order on the server: the lock first, then the states, so the read sees what a
    // batch we waited for committed.
    let lock_entity: Vec<&str> = lock_keys.iter().map(|k| k.0).collect();
    let lock_id: Vec<i64> = lock_keys.iter().map(|k| k.1).collect();
    let params: [&(dyn ToSql + Sync); 2] = [&lock_entity, &lock_id];
    let (_, _, rows) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        client.query(&stmts.lock, &params),
        client.query(&stmts.states, &params),
    )
    .ctx("reading before an insert batch")?;
    let mut read: HashMap<(String, i64), Known> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let text: String = get(row, 2)?;
        read.insert(
            (get(row, 0)?, get(row, 1)?),
            Known::Row {
                state: Arc::new(Snapshot::from_stored(text)?),
                at: get(row, 3)?,
                version: get(row, 4)?,
            },
        );
    }
    let previous: Vec<Previous> = lock_keys
        .iter()
        .map(|(e, i)| {
            let key = ((*e).to_owned(), *i);
            let known = read.remove(&key).unwrap_or(Known::Absent);
            (key, known)
        })
        .collect();
    // True until this transaction ends, and `write_batch` brings the written ones up to date.
    cache.remember(previous.iter().cloned());
    write_batch(client, stmts, cache, batch, &[], previous, queue.take())
        .await?
        .ok_or_else(|| StoreError::corrupt("an insert batch was refused after reading its states"))
}

/// Plans the batch against `previous` (the states of its derived events' entities) and writes
/// it. With `lock` (the batch's entities), the transaction starts here: `BEGIN` and the locks
/// go out with the write, which then only writes if every state in `previous` is still that
/// version. Without it, the caller has begun the transaction and read `previous` under the
/// locks (or nothing needed reading). `None`: a state moved and nothing was written (the
/// transaction is then over). The `COMMIT` is returned in flight, as [`insert_batch`] says.
async fn write_batch<'c>(
    client: &'c Object,
    stmts: &BatchStatements,
    cache: &StateCache,
    batch: &[&InsertRequest],
    lock: &[(&str, i64)],
    previous: Vec<Previous>,
    queue: Option<QueueGuard<'_>>,
) -> Result<Option<(Vec<InsertOutcome>, Option<PendingCommit<'c>>)>, StoreError> {
    let keys: Vec<&str> = batch.iter().map(|r| r.event.key.as_str()).collect();
    let in_transaction = !previous.is_empty();
    // What the write checks, in the one-round-trip case.
    let (mut chk_entity, mut chk_id, mut chk_version) = (Vec::new(), Vec::new(), Vec::new());
    if !lock.is_empty() {
        for ((entity, id), known) in &previous {
            chk_entity.push(entity.as_str());
            chk_id.push(*id);
            chk_version.push(match known {
                Known::Absent => None,
                Known::Row { version, .. } => Some(*version),
            });
        }
    }
    // Each entity's state as the next derivation must see it: the stored one, then moved
    // forward by the batch's own events (newest `at` wins, as the upsert below does).
    let mut latest: HashMap<(&str, i64), (&Snapshot, DateTime<Utc>)> = previous
        .iter()
        .filter_map(|((entity, id), known)| match known {
            Known::Absent => None,
            Known::Row { state, at, .. } => Some(((entity.as_str(), *id), (&**state, *at))),
        })
        .collect();

    // Plan each event in batch order, as one-by-one inserts would have seen them. An event
    // already stored by an earlier batch is planned too (the write skips it): checking first
    // would cost a statement per batch for what is a rare redelivery.
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    let mut plans = Vec::with_capacity(batch.len());
    for (request, key) in batch.iter().zip(&keys) {
        let ev = &request.event.ev;
        if !seen.insert(*key) {
            plans.push(Planned::Repeat);
            continue;
        }
        let plan = match &request.derive {
            None => Planned::Insert {
                trigger: ev.trigger.clone(),
                jobs: ev.jobs.clone(),
            },
            Some(derive) => {
                let previous = ev
                    .entity_id
                    .and_then(|id| latest.get(&(ev.entity.as_str(), id)))
                    .map(|(state, _)| *state);
                match derive(previous).checked()? {
                    Derived::AlreadyStored => Planned::Refused,
                    Derived::Store { trigger, jobs } => Planned::Insert { trigger, jobs },
                }
            }
        };
        if let (Planned::Insert { .. }, Some(state), Some(entity_id)) =
            (&plan, &ev.entity_state, ev.entity_id)
        {
            let slot = latest
                .entry((ev.entity.as_str(), entity_id))
                .or_insert((&state.state, state.at));
            if state.at >= slot.1 {
                *slot = (&state.state, state.at);
            }
        }
        plans.push(plan);
    }

    // Columns of the rows to write.
    let inserts: Vec<usize> = (0..batch.len())
        .filter(|&i| matches!(plans[i], Planned::Insert { .. }))
        .collect();
    let ev = |i: usize| &batch[i].event.ev;
    let trigger_of = |i: usize| match &plans[i] {
        Planned::Insert { trigger, .. } => trigger.as_str(),
        _ => "",
    };
    let col_key: Vec<&str> = inserts.iter().map(|&i| keys[i]).collect();
    let col_event_id: Vec<i64> = inserts.iter().map(|&i| ev(i).event_id).collect();
    let col_sub: Vec<Option<i64>> = inserts.iter().map(|&i| ev(i).subscription_id).collect();
    let col_ws: Vec<Option<i64>> = inserts.iter().map(|&i| ev(i).workspace_id).collect();
    let col_entity: Vec<&str> = inserts.iter().map(|&i| ev(i).entity.as_str()).collect();
    let col_action: Vec<&str> = inserts.iter().map(|&i| ev(i).action.as_str()).collect();
    let col_trigger: Vec<&str> = inserts.iter().map(|&i| trigger_of(i)).collect();
    let col_entity_id: Vec<Option<i64>> = inserts.iter().map(|&i| ev(i).entity_id).collect();
    let col_received: Vec<DateTime<Utc>> = inserts.iter().map(|&i| ev(i).received_at).collect();
    let col_envelope: Vec<&str> = inserts.iter().map(|&i| ev(i).envelope.as_str()).collect();
    let col_source: Vec<&str> = inserts.iter().map(|&i| ev(i).source.as_str()).collect();

    // Entity state: one row per entity (a multi-row upsert may not touch a row twice); the
    // newest `at` wins, and on a tie the later event in the batch, as one by one would.
    let mut newest: HashMap<(&str, i64), (usize, &EntityState)> = HashMap::new();
    for &i in &inserts {
        if let (Some(state), Some(entity_id)) = (&ev(i).entity_state, ev(i).entity_id) {
            let slot = newest
                .entry((ev(i).entity.as_str(), entity_id))
                .or_insert((i, state));
            if state.at >= slot.1.at {
                *slot = (i, state);
            }
        }
    }
    let mut state_rows: Vec<_> = newest.iter().map(|(k, v)| (*k, *v)).collect();
    state_rows.sort_by(|a, b| a.0.cmp(&b.0));
    let st_key: Vec<&str> = state_rows.iter().map(|r| keys[r.1.0]).collect();
    let st_entity: Vec<&str> = state_rows.iter().map(|r| r.0.0).collect();
    let st_id: Vec<i64> = state_rows.iter().map(|r| r.0.1).collect();
    let st_state: Vec<&str> = state_rows.iter().map(|r| r.1.1.state.text()).collect();
    let st_at: Vec<DateTime<Utc>> = state_rows.iter().map(|r| r.1.1.at).collect();

    let (mut j_key, mut j_rule, mut j_index, mut j_name, mut j_payload, mut j_prio, mut j_nb) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for &i in &inserts {
        let Planned::Insert { jobs, .. } = &plans[i] else {
            continue;
        };
        for job in jobs {
            j_key.push(keys[i]);
            j_rule.push(job.rule.as_str());
            j_index.push(
                i32::try_from(job.step_index)
                    .map_err(|_| StoreError::InvalidInput("step_index too large".into()))?,
            );
            j_name.push(job.step_name.as_str());
            j_payload.push(&job.payload);
            j_prio.push(job.priority);
            j_nb.push(job.not_before);
        }
    }

    let lock_entity: Vec<&str> = lock.iter().map(|k| k.0).collect();
    let lock_id: Vec<i64> = lock.iter().map(|k| k.1).collect();
    let lock_params: [&(dyn ToSql + Sync); 2] = [&lock_entity, &lock_id];
    let write_params: [&(dyn ToSql + Sync); 27] = [
        &col_key,
        &col_event_id,
        &col_sub,
        &col_ws,
        &col_entity,
        &col_action,
        &col_trigger,
        &col_entity_id,
        &col_received,
        &col_envelope,
        &col_source,
        &st_key,
        &st_entity,
        &st_id,
        &st_state,
        &st_at,
        &j_key,
        &j_rule,
        &j_index,
        &j_name,
        &j_payload,
        &j_prio,
        &j_nb,
        &keys,
        &chk_entity,
        &chk_id,
        &chk_version,
    ];
    // The next batcher may collect and read now: its locks wait for this batch's COMMIT.
    drop(queue);
    // Four futures, sent in this order when first polled (one round trip); each must be its
    // own, or the lock would only go out once `BEGIN` has come back, after the write.
    let locking = !lock.is_empty();
    let mut commit: PendingCommit<'c> = Box::pin(async move {
        if in_transaction {
            client.batch_execute("COMMIT").await
        } else {
            Ok(())
        }
    });
    let mut deferred = false;
    let (_, _, rows, _) = tokio::try_join!(
        async {
            if locking {
                client.batch_execute("BEGIN").await
            } else {
                Ok(())
            }
        },
        async {
            if locking {
                client.query(&stmts.lock, &lock_params).await.map(drop)
            } else {
                Ok(())
            }
        },
        client.query(&stmts.write, &write_params),
        async {
            // Sent now, right behind the write; the caller awaits the answer.
            match futures::poll!(commit.as_mut()) {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => {
                    deferred = true;
                    Ok(())
                }
            }
        },
    )
    .ctx("writing an insert batch")?;
    let mut commit = deferred.then_some(commit);
    let mut new_ids: HashMap<String, i64> = HashMap::new();
    let mut old_ids: HashMap<String, i64> = HashMap::new();
    let mut jobs_by_event: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut written = Vec::new();
    for row in &rows {
        let kind: i32 = get(row, 0)?;
        let id: i64 = get(row, 1)?;
        match kind {
            0 => {
                new_ids.insert(get(row, 2)?, id);
            }
            1 => {
                old_ids.insert(get(row, 2)?, id);
            }
            2 => jobs_by_event.entry(get(row, 3)?).or_default().push(id),
            3 => written.push((get::<String>(row, 2)?, get::<i64>(row, 3)?, id)),
            _ => {
                if let Some(commit) = commit.take() {
                    commit.await.ctx("committing")?;
                }
                return Ok(None);
            }
        }
    }
    for ids in jobs_by_event.values_mut() {
        ids.sort_unstable();
    }
    cache.remember(written.into_iter().filter_map(|(entity, id, version)| {
        let state = newest.get(&(entity.as_str(), id))?.1;
        Some((
            (entity, id),
            Known::Row {
                state: Arc::clone(&state.state),
                at: state.at,
                version,
            },
        ))
    }));

    // The first event of each key decides; later copies in the batch are its duplicates.
    let mut first_id: HashMap<&str, i64> = HashMap::with_capacity(batch.len());
    let mut outcomes = Vec::with_capacity(batch.len());
    for (plan, &key) in plans.into_iter().zip(&keys) {
        let duplicate = |id| InsertOutcome {
            id,
            duplicate: true,
            job_ids: Vec::new(),
            trigger: String::new(),
        };
        let outcome = match plan {
            Planned::Repeat => duplicate(first_id[key]),
            // A redelivery is a duplicate of its stored row, whatever its derivation said.
            Planned::Refused => duplicate(old_ids.get(key).copied().unwrap_or(0)),
            Planned::Insert { trigger, .. } => match new_ids.get(key) {
                Some(&id) => InsertOutcome {
                    id,
                    duplicate: false,
                    job_ids: jobs_by_event.remove(&id).unwrap_or_default(),
                    trigger,
                },
                None => duplicate(match old_ids.get(key) {
                    Some(&id) => id,
                    // Stored by a transaction that committed after this statement's snapshot
                    // was taken (ON CONFLICT waited for it): look it up now.
                    None => lookup_event_id(client, key).await?,
                }),
            },
        };
        first_id.entry(key).or_insert(outcome.id);
        outcomes.push(outcome);
    }
    Ok(Some((outcomes, commit)))
}

/// `DROP SCHEMA ... CASCADE` (see [`crate::TempSchema`]); nothing happens if it does not exist.
pub(crate) async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    if !valid_schema(schema) {
        return Err(StoreError::Config(format!(
            "schema {schema:?} must be letters, digits and _ only"
        )));
    }
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .ctx("connecting to drop a schema")?;
    let connection = tokio::spawn(connection);
    let result = client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .ctx("dropping a schema");
    drop(client);
    let _ = connection.await;
    result
}

async fn lookup_event_id(client: &Object, key: &str) -> Result<i64, StoreError> {
    let row = client
        .query_opt("SELECT id FROM events WHERE dedupe_key = $1", &[&key])
        .await
        .ctx("looking up a duplicate")?
        .ok_or_else(|| StoreError::corrupt(format!("event {key} vanished during insert")))?;
    get(&row, 0)
}

impl PgStore {
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<PgStore, StoreError> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("bad postgres url: {e}")))?;
        cfg.connect_timeout(options.connect_timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("toggl-connect");
        }
        let mut session = cfg.get_options().unwrap_or_default().to_owned();
        session.push_str(&format!(
            " -c statement_timeout={}",
            options.statement_timeout.as_millis().max(1)
        ));
        if let Some(schema) = &options.schema {
            if !valid_schema(schema) {
                return Err(StoreError::Config(format!(
                    "schema {schema:?} must be letters, digits and _ only"
                )));
            }
            session.push_str(&format!(" -c search_path={schema}"));
        }
        let make_pool = |size: usize, extra_options: &str| {
            let mut cfg = cfg.clone();
            cfg.options(format!("{session} {extra_options}").trim());
            let manager = Manager::from_config(
                cfg,
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(options.connect_timeout))
                .create_timeout(Some(options.connect_timeout))
                .recycle_timeout(Some(options.connect_timeout))
                .build()
                .map_err(|e| StoreError::Config(format!("building the connection pool: {e}")))
        };
        // `pool_size` is the instance's whole budget: the insert batchers' connections come
        // out of it.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let batchers = batcher_count(options, cores);
        let pool = make_pool(options.pool_size.saturating_sub(batchers).max(1), "")?;
        let mut client = get_client(&pool).await?;
        migrate(&mut client, options.schema.as_deref(), migrations::POSTGRES).await?;
        drop(client);
        let counters = Arc::new(Counters::default());
        let (inserts, queue) = mpsc::channel(options.write_queue.max(1));
        spawn_batchers(
            // The batchers only look rows up by key. Their statements are prepared once per
            // connection, and a plan made while a table was small (a new deployment, or any
            // table autovacuum has not analysed yet) keeps scanning it sequentially as it
            // grows: seen as 25% of the server's CPU in `dedupe_key = ANY($1)` seq scans and
            // the receiver at 0.16 of pgbench. Index lookups are right at every size here.
            make_pool(batchers, "-c enable_seqscan=off")?,
            counters.clone(),
            queue,
            options.max_batch.max(1),
        )?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                counters,
                inserts,
            }),
        })
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    async fn client(&self) -> Result<Object, StoreError> {
        get_client(&self.inner.pool).await
    }

    async fn commit(&self, tx: deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
        commit(&self.inner.counters, tx).await
    }

    async fn query_rows<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        map: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.ctx("preparing a query")?;
        client
            .query(&stmt, params)
            .await
            .ctx("running a query")?
            .iter()
            .map(map)
            .collect()
    }

    /// Runs one write statement in its own transaction; returns the affected row count.
    async fn execute(
        &self,
        sql: &str,
        params: Params<'_>,
        context: &str,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n = client.execute(sql, params).await.ctx(context)?;
        self.inner.counters.committed(1);
        Ok(n)
    }

    pub(crate) async fn insert_event(
        &self,
        event: NewEvent,
        derive: Option<Derive>,
    ) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .inserts
            .send(InsertRequest {
                event: PreparedEvent::new(event),
                derive,
                reply: Reply::new(reply),
            })
            .await
            .map_err(|_| StoreError::unavailable("postgres insert batcher has stopped"))?;
        answer.await.map_err(|_| {
            StoreError::unavailable("postgres insert batcher stopped before replying")
        })?
    }

    pub(crate) async fn get_entity_state(
        &self,
        entity: String,
        entity_id: i64,
    ) -> Result<Option<(Value, DateTime<Utc>)>, StoreError> {
        Ok(self
            .query_rows(
                "SELECT state, at FROM entity_state WHERE entity = $1 AND entity_id = $2",
                &[&entity, &entity_id],
                |r| Ok((stored_state_value(&get::<String>(r, 0)?)?, get(r, 1)?)),
            )
            .await?
            .pop())
    }

    pub(crate) async fn list_events(&self, f: EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLS} FROM events \
             WHERE ($1::text IS NULL OR position(' ' || $1 || ' ' in ' ' || trigger_name || ' ') > 0) \
             AND ($2::timestamptz IS NULL OR received_at >= $2) \
             AND ($3::timestamptz IS NULL OR received_at < $3) \
             AND ($4::bigint IS NULL OR id > $4) ORDER BY id LIMIT $5"
        );
        let limit = i64::from(effective_limit(f.limit));
        self.query_rows(
            &sql,
            &[&f.trigger, &f.since, &f.until, &f.after_id, &limit],
            event_from_row,
        )
        .await
    }

    pub(crate) async fn get_event(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLS} FROM events WHERE id = $1");
        Ok(self.query_rows(&sql, &[&id], event_from_row).await?.pop())
    }

    pub(crate) async fn enqueue_jobs(
        &self,
        event_row_id: i64,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        let exists = tx
            .query_opt(
                "SELECT id FROM events WHERE id = $1 FOR SHARE",
                &[&event_row_id],
            )
            .await
            .ctx("checking the event")?;
        if exists.is_none() {
            return Err(StoreError::not_found("event", event_row_id));
        }
        let ids = insert_jobs(&tx, event_row_id, &jobs).await?;
        self.commit(tx).await?;
        self.inner.counters.enqueued(ids.len());
        Ok(ids)
    }

    pub(crate) async fn claim_jobs(
        &self,
        worker: String,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET status = 'running', lease_owner = $1, \
             lease_expires_at = now() + make_interval(secs => $3::float8), \
             attempts = attempts + 1, updated_at = now() \
             WHERE id IN (SELECT id FROM jobs WHERE status IN ('pending', 'running') AND \
               ((status = 'pending' AND not_before <= now()) OR \
                (status = 'running' AND lease_expires_at <= now())) \
               ORDER BY priority, not_before, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING {JOB_COLS}"
        );
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        let rows = tx
            .query(&sql, &[&worker, &i64::from(limit), &secs(lease)])
            .await
            .ctx("claiming jobs")?;
        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(tx).await?;
        jobs.sort_by(|a, b| {
            (a.priority, a.not_before, a.id).cmp(&(b.priority, b.not_before, b.id))
        });
        self.inner.counters.claimed(jobs.len());
        Ok(jobs)
    }

    pub(crate) async fn renew_lease(
        &self,
        job_id: i64,
        worker: String,
        lease: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        check_lease(job_id, &worker, lease_row(&tx, job_id).await?)?;
        let row = tx
            .query_one(
                "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $2::float8), \
                 updated_at = now() WHERE id = $1 RETURNING lease_expires_at",
                &[&job_id, &secs(lease)],
            )
            .await
            .ctx("renewing a lease")?;
        let expires = get(&row, 0)?;
        self.commit(tx).await?;
        Ok(expires)
    }

    pub(crate) async fn record_attempt(
        &self,
        job_id: i64,
        a: AttemptRecord,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        job_status(&tx, job_id).await?;
        let attempt = i32::try_from(a.attempt)
            .map_err(|_| StoreError::InvalidInput("attempt too large".into()))?;
        let status = a.status.map(i32::from);
        tx.execute(
            "INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, request, status, \
             error, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &job_id,
                &attempt,
                &a.started_at,
                &a.finished_at,
                &a.request,
                &status,
                &a.error,
                &a.outcome.as_str(),
            ],
        )
        .await
        .ctx("recording an attempt")?;
        self.commit(tx).await
    }

    /// Checks the lease under a row lock, runs `sql` with `$1` = job id and `rest` after it.
    async fn leased_update(
        &self,
        job_id: i64,
        worker: &str,
        sql: &str,
        rest: Params<'_>,
        context: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        check_lease(job_id, worker, lease_row(&tx, job_id).await?)?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&job_id];
        params.extend_from_slice(rest);
        tx.execute(sql, &params).await.ctx(context)?;
        self.commit(tx).await
    }

    pub(crate) async fn mark_sent(
        &self,
        job_id: i64,
        worker: String,
        fingerprint: String,
    ) -> Result<(), StoreError> {
        self.leased_update(
            job_id,
            &worker,
            "UPDATE jobs SET sent_fingerprint = $2, sent_at = now(), updated_at = now() WHERE id = $1",
            &[&fingerprint],
            "marking a job sent",
        )
        .await
    }

    pub(crate) async fn complete_job(
        &self,
        job_id: i64,
        worker: String,
        result: Value,
        followups: Vec<NewJob>,
    ) -> Result<Vec<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        check_lease(job_id, &worker, lease_row(&tx, job_id).await?)?;
        let row = tx
            .query_one(
                "UPDATE jobs SET status = 'succeeded', result = $2, lease_expires_at = NULL, \
                 finished_at = now(), updated_at = now() WHERE id = $1 RETURNING event_row_id",
                &[&job_id, &result],
            )
            .await
            .ctx("completing a job")?;
        let event_row_id: i64 = get(&row, 0)?;
        let ids = insert_jobs(&tx, event_row_id, &followups).await?;
        self.commit(tx).await?;
        self.inner.counters.enqueued(ids.len());
        Ok(ids)
    }

    pub(crate) async fn retry_job_later(
        &self,
        job_id: i64,
        worker: String,
        at: DateTime<Utc>,
        error: String,
    ) -> Result<(), StoreError> {
        self.leased_update(
            job_id,
            &worker,
            "UPDATE jobs SET status = 'pending', not_before = $2, last_error = $3, \
             lease_expires_at = NULL, updated_at = now() WHERE id = $1",
            &[&at, &error],
            "rescheduling a job",
        )
        .await
    }

    pub(crate) async fn dead_letter(
        &self,
        job_id: i64,
        worker: String,
        error: String,
    ) -> Result<(), StoreError> {
        self.leased_update(
            job_id,
            &worker,
            "UPDATE jobs SET status = 'dead', last_error = $2, lease_expires_at = NULL, \
             finished_at = now(), updated_at = now() WHERE id = $1",
            &[&error],
            "dead-lettering a job",
        )
        .await
    }

    pub(crate) async fn list_jobs(&self, f: JobFilter) -> Result<Vec<Job>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE ($1::text IS NULL OR status = $1) \
             AND ($2::text IS NULL OR rule = $2) AND ($3::bigint IS NULL OR event_row_id = $3) \
             ORDER BY id LIMIT $4"
        );
        let status = f.status.map(JobStatus::as_str);
        let limit = i64::from(effective_limit(f.limit));
        self.query_rows(
            &sql,
            &[&status, &f.rule, &f.event_row_id, &limit],
            job_from_row,
        )
        .await
    }

    pub(crate) async fn get_job(&self, job_id: i64) -> Result<Option<JobDetail>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the job and its attempts.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .ctx("beginning a read")?;
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1");
        let Some(row) = tx.query_opt(&sql, &[&job_id]).await.ctx("reading a job")? else {
            return Ok(None);
        };
        let job = job_from_row(&row)?;
        let attempts = tx
            .query(
                "SELECT attempt, started_at, finished_at, request, status, error, outcome \
                 FROM job_attempts WHERE job_id = $1 ORDER BY id",
                &[&job_id],
            )
            .await
            .ctx("reading attempts")?
            .iter()
            .map(|r| {
                let outcome: String = get(r, 6)?;
                let status: Option<i32> = get(r, 4)?;
                Ok(AttemptRecord {
                    attempt: non_negative(get(r, 0)?, "attempt")?,
                    started_at: get(r, 1)?,
                    finished_at: get(r, 2)?,
                    request: get(r, 3)?,
                    status: status
                        .map(|s| {
                            u16::try_from(s)
                                .map_err(|_| StoreError::corrupt(format!("http status {s}")))
                        })
                        .transpose()?,
                    error: get(r, 5)?,
                    outcome: AttemptOutcome::parse(&outcome).ok_or_else(|| {
                        StoreError::corrupt(format!("unknown attempt outcome {outcome:?}"))
                    })?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit().await.ctx("ending a read")?;
        Ok(Some(JobDetail { job, attempts }))
    }

    pub(crate) async fn retry_dead(&self, job_id: i64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        let status = job_status(&tx, job_id).await?;
        if status != JobStatus::Dead {
            return Err(StoreError::WrongState {
                job_id,
                status,
                operation: "retry",
            });
        }
        tx.execute(
            "UPDATE jobs SET status = 'pending', not_before = now(), finished_at = NULL, \
             updated_at = now() WHERE id = $1",
            &[&job_id],
        )
        .await
        .ctx("retrying a dead job")?;
        self.commit(tx).await
    }

    pub(crate) async fn cancel_job(&self, job_id: i64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        let status = job_status(&tx, job_id).await?;
        if matches!(status, JobStatus::Succeeded | JobStatus::Cancelled) {
            return Err(StoreError::WrongState {
                job_id,
                status,
                operation: "cancel",
            });
        }
        tx.execute(
            "UPDATE jobs SET status = 'cancelled', lease_expires_at = NULL, finished_at = now(), \
             updated_at = now() WHERE id = $1",
            &[&job_id],
        )
        .await
        .ctx("cancelling a job")?;
        self.commit(tx).await
    }

    pub(crate) async fn step_results_for_event(
        &self,
        event_row_id: i64,
        rule: String,
    ) -> Result<Vec<StepResult>, StoreError> {
        self.query_rows(
            "SELECT id, step_index, step_name, result FROM jobs \
             WHERE event_row_id = $1 AND rule = $2 AND status = 'succeeded' \
             ORDER BY step_index, id",
            &[&event_row_id, &rule],
            |r| {
                Ok(StepResult {
                    job_id: get(r, 0)?,
                    step_index: non_negative(get(r, 1)?, "step_index")?,
                    step_name: get(r, 2)?,
                    result: get::<Option<Value>>(r, 3)?.unwrap_or(Value::Null),
                })
            },
        )
        .await
    }

    pub(crate) async fn upsert_subscription(&self, s: Subscription) -> Result<(), StoreError> {
        let previous = s.previous_secret.as_ref().map(Secret::expose);
        self.execute(
            "INSERT INTO subscriptions (workspace_id, subscription_id, url_callback, secret, \
             previous_secret, event_filters, enabled, validated, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) \
             ON CONFLICT (workspace_id, subscription_id) DO UPDATE SET \
             url_callback = excluded.url_callback, secret = excluded.secret, \
             previous_secret = excluded.previous_secret, event_filters = excluded.event_filters, \
             enabled = excluded.enabled, validated = excluded.validated, \
             updated_at = excluded.updated_at",
            &[
                &s.workspace_id,
                &s.subscription_id,
                &s.url_callback,
                &s.secret.expose(),
                &previous,
                &s.event_filters,
                &s.enabled,
                &s.validated,
            ],
            "upserting a subscription",
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn get_subscription(
        &self,
        workspace_id: i64,
        subscription_id: i64,
    ) -> Result<Option<Subscription>, StoreError> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLS} FROM subscriptions \
             WHERE workspace_id = $1 AND subscription_id = $2"
        );
        Ok(self
            .query_rows(
                &sql,
                &[&workspace_id, &subscription_id],
                subscription_from_row,
            )
            .await?
            .pop())
    }

    pub(crate) async fn list_subscriptions(
        &self,
        workspace_id: Option<i64>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLS} FROM subscriptions \
             WHERE ($1::bigint IS NULL OR workspace_id = $1) ORDER BY workspace_id, subscription_id"
        );
        self.query_rows(&sql, &[&workspace_id], subscription_from_row)
            .await
    }

    pub(crate) async fn delete_subscription(
        &self,
        workspace_id: i64,
        subscription_id: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "DELETE FROM subscriptions WHERE workspace_id = $1 AND subscription_id = $2",
                &[&workspace_id, &subscription_id],
                "deleting a subscription",
            )
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn get_checkpoint(&self, key: String) -> Result<Option<String>, StoreError> {
        Ok(self
            .query_rows(
                "SELECT value FROM checkpoints WHERE key = $1",
                &[&key],
                |r| get(r, 0),
            )
            .await?
            .pop())
    }

    pub(crate) async fn set_checkpoint(
        &self,
        key: String,
        value: String,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO checkpoints (key, value, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            &[&key, &value],
            "writing a checkpoint",
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn try_lead(
        &self,
        name: String,
        holder: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "INSERT INTO leader_leases (name, holder, expires_at) \
                 VALUES ($1, $2, now() + make_interval(secs => $3::float8)) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at <= now()",
                &[&name, &holder, &secs(ttl)],
                "taking a leader lease",
            )
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn release_lead(
        &self,
        name: String,
        holder: String,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "DELETE FROM leader_leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
                "releasing a leader lease",
            )
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn prune(
        &self,
        events_before: DateTime<Utc>,
        jobs_before: DateTime<Utc>,
    ) -> Result<PruneCounts, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.ctx("beginning")?;
        let jobs = tx
            .execute(
                "DELETE FROM jobs WHERE status IN ('succeeded', 'dead', 'cancelled') \
                 AND finished_at < $1",
                &[&jobs_before],
            )
            .await
            .ctx("pruning jobs")?;
        let events = tx
            .execute(
                "DELETE FROM events WHERE received_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.event_row_id = events.id)",
                &[&events_before],
            )
            .await
            .ctx("pruning events")?;
        self.commit(tx).await?;
        Ok(PruneCounts { events, jobs })
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.ctx("pinging")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pool_size: usize, insert_connections: Option<usize>) -> StoreOptions {
        StoreOptions {
            pool_size,
            insert_connections,
            ..StoreOptions::default()
        }
    }

    #[test]
    fn batchers_are_a_quarter_of_the_pool_within_half_the_cores() {
        assert_eq!(batcher_count(&options(16, None), 2), 1, "2 cores: one");
        assert_eq!(batcher_count(&options(16, None), 8), 4);
        assert_eq!(batcher_count(&options(64, None), 32), 4, "at most 4");
        assert_eq!(batcher_count(&options(8, None), 8), 2);
        assert_eq!(batcher_count(&options(2, None), 8), 1, "at least 1");
    }

    #[test]
    fn configured_batchers_leave_a_connection_for_everything_else() {
        assert_eq!(batcher_count(&options(16, Some(6)), 2), 6, "as configured");
        assert_eq!(batcher_count(&options(4, Some(9)), 2), 3);
        assert_eq!(batcher_count(&options(1, Some(0)), 2), 1);
    }
}
