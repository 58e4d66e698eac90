//! Throughput and peak memory of the operation path (render -> client -> pagination -> flatten)
//! against the sandbox, with the sandbox's raw serving rate of the same pages as the baseline.
//!
//! Run (see bench/operations/README.md):
//!   cargo run --release -p toggl-connect-client --example operations_bench -- [--entries N] [--projects N]
//!
//! The parent process starts a sandbox in-process, seeds it (time entries by the sandbox's
//! `seed_entries`, projects through the API with pacing off) and then runs every measured phase
//! in a child process of this same binary, so each phase's peak RSS (`VmHWM`) is its own.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};
use toggl_connect_client::{Client, ClientConfig};
use toggl_connect_definition::{Connector, Params};
use toggl_connect_sandbox::{Plan, Sandbox, SandboxConfig};

const START_DATE: &str = "2000-01-01";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn client(url: &str, token: &str) -> Client {
    let mut cfg = ClientConfig::with_token(token.to_owned()).base_url(url.to_owned());
    cfg.pacing = None;
    Client::new(cfg).expect("client")
}

fn end_date() -> String {
    (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string()
}

/// One measured phase, run in a child process. Prints one JSON line.
async fn phase(name: &str, url: &str, token: &str, wid: i64, pages: u64) {
    let started = Instant::now();
    let (records, pages_seen, bytes) = match name {
        "reports-client" | "projects-client" => {
            let c = Connector::builtin();
            let (res, op, params) = if name == "reports-client" {
                let p = Params::new()
                    .with("workspace_id", wid)
                    .with("start_date", START_DATE)
                    .with("end_date", end_date());
                ("reports", "search_time_entries", p)
            } else {
                ("projects", "list", Params::new().with("workspace_id", wid))
            };
            let resource = c.resource(res).expect("resource");
            let req = resource
                .operation(op)
                .expect("operation")
                .render(&params)
                .expect("renders");
            let client = client(url, token);
            let mut items = client.operation_items(&req);
            let mut n = 0u64;
            let mut check = 0u64;
            while let Some(item) = items.try_next().await.expect("walk") {
                let record = resource.flatten(&item);
                // Touch the record so the flattening cannot be optimized away.
                check = check.wrapping_add(record.len() as u64);
                n += 1;
            }
            assert!(check > 0 || n == 0);
            (n, 0, 0)
        }
        "reports-raw" => {
            let http = reqwest::Client::new();
            let target = format!("{url}/reports/api/v3/workspace/{wid}/search/time_entries");
            let mut cursor: Option<(String, String)> = None;
            let (mut pages, mut bytes) = (0u64, 0u64);
            loop {
                let mut body =
                    json!({"start_date": START_DATE, "end_date": end_date(), "page_size": 50});
                if let Some((id, row)) = &cursor {
                    body["first_id"] = json!(id.parse::<u64>().expect("id"));
                    body["first_row_number"] = json!(row.parse::<u64>().expect("row"));
                }
                let resp = http
                    .post(&target)
                    .basic_auth(token, Some("api_token"))
                    .json(&body)
                    .send()
                    .await
                    .expect("answer");
                assert!(resp.status().is_success(), "{}", resp.status());
                let h = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let next = h("x-next-id").zip(h("x-next-row-number"));
                bytes += resp.bytes().await.expect("body").len() as u64;
                pages += 1;
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            (0, pages, bytes)
        }
        "projects-raw" => {
            let http = reqwest::Client::new();
            let mut bytes = 0u64;
            for page in 1..=pages {
                let resp = http
                    .get(format!(
                        "{url}/api/v9/workspaces/{wid}/projects?page={page}&per_page=200"
                    ))
                    .basic_auth(token, Some("api_token"))
                    .send()
                    .await
                    .expect("answer");
                assert!(resp.status().is_success());
                bytes += resp.bytes().await.expect("body").len() as u64;
            }
            (0, pages, bytes)
        }
        other => panic!("unknown phase {other}"),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"phase": name, "records": records, "pages": pages_seen, "bytes": bytes, "secs": secs, "vmhwm_kb": vm_hwm_kb()})
    );
}

fn run_child(name: &str, url: &str, token: &str, wid: i64, pages: u64) -> Value {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--phase",
            name,
            "--url",
            url,
            "--token",
            token,
            "--wid",
            &wid.to_string(),
            "--pages",
            &pages.to_string(),
        ])
        .output()
        .expect("child runs");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

async fn seed_projects(client: &Client, wid: i64, want: usize) -> Duration {
    let started = Instant::now();
    let op = Connector::builtin()
        .operation("projects", "create")
        .expect("projects.create");
    futures::stream::iter(0..want)
        .map(|i| {
            let req = op
                .render(
                    &Params::new()
                        .with("workspace_id", wid)
                        .with("name", format!("Bench project {i:05}")),
                )
                .expect("renders");
            let client = client.clone();
            async move { client.run_operation(&req).await.expect("project created") }
        })
        .buffer_unordered(16)
        .for_each(|_| async {})
        .await;
    started.elapsed()
}

#[tokio::main]
async fn main() {
    if let Some(name) = arg("--phase") {
        let url = arg("--url").expect("--url");
        let token = arg("--token").expect("--token");
        let wid: i64 = arg("--wid").expect("--wid").parse().expect("wid");
        let pages: u64 = arg("--pages").map_or(0, |p| p.parse().expect("pages"));
        phase(&name, &url, &token, wid, pages).await;
        return;
    }
    let entries: usize = arg("--entries").map_or(100_000, |n| n.parse().expect("--entries N"));
    let projects: usize = arg("--projects").map_or(10_000, |n| n.parse().expect("--projects N"));

    let t = Instant::now();
    let sb = Sandbox::start(SandboxConfig {
        rate_limit: false,
        plan: Plan::Unlimited,
        seed_entries: entries,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let f = sb.facts().clone();
    let root = f.api_url.trim_end_matches("/api/v9").to_owned();
    eprintln!("sandbox with {entries} entries up in {:.1?}", t.elapsed());
    let seeding = seed_projects(&client(&root, &f.api_token), f.workspace_id, projects).await;
    eprintln!("{projects} projects created through the API in {seeding:.1?}");

    let run = |name: &str, pages: u64| run_child(name, &root, &f.api_token, f.workspace_id, pages);
    // Each pair runs baseline first, then the client path, on the same warm sandbox.
    let r_raw = run("reports-raw", 0);
    let r_cli = run("reports-client", 0);
    // The first client walk tells how many pages the baseline must fetch; the second one is
    // measured after the baseline, so both see an equally warm sandbox.
    let p_cli = run("projects-client", 0);
    let per_page = 200;
    let p_pages = (p_cli["records"].as_u64().expect("records") / per_page) + 1;
    let p_raw = run("projects-raw", p_pages);
    let p_cli = run("projects-client", 0);

    let rate = |records: u64, v: &Value| records as f64 / v["secs"].as_f64().expect("secs");
    let r_records = r_cli["records"].as_u64().expect("records");
    let p_records = p_cli["records"].as_u64().expect("records");
    println!(
        "| walk | records | pages | baseline (raw pages) rec/s | client path rec/s | ratio | peak RSS raw | peak RSS client |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, records, raw, cli) in [
        (
            "Reports search (cursor, 50/page)",
            r_records,
            &r_raw,
            &r_cli,
        ),
        (
            "Projects list (page/per_page 200)",
            p_records,
            &p_raw,
            &p_cli,
        ),
    ] {
        let (a, b) = (rate(records, raw), rate(records, cli));
        println!(
            "| {label} | {records} | {} | {a:.0} | {b:.0} | {:.2} | {} MiB | {} MiB |",
            raw["pages"],
            b / a,
            raw["vmhwm_kb"].as_u64().unwrap_or(0) / 1024,
            cli["vmhwm_kb"].as_u64().unwrap_or(0) / 1024
        );
    }
    assert_eq!(
        r_records as usize, entries,
        "every seeded entry came back once"
    );
    sb.shutdown().await.expect("stops");
}
