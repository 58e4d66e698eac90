//! Timestamp formats as the real API writes them, and lenient parsing of what clients send.
//!
//! Toggl is not consistent, and clients have been written against each form, so the sandbox
//! reproduces the recorded forms per place (VCR Dec 2024, peer cassettes Apr 2024):
//! - lists and GETs of time entries, projects, clients, tags, tasks: `2024-02-05T01:09:47+00:00`;
//! - a time entry in a create/update response: `start`/`stop` as `2024-12-16T01:55:24Z` and `at`
//!   with microseconds `2024-12-16T02:05:25.037428Z`;
//! - the user object (`/me`): microseconds with `Z` for `at`, `created_at`, `updated_at`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// `2024-02-05T01:09:47+00:00` (seconds, numeric offset).
pub fn offset_secs(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// `2024-12-16T01:55:24Z` (seconds, `Z`).
pub fn z_secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2024-12-16T02:05:25.037428Z` (microseconds, `Z`).
pub fn z_micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an RFC 3339 timestamp with any offset (normalised to UTC), or a bare `YYYY-MM-DD` as
/// midnight UTC (Toggl: "a date without time means 00:00:00").
pub fn parse_lenient(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // Some clients send `2024-01-01T10:00:00` without an offset; treat it as UTC.
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Truncates to whole seconds: time entry starts and stops are stored at second precision.
pub fn trunc_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Truncates to microseconds, the precision of `at` in responses.
pub fn trunc_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 12, 16, 1, 55, 24)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(37_428)
    }

    #[test]
    fn formats_match_recorded_forms() {
        assert_eq!(offset_secs(t()), "2024-12-16T01:55:24+00:00");
        assert_eq!(z_secs(t()), "2024-12-16T01:55:24Z");
        assert_eq!(z_micros(t()), "2024-12-16T01:55:24.037428Z");
    }

    #[test]
    fn parses_offsets_dates_and_naive() {
        let a = parse_lenient("2024-12-16T02:55:24.837112+01:00").expect("offset");
        assert_eq!(z_micros(a), "2024-12-16T01:55:24.837112Z");
        let d = parse_lenient("2024-03-12").expect("date");
        assert_eq!(offset_secs(d), "2024-03-12T00:00:00+00:00");
        let n = parse_lenient("2024-03-12T10:00:00").expect("naive");
        assert_eq!(z_secs(n), "2024-03-12T10:00:00Z");
        assert!(parse_lenient("yesterday").is_none());
        assert!(parse_lenient("2024-13-01").is_none());
    }

    #[test]
    fn truncation() {
        assert_eq!(z_micros(trunc_secs(t())), "2024-12-16T01:55:24.000000Z");
        let nanos = t() + chrono::Duration::nanoseconds(999);
        assert_eq!(trunc_micros(nanos), t());
    }
}
