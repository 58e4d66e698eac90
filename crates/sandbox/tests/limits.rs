//! Quota (402), leaky bucket (429) and fault injection over real HTTP.

mod common;

use std::time::{Duration, Instant};

use common::{Env, assert_error, config};
use reqwest::StatusCode;
use serde_json::Value;
use toggl_connect_sandbox::{Faults, Plan, SandboxConfig};

fn remaining(r: &common::Resp) -> i64 {
    r.header("x-toggl-quota-remaining")
        .expect("remaining header")
        .parse()
        .expect("integer")
}

#[tokio::test]
async fn free_plan_org_quota_runs_out_with_402_that_does_not_count() {
    let env = Env::with(SandboxConfig {
        plan: Plan::Free,
        ..config()
    })
    .await;
    let path = format!("/workspaces/{}/clients", env.wid());
    for i in 0..30 {
        let r = env.get(&path).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(remaining(&r), 29 - i);
        let resets: u64 = r
            .header("x-toggl-quota-resets-in")
            .expect("h")
            .parse()
            .expect("n");
        assert!(resets > 0 && resets <= 3600);
    }
    for _ in 0..3 {
        let r = env.get(&path).await;
        assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
        assert!(r.json.is_string(), "402 body is a JSON string: {}", r.text);
        assert_eq!(remaining(&r), 0);
        assert!(r.header("x-toggl-quota-resets-in").is_some());
    }
    // The user-level window is separate and still has room.
    let me = env.get("/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(remaining(&me), 29);
    let q = env.get("/me/quota").await.json;
    let q = q.as_array().expect("quota");
    assert_eq!(q[0]["organization_id"], Value::Null);
    assert_eq!(q[0]["remaining"], 28);
    assert_eq!(q[0]["total"], 30);
    assert_eq!(
        q[1]["remaining"], 0,
        "the refused requests were not counted below 0"
    );
    assert_eq!(q[1]["total"], 30);
}

#[tokio::test]
async fn quota_window_slides_back_open() {
    let env = Env::with(SandboxConfig {
        plan: Plan::Free,
        quota_window: Duration::from_secs(3),
        ..config()
    })
    .await;
    for _ in 0..30 {
        assert_eq!(env.get("/me").await.status, StatusCode::OK);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut saw_402 = false;
    loop {
        let r = env.get("/me").await;
        if r.status == StatusCode::PAYMENT_REQUIRED {
            saw_402 = true;
        } else {
            assert_eq!(r.status, StatusCode::OK);
            break;
        }
        assert!(Instant::now() < deadline, "quota never reset");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 31 requests take far less than the 3 s window, so the window was closed first.
    assert!(saw_402, "the 31st request within the window is refused");
}

#[tokio::test]
async fn unlimited_plan_never_refuses_but_sends_headers() {
    let env = Env::start().await;
    for _ in 0..40 {
        let r = env.get("/me").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(remaining(&r) > 0);
    }
}

#[tokio::test]
async fn leaky_bucket_answers_429_with_retry_after() {
    let env = Env::with(SandboxConfig {
        rate_limit: true,
        ..config()
    })
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let r = env.get("/me").await;
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
        }
    }
    assert_eq!(
        &statuses[..3],
        &[200, 200, 200],
        "burst allowed: {statuses:?}"
    );
    let r = limited.expect("a 429 within 10 back-to-back requests");
    let retry: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("secs");
    assert!(retry >= 1);
    assert!(r.text.contains("429 Too Many Requests"));
    assert!(r.header("x-toggl-quota-remaining").is_some());
    // Another user has their own bucket.
    let m = env.member(reqwest::Method::GET, "/me", None).await;
    assert_eq!(m.status, StatusCode::OK);
}

#[tokio::test]
async fn injected_5xx_change_nothing() {
    let env = Env::with(SandboxConfig {
        faults: Faults {
            share_5xx: 1.0,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let clients_before = env.sandbox.state().read(|db| db.clients(env.wid()).count());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = env
            .post(
                &format!("/workspaces/{}/clients", env.wid()),
                r#"{"name":"Ghost"}"#,
            )
            .await;
        seen.insert(r.status.as_u16());
        match r.status.as_u16() {
            500 => assert_error(&r, 500, "Internal Server Error"),
            502 | 503 => assert!(r.text.starts_with("<html>"), "{}", r.text),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(seen.len() >= 2, "a mix of 5xx kinds: {seen:?}");
    let clients_after = env.sandbox.state().read(|db| db.clients(env.wid()).count());
    assert_eq!(clients_before, clients_after);
}

#[tokio::test]
async fn injected_latency_delays_answers() {
    let env = Env::with(SandboxConfig {
        faults: Faults {
            latency_ms: 150,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let t = Instant::now();
    assert_eq!(env.get("/me").await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn paid_feature_402_has_no_quota_headers() {
    let env = Env::with(SandboxConfig {
        plan: Plan::Free,
        ..config()
    })
    .await;
    let wid = env.wid();
    let r = env
        .post(
            &format!("/workspaces/{wid}/time_entries"),
            &serde_json::json!({"created_with":"t","start":"2024-01-01T00:00:00Z","workspace_id":wid,"billable":true})
                .to_string(),
        )
        .await;
    assert_error(
        &r,
        402,
        "Request tried to utilized Premium functionality on workspace which is not Premium!",
    );
    assert!(r.header("x-toggl-quota-remaining").is_none());
    assert!(r.header("x-toggl-quota-resets-in").is_none());
}
