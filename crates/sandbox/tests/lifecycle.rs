//! Start-up, facts, determinism, the state file, the oneshot router and the mounted Webhooks
//! API.

mod common;

use common::{Env, config};
use http_body_util::BodyExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use toggl_connect_sandbox::{AppState, Plan, Sandbox, SandboxConfig, SandboxError, Seed, router};
use tower::ServiceExt;

#[tokio::test]
async fn facts_have_exactly_the_documented_keys() {
    let env = Env::start().await;
    let facts = serde_json::to_value(env.sandbox.facts()).expect("facts serialize");
    let mut keys: Vec<&str> = facts.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["api_token", "api_url", "email", "organization_id", "password", "reports_url", "user_id", "webhooks_url", "workspace_id"]
    );
    let addr = env.sandbox.addr();
    assert_eq!(facts["api_url"], json!(format!("http://{addr}/api/v9")));
    assert_eq!(facts["webhooks_url"], json!(format!("http://{addr}/webhooks/api/v1")));
    assert_eq!(facts["reports_url"], json!(format!("http://{addr}/reports/api/v3")));
    assert_ne!(env.sandbox.member().user_id, env.sandbox.facts().user_id);
}

#[tokio::test]
async fn seeds_are_deterministic_per_seed_value() {
    let shape = |s: &AppState| {
        s.read(|db| {
            let tokens: Vec<String> = db.users().map(|u| u.api_token.clone()).collect();
            let entries: Vec<(i64, i64, Option<String>)> = db
                .time_entries(db.workspaces().next().expect("ws").id)
                .filter(|t| !t.is_running())
                .map(|t| (t.id, t.duration, t.description.as_deref().map(str::to_owned)))
                .collect();
            (tokens, entries)
        })
    };
    let cfg = |v| SandboxConfig { seed: Seed::Small, seed_entries: 50, seed_value: v, ..SandboxConfig::default() };
    let a = shape(&AppState::new(cfg(7)).expect("a"));
    let b = shape(&AppState::new(cfg(7)).expect("b"));
    let c = shape(&AppState::new(cfg(8)).expect("c"));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_eq!(a.1.len(), 50 + 7);
}

#[tokio::test]
async fn fixed_token_is_used() {
    let env = Env::with(SandboxConfig { api_token: Some("fixed-token-123".into()), ..config() }).await;
    assert_eq!(env.sandbox.facts().api_token, "fixed-token-123");
    assert_eq!(env.get("/me").await.status, StatusCode::OK);
}

#[tokio::test]
async fn state_file_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sandbox.json");
    let cfg = SandboxConfig { state_file: Some(path.clone()), ..config() };
    let env = Env::with(cfg.clone()).await;
    let wid = env.wid();
    let r = env.post(&format!("/workspaces/{wid}/clients"), r#"{"name":"Persisted"}"#).await;
    let cid = r.json["id"].clone();
    let facts = env.sandbox.facts().clone();
    env.sandbox.shutdown().await.expect("clean shutdown");
    assert!(path.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert_eq!(leftovers.len(), 1, "no temp file left behind");

    let env = Env::with(SandboxConfig { seed_value: 99, ..cfg }).await;
    assert_eq!(env.sandbox.facts().api_token, facts.api_token, "loaded, not re-seeded");
    let r = env.get(&format!("/workspaces/{wid}/clients/{cid}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["name"], json!("Persisted"));
    // New ids continue after the loaded ones.
    let r = env.post(&format!("/workspaces/{wid}/clients"), r#"{"name":"After"}"#).await;
    assert!(r.json["id"].as_i64() > cid.as_i64());
}

#[tokio::test]
async fn corrupt_state_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.json");
    std::fs::write(&path, b"{not json").expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = Sandbox::start_on(listener, SandboxConfig { state_file: Some(path), ..config() })
        .await
        .expect_err("corrupt file");
    assert!(matches!(err, SandboxError::StateFile { .. }), "{err:?}");
}

#[tokio::test]
async fn router_works_with_oneshot() {
    let state = AppState::new(config()).expect("state");
    let token = state.read(|db| db.users().next().expect("admin").api_token.clone());
    let app = router(state);
    let r = app
        .clone()
        .oneshot(http::Request::get("/api/v9/status").body(axum::body::Body::empty()).expect("req"))
        .await
        .expect("infallible");
    assert_eq!(r.status(), 200);
    let r = app
        .clone()
        .oneshot(http::Request::get("/api/v9/me").body(axum::body::Body::empty()).expect("req"))
        .await
        .expect("infallible");
    assert_eq!(r.status(), 401);
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{token}:api_token"));
    let r = app
        .oneshot(
            http::Request::get("/api/v9/me")
                .header("Authorization", format!("Basic {auth}"))
                .body(axum::body::Body::empty())
                .expect("req"),
        )
        .await
        .expect("infallible");
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.expect("body").to_bytes();
    let me: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(me["api_token"], json!(token));
}

#[tokio::test]
async fn webhooks_api_is_mounted_behind_auth_and_quota() {
    let env = Env::with(SandboxConfig { plan: Plan::Free, ..config() }).await;
    let wid = env.wid();
    let r = env.get(&format!("/webhooks/api/v1/limits/{wid}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["max_webhooks"], json!(1));
    assert_eq!(r.json["max_events_per_webhook"], json!(3));
    assert_eq!(r.header("x-toggl-quota-remaining"), Some("29"), "org-scoped quota");
    let r = env
        .call(common::As::Nobody, reqwest::Method::GET, &format!("/webhooks/api/v1/limits/{wid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
