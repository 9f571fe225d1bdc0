//! The access-token rules, each refused token beside a twin that differs only in that claim
//! or header and is accepted.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;
use crate::oidc::jwks::test_keys::primary;
use crate::oidc::verifier::allowed_algs;

const TID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
const OTHER_TID: &str = "bbbbcccc-1111-dddd-2222-eeee3333ffff";
const API: &str = "api://11112222-bbbb-3333-cccc-4444dddd5555";
const API_GUID: &str = "11112222-bbbb-3333-cccc-4444dddd5555";
const WEB: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";
const DAEMON: &str = "22223333-cccc-4444-dddd-5555eeee6666";
const NOW: i64 = 1_700_000_000;

fn v2_issuer(tid: &str) -> String {
    format!("https://login.microsoftonline.com/{tid}/v2.0")
}

fn sign(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &primary().encoding_key(),
        Algorithm::RS256,
    )
    .expect("sign");
    format!("{input}.{sig}")
}

fn header() -> Value {
    json!({"typ": "JWT", "alg": "RS256", "kid": "k1"})
}

/// A v2 delegated token of our API, as `access_token.v2.claims.json`.
fn v2_user() -> Value {
    json!({
        "aud": API_GUID, "iss": v2_issuer(TID), "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
        "aio": "x", "azp": WEB, "azpacr": "1", "name": "Ada Lovelace",
        "oid": "00000000-0000-0000-0000-00000000a0a0", "preferred_username": "ada@contoso.example",
        "rh": "x", "scp": "Files.Read User.Read", "sub": "pairwise-api-sub", "tid": TID, "uti": "x", "ver": "2.0",
    })
}

/// The same user's v1 token: `sts.windows.net` issuer, `appid`, an App ID URI audience.
fn v1_user() -> Value {
    json!({
        "aud": API, "iss": format!("https://sts.windows.net/{TID}/"), "iat": NOW - 60, "nbf": NOW - 60,
        "exp": NOW + 3600, "appid": WEB, "appidacr": "1", "oid": "00000000-0000-0000-0000-00000000a0a0",
        "scp": "Files.Read", "sub": "pairwise-api-sub", "tid": TID, "upn": "ada@contoso.example", "ver": "1.0",
    })
}

/// A client-credentials token of the daemon, as `access_token.app_only.v2.claims.json`.
fn v2_app() -> Value {
    json!({
        "aud": API_GUID, "iss": v2_issuer(TID), "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
        "azp": DAEMON, "azpacr": "1", "idtyp": "app", "oid": "33334444-dddd-5555-eeee-6666ffff7777",
        "roles": ["Files.Read.All"], "sub": "33334444-dddd-5555-eeee-6666ffff7777", "tid": TID, "ver": "2.0",
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
    v
}

fn keys_with_issuer(issuer: &str) -> KeySet {
    let mut jwk = primary().jwk("k1");
    jwk["issuer"] = json!(issuer);
    KeySet::from_jwks_json(json!({ "keys": [jwk] }).to_string().as_bytes()).expect("JWKS")
}

fn verify_as(
    token: &str,
    keys: &KeySet,
    policy: &IssuerPolicy,
    tenants: &TenantAllowList,
) -> Result<AccessClaims, Rejection> {
    let audiences = vec![API.to_owned(), API_GUID.to_owned()];
    let algs = allowed_algs(&[]);
    let e = AccessExpectations {
        issuer: policy,
        allowed_tenants: tenants,
        accept_v1: true,
        audiences: &audiences,
        allowed_algs: &algs,
        clock_skew: Duration::from_secs(300),
        now: NOW,
    };
    verify_access_token(token, keys, &e)
}

fn check(claims: &Value) -> Result<AccessClaims, Rejection> {
    let keys = keys_with_issuer("https://login.microsoftonline.com/{tenantid}/v2.0");
    verify_as(
        &sign(&header(), claims),
        &keys,
        &IssuerPolicy::Exact(v2_issuer(TID)),
        &TenantAllowList::Any,
    )
}

fn code(r: Result<AccessClaims, Rejection>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    }
}

#[test]
fn v2_and_v1_user_tokens_and_app_tokens_are_accepted() {
    let c = check(&v2_user()).expect("v2");
    assert_eq!(c.version, TokenVersion::V2);
    assert_eq!(c.client_id, WEB);
    assert!(!c.app_only);
    assert_eq!(c.scopes, ["Files.Read", "User.Read"]);
    let c = check(&v1_user()).expect("v1");
    assert_eq!(c.version, TokenVersion::V1);
    assert_eq!(c.client_id, WEB);
    assert_eq!(c.preferred_username.as_deref(), Some("ada@contoso.example"));
    let c = check(&v2_app()).expect("app");
    assert!(c.app_only);
    assert_eq!(c.roles, ["Files.Read.All"]);
}

#[test]
fn a_graph_token_is_refused_by_header_nonce_or_audience() {
    let graph_header = json!({"typ": "JWT", "nonce": "abc", "alg": "RS256", "kid": "k1"});
    let keys = keys_with_issuer("https://login.microsoftonline.com/{tenantid}/v2.0");
    let policy = IssuerPolicy::Exact(v2_issuer(TID));
    let r = verify_as(
        &sign(&graph_header, &v2_user()),
        &keys,
        &policy,
        &TenantAllowList::Any,
    );
    assert_eq!(code(r), "graph_token");
    for graph in [
        "https://graph.microsoft.com",
        "00000003-0000-0000-c000-000000000000",
    ] {
        assert_eq!(
            code(check(&with(v1_user(), "aud", json!(graph)))),
            "graph_token"
        );
    }
    assert_eq!(code(check(&v1_user())), "accepted");
}

#[test]
fn the_audience_must_be_one_of_the_apis_and_nothing_else() {
    assert_eq!(
        code(check(&with(v2_user(), "aud", json!(WEB)))),
        "audience_not_accepted"
    );
    assert_eq!(
        code(check(&with(
            v2_user(),
            "aud",
            json!([API_GUID, "api://other"])
        ))),
        "audience_not_accepted"
    );
    assert_eq!(
        code(check(&with(v2_user(), "aud", json!([API_GUID, API])))),
        "accepted"
    );
    assert_eq!(code(check(&without(v2_user(), "aud"))), "missing_claim");
}

#[test]
fn the_v1_issuer_must_name_the_connections_tenant_and_agree_with_tid() {
    // Another tenant's v1 issuer and tid, on a single-tenant connection.
    let other = with(
        with(
            v1_user(),
            "iss",
            json!(format!("https://sts.windows.net/{OTHER_TID}/")),
        ),
        "tid",
        json!(OTHER_TID),
    );
    assert_eq!(code(check(&other)), "issuer_mismatch");
    // iss and tid disagree.
    assert_eq!(
        code(check(&with(v1_user(), "tid", json!(OTHER_TID)))),
        "tenant_mismatch"
    );
    // No trailing slash: not the v1 issuer, and not the v2 one either.
    assert_eq!(
        code(check(&with(
            v1_user(),
            "iss",
            json!(format!("https://sts.windows.net/{TID}"))
        ))),
        "issuer_mismatch"
    );
    assert_eq!(code(check(&v1_user())), "accepted");
}

#[test]
fn v1_tokens_are_refused_where_the_v1_issuer_is_unknown() {
    let keys = keys_with_issuer("https://login.microsoftonline.com/{tenantid}/v2.0");
    let audiences = vec![API.to_owned()];
    let algs = allowed_algs(&[]);
    let policy = IssuerPolicy::Exact(v2_issuer(TID));
    let e = AccessExpectations {
        issuer: &policy,
        allowed_tenants: &TenantAllowList::Any,
        accept_v1: false,
        audiences: &audiences,
        allowed_algs: &algs,
        clock_skew: Duration::from_secs(300),
        now: NOW,
    };
    let r = verify_access_token(&sign(&header(), &v1_user()), &keys, &e);
    assert_eq!(code(r), "issuer_mismatch");
}

#[test]
fn a_v1_token_meets_the_key_issuer_check_through_its_tenants_v2_issuer() {
    let policy = IssuerPolicy::EntraTemplate {
        template: "https://login.microsoftonline.com/{tenantid}/v2.0".into(),
    };
    let tenants = TenantAllowList::Only(vec![TID.into(), OTHER_TID.into()]);
    let token = sign(&header(), &v1_user());
    // A key published for another tenant only.
    let r = verify_as(
        &token,
        &keys_with_issuer(&v2_issuer(OTHER_TID)),
        &policy,
        &tenants,
    );
    assert_eq!(code(r), "key_issuer_mismatch");
    // The tenant's own literal key, and the templated one, both vouch.
    for issuer in [
        v2_issuer(TID),
        "https://login.microsoftonline.com/{tenantid}/v2.0".into(),
    ] {
        let r = verify_as(&token, &keys_with_issuer(&issuer), &policy, &tenants);
        assert_eq!(code(r), "accepted", "{issuer}");
    }
    // And the allow-list applies to v1 tokens too.
    let only_other = TenantAllowList::Only(vec![OTHER_TID.into()]);
    let r = verify_as(
        &token,
        &keys_with_issuer(&v2_issuer(TID)),
        &policy,
        &only_other,
    );
    assert_eq!(code(r), "tenant_not_allowed");
}

#[test]
fn ver_must_fit_the_issuer() {
    assert_eq!(
        code(check(&with(v1_user(), "ver", json!("2.0")))),
        "version_mismatch"
    );
    assert_eq!(
        code(check(&with(v2_user(), "ver", json!("1.0")))),
        "version_mismatch"
    );
}

#[test]
fn the_client_claim_follows_the_version() {
    // v2 names the client in azp, v1 in appid; the other one does not count.
    let v2 = with(without(v2_user(), "azp"), "appid", json!(WEB));
    assert_eq!(code(check(&v2)), "missing_claim");
    let v1 = with(without(v1_user(), "appid"), "azp", json!(WEB));
    assert_eq!(code(check(&v1)), "missing_claim");
}

#[test]
fn times_are_checked_with_skew() {
    assert_eq!(
        code(check(&with(v2_user(), "exp", json!(NOW - 301)))),
        "expired"
    );
    assert_eq!(
        code(check(&with(v2_user(), "exp", json!(NOW - 299)))),
        "accepted"
    );
    assert_eq!(
        code(check(&with(v2_user(), "nbf", json!(NOW + 301)))),
        "not_yet_valid"
    );
    assert_eq!(
        code(check(&with(v2_user(), "iat", json!(NOW + 301)))),
        "issued_in_future"
    );
}

#[test]
fn a_delegated_token_needs_an_oid_and_an_app_token_no_scp() {
    assert_eq!(code(check(&without(v2_user(), "oid"))), "missing_claim");
    assert_eq!(
        code(check(&with(v2_app(), "scp", json!("Files.Read")))),
        "app_token_with_scopes"
    );
    // Without idtyp, a token without scp is app-only.
    let c = check(&without(v2_app(), "idtyp")).expect("app");
    assert!(c.app_only);
}

fn api(scopes: &[&str], roles: &[&str], clients: Option<&[&str]>) -> ApiSettings {
    let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    ApiSettings {
        audiences: vec![API.into()],
        required_scopes: list(scopes),
        required_roles: list(roles),
        allowed_clients: clients.map(list),
        cors_origins: vec![],
    }
}

#[test]
fn scopes_roles_and_clients_are_authorized() {
    let user = check(&v2_user()).expect("user");
    let app = check(&v2_app()).expect("app");
    assert_eq!(authorize(&user, &api(&["Files.Read"], &[], None)), Ok(()));
    assert_eq!(
        authorize(&user, &api(&["Files.Read", "Files.Write"], &[], None)),
        Err(Insufficient::MissingScopes(vec!["Files.Write".into()]))
    );
    assert_eq!(
        authorize(&app, &api(&[], &[], None)),
        Err(Insufficient::AppOnlyNotAccepted)
    );
    assert_eq!(
        authorize(&app, &api(&[], &["Files.Read.All"], None)),
        Ok(())
    );
    assert_eq!(
        authorize(&app, &api(&[], &["Files.Write.All"], None)),
        Err(Insufficient::MissingRoles(vec!["Files.Write.All".into()]))
    );
    assert_eq!(
        authorize(&user, &api(&[], &[], Some(&[DAEMON]))),
        Err(Insufficient::ClientNotAllowed(WEB.into()))
    );
    assert_eq!(
        authorize(&app, &api(&[], &["Files.Read.All"], Some(&[DAEMON]))),
        Ok(())
    );
}

#[test]
fn the_peek_picks_by_iss_tid_and_aud() {
    let p = peek(&sign(&header(), &v1_user())).expect("peek");
    assert_eq!(p.aud, [API]);
    assert_eq!(p.tid.as_deref(), Some(TID));
    assert!(!p.graph);
    let policy = IssuerPolicy::Exact(v2_issuer(TID));
    let audiences = vec![API.to_owned()];
    let algs = allowed_algs(&[]);
    let e = AccessExpectations {
        issuer: &policy,
        allowed_tenants: &TenantAllowList::Any,
        accept_v1: true,
        audiences: &audiences,
        allowed_algs: &algs,
        clock_skew: Duration::from_secs(300),
        now: NOW,
    };
    assert!(admits(
        &e,
        &format!("https://sts.windows.net/{TID}/"),
        Some(TID)
    ));
    assert!(admits(&e, &v2_issuer(TID), Some(TID)));
    assert!(!admits(&e, &v2_issuer(OTHER_TID), Some(OTHER_TID)));
    assert!(!admits(
        &e,
        &format!("https://sts.windows.net/{OTHER_TID}/"),
        Some(OTHER_TID)
    ));
}
