//! Every key of each recorded response object must be served by the sandbox for the same
//! endpoint, with the same JSON type (a recorded `null` matches anything). See
//! `tests/fixtures/SOURCES.md` for where the recordings come from.

mod common;

use common::Env;
use serde_json::{Value, json};

const ME: &str = include_str!("fixtures/me.recorded.json");
const CREATE: &str = include_str!("fixtures/time_entry_create.recorded.json");
const LIST: &str = include_str!("fixtures/time_entries_list.recorded.json");

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Collects shape differences of `actual` against `recorded`.
fn shape_diff(recorded: &Value, actual: &Value, at: &str, out: &mut Vec<String>) {
    if recorded.is_null() {
        return;
    }
    if kind(recorded) != kind(actual) {
        out.push(format!(
            "{at}: recorded {} but served {}",
            kind(recorded),
            kind(actual)
        ));
        return;
    }
    match (recorded, actual) {
        (Value::Object(r), Value::Object(a)) => {
            for (k, rv) in r {
                match a.get(k) {
                    None => out.push(format!("{at}.{k}: missing")),
                    Some(av) => shape_diff(rv, av, &format!("{at}.{k}"), out),
                }
            }
        }
        (Value::Array(r), Value::Array(a)) => {
            if let (Some(r0), Some(a0)) = (r.first(), a.first()) {
                shape_diff(r0, a0, &format!("{at}[0]"), out);
            }
        }
        _ => {}
    }
}

#[track_caller]
fn assert_shape(recorded: &Value, actual: &Value, what: &str) {
    let mut diffs = Vec::new();
    shape_diff(recorded, actual, what, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what} differs from the recording:\n{}\nserved: {actual}",
        diffs.join("\n")
    );
}

#[test]
fn the_shape_check_can_fail() {
    let recorded = json!({"a": 1, "b": "x", "c": null, "d": ["t"]});
    let mut diffs = Vec::new();
    shape_diff(
        &recorded,
        &json!({"a": "1", "c": 5, "d": [1]}),
        "o",
        &mut diffs,
    );
    assert_eq!(
        diffs,
        vec![
            "o.a: recorded number but served string".to_owned(),
            "o.b: missing".to_owned(),
            "o.d[0]: recorded string but served number".to_owned(),
        ]
    );
    let mut diffs = Vec::new();
    shape_diff(&json!({"a": 1}), &json!({"a": null}), "o", &mut diffs);
    assert_eq!(
        diffs.len(),
        1,
        "null served where the recording has a value"
    );
}

#[tokio::test]
async fn get_me_matches_recording() {
    let env = Env::start().await;
    let recorded: Value = serde_json::from_str(ME).expect("fixture");
    let served = env.get("/me").await.json;
    assert_shape(&recorded, &served, "GET /me");
}

#[tokio::test]
async fn create_running_entry_matches_recording() {
    let env = Env::start().await;
    let recorded: Value = serde_json::from_str(CREATE).expect("fixture");
    let wid = env.wid();
    let body = json!({"created_with":"fixture","start":"2025-01-10T09:00:00Z","workspace_id":wid,
                      "duration":-1,"description":"Write report"});
    let served = env
        .post(
            &format!("/workspaces/{wid}/time_entries"),
            &body.to_string(),
        )
        .await
        .json;
    assert_shape(&recorded, &served, "POST time_entries");
    assert_eq!(served["duration"], json!(-1));
    // Same timestamp forms as the recording.
    assert_eq!(served["start"], json!("2025-01-10T09:00:00Z"));
    let at = served["at"].as_str().expect("at");
    assert_eq!(at.len(), "2025-01-10T09:00:00.123456Z".len(), "{at}");
}

#[tokio::test]
async fn time_entry_list_matches_recording() {
    let env = Env::start().await;
    let recorded: Value = serde_json::from_str(LIST).expect("fixture");
    let wid = env.wid();
    let project = env.get(&format!("/workspaces/{wid}/projects")).await.json[0]["id"].clone();
    for (start, tags) in [
        ("2024-02-04T21:42:16Z", json!(["type:support/problem"])),
        ("2024-02-03T18:07:12Z", json!([])),
    ] {
        let body = json!({"created_with":"fixture","start":start,"workspace_id":wid,"duration":4663,
                          "project_id":project,"description":"How to test","tags":tags});
        let r = env
            .post(
                &format!("/workspaces/{wid}/time_entries"),
                &body.to_string(),
            )
            .await;
        assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.text);
    }
    let served = env
        .get("/me/time_entries?start_date=2024-02-03T00%3A00%3A00Z&end_date=2024-02-05T00%3A00%3A00Z")
        .await
        .json;
    let served = served.as_array().expect("list");
    assert_eq!(served.len(), 2);
    for (i, rec) in recorded
        .as_array()
        .expect("recorded list")
        .iter()
        .enumerate()
    {
        // Compare with the served entry that has tags when the recording has some.
        let has_tags = rec["tags"].as_array().is_some_and(|t| !t.is_empty());
        let candidate = served
            .iter()
            .find(|e| e["tags"].as_array().is_some_and(|t| !t.is_empty()) == has_tags)
            .expect("a served entry of the same kind");
        assert_shape(rec, candidate, &format!("GET /me/time_entries[{i}]"));
    }
    // Same timestamp forms as the recording.
    assert!(
        served[0]["start"]
            .as_str()
            .expect("start")
            .ends_with("+00:00")
    );
    assert!(served[0]["at"].as_str().expect("at").ends_with("+00:00"));
}
