//! Automation end to end: `serve` with rules, against a sandbox in the test process.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use toggl_connect_sandbox::{Faults, Plan, Sandbox, SandboxConfig, SandboxHandle, Seed};

/// A receiver for the `http` step that keeps every (signature header, body) it gets.
async fn billing_receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sink = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/billing",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = Arc::clone(&sink);
            async move {
                let sig = headers
                    .get("X-Webhook-Signature-256")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                sink.lock().expect("lock").push((sig, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/billing", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn rules_config(lead: i64, billing_url: &str) -> String {
    format!(
        r#"{}
[[rules]]
name = "tag-unassigned"
on = "time_entry_stopped"
when = "not exists event.payload.project_id"

[[rules.do]]
name = "tag_entry"
operation = "time_entries.update"
with = {{ workspace_id = "{{{{event.payload.workspace_id}}}}", id = "{{{{event.payload.id}}}}", tags = ["needs-project"], tag_action = "add" }}

[[rules]]
name = "forward-to-billing"
on = "time_entry_stopped"

[[rules.do]]
name = "billing"
http = "{billing_url}"
secret_env = "BILLING_WEBHOOK_SECRET"
"#,
        kickoff_rule(lead)
    )
}

const BILLING_SECRET: &str = "billing-secret-for-tests";

fn spawn_with_rules(
    sb: &SandboxHandle,
    store: &str,
    config: &std::path::Path,
    listen: &str,
) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toggl-connect"));
    cmd.arg("serve")
        .args(["--store", store, "--config", config.to_str().expect("utf8")])
        .args([
            "--listen",
            listen,
            "--public-url",
            &format!("http://{listen}"),
        ])
        .env("BILLING_WEBHOOK_SECRET", BILLING_SECRET);
    Serve::spawn_cmd(cmd, sb)
}

async fn create_project(api: &Api, name: &str) -> i64 {
    let v = api
        .call(
            reqwest::Method::POST,
            &format!("/workspaces/{}/projects", api.wid),
            Some(json!({"name": name, "active": true})),
        )
        .await;
    v["id"].as_i64().expect("project id")
}

async fn tasks_named(api: &Api, pid: i64, name: &str) -> usize {
    let v = api
        .call(
            reqwest::Method::GET,
            &format!("/workspaces/{}/projects/{pid}/tasks", api.wid),
            None,
        )
        .await;
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"] == json!(name))
        .count()
}

async fn members(api: &Api, pid: i64, user: i64) -> usize {
    let v = api
        .call(
            reqwest::Method::GET,
            &format!("/workspaces/{}/project_users?project_ids={pid}", api.wid),
            None,
        )
        .await;
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["project_id"] == json!(pid) && m["user_id"] == json!(user))
        .count()
}

fn verify(secret: &str, body: &str, header: &str) -> bool {
    header == sign(secret, body)
}

fn listen_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_run_against_the_sandbox_once_each() {
    let sb = sandbox(Plan::Unlimited).await;
    let api = Api::new(&sb);
    let lead = sb.member().user_id;
    let (billing_url, billing) = billing_receiver().await;
    let (dir, store) = temp_store();
    let config = dir.path().join("rules.toml");
    std::fs::write(&config, rules_config(lead, &billing_url)).expect("config");
    let mut serve = spawn_with_rules(&sb, &store, &config, &listen_addr());
    let rules_line = serve.wait_for_line("rules");
    assert!(rules_line.contains("project-kickoff"), "{rules_line}");

    // A project is created: the lead becomes a member and a Kickoff task appears.
    let pid = create_project(&api, "Website relaunch").await;
    eventually("kickoff task and member", || async {
        tasks_named(&api, pid, "Kickoff").await == 1 && members(&api, pid, lead).await == 1
    })
    .await;

    // A timer without a project stops: it is tagged needs-project, and billing gets a signed POST.
    let id = api.start_timer("no project").await;
    api.call(
        reqwest::Method::PATCH,
        &format!("/workspaces/{}/time_entries/{id}/stop", api.wid),
        None,
    )
    .await;
    eventually("the stopped entry is tagged", || async {
        let e = api
            .call(
                reqwest::Method::GET,
                &format!("/me/time_entries/{id}"),
                None,
            )
            .await;
        e["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("needs-project")))
    })
    .await;
    eventually("billing got the stop", || async {
        !billing.lock().expect("lock").is_empty()
    })
    .await;
    eventually("billing got our entry's stop", || async {
        billing.lock().expect("lock").iter().any(|(_, body)| {
            serde_json::from_str::<Value>(body).is_ok_and(|v| v["payload"]["id"] == json!(id))
        })
    })
    .await;
    // Starting our timer also stopped the seed's running one: both stops are forwarded, signed.
    for (sig, body) in billing.lock().expect("lock").iter() {
        assert!(
            verify(BILLING_SECRET, body, sig),
            "billing delivery verifies"
        );
    }

    // Toggl redelivers the project event (same event_id): no rule runs twice.
    let store_handle = open_store(&store).await;
    let created = events(&store_handle)
        .await
        .into_iter()
        .find(|e| e.entity_id == Some(pid))
        .expect("project event");
    let sub = store_handle
        .list_subscriptions(None)
        .await
        .expect("subs")
        .pop()
        .expect("sub");
    let sig = sign(sub.secret.expose(), &created.envelope);
    let receiver = serve.receiver_url();
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .post(&receiver)
            .header("X-Webhook-Signature-256", &sig)
            .body(created.envelope.clone())
            .send()
            .await
            .expect("redeliver");
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        tasks_named(&api, pid, "Kickoff").await,
        1,
        "no second Kickoff task"
    );
    assert_eq!(members(&api, pid, lead).await, 1, "no second membership");
    let jobs = store_handle
        .list_jobs(toggl_connect_store::JobFilter {
            rule: Some("project-kickoff".into()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 2, "one job per step: {jobs:?}");

    // `runs show` prints the step history.
    let out = Command::new(env!("CARGO_BIN_EXE_toggl-connect"))
        .args(["runs", "show", &jobs[0].id.to_string(), "--store", &store])
        .output()
        .expect("runs show");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("project-kickoff") && text.contains("\"outcome\": \"ok\""),
        "{text}"
    );

    // `events replay` re-dispatches: the configured rules plan their jobs again.
    let out = Command::new(env!("CARGO_BIN_EXE_toggl-connect"))
        .args([
            "events",
            "replay",
            &created.id.to_string(),
            "--store",
            &store,
            "--config",
            config.to_str().expect("utf8"),
        ])
        .output()
        .expect("events replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("with 1 rule job(s)"), "{text}");
    serve.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_jobs_run_leaves_no_duplicates() {
    // Slow requests so that steps are in flight when the process dies.
    let sb = Sandbox::start(SandboxConfig {
        seed: Seed::Small,
        rate_limit: false,
        faults: Faults {
            latency_ms: 40,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let api = Api::new(&sb);
    let lead = sb.member().user_id;
    let (billing_url, _billing) = billing_receiver().await;
    let (dir, store) = temp_store();
    let config = dir.path().join("rules.toml");
    std::fs::write(
        &config,
        format!(
            "[automation]\nlease_secs = 2\n{}",
            rules_config(lead, &billing_url)
        ),
    )
    .expect("config");
    let listen = listen_addr();
    let mut serve = spawn_with_rules(&sb, &store, &config, &listen);

    let mut pids = Vec::new();
    for i in 0..12 {
        pids.push(create_project(&api, &format!("Crash test {i}")).await);
    }
    // Kill as soon as some (not all) work is done.
    eventually("some steps done", || async {
        tasks_named(&api, pids[0], "Kickoff").await > 0 || members(&api, pids[0], lead).await > 0
    })
    .await;
    serve.kill9();

    let mut serve = spawn_with_rules(&sb, &store, &config, &listen);
    let deadline = Instant::now() + Duration::from_secs(90);
    for pid in &pids {
        loop {
            if tasks_named(&api, *pid, "Kickoff").await >= 1 && members(&api, *pid, lead).await >= 1
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "project {pid} never got its kickoff"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for pid in &pids {
        assert_eq!(
            tasks_named(&api, *pid, "Kickoff").await,
            1,
            "project {pid}: one Kickoff task"
        );
        assert_eq!(
            members(&api, *pid, lead).await,
            1,
            "project {pid}: one membership"
        );
    }
    serve.stop();
}
