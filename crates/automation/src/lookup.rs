//! Checking whether a create already happened, before it is sent again.
//!
//! A create whose outcome is unknown (the request left, no answer came) may or may not exist in
//! Toggl. Sending it again could make a duplicate task, client or membership; giving up could
//! lose it. So the worker lists and matches first: the definition declares, per create, which
//! listing operation and which field identify the record ([`Lookup`]).
//!
//! Where the built-in definition declares no lookup but a natural key exists, this module adds
//! one (the definition crate is not ours to change):
//! - `project_users.create`: a user is a member of a project at most once, so list the
//!   project's members (`project_ids`, `user_id`) and match `project_id` and `user_id`.
//!
//! Creates with no way to check (time entries: nothing in a time entry is unique) are not sent
//! again after an unknown outcome; the run is dead-lettered with that reason for an operator.

use futures::TryStreamExt as _;
use serde_json::Value;
use toggl_connect_client::{Client, ClientError};
use toggl_connect_definition::{Connector, Operation, Params, Resource};

use crate::request::{to_api_request, to_client_pagination};

/// Most list pages read while looking for a created record.
const MAX_LOOKUP_RECORDS: usize = 10_000;

/// How to find a record a create made.
#[derive(Debug)]
pub struct LookupPlan<'a> {
    resource: &'a Resource,
    list: &'a Operation,
    /// (record field, create parameter) pairs that must all be equal.
    matches: Vec<(String, String)>,
    /// (list parameter, create parameter) pairs passed to the listing besides same-named ones.
    renames: Vec<(String, String)>,
}

/// Lookups this crate adds where the built-in definition declares none:
/// (resource, create operation, list operation, matches, renamed list parameters).
type ExtraLookup = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
);
const EXTRA_LOOKUPS: &[ExtraLookup] = &[(
    "project_users",
    "create",
    "list",
    &[("project_id", "project_id"), ("user_id", "user_id")],
    &[("project_ids", "project_id")],
)];

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
                matches: vec![(l.field.clone(), l.param.clone())],
                renames: Vec::new(),
            });
        }
        let (_, _, list, matches, renames) = EXTRA_LOOKUPS
            .iter()
            .find(|(r, o, ..)| *r == resource && *o == operation.name)?;
        Some(Self {
            resource: res,
            list: res.operation(list)?,
            matches: matches
                .iter()
                .map(|(f, p)| ((*f).to_owned(), (*p).to_owned()))
                .collect(),
            renames: renames
                .iter()
                .map(|(l, c)| ((*l).to_owned(), (*c).to_owned()))
                .collect(),
        })
    }

    /// `GET <path template>` of the listing, for attempt records.
    pub fn describe(&self) -> String {
        format!("{} {}", self.list.method, self.list.path)
    }

    /// Lists and returns the raw item whose fields equal the create's parameters, if any.
    /// `create_params` are the create's resolved parameters (defaults applied).
    pub async fn find(
        &self,
        client: &Client,
        create_params: &Params,
    ) -> Result<Option<Value>, LookupError> {
        let mut wanted = Vec::new();
        for (field, param) in &self.matches {
            match create_params.get(param) {
                Some(v) if !v.is_null() => wanted.push((field.as_str(), v)),
                // Without the key value nothing can be matched; treat as "cannot check".
                _ => {
                    return Err(LookupError::NoKey {
                        param: param.clone(),
                    });
                }
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
                let v = if self.list.param(list_param).is_some_and(|s| {
                    matches!(
                        s.ty,
                        toggl_connect_definition::ParamType::IntegerArray
                            | toggl_connect_definition::ParamType::Array
                    )
                }) {
                    Value::Array(vec![v.clone()])
                } else {
                    v.clone()
                };
                list_params.insert(list_param.clone(), v);
            }
        }
        let rendered = self
            .list
            .render(&list_params)
            .map_err(|e| LookupError::Render(e.to_string()))?;
        let is_match = |item: &Value| {
            let record = self.resource.flatten(item);
            wanted
                .iter()
                .all(|(field, value)| record.get(*field).is_some_and(|r| same(r, value)))
        };
        let req = to_api_request(&rendered);
        if let Some(p) = &rendered.pagination {
            let stream = client.paginate(req, to_client_pagination(p));
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
        assert_eq!(plan.matches, vec![("name".to_owned(), "name".to_owned())]);
        let members = c
            .operation("project_users", "create")
            .expect("project_users.create");
        let plan = LookupPlan::for_operation(c, "project_users", members).expect("added lookup");
        assert_eq!(plan.matches.len(), 2);
        let entries = c
            .operation("time_entries", "create")
            .expect("time_entries.create");
        assert!(LookupPlan::for_operation(c, "time_entries", entries).is_none());
    }
}
