//! Talking to Toggl Track: every action and query of toggl-connect goes through [`Client`].
//!
//! The client adds HTTP Basic auth and a `User-Agent`, spaces request starts per token (Toggl's
//! leaky bucket allows about one per second), budgets the tiny hourly quota per (token,
//! organization) and per user from the `X-Toggl-Quota-*` headers, retries only what is safe to
//! retry, turns every failure into a typed [`ClientError`] and walks paged lists one page at a time.
//! It also executes compiled operations of a connector definition ([`Client::run_operation`],
//! [`Client::operation_items`]) and checks whether a create with an unknown outcome took effect
//! ([`Client::find_created`]).
//!
//! Invariants:
//! - the token never appears in logs, errors, spans or panics ([`Secret`] prints `[redacted]`,
//!   error texts are scrubbed, logs carry path templates only);
//! - a non-idempotent request whose outcome is unknown is never sent twice
//!   ([`ClientError::OutcomeUnknown`]);
//! - when a quota scope is known to be spent, nothing is sent in it until its reset, except one
//!   probe per window shared by all callers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), toggl_connect_client::ClientError> {
//! use toggl_connect_client::{ApiRequest, Client, ClientConfig, Pagination};
//! use futures::TryStreamExt as _;
//!
//! let client = Client::new(ClientConfig::with_token("my-token"))?;
//! let me = client.send(ApiRequest::get("/api/v9/me")).await?;
//! println!("{}", me.body["fullname"]);
//!
//! let mut projects = client.paginate(
//!     ApiRequest::get("/api/v9/workspaces/42/projects"),
//!     Pagination::page_per_page(200),
//! );
//! while let Some(project) = projects.try_next().await? {
//!     println!("{}", project["name"]);
//! }
//! # Ok(()) }
//! ```

mod client;
mod config;
mod error;
mod operation;
mod pacing;
mod pagination;
mod quota;
mod request;
mod secret;

pub use client::{Client, parse_retry_after};
pub use config::{ClientConfig, Credentials, DEFAULT_BASE_URL, RetryPolicy};
pub use error::{BODY_EXCERPT_CHARS, ClientError, body_message};
pub use operation::{OperationError, OperationOutput, api_request, client_pagination};
pub use pacing::Pacer;
pub use pagination::{HEADER_NEXT_ID, HEADER_NEXT_ROW_NUMBER, Page, Pagination};
pub use quota::{
    HEADER_QUOTA_REMAINING, HEADER_QUOTA_RESETS_IN, QuotaBudget, QuotaHeaders, QuotaScope,
    QuotaSnapshot,
};
pub use request::{ApiRequest, ApiResponse, path_template};
pub use secret::Secret;
