//! Wire JSON of every entity, written by hand from the reference (swagger + recorded traffic).
//!
//! Nullable fields are always present as `null`, never omitted (recorded: `"task_id":null`).
//! Key order follows the recorded responses where one exists (`serde_json` keeps insertion
//! order in this workspace). Time formats: see [`crate::timefmt`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::model::{
    Client, Db, Organization, Project, ProjectUser, Role, Tag, Task, TimeEntry, User, Workspace,
    WorkspaceUser,
};
use crate::timefmt::{offset_secs, z_micros, z_secs};

const IMAGE_URL: &str = "https://assets.track.toggl.com/images/profile.png";

fn opt_time(t: Option<DateTime<Utc>>, f: fn(DateTime<Utc>) -> String) -> Value {
    t.map_or(Value::Null, |t| Value::String(f(t)))
}

/// How a time entry is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeStyle {
    /// GET lists and single reads: `+00:00` seconds everywhere, a running entry's duration is
    /// `-(start as unix seconds)` (recorded for `/me/time_entries/current`).
    Listed,
    /// Create/update responses: `start`/`stop` with `Z`, `at` with microseconds, a running
    /// entry's duration is `-1` (recorded: the create response echoes `-1`).
    Written,
}

/// A time entry; `meta` adds the names `?meta=true` asks for.
pub fn time_entry(db: &Db, te: &TimeEntry, style: TeStyle, meta: bool) -> Value {
    let (start, stop, at, deleted) = match style {
        TeStyle::Listed => (
            offset_secs(te.start),
            opt_time(te.stop, offset_secs),
            offset_secs(te.at),
            opt_time(te.server_deleted_at, offset_secs),
        ),
        TeStyle::Written => (
            z_secs(te.start),
            opt_time(te.stop, z_secs),
            z_micros(te.at),
            opt_time(te.server_deleted_at, z_micros),
        ),
    };
    let duration = if te.is_running() {
        match style {
            TeStyle::Listed => -te.start.timestamp(),
            TeStyle::Written => -1,
        }
    } else {
        te.duration
    };
    let (tags, tag_ids) = match &te.tag_ids {
        None => (Value::Null, Value::Null),
        Some(ids) => {
            let live: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| db.tags.get(id).is_some_and(|t| t.deleted_at.is_none()))
                .collect();
            (json!(db.tag_names(&live)), json!(live))
        }
    };
    let mut v = json!({
        "id": te.id,
        "workspace_id": te.workspace_id,
        "project_id": te.project_id,
        "task_id": te.task_id,
        "billable": te.billable,
        "start": start,
        "stop": stop,
        "duration": duration,
        "description": te.description.as_deref(),
        "tags": tags,
        "tag_ids": tag_ids,
        "duronly": true,
        "at": at,
        "server_deleted_at": deleted,
        "user_id": te.user_id,
        "uid": te.user_id,
        "wid": te.workspace_id,
    });
    let obj = v.as_object_mut().expect("json! object");
    if let Some(pid) = te.project_id {
        obj.insert("pid".into(), json!(pid));
    }
    if let Some(tid) = te.task_id {
        obj.insert("tid".into(), json!(tid));
    }
    obj.insert("permissions".into(), Value::Null);
    if meta {
        let project = te.project_id.and_then(|p| db.projects.get(&p));
        let client = project
            .and_then(|p| p.client_id)
            .and_then(|c| db.clients.get(&c));
        let user = db.users.get(&te.user_id);
        let task = te.task_id.and_then(|t| db.tasks.get(&t));
        obj.insert("client_name".into(), json!(client.map(|c| &c.name)));
        obj.insert("project_name".into(), json!(project.map(|p| &p.name)));
        obj.insert("project_color".into(), json!(project.map(|p| &p.color)));
        obj.insert("project_active".into(), json!(project.map(|p| p.active)));
        obj.insert(
            "project_billable".into(),
            json!(project.map(|p| p.billable)),
        );
        obj.insert("task_name".into(), json!(task.map(|t| &t.name)));
        obj.insert("client_id".into(), json!(client.map(|c| c.id)));
        obj.insert("user_name".into(), json!(user.map(|u| &u.fullname)));
        obj.insert("user_avatar_url".into(), json!(IMAGE_URL));
    }
    v
}

/// The user object of `/me`.
pub fn user(u: &User) -> Value {
    json!({
        "id": u.id,
        "api_token": u.api_token,
        "email": u.email,
        "fullname": u.fullname,
        "timezone": u.timezone,
        "toggl_accounts_id": u.toggl_accounts_id,
        "default_workspace_id": u.default_workspace_id,
        "beginning_of_week": u.beginning_of_week,
        "image_url": IMAGE_URL,
        "created_at": z_micros(u.created_at),
        "updated_at": z_micros(u.updated_at),
        "openid_email": null,
        "openid_enabled": false,
        "country_id": u.country_id,
        "has_password": true,
        "at": z_micros(u.at),
        "intercom_hash": u.intercom_hash,
        "oauth_providers": [],
        "authorization_updated_at": z_micros(u.created_at),
        "2fa_enabled": false,
    })
}

/// A workspace as the caller sees it (`role`, `admin` depend on the caller).
pub fn workspace(db: &Db, w: &Workspace, caller: i64, plan_premium: bool) -> Value {
    let role = db.membership(caller, w.id).map(|m| m.role);
    let admin = db.access(caller, w.id).unwrap_or(false);
    json!({
        "id": w.id,
        "organization_id": w.organization_id,
        "name": w.name,
        "premium": plan_premium,
        "business_ws": plan_premium,
        "admin": admin,
        "role": role.map(Role::as_str),
        "suspended_at": null,
        "server_deleted_at": null,
        "default_hourly_rate": w.default_hourly_rate,
        "rate_last_updated": null,
        "default_currency": w.default_currency,
        "only_admins_may_create_projects": w.only_admins_may_create_projects,
        "only_admins_may_create_tags": w.only_admins_may_create_tags,
        "only_admins_see_team_dashboard": w.only_admins_see_team_dashboard,
        "projects_billable_by_default": w.projects_billable_by_default,
        "projects_private_by_default": w.projects_private_by_default,
        "projects_enforce_billable": false,
        "limit_public_project_data": w.limit_public_project_data,
        "last_modified": offset_secs(w.at),
        "reports_collapse": w.reports_collapse,
        "rounding": w.rounding,
        "rounding_minutes": w.rounding_minutes,
        "api_token": null,
        "at": offset_secs(w.at),
        "logo_url": "https://assets.track.toggl.com/images/workspace.jpg",
        "ical_url": null,
        "ical_enabled": false,
        "csv_upload": null,
        "subscription": null,
        "hide_start_end_times": false,
        "disable_approvals": false,
        "disable_timesheet_view": false,
        "disable_expenses": false,
        "working_hours_in_minutes": null,
        "max_data_retention_days": null,
        "te_constraints": {
            "description_present": false,
            "project_present": false,
            "tag_present": false,
            "task_present": false,
            "time_entry_constraints_enabled": false,
        },
        "permissions": null,
    })
}

/// An organization as `/me/organizations` lists it.
pub fn organization(db: &Db, o: &Organization, caller: i64, plan_name: &str) -> Value {
    let users = db
        .workspace_users
        .values()
        .filter(|m| {
            db.workspaces
                .get(&m.workspace_id)
                .is_some_and(|w| w.organization_id == o.id)
        })
        .map(|m| m.user_id)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    json!({
        "id": o.id,
        "name": o.name,
        "pricing_plan_id": 0,
        "pricing_plan_name": plan_name,
        "pricing_plan_enterprise": plan_name == "Enterprise",
        "created_at": z_micros(o.created_at),
        "at": z_micros(o.at),
        "server_deleted_at": null,
        "is_multi_workspace_enabled": true,
        "is_unified": true,
        "suspended_at": null,
        "user_count": users,
        "trial_info": {
            "trial": false,
            "trial_available": false,
            "trial_end_date": null,
            "next_payment_date": null,
            "last_pricing_plan_id": null,
            "can_have_trial": false,
        },
        "is_chargify": false,
        "max_workspaces": 20,
        "max_data_retention_days": null,
        "admin": o.owner_id == caller,
        "owner": o.owner_id == caller,
        "permissions": null,
    })
}

/// A membership as `/workspaces/{wid}/workspace_users` lists it.
pub fn workspace_user(db: &Db, m: &WorkspaceUser) -> Value {
    let u = db.users.get(&m.user_id);
    let org_admin = db
        .workspaces
        .get(&m.workspace_id)
        .and_then(|w| db.organizations.get(&w.organization_id))
        .is_some_and(|o| o.owner_id == m.user_id);
    json!({
        "id": m.id,
        "uid": m.user_id,
        "wid": m.workspace_id,
        "name": u.map(|u| &u.fullname),
        "email": u.map(|u| &u.email),
        "timezone": u.map(|u| &u.timezone),
        "admin": m.role == Role::Admin,
        "workspace_admin": m.role == Role::Admin,
        "organization_admin": org_admin,
        "role": m.role.as_str(),
        "role_id": m.role.id(),
        "active": true,
        "inactive": m.inactive,
        "is_direct": true,
        "at": offset_secs(m.at),
        "rate": m.rate,
        "rate_last_updated": opt_time(m.rate_last_updated, offset_secs),
        "labor_cost": m.labor_cost,
        "labor_cost_last_updated": opt_time(m.labor_cost_last_updated, offset_secs),
        "view_edit_billable_rates": m.view_edit_billable_rates,
        "view_edit_labor_costs": m.view_edit_labor_costs,
        "working_hours_in_minutes": m.working_hours_in_minutes,
        "group_ids": [],
        "avatar_file_name": null,
        "invitation_code": null,
        "invite_url": null,
        "2fa_enabled": false,
    })
}

/// A member as `/workspaces/{wid}/users` lists it (`SimpleWorkspaceUser`; `id` is the user id).
pub fn simple_workspace_user(db: &Db, m: &WorkspaceUser) -> Value {
    let u = db.users.get(&m.user_id);
    json!({
        "id": m.user_id,
        "email": u.map(|u| &u.email),
        "fullname": u.map(|u| &u.fullname),
        "inactive": m.inactive,
        "is_active": !m.inactive,
        "is_admin": m.role == Role::Admin,
        "role": m.role.as_str(),
    })
}

/// A client.
pub fn client(c: &Client) -> Value {
    json!({
        "id": c.id,
        "wid": c.workspace_id,
        "archived": c.archived,
        "name": c.name,
        "at": offset_secs(c.at),
        "creator_id": c.creator_id,
        "notes": c.notes,
        "external_reference": c.external_reference,
        "integration_provider": null,
        "integration_ext_id": null,
        "integration_ext_type": null,
        "permissions": null,
        "server_deleted_at": opt_time(c.server_deleted_at, offset_secs),
    })
}

/// Tracked seconds per project (stopped, not deleted entries), for `actual_seconds`.
pub fn tracked_by_project(db: &Db, workspace_id: i64) -> HashMap<i64, i64> {
    let mut out = HashMap::new();
    for te in db.time_entries(workspace_id) {
        if let (Some(p), false, false) = (te.project_id, te.is_running(), te.is_deleted()) {
            *out.entry(p).or_insert(0) += te.duration;
        }
    }
    out
}

/// A project; `actual_seconds` comes from [`tracked_by_project`].
pub fn project(db: &Db, p: &Project, actual_seconds: i64) -> Value {
    let client = p.client_id.and_then(|c| db.clients.get(&c));
    let status = if p.server_deleted_at.is_some() {
        "deleted"
    } else if !p.active {
        "archived"
    } else {
        "active"
    };
    json!({
        "id": p.id,
        "workspace_id": p.workspace_id,
        "client_id": p.client_id,
        "name": p.name,
        "is_private": p.is_private,
        "active": p.active,
        "at": offset_secs(p.at),
        "created_at": offset_secs(p.created_at),
        "server_deleted_at": opt_time(p.server_deleted_at, offset_secs),
        "color": p.color,
        "billable": p.billable,
        "template": p.template,
        "template_id": null,
        "auto_estimates": p.auto_estimates,
        "estimated_hours": p.estimated_hours,
        "estimated_seconds": p.estimated_hours.map(|h| h * 3600),
        "rate": p.rate,
        "rate_last_updated": null,
        "currency": p.currency,
        "recurring": p.recurring,
        "recurring_parameters": null,
        "current_period": null,
        "fixed_fee": p.fixed_fee,
        "actual_hours": actual_seconds / 3600,
        "actual_seconds": actual_seconds,
        "start_date": p.start_date,
        "end_date": p.end_date,
        "status": status,
        "pinned": false,
        "can_track_time": true,
        "client_name": client.map(|c| &c.name),
        "external_reference": p.external_reference,
        "integration_provider": null,
        "integration_ext_id": null,
        "integration_ext_type": null,
        "wid": p.workspace_id,
        "cid": p.client_id,
        "permissions": null,
    })
}

/// Tracked seconds per task (for `tracked_seconds`).
pub fn tracked_by_task(db: &Db, workspace_id: i64) -> HashMap<i64, i64> {
    let mut out = HashMap::new();
    for te in db.time_entries(workspace_id) {
        if let (Some(t), false, false) = (te.task_id, te.is_running(), te.is_deleted()) {
            *out.entry(t).or_insert(0) += te.duration;
        }
    }
    out
}

/// A task. `tracked_seconds` is sent in milliseconds, as the swagger warns the real API does.
pub fn task(db: &Db, t: &Task, tracked_seconds: i64) -> Value {
    let project = db.projects.get(&t.project_id);
    let client = project
        .and_then(|p| p.client_id)
        .and_then(|c| db.clients.get(&c));
    let user = t.user_id.and_then(|u| db.users.get(&u));
    json!({
        "id": t.id,
        "name": t.name,
        "workspace_id": t.workspace_id,
        "project_id": t.project_id,
        "user_id": t.user_id,
        "recurring": false,
        "active": t.active,
        "at": offset_secs(t.at),
        "server_deleted_at": opt_time(t.server_deleted_at, offset_secs),
        "estimated_seconds": t.estimated_seconds,
        "tracked_seconds": tracked_seconds * 1000,
        "rate": null,
        "rate_last_updated": null,
        "external_reference": t.external_reference,
        "integration_provider": null,
        "integration_ext_id": null,
        "integration_ext_type": null,
        "permissions": null,
        "toggl_accounts_id": null,
        "project_name": project.map(|p| &p.name),
        "project_color": project.map(|p| &p.color),
        "project_billable": project.map(|p| p.billable),
        "project_is_private": project.map(|p| p.is_private),
        "client_id": client.map(|c| c.id),
        "client_name": client.map(|c| &c.name),
        "user_name": user.map(|u| &u.fullname),
        "avatar_url": user.map(|_| IMAGE_URL),
    })
}

/// A tag.
pub fn tag(t: &Tag) -> Value {
    json!({
        "id": t.id,
        "workspace_id": t.workspace_id,
        "name": t.name,
        "at": offset_secs(t.at),
        "creator_id": t.creator_id,
        "deleted_at": opt_time(t.deleted_at, offset_secs),
        "integration_provider": null,
        "integration_ext_id": null,
        "integration_ext_type": null,
        "permissions": null,
    })
}

/// A project membership.
pub fn project_user(pu: &ProjectUser) -> Value {
    json!({
        "id": pu.id,
        "project_id": pu.project_id,
        "user_id": pu.user_id,
        "workspace_id": pu.workspace_id,
        "manager": pu.manager,
        "rate": pu.rate,
        "rate_last_updated": opt_time(pu.rate_last_updated, offset_secs),
        "labor_cost": pu.labor_cost,
        "labor_cost_last_updated": opt_time(pu.labor_cost_last_updated, offset_secs),
        "group_id": null,
        "gid": null,
        "at": offset_secs(pu.at),
    })
}

/// Sets `server_deleted_at` on a rendered entity for a delete event payload.
pub fn with_deleted_at(mut v: Value, key: &str, at: DateTime<Utc>) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.insert(key.into(), Value::String(offset_secs(at)));
    }
    v
}
