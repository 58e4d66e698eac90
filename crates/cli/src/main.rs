//! `toggl-connect`: the command-line entry point.
//!
//! Data goes to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 "ran, found problems"
//! (e.g. lint findings), 2 error. A closed stdout (`| head`) is a clean exit, not an error.

// Doc comments in this binary are clap's `--help` text (`[serve] store`, plain URLs), written
// for the terminal, not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]

mod cmd;
mod config;
mod logging;
mod output;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the receiver allocates on the runtime's threads and frees
/// on the store's writer, and glibc's arenas made that 10-15 % of the ingest path's CPU
/// (bench/ingest/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for "ran, found problems".
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit status for errors.
pub const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    logging::init(cli.global.log_format, cli.global.verbose);
    let mut stdout = io::stdout().lock();
    let result = cmd::run(cli, &mut stdout);
    let flushed = stdout.flush();
    match result.and_then(|code| flushed.map(|()| code).map_err(Into::into)) {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = cmd::hint_for(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
