//! `toggl-connect serve`: receive (or poll) Toggl events, store them durably, run rules.
//!
//! Start-up order matters: the listener is bound first (its address is the callback URL in
//! sandbox mode), then the store is opened, the receiver starts answering, and only then are
//! subscriptions created — Toggl pings the callback during the create call.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;
use toggl_connect_automation::{RuleSet, RulesPlanner, Worker, WorkerConfig, budget_text};
use toggl_connect_client::{ApiRequest, Client};
use toggl_connect_definition::Connector;
use toggl_connect_store::{EventSource, Store};
use toggl_connect_triggers::leader::{self, LeaseConfig};
use toggl_connect_triggers::poll::{PollPlan, Poller, user_quota_total};
use toggl_connect_triggers::receiver::{Receiver, ReceiverConfig, SecretRing, router};
use toggl_connect_triggers::subscriptions::{
    PendingValidations, SubscriptionManager, all_triggers,
};

use crate::config::{self, Config};

/// The leader lease under which one instance repairs subscriptions and catches up.
const SUBSCRIPTIONS_LEASE: &str = "subscriptions";

/// Flags of `toggl-connect serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  toggl-connect serve --sandbox\n  TOGGL_API_TOKEN=... toggl-connect serve --config toggl-connect.toml --public-url https://hooks.example.com\n  TOGGL_API_TOKEN=... toggl-connect serve --poll 600"
)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides [serve].listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Store URL: sqlite://PATH or postgres://... (overrides [serve].store).
    #[arg(long)]
    pub store: Option<String>,
    /// Public base URL Toggl can reach; enables subscription management.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Poll every SECS seconds instead of receiving webhooks.
    #[arg(long, value_name = "SECS")]
    pub poll: Option<u64>,
    /// Run against a local sandbox started in this process (no Toggl account needed).
    #[arg(long)]
    pub sandbox: bool,
    /// The sandbox's plan (with --sandbox): free, starter, premium or unlimited.
    #[arg(long, default_value = "unlimited", requires = "sandbox")]
    pub sandbox_plan: String,
}

/// Everything `serve` runs.
pub struct Running {
    /// Set to true to stop intake, polling and checks.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Stops the automation worker (it finishes or hands back its running jobs).
    pub worker_stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _sandbox: Option<toggl_connect_sandbox::SandboxHandle>,
}

/// Runs until SIGINT/SIGTERM.
pub fn run(args: ServeArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let loaded = config::load(args.config.as_deref())?;
    super::runtime()?.block_on(async {
        let running = start(args, loaded, out).await?;
        super::shutdown_signal().await;
        tracing::info!("shutting down: intake stops, in-flight deliveries finish");
        let _ = running.shutdown.send(true);
        running.worker_stop.cancel();
        for t in running.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        Ok(0)
    })
}

/// Longest in-call wait for a quota reset in `serve` (see where the client is built).
const SERVE_MAX_QUOTA_WAIT: Duration = Duration::from_secs(5);

/// Starts everything and prints where things are.
pub async fn start(
    args: ServeArgs,
    loaded: config::Loaded,
    out: &mut dyn Write,
) -> anyhow::Result<Running> {
    let mut cfg = loaded.config;
    // Rules are checked before anything starts: an invalid rule set refuses to serve.
    let connector = Connector::builtin();
    let rules = Arc::new(RuleSet::parse(&loaded.text, connector).map_err(|diags| {
        let file = loaded
            .path
            .as_ref()
            .map_or_else(|| "config".to_owned(), |p| p.display().to_string());
        let lines: Vec<String> = diags.iter().map(|d| format!("{file}:{d}")).collect();
        anyhow::anyhow!("invalid rules, not starting:\n{}", lines.join("\n"))
    })?);
    let missing_secrets = rules.check_secrets(|k| std::env::var(k).ok());
    if !missing_secrets.is_empty() {
        let lines: Vec<String> = missing_secrets.iter().map(ToString::to_string).collect();
        bail!(
            "rules need secrets that are not set, not starting:\n{}",
            lines.join("\n")
        );
    }
    if let Some(l) = &args.listen {
        cfg.serve.listen.clone_from(l);
    }
    if let Some(s) = &args.store {
        cfg.serve.store.clone_from(s);
    }
    if let Some(p) = &args.public_url {
        cfg.serve.public_url = Some(p.clone());
    }
    if let Some(p) = args.poll {
        cfg.serve.poll_interval_secs = Some(p);
    }
    if cfg.serve.triggers.is_empty() {
        // Everything there is; when polling, everything that can be polled.
        cfg.serve.triggers = all_triggers();
        if cfg.serve.poll_interval_secs.is_some() {
            cfg.serve.triggers = catchable(&cfg.serve.triggers);
        }
    }

    let listener = tokio::net::TcpListener::bind(&cfg.serve.listen)
        .await
        .with_context(|| format!("binding {}", cfg.serve.listen))?;
    let addr = listener.local_addr()?;
    // `--listen 127.0.0.1:0 --public-url http://127.0.0.1:0`: the public URL is our own port.
    if let Some(p) = cfg.serve.public_url.as_mut() {
        if let Some(stripped) = p.trim_end_matches('/').strip_suffix(":0") {
            *p = format!("{stripped}:{}", addr.port());
        }
    }

    // Sandbox mode: an in-process Toggl, and we are its public URL.
    let mut sandbox = None;
    let (api_url, token) = if args.sandbox {
        let plan = args
            .sandbox_plan
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let handle = toggl_connect_sandbox::Sandbox::start(toggl_connect_sandbox::SandboxConfig {
            plan,
            seed: toggl_connect_sandbox::Seed::Small,
            ..toggl_connect_sandbox::SandboxConfig::default()
        })
        .await
        .context("starting the sandbox")?;
        let facts = handle.facts().clone();
        if cfg.serve.public_url.is_none() {
            cfg.serve.public_url = Some(format!("http://{addr}"));
        }
        if args.store.is_none() && cfg.serve.store == config::ServeConfig::default().store {
            cfg.serve.store = "sqlite://toggl-connect-sandbox.db".into();
        }
        if cfg.serve.workspaces.is_empty() {
            cfg.serve.workspaces = vec![facts.workspace_id];
        }
        sandbox = Some(handle);
        (facts.api_url, facts.api_token)
    } else {
        let token = config::api_token().context(
            "TOGGL_API_TOKEN is not set (find it at the bottom of your Toggl profile page)",
        )?;
        (cfg.toggl.api_url.clone(), token)
    };

    let store = Store::open(&cfg.serve.store, cfg.store.options())
        .await
        .with_context(|| format!("opening store {}", redact_url(&cfg.serve.store)))?;
    // Serve never sleeps through an hourly reset inside a call: a rule step whose quota is spent
    // is rescheduled by the worker (without holding its lease), and a poll cycle is skipped.
    let mut serve_client_config = cfg.toggl.client_config(token, Some(&api_url));
    serve_client_config.max_quota_wait =
        serve_client_config.max_quota_wait.min(SERVE_MAX_QUOTA_WAIT);
    let client = Client::new(serve_client_config)?;

    let secrets = Arc::new(SecretRing::default());
    let validations = Arc::new(PendingValidations::default());
    let receiver_config = ReceiverConfig {
        callback_path: cfg.serve.callback_path.clone(),
        max_body_bytes: cfg.serve.max_body_bytes,
    };
    // The worker runs rule steps; a stored event with jobs wakes it at once.
    let worker_config = WorkerConfig {
        worker_id: toggl_connect_triggers::leader::holder_id(),
        lease: Duration::from_secs(cfg.automation.lease_secs.max(1)),
        concurrency: cfg.automation.concurrency.max(1),
        max_attempts: cfg.automation.max_attempts.max(1),
        ..WorkerConfig::default()
    };
    let budget_line = budget_text(&client, &worker_config);
    let worker = Worker::new(
        store.clone(),
        client.clone(),
        Arc::new(connector.clone()),
        worker_config,
    )?;
    let receiver = Arc::new(
        Receiver::new(store.clone(), Arc::clone(&secrets), receiver_config)
            .with_validations(Arc::clone(&validations))
            .with_planner(Arc::new(RulesPlanner(Arc::clone(&rules))))
            .with_jobs_wake(worker.notifier()),
    );
    let worker_stop = tokio_util::sync::CancellationToken::new();
    let worker_task = worker.run(worker_stop.clone());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = worker_task.await {
            tracing::error!(error = %e, "automation worker stopped");
        }
    })];
    {
        let app = router(Arc::clone(&receiver));
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "receiver stopped");
            }
        }));
    }

    if cfg.serve.workspaces.is_empty() {
        let me = client
            .send(ApiRequest::get("/api/v9/me"))
            .await
            .context("reading /me for the default workspace")?;
        let wid = me
            .body
            .get("default_workspace_id")
            .and_then(Value::as_i64)
            .context("/me has no default_workspace_id")?;
        cfg.serve.workspaces = vec![wid];
    }

    writeln!(out, "toggl-connect serve")?;
    writeln!(
        out,
        "  receiver     http://{addr}{}  (health: /healthz, metrics: /metrics)",
        cfg.serve.callback_path
    )?;
    writeln!(out, "  store        {}", redact_url(&cfg.serve.store))?;
    writeln!(out, "  toggl api    {api_url}")?;
    writeln!(out, "  workspaces   {:?}", cfg.serve.workspaces)?;
    let rule_names: Vec<&str> = rules.rules().iter().map(|r| r.name.as_str()).collect();
    writeln!(
        out,
        "  rules        {}",
        if rule_names.is_empty() {
            "none".to_owned()
        } else {
            rule_names.join(", ")
        }
    )?;

    if let Some(secs) = cfg.serve.poll_interval_secs {
        let plan = PollPlan::new(&cfg.serve.triggers, Duration::from_secs(secs))?;
        let total = user_quota_total(&client)
            .await
            .context("reading /me/quota")?;
        plan.check(total)?;
        writeln!(
            out,
            "  polling      {} entities every {secs} s = {} requests/hour of the user-level quota ({})",
            plan.entities.len(),
            plan.requests_per_hour(),
            total.map_or_else(|| "no limit reported".to_owned(), |t| format!("{t}/hour")),
        )?;
        let poller = Poller::new(
            client.clone(),
            Arc::clone(&receiver),
            plan,
            EventSource::Poll,
        );
        tasks.push(tokio::spawn(poller.run(shutdown_rx.clone())));
    } else if let Some(public) = cfg.serve.public_url.clone() {
        let callback = format!(
            "{}{}",
            public.trim_end_matches('/'),
            cfg.serve.callback_path
        );
        let manager = SubscriptionManager::new(
            client.clone(),
            store.clone(),
            Arc::clone(&secrets),
            Arc::clone(&validations),
            callback.clone(),
            cfg.serve.triggers.clone(),
        )?;
        manager.load_secrets().await?;
        // Several instances may share the store: only the lease holder talks to the Webhooks
        // API (repair, re-validation) and catches up, so they never race on subscriptions or
        // spend the hourly quota several times. Every instance receives deliveries.
        let holder = leader::holder_id();
        let lease = LeaseConfig::new(
            SUBSCRIPTIONS_LEASE,
            holder.clone(),
            Duration::from_secs(cfg.store.leader_lease_secs.max(3)),
        );
        let leads_now = store
            .try_lead(&lease.name, &holder, lease.ttl)
            .await
            .context("taking the leader lease")?;
        let catch_up = (cfg.serve.catch_up && sandbox.is_none())
            .then(|| PollPlan::new(&catchable(&cfg.serve.triggers), Duration::from_secs(3600)))
            .transpose()?;
        // The first term's reports come back here to be printed (and a broken configuration
        // fails the start, as with one instance); later terms (takeovers) only log.
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let mut first_tx = leads_now.then_some(first_tx);
        let workspaces = cfg.serve.workspaces.clone();
        let interval = Duration::from_secs(cfg.serve.recheck_interval_secs.max(1));
        let (m, r, c) = (manager.clone(), Arc::clone(&receiver), client.clone());
        let leading = leader::lead(store.clone(), lease, shutdown_rx.clone(), move |stop| {
            let (m, r, c, workspaces, catch_up) = (
                m.clone(),
                Arc::clone(&r),
                c.clone(),
                workspaces.clone(),
                catch_up.clone(),
            );
            let report_to = first_tx.take();
            async move {
                let mut reports = Vec::new();
                for wid in &workspaces {
                    let ensured = m.ensure(*wid).await;
                    match &ensured {
                        Ok(rep) if !rep.actions.is_empty() => {
                            tracing::warn!(workspace_id = wid, actions = ?rep.actions, "subscription repaired");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(workspace_id = wid, error = %format!("{e:#}"), "subscription check failed");
                        }
                    }
                    reports.push((*wid, ensured));
                }
                let caught = match catch_up {
                    Some(plan) => Some(Poller::new(c, r, plan, EventSource::Catchup).cycle().await),
                    None => None,
                };
                if let Some(tx) = report_to {
                    let _ = tx.send((reports, caught));
                }
                m.recheck_loop(workspaces, interval, stop).await;
            }
        });
        tasks.push(tokio::spawn(async move {
            let _ = leading.await;
        }));
        // Only the leader creates subscriptions: the others learn new secrets from the store.
        tasks.push(tokio::spawn(leader::refresh_secrets(
            manager.clone(),
            Duration::from_secs(5),
            shutdown_rx.clone(),
        )));
        if leads_now {
            let (reports, caught) = first_rx
                .await
                .context("the leader task stopped before subscribing")?;
            for (wid, report) in reports {
                let report = report.with_context(|| format!("subscribing workspace {wid}"))?;
                writeln!(
                    out,
                    "  subscription {} in workspace {wid}: {} filter(s) {:?}{}",
                    report.subscription_id,
                    report.filters.len(),
                    report.filters,
                    if report.actions.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", report.actions.join(", "))
                    },
                )?;
            }
            match caught {
                Some(Ok(r)) if r.baselines > 0 => writeln!(
                    out,
                    "  catch-up     baseline recorded; changes made while stopped will be caught up on the next start"
                )?,
                Some(Ok(r)) => writeln!(
                    out,
                    "  catch-up     {} change(s) missed while stopped stored, {} already known",
                    r.stored, r.duplicates
                )?,
                Some(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "catch-up failed; continuing with webhooks");
                }
                None => {}
            }
        } else {
            writeln!(
                out,
                "  subscription kept by another instance (lease `{SUBSCRIPTIONS_LEASE}`); this one receives, and takes over if it stops"
            )?;
        }
    } else {
        bail!(
            "nothing to receive from: set --public-url (webhooks), --poll SECS, or use --sandbox"
        );
    }
    {
        let policy = retention_policy(&cfg)?;
        let store = store.clone();
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match store.prune(policy).await {
                    Ok(c) => tracing::debug!(events = c.events, jobs = c.jobs, "retention pruned"),
                    Err(e) => tracing::warn!(error = %e, "retention pruning failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    for line in budget_line.lines() {
        writeln!(out, "  {line}")?;
    }
    writeln!(out, "  quota        {}", describe_budget(&client))?;
    if let Some(sb) = &sandbox {
        let f = sb.facts();
        writeln!(out)?;
        writeln!(
            out,
            "Make something happen (sandbox token {}):",
            f.api_token
        )?;
        // `start` is the moment the command runs (the shell's `date`), not the moment this was
        // printed: starting a timer stops the running one at the new one's `start`, and a stop
        // seen without history is told from an edit by `stop` being close to `at`.
        writeln!(
            out,
            "  curl -s -u {}:api_token -H 'Content-Type: application/json' -d '{{\"created_with\":\"curl\",\"workspace_id\":{},\"start\":\"'\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"'\",\"duration\":-1,\"description\":\"hello\"}}' {}/workspaces/{}/time_entries",
            f.api_token, f.workspace_id, f.api_url, f.workspace_id
        )?;
        writeln!(
            out,
            "Then see it: toggl-connect events list --store {}",
            cfg.serve.store
        )?;
    }
    out.flush()?;
    Ok(Running {
        shutdown: shutdown_tx,
        worker_stop,
        tasks,
        _sandbox: sandbox,
    })
}

fn retention_policy(cfg: &Config) -> anyhow::Result<toggl_connect_store::RetentionPolicy> {
    let day = 24 * 3600;
    let events = Duration::from_secs(cfg.retention.events_days.saturating_mul(day));
    if events < toggl_connect_store::MIN_EVENT_RETENTION {
        bail!(
            "[retention] events_days = {} is too short: at least {} (Toggl redelivers for about a week, and a pruned event's dedupe key cannot stop a redelivery)",
            cfg.retention.events_days,
            toggl_connect_store::MIN_EVENT_RETENTION.as_secs() / day
        );
    }
    Ok(toggl_connect_store::RetentionPolicy {
        events_older_than: events,
        finished_jobs_older_than: Duration::from_secs(
            cfg.retention.finished_jobs_days.saturating_mul(day),
        ),
    })
}

/// Catch-up reads only the entities that have `since=` listings.
fn catchable(triggers: &[String]) -> Vec<String> {
    triggers
        .iter()
        .filter(|t| PollPlan::new(std::slice::from_ref(*t), Duration::from_secs(3600)).is_ok())
        .cloned()
        .collect()
}

fn describe_budget(client: &Client) -> String {
    let snaps = client.budget_snapshot();
    if snaps.is_empty() {
        return "no quota reported yet".into();
    }
    snaps
        .iter()
        .map(|s| {
            let remaining = s
                .remaining
                .map_or_else(|| "?".to_owned(), |r| r.to_string());
            let resets = s
                .resets_in
                .map_or_else(String::new, |d| format!(", resets in {} s", d.as_secs()));
            format!("{:?}: {remaining} left{resets}", s.scope)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Hides a password in a store URL (`postgres://user:secret@host` -> `postgres://user:***@host`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((auth, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
