//! The mock's token endpoint: client authentication (secrets and client assertions), the
//! authorization-code and client-credentials grants, and the ID tokens it signs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use crate::certificates;
use crate::entra::{self, form_urldecode, json_response, token_error};
use crate::keys::{self, SignWith};
use crate::{Behaviour, CodeRecord, Shared, Signing, generate_key_blocking, is_multi_tenant};

use super::*;

pub(super) async fn token(
    State(s): S,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Params::parse(None, &body);
    let call = crate::TokenCall {
        grant_type: form.get("grant_type").map(str::to_owned),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        code_verifier: form.get("code_verifier").map(str::to_owned),
        client_auth: if form.get("client_assertion").is_some() {
            Some("client_assertion")
        } else if form.get("client_secret").is_some()
            || headers.contains_key(axum::http::header::AUTHORIZATION)
        {
            Some("client_secret")
        } else {
            None
        },
    };
    let behaviour = {
        let mut inner = s.lock();
        inner.token_calls.push(call);
        inner.counters.token += 1;
        *inner.token_by_authority.entry(tenant.clone()).or_default() += 1;
        inner.behaviour.clone()
    };
    if let Some(r) = pre_fault(&s, &behaviour.token_fault).await {
        return r;
    }
    if let Some(te) = &behaviour.token_error {
        let status = StatusCode::from_u16(te.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return post_fault(&behaviour.token_fault, json_response(status, &te.body));
    }
    // The user's own tenant (`Behaviour::user_tenant`) exists too: an app asks it for
    // app-only tokens in the customer's directory (docs/reference/ENTRA-2.md §7).
    if !s.serves(&tenant) && behaviour.user_tenant.as_deref() != Some(tenant.as_str()) {
        return unknown_tenant_json(&tenant);
    }
    let resp = token_inner(&s, &behaviour, &headers, &body).await;
    post_fault(&behaviour.token_fault, resp)
}

pub(super) async fn token_inner(
    s: &Shared,
    behaviour: &Behaviour,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let form = Params::parse(None, body);
    let Some(grant_type) = form.get("grant_type") else {
        return token_error(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    // Reject unknown grant types before looking at credentials, as Entra does.
    if !matches!(
        grant_type,
        "authorization_code" | "client_credentials" | "refresh_token"
    ) {
        return token_error(
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let client_id = match authenticate_client(s, behaviour, headers, &form) {
        Ok(id) => id,
        Err(f) => return f.into_response(),
    };
    if grant_type == "client_credentials" {
        return client_credentials(s, behaviour, &form, &client_id);
    }
    if grant_type == "refresh_token" {
        return refresh(s, behaviour, &form, &client_id);
    }
    authorization_code(s, behaviour, &form, &client_id).await
}

/// A token-endpoint refusal, rendered by [`token_error`] as Entra's JSON error body.
#[derive(Debug)]
pub(super) struct TokenFailure {
    error: &'static str,
    code: u32,
    text: String,
}

impl TokenFailure {
    fn new(error: &'static str, code: u32, text: impl Into<String>) -> Self {
        TokenFailure {
            error,
            code,
            text: text.into(),
        }
    }
}

impl IntoResponse for TokenFailure {
    fn into_response(self) -> Response {
        token_error(self.error, self.code, &self.text)
    }
}

/// Client authentication by `client_secret_post` or `client_secret_basic`. Returns the
/// authenticated client_id, or why not.
pub(super) fn authenticate_client(
    s: &Shared,
    behaviour: &Behaviour,
    headers: &HeaderMap,
    form: &Params,
) -> Result<String, TokenFailure> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => parse_basic(v)?,
    };
    let form_secret = form.get("client_secret");
    if basic.is_some() && form_secret.is_some() {
        return Err(TokenFailure::new(
            "invalid_request",
            900144,
            "Only one client authentication method may be used (client_secret_basic and client_secret_post were both sent).",
        ));
    }
    let (client_id, secret) = match basic {
        Some((id, secret)) => {
            if let Some(form_id) = form.get("client_id")
                && form_id != id
            {
                return Err(TokenFailure::new(
                    "invalid_request",
                    900144,
                    "The client_id in the request body does not match the one in the Authorization header.",
                ));
            }
            (id, Some(secret))
        }
        None => {
            let Some(id) = form.get("client_id") else {
                return Err(TokenFailure::new(
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'client_id'.",
                ));
            };
            (id.to_owned(), form_secret.map(str::to_owned))
        }
    };
    if client_id != s.client_id {
        return Err(TokenFailure::new(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                s.tenant_id
            ),
        ));
    }
    if let Some(assertion) = form.get("client_assertion") {
        // private_key_jwt (RFC 7523 §2.2): the assertion is the only credential allowed.
        if secret.is_some() {
            return Err(TokenFailure::new(
                "invalid_request",
                900144,
                "Only one client authentication method may be used (client_assertion and a client secret were both sent).",
            ));
        }
        // Issued by someone else than the app itself: a platform's token (workload identity).
        if crate::federated::is_federated(assertion, &client_id) {
            return authenticate_federated(s, form, assertion, client_id);
        }
        return authenticate_assertion(s, behaviour, form, assertion, client_id);
    }
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Err(TokenFailure::new(
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    // Compare against every secret without stopping early, in constant time per secret.
    let matches = |secrets: &[String]| {
        secrets
            .iter()
            .fold(subtle::Choice::from(0u8), |acc, known| {
                acc | known.as_bytes().ct_eq(secret.as_bytes())
            })
    };
    if bool::from(matches(&behaviour.expired_client_secrets)) {
        return Err(TokenFailure::new(
            "invalid_client",
            7000222,
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
            ),
        ));
    }
    let ok = matches(&s.client_secrets);
    if !bool::from(ok) {
        return Err(TokenFailure::new(
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ));
    }
    Ok(client_id)
}

/// Verifies a federated assertion (workload identity federation) against the app's federated
/// identity credentials and the issuer's key.
pub(super) fn authenticate_federated(
    s: &Shared,
    form: &Params,
    assertion: &str,
    client_id: String,
) -> Result<String, TokenFailure> {
    if form.get("client_assertion_type") != Some(crate::x509::CLIENT_ASSERTION_TYPE) {
        return Err(TokenFailure::new(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_assertion_type'.",
        ));
    }
    let inner = s.lock();
    crate::federated::verify(
        &inner.federated_issuers,
        &inner.federated_credentials,
        assertion,
        keys::now_unix() as i64,
    )
    .map_err(|r| TokenFailure::new(r.error, r.code, r.text))?;
    Ok(client_id)
}

/// Verifies a client assertion against the registered certificates and remembers its `jti`.
pub(super) fn authenticate_assertion(
    s: &Shared,
    behaviour: &Behaviour,
    form: &Params,
    assertion: &str,
    client_id: String,
) -> Result<String, TokenFailure> {
    let now = time::OffsetDateTime::now_utc();
    let mut inner = s.lock();
    let accepted = certificates::verify_assertion(
        &inner.client_certificates,
        form.get("client_assertion_type"),
        assertion,
        &s.token_endpoint(),
        &client_id,
        now,
        now + time::Duration::seconds(behaviour.certificate_clock_offset_secs),
    )
    .map_err(|f| TokenFailure::new(f.error, f.code, f.text))?;
    let now_ts = now.unix_timestamp();
    inner.seen_assertions.retain(|_, exp| *exp > now_ts);
    if inner.seen_assertions.contains_key(&accepted.jti) {
        return Err(TokenFailure::new(
            "invalid_client",
            50012,
            format!(
                "The client assertion with jti '{}' was already used; send a new assertion with every request.",
                accepted.jti
            ),
        ));
    }
    inner.seen_assertions.insert(accepted.jti, accepted.exp);
    Ok(client_id)
}

/// Parses `Authorization: Basic …`: base64, split at the first ':', then form-urldecode each
/// part (RFC 6749 §2.3.1; the OpenID conformance suite decodes the same way). Other schemes
/// are ignored (`Ok(None)`).
pub(super) fn parse_basic(value: &HeaderValue) -> Result<Option<(String, String)>, TokenFailure> {
    let bad = || {
        TokenFailure::new(
            "invalid_client",
            7000218,
            "The Authorization header carries malformed Basic client credentials.",
        )
    };
    let Ok(v) = value.to_str() else {
        return Err(bad());
    };
    let Some((scheme, rest)) = v.trim().split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    match (form_urldecode(id), form_urldecode(secret)) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        _ => Err(bad()),
    }
}

pub(super) fn client_credentials(
    s: &Shared,
    behaviour: &Behaviour,
    form: &Params,
    client_id: &str,
) -> Response {
    let scope = form.get("scope").unwrap_or_default();
    if !scope.ends_with("/.default") {
        return token_error(
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. The scope must end in '/.default'."
            ),
        );
    }
    // A token for an API registered in the tenant (an App ID URI): a signed v2 app-only JWT
    // like Entra's (docs/reference/ENTRA-2.md §1); anything else (Graph) stays opaque, as a
    // Graph token is to everyone but Graph.
    if let Some(missing) = scope
        .strip_suffix("/.default")
        .filter(|r| behaviour.missing_apis.iter().any(|m| m == r))
    {
        return resource_not_found(missing, &s.tenant_id);
    }
    let access_token = match scope.strip_suffix("/.default") {
        Some(audience) if audience.starts_with("api://") => {
            let roles: Vec<&str> = behaviour.app_roles.iter().map(String::as_str).collect();
            match crate::access::sign(
                s,
                &crate::AccessToken::app_only(audience, client_id, &roles),
            ) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "mock IdP could not sign an access token");
                    return json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &entra::token_error_body(
                            "server_error",
                            50000,
                            "The mock IdP could not sign the access token.",
                        ),
                    );
                }
            }
        }
        _ => {
            let token = format!("mock-app-token.{}", keys::random_b64(32));
            s.lock().graph_app_tokens.insert(token.clone());
            token
        }
    };
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access_token,
        }),
    )
}

// One piece on purpose: the code redemption's checks in Entra's order (code, client binding,
// redirect URI, PKCE), then the token response; which error wins is what tests assert.
pub(super) async fn authorization_code(
    s: &Shared,
    behaviour: &Behaviour,
    form: &Params,
    client_id: &str,
) -> Response {
    let Some(code) = form.get("code") else {
        return token_error(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code'.",
        );
    };
    // A code is spent by its first redemption attempt (past client authentication),
    // whatever the outcome, so a retry after any failure gets AADSTS54005.
    let (record, lifetime) = {
        let mut inner = s.lock();
        let lifetime = inner.code_lifetime;
        let record = inner.codes.remove(code);
        let spent_before = !inner.spent_codes.insert(code.to_owned());
        match record {
            Some(r) => (r, lifetime),
            None if spent_before => {
                return token_error(
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
                );
            }
            None => {
                return token_error(
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed.",
                );
            }
        }
    };
    if record.client_id != client_id {
        return token_error(
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed. The code was issued to another client.",
        );
    }
    if record.created_at.elapsed() > lifetime {
        return token_error(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        );
    }
    match form.get("redirect_uri") {
        None => {
            return token_error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'redirect_uri'.",
            );
        }
        Some(r) if r != record.redirect_uri => {
            return token_error(
                "invalid_grant",
                70000,
                &format!(
                    "Provided grant is invalid or malformed. The redirect URI '{r}' does not match the redirect URI used to obtain the authorization code."
                ),
            );
        }
        Some(_) => {}
    }
    if let Some((challenge, method)) = &record.pkce {
        let verified = form.get("code_verifier").is_some_and(|verifier| {
            let expected = if method == "S256" {
                URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
            } else {
                verifier.to_owned()
            };
            bool::from(expected.as_bytes().ct_eq(challenge.as_bytes()))
        });
        if !verified {
            return token_error(
                "invalid_grant",
                50148,
                "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
            );
        }
    }

    if let Some((missing, _)) =
        api_scope(&record.scope).filter(|(r, _)| behaviour.missing_apis.contains(r))
    {
        return resource_not_found(&missing, &s.tenant_id);
    }
    let mut body = match access_and_refresh(s, behaviour, &record.scope, client_id) {
        Ok(body) => body,
        Err(e) => return signing_failed(&e),
    };
    if !behaviour.omit_id_token {
        match id_token(s, behaviour, &record).await {
            Ok(t) => {
                s.lock().issued.push(t.clone());
                body.insert("id_token".into(), json!(t));
            }
            Err(e) => {
                tracing::error!(error = %e, "mock IdP could not sign an ID token");
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &entra::token_error_body(
                        "server_error",
                        50000,
                        "The mock IdP could not sign the ID token.",
                    ),
                );
            }
        }
    }
    json_response(StatusCode::OK, &Value::Object(body))
}

/// The token response's members but the ID token, for `scope`: an access token — a signed JWT
/// for the API a resource scope names (`api://backend/.default`), else an opaque one for
/// userinfo, as Entra's Graph token is to everyone but Graph — and, when `offline_access` is
/// among the scopes, a new refresh token.
fn access_and_refresh(
    s: &Shared,
    behaviour: &Behaviour,
    scope: &str,
    client_id: &str,
) -> Result<Map<String, Value>, keys::KeyError> {
    let (access_token, lifetime) = match api_scope(scope) {
        Some((audience, scp)) => {
            let lifetime = behaviour.access_token_lifetime_secs.unwrap_or(3599);
            let mut t = crate::AccessToken::delegated(&audience, &scp);
            t.client_id = client_id.to_owned();
            t.lifetime_secs = lifetime;
            let token = crate::access::sign(s, &t)?;
            (token, lifetime)
        }
        None => {
            let token = format!("mock-access-token.{}", keys::random_b64(32));
            let mut inner = s.lock();
            inner.issued.push(token.clone());
            inner
                .userinfo
                .insert(token.clone(), userinfo_answer(s, behaviour));
            (token, 3599)
        }
    };
    let mut body = Map::new();
    body.insert("token_type".into(), json!("Bearer"));
    body.insert("scope".into(), json!(scope));
    body.insert("expires_in".into(), json!(lifetime));
    body.insert("ext_expires_in".into(), json!(lifetime));
    body.insert("access_token".into(), json!(access_token));
    if scope.split_whitespace().any(|w| w == "offline_access") {
        let refresh_token = format!("mock-refresh-token.{}", keys::random_b64(48));
        let mut inner = s.lock();
        inner.issued.push(refresh_token.clone());
        inner.refresh_tokens.insert(
            refresh_token.clone(),
            crate::RefreshRecord {
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
            },
        );
        body.insert("refresh_token".into(), json!(refresh_token));
    }
    Ok(body)
}

/// The API the scopes ask a token for, as Entra reads them (one resource per token): the first
/// `{resource}/{name}` scope that is not an OpenID Connect one, with the names asked of that
/// resource as `scp` (`.default`, all the app's consented scopes, as `access_as_user`).
pub(super) fn api_scope(scope: &str) -> Option<(String, String)> {
    let mut resource: Option<&str> = None;
    let mut names = Vec::new();
    for word in scope.split_whitespace() {
        let Some((res, name)) = word.rsplit_once('/') else {
            continue;
        };
        if !res.contains("://") || resource.is_some_and(|r| r != res) {
            continue;
        }
        resource = Some(res);
        names.push(if name == ".default" {
            "access_as_user"
        } else {
            name
        });
    }
    resource.map(|r| (r.to_owned(), names.join(" ")))
}

/// The refresh-token grant (RFC 6749 §6): the token is spent and a new one issued (rotation);
/// a revoked one answers AADSTS50173, as Entra does after a password reset.
pub(super) fn refresh(
    s: &Shared,
    behaviour: &Behaviour,
    form: &Params,
    client_id: &str,
) -> Response {
    s.lock().counters.refresh += 1;
    if let Some(te) = &behaviour.refresh_error {
        let status = StatusCode::from_u16(te.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_response(status, &te.body);
    }
    let Some(presented) = form.get("refresh_token") else {
        return token_error(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'refresh_token'.",
        );
    };
    let record = {
        let mut inner = s.lock();
        if inner.revoked_refresh_tokens.contains(presented) {
            return token_error(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
            );
        }
        match inner.refresh_tokens.remove(presented) {
            Some(r) if r.client_id == client_id => r,
            Some(r) => {
                inner.refresh_tokens.insert(presented.to_owned(), r);
                return token_error(
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed. The refresh token was issued to another client.",
                );
            }
            None => {
                return token_error(
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed. (The mock IdP spends a refresh token when it is redeemed: send the one the last refresh returned.)",
                );
            }
        }
    };
    // The scopes asked now (a subset of the original ones, RFC 6749 §6), else the original.
    let scope = form
        .get("scope")
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or(record.scope.clone());
    // The new refresh token keeps the original grant's scopes, offline_access included.
    let mut scope_with_offline = scope.clone();
    if !scope.split_whitespace().any(|w| w == "offline_access")
        && record
            .scope
            .split_whitespace()
            .any(|w| w == "offline_access")
    {
        scope_with_offline.push_str(" offline_access");
    }
    match access_and_refresh(s, behaviour, &scope_with_offline, client_id) {
        Ok(body) => json_response(StatusCode::OK, &Value::Object(body)),
        Err(e) => signing_failed(&e),
    }
}

/// Entra's answer for a resource whose service principal the tenant does not have.
fn resource_not_found(resource: &str, tenant: &str) -> Response {
    token_error(
        "invalid_resource",
        500011,
        &format!(
            "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
        ),
    )
}

/// Entra's `server_error` for a token the mock could not sign.
fn signing_failed(e: &keys::KeyError) -> Response {
    tracing::error!(error = %e, "mock IdP could not sign an access token");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &entra::token_error_body(
            "server_error",
            50000,
            "The mock IdP could not sign the access token.",
        ),
    )
}

/// The ID token's claims before [`Behaviour`] edits (`tests/fixtures/entra/id_token.claims.json`,
/// <https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference>). `tid` is
/// the user's tenant: the mock's own, or for a multi-tenant sign-in [`Behaviour::user_tenant`];
/// `iss` always names that same tenant, as Entra's does.
pub(super) fn id_token_claims(
    s: &Shared,
    record: &CodeRecord,
    tid: &str,
    behaviour_groups: Option<usize>,
) -> Map<String, Value> {
    let u = &s.user;
    let iat = keys::now_unix();
    let mut c = Map::new();
    c.insert("aud".into(), json!(record.client_id));
    c.insert("iss".into(), json!(format!("{}/{tid}/v2.0", s.base_url)));
    c.insert("iat".into(), json!(iat));
    c.insert("nbf".into(), json!(iat));
    c.insert("exp".into(), json!(iat + 3600));
    c.insert(
        "aio".into(),
        json!(format!("AWQAm/8ZAAAA{}", keys::random_b64(36))),
    );
    if let Some(email) = &u.email {
        c.insert("email".into(), json!(email));
    }
    if let Some(v) = u.email_verified {
        c.insert("email_verified".into(), json!(v));
    }
    c.insert("login_hint".into(), json!(u.login_hint));
    c.insert("name".into(), json!(u.name));
    if let Some(nonce) = &record.nonce {
        c.insert("nonce".into(), json!(nonce));
    }
    c.insert("oid".into(), json!(u.oid));
    c.insert("preferred_username".into(), json!(u.preferred_username));
    c.insert(
        "rh".into(),
        json!(format!("1.AAAA{}.", keys::random_b64(24))),
    );
    c.insert("sid".into(), json!(u.sid));
    c.insert("sub".into(), json!(u.sub));
    c.insert("tid".into(), json!(tid));
    c.insert("uti".into(), json!(keys::random_b64(16)));
    c.insert("ver".into(), json!("2.0"));
    match behaviour_groups {
        // Entra beyond 200 groups in a JWT: no `groups`, the overage markers instead, with the
        // retired Azure AD Graph URL (tests/fixtures/entra/id_token.overage.claims.json).
        Some(n) if n > crate::JWT_GROUPS_LIMIT => {
            c.insert("_claim_names".into(), json!({"groups": "src1"}));
            c.insert(
                "_claim_sources".into(),
                json!({"src1": {"endpoint": format!(
                    "https://graph.windows.net/{tid}/users/{}/getMemberObjects",
                    u.oid
                )}}),
            );
        }
        Some(n) => {
            let groups: Vec<String> = (1..=n).map(crate::overage_group).collect();
            if !groups.is_empty() {
                c.insert("groups".into(), json!(groups));
            }
        }
        None if !u.groups.is_empty() => {
            c.insert("groups".into(), json!(u.groups));
        }
        None => {}
    }
    if !u.roles.is_empty() {
        c.insert("roles".into(), json!(u.roles));
    }
    c
}

pub(super) async fn id_token(
    s: &Shared,
    behaviour: &Behaviour,
    record: &CodeRecord,
) -> Result<String, keys::KeyError> {
    let tid = match &behaviour.user_tenant {
        Some(t) if is_multi_tenant(&record.authority) => t.as_str(),
        _ => s.tenant_id.as_str(),
    };
    let mut claims = id_token_claims(s, record, tid, behaviour.group_count);
    for (k, v) in &behaviour.claims_set {
        claims.insert(k.clone(), v.clone());
    }
    for k in &behaviour.claims_remove {
        claims.remove(k);
    }
    let (current, header_kid, mut decoy) = {
        let inner = s.lock();
        // A tenant's or the app's own key signs instead of the current one when asked for
        // (made by `MockIdp::set_behaviour`; the current key if it is missing).
        let own = match &behaviour.signing {
            Signing::TenantKey(tenant) => inner
                .tenant_keys
                .get(tenant.as_deref().unwrap_or(tid))
                .cloned(),
            Signing::AppKey => inner.app_key.clone(),
            _ => None,
        };
        let current = own.unwrap_or_else(|| Arc::clone(&inner.current));
        // For UnpublishedKey the header names a key the RP can find, so only the signature
        // check can catch the forgery.
        let header_kid = if inner.published.iter().any(|k| k.kid == current.kid) {
            current.kid.clone()
        } else {
            inner
                .published
                .first()
                .map(|k| k.kid.clone())
                .unwrap_or_else(|| current.kid.clone())
        };
        (current, header_kid, inner.decoy.clone())
    };
    if matches!(behaviour.signing, Signing::UnpublishedKey) && decoy.is_none() {
        let key = generate_key_blocking()
            .await
            .map_err(|e| keys::KeyError::Encode(e.to_string()))?;
        s.lock().decoy = Some(Arc::clone(&key));
        decoy = Some(key);
    }
    let kid_for_header = match behaviour.signing {
        Signing::UnpublishedKey => header_kid,
        _ => current.kid.clone(),
    };
    let with = SignWith {
        signing: &behaviour.signing,
        current: &current,
        unpublished: decoy.as_deref(),
        header_kid: &kid_for_header,
    };
    keys::build_jwt(
        &claims,
        &behaviour.header_set,
        &behaviour.header_remove,
        &with,
    )
}
