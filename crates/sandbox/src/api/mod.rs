//! Track API v9 routes (`/api/v9/...`).
//!
//! Handlers take the state lock once, validate, mutate, render, release the lock, and only
//! then publish their [`crate::webhooks::Change`]s.

mod catalog;
mod me;
mod time_entries;
mod workspaces;

use axum::Router;
use axum::routing::{get, patch, post, put};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::app::AppState;
use crate::edge::{ApiError, ApiResult, ok};
use crate::model::{Db, Project};
use crate::timefmt::trunc_micros;

/// The `/api/v9` router (without the gate; [`crate::router`] adds it).
pub(crate) fn routes() -> Router<AppState> {
    use catalog::*;
    use me::*;
    use time_entries::*;
    use workspaces::*;
    Router::new()
        .route("/status", get(status))
        .route("/me", get(get_me).put(put_me))
        .route("/me/logged", get(me_logged))
        .route("/me/workspaces", get(me_workspaces))
        .route("/me/organizations", get(me_organizations))
        .route("/me/projects", get(me_projects))
        .route("/me/projects/paginated", get(me_projects_paginated))
        .route("/me/clients", get(me_clients))
        .route("/me/tags", get(me_tags))
        .route("/me/tasks", get(me_tasks))
        .route("/me/quota", get(me_quota))
        .route("/me/time_entries", get(list_time_entries))
        .route("/me/time_entries/current", get(current_time_entry))
        .route("/me/time_entries/{id}", get(get_time_entry))
        .route("/workspaces", get(list_workspaces))
        .route(
            "/workspaces/{wid}",
            get(get_workspace).put(update_workspace),
        )
        .route("/workspaces/{wid}/users", get(list_workspace_members))
        .route("/workspaces/{wid}/statistics", get(workspace_statistics))
        .route("/organizations", post(create_organization))
        .route(
            "/organizations/{oid}",
            get(get_organization).put(update_organization),
        )
        .route(
            "/workspaces/{wid}/workspace_users",
            get(list_workspace_users),
        )
        .route(
            "/workspaces/{wid}/workspace_users/{wuid}",
            put(update_workspace_user).delete(delete_workspace_user),
        )
        .route("/organizations/{oid}/invitations", post(create_invitations))
        .route(
            "/workspaces/{wid}/clients",
            get(list_clients).post(create_client),
        )
        .route(
            "/workspaces/{wid}/clients/{cid}",
            get(get_client).put(update_client).delete(delete_client),
        )
        .route(
            "/workspaces/{wid}/projects",
            get(list_projects).post(create_project),
        )
        .route(
            "/workspaces/{wid}/projects/{pid}",
            get(get_project)
                .put(update_project)
                .delete(delete_project)
                .patch(patch_projects),
        )
        .route(
            "/workspaces/{wid}/projects/{pid}/tasks",
            get(list_project_tasks).post(create_task),
        )
        .route(
            "/workspaces/{wid}/projects/{pid}/tasks/{tid}",
            get(get_task).put(update_task).delete(delete_task),
        )
        .route("/workspaces/{wid}/tasks", get(list_workspace_tasks))
        .route("/workspaces/{wid}/tags", get(list_tags).post(create_tag))
        .route(
            "/workspaces/{wid}/tags/{tag_id}",
            put(update_tag).delete(delete_tag),
        )
        .route(
            "/workspaces/{wid}/project_users",
            get(list_project_users).post(create_project_user),
        )
        .route(
            "/workspaces/{wid}/project_users/{puid}",
            put(update_project_user).delete(delete_project_user),
        )
        .route("/workspaces/{wid}/time_entries", post(create_time_entry))
        .route(
            "/workspaces/{wid}/time_entries/{ids}",
            put(update_time_entry)
                .delete(delete_time_entry)
                .patch(patch_time_entries),
        )
        .route(
            "/workspaces/{wid}/time_entries/{id}/stop",
            patch(stop_time_entry),
        )
        .route("/time_entries", post(legacy_create_time_entry))
        .route("/time_entries/{id}", put(legacy_update_time_entry))
}

/// `GET /status`: health check without auth.
async fn status() -> ApiResult {
    ok(json!({"status": "OK"}))
}

/// Now, at the precision `at` is written with.
pub(crate) fn now() -> DateTime<Utc> {
    trunc_micros(Utc::now())
}

/// A new `at` for an entity: strictly after the previous one, so `at` moves on every change
/// even when two changes land in the same microsecond.
pub(crate) fn bump(prev: DateTime<Utc>) -> DateTime<Utc> {
    let n = now();
    if n > prev {
        n
    } else {
        prev + chrono::Duration::microseconds(1)
    }
}

/// Checks that the workspace exists and the caller is an active member; returns `is_admin`.
///
/// A missing workspace answers like a foreign one (403), so ids cannot be probed.
pub(crate) fn ws_access(db: &Db, user_id: i64, workspace_id: i64) -> Result<bool, ApiError> {
    db.access(user_id, workspace_id)
        .ok_or_else(ApiError::forbidden)
}

/// Whether a project is visible to a user: admins see all, members see public projects and
/// private ones they belong to.
pub(crate) fn project_visible(db: &Db, user_id: i64, admin: bool, p: &Project) -> bool {
    admin
        || !p.is_private
        || db
            .project_users
            .values()
            .any(|pu| pu.project_id == p.id && pu.user_id == user_id)
}

/// A `since` filter (unix seconds) applied to an `at` stamp.
pub(crate) fn since_ok(since: Option<i64>, at: DateTime<Utc>) -> bool {
    since.is_none_or(|s| at.timestamp() >= s)
}
