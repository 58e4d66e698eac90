//! Helpers shared by the socket tests: start a sandbox on 127.0.0.1:0 and talk to it.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use toggl_connect_sandbox::{Sandbox, SandboxConfig, SandboxHandle, Seed};

/// A started sandbox plus an HTTP client.
pub struct Env {
    pub sandbox: SandboxHandle,
    pub http: reqwest::Client,
}

/// A response: status, headers, raw body and the body parsed as JSON (Null when not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Who sends a request.
#[derive(Debug, Clone)]
pub enum As {
    Admin,
    Member,
    Basic(String, String),
    Nobody,
}

pub fn config() -> SandboxConfig {
    SandboxConfig {
        seed: Seed::Small,
        rate_limit: false,
        ..SandboxConfig::default()
    }
}

impl Env {
    pub async fn start() -> Env {
        Env::with(config()).await
    }

    pub async fn with(config: SandboxConfig) -> Env {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let sandbox = Sandbox::start_on(listener, config)
            .await
            .expect("sandbox starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        Env { sandbox, http }
    }

    pub fn wid(&self) -> i64 {
        self.sandbox.facts().workspace_id
    }

    pub fn oid(&self) -> i64 {
        self.sandbox.facts().organization_id
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.sandbox.addr())
    }

    pub async fn call(&self, who: As, method: Method, path: &str, body: Option<&str>) -> Resp {
        let url = if path.starts_with("/webhooks") || path.starts_with("/reports") {
            format!("{}{}", self.base(), path)
        } else {
            format!("{}{}", self.sandbox.facts().api_url, path)
        };
        let mut req = self.http.request(method, url);
        req = match who {
            As::Admin => req.basic_auth(&self.sandbox.facts().api_token, Some("api_token")),
            As::Member => req.basic_auth(&self.sandbox.member().api_token, Some("api_token")),
            As::Basic(u, p) => req.basic_auth(u, Some(p)),
            As::Nobody => req,
        };
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_owned());
        }
        let r = req.send().await.expect("request reaches the sandbox");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(As::Admin, Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Resp {
        self.call(As::Admin, Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &str) -> Resp {
        self.call(As::Admin, Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &str) -> Resp {
        self.call(As::Admin, Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(As::Admin, Method::DELETE, path, None).await
    }

    pub async fn member(&self, method: Method, path: &str, body: Option<&str>) -> Resp {
        self.call(As::Member, method, path, body).await
    }
}

/// Asserts a JSON-string error body with Toggl's content type.
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, message: &str) {
    assert_eq!(r.status.as_u16(), status, "status; body: {}", r.text);
    assert_eq!(
        r.json,
        Value::String(message.to_owned()),
        "error body: {}",
        r.text
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
}
