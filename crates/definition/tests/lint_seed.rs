//! The seed definition (unchanged copies in fixtures/seed) loads, and every known defect is
//! reported as its own diagnostic.

use std::path::PathBuf;

use serde_json::json;
use toggl_connect_definition::{Connector, Params, RawDefinition, Severity, compile, join_url};

fn seed_paths() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed");
    vec![
        dir.join("toggl-track-v1.service.json"),
        dir.join("toggl-track-v1.resources.json"),
    ]
}

fn seed_text() -> (String, String) {
    let p = seed_paths();
    (
        std::fs::read_to_string(&p[0]).expect("service fixture"),
        std::fs::read_to_string(&p[1]).expect("resources fixture"),
    )
}

#[test]
fn seed_lint_output() {
    let compiled = Connector::load_files(&seed_paths()).expect("the seed loads with warnings");
    assert!(
        compiled
            .diagnostics
            .iter()
            .all(|d| d.severity == Severity::Warning)
    );
    let human: Vec<String> = compiled
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    insta::assert_snapshot!("seed_lint_human", human.join("\n"));
    insta::assert_json_snapshot!("seed_lint_json", compiled.diagnostics);
}

#[test]
fn every_seed_defect_is_its_own_diagnostic() {
    let compiled = Connector::load_files(&seed_paths()).expect("the seed loads");
    let has = |code: &str, path: &str| {
        compiled
            .diagnostics
            .iter()
            .any(|d| d.code == code && d.path == path)
    };
    assert!(has("doubled-prefix", "resources[0].endpoint.value"));
    assert!(has(
        "v8-wrapped-body",
        "resources[0].operations.create.bodyTemplate.value"
    ));
    assert!(has(
        "v8-wrapped-body",
        "resources[1].operations.create.bodyTemplate.value"
    ));
    assert!(has(
        "v8-wrapped-body",
        "resources[3].operations.create.bodyTemplate.value"
    ));
    assert!(has(
        "quoted-non-string",
        "resources[0].operations.create.bodyTemplate.value"
    ));
    assert!(has(
        "write-to-read-only",
        "resources[0].operations.create.path.value"
    ));
    assert!(has(
        "write-to-read-only",
        "resources[0].operations.update.path.value"
    ));
    assert!(has(
        "write-to-read-only",
        "resources[0].operations.delete.path.value"
    ));
    assert!(has(
        "missing-created-with",
        "resources[0].operations.create.bodyTemplate.value"
    ));
    assert!(has(
        "missing-workspace-id",
        "resources[0].operations.create.bodyTemplate.value"
    ));
    assert!(has(
        "wrong-project-users-path",
        "resources[6].endpoint.value"
    ));
    assert!(has("wrong-invitations-path", "resources[8].endpoint.value"));
    assert!(has(
        "webhook-delivery-path",
        "resources[0].webhooks[0].path"
    ));
    assert!(has(
        "webhook-delivery-path",
        "resources[2].webhooks[0].path"
    ));
    assert_eq!(
        compiled
            .diagnostics
            .iter()
            .filter(|d| d.code == "doubled-prefix")
            .count(),
        10,
        "one per resource endpoint"
    );
}

#[test]
fn seed_still_renders_as_its_author_meant() {
    let (s, r) = seed_text();
    let c = compile(&RawDefinition::from_parts(&s, &r).expect("reads"))
        .expect("compiles")
        .connector;
    let op = c.operation("time_entries", "create").expect("op");
    let params = Params::from_text_pairs(
        &[
            ("description", "Write \"report\""),
            ("start", "2025-01-10T09:00:00Z"),
            ("duration", "3600"),
            ("pid", "700001"),
            ("tags", "a,b"),
        ],
        &op.params,
    )
    .expect("typed");
    let req = op.render(&params).expect("renders");
    assert_eq!(req.path, "/api/v9/me/time_entries");
    // The quoted "{{duration}}" renders as the number the Integer field declares; the absent tid
    // is omitted.
    assert_eq!(
        req.body,
        Some(
            json!({"time_entry": {"description": "Write \"report\"", "start": "2025-01-10T09:00:00Z",
            "duration": 3600, "pid": 700001, "tags": ["a", "b"]}})
        )
    );
    assert_eq!(
        join_url(&c.service.base_url, &req.path),
        "https://api.track.toggl.com/api/v9/me/time_entries"
    );
    let list = c.operation("time_entries", "list").expect("list");
    let req = list
        .render(&Params::new().with("start_date", "2025-01-01"))
        .expect("renders");
    assert_eq!(
        req.query,
        vec![("start_date".to_owned(), "2025-01-01".to_owned())]
    );
    let read = c.operation("projects", "read").expect("read");
    let err = read
        .render(&Params::new().with("id", 1))
        .expect_err("must fail");
    assert_eq!(err.to_string(), "missing required parameter workspace_id");
}

#[test]
fn seed_selectors_flatten_records() {
    let c = Connector::load_files(&seed_paths())
        .expect("loads")
        .connector;
    let te = c.resource("time_entries").expect("resource");
    let rec = te.flatten(
        &json!({"id": 1, "description": "x", "duration": -1, "tags": ["a", "b"], "pid": null}),
    );
    assert_eq!(rec["tags_0"], json!(["a", "b"]));
    assert_eq!(rec["tid"], serde_json::Value::Null);
    let names: Vec<&str> = rec.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "id",
            "description",
            "start",
            "stop",
            "duration",
            "pid",
            "tid",
            "tags_0"
        ]
    );
    let ev = c.webhook_resource("time_entry", "created").expect("routed");
    assert_eq!(ev.name, "time_entries");
}
