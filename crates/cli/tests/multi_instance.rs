//! Several `serve` processes on one PostgreSQL database, behind a round-robin "load balancer",
//! receiving a sandbox's deliveries: one is killed with `kill -9` mid-run, and (when allowed)
//! the database is restarted mid-run. Nothing acknowledged may be lost, nothing stored twice.
//!
//! Needs `TOGGL_CONNECT_TEST_POSTGRES_URL` (skipped with a notice otherwise). The restart test
//! also needs `TOGGL_CONNECT_TEST_POSTGRES_RESTART`, the shell command that restarts that server
//! (e.g. `pg_ctlcluster --skip-systemctl-redirect 15 main restart`): restarting a database is
//! never done unasked. Each test works in a fresh schema.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use toggl_connect_sandbox::{Sandbox, SandboxConfig, SandboxFacts, SandboxHandle};
use toggl_connect_store::{
    EventFilter, EventSource, JobFilter, JobStatus, Store, StoreOptions, StoredEvent, TempSchema,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

const PG_ENV: &str = "TOGGL_CONNECT_TEST_POSTGRES_URL";
const RESTART_ENV: &str = "TOGGL_CONNECT_TEST_POSTGRES_RESTART";
const FORWARD_SECRET_ENV: &str = "MULTI_INSTANCE_FORWARD_SECRET";
const DELIVERY_HEADER: &str = "x-toggl-connect-delivery";

/// Receives the rule's forwarded events: how many times each job arrived (the delivery header
/// carries the job id).
#[derive(Default)]
struct Sink {
    received: Mutex<BTreeMap<String, usize>>,
}

async fn sink_handler(State(sink): State<Arc<Sink>>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get(DELIVERY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned();
    *sink.received.lock().await.entry(id).or_default() += 1;
    // Slow steps: every instance has steps in flight (leases held) when one is killed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    StatusCode::OK
}

async fn start_sink() -> (Arc<Sink>, SocketAddr) {
    let sink = Arc::new(Sink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sink");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .fallback(sink_handler)
        .with_state(Arc::clone(&sink));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (sink, addr)
}

/// One rule: forward every created time entry to the sink. Short step leases, so the killed
/// instance's steps are taken over within the test.
fn forwarding_config(sink: SocketAddr) -> String {
    format!(
        "[automation]\nlease_secs = 3\n\n[[rules]]\nname = \"forward\"\non = \"time_entry_created\"\n\n\
         [[rules.do]]\nname = \"forward\"\nhttp = \"http://{sink}/forward\"\nsecret_env = \"{FORWARD_SECRET_ENV}\"\n"
    )
}

fn pg_url() -> Option<String> {
    let url = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: {PG_ENV} is not set (multi-instance tests need PostgreSQL)");
    }
    url
}

fn fresh_schema(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("tc_multi_{tag}_{}_{nanos:x}", std::process::id())
}

/// The store URL that puts a `serve` process into `schema` (created beforehand by the test).
fn url_in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

// ---------------------------------------------------------------------------------------------
// The load balancer: one HTTP request at a time to the next backend, like a round-robin proxy.
// A backend that refuses the connection (dead) is skipped; a request that was sent but got no
// answer (the backend died mid-request) is answered 502, so the sender retries.

#[derive(Default)]
struct Balancer {
    backends: Mutex<Vec<SocketAddr>>,
    next: AtomicUsize,
    /// 2xx answers to event deliveries (not pings), per backend.
    acked: Mutex<HashMap<SocketAddr, usize>>,
    /// Non-2xx answers the sender got (the backend's own or our 502), by status.
    refused: Mutex<BTreeMap<u16, usize>>,
    http: reqwest::Client,
}

async fn balance(
    State(lb): State<Arc<Balancer>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    let is_event = serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["payload"] != "ping");
    loop {
        let backends = lb.backends.lock().await.clone();
        if backends.is_empty() {
            // The first instance is still starting: hold the request, as a balancer would.
            if Instant::now() > deadline {
                return StatusCode::BAD_GATEWAY.into_response();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let start = lb.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..backends.len() {
            let backend = backends[(start + i) % backends.len()];
            let mut req = lb
                .http
                .request(method.clone(), format!("http://{backend}{uri}"))
                .body(body.clone());
            for (k, v) in &headers {
                if k != "host" && k != "content-length" && k != "connection" {
                    req = req.header(k, v);
                }
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let ctype = resp.headers().get("content-type").cloned();
                    let answer = resp.bytes().await.unwrap_or_default();
                    if status.is_success() && is_event {
                        *lb.acked.lock().await.entry(backend).or_default() += 1;
                    } else if !status.is_success() {
                        *lb.refused.lock().await.entry(status.as_u16()).or_default() += 1;
                    }
                    let mut out = (status, answer).into_response();
                    if let Some(c) = ctype {
                        out.headers_mut().insert("content-type", c);
                    }
                    return out;
                }
                // Nothing was sent: try the next backend.
                Err(e) if e.is_connect() => {}
                Err(_) => {
                    *lb.refused.lock().await.entry(502).or_default() += 1;
                    return StatusCode::BAD_GATEWAY.into_response();
                }
            }
        }
        *lb.refused.lock().await.entry(502).or_default() += 1;
        return StatusCode::BAD_GATEWAY.into_response();
    }
}

async fn start_balancer() -> (Arc<Balancer>, SocketAddr) {
    let lb = Arc::new(Balancer {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client"),
        ..Balancer::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind balancer");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .fallback(balance)
        .with_state(Arc::clone(&lb));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (lb, addr)
}

// ---------------------------------------------------------------------------------------------
// `serve` processes.

/// A running `toggl-connect serve`; killed (SIGKILL) when dropped.
struct Instance {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<std::sync::Mutex<Vec<String>>>,
    stderr_path: std::path::PathBuf,
}

impl Instance {
    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn kill9(&mut self) {
        // std's Child::kill is SIGKILL on Unix: no shutdown code runs.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn start_instance(
    n: usize,
    dir: &std::path::Path,
    store_url: &str,
    public_url: &str,
    facts: &SandboxFacts,
    lb: &Balancer,
    config: Option<&std::path::Path>,
) -> Instance {
    let stderr_path = dir.join(format!("serve-{n}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("toggl-connect"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store_url,
            "--public-url",
            public_url,
        ])
        .current_dir(dir)
        .env_remove("TOGGL_CONNECT_CONFIG")
        .env_remove("TOGGL_CONNECT_STORE")
        .env_remove("TOGGL_CONNECT_LISTEN")
        .env_remove("TOGGL_CONNECT_PUBLIC_URL")
        .env("TOGGL_API_URL", &facts.api_url)
        .env("TOGGL_API_TOKEN", &facts.api_token)
        .env("TOGGL_CONNECT_PACING_MS", "0")
        .env(FORWARD_SECRET_ENV, "multi-instance-forward-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .args(
            config
                .iter()
                .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
        )
        .spawn()
        .expect("spawn toggl-connect serve");
    let stdout = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    {
        let pipe = child.stdout.take().expect("stdout");
        let lines = Arc::clone(&stdout);
        // Drains stdout for the process's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = addr_tx.send(line.clone());
                lines.lock().expect("lines").push(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut addr = None;
    // `serve` prints its receiver address before it subscribes (the balancer must route the
    // validation ping to it), and its quota line once started.
    loop {
        let line = tokio::time::timeout_at(deadline, addr_rx.recv()).await;
        let Ok(Some(line)) = line else {
            let tail = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!(
                "serve #{n} did not start; stdout {:?}\nstderr:\n{tail}",
                stdout.lock().expect("lines")
            );
        };
        if let Some(rest) = line.trim_start().strip_prefix("receiver") {
            let url = rest.split_whitespace().next().expect("receiver url");
            let host = url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .expect("host");
            let a: SocketAddr = host.parse().expect("receiver address");
            lb.backends.lock().await.push(a);
            addr = Some(a);
        }
        if line.trim_start().starts_with("quota") {
            break;
        }
    }
    Instance {
        child,
        addr: addr.expect("receiver line"),
        stdout,
        stderr_path,
    }
}

// ---------------------------------------------------------------------------------------------
// The sandbox side.

async fn create_entries(http: &reqwest::Client, facts: &SandboxFacts, from: usize, to: usize) {
    for i in from..to {
        let body = json!({
            "created_with": "multi_instance", "workspace_id": facts.workspace_id,
            "start": "2025-01-10T09:00:00Z", "duration": 60, "description": format!("entry {i}"),
        });
        let resp = http
            .post(format!(
                "{}/workspaces/{}/time_entries",
                facts.api_url, facts.workspace_id
            ))
            .basic_auth(&facts.api_token, Some("api_token"))
            .json(&body)
            .send()
            .await
            .expect("create time entry");
        assert!(resp.status().is_success(), "create: {}", resp.status());
    }
}

/// The sandbox's event log of our subscription, oldest first.
async fn event_log_entries(http: &reqwest::Client, facts: &SandboxFacts, sid: i64) -> Vec<Value> {
    let base = facts.api_url.trim_end_matches("/api/v9");
    let log: Value = http
        .get(format!(
            "{base}/webhooks/api/v1/subscriptions/{}/{sid}/events",
            facts.workspace_id
        ))
        .basic_auth(&facts.api_token, Some("api_token"))
        .send()
        .await
        .expect("event log")
        .json()
        .await
        .expect("event log json");
    match log {
        Value::Array(entries) => entries,
        other => panic!("event log is not an array: {other}"),
    }
}

/// The sandbox's event log of our subscription: event id -> status.
async fn event_log(
    http: &reqwest::Client,
    facts: &SandboxFacts,
    sid: i64,
) -> BTreeMap<i64, String> {
    event_log_entries(http, facts, sid)
        .await
        .iter()
        .map(|e| {
            (
                e["event_id"].as_i64().expect("event_id"),
                e["status"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

async fn subscription_id(store: &Store) -> i64 {
    let subs = store.list_subscriptions(None).await.expect("subscriptions");
    assert_eq!(
        subs.len(),
        1,
        "one subscription for all instances: {subs:?}"
    );
    subs[0].subscription_id
}

/// Every event in the store, in id order.
async fn all_events(store: &Store) -> Vec<StoredEvent> {
    let mut all = Vec::new();
    loop {
        let page = store
            .list_events(EventFilter {
                after_id: all.last().map(|e: &StoredEvent| e.id),
                limit: Some(1000),
                ..EventFilter::default()
            })
            .await
            .expect("list events");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Webhook events in the store: event id -> how many rows.
async fn stored_webhook_events(store: &Store) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for e in all_events(store).await {
        if e.source == EventSource::Webhook {
            *counts.entry(e.event_id).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits until the sandbox has created `expected` events and none is pending any more.
async fn wait_settled(
    http: &reqwest::Client,
    facts: &SandboxFacts,
    sid: i64,
    expected: usize,
) -> BTreeMap<i64, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = event_log(http, facts, sid).await;
        if log.len() >= expected && log.values().all(|s| s != "pending") {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries did not settle: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    sandbox: SandboxHandle,
    lb: Arc<Balancer>,
    instances: Vec<Instance>,
    http: reqwest::Client,
    sid: i64,
    /// Last, so that it drops after the instances are gone.
    _schema: TempSchema,
}

/// A fresh schema, a sandbox, the balancer, and `instances` `serve` processes behind it, started
/// one after the other; `config` is the text of their config file.
async fn setup(tag: &str, pg: &str, instances: usize, config: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = config.map(|text| {
        let p = dir.path().join("toggl-connect.toml");
        std::fs::write(&p, text).expect("write config");
        p
    });
    let schema = fresh_schema(tag);
    let guard = TempSchema::new(pg, schema.clone());
    // Creates the schema and its tables; the processes then find them through search_path.
    let store = Store::open(
        pg,
        StoreOptions {
            schema: Some(schema.clone()),
            pool_size: 4,
            ..StoreOptions::default()
        },
    )
    .await
    .expect("open test store");
    let sandbox = Sandbox::start(SandboxConfig {
        rate_limit: false,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let facts = sandbox.facts().clone();
    let (lb, lb_addr) = start_balancer().await;
    let store_url = url_in_schema(pg, &schema);
    let public = format!("http://{lb_addr}");
    let mut running = Vec::new();
    // One at a time: the first creates the subscription (and stores its secret), the others
    // find it and read the secret from the shared store.
    for n in 0..instances {
        running.push(
            start_instance(
                n,
                dir.path(),
                &store_url,
                &public,
                &facts,
                &lb,
                config_path.as_deref(),
            )
            .await,
        );
    }
    let sid = subscription_id(&store).await;
    Setup {
        _dir: dir,
        store,
        sandbox,
        lb,
        instances: running,
        http: reqwest::Client::new(),
        sid,
        _schema: guard,
    }
}

fn report(s: &Setup) -> String {
    s.instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            format!(
                "--- serve #{i} stdout {:?}\n{}",
                inst.stdout.lock().expect("lines"),
                inst.stderr_tail()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The dedupe keys catch-up and polling give the changes the sandbox's events carry
/// (`<entity>:<id>:<at>`, as `triggers::poll` makes them), by event id.
async fn change_keys(s: &Setup) -> BTreeMap<i64, String> {
    event_log_entries(&s.http, s.sandbox.facts(), s.sid)
        .await
        .iter()
        .filter_map(|e| {
            let at = e["payload"]["at"].as_str()?;
            Some((
                e["event_id"].as_i64()?,
                format!(
                    "{}:{}:{at}",
                    e["metadata"]["model"].as_str()?,
                    e["payload"]["id"].as_i64()?
                ),
            ))
        })
        .collect()
}

/// Dedupe keys of the events catch-up and polling stored.
async fn stored_change_keys(store: &Store) -> BTreeSet<String> {
    all_events(store)
        .await
        .into_iter()
        .filter(|e| e.source != EventSource::Webhook)
        .map(|e| e.dedupe_key)
        .collect()
}

/// Every event the sandbox marks delivered is stored exactly once, and so is every other one
/// (they all get delivered in the end). Once means: as the webhook, or as the catch-up event of
/// the same change. A leader that takes over catches up, and that may fetch a change whose
/// webhook is still on its way; the webhook is then acknowledged as a duplicate of that
/// version (`receiver::same_version`), not stored a second time.
async fn check_store(s: &Setup, log: &BTreeMap<i64, String>) {
    let stored = stored_webhook_events(&s.store).await;
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let keys = change_keys(s).await;
    let caught_up = stored_change_keys(&s.store).await;
    let both: Vec<_> = stored
        .keys()
        .filter(|id| keys.get(id).is_some_and(|k| caught_up.contains(k)))
        .collect();
    assert!(
        both.is_empty(),
        "stored both as the webhook and as its catch-up: {both:?}"
    );
    let lost: Vec<_> = log
        .iter()
        .filter(|(id, st)| {
            *st == "delivered"
                && !stored.contains_key(id)
                && !keys.get(id).is_some_and(|k| caught_up.contains(k))
        })
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not stored: {lost:?}\n{}",
        report(s)
    );
    let failed: Vec<_> = log.iter().filter(|(_, st)| *st != "delivered").collect();
    assert!(
        failed.is_empty(),
        "never delivered: {failed:?}\n{}",
        report(s)
    );
    let unknown: Vec<_> = stored.keys().filter(|id| !log.contains_key(id)).collect();
    assert!(
        unknown.is_empty(),
        "stored events the sandbox never sent: {unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_deliveries_and_survive_a_kill_9() {
    let Some(pg) = pg_url() else { return };
    let (sink, sink_addr) = start_sink().await;
    let mut s = setup("kill", &pg, 3, Some(&forwarding_config(sink_addr))).await;
    let facts = s.sandbox.facts().clone();
    const TOTAL: usize = 180;

    // A first third, with every instance alive: deliveries spread over all three.
    create_entries(&s.http, &facts, 0, TOTAL / 3).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acked: usize = s.lb.acked.lock().await.values().sum();
        if acked >= TOTAL / 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "first deliveries did not arrive:\n{}",
            report(&s)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let acked = s.lb.acked.lock().await;
        for inst in &s.instances {
            assert!(
                acked.get(&inst.addr).copied().unwrap_or(0) > 0,
                "instance {} got no deliveries: {acked:?}",
                inst.addr
            );
        }
    }

    // The rest, with instance #1 killed while they are being delivered.
    let maker = {
        let (http, facts) = (s.http.clone(), facts.clone());
        tokio::spawn(async move { create_entries(&http, &facts, TOTAL / 3, TOTAL).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acked: usize = s.lb.acked.lock().await.values().sum();
        if acked >= TOTAL / 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries stalled:\n{}",
            report(&s)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.instances[1].kill9();
    let acked_at_kill: usize = s.lb.acked.lock().await.values().sum();
    maker.await.expect("changes made");
    assert!(acked_at_kill < TOTAL, "the kill came after the run");

    let log = wait_settled(&s.http, &facts, s.sid, TOTAL).await;
    assert_eq!(log.len(), TOTAL, "one event per change");
    check_store(&s, &log).await;
    let dead = s.instances[1].addr;
    let acked = s.lb.acked.lock().await.clone();
    let after_kill: usize = acked
        .iter()
        .filter(|(a, _)| **a != dead)
        .map(|(_, n)| n)
        .sum();
    assert!(after_kill > 0, "survivors took no deliveries: {acked:?}");

    // Jobs: one per stored event, all run, the killed instance's taken over by the others.
    let deadline = Instant::now() + Duration::from_secs(90);
    let jobs = loop {
        let jobs = s
            .store
            .list_jobs(JobFilter {
                limit: Some(10_000),
                ..JobFilter::default()
            })
            .await
            .expect("list jobs");
        if jobs.len() == TOTAL && jobs.iter().all(|j| j.status == JobStatus::Succeeded) {
            break jobs;
        }
        let open: Vec<_> = jobs
            .iter()
            .filter(|j| j.status != JobStatus::Succeeded)
            .map(|j| (j.id, j.status, j.lease_owner.clone()))
            .collect();
        assert!(
            Instant::now() < deadline,
            "{} jobs, not finished: {open:?}\n{}",
            jobs.len(),
            report(&s)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let received = sink.received.lock().await.clone();
    let never: Vec<i64> = jobs
        .iter()
        .filter(|j| !received.contains_key(&j.id.to_string()))
        .map(|j| j.id)
        .collect();
    assert!(
        received.len() >= TOTAL && never.is_empty(),
        "jobs that never ran: {never:?}; received {received:?}"
    );
    // A step runs again only when the instance running it died before recording the result:
    // at most the killed instance's concurrency (4 by default).
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    // The killed instance held step leases (its steps were in flight): others took them over.
    let taken_over = jobs.iter().filter(|j| j.attempts >= 2).count();
    assert!(
        taken_over >= 1,
        "no step lease was taken over from the killed instance"
    );
    assert!(twice.len() <= 4, "jobs run more than once: {twice:?}");
    eprintln!(
        "jobs {}; received {} deliveries; taken over {taken_over}; repeated (in flight at the kill) {twice:?}",
        jobs.len(),
        received.values().sum::<usize>()
    );
    eprintln!(
        "acked per instance {acked:?}; refused {:?}",
        s.lb.refused.lock().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_during_deliveries_loses_nothing_acknowledged() {
    let Some(pg) = pg_url() else { return };
    let Some(restart) = std::env::var(RESTART_ENV).ok().filter(|c| !c.is_empty()) else {
        eprintln!(
            "skipped: {RESTART_ENV} is not set (the command that restarts the test database)"
        );
        return;
    };
    let s = setup("restart", &pg, 2, None).await;
    let facts = s.sandbox.facts().clone();
    const TOTAL: usize = 120;

    let maker = {
        let (http, facts) = (s.http.clone(), facts.clone());
        tokio::spawn(async move { create_entries(&http, &facts, 0, TOTAL).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.lb.acked.lock().await.values().sum::<usize>() < TOTAL / 4 {
        assert!(
            Instant::now() < deadline,
            "deliveries did not start:\n{}",
            report(&s)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Health as seen by a balancer while the database goes away and comes back.
    let health_seen = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let prober = {
        let (seen, addr, http) = (
            Arc::clone(&health_seen),
            s.instances[0].addr,
            s.http.clone(),
        );
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if let Ok(r) = http
                    .get(format!("http://{addr}/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    *seen.lock().await.entry(r.status().as_u16()).or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let status =
        tokio::task::spawn_blocking(move || Command::new("sh").arg("-c").arg(&restart).status())
            .await
            .expect("restart task")
            .expect("run the restart command");
    assert!(status.success(), "restart command failed: {status}");
    maker.await.expect("changes made");

    let log = wait_settled(&s.http, &facts, s.sid, TOTAL).await;
    assert_eq!(log.len(), TOTAL);
    let _ = prober.await;
    // After the restart, the instances reconnect by themselves.
    for inst in &s.instances {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = s
                .http
                .get(format!("http://{}/healthz", inst.addr))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {} unhealthy after the restart:\n{}",
                inst.addr,
                report(&s)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    check_store(&s, &log).await;
    let refused = s.lb.refused.lock().await.clone();
    let health = health_seen.lock().await.clone();
    eprintln!("refused during the run {refused:?}; /healthz answers {health:?}");
    // The outage was seen: deliveries refused with 503 (never 2xx without storing) or /healthz
    // failing; if neither, the restart did not happen while deliveries ran.
    assert!(
        refused.contains_key(&503) || health.contains_key(&503),
        "the restart was not noticed: refused {refused:?}, health {health:?}"
    );
}

/// The subscription: `enabled` as the sandbox has it now.
async fn subscription_enabled(http: &reqwest::Client, facts: &SandboxFacts, sid: i64) -> bool {
    let base = facts.api_url.trim_end_matches("/api/v9");
    let list: Value = http
        .get(format!(
            "{base}/webhooks/api/v1/subscriptions/{}",
            facts.workspace_id
        ))
        .basic_auth(&facts.api_token, Some("api_token"))
        .send()
        .await
        .expect("list subscriptions")
        .json()
        .await
        .expect("json");
    list.as_array()
        .expect("array")
        .iter()
        .find(|s| s["subscription_id"].as_i64() == Some(sid))
        .is_some_and(|s| s["enabled"] == json!(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_repair_moves_to_a_survivor_when_the_leader_is_killed() {
    let Some(pg) = pg_url() else { return };
    let config = "[store]\nleader_lease_secs = 3\n\n[serve]\nrecheck_interval_secs = 1\n";
    let mut s = setup("leader", &pg, 3, Some(config)).await;
    let facts = s.sandbox.facts().clone();
    // The first instance up leads: it alone subscribed; the others left it to the leader.
    let said = |i: usize, what: &str| {
        s.instances[i]
            .stdout
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l.contains(what))
    };
    assert!(
        said(0, "subscription ") && !said(0, "kept by another instance"),
        "{}",
        report(&s)
    );
    assert!(
        said(1, "kept by another instance") && said(2, "kept by another instance"),
        "{}",
        report(&s)
    );

    s.instances[0].kill9();
    let killed = Instant::now();
    // Toggl disables the subscription (e.g. after failed deliveries): only a leader repairs it.
    let base = facts.api_url.trim_end_matches("/api/v9");
    let resp = s
        .http
        .patch(format!(
            "{base}/webhooks/api/v1/subscriptions/{}/{}",
            facts.workspace_id, s.sid
        ))
        .basic_auth(&facts.api_token, Some("api_token"))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .expect("disable");
    assert!(resp.status().is_success(), "disable: {}", resp.status());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !subscription_enabled(&s.http, &facts, s.sid).await {
        assert!(
            Instant::now() < deadline,
            "nobody repaired the subscription:\n{}",
            report(&s)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repaired_after = killed.elapsed();
    // Not before the dead leader's lease could expire (it renewed at most 1 s before dying).
    assert!(
        repaired_after >= Duration::from_secs(2),
        "repaired after only {repaired_after:?}"
    );
    let leaders: Vec<usize> = (1..3)
        .filter(|i| {
            std::fs::read_to_string(&s.instances[*i].stderr_path)
                .unwrap_or_default()
                .contains("leading")
        })
        .collect();
    assert_eq!(
        leaders.len(),
        1,
        "exactly one survivor took over: {leaders:?}\n{}",
        report(&s)
    );
    // And deliveries still work end to end through the survivors.
    create_entries(&s.http, &facts, 0, 10).await;
    let log = wait_settled(&s.http, &facts, s.sid, 10).await;
    check_store(&s, &log).await;
}
