//! Pagination: the three ways Toggl pages lists.
//!
//! Pages are fetched one at a time, only when the consumer has taken the previous one, so memory
//! stays at one page however long the list (a 100k-row report sync holds one page of rows).

use futures::{Stream, StreamExt as _, TryStreamExt as _};
use serde_json::Value;

use crate::client::Client;
use crate::error::ClientError;
use crate::request::{ApiRequest, ApiResponse, path_template};

/// Response header with the next Reports v3 cursor id.
pub const HEADER_NEXT_ID: &str = "x-next-id";
/// Response header with the next Reports v3 cursor row number.
pub const HEADER_NEXT_ROW_NUMBER: &str = "x-next-row-number";

/// How a list endpoint pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// Query `page` (from 1) and `per_page`; the body is a JSON array; a short page is the last
    /// (`GET /workspaces/{wid}/projects`, `/workspaces/{wid}/tags`, ...).
    PagePerPage {
        /// Query parameter with the page number.
        page_param: String,
        /// Query parameter with the page size.
        per_page_param: String,
        /// Page size to ask for.
        per_page: u32,
    },
    /// Reports v3 search: the body is a JSON array of rows; headers `X-Next-ID` and
    /// `X-Next-Row-Number` go back as `first_id` and `first_row_number` in the JSON request body;
    /// no `X-Next-ID` means the last page.
    ReportsCursor {
        /// `page_size` to put in the request body (Toggl's default is 50).
        page_size: Option<u32>,
    },
    /// A JSON object wrapping the records, e.g. `GET /workspaces/{wid}/tasks` answers
    /// `{data: [...], page, per_page, total_count}`. Ends at a short page or at `total_count`.
    Envelope {
        /// Key of the records array.
        data_key: String,
        /// Query parameter with the page number.
        page_param: String,
        /// Query parameter with the page size.
        per_page_param: String,
        /// Page size to ask for.
        per_page: u32,
    },
}

impl Pagination {
    /// `page` / `per_page` with the given page size.
    pub fn page_per_page(per_page: u32) -> Self {
        Self::PagePerPage {
            page_param: "page".to_owned(),
            per_page_param: "per_page".to_owned(),
            per_page,
        }
    }

    /// An envelope under `data_key`, paged with `page` / `per_page`.
    pub fn envelope(data_key: impl Into<String>, per_page: u32) -> Self {
        Self::Envelope {
            data_key: data_key.into(),
            page_param: "page".to_owned(),
            per_page_param: "per_page".to_owned(),
            per_page,
        }
    }
}

/// One fetched page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// 1-based page number in this walk.
    pub number: u32,
    /// The records of the page.
    pub records: Vec<Value>,
}

struct Walk {
    client: Client,
    req: ApiRequest,
    strategy: Pagination,
    number: u32,
    done: bool,
    previous_first: Option<Value>,
    previous_cursor: Option<(u64, u64)>,
}

impl Client {
    /// The records of a paged list, one page fetched at a time. The stream ends after the last
    /// page or after the first error.
    pub fn paginate(
        &self,
        req: ApiRequest,
        strategy: Pagination,
    ) -> impl Stream<Item = Result<Value, ClientError>> + Send + 'static {
        self.paginate_pages(req, strategy)
            .map_ok(|page| futures::stream::iter(page.records.into_iter().map(Ok)))
            .try_flatten()
    }

    /// The pages of a paged list (empty pages are skipped).
    pub fn paginate_pages(
        &self,
        req: ApiRequest,
        strategy: Pagination,
    ) -> impl Stream<Item = Result<Page, ClientError>> + Send + 'static {
        let walk = Walk {
            client: self.clone(),
            req,
            strategy,
            number: 0,
            done: false,
            previous_first: None,
            previous_cursor: None,
        };
        futures::stream::try_unfold(walk, |mut walk| async move {
            loop {
                if walk.done {
                    return Ok(None);
                }
                let page = walk.next_page().await?;
                if !page.records.is_empty() {
                    return Ok(Some((page, walk)));
                }
            }
        })
        .boxed()
    }
}

impl Walk {
    async fn next_page(&mut self) -> Result<Page, ClientError> {
        self.number += 1;
        let number = self.number;
        let mut req = self.req.clone();
        match &self.strategy {
            Pagination::PagePerPage {
                page_param,
                per_page_param,
                per_page,
            }
            | Pagination::Envelope {
                page_param,
                per_page_param,
                per_page,
                ..
            } => {
                req.set_query(page_param, number.to_string());
                req.set_query(per_page_param, per_page.to_string());
            }
            Pagination::ReportsCursor { page_size } => {
                let mut body = match req.body.take() {
                    Some(Value::Object(map)) => map,
                    None | Some(Value::Null) => serde_json::Map::new(),
                    Some(_) => {
                        return Err(ClientError::InvalidRequest {
                            message: "a reports cursor needs a JSON object body".to_owned(),
                        });
                    }
                };
                if let Some(size) = page_size {
                    body.insert("page_size".to_owned(), Value::from(*size));
                }
                if let Some((id, row)) = self.previous_cursor {
                    // Integers, not strings: Toggl's decoder rejects numbers sent as strings.
                    body.insert("first_id".to_owned(), Value::from(id));
                    body.insert("first_row_number".to_owned(), Value::from(row));
                }
                req.body = Some(Value::Object(body));
            }
        }
        let resp = self.client.send(req).await?;
        let template = path_template(&self.req.path);
        let records = match &self.strategy {
            Pagination::PagePerPage { per_page, .. } => {
                let records = array(resp.body, &template, "a JSON array")?;
                self.done = records.len() < *per_page as usize;
                self.check_progress(&records, &template)?;
                records
            }
            Pagination::Envelope {
                data_key, per_page, ..
            } => {
                let Value::Object(mut map) = resp.body else {
                    return Err(decode(
                        &template,
                        format!("expected an object with {data_key:?}"),
                    ));
                };
                let total = map.get("total_count").and_then(Value::as_u64);
                let records = array(
                    map.remove(data_key.as_str()).unwrap_or(Value::Null),
                    &template,
                    &format!("{data_key:?} to be a JSON array"),
                )?;
                let seen = u64::from(number) * u64::from(*per_page);
                self.done = records.len() < *per_page as usize || total.is_some_and(|t| seen >= t);
                self.check_progress(&records, &template)?;
                records
            }
            Pagination::ReportsCursor { .. } => {
                let cursor = next_cursor(&resp, &template)?;
                let records = array(resp.body, &template, "a JSON array of rows")?;
                match cursor {
                    None => self.done = true,
                    Some(c) if Some(c) == self.previous_cursor => {
                        return Err(decode(
                            &template,
                            "the report cursor did not advance".to_owned(),
                        ));
                    }
                    Some(c) => self.previous_cursor = Some(c),
                }
                records
            }
        };
        Ok(Page { number, records })
    }

    /// A full page identical in its first record to the previous one means the server ignores
    /// the page parameter; stop instead of looping forever.
    fn check_progress(&mut self, records: &[Value], template: &str) -> Result<(), ClientError> {
        let first = records.first().cloned();
        if !self.done && first.is_some() && first == self.previous_first {
            return Err(decode(
                template,
                "the same page came back twice; the server ignores the page parameter".to_owned(),
            ));
        }
        self.previous_first = first;
        Ok(())
    }
}

fn next_cursor(resp: &ApiResponse, template: &str) -> Result<Option<(u64, u64)>, ClientError> {
    let Some(id) = resp
        .header(HEADER_NEXT_ID)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let id: u64 = id
        .parse()
        .map_err(|_| decode(template, "X-Next-ID is not an integer".to_owned()))?;
    let row: u64 = resp
        .header(HEADER_NEXT_ROW_NUMBER)
        .map(str::trim)
        .ok_or_else(|| {
            decode(
                template,
                "X-Next-ID came without X-Next-Row-Number".to_owned(),
            )
        })?
        .parse()
        .map_err(|_| decode(template, "X-Next-Row-Number is not an integer".to_owned()))?;
    Ok(Some((id, row)))
}

fn array(body: Value, template: &str, expected: &str) -> Result<Vec<Value>, ClientError> {
    match body {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(ClientError::Decode {
            path: template.to_owned(),
            message: format!("expected {expected}"),
            body: crate::error::bound(&kind_of(&other)),
        }),
    }
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::Object(map) => format!(
            "an object with keys {}",
            map.keys().take(10).cloned().collect::<Vec<_>>().join(", ")
        ),
        Value::String(_) => "a string".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Null => "null".to_owned(),
    }
}

fn decode(template: &str, message: String) -> ClientError {
    ClientError::Decode {
        path: template.to_owned(),
        message,
        body: String::new(),
    }
}
