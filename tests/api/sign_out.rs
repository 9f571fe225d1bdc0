//! `POST /logout`'s same-origin rule over HTTP, for every pair of `Sec-Fetch-Site` and
//! `Origin` a browser or an attacker's page can produce (the rule and its reasons:
//! `src/http/logout.rs`, `from_our_own_page`), and the `Referrer-Policy` that keeps our own
//! POSTs' `Origin` real. The real-browser side is in `in_browser.rs`.

use reqwest::{StatusCode, header};

use crate::helpers::{TestApp, assert_signed_in, spawn_app};

const EVIL: &str = "https://evil.example";

/// Signs in (if needed), sends `POST /logout` with these headers, and returns whether it
/// signed the user out. A refusal must be a 403 that leaves the user signed in.
async fn signs_out(app: &TestApp, site: Option<&str>, origin: Option<&str>) -> bool {
    if app.me().await.status() != StatusCode::OK {
        assert_signed_in(app, app.login().await).await;
    }
    let mut req = app.browser.post(app.url("/logout"));
    if let Some(site) = site {
        req = req.header("sec-fetch-site", site);
    }
    if let Some(origin) = origin {
        req = req.header(header::ORIGIN, origin);
    }
    let res = req.send().await.expect("logout");
    match res.status() {
        StatusCode::SEE_OTHER => {
            assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
            true
        }
        StatusCode::FORBIDDEN => {
            let page = res.text().await.expect("page");
            assert!(page.contains("Request refused"), "{page}");
            assert_eq!(app.me().await.status(), StatusCode::OK, "still signed in");
            false
        }
        other => panic!("logout answered {other}"),
    }
}

#[tokio::test]
async fn our_own_button_signs_out_in_every_browser() {
    let app = spawn_app().await;
    let ours = app.base.clone();
    // Chromium under `Referrer-Policy: no-referrer` (issue #11): Origin null, but Fetch
    // Metadata says same-origin.
    assert!(signs_out(&app, Some("same-origin"), Some("null")).await);
    // Chromium, Firefox, Safari 16.4+ under `same-origin`.
    assert!(signs_out(&app, Some("same-origin"), Some(&ours)).await);
    assert!(signs_out(&app, Some("same-origin"), None).await);
    // A browser without Fetch Metadata under `same-origin`.
    assert!(signs_out(&app, None, Some(&ours)).await);
}

#[tokio::test]
async fn another_site_cannot_sign_users_out() {
    let app = spawn_app().await;
    let ours = app.base.clone();
    for (site, origin) in [
        // A cross-site form, whatever its Origin says (Fetch Metadata decides).
        (Some("cross-site"), Some(EVIL)),
        (Some("cross-site"), Some("null")),
        (Some("cross-site"), None),
        (Some("cross-site"), Some(ours.as_str())),
        // A sibling subdomain is not entrance.
        (Some("same-site"), Some("null")),
        (Some("same-site"), None),
        // Not sent by any form (typed, bookmarked).
        (Some("none"), Some("null")),
        // A browser without Fetch Metadata: null can come from any page (its own
        // no-referrer policy, a sandboxed iframe), so null alone is not enough.
        (None, Some("null")),
        (None, Some(EVIL)),
        (None, None),
        // No browser sends this pair; refusing it keeps the Origin check in force.
        (Some("same-origin"), Some(EVIL)),
    ] {
        assert!(
            !signs_out(&app, site, origin).await,
            "Sec-Fetch-Site {site:?} with Origin {origin:?} must be refused"
        );
    }
}

#[tokio::test]
async fn pages_keep_a_same_origin_referrer_policy_and_the_callback_sends_none() {
    let app = spawn_app().await;
    let policy = |res: &reqwest::Response| {
        res.headers()
            .get(header::REFERRER_POLICY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    for path in ["/", "/logout", "/me"] {
        let res = app.get(path).await;
        assert_eq!(policy(&res).as_deref(), Some("same-origin"), "{path}");
    }
    // The callback's address carries the code: no Referer from its pages, not even to us.
    let res = app.get("/login/callback?state=unknown&code=x").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(policy(&res).as_deref(), Some("no-referrer"));
    let res = app.login().await;
    assert_eq!(policy(&res).as_deref(), Some("no-referrer"));
}
