//! The sandbox's in-memory data: plain records and one [`Db`] holding them.
//!
//! Records are the sandbox's own storage format (also the state file's format); the wire JSON
//! is written by hand in `render.rs`. Deletions are soft (a `server_deleted_at`/`deleted_at`
//! stamp) because `since` queries must return deleted entities.
//!
//! Read access for other modules of the crate (the Reports API in particular) goes through the
//! `pub` accessor methods on [`Db`], obtained with [`crate::AppState::read`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A workspace role, as `role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Workspace admin.
    Admin,
    /// Regular member.
    User,
    /// Project lead.
    Projectlead,
    /// Team lead.
    Teamlead,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Projectlead => "projectlead",
            Role::Teamlead => "teamlead",
        }
    }

    /// Toggl's numeric role id (sandbox numbering; the real ids are per organization).
    pub fn id(self) -> i64 {
        match self {
            Role::Admin => 1,
            Role::User => 2,
            Role::Projectlead => 3,
            Role::Teamlead => 4,
        }
    }

    /// Parses a wire name.
    pub fn from_name(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            "projectlead" => Some(Role::Projectlead),
            "teamlead" => Some(Role::Teamlead),
            _ => None,
        }
    }

    /// Parses a numeric role id.
    pub fn from_id(id: i64) -> Option<Role> {
        [Role::Admin, Role::User, Role::Projectlead, Role::Teamlead]
            .into_iter()
            .find(|r| r.id() == id)
    }
}

/// A user account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub id: i64,
    /// Login email.
    pub email: String,
    /// Display name.
    pub fullname: String,
    /// Login password (sandbox only: stored in clear).
    pub password: String,
    /// API token.
    pub api_token: String,
    /// IANA time zone.
    pub timezone: String,
    /// 0 = Sunday.
    pub beginning_of_week: i64,
    /// Country id, null when unset.
    pub country_id: Option<i64>,
    /// Default workspace.
    pub default_workspace_id: i64,
    /// Accounts service id.
    pub toggl_accounts_id: String,
    /// Intercom hash (opaque).
    pub intercom_hash: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last profile update.
    pub updated_at: DateTime<Utc>,
    /// Last modification.
    pub at: DateTime<Utc>,
}

/// An organization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Organization {
    /// Organization id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The owner (an admin).
    pub owner_id: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last modification.
    pub at: DateTime<Utc>,
}

/// A workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workspace {
    /// Workspace id.
    pub id: i64,
    /// Owning organization.
    pub organization_id: i64,
    /// Name.
    pub name: String,
    /// Currency code.
    pub default_currency: String,
    /// Default hourly rate.
    pub default_hourly_rate: Option<f64>,
    /// Rounding mode.
    pub rounding: i64,
    /// Rounding minutes.
    pub rounding_minutes: i64,
    /// Only admins may create projects.
    pub only_admins_may_create_projects: bool,
    /// Only admins may create tags.
    pub only_admins_may_create_tags: bool,
    /// Only admins see the team dashboard.
    pub only_admins_see_team_dashboard: bool,
    /// New projects are billable by default.
    pub projects_billable_by_default: bool,
    /// New projects are private by default.
    pub projects_private_by_default: bool,
    /// Reports collapse.
    pub reports_collapse: bool,
    /// Limit public project data.
    pub limit_public_project_data: bool,
    /// Last modification.
    pub at: DateTime<Utc>,
}

/// Membership of a user in a workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceUser {
    /// Workspace-user id (not the user id).
    pub id: i64,
    /// Workspace.
    pub workspace_id: i64,
    /// User.
    pub user_id: i64,
    /// Role in the workspace.
    pub role: Role,
    /// Deactivated by an admin.
    pub inactive: bool,
    /// Billable rate.
    pub rate: Option<f64>,
    /// When the rate last changed.
    pub rate_last_updated: Option<DateTime<Utc>>,
    /// Labor cost.
    pub labor_cost: Option<f64>,
    /// When the labor cost last changed.
    pub labor_cost_last_updated: Option<DateTime<Utc>>,
    /// Working hours per day in minutes.
    pub working_hours_in_minutes: Option<i64>,
    /// May view and edit billable rates.
    pub view_edit_billable_rates: bool,
    /// May view and edit labor costs.
    pub view_edit_labor_costs: bool,
    /// Last modification.
    pub at: DateTime<Utc>,
}

/// A client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    /// Client id.
    pub id: i64,
    /// Workspace.
    pub workspace_id: i64,
    /// Name (unique per workspace, case-insensitive).
    pub name: String,
    /// Archived.
    pub archived: bool,
    /// Notes.
    pub notes: Option<String>,
    /// External reference.
    pub external_reference: Option<String>,
    /// Creator.
    pub creator_id: i64,
    /// Last modification.
    pub at: DateTime<Utc>,
    /// Soft deletion.
    pub server_deleted_at: Option<DateTime<Utc>>,
}

/// A project.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    /// Project id.
    pub id: i64,
    /// Workspace.
    pub workspace_id: i64,
    /// Client.
    pub client_id: Option<i64>,
    /// Name (unique per workspace and client).
    pub name: String,
    /// Private project.
    pub is_private: bool,
    /// Active (false = archived).
    pub active: bool,
    /// Hex color `#rrggbb`.
    pub color: String,
    /// Billable.
    pub billable: bool,
    /// Template.
    pub template: bool,
    /// Auto estimates.
    pub auto_estimates: bool,
    /// Estimated hours.
    pub estimated_hours: Option<i64>,
    /// Hourly rate.
    pub rate: Option<f64>,
    /// Currency.
    pub currency: Option<String>,
    /// Fixed fee.
    pub fixed_fee: Option<f64>,
    /// Start date `YYYY-MM-DD`.
    pub start_date: String,
    /// End date `YYYY-MM-DD`.
    pub end_date: Option<String>,
    /// Recurring.
    pub recurring: bool,
    /// External reference.
    pub external_reference: Option<String>,
    /// Creator.
    pub creator_id: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last modification.
    pub at: DateTime<Utc>,
    /// Soft deletion.
    pub server_deleted_at: Option<DateTime<Utc>>,
}

/// A task of a project.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// Task id.
    pub id: i64,
    /// Workspace.
    pub workspace_id: i64,
    /// Project.
    pub project_id: i64,
    /// Name.
    pub name: String,
    /// Active.
    pub active: bool,
    /// Estimate in seconds.
    pub estimated_seconds: Option<i64>,
    /// Assignee.
    pub user_id: Option<i64>,
    /// External reference.
    pub external_reference: Option<String>,
    /// Last modification.
    pub at: DateTime<Utc>,
    /// Soft deletion.
    pub server_deleted_at: Option<DateTime<Utc>>,
}

/// A tag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tag {
    /// Tag id.
    pub id: i64,
    /// Workspace.
    pub workspace_id: i64,
    /// Name (unique per workspace).
    pub name: String,
    /// Creator.
    pub creator_id: i64,
    /// Last modification.
    pub at: DateTime<Utc>,
    /// Soft deletion.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Membership of a user in a project.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectUser {
    /// Project-user id.
    pub id: i64,
    /// Workspace.
    pub workspace_id: i64,
    /// Project.
    pub project_id: i64,
    /// User.
    pub user_id: i64,
    /// Project manager.
    pub manager: bool,
    /// Rate.
    pub rate: Option<f64>,
    /// When the rate last changed.
    pub rate_last_updated: Option<DateTime<Utc>>,
    /// Labor cost.
    pub labor_cost: Option<f64>,
    /// When the labor cost last changed.
    pub labor_cost_last_updated: Option<DateTime<Utc>>,
    /// Last modification.
    pub at: DateTime<Utc>,
}

/// A time entry. Running iff `stop` is `None` and `duration < 0`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimeEntry {
    /// Time entry id.
    pub id: i64,
    /// Workspace.
    pub workspace_id: i64,
    /// Owner.
    pub user_id: i64,
    /// Project.
    pub project_id: Option<i64>,
    /// Task.
    pub task_id: Option<i64>,
    /// Billable.
    pub billable: bool,
    /// Start (second precision).
    pub start: DateTime<Utc>,
    /// Stop; `None` while running.
    pub stop: Option<DateTime<Utc>>,
    /// Seconds; negative while running.
    pub duration: i64,
    /// Description; shared between seeded entries to keep memory low.
    pub description: Option<Arc<str>>,
    /// Tag ids in the order given; `None` when tags were never set (rendered as null).
    pub tag_ids: Option<Vec<i64>>,
    /// Last modification.
    pub at: DateTime<Utc>,
    /// Soft deletion.
    pub server_deleted_at: Option<DateTime<Utc>>,
}

impl TimeEntry {
    /// Whether the entry is running.
    pub fn is_running(&self) -> bool {
        self.stop.is_none() && self.duration < 0
    }

    /// Whether the entry is soft-deleted.
    pub fn is_deleted(&self) -> bool {
        self.server_deleted_at.is_some()
    }
}

/// An invitation sent to an email address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invitation {
    /// Invitation id.
    pub id: i64,
    /// Organization.
    pub organization_id: i64,
    /// Sender.
    pub sender_id: i64,
    /// Recipient email.
    pub email: String,
    /// Invite code.
    pub code: String,
    /// Workspaces with the admin flag.
    pub workspaces: Vec<(i64, bool)>,
}

/// Next ids per kind. Ids start above 2^31 (real Toggl ids do) with a distinct range per kind
/// so that mixing up an id kind in a client shows up as a 404 rather than a wrong hit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdCounters {
    next: BTreeMap<String, i64>,
}

impl IdCounters {
    /// Allocates the next id of `kind`.
    pub fn next(&mut self, kind: IdKind) -> i64 {
        let slot = self
            .next
            .entry(kind.name().to_owned())
            .or_insert_with(|| kind.base());
        let id = *slot;
        *slot += 1;
        id
    }
}

/// The kinds of ids the sandbox allocates.
#[derive(Debug, Clone, Copy)]
pub enum IdKind {
    /// Organizations.
    Organization,
    /// Workspaces.
    Workspace,
    /// Users.
    User,
    /// Workspace users.
    WorkspaceUser,
    /// Clients.
    Client,
    /// Projects.
    Project,
    /// Tasks.
    Task,
    /// Tags.
    Tag,
    /// Project users.
    ProjectUser,
    /// Invitations.
    Invitation,
    /// Time entries.
    TimeEntry,
}

impl IdKind {
    fn name(self) -> &'static str {
        match self {
            IdKind::Organization => "organization",
            IdKind::Workspace => "workspace",
            IdKind::User => "user",
            IdKind::WorkspaceUser => "workspace_user",
            IdKind::Client => "client",
            IdKind::Project => "project",
            IdKind::Task => "task",
            IdKind::Tag => "tag",
            IdKind::ProjectUser => "project_user",
            IdKind::Invitation => "invitation",
            IdKind::TimeEntry => "time_entry",
        }
    }

    fn base(self) -> i64 {
        match self {
            IdKind::Organization => 4_000_000_001,
            IdKind::Workspace => 4_010_000_001,
            IdKind::User => 4_020_000_001,
            IdKind::WorkspaceUser => 4_030_000_001,
            IdKind::Client => 4_040_000_001,
            IdKind::Project => 4_050_000_001,
            IdKind::Task => 4_060_000_001,
            IdKind::Tag => 4_070_000_001,
            IdKind::ProjectUser => 4_080_000_001,
            IdKind::Invitation => 4_090_000_001,
            IdKind::TimeEntry => 4_100_000_001,
        }
    }
}

/// All sandbox data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Db {
    pub(crate) ids: IdCounters,
    pub(crate) organizations: BTreeMap<i64, Organization>,
    pub(crate) workspaces: BTreeMap<i64, Workspace>,
    pub(crate) users: BTreeMap<i64, User>,
    pub(crate) workspace_users: BTreeMap<i64, WorkspaceUser>,
    pub(crate) clients: BTreeMap<i64, Client>,
    pub(crate) projects: BTreeMap<i64, Project>,
    pub(crate) tasks: BTreeMap<i64, Task>,
    pub(crate) tags: BTreeMap<i64, Tag>,
    pub(crate) project_users: BTreeMap<i64, ProjectUser>,
    pub(crate) time_entries: BTreeMap<i64, TimeEntry>,
    pub(crate) invitations: BTreeMap<i64, Invitation>,
    /// The admin user created at bootstrap.
    pub(crate) admin_id: i64,
    /// The member user created at bootstrap.
    pub(crate) member_id: i64,
    /// The default workspace created at bootstrap.
    pub(crate) default_workspace_id: i64,
}

impl Db {
    /// All users.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// One user.
    pub fn user(&self, id: i64) -> Option<&User> {
        self.users.get(&id)
    }

    /// All organizations.
    pub fn organizations(&self) -> impl Iterator<Item = &Organization> {
        self.organizations.values()
    }

    /// One workspace.
    pub fn workspace(&self, id: i64) -> Option<&Workspace> {
        self.workspaces.get(&id)
    }

    /// All workspaces.
    pub fn workspaces(&self) -> impl Iterator<Item = &Workspace> {
        self.workspaces.values()
    }

    /// Memberships of `workspace_id` (active and inactive).
    pub fn workspace_users(&self, workspace_id: i64) -> impl Iterator<Item = &WorkspaceUser> {
        self.workspace_users
            .values()
            .filter(move |w| w.workspace_id == workspace_id)
    }

    /// Clients of a workspace, including archived and deleted ones.
    pub fn clients(&self, workspace_id: i64) -> impl Iterator<Item = &Client> {
        self.clients
            .values()
            .filter(move |c| c.workspace_id == workspace_id)
    }

    /// Projects of a workspace, including archived and deleted ones.
    pub fn projects(&self, workspace_id: i64) -> impl Iterator<Item = &Project> {
        self.projects
            .values()
            .filter(move |p| p.workspace_id == workspace_id)
    }

    /// Tasks of a workspace, including inactive and deleted ones.
    pub fn tasks(&self, workspace_id: i64) -> impl Iterator<Item = &Task> {
        self.tasks
            .values()
            .filter(move |t| t.workspace_id == workspace_id)
    }

    /// Tags of a workspace, including deleted ones.
    pub fn tags(&self, workspace_id: i64) -> impl Iterator<Item = &Tag> {
        self.tags
            .values()
            .filter(move |t| t.workspace_id == workspace_id)
    }

    /// Time entries of a workspace (all users), including running and deleted ones, by id.
    pub fn time_entries(&self, workspace_id: i64) -> impl Iterator<Item = &TimeEntry> {
        self.time_entries
            .values()
            .filter(move |t| t.workspace_id == workspace_id)
    }

    /// The membership of `user_id` in `workspace_id`, if any (inactive ones included).
    pub fn membership(&self, user_id: i64, workspace_id: i64) -> Option<&WorkspaceUser> {
        self.workspace_users
            .values()
            .find(|w| w.workspace_id == workspace_id && w.user_id == user_id)
    }

    /// Whether the user is an active member of the workspace, and whether as admin.
    pub fn access(&self, user_id: i64, workspace_id: i64) -> Option<bool> {
        let m = self.membership(user_id, workspace_id)?;
        if m.inactive {
            return None;
        }
        Some(m.role == Role::Admin || self.is_org_owner(user_id, workspace_id))
    }

    fn is_org_owner(&self, user_id: i64, workspace_id: i64) -> bool {
        self.workspaces
            .get(&workspace_id)
            .and_then(|w| self.organizations.get(&w.organization_id))
            .is_some_and(|o| o.owner_id == user_id)
    }

    /// Workspaces the user is an active member of.
    pub fn workspaces_of(&self, user_id: i64) -> Vec<i64> {
        self.workspace_users
            .values()
            .filter(|w| w.user_id == user_id && !w.inactive)
            .map(|w| w.workspace_id)
            .collect()
    }

    /// Organizations the user belongs to through a workspace.
    pub fn organizations_of(&self, user_id: i64) -> Vec<i64> {
        let mut orgs: Vec<i64> = self
            .workspaces_of(user_id)
            .into_iter()
            .filter_map(|w| self.workspaces.get(&w).map(|w| w.organization_id))
            .collect();
        orgs.sort_unstable();
        orgs.dedup();
        orgs
    }

    /// Tag names for a list of tag ids (deleted tags are dropped).
    pub fn tag_names(&self, ids: &[i64]) -> Vec<String> {
        ids.iter()
            .filter_map(|id| self.tags.get(id))
            .map(|t| t.name.clone())
            .collect()
    }
}
