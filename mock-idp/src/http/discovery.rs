//! The mock's discovery document, JWKS and userinfo endpoints.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::entra::json_response;
use crate::{Behaviour, Shared, is_multi_tenant};

use super::*;

pub(super) async fn metadata(
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
        // Not Entra's: where the mock serves Graph (`http/graph.rs`). entrance honours it only
        // for loopback metadata naming a loopback origin (src/oidc/graph.rs `target`).
        "graph_url": base,
        "rbac_url": "https://pas.windows.net",
    });
    post_fault(&behaviour.metadata_fault, discovery_response(&doc))
}

/// `?appid=<client_id>` on the metadata and keys URLs.
#[derive(serde::Deserialize)]
pub(super) struct AppIdQuery {
    appid: Option<String>,
}

pub(super) async fn jwks(
    State(s): S,
    Path(tenant): Path<String>,
    Query(q): Query<AppIdQuery>,
) -> Response {
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
pub(super) async fn userinfo(State(s): S, headers: HeaderMap) -> Response {
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
pub(super) fn userinfo_answer(s: &Shared, behaviour: &Behaviour) -> Value {
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
