//! Automations: rules that turn Toggl triggers into actions, run durably from the store within
//! the token's quota.
//!
//! A rule names a trigger (`on`), an optional filter (`when`, see [`filter`]) and steps (`do`):
//! a named action of the connector definition, any definition operation, or `http` (POST the
//! event, signed like Toggl signs its webhooks). Step parameters are templates over the event and
//! earlier steps' results ([`template`]).
//!
//! Invariants:
//! - running code only sees a checked [`RuleSet`]: every trigger, action, operation, parameter,
//!   template and filter was validated against the connector, with line:column diagnostics;
//! - a step that succeeded is never run again, and a create whose outcome is unknown is looked up
//!   before it is sent again ([`worker`]), so no duplicate appears in Toggl;
//! - all work of one token draws on the client's one quota budget; spent quota makes jobs wait
//!   for the reset (rescheduled, not holding a lease).
//!
//! Wiring (what `serve` does):
//!
//! ```no_run
//! # async fn demo(store: toggl_connect_store::Store, client: toggl_connect_client::Client, config_text: &str)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use toggl_connect_automation::{RuleSet, Worker, WorkerConfig, budget_text};
//! use toggl_connect_definition::Connector;
//!
//! let connector = Connector::builtin();
//! let rules = RuleSet::parse(config_text, connector).map_err(|diags| {
//!     diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
//! })?;
//! // The receiver's JobPlanner calls this with the event's triggers and its envelope:
//! let jobs = rules.plan(&["project_created"], &serde_json::json!({"payload": {"id": 1}}));
//! # let _ = jobs;
//! let config = WorkerConfig::default();
//! println!("{}", budget_text(&client, &config));
//! let worker = Worker::new(store, client, Arc::new(connector.clone()), config)?;
//! let wake = worker.notifier(); // `wake.notify_one()` after jobs are stored
//! # let _ = wake;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let handle = worker.run(shutdown.clone());
//! shutdown.cancel();
//! handle.await?;
//! # Ok(()) }
//! ```

pub mod filter;
pub mod lookup;
pub mod planner;
pub mod rules;
pub mod runs;
pub mod template;
pub mod worker;

pub use filter::{Filter, FilterError};
pub use planner::RulesPlanner;
pub use rules::{
    ACTION_PRIORITY, POLL_PRIORITY, RawRule, RawStep, RawTriggers, Rule, RuleDiagnostic, RuleSet,
    RuleSummary, RunPlan, StepSpec, StepTarget, known_triggers, line_col,
};
pub use runs::{
    AttemptView, RunDetail, RunStep, StepHistory, budget_text, cancel_run, list_runs, retry_run,
    show_run,
};
pub use template::{Template, TemplateError};
pub use worker::{
    Backoff, DELIVERY_HEADER, SIGNATURE_HEADER, SecretSource, Worker, WorkerConfig, WorkerError,
    sign,
};
