//! Times in the forms agents get: RFC 3339 (seconds) and Unix seconds.
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// RFC 3339 for a Unix time; empty when out of range.
pub fn unix_to_rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}
