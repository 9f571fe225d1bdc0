//! form_post through a same-site relay, key rotation, an IdP down at startup, forward-auth,
//! logout and the start page.

use mock_idp::{Behaviour, DEFAULT_TENANT_ID, Fault, MockIdp, MockIdpSettings};
use reqwest::{StatusCode, header};
use serde_json::json;
use url::Url;

use crate::helpers::{
    AppOptions, TestApp, assert_refused, assert_signed_in, browser, location, parse_form,
    spawn_app, spawn_app_with,
};

async fn form_post_app() -> TestApp {
    spawn_app_with(AppOptions {
        connection_extra: r#"response_mode = "form_post""#.into(),
        ..Default::default()
    })
    .await
}

/// The mock IdP's form_post page for a fresh login: (callback URL, fields).
async fn idp_form_post(app: &TestApp) -> (String, Vec<(String, String)>) {
    let authorize = app.begin_login().await;
    assert_eq!(
        authorize
            .query_pairs()
            .find(|(k, _)| k == "response_mode")
            .map(|(_, v)| v.into_owned()),
        Some("form_post".to_owned())
    );
    let res = browser()
        .get(authorize.as_str())
        .send()
        .await
        .expect("authorize");
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "form_post answers with a page"
    );
    parse_form(&res.text().await.expect("html"))
}

#[tokio::test]
async fn form_post_signs_in_with_only_the_cookies_a_cross_site_post_carries() {
    let app = form_post_app().await;
    let (action, fields) = idp_form_post(&app).await;
    assert_eq!(action, app.config.redirect_uri());

    // The IdP's page POSTs cross-site: a SameSite=Lax cookie is not sent, so no cookie at all.
    let cross_site = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = cross_site
        .post(&action)
        .form(&fields)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::OK, "a relay page");
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(
        res.headers().get(header::SET_COOKIE).is_none(),
        "the relay creates no session"
    );
    let (relay_action, relay_fields) = parse_form(&res.text().await.expect("html"));
    assert_eq!(relay_action, "/login/callback");

    // The relay page posts same-site: now the browser sends its Lax cookie.
    let res = app
        .browser
        .post(app.url(&relay_action))
        .form(&relay_fields)
        .send()
        .await
        .expect("relay post");
    assert_signed_in(&app, res).await;
}

#[tokio::test]
async fn a_relayed_post_without_a_session_is_refused_not_looped() {
    let app = form_post_app().await;
    let (action, mut fields) = idp_form_post(&app).await;
    fields.push(("relayed".into(), "1".into()));
    let res = reqwest::Client::new()
        .post(&action)
        .header(header::ACCEPT, "application/json")
        .form(&fields)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "state_unknown");
}

#[tokio::test]
async fn a_callback_by_the_other_method_than_the_response_mode_is_refused() {
    // form_post login answered by GET.
    let app = form_post_app().await;
    let (action, fields) = idp_form_post(&app).await;
    let mut url = Url::parse(&action).expect("url");
    url.query_pairs_mut()
        .extend_pairs(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let res = app.callback_with(&app.browser, url.as_str(), true).await;
    assert_refused(&app, res, StatusCode::BAD_REQUEST, "bad_request", None).await;

    // query login answered by POST.
    let app = spawn_app().await;
    let authorize = app.begin_login().await;
    let callback = Url::parse(&app.authorize(&authorize).await).expect("url");
    let fields: Vec<(String, String)> = callback.query_pairs().into_owned().collect();
    let res = app
        .browser
        .post(app.url("/login/callback"))
        .header(header::ACCEPT, "application/json")
        .form(&fields)
        .send()
        .await
        .expect("post");
    assert_refused(&app, res, StatusCode::BAD_REQUEST, "bad_request", None).await;
}

#[tokio::test]
async fn a_post_callback_needs_a_form_body_of_bounded_size() {
    let app = form_post_app().await;
    let res = app
        .browser
        .post(app.url("/login/callback"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"code":"x","state":"y"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!("state=x&code={}", "a".repeat(1024 * 1024));
    let res = app
        .browser
        .post(app.url("/login/callback"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn twenty_concurrent_callbacks_with_a_new_kid_cause_one_jwks_fetch() {
    let app = spawn_app().await;
    let mut pending = Vec::new();
    for _ in 0..20 {
        let client = browser();
        let authorize = app.begin_login_with(&client, "").await;
        pending.push((client, authorize));
    }
    let before = app.idp.counters().jwks;
    app.idp.rotate_signing_key(true);
    let mut callbacks = Vec::new();
    for (client, authorize) in pending {
        callbacks.push((client, app.authorize(&authorize).await));
    }
    let mut tasks = Vec::new();
    for (client, callback) in callbacks {
        tasks.push(tokio::spawn(async move {
            client.get(&callback).send().await.map(|r| r.status())
        }));
    }
    for t in tasks {
        let status = t.await.expect("task").expect("callback");
        assert_eq!(status, StatusCode::SEE_OTHER);
    }
    assert_eq!(app.idp.counters().jwks, before + 1, "exactly one refetch");

    // A junk kid within the cooldown fetches nothing.
    let res = app
        .login_with_behaviour(Behaviour {
            header_set: [("kid".to_owned(), json!("junk"))].into_iter().collect(),
            ..Default::default()
        })
        .await;
    assert_refused(
        &app,
        res,
        StatusCode::UNAUTHORIZED,
        "id_token_rejected",
        Some("unknown_kid"),
    )
    .await;
    assert_eq!(
        app.idp.counters().jwks,
        before + 1,
        "no fetch for a junk kid in the cooldown"
    );
}

#[tokio::test]
async fn a_junk_kid_is_remembered_past_the_cooldown() {
    let app = spawn_app_with(AppOptions {
        tables_toml: "[keys]\nrefetch_cooldown_secs = 0".into(),
        ..Default::default()
    })
    .await;
    let junk = Behaviour {
        header_set: [("kid".to_owned(), json!("junk"))].into_iter().collect(),
        ..Default::default()
    };
    let before = app.idp.counters().jwks;
    for _ in 0..3 {
        let res = app.login_with_behaviour(junk.clone()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        app.idp.counters().jwks,
        before + 1,
        "one fetch, then the kid is remembered"
    );
}

#[tokio::test]
async fn keys_are_refreshed_in_the_background_and_kept_when_a_refresh_fails() {
    let app = spawn_app_with(AppOptions {
        tables_toml: "[keys]\nrefresh_interval_secs = 1".into(),
        ..Default::default()
    })
    .await;
    let before = app.idp.counters().jwks;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(
        app.idp.counters().jwks > before,
        "a background refresh happened"
    );

    app.idp.set_behaviour(Behaviour {
        jwks_fault: Fault::Status(500),
        metadata_fault: Fault::Status(503),
        ..Default::default()
    });
    let failing_from = app.idp.counters().metadata;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(
        app.idp.counters().metadata > failing_from,
        "refreshes were attempted"
    );
    // The cached metadata and keys still sign users in.
    let res = app
        .login_with_behaviour(Behaviour {
            jwks_fault: Fault::Status(500),
            metadata_fault: Fault::Status(503),
            ..Default::default()
        })
        .await;
    assert_signed_in(&app, res).await;
}

#[tokio::test]
async fn an_idp_down_at_startup_becomes_ready_when_it_comes_up() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let metadata_url = format!(
        "http://127.0.0.1:{port}/{DEFAULT_TENANT_ID}/v2.0/.well-known/openid-configuration"
    );
    let app = spawn_app_with(AppOptions {
        metadata_url: Some(metadata_url),
        wait_ready: false,
        ..Default::default()
    })
    .await;
    let res = browser()
        .get(app.url("/login"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "connection_not_ready");
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);

    let late_idp = MockIdp::start(MockIdpSettings {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        redirect_uris: vec![app.config.redirect_uri()],
        ..Default::default()
    })
    .await
    .expect("the IdP comes up");
    app.wait_ready().await;
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, true).await;
    assert_signed_in(&app, res).await;
    late_idp.shutdown().await;
}

#[tokio::test]
async fn forward_auth_answers_401_then_200_with_identity_headers() {
    let app = spawn_app().await;
    let res = app.get("/auth").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().get("x-auth-request-user").is_none());

    let res = app.login().await;
    assert_signed_in(&app, res).await;
    let res = app.get("/auth").await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(
        h["x-auth-request-user"],
        "entra:aaaabbbb-0000-cccc-1111-dddd2222eeee:00000000-0000-0000-0000-00000000a0a0"
    );
    assert_eq!(h["x-auth-request-email"], "ada.lovelace@contoso.example");
    assert_eq!(h["x-auth-request-email-verified"], "false");
    assert_eq!(
        h["x-auth-request-preferred-username"],
        "ada.lovelace@contoso.example"
    );
    assert_eq!(h["x-auth-request-tenant"], DEFAULT_TENANT_ID);
    assert_eq!(h["x-auth-request-connection"], "contoso");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn forward_auth_redirect_carries_the_original_url_only_to_allowed_hosts() {
    let app = spawn_app_with(AppOptions {
        top_toml: r#"allowed_return_hosts = ["app.example.com"]"#.into(),
        ..Default::default()
    })
    .await;
    let ask = |host: &'static str| {
        let client = browser();
        let url = app.url("/auth?redirect=true");
        async move {
            client
                .get(url)
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", host)
                .header("x-forwarded-uri", "/reports?q=1")
                .send()
                .await
                .expect("auth")
        }
    };
    let res = ask("app.example.com").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let loc = Url::parse(&location(&res)).expect("url");
    assert_eq!(loc.path(), "/login");
    let rt: String = loc
        .query_pairs()
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.into_owned())
        .expect("return_to");
    assert_eq!(rt, "https://app.example.com/reports?q=1");

    let res = ask("evil.example").await;
    let loc = Url::parse(&location(&res)).expect("url");
    let rt: String = loc
        .query_pairs()
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.into_owned())
        .expect("return_to");
    assert_eq!(rt, "/", "an unlisted host is not a destination");

    // And the whole loop: sign in with that return_to lands on the app.
    let client = browser();
    let authorize = app
        .begin_login_with(
            &client,
            "?return_to=https%3A%2F%2Fapp.example.com%2Freports%3Fq%3D1",
        )
        .await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&client, &callback, true).await;
    assert_eq!(location(&res), "https://app.example.com/reports?q=1");
}

#[tokio::test]
async fn logout_needs_a_same_origin_post_and_ends_the_session_at_the_idp_too() {
    let app = spawn_app_with(AppOptions {
        tables_toml: "[logout]\npost_logout_redirect_uri = \"http://127.0.0.1/\"".into(),
        ..Default::default()
    })
    .await;
    let res = app.login().await;
    assert_signed_in(&app, res).await;

    let confirm = app.get("/logout").await;
    assert_eq!(confirm.status(), StatusCode::OK);
    let html = confirm.text().await.expect("html");
    assert!(
        html.contains("method=\"post\" action=\"/logout\""),
        "{html}"
    );

    let res = app
        .browser
        .post(app.url("/logout"))
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .browser
        .post(app.url("/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "no Origin, no Sec-Fetch-Site: refused"
    );
    assert_eq!(app.me().await.status(), StatusCode::OK, "still signed in");

    let res = app
        .browser
        .post(app.url("/logout"))
        .header(header::ORIGIN, app.base.clone())
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let end = Url::parse(&location(&res)).expect("end session URL");
    assert!(end.as_str().starts_with(&format!(
        "{}/{DEFAULT_TENANT_ID}/oauth2/v2.0/logout",
        app.idp.base_url()
    )));
    let q: std::collections::HashMap<_, _> = end.query_pairs().into_owned().collect();
    assert_eq!(q["post_logout_redirect_uri"], "http://127.0.0.1/");
    assert!(
        q.contains_key("logout_hint"),
        "Entra's logout_hint from the login_hint claim"
    );
    assert!(!q.contains_key("id_token_hint"));
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_uses_id_token_hint_when_the_idp_gave_no_login_hint() {
    let app = spawn_app().await;
    let res = app
        .login_with_behaviour(Behaviour {
            claims_remove: vec!["login_hint".into()],
            ..Default::default()
        })
        .await;
    assert_signed_in(&app, res).await;
    let res = app
        .browser
        .post(app.url("/logout"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("logout");
    let end = Url::parse(&location(&res)).expect("url");
    assert!(end.query_pairs().any(|(k, _)| k == "id_token_hint"));
}

#[tokio::test]
async fn the_start_page_offers_each_connection_then_shows_who_is_signed_in() {
    let app = spawn_app().await;
    let html = app.get("/").await.text().await.expect("html");
    assert!(html.contains("/login?connection=contoso"), "{html}");
    assert!(html.contains("Sign in with Contoso"), "{html}");
    let res = app.login().await;
    assert_signed_in(&app, res).await;
    let html = app.get("/").await.text().await.expect("html");
    assert!(html.contains("Ada Lovelace"), "{html}");
    assert!(html.contains("action=\"/logout\""), "{html}");
}

#[tokio::test]
async fn front_channel_logout_ends_the_session_by_sid_without_cookies() {
    let app = spawn_app().await;
    let res = app.login().await;
    assert_signed_in(&app, res).await;
    let sid = mock_idp::MockUser::default().sid;
    // Another session of another sid is untouched.
    let res = reqwest::Client::new()
        .get(app.url("/logout/frontchannel?sid=some-other-sid"))
        .send()
        .await
        .expect("frontchannel");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.me().await.status(), StatusCode::OK);
    // The IdP's iframe: no cookie, only sid.
    let res = reqwest::Client::new()
        .get(app.url(&format!("/logout/frontchannel?sid={sid}")))
        .send()
        .await
        .expect("frontchannel");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.me().await.status(),
        StatusCode::UNAUTHORIZED,
        "signed out everywhere"
    );
}
