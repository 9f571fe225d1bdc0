//! `GET /login`: starts a login — PKCE, state and nonce remembered in the session — and sends
//! the browser to the connection's authorize endpoint.
//!
//! The connection is the one named by `connection`, else the one whose `domains` hold the
//! domain of `login_hint` (an email address; Entra then also gets `domain_hint`), else the
//! only one configured.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use serde::Deserialize;
use tower_sessions::Session;
use tracing::Instrument as _;
use url::Url;

use super::{AppState, Params};
use crate::{
    http::error::AppError,
    metrics::Metrics,
    oidc::provider::Connection,
    return_to,
    session::{self, PendingLogin},
};

#[derive(Debug, Deserialize)]
pub(super) struct LoginParams {
    connection: Option<String>,
    return_to: Option<String>,
    /// The user's email address, from the start page's form or the app's link.
    login_hint: Option<String>,
}

/// Longer than any email address (RFC 5321 allows 254); refused past this rather than
/// forwarded to the IdP.
const MAX_LOGIN_HINT: usize = 320;

/// The lower-cased domain of an email-shaped `login_hint`.
fn hint_domain(hint: &str) -> Option<String> {
    let (local, domain) = hint.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!local.is_empty() && !domain.is_empty()).then_some(domain)
}

/// The authorize redirect. Its span (`authorize`, and `session.save` for the store write)
/// names the connection only: the state, nonce and PKCE verifier stay out of every span.
#[tracing::instrument(name = "authorize", skip_all, fields(connection = tracing::field::Empty))]
pub(super) async fn login(
    State(state): State<AppState>,
    session: Session,
    Params(params): Params<LoginParams>,
) -> Result<Response, AppError> {
    let login_hint = match params.login_hint.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(h) if h.len() > MAX_LOGIN_HINT || h.chars().any(char::is_control) => {
            return Err(AppError::BadRequest(
                "login_hint is not an email address".into(),
            ));
        }
        Some(h) => Some(h),
    };
    let domain = login_hint.and_then(hint_domain);
    let connections = state.connections.load();
    let routes_by_domain = connections.iter().any(|c| !c.config.domains.is_empty());
    let conn = match (params.connection.as_deref(), login_hint) {
        (Some(id), _) => state.connection(id)?,
        // Domain routing is on as soon as one connection lists domains: then an address no
        // connection claims is refused (400, before any session is written) instead of
        // guessed.
        (None, Some(hint)) if routes_by_domain => {
            let Some(domain) = &domain else {
                return Err(AppError::BadRequest(format!(
                    "login_hint {:?} is not an email address",
                    hint.chars().take(64).collect::<String>()
                )));
            };
            connections
                .iter()
                .find(|c| c.config.domains.contains(domain))
                .cloned()
                .ok_or_else(|| AppError::UnknownDomain(domain.clone()))?
        }
        (None, _) => match connections.as_slice() {
            [only] => only.clone(),
            _ => return Err(AppError::ConnectionRequired),
        },
    };
    // domain_hint sends the user straight to their organisation's sign-in (federated IdP
    // included) — only for a domain this connection claims.
    let domain_hint = domain.filter(|d| conn.config.domains.contains(d));
    tracing::Span::current().record("connection", conn.config.id.as_str());

    // openidconnect's generators draw from the OS CSPRNG: 32 bytes (256 bits) each, above
    // the 128 bits RFC 9700 §4.7 and OIDC Core §15.5.2 ask for state and nonce. The PKCE
    // verifier is 43 base64url characters (RFC 7636 §4.1).
    let return_to = return_to::sanitize(
        params.return_to.as_deref(),
        &state.config.public_url,
        &state.config.allowed_return_hosts,
    );
    start(
        &state,
        &session,
        &conn,
        return_to,
        login_hint,
        domain_hint.as_deref(),
        None,
    )
    .await
}

/// Sends the browser to `conn`'s IdP: a new pending login (state, nonce, PKCE verifier) kept
/// in the session, and the authorization request (OpenID Connect Core §3.1.2.1, RFC 7636).
/// `test_of_link`: a setup link's test sign-in (`setup::test_sign_in`), which the callback
/// finishes without a session.
pub(super) async fn start(
    state: &AppState,
    session: &Session,
    conn: &Connection,
    return_to: String,
    login_hint: Option<&str>,
    domain_hint: Option<&str>,
    test_of_link: Option<String>,
) -> Result<Response, AppError> {
    let provider = conn
        .provider()
        .map_err(|reason| AppError::not_ready(&conn.config, reason))?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256_len(32);
    let login = PendingLogin {
        state: CsrfToken::new_random_len(32).into_secret(),
        connection: conn.config.id.clone(),
        nonce: Nonce::new_random_len(32).secret().clone(),
        pkce_verifier: verifier.into_secret(),
        return_to,
        response_mode: conn.config.response_mode.as_str().to_owned(),
        created_at: state.clock.now_unix(),
        test_of_link,
    };

    let mut authorize = Url::parse(&provider.metadata.authorization_endpoint)
        .map_err(|e| AppError::Internal(format!("authorization_endpoint: {e}")))?;
    authorize
        .query_pairs_mut()
        .append_pair("client_id", &conn.config.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &state.config.redirect_uri())
        .append_pair("scope", &conn.config.authorize_scope())
        .append_pair("response_mode", &login.response_mode)
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", challenge.method().as_str());
    if let Some(hint) = login_hint {
        authorize.query_pairs_mut().append_pair("login_hint", hint);
    }
    if let Some(domain) = domain_hint {
        authorize
            .query_pairs_mut()
            .append_pair("domain_hint", domain);
    }

    let connection_id = login.connection.clone();
    async {
        session::push_pending(
            session,
            login,
            state.config.session.idle_timeout,
            &state.clock,
        )
        .await?;
        // Saved here, not by the session layer after the response: a store failure must
        // become a 503 page, not the layer's bare 500.
        session.save().await?;
        Ok::<(), AppError>(())
    }
    .instrument(tracing::info_span!("session.save"))
    .await?;
    state
        .metrics
        .logins_started
        .get_or_create(&Metrics::connection(&connection_id))
        .inc();

    let location = HeaderValue::from_str(authorize.as_str())
        .map_err(|e| AppError::Internal(format!("authorize URL: {e}")))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_is_the_lower_cased_part_after_the_last_at() {
        assert_eq!(
            hint_domain("Ada@Contoso.COM").as_deref(),
            Some("contoso.com")
        );
        assert_eq!(
            hint_domain("\"a@b\"@fabrikam.com.").as_deref(),
            Some("fabrikam.com")
        );
        assert_eq!(hint_domain("ada"), None);
        assert_eq!(hint_domain("@contoso.com"), None);
        assert_eq!(hint_domain("ada@"), None);
    }
}
