//! Doctor tests: each judgement on its inputs, without sockets.

use url::Url;

use super::checks::*;
use super::*;
use crate::config::ConfigError;
use crate::config::SecretSource;
use crate::oidc::http_client::FetchError;
use crate::oidc::provider::ProviderError;
use crate::oidc::token::{self, TokenError};
use secrecy::SecretString;
use time::macros::datetime;

const TENANT: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
const CLIENT: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";

fn conn(metadata_url: &str) -> ConnectionConfig {
    ConnectionConfig::for_tests(metadata_url)
}

fn entra_conn(tenant: &str) -> ConnectionConfig {
    conn(&format!(
        "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
    ))
}

#[test]
fn userinfo_needs_an_endpoint_in_the_metadata() {
    let mut meta = fixture("tenant");
    let ok = judge_userinfo(Some(&meta));
    assert_eq!(ok.status, Status::Ok);
    assert!(
        ok.message
            .contains("https://graph.microsoft.com/oidc/userinfo"),
        "{}",
        ok.message
    );
    meta.userinfo_endpoint = None;
    let missing = judge_userinfo(Some(&meta));
    assert_eq!(missing.status, Status::Error);
    assert!(
        missing
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("remove userinfo = true"))
    );
    assert_eq!(judge_userinfo(None).status, Status::Skipped);
}

fn fixture(name: &str) -> Metadata {
    let text = match name {
        "common" => include_str!("../../tests/fixtures/entra/openid-configuration.common.json"),
        _ => include_str!("../../tests/fixtures/entra/openid-configuration.tenant.json"),
    };
    serde_json::from_str(text).expect("fixture parses")
}

fn read(source: SecretSource, value: &str) -> SecretAsRead {
    SecretAsRead {
        source,
        label: "client_secret".into(),
        value: Ok(SecretString::from(value)),
    }
}

fn refused(error: &str, code: Option<u32>) -> Result<(), TokenError> {
    Err(TokenError::Refused {
        status: 400,
        error: token::OAuthError {
            error: error.into(),
            error_description: code.map(|c| format!("AADSTS{c}: text. Trace ID: x")),
            error_codes: code.into_iter().collect(),
            trace_id: None,
            correlation_id: None,
        },
    })
}

#[test]
fn secret_judgement() {
    let entra = |v: &str| judge_secret(&read(SecretSource::Inline, v), true).status;
    assert_eq!(
        entra("bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR"),
        Status::Ok
    );
    assert_eq!(entra("c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f"), Status::Error);
    assert_eq!(
        entra(" bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR\n"),
        Status::Warning
    );
    assert_eq!(entra("   "), Status::Error);
    let other = judge_secret(
        &read(
            SecretSource::Env("S".into()),
            "c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f",
        ),
        false,
    );
    assert_eq!(other.status, Status::Warning);
    assert!(
        other.message.contains("environment variable S"),
        "{}",
        other.message
    );
    let missing = SecretAsRead {
        source: SecretSource::Unknown,
        label: "client_secret".into(),
        value: Err(ConfigError::Invalid {
            key: "connections[0].client_secret_env".into(),
            problem: "no client secret is configured".into(),
            fix: "set it".into(),
        }),
    };
    let c = judge_secret(&missing, true);
    assert_eq!(c.status, Status::Error);
    assert!(c.message.contains("client_secret_env"));
}

#[test]
fn the_secret_value_is_never_printed() {
    let s = "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR";
    for v in [s.to_owned(), format!(" {s} ")] {
        let c = judge_secret(&read(SecretSource::Inline, &v), true);
        assert!(!c.message.contains(s) && !c.fix.unwrap_or_default().contains(s));
    }
}

#[test]
fn client_id_judgement() {
    assert_eq!(
        judge_client_id(&entra_conn(TENANT), true).status,
        Status::Ok
    );
    let mut c = entra_conn(TENANT);
    c.client_id = "my-app".into();
    assert_eq!(judge_client_id(&c, true).status, Status::Error);
    assert_eq!(judge_client_id(&c, false).status, Status::Ok);
    c.client_id = TENANT.into();
    let check = judge_client_id(&c, true);
    assert_eq!(check.status, Status::Error);
    assert!(check.message.contains("tenant"), "{}", check.message);
    c.client_id = String::new();
    assert_eq!(judge_client_id(&c, false).status, Status::Error);
}

#[test]
fn expiry_judgement() {
    let now = datetime!(2026-06-01 12:00 UTC);
    assert_eq!(judge_expiry(None, now).status, Status::Skipped);
    assert_eq!(
        judge_expiry(Some(datetime!(2027-01-01 0:00 UTC)), now).status,
        Status::Ok
    );
    let soon = judge_expiry(Some(datetime!(2026-06-15 0:00 UTC)), now);
    assert_eq!(soon.status, Status::Warning);
    assert!(soon.message.contains("in 13 days"), "{}", soon.message);
    // Exactly 30 days ahead is no longer "within 30 days".
    assert_eq!(
        judge_expiry(Some(datetime!(2026-07-01 12:00 UTC)), now).status,
        Status::Ok
    );
    let past = judge_expiry(Some(datetime!(2026-05-01 0:00 UTC)), now);
    assert_eq!(past.status, Status::Error);
    assert!(past.message.contains("2026-05-01"), "{}", past.message);
    assert_eq!(judge_expiry(Some(now), now).status, Status::Error);
}

#[test]
fn redirect_uri_judgement() {
    let https = Url::parse("https://sso.example.com").expect("url");
    let c = judge_redirect_uri(&https, "https://sso.example.com/login/callback");
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("https://sso.example.com/login/callback"));
    let http = Url::parse("http://localhost:3000").expect("url");
    assert_eq!(
        judge_redirect_uri(&http, "http://localhost:3000/login/callback").status,
        Status::Warning
    );
}

#[test]
fn jwks_without_usable_keys_is_an_error() {
    let keys = crate::oidc::jwks::KeySet::from_jwks_json(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#)
        .map_err(|e| ProviderError::BadJwks(e.to_string()));
    let c = judge_jwks("https://idp/keys", keys);
    assert_eq!(c.status, Status::Error);
    assert!(c.message.contains("no usable"), "{}", c.message);
}

#[test]
fn multi_tenant_verification_goes_to_the_home_tenant() {
    let mut c = entra_conn("organizations");
    let mut meta = fixture("common");
    meta.token_endpoint =
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/token".into();
    let missing = verify_endpoint(&c, &meta, true, false).expect_err("needs home_tenant");
    assert_eq!(missing.status, Status::Warning);
    assert!(missing.fix.unwrap_or_default().contains("home_tenant"));
    c.home_tenant = Some(TENANT.into());
    let url = verify_endpoint(&c, &meta, true, false).expect("endpoint");
    assert_eq!(
        url.as_str(),
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    );
    let tenant = entra_conn(TENANT);
    let url = verify_endpoint(&tenant, &fixture("tenant"), true, true).expect("endpoint");
    assert_eq!(url.as_str(), fixture("tenant").token_endpoint);
}

#[test]
fn a_mismatched_document_gets_no_secret_for_another_host() {
    let c = conn("https://idp.example.org/.well-known/openid-configuration");
    let mut meta = fixture("tenant");
    meta.token_endpoint = "https://elsewhere.example.net/token".into();
    assert!(verify_endpoint(&c, &meta, false, false).is_err());
    assert!(verify_endpoint(&c, &meta, false, true).is_ok());
}

#[test]
fn verify_scope_defaults() {
    let c = entra_conn(TENANT);
    assert_eq!(
        verify_scope(&c, true, None).as_deref(),
        Some("https://graph.microsoft.com/.default")
    );
    assert_eq!(
        verify_scope(&c, true, Some("graph.microsoft.us")).as_deref(),
        Some("https://graph.microsoft.us/.default")
    );
    assert_eq!(verify_scope(&c, false, None), None);
    let mut c = c;
    c.verify_scope = Some("api://x/.default".into());
    assert_eq!(
        verify_scope(&c, false, None).as_deref(),
        Some("api://x/.default")
    );
}

#[test]
fn credentials_translation() {
    let j = |r| judge_credentials(r, CLIENT, Some(TENANT), None, "secret");
    assert_eq!(j(Ok(())).status, Status::Ok);
    let wrong = j(refused("invalid_client", Some(7000215)));
    assert_eq!(wrong.status, Status::Error);
    assert!(wrong.message.contains("Secret ID"), "{}", wrong.message);
    assert!(
        j(refused("invalid_client", Some(7000222)))
            .message
            .contains("expired")
    );
    let unknown = j(refused("unauthorized_client", Some(700016)));
    assert_eq!(unknown.status, Status::Error);
    assert!(unknown.message.contains(CLIENT) && unknown.message.contains(TENANT));
    assert_eq!(
        j(refused("invalid_request", Some(90002))).status,
        Status::Error
    );
    for e in ["unsupported_grant_type", "unauthorized_client"] {
        let c = j(refused(e, None));
        assert_eq!(c.status, Status::Warning, "{e}");
        assert!(c.message.starts_with("could not verify"), "{}", c.message);
    }
    assert_eq!(j(refused("invalid_scope", None)).status, Status::Warning);
    assert_eq!(j(refused("invalid_client", None)).status, Status::Error);
    assert_eq!(j(refused("server_error", None)).status, Status::Warning);
    assert_eq!(
        j(Err(TokenError::Transport(FetchError::Connect(
            "refused".into()
        ))))
        .status,
        Status::Error
    );
}

#[test]
fn render_puts_fixes_under_failures_and_passed_ignores_warnings() {
    let report = Report {
        connections: vec![ConnectionReport {
            id: "c".into(),
            name: "Contoso".into(),
            checks: vec![
                Check::ok(METADATA, "fine"),
                Check::warning(REDIRECT_URI, "plain http", "use https"),
            ],
        }],
    };
    assert!(report.passed());
    let text = report.render();
    assert!(
        text.starts_with("c (Contoso)\n  ok      metadata      fine\n"),
        "{text}"
    );
    assert!(
        text.contains("\n                        fix: use https\n"),
        "{text}"
    );
    assert!(
        text.contains("1 connection checked: 0 errors, 1 warning"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json().expect("serialises")).expect("JSON");
    assert_eq!(json["passed"], true);
    assert_eq!(json["connections"][0]["checks"][1]["status"], "warning");
    assert_eq!(
        json["connections"][0]["checks"][0]["fix"],
        serde_json::Value::Null
    );
}
