//! Events from `since=` queries: the polling mode (`serve --poll`) and catch-up after downtime.
//!
//! Toggl's `GET /me/<entities>?since=<unix>` returns what changed since then, deleted items
//! included (`server_deleted_at`, or `deleted_at` for tags). Each changed item becomes an event of
//! the same shape as a webhook delivery, stored through the same path as deliveries (same
//! classification, same jobs) with a dedupe key of `<entity>:<id>:<at>`: one version of one
//! entity is one event, however many polls or catch-ups see it.
//!
//! Created or updated? The item alone does not say. In order: deleted when it carries a deletion
//! time; updated when we hold an earlier state of it, or when its `created_at` is older than the
//! window; otherwise created if its id is above the highest id we saw of that entity when the
//! checkpoint was set (Toggl ids grow), else updated. The very first poll of a workspace only
//! records the baseline (checkpoint and highest ids): it does not announce the whole account as
//! "created".
//!
//! Quota: every entity polled is one request per cycle against the user-level quota (`/me...`,
//! 30/hour on every plan). [`PollPlan::check`] refuses an interval that cannot fit, and a cycle is
//! skipped (not squeezed in) while the budget is low, so actions keep their share.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use toggl_connect_client::{ApiRequest, Client, ClientError, QuotaScope};
use toggl_connect_store::{EventSource, Snapshot, StoreError};

use crate::envelope::{Event, lenient_i64};
use crate::receiver::Receiver;
use crate::subscriptions::{UnknownTrigger, filters_for};

/// Overlap between consecutive windows: a change committed while the previous poll ran is seen
/// again rather than missed (the dedupe key absorbs the repeat).
const OVERLAP_SECS: i64 = 5;
/// Share of the user-level quota polling may use; the rest is left to actions and queries.
const POLL_QUOTA_SHARE: f64 = 0.5;

/// Entities that have a `since=` listing, and where it is.
fn endpoint(entity: &str) -> Option<&'static str> {
    Some(match entity {
        "time_entry" => "/api/v9/me/time_entries",
        "project" => "/api/v9/me/projects",
        "client" => "/api/v9/me/clients",
        "tag" => "/api/v9/me/tags",
        "task" => "/api/v9/me/tasks",
        "workspace" => "/api/v9/me/workspaces",
        _ => return None,
    })
}

/// Why polling cannot serve the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// A trigger name does not exist.
    #[error(transparent)]
    Trigger(#[from] UnknownTrigger),
    /// Toggl offers no `since=` listing for this entity, so its changes cannot be polled.
    #[error(
        "trigger {trigger} cannot be polled: Toggl has no since= listing for {entity} (use webhooks for it)"
    )]
    NotPollable {
        /// The trigger.
        trigger: String,
        /// Its entity.
        entity: String,
    },
    /// The interval would spend more than the quota allows.
    #[error(
        "polling {entities} entities every {interval_secs} s needs {per_hour} requests/hour, but the user-level quota allows {allowed} for polling ({share}% of {total}/hour): use an interval of at least {min_interval_secs} s"
    )]
    TooFrequent {
        /// Entities polled.
        entities: usize,
        /// The asked interval.
        interval_secs: u64,
        /// Requests per hour it needs.
        per_hour: u64,
        /// Requests per hour polling may use.
        allowed: u64,
        /// The share polling may use, in percent.
        share: u32,
        /// The quota's total per hour.
        total: u64,
        /// The shortest interval that fits.
        min_interval_secs: u64,
    },
    /// Toggl refused or could not be reached.
    #[error("toggl api")]
    Api(#[from] ClientError),
    /// The store failed.
    #[error("store")]
    Store(#[from] StoreError),
}

/// What a poller will query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollPlan {
    /// Entities polled, each one request per cycle.
    pub entities: Vec<String>,
    /// Time between cycles.
    pub interval: Duration,
}

impl PollPlan {
    /// The entities `triggers` need; refuses triggers that cannot be polled.
    pub fn new(triggers: &[String], interval: Duration) -> Result<Self, PollError> {
        let mut entities = BTreeSet::new();
        for t in triggers {
            for (entity, _) in filters_for(t)? {
                if endpoint(&entity).is_none() {
                    return Err(PollError::NotPollable {
                        trigger: t.clone(),
                        entity,
                    });
                }
                entities.insert(entity);
            }
        }
        Ok(Self {
            entities: entities.into_iter().collect(),
            interval,
        })
    }

    /// Requests per hour this plan sends.
    pub fn requests_per_hour(&self) -> u64 {
        let per_cycle = self.entities.len() as u64;
        let secs = self.interval.as_secs().max(1);
        (3600 * per_cycle).div_ceil(secs)
    }

    /// Refuses the plan when it needs more than half (`POLL_QUOTA_SHARE`) of `user_quota_total`.
    pub fn check(&self, user_quota_total: Option<u64>) -> Result<(), PollError> {
        let Some(total) = user_quota_total else {
            return Ok(());
        };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let allowed = ((total as f64) * POLL_QUOTA_SHARE).floor() as u64;
        let per_hour = self.requests_per_hour();
        if per_hour <= allowed {
            return Ok(());
        }
        let per_cycle = self.entities.len() as u64;
        let min_interval_secs = if allowed == 0 {
            u64::MAX
        } else {
            (3600 * per_cycle).div_ceil(allowed)
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Err(PollError::TooFrequent {
            entities: self.entities.len(),
            interval_secs: self.interval.as_secs(),
            per_hour,
            allowed,
            share: (POLL_QUOTA_SHARE * 100.0) as u32,
            total,
            min_interval_secs,
        })
    }
}

/// Reads the user-level quota's hourly total from `GET /me/quota` (`None` when Toggl reports none).
pub async fn user_quota_total(client: &Client) -> Result<Option<u64>, ClientError> {
    let body = client.send(ApiRequest::get("/api/v9/me/quota")).await?.body;
    Ok(body
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|i| i.get("organization_id").is_none_or(Value::is_null))
        })
        .and_then(|i| i.get("total"))
        .and_then(Value::as_u64))
}

/// Counts of one poll cycle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CycleReport {
    /// Items returned by Toggl.
    pub seen: usize,
    /// New events stored.
    pub stored: usize,
    /// Items already stored before (same version).
    pub duplicates: usize,
    /// Entities whose baseline was recorded (first poll).
    pub baselines: usize,
    /// True when the cycle was skipped to save quota.
    pub skipped_for_quota: bool,
}

/// Polls `since=` listings and stores what changed.
#[derive(Debug, Clone)]
pub struct Poller {
    client: Client,
    receiver: Arc<Receiver>,
    plan: PollPlan,
    source: EventSource,
}

/// What a listed item is to us: deleted when it says so, updated when we know the entity (or it
/// was created before the window, or its id is not above the highest we have seen), else created.
fn action_for(
    id: i64,
    item: &Value,
    known: bool,
    window_start: i64,
    max_known: Option<i64>,
) -> &'static str {
    if deletion_time(item).is_some() {
        return "deleted";
    }
    if known {
        return "updated";
    }
    let created_before_window = item
        .get("created_at")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| t.timestamp() < window_start);
    if created_before_window {
        return "updated";
    }
    match max_known {
        Some(max) if id <= max => "updated",
        _ => "created",
    }
}

fn deletion_time(item: &Value) -> Option<&Value> {
    ["server_deleted_at", "deleted_at"]
        .iter()
        .find_map(|k| item.get(*k).filter(|v| !v.is_null()))
}

impl Poller {
    /// A poller (source `Poll`) or catch-up reader (source `Catchup`) for `plan`.
    pub fn new(
        client: Client,
        receiver: Arc<Receiver>,
        plan: PollPlan,
        source: EventSource,
    ) -> Self {
        Self {
            client,
            receiver,
            plan,
            source,
        }
    }

    /// One pass over every entity of the plan.
    pub async fn cycle(&self) -> Result<CycleReport, PollError> {
        let mut report = CycleReport::default();
        if self.client.budget().is_spent(QuotaScope::User) {
            report.skipped_for_quota = true;
            tracing::info!("poll cycle skipped: user-level quota spent until its reset");
            return Ok(report);
        }
        for entity in &self.plan.entities {
            self.poll_entity(entity, &mut report).await?;
        }
        Ok(report)
    }

    async fn poll_entity(&self, entity: &str, report: &mut CycleReport) -> Result<(), PollError> {
        let path = endpoint(entity).expect("PollPlan only holds pollable entities");
        let store = self.receiver.store();
        let since_key = format!("poll:since:{entity}");
        let max_id_key = format!("poll:max_id:{entity}");
        let checkpoint = store
            .get_checkpoint(&since_key)
            .await?
            .and_then(|s| s.parse::<i64>().ok());
        let started = chrono::Utc::now().timestamp();
        let Some(since) = checkpoint else {
            // Baseline: remember where we start and the highest id there is; announce nothing.
            let items = self.client.send(ApiRequest::get(path)).await?.body;
            let max_id = items
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.get("id").and_then(lenient_i64))
                .max();
            if let Some(max_id) = max_id {
                store
                    .set_checkpoint(&max_id_key, &max_id.to_string())
                    .await?;
            }
            store
                .set_checkpoint(&since_key, &started.to_string())
                .await?;
            report.baselines += 1;
            return Ok(());
        };
        let window_start = since - OVERLAP_SECS;
        let req = ApiRequest::get(path).with_query("since", window_start.to_string());
        let items = self.client.send(req).await?.body;
        let max_known = store
            .get_checkpoint(&max_id_key)
            .await?
            .and_then(|s| s.parse::<i64>().ok());
        let mut max_seen = max_known;
        for item in items.as_array().into_iter().flatten() {
            report.seen += 1;
            let Some(id) = item.get("id").and_then(lenient_i64) else {
                continue;
            };
            max_seen = Some(max_seen.map_or(id, |m| m.max(id)));
            let known = self.receiver.store().get_entity_state(entity, id).await?;
            // Already known at this version or newer (a webhook brought it): nothing missed.
            if let Some((state, _)) = &known {
                if crate::receiver::not_newer(state, item) && deletion_time(item).is_none() {
                    report.duplicates += 1;
                    continue;
                }
            }
            let action = action_for(id, item, known.is_some(), window_start, max_known);
            let version = item.get("at").map_or_else(String::new, |v| {
                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
            });
            // Not the action: the same version must not become "created" once and "updated" on the
            // overlapping next poll. A deletion is its own version even if `at` did not move.
            let deleted = if action == "deleted" { ":deleted" } else { "" };
            let dedupe_key = format!("{entity}:{id}:{version}{deleted}");
            let workspace_id = item
                .get("workspace_id")
                .or_else(|| item.get("wid"))
                .and_then(lenient_i64);
            let envelope = json!({
                "event_id": 0,
                "created_at": chrono::Utc::now().to_rfc3339(),
                "creator_id": null,
                "metadata": {
                    "action": action,
                    "model": entity,
                    "workspace_id": workspace_id.map(|w| w.to_string()),
                    format!("{entity}_id"): id.to_string(),
                    "source": self.source.as_str(),
                },
                "payload": item,
                "subscription_id": null,
            });
            let event = Event {
                event_id: 0,
                subscription_id: None,
                creator_id: None,
                entity: entity.to_owned(),
                action: action.to_owned(),
                workspace_id,
                entity_id: Some(id),
                path: None,
                created_at: None,
                payload: Arc::new(Snapshot::from_value(item.clone())),
                payload_offset: None,
            };
            let (_, duplicate) = self
                .receiver
                .store_event(event, &envelope.to_string(), self.source, Some(dedupe_key))
                .await?;
            if duplicate {
                report.duplicates += 1;
            } else {
                report.stored += 1;
            }
        }
        if max_seen != max_known {
            if let Some(m) = max_seen {
                store.set_checkpoint(&max_id_key, &m.to_string()).await?;
            }
        }
        store
            .set_checkpoint(&since_key, &started.to_string())
            .await?;
        Ok(())
    }

    /// Polls every `plan.interval` until `shutdown` fires.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.cycle().await {
                Ok(r) => tracing::debug!(
                    seen = r.seen,
                    stored = r.stored,
                    duplicates = r.duplicates,
                    baselines = r.baselines,
                    "poll cycle"
                ),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "poll cycle failed; next cycle retries");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.plan.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn plan_collects_entities_and_refuses_unpollable() {
        let p = PollPlan::new(
            &s(&[
                "time_entry_started",
                "time_entry_deleted",
                "project_created",
            ]),
            Duration::from_secs(600),
        )
        .expect("pollable");
        assert_eq!(p.entities, vec!["project", "time_entry"]);
        assert_eq!(p.requests_per_hour(), 12);
        assert!(matches!(
            PollPlan::new(&s(&["project_user_created"]), Duration::from_secs(60)),
            Err(PollError::NotPollable { .. })
        ));
    }

    #[test]
    fn interval_must_fit_the_user_quota() {
        let p = PollPlan::new(
            &s(&["time_entry_created", "project_created"]),
            Duration::from_secs(60),
        )
        .expect("pollable");
        let err = p.check(Some(30)).expect_err("120/h does not fit 15/h");
        let text = err.to_string();
        assert!(text.contains("needs 120 requests/hour"), "{text}");
        assert!(text.contains("at least 480 s"), "{text}");
        let ok = PollPlan {
            interval: Duration::from_secs(480),
            ..p
        };
        assert!(ok.check(Some(30)).is_ok());
        assert!(ok.check(None).is_ok());
    }
}
