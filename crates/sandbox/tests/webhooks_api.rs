//! The Webhooks API v1 router alone, over real HTTP on 127.0.0.1:0, with a fake access layer
//! and a recording receiver that checks signatures independently (with the `hmac` crate).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;
use toggl_connect_sandbox::webhooks::{Action, Change, Hub, HubConfig, WebhookAccess, router};

const WS: i64 = 500;
/// A workspace on the Free plan: 1 webhook x 3 filters.
const WS_FREE: i64 = 600;
const ADMIN: i64 = 10;
const MEMBER: i64 = 20;
const OUTSIDER: i64 = 30;

/// Tokens `admin`, `member`, `outsider`; the member is not an admin; the outsider has no access.
struct FakeAccess;

impl WebhookAccess for FakeAccess {
    fn authenticate(&self, headers: &HeaderMap) -> Result<i64, Response> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(StatusCode::UNAUTHORIZED.into_response());
        };
        let decoded = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        match decoded.as_str() {
            "admin:api_token" => Ok(ADMIN),
            "member:api_token" => Ok(MEMBER),
            "outsider:api_token" => Ok(OUTSIDER),
            _ => Err(StatusCode::FORBIDDEN.into_response()),
        }
    }

    fn workspace_access(&self, user_id: i64, workspace_id: i64) -> Option<bool> {
        match (user_id, workspace_id) {
            (ADMIN, WS | WS_FREE) => Some(true),
            (MEMBER, WS | WS_FREE) => Some(false),
            _ => None,
        }
    }

    fn webhook_limits(&self, workspace_id: i64) -> (u32, u32) {
        if workspace_id == WS_FREE {
            (1, 3)
        } else {
            (3, 12)
        }
    }
}

/// The hub and its router served on 127.0.0.1:0.
struct Server {
    hub: Arc<Hub>,
    base: String,
    http: reqwest::Client,
}

fn fast_config() -> HubConfig {
    HubConfig {
        retry_backoff_ms: vec![50, 100, 150],
        request_timeout_ms: 2_000,
        rng_seed: 7,
        ..HubConfig::default()
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}

impl Server {
    async fn start(config: HubConfig) -> Server {
        let hub = Hub::new(config);
        Server::with_hub(hub).await
    }

    async fn with_hub(hub: Arc<Hub>) -> Server {
        let base = serve(router(Arc::clone(&hub), Arc::new(FakeAccess))).await;
        hub.set_base_url(&base);
        Server {
            hub,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}/webhooks/api/v1{path}", self.base));
        if let Some(token) = token {
            req = req.basic_auth(token, Some("api_token"));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, token: &str, wid: i64, body: Value) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/subscriptions/{wid}"),
            Some(token),
            Some(body),
        )
        .await
    }

    async fn events(&self, wid: i64, sid: i64) -> Vec<Value> {
        let (status, body) = self
            .call(
                "GET",
                &format!("/subscriptions/{wid}/{sid}/events"),
                Some("admin"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().expect("array").clone()
    }

    async fn subscription(&self, wid: i64, sid: i64) -> Value {
        let (status, body) = self
            .call("GET", &format!("/subscriptions/{wid}"), Some("admin"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        body.as_array()
            .expect("array")
            .iter()
            .find(|s| s["subscription_id"] == sid)
            .cloned()
            .expect("subscription listed")
    }
}

#[derive(Clone, Debug)]
struct Delivery {
    headers: HeaderMap,
    body: Bytes,
    json: Value,
}

#[derive(Default)]
struct ReceiverState {
    deliveries: Mutex<Vec<Delivery>>,
    /// Answer 500 to this many requests before succeeding.
    fail_next: AtomicUsize,
    always_fail: AtomicBool,
    /// Echo the validation code (synchronous validation).
    echo: AtomicBool,
}

/// A tiny callback endpoint that records every request.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.deliveries.lock().push(Delivery {
        headers,
        body,
        json: json.clone(),
    });
    if state.always_fail.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match json.get("validation_code") {
        Some(code) if state.echo.load(Ordering::SeqCst) => {
            axum::Json(json!({"validation_code": code})).into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

impl Receiver {
    async fn start(echo: bool) -> Receiver {
        let state = Arc::new(ReceiverState::default());
        state.echo.store(echo, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        Receiver {
            url: format!("{}/hook", serve(app).await),
            state,
        }
    }

    fn all(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().clone()
    }

    /// Real events only (pings have `"payload": "ping"`).
    fn events(&self) -> Vec<Delivery> {
        self.all()
            .into_iter()
            .filter(|d| d.json["payload"] != "ping")
            .collect()
    }
}

/// Verifies `X-Webhook-Signature-256` independently of the crate under test.
fn signature_ok(secret: &str, delivery: &Delivery) -> bool {
    let Some(header) = delivery
        .headers
        .get("x-webhook-signature-256")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(&delivery.body);
    header == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sub_body(description: &str, url: &str, filters: Value) -> Value {
    json!({"description": description, "url_callback": url, "event_filters": filters, "enabled": true})
}

fn change(entity: &'static str, action: Action, id: i64, owner: i64) -> Change {
    Change {
        workspace_id: WS,
        entity,
        action,
        entity_id: id,
        creator_id: owner,
        model_owner_id: owner,
        payload: json!({"id": id, "workspace_id": WS, "user_id": owner, "server_deleted_at": null}),
        path: format!("/api/v9/workspaces/{WS}/{entity}s"),
        request_type: "POST".to_owned(),
        request_body: format!("{{\"workspace_id\":{WS}}}"),
        project: None,
    }
}

fn id_of(sub: &Value) -> i64 {
    sub["subscription_id"]
        .as_i64()
        .expect("subscription_id is an integer")
}

/// Creates a synchronously validated subscription; returns (id, secret).
async fn validated(
    server: &Server,
    receiver: &Receiver,
    description: &str,
    filters: Value,
) -> (i64, String) {
    let (status, sub) = server
        .create("admin", WS, sub_body(description, &receiver.url, filters))
        .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    assert!(
        sub["validated_at"].is_string(),
        "validated synchronously: {sub}"
    );
    (
        id_of(&sub),
        sub["secret"].as_str().expect("secret").to_owned(),
    )
}

#[tokio::test]
async fn create_validates_synchronously_when_the_endpoint_echoes_the_code() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(true).await;
    let (status, sub) = server
        .create(
            "admin",
            WS,
            sub_body(
                "crm-sync",
                &receiver.url,
                json!([{"entity": "time_entry", "action": "*"}]),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    let keys: Vec<&str> = sub
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "subscription_id",
            "workspace_id",
            "user_id",
            "enabled",
            "description",
            "event_filters",
            "url_callback",
            "secret",
            "validated_at",
            "has_pending_events",
            "created_at",
            "updated_at",
            "deleted_at"
        ]
    );
    assert!(id_of(&sub) > i64::from(i32::MAX), "ids are int64");
    assert_eq!(sub["workspace_id"], WS);
    assert_eq!(sub["user_id"], ADMIN);
    assert_eq!(
        sub["event_filters"],
        json!([{"entity": "time_entry", "action": "*"}])
    );
    assert_eq!(sub["has_pending_events"], false);
    assert!(sub["updated_at"].is_null() && sub["deleted_at"].is_null());
    let secret = sub["secret"].as_str().expect("a secret is generated");
    assert!(
        secret.len() >= 16 && secret.chars().all(|c| c.is_ascii_alphanumeric()),
        "{secret}"
    );

    let pings = receiver.all();
    assert_eq!(pings.len(), 1, "exactly one ping on create");
    let ping = &pings[0];
    assert!(
        signature_ok(secret, ping),
        "ping is signed with the subscription secret"
    );
    assert_eq!(ping.json["payload"], "ping");
    assert_eq!(ping.json["event_id"], 0);
    assert_eq!(ping.json["subscription_id"], sub["subscription_id"]);
    assert_eq!(ping.json["url_callback"], receiver.url.as_str());
    assert_eq!(
        ping.json["metadata"],
        json!({"request_type": "POST", "event_user_id": ADMIN})
    );
    let code = ping.json["validation_code"]
        .as_str()
        .expect("validation code");
    assert_eq!(
        ping.json["validation_code_url"],
        format!(
            "{}/webhooks/api/v1/validate/{WS}/{}/{code}",
            server.base,
            id_of(&sub)
        )
        .as_str()
    );
    assert_eq!(ping.headers["content-type"], "application/json");
    assert!(ping.headers.contains_key("user-agent"));

    let (status, again) = server
        .call(
            "GET",
            &format!("/validate/{WS}/{}/{code}", id_of(&sub)),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again,
        json!(format!(
            "subscription {} has already been validated",
            id_of(&sub)
        ))
    );
}

#[tokio::test]
async fn async_validation_through_validation_code_url() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(false).await;
    let (status, sub) = server
        .create(
            "admin",
            WS,
            sub_body(
                "async",
                &receiver.url,
                json!([{"entity": "*", "action": "*"}]),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    assert!(sub["validated_at"].is_null());
    let sid = id_of(&sub);

    // Not validated: changes produce no events.
    server.hub.publish(change("tag", Action::Created, 1, ADMIN));

    let ping = receiver.all().pop().expect("ping");
    let code = ping.json["validation_code"]
        .as_str()
        .expect("code")
        .to_owned();
    let (status, body) = server
        .call("GET", &format!("/validate/{WS}/{sid}/wrong"), None, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!(format!(
            "subscription {sid} for workspace {WS} and validation code 'wrong' was not found"
        ))
    );

    let url = ping.json["validation_code_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let resp = reqwest::get(&url).await.expect("validate");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), "\"OK\"");
    assert!(server.subscription(WS, sid).await["validated_at"].is_string());
    let (status, _) = server
        .call("GET", &format!("/validate/{WS}/{sid}/{code}"), None, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "already validated");

    server.hub.publish(change("tag", Action::Created, 2, ADMIN));
    let events = eventually("the event after validation", async || {
        let events = receiver.events();
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(
        events[0].json["payload"]["id"], 2,
        "the change before validation made no event"
    );
    assert_eq!(server.events(WS, sid).await.len(), 1);
}

#[tokio::test]
async fn create_is_refused_when_the_endpoint_does_not_answer_2xx() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(true).await;
    receiver.state.always_fail.store(true, Ordering::SeqCst);
    let (status, body) = server
        .create(
            "admin",
            WS,
            sub_body(
                "down",
                &receiver.url,
                json!([{"entity": "*", "action": "*"}]),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!(format!(
            "URL endpoint {} responded with status 500 instead of 200",
            receiver.url
        ))
    );

    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_url = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let (status, body) = server
        .create(
            "admin",
            WS,
            sub_body("dead", &dead_url, json!([{"entity": "*", "action": "*"}])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = body.as_str().expect("JSON string body");
    assert!(
        text.starts_with(&format!(
            "URL endpoint {dead_url} request failed with error"
        )),
        "{text}"
    );

    let (_, list) = server
        .call("GET", &format!("/subscriptions/{WS}"), Some("admin"), None)
        .await;
    assert_eq!(list, json!([]), "refused subscriptions are not kept");
}

#[tokio::test]
async fn validation_errors_use_toggls_messages() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(true).await;
    let url = receiver.url.as_str();
    let all = json!([{"entity": "*", "action": "*"}]);
    let cases = [
        (WS, sub_body("", url, all.clone()), "Subscription description must not be empty".to_owned()),
        (WS, sub_body("x", url, json!([])), "The list of event filters must not be empty".to_owned()),
        (
            WS_FREE,
            sub_body("x", url, json!([
                {"entity": "tag", "action": "*"}, {"entity": "task", "action": "*"},
                {"entity": "client", "action": "*"}, {"entity": "project", "action": "*"}])),
            "The limit of 3 event filters for your subscription has been exceeded as you're trying to set 4 filters".to_owned(),
        ),
        (
            WS,
            sub_body("x", url, json!([{"entity": "time-entry", "action": "*"}])),
            "The value 'time-entry' for the filter entity can only contain letters, numbers and '_' or be '*' to match all entities".to_owned(),
        ),
        (
            WS,
            sub_body("x", url, json!([{"entity": "tag", "action": "a b"}])),
            "The value 'a b' for the filter action can only contain letters, numbers and '_' or be '*' to match all actions".to_owned(),
        ),
        (WS, sub_body("x", url, json!([{"entity": "", "action": "*"}])), "The entity field for each subscription event filter must be non-empty".to_owned()),
        (WS, sub_body("x", url, json!([{"entity": "tag"}])), "The action field for each subscription event filter must be non-empty".to_owned()),
        (WS, sub_body("x", url, json!([{"entity": "tag", "action": "started"}])), "Invalid value 'started' for event filter action".to_owned()),
    ];
    for (wid, body, expected) in cases {
        let (status, got) = server.create("admin", wid, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(got, json!(expected), "{body}");
    }
    let (status, got) = server
        .create(
            "admin",
            WS,
            sub_body(
                "x",
                url,
                json!([{"entity": "tag", "action": "*"}, {"entity": "tag", "action": "*"}]),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        got.as_str()
            .expect("string")
            .starts_with("The following event filter appears more than once")
    );

    validated(&server, &receiver, "taken", all.clone()).await;
    let (status, got) = server
        .create("member", WS, sub_body("taken", url, all.clone()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        got,
        json!(format!(
            "Subscription description 'taken' is already in use for workspace {WS}"
        ))
    );

    // Free plan: one enabled subscription per user; a disabled one is still allowed.
    let (status, _) = server
        .create("admin", WS_FREE, sub_body("one", url, all.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, got) = server
        .create("admin", WS_FREE, sub_body("two", url, all.clone()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        got,
        json!(format!(
            "User {ADMIN} already reached the limit of 1 enabled subscriptions for workspace {WS_FREE}"
        ))
    );
    let mut disabled = sub_body("two", url, all.clone());
    disabled["enabled"] = json!(false);
    let (status, two) = server.create("admin", WS_FREE, disabled).await;
    assert_eq!(status, StatusCode::OK, "{two}");
    let (status, got) = server
        .call(
            "PATCH",
            &format!("/subscriptions/{WS_FREE}/{}", id_of(&two)),
            Some("admin"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        got.as_str()
            .expect("string")
            .contains("already reached the limit of 1")
    );

    let (status, body) = server
        .call(
            "POST",
            &format!("/subscriptions/{WS}"),
            Some("admin"),
            Some(json!({"description": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.is_string());
}

#[tokio::test]
async fn limits_filters_status_and_access() {
    let server = Server::start(fast_config()).await;
    let (status, body) = server.call("GET", "/status", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "OK"})));
    let (status, body) = server
        .call("GET", &format!("/limits/{WS_FREE}"), Some("member"), None)
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"max_webhooks": 1, "max_events_per_webhook": 3})
        )
    );
    let (status, body) = server
        .call("GET", "/event_filters", Some("member"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let entities: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(
        entities,
        [
            "client",
            "project",
            "project_group",
            "project_user",
            "tag",
            "task",
            "time_entry",
            "workspace",
            "workspace_user"
        ]
    );
    assert_eq!(body["time_entry"], json!(["created", "updated", "deleted"]));

    let (status, _) = server
        .call("GET", &format!("/subscriptions/{WS}"), None, None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the access layer's response is passed through"
    );
    let (status, _) = server
        .call("GET", &format!("/subscriptions/{WS}"), Some("nobody"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = server
        .call(
            "GET",
            &format!("/subscriptions/{WS}"),
            Some("outsider"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, json!("User not found/accessible for workspace"));
    let (status, body) = server
        .call(
            "DELETE",
            &format!("/subscriptions/{WS}/42"),
            Some("admin"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!(format!("subscription 42 for workspace {WS} was not found"))
    );
}

#[tokio::test]
async fn events_follow_filters_wildcards_and_the_envelope() {
    let server = Server::start(fast_config()).await;
    let (te, deleted, projects) = (
        Receiver::start(true).await,
        Receiver::start(true).await,
        Receiver::start(true).await,
    );
    let (_, te_secret) = validated(
        &server,
        &te,
        "te",
        json!([{"entity": "time_entry", "action": "*"}]),
    )
    .await;
    validated(
        &server,
        &deleted,
        "deleted",
        json!([{"entity": "*", "action": "deleted"}]),
    )
    .await;
    validated(
        &server,
        &projects,
        "projects",
        json!([{"entity": "project", "action": "created"}]),
    )
    .await;

    let mut te_created = change("time_entry", Action::Created, 4_100_000_001, ADMIN);
    te_created.project = Some((700_001, true));
    server.hub.publish(te_created);
    server
        .hub
        .publish(change("project", Action::Updated, 700_001, ADMIN));
    server.hub.publish(change("tag", Action::Deleted, 3, ADMIN));
    server
        .hub
        .publish(change("time_entry", Action::Deleted, 4_100_000_002, ADMIN));
    server
        .hub
        .publish(change("project", Action::Created, 700_002, ADMIN));

    let ids = |r: &Receiver| -> Vec<i64> {
        r.events()
            .iter()
            .map(|d| d.json["payload"]["id"].as_i64().expect("id"))
            .collect()
    };
    eventually("all deliveries", async || {
        (ids(&te).len() == 2 && ids(&deleted).len() == 2 && !ids(&projects).is_empty())
            .then_some(())
    })
    .await;
    assert_eq!(ids(&te), [4_100_000_001, 4_100_000_002]);
    assert_eq!(ids(&deleted), [3, 4_100_000_002]);
    assert_eq!(
        ids(&projects),
        [700_002],
        "project updated does not match project/created"
    );

    let first = &te.events()[0];
    assert!(signature_ok(&te_secret, first));
    assert_eq!(first.headers["content-type"], "application/json");
    assert!(first.headers.contains_key("user-agent"));
    let raw = std::str::from_utf8(&first.body).expect("utf-8");
    assert!(
        !raw.contains('\n') && !raw.contains("\": "),
        "unformatted JSON: {raw}"
    );
    let keys: Vec<&String> = first.json.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "event_id",
            "created_at",
            "creator_id",
            "metadata",
            "payload",
            "subscription_id",
            "timestamp",
            "url_callback"
        ]
    );
    assert!(first.json["event_id"].as_i64().expect("int64 event id") > 1 << 40);
    assert_eq!(first.json["creator_id"], ADMIN);
    assert_eq!(first.json["url_callback"], te.url.as_str());
    assert_eq!(
        first.json["metadata"],
        json!({
            "action": "created", "event_user_id": ADMIN.to_string(), "model": "time_entry",
            "model_owner_id": ADMIN.to_string(), "path": format!("/api/v9/workspaces/{WS}/time_entrys"),
            "project_id": "700001", "project_is_private": "true",
            "request_body": format!("{{\"workspace_id\":{WS}}}"), "request_type": "POST",
            "time_entry_id": "4100000001", "workspace_id": WS.to_string()
        })
    );
    let event_ids: std::collections::HashSet<i64> = [&te, &deleted, &projects]
        .iter()
        .flat_map(|r| r.events())
        .map(|d| d.json["event_id"].as_i64().expect("id"))
        .collect();
    assert_eq!(
        event_ids.len(),
        5,
        "one unique event id per (change, subscription)"
    );
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff_and_logged() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(true).await;
    let (sid, secret) = validated(
        &server,
        &receiver,
        "retry",
        json!([{"entity": "*", "action": "*"}]),
    )
    .await;
    receiver.state.fail_next.store(2, Ordering::SeqCst);
    server
        .hub
        .publish(change("client", Action::Created, 77, ADMIN));

    let log = eventually("delivery after two failures", async || {
        let log = server.events(WS, sid).await;
        (log.len() == 1 && log[0]["status"] == "delivered").then_some(log)
    })
    .await;
    let event = &log[0];
    let attempts = event["delivery_attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3);
    assert_eq!(event["failed_delivery_attempts"], 2);
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[2]["status_code"], 200);
    assert!(attempts[2]["error"].is_null());
    let last_error = event["last_delivery_error"]
        .as_str()
        .expect("last error kept");
    assert!(
        last_error.contains("responded with status 500"),
        "{last_error}"
    );
    assert_eq!(event["metadata"]["client_id"], "77");
    assert!(event["delivered_at"].is_string());

    let deliveries = receiver.events();
    assert_eq!(deliveries.len(), 3);
    assert!(deliveries.iter().all(|d| signature_ok(&secret, d)));
    assert!(
        deliveries
            .iter()
            .all(|d| d.json["event_id"] == event["event_id"])
    );
    let stamps: std::collections::HashSet<&str> = deliveries
        .iter()
        .map(|d| d.json["timestamp"].as_str().expect("timestamp"))
        .collect();
    assert_eq!(stamps.len(), 3, "timestamp is the time of each attempt");
    assert!(
        deliveries
            .iter()
            .all(|d| d.json["created_at"] == deliveries[0].json["created_at"])
    );
    assert_eq!(
        server.subscription(WS, sid).await["has_pending_events"],
        false
    );
}

#[tokio::test]
async fn exhausted_events_stay_pending_and_are_retried_after_a_ping() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(true).await;
    let (sid, _) = validated(
        &server,
        &receiver,
        "exhaust",
        json!([{"entity": "tag", "action": "*"}]),
    )
    .await;
    receiver.state.always_fail.store(true, Ordering::SeqCst);
    server.hub.publish(change("tag", Action::Created, 1, ADMIN));
    server.hub.publish(change("tag", Action::Updated, 1, ADMIN));

    eventually("both events failed", async || {
        let log = server.events(WS, sid).await;
        (log.len() == 2 && log.iter().all(|e| e["status"] == "failed")).then_some(())
    })
    .await;
    let log = server.events(WS, sid).await;
    assert_eq!(
        log[0]["delivery_attempts"]
            .as_array()
            .expect("attempts")
            .len(),
        4,
        "1 + 3 retries"
    );
    assert_eq!(log[0]["failed_delivery_attempts"], 4);
    assert_eq!(
        server.subscription(WS, sid).await["has_pending_events"],
        true
    );

    let (status, body) = server
        .call("POST", &format!("/ping/{WS}/{sid}"), Some("admin"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a failing ping reports the endpoint's answer"
    );
    assert!(
        body.as_str()
            .expect("string")
            .contains("responded with status 500")
    );

    receiver.state.always_fail.store(false, Ordering::SeqCst);
    let (status, body) = server
        .call("POST", &format!("/ping/{WS}/{sid}"), Some("admin"), None)
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "OK"})));
    let ping = receiver
        .all()
        .into_iter()
        .rev()
        .find(|d| d.json["payload"] == "ping")
        .expect("ping");
    assert!(
        ping.json.get("validation_code").is_none(),
        "validated subscriptions get no code"
    );

    eventually("requeued events delivered", async || {
        let log = server.events(WS, sid).await;
        log.iter().all(|e| e["status"] == "delivered").then_some(())
    })
    .await;
    let delivered: Vec<String> = receiver
        .all()
        .iter()
        .rev()
        .take(2)
        .map(|d| {
            d.json["metadata"]["action"]
                .as_str()
                .expect("action")
                .to_owned()
        })
        .collect();
    assert_eq!(
        delivered,
        ["updated", "created"],
        "requeued in creation order"
    );
    assert_eq!(
        server.subscription(WS, sid).await["has_pending_events"],
        false
    );
}

#[tokio::test]
async fn per_subscription_order_is_preserved() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(true).await;
    validated(
        &server,
        &receiver,
        "order",
        json!([{"entity": "task", "action": "*"}]),
    )
    .await;
    receiver.state.fail_next.store(3, Ordering::SeqCst);
    for id in 1..=30 {
        server
            .hub
            .publish(change("task", Action::Updated, id, ADMIN));
    }
    let ids = eventually("30 distinct deliveries", async || {
        let mut ids: Vec<i64> = receiver
            .events()
            .iter()
            .map(|d| d.json["payload"]["id"].as_i64().expect("id"))
            .collect();
        ids.dedup();
        (ids.len() == 30).then_some(ids)
    })
    .await;
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_non_admin_owner_gets_only_their_own_time_entries() {
    let server = Server::start(fast_config()).await;
    let (mine, all) = (Receiver::start(true).await, Receiver::start(true).await);
    let (status, sub) = server
        .create(
            "member",
            WS,
            sub_body("member", &mine.url, json!([{"entity": "*", "action": "*"}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    validated(
        &server,
        &all,
        "admin",
        json!([{"entity": "*", "action": "*"}]),
    )
    .await;

    server
        .hub
        .publish(change("time_entry", Action::Created, 1, ADMIN));
    server
        .hub
        .publish(change("time_entry", Action::Created, 2, MEMBER));
    server
        .hub
        .publish(change("project", Action::Created, 3, ADMIN));
    eventually("admin sees all three", async || {
        (all.events().len() == 3).then_some(())
    })
    .await;
    eventually("member sees two", async || {
        (mine.events().len() == 2).then_some(())
    })
    .await;
    let ids: Vec<i64> = mine
        .events()
        .iter()
        .map(|d| d.json["payload"]["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [2, 3]);

    // A non-admin sees only their own subscription; the admin sees both.
    let (_, list) = server
        .call("GET", &format!("/subscriptions/{WS}"), Some("member"), None)
        .await;
    assert_eq!(list.as_array().expect("array").len(), 1);
    let (_, list) = server
        .call("GET", &format!("/subscriptions/{WS}"), Some("admin"), None)
        .await;
    assert_eq!(list.as_array().expect("array").len(), 2);
}

#[tokio::test]
async fn disabled_subscriptions_get_no_events_and_update_delete_work() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(true).await;
    let (sid, _) = validated(
        &server,
        &receiver,
        "lifecycle",
        json!([{"entity": "*", "action": "*"}]),
    )
    .await;
    let path = format!("/subscriptions/{WS}/{sid}");

    let (status, sub) = server
        .call(
            "PATCH",
            &path,
            Some("admin"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sub["enabled"], false);
    assert!(sub["updated_at"].is_string());
    server.hub.publish(change("tag", Action::Created, 1, ADMIN));
    let pings_before = receiver.all().len();
    let (status, sub) = server
        .call(
            "PATCH",
            &path,
            Some("admin"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(
        (status, sub["enabled"].clone()),
        (StatusCode::OK, json!(true))
    );
    assert_eq!(
        receiver.all().len(),
        pings_before + 1,
        "enabling pings the endpoint"
    );
    server.hub.publish(change("tag", Action::Created, 2, ADMIN));
    eventually("event after re-enable", async || {
        (!receiver.events().is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        receiver.events()[0].json["payload"]["id"],
        2,
        "no event was made while disabled"
    );

    let other = Receiver::start(false).await;
    let (status, sub) = server
        .call(
            "PUT",
            &path,
            Some("admin"),
            Some(json!({
            "description": "renamed", "url_callback": other.url, "enabled": true,
            "event_filters": [{"entity": "tag", "action": "deleted"}], "secret": "new-secret"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    assert_eq!(sub["description"], "renamed");
    assert_eq!(sub["secret"], "new-secret");
    assert!(
        sub["validated_at"].is_null(),
        "a new URL must validate again"
    );
    let ping = other.all().pop().expect("PUT pings the new URL");
    assert!(signature_ok("new-secret", &ping));
    let (status, body) = server
        .call(
            "PUT",
            &path,
            Some("admin"),
            Some(json!({
            "description": "renamed", "url_callback": other.url, "enabled": true,
            "event_filters": [{"entity": "tag", "action": "*"}], "secret": ""})),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!("Subscription secret must not be empty")
        )
    );

    let (status, body) = server.call("DELETE", &path, Some("member"), None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a non-admin cannot touch others' subscriptions: {body}"
    );
    let (status, deleted) = server.call("DELETE", &path, Some("admin"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(deleted["deleted_at"].is_string());
    assert_eq!(deleted["subscription_id"], sid);
    let (_, list) = server
        .call("GET", &format!("/subscriptions/{WS}"), Some("admin"), None)
        .await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn state_survives_export_and_import() {
    let server = Server::start(fast_config()).await;
    let receiver = Receiver::start(true).await;
    let (sid, secret) = validated(
        &server,
        &receiver,
        "persist",
        json!([{"entity": "*", "action": "*"}]),
    )
    .await;
    receiver.state.always_fail.store(true, Ordering::SeqCst);
    server.hub.publish(change("tag", Action::Created, 9, ADMIN));
    eventually("a failed attempt", async || {
        let log = server.events(WS, sid).await;
        (log.len() == 1 && log[0]["failed_delivery_attempts"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    server.hub.shutdown().await;
    let snapshot = server.hub.export_state();

    receiver.state.always_fail.store(false, Ordering::SeqCst);
    // Built and loaded outside any runtime, as a state file may be read before serving.
    let hub = std::thread::spawn(move || {
        let hub = Hub::new(fast_config());
        hub.import_state(snapshot).expect("import");
        hub
    })
    .join()
    .expect("loader thread");
    let restored = Server::with_hub(hub).await;
    let sub = restored.subscription(WS, sid).await;
    assert_eq!(sub["secret"], secret.as_str());
    assert!(sub["validated_at"].is_string());
    eventually("the pending event is delivered after restart", async || {
        let log = restored.events(WS, sid).await;
        (log.len() == 1 && log[0]["status"] != "pending").then_some(())
    })
    .await;
    let log = restored.events(WS, sid).await;
    assert_eq!(log[0]["status"], "delivered");
    // New ids continue after the imported ones.
    let (status, second) = restored
        .create(
            "admin",
            WS,
            sub_body(
                "second",
                &receiver.url,
                json!([{"entity": "*", "action": "*"}]),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(id_of(&second) > sid);
    assert!(restored.hub.import_state(json!({"version": 99})).is_err());
}

#[tokio::test]
async fn dropped_deliveries_are_counted_as_failures_and_retried() {
    let config = HubConfig {
        drop_share: 0.5,
        retry_backoff_ms: vec![10; 30],
        rng_seed: 42,
        ..fast_config()
    };
    let server = Server::start(config).await;
    let receiver = Receiver::start(true).await;
    let (sid, _) = validated(
        &server,
        &receiver,
        "faults",
        json!([{"entity": "*", "action": "*"}]),
    )
    .await;
    for id in 1..=10 {
        server
            .hub
            .publish(change("tag", Action::Updated, id, ADMIN));
    }
    let log = eventually("all delivered despite drops", async || {
        let log = server.events(WS, sid).await;
        (log.len() == 10 && log.iter().all(|e| e["status"] == "delivered")).then_some(log)
    })
    .await;
    let dropped: u64 = log
        .iter()
        .map(|e| e["failed_delivery_attempts"].as_u64().expect("count"))
        .sum();
    assert!(
        dropped > 0,
        "with half the attempts dropped, some must have failed"
    );
    assert!(
        log.iter()
            .flat_map(|e| e["delivery_attempts"].as_array().expect("attempts").clone())
            .any(|a| a["error"] == "delivery dropped by fault injection")
    );
    assert_eq!(
        receiver.events().len(),
        10,
        "dropped attempts never reach the endpoint"
    );
}
