//! The built-in definition: compiles with zero diagnostics, and every operation renders to the
//! exact request Toggl expects (snapshots under tests/snapshots/).

use serde_json::{Value, json};
use toggl_connect_definition::{
    BUILTIN_JSON, Connector, Method, ParamSpec, ParamType, Params, RawDefinition, compile, join_url,
};

/// A representative value for a parameter: realistic for well-known names, else by type.
fn sample(spec: &ParamSpec) -> Value {
    match spec.name.as_str() {
        "workspace_id" => json!(9_000_001),
        "organization_id" => json!(8_000_001),
        "project_id" => json!(700_001),
        "id" => json!(4_100_000_001_i64),
        "workspace_user_id" => json!(6_000_001),
        "subscription_id" => json!(42),
        "user_id" => json!(5_000_001),
        "start" => json!("2025-01-10T09:00:00Z"),
        "stop" => json!("2025-01-10T10:00:00Z"),
        "start_date" => json!("2025-01-01"),
        "end_date" => json!("2025-01-31"),
        "duration" => json!(3600),
        "emails" => json!(["ann@example.test", "bob@example.test"]),
        "event_filters" => json!([{"entity": "time_entry", "action": "*"}]),
        "url_callback" => json!("https://example.test/hooks/toggl"),
        "role" => json!("projectlead"),
        "color" => json!("#d92b2b"),
        "validation_code" => json!("0f3c/9?x"),
        "tag_action" => json!("add"),
        "created_with" => json!("my-app"),
        "status" => json!("both"),
        "teDeletionMode" => json!("unassign"),
        "order_by" => json!("date"),
        "order_dir" => json!("DESC"),
        "since" => json!(1_736_499_600),
        "pid" => json!(700_001),
        "timezone" => json!("Europe/Tallinn"),
        "email" => json!("ann@example.test"),
        "secret" => json!("s3cr3t"),
        "name" | "description" | "search" | "notes" | "fullname" => {
            json!(format!("{} \"quoted\" \\ {{{{x}}}}", spec.name))
        }
        "active" if spec.ty == ParamType::String => json!("both"),
        _ => match spec.ty {
            ParamType::Integer => json!(11),
            ParamType::Number => json!(12.5),
            ParamType::Boolean => json!(true),
            ParamType::String => json!(format!("{} \"quoted\"", spec.name)),
            ParamType::DateTime => json!("2025-01-10T09:00:00Z"),
            ParamType::Array => json!(["alpha", "beta"]),
            ParamType::IntegerArray => json!([1, 2]),
            ParamType::Object => json!({"k": "v"}),
        },
    }
}

#[test]
fn builtin_compiles_with_zero_diagnostics() {
    let raw = RawDefinition::from_json(BUILTIN_JSON).expect("parses");
    let compiled = match compile(&raw) {
        Ok(c) => c,
        Err(e) => panic!(
            "{}",
            e.diagnostics
                .iter()
                .map(|d| format!("{d}\n"))
                .collect::<String>()
        ),
    };
    let text: Vec<String> = compiled
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(text.is_empty(), "{}", text.join("\n"));
}

#[test]
fn every_operation_renders() {
    let c = Connector::builtin();
    let mut out = String::new();
    for r in &c.resources {
        for op in &r.operations {
            let required: Params = op
                .params
                .iter()
                .filter(|s| s.required)
                .map(|s| (s.name.clone(), sample(s)))
                .collect();
            let all: Params = op
                .params
                .iter()
                .map(|s| (s.name.clone(), sample(s)))
                .collect();
            for (label, params) in [("required", required), ("all", all)] {
                let req = op
                    .render(&params)
                    .unwrap_or_else(|e| panic!("{}.{} ({label}): {e}", r.name, op.name));
                assert!(req.path.starts_with('/'));
                assert!(!req.path.contains("{{"), "{}", req.path);
                out.push_str(&format!(
                    "## {}.{} ({label} params)\n{} {}\nquery: {}\nbody: {}\n\n",
                    r.name,
                    op.name,
                    req.method,
                    req.path,
                    serde_json::to_string(&req.query).expect("json"),
                    req.body
                        .as_ref()
                        .map_or("(none)".to_owned(), |b| serde_json::to_string_pretty(b)
                            .expect("json")),
                ));
            }
        }
    }
    insta::assert_snapshot!("builtin_rendered_requests", out);
}

#[test]
fn time_entry_writes_are_workspace_scoped_and_flat() {
    let c = Connector::builtin();
    let op = c.operation("time_entries", "create").expect("op");
    let p = Params::from_text_pairs(
        &[
            ("workspace_id", "9000001"),
            ("start", "2025-01-10T09:00:00Z"),
            ("duration", "3600"),
            ("description", "Write report"),
        ],
        &op.params,
    )
    .expect("typed");
    let req = op.render(&p).expect("renders");
    assert_eq!(req.method, Method::Post);
    assert_eq!(req.path, "/api/v9/workspaces/9000001/time_entries");
    assert_eq!(
        req.body,
        Some(
            json!({"created_with": "toggl-connect", "workspace_id": 9_000_001,
            "description": "Write report", "start": "2025-01-10T09:00:00Z", "duration": 3600})
        )
    );
    assert!(!req.idempotent, "a POST create is not blindly retryable");

    let start = c.action("start-timer").expect("action");
    let req = c
        .render_action(
            start,
            &Params::new()
                .with("workspace_id", 9_000_001)
                .with("start", "2025-01-10T09:00:00Z"),
        )
        .expect("renders");
    assert_eq!(
        req.body.as_ref().and_then(|b| b.get("duration")),
        Some(&json!(-1))
    );

    let stop = c.action("stop-timer").expect("action");
    let err = c
        .render_action(stop, &Params::new().with("workspace_id", 1))
        .expect_err("must fail");
    assert_eq!(err.to_string(), "missing required parameter id");
}

#[test]
fn wrong_types_fail_before_any_request() {
    let c = Connector::builtin();
    let op = c.operation("clients", "create").expect("op");
    let err =
        Params::from_text_pairs(&[("workspace_id", "abc")], &op.params).expect_err("must fail");
    assert_eq!(
        err.to_string(),
        r#"parameter workspace_id: expected an integer, got "abc""#
    );
    let err = op
        .render(&Params::new().with("workspace_id", "abc").with("name", "x"))
        .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        r#"parameter workspace_id: expected an integer, got "abc""#
    );
    let err = op.render(&Params::new()).expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "missing required parameters workspace_id, name"
    );
    let err = op
        .render(
            &Params::new()
                .with("workspace_id", 1)
                .with("name", "x")
                .with("nmae", "y"),
        )
        .expect_err("must fail");
    assert!(
        err.to_string().starts_with("unknown parameter nmae"),
        "{err}"
    );
}

#[test]
fn required_actions_and_pagination_are_declared() {
    let c = Connector::builtin();
    for name in [
        "create-client",
        "create-user-invitation",
        "add-project-member",
        "create-task",
        "create-project",
        "create-tag",
        "create-time-entry",
        "start-timer",
        "stop-timer",
    ] {
        let a = c.action(name).unwrap_or_else(|| panic!("action {name}"));
        assert!(c.action_operation(a).is_some(), "{name}");
    }
    use toggl_connect_definition::Pagination;
    assert!(matches!(
        c.operation("projects", "list")
            .and_then(|o| o.pagination.clone()),
        Some(Pagination::PagePerPage { per_page: 200, .. })
    ));
    assert!(matches!(
        c.operation("tasks", "list_workspace")
            .and_then(|o| o.pagination.clone()),
        Some(Pagination::Envelope { .. })
    ));
    assert!(matches!(
        c.operation("reports", "search_time_entries")
            .and_then(|o| o.pagination.clone()),
        Some(Pagination::ReportsCursor { .. })
    ));
    let search = c.operation("reports", "search_time_entries").expect("op");
    assert_eq!(
        join_url(
            &c.service.base_url,
            &search
                .render(
                    &Params::new()
                        .with("workspace_id", 1)
                        .with("start_date", "2025-01-01")
                )
                .expect("r")
                .path
        ),
        "https://api.track.toggl.com/reports/api/v3/workspace/1/search/time_entries"
    );
    // Every resource flattens records through its fields.
    for r in &c.resources {
        assert!(!r.fields.is_empty(), "{} has fields", r.name);
    }
    assert_eq!(
        c.webhook_resource("project_user", "created")
            .map(|r| r.name.as_str()),
        Some("project_users")
    );
}

#[test]
fn auth_renders_basic_credentials() {
    let c = Connector::builtin();
    let creds = c
        .service
        .auth
        .basic_credentials(&|n| (n == "apiToken").then(|| "tok".to_owned()))
        .expect("renders");
    assert_eq!(creds, Some(("tok".to_owned(), "api_token".to_owned())));
}

#[test]
fn builtin_summary() {
    insta::assert_json_snapshot!("builtin_summary", Connector::builtin().summary());
}

#[test]
fn summary_serializes() {
    let v = serde_json::to_value(Connector::builtin()).expect("serializable");
    assert_eq!(v["service"]["base_url"], "https://api.track.toggl.com");
    assert!(v["resources"].as_array().is_some_and(|r| r.len() >= 14));
}

#[test]
fn responses_flatten_into_records() {
    let c = Connector::builtin();
    // Shape of a recorded time entry (values invented), as in the reference.
    let te = json!({"id":4_100_000_001_i64,"workspace_id":9_000_001,"project_id":null,"task_id":null,
        "billable":false,"start":"2025-01-10T09:00:00Z","stop":null,"duration":-1,
        "description":"Write report","tags":null,"tag_ids":null,"duronly":true,
        "at":"2025-01-10T09:00:00.123456Z","server_deleted_at":null,"user_id":5_000_001,
        "uid":5_000_001,"wid":9_000_001});
    let r = c.resource("time_entries").expect("resource");
    let rec = r.flatten(&te);
    assert_eq!(rec["id"], json!(4_100_000_001_i64));
    assert_eq!(rec["duration"], json!(-1));
    assert_eq!(rec["tags"], json!([]), "null tags flatten to an empty list");
    assert_eq!(rec.len(), r.fields.len());

    let tasks = c.resource("tasks").expect("resource");
    let op = tasks.operation("list_workspace").expect("op");
    let body = json!({"data":[{"id":1,"name":"a"},{"id":2,"name":"b"}],"page":1,"per_page":50,
        "sort_field":"name","sort_order":"asc","total_count":2});
    let names: Vec<Value> = op
        .response
        .items(&body)
        .into_iter()
        .map(|i| tasks.flatten(i)["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("a"), json!("b")]);

    let reports = c.resource("reports").expect("resource");
    let row = json!({"user_id":5_000_001,"username":"Ann","project_id":700_001,"project_name":"Site",
        "description":"Write report","billable":false,"tag_names":["x","y"],"row_number":1,
        "time_entries":[{"id":41,"seconds":3600,"start":"2025-01-10T09:00:00+00:00"},
                        {"id":42,"seconds":60,"start":"2025-01-10T11:00:00+00:00"}]});
    let rec = reports.flatten(&row);
    assert_eq!(rec["time_entry_ids"], json!([41, 42]));
    assert_eq!(rec["seconds"], json!([3600, 60]));
    assert_eq!(rec["tag_names"], json!(["x", "y"]));
    assert_eq!(reports.flatten_all(&json!([row.clone(), row])).len(), 2);

    let current = c.operation("time_entries", "current").expect("op");
    assert!(current.response.items(&Value::Null).is_empty());
}
