//! `/me...`: the caller's profile, memberships, related data and quota.

use serde_json::{Value, json};

use super::{project_visible, since_ok};
use crate::app::AppState;
use crate::edge::{ApiError, ApiResult, Call, ok};
use crate::render::{self, TeStyle};
use axum::extract::State;

/// `GET /me/logged`: a cheap "are these credentials good" probe (swagger: 200 without a
/// body). Clients such as toggl-api-wrapper and toggl-python call it to verify a token; bad
/// credentials never get here (the gate answers 401/403 first).
pub(crate) async fn me_logged() -> ApiResult {
    Ok(super::workspaces::empty_ok())
}

/// `GET /me` (`with_related_data=true` adds the related arrays).
pub(crate) async fn get_me(State(s): State<AppState>, call: Call) -> ApiResult {
    let db = s.inner.db.read();
    let user = db
        .user(call.user_id)
        .ok_or_else(|| ApiError::not_found("could not load user data"))?;
    let mut v = render::user(user);
    if call.q_bool("with_related_data") {
        let premium = s.config().plan.is_paid();
        let obj = v.as_object_mut().expect("user is an object");
        let wids = db.workspaces_of(call.user_id);
        let mut clients = Vec::new();
        let mut projects = Vec::new();
        let mut tags = Vec::new();
        let mut tasks = Vec::new();
        let mut workspaces = Vec::new();
        for &wid in &wids {
            let admin = db.access(call.user_id, wid).unwrap_or(false);
            if let Some(w) = db.workspace(wid) {
                workspaces.push(render::workspace(&db, w, call.user_id, premium));
            }
            clients.extend(
                db.clients(wid)
                    .filter(|c| c.server_deleted_at.is_none())
                    .map(render::client),
            );
            let tracked = render::tracked_by_project(&db, wid);
            projects.extend(
                db.projects(wid)
                    .filter(|p| p.server_deleted_at.is_none())
                    .filter(|p| project_visible(&db, call.user_id, admin, p))
                    .map(|p| render::project(&db, p, tracked.get(&p.id).copied().unwrap_or(0))),
            );
            tags.extend(
                db.tags(wid)
                    .filter(|t| t.deleted_at.is_none())
                    .map(render::tag),
            );
            let by_task = render::tracked_by_task(&db, wid);
            tasks.extend(
                db.tasks(wid)
                    .filter(|t| t.server_deleted_at.is_none() && t.active)
                    .map(|t| render::task(&db, t, by_task.get(&t.id).copied().unwrap_or(0))),
            );
        }
        let mut entries: Vec<_> = db
            .time_entries
            .values()
            .filter(|t| t.user_id == call.user_id && !t.is_deleted())
            .collect();
        entries.sort_by(|a, b| b.start.cmp(&a.start).then(b.id.cmp(&a.id)));
        entries.truncate(1000);
        let time_entries: Vec<Value> = entries
            .into_iter()
            .map(|t| render::time_entry(&db, t, TeStyle::Listed, false))
            .collect();
        obj.insert("clients".into(), json!(clients));
        obj.insert("projects".into(), json!(projects));
        obj.insert("tags".into(), json!(tags));
        obj.insert("tasks".into(), json!(tasks));
        obj.insert("time_entries".into(), json!(time_entries));
        obj.insert("workspaces".into(), json!(workspaces));
    }
    ok(v)
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.contains(char::is_whitespace)
}

/// `PUT /me`: partial profile update with Toggl's validation messages.
pub(crate) async fn put_me(State(s): State<AppState>, call: Call) -> ApiResult {
    let input = call.input()?;
    let fullname = input.str(&["fullname"])?;
    let email = input.str(&["email"])?;
    let timezone = input.str(&["timezone"])?;
    let bow = input.i64(&["beginning_of_week"])?;
    let country = input.i64(&["country_id"])?;
    let default_ws = input.i64(&["default_workspace_id"])?;
    let password = input.str(&["password"])?;
    let current = input.str(&["current_password"])?;

    let mut db = s.inner.db.write();
    if let Some(name) = fullname.clone().value()
        && name.trim().is_empty()
    {
        return Err(ApiError::bad_request("Invalid fullname"));
    }
    if let Some(e) = email.clone().value() {
        if !valid_email(&e) {
            return Err(ApiError::bad_request("Invalid email"));
        }
        if db
            .users()
            .any(|u| u.id != call.user_id && u.email.eq_ignore_ascii_case(&e))
        {
            return Err(ApiError::bad_request("user with this email already exists"));
        }
    }
    if let Some(tz) = timezone.clone().value()
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(ApiError::bad_request("Invalid timezone"));
    }
    if let Some(b) = bow.clone().value()
        && !(0..=6).contains(&b)
    {
        return Err(ApiError::bad_request("Invalid beginning_of_week"));
    }
    if let Some(c) = country.clone().value()
        && c <= 0
    {
        return Err(ApiError::bad_request("Invalid country_id"));
    }
    if let Some(w) = default_ws.clone().value()
        && db.access(call.user_id, w).is_none()
    {
        return Err(ApiError::bad_request("Invalid default_workspace_id"));
    }
    let user = db
        .users
        .get(&call.user_id)
        .ok_or_else(|| ApiError::not_found("could not load user data"))?;
    if let Some(p) = password.clone().value() {
        match current.value() {
            None => {
                return Err(ApiError::bad_request(
                    "Current password must be present to change password",
                ));
            }
            Some(c) if c != user.password => {
                return Err(ApiError::bad_request("Current password is not valid"));
            }
            Some(_) => {}
        }
        if p.chars().count() < 6 {
            return Err(ApiError::bad_request(
                "Password should be at least 6 characters",
            ));
        }
    }
    let user = db.users.get_mut(&call.user_id).expect("checked above");
    fullname.apply(&mut user.fullname);
    email.apply(&mut user.email);
    timezone.apply(&mut user.timezone);
    bow.apply(&mut user.beginning_of_week);
    country.apply_opt(&mut user.country_id);
    default_ws.apply(&mut user.default_workspace_id);
    password.apply(&mut user.password);
    let t = super::bump(user.at);
    user.at = t;
    user.updated_at = t;
    ok(render::user(user))
}

/// `GET /me/workspaces` (`since` filters by `at`).
pub(crate) async fn me_workspaces(State(s): State<AppState>, call: Call) -> ApiResult {
    let since = call.q_i64("since")?;
    let db = s.inner.db.read();
    let mut out = Vec::new();
    for wid in db.workspaces_of(call.user_id) {
        let Some(w) = db.workspace(wid) else { continue };
        if !since_ok(since, w.at) {
            continue;
        }
        let mut v = render::workspace(&db, w, call.user_id, s.config().plan.is_paid());
        let active = db
            .projects(wid)
            .filter(|p| p.active && p.server_deleted_at.is_none())
            .count();
        v.as_object_mut()
            .expect("workspace is an object")
            .insert("active_project_count".into(), json!(active));
        out.push(v);
    }
    ok(json!(out))
}

/// `GET /me/organizations`.
pub(crate) async fn me_organizations(State(s): State<AppState>, call: Call) -> ApiResult {
    let db = s.inner.db.read();
    let plan = s.config().plan.display_name();
    let out: Vec<Value> = db
        .organizations_of(call.user_id)
        .into_iter()
        .filter_map(|o| db.organizations.get(&o))
        .map(|o| render::organization(&db, o, call.user_id, plan))
        .collect();
    ok(json!(out))
}

/// `GET /me/projects` (`since` includes deleted; `include_archived`).
pub(crate) async fn me_projects(State(s): State<AppState>, call: Call) -> ApiResult {
    let since = call.q_i64("since")?;
    let include_archived = call.q_bool("include_archived");
    let db = s.inner.db.read();
    let mut out = Vec::new();
    for wid in db.workspaces_of(call.user_id) {
        let admin = db.access(call.user_id, wid).unwrap_or(false);
        let tracked = render::tracked_by_project(&db, wid);
        for p in db.projects(wid) {
            let deleted_ok = since.is_some() || p.server_deleted_at.is_none();
            if deleted_ok
                && (include_archived || p.active || since.is_some())
                && since_ok(since, p.at)
                && project_visible(&db, call.user_id, admin, p)
            {
                out.push(render::project(
                    &db,
                    p,
                    tracked.get(&p.id).copied().unwrap_or(0),
                ));
            }
        }
    }
    ok(json!(out))
}

/// `GET /me/projects/paginated`: `start_project_id` cursor (inclusive), `per_page` (default
/// 201), `since`; projects of all the caller's workspaces ordered by id, as a plain array.
pub(crate) async fn me_projects_paginated(State(s): State<AppState>, call: Call) -> ApiResult {
    let since = call.q_i64("since")?;
    let start = call.q_i64("start_project_id")?.unwrap_or(0);
    let per_page = call.q_i64("per_page")?.unwrap_or(201).clamp(1, 1000) as usize;
    let db = s.inner.db.read();
    let mut list = Vec::new();
    for wid in db.workspaces_of(call.user_id) {
        let admin = db.access(call.user_id, wid).unwrap_or(false);
        list.extend(
            db.projects(wid)
                .filter(|p| p.id >= start)
                .filter(|p| since.is_some() || p.server_deleted_at.is_none())
                .filter(|p| since_ok(since, p.at))
                .filter(|p| project_visible(&db, call.user_id, admin, p)),
        );
    }
    list.sort_by_key(|p| p.id);
    list.truncate(per_page);
    let out: Vec<Value> = list
        .into_iter()
        .map(|p| {
            let tracked = render::tracked_by_project(&db, p.workspace_id);
            render::project(&db, p, tracked.get(&p.id).copied().unwrap_or(0))
        })
        .collect();
    ok(json!(out))
}

/// `GET /me/clients` (`since` includes deleted).
pub(crate) async fn me_clients(State(s): State<AppState>, call: Call) -> ApiResult {
    let since = call.q_i64("since")?;
    let db = s.inner.db.read();
    let mut out = Vec::new();
    for wid in db.workspaces_of(call.user_id) {
        out.extend(
            db.clients(wid)
                .filter(|c| {
                    (since.is_some() || c.server_deleted_at.is_none()) && since_ok(since, c.at)
                })
                .map(render::client),
        );
    }
    ok(json!(out))
}

/// `GET /me/tags` (`since` includes deleted).
pub(crate) async fn me_tags(State(s): State<AppState>, call: Call) -> ApiResult {
    let since = call.q_i64("since")?;
    let db = s.inner.db.read();
    let mut out = Vec::new();
    for wid in db.workspaces_of(call.user_id) {
        out.extend(
            db.tags(wid)
                .filter(|t| (since.is_some() || t.deleted_at.is_none()) && since_ok(since, t.at))
                .map(render::tag),
        );
    }
    ok(json!(out))
}

/// `GET /me/tasks` (`since`, `include_not_active`).
pub(crate) async fn me_tasks(State(s): State<AppState>, call: Call) -> ApiResult {
    let since = call.q_i64("since")?;
    let include_inactive = call.q_bool("include_not_active");
    let db = s.inner.db.read();
    let mut out = Vec::new();
    for wid in db.workspaces_of(call.user_id) {
        let tracked = render::tracked_by_task(&db, wid);
        out.extend(
            db.tasks(wid)
                .filter(|t| since.is_some() || t.server_deleted_at.is_none())
                .filter(|t| include_inactive || t.active)
                .filter(|t| since_ok(since, t.at))
                .map(|t| render::task(&db, t, tracked.get(&t.id).copied().unwrap_or(0))),
        );
    }
    ok(json!(out))
}

/// `GET /me/quota`: one entry per window (`organization_id: null` = the user-level one).
pub(crate) async fn me_quota(State(s): State<AppState>, call: Call) -> ApiResult {
    let out: Vec<Value> = s
        .quota_overview(call.user_id)
        .into_iter()
        .map(|(org, q)| {
            json!({
                "organization_id": org,
                "remaining": q.remaining,
                "resets_in_secs": q.resets_in_secs,
                "total": q.total,
            })
        })
        .collect();
    ok(json!(out))
}
