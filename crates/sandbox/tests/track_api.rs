//! Socket tests of the Track API v9 over real HTTP (127.0.0.1:0), error cases included.

mod common;

use common::{As, Env, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn status_needs_no_auth() {
    let env = Env::start().await;
    let r = env.call(As::Nobody, Method::GET, "/status", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, json!({"status": "OK"}));
}

#[tokio::test]
async fn auth_missing_bad_and_both_schemes() {
    let env = Env::start().await;
    let r = env.call(As::Nobody, Method::GET, "/me", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.text, "");
    assert_eq!(r.header("x-authorization-missing"), Some("true"));

    let bad = As::Basic("nope".into(), "api_token".into());
    let r = env.call(bad, Method::GET, "/me", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("x-toggl-quota-remaining").is_none());

    let f = env.sandbox.facts().clone();
    let r = env
        .call(
            As::Basic(f.email.clone(), f.password.clone()),
            Method::GET,
            "/me",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["id"], json!(f.user_id));
    let r = env
        .call(As::Basic(f.email, "wrong".into()), Method::GET, "/me", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = env.call(As::Member, Method::GET, "/me", None).await;
    assert_eq!(r.json["id"], json!(env.sandbox.member().user_id));
}

#[tokio::test]
async fn me_and_related_data() {
    let env = Env::start().await;
    let r = env.get("/me").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(r.header("x-toggl-quota-remaining").is_some());
    assert!(r.header("x-toggl-quota-resets-in").is_some());
    assert_eq!(r.json["api_token"], json!(env.sandbox.facts().api_token));
    assert!(r.json["id"].as_i64().expect("id") > i64::from(i32::MAX));
    assert!(r.json.get("clients").is_none());
    let at = r.json["at"].as_str().expect("at").to_owned();
    assert!(at.ends_with('Z') && at.len() == 27, "micros Z: {at}");

    let r = env.get("/me?with_related_data=true").await;
    for key in [
        "clients",
        "projects",
        "tags",
        "tasks",
        "time_entries",
        "workspaces",
    ] {
        assert!(
            !r.json[key].as_array().expect(key).is_empty(),
            "{key} is empty"
        );
    }
}

#[tokio::test]
async fn put_me_validates_and_updates() {
    let env = Env::start().await;
    let before = env.get("/me").await.json["at"].clone();
    assert_error(
        &env.put("/me", r#"{"timezone":"Mars/Base"}"#).await,
        400,
        "Invalid timezone",
    );
    assert_error(
        &env.put("/me", r#"{"email":"not-an-email"}"#).await,
        400,
        "Invalid email",
    );
    assert_error(
        &env.put("/me", r#"{"fullname":"  "}"#).await,
        400,
        "Invalid fullname",
    );
    assert_error(
        &env.put("/me", r#"{"email":"member@example.com"}"#).await,
        400,
        "user with this email already exists",
    );
    assert_error(
        &env.put("/me", r#"{"beginning_of_week":9}"#).await,
        400,
        "Invalid beginning_of_week",
    );
    assert_error(
        &env.put("/me", r#"{"password":"abcdefgh"}"#).await,
        400,
        "Current password must be present to change password",
    );
    assert_error(
        &env.put("/me", r#"{"password":"abcdefgh","current_password":"x"}"#)
            .await,
        400,
        "Current password is not valid",
    );
    let pw = env.sandbox.facts().password.clone();
    assert_error(
        &env.put(
            "/me",
            &json!({"password":"abc","current_password":pw}).to_string(),
        )
        .await,
        400,
        "Password should be at least 6 characters",
    );
    assert_error(
        &env.put("/me", r#"{"beginning_of_week":"1"}"#).await,
        400,
        r#"Unexpected "beginning_of_week" type string"#,
    );
    let r = env
        .put(
            "/me",
            r#"{"fullname":"Ann Admin","timezone":"Europe/Tallinn"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["fullname"], json!("Ann Admin"));
    assert_eq!(r.json["timezone"], json!("Europe/Tallinn"));
    assert_ne!(r.json["at"], before);
}

#[tokio::test]
async fn me_lists_and_quota() {
    let env = Env::start().await;
    let ws = env.get("/me/workspaces").await;
    assert_eq!(ws.json.as_array().expect("array").len(), 2);
    assert!(ws.json[0]["active_project_count"].as_i64().is_some());
    let orgs = env.get("/me/organizations").await;
    assert_eq!(orgs.json[0]["id"], json!(env.oid()));
    assert_eq!(
        env.get("/me/clients")
            .await
            .json
            .as_array()
            .expect("a")
            .len(),
        3
    );
    assert_eq!(
        env.get("/me/tags").await.json.as_array().expect("a").len(),
        4
    );
    assert_eq!(
        env.get("/me/tasks").await.json.as_array().expect("a").len(),
        3
    );
    let active = env.get("/me/projects").await.json;
    let all = env.get("/me/projects?include_archived=true").await.json;
    assert_eq!(
        all.as_array().expect("a").len(),
        active.as_array().expect("a").len() + 1
    );
    // Members do not see private projects they are not part of.
    let member = env.member(Method::GET, "/me/projects", None).await.json;
    assert!(
        member
            .as_array()
            .expect("a")
            .iter()
            .all(|p| p["name"] != json!("Internal"))
    );

    let q = env.get("/me/quota").await;
    let arr = q.json.as_array().expect("quota array");
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["organization_id"], Value::Null);
    assert_eq!(arr[1]["organization_id"], json!(env.oid()));
    for item in arr {
        for key in ["remaining", "resets_in_secs", "total"] {
            assert!(item[key].is_number(), "{key}");
        }
    }
}

#[tokio::test]
async fn create_minimal_entry_matches_recorded_behaviour() {
    let env = Env::start().await;
    let wid = env.wid();
    let body = json!({"created_with":"test","start":"2024-12-16T02:55:24.837112+01:00","workspace_id":wid});
    let r = env
        .post(
            &format!("/workspaces/{wid}/time_entries"),
            &body.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = &r.json;
    assert_eq!(e["duration"], json!(0));
    assert_eq!(e["stop"], Value::Null);
    assert_eq!(e["start"], json!("2024-12-16T01:55:24Z"));
    assert_eq!(e["tags"], Value::Null);
    assert_eq!(e["tag_ids"], Value::Null);
    assert_eq!(e["permissions"], Value::Null);
    assert_eq!(e["wid"], json!(wid));
    assert_eq!(e["uid"], json!(env.sandbox.facts().user_id));
    assert!(e.get("pid").is_none());
    let at = e["at"].as_str().expect("at");
    assert!(
        at.ends_with('Z') && at.contains('.'),
        "at with micros: {at}"
    );
    let id = e["id"].as_i64().expect("id");
    assert!(id > i64::from(i32::MAX));

    let got = env.get(&format!("/me/time_entries/{id}")).await.json;
    assert_eq!(got["stop"], json!("2024-12-16T01:55:24+00:00"));
    assert_eq!(got["start"], json!("2024-12-16T01:55:24+00:00"));

    let r = env
        .post(
            &format!("/workspaces/{wid}/time_entries"),
            &json!({"created_with":"t","start":"2024-12-16T01:00:00Z","workspace_id":wid,"duration":3600}).to_string(),
        )
        .await;
    assert_eq!(r.json["stop"], json!("2024-12-16T02:00:00Z"));
}

#[tokio::test]
async fn running_entries_current_and_auto_stop() {
    let env = Env::start().await;
    let wid = env.wid();
    let old = env.get("/me/time_entries/current").await.json;
    let old_id = old["id"].as_i64().expect("seeded running entry");
    let start = chrono::Utc::now() - chrono::Duration::minutes(5);
    let start_s = start.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let r = env
        .post(
            &format!("/workspaces/{wid}/time_entries"),
            &json!({"created_with":"t","start":start_s,"workspace_id":wid,"duration":-1,"description":"Run"}).to_string(),
        )
        .await;
    assert_eq!(r.json["duration"], json!(-1));
    assert_eq!(r.json["stop"], Value::Null);
    let id = r.json["id"].as_i64().expect("id");
    let cur = env.get("/me/time_entries/current").await.json;
    assert_eq!(cur["id"], json!(id));
    assert_eq!(cur["duration"], json!(-start.timestamp()));
    let old_now = env.get(&format!("/me/time_entries/{old_id}")).await.json;
    assert!(old_now["stop"].is_string(), "old entry stopped: {old_now}");
    assert_eq!(old_now["tags"], json!([]));

    let stop = env
        .patch(&format!("/workspaces/{wid}/time_entries/{id}/stop"), "")
        .await;
    assert_eq!(stop.status, StatusCode::OK);
    assert!(stop.json["duration"].as_i64().expect("duration") >= 300);
    assert_eq!(stop.json["tags"], json!([]));
    let again = env
        .patch(&format!("/workspaces/{wid}/time_entries/{id}/stop"), "")
        .await;
    assert_error(&again, 409, "Time entry already stopped");
    let cur = env.get("/me/time_entries/current").await;
    assert_eq!(cur.status, StatusCode::OK);
    assert_eq!(cur.text, "null");
    assert_error(
        &env.patch(&format!("/workspaces/{wid}/time_entries/1/stop"), "")
            .await,
        404,
        "Time entry not found",
    );
}

#[tokio::test]
async fn create_validation_errors() {
    let env = Env::start().await;
    let wid = env.wid();
    let path = format!("/workspaces/{wid}/time_entries");
    assert_error(
        &env.post(
            &path,
            &json!({"start":"2024-01-01T00:00:00Z","workspace_id":wid}).to_string(),
        )
        .await,
        400,
        "created_with needs to be provided an a valid string",
    );
    assert_error(
        &env.post(&path, &json!({"created_with":"t","start":"2024-01-01T00:00:00Z","workspace_id":wid.to_string()}).to_string()).await,
        400,
        r#"Unexpected "workspace_id" type string"#,
    );
    assert_error(
        &env.post(
            &path,
            &json!({"created_with":"t","start":"2024-01-01T00:00:00Z","wid":wid,"duration":"60"})
                .to_string(),
        )
        .await,
        400,
        r#"Unexpected "duration" type string"#,
    );
    assert_error(
        &env.post(&path, "{not json").await,
        400,
        "Invalid JSON input",
    );
    assert_error(
        &env.post(
            &path,
            &json!({"created_with":"t","start":"2024-01-01T00:00:00Z","workspace_id":wid+1})
                .to_string(),
        )
        .await,
        400,
        "workspace_id in the body does not match the workspace in the path",
    );
    assert_error(
        &env.post(
            &path,
            &json!({"created_with":"t","workspace_id":wid}).to_string(),
        )
        .await,
        400,
        "start is required",
    );
    assert_error(
        &env.post(
            &path,
            &json!({"created_with":"t","workspace_id":wid,"start":"yesterday"}).to_string(),
        )
        .await,
        400,
        "Invalid start date",
    );
    assert_error(
        &env.post(&path, &json!({"created_with":"t","workspace_id":wid,"start":"2024-01-01T00:00:00Z","stop":"2024-01-01T01:00:00Z","duration":60}).to_string()).await,
        400,
        "duration and stop do not match",
    );
    let other = env
        .post(
            "/workspaces/1/time_entries",
            &json!({"created_with":"t","workspace_id":1,"start":"2024-01-01T00:00:00Z"})
                .to_string(),
        )
        .await;
    assert_error(&other, 403, "User does not have access to this resource.");
}

#[tokio::test]
async fn tags_by_name_aliases_meta_and_updates() {
    let env = Env::start().await;
    let wid = env.wid();
    let projects = env.get(&format!("/workspaces/{wid}/projects")).await.json;
    let website = projects
        .as_array()
        .expect("projects")
        .iter()
        .find(|p| p["name"] == json!("Website Redesign"))
        .expect("seeded project")["id"]
        .as_i64()
        .expect("id");
    let tags_before = env.get(&format!("/workspaces/{wid}/tags")).await.json;
    let meeting = tags_before
        .as_array()
        .expect("tags")
        .iter()
        .find(|t| t["name"] == json!("meeting"))
        .expect("seeded tag")["id"]
        .clone();
    let r = env
        .post(
            &format!("/workspaces/{wid}/time_entries?meta=true"),
            &json!({"created_with":"t","start":"2024-05-01T10:00:00Z","wid":wid,"pid":website,
                     "duration":600,"tags":["fresh-tag","meeting"]})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = &r.json;
    assert_eq!(e["project_id"], json!(website));
    assert_eq!(e["pid"], json!(website));
    assert_eq!(e["project_name"], json!("Website Redesign"));
    assert_eq!(e["client_name"], json!("Acme Corp"));
    assert_eq!(e["tags"], json!(["fresh-tag", "meeting"]));
    let tag_ids = e["tag_ids"].as_array().expect("tag ids");
    assert_eq!(tag_ids[1], meeting);
    let tags_after = env.get(&format!("/workspaces/{wid}/tags")).await.json;
    assert_eq!(
        tags_after.as_array().expect("a").len(),
        tags_before.as_array().expect("a").len() + 1
    );
    let id = e["id"].as_i64().expect("id");
    let path = format!("/workspaces/{wid}/time_entries/{id}");

    let r = env
        .put(&path, r#"{"tags":["extra"],"tag_action":"add"}"#)
        .await;
    assert_eq!(r.json["tags"], json!(["fresh-tag", "meeting", "extra"]));
    let r = env
        .put(&path, r#"{"tags":["meeting"],"tag_action":"delete"}"#)
        .await;
    assert_eq!(r.json["tags"], json!(["fresh-tag", "extra"]));
    let r = env
        .put(&path, r#"{"description":"Renamed","duration":1200}"#)
        .await;
    assert_eq!(r.json["description"], json!("Renamed"));
    assert_eq!(r.json["stop"], json!("2024-05-01T10:20:00Z"));
    assert_error(
        &env.put(&path, r#"{"project_id":"x"}"#).await,
        400,
        r#"Unexpected "project_id" type string"#,
    );
    assert_error(
        &env.put(&path, r#"{"project_id":1}"#).await,
        400,
        "Invalid project_id",
    );

    // Legacy endpoints with legacy aliases.
    let legacy = env
        .post(
            "/time_entries",
            &json!({"created_with":"cli","start":"2024-05-02T10:00:00Z","wid":wid,"duration":60})
                .to_string(),
        )
        .await;
    assert_eq!(legacy.status, StatusCode::OK, "{}", legacy.text);
    let lid = legacy.json["id"].as_i64().expect("id");
    let upd = env
        .put(
            &format!("/time_entries/{lid}"),
            r#"{"description":"legacy"}"#,
        )
        .await;
    assert_eq!(upd.json["description"], json!("legacy"));
    assert_error(
        &env.put("/time_entries/1", "{}").await,
        404,
        "Time entry not found",
    );
}

#[tokio::test]
async fn list_filters_since_before_dates_and_deletes() {
    let env = Env::start().await;
    let wid = env.wid();
    let mk = |start: &str| {
        json!({"created_with":"t","start":start,"workspace_id":wid,"duration":60}).to_string()
    };
    let path = format!("/workspaces/{wid}/time_entries");
    let a = env.post(&path, &mk("2024-03-11T10:00:00Z")).await.json["id"].clone();
    let b = env.post(&path, &mk("2024-03-12T10:00:00Z")).await.json["id"].clone();
    let c = env.post(&path, &mk("2024-03-13T10:00:00Z")).await.json["id"].clone();

    let r = env
        .get("/me/time_entries?start_date=2024-03-11&end_date=2024-03-12")
        .await;
    assert_eq!(r.json.as_array().expect("a").len(), 1);
    assert_eq!(r.json[0]["id"], a);
    let r = env
        .get("/me/time_entries?start_date=2024-03-11&end_date=2024-03-14")
        .await;
    assert_eq!(
        ids(&r.json),
        vec![
            c.as_i64().expect("c"),
            b.as_i64().expect("b"),
            a.as_i64().expect("a")
        ]
    );
    assert_eq!(r.json[0]["start"], json!("2024-03-13T10:00:00+00:00"));
    let r = env.get("/me/time_entries?before=2024-03-12").await;
    assert!(ids(&r.json).contains(&a.as_i64().expect("a")));
    assert!(!ids(&r.json).contains(&b.as_i64().expect("b")));
    assert_error(
        &env.get("/me/time_entries?since=1&before=2024-03-12").await,
        400,
        "'since' and 'before' can not be present simultaneously",
    );
    assert_error(
        &env.get("/me/time_entries?start_date=2024-03-11").await,
        400,
        "start_date and end_date must be used together",
    );

    let since = chrono::Utc::now().timestamp() - 5;
    let del = env.delete(&format!("{path}/{b}")).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(del.text, "");
    assert_error(
        &env.delete(&format!("{path}/{b}")).await,
        404,
        "Time entry not found",
    );
    assert_error(
        &env.get(&format!("/me/time_entries/{b}")).await,
        404,
        "Time entry not found",
    );
    let r = env
        .get("/me/time_entries?start_date=2024-03-11&end_date=2024-03-14")
        .await;
    assert_eq!(r.json.as_array().expect("a").len(), 2);
    let r = env.get(&format!("/me/time_entries?since={since}")).await;
    let deleted = r
        .json
        .as_array()
        .expect("a")
        .iter()
        .find(|e| e["id"] == b)
        .expect("deleted entry listed with since");
    assert!(deleted["server_deleted_at"].is_string());
    let r = env.get("/me/time_entries?meta=true").await;
    assert!(r.json[0].get("user_name").is_some());
}

#[tokio::test]
async fn bulk_patch_time_entries() {
    let env = Env::start().await;
    let wid = env.wid();
    let path = format!("/workspaces/{wid}/time_entries");
    let body =
        json!({"created_with":"t","start":"2024-04-01T10:00:00Z","workspace_id":wid,"duration":60})
            .to_string();
    let a = env.post(&path, &body).await.json["id"].as_i64().expect("a");
    let b = env.post(&path, &body).await.json["id"].as_i64().expect("b");
    let ops = r#"[{"op":"replace","path":"/description","value":"Standup"},
                  {"op":"add","path":"/tags","value":["meeting"]}]"#;
    let r = env.patch(&format!("{path}/{a},{b},999"), ops).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["success"], json!([a, b]));
    assert_eq!(r.json["failure"][0]["id"], json!(999));
    assert_eq!(
        r.json["failure"][0]["message"],
        json!("Time entry not found")
    );
    let got = env.get(&format!("/me/time_entries/{a}")).await.json;
    assert_eq!(got["description"], json!("Standup"));
    assert_eq!(got["tags"], json!(["meeting"]));

    let bad = r#"[{"op":"replace","path":"/project_id","value":1}]"#;
    let r = env.patch(&format!("{path}/{a}"), bad).await;
    assert_eq!(r.json["success"], json!([]));
    assert_eq!(r.json["failure"][0]["message"], json!("Invalid project_id"));

    let many: Vec<String> = (0..101).map(|i| (i + 1).to_string()).collect();
    let r = env.patch(&format!("{path}/{}", many.join(",")), ops).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn workspaces_and_workspace_users() {
    let env = Env::start().await;
    let wid = env.wid();
    assert_eq!(
        env.get("/workspaces")
            .await
            .json
            .as_array()
            .expect("a")
            .len(),
        2
    );
    let w = env.get(&format!("/workspaces/{wid}")).await.json;
    assert_eq!(w["organization_id"], json!(env.oid()));
    assert_error(
        &env.get("/workspaces/1").await,
        403,
        "User does not have access to this resource.",
    );
    let users = env.get(&format!("/workspaces/{wid}/users")).await.json;
    assert_eq!(users.as_array().expect("a").len(), 2);
    let wus = env
        .get(&format!("/workspaces/{wid}/workspace_users"))
        .await
        .json;
    let member_wu = wus
        .as_array()
        .expect("a")
        .iter()
        .find(|m| m["uid"] == json!(env.sandbox.member().user_id))
        .expect("member")["id"]
        .as_i64()
        .expect("wu id");
    let path = format!("/workspaces/{wid}/workspace_users/{member_wu}");
    assert_error(
        &env.put(&path, r#"{"admin":true,"role_id":1}"#).await,
        400,
        "Cannot use both admin flags and role_id.",
    );
    let r = env
        .member(Method::PUT, &path, Some(r#"{"role":"admin"}"#))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .put(&path, r#"{"role":"projectlead","rate":50.5}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let wus = env
        .get(&format!("/workspaces/{wid}/workspace_users"))
        .await
        .json;
    let m = wus
        .as_array()
        .expect("a")
        .iter()
        .find(|m| m["id"] == json!(member_wu))
        .expect("m")
        .clone();
    assert_eq!(m["role"], json!("projectlead"));
    assert_eq!(m["rate"], json!(50.5));
    let admin_wu = wus
        .as_array()
        .expect("a")
        .iter()
        .find(|m| m["uid"] == json!(env.sandbox.facts().user_id))
        .expect("admin")["id"]
        .clone();
    assert_error(
        &env.delete(&format!("/workspaces/{wid}/workspace_users/{admin_wu}"))
            .await,
        400,
        "Bad Request",
    );
    let r = env.delete(&path).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = env
        .member(Method::GET, &format!("/workspaces/{wid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn clients_crud_and_filters() {
    let env = Env::start().await;
    let wid = env.wid();
    let path = format!("/workspaces/{wid}/clients");
    let r = env.post(&path, r#"{"name":"Umbrella","notes":"n"}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json["id"].as_i64().expect("id");
    assert_eq!(r.json["wid"], json!(wid));
    assert_error(
        &env.post(&path, r#"{"name":"umbrella"}"#).await,
        400,
        "Name has already been taken",
    );
    assert_error(
        &env.post(&path, r#"{"name":""}"#).await,
        400,
        "Client name cannot be empty",
    );
    assert_error(
        &env.post(&path, r#"{"name":5}"#).await,
        400,
        r#"Unexpected "name" type number"#,
    );
    let r = env.get(&format!("{path}?name=UMBR")).await;
    assert_eq!(ids(&r.json), vec![id]);
    let r = env
        .put(
            &format!("{path}/{id}"),
            r#"{"name":"Umbrella Corp","archived":true}"#,
        )
        .await;
    assert_eq!(r.json["name"], json!("Umbrella Corp"));
    assert!(!ids(&env.get(&path).await.json).contains(&id));
    assert!(ids(&env.get(&format!("{path}?status=archived")).await.json).contains(&id));
    assert!(ids(&env.get(&format!("{path}?status=both")).await.json).contains(&id));
    assert_error(
        &env.get(&format!("{path}?status=weird")).await,
        400,
        "Client status is invalid",
    );
    let r = env.delete(&format!("{path}/{id}")).await;
    assert_eq!(r.json, json!(id));
    assert_error(
        &env.get(&format!("{path}/{id}")).await,
        404,
        &format!("No client with ID {id} was found"),
    );
    assert_error(
        &env.put(&format!("{path}/{id}"), r#"{"name":"x"}"#).await,
        404,
        "Client doesn't exist in the workspace.",
    );
}

#[tokio::test]
async fn projects_crud_paging_and_bulk_patch() {
    let env = Env::start().await;
    let wid = env.wid();
    let path = format!("/workspaces/{wid}/projects");
    let clients = env.get(&format!("/workspaces/{wid}/clients")).await.json;
    let cid = clients[0]["id"].as_i64().expect("client");
    let r = env
        .post(
            &path,
            &json!({"name":"Apollo","client_id":cid,"color":"#06a893","is_private":false})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["id"].as_i64().expect("id");
    assert_eq!(r.json["cid"], json!(cid));
    assert_eq!(r.json["status"], json!("active"));
    // Same name under another client is fine; under the same client it is taken.
    let r = env.post(&path, r#"{"name":"apollo"}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let other = r.json["id"].as_i64().expect("id");
    assert_error(
        &env.post(&path, &json!({"name":"APOLLO","client_id":cid}).to_string())
            .await,
        400,
        "Name has already been taken",
    );
    assert_error(
        &env.post(&path, r#"{"name":"Bad color","color":"red"}"#)
            .await,
        400,
        "Error in validating color 'red'. Project color must be a hex value in the form of #[0-9a-f]{6}.",
    );
    assert_error(
        &env.post(&path, r#"{"name":"No client","client_id":1}"#)
            .await,
        400,
        &format!("Client with the ID 1 isn't present in workspace {wid}"),
    );
    let got = env.get(&format!("{path}/{id}")).await;
    assert_eq!(got.json["name"], json!("Apollo"));
    assert_error(
        &env.get(&format!("{path}/1")).await,
        404,
        "Resource can not be found",
    );

    // Archive via PUT, then the default list hides it.
    let r = env
        .put(&format!("{path}/{id}"), r#"{"active":false}"#)
        .await;
    assert_eq!(r.json["status"], json!("archived"));
    assert!(!ids(&env.get(&path).await.json).contains(&id));
    assert!(ids(&env.get(&format!("{path}?active=false")).await.json).contains(&id));
    assert!(ids(&env.get(&format!("{path}?active=both")).await.json).contains(&id));

    // Paging: per_page=2 pages through all active projects without overlap.
    let all = ids(&env.get(&format!("{path}?per_page=200")).await.json);
    let mut paged = Vec::new();
    for page in 1.. {
        let chunk = ids(&env
            .get(&format!("{path}?per_page=2&page={page}"))
            .await
            .json);
        let short = chunk.len() < 2;
        paged.extend(chunk);
        if short {
            break;
        }
    }
    assert_eq!(paged, all);

    // Bulk patch: partial success.
    let ops = r##"[{"op":"replace","path":"/color","value":"#c9806b"}]"##;
    let r = env.patch(&format!("{path}/{other},1"), ops).await;
    assert_eq!(r.json["success"], json!([other]));
    assert_eq!(r.json["failure"][0]["id"], json!(1));
    assert_eq!(
        env.get(&format!("{path}/{other}")).await.json["color"],
        json!("#c9806b")
    );

    let since = chrono::Utc::now().timestamp() - 5;
    let r = env.delete(&format!("{path}/{other}")).await;
    assert_eq!(r.json, json!(other));
    assert_error(
        &env.get(&format!("{path}/{other}")).await,
        404,
        "Resource can not be found",
    );
    let r = env.get(&format!("{path}?since={since}&active=both")).await;
    let deleted = r
        .json
        .as_array()
        .expect("a")
        .iter()
        .find(|p| p["id"] == json!(other))
        .expect("deleted listed");
    assert!(deleted["server_deleted_at"].is_string());
}

#[tokio::test]
async fn admin_only_settings_forbid_members() {
    let env = Env::start().await;
    let wid = env.wid();
    let r = env
        .member(
            Method::PUT,
            &format!("/workspaces/{wid}"),
            Some(r#"{"name":"x"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .put(
            &format!("/workspaces/{wid}"),
            r#"{"only_admins_may_create_projects":true,"only_admins_may_create_tags":true}"#,
        )
        .await;
    assert_eq!(r.json["only_admins_may_create_projects"], json!(true));
    let r = env
        .member(
            Method::POST,
            &format!("/workspaces/{wid}/projects"),
            Some(r#"{"name":"Mine"}"#),
        )
        .await;
    assert_error(&r, 403, "Only admins may create projects in this workspace");
    let r = env
        .member(
            Method::POST,
            &format!("/workspaces/{wid}/tags"),
            Some(r#"{"name":"mine"}"#),
        )
        .await;
    assert_error(
        &r,
        403,
        "Only organization or workspace administrators may manage tags in this workspace.",
    );
    let r = env
        .member(
            Method::POST,
            &format!("/organizations/{}/invitations", env.oid()),
            Some(r#"{"emails":["a@b.c"],"workspaces":[{"workspace_id":1}]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn tasks_crud_envelope_and_archived_project() {
    let env = Env::start().await;
    let wid = env.wid();
    let p = env
        .post(
            &format!("/workspaces/{wid}/projects"),
            r#"{"name":"Tasks Home"}"#,
        )
        .await
        .json["id"]
        .as_i64()
        .expect("p");
    let path = format!("/workspaces/{wid}/projects/{p}/tasks");
    let r = env
        .post(&path, r#"{"name":"Alpha","estimated_seconds":3600}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t = r.json["id"].as_i64().expect("t");
    assert_eq!(r.json["project_id"], json!(p));
    env.post(&path, r#"{"name":"Beta","active":false}"#).await;
    assert_eq!(env.get(&path).await.json.as_array().expect("a").len(), 2);
    assert_eq!(
        env.get(&format!("{path}?active=true"))
            .await
            .json
            .as_array()
            .expect("a")
            .len(),
        1
    );
    let r = env
        .put(&format!("{path}/{t}"), r#"{"name":"Alpha 2"}"#)
        .await;
    assert_eq!(r.json["name"], json!("Alpha 2"));
    assert_eq!(
        env.get(&format!("{path}/{t}")).await.json["name"],
        json!("Alpha 2")
    );

    let env_list = env
        .get(&format!("/workspaces/{wid}/tasks?per_page=2&active=both"))
        .await
        .json;
    for key in [
        "data",
        "page",
        "per_page",
        "sort_field",
        "sort_order",
        "total_count",
    ] {
        assert!(env_list.get(key).is_some(), "{key}");
    }
    assert_eq!(env_list["data"].as_array().expect("a").len(), 2);
    assert_eq!(env_list["total_count"], json!(5));
    assert_eq!(env_list["sort_field"], json!("name"));

    env.put(
        &format!("/workspaces/{wid}/projects/{p}"),
        r#"{"active":false}"#,
    )
    .await;
    assert_error(
        &env.post(&path, r#"{"name":"Gamma"}"#).await,
        400,
        "Can not change tasks of archived project",
    );
    env.put(
        &format!("/workspaces/{wid}/projects/{p}"),
        r#"{"active":true}"#,
    )
    .await;
    let r = env.delete(&format!("{path}/{t}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_error(
        &env.get(&format!("{path}/{t}")).await,
        404,
        "Resource can not be found",
    );
}

#[tokio::test]
async fn tags_crud() {
    let env = Env::start().await;
    let wid = env.wid();
    let path = format!("/workspaces/{wid}/tags");
    let r = env.post(&path, r#"{"name":"urgent"}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.json.is_object(),
        "POST returns one tag object: {}",
        r.text
    );
    let id = r.json["id"].as_i64().expect("id");
    assert_error(
        &env.post(&path, r#"{"name":"URGENT"}"#).await,
        400,
        "a tag with the name 'URGENT' already exists",
    );
    assert_error(
        &env.post(&path, r#"{"name":" "}"#).await,
        400,
        "tag name can't be blank",
    );
    let r = env
        .put(&format!("{path}/{id}"), r#"{"name":"later"}"#)
        .await;
    assert_eq!(r.json["name"], json!("later"));
    assert_error(
        &env.put(&format!("{path}/1"), r#"{"name":"x"}"#).await,
        404,
        "Tag was not found",
    );
    assert_eq!(
        env.get(&format!("{path}?search=LAT")).await.json[0]["id"],
        json!(id)
    );
    assert_eq!(
        env.delete(&format!("{path}/{id}")).await.status,
        StatusCode::OK
    );
    assert_error(
        &env.delete(&format!("{path}/{id}")).await,
        404,
        "Tag was not found.",
    );
}

#[tokio::test]
async fn project_users_crud() {
    let env = Env::start().await;
    let wid = env.wid();
    let member = env.sandbox.member().user_id;
    let p = env
        .post(
            &format!("/workspaces/{wid}/projects"),
            r#"{"name":"Team Project"}"#,
        )
        .await
        .json["id"]
        .as_i64()
        .expect("p");
    let path = format!("/workspaces/{wid}/project_users");
    let body = json!({"project_id":p,"user_id":member,"rate":20.0}).to_string();
    let r = env.post(&path, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let puid = r.json["id"].as_i64().expect("id");
    assert_eq!(r.json["rate"], json!(20.0));
    assert_error(
        &env.post(&path, &body).await,
        400,
        "Project user already exists",
    );
    assert_error(
        &env.post(&path, &json!({"project_id":1,"user_id":member}).to_string())
            .await,
        400,
        "Invalid project_id",
    );
    assert_error(
        &env.post(&path, &json!({"project_id":p,"user_id":1}).to_string())
            .await,
        400,
        "Invalid user_id",
    );
    let list = env.get(&format!("{path}?project_ids={p}")).await.json;
    assert_eq!(list.as_array().expect("a").len(), 2, "creator + member");
    let r = env
        .put(&format!("{path}/{puid}"), r#"{"manager":true}"#)
        .await;
    assert_eq!(r.json["manager"], json!(true));
    assert_eq!(
        env.delete(&format!("{path}/{puid}")).await.json,
        json!(puid)
    );
    assert_eq!(
        env.get(&format!("{path}?project_ids={p}"))
            .await
            .json
            .as_array()
            .expect("a")
            .len(),
        1
    );
}

#[tokio::test]
async fn invitations() {
    let env = Env::start().await;
    let wid = env.wid();
    let path = format!("/organizations/{}/invitations", env.oid());
    let r = env
        .post(&path, &json!({"emails":["new@person.test"],"workspaces":[{"workspace_id":wid,"admin":false}]}).to_string())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["data"][0]["email"], json!("new@person.test"));
    assert!(r.json["data"][0]["invitation_id"].is_i64());
    assert!(r.json["invitations"].is_array());
    assert!(r.json["messages"].is_array());
    assert_error(
        &env.post(
            &path,
            &json!({"emails":[],"workspaces":[{"workspace_id":wid}]}).to_string(),
        )
        .await,
        400,
        "at least one email is required",
    );
    assert_error(
        &env.post(
            &path,
            &json!({"emails":["a@b.test"],"workspaces":[]}).to_string(),
        )
        .await,
        400,
        "at least one workspace is required",
    );
    assert_error(
        &env.post(
            &path,
            &json!({"emails":["nope"],"workspaces":[{"workspace_id":wid}]}).to_string(),
        )
        .await,
        400,
        "Invalid e-mail: 'nope'",
    );
    assert_error(
        &env.post(
            &path,
            &json!({"emails":["a@b.test"],"workspaces":[{"workspace_id":1}]}).to_string(),
        )
        .await,
        400,
        "invalid workspace ID",
    );
}

#[tokio::test]
async fn mutations_publish_changes() {
    let env = Env::start().await;
    let wid = env.wid();
    let mut rx = env.sandbox.state().subscribe_changes();
    let body =
        json!({"created_with":"t","start":"2024-06-01T10:00:00Z","workspace_id":wid,"duration":60});
    let r = env
        .post(
            &format!("/workspaces/{wid}/time_entries"),
            &body.to_string(),
        )
        .await;
    let id = r.json["id"].as_i64().expect("id");
    let c = rx.recv().await.expect("change");
    assert_eq!(c.entity, "time_entry");
    assert_eq!(c.action.as_str(), "created");
    assert_eq!(c.entity_id, id);
    assert_eq!(c.workspace_id, wid);
    assert_eq!(c.path, format!("/api/v9/workspaces/{wid}/time_entries"));
    assert_eq!(c.request_type, "POST");
    assert_eq!(c.request_body, body.to_string());
    assert_eq!(c.payload["id"], json!(id));
    env.delete(&format!("/workspaces/{wid}/time_entries/{id}"))
        .await;
    let c = rx.recv().await.expect("change");
    assert_eq!(c.action.as_str(), "deleted");
    assert!(c.payload["server_deleted_at"].is_string());
    env.post(
        &format!("/workspaces/{wid}/clients"),
        r#"{"name":"Evented"}"#,
    )
    .await;
    assert_eq!(rx.recv().await.expect("change").entity, "client");
    // A failed mutation publishes nothing.
    env.post(
        &format!("/workspaces/{wid}/clients"),
        r#"{"name":"Evented"}"#,
    )
    .await;
    env.post(&format!("/workspaces/{wid}/tags"), r#"{"name":"after"}"#)
        .await;
    assert_eq!(rx.recv().await.expect("change").entity, "tag");
}

#[tokio::test]
async fn unknown_paths_and_bad_ids() {
    let env = Env::start().await;
    let r = env.get("/no/such/thing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.text, "404 page not found");
    assert_error(
        &env.get("/workspaces/abc").await,
        400,
        "Invalid workspace_id",
    );
}

#[tokio::test]
async fn at_moves_start_date_and_tag_ids_input() {
    let env = Env::start().await;
    let wid = env.wid();
    let tags = env.get(&format!("/workspaces/{wid}/tags")).await.json;
    let t0 = tags[0]["id"].clone();
    let t1 = tags[1]["id"].clone();
    let r = env
        .post(
            &format!("/workspaces/{wid}/time_entries"),
            &json!({"created_with":"t","start":"2024-01-01T08:30:00Z","start_date":"2024-02-02",
                     "workspace_id":wid,"duration":60,"tag_ids":[t1, t0]})
            .to_string(),
        )
        .await;
    assert_eq!(r.json["start"], json!("2024-02-02T08:30:00Z"));
    assert_eq!(r.json["tag_ids"], json!([t1, t0]));
    assert_eq!(r.json["tags"], json!([tags[1]["name"], tags[0]["name"]]));
    let id = r.json["id"].as_i64().expect("id");
    let path = format!("/workspaces/{wid}/time_entries/{id}");
    let mut last = r.json["at"].as_str().expect("at").to_owned();
    for i in 0..5 {
        let u = env
            .put(&path, &json!({"description": format!("v{i}")}).to_string())
            .await;
        let at = u.json["at"].as_str().expect("at").to_owned();
        assert!(at > last, "at moves: {at} after {last}");
        last = at;
    }
    assert_error(
        &env.put(&path, r#"{"tag_ids":[1]}"#).await,
        400,
        "Invalid tag_ids: 1",
    );
}

#[tokio::test]
async fn inactive_members_lose_access() {
    let env = Env::start().await;
    let wid = env.wid();
    let wus = env
        .get(&format!("/workspaces/{wid}/workspace_users"))
        .await
        .json;
    let wu = wus
        .as_array()
        .expect("a")
        .iter()
        .find(|m| m["uid"] == json!(env.sandbox.member().user_id))
        .expect("member")["id"]
        .clone();
    let r = env
        .put(
            &format!("/workspaces/{wid}/workspace_users/{wu}"),
            r#"{"inactive":true}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let users = env.get(&format!("/workspaces/{wid}/users")).await.json;
    assert!(
        users
            .as_array()
            .expect("a")
            .iter()
            .any(|u| u["inactive"] == json!(true))
    );
    let r = env
        .member(Method::GET, &format!("/workspaces/{wid}/projects"), None)
        .await;
    assert_error(&r, 403, "User does not have access to this resource.");
}

#[tokio::test]
async fn me_projects_paginated_walks_by_cursor() {
    let env = Env::start().await;
    let all = ids(&env.get("/me/projects/paginated?per_page=100").await.json);
    assert!(all.len() >= 4);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    let first = ids(&env.get("/me/projects/paginated?per_page=2").await.json);
    assert_eq!(first, all[..2]);
    let next = ids(&env
        .get(&format!(
            "/me/projects/paginated?per_page=2&start_project_id={}",
            all[1] + 1
        ))
        .await
        .json);
    assert_eq!(next, all[2..4]);
}
