//! `GET /auth`: forward-auth for reverse proxies (nginx `auth_request`, Traefik ForwardAuth,
//! Caddy `forward_auth`) — 200 with identity headers, else 401 or a redirect to sign in.
//!
//! What entrance adds is bounded: every identity header value is at most
//! `forward_auth.max_header_bytes`. A list (groups, roles) that does not fit keeps the whole
//! items that do and says so in `…-Truncated: true`; a single value that does not fit is left
//! out. Either way the answer is still 200 — an overflow is a warning and a metric, never a
//! failed request.

use std::{borrow::Cow, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use secrecy::{ExposeSecret, SecretString};
use tower_sessions::Session;

use super::{AppState, Params, urlencode};
use crate::{
    config::UpstreamSettings,
    http::error::AppError,
    http::extract::MaybeUser,
    metrics::Metrics,
    oidc::http_client::FetchError,
    oidc::identity::Identity,
    oidc::provider::Connection,
    oidc::token::{self, TokenError},
    return_to,
    session::{self, ActiveUser, upstream, upstream::UpstreamError},
};

#[derive(Debug, Deserialize)]
pub(super) struct AuthParams {
    /// `?redirect=true`: answer an anonymous request with a 302 to the login page (Traefik and
    /// Caddy pass it to the browser) instead of 401 (what nginx's `auth_request` needs).
    #[serde(default)]
    redirect: bool,
}

pub(super) async fn auth(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Params(params): Params<AuthParams>,
    // The request itself, not a `HeaderMap` (which is a copy of every header): the headers
    // are read only to build a redirect.
    request: Request,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        return anonymous(&state, &params, &request, AppError::NotSignedIn);
    };

    let id = &user.identity;
    // The configuration may have changed since this session signed in: a user the
    // connection no longer admits is refused here too, not only at the next sign-in. (A
    // connection that is gone, or no longer admits the tenant, already made `MaybeUser`
    // read the session as not signed in; gone since then, it answers the same.)
    let Some(conn) = state.session_connection(id) else {
        state.metrics.auth_outcome("unauthorized");
        return Err(AppError::NotSignedIn);
    };
    if let Err(denial) = conn.config.access.check(id) {
        state.metrics.auth_outcome("forbidden");
        return Err(AppError::NotPermitted {
            connection: id.connection.clone(),
            user: id.user.clone(),
            denial,
        });
    }
    // Before any header is built: an upstream token that cannot be had ends or fails the
    // request as a whole.
    let access_token = match &conn.config.upstream {
        None => None,
        Some(settings) => {
            match upstream_token(&state, &conn, &user, session(&request)?, settings).await {
                Ok(token) => Some(token),
                Err(e) => {
                    // Kept for the admin in /admin/traces beside the failed logins, with the
                    // IdP's answer (`edge::render` records only the callback's failures).
                    let cid = correlation_id(&request);
                    // A store outage is not the admin's sign-in problem: not kept.
                    if !matches!(e, AppError::Session(_)) {
                        super::traces::record(&state, &e, &cid);
                    }
                    if matches!(e, AppError::UpstreamSignInAgain { .. }) {
                        if params.redirect {
                            // The redirect carries no error for `edge::render` to log.
                            tracing::warn!(error = %e, code = e.code(), correlation_id = %cid, "session ended; sending the browser to sign in again");
                        }
                        return anonymous(&state, &params, &request, e);
                    }
                    state.metrics.auth_outcome("error");
                    return Err(e);
                }
            }
        }
    };

    state.metrics.auth_outcome("authorized");
    let mut res = identity_headers(&state, &user);
    if let Some(token) = access_token {
        res.headers_mut().insert(ACCESS_TOKEN, token);
    }
    Ok(res)
}

fn correlation_id(request: &Request) -> String {
    request
        .extensions()
        .get::<super::CorrelationId>()
        .map(|c| c.0.to_string())
        .unwrap_or_default()
}

/// The answer to a request without a (usable) session: 401 with `why`, or with `?redirect=true`
/// a 302 to sign in.
fn anonymous(
    state: &AppState,
    params: &AuthParams,
    request: &Request,
    why: AppError,
) -> Result<Response, AppError> {
    if !params.redirect {
        state.metrics.auth_outcome("unauthorized");
        return Err(why);
    }
    state.metrics.auth_outcome("redirect");
    let target = original_url(request.headers());
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
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

/// The access token for the upstream API (`[connections.upstream]`), refreshed when due
/// ([`crate::session::upstream`]), as a header value within `upstream.max_token_bytes`. A grant
/// the IdP refused for good ends the session here.
async fn upstream_token(
    state: &AppState,
    conn: &Connection,
    user: &ActiveUser,
    session: Session,
    settings: &UpstreamSettings,
) -> Result<HeaderValue, AppError> {
    let id = &user.identity;
    let Some(session_id) = session.id() else {
        return Err(AppError::NotSignedIn);
    };
    let up = upstream::Upstream {
        store: &state.store,
        session: session_id,
        clock: &state.clock,
        metrics: &state.metrics,
        connection: &conn.config.id,
        until: user.expires_at,
    };
    let scope = format!("{} offline_access", settings.scopes.join(" "));
    let refresh = |refresh_token: SecretString| async move {
        let provider = conn.provider().map_err(|reason| {
            TokenError::Transport(FetchError::Other(format!(
                "the IdP's metadata is not loaded ({reason})"
            )))
        })?;
        token::refresh_with_fallback(
            &state.http,
            &conn.config,
            &token::RefreshGrant {
                token_endpoint: &provider.metadata.token_endpoint,
                client_id: &conn.config.client_id,
                client_auth: provider.client_auth,
                refresh_token: &refresh_token,
                scope: &scope,
            },
        )
        .await
    };
    let ended =
        |reason: &'static str, source: Option<Box<TokenError>>| AppError::UpstreamSignInAgain {
            connection: conn.config.id.clone(),
            user: id.user.clone(),
            reason,
            source,
        };
    let token = match upstream::access_token(&up, refresh).await {
        Ok(token) => token,
        Err(e) => {
            let err = match e {
                UpstreamError::Session(e) => return Err(e.into()),
                UpstreamError::Unavailable(source) => {
                    return Err(AppError::UpstreamUnavailable {
                        connection: conn.config.id.clone(),
                        source,
                    });
                }
                UpstreamError::Missing => ended("no_upstream_token", None),
                UpstreamError::Expired => ended("no_refresh_token", None),
                UpstreamError::SignInAgain(source) => ended("refresh_refused", Some(source)),
            };
            if let Some(user) = session::sign_out(&session, &state.store).await? {
                tracing::info!(
                    target: "entrance::audit",
                    event = "sign_out",
                    user = %user.identity.user,
                    connection = %user.identity.connection,
                    reason = err.detail().unwrap_or_default(),
                    aadsts = err.aadsts(),
                    "session ended: no access token for the upstream API without a new sign-in"
                );
            }
            return Err(err);
        }
    };
    let token = token.expose_secret();
    if token.len() > settings.max_token_bytes {
        state
            .metrics
            .upstream_token_oversize
            .get_or_create(&Metrics::connection(&conn.config.id))
            .inc();
        return Err(AppError::AccessTokenTooLarge {
            connection: conn.config.id.clone(),
            bytes: token.len(),
            max: settings.max_token_bytes,
        });
    }
    let mut value = HeaderValue::from_str(token).map_err(|_| AppError::UpstreamUnavailable {
        connection: conn.config.id.clone(),
        source: Some(Box::new(TokenError::Malformed(
            "the access token is not a valid header value".into(),
        ))),
    })?;
    // HTTP/2 and HTTP/3 then keep it out of their header compression tables.
    value.set_sensitive(true);
    Ok(value)
}

/// The request's session (a handle; the data stays shared with the session layer).
fn session(request: &Request) -> Result<Session, AppError> {
    request
        .extensions()
        .get::<Session>()
        .cloned()
        .ok_or_else(|| AppError::Internal("the session layer is missing".into()))
}

/// The 200 answer with the identity headers, each within `forward_auth.max_header_bytes`.
/// They are a function of the user and the budget only, so they are built once per parsed
/// user (kept in [`ActiveUser::derived`] while `session::parsed` keeps the parse) and cloned
/// for each request: building them was an eighth of a `GET /auth`'s instructions
/// (callgrind; docs/BENCHMARKS.md). A header cut to the budget is counted on every request,
/// as before.
fn identity_headers(state: &AppState, user: &ActiveUser) -> Response {
    let headers = IdentityHeaders::of(user, state.config.forward_auth.max_header_bytes);
    for name in &headers.overflowed {
        overflow(&state.metrics, name.as_str(), &user.identity.user);
    }
    let mut res = StatusCode::OK.into_response();
    *res.headers_mut() = headers.map.clone();
    res
}

/// The identity headers `/auth` would send for `id` under the current budget, built afresh
/// (the setup page's test sign-in shows them; nothing is counted).
pub(super) fn identity_header_map(state: &AppState, id: &Identity) -> HeaderMap {
    IdentityHeaders::build(id, state.config.forward_auth.max_header_bytes).map
}

/// One user's identity headers under one budget.
#[derive(Clone, Debug)]
struct IdentityHeaders {
    max: usize,
    map: HeaderMap,
    /// The headers cut to the budget (or left out), to count and warn about per request.
    overflowed: Vec<HeaderName>,
}

impl IdentityHeaders {
    /// `user`'s headers under `max`: the ones kept with the parsed user, or, when the budget
    /// changed since they were kept (a reload), built for this request only.
    fn of(user: &ActiveUser, max: usize) -> Cow<'_, IdentityHeaders> {
        let kept = user
            .derived
            .get_or_init(|| Arc::new(IdentityHeaders::build(&user.identity, max)))
            .downcast_ref::<IdentityHeaders>()
            .filter(|kept| kept.max == max);
        match kept {
            Some(kept) => Cow::Borrowed(kept),
            None => Cow::Owned(IdentityHeaders::build(&user.identity, max)),
        }
    }

    fn build(id: &Identity, max: usize) -> IdentityHeaders {
        // Room for these and the security headers `edge::render` adds, so the map is
        // allocated once instead of grown three times.
        let mut h = HeaderMap::with_capacity(24);
        let mut overflowed = Vec::new();
        for (name, value) in [
            (USER, Some(id.user.as_str())),
            (EMAIL, id.email.as_deref()),
            (
                EMAIL_VERIFIED,
                Some(if id.email_verified { "true" } else { "false" }),
            ),
            (PREFERRED_USERNAME, id.preferred_username.as_deref()),
            (TENANT, id.tid.as_deref()),
            (CONNECTION, Some(id.connection.as_str())),
        ] {
            let Some(value) = value else { continue };
            if value.len() > max {
                overflowed.push(name);
                continue;
            }
            if let Some(v) = header_value(value) {
                h.insert(name, v);
            }
        }
        for (name, flag, items) in [
            (GROUPS, GROUPS_TRUNCATED, &id.groups),
            (ROLES, ROLES_TRUNCATED, &id.roles),
        ] {
            if items.is_empty() {
                continue;
            }
            let (joined, truncated) = list_header(items, max);
            if truncated {
                overflowed.push(name.clone());
                h.insert(flag, HeaderValue::from_static("true"));
            }
            // As bytes, like `header_value`: UTF-8 group names pass as oauth2-proxy passes them.
            if let Ok(v) = HeaderValue::from_bytes(joined.as_bytes())
                && !joined.is_empty()
            {
                h.insert(name, v);
            }
        }
        if id.groups_overage {
            h.insert(GROUPS_OVERAGE, HeaderValue::from_static("true"));
        }
        IdentityHeaders {
            max,
            map: h,
            overflowed,
        }
    }
}

// The identity headers, built at compile time (a `from_static` per request showed in the profile).
const USER: HeaderName = HeaderName::from_static("x-auth-request-user");
const EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
const EMAIL_VERIFIED: HeaderName = HeaderName::from_static("x-auth-request-email-verified");
const PREFERRED_USERNAME: HeaderName = HeaderName::from_static("x-auth-request-preferred-username");
const TENANT: HeaderName = HeaderName::from_static("x-auth-request-tenant");
const CONNECTION: HeaderName = HeaderName::from_static("x-auth-request-connection");
const GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
const GROUPS_TRUNCATED: HeaderName = HeaderName::from_static("x-auth-request-groups-truncated");
const GROUPS_OVERAGE: HeaderName = HeaderName::from_static("x-auth-request-groups-overage");
const ROLES: HeaderName = HeaderName::from_static("x-auth-request-roles");
const ROLES_TRUNCATED: HeaderName = HeaderName::from_static("x-auth-request-roles-truncated");
/// The upstream API's access token (`[connections.upstream]`), with its own budget.
const ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-auth-request-access-token");

fn overflow(metrics: &Metrics, header: &str, user: &str) {
    if metrics.header_overflow(header) {
        tracing::warn!(
            header,
            user,
            "an identity header exceeds forward_auth.max_header_bytes and was cut; \
             emit fewer groups (Entra: \"Groups assigned to the application\") or raise the budget \
             (this warning repeats at most once a minute; see entrance_forward_auth_header_overflow_total)"
        );
    }
}

/// A list as one comma-separated header value of at most `max` bytes: as many whole items as
/// fit, in order, never a cut item. An item holding a comma, a `%` or a control character
/// (which would split the list or the header) is sent percent-encoded — those characters as
/// `%XX` of their UTF-8 bytes, the rest as it is — so `a,b` arrives as `a%2Cb`, never as a
/// different group `ab`; percent-decoding any item gives the claim's value back. Returns the
/// value and whether items were left out.
pub(crate) fn list_header(items: &[String], max: usize) -> (String, bool) {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>().min(max));
    for item in items {
        let item = list_item(item);
        let extra = item.len() + usize::from(!out.is_empty());
        if out.len() + extra > max {
            return (out, true);
        }
        if item.is_empty() {
            // An empty claim value: nothing to send; not a truncation.
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&item);
    }
    (out, false)
}

/// One item of a list header: the value itself when it needs no escaping (group IDs and role
/// names almost never do: borrowed as they are), else with each control character (which
/// would corrupt the header), comma (the list separator) and `%` (so the encoding stays
/// reversible) as `%XX` of its UTF-8 bytes. Other UTF-8 is kept as it is, as oauth2-proxy
/// passes it.
fn list_item(item: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| c.is_control() || c == ',' || c == '%';
    if !item.chars().any(escaped) {
        return item.into();
    }
    let mut out = String::with_capacity(item.len() + 8);
    for c in item.chars() {
        if escaped(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// A claim as a header value: control characters (which would split or corrupt the header)
/// are dropped; UTF-8 is passed as bytes, as oauth2-proxy does.
fn header_value(v: &str) -> Option<HeaderValue> {
    // Claims are almost always visible ASCII: one validating copy. `from_str` would keep a
    // tab and refuses UTF-8, so those take the path below.
    if let Ok(value) = HeaderValue::from_str(v)
        && !v.contains('\t')
    {
        return Some(value);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{i:08}-0000-0000-0000-000000000000"))
            .collect()
    }

    #[test]
    fn a_list_that_fits_is_sent_whole() {
        let (v, cut) = list_header(&items(3), 4096);
        assert!(!cut);
        assert_eq!(v.split(',').count(), 3);
    }

    #[test]
    fn a_long_list_keeps_whole_items_within_the_budget() {
        let all = items(500);
        let (v, cut) = list_header(&all, 4096);
        assert!(cut);
        assert!(v.len() <= 4096);
        let kept: Vec<&str> = v.split(',').collect();
        assert_eq!(kept.len(), 4096 / 37, "36-byte GUIDs and commas");
        for (k, a) in kept.iter().zip(&all) {
            assert_eq!(k, a, "items are whole and in order");
        }
        assert!(HeaderValue::from_str(&v).is_ok());
    }

    #[test]
    fn commas_and_control_characters_cannot_split_the_list() {
        let (v, cut) = list_header(&["a,b".into(), "c\r\nX-Evil: 1".into()], 100);
        assert!(!cut);
        assert_eq!(v, "a%2Cb,c%0D%0AX-Evil: 1");
        assert!(HeaderValue::from_str(&v).is_ok());
    }

    /// Issue 12.7: a group `a,b` must not arrive as (or beside) a different group `ab`.
    #[test]
    fn items_that_differ_stay_different() {
        let (v, _) = list_header(&["a,b".into(), "ab".into(), "a%2Cb".into()], 100);
        let sent: Vec<&str> = v.split(',').collect();
        assert_eq!(sent, ["a%2Cb", "ab", "a%252Cb"]);
        let decoded: Vec<String> = sent
            .iter()
            .map(|i| {
                percent_encoding::percent_decode_str(i)
                    .decode_utf8()
                    .expect("UTF-8")
                    .into_owned()
            })
            .collect();
        assert_eq!(decoded, ["a,b", "ab", "a%2Cb"]);
        // Untouched: what Entra sends (GUIDs, role values, UTF-8 names).
        let (v, _) = list_header(&["App.User".into(), "Ünïcode Group".into()], 100);
        assert_eq!(v, "App.User,Ünïcode Group");
        // A C1 control is encoded too.
        let (v, _) = list_header(&["x\u{85}y".into()], 100);
        assert_eq!(v, "x%C2%85y");
    }

    proptest::proptest! {
        /// Any two different lists give different headers, and each item decodes back.
        #[test]
        fn list_items_decode_back(items in proptest::collection::vec(".{0,12}", 0..6)) {
            let (v, cut) = list_header(&items, 65536);
            proptest::prop_assert!(!cut);
            let expected: Vec<&String> = items.iter().filter(|i| !i.is_empty()).collect();
            let sent: Vec<String> = if v.is_empty() {
                Vec::new()
            } else {
                v.split(',')
                    .map(|i| percent_encoding::percent_decode_str(i).decode_utf8_lossy().into_owned())
                    .collect()
            };
            proptest::prop_assert_eq!(sent.iter().collect::<Vec<_>>(), expected);
            proptest::prop_assert!(HeaderValue::from_bytes(v.as_bytes()).is_ok());
        }
    }

    #[test]
    fn a_first_item_bigger_than_the_budget_leaves_an_empty_truncated_list() {
        let (v, cut) = list_header(&["x".repeat(300)], 256);
        assert!(cut && v.is_empty());
    }

    fn user(groups: usize) -> ActiveUser {
        serde_json::from_value(serde_json::json!({
            "identity": {
                "user": "entra:tid:oid",
                "connection": "contoso",
                "iss": "https://login.microsoftonline.com/tid/v2.0",
                "sub": "sub",
                "email": "ada@contoso.example",
                "email_verified": false,
                "groups": items(groups),
            },
            "issued_at": 0,
            "expires_at": 0,
        }))
        .expect("an active user")
    }

    #[test]
    fn identity_headers_are_kept_with_the_user_and_follow_a_new_budget() {
        let ada = user(200);
        let first = IdentityHeaders::of(&ada, 8192);
        assert!(matches!(first, Cow::Borrowed(_)), "built once and kept");
        assert!(first.overflowed.is_empty());
        assert_eq!(first.map[&GROUPS].len(), 200 * 37 - 1);
        assert!(matches!(IdentityHeaders::of(&ada, 8192), Cow::Borrowed(_)));
        // A reload lowered the budget: the kept headers are not served under it.
        let smaller = IdentityHeaders::of(&ada, 1024);
        assert!(matches!(smaller, Cow::Owned(_)));
        assert!(smaller.map[&GROUPS].len() <= 1024);
        assert_eq!(smaller.map[GROUPS_TRUNCATED], "true");
        assert_eq!(smaller.overflowed, [GROUPS]);
        // The kept headers are still the first budget's.
        assert_eq!(
            IdentityHeaders::of(&ada, 8192).map[&GROUPS].len(),
            200 * 37 - 1
        );
    }
}
