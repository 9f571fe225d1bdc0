//! `/metrics`: Prometheus text labelled by route template, login outcomes by connection and
//! reason, and the admin listener that takes metrics off the public address.

use mock_idp::Behaviour;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{AppOptions, assert_signed_in, spawn_app, spawn_app_with};

fn line_value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_logins_by_connection_and_reason_with_route_templates() {
    let app = spawn_app().await;
    let res = app.login().await;
    assert_signed_in(&app, res).await;
    let res = app
        .login_with_behaviour(Behaviour {
            claims_set: [("nonce".to_owned(), json!("other"))].into_iter().collect(),
            ..Default::default()
        })
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let _ = app.get("/auth").await;
    // From a browser that is not signed in (a signed-in one would just be sent on).
    let _ = crate::helpers::browser()
        .get(app.url("/login/callback?state=nope&code=x"))
        .send()
        .await;

    let res = app.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.expect("text");
    assert!(
        line_value(
            &text,
            r#"entrance_logins_started_total{connection="contoso"}"#
        ) >= Some(2.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            r#"entrance_logins_succeeded_total{connection="contoso"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        line_value(
            &text,
            r#"entrance_logins_failed_total{connection="contoso",reason="nonce_mismatch"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            r#"entrance_logins_failed_total{connection="unknown",reason="state_unknown"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains(r#"route="/login/callback""#), "{text}");
    assert!(
        !text.contains("state=nope"),
        "raw paths never become labels"
    );
    assert!(text.contains(r#"entrance_auth_requests_total{outcome="authorized"}"#));
    assert!(text.contains("entrance_token_exchange_duration_seconds_bucket"));
    assert!(text.contains(r#"entrance_jwks_fetch_duration_seconds_count{connection="contoso"}"#));
    assert!(text.contains(r#"entrance_key_refreshes_total{connection="contoso",result="ok"}"#));
}

#[tokio::test]
async fn secret_expiry_days_are_exported() {
    let app = spawn_app_with(AppOptions {
        connection_extra: "client_secret_expires_at = 2099-01-01".into(),
        ..Default::default()
    })
    .await;
    let text = app.get("/metrics").await.text().await.expect("text");
    let days = line_value(
        &text,
        r#"entrance_client_secret_expiry_days{connection="contoso"}"#,
    )
    .expect("a gauge for contoso");
    assert!(days > 20_000.0, "{days}");
}

#[tokio::test]
async fn an_admin_listener_takes_metrics_off_the_public_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let app = spawn_app_with(AppOptions {
        top_toml: format!("admin_listen = \"127.0.0.1:{port}\""),
        ..Default::default()
    })
    .await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    let admin = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("admin metrics");
    assert_eq!(admin.status(), StatusCode::OK);
    assert!(
        admin
            .text()
            .await
            .expect("text")
            .contains("entrance_logins_started")
    );
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("admin readyz");
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn invented_http_methods_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    let client = crate::helpers::client();
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("X{i}AUTH").as_bytes()).expect("token");
        let _ = client
            .request(method, app.url("/auth"))
            .send()
            .await
            .expect("answered");
    }
    let text = app.get("/metrics").await.text().await.expect("text");
    assert!(
        !text.contains("X1AUTH"),
        "a method a client made up became a label"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("route=\"/auth\"") && l.contains("method=\"OTHER\"")),
        "{text}"
    );
}
