//! Automation inside the quota: the sandbox on the Free plan (30 requests per window per user and
//! organization) with a short window, 100 project-created events, two steps each.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use toggl_connect_sandbox::{Plan, Sandbox, SandboxConfig, Seed};
use toggl_connect_store::{AttemptOutcome, JobFilter, JobStatus};

const WINDOW: Duration = Duration::from_secs(8);
const PROJECTS: usize = 100;

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_events_finish_within_the_quota() {
    let sb = Sandbox::start(SandboxConfig {
        plan: Plan::Free,
        quota_window: WINDOW,
        seed: Seed::Small,
        rate_limit: false,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    // The member creates the projects (and so is already their member); the admin is the lead.
    let lead = sb.facts().user_id;
    // The member creates the projects: its quota is its own, so serve's (the admin's) is all
    // for the rules.
    let member = Api {
        http: reqwest::Client::new(),
        base: sb.facts().api_url.clone(),
        token: sb.member().api_token.clone(),
        wid: sb.facts().workspace_id,
    };
    let admin = Api::new(&sb);
    let (dir, store) = temp_store();
    let config = dir.path().join("rules.toml");
    std::fs::write(&config, kickoff_rule(lead)).expect("config");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toggl-connect"));
    cmd.arg("serve")
        .args([
            "--store",
            &store,
            "--config",
            config.to_str().expect("utf8"),
        ])
        .args([
            "--listen",
            &listen,
            "--public-url",
            &format!("http://{listen}"),
        ]);
    let mut serve = Serve::spawn_cmd(cmd, &sb);
    let started = Instant::now();

    let mut pids = Vec::new();
    while pids.len() < PROJECTS {
        let url = format!("{}/workspaces/{}/projects", member.base, member.wid);
        let resp = member
            .http
            .post(&url)
            .basic_auth(&member.token, Some("api_token"))
            .json(&json!({"name": format!("Quota {}", pids.len()), "active": true}))
            .send()
            .await
            .expect("sandbox answers");
        if resp.status() == 402 {
            let wait: u64 = resp
                .headers()
                .get("X-Toggl-Quota-Resets-In")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
            continue;
        }
        assert!(resp.status().is_success(), "{}", resp.status());
        let v: serde_json::Value = resp.json().await.expect("json");
        pids.push(v["id"].as_i64().expect("id"));
    }

    let store_handle = open_store(&store).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let jobs = store_handle
            .list_jobs(JobFilter {
                limit: Some(1000),
                ..JobFilter::default()
            })
            .await
            .expect("jobs");
        let done = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Succeeded)
            .count();
        assert!(
            jobs.iter().all(|j| j.status != JobStatus::Dead),
            "no step dead-lettered: {jobs:?}"
        );
        if done == 2 * PROJECTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} steps done",
            2 * PROJECTS
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();

    // The waits show in the runs, and after each 402 at most one request per window went out.
    let jobs = store_handle
        .list_jobs(JobFilter {
            limit: Some(1000),
            ..JobFilter::default()
        })
        .await
        .expect("jobs");
    let (mut waits, mut refused) = (0, 0);
    for j in &jobs {
        let detail = store_handle
            .get_job(j.id)
            .await
            .expect("job")
            .expect("exists");
        waits += detail
            .attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::WaitingQuota)
            .count();
        refused += detail
            .attempts
            .iter()
            .filter(|a| a.status == Some(402))
            .count();
    }
    assert!(waits > 0, "runs show quota waits");
    let windows = usize::try_from(elapsed.as_secs() / WINDOW.as_secs()).expect("small") + 2;
    assert!(
        refused <= windows,
        "{refused} requests answered 402 in {elapsed:?} ({windows} windows): at most one probe per window"
    );

    // Exactly one Kickoff task and one membership per project.
    let tasks = admin
        .call(
            reqwest::Method::GET,
            &format!("/workspaces/{}/tasks?per_page=200", admin.wid),
            None,
        )
        .await;
    for pid in &pids {
        let n = tasks["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["project_id"] == json!(pid) && t["name"] == json!("Kickoff"))
            .count();
        assert_eq!(n, 1, "project {pid}");
    }
    let members = admin
        .call(
            reqwest::Method::GET,
            &format!("/workspaces/{}/project_users", admin.wid),
            None,
        )
        .await;
    for pid in &pids {
        let n = members
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["project_id"] == json!(pid) && m["user_id"] == json!(lead))
            .count();
        assert_eq!(n, 1, "project {pid}");
    }
    eprintln!(
        "{} steps in {elapsed:?}: {waits} quota waits recorded, {refused} requests answered 402",
        2 * PROJECTS
    );
    serve.stop();
}
