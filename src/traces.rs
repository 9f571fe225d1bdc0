//! The last failed logins per connection, kept in memory so an operator can answer "SSO is
//! broken for this customer" with `entrance traces --connection ID` or `GET /admin/traces`.
//!
//! Each entry holds only what locates the failure: when, which step, our reason code, the
//! AADSTS code and Entra's trace/correlation ids, and our correlation id (the key into the
//! log). Never a code, a token, a secret or a cookie; the IdP's own words are kept only
//! sanitized and shortened.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
};

use serde::{Deserialize, Serialize};

use crate::sync;

/// Where failures go whose connection is not known (an unknown or expired state).
pub(crate) const UNKNOWN: &str = "unknown";

/// How much of an IdP's `error_description` is kept: enough for Entra's sentence, too little
/// to make the ring a place to park data.
pub(crate) const DESCRIPTION_CHARS: usize = 300;
/// An IdP's `error` value is a short token in every IdP we know; anything longer is cut.
const REASON_CHARS: usize = 64;
/// Entra's ids are GUIDs (36 characters).
const ID_CHARS: usize = 64;

/// One failed login.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Failure {
    /// UTC, RFC 3339 to the second.
    pub time: String,
    /// The stage that failed: state, idp_error, callback, token, id_token, session,
    /// connection, request or internal.
    pub step: String,
    /// Our stable error code (`AppError::code`).
    pub error: String,
    /// The finer reason: the ID-token rule, the OAuth `error`, or the error code again.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aadsts: Option<u32>,
    /// Entra's `Trace ID`: what Microsoft support asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entra_trace_id: Option<String>,
    /// Entra's `Correlation ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entra_correlation_id: Option<String>,
    /// The IdP's description, without Entra's id trailer, sanitized and shortened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Our correlation id: shown on the error page and in every log line of the request.
    pub correlation_id: String,
}

/// The body of `GET /admin/traces?connection=ID`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TracesReport {
    pub connection: String,
    /// How many failures are kept per connection.
    pub capacity: usize,
    /// Newest first.
    pub failures: Vec<Failure>,
}

/// A bounded ring of failures per connection, plus one for [`UNKNOWN`]. Rings are made for the
/// connections configured at startup and, on its first failure, for one a reload added; the
/// caller names only live connections (`http::traces::record`), so neither the number of
/// rings nor their length can grow with traffic.
#[derive(Debug)]
pub(crate) struct Traces {
    capacity: usize,
    rings: RwLock<HashMap<String, Arc<Mutex<VecDeque<Failure>>>>>,
}

impl Traces {
    pub(crate) fn new<'a>(
        capacity: usize,
        connections: impl IntoIterator<Item = &'a str>,
    ) -> Traces {
        let mut rings: HashMap<String, Arc<Mutex<VecDeque<Failure>>>> = connections
            .into_iter()
            .map(|id| (id.to_owned(), Arc::default()))
            .collect();
        rings.insert(UNKNOWN.to_owned(), Arc::default());
        Traces {
            capacity,
            rings: RwLock::new(rings),
        }
    }

    /// Records a failed login callback under its connection (made on first use: a connection
    /// a reload added), or under [`UNKNOWN`] when it names none. The caller passes only the
    /// ids of configured connections.
    pub(crate) fn record(&self, failed: FailedLogin<'_>, correlation_id: &str) {
        if self.capacity == 0 {
            return;
        }
        let connection = failed.connection.unwrap_or(UNKNOWN);
        let failure = Failure::new(failed, correlation_id, time::OffsetDateTime::now_utc());
        let ring = self.ring(connection);
        let mut ring = sync::lock(&ring);
        while ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(failure);
    }

    fn ring(&self, connection: &str) -> Arc<Mutex<VecDeque<Failure>>> {
        if let Some(ring) = sync::read(&self.rings).get(connection) {
            return ring.clone();
        }
        sync::write(&self.rings)
            .entry(connection.to_owned())
            .or_default()
            .clone()
    }

    /// The failures of `connection`, newest first. `None` for a connection without a ring,
    /// unless `configured` says it is one (a connection a reload added that has not failed
    /// yet): then an empty report.
    pub(crate) fn report(&self, connection: &str, configured: bool) -> Option<TracesReport> {
        let ring = sync::read(&self.rings).get(connection).cloned();
        let failures = match ring {
            Some(ring) => sync::lock(&ring).iter().rev().cloned().collect(),
            None if configured => Vec::new(),
            None => return None,
        };
        Some(TracesReport {
            connection: connection.to_owned(),
            capacity: self.capacity,
            failures,
        })
    }
}

/// A failed login as the ring takes it; the HTTP layer classifies its error into one.
#[derive(Debug)]
pub(crate) struct FailedLogin<'a> {
    /// The connection's id, when known; the ring for [`UNKNOWN`] otherwise.
    pub connection: Option<&'a str>,
    /// The stage that failed (see [`Failure::step`]).
    pub step: &'static str,
    /// Our stable error code.
    pub error: &'static str,
    /// The IdP's `error` or our own reason, unsanitized.
    pub reason: String,
    pub aadsts: Option<u32>,
    /// The IdP's own words (`error_description`), unsanitized.
    pub description: Option<&'a str>,
    /// Entra's trace and correlation ids as JSON members of a token endpoint answer; they win
    /// over ids parsed from the description's text.
    pub entra_ids: Option<(Option<&'a str>, Option<&'a str>)>,
}

impl Failure {
    pub(crate) fn new(
        failed: FailedLogin<'_>,
        correlation_id: &str,
        now: time::OffsetDateTime,
    ) -> Failure {
        let description = failed.description;
        let trailer = failed.entra_ids;
        let parsed = description.map(EntraIds::parse).unwrap_or_default();
        // The token endpoint's JSON members win over ids parsed from its text.
        let (trace, correlation) = match trailer {
            Some((t, c)) => (t.or(parsed.trace_id), c.or(parsed.correlation_id)),
            None => (parsed.trace_id, parsed.correlation_id),
        };
        Failure {
            time: rfc3339(now),
            step: failed.step.to_owned(),
            error: failed.error.to_owned(),
            reason: sanitize(&failed.reason, REASON_CHARS),
            aadsts: failed.aadsts,
            entra_trace_id: trace.map(sanitize_id).filter(|s| !s.is_empty()),
            entra_correlation_id: correlation.map(sanitize_id).filter(|s| !s.is_empty()),
            description: description
                .map(|d| sanitize(strip_trailer(d), DESCRIPTION_CHARS))
                .filter(|d| !d.is_empty()),
            correlation_id: sanitize_id(correlation_id),
        }
    }
}

/// Entra's ids from the trailer of its error text: `… Trace ID: <guid> Correlation ID: <guid>
/// Timestamp: <time>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EntraIds<'a> {
    pub trace_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
}

impl<'a> EntraIds<'a> {
    pub(crate) fn parse(description: &'a str) -> EntraIds<'a> {
        EntraIds {
            trace_id: value_after(description, "Trace ID:"),
            correlation_id: value_after(description, "Correlation ID:"),
        }
    }
}

/// The whitespace-delimited word after `label`, when it looks like an id.
fn value_after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let start = text.rfind(label)? + label.len();
    text[start..]
        .split_whitespace()
        .next()
        .filter(|v| !v.is_empty() && v.len() <= ID_CHARS && is_id(v))
}

fn is_id(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// An id as stored: only letters, digits and dashes, bounded.
fn sanitize_id(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(ID_CHARS)
        .collect()
}

/// The description without Entra's `Trace ID: … Timestamp: …` trailer (kept as fields).
fn strip_trailer(d: &str) -> &str {
    d.split(" Trace ID:").next().unwrap_or(d).trim()
}

/// Printable characters only (no control characters: the CLI prints these), at most `max`.
fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.trim().to_owned()
}

/// `2026-11-26T07:31:04Z`, without the `time` crate's formatting feature.
fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRA_TEXT: &str = "AADSTS50105: Your administrator has configured the application to block users unless they are specifically granted access. Trace ID: 0c6f8b1e-2b4f-4d35-9a5e-0a1b2c3d4e5f Correlation ID: 7d1c2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f Timestamp: 2026-11-26 07:31:04Z";

    #[test]
    fn entra_ids_are_parsed_from_the_description_trailer() {
        assert_eq!(
            EntraIds::parse(ENTRA_TEXT),
            EntraIds {
                trace_id: Some("0c6f8b1e-2b4f-4d35-9a5e-0a1b2c3d4e5f"),
                correlation_id: Some("7d1c2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"),
            }
        );
        assert_eq!(EntraIds::parse("no trailer"), EntraIds::default());
        assert_eq!(
            EntraIds::parse("Trace ID: <script>"),
            EntraIds::default(),
            "only id-shaped values are taken"
        );
    }
}
