//! The wall clock, read in one place: seconds since the Unix epoch.

use time::OffsetDateTime;

/// Now, in whole seconds since the Unix epoch (UTC).
pub(crate) fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}
