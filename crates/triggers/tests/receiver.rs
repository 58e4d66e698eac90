//! The receiver over real HTTP, storing into a real SQLite file.

use std::sync::Arc;

use serde_json::{Value, json};
use toggl_connect_store::{EventFilter, Store, StoreOptions};
use toggl_connect_triggers::metrics::Rejection;
use toggl_connect_triggers::receiver::{Receiver, ReceiverConfig, SecretRing, router};
use toggl_connect_triggers::signature::{SIGNATURE_HEADER, SigningSecret, sign};

struct Harness {
    url: String,
    store: Store,
    receiver: Arc<Receiver>,
    secret: SigningSecret,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    let store = Store::open(&url, StoreOptions::default())
        .await
        .expect("store opens");
    let secrets = Arc::new(SecretRing::default());
    let secret = SigningSecret::new("s3cr3t-for-tests");
    secrets.add(Some(42), secret.clone());
    let receiver = Arc::new(Receiver::new(
        store.clone(),
        secrets,
        ReceiverConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::clone(&receiver));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Harness {
        url: format!("http://{addr}"),
        store,
        receiver,
        secret,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

fn envelope(event_id: i64, action: &str, payload: Value, path: &str) -> String {
    json!({
        "event_id": event_id,
        "created_at": "2025-01-10T09:00:01.827Z",
        "creator_id": 5_000_001,
        "metadata": {"action": action, "model": "time_entry", "event_user_id": "5000001",
            "path": path, "request_type": "POST", "workspace_id": "9000001",
            "time_entry_id": payload["id"].to_string()},
        "payload": payload,
        "subscription_id": 42,
        "timestamp": "2025-01-10T09:00:02.170443406Z",
        "url_callback": "http://127.0.0.1/webhooks/toggl"
    })
    .to_string()
}

impl Harness {
    async fn post(&self, path: &str, body: &str, signature: Option<String>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(sig) = signature {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        req.send().await.expect("request completes")
    }

    async fn deliver(&self, body: &str) -> reqwest::Response {
        self.post(
            "/webhooks/toggl",
            body,
            Some(sign(&self.secret, body.as_bytes())),
        )
        .await
    }

    async fn stored(&self) -> Vec<toggl_connect_store::StoredEvent> {
        self.store
            .list_events(EventFilter {
                limit: Some(1000),
                ..EventFilter::default()
            })
            .await
            .expect("lists")
    }
}

#[tokio::test]
async fn signed_event_is_stored_once_even_when_replayed() {
    let h = start().await;
    let body = envelope(
        8_100_000_000_000_001,
        "created",
        json!({"id": 4_100_000_001_i64, "duration": -1, "stop": null}),
        "/api/v9/workspaces/9000001/time_entries",
    );
    for _ in 0..6 {
        let resp = h.deliver(&body).await;
        assert_eq!(resp.status(), 200);
    }
    let events = h.stored().await;
    assert_eq!(events.len(), 1, "one event despite 6 deliveries");
    let e = &events[0];
    assert_eq!(e.event_id, 8_100_000_000_000_001);
    assert_eq!(e.envelope, body, "raw envelope kept byte for byte");
    assert_eq!(e.trigger, "time_entry_created time_entry_started");
    let text = h.receiver.metrics().render();
    assert!(
        text.contains("toggl_connect_events_stored_total 1"),
        "{text}"
    );
    assert!(
        text.contains("toggl_connect_events_duplicate_total 5"),
        "{text}"
    );
}

#[tokio::test]
async fn rejections_store_nothing() {
    let h = start().await;
    let body = envelope(
        1,
        "created",
        json!({"id": 7, "duration": 60, "stop": "2025-01-10T09:01:00Z"}),
        "/x",
    );

    // No signature, a wrong one, one made with another secret, one over other bytes.
    assert_eq!(h.post("/webhooks/toggl", &body, None).await.status(), 401);
    assert_eq!(
        h.post("/webhooks/toggl", &body, Some("sha256=00".into()))
            .await
            .status(),
        401
    );
    let other = SigningSecret::new("not-ours");
    assert_eq!(
        h.post(
            "/webhooks/toggl",
            &body,
            Some(sign(&other, body.as_bytes()))
        )
        .await
        .status(),
        401
    );
    let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).expect("json"))
        .expect("pretty");
    assert_eq!(
        h.post(
            "/webhooks/toggl",
            &pretty,
            Some(sign(&h.secret, body.as_bytes()))
        )
        .await
        .status(),
        401
    );
    let resp = h.post("/webhooks/toggl", &body, None).await;
    assert_eq!(
        resp.text().await.expect("body"),
        "",
        "401 carries no detail"
    );

    // Oversize, malformed, wrong method.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    assert_eq!(h.deliver(&big).await.status(), 413);
    assert_eq!(h.deliver("not json").await.status(), 400);
    assert_eq!(h.deliver(r#"{"payload":{"id":1}}"#).await.status(), 400);
    let get = h
        .http
        .get(format!("{}/webhooks/toggl", h.url))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 405);
    assert_eq!(
        get.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );

    assert!(h.stored().await.is_empty(), "nothing stored");
    let m = h.receiver.metrics();
    assert_eq!(m.rejected_count(Rejection::Signature), 5);
    assert_eq!(m.rejected_count(Rejection::TooLarge), 1);
    assert_eq!(m.rejected_count(Rejection::Malformed), 2);
    assert_eq!(m.rejected_count(Rejection::Method), 1);
}

#[tokio::test]
async fn ping_echoes_validation_code_and_is_not_an_event() {
    let h = start().await;
    let body = json!({"event_id":0,"created_at":"2025-01-10T09:00:00.123456789Z","creator_id":5000001,
        "metadata":{"request_type":"POST","event_user_id":5000001},"payload":"ping","subscription_id":42,
        "timestamp":"2025-01-10T09:00:00.123456789Z","url_callback":"http://x","validation_code":"0f3c9a",
        "validation_code_url":"http://x/webhooks/api/v1/validate/1/42/0f3c9a"})
    .to_string();
    let resp = h.deliver(&body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer, json!({"validation_code": "0f3c9a"}));
    assert!(h.stored().await.is_empty());
}

#[tokio::test]
async fn seed_per_event_paths_are_accepted() {
    let h = start().await;
    let body = envelope(
        77,
        "created",
        json!({"id": 9, "duration": 5, "stop": "2025-01-10T09:00:05Z"}),
        "/x",
    );
    let resp = h
        .post(
            "/webhooks/toggl/time_entry_created",
            &body,
            Some(sign(&h.secret, body.as_bytes())),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.stored().await.len(), 1);
}

#[tokio::test]
async fn started_and_stopped_use_the_stored_previous_state() {
    let h = start().await;
    let id = 4_200_000_000_i64;
    let start = envelope(
        1,
        "created",
        json!({"id": id, "duration": -1, "stop": null, "at": "2025-01-10T09:00:00Z"}),
        "/api/v9/workspaces/9000001/time_entries",
    );
    let edit_running = envelope(
        2,
        "updated",
        json!({"id": id, "duration": -1, "stop": null, "description": "x", "at": "2025-01-10T09:00:10Z"}),
        "/api/v9/workspaces/9000001/time_entries/1",
    );
    let stop = envelope(
        3,
        "updated",
        json!({"id": id, "duration": 60, "stop": "2025-01-10T09:01:00Z", "at": "2025-01-10T09:01:00Z"}),
        "/api/v9/workspaces/9000001/time_entries/1",
    );
    let edit_stopped = envelope(
        4,
        "updated",
        json!({"id": id, "duration": 60, "stop": "2025-01-10T09:01:00Z", "description": "y", "at": "2025-01-10T09:02:00Z"}),
        "/api/v9/workspaces/9000001/time_entries/1",
    );
    for body in [&start, &edit_running, &stop, &edit_stopped] {
        assert_eq!(h.deliver(body).await.status(), 200);
    }
    let mut events = h.stored().await;
    events.sort_by_key(|e| e.event_id);
    let triggers: Vec<&str> = events.iter().map(|e| e.trigger.as_str()).collect();
    assert_eq!(
        triggers,
        vec![
            "time_entry_created time_entry_started",
            "time_entry_updated",
            "time_entry_updated time_entry_stopped",
            "time_entry_updated",
        ]
    );
}

#[tokio::test]
async fn concurrent_deliveries_are_all_stored_and_share_commits() {
    let h = Arc::new(start().await);
    let before = h.store.stats().commits;
    let mut tasks = Vec::new();
    for i in 0..200_i64 {
        let h = Arc::clone(&h);
        tasks.push(tokio::spawn(async move {
            let body = envelope(
                10_000 + i,
                "created",
                json!({"id": 1000 + i, "duration": 5, "stop": "2025-01-10T09:00:05Z"}),
                "/x",
            );
            h.deliver(&body).await.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    assert_eq!(h.stored().await.len(), 200);
    let commits = h.store.stats().commits - before;
    assert!(
        commits < 200,
        "group commit should batch: {commits} commits for 200 events"
    );
}

#[tokio::test]
async fn healthz_and_metrics() {
    let h = start().await;
    let health = h
        .http
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let metrics = h
        .http
        .get(format!("{}/metrics", h.url))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("# TYPE toggl_connect_deliveries_received_total counter"));
}
