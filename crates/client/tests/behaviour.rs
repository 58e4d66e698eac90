//! Retries, quota, errors and secrets against a scripted server.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Reply, TEST_TOKEN, TestServer, config};
use http::Method;
use serde_json::json;
use toggl_connect_client::{ApiRequest, Client, ClientError, QuotaScope};

fn client(server: &TestServer) -> Client {
    Client::new(config(&server.url)).expect("client builds")
}

#[tokio::test]
async fn sends_basic_auth_user_agent_and_encoded_query_to_the_right_path() {
    let server = TestServer::script(vec![Reply::json(200, json!({"id": 1}))]).await;
    // A base URL ending in /api/v9 must not double the prefix.
    let c = Client::new(config(&format!("{}/api/v9/", server.url))).expect("client");
    let resp = c
        .send(ApiRequest::get("/api/v9/me/time_entries").with_query("description", "a b&c=d"))
        .await
        .expect("ok");
    assert_eq!(resp.body, json!({"id": 1}));
    let r = &server.recorded()[0];
    assert_eq!(r.path, "/api/v9/me/time_entries");
    assert_eq!(r.query.as_deref(), Some("description=a+b%26c%3Dd"));
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{TEST_TOKEN}:api_token"))
    );
    assert_eq!(r.headers["authorization"], expected.as_str());
    let ua = r.headers["user-agent"].to_str().expect("ascii");
    assert!(ua.starts_with("toggl-connect/"), "{ua}");
}

#[tokio::test]
async fn email_password_credentials_use_basic_auth() {
    let server = TestServer::script(vec![Reply::json(200, json!({}))]).await;
    let mut cfg = config(&server.url);
    cfg.credentials = toggl_connect_client::Credentials::EmailPassword {
        email: "ann@example.test".into(),
        password: "pa55word".into(),
    };
    Client::new(cfg)
        .expect("client")
        .send(ApiRequest::get("/api/v9/me"))
        .await
        .expect("ok");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ann@example.test:pa55word")
    );
    assert_eq!(
        server.recorded()[0].headers["authorization"],
        expected.as_str()
    );
}

#[tokio::test]
async fn json_body_is_sent_and_empty_success_body_is_null() {
    let server = TestServer::script(vec![Reply::new(200)]).await;
    let body = json!({"workspace_id": 3_730_303_299_u64, "duration": -1, "created_with": "t"});
    let resp = client(&server)
        .send(ApiRequest::post(
            "/api/v9/workspaces/3730303299/time_entries",
            body.clone(),
        ))
        .await
        .expect("ok");
    assert_eq!(resp.body, serde_json::Value::Null);
    let r = &server.recorded()[0];
    assert_eq!(r.json(), body);
    assert_eq!(r.headers["content-type"], "application/json");
}

#[tokio::test]
async fn quota_402_with_headers_waits_for_the_reset_then_retries_once() {
    let server = TestServer::script(vec![
        Reply::json(402, json!("quota exceeded")).quota(0, 1),
        Reply::json(200, json!([1, 2])).quota(29, 3600),
    ])
    .await;
    let c = client(&server);
    let resp = c
        .send(ApiRequest::get("/api/v9/workspaces/5/projects"))
        .await
        .expect("succeeds after the reset");
    assert_eq!(resp.body, json!([1, 2]));
    assert_eq!(resp.quota.and_then(|q| q.remaining), Some(29));
    assert_eq!(resp.scope, QuotaScope::Workspace(5));
    let rec = server.recorded();
    assert_eq!(rec.len(), 2);
    assert!(
        rec[1].at.duration_since(rec[0].at) >= Duration::from_millis(950),
        "retried before the reset"
    );
    let snap = c.budget_snapshot();
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].scope, QuotaScope::Workspace(5));
    assert_eq!(snap[0].remaining, Some(29));
    assert_eq!(snap[0].spent_responses, 1);
}

#[tokio::test]
async fn quota_reset_beyond_max_wait_fails_fast_and_says_when() {
    let server = TestServer::script(vec![
        Reply::json(402, json!("quota exceeded")).quota(0, 3000),
    ])
    .await;
    let mut cfg = config(&server.url);
    cfg.max_quota_wait = Duration::from_secs(5);
    let c = Client::new(cfg).expect("client");
    let err = c
        .send(ApiRequest::get("/api/v9/me"))
        .await
        .expect_err("spent");
    let text = format!("{err:#}");
    assert!(
        matches!(err, ClientError::QuotaExhausted { scope: QuotaScope::User, resets_in, .. } if resets_in > Duration::from_secs(2900)),
        "{text}"
    );
    assert!(text.contains("resets in") && text.contains("UTC"), "{text}");
    assert!(err.is_retryable());
    // The budget remembers: the next call fails without touching the server.
    let again = c.send(ApiRequest::get("/api/v9/me/tags")).await;
    assert!(matches!(again, Err(ClientError::QuotaExhausted { .. })));
    assert_eq!(server.count(), 1);
    // Other scopes are not affected.
    c.send(ApiRequest::get("/api/v9/workspaces/1/tags"))
        .await
        .expect_err("scripted 402 again, but it was sent");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn payment_required_without_quota_headers_is_a_paid_feature_and_not_retried() {
    let server = TestServer::script(vec![Reply::json(
        402,
        json!("Request tried to utilized Premium functionality on workspace which is not Premium!"),
    )])
    .await;
    let err = client(&server)
        .send(ApiRequest::get(
            "/reports/api/v3/workspace/1/summary/time_entries",
        ))
        .await
        .expect_err("paid");
    assert!(
        matches!(&err, ClientError::PaidFeature { message } if message.contains("Premium functionality")),
        "{err:#}"
    );
    assert!(!err.is_retryable());
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let server = TestServer::script(vec![
        Reply::new(429).header("Retry-After", "1"),
        Reply::json(200, json!("ok")),
    ])
    .await;
    client(&server)
        .send(ApiRequest::post(
            "/api/v9/workspaces/1/tags",
            json!({"name": "x"}),
        ))
        .await
        .expect("a 429 was not processed, so even a POST is retried");
    let rec = server.recorded();
    assert_eq!(rec.len(), 2);
    assert!(rec[1].at.duration_since(rec[0].at) >= Duration::from_millis(950));
}

#[tokio::test]
async fn rate_limit_without_retry_after_backs_off_and_gives_up_bounded() {
    let html = "<html><head><title>429 Too Many Requests</title></head><body></body></html>";
    let server = TestServer::script(vec![
        Reply::new(429)
            .header("content-type", "text/html")
            .body(html),
        Reply::json(200, json!("ok")),
    ])
    .await;
    client(&server)
        .send(ApiRequest::get("/api/v9/me"))
        .await
        .expect("retried after backoff");
    assert_eq!(server.count(), 2);

    let always = TestServer::script(vec![Reply::new(429)]).await;
    let err = client(&always)
        .send(ApiRequest::get("/api/v9/me"))
        .await
        .expect_err("gives up");
    assert!(
        matches!(err, ClientError::RateLimited { retry_after: None }),
        "{err:#}"
    );
    assert_eq!(always.count(), 3, "max_attempts bounds the retries");

    let long = TestServer::script(vec![Reply::new(429).header("Retry-After", "3600")]).await;
    let err = client(&long)
        .send(ApiRequest::get("/api/v9/me"))
        .await
        .expect_err("too long to wait");
    assert!(
        matches!(err, ClientError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(3600))
    );
    assert_eq!(long.count(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_for_get() {
    let server = TestServer::script(vec![
        Reply::new(503),
        Reply::new(502)
            .header("content-type", "text/html")
            .body("<title>502 Bad Gateway</title>"),
        Reply::json(200, json!({"ok": true})),
    ])
    .await;
    let resp = client(&server)
        .send(ApiRequest::get("/api/v9/me"))
        .await
        .expect("third time lucky");
    assert_eq!(resp.body, json!({"ok": true}));
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn server_error_on_post_is_never_resent() {
    let server = TestServer::script(vec![
        Reply::json(500, json!("internal")),
        Reply::json(200, json!({"id": 1})),
    ])
    .await;
    let err = client(&server)
        .send(ApiRequest::post(
            "/api/v9/workspaces/1/time_entries",
            json!({"workspace_id": 1}),
        ))
        .await
        .expect_err("outcome unknown");
    assert!(
        matches!(&err, ClientError::OutcomeUnknown { method, path, reason } if method == "POST" && path == "/api/v9/workspaces/{id}/time_entries" && reason.contains("500")),
        "{err:#}"
    );
    assert!(!err.is_retryable());
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn timeouts_retry_idempotent_requests_only() {
    let slow_then_fast = vec![
        Reply::json(200, json!("late")).delay(Duration::from_secs(5)),
        Reply::json(200, json!("fast")),
    ];
    let server = TestServer::script(slow_then_fast.clone()).await;
    let mut cfg = config(&server.url);
    cfg.request_timeout = Duration::from_millis(300);
    let resp = Client::new(cfg.clone())
        .expect("client")
        .send(ApiRequest::new(Method::PUT, "/api/v9/me").with_body(json!({"fullname": "A"})))
        .await
        .expect("retried after the timeout");
    assert_eq!(resp.body, json!("fast"));
    assert_eq!(server.count(), 2);

    let server = TestServer::script(slow_then_fast).await;
    cfg.base_url.clone_from(&server.url);
    let err = Client::new(cfg)
        .expect("client")
        .send(ApiRequest::post(
            "/api/v9/workspaces/1/projects",
            json!({"name": "p"}),
        ))
        .await
        .expect_err("unknown outcome");
    assert!(
        matches!(&err, ClientError::OutcomeUnknown { reason, .. } if reason.contains("timed out")),
        "{err:#}"
    );
    assert_eq!(server.count(), 1, "a POST that timed out is not re-sent");
}

#[tokio::test]
async fn connection_refused_is_safe_to_retry_even_for_post() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let err = Client::new(config(&url))
        .expect("client")
        .send(ApiRequest::post(
            "/api/v9/workspaces/1/tags",
            json!({"name": "x"}),
        ))
        .await
        .expect_err("nobody listens");
    // Not OutcomeUnknown: nothing was sent, so retrying (and failing again) was safe.
    assert!(matches!(err, ClientError::Transport { .. }), "{err:#}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn error_bodies_of_every_shape_read_well() {
    let server = TestServer::start(|r, _| match r.path.as_str() {
        "/html" => Reply::new(400)
            .header("content-type", "text/html")
            .body("<html><head><title>400 Bad Request</title></head><body>nginx</body></html>"),
        "/empty" => Reply::new(404),
        "/string" => Reply::json(
            400,
            json!("'since' and 'before' can not be present simultaneously"),
        ),
        "/object" => Reply::json(
            409,
            json!({"message": "Time entry already stopped", "code": 1}),
        ),
        "/text" => Reply::new(400)
            .header("content-type", "text/plain")
            .body("Invalid start date"),
        "/auth" => Reply::new(401).header("X-Authorization-Missing", "true"),
        "/forbidden" => Reply::new(403),
        "/gone" => Reply::new(410).body("v8 is gone"),
        "/ok-garbage" => Reply::new(200).body("not json {"),
        _ => Reply::new(418).body("x".repeat(10_000)),
    })
    .await;
    let c = client(&server);
    let get = |p: &str| c.send(ApiRequest::get(p));
    let e = get("/html").await.expect_err("400");
    assert!(
        matches!(&e, ClientError::Api { status: 400, message } if message == "400 Bad Request"),
        "{e:#}"
    );
    let e = get("/empty").await.expect_err("404");
    assert!(
        matches!(&e, ClientError::NotFound { message } if message == "empty body"),
        "{e:#}"
    );
    let e = get("/string").await.expect_err("400");
    assert_eq!(
        e.to_string(),
        "toggl answered 400: 'since' and 'before' can not be present simultaneously"
    );
    let e = get("/object").await.expect_err("409");
    assert!(
        matches!(&e, ClientError::Conflict { message } if message == "Time entry already stopped"),
        "{e:#}"
    );
    let e = get("/text").await.expect_err("400");
    assert!(
        matches!(&e, ClientError::Api { message, .. } if message == "Invalid start date"),
        "{e:#}"
    );
    let e = get("/auth").await.expect_err("401");
    assert!(matches!(e, ClientError::Unauthorized { status: 401, .. }));
    assert!(e.to_string().contains("TOGGL_API_TOKEN"), "{e:#}");
    let e = get("/forbidden").await.expect_err("403");
    assert!(matches!(e, ClientError::Unauthorized { status: 403, .. }));
    let e = get("/gone").await.expect_err("410");
    assert!(matches!(e, ClientError::Gone { .. }));
    assert!(e.to_string().contains("shut down"), "{e:#}");
    let e = get("/ok-garbage").await.expect_err("decode");
    assert!(
        matches!(&e, ClientError::Decode { body, .. } if body == "not json {"),
        "{e:#}"
    );
    let e = get("/teapot").await.expect_err("418");
    assert!(
        e.to_string().len() < 400,
        "bounded: {}",
        e.to_string().len()
    );
    // No retries for any of these.
    assert_eq!(server.count(), 10);
}

#[tokio::test]
async fn the_token_never_appears_in_errors_or_debug_output() {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{TEST_TOKEN}:api_token"));
    let leak = format!("token {TEST_TOKEN} auth Basic {encoded}");
    let leak2 = leak.clone();
    let server = TestServer::start(move |r, _| {
        let body = json!({"message": leak2, "api_token": TEST_TOKEN});
        match r.path.as_str() {
            "/402" => Reply::json(402, json!(leak2)),
            "/401" => Reply::json(401, body),
            "/403" => Reply::new(403)
                .header("content-type", "text/html")
                .body(format!("<title>{leak2}</title>")),
            "/404" => Reply::new(404).body(leak2.clone()),
            "/409" => Reply::json(409, json!(leak2)),
            "/410" => Reply::json(410, body),
            "/400" => Reply::json(400, json!({"api_token": TEST_TOKEN})),
            "/500" => Reply::json(500, json!(leak2)),
            "/quota" => Reply::json(402, json!(leak2)).quota(0, 3600),
            "/429" => Reply::new(429)
                .header("Retry-After", "9999")
                .body(leak2.clone()),
            "/me" => {
                Reply::new(200).body(format!(r#"{{"api_token":"{TEST_TOKEN}", "x": {leak2:?} "#))
            }
            _ => Reply::json(200, json!({})),
        }
    })
    .await;
    let mut cfg = config(&server.url);
    cfg.max_quota_wait = Duration::from_secs(1);
    cfg.retry.max_attempts = 1;
    let c = Client::new(cfg.clone()).expect("client");
    let mut errors = Vec::new();
    for p in [
        "/402", "/401", "/403", "/404", "/409", "/410", "/400", "/500", "/429", "/me",
    ] {
        errors.push(c.send(ApiRequest::get(p)).await.expect_err(p));
    }
    errors.push(
        c.send(ApiRequest::post("/500", json!({"token": TEST_TOKEN})))
            .await
            .expect_err("outcome unknown"),
    );
    // Last: it spends the user scope, after which user-scope calls fail without being sent.
    errors.push(c.send(ApiRequest::get("/quota")).await.expect_err("quota"));
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        drop(l);
        Client::new(config(&url).clone())
            .expect("client")
            .send(ApiRequest::get("/api/v9/me"))
            .await
            .expect_err("refused")
    };
    errors.push(refused);
    errors.push(Client::new(config("not a url")).expect_err("bad url"));
    let mut empty = config(&server.url);
    empty.credentials = toggl_connect_client::Credentials::Token("".into());
    errors.push(Client::new(empty).expect_err("empty token"));

    let kinds: std::collections::BTreeSet<String> = errors
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for kind in [
        "PaidFeature",
        "Unauthorized",
        "NotFound",
        "Conflict",
        "Gone",
        "Api",
        "QuotaExhausted",
        "RateLimited",
        "Decode",
        "OutcomeUnknown",
        "Transport",
        "Config",
    ] {
        assert!(
            kinds.contains(kind),
            "variant {kind} not exercised: {kinds:?}"
        );
    }
    let mut texts: Vec<String> = errors
        .iter()
        .flat_map(|e| {
            [
                format!("{e}"),
                format!("{e:?}"),
                format!("{e:#}"),
                format!("{e:#?}"),
            ]
        })
        .collect();
    texts.push(format!("{cfg:?}"));
    texts.push(format!("{cfg:#?}"));
    texts.push(format!("{c:?}"));
    for text in &texts {
        assert!(!text.contains(TEST_TOKEN), "token leaked: {text}");
        assert!(
            !text.contains(&encoded),
            "encoded credentials leaked: {text}"
        );
    }
    // The redaction keeps the rest readable.
    assert!(
        texts
            .iter()
            .any(|t| t.contains("token [redacted] auth Basic [redacted]"))
    );
}

#[tokio::test]
async fn workspace_requests_share_their_organizations_budget() {
    let server = TestServer::start(|r, _| match r.path.as_str() {
        "/api/v9/me/workspaces" => Reply::json(
            200,
            json!([{"id": 11, "organization_id": 900}, {"id": 12, "organization_id": 900}]),
        )
        .quota(28, 3000),
        _ => Reply::json(402, json!("quota")).quota(0, 3000),
    })
    .await;
    let mut cfg = config(&server.url);
    cfg.resolve_workspace_orgs = true;
    cfg.max_quota_wait = Duration::from_secs(1);
    let c = Client::new(cfg).expect("client");
    let err = c
        .send(ApiRequest::get("/api/v9/workspaces/11/projects"))
        .await
        .expect_err("spent");
    assert!(
        matches!(
            err,
            ClientError::QuotaExhausted {
                scope: QuotaScope::Organization(900),
                ..
            }
        ),
        "{err:#}"
    );
    // Workspace 12 is in the same organization: no request is sent at all.
    let err = c
        .send(ApiRequest::get("/webhooks/api/v1/subscriptions/12"))
        .await
        .expect_err("spent");
    assert!(matches!(err, ClientError::QuotaExhausted { .. }));
    let paths: Vec<String> = server.recorded().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/api/v9/me/workspaces", "/api/v9/workspaces/11/projects"]
    );
    let snap = c.budget_snapshot();
    assert_eq!(
        snap.iter().map(|s| s.scope).collect::<Vec<_>>(),
        [QuotaScope::User, QuotaScope::Organization(900)]
    );
}

#[tokio::test]
async fn invalid_paths_are_rejected_before_sending() {
    let server = TestServer::script(vec![Reply::json(200, json!({}))]).await;
    let c = client(&server);
    for p in ["api/v9/me", "//evil.example/x", "/api/v9/me?x=1", "/a b"] {
        let e = c.send(ApiRequest::get(p)).await.expect_err(p);
        assert!(
            matches!(e, ClientError::InvalidRequest { .. }),
            "{p}: {e:#}"
        );
    }
    assert_eq!(server.count(), 0);
}

/// A server that reads the request and hangs up without answering: the request went out, the
/// outcome is unknown.
async fn hang_up_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let c = std::sync::Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read until the end of the headers and the JSON body, then drop the connection.
            while let Ok(n) = socket.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            c.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, count)
}

#[tokio::test]
async fn connection_dropped_after_sending_is_outcome_unknown_for_post_and_retried_for_get() {
    use std::sync::atomic::Ordering;
    let (url, count) = hang_up_server().await;
    let c = Client::new(config(&url)).expect("client");
    let err = c
        .send(ApiRequest::post(
            "/api/v9/workspaces/1/time_entries",
            json!({"workspace_id": 1, "created_with": "test"}),
        ))
        .await
        .expect_err("no answer");
    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:#}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "the POST is not re-sent");

    let err = c
        .send(ApiRequest::get("/api/v9/workspaces/1/projects"))
        .await
        .expect_err("no answer");
    assert!(matches!(err, ClientError::Transport { .. }), "{err:#}");
    assert_eq!(
        count.load(Ordering::SeqCst),
        4,
        "the GET is tried max_attempts times"
    );
}
