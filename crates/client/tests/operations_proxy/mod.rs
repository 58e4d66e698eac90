//! A recording proxy in front of a sandbox: it logs every request the client sends (time,
//! method, path, status, quota and Retry-After headers) and can turn chosen answers into a 502,
//! either without forwarding (nothing happened) or after forwarding (it happened, the client
//! cannot know). The sandbox has no request counter, so this is how tests count on the wire.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use parking_lot::Mutex;
use tokio::time::Instant;

/// One request seen on the wire.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the request reached the proxy.
    pub at: Instant,
    /// When the answer reached the proxy (what the client learned, from then on).
    pub answered_at: Instant,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub quota_remaining: Option<i64>,
    pub resets_in: Option<Duration>,
    pub retry_after: Option<Duration>,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward and answer what the sandbox answered.
    None,
    /// Answer 502 without forwarding.
    BadGatewayBefore,
    /// Forward, then answer 502 instead of the sandbox's answer.
    BadGatewayAfter,
}

type Rule = Box<dyn Fn(&str, &str) -> Fault + Send + Sync>;

struct Inner {
    upstream: String,
    http: reqwest::Client,
    log: Mutex<Vec<Seen>>,
    rule: Mutex<Rule>,
}

#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
    pub url: String,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1:0 in front of `upstream` (a host root like `http://127.0.0.1:P`).
    pub async fn start(upstream: &str) -> Proxy {
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            log: Mutex::new(Vec::new()),
            rule: Mutex::new(Box::new(|_, _| Fault::None)),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy {
            inner,
            url: format!("http://{addr}"),
        }
    }

    /// Sets the fault rule, called with (method, path).
    pub fn set_rule(&self, rule: impl Fn(&str, &str) -> Fault + Send + Sync + 'static) {
        *self.inner.rule.lock() = Box::new(rule);
    }

    /// Everything seen so far.
    pub fn log(&self) -> Vec<Seen> {
        self.inner.log.lock().clone()
    }
}

fn header_num(h: &http::HeaderMap, name: &str) -> Option<f64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let method = req.method().clone();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
        .await
        .expect("body");
    let fault = (inner.rule.lock())(method.as_str(), &path);
    let at = Instant::now();
    let bad_gateway = || {
        Response::builder()
            .status(502)
            .body(Body::from("<html><title>502 Bad Gateway</title></html>"))
            .expect("response")
    };
    if fault == Fault::BadGatewayBefore {
        inner.log.lock().push(Seen {
            at,
            answered_at: at,
            method: method.to_string(),
            path,
            status: 502,
            quota_remaining: None,
            resets_in: None,
            retry_after: None,
        });
        return bad_gateway();
    }
    let mut up = inner
        .http
        .request(method.clone(), format!("{}{path_q}", inner.upstream))
        .body(body);
    for (k, v) in &headers {
        if k != http::header::HOST {
            up = up.header(k, v);
        }
    }
    let resp = up.send().await.expect("upstream answers");
    let status = resp.status();
    let rh = resp.headers().clone();
    let bytes = resp.bytes().await.expect("upstream body");
    inner.log.lock().push(Seen {
        at,
        answered_at: Instant::now(),
        method: method.to_string(),
        path,
        status: status.as_u16(),
        quota_remaining: header_num(&rh, "x-toggl-quota-remaining").map(|f| f as i64),
        resets_in: header_num(&rh, "x-toggl-quota-resets-in")
            .map(|f| Duration::from_secs_f64(f.max(0.0))),
        retry_after: header_num(&rh, "retry-after").map(|f| Duration::from_secs_f64(f.max(0.0))),
    });
    if fault == Fault::BadGatewayAfter {
        return bad_gateway();
    }
    let mut out = Response::builder().status(status);
    for (k, v) in &rh {
        if k != http::header::TRANSFER_ENCODING
            && k != http::header::CONTENT_LENGTH
            && k != http::header::CONNECTION
        {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(bytes)).expect("response")
}
