//! Owns parsing of a provider's JWKS document into the set of public keys that may verify ID token signatures.
//!
//! The JWKS body is fetched over the network and must be treated as untrusted input: nothing in here panics on it,
//! and one malformed or unsupported key is skipped rather than invalidating the whole set (providers publish keys
//! for other purposes, and a single odd key must not lock every user out).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use rsa::BigUint;
use serde_json::{Map, Value};

/// RSA keys below this size are refused: 2048 bits is the floor in current guidance and what Entra publishes.
const MIN_RSA_BITS: usize = 2048;

/// One public key usable to verify a JWS signature.
pub struct VerificationKey {
    /// The JWK `kid`, used to select the key named in a token header.
    pub kid: Option<String>,
    /// The key material in the form the crypto backend wants.
    pub key: DecodingKey,
    /// Which algorithm family the key belongs to; a token's `alg` must be of the same family.
    pub family: KeyFamily,
    /// The JWK `alg`, if the provider pinned the key to one algorithm (Entra does not).
    pub alg: Option<String>,
    /// Entra's non-standard `issuer` member (may be templated with `{tenantid}`); kept for multi-tenant checks.
    pub issuer: Option<String>,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Asymmetric key families. There is deliberately no HMAC member: a shared secret never verifies an ID token here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Ed,
}

impl KeyFamily {
    /// The family an algorithm needs, or `None` for algorithms no JWKS key may serve (HMAC).
    pub fn of_alg(alg: Algorithm) -> Option<KeyFamily> {
        match alg.family() {
            AlgorithmFamily::Rsa => Some(KeyFamily::Rsa),
            AlgorithmFamily::Ec => Some(KeyFamily::Ec),
            AlgorithmFamily::Ed => Some(KeyFamily::Ed),
            AlgorithmFamily::Hmac => None,
        }
    }
}

/// The usable keys of one JWKS document. Cloning is cheap (keys are shared).
#[derive(Clone, Default, Debug)]
pub struct KeySet {
    keys: Vec<Arc<VerificationKey>>,
}

/// Why a JWKS body could not be turned into a key set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("JWKS body is not valid JSON")]
    NotJson,
    #[error("JWKS body is not a key set (expected an object with a \"keys\" array)")]
    NotAKeySet,
    #[error("JWKS contains no usable signature key")]
    NoUsableKeys,
}

/// Why one JWK was skipped; only logged, never returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum SkipReason {
    #[error("key is not a JSON object")]
    NotAnObject,
    #[error("key has no kty")]
    NoKty,
    #[error("key use is not sig")]
    NotForSignatures,
    #[error("key_ops does not include verify")]
    NoVerifyOp,
    #[error("symmetric (oct) keys are never trusted")]
    Symmetric,
    #[error("unsupported key type or curve")]
    Unsupported,
    #[error("member {0} is missing or not a string")]
    BadMember(&'static str),
    #[error("member {0} is not base64url")]
    BadBase64(&'static str),
    #[error("invalid key material")]
    BadKey,
    #[error("alg does not fit the key type")]
    AlgMismatch,
}

impl KeySet {
    /// Parses a JWKS document. Keys that are not signature keys (`use` other than `sig`), symmetric (`oct`) keys,
    /// and keys that fail to parse are skipped (logged at debug), never fatal — one odd key must not take the set down.
    /// An empty result (no usable key) or a body that is not a JWKS is an error.
    pub fn from_jwks_json(body: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| JwksError::NotJson)?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NotAKeySet)?;
        let mut keys = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            match parse_jwk(entry) {
                Ok(key) => keys.push(Arc::new(key)),
                Err(reason) => {
                    tracing::debug!(index, kid = ?entry.get("kid"), %reason, "skipping JWKS key");
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(KeySet { keys })
    }

    /// Builds a set from keys obtained elsewhere (configuration, tests).
    pub fn from_keys(keys: impl IntoIterator<Item = VerificationKey>) -> KeySet {
        KeySet {
            keys: keys.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }

    /// All keys, in document order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VerificationKey>> {
        self.keys.iter()
    }
}

fn parse_jwk(entry: &Value) -> Result<VerificationKey, SkipReason> {
    let obj = entry.as_object().ok_or(SkipReason::NotAnObject)?;
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or(SkipReason::NoKty)?;
    // RFC 7517 §4.2: a key published for encryption ("enc") must not verify signatures.
    if let Some(usage) = obj.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err(SkipReason::NotForSignatures);
    }
    // RFC 7517 §4.3: when key_ops is given, it is the complete list of permitted operations.
    if let Some(ops) = obj.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return Err(SkipReason::NoVerifyOp);
        }
    }
    let kid = optional_string(obj, "kid")?;
    let alg = optional_string(obj, "alg")?;
    let issuer = optional_string(obj, "issuer")?;
    let (family, key) = match kty {
        "RSA" => (KeyFamily::Rsa, rsa_key(obj)?),
        "EC" => (KeyFamily::Ec, ec_key(obj)?),
        "OKP" => (KeyFamily::Ed, okp_key(obj)?),
        // A symmetric key in a public JWKS is either a mistake or an attack (HMAC with a published secret).
        "oct" => return Err(SkipReason::Symmetric),
        _ => return Err(SkipReason::Unsupported),
    };
    // RFC 7517 §4.4: a pinned alg restricts the key; one that cannot belong to this key type makes the key suspect.
    if let Some(alg) = alg.as_deref() {
        let pinned: Algorithm = alg.parse().map_err(|_| SkipReason::AlgMismatch)?;
        if KeyFamily::of_alg(pinned) != Some(family) {
            return Err(SkipReason::AlgMismatch);
        }
    }
    Ok(VerificationKey {
        kid,
        key,
        family,
        alg,
        issuer,
    })
}

fn optional_string(
    obj: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, SkipReason> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SkipReason::BadMember(name)),
    }
}

fn b64_member(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, SkipReason> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or(SkipReason::BadMember(name))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SkipReason::BadBase64(name))
}

fn rsa_key(obj: &Map<String, Value>) -> Result<DecodingKey, SkipReason> {
    let n = b64_member(obj, "n")?;
    let e = b64_member(obj, "e")?;
    // Validate now (size, exponent) so a broken key is skipped at load time instead of failing every login later.
    let public = rsa::RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
        .map_err(|_| SkipReason::BadKey)?;
    if rsa::traits::PublicKeyParts::n(&public).bits() < MIN_RSA_BITS {
        return Err(SkipReason::BadKey);
    }
    Ok(DecodingKey::from_rsa_raw_components(&n, &e))
}

fn ec_key(obj: &Map<String, Value>) -> Result<DecodingKey, SkipReason> {
    let coordinate_len = match obj.get("crv").and_then(Value::as_str) {
        Some("P-256") => 32,
        Some("P-384") => 48,
        _ => return Err(SkipReason::Unsupported),
    };
    let x = b64_member(obj, "x")?;
    let y = b64_member(obj, "y")?;
    if x.len() != coordinate_len || y.len() != coordinate_len {
        return Err(SkipReason::BadKey);
    }
    let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
    point.push(0x04); // SEC1 uncompressed point, the form the verifier expects
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(DecodingKey::from_ec_der(&point))
}

fn okp_key(obj: &Map<String, Value>) -> Result<DecodingKey, SkipReason> {
    if obj.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err(SkipReason::Unsupported);
    }
    let x = b64_member(obj, "x")?;
    if x.len() != 32 {
        return Err(SkipReason::BadKey);
    }
    Ok(DecodingKey::from_ed_der(&x))
}

/// RSA test keys shared by this module's and the verifier's tests (generation is slow, so it happens once).
#[cfg(test)]
pub(crate) mod test_keys {
    use std::sync::OnceLock;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::traits::PublicKeyParts as _;

    pub(crate) struct TestKey {
        pub der: Vec<u8>,
        pub n: String,
        pub e: String,
    }

    impl TestKey {
        fn generate(bits: usize) -> TestKey {
            let private =
                rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).expect("keygen");
            TestKey {
                der: private.to_pkcs1_der().expect("der").as_bytes().to_vec(),
                n: URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
                e: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
            }
        }

        pub(crate) fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
            jsonwebtoken::EncodingKey::from_rsa_der(&self.der)
        }

        /// The public half as an Entra-shaped JWK.
        pub(crate) fn jwk(&self, kid: &str) -> serde_json::Value {
            serde_json::json!({
                "kty": "RSA", "use": "sig", "kid": kid, "x5t": kid, "n": self.n, "e": self.e,
                "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"
            })
        }
    }

    pub(crate) fn primary() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(|| TestKey::generate(2048))
    }

    pub(crate) fn secondary() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(|| TestKey::generate(2048))
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::primary;
    use super::*;
    use serde_json::json;

    fn parse(doc: serde_json::Value) -> Result<KeySet, JwksError> {
        KeySet::from_jwks_json(doc.to_string().as_bytes())
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An odd modulus of exactly `bits` bits (valid for RsaPublicKey::new, useless for crypto).
    fn modulus_of_bits(bits: usize) -> String {
        let mut bytes = vec![0u8; bits.div_ceil(8)];
        bytes[0] = 1 << ((bits - 1) % 8);
        if let Some(last) = bytes.last_mut() {
            *last |= 1;
        }
        b64(&bytes)
    }

    fn ec_jwk(crv: &str, len: usize) -> serde_json::Value {
        json!({"kty": "EC", "use": "sig", "kid": "ec1", "crv": crv, "x": b64(&vec![7u8; len]), "y": b64(&vec![9u8; len])})
    }

    const ISSUERS: [&str; 3] = [
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
    ];

    #[test]
    fn parses_the_entra_fixture() {
        let body = include_bytes!("../../tests/fixtures/entra/jwks.example.json");
        let set = KeySet::from_jwks_json(body).expect("fixture parses");
        assert_eq!(set.len(), 3);
        assert!(!set.is_empty());
        assert_eq!(
            set.kids(),
            vec![
                "fBZWa5qFSqq-56JubuH8y3Z0o1s",
                "EbNdc9F9wQxQbnoI9cJU8jXFQk0",
                "yBvZcZ6vBR52fyBizuTn1P1q_8s"
            ]
        );
        assert!(set.contains_kid("EbNdc9F9wQxQbnoI9cJU8jXFQk0"));
        assert!(!set.contains_kid("EbNdc9F9wQxQbnoI9cJU8jXFQk"));
        for key in set.iter() {
            assert_eq!(key.family, KeyFamily::Rsa);
            assert_eq!(key.alg, None, "Entra keys carry no alg");
            assert_eq!(key.key.family(), AlgorithmFamily::Rsa);
        }
        // The non-standard issuer member is kept verbatim (templated, or the MSA tenant for consumer-only keys).
        let issuers: Vec<Option<&str>> = set.iter().map(|k| k.issuer.as_deref()).collect();
        assert_eq!(issuers, ISSUERS.map(Some));
    }

    #[test]
    fn odd_keys_are_skipped_and_the_rsa_keys_survive() {
        let set = parse(json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            "not an object",
            {"kty": "RSA", "kid": "garbage", "n": "!!!", "e": "AQAB"},
            {"kty": "RSA", "kid": "no-e", "n": primary().n},
            {"kty": "RSA", "use": "enc", "kid": "enc", "n": primary().n, "e": primary().e},
            {"kty": "RSA", "kid": 7, "n": primary().n, "e": primary().e},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": primary().n, "e": primary().e},
            {"kty": "RSA", "kid": "es-pinned", "alg": "ES256", "n": primary().n, "e": primary().e},
            {"kty": "XYZ", "kid": "alien"},
            {"kid": "no-kty"},
            primary().jwk("a"),
            {"kty": "RSA", "kid": "b", "alg": "RS256", "n": primary().n, "e": primary().e},
        ]}))
        .expect("usable keys remain");
        assert_eq!(set.kids(), vec!["a", "b"]);
        let b = set.iter().nth(1).expect("second key");
        assert_eq!(b.alg.as_deref(), Some("RS256"));
    }

    #[test]
    fn use_is_optional_but_must_be_sig_when_present() {
        let set = parse(json!({"keys": [
            {"kty": "RSA", "kid": "no-use", "n": primary().n, "e": primary().e},
            {"kty": "RSA", "use": "sig", "kid": "sig", "n": primary().n, "e": primary().e},
            {"kty": "RSA", "use": "enc", "kid": "enc", "n": primary().n, "e": primary().e},
            {"kty": "RSA", "use": 1, "kid": "num", "n": primary().n, "e": primary().e},
        ]}))
        .expect("parses");
        assert_eq!(set.kids(), vec!["no-use", "sig"]);
    }

    #[test]
    fn key_ops_must_include_verify_when_present() {
        let set = parse(json!({"keys": [
            {"kty": "RSA", "kid": "verify", "key_ops": ["sign", "verify"], "n": primary().n, "e": primary().e},
            {"kty": "RSA", "kid": "sign", "key_ops": ["sign"], "n": primary().n, "e": primary().e},
            {"kty": "RSA", "kid": "str", "key_ops": "verify", "n": primary().n, "e": primary().e},
        ]}))
        .expect("parses");
        assert_eq!(set.kids(), vec!["verify"]);
    }

    #[test]
    fn rsa_keys_below_2048_bits_are_skipped() {
        let set = parse(json!({"keys": [
            {"kty": "RSA", "kid": "2047", "n": modulus_of_bits(2047), "e": "AQAB"},
            {"kty": "RSA", "kid": "2048", "n": modulus_of_bits(2048), "e": "AQAB"},
            {"kty": "RSA", "kid": "even", "n": b64(&[0x80; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "e1", "n": modulus_of_bits(2048), "e": "AQ"},
        ]}))
        .expect("parses");
        assert_eq!(set.kids(), vec!["2048"]);
    }

    #[test]
    fn ec_and_okp_keys_are_parsed_with_their_family() {
        let set = parse(json!({"keys": [
            ec_jwk("P-256", 32),
            ec_jwk("P-384", 48),
            ec_jwk("P-256", 31),
            ec_jwk("P-521", 66),
            {"kty": "EC", "kid": "ec-no-y", "crv": "P-256", "x": b64(&[1; 32])},
            {"kty": "EC", "kid": "ec-short-y", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[1; 31])},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(&[3; 32])},
            {"kty": "OKP", "kid": "ed-short", "crv": "Ed25519", "x": b64(&[3; 31])},
            {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64(&[3; 32])},
        ]}))
        .expect("parses");
        assert_eq!(set.kids(), vec!["ec1", "ec1", "ed"]);
        let families: Vec<KeyFamily> = set.iter().map(|k| k.family).collect();
        assert_eq!(families, vec![KeyFamily::Ec, KeyFamily::Ec, KeyFamily::Ed]);
        let first = set.iter().next().expect("ec key");
        let mut point = vec![4u8];
        point.extend_from_slice(&[7; 32]);
        point.extend_from_slice(&[9; 32]);
        assert_eq!(first.key.try_get_as_bytes().expect("der"), point.as_slice());
        let ed = set.iter().nth(2).expect("ed key");
        assert_eq!(ed.key.try_get_as_bytes().expect("der"), &[3u8; 32]);
    }

    #[test]
    fn bodies_that_are_not_key_sets_are_errors() {
        assert_eq!(KeySet::from_jwks_json(b"").unwrap_err(), JwksError::NotJson);
        assert_eq!(
            KeySet::from_jwks_json(b"<html>").unwrap_err(),
            JwksError::NotJson
        );
        assert_eq!(parse(json!([])).unwrap_err(), JwksError::NotAKeySet);
        assert_eq!(
            parse(json!({"keys": "x"})).unwrap_err(),
            JwksError::NotAKeySet
        );
        assert_eq!(
            parse(json!({"key": []})).unwrap_err(),
            JwksError::NotAKeySet
        );
        assert_eq!(
            parse(json!({"keys": []})).unwrap_err(),
            JwksError::NoUsableKeys
        );
        assert_eq!(
            parse(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).unwrap_err(),
            JwksError::NoUsableKeys
        );
    }

    #[test]
    fn accessors_and_from_keys() {
        let empty = KeySet::default();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert!(empty.kids().is_empty());
        let set = KeySet::from_keys([
            VerificationKey {
                kid: None,
                key: DecodingKey::from_rsa_components(&primary().n, &primary().e).expect("key"),
                family: KeyFamily::Rsa,
                alg: None,
                issuer: None,
            },
            VerificationKey {
                kid: Some("x".into()),
                key: DecodingKey::from_ed_der(&[0; 32]),
                family: KeyFamily::Ed,
                alg: None,
                issuer: None,
            },
        ]);
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty());
        assert_eq!(set.kids(), vec!["x"]);
        assert!(set.contains_kid("x"));
        assert!(!set.contains_kid(""));
        let debug = format!("{:?}", set.iter().next().expect("key"));
        assert!(debug.contains("Rsa") && !debug.contains(&primary().n));
    }

    #[test]
    fn skipped_keys_are_logged_with_a_specific_reason() {
        let rsa = |extra: serde_json::Value| {
            let mut jwk = json!({"kty": "RSA", "n": primary().n, "e": primary().e});
            if let (Some(obj), Some(more)) = (jwk.as_object_mut(), extra.as_object()) {
                obj.extend(more.clone());
            }
            parse_jwk(&jwk).err()
        };
        assert_eq!(
            parse_jwk(&json!({"kty": "oct", "k": "c2VjcmV0"})).err(),
            Some(SkipReason::Symmetric)
        );
        assert_eq!(
            parse_jwk(&json!({"kty": "XYZ"})).err(),
            Some(SkipReason::Unsupported)
        );
        assert_eq!(parse_jwk(&json!([])).err(), Some(SkipReason::NotAnObject));
        assert_eq!(parse_jwk(&json!({"n": "x"})).err(), Some(SkipReason::NoKty));
        assert_eq!(
            rsa(json!({"use": "enc"})),
            Some(SkipReason::NotForSignatures)
        );
        assert_eq!(
            rsa(json!({"key_ops": ["sign"]})),
            Some(SkipReason::NoVerifyOp)
        );
        assert_eq!(rsa(json!({"kid": 1})), Some(SkipReason::BadMember("kid")));
        assert_eq!(rsa(json!({"n": "!"})), Some(SkipReason::BadBase64("n")));
        assert_eq!(rsa(json!({"e": 3})), Some(SkipReason::BadMember("e")));
        assert_eq!(rsa(json!({"e": "AQ"})), Some(SkipReason::BadKey));
        assert_eq!(rsa(json!({"alg": "ES256"})), Some(SkipReason::AlgMismatch));
        assert_eq!(rsa(json!({"use": "sig", "alg": "PS384"})), None);
    }

    #[test]
    fn family_of_each_algorithm() {
        assert_eq!(KeyFamily::of_alg(Algorithm::RS256), Some(KeyFamily::Rsa));
        assert_eq!(KeyFamily::of_alg(Algorithm::PS512), Some(KeyFamily::Rsa));
        assert_eq!(KeyFamily::of_alg(Algorithm::ES384), Some(KeyFamily::Ec));
        assert_eq!(KeyFamily::of_alg(Algorithm::EdDSA), Some(KeyFamily::Ed));
        assert_eq!(KeyFamily::of_alg(Algorithm::HS256), None);
    }
}
