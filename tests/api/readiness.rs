//! `/healthz` and `/readyz`: ready means the session store answers; a connection whose IdP is
//! down is reported (on the admin listener) but never makes the whole service unready; the
//! public listener's `/readyz` says the status and nothing else.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{AppOptions, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_answers() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn one_unreachable_idp_does_not_make_readyz_fail() {
    // A loopback port nobody listens on: connecting is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let app = spawn_app_with(AppOptions {
        connection_extra: format!(
            r#"
[[connections]]
id = "fabrikam"
name = "Fabrikam"
metadata_url = "http://127.0.0.1:{closed}/tenant/v2.0/.well-known/openid-configuration"
client_id = "entrance"
client_secret = "a-secret-only-for-this-test"
"#
        ),
        admin_listen: true,
        ..AppOptions::default()
    })
    .await;

    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        let res = app.admin_get("/readyz").await;
        assert_eq!(res.status(), StatusCode::OK, "ready whatever the IdPs do");
        body = res.json().await.expect("readyz JSON");
        if body["connections"][1]["state"] == "not_ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["store"]["ok"], true, "{body}");
    assert!(body["store"]["error"].is_null(), "{body}");
    let conns = body["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 2, "{body}");
    assert_eq!(conns[0]["id"], "contoso");
    assert_eq!(conns[0]["name"], "Contoso");
    assert_eq!(conns[0]["state"], "ready");
    assert!(conns[0]["reason"].is_null(), "{body}");
    assert_eq!(conns[1]["id"], "fabrikam");
    assert_eq!(conns[1]["state"], "not_ready", "{body}");
    assert_eq!(conns[1]["reason"], "metadata_unreachable", "{body}");
}

/// Issue 12.5: anyone can ask the public `/readyz`. It says ready or not, and nothing an
/// attacker could use: no connection ids or names, no secret expiry, no store error.
#[tokio::test]
async fn the_public_readyz_shows_the_status_only() {
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::days(10)).date();
    for admin_listen in [false, true] {
        let app = spawn_app_with(AppOptions {
            connection_extra: format!("client_secret_expires_at = \"{soon}\""),
            admin_listen,
            ..AppOptions::default()
        })
        .await;
        let res = app.get("/readyz").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        let body: serde_json::Value = res.json().await.expect("readyz JSON");
        assert_eq!(
            body,
            serde_json::json!({"status": "ready"}),
            "admin_listen={admin_listen}"
        );
        if admin_listen {
            let admin: serde_json::Value = app
                .admin_get("/readyz")
                .await
                .json()
                .await
                .expect("admin readyz JSON");
            assert_eq!(admin["connections"][0]["name"], "Contoso", "{admin}");
            assert!(
                admin["connections"][0]["secret_expires_in_days"].is_i64(),
                "{admin}"
            );
        }
    }
}
