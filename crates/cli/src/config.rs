//! The configuration file (TOML) and its precedence.
//!
//! Built-in defaults < config file (`--config`, `TOGGL_CONNECT_CONFIG`) < environment
//! (`TOGGL_CONNECT_*`, `TOGGL_API_TOKEN`, `TOGGL_API_URL`) < flags. The API token is read from the
//! environment only: a token in a file that gets committed is the most common way tokens leak.

use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use toggl_connect_client::ClientConfig;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach Toggl.
    pub toggl: TogglConfig,
    /// The server (`serve`).
    pub serve: ServeConfig,
    /// How the store is reached (PostgreSQL pool and timeouts, leader lease).
    pub store: StoreConfig,
    /// How long stored data is kept.
    pub retention: RetentionConfig,
    /// How rule steps run.
    pub automation: AutomationConfig,
    /// Automation rules (checked by `rules check`, run by `serve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<toml::Value>,
}

/// `[toggl]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TogglConfig {
    /// Host root of the Toggl API (`TOGGL_API_URL`); a URL ending in `/api/v9` is accepted.
    pub api_url: String,
    /// Minimum spacing between requests of one token, in milliseconds (0 = off). Toggl's leaky
    /// bucket allows about one request per second.
    pub pacing_ms: u64,
    /// Longest wait for an hourly quota reset before a call fails, in seconds.
    pub max_quota_wait_secs: u64,
    /// Time allowed for one request, in seconds.
    pub request_timeout_secs: u64,
}

impl Default for TogglConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.track.toggl.com".into(),
            pacing_ms: 1000,
            max_quota_wait_secs: 900,
            request_timeout_secs: 60,
        }
    }
}

impl TogglConfig {
    /// Client settings for `token` from `[toggl]`: `api_url` (unless `api_url_override` is given),
    /// pacing, quota wait and timeout. Every command that talks to Toggl builds its client here.
    pub fn client_config(&self, token: String, api_url_override: Option<&str>) -> ClientConfig {
        let mut c = ClientConfig::with_token(token)
            .base_url(api_url_override.unwrap_or(&self.api_url).to_owned());
        c.pacing = (self.pacing_ms > 0).then(|| Duration::from_millis(self.pacing_ms));
        c.max_quota_wait = Duration::from_secs(self.max_quota_wait_secs);
        c.request_timeout = Duration::from_secs(self.request_timeout_secs.max(1));
        c
    }
}

/// `[serve]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address the receiver listens on.
    pub listen: String,
    /// Store URL: `sqlite://PATH` or `postgres://...`.
    pub store: String,
    /// The public base URL Toggl reaches this server at; when set, `serve` manages the webhook
    /// subscriptions (`{public_url}{callback_path}`).
    pub public_url: Option<String>,
    /// Path Toggl delivers to.
    pub callback_path: String,
    /// Workspaces to subscribe and poll (default: the user's default workspace).
    pub workspaces: Vec<i64>,
    /// Triggers to receive (default: every trigger).
    pub triggers: Vec<String>,
    /// Seconds between checks that subscriptions are enabled and validated (each check costs 2-3
    /// requests of the organization's hourly quota per workspace).
    pub recheck_interval_secs: u64,
    /// Poll instead of receiving webhooks, every this many seconds (for hosts Toggl cannot reach).
    pub poll_interval_secs: Option<u64>,
    /// On start, fetch what changed while we were down (`since=` queries) and store it as events.
    pub catch_up: bool,
    /// Largest delivery body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            store: "sqlite://toggl-connect.db".into(),
            public_url: None,
            callback_path: "/webhooks/toggl".into(),
            workspaces: Vec::new(),
            triggers: Vec::new(),
            recheck_interval_secs: 900,
            poll_interval_secs: None,
            catch_up: true,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// PostgreSQL: most connections this instance opens. With several instances, keep the sum
    /// below the server's `max_connections`.
    pub pool_size: usize,
    /// PostgreSQL: connections of `pool_size` that store events (each runs group commits).
    /// Unset: a quarter of `pool_size` (1 to 4), at most half this machine's cores. Raise it
    /// when the database runs on cores of its own.
    pub insert_connections: Option<usize>,
    /// PostgreSQL: seconds to connect, and to wait for a free pooled connection, before a
    /// delivery is answered 503 (Toggl redelivers).
    pub connect_timeout_secs: u64,
    /// PostgreSQL: longest a statement may run, in seconds (server-side `statement_timeout`).
    pub statement_timeout_secs: u64,
    /// PostgreSQL: schema holding the tables (created if missing); letters, digits and `_`.
    pub schema: Option<String>,
    /// Seconds the leader lease lasts without renewal: subscription repair and catch-up run on
    /// one instance at a time, and a dead instance's share is taken over after this long.
    pub leader_lease_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            pool_size: 16,
            insert_connections: None,
            connect_timeout_secs: 5,
            statement_timeout_secs: 30,
            schema: None,
            leader_lease_secs: 30,
        }
    }
}

impl StoreConfig {
    /// The store options these settings mean.
    pub fn options(&self) -> toggl_connect_store::StoreOptions {
        toggl_connect_store::StoreOptions {
            pool_size: self.pool_size.max(1),
            insert_connections: self.insert_connections,
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout_secs.max(1)),
            statement_timeout: std::time::Duration::from_secs(self.statement_timeout_secs.max(1)),
            schema: self.schema.clone(),
            ..toggl_connect_store::StoreOptions::default()
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days events are kept (at least 8: Toggl redelivers for about a week, and a pruned event's
    /// dedupe key is gone).
    pub events_days: u64,
    /// Days finished jobs are kept.
    pub finished_jobs_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            events_days: 30,
            finished_jobs_days: 14,
        }
    }
}

/// `[automation]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutomationConfig {
    /// Seconds a worker holds a claimed step before another instance may take it over (renewed
    /// every third of it while the step runs). Short enough that a crashed instance's steps are
    /// taken over quickly, long enough to ride out a slow request.
    pub lease_secs: u64,
    /// Steps run at once by this instance.
    pub concurrency: usize,
    /// Failed attempts (quota waits excluded) before a step is dead-lettered.
    pub max_attempts: u32,
}

impl Default for AutomationConfig {
    fn default() -> Self {
        Self {
            lease_secs: 30,
            concurrency: 4,
            max_attempts: 8,
        }
    }
}

/// A loaded configuration and the text it came from (rule diagnostics point into it).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The merged configuration.
    pub config: Config,
    /// The file, when there was one.
    pub path: Option<PathBuf>,
    /// Its text.
    pub text: String,
}

/// Reads `path` (or `TOGGL_CONNECT_CONFIG`), then applies the environment.
pub fn load(path: Option<&Path>) -> anyhow::Result<Loaded> {
    let env_path = std::env::var_os("TOGGL_CONNECT_CONFIG").map(PathBuf::from);
    let path = path.map(Path::to_path_buf).or(env_path);
    let (mut config, text) = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            let config: Config = toml::from_str(&text).map_err(|e| {
                let (line, col) = e.span().map_or((0, 0), |s| line_col(&text, s.start));
                anyhow::anyhow!("{}:{line}:{col}: {}", p.display(), e.message())
            })?;
            (config, text)
        }
        None => (Config::default(), String::new()),
    };
    apply_env(&mut config)?;
    Ok(Loaded { config, path, text })
}

fn apply_env(config: &mut Config) -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(v) = var("TOGGL_API_URL") {
        config.toggl.api_url = v;
    }
    if let Some(v) = var("TOGGL_CONNECT_STORE") {
        config.serve.store = v;
    }
    if let Some(v) = var("TOGGL_CONNECT_LISTEN") {
        config.serve.listen = v;
    }
    if let Some(v) = var("TOGGL_CONNECT_PUBLIC_URL") {
        config.serve.public_url = Some(v);
    }
    if let Some(v) = var("TOGGL_CONNECT_PACING_MS") {
        config.toggl.pacing_ms = v
            .parse()
            .context("TOGGL_CONNECT_PACING_MS must be a whole number of milliseconds")?;
    }
    Ok(())
}

/// 1-based line and column of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The API token from `TOGGL_API_TOKEN`.
pub fn api_token() -> Option<String> {
    std::env::var("TOGGL_API_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[serve]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").expect("write");
        let err = load(Some(&p)).expect_err("unknown key");
        let text = format!("{err:#}");
        assert!(text.contains("c.toml:3:1"), "{text}");
        assert!(text.contains("lisen"), "{text}");
    }

    #[test]
    fn defaults_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[serve]\nworkspaces = [1, 2]\n").expect("write");
        let loaded = load(Some(&p)).expect("loads");
        assert_eq!(loaded.config.serve.workspaces, vec![1, 2]);
        assert_eq!(loaded.config.serve.callback_path, "/webhooks/toggl");
        assert_eq!(loaded.config.toggl.pacing_ms, 1000);
    }

    #[test]
    fn store_settings_reach_the_store_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[store]\npool_size = 10\ninsert_connections = 3\n").expect("write");
        let options = load(Some(&p)).expect("loads").config.store.options();
        assert_eq!(
            (options.pool_size, options.insert_connections),
            (10, Some(3))
        );
        let unset = StoreConfig::default().options();
        assert_eq!(unset.insert_connections, None, "unset: the store picks");
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
