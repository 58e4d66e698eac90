//! Subscriptions and their event logs, as kept in memory and in the `--state` snapshot.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The entities a filter can name (Toggl's `metadata.model` values).
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

/// The actions a filter can name.
pub const ACTIONS: [&str; 3] = ["created", "updated", "deleted"];

/// Subscription timestamps carry microseconds, like Toggl's (`2025-01-10T09:00:00.000000Z`).
pub(crate) fn micros(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Event timestamps carry nanoseconds, like the recorded ping (`2022-06-25T03:58:10.207820267Z`).
pub(crate) fn nanos(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// One `{entity, action}` pair; either side may be `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventFilter {
    pub entity: String,
    pub action: String,
}

impl EventFilter {
    pub fn matches(&self, entity: &str, action: &str) -> bool {
        (self.entity == "*" || self.entity == entity)
            && (self.action == "*" || self.action == action)
    }
}

/// Where an event stands in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt of the current round failed; kept and retried when the subscription is
    /// re-enabled, validated or successfully pinged.
    Failed,
}

/// One delivery attempt as recorded in the event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Attempt {
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One event for one subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EventRecord {
    pub event_id: i64,
    pub created_at: DateTime<Utc>,
    pub creator_id: i64,
    pub metadata: Map<String, Value>,
    pub payload: Value,
    pub status: EventStatus,
    pub attempts: Vec<Attempt>,
    /// Attempts made in the current round (reset when a failed event is requeued).
    pub round_attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl EventRecord {
    /// The wire envelope for an attempt made at `timestamp`.
    pub fn envelope(
        &self,
        subscription_id: i64,
        url_callback: &str,
        timestamp: DateTime<Utc>,
    ) -> Value {
        json!({
            "event_id": self.event_id,
            "created_at": nanos(self.created_at),
            "creator_id": self.creator_id,
            "metadata": self.metadata,
            "payload": self.payload,
            "subscription_id": subscription_id,
            "timestamp": nanos(timestamp),
            "url_callback": url_callback,
        })
    }

    /// The event log entry served by `GET /subscriptions/{wid}/{sid}/events`.
    pub fn log_json(&self) -> Value {
        let failed = self.attempts.iter().filter(|a| a.error.is_some()).count();
        let last_error = self.attempts.iter().rev().find_map(|a| a.error.clone());
        let attempts: Vec<Value> = self
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "attempted_at": nanos(a.attempted_at),
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                })
            })
            .collect();
        json!({
            "event_id": self.event_id,
            "created_at": nanos(self.created_at),
            "creator_id": self.creator_id,
            "status": self.status,
            "delivery_attempts": attempts,
            "failed_delivery_attempts": failed,
            "last_delivery_error": last_error,
            "delivered_at": self.delivered_at.map(nanos),
            "next_attempt_at": self.next_attempt_at.map(nanos),
            "metadata": self.metadata,
            "payload": self.payload,
        })
    }
}

/// A subscription with its validation code and event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Subscription {
    pub subscription_id: i64,
    pub workspace_id: i64,
    pub user_id: i64,
    pub enabled: bool,
    pub description: String,
    pub event_filters: Vec<EventFilter>,
    pub url_callback: String,
    pub secret: String,
    pub validation_code: String,
    pub validated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub events: VecDeque<EventRecord>,
}

impl Subscription {
    /// Events reach the endpoint only when both hold (reference 5.3 step 4).
    pub fn deliverable(&self) -> bool {
        self.enabled && self.validated_at.is_some()
    }

    pub fn has_pending_events(&self) -> bool {
        self.events
            .iter()
            .any(|e| e.status != EventStatus::Delivered)
    }

    pub fn matches(&self, entity: &str, action: &str) -> bool {
        self.event_filters.iter().any(|f| f.matches(entity, action))
    }

    /// Failed events get a fresh round of attempts; pending ones keep their schedule.
    pub fn requeue_failed(&mut self) -> bool {
        let mut any = false;
        for event in &mut self.events {
            if event.status == EventStatus::Failed {
                event.status = EventStatus::Pending;
                event.round_attempts = 0;
                event.next_attempt_at = None;
                any = true;
            }
        }
        any
    }

    /// The subscription object exactly as the API serves it.
    pub fn to_json(&self, deleted_at: Option<DateTime<Utc>>) -> Value {
        json!({
            "subscription_id": self.subscription_id,
            "workspace_id": self.workspace_id,
            "user_id": self.user_id,
            "enabled": self.enabled,
            "description": self.description,
            "event_filters": self.event_filters,
            "url_callback": self.url_callback,
            "secret": self.secret,
            "validated_at": self.validated_at.map(micros),
            "has_pending_events": self.has_pending_events(),
            "created_at": micros(self.created_at),
            "updated_at": self.updated_at.map(micros),
            "deleted_at": deleted_at.map(micros),
        })
    }
}

/// Why a subscription body was refused; the text is Toggl's 400 message.
pub(crate) fn validate_filters(filters: &[EventFilter], max_filters: u32) -> Result<(), String> {
    if filters.is_empty() {
        return Err("The list of event filters must not be empty".to_owned());
    }
    if filters.len() > max_filters as usize {
        return Err(format!(
            "The limit of {max_filters} event filters for your subscription has been exceeded as you're trying to set {} filters",
            filters.len()
        ));
    }
    for (i, filter) in filters.iter().enumerate() {
        if filter.entity.is_empty() {
            return Err(
                "The entity field for each subscription event filter must be non-empty".to_owned(),
            );
        }
        if !is_name_or_wildcard(&filter.entity) {
            return Err(format!(
                "The value '{}' for the filter entity can only contain letters, numbers and '_' or be '*' to match all entities",
                filter.entity
            ));
        }
        if filter.action.is_empty() {
            return Err(
                "The action field for each subscription event filter must be non-empty".to_owned(),
            );
        }
        if !is_name_or_wildcard(&filter.action) {
            return Err(format!(
                "The value '{}' for the filter action can only contain letters, numbers and '_' or be '*' to match all actions",
                filter.action
            ));
        }
        if filter.action != "*" && !ACTIONS.contains(&filter.action.as_str()) {
            return Err(format!(
                "Invalid value '{}' for event filter action",
                filter.action
            ));
        }
        if filters[..i].contains(filter) {
            return Err(format!(
                "The following event filter appears more than once for your subscription: {}",
                json!(filter)
            ));
        }
    }
    Ok(())
}

fn is_name_or_wildcard(s: &str) -> bool {
    s == "*" || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is the test failure
mod tests {
    use super::*;

    fn f(entity: &str, action: &str) -> EventFilter {
        EventFilter {
            entity: entity.to_owned(),
            action: action.to_owned(),
        }
    }

    #[test]
    fn filter_messages() {
        assert_eq!(
            validate_filters(&[], 3).unwrap_err(),
            "The list of event filters must not be empty"
        );
        assert!(
            validate_filters(&[f("a", "*"), f("b", "*")], 1)
                .unwrap_err()
                .contains("limit of 1 event filters")
        );
        assert!(
            validate_filters(&[f("time-entry", "*")], 3)
                .unwrap_err()
                .contains("filter entity can only contain")
        );
        assert!(
            validate_filters(&[f("*", "")], 3)
                .unwrap_err()
                .contains("action field")
        );
        assert_eq!(
            validate_filters(&[f("*", "started")], 3).unwrap_err(),
            "Invalid value 'started' for event filter action"
        );
        assert!(
            validate_filters(&[f("tag", "*"), f("tag", "*")], 3)
                .unwrap_err()
                .contains("more than once")
        );
        assert!(validate_filters(&[f("*", "*"), f("time_entry", "deleted")], 3).is_ok());
    }

    #[test]
    fn wildcards_match() {
        assert!(f("*", "*").matches("tag", "created"));
        assert!(f("tag", "*").matches("tag", "deleted"));
        assert!(!f("tag", "*").matches("task", "deleted"));
        assert!(f("*", "updated").matches("project", "updated"));
        assert!(!f("*", "updated").matches("project", "created"));
    }
}
