//! Multi-tenant connections (`common`/`organizations`, docs/reference/ENTRA.md §5.3): the templated issuer is
//! accepted only for those authorities, each token's `iss` must be the template with its own
//! `tid`, `tid` must be in `allowed_tenants`, and the verifying key's `issuer` must agree. Each
//! refusal comes with a twin that signs in, as in `id_token_rules.rs`.

use mock_idp::{Behaviour, DEFAULT_TENANT_ID, MockIdp, MockIdpSettings, Signing};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{AppOptions, TestApp, assert_refused, assert_signed_in, rule, spawn_app_with};

/// A customer tenant that is not the mock's own.
const FABRIKAM: &str = "bbbbcccc-1111-dddd-2222-eeee3333ffff";
/// A tenant nobody allowed.
const STRANGER: &str = "ccccdddd-2222-eeee-3333-ffff4444aaaa";

/// entrance on the mock's `authority` with `allowed_tenants` as given (TOML array text).
async fn multi_tenant_app(authority: &'static str, allowed: &str) -> TestApp {
    spawn_app_with(AppOptions {
        authority: Some(authority),
        connection_extra: format!("allowed_tenants = {allowed}"),
        ..Default::default()
    })
    .await
}

fn user_of(tenant: &str) -> Behaviour {
    Behaviour {
        user_tenant: Some(tenant.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_allowed_tenant_signs_in_through_common_with_its_own_user_key() {
    let app = multi_tenant_app(
        "common",
        &format!(r#"["{DEFAULT_TENANT_ID}", "{FABRIKAM}"]"#),
    )
    .await;
    let me = assert_signed_in(&app, app.login_with_behaviour(user_of(FABRIKAM)).await).await;
    assert_eq!(me["tid"], FABRIKAM);
    let oid = me["oid"].as_str().expect("oid");
    assert_eq!(me["user"], format!("entra:{FABRIKAM}:{oid}"));
}

#[tokio::test]
async fn organizations_works_the_same() {
    let app = multi_tenant_app("organizations", &format!(r#"["{FABRIKAM}"]"#)).await;
    let me = assert_signed_in(&app, app.login_with_behaviour(user_of(FABRIKAM)).await).await;
    assert_eq!(me["tid"], FABRIKAM);
}

#[tokio::test]
async fn a_tenant_not_in_allowed_tenants_is_refused() {
    let app = multi_tenant_app("common", &format!(r#"["{FABRIKAM}"]"#)).await;
    rule(
        &app,
        user_of(STRANGER),
        "tenant_not_allowed",
        user_of(FABRIKAM),
    )
    .await;
}

#[tokio::test]
async fn a_star_allows_any_tenant() {
    let app = multi_tenant_app("common", r#"["*"]"#).await;
    let me = assert_signed_in(&app, app.login_with_behaviour(user_of(STRANGER)).await).await;
    assert_eq!(me["tid"], STRANGER);
}

#[tokio::test]
async fn iss_and_tid_that_disagree_are_refused() {
    let app = multi_tenant_app(
        "common",
        &format!(r#"["{DEFAULT_TENANT_ID}", "{FABRIKAM}"]"#),
    )
    .await;
    // Both tenants are allowed, but the token's iss names one and its tid the other.
    let bad = Behaviour {
        claims_set: [("tid".to_owned(), json!(DEFAULT_TENANT_ID))]
            .into_iter()
            .collect(),
        ..user_of(FABRIKAM)
    };
    rule(&app, bad, "tenant_mismatch", user_of(FABRIKAM)).await;
}

/// Issue 12.11: the callback's `iss` (RFC 9207) is held to the login before any further IdP
/// call. A tenant outside `allowed_tenants` is refused before the token call; an allowed
/// tenant that is not the token's is refused right after it — before the tenant's keys are
/// fetched and before userinfo is called.
#[tokio::test]
async fn an_iss_parameter_is_checked_before_any_further_idp_call() {
    let app = spawn_app_with(AppOptions {
        authority: Some("common"),
        connection_extra: format!(
            "allowed_tenants = [\"{DEFAULT_TENANT_ID}\", \"{FABRIKAM}\"]\nuserinfo = true"
        ),
        ..Default::default()
    })
    .await;
    let base = app.idp.base_url();
    let encode =
        |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let login_with_iss = |iss: String| {
        let app = &app;
        async move {
            app.idp.set_behaviour(user_of(FABRIKAM));
            let authorize = app.begin_login().await;
            let callback = app.authorize(&authorize).await;
            app.callback_with(
                &app.browser,
                &format!("{callback}&iss={}", encode(&iss)),
                true,
            )
            .await
        }
    };

    // A tenant nobody allowed: not even the code is redeemed.
    let before = app.idp.counters();
    let res = login_with_iss(format!("{base}/{STRANGER}/v2.0")).await;
    assert_refused(
        &app,
        res,
        StatusCode::BAD_REQUEST,
        "issuer_parameter_mismatch",
        None,
    )
    .await;
    let after = app.idp.counters();
    assert_eq!(after.token, before.token, "no token call");

    // An allowed tenant, but not the one the token is for: no keys, no userinfo.
    let before = app.idp.counters();
    let res = login_with_iss(format!("{base}/{DEFAULT_TENANT_ID}/v2.0")).await;
    assert_refused(
        &app,
        res,
        StatusCode::BAD_REQUEST,
        "issuer_parameter_mismatch",
        None,
    )
    .await;
    let after = app.idp.counters();
    assert_eq!(after.token, before.token + 1, "the code was redeemed");
    assert_eq!(app.idp.jwks_requests(FABRIKAM), 0, "no tenant keys fetched");
    assert_eq!(after.userinfo, before.userinfo, "no userinfo call");

    // Twin: the token's own issuer signs in (and then fetches the keys and calls userinfo).
    let res = login_with_iss(format!("{base}/{FABRIKAM}/v2.0")).await;
    assert_signed_in(&app, res).await;
    assert_eq!(app.idp.jwks_requests(FABRIKAM), 1);
    assert_eq!(app.idp.counters().userinfo, after.userinfo + 1);
}

#[tokio::test]
async fn a_tid_that_is_not_a_guid_is_refused() {
    let app = multi_tenant_app("common", r#"["*"]"#).await;
    let base = app.idp.base_url();
    let bad = Behaviour {
        claims_set: [
            ("tid".to_owned(), json!("common")),
            ("iss".to_owned(), json!(format!("{base}/common/v2.0"))),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    rule(&app, bad, "invalid_tid", Behaviour::default()).await;
}

#[tokio::test]
async fn a_key_whose_issuer_names_another_tenant_is_refused() {
    // Refetches without cooldown, so each key change below reaches entrance through a new kid.
    let app = spawn_app_with(AppOptions {
        authority: Some("common"),
        connection_extra: format!(r#"allowed_tenants = ["{FABRIKAM}"]"#),
        tables_toml: "[keys]\nrefetch_cooldown_secs = 0".into(),
        ..Default::default()
    })
    .await;
    let base = app.idp.base_url();
    // The verifying key says it signs only for the mock's own tenant; the token is Fabrikam's.
    let bad = Behaviour {
        key_issuer: Some(format!("{base}/{DEFAULT_TENANT_ID}/v2.0")),
        ..user_of(FABRIKAM)
    };
    app.idp.set_behaviour(bad.clone());
    app.idp.rotate_signing_key(true);
    let res = app.login_with_behaviour(bad).await;
    assert_refused(
        &app,
        res,
        StatusCode::UNAUTHORIZED,
        "id_token_rejected",
        Some("key_issuer_mismatch"),
    )
    .await;
    // Twin: the same user and key material, the keys published with the templated issuer.
    app.idp.set_behaviour(user_of(FABRIKAM));
    app.idp.rotate_signing_key(true);
    assert_signed_in(&app, app.login_with_behaviour(user_of(FABRIKAM)).await).await;
}

#[tokio::test]
async fn a_key_whose_literal_issuer_is_the_tenant_signs_in() {
    let app = multi_tenant_app("common", &format!(r#"["{FABRIKAM}"]"#)).await;
    let base = app.idp.base_url();
    let literal = Behaviour {
        key_issuer: Some(format!("{base}/{FABRIKAM}/v2.0")),
        ..user_of(FABRIKAM)
    };
    app.idp.set_behaviour(literal.clone());
    app.idp.rotate_signing_key(true);
    assert_signed_in(&app, app.login_with_behaviour(literal).await).await;
}

#[tokio::test]
async fn a_single_tenant_connection_enforces_allowed_tenants_too() {
    let app = spawn_app_with(AppOptions {
        connection_extra: format!(r#"allowed_tenants = ["{FABRIKAM}"]"#),
        ..Default::default()
    })
    .await;
    let res = app.login_with_behaviour(Behaviour::default()).await;
    assert_refused(
        &app,
        res,
        StatusCode::UNAUTHORIZED,
        "id_token_rejected",
        Some("tenant_not_allowed"),
    )
    .await;
    // Twin: the mock's own tenant allowed.
    let app = spawn_app_with(AppOptions {
        connection_extra: format!(r#"allowed_tenants = ["{DEFAULT_TENANT_ID}"]"#),
        ..Default::default()
    })
    .await;
    assert_signed_in(&app, app.login_with_behaviour(Behaviour::default()).await).await;
}

#[tokio::test]
async fn a_templated_issuer_on_a_tenant_url_is_still_an_issuer_mismatch() {
    // A tenant authority whose metadata publishes the template from the first fetch on.
    let idp = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("mock IdP starts");
    idp.set_behaviour(Behaviour {
        metadata_issuer: Some(format!("{}/{{tenantid}}/v2.0", idp.base_url())),
        ..Default::default()
    });
    let app = spawn_app_with(AppOptions {
        metadata_url: Some(idp.metadata_url()),
        wait_ready: false,
        admin_listen: true,
        ..Default::default()
    })
    .await;
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        let res = app.admin_get("/readyz").await;
        body = res.json().await.unwrap_or_default();
        if body.to_string().contains("issuer_mismatch") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        body["connections"][0]["reason"], "issuer_mismatch",
        "{body}"
    );
    // Twin: the same mock's common authority publishes the template and gets ready.
    let app = multi_tenant_app("common", r#"["*"]"#).await;
    assert_signed_in(&app, app.login().await).await;
}

/// A Fabrikam user whose token is signed with a key of `key_tenant`'s own (`None`: Fabrikam's),
/// published only in that tenant's JWKS.
fn signed_with_tenant_key(key_tenant: Option<&str>) -> Behaviour {
    Behaviour {
        signing: Signing::TenantKey(key_tenant.map(str::to_owned)),
        ..user_of(FABRIKAM)
    }
}

#[tokio::test]
async fn a_tenants_own_key_is_fetched_from_its_jwks_and_cached_per_tenant() {
    let app = multi_tenant_app("common", &format!(r#"["{FABRIKAM}"]"#)).await;
    // Fabrikam's key is not in `common`'s JWKS: only Fabrikam's own JWKS can verify it.
    let res = app.login_with_behaviour(signed_with_tenant_key(None)).await;
    let me = assert_signed_in(&app, res).await;
    assert_eq!(me["tid"], FABRIKAM);
    assert_eq!(app.idp.jwks_requests(FABRIKAM), 1);
    // The next sign-in of that tenant uses the cached keys.
    let res = app.login_with_behaviour(signed_with_tenant_key(None)).await;
    assert_signed_in(&app, res).await;
    assert_eq!(app.idp.jwks_requests(FABRIKAM), 1, "cached per tenant");
}

#[tokio::test]
async fn another_tenants_own_key_cannot_sign_for_a_tenant() {
    // Both tenants allowed; refetches without cooldown so a cooldown cannot be what refuses.
    let app = spawn_app_with(AppOptions {
        authority: Some("common"),
        connection_extra: format!(r#"allowed_tenants = ["{FABRIKAM}", "{STRANGER}"]"#),
        tables_toml: "[keys]\nrefetch_cooldown_secs = 0".into(),
        ..Default::default()
    })
    .await;
    // A Fabrikam token signed with a key only the other tenant's JWKS publishes: looked up in
    // Fabrikam's keys, it is not there.
    rule(
        &app,
        signed_with_tenant_key(Some(STRANGER)),
        "unknown_kid",
        signed_with_tenant_key(None),
    )
    .await;
}

#[tokio::test]
async fn a_tenant_outside_allowed_tenants_makes_entrance_fetch_nothing() {
    let app = multi_tenant_app("common", &format!(r#"["{FABRIKAM}"]"#)).await;
    let stranger = Behaviour {
        signing: Signing::TenantKey(None),
        ..user_of(STRANGER)
    };
    let res = app.login_with_behaviour(stranger).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.idp.jwks_requests(STRANGER), 0);
}
