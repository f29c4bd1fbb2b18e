//! The system clock, in the forms agents get: RFC 3339 and Unix seconds.
use time::OffsetDateTime;

pub use crate::domain::time::unix_to_rfc3339;

pub fn now_rfc3339() -> String {
    unix_to_rfc3339(now_unix())
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in Unix nanoseconds (log time bounds).
pub fn now_unix_ns() -> i128 {
    OffsetDateTime::now_utc().unix_timestamp_nanos()
}
