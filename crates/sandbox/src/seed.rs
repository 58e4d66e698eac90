//! Bootstrap data and demo seeds, deterministic given `seed_value`.
//!
//! Every sandbox gets one organization, one workspace, an admin (organization owner) and a
//! member. Tokens and passwords come from a ChaCha8 generator seeded with `seed_value`, so the
//! same value always yields the same credentials, ids and demo content. Timestamps are anchored
//! at midnight UTC of the start day (history goes backwards from there), except the running
//! entry of the `small` seed, which starts 25 minutes before start-up so it looks current.
//!
//! `seed_entries` is built for volume: descriptions are shared `Arc<str>`s from a small pool,
//! most entries carry no tag vector allocation, ids are inserted in ascending order.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{SandboxConfig, Seed};
use crate::model::{
    Client, Db, IdKind, Organization, Project, ProjectUser, Role, Tag, Task, TimeEntry, User,
    Workspace, WorkspaceUser,
};
use crate::timefmt::{trunc_micros, trunc_secs};

// RFC 2606 `example.com`, not the `.test` TLD: real accounts have deliverable-looking
// addresses, and clients that validate `email` strictly (pydantic's `EmailStr` in
// toggl-python) reject special-use TLDs such as `.test`, `.local` or `.invalid`.
const ADMIN_EMAIL: &str = "admin@example.com";
const MEMBER_EMAIL: &str = "member@example.com";
const DESCRIPTIONS: [&str; 12] = [
    "Write report",
    "Standup",
    "Code review",
    "Customer call",
    "Planning",
    "Bug triage",
    "Design review",
    "Email",
    "Research",
    "Deploy",
    "Pairing",
    "Documentation",
];

fn hex(rng: &mut ChaCha8Rng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
        .collect()
}

fn anchor() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

/// Builds the initial data for a fresh sandbox.
pub(crate) fn build(config: &SandboxConfig) -> Db {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed_value);
    let mut db = Db::default();
    let t0 = anchor();
    let created = t0 - Duration::days(30);

    let org_id = db.ids.next(IdKind::Organization);
    let ws_id = db.ids.next(IdKind::Workspace);
    let admin_id = db.ids.next(IdKind::User);
    let member_id = db.ids.next(IdKind::User);
    let admin_token = config
        .api_token
        .clone()
        .unwrap_or_else(|| hex(&mut rng, 16));
    let member_token = hex(&mut rng, 16);
    let admin_password = format!("sandbox-{}", hex(&mut rng, 4));
    let member_password = format!("sandbox-{}", hex(&mut rng, 4));
    for (id, email, name, token, password) in [
        (
            admin_id,
            ADMIN_EMAIL,
            "Sandbox Admin",
            admin_token,
            admin_password,
        ),
        (
            member_id,
            MEMBER_EMAIL,
            "Sandbox Member",
            member_token,
            member_password,
        ),
    ] {
        let accounts_id = hex(&mut rng, 11);
        let intercom = hex(&mut rng, 32);
        db.users.insert(
            id,
            User {
                id,
                email: email.into(),
                fullname: name.into(),
                password,
                api_token: token,
                timezone: "UTC".into(),
                beginning_of_week: 1,
                country_id: None,
                default_workspace_id: ws_id,
                toggl_accounts_id: accounts_id,
                intercom_hash: intercom,
                created_at: created,
                updated_at: created,
                at: created,
            },
        );
    }
    db.organizations.insert(
        org_id,
        Organization {
            id: org_id,
            name: "Sandbox Organization".into(),
            owner_id: admin_id,
            created_at: created,
            at: created,
        },
    );
    add_workspace(&mut db, ws_id, org_id, "Sandbox Workspace", created);
    add_member(&mut db, ws_id, admin_id, Role::Admin, created);
    add_member(&mut db, ws_id, member_id, Role::User, created);
    db.admin_id = admin_id;
    db.member_id = member_id;
    db.default_workspace_id = ws_id;

    if config.seed == Seed::Small {
        small(&mut db, &mut rng, org_id, t0);
    }
    if config.seed_entries > 0 {
        entries(&mut db, &mut rng, config.seed_entries, t0);
    }
    db
}

pub(crate) fn add_workspace(db: &mut Db, id: i64, org: i64, name: &str, at: DateTime<Utc>) {
    db.workspaces.insert(
        id,
        Workspace {
            id,
            organization_id: org,
            name: name.into(),
            default_currency: "USD".into(),
            default_hourly_rate: None,
            rounding: 1,
            rounding_minutes: 0,
            only_admins_may_create_projects: false,
            only_admins_may_create_tags: false,
            only_admins_see_team_dashboard: false,
            projects_billable_by_default: true,
            projects_private_by_default: true,
            reports_collapse: true,
            limit_public_project_data: false,
            at,
        },
    );
}

pub(crate) fn add_member(db: &mut Db, ws: i64, user: i64, role: Role, at: DateTime<Utc>) {
    let id = db.ids.next(IdKind::WorkspaceUser);
    db.workspace_users.insert(
        id,
        WorkspaceUser {
            id,
            workspace_id: ws,
            user_id: user,
            role,
            inactive: false,
            rate: None,
            rate_last_updated: None,
            labor_cost: None,
            labor_cost_last_updated: None,
            working_hours_in_minutes: None,
            view_edit_billable_rates: role == Role::Admin,
            view_edit_labor_costs: role == Role::Admin,
            at,
        },
    );
}

struct ProjectSpec<'a> {
    ws: i64,
    name: &'a str,
    client: Option<i64>,
    private: bool,
    active: bool,
    color: &'a str,
}

fn add_project(db: &mut Db, spec: ProjectSpec<'_>, creator: i64, at: DateTime<Utc>) -> i64 {
    let id = db.ids.next(IdKind::Project);
    db.projects.insert(
        id,
        Project {
            id,
            workspace_id: spec.ws,
            client_id: spec.client,
            name: spec.name.into(),
            is_private: spec.private,
            active: spec.active,
            color: spec.color.into(),
            billable: false,
            template: false,
            auto_estimates: false,
            estimated_hours: None,
            rate: None,
            currency: None,
            fixed_fee: None,
            start_date: at.date_naive().format("%Y-%m-%d").to_string(),
            end_date: None,
            recurring: false,
            external_reference: None,
            creator_id: creator,
            created_at: at,
            at,
            server_deleted_at: None,
        },
    );
    add_project_user(db, spec.ws, id, creator, true, at);
    id
}

fn add_project_user(
    db: &mut Db,
    ws: i64,
    project: i64,
    user: i64,
    manager: bool,
    at: DateTime<Utc>,
) {
    let id = db.ids.next(IdKind::ProjectUser);
    db.project_users.insert(
        id,
        ProjectUser {
            id,
            workspace_id: ws,
            project_id: project,
            user_id: user,
            manager,
            rate: None,
            rate_last_updated: None,
            labor_cost: None,
            labor_cost_last_updated: None,
            at,
        },
    );
}

fn add_client(db: &mut Db, ws: i64, name: &str, creator: i64, at: DateTime<Utc>) -> i64 {
    let id = db.ids.next(IdKind::Client);
    db.clients.insert(
        id,
        Client {
            id,
            workspace_id: ws,
            name: name.into(),
            archived: false,
            notes: None,
            external_reference: None,
            creator_id: creator,
            at,
            server_deleted_at: None,
        },
    );
    id
}

fn add_tag(db: &mut Db, ws: i64, name: &str, creator: i64, at: DateTime<Utc>) -> i64 {
    let id = db.ids.next(IdKind::Tag);
    db.tags.insert(
        id,
        Tag {
            id,
            workspace_id: ws,
            name: name.into(),
            creator_id: creator,
            at,
            deleted_at: None,
        },
    );
    id
}

fn add_task(db: &mut Db, ws: i64, project: i64, name: &str, at: DateTime<Utc>) -> i64 {
    let id = db.ids.next(IdKind::Task);
    db.tasks.insert(
        id,
        Task {
            id,
            workspace_id: ws,
            project_id: project,
            name: name.into(),
            active: true,
            estimated_seconds: Some(36_000),
            user_id: None,
            external_reference: None,
            at,
            server_deleted_at: None,
        },
    );
    id
}

struct EntrySpec {
    ws: i64,
    user: i64,
    project: Option<i64>,
    task: Option<i64>,
    start: DateTime<Utc>,
    seconds: Option<i64>,
    description: Arc<str>,
    tags: Option<Vec<i64>>,
}

fn add_entry(db: &mut Db, e: EntrySpec) -> i64 {
    let id = db.ids.next(IdKind::TimeEntry);
    let start = trunc_secs(e.start);
    let (stop, duration, at) = match e.seconds {
        Some(s) => {
            let stop = start + Duration::seconds(s);
            (Some(stop), s, stop + Duration::seconds(1))
        }
        None => (None, -1, start),
    };
    db.time_entries.insert(
        id,
        TimeEntry {
            id,
            workspace_id: e.ws,
            user_id: e.user,
            project_id: e.project,
            task_id: e.task,
            billable: false,
            start,
            stop,
            duration,
            description: Some(e.description),
            tag_ids: e.tags,
            at,
            server_deleted_at: None,
        },
    );
    id
}

fn small(db: &mut Db, rng: &mut ChaCha8Rng, org: i64, t0: DateTime<Utc>) {
    let admin = db.admin_id;
    let member = db.member_id;
    let ws = db.default_workspace_id;
    let at = t0 - Duration::days(20);
    let side = db.ids.next(IdKind::Workspace);
    add_workspace(db, side, org, "Side Projects", at);
    add_member(db, side, admin, Role::Admin, at);
    add_member(db, side, member, Role::User, at);

    let acme = add_client(db, ws, "Acme Corp", admin, at);
    let globex = add_client(db, ws, "Globex", admin, at);
    let initech = add_client(db, side, "Initech", admin, at);
    let website = add_project(
        db,
        ProjectSpec {
            ws,
            name: "Website Redesign",
            client: Some(acme),
            private: false,
            active: true,
            color: "#0b83d9",
        },
        admin,
        at,
    );
    let mobile = add_project(
        db,
        ProjectSpec {
            ws,
            name: "Mobile App",
            client: Some(globex),
            private: false,
            active: true,
            color: "#9e5bd9",
        },
        admin,
        at,
    );
    let internal = add_project(
        db,
        ProjectSpec {
            ws,
            name: "Internal",
            client: None,
            private: true,
            active: true,
            color: "#d94182",
        },
        admin,
        at,
    );
    add_project(
        db,
        ProjectSpec {
            ws,
            name: "Legacy Migration",
            client: Some(acme),
            private: false,
            active: false,
            color: "#e36a00",
        },
        admin,
        at,
    );
    let blog = add_project(
        db,
        ProjectSpec {
            ws: side,
            name: "Blog",
            client: Some(initech),
            private: false,
            active: true,
            color: "#2da608",
        },
        admin,
        at,
    );
    add_project_user(db, ws, website, member, false, at);
    let design = add_task(db, ws, website, "Design", at);
    add_task(db, ws, website, "Implementation", at);
    add_task(db, ws, mobile, "QA", at);
    let meeting = add_tag(db, ws, "meeting", admin, at);
    let deep = add_tag(db, ws, "deep-work", admin, at);
    add_tag(db, ws, "billable-review", admin, at);
    add_tag(db, side, "writing", admin, at);

    type Planned<'a> = (i64, Option<i64>, Option<i64>, &'a str, Option<Vec<i64>>);
    let plan: [Planned<'_>; 6] = [
        (
            admin,
            Some(website),
            Some(design),
            "Wireframes",
            Some(vec![deep]),
        ),
        (admin, Some(mobile), None, "Release checklist", Some(vec![])),
        (admin, Some(internal), None, "Standup", Some(vec![meeting])),
        (admin, None, None, "Email", None),
        (
            member,
            Some(website),
            None,
            "Landing page copy",
            Some(vec![]),
        ),
        (member, None, None, "Onboarding", None),
    ];
    for (day, (user, project, task, description, tags)) in plan.into_iter().enumerate() {
        let start = t0 - Duration::days(day as i64 + 1)
            + Duration::hours(9)
            + Duration::minutes(rng.gen_range(0..60));
        add_entry(
            db,
            EntrySpec {
                ws,
                user,
                project,
                task,
                start,
                seconds: Some(rng.gen_range(1800..10_800)),
                description: description.into(),
                tags,
            },
        );
    }
    add_entry(
        db,
        EntrySpec {
            ws: side,
            user: admin,
            project: Some(blog),
            task: None,
            start: t0 - Duration::days(2) + Duration::hours(14),
            seconds: Some(3600),
            description: "Draft post".into(),
            tags: Some(vec![]),
        },
    );
    // The running entry: current, so clients see a realistic elapsed time.
    add_entry(
        db,
        EntrySpec {
            ws,
            user: admin,
            project: Some(website),
            task: None,
            start: trunc_micros(Utc::now()) - Duration::minutes(25),
            seconds: None,
            description: "Write report".into(),
            tags: None,
        },
    );
}

fn entries(db: &mut Db, rng: &mut ChaCha8Rng, n: usize, t0: DateTime<Utc>) {
    let ws = db.default_workspace_id;
    let user = db.admin_id;
    let projects: Vec<i64> = db
        .projects(ws)
        .filter(|p| p.active && p.server_deleted_at.is_none())
        .map(|p| p.id)
        .collect();
    let tags: Vec<i64> = db.tags(ws).map(|t| t.id).collect();
    let pool: Vec<Arc<str>> = DESCRIPTIONS.iter().map(|d| Arc::from(*d)).collect();
    let mut cursor = t0;
    for _ in 0..n {
        let gap = rng.gen_range(10..60i64) * 60;
        cursor -= Duration::seconds(gap);
        let seconds = rng.gen_range(300..=gap);
        let project = if projects.is_empty() || rng.gen_bool(0.2) {
            None
        } else {
            Some(projects[rng.gen_range(0..projects.len())])
        };
        let tag_ids = if !tags.is_empty() && rng.gen_bool(0.3) {
            Some(vec![tags[rng.gen_range(0..tags.len())]])
        } else {
            Some(Vec::new())
        };
        let description = pool[rng.gen_range(0..pool.len())].clone();
        add_entry(
            db,
            EntrySpec {
                ws,
                user,
                project,
                task: None,
                start: cursor,
                seconds: Some(seconds),
                description,
                tags: tag_ids,
            },
        );
    }
}
