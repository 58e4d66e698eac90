//! `toggl-connect query` against an in-process sandbox.

mod cli_support;

use cli_support::{Env, bin, help, json_stdout, stderr_of, stdout_of};
use serde_json::{Value, json};

#[test]
fn lists_projects_of_the_default_workspace_as_records() {
    let env = Env::start();
    // No workspace given: the default one comes from GET /me.
    let out = env.run_ok(&["query", "projects", "--format", "json"]);
    let v = json_stdout(&out);
    let records = v.as_array().expect("array");
    let api = env.get(&format!("/workspaces/{}/projects", env.wid()));
    assert_eq!(records.len(), api.as_array().expect("array").len());
    let names: Vec<&Value> = records.iter().map(|r| &r["name"]).collect();
    assert!(names.contains(&&json!("Website Redesign")), "{names:?}");
    // Flat records carry exactly the resource's fields.
    let keys: Vec<&String> = records[0].as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "workspace_id",
            "client_id",
            "name",
            "is_private",
            "active",
            "billable",
            "color",
            "status",
            "at"
        ]
    );
}

#[test]
fn formats_read_by_id_and_raw() {
    let env = Env::start();
    let wid = env.wid().to_string();
    let out = env.run_ok(&["query", "clients", "--workspace", &wid, "--format", "csv"]);
    let csv = stdout_of(&out);
    assert!(
        csv.starts_with("id,workspace_id,name,notes,archived,at\n"),
        "{csv}"
    );
    assert!(csv.contains(",Acme Corp,"));

    let first_id = csv
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').next())
        .expect("a row")
        .to_owned();
    let out = env.run_ok(&["query", "clients", "--id", &first_id, "--raw"]);
    let raw = json_stdout(&out);
    assert_eq!(raw["id"].to_string(), first_id);
    assert!(
        raw.get("wid").is_some() || raw.get("workspace_id").is_some(),
        "raw keeps Toggl's keys: {raw}"
    );

    let out = env.run_ok(&["query", "time_entries", "--format", "ndjson"]);
    let lines = stdout_of(&out);
    assert!(lines.lines().count() >= 2);
    for l in lines.lines() {
        let r: Value = serde_json::from_str(l).expect("one JSON object per line");
        assert!(r["id"].is_i64());
    }

    let out = env
        .cmd()
        .env_remove("TOGGL_CONNECT_PACING_MS")
        .args(["query", "projects", "--no-pacing"])
        .output()
        .expect("runs");
    let table = stdout_of(&out);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("id  ") && h.contains("name")),
        "{table}"
    );
}

#[test]
fn text_values_are_checked_before_any_request() {
    // Nothing listens on this URL: an error about the value proves no request was tried.
    let out = bin()
        .env("TOGGL_API_TOKEN", "t")
        .args([
            "query",
            "projects",
            "--api-url",
            "http://127.0.0.1:9",
            "--workspace",
            "abc",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr_of(&out).trim(),
        r#"error: parameter workspace_id: expected an integer, got "abc""#
    );
    assert!(out.stdout.is_empty());

    let out = bin()
        .env("TOGGL_API_TOKEN", "t")
        .args([
            "query",
            "tasks",
            "--api-url",
            "http://127.0.0.1:9",
            "--workspace",
            "1",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("missing required parameter project_id"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_missing_token_gets_a_hint() {
    let out = bin().args(["query", "projects"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("error: TOGGL_API_TOKEN is not set"), "{err}");
    assert!(err.contains("hint: export TOGGL_API_TOKEN="), "{err}");
}

#[test]
fn unknown_resources_are_named() {
    let out = bin()
        .env("TOGGL_API_TOKEN", "t")
        .args(["query", "projcts"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("unknown resource \"projcts\" (known: time_entries, projects")
    );
}

#[test]
fn help_text() {
    insta::assert_snapshot!("help_query", help(&["query"]));
}

#[test]
fn a_users_definition_replaces_the_builtin() {
    let env = Env::start();
    let out = env
        .cmd()
        .args(["query", "time_entries", "--format", "json", "--definition"])
        .arg(cli_support::fixture("seed/toggl-track-v1.service.json"))
        .arg(cli_support::fixture("seed/toggl-track-v1.resources.json"))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("warning(s)"),
        "the seed's warnings are mentioned"
    );
    let v = json_stdout(&out);
    let first = v.as_array().and_then(|a| a.first()).expect("records");
    // The seed's own field names (v8-style `pid`, `tags_0`), not the built-in's.
    assert!(
        first.get("pid").is_some() && first.get("tags_0").is_some(),
        "{first}"
    );
    assert!(first.get("project_id").is_none());
}
