//! The Reports v3 detailed report over real HTTP on 127.0.0.1:0, with a fake data source.

use std::collections::HashSet;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Duration, TimeZone, Utc};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use toggl_connect_sandbox::reports::{
    Named, ReportData, ReportEntry, ReportProject, ReportUser, ReportsSource, router,
};

const WS: i64 = 9_000_001;
const ADMIN: i64 = 5_000_001;
const MEMBER: i64 = 5_000_002;
const P_SITE: i64 = 700_001;
const P_INTERNAL: i64 = 700_002;
const CLIENT: i64 = 800_001;
const TAG_A: i64 = 900_001;
const TAG_B: i64 = 900_002;
const TASK: i64 = 600_001;

struct FakeSource {
    premium: bool,
    entries: Vec<ReportEntry>,
}

impl ReportsSource for FakeSource {
    fn authenticate(&self, headers: &HeaderMap) -> Result<i64, Response> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(StatusCode::UNAUTHORIZED.into_response());
        };
        let decoded = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        match decoded.as_str() {
            "admin:api_token" => Ok(ADMIN),
            "member:api_token" => Ok(MEMBER),
            "outsider:api_token" => Ok(42),
            _ => Err(StatusCode::FORBIDDEN.into_response()),
        }
    }

    fn report_data(&self, user_id: i64, workspace_id: i64) -> Option<ReportData> {
        if workspace_id != WS || !(user_id == ADMIN || user_id == MEMBER) {
            return None;
        }
        Some(ReportData {
            is_admin: user_id == ADMIN,
            premium: self.premium,
            timezone: if user_id == ADMIN {
                "UTC"
            } else {
                "Europe/Berlin"
            }
            .to_owned(),
            currency: "USD".to_owned(),
            default_hourly_rate: Some(50.0),
            users: vec![
                ReportUser {
                    id: ADMIN,
                    fullname: "Ann".to_owned(),
                    email: "ann@example.test".to_owned(),
                    toggl_accounts_id: "acc-ann".to_owned(),
                    hourly_rate: None,
                },
                ReportUser {
                    id: MEMBER,
                    fullname: "Bob".to_owned(),
                    email: "bob@example.test".to_owned(),
                    toggl_accounts_id: "acc-bob".to_owned(),
                    hourly_rate: Some(20.0),
                },
            ],
            projects: vec![
                ReportProject {
                    id: P_SITE,
                    name: "Site".to_owned(),
                    color: "#d92b2b".to_owned(),
                    client_id: Some(CLIENT),
                    rate: Some(100.0),
                    currency: None,
                },
                ReportProject {
                    id: P_INTERNAL,
                    name: "Internal".to_owned(),
                    color: "#06aaf5".to_owned(),
                    client_id: None,
                    rate: None,
                    currency: None,
                },
            ],
            clients: vec![Named {
                id: CLIENT,
                name: "Acme".to_owned(),
            }],
            tasks: vec![Named {
                id: TASK,
                name: "Design".to_owned(),
            }],
            tags: vec![
                Named {
                    id: TAG_A,
                    name: "a".to_owned(),
                },
                Named {
                    id: TAG_B,
                    name: "b".to_owned(),
                },
            ],
            time_entries: self.entries.clone(),
        })
    }
}

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, day, hour, minute, 0)
        .single()
        .expect("valid time")
}

#[allow(clippy::too_many_arguments)]
fn entry(
    id: i64,
    user_id: i64,
    start: DateTime<Utc>,
    minutes: i64,
    project_id: Option<i64>,
    description: &str,
    tag_ids: &[i64],
    billable: bool,
) -> ReportEntry {
    ReportEntry {
        id,
        user_id,
        project_id,
        task_id: None,
        billable,
        description: description.to_owned(),
        tag_ids: tag_ids.to_vec(),
        start,
        stop: start + Duration::minutes(minutes),
        at: start + Duration::minutes(minutes) + Duration::seconds(1),
    }
}

/// A small, varied data set on 2025-01-10 .. 2025-01-12.
fn varied() -> Vec<ReportEntry> {
    let mut task_entry = entry(
        4_100_000_005,
        ADMIN,
        at(11, 9, 0),
        30,
        Some(P_SITE),
        "Mock-ups",
        &[],
        false,
    );
    task_entry.task_id = Some(TASK);
    vec![
        entry(
            4_100_000_001,
            ADMIN,
            at(10, 9, 0),
            60,
            Some(P_SITE),
            "Write report",
            &[TAG_A],
            true,
        ),
        entry(
            4_100_000_002,
            ADMIN,
            at(10, 11, 0),
            30,
            Some(P_INTERNAL),
            "standup",
            &[],
            false,
        ),
        entry(
            4_100_000_003,
            MEMBER,
            at(10, 12, 0),
            90,
            None,
            "Write REPORT draft",
            &[TAG_B],
            false,
        ),
        entry(
            4_100_000_004,
            ADMIN,
            at(10, 14, 0),
            15,
            Some(P_SITE),
            "Write report",
            &[TAG_A],
            true,
        ),
        task_entry,
        // 23:59 on the 12th is inside an end_date of the 12th; midnight on the 13th is not.
        entry(
            4_100_000_006,
            ADMIN,
            at(12, 23, 59),
            1,
            None,
            "late",
            &[],
            false,
        ),
        entry(
            4_100_000_007,
            ADMIN,
            at(13, 0, 0),
            10,
            None,
            "next day",
            &[],
            false,
        ),
    ]
}

async fn serve(source: FakeSource) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::new(source));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}/reports/api/v3/workspace")
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn search_raw(base: &str, token: Option<&str>, wid: &str, body: Option<Value>) -> Answer {
    let mut req = reqwest::Client::new().post(format!("{base}/{wid}/search/time_entries"));
    if let Some(token) = token {
        req = req.basic_auth(token, Some("api_token"));
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn search(base: &str, body: Value) -> Answer {
    search_raw(base, Some("admin"), &WS.to_string(), Some(body)).await
}

fn ids(rows: &Value) -> Vec<i64> {
    rows.as_array()
        .expect("array of rows")
        .iter()
        .flat_map(|r| r["time_entries"].as_array().expect("entries").clone())
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

fn range() -> Value {
    json!({"start_date": "2025-01-10", "end_date": "2025-01-12"})
}

fn with(extra: Value) -> Value {
    let mut body = range();
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn requests_are_checked_like_toggl() {
    let base = serve(FakeSource {
        premium: false,
        entries: varied(),
    })
    .await;
    let wid = WS.to_string();
    for body in [None, Some(json!({})), Some(json!({"description": null}))] {
        let a = search_raw(&base, Some("admin"), &wid, body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(a.body, json!("At least one parameter must be set"));
    }
    let cases = [
        (
            json!({"order_by": "project"}),
            "Invalid 'order_by' value, allowed values are: 'date, user, duration, description, last_update'",
        ),
        (
            json!({"order_dir": "UP"}),
            "Invalid 'order_dir' value, allowed values are: 'ASC, DESC'",
        ),
        (
            json!({"start_date": "10/01/2025"}),
            "Invalid 'start_date' value, allowed values are: 'YYYY-MM-DD'",
        ),
        (
            json!({"user_ids": ["5000001"]}),
            "Unexpected \"user_ids\" type string",
        ),
        (
            json!({"page_size": "50"}),
            "Unexpected \"page_size\" type string",
        ),
        (
            json!({"page_size": 0}),
            "Invalid 'page_size' value, allowed values are: '1-50'",
        ),
        (
            json!({"rounding_minutes": 7}),
            "Invalid 'rounding_minutes' value, allowed values are: '0, 1, 5, 6, 10, 12, 15, 30, 60, 240'",
        ),
        (
            json!({"start_date": "2025-01-12", "end_date": "2025-01-10"}),
            "end_date must not be earlier than start_date",
        ),
    ];
    for (body, expected) in cases {
        let a = search(&base, body.clone()).await;
        assert_eq!(
            (a.status, a.body),
            (StatusCode::BAD_REQUEST, json!(expected)),
            "{body}"
        );
    }
    let a = search_raw(&base, Some("admin"), "abc", Some(range())).await;
    assert_eq!(
        (a.status, a.body),
        (StatusCode::BAD_REQUEST, json!("Invalid workspace id"))
    );
    let a = search_raw(&base, Some("outsider"), &wid, Some(range())).await;
    assert_eq!(
        (a.status, a.body),
        (
            StatusCode::FORBIDDEN,
            json!("Workspace not found/accessible")
        )
    );
    let a = search_raw(&base, None, &wid, Some(range())).await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "the source's response is passed through"
    );
    let a = search(&base, with(json!({"billable": true}))).await;
    assert_eq!(
        (a.status, a.body),
        (
            StatusCode::PAYMENT_REQUIRED,
            json!("Workspace needs to have this feature enabled")
        )
    );
}

#[tokio::test]
async fn rows_have_toggls_shape_and_amounts() {
    let base = serve(FakeSource {
        premium: true,
        entries: varied(),
    })
    .await;
    let a = search(&base, range()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.headers["x-range-start"], "2025-01-10");
    assert_eq!(a.headers["x-range-end"], "2025-01-12");
    assert!(!a.headers.contains_key("x-next-id"), "one page only");
    assert!(!a.headers.contains_key("x-next-row-number"));
    assert_eq!(
        ids(&a.body),
        [
            4_100_000_001,
            4_100_000_002,
            4_100_000_003,
            4_100_000_004,
            4_100_000_005,
            4_100_000_006
        ],
        "date ascending; the 13th is outside the inclusive range"
    );
    let first = &a.body[0];
    let keys: Vec<&String> = first.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "user_id",
            "username",
            "email",
            "toggl_accounts_id",
            "project_id",
            "project_name",
            "project_color",
            "project_hex",
            "client_name",
            "task_id",
            "task_name",
            "description",
            "billable",
            "tag_ids",
            "tag_names",
            "currency",
            "hourly_rate_in_cents",
            "billable_amount_in_cents",
            "row_number",
            "time_entries"
        ]
    );
    assert_eq!(
        first,
        &json!({
            "user_id": ADMIN, "username": "Ann", "email": "ann@example.test",
            "toggl_accounts_id": "acc-ann", "project_id": P_SITE, "project_name": "Site",
            "project_color": "#d92b2b", "project_hex": "#d92b2b", "client_name": "Acme",
            "task_id": null, "task_name": null, "description": "Write report", "billable": true,
            "tag_ids": [TAG_A], "tag_names": ["a"], "currency": "USD",
            "hourly_rate_in_cents": 10000, "billable_amount_in_cents": 10000, "row_number": 1,
            "time_entries": [{
                "id": 4_100_000_001_i64, "seconds": 3600, "start": "2025-01-10T09:00:00+00:00",
                "stop": "2025-01-10T10:00:00+00:00", "at": "2025-01-10T10:00:01+00:00",
                "at_tz": "2025-01-10T10:00:01+00:00"
            }]
        })
    );
    // Non-billable with a rate: rate shown, no amount. Member rate beats the workspace default.
    assert_eq!(a.body[1]["hourly_rate_in_cents"], 5000);
    assert!(a.body[1]["billable_amount_in_cents"].is_null());
    assert_eq!(a.body[2]["hourly_rate_in_cents"], 2000);
    assert!(a.body[2]["project_id"].is_null() && a.body[2]["client_name"].is_null());
    assert_eq!(a.body[4]["task_name"], "Design");
    let rows: Vec<i64> = a
        .body
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["row_number"].as_i64().expect("n"))
        .collect();
    assert_eq!(rows, [1, 2, 3, 4, 5, 6]);

    let hidden = search(&base, with(json!({"hide_amounts": true}))).await;
    assert!(hidden.body[0]["hourly_rate_in_cents"].is_null());
    assert!(hidden.body[0]["billable_amount_in_cents"].is_null());
}

#[tokio::test]
async fn filters_select_entries() {
    let base = serve(FakeSource {
        premium: true,
        entries: varied(),
    })
    .await;
    let cases = [
        (
            json!({"project_ids": [null]}),
            vec![4_100_000_003, 4_100_000_006],
        ),
        (
            json!({"project_ids": [null, P_INTERNAL]}),
            vec![4_100_000_002, 4_100_000_003, 4_100_000_006],
        ),
        (
            json!({"client_ids": [CLIENT]}),
            vec![4_100_000_001, 4_100_000_004, 4_100_000_005],
        ),
        (
            json!({"client_ids": [null]}),
            vec![4_100_000_002, 4_100_000_003, 4_100_000_006],
        ),
        (json!({"tag_ids": [TAG_B]}), vec![4_100_000_003]),
        (
            json!({"tag_ids": [null]}),
            vec![4_100_000_002, 4_100_000_005, 4_100_000_006],
        ),
        (json!({"task_ids": [TASK]}), vec![4_100_000_005]),
        (json!({"user_ids": [MEMBER]}), vec![4_100_000_003]),
        (
            json!({"time_entry_ids": [4_100_000_004_i64, 4_100_000_007_i64]}),
            vec![4_100_000_004],
        ),
        (
            json!({"description": "write report"}),
            vec![4_100_000_001, 4_100_000_003, 4_100_000_004],
        ),
        (
            json!({"billable": true}),
            vec![4_100_000_001, 4_100_000_004],
        ),
        (
            json!({"min_duration_seconds": 3600}),
            vec![4_100_000_001, 4_100_000_003],
        ),
        (
            json!({"max_duration_seconds": 900}),
            vec![4_100_000_004, 4_100_000_006],
        ),
        (json!({"group_ids": [1]}), vec![]),
        (
            json!({"startTime": "11:00", "endTime": "14:00"}),
            vec![4_100_000_002, 4_100_000_003],
        ),
    ];
    for (extra, expected) in cases {
        let a = search(&base, with(extra.clone())).await;
        assert_eq!(a.status, StatusCode::OK, "{extra}: {}", a.body);
        assert_eq!(ids(&a.body), expected, "{extra}");
    }
    let a = search(
        &base,
        json!({"start_date": "2025-01-13", "end_date": "2025-01-13"}),
    )
    .await;
    assert_eq!(ids(&a.body), [4_100_000_007], "equal dates are one day");
}

#[tokio::test]
async fn ordering_grouping_rounding_and_visibility() {
    let base = serve(FakeSource {
        premium: true,
        entries: varied(),
    })
    .await;
    let a = search(
        &base,
        with(json!({"order_by": "duration", "order_dir": "desc"})),
    )
    .await;
    assert_eq!(
        ids(&a.body),
        [
            4_100_000_003,
            4_100_000_001,
            4_100_000_005,
            4_100_000_002,
            4_100_000_004,
            4_100_000_006
        ],
        "ties (30 minutes) also reverse: later start first"
    );
    let a = search(
        &base,
        with(json!({"order_by": "user", "order_dir": "DESC"})),
    )
    .await;
    assert_eq!(ids(&a.body)[0], 4_100_000_003, "Bob sorts after Ann");

    let a = search(&base, with(json!({"grouped": true}))).await;
    let rows = a.body.as_array().expect("rows");
    assert_eq!(
        rows.len(),
        5,
        "the two identical 'Write report' entries share a row"
    );
    assert_eq!(ids(&json!([rows[0]])), [4_100_000_001, 4_100_000_004]);
    assert_eq!(
        rows[0]["billable_amount_in_cents"], 12500,
        "75 minutes at 100/h"
    );

    let a = search(&base, with(json!({"rounding": 1, "rounding_minutes": 60}))).await;
    assert_eq!(
        a.body[3]["time_entries"][0]["seconds"], 3600,
        "15 minutes rounded up to an hour"
    );

    // The member sees only their own entry, in their time zone.
    let a = search_raw(&base, Some("member"), &WS.to_string(), Some(range())).await;
    assert_eq!(ids(&a.body), [4_100_000_003]);
    assert_eq!(
        a.body[0]["time_entries"][0]["start"],
        "2025-01-10T13:00:00+01:00"
    );
}

#[tokio::test]
async fn paging_headers_walk_every_row_once() {
    let entries: Vec<ReportEntry> = (0..123)
        .map(|i| {
            entry(
                4_200_000_000 + i,
                ADMIN,
                at(10, 0, 0) + Duration::minutes(i * 10),
                5,
                None,
                "x",
                &[],
                false,
            )
        })
        .collect();
    let base = serve(FakeSource {
        premium: true,
        entries,
    })
    .await;
    let mut seen = Vec::new();
    let mut body = json!({"start_date": "2025-01-10", "end_date": "2025-01-11"});
    let mut pages = Vec::new();
    loop {
        let a = search(&base, body.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let rows = a.body.as_array().expect("rows").clone();
        pages.push(rows.len());
        let expected_first = i64::try_from(seen.len()).expect("small") + 1;
        assert_eq!(
            rows.first().map(|r| r["row_number"].clone()),
            Some(json!(expected_first))
        );
        seen.extend(ids(&a.body));
        let (Some(next_id), Some(next_row)) = (
            a.headers.get("x-next-id"),
            a.headers.get("x-next-row-number"),
        ) else {
            assert!(
                !a.headers.contains_key("x-next-id")
                    && !a.headers.contains_key("x-next-row-number")
            );
            break;
        };
        let next_id: i64 = next_id.to_str().expect("ascii").parse().expect("int");
        let next_row: i64 = next_row.to_str().expect("ascii").parse().expect("int");
        assert_eq!(
            next_row,
            expected_first + i64::try_from(rows.len()).expect("small")
        );
        body["first_id"] = json!(next_id);
        body["first_row_number"] = json!(next_row);
    }
    assert_eq!(pages, [50, 50, 23], "default and maximum page size is 50");
    assert_eq!(
        seen,
        (0..123).map(|i| 4_200_000_000 + i).collect::<Vec<_>>()
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 123);

    let a = search(
        &base,
        json!({"start_date": "2025-01-10", "end_date": "2025-01-11", "page_size": 500}),
    )
    .await;
    assert_eq!(
        a.body.as_array().expect("rows").len(),
        50,
        "page_size is capped"
    );
    let a = search(&base, json!({"start_date": "2025-01-10", "end_date": "2025-01-11", "page_size": 10, "first_row_number": 121})).await;
    assert_eq!(ids(&a.body), [4_200_000_120, 4_200_000_121, 4_200_000_122]);
    assert!(!a.headers.contains_key("x-next-id"));
}
