//! Shared harness for the binary's end-to-end tests: a `serve` child process, a sandbox in the
//! test process, and small API helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toggl_connect_sandbox::{Plan, Sandbox, SandboxConfig, SandboxHandle, Seed};
use toggl_connect_store::{EventFilter, Store, StoreOptions};

pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Serve {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl Serve {
    pub fn spawn(sb: &SandboxHandle, store_url: &str, extra: &[&str]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_toggl-connect"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--store", store_url])
            .args(extra);
        Self::spawn_cmd(cmd, sb)
    }

    pub fn spawn_cmd(mut cmd: Command, sb: &SandboxHandle) -> Serve {
        cmd.env("TOGGL_API_URL", &sb.facts().api_url)
            .env("TOGGL_API_TOKEN", &sb.facts().api_token);
        Self::start(cmd)
    }

    /// Starts `cmd` (a `serve` with everything it needs already set) and waits for its
    /// startup summary.
    pub fn start(mut cmd: Command) -> Serve {
        cmd.env("TOGGL_CONNECT_PACING_MS", "0")
            .env("TOGGL_CONNECT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("serve starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Serve {
            child,
            lines,
            printed: Vec::new(),
        };
        s.wait_for_line("quota");
        s
    }

    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(l) = self.printed.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.printed.push(l),
                Err(_) => panic!(
                    "serve never printed {needle:?}; printed: {:#?}",
                    self.printed
                ),
            }
        }
    }

    pub fn receiver_url(&mut self) -> String {
        let line = self.wait_for_line("receiver");
        line.split_whitespace().nth(1).expect("url").to_owned()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let end = Instant::now() + DEADLINE;
            while Instant::now() < end {
                if let Ok(Some(status)) = self.child.try_wait() {
                    assert!(status.success(), "serve exits 0 on SIGTERM, got {status}");
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill9();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn sandbox(plan: Plan) -> SandboxHandle {
    Sandbox::start(SandboxConfig {
        plan,
        seed: Seed::Small,
        rate_limit: false,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub wid: i64,
}

impl Api {
    pub fn new(sb: &SandboxHandle) -> Api {
        let f = sb.facts();
        Api {
            http: reqwest::Client::new(),
            base: f.api_url.clone(),
            token: f.api_token.clone(),
            wid: f.workspace_id,
        }
    }

    /// Creates a time entry in the workspace from `body` and returns its id.
    pub async fn create_time_entry(&self, body: Value) -> i64 {
        self.call(
            reqwest::Method::POST,
            &format!("/workspaces/{}/time_entries", self.wid),
            Some(body),
        )
        .await["id"]
            .as_i64()
            .expect("the created entry has an id")
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = if path.starts_with("/webhooks") {
            format!("{}{path}", self.base.trim_end_matches("/api/v9"))
        } else {
            format!("{}{path}", self.base)
        };
        // A well-behaved client: a quota 402 means waiting for the reset, then the same call.
        let resp = loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .basic_auth(&self.token, Some("api_token"));
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("sandbox answers");
            let reset = resp
                .headers()
                .get("X-Toggl-Quota-Resets-In")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            match (resp.status().as_u16(), reset) {
                (402, Some(secs)) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
                _ => break resp,
            }
        };
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    pub async fn start_timer(&self, description: &str) -> i64 {
        let body = json!({"created_with": "e2e", "workspace_id": self.wid, "duration": -1,
            "start": chrono::Utc::now().to_rfc3339(), "description": description});
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/workspaces/{}/time_entries", self.wid),
                Some(body),
            )
            .await;
        v["id"].as_i64().expect("id")
    }

    pub async fn subscriptions(&self) -> Vec<Value> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/webhooks/api/v1/subscriptions/{}", self.wid),
                None,
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }
}

pub async fn open_store(url: &str) -> Store {
    Store::open(url, StoreOptions::default())
        .await
        .expect("store opens")
}

pub async fn events(store: &Store) -> Vec<toggl_connect_store::StoredEvent> {
    store
        .list_events(EventFilter {
            limit: Some(10_000),
            ..EventFilter::default()
        })
        .await
        .expect("lists")
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn temp_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("e2e.db").display());
    (dir, url)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The `X-Webhook-Signature-256` value for `body` signed with `secret` (Toggl's scheme), computed
/// here independently of the code under test.
pub fn sign(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The issue's first example rule: on a new project, add `lead` as a member and create a
/// Kickoff task.
pub fn kickoff_rule(lead: i64) -> String {
    format!(
        r#"
[[rules]]
name = "project-kickoff"
on = "project_created"

[[rules.do]]
name = "add_lead"
action = "add-project-member"
with = {{ workspace_id = "{{{{event.payload.workspace_id}}}}", project_id = "{{{{event.payload.id}}}}", user_id = {lead} }}

[[rules.do]]
name = "create_task"
action = "create-task"
with = {{ workspace_id = "{{{{event.payload.workspace_id}}}}", project_id = "{{{{event.payload.id}}}}", name = "Kickoff" }}
"#
    )
}
