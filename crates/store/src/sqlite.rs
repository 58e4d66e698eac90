//! The SQLite backend.
//!
//! Durability: WAL journal. A caller hears back only after its transaction's WAL frames have
//! been fsynced, so an acknowledged write survives a power cut, not only a process kill. The
//! fsync is not done by SQLite inside `COMMIT` (`synchronous=FULL` would) but by a syncer
//! thread right after it (`synchronous=NORMAL` plus our own fsync of the `-wal` file), so that
//! the next batch runs while the disk flushes the previous one.
//!
//! Group commit, two threads:
//! - the **writer** owns the write connection. Callers send a write request (a closure) over a
//!   bounded channel. The writer takes everything waiting (up to `max_batch`), runs each
//!   request inside its own SAVEPOINT of one `BEGIN IMMEDIATE` transaction (so one failing
//!   request rolls back alone), commits once, and hands the replies to the syncer. While the
//!   syncer is flushing, a commit would only wait for it, so the writer first takes in the
//!   requests that arrived meanwhile (one commit per flush, not several);
//! - the **syncer** takes every committed batch waiting (and, when the writer is in the middle
//!   of one, waits up to `JOIN_WAIT` for it), fsyncs the WAL once, and only then replies to each
//!   caller (see `syncer_loop`). Under load many inserts share one fsync.
//!
//! The writer is the one serial stage of every insert, so anything that needs no connection is
//! done by the caller before it queues the write (`PreparedEvent`), and the entity states that
//! derivations read are kept in the writer as [`Snapshot`]s (`StateCache`).
//!
//! A reader (the read pool below, or `events list`) may see a committed row a moment before its
//! fsync; nothing is ever acknowledged to a writer before it.
//!
//! Reads use a small pool of read-only connections on blocking threads; WAL lets them run while
//! the writer commits. An in-memory database cannot be shared between connections, so there
//! reads go through the writer thread too.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::migrations::{self, Migration};
use crate::snapshot::stored_state_value;
use crate::{
    AttemptOutcome, AttemptRecord, Counters, Derive, Derived, EventFilter, EventSource,
    InsertOutcome, Job, JobDetail, JobFilter, JobStatus, NewEvent, NewJob, PruneCounts, Secret,
    Snapshot, StepResult, StoreError, StoreOptions, StoredEvent, Subscription, check_lease,
    to_chrono,
    types::{PreparedEvent, StateMap, effective_limit},
};

/// Sent back to the caller after the batch's commit (or with the commit's error).
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// A write request: runs inside the batch transaction (or is told the batch could not start)
/// and says whether it succeeded, so the writer can roll back its savepoint.
type WriteOp = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Completion) + Send>;

#[derive(Clone)]
pub(crate) struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::Sender<WriteOp>,
    /// The writer's entity states (see [`StateCache`]); only the writer thread locks it.
    states: Arc<StateCache>,
    reads: Option<ReadPool>,
    counters: Arc<Counters>,
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    busy_timeout: Duration,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("opening a read connection")?;
        conn.busy_timeout(self.busy_timeout)
            .ctx("setting busy_timeout")?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock();
        if idle.len() < self.keep {
            idle.push(conn);
        }
    }
}

/// Maps driver errors: lock contention and I/O are transient (`Unavailable`), damage is
/// `Corrupt`, everything else is a bug (`Database`).
fn map_err(e: rusqlite::Error, context: &str) -> StoreError {
    use rusqlite::ErrorCode as C;
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::SystemIoFailure
            | C::DiskFull
            | C::CannotOpen
            | C::OutOfMemory
            | C::FileLockingProtocolFailed
            | C::PermissionDenied
            | C::ReadOnly => {
                return StoreError::Unavailable {
                    context: context.to_owned(),
                    source: Some(Box::new(e)),
                };
            }
            C::DatabaseCorrupt | C::NotADatabase => {
                return StoreError::Corrupt {
                    message: format!("{context}: {e}"),
                };
            }
            _ => {}
        }
    }
    StoreError::Database {
        context: context.to_owned(),
        source: Box::new(e),
    }
}

trait Ctx<T> {
    fn ctx(self, context: &str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, context: &str) -> Result<T, StoreError> {
        self.map_err(|e| map_err(e, context))
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::corrupt(format!("timestamp {us} out of range")))
}

fn opt_from_micros(us: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    us.map(from_micros).transpose()
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn parse_json(s: &str, what: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(format!("{what} is not JSON: {e}")))
}

fn open_writer(path: Option<&PathBuf>, options: &StoreOptions) -> Result<Connection, StoreError> {
    let conn = match path {
        Some(p) => Connection::open(p).ctx("opening the database file")?,
        None => Connection::open_in_memory().ctx("opening an in-memory database")?,
    };
    conn.busy_timeout(options.busy_timeout)
        .ctx("setting busy_timeout")?;
    if path.is_some() {
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .ctx("enabling WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Config(format!(
                "sqlite refused WAL mode (got {mode}); is the file on a network filesystem?"
            )));
        }
    }
    // File databases: NORMAL plus the syncer's own fsync of the WAL before any reply (see
    // `syncer_loop`). An in-memory database has nothing to sync. Checkpoints stay SQLite's
    // automatic ones, run by the writer after a commit: only the writer can restart the WAL
    // from the beginning, so checkpointing from another connection lets it grow without bound
    // under a steady write load (tried: 600 MB in a 12 s benchmark). SQLite's default of a
    // checkpoint every 1,000 pages stays: every 8,000 took a little CPU off the writer but,
    // since a checkpoint runs inside one batch's commit, tripled the p99 of acknowledgements at
    // half load (5 ms to 10-15 ms; bench/ingest/README.md, session 5).
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
        .ctx("setting pragmas")?;
    Ok(conn)
}

fn migrate(conn: &Connection, list: &[Migration]) -> Result<(), StoreError> {
    let mig_err = |version: u32, message: &str, e: rusqlite::Error| StoreError::Migration {
        version,
        message: message.to_owned(),
        source: Some(Box::new(e)),
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .map_err(|e| mig_err(0, "creating schema_migrations", e))?;
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| mig_err(0, "locking for migration", e))?;
    let result = (|| {
        let applied: Vec<(u32, String)> = {
            let mut stmt = conn
                .prepare("SELECT version, name FROM schema_migrations ORDER BY version")
                .map_err(|e| mig_err(0, "reading schema_migrations", e))?;
            stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))
                .and_then(Iterator::collect)
                .map_err(|e| mig_err(0, "reading schema_migrations", e))?
        };
        for m in migrations::pending(list, &applied)? {
            tracing::info!(
                version = m.version,
                name = m.name,
                "applying sqlite migration"
            );
            conn.execute_batch(m.sql)
                .map_err(|e| mig_err(m.version, m.name, e))?;
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![m.version, m.name, micros(Utc::now())],
            )
            .map_err(|e| mig_err(m.version, "recording migration", e))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(|e| mig_err(0, "committing migrations", e)),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<WriteOp>,
    max_batch: usize,
    flush: Flush,
    cache: Arc<StateCache>,
) {
    flush.writer_started();
    let mut batch: Vec<WriteOp> = Vec::with_capacity(max_batch);
    while let Some(op) = rx.blocking_recv() {
        batch.push(op);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        flush.writer_busy(true);
        // While the syncer is still flushing, committing would not make this batch durable any
        // sooner: requests that arrive meanwhile join it, and the writer waits for them (the
        // syncer wakes it when it is done; `JOIN_SLEEP` bounds how late a request is seen).
        let mut more = |ran: usize| {
            while ran < max_batch && flush.syncing() {
                match rx.try_recv() {
                    Ok(op) => return Some(op),
                    Err(mpsc::error::TryRecvError::Empty) => std::thread::park_timeout(JOIN_SLEEP),
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                }
            }
            None
        };
        run_batch(&conn, &mut batch, &mut more, &flush, &cache);
        flush.writer_busy(false);
    }
    // Every handle is gone: let the syncer answer what is in flight, then fold the WAL back into
    // the database file so a copied file is complete on its own (the checkpoint syncs both).
    drop(flush);
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "sqlite checkpoint at close failed");
    }
    tracing::debug!("sqlite writer stopped: every Store handle was dropped");
}

/// Committed batches waiting for their WAL frames to reach the disk.
struct Synced {
    writes: u64,
    completions: Vec<Completion>,
}

/// Where a committed batch goes before its callers hear back.
enum Flush {
    /// In-memory database: nothing to make durable; reply at once.
    Immediate(Arc<Counters>),
    /// File database: the syncer thread fsyncs the WAL, then replies (see [`syncer_loop`]).
    Syncer {
        tx: std::sync::mpsc::SyncSender<Synced>,
        stages: Arc<Stages>,
    },
}

/// What the writer and the syncer tell each other without waiting.
#[derive(Default)]
struct Stages {
    /// Set while the writer runs a batch, so the syncer can wait for it (see [`JOIN_WAIT`]).
    writer_busy: AtomicBool,
    /// Set while the syncer fsyncs and replies, so the writer can grow its batch meanwhile.
    syncing: AtomicBool,
    /// The writer's thread, which the syncer wakes when it is done.
    writer: std::sync::OnceLock<std::thread::Thread>,
}

impl Flush {
    /// Called on the writer's thread before its first batch.
    fn writer_started(&self) {
        if let Flush::Syncer { stages, .. } = self {
            let _ = stages.writer.set(std::thread::current());
        }
    }

    fn writer_busy(&self, is_busy: bool) {
        if let Flush::Syncer { stages, .. } = self {
            stages.writer_busy.store(is_busy, Ordering::Release);
        }
    }

    /// Whether a batch committed now would wait for a flush already under way.
    fn syncing(&self) -> bool {
        match self {
            Flush::Immediate(_) => false,
            Flush::Syncer { stages, .. } => stages.syncing.load(Ordering::Acquire),
        }
    }

    fn committed(&self, writes: u64, completions: Vec<Completion>) {
        match self {
            Flush::Immediate(counters) => {
                counters.committed(writes);
                for done in completions {
                    done(None);
                }
            }
            Flush::Syncer { tx, .. } => {
                if let Err(std::sync::mpsc::SendError(lost)) = tx.send(Synced {
                    writes,
                    completions,
                }) {
                    let e = StoreError::unavailable("sqlite syncer thread has stopped");
                    for done in lost.completions {
                        done(Some(&e));
                    }
                }
            }
        }
    }
}

/// Makes committed batches durable and answers their callers: takes every batch waiting, fsyncs
/// the WAL file once, replies to all of them. The writer meanwhile runs the next batch, so the
/// disk's flush time overlaps with work instead of stalling it, and batches grow while a flush
/// runs (group commit with a pipeline of two).
///
/// The connection runs `synchronous=NORMAL`, so `COMMIT` writes the WAL frames without an
/// fsync, and this thread's `fsync` of the same file through its own descriptor makes them
/// durable: fsync flushes the file, not the descriptor (PostgreSQL's checkpointer relies on
/// the same). A failed fsync may have dropped dirty pages, so after one every later write is
/// refused as unavailable until the store is reopened (no acknowledgement without durability).
fn syncer_loop(
    wal_path: PathBuf,
    rx: std::sync::mpsc::Receiver<Synced>,
    stages: Arc<Stages>,
    counters: Arc<Counters>,
) {
    let mut wal: Option<std::fs::File> = None;
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        while let Ok(more) = rx.try_recv() {
            pending.push(more);
        }
        // A batch about to commit would otherwise wait for the next fsync, a whole flush away:
        // give it a moment to join this one.
        if stages.writer_busy.load(Ordering::Acquire) {
            if let Ok(more) = rx.recv_timeout(JOIN_WAIT) {
                pending.push(more);
                while let Ok(more) = rx.try_recv() {
                    pending.push(more);
                }
            }
        }
        let syncing = Syncing::start(&stages);
        let result = if failed {
            Err(StoreError::unavailable(
                "an earlier fsync of the sqlite WAL failed; reopen the store",
            ))
        } else {
            sync_wal(&mut wal, &wal_path)
        };
        let writes = pending.iter().map(|p| p.writes).sum();
        match result {
            Ok(()) => {
                counters.committed(writes);
                for done in pending.into_iter().flat_map(|p| p.completions) {
                    done(None);
                }
            }
            Err(e) => {
                if !failed {
                    tracing::error!(error = %e, writes, "fsync of the sqlite WAL failed: refusing writes from now on");
                }
                failed = true;
                for done in pending.into_iter().flat_map(|p| p.completions) {
                    done(Some(&e));
                }
            }
        }
        drop(syncing);
    }
}

/// Marks the syncer as flushing until dropped (unwinding included), then wakes the writer, which
/// may be holding a batch open until the flush is done.
struct Syncing<'a>(&'a Stages);

impl<'a> Syncing<'a> {
    fn start(stages: &'a Stages) -> Self {
        stages.syncing.store(true, Ordering::Release);
        Syncing(stages)
    }
}

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        self.0.syncing.store(false, Ordering::Release);
        if let Some(writer) = self.0.writer.get() {
            writer.unpark();
        }
    }
}

/// How long the syncer waits for a batch the writer is running before it fsyncs without it.
/// Short against a flush (about 0.4-4 ms here), so the batches already waiting lose little.
const JOIN_WAIT: Duration = Duration::from_micros(200);

/// How long the writer, holding a batch open while the syncer flushes, sleeps before it looks
/// for new requests again. The syncer wakes it as soon as it is done, so this only bounds how
/// late a request that arrives meanwhile joins the batch.
const JOIN_SLEEP: Duration = Duration::from_micros(100);

fn sync_wal(wal: &mut Option<std::fs::File>, path: &PathBuf) -> Result<(), StoreError> {
    let io = |e: std::io::Error, what: &str| StoreError::Unavailable {
        context: format!("{what} {}", path.display()),
        source: Some(Box::new(e)),
    };
    if wal.is_none() {
        let file = std::fs::File::open(path).map_err(|e| io(e, "opening the WAL"))?;
        // The WAL may have just been created: make its directory entry durable too.
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(e, "syncing the directory of"))?;
        }
        *wal = Some(file);
    }
    wal.as_ref()
        .expect("opened above")
        .sync_data()
        .map_err(|e| io(e, "fsyncing"))
}

/// Runs a parameterless control statement (`BEGIN`, `SAVEPOINT`, ...) from the statement cache:
/// a batch runs several per write, and parsing them each time showed in profiles.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `batch`, then whatever `more` hands over (given how many ran so far), in one
/// transaction, and commits it.
fn run_batch(
    conn: &Connection,
    batch: &mut Vec<WriteOp>,
    more: &mut dyn FnMut(usize) -> Option<WriteOp>,
    flush: &Flush,
    cache: &StateCache,
) {
    if let Err(e) = control(conn, "BEGIN IMMEDIATE").ctx("beginning a write batch") {
        tracing::warn!(error = %e, "sqlite write batch could not start");
        for op in batch.drain(..) {
            let (_, done) = op(Err(&e));
            done(None);
        }
        return;
    }
    if let Err(e) = cache.check_others(conn) {
        // Not knowing whether the cache is current, do without it for this batch.
        tracing::debug!(error = %e, "sqlite data_version unreadable; entity state cache cleared");
        cache.clear();
    }
    let mut completions = Vec::with_capacity(batch.len());
    let mut ops = std::mem::take(batch).into_iter();
    while let Some(op) = ops.next().or_else(|| more(completions.len())) {
        if let Err(e) = control(conn, "SAVEPOINT op").ctx("opening a savepoint") {
            let (_, done) = op(Err(&e));
            completions.push(done);
            continue;
        }
        // A panicking request must not take the writer (and every later write) down with it:
        // its savepoint is rolled back and its caller, whose reply sender was dropped in the
        // unwind, gets `Unavailable`.
        let (ok, done) = match std::panic::catch_unwind(AssertUnwindSafe(|| op(Ok(conn)))) {
            Ok(pair) => pair,
            Err(_) => {
                tracing::error!("a sqlite write request panicked; rolled back alone");
                cache.clear();
                (false, Box::new(|_: Option<&StoreError>| {}) as Completion)
            }
        };
        let end = if ok {
            control(conn, "RELEASE op")
        } else {
            control(conn, "ROLLBACK TO op").and_then(|()| control(conn, "RELEASE op"))
        };
        if let Err(e) = end {
            // The savepoint stack is now unknown: abandon the whole batch rather than commit
            // something half rolled back.
            let e = map_err(e, "closing a savepoint");
            let _ = conn.execute_batch("ROLLBACK");
            cache.clear();
            completions.push(done);
            for done in completions {
                done(Some(&e));
            }
            for op in ops {
                let (_, done) = op(Err(&e));
                done(None);
            }
            return;
        }
        completions.push(done);
    }
    let n = completions.len() as u64;
    match control(conn, "COMMIT").ctx("committing a write batch") {
        Ok(()) => flush.committed(n, completions),
        Err(e) => {
            tracing::warn!(error = %e, writes = n, "sqlite write batch failed to commit");
            let _ = conn.execute_batch("ROLLBACK");
            cache.clear();
            for done in completions {
                done(Some(&e));
            }
        }
    }
}

const EVENT_COLS: &str = "id, event_id, dedupe_key, subscription_id, workspace_id, entity, action, \
     trigger_name, entity_id, received_at, envelope, source";

fn event_from_row(r: &Row<'_>) -> Result<StoredEvent, StoreError> {
    let c = "reading an event";
    let source: String = r.get(11).ctx(c)?;
    Ok(StoredEvent {
        id: r.get(0).ctx(c)?,
        event_id: r.get(1).ctx(c)?,
        dedupe_key: r.get(2).ctx(c)?,
        subscription_id: r.get(3).ctx(c)?,
        workspace_id: r.get(4).ctx(c)?,
        entity: r.get(5).ctx(c)?,
        action: r.get(6).ctx(c)?,
        trigger: r.get(7).ctx(c)?,
        entity_id: r.get(8).ctx(c)?,
        received_at: from_micros(r.get(9).ctx(c)?)?,
        envelope: r.get(10).ctx(c)?,
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

fn job_from_row(r: &Row<'_>) -> Result<Job, StoreError> {
    let c = "reading a job";
    let payload: String = r.get(5).ctx(c)?;
    let status: String = r.get(6).ctx(c)?;
    let result: Option<String> = r.get(14).ctx(c)?;
    Ok(Job {
        id: r.get(0).ctx(c)?,
        event_row_id: r.get(1).ctx(c)?,
        rule: r.get(2).ctx(c)?,
        step_index: r.get(3).ctx(c)?,
        step_name: r.get(4).ctx(c)?,
        payload: parse_json(&payload, "job payload")?,
        status: parse_status(&status)?,
        priority: r.get(7).ctx(c)?,
        not_before: from_micros(r.get(8).ctx(c)?)?,
        attempts: r.get(9).ctx(c)?,
        lease_owner: r.get(10).ctx(c)?,
        lease_expires_at: opt_from_micros(r.get(11).ctx(c)?)?,
        sent_fingerprint: r.get(12).ctx(c)?,
        sent_at: opt_from_micros(r.get(13).ctx(c)?)?,
        result: result.map(|s| parse_json(&s, "job result")).transpose()?,
        last_error: r.get(15).ctx(c)?,
        created_at: from_micros(r.get(16).ctx(c)?)?,
        updated_at: from_micros(r.get(17).ctx(c)?)?,
        finished_at: opt_from_micros(r.get(18).ctx(c)?)?,
    })
}

fn subscription_from_row(r: &Row<'_>) -> Result<Subscription, StoreError> {
    let c = "reading a subscription";
    let filters: String = r.get(5).ctx(c)?;
    Ok(Subscription {
        workspace_id: r.get(0).ctx(c)?,
        subscription_id: r.get(1).ctx(c)?,
        url_callback: r.get(2).ctx(c)?,
        secret: Secret::new(r.get::<_, String>(3).ctx(c)?),
        previous_secret: r.get::<_, Option<String>>(4).ctx(c)?.map(Secret::new),
        event_filters: parse_json(&filters, "event_filters")?,
        enabled: r.get(6).ctx(c)?,
        validated: r.get(7).ctx(c)?,
        updated_at: from_micros(r.get(8).ctx(c)?)?,
    })
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    map: fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).ctx("preparing a query")?;
    let mut rows = stmt.query(params).ctx("running a query")?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx("reading rows")? {
        out.push(map(row)?);
    }
    Ok(out)
}

fn insert_jobs(
    conn: &Connection,
    event_row_id: i64,
    jobs: &[NewJob],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO jobs (event_row_id, rule, step_index, step_name, payload, status, \
             priority, not_before, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?8)",
        )
        .ctx("preparing job insert")?;
    // `last_insert_rowid`, as for events: no temporary table per row.
    jobs.iter()
        .map(|j| {
            stmt.execute(params![
                event_row_id,
                j.rule,
                j.step_index,
                j.step_name,
                json_text(&j.payload),
                j.priority,
                micros(j.not_before.unwrap_or(now)),
                micros(now),
            ])
            .ctx("inserting a job")?;
            Ok(conn.last_insert_rowid())
        })
        .collect()
}

fn lease_row(
    conn: &Connection,
    job_id: i64,
) -> Result<Option<(JobStatus, Option<String>)>, StoreError> {
    conn.prepare_cached("SELECT status, lease_owner FROM jobs WHERE id = ?1")
        .ctx("preparing lease check")?
        .query_row([job_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .optional()
        .ctx("checking a lease")?
        .map(|(s, o)| Ok((parse_status(&s)?, o)))
        .transpose()
}

fn job_status(conn: &Connection, job_id: i64) -> Result<JobStatus, StoreError> {
    lease_row(conn, job_id)?
        .map(|(s, _)| s)
        .ok_or_else(|| StoreError::not_found("job", job_id))
}

/// How many entity states the writer keeps parsed (about 1-3 KiB each).
const STATE_CACHE_ENTRIES: usize = 4096;

/// The writer's parsed copies of the entity states it wrote or read last, so that deriving the
/// next event of an entity does not read and parse its JSON again (that was about a seventh of
/// the writer's time per event).
///
/// Only the writer thread touches it, and every `entity_state` write goes through the writer, so
/// it cannot go stale behind the writer's back. It may run ahead of the database, though: an
/// entry is updated when its insert succeeds, before the batch commits. So any batch that does
/// not commit whole (a failed `COMMIT`, an abandoned savepoint stack, a panicking write) clears
/// it; a write that fails alone changes nothing in it (the entry is the insert's last step).
/// It is bounded by clearing it when full: simple, and a full clear costs one read per entity.
///
/// Another connection can write the file too (a second process on the same database, such as a
/// command run beside `serve`): each batch starts by reading SQLite's `data_version`, which
/// changes when any other connection commits, and clears the cache when it did.
#[derive(Default)]
pub(crate) struct StateCache {
    states: Mutex<StateMap<CachedState, STATE_CACHE_ENTRIES>>,
    /// `PRAGMA data_version` at the start of the last batch.
    data_version: Mutex<Option<i64>>,
}

struct CachedState {
    state: Arc<Snapshot>,
    at_micros: i64,
}

impl StateCache {
    fn clear(&self) {
        self.states.lock().clear();
    }

    /// Called at the start of each batch, inside its transaction: forgets everything if another
    /// connection committed since the last batch.
    fn check_others(&self, conn: &Connection) -> rusqlite::Result<()> {
        let now: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let mut seen = self.data_version.lock();
        if *seen != Some(now) {
            self.clear();
            *seen = Some(now);
        }
        Ok(())
    }
}

/// Stores one event inside the writer's transaction: dedupe check, then (for a derived insert)
/// the previous entity state and the derivation, then the event, its entity state and jobs.
fn insert_event_tx(
    conn: &Connection,
    cache: &StateCache,
    prepared: PreparedEvent,
    derive: Option<&Derive>,
) -> Result<InsertOutcome, StoreError> {
    let PreparedEvent { mut ev, key } = prepared;
    let duplicate = |id| InsertOutcome {
        id,
        duplicate: true,
        job_ids: Vec::new(),
        trigger: String::new(),
    };
    // The dedupe key is checked by the insert itself (`ON CONFLICT DO NOTHING`), not by a
    // lookup before it: one probe of the index per event instead of two. So a redelivery is
    // derived before it is found out; a derivation is pure, and nothing it gives is kept.
    let existing = |conn: &Connection| -> Result<Option<i64>, StoreError> {
        conn.prepare_cached("SELECT id FROM events WHERE dedupe_key = ?1")
            .ctx("preparing duplicate lookup")?
            .query_row([&key], |r| r.get(0))
            .optional()
            .ctx("looking up a duplicate")
    };
    let mut states = cache.states.lock();
    // What `entity_state` holds for this entity now, when known: `Some(None)` means no row.
    let mut known: Option<Option<i64>> = None;
    if let Some(derive) = derive {
        let previous = match ev.entity_id {
            Some(entity_id) => {
                let cache_key = (ev.entity.clone(), entity_id);
                if states.get(&cache_key).is_none() {
                    if let Some((text, at)) = read_entity_state(conn, &ev.entity, entity_id)? {
                        let at_micros = micros(at);
                        let state = Arc::new(Snapshot::from_stored(text)?);
                        states.insert(cache_key.clone(), CachedState { state, at_micros });
                    }
                }
                let cached = states.get(&cache_key);
                known = Some(cached.map(|c| c.at_micros));
                cached.map(|c| &*c.state)
            }
            None => None,
        };
        match derive(previous).checked()? {
            // A redelivery of a stored event is a duplicate of its row, whatever the
            // derivation says of its version.
            Derived::AlreadyStored => return Ok(duplicate(existing(conn)?.unwrap_or(0))),
            Derived::Store { trigger, jobs } => {
                ev.trigger = trigger;
                ev.jobs = jobs;
            }
        }
    }
    let now = Utc::now();
    // `last_insert_rowid` rather than `RETURNING id`: RETURNING makes SQLite build and drop a
    // temporary table for every insert, which showed in the writer's profile.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO events (dedupe_key, event_id, subscription_id, workspace_id, \
             entity, action, trigger_name, entity_id, received_at, envelope, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .ctx("preparing event insert")?
        .execute(params![
            key,
            ev.event_id,
            ev.subscription_id,
            ev.workspace_id,
            ev.entity,
            ev.action,
            ev.trigger,
            ev.entity_id,
            micros(ev.received_at),
            ev.envelope,
            ev.source.as_str(),
        ])
        .ctx("inserting an event")?;
    if inserted == 0 {
        let id = existing(conn)?.ok_or_else(|| {
            StoreError::corrupt("an event insert conflicted on a dedupe key that is not stored")
        })?;
        return Ok(duplicate(id));
    }
    let id = conn.last_insert_rowid();
    if let (Some(state), Some(entity_id)) = (&ev.entity_state, ev.entity_id) {
        // By reference when the text is part of the envelope just stored (a webhook's
        // `payload`, as delivered), else inline: see migration 0003.
        let text = state.state.text();
        let (inline, reference) = match envelope_range(&ev.envelope, text, state.offset_in_envelope)
        {
            Some((start, len)) => (None, Some((id, start, len))),
            None => (Some(text), None),
        };
        conn.prepare_cached(
            "INSERT INTO entity_state \
             (entity, entity_id, state, event_row_id, state_start, state_len, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (entity, entity_id) DO UPDATE \
             SET state = excluded.state, event_row_id = excluded.event_row_id, \
             state_start = excluded.state_start, state_len = excluded.state_len, \
             at = excluded.at \
             WHERE excluded.at >= entity_state.at",
        )
        .ctx("preparing entity state upsert")?
        .execute(params![
            ev.entity,
            entity_id,
            inline,
            reference.map(|r| r.0),
            reference.map(|r| r.1),
            reference.map(|r| r.2),
            micros(state.at)
        ])
        .ctx("upserting entity state")?;
    }
    let job_ids = insert_jobs(conn, id, &ev.jobs, now)?;
    // Last, after every fallible step: mirror the upsert's `WHERE excluded.at >= at`.
    if let (Some(state), Some(entity_id)) = (ev.entity_state, ev.entity_id) {
        let cache_key = (ev.entity, entity_id);
        let at_micros = micros(state.at);
        match known {
            Some(Some(previous_at)) if at_micros < previous_at => {}
            Some(_) => {
                states.insert(
                    cache_key,
                    CachedState {
                        state: state.state,
                        at_micros,
                    },
                );
            }
            // Written without reading what was there: the row may or may not have changed.
            None => {
                states.remove(&cache_key);
            }
        }
    }
    Ok(InsertOutcome {
        id,
        duplicate: false,
        job_ids,
        trigger: ev.trigger,
    })
}

/// Where `text` is inside `envelope`, as (byte offset, byte length), when it is there and not
/// empty. `hint` is where the caller says it begins: checked by one comparison. Without one, or
/// when it is wrong, one linear search of the envelope (at most the 1 MiB a body may be; about
/// 2 µs for a delivery, a tenth of the writer's time per event, hence the hint).
fn envelope_range(envelope: &str, text: &str, hint: Option<usize>) -> Option<(i64, i64)> {
    if text.is_empty() {
        return None;
    }
    let at_hint = hint.filter(|&start| {
        start
            .checked_add(text.len())
            .and_then(|end| envelope.get(start..end))
            == Some(text)
    });
    let start = match at_hint {
        Some(start) => start,
        None => envelope.find(text)?,
    };
    Some((i64::try_from(start).ok()?, i64::try_from(text.len()).ok()?))
}

/// The text of an `entity_state` row, whichever form it is stored in (migration 0003): inline,
/// or a byte range of the referenced event's envelope. NULL when the referenced event is gone.
const ENTITY_STATE_TEXT: &str = "COALESCE(s.state, CAST(substr(CAST((SELECT e.envelope \
     FROM events e WHERE e.id = s.event_row_id) AS BLOB), s.state_start + 1, s.state_len) AS TEXT))";

/// An entity's stored state: its JSON text and its `at`.
fn read_entity_state(
    conn: &Connection,
    entity: &str,
    entity_id: i64,
) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
    let row: Option<(Option<String>, i64)> = conn
        .prepare_cached(&format!(
            "SELECT {ENTITY_STATE_TEXT}, s.at FROM entity_state s \
             WHERE s.entity = ?1 AND s.entity_id = ?2"
        ))
        .ctx("preparing entity state read")?
        .query_row(params![entity, entity_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .ctx("reading entity state")?;
    row.map(|(text, at)| {
        let text = text.ok_or_else(|| {
            StoreError::corrupt(format!(
                "the entity state of {entity} {entity_id} refers to an event that is not stored"
            ))
        })?;
        Ok((text, from_micros(at)?))
    })
    .transpose()
}

impl SqliteStore {
    pub(crate) async fn open(
        path: Option<PathBuf>,
        options: &StoreOptions,
    ) -> Result<SqliteStore, StoreError> {
        let opts = options.clone();
        let writer_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = open_writer(writer_path.as_ref(), &opts)?;
            migrate(&conn, migrations::SQLITE)?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable {
            context: "opening sqlite".into(),
            source: Some(Box::new(e)),
        })??;
        let (tx, rx) = mpsc::channel(options.write_queue.max(1));
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let max_batch = options.max_batch.max(1);
        let spawn_failed = |what: &str, e: std::io::Error| StoreError::Unavailable {
            context: format!("starting the sqlite {what} thread"),
            source: Some(Box::new(e)),
        };
        let flush = match &path {
            None => Flush::Immediate(thread_counters),
            Some(db_path) => {
                let mut wal_path = db_path.clone().into_os_string();
                wal_path.push("-wal");
                let wal_path = PathBuf::from(wal_path);
                let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(options.write_queue.max(1));
                let stages = Arc::new(Stages::default());
                std::thread::Builder::new()
                    .name("store-sqlite-syncer".into())
                    .spawn({
                        let stages = stages.clone();
                        move || syncer_loop(wal_path, sync_rx, stages, thread_counters)
                    })
                    .map_err(|e| spawn_failed("syncer", e))?;
                Flush::Syncer {
                    tx: sync_tx,
                    stages,
                }
            }
        };
        let states = Arc::new(StateCache::default());
        let writer_states = states.clone();
        std::thread::Builder::new()
            .name("store-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, max_batch, flush, writer_states))
            .map_err(|e| spawn_failed("writer", e))?;
        let reads = path.map(|path| ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            keep: options.read_connections.max(1),
            busy_timeout: options.busy_timeout,
        });
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: tx,
                states,
                reads,
                counters,
            }),
        })
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Runs `f` in the writer's batch transaction; resolves after the batch committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_then(f, |_, _| {}).await
    }

    /// Like `write`, and calls `on_commit` (for counters) once the value is durable.
    async fn write_then<T, F, C>(&self, f: F, on_commit: C) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        C: FnOnce(&Counters, &T) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let counters = self.inner.counters.clone();
        let op: WriteOp = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(e.to_batch_failure()),
            };
            let ok = result.is_ok();
            let done: Completion = Box::new(move |commit_error| {
                let result = match (result, commit_error) {
                    (Ok(_), Some(e)) => Err(e.to_batch_failure()),
                    (Ok(v), None) => {
                        on_commit(&counters, &v);
                        Ok(v)
                    }
                    (Err(e), _) => Err(e),
                };
                // The caller may have gone away (request cancelled); the write stands anyway.
                let _ = reply.send(result);
            });
            (ok, done)
        });
        self.inner
            .writer
            .send(op)
            .await
            .map_err(|_| StoreError::unavailable("sqlite writer thread has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("sqlite writer thread stopped before replying"))?
    }

    /// Runs `f` in a read transaction on a pooled read connection (in-memory: via the writer).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.inner.reads.is_none() {
            return self.write(f).await;
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pool = inner
                .reads
                .as_ref()
                .expect("checked above: file database has a read pool");
            let conn = pool.take()?;
            let result = (|| {
                let tx = conn.unchecked_transaction().ctx("beginning a read")?;
                let v = f(&tx)?;
                tx.finish().ctx("ending a read")?;
                Ok(v)
            })();
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable {
            context: "sqlite read task failed".into(),
            source: Some(Box::new(e)),
        })?
    }

    pub(crate) async fn insert_event(
        &self,
        ev: NewEvent,
        derive: Option<Derive>,
    ) -> Result<InsertOutcome, StoreError> {
        let prepared = PreparedEvent::new(ev);
        let states = self.inner.states.clone();
        self.write_then(
            move |conn| insert_event_tx(conn, &states, prepared, derive.as_ref()),
            |c, outcome| c.inserted(outcome),
        )
        .await
    }

    pub(crate) async fn get_entity_state(
        &self,
        entity: String,
        entity_id: i64,
    ) -> Result<Option<(Value, DateTime<Utc>)>, StoreError> {
        self.read(move |conn| {
            read_entity_state(conn, &entity, entity_id)?
                .map(|(text, at)| Ok((stored_state_value(&text)?, at)))
                .transpose()
        })
        .await
    }

    pub(crate) async fn list_events(&self, f: EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {EVENT_COLS} FROM events \
                 WHERE (?1 IS NULL OR instr(' ' || trigger_name || ' ', ' ' || ?1 || ' ') > 0) AND (?2 IS NULL OR received_at >= ?2) \
                 AND (?3 IS NULL OR received_at < ?3) AND (?4 IS NULL OR id > ?4) \
                 ORDER BY id LIMIT ?5"
            );
            collect(
                conn,
                &sql,
                &[
                    &f.trigger,
                    &f.since.map(micros),
                    &f.until.map(micros),
                    &f.after_id,
                    &effective_limit(f.limit),
                ],
                event_from_row,
            )
        })
        .await
    }

    pub(crate) async fn get_event(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        self.read(move |conn| {
            let sql = format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1");
            Ok(collect(conn, &sql, &[&id], event_from_row)?.pop())
        })
        .await
    }

    pub(crate) async fn enqueue_jobs(
        &self,
        event_row_id: i64,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<i64>, StoreError> {
        self.write_then(
            move |conn| {
                let exists: Option<i64> = conn
                    .query_row("SELECT id FROM events WHERE id = ?1", [event_row_id], |r| {
                        r.get(0)
                    })
                    .optional()
                    .ctx("checking the event")?;
                if exists.is_none() {
                    return Err(StoreError::not_found("event", event_row_id));
                }
                insert_jobs(conn, event_row_id, &jobs, Utc::now())
            },
            |c, ids| c.enqueued(ids.len()),
        )
        .await
    }

    pub(crate) async fn claim_jobs(
        &self,
        worker: String,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let lease = to_chrono(lease)?;
        self.write_then(
            move |conn| {
                let now = Utc::now();
                let ids: Vec<i64> = {
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT id FROM jobs WHERE status IN ('pending', 'running') AND \
                             ((status = 'pending' AND not_before <= ?1) OR \
                              (status = 'running' AND lease_expires_at <= ?1)) \
                             ORDER BY priority, not_before, id LIMIT ?2",
                        )
                        .ctx("preparing claim")?;
                    stmt.query_map(params![micros(now), limit], |r| r.get(0))
                        .and_then(Iterator::collect)
                        .ctx("selecting claimable jobs")?
                };
                let sql = format!(
                    "UPDATE jobs SET status = 'running', lease_owner = ?2, lease_expires_at = ?3, \
                     attempts = attempts + 1, updated_at = ?4 WHERE id = ?1 RETURNING {JOB_COLS}"
                );
                let mut jobs = Vec::with_capacity(ids.len());
                for id in ids {
                    let expires = micros(now + lease);
                    jobs.extend(collect(
                        conn,
                        &sql,
                        &[&id, &worker, &expires, &micros(now)],
                        job_from_row,
                    )?);
                }
                Ok(jobs)
            },
            |c, jobs| c.claimed(jobs.len()),
        )
        .await
    }

    pub(crate) async fn renew_lease(
        &self,
        job_id: i64,
        worker: String,
        lease: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        let lease = to_chrono(lease)?;
        self.write(move |conn| {
            check_lease(job_id, &worker, lease_row(conn, job_id)?)?;
            let now = Utc::now();
            let expires = now + lease;
            conn.execute(
                "UPDATE jobs SET lease_expires_at = ?2, updated_at = ?3 WHERE id = ?1",
                params![job_id, micros(expires), micros(now)],
            )
            .ctx("renewing a lease")?;
            Ok(expires)
        })
        .await
    }

    pub(crate) async fn record_attempt(
        &self,
        job_id: i64,
        a: AttemptRecord,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            job_status(conn, job_id)?;
            conn.execute(
                "INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, request, \
                 status, error, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    job_id,
                    a.attempt,
                    micros(a.started_at),
                    micros(a.finished_at),
                    a.request,
                    a.status,
                    a.error,
                    a.outcome.as_str()
                ],
            )
            .ctx("recording an attempt")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn mark_sent(
        &self,
        job_id: i64,
        worker: String,
        fingerprint: String,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            check_lease(job_id, &worker, lease_row(conn, job_id)?)?;
            let now = micros(Utc::now());
            conn.execute(
                "UPDATE jobs SET sent_fingerprint = ?2, sent_at = ?3, updated_at = ?3 WHERE id = ?1",
                params![job_id, fingerprint, now],
            )
            .ctx("marking a job sent")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn complete_job(
        &self,
        job_id: i64,
        worker: String,
        result: Value,
        followups: Vec<NewJob>,
    ) -> Result<Vec<i64>, StoreError> {
        self.write_then(
            move |conn| {
                check_lease(job_id, &worker, lease_row(conn, job_id)?)?;
                let now = Utc::now();
                let event_row_id: i64 = conn
                    .query_row(
                        "UPDATE jobs SET status = 'succeeded', result = ?2, lease_expires_at = NULL, \
                         finished_at = ?3, updated_at = ?3 WHERE id = ?1 RETURNING event_row_id",
                        params![job_id, json_text(&result), micros(now)],
                        |r| r.get(0),
                    )
                    .ctx("completing a job")?;
                insert_jobs(conn, event_row_id, &followups, now)
            },
            |c, ids| c.enqueued(ids.len()),
        )
        .await
    }

    pub(crate) async fn retry_job_later(
        &self,
        job_id: i64,
        worker: String,
        at: DateTime<Utc>,
        error: String,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            check_lease(job_id, &worker, lease_row(conn, job_id)?)?;
            conn.execute(
                "UPDATE jobs SET status = 'pending', not_before = ?2, last_error = ?3, \
                 lease_expires_at = NULL, updated_at = ?4 WHERE id = ?1",
                params![job_id, micros(at), error, micros(Utc::now())],
            )
            .ctx("rescheduling a job")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn dead_letter(
        &self,
        job_id: i64,
        worker: String,
        error: String,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            check_lease(job_id, &worker, lease_row(conn, job_id)?)?;
            conn.execute(
                "UPDATE jobs SET status = 'dead', last_error = ?2, lease_expires_at = NULL, \
                 finished_at = ?3, updated_at = ?3 WHERE id = ?1",
                params![job_id, error, micros(Utc::now())],
            )
            .ctx("dead-lettering a job")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn list_jobs(&self, f: JobFilter) -> Result<Vec<Job>, StoreError> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {JOB_COLS} FROM jobs WHERE (?1 IS NULL OR status = ?1) \
                 AND (?2 IS NULL OR rule = ?2) AND (?3 IS NULL OR event_row_id = ?3) \
                 ORDER BY id LIMIT ?4"
            );
            collect(
                conn,
                &sql,
                &[
                    &f.status.map(JobStatus::as_str),
                    &f.rule,
                    &f.event_row_id,
                    &effective_limit(f.limit),
                ],
                job_from_row,
            )
        })
        .await
    }

    pub(crate) async fn get_job(&self, job_id: i64) -> Result<Option<JobDetail>, StoreError> {
        self.read(move |conn| {
            let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1");
            let Some(job) = collect(conn, &sql, &[&job_id], job_from_row)?.pop() else {
                return Ok(None);
            };
            let attempts = collect(
                conn,
                "SELECT attempt, started_at, finished_at, request, status, error, outcome \
                 FROM job_attempts WHERE job_id = ?1 ORDER BY id",
                &[&job_id],
                |r| {
                    let c = "reading an attempt";
                    let outcome: String = r.get(6).ctx(c)?;
                    Ok(AttemptRecord {
                        attempt: r.get(0).ctx(c)?,
                        started_at: from_micros(r.get(1).ctx(c)?)?,
                        finished_at: from_micros(r.get(2).ctx(c)?)?,
                        request: r.get(3).ctx(c)?,
                        status: r.get(4).ctx(c)?,
                        error: r.get(5).ctx(c)?,
                        outcome: AttemptOutcome::parse(&outcome).ok_or_else(|| {
                            StoreError::corrupt(format!("unknown attempt outcome {outcome:?}"))
                        })?,
                    })
                },
            )?;
            Ok(Some(JobDetail { job, attempts }))
        })
        .await
    }

    pub(crate) async fn retry_dead(&self, job_id: i64) -> Result<(), StoreError> {
        self.write(move |conn| {
            let status = job_status(conn, job_id)?;
            if status != JobStatus::Dead {
                return Err(StoreError::WrongState {
                    job_id,
                    status,
                    operation: "retry",
                });
            }
            let now = micros(Utc::now());
            conn.execute(
                "UPDATE jobs SET status = 'pending', not_before = ?2, finished_at = NULL, \
                 updated_at = ?2 WHERE id = ?1",
                params![job_id, now],
            )
            .ctx("retrying a dead job")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn cancel_job(&self, job_id: i64) -> Result<(), StoreError> {
        self.write(move |conn| {
            let status = job_status(conn, job_id)?;
            if matches!(status, JobStatus::Succeeded | JobStatus::Cancelled) {
                return Err(StoreError::WrongState {
                    job_id,
                    status,
                    operation: "cancel",
                });
            }
            let now = micros(Utc::now());
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', lease_expires_at = NULL, finished_at = ?2, \
                 updated_at = ?2 WHERE id = ?1",
                params![job_id, now],
            )
            .ctx("cancelling a job")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn step_results_for_event(
        &self,
        event_row_id: i64,
        rule: String,
    ) -> Result<Vec<StepResult>, StoreError> {
        self.read(move |conn| {
            collect(
                conn,
                "SELECT id, step_index, step_name, result FROM jobs \
                 WHERE event_row_id = ?1 AND rule = ?2 AND status = 'succeeded' \
                 ORDER BY step_index, id",
                &[&event_row_id, &rule],
                |r| {
                    let c = "reading a step result";
                    let result: Option<String> = r.get(3).ctx(c)?;
                    Ok(StepResult {
                        job_id: r.get(0).ctx(c)?,
                        step_index: r.get(1).ctx(c)?,
                        step_name: r.get(2).ctx(c)?,
                        result: match result {
                            Some(s) => parse_json(&s, "job result")?,
                            None => Value::Null,
                        },
                    })
                },
            )
        })
        .await
    }

    pub(crate) async fn upsert_subscription(&self, s: Subscription) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO subscriptions (workspace_id, subscription_id, url_callback, secret, \
                 previous_secret, event_filters, enabled, validated, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (workspace_id, subscription_id) DO UPDATE SET \
                 url_callback = excluded.url_callback, secret = excluded.secret, \
                 previous_secret = excluded.previous_secret, event_filters = excluded.event_filters, \
                 enabled = excluded.enabled, validated = excluded.validated, \
                 updated_at = excluded.updated_at",
                params![
                    s.workspace_id,
                    s.subscription_id,
                    s.url_callback,
                    s.secret.expose(),
                    s.previous_secret.as_ref().map(Secret::expose),
                    json_text(&s.event_filters),
                    s.enabled,
                    s.validated,
                    micros(Utc::now()),
                ],
            )
            .ctx("upserting a subscription")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn get_subscription(
        &self,
        workspace_id: i64,
        subscription_id: i64,
    ) -> Result<Option<Subscription>, StoreError> {
        self.read(move |conn| {
            Ok(collect(
                conn,
                "SELECT workspace_id, subscription_id, url_callback, secret, previous_secret, \
                 event_filters, enabled, validated, updated_at FROM subscriptions \
                 WHERE workspace_id = ?1 AND subscription_id = ?2",
                &[&workspace_id, &subscription_id],
                subscription_from_row,
            )?
            .pop())
        })
        .await
    }

    pub(crate) async fn list_subscriptions(
        &self,
        workspace_id: Option<i64>,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.read(move |conn| {
            collect(
                conn,
                "SELECT workspace_id, subscription_id, url_callback, secret, previous_secret, \
                 event_filters, enabled, validated, updated_at FROM subscriptions \
                 WHERE (?1 IS NULL OR workspace_id = ?1) ORDER BY workspace_id, subscription_id",
                &[&workspace_id],
                subscription_from_row,
            )
        })
        .await
    }

    pub(crate) async fn delete_subscription(
        &self,
        workspace_id: i64,
        subscription_id: i64,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM subscriptions WHERE workspace_id = ?1 AND subscription_id = ?2",
                    params![workspace_id, subscription_id],
                )
                .ctx("deleting a subscription")?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn get_checkpoint(&self, key: String) -> Result<Option<String>, StoreError> {
        self.read(move |conn| {
            conn.query_row("SELECT value FROM checkpoints WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .ctx("reading a checkpoint")
        })
        .await
    }

    pub(crate) async fn set_checkpoint(
        &self,
        key: String,
        value: String,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO checkpoints (key, value, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![key, value, micros(Utc::now())],
            )
            .ctx("writing a checkpoint")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn try_lead(
        &self,
        name: String,
        holder: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl = to_chrono(ttl)?;
        self.write(move |conn| {
            let now = Utc::now();
            let n = conn
                .execute(
                    "INSERT INTO leader_leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                     expires_at = excluded.expires_at \
                     WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at <= ?4",
                    params![name, holder, micros(now + ttl), micros(now)],
                )
                .ctx("taking a leader lease")?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn release_lead(
        &self,
        name: String,
        holder: String,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM leader_leases WHERE name = ?1 AND holder = ?2",
                    params![name, holder],
                )
                .ctx("releasing a leader lease")?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn prune(
        &self,
        events_before: DateTime<Utc>,
        jobs_before: DateTime<Utc>,
    ) -> Result<PruneCounts, StoreError> {
        self.write(move |conn| {
            // The states that refer to an event about to go keep their text (migration 0003).
            conn.execute(
                &format!(
                    "UPDATE entity_state AS s SET state = {ENTITY_STATE_TEXT}, \
                     event_row_id = NULL, state_start = NULL, state_len = NULL \
                     WHERE s.event_row_id IN (SELECT id FROM events WHERE received_at < ?1)"
                ),
                [micros(events_before)],
            )
            .ctx("copying the states of pruned events")?;
            let jobs = conn
                .execute(
                    "DELETE FROM jobs WHERE status IN ('succeeded', 'dead', 'cancelled') \
                     AND finished_at < ?1",
                    [micros(jobs_before)],
                )
                .ctx("pruning jobs")?;
            let events = conn
                .execute(
                    "DELETE FROM events WHERE received_at < ?1 \
                     AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.event_row_id = events.id)",
                    [micros(events_before)],
                )
                .ctx("pruning events")?;
            Ok(PruneCounts {
                events: events as u64,
                jobs: jobs as u64,
            })
        })
        .await
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .ctx("pinging")
                .map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completion that reports what its caller would hear.
    fn completion(tx: std::sync::mpsc::Sender<Result<(), String>>) -> Completion {
        Box::new(move |error: Option<&StoreError>| {
            let _ = tx.send(error.map_or(Ok(()), |e| Err(e.to_string())));
        })
    }

    #[test]
    fn batches_waiting_together_share_one_fsync_and_all_hear_success() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"frames").expect("write wal");
        let counters = Arc::new(Counters::default());
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let (heard_tx, heard) = std::sync::mpsc::channel();
        // Two batches queued before the syncer starts share one fsync.
        for writes in [3, 2] {
            tx.send(Synced {
                writes,
                completions: (0..writes).map(|_| completion(heard_tx.clone())).collect(),
            })
            .expect("queue");
        }
        drop(tx);
        syncer_loop(wal, rx, Arc::default(), counters.clone());
        let answers: Vec<_> = heard.try_iter().collect();
        assert_eq!(answers, vec![Ok(()); 5]);
        let stats = counters.snapshot();
        assert_eq!((stats.commits, stats.writes), (1, 5));
    }

    #[test]
    fn after_a_failed_fsync_every_later_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // No WAL file: opening it fails, as a failing fsync would.
        let wal = dir.path().join("missing-wal");
        let counters = Arc::new(Counters::default());
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let (heard_tx, heard) = std::sync::mpsc::channel();
        let syncer = {
            let counters = counters.clone();
            let wal = wal.clone();
            std::thread::spawn(move || syncer_loop(wal, rx, Arc::default(), counters))
        };
        tx.send(Synced {
            writes: 1,
            completions: vec![completion(heard_tx.clone())],
        })
        .expect("queue");
        let first = heard.recv().expect("first answer");
        assert!(first.is_err(), "{first:?}");
        // The file appears (the disk "recovers"): the store still refuses, because pages may
        // have been dropped after the failure.
        std::fs::write(&wal, b"frames").expect("write wal");
        tx.send(Synced {
            writes: 1,
            completions: vec![completion(heard_tx)],
        })
        .expect("queue");
        let second = heard.recv().expect("second answer");
        assert!(
            second.as_ref().is_err_and(|e| e.contains("earlier fsync")),
            "{second:?}"
        );
        drop(tx);
        syncer.join().expect("syncer");
        assert_eq!(counters.snapshot().commits, 0);
    }

    /// A write request that inserts `n` into table `t` and reports success.
    fn insert_op(n: i64) -> WriteOp {
        Box::new(move |conn| {
            let conn = conn.expect("a connection");
            conn.execute("INSERT INTO t (n) VALUES (?1)", [n])
                .expect("insert");
            (true, Box::new(|_: Option<&StoreError>| {}) as Completion)
        })
    }

    #[test]
    fn requests_arriving_during_a_flush_join_one_commit_up_to_the_batch_limit() {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch("CREATE TABLE t (n INTEGER)")
            .expect("table");
        let (tx, rx) = mpsc::channel(16);
        let (sync_tx, committed) = std::sync::mpsc::sync_channel(16);
        let stages = Arc::new(Stages::default());
        let flush = Flush::Syncer {
            tx: sync_tx,
            stages: stages.clone(),
        };
        // A flush is under way from the start.
        let flushing = Syncing::start(&stages);
        let writer = std::thread::spawn(move || writer_loop(conn, rx, 3, flush, Arc::default()));
        let (quiet, soon) = (Duration::from_millis(100), Duration::from_secs(10));
        // Until the writer has taken everything queued.
        let taken = |tx: &mpsc::Sender<WriteOp>| {
            let deadline = std::time::Instant::now() + soon;
            while tx.capacity() < tx.max_capacity() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writer took nothing"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // Requests sent one at a time, each after the writer has taken the one before: without
        // the flush, each would be a commit of its own.
        for n in 0..4 {
            tx.blocking_send(insert_op(n)).expect("queue");
            taken(&tx);
        }
        // The first three fill the batch (`max_batch` 3), which commits though the flush goes on.
        let first = committed.recv_timeout(soon).expect("a full batch commits");
        assert_eq!(first.writes, 3);
        // The fourth waits in an open batch while the flush lasts...
        assert!(
            committed.recv_timeout(quiet).is_err(),
            "committed during the flush"
        );
        tx.blocking_send(insert_op(4)).expect("queue");
        taken(&tx);
        // ...and commits, with the fifth, as soon as the flush ends.
        drop(flushing);
        let second = committed
            .recv_timeout(soon)
            .expect("commits after the flush");
        assert_eq!(second.writes, 2);
        // No flush under way: a request commits at once, alone.
        tx.blocking_send(insert_op(5)).expect("queue");
        let third = committed.recv_timeout(soon).expect("commits at once");
        assert_eq!(third.writes, 1);
        drop(tx);
        writer.join().expect("writer");
    }

    #[test]
    fn a_state_is_found_in_its_envelope_with_or_without_a_hint() {
        // Multi-byte text before the payload: offsets are bytes, not characters.
        let envelope =
            r#"{"note":"héllo ✓","payload":{"id":7,"stop":null},"x":{"id":7,"stop":null}}"#;
        let text = r#"{"id":7,"stop":null}"#;
        let first = envelope.find(text).expect("in the envelope");
        let second = envelope.rfind(text).expect("in the envelope");
        let found = |start: usize| Some((start as i64, text.len() as i64));
        assert_eq!(envelope_range(envelope, text, None), found(first));
        // A right hint is taken as it is, even where a search would have found another copy.
        assert_eq!(envelope_range(envelope, text, Some(second)), found(second));
        // A wrong hint (elsewhere, inside a character, past the end, overflowing) falls back to
        // the search.
        let inside_a_char = envelope.find('é').expect("é") + 1;
        for hint in [0, first + 1, inside_a_char, envelope.len(), usize::MAX] {
            assert_eq!(
                envelope_range(envelope, text, Some(hint)),
                found(first),
                "hint {hint}"
            );
        }
        assert_eq!(envelope_range(envelope, r#"{"id":8}"#, Some(first)), None);
        assert_eq!(envelope_range(envelope, "", Some(first)), None);
    }
}
