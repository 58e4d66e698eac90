//! Shared machinery of the toggl-connect benchmarks (`sandbox_bench`, `ingest_bench`): a bare
//! hyper server to compare against, keep-alive HTTP/1.1 load generators (closed loop for the
//! maximum rate, open loop for latency at a fixed rate), latency percentiles and `/proc` readings.
//!
//! Invariant: every load loop is bounded both in request count and in time (and every request
//! by a timeout), and only talks to `127.0.0.1`. Benchmarks are binaries, not tests: nothing
//! here is timed under `cargo test`; the unit tests below only check the arithmetic.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use toggl_connect_bench::{BareServer, LoadSpec, closed_loop, get_request};
//! let bare = BareServer::start(bytes::Bytes::from_static(b"[]"), bytes::Bytes::new()).await?;
//! let spec = LoadSpec { connections: 16, duration: Duration::from_secs(3), max_requests: 1_000_000 };
//! let host = bare.addr().to_string();
//! let run = closed_loop(bare.addr(), &spec, Arc::new(move |_| get_request(&host, "/", None))).await?;
//! println!("{:.0} requests/s", run.rate());
//! # Ok(()) }
//! ```

/// The same allocator as the `toggl-connect` binary, so the benchmarks measure what ships (and
/// the bare baseline gets it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Longest a single request may take before the run counts it as failed and stops that client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A hello-world hyper 1 server: `GET` answers `get_body`, anything else reads the request
/// body completely and answers `post_body`, both as `application/json`.
///
/// It is the baseline every figure is divided by, so it does the least a server must do:
/// parse HTTP/1.1, read the body, write a fixed response of the size the real server sends.
pub struct BareServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl BareServer {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start(get_body: Bytes, post_body: Bytes) -> anyhow::Result<BareServer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the bare server")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Dropping the set (when the accept task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (get_body, post_body) = (get_body.clone(), post_body.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (get_body, post_body) = (get_body.clone(), post_body.clone());
                        async move {
                            let body = if req.method() == Method::GET {
                                get_body
                            } else {
                                // Read what the client sent, as the real server must.
                                let _ = req.into_body().collect().await;
                                post_body
                            };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(body))
                                    .expect("static response parts are valid"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(BareServer { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds the request with sequence number `n` (unique across all clients of one run).
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// A `GET` with an optional `Authorization` header.
pub fn get_request(host: &str, path: &str, auth: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", host);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Full::new(Bytes::new()))
        .expect("request parts are valid")
}

/// A JSON `POST` with extra headers.
pub fn post_json(
    host: &str,
    path: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut b = Request::post(path)
        .header("host", host)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).expect("request parts are valid")
}

/// How much load to apply.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Concurrent keep-alive connections, one request in flight on each.
    pub connections: usize,
    /// Stop sending after this long.
    pub duration: Duration,
    /// Stop sending after this many requests in total (whichever comes first).
    pub max_requests: u64,
}

/// The maximum-rate flags the throughput benches share (`--connections --secs --rounds
/// --max-requests`), flattened into each bench's own arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MaxRateArgs {
    /// Concurrent keep-alive connections (the same for both servers in every phase).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Seconds per maximum-rate phase.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Rounds of (measured server, bare server); the ratio reported is the median of rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Upper bound on requests per phase (the loop also stops at `--secs`).
    #[arg(long, default_value_t = 5_000_000)]
    pub max_requests: u64,
}

impl MaxRateArgs {
    /// Whether every figure is positive (the benches refuse to run otherwise).
    pub fn valid(&self) -> bool {
        self.connections > 0 && self.rounds > 0 && self.secs > 0.0
    }

    /// One measured phase, and a half-second warm-up at the same concurrency.
    pub fn specs(&self) -> (LoadSpec, LoadSpec) {
        let spec = LoadSpec {
            connections: self.connections,
            duration: Duration::from_secs_f64(self.secs),
            max_requests: self.max_requests,
        };
        let warm = LoadSpec {
            duration: Duration::from_millis(500),
            ..spec
        };
        (spec, warm)
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadRun {
    /// Requests answered with the expected status.
    pub ok: u64,
    /// Requests that failed, timed out or got another status.
    pub errors: u64,
    /// Response body bytes received.
    pub bytes: u64,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Per-request latency (open loop: from the scheduled send time), unsorted.
    pub latencies: Vec<Duration>,
    /// The first unexpected status or error, to show the operator.
    pub first_error: Option<String>,
}

impl LoadRun {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    fn merge(&mut self, other: LoadRun) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.latencies.extend(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
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

/// Sends one request on a fresh connection and returns the status and the whole body (to
/// capture what a real server answers, so the bare server can answer the same bytes).
pub async fn fetch(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect(addr).await?;
    let work = async {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .context("request timed out")?
}

/// Sends one request and reads the whole answer; `Err` carries a description.
async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, u64), String> {
    let work = async {
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body.len() as u64))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {REQUEST_TIMEOUT:?}")),
    }
}

fn record(
    run: &mut LoadRun,
    outcome: Result<(StatusCode, u64), String>,
    latency: Duration,
) -> bool {
    match outcome {
        Ok((status, bytes)) if status == StatusCode::OK => {
            run.ok += 1;
            run.bytes += bytes;
            run.latencies.push(latency);
            true
        }
        Ok((status, _)) => {
            run.errors += 1;
            run.first_error
                .get_or_insert_with(|| format!("status {status}"));
            // An unexpected status keeps the connection usable.
            true
        }
        Err(e) => {
            run.errors += 1;
            run.first_error.get_or_insert(e);
            // The connection is broken or stuck: this client stops.
            false
        }
    }
}

/// Closed loop: `spec.connections` clients each send the next request as soon as the previous
/// one is answered, until the time or the request budget runs out. Measures the maximum rate
/// at that concurrency.
pub async fn closed_loop(
    addr: SocketAddr,
    spec: &LoadSpec,
    make: MakeRequest,
) -> anyhow::Result<LoadRun> {
    let mut senders = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        senders.push(connect(addr).await?);
    }
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut tasks = JoinSet::new();
    for mut sender in senders {
        let (issued, make, max) = (Arc::clone(&issued), Arc::clone(&make), spec.max_requests);
        tasks.spawn(async move {
            let mut run = LoadRun::default();
            while Instant::now() < deadline {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= max {
                    break;
                }
                let sent = Instant::now();
                let outcome = exchange(&mut sender, make(n)).await;
                if !record(&mut run, outcome, sent.elapsed()) {
                    break;
                }
            }
            run
        });
    }
    let mut total = LoadRun::default();
    while let Some(run) = tasks.join_next().await {
        total.merge(run.context("load client panicked")?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// Open loop: requests are scheduled at a fixed `rate` regardless of how fast answers come,
/// spread round-robin over `spec.connections` connections (request `i` is due at
/// `start + i / rate`). Latency counts from the due time, so a server that falls behind shows
/// its queueing delay instead of silently slowing the client (no coordinated omission).
pub async fn open_loop(
    addr: SocketAddr,
    spec: &LoadSpec,
    rate: f64,
    make: MakeRequest,
) -> anyhow::Result<LoadRun> {
    anyhow::ensure!(rate > 0.0, "open-loop rate must be positive");
    let mut senders = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        senders.push(connect(addr).await?);
    }
    let conns = spec.connections as u64;
    let total_due = ((spec.duration.as_secs_f64() * rate) as u64).min(spec.max_requests);
    let started = tokio::time::Instant::now();
    let deadline = started + spec.duration + REQUEST_TIMEOUT;
    let mut tasks = JoinSet::new();
    for (k, mut sender) in senders.into_iter().enumerate() {
        let make = Arc::clone(&make);
        tasks.spawn(async move {
            let mut run = LoadRun::default();
            let mut i = k as u64;
            while i < total_due && tokio::time::Instant::now() < deadline {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                let outcome = exchange(&mut sender, make(i)).await;
                if !record(&mut run, outcome, due.elapsed()) {
                    break;
                }
                i += conns;
            }
            run
        });
    }
    let mut total = LoadRun::default();
    while let Some(run) = tasks.join_next().await {
        total.merge(run.context("load client panicked")?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// The `q`-quantile (0..=1) of `samples` by the nearest-rank method; `None` when empty.
pub fn percentile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

/// The median of `values` (mean of the middle two for an even count); `NaN` when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// A `kB` field (`VmHWM`, `VmRSS`, ...) of a `/proc/PID/status` text, in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// `VmHWM` (peak resident set) and `VmRSS` of process `pid` (`"self"` for this one), in KiB.
pub fn memory_kib(pid: &str) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let hwm = status_kib(&text, "VmHWM").context("no VmHWM in status")?;
    let rss = status_kib(&text, "VmRSS").context("no VmRSS in status")?;
    Ok((hwm, rss))
}

/// CPU time this process has used so far (user + system, every thread), in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s, Linux's fixed `USER_HZ`).
///
/// Divided by the requests of a phase it gives the CPU one request costs, client included. On a
/// shared machine that is steadier than the rate: other processes take time away from a phase,
/// but they do not change what a request costs.
pub fn cpu_seconds() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name may contain spaces and parentheses: the fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .context("no ')' in /proc/self/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), so utime (14) and stime (15) are at 11, 12.
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/self/stat")?
            .parse::<u64>()
            .context("a tick count")? as f64
            / 100.0)
    };
    Ok(tick(11)? + tick(12)?)
}

/// `nproc` and `/proc/loadavg`, for the results header (the machine is shared and noisy).
pub fn machine_state() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!("nproc={cpus} loadavg={}", load.trim())
}

/// Per-round figures for a results table: `0.146, 0.142, 0.148`.
pub fn listed(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_rounds_each_figure() {
        assert_eq!(listed(&[0.1456, 0.2], 3), "0.146, 0.200");
        assert_eq!(listed(&[], 1), "");
    }

    #[test]
    fn cpu_seconds_grow_with_work() {
        let before = cpu_seconds().expect("reads /proc/self/stat");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let used = cpu_seconds().expect("reads /proc/self/stat") - before;
        assert!(used >= 0.1, "300 ms of spinning counted as {used} s");
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&mut v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&mut v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&mut v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&mut [], 0.5), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn reads_kib_fields_of_proc_status() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t  4321 kB\nVmRSS:\t  1234 kB\n";
        assert_eq!(status_kib(text, "VmHWM"), Some(4321));
        assert_eq!(status_kib(text, "VmRSS"), Some(1234));
        assert_eq!(status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn own_memory_is_readable() {
        let (hwm, rss) = memory_kib("self").expect("linux /proc");
        assert!(hwm >= rss && rss > 0);
    }
}
