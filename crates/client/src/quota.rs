//! The hourly quota budget, shared by all work of one token.
//!
//! Toggl meters requests per (user, organization) and, separately, per user for calls that are not
//! tied to a workspace (`/me...`). Past the quota it answers 402 with `X-Toggl-Quota-Remaining` and
//! `X-Toggl-Quota-Resets-In`; both headers also come on ordinary responses. The budget keeps, per
//! scope, an estimate of the requests left and the instant the window resets:
//!
//! - every request *reserves* one unit before it is sent, so concurrent callers cannot all spend
//!   the last unit;
//! - every response with quota headers corrects the estimate (`remaining - requests still in
//!   flight`: pessimistic on purpose, the next responses make it exact again);
//! - when the estimate is spent and the reset lies ahead, callers sleep until the reset instead of
//!   calling Toggl (or fail with [`ClientError::QuotaExhausted`] when the wait is too long);
//! - when the state is unknown (nothing seen yet, or a window has just reset after being spent),
//!   exactly one request goes out as a *probe* and every other caller of that scope waits for its
//!   answer. So after a 402 Toggl sees at most one request per window until it says otherwise.
//!
//! Workspaces are keyed by their organization once it is known ([`QuotaBudget::set_workspace_org`],
//! learned from `GET /api/v9/me/workspaces`); until then a workspace is its own scope.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::ClientError;

/// Header with the requests left in the current quota window (may be negative).
pub const HEADER_QUOTA_REMAINING: &str = "x-toggl-quota-remaining";
/// Header with the seconds until the current quota window resets.
pub const HEADER_QUOTA_RESETS_IN: &str = "x-toggl-quota-resets-in";

/// How long to wait after a spent window whose reset time is unknown or already due. Toggl
/// reports whole seconds, so "0" can still mean "a few hundred milliseconds"; without this floor a
/// rounding difference would turn into a tight loop of 402s.
const MIN_SPENT_WAIT: Duration = Duration::from_secs(1);

/// When a response says the quota is spent but gives no reset time: assume a minute (the window is
/// an hour; a minute keeps the number of probes low without stalling for long). Defensive choice,
/// Toggl always sends both headers as far as known.
const UNKNOWN_RESET_WAIT: Duration = Duration::from_secs(60);

/// Which quota a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaScope {
    /// The per-user quota (30/h on every plan): `/me...` and calls tied to no workspace.
    User,
    /// The per (user, organization) quota.
    Organization(u64),
    /// A workspace whose organization is not known yet; becomes [`QuotaScope::Organization`].
    Workspace(u64),
}

impl QuotaScope {
    /// Classifies a request path (from the host root).
    ///
    /// `/api/v9/workspaces/{wid}/...`, `/webhooks/api/v1/subscriptions/{wid}...`,
    /// `/reports/api/v3/workspace/{wid}/...` and `/insights/api/v1/workspace/{wid}/...` are
    /// workspace-scoped; `/api/v9/organizations/{oid}/...` is organization-scoped. Everything else
    /// (`/api/v9/me...`, `/api/v9/workspaces`, `/webhooks/api/v1/event_filters`, ...) is tied to no
    /// workspace and so, following Toggl's definition, user-level. Where Toggl's metering of such a
    /// path is UNCONFIRMED, the user scope is the defensive choice: it is the smallest quota.
    pub fn for_path(path: &str) -> Self {
        let segments: Vec<&str> = path
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let id_after = |prefix: &[&str]| -> Option<u64> {
            if segments.len() > prefix.len() && segments[..prefix.len()] == *prefix {
                segments[prefix.len()].parse().ok()
            } else {
                None
            }
        };
        if let Some(wid) = id_after(&["api", "v9", "workspaces"]) {
            return Self::Workspace(wid);
        }
        if let Some(oid) = id_after(&["api", "v9", "organizations"]) {
            return Self::Organization(oid);
        }
        if let Some(wid) = id_after(&["webhooks", "api", "v1", "subscriptions"]) {
            return Self::Workspace(wid);
        }
        if let Some(wid) = id_after(&["webhooks", "api", "v1", "validate"]) {
            return Self::Workspace(wid);
        }
        if let Some(wid) = id_after(&["reports", "api", "v3", "workspace"]) {
            return Self::Workspace(wid);
        }
        if let Some(wid) = id_after(&["insights", "api", "v1", "workspace"]) {
            return Self::Workspace(wid);
        }
        Self::User
    }
}

impl fmt::Display for QuotaScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User => f.write_str("user-level quota"),
            Self::Organization(oid) => write!(f, "organization {oid} quota"),
            Self::Workspace(wid) => write!(f, "workspace {wid} quota"),
        }
    }
}

/// The quota headers of one response, as Toggl sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaHeaders {
    /// `X-Toggl-Quota-Remaining`, when present and readable.
    pub remaining: Option<i64>,
    /// `X-Toggl-Quota-Resets-In`, when present and readable.
    pub resets_in: Option<Duration>,
}

impl QuotaHeaders {
    /// Reads the quota headers; `None` when neither is present (or both are unreadable).
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let remaining = text(HEADER_QUOTA_REMAINING).and_then(parse_remaining);
        let resets_in = text(HEADER_QUOTA_RESETS_IN).and_then(parse_resets_in);
        if remaining.is_none() && resets_in.is_none() {
            return None;
        }
        Some(Self {
            remaining,
            resets_in,
        })
    }
}

fn parse_remaining(text: &str) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    // A fractional count is not expected; rounding down never overestimates the budget.
    #[allow(clippy::cast_possible_truncation)]
    Some(f.floor() as i64)
}

fn parse_resets_in(text: &str) -> Option<Duration> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(Duration::from_secs(n.max(0).unsigned_abs()));
    }
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    Some(Duration::from_secs_f64(f.clamp(0.0, 1.0e9)))
}

/// What the client knows about one scope, for `serve` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSnapshot {
    /// The scope (a workspace scope means its organization is not known yet).
    pub scope: QuotaScope,
    /// Requests left in the window as last estimated (server count minus requests in flight);
    /// `None` when Toggl never sent quota headers for this scope.
    pub remaining: Option<i64>,
    /// Time until the window resets, if known and still ahead.
    pub resets_in: Option<Duration>,
    /// Requests of this scope currently on the wire.
    pub in_flight: u32,
    /// 402 "quota spent" answers seen for this scope since the client started.
    pub spent_responses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knowledge {
    /// No answer seen yet: send one probe, hold the others.
    Unknown,
    /// Answers came without quota headers: nothing to budget (e.g. an unmetered endpoint).
    NoHeaders,
    /// Quota headers seen.
    Known,
}

struct ScopeState {
    knowledge: Knowledge,
    remaining: i64,
    resets_at: Option<Instant>,
    in_flight: u32,
    probe_in_flight: bool,
    spent_responses: u64,
    notify: Arc<Notify>,
}

impl Default for ScopeState {
    fn default() -> Self {
        Self {
            knowledge: Knowledge::Unknown,
            remaining: 0,
            resets_at: None,
            in_flight: 0,
            probe_in_flight: false,
            spent_responses: 0,
            notify: Arc::new(Notify::new()),
        }
    }
}

enum Decision {
    Go,
    Probe,
    WaitUntil(Instant),
    WaitForProbe,
}

impl ScopeState {
    fn decide(&self, now: Instant) -> Decision {
        if self.probe_in_flight {
            return Decision::WaitForProbe;
        }
        match self.knowledge {
            Knowledge::Unknown => Decision::Probe,
            Knowledge::NoHeaders => Decision::Go,
            Knowledge::Known => {
                if self.remaining > 0 {
                    return Decision::Go;
                }
                match self.resets_at {
                    Some(at) if at > now => Decision::WaitUntil(at),
                    _ => Decision::Probe,
                }
            }
        }
    }
}

#[derive(Default)]
struct BudgetState {
    workspace_orgs: HashMap<u64, u64>,
    scopes: HashMap<QuotaScope, ScopeState>,
}

impl BudgetState {
    fn resolve(&self, scope: QuotaScope) -> QuotaScope {
        match scope {
            QuotaScope::Workspace(wid) => self
                .workspace_orgs
                .get(&wid)
                .map_or(scope, |oid| QuotaScope::Organization(*oid)),
            other => other,
        }
    }
}

/// The quota budget of one token. Share it (`Arc`) between everything that uses that token.
#[derive(Default)]
pub struct QuotaBudget {
    state: Mutex<BudgetState>,
}

impl fmt::Debug for QuotaBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaBudget")
            .field("scopes", &self.snapshot())
            .finish()
    }
}

/// What a response told the budget.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Observation {
    /// No response arrived (transport failure): the state is as unknown as before.
    NoResponse,
    /// A response arrived; `spent` is a 402 that carried quota headers.
    Response {
        headers: Option<QuotaHeaders>,
        spent: bool,
    },
}

impl QuotaBudget {
    /// An empty budget: every scope starts unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that workspace `wid` belongs to organization `oid`, so both share one budget from
    /// now on. What was learned about the workspace alone is kept (the more pessimistic state wins).
    pub fn set_workspace_org(&self, wid: u64, oid: u64) {
        let mut st = self.state.lock();
        if st.workspace_orgs.insert(wid, oid) == Some(oid) {
            return;
        }
        let Some(ws) = st.scopes.remove(&QuotaScope::Workspace(wid)) else {
            return;
        };
        let org = st.scopes.entry(QuotaScope::Organization(oid)).or_default();
        org.in_flight += ws.in_flight;
        org.spent_responses += ws.spent_responses;
        org.probe_in_flight |= ws.probe_in_flight;
        match (ws.knowledge, org.knowledge) {
            (Knowledge::Known, Knowledge::Known) => {
                org.remaining = org.remaining.min(ws.remaining);
                org.resets_at = org.resets_at.max(ws.resets_at);
            }
            (Knowledge::Known, _) => {
                org.knowledge = Knowledge::Known;
                org.remaining = ws.remaining;
                org.resets_at = ws.resets_at;
            }
            _ => {}
        }
        // Whoever waits on the workspace scope re-resolves to the organization when woken.
        ws.notify.notify_waiters();
        org.notify.notify_waiters();
    }

    /// The organization of a workspace, if learned.
    pub fn workspace_org(&self, wid: u64) -> Option<u64> {
        self.state.lock().workspace_orgs.get(&wid).copied()
    }

    /// What is known about every scope, sorted by scope.
    pub fn snapshot(&self) -> Vec<QuotaSnapshot> {
        let st = self.state.lock();
        let now = Instant::now();
        let mut out: Vec<QuotaSnapshot> = st
            .scopes
            .iter()
            .map(|(scope, s)| QuotaSnapshot {
                scope: *scope,
                remaining: (s.knowledge == Knowledge::Known).then_some(s.remaining),
                resets_in: s
                    .resets_at
                    .filter(|at| *at > now)
                    .map(|at| at.saturating_duration_since(now)),
                in_flight: s.in_flight,
                spent_responses: s.spent_responses,
            })
            .collect();
        out.sort_by_key(|s| s.scope);
        out
    }

    /// True when the scope is known to be spent until a reset that lies ahead.
    pub fn is_spent(&self, scope: QuotaScope) -> bool {
        let st = self.state.lock();
        let key = st.resolve(scope);
        st.scopes
            .get(&key)
            .is_some_and(|s| matches!(s.decide(Instant::now()), Decision::WaitUntil(_)))
    }

    /// Waits until a request of `scope` may be sent and reserves it. Fails when the scope is spent
    /// and its reset is further away than `max_wait`.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        scope: QuotaScope,
        max_wait: Duration,
    ) -> Result<Admission, ClientError> {
        loop {
            // Register interest before looking at the state, so a change between the look and the
            // wait cannot be missed.
            let notify = {
                let mut st = self.state.lock();
                let key = st.resolve(scope);
                Arc::clone(&st.scopes.entry(key).or_default().notify)
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let wait_until = {
                let mut st = self.state.lock();
                let key = st.resolve(scope);
                let s = st.scopes.entry(key).or_default();
                if !Arc::ptr_eq(&s.notify, &notify) {
                    // The scope was merged into its organization meanwhile: look again.
                    continue;
                }
                let now = Instant::now();
                match s.decide(now) {
                    Decision::Go => {
                        s.in_flight += 1;
                        if s.knowledge == Knowledge::Known {
                            s.remaining -= 1;
                        }
                        return Ok(Admission::new(Arc::clone(self), key, false));
                    }
                    Decision::Probe => {
                        s.in_flight += 1;
                        s.probe_in_flight = true;
                        return Ok(Admission::new(Arc::clone(self), key, true));
                    }
                    Decision::WaitUntil(at) => {
                        let resets_in = at.saturating_duration_since(now);
                        if resets_in > max_wait {
                            return Err(ClientError::quota_exhausted(key, resets_in));
                        }
                        // Debug, not info: every waiting caller passes here once per window.
                        tracing::debug!(
                            scope = %key,
                            resets_in_secs = resets_in.as_secs_f64(),
                            "toggl quota spent; waiting for the reset"
                        );
                        Some(at)
                    }
                    Decision::WaitForProbe => None,
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn finish(&self, key: QuotaScope, probe: bool, observation: Observation) {
        let mut st = self.state.lock();
        // The key may have been merged into its organization while the request was out.
        let key = st.resolve(key);
        let s = st.scopes.entry(key).or_default();
        s.in_flight = s.in_flight.saturating_sub(1);
        if probe {
            s.probe_in_flight = false;
        }
        let now = Instant::now();
        match observation {
            Observation::NoResponse => {}
            Observation::Response { headers, spent } => {
                if spent {
                    s.spent_responses += 1;
                }
                match headers {
                    Some(h) => s.observe(h, spent, now),
                    None if spent => {
                        s.observe(
                            QuotaHeaders {
                                remaining: Some(0),
                                resets_in: None,
                            },
                            true,
                            now,
                        );
                    }
                    None => {
                        if s.knowledge == Knowledge::Unknown {
                            s.knowledge = Knowledge::NoHeaders;
                        }
                    }
                }
            }
        }
        s.notify.notify_waiters();
    }
}

impl ScopeState {
    fn observe(&mut self, h: QuotaHeaders, spent: bool, now: Instant) {
        let others = i64::from(self.in_flight);
        let reported = match (h.remaining, spent) {
            (Some(r), true) => r.min(0),
            (Some(r), false) => r,
            (None, true) => 0,
            // Only a reset time: keep the count we have, refresh the reset.
            (None, false) if self.knowledge == Knowledge::Known => self.remaining + others,
            (None, false) => {
                self.knowledge = Knowledge::NoHeaders;
                return;
            }
        };
        // Requests still out may or may not be counted in `reported`; assume not (pessimistic).
        let candidate = reported - others;
        let mut resets_at = match h.resets_in {
            Some(d) => Some(now + d),
            None if candidate <= 0 => Some(now + UNKNOWN_RESET_WAIT),
            None => self.resets_at,
        };
        if candidate <= 0 {
            let floor = now + MIN_SPENT_WAIT;
            resets_at = Some(resets_at.map_or(floor, |at| at.max(floor)));
        }
        let same_window = match (self.resets_at, resets_at) {
            (Some(old), Some(new)) => {
                old > now && new.saturating_duration_since(old) < Duration::from_millis(1500)
            }
            _ => false,
        };
        self.remaining = if self.knowledge == Knowledge::Known && same_window && !spent {
            // A late answer must not raise the estimate within the same window.
            self.remaining.min(candidate)
        } else {
            candidate
        };
        self.resets_at = resets_at;
        self.knowledge = Knowledge::Known;
    }
}

/// A reserved request slot. Report the outcome with [`Admission::complete`]; dropping it without
/// (a cancelled request) releases the slot as "no response".
pub(crate) struct Admission {
    budget: Arc<QuotaBudget>,
    key: QuotaScope,
    probe: bool,
    done: bool,
}

impl Admission {
    fn new(budget: Arc<QuotaBudget>, key: QuotaScope, probe: bool) -> Self {
        Self {
            budget,
            key,
            probe,
            done: false,
        }
    }

    /// The scope the request was counted against.
    pub(crate) fn key(&self) -> QuotaScope {
        self.key
    }

    pub(crate) fn complete(mut self, observation: Observation) {
        self.done = true;
        self.budget.finish(self.key, self.probe, observation);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.done {
            self.budget
                .finish(self.key, self.probe, Observation::NoResponse);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("valid name"),
                http::HeaderValue::from_str(v).expect("valid value"),
            );
        }
        map
    }

    #[test]
    fn parses_quota_headers() {
        let h = QuotaHeaders::from_headers(&headers(&[
            ("X-Toggl-Quota-Remaining", "12"),
            ("X-Toggl-Quota-Resets-In", "3599"),
        ]))
        .expect("present");
        assert_eq!(h.remaining, Some(12));
        assert_eq!(h.resets_in, Some(Duration::from_secs(3599)));

        let h = QuotaHeaders::from_headers(&headers(&[
            ("x-toggl-quota-remaining", " -3 "),
            ("x-toggl-quota-resets-in", "1.5"),
        ]))
        .expect("present");
        assert_eq!(h.remaining, Some(-3));
        assert_eq!(h.resets_in, Some(Duration::from_millis(1500)));

        let h = QuotaHeaders::from_headers(&headers(&[("x-toggl-quota-resets-in", "-4")]))
            .expect("present");
        assert_eq!(h.remaining, None);
        assert_eq!(h.resets_in, Some(Duration::ZERO));

        assert_eq!(QuotaHeaders::from_headers(&headers(&[])), None);
        assert_eq!(
            QuotaHeaders::from_headers(&headers(&[("x-toggl-quota-remaining", "lots")])),
            None
        );
    }

    #[test]
    fn classifies_paths() {
        assert_eq!(QuotaScope::for_path("/api/v9/me"), QuotaScope::User);
        assert_eq!(
            QuotaScope::for_path("/api/v9/me/time_entries"),
            QuotaScope::User
        );
        assert_eq!(QuotaScope::for_path("/api/v9/workspaces"), QuotaScope::User);
        assert_eq!(
            QuotaScope::for_path("/api/v9/workspaces/42/time_entries/7/stop"),
            QuotaScope::Workspace(42)
        );
        assert_eq!(
            QuotaScope::for_path("/api/v9/organizations/9/invitations"),
            QuotaScope::Organization(9)
        );
        assert_eq!(
            QuotaScope::for_path("/api/v9/organizations/invitations/abc/accept"),
            QuotaScope::User
        );
        assert_eq!(
            QuotaScope::for_path("/webhooks/api/v1/subscriptions/42/5"),
            QuotaScope::Workspace(42)
        );
        assert_eq!(
            QuotaScope::for_path("/webhooks/api/v1/event_filters"),
            QuotaScope::User
        );
        assert_eq!(
            QuotaScope::for_path("/reports/api/v3/workspace/3730303299/search/time_entries"),
            QuotaScope::Workspace(3_730_303_299)
        );
    }

    fn known(remaining: i64, resets_in: u64) -> Observation {
        Observation::Response {
            headers: Some(QuotaHeaders {
                remaining: Some(remaining),
                resets_in: Some(Duration::from_secs(resets_in)),
            }),
            spent: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_request_is_a_probe_and_others_wait_for_it() {
        let budget = Arc::new(QuotaBudget::new());
        let first = budget
            .admit(QuotaScope::User, Duration::from_secs(60))
            .await
            .expect("admitted");
        let b2 = Arc::clone(&budget);
        let second = tokio::spawn(async move {
            b2.admit(QuotaScope::User, Duration::from_secs(60))
                .await
                .map(|a| a.key())
        });
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished(),
            "second caller must wait for the probe"
        );
        first.complete(known(5, 100));
        let key = second.await.expect("joins").expect("admitted");
        assert_eq!(key, QuotaScope::User);
    }

    #[tokio::test(start_paused = true)]
    async fn spent_budget_waits_for_the_reset_or_fails_past_max_wait() {
        let budget = Arc::new(QuotaBudget::new());
        let a = budget
            .admit(QuotaScope::Organization(1), Duration::ZERO)
            .await
            .expect("probe");
        a.complete(Observation::Response {
            headers: Some(QuotaHeaders {
                remaining: Some(0),
                resets_in: Some(Duration::from_secs(30)),
            }),
            spent: true,
        });
        assert!(budget.is_spent(QuotaScope::Organization(1)));
        let err = budget
            .admit(QuotaScope::Organization(1), Duration::from_secs(10))
            .await
            .err()
            .expect("too long a wait");
        assert!(
            matches!(err, ClientError::QuotaExhausted { scope: QuotaScope::Organization(1), resets_in, .. } if resets_in > Duration::from_secs(29))
        );
        let start = Instant::now();
        let probe = budget
            .admit(QuotaScope::Organization(1), Duration::from_secs(60))
            .await
            .expect("admitted after reset");
        assert!(start.elapsed() >= Duration::from_secs(30));
        assert!(
            probe.probe,
            "the first request after a spent window is a probe"
        );
        // Other scopes are unaffected.
        assert!(!budget.is_spent(QuotaScope::User));
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_never_exceed_the_reported_remaining() {
        let budget = Arc::new(QuotaBudget::new());
        let probe = budget
            .admit(QuotaScope::User, Duration::ZERO)
            .await
            .expect("probe");
        probe.complete(known(3, 100));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                budget
                    .admit(QuotaScope::User, Duration::ZERO)
                    .await
                    .expect("within budget"),
            );
        }
        assert!(
            budget
                .admit(QuotaScope::User, Duration::ZERO)
                .await
                .is_err(),
            "a fourth request would overspend"
        );
        // A late answer from the first of them reports 2 left; two more are still out: 0 left.
        held.remove(0).complete(known(2, 100));
        assert_eq!(budget.snapshot()[0].remaining, Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn workspace_scope_merges_into_its_organization() {
        let budget = Arc::new(QuotaBudget::new());
        let a = budget
            .admit(QuotaScope::Workspace(7), Duration::ZERO)
            .await
            .expect("probe");
        a.complete(Observation::Response {
            headers: Some(QuotaHeaders {
                remaining: Some(0),
                resets_in: Some(Duration::from_secs(50)),
            }),
            spent: true,
        });
        budget.set_workspace_org(7, 70);
        assert!(budget.is_spent(QuotaScope::Organization(70)));
        assert!(budget.is_spent(QuotaScope::Workspace(7)));
        // Another workspace of the same organization shares the spent budget once known.
        budget.set_workspace_org(8, 70);
        assert!(budget.is_spent(QuotaScope::Workspace(8)));
        let snap = budget.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].scope, QuotaScope::Organization(70));
        assert_eq!(snap[0].spent_responses, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_headers_means_no_budgeting_and_cancelled_probe_frees_the_scope() {
        let budget = Arc::new(QuotaBudget::new());
        let probe = budget
            .admit(QuotaScope::User, Duration::ZERO)
            .await
            .expect("probe");
        drop(probe);
        let probe = budget
            .admit(QuotaScope::User, Duration::ZERO)
            .await
            .expect("a dropped probe must not block the scope");
        probe.complete(Observation::Response {
            headers: None,
            spent: false,
        });
        let a = budget.admit(QuotaScope::User, Duration::ZERO).await;
        let b = budget.admit(QuotaScope::User, Duration::ZERO).await;
        assert!(a.is_ok() && b.is_ok(), "concurrency without quota headers");
    }

    /// A fixed-window quota server, simulated in paused time: quota per window, rounding of the
    /// announced reset, per-request latency.
    struct SimServer {
        quota: u32,
        window: Duration,
        round_up: bool,
        end: Option<Instant>,
        used: u32,
        over: u32,
        over_per_window: Vec<u32>,
    }

    impl SimServer {
        fn answer(&mut self) -> Observation {
            let now = Instant::now();
            if self.end.is_none_or(|end| end <= now) {
                if self.end.is_some() {
                    self.over_per_window.push(self.over);
                }
                self.end = Some(now + self.window);
                self.used = 0;
                self.over = 0;
            }
            let left = self
                .end
                .expect("window set")
                .saturating_duration_since(now)
                .as_secs_f64();
            let resets_in = Duration::from_secs_f64(if self.round_up {
                left.ceil()
            } else {
                left.floor()
            });
            let spent = self.used >= self.quota;
            if spent {
                self.over += 1;
            } else {
                self.used += 1;
            }
            Observation::Response {
                headers: Some(QuotaHeaders {
                    remaining: Some(i64::from(self.quota - self.used)),
                    resets_in: Some(resets_in),
                }),
                spent,
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn concurrent_callers_meet_a_spent_quota_at_most_once_per_window(
            quota in 1u32..6,
            window_secs in 1u64..4,
            round_up in proptest::bool::ANY,
            latencies in proptest::collection::vec(1u64..400, 5..40),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            let over = rt.block_on(async move {
                let budget = Arc::new(QuotaBudget::new());
                let server = Arc::new(Mutex::new(SimServer {
                    quota,
                    window: Duration::from_secs(window_secs),
                    round_up,
                    end: None,
                    used: 0,
                    over: 0,
                    over_per_window: Vec::new(),
                }));
                let mut tasks = Vec::new();
                for latency in latencies {
                    let budget = Arc::clone(&budget);
                    let server = Arc::clone(&server);
                    tasks.push(tokio::spawn(async move {
                        loop {
                            let admission = budget
                                .admit(QuotaScope::Organization(1), Duration::from_secs(3600))
                                .await
                                .expect("admitted");
                            // Half the latency on the way in, half on the way back.
                            tokio::time::sleep(Duration::from_millis(latency / 2)).await;
                            let observation = server.lock().answer();
                            tokio::time::sleep(Duration::from_millis(latency - latency / 2)).await;
                            admission.complete(observation);
                            if !matches!(observation, Observation::Response { spent: true, .. }) {
                                return;
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("task completes");
                }
                let s = server.lock();
                let mut over = s.over_per_window.clone();
                over.push(s.over);
                over
            });
            proptest::prop_assert!(over.iter().all(|n| *n <= 1), "over-quota per window: {:?}", over);
        }
    }
}
