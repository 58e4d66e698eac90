//! Clients, projects, tasks, tags and project users of a workspace.
//!
//! UNCONFIRMED choices (documented in the crate docs too): duplicate client and project names
//! answer 400 `Name has already been taken` (Toggl's long-standing wording); a missing project,
//! task or project user answers 404 `Resource can not be found`; `GET .../projects` without
//! `active` lists active projects only; DELETE of a client/project/project user answers its id
//! as a JSON number (the swagger declares a number), DELETE of a tag or task an empty body.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{bump, now, project_visible, since_ok, workspaces::empty_ok, ws_access};
use crate::app::{AppState, Event};
use crate::edge::{
    ApiError, ApiResult, Call, Field, Input, PatchOp, ok, parse_id_list, parse_patch, path_id,
};
use crate::model::{Client, Db, IdKind, Project, ProjectUser, Tag, Task};
use crate::render;
use crate::webhooks::Action;

const NAME_TAKEN: &str = "Name has already been taken";
const CLIENT_NAME_MAX: usize = 100;
/// Toggl's default project palette (first entries).
const PALETTE: [&str; 8] = [
    "#0b83d9", "#9e5bd9", "#d94182", "#e36a00", "#bf7000", "#2da608", "#06a893", "#c9806b",
];

fn resource_not_found() -> ApiError {
    ApiError::not_found("Resource can not be found")
}

fn event(wid: i64, entity: &'static str, action: Action, id: i64, payload: Value) -> Event {
    Event {
        workspace_id: wid,
        entity,
        action,
        entity_id: id,
        model_owner_id: None,
        payload,
        project: None,
    }
}

// ---------------------------------------------------------------- clients

/// `GET /workspaces/{wid}/clients` (`status` active|archived|both, `name` contains).
pub(crate) async fn list_clients(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let status = call.q("status").unwrap_or("active").to_owned();
    if !matches!(status.as_str(), "active" | "archived" | "both") {
        return Err(ApiError::bad_request("Client status is invalid"));
    }
    let name = call.q("name").map(str::to_lowercase);
    let db = s.inner.db.read();
    ws_access(&db, call.user_id, wid)?;
    let out: Vec<Value> = db
        .clients(wid)
        .filter(|c| c.server_deleted_at.is_none())
        .filter(|c| match status.as_str() {
            "active" => !c.archived,
            "archived" => c.archived,
            _ => true,
        })
        .filter(|c| {
            name.as_ref()
                .is_none_or(|n| c.name.to_lowercase().contains(n.as_str()))
        })
        .map(render::client)
        .collect();
    ok(json!(out))
}

fn client_name(input: &Input, required: bool) -> Result<Option<String>, ApiError> {
    match input.str(&["name"])? {
        Field::Set(n) => {
            let n = n.trim().to_owned();
            if n.is_empty() {
                Err(ApiError::bad_request("Client name cannot be empty"))
            } else if n.chars().count() > CLIENT_NAME_MAX {
                Err(ApiError::bad_request(format!(
                    "Client name maximum length is {CLIENT_NAME_MAX}"
                )))
            } else {
                Ok(Some(n))
            }
        }
        _ if required => Err(ApiError::bad_request("Client name cannot be empty")),
        _ => Ok(None),
    }
}

fn client_name_taken(db: &Db, wid: i64, name: &str, except: i64) -> bool {
    db.clients(wid).any(|c| {
        c.id != except && c.server_deleted_at.is_none() && c.name.eq_ignore_ascii_case(name)
    })
}

/// `POST /workspaces/{wid}/clients`.
pub(crate) async fn create_client(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let input = call.input()?;
    let notes = input.str(&["notes"])?;
    let ext = input.str(&["external_reference"])?;
    let (body, events) = {
        let mut db = s.inner.db.write();
        ws_access(&db, call.user_id, wid)?;
        let name = client_name(&input, true)?.expect("required");
        if client_name_taken(&db, wid, &name, 0) {
            return Err(ApiError::bad_request(NAME_TAKEN));
        }
        let id = db.ids.next(IdKind::Client);
        let c = Client {
            id,
            workspace_id: wid,
            name,
            archived: false,
            notes: notes.value(),
            external_reference: ext.value(),
            creator_id: call.user_id,
            at: now(),
            server_deleted_at: None,
        };
        let v = render::client(&c);
        db.clients.insert(id, c);
        (
            v.clone(),
            vec![event(wid, "client", Action::Created, id, v)],
        )
    };
    s.publish_all(&call, events);
    ok(body)
}

/// `GET /workspaces/{wid}/clients/{cid}`.
pub(crate) async fn get_client(
    State(s): State<AppState>,
    Path((wid, cid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let cid = path_id(&cid, "client_id")?;
    let db = s.inner.db.read();
    ws_access(&db, call.user_id, wid)?;
    let c = db
        .clients
        .get(&cid)
        .filter(|c| c.workspace_id == wid && c.server_deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("No client with ID {cid} was found")))?;
    ok(render::client(c))
}

/// `PUT /workspaces/{wid}/clients/{cid}`.
pub(crate) async fn update_client(
    State(s): State<AppState>,
    Path((wid, cid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let cid = path_id(&cid, "client_id")?;
    let input = call.input()?;
    let notes = input.str(&["notes"])?;
    let ext = input.str(&["external_reference"])?;
    let archived = input.bool(&["archived"])?;
    let (body, events) = {
        let mut db = s.inner.db.write();
        ws_access(&db, call.user_id, wid)?;
        if !db
            .clients
            .get(&cid)
            .is_some_and(|c| c.workspace_id == wid && c.server_deleted_at.is_none())
        {
            return Err(ApiError::not_found(
                "Client doesn't exist in the workspace.",
            ));
        }
        let name = client_name(&input, false)?;
        if let Some(n) = &name
            && client_name_taken(&db, wid, n, cid)
        {
            return Err(ApiError::bad_request(NAME_TAKEN));
        }
        let c = db.clients.get_mut(&cid).expect("checked above");
        if let Some(n) = name {
            c.name = n;
        }
        notes.apply_opt(&mut c.notes);
        ext.apply_opt(&mut c.external_reference);
        archived.apply(&mut c.archived);
        c.at = bump(c.at);
        let v = render::client(c);
        (
            v.clone(),
            vec![event(wid, "client", Action::Updated, cid, v)],
        )
    };
    s.publish_all(&call, events);
    ok(body)
}

/// `DELETE /workspaces/{wid}/clients/{cid}`: projects of the client lose their client.
pub(crate) async fn delete_client(
    State(s): State<AppState>,
    Path((wid, cid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let cid = path_id(&cid, "client_id")?;
    let events = {
        let mut db = s.inner.db.write();
        ws_access(&db, call.user_id, wid)?;
        let t = now();
        let Some(c) = db
            .clients
            .get_mut(&cid)
            .filter(|c| c.workspace_id == wid && c.server_deleted_at.is_none())
        else {
            return Err(ApiError::not_found(format!(
                "No client with ID {cid} was found"
            )));
        };
        c.server_deleted_at = Some(t);
        c.at = bump(c.at);
        let mut events = vec![event(
            wid,
            "client",
            Action::Deleted,
            cid,
            render::client(c),
        )];
        let affected: Vec<i64> = db
            .projects(wid)
            .filter(|p| p.client_id == Some(cid))
            .map(|p| p.id)
            .collect();
        for pid in affected {
            let p = db.projects.get_mut(&pid).expect("listed above");
            p.client_id = None;
            p.at = bump(p.at);
            let p = p.clone();
            events.push(project_event(&db, &p, Action::Updated));
        }
        events
    };
    s.publish_all(&call, events);
    ok(json!(cid))
}

// ---------------------------------------------------------------- projects

fn project_event(db: &Db, p: &Project, action: Action) -> Event {
    let tracked = render::tracked_by_project(db, p.workspace_id);
    Event {
        workspace_id: p.workspace_id,
        entity: "project",
        action,
        entity_id: p.id,
        model_owner_id: Some(p.creator_id),
        payload: render::project(db, p, tracked.get(&p.id).copied().unwrap_or(0)),
        project: Some((p.id, p.is_private)),
    }
}

fn is_manager(db: &Db, user_id: i64, project_id: i64) -> bool {
    db.project_users
        .values()
        .any(|pu| pu.project_id == project_id && pu.user_id == user_id && pu.manager)
}

fn valid_color(c: &str) -> bool {
    c.len() == 7
        && c.starts_with('#')
        && c[1..]
            .chars()
            .all(|ch| ch.is_ascii_digit() || ('a'..='f').contains(&ch))
}

fn valid_date(d: &str) -> bool {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()
}

/// Applies a project payload (create or update) to `p`, validating against the workspace.
fn apply_project(db: &Db, p: &mut Project, input: &Input, paid: bool) -> Result<(), ApiError> {
    let wid = p.workspace_id;
    if let Field::Set(name) = input.str(&["name"])? {
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(ApiError::bad_request("Project name must not be empty"));
        }
        p.name = name;
    }
    let client = input.i64(&["client_id", "cid"])?;
    match client {
        Field::Set(cid) => {
            if !db
                .clients
                .get(&cid)
                .is_some_and(|c| c.workspace_id == wid && c.server_deleted_at.is_none())
            {
                return Err(ApiError::bad_request(format!(
                    "Client with the ID {cid} isn't present in workspace {wid}"
                )));
            }
            p.client_id = Some(cid);
        }
        Field::Null => p.client_id = None,
        Field::Absent => {
            if let Field::Set(cname) = input.str(&["client_name"])? {
                let c = db
                    .clients(wid)
                    .find(|c| c.server_deleted_at.is_none() && c.name.eq_ignore_ascii_case(&cname))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Client with the name {cname} isn't present in workspace {wid}"
                        ))
                    })?;
                p.client_id = Some(c.id);
            }
        }
    }
    if let Field::Set(color) = input.str(&["color"])? {
        let lower = color.to_lowercase();
        if !valid_color(&lower) {
            return Err(ApiError::bad_request(format!(
                "Error in validating color '{color}'. Project color must be a hex value in the form of #[0-9a-f]{{6}}."
            )));
        }
        p.color = lower;
    }
    let billable = input.bool(&["billable"])?;
    if billable == Field::Set(true) && !paid {
        return Err(ApiError::new(
            http::StatusCode::PAYMENT_REQUIRED,
            "Request tried to utilized Premium functionality on workspace which is not Premium!",
        ));
    }
    billable.apply(&mut p.billable);
    input.bool(&["active"])?.apply(&mut p.active);
    input.bool(&["is_private"])?.apply(&mut p.is_private);
    input.bool(&["template"])?.apply(&mut p.template);
    input
        .bool(&["auto_estimates"])?
        .apply(&mut p.auto_estimates);
    input.bool(&["recurring"])?.apply(&mut p.recurring);
    input
        .i64(&["estimated_hours"])?
        .apply_opt(&mut p.estimated_hours);
    input.f64(&["rate"])?.apply_opt(&mut p.rate);
    input.str(&["currency"])?.apply_opt(&mut p.currency);
    input.f64(&["fixed_fee"])?.apply_opt(&mut p.fixed_fee);
    input
        .str(&["external_reference"])?
        .apply_opt(&mut p.external_reference);
    if let Field::Set(d) = input.str(&["start_date"])? {
        if !valid_date(&d) {
            return Err(ApiError::bad_request("Invalid start_date"));
        }
        p.start_date = d;
    }
    let end = input.str(&["end_date"])?;
    if let Field::Set(d) = &end
        && !valid_date(d)
    {
        return Err(ApiError::bad_request("Invalid end_date"));
    }
    end.apply_opt(&mut p.end_date);
    let taken = db.projects(wid).any(|o| {
        o.id != p.id
            && o.server_deleted_at.is_none()
            && o.client_id == p.client_id
            && o.name.eq_ignore_ascii_case(&p.name)
    });
    if taken {
        return Err(ApiError::bad_request(NAME_TAKEN));
    }
    Ok(())
}

/// `GET /workspaces/{wid}/projects` (`active` true|false|both, `since`, `name`, `client_ids`,
/// `project_ids`, `billable`, `page`, `per_page` default 151 max 200).
pub(crate) async fn list_projects(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let since = call.q_i64("since")?;
    let active = call.q("active").unwrap_or("true").to_lowercase();
    let name = call.q("name").or(call.q("search")).map(str::to_lowercase);
    let client_ids = call.q_ids("client_ids")?;
    let project_ids = call.q_ids("project_ids")?;
    let billable = call.q("billable").map(|b| b.eq_ignore_ascii_case("true"));
    let page = call.q_i64("page")?.unwrap_or(1).max(1) as usize;
    let per_page = call.q_i64("per_page")?.unwrap_or(151).clamp(1, 200) as usize;
    let db = s.inner.db.read();
    let admin = ws_access(&db, call.user_id, wid)?;
    let tracked = render::tracked_by_project(&db, wid);
    let mut list: Vec<&Project> = db
        .projects(wid)
        .filter(|p| since.is_some() || p.server_deleted_at.is_none())
        .filter(|p| since_ok(since, p.at))
        .filter(|p| match active.as_str() {
            "false" => !p.active,
            "both" => true,
            _ => p.active || (since.is_some() && p.server_deleted_at.is_some()),
        })
        .filter(|p| {
            name.as_ref()
                .is_none_or(|n| p.name.to_lowercase().contains(n.as_str()))
        })
        .filter(|p| {
            client_ids
                .as_ref()
                .is_none_or(|ids| p.client_id.is_some_and(|c| ids.contains(&c)))
        })
        .filter(|p| project_ids.as_ref().is_none_or(|ids| ids.contains(&p.id)))
        .filter(|p| billable.is_none_or(|b| p.billable == b))
        .filter(|p| project_visible(&db, call.user_id, admin, p))
        .collect();
    list.sort_by(|a, b| {
        a.name
            .to_lowercase()
            .cmp(&b.name.to_lowercase())
            .then(a.id.cmp(&b.id))
    });
    let out: Vec<Value> = list
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|p| render::project(&db, p, tracked.get(&p.id).copied().unwrap_or(0)))
        .collect();
    ok(json!(out))
}

/// `POST /workspaces/{wid}/projects`.
pub(crate) async fn create_project(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let input = call.input()?;
    let paid = s.config().plan.is_paid();
    let (body, events) = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        let ws = db.workspace(wid).cloned().ok_or_else(ApiError::forbidden)?;
        if ws.only_admins_may_create_projects && !admin {
            return Err(ApiError::new(
                http::StatusCode::FORBIDDEN,
                "Only admins may create projects in this workspace",
            ));
        }
        if !matches!(input.str(&["name"])?, Field::Set(_)) {
            return Err(ApiError::bad_request("Project name must not be empty"));
        }
        let t = now();
        let count = db.projects(wid).count();
        let mut p = Project {
            id: 0,
            workspace_id: wid,
            client_id: None,
            name: String::new(),
            is_private: ws.projects_private_by_default,
            active: true,
            color: PALETTE[count % PALETTE.len()].to_owned(),
            billable: ws.projects_billable_by_default && paid,
            template: false,
            auto_estimates: false,
            estimated_hours: None,
            rate: None,
            currency: None,
            fixed_fee: None,
            start_date: Utc::now().date_naive().format("%Y-%m-%d").to_string(),
            end_date: None,
            recurring: false,
            external_reference: None,
            creator_id: call.user_id,
            created_at: t,
            at: t,
            server_deleted_at: None,
        };
        apply_project(&db, &mut p, &input, paid)?;
        if p.is_private && ws.only_admins_may_create_projects && !admin {
            return Err(ApiError::new(
                http::StatusCode::FORBIDDEN,
                "Only admins may create private projects in this workspace",
            ));
        }
        p.id = db.ids.next(IdKind::Project);
        db.projects.insert(p.id, p.clone());
        let mut events = vec![project_event(&db, &p, Action::Created)];
        // The creator manages the project they created (so a private one stays visible).
        let puid = db.ids.next(IdKind::ProjectUser);
        let pu = ProjectUser {
            id: puid,
            workspace_id: wid,
            project_id: p.id,
            user_id: call.user_id,
            manager: true,
            rate: None,
            rate_last_updated: None,
            labor_cost: None,
            labor_cost_last_updated: None,
            at: t,
        };
        events.push(Event {
            project: Some((p.id, p.is_private)),
            ..event(
                wid,
                "project_user",
                Action::Created,
                puid,
                render::project_user(&pu),
            )
        });
        db.project_users.insert(puid, pu);
        (events[0].payload.clone(), events)
    };
    s.publish_all(&call, events);
    ok(body)
}

fn visible_project(
    db: &Db,
    user_id: i64,
    admin: bool,
    wid: i64,
    pid: i64,
) -> Result<&Project, ApiError> {
    db.projects
        .get(&pid)
        .filter(|p| p.workspace_id == wid && p.server_deleted_at.is_none())
        .filter(|p| project_visible(db, user_id, admin, p))
        .ok_or_else(resource_not_found)
}

/// `GET /workspaces/{wid}/projects/{pid}`.
pub(crate) async fn get_project(
    State(s): State<AppState>,
    Path((wid, pid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let pid = path_id(&pid, "project_id")?;
    let db = s.inner.db.read();
    let admin = ws_access(&db, call.user_id, wid)?;
    let p = visible_project(&db, call.user_id, admin, wid, pid)?;
    let tracked = render::tracked_by_project(&db, wid);
    ok(render::project(
        &db,
        p,
        tracked.get(&pid).copied().unwrap_or(0),
    ))
}

/// Updates one project for PUT and bulk PATCH; returns its events.
fn update_one_project(
    db: &mut Db,
    user_id: i64,
    admin: bool,
    wid: i64,
    pid: i64,
    input: &Input,
    paid: bool,
) -> Result<Vec<Event>, ApiError> {
    let mut p = visible_project(db, user_id, admin, wid, pid)?.clone();
    if !admin && !is_manager(db, user_id, pid) {
        return Err(ApiError::forbidden());
    }
    apply_project(db, &mut p, input, paid)?;
    p.at = bump(p.at);
    db.projects.insert(pid, p.clone());
    Ok(vec![project_event(db, &p, Action::Updated)])
}

/// `PUT /workspaces/{wid}/projects/{pid}` (admins and project managers).
pub(crate) async fn update_project(
    State(s): State<AppState>,
    Path((wid, pid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let pid = path_id(&pid, "project_id")?;
    let input = call.input()?;
    let paid = s.config().plan.is_paid();
    let (body, events) = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        let events = update_one_project(&mut db, call.user_id, admin, wid, pid, &input, paid)?;
        (events[0].payload.clone(), events)
    };
    s.publish_all(&call, events);
    ok(body)
}

/// Turns JSON-patch operations into an update body (`remove` sets null).
pub(crate) fn patch_to_input(ops: &[PatchOp]) -> Input {
    let mut map = Map::new();
    for op in ops {
        let v = if op.op == "remove" {
            Value::Null
        } else {
            op.value.clone()
        };
        map.insert(op.field.clone(), v);
    }
    Input::from_map(map)
}

/// `PATCH /workspaces/{wid}/projects/{ids}`: JSON-patch on several projects, partial success.
pub(crate) async fn patch_projects(
    State(s): State<AppState>,
    Path((wid, ids)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let ids = parse_id_list(&ids).ok_or_else(|| ApiError::bad_request("Invalid project_id"))?;
    let ops = parse_patch(&call.body)?;
    let input = patch_to_input(&ops);
    let paid = s.config().plan.is_paid();
    let mut success = Vec::new();
    let mut failure = Vec::new();
    let mut events = Vec::new();
    {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        for id in ids {
            match update_one_project(&mut db, call.user_id, admin, wid, id, &input, paid) {
                Ok(ev) => {
                    success.push(id);
                    events.extend(ev);
                }
                Err(e) => failure.push(json!({"id": id, "message": e.message})),
            }
        }
    }
    s.publish_all(&call, events);
    ok(json!({"success": success, "failure": failure}))
}

/// `DELETE /workspaces/{wid}/projects/{pid}` (`teDeletionMode` = `delete` | `unassign`,
/// default `unassign`).
pub(crate) async fn delete_project(
    State(s): State<AppState>,
    Path((wid, pid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let pid = path_id(&pid, "project_id")?;
    let delete_entries = call.q("teDeletionMode") == Some("delete");
    let events = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        visible_project(&db, call.user_id, admin, wid, pid)?;
        if !admin && !is_manager(&db, call.user_id, pid) {
            return Err(ApiError::forbidden());
        }
        let t = now();
        let p = db.projects.get_mut(&pid).expect("checked above");
        p.server_deleted_at = Some(t);
        p.at = bump(p.at);
        let p = p.clone();
        let mut events = vec![project_event(&db, &p, Action::Deleted)];
        let entries: Vec<i64> = db
            .time_entries(wid)
            .filter(|te| te.project_id == Some(pid) && !te.is_deleted())
            .map(|te| te.id)
            .collect();
        for id in entries {
            let te = db.time_entries.get_mut(&id).expect("listed above");
            let action = if delete_entries {
                te.server_deleted_at = Some(t);
                Action::Deleted
            } else {
                te.project_id = None;
                te.task_id = None;
                Action::Updated
            };
            te.at = bump(te.at);
            let te = te.clone();
            events.push(super::time_entries::te_event(&db, &te, action));
        }
        for task in db.tasks.values_mut().filter(|t| t.project_id == pid) {
            task.server_deleted_at.get_or_insert(t);
        }
        events
    };
    s.publish_all(&call, events);
    ok(json!(pid))
}

// ---------------------------------------------------------------- tasks

fn task_event(db: &Db, t: &Task, action: Action) -> Event {
    let private = db.projects.get(&t.project_id).is_some_and(|p| p.is_private);
    let tracked = render::tracked_by_task(db, t.workspace_id);
    Event {
        workspace_id: t.workspace_id,
        entity: "task",
        action,
        entity_id: t.id,
        model_owner_id: t.user_id,
        payload: render::task(db, t, tracked.get(&t.id).copied().unwrap_or(0)),
        project: Some((t.project_id, private)),
    }
}

/// `GET /workspaces/{wid}/projects/{pid}/tasks` (`active=true|false`; default all).
pub(crate) async fn list_project_tasks(
    State(s): State<AppState>,
    Path((wid, pid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let pid = path_id(&pid, "project_id")?;
    let active = call.q("active").map(str::to_lowercase);
    let db = s.inner.db.read();
    let admin = ws_access(&db, call.user_id, wid)?;
    visible_project(&db, call.user_id, admin, wid, pid)
        .map_err(|_| ApiError::bad_request("Invalid project_id"))?;
    let tracked = render::tracked_by_task(&db, wid);
    let out: Vec<Value> = db
        .tasks(wid)
        .filter(|t| t.project_id == pid && t.server_deleted_at.is_none())
        .filter(|t| match active.as_deref() {
            Some("true") => t.active,
            Some("false") => !t.active,
            _ => true,
        })
        .map(|t| render::task(&db, t, tracked.get(&t.id).copied().unwrap_or(0)))
        .collect();
    ok(json!(out))
}

fn apply_task(db: &Db, t: &mut Task, input: &Input) -> Result<(), ApiError> {
    if let Field::Set(name) = input.str(&["name"])? {
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(ApiError::bad_request("Task name can't be blank"));
        }
        t.name = name;
    }
    input.bool(&["active"])?.apply(&mut t.active);
    input
        .i64(&["estimated_seconds"])?
        .apply_opt(&mut t.estimated_seconds);
    input
        .str(&["external_reference"])?
        .apply_opt(&mut t.external_reference);
    let user = input.i64(&["user_id", "uid"])?;
    if let Field::Set(u) = user
        && db.access(u, t.workspace_id).is_none()
    {
        return Err(ApiError::bad_request("Invalid user_id"));
    }
    user.apply_opt(&mut t.user_id);
    let taken = db.tasks(t.workspace_id).any(|o| {
        o.id != t.id
            && o.project_id == t.project_id
            && o.server_deleted_at.is_none()
            && o.name.eq_ignore_ascii_case(&t.name)
    });
    if taken {
        return Err(ApiError::bad_request(NAME_TAKEN));
    }
    Ok(())
}

/// Checks project access for task changes: admins and project managers, active project.
fn task_project_check(
    db: &Db,
    user_id: i64,
    admin: bool,
    wid: i64,
    pid: i64,
) -> Result<(), ApiError> {
    let p = visible_project(db, user_id, admin, wid, pid)
        .map_err(|_| ApiError::bad_request("Invalid project_id"))?;
    if !admin && !is_manager(db, user_id, pid) {
        return Err(ApiError::forbidden());
    }
    if !p.active {
        return Err(ApiError::bad_request(
            "Can not change tasks of archived project",
        ));
    }
    Ok(())
}

/// `POST /workspaces/{wid}/projects/{pid}/tasks`.
pub(crate) async fn create_task(
    State(s): State<AppState>,
    Path((wid, pid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let pid = path_id(&pid, "project_id")?;
    let input = call.input()?;
    let (body, events) = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        task_project_check(&db, call.user_id, admin, wid, pid)?;
        if !matches!(input.str(&["name"])?, Field::Set(_)) {
            return Err(ApiError::bad_request("Task name can't be blank"));
        }
        let mut t = Task {
            id: 0,
            workspace_id: wid,
            project_id: pid,
            name: String::new(),
            active: true,
            estimated_seconds: None,
            user_id: None,
            external_reference: None,
            at: now(),
            server_deleted_at: None,
        };
        apply_task(&db, &mut t, &input)?;
        t.id = db.ids.next(IdKind::Task);
        db.tasks.insert(t.id, t.clone());
        let e = task_event(&db, &t, Action::Created);
        (e.payload.clone(), vec![e])
    };
    s.publish_all(&call, events);
    ok(body)
}

fn find_task(db: &Db, wid: i64, pid: i64, tid: i64) -> Result<&Task, ApiError> {
    db.tasks
        .get(&tid)
        .filter(|t| t.workspace_id == wid && t.project_id == pid && t.server_deleted_at.is_none())
        .ok_or_else(resource_not_found)
}

/// `GET /workspaces/{wid}/projects/{pid}/tasks/{tid}`.
pub(crate) async fn get_task(
    State(s): State<AppState>,
    Path((wid, pid, tid)): Path<(String, String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let pid = path_id(&pid, "project_id")?;
    let tid = path_id(&tid, "task_id")?;
    let db = s.inner.db.read();
    let admin = ws_access(&db, call.user_id, wid)?;
    visible_project(&db, call.user_id, admin, wid, pid)
        .map_err(|_| ApiError::bad_request("Invalid project_id"))?;
    let t = find_task(&db, wid, pid, tid)?;
    let tracked = render::tracked_by_task(&db, wid);
    ok(render::task(
        &db,
        t,
        tracked.get(&tid).copied().unwrap_or(0),
    ))
}

/// `PUT /workspaces/{wid}/projects/{pid}/tasks/{tid}`.
pub(crate) async fn update_task(
    State(s): State<AppState>,
    Path((wid, pid, tid)): Path<(String, String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let pid = path_id(&pid, "project_id")?;
    let tid = path_id(&tid, "task_id")?;
    let input = call.input()?;
    let (body, events) = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        task_project_check(&db, call.user_id, admin, wid, pid)?;
        let mut t = find_task(&db, wid, pid, tid)?.clone();
        apply_task(&db, &mut t, &input)?;
        t.at = bump(t.at);
        db.tasks.insert(tid, t.clone());
        let e = task_event(&db, &t, Action::Updated);
        (e.payload.clone(), vec![e])
    };
    s.publish_all(&call, events);
    ok(body)
}

/// `DELETE /workspaces/{wid}/projects/{pid}/tasks/{tid}` (200, empty body).
pub(crate) async fn delete_task(
    State(s): State<AppState>,
    Path((wid, pid, tid)): Path<(String, String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let pid = path_id(&pid, "project_id")?;
    let tid = path_id(&tid, "task_id")?;
    let events = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        task_project_check(&db, call.user_id, admin, wid, pid)?;
        find_task(&db, wid, pid, tid)?;
        let t = db.tasks.get_mut(&tid).expect("checked above");
        t.server_deleted_at = Some(now());
        t.at = bump(t.at);
        let t = t.clone();
        vec![task_event(&db, &t, Action::Deleted)]
    };
    s.publish_all(&call, events);
    Ok(empty_ok())
}

/// `GET /workspaces/{wid}/tasks`: paged envelope `{data, page, per_page, sort_field,
/// sort_order, total_count}` (`since, page, per_page (50), sort_order, sort_field
/// (name|created_at), active (true default|false|both), pid, search`).
pub(crate) async fn list_workspace_tasks(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let since = call.q_i64("since")?;
    let page = call.q_i64("page")?.unwrap_or(1).max(1);
    let per_page = call.q_i64("per_page")?.unwrap_or(50).clamp(1, 200);
    let sort_field = call.q("sort_field").unwrap_or("name").to_owned();
    if !matches!(sort_field.as_str(), "name" | "created_at") {
        return Err(ApiError::bad_request("Invalid sort_field"));
    }
    let sort_order = call.q("sort_order").unwrap_or("ASC").to_uppercase();
    if !matches!(sort_order.as_str(), "ASC" | "DESC") {
        return Err(ApiError::bad_request("Invalid sort_order"));
    }
    let active = call.q("active").unwrap_or("true").to_lowercase();
    let pid = call.q_i64("pid")?;
    let search = call.q("search").map(str::to_lowercase);
    let db = s.inner.db.read();
    let admin = ws_access(&db, call.user_id, wid)?;
    let mut list: Vec<&Task> = db
        .tasks(wid)
        .filter(|t| since.is_some() || t.server_deleted_at.is_none())
        .filter(|t| since_ok(since, t.at))
        .filter(|t| match active.as_str() {
            "false" => !t.active,
            "both" => true,
            _ => t.active,
        })
        .filter(|t| pid.is_none_or(|p| t.project_id == p))
        .filter(|t| {
            search
                .as_ref()
                .is_none_or(|q| t.name.to_lowercase().contains(q.as_str()))
        })
        .filter(|t| {
            db.projects
                .get(&t.project_id)
                .is_some_and(|p| project_visible(&db, call.user_id, admin, p))
        })
        .collect();
    if sort_field == "name" {
        list.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then(a.id.cmp(&b.id))
        });
    } else {
        // Ids grow with creation time.
        list.sort_by_key(|t| t.id);
    }
    if sort_order == "DESC" {
        list.reverse();
    }
    let total = list.len();
    let tracked = render::tracked_by_task(&db, wid);
    let data: Vec<Value> = list
        .into_iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .map(|t| render::task(&db, t, tracked.get(&t.id).copied().unwrap_or(0)))
        .collect();
    ok(json!({
        "data": data,
        "page": page,
        "per_page": per_page,
        "sort_field": sort_field,
        "sort_order": sort_order,
        "total_count": total,
    }))
}

// ---------------------------------------------------------------- tags

const TAG_ADMINS_ONLY: &str =
    "Only organization or workspace administrators may manage tags in this workspace.";

fn tag_name(input: &Input) -> Result<String, ApiError> {
    match input.str(&["name"])? {
        Field::Set(n) if !n.trim().is_empty() => Ok(n.trim().to_owned()),
        _ => Err(ApiError::bad_request("tag name can't be blank")),
    }
}

fn tag_taken(db: &Db, wid: i64, name: &str, except: i64) -> bool {
    db.tags(wid)
        .any(|t| t.id != except && t.deleted_at.is_none() && t.name.eq_ignore_ascii_case(name))
}

/// Finds a live tag by name or creates it (used by time entries); returns its id and whether
/// it was created.
pub(crate) fn tag_by_name(db: &mut Db, wid: i64, name: &str, creator: i64) -> (i64, Option<Tag>) {
    if let Some(t) = db
        .tags(wid)
        .find(|t| t.deleted_at.is_none() && t.name == name)
    {
        return (t.id, None);
    }
    let id = db.ids.next(IdKind::Tag);
    let t = Tag {
        id,
        workspace_id: wid,
        name: name.to_owned(),
        creator_id: creator,
        at: now(),
        deleted_at: None,
    };
    db.tags.insert(id, t.clone());
    (id, Some(t))
}

/// `GET /workspaces/{wid}/tags` (`search`, `page`, `per_page`).
pub(crate) async fn list_tags(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let search = call.q("search").map(str::to_lowercase);
    let page = call.q_i64("page")?;
    let per_page = call.q_i64("per_page")?;
    let db = s.inner.db.read();
    ws_access(&db, call.user_id, wid)?;
    let mut list: Vec<&Tag> = db
        .tags(wid)
        .filter(|t| t.deleted_at.is_none())
        .filter(|t| {
            search
                .as_ref()
                .is_none_or(|q| t.name.to_lowercase().contains(q.as_str()))
        })
        .collect();
    list.sort_by(|a, b| {
        a.name
            .to_lowercase()
            .cmp(&b.name.to_lowercase())
            .then(a.id.cmp(&b.id))
    });
    let (skip, take) = match (page, per_page) {
        (None, None) => (0, usize::MAX),
        (p, pp) => {
            let pp = pp.unwrap_or(200).clamp(1, 200) as usize;
            ((p.unwrap_or(1).max(1) as usize - 1) * pp, pp)
        }
    };
    let out: Vec<Value> = list
        .into_iter()
        .skip(skip)
        .take(take)
        .map(render::tag)
        .collect();
    ok(json!(out))
}

/// `POST /workspaces/{wid}/tags`: returns ONE tag object (as real clients parse it).
pub(crate) async fn create_tag(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let input = call.input()?;
    let (body, events) = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        if !admin
            && db
                .workspace(wid)
                .is_some_and(|w| w.only_admins_may_create_tags)
        {
            return Err(ApiError::new(http::StatusCode::FORBIDDEN, TAG_ADMINS_ONLY));
        }
        let name = tag_name(&input)?;
        if tag_taken(&db, wid, &name, 0) {
            return Err(ApiError::bad_request(format!(
                "a tag with the name '{name}' already exists"
            )));
        }
        let (_, created) = tag_by_name(&mut db, wid, &name, call.user_id);
        let t = created.expect("name checked free above");
        let v = render::tag(&t);
        (v.clone(), vec![event(wid, "tag", Action::Created, t.id, v)])
    };
    s.publish_all(&call, events);
    ok(body)
}

fn tag_admin_check(db: &Db, user_id: i64, wid: i64) -> Result<(), ApiError> {
    let admin = ws_access(db, user_id, wid)?;
    if !admin
        && db
            .workspace(wid)
            .is_some_and(|w| w.only_admins_may_create_tags)
    {
        return Err(ApiError::new(http::StatusCode::FORBIDDEN, TAG_ADMINS_ONLY));
    }
    Ok(())
}

/// `PUT /workspaces/{wid}/tags/{tag_id}`: returns the tag object.
pub(crate) async fn update_tag(
    State(s): State<AppState>,
    Path((wid, tag_id)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let tag_id = path_id(&tag_id, "tag ID")?;
    let input = call.input()?;
    let (body, events) = {
        let mut db = s.inner.db.write();
        tag_admin_check(&db, call.user_id, wid)?;
        if !db
            .tags
            .get(&tag_id)
            .is_some_and(|t| t.workspace_id == wid && t.deleted_at.is_none())
        {
            return Err(ApiError::not_found("Tag was not found"));
        }
        let name = tag_name(&input)?;
        if tag_taken(&db, wid, &name, tag_id) {
            return Err(ApiError::bad_request(format!(
                "a tag with the name '{name}' already exists"
            )));
        }
        let t = db.tags.get_mut(&tag_id).expect("checked above");
        t.name = name;
        t.at = bump(t.at);
        let v = render::tag(t);
        (
            v.clone(),
            vec![event(wid, "tag", Action::Updated, tag_id, v)],
        )
    };
    s.publish_all(&call, events);
    ok(body)
}

/// `DELETE /workspaces/{wid}/tags/{tag_id}` (200, empty body; entries stop listing the tag).
pub(crate) async fn delete_tag(
    State(s): State<AppState>,
    Path((wid, tag_id)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let tag_id = path_id(&tag_id, "tag ID.")?;
    let events = {
        let mut db = s.inner.db.write();
        tag_admin_check(&db, call.user_id, wid)?;
        let Some(t) = db
            .tags
            .get_mut(&tag_id)
            .filter(|t| t.workspace_id == wid && t.deleted_at.is_none())
        else {
            return Err(ApiError::not_found("Tag was not found."));
        };
        t.deleted_at = Some(now());
        t.at = bump(t.at);
        vec![event(wid, "tag", Action::Deleted, tag_id, render::tag(t))]
    };
    s.publish_all(&call, events);
    Ok(empty_ok())
}

// ---------------------------------------------------------------- project users

fn pu_event(db: &Db, pu: &ProjectUser, action: Action) -> Event {
    let private = db
        .projects
        .get(&pu.project_id)
        .is_some_and(|p| p.is_private);
    Event {
        workspace_id: pu.workspace_id,
        entity: "project_user",
        action,
        entity_id: pu.id,
        model_owner_id: Some(pu.user_id),
        payload: render::project_user(pu),
        project: Some((pu.project_id, private)),
    }
}

/// `GET /workspaces/{wid}/project_users` (`project_ids` ≤ 200, `user_id`).
pub(crate) async fn list_project_users(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let project_ids = call.q_ids("project_ids")?;
    if project_ids.as_ref().is_some_and(|p| p.len() > 200) {
        return Err(ApiError::bad_request(
            "project_ids cannot exceed 200 elements.",
        ));
    }
    let user_id = call
        .q_i64("user_id")
        .map_err(|_| ApiError::bad_request("Invalid user_id"))?;
    let db = s.inner.db.read();
    let admin = ws_access(&db, call.user_id, wid)?;
    let out: Vec<Value> = db
        .project_users
        .values()
        .filter(|pu| pu.workspace_id == wid)
        .filter(|pu| {
            project_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&pu.project_id))
        })
        .filter(|pu| user_id.is_none_or(|u| pu.user_id == u))
        .filter(|pu| {
            db.projects.get(&pu.project_id).is_some_and(|p| {
                p.server_deleted_at.is_none() && project_visible(&db, call.user_id, admin, p)
            })
        })
        .map(render::project_user)
        .collect();
    ok(json!(out))
}

fn apply_project_user(pu: &mut ProjectUser, input: &Input) -> Result<(), ApiError> {
    input.bool(&["manager"])?.apply(&mut pu.manager);
    let rate = input.f64(&["rate"])?;
    if rate.present() {
        rate.apply_opt(&mut pu.rate);
        pu.rate_last_updated = Some(now());
    }
    let cost = input.f64(&["labor_cost"])?;
    if cost.present() {
        cost.apply_opt(&mut pu.labor_cost);
        pu.labor_cost_last_updated = Some(now());
    }
    // Accepted and ignored: the sandbox keeps no rate history.
    input.str(&["rate_change_mode"])?;
    input.str(&["labor_cost_change_mode"])?;
    Ok(())
}

/// `POST /workspaces/{wid}/project_users` (`{project_id, user_id, manager?, rate?, ...}`).
pub(crate) async fn create_project_user(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let input = call.input()?;
    let pid = input.i64(&["project_id", "pid"])?.value();
    let uid = input.i64(&["user_id", "uid"])?.value();
    let (body, events) = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        let pid = pid
            .filter(|p| {
                db.projects
                    .get(p)
                    .is_some_and(|p| p.workspace_id == wid && p.server_deleted_at.is_none())
            })
            .ok_or_else(|| ApiError::bad_request("Invalid project_id"))?;
        if !admin && !is_manager(&db, call.user_id, pid) {
            return Err(ApiError::forbidden());
        }
        let uid = uid
            .filter(|u| db.access(*u, wid).is_some())
            .ok_or_else(|| ApiError::bad_request("Invalid user_id"))?;
        if db
            .project_users
            .values()
            .any(|pu| pu.project_id == pid && pu.user_id == uid)
        {
            return Err(ApiError::bad_request("Project user already exists"));
        }
        let mut pu = ProjectUser {
            id: 0,
            workspace_id: wid,
            project_id: pid,
            user_id: uid,
            manager: false,
            rate: None,
            rate_last_updated: None,
            labor_cost: None,
            labor_cost_last_updated: None,
            at: now(),
        };
        apply_project_user(&mut pu, &input)?;
        pu.id = db.ids.next(IdKind::ProjectUser);
        db.project_users.insert(pu.id, pu.clone());
        let e = pu_event(&db, &pu, Action::Created);
        (e.payload.clone(), vec![e])
    };
    s.publish_all(&call, events);
    ok(body)
}

fn find_project_user(
    db: &Db,
    user_id: i64,
    admin: bool,
    wid: i64,
    puid: i64,
) -> Result<ProjectUser, ApiError> {
    let pu = db
        .project_users
        .get(&puid)
        .filter(|pu| pu.workspace_id == wid)
        .ok_or_else(|| ApiError::bad_request("Project user not found/accessible"))?;
    if !admin && !is_manager(db, user_id, pu.project_id) {
        return Err(ApiError::forbidden());
    }
    Ok(pu.clone())
}

/// `PUT /workspaces/{wid}/project_users/{project_user_id}`.
pub(crate) async fn update_project_user(
    State(s): State<AppState>,
    Path((wid, puid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let puid = path_id(&puid, "project_user_id")?;
    let input = call.input()?;
    let (body, events) = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        let mut pu = find_project_user(&db, call.user_id, admin, wid, puid)?;
        apply_project_user(&mut pu, &input)?;
        pu.at = bump(pu.at);
        db.project_users.insert(puid, pu.clone());
        let e = pu_event(&db, &pu, Action::Updated);
        (e.payload.clone(), vec![e])
    };
    s.publish_all(&call, events);
    ok(body)
}

/// `DELETE /workspaces/{wid}/project_users/{project_user_id}` (answers the id).
pub(crate) async fn delete_project_user(
    State(s): State<AppState>,
    Path((wid, puid)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let puid = path_id(&puid, "project_user_id")?;
    let events = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        let pu = find_project_user(&db, call.user_id, admin, wid, puid)?;
        db.project_users.remove(&puid);
        let mut e = pu_event(&db, &pu, Action::Deleted);
        e.payload = render::with_deleted_at(e.payload, "server_deleted_at", now());
        vec![e]
    };
    s.publish_all(&call, events);
    ok(json!(puid))
}

/// Ids of the live tags named in `names`, created when missing; collects tag events.
pub(crate) fn resolve_tag_names(
    db: &mut Db,
    wid: i64,
    names: &[String],
    creator: i64,
    events: &mut Vec<Event>,
) -> Vec<i64> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in names {
        let n = n.trim();
        if n.is_empty() {
            continue;
        }
        let (id, created) = tag_by_name(db, wid, n, creator);
        if let Some(t) = created {
            events.push(event(wid, "tag", Action::Created, id, render::tag(&t)));
        }
        if seen.insert(id) {
            out.push(id);
        }
    }
    out
}
