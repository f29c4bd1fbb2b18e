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

/// Unix nanoseconds of an RFC 3339 time (any number of fraction digits, as
/// Docker writes them: trailing zeros trimmed); None when it is not one.
pub fn rfc3339_to_unix_ns(text: &str) -> Option<i128> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp_nanos)
}

/// RFC 3339 in UTC with nanoseconds (`2026-11-28T08:11:32.123456789Z`):
/// fixed width, so times from different sources line up; empty when out of range.
pub fn unix_ns_to_rfc3339(ns: i128) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(ns) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_times_round_trip() {
        let ns = rfc3339_to_unix_ns("2026-11-28T08:11:32.1234Z").expect("parse");
        assert_eq!(ns, 1_795_853_492_123_400_000);
        assert_eq!(unix_ns_to_rfc3339(ns), "2026-11-28T08:11:32.123400000Z");
        let whole = rfc3339_to_unix_ns("2026-11-28T09:11:32+01:00").expect("offset");
        assert_eq!(whole, 1_795_853_492_000_000_000);
        assert_eq!(
            rfc3339_to_unix_ns("2026-11-28T08:11:32.123456789Z"),
            Some(1_795_853_492_123_456_789)
        );
        assert_eq!(rfc3339_to_unix_ns("yesterday"), None);
    }
}
