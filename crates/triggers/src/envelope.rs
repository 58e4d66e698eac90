//! Toggl's delivery envelope, parsed from a verified body.
//!
//! Only the fields the receiver routes on are typed; the raw body is what gets stored, so nothing
//! Toggl adds later is lost. Metadata values are strings in real events but numbers in pings
//! (both recorded), so metadata stays a JSON map and is read leniently.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
pub use toggl_connect_store::lenient_i64;
use toggl_connect_store::{ObjectKey, Snapshot, json_lenient_i64, json_string};

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

/// The envelope as it is read: everything is borrowed from the body and read only where needed.
/// The payload's text becomes a [`Snapshot`], which picks out the few fields the derivations
/// read without building a JSON tree; that text is also the entity state stored. Every delivery
/// goes through this, so it avoids building a JSON map of `metadata` (about a third of the
/// envelope's strings) or of the payload.
#[derive(Debug, Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow)]
    creator_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<Meta<'a>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    subscription_id: Option<&'a RawValue>,
    created_at: Option<String>,
    validation_code: Option<String>,
    validation_code_url: Option<String>,
}

/// `metadata`'s entries, borrowed from the body (a key is copied only when it has escapes).
/// A list, not a hash map: there are about ten, and hashing them cost most of what borrowing
/// saves (a delivery parses in 3.9-4.1 µs like this, 4.9 µs with a `HashMap`, 5.1 µs with a
/// JSON map).
#[derive(Debug, Default)]
struct Meta<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Meta<'a> {
    /// The value of `key`; the last one wins when a key repeats, as in a JSON map.
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Meta<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MetaVisitor;
        impl<'de> Visitor<'de> for MetaVisitor {
            type Value = Meta<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metadata object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta<'de>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(12).min(64));
                while let Some((ObjectKey(k), v)) =
                    map.next_entry::<ObjectKey<'de>, &'de RawValue>()?
                {
                    entries.push((k, v));
                }
                Ok(Meta(entries))
            }
        }
        d.deserialize_map(MetaVisitor)
    }
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
    /// The entity as Toggl sent it, byte for byte (shared with the entity state stored with
    /// the event). `payload.value()` parses it, for the rare reader that needs all of it.
    pub payload: Arc<Snapshot>,
    /// Where the payload's text begins in the delivery body (a byte offset), when the event was
    /// parsed from one: the store then keeps the entity state as a reference into the stored
    /// body without searching for it.
    pub payload_offset: Option<usize>,
}

/// [`lenient_i64`] of a borrowed JSON value, read without building a [`Value`].
fn raw_i64(raw: &RawValue) -> Option<i64> {
    json_lenient_i64(raw.get())
}

/// A metadata value read as text: strings as they are, numbers written out.
fn raw_text(raw: &RawValue) -> Option<String> {
    match json_string(raw.get()) {
        Some(s) => Some(s.into_owned()),
        None => serde_json::from_str::<serde_json::Number>(raw.get())
            .ok()
            .map(|n| n.to_string()),
    }
}

/// Parses a (verified) delivery body.
pub fn parse(body: &[u8]) -> Result<Delivery, EnvelopeError> {
    let raw: Raw<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            EnvelopeError::NotEnvelope(e.to_string())
        } else {
            EnvelopeError::NotJson(e)
        }
    })?;
    let payload_raw = raw
        .payload
        .ok_or_else(|| EnvelopeError::NotEnvelope("missing payload".into()))?;
    let subscription_id = raw.subscription_id.and_then(raw_i64);
    if json_string(payload_raw.get()).as_deref() == Some("ping") {
        return Ok(Delivery::Ping {
            subscription_id,
            validation_code: raw.validation_code,
            validation_code_url: raw.validation_code_url,
        });
    }
    // Borrowed from `body`, so its address is inside it.
    let payload_offset = (payload_raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize);
    // Valid JSON: the whole body was parsed around it.
    let payload = Snapshot::from_text(payload_raw.get().to_owned())
        .map_err(|e| EnvelopeError::NotEnvelope(format!("payload: {e}")))?;
    let meta = raw.metadata.unwrap_or_default();
    let meta_get = |key: &str| meta.get(key);
    let event_id = raw
        .event_id
        .and_then(raw_i64)
        .ok_or_else(|| EnvelopeError::NotEnvelope("missing or invalid event_id".into()))?;
    let entity = meta_get("model")
        .and_then(raw_text)
        .filter(|m| is_name(m))
        .ok_or_else(|| EnvelopeError::NotEnvelope("missing or invalid metadata.model".into()))?;
    let action = meta_get("action")
        .and_then(raw_text)
        .filter(|a| is_name(a))
        .ok_or_else(|| EnvelopeError::NotEnvelope("missing or invalid metadata.action".into()))?;
    let workspace_id = meta_get("workspace_id")
        .and_then(raw_i64)
        .or(payload.fields().workspace_id);
    let entity_id = payload
        .fields()
        .id
        .or_else(|| meta_get(&format!("{entity}_id")).and_then(raw_i64));
    Ok(Delivery::Event(Event {
        event_id,
        subscription_id,
        creator_id: raw.creator_id.and_then(raw_i64),
        path: meta_get("path").and_then(raw_text),
        entity,
        action,
        workspace_id,
        entity_id,
        created_at: raw.created_at,
        payload: Arc::new(payload),
        payload_offset,
    }))
}

/// Entity and action names are identifiers; anything else is refused rather than stored.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A `time_entry` event about entry 7 in workspace 1, for the crate's unit tests.
#[cfg(test)]
pub(crate) fn test_time_entry_event(
    action: &str,
    payload: serde_json::Value,
    path: Option<&str>,
) -> Event {
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
        payload: Arc::new(Snapshot::from_value(payload)),
        payload_offset: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
        assert_eq!(
            e.payload.text(),
            r#"{"id":4100000001,"workspace_id":9000001,"duration":-1736499600,"stop":null}"#,
            "the payload's text is kept exactly as delivered"
        );
        assert_eq!(e.payload.fields().duration, Some(-1_736_499_600));
        assert_eq!(e.payload.value()["duration"], -1_736_499_600);
        let at = e.payload_offset.expect("parsed from a body");
        assert_eq!(
            &body[at..at + e.payload.text().len()],
            e.payload.text().as_bytes(),
            "the offset is where the payload's text is in the body"
        );
    }

    #[test]
    fn the_payload_offset_counts_bytes_and_skips_whitespace() {
        let body = "{\"metadata\":{\"model\":\"tag\",\"action\":\"updated\",\"note\":\"é✓\"},\"event_id\":5,\n \"payload\" :\t {\"id\":3,\"name\":\"ü\"} }";
        let e = event_of(body.as_bytes());
        let at = e.payload_offset.expect("parsed from a body");
        assert_eq!(
            &body[at..at + e.payload.text().len()],
            r#"{"id":3,"name":"ü"}"#
        );
    }

    /// Metadata values are read from their text without a JSON tree, as the tree would read them.
    #[test]
    fn metadata_values_read_from_text_as_from_a_value() {
        for text in [
            "42",
            "-7",
            "4.0",
            "1e3",
            "18446744073709551615",
            r#""42""#,
            r#"" 42 ""#,
            r#""4\u0032""#,
            r#""x""#,
            "null",
            "true",
            "[1]",
            r#"{"a":1}"#,
        ] {
            let raw: &RawValue = serde_json::from_str(text).expect(text);
            let value: Value = serde_json::from_str(text).expect(text);
            assert_eq!(raw_i64(raw), lenient_i64(&value), "{text}");
            let as_text = match &value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            assert_eq!(raw_text(raw), as_text, "{text}");
        }
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

    fn event_of(body: &[u8]) -> Event {
        match parse(body).expect("parses") {
            Delivery::Event(e) => e,
            other @ Delivery::Ping { .. } => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn metadata_is_read_leniently_whatever_its_spelling() {
        // Numbers where strings are usual, an escaped key, a repeated key (the last one wins,
        // as in any JSON map), and the entity id from `<model>_id` when the payload has none.
        let e = event_of(
            br#"{"event_id":"7","creator_id":"5","metadata":{"action":"created","model":"ignored",
                "m\u006fdel":"project","workspace_id":9000001,"project_id":"4200",
                "path":"/api/v9/workspaces/9000001/projects","request_body":"{\"name\":\"x\"}"},
                "payload":{"name":"x"},"subscription_id":"42"}"#,
        );
        assert_eq!(
            (e.event_id, e.creator_id, e.subscription_id),
            (7, Some(5), Some(42))
        );
        assert_eq!(
            (e.entity.as_str(), e.action.as_str()),
            ("project", "created")
        );
        assert_eq!((e.workspace_id, e.entity_id), (Some(9_000_001), Some(4200)));
        assert_eq!(
            e.path.as_deref(),
            Some("/api/v9/workspaces/9000001/projects")
        );
    }

    #[test]
    fn metadata_that_is_missing_null_or_not_an_object_is_not_an_envelope() {
        for body in [
            br#"{"event_id":1,"payload":{"id":1}}"#.as_slice(),
            br#"{"event_id":1,"metadata":null,"payload":{"id":1}}"#,
            br#"{"event_id":1,"metadata":"time_entry","payload":{"id":1}}"#,
            br#"{"event_id":1,"metadata":{"model":"time_entry","action":["x"]},"payload":{"id":1}}"#,
        ] {
            assert!(
                matches!(parse(body), Err(EnvelopeError::NotEnvelope(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
