//! A definition with one of each error: every problem is reported with its path, and the
//! definition does not compile.

use std::path::PathBuf;

use toggl_connect_definition::{Connector, LoadError, compile, read_files};

fn broken() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken/broken.json")
}

#[test]
fn every_error_is_reported_with_its_path() {
    let err = Connector::load_files(&[broken()]).expect_err("must fail");
    let LoadError::Invalid(e) = &err else {
        panic!("expected diagnostics, got {err}")
    };
    let text: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!("broken_definition", text.join("\n"));
    let has = |code: &str, path: &str| {
        e.diagnostics
            .iter()
            .any(|d| d.code == code && d.path == path)
    };
    assert!(has("invalid-base-url", "service.service.baseURL.value"));
    assert!(has(
        "unknown-placeholder",
        "service.service.auth.params.basic.username.value"
    ));
    assert!(has("duplicate-field", "resources[0].fields[1].name"));
    assert!(has("invalid-selector", "resources[0].fields[2].selector"));
    assert!(has("unknown-type", "resources[0].fields[2].type"));
    assert!(has("missing-method", "resources[0].operations.read"));
    assert!(has("missing-path", "resources[0].operations.create"));
    assert!(has(
        "invalid-body-template",
        "resources[0].operations.update.bodyTemplate.value"
    ));
    assert!(has(
        "invalid-method",
        "resources[0].operations.replace.method"
    ));
    assert!(has(
        "unknown-placeholder",
        "resources[0].operations.replace.bodyTemplate.value"
    ));
    assert!(has(
        "unknown-placeholder",
        "resources[0].operations.list.queryParams.q"
    ));
    assert!(has(
        "unknown-field",
        "resources[0].operations.members.lookup.field"
    ));
    assert!(has(
        "unknown-operation",
        "resources[0].operations.members.lookup.operation"
    ));
    assert!(has(
        "invalid-pagination",
        "resources[0].operations.paged.pagination.per_page"
    ));
    assert!(has(
        "invalid-response",
        "resources[0].operations.paged.response"
    ));
    assert!(has("duplicate-resource", "resources[1].handle"));
    assert!(has("unknown-resource", "actions[0].resource"));
    assert!(has("unknown-operation", "actions[1].operation"));
    assert!(has("invalid-default", "actions[2].defaults.workspace_id"));
    assert!(has("unknown-parameter", "actions[2].defaults.colour"));
    assert!(has("unknown-parameter", "actions[2].required[0]"));
    assert!(has("unknown-resource", "webhooks[0].resource"));
    assert!(has("unknown-webhook-entity", "webhooks[1].entity"));
    assert!(has("unknown-webhook-action", "webhooks[1].actions[1]"));
    assert!(has(
        "workspace-user-update-without-id",
        "resources[0].operations.members.path.value"
    ));
    assert!(has(
        "deprecated-admin-flag",
        "resources[0].operations.members.bodyTemplate.value"
    ));
    assert!(err.to_string().starts_with("definition has "), "{err}");
}

#[test]
fn lint_can_get_diagnostics_without_failing_early() {
    let raw = read_files(&[broken()]).expect("reads");
    let err = compile(&raw).expect_err("must fail");
    assert!(err.diagnostics.iter().any(|d| d.is_error()));
}

#[test]
fn unreadable_and_misshapen_files_fail_with_the_file_named() {
    let missing = PathBuf::from("/nonexistent/definition.json");
    let err = Connector::load_files(&[missing]).expect_err("must fail");
    assert!(matches!(err, LoadError::Io { .. }), "{err}");
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed");
    let only_resources = seed.join("toggl-track-v1.resources.json");
    assert!(matches!(
        Connector::load_files(&[only_resources]).expect_err("must fail"),
        LoadError::NoService
    ));
    let service = seed.join("toggl-track-v1.service.json");
    assert!(matches!(
        Connector::load_files(&[service.clone(), service]).expect_err("must fail"),
        LoadError::TwoServices { .. }
    ));
}
