//! Benchmark of trigger-to-action latency (issue 5): from the webhook receiver's
//! acknowledgement of a `client_created` delivery to the rule's `create-tag` request reaching
//! the sandbox, with the receiver's own acknowledgement latency in the same run as baseline.
//!
//! Everything runs in this process on 127.0.0.1: the sandbox (rate limit off, small seed), the
//! receiver over a temporary SQLite store with a rule planner (as `toggl-connect serve` wires
//! it), and the automation worker with a client whose pacing is off, woken by the receiver's
//! notices. Synthetic signed deliveries, each with a distinct `event_id` and client id, are
//! sent open loop at `--rate` for `--secs` (bounded by `--max-events`).
//!
//! Per event: `t_sent` (request handed to the connection), `t_ack` (status 200 read) and
//! `t_action` (this bench's subscriber to the sandbox change broadcast receives the `tag`
//! `created` change named `t-{id}`; the sandbox publishes it when it applies the mutation).
//! Reported: p50/p99 of `t_action − t_ack` (targets p50 ≤ 5 ms, p99 ≤ 25 ms) and of
//! `t_ack − t_sent` (baseline), and their ratio.
//!
//! Run: `cargo run --release -p toggl-connect-bench --bin automation_latency -- --help`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use toggl_connect_automation::{RuleSet, RulesPlanner, Worker, WorkerConfig};
use toggl_connect_bench::{REQUEST_TIMEOUT, machine_state, post_json};
use toggl_connect_client::{Client, ClientConfig};
use toggl_connect_definition::Connector;
use toggl_connect_sandbox::{Sandbox, SandboxConfig, Seed};
use toggl_connect_store::{Store, StoreOptions};
use toggl_connect_triggers::receiver::{
    DEFAULT_CALLBACK_PATH, Receiver, ReceiverConfig, SecretRing, router,
};
use toggl_connect_triggers::signature::{SIGNATURE_HEADER, SigningSecret, sign};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Trigger-to-action latency of a one-step rule against the in-process sandbox.
#[derive(Debug, Parser)]
struct Args {
    /// Deliveries per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Upper bound on deliveries (the load also stops at the time limit).
    #[arg(long, default_value_t = 5_000)]
    max_events: u64,
    /// Keep-alive connections the deliveries are spread over (round robin).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds to wait after the load for the last actions to arrive.
    #[arg(long, default_value_t = 30.0)]
    drain_secs: f64,
    /// Directory for the temporary SQLite file (default: the system temp dir; use a real disk).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const SUBSCRIPTION_ID: i64 = 42;
const CREATOR_ID: i64 = 5_000_001;
/// Client ids of the synthetic events start here (far above the seeded ids).
const FIRST_CLIENT_ID: u64 = 70_000_000;

const RULES: &str = r#"
[[rules]]
name = "tag-new-client"
on = "client_created"

[[rules.do]]
action = "create-tag"
with = { workspace_id = "{{event.payload.workspace_id}}", name = "t-{{event.payload.id}}" }
"#;

/// A `client` `created` delivery shaped like Toggl's envelope.
fn envelope(seq: u64, workspace_id: i64) -> String {
    let event_id = 8_200_000_000_000_000 + seq;
    let client_id = FIRST_CLIENT_ID + seq;
    let at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
    format!(
        concat!(
            r#"{{"event_id":{event_id},"created_at":"{at}","creator_id":{creator},"#,
            r#""metadata":{{"action":"created","event_user_id":"{creator}","model":"client","#,
            r#""path":"/api/v9/workspaces/{wid}/clients","request_type":"POST","#,
            r#""workspace_id":"{wid}"}},"#,
            r#""payload":{{"id":{client_id},"workspace_id":{wid},"name":"Bench client {seq}","at":"{at}"}},"#,
            r#""subscription_id":{sid},"timestamp":"{at}","url_callback":"http://127.0.0.1/webhooks/toggl"}}"#
        ),
        event_id = event_id,
        at = at,
        creator = CREATOR_ID,
        wid = workspace_id,
        client_id = client_id,
        seq = seq,
        sid = SUBSCRIPTION_ID,
    )
}

/// One acknowledged delivery.
#[derive(Debug, Clone, Copy)]
struct Acked {
    client_id: u64,
    sent: Instant,
    acked: Instant,
}

#[derive(Debug, Default)]
struct Sent {
    acked: Vec<Acked>,
    errors: u64,
    first_error: Option<String>,
    /// Largest delay between a request's due time and its actual send (client-side lag).
    max_send_lag: Duration,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one delivery and reads the whole answer; `Ok(())` only for 200.
async fn deliver(sender: &mut Sender, req: hyper::Request<Full<Bytes>>) -> Result<(), String> {
    let work = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if status == hyper::StatusCode::OK {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| "timeout".to_owned())?
}

/// Open loop: delivery `i` is due at `start + i / rate` on connection `i % connections`.
async fn load(
    addr: SocketAddr,
    args: &Args,
    secret: &SigningSecret,
    workspace_id: i64,
) -> anyhow::Result<Sent> {
    let conns = args.connections as u64;
    let total = ((args.secs * args.rate) as u64).min(args.max_events);
    let host = addr.to_string();
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..conns {
        let mut sender = connect(addr).await?;
        let host = host.clone();
        let secret = secret.clone();
        let rate = args.rate;
        tasks.spawn(async move {
            let mut out = Sent::default();
            let mut i = k;
            while i < total {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                let body = envelope(i, workspace_id);
                let signature = sign(&secret, body.as_bytes());
                let req = post_json(
                    &host,
                    DEFAULT_CALLBACK_PATH,
                    Bytes::from(body),
                    &[(SIGNATURE_HEADER, &signature)],
                );
                out.max_send_lag = out.max_send_lag.max(due.elapsed());
                let sent = Instant::now();
                match deliver(&mut sender, req).await {
                    Ok(()) => out.acked.push(Acked {
                        client_id: FIRST_CLIENT_ID + i,
                        sent,
                        acked: Instant::now(),
                    }),
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e);
                        // A broken connection would fail every later request on it.
                        break;
                    }
                }
                i += conns;
            }
            out
        });
    }
    let mut all = Sent::default();
    while let Some(part) = tasks.join_next().await {
        let part = part.context("load client panicked")?;
        all.acked.extend(part.acked);
        all.errors += part.errors;
        all.max_send_lag = all.max_send_lag.max(part.max_send_lag);
        if all.first_error.is_none() {
            all.first_error = part.first_error;
        }
    }
    Ok(all)
}

/// Nearest-rank quantile of milliseconds (sorted in place); `NaN` when empty.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `b − a` in milliseconds, negative when `b` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match b.checked_duration_since(a) {
        Some(d) => ms(d),
        None => -ms(a.duration_since(b)),
    }
}

fn summary(name: &str, values: &mut [f64]) -> (f64, f64) {
    let p50 = quantile(values, 0.5);
    let p99 = quantile(values, 0.99);
    let max = quantile(values, 1.0);
    println!(
        "{name:<34} n={:<5} p50={p50:>7.2} ms  p99={p99:>7.2} ms  max={max:>7.2} ms",
        values.len()
    );
    (p50, p99)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.rate > 0.0 && args.secs > 0.0 && args.connections > 0 && args.max_events > 0,
        "nothing to measure"
    );
    println!("machine at start: {}", machine_state());
    println!(
        "config: rate={}/s secs={} max_events={} connections={} drain_secs={}",
        args.rate, args.secs, args.max_events, args.connections, args.drain_secs
    );

    let sandbox = Sandbox::start(SandboxConfig {
        rate_limit: false,
        seed: Seed::Small,
        ..SandboxConfig::default()
    })
    .await
    .context("starting the sandbox")?;
    let facts = sandbox.facts().clone();

    // Subscribe before any load so no change is missed; record when each tag arrives.
    let actions: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut changes = sandbox.state().subscribe_changes();
    let listener_task = {
        let actions = Arc::clone(&actions);
        let lagged = Arc::clone(&lagged);
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(c) => {
                        let at = Instant::now();
                        if c.entity != "tag" || c.action.as_str() != "created" {
                            continue;
                        }
                        let id = c.payload["name"]
                            .as_str()
                            .and_then(|n| n.strip_prefix("t-"))
                            .and_then(|n| n.parse::<u64>().ok());
                        if let Some(id) = id {
                            actions
                                .lock()
                                .expect("actions lock")
                                .entry(id)
                                .or_insert(at);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };

    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("temp dir for the store")?;
    let db_path = dir.path().join("automation-latency.db");
    println!("store: {}", db_path.display());
    let store = Store::open(
        &format!("sqlite://{}", db_path.display()),
        StoreOptions::default(),
    )
    .await
    .context("opening the SQLite store")?;

    let connector = Connector::builtin();
    let rules = Arc::new(RuleSet::parse(RULES, connector).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid rules:\n{}", lines.join("\n"))
    })?);

    let secret = SigningSecret::new("bench-signing-secret-0123456789");
    let secrets = Arc::new(SecretRing::default());
    secrets.add(Some(SUBSCRIPTION_ID), secret.clone());
    let receiver = Arc::new(
        Receiver::new(store.clone(), secrets, ReceiverConfig::default())
            .with_planner(Arc::new(RulesPlanner(Arc::clone(&rules)))),
    );

    let mut client_config =
        ClientConfig::with_token(facts.api_token.clone()).base_url(facts.api_url.clone());
    client_config.pacing = None;
    let client = Client::new(client_config).context("building the client")?;
    let worker = Worker::new(
        store.clone(),
        client,
        Arc::new(connector.clone()),
        WorkerConfig {
            worker_id: format!("automation-latency-{}", std::process::id()),
            ..WorkerConfig::default()
        },
    )
    .context("building the worker")?;
    let wake = worker.notifier();
    let worker_stop = CancellationToken::new();
    let worker_task = worker.run(worker_stop.clone());
    let mut notices = receiver.subscribe();
    let wake_task = tokio::spawn(async move {
        loop {
            match notices.recv().await {
                Ok(n) if n.jobs > 0 => wake.notify_one(),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => wake.notify_one(),
                Err(RecvError::Closed) => return,
            }
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the receiver")?;
    let receiver_addr = listener.local_addr()?;
    let app = router(Arc::clone(&receiver));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let load_started = Instant::now();
    let sent = load(receiver_addr, &args, &secret, facts.workspace_id).await?;
    let load_elapsed = load_started.elapsed();
    println!("machine after load: {}", machine_state());

    // Wait (bounded) until every acknowledged event's tag has reached the sandbox.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_secs.max(0.0));
    loop {
        let done = {
            let seen = actions.lock().expect("actions lock");
            sent.acked.iter().all(|a| seen.contains_key(&a.client_id))
        };
        if done || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    worker_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker_task).await;
    server.abort();
    wake_task.abort();
    listener_task.abort();

    let seen = actions.lock().expect("actions lock").clone();
    let mut ack_ms: Vec<f64> = sent.acked.iter().map(|a| ms(a.acked - a.sent)).collect();
    let mut action_ms = Vec::new();
    let mut end_to_end_ms = Vec::new();
    let mut missing = 0u64;
    for a in &sent.acked {
        match seen.get(&a.client_id) {
            Some(&t) => {
                action_ms.push(signed_ms(a.acked, t));
                end_to_end_ms.push(signed_ms(a.sent, t));
            }
            None => missing += 1,
        }
    }
    let before_ack = action_ms.iter().filter(|&&x| x < 0.0).count();

    println!(
        "deliveries: acked={} errors={} in {:.2} s ({:.1}/s); max client send lag {:.2} ms",
        sent.acked.len(),
        sent.errors,
        load_elapsed.as_secs_f64(),
        sent.acked.len() as f64 / load_elapsed.as_secs_f64(),
        ms(sent.max_send_lag)
    );
    if let Some(e) = &sent.first_error {
        println!("first delivery error: {e}");
    }
    println!(
        "actions: seen={} missing={} change-broadcast lagged={} reached-sandbox-before-ack={}",
        action_ms.len(),
        missing,
        lagged.load(std::sync::atomic::Ordering::Relaxed),
        before_ack
    );
    let (ack50, ack99) = summary("baseline send -> ack", &mut ack_ms);
    let (act50, act99) = summary("ack -> action reaches sandbox", &mut action_ms);
    summary("send -> action (end to end)", &mut end_to_end_ms);
    println!(
        "ratio action/ack: p50 {:.2}x  p99 {:.2}x",
        act50 / ack50,
        act99 / ack99
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: p50 <= 5 ms {} ({act50:.2} ms); p99 <= 25 ms {} ({act99:.2} ms); all actions arrived: {}",
        verdict(act50 <= 5.0),
        verdict(act99 <= 25.0),
        if missing == 0 && sent.errors == 0 {
            "yes"
        } else {
            "NO"
        }
    );
    println!("machine at end: {}", machine_state());

    sandbox.shutdown().await.context("stopping the sandbox")?;
    anyhow::ensure!(
        sent.errors == 0 && missing == 0,
        "{} delivery errors, {missing} actions missing",
        sent.errors
    );
    Ok(())
}
