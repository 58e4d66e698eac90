//! `toggl-connect rules check`: validate the automation rules before anything runs.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use toggl_connect_automation::RuleSet;
use toggl_connect_definition::Connector;

use crate::config;
use crate::output::{Format, write_records};

/// `rules` subcommands.
#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check every rule of the config file: triggers, actions, parameters, templates, filters.
    ///
    /// Prints `FILE:LINE:COLUMN: message` for each problem and exits 1 when there are any.
    #[command(
        after_help = "Example:\n  toggl-connect rules check --config examples/toggl-connect.toml"
    )]
    Check {
        /// Configuration file (TOML) holding `[[rules]]`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also require the environment variables named by `http` steps' `secret_env`.
        #[arg(long)]
        secrets: bool,
        /// Output format of the rule summary.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Runs a `rules` subcommand.
pub fn run(args: RulesArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let RulesCommand::Check {
        config,
        secrets,
        format,
    } = args.command;
    let loaded = config::load(config.as_deref())?;
    let file = loaded
        .path
        .as_ref()
        .map_or_else(|| "config".to_owned(), |p| p.display().to_string());
    let rules = match RuleSet::parse(&loaded.text, Connector::builtin()) {
        Ok(r) => r,
        Err(diags) => {
            for d in &diags {
                eprintln!("{file}:{d}");
            }
            eprintln!("{} problem(s) in the rules", diags.len());
            return Ok(crate::EXIT_PROBLEMS);
        }
    };
    if secrets {
        let missing = rules.check_secrets(|k| std::env::var(k).ok());
        if !missing.is_empty() {
            for d in &missing {
                eprintln!("{file}:{d}");
            }
            return Ok(crate::EXIT_PROBLEMS);
        }
    }
    let records: Vec<_> = rules
        .summary()
        .into_iter()
        .map(|r| {
            json!({"name": r.name, "on": r.on.join(" "), "when": r.when, "steps": r.steps.join(" -> ")})
                .as_object()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    write_records(out, format, &records)?;
    eprintln!("{} rule(s) ok", records.len());
    Ok(0)
}
