//! The wall clock, read in one place: seconds since the Unix epoch — and [`Clock`], the clock
//! for the times entrance itself keeps (a session's absolute lifetime, the idle-refresh step, a
//! pending login's age), which tests move forward instead of sleeping.
//!
//! Times kept by others stay on the real clock: tower-sessions computes a session's idle expiry
//! (`Expiry::OnInactivity`) from `OffsetDateTime::now_utc`, the stores compare against it, Redis
//! expires keys itself, and an ID token's `exp`/`iat` are the IdP's.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use time::OffsetDateTime;

/// Now, in whole seconds since the Unix epoch (UTC), from the real clock.
pub(crate) fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The clock entrance keeps its own times by: the real clock plus an offset that only moves
/// forward. [`Clock::default`] is the real clock; [`Application::with_clock`] hands one in,
/// and whoever holds a clone may [`advance`](Clock::advance) it.
///
/// [`Application::with_clock`]: crate::Application::with_clock
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    /// The real clock, not moved yet.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// Moves this clock (and every clone of it) forward by `by`, whole seconds.
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
    }

    /// Now by this clock, in whole seconds since the Unix epoch.
    pub fn now_unix(&self) -> i64 {
        now_unix().saturating_add(self.offset_secs.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advanced_clock_runs_ahead_of_the_real_one_in_every_clone() {
        let clock = Clock::new();
        let copy = clock.clone();
        assert!((clock.now_unix() - now_unix()).abs() <= 1);
        clock.advance(Duration::from_secs(3600));
        let ahead = copy.now_unix() - now_unix();
        assert!((3599..=3601).contains(&ahead), "{ahead}");
    }
}
