//! Regression tests for gaps found by pointing real third-party Toggl clients at the sandbox
//! (see `COMPATIBILITY.md`). Each test replays, over HTTP, the exchange a client made, and
//! checks the answer against the real API's documented behaviour (swagger / reference), not
//! against what the client happens to accept.

mod common;

use common::{As, Env, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// toggl-api-wrapper (`UserEndpoint.verify_authentication`) and toggl-python
/// (`CurrentUser.logged`) probe credentials with `GET /me/logged`; swagger: 200, no body.
#[tokio::test]
async fn me_logged_answers_200_for_good_credentials() {
    let env = Env::start().await;

    let r = env.get("/me/logged").await;
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.text);
    assert_eq!(r.text, "");

    let r = env.member(Method::GET, "/me/logged", None).await;
    assert_eq!(r.status, StatusCode::OK);

    // The probe is only useful if bad credentials still fail like everywhere else.
    let bad = As::Basic("not-a-token".into(), "api_token".into());
    let r = env.call(bad, Method::GET, "/me/logged", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env.call(As::Nobody, Method::GET, "/me/logged", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// toggl-python validates `email` with pydantic's `EmailStr`, which rejects special-use
/// TLDs (RFC 6761: `.test`, `.localhost`, `.invalid`, ...). Real accounts never have such
/// addresses, so the seeded users must not either.
#[tokio::test]
async fn seeded_emails_use_an_ordinary_domain() {
    let env = Env::start().await;
    let facts = env.sandbox.facts();
    let me = env.get("/me").await;
    let member = env.member(Method::GET, "/me", None).await;
    for email in [
        facts.email.as_str(),
        me.json["email"].as_str().expect("email"),
        member.json["email"].as_str().expect("email"),
    ] {
        let (local, domain) = email.split_once('@').expect("an address");
        assert!(!local.is_empty(), "{email}");
        let tld = domain.rsplit('.').next().expect("a tld");
        assert!(domain.contains('.'), "{email}");
        assert!(
            ![
                "test",
                "localhost",
                "invalid",
                "local",
                "onion",
                "arpa",
                "internal"
            ]
            .contains(&tld),
            "{email} uses a special-use TLD"
        );
    }
}

/// toggl-api-wrapper `WorkspaceEndpoint.statistics` → `GET /workspaces/{wid}/statistics`;
/// swagger `models.Statistics`: `{admins: [{name, user_id}], groups_count, members_count}`.
#[tokio::test]
async fn workspace_statistics_counts_members_and_lists_admins() {
    let env = Env::start().await;
    let wid = env.wid();
    let admin_id = env.sandbox.facts().user_id;
    let member_id = env.sandbox.member().user_id;

    let r = env.get(&format!("/workspaces/{wid}/statistics")).await;
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.text);
    let obj = r.json.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["admins", "groups_count", "members_count"]);

    let users = env.get(&format!("/workspaces/{wid}/users")).await;
    let active = users
        .json
        .as_array()
        .expect("users array")
        .iter()
        .filter(|u| u["inactive"] != Value::Bool(true))
        .count();
    assert_eq!(r.json["members_count"].as_u64(), Some(active as u64));
    assert_eq!(r.json["groups_count"].as_u64(), Some(0));

    let admins = r.json["admins"].as_array().expect("admins array");
    let admin_ids: Vec<i64> = admins
        .iter()
        .map(|a| a["user_id"].as_i64().expect("user_id"))
        .collect();
    assert!(admin_ids.contains(&admin_id), "{admins:?}");
    assert!(!admin_ids.contains(&member_id), "{admins:?}");
    let me = env.get("/me").await;
    let mine = admins
        .iter()
        .find(|a| a["user_id"].as_i64() == Some(admin_id))
        .expect("the admin is listed");
    assert_eq!(mine["name"], me.json["fullname"]);

    // Members may read it too; a foreign workspace is the usual 403.
    let r = env
        .member(Method::GET, &format!("/workspaces/{wid}/statistics"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_error(
        &env.get("/workspaces/999999999/statistics").await,
        403,
        "User does not have access to this resource.",
    );
}

/// toggl-api-wrapper `OrganizationEndpoint.get` → `GET /organizations/{oid}`; swagger:
/// `models.MeOrganization` (the same shape `GET /me/organizations` lists), 404 otherwise.
#[tokio::test]
async fn get_organization_matches_me_organizations() {
    let env = Env::start().await;
    let oid = env.oid();

    let r = env.get(&format!("/organizations/{oid}")).await;
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.text);
    let listed = env.get("/me/organizations").await;
    let entry = listed
        .json
        .as_array()
        .expect("array")
        .iter()
        .find(|o| o["id"].as_i64() == Some(oid))
        .expect("listed")
        .clone();
    assert_eq!(r.json, entry);

    assert_error(
        &env.get("/organizations/999999999").await,
        404,
        "User not part of organization",
    );
    assert_error(
        &env.get("/organizations/abc").await,
        400,
        "Invalid organization ID",
    );
}

/// toggl-api-wrapper's `ReportBody` always sends every id list, empty ones included
/// (`"client_ids":[],"project_ids":[],...`), and Toggl answers with rows: an empty list is
/// no filter. The sandbox used to read it as "match none" and returned `[]` with no paging
/// headers, so `search_time_entries` pagination broke.
#[tokio::test]
async fn detailed_report_treats_empty_id_lists_as_no_filter() {
    let env = Env::start().await;
    let wid = env.wid();
    let day = (chrono::Utc::now() - chrono::Duration::days(2)).date_naive();
    for hour in [5, 6, 7] {
        let body = format!(
            r#"{{"created_with":"compat","workspace_id":{wid},"start":"{day}T{hour:02}:00:00Z","duration":1800,"description":"compat {hour}"}}"#
        );
        let r = env
            .post(&format!("/workspaces/{wid}/time_entries"), &body)
            .await;
        assert_eq!(r.status, StatusCode::OK, "body: {}", r.text);
    }
    let path = format!("/reports/api/v3/workspace/{wid}/search/time_entries");
    let plain = env
        .post(
            &path,
            &format!(r#"{{"start_date":"{day}","end_date":"{day}","page_size":1}}"#),
        )
        .await;
    assert_eq!(plain.status, StatusCode::OK, "body: {}", plain.text);
    let with_empty_lists = env
        .post(
            &path,
            &format!(
                r#"{{"workspace_id":{wid},"hide_amounts":false,"client_ids":[],"project_ids":[],"tag_ids":[],"time_entry_ids":[],"user_ids":[],"task_ids":[],"group_ids":[],"start_date":"{day}","end_date":"{day}","page_size":1}}"#
            ),
        )
        .await;
    assert_eq!(
        with_empty_lists.status,
        StatusCode::OK,
        "body: {}",
        with_empty_lists.text
    );
    assert_eq!(with_empty_lists.json.as_array().map(Vec::len), Some(1));
    assert_eq!(with_empty_lists.json, plain.json);
    assert!(with_empty_lists.header("x-next-id").is_some());
    assert_eq!(
        with_empty_lists.header("x-next-row-number"),
        plain.header("x-next-row-number")
    );

    // A non-empty list still filters.
    let none = env
        .post(
            &path,
            &format!(r#"{{"start_date":"{day}","end_date":"{day}","time_entry_ids":[1]}}"#),
        )
        .await;
    assert_eq!(none.json, serde_json::json!([]));
}

/// toggl-api-wrapper `OrganizationEndpoint.add` / `.edit`: `POST /organizations`
/// `{name, workspace_name}` (reference §4.2, recorded reply `{id, name, workspace_id,
/// workspace_name, permissions}`) and `PUT /organizations/{oid}` `{name}` (200, empty body).
#[tokio::test]
async fn create_and_rename_an_organization() {
    let env = Env::start().await;

    let r = env
        .post(
            "/organizations",
            r#"{"name":"Compat Org","workspace_name":"Compat-Workspace"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.text);
    let obj = r.json.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "permissions",
            "workspace_id",
            "workspace_name"
        ]
    );
    assert_eq!(r.json["name"], "Compat Org");
    assert_eq!(r.json["workspace_name"], "Compat-Workspace");
    let oid = r.json["id"].as_i64().expect("org id");
    let wid = r.json["workspace_id"].as_i64().expect("workspace id");
    assert_ne!(oid, env.oid());
    assert_ne!(wid, env.wid());

    // The caller owns the new organization and administers its workspace.
    let org = env.get(&format!("/organizations/{oid}")).await;
    assert_eq!(org.status, StatusCode::OK, "body: {}", org.text);
    assert_eq!(org.json["owner"], true);
    let ws = env.get(&format!("/workspaces/{wid}")).await;
    assert_eq!(ws.status, StatusCode::OK, "body: {}", ws.text);
    assert_eq!(ws.json["organization_id"].as_i64(), Some(oid));
    assert_eq!(ws.json["name"], "Compat-Workspace");
    let mine = env.get("/me/organizations").await;
    assert!(
        mine.json
            .as_array()
            .expect("array")
            .iter()
            .any(|o| o["id"].as_i64() == Some(oid))
    );
    let r = env
        .post(
            &format!("/workspaces/{wid}/clients"),
            r#"{"name":"first client"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.text);
    // The member is not part of it.
    let r = env
        .member(Method::GET, &format!("/organizations/{oid}"), None)
        .await;
    assert_error(&r, 404, "User not part of organization");

    let r = env
        .put(
            &format!("/organizations/{oid}"),
            r#"{"name":"Renamed Org"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.text);
    // toggl-api-wrapper's cached endpoint crashes on a JSON string body here.
    assert_eq!(r.text, "");
    let org = env.get(&format!("/organizations/{oid}")).await;
    assert_eq!(org.json["name"], "Renamed Org");

    // Validation, with the swagger's messages.
    assert_error(
        &env.post("/organizations", r#"{"name":" ","workspace_name":"W"}"#)
            .await,
        400,
        "Field 'name' cannot be empty.",
    );
    let long = "x".repeat(141);
    assert_error(
        &env.post(
            "/organizations",
            &format!(r#"{{"name":"{long}","workspace_name":"W"}}"#),
        )
        .await,
        400,
        "organization name too long, maximum length is 140",
    );
    assert_error(
        &env.post("/organizations", r#"{"name":"Org"}"#).await,
        400,
        "workspace name must be provided",
    );
    assert_error(
        &env.post("/organizations", r#"{"name":"Org","workspace_name":"  "}"#)
            .await,
        400,
        "workspace name must contain non-space characters",
    );
    assert_error(
        &env.put(&format!("/organizations/{oid}"), "{}").await,
        400,
        "At least one field is required",
    );
    assert_error(
        &env.put(&format!("/organizations/{oid}"), r#"{"name":""}"#)
            .await,
        400,
        "field 'name' cannot be empty",
    );
    // Only the owner renames; the sandbox organization belongs to the admin, not the member.
    let r = env
        .member(
            Method::PUT,
            &format!("/organizations/{}", env.oid()),
            Some(r#"{"name":"Hijacked"}"#),
        )
        .await;
    assert_error(&r, 403, "User is not authorized to update the organization");
}
