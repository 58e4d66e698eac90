//! The worker against a scripted local Toggl on 127.0.0.1:0 and a real (in-memory) SQLite store.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use toggl_connect_automation::{
    Backoff, RuleSet, SecretSource, Worker, WorkerConfig, cancel_run, list_runs, retry_run,
    show_run, sign,
};
use toggl_connect_client::{Client, ClientConfig, RetryPolicy};
use toggl_connect_definition::Connector;
use toggl_connect_store::{Job, JobFilter, JobStatus, NewEvent, Store, StoreOptions};
use tokio_util::sync::CancellationToken;

/// One request the scripted server saw.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

/// What the script answers.
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    fn status(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
}

type Script = dyn Fn(&Call, &[Call]) -> Reply + Send + Sync;

struct Server {
    calls: Mutex<Vec<Call>>,
    script: Box<Script>,
}

impl Server {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }
}

async fn handle(
    State(server): State<Arc<Server>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    };
    let reply = {
        let mut calls = server.calls.lock().expect("calls lock");
        let reply = (server.script)(&call, &calls);
        calls.push(call);
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (
        StatusCode::from_u16(reply.status).expect("valid status"),
        axum::Json(reply.body),
    )
        .into_response();
    for (k, v) in reply.headers {
        resp.headers_mut()
            .insert(k, v.parse().expect("header value"));
    }
    resp
}

async fn serve(
    script: impl Fn(&Call, &[Call]) -> Reply + Send + Sync + 'static,
) -> (String, Arc<Server>) {
    let server = Arc::new(Server {
        calls: Mutex::new(Vec::new()),
        script: Box::new(script),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("server runs");
    });
    (format!("http://{addr}"), server)
}

fn client(base: &str, request_timeout: Duration) -> Client {
    let mut config = ClientConfig::with_token("test-token-not-secret").base_url(base);
    config.pacing = None;
    config.resolve_workspace_orgs = false;
    config.request_timeout = request_timeout;
    // The worker, not the client, waits for quota resets and retries failures.
    config.max_quota_wait = Duration::ZERO;
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    Client::new(config).expect("client config is valid")
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        worker_id: "test-worker".into(),
        concurrency: 4,
        lease: Duration::from_secs(30),
        max_attempts: 3,
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        poll_interval: Duration::from_millis(50),
        http_timeout: Duration::from_secs(5),
        secrets: SecretSource::from_fn(|name| {
            (name == "BILLING_SECRET").then(|| "s3cret".to_owned())
        }),
    }
}

static EVENT_IDS: AtomicI64 = AtomicI64::new(8_100_000_000_000_001);

/// Stores an event with the jobs `rules` plan for it; returns the event row id.
async fn deliver(store: &Store, rules: &RuleSet, triggers: &[&str], envelope: &Value) -> i64 {
    let jobs = rules.plan(triggers, envelope);
    assert!(!jobs.is_empty(), "the rules plan something for this event");
    let outcome = store
        .insert_event(NewEvent {
            event_id: EVENT_IDS.fetch_add(1, Ordering::Relaxed),
            entity: "project".into(),
            action: "created".into(),
            trigger: triggers.join(" "),
            received_at: chrono::Utc::now(),
            envelope: envelope.to_string(),
            jobs,
            ..NewEvent::default()
        })
        .await
        .expect("event stored");
    outcome.id
}

/// Waits until every job of the event is finished and `count` jobs exist.
async fn finished_jobs(store: &Store, event_row_id: i64, count: usize) -> Vec<Job> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs = store
            .list_jobs(JobFilter {
                event_row_id: Some(event_row_id),
                ..JobFilter::default()
            })
            .await
            .expect("list jobs");
        if jobs.len() == count && jobs.iter().all(|j| j.status.is_finished()) {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish in time: {jobs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outcomes(store: &Store, job_id: i64) -> Vec<String> {
    store
        .get_job(job_id)
        .await
        .expect("get job")
        .expect("job exists")
        .attempts
        .iter()
        .map(|a| a.outcome.as_str().to_owned())
        .collect()
}

struct Running {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("worker stops cleanly");
    }
}

fn start(store: &Store, client: Client, config: WorkerConfig) -> Running {
    let worker = Worker::new(
        store.clone(),
        client,
        Arc::new(Connector::builtin().clone()),
        config,
    )
    .expect("worker builds");
    let shutdown = CancellationToken::new();
    let notify = worker.notifier();
    let handle = worker.run(shutdown.clone());
    notify.notify_one();
    Running { shutdown, handle }
}

async fn memory_store() -> Store {
    Store::open("sqlite::memory:", StoreOptions::default())
        .await
        .expect("in-memory store")
}

fn project_event() -> Value {
    json!({"event_id": 1, "metadata": {"model": "project", "action": "created"}, "payload": {"id": 5, "workspace_id": 9, "name": "Apollo"}})
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_by_lookup_not_repeated() {
    let tasks: Arc<Mutex<Vec<Value>>> = Arc::default();
    let state = Arc::clone(&tasks);
    let (base, server) = serve(move |call, _| {
        let mut tasks = state.lock().expect("tasks lock");
        match (call.method.as_str(), call.path.as_str()) {
            ("POST", "/api/v9/workspaces/9/projects/5/tasks") => {
                let body: Value = serde_json::from_slice(&call.body).expect("json body");
                let task = json!({"id": 100 + tasks.len(), "name": body["name"], "project_id": 5, "workspace_id": 9, "active": true});
                tasks.push(task.clone());
                // Created, but the answer comes after the client gave up.
                Reply { delay: Duration::from_millis(1500), ..Reply::ok(task) }
            }
            ("GET", "/api/v9/workspaces/9/projects/5/tasks") => Reply::ok(Value::Array(tasks.clone())),
            ("PUT", p) if p.starts_with("/api/v9/workspaces/9/projects/5/tasks/") => {
                let body: Value = serde_json::from_slice(&call.body).expect("json body");
                Reply::ok(json!({"id": 100, "active": body["active"]}))
            }
            _ => Reply::status(404, json!("404 page not found")),
        }
    })
    .await;
    let rules = RuleSet::parse(
        r#"
[[rules]]
name = "kickoff"
on = "project_created"
[[rules.do]]
name = "create_task"
operation = "tasks.create"
with = { workspace_id = "{{event.payload.workspace_id}}", project_id = "{{event.payload.id}}", name = "Kickoff: {{event.payload.name}}" }
[[rules.do]]
name = "deactivate"
operation = "tasks.update"
with = { workspace_id = "{{event.payload.workspace_id}}", project_id = "{{event.payload.id}}", id = "{{steps.create_task.id}}", active = false }
"#,
        Connector::builtin(),
    )
    .expect("rules compile");
    let store = memory_store().await;
    let worker = start(
        &store,
        client(&base, Duration::from_millis(300)),
        worker_config(),
    );
    let event = deliver(&store, &rules, &["project_created"], &project_event()).await;
    let jobs = finished_jobs(&store, event, 2).await;
    worker.stop().await;

    assert_eq!(
        tasks.lock().expect("tasks lock").len(),
        1,
        "no duplicate task"
    );
    let calls = server.calls();
    let posts = calls.iter().filter(|c| c.method == "POST").count();
    assert_eq!(posts, 1, "the create was sent once: {calls:#?}");
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{jobs:#?}"
    );
    let create = &jobs[0];
    assert_eq!(
        create.result.as_ref().and_then(|r| r.get("name")),
        Some(&json!("Kickoff: Apollo"))
    );
    assert_eq!(outcomes(&store, create.id).await, ["retry", "ok"]);
    // The second step templated over the first one's (looked-up) result.
    let put = calls
        .iter()
        .find(|c| c.method == "PUT")
        .expect("step 2 ran");
    assert_eq!(put.path, "/api/v9/workspaces/9/projects/5/tasks/100");
    assert_eq!(
        serde_json::from_slice::<Value>(&put.body).expect("json"),
        json!({"active": false})
    );

    let run = show_run(&store, create.id)
        .await
        .expect("show")
        .expect("run exists");
    assert_eq!(run.steps.len(), 2);
    let history = &run.steps[0].history;
    assert!(
        history[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("unknown")),
        "{history:#?}"
    );
    assert_eq!(
        history[1].request.as_deref(),
        Some("lookup: GET /api/v9/workspaces/{{workspace_id}}/projects/{{project_id}}/tasks")
    );
    let shown = serde_json::to_string(&run).expect("serializes");
    assert!(!shown.contains("test-token-not-secret"));
}

#[tokio::test]
async fn fatal_failures_dead_letter_at_once_and_retryable_ones_back_off() {
    let (base, server) = serve(|call, seen| {
        let earlier = seen.iter().filter(|c| c.path == call.path).count();
        match call.path.as_str() {
            "/api/v9/workspaces/9/tags" => Reply::status(400, json!("a tag with the name 'dup' already exists")),
            "/api/v9/workspaces/9/clients" => {
                Reply::status(402, json!("Request tried to utilized Premium functionality on workspace which is not Premium!"))
            }
            "/api/v9/workspaces/9/projects/5" if earlier < 2 => Reply::status(503, json!("unavailable")),
            "/api/v9/workspaces/9/projects/5" => Reply::ok(json!({"id": 5, "name": "Apollo 2"})),
            "/api/v9/workspaces/9/time_entries/77" => Reply::status(503, json!("unavailable")),
            _ => Reply::status(404, json!("404 page not found")),
        }
    })
    .await;
    let rules = RuleSet::parse(
        r#"
[[rules]]
name = "bad-request"
on = "project_created"
[[rules.do]]
action = "create-tag"
with = { workspace_id = "{{event.payload.workspace_id}}", name = "dup" }

[[rules]]
name = "paid-feature"
on = "project_created"
[[rules.do]]
action = "create-client"
with = { workspace_id = "{{event.payload.workspace_id}}", name = "Acme" }

[[rules]]
name = "flaky"
on = "project_created"
[[rules.do]]
operation = "projects.update"
with = { workspace_id = "{{event.payload.workspace_id}}", id = "{{event.payload.id}}", name = "Apollo 2" }

[[rules]]
name = "down"
on = "project_created"
[[rules.do]]
operation = "time_entries.update"
with = { workspace_id = "{{event.payload.workspace_id}}", id = 77, description = "x" }
"#,
        Connector::builtin(),
    )
    .expect("rules compile");
    let store = memory_store().await;
    let worker = start(
        &store,
        client(&base, Duration::from_secs(5)),
        worker_config(),
    );
    let event = deliver(&store, &rules, &["project_created"], &project_event()).await;
    let jobs = finished_jobs(&store, event, 4).await;
    worker.stop().await;

    let by_rule = |name: &str| {
        jobs.iter()
            .find(|j| j.rule == name)
            .expect("job of rule")
            .clone()
    };
    let bad = by_rule("bad-request");
    assert_eq!(bad.status, JobStatus::Dead);
    assert!(
        bad.last_error
            .as_deref()
            .is_some_and(|e| e.contains("400") && e.contains("already exists")),
        "{bad:?}"
    );
    assert_eq!(outcomes(&store, bad.id).await, ["dead"]);

    let paid = by_rule("paid-feature");
    assert_eq!(paid.status, JobStatus::Dead);
    assert!(
        paid.last_error
            .as_deref()
            .is_some_and(|e| e.contains("paid plan")),
        "{paid:?}"
    );
    assert_eq!(outcomes(&store, paid.id).await, ["dead"]);

    let flaky = by_rule("flaky");
    assert_eq!(flaky.status, JobStatus::Succeeded);
    assert_eq!(outcomes(&store, flaky.id).await, ["retry", "retry", "ok"]);

    let down = by_rule("down");
    assert_eq!(down.status, JobStatus::Dead);
    assert!(
        down.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("gave up after 3 attempts")),
        "{down:?}"
    );
    assert_eq!(outcomes(&store, down.id).await, ["retry", "retry", "dead"]);
    let puts = server
        .calls()
        .iter()
        .filter(|c| c.path == "/api/v9/workspaces/9/time_entries/77")
        .count();
    assert_eq!(puts, 3, "max_attempts bounds the requests");
}

#[tokio::test]
async fn a_spent_quota_makes_the_job_wait_for_the_reset() {
    let (base, server) = serve(|_, seen| {
        if seen.is_empty() {
            Reply {
                headers: vec![
                    ("x-toggl-quota-remaining", "0".into()),
                    ("x-toggl-quota-resets-in", "2".into()),
                ],
                ..Reply::status(402, json!("You have hit your hourly limit for API calls."))
            }
        } else {
            Reply {
                headers: vec![
                    ("x-toggl-quota-remaining", "29".into()),
                    ("x-toggl-quota-resets-in", "3000".into()),
                ],
                ..Reply::ok(json!({"id": 1, "name": "x", "workspace_id": 9}))
            }
        }
    })
    .await;
    let rules = RuleSet::parse(
        "[[rules]]\nname = \"tag\"\non = \"project_created\"\n[[rules.do]]\naction = \"create-tag\"\nwith = { workspace_id = \"{{event.payload.workspace_id}}\", name = \"x\" }\n",
        Connector::builtin(),
    )
    .expect("rules compile");
    let store = memory_store().await;
    let worker = start(
        &store,
        client(&base, Duration::from_secs(5)),
        worker_config(),
    );
    let event = deliver(&store, &rules, &["project_created"], &project_event()).await;
    let jobs = finished_jobs(&store, event, 1).await;
    worker.stop().await;

    assert_eq!(jobs[0].status, JobStatus::Succeeded);
    assert_eq!(outcomes(&store, jobs[0].id).await, ["waiting_quota", "ok"]);
    let calls = server.calls();
    assert_eq!(
        calls.len(),
        2,
        "one request after the 402, no lookup: {calls:#?}"
    );
    let waited = calls[1].at.duration_since(calls[0].at);
    assert!(
        waited >= Duration::from_millis(1500),
        "waited for the reset: {waited:?}"
    );
}

#[tokio::test]
async fn http_steps_post_the_raw_event_signed_like_toggl() {
    let (base, server) = serve(|_, _| Reply::ok(json!({"ok": true}))).await;
    let source = format!(
        "[[rules]]\nname = \"billing\"\non = \"time_entry_*\"\n[[rules.do]]\nhttp = \"{base}/billing?key=hidden\"\nsecret_env = \"BILLING_SECRET\"\n"
    );
    let rules = RuleSet::parse(&source, Connector::builtin()).expect("rules compile");
    let store = memory_store().await;
    let worker = start(
        &store,
        client(&base, Duration::from_secs(5)),
        worker_config(),
    );
    let envelope = json!({"event_id": 2, "payload": {"id": 3, "workspace_id": 9, "description": "é \"quoted\""}});
    let event = deliver(
        &store,
        &rules,
        &["time_entry_updated", "time_entry_stopped"],
        &envelope,
    )
    .await;
    let jobs = finished_jobs(&store, event, 1).await;
    worker.stop().await;

    assert_eq!(jobs[0].status, JobStatus::Succeeded);
    let calls = server.calls();
    assert_eq!(
        calls.len(),
        1,
        "one delivery for an event firing two matching triggers"
    );
    let call = &calls[0];
    assert_eq!(call.path, "/billing");
    assert_eq!(
        call.body.as_ref(),
        envelope.to_string().as_bytes(),
        "the raw event, byte for byte"
    );
    let signature = call
        .headers
        .get("x-webhook-signature-256")
        .and_then(|v| v.to_str().ok())
        .expect("signed");
    assert_eq!(signature, sign("s3cret", &call.body));
    let run = show_run(&store, jobs[0].id)
        .await
        .expect("show")
        .expect("run");
    let request = run.steps[0].history[0]
        .request
        .clone()
        .expect("request recorded");
    assert!(
        request.starts_with("POST http://127.0.0.1:") && !request.contains("hidden"),
        "{request}"
    );
}

#[tokio::test]
async fn lost_time_entry_creates_are_matched_and_uncheckable_creates_are_not_resent() {
    let entries: Arc<Mutex<Vec<Value>>> = Arc::default();
    let state = Arc::clone(&entries);
    let (base, server) = serve(move |call, _| {
        let mut entries = state.lock().expect("entries lock");
        match (call.method.as_str(), call.path.as_str()) {
            ("POST", "/api/v9/workspaces/9/time_entries") => {
                let body: Value = serde_json::from_slice(&call.body).expect("json body");
                // Toggl answers in UTC whatever offset the request used.
                let entry = json!({"id": 4_100_000_001_i64, "workspace_id": 9, "start": "2025-01-10T08:00:00+00:00",
                    "duration": body["duration"], "description": body["description"], "project_id": null});
                entries.push(entry.clone());
                Reply { delay: Duration::from_millis(1500), ..Reply::ok(entry) }
            }
            ("GET", "/api/v9/me/time_entries") => Reply::ok(Value::Array(entries.clone())),
            ("POST", "/api/v9/organizations/1/invitations") => {
                Reply { delay: Duration::from_millis(1500), ..Reply::ok(json!({"data": []})) }
            }
            _ => Reply::status(404, json!("404 page not found")),
        }
    })
    .await;
    let rules = RuleSet::parse(
        r#"
[[rules]]
name = "log-kickoff"
on = "project_created"
[[rules.do]]
action = "create-time-entry"
with = { workspace_id = "{{event.payload.workspace_id}}", start = "2025-01-10T09:00:00+01:00", duration = 600, description = "Kickoff {{event.payload.name}}" }

[[rules]]
name = "invite"
on = "project_created"
[[rules.do]]
action = "create-user-invitation"
with = { organization_id = 1, workspace_id = "{{event.payload.workspace_id}}", emails = ["lead@example.com"] }
"#,
        Connector::builtin(),
    )
    .expect("rules compile");
    let store = memory_store().await;
    let worker = start(
        &store,
        client(&base, Duration::from_millis(300)),
        worker_config(),
    );
    let event = deliver(&store, &rules, &["project_created"], &project_event()).await;
    let jobs = finished_jobs(&store, event, 2).await;
    worker.stop().await;

    let calls = server.calls();
    let entry_job = jobs
        .iter()
        .find(|j| j.rule == "log-kickoff")
        .expect("entry job");
    assert_eq!(entry_job.status, JobStatus::Succeeded, "{entry_job:?}");
    assert_eq!(
        entry_job.result.as_ref().and_then(|r| r.get("id")),
        Some(&json!(4_100_000_001_i64))
    );
    assert_eq!(
        entries.lock().expect("entries lock").len(),
        1,
        "no duplicate time entry"
    );
    let lookup = calls
        .iter()
        .find(|c| c.path == "/api/v9/me/time_entries")
        .expect("looked up");
    assert_eq!(lookup.method, "GET");

    let invite = jobs
        .iter()
        .find(|j| j.rule == "invite")
        .expect("invite job");
    assert_eq!(invite.status, JobStatus::Dead);
    assert!(
        invite
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no way to check")),
        "{invite:?}"
    );
    let invitations = calls
        .iter()
        .filter(|c| c.path == "/api/v9/organizations/1/invitations")
        .count();
    assert_eq!(invitations, 1, "an uncheckable create is never sent twice");
}

#[tokio::test]
async fn a_job_left_by_a_crashed_worker_after_sending_is_checked_not_resent() {
    // The crashed worker's create reached Toggl: the task exists.
    let tasks = Arc::new(Mutex::new(vec![
        json!({"id": 300, "name": "Kickoff", "project_id": 5, "workspace_id": 9}),
    ]));
    let state = Arc::clone(&tasks);
    let (base, server) = serve(
        move |call, _| match (call.method.as_str(), call.path.as_str()) {
            ("GET", "/api/v9/workspaces/9/projects/5/tasks") => {
                Reply::ok(Value::Array(state.lock().expect("tasks lock").clone()))
            }
            _ => Reply::status(500, json!("must not be called")),
        },
    )
    .await;
    let rules = RuleSet::parse(
        "[[rules]]\nname = \"kickoff\"\non = \"project_created\"\n[[rules.do]]\nname = \"create_task\"\naction = \"create-task\"\nwith = { workspace_id = \"{{event.payload.workspace_id}}\", project_id = \"{{event.payload.id}}\", name = \"Kickoff\" }\n",
        Connector::builtin(),
    )
    .expect("rules compile");
    let store = memory_store().await;
    let event = deliver(&store, &rules, &["project_created"], &project_event()).await;
    let claimed = store
        .claim_jobs("crashed-worker", 10, Duration::from_millis(200))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    store
        .mark_sent(
            claimed[0].id,
            "crashed-worker",
            "POST /api/v9/workspaces/{id}/projects/{id}/tasks".into(),
        )
        .await
        .expect("mark sent");
    // ... and the process died here, before recording the answer.

    let worker = start(
        &store,
        client(&base, Duration::from_secs(5)),
        worker_config(),
    );
    let jobs = finished_jobs(&store, event, 1).await;
    worker.stop().await;

    assert_eq!(jobs[0].status, JobStatus::Succeeded);
    assert_eq!(
        jobs[0].result.as_ref().and_then(|r| r.get("id")),
        Some(&json!(300))
    );
    let calls = server.calls();
    assert!(
        calls.iter().all(|c| c.method == "GET"),
        "nothing created again: {calls:#?}"
    );
    assert_eq!(tasks.lock().expect("tasks lock").len(), 1);
}

#[tokio::test]
async fn operators_retry_dead_steps_and_cancel_waiting_ones() {
    let (base, server) = serve(
        |call, seen| match (call.method.as_str(), call.path.as_str()) {
            ("POST", "/api/v9/workspaces/9/tags") if seen.iter().all(|c| c.path != call.path) => {
                Reply::status(403, json!("Only admins may create tags in this workspace"))
            }
            ("POST", "/api/v9/workspaces/9/tags") => {
                Reply::ok(json!({"id": 11, "name": "x", "workspace_id": 9}))
            }
            _ => Reply::status(503, json!("unavailable")),
        },
    )
    .await;
    let rules = RuleSet::parse(
        r#"
[[rules]]
name = "tag"
on = "project_created"
[[rules.do]]
action = "create-tag"
with = { workspace_id = "{{event.payload.workspace_id}}", name = "x" }

[[rules]]
name = "slow"
on = "project_created"
[[rules.do]]
operation = "projects.update"
with = { workspace_id = "{{event.payload.workspace_id}}", id = "{{event.payload.id}}", name = "y" }
"#,
        Connector::builtin(),
    )
    .expect("rules compile");
    let store = memory_store().await;
    let config = WorkerConfig {
        backoff: Backoff {
            base: Duration::from_secs(600),
            max: Duration::from_secs(600),
        },
        ..worker_config()
    };
    let worker = start(&store, client(&base, Duration::from_secs(5)), config);
    let event = deliver(&store, &rules, &["project_created"], &project_event()).await;

    // The 403 dead-letters the tag step; the 503 puts the other one to wait for minutes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (tag, slow) = loop {
        let runs = list_runs(
            &store,
            JobFilter {
                event_row_id: Some(event),
                ..JobFilter::default()
            },
        )
        .await
        .expect("list runs");
        let tag = runs
            .iter()
            .find(|r| r.rule == "tag")
            .cloned()
            .expect("tag run");
        let slow = runs
            .iter()
            .find(|r| r.rule == "slow")
            .cloned()
            .expect("slow run");
        if tag.status == "dead" && slow.status == "pending" && slow.attempts == 1 {
            break (tag, slow);
        }
        assert!(Instant::now() < deadline, "{runs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        tag.last_error.as_deref().is_some_and(|e| e.contains("403")),
        "{tag:?}"
    );

    cancel_run(&store, slow.job_id)
        .await
        .expect("cancel a waiting step");
    retry_run(&store, tag.job_id)
        .await
        .expect("retry a dead step");
    let jobs = finished_jobs(&store, event, 2).await;
    worker.stop().await;

    let status = |rule: &str| jobs.iter().find(|j| j.rule == rule).map(|j| j.status);
    assert_eq!(status("tag"), Some(JobStatus::Succeeded));
    assert_eq!(status("slow"), Some(JobStatus::Cancelled));
    // A 403 proves the create did not happen: the retry sends it without a lookup.
    let calls = server.calls();
    assert!(calls.iter().all(|c| c.method != "GET"), "{calls:#?}");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.path == "/api/v9/workspaces/9/tags")
            .count(),
        2
    );
    assert_eq!(outcomes(&store, tag.job_id).await, ["dead", "ok"]);
}
