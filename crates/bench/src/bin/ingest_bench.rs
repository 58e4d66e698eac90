//! Benchmark of durable signed webhook ingest (issue 4) against a bare hyper server measured in
//! the same run.
//!
//! The real receiver router (`toggl_connect_triggers::receiver::router`) stores into a temporary
//! SQLite file (WAL, fsynced by the store's syncer: every acknowledged event is on disk). Each request is
//! a Toggl-shaped `time_entry` delivery with a distinct `event_id`, signed with
//! `toggl_connect_triggers::signature::sign`; entity ids cycle over `--entities`, so part of
//! the deliveries find a previous entity state (classification, in the insert's transaction, reads it) and every one upserts
//! it. Measured:
//! 1. the maximum rate (closed loop, `--connections` clients), alternating receiver and bare
//!    server for `--rounds` rounds → ratio (target ≥ 0.35). `--bare-connections 32,256` runs
//!    bare at each of those counts in every round and takes its best as the baseline: the
//!    receiver waits on fsyncs and needs more requests in flight to saturate than bare does;
//!    `bench/ingest/README.md` has the sweep;
//! 2. events per commit (fsync) at that saturation, from `Store::stats()` (target ≥ 8);
//! 3. p50/p99 acknowledgement latency at `--load-fraction` (default 50 %) of the measured
//!    maximum, open loop (latency from the scheduled send time), with the bare server at the
//!    same rate as a baseline;
//! 4. this process's peak memory (`VmHWM`): clients, both servers, SQLite and the runtime.
//!
//! Run: `cargo run --release -p toggl-connect-bench --bin ingest_bench -- --help`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use toggl_connect_bench::{
    BareServer, LoadRun, LoadSpec, MakeRequest, MaxRateArgs, closed_loop, cpu_seconds, listed,
    machine_state, median, memory_kib, mib, open_loop, percentile, post_json,
};
use toggl_connect_store::{EntityState, EventSource, NewEvent, Store, StoreOptions, StoreStats};
use toggl_connect_triggers::receiver::{Receiver, ReceiverConfig, SecretRing, router};
use toggl_connect_triggers::signature::{SIGNATURE_HEADER, SigningSecret, sign};

/// Durable signed ingest against a bare hyper server.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    load: MaxRateArgs,
    /// Seconds of the open-loop latency phase (per server).
    #[arg(long, default_value_t = 5.0)]
    latency_secs: f64,
    /// Share of the measured maximum rate offered in the latency phase.
    #[arg(long, default_value_t = 0.5)]
    load_fraction: f64,
    /// Distinct time entry ids the events cycle over.
    #[arg(long, default_value_t = 1000)]
    entities: u64,
    /// Connections for the bare server's maximum-rate phases, when not `--connections`: to
    /// compare the receiver at its saturation with bare hyper at its own best. A list
    /// (`32,256`) runs bare at each in every round and takes the best of them as the round's
    /// baseline.
    #[arg(long, value_delimiter = ',')]
    bare_connections: Vec<usize>,
    /// Directory for the temporary SQLite file (default: the system temp dir). It must be on a
    /// real disk: on tmpfs an fsync costs nothing and the figures mean little.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const PATH: &str = "/webhooks/toggl";
const SUBSCRIPTION_ID: i64 = 42;
const WORKSPACE_ID: i64 = 9_000_001;

/// A `time_entry` `updated` delivery as Toggl sends it (shape of the recorded events), with a
/// distinct `event_id` and a newer `at` each time.
fn envelope(seq: u64, entities: u64) -> String {
    let event_id = 8_100_000_000_000_000 + seq;
    let entry_id = 4_000_000_000 + seq % entities.max(1);
    let at = chrono::DateTime::from_timestamp(1_750_000_000 + seq as i64, 0)
        .expect("timestamp in range")
        .format("%Y-%m-%dT%H:%M:%S+00:00");
    format!(
        concat!(
            r#"{{"event_id":{event_id},"created_at":"{at}","creator_id":5000001,"#,
            r#""metadata":{{"action":"updated","event_user_id":"5000001","model":"time_entry","#,
            r#""path":"/api/v9/workspaces/{wid}/time_entries/{entry_id}","request_type":"PUT","#,
            r#""time_entry_id":"{entry_id}","workspace_id":"{wid}"}},"#,
            r#""payload":{{"at":"{at}","billable":false,"client_name":null,"description":"Bench entry {seq}","#,
            r#""duration":1800,"duronly":true,"id":{entry_id},"pid":null,"project_id":null,"#,
            r#""server_deleted_at":null,"start":"2025-06-15T09:00:00+00:00","stop":"2025-06-15T09:30:00+00:00","#,
            r#""tag_ids":[],"tags":[],"task_id":null,"uid":5000001,"user_id":5000001,"wid":{wid},"workspace_id":{wid}}},"#,
            r#""subscription_id":{sid},"timestamp":"{at}","url_callback":"http://127.0.0.1/webhooks/toggl"}}"#
        ),
        event_id = event_id,
        at = at,
        wid = WORKSPACE_ID,
        entry_id = entry_id,
        seq = seq,
        sid = SUBSCRIPTION_ID,
    )
}

fn delivery_maker(
    host: String,
    secret: SigningSecret,
    seq: Arc<AtomicU64>,
    entities: u64,
) -> MakeRequest {
    Arc::new(move |_| {
        // One counter across every phase and both servers: every delivery is a new event.
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let body = envelope(n, entities);
        let signature = sign(&secret, body.as_bytes());
        post_json(
            &host,
            PATH,
            Bytes::from(body),
            &[(SIGNATURE_HEADER, &signature)],
        )
    })
}

fn check(run: &LoadRun, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        run.errors == 0,
        "{what}: {} failed requests (first: {})",
        run.errors,
        run.first_error.as_deref().unwrap_or("?")
    );
    Ok(())
}

fn latency_ms(run: &LoadRun, q: f64) -> f64 {
    let mut lat = run.latencies.clone();
    percentile(&mut lat, q).unwrap_or_default().as_secs_f64() * 1e3
}

fn describe(run: &LoadRun) -> String {
    format!(
        "{:>8.0} req/s  ok={} errors={} p50={:.2}ms p99={:.2}ms",
        run.rate(),
        run.ok,
        run.errors,
        latency_ms(run, 0.5),
        latency_ms(run, 0.99)
    )
}

/// `(sum of seconds, count)` of the receiver's store-latency histogram (time inside
/// `Store::insert_event`: queueing for the writer, the batch, the fsync).
fn store_latency_totals(receiver: &Receiver) -> (f64, u64) {
    let text = receiver.metrics().render();
    let find = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    (
        find("toggl_connect_store_latency_seconds_sum"),
        find("toggl_connect_store_latency_seconds_count") as u64,
    )
}

fn mean_ms(run: &LoadRun) -> f64 {
    if run.latencies.is_empty() {
        return 0.0;
    }
    run.latencies.iter().map(Duration::as_secs_f64).sum::<f64>() / run.latencies.len() as f64 * 1e3
}

/// The store alone, no HTTP: `connections` tasks call `insert_event` back to back (the same
/// events the receiver would store, entity state included), to tell the store's ceiling from
/// the rest of the receiver's path. Returns (events/s, events per commit, events stored).
async fn store_only(
    store: &Store,
    connections: usize,
    duration: Duration,
    max_requests: u64,
    seq: &Arc<AtomicU64>,
    entities: u64,
) -> anyhow::Result<(f64, f64, u64)> {
    let before = store.stats();
    let issued = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (store, seq, issued) = (store.clone(), Arc::clone(seq), Arc::clone(&issued));
        tasks.spawn(async move {
            let mut done = 0u64;
            while std::time::Instant::now() < deadline
                && issued.fetch_add(1, Ordering::Relaxed) < max_requests
            {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let raw = envelope(n, entities);
                let value: serde_json::Value = serde_json::from_str(&raw)?;
                let payload = value["payload"].clone();
                tokio::time::timeout(
                    toggl_connect_bench::REQUEST_TIMEOUT,
                    store.insert_event(NewEvent {
                        event_id: value["event_id"].as_i64().context("event_id")?,
                        subscription_id: Some(SUBSCRIPTION_ID),
                        workspace_id: Some(WORKSPACE_ID),
                        entity: "time_entry".into(),
                        action: "updated".into(),
                        trigger: "time_entry_updated".into(),
                        entity_id: payload["id"].as_i64(),
                        received_at: chrono::Utc::now(),
                        envelope: raw,
                        source: EventSource::Webhook,
                        dedupe_key: None,
                        entity_state: Some(EntityState::new(payload, chrono::Utc::now())),
                        jobs: Vec::new(),
                    }),
                )
                .await
                .context("store insert timed out")??;
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.context("store task panicked")??;
    }
    let secs = started.elapsed().as_secs_f64();
    let (_, _, pc) = per_commit(&before, &store.stats());
    Ok((total as f64 / secs, pc, total))
}

fn per_commit(before: &StoreStats, after: &StoreStats) -> (u64, u64, f64) {
    let commits = after.commits - before.commits;
    let writes = after.writes - before.writes;
    let ratio = if commits == 0 {
        0.0
    } else {
        writes as f64 / commits as f64
    };
    (commits, writes, ratio)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.load.valid() && args.latency_secs > 0.0,
        "nothing to measure"
    );
    anyhow::ensure!(
        args.load_fraction > 0.0 && args.load_fraction <= 1.0,
        "--load-fraction must be in (0, 1]"
    );
    anyhow::ensure!(
        !args.bare_connections.contains(&0),
        "--bare-connections must be positive"
    );
    println!("machine at start: {}", machine_state());
    println!(
        "config: connections={} secs={} rounds={} latency_secs={} load_fraction={} entities={}",
        args.load.connections,
        args.load.secs,
        args.load.rounds,
        args.latency_secs,
        args.load_fraction,
        args.entities
    );

    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("temp dir for the store")?;
    println!("store: {}", dir.path().display());
    let db_path = dir.path().join("ingest-bench.db");
    let store = Store::open(
        &format!("sqlite://{}", db_path.display()),
        StoreOptions::default(),
    )
    .await
    .context("opening the SQLite store")?;
    let secret = SigningSecret::new("bench-signing-secret-0123456789");
    let secrets = Arc::new(SecretRing::default());
    secrets.add(Some(SUBSCRIPTION_ID), secret.clone());
    let receiver = Arc::new(Receiver::new(
        store.clone(),
        secrets,
        ReceiverConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the receiver")?;
    let receiver_addr = listener.local_addr()?;
    let app = router(Arc::clone(&receiver));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let bare = BareServer::start(
        Bytes::new(),
        Bytes::from_static(br#"{"stored":true,"duplicate":false}"#),
    )
    .await?;
    let (hwm_setup, _) = memory_kib("self")?;

    let seq = Arc::new(AtomicU64::new(0));
    let to_receiver = delivery_maker(
        receiver_addr.to_string(),
        secret.clone(),
        Arc::clone(&seq),
        args.entities,
    );
    let to_bare = delivery_maker(
        bare.addr().to_string(),
        secret,
        Arc::clone(&seq),
        args.entities,
    );

    let (spec, warm) = args.load.specs();
    let bare_specs: Vec<LoadSpec> = if args.bare_connections.is_empty() {
        vec![spec.clone()]
    } else {
        args.bare_connections
            .iter()
            .map(|&connections| LoadSpec {
                connections,
                ..spec.clone()
            })
            .collect()
    };
    let mut acknowledged = 0;
    let w = closed_loop(receiver_addr, &warm, Arc::clone(&to_receiver)).await?;
    check(&w, "warm-up receiver")?;
    acknowledged += w.ok;
    check(
        &closed_loop(bare.addr(), &warm, Arc::clone(&to_bare)).await?,
        "warm-up bare",
    )?;

    let (mut rec_rates, mut bare_rates, mut ratios, mut per_commits) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut max_writes_per_commit = 0;
    let mut store_split = Vec::new();
    let mut cpu_per_request = Vec::new();
    for round in 0..args.load.rounds {
        let measure_receiver = async {
            let before = store.stats();
            let (sum0, n0) = store_latency_totals(&receiver);
            let cpu0 = cpu_seconds()?;
            let run = closed_loop(receiver_addr, &spec, Arc::clone(&to_receiver)).await?;
            let cpu = cpu_seconds()? - cpu0;
            let (sum1, n1) = store_latency_totals(&receiver);
            let after = store.stats();
            let in_store_ms = (sum1 - sum0) / (n1 - n0).max(1) as f64 * 1e3;
            println!(
                "  receiver: mean ack latency {:.2} ms, of which in Store::insert_event {in_store_ms:.2} ms",
                mean_ms(&run)
            );
            store_split.push((mean_ms(&run), in_store_ms));
            anyhow::Ok((
                run,
                per_commit(&before, &after),
                after.max_writes_per_commit,
                cpu,
            ))
        };
        // Bare at each of its connection counts; the fastest is the round's baseline.
        let measure_bare = async {
            let mut best: Option<(LoadRun, f64)> = None;
            for bare_spec in &bare_specs {
                let cpu0 = cpu_seconds()?;
                let run = closed_loop(bare.addr(), bare_spec, Arc::clone(&to_bare)).await?;
                let cpu = cpu_seconds()? - cpu0;
                if bare_specs.len() > 1 {
                    println!(
                        "  bare at {} connections: {:.0} req/s",
                        bare_spec.connections,
                        run.rate()
                    );
                }
                check(&run, "bare")?;
                if best.as_ref().is_none_or(|(b, _)| run.rate() > b.rate()) {
                    best = Some((run, cpu));
                }
            }
            best.context("no bare connection count")
        };
        let ((r, (commits, writes, pc), max_pc, r_cpu), (b, b_cpu)) = if round % 2 == 0 {
            let r = measure_receiver.await?;
            (r, measure_bare.await?)
        } else {
            let b = measure_bare.await?;
            (measure_receiver.await?, b)
        };
        let (r_us, b_us) = (
            r_cpu * 1e6 / r.ok.max(1) as f64,
            b_cpu * 1e6 / b.ok.max(1) as f64,
        );
        println!("  round {}: receiver {}", round + 1, describe(&r));
        println!(
            "  round {}:          {commits} commits, {writes} writes, {pc:.1} writes/commit",
            round + 1
        );
        println!("  round {}: bare     {}", round + 1, describe(&b));
        println!(
            "  round {}: process CPU per request: receiver {r_us:.1} µs, bare {b_us:.1} µs ({:.3})",
            round + 1,
            b_us / r_us
        );
        cpu_per_request.push((r_us, b_us));
        check(&r, "receiver")?;
        acknowledged += r.ok;
        max_writes_per_commit = max_pc;
        ratios.push(r.rate() / b.rate());
        rec_rates.push(r.rate());
        bare_rates.push(b.rate());
        per_commits.push(pc);
    }
    let (hwm_max, _) = memory_kib("self")?;
    let (store_rate, store_pc, store_only_events) = store_only(
        &store,
        args.load.connections,
        Duration::from_secs_f64(args.load.secs),
        args.load.max_requests,
        &seq,
        args.entities,
    )
    .await?;
    println!("  store only: {store_rate:.0} events/s, {store_pc:.1} events/commit");

    let max_rate = median(&rec_rates);
    let offered = max_rate * args.load_fraction;
    let paced = LoadSpec {
        duration: Duration::from_secs_f64(args.latency_secs),
        ..spec.clone()
    };
    let before = store.stats();
    let lat_r = open_loop(receiver_addr, &paced, offered, Arc::clone(&to_receiver)).await?;
    let after = store.stats();
    let (_, _, paced_pc) = per_commit(&before, &after);
    println!("  paced {offered:.0}/s: receiver {}", describe(&lat_r));
    check(&lat_r, "paced receiver")?;
    acknowledged += lat_r.ok;
    let lat_b = open_loop(bare.addr(), &paced, offered, Arc::clone(&to_bare)).await?;
    println!("  paced {offered:.0}/s: bare     {}", describe(&lat_b));
    check(&lat_b, "paced bare")?;
    let (hwm_end, rss_end) = memory_kib("self")?;

    // Every 200 must be a stored event: the benchmark is only meaningful if acks were durable.
    let stats = store.stats();
    anyhow::ensure!(
        stats.events_inserted == acknowledged + store_only_events && stats.duplicates == 0,
        "store has {} events ({} duplicates) for {acknowledged} acknowledged deliveries",
        stats.events_inserted,
        stats.duplicates
    );
    let db_bytes = std::fs::metadata(&db_path).map_or(0, |m| m.len());
    let wal_bytes =
        std::fs::metadata(dir.path().join("ingest-bench.db-wal")).map_or(0, |m| m.len());

    drop(bare);
    server.abort();

    println!();
    println!("machine at end: {}", machine_state());
    println!();
    println!("| measure | receiver (SQLite, fsync) | bare hyper | ratio / figure | target |");
    println!("|---|---:|---:|---:|---|");
    let connections = match args.bare_connections.as_slice() {
        [] => format!("{} connections", args.load.connections),
        [b] if *b == args.load.connections => format!("{} connections", args.load.connections),
        [b] => format!("{} connections, bare {b}", args.load.connections),
        many => format!(
            "{} connections, bare the best of {}",
            args.load.connections,
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/")
        ),
    };
    println!(
        "| max req/s, {connections} (median of {} rounds) | {:.0} | {:.0} | {:.3} (rounds: {}) | ≥ 0.35 |",
        args.load.rounds,
        max_rate,
        median(&bare_rates),
        median(&ratios),
        listed(&ratios, 3)
    );
    let (r_cpu, b_cpu): (Vec<f64>, Vec<f64>) = cpu_per_request.iter().copied().unzip();
    let cpu_ratios: Vec<f64> = cpu_per_request.iter().map(|(r, b)| b / r).collect();
    println!(
        "| process CPU per request, client included (median of rounds); bare / receiver | {:.1} µs | {:.1} µs | {:.3} (rounds: {}) | |",
        median(&r_cpu),
        median(&b_cpu),
        median(&cpu_ratios),
        listed(&cpu_ratios, 3)
    );
    println!(
        "| events per commit (fsync) at saturation | {:.1} (rounds: {}; largest batch {}) | | | ≥ 8 |",
        median(&per_commits),
        listed(&per_commits, 1),
        max_writes_per_commit
    );
    let (acks, stored): (Vec<f64>, Vec<f64>) = store_split.iter().copied().unzip();
    println!(
        "| store alone (insert_event, {} tasks, no HTTP): events/s, events/commit | {store_rate:.0} ({store_pc:.1}/commit) | | {:.3} of bare | |",
        args.load.connections,
        store_rate / median(&bare_rates)
    );
    println!(
        "| mean ack latency at saturation / of which inside Store::insert_event | {:.2} ms / {:.2} ms | | | |",
        median(&acks),
        median(&stored)
    );
    println!(
        "| ack latency p50 at {:.0} req/s offered ({:.0}% of max), open loop | {:.2} ms | {:.2} ms | | |",
        offered,
        args.load_fraction * 100.0,
        latency_ms(&lat_r, 0.5),
        latency_ms(&lat_b, 0.5)
    );
    println!(
        "| ack latency p99 at the same rate | {:.2} ms | {:.2} ms | | |",
        latency_ms(&lat_r, 0.99),
        latency_ms(&lat_b, 0.99)
    );
    println!(
        "| achieved rate in the paced phase | {:.0} req/s ({:.1} events/commit) | {:.0} req/s | | |",
        lat_r.rate(),
        paced_pc,
        lat_b.rate()
    );
    println!(
        "| bench process VmHWM: after setup / after max phase / at end (RSS at end) | {} / {} / {} ({}) | | | |",
        mib(hwm_setup),
        mib(hwm_max),
        mib(hwm_end),
        mib(rss_end)
    );
    println!(
        "| events stored / db file / WAL file | {} / {:.1} MB / {:.1} MB | | | |",
        stats.events_inserted,
        db_bytes as f64 / 1e6,
        wal_bytes as f64 / 1e6
    );
    Ok(())
}
