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

use super::{AppState, Params};
use crate::{error::AppError, traces::UNKNOWN};

pub const PATH: &str = "/admin/traces";

#[derive(Debug, Deserialize)]
pub struct TracesParams {
    connection: Option<String>,
}

/// On the admin listener: whoever reaches that address is the operator.
pub async fn admin(
    State(state): State<AppState>,
    Params(params): Params<TracesParams>,
) -> Result<Response, AppError> {
    report(&state, params)
}

/// On the public listener: answered only to a local operator, 404 to everyone else, as if
/// the route did not exist.
pub async fn local_only(
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
pub fn is_local_operator(peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
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
    match state.traces.report(&connection) {
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

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
}
