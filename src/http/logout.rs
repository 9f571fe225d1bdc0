//! Sign-out: `GET /logout` asks for confirmation, `POST /logout` (from entrance's own pages
//! only: [`from_our_own_page`]) ends the session and, when the IdP supports it, signs out
//! there too (OIDC RP-Initiated Logout).

use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use tower_sessions::Session;
use url::Url;

use super::{AppState, CorrelationId, limits::ClientIp};
use crate::{
    http::{error::AppError, extract::MaybeUser, pages},
    session,
};

/// `GET /logout`: who is signed in, Sign out (a same-origin POST) or Cancel (back to `/`).
pub(super) async fn confirm(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
) -> Html<String> {
    let body = match user {
        Some(user) => format!(
            "<h1>Sign out?</h1><p>{}</p><form method=\"post\" action=\"/logout\" class=\"actions\">\
<button type=\"submit\">Sign out</button><a class=\"button secondary\" href=\"/\">Cancel</a></form>",
            super::home::signed_in_as(&state, &user)
        ),
        None => "<h1>You are not signed in</h1><p>There is no session to end in this browser.</p>\
<p><a class=\"button secondary\" href=\"/\">Start page</a></p>"
            .to_owned(),
    };
    Html(pages::page("Sign out", &body))
}

pub(super) async fn logout(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    client_ip: ClientIp,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if !from_our_own_page(
        headers.get(SEC_FETCH_SITE).map(HeaderValue::as_bytes),
        headers.get(header::ORIGIN).map(HeaderValue::as_bytes),
        &state.config.public_origin(),
    ) {
        return Err(AppError::CrossSiteRequest);
    }

    let Some(user) = session::sign_out(&session, &state.store).await? else {
        return Ok(see_other("/"));
    };
    tracing::info!(
        target: "entrance::audit",
        event = "sign_out",
        user = %user.identity.user,
        connection = %user.identity.connection,
        tid = user.identity.tid.as_deref().unwrap_or(""),
        oid = user.identity.oid.as_deref().unwrap_or(""),
        client_ip = %client_ip,
        correlation_id = %cid.0,
        "signed out"
    );

    let end_session = state
        .connection(&user.identity.connection)
        .ok()
        .and_then(|c| c.provider().ok().map(|p| (c.clone(), p)))
        .and_then(|(c, p)| {
            let mut url = Url::parse(p.metadata.end_session_endpoint.as_deref()?).ok()?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("client_id", &c.config.client_id);
                if let Some(uri) = &state.config.post_logout_redirect_uri {
                    q.append_pair("post_logout_redirect_uri", uri.as_str());
                }
                // Entra documents `logout_hint` (the `login_hint` claim) to skip the account
                // picker; other IdPs identify the session by `id_token_hint`.
                match &user.identity.login_hint {
                    Some(hint) => q.append_pair("logout_hint", hint),
                    None => q.append_pair("id_token_hint", &user.id_token),
                };
            }
            Some(url)
        });
    Ok(match end_session {
        Some(url) => see_other(url.as_str()),
        None => see_other("/"),
    })
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct FrontChannelParams {
    sid: Option<String>,
    iss: Option<String>,
}

/// `GET /logout/frontchannel?sid=…[&iss=…]`: the front-channel logout URL, loaded in a hidden
/// iframe when the user signs out at the IdP. Third-party cookie blocking usually keeps our
/// cookie out, so the sessions are found by the IdP's `sid`, per connection (a `sid` is unique
/// only per issuer). With `iss` (OpenID Connect Front-Channel Logout 1.0 §2) only sessions
/// whose ID token that issuer signed are ended; Entra sends `sid` alone, and then the sessions
/// of every connection that signed in with that `sid` end — for Entra, connections of one
/// tenant share its sign-in session and its `sid`. Always 200: the IdP only needs the page to
/// load.
pub(super) async fn front_channel(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    client_ip: ClientIp,
    super::Params(params): super::Params<FrontChannelParams>,
) -> Result<Response, AppError> {
    let iss = params
        .iss
        .as_deref()
        .filter(|i| !i.is_empty() && i.len() <= 2048);
    if let Some(sid) = params
        .sid
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 256)
    {
        let connections = state.connections.load_full();
        for conn in connections.iter() {
            for user in session::end_by_sid(&state.store, &conn.config.id, sid, iss).await? {
                tracing::info!(
                    target: "entrance::audit",
                    event = "sign_out",
                    via = "front_channel",
                    user = %user.identity.user,
                    connection = %user.identity.connection,
                    tid = user.identity.tid.as_deref().unwrap_or(""),
                    oid = user.identity.oid.as_deref().unwrap_or(""),
                    client_ip = %client_ip,
                    correlation_id = %cid.0,
                    "signed out"
                );
            }
        }
    }
    Ok(Html(pages::page("Signed out", "<p>Signed out.</p>")).into_response())
}

pub(crate) const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Whether a `POST /logout` was sent by a form on entrance's own pages — the logout-CSRF
/// check, so that another site's form cannot sign users out. entrance's pages run no script
/// and serve no one else's content, so "sent from our origin" means "our Sign out button".
///
/// - `Sec-Fetch-Site`, when present, decides (W3C Fetch Metadata Request Headers,
///   `#sec-fetch-site-header`; OWASP CSRF Prevention Cheat Sheet, "Fetch Metadata headers"):
///   the browser sets it and no page can (a `Sec-` name is a forbidden request-header, Fetch
///   standard `#forbidden-request-header`). Only `same-origin` passes: `same-site` would let a
///   sibling subdomain sign users out, `cross-site` is the attack, `none` (typed or
///   bookmarked) is no form of ours.
/// - `Origin: null` alone proves nothing. A browser sends it for our own form under
///   `Referrer-Policy: no-referrer` (Fetch standard, "append a request `Origin` header": that
///   policy serializes a POST's origin as `null`) — issue #11, Chromium refusing our own
///   button — but an attacker's page gets the same `null` by setting that policy on itself or
///   posting from a sandboxed iframe (OWASP: do not allow-list `null`). Beside
///   `Sec-Fetch-Site: same-origin` it passes; on its own (a browser without Fetch Metadata) it
///   does not.
/// - Otherwise `Origin` must be entrance's own, scheme, host and port (OWASP, "Verifying
///   Origin with standard headers"). Our pages are served with `Referrer-Policy: same-origin`
///   (`http::edge`), under which a browser without Fetch Metadata sends the real
///   origin on our own POSTs.
/// - A request with neither header is refused: browsers send `Origin` on every POST, and
///   OWASP advises blocking when the source cannot be told.
///
/// `Sec-Fetch-Site: same-origin` beside a real `Origin` that is not ours is refused too: no
/// browser sends that pair, so refusing it costs nothing and keeps both checks in force.
pub(crate) fn from_our_own_page(
    sec_fetch_site: Option<&[u8]>,
    origin: Option<&[u8]>,
    public_origin: &str,
) -> bool {
    let origin_is_ours = origin.map(|o| o == public_origin.as_bytes());
    match sec_fetch_site {
        Some(site) => {
            site == b"same-origin"
                && match origin {
                    None | Some(b"null") => true,
                    Some(_) => origin_is_ours == Some(true),
                }
        }
        None => origin_is_ours == Some(true),
    }
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static("/"))],
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::from_our_own_page;

    const OURS: &str = "https://sso.example.com";

    fn check(site: Option<&str>, origin: Option<&str>) -> bool {
        from_our_own_page(site.map(str::as_bytes), origin.map(str::as_bytes), OURS)
    }

    #[test]
    fn a_same_origin_fetch_passes_with_our_origin_a_null_one_or_none() {
        assert!(check(Some("same-origin"), Some(OURS)));
        assert!(
            check(Some("same-origin"), Some("null")),
            "Chromium, no-referrer"
        );
        assert!(check(Some("same-origin"), None));
    }

    #[test]
    fn any_other_fetch_site_is_refused_whatever_the_origin() {
        for site in ["cross-site", "same-site", "none", "", "Same-Origin"] {
            for origin in [Some(OURS), Some("null"), None, Some("https://evil.example")] {
                assert!(!check(Some(site), origin), "{site} {origin:?}");
            }
        }
    }

    #[test]
    fn without_fetch_metadata_only_our_own_origin_passes() {
        assert!(check(None, Some(OURS)));
        assert!(!check(None, Some("null")), "an attacker can make null");
        assert!(!check(None, None));
        assert!(!check(None, Some("https://evil.example")));
        assert!(!check(None, Some("https://sso.example.com.evil.example")));
        assert!(
            !check(None, Some("http://sso.example.com")),
            "scheme counts"
        );
        assert!(
            !check(None, Some("https://sso.example.com:8443")),
            "port counts"
        );
    }

    #[test]
    fn a_pair_no_browser_sends_is_refused() {
        assert!(!check(Some("same-origin"), Some("https://evil.example")));
    }
}
