//! `GET /login`: starts a login — PKCE, state and nonce remembered in the session — and sends
//! the browser to the connection's authorize endpoint.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use serde::Deserialize;
use tower_sessions::Session;
use url::Url;

use super::{AppState, Params};
use crate::{
    error::AppError,
    metrics::Metrics,
    return_to,
    session::{self, PendingLogin},
};

#[derive(Debug, Deserialize)]
pub struct LoginParams {
    connection: Option<String>,
    return_to: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    session: Session,
    Params(params): Params<LoginParams>,
) -> Result<Response, AppError> {
    let conn = match params.connection.as_deref() {
        Some(id) => state.connection(id)?,
        None => match state.connections.load().as_slice() {
            [only] => only.clone(),
            _ => return Err(AppError::ConnectionRequired),
        },
    };
    let provider = conn
        .provider()
        .map_err(|reason| AppError::not_ready(&conn.config, reason))?;

    // openidconnect's generators draw from the OS CSPRNG: 32 bytes (256 bits) each, above
    // the 128 bits RFC 9700 §4.7 and OIDC Core §15.5.2 ask for state and nonce. The PKCE
    // verifier is 43 base64url characters (RFC 7636 §4.1).
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256_len(32);
    let login = PendingLogin {
        state: CsrfToken::new_random_len(32).into_secret(),
        connection: conn.config.id.clone(),
        nonce: Nonce::new_random_len(32).secret().clone(),
        pkce_verifier: verifier.into_secret(),
        return_to: return_to::sanitize(
            params.return_to.as_deref(),
            &state.config.public_url,
            &state.config.allowed_return_hosts,
        ),
        response_mode: conn.config.response_mode.as_str().to_owned(),
        created_at: session::now_unix(),
    };

    let mut authorize = Url::parse(&provider.metadata.authorization_endpoint)
        .map_err(|e| AppError::Internal(format!("authorization_endpoint: {e}")))?;
    authorize
        .query_pairs_mut()
        .append_pair("client_id", &conn.config.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &state.config.redirect_uri())
        .append_pair("scope", &conn.config.scopes.join(" "))
        .append_pair("response_mode", &login.response_mode)
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", challenge.method().as_str());

    let connection_id = login.connection.clone();
    session::push_pending(&session, login).await?;
    // Saved here, not by the session layer after the response: a store failure must become
    // a 503 page, not the layer's bare 500.
    session.save().await?;
    state
        .metrics
        .logins_started
        .get_or_create(&Metrics::connection(&connection_id))
        .inc();

    let location = HeaderValue::from_str(authorize.as_str())
        .map_err(|e| AppError::Internal(format!("authorize URL: {e}")))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}
