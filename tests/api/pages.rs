//! The pages a person sees, over HTTP: a button per connection on the start page, a logout
//! confirmation that says who and offers Cancel, and error pages with a way back. The same
//! pages in a real browser: `in_browser.rs`.

use mock_idp::{
    AuthorizeError, Behaviour, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockIdp, MockIdpSettings,
};
use reqwest::StatusCode;

use crate::helpers::{AppOptions, assert_signed_in, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_start_page_has_a_sign_in_button_per_connection() {
    // Both connections on one mock IdP of the test's own (only the page is looked at).
    let idp = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("mock IdP starts");
    let metadata = idp.metadata_url();
    let app = spawn_app_with(AppOptions {
        metadata_url: Some(metadata.clone()),
        tables_toml: format!(
            "[[connections]]\nid = \"fabrikam\"\nname = \"Fabrikam & Co\"\n\
             metadata_url = \"{metadata}\"\nclient_id = \"{DEFAULT_CLIENT_ID}\"\n\
             client_secret = \"{DEFAULT_CLIENT_SECRET}\""
        ),
        ..AppOptions::default()
    })
    .await;
    let html = app.get("/").await.text().await.expect("html");
    for (id, name) in [("contoso", "Contoso"), ("fabrikam", "Fabrikam &amp; Co")] {
        assert!(
            html.contains(&format!(
                "<a class=\"button\" href=\"/login?connection={id}&amp;return_to=%2F\">Sign in with {name}</a>"
            )),
            "{html}"
        );
    }
    assert!(!html.contains("<script"), "{html}");
}

#[tokio::test]
async fn the_logout_page_says_who_is_signed_in_and_offers_cancel() {
    let app = spawn_app().await;
    let html = app.get("/logout").await.text().await.expect("html");
    assert!(html.contains("You are not signed in"), "{html}");
    assert!(!html.contains("<form"), "nothing to sign out: {html}");
    assert!(html.contains("href=\"/\""), "a way back: {html}");

    assert_signed_in(&app, app.login().await).await;
    let html = app.get("/logout").await.text().await.expect("html");
    assert!(
        html.contains("You are signed in as <strong>Ada Lovelace</strong> (ada.lovelace@contoso.example) through Contoso."),
        "{html}"
    );
    assert!(
        html.contains("method=\"post\" action=\"/logout\""),
        "{html}"
    );
    assert!(
        html.contains("<a class=\"button secondary\" href=\"/\">Cancel</a>"),
        "{html}"
    );
    // Looking at the page signs nobody out.
    assert_eq!(app.me().await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_state_offers_sign_in_again_from_the_start_page() {
    let app = spawn_app().await;
    let res = app.get("/login/callback?state=never-issued&code=x").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let html = res.text().await.expect("html");
    assert!(
        html.contains("<a class=\"button\" href=\"/\">Sign in again</a>"),
        "{html}"
    );
}

#[tokio::test]
async fn an_idp_error_offers_sign_in_again_with_that_connection() {
    let app = spawn_app().await;
    app.idp.set_behaviour(Behaviour {
        authorize_error: Some(AuthorizeError {
            error: "access_denied".into(),
            error_description: "AADSTS65004: User declined to consent to access the app.".into(),
        }),
        ..Default::default()
    });
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, false).await;
    let html = res.text().await.expect("html");
    assert!(
        html.contains("href=\"/login?connection=contoso\">Sign in again</a>"),
        "{html}"
    );
    assert!(html.contains("href=\"/\">Start page</a>"), "{html}");
}

#[tokio::test]
async fn a_page_with_nothing_to_retry_still_links_the_start_page() {
    let app = spawn_app().await;
    let res = app
        .browser
        .post(app.url("/logout"))
        .header(reqwest::header::ORIGIN, "https://evil.example")
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let html = res.text().await.expect("html");
    assert!(!html.contains("Sign in again"), "{html}");
    assert!(
        html.contains("<a class=\"button secondary\" href=\"/\">Start page</a>"),
        "{html}"
    );
}
