//! The verifier's rules, one test (or more) per step of OpenID Connect Core §3.1.3.7 and
//! per Entra-specific check, each against a twin token that passes.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::oidc::jwks::test_keys::{TestKey, primary, secondary};

const ISSUER: &str = "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0";
const CLIENT: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";
const TRUSTED: &str = "api://trusted-extra";
const NONCE: &str = "n-0S6_WzA2Mj";
const NOW: i64 = 1_700_000_000;
const SKEW: i64 = 300;

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Signs arbitrary header/payload JSON with `key`, using the header's alg when it is an RSA one.
fn sign_raw(header: &str, payload: &str, key: &TestKey) -> String {
    let alg = serde_json::from_str::<Value>(header)
        .ok()
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned))
        .and_then(|a| a.parse::<Algorithm>().ok())
        .filter(|a| a.family() == AlgorithmFamily::Rsa)
        .unwrap_or(Algorithm::RS256);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding_key(), alg).expect("sign");
    format!("{input}.{sig}")
}

fn sign(header: &Value, claims: &Value, key: &TestKey) -> String {
    sign_raw(&header.to_string(), &claims.to_string(), key)
}

fn header() -> Value {
    json!({"typ": "JWT", "alg": "RS256", "kid": "k1"})
}

fn claims() -> Value {
    json!({
        "ver": "2.0", "iss": ISSUER, "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "aud": CLIENT, "exp": NOW + 3600, "iat": NOW - 60, "nbf": NOW - 60, "nonce": NONCE,
        "tid": "aaaabbbb-0000-cccc-1111-dddd2222eeee", "oid": "00000000-0000-0000-66f3-3332eca7ea81",
        "name": "Abe Lincoln", "preferred_username": "abeli@microsoft.com", "aio": "opaque", "uti": "x",
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.remove(key);
    }
    v
}

/// k1 = primary, k2 = secondary, as a JWKS would list them.
fn keys() -> KeySet {
    let doc = json!({"keys": [primary().jwk("k1"), secondary().jwk("k2")]});
    KeySet::from_jwks_json(doc.to_string().as_bytes()).expect("test JWKS")
}

fn keys_of(jwks: Vec<Value>) -> KeySet {
    KeySet::from_jwks_json(json!({ "keys": jwks }).to_string().as_bytes()).expect("test JWKS")
}

fn verify_with(
    token: &str,
    keys: &KeySet,
    tweak: impl FnOnce(&mut Expectations<'_>),
) -> Result<IdTokenClaims, Rejection> {
    let trusted = vec![TRUSTED.to_owned()];
    let algs = allowed_algs(&[]);
    let policy = IssuerPolicy::Exact(ISSUER.into());
    let mut e = Expectations {
        issuer: &policy,
        allowed_tenants: &TenantAllowList::Any,
        client_id: CLIENT,
        trusted_audiences: &trusted,
        allowed_algs: &algs,
        clock_skew: Duration::from_secs(SKEW as u64),
        now: NOW,
        nonce: NONCE,
    };
    tweak(&mut e);
    verify_id_token(token, keys, &e)
}

fn verify(token: &str) -> Result<IdTokenClaims, Rejection> {
    verify_with(token, &keys(), |_| {})
}

/// Signed with the primary key, default header.
fn check(claims: &Value) -> Result<IdTokenClaims, Rejection> {
    verify(&sign(&header(), claims, primary()))
}

fn check_header(header: &Value) -> Result<IdTokenClaims, Rejection> {
    verify(&sign(header, &claims(), primary()))
}

// ---- the happy path -------------------------------------------------------------------------------------

#[test]
fn a_good_entra_token_is_accepted_and_its_claims_returned() {
    let extra = with(
        with(
            with(claims(), "groups", json!(["g1", "g2"])),
            "roles",
            json!(["Admin"]),
        ),
        "email_verified",
        json!(true),
    );
    let extra = with(
        with(with(extra, "xms_edov", json!(false)), "sid", json!("s")),
        "login_hint",
        json!("h"),
    );
    let extra = with(with(extra, "email", json!("a@b.c")), "azp", json!(CLIENT));
    let got = check(&extra).expect("accepted");
    assert_eq!(
        got,
        IdTokenClaims {
            iss: ISSUER.into(),
            sub: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ".into(),
            aud: vec![CLIENT.into()],
            exp: NOW + 3600,
            iat: NOW - 60,
            nbf: Some(NOW - 60),
            nonce: Some(NONCE.into()),
            azp: Some(CLIENT.into()),
            tid: Some("aaaabbbb-0000-cccc-1111-dddd2222eeee".into()),
            oid: Some("00000000-0000-0000-66f3-3332eca7ea81".into()),
            name: Some("Abe Lincoln".into()),
            email: Some("a@b.c".into()),
            email_verified: Some(true),
            xms_edov: Some(false),
            preferred_username: Some("abeli@microsoft.com".into()),
            login_hint: Some("h".into()),
            sid: Some("s".into()),
            groups: vec!["g1".into(), "g2".into()],
            roles: vec!["Admin".into()],
            hasgroups: None,
            groups_claim_source: false,
        }
    );
}

#[test]
fn group_overage_is_detected_from_hasgroups_or_claim_names() {
    let minimal = json!({"iss": ISSUER, "sub": "s", "aud": CLIENT, "exp": NOW + 60, "iat": NOW, "nonce": NONCE});
    assert!(!check(&minimal).expect("accepted").groups_overage());
    let implicit = with(minimal.clone(), "hasgroups", json!(true));
    let got = check(&implicit).expect("accepted");
    assert!(got.groups_overage() && got.groups.is_empty());
    let code_flow = with(minimal.clone(), "_claim_names", json!({"groups": "src1"}));
    let code_flow = with(
        code_flow,
        "_claim_sources",
        json!({"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}}),
    );
    assert!(check(&code_flow).expect("accepted").groups_overage());
    // Another distributed claim is not a groups overage.
    let other = with(minimal.clone(), "_claim_names", json!({"roles": "src1"}));
    assert!(!check(&other).expect("accepted").groups_overage());
    assert!(
        !check(&with(minimal, "hasgroups", json!(false)))
            .expect("accepted")
            .groups_overage()
    );
}

#[test]
fn overage_markers_of_the_wrong_type_are_refused() {
    let minimal = json!({"iss": ISSUER, "sub": "s", "aud": CLIENT, "exp": NOW + 60, "iat": NOW, "nonce": NONCE});
    for (claim, value) in [
        ("hasgroups", json!("true")),
        ("_claim_names", json!("groups")),
        ("_claim_names", json!(["groups"])),
    ] {
        assert!(
            matches!(
                check(&with(minimal.clone(), claim, value)),
                Err(Rejection::Malformed(_))
            ),
            "{claim}"
        );
    }
}

#[test]
fn optional_claims_default_when_absent() {
    let minimal = json!({"iss": ISSUER, "sub": "s", "aud": CLIENT, "exp": NOW + 60, "iat": NOW, "nonce": NONCE});
    let got = check(&minimal).expect("accepted");
    assert_eq!(got.nbf, None);
    assert!(got.groups.is_empty() && got.roles.is_empty());
    assert_eq!(got.tid, None);
}

#[test]
fn unknown_claims_and_header_members_are_ignored() {
    let h = with(header(), "x5t", json!({"odd": [1, 2]}));
    let c = with(claims(), "_claim_names", json!({"groups": "src1"}));
    assert!(verify(&sign(&h, &c, primary())).is_ok());
}

// ---- token shape -------------------------------------------------------------------------------------------

#[test]
fn not_three_parts_is_malformed() {
    let good = sign(&header(), &claims(), primary());
    assert!(verify(&good).is_ok());
    for bad in [
        String::new(),
        "abc".to_owned(),
        "a.b".to_owned(),
        format!("{good}.x"),
        format!("{good}.x.y"),
    ] {
        assert!(
            matches!(verify(&bad), Err(Rejection::Malformed(_))),
            "{bad}"
        );
    }
}

#[test]
fn bad_base64_or_json_in_the_header_is_malformed() {
    let good = sign(&header(), &claims(), primary());
    let (_, rest) = good.split_once('.').expect("parts");
    for h in [
        "!!!",
        "e30=",
        &URL_SAFE_NO_PAD.encode("not json"),
        &URL_SAFE_NO_PAD.encode("[1]"),
    ] {
        assert!(
            matches!(verify(&format!("{h}.{rest}")), Err(Rejection::Malformed(_))),
            "{h}"
        );
    }
}

#[test]
fn duplicate_header_members_are_malformed() {
    let dup = r#"{"alg":"RS256","kid":"k1","kid":"k2"}"#;
    let twin = r#"{"alg":"RS256","kid":"k1"}"#;
    assert!(matches!(
        verify(&sign_raw(dup, &claims().to_string(), primary())),
        Err(Rejection::Malformed(_))
    ));
    assert!(verify(&sign_raw(twin, &claims().to_string(), primary())).is_ok());
}

#[test]
fn kid_that_is_not_a_string_is_malformed() {
    assert!(matches!(
        check_header(&with(header(), "kid", json!(1))),
        Err(Rejection::Malformed(_))
    ));
    assert!(matches!(
        check_header(&with(header(), "kid", Value::Null)),
        Err(Rejection::Malformed(_))
    ));
    assert!(check_header(&with(header(), "kid", json!("k1"))).is_ok());
}

#[test]
fn bad_base64_signature_is_malformed() {
    let good = sign(&header(), &claims(), primary());
    let (input, _) = good.rsplit_once('.').expect("parts");
    assert!(matches!(
        verify(&format!("{input}.a+b/")),
        Err(Rejection::Malformed(_))
    ));
    assert!(matches!(
        verify(&format!("{input}.")),
        Err(Rejection::BadSignature)
    ));
}

/// Builds a validly signed token of exactly `len` bytes by padding an ignored claim and header member.
fn token_of_len(len: usize) -> String {
    // Each padding byte adds 4/3 base64 characters: start just below the estimate, then search a few.
    let base = b64json(&header()).len() + b64json(&claims()).len() + 342 + 2;
    let start = (len.saturating_sub(base) * 3 / 4).saturating_sub(24);
    for pad in start..start + 64 {
        for hpad in 0..3 {
            let h = with(header(), "p", json!("h".repeat(hpad)));
            let c = with(claims(), "pad", json!("x".repeat(pad)));
            let sig_len = 342; // base64url of a 256-byte RSA-2048 signature
            let n = b64json(&h).len() + b64json(&c).len() + sig_len + 2;
            if n == len {
                let t = sign(&h, &c, primary());
                assert_eq!(t.len(), len);
                return t;
            }
        }
    }
    panic!("no padding gives length {len}");
}

#[test]
fn tokens_longer_than_64_kib_are_malformed_before_decoding() {
    assert_eq!(MAX_TOKEN_LEN, 65536);
    assert!(verify(&token_of_len(MAX_TOKEN_LEN)).is_ok());
    let long = token_of_len(MAX_TOKEN_LEN + 1);
    assert_eq!(
        verify(&long),
        Err(Rejection::Malformed("token too long".into()))
    );
    assert_eq!(
        peek_kid(&long),
        Err(Rejection::Malformed("token too long".into()))
    );
}

// ---- alg ----------------------------------------------------------------------------------------------------

#[test]
fn alg_none_is_rejected() {
    let h = json!({"alg": "none"});
    let unsigned = format!("{}.{}.", b64json(&h), b64json(&claims()));
    assert_eq!(
        verify(&unsigned),
        Err(Rejection::UnsupportedAlg("none".into()))
    );
    // Twin: the same token signed with RS256 (no kid, but k1 is not the only RSA key: use a one-key set).
    let set = keys_of(vec![primary().jwk("k1")]);
    let signed = sign(&json!({"alg": "RS256"}), &claims(), primary());
    assert!(verify_with(&signed, &set, |_| {}).is_ok());
}

#[test]
fn hmac_is_rejected_even_when_allowlisted() {
    // The classic confusion attack: HS256 keyed with the public RSA modulus.
    let h = json!({"alg": "HS256", "kid": "k1"});
    let input = format!("{}.{}", b64json(&h), b64json(&claims()));
    let secret = jsonwebtoken::EncodingKey::from_secret(primary().n.as_bytes());
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), &secret, Algorithm::HS256).expect("sign");
    let token = format!("{input}.{sig}");
    let hs_allowed =
        |e: &mut Expectations<'_>| e.allowed_algs = &[Algorithm::RS256, Algorithm::HS256];
    assert_eq!(
        verify_with(&token, &keys(), hs_allowed),
        Err(Rejection::UnsupportedAlg("HS256".into()))
    );
    let twin = sign(&header(), &claims(), primary());
    assert!(verify_with(&twin, &keys(), hs_allowed).is_ok());
}

#[test]
fn alg_outside_the_allowlist_is_rejected() {
    let ps = sign(&with(header(), "alg", json!("PS256")), &claims(), primary());
    assert_eq!(verify(&ps), Err(Rejection::UnsupportedAlg("PS256".into())));
    // Twin: the same token once the metadata advertises PS256.
    let algs: &'static [Algorithm] = Vec::leak(allowed_algs(&["PS256".into()]));
    assert!(verify_with(&ps, &keys(), |e| e.allowed_algs = algs).is_ok());
    // And RS256 is refused when the caller left it out.
    let rs = sign(&header(), &claims(), primary());
    assert_eq!(
        verify_with(&rs, &keys(), |e| e.allowed_algs = &[Algorithm::PS256]),
        Err(Rejection::UnsupportedAlg("RS256".into()))
    );
}

#[test]
fn unknown_missing_or_non_string_alg() {
    assert_eq!(
        check_header(&with(header(), "alg", json!("RS999"))),
        Err(Rejection::UnsupportedAlg("RS999".into()))
    );
    assert_eq!(
        check_header(&with(header(), "alg", json!("rs256"))),
        Err(Rejection::UnsupportedAlg("rs256".into()))
    );
    assert!(matches!(
        check_header(&without(header(), "alg")),
        Err(Rejection::Malformed(_))
    ));
    assert!(matches!(
        check_header(&with(header(), "alg", json!(256))),
        Err(Rejection::Malformed(_))
    ));
    assert!(check_header(&with(header(), "alg", json!("RS256"))).is_ok());
}

#[test]
fn allowed_algs_adds_advertised_asymmetric_algs_only() {
    assert_eq!(allowed_algs(&[]), vec![Algorithm::RS256]);
    let advertised: Vec<String> = [
        "RS256", "none", "HS256", "ES256", "PS256", "HS512", "ES256", "bogus", "EdDSA",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        allowed_algs(&advertised),
        vec![
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::PS256,
            Algorithm::EdDSA
        ]
    );
}

// ---- crit ---------------------------------------------------------------------------------------------------

#[test]
fn any_crit_is_rejected() {
    assert_eq!(
        check_header(&with(header(), "crit", json!(["b64"]))),
        Err(Rejection::UnknownCrit("b64".into()))
    );
    assert_eq!(
        check_header(&with(header(), "crit", json!(["exp", "x"]))),
        Err(Rejection::UnknownCrit("exp,x".into()))
    );
    for malformed_crit in [json!([]), json!("b64"), json!([1]), json!(null), json!({})] {
        assert_eq!(
            check_header(&with(header(), "crit", malformed_crit.clone())),
            Err(Rejection::UnknownCrit("malformed crit".into())),
            "{malformed_crit}"
        );
    }
    // Twin: the same header without crit.
    assert!(check_header(&header()).is_ok());
}

// ---- key selection ------------------------------------------------------------------------------------------

#[test]
fn unknown_kid_is_reported_for_a_refetch() {
    assert_eq!(
        check_header(&with(header(), "kid", json!("rotated"))),
        Err(Rejection::UnknownKid("rotated".into()))
    );
    assert!(check_header(&with(header(), "kid", json!("k1"))).is_ok());
}

#[test]
fn no_kid_uses_the_only_key_of_the_family() {
    let token = sign(&without(header(), "kid"), &claims(), primary());
    let ec = json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32])});
    // One RSA key (and an EC key that does not count): accepted.
    assert!(
        verify_with(
            &token,
            &keys_of(vec![primary().jwk("k1"), ec.clone()]),
            |_| {}
        )
        .is_ok()
    );
    // Two RSA keys: refusing to guess.
    assert_eq!(
        verify_with(&token, &keys(), |_| {}),
        Err(Rejection::NoMatchingKey)
    );
    // No RSA key at all.
    assert_eq!(
        verify_with(&token, &keys_of(vec![ec]), |_| {}),
        Err(Rejection::NoMatchingKey)
    );
}

#[test]
fn no_kid_skips_keys_pinned_to_another_alg() {
    let token = sign(&without(header(), "kid"), &claims(), primary());
    let pinned = |alg: &str| with(primary().jwk("p"), "alg", json!(alg));
    let set = keys_of(vec![primary().jwk("k1"), pinned("RS384")]);
    assert!(verify_with(&token, &set, |_| {}).is_ok());
    let set = keys_of(vec![primary().jwk("k1"), pinned("RS256")]);
    assert_eq!(
        verify_with(&token, &set, |_| {}),
        Err(Rejection::NoMatchingKey)
    );
}

#[test]
fn kid_naming_a_key_of_another_family_is_no_matching_key() {
    let ec = json!({"kty": "EC", "kid": "k1", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32])});
    let token = sign(&header(), &claims(), primary());
    assert_eq!(
        verify_with(&token, &keys_of(vec![ec.clone()]), |_| {}),
        Err(Rejection::NoMatchingKey)
    );
    // Twin: an RSA key under the same kid next to the EC one is found.
    assert!(verify_with(&token, &keys_of(vec![ec, primary().jwk("k1")]), |_| {}).is_ok());
}

#[test]
fn kid_naming_a_key_pinned_to_another_alg_is_no_matching_key() {
    let token = sign(&header(), &claims(), primary());
    let pinned = |alg: &str| keys_of(vec![with(primary().jwk("k1"), "alg", json!(alg))]);
    assert_eq!(
        verify_with(&token, &pinned("PS256"), |_| {}),
        Err(Rejection::NoMatchingKey)
    );
    assert!(verify_with(&token, &pinned("RS256"), |_| {}).is_ok());
}

#[test]
fn es256_token_is_checked_against_the_ec_key_not_an_rsa_one() {
    // A forged ES256 token with RSA bytes as signature must fail on the EC key, never reach the RSA key.
    let ec = json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32])});
    let set = keys_of(vec![primary().jwk("k1"), ec]);
    let h = json!({"alg": "ES256"});
    let rsa_signed = sign_raw(&h.to_string(), &claims().to_string(), primary());
    assert_eq!(
        verify_with(&rsa_signed, &set, |e| e.allowed_algs =
            &[Algorithm::RS256, Algorithm::ES256]),
        Err(Rejection::BadSignature)
    );
}

// ---- signature ----------------------------------------------------------------------------------------------

#[test]
fn signature_by_another_key_is_rejected() {
    assert_eq!(
        verify(&sign(&header(), &claims(), secondary())),
        Err(Rejection::BadSignature)
    );
    assert!(verify(&sign(&header(), &claims(), primary())).is_ok());
    // The second key verifies its own tokens when they name it.
    assert!(
        verify(&sign(
            &with(header(), "kid", json!("k2")),
            &claims(),
            secondary()
        ))
        .is_ok()
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let good = sign(&header(), &claims(), primary());
    let parts: Vec<&str> = good.split('.').collect();
    let evil = b64json(&with(claims(), "sub", json!("admin")));
    assert_eq!(
        verify(&format!("{}.{}.{}", parts[0], evil, parts[2])),
        Err(Rejection::BadSignature)
    );
    let evil_header = b64json(&with(header(), "typ", json!("at+jwt")));
    assert_eq!(
        verify(&format!("{}.{}.{}", evil_header, parts[1], parts[2])),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn signature_is_checked_before_any_claim() {
    // Every claim is wrong, and the payload is not even JSON: the signature failure must win.
    let bad_claims = json!({"iss": "x", "aud": "y", "exp": 0, "iat": NOW * 2});
    assert_eq!(
        verify(&sign(&header(), &bad_claims, secondary())),
        Err(Rejection::BadSignature)
    );
    let not_json = sign_raw(&header().to_string(), "{not json", secondary());
    assert_eq!(verify(&not_json), Err(Rejection::BadSignature));
    let not_b64 = sign(&header(), &claims(), primary());
    let parts: Vec<&str> = not_b64.split('.').collect();
    assert_eq!(
        verify(&format!("{}.!!!.{}", parts[0], parts[2])),
        Err(Rejection::BadSignature)
    );
}

// ---- claims -------------------------------------------------------------------------------------------------

#[test]
fn payload_that_is_not_json_is_malformed() {
    let t = sign_raw(&header().to_string(), "{not json", primary());
    assert_eq!(
        verify(&t),
        Err(Rejection::Malformed("claims: not JSON".into()))
    );
    let t = sign_raw(&header().to_string(), "[1,2]", primary());
    assert!(matches!(verify(&t), Err(Rejection::Malformed(_))));
    let t = sign_raw(&header().to_string(), "{\"iss\":", primary());
    assert_eq!(
        verify(&t),
        Err(Rejection::Malformed("claims: truncated JSON".into()))
    );
}

#[test]
fn wrong_claim_types_are_malformed() {
    for (claim, value) in [
        ("exp", json!("tomorrow")),
        ("exp", json!(1.5)),
        ("iat", json!(true)),
        ("nbf", json!("0")),
        ("aud", json!(42)),
        ("aud", json!([CLIENT, 1])),
        ("iss", json!(["a"])),
        ("sub", json!(1)),
        ("nonce", json!(1)),
        ("groups", json!("g1")),
        ("email_verified", json!("true")),
    ] {
        assert_eq!(
            check(&with(claims(), claim, value.clone())),
            Err(Rejection::Malformed("claims: wrong claim type".into())),
            "{claim}: {value}"
        );
    }
    assert!(check(&claims()).is_ok());
}

#[test]
fn duplicate_claims_are_malformed() {
    let c = claims().to_string();
    let dup = c.replacen('{', "{\"sub\":\"admin\",", 1);
    assert!(matches!(
        verify(&sign_raw(&header().to_string(), &dup, primary())),
        Err(Rejection::Malformed(_))
    ));
    assert!(verify(&sign_raw(&header().to_string(), &c, primary())).is_ok());
}

#[test]
fn required_claims_must_be_present() {
    for claim in ["iss", "sub", "aud", "exp", "iat"] {
        assert_eq!(
            check(&without(claims(), claim)),
            Err(Rejection::MissingClaim(claim)),
            "{claim}"
        );
        assert_eq!(
            check(&with(claims(), claim, Value::Null)),
            Err(Rejection::MissingClaim(claim)),
            "{claim}"
        );
    }
    assert!(check(&claims()).is_ok());
}

#[test]
fn issuer_must_match_exactly() {
    for wrong in [
        format!("{ISSUER}/"),
        ISSUER.to_uppercase(),
        "https://login.microsoftonline.com/{tenantid}/v2.0".into(),
    ] {
        assert_eq!(
            check(&with(claims(), "iss", json!(wrong))),
            Err(Rejection::IssuerMismatch {
                expected: ISSUER.into(),
                actual: wrong.clone()
            })
        );
    }
    assert!(check(&with(claims(), "iss", json!(ISSUER))).is_ok());
}

#[test]
fn audience_as_string_or_array() {
    assert_eq!(
        check(&with(claims(), "aud", json!(CLIENT)))
            .expect("string")
            .aud,
        vec![CLIENT]
    );
    assert_eq!(
        check(&with(claims(), "aud", json!([CLIENT])))
            .expect("array")
            .aud,
        vec![CLIENT]
    );
}

#[test]
fn audience_must_contain_the_client_id() {
    assert_eq!(
        check(&with(claims(), "aud", json!("someone-else"))),
        Err(Rejection::AudienceMismatch)
    );
    assert_eq!(
        check(&with(claims(), "aud", json!([]))),
        Err(Rejection::AudienceMismatch)
    );
    assert_eq!(
        check(&with(claims(), "aud", json!([TRUSTED]))),
        Err(Rejection::AudienceMismatch)
    );
    assert!(check(&with(claims(), "aud", json!(CLIENT))).is_ok());
}

#[test]
fn untrusted_extra_audience_is_rejected() {
    assert_eq!(
        check(&with(claims(), "aud", json!([CLIENT, "api://evil"]))),
        Err(Rejection::UntrustedAudience("api://evil".into()))
    );
    assert_eq!(
        check(&with(claims(), "aud", json!(["api://evil", CLIENT]))),
        Err(Rejection::UntrustedAudience("api://evil".into()))
    );
    // Twin: the extra audience is one the configuration trusts.
    let got =
        check(&with(claims(), "aud", json!([CLIENT, TRUSTED]))).expect("trusted extra audience");
    assert_eq!(got.aud, vec![CLIENT, TRUSTED]);
    // And without that configuration, the same token is refused.
    let token = sign(
        &header(),
        &with(claims(), "aud", json!([CLIENT, TRUSTED])),
        primary(),
    );
    assert_eq!(
        verify_with(&token, &keys(), |e| e.trusted_audiences = &[]),
        Err(Rejection::UntrustedAudience(TRUSTED.into()))
    );
}

#[test]
fn azp_when_present_must_be_the_client_id() {
    assert_eq!(
        check(&with(claims(), "azp", json!("other"))),
        Err(Rejection::AzpMismatch("other".into()))
    );
    let multi = with(claims(), "aud", json!([CLIENT, TRUSTED]));
    assert_eq!(
        check(&with(multi.clone(), "azp", json!(TRUSTED))),
        Err(Rejection::AzpMismatch(TRUSTED.into()))
    );
    assert!(check(&with(claims(), "azp", json!(CLIENT))).is_ok());
    assert!(check(&with(multi, "azp", json!(CLIENT))).is_ok());
}

#[test]
fn expiry_boundary_with_skew() {
    // exp + skew == now: still accepted; one second later: expired.
    assert!(check(&with(claims(), "exp", json!(NOW - SKEW))).is_ok());
    assert_eq!(
        check(&with(claims(), "exp", json!(NOW - SKEW - 1))),
        Err(Rejection::Expired)
    );
}

#[test]
fn expiry_boundary_without_skew() {
    let at = |exp: i64| sign(&header(), &with(claims(), "exp", json!(exp)), primary());
    let no_skew = |e: &mut Expectations<'_>| e.clock_skew = Duration::ZERO;
    assert!(verify_with(&at(NOW), &keys(), no_skew).is_ok());
    assert_eq!(
        verify_with(&at(NOW - 1), &keys(), no_skew),
        Err(Rejection::Expired)
    );
}

#[test]
fn not_before_boundary_with_skew() {
    let c = with(claims(), "iat", json!(NOW));
    assert!(check(&with(c.clone(), "nbf", json!(NOW + SKEW))).is_ok());
    assert_eq!(
        check(&with(c, "nbf", json!(NOW + SKEW + 1))),
        Err(Rejection::NotYetValid)
    );
}

#[test]
fn issued_at_boundary_with_skew() {
    let c = without(claims(), "nbf");
    assert!(check(&with(c.clone(), "iat", json!(NOW + SKEW))).is_ok());
    assert_eq!(
        check(&with(c, "iat", json!(NOW + SKEW + 1))),
        Err(Rejection::IssuedInFuture)
    );
}

#[test]
fn extreme_times_do_not_overflow() {
    let far = with(claims(), "exp", json!(i64::MAX));
    assert!(check(&far).is_ok());
    let token = sign(&header(), &far, primary());
    assert!(verify_with(&token, &keys(), |e| e.clock_skew = Duration::MAX).is_ok());
    assert!(verify_with(&token, &keys(), |e| e.now = i64::MAX).is_ok());
    let ancient = sign(
        &header(),
        &with(claims(), "exp", json!(i64::MIN)),
        primary(),
    );
    assert_eq!(
        verify_with(&ancient, &keys(), |e| e.now = i64::MAX),
        Err(Rejection::Expired)
    );
    let future = with(
        with(claims(), "iat", json!(i64::MAX)),
        "nbf",
        json!(i64::MAX),
    );
    assert_eq!(check(&future), Err(Rejection::NotYetValid));
    assert_eq!(
        check(&without(future, "nbf")),
        Err(Rejection::IssuedInFuture)
    );
    assert!(matches!(
        check(&with(claims(), "exp", json!(u64::MAX))),
        Err(Rejection::Malformed(_))
    ));
}

#[test]
fn nonce_must_match() {
    assert_eq!(
        check(&with(claims(), "nonce", json!("other"))),
        Err(Rejection::NonceMismatch)
    );
    assert_eq!(
        check(&with(claims(), "nonce", json!(format!("{NONCE}x")))),
        Err(Rejection::NonceMismatch)
    );
    assert_eq!(
        check(&without(claims(), "nonce")),
        Err(Rejection::NonceMismatch)
    );
    assert!(check(&with(claims(), "nonce", json!(NONCE))).is_ok());
}

#[test]
fn empty_expected_nonce_never_matches() {
    let token = sign(&header(), &with(claims(), "nonce", json!("")), primary());
    assert_eq!(
        verify_with(&token, &keys(), |e| e.nonce = ""),
        Err(Rejection::NonceMismatch)
    );
    let twin = sign(&header(), &with(claims(), "nonce", json!("z")), primary());
    assert!(verify_with(&twin, &keys(), |e| e.nonce = "z").is_ok());
}

// ---- multi-tenant issuers, tenants and key issuers (docs/reference/ENTRA.md §5.3) ---------------------------------------

const TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";
const HOME: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
const OTHER: &str = "bbbbcccc-1111-dddd-2222-eeee3333ffff";

fn issuer_of(tid: &str) -> String {
    TEMPLATE.replace("{tenantid}", tid)
}

/// Claims of a user of tenant `tid`, with a consistent `iss`.
fn claims_of(tid: &str) -> Value {
    with(
        with(claims(), "tid", json!(tid)),
        "iss",
        json!(issuer_of(tid)),
    )
}

fn verify_policy(
    token: &str,
    keys: &KeySet,
    policy: &IssuerPolicy,
    allowed: &TenantAllowList,
) -> Result<IdTokenClaims, Rejection> {
    let algs = allowed_algs(&[]);
    let e = Expectations {
        issuer: policy,
        allowed_tenants: allowed,
        client_id: CLIENT,
        trusted_audiences: &[],
        allowed_algs: &algs,
        clock_skew: Duration::from_secs(SKEW as u64),
        now: NOW,
        nonce: NONCE,
    };
    verify_id_token(token, keys, &e)
}

fn template() -> IssuerPolicy {
    IssuerPolicy::EntraTemplate {
        template: TEMPLATE.into(),
    }
}

fn only(tenants: &[&str]) -> TenantAllowList {
    TenantAllowList::Only(tenants.iter().map(|t| (*t).to_owned()).collect())
}

/// Multi-tenant policy, `HOME` allowed, the default (templated-issuer) keys.
fn check_multi(claims: &Value) -> Result<IdTokenClaims, Rejection> {
    let token = sign(&header(), claims, primary());
    verify_policy(&token, &keys(), &template(), &only(&[HOME]))
}

#[test]
fn templated_issuer_accepts_an_allowed_tenant_with_its_own_iss() {
    let got = check_multi(&claims_of(HOME)).expect("allowed tenant");
    assert_eq!(got.iss, issuer_of(HOME));
    assert_eq!(got.tid.as_deref(), Some(HOME));
    // GUIDs compare case-insensitively in the allow-list; iss still has to match tid exactly.
    let upper = HOME.to_uppercase();
    assert!(check_multi(&claims_of(&upper)).is_ok());
}

#[test]
fn templated_issuer_refuses_a_tenant_not_in_the_allow_list() {
    assert_eq!(
        check_multi(&claims_of(OTHER)),
        Err(Rejection::TenantNotAllowed(OTHER.into()))
    );
    // Twin: the same token once the tenant is allowed, or with "*".
    let token = sign(&header(), &claims_of(OTHER), primary());
    assert!(verify_policy(&token, &keys(), &template(), &only(&[HOME, OTHER])).is_ok());
    assert!(verify_policy(&token, &keys(), &template(), &TenantAllowList::Any).is_ok());
}

#[test]
fn templated_issuer_refuses_iss_and_tid_that_disagree() {
    // iss of one allowed tenant, tid of another: neither may vouch for the other.
    let token = sign(
        &header(),
        &with(claims_of(HOME), "tid", json!(OTHER)),
        primary(),
    );
    assert_eq!(
        verify_policy(&token, &keys(), &template(), &only(&[HOME, OTHER])),
        Err(Rejection::TenantMismatch {
            iss_tenant: HOME.into(),
            tid: OTHER.into()
        })
    );
    // An iss that is not the template at all is an ordinary issuer mismatch.
    let elsewhere = with(
        claims_of(HOME),
        "iss",
        json!(format!("https://evil.example/{HOME}/v2.0")),
    );
    assert!(matches!(
        check_multi(&elsewhere),
        Err(Rejection::IssuerMismatch { .. })
    ));
    // The literal template as iss is never a tenant's issuer.
    assert!(matches!(
        check_multi(&with(claims_of(HOME), "iss", json!(TEMPLATE))),
        Err(Rejection::IssuerMismatch { .. })
    ));
}

#[test]
fn templated_issuer_requires_a_guid_tid() {
    assert_eq!(
        check_multi(&without(claims_of(HOME), "tid")),
        Err(Rejection::MissingClaim("tid"))
    );
    for bad in ["common", "", "x/../aaaabbbb-0000-cccc-1111-dddd2222eeee"] {
        assert_eq!(
            check_multi(&claims_of(bad)),
            Err(Rejection::InvalidTenantId(bad.into())),
            "{bad}"
        );
    }
}

#[test]
fn a_key_whose_issuer_names_another_tenant_is_refused() {
    let key_of = |issuer: &str| {
        let mut jwk = primary().jwk("k1");
        jwk["issuer"] = json!(issuer);
        keys_of(vec![jwk])
    };
    let token = sign(&header(), &claims_of(HOME), primary());
    let all = TenantAllowList::Any;
    assert_eq!(
        verify_policy(&token, &key_of(&issuer_of(OTHER)), &template(), &all),
        Err(Rejection::KeyIssuerMismatch {
            key_issuer: issuer_of(OTHER),
            iss: issuer_of(HOME)
        })
    );
    // A personal-accounts (MSA) key cannot sign for a work tenant.
    let msa = issuer_of("9188040d-6c67-4c5b-b112-36a304b66dad");
    assert!(matches!(
        verify_policy(&token, &key_of(&msa), &template(), &all),
        Err(Rejection::KeyIssuerMismatch { .. })
    ));
    // Twins: a literal issuer of this tenant, the template, or no issuer member at all.
    assert!(verify_policy(&token, &key_of(&issuer_of(HOME)), &template(), &all).is_ok());
    assert!(verify_policy(&token, &key_of(TEMPLATE), &template(), &all).is_ok());
    let mut bare = primary().jwk("k1");
    if let Some(obj) = bare.as_object_mut() {
        obj.remove("issuer");
    }
    assert!(verify_policy(&token, &keys_of(vec![bare]), &template(), &all).is_ok());
}

#[test]
fn a_single_tenant_connection_checks_key_issuers_and_its_optional_allow_list() {
    // Exact issuer, the key's literal issuer names another tenant: refused.
    let mut jwk = primary().jwk("k1");
    jwk["issuer"] = json!(issuer_of(OTHER));
    let token = sign(&header(), &claims(), primary());
    assert!(matches!(
        verify_with(&token, &keys_of(vec![jwk]), |_| {}),
        Err(Rejection::KeyIssuerMismatch { .. })
    ));
    // A templated key issuer substitutes tid: a tid that is not iss's tenant is refused.
    assert!(matches!(
        check(&with(claims(), "tid", json!(OTHER))),
        Err(Rejection::KeyIssuerMismatch { .. })
    ));
    // An allow-list on a single-tenant connection is enforced too, and needs tid.
    let exact = IssuerPolicy::Exact(ISSUER.into());
    assert!(verify_policy(&token, &keys(), &exact, &only(&[HOME])).is_ok());
    assert_eq!(
        verify_policy(&token, &keys(), &exact, &only(&[OTHER])),
        Err(Rejection::TenantNotAllowed(HOME.into()))
    );
    let no_tid = sign(&header(), &without(claims(), "tid"), primary());
    assert_eq!(
        verify_policy(&no_tid, &keys(), &exact, &only(&[HOME])),
        Err(Rejection::MissingClaim("tid"))
    );
}

#[test]
fn a_templated_metadata_issuer_is_no_template_under_an_exact_policy() {
    // A tenant URL whose metadata published `{tenantid}` is refused at discovery; should
    // one ever reach the verifier as an exact issuer, no token's iss equals it.
    let token = sign(&header(), &claims_of(HOME), primary());
    assert!(matches!(
        verify_policy(
            &token,
            &keys(),
            &IssuerPolicy::Exact(TEMPLATE.into()),
            &TenantAllowList::Any
        ),
        Err(Rejection::IssuerMismatch { .. })
    ));
}

#[test]
fn the_authorization_response_iss_is_admitted_by_shape() {
    assert!(template().admits(&issuer_of(HOME), &TenantAllowList::Any));
    assert!(!template().admits(TEMPLATE, &TenantAllowList::Any));
    assert!(!template().admits(&issuer_of("common"), &TenantAllowList::Any));
    assert!(!template().admits(
        &format!("https://login.microsoftonline.com/{HOME}/x/v2.0"),
        &TenantAllowList::Any
    ));
    assert!(IssuerPolicy::Exact(ISSUER.into()).admits(ISSUER, &TenantAllowList::Any));
    assert!(!IssuerPolicy::Exact(ISSUER.into()).admits(&issuer_of(OTHER), &TenantAllowList::Any));
    // A tenant outside allowed_tenants is refused before the token is asked for.
    assert!(template().admits(&issuer_of(HOME), &only(&[HOME])));
    assert!(!template().admits(&issuer_of(OTHER), &only(&[HOME])));
}

// ---- peek_kid, codes ----------------------------------------------------------------------------------------

#[test]
fn peek_kid_reads_the_header_only() {
    let token = sign(&header(), &claims(), secondary());
    assert_eq!(peek_kid(&token), Ok(Some("k1".into())));
    assert_eq!(
        peek_kid(&sign(&without(header(), "kid"), &claims(), primary())),
        Ok(None)
    );
    assert_eq!(peek_kid("e30.x.y"), Ok(None));
    assert!(matches!(peek_kid("garbage"), Err(Rejection::Malformed(_))));
    assert!(matches!(peek_kid("!!.x.y"), Err(Rejection::Malformed(_))));
    assert!(matches!(
        peek_kid(&sign(
            &with(header(), "kid", json!(5)),
            &claims(),
            primary()
        )),
        Err(Rejection::Malformed(_))
    ));
}

#[test]
fn rejection_codes_are_stable_snake_case() {
    let all = [
        (Rejection::Malformed("x".into()), "malformed"),
        (Rejection::UnsupportedAlg("x".into()), "unsupported_alg"),
        (Rejection::UnknownCrit("x".into()), "unknown_crit"),
        (Rejection::UnknownKid("x".into()), "unknown_kid"),
        (Rejection::NoMatchingKey, "no_matching_key"),
        (Rejection::BadSignature, "bad_signature"),
        (
            Rejection::IssuerMismatch {
                expected: "a".into(),
                actual: "b".into(),
            },
            "issuer_mismatch",
        ),
        (Rejection::AudienceMismatch, "audience_mismatch"),
        (
            Rejection::UntrustedAudience("x".into()),
            "untrusted_audience",
        ),
        (Rejection::AzpMismatch("x".into()), "azp_mismatch"),
        (Rejection::Expired, "expired"),
        (Rejection::NotYetValid, "not_yet_valid"),
        (Rejection::IssuedInFuture, "issued_in_future"),
        (Rejection::MissingClaim("iat"), "missing_claim"),
        (Rejection::NonceMismatch, "nonce_mismatch"),
        (Rejection::InvalidTenantId("x".into()), "invalid_tid"),
        (
            Rejection::TenantMismatch {
                iss_tenant: "a".into(),
                tid: "b".into(),
            },
            "tenant_mismatch",
        ),
        (
            Rejection::TenantNotAllowed("x".into()),
            "tenant_not_allowed",
        ),
        (
            Rejection::KeyIssuerMismatch {
                key_issuer: "a".into(),
                iss: "b".into(),
            },
            "key_issuer_mismatch",
        ),
    ];
    for (rejection, code) in all {
        assert_eq!(rejection.code(), code);
        assert_eq!(
            serde_json::to_value(&rejection).expect("serialises"),
            json!(code)
        );
        assert!(!rejection.to_string().is_empty());
    }
}
