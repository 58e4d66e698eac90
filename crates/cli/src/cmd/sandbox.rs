//! `toggl-connect sandbox`: a local Toggl-compatible server.
//!
//! Prints exactly one JSON line on stdout once it accepts connections (URLs, credentials, ids),
//! so scripts can `read` it; logs go to stderr. SIGINT/SIGTERM shut it down cleanly (and write
//! `--state` when given).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use toggl_connect_sandbox::{Faults, Plan, Sandbox, SandboxConfig, Seed};

/// Flags of `toggl-connect sandbox`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  toggl-connect sandbox --listen 127.0.0.1:8090 --seed small --plan free --quota-window 60\n\nThe first stdout line is JSON: {\"api_url\", \"webhooks_url\", \"reports_url\", \"api_token\", \"email\", \"password\", \"user_id\", \"workspace_id\", \"organization_id\"}."
)]
pub struct SandboxArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The organization's plan: free, starter, premium or unlimited (decides quota and webhook limits).
    #[arg(long, default_value = "unlimited", value_parser = parse_plan)]
    pub plan: Plan,
    /// Length of the quota window in seconds (3600 like Toggl; shorter to cross a reset quickly in tests).
    #[arg(long = "quota-window", value_name = "SECS", default_value_t = 3600)]
    pub quota_window_secs: u64,
    /// Fixed API token for the admin user (default: derived from --seed-value).
    #[arg(long, env = "TOGGL_SANDBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Demo data on a fresh start: none or small.
    #[arg(long, default_value = "none", value_parser = parse_seed)]
    pub seed: Seed,
    /// Extra time entries to create on a fresh start (e.g. 100000 for benchmarks).
    #[arg(long, default_value_t = 0)]
    pub seed_entries: usize,
    /// Seed of the deterministic generator (same value, same data and tokens).
    #[arg(long, default_value_t = 1)]
    pub seed_value: u64,
    /// Keep the state in this file across restarts.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Share of requests answered with a 5xx (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub fault_5xx_share: f64,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// Share of webhook deliveries dropped (then retried) (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub fault_webhook_drop_share: f64,
    /// Delay added to every webhook delivery, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub fault_webhook_delay_ms: u64,
    /// Turn off the ~1 request/second leaky bucket (429).
    #[arg(long)]
    pub no_rate_limit: bool,
}

fn parse_plan(s: &str) -> Result<Plan, String> {
    s.parse()
}

fn parse_seed(s: &str) -> Result<Seed, String> {
    s.parse()
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

impl SandboxArgs {
    /// The library configuration these flags describe.
    pub fn config(&self) -> SandboxConfig {
        SandboxConfig {
            listen: self.listen,
            plan: self.plan,
            quota_window: Duration::from_secs(self.quota_window_secs.max(1)),
            api_token: self.token.clone(),
            seed: self.seed,
            seed_entries: self.seed_entries,
            seed_value: self.seed_value,
            state_file: self.state.clone(),
            faults: Faults {
                share_5xx: self.fault_5xx_share,
                latency_ms: self.fault_latency_ms,
                webhook_drop_share: self.fault_webhook_drop_share,
                webhook_delay_ms: self.fault_webhook_delay_ms,
            },
            rate_limit: !self.no_rate_limit,
        }
    }
}

/// Runs the sandbox until SIGINT or SIGTERM.
pub fn run(args: SandboxArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    super::runtime()?.block_on(async {
        let handle = Sandbox::start(args.config())
            .await
            .context("starting the sandbox")?;
        serde_json::to_writer(&mut *out, handle.facts())?;
        writeln!(out)?;
        out.flush()?;
        super::shutdown_signal().await;
        tracing::info!("shutting down");
        handle.shutdown().await.context("stopping the sandbox")?;
        Ok(0)
    })
}
