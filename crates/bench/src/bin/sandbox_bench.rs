//! Benchmark of the sandbox (issue 2) against a bare hyper server measured in the same run.
//!
//! 1. `GET /api/v9/me/time_entries` over `--entries` seeded entries, and
//! 2. `POST /api/v9/workspaces/{wid}/time_entries` (stopped entries),
//!
//! each with `--connections` keep-alive clients in a closed loop, alternating sandbox and bare
//! server for `--rounds` rounds; the bare server answers the very bytes the sandbox answered
//! (captured first), so both move the same amount of data. Then, unless `--skip-memory`, the
//! built `toggl-connect` binary runs `sandbox --seed-entries N --no-rate-limit` as a child:
//! time from spawn to its JSON facts line, and its `VmHWM` after seeding and after a few list
//! requests, against the same child started with no extra entries.
//!
//! Run: `cargo run --release -p toggl-connect-bench --bin sandbox_bench -- --help`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use hyper::StatusCode;
use toggl_connect_bench::{
    BareServer, LoadRun, MakeRequest, MaxRateArgs, closed_loop, fetch, get_request, listed,
    machine_state, median, memory_kib, mib, percentile, post_json,
};
use toggl_connect_sandbox::{Plan, Sandbox, SandboxConfig};
use tokio::io::AsyncBufReadExt as _;

/// Sandbox throughput against a bare hyper server, and the sandbox binary's memory and start-up.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    load: MaxRateArgs,
    /// Time entries seeded for the list benchmark.
    #[arg(long, default_value_t = 1000)]
    entries: usize,
    /// Time entries seeded in the child process for the memory and start-up measure.
    #[arg(long, default_value_t = 100_000)]
    memory_entries: usize,
    /// Child starts per configuration (start-up time is the median).
    #[arg(long, default_value_t = 3)]
    starts: usize,
    /// List requests sent to the big child before its peak memory is read again.
    #[arg(long, default_value_t = 5)]
    list_requests: usize,
    /// The `toggl-connect` binary (default: `$CARGO_TARGET_DIR/release/toggl-connect`, else
    /// `target/release/toggl-connect`).
    #[arg(long)]
    cli: Option<PathBuf>,
    /// Skip the child-process memory and start-up measure.
    #[arg(long)]
    skip_memory: bool,
}

struct Pair {
    name: &'static str,
    sandbox: Vec<f64>,
    bare: Vec<f64>,
    ratios: Vec<f64>,
    sandbox_p99_ms: Vec<f64>,
}

fn basic_auth(token: &str) -> String {
    let raw = format!("{token}:api_token");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn describe(run: &LoadRun) -> String {
    let mut lat = run.latencies.clone();
    let p50 = percentile(&mut lat, 0.5).unwrap_or_default();
    let p99 = percentile(&mut lat, 0.99).unwrap_or_default();
    format!(
        "{:>9.0} req/s  ok={} errors={} p50={:.2}ms p99={:.2}ms {:.1} MB/s",
        run.rate(),
        run.ok,
        run.errors,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        run.bytes as f64 / run.elapsed.as_secs_f64().max(1e-9) / 1e6
    )
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

/// Alternates sandbox and bare runs (the first of each pair swaps every round, so drift in the
/// machine's load hits both sides alike) and collects per-round ratios.
async fn compare(
    name: &'static str,
    args: &Args,
    sandbox: (std::net::SocketAddr, MakeRequest),
    bare: (std::net::SocketAddr, MakeRequest),
) -> anyhow::Result<Pair> {
    let (spec, warm) = args.load.specs();
    check(
        &closed_loop(sandbox.0, &warm, Arc::clone(&sandbox.1)).await?,
        "warm-up sandbox",
    )?;
    check(
        &closed_loop(bare.0, &warm, Arc::clone(&bare.1)).await?,
        "warm-up bare",
    )?;
    let mut pair = Pair {
        name,
        sandbox: Vec::new(),
        bare: Vec::new(),
        ratios: Vec::new(),
        sandbox_p99_ms: Vec::new(),
    };
    for round in 0..args.load.rounds {
        let (s, b) = if round % 2 == 0 {
            let s = closed_loop(sandbox.0, &spec, Arc::clone(&sandbox.1)).await?;
            let b = closed_loop(bare.0, &spec, Arc::clone(&bare.1)).await?;
            (s, b)
        } else {
            let b = closed_loop(bare.0, &spec, Arc::clone(&bare.1)).await?;
            let s = closed_loop(sandbox.0, &spec, Arc::clone(&sandbox.1)).await?;
            (s, b)
        };
        eprintln!("  {name} round {}: sandbox {}", round + 1, describe(&s));
        eprintln!("  {name} round {}: bare    {}", round + 1, describe(&b));
        check(&s, name)?;
        check(&b, name)?;
        let mut lat = s.latencies.clone();
        pair.sandbox_p99_ms
            .push(percentile(&mut lat, 0.99).unwrap_or_default().as_secs_f64() * 1e3);
        pair.ratios.push(s.rate() / b.rate());
        pair.sandbox.push(s.rate());
        pair.bare.push(b.rate());
    }
    Ok(pair)
}

async fn throughput(args: &Args) -> anyhow::Result<Vec<Pair>> {
    let handle = Sandbox::start(SandboxConfig {
        seed_entries: args.entries,
        rate_limit: false,
        plan: Plan::Unlimited,
        ..SandboxConfig::default()
    })
    .await
    .context("starting the sandbox")?;
    let facts = handle.facts().clone();
    let addr = handle.addr();
    let host = addr.to_string();
    let auth = basic_auth(&facts.api_token);
    let wid = facts.workspace_id;
    let list_path = "/api/v9/me/time_entries";
    let create_path = format!("/api/v9/workspaces/{wid}/time_entries");
    // Stopped entries one minute apart, far in the past of the seeded ones' newest-first order.
    let create_body = move |n: u64| {
        let start = chrono::DateTime::from_timestamp(1_600_000_000 + 60 * n as i64, 0)
            .expect("timestamp in range")
            .format("%Y-%m-%dT%H:%M:%SZ");
        Bytes::from(format!(
            r#"{{"created_with":"toggl-connect-bench","description":"bench entry","workspace_id":{wid},"start":"{start}","duration":30,"billable":false}}"#
        ))
    };

    let (status, list_body) = fetch(addr, get_request(&host, list_path, Some(&auth))).await?;
    anyhow::ensure!(status == StatusCode::OK, "list answered {status}");
    let listed = serde_json::from_slice::<serde_json::Value>(&list_body)?
        .as_array()
        .map_or(0, Vec::len);
    let create_req = post_json(
        &host,
        &create_path,
        create_body(0),
        &[("authorization", &auth)],
    );
    let (status, create_answer) = fetch(addr, create_req).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "create answered {status}: {}",
        String::from_utf8_lossy(&create_answer)
    );
    println!(
        "list answer: {listed} entries, {} bytes; create answer: {} bytes",
        list_body.len(),
        create_answer.len()
    );
    let bare = BareServer::start(list_body, create_answer).await?;
    let bare_host = bare.addr().to_string();

    let get_sandbox: MakeRequest = {
        let (host, auth) = (host.clone(), auth.clone());
        Arc::new(move |_| get_request(&host, list_path, Some(&auth)))
    };
    let get_bare: MakeRequest = {
        let (host, auth) = (bare_host.clone(), auth.clone());
        Arc::new(move |_| get_request(&host, list_path, Some(&auth)))
    };
    let list = compare(
        "GET list",
        args,
        (addr, get_sandbox),
        (bare.addr(), get_bare),
    )
    .await?;

    let post_sandbox: MakeRequest = {
        let (host, auth, path) = (host.clone(), auth.clone(), create_path.clone());
        Arc::new(move |n| post_json(&host, &path, create_body(n), &[("authorization", &auth)]))
    };
    let post_bare: MakeRequest = {
        let (host, auth, path) = (bare_host, auth, create_path);
        Arc::new(move |n| post_json(&host, &path, create_body(n), &[("authorization", &auth)]))
    };
    let create = compare(
        "POST create",
        args,
        (addr, post_sandbox),
        (bare.addr(), post_bare),
    )
    .await?;
    let entries_now = handle.state().read(|db| db.time_entries(wid).count());
    println!("time entries in the default workspace after the create phase: {entries_now}");
    drop(bare);
    handle.shutdown().await.context("stopping the sandbox")?;
    Ok(vec![list, create])
}

struct ChildRun {
    startup: Duration,
    hwm_seeded_kib: u64,
    rss_seeded_kib: u64,
    hwm_after_lists_kib: u64,
    list_ms: Vec<f64>,
}

async fn run_child(
    cli: &PathBuf,
    entries: usize,
    list_requests: usize,
) -> anyhow::Result<ChildRun> {
    let spawned = Instant::now();
    let mut child = tokio::process::Command::new(cli)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--seed-entries",
            &entries.to_string(),
            "--no-rate-limit",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", cli.display()))?;
    let pid = child.id().context("child has no pid")?.to_string();
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .context("no facts line within 120 s")??
        .context("child closed stdout before the facts line")?;
    let startup = spawned.elapsed();
    let (hwm_seeded_kib, rss_seeded_kib) = memory_kib(&pid)?;
    let facts: serde_json::Value = serde_json::from_str(&line).context("facts line is JSON")?;
    let api_url = facts["api_url"].as_str().context("api_url")?;
    let token = facts["api_token"].as_str().context("api_token")?;
    let authority = api_url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .context("api_url form")?;
    let addr: std::net::SocketAddr = authority.parse()?;
    anyhow::ensure!(addr.ip().is_loopback(), "child must listen on loopback");
    let auth = basic_auth(token);
    let mut list_ms = Vec::new();
    for _ in 0..list_requests {
        let t = Instant::now();
        let (status, body) = fetch(
            addr,
            get_request(authority, "/api/v9/me/time_entries", Some(&auth)),
        )
        .await?;
        anyhow::ensure!(status == StatusCode::OK, "child list answered {status}");
        anyhow::ensure!(!body.is_empty(), "empty list body");
        list_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (hwm_after_lists_kib, _) = memory_kib(&pid)?;
    child.kill().await.context("stopping the child")?;
    Ok(ChildRun {
        startup,
        hwm_seeded_kib,
        rss_seeded_kib,
        hwm_after_lists_kib,
        list_ms,
    })
}

/// Spawn to exit of `toggl-connect --version`: the cost of starting the process at all.
async fn exec_time(cli: &PathBuf) -> anyhow::Result<Duration> {
    let spawned = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(cli)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .context("--version did not exit within 30 s")??;
    anyhow::ensure!(status.success(), "--version failed: {status}");
    Ok(spawned.elapsed())
}

fn default_cli() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("release").join("toggl-connect")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.load.valid(), "nothing to measure");
    println!("machine at start: {}", machine_state());
    println!(
        "config: connections={} secs={} rounds={} entries={}",
        args.load.connections, args.load.secs, args.load.rounds, args.entries
    );
    let pairs = throughput(&args).await?;

    let memory = if args.skip_memory {
        None
    } else {
        let cli = args.cli.clone().unwrap_or_else(default_cli);
        anyhow::ensure!(
            cli.exists(),
            "{} not found: build it with `cargo build --release -p toggl-connect` or pass --cli",
            cli.display()
        );
        let mut base = Vec::new();
        let mut big = Vec::new();
        let mut exec_ms = Vec::new();
        for _ in 0..args.starts.max(1) {
            exec_ms.push(exec_time(&cli).await?.as_secs_f64() * 1e3);
            base.push(run_child(&cli, 0, 0).await?);
            big.push(run_child(&cli, args.memory_entries, args.list_requests).await?);
        }
        Some((base, big, exec_ms))
    };

    println!();
    println!("machine at end: {}", machine_state());
    println!();
    println!("| measure | sandbox | bare hyper | ratio (median of rounds) | rounds |");
    println!("|---|---:|---:|---:|---|");
    for p in &pairs {
        println!(
            "| {} req/s | {:.0} | {:.0} | {:.3} | {} |",
            p.name,
            median(&p.sandbox),
            median(&p.bare),
            median(&p.ratios),
            listed(&p.ratios, 3)
        );
    }
    for p in &pairs {
        println!(
            "| {} sandbox p99 (closed loop) | {:.2} ms | | | |",
            p.name,
            median(&p.sandbox_p99_ms)
        );
    }
    if let Some((base, big, exec_ms)) = memory {
        let ms = |runs: &[ChildRun]| {
            median(
                &runs
                    .iter()
                    .map(|r| r.startup.as_secs_f64() * 1e3)
                    .collect::<Vec<_>>(),
            )
        };
        let max_kib =
            |runs: &[ChildRun], f: fn(&ChildRun) -> u64| runs.iter().map(f).max().unwrap_or(0);
        let (base_ms, big_ms) = (ms(&base), ms(&big));
        println!(
            "| start to facts line, {} entries (target < 2000 ms) | {:.0} ms | {:.0} ms (0 entries) | {:.1}x | {} starts |",
            args.memory_entries,
            big_ms,
            base_ms,
            big_ms / base_ms,
            big.len()
        );
        println!(
            "| process start baseline: `toggl-connect --version` spawn to exit | {:.0} ms | | | {} runs |",
            median(&exec_ms),
            exec_ms.len()
        );
        let base_hwm = max_kib(&base, |r| r.hwm_seeded_kib);
        println!(
            "| VmHWM after seeding (RSS {}) | {} | {} (0 entries) | | max of starts |",
            mib(max_kib(&big, |r| r.rss_seeded_kib)),
            mib(max_kib(&big, |r| r.hwm_seeded_kib)),
            mib(base_hwm)
        );
        println!(
            "| VmHWM after {} list requests (target < 150 MB) | {} | {} (0 entries) | | max of starts |",
            args.list_requests,
            mib(max_kib(&big, |r| r.hwm_after_lists_kib)),
            mib(base_hwm)
        );
        let list_ms: Vec<f64> = big.iter().flat_map(|r| r.list_ms.clone()).collect();
        println!(
            "| one list request over {} entries (new connection) | {:.1} ms median | | | {} requests |",
            args.memory_entries,
            median(&list_ms),
            list_ms.len()
        );
    }
    Ok(())
}
