//! A string that never prints.
//!
//! Tokens and passwords live in [`Secret`] from the moment they are read, so a stray `{:?}` in a log
//! line, an error message or a panic cannot leak them. The only way to the value is [`Secret::expose`],
//! which is called in exactly one place: building the `Authorization` header.

use std::fmt;

/// A secret string (API token, password). `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Call it only where the value must leave the process (auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string (a missing `TOGGL_API_TOKEN` often looks like this).
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Serializes as `[redacted]` so that `config show` and snapshots can never print the value.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// Scrubs known secret values out of text that came from elsewhere (response bodies, transport
/// error messages) before that text reaches an error or a log line.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(needles: impl IntoIterator<Item = String>) -> Self {
        let mut needles: Vec<String> = needles.into_iter().filter(|n| n.len() >= 4).collect();
        // Longest first, so a secret that contains another one is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self { needles }
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "[redacted]");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("abc123token");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(
            serde_json::to_string(&s).expect("serializes"),
            "\"[redacted]\""
        );
        assert_eq!(s.expose(), "abc123token");
    }

    #[test]
    fn redactor_scrubs_every_occurrence() {
        let r = Redactor::new(["tok3n-value".to_owned(), "dG9rM24".to_owned()]);
        assert_eq!(
            r.scrub("a tok3n-value b tok3n-value dG9rM24x"),
            "a [redacted] b [redacted] [redacted]x"
        );
    }
}
