//! `X-Webhook-Signature-256`: HMAC-SHA256 over the raw body, keyed with the subscription secret.
//!
//! Toggl signs no timestamp, so the signature proves origin and integrity only; receivers dedupe by
//! `event_id` to defend against replays.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Toggl puts the signature in.
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature-256";

fn mac(secret: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac accepts keys of any length");
    mac.update(body);
    mac
}

/// The header value for `body`: `sha256=` followed by the lowercase hex HMAC-SHA256.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Whether `header` is a valid signature of `body` under `secret` (constant-time comparison).
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_part) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_part) else {
        return false;
    };
    mac(secret, body).verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_headers() {
        let good = sign("k", b"body");
        assert!(verify("k", b"body", &good));
        assert!(!verify("k", b"body", good.trim_start_matches("sha256=")));
        assert!(!verify("k", b"body", "sha256=zz"));
        assert!(!verify("other", b"body", &good));
    }
}
