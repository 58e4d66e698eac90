//! A local server that behaves like Toggl Track's public APIs (Track v9, Webhooks v1,
//! Reports v3), for tests and for pointing real Toggl clients at it offline.
//!
//! Invariant: the sandbox answers like the **real** API (status codes, error bodies, JSON keys
//! and types, timestamp forms, quota headers), as recorded in the project's fixtures; it shares
//! no wire types with the client crates, so a serde mistake cannot hide on both sides.
//!
//! ```no_run
//! # async fn demo() -> Result<(), toggl_connect_sandbox::SandboxError> {
//! use toggl_connect_sandbox::{Sandbox, SandboxConfig, Seed};
//! let sandbox = Sandbox::start(SandboxConfig { seed: Seed::Small, ..Default::default() }).await?;
//! let facts = sandbox.facts();
//! println!("{} token {}", facts.api_url, facts.api_token);
//! sandbox.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Surface
//! - [`Sandbox::start`] / [`Sandbox::start_on`] → [`SandboxHandle`] with [`SandboxFacts`]
//!   (URLs, admin credentials, ids) and [`SandboxHandle::member`] (a non-admin user).
//! - [`router`] builds the whole app over an [`AppState`] (from [`AppState::new`]) for
//!   `tower::ServiceExt::oneshot` tests.
//! - [`AppState::subscribe_changes`] streams every [`webhooks::Change`] made through the API.
//!
//! # For the Webhooks and Reports modules (read API)
//! Both are mounted by [`router`]; `webhooks::WebhookAccess` and `reports::ReportsSource` are
//! implemented for [`AppState`] on top of these:
//! - [`AppState::authenticate`], [`AppState::workspace_access`], [`AppState::webhook_limits`]
//!   implement what the webhooks router needs (same 401/403 as the Track API).
//! - [`AppState::read`] runs a closure over [`model::Db`]: `users()`, `user(id)`,
//!   `workspaces()`, `workspace(id)`, `workspace_users(wid)`, `clients(wid)`, `projects(wid)`,
//!   `tasks(wid)`, `tags(wid)`, `time_entries(wid)`, `tag_names(&ids)`, `access(uid, wid)`.
//!   Records are in [`model`] with `pub` fields; deleted ones are included (check
//!   `server_deleted_at` / `deleted_at`), running entries have `stop == None`.
//! - [`AppState::config`] gives the plan and the webhook fault settings ([`Faults`]).
//!
//! # Behaviour on points the reference marks UNCONFIRMED
//! - **Quota**: sliding window per (user, organization) for org-scoped paths and per user for
//!   the rest (see [`limits`]); 402 with a JSON string body and both quota headers; a 402 is
//!   not counted. [`Plan::Unlimited`] counts against a nominal 1,000,000 but never refuses.
//!   Quota headers go on every authenticated response except a paid-feature 402 (Free plan),
//!   so a client can tell "wait for the reset" from "needs a paid plan".
//! - **429**: a leaky bucket per user (3 requests burst, 1/s). The 429 carries a proxy-style
//!   HTML body (recorded in a client issue) and `Retry-After` with the seconds until a request
//!   fits. Toggl does not document `Retry-After` (toggl_api_docs#426 asked for it): it is sent
//!   so that clients which honour it wait the right time, but clients must not depend on it —
//!   the client crate's tests should also pass with the bucket's hint ignored.
//! - **403 on bad credentials** has an empty body; a foreign or unknown workspace is 403
//!   `User does not have access to this resource.` (ids cannot be probed).
//! - **Malformed JSON** → 400 `Invalid JSON input` (swagger wording); a wrong JSON type →
//!   400 `Unexpected "<field>" type <string|number|bool|array|object>`.
//! - **Time entries** (recorded behaviour reproduced): create with only `created_with`,
//!   `start`, `workspace_id` answers `duration: 0, stop: null` and is later listed with
//!   `stop == start`; `duration: -1` creates a running entry whose create/update response shows
//!   `-1` while reads show `-(start unix seconds)`; `tags`/`tag_ids` are `null` until given and
//!   `[]` once the entry stops. Choices: `workspace_id` (or `wid`) is required in the body and
//!   must equal the path (400 otherwise); `stop` and `duration` must agree (400 `duration and
//!   stop do not match`); starting an entry stops the user's running one at the new start;
//!   `start_date`/`end_date` must come together (400) and a date means 00:00 UTC with the end
//!   exclusive; lists are newest first, at most 1000; editing another user's entry needs
//!   workspace admin (403). Bulk PATCH applies the operations per entry in order; an entry
//!   fails as a whole and is left unchanged.
//! - **Projects** list without `active` shows active ones; duplicate client/project names →
//!   400 `Name has already been taken`; tags → `a tag with the name '<x>' already exists`.
//! - **Webhook payloads** of [`webhooks::Change`] are the entity as a GET returns it (`+00:00`
//!   timestamps, a running entry's duration as `-start`), as in the recorded event example.
//! - Unknown paths → 404 `404 page not found` (text/plain, like Go's router) after auth.
//! - **Organizations**: `POST /organizations` makes the caller owner of a new organization
//!   and admin of its one workspace (no webhook event); `PUT /organizations/{oid}` is
//!   owner-only and answers 200 with an empty body (swagger: "string", content unrecorded;
//!   toggl-api-wrapper breaks on a JSON string there); `GET /organizations/{oid}` is 404
//!   `User not part of organization` for others. Reports treat an empty id list as no filter.
//!   Compatibility with third-party clients is tracked in `COMPATIBILITY.md`.
//! - Missing projects/tasks → 404 `Resource can not be found`; DELETE of a client, project or
//!   project user answers its id as a JSON number (swagger: number), of a time entry, tag,
//!   task or workspace user an empty 200; `PUT .../workspace_users/{id}` answers `"OK"`
//!   (swagger: a string). The organization owner cannot be removed from a workspace.
//! - **Seeds** are deterministic per `seed_value` (tokens, passwords, ids, content); times are
//!   anchored at midnight UTC of the start day (see the `seed` module). A loaded state file
//!   wins over seeding; `api_token` from the config always becomes the admin's token.
//! - **State file**: the whole data plus the webhook hub's snapshot, written at
//!   [`SandboxHandle::shutdown`] via temp file + fsync + rename (+ directory fsync).

// The hand-written entity JSON (`json!` with 40+ keys) needs a deeper macro expansion.
#![recursion_limit = "256"]

mod api;
mod app;
mod config;
pub mod edge;
pub mod limits;
pub mod model;
mod persist;
pub mod render;
pub mod reports;
mod seed;
pub mod timefmt;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::response::IntoResponse;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use app::AppState;
pub use config::{Faults, Plan, SandboxConfig, Seed};

/// Why a sandbox could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The listen address could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("invalid state file {path}")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The state file was written by an incompatible version.
    #[error("state file {path} has unsupported version {version}")]
    StateVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// The webhooks part of the state file could not be loaded.
    #[error("invalid webhooks state in {path}")]
    WebhookState {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: webhooks::StateError,
    },
    /// The listener has no local address.
    #[error("listener has no local address")]
    Listener(#[source] std::io::Error),
    /// The server task failed.
    #[error("server task failed")]
    Server(#[source] std::io::Error),
}

/// What a client needs to talk to a sandbox (the admin user's view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxFacts {
    /// `http://ADDR/api/v9`.
    pub api_url: String,
    /// `http://ADDR/webhooks/api/v1`.
    pub webhooks_url: String,
    /// `http://ADDR/reports/api/v3`.
    pub reports_url: String,
    /// The admin's API token.
    pub api_token: String,
    /// The admin's email.
    pub email: String,
    /// The admin's password.
    pub password: String,
    /// The admin's user id.
    pub user_id: i64,
    /// The default workspace.
    pub workspace_id: i64,
    /// The organization.
    pub organization_id: i64,
}

/// Credentials of the second, non-admin user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberFacts {
    /// API token.
    pub api_token: String,
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
    /// User id.
    pub user_id: i64,
}

impl AppState {
    /// Builds the state: loads `config.state_file` when it exists, otherwise seeds.
    /// A configured `api_token` always becomes the admin's token.
    pub fn new(config: SandboxConfig) -> Result<AppState, SandboxError> {
        let loaded = match &config.state_file {
            Some(p) => persist::load(p)?,
            None => None,
        };
        let mut hooks = None;
        let mut db = match loaded {
            Some((db, webhooks)) => {
                hooks = webhooks;
                tracing::info!("sandbox state loaded");
                db
            }
            None => {
                let started = std::time::Instant::now();
                let db = seed::build(&config);
                tracing::info!(
                    entries = db.time_entries.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "sandbox seeded"
                );
                db
            }
        };
        if let Some(token) = &config.api_token {
            let admin = db.admin_id;
            if let Some(u) = db.users.get_mut(&admin) {
                u.api_token.clone_from(token);
            }
        }
        let path = config.state_file.clone();
        let state = AppState::from_db(db, config);
        if let (Some(hooks), Some(path)) = (hooks, path) {
            state
                .hub()
                .import_state(hooks)
                .map_err(|source| SandboxError::WebhookState { path, source })?;
        }
        Ok(state)
    }

    /// Admin facts for a server at `addr`.
    pub fn facts(&self, addr: SocketAddr) -> SandboxFacts {
        self.read(|db| {
            let admin = db.user(db.admin_id).expect("bootstrap admin exists");
            let organization_id = db
                .workspace(db.default_workspace_id)
                .map(|w| w.organization_id)
                .expect("bootstrap workspace exists");
            SandboxFacts {
                api_url: format!("http://{addr}/api/v9"),
                webhooks_url: format!("http://{addr}/webhooks/api/v1"),
                reports_url: format!("http://{addr}/reports/api/v3"),
                api_token: admin.api_token.clone(),
                email: admin.email.clone(),
                password: admin.password.clone(),
                user_id: admin.id,
                workspace_id: db.default_workspace_id,
                organization_id,
            }
        })
    }

    /// Facts of the non-admin member.
    pub fn member(&self) -> MemberFacts {
        self.read(|db| {
            let m = db.user(db.member_id).expect("bootstrap member exists");
            MemberFacts {
                api_token: m.api_token.clone(),
                email: m.email.clone(),
                password: m.password.clone(),
                user_id: m.id,
            }
        })
    }
}

async fn not_found() -> axum::response::Response {
    (
        http::StatusCode::NOT_FOUND,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found",
    )
        .into_response()
}

/// The whole sandbox app (Track API v9, Webhooks API v1, Reports API v3) behind one gate
/// (faults, auth, 429, quota; Webhooks and Reports requests count against the org quota).
pub fn router(state: AppState) -> Router {
    let access: std::sync::Arc<dyn webhooks::WebhookAccess> = std::sync::Arc::new(state.clone());
    Router::new()
        .nest("/api/v9", api::routes())
        .with_state(state.clone())
        .merge(webhooks::router(state.hub().clone(), access))
        .merge(reports::router(std::sync::Arc::new(state.clone())))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            app::gate,
        ))
}

/// Starts sandboxes.
#[derive(Debug)]
pub struct Sandbox;

impl Sandbox {
    /// Binds `config.listen` and serves.
    pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| SandboxError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Self::start_on(listener, config).await
    }

    /// Serves on an already bound listener (tests inject `127.0.0.1:0`).
    pub async fn start_on(
        listener: TcpListener,
        config: SandboxConfig,
    ) -> Result<SandboxHandle, SandboxError> {
        let addr = listener.local_addr().map_err(SandboxError::Listener)?;
        let state = AppState::new(config)?;
        state.hub().set_base_url(format!("http://{addr}"));
        let facts = state.facts(addr);
        let member = state.member();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // A dropped handle also stops the server.
                    let _ = stop_rx.await;
                })
                .await
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(SandboxHandle {
            facts,
            member,
            addr,
            state,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// A running sandbox. Dropping it stops the server (without writing the state file).
#[derive(Debug)]
pub struct SandboxHandle {
    facts: SandboxFacts,
    member: MemberFacts,
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SandboxHandle {
    /// URLs, admin credentials and ids.
    pub fn facts(&self) -> &SandboxFacts {
        &self.facts
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The non-admin member.
    pub fn member(&self) -> &MemberFacts {
        &self.member
    }

    /// The live state (read access, change subscription).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish, then writes the state file when set.
    pub async fn shutdown(mut self) -> Result<(), SandboxError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(SandboxError::Server(e)),
                Err(join) => {
                    return Err(SandboxError::Server(std::io::Error::other(
                        join.to_string(),
                    )));
                }
            }
        }
        self.state.hub().shutdown().await;
        if let Some(path) = &self.state.config().state_file {
            persist::save(path, self.state.snapshot(), self.state.hub().export_state())?;
            tracing::info!("sandbox state saved");
        }
        Ok(())
    }
}
