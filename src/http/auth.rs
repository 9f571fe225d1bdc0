//! `GET /auth`: forward-auth for reverse proxies (nginx `auth_request`, Traefik ForwardAuth,
//! Caddy `forward_auth`) — 200 with identity headers, else 401 or a redirect to sign in.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{AppState, Params, urlencode};
use crate::{error::AppError, return_to, session::MaybeUser};

#[derive(Debug, Deserialize)]
pub struct AuthParams {
    /// `?redirect=true`: answer an anonymous request with a 302 to the login page (Traefik and
    /// Caddy pass it to the browser) instead of 401 (what nginx's `auth_request` needs).
    #[serde(default)]
    redirect: bool,
}

pub async fn auth(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Params(params): Params<AuthParams>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        if !params.redirect {
            state.metrics.auth_outcome("unauthorized");
            return Err(AppError::NotSignedIn);
        }
        state.metrics.auth_outcome("redirect");
        let target = original_url(&headers);
        let return_to = return_to::sanitize(
            target.as_deref(),
            &state.config.public_url,
            &state.config.allowed_return_hosts,
        );
        // With one connection /login picks it; with several the start page lets the user
        // choose, carrying return_to along.
        let path = if state.connections.load().len() == 1 {
            "/login"
        } else {
            "/"
        };
        let location = format!(
            "{}{path}?return_to={}",
            state.config.public_origin(),
            urlencode(&return_to)
        );
        let location = HeaderValue::from_str(&location)
            .map_err(|e| AppError::Internal(format!("login URL: {e}")))?;
        return Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response());
    };

    state.metrics.auth_outcome("authorized");
    let id = &user.identity;
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    // Room for these six and the security headers `render_errors` adds, so the map is
    // allocated once instead of grown three times.
    h.reserve(16);
    for (name, value) in [
        ("x-auth-request-user", Some(id.user.as_str())),
        ("x-auth-request-email", id.email.as_deref()),
        (
            "x-auth-request-email-verified",
            Some(if id.email_verified { "true" } else { "false" }),
        ),
        (
            "x-auth-request-preferred-username",
            id.preferred_username.as_deref(),
        ),
        ("x-auth-request-tenant", id.tid.as_deref()),
        ("x-auth-request-connection", Some(id.connection.as_str())),
    ] {
        if let Some(v) = value.and_then(header_value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    Ok(res)
}

/// A claim as a header value: control characters (which would split or corrupt the header)
/// are dropped; UTF-8 is passed as bytes, as oauth2-proxy does.
fn header_value(v: &str) -> Option<HeaderValue> {
    // Claims almost never hold control characters: copy once, without building a String.
    if !v.chars().any(char::is_control) {
        return HeaderValue::from_str(v).ok();
    }
    let clean: String = v.chars().filter(|c| !c.is_control()).collect();
    HeaderValue::from_bytes(clean.as_bytes()).ok()
}

/// The URL the user asked the proxy for: nginx passes it whole (`X-Original-URL`), Traefik
/// and Caddy in parts (`X-Forwarded-Proto`, `-Host`, `-Uri`).
fn original_url(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(url) = get("x-original-url") {
        return Some(url.to_owned());
    }
    let host = get("x-forwarded-host")?;
    let proto = get("x-forwarded-proto").unwrap_or("https");
    let uri = get("x-forwarded-uri").unwrap_or("/");
    Some(format!("{proto}://{host}{uri}"))
}
