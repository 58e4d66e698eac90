//! `toggl-connect call RESOURCE.OPERATION`: run any operation of the active definition.
//!
//! Also home of what `query`, `call` and `action` share: the connection options, the active
//! definition, `-p key=value` parsing, running a rendered request, and reporting a create whose
//! outcome is unknown.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;
use toggl_connect_client::{ApiRequest, Client, ClientError, OperationOutput};
use toggl_connect_definition::{Connector, Operation, Params, RenderedRequest, Resource};

use crate::config;
use crate::output::{self, Format};
use crate::{EXIT_ERROR, EXIT_PROBLEMS};

/// How to reach Toggl and which definition to use (shared by `query`, `call` and `action`).
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Toggl API host root (a URL ending in /api/v9 is accepted) [default: from the config file,
    /// else https://api.track.toggl.com].
    #[arg(long, env = "TOGGL_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// Use these definition files (a service file plus resources files, or one combined file)
    /// instead of the built-in definition.
    #[arg(long = "definition", value_name = "FILE", num_args = 1..)]
    pub definitions: Vec<PathBuf>,
    /// Send requests back to back (by default requests start at most once per second, as
    /// Toggl's rate limit allows).
    #[arg(long)]
    pub no_pacing: bool,
}

/// How results are printed (shared by `query`, `call` and `action`).
#[derive(Debug, Args)]
pub struct PrintArgs {
    /// Output format of the flat records.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print the response JSON as Toggl sent it instead of flat records.
    #[arg(long)]
    pub raw: bool,
}

/// `-p key=value`.
pub fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// Run `toggl-connect call`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  toggl-connect call clients.create -p workspace_id=1234567 -p name=Acme\n  toggl-connect call time_entries.current --raw\n  toggl-connect definition show   # lists every RESOURCE.OPERATION and its parameters"
)]
pub struct CallArgs {
    /// The operation to run, as RESOURCE.OPERATION (e.g. `projects.create`).
    #[arg(value_name = "RESOURCE.OPERATION")]
    pub target: String,
    /// A parameter, as key=value (repeatable); values are converted to the declared type.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub print: PrintArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// A failure already explained on stderr; the command exits with `code`.
#[derive(Debug)]
pub struct Reported {
    /// The exit code.
    pub code: u8,
}

/// Prints `error: ...` (and a hint) on stderr and returns the error exit code.
pub fn fail(message: impl std::fmt::Display, hint: Option<&str>) -> Reported {
    eprintln!("error: {message}");
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    Reported { code: EXIT_ERROR }
}

/// The active definition: the built-in one, or the user's files (warnings on stderr, still used).
pub fn load_connector(paths: &[PathBuf]) -> Result<Connector, Reported> {
    if paths.is_empty() {
        return Ok(Connector::builtin().clone());
    }
    match Connector::load_files(paths) {
        Ok(compiled) => {
            if !compiled.diagnostics.is_empty() {
                eprintln!(
                    "warning: the definition has {} warning(s); `toggl-connect definition lint` shows them with fixes",
                    compiled.diagnostics.len()
                );
            }
            Ok(compiled.connector)
        }
        Err(e) => {
            for d in e.diagnostics() {
                eprintln!("{d}");
            }
            Err(fail(
                format!("{:#}", anyhow::Error::new(e)),
                Some(
                    "run `toggl-connect definition lint FILE...` to see every problem with its fix",
                ),
            ))
        }
    }
}

/// A client for the chosen API URL with the token from `TOGGL_API_TOKEN`.
pub fn connect(api: &ApiArgs) -> Result<Client, Reported> {
    let loaded = config::load(None).map_err(|e| fail(format!("{e:#}"), None))?;
    let Some(token) = config::api_token() else {
        return Err(fail(
            "TOGGL_API_TOKEN is not set",
            Some(
                "export TOGGL_API_TOKEN=... (find the token at the bottom of your Toggl profile page)",
            ),
        ));
    };
    let mut cfg = loaded
        .config
        .toggl
        .client_config(token, api.api_url.as_deref());
    if api.no_pacing {
        cfg.pacing = None;
    }
    Client::new(cfg).map_err(|e| fail(e, None))
}

/// Turns `-p` pairs into typed values for `op` (a clear error for `workspace_id=abc`).
pub fn typed_params(op: &Operation, pairs: &[(String, String)]) -> Result<Params, Reported> {
    Params::from_text_pairs(pairs, &op.params).map_err(|e| fail(e, None))
}

/// The user's default workspace (`GET /api/v9/me`), for operations that need `workspace_id`.
pub async fn default_workspace(client: &Client) -> Result<i64, Reported> {
    let me = client
        .send(ApiRequest::get("/api/v9/me"))
        .await
        .map_err(|e| fail(format!("cannot read the default workspace: {e}"), None))?;
    me.body
        .get("default_workspace_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            fail(
                "the user has no default workspace",
                Some("pass --workspace ID"),
            )
        })
}

/// Sends a rendered request. A create whose outcome is unknown is checked with the operation's
/// lookup when it declares one.
pub async fn execute(
    client: &Client,
    resource: &Resource,
    op: &Operation,
    params: &Params,
    req: &RenderedRequest,
    print: &PrintArgs,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    match client.run_operation(req).await {
        Ok(output) => {
            print_output(out, resource, req.method.is_write(), &output, print)?;
            Ok(0)
        }
        Err(ClientError::OutcomeUnknown {
            method,
            path,
            reason,
        }) => {
            eprintln!(
                "warning: the outcome of {method} {path} is unknown ({reason}): the request may have been applied"
            );
            unknown_outcome(client, resource, op, params, print, out).await
        }
        Err(e) => {
            let hint = match &e {
                ClientError::QuotaExhausted { .. } => Some(
                    "wait for the reset, or work in a workspace of another organization".to_owned(),
                ),
                ClientError::NotFound { .. } => Some(format!(
                    "check the ids with `toggl-connect query {}`",
                    resource.name
                )),
                _ => None,
            };
            Ok(fail(e, hint.as_deref()).code)
        }
    }
}

async fn unknown_outcome(
    client: &Client,
    resource: &Resource,
    op: &Operation,
    params: &Params,
    print: &PrintArgs,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let Some(lookup) = &op.lookup else {
        eprintln!(
            "hint: check with `toggl-connect query {}` whether it exists before running it again",
            resource.name
        );
        return Ok(EXIT_ERROR);
    };
    // The lookup sees the values the create was sent with (defaults included).
    let resolved = op.resolve(params).unwrap_or_else(|_| params.clone());
    let wanted = resolved
        .get(&lookup.param)
        .map(Value::to_string)
        .unwrap_or_default();
    eprintln!(
        "checking with {}.{} for {} = {wanted} ...",
        resource.name, lookup.operation, lookup.field
    );
    match client.find_created(resource, lookup, &resolved).await {
        Ok(Some(record)) => {
            eprintln!(
                "it was applied: {} has a record with {} = {wanted}; do not run it again",
                resource.name, lookup.field
            );
            if print.raw {
                serde_json::to_writer_pretty(&mut *out, &record)?;
                writeln!(out)?;
            } else {
                output::write_records(out, print.format, &[record])?;
            }
            Ok(0)
        }
        Ok(None) => {
            eprintln!(
                "it was not applied: {} has no record with {} = {wanted}; it is safe to run it again",
                resource.name, lookup.field
            );
            Ok(EXIT_PROBLEMS)
        }
        Err(e) => {
            eprintln!(
                "the check failed too ({e}); check with `toggl-connect query {}` before running it again",
                resource.name
            );
            Ok(EXIT_ERROR)
        }
    }
}

/// Prints an operation's result: flat records (or the raw body with `--raw`). A write whose
/// answer holds no object (an empty body, `"OK"`, a deleted id) prints nothing on stdout and says
/// so on stderr; a read with nothing to show prints an empty record list.
pub fn print_output(
    out: &mut dyn Write,
    resource: &Resource,
    is_write: bool,
    output: &OperationOutput,
    print: &PrintArgs,
) -> std::io::Result<()> {
    if print.raw {
        serde_json::to_writer_pretty(&mut *out, &output.body)?;
        return writeln!(out);
    }
    let objects = output.items.iter().any(Value::is_object);
    if is_write && !objects {
        if output.body.is_null() {
            eprintln!("done ({})", output.status);
        } else {
            eprintln!("done ({}): {}", output.status, output.body);
        }
        return Ok(());
    }
    let records: Vec<_> = output.items.iter().map(|i| resource.flatten(i)).collect();
    if !records.is_empty() && records.iter().all(|r| r.values().all(is_empty_value)) {
        // The answer is not an object of this resource (`{"status":"OK"}`, plan limits, ...):
        // showing a row of empty fields would hide it.
        serde_json::to_writer_pretty(&mut *out, &output.body)?;
        return writeln!(out);
    }
    output::write_records(out, print.format, &records)
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Splits `RESOURCE.OPERATION` and finds both.
fn find<'c>(
    connector: &'c Connector,
    target: &str,
) -> Result<(&'c Resource, &'c Operation), Reported> {
    let Some((r, o)) = target.split_once('.') else {
        return Err(fail(
            format!("expected RESOURCE.OPERATION, got {target:?}"),
            Some("`toggl-connect definition show` lists them"),
        ));
    };
    let Some(resource) = connector.resource(r) else {
        let known: Vec<&str> = connector
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        return Err(fail(
            format!("unknown resource {r:?} (known: {})", known.join(", ")),
            None,
        ));
    };
    let Some(op) = resource.operation(o) else {
        let known: Vec<&str> = resource
            .operations
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        return Err(fail(
            format!(
                "resource {r} has no operation {o:?} (known: {})",
                known.join(", ")
            ),
            None,
        ));
    };
    Ok((resource, op))
}

/// Runs `call`.
pub fn run(args: CallArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    exit_code(call(args, out))
}

/// Wraps [`Reported`] so `?` works inside `anyhow` functions.
#[derive(Debug)]
pub struct ReportedError(pub Reported);

impl std::fmt::Display for ReportedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reported (exit {})", self.0.code)
    }
}

impl std::error::Error for ReportedError {}

impl From<Reported> for anyhow::Error {
    fn from(r: Reported) -> Self {
        anyhow::Error::new(ReportedError(r))
    }
}

/// Maps an already reported failure to its exit code; passes other errors on.
pub fn exit_code(result: anyhow::Result<u8>) -> anyhow::Result<u8> {
    match result {
        Ok(code) => Ok(code),
        Err(e) => match e.downcast::<ReportedError>() {
            Ok(r) => Ok(r.0.code),
            Err(e) => Err(e),
        },
    }
}

fn call(args: CallArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let connector = load_connector(&args.api.definitions)?;
    let (resource, op) = find(&connector, &args.target)?;
    let params = typed_params(op, &args.params)?;
    // Render before connecting: a missing or mistyped parameter never costs a request.
    let req = op.render(&params).map_err(|e| fail(e, None))?;
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
