//! Bearer access tokens on `/auth` and `/me` (issue 14 item 1, RFC 6750): one test per rule,
//! each refused token (401 `invalid_token` or 403 `insufficient_scope`, with
//! `WWW-Authenticate` and the rule's reason in the JSON body) beside an accepted twin that
//! differs only in that claim, header or setting. The tokens are the mock IdP's, signed with
//! its published keys, so the real key cache and refetch rules are in play.

use mock_idp::{AccessToken, Behaviour, DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID, Signing};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{AppOptions, TestApp, assert_signed_in, spawn_app_with};

/// The API's App ID URI and client GUID (docs/reference/ENTRA-2.md's fake API).
const API: &str = "api://11112222-bbbb-3333-cccc-4444dddd5555";
const API_GUID: &str = "11112222-bbbb-3333-cccc-4444dddd5555";
/// A daemon app calling the API with client credentials.
const DAEMON: &str = "22223333-cccc-4444-dddd-5555eeee6666";
const FABRIKAM: &str = "bbbbcccc-1111-dddd-2222-eeee3333ffff";
const STRANGER: &str = "ccccdddd-2222-eeee-3333-ffff4444aaaa";

/// entrance with the `api` table given (its inner TOML, inline-table members).
async fn api_app(api: &str) -> TestApp {
    api_app_with(api, AppOptions::default()).await
}

async fn api_app_with(api: &str, mut opts: AppOptions) -> TestApp {
    opts.connection_extra = format!("{}\napi = {{ {api} }}", opts.connection_extra);
    spawn_app_with(opts).await
}

fn audiences() -> String {
    format!(r#"audiences = ["{API}", "{API_GUID}"]"#)
}

fn user_token(app: &TestApp, t: AccessToken) -> String {
    app.idp.access_token(&t).expect("the mock signs")
}

fn user(scp: &str) -> AccessToken {
    AccessToken::delegated(API, scp)
}

/// A request with `Authorization: Bearer <token>` from a client without cookies.
async fn with_bearer(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    crate::helpers::browser()
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// A 200 from `/auth`; returns its headers.
async fn accepted(app: &TestApp, token: &str) -> reqwest::header::HeaderMap {
    let res = with_bearer(app, "/auth", token).await;
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers.get(header::SET_COOKIE).is_none(),
        "no session for a bearer request"
    );
    headers
}

/// A refusal from `/auth`: the status, RFC 6750's `WWW-Authenticate` with its `error`, and
/// the rule's `reason` in the JSON body. Returns the challenge.
async fn refused(app: &TestApp, token: &str, status: StatusCode, reason: &str) -> String {
    let res = with_bearer(app, "/auth?redirect=true", token).await;
    assert_eq!(res.status(), status, "never the browser's redirect");
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .expect("a WWW-Authenticate challenge")
        .to_owned();
    let error = if status == StatusCode::FORBIDDEN {
        "insufficient_scope"
    } else {
        "invalid_token"
    };
    assert!(
        challenge.starts_with(&format!(r#"Bearer error="{error}", error_description=""#)),
        "{challenge}"
    );
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    challenge
}

fn header_str<'h>(h: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn signing(t: AccessToken, s: Signing) -> AccessToken {
    AccessToken { signing: s, ..t }
}

// ---- the JWS: the same rules as ID tokens -----------------------------------------------------

#[tokio::test]
async fn the_signature_must_verify_with_a_published_key() {
    let app = api_app(&audiences()).await;
    for bad in [Signing::CorruptSignature, Signing::UnpublishedKey] {
        refused(
            &app,
            &user_token(&app, signing(user("Files.Read"), bad)),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        )
        .await;
    }
    accepted(&app, &user_token(&app, user("Files.Read"))).await;
}

#[tokio::test]
async fn none_hmac_and_unadvertised_algorithms_are_refused() {
    let app = api_app(&audiences()).await;
    for bad in [
        Signing::AlgNone,
        Signing::Hs256(mock_idp::DEFAULT_CLIENT_SECRET.into()),
        Signing::Rs384,
    ] {
        refused(
            &app,
            &user_token(&app, signing(user("Files.Read"), bad)),
            StatusCode::UNAUTHORIZED,
            "unsupported_alg",
        )
        .await;
    }
    accepted(
        &app,
        &user_token(&app, signing(user("Files.Read"), Signing::Normal)),
    )
    .await;
}

#[tokio::test]
async fn an_unknown_crit_header_is_refused() {
    let app = api_app(&audiences()).await;
    let bad = user("Files.Read")
        .header("crit", json!(["exp"]))
        .header("exp", json!(1));
    refused(
        &app,
        &user_token(&app, bad),
        StatusCode::UNAUTHORIZED,
        "unknown_crit",
    )
    .await;
    let twin = user("Files.Read").header("exp", json!(1));
    accepted(&app, &user_token(&app, twin)).await;
}

#[tokio::test]
async fn an_unknown_kid_is_refetched_once_then_refused_and_a_rotated_key_is_found() {
    let app = api_app(&audiences()).await;
    let before = app.idp.counters().jwks;
    let junk = user("Files.Read").header("kid", json!("junk-kid"));
    refused(
        &app,
        &user_token(&app, junk),
        StatusCode::UNAUTHORIZED,
        "unknown_kid",
    )
    .await;
    assert_eq!(app.idp.counters().jwks, before + 1, "one refetch");
    // The same JWKS cache as ID tokens: a key rotated in since the fetch is found... once the
    // cooldown allows a refetch; the junk kid above used it, so use a fresh app.
    let app = api_app(&audiences()).await;
    app.idp.rotate_signing_key(true);
    accepted(&app, &user_token(&app, user("Files.Read"))).await;
}

// ---- Graph -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_graph_token_is_refused_with_a_message_saying_so() {
    let app = api_app(&audiences()).await;
    let graph = app.idp.graph_token().expect("graph token");
    let challenge = refused(&app, &graph, StatusCode::UNAUTHORIZED, "graph_token").await;
    assert!(challenge.contains("Microsoft Graph"), "{challenge}");
    // Graph's header nonce alone (on a token for our API) is enough…
    let nonce = user("User.Read")
        .v1()
        .header("nonce", json!("AQABAAAAAABfake"));
    refused(
        &app,
        &user_token(&app, nonce),
        StatusCode::UNAUTHORIZED,
        "graph_token",
    )
    .await;
    // …and so is the Graph audience alone (no header nonce).
    for aud in [
        "https://graph.microsoft.com",
        "00000003-0000-0000-c000-000000000000",
    ] {
        let t = user("User.Read").set("aud", json!(aud));
        refused(
            &app,
            &user_token(&app, t),
            StatusCode::UNAUTHORIZED,
            "graph_token",
        )
        .await;
    }
    // The twin: the same v1 token of the same user, for our API and without the nonce.
    accepted(&app, &user_token(&app, user("User.Read").v1())).await;
}

// ---- audience, issuer, tenant, version --------------------------------------------------------

#[tokio::test]
async fn the_audience_must_be_the_apis_and_only_the_apis() {
    let app = api_app(&audiences()).await;
    let other = user("Files.Read").set("aud", json!("api://someone-else"));
    refused(
        &app,
        &user_token(&app, other),
        StatusCode::UNAUTHORIZED,
        "audience_not_accepted",
    )
    .await;
    // The web app's own client ID is the ID token's audience, not the API's.
    let id_token_aud = user("Files.Read").set("aud", json!(DEFAULT_CLIENT_ID));
    refused(
        &app,
        &user_token(&app, id_token_aud),
        StatusCode::UNAUTHORIZED,
        "audience_not_accepted",
    )
    .await;
    let extra = user("Files.Read").set("aud", json!([API, "api://someone-else"]));
    refused(
        &app,
        &user_token(&app, extra),
        StatusCode::UNAUTHORIZED,
        "audience_not_accepted",
    )
    .await;
    // Both configured forms are accepted: the App ID URI (v1's usual) and the GUID (v2's).
    accepted(&app, &user_token(&app, user("Files.Read"))).await;
    let guid = user("Files.Read").set("aud", json!(API_GUID));
    accepted(&app, &user_token(&app, guid)).await;
}

#[tokio::test]
async fn the_issuer_must_be_the_tenants_v2_or_v1_issuer() {
    let app = api_app(&audiences()).await;
    let base = app.idp.base_url();
    let wrong_v2 = user("Files.Read").set("iss", json!(format!("{base}/{FABRIKAM}/v2.0")));
    refused(
        &app,
        &user_token(&app, wrong_v2),
        StatusCode::UNAUTHORIZED,
        "issuer_mismatch",
    )
    .await;
    // A v1 token of another tenant, consistent in itself, on this single-tenant connection.
    let wrong_v1 = AccessToken {
        tenant: Some(FABRIKAM.into()),
        ..user("Files.Read").v1()
    };
    refused(
        &app,
        &user_token(&app, wrong_v1),
        StatusCode::UNAUTHORIZED,
        "issuer_mismatch",
    )
    .await;
    // A v1 issuer naming one tenant and a tid naming another.
    let split = user("Files.Read").v1().set("tid", json!(FABRIKAM));
    refused(
        &app,
        &user_token(&app, split),
        StatusCode::UNAUTHORIZED,
        "tenant_mismatch",
    )
    .await;
    // The twins: v2 and v1 tokens of the tenant.
    let h = accepted(&app, &user_token(&app, user("Files.Read"))).await;
    let v1 = accepted(&app, &user_token(&app, user("Files.Read").v1())).await;
    assert_eq!(
        header_str(&h, "x-auth-request-user"),
        header_str(&v1, "x-auth-request-user")
    );
}

#[tokio::test]
async fn ver_must_fit_the_issuer() {
    let app = api_app(&audiences()).await;
    let bad = user("Files.Read").v1().set("ver", json!("2.0"));
    refused(
        &app,
        &user_token(&app, bad),
        StatusCode::UNAUTHORIZED,
        "version_mismatch",
    )
    .await;
    accepted(&app, &user_token(&app, user("Files.Read").v1())).await;
}

#[tokio::test]
async fn multi_tenant_tokens_need_an_allowed_tenant_and_its_own_keys() {
    let app = api_app_with(
        &audiences(),
        AppOptions {
            authority: Some("common"),
            connection_extra: format!(r#"allowed_tenants = ["{FABRIKAM}"]"#),
            ..Default::default()
        },
    )
    .await;
    // Signed with a key only the tenant's own JWKS publishes: fetched per tenant, as for ID
    // tokens (first, before anything fills that tenant's cache), for v1 tokens too.
    let own_key = AccessToken {
        tenant: Some(FABRIKAM.into()),
        signing: Signing::TenantKey(None),
        ..user("Files.Read").v1()
    };
    accepted(&app, &user_token(&app, own_key)).await;
    assert_eq!(app.idp.jwks_requests(FABRIKAM), 1);
    for version in [false, true] {
        let of = |tenant: &str| {
            let t = AccessToken {
                tenant: Some(tenant.into()),
                ..user("Files.Read")
            };
            if version { t.v1() } else { t }
        };
        refused(
            &app,
            &user_token(&app, of(STRANGER)),
            StatusCode::UNAUTHORIZED,
            "tenant_not_allowed",
        )
        .await;
        let h = accepted(&app, &user_token(&app, of(FABRIKAM))).await;
        assert_eq!(header_str(&h, "x-auth-request-tenant"), Some(FABRIKAM));
    }
}

#[tokio::test]
async fn the_verifying_keys_issuer_must_name_the_tokens_tenant_for_v1_and_v2() {
    let app = api_app_with(
        &audiences(),
        AppOptions {
            authority: Some("common"),
            connection_extra: format!(r#"allowed_tenants = ["{FABRIKAM}", "{DEFAULT_TENANT_ID}"]"#),
            ..Default::default()
        },
    )
    .await;
    // Every published key claims to sign for the mock's own tenant only (a literal issuer):
    // a FABRIKAM token signed with it is refused, v1 (whose iss is sts.windows.net, mapped to
    // the same tenant's v2 issuer for this check) as well as v2.
    app.idp.set_behaviour(Behaviour {
        key_issuer: Some(format!("{}/{DEFAULT_TENANT_ID}/v2.0", app.idp.base_url())),
        ..Default::default()
    });
    let fabrikam = AccessToken {
        tenant: Some(FABRIKAM.into()),
        ..user("Files.Read")
    };
    for t in [fabrikam.clone(), fabrikam.v1()] {
        refused(
            &app,
            &user_token(&app, t),
            StatusCode::UNAUTHORIZED,
            "key_issuer_mismatch",
        )
        .await;
    }
    // The twins: the mock's own tenant, whose issuer the keys name.
    accepted(&app, &user_token(&app, user("Files.Read"))).await;
    accepted(&app, &user_token(&app, user("Files.Read").v1())).await;
}

// ---- time, by entrance's clock ---------------------------------------------------------------

#[tokio::test]
async fn an_expired_token_is_refused_after_the_skew() {
    let app = api_app(&audiences()).await;
    let token = user_token(
        &app,
        AccessToken {
            lifetime_secs: 600,
            ..user("Files.Read")
        },
    );
    accepted(&app, &token).await;
    // exp + skew (300 s) is still accepted; a few seconds later it is not.
    app.clock
        .advance(std::time::Duration::from_secs(600 + 300 - 5));
    accepted(&app, &token).await;
    app.clock.advance(std::time::Duration::from_secs(10));
    let challenge = refused(&app, &token, StatusCode::UNAUTHORIZED, "expired").await;
    assert!(challenge.contains("expired"), "{challenge}");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let app = api_app(&audiences()).await;
    let now = mock_now();
    let later = user("Files.Read").set("nbf", json!(now + 3000));
    refused(
        &app,
        &user_token(&app, later),
        StatusCode::UNAUTHORIZED,
        "not_yet_valid",
    )
    .await;
    let twin = user("Files.Read").set("nbf", json!(now + 60));
    accepted(&app, &user_token(&app, twin)).await;
}

fn mock_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

// ---- the caller: client, user or app, scopes and roles -----------------------------------------

#[tokio::test]
async fn the_client_must_be_named_and_allowed() {
    let app = api_app(&format!(
        r#"{}, allowed_clients = ["{DEFAULT_CLIENT_ID}"]"#,
        audiences()
    ))
    .await;
    refused(
        &app,
        &user_token(&app, user("Files.Read").remove("azp")),
        StatusCode::UNAUTHORIZED,
        "missing_claim",
    )
    .await;
    let stranger = AccessToken {
        client_id: DAEMON.into(),
        ..user("Files.Read")
    };
    refused(
        &app,
        &user_token(&app, stranger),
        StatusCode::FORBIDDEN,
        "client_not_allowed",
    )
    .await;
    let h = accepted(&app, &user_token(&app, user("Files.Read"))).await;
    assert_eq!(
        header_str(&h, "x-auth-request-client-id"),
        Some(DEFAULT_CLIENT_ID)
    );
}

#[tokio::test]
async fn required_scopes_are_all_needed_by_a_user() {
    let app = api_app(&format!(
        r#"{}, required_scopes = ["Files.Read", "Files.Write"]"#,
        audiences()
    ))
    .await;
    let challenge = refused(
        &app,
        &user_token(&app, user("Files.Read")),
        StatusCode::FORBIDDEN,
        "missing_scopes",
    )
    .await;
    assert!(challenge.ends_with(r#"scope="Files.Write""#), "{challenge}");
    let h = accepted(
        &app,
        &user_token(&app, user("Files.Read Files.Write User.Read")),
    )
    .await;
    assert_eq!(
        header_str(&h, "x-auth-request-scopes"),
        Some("Files.Read,Files.Write,User.Read")
    );
}

#[tokio::test]
async fn app_only_tokens_need_required_roles() {
    // Without required_roles no app-only token gets in: Entra issues them, without roles, to
    // any app of the tenant that asks.
    let app = api_app(&audiences()).await;
    let daemon = AccessToken::app_only(API, DAEMON, &["Files.Read.All"]);
    refused(
        &app,
        &user_token(&app, daemon.clone()),
        StatusCode::FORBIDDEN,
        "app_only_not_accepted",
    )
    .await;
    let app = api_app(&format!(
        r#"{}, required_roles = ["Files.Read.All"]"#,
        audiences()
    ))
    .await;
    let no_role = AccessToken::app_only(API, DAEMON, &[]);
    let challenge = refused(
        &app,
        &user_token(&app, no_role),
        StatusCode::FORBIDDEN,
        "missing_roles",
    )
    .await;
    assert!(
        challenge.contains(r#"scope="Files.Read.All""#),
        "{challenge}"
    );
    let h = accepted(&app, &user_token(&app, daemon)).await;
    assert_eq!(
        header_str(&h, "x-auth-request-user"),
        Some(format!("entra-app:{DEFAULT_TENANT_ID}:{DAEMON}").as_str())
    );
    assert_eq!(
        header_str(&h, "x-auth-request-roles"),
        Some("Files.Read.All")
    );
}

#[tokio::test]
async fn an_app_can_never_pass_for_a_person() {
    let app = api_app(&format!(
        r#"{}, required_roles = ["Files.Read.All"]"#,
        audiences()
    ))
    .await;
    // An app-only token that carries the user's oid (idtyp = app) is keyed as the app.
    let posing = AccessToken::app_only(API, DAEMON, &["Files.Read.All"])
        .set("oid", json!("00000000-0000-0000-0000-00000000a0a0"));
    let h = accepted(&app, &user_token(&app, posing)).await;
    assert_eq!(
        header_str(&h, "x-auth-request-user"),
        Some(format!("entra-app:{DEFAULT_TENANT_ID}:{DAEMON}").as_str())
    );
    // Without idtyp, a token without scp is app-only too.
    let plain = AccessToken::app_only(API, DAEMON, &["Files.Read.All"]).remove("idtyp");
    let h = accepted(&app, &user_token(&app, plain)).await;
    assert!(
        header_str(&h, "x-auth-request-user").is_some_and(|u| u.starts_with("entra-app:")),
        "{h:?}"
    );
    // And idtyp = app beside delegated scopes is a contradiction.
    let both =
        AccessToken::app_only(API, DAEMON, &["Files.Read.All"]).set("scp", json!("Files.Read"));
    refused(
        &app,
        &user_token(&app, both),
        StatusCode::UNAUTHORIZED,
        "app_token_with_scopes",
    )
    .await;
    // A delegated token needs the user's oid, which keys the person.
    refused(
        &app,
        &user_token(&app, user("Files.Read").remove("oid")),
        StatusCode::UNAUTHORIZED,
        "missing_claim",
    )
    .await;
}

#[tokio::test]
async fn a_daemon_token_from_the_client_credentials_grant_is_accepted() {
    let app = api_app(&format!(
        r#"{}, required_roles = ["Files.Read.All"]"#,
        audiences()
    ))
    .await;
    app.idp.set_behaviour(Behaviour {
        app_roles: vec!["Files.Read.All".into()],
        ..Default::default()
    });
    let res = reqwest::Client::new()
        .post(app.idp.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", mock_idp::DEFAULT_CLIENT_SECRET),
            ("scope", &format!("{API}/.default")),
        ])
        .send()
        .await
        .expect("token request");
    let body: Value = res.json().await.expect("token JSON");
    let token = body["access_token"].as_str().expect("access token");
    let h = accepted(&app, token).await;
    assert_eq!(
        header_str(&h, "x-auth-request-user"),
        Some(format!("entra-app:{DEFAULT_TENANT_ID}:{DEFAULT_CLIENT_ID}").as_str())
    );
}

#[tokio::test]
async fn a_user_the_connection_does_not_admit_is_refused_as_at_sign_in() {
    let app = api_app_with(
        &audiences(),
        AppOptions {
            connection_extra: r#"allowed_roles = ["App.User"]"#.into(),
            ..Default::default()
        },
    )
    .await;
    refused(
        &app,
        &user_token(&app, user("Files.Read")),
        StatusCode::FORBIDDEN,
        "not_listed",
    )
    .await;
    let twin = AccessToken {
        roles: vec!["App.User".into()],
        ..user("Files.Read")
    };
    accepted(&app, &user_token(&app, twin)).await;
}

// ---- one person, one key; tokens beside sessions -------------------------------------------------

#[tokio::test]
async fn a_browser_session_and_a_bearer_token_of_the_same_person_give_the_same_user() {
    let app = api_app(&audiences()).await;
    let me = assert_signed_in(&app, app.login().await).await;
    let session = app.get("/auth").await;
    assert_eq!(session.status(), StatusCode::OK);
    let session_user = header_str(session.headers(), "x-auth-request-user")
        .expect("user")
        .to_owned();
    assert_eq!(me["user"], session_user);
    for token in [
        user_token(&app, user("Files.Read")),
        user_token(&app, user("Files.Read").v1()),
    ] {
        let h = accepted(&app, &token).await;
        assert_eq!(
            header_str(&h, "x-auth-request-user"),
            Some(session_user.as_str())
        );
        assert_eq!(
            header_str(&h, "x-auth-request-tenant"),
            Some(DEFAULT_TENANT_ID)
        );
        // And /me says the same, marked as a token's answer.
        let res = with_bearer(&app, "/me", &token).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("JSON");
        assert_eq!(body["user"], session_user);
        assert_eq!(body["via"], "bearer");
        assert_eq!(body["app_only"], false);
    }
}

#[tokio::test]
async fn the_token_wins_over_the_cookie_and_creates_no_session() {
    let app = api_app(&format!(
        r#"{}, required_roles = ["Files.Read.All"]"#,
        audiences()
    ))
    .await;
    assert_signed_in(&app, app.login().await).await;
    // The signed-in browser sends a bad token: the token decides, not the cookie.
    let res = app
        .browser
        .get(app.url("/auth"))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A good app token from the same browser is the app, not the signed-in person.
    let daemon = user_token(
        &app,
        AccessToken::app_only(API, DAEMON, &["Files.Read.All"]),
    );
    let res = app
        .browser
        .get(app.url("/me"))
        .bearer_auth(&daemon)
        .send()
        .await
        .expect("request");
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(
        body["user"],
        format!("entra-app:{DEFAULT_TENANT_ID}:{DAEMON}")
    );
    // A fresh client with only a token leaves no session behind.
    let client = crate::helpers::browser();
    let res = client
        .get(app.url("/auth"))
        .bearer_auth(&daemon)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let res = client.get(app.url("/me")).send().await.expect("request");
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "no session was created"
    );
}

#[tokio::test]
async fn malformed_authorization_is_refused_without_falling_back_to_the_cookie() {
    let app = api_app(&audiences()).await;
    assert_signed_in(&app, app.login().await).await;
    let res = app
        .browser
        .get(app.url("/auth"))
        .header(header::AUTHORIZATION, "Bearer")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .expect("challenge");
    assert!(
        challenge
            .to_str()
            .is_ok_and(|c| c.starts_with(r#"Bearer error="invalid_request""#))
    );
    let token = user_token(&app, user("Files.Read"));
    let res = app
        .browser
        .get(app.url("/auth"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Another scheme is not ours: the session answers, as before.
    let res = app
        .browser
        .get(app.url("/auth"))
        .header(header::AUTHORIZATION, "Basic YTpi")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_an_api_table_a_bearer_header_changes_nothing() {
    let app = spawn_app_with(AppOptions::default()).await;
    assert_signed_in(&app, app.login().await).await;
    let res = app
        .browser
        .get(app.url("/auth"))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK, "the session answers");
}

// ---- which connection ----------------------------------------------------------------------------

#[tokio::test]
async fn the_connection_comes_from_the_tokens_audience_and_issuer_not_the_request() {
    const OTHER_API: &str = "api://99998888-7777-6666-5555-444433332222";
    let app = api_app_with(
        &audiences(),
        AppOptions {
            tables_toml: format!(
                r#"
[[connections]]
id = "reports"
metadata_url = "{{metadata_url}}"
client_id = "{DEFAULT_CLIENT_ID}"
client_secret = "{}"
api = {{ audiences = ["{OTHER_API}"] }}
"#,
                mock_idp::DEFAULT_CLIENT_SECRET
            ),
            ..Default::default()
        },
    )
    .await;
    let ours = user_token(&app, user("Files.Read"));
    let theirs = user_token(&app, AccessToken::delegated(OTHER_API, "Reports.Read"));
    for (token, connection) in [(&ours, "contoso"), (&theirs, "reports")] {
        // A connection named in the request changes nothing. (The second connection may
        // still be fetching its metadata: 503 until it is ready.)
        let mut res = None;
        for _ in 0..100 {
            let r = crate::helpers::browser()
                .get(app.url("/auth?connection=contoso"))
                .bearer_auth(token)
                .send()
                .await
                .expect("request");
            if r.status() != StatusCode::SERVICE_UNAVAILABLE {
                res = Some(r);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let res = res.expect("the connection became ready");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header_str(res.headers(), "x-auth-request-connection"),
            Some(connection)
        );
    }
}

// ---- CORS preflights ------------------------------------------------------------------------------

#[tokio::test]
async fn cors_preflights_from_listed_origins_pass_without_a_token() {
    let app = api_app(&format!(
        r#"{}, cors_origins = ["https://spa.example.com"]"#,
        audiences()
    ))
    .await;
    let preflight = |origin: &'static str, forwarded: bool| {
        let client = crate::helpers::browser();
        let req = if forwarded {
            // Traefik and Caddy ask with GET and name the original method.
            client
                .get(app.url("/auth"))
                .header("x-forwarded-method", "OPTIONS")
        } else {
            // nginx's auth_request keeps the original method.
            client.request(reqwest::Method::OPTIONS, app.url("/auth"))
        };
        req.header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .send()
    };
    for forwarded in [false, true] {
        let res = preflight("https://spa.example.com", forwarded)
            .await
            .expect("preflight");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-auth-request-user").is_none());
        let res = preflight("https://evil.example", forwarded)
            .await
            .expect("preflight");
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "an origin not listed"
        );
    }
    // Not a preflight without Access-Control-Request-Method.
    let res = crate::helpers::browser()
        .request(reqwest::Method::OPTIONS, app.url("/auth"))
        .header(header::ORIGIN, "https://spa.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
