//! Owns the optional userinfo call at sign-in (OpenID Connect Core §5.3): fetching it with the
//! access token, the `sub` check, and what its claims may add to the ID token's.
//!
//! The ID token stays the authority: userinfo's claims only fill what the ID token left out,
//! never replace a claim it carries, and never touch the claims that identify or authorise
//! (`iss`, `sub`, `tid`, `oid`, `groups`, `roles`). `email_verified` is taken from userinfo
//! only together with the `email` it describes.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    loopback::is_secure_url,
    oidc::http_client::{FetchError, HttpClient},
    oidc::verifier::IdTokenClaims,
};

/// Why the userinfo step failed. Every variant fails the sign-in: the connection asked for
/// userinfo, so a user without it is not the user the admin configured.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UserinfoError {
    #[error("the IdP's metadata publishes no userinfo_endpoint")]
    NoEndpoint,
    #[error("the token response carried no access_token to call userinfo with")]
    NoAccessToken,
    /// The access token would travel in clear: like every endpoint entrance calls, userinfo
    /// must be https (plain http only on loopback).
    #[error("the userinfo_endpoint {0:?} is not an https URL")]
    InsecureEndpoint(String),
    #[error("the userinfo endpoint could not be used: {0}")]
    Transport(FetchError),
    #[error("the userinfo endpoint answered HTTP {0}")]
    Refused(u16),
    #[error("the userinfo response is not a JSON object with a string sub")]
    Malformed,
    /// OIDC Core §5.3.4: the response must be rejected when `sub` differs from the ID token's
    /// (a token substitution, or an endpoint answering for someone else).
    #[error("userinfo's sub {userinfo:?} is not the ID token's {id_token:?}")]
    SubMismatch { userinfo: String, id_token: String },
}

impl UserinfoError {
    /// A stable machine-readable reason for logs, metrics and JSON errors.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            UserinfoError::NoEndpoint => "userinfo_no_endpoint",
            UserinfoError::NoAccessToken => "userinfo_no_access_token",
            UserinfoError::InsecureEndpoint(_) => "userinfo_insecure_endpoint",
            UserinfoError::Transport(_) => "userinfo_unreachable",
            UserinfoError::Refused(_) => "userinfo_refused",
            UserinfoError::Malformed => "userinfo_malformed",
            UserinfoError::SubMismatch { .. } => "userinfo_sub_mismatch",
        }
    }
}

/// The claims of a userinfo response that entrance reads.
#[derive(Debug, Deserialize)]
pub(crate) struct UserinfoClaims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    preferred_username: Option<String>,
}

/// GETs the userinfo endpoint with the access token as a Bearer token (RFC 6750 §2.1), through
/// the shared client: its timeouts, size limit and no redirects apply. A signed or encrypted
/// (`application/jwt`) response is refused as not JSON.
#[tracing::instrument(name = "userinfo", skip_all)]
pub(crate) async fn fetch(
    http: &HttpClient,
    endpoint: Option<&str>,
    access_token: Option<&SecretString>,
) -> Result<UserinfoClaims, UserinfoError> {
    let endpoint = endpoint.ok_or(UserinfoError::NoEndpoint)?;
    if !is_secure(endpoint) {
        return Err(UserinfoError::InsecureEndpoint(endpoint.to_owned()));
    }
    let token = access_token.ok_or(UserinfoError::NoAccessToken)?;
    let request = http
        .inner()
        .get(endpoint)
        .bearer_auth(token.expose_secret());
    let (status, body) = http
        .send_for_json(request)
        .await
        .map_err(UserinfoError::Transport)?;
    if !status.is_success() {
        return Err(UserinfoError::Refused(status.as_u16()));
    }
    serde_json::from_slice(&body).map_err(|_| UserinfoError::Malformed)
}

/// https, or plain http on loopback (the bundled mock): where a bearer token may be sent.
pub(crate) fn is_secure(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|u| is_secure_url(&u))
}

/// Checks `sub` and fills what the ID token left out.
pub(crate) fn merge(
    claims: &mut IdTokenClaims,
    userinfo: UserinfoClaims,
) -> Result<(), UserinfoError> {
    if userinfo.sub != claims.sub {
        return Err(UserinfoError::SubMismatch {
            userinfo: userinfo.sub,
            id_token: claims.sub.clone(),
        });
    }
    if claims.email.is_none() && userinfo.email.is_some() {
        claims.email = userinfo.email;
        // The verification flag belongs to the address it came with.
        claims.email_verified = userinfo.email_verified;
        claims.xms_edov = None;
    }
    if claims.name.is_none() {
        claims.name = userinfo.name;
    }
    if claims.preferred_username.is_none() {
        claims.preferred_username = userinfo.preferred_username;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_access_token_never_goes_to_a_plain_http_userinfo_endpoint() {
        assert!(is_secure("https://idp.example/userinfo"));
        assert!(is_secure("http://127.0.0.1:9090/userinfo"));
        assert!(!is_secure("http://idp.example/userinfo"));
        assert!(!is_secure("ftp://idp.example/userinfo"));
        let http = HttpClient::new(&crate::config::HttpSettings {
            connect_timeout: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            max_response_bytes: 16 * 1024,
            extra_roots: Vec::new(),
        })
        .expect("client");
        let token = SecretString::from("at");
        let err = fetch(&http, Some("http://idp.example/userinfo"), Some(&token))
            .await
            .expect_err("refused before any request");
        assert!(matches!(err, UserinfoError::InsecureEndpoint(_)), "{err:?}");
    }

    fn id_token_claims() -> IdTokenClaims {
        serde_json::from_value(serde_json::json!({
            "iss": "https://idp.example", "sub": "s1", "aud": ["c"], "exp": 2, "iat": 1,
            "name": "From the ID token", "groups": ["g"], "roles": [], "groups_claim_source": false
        }))
        .expect("claims")
    }

    fn userinfo(v: serde_json::Value) -> UserinfoClaims {
        serde_json::from_value(v).expect("userinfo")
    }

    #[test]
    fn a_different_sub_is_refused() {
        let mut c = id_token_claims();
        let err =
            merge(&mut c, userinfo(serde_json::json!({"sub": "s2"}))).expect_err("sub differs");
        assert_eq!(err.code(), "userinfo_sub_mismatch");
    }

    #[test]
    fn userinfo_fills_gaps_and_never_overrides_the_id_token() {
        let mut c = id_token_claims();
        merge(
            &mut c,
            userinfo(serde_json::json!({
                "sub": "s1", "name": "From userinfo", "email": "ada@contoso.example",
                "email_verified": true, "preferred_username": "ada", "groups": ["evil"]
            })),
        )
        .expect("merge");
        assert_eq!(c.name.as_deref(), Some("From the ID token"));
        assert_eq!(c.email.as_deref(), Some("ada@contoso.example"));
        assert_eq!(c.email_verified, Some(true));
        assert_eq!(c.preferred_username.as_deref(), Some("ada"));
        assert_eq!(
            c.groups,
            vec!["g".to_owned()],
            "groups come from the ID token only"
        );
    }

    #[test]
    fn an_id_token_email_keeps_its_own_verification() {
        let mut c = id_token_claims();
        c.email = Some("ada@contoso.example".into());
        merge(
            &mut c,
            userinfo(serde_json::json!({
                "sub": "s1", "email": "other@evil.example", "email_verified": true
            })),
        )
        .expect("merge");
        assert_eq!(c.email.as_deref(), Some("ada@contoso.example"));
        assert_eq!(c.email_verified, None);
    }
}
