//! From the definition's [`RenderedRequest`] to the client's [`ApiRequest`].
//!
//! Kept here (not in the client) because the client must not depend on the definition's
//! pagination and response-shape types; the conversion is a few lines and only automations need
//! it. Idempotence comes from the definition (it knows which POSTs are safe to repeat, e.g. the
//! Reports search), never from the method alone.

use reqwest::Method as HttpMethod;
use toggl_connect_client::{ApiRequest, Pagination as ClientPagination};
use toggl_connect_definition::{Method, Pagination, RenderedRequest};

/// The HTTP method of a definition method.
pub fn http_method(method: Method) -> HttpMethod {
    match method {
        Method::Get => HttpMethod::GET,
        Method::Post => HttpMethod::POST,
        Method::Put => HttpMethod::PUT,
        Method::Patch => HttpMethod::PATCH,
        Method::Delete => HttpMethod::DELETE,
    }
}

/// The client request for a rendered request (method, path, query, body, idempotence; the quota
/// scope follows the path).
pub fn to_api_request(rendered: &RenderedRequest) -> ApiRequest {
    let mut req = ApiRequest::new(http_method(rendered.method), rendered.path.clone())
        .idempotent(rendered.idempotent);
    req.query.clone_from(&rendered.query);
    req.body.clone_from(&rendered.body);
    req
}

/// The client's pagination strategy for a definition's pagination.
pub fn to_client_pagination(p: &Pagination) -> ClientPagination {
    match p {
        Pagination::PagePerPage {
            page_param,
            per_page_param,
            per_page,
            max_per_page,
        } => ClientPagination::PagePerPage {
            page_param: page_param.clone(),
            per_page_param: per_page_param.clone(),
            per_page: max_per_page.map_or(*per_page, |m| (*per_page).min(m)),
        },
        Pagination::ReportsCursor { page_size, .. } => ClientPagination::ReportsCursor {
            page_size: *page_size,
        },
        Pagination::Envelope {
            data_key,
            page_param,
            per_page_param,
            per_page,
            ..
        } => ClientPagination::Envelope {
            data_key: data_key.clone(),
            page_param: page_param.clone(),
            per_page_param: per_page_param.clone(),
            // Toggl's default for `/workspaces/{wid}/tasks` is 50.
            per_page: per_page.unwrap_or(50),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toggl_connect_client::QuotaScope;
    use toggl_connect_definition::{Connector, Params};

    #[test]
    fn create_task_becomes_a_non_idempotent_post() {
        let op = Connector::builtin()
            .operation("tasks", "create")
            .expect("built-in tasks.create");
        let params = Params::new()
            .with("workspace_id", 9)
            .with("project_id", 5)
            .with("name", "Kickoff");
        let rendered = op.render(&params).expect("renders");
        let req = to_api_request(&rendered);
        assert_eq!(req.method, HttpMethod::POST);
        assert_eq!(req.path, "/api/v9/workspaces/9/projects/5/tasks");
        assert!(!req.idempotent);
        assert_eq!(req.scope, QuotaScope::Workspace(9));
        assert_eq!(
            req.body.as_ref().and_then(|b| b.get("name")),
            Some(&serde_json::json!("Kickoff"))
        );
    }

    #[test]
    fn declared_idempotent_post_stays_idempotent() {
        let op = Connector::builtin()
            .operation("time_entries", "stop")
            .expect("built-in stop");
        let rendered = op
            .render(&Params::new().with("workspace_id", 9).with("id", 3))
            .expect("renders");
        let req = to_api_request(&rendered);
        assert_eq!(req.method, HttpMethod::PATCH);
        assert!(req.idempotent);
    }
}
