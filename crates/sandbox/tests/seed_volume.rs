//! Seeding volume: 100k time entries. Prints the time and memory it took; run it in release
//! for the real figures: `cargo test -p toggl-connect-sandbox --release --test seed_volume -- --nocapture`.

mod common;

use std::time::Instant;

use common::{Env, config};
use reqwest::StatusCode;
use toggl_connect_sandbox::{AppState, SandboxConfig};

const N: usize = 100_000;

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn seeds_100k_entries_and_serves_them() {
    let before = rss_kib();
    let t = Instant::now();
    let state = AppState::new(SandboxConfig {
        seed_entries: N,
        ..config()
    })
    .expect("state");
    let elapsed = t.elapsed();
    let after = rss_kib();
    let count = state.read(|db| {
        db.workspaces()
            .map(|w| db.time_entries(w.id).count())
            .sum::<usize>()
    });
    assert!(count >= N);
    eprintln!(
        "seeded {N} entries in {:.3} s; RSS delta {} KiB",
        elapsed.as_secs_f64(),
        match (before, after) {
            (Some(b), Some(a)) => a.saturating_sub(b).to_string(),
            _ => "n/a".into(),
        }
    );
    drop(state);

    let env = Env::with(SandboxConfig {
        seed_entries: N,
        ..config()
    })
    .await;
    let t = Instant::now();
    let r = env.get("/me/time_entries").await;
    eprintln!(
        "GET /me/time_entries over {N} entries: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json.as_array().expect("list");
    assert_eq!(list.len(), 1000, "capped at 1000");
    let starts: Vec<&str> = list
        .iter()
        .map(|e| e["start"].as_str().expect("start"))
        .collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
}
