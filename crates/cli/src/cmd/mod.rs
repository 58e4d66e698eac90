//! The command tree. One file per command; each writes data to an injected writer.

mod action;
mod call;
mod definition;
mod events;
mod query;
mod rules;
mod runs;
mod sandbox;
pub mod serve;
mod webhooks;

use std::io::Write;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

/// A self-hosted connector runtime for Toggl Track.
///
/// Receive Toggl webhooks, run actions and queries through a declarative connector definition,
/// automate with rules — within Toggl's hourly quota. `toggl-connect serve --sandbox` runs the
/// whole thing against a local Toggl-compatible sandbox, no account needed.
#[derive(Debug, Parser)]
#[command(name = "toggl-connect", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TOGGL_CONNECT_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace); `TOGGL_CONNECT_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local Toggl-compatible server (Track v9, Webhooks v1, Reports v3).
    Sandbox(sandbox::SandboxArgs),
    /// Inspect and replay stored events.
    Events(events::EventsArgs),
    /// Manage Toggl webhook subscriptions.
    Webhooks(webhooks::WebhooksArgs),
    /// Receive (or poll) Toggl events, store them durably, and run rules.
    Serve(serve::ServeArgs),
    /// Check connector definition files, or show the active definition.
    Definition(definition::DefinitionArgs),
    /// List a resource (or read one object) as flat records.
    Query(query::QueryArgs),
    /// Run any operation of the definition (RESOURCE.OPERATION).
    Call(call::CallArgs),
    /// Run a named action of the definition (create-client, start-timer, ...).
    Action(action::ActionArgs),
    /// Check automation rules.
    Rules(rules::RulesArgs),
    /// Automation runs: step-by-step history, retry, cancel.
    Runs(runs::RunsArgs),
}

/// Runs the chosen command; returns the exit code on success.
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<u8> {
    match cli.command {
        Command::Sandbox(args) => sandbox::run(args, out),
        Command::Serve(args) => serve::run(args, out),
        Command::Definition(args) => definition::run(args, out),
        Command::Query(args) => query::run(args, out),
        Command::Call(args) => call::run(args, out),
        Command::Action(args) => action::run(args, out),
        Command::Events(args) => events::run(args, out),
        Command::Webhooks(args) => webhooks::run(args, out),
        Command::Rules(args) => rules::run(args, out),
        Command::Runs(args) => runs::run(args, out),
    }
}

/// A multi-threaded runtime for commands that do I/O.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// A next step for errors that have an obvious one.
pub fn hint_for(err: &anyhow::Error) -> Option<&'static str> {
    let text = format!("{err:#}");
    if text.contains("Address already in use") {
        return Some("pick another port with --listen 127.0.0.1:0");
    }
    None
}
