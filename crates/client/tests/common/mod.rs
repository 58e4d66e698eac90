//! A scripted HTTP server on 127.0.0.1:0 that records every request it receives.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use toggl_connect_client::{ClientConfig, RetryPolicy};
use tokio::time::Instant;

pub const TEST_TOKEN: &str = "tok-3f9a1c77e2b84d0f9e6a";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::new(status)
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    pub fn quota(self, remaining: i64, resets_in: u64) -> Self {
        self.header("X-Toggl-Quota-Remaining", remaining.to_string())
            .header("X-Toggl-Quota-Resets-In", resets_in.to_string())
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

#[derive(Clone)]
struct AppState {
    handler: Arc<Handler>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

pub struct TestServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        at: Instant::now(),
    };
    let reply = {
        let mut requests = state.requests.lock();
        let index = requests.len();
        requests.push(recorded.clone());
        (state.handler)(&recorded, index)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).expect("valid status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(&value).expect("valid header value"),
        );
    }
    response
}

impl TestServer {
    /// A server answering each request with `handler(request, index)`.
    pub async fn start(
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = AppState {
            handler: Arc::new(handler),
            requests: Arc::clone(&requests),
        };
        let app = axum::Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("server runs");
        });
        Self {
            url,
            requests,
            task,
        }
    }

    /// A server answering the n-th request with `replies[n]` (the last one repeats).
    pub async fn script(replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty());
        Self::start(move |_, i| replies[i.min(replies.len() - 1)].clone()).await
    }

    pub fn count(&self) -> usize {
        self.requests.lock().len()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().clone()
    }
}

/// Fast settings for tests: no pacing, short backoffs, no organization lookup.
pub fn config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::with_token(TEST_TOKEN).base_url(url);
    c.pacing = None;
    c.request_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(2);
    c.max_quota_wait = Duration::from_secs(20);
    c.resolve_workspace_orgs = false;
    c.retry = RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(10),
    };
    c
}
