//! `toggl-connect runs list | show | retry | cancel`: automation runs and their step history.

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use toggl_connect_automation::{cancel_run, list_runs, retry_run, show_run};
use toggl_connect_store::{JobFilter, JobStatus, Store, StoreOptions};

use crate::config;
use crate::output::{Format, write_records};

/// `runs` subcommands.
#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: RunsCommand,
    /// Store URL (default: [serve].store of the config).
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// Configuration file (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List rule steps (jobs), newest first.
    #[command(after_help = "Example:\n  toggl-connect runs list --status dead")]
    List {
        /// Only this status: pending, running, succeeded, dead, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show a run step by step: requests made, statuses, errors, waits.
    #[command(after_help = "Example:\n  toggl-connect runs show 17")]
    Show {
        /// A job id from `runs list`.
        id: i64,
    },
    /// Put a dead step back in the queue.
    #[command(after_help = "Example:\n  toggl-connect runs retry 17")]
    Retry {
        /// The job id.
        id: i64,
    },
    /// Cancel a step that has not finished.
    #[command(after_help = "Example:\n  toggl-connect runs cancel 17")]
    Cancel {
        /// The job id.
        id: i64,
    },
}

/// Runs a `runs` subcommand.
pub fn run(args: RunsArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let loaded = config::load(args.config.as_deref())?;
    let url = args.store.unwrap_or(loaded.config.serve.store);
    super::runtime()?.block_on(async {
        let store = Store::open(&url, StoreOptions::default())
            .await
            .with_context(|| format!("opening store {}", super::serve::redact_url(&url)))?;
        match args.command {
            RunsCommand::List { status, rule, limit, format } => {
                let status = match status.as_deref() {
                    None => None,
                    Some(s) => Some(JobStatus::parse(s).with_context(|| {
                        format!("unknown status {s:?} (pending, running, succeeded, dead, cancelled)")
                    })?),
                };
                let steps = list_runs(&store, JobFilter { status, rule, limit: Some(limit), ..JobFilter::default() }).await?;
                let records: Vec<_> = steps
                    .iter()
                    .map(|s| {
                        json!({"job": s.job_id, "event": s.event_row_id, "rule": s.rule, "step": format!("{} {}", s.step_index, s.step_name),
                               "status": s.status, "attempts": s.attempts, "not_before": s.not_before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})
                        .as_object()
                        .cloned()
                        .unwrap_or_default()
                    })
                    .collect();
                write_records(out, format, &records)?;
            }
            RunsCommand::Show { id } => {
                let Some(detail) = show_run(&store, id).await? else { bail!("no run step with job id {id}") };
                serde_json::to_writer_pretty(&mut *out, &detail)?;
                writeln!(out)?;
            }
            RunsCommand::Retry { id } => {
                retry_run(&store, id).await?;
                writeln!(out, "job {id} queued again")?;
            }
            RunsCommand::Cancel { id } => {
                cancel_run(&store, id).await?;
                writeln!(out, "job {id} cancelled")?;
            }
        }
        Ok(0)
    })
}
