//! An entity's JSON kept as text, with the few fields the derivations read picked out of it.
//!
//! Every delivery's `payload` becomes the entity's stored state, and the state that the next
//! delivery of the same entity is classified against. Parsed into a JSON tree, each cost about
//! 3 µs and some thirty allocations on the receiving thread (`bench/ingest/README.md`, session
//! 6), mostly for fields nothing reads, and the tree was later dropped on the store's writer
//! thread. A [`Snapshot`] scans the text once for `id`, `workspace_id`, `at`, `stop` and
//! `duration` and skips the rest without allocating (about 0.6 µs). It parses the whole value
//! only when something asks for it: a version comparison that `at` cannot decide, or a caller
//! that wants the JSON.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// An entity as JSON: its text (what is stored), its [`Fields`], and its parsed value on demand.
///
/// Two snapshots are equal when their texts are.
#[derive(Clone)]
pub struct Snapshot {
    text: String,
    fields: Fields,
    value: OnceLock<Value>,
}

/// The fields of a snapshot that the derivations read, as [`Value`] accessors would give them
/// (`get("duration").and_then(Value::as_i64)`, and so on). Empty when the JSON is not an object.
/// A key that appears twice counts with its last value, as in a parsed JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fields {
    /// Whether the JSON is an object.
    pub is_object: bool,
    /// `id`, given as a JSON integer or a decimal string.
    pub id: Option<i64>,
    /// `workspace_id`, given as a JSON integer or a decimal string.
    pub workspace_id: Option<i64>,
    /// Whether the object has an `at` key, whatever its value.
    pub has_at: bool,
    /// `at`, when it is an RFC 3339 string.
    pub at: Option<DateTime<FixedOffset>>,
    /// Whether `at` is a string with a `.` in it (sub-second digits).
    pub at_fractional: bool,
    /// Whether `stop` is present and not `null`.
    pub stop_set: bool,
    /// `stop`, when it is an RFC 3339 string.
    pub stop: Option<DateTime<FixedOffset>>,
    /// `duration`, when it is a JSON integer.
    pub duration: Option<i64>,
}

impl Snapshot {
    /// A snapshot of JSON text. Fails when `text` is not JSON.
    pub fn from_text(text: String) -> Result<Snapshot, serde_json::Error> {
        let fields = if text.trim_start().starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(&text);
            let fields = de.deserialize_map(FieldsVisitor)?;
            de.end()?;
            fields
        } else {
            serde_json::from_str::<IgnoredAny>(&text)?;
            Fields::default()
        };
        Ok(Snapshot {
            text,
            fields,
            value: OnceLock::new(),
        })
    }

    /// A snapshot of a parsed value (a listing's item, a test's `json!`): its text is the
    /// value serialized.
    pub fn from_value(value: Value) -> Snapshot {
        Snapshot {
            text: value.to_string(),
            fields: Fields::of(&value),
            value: OnceLock::from(value),
        }
    }

    /// A snapshot of an entity state read back from a store; text that is not JSON there is
    /// damaged data.
    pub(crate) fn from_stored(text: String) -> Result<Snapshot, crate::StoreError> {
        Snapshot::from_text(text).map_err(stored_state_not_json)
    }

    /// The JSON text, as given or as serialized.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The fields the derivations read.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The whole value, parsed on the first call.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            // The text was parsed once already when the snapshot was made: it is JSON.
            serde_json::from_str(&self.text).unwrap_or(Value::Null)
        })
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Snapshot").field(&self.text).finish()
    }
}

impl Fields {
    /// The fields of a parsed value.
    fn of(value: &Value) -> Fields {
        let Some(object) = value.as_object() else {
            return Fields::default();
        };
        let time = |v: &Value| v.as_str().and_then(rfc3339);
        let at = object.get("at");
        let stop = object.get("stop");
        Fields {
            is_object: true,
            id: object.get("id").and_then(lenient_i64),
            workspace_id: object.get("workspace_id").and_then(lenient_i64),
            has_at: at.is_some(),
            at: at.and_then(time),
            at_fractional: at.and_then(Value::as_str).is_some_and(|s| s.contains('.')),
            stop_set: stop.is_some_and(|s| !s.is_null()),
            stop: stop.and_then(time),
            duration: object.get("duration").and_then(Value::as_i64),
        }
    }

    /// Takes one entry of the object. Every field of a key is set again from its value, so a
    /// repeated key ends with its last value.
    fn take(&mut self, key: &str, raw: &RawValue) {
        let text = raw.get();
        match key {
            "id" => self.id = json_lenient_i64(text),
            "workspace_id" => self.workspace_id = json_lenient_i64(text),
            "at" => {
                let s = json_string(text);
                self.has_at = true;
                self.at = s.as_deref().and_then(rfc3339);
                self.at_fractional = s.is_some_and(|s| s.contains('.'));
            }
            "stop" => {
                self.stop_set = text != "null";
                self.stop = json_string(text).as_deref().and_then(rfc3339);
            }
            "duration" => self.duration = serde_json::from_str::<i64>(text).ok(),
            _ => {}
        }
    }
}

/// The whole value of an entity state read back from a store (for a caller that asks for the
/// JSON, not a derivation): no [`Snapshot`], whose field scan nobody would read.
pub(crate) fn stored_state_value(text: &str) -> Result<Value, crate::StoreError> {
    serde_json::from_str(text).map_err(stored_state_not_json)
}

fn stored_state_not_json(e: serde_json::Error) -> crate::StoreError {
    crate::StoreError::corrupt(format!("an entity state is not JSON: {e}"))
}

fn rfc3339(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// The content of a JSON string given as its JSON text, borrowed unless it has escapes; `None`
/// for any other JSON. (Shared with the envelope parser, which reads metadata values so.)
pub fn json_string(text: &str) -> Option<Cow<'_, str>> {
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// An integer that may arrive as a JSON number or as a decimal string (Toggl sends ids both
/// ways).
pub fn lenient_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// [`lenient_i64`] of a value given as its JSON text, read without building a [`Value`].
pub fn json_lenient_i64(text: &str) -> Option<i64> {
    match json_string(text) {
        Some(s) => s.trim().parse().ok(),
        None => serde_json::from_str::<i64>(text).ok(),
    }
}

/// Reads an object's entries: the ones [`Fields`] knows as borrowed text, the rest skipped.
struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields {
            is_object: true,
            ..Fields::default()
        };
        while let Some(key) = map.next_key::<ObjectKey<'de>>()? {
            match &*key.0 {
                "id" | "workspace_id" | "at" | "stop" | "duration" => {
                    let raw: &RawValue = map.next_value()?;
                    fields.take(&key.0, raw);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A JSON object's key, borrowed from the text when it has no escapes. Written out rather than
/// derived with `#[serde(borrow)]`, which measured slower in the envelope parser (4.6-5.5 µs
/// per delivery against 3.9-4.1). (Shared with the envelope parser.)
#[derive(Debug)]
pub struct ObjectKey<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for ObjectKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = ObjectKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<ObjectKey<'de>, E> {
                Ok(ObjectKey(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ObjectKey<'de>, E> {
                Ok(ObjectKey(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ObjectKey<'de>, E> {
                Ok(ObjectKey(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The fields read from the text are the ones read from the parsed value, for every shape
    /// the derivations meet and some they should not.
    #[test]
    fn fields_from_text_are_the_fields_of_the_value() {
        let cases = [
            r#"{"id":7,"duration":-1736499600,"stop":null,"at":"2025-01-10T09:01:01Z"}"#,
            r#"{"id":"7","workspace_id":" 12 ","duration":60,"stop":"2025-01-10T09:01:00Z","at":"2025-01-10T09:01:01.948Z"}"#,
            r#"{"id":7.5,"duration":60.0,"stop":"yesterday","at":17}"#,
            r#"{"id":18446744073709551615,"duration":"60","stop":false,"at":null}"#,
            r#"{"at":"2025-01-10T09:01:01Z","at":"2025-01-10T09:01:02.5+01:00","stop":"2025-01-10T09:00:00Z","stop":null}"#,
            r#"{"a\u0074":"2025-01-10T09:01:01Z","\u0069d":"\u0037","nested":{"id":9,"at":"x"},"list":[{"stop":1}]}"#,
            r#"  { }  "#,
            r#"[{"id":7}]"#,
            r#""ping""#,
            "42",
            "null",
        ];
        for text in cases {
            let from_text = Snapshot::from_text(text.to_owned()).expect(text);
            let value: Value = serde_json::from_str(text).expect(text);
            assert_eq!(from_text.fields(), &Fields::of(&value), "{text}");
            assert_eq!(from_text.value(), &value, "{text}");
            assert_eq!(from_text.text(), text, "the text is kept as given");
        }
    }

    /// Any JSON value: mostly the five keys, with values of every type (timestamps with and
    /// without fractions and offsets, integers as strings), nested objects and arrays.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            " ?-?[0-9]{1,10} ?".prop_map(Value::from),
            (0u32..4_000_000_000, 0u32..1000, any::<bool>()).prop_map(|(secs, ms, utc)| {
                let t = chrono::DateTime::from_timestamp(i64::from(secs), ms * 1_000_000)
                    .expect("in range");
                Value::from(if utc {
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                } else {
                    t.with_timezone(&FixedOffset::east_opt(3600).expect("offset"))
                        .to_rfc3339()
                })
            }),
            ".{0,8}".prop_map(Value::from),
        ];
        let key = prop_oneof![
            4 => prop::sample::select(vec!["id", "workspace_id", "at", "stop", "duration"])
                .prop_map(str::to_owned),
            1 => "[a-z]{1,6}",
        ];
        leaf.prop_recursive(3, 32, 8, move |inner| {
            prop_oneof![
                1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                3 => prop::collection::vec((key.clone(), inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn fields_from_any_text_are_the_fields_of_its_value(value in any_json()) {
            let text = value.to_string();
            let snapshot = Snapshot::from_text(text.clone()).expect("serialized JSON parses");
            proptest::prop_assert_eq!(snapshot.fields(), &Fields::of(&value), "{}", text);
            let pretty = serde_json::to_string_pretty(&value).expect("serializes");
            let spaced = Snapshot::from_text(pretty).expect("pretty JSON parses");
            proptest::prop_assert_eq!(spaced.fields(), &Fields::of(&value), "{}", text);
        }
    }

    #[test]
    fn the_fields_hold_what_the_derivations_read() {
        let s = Snapshot::from_text(
            r#"{"id":"7","workspace_id":12,"duration":-1,"stop":null,"at":"2025-01-10T09:01:01.5Z","description":"a"}"#
                .to_owned(),
        )
        .expect("json");
        let f = s.fields();
        assert!(f.is_object && f.has_at && f.at_fractional);
        assert_eq!(
            (f.id, f.workspace_id, f.duration),
            (Some(7), Some(12), Some(-1))
        );
        assert_eq!(f.at.map(|t| t.timestamp_millis()), Some(1_736_499_661_500));
        assert!(!f.stop_set && f.stop.is_none());
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        for text in [
            "",
            "{",
            r#"{"id":1,}"#,
            r#"{"id":1} trailing"#,
            r#"{"id":01}"#,
            "nul",
        ] {
            assert!(Snapshot::from_text(text.to_owned()).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_snapshot_of_a_value_is_its_serialization() {
        let value = json!({"id": 7, "stop": "2025-01-10T09:01:00Z", "tags": ["a"]});
        let s = Snapshot::from_value(value.clone());
        assert_eq!(s.text(), value.to_string());
        assert_eq!(s.value(), &value);
        assert_eq!(s.fields().id, Some(7));
        assert!(s.fields().stop_set);
        let again = Snapshot::from_text(s.text().to_owned()).expect("json");
        assert_eq!(again, s);
        assert_eq!(again.fields(), s.fields());
        assert_eq!(s.clone(), s);
    }
}
