//! Workload identity federation (issue 15 item 2): a connection with no secret at all signs in
//! with the platform's token — a file entrance reads afresh for every token request — and the
//! mock IdP checks it as Entra does (its federated identity credentials, the issuer's key, the
//! time range). Each refusal is named by its AADSTS code, and the log line carries the
//! assertion's `iss`, `sub` and `aud` for the admin to compare.

use std::path::PathBuf;
use std::time::Duration;

use mock_idp::{FederatedCredential, FederatedIssuer, TOKEN_EXCHANGE_AUDIENCE};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{AppOptions, TestApp, assert_signed_in, spawn_app_with};

const CLUSTER: &str = "https://oidc.cluster.example/aaaabbbb-0000-cccc-1111-dddd2222eeee/00000000-aaaa-bbbb-cccc-000000000001/";
const SUBJECT: &str = "system:serviceaccount:sso:entrance";

/// A token file in its own temporary directory.
struct TokenFile {
    dir: PathBuf,
}

impl TokenFile {
    fn new() -> TokenFile {
        let dir = std::env::temp_dir().join(format!(
            "entrance-federated-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TokenFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("azure-identity-token")
    }

    /// What the kubelet does: replaces the file's content with a new token.
    fn write(&self, token: &str) {
        std::fs::write(self.path(), format!("{token}\n")).expect("write token");
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The mock with the cluster's issuer and the app's federated credential for entrance's
/// service account; entrance with `client_assertion_file` and no secret.
async fn federated_app(extra: &str) -> (TestApp, FederatedIssuer, TokenFile) {
    let file = TokenFile::new();
    file.write("not-yet-a-token");
    let app = spawn_app_with(AppOptions {
        credential_toml: Some(format!(
            "client_assertion_file = {:?}",
            file.path().display().to_string()
        )),
        connection_extra: extra.to_owned(),
        ..AppOptions::default()
    })
    .await;
    let cluster = app
        .idp
        .federated_issuer(CLUSTER)
        .await
        .expect("the cluster's key");
    app.idp
        .add_federated_credential(FederatedCredential::kubernetes(CLUSTER, "sso", "entrance"));
    file.write(
        &cluster
            .token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, 3600)
            .expect("token"),
    );
    (app, cluster, file)
}

/// A sign-in that the token endpoint refused: its JSON error.
async fn refused(app: &TestApp) -> Value {
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, true).await;
    assert!(
        res.status().is_server_error() || res.status().is_client_error(),
        "{}",
        res.status()
    );
    res.json().await.expect("a JSON error")
}

#[tokio::test]
async fn a_connection_without_a_secret_signs_in_and_survives_the_token_file_changing() {
    let (app, cluster, file) = federated_app("").await;
    assert_signed_in(&app, app.login().await).await;
    // The platform rotates the token: the next sign-in sends the new one, no restart.
    let before = app.idp.counters().token;
    file.write(
        &cluster
            .token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, 3600)
            .expect("token"),
    );
    let browser = crate::helpers::browser();
    let authorize = app.begin_login_with(&browser, "?connection=contoso").await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&browser, &callback, true).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.idp.counters().token, before + 1);

    // An expired token in the file (the platform stopped refreshing it): AADSTS700024, with
    // the fix; the assertion's claims are in the log line, never the assertion.
    let expired = cluster
        .token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, -60)
        .expect("token");
    file.write(&expired);
    let body = refused(&app).await;
    assert_eq!(body["error"], "token_refused", "{body}");
    assert!(body.to_string().contains("700024"), "{body}");
    let lines = crate::helpers::log_lines_with(SUBJECT);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(CLUSTER) && l.contains(TOKEN_EXCHANGE_AUDIENCE)),
        "the log names iss, sub and aud: {lines:?}"
    );
    assert!(
        crate::helpers::log_lines_with(&expired).is_empty(),
        "the assertion was logged"
    );

    // Refreshed again: sign-ins work again.
    file.write(
        &cluster
            .token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, 3600)
            .expect("token"),
    );
    let browser = crate::helpers::browser();
    let authorize = app.begin_login_with(&browser, "?connection=contoso").await;
    let callback = app.authorize(&authorize).await;
    assert_eq!(
        app.callback_with(&browser, &callback, true).await.status(),
        StatusCode::SEE_OTHER
    );
}

/// Each mismatch with the federated credential is refused with its own code, and the page's
/// admin hint says what to compare.
#[tokio::test]
async fn each_mismatch_with_the_federated_credential_is_named() {
    let (app, cluster, file) = federated_app("").await;
    let stranger = app
        .idp
        .federated_issuer("https://token.actions.githubusercontent.example")
        .await
        .expect("another issuer");
    for (token, code) in [
        (
            stranger.token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, 3600),
            "700211",
        ),
        (
            cluster.token(SUBJECT, "api://SomethingElse", 3600),
            "700212",
        ),
        (
            cluster.token(
                "system:serviceaccount:sso:other",
                TOKEN_EXCHANGE_AUDIENCE,
                3600,
            ),
            "700213",
        ),
    ] {
        file.write(&token.expect("token"));
        let body = refused(&app).await;
        assert!(body.to_string().contains(code), "{code}: {body}");
    }
    // Its twin: the right token signs in.
    file.write(
        &cluster
            .token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, 3600)
            .expect("token"),
    );
    assert_signed_in(&app, app.login().await).await;
}

/// Issue 15.2: "the refresh grant of the tokens issue uses the same credential".
#[tokio::test]
async fn the_refresh_grant_proves_the_client_with_the_federated_token() {
    let (app, cluster, file) = federated_app(&crate::upstream::upstream_toml("")).await;
    assert_signed_in(&app, app.login().await).await;
    let first = crate::upstream::api_token(crate::upstream::auth(&app).await.1);
    file.write(
        &cluster
            .token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, 3600)
            .expect("token"),
    );
    app.clock.advance(Duration::from_secs(3400));
    let second = crate::upstream::api_token(crate::upstream::auth(&app).await.1);
    assert_ne!(first, second);
    assert_eq!(app.idp.counters().refresh, 1);
}
