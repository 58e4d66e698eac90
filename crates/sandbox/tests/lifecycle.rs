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
    let mut keys: Vec<&str> = facts
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "api_token",
            "api_url",
            "email",
            "organization_id",
            "password",
            "reports_url",
            "user_id",
            "webhooks_url",
            "workspace_id"
        ]
    );
    let addr = env.sandbox.addr();
    assert_eq!(facts["api_url"], json!(format!("http://{addr}/api/v9")));
    assert_eq!(
        facts["webhooks_url"],
        json!(format!("http://{addr}/webhooks/api/v1"))
    );
    assert_eq!(
        facts["reports_url"],
        json!(format!("http://{addr}/reports/api/v3"))
    );
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
                .map(|t| {
                    (
                        t.id,
                        t.duration,
                        t.description.as_deref().map(str::to_owned),
                    )
                })
                .collect();
            (tokens, entries)
        })
    };
    let cfg = |v| SandboxConfig {
        seed: Seed::Small,
        seed_entries: 50,
        seed_value: v,
        ..SandboxConfig::default()
    };
    let a = shape(&AppState::new(cfg(7)).expect("a"));
    let b = shape(&AppState::new(cfg(7)).expect("b"));
    let c = shape(&AppState::new(cfg(8)).expect("c"));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_eq!(
        a.1.len(),
        50 + 6,
        "6 seeded stopped entries in the default workspace"
    );
}

#[tokio::test]
async fn fixed_token_is_used() {
    let env = Env::with(SandboxConfig {
        api_token: Some("fixed-token-123".into()),
        ..config()
    })
    .await;
    assert_eq!(env.sandbox.facts().api_token, "fixed-token-123");
    assert_eq!(env.get("/me").await.status, StatusCode::OK);
}

#[tokio::test]
async fn state_file_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sandbox.json");
    let cfg = SandboxConfig {
        state_file: Some(path.clone()),
        ..config()
    };
    let env = Env::with(cfg.clone()).await;
    let wid = env.wid();
    let r = env
        .post(
            &format!("/workspaces/{wid}/clients"),
            r#"{"name":"Persisted"}"#,
        )
        .await;
    let cid = r.json["id"].clone();
    let facts = env.sandbox.facts().clone();
    env.sandbox.shutdown().await.expect("clean shutdown");
    assert!(path.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert_eq!(leftovers.len(), 1, "no temp file left behind");

    let env = Env::with(SandboxConfig {
        seed_value: 99,
        ..cfg
    })
    .await;
    assert_eq!(
        env.sandbox.facts().api_token,
        facts.api_token,
        "loaded, not re-seeded"
    );
    let r = env.get(&format!("/workspaces/{wid}/clients/{cid}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["name"], json!("Persisted"));
    // New ids continue after the loaded ones.
    let r = env
        .post(&format!("/workspaces/{wid}/clients"), r#"{"name":"After"}"#)
        .await;
    assert!(r.json["id"].as_i64() > cid.as_i64());
}

#[tokio::test]
async fn corrupt_state_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.json");
    std::fs::write(&path, b"{not json").expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = Sandbox::start_on(
        listener,
        SandboxConfig {
            state_file: Some(path),
            ..config()
        },
    )
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
        .oneshot(
            http::Request::get("/api/v9/status")
                .body(axum::body::Body::empty())
                .expect("req"),
        )
        .await
        .expect("infallible");
    assert_eq!(r.status(), 200);
    let r = app
        .clone()
        .oneshot(
            http::Request::get("/api/v9/me")
                .body(axum::body::Body::empty())
                .expect("req"),
        )
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
    let env = Env::with(SandboxConfig {
        plan: Plan::Free,
        ..config()
    })
    .await;
    let wid = env.wid();
    let r = env.get(&format!("/webhooks/api/v1/limits/{wid}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["max_webhooks"], json!(1));
    assert_eq!(r.json["max_events_per_webhook"], json!(3));
    assert_eq!(
        r.header("x-toggl-quota-remaining"),
        Some("29"),
        "org-scoped quota"
    );
    let r = env
        .call(
            common::As::Nobody,
            reqwest::Method::GET,
            &format!("/webhooks/api/v1/limits/{wid}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// A callback endpoint that echoes validation codes and records event bodies.
async fn receiver() -> (String, std::sync::Arc<parking_lot::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<Value>::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let echo = json!({"validation_code": v.get("validation_code").cloned().unwrap_or(Value::Null)});
                store.lock().push(v);
                axum::Json(echo)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn track_api_mutations_reach_webhook_subscribers() {
    let env = Env::start().await;
    let wid = env.wid();
    let (url, seen) = receiver().await;
    let sub = json!({"url_callback": url, "description": "e2e", "enabled": true,
                     "event_filters": [{"entity": "time_entry", "action": "*"}]});
    let r = env
        .post(
            &format!("/webhooks/api/v1/subscriptions/{wid}"),
            &sub.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.json["validated_at"].is_string(),
        "validated by echo: {}",
        r.text
    );

    let body = json!({"created_with":"e2e","start":"2024-06-01T10:00:00Z","workspace_id":wid,"duration":-1});
    let te = env
        .post(
            &format!("/workspaces/{wid}/time_entries"),
            &body.to_string(),
        )
        .await;
    let id = te.json["id"].as_i64().expect("id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let event = loop {
        let found = seen
            .lock()
            .iter()
            .find(|v| {
                v["metadata"]["model"] == json!("time_entry") && v["payload"]["id"] == json!(id)
            })
            .cloned();
        if let Some(e) = found {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "no event delivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(event["metadata"]["action"], json!("created"));
    assert_eq!(
        event["metadata"]["path"],
        json!(format!("/api/v9/workspaces/{wid}/time_entries"))
    );
    assert_eq!(event["payload"]["duration"], json!(-1_717_236_000_i64));
}

#[tokio::test]
async fn reports_api_is_mounted_behind_auth_and_quota() {
    let env = Env::with(SandboxConfig {
        plan: Plan::Starter,
        ..config()
    })
    .await;
    let wid = env.wid();
    let today = chrono::Utc::now().date_naive();
    let body = json!({"start_date": (today - chrono::Duration::days(7)).to_string(), "end_date": today.to_string()});
    let path = format!("/reports/api/v3/workspace/{wid}/search/time_entries");
    let r = env.post(&path, &body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        !r.json.as_array().expect("rows").is_empty(),
        "seeded entries are reported"
    );
    assert_eq!(
        r.header("x-toggl-quota-remaining"),
        Some("239"),
        "org-scoped quota"
    );
    let r = env
        .call(
            common::As::Nobody,
            reqwest::Method::POST,
            &path,
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
