//! Time entries: reads under `/me/time_entries`, writes under `/workspaces/{wid}/time_entries`
//! and the undocumented legacy `POST /time_entries`, `PUT /time_entries/{id}`.
//!
//! Recorded behaviour reproduced here (VCR Dec 2024):
//! - create with only `{created_with, start, workspace_id}` answers `duration: 0, stop: null`
//!   and the entry is later listed with `stop == start`;
//! - `duration: -1` creates a running entry; the create response echoes `-1`, reads answer
//!   `-(start as unix seconds)`;
//! - `tags`/`tag_ids` are `null` until tags are given, and `[]` once the entry has stopped.
//!
//! Choices on UNCONFIRMED points: starting an entry stops the user's running one at the new
//! entry's start (never before its own start); `start_date` without `end_date` (or the
//! reverse) is a 400; a stop/duration mismatch is a 400; editing someone else's entry needs
//! workspace admin (403 otherwise).

use axum::extract::{Path, State};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use super::catalog::{patch_to_input, resolve_tag_names};
use super::{bump, now, workspaces::empty_ok, ws_access};
use crate::app::{AppState, Event};
use crate::edge::{
    ApiError, ApiResult, Call, Field, Input, ok, parse_id_list, parse_patch, path_id,
};
use crate::model::{Db, IdKind, TimeEntry};
use crate::render::{self, TeStyle};
use crate::timefmt::{parse_lenient, trunc_secs};
use crate::webhooks::Action;

const NOT_FOUND: &str = "Time entry not found";
const MAX_LIST: usize = 1000;
const MAX_BULK: usize = 100;

/// The event of a time entry change (payload as GET would return it).
pub(crate) fn te_event(db: &Db, te: &TimeEntry, action: Action) -> Event {
    let project = te
        .project_id
        .map(|p| (p, db.projects.get(&p).is_some_and(|p| p.is_private)));
    Event {
        workspace_id: te.workspace_id,
        entity: "time_entry",
        action,
        entity_id: te.id,
        model_owner_id: Some(te.user_id),
        payload: render::time_entry(db, te, TeStyle::Listed, false),
        project,
    }
}

// ---------------------------------------------------------------- reads

fn parse_bound(call: &Call, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match call.q(key) {
        None | Some("") => Ok(None),
        Some(v) => parse_lenient(v)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid {key}"))),
    }
}

/// `GET /me/time_entries` (`since` | `before` | `start_date`+`end_date`, `meta`).
pub(crate) async fn list_time_entries(State(s): State<AppState>, call: Call) -> ApiResult {
    let since = call.q_i64("since")?;
    let before = parse_bound(&call, "before")?;
    if since.is_some() && call.q("before").is_some() {
        return Err(ApiError::bad_request(
            "'since' and 'before' can not be present simultaneously",
        ));
    }
    let start = parse_bound(&call, "start_date")?;
    let end = parse_bound(&call, "end_date")?;
    let range = match (start, end) {
        (None, None) => None,
        (Some(s), Some(e)) => {
            if e < s {
                return Err(ApiError::bad_request(
                    "end_date must not be earlier than start_date",
                ));
            }
            Some((s, e))
        }
        _ => {
            return Err(ApiError::bad_request(
                "start_date and end_date must be used together",
            ));
        }
    };
    let meta = call.q_bool("meta");
    let db = s.inner.db.read();
    let mut list: Vec<&TimeEntry> = db
        .time_entries
        .values()
        .filter(|te| te.user_id == call.user_id)
        .filter(|te| since.is_some() || !te.is_deleted())
        .filter(|te| since.is_none_or(|s| te.at.timestamp() >= s))
        .filter(|te| before.is_none_or(|b| te.start < b))
        .filter(|te| range.is_none_or(|(s, e)| te.start >= s && te.start < e))
        .collect();
    list.sort_by(|a, b| b.start.cmp(&a.start).then(b.id.cmp(&a.id)));
    list.truncate(MAX_LIST);
    let out: Vec<Value> = list
        .into_iter()
        .map(|te| render::time_entry(&db, te, TeStyle::Listed, meta))
        .collect();
    ok(json!(out))
}

/// `GET /me/time_entries/current`: the running entry, or `null` (200).
pub(crate) async fn current_time_entry(State(s): State<AppState>, call: Call) -> ApiResult {
    let db = s.inner.db.read();
    let running = db
        .time_entries
        .values()
        .find(|te| te.user_id == call.user_id && te.is_running() && !te.is_deleted());
    ok(running.map_or(Value::Null, |te| {
        render::time_entry(&db, te, TeStyle::Listed, call.q_bool("meta"))
    }))
}

/// `GET /me/time_entries/{id}`.
pub(crate) async fn get_time_entry(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult {
    let id = path_id(&id, "time_entry_id")?;
    let db = s.inner.db.read();
    let te = db
        .time_entries
        .get(&id)
        .filter(|te| te.user_id == call.user_id && !te.is_deleted())
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
    ok(render::time_entry(
        &db,
        te,
        TeStyle::Listed,
        call.q_bool("meta"),
    ))
}

// ---------------------------------------------------------------- shared write logic

fn parse_time(input: &Input, key: &str) -> Result<Field<DateTime<Utc>>, ApiError> {
    Ok(match input.str(&[key])? {
        Field::Set(s) => Field::Set(
            parse_lenient(&s)
                .map(trunc_secs)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid {key} date")))?,
        ),
        Field::Null => Field::Null,
        Field::Absent => Field::Absent,
    })
}

/// Applies `start_date` (`YYYY-MM-DD`) onto `start`'s date.
fn with_start_date(input: &Input, start: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    match input.str(&["start_date"])? {
        Field::Set(d) => {
            let date = NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .map_err(|_| ApiError::bad_request("Invalid start_date"))?;
            Ok(date.and_time(start.time()).and_utc())
        }
        _ => Ok(start),
    }
}

const INCONSISTENT: &str = "duration and stop do not match";

/// Stops the owner's running entries (other than `except`) at `at` (never before their start).
fn stop_running(
    db: &mut Db,
    user_id: i64,
    except: i64,
    at: DateTime<Utc>,
    events: &mut Vec<Event>,
) {
    let running: Vec<i64> = db
        .time_entries
        .values()
        .filter(|te| {
            te.user_id == user_id && te.id != except && te.is_running() && !te.is_deleted()
        })
        .map(|te| te.id)
        .collect();
    for id in running {
        let te = db.time_entries.get_mut(&id).expect("listed above");
        let stop = at.max(te.start);
        te.stop = Some(stop);
        te.duration = (stop - te.start).num_seconds();
        te.tag_ids.get_or_insert_with(Vec::new);
        te.at = bump(te.at);
        let te = te.clone();
        events.push(te_event(db, &te, Action::Updated));
    }
}

fn check_project_task(
    db: &Db,
    user_id: i64,
    admin: bool,
    te: &mut TimeEntry,
    input: &Input,
) -> Result<(), ApiError> {
    let wid = te.workspace_id;
    let project = input.i64(&["project_id", "pid"])?;
    if let Field::Set(p) = project {
        let ok = db.projects.get(&p).is_some_and(|p| {
            p.workspace_id == wid
                && p.server_deleted_at.is_none()
                && super::project_visible(db, user_id, admin, p)
        });
        if !ok {
            return Err(ApiError::bad_request("Invalid project_id"));
        }
    }
    let project_changed = project.present();
    project.apply_opt(&mut te.project_id);
    let task = input.i64(&["task_id", "tid"])?;
    match task {
        Field::Set(t) => {
            let task = db
                .tasks
                .get(&t)
                .filter(|t| t.workspace_id == wid && t.server_deleted_at.is_none())
                .ok_or_else(|| ApiError::bad_request("Invalid task_id"))?;
            match te.project_id {
                Some(p) if p != task.project_id => {
                    return Err(ApiError::bad_request("Invalid task_id"));
                }
                _ => te.project_id = Some(task.project_id),
            }
            te.task_id = Some(t);
        }
        Field::Null => te.task_id = None,
        Field::Absent => {
            // A task that no longer belongs to the new project is dropped.
            if project_changed
                && let Some(t) = te.task_id
                && db.tasks.get(&t).map(|t| t.project_id) != te.project_id
            {
                te.task_id = None;
            }
        }
    }
    Ok(())
}

/// The tag ids named by `tags` (names, created when missing unless `create` is false) and
/// `tag_ids`; `None` when neither field was given.
fn tag_input(
    db: &mut Db,
    wid: i64,
    input: &Input,
    creator: i64,
    create: bool,
    events: &mut Vec<Event>,
) -> Result<Option<Vec<i64>>, ApiError> {
    let names = input.str_list(&["tags"])?;
    let ids = input.i64_list(&["tag_ids"])?;
    if !names.present() && !ids.present() {
        return Ok(None);
    }
    let mut out = Vec::new();
    if let Field::Set(ids) = ids {
        for id in ids {
            let live = db
                .tags
                .get(&id)
                .is_some_and(|t| t.workspace_id == wid && t.deleted_at.is_none());
            if !live {
                return Err(ApiError::bad_request(format!("Invalid tag_ids: {id}")));
            }
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    if let Field::Set(names) = names {
        let resolved = if create {
            resolve_tag_names(db, wid, &names, creator, events)
        } else {
            names
                .iter()
                .filter_map(|n| {
                    db.tags(wid)
                        .find(|t| t.deleted_at.is_none() && t.name == n.trim())
                        .map(|t| t.id)
                })
                .collect()
        };
        for id in resolved {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    Ok(Some(out))
}

fn require_created_with(input: &Input) -> Result<(), ApiError> {
    match input.str(&["created_with"]) {
        Ok(Field::Set(s)) if !s.trim().is_empty() => Ok(()),
        _ => Err(ApiError::bad_request(
            "created_with needs to be provided an a valid string",
        )),
    }
}

/// Creates an entry; returns it and whether the response shows `stop: null` for a
/// zero-duration entry (recorded quirk).
fn create_core(
    db: &mut Db,
    caller: i64,
    path_wid: Option<i64>,
    input: &Input,
    paid: bool,
    events: &mut Vec<Event>,
) -> Result<(TimeEntry, bool), ApiError> {
    require_created_with(input)?;
    let wid = match (input.i64(&["workspace_id", "wid"])?, path_wid) {
        (Field::Set(w), Some(p)) if w != p => {
            return Err(ApiError::bad_request(
                "workspace_id in the body does not match the workspace in the path",
            ));
        }
        (Field::Set(w), _) => w,
        _ => return Err(ApiError::bad_request("workspace_id is required")),
    };
    let admin = ws_access(db, caller, wid)?;
    let start = match parse_time(input, "start")? {
        Field::Set(t) => with_start_date(input, t)?,
        _ => return Err(ApiError::bad_request("start is required")),
    };
    let stop = parse_time(input, "stop")?.value();
    let duration = input.i64(&["duration"])?.value();
    let (stop, duration, quirk) = match (stop, duration) {
        (Some(st), Some(d)) if d >= 0 && (st - start).num_seconds() == d => (Some(st), d, false),
        (Some(_), Some(_)) => return Err(ApiError::bad_request(INCONSISTENT)),
        (Some(st), None) => {
            if st < start {
                return Err(ApiError::bad_request("stop must be after start"));
            }
            (Some(st), (st - start).num_seconds(), false)
        }
        (None, Some(d)) if d < 0 => (None, -1, false),
        (None, Some(d)) => (Some(start + chrono::Duration::seconds(d)), d, d == 0),
        (None, None) => (Some(start), 0, true),
    };
    let mut owner = caller;
    if let Field::Set(u) = input.i64(&["user_id", "uid"])?
        && u != caller
    {
        if !admin {
            return Err(ApiError::forbidden());
        }
        if db.access(u, wid).is_none() {
            return Err(ApiError::bad_request("Invalid user_id"));
        }
        owner = u;
    }
    let billable = input.bool(&["billable"])?.value().unwrap_or(false);
    if billable && !paid {
        return Err(ApiError::new(
            http::StatusCode::PAYMENT_REQUIRED,
            "Request tried to utilized Premium functionality on workspace which is not Premium!",
        ));
    }
    let mut te = TimeEntry {
        id: 0,
        workspace_id: wid,
        user_id: owner,
        project_id: None,
        task_id: None,
        billable,
        start,
        stop,
        duration,
        description: input.str(&["description"])?.value().map(Into::into),
        tag_ids: None,
        at: now(),
        server_deleted_at: None,
    };
    check_project_task(db, caller, admin, &mut te, input)?;
    te.tag_ids = tag_input(db, wid, input, caller, true, events)?;
    te.id = db.ids.next(IdKind::TimeEntry);
    if te.is_running() {
        stop_running(db, owner, te.id, te.start, events);
    }
    db.time_entries.insert(te.id, te.clone());
    events.push(te_event(db, &te, Action::Created));
    Ok((te, quirk))
}

/// Updates an entry of workspace `wid`.
fn update_core(
    db: &mut Db,
    caller: i64,
    wid: i64,
    id: i64,
    input: &Input,
    paid: bool,
    events: &mut Vec<Event>,
) -> Result<TimeEntry, ApiError> {
    let admin = ws_access(db, caller, wid)?;
    let mut te = db
        .time_entries
        .get(&id)
        .filter(|te| te.workspace_id == wid && !te.is_deleted())
        .cloned()
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
    if te.user_id != caller && !admin {
        return Err(ApiError::forbidden());
    }
    if let Field::Set(w) = input.i64(&["workspace_id", "wid"])?
        && w != wid
    {
        return Err(ApiError::bad_request(
            "workspace_id in the body does not match the workspace in the path",
        ));
    }
    let was_running = te.is_running();
    let start_field = parse_time(input, "start")?;
    let mut start = start_field.value().unwrap_or(te.start);
    if input.has("start_date") {
        start = with_start_date(input, start)?;
    }
    let start_changed = start != te.start;
    let stop = parse_time(input, "stop")?;
    let duration = input.i64(&["duration"])?;
    match (stop, duration.value()) {
        (Field::Set(st), d) => {
            if st < start {
                return Err(ApiError::bad_request("stop must be after start"));
            }
            let secs = (st - start).num_seconds();
            if d.is_some_and(|d| d != secs) {
                return Err(ApiError::bad_request(INCONSISTENT));
            }
            te.stop = Some(st);
            te.duration = secs;
        }
        (_, Some(d)) if d < 0 => {
            te.stop = None;
            te.duration = -1;
        }
        (_, Some(d)) => {
            te.stop = Some(start + chrono::Duration::seconds(d));
            te.duration = d;
        }
        (Field::Null, None) => {
            te.stop = None;
            te.duration = -1;
        }
        (Field::Absent, None) => {
            if start_changed && !was_running {
                te.stop = Some(start + chrono::Duration::seconds(te.duration));
            }
        }
    }
    te.start = start;
    if let Field::Set(u) = input.i64(&["user_id", "uid"])?
        && u != te.user_id
    {
        if !admin {
            return Err(ApiError::forbidden());
        }
        if db.access(u, wid).is_none() {
            return Err(ApiError::bad_request("Invalid user_id"));
        }
        te.user_id = u;
    }
    check_project_task(db, caller, admin, &mut te, input)?;
    let billable = input.bool(&["billable"])?;
    if billable == Field::Set(true) && !paid {
        return Err(ApiError::new(
            http::StatusCode::PAYMENT_REQUIRED,
            "Request tried to utilized Premium functionality on workspace which is not Premium!",
        ));
    }
    billable.apply(&mut te.billable);
    match input.str(&["description"])? {
        Field::Set(d) => te.description = Some(d.into()),
        Field::Null => te.description = None,
        Field::Absent => {}
    }
    let action = input.str(&["tag_action"])?.value();
    let create = action.as_deref() != Some("delete");
    if let Some(given) = tag_input(db, wid, input, caller, create, events)? {
        te.tag_ids = Some(match action.as_deref() {
            None => given,
            Some("add") => {
                let mut cur = te.tag_ids.take().unwrap_or_default();
                for id in given {
                    if !cur.contains(&id) {
                        cur.push(id);
                    }
                }
                cur
            }
            Some("delete") => {
                let mut cur = te.tag_ids.take().unwrap_or_default();
                cur.retain(|id| !given.contains(id));
                cur
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid tag_action: {other}"
                )));
            }
        });
    }
    if was_running && !te.is_running() {
        te.tag_ids.get_or_insert_with(Vec::new);
    }
    if !was_running && te.is_running() {
        stop_running(db, te.user_id, te.id, te.start, events);
    }
    te.at = bump(te.at);
    db.time_entries.insert(id, te.clone());
    events.push(te_event(db, &te, Action::Updated));
    Ok(te)
}

fn written(db: &Db, te: &TimeEntry, meta: bool, quirk: bool) -> Value {
    let mut v = render::time_entry(db, te, TeStyle::Written, meta);
    if quirk {
        v["stop"] = Value::Null;
    }
    v
}

// ---------------------------------------------------------------- write handlers

async fn create(s: AppState, call: Call, path_wid: Option<i64>) -> ApiResult {
    let input = call.input()?;
    let paid = s.config().plan.is_paid();
    let mut events = Vec::new();
    let body = {
        let mut db = s.inner.db.write();
        let (te, quirk) = create_core(&mut db, call.user_id, path_wid, &input, paid, &mut events)?;
        written(&db, &te, call.q_bool("meta"), quirk)
    };
    s.publish_all(&call, events);
    ok(body)
}

/// `POST /workspaces/{wid}/time_entries`.
pub(crate) async fn create_time_entry(
    State(s): State<AppState>,
    Path(wid): Path<String>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    create(s, call, Some(wid)).await
}

/// Legacy `POST /time_entries` (workspace from the body).
pub(crate) async fn legacy_create_time_entry(State(s): State<AppState>, call: Call) -> ApiResult {
    create(s, call, None).await
}

async fn update(s: AppState, call: Call, wid: Option<i64>, id: i64) -> ApiResult {
    let input = call.input()?;
    let paid = s.config().plan.is_paid();
    let mut events = Vec::new();
    let body = {
        let mut db = s.inner.db.write();
        let wid = match wid {
            Some(w) => w,
            None => db
                .time_entries
                .get(&id)
                .filter(|te| {
                    te.user_id == call.user_id
                        || db.access(call.user_id, te.workspace_id) == Some(true)
                })
                .map(|te| te.workspace_id)
                .ok_or_else(|| ApiError::not_found(NOT_FOUND))?,
        };
        let te = update_core(&mut db, call.user_id, wid, id, &input, paid, &mut events)?;
        written(&db, &te, call.q_bool("meta"), false)
    };
    s.publish_all(&call, events);
    ok(body)
}

/// `PUT /workspaces/{wid}/time_entries/{id}` (partial update; `tag_action` add|delete).
pub(crate) async fn update_time_entry(
    State(s): State<AppState>,
    Path((wid, id)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let id = path_id(&id, "time_entry_id")?;
    update(s, call, Some(wid), id).await
}

/// Legacy `PUT /time_entries/{id}`.
pub(crate) async fn legacy_update_time_entry(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult {
    let id = path_id(&id, "time_entry_id")?;
    update(s, call, None, id).await
}

/// `DELETE /workspaces/{wid}/time_entries/{id}` (200, empty body; 404 when unknown).
pub(crate) async fn delete_time_entry(
    State(s): State<AppState>,
    Path((wid, id)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let id = path_id(&id, "time_entry_id")?;
    let events = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        let Some(te) = db
            .time_entries
            .get_mut(&id)
            .filter(|te| te.workspace_id == wid && !te.is_deleted())
        else {
            return Err(ApiError::not_found(NOT_FOUND));
        };
        if te.user_id != call.user_id && !admin {
            return Err(ApiError::forbidden());
        }
        let t = now();
        if te.is_running() {
            // A deleted running entry is stopped too, so it never shows up as current.
            let stop = trunc_secs(t).max(te.start);
            te.stop = Some(stop);
            te.duration = (stop - te.start).num_seconds();
        }
        te.server_deleted_at = Some(t);
        te.at = bump(te.at);
        let te = te.clone();
        vec![te_event(&db, &te, Action::Deleted)]
    };
    s.publish_all(&call, events);
    Ok(empty_ok())
}

/// `PATCH /workspaces/{wid}/time_entries/{id}/stop` (404 unknown, 409 already stopped).
pub(crate) async fn stop_time_entry(
    State(s): State<AppState>,
    Path((wid, id)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("Invalid or missing time_entry_id"))?;
    let (body, events) = {
        let mut db = s.inner.db.write();
        let admin = ws_access(&db, call.user_id, wid)?;
        let Some(te) = db
            .time_entries
            .get_mut(&id)
            .filter(|te| te.workspace_id == wid && !te.is_deleted())
        else {
            return Err(ApiError::not_found(NOT_FOUND));
        };
        if te.user_id != call.user_id && !admin {
            return Err(ApiError::forbidden());
        }
        if !te.is_running() {
            return Err(ApiError::new(
                http::StatusCode::CONFLICT,
                "Time entry already stopped",
            ));
        }
        let stop = trunc_secs(Utc::now()).max(te.start);
        te.stop = Some(stop);
        te.duration = (stop - te.start).num_seconds();
        te.tag_ids.get_or_insert_with(Vec::new);
        te.at = bump(te.at);
        let te = te.clone();
        (
            written(&db, &te, call.q_bool("meta"), false),
            vec![te_event(&db, &te, Action::Updated)],
        )
    };
    s.publish_all(&call, events);
    ok(body)
}

/// `PATCH /workspaces/{wid}/time_entries/{ids}`: JSON-patch on up to 100 entries; each entry
/// succeeds or fails as a whole (`{success: [ids], failure: [{id, message}]}`), no rollback
/// across entries.
///
/// Operations apply in order. On `/tags` and `/tag_ids`, `add` adds, `remove` with a value
/// removes those tags (without a value: clears), `replace` replaces.
pub(crate) async fn patch_time_entries(
    State(s): State<AppState>,
    Path((wid, ids)): Path<(String, String)>,
    call: Call,
) -> ApiResult {
    let wid = path_id(&wid, "workspace_id")?;
    let ids = parse_id_list(&ids)
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| ApiError::bad_request("Invalid or missing time_entry_id"))?;
    if ids.len() > MAX_BULK {
        return Err(ApiError::bad_request(format!(
            "Too many time entry ids, the maximum is {MAX_BULK}"
        )));
    }
    let ops = parse_patch(&call.body)?;
    let paid = s.config().plan.is_paid();
    let mut success = Vec::new();
    let mut failure = Vec::new();
    let mut events = Vec::new();
    {
        let mut db = s.inner.db.write();
        ws_access(&db, call.user_id, wid)?;
        for id in ids {
            let original = db.time_entries.get(&id).cloned();
            let mut entry_events = Vec::new();
            let mut result = Ok(());
            for op in &ops {
                let mut input = patch_to_input(std::slice::from_ref(op));
                if matches!(op.field.as_str(), "tags" | "tag_ids") {
                    input = tag_patch_input(op);
                }
                if let Err(e) = update_core(
                    &mut db,
                    call.user_id,
                    wid,
                    id,
                    &input,
                    paid,
                    &mut entry_events,
                ) {
                    result = Err(e);
                    break;
                }
            }
            match result {
                Ok(()) => {
                    success.push(id);
                    // One event per entity changed: keep only the last state of each entity.
                    dedupe_events(&mut entry_events);
                    events.extend(entry_events);
                }
                Err(e) => {
                    if let Some(orig) = original {
                        db.time_entries.insert(id, orig);
                    }
                    failure.push(json!({"id": id, "message": e.message}));
                }
            }
        }
    }
    s.publish_all(&call, events);
    ok(json!({"success": success, "failure": failure}))
}

fn tag_patch_input(op: &crate::edge::PatchOp) -> Input {
    let mut map = serde_json::Map::new();
    match op.op.as_str() {
        "add" => {
            map.insert(op.field.clone(), op.value.clone());
            map.insert("tag_action".into(), json!("add"));
        }
        "remove" if !op.value.is_null() => {
            map.insert(op.field.clone(), op.value.clone());
            map.insert("tag_action".into(), json!("delete"));
        }
        "remove" => {
            map.insert(op.field.clone(), json!([]));
        }
        _ => {
            map.insert(op.field.clone(), op.value.clone());
        }
    }
    Input::from_map(map)
}

/// Keeps the last event per (entity, id), in first-seen order; a `created` tag stays created.
fn dedupe_events(events: &mut Vec<Event>) {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    for e in events.drain(..) {
        if let Some(prev) = out
            .iter_mut()
            .find(|p| p.entity == e.entity && p.entity_id == e.entity_id)
        {
            let action = if prev.action == Action::Created {
                Action::Created
            } else {
                e.action
            };
            *prev = Event { action, ..e };
        } else {
            out.push(e);
        }
    }
    *events = out;
}
