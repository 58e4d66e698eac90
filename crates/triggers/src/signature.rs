//! Webhook signatures: `X-Webhook-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`.
//!
//! Verification runs over the raw request bytes exactly as received (re-serialising the JSON
//! first is the classic mistake: key order and whitespace change and the HMAC no longer matches),
//! and compares MACs in constant time (`Mac::verify_slice`). During a secret rotation both the
//! old and the new secret are accepted, so each candidate is tried in turn.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Toggl puts the signature in.
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature-256";

const PREFIX: &str = "sha256=";
/// A hex SHA-256 MAC is 64 characters; anything longer is refused before decoding.
const HEX_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A subscription's shared secret. Prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// Wraps the secret's bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    /// The raw bytes, for handing to Toggl when creating a subscription.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a delivery's signature was refused. The receiver answers 401 without saying which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The request carried no signature header.
    #[error("missing signature")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("malformed signature")]
    Malformed,
    /// No candidate secret produces this signature for this body.
    #[error("signature mismatch")]
    Mismatch,
}

/// The header value Toggl would send for `body` signed with `secret`.
pub fn sign(secret: &SigningSecret, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `header` (the raw header value, if any) against `body` with each candidate secret.
///
/// Returns the index of the secret that matched, so the caller can tell an old secret from the
/// new one during a rotation.
pub fn verify<'a>(
    header: Option<&[u8]>,
    body: &[u8],
    candidates: impl IntoIterator<Item = &'a SigningSecret>,
) -> Result<usize, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let header = std::str::from_utf8(header)
        .map_err(|_| SignatureError::Malformed)?
        .trim();
    let hex_part = header
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .and_then(|_| header.get(PREFIX.len()..))
        .ok_or(SignatureError::Malformed)?;
    if hex_part.len() != HEX_LEN {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    for (index, secret) in candidates.into_iter().enumerate() {
        let mut mac =
            HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts keys of any length");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(index);
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Toggl's own example from "Validating Received Events".
    const KAT_SECRET: &str = "PGuRrhCFajIyEvFlreKL";
    const KAT_BODY: &str = r#"{"event_id":0,"created_at":"2022-06-25T03:58:10.207820267Z","creator_id":6,"metadata":{"request_type":"POST","event_user_id":6},"payload":"ping","subscription_id":6,"timestamp":"2022-06-25T03:58:10.207820267Z","url_callback":"https://callback-url.com"}"#;
    const KAT_HEADER: &str =
        "sha256=bf829606cda0ca6923defb5ca70a43135adc7e8887486a201a19cb50ca6006b1";

    #[test]
    fn known_answer_signs_and_verifies() {
        let secret = SigningSecret::new(KAT_SECRET);
        assert_eq!(sign(&secret, KAT_BODY.as_bytes()), KAT_HEADER);
        assert_eq!(
            verify(Some(KAT_HEADER.as_bytes()), KAT_BODY.as_bytes(), [&secret]),
            Ok(0)
        );
    }

    #[test]
    fn reserialised_body_fails() {
        let secret = SigningSecret::new(KAT_SECRET);
        let value: serde_json::Value = serde_json::from_str(KAT_BODY).expect("valid json");
        let pretty = serde_json::to_string_pretty(&value).expect("serialises");
        assert_eq!(
            verify(Some(KAT_HEADER.as_bytes()), pretty.as_bytes(), [&secret]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_old_and_new() {
        let old = SigningSecret::new("old-secret");
        let new = SigningSecret::new("new-secret");
        let body = b"{}";
        let by_old = sign(&old, body);
        assert_eq!(verify(Some(by_old.as_bytes()), body, [&new, &old]), Ok(1));
        let stranger = SigningSecret::new("stranger");
        let by_stranger = sign(&stranger, body);
        assert_eq!(
            verify(Some(by_stranger.as_bytes()), body, [&new, &old]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers() {
        let s = SigningSecret::new("k");
        for bad in [
            "",
            "sha256=",
            "sha1=abcd",
            "sha256=zz",
            &format!("sha256={}", "a".repeat(66)),
        ] {
            assert_eq!(
                verify(Some(bad.as_bytes()), b"x", [&s]),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(verify(None, b"x", [&s]), Err(SignatureError::Missing));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", SigningSecret::new("hunter2")), "[redacted]");
    }

    proptest! {
        #[test]
        fn any_body_round_trips_and_any_flip_fails(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            key in proptest::collection::vec(any::<u8>(), 1..64),
            flip in any::<proptest::sample::Index>(),
        ) {
            let secret = SigningSecret::new(key);
            let header = sign(&secret, &body);
            prop_assert_eq!(verify(Some(header.as_bytes()), &body, [&secret]), Ok(0));
            if !body.is_empty() {
                let mut tampered = body;
                let i = flip.index(tampered.len());
                tampered[i] ^= 0x01;
                prop_assert_eq!(verify(Some(header.as_bytes()), &tampered, [&secret]), Err(SignatureError::Mismatch));
            }
        }
    }
}
