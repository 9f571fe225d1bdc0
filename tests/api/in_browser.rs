//! What a person does, in a real browser (headless Chromium, `browser.rs`): sign in through
//! the mock IdP on another site in both response modes, linger on the IdP's page past
//! Chromium's two-minute "Lax + POST" allowance, sign out with entrance's own buttons, and
//! find the way back from an error page.
//!
//! entrance's `public_url` is `http://localhost:<port>` and the mock IdP is at
//! `http://127.0.0.1:<port>`: two hosts are two sites for `SameSite` cookies (the port does
//! not count), so the trip to the IdP and back is cross-site as it is with Entra.

use std::time::Duration;

use mock_idp::{AuthorizeError, Behaviour};
use reqwest::StatusCode;
use url::Url;

use crate::{
    browser::{self, Browser},
    helpers::{AppOptions, TestApp, spawn_app_with},
};

/// entrance on `localhost`, the IdP on `127.0.0.1`; `extra` goes into the connection's table.
async fn spawn_cross_site(extra: &str, tables: &str) -> TestApp {
    let app = spawn_app_with(AppOptions {
        public_host: "localhost",
        connection_extra: extra.to_owned(),
        tables_toml: tables.to_owned(),
        ..AppOptions::default()
    })
    .await;
    let idp_host = Url::parse(&app.idp.base_url()).expect("IdP URL");
    assert_eq!(idp_host.host_str(), Some("127.0.0.1"));
    app
}

/// An address on entrance as the browser knows it (`public_url`, not the listen address).
fn public(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.config.public_origin())
}

fn on_entrance(app: &TestApp, url: &Url) -> bool {
    url.as_str().starts_with(&public(app, "/"))
}

/// From entrance's start page, press the connection's button; returns once the browser is
/// at the IdP (which, without a Continue page, sends it straight back).
async fn press_sign_in(b: &Browser, app: &TestApp) {
    b.goto(&public(app, "/")).await;
    b.wait_for_text("Sign in with Contoso").await;
    b.click("Sign in with Contoso").await;
}

/// Waits for entrance's start page to say the user is signed in, then checks `/me`.
async fn assert_signed_in(b: &Browser, app: &TestApp) {
    let text = b
        .wait_until("entrance's start page, signed in", |url, text| {
            on_entrance(app, url) && text.contains("You are signed in as")
        })
        .await;
    assert!(text.contains("Ada Lovelace"), "{text}");
    b.goto(&public(app, "/me")).await;
    let me = b.wait_for_text("\"user\"").await;
    assert!(me.contains("\"name\":\"Ada Lovelace\""), "{me}");
}

/// `/me` in this browser answers 401, and so does the session cookie it had before.
async fn assert_signed_out(b: &Browser, app: &TestApp, old_cookie: &str) {
    let (status, body) = b.fetch_with_cookies(&public(app, "/me")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let text = b.wait_for_text("not_signed_in").await;
    assert!(!text.contains("Ada Lovelace"), "{text}");
    let (status, body) = browser::fetch_with_cookie(&public(app, "/me"), old_cookie).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old session is gone from the store, not just from the browser: {body}"
    );
}

/// The browser's entrance session cookie as a `Cookie` header value.
async fn session_cookie(b: &Browser, app: &TestApp) -> String {
    b.goto(&public(app, "/")).await;
    let name = &app.config.session.cookie_name;
    let cookie = b
        .cookies()
        .await
        .into_iter()
        .find(|c| c.name() == name)
        .unwrap_or_else(|| panic!("the browser holds entrance's {name} cookie"));
    format!("{}={}", cookie.name(), cookie.value())
}

#[tokio::test]
async fn sign_in_with_the_idp_on_another_site_query_mode() {
    browser::run("sign_in_query", async |b| {
        let app = spawn_cross_site("", "").await;
        press_sign_in(b, &app).await;
        assert_signed_in(b, &app).await;
        assert_eq!(app.idp.counters().authorize, 1, "one trip to the IdP");
    })
    .await;
}

#[tokio::test]
async fn sign_in_with_the_idp_on_another_site_form_post_mode() {
    // The IdP's cross-site POST carries no SameSite=Lax cookie; entrance's relay page posts
    // the fields again from its own origin (src/pages.rs, `relay_page`).
    browser::run("sign_in_form_post", async |b| {
        let app = spawn_cross_site("response_mode = \"form_post\"", "").await;
        press_sign_in(b, &app).await;
        assert_signed_in(b, &app).await;
        assert_eq!(app.idp.counters().authorize, 1, "one trip to the IdP");
    })
    .await;
}

/// A user who stays 125 s on the IdP's page, then presses Continue. Chromium sends a cookie
/// without a SameSite attribute on a cross-site top-level POST only while it is under two
/// minutes old ("Lax-allowing-unsafe"), so a sign-in that worked only inside that window
/// would pass every quick test and fail real users. Both modes wait side by side.
#[tokio::test]
async fn a_user_who_lingers_125_s_at_the_idp_still_signs_in() {
    async fn linger(name: &str, extra: &str) {
        browser::run(name, async |b| {
            let app = spawn_cross_site(extra, "").await;
            app.idp.set_behaviour(Behaviour {
                continue_page: true,
                ..Default::default()
            });
            press_sign_in(b, &app).await;
            b.wait_until("the IdP's Continue page", |url, text| {
                url.host_str() == Some("127.0.0.1") && text.contains("Sign in to Contoso")
            })
            .await;
            // Deliberate: the one sleep of these tests is the user's pause.
            tokio::time::sleep(Duration::from_secs(125)).await;
            b.click("Continue").await;
            assert_signed_in(b, &app).await;
        })
        .await;
    }
    tokio::join!(
        linger("linger_query", ""),
        linger("linger_form_post", "response_mode = \"form_post\""),
    );
}

#[tokio::test]
async fn sign_out_with_the_button_on_the_start_page() {
    browser::run("sign_out_from_start_page", async |b| {
        // The IdP sends the browser back to entrance's start page after its own sign-out.
        let app =
            spawn_cross_site("", "[logout]\npost_logout_redirect_uri = \"{public_url}/\"").await;
        let back = public(&app, "/");
        app.idp
            .set_redirect_uris(vec![app.config.redirect_uri(), back]);
        press_sign_in(b, &app).await;
        assert_signed_in(b, &app).await;
        let cookie = session_cookie(b, &app).await;
        b.wait_for_text("You are signed in as").await;

        b.click("Sign out").await;
        b.wait_until("entrance's start page, signed out", |url, text| {
            on_entrance(&app, url) && text.contains("Sign in with Contoso")
        })
        .await;
        assert_signed_out(b, &app, &cookie).await;
    })
    .await;
}

#[tokio::test]
async fn sign_out_from_the_confirmation_page_and_cancel_it_first() {
    browser::run("sign_out_from_logout_page", async |b| {
        let app = spawn_cross_site("", "").await;
        press_sign_in(b, &app).await;
        assert_signed_in(b, &app).await;
        let cookie = session_cookie(b, &app).await;

        // Cancel goes back to the start page, still signed in.
        b.goto(&public(&app, "/logout")).await;
        let text = b.wait_for_text("Sign out?").await;
        assert!(text.contains("Ada Lovelace"), "it says who: {text}");
        b.click("Cancel").await;
        b.wait_until("the start page, still signed in", |url, text| {
            url.as_str() == public(&app, "/") && text.contains("You are signed in as")
        })
        .await;

        b.goto(&public(&app, "/logout")).await;
        b.click("Sign out").await;
        // No post_logout_redirect_uri: the IdP's own "signed out" page is the end.
        b.wait_until("the IdP's signed-out page", |url, text| {
            url.host_str() == Some("127.0.0.1") && text.contains("You signed out")
        })
        .await;
        assert_signed_out(b, &app, &cookie).await;
    })
    .await;
}

#[tokio::test]
async fn an_unknown_sign_in_offers_a_way_back_that_works() {
    browser::run("error_unknown_state", async |b| {
        let app = spawn_cross_site("", "").await;
        // A callback this browser never started (a bookmarked or replayed address).
        b.goto(&public(&app, "/login/callback?state=never-issued&code=x"))
            .await;
        let text = b.wait_for_text("This sign-in has expired").await;
        assert!(text.contains("Reference:"), "{text}");
        b.click("Sign in again").await;
        // It may lead to the start page (the connection is not known) or straight to the IdP.
        b.wait_until("the start page or back from the IdP", |url, text| {
            on_entrance(&app, url)
                && (text.contains("Sign in with Contoso") || text.contains("You are signed in"))
        })
        .await;
        if !b.text().await.contains("You are signed in") {
            b.click("Sign in with Contoso").await;
        }
        assert_signed_in(b, &app).await;
    })
    .await;
}

#[tokio::test]
async fn an_idp_error_offers_sign_in_again_that_works() {
    browser::run("error_idp_access_denied", async |b| {
        let app = spawn_cross_site("", "").await;
        app.idp.set_behaviour(Behaviour {
            authorize_error: Some(AuthorizeError {
                error: "access_denied".into(),
                error_description: "AADSTS65004: User declined to consent to access the app."
                    .into(),
            }),
            ..Default::default()
        });
        press_sign_in(b, &app).await;
        b.wait_until("entrance's error page", |url, text| {
            on_entrance(&app, url) && text.contains("Sign-in was not completed")
        })
        .await;
        // The user changes their mind.
        app.idp.set_behaviour(Behaviour::default());
        b.click("Sign in again").await;
        assert_signed_in(b, &app).await;
    })
    .await;
}
