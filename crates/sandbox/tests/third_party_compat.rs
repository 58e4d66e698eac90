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
            !["test", "localhost", "invalid", "local", "onion", "arpa", "internal"].contains(&tld),
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
