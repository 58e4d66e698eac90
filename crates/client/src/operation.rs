//! Executing compiled operations of a connector definition.
//!
//! The definition crate renders an operation into a [`RenderedRequest`] (typed, encoded, checked);
//! this module sends it: the quota scope comes from the rendered path, the declared pagination is
//! followed page by page, and the items are picked out of the body by the declared
//! [`ResponseShape`]. Items stay raw JSON: the caller flattens them with
//! [`toggl_connect_definition::Resource::flatten`] or prints them as they are (`--raw`).
//!
//! Decision: a definition may declare a Reports cursor with other header or body field names than
//! Toggl's (`X-Next-ID` / `first_id`, ...). The client walks only Toggl's names (they are what the
//! API sends); any other spelling is refused with [`ClientError::InvalidRequest`] before anything
//! is sent rather than walked wrongly.

use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use http::Method as HttpMethod;
use serde_json::Value;
use toggl_connect_definition::{
    Lookup, Method, Pagination as DefPagination, Params, Record, RenderError, RenderedRequest,
    Resource, ResponseShape,
};

use crate::client::Client;
use crate::error::ClientError;
use crate::pagination::{HEADER_NEXT_ID, HEADER_NEXT_ROW_NUMBER, Pagination};
use crate::request::ApiRequest;

/// Page size asked of an envelope list whose definition names none (Toggl's tasks list defaults
/// to 50; asking explicitly keeps "a short page is the last" true whatever the server default).
const ENVELOPE_DEFAULT_PER_PAGE: u32 = 50;

/// What running an operation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationOutput {
    /// The items, picked out by the response shape and concatenated over all pages.
    pub items: Vec<Value>,
    /// The whole body for an operation without pagination (`Null` for an empty body); for a
    /// paged operation, every item as one array.
    pub body: Value,
    /// HTTP status of the (last) response; 200 for a paged walk.
    pub status: u16,
}

/// Why an operation-level call (render, send, look up) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// The parameters did not fit the operation; nothing was sent.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Sending failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The lookup names an operation the resource does not have.
    #[error("lookup operation {resource}.{operation} does not exist")]
    UnknownLookupOperation {
        /// Resource name.
        resource: String,
        /// Operation name.
        operation: String,
    },
    /// The create was given no value for the parameter the lookup compares.
    #[error("lookup needs parameter {name}, which was not given")]
    LookupParamMissing {
        /// Parameter name.
        name: String,
    },
}

fn http_method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::GET,
        Method::Post => HttpMethod::POST,
        Method::Put => HttpMethod::PUT,
        Method::Patch => HttpMethod::PATCH,
        Method::Delete => HttpMethod::DELETE,
    }
}

/// The client request for a rendered operation: same method, path, query and body; the quota
/// scope follows the path; idempotence is the definition's (a declared-idempotent POST such as a
/// Reports search may be retried, a PUT the definition calls unsafe is not).
pub fn api_request(req: &RenderedRequest) -> ApiRequest {
    let mut out =
        ApiRequest::new(http_method(req.method), req.path.clone()).idempotent(req.idempotent);
    out.query.clone_from(&req.query);
    out.body.clone_from(&req.body);
    out
}

/// The client's walk for a definition's declared pagination. `body` is the rendered body: a
/// page size the caller put there is kept instead of the definition's default.
pub fn client_pagination(
    declared: &DefPagination,
    body: Option<&Value>,
) -> Result<Pagination, ClientError> {
    Ok(match declared {
        DefPagination::PagePerPage {
            page_param,
            per_page_param,
            per_page,
            max_per_page,
        } => Pagination::PagePerPage {
            page_param: page_param.clone(),
            per_page_param: per_page_param.clone(),
            per_page: max_per_page
                .map_or(*per_page, |max| (*per_page).min(max))
                .max(1),
        },
        DefPagination::Envelope {
            data_key,
            page_param,
            per_page_param,
            per_page,
            total_key: _,
        } => Pagination::Envelope {
            data_key: data_key.clone(),
            page_param: page_param.clone(),
            per_page_param: per_page_param.clone(),
            per_page: per_page.unwrap_or(ENVELOPE_DEFAULT_PER_PAGE).max(1),
        },
        DefPagination::ReportsCursor {
            next_id_header,
            next_row_header,
            first_id_field,
            first_row_field,
            page_size_field,
            page_size,
        } => {
            let toggl_names = next_id_header.eq_ignore_ascii_case(HEADER_NEXT_ID)
                && next_row_header.eq_ignore_ascii_case(HEADER_NEXT_ROW_NUMBER)
                && first_id_field == "first_id"
                && first_row_field == "first_row_number"
                && page_size_field == "page_size";
            if !toggl_names {
                return Err(ClientError::InvalidRequest {
                    message: format!(
                        "reports cursor with {next_id_header}/{next_row_header} -> {first_id_field}/{first_row_field}/{page_size_field} is not supported; Toggl uses X-Next-ID/X-Next-Row-Number -> first_id/first_row_number/page_size"
                    ),
                });
            }
            let given = body
                .and_then(|b| b.get(page_size_field))
                .is_some_and(|v| !v.is_null());
            Pagination::ReportsCursor {
                page_size: if given { None } else { *page_size },
            }
        }
    })
}

impl Client {
    /// The items of an operation's response(s), one page fetched at a time for a paged operation
    /// (memory stays at one page), or the items of the single response otherwise.
    pub fn operation_items(
        &self,
        req: &RenderedRequest,
    ) -> BoxStream<'static, Result<Value, ClientError>> {
        let api = api_request(req);
        match &req.pagination {
            Some(p) => match client_pagination(p, req.body.as_ref()) {
                Ok(strategy) => self.paginate(api, strategy).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            },
            None => {
                let client = self.clone();
                let shape = req.response.clone();
                futures::stream::once(async move {
                    let resp = client.send(api).await?;
                    Ok::<_, ClientError>(futures::stream::iter(
                        take_items(&shape, resp.body).into_iter().map(Ok),
                    ))
                })
                .try_flatten()
                .boxed()
            }
        }
    }

    /// Runs an operation to the end (every page) and collects its items.
    pub async fn run_operation(
        &self,
        req: &RenderedRequest,
    ) -> Result<OperationOutput, ClientError> {
        if req.pagination.is_some() {
            let items: Vec<Value> = self.operation_items(req).try_collect().await?;
            return Ok(OperationOutput {
                body: Value::Array(items.clone()),
                items,
                status: 200,
            });
        }
        let resp = self.send(api_request(req)).await?;
        let items = take_items(&req.response, resp.body.clone());
        Ok(OperationOutput {
            items,
            body: resp.body,
            status: resp.status.as_u16(),
        })
    }

    /// Checks whether a create whose outcome is unknown took effect: runs the lookup's listing
    /// operation of `resource` with those of `params` it declares, flattens the items and returns
    /// the first record whose lookup field equals the create's parameter value.
    pub async fn find_created(
        &self,
        resource: &Resource,
        lookup: &Lookup,
        params: &Params,
    ) -> Result<Option<Record>, OperationError> {
        let op = resource.operation(&lookup.operation).ok_or_else(|| {
            OperationError::UnknownLookupOperation {
                resource: resource.name.clone(),
                operation: lookup.operation.clone(),
            }
        })?;
        let wanted = params
            .get(&lookup.param)
            .filter(|v| !v.is_null())
            .ok_or_else(|| OperationError::LookupParamMissing {
                name: lookup.param.clone(),
            })?
            .clone();
        let list_params: Params = params
            .iter()
            .filter(|(name, _)| op.param(name).is_some())
            .map(|(name, value)| (name.to_owned(), value.clone()))
            .collect();
        let req = op.render(&list_params)?;
        let mut items = self.operation_items(&req);
        while let Some(item) = items.try_next().await? {
            let record = resource.flatten(&item);
            if record.get(&lookup.field) == Some(&wanted) {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }
}

fn take_items(shape: &ResponseShape, body: Value) -> Vec<Value> {
    match (shape, body) {
        (_, Value::Null) | (ResponseShape::Empty, _) => Vec::new(),
        (ResponseShape::Envelope { data_key }, Value::Object(mut map)) => {
            match map.remove(data_key.as_str()) {
                Some(Value::Array(items)) => items,
                Some(Value::Null) | None => Vec::new(),
                Some(other) => vec![other],
            }
        }
        (_, Value::Array(items)) => items,
        (_, other) => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::QuotaScope;
    use serde_json::json;
    use toggl_connect_definition::Connector;

    #[test]
    fn rendered_request_maps_to_api_request() {
        let c = Connector::builtin();
        let op = c.operation("clients", "create").expect("clients.create");
        let params =
            Params::from_text_pairs(&[("workspace_id", "42"), ("name", "Acme")], &op.params)
                .expect("params");
        let req = api_request(&op.render(&params).expect("renders"));
        assert_eq!(req.method, HttpMethod::POST);
        assert_eq!(req.path, "/api/v9/workspaces/42/clients");
        assert_eq!(req.scope, QuotaScope::Workspace(42));
        assert!(!req.idempotent);
        assert_eq!(req.body, Some(json!({"name": "Acme"})));

        let op = c
            .operation("reports", "search_time_entries")
            .expect("reports search");
        let params = Params::from_text_pairs(
            &[("workspace_id", "7"), ("start_date", "2025-01-01")],
            &op.params,
        )
        .expect("params");
        let rendered = op.render(&params).expect("renders");
        assert!(
            api_request(&rendered).idempotent,
            "declared idempotent POST"
        );
        assert_eq!(
            client_pagination(
                rendered.pagination.as_ref().expect("paged"),
                rendered.body.as_ref()
            )
            .expect("maps"),
            Pagination::ReportsCursor {
                page_size: Some(50)
            }
        );
    }

    #[test]
    fn caller_page_size_wins_over_declared_default() {
        let declared = DefPagination::ReportsCursor {
            next_id_header: "X-Next-ID".into(),
            next_row_header: "X-Next-Row-Number".into(),
            first_id_field: "first_id".into(),
            first_row_field: "first_row_number".into(),
            page_size_field: "page_size".into(),
            page_size: Some(50),
        };
        let body = json!({"start_date": "2025-01-01", "page_size": 500});
        assert_eq!(
            client_pagination(&declared, Some(&body)).expect("maps"),
            Pagination::ReportsCursor { page_size: None }
        );
        let odd = DefPagination::ReportsCursor {
            next_id_header: "X-Cursor".into(),
            next_row_header: "X-Next-Row-Number".into(),
            first_id_field: "first_id".into(),
            first_row_field: "first_row_number".into(),
            page_size_field: "page_size".into(),
            page_size: None,
        };
        assert!(matches!(
            client_pagination(&odd, None),
            Err(ClientError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn page_size_is_capped_by_the_declared_maximum() {
        let declared = DefPagination::PagePerPage {
            page_param: "page".into(),
            per_page_param: "per_page".into(),
            per_page: 500,
            max_per_page: Some(200),
        };
        assert_eq!(
            client_pagination(&declared, None).expect("maps"),
            Pagination::page_per_page(200)
        );
    }

    #[test]
    fn items_follow_the_shape() {
        let env = ResponseShape::Envelope {
            data_key: "data".into(),
        };
        assert_eq!(
            take_items(&env, json!({"data": [1, 2], "total_count": 2})),
            vec![json!(1), json!(2)]
        );
        assert!(take_items(&ResponseShape::ObjectOrNull, Value::Null).is_empty());
        assert!(take_items(&ResponseShape::Empty, json!("OK")).is_empty());
        assert_eq!(
            take_items(&ResponseShape::Object, json!({"a": 1})),
            vec![json!({"a": 1})]
        );
        assert_eq!(
            take_items(&ResponseShape::Array, json!([1])),
            vec![json!(1)]
        );
    }
}
