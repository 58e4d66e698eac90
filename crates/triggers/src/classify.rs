//! Trigger names for an event, including the derived `time_entry_started` / `time_entry_stopped`.
//!
//! Toggl has no event names: a delivery carries `metadata.model` and `metadata.action`. The base
//! trigger is `<model>_<action>`. Two more are derived for time entries, and both need care
//! (users.md #6: "started fires on stop", "entries created already stopped are missed"):
//!
//! - `time_entry_started`: a created or updated entry whose duration is negative (running) and
//!   that was not running before. An entry created already stopped is only `created`.
//! - `time_entry_stopped`: `stop` went from null to a value. An edit of an entry that was already
//!   stopped is only `updated`.
//!
//! "Before" comes from the stored previous state of the entry. When there is none (the first
//! event we see for an entry, e.g. one started before we subscribed), an update is `stopped` when
//! the request itself was the stop call (`metadata.path` ending in `/stop`), or when the entry's
//! `stop` is the moment of this very change (`stop` within [`STOP_AT_TOLERANCE_SECS`] of `at`):
//! that is what a stop looks like, including the implicit stop Toggl makes when another timer
//! starts, while an edit of an old entry leaves `stop` in the past. Without history an update is
//! never `started` (a running entry we have not seen start cannot be told from an edit of it).

use toggl_connect_store::{Fields, Snapshot};

use crate::envelope::Event;

/// How close `stop` and `at` must be for an update without history to count as a stop.
pub const STOP_AT_TOLERANCE_SECS: i64 = 2;

fn stopped_at_change(entry: &Fields) -> bool {
    match (entry.stop, entry.at) {
        (Some(stop), Some(at)) => (at - stop).num_seconds().abs() <= STOP_AT_TOLERANCE_SECS,
        _ => false,
    }
}

/// The triggers an event fires, most specific last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// `<entity>_<action>`, always present.
    pub base: String,
    /// Derived triggers (`time_entry_started`, `time_entry_stopped`).
    pub derived: Vec<&'static str>,
}

impl Classification {
    /// Every trigger name this event fires.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.base.as_str()).chain(self.derived.iter().copied())
    }

    /// Every trigger name, space-separated (as stored with the event).
    pub fn joined(&self) -> String {
        let mut names = self.base.clone();
        for derived in &self.derived {
            names.push(' ');
            names.push_str(derived);
        }
        names
    }
}

/// Whether a time entry describes a running entry: a negative duration and no `stop`.
pub fn is_running(entry: &Fields) -> bool {
    entry.duration.is_some_and(|d| d < 0) && !entry.stop_set
}

/// Classifies `event`, given the entity's previously stored state when there is one.
pub fn classify(event: &Event, previous: Option<&Snapshot>) -> Classification {
    // Not `format!`: this runs for every event on the store's writer, where the formatting
    // machinery showed in profiles (about 2% of the receiver's CPU).
    let mut base = String::with_capacity(event.entity.len() + 1 + event.action.len());
    base.push_str(&event.entity);
    base.push('_');
    base.push_str(&event.action);
    let mut derived = Vec::new();
    if event.entity == "time_entry" {
        let now = event.payload.fields();
        let now_running = is_running(now);
        match (event.action.as_str(), previous.map(Snapshot::fields)) {
            ("created", _) if now_running => derived.push("time_entry_started"),
            ("updated", Some(prev)) => {
                let was_running = is_running(prev);
                if now_running && !was_running {
                    derived.push("time_entry_started");
                }
                if !prev.stop_set && was_running && now.stop_set {
                    derived.push("time_entry_stopped");
                }
            }
            ("updated", None) => {
                let via_stop_call = event.path.as_deref().is_some_and(|p| p.ends_with("/stop"));
                if now.stop_set && (via_stop_call || stopped_at_change(now)) {
                    derived.push("time_entry_stopped");
                }
            }
            _ => {}
        }
    }
    Classification { base, derived }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use crate::envelope::test_time_entry_event as event;

    fn running() -> Value {
        json!({"id":7,"duration":-1736499600,"stop":null})
    }
    fn stopped() -> Value {
        json!({"id":7,"duration":60,"stop":"2025-01-10T09:01:00Z"})
    }
    fn state(v: Value) -> Snapshot {
        Snapshot::from_value(v)
    }

    #[test]
    fn created_running_is_started() {
        let c = classify(&event("created", running(), None), None);
        assert_eq!(c.base, "time_entry_created");
        assert_eq!(c.derived, vec!["time_entry_started"]);
        assert_eq!(c.joined(), "time_entry_created time_entry_started");
    }

    #[test]
    fn created_stopped_is_only_created() {
        assert!(
            classify(&event("created", stopped(), None), None)
                .derived
                .is_empty()
        );
    }

    #[test]
    fn stop_is_stopped_not_started() {
        let c = classify(&event("updated", stopped(), None), Some(&state(running())));
        assert_eq!(c.derived, vec!["time_entry_stopped"]);
    }

    #[test]
    fn edit_of_stopped_entry_is_only_updated() {
        let mut edited = stopped();
        edited["description"] = json!("renamed");
        assert!(
            classify(&event("updated", edited, None), Some(&state(stopped())))
                .derived
                .is_empty()
        );
    }

    #[test]
    fn edit_of_running_entry_is_only_updated() {
        let mut edited = running();
        edited["description"] = json!("renamed");
        assert!(
            classify(&event("updated", edited, None), Some(&state(running())))
                .derived
                .is_empty()
        );
    }

    #[test]
    fn restart_by_update_is_started() {
        let c = classify(&event("updated", running(), None), Some(&state(stopped())));
        assert_eq!(c.derived, vec!["time_entry_started"]);
    }

    #[test]
    fn without_history_only_the_stop_call_counts() {
        let c = classify(
            &event(
                "updated",
                stopped(),
                Some("/api/v9/workspaces/1/time_entries/7/stop"),
            ),
            None,
        );
        assert_eq!(c.derived, vec!["time_entry_stopped"]);
        assert!(
            classify(
                &event(
                    "updated",
                    stopped(),
                    Some("/api/v9/workspaces/1/time_entries/7")
                ),
                None
            )
            .derived
            .is_empty()
        );
        // Stopped as a side effect of starting another timer: stop is the moment of the change.
        let implicit = json!({"id":7,"duration":60,"stop":"2025-01-10T09:01:00Z","at":"2025-01-10T09:01:01.5Z"});
        let c = classify(
            &event(
                "updated",
                implicit,
                Some("/api/v9/workspaces/1/time_entries"),
            ),
            None,
        );
        assert_eq!(c.derived, vec!["time_entry_stopped"]);
        // An edit long after the stop is only an update.
        let edit =
            json!({"id":7,"duration":60,"stop":"2025-01-10T09:01:00Z","at":"2025-01-11T10:00:00Z"});
        assert!(
            classify(&event("updated", edit, None), None)
                .derived
                .is_empty()
        );
    }

    #[test]
    fn other_entities_have_base_only() {
        let mut e = event("created", json!({"id":1}), None);
        e.entity = "project".into();
        let c = classify(&e, None);
        assert_eq!(c.base, "project_created");
        assert!(c.derived.is_empty());
        assert_eq!(c.joined(), "project_created");
    }
}
