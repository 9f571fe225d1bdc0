//! Email-domain routing (`login_hint` → connection, `domain_hint` to Entra), groups and roles
//! in the session and on `/auth` within the header budget, group overage, and
//! `allowed_groups` / `allowed_roles`.

use mock_idp::{Behaviour, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockIdp, MockIdpSettings};
use reqwest::{StatusCode, header};
use serde_json::json;

use crate::helpers::{
    AppOptions, TestApp, assert_refused, assert_signed_in, browser, log_lines_with, spawn_app,
    spawn_app_with,
};

const GROUP_A: &str = "11111111-0000-0000-0000-00000000000a";
const GROUP_B: &str = "11111111-0000-0000-0000-00000000000b";

/// contoso (contoso.example, on the helper's IdP) and fabrikam (fabrikam.example and
/// eu.fabrikam.example, on a second IdP).
async fn two_domain_app() -> (TestApp, MockIdp) {
    let fabrikam = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("second IdP");
    let app = spawn_app_with(AppOptions {
        connection_extra: "domains = [\"contoso.example\"]".into(),
        tables_toml: format!(
            "[[connections]]\nid = \"fabrikam\"\nname = \"Fabrikam\"\nmetadata_url = \"{}\"\n\
client_id = \"{DEFAULT_CLIENT_ID}\"\nclient_secret = \"{DEFAULT_CLIENT_SECRET}\"\n\
domains = [\"Fabrikam.example\", \"eu.fabrikam.example\"]\n",
            fabrikam.metadata_url()
        ),
        ..Default::default()
    })
    .await;
    fabrikam.set_redirect_uris(vec![app.config.redirect_uri()]);
    (app, fabrikam)
}

fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text")
}

// ----- routing ----------------------------------------------------------------------

#[tokio::test]
async fn login_hint_routes_to_the_connection_that_claims_its_domain() {
    let (app, fabrikam) = two_domain_app().await;

    let home = app.get("/").await.text().await.expect("home");
    assert!(
        home.contains("name=\"login_hint\"") && home.contains("action=\"/login\""),
        "the start page has an email box: {home}"
    );

    let authorize = app
        .begin_login_with(&app.browser, "?login_hint=Bob%40EU.Fabrikam.example")
        .await;
    assert!(
        authorize.as_str().starts_with(&fabrikam.base_url()),
        "sent to fabrikam's IdP: {authorize}"
    );
    assert_eq!(
        query(&authorize, "login_hint").as_deref(),
        Some("Bob@EU.Fabrikam.example")
    );
    assert_eq!(
        query(&authorize, "domain_hint").as_deref(),
        Some("eu.fabrikam.example")
    );
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, true).await;
    let me = assert_signed_in(&app, res).await;
    assert_eq!(me["connection"], "fabrikam");

    // A named connection still wins; the hint is passed through.
    let other = browser();
    let authorize = app
        .begin_login_with(
            &other,
            "?connection=contoso&login_hint=ada%40contoso.example",
        )
        .await;
    assert!(authorize.as_str().starts_with(&app.idp.base_url()));
    assert_eq!(
        query(&authorize, "login_hint").as_deref(),
        Some("ada@contoso.example")
    );
    assert_eq!(
        query(&authorize, "domain_hint").as_deref(),
        Some("contoso.example")
    );
}

#[tokio::test]
async fn a_login_hint_of_an_unknown_domain_gets_a_plain_400_and_no_session() {
    let (app, _fabrikam) = two_domain_app().await;
    let client = browser();
    let res = client
        .get(app.url("/login?login_hint=eve%40Evil.example"))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        res.headers().get(header::SET_COOKIE).is_none(),
        "no session is started"
    );
    let page = res.text().await.expect("page");
    assert!(
        page.contains("No sign-in is set up for evil.example"),
        "{page}"
    );

    let res = client
        .get(app.url("/login?login_hint=eve%40evil.example"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = res.json().await.expect("JSON");
    assert_eq!(body["error"], "unknown_domain");

    for hint in ["not-an-email", "a%40b.example%0d%0aX-Evil:%201"] {
        let res = client
            .get(app.url(&format!("/login?login_hint={hint}")))
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{hint}");
        assert!(res.headers().get(header::SET_COOKIE).is_none(), "{hint}");
    }
}

// ----- groups, roles, overage -------------------------------------------------------

#[tokio::test]
async fn groups_and_roles_are_kept_and_sent_to_the_proxy() {
    let app = spawn_app().await;
    let mut b = Behaviour::default();
    b.claims_set
        .insert("roles".into(), json!(["App.Reader", "App.Writer"]));
    let me = assert_signed_in(&app, app.login_with_behaviour(b).await).await;
    assert_eq!(me["groups"], json!([GROUP_A, GROUP_B]));
    assert_eq!(me["roles"], json!(["App.Reader", "App.Writer"]));
    assert_eq!(me["groups_overage"], false);

    let res = app.get("/auth").await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(
        h["x-auth-request-groups"],
        format!("{GROUP_A},{GROUP_B}").as_str()
    );
    assert_eq!(h["x-auth-request-roles"], "App.Reader,App.Writer");
    for absent in [
        "x-auth-request-groups-truncated",
        "x-auth-request-roles-truncated",
        "x-auth-request-groups-overage",
    ] {
        assert!(h.get(absent).is_none(), "{absent}");
    }
}

fn overage() -> Behaviour {
    let mut b = Behaviour::default();
    b.claims_remove.push("groups".into());
    b.claims_set
        .insert("_claim_names".into(), json!({"groups": "src1"}));
    b.claims_set.insert(
        "_claim_sources".into(),
        json!({"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}}),
    );
    b
}

#[tokio::test]
async fn group_overage_is_detected_and_reported_not_silently_empty() {
    let app = spawn_app().await;
    let me = assert_signed_in(&app, app.login_with_behaviour(overage()).await).await;
    assert_eq!(me["groups_overage"], true);
    assert_eq!(me["groups"], json!([]));
    let user = me["user"].as_str().expect("user");
    assert!(
        log_lines_with(user).iter().any(
            |l| l.contains("group overage") && l.contains("Groups assigned to the application")
        ),
        "the sign-in logs the overage with its fix"
    );

    let res = app.get("/auth").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-auth-request-groups-overage"], "true");
    assert!(res.headers().get("x-auth-request-groups").is_none());

    // The implicit flow's marker too.
    let app = spawn_app().await;
    let mut b = Behaviour::default();
    b.claims_remove.push("groups".into());
    b.claims_set.insert("hasgroups".into(), json!(true));
    let me = assert_signed_in(&app, app.login_with_behaviour(b).await).await;
    assert_eq!(me["groups_overage"], true);
}

#[tokio::test]
async fn a_user_in_500_groups_gets_headers_within_budget_and_still_signs_in() {
    let app = spawn_app().await;
    let groups: Vec<String> = (0..500)
        .map(|i| format!("22222222-0000-0000-0000-{i:012}"))
        .collect();
    let mut b = Behaviour::default();
    b.claims_set.insert("groups".into(), json!(groups));
    let me = assert_signed_in(&app, app.login_with_behaviour(b).await).await;
    assert_eq!(me["groups"].as_array().map(Vec::len), Some(500));

    for _ in 0..2 {
        let res = app.get("/auth").await;
        assert_eq!(res.status(), StatusCode::OK, "never a 431 or a failure");
        let h = res.headers();
        let value = h["x-auth-request-groups"].to_str().expect("ASCII");
        assert!(value.len() <= 4096, "{} bytes", value.len());
        let sent: Vec<&str> = value.split(',').collect();
        assert_eq!(sent.len(), 4096 / 37, "as many whole GUIDs as fit");
        assert_eq!(sent[..], groups[..sent.len()], "whole items, in order");
        assert_eq!(h["x-auth-request-groups-truncated"], "true");
        assert_eq!(h["x-auth-request-user"], me["user"].as_str().expect("user"));
    }
    let text = metrics(&app).await;
    assert!(
        text.contains(
            "entrance_forward_auth_header_overflow_total{header=\"x-auth-request-groups\"} 2"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn the_header_budget_is_configurable() {
    let app = spawn_app_with(AppOptions {
        tables_toml: "[forward_auth]\nmax_header_bytes = 256\n".into(),
        ..Default::default()
    })
    .await;
    let mut b = Behaviour::default();
    b.claims_set.insert(
        "roles".into(),
        json!((0..40).map(|i| format!("Role.{i:03}")).collect::<Vec<_>>()),
    );
    assert_signed_in(&app, app.login_with_behaviour(b).await).await;
    let res = app.get("/auth").await;
    assert_eq!(res.status(), StatusCode::OK);
    let roles = res.headers()["x-auth-request-roles"]
        .to_str()
        .expect("ASCII");
    assert!(roles.len() <= 256 && roles.starts_with("Role.000,Role.001"));
    assert_eq!(res.headers()["x-auth-request-roles-truncated"], "true");
    assert!(
        res.headers()
            .get("x-auth-request-groups-truncated")
            .is_none()
    );
}

// ----- allowed_groups / allowed_roles -------------------------------------------------

async fn app_with(extra: &str) -> TestApp {
    spawn_app_with(AppOptions {
        connection_extra: extra.into(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn allowed_groups_admit_members_and_refuse_others_with_a_403() {
    let app = app_with(&format!("allowed_groups = [\"{GROUP_A}\"]")).await;
    let me = assert_signed_in(&app, app.login().await).await;
    assert_eq!(me["connection"], "contoso");
    assert_eq!(app.get("/auth").await.status(), StatusCode::OK);

    let app = app_with("allowed_groups = [\"33333333-0000-0000-0000-000000000000\"]").await;
    let body = assert_refused(
        &app,
        app.login().await,
        StatusCode::FORBIDDEN,
        "not_permitted",
        Some("not_listed"),
    )
    .await;
    assert!(
        body["admin"]
            .as_str()
            .is_some_and(|a| a.contains("allowed_groups")),
        "{body}"
    );
    assert!(metrics(&app).await.contains(
        "entrance_logins_failed_total{connection=\"contoso\",reason=\"not_permitted\"} 1"
    ));
    assert_eq!(app.get("/auth").await.status(), StatusCode::UNAUTHORIZED);

    // The browser's page says it plainly.
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, false).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let page = res.text().await.expect("page");
    assert!(
        page.contains("Your account is not allowed to use this application"),
        "{page}"
    );
}

#[tokio::test]
async fn allowed_roles_admit_role_holders_only() {
    let app = app_with("allowed_roles = [\"App.Admin\"]").await;
    assert_refused(
        &app,
        app.login().await,
        StatusCode::FORBIDDEN,
        "not_permitted",
        Some("not_listed"),
    )
    .await;
    let mut b = Behaviour::default();
    b.claims_set.insert("roles".into(), json!(["App.Admin"]));
    assert_signed_in(&app, app.login_with_behaviour(b).await).await;
}

#[tokio::test]
async fn with_both_lists_a_group_or_a_role_admits() {
    let app = app_with(
        "allowed_groups = [\"33333333-0000-0000-0000-000000000000\"]\nallowed_roles = [\"App.Admin\"]",
    )
    .await;
    let mut b = Behaviour::default();
    b.claims_set.insert("roles".into(), json!(["App.Admin"]));
    assert_signed_in(&app, app.login_with_behaviour(b).await).await;
}

#[tokio::test]
async fn an_overage_under_allowed_groups_is_refused_with_the_reason_and_fix() {
    let app = app_with(&format!("allowed_groups = [\"{GROUP_A}\"]")).await;
    let body = assert_refused(
        &app,
        app.login_with_behaviour(overage()).await,
        StatusCode::FORBIDDEN,
        "not_permitted",
        Some("groups_overage"),
    )
    .await;
    let admin = body["admin"].as_str().expect("admin text");
    assert!(
        admin.contains("group overage") && admin.contains("Groups assigned to the application"),
        "{admin}"
    );
}
