//! `GET /login/callback`: finishes a login — single-use state, mix-up defence, code exchange
//! with the PKCE verifier, ID-token validation, a fresh session id — and sends the user on.

use axum::{
    Extension,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;
use tower_sessions::Session;
use tracing::Instrument as _;

use super::{AppState, CorrelationId, Params, limits::ClientIp};
use crate::{
    config::{ConnectionConfig, ResponseMode, Userinfo},
    http::error::AppError,
    http::pages,
    metrics::Metrics,
    oidc::graph,
    oidc::identity::Identity,
    oidc::provider::Connection,
    oidc::token::{self, CodeExchange},
    oidc::userinfo,
    oidc::verifier::{self, Expectations, Rejection},
    session::{self, PendingLogin, SignedIn, upstream::UpstreamTokens},
};

/// The authorization response (RFC 6749 §4.1.2 and §4.1.2.1, RFC 9207's `iss`). `Debug`
/// leaves out the code and the state: either would let a reader of the log finish the login.
#[derive(Deserialize)]
pub(super) struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
    /// Set by our own form_post relay page.
    #[serde(default, deserialize_with = "flag")]
    relayed: bool,
}

impl std::fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("CallbackParams")
            .field("state", &redacted(&self.state))
            .field("code", &redacted(&self.code))
            .field("error", &self.error)
            .field("error_description", &self.error_description)
            .field("iss", &self.iss)
            .field("relayed", &self.relayed)
            .finish()
    }
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Option::<String>::deserialize(d)?;
    Ok(v.is_some_and(|v| v == "1" || v == "true"))
}

pub(super) async fn callback_get(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    client_ip: ClientIp,
    session: Session,
    Params(params): Params<CallbackParams>,
) -> Result<Response, AppError> {
    finish_or_resume(state, cid, client_ip, session, Method::GET, params).await
}

/// `POST /login/callback` (response_mode=form_post, Entra's recommendation for web apps).
pub(super) async fn callback_post(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    client_ip: ClientIp,
    session: Session,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let params: CallbackParams = super::form_body(&headers, body)?;

    // No session cookie: this is the IdP's cross-site POST, which browsers send without our
    // SameSite=Lax cookie. Relay it through a same-site page once; `relayed` stops a loop.
    if session.id().is_none() && !params.relayed {
        let mut fields: Vec<(&str, &str)> = vec![("relayed", "1")];
        for (name, value) in [
            ("state", &params.state),
            ("code", &params.code),
            ("error", &params.error),
            ("error_description", &params.error_description),
            ("iss", &params.iss),
        ] {
            if let Some(v) = value {
                fields.push((name, v));
            }
        }
        let mut res = Html(pages::relay_page(&fields)).into_response();
        res.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(pages::relay_content_security_policy()),
        );
        return Ok(res);
    }
    finish_or_resume(state, cid, client_ip, session, Method::POST, params).await
}

/// A callback whose state is missing, used or expired in a browser that is already signed in
/// (a double click, the back button) goes on to where the login was headed instead of
/// showing an error.
async fn finish_or_resume(
    state: AppState,
    cid: CorrelationId,
    client_ip: ClientIp,
    session: Session,
    method: Method,
    params: CallbackParams,
) -> Result<Response, AppError> {
    let idle = state.config.session.idle_timeout;
    match finish_login(
        state.clone(),
        cid,
        client_ip,
        session.clone(),
        method,
        params,
    )
    .await
    {
        Err(err @ (AppError::State { .. } | AppError::MissingParameter("state"))) => {
            if session::signed_in(&session, &state.users, idle, &state.clock)
                .await?
                .is_none()
            {
                return Err(err);
            }
            let target = match &err {
                AppError::State {
                    return_to: Some(r), ..
                } => r.clone(),
                _ => "/".to_owned(),
            };
            tracing::info!(
                code = err.code(),
                "callback without a usable state in a signed-in browser; resuming"
            );
            see_other(&target)
        }
        other => other,
    }
}

fn see_other(location: &str) -> Result<Response, AppError> {
    let location = HeaderValue::from_str(location)
        .map_err(|e| AppError::Internal(format!("redirect target: {e}")))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

/// The callback's checks in the order that makes them safe: the state is spent first, then the
/// response mode, the connection and RFC 9207's `iss` are held to the pending login before any
/// IdP call, and the session is written last. One piece on purpose, so that order reads top to
/// bottom; the steps with logic of their own are `identify` and `exchange_with_fallback`.
#[tracing::instrument(name = "callback", skip_all, fields(connection = tracing::field::Empty))]
async fn finish_login(
    state: AppState,
    cid: CorrelationId,
    client_ip: ClientIp,
    session: Session,
    method: Method,
    params: CallbackParams,
) -> Result<Response, AppError> {
    let Some(state_param) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err(AppError::MissingParameter("state"));
    };
    // Taken out of the session (and the removal saved) before anything is compared or
    // fetched: whatever happens next, this state cannot be used twice.
    let login = session::take_pending(
        &session,
        &state.store,
        state_param,
        state.config.session.idle_timeout,
        &state.clock,
    )
    .instrument(tracing::info_span!("session.take_pending"))
    .await?;
    tracing::Span::current().record("connection", login.connection.as_str());

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
    let conn = state.connection(&login.connection)?;
    let provider = conn
        .provider()
        .map_err(|reason| AppError::not_ready(&conn.config, reason))?;
    // RFC 9207 §2.3, before any IdP call: exact for a single issuer. A multi-tenant
    // connection cannot know the tenant yet: the parameter must be the template with an
    // allowed tenant here, and equal the ID token's `iss` right after the token call
    // (`identify`), before the keys or userinfo are fetched.
    if let Some(iss) = &params.iss
        && !provider.issuer.admits(iss, &conn.config.allowed_tenants)
    {
        return Err(AppError::IssuerParameterMismatch {
            expected: provider.metadata.issuer.clone(),
            actual: iss.clone(),
        });
    }

    if let Some(error) = params.error {
        // A setup link's test sign-in shows the code's fix on a page of its own.
        if login.test_of_link.is_some() {
            return Ok(super::setup::test_error_page(
                &state,
                &escape_controls(&error),
                &escape_controls(params.error_description.as_deref().unwrap_or_default()),
            ));
        }
        return Err(idp_error(
            &conn,
            &error,
            params.error_description.as_deref(),
        ));
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(AppError::MissingParameter("code"));
    };

    let tokens =
        exchange_with_fallback(&state, &conn, &provider, code, &login.pkce_verifier, &cid).await;
    let tokens = tokens.map_err(|source| AppError::Token {
        connection: conn.config.id.clone(),
        name: conn.config.name.clone(),
        source: Box::new(source),
    })?;

    let identity = identify(
        &state,
        &conn,
        &provider,
        &login,
        &tokens,
        params.iss.as_deref(),
        &cid,
    )
    .await?;
    // A setup link's test sign-in (issue 17): what was received, and no session at all.
    if let Some(link) = &login.test_of_link {
        tracing::info!(
            target: "entrance::audit",
            event = "setup_test_sign_in",
            link = %link,
            connection = %conn.config.id,
            user = %identity.user,
            client_ip = %client_ip,
            correlation_id = %cid.0,
            "test sign-in through a connection created by a setup link"
        );
        return Ok(super::setup::test_result_page(&state, &identity));
    }
    let now = state.clock.now_unix();
    let upstream = match (&conn.config.upstream, &tokens.access_token) {
        (Some(_), Some(access)) => Some(UpstreamTokens::received(
            access,
            tokens.refresh_token.as_ref(),
            tokens.expires_in,
            now,
        )),
        (Some(_), None) => {
            // /auth then ends the session with a reason the admin can act on.
            tracing::warn!(connection = %conn.config.id, correlation_id = %cid.0, "the token response carried no access_token for the upstream API");
            None
        }
        (None, _) => None,
    };
    let signed_in = SignedIn {
        issued_at: now,
        expires_at: now + state.config.session.absolute_lifetime.as_secs() as i64,
        id_token: tokens.id_token,
        identity,
    };
    // A sign-in over an earlier one in this browser: that session's id is replaced below, and
    // its upstream tokens go with it (only where there can be some: a store round trip less
    // per login elsewhere).
    async {
        if conn.config.upstream.is_some()
            && let Some(old) = session.id()
        {
            session::upstream::forget(&state.store, &old).await?;
        }
        session::sign_in(
            &session,
            &signed_in,
            state.config.session.idle_timeout,
            &state.clock,
        )
        .await?;
        if let (Some(kept), Some(id)) = (&upstream, session.id()) {
            session::upstream::keep(&state.store, &id, kept, signed_in.expires_at, &state.clock)
                .await?;
        }
        if let Some(sid) = &signed_in.identity.sid {
            session::index_sid(&state.store, sid, &session, &signed_in, &state.clock).await?;
        }
        Ok::<(), AppError>(())
    }
    .instrument(tracing::info_span!("session.sign_in"))
    .await?;
    state
        .metrics
        .logins_succeeded
        .get_or_create(&Metrics::connection(&conn.config.id))
        .inc();
    tracing::info!(
        target: "entrance::audit",
        event = "sign_in",
        user = %signed_in.identity.user,
        connection = %conn.config.id,
        tid = signed_in.identity.tid.as_deref().unwrap_or(""),
        oid = signed_in.identity.oid.as_deref().unwrap_or(""),
        client_ip = %client_ip,
        correlation_id = %cid.0,
        "signed in"
    );

    see_other(&login.return_to)
}

/// The IdP's error answer. `error` and `error_description` come from the callback's URL, which
/// anyone can craft: control characters (a newline would forge a line in the text log, which
/// escapes none) are written as escapes before the text reaches a log, a page or the traces.
fn idp_error(conn: &Connection, error: &str, description: Option<&str>) -> AppError {
    AppError::IdpError {
        connection: conn.config.id.clone(),
        name: conn.config.name.clone(),
        error: escape_controls(error),
        description: escape_controls(description.unwrap_or_default()),
    }
}

/// `s` with each control character as its Rust escape (`\n`, `\u{1b}`); all else kept.
fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// From a redeemed code to the person: the callback's `iss` held to the token's, the ID token
/// validated, userinfo merged when the connection asks for it, the identity derived, and
/// `allowed_groups` / `allowed_roles` applied — all before any session is written, so a refused
/// user leaves nothing signed in.
async fn identify(
    state: &AppState,
    conn: &Connection,
    provider: &crate::oidc::provider::Provider,
    login: &PendingLogin,
    tokens: &token::TokenResponse,
    iss: Option<&str>,
    cid: &CorrelationId,
) -> Result<Identity, AppError> {
    // RFC 9207: the parameter must equal the token's `iss` before any further IdP call (the
    // tenant's keys, a key refetch, userinfo). Read unverified here; the validation below
    // proves that same `iss`, and the comparison after it holds the validated claim to it.
    if let Some(iss) = iss
        && verifier::peek_iss(&tokens.id_token).as_deref() != Some(iss)
    {
        return Err(AppError::IssuerParameterMismatch {
            expected: verifier::peek_iss(&tokens.id_token).unwrap_or_default(),
            actual: iss.to_owned(),
        });
    }
    let mut claims = validate_id_token(state, conn, login, &tokens.id_token).await?;
    if let Some(iss) = iss
        && iss != claims.iss
    {
        return Err(AppError::IssuerParameterMismatch {
            expected: claims.iss.clone(),
            actual: iss.to_owned(),
        });
    }
    // After the ID token is proven, so the `sub` userinfo must match is one we trust.
    if wants_userinfo(&conn.config, provider, &claims, tokens) {
        let failed = |source| AppError::Userinfo {
            connection: conn.config.id.clone(),
            name: conn.config.name.clone(),
            source,
        };
        let answer = userinfo::fetch(
            &state.http,
            provider.metadata.userinfo_endpoint.as_deref(),
            tokens.access_token.as_ref(),
        )
        .await
        .map_err(failed)?;
        userinfo::merge(&mut claims, answer).map_err(failed)?;
    }
    let mut identity = Identity::from_claims(&conn.config, &claims);
    // ENTRA-2.md §4–§5: an overage's groups come from Microsoft Graph when the connection
    // asks; they then stand where the token's would have, for allowed_groups and the headers.
    if identity.groups_overage && conn.config.groups.resolve_overage {
        identity.groups = resolve_overage(state, conn, provider, &identity, tokens, cid).await?;
        identity.groups_overage = false;
    }
    if identity.groups_overage {
        tracing::warn!(
            user = %identity.user,
            connection = %conn.config.id,
            correlation_id = %cid.0,
            "group overage: the user is in more groups than fit in an ID token, so Entra sent none \
             (hasgroups / _claim_names); X-Auth-Request-Groups stays empty. Fix: in the app \
             registration's Token configuration emit \"Groups assigned to the application\" \
             (and assign the groups to the application), use app roles, or set \
             groups.resolve_overage = true on the connection to read them from Microsoft Graph"
        );
    }
    // allowed_groups / allowed_roles: after the token is proven, before any session is
    // written, so a refused user leaves nothing signed in.
    if let Err(denial) = conn.config.access.check(&identity) {
        return Err(AppError::NotPermitted {
            connection: conn.config.id.clone(),
            user: identity.user.clone(),
            denial,
        });
    }
    // Warn once per sign-in (the /auth warnings are rate-limited per process) when the
    // groups or roles will not fit in their forward-auth header.
    let budget = state.config.forward_auth.max_header_bytes;
    for (header, items) in [("groups", &identity.groups), ("roles", &identity.roles)] {
        if super::auth::list_header(items, budget).1 {
            tracing::warn!(
                user = %identity.user,
                connection = %conn.config.id,
                count = items.len(),
                header,
                "this user's {header} exceed forward_auth.max_header_bytes ({budget}); \
                 X-Auth-Request-{} will carry only the first ones and a -Truncated flag",
                if header == "groups" { "Groups" } else { "Roles" }
            );
        }
    }
    Ok(identity)
}

/// A group overage's groups, read from Microsoft Graph (`oidc::graph`): with the sign-in's
/// own access token when it is a Graph token, else with an app-only token from the user's
/// tenant. Each call is counted by result; a failure fails the sign-in (`AppError::Groups`),
/// which the traces ring records with step `groups`.
#[tracing::instrument(name = "groups", skip_all, fields(via = tracing::field::Empty))]
async fn resolve_overage(
    state: &AppState,
    conn: &Connection,
    provider: &crate::oidc::provider::Provider,
    identity: &Identity,
    tokens: &token::TokenResponse,
    cid: &CorrelationId,
) -> Result<Vec<String>, AppError> {
    let caller = graph::Caller::for_sign_in(&conn.config, tokens.access_token.is_some());
    tracing::Span::current().record("via", caller.kind());
    let failed = |source: graph::GraphError| AppError::Groups {
        connection: conn.config.id.clone(),
        name: conn.config.name.clone(),
        tenant: identity.tid.clone(),
        caller,
        source: Box::new(source),
    };
    let started = std::time::Instant::now();
    let target = graph::target(&conn.config.metadata_url, &provider.metadata).map_err(failed)?;
    let (bearer, who) = match (caller, &tokens.access_token) {
        (graph::Caller::Delegated, Some(access)) => (access.clone(), graph::Who::Me),
        _ => {
            let tid = identity
                .tid
                .as_deref()
                .ok_or(graph::GraphError::MissingClaim("tid"))
                .map_err(failed)?;
            let oid = identity
                .oid
                .as_deref()
                .ok_or(graph::GraphError::MissingClaim("oid"))
                .map_err(failed)?;
            let token = graph::app_token(
                &state.http,
                &state.graph_tokens,
                &graph::AppOnly {
                    conn: &conn.config,
                    metadata: &provider.metadata,
                    client_auth: provider.client_auth,
                    resource: &target.resource,
                    tid,
                    now: state.clock.now_unix(),
                },
            )
            .await
            .map_err(failed)?;
            (token, graph::Who::User(oid))
        }
    };
    let metrics = &state.metrics;
    let mut calls = 0u32;
    let mut on_call = |result: &'static str| {
        calls += 1;
        metrics
            .graph_requests
            .get_or_create(&crate::metrics::ResultLabels {
                connection: conn.config.id.clone(),
                result: result.to_owned(),
            })
            .inc();
    };
    let groups = graph::transitive_groups(
        &state.http,
        &target.base,
        who,
        &bearer,
        conn.config.groups,
        &mut on_call,
    )
    .await
    .map_err(failed)?;
    tracing::info!(
        user = %identity.user,
        connection = %conn.config.id,
        via = caller.kind(),
        groups = groups.len(),
        graph_calls = calls,
        took_ms = started.elapsed().as_millis() as u64,
        correlation_id = %cid.0,
        "group overage resolved through Microsoft Graph"
    );
    Ok(groups)
}

/// Whether this sign-in calls userinfo ([`Userinfo`]): always, never, or — the default off
/// Entra — when the ID token lacks a requested scope's claims and userinfo can be asked.
fn wants_userinfo(
    conn: &ConnectionConfig,
    provider: &crate::oidc::provider::Provider,
    claims: &crate::oidc::verifier::IdTokenClaims,
    tokens: &token::TokenResponse,
) -> bool {
    match conn.userinfo {
        Userinfo::Always => true,
        Userinfo::Never => false,
        Userinfo::WhenMissing => {
            let asked = |scope: &str| conn.scopes.iter().any(|s| s == scope);
            let missing = (asked("profile") && claims.name.is_none())
                || (asked("email") && claims.email.is_none());
            missing
                && provider
                    .metadata
                    .userinfo_endpoint
                    .as_deref()
                    .is_some_and(userinfo::is_secure)
                && tokens.access_token.is_some()
        }
    }
}

/// The code exchange with each of the connection's secrets in turn (newest first): during a
/// rotation the first may not be registered in Entra yet, or the old one may have expired.
/// Only a client-authentication refusal moves on — Entra does not consume the code then, so
/// the same code is sent again; any other answer (invalid_grant, a timeout) is final.
#[tracing::instrument(name = "token", skip_all, fields(attempts = tracing::field::Empty))]
async fn exchange_with_fallback(
    state: &AppState,
    conn: &Connection,
    provider: &crate::oidc::provider::Provider,
    code: &str,
    code_verifier: &str,
    cid: &CorrelationId,
) -> Result<token::TokenResponse, token::TokenError> {
    let attempts = crate::oidc::token::attempts(&conn.config);
    tracing::Span::current().record("attempts", attempts.len());
    let redirect_uri = state.config.redirect_uri();
    let mut refused: Vec<(&str, Option<u32>)> = Vec::new();
    let mut last = None;
    for (i, (label, credential)) in attempts.iter().enumerate() {
        let started = std::time::Instant::now();
        let result = token::exchange_code(
            &state.http,
            &CodeExchange {
                token_endpoint: &provider.metadata.token_endpoint,
                client_id: &conn.config.client_id,
                credential: *credential,
                client_auth: provider.client_auth,
                code,
                redirect_uri: &redirect_uri,
                code_verifier,
            },
        )
        .await;
        Metrics::observe(
            &state.metrics.token_exchange_duration,
            &conn.config.id,
            started.elapsed(),
        );
        match result {
            Err(token::TokenError::Refused { ref error, .. })
                if i + 1 < attempts.len() && token::is_client_auth_failure(error) =>
            {
                let label = label.unwrap_or("the credential");
                tracing::warn!(
                    connection = %conn.config.id,
                    secret = label,
                    aadsts = error.aadsts(),
                    error = %error.error,
                    correlation_id = %cid.0,
                    "client secret {label} was refused; trying the next configured secret"
                );
                refused.push((label, error.aadsts()));
                last = Some(result);
            }
            Ok(tokens) => {
                if i == 0 && conn.config.previous_credential.is_some() {
                    retire_previous(state, &conn.config.id, cid);
                }
                if !refused.is_empty() {
                    let worked = label.unwrap_or("the credential");
                    let gone = refused
                        .iter()
                        .map(|(l, code)| match code {
                            Some(c) => format!("{l} (AADSTS{c})"),
                            None => (*l).to_owned(),
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    state
                        .metrics
                        .client_secret_fallbacks
                        .get_or_create(&Metrics::connection(&conn.config.id))
                        .inc();
                    if conn.config.previous_credential.is_some() {
                        // A renewal link's credential refused, the one it replaced accepted:
                        // the new one is what to fix, and the old one stays until it works.
                        tracing::warn!(
                            connection = %conn.config.id,
                            secret = worked,
                            correlation_id = %cid.0,
                            "the credential the last setup link added ({gone}) was refused; {worked} worked — check that the new certificate or secret is still listed in Entra (Certificates & secrets) and has not expired; the previous one keeps working until the new one signs someone in"
                        );
                    } else {
                        tracing::warn!(
                            connection = %conn.config.id,
                            secret = worked,
                            correlation_id = %cid.0,
                            "client secret {gone} was refused; {worked} worked — remove the refused secret from the configuration and from Entra (Certificates & secrets)"
                        );
                    }
                }
                return Ok(tokens);
            }
            other => return other,
        }
    }
    // Only reached when every secret but the last was refused and the loop moved past it; the
    // last attempt always returns above. Kept total for an empty list (not configurable).
    last.unwrap_or(Err(token::TokenError::Malformed(
        "no client credential is configured".to_owned(),
    )))
}

/// The credential a rotation link added just worked: the one it replaced goes (issue 17),
/// in the background — the sign-in does not wait for the store — and every replica applies
/// the change at its next poll (`rotation::poll_stored`).
fn retire_previous(state: &AppState, id: &str, cid: &CorrelationId) {
    let (store, id, cid) = (state.store.clone(), id.to_owned(), cid.0.clone());
    let now = state.clock.now_unix();
    tokio::spawn(async move {
        match crate::session::setup_links::retire_previous(&store, &id, now).await {
            Ok(Some(link)) => tracing::info!(
                target: "entrance::audit",
                event = "previous_credential_removed",
                connection = %id,
                link = %link,
                correlation_id = %cid,
                "the credential the last setup link added signed a user in; the one it replaced is no longer used — delete it in Entra (Certificates & secrets)"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                connection = %id,
                error = %e,
                "could not remove the previous credential; the next sign-in tries again"
            ),
        }
    });
}

/// OpenID Connect Core §3.1.3.7, with one JWKS refetch when the token names a key we have
/// not seen (the IdP rotated its keys).
#[tracing::instrument(name = "id_token", skip_all)]
async fn validate_id_token(
    state: &AppState,
    conn: &Connection,
    login: &PendingLogin,
    id_token: &str,
) -> Result<crate::oidc::verifier::IdTokenClaims, AppError> {
    let reject = |rejection: Rejection| AppError::IdToken {
        connection: conn.config.id.clone(),
        rejection,
    };
    let kid = verifier::peek_kid(id_token).map_err(reject)?;
    let tid = verifier::peek_tid(id_token);
    let (provider, keys) = conn
        .keys_for_token(&state.http, kid.as_deref(), tid.as_deref())
        .await
        .map_err(|reason| AppError::not_ready(&conn.config, reason))?;
    let expectations = Expectations {
        issuer: &provider.issuer,
        allowed_tenants: &conn.config.allowed_tenants,
        client_id: &conn.config.client_id,
        trusted_audiences: &conn.config.trusted_audiences,
        allowed_algs: &provider.allowed_algs,
        clock_skew: state.config.clock_skew,
        now: crate::clock::now_unix(),
        nonce: &login.nonce,
    };
    verifier::verify_id_token(id_token, &keys, &expectations).map_err(reject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_code_nor_state() {
        let params: CallbackParams =
            serde_urlencoded::from_str("state=st4te-s3cret&code=c0de-s3cret&iss=https%3A%2F%2Fi")
                .expect("parses");
        let text = format!("{params:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("https://i"), "{text}");
    }

    #[test]
    fn an_idp_error_cannot_forge_a_log_line() {
        let forged =
            "denied\n2026-11-29T10:00:00Z  INFO entrance::audit: signed in user=admin\u{1b}[0m";
        let text = escape_controls(forged);
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("\\n2026"), "{text}");
        assert_eq!(
            escape_controls("AADSTS50105: ok – Ünïcode"),
            "AADSTS50105: ok – Ünïcode"
        );
    }
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
        ))]
        /// Any query or form body parses to parameters or a typed error, never a panic.
        #[test]
        fn callback_parameters_never_panic(raw in ".{0,256}") {
            let _ = serde_urlencoded::from_str::<CallbackParams>(&raw);
        }

        #[test]
        fn callback_parameters_from_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = serde_urlencoded::from_bytes::<CallbackParams>(&raw);
        }

        #[test]
        fn well_formed_parameters_round_trip(state in "[A-Za-z0-9_-]{1,64}", code in "[A-Za-z0-9._~-]{1,128}") {
            let q = format!("state={state}&code={code}&session_state=x");
            let p: CallbackParams = serde_urlencoded::from_str(&q).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(p.state.as_deref(), Some(state.as_str()));
            prop_assert_eq!(p.code.as_deref(), Some(code.as_str()));
            prop_assert!(!p.relayed);
        }
    }
}
