//! Stores for tests: a temp-file SQLite store, and a PostgreSQL store in a fresh schema when
//! `TOGGL_CONNECT_TEST_POSTGRES_URL` is set (the schema is dropped when the handle drops).

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use toggl_connect_store::{
    Derive, Derived, EntityState, EventFilter, NewEvent, NewJob, Snapshot, Store, StoreOptions,
    StoredEvent, TempSchema,
};

/// Environment variable naming the PostgreSQL server the suite also runs against.
pub const PG_ENV: &str = "TOGGL_CONNECT_TEST_POSTGRES_URL";

/// A store under test, plus what is needed to open it again.
pub struct TestStore {
    pub store: Store,
    pub url: String,
    pub options: StoreOptions,
    pub kind: Kind,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the test's own schema, dropped when the test ends.
    _schema: Option<TempSchema>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl TestStore {
    /// Opens the same database again (a new `Store`, as after a restart).
    pub async fn reopen(&self) -> Store {
        Store::open(&self.url, self.options.clone())
            .await
            .expect("reopen store")
    }

    /// The SQLite file path, for SQLite stores.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.url.strip_prefix("sqlite://").map(Into::into)
    }

    /// Runs raw SQL against the database behind the store (outside the store).
    pub async fn raw_sql(&self, sql: &str) {
        match self.kind {
            Kind::Sqlite => {
                let path = self.sqlite_path().expect("sqlite path");
                let conn = rusqlite::Connection::open(path).expect("open raw sqlite");
                conn.execute_batch(sql).expect("raw sql");
            }
            Kind::Postgres => {
                let url = std::env::var(PG_ENV).expect("pg url");
                let schema = self.options.schema.clone().expect("schema");
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect raw pg");
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("SET search_path = {schema}; {sql}"))
                    .await
                    .expect("raw sql");
            }
        }
    }

    /// Counts rows of `sql` (a `SELECT count(*) ...`) outside the store.
    pub async fn raw_count(&self, sql: &str) -> i64 {
        match self.kind {
            Kind::Sqlite => {
                let path = self.sqlite_path().expect("sqlite path");
                let conn = rusqlite::Connection::open(path).expect("open raw sqlite");
                conn.query_row(sql, [], |r| r.get(0)).expect("raw count")
            }
            Kind::Postgres => {
                let url = std::env::var(PG_ENV).expect("pg url");
                let schema = self.options.schema.clone().expect("schema");
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect raw pg");
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("SET search_path = {schema}"))
                    .await
                    .expect("set search_path");
                client.query_one(sql, &[]).await.expect("raw count").get(0)
            }
        }
    }
}

/// A fresh SQLite store in a temp directory.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let options = StoreOptions::default();
    let store = Store::open(&url, options.clone())
        .await
        .expect("open sqlite");
    TestStore {
        store,
        url,
        options,
        kind: Kind::Sqlite,
        _dir: Some(dir),
        _schema: None,
    }
}

/// A PostgreSQL store in a fresh schema, or `None` when the environment names no server.
pub async fn postgres() -> Option<TestStore> {
    let url = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty())?;
    let schema = format!("t_{:016x}", rand::random::<u64>());
    let guard = TempSchema::new(url.clone(), schema.clone());
    let options = StoreOptions {
        schema: Some(schema),
        pool_size: 32,
        // Several batchers whatever the machine (the default is one per two cores), so the
        // suite covers batches running side by side: entity locks, shared keys, the queue
        // handed from one batcher to the next.
        insert_connections: Some(4),
        ..StoreOptions::default()
    };
    let store = Store::open(&url, options.clone())
        .await
        .expect("open postgres");
    Some(TestStore {
        store,
        url,
        options,
        kind: Kind::Postgres,
        _dir: None,
        _schema: Some(guard),
    })
}

/// A PostgreSQL store with default options in a fresh schema of the server at `base`, opened
/// with `url` (`base` with more connection settings, or `base` itself). The schema goes with
/// the guard.
pub async fn postgres_at(base: &str, url: &str) -> (Store, TempSchema) {
    let schema = format!("t_{:016x}", rand::random::<u64>());
    let guard = TempSchema::new(base.to_owned(), schema.clone());
    let options = StoreOptions {
        schema: Some(schema),
        ..StoreOptions::default()
    };
    let store = Store::open(url, options).await.expect("open postgres");
    (store, guard)
}

/// Every event in the store, in row id order.
pub async fn all_events(store: &Store) -> Vec<StoredEvent> {
    let mut out: Vec<StoredEvent> = Vec::new();
    loop {
        let page = store
            .list_events(EventFilter {
                after_id: out.last().map(|e| e.id),
                limit: Some(10_000),
                ..EventFilter::default()
            })
            .await
            .expect("list events");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// A webhook event with Toggl event id `event_id`.
pub fn event(event_id: i64) -> NewEvent {
    NewEvent {
        event_id,
        subscription_id: Some(42),
        workspace_id: Some(9_000_001),
        entity: "time_entry".into(),
        action: "created".into(),
        trigger: "time_entry_started".into(),
        entity_id: Some(4_100_000_001),
        received_at: Utc::now(),
        envelope: format!(r#"{{"event_id":{event_id},"payload":{{"id":4100000001}}}}"#),
        ..NewEvent::default()
    }
}

/// [`event`] carrying the entity state `state`, modified at `secs`.
pub fn event_with_state(event_id: i64, state: serde_json::Value, secs: i64) -> NewEvent {
    NewEvent {
        entity_state: Some(EntityState::new(state, at(secs))),
        ..event(event_id)
    }
}

/// A derivation whose trigger names the previous state's `seq` (`after_none` without one),
/// planning one job.
pub fn after_previous() -> Derive {
    std::sync::Arc::new(|previous: Option<&Snapshot>| Derived::Store {
        trigger: match previous {
            Some(p) => format!("after_{}", p.value()["seq"]),
            None => "after_none".into(),
        },
        jobs: vec![job("derived", 3)],
    })
}

/// The entity state stored for [`event`]'s entity (time entry 4100000001), if any.
pub async fn stored_state(store: &Store) -> Option<(serde_json::Value, DateTime<Utc>)> {
    store
        .get_entity_state("time_entry", 4_100_000_001)
        .await
        .expect("reading the entity state")
}

/// The triggers stored by a derived insert of `e` with [`after_previous`].
pub async fn derived_trigger(store: &Store, e: NewEvent) -> String {
    store
        .insert_event_derived(e, after_previous())
        .await
        .expect("derived insert")
        .trigger
}

/// A job for rule `rule`, step 0.
pub fn job(rule: &str, priority: i32) -> NewJob {
    NewJob {
        rule: rule.into(),
        step_index: 0,
        step_name: "first".into(),
        payload: serde_json::json!({"rule": rule}),
        not_before: None,
        priority,
    }
}

/// A fixed instant, for comparisons that must not depend on the clock.
pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("valid timestamp")
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
