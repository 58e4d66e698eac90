//! End to end against the sandbox: the shipped example rules, planned from events built from
//! real sandbox responses, run by the worker, checked by reading the sandbox back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use toggl_connect_automation::{RuleSet, SecretSource, Worker, WorkerConfig, sign};
use toggl_connect_client::{ApiRequest, Client, ClientConfig};
use toggl_connect_definition::Connector;
use toggl_connect_sandbox::{Sandbox, SandboxConfig};
use toggl_connect_store::{JobFilter, JobStatus, NewEvent, Store, StoreOptions};
use tokio_util::sync::CancellationToken;

const EXAMPLE: &str = include_str!("../../../examples/toggl-connect.toml");

type Deliveries = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn billing_server() -> (String, Deliveries) {
    let seen: Deliveries = Arc::default();
    let sink = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/billing",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().expect("deliveries lock").push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("billing server runs");
    });
    (format!("http://{addr}/billing"), seen)
}

async fn store_event(
    store: &Store,
    event_id: i64,
    triggers: &[&str],
    envelope: &Value,
    rules: &RuleSet,
) -> i64 {
    store
        .insert_event(NewEvent {
            event_id,
            entity: envelope["metadata"]["model"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            action: envelope["metadata"]["action"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            trigger: triggers.join(" "),
            received_at: chrono::Utc::now(),
            envelope: envelope.to_string(),
            jobs: rules.plan(triggers, envelope),
            ..NewEvent::default()
        })
        .await
        .expect("event stored")
        .id
}

async fn wait_all_finished(store: &Store, expected: usize) -> Vec<toggl_connect_store::Job> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = store
            .list_jobs(JobFilter::default())
            .await
            .expect("list jobs");
        if jobs.len() == expected && jobs.iter().all(|j| j.status.is_finished()) {
            return jobs;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn example_rules_act_on_the_sandbox() {
    let sandbox = Sandbox::start(SandboxConfig {
        rate_limit: false,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts");
    let facts = sandbox.facts().clone();
    let member = sandbox.member().user_id;
    let wid = facts.workspace_id;
    let (billing_url, deliveries) = billing_server().await;

    let source = EXAMPLE
        .replace("user_id = 5000002", &format!("user_id = {member}"))
        .replace("http://127.0.0.1:9999/billing", &billing_url);
    let rules = RuleSet::parse(&source, Connector::builtin()).expect("example compiles");

    let mut config =
        ClientConfig::with_token(facts.api_token.clone()).base_url(facts.api_url.clone());
    config.pacing = None;
    let client = Client::new(config).expect("client");

    // A project is created (by someone, through the API).
    let project = client
        .send(ApiRequest::post(
            format!("/api/v9/workspaces/{wid}/projects"),
            json!({"name": "Apollo"}),
        ))
        .await
        .expect("project created")
        .body;
    let pid = project["id"].as_i64().expect("project id");
    // A timer runs and stops without a project.
    let start = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let entry = client
        .send(ApiRequest::post(
            format!("/api/v9/workspaces/{wid}/time_entries"),
            json!({"created_with": "test", "workspace_id": wid, "start": start, "duration": -1, "description": "Untitled work"}),
        ))
        .await
        .expect("timer started")
        .body;
    let teid = entry["id"].as_i64().expect("entry id");
    let stopped = client
        .send(ApiRequest::new(
            reqwest::Method::PATCH,
            format!("/api/v9/workspaces/{wid}/time_entries/{teid}/stop"),
        ))
        .await
        .expect("timer stopped")
        .body;

    let store = Store::open("sqlite::memory:", StoreOptions::default())
        .await
        .expect("store");
    let project_event = json!({"event_id": 8_100_000_000_000_101_i64, "metadata": {"model": "project", "action": "created", "workspace_id": wid.to_string()}, "payload": project});
    let stop_event = json!({"event_id": 8_100_000_000_000_102_i64, "metadata": {"model": "time_entry", "action": "updated", "path": format!("/api/v9/workspaces/{wid}/time_entries/{teid}/stop")}, "payload": stopped});
    store_event(
        &store,
        8_100_000_000_000_101,
        &["project_created"],
        &project_event,
        &rules,
    )
    .await;
    store_event(
        &store,
        8_100_000_000_000_102,
        &["time_entry_updated", "time_entry_stopped"],
        &stop_event,
        &rules,
    )
    .await;

    let worker_config = WorkerConfig {
        worker_id: "e2e".into(),
        poll_interval: Duration::from_millis(50),
        secrets: SecretSource::from_fn(|name| {
            (name == "BILLING_WEBHOOK_SECRET").then(|| "billing-secret".to_owned())
        }),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(
        store.clone(),
        client.clone(),
        Arc::new(Connector::builtin().clone()),
        worker_config,
    )
    .expect("worker");
    let shutdown = CancellationToken::new();
    let wake = worker.notifier();
    let handle = worker.run(shutdown.clone());
    wake.notify_one();
    // kickoff: 2 steps; tag-unassigned: 1; forward-to-billing: 1.
    let jobs = wait_all_finished(&store, 4).await;
    shutdown.cancel();
    handle.await.expect("worker stops");
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{jobs:#?}"
    );

    let members = client
        .send(
            ApiRequest::get(format!("/api/v9/workspaces/{wid}/project_users"))
                .with_query("project_ids", pid.to_string()),
        )
        .await
        .expect("members")
        .body;
    assert!(
        members.as_array().is_some_and(|m| m
            .iter()
            .any(|pu| pu["user_id"] == json!(member) && pu["project_id"] == json!(pid))),
        "the team lead is a member: {members}"
    );
    let tasks = client
        .send(ApiRequest::get(format!(
            "/api/v9/workspaces/{wid}/projects/{pid}/tasks"
        )))
        .await
        .expect("tasks")
        .body;
    assert!(
        tasks
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == json!("Kickoff"))),
        "Kickoff task exists: {tasks}"
    );

    let entry = client
        .send(ApiRequest::get(format!("/api/v9/me/time_entries/{teid}")))
        .await
        .expect("entry")
        .body;
    assert_eq!(entry["tags"], json!(["needs-project"]), "{entry}");

    let deliveries = deliveries.lock().expect("deliveries lock").clone();
    assert_eq!(
        deliveries.len(),
        1,
        "one billing delivery (for the time entry event)"
    );
    let (headers, body) = &deliveries[0];
    assert_eq!(body.as_ref(), stop_event.to_string().as_bytes());
    assert_eq!(
        headers
            .get("x-webhook-signature-256")
            .and_then(|v| v.to_str().ok()),
        Some(sign("billing-secret", body).as_str())
    );
    sandbox.shutdown().await.expect("sandbox stops");
}
