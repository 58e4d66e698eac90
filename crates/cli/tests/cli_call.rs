//! `toggl-connect call RESOURCE.OPERATION` against an in-process sandbox.

mod cli_support;

use cli_support::{Env, bin, help, json_stdout, lossy_proxy, stderr_of, stdout_of};
use serde_json::{Value, json};

fn client_named<'a>(clients: &'a Value, name: &str) -> Option<&'a Value> {
    clients
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["name"] == json!(name))
}

#[test]
fn create_update_delete_a_client() {
    let env = Env::start();
    let wid = env.wid().to_string();
    let out = env.run_ok(&[
        "call",
        "clients.create",
        "-p",
        &format!("workspace_id={wid}"),
        "-p",
        "name=Initech",
        "--format",
        "json",
    ]);
    let created = json_stdout(&out);
    let id = created[0]["id"].as_i64().expect("id");
    let clients = env.get(&format!("/workspaces/{wid}/clients"));
    assert_eq!(
        client_named(&clients, "Initech").expect("created")["id"],
        json!(id)
    );

    env.run_ok(&[
        "call",
        "clients.update",
        "-p",
        &format!("workspace_id={wid}"),
        "-p",
        &format!("id={id}"),
        "-p",
        "name=Initrode",
    ]);
    let clients = env.get(&format!("/workspaces/{wid}/clients"));
    assert!(client_named(&clients, "Initrode").is_some());

    let out = env.run_ok(&[
        "call",
        "clients.delete",
        "-p",
        &format!("workspace_id={wid}"),
        "-p",
        &format!("id={id}"),
    ]);
    assert!(
        out.stdout.is_empty(),
        "an empty response prints no records: {}",
        stdout_of(&out)
    );
    let clients = env.get(&format!("/workspaces/{wid}/clients"));
    assert!(
        clients
            .as_array()
            .expect("array")
            .iter()
            .all(|c| c["id"] != json!(id))
    );
}

#[test]
fn current_entry_and_raw_output() {
    let env = Env::start();
    let out = env.run_ok(&["call", "time_entries.current", "--raw"]);
    let raw = json_stdout(&out);
    let api = env.get("/me/time_entries/current");
    assert_eq!(raw["id"], api["id"], "the seed has a running entry");

    // An answer that is not an object of the resource is shown as it is, not as empty fields.
    let wid = env.wid().to_string();
    let out = env.run_ok(&[
        "call",
        "webhook_subscriptions.limits",
        "-p",
        &format!("workspace_id={wid}"),
    ]);
    assert!(
        json_stdout(&out)["max_webhooks"]
            .as_i64()
            .is_some_and(|n| n > 0)
    );

    // A delete with an empty answer prints nothing on stdout and "done" on stderr.
    let id = raw["id"].to_string();
    let out = env.run_ok(&[
        "call",
        "time_entries.delete",
        "-p",
        &format!("workspace_id={wid}"),
        "-p",
        &format!("id={id}"),
    ]);
    assert!(out.stdout.is_empty(), "{}", stdout_of(&out));
    assert!(
        stderr_of(&out).contains("done (200)"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn missing_and_mistyped_parameters_fail_before_any_request() {
    let base = || {
        let mut c = bin();
        c.env("TOGGL_API_TOKEN", "t")
            .env("TOGGL_API_URL", "http://127.0.0.1:9");
        c
    };
    let out = base()
        .args(["call", "clients.create", "-p", "workspace_id=1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr_of(&out).trim(),
        "error: missing required parameter name"
    );

    let out = base()
        .args([
            "call",
            "clients.create",
            "-p",
            "workspace_id=abc",
            "-p",
            "name=x",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr_of(&out).trim(),
        r#"error: parameter workspace_id: expected an integer, got "abc""#
    );

    let out = base()
        .args(["call", "clients.create", "-p", "wid=1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("unknown parameter wid (known: workspace_id, name"),
        "{}",
        stderr_of(&out)
    );

    let out = base()
        .args(["call", "clients.frobnicate"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("resource clients has no operation \"frobnicate\""));

    let out = base()
        .args(["call", "clients.create", "-p", "novalue"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "clap rejects -p without =");
}

#[test]
fn a_lost_create_answer_is_checked_with_the_lookup() {
    let env = Env::start();
    let proxy = lossy_proxy(&env, |m, p| m == "POST" && p.ends_with("/clients"));
    let wid = env.wid().to_string();
    let out = env
        .cmd()
        .args([
            "call",
            "clients.create",
            "-p",
            &format!("workspace_id={wid}"),
            "-p",
            "name=Lost Answer Ltd",
            "--format",
            "json",
        ])
        .args(["--api-url", &proxy])
        .output()
        .expect("runs");
    let err = stderr_of(&out);
    assert!(err.contains("the request may have been applied"), "{err}");
    assert!(err.contains("it was applied"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    let found = json_stdout(&out);
    assert_eq!(found[0]["name"], json!("Lost Answer Ltd"));
    let clients = env.get(&format!("/workspaces/{wid}/clients"));
    let matching = clients
        .as_array()
        .expect("array")
        .iter()
        .filter(|c| c["name"] == json!("Lost Answer Ltd"))
        .count();
    assert_eq!(matching, 1, "created exactly once, never re-sent");
}

#[test]
fn a_lost_answer_without_a_lookup_says_how_to_check() {
    let env = Env::start();
    let proxy = lossy_proxy(&env, |m, p| m == "POST" && p.ends_with("/time_entries"));
    let wid = env.wid().to_string();
    let out = env
        .cmd()
        .args([
            "call",
            "time_entries.create",
            "-p",
            &format!("workspace_id={wid}"),
            "-p",
            "start=2025-01-10T09:00:00Z",
            "-p",
            "duration=60",
        ])
        .args(["--api-url", &proxy])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("may have been applied"), "{err}");
    assert!(
        err.contains("hint: check with `toggl-connect query time_entries`"),
        "{err}"
    );
}

#[test]
fn help_text() {
    insta::assert_snapshot!("help_call", help(&["call"]));
}
