//! `toggl-connect definition lint|show` on the seed files and the built-in definition.

mod cli_support;

use cli_support::{bin, fixture, help, json_stdout, stderr_of, stdout_of};
use serde_json::Value;

fn seed() -> [std::path::PathBuf; 2] {
    [
        fixture("seed/toggl-track-v1.service.json"),
        fixture("seed/toggl-track-v1.resources.json"),
    ]
}

#[test]
fn lint_reports_every_seed_defect_and_exits_1() {
    let out = bin()
        .args(["definition", "lint"])
        .args(seed())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("warning[doubled-prefix]: resources[0].endpoint.value"));
    assert!(text.lines().filter(|l| l.starts_with("  fix: ")).count() >= 10);
    assert!(stderr_of(&out).contains("warning(s), 0 errors"));
    insta::assert_snapshot!("seed_lint_text", text);
}

#[test]
fn lint_json_is_machine_readable() {
    let out = bin()
        .args(["definition", "lint", "--format", "json"])
        .args(seed())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let v = json_stdout(&out);
    let items = v.as_array().expect("an array");
    assert!(!items.is_empty());
    for d in items {
        for key in ["severity", "code", "path", "message", "fix"] {
            assert!(
                d.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty()),
                "{key} in {d}"
            );
        }
    }
    insta::assert_json_snapshot!("seed_lint_json", v);
}

#[test]
fn lint_of_the_builtin_is_clean_and_io_errors_exit_2() {
    let builtin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../connectors/toggl-v9.json");
    let out = bin()
        .args(["definition", "lint"])
        .arg(&builtin)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    assert!(stdout_of(&out).is_empty());

    let out = bin()
        .args(["definition", "lint", "/nonexistent/x.json"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("cannot read /nonexistent/x.json"),
        "{}",
        stderr_of(&out)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").expect("write");
    let out = bin()
        .args(["definition", "lint"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn lint_of_a_broken_definition_shows_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = std::fs::read_to_string(&seed()[0]).expect("service");
    let svc = dir.path().join("s.json");
    std::fs::write(&svc, service).expect("write");
    let res = dir.path().join("r.json");
    std::fs::write(
        &res,
        r#"[{"handle":"x","endpoint":{"value":"/x"},"fields":[],"operations":{}},{"handle":"x","endpoint":{"value":"/x"},"fields":[],"operations":{}}]"#,
    )
    .expect("write");
    let out = bin()
        .args(["definition", "lint", "--format", "json"])
        .arg(&svc)
        .arg(&res)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let v = json_stdout(&out);
    assert!(
        v.as_array()
            .expect("array")
            .iter()
            .any(|d| d["severity"] == "error" && d["code"] == "duplicate-resource"),
        "{v}"
    );
}

#[test]
fn show_lists_resources_operations_fields_and_actions() {
    let out = bin().args(["definition", "show"]).output().expect("runs");
    assert!(out.status.success());
    let text = stdout_of(&out);
    assert!(text.contains(
        "projects.list  GET /api/v9/workspaces/{{workspace_id}}/projects  (paged: page_per_page)"
    ));
    assert!(text.contains("params: workspace_id: Integer (required), name: String (required)"));
    assert!(text.contains("fields: id: Integer, workspace_id: Integer"));
    assert!(text.contains("create-task  runs tasks.create  needs: workspace_id, project_id, name"));

    let out = bin()
        .args(["definition", "show", "--json"])
        .output()
        .expect("runs");
    let v = json_stdout(&out);
    assert_eq!(v["handle"], "toggl-track-v9");
    assert!(v["resources"].as_array().is_some_and(|r| r.len() > 10));
}

#[test]
fn show_uses_the_users_definition_with_warnings() {
    let out = bin()
        .args(["definition", "show", "--json", "--definition"])
        .args(seed())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v = json_stdout(&out);
    assert_ne!(v["handle"], "toggl-track-v9");
    assert!(
        stderr_of(&out).contains("warning"),
        "warnings are shown, the seed still loads"
    );
}

#[test]
fn help_texts() {
    insta::assert_snapshot!("help_definition", help(&["definition"]));
    insta::assert_snapshot!("help_definition_lint", help(&["definition", "lint"]));
    insta::assert_snapshot!("help_definition_show", help(&["definition", "show"]));
}
