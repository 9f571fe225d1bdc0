//! Sign-out: `GET /logout` asks for confirmation, `POST /logout` (same-origin only) ends the
//! session and, when the IdP supports it, signs out there too (OIDC RP-Initiated Logout).

use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use tower_sessions::Session;
use url::Url;

use super::{AppState, CorrelationId, limits::ClientIp};
use crate::{
    http::{error::AppError, pages},
    session,
};

pub(super) async fn confirm() -> Html<String> {
    Html(pages::page(
        "Sign out",
        "<h1>Sign out?</h1><form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form>",
    ))
}

pub(super) async fn logout(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    client_ip: ClientIp,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // A cross-site form must not be able to sign users out (logout CSRF): the browser's
    // Origin header (or, where it is missing, Sec-Fetch-Site) must say the form was ours.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let same_origin = match origin {
        Some(o) => o == state.config.public_origin(),
        None => fetch_site == Some("same-origin"),
    };
    if !same_origin {
        return Err(AppError::CrossSiteRequest);
    }

    let Some(user) = session::sign_out(&session).await? else {
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
