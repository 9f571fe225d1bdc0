//! Secret rotation: several secrets per connection, the code exchange falling back to the next
//! when Entra refuses one as an invalid client, and the expiry shown by `/readyz`.

use mock_idp::{Behaviour, DEFAULT_CLIENT_SECRET};
use reqwest::StatusCode;

use crate::helpers::{
    AppOptions, TestApp, assert_refused, assert_signed_in, log_lines_with, spawn_app_with,
};

const WRONG: &str = "wrongQ~not-a-registered-secret-value-000";
const OTHER: &str = "otherQ~an-expired-secret-value-00000000";

/// Writes each secret to its own file in a fresh directory; returns the paths, in order.
fn secret_files(secrets: &[&str]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("entrance-rot-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = dir.join(format!("secret-{i}"));
            std::fs::write(&path, format!("{s}\n")).expect("write secret");
            path.display().to_string()
        })
        .collect()
}

async fn app_with_secret_files(paths: &[String]) -> TestApp {
    let list = paths
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    spawn_app_with(AppOptions {
        credential_toml: Some(format!("client_secret_files = [{list}]")),
        ..Default::default()
    })
    .await
}

/// The one fallback warning naming `refused` and `worked`.
fn fallback_warning(refused: &str, worked: &str) -> String {
    let lines = log_lines_with(&format!("{worked} worked"));
    lines
        .into_iter()
        .find(|l| l.contains(refused) && l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning names {refused} as refused and {worked} as working"))
}

#[tokio::test]
async fn a_wrong_first_secret_falls_back_to_the_next_and_says_which_to_remove() {
    let files = secret_files(&[WRONG, DEFAULT_CLIENT_SECRET]);
    let app = app_with_secret_files(&files).await;
    let res = app.login().await;
    assert_signed_in(&app, res).await;
    let line = fallback_warning(&files[0], &files[1]);
    assert!(line.contains("AADSTS7000215"), "{line}");
    assert!(line.contains("remove"), "{line}");
    for secret in [WRONG, DEFAULT_CLIENT_SECRET] {
        assert!(!line.contains(secret), "no secret value in the log: {line}");
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("entrance_client_secret_fallbacks_total{connection=\"contoso\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_expired_first_secret_falls_back_to_the_next() {
    let files = secret_files(&[OTHER, DEFAULT_CLIENT_SECRET]);
    let app = app_with_secret_files(&files).await;
    let res = app
        .login_with_behaviour(Behaviour {
            expired_client_secrets: vec![OTHER.to_owned()],
            ..Default::default()
        })
        .await;
    assert_signed_in(&app, res).await;
    let line = fallback_warning(&files[0], &files[1]);
    assert!(line.contains("AADSTS7000222"), "{line}");
}

#[tokio::test]
async fn the_first_secret_working_needs_no_fallback() {
    let files = secret_files(&[DEFAULT_CLIENT_SECRET, WRONG]);
    let app = app_with_secret_files(&files).await;
    let res = app.login().await;
    assert_signed_in(&app, res).await;
    assert!(log_lines_with(&format!("{} worked", files[1])).is_empty());
    assert!(log_lines_with(&format!("{} worked", files[0])).is_empty());
}

#[tokio::test]
async fn when_every_secret_is_refused_the_login_is_refused_as_before() {
    let files = secret_files(&[WRONG, OTHER]);
    let app = app_with_secret_files(&files).await;
    let res = app.login().await;
    let body = assert_refused(
        &app,
        res,
        StatusCode::BAD_GATEWAY,
        "token_refused",
        Some("invalid_client"),
    )
    .await;
    assert_eq!(body["aadsts"], 7000215);
}

#[tokio::test]
async fn readyz_shows_the_days_until_the_secret_expires() {
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::days(10)).date();
    let app = spawn_app_with(AppOptions {
        connection_extra: format!("client_secret_expires_at = \"{soon}\""),
        admin_listen: true,
        ..Default::default()
    })
    .await;
    let body: serde_json::Value = app
        .admin_get("/readyz")
        .await
        .json()
        .await
        .expect("readyz JSON");
    let conn = &body["connections"][0];
    let days = conn["secret_expires_in_days"].as_i64().expect("days");
    assert!((9..=10).contains(&days), "{body}");
    let warnings = conn["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{body}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap_or_default()
            .contains("expires on"),
        "{body}"
    );
}
