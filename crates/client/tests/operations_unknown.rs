//! A create whose answer is lost: the client reports `OutcomeUnknown` without re-sending it, and
//! the operation's declared lookup tells whether it took effect.

mod operations_proxy;

use operations_proxy::{Fault, Proxy};
use serde_json::json;
use toggl_connect_client::{Client, ClientConfig, ClientError};
use toggl_connect_definition::{Connector, Params};
use toggl_connect_sandbox::{Sandbox, SandboxConfig, Seed};

async fn setup() -> (toggl_connect_sandbox::SandboxHandle, Proxy, Client) {
    let sb = Sandbox::start(SandboxConfig {
        rate_limit: false,
        seed: Seed::Small,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let root = sb.facts().api_url.trim_end_matches("/api/v9").to_owned();
    let proxy = Proxy::start(&root).await;
    let mut cfg =
        ClientConfig::with_token(sb.facts().api_token.clone()).base_url(proxy.url.clone());
    cfg.pacing = None;
    (sb, proxy, Client::new(cfg).expect("client"))
}

async fn lost_create(fault: Fault, name: &str) -> Option<toggl_connect_definition::Record> {
    let (sb, proxy, client) = setup().await;
    let wid = sb.facts().workspace_id;
    proxy.set_rule(move |m, p| {
        if m == "POST" && p.ends_with("/clients") {
            fault
        } else {
            Fault::None
        }
    });
    let c = Connector::builtin();
    let resource = c.resource("clients").expect("clients");
    let op = resource.operation("create").expect("create");
    let params = Params::new().with("workspace_id", wid).with("name", name);
    let req = op.render(&params).expect("renders");
    let err = client
        .run_operation(&req)
        .await
        .expect_err("the answer is lost");
    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
    let posts = proxy.log().iter().filter(|s| s.method == "POST").count();
    assert_eq!(
        posts, 1,
        "a create with an unknown outcome is never re-sent"
    );
    let lookup = op
        .lookup
        .as_ref()
        .expect("clients.create declares a lookup");
    client
        .find_created(resource, lookup, &params)
        .await
        .expect("lookup runs")
}

#[tokio::test]
async fn lookup_finds_a_create_that_was_applied() {
    let found = lost_create(Fault::BadGatewayAfter, "Applied Client")
        .await
        .expect("the create took effect");
    assert_eq!(found["name"], json!("Applied Client"));
    assert!(found["id"].as_i64().is_some());
}

#[tokio::test]
async fn lookup_reports_a_create_that_never_arrived() {
    assert_eq!(
        lost_create(Fault::BadGatewayBefore, "Lost Client").await,
        None
    );
}
