//! Shared by the `cli_*` tests: a sandbox in the test process and the binary pointed at it.
#![allow(dead_code)]

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;
use toggl_connect_sandbox::{Sandbox, SandboxConfig, SandboxHandle, Seed};

/// A sandbox served by its own runtime, so the test can run the binary synchronously.
pub struct Env {
    pub sandbox: SandboxHandle,
    rt: tokio::runtime::Runtime,
}

impl Env {
    pub fn start() -> Env {
        Self::start_with(SandboxConfig {
            rate_limit: false,
            seed: Seed::Small,
            ..SandboxConfig::default()
        })
    }

    pub fn start_with(config: SandboxConfig) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sandbox = rt.block_on(Sandbox::start(config)).expect("sandbox starts");
        Env { sandbox, rt }
    }

    /// The binary with the sandbox's URL and token, pacing off (`--no-pacing` is tested in
    /// `cli_query`), no config file.
    pub fn cmd(&self) -> Command {
        let mut c = bin();
        c.env("TOGGL_API_URL", &self.sandbox.facts().api_url)
            .env("TOGGL_API_TOKEN", &self.sandbox.facts().api_token)
            .env("TOGGL_CONNECT_PACING_MS", "0");
        c
    }

    /// Runs the binary (as [`Env::cmd`]) with `args` and asserts it succeeded, showing its
    /// stderr when it did not.
    pub fn run_ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.cmd().args(args).output().expect("runs");
        assert!(out.status.success(), "{}", stderr_of(&out));
        out
    }

    /// `GET path` on the sandbox (path under `/api/v9`), checked to be 200.
    pub fn get(&self, path: &str) -> Value {
        let f = self.sandbox.facts().clone();
        self.rt.block_on(async move {
            let resp = reqwest::Client::new()
                .get(format!("{}{path}", f.api_url))
                .basic_auth(&f.api_token, Some("api_token"))
                .send()
                .await
                .expect("sandbox answers");
            assert_eq!(resp.status().as_u16(), 200, "GET {path}");
            resp.json().await.expect("json")
        })
    }

    pub fn wid(&self) -> i64 {
        self.sandbox.facts().workspace_id
    }
}

/// The binary with a clean environment (no token, no URL, no config file).
pub fn bin() -> Command {
    let mut c = Command::cargo_bin("toggl-connect").expect("binary");
    c.env_remove("TOGGL_API_TOKEN")
        .env_remove("TOGGL_API_URL")
        .env_remove("TOGGL_CONNECT_CONFIG")
        .env_remove("TOGGL_CONNECT_PACING_MS")
        .env("TOGGL_CONNECT_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100");
    c
}

pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf8 stdout")
}

pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf8 stderr")
}

pub fn json_stdout(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", stdout_of(output)))
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `--help` of a command, for snapshots.
pub fn help(args: &[&str]) -> String {
    let out = bin().args(args).arg("--help").output().expect("runs");
    assert!(out.status.success(), "{args:?} --help");
    stdout_of(&out)
}

/// A proxy in front of the sandbox that forwards everything, but answers 502 after forwarding
/// a request matching `lose` (the request took effect; its answer is lost). Returns its URL.
pub fn lossy_proxy(env: &Env, lose: fn(&str, &str) -> bool) -> String {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;

    let upstream = env
        .sandbox
        .facts()
        .api_url
        .trim_end_matches("/api/v9")
        .to_owned();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let http = http.clone();
        let upstream = upstream.clone();
        async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let headers = req.headers().clone();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .expect("body");
            let mut up = http
                .request(method.clone(), format!("{upstream}{pq}"))
                .body(body);
            for (k, v) in &headers {
                if k != "host" {
                    up = up.header(k, v);
                }
            }
            let resp = up.send().await.expect("upstream");
            let status = resp.status();
            let ct = resp.headers().get("content-type").cloned();
            let bytes = resp.bytes().await.expect("upstream body");
            if lose(method.as_str(), &path) {
                return Response::builder()
                    .status(502)
                    .body(Body::from("bad gateway"))
                    .expect("response");
            }
            let mut out = Response::builder().status(status);
            if let Some(ct) = ct {
                out = out.header("content-type", ct);
            }
            out.body(Body::from(bytes)).expect("response")
        }
    });
    let listener = env
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    env.rt
        .spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}
