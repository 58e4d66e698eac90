//! `toggl-connect action NAME` against an in-process sandbox.

mod cli_support;

use cli_support::{Env, bin, help, json_stdout, stderr_of};
use serde_json::json;

#[test]
fn create_task_lands_in_the_project() {
    let env = Env::start();
    let wid = env.wid();
    let projects = env.get(&format!("/workspaces/{wid}/projects"));
    let pid = projects[0]["id"].as_i64().expect("a seeded project");
    let out = env.run_ok(&[
        "action",
        "create-task",
        "-p",
        &format!("workspace_id={wid}"),
        "-p",
        &format!("project_id={pid}"),
        "-p",
        "name=Write the docs",
        "--format",
        "json",
    ]);
    let created = json_stdout(&out);
    let tasks = env.get(&format!("/workspaces/{wid}/projects/{pid}/tasks"));
    let task = tasks
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == json!("Write the docs"))
        .expect("task listed");
    assert_eq!(task["id"], created[0]["id"]);
}

#[test]
fn start_and_stop_a_timer() {
    let env = Env::start();
    let wid = env.wid().to_string();
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let out = env.run_ok(&[
        "action",
        "start-timer",
        "-p",
        &format!("workspace_id={wid}"),
        "-p",
        &format!("start={now}"),
        "-p",
        "description=Focus",
        "--format",
        "json",
    ]);
    let id = json_stdout(&out)[0]["id"].as_i64().expect("id");
    let current = env.get("/me/time_entries/current");
    assert_eq!(current["id"], json!(id));
    assert_eq!(current["description"], json!("Focus"));

    env.run_ok(&[
        "action",
        "stop-timer",
        "-p",
        &format!("workspace_id={wid}"),
        "-p",
        &format!("id={id}"),
    ]);
    assert!(
        env.get("/me/time_entries/current").is_null(),
        "nothing runs"
    );
    assert!(!env.get(&format!("/me/time_entries/{id}"))["stop"].is_null());
}

#[test]
fn action_defaults_are_applied() {
    let env = Env::start();
    let wid = env.wid().to_string();
    env.run_ok(&[
        "action",
        "create-project",
        "-p",
        &format!("workspace_id={wid}"),
        "-p",
        "name=Defaults Check",
    ]);
    let projects = env.get(&format!("/workspaces/{wid}/projects"));
    let p = projects
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == json!("Defaults Check"))
        .expect("listed");
    assert_eq!(p["active"], json!(true));
}

#[test]
fn missing_parameters_are_named_before_any_request() {
    let out = bin()
        .env("TOGGL_API_TOKEN", "t")
        .args([
            "action",
            "create-task",
            "--api-url",
            "http://127.0.0.1:9",
            "-p",
            "workspace_id=1",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr_of(&out).trim(),
        "error: missing required parameters project_id, name"
    );

    let out = bin()
        .env("TOGGL_API_TOKEN", "t")
        .args(["action", "make-coffee"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("unknown action \"make-coffee\" (known: create-client"));
}

#[test]
fn help_text() {
    insta::assert_snapshot!("help_action", help(&["action"]));
}
