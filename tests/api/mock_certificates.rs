//! entrance's client assertions (private_key_jwt, RFC 7523) against the mock IdP's checks,
//! which follow Entra's: both algorithms are accepted, a replay, an unknown or expired
//! certificate, a forged signature, a wrong audience, issuer, assertion type or expiry is
//! refused with Entra's codes. Moved from the mock's own unit tests when the mock became its
//! own crate: they sign with entrance's `CertificateCredential`, which the mock must not use.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use mock_idp::{DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID, MockIdp, MockIdpSettings, TestCertificate};
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:8080/auth/callback";

async fn start_with(settings: MockIdpSettings) -> MockIdp {
    MockIdp::start(MockIdpSettings {
        redirect_uris: vec![REDIRECT.to_owned()],
        ..settings
    })
    .await
    .expect("mock IdP starts")
}

async fn start() -> MockIdp {
    start_with(MockIdpSettings::default()).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

fn token_url(idp: &MockIdp) -> String {
    format!("{}/{}/oauth2/v2.0/token", idp.base_url(), DEFAULT_TENANT_ID)
}

async fn redeem(idp: &MockIdp, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = client()
        .post(token_url(idp))
        .form(form)
        .send()
        .await
        .expect("token answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("token body is JSON"))
}

/// A client-credentials request authenticated by `assertion`.
async fn with_assertion(idp: &MockIdp, assertion: &str, kind: &str) -> (u16, Value) {
    redeem(
        idp,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", DEFAULT_CLIENT_ID),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_assertion_type", kind),
            ("client_assertion", assertion),
        ],
    )
    .await
}

fn credential(
    tc: &TestCertificate,
    alg: entrance::AssertionAlg,
) -> entrance::CertificateCredential {
    entrance::CertificateCredential::from_pem(tc.cert_pem.as_bytes(), tc.key_pem().as_bytes(), alg)
        .expect("credential")
}

fn now_ts() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn client_assertions_are_verified_like_entra() {
    use entrance::{AssertionAlg, CLIENT_ASSERTION_TYPE};
    use secrecy::ExposeSecret as _;

    let (good, other) = tokio::task::spawn_blocking(|| {
        (
            TestCertificate::generate_valid_for_days("good", 30).expect("cert"),
            TestCertificate::generate_valid_for_days("other", 30).expect("cert"),
        )
    })
    .await
    .expect("keys");
    let idp = start_with(MockIdpSettings {
        client_certificates: vec![good.cert_pem.clone()],
        ..Default::default()
    })
    .await;
    let endpoint = idp.token_endpoint();
    assert_eq!(endpoint, token_url(&idp));

    for alg in [AssertionAlg::Ps256, AssertionAlg::Rs256] {
        let jwt = credential(&good, alg)
            .client_assertion(DEFAULT_CLIENT_ID, &endpoint, now_ts())
            .expect("signs");
        let (status, body) = with_assertion(&idp, jwt.expose_secret(), CLIENT_ASSERTION_TYPE).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        // The same assertion again is a replay (its jti was seen).
        let (status, body) = with_assertion(&idp, jwt.expose_secret(), CLIENT_ASSERTION_TYPE).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error_codes"], json!([50012]));
        assert!(
            body["error_description"]
                .as_str()
                .unwrap_or("")
                .contains("already used")
        );
    }

    // An unregistered certificate: the key is not found.
    let jwt = credential(&other, AssertionAlg::Ps256)
        .client_assertion(DEFAULT_CLIENT_ID, &endpoint, now_ts())
        .expect("signs");
    let (status, body) = with_assertion(&idp, jwt.expose_secret(), CLIENT_ASSERTION_TYPE).await;
    assert_eq!(
        (status, &body["error_codes"]),
        (401, &json!([700027])),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("key was not found")
    );

    // The registered certificate's thumbprint, but signed with another key.
    let good_cred = credential(&good, AssertionAlg::Ps256);
    let claims = json!({"aud": endpoint, "iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_CLIENT_ID,
        "jti": uuid::Uuid::new_v4().to_string(), "nbf": now_ts(), "iat": now_ts(), "exp": now_ts() + 300});
    let mut header = jsonwebtoken::Header::new(Algorithm::PS256);
    header.x5t_s256 = Some(good_cred.x5t_s256.clone());
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(other.key_pem().as_bytes()).expect("key"),
    )
    .expect("signs");
    let (status, body) = with_assertion(&idp, &forged, CLIENT_ASSERTION_TYPE).await;
    assert_eq!(
        (status, &body["error_codes"]),
        (401, &json!([700027])),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("signature")
    );

    // Wrong audience, wrong issuer, and the wrong assertion type.
    let wrong_aud = good_cred
        .client_assertion(
            DEFAULT_CLIENT_ID,
            "https://login.microsoftonline.com/x/oauth2/v2.0/token",
            now_ts(),
        )
        .expect("signs");
    let (status, body) =
        with_assertion(&idp, wrong_aud.expose_secret(), CLIENT_ASSERTION_TYPE).await;
    assert_eq!(
        (status, &body["error_codes"]),
        (401, &json!([50012])),
        "{body}"
    );
    let jwt = good_cred
        .client_assertion("someone-else", &endpoint, now_ts())
        .expect("signs");
    let (status, body) = with_assertion(&idp, jwt.expose_secret(), CLIENT_ASSERTION_TYPE).await;
    assert_eq!(
        (status, &body["error_codes"]),
        (401, &json!([50012])),
        "{body}"
    );
    let jwt = good_cred
        .client_assertion(DEFAULT_CLIENT_ID, &endpoint, now_ts())
        .expect("signs");
    let (status, body) = with_assertion(&idp, jwt.expose_secret(), "urn:wrong").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    // An assertion that has expired.
    let old = good_cred
        .client_assertion(DEFAULT_CLIENT_ID, &endpoint, now_ts() - 3600)
        .expect("signs");
    let (status, body) = with_assertion(&idp, old.expose_secret(), CLIENT_ASSERTION_TYPE).await;
    assert_eq!(
        (status, &body["error_codes"]),
        (401, &json!([50012])),
        "{body}"
    );
}

#[tokio::test]
async fn an_expired_registered_certificate_is_refused_naming_its_expiry() {
    use entrance::{AssertionAlg, CLIENT_ASSERTION_TYPE};
    use secrecy::ExposeSecret as _;

    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let expired = tokio::task::spawn_blocking(move || {
        TestCertificate::generate("expired", now - 400 * day, now - day).expect("cert")
    })
    .await
    .expect("key");
    let idp = start().await;
    idp.register_certificate(&expired.cert_pem)
        .expect("registers");
    let jwt = credential(&expired, AssertionAlg::Ps256)
        .client_assertion(DEFAULT_CLIENT_ID, &idp.token_endpoint(), now_ts())
        .expect("signs");
    let (status, body) = with_assertion(&idp, jwt.expose_secret(), CLIENT_ASSERTION_TYPE).await;
    assert_eq!(
        (status, &body["error_codes"]),
        (401, &json!([700027])),
        "{body}"
    );
    let text = body["error_description"].as_str().unwrap_or("");
    assert!(text.contains("expired"), "{text}");
    // Junk is refused at registration, like the portal refuses a file that is no certificate.
    assert!(idp.register_certificate("not a certificate").is_err());
}
