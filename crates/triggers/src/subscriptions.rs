//! Keeping Toggl subscribed: one subscription per workspace, packed into the plan's limits,
//! enabled, validated, and re-checked.
//!
//! Users report that triggers "silently stop" (a subscription disabled after failed deliveries,
//! or never validated) and that platforms create one subscription per trigger and fail on the
//! second (Free allows 1 subscription with 3 event filters). So:
//!
//! - triggers are turned into `{entity, action}` filters and packed into ONE subscription per
//!   workspace: an entity with all actions becomes `{entity, "*"}`, and when the filters still do
//!   not fit the plan, entities are widened to `*` (and finally `{"*","*"}`); events are fanned out
//!   locally, so widening costs deliveries, never API quota;
//! - we generate the secret, keep it in the store and the receiver's ring before the create call
//!   (Toggl's validation ping arrives while the create is still in flight, already signed);
//! - a re-check finds a disabled or unvalidated subscription, repairs it and logs at WARN.
//!
//! Our subscription is recognised by its `url_callback`; its `description` (unique per
//! workspace in Toggl) is `toggl-connect <url>` cut to a readable length.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngCore;
use serde_json::{Value, json};
use toggl_connect_client::{ApiRequest, Client, ClientError};
use toggl_connect_store::{Secret, Store, StoreError, Subscription};

use crate::receiver::SecretRing;
use crate::signature::SigningSecret;

/// Entities Toggl sends events for.
pub const ENTITIES: [&str; 9] = [
    "client",
    "project",
    "project_group",
    "project_user",
    "tag",
    "task",
    "time_entry",
    "workspace",
    "workspace_user",
];
/// Actions Toggl sends.
pub const ACTIONS: [&str; 3] = ["created", "updated", "deleted"];
/// Triggers derived from time entry events.
pub const DERIVED: [&str; 2] = ["time_entry_started", "time_entry_stopped"];

/// A trigger name that is not one Toggl can fire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown trigger `{0}` (expected <entity>_<action> such as project_created, or time_entry_started / time_entry_stopped)"
)]
pub struct UnknownTrigger(pub String);

/// Every trigger name there is, for `--help` texts and validation.
pub fn all_triggers() -> Vec<String> {
    let mut v: Vec<String> = ENTITIES
        .iter()
        .flat_map(|e| ACTIONS.iter().map(move |a| format!("{e}_{a}")))
        .collect();
    v.extend(DERIVED.iter().map(|d| (*d).to_owned()));
    v
}

/// The `{entity, action}` filters a trigger needs.
pub fn filters_for(trigger: &str) -> Result<Vec<(String, String)>, UnknownTrigger> {
    match trigger {
        "time_entry_started" => {
            return Ok(vec![
                ("time_entry".into(), "created".into()),
                ("time_entry".into(), "updated".into()),
            ]);
        }
        "time_entry_stopped" => return Ok(vec![("time_entry".into(), "updated".into())]),
        _ => {}
    }
    for action in ACTIONS {
        if let Some(entity) = trigger.strip_suffix(&format!("_{action}")) {
            if ENTITIES.contains(&entity) {
                return Ok(vec![(entity.to_owned(), action.to_owned())]);
            }
        }
    }
    Err(UnknownTrigger(trigger.to_owned()))
}

/// Packs the filters needed for `triggers` into at most `max_filters` filters (at least one).
///
/// Candidates are the exact `{entity, action}` pairs, `{entity, "*"}`, `{"*", action}` and
/// `{"*", "*"}`. Every choice of action wildcards is tried (there are only 2^3); for each, the
/// entities with the most remaining actions are widened until the filters fit. Of the choices
/// that fit, the one delivering the fewest unwanted `{entity, action}` pairs wins.
pub fn pack(
    triggers: &[String],
    max_filters: usize,
) -> Result<Vec<(String, String)>, UnknownTrigger> {
    let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
    for t in triggers {
        needed.extend(filters_for(t)?);
    }
    let max_filters = max_filters.max(1);
    let mut best: Option<(usize, Vec<(String, String)>)> = None;
    for mask in 0..(1u8 << ACTIONS.len()) {
        let wild: Vec<&str> = ACTIONS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, a)| *a)
            .collect();
        // A wildcard for an action nobody needs only adds deliveries.
        if wild.iter().any(|a| !needed.iter().any(|(_, na)| na == a)) {
            continue;
        }
        let mut by_entity: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (e, a) in &needed {
            if !wild.contains(&a.as_str()) {
                by_entity.entry(e.as_str()).or_default().insert(a.as_str());
            }
        }
        let mut widened: BTreeSet<&str> = by_entity
            .iter()
            .filter(|(_, acts)| acts.len() == ACTIONS.len())
            .map(|(e, _)| *e)
            .collect();
        let count = |widened: &BTreeSet<&str>| {
            wild.len()
                + by_entity
                    .iter()
                    .map(|(e, acts)| if widened.contains(e) { 1 } else { acts.len() })
                    .sum::<usize>()
        };
        let mut order: Vec<(&str, usize)> = by_entity.iter().map(|(e, a)| (*e, a.len())).collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (e, n) in order {
            if count(&widened) <= max_filters || n < 2 {
                break;
            }
            widened.insert(e);
        }
        if count(&widened) > max_filters {
            continue;
        }
        let mut filters: Vec<(String, String)> = wild
            .iter()
            .map(|a| ("*".to_owned(), (*a).to_owned()))
            .collect();
        let mut covered = wild.len() * ENTITIES.len();
        for (e, acts) in &by_entity {
            if widened.contains(e) {
                filters.push(((*e).to_owned(), "*".to_owned()));
                covered += ACTIONS.len() - acts.iter().filter(|a| wild.contains(a)).count();
            } else {
                filters.extend(acts.iter().map(|a| ((*e).to_owned(), (*a).to_owned())));
                covered += acts.len();
            }
        }
        let extra = covered.saturating_sub(needed.len());
        if best
            .as_ref()
            .is_none_or(|(b, f)| extra < *b || (extra == *b && filters.len() < f.len()))
        {
            best = Some((extra, filters));
        }
    }
    let mut filters = best.map_or_else(|| vec![("*".to_owned(), "*".to_owned())], |(_, f)| f);
    // Every action wildcarded is everything: one filter says it.
    if filters.iter().filter(|(e, _)| e == "*").count() == ACTIONS.len() {
        filters.retain(|(e, _)| e != "*");
        if filters.is_empty() {
            filters.push(("*".to_owned(), "*".to_owned()));
        } else {
            filters = vec![("*".to_owned(), "*".to_owned())];
        }
    }
    filters.sort();
    Ok(filters)
}

/// What was found and done for one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsureReport {
    /// The workspace.
    pub workspace_id: i64,
    /// Our subscription's id.
    pub subscription_id: i64,
    /// The filters it has now.
    pub filters: Vec<(String, String)>,
    /// What had to be done (`created`, `re-enabled`, `filters updated`, `validation requested`, ...).
    pub actions: Vec<String>,
}

/// A failure to keep a workspace subscribed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// The Webhooks API refused or could not be reached.
    #[error("webhooks api")]
    Api(#[from] ClientError),
    /// Our store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// A configured trigger does not exist.
    #[error(transparent)]
    Trigger(#[from] UnknownTrigger),
    /// Toggl answered something we cannot read.
    #[error("unexpected webhooks api response: {0}")]
    Unexpected(String),
    /// The workspace already has as many subscriptions as the plan allows, none of them ours.
    #[error(
        "workspace {workspace_id} already has {existing} of {max} webhook subscriptions allowed by its plan, none for {url}: delete one or raise the plan"
    )]
    LimitReached {
        /// The workspace.
        workspace_id: i64,
        /// Subscriptions there.
        existing: usize,
        /// The plan's maximum.
        max: u32,
        /// Our callback URL.
        url: String,
    },
}

/// Validation codes seen in pings, so a re-check can confirm them asynchronously.
#[derive(Debug, Default)]
pub struct PendingValidations {
    urls: Mutex<HashMap<i64, String>>,
}

impl PendingValidations {
    /// Remembers the `validation_code_url` of a ping to `subscription_id`.
    pub fn record(&self, subscription_id: i64, url: String) {
        let mut urls = self.urls.lock();
        if urls.len() < 1024 {
            urls.insert(subscription_id, url);
        }
    }

    /// Takes the remembered URL for `subscription_id`.
    pub fn take(&self, subscription_id: i64) -> Option<String> {
        self.urls.lock().remove(&subscription_id)
    }
}

/// Keeps one subscription per configured workspace.
#[derive(Debug, Clone)]
pub struct SubscriptionManager {
    client: Client,
    store: Store,
    secrets: Arc<SecretRing>,
    validations: Arc<PendingValidations>,
    callback_url: String,
    triggers: Vec<String>,
}

fn i64_field(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn parse_filters(v: &Value) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = v
        .get("event_filters")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    Some((
                        i.get("entity")?.as_str()?.to_owned(),
                        i.get("action")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    f.sort();
    f
}

fn filters_json(filters: &[(String, String)]) -> Value {
    Value::Array(
        filters
            .iter()
            .map(|(e, a)| json!({"entity": e, "action": a}))
            .collect(),
    )
}

fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl SubscriptionManager {
    /// A manager subscribing `callback_url` to `triggers`.
    pub fn new(
        client: Client,
        store: Store,
        secrets: Arc<SecretRing>,
        validations: Arc<PendingValidations>,
        callback_url: String,
        triggers: Vec<String>,
    ) -> Result<Self, UnknownTrigger> {
        for t in &triggers {
            filters_for(t)?;
        }
        Ok(Self {
            client,
            store,
            secrets,
            validations,
            callback_url,
            triggers,
        })
    }

    /// Loads the secrets of every stored subscription into the receiver's ring.
    pub async fn load_secrets(&self) -> Result<usize, StoreError> {
        let subs = self.store.list_subscriptions(None).await?;
        for s in &subs {
            self.secrets.add(
                Some(s.subscription_id),
                SigningSecret::new(s.secret.expose()),
            );
            if let Some(prev) = &s.previous_secret {
                self.secrets
                    .add(Some(s.subscription_id), SigningSecret::new(prev.expose()));
            }
        }
        Ok(subs.len())
    }

    fn description(&self) -> String {
        let mut d = format!("toggl-connect {}", self.callback_url);
        d.truncate(120);
        d
    }

    async fn remember(
        &self,
        workspace_id: i64,
        sub: &Value,
        secret: &str,
    ) -> Result<(), StoreError> {
        self.store
            .upsert_subscription(Subscription {
                workspace_id,
                subscription_id: i64_field(sub, "subscription_id").unwrap_or_default(),
                url_callback: self.callback_url.clone(),
                secret: Secret::new(secret),
                previous_secret: None,
                event_filters: sub.get("event_filters").cloned().unwrap_or(Value::Null),
                enabled: sub.get("enabled").and_then(Value::as_bool).unwrap_or(false),
                validated: sub.get("validated_at").is_some_and(|v| !v.is_null()),
                updated_at: chrono::Utc::now(),
            })
            .await
    }

    /// Makes sure `workspace_id` has our subscription, enabled, validated, with the right filters.
    #[tracing::instrument(skip_all, fields(workspace_id))]
    pub async fn ensure(&self, workspace_id: i64) -> Result<EnsureReport, SubscriptionError> {
        let limits = self
            .client
            .send(ApiRequest::get(format!(
                "/webhooks/api/v1/limits/{workspace_id}"
            )))
            .await?
            .body;
        let max_webhooks = limits
            .get("max_webhooks")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let max_filters = limits
            .get("max_events_per_webhook")
            .and_then(Value::as_u64)
            .unwrap_or(3);
        let mut wanted = pack(
            &self.triggers,
            usize::try_from(max_filters).unwrap_or(usize::MAX),
        )?;
        wanted.sort();
        let list = self
            .client
            .send(ApiRequest::get(format!(
                "/webhooks/api/v1/subscriptions/{workspace_id}"
            )))
            .await?
            .body;
        let subs = list.as_array().cloned().unwrap_or_default();
        let mut ours: Vec<&Value> = subs
            .iter()
            .filter(|s| {
                s.get("url_callback").and_then(Value::as_str) == Some(self.callback_url.as_str())
            })
            .collect();
        let mut actions = Vec::new();
        // Duplicates of ours (an earlier crash between create and store) take plan slots: drop them.
        while ours.len() > 1 {
            let extra = ours.pop().expect("len > 1");
            if let Some(sid) = i64_field(extra, "subscription_id") {
                self.client
                    .send(ApiRequest::new(
                        http::Method::DELETE,
                        format!("/webhooks/api/v1/subscriptions/{workspace_id}/{sid}"),
                    ))
                    .await?;
                self.store.delete_subscription(workspace_id, sid).await?;
                actions.push(format!("deleted duplicate subscription {sid}"));
            }
        }
        let Some(existing) = ours.first().copied() else {
            if subs.len() as u64 >= max_webhooks {
                return Err(SubscriptionError::LimitReached {
                    workspace_id,
                    existing: subs.len(),
                    max: u32::try_from(max_webhooks).unwrap_or(u32::MAX),
                    url: self.callback_url.clone(),
                });
            }
            return self.create(workspace_id, wanted, actions).await;
        };
        let sid = i64_field(existing, "subscription_id").ok_or_else(|| {
            SubscriptionError::Unexpected("subscription without subscription_id".into())
        })?;
        // The secret: ours from the store, else the one Toggl shows (a lost database).
        let stored = self.store.get_subscription(workspace_id, sid).await?;
        let secret = match (&stored, existing.get("secret").and_then(Value::as_str)) {
            (Some(s), _) => s.secret.expose().to_owned(),
            (None, Some(s)) => s.to_owned(),
            (None, None) => new_secret(),
        };
        self.secrets
            .add(Some(sid), SigningSecret::new(secret.as_bytes()));
        let mut current = existing.clone();
        if parse_filters(existing) != wanted {
            let body = json!({
                "url_callback": self.callback_url,
                "event_filters": filters_json(&wanted),
                "enabled": true,
                "description": existing.get("description").cloned().unwrap_or_else(|| json!(self.description())),
                "secret": secret,
            });
            current = self
                .client
                .send(
                    ApiRequest::new(
                        http::Method::PUT,
                        format!("/webhooks/api/v1/subscriptions/{workspace_id}/{sid}"),
                    )
                    .with_body(body),
                )
                .await?
                .body;
            actions.push("filters updated".into());
        }
        if current.get("enabled").and_then(Value::as_bool) != Some(true) {
            tracing::warn!(
                workspace_id,
                subscription_id = sid,
                "subscription was disabled; re-enabling"
            );
            current = self
                .client
                .send(
                    ApiRequest::new(
                        http::Method::PATCH,
                        format!("/webhooks/api/v1/subscriptions/{workspace_id}/{sid}"),
                    )
                    .with_body(json!({"enabled": true}))
                    .idempotent(true),
                )
                .await?
                .body;
            actions.push("re-enabled".into());
        }
        self.settle(workspace_id, sid, current, &secret, wanted, actions)
            .await
    }

    async fn create(
        &self,
        workspace_id: i64,
        wanted: Vec<(String, String)>,
        mut actions: Vec<String>,
    ) -> Result<EnsureReport, SubscriptionError> {
        let secret = new_secret();
        let signing = SigningSecret::new(secret.as_bytes());
        // Before the call: Toggl's validation ping arrives while the create is in flight.
        self.secrets.add(None, signing.clone());
        let body = json!({
            "url_callback": self.callback_url,
            "event_filters": filters_json(&wanted),
            "enabled": true,
            "description": self.description(),
            "secret": secret,
        });
        let created = match self
            .client
            .send(ApiRequest::post(
                format!("/webhooks/api/v1/subscriptions/{workspace_id}"),
                body,
            ))
            .await
        {
            Ok(r) => r.body,
            Err(e) => {
                self.secrets.remove_unbound(&signing);
                return Err(e.into());
            }
        };
        let sid = i64_field(&created, "subscription_id").ok_or_else(|| {
            SubscriptionError::Unexpected("create answered without subscription_id".into())
        })?;
        self.secrets.bind(&signing, sid);
        actions.push("created".into());
        tracing::info!(workspace_id, subscription_id = sid, filters = ?wanted, "subscribed");
        self.settle(workspace_id, sid, created, &secret, wanted, actions)
            .await
    }

    /// The end of every create or repair: requests validation when Toggl has not validated the
    /// subscription yet, stores it with its secret, and reports what was done.
    async fn settle(
        &self,
        workspace_id: i64,
        sid: i64,
        mut current: Value,
        secret: &str,
        filters: Vec<(String, String)>,
        mut actions: Vec<String>,
    ) -> Result<EnsureReport, SubscriptionError> {
        if current.get("validated_at").is_none_or(Value::is_null) {
            tracing::warn!(
                workspace_id,
                subscription_id = sid,
                "subscription is not validated; requesting validation"
            );
            self.validate(workspace_id, sid).await?;
            actions.push("validation requested".into());
            current["validated_at"] = json!(chrono::Utc::now().to_rfc3339());
        }
        self.remember(workspace_id, &current, secret).await?;
        Ok(EnsureReport {
            workspace_id,
            subscription_id: sid,
            filters,
            actions,
        })
    }

    /// Pings the subscription (Toggl includes a validation code for unvalidated ones; the receiver
    /// echoes it and records its URL) and confirms the code through the URL when one was seen.
    async fn validate(&self, workspace_id: i64, sid: i64) -> Result<(), SubscriptionError> {
        self.client
            .send(
                ApiRequest::post(
                    format!("/webhooks/api/v1/ping/{workspace_id}/{sid}"),
                    json!({}),
                )
                .idempotent(true),
            )
            .await?;
        let Some(url) = self.validations.take(sid) else {
            return Ok(());
        };
        // Only ever call back into the Webhooks API we talk to: the URL came from a delivery.
        let prefix = format!(
            "{}/webhooks/api/v1/validate/",
            self.client.base_url().trim_end_matches('/')
        );
        let Some(rest) = url.strip_prefix(&prefix) else {
            tracing::warn!(
                subscription_id = sid,
                "ignoring validation URL outside the Webhooks API"
            );
            return Ok(());
        };
        match self
            .client
            .send(ApiRequest::get(format!("/webhooks/api/v1/validate/{rest}")))
            .await
        {
            // 400 = already validated (the ping's echo did it): fine.
            Ok(_) | Err(ClientError::Api { status: 400, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs [`ensure`](Self::ensure) for each workspace every `interval` until `shutdown` fires.
    pub async fn recheck_loop(
        self,
        workspaces: Vec<i64>,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            for wid in &workspaces {
                match self.ensure(*wid).await {
                    Ok(r) if !r.actions.is_empty() => {
                        tracing::warn!(workspace_id = wid, subscription_id = r.subscription_id, actions = ?r.actions, "subscription repaired");
                    }
                    Ok(_) => tracing::debug!(workspace_id = wid, "subscription healthy"),
                    Err(e) => {
                        tracing::error!(workspace_id = wid, error = %format!("{e:#}"), "subscription check failed");
                    }
                }
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

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn seed_triggers_fit_premium_exactly() {
        let t = s(&[
            "time_entry_created",
            "time_entry_updated",
            "time_entry_deleted",
            "project_created",
            "project_updated",
            "project_deleted",
            "workspace_created",
        ]);
        assert_eq!(
            pack(&t, 12).expect("known"),
            pairs(&[
                ("project", "*"),
                ("time_entry", "*"),
                ("workspace", "created")
            ])
        );
    }

    #[test]
    fn free_plan_widens_to_fit_three_filters() {
        let t = s(&[
            "time_entry_created",
            "time_entry_updated",
            "project_created",
            "client_created",
            "tag_deleted",
        ]);
        let packed = pack(&t, 3).expect("known");
        assert_eq!(
            packed,
            pairs(&[
                ("*", "created"),
                ("tag", "deleted"),
                ("time_entry", "updated")
            ])
        );
        assert_eq!(
            pack(&t, 5).expect("known").len(),
            5,
            "exact filters when they fit"
        );
        let packed1 = pack(&t, 1).expect("known");
        assert_eq!(packed1, pairs(&[("*", "*")]));
    }

    #[test]
    fn derived_triggers_need_created_and_updated() {
        assert_eq!(
            pack(&s(&["time_entry_started"]), 3).expect("known"),
            pairs(&[("time_entry", "created"), ("time_entry", "updated")])
        );
        assert_eq!(
            pack(&s(&["time_entry_stopped"]), 3).expect("known"),
            pairs(&[("time_entry", "updated")])
        );
    }

    #[test]
    fn unknown_triggers_are_refused() {
        assert!(pack(&s(&["time_entry_exploded"]), 3).is_err());
        assert!(filters_for("spaceship_created").is_err());
        assert_eq!(all_triggers().len(), 29);
        assert_eq!(
            pack(&all_triggers(), 50).expect("known"),
            pairs(&[("*", "*")])
        );
    }
}
