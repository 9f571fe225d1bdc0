//! One rule for credentials that run out — a client secret's Expires date, a certificate's
//! notAfter: expired, expiring within [`WARNING_DAYS`], or fine. Startup, `entrance check`,
//! reloads and `/readyz` all judge by it.

use time::OffsetDateTime;

/// Warn this many days ahead: time for a customer's admin to create a new secret or upload a
/// new certificate (docs/ENTRA-GUIDE.md, "Rotating a client secret").
pub(crate) const WARNING_DAYS: i64 = 30;

/// The fix for a certificate that has expired or soon will, in the Entra portal's words.
pub(crate) const RENEW_CERTIFICATE: &str = "upload a new certificate under Certificates & secrets → Certificates, point client_certificate_file and client_private_key_file at it, then delete the old one";

/// How a credential's end date stands at a moment; each carries the whole days left
/// (zero or negative once expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    Expired { days: i64 },
    Soon { days: i64 },
    Later { days: i64 },
}

impl Expiry {
    pub(crate) fn judge(end: OffsetDateTime, now: OffsetDateTime) -> Expiry {
        let days = (end - now).whole_days();
        if end <= now {
            Expiry::Expired { days }
        } else if days < WARNING_DAYS {
            Expiry::Soon { days }
        } else {
            Expiry::Later { days }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn the_boundaries_fall_where_the_rule_says() {
        let now = time::macros::datetime!(2026-01-01 00:00 UTC);
        assert_eq!(Expiry::judge(now, now), Expiry::Expired { days: 0 });
        assert_eq!(
            Expiry::judge(now - Duration::days(3), now),
            Expiry::Expired { days: -3 }
        );
        assert_eq!(
            Expiry::judge(now + Duration::hours(1), now),
            Expiry::Soon { days: 0 }
        );
        assert_eq!(
            Expiry::judge(now + Duration::days(29), now),
            Expiry::Soon { days: 29 }
        );
        // Exactly 30 days ahead is no longer "within 30 days".
        assert_eq!(
            Expiry::judge(now + Duration::days(30), now),
            Expiry::Later { days: 30 }
        );
    }
}
