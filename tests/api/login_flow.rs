//! The login path end to end: happy path, state handling, replays, interleaved logins,
//! open-redirect defences, IdP and token-endpoint errors, cookie attributes.

use mock_idp::{AuthorizeError, Behaviour, TokenError};
use reqwest::{StatusCode, header};
use url::Url;

use crate::helpers::{
    AppOptions, assert_refused, assert_signed_in, browser, location, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn happy_path_signs_in_and_me_shows_the_stable_user_key() {
    let app = spawn_app().await;
    let authorize = app.begin_login().await;
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], app.config.redirect_uri());
    assert_eq!(q["scope"], "openid profile email");
    assert!(q["state"].len() >= 43, "state carries >= 256 bits");
    assert!(q["nonce"].len() >= 43);
    assert_ne!(q["state"], q["nonce"]);

    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, false).await;
    assert_eq!(location(&res), "/");
    let me = assert_signed_in(&app, res).await;
    assert_eq!(
        me["user"],
        "entra:aaaabbbb-0000-cccc-1111-dddd2222eeee:00000000-0000-0000-0000-00000000a0a0"
    );
    assert_eq!(me["connection"], "contoso");
    assert_eq!(me["tid"], "aaaabbbb-0000-cccc-1111-dddd2222eeee");
    assert_eq!(me["email"], "ada.lovelace@contoso.example");
    assert_eq!(
        me["email_verified"], false,
        "Entra's email is unverified unless asserted"
    );
    assert!(me["expires_at"].as_i64() > me["issued_at"].as_i64());
}

#[tokio::test]
async fn me_without_a_session_is_401_json() {
    let app = spawn_app().await;
    let res = app.me().await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "not_signed_in");
}

#[tokio::test]
async fn the_session_id_changes_at_sign_in() {
    let app = spawn_app().await;
    let res = app
        .browser
        .get(app.url("/login"))
        .send()
        .await
        .expect("login");
    let before = session_cookie(&res).expect("a pre-login session cookie");
    let callback = app
        .authorize(&Url::parse(&location(&res)).expect("url"))
        .await;
    let res = app.callback_with(&app.browser, &callback, false).await;
    let after = session_cookie(&res).expect("a new session cookie at sign-in");
    assert_ne!(before, after, "session fixation: the id must be cycled");
    // The pre-login id is worthless now.
    let stale = reqwest::Client::new()
        .get(app.url("/me"))
        .header(header::COOKIE, format!("entrance={before}"))
        .send()
        .await
        .expect("me");
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
}

fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("entrance="))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn session_cookie_is_httponly_lax_and_on_https_secure_with_host_prefix() {
    let app = spawn_app().await;
    let res = app.get("/login").await;
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("set-cookie")
        .to_owned();
    assert!(cookie.starts_with("entrance="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");

    let app = spawn_app_with(AppOptions {
        public_scheme: "https",
        ..Default::default()
    })
    .await;
    let res = browser()
        .get(app.url("/login"))
        .send()
        .await
        .expect("login");
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("set-cookie")
        .to_owned();
    assert!(cookie.starts_with("__Host-entrance="), "{cookie}");
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(!cookie.contains("Domain"), "{cookie}");
}

#[tokio::test]
async fn a_replayed_callback_is_refused() {
    let app = spawn_app().await;
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let first = app.callback_with(&app.browser, &callback, true).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    // Replayed from another browser (a leaked URL): refused.
    let replay = app.callback_with(&browser(), &callback, true).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = replay.json().await.expect("json");
    assert_eq!(body["error"], "state_unknown");
    // Replayed in the signed-in browser (back button): sent on, not signed in again.
    let again = app.callback_with(&app.browser, &callback, true).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&again), "/");
    // Neither replay spent anything at the token endpoint: state is checked first.
    assert_eq!(app.idp.counters().token, 1);
}

#[tokio::test]
async fn a_failed_callback_still_consumes_its_state() {
    let app = spawn_app().await;
    app.idp.set_behaviour(Behaviour {
        claims_set: [("nonce".to_owned(), serde_json::json!("wrong"))]
            .into_iter()
            .collect(),
        ..Default::default()
    });
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, true).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let again = app.callback_with(&app.browser, &callback, true).await;
    let body: serde_json::Value = again.json().await.expect("json");
    assert_eq!(
        body["error"], "state_unknown",
        "an error response must still persist the removal"
    );
}

#[tokio::test]
async fn missing_state_is_refused() {
    let app = spawn_app().await;
    let res = app
        .browser
        .get(app.url("/login/callback?code=abc"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("callback");
    assert_refused(
        &app,
        res,
        StatusCode::BAD_REQUEST,
        "missing_parameter",
        None,
    )
    .await;
}

#[tokio::test]
async fn state_from_another_browser_is_refused() {
    let app = spawn_app().await;
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let attacker = browser();
    let res = app.callback_with(&attacker, &callback, true).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "state_unknown");
    // The victim's own browser can still finish its login.
    let res = app.callback_with(&app.browser, &callback, true).await;
    assert_signed_in(&app, res).await;
}

#[tokio::test]
async fn two_interleaved_logins_in_one_browser_both_work() {
    let app = spawn_app().await;
    let first = app.begin_login_with(&app.browser, "?return_to=/one").await;
    let second = app.begin_login_with(&app.browser, "?return_to=/two").await;
    let cb_first = app.authorize(&first).await;
    let cb_second = app.authorize(&second).await;
    let res = app.callback_with(&app.browser, &cb_second, true).await;
    assert_eq!(location(&res), "/two");
    let res = app.callback_with(&app.browser, &cb_first, true).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/one");
}

#[tokio::test]
async fn return_to_keeps_same_origin_paths_and_neutralises_open_redirects() {
    let app = spawn_app().await;
    for (given, expected) in [
        ("/app/page?x=1", "/app/page?x=1"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        ("/\r\nSet-Cookie: x=y", "/"),
        ("javascript:alert(1)", "/"),
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(given.as_bytes()).collect();
        // `%2F%2F…` is sent as written, so the service decodes it to `//evil.example`.
        let query = if given.starts_with('%') {
            format!("?return_to={given}")
        } else {
            format!("?return_to={encoded}")
        };
        let client = browser();
        let authorize = app.begin_login_with(&client, &query).await;
        let callback = app.authorize(&authorize).await;
        let res = app.callback_with(&client, &callback, true).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{given}");
        assert_eq!(location(&res), expected, "return_to={given:?}");
    }
}

#[tokio::test]
async fn an_iss_parameter_must_name_the_logins_issuer() {
    let app = spawn_app().await;
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app
        .callback_with(
            &app.browser,
            &format!("{callback}&iss=https%3A%2F%2Fevil.example"),
            true,
        )
        .await;
    assert_refused(
        &app,
        res,
        StatusCode::BAD_REQUEST,
        "issuer_parameter_mismatch",
        None,
    )
    .await;

    // Twin: the right issuer signs in.
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let iss: String = url::form_urlencoded::byte_serialize(app.idp.issuer().as_bytes()).collect();
    let res = app
        .callback_with(&app.browser, &format!("{callback}&iss={iss}"), true)
        .await;
    assert_signed_in(&app, res).await;
}

#[tokio::test]
async fn an_idp_error_redirect_explains_the_aadsts_code() {
    let app = spawn_app().await;
    app.idp.set_behaviour(Behaviour {
        authorize_error: Some(AuthorizeError {
            error: "access_denied".into(),
            error_description: "AADSTS50105: Your administrator has configured the application to block users unless they are specifically granted access.".into(),
        }),
        ..Default::default()
    });
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, false).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let html = res.text().await.expect("html");
    assert!(html.contains("AADSTS50105"), "{html}");
    assert!(html.contains("assign"), "the admin's fix is shown: {html}");
    assert!(
        html.contains("/login?connection=contoso"),
        "offers to sign in again"
    );
}

#[tokio::test]
async fn a_wrong_secret_names_the_secret_value_fix() {
    let app = spawn_app_with(AppOptions {
        secret: "wrong~secret-value-of-forty-characters00".into(),
        ..Default::default()
    })
    .await;
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
    assert!(
        body["admin"].as_str().unwrap_or_default().contains("Value"),
        "{body}"
    );
}

#[tokio::test]
async fn client_secret_basic_works_too() {
    let app = spawn_app_with(AppOptions {
        connection_extra: r#"client_auth = "client_secret_basic""#.into(),
        ..Default::default()
    })
    .await;
    let res = app.login().await;
    assert_signed_in(&app, res).await;
}

#[tokio::test]
async fn a_token_endpoint_error_is_a_4xx_or_5xx_page_never_200() {
    let app = spawn_app().await;
    let body: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/entra/token-response.error.json"))
            .expect("fixture");
    let res = app
        .login_with_behaviour(Behaviour {
            token_error: Some(TokenError { status: 401, body }),
            ..Default::default()
        })
        .await;
    assert_refused(
        &app,
        res,
        StatusCode::BAD_GATEWAY,
        "token_refused",
        Some("invalid_client"),
    )
    .await;
}

#[tokio::test]
async fn unknown_connection_is_a_400_page() {
    let app = spawn_app().await;
    let res = app.get("/login?connection=nope").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    assert!(
        res.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap_or_default()
            .contains("frame-ancestors 'none'")
    );
    let html = res.text().await.expect("html");
    assert!(
        html.contains("Reference:"),
        "the page shows a correlation id"
    );
}

#[tokio::test]
async fn healthz_answers() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}
