//! The mock's authorize endpoint: the code (or Entra's error) sent back by query or form_post,
//! and the opt-in Continue page.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::CodeRecord;
use crate::entra::{self};
use crate::keys::{self};

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

/// Sends parameters back to the client the way `mode` says. `redirect_uri` was already
/// checked against the registered list.
pub(super) fn to_client(
    redirect_uri: &str,
    mode: ResponseMode,
    params: &[(&str, &str)],
) -> Response {
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
pub(super) fn authorize_error_redirect(
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

pub(super) fn aadsts_text(code: u32, text: &str) -> String {
    format!(
        "AADSTS{code}: {text} Trace ID: {} Correlation ID: {} Timestamp: {}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        entra::entra_timestamp()
    )
}

/// The field [`entra::continue_page`]'s form adds to the authorize request it posts back.
pub(super) const CONTINUE_FIELD: &str = "mock_continue";

// One piece on purpose: Entra's authorize checks in Entra's order (tenant, client, redirect
// URI, then the request's parameters), because which AADSTS error wins is what tests assert.
pub(super) async fn authorize(
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
