//! HTTP endpoints of the mock IdP: discovery, JWKS, authorize, token, logout, and the
//! `/_mock/…` control API, plus the transport faults that [`Fault`] switches in.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use super::certificates;
use super::entra::{self, JSON_UTF8, form_urldecode, json_response, token_error};
use super::keys::{self, SignWith};
use super::{
    Behaviour, CodeRecord, Fault, Shared, Signing, generate_key_blocking, install_key,
    is_multi_tenant, publish_current,
};

type S = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(metadata),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize).post(authorize),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/oauth2/v2.0/logout", get(logout).post(logout))
        .route("/oidc/userinfo", get(userinfo).post(userinfo))
        .route("/_mock/behaviour", get(get_behaviour).put(put_behaviour))
        .route("/_mock/counters", get(get_counters))
        .route("/_mock/rotate", post(rotate))
        .route("/_mock/publish", post(publish))
        .route(
            "/_mock/redirect_uris",
            get(get_redirect_uris).put(put_redirect_uris),
        )
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------
// Request parameters

/// Form/query parameters in arrival order; the first occurrence of a name wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            v.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        v.extend(url::form_urlencoded::parse(body).into_owned());
        Params(v)
    }

    /// The value, with an empty value treated as absent (Entra does the same for e.g. an
    /// empty `state` or `nonce`).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Faults

/// Applies the faults that replace the response. `None` means: answer normally (then pass
/// the answer through [`post_fault`]).
async fn pre_fault(shared: &Shared, fault: &Fault) -> Option<Response> {
    match fault {
        Fault::None | Fault::WrongContentType => None,
        Fault::Delay(ms) => {
            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
            None
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some((status, format!("mock IdP fault: status {code}\n")).into_response())
        }
        Fault::Stall => {
            // Hold the request until shutdown; other requests run on their own tasks.
            let mut rx = shared.shutdown.clone();
            let _ = rx.wait_for(|stopped| *stopped).await;
            Some(StatusCode::SERVICE_UNAVAILABLE.into_response())
        }
        Fault::InvalidJson => Some(with_content_type(
            (StatusCode::OK, "{\"issuer\": <html>not json").into_response(),
            JSON_UTF8,
        )),
        Fault::Oversized(n) => Some(with_content_type(
            (StatusCode::OK, oversized_body(*n)).into_response(),
            JSON_UTF8,
        )),
        Fault::Redirect(to) => {
            let mut resp = StatusCode::FOUND.into_response();
            match HeaderValue::from_str(to) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                    Some(resp)
                }
                Err(_) => Some(
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "mock IdP: bad redirect fault URL\n",
                    )
                        .into_response(),
                ),
            }
        }
    }
}

/// Applies the faults that alter a normal response.
fn post_fault(fault: &Fault, resp: Response) -> Response {
    match fault {
        Fault::WrongContentType => with_content_type(resp, "text/html; charset=utf-8"),
        _ => resp,
    }
}

/// A JSON-looking body of exactly `n` bytes (when `n` leaves room for the wrapper).
fn oversized_body(n: usize) -> String {
    const HEAD: &str = "{\"padding\":\"";
    const TAIL: &str = "\"}";
    if n < HEAD.len() + TAIL.len() {
        return "x".repeat(n);
    }
    let mut s = String::with_capacity(n);
    s.push_str(HEAD);
    s.push_str(&"x".repeat(n - HEAD.len() - TAIL.len()));
    s.push_str(TAIL);
    s
}

fn with_content_type(mut resp: Response, ct: &'static str) -> Response {
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

/// Headers Entra sends on discovery and keys documents.
fn discovery_response(body: &Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400, private"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

fn unknown_tenant_json(tenant: &str) -> Response {
    token_error(
        "invalid_tenant",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Discovery and keys

async fn metadata(
    State(s): S,
    Path(tenant): Path<String>,
    Query(q): Query<AppIdQuery>,
) -> Response {
    let behaviour = {
        let mut inner = s.lock();
        inner.counters.metadata += 1;
        inner.behaviour.clone()
    };
    if let Some(r) = pre_fault(&s, &behaviour.metadata_fault).await {
        return r;
    }
    if !s.serves(&tenant) {
        return unknown_tenant_json(&tenant);
    }
    let base = &s.base_url;
    // Endpoints stay under the authority the document was fetched from (as in
    // tests/fixtures/entra/openid-configuration.{tenant,common,organizations}.json).
    let t = &tenant;
    let multi = is_multi_tenant(&tenant);
    let issuer = behaviour.metadata_issuer.unwrap_or_else(|| {
        if multi {
            // The literal placeholder, not percent-encoded, exactly as Entra publishes it.
            format!("{base}/{{tenantid}}/v2.0")
        } else {
            s.issuer()
        }
    });
    // Entra's field set and order (tests/fixtures/entra/openid-configuration.tenant.json).
    // URLs that Entra points at other hosts (userinfo on Graph) are pointed at the mock so
    // nothing leaves loopback; the bare host-name strings are kept as Entra has them.
    let doc = json!({
        "token_endpoint": format!("{base}/{t}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        // `?appid=` on the metadata URL carries over to the keys URL (app-specific signing
        // keys, https://learn.microsoft.com/entra/identity-platform/signing-key-rollover).
        "jwks_uri": match &q.appid {
            Some(appid) => format!(
                "{base}/{t}/discovery/v2.0/keys?appid={}",
                url::form_urlencoded::byte_serialize(appid.as_bytes()).collect::<String>()
            ),
            None => format!("{base}/{t}/discovery/v2.0/keys"),
        },
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{t}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{t}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{t}/oauth2/v2.0/logout"),
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
            "name", "tid", "ver", "at_hash", "c_hash", "email"
        ],
        "kerberos_endpoint": format!("{base}/{t}/kerberos"),
        "tenant_region_scope": if multi { Value::Null } else { json!("NA") },
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    post_fault(&behaviour.metadata_fault, discovery_response(&doc))
}

/// `?appid=<client_id>` on the metadata and keys URLs.
#[derive(serde::Deserialize)]
struct AppIdQuery {
    appid: Option<String>,
}

async fn jwks(State(s): S, Path(tenant): Path<String>, Query(q): Query<AppIdQuery>) -> Response {
    let (fault, published, replacement, key_issuer, tenant_key, app_key) = {
        let mut inner = s.lock();
        inner.counters.jwks += 1;
        *inner.jwks_by_authority.entry(tenant.clone()).or_default() += 1;
        (
            inner.behaviour.jwks_fault.clone(),
            inner.published.clone(),
            inner.behaviour.jwks_override.clone(),
            inner.behaviour.key_issuer.clone(),
            inner.tenant_keys.get(&tenant).cloned(),
            inner.app_key.clone(),
        )
    };
    if let Some(r) = pre_fault(&s, &fault).await {
        return r;
    }
    // Entra publishes keys for every tenant (a tenant's JWKS is the common keys plus any
    // of its own); the mock treats every GUID as an existing tenant here.
    if !s.serves(&tenant) && !crate::x509::is_guid(&tenant) {
        return unknown_tenant_json(&tenant);
    }
    // Entra's keys carry the templated issuer `{base}/{tenantid}/v2.0` (literal
    // placeholder), as in tests/fixtures/entra/jwks.example.json; the RP must substitute tid.
    let key_issuer = key_issuer.unwrap_or_else(|| format!("{}/{{tenantid}}/v2.0", s.base_url));
    if let Some(doc) = replacement {
        return post_fault(&fault, discovery_response(&doc));
    }
    let mut keys: Vec<Value> = published.iter().map(|k| k.jwk(&key_issuer)).collect();
    // A tenant's own key carries that tenant's literal issuer.
    if let Some(key) = tenant_key {
        keys.push(key.jwk(&format!("{}/{tenant}/v2.0", s.base_url)));
    }
    if let (Some(key), Some(appid)) = (app_key, &q.appid)
        && *appid == s.client_id
    {
        keys.push(key.jwk(&key_issuer));
    }
    post_fault(&fault, discovery_response(&json!({ "keys": keys })))
}

/// `GET`/`POST /oidc/userinfo`: Entra's userinfo lives on Microsoft Graph
/// (`https://graph.microsoft.com/oidc/userinfo`) and answers a Graph access token with the
/// user's `sub` (the ID token's), `name` and `email`; the mock answers its own access tokens
/// the same way (kept local so a relying party never calls out of loopback). Anything else
/// gets Graph's 401.
async fn userinfo(State(s): S, headers: HeaderMap) -> Response {
    let fault = {
        let mut inner = s.lock();
        inner.counters.userinfo += 1;
        inner.behaviour.userinfo_fault.clone()
    };
    if let Some(r) = pre_fault(&s, &fault).await {
        return r;
    }
    let answer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| s.lock().userinfo.get(token).cloned());
    let Some(answer) = answer else {
        let mut resp = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token is empty."}}),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return resp;
    };
    post_fault(&fault, json_response(StatusCode::OK, &answer))
}

/// What userinfo answers for the user a token is issued to, with [`Behaviour`]'s edits.
fn userinfo_answer(s: &Shared, behaviour: &Behaviour) -> Value {
    let u = &s.user;
    let mut c = Map::new();
    c.insert("sub".into(), json!(u.sub));
    c.insert("name".into(), json!(u.name));
    if let Some(email) = &u.email {
        c.insert("email".into(), json!(email));
    }
    for (k, v) in &behaviour.userinfo_claims_set {
        c.insert(k.clone(), v.clone());
    }
    Value::Object(c)
}

// ---------------------------------------------------------------------------------------
// Authorize

#[derive(Clone, Copy, PartialEq, Eq)]
enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

/// Sends parameters back to the client the way `mode` says. `redirect_uri` was already
/// checked against the registered list.
fn to_client(redirect_uri: &str, mode: ResponseMode, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => {
            return entra::error_page(
                50011,
                &format!("The redirect URI '{redirect_uri}' is not a valid absolute URI."),
            );
        }
    };
    match mode {
        ResponseMode::FormPost => return entra::form_post_page(redirect_uri, params),
        ResponseMode::Query => {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        ResponseMode::Fragment => {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in params {
                ser.append_pair(k, v);
            }
            url.set_fragment(Some(&ser.finish()));
        }
    }
    let mut resp = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(url.as_str()) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => return entra::error_page(50011, "The redirect URI cannot be used."),
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An error sent back to the client (the client and redirect URI are trusted by now).
fn authorize_error_redirect(
    redirect_uri: &str,
    mode: ResponseMode,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(st) = state {
        params.push(("state", st));
    }
    to_client(redirect_uri, mode, &params)
}

fn aadsts_text(code: u32, text: &str) -> String {
    format!(
        "AADSTS{code}: {text} Trace ID: {} Correlation ID: {} Timestamp: {}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        entra::entra_timestamp()
    )
}

/// The field [`entra::continue_page`]'s form adds to the authorize request it posts back.
const CONTINUE_FIELD: &str = "mock_continue";

async fn authorize(
    State(s): S,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let (redirect_uris, behaviour) = {
        let mut inner = s.lock();
        inner.counters.authorize += 1;
        (inner.redirect_uris.clone(), inner.behaviour.clone())
    };
    if !s.serves(&tenant) {
        return entra::error_page(
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let p = Params::parse(query.as_deref(), &body);

    // Client and redirect URI first: until both are trusted, errors stay on an Entra page.
    let Some(client_id) = p.get("client_id") else {
        return entra::error_page(
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    if client_id != s.client_id {
        return entra::error_page(
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                s.tenant_id
            ),
        );
    }
    // Entra may pick a registered URI when none is sent; the mock insists, since an RP that
    // omits it would break on a multi-URI registration.
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return entra::error_page(
            900144,
            "The request body must contain the following parameter: 'redirect_uri'.",
        );
    };
    if !redirect_uris.iter().any(|r| r == redirect_uri) {
        return entra::error_page(
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal."
            ),
        );
    }

    let state = p.get("state");
    let mode = match p.get("response_mode") {
        None | Some("query") => ResponseMode::Query,
        Some("fragment") => ResponseMode::Fragment,
        Some("form_post") => ResponseMode::FormPost,
        Some(other) => {
            return authorize_error_redirect(
                redirect_uri,
                ResponseMode::Query,
                state,
                "invalid_request",
                &aadsts_text(
                    900144,
                    &format!(
                        "The provided value '{other}' for the input parameter 'response_mode' is not valid."
                    ),
                ),
            );
        }
    };
    let err = |error: &str, code: u32, text: &str| {
        authorize_error_redirect(redirect_uri, mode, state, error, &aadsts_text(code, text))
    };
    match p.get("response_type") {
        None => {
            return err(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'response_type'.",
            );
        }
        Some("code") => {}
        Some(other) => {
            return err(
                "unsupported_response_type",
                700054,
                &format!(
                    "response_type '{other}' is not enabled for the application. Expected value is 'code'."
                ),
            );
        }
    }
    let scope = p.get("scope").unwrap_or_default();
    if !scope.split(' ').any(|sc| sc == "openid") {
        return err(
            "invalid_request",
            900144,
            "The 'openid' scope is required for an OpenID Connect sign-in (mock IdP rule).",
        );
    }
    // PKCE: Entra assumes `plain` when a challenge comes without a method.
    let pkce = match (p.get("code_challenge"), p.get("code_challenge_method")) {
        (None, _) => None,
        (Some(c), None | Some("plain")) => Some((c.to_owned(), "plain".to_owned())),
        (Some(c), Some("S256")) => Some((c.to_owned(), "S256".to_owned())),
        (Some(_), Some(other)) => {
            return err(
                "invalid_request",
                50149,
                &format!(
                    "The code_challenge_method '{other}' is not valid. Supported values are 'plain' and 'S256'."
                ),
            );
        }
    };
    // The user "looks at the sign-in page" until Continue posts the same request back.
    if behaviour.continue_page && p.get(CONTINUE_FIELD).is_none() {
        return entra::continue_page(CONTINUE_FIELD);
    }
    if let Some(e) = &behaviour.authorize_error {
        return authorize_error_redirect(redirect_uri, mode, state, &e.error, &e.error_description);
    }

    // Sign the configured user in without UI and issue a code.
    let code = keys::random_b64(32);
    let record = CodeRecord {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        nonce: p.get("nonce").map(str::to_owned),
        pkce,
        scope: scope.to_owned(),
        created_at: std::time::Instant::now(),
        authority: tenant.clone(),
    };
    {
        let mut inner = s.lock();
        // Drop stale codes so a long-running mock does not grow without bound.
        let keep = inner.code_lifetime * 2;
        inner.codes.retain(|_, r| r.created_at.elapsed() <= keep);
        inner.codes.insert(code.clone(), record);
    }
    // No `iss` parameter: Entra does not send one (RFC 9207 is not implemented there).
    let mut params = vec![("code", code.as_str())];
    if let Some(st) = state {
        params.push(("state", st));
    }
    to_client(redirect_uri, mode, &params)
}

// ---------------------------------------------------------------------------------------
// Token

async fn token(
    State(s): S,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = {
        let mut inner = s.lock();
        inner.counters.token += 1;
        inner.behaviour.clone()
    };
    if let Some(r) = pre_fault(&s, &behaviour.token_fault).await {
        return r;
    }
    if let Some(te) = &behaviour.token_error {
        let status = StatusCode::from_u16(te.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return post_fault(&behaviour.token_fault, json_response(status, &te.body));
    }
    if !s.serves(&tenant) {
        return unknown_tenant_json(&tenant);
    }
    let resp = token_inner(&s, &behaviour, &headers, &body).await;
    post_fault(&behaviour.token_fault, resp)
}

async fn token_inner(
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
    if grant_type != "authorization_code" && grant_type != "client_credentials" {
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
        return client_credentials(&form);
    }
    authorization_code(s, behaviour, &form, &client_id).await
}

/// A token-endpoint refusal, rendered by [`token_error`] as Entra's JSON error body.
#[derive(Debug)]
struct TokenFailure {
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
fn authenticate_client(
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

/// Verifies a client assertion against the registered certificates and remembers its `jti`.
fn authenticate_assertion(
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
fn parse_basic(value: &HeaderValue) -> Result<Option<(String, String)>, TokenFailure> {
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

fn client_credentials(form: &Params) -> Response {
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
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": format!("mock-app-token.{}", keys::random_b64(32)),
        }),
    )
}

async fn authorization_code(
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

    let mut body = Map::new();
    body.insert("token_type".into(), json!("Bearer"));
    body.insert("scope".into(), json!(record.scope));
    body.insert("expires_in".into(), json!(3599));
    body.insert("ext_expires_in".into(), json!(3599));
    let access_token = format!("mock-access-token.{}", keys::random_b64(32));
    {
        let mut inner = s.lock();
        inner.issued.push(access_token.clone());
        inner
            .userinfo
            .insert(access_token.clone(), userinfo_answer(s, behaviour));
    }
    body.insert("access_token".into(), json!(access_token));
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

/// The ID token's claims before [`Behaviour`] edits (`tests/fixtures/entra/id_token.claims.json`,
/// <https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference>). `tid` is
/// the user's tenant: the mock's own, or for a multi-tenant sign-in [`Behaviour::user_tenant`];
/// `iss` always names that same tenant, as Entra's does.
fn id_token_claims(s: &Shared, record: &CodeRecord, tid: &str) -> Map<String, Value> {
    let u = &s.user;
    let iat = now_unix();
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
    if !u.groups.is_empty() {
        c.insert("groups".into(), json!(u.groups));
    }
    if !u.roles.is_empty() {
        c.insert("roles".into(), json!(u.roles));
    }
    c
}

async fn id_token(
    s: &Shared,
    behaviour: &Behaviour,
    record: &CodeRecord,
) -> Result<String, keys::KeyError> {
    let tid = match &behaviour.user_tenant {
        Some(t) if is_multi_tenant(&record.authority) => t.as_str(),
        _ => s.tenant_id.as_str(),
    };
    let mut claims = id_token_claims(s, record, tid);
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

// ---------------------------------------------------------------------------------------
// Logout

async fn logout(
    State(s): S,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !s.serves(&tenant) {
        return entra::error_page(90002, &format!("Tenant '{tenant}' not found."));
    }
    let p = Params::parse(query.as_deref(), &body);
    let registered = s.lock().redirect_uris.clone();
    match p.get("post_logout_redirect_uri") {
        Some(uri) if registered.iter().any(|r| r == uri) => {
            let params: Vec<(&str, &str)> =
                p.get("state").map(|st| ("state", st)).into_iter().collect();
            to_client(uri, ResponseMode::Query, &params)
        }
        _ => entra::signed_out_page(),
    }
}

// ---------------------------------------------------------------------------------------
// Control API (test tool only; the mock is bound to loopback by default)

async fn get_behaviour(State(s): S) -> Response {
    let b = s.lock().behaviour.clone();
    Json(b).into_response()
}

async fn put_behaviour(State(s): S, Json(b): Json<Behaviour>) -> StatusCode {
    s.lock().behaviour = b;
    StatusCode::NO_CONTENT
}

async fn get_counters(State(s): S) -> Response {
    let c = s.lock().counters;
    Json(c).into_response()
}

#[derive(serde::Deserialize)]
struct RotateQuery {
    #[serde(default = "default_true")]
    publish: bool,
}

fn default_true() -> bool {
    true
}

async fn rotate(State(s): S, Query(q): Query<RotateQuery>) -> Response {
    match generate_key_blocking().await {
        Ok(key) => {
            let kid = install_key(&s, key, q.publish);
            Json(json!({ "kid": kid, "published": q.publish })).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("key generation failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn publish(State(s): S) -> Response {
    publish_current(&s);
    let kid = s.lock().current.kid.clone();
    Json(json!({ "kid": kid, "published": true })).into_response()
}

async fn get_redirect_uris(State(s): S) -> Response {
    let uris = s.lock().redirect_uris.clone();
    Json(uris).into_response()
}

async fn put_redirect_uris(State(s): S, Json(uris): Json<Vec<String>>) -> StatusCode {
    s.lock().redirect_uris = uris;
    StatusCode::NO_CONTENT
}
