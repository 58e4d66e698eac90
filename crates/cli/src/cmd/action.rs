//! `toggl-connect action NAME`: run a named action of the active definition.

use std::io::Write;

use anyhow::Context as _;
use clap::Args;

use crate::cmd::call::{
    ApiArgs, PrintArgs, connect, execute, exit_code, fail, load_connector, parse_param,
    typed_params,
};

/// Run `toggl-connect action`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  toggl-connect action create-task -p workspace_id=1234567 -p project_id=2001 -p name=\"Write docs\"\n  toggl-connect action start-timer -p workspace_id=1234567 -p start=2025-01-10T09:00:00Z -p description=Focus\n  toggl-connect definition show   # lists the actions and what they need"
)]
pub struct ActionArgs {
    /// The action (e.g. `create-client`, `start-timer`).
    pub name: String,
    /// A parameter, as key=value (repeatable); values are converted to the declared type.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub print: PrintArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `action`.
pub fn run(args: ActionArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    exit_code(action(args, out))
}

fn action(args: ActionArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let connector = load_connector(&args.api.definitions)?;
    let Some(action) = connector.action(&args.name) else {
        let known: Vec<&str> = connector.actions.iter().map(|a| a.name.as_str()).collect();
        return Err(fail(
            format!(
                "unknown action {:?} (known: {})",
                args.name,
                known.join(", ")
            ),
            None,
        )
        .into());
    };
    let (Some(resource), Some(op)) = (
        connector.resource(&action.resource),
        connector.action_operation(action),
    ) else {
        return Err(fail(
            format!(
                "action {} runs {}.{}, which does not exist",
                action.name, action.resource, action.operation
            ),
            None,
        )
        .into());
    };
    let given = typed_params(op, &args.params)?;
    // Render before connecting: a missing or mistyped parameter never costs a request.
    let req = connector
        .render_action(action, &given)
        .map_err(|e| fail(e, None))?;
    let params = action.defaults.merged(&given);
    let client = connect(&args.api)?;
    crate::cmd::runtime()
        .context("starting the runtime")?
        .block_on(execute(
            &client,
            resource,
            op,
            &params,
            &req,
            &args.print,
            out,
        ))
}
