//! The three pagination strategies against a scripted server.

mod common;

use common::{Reply, TestServer, config};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};
use toggl_connect_client::{ApiRequest, Client, ClientError, Pagination};

fn query_param(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test]
async fn page_per_page_walks_1050_records_in_pages_of_200() {
    const TOTAL: u64 = 1050;
    let server = TestServer::start(|r, _| {
        let page = query_param(r.query.as_deref(), "page").expect("page");
        let per_page = query_param(r.query.as_deref(), "per_page").expect("per_page");
        let start = (page - 1) * per_page;
        let records: Vec<Value> = (start..(start + per_page).min(TOTAL))
            .map(|i| json!({"id": 3_000_000_000_u64 + i}))
            .collect();
        Reply::json(200, Value::Array(records))
    })
    .await;
    let client = Client::new(config(&server.url)).expect("client");
    let records: Vec<Value> = client
        .paginate(
            ApiRequest::get("/api/v9/workspaces/1/projects").with_query("active", "both"),
            Pagination::page_per_page(200),
        )
        .try_collect()
        .await
        .expect("all pages");
    assert_eq!(records.len(), 1050);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["id"], json!(3_000_000_000_u64 + i as u64));
    }
    let rec = server.recorded();
    assert_eq!(rec.len(), 6, "5 full pages and one short one");
    assert_eq!(
        rec[0].query.as_deref(),
        Some("active=both&page=1&per_page=200")
    );
}

#[tokio::test]
async fn pages_are_fetched_only_when_consumed() {
    let server = TestServer::start(|_, i| {
        Reply::json(200, json!((0..10).map(|j| i * 10 + j).collect::<Vec<_>>()))
    })
    .await;
    let client = Client::new(config(&server.url)).expect("client");
    let mut stream = Box::pin(client.paginate(
        ApiRequest::get("/api/v9/workspaces/1/tags"),
        Pagination::page_per_page(10),
    ));
    for expected in 0..15 {
        assert_eq!(
            stream.next().await.expect("item").expect("ok"),
            json!(expected)
        );
    }
    assert_eq!(
        server.count(),
        2,
        "only the pages consumed so far were fetched"
    );
}

#[tokio::test]
async fn a_server_ignoring_the_page_parameter_is_detected() {
    let server = TestServer::script(vec![Reply::json(200, json!([1, 2]))]).await;
    let client = Client::new(config(&server.url)).expect("client");
    let err = client
        .paginate(
            ApiRequest::get("/api/v9/workspaces/1/tags"),
            Pagination::page_per_page(2),
        )
        .try_collect::<Vec<_>>()
        .await
        .expect_err("loop detected");
    assert!(matches!(err, ClientError::Decode { .. }), "{err:#}");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn reports_cursor_follows_next_id_headers_over_three_pages() {
    let server = TestServer::start(|r, i| {
        let rows = |from: u64| json!([{"row_number": from}, {"row_number": from + 1}]);
        let _ = r;
        match i {
            0 => Reply::json(200, rows(1))
                .header("X-Next-ID", "4100000002")
                .header("X-Next-Row-Number", "3"),
            1 => Reply::json(200, rows(3))
                .header("X-Next-ID", "4100000004")
                .header("X-Next-Row-Number", "5"),
            _ => Reply::json(200, json!([{"row_number": 5}])),
        }
    })
    .await;
    let client = Client::new(config(&server.url)).expect("client");
    let req = ApiRequest::post(
        "/reports/api/v3/workspace/1/search/time_entries",
        json!({"start_date": "2025-01-01", "end_date": "2025-02-01"}),
    )
    .idempotent(true);
    let pages: Vec<_> = client
        .paginate_pages(req, Pagination::ReportsCursor { page_size: Some(2) })
        .try_collect()
        .await
        .expect("three pages");
    assert_eq!(
        pages.iter().map(|p| p.records.len()).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    let bodies: Vec<Value> = server
        .recorded()
        .iter()
        .map(common::Recorded::json)
        .collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(
        bodies[0],
        json!({"start_date": "2025-01-01", "end_date": "2025-02-01", "page_size": 2})
    );
    // Cursor values go back as JSON integers, never strings.
    assert_eq!(bodies[1]["first_id"], json!(4_100_000_002_u64));
    assert_eq!(bodies[1]["first_row_number"], json!(3));
    assert_eq!(bodies[2]["first_id"], json!(4_100_000_004_u64));
    assert_eq!(bodies[2]["first_row_number"], json!(5));
    assert_eq!(bodies[2]["start_date"], json!("2025-01-01"));
}

#[tokio::test]
async fn envelope_pages_until_total_count() {
    let server = TestServer::start(|r, _| {
        let page = query_param(r.query.as_deref(), "page").expect("page");
        let data: Vec<Value> = (0..50)
            .map(|i| json!({"id": (page - 1) * 50 + i}))
            .collect();
        Reply::json(
            200,
            json!({"data": data, "page": page, "per_page": 50, "total_count": 100,
                   "sort_field": "name", "sort_order": "ASC"}),
        )
    })
    .await;
    let client = Client::new(config(&server.url)).expect("client");
    let records: Vec<Value> = client
        .paginate(
            ApiRequest::get("/api/v9/workspaces/1/tasks"),
            Pagination::envelope("data", 50),
        )
        .try_collect()
        .await
        .expect("two pages");
    assert_eq!(records.len(), 100);
    assert_eq!(records[99]["id"], json!(99));
    assert_eq!(server.count(), 2, "total_count reached: no third request");
}

#[tokio::test]
async fn envelope_with_wrong_shape_is_a_decode_error() {
    let server = TestServer::script(vec![Reply::json(200, json!([1, 2, 3]))]).await;
    let client = Client::new(config(&server.url)).expect("client");
    let err = client
        .paginate(
            ApiRequest::get("/api/v9/workspaces/1/tasks"),
            Pagination::envelope("data", 50),
        )
        .try_collect::<Vec<_>>()
        .await
        .expect_err("not an envelope");
    assert!(matches!(err, ClientError::Decode { .. }), "{err:#}");
}
