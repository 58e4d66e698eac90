//! Property tests: rendering cannot be escaped by values, selectors never panic.

use proptest::prelude::*;
use serde_json::{Value, json};
use toggl_connect_definition::{BodyTemplate, Connector, ParamType, Params, Selector};

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        // Bias towards the characters that break naive splicing.
        proptest::collection::vec(
            prop_oneof![
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just("{{".to_owned()),
                Just("}}".to_owned()),
                Just("{{x}}".to_owned()),
                Just("\",\"evil\":1,\"a\":\"".to_owned()),
                Just("\u{0}".to_owned()),
                Just("\n".to_owned()),
                Just("\u{1f}".to_owned()),
                Just("é☃𝄞".to_owned()),
                Just("/".to_owned()),
                Just("?".to_owned()),
                Just("#".to_owned()),
                Just("%2F".to_owned()),
                Just("..".to_owned()),
                "[a-z]{0,3}",
            ],
            0..8
        )
        .prop_map(|v| v.concat()),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-c]{1}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_selector() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(
        prop_oneof![
            "[a-c]{1}".prop_map(Value::String),
            (0u64..4).prop_map(Value::from)
        ],
        1..5,
    )
}

proptest! {
    #[test]
    fn string_placeholders_survive_and_cannot_inject(s in any_text(), t in any_text()) {
        let tpl = BodyTemplate::parse(r#"{"whole":"{{s}}","inner":"<{{s}}|{{t}}>","n":{{n}}}"#)
            .expect("parses");
        let vals = json!({"s": s, "t": t, "n": 1});
        let out = tpl.render(&|n| vals.get(n)).expect("renders");
        let obj = out.as_object().expect("object");
        prop_assert_eq!(obj.len(), 3, "no key was injected");
        prop_assert_eq!(&obj["whole"], &Value::String(s.clone()));
        prop_assert_eq!(&obj["inner"], &Value::String(format!("<{s}|{t}>")));
        // And the serialized body parses back to the same value.
        let text = serde_json::to_string(&out).expect("serializes");
        let back: Value = serde_json::from_str(&text).expect("valid JSON");
        prop_assert_eq!(back, out);
    }

    #[test]
    fn builtin_body_strings_round_trip(s in any_text()) {
        let c = Connector::builtin();
        let op = c.operation("clients", "create").expect("op");
        let req = op
            .render(&Params::new().with("workspace_id", 1).with("name", s.clone()).with("notes", s.clone()))
            .expect("renders");
        prop_assert_eq!(req.body, Some(json!({"name": &s, "notes": &s})));
    }

    #[test]
    fn path_values_stay_in_their_segment(s in any_text().prop_filter("non-empty", |s| !s.is_empty())) {
        let c = Connector::builtin();
        let op = c.operation("webhook_subscriptions", "validate").expect("op");
        let req = op
            .render(&Params::new().with("workspace_id", 1).with("subscription_id", 2).with("validation_code", s.clone()))
            .expect("renders");
        let prefix = "/webhooks/api/v1/validate/1/2/";
        prop_assert!(req.path.starts_with(prefix));
        let seg = &req.path[prefix.len()..];
        prop_assert!(!seg.contains('/') && !seg.contains('?') && !seg.contains('#'), "{}", seg);
        prop_assert!(seg != "." && seg != "..");
        let decoded = percent_decode(seg);
        prop_assert_eq!(decoded, s);
    }

    #[test]
    fn selector_parsing_never_panics(raw in proptest::collection::vec(any_json(), 0..5)) {
        if let Ok(sel) = Selector::from_raw(&raw) {
            prop_assert_eq!(sel.0.len(), raw.len());
        }
    }

    #[test]
    fn integers_round_trip_through_text(n in any::<i64>()) {
        let c = Connector::builtin();
        let op = c.operation("projects", "read").expect("op");
        let p = Params::from_text_pairs(&[("workspace_id", n.to_string()), ("id", "1".to_owned())], &op.params)
            .expect("an integer fits");
        prop_assert_eq!(p.get("workspace_id"), Some(&json!(n)));
    }

    #[test]
    fn template_parsing_never_panics(src in any_text()) {
        if let Ok(t) = BodyTemplate::parse(&src) {
            // Whatever parsed renders, with every placeholder absent, to valid JSON or nothing.
            let rendered = t.render(&|_| None);
            if let Some(v) = rendered {
                let text = serde_json::to_string(&v).expect("serializes");
                prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
            }
        }
    }

    #[test]
    fn text_coercion_never_panics(text in any_text()) {
        for ty in [ParamType::Integer, ParamType::Number, ParamType::Boolean, ParamType::String,
                   ParamType::DateTime, ParamType::Array, ParamType::IntegerArray, ParamType::Object] {
            if let Ok(v) = ty.coerce_text("p", &text) {
                // Coercion is stable: a coerced value coerces to itself.
                prop_assert_eq!(ty.coerce_value("p", v.clone()), Ok(v));
            }
        }
    }

    #[test]
    fn selectors_never_panic(v in any_json(), raw in any_selector()) {
        let sel = Selector::from_raw(&raw).expect("valid steps");
        let one = sel.select(&v);
        let all = sel.select_all(&v);
        if one.is_null() && !all.is_empty() {
            // A multivalue walk may find values where the single path (index 0..) did not.
            prop_assert!(raw.iter().any(Value::is_number));
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf8")
}
