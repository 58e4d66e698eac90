//! Configuration of a sandbox: plain data, no CLI parsing.
//!
//! Every field maps 1:1 to a flag of `toggl-connect sandbox` (named in each field's doc), so the
//! CLI only copies values over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The Toggl plan of the sandbox organization. It decides the hourly quota and webhook limits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// Free: 30 org-scoped requests per user and organization per window; 1 webhook x 3 filters.
    Free,
    /// Starter: 240 org-scoped requests per window; 2 webhooks x 6 filters.
    Starter,
    /// Premium: 600 org-scoped requests per window; 3 webhooks x 12 filters.
    Premium,
    /// Enterprise-like: quota counted (headers stay meaningful) but never enforced.
    #[default]
    Unlimited,
}

impl Plan {
    /// Org-scoped requests per user and organization per quota window.
    ///
    /// For [`Plan::Unlimited`] this is a nominal total used only for the headers: the sandbox
    /// never answers 402 on that plan (the real Enterprise total is "custom").
    pub fn org_quota(self) -> u32 {
        match self {
            Plan::Free => 30,
            Plan::Starter => 240,
            Plan::Premium => 600,
            Plan::Unlimited => UNLIMITED_NOMINAL_TOTAL,
        }
    }

    /// User-scoped requests (`/me...` and other paths not tied to a workspace) per window.
    pub fn user_quota(self) -> u32 {
        match self {
            Plan::Unlimited => UNLIMITED_NOMINAL_TOTAL,
            _ => 30,
        }
    }

    /// Whether running out of quota answers 402.
    pub fn enforces_quota(self) -> bool {
        !matches!(self, Plan::Unlimited)
    }

    /// `(max_webhooks, max_events_per_webhook)` per workspace (Toggl KB, since Sep 2025).
    pub fn webhook_limits(self) -> (u32, u32) {
        match self {
            Plan::Free => (1, 3),
            Plan::Starter => (2, 6),
            Plan::Premium => (3, 12),
            // Enterprise is "custom"; generous but finite so limit handling stays testable.
            Plan::Unlimited => (10, 50),
        }
    }

    /// Whether the plan is paid (workspace `premium`, paid-only features).
    pub fn is_paid(self) -> bool {
        !matches!(self, Plan::Free)
    }

    /// The plan name as Toggl shows it (`pricing_plan_name`).
    pub fn display_name(self) -> &'static str {
        match self {
            Plan::Free => "Free",
            Plan::Starter => "Starter",
            Plan::Premium => "Premium",
            Plan::Unlimited => "Enterprise",
        }
    }
}

impl std::str::FromStr for Plan {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "free" => Ok(Plan::Free),
            "starter" => Ok(Plan::Starter),
            "premium" => Ok(Plan::Premium),
            "unlimited" | "enterprise" => Ok(Plan::Unlimited),
            other => Err(format!(
                "unknown plan {other:?} (expected free, starter, premium or unlimited)"
            )),
        }
    }
}

/// Header totals for [`Plan::Unlimited`]; never enforced.
const UNLIMITED_NOMINAL_TOTAL: u32 = 1_000_000;

/// Which demo data to create on a fresh start (ignored when a state file is loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seed {
    /// Only what every sandbox has: one organization, one workspace, an admin and a member.
    #[default]
    None,
    /// A few workspaces, projects, clients, tags, tasks and time entries (one running).
    Small,
}

impl std::str::FromStr for Seed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Seed::None),
            "small" => Ok(Seed::Small),
            other => Err(format!("unknown seed {other:?} (expected none or small)")),
        }
    }
}

/// Fault injection. All zero (the default) means a well-behaved server.
///
/// `share_5xx` and `latency_ms` act in the HTTP middleware of every API (Track, Webhooks,
/// Reports) before authentication, like a flaky proxy in front of Toggl: a faulted request never
/// reaches a handler, so it changes nothing and does not count against the quota.
/// `webhook_drop_share` and `webhook_delay_ms` are handed to the webhook hub, which applies them
/// to deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Share of requests (0..=1) answered with a 500, 502 or 503 (`--fault-5xx-share`).
    pub share_5xx: f64,
    /// Latency added to every request, in milliseconds (`--fault-latency-ms`).
    pub latency_ms: u64,
    /// Share of webhook deliveries (0..=1) dropped as if the network lost them
    /// (`--fault-webhook-drop-share`).
    pub webhook_drop_share: f64,
    /// Delay added before each webhook delivery, in milliseconds (`--fault-webhook-delay-ms`).
    pub webhook_delay_ms: u64,
}

/// Everything a sandbox needs to start. `Debug` redacts the token.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Address to bind (`--listen`); default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// Plan of the organization (`--plan`); default [`Plan::Unlimited`].
    pub plan: Plan,
    /// Length of the sliding quota window (`--quota-window SECS`); default 3600 s.
    pub quota_window: Duration,
    /// Fixed API token of the admin user (`--token`); generated from `seed_value` when `None`.
    pub api_token: Option<String>,
    /// Demo data on a fresh start (`--seed small`).
    pub seed: Seed,
    /// Extra time entries to create for the admin user on a fresh start (`--seed-entries N`).
    pub seed_entries: usize,
    /// Seed of the deterministic generator for tokens, passwords and demo data (`--seed-value N`).
    pub seed_value: u64,
    /// File to load the state from at start and to save it to at shutdown (`--state FILE`).
    pub state_file: Option<PathBuf>,
    /// Fault injection (`--fault-*` flags).
    pub faults: Faults,
    /// Leaky bucket per token answering 429 (`--no-rate-limit` turns it off); default on.
    pub rate_limit: bool,
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("listen", &self.listen)
            .field("plan", &self.plan)
            .field("quota_window", &self.quota_window)
            .field("api_token", &self.api_token.as_ref().map(|_| "[redacted]"))
            .field("seed", &self.seed)
            .field("seed_entries", &self.seed_entries)
            .field("seed_value", &self.seed_value)
            .field("state_file", &self.state_file)
            .field("faults", &self.faults)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            plan: Plan::default(),
            quota_window: Duration::from_secs(3600),
            api_token: None,
            seed: Seed::default(),
            seed_entries: 0,
            seed_value: 0,
            state_file: None,
            faults: Faults::default(),
            rate_limit: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_token() {
        let c = SandboxConfig {
            api_token: Some("secret-token".into()),
            ..SandboxConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret-token"));
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn plans_parse_and_map_to_limits() {
        assert_eq!("Free".parse::<Plan>(), Ok(Plan::Free));
        assert_eq!("enterprise".parse::<Plan>(), Ok(Plan::Unlimited));
        assert!("gold".parse::<Plan>().is_err());
        assert_eq!(Plan::Starter.org_quota(), 240);
        assert_eq!(Plan::Premium.webhook_limits(), (3, 12));
        assert!(!Plan::Unlimited.enforces_quota());
        assert_eq!("small".parse::<Seed>(), Ok(Seed::Small));
    }
}
