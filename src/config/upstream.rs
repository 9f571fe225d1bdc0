//! A connection's `upstream` table: an access token for the vendor's backend API, requested at
//! sign-in with `offline_access`, kept server-side, refreshed, and passed to apps by `/auth`
//! as `X-Auth-Request-Access-Token`.

use url::Url;

use crate::entra;

use super::{ConfigError, invalid};

/// `[connections.upstream]` as written. Its presence turns the token on for the connection.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// The API's scopes, e.g. `["api://backend/.default"]`: one resource per token with Entra.
    pub scopes: Vec<String>,
    /// The most bytes of access token `/auth` passes; a larger token fails `/auth` (logged, a
    /// metric), never silently dropped.
    #[serde(default)]
    pub max_token_bytes: Option<usize>,
}

/// The default budget: Entra's access tokens run 1.5–4 KB, more with many groups or roles.
pub(crate) const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;

/// The validated `upstream` table of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// The API scopes asked for at sign-in and at each refresh (with `offline_access`).
    pub scopes: Vec<String>,
    /// Budget of the `X-Auth-Request-Access-Token` header value, apart from the identity
    /// headers' `forward_auth.max_header_bytes`.
    pub max_token_bytes: usize,
}

/// Scopes entrance adds by itself or that name no API.
const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// Checks `connections[i].upstream`. With Entra (and the Entra-shaped mock on loopback) every
/// scope must name the same resource (`{resource}/{scope}`): Entra issues a token for one
/// resource only (docs/reference/ENTRA-2.md §1), and a second one would be silently ignored.
pub(super) fn validate_upstream(
    raw: &RawUpstream,
    metadata_url: &Url,
    userinfo: Option<bool>,
    key: &dyn Fn(&str) -> String,
) -> Result<UpstreamSettings, ConfigError> {
    let scopes: Vec<String> = raw.scopes.iter().map(|s| s.trim().to_owned()).collect();
    if scopes.is_empty() {
        return Err(invalid(
            key("upstream.scopes"),
            "is empty, so no access token for an API would be requested",
            "list the API's scope, e.g. [\"api://<backend-app-id>/.default\"], or remove the upstream table",
        ));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || s.bytes().any(|b| b <= b' ' || b == b'"' || b == b'\\'))
    {
        return Err(invalid(
            key("upstream.scopes"),
            format!("{bad:?} is not a valid scope"),
            "list each scope as its own string, without spaces",
        ));
    }
    if let Some(oidc) = scopes.iter().find(|s| OIDC_SCOPES.contains(&s.as_str())) {
        return Err(invalid(
            key("upstream.scopes"),
            format!("holds {oidc:?}, which names no API"),
            "list only the API's scopes; entrance adds offline_access itself, and openid/profile/email belong in scopes",
        ));
    }
    let entra_shaped =
        entra::is_entra_url(metadata_url) || crate::loopback::is_loopback_host(metadata_url);
    if entra_shaped {
        let resource = |s: &str| s.rsplit_once('/').map(|(r, _)| r.to_owned());
        let first = resource(&scopes[0]);
        if first.is_none() || scopes.iter().any(|s| resource(s) != first) {
            return Err(invalid(
                key("upstream.scopes"),
                "must name exactly one API, each scope written as {resource}/{scope}: Entra issues an access token for one resource at a time",
                "write e.g. [\"api://<backend-app-id>/.default\"] or [\"api://<backend-app-id>/access_as_user\"]",
            ));
        }
    }
    if userinfo == Some(true) {
        return Err(invalid(
            key("userinfo"),
            "is true, but the sign-in's access token is for the upstream API and cannot call the userinfo endpoint",
            "remove userinfo = true (Entra's ID token carries the profile), or the upstream table",
        ));
    }
    let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(1024..=65536).contains(&max_token_bytes) {
        return Err(invalid(
            key("upstream.max_token_bytes"),
            format!("{max_token_bytes} is outside 1024..=65536"),
            format!(
                "leave it out for {DEFAULT_MAX_TOKEN_BYTES}, or raise it with the proxy's buffers (README, \"Passing tokens to your app\")"
            ),
        ));
    }
    Ok(UpstreamSettings {
        scopes,
        max_token_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(scopes: &[&str]) -> RawUpstream {
        RawUpstream {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            max_token_bytes: None,
        }
    }

    fn entra_url() -> Url {
        Url::parse("https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration")
            .expect("url")
    }

    fn key(k: &str) -> String {
        format!("connections[0].{k}")
    }

    #[test]
    fn one_resource_is_accepted_and_two_are_refused_with_entra() {
        let ok = validate_upstream(
            &raw(&["api://backend/read", "api://backend/write"]),
            &entra_url(),
            None,
            &key,
        )
        .expect("one resource");
        assert_eq!(ok.max_token_bytes, DEFAULT_MAX_TOKEN_BYTES);
        let err = validate_upstream(
            &raw(&[
                "api://backend/.default",
                "https://graph.microsoft.com/User.Read",
            ]),
            &entra_url(),
            None,
            &key,
        )
        .expect_err("two resources");
        assert!(err.to_string().contains("one resource"), "{err}");
        // Elsewhere scopes need not name a resource.
        let kc = Url::parse("https://kc.example/realms/x/.well-known/openid-configuration")
            .expect("url");
        assert!(validate_upstream(&raw(&["backend:read"]), &kc, None, &key).is_ok());
        assert!(validate_upstream(&raw(&["backend:read"]), &entra_url(), None, &key).is_err());
    }

    #[test]
    fn oidc_scopes_userinfo_and_odd_budgets_are_refused() {
        for scopes in [
            &[][..],
            &["openid"][..],
            &["offline_access"][..],
            &["a b"][..],
        ] {
            assert!(
                validate_upstream(&raw(scopes), &entra_url(), None, &key).is_err(),
                "{scopes:?}"
            );
        }
        let err = validate_upstream(&raw(&["api://b/.default"]), &entra_url(), Some(true), &key)
            .expect_err("userinfo");
        assert!(err.to_string().contains("userinfo"), "{err}");
        let mut r = raw(&["api://b/.default"]);
        r.max_token_bytes = Some(100);
        assert!(validate_upstream(&r, &entra_url(), None, &key).is_err());
    }
}
