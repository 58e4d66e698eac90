//! `toggl-connect events list | show | replay`: what the store holds.

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use toggl_connect_store::{EventFilter, EventSource, NewEvent, Store, StoreOptions, StoredEvent};

use crate::config;
use crate::output::{Format, write_records};

/// `events` subcommands.
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: EventsCommand,
    /// Store URL (default: [serve].store of the config, else sqlite://toggl-connect.db).
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// Configuration file (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List stored events, oldest first.
    #[command(
        after_help = "Example:\n  toggl-connect events list --trigger time_entry_started --since 2026-11-01T00:00:00Z --format ndjson"
    )]
    List {
        /// Only events that fired this trigger (derived ones included: time_entry_started).
        #[arg(long)]
        trigger: Option<String>,
        /// Only events received at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events with a row id above this (for paging).
        #[arg(long)]
        after: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one stored event with its whole envelope.
    #[command(after_help = "Example:\n  toggl-connect events show 42")]
    Show {
        /// The event's row id (from `events list`).
        id: i64,
    },
    /// Store an event again as a replay, so its rules run again.
    #[command(after_help = "Example:\n  toggl-connect events replay 42")]
    Replay {
        /// The event's row id.
        id: i64,
    },
}

fn summary(e: &StoredEvent) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(e.id));
    m.insert(
        "received_at".into(),
        json!(
            e.received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    );
    m.insert("trigger".into(), json!(e.trigger));
    m.insert("entity_id".into(), json!(e.entity_id));
    m.insert("workspace_id".into(), json!(e.workspace_id));
    m.insert("event_id".into(), json!(e.event_id));
    m.insert("source".into(), json!(e.source.as_str()));
    m
}

/// Runs an `events` subcommand.
pub fn run(args: EventsArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let loaded = config::load(args.config.as_deref())?;
    let url = args
        .store
        .unwrap_or_else(|| loaded.config.serve.store.clone());
    super::runtime()?.block_on(async {
        let store = Store::open(&url, StoreOptions::default())
            .await
            .with_context(|| format!("opening store {}", super::serve::redact_url(&url)))?;
        match args.command {
            EventsCommand::List {
                trigger,
                since,
                after,
                limit,
                format,
            } => {
                let events = store
                    .list_events(EventFilter {
                        trigger,
                        since,
                        until: None,
                        after_id: after,
                        limit: Some(limit),
                    })
                    .await?;
                let records: Vec<_> = events.iter().map(summary).collect();
                write_records(out, format, &records)?;
            }
            EventsCommand::Show { id } => {
                let Some(e) = store.get_event(id).await? else {
                    bail!("no event with id {id}")
                };
                let mut m = summary(&e);
                m.insert("entity".into(), json!(e.entity));
                m.insert("action".into(), json!(e.action));
                m.insert("dedupe_key".into(), json!(e.dedupe_key));
                let envelope: Value = serde_json::from_str(&e.envelope)
                    .unwrap_or_else(|_| Value::String(e.envelope.clone()));
                // The definition's webhook payload mapping: the entity read through its fields' selectors.
                let connector = toggl_connect_definition::Connector::builtin();
                if let (Some(resource), Some(payload)) = (
                    connector.webhook_resource(&e.entity, &e.action),
                    envelope.get("payload"),
                ) {
                    m.insert("record".into(), Value::Object(resource.flatten(payload)));
                }
                m.insert("envelope".into(), envelope);
                serde_json::to_writer_pretty(&mut *out, &m)?;
                writeln!(out)?;
            }
            EventsCommand::Replay { id } => {
                let Some(e) = store.get_event(id).await? else {
                    bail!("no event with id {id}")
                };
                // Re-dispatch: the configured rules plan jobs for the event's triggers again,
                // stored with the replay in one transaction (a running `serve` picks them up).
                let rules = toggl_connect_automation::RuleSet::parse(
                    &loaded.text,
                    toggl_connect_definition::Connector::builtin(),
                )
                .map_err(|diags| {
                    let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
                    anyhow::anyhow!("invalid rules, nothing replayed:\n{}", lines.join("\n"))
                })?;
                let triggers: Vec<&str> = e.trigger.split_whitespace().collect();
                let envelope: Value = serde_json::from_str(&e.envelope).unwrap_or(Value::Null);
                let jobs = rules.plan(&triggers, &envelope);
                let job_count = jobs.len();
                let replay_key =
                    format!("replay:{}:{}", e.id, chrono::Utc::now().timestamp_micros());
                let outcome = store
                    .insert_event(NewEvent {
                        event_id: e.event_id,
                        subscription_id: e.subscription_id,
                        workspace_id: e.workspace_id,
                        entity: e.entity.clone(),
                        action: e.action.clone(),
                        trigger: e.trigger.clone(),
                        entity_id: e.entity_id,
                        received_at: chrono::Utc::now(),
                        envelope: e.envelope.clone(),
                        source: EventSource::Replay,
                        dedupe_key: Some(replay_key),
                        entity_state: None,
                        jobs,
                    })
                    .await?;
                writeln!(
                    out,
                    "replayed event {id} as event {} with {job_count} rule job(s)",
                    outcome.id
                )?;
            }
        }
        Ok(0)
    })
}
