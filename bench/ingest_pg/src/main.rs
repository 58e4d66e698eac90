//! Ingest benchmark: signed Toggl webhook deliveries per second into the receiver (the same
//! router `serve` runs: signature check, envelope parse, classification with an entity-state
//! read, durable insert, 200 after COMMIT), on PostgreSQL and on SQLite, against `pgbench`
//! running single-row insert-only transactions of the same size with the same client count.
//! All three are measured in one run, on the same machine, and only the ratios are meant to
//! be compared across machines.
//!
//! Usage (see bench/README.md):
//!   cargo run --release -- [--pg URL] [--clients N] [--requests N] [--seconds S] [--rounds N] [--breakdown] [--insert-connections N]

/// The same allocator as the `toggl-connect` binary, so this measures what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use toggl_connect_store::{Store, StoreOptions};
use toggl_connect_triggers::receiver::{Receiver, ReceiverConfig, SecretRing, router};
use toggl_connect_triggers::signature::{SIGNATURE_HEADER, SigningSecret, sign};

const SUBSCRIPTION_ID: i64 = 2_200_000_001;
const SECRET: &str = "bench-secret-0123456789abcdef";
/// Distinct time entries the events are about: updates of known entities read and upsert
/// existing `entity_state` rows, as a real stream of edits does.
const ENTITIES: u64 = 5_000;

struct Args {
    pg: String,
    clients: usize,
    requests: usize,
    seconds: u64,
    rounds: usize,
    breakdown: bool,
    /// `StoreOptions::insert_connections` (`[store] insert_connections`): `None` is the store's
    /// own choice.
    insert_connections: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        pg: std::env::var("TOGGL_CONNECT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        clients: 16,
        requests: 20_000,
        seconds: 15,
        rounds: 3,
        breakdown: false,
        insert_connections: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--breakdown" {
            a.breakdown = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pg" => a.pg = value,
            "--clients" => a.clients = value.parse().context("--clients")?,
            "--requests" => a.requests = value.parse().context("--requests")?,
            "--seconds" => a.seconds = value.parse().context("--seconds")?,
            "--rounds" => a.rounds = value.parse().context("--rounds")?,
            "--insert-connections" => {
                a.insert_connections = Some(value.parse().context("--insert-connections")?)
            }
            other => {
                bail!(
                    "unknown flag {other} (expected --pg, --clients, --requests, --seconds, \
                     --rounds, --breakdown, --insert-connections)"
                )
            }
        }
    }
    if a.clients == 0 || a.requests == 0 || a.seconds == 0 || a.rounds == 0 {
        bail!("--clients, --requests, --seconds and --rounds must be positive");
    }
    Ok(a)
}

/// A delivery shaped like Toggl's (recorded shape: string ids in metadata, nanosecond
/// timestamps, the entity as a GET returns it).
fn envelope(event_id: u64, entity_id: u64) -> String {
    let te = 4_100_000_000 + entity_id;
    serde_json::json!({
        "event_id": event_id,
        "created_at": "2025-01-10T09:00:01.827396Z",
        "creator_id": 5_000_001,
        "metadata": {
            "action": "updated", "event_user_id": "5000001", "model": "time_entry",
            "model_owner_id": "5000001", "path": format!("/api/v9/workspaces/9000001/time_entries/{te}"),
            "request_type": "PUT", "time_entry_id": te.to_string(), "workspace_id": "9000001"
        },
        "payload": {
            "at": "2025-01-10T09:00:01+00:00", "billable": false, "client_name": null,
            "description": format!("bench entry {event_id}"), "duration": 3600, "duronly": true,
            "id": te, "permissions": null, "pid": null, "project_id": null, "server_deleted_at": null,
            "start": "2025-01-10T08:00:00+00:00", "stop": "2025-01-10T09:00:00+00:00",
            "tag_ids": [], "tags": [], "task_id": null, "tid": null, "uid": 5_000_001,
            "user_id": 5_000_001, "wid": 9_000_001, "workspace_id": 9_000_001
        },
        "subscription_id": SUBSCRIPTION_ID,
        "timestamp": "2025-01-10T09:00:02.170443406Z",
        "url_callback": "https://hooks.example.com/webhooks/toggl"
    })
    .to_string()
}

async fn start_receiver(
    store: Store,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let secrets = Arc::new(SecretRing::default());
    secrets.add(Some(SUBSCRIPTION_ID), SigningSecret::new(SECRET));
    let receiver = Arc::new(Receiver::new(store, secrets, ReceiverConfig::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(receiver))
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok((addr, tx))
}

struct Run {
    ok: u64,
    failed: u64,
    elapsed: Duration,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` concurrent senders (keep-alive connections), at most `requests` deliveries in
/// total and at most `seconds`; event ids start at `first_id` so runs never collide.
async fn drive(
    addr: SocketAddr,
    clients: usize,
    requests: usize,
    seconds: u64,
    first_id: u64,
) -> anyhow::Result<Run> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("http://{addr}/webhooks/toggl");
    let secret = SigningSecret::new(SECRET);
    let issued = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut senders = Vec::new();
    for _ in 0..clients {
        let (http, url, secret) = (http.clone(), url.clone(), secret.clone());
        let (issued, ok, failed) = (Arc::clone(&issued), Arc::clone(&ok), Arc::clone(&failed));
        senders.push(tokio::spawn(async move {
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= requests || Instant::now() >= deadline {
                    return;
                }
                let body = envelope(first_id + n as u64, n as u64 % ENTITIES);
                let signature = sign(&secret, body.as_bytes());
                let answer = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    Ok(Run {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

/// The store alone, without HTTP: `clients` tasks each doing what the receiver does per
/// delivery (read the entity's state, insert the event with its new state), for `seconds`.
/// Separates the store's share of the cost from the HTTP/HMAC/JSON share.
async fn store_only(
    label: &str,
    store: Store,
    args: &Args,
    first_id: i64,
    with_read: bool,
) -> anyhow::Result<f64> {
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (store, issued) = (store.clone(), Arc::clone(&issued));
        let requests = args.requests;
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= requests || Instant::now() >= deadline {
                    return anyhow::Ok(done);
                }
                let entity_id = 4_100_000_000 + (n as i64 % ENTITIES as i64);
                let body = envelope(first_id as u64 + n as u64, n as u64 % ENTITIES);
                let payload: serde_json::Value = serde_json::from_str(&body)?;
                let event = toggl_connect_store::NewEvent {
                    event_id: first_id + n as i64,
                    subscription_id: Some(SUBSCRIPTION_ID),
                    workspace_id: Some(9_000_001),
                    entity: "time_entry".into(),
                    action: "updated".into(),
                    trigger: "time_entry_updated".into(),
                    entity_id: Some(entity_id),
                    received_at: chrono::Utc::now(),
                    envelope: body,
                    entity_state: Some(toggl_connect_store::EntityState::new(
                        payload["payload"].clone(),
                        chrono::Utc::now(),
                    )),
                    ..toggl_connect_store::NewEvent::default()
                };
                if with_read {
                    // What the receiver does: classify against the previous state, read in
                    // the insert's own transaction.
                    let derive: toggl_connect_store::Derive =
                        Arc::new(|previous| toggl_connect_store::Derived::Store {
                            trigger: if previous.is_some() {
                                "time_entry_updated".into()
                            } else {
                                "time_entry_updated time_entry_started".into()
                            },
                            jobs: Vec::new(),
                        });
                    store.insert_event_derived(event, derive).await?;
                } else {
                    store.insert_event(event).await?;
                }
                done += 1;
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await??;
    }
    let rate = ok as f64 / started.elapsed().as_secs_f64();
    println!("  {label:<22} {rate:>9.0} events/s  (store calls only, no HTTP)");
    Ok(rate)
}

/// Warms up (connections, prepared statements, caches), then measures.
async fn bench_store(label: &str, store: Store, args: &Args, first_id: u64) -> anyhow::Result<Run> {
    let (addr, stop) = start_receiver(store.clone()).await?;
    let warm = drive(
        addr,
        args.clients,
        (args.requests / 10).max(args.clients),
        2,
        first_id,
    )
    .await?;
    if warm.ok == 0 {
        bail!("{label}: warm-up stored nothing ({} failed)", warm.failed);
    }
    let run = drive(
        addr,
        args.clients,
        args.requests,
        args.seconds,
        first_id + 1_000_000_000,
    )
    .await?;
    let _ = stop.send(());
    let stats = store.stats();
    println!(
        "  {label:<22} {:>9.0} deliveries/s  ({} stored in {:.2} s, {} failed, {:.1} events per commit)",
        run.per_sec(),
        run.ok,
        run.elapsed.as_secs_f64(),
        run.failed,
        stats.writes as f64 / stats.commits.max(1) as f64,
    );
    if run.failed > 0 {
        bail!(
            "{label}: {} deliveries failed; the figure would be meaningless",
            run.failed
        );
    }
    Ok(run)
}

async fn pg_admin(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to postgres")?;
    tokio::spawn(conn);
    Ok(client)
}

/// `pgbench` with the same clients, inserting rows of the same size (the delivery body as the
/// row's text, a unique key, a timestamp) one per transaction, for `seconds`.
async fn pgbench(
    url: &str,
    schema: &str,
    args: &Args,
    dir: &std::path::Path,
) -> anyhow::Result<f64> {
    let body = envelope(8_100_000_000_000_001, 1).replace('\'', "''");
    let script = dir.join("insert-only.sql");
    std::fs::write(
        &script,
        format!(
            "\\set k random(1, 9000000000000000)\n\
             INSERT INTO {schema}.ingest (dedupe_key, envelope) VALUES ('evt:' || :k, '{body}') ON CONFLICT (dedupe_key) DO NOTHING;\n"
        ),
    )?;
    let threads = args
        .clients
        .min(std::thread::available_parallelism().map_or(2, usize::from))
        .to_string();
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &args.clients.to_string(),
            "-j",
            &threads,
            "-T",
            &args.seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .await
        .context("running pgbench (is it installed? apt-get install postgresql-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output:\n{text}"))?;
    println!(
        "  {:<22} {tps:>9.0} transactions/s  (pgbench -c {} -j {threads} -T {}, {} byte rows)",
        "pgbench insert-only",
        args.clients,
        args.seconds,
        body.len()
    );
    Ok(tps)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = format!("{}_{nanos:x}", std::process::id());
    let ours = format!("bench_ingest_{tag}");
    let theirs = format!("bench_pgbench_{tag}");
    let admin = pg_admin(&args.pg).await?;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {theirs}; CREATE TABLE {theirs}.ingest (id BIGSERIAL PRIMARY KEY, \
             dedupe_key TEXT NOT NULL UNIQUE, envelope TEXT NOT NULL, \
             received_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ))
        .await?;
    println!(
        "ingest benchmark: {} clients, at most {} deliveries or {} s per store, {} byte deliveries",
        args.clients,
        args.requests,
        args.seconds,
        envelope(8_100_000_000_000_001, 1).len()
    );
    let result = async {
        // pgbench and the receiver alternate, starting and ending with pgbench; each receiver
        // run is compared with the mean of the pgbench runs just before and just after it, and
        // the figure is the median of those ratios. The machine is shared: its speed drifts
        // by tens of percent within minutes, and only neighbouring runs see the same machine.
        let pg_options = StoreOptions { schema: Some(ours.clone()), pool_size: args.clients.max(4), insert_connections: args.insert_connections, ..StoreOptions::default() };
        let pg_store = Store::open(&args.pg, pg_options.clone()).await?;
        let mut tps = vec![pgbench(&args.pg, &theirs, &args, dir.path()).await?];
        let mut rates = Vec::new();
        for round in 0..args.rounds {
            // Fresh event ids every round; the same 5,000 entities, as a long-running server
            // sees them.
            let first_id = 8_100_000_000_000_001 + round as u64 * 10_000_000_000;
            let run = bench_store("receiver on postgres", pg_store.clone(), &args, first_id).await?;
            rates.push(run.per_sec());
            tps.push(pgbench(&args.pg, &theirs, &args, dir.path()).await?);
        }
        let mut ratios: Vec<f64> = rates
            .iter()
            .enumerate()
            .map(|(i, rate)| rate / ((tps[i] + tps[i + 1]) / 2.0))
            .collect();
        let listed = ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ");
        ratios.sort_by(f64::total_cmp);
        let median_ratio = ratios[ratios.len() / 2];
        rates.sort_by(f64::total_cmp);
        let median_rate = rates[rates.len() / 2];
        if args.breakdown {
            let store = Store::open(&args.pg, pg_options).await?;
            store_only("store derived insert", store.clone(), &args, 8_300_000_000_000_001, true).await?;
            store_only("store insert only", store, &args, 8_400_000_000_000_001, false).await?;
        }
        let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let sqlite_store = Store::open(&sqlite_url, StoreOptions::default()).await?;
        let sqlite = bench_store("receiver on sqlite", sqlite_store, &args, 8_100_000_000_000_001).await?;
        println!();
        println!(
            "  postgres ingest / pgbench insert-only, median of {} rounds: {median_ratio:.2}  (rounds: {listed}; target >= 0.80)",
            args.rounds
        );
        println!(
            "  postgres ingest (median {median_rate:.0}/s) / sqlite ingest:      {:.2}",
            median_rate / sqlite.per_sec()
        );
        anyhow::Ok(())
    }
    .await;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {theirs} CASCADE; DROP SCHEMA IF EXISTS {ours} CASCADE"
        ))
        .await?;
    result
}
