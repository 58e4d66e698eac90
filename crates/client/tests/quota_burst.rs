//! 100 concurrent calls against a quota of 5 per 2-second window.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Reply, TestServer, config};
use parking_lot::Mutex;
use serde_json::json;
use toggl_connect_client::{ApiRequest, Client};
use tokio::time::Instant;

const QUOTA: u32 = 5;
const WINDOW: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Window {
    end: Option<Instant>,
    used: u32,
    over: u32,
}

#[derive(Default)]
struct Meter {
    current: Window,
    /// Requests received while the quota was spent, per window.
    over_per_window: Vec<u32>,
}

#[derive(Clone, Copy)]
enum Rounding {
    /// The announced reset is never early.
    Up,
    /// The announced reset can be up to a second early: the client probes early and gets a 402.
    Down,
}

#[tokio::test]
async fn burst_never_hits_a_spent_quota_more_than_once_per_window() {
    burst(100, Rounding::Up).await;
}

#[tokio::test]
async fn burst_with_early_reset_announcements_still_probes_once_per_window() {
    burst(30, Rounding::Down).await;
}

async fn burst(calls: usize, rounding: Rounding) {
    let meter = Arc::new(Mutex::new(Meter::default()));
    let m = Arc::clone(&meter);
    let server = TestServer::start(move |_, _| {
        let mut meter = m.lock();
        let now = Instant::now();
        if meter.current.end.is_none_or(|end| end <= now) {
            let finished = std::mem::take(&mut meter.current);
            if finished.end.is_some() {
                meter.over_per_window.push(finished.over);
            }
            meter.current.end = Some(now + WINDOW);
        }
        let end = meter.current.end.expect("window set");
        // Toggl reports whole seconds; which way it rounds is not documented.
        let left = end.saturating_duration_since(now).as_secs_f64();
        let resets_in = match rounding {
            Rounding::Up => left.ceil() as u64,
            Rounding::Down => left.floor() as u64,
        };
        if meter.current.used < QUOTA {
            meter.current.used += 1;
            let remaining = i64::from(QUOTA - meter.current.used);
            Reply::json(200, json!({"ok": true})).quota(remaining, resets_in)
        } else {
            meter.current.over += 1;
            Reply::json(402, json!("hourly quota exceeded")).quota(0, resets_in)
        }
    })
    .await;
    let mut cfg = config(&server.url);
    cfg.max_quota_wait = Duration::from_secs(10);
    let client = Client::new(cfg).expect("client");
    let mut tasks = Vec::new();
    for i in 0..calls {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.send(ApiRequest::get(format!(
                "/api/v9/workspaces/77/projects/{i}"
            )))
            .await
        }));
    }
    for t in tasks {
        t.await.expect("joins").expect("every call completes");
    }
    let meter = meter.lock();
    let mut over = meter.over_per_window.clone();
    over.push(meter.current.over);
    assert!(
        over.iter().all(|n| *n <= 1),
        "requests while the quota was spent, per window: {over:?}"
    );
    if matches!(rounding, Rounding::Down) {
        // The early announcements must really have produced probes that met a spent quota,
        // otherwise this variant tests nothing beyond the first.
        assert!(
            over.iter().sum::<u32>() > 0,
            "no probe met a spent quota: {over:?}"
        );
    }
    assert!(server.count() >= calls);
    assert!(
        server.count() <= calls + over.len(),
        "{} requests for {calls} calls",
        server.count()
    );
    assert!(
        over.len() >= calls / QUOTA as usize,
        "{calls} calls need at least {} windows of {QUOTA}",
        calls / QUOTA as usize
    );
}
