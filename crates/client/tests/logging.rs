//! Everything the client (and reqwest/hyper below it) logs, at TRACE, holds no credentials and
//! no query values.

mod common;

use std::io::Write;
use std::sync::Arc;

use base64::Engine as _;
use common::{Reply, TEST_TOKEN, TestServer, config};
use parking_lot::Mutex;
use serde_json::json;
use toggl_connect_client::{ApiRequest, Client};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_logs_hold_no_token_and_no_query_values() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let server = TestServer::start(|r, i| match (r.path.as_str(), i) {
        ("/api/v9/me", _) => Reply::json(200, json!({"api_token": TEST_TOKEN})).quota(20, 100),
        (_, 1) => Reply::new(503),
        (_, 3) => Reply::new(429),
        _ => Reply::json(200, json!([])).quota(19, 100),
    })
    .await;
    let client = Client::new(config(&server.url)).expect("client");
    client
        .send(ApiRequest::get("/api/v9/me"))
        .await
        .expect("me");
    client
        .send(
            ApiRequest::get("/api/v9/workspaces/1/projects")
                .with_query("name", "SECRET-QUERY-VALUE"),
        )
        .await
        .expect("retried 503");
    client
        .send(ApiRequest::post(
            "/api/v9/workspaces/1/tags",
            json!({"name": "x"}),
        ))
        .await
        .expect("retried 429");

    let logs = String::from_utf8_lossy(&capture.0.lock()).into_owned();
    assert!(
        logs.contains("toggl response"),
        "client events are captured: {logs}"
    );
    assert!(
        logs.contains("/api/v9/workspaces/{id}/projects"),
        "path templates are logged"
    );
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{TEST_TOKEN}:api_token"));
    assert!(!logs.contains(TEST_TOKEN), "token in logs");
    assert!(!logs.contains(&encoded), "credentials in logs");
    assert!(!logs.contains("SECRET-QUERY-VALUE"), "query value in logs");
}
