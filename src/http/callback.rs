//! `GET /login/callback`: finishes a login — single-use state, mix-up defence, code exchange
//! with the PKCE verifier, ID-token validation, a fresh session id — and sends the user on.

use axum::{
    Extension,
    extract::State,
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use tower_sessions::Session;

use super::{AppState, CorrelationId, Params};
use crate::{
    config::ResponseMode,
    error::AppError,
    identity::Identity,
    provider::Connection,
    session::{self, PendingLogin, SignedIn},
    token::{self, CodeExchange},
    verifier::{self, Expectations, Rejection},
};

/// The authorization response (RFC 6749 §4.1.2 and §4.1.2.1, RFC 9207's `iss`).
#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

pub async fn callback_get(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    session: Session,
    Params(params): Params<CallbackParams>,
) -> Result<Response, AppError> {
    finish_login(state, cid, session, Method::GET, params).await
}

async fn finish_login(
    state: AppState,
    cid: CorrelationId,
    session: Session,
    method: Method,
    params: CallbackParams,
) -> Result<Response, AppError> {
    let Some(state_param) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err(AppError::MissingParameter("state"));
    };
    // Taken out of the session (and the removal saved) before anything is compared or
    // fetched: whatever happens next, this state cannot be used twice.
    let login = session::take_pending(&session, state_param).await?;

    // A pending login made for one response mode must come back by it; a query-mode login
    // arriving as a POST (or the reverse) is not the IdP's answer to our request.
    let expected_method = match login.mode() {
        ResponseMode::Query => Method::GET,
        ResponseMode::FormPost => Method::POST,
    };
    if method != expected_method {
        return Err(AppError::BadRequest(format!(
            "the callback came by {method}, but the login asked for response_mode={}",
            login.response_mode
        )));
    }

    // Mix-up defence (RFC 9700 §4.4): the connection is the one this login was sent to, never
    // something the callback names.
    let conn = state.connection(&login.connection)?.clone();
    let provider = conn
        .provider()
        .map_err(|reason| AppError::not_ready(&conn.config, reason))?;
    if let Some(iss) = &params.iss
        && iss != &provider.metadata.issuer
    {
        return Err(AppError::IssuerParameterMismatch {
            expected: provider.metadata.issuer.clone(),
            actual: iss.clone(),
        });
    }

    if let Some(error) = params.error {
        return Err(AppError::IdpError {
            connection: conn.config.id.clone(),
            name: conn.config.name.clone(),
            error,
            description: params.error_description.unwrap_or_default(),
        });
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(AppError::MissingParameter("code"));
    };

    let tokens = token::exchange_code(
        &state.http,
        &CodeExchange {
            token_endpoint: &provider.metadata.token_endpoint,
            client_id: &conn.config.client_id,
            client_secret: &conn.config.client_secret,
            client_auth: provider.client_auth,
            code,
            redirect_uri: &state.config.redirect_uri(),
            code_verifier: &login.pkce_verifier,
        },
    )
    .await
    .map_err(|source| AppError::Token {
        connection: conn.config.id.clone(),
        name: conn.config.name.clone(),
        source: Box::new(source),
    })?;

    let claims = validate_id_token(&state, &conn, &login, &tokens.id_token).await?;
    let identity = Identity::from_claims(&conn.config.id, &claims);
    let now = session::now_unix();
    let signed_in = SignedIn {
        issued_at: now,
        expires_at: now + state.config.session.absolute_lifetime.as_secs() as i64,
        id_token: tokens.id_token,
        identity,
    };
    session::sign_in(&session, &signed_in, state.config.session.idle_timeout).await?;
    tracing::info!(
        target: "entrance::audit",
        event = "sign_in",
        user = %signed_in.identity.user,
        connection = %conn.config.id,
        tid = signed_in.identity.tid.as_deref().unwrap_or(""),
        oid = signed_in.identity.oid.as_deref().unwrap_or(""),
        correlation_id = %cid.0,
        "signed in"
    );

    let location = HeaderValue::from_str(&login.return_to)
        .map_err(|e| AppError::Internal(format!("return_to: {e}")))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

/// OpenID Connect Core §3.1.3.7, with one JWKS refetch when the token names a key we have
/// not seen (the IdP rotated its keys).
async fn validate_id_token(
    state: &AppState,
    conn: &Connection,
    login: &PendingLogin,
    id_token: &str,
) -> Result<crate::verifier::IdTokenClaims, AppError> {
    let reject = |rejection: Rejection| AppError::IdToken {
        connection: conn.config.id.clone(),
        rejection,
    };
    let mut provider = conn
        .provider()
        .map_err(|reason| AppError::not_ready(&conn.config, reason))?;
    if let Some(kid) = verifier::peek_kid(id_token).map_err(reject)?
        && !provider.keys.contains_kid(&kid)
    {
        provider = conn
            .keys_for_unknown_kid(&state.http, &kid)
            .await
            .map_err(|reason| AppError::not_ready(&conn.config, reason))?;
    }
    let expectations = Expectations {
        issuer: &provider.metadata.issuer,
        client_id: &conn.config.client_id,
        trusted_audiences: &conn.config.trusted_audiences,
        allowed_algs: &provider.allowed_algs,
        clock_skew: state.config.clock_skew,
        now: session::now_unix(),
        nonce: &login.nonce,
    };
    verifier::verify_id_token(id_token, &provider.keys, &expectations).map_err(reject)
}
