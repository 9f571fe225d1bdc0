//! Access tokens passed upstream (issue 14 items 2–3): `[connections.upstream]` asks Entra
//! (the mock) for an API token with `offline_access` at sign-in, `/auth` passes it as
//! `X-Auth-Request-Access-Token`, refreshes it once less than five minutes are left (the
//! injected clock moves; nobody sleeps), keeps the rotated refresh token, ends the session
//! when the grant is gone for good and keeps it through a transient failure. What every store
//! must do alike is in `store_contract` (`upstream_tokens_refresh_rotate_and_end_with_the_session`).

use std::time::Duration;

use mock_idp::{Behaviour, TokenError};
use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::helpers::{AppOptions, TestApp, assert_signed_in, spawn_app_with};

/// The backend API's App ID URI (docs/reference/ENTRA-2.md's fake API).
pub(crate) const BACKEND: &str = "api://11112222-bbbb-3333-cccc-4444dddd5555";

pub(crate) fn upstream_toml(extra: &str) -> String {
    format!(r#"upstream = {{ scopes = ["{BACKEND}/.default"]{extra} }}"#)
}

async fn upstream_app(extra: &str) -> TestApp {
    spawn_app_with(AppOptions {
        connection_extra: upstream_toml(extra),
        ..AppOptions::default()
    })
    .await
}

/// The payload of a JWT, parsed (the test reads the mock's own token).
pub(crate) fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// `/auth`'s answer: status and the access token header, if any.
pub(crate) async fn auth(app: &TestApp) -> (StatusCode, Option<String>) {
    let res = app.get("/auth").await;
    let token = res
        .headers()
        .get("x-auth-request-access-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (res.status(), token)
}

/// One token, checked to be the mock's API token of the user.
pub(crate) fn api_token(token: Option<String>) -> String {
    let token = token.expect("X-Auth-Request-Access-Token");
    let c = claims(&token);
    assert_eq!(c["aud"], BACKEND, "{c}");
    assert_eq!(c["scp"], "access_as_user", "{c}");
    assert_eq!(c["oid"], "00000000-0000-0000-0000-00000000a0a0", "{c}");
    token
}

#[tokio::test]
async fn the_sign_in_asks_for_the_api_and_offline_access_and_auth_passes_the_token() {
    let app = upstream_app("").await;
    let authorize = app.begin_login().await;
    let scope = authorize
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .expect("scope");
    assert_eq!(
        scope,
        format!("openid profile email offline_access {BACKEND}/.default")
    );
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, true).await;
    // The cookie is the session id and nothing else: the tokens live server-side.
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.len() < 200, "{cookie}");
    assert_signed_in(&app, res).await;

    let (status, token) = auth(&app).await;
    assert_eq!(status, StatusCode::OK);
    let token = api_token(token);
    // The same person as the identity headers, and the same token until it is due.
    assert_eq!(auth(&app).await.1.as_deref(), Some(token.as_str()));
    assert_eq!(app.idp.counters().refresh, 0);
    // A connection without the table passes no token (the bearer and browser tests' apps).
    let plain = spawn_app_with(AppOptions::default()).await;
    assert_signed_in(&plain, plain.login().await).await;
    assert_eq!(auth(&plain).await, (StatusCode::OK, None));

    // No token, access or refresh, reached a log line or a cookie.
    let mut secrets: Vec<String> = app
        .idp
        .issued_tokens()
        .into_iter()
        .filter(|t| t.starts_with("mock-refresh-token.") || t == &token)
        .collect();
    secrets.sort();
    secrets.dedup();
    assert_eq!(secrets.len(), 2, "one access and one refresh token");
    for t in &secrets {
        assert!(
            crate::helpers::log_lines_with(t).is_empty(),
            "a token was logged"
        );
        assert!(!cookie.contains(t.as_str()));
    }
}

#[tokio::test]
async fn a_token_is_refreshed_when_less_than_five_minutes_are_left_and_the_rotated_one_kept() {
    let app = upstream_app("").await;
    assert_signed_in(&app, app.login().await).await;
    let first = api_token(auth(&app).await.1);
    // The mock's tokens live 3599 s; 5 min 1 s before that, still the same token.
    app.clock.advance(Duration::from_secs(3599 - 301));
    assert_eq!(auth(&app).await.1.as_deref(), Some(first.as_str()));
    assert_eq!(app.idp.counters().refresh, 0);
    // Two seconds later less than five minutes are left: refreshed, once.
    app.clock.advance(Duration::from_secs(2));
    let second = api_token(auth(&app).await.1);
    assert_ne!(second, first);
    assert_eq!(app.idp.counters().refresh, 1);
    assert_eq!(auth(&app).await.1.as_deref(), Some(second.as_str()));
    assert_eq!(app.idp.counters().refresh, 1);
    // The mock spends a refresh token when it is redeemed: a second refresh succeeds only
    // with the rotated one, so entrance kept it.
    app.clock.advance(Duration::from_secs(3599));
    let third = api_token(auth(&app).await.1);
    assert_ne!(third, second);
    assert_eq!(app.idp.counters().refresh, 2);
    let metrics = app.get("/metrics").await.text().await.unwrap_or_default();
    assert!(
        metrics.contains(
            r#"entrance_upstream_token_refreshes_total{connection="contoso",result="refreshed"} 2"#
        ),
        "{metrics}"
    );
}

/// Entra's answers that need the user again (AADSTS50173 revoked, 50076 MFA now required,
/// 70043 expired by a Conditional Access sign-in frequency) end the session: 401 (nginx then
/// sends the browser to sign in), or with `?redirect=true` a 302 to sign in; the reason and
/// AADSTS code are in `/admin/traces`.
#[tokio::test]
async fn a_refresh_the_idp_refuses_for_good_ends_the_session() {
    let cases: [(&str, Option<TokenError>, u32); 3] = [
        ("revoked", None, 50173),
        (
            "mfa",
            Some(TokenError::entra(
                "interaction_required",
                50076,
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access the resource.",
            )),
            50076,
        ),
        (
            "expired",
            Some(TokenError::entra(
                "invalid_grant",
                70043,
                "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access.",
            )),
            70043,
        ),
    ];
    for (case, error, code) in cases {
        let app = spawn_app_with(AppOptions {
            connection_extra: upstream_toml(""),
            admin_listen: true,
            ..AppOptions::default()
        })
        .await;
        assert_signed_in(&app, app.login().await).await;
        api_token(auth(&app).await.1);
        match error {
            None => app.idp.revoke_refresh_tokens(),
            Some(e) => app.idp.set_behaviour(Behaviour {
                refresh_error: Some(e),
                ..Default::default()
            }),
        }
        app.clock.advance(Duration::from_secs(3400));
        let redirect = case == "mfa";
        let path = if redirect {
            "/auth?redirect=true"
        } else {
            "/auth"
        };
        let res = app.get(path).await;
        if redirect {
            assert_eq!(res.status(), StatusCode::FOUND, "{case}");
            assert!(crate::helpers::location(&res).contains("/login"), "{case}");
        } else {
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{case}");
            assert!(res.headers().get("x-auth-request-access-token").is_none());
        }
        assert_eq!(app.idp.counters().refresh, 1, "{case}");
        // The session is over: /me and /auth say so, and no refresh is tried again.
        assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(auth(&app).await.0, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(app.idp.counters().refresh, 1, "{case}");
        let traces: Value = app
            .admin_get("/admin/traces?connection=contoso")
            .await
            .json()
            .await
            .expect("traces");
        let last = &traces["failures"][0];
        assert_eq!(last["step"], "upstream_token", "{case}: {traces}");
        assert_eq!(last["aadsts"], code, "{case}: {traces}");
        // Signing in again works and brings a new token.
        app.idp.set_behaviour(Behaviour::default());
        assert_signed_in(&app, app.login().await).await;
        api_token(auth(&app).await.1);
    }
}

/// `temporarily_unavailable` (or a timeout, a 5xx) keeps the session: the current token while
/// it is valid, 503 once it has expired, and the next request tries again.
#[tokio::test]
async fn a_transient_refresh_failure_keeps_the_session_and_is_retried() {
    let app = upstream_app("").await;
    assert_signed_in(&app, app.login().await).await;
    let first = api_token(auth(&app).await.1);
    app.idp.set_behaviour(Behaviour {
        refresh_error: Some(TokenError {
            status: 503,
            body: serde_json::json!({
                "error": "temporarily_unavailable",
                "error_description": "AADSTS90033: A transient error has occurred. Please try again.",
                "error_codes": [90033]
            }),
        }),
        ..Default::default()
    });
    app.clock.advance(Duration::from_secs(3400));
    assert_eq!(auth(&app).await, (StatusCode::OK, Some(first.clone())));
    assert_eq!(app.idp.counters().refresh, 1);
    // Expired now: no token to pass, but the session stays.
    app.clock.advance(Duration::from_secs(300));
    let res = app.get("/auth").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.expect("JSON error");
    assert_eq!(body["error"], "upstream_refresh_failed", "{body}");
    assert_eq!(app.me().await.status(), StatusCode::OK);
    // The IdP is back: the next request refreshes.
    app.idp.set_behaviour(Behaviour::default());
    let fresh = api_token(auth(&app).await.1);
    assert_ne!(fresh, first);
    assert_eq!(app.idp.counters().refresh, 3);
    let metrics = app.get("/metrics").await.text().await.unwrap_or_default();
    assert!(
        metrics.contains(
            r#"entrance_upstream_token_refreshes_total{connection="contoso",result="failed"} 2"#
        ),
        "{metrics}"
    );
}

/// A token over `upstream.max_token_bytes` is never cut or dropped: `/auth` fails, says why in
/// the log, and counts it. Its twin within the budget passes.
#[tokio::test]
async fn a_token_over_its_budget_fails_auth_with_a_logged_reason() {
    let app = upstream_app(", max_token_bytes = 1024").await;
    assert_signed_in(&app, app.login().await).await;
    let res = app.get("/auth").await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.headers().get("x-auth-request-access-token").is_none());
    let body: Value = res.json().await.expect("JSON error");
    assert_eq!(body["error"], "access_token_too_large", "{body}");
    let reference = body["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let lines = crate::helpers::log_lines_with(&reference);
    assert!(
        lines.iter().any(|l| l.contains("max_token_bytes")),
        "{lines:?}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap_or_default();
    assert!(
        metrics.contains(r#"entrance_upstream_token_oversize_total{connection="contoso"} 1"#),
        "{metrics}"
    );

    let twin = upstream_app(", max_token_bytes = 4096").await;
    assert_signed_in(&twin, twin.login().await).await;
    api_token(auth(&twin).await.1);
}

/// A session from before the connection had an `upstream` table holds no token: it ends, and
/// signing in again brings one.
#[tokio::test]
async fn a_session_from_before_the_upstream_table_signs_in_again() {
    let app = spawn_app_with(AppOptions::default()).await;
    assert_signed_in(&app, app.login().await).await;
    let without = app.toml.clone();
    let with = without.replacen(
        "[[connections]]",
        &format!("[[connections]]\n{}", upstream_toml("")),
        1,
    );
    assert_ne!(with, without);
    app.reload_with(&without, &with);
    assert_eq!(auth(&app).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_signed_in(&app, app.login().await).await;
    api_token(auth(&app).await.1);
}

#[tokio::test]
async fn configuration_mistakes_are_named() {
    for (extra, says) in [
        (
            r#"upstream = { scopes = ["api://a/.default", "https://graph.microsoft.com/User.Read"] }"#,
            "one resource",
        ),
        (
            r#"upstream = { scopes = ["offline_access"] }"#,
            "names no API",
        ),
        (
            "userinfo = true\nupstream = { scopes = [\"api://a/.default\"] }",
            "userinfo",
        ),
    ] {
        let toml = format!(
            r#"listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:3000"
[[connections]]
id = "c"
metadata_url = "http://127.0.0.1:9/t/v2.0/.well-known/openid-configuration"
client_id = "00001111-aaaa-2222-bbbb-3333cccc4444"
client_secret = "x"
{extra}
"#
        );
        let err = entrance::Config::load_str(&toml).expect_err(extra);
        assert!(err.to_string().contains(says), "{extra}: {err}");
    }
}
