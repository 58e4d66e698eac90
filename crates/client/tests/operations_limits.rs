//! Toggl's limits against the sandbox, counted on the wire by a recording proxy (the sandbox has
//! no request counter): a burst of 100 operations on the Free plan's quota, and the 429 bucket.

mod operations_proxy;

use std::time::Duration;

use futures::future::join_all;
use operations_proxy::{Proxy, Seen};
use serde_json::Value;
use toggl_connect_client::{Client, ClientConfig};
use toggl_connect_definition::{Connector, Params};
use toggl_connect_sandbox::{Plan, Sandbox, SandboxConfig, Seed};
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(3);

async fn client_via_proxy(
    config: SandboxConfig,
) -> (toggl_connect_sandbox::SandboxHandle, Proxy, Client) {
    let sb = Sandbox::start(config).await.expect("sandbox");
    let root = sb.facts().api_url.trim_end_matches("/api/v9").to_owned();
    let proxy = Proxy::start(&root).await;
    let mut cfg =
        ClientConfig::with_token(sb.facts().api_token.clone()).base_url(proxy.url.clone());
    cfg.pacing = None;
    cfg.max_quota_wait = Duration::from_secs(60);
    (sb, proxy, Client::new(cfg).expect("client"))
}

fn is_org_scoped(s: &Seen) -> bool {
    s.path.starts_with("/api/v9/workspaces/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_on_the_free_plan_waits_for_the_reset_instead_of_hammering() {
    burst(false).await;
}

/// Another program spent the window before the client's first request: the client learns it
/// from one probe's 402 and then waits for the reset instead of sending the other 99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_into_an_already_spent_window_probes_once_per_window() {
    burst(true).await;
}

/// Spends the org quota of the sandbox's default workspace directly (not through the proxy).
async fn spend_quota(sb: &toggl_connect_sandbox::SandboxHandle) {
    let f = sb.facts();
    let http = reqwest::Client::new();
    loop {
        let resp = http
            .get(format!(
                "{}/workspaces/{}/clients",
                f.api_url, f.workspace_id
            ))
            .basic_auth(&f.api_token, Some("api_token"))
            .send()
            .await
            .expect("sandbox answers");
        if resp.status().as_u16() == 402 {
            break;
        }
        assert_eq!(resp.status().as_u16(), 200);
    }
}

async fn burst(prespend: bool) {
    let (sb, proxy, client) = client_via_proxy(SandboxConfig {
        rate_limit: false,
        seed: Seed::Small,
        plan: Plan::Free,
        quota_window: WINDOW,
        ..SandboxConfig::default()
    })
    .await;
    let wid = sb.facts().workspace_id;
    let op = Connector::builtin()
        .operation("clients", "list")
        .expect("clients.list");
    let req = op
        .render(&Params::new().with("workspace_id", wid))
        .expect("renders");
    if prespend {
        spend_quota(&sb).await;
    }

    let started = Instant::now();
    let results = join_all((0..100).map(|_| {
        let client = client.clone();
        let req = req.clone();
        async move { client.run_operation(&req).await }
    }))
    .await;
    let elapsed = started.elapsed();
    for r in &results {
        let out = r.as_ref().expect("every call succeeds in the end");
        assert!(!out.items.is_empty());
    }

    let log: Vec<Seen> = proxy.log().into_iter().filter(is_org_scoped).collect();
    let ok = log.iter().filter(|s| s.status == 200).count();
    let spent: Vec<&Seen> = log.iter().filter(|s| s.status == 402).collect();
    assert_eq!(ok, 100, "each call was answered once");
    // Free plan: 30 per window, so 100 calls need at least 4 windows, i.e. 3 resets.
    let resets = if prespend { 4 } else { 3 };
    assert!(
        elapsed >= WINDOW * resets - Duration::from_millis(500),
        "finished only after the resets: {elapsed:?}"
    );
    if prespend {
        assert!(!spent.is_empty(), "the first probe met the spent window");
    }
    // Never a request while the quota is known to be spent: every request after an answer with
    // remaining <= 0 starts no earlier than that answer's reset, except one probe per window.
    let windows = (elapsed.as_secs_f64() / WINDOW.as_secs_f64()).ceil() as usize + 1;
    assert!(
        spent.len() <= windows,
        "at most one probe per window may hit a spent quota: {} 402s in {windows} windows",
        spent.len()
    );
    for (i, s) in spent.iter().enumerate() {
        if let Some(next) = spent.get(i + 1) {
            let gap = next.at.duration_since(s.at);
            let reset = s.resets_in.unwrap_or(Duration::ZERO);
            assert!(
                gap + Duration::from_millis(100) >= reset,
                "a second probe {gap:?} after a 402 announcing {reset:?}"
            );
        }
    }
    if std::env::var_os("OPERATIONS_LIMITS_TRACE").is_some() {
        for s in &log {
            eprintln!(
                "{:>8.3}s {} rem={:?} reset={:?}",
                s.at.duration_since(started).as_secs_f64(),
                s.status,
                s.quota_remaining,
                s.resets_in
            );
        }
    }
    // Once an answer said "remaining 0" (or 402), no request may start before its reset; the
    // 100 ms slack covers the proxy's own hop.
    let slack = Duration::from_millis(100);
    let sent_while_spent = log
        .iter()
        .filter(|s| s.quota_remaining.is_some_and(|r| r <= 0))
        .map(|s| {
            let reset_at = s.answered_at + s.resets_in.unwrap_or(Duration::ZERO);
            log.iter()
                .filter(|later| later.at > s.answered_at + slack && later.at + slack < reset_at)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(
        sent_while_spent, 0,
        "requests sent into a window known to be spent"
    );
    eprintln!(
        "burst (prespent {prespend}): 100 calls in {elapsed:?}, {} requests on the wire, {} answered 402, {sent_while_spent} sent before an announced reset",
        log.len(),
        spent.len()
    );
    sb.shutdown().await.expect("stops");
}

#[tokio::test]
async fn a_429_is_honoured() {
    let (sb, proxy, client) = client_via_proxy(SandboxConfig {
        rate_limit: true,
        seed: Seed::Small,
        ..SandboxConfig::default()
    })
    .await;
    let op = Connector::builtin()
        .operation("users", "read")
        .expect("users.read");
    let req = op.render(&Params::new()).expect("renders");
    for _ in 0..8 {
        let out = client
            .run_operation(&req)
            .await
            .expect("rate limiting is waited out");
        assert!(out.body.get("id").and_then(Value::as_i64).is_some());
    }
    let log = proxy.log();
    let limited: Vec<(usize, &Seen)> = log
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status == 429)
        .collect();
    assert!(
        !limited.is_empty(),
        "the bucket (3 burst, 1/s) answered 429 to 8 quick calls"
    );
    for (i, s) in limited {
        let next = log.get(i + 1).expect("the 429 was retried");
        let waited = next.at.duration_since(s.at);
        let asked = s.retry_after.expect("the sandbox sends Retry-After");
        assert!(
            waited + Duration::from_millis(50) >= asked,
            "retried after {waited:?}, Retry-After was {asked:?}"
        );
    }
    assert_eq!(log.iter().filter(|s| s.status == 200).count(), 8);
    sb.shutdown().await.expect("stops");
}
