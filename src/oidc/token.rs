//! The IdP's token endpoint: the authorization-code exchange (RFC 6749 §4.1.3, RFC 7636 §4.5),
//! the client-credentials request `entrance check --verify-secret` proves a secret with
//! (RFC 6749 §4.4), and the reading of their answers, including Entra's error bodies.

use std::fmt;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    certificate::{CLIENT_ASSERTION_TYPE, CertificateCredential},
    config::{ClientAuth, ClientCredential, ConnectionConfig},
    entra,
    federated::{FederatedAssertion, FederatedError},
    oidc::http_client::{FetchError, HttpClient},
};

/// The one credential a single token request carries: a connection may hold several secrets
/// (see [`attempts`]), but each request sends one.
#[derive(Clone, Copy)]
pub(crate) enum Credential<'a> {
    Secret(&'a SecretString),
    Certificate(&'a CertificateCredential),
    Federated(&'a FederatedAssertion),
}

/// The credentials to try at the token endpoint, in order: each secret (newest first) with
/// its label, or the certificate alone; then a rotated-out credential, while the connection
/// keeps one (`ConnectionConfig::previous_credential`).
pub(crate) fn attempts(conn: &ConnectionConfig) -> Vec<(Option<&str>, Credential<'_>)> {
    let mut out = attempts_of(&conn.credential);
    if let Some(previous) = &conn.previous_credential {
        out.extend(
            attempts_of(previous)
                .into_iter()
                .map(|(label, c)| (Some(label.unwrap_or(PREVIOUS_CERTIFICATE)), c)),
        );
    }
    out
}

/// How logs name the certificate a rotation link replaced.
const PREVIOUS_CERTIFICATE: &str = "the previous certificate (before the last setup link)";

fn attempts_of(credential: &ClientCredential) -> Vec<(Option<&str>, Credential<'_>)> {
    match credential {
        ClientCredential::Secrets(secrets) => secrets
            .iter()
            .map(|s| (Some(s.label.as_str()), Credential::Secret(&s.value)))
            .collect(),
        ClientCredential::Certificate(c) => {
            vec![(None, Credential::Certificate(c))]
        }
        ClientCredential::Federated(f) => vec![(None, Credential::Federated(f))],
    }
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Credential::Secret(<redacted>)"),
            Credential::Certificate(c) => {
                write!(f, "Credential::Certificate({})", c.thumbprint_hex)
            }
            Credential::Federated(a) => write!(f, "Credential::Federated({})", a.source),
        }
    }
}

/// Entra's answers to a client secret it does not accept (`invalid_client`, AADSTS7000215
/// wrong secret, AADSTS7000222 expired secret). The code is not consumed by such a refusal,
/// so the same code may be sent again with another secret.
pub(crate) fn is_client_auth_failure(error: &OAuthError) -> bool {
    error.error == "invalid_client" || matches!(error.aadsts(), Some(7000215 | 7000222))
}

pub(crate) struct CodeExchange<'a> {
    pub token_endpoint: &'a str,
    pub client_id: &'a str,
    pub credential: Credential<'a>,
    /// How a secret is sent; a certificate always sends a client assertion.
    pub client_auth: ClientAuth,
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: &'a str,
}

/// What entrance reads from a successful code redemption. The access token serves the
/// optional userinfo call during the callback; with an `upstream` table it (an access token
/// for the backend API) and the refresh token are kept server-side for `/auth`
/// (`session::upstream`); otherwise both are dropped.
pub(crate) struct TokenResponse {
    pub id_token: String,
    pub access_token: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
    /// Seconds the access token lives (RFC 6749 §5.1: recommended, so it may be missing).
    pub expires_in: Option<u64>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenResponse {{ id_token: <redacted>, access_token: <redacted>, refresh_token: <redacted>, expires_in: {:?} }}",
            self.expires_in
        )
    }
}

/// A refresh-token grant (RFC 6749 §6), apart from the credential it is sent with.
pub(crate) struct RefreshGrant<'a> {
    pub token_endpoint: &'a str,
    pub client_id: &'a str,
    pub client_auth: ClientAuth,
    pub refresh_token: &'a SecretString,
    /// The scopes asked again (Entra's v2 endpoint wants them on every refresh).
    pub scope: &'a str,
}

/// The answer to a refresh: a new access token and, when the IdP rotates it (Entra does), a
/// new refresh token to keep in place of the old one.
pub(crate) struct Refreshed {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<u64>,
}

impl fmt::Debug for Refreshed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Refreshed {{ access_token: <redacted>, refresh_token: <redacted>, expires_in: {:?} }}",
            self.expires_in
        )
    }
}

/// Redeems a refresh token.
pub(crate) async fn refresh(
    http: &HttpClient,
    req: &RefreshGrant<'_>,
    credential: Credential<'_>,
) -> Result<Refreshed, TokenError> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", req.refresh_token.expose_secret()),
        ("scope", req.scope),
    ];
    let auth = ClientAuthentication::new(
        credential,
        req.client_auth,
        req.client_id,
        req.token_endpoint,
    )
    .await?;
    let builder = auth.apply(http.inner().post(req.token_endpoint), &mut form);
    let (status, body) = http.send_for_json(builder.form(&form)).await?;
    auth.noted(parse_refresh_response(status.as_u16(), &body))
}

/// [`refresh`] with each of the connection's credentials in turn (newest secret first), moving
/// on only when the IdP refused the client's authentication — as the code exchange does during
/// a secret rotation; a refused client leaves the refresh token unspent.
pub(crate) async fn refresh_with_fallback(
    http: &HttpClient,
    conn: &ConnectionConfig,
    req: &RefreshGrant<'_>,
) -> Result<Refreshed, TokenError> {
    let attempts = attempts(conn);
    let mut result = Err(TokenError::Malformed(
        "the connection has no credential".into(),
    ));
    for (i, (_, credential)) in attempts.iter().enumerate() {
        result = refresh(http, req, *credential).await;
        match &result {
            Err(TokenError::Refused { error, .. })
                if i + 1 < attempts.len() && is_client_auth_failure(error) => {}
            _ => break,
        }
    }
    result
}

/// Pure: reads a refresh answer. Unlike a code redemption, no ID token is needed.
pub(crate) fn parse_refresh_response(status: u16, body: &[u8]) -> Result<Refreshed, TokenError> {
    let raw = parse_success(status, body)?;
    match raw.access_token {
        Some(access_token) if !access_token.is_empty() => Ok(Refreshed {
            access_token: SecretString::from(access_token),
            refresh_token: raw
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            expires_in: raw.expires_in,
        }),
        _ => Err(TokenError::Malformed(
            "the refresh answer has no access_token".into(),
        )),
    }
}

/// What a failed refresh means for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshVerdict {
    /// The grant is gone for good — revoked (AADSTS50173), expired (70043, 700082), or the
    /// user must interact again (50076 MFA now required, consent): the session ends and the
    /// user signs in again.
    SignInAgain,
    /// Worth trying again later (a timeout, a 5xx, `temporarily_unavailable`), or a matter for
    /// the admin (a refused client secret) that ending the user's session would not fix: the
    /// session stays and the current token is used while it is valid.
    TryLater,
}

/// RFC 6749 §5.2's `invalid_grant` and OpenID Connect Core §3.1.2.6's errors that need the
/// user (`interaction_required`, `login_required`, `consent_required`) end the session;
/// everything else keeps it.
pub(crate) fn refresh_verdict(error: &TokenError) -> RefreshVerdict {
    match error {
        TokenError::Refused { error, .. }
            if matches!(
                error.error.as_str(),
                "invalid_grant" | "interaction_required" | "login_required" | "consent_required"
            ) =>
        {
            RefreshVerdict::SignInAgain
        }
        _ => RefreshVerdict::TryLater,
    }
}

/// An OAuth error answer (RFC 6749 §5.2), with Entra's extra members when present.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OAuthError {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u32>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
}

impl OAuthError {
    /// The AADSTS code: Entra's `error_codes[0]`, else the `AADSTSnnnn:` prefix.
    pub(crate) fn aadsts(&self) -> Option<u32> {
        self.error_codes.first().copied().or_else(|| {
            self.error_description
                .as_deref()
                .and_then(entra::aadsts_code)
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the token endpoint could not be used: {0}")]
    Transport(#[from] FetchError),
    #[error("the token endpoint refused the code (HTTP {status}, {})", .error.error)]
    Refused { status: u16, error: OAuthError },
    #[error("the token endpoint answered HTTP {0} without an OAuth error")]
    UnexpectedStatus(u16),
    #[error("the token response is not valid: {0}")]
    Malformed(String),
    #[error("the token response has no id_token (is \"openid\" among the scopes?)")]
    MissingIdToken,
    /// Signing failed locally; nothing was sent. The message never holds key material.
    #[error("the client assertion could not be signed: {0}")]
    Assertion(String),
    /// The federated credential could not be read; nothing was sent.
    #[error("the federated client assertion is not available: {0}")]
    Federated(#[from] FederatedError),
}

#[derive(Deserialize)]
struct RawTokenResponse {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub(crate) async fn exchange_code(
    http: &HttpClient,
    req: &CodeExchange<'_>,
) -> Result<TokenResponse, TokenError> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "authorization_code"),
        ("code", req.code),
        ("redirect_uri", req.redirect_uri),
        ("code_verifier", req.code_verifier),
    ];
    let auth = ClientAuthentication::new(
        req.credential,
        req.client_auth,
        req.client_id,
        req.token_endpoint,
    )
    .await?;
    let builder = auth.apply(http.inner().post(req.token_endpoint), &mut form);
    let (status, body) = http.send_for_json(builder.form(&form)).await?;
    auth.noted(parse_token_response(status.as_u16(), &body))
}

/// The client's credentials for one token request, ready to send.
enum ClientAuthentication<'a> {
    /// `client_id` and `client_secret` in the form (RFC 6749 §2.3.1).
    SecretPost {
        client_id: &'a str,
        secret: &'a SecretString,
    },
    /// HTTP Basic, both parts form-encoded first (RFC 6749 §2.3.1).
    SecretBasic {
        client_id: &'a str,
        secret: &'a SecretString,
    },
    /// `client_assertion_type` + `client_assertion` (RFC 7521 §4.2, RFC 7523 §2.2), with
    /// `client_id` too, as Entra's certificate-credentials request shows. No secret and no
    /// Authorization header: one authentication method per request.
    Assertion {
        client_id: &'a str,
        assertion: SecretString,
        /// The platform's token (workload identity), not one entrance signed.
        federated: bool,
    },
}

impl<'a> ClientAuthentication<'a> {
    /// For a certificate, signs a fresh assertion whose `aud` is this token endpoint; for a
    /// federated credential, reads the platform's current token.
    async fn new(
        credential: Credential<'a>,
        auth: ClientAuth,
        client_id: &'a str,
        token_endpoint: &str,
    ) -> Result<ClientAuthentication<'a>, TokenError> {
        Ok(match (credential, auth) {
            (Credential::Secret(secret), ClientAuth::SecretPost) => {
                ClientAuthentication::SecretPost { client_id, secret }
            }
            (Credential::Secret(secret), ClientAuth::SecretBasic) => {
                ClientAuthentication::SecretBasic { client_id, secret }
            }
            (Credential::Certificate(cert), _) => {
                let now = time::OffsetDateTime::now_utc();
                if cert.not_after <= now {
                    // Sent anyway (the IdP decides), but the log says why it will fail.
                    tracing::warn!(
                        thumbprint = %cert.thumbprint_hex,
                        not_after = %cert.not_after,
                        "the client certificate has expired; upload a new certificate"
                    );
                }
                let assertion = cert
                    .client_assertion(client_id, token_endpoint, now.unix_timestamp())
                    .map_err(|e| TokenError::Assertion(e.to_string()))?;
                ClientAuthentication::Assertion {
                    client_id,
                    assertion,
                    federated: false,
                }
            }
            // Read afresh: the platform rotates it (Kubernetes well before it expires).
            (Credential::Federated(federated), _) => ClientAuthentication::Assertion {
                client_id,
                assertion: federated.read().await?,
                federated: true,
            },
        })
    }

    /// Passes `result` on; when the IdP refused a federated assertion, first logs what the
    /// assertion says about itself (`iss`, `sub`, `aud`, `exp`, unverified) — the values the
    /// admin compares with the app registration's federated credential (AADSTS70021,
    /// 700211–700213, 700024; docs/reference/ENTRA-2.md §6). Never the assertion itself.
    fn noted<T>(&self, result: Result<T, TokenError>) -> Result<T, TokenError> {
        if let (
            ClientAuthentication::Assertion {
                assertion,
                federated: true,
                ..
            },
            Err(TokenError::Refused { error, .. }),
        ) = (self, &result)
        {
            let claims = crate::federated::peek(assertion.expose_secret()).unwrap_or_default();
            tracing::warn!(
                aadsts = error.aadsts(),
                error = %error.error,
                assertion = %claims.summary(),
                assertion_exp = claims.exp,
                "the IdP refused the federated client assertion; compare its iss, sub and aud with the federated credential on the app registration"
            );
        }
        result
    }

    /// Adds the credentials to the request; `client_id` always goes in the form too
    /// (harmless with Basic, and some IdPs want it).
    fn apply<'f>(
        &'f self,
        builder: reqwest::RequestBuilder,
        form: &mut Vec<(&'f str, &'f str)>,
    ) -> reqwest::RequestBuilder
    where
        'a: 'f,
    {
        match self {
            ClientAuthentication::SecretPost { client_id, secret } => {
                form.push(("client_id", client_id));
                form.push(("client_secret", secret.expose_secret()));
                builder
            }
            ClientAuthentication::SecretBasic { client_id, secret } => {
                form.push(("client_id", client_id));
                builder.header(
                    reqwest::header::AUTHORIZATION,
                    basic_auth(client_id, secret.expose_secret()),
                )
            }
            ClientAuthentication::Assertion {
                client_id,
                assertion,
                ..
            } => {
                form.push(("client_id", client_id));
                form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
                form.push(("client_assertion", assertion.expose_secret()));
                builder
            }
        }
    }
}

/// A client-credentials token request: the one way to prove a client ID and secret without a
/// user ([`client_credentials`], which drops the token), or to call an API as the app
/// ([`client_credentials_token`]).
pub(crate) struct ClientCredentials<'a> {
    pub token_endpoint: &'a str,
    pub client_id: &'a str,
    pub credential: Credential<'a>,
    pub client_auth: ClientAuth,
    /// `None` sends no `scope` (RFC 6749 §4.4.2: the IdP's default applies).
    pub scope: Option<&'a str>,
}

/// `Ok(())` when the IdP issued a token, i.e. accepted the credentials.
pub(crate) async fn client_credentials(
    http: &HttpClient,
    req: &ClientCredentials<'_>,
) -> Result<(), TokenError> {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if let Some(scope) = req.scope {
        form.push(("scope", scope));
    }
    let auth = ClientAuthentication::new(
        req.credential,
        req.client_auth,
        req.client_id,
        req.token_endpoint,
    )
    .await?;
    let builder = auth.apply(http.inner().post(req.token_endpoint), &mut form);
    let (status, body) = http.send_for_json(builder.form(&form)).await?;
    auth.noted(parse_client_credentials_response(status.as_u16(), &body))
}

/// An app-only access token from a client-credentials request, for a caller that uses it
/// (Microsoft Graph for group overage, `oidc::graph`), not only proves it can be had.
pub(crate) struct AppToken {
    pub access_token: SecretString,
    /// Seconds the token lives (RFC 6749 §4.4.3 → §5.1: recommended, so it may be missing).
    pub expires_in: Option<u64>,
}

impl fmt::Debug for AppToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AppToken {{ access_token: <redacted>, expires_in: {:?} }}",
            self.expires_in
        )
    }
}

/// [`client_credentials`] that keeps the access token it was issued.
pub(crate) async fn client_credentials_token(
    http: &HttpClient,
    req: &ClientCredentials<'_>,
) -> Result<AppToken, TokenError> {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if let Some(scope) = req.scope {
        form.push(("scope", scope));
    }
    let auth = ClientAuthentication::new(
        req.credential,
        req.client_auth,
        req.client_id,
        req.token_endpoint,
    )
    .await?;
    let builder = auth.apply(http.inner().post(req.token_endpoint), &mut form);
    let (status, body) = http.send_for_json(builder.form(&form)).await?;
    auth.noted(parse_app_token_response(status.as_u16(), &body))
}

/// Pure: reads a client-credentials answer whose access token is kept.
pub(crate) fn parse_app_token_response(status: u16, body: &[u8]) -> Result<AppToken, TokenError> {
    let raw = parse_success(status, body)?;
    match raw.access_token {
        Some(t) if !t.is_empty() => Ok(AppToken {
            access_token: SecretString::from(t),
            expires_in: raw.expires_in,
        }),
        _ => Err(TokenError::Malformed(
            "the client-credentials answer has no access_token".into(),
        )),
    }
}

/// Pure: reads a client-credentials answer. Any 2xx means the credentials were accepted; the
/// body (an access token) is not looked at, so it is never held longer than the read.
pub(crate) fn parse_client_credentials_response(
    status: u16,
    body: &[u8],
) -> Result<(), TokenError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(error) => Err(TokenError::Refused { status, error }),
        Err(_) => Err(TokenError::UnexpectedStatus(status)),
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-urlencoded before base64.
fn basic_auth(client_id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Pure: reads a token endpoint answer.
pub(crate) fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenResponse, TokenError> {
    let raw = parse_success(status, body)?;
    match raw.id_token {
        Some(id_token) if !id_token.is_empty() => Ok(TokenResponse {
            id_token,
            access_token: raw.access_token.map(SecretString::from),
            refresh_token: raw
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            expires_in: raw.expires_in,
        }),
        _ => Err(TokenError::MissingIdToken),
    }
}

/// A 2xx answer with a Bearer (or no) `token_type`, else the typed refusal.
fn parse_success(status: u16, body: &[u8]) -> Result<RawTokenResponse, TokenError> {
    if !(200..300).contains(&status) {
        return match serde_json::from_slice::<OAuthError>(body) {
            Ok(error) => Err(TokenError::Refused { status, error }),
            Err(_) => Err(TokenError::UnexpectedStatus(status)),
        };
    }
    let raw: RawTokenResponse =
        serde_json::from_slice(body).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if let Some(tt) = &raw.token_type
        && !tt.eq_ignore_ascii_case("bearer")
    {
        return Err(TokenError::Malformed(format!("token_type {tt:?}")));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_error_body_is_read_with_its_aadsts_code() {
        let body = include_bytes!("../../tests/fixtures/entra/token-response.error.json");
        match parse_token_response(401, body) {
            Err(TokenError::Refused { status, error }) => {
                assert_eq!(status, 401);
                assert_eq!(error.error, "invalid_client");
                assert_eq!(error.aadsts(), Some(7000215));
                assert_eq!(
                    error.trace_id.as_deref(),
                    Some("0000aaaa-11bb-cccc-dd22-eeeeee333333")
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn success_body_yields_the_id_token_and_missing_one_fails() {
        let body = include_bytes!("../../tests/fixtures/entra/token-response.success.json");
        let ok = parse_token_response(200, body).expect("success");
        assert!(ok.id_token.starts_with("eyJ"));
        assert!(matches!(
            parse_token_response(200, br#"{"token_type":"Bearer","access_token":"x"}"#),
            Err(TokenError::MissingIdToken)
        ));
        assert!(matches!(
            parse_token_response(502, b"<html>bad gateway</html>"),
            Err(TokenError::UnexpectedStatus(502))
        ));
    }

    #[test]
    fn an_app_token_answer_keeps_the_token_and_its_lifetime() {
        let ok = parse_app_token_response(
            200,
            br#"{"token_type":"Bearer","expires_in":3599,"access_token":"mock-app-token.x"}"#,
        )
        .expect("issued");
        assert_eq!(ok.access_token.expose_secret(), "mock-app-token.x");
        assert_eq!(ok.expires_in, Some(3599));
        assert!(!format!("{ok:?}").contains("mock-app-token"));
        assert!(matches!(
            parse_app_token_response(200, br#"{"token_type":"Bearer"}"#),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let header = basic_auth("id", "a~b+c");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.trim_start_matches("Basic "))
            .expect("base64");
        assert_eq!(decoded, b"id:a%7Eb%2Bc");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
        ))]
        /// Whatever a token endpoint answers, parsing gives a response or a typed error.
        #[test]
        fn any_token_endpoint_answer_is_handled(status in 100u16..600, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_token_response(status, &body);
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = TokenResponse {
            id_token: "eyJsecret".into(),
            access_token: Some(SecretString::from("eyJaccess")),
            refresh_token: Some(SecretString::from("eyJrefresh")),
            expires_in: Some(3599),
        };
        assert!(!format!("{t:?}").contains("eyJ"));
        let r = Refreshed {
            access_token: SecretString::from("eyJaccess"),
            refresh_token: Some(SecretString::from("eyJrefresh")),
            expires_in: None,
        };
        assert!(!format!("{r:?}").contains("eyJ"));
    }

    #[test]
    fn refresh_answers_are_read_and_errors_sorted_into_sign_in_again_or_try_later() {
        let ok = parse_refresh_response(
            200,
            br#"{"token_type":"Bearer","access_token":"a","refresh_token":"r2","expires_in":3599}"#,
        )
        .expect("refreshed");
        assert_eq!(ok.access_token.expose_secret(), "a");
        assert_eq!(
            ok.refresh_token.map(|r| r.expose_secret().to_owned()),
            Some("r2".into())
        );
        assert!(parse_refresh_response(200, br#"{"token_type":"Bearer"}"#).is_err());
        let refused = |error: &str, status: u16| {
            let body = format!(r#"{{"error":"{error}","error_description":"AADSTS1: x"}}"#);
            parse_refresh_response(status, body.as_bytes()).expect_err("refused")
        };
        for error in [
            "invalid_grant",
            "interaction_required",
            "login_required",
            "consent_required",
        ] {
            assert_eq!(
                refresh_verdict(&refused(error, 400)),
                RefreshVerdict::SignInAgain,
                "{error}"
            );
        }
        for error in [
            "temporarily_unavailable",
            "server_error",
            "invalid_client",
            "invalid_scope",
        ] {
            assert_eq!(
                refresh_verdict(&refused(error, 400)),
                RefreshVerdict::TryLater,
                "{error}"
            );
        }
        assert_eq!(
            refresh_verdict(&parse_refresh_response(503, b"<html>").expect_err("5xx")),
            RefreshVerdict::TryLater
        );
    }
}
