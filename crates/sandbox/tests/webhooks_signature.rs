//! `X-Webhook-Signature-256`: Toggl's documented known-answer vector and properties.

use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;
use toggl_connect_sandbox::webhooks::{sign, verify};

/// From Toggl's "validating received events" documentation (copied here: tests must not read
/// the shared reference).
const DOC_SECRET: &str = "PGuRrhCFajIyEvFlreKL";
const DOC_BODY: &str = r#"{"event_id":0,"created_at":"2022-06-25T03:58:10.207820267Z","creator_id":6,"metadata":{"request_type":"POST","event_user_id":6},"payload":"ping","subscription_id":6,"timestamp":"2022-06-25T03:58:10.207820267Z","url_callback":"https://callback-url.com"}"#;
const DOC_SIGNATURE: &str =
    "sha256=bf829606cda0ca6923defb5ca70a43135adc7e8887486a201a19cb50ca6006b1";

#[test]
fn documented_vector_signs_and_verifies() {
    assert_eq!(sign(DOC_SECRET, DOC_BODY.as_bytes()), DOC_SIGNATURE);
    assert!(verify(DOC_SECRET, DOC_BODY.as_bytes(), DOC_SIGNATURE));
    assert!(!verify(
        "pGuRrhCFajIyEvFlreKL",
        DOC_BODY.as_bytes(),
        DOC_SIGNATURE
    ));
    // Re-serializing (here: pretty-printing) changes the bytes and so the signature.
    let value: serde_json::Value = serde_json::from_str(DOC_BODY).expect("valid json");
    let pretty = serde_json::to_string_pretty(&value).expect("serializes");
    assert!(!verify(DOC_SECRET, pretty.as_bytes(), DOC_SIGNATURE));
}

fn reference_hmac(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

proptest! {
    #[test]
    fn any_body_verifies_and_any_one_byte_change_fails(
        secret in "[A-Za-z0-9]{1,40}",
        body in proptest::collection::vec(any::<u8>(), 1..512),
        index in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let signature = sign(&secret, &body);
        prop_assert_eq!(&signature, &reference_hmac(secret.as_bytes(), &body));
        prop_assert!(signature[7..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert!(verify(&secret, &body, &signature));

        let mut tampered = body.clone();
        let i = index.index(tampered.len());
        tampered[i] ^= flip;
        prop_assert!(!verify(&secret, &tampered, &signature));

        let mut bad_header = signature.into_bytes();
        let j = 7 + index.index(bad_header.len() - 7);
        bad_header[j] = if bad_header[j] == b'0' { b'1' } else { b'0' };
        let bad_header = String::from_utf8(bad_header).expect("ascii");
        prop_assert!(!verify(&secret, &body, &bad_header));
    }
}
