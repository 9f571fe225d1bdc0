//! Bearer access tokens on `/auth` and `/me` (RFC 6750), for connections with an `api` table:
//! a request with `Authorization: Bearer …` is answered from the token alone — validated by
//! `oidc::bearer` — before any session is read, so none is created or refreshed, a cookie
//! sent alongside does not count, and a failure is a 401/403 with `WWW-Authenticate`, never
//! the browser's redirect to sign in. CORS preflights (no token) are let through for the
//! origins a connection lists.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    Json,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::future::{BoxFuture, Either};
use serde::Serialize;
use tower::{Layer, Service};

use super::{AppState, auth::list_header, error::AppError};
use crate::oidc::{
    bearer::{self, BearerCaller, BearerError},
    provider::Connection,
    verifier::access::TokenVersion,
};

/// What the `Authorization` header(s) carry.
enum Credentials<'r> {
    None,
    /// Another scheme (Basic…): not ours; the session decides as before.
    Other,
    /// RFC 6750 §2.1: `Bearer` (any case), one space, the token.
    Bearer(&'r str),
    /// More than one `Authorization` header: which one the proxy and the app would read is
    /// anyone's guess, so none is (RFC 6750 §3.1 `invalid_request`).
    Several,
}

fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(first), None) = (all.next(), all.next()) else {
        return if headers.contains_key(header::AUTHORIZATION) {
            Credentials::Several
        } else {
            Credentials::None
        };
    };
    let value = first.as_bytes();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            // A token is visible ASCII (RFC 6750 §2.1 b64token); anything else is no token.
            Credentials::Bearer(first.to_str().map_or("", |v| v[7..].trim()))
        }
        _ if value.eq_ignore_ascii_case(b"bearer") => Credentials::Bearer(""),
        _ => Credentials::Other,
    }
}

/// The route layer of `/auth` and `/me`: [`Intercept`] around their handlers.
#[derive(Clone)]
pub(super) struct InterceptLayer(pub(super) AppState);

impl<S> Layer<S> for InterceptLayer {
    type Service = Intercept<S>;

    fn layer(&self, inner: S) -> Intercept<S> {
        Intercept {
            inner,
            state: self.0.clone(),
        }
    }
}

/// Answers a bearer request (or a CORS preflight) itself, and passes every other request to
/// the handler. Without an `api` table on any connection, or without an `Authorization`
/// header on a request that is no preflight, the handler's own future is returned as is:
/// the browser's `/auth` pays for no extra future.
#[derive(Clone)]
pub(super) struct Intercept<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Intercept<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Neither a token nor a preflight (which carries Access-Control-Request-Method):
        // the session decides, as it would without any `api` table.
        let headers = req.headers();
        let neither = !headers.contains_key(header::AUTHORIZATION)
            && !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if neither || !bearer::enabled(&self.state.connections.load()) {
            return Either::Left(self.inner.call(req));
        }
        let connections = self.state.connections.load_full();
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let state = self.state.clone();
        Either::Right(Box::pin(async move {
            Ok(intercept(state, connections, req, inner).await)
        }))
    }
}

async fn intercept<S>(
    state: AppState,
    connections: Arc<Vec<Arc<Connection>>>,
    req: Request,
    mut inner: S,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let me = req.uri().path() == "/me";
    let mut next = async |req| match inner.call(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    match credentials(req.headers()) {
        Credentials::Other => next(req).await,
        Credentials::None => {
            if !me && is_allowed_preflight(req.method(), req.headers(), &connections) {
                state.metrics.auth_outcome("preflight");
                return StatusCode::OK.into_response();
            }
            next(req).await
        }
        Credentials::Several => {
            state.metrics.auth_outcome("bearer_invalid");
            AppError::BearerRequest("several Authorization headers").into_response()
        }
        Credentials::Bearer("") => {
            state.metrics.auth_outcome("bearer_invalid");
            AppError::BearerRequest("the Bearer scheme without a token").into_response()
        }
        Credentials::Bearer(token) => {
            let result = bearer::authenticate(
                &connections,
                &state.http,
                token,
                state.clock.now_unix(),
                state.config.clock_skew,
            )
            .await;
            match result {
                Ok(caller) => {
                    state.metrics.auth_outcome("bearer_authorized");
                    if me {
                        me_json(&caller)
                    } else {
                        auth_headers(&state, &caller)
                    }
                }
                Err(e) => {
                    let e = AppError::from(e);
                    state.metrics.auth_outcome(match e {
                        AppError::BearerInsufficient { .. }
                        | AppError::BearerNotPermitted { .. } => "bearer_forbidden",
                        AppError::ConnectionNotReady { .. } => "bearer_unavailable",
                        _ => "bearer_invalid",
                    });
                    e.into_response()
                }
            }
        }
    }
}

impl From<BearerError> for AppError {
    fn from(e: BearerError) -> AppError {
        match e {
            BearerError::Rejected {
                connection,
                rejection,
            } => AppError::BearerRejected {
                connection,
                rejection,
            },
            BearerError::Insufficient { connection, reason } => {
                AppError::BearerInsufficient { connection, reason }
            }
            BearerError::Denied {
                connection,
                user,
                denial,
            } => AppError::BearerNotPermitted {
                connection,
                user,
                denial,
            },
            BearerError::NotReady { connection, reason } => {
                AppError::not_ready(&connection, reason)
            }
        }
    }
}

/// A CORS preflight (Fetch standard: `OPTIONS` with `Access-Control-Request-Method`, and no
/// credentials) from an origin some connection's `api.cors_origins` lists. The original
/// method is the request's own (nginx's `auth_request` keeps it) or `X-Forwarded-Method`
/// (Traefik and Caddy set it; the nginx recipe sets it too, overwriting a client's).
fn is_allowed_preflight(
    method: &Method,
    headers: &HeaderMap,
    connections: &[Arc<Connection>],
) -> bool {
    let forwarded = headers
        .get("x-forwarded-method")
        .map(|m| m.as_bytes().eq_ignore_ascii_case(b"OPTIONS"));
    let options = forwarded.unwrap_or(*method == Method::OPTIONS);
    if !options || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    connections.iter().any(|c| {
        c.config.api.as_ref().is_some_and(|api| {
            api.cors_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
        })
    })
}

const USER: HeaderName = HeaderName::from_static("x-auth-request-user");
const EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
const PREFERRED_USERNAME: HeaderName = HeaderName::from_static("x-auth-request-preferred-username");
const TENANT: HeaderName = HeaderName::from_static("x-auth-request-tenant");
const CONNECTION: HeaderName = HeaderName::from_static("x-auth-request-connection");
const CLIENT_ID: HeaderName = HeaderName::from_static("x-auth-request-client-id");
const GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
const GROUPS_TRUNCATED: HeaderName = HeaderName::from_static("x-auth-request-groups-truncated");
const GROUPS_OVERAGE: HeaderName = HeaderName::from_static("x-auth-request-groups-overage");
const ROLES: HeaderName = HeaderName::from_static("x-auth-request-roles");
const ROLES_TRUNCATED: HeaderName = HeaderName::from_static("x-auth-request-roles-truncated");
const SCOPES: HeaderName = HeaderName::from_static("x-auth-request-scopes");
const SCOPES_TRUNCATED: HeaderName = HeaderName::from_static("x-auth-request-scopes-truncated");

/// `/auth`'s 200 for a token: the identity headers a session gets (same names, same budget,
/// `forward_auth.max_header_bytes` per value), plus `-Scopes` and `-Client-Id`.
fn auth_headers(state: &AppState, caller: &BearerCaller) -> Response {
    let id = &caller.identity;
    let max = state.config.forward_auth.max_header_bytes;
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    for (name, value) in [
        (USER, Some(id.user.as_str())),
        (TENANT, id.tid.as_deref()),
        (CONNECTION, Some(id.connection.as_str())),
        (CLIENT_ID, Some(caller.client_id.as_str())),
        (PREFERRED_USERNAME, id.preferred_username.as_deref()),
        (EMAIL, id.email.as_deref()),
    ] {
        let Some(value) = value.filter(|v| v.len() <= max) else {
            continue;
        };
        // Control characters would split the header; the value is left out rather than cut.
        if let Ok(v) = HeaderValue::from_str(value)
            && !value.chars().any(char::is_control)
        {
            h.insert(name, v);
        }
    }
    for (name, flag, items) in [
        (GROUPS, GROUPS_TRUNCATED, &id.groups),
        (ROLES, ROLES_TRUNCATED, &id.roles),
        (SCOPES, SCOPES_TRUNCATED, &caller.scopes),
    ] {
        if items.is_empty() {
            continue;
        }
        let (joined, truncated) = list_header(items, max);
        if truncated {
            h.insert(flag, HeaderValue::from_static("true"));
        }
        if let Ok(v) = HeaderValue::from_bytes(joined.as_bytes())
            && !joined.is_empty()
        {
            h.insert(name, v);
        }
    }
    if id.groups_overage {
        h.insert(GROUPS_OVERAGE, HeaderValue::from_static("true"));
    }
    res
}

/// `/me` for a token.
#[derive(Serialize)]
struct MeBearer<'a> {
    user: &'a str,
    connection: &'a str,
    /// `bearer`: the answer comes from an access token, not a session.
    via: &'static str,
    app_only: bool,
    client_id: &'a str,
    token_version: &'static str,
    sub: &'a str,
    oid: Option<&'a str>,
    tid: Option<&'a str>,
    name: Option<&'a str>,
    preferred_username: Option<&'a str>,
    scopes: &'a [String],
    roles: &'a [String],
    groups: &'a [String],
    groups_overage: bool,
    expires_at: i64,
}

fn me_json(caller: &BearerCaller) -> Response {
    let id = &caller.identity;
    Json(MeBearer {
        user: &id.user,
        connection: &id.connection,
        via: "bearer",
        app_only: caller.app_only,
        client_id: &caller.client_id,
        token_version: match caller.version {
            TokenVersion::V1 => "1.0",
            TokenVersion::V2 => "2.0",
        },
        sub: &id.sub,
        oid: id.oid.as_deref(),
        tid: id.tid.as_deref(),
        name: id.name.as_deref(),
        preferred_username: id.preferred_username.as_deref(),
        scopes: &caller.scopes,
        roles: &id.roles,
        groups: &id.groups,
        groups_overage: id.groups_overage,
        expires_at: caller.expires_at,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_others_are_left_alone() {
        assert!(matches!(
            credentials(&headers(&["Bearer abc"])),
            Credentials::Bearer("abc")
        ));
        assert!(matches!(
            credentials(&headers(&["bearer abc"])),
            Credentials::Bearer("abc")
        ));
        assert!(matches!(
            credentials(&headers(&["Bearer"])),
            Credentials::Bearer("")
        ));
        assert!(matches!(
            credentials(&headers(&["Basic YTpi"])),
            Credentials::Other
        ));
        assert!(matches!(credentials(&headers(&[])), Credentials::None));
        assert!(matches!(
            credentials(&headers(&["Bearer a", "Bearer b"])),
            Credentials::Several
        ));
    }
}
