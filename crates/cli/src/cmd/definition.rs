//! `toggl-connect definition lint|show`: check definition files, show the active definition.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use toggl_connect_definition::{Connector, ConnectorSummary, Diagnostic, compile, read_files};

use crate::EXIT_PROBLEMS;
use crate::cmd::call::{exit_code, fail, load_connector};

/// Run `toggl-connect definition`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  toggl-connect definition lint my.service.json my.resources.json\n  toggl-connect definition show --json"
)]
pub struct DefinitionArgs {
    #[command(subcommand)]
    pub command: DefinitionCommand,
}

/// `definition` subcommands.
#[derive(Debug, Subcommand)]
pub enum DefinitionCommand {
    /// Check definition files: every problem with its JSON path and a one-line fix.
    ///
    /// Exits 0 when clean, 1 when there are errors or warnings, 2 when a file cannot be read.
    #[command(
        after_help = "Example:\n  toggl-connect definition lint toggl-track-v1.service.json toggl-track-v1.resources.json --format json"
    )]
    Lint(LintArgs),
    /// Show resources, operations, fields and actions of the active definition.
    #[command(
        after_help = "Examples:\n  toggl-connect definition show\n  toggl-connect definition show --json --definition my.service.json my.resources.json"
    )]
    Show(ShowArgs),
}

/// How lint findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LintFormat {
    /// One finding per paragraph, for people.
    #[default]
    Text,
    /// A JSON array of {severity, code, path, message, fix}.
    Json,
}

/// `definition lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// The files: a service file plus resources files, or one combined file.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = LintFormat::Text)]
    pub format: LintFormat,
}

/// `definition show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Show these definition files instead of the built-in definition.
    #[arg(long = "definition", value_name = "FILE", num_args = 1..)]
    pub definitions: Vec<PathBuf>,
}

/// Runs `definition`.
pub fn run(args: DefinitionArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    match args.command {
        DefinitionCommand::Lint(a) => lint(&a, out),
        DefinitionCommand::Show(a) => exit_code(show(&a, out)),
    }
}

fn lint(args: &LintArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let raw = match read_files(&args.files) {
        Ok(raw) => raw,
        Err(e) => return Ok(fail(format!("{:#}", anyhow::Error::new(e)), None).code),
    };
    let diagnostics = match compile(&raw) {
        Ok(c) => c.diagnostics,
        Err(e) => e.diagnostics,
    };
    write_diagnostics(out, args.format, &diagnostics)?;
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if args.format == LintFormat::Text {
        if diagnostics.is_empty() {
            eprintln!("no problems found");
        } else if errors == 0 {
            eprintln!(
                "{warnings} warning(s), 0 errors: the definition loads, but fix the warnings before relying on it"
            );
        } else {
            eprintln!(
                "{errors} error(s), {warnings} warning(s): the definition cannot be used until the errors are fixed"
            );
        }
    }
    Ok(if diagnostics.is_empty() {
        0
    } else {
        EXIT_PROBLEMS
    })
}

/// Writes lint findings: paragraphs (`severity[code]: path: message` + `fix:`) or a JSON array.
pub fn write_diagnostics(
    out: &mut dyn Write,
    format: LintFormat,
    diagnostics: &[Diagnostic],
) -> std::io::Result<()> {
    match format {
        LintFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, diagnostics)?;
            writeln!(out)
        }
        LintFormat::Text => {
            for (i, d) in diagnostics.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "{d}")?;
            }
            Ok(())
        }
    }
}

fn show(args: &ShowArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let connector: Connector = load_connector(&args.definitions)?;
    let summary = connector.summary();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &summary)?;
        writeln!(out)?;
    } else {
        write_summary(out, &summary)?;
    }
    Ok(0)
}

/// The human view of a definition.
pub fn write_summary(out: &mut dyn Write, s: &ConnectorSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "{} ({}) {}, auth: {}",
        s.name, s.handle, s.base_url, s.auth
    )?;
    writeln!(out)?;
    writeln!(out, "RESOURCES")?;
    for r in &s.resources {
        writeln!(out)?;
        match &r.description {
            Some(d) => writeln!(out, "{}: {d}", r.name)?,
            None => writeln!(out, "{}", r.name)?,
        }
        writeln!(out, "  fields: {}", r.fields.join(", "))?;
        for o in &r.operations {
            let mut line = format!("  {}.{}  {} {}", r.name, o.name, o.method, o.path);
            if let Some(p) = o.pagination {
                line.push_str(&format!("  (paged: {p})"));
            }
            writeln!(out, "{line}")?;
            if !o.params.is_empty() {
                writeln!(out, "      params: {}", o.params.join(", "))?;
            }
        }
    }
    writeln!(out)?;
    writeln!(out, "ACTIONS")?;
    for a in &s.actions {
        let needs = if a.required.is_empty() {
            "nothing".to_owned()
        } else {
            a.required.join(", ")
        };
        writeln!(out, "  {}  runs {}  needs: {needs}", a.name, a.runs)?;
        if let Some(d) = &a.description {
            writeln!(out, "      {d}")?;
        }
    }
    if !s.webhooks.is_empty() {
        writeln!(out)?;
        writeln!(out, "WEBHOOK EVENTS")?;
        for w in &s.webhooks {
            writeln!(out, "  {w}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_text_separates_findings() {
        let d = vec![
            Diagnostic::warning("a-code", "resources[0].x", "bad", "fix it"),
            Diagnostic::error("b-code", "service.y", "worse", "fix that"),
        ];
        let mut buf = Vec::new();
        write_diagnostics(&mut buf, LintFormat::Text, &d).expect("writes");
        assert_eq!(
            String::from_utf8(buf).expect("utf8"),
            "warning[a-code]: resources[0].x: bad\n  fix: fix it\n\nerror[b-code]: service.y: worse\n  fix: fix that\n"
        );
    }

    #[test]
    fn summary_lists_every_operation() {
        let s = Connector::builtin().summary();
        let mut buf = Vec::new();
        write_summary(&mut buf, &s).expect("writes");
        let text = String::from_utf8(buf).expect("utf8");
        for r in &s.resources {
            for o in &r.operations {
                assert!(
                    text.contains(&format!("{}.{}  {}", r.name, o.name, o.method)),
                    "{}.{}",
                    r.name,
                    o.name
                );
            }
        }
        assert!(text.contains("create-task  runs tasks.create"));
    }
}
