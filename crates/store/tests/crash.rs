//! kill -9 test. The test binary runs itself as a child (switched by an environment variable)
//! that inserts events from many tasks and prints each id once its insert was acknowledged;
//! the parent kills it with SIGKILL mid-run, reopens the file and checks that every
//! acknowledged event is there exactly once, with its job. Two rounds, so the second child
//! also recovers from the first one's crash.
//!
//! `harness = false`: `main` is the test.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use toggl_connect_store::{NewEvent, NewJob, Store, StoreOptions};

const CHILD_URL: &str = "TOGGL_CONNECT_STORE_CRASH_CHILD_URL";
const CHILD_ROUND: &str = "TOGGL_CONNECT_STORE_CRASH_CHILD_ROUND";
/// Acknowledgements the parent waits for before killing the child.
const KILL_AFTER: usize = 400;
const TASKS: i64 = 16;

/// The one test this binary holds, as test runners see it.
const TEST_NAME: &str = "sigkill_loses_no_acknowledged_event";

/// A custom harness (the test re-runs this binary as the child it kills), so it speaks the part
/// of libtest's command line that `cargo test` and cargo-nextest use: `--list` (with `--ignored`
/// listing nothing) and an optional name filter.
fn main() {
    if let Ok(url) = std::env::var(CHILD_URL) {
        child(&url);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("{TEST_NAME}: test");
        }
        return;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected = filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                f.as_str() == TEST_NAME
            } else {
                TEST_NAME.contains(f.as_str())
            }
        });
    if !selected {
        println!(
            "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out"
        );
        return;
    }
    println!("running 1 test");
    parent();
    println!(
        "test {TEST_NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
    );
}

fn event(event_id: i64) -> NewEvent {
    NewEvent {
        event_id,
        entity: "time_entry".into(),
        action: "created".into(),
        trigger: "time_entry_started".into(),
        received_at: chrono::Utc::now(),
        envelope: format!(r#"{{"event_id":{event_id}}}"#),
        jobs: vec![NewJob {
            rule: "crash".into(),
            step_index: 0,
            step_name: "only".into(),
            payload: serde_json::json!({"event_id": event_id}),
            not_before: None,
            priority: 0,
        }],
        ..NewEvent::default()
    }
}

fn child(url: &str) {
    let round: i64 = std::env::var(CHILD_ROUND)
        .expect("round")
        .parse()
        .expect("round number");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = Store::open(url, StoreOptions::default())
            .await
            .expect("open");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let event_id = round * 1_000_000_000 + task * 1_000_000 + i;
                        let out = store.insert_event(event(event_id)).await.expect("insert");
                        assert!(!out.duplicate);
                        // println! locks stdout and writes the whole line at once.
                        println!("ack {event_id} {}", out.id);
                        // Re-send an earlier delivery now and then: it must stay single.
                        if i % 7 == 3 {
                            let again = store.insert_event(event(event_id - 1)).await.expect("dup");
                            assert!(again.duplicate);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
}

fn run_child_and_kill(url: &str, round: i64) -> HashMap<i64, i64> {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env(CHILD_URL, url)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acked = HashMap::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        let mut parts = line.split_whitespace();
        if parts.next() != Some("ack") {
            continue;
        }
        let event_id: i64 = parts.next().expect("event id").parse().expect("number");
        let row_id: i64 = parts.next().expect("row id").parse().expect("number");
        assert!(
            acked.insert(event_id, row_id).is_none(),
            "acked twice: {event_id}"
        );
        if !killed && acked.len() >= KILL_AFTER {
            child.kill().expect("SIGKILL child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait child");
    assert_eq!(
        status.signal(),
        Some(9),
        "child must die by SIGKILL, got {status:?}"
    );
    assert!(
        acked.len() >= KILL_AFTER,
        "child acknowledged only {}",
        acked.len()
    );
    acked
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.db");
    let url = format!("sqlite://{}", path.display());
    let mut all_acked = HashMap::new();
    for round in 1..=2 {
        let acked = run_child_and_kill(&url, round);
        all_acked.extend(acked);
        verify(&url, &path, &all_acked);
    }
    println!(
        "crash test: ok, {} acknowledged events survived SIGKILL twice",
        all_acked.len()
    );
}

fn verify(url: &str, path: &std::path::Path, acked: &HashMap<i64, i64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stored: Vec<(i64, i64)> = rt.block_on(async {
        let store = Store::open(url, StoreOptions::default())
            .await
            .expect("reopen");
        common::all_events(&store)
            .await
            .iter()
            .map(|e| (e.event_id, e.id))
            .collect()
    });
    let mut seen = HashMap::new();
    for (event_id, row_id) in &stored {
        assert!(
            seen.insert(*event_id, *row_id).is_none(),
            "event {event_id} stored twice"
        );
    }
    for (event_id, row_id) in acked {
        assert_eq!(
            seen.get(event_id),
            Some(row_id),
            "acknowledged event {event_id} lost"
        );
    }
    let conn = rusqlite::Connection::open(path).expect("open raw");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(integrity, "ok");
    let mut stmt = conn
        .prepare("SELECT event_row_id FROM jobs")
        .expect("prepare");
    let with_jobs: HashSet<i64> = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for row_id in acked.values() {
        assert!(
            with_jobs.contains(row_id),
            "event row {row_id} lost its job"
        );
    }
    assert_eq!(
        with_jobs.len(),
        stored.len(),
        "one job per stored event, none orphaned"
    );
}
