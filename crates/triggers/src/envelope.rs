//! Toggl's delivery envelope, parsed from a verified body.
//!
//! Only the fields the receiver routes on are typed; the raw body is what gets stored, so nothing
//! Toggl adds later is lost. Metadata values are strings in real events but numbers in pings
//! (both recorded), so metadata stays a JSON map and is read leniently.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A delivery body that is JSON but not a Toggl envelope, or not JSON at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The body is not valid JSON.
    #[error("body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// A field the envelope must have is missing or has the wrong type.
    #[error("not a Toggl webhook envelope: {0}")]
    NotEnvelope(String),
}

#[derive(Debug, Deserialize)]
struct Raw {
    event_id: Option<Value>,
    creator_id: Option<Value>,
    #[serde(default)]
    metadata: Map<String, Value>,
    payload: Option<Value>,
    subscription_id: Option<Value>,
    created_at: Option<String>,
    validation_code: Option<String>,
    validation_code_url: Option<String>,
}

/// What a delivery is.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A `PING`, possibly carrying a validation code to echo.
    Ping {
        /// The subscription being pinged.
        subscription_id: Option<i64>,
        /// Present while the subscription is not validated yet.
        validation_code: Option<String>,
        /// Where the code can be confirmed asynchronously.
        validation_code_url: Option<String>,
    },
    /// A change to an entity.
    Event(Event),
}

/// A change Toggl reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Toggl's id for this event; the same on every redelivery (the dedupe key).
    pub event_id: i64,
    /// The subscription that delivered it.
    pub subscription_id: Option<i64>,
    /// Who made the change.
    pub creator_id: Option<i64>,
    /// `metadata.model`: `time_entry`, `project`, ...
    pub entity: String,
    /// `metadata.action`: `created`, `updated`, `deleted`.
    pub action: String,
    /// `metadata.workspace_id`, or the payload's `workspace_id`.
    pub workspace_id: Option<i64>,
    /// The entity's id, from the payload or `metadata.<model>_id`.
    pub entity_id: Option<i64>,
    /// `metadata.path`, e.g. `/api/v9/workspaces/1/time_entries/2/stop`.
    pub path: Option<String>,
    /// When Toggl created the event.
    pub created_at: Option<String>,
    /// The entity as Toggl sent it.
    pub payload: Value,
}

/// Reads an integer that may arrive as a JSON number or as a decimal string.
pub fn lenient_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn meta_str(meta: &Map<String, Value>, key: &str) -> Option<String> {
    match meta.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses a (verified) delivery body.
pub fn parse(body: &[u8]) -> Result<Delivery, EnvelopeError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            EnvelopeError::NotEnvelope(e.to_string())
        } else {
            EnvelopeError::NotJson(e)
        }
    })?;
    let payload = raw
        .payload
        .ok_or_else(|| EnvelopeError::NotEnvelope("missing payload".into()))?;
    let subscription_id = raw.subscription_id.as_ref().and_then(lenient_i64);
    if payload.as_str() == Some("ping") {
        return Ok(Delivery::Ping {
            subscription_id,
            validation_code: raw.validation_code,
            validation_code_url: raw.validation_code_url,
        });
    }
    let event_id = raw
        .event_id
        .as_ref()
        .and_then(lenient_i64)
        .ok_or_else(|| EnvelopeError::NotEnvelope("missing or invalid event_id".into()))?;
    let entity = meta_str(&raw.metadata, "model")
        .filter(|m| is_name(m))
        .ok_or_else(|| EnvelopeError::NotEnvelope("missing or invalid metadata.model".into()))?;
    let action = meta_str(&raw.metadata, "action")
        .filter(|a| is_name(a))
        .ok_or_else(|| EnvelopeError::NotEnvelope("missing or invalid metadata.action".into()))?;
    let workspace_id = raw
        .metadata
        .get("workspace_id")
        .and_then(lenient_i64)
        .or_else(|| payload.get("workspace_id").and_then(lenient_i64));
    let entity_id = payload.get("id").and_then(lenient_i64).or_else(|| {
        raw.metadata
            .get(&format!("{entity}_id"))
            .and_then(lenient_i64)
    });
    Ok(Delivery::Event(Event {
        event_id,
        subscription_id,
        creator_id: raw.creator_id.as_ref().and_then(lenient_i64),
        path: meta_str(&raw.metadata, "path"),
        entity,
        action,
        workspace_id,
        entity_id,
        created_at: raw.created_at,
        payload,
    }))
}

/// Entity and action names are identifiers; anything else is refused rather than stored.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A `time_entry` event about entry 7 in workspace 1, for the crate's unit tests.
#[cfg(test)]
pub(crate) fn test_time_entry_event(action: &str, payload: Value, path: Option<&str>) -> Event {
    Event {
        event_id: 1,
        subscription_id: None,
        creator_id: None,
        entity: "time_entry".into(),
        action: action.into(),
        workspace_id: Some(1),
        entity_id: Some(7),
        path: path.map(Into::into),
        created_at: None,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_recorded_shape_event() {
        let body = br#"{"event_id":8100000000000001,"created_at":"2025-01-10T09:00:01.827Z","creator_id":5000001,
 "metadata":{"action":"created","event_user_id":"5000001","model":"time_entry","model_owner_id":"5000001",
   "path":"/api/v9/workspaces/9000001/time_entries","request_type":"POST",
   "request_body":"{}","time_entry_id":"4100000001","workspace_id":"9000001"},
 "payload":{"id":4100000001,"workspace_id":9000001,"duration":-1736499600,"stop":null},
 "subscription_id":42,"timestamp":"2025-01-10T09:00:02.170443406Z","url_callback":"https://example.test/hooks/toggl"}"#;
        let Delivery::Event(e) = parse(body).expect("parses") else {
            panic!("not an event")
        };
        assert_eq!(e.event_id, 8_100_000_000_000_001);
        assert_eq!(e.entity, "time_entry");
        assert_eq!(e.action, "created");
        assert_eq!(e.workspace_id, Some(9_000_001));
        assert_eq!(e.entity_id, Some(4_100_000_001));
        assert_eq!(e.subscription_id, Some(42));
    }

    #[test]
    fn parses_a_ping_with_code() {
        let body = br#"{"event_id":0,"creator_id":1,"metadata":{"request_type":"POST","event_user_id":1},"payload":"ping","subscription_id":42,"validation_code":"abc","validation_code_url":"http://x/validate/1/42/abc"}"#;
        assert_eq!(
            parse(body).expect("parses"),
            Delivery::Ping {
                subscription_id: Some(42),
                validation_code: Some("abc".into()),
                validation_code_url: Some("http://x/validate/1/42/abc".into())
            }
        );
    }

    #[test]
    fn refuses_non_envelopes() {
        assert!(matches!(parse(b"not json"), Err(EnvelopeError::NotJson(_))));
        assert!(matches!(
            parse(b"[1,2]"),
            Err(EnvelopeError::NotEnvelope(_))
        ));
        assert!(matches!(
            parse(br#"{"payload":{}}"#),
            Err(EnvelopeError::NotEnvelope(_))
        ));
        assert!(matches!(
            parse(br#"{"event_id":1,"metadata":{"model":"x y","action":"created"},"payload":{}}"#),
            Err(EnvelopeError::NotEnvelope(_))
        ));
    }
}
