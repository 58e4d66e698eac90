//! Client-side pacing between request starts, shared by clones.

mod common;

use std::time::Duration;

use common::{Reply, TestServer, config};
use serde_json::json;
use toggl_connect_client::{ApiRequest, Client};

#[tokio::test]
async fn clones_share_one_pacer() {
    let server = TestServer::script(vec![Reply::json(200, json!({}))]).await;
    let mut cfg = config(&server.url);
    let interval = Duration::from_millis(200);
    cfg.pacing = Some(interval);
    let client = Client::new(cfg).expect("client");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.send(ApiRequest::get(format!(
                "/api/v9/workspaces/{}/tags",
                i % 2
            )))
            .await
        }));
    }
    for t in tasks {
        t.await.expect("joins").expect("ok");
    }
    let mut times: Vec<_> = server.recorded().into_iter().map(|r| r.at).collect();
    times.sort();
    assert_eq!(times.len(), 6);
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        // Measured at the server, so allow a little network jitter.
        assert!(
            gap >= Duration::from_millis(170),
            "gap {gap:?} shorter than the pacing"
        );
    }
}
