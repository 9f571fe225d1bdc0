//! `/healthz` and `/readyz`: ready means the session store answers; a connection whose IdP is
//! down is reported but never makes the whole service unready.

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
        ..AppOptions::default()
    })
    .await;

    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        let res = app.get("/readyz").await;
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
