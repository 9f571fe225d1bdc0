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
    if let Some(usage) = obj.get("use") {
        if usage.as_str() != Some("sig") {
            return Err(SkipReason::NotForSignatures);
        }
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
