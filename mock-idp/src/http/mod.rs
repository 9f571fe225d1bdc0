//! HTTP endpoints of the mock IdP: discovery, JWKS, authorize, token, logout, Microsoft Graph's
//! group listing, and the `/_mock/…` control API, plus the transport faults that [`Fault`]
//! switches in.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::entra::{JSON_UTF8, token_error};
use super::{Fault, Shared};

mod authorize;
mod control;
mod discovery;
mod graph;
mod token;

use authorize::*;
use control::*;
use discovery::*;
use graph::*;
use token::*;

type S = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(metadata),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize).post(authorize),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/oauth2/v2.0/logout", get(logout).post(logout))
        .route("/oidc/userinfo", get(userinfo).post(userinfo))
        .route(
            "/v1.0/me/transitiveMemberOf/microsoft.graph.group",
            get(me_groups),
        )
        .route(
            "/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group",
            get(user_groups),
        )
        .route("/_mock/behaviour", get(get_behaviour).put(put_behaviour))
        .route("/_mock/counters", get(get_counters))
        .route("/_mock/rotate", post(rotate))
        .route("/_mock/publish", post(publish))
        .route("/_mock/revoke-refresh-tokens", post(revoke_refresh_tokens))
        .route(
            "/_mock/redirect_uris",
            get(get_redirect_uris).put(put_redirect_uris),
        )
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------
// Request parameters

/// Form/query parameters in arrival order; the first occurrence of a name wins.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            v.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        v.extend(url::form_urlencoded::parse(body).into_owned());
        Params(v)
    }

    /// The value, with an empty value treated as absent (Entra does the same for e.g. an
    /// empty `state` or `nonce`).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

// ---------------------------------------------------------------------------------------
// Faults

/// Applies the faults that replace the response. `None` means: answer normally (then pass
/// the answer through [`post_fault`]).
pub(super) async fn pre_fault(shared: &Shared, fault: &Fault) -> Option<Response> {
    match fault {
        Fault::None | Fault::WrongContentType => None,
        Fault::Delay(ms) => {
            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
            None
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some((status, format!("mock IdP fault: status {code}\n")).into_response())
        }
        Fault::Stall => {
            // Hold the request until shutdown; other requests run on their own tasks.
            let mut rx = shared.shutdown.clone();
            let _ = rx.wait_for(|stopped| *stopped).await;
            Some(StatusCode::SERVICE_UNAVAILABLE.into_response())
        }
        Fault::InvalidJson => Some(with_content_type(
            (StatusCode::OK, "{\"issuer\": <html>not json").into_response(),
            JSON_UTF8,
        )),
        Fault::Oversized(n) => Some(with_content_type(
            (StatusCode::OK, oversized_body(*n)).into_response(),
            JSON_UTF8,
        )),
        Fault::Redirect(to) => {
            let mut resp = StatusCode::FOUND.into_response();
            match HeaderValue::from_str(to) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                    Some(resp)
                }
                Err(_) => Some(
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "mock IdP: bad redirect fault URL\n",
                    )
                        .into_response(),
                ),
            }
        }
    }
}

/// Applies the faults that alter a normal response.
pub(super) fn post_fault(fault: &Fault, resp: Response) -> Response {
    match fault {
        Fault::WrongContentType => with_content_type(resp, "text/html; charset=utf-8"),
        _ => resp,
    }
}

/// A JSON-looking body of exactly `n` bytes (when `n` leaves room for the wrapper).
pub(super) fn oversized_body(n: usize) -> String {
    const HEAD: &str = "{\"padding\":\"";
    const TAIL: &str = "\"}";
    if n < HEAD.len() + TAIL.len() {
        return "x".repeat(n);
    }
    let mut s = String::with_capacity(n);
    s.push_str(HEAD);
    s.push_str(&"x".repeat(n - HEAD.len() - TAIL.len()));
    s.push_str(TAIL);
    s
}

pub(super) fn with_content_type(mut resp: Response, ct: &'static str) -> Response {
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

/// Headers Entra sends on discovery and keys documents.
pub(super) fn discovery_response(body: &Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400, private"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

pub(super) fn unknown_tenant_json(tenant: &str) -> Response {
    token_error(
        "invalid_tenant",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
}
