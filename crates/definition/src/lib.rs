//! The connector definition: raw serde types -> [`compile`] -> a checked [`Connector`].
//!
//! A definition describes a service (base URL, Basic auth) and its resources (fields read from
//! responses by selectors, operations with path, query and body templates). Users bring files in
//! the seed's format (a service file and a resources file); we load them as they are, report every
//! problem with its JSON path as a [`Diagnostic`], and ship a corrected built-in definition
//! ([`Connector::builtin`], `connectors/toggl-v9.json`).
//!
//! Invariant: running code only ever sees a compiled [`Connector`]. Every placeholder of every
//! operation has a typed [`ParamSpec`]; bodies are rendered as JSON trees (never by splicing
//! text), path values are percent-encoded into their own segment, and a missing required
//! parameter fails [`Operation::render`] before any request exists.
//!
//! The only I/O here is [`Connector::load_files`] reading the files it is given.
//!
//! ```
//! use toggl_connect_definition::{Connector, Params, join_url};
//!
//! let c = Connector::builtin();
//! let op = c.operation("clients", "create").expect("built-in has clients.create");
//! let params = Params::from_text_pairs(&[("workspace_id", "9000001"), ("name", "Acme")], &op.params)?;
//! let req = op.render(&params)?;
//! assert_eq!(req.path, "/api/v9/workspaces/9000001/clients");
//! assert_eq!(req.body, Some(serde_json::json!({"name": "Acme"})));
//! assert_eq!(
//!     join_url(&c.service.base_url, &req.path),
//!     "https://api.track.toggl.com/api/v9/workspaces/9000001/clients"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compile;
mod diagnostic;
mod model;
mod params;
pub mod raw;
mod selector;
mod template;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use compile::{CompileError, Compiled, compile};
pub use diagnostic::{Diagnostic, Severity};
pub use model::{
    Action, ActionSummary, Api, Auth, Connector, ConnectorSummary, Field, Lookup, Method,
    Operation, OperationSummary, Pagination, QueryTemplate, Record, RenderError, RenderedRequest,
    Resource, ResourceSummary, ResponseShape, Service, WebhookEvent, join_url,
};
pub use params::{ParamError, ParamSpec, ParamType, Params};
pub use raw::{RawDefinition, ReadError};
pub use selector::{Selector, Step};
pub use template::{BodyTemplate, Node, PlaceholderUse, Segment, TemplateError, value_as_text};

use raw::RawFile;

/// The built-in definition's text (our extended combined format).
pub const BUILTIN_JSON: &str = include_str!("../../../connectors/toggl-v9.json");

/// A definition that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a definition file of the expected shape.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// No file holds a service.
    #[error(
        "no service file among the given files (a service file has \"handle\" and \"service\")"
    )]
    NoService,
    /// More than one file holds a service.
    #[error("more than one service: {} and {}", first.display(), second.display())]
    TwoServices {
        /// The first file with a service.
        first: PathBuf,
        /// The second one.
        second: PathBuf,
    },
    /// The definition has errors; the diagnostics say which.
    #[error(transparent)]
    Invalid(#[from] CompileError),
}

impl LoadError {
    /// Every diagnostic, when the definition was read but did not compile.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid(e) => &e.diagnostics,
            _ => &[],
        }
    }
}

impl Connector {
    /// The built-in Toggl v9 definition, compiled once.
    pub fn builtin() -> &'static Connector {
        static BUILTIN: OnceLock<Connector> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            let raw = RawDefinition::from_json(BUILTIN_JSON)
                .expect("the built-in definition parses (tested)");
            compile(&raw)
                .expect("the built-in definition compiles (tested)")
                .connector
        })
    }

    /// Loads and compiles definition files: one combined file, or one service file plus any
    /// number of resources files. Diagnostic paths use the combined form (`service....`,
    /// `resources[i]...` counting across resources files in the given order).
    pub fn load_files(paths: &[PathBuf]) -> Result<Compiled, LoadError> {
        compile(&read_files(paths)?).map_err(LoadError::from)
    }
}

/// Reads definition files into one raw definition without compiling it (for `lint`, which wants
/// the diagnostics of a definition with errors too: call [`compile`] on the result).
pub fn read_files(paths: &[PathBuf]) -> Result<RawDefinition, LoadError> {
    let mut service: Option<(PathBuf, raw::RawServiceFile)> = None;
    let mut resources = Vec::new();
    let mut actions = Vec::new();
    let mut webhooks = Vec::new();
    let mut diags = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        let file = raw::read_file(&text).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let set_service = |service: &mut Option<(PathBuf, raw::RawServiceFile)>,
                           s: raw::RawServiceFile,
                           at: &Path|
         -> Result<(), LoadError> {
            if let Some((first, _)) = service {
                return Err(LoadError::TwoServices {
                    first: first.clone(),
                    second: at.to_owned(),
                });
            }
            *service = Some((at.to_owned(), s));
            Ok(())
        };
        match file {
            RawFile::Service(s, v) => {
                raw::unknown_keys_service_file(&v, "service", &mut diags);
                set_service(&mut service, *s, path)?;
            }
            RawFile::Resources(r, v) => {
                raw::unknown_keys_resources(&v, resources.len(), &mut diags);
                resources.extend(r);
            }
            RawFile::Combined(d) => {
                let d = *d;
                if resources.is_empty() {
                    diags.extend(d.read_diagnostics);
                } else {
                    // Re-number resource paths after resources read from earlier files.
                    let shift = resources.len();
                    diags.extend(d.read_diagnostics.into_iter().map(|mut x| {
                        x.path = raw::shift_resource_index(&x.path, shift);
                        x
                    }));
                }
                set_service(&mut service, d.service, path)?;
                resources.extend(d.resources);
                actions.extend(d.actions);
                webhooks.extend(d.webhooks);
            }
        }
    }
    let (_, service) = service.ok_or(LoadError::NoService)?;
    Ok(RawDefinition {
        service,
        resources,
        actions,
        webhooks,
        read_diagnostics: diags,
    })
}
