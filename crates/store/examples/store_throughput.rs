//! Group-commit benchmark: durable event inserts per second with 1 caller (the baseline: one
//! fsync per event) against many concurrent callers (commits shared), in the same run.
//!
//! ```text
//! cargo run --release -p toggl-connect-store --example store_throughput -- [EVENTS] [CONCURRENCY] [URL]
//! ```
//! URL defaults to a SQLite file in a temp directory; with a `postgres://` URL it writes into
//! schema `toggl_connect_bench` (created; drop it afterwards).

use std::time::Instant;

use toggl_connect_store::{NewEvent, NewJob, Store, StoreOptions};

fn event(event_id: i64) -> NewEvent {
    NewEvent {
        event_id,
        entity: "time_entry".into(),
        action: "created".into(),
        trigger: "time_entry_started".into(),
        received_at: chrono::Utc::now(),
        envelope: format!(
            r#"{{"event_id":{event_id},"payload":{{"id":4100000001,"duration":-1}}}}"#
        ),
        jobs: vec![NewJob {
            rule: "bench".into(),
            step_index: 0,
            step_name: "only".into(),
            payload: serde_json::json!({}),
            not_before: None,
            priority: 0,
        }],
        ..NewEvent::default()
    }
}

async fn measure(store: &Store, first_id: i64, events: i64, concurrency: i64) -> (f64, f64) {
    let before = store.stats();
    let start = Instant::now();
    let per_task = events / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let id = first_id + t * per_task + i;
                    store.insert_event(event(id)).await.expect("insert");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    let after = store.stats();
    let inserted = (after.events_inserted - before.events_inserted) as f64;
    let commits = (after.commits - before.commits).max(1) as f64;
    (inserted / secs, inserted / commits)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let concurrency: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let options = StoreOptions {
        schema: url
            .starts_with("postgres")
            .then(|| "toggl_connect_bench".to_owned()),
        pool_size: concurrency.clamp(1, 64) as usize,
        ..StoreOptions::default()
    };
    let store = Store::open(&url, options).await.expect("open store");
    let run = chrono::Utc::now().timestamp_micros() * 1_000;
    let baseline_events = (events / 10).max(50);
    let (base_rate, base_per_commit) = measure(&store, run, baseline_events, 1).await;
    let (rate, per_commit) = measure(&store, run + 10_000_000, events, concurrency).await;
    println!("backend: {}", store.backend_name());
    println!("1 caller:   {base_rate:>10.0} events/s, {base_per_commit:.1} events/commit");
    println!("{concurrency} callers: {rate:>10.0} events/s, {per_commit:.1} events/commit");
    println!("speed-up from group commit: {:.1}x", rate / base_rate);
}
