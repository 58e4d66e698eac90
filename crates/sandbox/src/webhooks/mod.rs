//! The sandbox's Webhooks API v1: subscriptions, validation, signing and delivery.
//!
//! The Track API side of the sandbox reports every successful mutation as a [`Change`]; the hub
//! turns it into one event per enabled, validated subscription whose filters match.
//!
//! Wiring (the Track API side implements [`WebhookAccess`]):
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use toggl_connect_sandbox::webhooks::{Hub, HubConfig, WebhookAccess, router};
//! # async fn wire(access: Arc<dyn WebhookAccess>, app: axum::Router) -> axum::Router {
//! let hub = Hub::new(HubConfig::default());
//! hub.set_base_url("http://127.0.0.1:8080");
//! app.merge(router(Arc::clone(&hub), access))
//! # }
//! ```
//!
//! Invariant: an event reaches a callback only while its subscription is enabled and validated,
//! signed with the subscription's current secret, and per subscription in creation order.

mod api;
mod hub;
mod model;
mod signature;

use serde_json::Value;

pub use api::router;
pub use hub::{Hub, HubConfig, StateError};
pub use model::{ACTIONS, ENTITIES};
pub use signature::{SIGNATURE_HEADER, sign, verify};

/// What the Webhooks API needs from the Track API side: who is calling and what they may do.
///
/// The hub calls these from request handlers and from its fan-out task, never while it holds
/// its own lock, so an implementation may take the Track API's state lock.
pub trait WebhookAccess: Send + Sync + 'static {
    /// The user id behind the request's `Authorization`, or the 401/403 response to send.
    #[allow(clippy::result_large_err)] // the agreed interface; the response is sent as is
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<i64, axum::response::Response>;
    /// `Some(is_admin)` when the user belongs to the workspace, `None` when not.
    fn workspace_access(&self, user_id: i64, workspace_id: i64) -> Option<bool>;
    /// `(max_webhooks, max_events_per_webhook)` for the workspace's plan (Free 1 x 3,
    /// Starter 2 x 6, Premium 3 x 12).
    fn webhook_limits(&self, workspace_id: i64) -> (u32, u32);
}

/// What a mutation did to an entity, as Toggl names it in `metadata.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The entity was created.
    Created,
    /// The entity was changed.
    Updated,
    /// The entity was deleted.
    Deleted,
}

impl Action {
    /// The wire name (`created`, `updated`, `deleted`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

/// One successful mutation made through the Track API, reported to the hub.
#[derive(Debug, Clone)]
pub struct Change {
    /// The workspace the entity lives in.
    pub workspace_id: i64,
    /// Entity name as in `metadata.model`: `time_entry`, `project`, `client`, `task`, `tag`,
    /// `project_user`, `workspace_user`, `workspace`, `project_group`.
    pub entity: &'static str,
    /// What happened.
    pub action: Action,
    /// The id of the entity.
    pub entity_id: i64,
    /// The user who made the request (`creator_id`, `metadata.event_user_id`).
    pub creator_id: i64,
    /// The user who owns the entity (`metadata.model_owner_id`); the creator when unknown.
    pub model_owner_id: i64,
    /// The entity as the API serializes it after the change (for a delete: with
    /// `server_deleted_at` set where the entity has that field).
    pub payload: Value,
    /// The request path without query, e.g. `/api/v9/workspaces/1/time_entries`.
    pub path: String,
    /// The request method: `POST`, `PUT`, `PATCH`, `DELETE`.
    pub request_type: String,
    /// The raw request body as received (empty string when there was none).
    pub request_body: String,
    /// For project-related entities: the project id and whether it is private.
    pub project: Option<(i64, bool)>,
}
