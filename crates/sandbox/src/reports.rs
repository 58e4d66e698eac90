//! Reports API v3: the detailed report,
//! `POST /reports/api/v3/workspace/{workspace_id}/search/time_entries`.
//!
//! The router reads the sandbox's data through [`ReportsSource`] (implemented here for
//! [`crate::AppState`]), so it can also be tested over a fake source.
//!
//! Invariant: paging walks one ordering of rows; `X-Next-ID` / `X-Next-Row-Number` name the
//! first row of the next page and are absent on the last page, so a client that sends them back
//! as `first_id` / `first_row_number` sees every row exactly once while the data does not change.
//!
//! Decisions on points Toggl leaves UNCONFIRMED (chosen defensively):
//! - `page_size` defaults to 50 and is capped at 50 (users report pages of 50 rows): a client
//!   must follow the paging headers. `page_size < 1` is refused.
//! - Pages count rows. `first_id` (the first time entry of a row) wins over `first_row_number`
//!   when both are sent and it is found, so inserts between pages do not duplicate rows.
//! - Dates are `YYYY-MM-DD` in the requester's time zone, both inclusive; `end_date` before
//!   `start_date` is refused, equal dates are one day. Without `end_date`: today (or
//!   `start_date` if later); without `start_date`: six days before the end. `X-Range-Start` /
//!   `X-Range-End` report the dates used.
//! - Running and deleted entries are not reported. A non-admin sees only their own entries.
//! - Default order: `date` ascending (by start, then id). Row keys: earliest start, total
//!   seconds, user name, description (case-insensitive) or latest `at`.
//! - `grouped: true` merges entries with the same user, project, task, description, billable
//!   flag and tags into one row; otherwise every row holds one entry.
//! - `billable` and `min/max_duration_seconds` are paid features: 402 on the Free plan.
//! - `[null]` in `project_ids`, `client_ids`, `task_ids`, `tag_ids` means "without"; it can be
//!   combined with ids. `group_ids`: the sandbox has no user groups, so they match nobody.
//! - An empty id array (`"project_ids": []`) is no filter, like an absent key: clients such as
//!   toggl-api-wrapper always send every id list, empty ones included, and get rows from Toggl.
//! - Rounding applies only when the request sets `rounding_minutes > 0`; `rounding` is the
//!   direction (-1 down, 0 nearest, 1 up).
//! - `startTime` / `endTime` (`HH:MM[:SS]`, requester's zone) keep entries that start at or
//!   after `startTime` and stop at or before `endTime` on their start date (time of day).
//! - Amounts: hourly rate = project rate, else the member's workspace rate, else the workspace
//!   default; `billable_amount_in_cents` only for billable entries with a rate; both `null`
//!   with `hide_amounts`.
//! - Accepted and not used: `first_timestamp`, `enrich_response`.
//! - Errors are JSON strings: 400 `At least one parameter must be set`, `Invalid workspace id`,
//!   `Invalid '{parameter}' value, allowed values are: '{values}'`, `Unexpected "{field}" type
//!   {type}`; 403 `Workspace not found/accessible`; 402 `Workspace needs to have this feature
//!   enabled`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

/// Rows per page when `page_size` is not sent, and the most a page holds.
pub const MAX_PAGE_SIZE: usize = 50;

/// What the detailed report needs from the Track API side.
pub trait ReportsSource: Send + Sync + 'static {
    /// The user id behind the request's `Authorization`, or the 401/403 response to send.
    #[allow(clippy::result_large_err)] // same contract as `webhooks::WebhookAccess`
    fn authenticate(&self, headers: &HeaderMap) -> Result<i64, Response>;
    /// One consistent snapshot of the workspace as `user_id` may report on it; `None` when the
    /// workspace does not exist or the user is not an active member.
    fn report_data(&self, user_id: i64, workspace_id: i64) -> Option<ReportData>;
}

/// A workspace's data for reports, as seen by one requester.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    /// Whether the requester is a workspace admin (admins see everyone's entries).
    pub is_admin: bool,
    /// Whether the plan includes paid report features (`billable`, duration filters).
    pub premium: bool,
    /// The requester's IANA time zone (dates and `start`/`stop` are in it); UTC when unknown.
    pub timezone: String,
    /// The workspace currency (`USD`).
    pub currency: String,
    /// The workspace default hourly rate.
    pub default_hourly_rate: Option<f64>,
    /// Members of the workspace.
    pub users: Vec<ReportUser>,
    /// Projects, deleted ones included (entries keep pointing at them).
    pub projects: Vec<ReportProject>,
    /// Clients by id and name.
    pub clients: Vec<Named>,
    /// Tasks by id and name.
    pub tasks: Vec<Named>,
    /// Tags by id and name.
    pub tags: Vec<Named>,
    /// Stopped, non-deleted time entries of all users.
    pub time_entries: Vec<ReportEntry>,
}

/// A workspace member.
#[derive(Debug, Clone, Default)]
pub struct ReportUser {
    /// User id.
    pub id: i64,
    /// Full name (`username` in rows).
    pub fullname: String,
    /// Email.
    pub email: String,
    /// Toggl Accounts id.
    pub toggl_accounts_id: String,
    /// The member's hourly rate in this workspace.
    pub hourly_rate: Option<f64>,
}

/// A project.
#[derive(Debug, Clone, Default)]
pub struct ReportProject {
    /// Project id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Color as `#rrggbb`.
    pub color: String,
    /// Client id.
    pub client_id: Option<i64>,
    /// Hourly rate.
    pub rate: Option<f64>,
    /// Currency when it differs from the workspace's.
    pub currency: Option<String>,
}

/// Something with an id and a name (client, task, tag).
#[derive(Debug, Clone, Default)]
pub struct Named {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// A stopped time entry.
#[derive(Debug, Clone)]
pub struct ReportEntry {
    /// Time entry id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Project.
    pub project_id: Option<i64>,
    /// Task.
    pub task_id: Option<i64>,
    /// Billable flag.
    pub billable: bool,
    /// Description (empty when none).
    pub description: String,
    /// Tag ids.
    pub tag_ids: Vec<i64>,
    /// Start.
    pub start: DateTime<Utc>,
    /// Stop.
    pub stop: DateTime<Utc>,
    /// Last modification.
    pub at: DateTime<Utc>,
}

impl ReportsSource for crate::AppState {
    fn authenticate(&self, headers: &HeaderMap) -> Result<i64, Response> {
        crate::AppState::authenticate(self, headers)
    }

    fn report_data(&self, user_id: i64, workspace_id: i64) -> Option<ReportData> {
        let premium = self.config().plan.is_paid();
        self.read(|db| {
            let is_admin = db.access(user_id, workspace_id)?;
            let workspace = db.workspace(workspace_id)?;
            let users = db
                .workspace_users(workspace_id)
                .filter_map(|wu| {
                    let u = db.user(wu.user_id)?;
                    Some(ReportUser {
                        id: u.id,
                        fullname: u.fullname.clone(),
                        email: u.email.clone(),
                        toggl_accounts_id: u.toggl_accounts_id.clone(),
                        hourly_rate: wu.rate,
                    })
                })
                .collect();
            let named = |id: i64, name: &str| Named {
                id,
                name: name.to_owned(),
            };
            Some(ReportData {
                is_admin,
                premium,
                timezone: db
                    .user(user_id)
                    .map(|u| u.timezone.clone())
                    .unwrap_or_default(),
                currency: workspace.default_currency.clone(),
                default_hourly_rate: workspace.default_hourly_rate,
                users,
                projects: db
                    .projects(workspace_id)
                    .map(|p| ReportProject {
                        id: p.id,
                        name: p.name.clone(),
                        color: p.color.clone(),
                        client_id: p.client_id,
                        rate: p.rate,
                        currency: p.currency.clone(),
                    })
                    .collect(),
                clients: db
                    .clients(workspace_id)
                    .map(|c| named(c.id, &c.name))
                    .collect(),
                tasks: db
                    .tasks(workspace_id)
                    .map(|t| named(t.id, &t.name))
                    .collect(),
                tags: db
                    .tags(workspace_id)
                    .map(|t| named(t.id, &t.name))
                    .collect(),
                time_entries: db
                    .time_entries(workspace_id)
                    .filter(|te| te.server_deleted_at.is_none())
                    .filter_map(|te| {
                        Some(ReportEntry {
                            id: te.id,
                            user_id: te.user_id,
                            project_id: te.project_id,
                            task_id: te.task_id,
                            billable: te.billable,
                            description: te.description.as_deref().unwrap_or_default().to_owned(),
                            tag_ids: te.tag_ids.clone().unwrap_or_default(),
                            start: te.start,
                            stop: te.stop?,
                            at: te.at,
                        })
                    })
                    .collect(),
            })
        })
    }
}

/// The Reports API v3 routes under their full paths (`/reports/api/v3/...`), ready to `.merge`.
pub fn router(source: Arc<dyn ReportsSource>) -> Router {
    Router::new()
        .route(
            "/reports/api/v3/workspace/{workspace_id}/search/time_entries",
            post(search_time_entries),
        )
        .with_state(source)
}

/// A refused request: a JSON string message, or the access layer's own response.
enum Rejection {
    Message(StatusCode, String),
    Access(Box<Response>),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::Message(status, text) => {
                (status, axum::Json(Value::String(text))).into_response()
            }
            Rejection::Access(resp) => *resp,
        }
    }
}

fn bad(text: impl Into<String>) -> Rejection {
    Rejection::Message(StatusCode::BAD_REQUEST, text.into())
}

fn invalid_value(parameter: &str, values: &str) -> Rejection {
    bad(format!(
        "Invalid '{parameter}' value, allowed values are: '{values}'"
    ))
}

async fn search_time_entries(
    State(source): State<Arc<dyn ReportsSource>>,
    Path(workspace_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match search(source.as_ref(), &workspace_id, &headers, &body) {
        Ok(resp) => resp,
        Err(rejection) => rejection.into_response(),
    }
}

fn search(
    source: &dyn ReportsSource,
    workspace_id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Rejection> {
    let user_id = source
        .authenticate(headers)
        .map_err(|r| Rejection::Access(Box::new(r)))?;
    let workspace_id = workspace_id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| bad("Invalid workspace id"))?;
    let data = source.report_data(user_id, workspace_id).ok_or_else(|| {
        Rejection::Message(
            StatusCode::FORBIDDEN,
            "Workspace not found/accessible".to_owned(),
        )
    })?;
    let query = Query::parse(body)?;
    if (query.billable.is_some() || query.min_duration.is_some() || query.max_duration.is_some())
        && !data.premium
    {
        return Err(Rejection::Message(
            StatusCode::PAYMENT_REQUIRED,
            "Workspace needs to have this feature enabled".to_owned(),
        ));
    }
    let tz: Tz = data.timezone.parse().unwrap_or(Tz::UTC);
    let today = Utc::now().with_timezone(&tz).date_naive();
    let end_date = query
        .end_date
        .unwrap_or_else(|| query.start_date.map_or(today, |s| s.max(today)));
    let start_date = query.start_date.unwrap_or_else(|| {
        end_date
            .checked_sub_signed(Duration::days(6))
            .unwrap_or(end_date)
    });
    if end_date < start_date {
        return Err(bad("end_date must not be earlier than start_date"));
    }
    let (page, next) = build_page(&data, &query, user_id, tz, start_date, end_date);
    let mut resp = (StatusCode::OK, axum::Json(Value::Array(page))).into_response();
    let out = resp.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.insert(name, v);
        }
    };
    put("X-Range-Start", start_date.format("%Y-%m-%d").to_string());
    put("X-Range-End", end_date.format("%Y-%m-%d").to_string());
    if let Some((next_id, next_row)) = next {
        put("X-Next-ID", next_id.to_string());
        put("X-Next-Row-Number", next_row.to_string());
    }
    Ok(resp)
}

/// An id filter where `null` means "without".
#[derive(Debug, Default, Clone)]
struct IdFilter {
    ids: Vec<i64>,
    without: bool,
}

impl IdFilter {
    fn matches(&self, value: Option<i64>) -> bool {
        match value {
            Some(id) => self.ids.contains(&id),
            None => self.without,
        }
    }

    fn matches_any(&self, values: &[i64]) -> bool {
        if values.is_empty() {
            self.without
        } else {
            values.iter().any(|v| self.ids.contains(v))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderBy {
    Date,
    User,
    Duration,
    Description,
    LastUpdate,
}

/// The checked request body.
#[derive(Debug)]
struct Query {
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    user_ids: Option<Vec<i64>>,
    project_ids: Option<IdFilter>,
    client_ids: Option<IdFilter>,
    task_ids: Option<IdFilter>,
    tag_ids: Option<IdFilter>,
    group_ids: Option<Vec<i64>>,
    time_entry_ids: Option<Vec<i64>>,
    description: Option<String>,
    billable: Option<bool>,
    grouped: bool,
    hide_amounts: bool,
    order_by: OrderBy,
    descending: bool,
    page_size: usize,
    first_id: Option<i64>,
    first_row_number: Option<i64>,
    min_duration: Option<i64>,
    max_duration: Option<i64>,
    rounding: i64,
    rounding_minutes: i64,
    start_time: Option<NaiveTime>,
    end_time: Option<NaiveTime>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn unexpected(field: &str, v: &Value) -> Rejection {
    bad(format!("Unexpected \"{field}\" type {}", type_name(v)))
}

/// Typed access to the body's fields; `null` counts as absent.
struct Fields(Map<String, Value>);

impl Fields {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn int(&self, key: &str) -> Result<Option<i64>, Rejection> {
        self.get(key)
            .map(|v| v.as_i64().ok_or_else(|| unexpected(key, v)))
            .transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Rejection> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| unexpected(key, v)))
            .transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>, Rejection> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| unexpected(key, v))
            })
            .transpose()
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, Rejection> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let list = v.as_array().ok_or_else(|| unexpected(key, v))?;
        if list.is_empty() {
            return Ok(None);
        }
        list.iter()
            .map(|item| item.as_i64().ok_or_else(|| unexpected(key, item)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn nullable_ids(&self, key: &str) -> Result<Option<IdFilter>, Rejection> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let list = v.as_array().ok_or_else(|| unexpected(key, v))?;
        if list.is_empty() {
            return Ok(None);
        }
        let mut filter = IdFilter::default();
        for item in list {
            match item {
                Value::Null => filter.without = true,
                _ => filter
                    .ids
                    .push(item.as_i64().ok_or_else(|| unexpected(key, item))?),
            }
        }
        Ok(Some(filter))
    }

    fn date(&self, key: &str) -> Result<Option<NaiveDate>, Rejection> {
        self.string(key)?
            .map(|s| {
                NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .map_err(|_| invalid_value(key, "YYYY-MM-DD"))
            })
            .transpose()
    }

    fn time_of_day(&self, key: &str) -> Result<Option<NaiveTime>, Rejection> {
        self.string(key)?
            .map(|s| {
                NaiveTime::parse_from_str(&s, "%H:%M:%S")
                    .or_else(|_| NaiveTime::parse_from_str(&s, "%H:%M"))
                    .map_err(|_| invalid_value(key, "HH:MM:SS"))
            })
            .transpose()
    }
}

impl Query {
    fn parse(body: &[u8]) -> Result<Query, Rejection> {
        let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body).map_err(|_| bad("Invalid JSON input"))?
        };
        let Value::Object(map) = value else {
            return Err(unexpected("body", &value));
        };
        if map.values().all(Value::is_null) {
            return Err(bad("At least one parameter must be set"));
        }
        let f = Fields(map);
        let order_by = match f.string("order_by")?.as_deref() {
            None | Some("date") => OrderBy::Date,
            Some("user") => OrderBy::User,
            Some("duration") => OrderBy::Duration,
            Some("description") => OrderBy::Description,
            Some("last_update") => OrderBy::LastUpdate,
            Some(_) => {
                return Err(invalid_value(
                    "order_by",
                    "date, user, duration, description, last_update",
                ));
            }
        };
        let descending = match f
            .string("order_dir")?
            .map(|s| s.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(_) => return Err(invalid_value("order_dir", "ASC, DESC")),
        };
        let page_size = match f.int("page_size")? {
            None => MAX_PAGE_SIZE,
            Some(n) if n >= 1 => usize::try_from(n)
                .unwrap_or(MAX_PAGE_SIZE)
                .min(MAX_PAGE_SIZE),
            Some(_) => return Err(invalid_value("page_size", "1-50")),
        };
        let rounding = f.int("rounding")?.unwrap_or(0);
        if !(-1..=1).contains(&rounding) {
            return Err(invalid_value("rounding", "-1, 0, 1"));
        }
        let rounding_minutes = f.int("rounding_minutes")?.unwrap_or(0);
        if ![0, 1, 5, 6, 10, 12, 15, 30, 60, 240].contains(&rounding_minutes) {
            return Err(invalid_value(
                "rounding_minutes",
                "0, 1, 5, 6, 10, 12, 15, 30, 60, 240",
            ));
        }
        let min_duration = f.int("min_duration_seconds")?;
        let max_duration = f.int("max_duration_seconds")?;
        if let (Some(min), Some(max)) = (min_duration, max_duration)
            && min > max
        {
            return Err(bad(
                "min_duration_seconds must not exceed max_duration_seconds",
            ));
        }
        // Accepted for compatibility; paging uses first_id / first_row_number.
        f.int("first_timestamp")?;
        f.boolean("enrich_response")?;
        Ok(Query {
            start_date: f.date("start_date")?,
            end_date: f.date("end_date")?,
            user_ids: f.ints("user_ids")?,
            project_ids: f.nullable_ids("project_ids")?,
            client_ids: f.nullable_ids("client_ids")?,
            task_ids: f.nullable_ids("task_ids")?,
            tag_ids: f.nullable_ids("tag_ids")?,
            group_ids: f.ints("group_ids")?,
            time_entry_ids: f.ints("time_entry_ids")?,
            description: f.string("description")?,
            billable: f.boolean("billable")?,
            grouped: f.boolean("grouped")?.unwrap_or(false),
            hide_amounts: f.boolean("hide_amounts")?.unwrap_or(false),
            order_by,
            descending,
            page_size,
            first_id: f.int("first_id")?,
            first_row_number: f.int("first_row_number")?,
            min_duration,
            max_duration,
            rounding,
            rounding_minutes,
            start_time: f.time_of_day("startTime")?,
            end_time: f.time_of_day("endTime")?,
        })
    }
}

/// What `grouped: true` merges on: user, project, task, description, billable, sorted tags.
type GroupKey = (i64, Option<i64>, Option<i64>, String, bool, Vec<i64>);

/// One report row before rendering.
struct Row<'a> {
    entries: Vec<(&'a ReportEntry, i64)>,
}

impl Row<'_> {
    fn first(&self) -> &ReportEntry {
        self.entries[0].0
    }
    fn start(&self) -> DateTime<Utc> {
        self.entries
            .iter()
            .map(|(e, _)| e.start)
            .min()
            .unwrap_or_default()
    }
    fn seconds(&self) -> i64 {
        self.entries.iter().map(|(_, s)| s).sum()
    }
    fn last_update(&self) -> DateTime<Utc> {
        self.entries
            .iter()
            .map(|(e, _)| e.at)
            .max()
            .unwrap_or_default()
    }
}

fn round_seconds(seconds: i64, minutes: i64, direction: i64) -> i64 {
    if minutes <= 0 {
        return seconds;
    }
    let step = minutes * 60;
    match direction {
        -1 => seconds / step * step,
        1 => (seconds + step - 1) / step * step,
        _ => (seconds + step / 2) / step * step,
    }
}

/// The requested page of rows and, unless it is the last, `(X-Next-ID, X-Next-Row-Number)`.
///
/// Rows are filtered, grouped and sorted as light references; only the page's rows are rendered
/// to JSON, so a page costs a sort of the workspace, not a rendering of all of it.
fn build_page(
    data: &ReportData,
    q: &Query,
    requester: i64,
    tz: Tz,
    start_date: NaiveDate,
    end_date: NaiveDate,
) -> (Vec<Value>, Option<(i64, i64)>) {
    let day_start = |d: NaiveDate| -> DateTime<Utc> {
        let midnight = d.and_time(NaiveTime::MIN);
        tz.from_local_datetime(&midnight)
            .earliest()
            .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
    };
    let from = day_start(start_date);
    let to = end_date
        .succ_opt()
        .map_or(DateTime::<Utc>::MAX_UTC, day_start);
    let projects: HashMap<i64, &ReportProject> = data.projects.iter().map(|p| (p.id, p)).collect();
    let users: HashMap<i64, &ReportUser> = data.users.iter().map(|u| (u.id, u)).collect();
    let names = |list: &[Named]| -> HashMap<i64, String> {
        list.iter().map(|n| (n.id, n.name.clone())).collect()
    };
    let (clients, tasks, tags) = (names(&data.clients), names(&data.tasks), names(&data.tags));
    let needle = q.description.as_ref().map(|d| d.to_lowercase());

    let kept = data.time_entries.iter().filter(|e| {
        let client = e
            .project_id
            .and_then(|p| projects.get(&p))
            .and_then(|p| p.client_id);
        let raw_seconds = e.stop.signed_duration_since(e.start).num_seconds();
        let local_start = e.start.with_timezone(&tz);
        let local_stop = e.stop.with_timezone(&tz);
        // An entry that runs past midnight ends after any time of day on its start date.
        let stop_time_ok = |t: NaiveTime| {
            local_stop.date_naive() == local_start.date_naive() && local_stop.time() <= t
        };
        e.start >= from
            && e.start < to
            && (data.is_admin || e.user_id == requester)
            && q.user_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&e.user_id))
            && q.project_ids
                .as_ref()
                .is_none_or(|f| f.matches(e.project_id))
            && q.client_ids.as_ref().is_none_or(|f| f.matches(client))
            && q.task_ids.as_ref().is_none_or(|f| f.matches(e.task_id))
            && q.tag_ids.as_ref().is_none_or(|f| f.matches_any(&e.tag_ids))
            && q.group_ids.as_ref().is_none_or(Vec::is_empty)
            && q.time_entry_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&e.id))
            && needle
                .as_ref()
                .is_none_or(|n| e.description.to_lowercase().contains(n))
            && q.billable.is_none_or(|b| e.billable == b)
            && q.min_duration.is_none_or(|m| raw_seconds >= m)
            && q.max_duration.is_none_or(|m| raw_seconds <= m)
            && q.start_time.is_none_or(|t| local_start.time() >= t)
            && q.end_time.is_none_or(stop_time_ok)
    });

    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut groups: BTreeMap<GroupKey, usize> = BTreeMap::new();
    for e in kept {
        let seconds = round_seconds(
            e.stop.signed_duration_since(e.start).num_seconds(),
            q.rounding_minutes,
            q.rounding,
        );
        if q.grouped {
            let mut tag_ids = e.tag_ids.clone();
            tag_ids.sort_unstable();
            let key = (
                e.user_id,
                e.project_id,
                e.task_id,
                e.description.clone(),
                e.billable,
                tag_ids,
            );
            if let Some(&i) = groups.get(&key) {
                rows[i].entries.push((e, seconds));
                continue;
            }
            groups.insert(key, rows.len());
        }
        rows.push(Row {
            entries: vec![(e, seconds)],
        });
    }

    let username = |r: &Row<'_>| {
        users
            .get(&r.first().user_id)
            .map(|u| u.fullname.to_lowercase())
            .unwrap_or_default()
    };
    let tie = |a: &Row<'_>, b: &Row<'_>| {
        a.start()
            .cmp(&b.start())
            .then(a.first().id.cmp(&b.first().id))
    };
    for row in &mut rows {
        row.entries
            .sort_by(|(a, _), (b, _)| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));
        if q.descending {
            row.entries.reverse();
        }
    }
    rows.sort_by(|a, b| {
        let primary = match q.order_by {
            OrderBy::Date => Ordering::Equal,
            OrderBy::User => username(a).cmp(&username(b)),
            OrderBy::Duration => a.seconds().cmp(&b.seconds()),
            OrderBy::Description => a
                .first()
                .description
                .to_lowercase()
                .cmp(&b.first().description.to_lowercase()),
            OrderBy::LastUpdate => a.last_update().cmp(&b.last_update()),
        };
        let ord = primary.then_with(|| tie(a, b));
        if q.descending { ord.reverse() } else { ord }
    });

    // `first_id` (the first entry of a row) wins over `first_row_number`.
    let by_id = q
        .first_id
        .and_then(|id| rows.iter().position(|r| r.first().id == id));
    let by_number = q
        .first_row_number
        .map(|n| usize::try_from(n.max(1) - 1).unwrap_or(usize::MAX));
    let start = by_id.or(by_number).unwrap_or(0).min(rows.len());
    let end = start.saturating_add(q.page_size).min(rows.len());
    let next = rows
        .get(end)
        .map(|row| (row.first().id, i64::try_from(end + 1).unwrap_or(i64::MAX)));
    let page = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, row)| {
            render_row(
                row,
                start + i + 1,
                data,
                q,
                tz,
                &projects,
                &users,
                &clients,
                &tasks,
                &tags,
            )
        })
        .collect();
    (page, next)
}

#[allow(clippy::too_many_arguments)] // lookups built once per request
fn render_row(
    row: &Row<'_>,
    row_number: usize,
    data: &ReportData,
    q: &Query,
    tz: Tz,
    projects: &HashMap<i64, &ReportProject>,
    users: &HashMap<i64, &ReportUser>,
    clients: &HashMap<i64, String>,
    tasks: &HashMap<i64, String>,
    tags: &HashMap<i64, String>,
) -> Value {
    let first = row.first();
    let user = users.get(&first.user_id);
    let project = first.project_id.and_then(|p| projects.get(&p));
    let client_name = project
        .and_then(|p| p.client_id)
        .and_then(|c| clients.get(&c))
        .cloned();
    let rate = project
        .and_then(|p| p.rate)
        .or_else(|| user.and_then(|u| u.hourly_rate))
        .or(data.default_hourly_rate);
    #[allow(clippy::cast_possible_truncation)] // cents of an hourly rate fit in i64
    let rate_cents = rate.map(|r| (r * 100.0).round() as i64);
    let amount = match (first.billable, rate_cents) {
        (true, Some(cents)) => Some((i128::from(cents) * i128::from(row.seconds()) / 3600) as i64),
        _ => None,
    };
    let (rate_cents, amount) = if q.hide_amounts {
        (None, None)
    } else {
        (rate_cents, amount)
    };
    let offset = |t: DateTime<Utc>| {
        t.with_timezone(&tz)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    };
    let entries: Vec<Value> = row
        .entries
        .iter()
        .map(|(e, seconds)| {
            json!({
                "id": e.id,
                "seconds": seconds,
                "start": offset(e.start),
                "stop": offset(e.stop),
                "at": e.at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
                "at_tz": offset(e.at),
            })
        })
        .collect();
    json!({
        "user_id": first.user_id,
        "username": user.map(|u| u.fullname.clone()),
        "email": user.map(|u| u.email.clone()),
        "toggl_accounts_id": user.map(|u| u.toggl_accounts_id.clone()),
        "project_id": first.project_id,
        "project_name": project.map(|p| p.name.clone()),
        "project_color": project.map(|p| p.color.clone()),
        "project_hex": project.map(|p| p.color.clone()),
        "client_name": client_name,
        "task_id": first.task_id,
        "task_name": first.task_id.and_then(|t| tasks.get(&t)).cloned(),
        "description": first.description,
        "billable": first.billable,
        "tag_ids": first.tag_ids,
        "tag_names": first.tag_ids.iter().filter_map(|t| tags.get(t).cloned()).collect::<Vec<_>>(),
        "currency": project.and_then(|p| p.currency.clone()).unwrap_or_else(|| data.currency.clone()),
        "hourly_rate_in_cents": rate_cents,
        "billable_amount_in_cents": amount,
        "row_number": row_number,
        "time_entries": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_directions() {
        assert_eq!(round_seconds(61, 0, 0), 61);
        assert_eq!(round_seconds(7 * 60 + 29, 15, 0), 0);
        assert_eq!(round_seconds(8 * 60, 15, 0), 15 * 60);
        assert_eq!(round_seconds(61, 1, 1), 120);
        assert_eq!(round_seconds(119, 1, -1), 60);
    }

    #[test]
    fn null_in_id_lists_means_without() {
        let f = IdFilter {
            ids: vec![5],
            without: true,
        };
        assert!(f.matches(None) && f.matches(Some(5)) && !f.matches(Some(6)));
        assert!(f.matches_any(&[]) && f.matches_any(&[1, 5]) && !f.matches_any(&[1]));
        let only = IdFilter {
            ids: vec![5],
            without: false,
        };
        assert!(!only.matches(None) && !only.matches_any(&[]));
    }
}
