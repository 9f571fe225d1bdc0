//! One test per ID-token rule (OpenID Connect Core §3.1.3.7): the rejected token, with its
//! typed reason in the JSON error and the log, and a twin that differs only in that claim or
//! header and signs in.

use mock_idp::{Behaviour, DEFAULT_CLIENT_ID, Signing};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    AppOptions, assert_refused, assert_signed_in, rule, spawn_app, spawn_app_with,
};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn set(claims: &[(&str, Value)]) -> Behaviour {
    Behaviour {
        claims_set: claims
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

fn remove(claims: &[&str]) -> Behaviour {
    Behaviour {
        claims_remove: claims.iter().map(|c| (*c).to_owned()).collect(),
        ..Default::default()
    }
}

fn header(members: &[(&str, Value)]) -> Behaviour {
    Behaviour {
        header_set: members
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

fn signing(s: Signing) -> Behaviour {
    Behaviour {
        signing: s,
        ..Default::default()
    }
}

#[tokio::test]
async fn signature_must_verify() {
    let app = spawn_app().await;
    rule(
        &app,
        signing(Signing::CorruptSignature),
        "bad_signature",
        signing(Signing::Normal),
    )
    .await;
}

#[tokio::test]
async fn signature_must_come_from_a_published_key() {
    let app = spawn_app().await;
    rule(
        &app,
        signing(Signing::UnpublishedKey),
        "bad_signature",
        signing(Signing::Normal),
    )
    .await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let app = spawn_app().await;
    rule(
        &app,
        signing(Signing::AlgNone),
        "unsupported_alg",
        signing(Signing::Normal),
    )
    .await;
}

#[tokio::test]
async fn hmac_signed_with_the_client_secret_is_refused() {
    let app = spawn_app().await;
    rule(
        &app,
        signing(Signing::Hs256(mock_idp::DEFAULT_CLIENT_SECRET.into())),
        "unsupported_alg",
        signing(Signing::Normal),
    )
    .await;
}

#[tokio::test]
async fn an_alg_the_idp_does_not_advertise_is_refused() {
    let app = spawn_app().await;
    rule(
        &app,
        signing(Signing::Rs384),
        "unsupported_alg",
        signing(Signing::Normal),
    )
    .await;
}

#[tokio::test]
async fn unknown_crit_header_is_refused() {
    let app = spawn_app().await;
    rule(
        &app,
        header(&[("crit", json!(["exp"])), ("exp", json!(1))]),
        "unknown_crit",
        header(&[("exp", json!(1))]),
    )
    .await;
}

#[tokio::test]
async fn an_unknown_kid_is_refused_after_one_refetch() {
    let app = spawn_app().await;
    let before = app.idp.counters().jwks;
    rule(
        &app,
        header(&[("kid", json!("junk-kid"))]),
        "unknown_kid",
        Behaviour::default(),
    )
    .await;
    assert_eq!(
        app.idp.counters().jwks,
        before + 1,
        "one refetch for the unknown kid"
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_and_accepted() {
    let app = spawn_app().await;
    let before = app.idp.counters().jwks;
    let kid = app.idp.rotate_signing_key(true);
    let res = app.login().await;
    assert_signed_in(&app, res).await;
    assert_eq!(
        app.idp.counters().jwks,
        before + 1,
        "refetched once for {kid}"
    );
}

#[tokio::test]
async fn no_kid_with_a_single_key_uses_that_key() {
    let app = spawn_app().await;
    let res = app
        .login_with_behaviour(Behaviour {
            header_remove: vec!["kid".into()],
            ..Default::default()
        })
        .await;
    assert_signed_in(&app, res).await;
}

#[tokio::test]
async fn iss_must_equal_the_metadata_issuer() {
    let app = spawn_app().await;
    let iss = app.idp.issuer();
    rule(
        &app,
        set(&[(
            "iss",
            json!("https://login.microsoftonline.com/other-tenant/v2.0"),
        )]),
        "issuer_mismatch",
        set(&[("iss", json!(iss))]),
    )
    .await;
}

#[tokio::test]
async fn aud_must_contain_the_client_id() {
    let app = spawn_app().await;
    rule(
        &app,
        set(&[("aud", json!("11112222-bbbb-3333-cccc-4444dddd5555"))]),
        "audience_mismatch",
        set(&[("aud", json!([DEFAULT_CLIENT_ID]))]),
    )
    .await;
}

#[tokio::test]
async fn an_untrusted_extra_audience_is_refused_and_a_configured_one_accepted() {
    let extra = "api://trusted-extra";
    let app = spawn_app_with(AppOptions {
        connection_extra: format!(r#"trusted_audiences = ["{extra}"]"#),
        ..Default::default()
    })
    .await;
    rule(
        &app,
        set(&[("aud", json!([DEFAULT_CLIENT_ID, "api://someone-else"]))]),
        "untrusted_audience",
        set(&[("aud", json!([DEFAULT_CLIENT_ID, extra]))]),
    )
    .await;
}

#[tokio::test]
async fn azp_when_present_must_be_the_client_id() {
    let app = spawn_app().await;
    rule(
        &app,
        set(&[("azp", json!("11112222-bbbb-3333-cccc-4444dddd5555"))]),
        "azp_mismatch",
        set(&[("azp", json!(DEFAULT_CLIENT_ID))]),
    )
    .await;
}

#[tokio::test]
async fn exp_must_be_in_the_future_within_the_skew() {
    let app = spawn_app().await;
    rule(
        &app,
        set(&[("exp", json!(now() - 400))]),
        "expired",
        set(&[("exp", json!(now() - 200))]),
    )
    .await;
}

#[tokio::test]
async fn nbf_must_not_be_in_the_future_beyond_the_skew() {
    let app = spawn_app().await;
    rule(
        &app,
        set(&[("nbf", json!(now() + 400))]),
        "not_yet_valid",
        set(&[("nbf", json!(now() + 200))]),
    )
    .await;
}

#[tokio::test]
async fn iat_must_not_be_in_the_future_beyond_the_skew() {
    let app = spawn_app().await;
    rule(
        &app,
        set(&[("iat", json!(now() + 400))]),
        "issued_in_future",
        set(&[("iat", json!(now() + 200))]),
    )
    .await;
}

#[tokio::test]
async fn iat_must_be_present() {
    let app = spawn_app().await;
    rule(
        &app,
        remove(&["iat"]),
        "missing_claim",
        set(&[("iat", json!(now()))]),
    )
    .await;
}

#[tokio::test]
async fn sub_must_be_present() {
    let app = spawn_app().await;
    rule(
        &app,
        remove(&["sub"]),
        "missing_claim",
        set(&[("sub", json!("some-subject"))]),
    )
    .await;
}

#[tokio::test]
async fn nonce_must_match_the_pending_login() {
    let app = spawn_app().await;
    rule(
        &app,
        set(&[("nonce", json!("another-login's-nonce"))]),
        "nonce_mismatch",
        Behaviour::default(),
    )
    .await;
}

#[tokio::test]
async fn nonce_must_be_present() {
    let app = spawn_app().await;
    rule(
        &app,
        remove(&["nonce"]),
        "nonce_mismatch",
        Behaviour::default(),
    )
    .await;
}

#[tokio::test]
async fn a_token_response_without_id_token_fails() {
    let app = spawn_app().await;
    let res = app
        .login_with_behaviour(Behaviour {
            omit_id_token: true,
            ..Default::default()
        })
        .await;
    assert_refused(&app, res, StatusCode::BAD_GATEWAY, "missing_id_token", None).await;
    let res = app.login_with_behaviour(Behaviour::default()).await;
    assert_signed_in(&app, res).await;
}

#[tokio::test]
async fn an_app_specific_signing_key_is_found_through_the_appid_metadata_url() {
    // An app with its own signing key (claims mapping): its tokens carry a kid that only the
    // JWKS fetched with `?appid=<client_id>` publishes (docs/reference/ENTRA.md §2, AADSTS50146).
    let with_appid = spawn_app_with(AppOptions {
        metadata_query: format!("?appid={DEFAULT_CLIENT_ID}"),
        ..Default::default()
    })
    .await;
    let app_key = Behaviour {
        signing: Signing::AppKey,
        ..Default::default()
    };
    let res = with_appid.login_with_behaviour(app_key.clone()).await;
    assert_signed_in(&with_appid, res).await;
    // Twin: the plain metadata URL cannot find the app's key.
    let plain = spawn_app().await;
    let res = plain.login_with_behaviour(app_key).await;
    assert_refused(
        &plain,
        res,
        StatusCode::UNAUTHORIZED,
        "id_token_rejected",
        Some("unknown_kid"),
    )
    .await;
}
