//! `GET /admin/traces?connection=ID`: the last failed logins of a connection as JSON, newest
//! first — on the admin listener, or, without one, on the public listener to loopback
//! clients only.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::error::AppError;
use super::{AppState, Params};
use crate::{
    oidc::token::TokenError,
    traces::{FailedLogin, UNKNOWN},
};

pub(crate) const PATH: &str = "/admin/traces";

#[derive(Debug, Deserialize)]
pub(crate) struct TracesParams {
    connection: Option<String>,
}

/// On the admin listener: whoever reaches that address is the operator.
pub(crate) async fn admin(
    State(state): State<AppState>,
    Params(params): Params<TracesParams>,
) -> Result<Response, AppError> {
    report(&state, params)
}

/// On the public listener: answered only to a local operator, 404 to everyone else, as if
/// the route did not exist.
pub(crate) async fn local_only(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Params(params): Params<TracesParams>,
) -> Result<Response, AppError> {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    if !is_local_operator(peer, &headers) {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    report(&state, params)
}

/// Headers a reverse proxy adds. A loopback peer that sends one is a proxy on this host
/// relaying someone else's request, not an operator's shell, so it is refused like any other
/// remote client.
const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
];

/// May this request read the traces on the public listener? Only from a loopback peer
/// (IPv4, IPv6, or IPv4-mapped) and only when no proxy relayed it.
pub(crate) fn is_local_operator(peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    let loopback = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
    loopback && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
}

fn report(state: &AppState, params: TracesParams) -> Result<Response, AppError> {
    let connections = state.connections.load();
    let connection = match params.connection {
        Some(c) => c,
        // One connection: nothing to choose.
        None if connections.len() == 1 => connections[0].config.id.clone(),
        None => return Err(AppError::MissingParameter("connection")),
    };
    let configured = connections.iter().any(|c| c.config.id == connection);
    match state.traces.report(&connection, configured) {
        Some(report) => Ok(Json(report).into_response()),
        None => {
            let mut known: Vec<&str> = connections.iter().map(|c| c.config.id.as_str()).collect();
            known.push(UNKNOWN);
            Ok((
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({
                    "error": "unknown_connection",
                    "connection": connection,
                    "connections": known,
                })),
            )
                .into_response())
        }
    }
}

/// Records a failed login callback: under its connection when that is configured now (one a
/// reload added too), else under [`UNKNOWN`] — so an error naming a connection that no longer
/// exists, or never did, cannot make a ring.
pub(crate) fn record(state: &AppState, err: &AppError, correlation_id: &str) {
    let mut failed = failed_login(err);
    if failed
        .connection
        .is_some_and(|id| state.connection(id).is_err())
    {
        failed.connection = None;
    }
    state.traces.record(failed, correlation_id);
}

/// A failed login as the traces ring keeps it: the step, our code and reason, and the IdP's
/// own words and ids where it gave any.
pub(crate) fn failed_login(err: &AppError) -> FailedLogin<'_> {
    let (description, entra_ids) = match err {
        AppError::IdpError { description, .. } => (Some(description.as_str()), None),
        _ => match err.token_error() {
            Some(TokenError::Refused { error, .. }) => (
                error.error_description.as_deref(),
                Some((error.trace_id.as_deref(), error.correlation_id.as_deref())),
            ),
            _ => (None, None),
        },
    };
    FailedLogin {
        connection: err.connection(),
        step: step(err),
        error: err.code(),
        reason: err.detail().unwrap_or_else(|| err.code().to_owned()),
        aadsts: err.aadsts(),
        description,
        entra_ids,
    }
}

/// Which stage of the login failed, from the error alone.
pub(crate) fn step(err: &AppError) -> &'static str {
    match err {
        AppError::State { .. } | AppError::MissingParameter("state") => "state",
        AppError::IdpError { .. } => "idp_error",
        AppError::IssuerParameterMismatch { .. } => "callback",
        AppError::Token { .. } => "token",
        AppError::UpstreamSignInAgain { .. }
        | AppError::UpstreamUnavailable { .. }
        | AppError::AccessTokenTooLarge { .. } => "upstream_token",
        AppError::IdToken { .. } => "id_token",
        AppError::Userinfo { .. } => "userinfo",
        AppError::Groups { .. } => "groups",
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
        | AppError::SetupLink(_)
        | AppError::SetupForm
        | AppError::SetupLinkConflict(_)
        | AppError::SetupLinkRequest(_)
        | AppError::RateLimited { .. }
        | AppError::NotSignedIn
        | AppError::BearerRejected { .. }
        | AppError::BearerInsufficient { .. }
        | AppError::BearerNotPermitted { .. }
        | AppError::BearerRequest(_) => "request",
        AppError::RequestTimeout(_) => "timeout",
        AppError::Internal(_) => "internal",
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::oidc::token::OAuthError;
    use crate::traces::{DESCRIPTION_CHARS, Failure, Traces};

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("socket address"))
    }

    #[test]
    fn only_loopback_peers_without_proxy_headers_are_local_operators() {
        let none = HeaderMap::new();
        assert!(is_local_operator(peer("127.0.0.1:5000"), &none));
        assert!(is_local_operator(peer("[::1]:5000"), &none));
        assert!(is_local_operator(peer("[::ffff:127.0.0.1]:5000"), &none));

        assert!(!is_local_operator(peer("10.0.0.7:5000"), &none));
        assert!(!is_local_operator(peer("203.0.113.9:5000"), &none));
        assert!(!is_local_operator(peer("[2001:db8::1]:5000"), &none));
        assert!(!is_local_operator(None, &none), "no peer address: refuse");

        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert!(
            !is_local_operator(peer("127.0.0.1:5000"), &proxied),
            "a proxy on this host relays remote clients"
        );
        let mut forwarded = HeaderMap::new();
        forwarded.insert("forwarded", HeaderValue::from_static("for=203.0.113.9"));
        assert!(!is_local_operator(peer("127.0.0.1:5000"), &forwarded));
    }

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
    fn an_idp_error_becomes_a_failure_with_step_aadsts_and_ids() {
        let f = Failure::new(
            failed_login(&idp_error(ENTRA_TEXT)),
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
        let f = Failure::new(failed_login(&err), "cid", time::OffsetDateTime::now_utc());
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
        let f = Failure::new(
            failed_login(&idp_error(&long)),
            "cid",
            time::OffsetDateTime::now_utc(),
        );
        let d = f.description.expect("description");
        assert!(d.chars().count() <= DESCRIPTION_CHARS + 1, "{}", d.len());
        assert!(!d.chars().any(char::is_control), "{d:?}");
    }

    #[test]
    fn rings_are_bounded_newest_first_and_unknown_connections_share_one() {
        let traces = Traces::new(3, ["contoso"]);
        for i in 0..5 {
            traces.record(failed_login(&idp_error(ENTRA_TEXT)), &format!("c{i}"));
        }
        let report = traces.report("contoso", true).expect("contoso");
        let ids: Vec<_> = report
            .failures
            .iter()
            .map(|f| f.correlation_id.as_str())
            .collect();
        assert_eq!(ids, ["c4", "c3", "c2"]);

        traces.record(failed_login(&AppError::MissingParameter("state")), "s2");
        let unknown = traces.report(UNKNOWN, false).expect("unknown");
        assert_eq!(unknown.failures.len(), 1);
        assert_eq!(unknown.failures[0].step, "state");
        assert!(traces.report("not-configured", false).is_none());
    }

    /// Issue 12.11: a connection a reload added gets its own ring, not `unknown`'s.
    #[test]
    fn a_connection_added_later_gets_a_ring_of_its_own() {
        let traces = Traces::new(3, ["contoso"]);
        assert!(
            traces
                .report("fabrikam", true)
                .expect("configured")
                .failures
                .is_empty()
        );
        let err = idp_error(ENTRA_TEXT);
        let mut failed = failed_login(&err);
        failed.connection = Some("fabrikam");
        traces.record(failed, "f1");
        let report = traces.report("fabrikam", false).expect("its ring");
        assert_eq!(report.failures.len(), 1);
        assert_eq!(report.failures[0].correlation_id, "f1");
        assert!(
            traces
                .report(UNKNOWN, false)
                .expect("unknown")
                .failures
                .is_empty()
        );
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let traces = Traces::new(0, ["contoso"]);
        traces.record(failed_login(&idp_error(ENTRA_TEXT)), "c");
        assert!(
            traces
                .report("contoso", true)
                .expect("ring")
                .failures
                .is_empty()
        );
    }
}
