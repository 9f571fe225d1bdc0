//! Property tests of the verifier (see the module docs in `mod.rs`).

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::*;
use crate::oidc::jwks::test_keys::primary;

const ISSUER: &str = "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0";
const CLIENT: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";
const NONCE: &str = "nonce-1";
const NOW: i64 = 1_700_000_000;

fn keys() -> KeySet {
    let doc = serde_json::json!({"keys": [primary().jwk("k1")]});
    KeySet::from_jwks_json(doc.to_string().as_bytes()).expect("test JWKS")
}

fn run(token: &str) -> Result<IdTokenClaims, Rejection> {
    let algs = allowed_algs(&["PS256".into(), "ES256".into(), "HS256".into()]);
    let policy = IssuerPolicy::Exact(ISSUER.into());
    let e = Expectations {
        issuer: &policy,
        allowed_tenants: &TenantAllowList::Any,
        client_id: CLIENT,
        trusted_audiences: &[],
        allowed_algs: &algs,
        clock_skew: std::time::Duration::from_secs(300),
        now: NOW,
        nonce: NONCE,
    };
    let result = verify_id_token(token, &keys(), &e);
    if let Ok(c) = &result {
        // Should anything ever be accepted, it must obey every rule.
        assert_eq!(c.iss, ISSUER);
        assert!(c.aud.iter().all(|a| a == CLIENT) && !c.aud.is_empty());
        assert!(c.azp.as_deref().is_none_or(|azp| azp == CLIENT));
        assert_eq!(c.nonce.as_deref(), Some(NONCE));
        assert!(NOW <= c.exp.saturating_add(300) && c.iat <= NOW + 300);
        assert!(c.nbf.is_none_or(|nbf| nbf <= NOW + 300));
    }
    result
}

/// Plausible values (the right issuer, client, nonce, times near now) mixed with arbitrary JSON.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (NOW - 1000..NOW + 1000).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just(ISSUER),
            Just(CLIENT),
            Just(NONCE),
            Just("RS256"),
            Just("PS256"),
            Just("HS256"),
            Just("none"),
            Just("k1"),
            Just("b64")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with some of `names` set to arbitrary values, plus arbitrary extra members.
fn object_with(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(prop::option::of(json_value()), names.len()),
        prop::collection::btree_map("[a-z_]{1,6}", json_value(), 0..3),
    )
        .prop_map(move |(values, extra)| {
            let mut obj: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in names.iter().zip(values) {
                if let Some(value) = value {
                    obj.insert((*name).to_owned(), value);
                }
            }
            Value::Object(obj)
        })
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

proptest! {
    #[test]
    fn arbitrary_strings_are_rejected(token in ".{0,400}") {
        prop_assert!(run(&token).is_err());
        let _ = peek_kid(&token);
    }

    #[test]
    fn arbitrary_dotted_base64_is_rejected(parts in prop::collection::vec("[A-Za-z0-9_-]{0,60}", 0..6)) {
        let token = parts.join(".");
        prop_assert!(run(&token).is_err());
        let _ = peek_kid(&token);
    }

    #[test]
    fn arbitrary_header_and_claims_never_panic(
        header in object_with(&["alg", "kid", "crit", "typ"]),
        claims in object_with(&["iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "azp", "groups", "email_verified"]),
        raw_header in json_value(),
        use_raw_header in any::<bool>(),
    ) {
        let header = if use_raw_header { raw_header } else { header };
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &primary().encoding_key(), Algorithm::RS256)
            .expect("sign");
        let _ = run(&format!("{input}.{sig}"));
        let _ = run(&format!("{input}.{}", b64("junk")));
    }

    #[test]
    fn any_single_character_change_to_a_valid_token_is_rejected(index in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.=+/-]") {
        let claims = serde_json::json!({"iss": ISSUER, "sub": "s", "aud": CLIENT, "exp": NOW + 60, "iat": NOW, "nonce": NONCE});
        let input = format!("{}.{}", b64(r#"{"alg":"RS256","kid":"k1"}"#), b64(claims.to_string()));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &primary().encoding_key(), Algorithm::RS256)
            .expect("sign");
        let token = format!("{input}.{sig}");
        prop_assert!(run(&token).is_ok());
        let at = index.index(token.len());
        let mut tampered = token.clone();
        tampered.replace_range(at..at + 1, &replacement);
        prop_assume!(tampered != token);
        prop_assert!(run(&tampered).is_err());
    }
}
