//! `toggl-connect serve` end to end: the real binary, a sandbox in the test process, a real
//! SQLite file. These are the "done when" scenarios.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;
use toggl_connect_sandbox::{Plan, SandboxHandle};

#[tokio::test(flavor = "multi_thread")]
async fn webhook_roundtrip_on_the_free_plan() {
    let sb = sandbox(Plan::Free).await;
    let api = Api::new(&sb);
    let (_dir, url) = temp_store();
    let mut serve = Serve::spawn(&sb, &url, &["--public-url", "http://127.0.0.1:0"]);

    // Packed into the Free plan's one subscription with at most 3 filters, validated on subscribe.
    let line = serve.wait_for_line("subscription");
    assert!(line.contains("(created)"), "{line}");
    let subs = api.subscriptions().await;
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert!(subs[0]["event_filters"].as_array().expect("filters").len() <= 3);
    assert!(
        !subs[0]["validated_at"].is_null(),
        "validated by the handshake"
    );
    assert_eq!(subs[0]["enabled"], json!(true));

    let id = api.start_timer("e2e").await;
    let store = open_store(&url).await;
    eventually("the created entry is stored", || async {
        events(&store).await.iter().any(|e| e.entity_id == Some(id))
    })
    .await;
    let stored: Vec<_> = events(&store)
        .await
        .into_iter()
        .filter(|e| e.entity_id == Some(id))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].trigger, "time_entry_created time_entry_started");

    // The same signed delivery replayed 5 times is stored once.
    let sub = store
        .list_subscriptions(None)
        .await
        .expect("subs")
        .pop()
        .expect("our subscription");
    let receiver = serve.receiver_url();
    let body = stored[0].envelope.clone();
    let sig = sign(sub.secret.expose(), &body);
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let r = http
            .post(&receiver)
            .header("X-Webhook-Signature-256", &sig)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("replay");
        assert_eq!(r.status(), 200);
    }
    // A tampered copy is refused.
    let r = http
        .post(&receiver)
        .header("X-Webhook-Signature-256", &sig)
        .body(body.replace("e2e", "e2f"))
        .send()
        .await
        .expect("tampered");
    assert_eq!(r.status(), 401);
    assert_eq!(
        events(&store)
            .await
            .iter()
            .filter(|e| e.entity_id == Some(id))
            .count(),
        1
    );
    serve.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_subscription_is_repaired() {
    let sb = sandbox(Plan::Starter).await;
    let api = Api::new(&sb);
    let (dir, url) = temp_store();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[serve]\nrecheck_interval_secs = 1\n").expect("config");
    let mut serve = Serve::spawn(
        &sb,
        &url,
        &[
            "--public-url",
            "http://127.0.0.1:0",
            "--config",
            config.to_str().expect("utf8"),
        ],
    );
    serve.wait_for_line("subscription");
    let sid = api.subscriptions().await[0]["subscription_id"]
        .as_i64()
        .expect("sid");
    api.call(
        reqwest::Method::PATCH,
        &format!("/webhooks/api/v1/subscriptions/{}/{sid}", api.wid),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(api.subscriptions().await[0]["enabled"], json!(false));
    eventually("the subscription is enabled again", || async {
        api.subscriptions().await[0]["enabled"] == json!(true)
    })
    .await;
    // And events flow again.
    let id = api.start_timer("after repair").await;
    let store = open_store(&url).await;
    eventually("events flow after repair", || async {
        events(&store).await.iter().any(|e| e.entity_id == Some(id))
    })
    .await;
    serve.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_sees_create_update_and_delete() {
    let sb = sandbox(Plan::Unlimited).await;
    let api = Api::new(&sb);
    let (_dir, url) = temp_store();
    let mut serve = Serve::spawn(&sb, &url, &["--poll", "1"]);
    serve.wait_for_line("polling");
    let store = open_store(&url).await;
    // Let the baseline happen before changing anything.
    eventually("baseline recorded", || async {
        store
            .get_checkpoint("poll:since:time_entry")
            .await
            .expect("cp")
            .is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let body = json!({"created_with": "e2e", "workspace_id": api.wid, "duration": 600,
        "start": "2026-11-01T09:00:00Z", "description": "polled"});
    let id = api.create_time_entry(body).await;
    eventually("created seen", || async {
        events(&store)
            .await
            .iter()
            .any(|e| e.entity_id == Some(id) && e.action == "created")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.call(
        reqwest::Method::PUT,
        &format!("/workspaces/{}/time_entries/{id}", api.wid),
        Some(json!({"description": "polled, edited"})),
    )
    .await;
    eventually("updated seen", || async {
        events(&store)
            .await
            .iter()
            .any(|e| e.entity_id == Some(id) && e.action == "updated")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.call(
        reqwest::Method::DELETE,
        &format!("/workspaces/{}/time_entries/{id}", api.wid),
        None,
    )
    .await;
    eventually("deleted seen", || async {
        events(&store)
            .await
            .iter()
            .any(|e| e.entity_id == Some(id) && e.action == "deleted")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mine: Vec<String> = events(&store)
        .await
        .iter()
        .filter(|e| e.entity_id == Some(id))
        .map(|e| e.action.clone())
        .collect();
    assert_eq!(
        mine,
        vec!["created", "updated", "deleted"],
        "each change exactly once"
    );
    serve.stop();
}

#[test]
fn polling_refuses_an_interval_the_quota_cannot_fit() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let sb = rt.block_on(sandbox(Plan::Free));
    let (_dir, url) = temp_store();
    let out = Command::new(env!("CARGO_BIN_EXE_toggl-connect"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--poll",
            "10",
        ])
        .env("TOGGL_API_URL", &sb.facts().api_url)
        .env("TOGGL_API_TOKEN", &sb.facts().api_token)
        .env("TOGGL_CONNECT_PACING_MS", "0")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("requests/hour") && err.contains("use an interval of at least"),
        "{err}"
    );
    drop(rt);
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_up_after_a_stop_delivers_each_missed_change_once() {
    let sb = sandbox(Plan::Starter).await;
    let api = Api::new(&sb);
    let (_dir, url) = temp_store();
    let mut serve = Serve::spawn(&sb, &url, &["--public-url", "http://127.0.0.1:0"]);
    serve.wait_for_line("catch-up");
    serve.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // While stopped: a stopped entry is created and another edited. Deliveries fail meanwhile.
    let body = json!({"created_with": "e2e", "workspace_id": api.wid, "duration": 60,
        "start": "2026-11-02T09:00:00Z", "description": "while down"});
    let created = api.create_time_entry(body).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A new instance (new port, so the old subscription is not ours: it is replaced) catches up.
    let mut serve = Serve::spawn(&sb, &url, &["--public-url", "http://127.0.0.1:0"]);
    let line = serve.wait_for_line("catch-up");
    assert!(
        line.contains("change(s) missed while stopped stored"),
        "{line}"
    );
    let store = open_store(&url).await;
    eventually("the missed create is stored", || async {
        events(&store)
            .await
            .iter()
            .any(|e| e.entity_id == Some(created))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got: Vec<_> = events(&store)
        .await
        .into_iter()
        .filter(|e| e.entity_id == Some(created))
        .collect();
    assert_eq!(got.len(), 1, "exactly once: {got:?}");
    assert_eq!(got[0].action, "created");
    serve.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_burst_loses_no_acknowledged_event() {
    let sb = sandbox(Plan::Unlimited).await;
    let api = std::sync::Arc::new(Api::new(&sb));
    let (_dir, url) = temp_store();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://127.0.0.1:{port}");
    let args = ["--listen", listen.as_str(), "--public-url", public.as_str()];
    let spawn = |sb: &SandboxHandle| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_toggl-connect"));
        cmd.arg("serve").args(["--store", &url]).args(args);
        Serve::spawn_cmd(cmd, sb)
    };
    let mut serve = spawn(&sb);
    serve.wait_for_line("subscription");

    // A burst of 150 changes; serve is killed while they are being delivered.
    const N: usize = 150;
    let mut tasks = Vec::new();
    for i in 0..N {
        let api = std::sync::Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            let body = json!({"created_with": "crash", "workspace_id": api.wid, "duration": 60,
                "start": "2026-11-03T09:00:00Z", "description": format!("burst {i}")});
            api.create_time_entry(body).await
        }));
        if i == N / 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            serve.kill9();
        }
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("create"));
    }

    // Everything the sandbox saw acknowledged before the kill is in the store, once.
    let sid = api.subscriptions().await[0]["subscription_id"]
        .as_i64()
        .expect("sid");
    let log = api
        .call(
            reqwest::Method::GET,
            &format!("/webhooks/api/v1/subscriptions/{}/{sid}/events", api.wid),
            None,
        )
        .await;
    let acknowledged: Vec<i64> = log
        .as_array()
        .expect("event log")
        .iter()
        .filter(|e| e["status"] == json!("delivered"))
        .filter_map(|e| e["event_id"].as_i64())
        .collect();
    {
        let store = open_store(&url).await;
        let stored: std::collections::HashSet<i64> =
            events(&store).await.iter().map(|e| e.event_id).collect();
        for id in &acknowledged {
            assert!(stored.contains(id), "acknowledged event {id} lost");
        }
    }

    // Restart: the sandbox redelivers what was not acknowledged; each change is stored once.
    let mut serve = spawn(&sb);
    serve.wait_for_line("subscription");
    let store = open_store(&url).await;
    eventually("every change delivered", || async {
        let got = events(&store).await;
        ids.iter()
            .all(|id| got.iter().any(|e| e.entity_id == Some(*id)))
    })
    .await;
    let got = events(&store).await;
    for id in &ids {
        assert_eq!(
            got.iter().filter(|e| e.entity_id == Some(*id)).count(),
            1,
            "entry {id} stored once"
        );
    }
    // Webhook events are keyed by Toggl's event_id; catch-up found the changes missed while down
    // (event_id 0, keyed by entity version), and the sandbox's later redeliveries of those same
    // versions were recognised and not stored again (the per-entry count above).
    let webhook: Vec<i64> = got
        .iter()
        .filter(|e| e.source == toggl_connect_store::EventSource::Webhook)
        .map(|e| e.event_id)
        .collect();
    let distinct: std::collections::HashSet<i64> = webhook.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        webhook.len(),
        "no webhook event stored twice"
    );
    assert!(acknowledged.len() <= webhook.len());
    serve.stop();
}

/// The README's tour, as a user runs it: `serve --sandbox`, then, a few seconds later, the
/// `curl` it printed. Starting that timer stops the seeded running one, so the store gets both
/// `time_entry_stopped` and `time_entry_started`. (The printed command used to carry the time
/// `serve` printed it as `start`: run later than two seconds after, the implicit stop's `stop`
/// was that old time, too far from its `at` to tell a stop from an edit without history.)
/// It runs the command with `sh` and `curl`, as the README does (rustup's installer needs
/// `curl` too, so a machine set up with only Rust has it).
#[test]
fn the_readme_tour_fires_stopped_and_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toggl-connect"));
    cmd.args(["serve", "--sandbox", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path());
    let mut serve = Serve::start(cmd);
    let curl = serve.wait_for_line("curl -s").trim().to_owned();
    let list = serve.wait_for_line("Then see it:");
    let store = list
        .split_whitespace()
        .last()
        .expect("the store URL ends the line")
        .to_owned();
    std::thread::sleep(Duration::from_secs(3));
    let out = Command::new("sh")
        .args(["-c", &curl])
        .output()
        .expect("sh and curl run");
    assert!(out.status.success(), "the printed curl failed: {out:?}");
    let created: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the sandbox answers the entry as JSON");
    assert_eq!(created["duration"], json!(-1), "{created}");

    let end = std::time::Instant::now() + DEADLINE;
    let listed = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_toggl-connect"))
            .args(["events", "list", "--store", &store])
            .current_dir(dir.path())
            .output()
            .expect("events list runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("time_entry_started") && text.contains("time_entry_stopped") {
            break text;
        }
        assert!(
            std::time::Instant::now() < end,
            "the tour's events never showed both triggers: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        listed.contains("time_entry_updated time_entry_stopped"),
        "{listed}"
    );
    assert!(
        listed.contains("time_entry_created time_entry_started"),
        "{listed}"
    );
    serve.stop();
}
