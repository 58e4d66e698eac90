//! End to end through a whole sandbox: Track API mutations become signed webhook events, and
//! the detailed report sees the same data.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;
use toggl_connect_sandbox::{Sandbox, SandboxConfig};

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(r): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    let code = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v.get("validation_code").cloned());
                    r.lock().push((headers, body));
                    axum::Json(json!({ "validation_code": code }))
                },
            ),
        )
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}/hook"), received)
}

fn signed_by(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    headers
        .get("x-webhook-signature-256")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes())
}

#[tokio::test]
async fn a_time_entry_created_through_the_api_is_delivered_and_reported() {
    let sandbox = Sandbox::start(SandboxConfig {
        rate_limit: false,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts");
    let facts = sandbox.facts().clone();
    let http = reqwest::Client::new();
    let (url, received) = receiver().await;

    let sub: Value = http
        .post(format!(
            "{}/subscriptions/{}",
            facts.webhooks_url, facts.workspace_id
        ))
        .basic_auth(&facts.api_token, Some("api_token"))
        .json(&json!({
            "description": "e2e", "url_callback": url, "enabled": true,
            "event_filters": [{"entity": "time_entry", "action": "created"}]
        }))
        .send()
        .await
        .expect("create subscription")
        .json()
        .await
        .expect("json");
    assert!(sub["validated_at"].is_string(), "{sub}");
    let secret = sub["secret"].as_str().expect("secret").to_owned();

    let request_body = json!({
        "created_with": "webhooks_sandbox", "workspace_id": facts.workspace_id,
        "start": "2025-01-10T09:00:00Z", "duration": 3600, "description": "e2e entry"
    })
    .to_string();
    let resp = http
        .post(format!(
            "{}/workspaces/{}/time_entries",
            facts.api_url, facts.workspace_id
        ))
        .basic_auth(&facts.api_token, Some("api_token"))
        .header("content-type", "application/json")
        .body(request_body.clone())
        .send()
        .await
        .expect("create time entry");
    assert!(resp.status().is_success(), "{}", resp.status());
    let entry: Value = resp.json().await.expect("json");
    let entry_id = entry["id"].as_i64().expect("id");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (headers, body) = loop {
        let event = received
            .lock()
            .iter()
            .find(|(_, b)| serde_json::from_slice::<Value>(b).is_ok_and(|v| v["payload"] != "ping"))
            .cloned();
        if let Some(event) = event {
            break event;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(signed_by(&secret, &headers, &body));
    let event: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(event["payload"]["id"], entry_id);
    assert_eq!(event["metadata"]["action"], "created");
    assert_eq!(event["metadata"]["model"], "time_entry");
    assert_eq!(event["metadata"]["time_entry_id"], entry_id.to_string());
    assert_eq!(event["metadata"]["request_body"], request_body.as_str());
    assert_eq!(
        event["metadata"]["workspace_id"],
        facts.workspace_id.to_string()
    );

    let report = http
        .post(format!(
            "{}/workspace/{}/search/time_entries",
            facts.reports_url, facts.workspace_id
        ))
        .basic_auth(&facts.api_token, Some("api_token"))
        .json(&json!({"start_date": "2025-01-10", "end_date": "2025-01-10"}))
        .send()
        .await
        .expect("report");
    assert!(report.status().is_success(), "{}", report.status());
    let rows: Value = report.json().await.expect("json");
    let ids: Vec<i64> = rows
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| r["time_entries"].as_array().expect("entries").clone())
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [entry_id]);
    assert_eq!(rows[0]["description"], "e2e entry");
    assert_eq!(rows[0]["time_entries"][0]["seconds"], 3600);

    sandbox.shutdown().await.expect("shutdown");
}
