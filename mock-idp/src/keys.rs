//! Signing keys of the mock IdP: RSA key generation, the JWKS document and JWT assembly/signing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::EncodePublicKey as _;
use rsa::rand_core::{OsRng, RngCore as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Map, Value, json};
use sha2::Digest as _;

use super::Signing;

/// Entra signs with RSA 2048 keys only.
const RSA_BITS: usize = 2048;

/// Why a key could not be made or a token not signed. Both are local failures (no request data
/// involved), so the handlers map them to a 500 `server_error`.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key generation failed: {0}")]
    Generate(#[from] rsa::Error),
    #[error("encoding an RSA key failed: {0}")]
    Encode(String),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("serialising a JWT part failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// One RSA signing key, kept in the forms the mock needs (signing key for jsonwebtoken and
/// the public JWK members).
pub(super) struct KeyPair {
    pub kid: String,
    encoding: EncodingKey,
    n: String,
    e: String,
}

impl std::fmt::Debug for KeyPair {
    // Never print private key material, even in a test tool.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// Generates a fresh RSA 2048 key. CPU-heavy (tens to hundreds of ms even optimised):
    /// callers inside async code run it on a blocking thread.
    pub(super) fn generate() -> Result<KeyPair, KeyError> {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)?;
        let public_der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        // Entra's kid is the base64url SHA-1 thumbprint of the key's X.509 certificate (27
        // characters). The mock has no certificate and no SHA-1 crate, so it uses the first
        // 20 bytes of SHA-256 over the SubjectPublicKeyInfo DER: same length and alphabet,
        // stable per key, and unique enough for a test IdP.
        let digest = sha2::Sha256::digest(public_der.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(&digest[..20]);
        let pkcs1 = private
            .to_pkcs1_der()
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(KeyPair {
            kid,
            encoding: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
            n: URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        })
    }

    /// The public key, for checking what this key signed (the federated issuers' tokens).
    pub(super) fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, KeyError> {
        Ok(jsonwebtoken::DecodingKey::from_rsa_components(
            &self.n, &self.e,
        )?)
    }

    /// The key as Entra publishes it: no `alg`, `x5t` = `kid`, and Entra's non-standard
    /// `issuer` member. `x5c` is left out because the mock has no certificate.
    pub(super) fn jwk(&self, key_issuer: &str) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "issuer": key_issuer,
        })
    }
}

/// A JWT header whose members keep their insertion order, so the default header serialises
/// exactly as Entra's `{"typ":"JWT","alg":"RS256","kid":…}` and tests can inject any member.
#[derive(Debug, Clone, Default)]
pub(super) struct OrderedHeader(Vec<(String, Value)>);

impl OrderedHeader {
    pub(super) fn set(&mut self, name: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    pub(super) fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }

    fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut out = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k)?);
            out.push(':');
            out.push_str(&serde_json::to_string(v)?);
        }
        out.push('}');
        Ok(out)
    }
}

/// What a token is signed with, resolved from [`Signing`] by the caller (which owns the key
/// store).
pub(super) struct SignWith<'a> {
    pub signing: &'a Signing,
    /// The key to sign with for Normal, CorruptSignature and Rs384 — the current signing key —
    /// and for TenantKey and AppKey, the tenant's or app's own key.
    pub current: &'a KeyPair,
    /// A key that is not in the JWKS (used for UnpublishedKey).
    pub unpublished: Option<&'a KeyPair>,
    /// The kid to put in the header: the current key's kid, or for UnpublishedKey a
    /// published kid (that is the point of that test).
    pub header_kid: &'a str,
}

/// Builds and signs a JWT. The header is built here, not by jsonwebtoken, so tests can
/// inject arbitrary members (`crit`, a bogus `alg`, …); `header_set` wins over the defaults
/// but does not change which algorithm is actually used to sign.
pub(super) fn build_jwt(
    claims: &Map<String, Value>,
    header_set: &Map<String, Value>,
    header_remove: &[String],
    with: &SignWith<'_>,
) -> Result<String, KeyError> {
    let alg_name = match with.signing {
        Signing::Normal
        | Signing::UnpublishedKey
        | Signing::CorruptSignature
        | Signing::TenantKey(_)
        | Signing::AppKey => "RS256",
        Signing::AlgNone => "none",
        Signing::Hs256(_) => "HS256",
        Signing::Rs384 => "RS384",
    };
    let mut header = OrderedHeader::default();
    header.set("typ", json!("JWT"));
    header.set("alg", json!(alg_name));
    header.set("kid", json!(with.header_kid));
    for (k, v) in header_set {
        header.set(k, v.clone());
    }
    for k in header_remove {
        header.remove(k);
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_json()?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    );
    let signature = match with.signing {
        // For a tenant's or the app's own key the caller passes that key as `current`.
        Signing::Normal | Signing::TenantKey(_) | Signing::AppKey => jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &with.current.encoding,
            Algorithm::RS256,
        )?,
        Signing::AlgNone => String::new(),
        Signing::Hs256(secret) => jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )?,
        Signing::UnpublishedKey => {
            let key = with.unpublished.unwrap_or(with.current);
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key.encoding, Algorithm::RS256)?
        }
        Signing::CorruptSignature => {
            let good = jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &with.current.encoding,
                Algorithm::RS256,
            )?;
            corrupt(&good)
        }
        Signing::Rs384 => jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &with.current.encoding,
            Algorithm::RS384,
        )?,
    };
    Ok(format!("{signing_input}.{signature}"))
}

/// Flips bits in the middle of a base64url signature while keeping it well-formed base64url
/// of the right length, so only the cryptographic check can reject it.
fn corrupt(sig_b64: &str) -> String {
    match URL_SAFE_NO_PAD.decode(sig_b64) {
        Ok(mut bytes) if !bytes.is_empty() => {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xFF;
            URL_SAFE_NO_PAD.encode(bytes)
        }
        // jsonwebtoken always returns base64url; fall back to an obviously wrong signature.
        _ => URL_SAFE_NO_PAD.encode(b"corrupt"),
    }
}

/// `n` random bytes from the OS, base64url without padding (codes, opaque token values).
/// `OsRng` is rsa's re-export of rand_core's; its `getrandom` feature is enabled by the
/// dependency graph (jsonwebtoken's rust_crypto backend pulls `rand` with `std`).
pub(super) fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch, for the `iat`/`nbf`/`exp` of the tokens this IdP signs.
pub(super) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
