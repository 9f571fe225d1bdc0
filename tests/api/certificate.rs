//! Certificate credentials (private_key_jwt, RFC 7523): entrance signs a client assertion with
//! the configured key; the mock IdP checks it against the certificate registered for the app.
//! Certificates and keys are made here, per test: none is committed.

use entrance::{
    Config, HttpClient, aadsts,
    doctor::{self, Status},
};
use mock_idp::{Behaviour, DEFAULT_CLIENT_ID, MockIdp, MockIdpSettings, TestCertificate};
use reqwest::StatusCode;

use crate::helpers::{
    AppOptions, TestApp, assert_refused, assert_signed_in, log_lines_with, spawn_app_with,
};

/// RSA key generation is slow; keep it off the async workers.
async fn certificate(name: &'static str, days: u64) -> TestCertificate {
    tokio::task::spawn_blocking(move || {
        TestCertificate::generate_valid_for_days(name, days).expect("test certificate")
    })
    .await
    .expect("key generation")
}

/// Writes the certificate and `key_pem` to fresh files; returns the connection's TOML lines.
fn credential_toml(tc: &TestCertificate, key_pem: &str, extra: &str) -> String {
    let dir = std::env::temp_dir().join(format!("entrance-cert-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &tc.cert_pem).expect("write cert");
    std::fs::write(&key, key_pem).expect("write key");
    format!(
        "client_certificate_file = {:?}\nclient_private_key_file = {:?}\n{extra}",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// entrance configured with `signing` (certificate and its own key); the IdP knows `registered`.
async fn spawn_with_certificate(
    signing: &TestCertificate,
    registered: &TestCertificate,
    extra: &str,
) -> TestApp {
    let app = spawn_app_with(AppOptions {
        credential_toml: Some(credential_toml(signing, signing.key_pem(), extra)),
        ..Default::default()
    })
    .await;
    app.idp
        .register_certificate(&registered.cert_pem)
        .expect("the IdP accepts the certificate");
    app
}

#[tokio::test]
async fn a_good_certificate_signs_in_with_ps256() {
    let tc = certificate("entrance ps256", 365).await;
    let app = spawn_with_certificate(&tc, &tc, "").await;
    let me = assert_signed_in(&app, app.login().await).await;
    assert_eq!(me["connection"], "contoso");
    // No client secret was configured, so the IdP can only have accepted the assertion.
    assert!(
        app.config.connections[0].credential.certificate().is_some(),
        "a certificate connection"
    );
}

#[tokio::test]
async fn rs256_can_be_selected() {
    let tc = certificate("entrance rs256", 365).await;
    let app = spawn_with_certificate(&tc, &tc, "client_assertion_alg = \"RS256\"").await;
    assert_signed_in(&app, app.login().await).await;
}

#[tokio::test]
async fn a_key_the_idp_does_not_know_is_explained_by_aadsts700027_and_its_fix() {
    let uploaded = certificate("uploaded", 365).await;
    let local = certificate("not uploaded", 365).await;
    let app = spawn_with_certificate(&local, &uploaded, "").await;
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, false).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let html = res.text().await.expect("html");
    let row = aadsts(700027).expect("700027 is in the table");
    assert!(html.contains("AADSTS700027"), "{html}");
    assert!(
        html.contains(&entrance::escape_html(&row.fix)),
        "the admin's fix is shown: {html}"
    );
    assert!(html.contains("/login?connection=contoso"), "offers a retry");
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
}

/// entrance refuses to *start* with an expired certificate (a config unit test covers that),
/// so this is the case startup cannot catch: the certificate expires while entrance runs.
/// The mock IdP's certificate clock is moved past notAfter instead of the test sleeping.
#[tokio::test]
async fn a_certificate_that_expires_while_running_is_refused_at_the_idp() {
    let tc = certificate("short-lived", 10).await;
    let app = spawn_with_certificate(&tc, &tc, "").await;
    let thumbprint = app.config.connections[0]
        .credential
        .certificate()
        .expect("cert")
        .thumbprint_hex
        .clone();
    assert!(
        log_lines_with(&thumbprint)
            .iter()
            .any(|l| l.contains("expires soon")),
        "startup warns about a certificate within 30 days of expiry"
    );
    app.idp.set_behaviour(Behaviour {
        certificate_clock_offset_secs: 11 * 86_400,
        ..Default::default()
    });
    let body = assert_refused(
        &app,
        app.login().await,
        StatusCode::BAD_GATEWAY,
        "token_refused",
        Some("invalid_client"),
    )
    .await;
    assert_eq!(body["aadsts"], 700027);
    // The page has the AADSTS code's fix; Entra's own words ("[Reason - The key used is
    // expired.]", with the app and tenant) are in the log line of that reference (issue 12.5).
    let admin = body["admin"].as_str().unwrap_or_default();
    assert!(admin.contains("AADSTS700027"), "{admin}");
    assert!(!body.to_string().contains("Reason -"), "{body}");
    let cid = body["correlation_id"].as_str().expect("reference");
    assert!(
        log_lines_with(cid)
            .iter()
            .any(|l| l.contains("idp_description") && l.contains("expired")),
        "the log names the expiry for {cid}"
    );
}

/// `entrance check --verify-secret` on a certificate connection at the mock IdP.
async fn doctor_report(idp: &MockIdp, tc: &TestCertificate) -> doctor::Report {
    let toml = format!(
        "listen = \"127.0.0.1:0\"\npublic_url = \"https://127.0.0.1:3000\"\n[[connections]]\nid = \"contoso\"\nmetadata_url = \"{}\"\nclient_id = \"{DEFAULT_CLIENT_ID}\"\n{}",
        idp.metadata_url(),
        credential_toml(tc, tc.key_pem(), "")
    );
    let loaded = Config::load_str_lenient(&toml).expect("lenient config loads");
    let http = HttpClient::new(&loaded.config.http).expect("client");
    doctor::check(&loaded, None, true, &http, time::OffsetDateTime::now_utc())
        .await
        .expect("no --connection given")
}

#[tokio::test]
async fn the_doctor_reports_the_certificate_instead_of_a_secret() {
    let tc = certificate("doctor", 365).await;
    let idp = MockIdp::start(MockIdpSettings {
        client_certificates: vec![tc.cert_pem.clone()],
        ..Default::default()
    })
    .await
    .expect("mock IdP starts");
    let report = doctor_report(&idp, &tc).await;
    let conn = &report.connections[0];
    assert!(conn.check(doctor::SECRET).is_none(), "{}", report.render());
    let cert = conn.check(doctor::CERTIFICATE).expect("certificate line");
    assert_eq!(cert.status, Status::Ok, "{}", report.render());
    assert!(cert.message.contains("CN=doctor"), "{}", cert.message);
    let expiry = conn.check(doctor::CERTIFICATE_EXPIRY).expect("expiry line");
    assert_eq!(expiry.status, Status::Ok, "{}", report.render());
    let creds = conn.check(doctor::CREDENTIALS).expect("credentials line");
    assert_eq!(creds.status, Status::Ok, "{}", report.render());
    assert!(
        creds.message.contains("certificate are right"),
        "{}",
        creds.message
    );
    assert!(report.passed(), "{}", report.render());

    // An expired certificate loads for the doctor and is an error line, not a crash.
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    let expired = tc
        .reissue("doctor", now - 400 * day, now - day)
        .expect("reissue");
    idp.register_certificate(&expired.cert_pem)
        .expect("registers");
    let report = doctor_report(&idp, &expired).await;
    let conn = &report.connections[0];
    let expiry = conn.check(doctor::CERTIFICATE_EXPIRY).expect("expiry line");
    assert_eq!(expiry.status, Status::Error, "{}", report.render());
    assert!(
        expiry
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("upload a new certificate"),
        "{}",
        report.render()
    );
    let creds = conn.check(doctor::CREDENTIALS).expect("credentials line");
    assert_eq!(creds.status, Status::Error, "{}", report.render());
    assert!(creds.message.contains("AADSTS700027"), "{}", creds.message);
    assert!(!report.passed());
}
