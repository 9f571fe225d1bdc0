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

use crate::sync;
use crate::{error::AppError, token::TokenError};

/// Where failures go whose connection is not known (an unknown or expired state).
pub const UNKNOWN: &str = "unknown";

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
        let mut ring = sync::lock(ring);
        while ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(failure);
    }

    /// The failures of `connection`, newest first; `None` for a connection that has no ring.
    pub fn report(&self, connection: &str) -> Option<TracesReport> {
        let ring = self.rings.get(connection)?;
        let ring = sync::lock(ring);
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
            entra_trace_id: trace.map(sanitize_id).filter(|s| !s.is_empty()),
            entra_correlation_id: correlation.map(sanitize_id).filter(|s| !s.is_empty()),
            description: description
                .map(|d| sanitize(strip_trailer(d), DESCRIPTION_CHARS))
                .filter(|d| !d.is_empty()),
            correlation_id: sanitize_id(correlation_id),
        }
    }
}

/// Where `entrance traces` connects for a listen address: an unspecified address (`0.0.0.0`,
/// `::`) is reached on loopback.
pub fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// What `entrance traces` prints for the server's answer: the JSON as is, or a table, newest
/// first; `Err` with the message when the server refused. `key` is the config key the address
/// came from, for the advice.
pub fn render(status: u16, body: &str, json: bool, key: &str) -> Result<String, String> {
    if status == 200 && json {
        return Ok(format!("{}\n", body.trim_end()));
    }
    if status == 404 {
        #[derive(Deserialize)]
        struct Unknown {
            connection: String,
            connections: Vec<String>,
        }
        return Err(match serde_json::from_str::<Unknown>(body) {
            Ok(u) => format!(
                "the running entrance has no connection {:?}; it has: {}",
                u.connection,
                u.connections.join(", ")
            ),
            Err(_) if key == "listen" => "this address does not serve /admin/traces: without \
                 admin_listen it is answered only to loopback clients, and `listen` is not a \
                 loopback or unspecified address; set admin_listen (e.g. \"127.0.0.1:9100\")"
                .to_owned(),
            Err(_) => "this address does not serve /admin/traces (is it entrance?)".to_owned(),
        });
    }
    if status != 200 {
        return Err(format!("the server answered HTTP {status}"));
    }
    let report: TracesReport = serde_json::from_str(body)
        .map_err(|e| format!("the server's answer is not a traces report: {e}"))?;
    if report.failures.is_empty() {
        return Ok(format!(
            "no failed logins for {} since entrance started (it keeps the last {})\n",
            report.connection, report.capacity
        ));
    }
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let mut rows = vec![[
        "TIME".to_owned(),
        "STEP".to_owned(),
        "REASON".to_owned(),
        "AADSTS".to_owned(),
        "ENTRA TRACE ID".to_owned(),
        "ENTRA CORRELATION ID".to_owned(),
        "REFERENCE".to_owned(),
    ]];
    for f in &report.failures {
        let reason = if f.reason == f.error {
            f.error.clone()
        } else {
            format!("{}: {}", f.error, f.reason)
        };
        rows.push([
            f.time.clone(),
            f.step.clone(),
            reason,
            f.aadsts
                .map_or_else(|| "-".to_owned(), |c| format!("AADSTS{c}")),
            dash(f.entra_trace_id.as_deref()),
            dash(f.entra_correlation_id.as_deref()),
            f.correlation_id.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// Which stage of the login failed, from the error alone.
pub fn step(err: &AppError) -> &'static str {
    match err {
        AppError::State { .. } | AppError::MissingParameter("state") => "state",
        AppError::IdpError { .. } => "idp_error",
        AppError::IssuerParameterMismatch { .. } => "callback",
        AppError::Token { .. } => "token",
        AppError::IdToken { .. } => "id_token",
        AppError::Userinfo { .. } => "userinfo",
        AppError::Session(_) => "session",
        AppError::ConnectionNotReady { .. }
        | AppError::UnknownConnection(_)
        | AppError::UnknownDomain(_) => "connection",
        AppError::NotPermitted { .. } => "authorization",
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
    fn the_cli_table_has_one_line_per_failure_newest_first() {
        let traces = Traces::new(5, ["contoso"]);
        traces.record(&idp_error(ENTRA_TEXT), "first");
        traces.record(
            &AppError::IdToken {
                connection: "contoso".into(),
                rejection: crate::verifier::Rejection::BadSignature,
            },
            "second",
        );
        let body = serde_json::to_string(&traces.report("contoso").expect("ring")).expect("json");
        let text = render(200, &body, false, "listen").expect("rendered");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("TIME"), "{text}");
        assert!(
            lines[1].contains("id_token") && lines[1].contains("second"),
            "{text}"
        );
        assert!(
            lines[2].contains("AADSTS50105")
                && lines[2].contains("0c6f8b1e-2b4f-4d35-9a5e-0a1b2c3d4e5f")
                && lines[2].contains("first"),
            "{text}"
        );

        let unknown = r#"{"error":"unknown_connection","connection":"x","connections":["contoso","unknown"]}"#;
        let err = render(404, unknown, false, "listen").expect_err("refused");
        assert!(err.contains("contoso, unknown"), "{err}");
        assert!(
            render(404, "", false, "listen")
                .expect_err("refused")
                .contains("admin_listen")
        );
        let empty =
            serde_json::to_string(&Traces::new(5, ["c"]).report("c").expect("ring")).expect("json");
        assert!(
            render(200, &empty, false, "listen")
                .expect("ok")
                .contains("no failed logins")
        );
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        let a: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(loopback(a).to_string(), "127.0.0.1:8080");
        let b: std::net::SocketAddr = "[::]:8080".parse().expect("addr");
        assert_eq!(loopback(b).to_string(), "[::1]:8080");
        let c: std::net::SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        assert_eq!(loopback(c), c);
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let traces = Traces::new(0, ["contoso"]);
        traces.record(&idp_error(ENTRA_TEXT), "c");
        assert!(traces.report("contoso").expect("ring").failures.is_empty());
    }
}
