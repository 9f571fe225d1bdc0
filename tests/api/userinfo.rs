//! The optional userinfo call (`userinfo = true`, OpenID Connect Core §5.3): made with the
//! access token after the ID token is proven, its `sub` must be the ID token's, its claims only
//! fill gaps, and a failure fails the sign-in in bounded time with the step named.

use std::time::{Duration, Instant};

use mock_idp::{Behaviour, Fault};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{AppOptions, TestApp, assert_refused, assert_signed_in, spawn_app_with};

async fn app_with_userinfo() -> TestApp {
    spawn_app_with(AppOptions {
        connection_extra: "userinfo = true".into(),
        tables_toml: "[http]\ntimeout_secs = 2\nconnect_timeout_secs = 1".into(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn userinfo_fills_what_the_id_token_left_out() {
    let app = app_with_userinfo().await;
    // The ID token carries no email; userinfo does.
    let res = app
        .login_with_behaviour(Behaviour {
            claims_remove: vec!["email".into()],
            ..Default::default()
        })
        .await;
    let me = assert_signed_in(&app, res).await;
    assert_eq!(me["email"], "ada.lovelace@contoso.example");
    assert_eq!(
        me["email_verified"], false,
        "userinfo said nothing about it"
    );
    assert_eq!(app.idp.counters().userinfo, 1);
}

#[tokio::test]
async fn userinfo_never_overrides_the_id_token() {
    let app = app_with_userinfo().await;
    let res = app
        .login_with_behaviour(Behaviour {
            userinfo_claims_set: [
                ("name".to_owned(), json!("Mallory")),
                ("email".to_owned(), json!("mallory@evil.example")),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        })
        .await;
    let me = assert_signed_in(&app, res).await;
    assert_eq!(me["name"], "Ada Lovelace");
    assert_eq!(me["email"], "ada.lovelace@contoso.example");
}

#[tokio::test]
async fn a_userinfo_sub_that_is_not_the_id_tokens_is_refused() {
    let app = app_with_userinfo().await;
    let res = app
        .login_with_behaviour(Behaviour {
            userinfo_claims_set: [("sub".to_owned(), json!("someone-else"))]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await;
    assert_refused(
        &app,
        res,
        StatusCode::BAD_GATEWAY,
        "userinfo_failed",
        Some("userinfo_sub_mismatch"),
    )
    .await;
    // Twin: the same login with userinfo's own sub signs in.
    assert_signed_in(&app, app.login_with_behaviour(Behaviour::default()).await).await;
}

#[tokio::test]
async fn userinfo_failures_fail_the_sign_in_in_bounded_time_and_name_the_step() {
    let app = app_with_userinfo().await;
    for (fault, status, reason) in [
        (
            Fault::Status(500),
            StatusCode::BAD_GATEWAY,
            "userinfo_refused",
        ),
        (
            Fault::InvalidJson,
            StatusCode::BAD_GATEWAY,
            "userinfo_malformed",
        ),
        (
            Fault::WrongContentType,
            StatusCode::BAD_GATEWAY,
            "userinfo_unreachable",
        ),
        (
            Fault::Stall,
            StatusCode::GATEWAY_TIMEOUT,
            "userinfo_unreachable",
        ),
    ] {
        let started = Instant::now();
        let res = app
            .login_with_behaviour(Behaviour {
                userinfo_fault: fault.clone(),
                ..Default::default()
            })
            .await;
        let body = assert_refused(&app, res, status, "userinfo_failed", Some(reason)).await;
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{fault:?} took {:?}",
            started.elapsed()
        );
        assert!(
            body["admin"]
                .as_str()
                .is_some_and(|a| a.contains("userinfo")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn without_userinfo_true_there_is_no_userinfo_call() {
    let app = spawn_app_with(AppOptions::default()).await;
    assert_signed_in(&app, app.login().await).await;
    assert_eq!(app.idp.counters().userinfo, 0);
}

/// A provider that follows OpenID Connect Core §5.4 puts `name` and `email` in userinfo, not
/// in the ID token: with `userinfo` unset, a non-Entra connection (the mock on loopback is not
/// an Entra host) asks userinfo exactly when the ID token lacks a requested scope's claims.
#[tokio::test]
async fn by_default_userinfo_fills_profile_claims_missing_from_the_id_token() {
    let app = spawn_app_with(AppOptions::default()).await;
    let res = app
        .login_with_behaviour(Behaviour {
            claims_remove: vec!["name".into(), "email".into()],
            ..Default::default()
        })
        .await;
    let me = assert_signed_in(&app, res).await;
    assert_eq!(me["name"], "Ada Lovelace");
    assert_eq!(me["email"], "ada.lovelace@contoso.example");
    assert_eq!(app.idp.counters().userinfo, 1);
}

#[tokio::test]
async fn by_default_userinfo_is_not_asked_when_the_id_token_has_the_claims() {
    let app = spawn_app_with(AppOptions::default()).await;
    let res = app.login_with_behaviour(Behaviour::default()).await;
    let me = assert_signed_in(&app, res).await;
    assert_eq!(me["email"], "ada.lovelace@contoso.example");
    assert_eq!(app.idp.counters().userinfo, 0);
}

#[tokio::test]
async fn userinfo_false_keeps_the_id_token_alone() {
    let app = spawn_app_with(AppOptions {
        connection_extra: "userinfo = false".into(),
        ..Default::default()
    })
    .await;
    let res = app
        .login_with_behaviour(Behaviour {
            claims_remove: vec!["name".into(), "email".into()],
            ..Default::default()
        })
        .await;
    let me = assert_signed_in(&app, res).await;
    assert!(me["email"].is_null(), "{me}");
    assert_eq!(app.idp.counters().userinfo, 0);
}
