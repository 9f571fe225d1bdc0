//! The last failed logins per connection, kept in memory so an operator can answer "SSO is
//! broken for this customer" with `entrance traces --connection ID` or `GET /admin/traces`.
//!
//! Each entry holds only what locates the failure: when, which step, our reason code, the
//! AADSTS code and Entra's trace/correlation ids, and our correlation id (the key into the
//! log). Never a code, a token, a secret or a cookie; the IdP's own words are kept only
//! sanitized and shortened.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use crate::{error::AppError, token::TokenError};

/// Where failures go whose connection is not known (an unknown or expired state).
pub const UNKNOWN: &str = "unknown";

/// The default number of failures kept per connection.
pub const DEFAULT_PER_CONNECTION: usize = 50;

/// How much of an IdP's `error_description` is kept: enough for Entra's sentence, too little
/// to make the ring a place to park data.
const DESCRIPTION_CHARS: usize = 300;
/// An IdP's `error` value is a short token in every IdP we know; anything longer is cut.
const REASON_CHARS: usize = 64;
/// Entra's ids are GUIDs (36 characters).
const ID_CHARS: usize = 64;

/// One failed login.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
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
pub struct TracesReport {
    pub connection: String,
    /// How many failures are kept per connection.
    pub capacity: usize,
    /// Newest first.
    pub failures: Vec<Failure>,
}

/// A bounded ring of failures per configured connection, plus one for [`UNKNOWN`]. The set of
/// rings is fixed at startup, so neither their number nor their length can grow with traffic.
#[derive(Debug)]
pub struct Traces {
    capacity: usize,
    rings: HashMap<String, Mutex<VecDeque<Failure>>>,
}

impl Traces {
    pub fn new<'a>(capacity: usize, connections: impl IntoIterator<Item = &'a str>) -> Traces {
        let mut rings: HashMap<String, Mutex<VecDeque<Failure>>> = connections
            .into_iter()
            .map(|id| (id.to_owned(), Mutex::new(VecDeque::new())))
            .collect();
        rings.insert(UNKNOWN.to_owned(), Mutex::new(VecDeque::new()));
        Traces { capacity, rings }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records a failed login callback under its connection (or [`UNKNOWN`]).
    pub fn record(&self, err: &AppError, correlation_id: &str) {
        if self.capacity == 0 {
            return;
        }
        let failure = Failure::from_error(err, correlation_id, time::OffsetDateTime::now_utc());
        let ring = err
            .connection()
            .and_then(|c| self.rings.get(c))
            .or_else(|| self.rings.get(UNKNOWN));
        let Some(ring) = ring else { return };
        // A poisoned lock only means another request panicked mid-push; the ring is still a
        // valid VecDeque.
        let mut ring = ring.lock().unwrap_or_else(|p| p.into_inner());
        while ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(failure);
    }

    /// The failures of `connection`, newest first; `None` for a connection that has no ring.
    pub fn report(&self, connection: &str) -> Option<TracesReport> {
        let ring = self.rings.get(connection)?;
        let ring = ring.lock().unwrap_or_else(|p| p.into_inner());
        Some(TracesReport {
            connection: connection.to_owned(),
            capacity: self.capacity,
            failures: ring.iter().rev().cloned().collect(),
        })
    }
}

impl Failure {
    pub fn from_error(err: &AppError, correlation_id: &str, now: time::OffsetDateTime) -> Failure {
        let (description, trailer) = match err {
            AppError::IdpError { description, .. } => (Some(description.as_str()), None),
            AppError::Token { source, .. } => match &**source {
                TokenError::Refused { error, .. } => (
                    error.error_description.as_deref(),
                    Some((error.trace_id.as_deref(), error.correlation_id.as_deref())),
                ),
                _ => (None, None),
            },
            _ => (None, None),
        };
        let parsed = description.map(EntraIds::parse).unwrap_or_default();
        // The token endpoint's JSON members win over ids parsed from its text.
        let (trace, correlation) = match trailer {
            Some((t, c)) => (t.or(parsed.trace_id), c.or(parsed.correlation_id)),
            None => (parsed.trace_id, parsed.correlation_id),
        };
        Failure {
            time: rfc3339(now),
            step: step(err).to_owned(),
            error: err.code().to_owned(),
            reason: sanitize(
                &err.detail().unwrap_or_else(|| err.code().to_owned()),
                REASON_CHARS,
            ),
            aadsts: err.aadsts(),
            entra_trace_id: trace.map(|s| sanitize_id(s)).filter(|s| !s.is_empty()),
            entra_correlation_id: correlation.map(sanitize_id).filter(|s| !s.is_empty()),
            description: description
                .map(|d| sanitize(strip_trailer(d), DESCRIPTION_CHARS))
                .filter(|d| !d.is_empty()),
            correlation_id: sanitize_id(correlation_id),
        }
    }
}

/// Which stage of the login failed, from the error alone.
pub fn step(err: &AppError) -> &'static str {
    match err {
        AppError::State { .. } | AppError::MissingParameter("state") => "state",
        AppError::IdpError { .. } => "idp_error",
        AppError::IssuerParameterMismatch { .. } => "callback",
        AppError::Token { .. } => "token",
        AppError::IdToken { .. } => "id_token",
        AppError::Session(_) => "session",
        AppError::ConnectionNotReady { .. } | AppError::UnknownConnection(_) => "connection",
        AppError::MissingParameter(_)
        | AppError::BadRequest(_)
        | AppError::UnsupportedMediaType
        | AppError::PayloadTooLarge
        | AppError::ConnectionRequired
        | AppError::CrossSiteRequest
        | AppError::RateLimited { .. }
        | AppError::NotSignedIn => "request",
        AppError::Internal(_) => "internal",
    }
}

/// Entra's ids from the trailer of its error text: `… Trace ID: <guid> Correlation ID: <guid>
/// Timestamp: <time>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EntraIds<'a> {
    pub trace_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
}

impl<'a> EntraIds<'a> {
    pub fn parse(description: &'a str) -> EntraIds<'a> {
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
    use crate::token::OAuthError;

    const ENTRA_TEXT: &str = "AADSTS50105: Your administrator has configured the application to block users unless they are specifically granted access. Trace ID: 0c6f8b1e-2b4f-4d35-9a5e-0a1b2c3d4e5f Correlation ID: 7d1c2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f Timestamp: 2026-11-26 07:31:04Z";

    fn idp_error(description: &str) -> AppError {
        AppError::IdpError {
            connection: "contoso".into(),
            name: "Contoso".into(),
            error: "access_denied".into(),
            description: description.into(),
        }
    }

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

    #[test]
    fn an_idp_error_becomes_a_failure_with_step_aadsts_and_ids() {
        let f = Failure::from_error(
            &idp_error(ENTRA_TEXT),
            "abc123",
            time::macros::datetime!(2026-11-26 07:31:04 UTC),
        );
        assert_eq!(f.time, "2026-11-26T07:31:04Z");
        assert_eq!(f.step, "idp_error");
        assert_eq!(f.error, "idp_error");
        assert_eq!(f.reason, "access_denied");
        assert_eq!(f.aadsts, Some(50105));
        assert_eq!(
            f.entra_trace_id.as_deref(),
            Some("0c6f8b1e-2b4f-4d35-9a5e-0a1b2c3d4e5f")
        );
        assert_eq!(
            f.entra_correlation_id.as_deref(),
            Some("7d1c2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f")
        );
        let d = f.description.expect("description");
        assert!(d.starts_with("AADSTS50105: Your administrator"), "{d}");
        assert!(!d.contains("Trace ID"), "{d}");
        assert_eq!(f.correlation_id, "abc123");
    }

    #[test]
    fn a_token_refusal_takes_entras_json_ids() {
        let err = AppError::Token {
            connection: "contoso".into(),
            name: "Contoso".into(),
            source: Box::new(TokenError::Refused {
                status: 401,
                error: OAuthError {
                    error: "invalid_client".into(),
                    error_description: Some(
                        "AADSTS7000215: Invalid client secret provided.".into(),
                    ),
                    error_codes: vec![7000215],
                    trace_id: Some("11111111-2222-3333-4444-555555555555".into()),
                    correlation_id: Some("66666666-7777-8888-9999-000000000000".into()),
                },
            }),
        };
        let f = Failure::from_error(&err, "cid", time::OffsetDateTime::now_utc());
        assert_eq!(
            (f.step.as_str(), f.error.as_str(), f.reason.as_str()),
            ("token", "token_refused", "invalid_client")
        );
        assert_eq!(f.aadsts, Some(7000215));
        assert_eq!(
            f.entra_trace_id.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(
            f.entra_correlation_id.as_deref(),
            Some("66666666-7777-8888-9999-000000000000")
        );
    }

    #[test]
    fn hostile_descriptions_are_cut_and_cleaned() {
        let long = format!("line1\nline2\u{1b}[31m{}", "x".repeat(10_000));
        let f = Failure::from_error(&idp_error(&long), "cid", time::OffsetDateTime::now_utc());
        let d = f.description.expect("description");
        assert!(d.chars().count() <= DESCRIPTION_CHARS + 1, "{}", d.len());
        assert!(!d.chars().any(char::is_control), "{d:?}");
    }

    #[test]
    fn rings_are_bounded_newest_first_and_unknown_connections_share_one() {
        let traces = Traces::new(3, ["contoso"]);
        for i in 0..5 {
            traces.record(&idp_error(ENTRA_TEXT), &format!("c{i}"));
        }
        let report = traces.report("contoso").expect("contoso");
        let ids: Vec<_> = report
            .failures
            .iter()
            .map(|f| f.correlation_id.as_str())
            .collect();
        assert_eq!(ids, ["c4", "c3", "c2"]);

        let stray = AppError::IdToken {
            connection: "not-configured".into(),
            rejection: crate::verifier::Rejection::BadSignature,
        };
        traces.record(&stray, "s1");
        traces.record(&AppError::MissingParameter("state"), "s2");
        let unknown = traces.report(UNKNOWN).expect("unknown");
        assert_eq!(unknown.failures.len(), 2);
        assert_eq!(unknown.failures[0].step, "state");
        assert!(
            traces.report("not-configured").is_none(),
            "no ring is made on demand"
        );
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let traces = Traces::new(0, ["contoso"]);
        traces.record(&idp_error(ENTRA_TEXT), "c");
        assert!(traces.report("contoso").expect("ring").failures.is_empty());
    }
}
