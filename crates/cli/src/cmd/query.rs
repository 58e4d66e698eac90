//! `toggl-connect query RESOURCE`: list a resource (or read one with `--id`) as flat records.

use std::io::Write;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;
use toggl_connect_definition::{Operation, RenderError};

use crate::cmd::call::{
    ApiArgs, PrintArgs, Reported, connect, default_workspace, execute, exit_code, fail,
    load_connector, parse_param, typed_params,
};

/// Run `toggl-connect query`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  toggl-connect query projects --format csv\n  toggl-connect query time_entries -p start_date=2025-01-01 -p end_date=2025-02-01 --format ndjson\n  toggl-connect query clients --id 4242 --workspace 1234567 --raw"
)]
pub struct QueryArgs {
    /// The resource (e.g. `projects`, `time_entries`; `toggl-connect definition show` lists them).
    pub resource: String,
    /// A parameter, as key=value (repeatable); values are converted to the declared type.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Read one object by id instead of listing.
    #[arg(long)]
    pub id: Option<String>,
    /// Workspace id [default: the user's default workspace, when the operation needs one].
    #[arg(long, value_name = "ID")]
    pub workspace: Option<String>,
    #[command(flatten)]
    pub print: PrintArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `query`.
pub fn run(args: QueryArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    exit_code(query(args, out))
}

const WORKSPACE_ID: &str = "workspace_id";

fn pick_operation(
    resource: &toggl_connect_definition::Resource,
    by_id: bool,
) -> Result<&Operation, Reported> {
    let op = if by_id {
        resource.operation("read")
    } else {
        resource
            .operation("list")
            .or_else(|| resource.operation("read"))
    };
    op.ok_or_else(|| {
        fail(
            format!(
                "resource {} has no {} operation",
                resource.name,
                if by_id { "read" } else { "list" }
            ),
            Some(&format!(
                "run one of its operations with `toggl-connect call {}.OPERATION`",
                resource.name
            )),
        )
    })
}

fn query(args: QueryArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let connector = load_connector(&args.api.definitions)?;
    let Some(resource) = connector.resource(&args.resource) else {
        let known: Vec<&str> = connector
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        return Err(fail(
            format!(
                "unknown resource {:?} (known: {})",
                args.resource,
                known.join(", ")
            ),
            None,
        )
        .into());
    };
    let op = pick_operation(resource, args.id.is_some())?;
    let mut pairs = args.params.clone();
    if let Some(id) = &args.id {
        if op.param("id").is_none() {
            return Err(fail(format!("{}.{} takes no id", resource.name, op.name), None).into());
        }
        pairs.push(("id".to_owned(), id.clone()));
    }
    if let Some(w) = &args.workspace {
        if op.param(WORKSPACE_ID).is_none() {
            return Err(fail(
                format!("{}.{} takes no workspace", resource.name, op.name),
                None,
            )
            .into());
        }
        pairs.retain(|(k, _)| k != WORKSPACE_ID);
        pairs.push((WORKSPACE_ID.to_owned(), w.clone()));
    }
    let mut params = typed_params(op, &pairs)?;
    // Check everything but the workspace before any request: a missing parameter costs nothing.
    let needs_workspace = match op.render(&params) {
        Ok(_) => false,
        Err(RenderError::MissingRequired { names }) => {
            let others: Vec<String> = names
                .iter()
                .filter(|n| *n != WORKSPACE_ID)
                .cloned()
                .collect();
            if !others.is_empty() {
                return Err(fail(RenderError::MissingRequired { names: others }, None).into());
            }
            true
        }
        Err(e) => return Err(fail(e, None).into()),
    };
    let client = connect(&args.api)?;
    let rt = crate::cmd::runtime().context("starting the runtime")?;
    rt.block_on(async {
        if needs_workspace {
            let wid = default_workspace(&client).await?;
            tracing::debug!(workspace_id = wid, "using the default workspace");
            params.insert(WORKSPACE_ID, Value::from(wid));
        }
        let req = op.render(&params).map_err(|e| fail(e, None))?;
        execute(&client, resource, op, &params, &req, &args.print, out).await
    })
}
