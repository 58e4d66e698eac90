//! Checking whether a create already happened, before it is sent again.
//!
//! A create whose outcome is unknown (the request left, no answer came) may or may not exist in
//! Toggl. Sending it again could make a duplicate task, client or membership; giving up could
//! lose it. So the worker lists and matches first: the definition declares, per create, which
//! listing operation and which field identify the record ([`toggl_connect_definition::Lookup`]).
//!
//! Where the built-in definition declares no lookup but a natural key exists, this module adds
//! one (the definition crate is not ours to change):
//! - `project_users.create`: a user is a member of a project at most once, so list the
//!   project's members (`project_ids`, `user_id`) and match `project_id` and `user_id`;
//! - `time_entries.create` / `start`: list the token user's entries in a window of days around
//!   `start` and match workspace, start instant and description.
//!
//! Creates with no way to check are not sent again after an unknown outcome; the run is
//! dead-lettered with that reason for an operator.

use chrono::{DateTime, TimeZone as _, Utc};
use futures::TryStreamExt as _;
use serde_json::Value;
use toggl_connect_client::{Client, ClientError};
use toggl_connect_definition::{Connector, Operation, ParamType, Params, Resource};

use toggl_connect_client::{api_request, client_pagination};

/// Most listed records read while looking for a created record.
const MAX_LOOKUP_RECORDS: usize = 10_000;

/// How a record field is compared with a create parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// Equal JSON values (numbers by value); the parameter must have a value.
    Equal,
    /// The same instant, whatever the offset or precision each side is written in
    /// (`2025-01-10T09:00:00+01:00` is `2025-01-10T08:00:00Z`); the parameter must have a value.
    Instant,
    /// Equal text, where an absent parameter matches `null` or `""` (optional descriptions).
    TextOrEmpty,
}

/// One condition a found record must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMatch {
    /// Field of the flattened record.
    pub field: String,
    /// Parameter of the create.
    pub param: String,
    /// How they are compared.
    pub kind: MatchKind,
}

impl KeyMatch {
    fn new(field: &str, param: &str, kind: MatchKind) -> Self {
        Self {
            field: field.to_owned(),
            param: param.to_owned(),
            kind,
        }
    }
}

/// How to find a record a create made.
#[derive(Debug)]
pub struct LookupPlan<'a> {
    resource: &'a Resource,
    list: &'a Operation,
    /// Conditions that must all hold.
    matches: Vec<KeyMatch>,
    /// (list parameter, create parameter) pairs passed to the listing besides same-named ones;
    /// a list-typed parameter gets a one-element list.
    renames: Vec<(String, String)>,
    /// For time entries: list `start_date`..`end_date` around the create's `start`.
    day_window_around: Option<String>,
}

impl<'a> LookupPlan<'a> {
    /// The lookup for `resource.operation`, if there is a way to check.
    pub fn for_operation(
        connector: &'a Connector,
        resource: &str,
        operation: &'a Operation,
    ) -> Option<Self> {
        let res = connector.resource(resource)?;
        if let Some(l) = &operation.lookup {
            return Some(Self {
                resource: res,
                list: res.operation(&l.operation)?,
                matches: vec![KeyMatch::new(&l.field, &l.param, MatchKind::Equal)],
                renames: Vec::new(),
                day_window_around: None,
            });
        }
        match (resource, operation.name.as_str()) {
            // A user is a member of a project at most once.
            ("project_users", "create") => Some(Self {
                resource: res,
                list: res.operation("list")?,
                matches: vec![
                    KeyMatch::new("project_id", "project_id", MatchKind::Equal),
                    KeyMatch::new("user_id", "user_id", MatchKind::Equal),
                ],
                renames: vec![("project_ids".into(), "project_id".into())],
                day_window_around: None,
            }),
            // Nothing in a time entry is unique, but the same workspace, start instant and
            // description, created by the same token, is the entry this step made: a person
            // does not start two entries with the same description at the same second.
            ("time_entries", "create" | "start") => Some(Self {
                resource: res,
                list: res.operation("list")?,
                matches: vec![
                    KeyMatch::new("workspace_id", "workspace_id", MatchKind::Equal),
                    KeyMatch::new("start", "start", MatchKind::Instant),
                    KeyMatch::new("description", "description", MatchKind::TextOrEmpty),
                ],
                renames: Vec::new(),
                day_window_around: Some("start".into()),
            }),
            _ => None,
        }
    }

    /// `GET <path template>` of the listing, for attempt records.
    pub fn describe(&self) -> String {
        format!("{} {}", self.list.method, self.list.path)
    }

    /// The conditions a found record must meet.
    pub fn matches(&self) -> &[KeyMatch] {
        &self.matches
    }

    /// Lists and returns the raw item whose fields equal the create's parameters, if any.
    /// `create_params` are the create's resolved parameters (defaults applied).
    pub async fn find(
        &self,
        client: &Client,
        create_params: &Params,
    ) -> Result<Option<Value>, LookupError> {
        for m in &self.matches {
            let has = create_params.get(&m.param).is_some_and(|v| !v.is_null());
            if !has && m.kind != MatchKind::TextOrEmpty {
                // Without the key value nothing can be matched; treat as "cannot check".
                return Err(LookupError::NoKey {
                    param: m.param.clone(),
                });
            }
        }
        let mut list_params = Params::new();
        for spec in &self.list.params {
            if let Some(v) = create_params.get(&spec.name) {
                list_params.insert(spec.name.clone(), v.clone());
            }
        }
        for (list_param, create_param) in &self.renames {
            if let Some(v) = create_params.get(create_param) {
                let is_list = self
                    .list
                    .param(list_param)
                    .is_some_and(|s| matches!(s.ty, ParamType::IntegerArray | ParamType::Array));
                let v = if is_list {
                    Value::Array(vec![v.clone()])
                } else {
                    v.clone()
                };
                list_params.insert(list_param.clone(), v);
            }
        }
        if let Some(param) = &self.day_window_around {
            let start =
                create_params
                    .get(param)
                    .and_then(instant)
                    .ok_or_else(|| LookupError::NoKey {
                        param: param.clone(),
                    })?;
            // A day either side: Toggl may cut dates in the user's time zone (UNCONFIRMED).
            let day = start.date_naive();
            let from = day - chrono::Days::new(1);
            let to = day + chrono::Days::new(2);
            list_params.insert("start_date", from.format("%Y-%m-%d").to_string());
            list_params.insert("end_date", to.format("%Y-%m-%d").to_string());
        }
        let rendered = self
            .list
            .render(&list_params)
            .map_err(|e| LookupError::Render(e.to_string()))?;
        let is_match = |item: &Value| {
            let record = self.resource.flatten(item);
            self.matches.iter().all(|m| {
                let field = record.get(&m.field).unwrap_or(&Value::Null);
                let param = create_params.get(&m.param).unwrap_or(&Value::Null);
                match m.kind {
                    MatchKind::Equal => same(field, param),
                    MatchKind::Instant => instant(field).is_some_and(|f| Some(f) == instant(param)),
                    MatchKind::TextOrEmpty => {
                        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                        (field.is_null() || field.is_string())
                            && (param.is_null() || param.is_string())
                            && text(field) == text(param)
                    }
                }
            })
        };
        let req = api_request(&rendered);
        if let Some(p) = &rendered.pagination {
            let stream = client.paginate(req, client_pagination(p, rendered.body.as_ref())?);
            futures::pin_mut!(stream);
            let mut seen = 0usize;
            while let Some(item) = stream.try_next().await? {
                if is_match(&item) {
                    return Ok(Some(item));
                }
                seen += 1;
                if seen >= MAX_LOOKUP_RECORDS {
                    break;
                }
            }
            Ok(None)
        } else {
            let resp = client.send(req).await?;
            Ok(rendered
                .response
                .items(&resp.body)
                .into_iter()
                .find(|i| is_match(i))
                .cloned())
        }
    }
}

/// An RFC 3339 timestamp as an instant, truncated to whole seconds (Toggl stores seconds).
fn instant(v: &Value) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()?
        .with_timezone(&Utc);
    Utc.timestamp_opt(t.timestamp(), 0).single()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// A lookup that could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// Talking to Toggl failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The listing request could not be rendered.
    #[error("cannot render the lookup listing: {0}")]
    Render(String),
    /// The create has no value for a key parameter, so no record can be matched.
    #[error("the create has no value for `{param}`, so an existing record cannot be matched")]
    NoKey {
        /// The parameter.
        param: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_and_added_lookups() {
        let c = Connector::builtin();
        let tasks = c.operation("tasks", "create").expect("tasks.create");
        let plan =
            LookupPlan::for_operation(c, "tasks", tasks).expect("tasks.create declares a lookup");
        assert_eq!(
            plan.matches(),
            [KeyMatch::new("name", "name", MatchKind::Equal)]
        );
        let members = c
            .operation("project_users", "create")
            .expect("project_users.create");
        let plan = LookupPlan::for_operation(c, "project_users", members).expect("added lookup");
        assert_eq!(plan.matches().len(), 2);
        let entries = c
            .operation("time_entries", "create")
            .expect("time_entries.create");
        assert!(LookupPlan::for_operation(c, "time_entries", entries).is_some());
        let clients = c.operation("clients", "update").expect("clients.update");
        assert!(LookupPlan::for_operation(c, "clients", clients).is_none());
    }

    #[test]
    fn instants_compare_across_offsets_and_precision() {
        let a = instant(&serde_json::json!("2025-01-10T09:00:00+01:00"));
        assert!(a.is_some());
        assert_eq!(
            a,
            instant(&serde_json::json!("2025-01-10T08:00:00.123456Z"))
        );
        assert_ne!(a, instant(&serde_json::json!("2025-01-10T08:00:01Z")));
        assert_eq!(instant(&serde_json::json!("not a time")), None);
    }
}
