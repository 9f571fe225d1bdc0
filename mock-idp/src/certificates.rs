//! Certificates in the mock IdP: throw-away test certificates made on the fly (so no private
//! key is ever committed), and the client certificates registered for `private_key_jwt`, with
//! the checks Entra makes on a client assertion (RFC 7523 §3, Entra's certificate-credentials
//! docs).

use std::str::FromStr as _;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rsa::rand_core::{OsRng, RngCore as _};
use rsa::traits::PublicKeyParts as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::der::EncodePem as _;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

use super::keys::KeyError;
use super::x509::{self, CLIENT_ASSERTION_TYPE, CertificateError, MIN_RSA_BITS, Thumbprints};

/// A self-signed RSA 2048 certificate and its private key, for tests and the demo. The key
/// is kept as a [`SecretString`] and left out of `Debug`, like any key.
#[derive(Clone)]
pub struct TestCertificate {
    /// PEM `CERTIFICATE`: the part uploaded to Entra.
    pub cert_pem: String,
    key_pkcs8: SecretString,
    key_pkcs1: SecretString,
    private: rsa::RsaPrivateKey,
}

impl std::fmt::Debug for TestCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCertificate").finish_non_exhaustive()
    }
}

impl TestCertificate {
    /// A new key and a certificate for it valid from `not_before` to `not_after`. CPU-heavy
    /// (RSA key generation); async callers use a blocking thread.
    pub fn generate(
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<TestCertificate, KeyError> {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, MIN_RSA_BITS)?;
        Self::for_key(private, common_name, not_before, not_after)
    }

    /// Valid from an hour ago for `days` days.
    pub fn generate_valid_for_days(
        common_name: &str,
        days: u64,
    ) -> Result<TestCertificate, KeyError> {
        let now = SystemTime::now();
        Self::generate(
            common_name,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(days * 86_400),
        )
    }

    /// Another certificate for the same key (a renewed, or an expired, certificate).
    pub fn reissue(
        &self,
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<TestCertificate, KeyError> {
        Self::for_key(self.private.clone(), common_name, not_before, not_after)
    }

    fn for_key(
        private: rsa::RsaPrivateKey,
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<TestCertificate, KeyError> {
        let enc = |e: &dyn std::fmt::Display| KeyError::Encode(e.to_string());
        let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(private.clone());
        let spki_der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| enc(&e))?;
        let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes()).map_err(|e| enc(&e))?;
        let validity = Validity {
            not_before: Time::try_from(not_before).map_err(|e| enc(&e))?,
            not_after: Time::try_from(not_after).map_err(|e| enc(&e))?,
        };
        // CN values with commas or quotes would need RFC 4514 escaping; tests pass plain names.
        let subject = Name::from_str(&format!("CN={common_name}")).map_err(|e| enc(&e))?;
        let serial = SerialNumber::from(OsRng.next_u32() >> 1);
        let builder =
            CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
                .map_err(|e| enc(&e))?;
        let cert = builder
            .build::<rsa::pkcs1v15::Signature>()
            .map_err(|e| enc(&e))?;
        let cert_pem = cert.to_pem(LineEnding::LF).map_err(|e| enc(&e))?;
        let key_pkcs8 = private.to_pkcs8_pem(LineEnding::LF).map_err(|e| enc(&e))?;
        let key_pkcs1 = private.to_pkcs1_pem(LineEnding::LF).map_err(|e| enc(&e))?;
        Ok(TestCertificate {
            cert_pem,
            key_pkcs8: SecretString::from(key_pkcs8.as_str()),
            key_pkcs1: SecretString::from(key_pkcs1.as_str()),
            private,
        })
    }

    /// PEM PKCS#8 (`PRIVATE KEY`), what `openssl req -newkey` writes.
    pub fn key_pem(&self) -> &str {
        self.key_pkcs8.expose_secret()
    }

    /// PEM PKCS#1 (`RSA PRIVATE KEY`), the older OpenSSL form.
    pub fn key_pem_pkcs1(&self) -> &str {
        self.key_pkcs1.expose_secret()
    }
}

/// A client certificate uploaded to the mock's app registration (public part only).
#[derive(Debug, Clone)]
pub(super) struct RegisteredCertificate {
    thumbprints: Thumbprints,
    n: Vec<u8>,
    e: Vec<u8>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
}

impl RegisteredCertificate {
    pub(super) fn from_pem(pem: &str) -> Result<RegisteredCertificate, CertificateError> {
        let (der, cert) = x509::parse_certificate(pem)?;
        let public = x509::certificate_public_key(&cert)?;
        let (not_before, not_after) = x509::validity(&cert);
        Ok(RegisteredCertificate {
            thumbprints: Thumbprints::of(&der),
            n: public.n().to_bytes_be(),
            e: public.e().to_bytes_be(),
            not_before,
            not_after,
        })
    }
}

/// Why an assertion was refused: an OAuth error, an AADSTS code and Entra-like text.
#[derive(Debug)]
pub(super) struct AssertionFailure {
    pub error: &'static str,
    pub code: u32,
    pub text: String,
}

fn fail(error: &'static str, code: u32, text: impl Into<String>) -> AssertionFailure {
    AssertionFailure {
        error,
        code,
        text: text.into(),
    }
}

/// A verified assertion's replay key and expiry.
pub(super) struct Accepted {
    pub jti: String,
    pub exp: i64,
}

/// Tolerated clock difference for `nbf`, as Entra allows some skew.
const NBF_SKEW_SECS: i64 = 300;

/// Checks a client assertion the way Entra does: the assertion type, a registered certificate
/// found by `x5t#S256` (or `x5t`), that certificate's validity period, the signature (PS256 or
/// RS256), `aud` = the token endpoint, `iss` = `sub` = the client ID, `exp` in the future and
/// a `jti`. Replay is checked by the caller, which holds the seen `jti`s.
///
/// Codes: AADSTS700027 for a bad signature, an unknown or an expired certificate
/// (`tests/fixtures/entra/aadsts-errors.json`) and AADSTS50012 for other assertion failures
/// (<https://learn.microsoft.com/entra/identity-platform/reference-error-codes>); the mock
/// uses 50012 for claim problems. The texts
/// follow Entra's "[Reason - …, Thumbprint of key used by client: …]" form.
// One piece on purpose: Entra's checks of a client assertion, in the order Entra reports them
// (RFC 7523 §3 for the claims), so a test can read which failure wins.
pub(super) fn verify_assertion(
    registered: &[RegisteredCertificate],
    assertion_type: Option<&str>,
    assertion: &str,
    token_endpoint: &str,
    client_id: &str,
    now: time::OffsetDateTime,
    certificate_now: time::OffsetDateTime,
) -> Result<Accepted, AssertionFailure> {
    if assertion_type != Some(CLIENT_ASSERTION_TYPE) {
        return Err(fail(
            "invalid_request",
            900144,
            format!(
                "The request body must contain the following parameter: 'client_assertion_type' with the value '{CLIENT_ASSERTION_TYPE}'."
            ),
        ));
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| {
        fail(
            "invalid_client",
            700027,
            format!("Client assertion is not a valid JWT ({e})."),
        )
    })?;
    let alg = match header.alg {
        Algorithm::PS256 | Algorithm::RS256 => header.alg,
        other => {
            return Err(fail(
                "invalid_client",
                700027,
                format!(
                    "Client assertion failed signature validation. [Reason - The algorithm {other:?} is not supported; use PS256 or RS256.]"
                ),
            ));
        }
    };
    let used = header
        .x5t_s256
        .clone()
        .or_else(|| header.x5t.clone())
        .unwrap_or_default();
    let found = registered
        .iter()
        .find(|c| match (&header.x5t_s256, &header.x5t) {
            (Some(s256), _) => c.thumbprints.x5t_s256 == *s256,
            (None, Some(x5t)) => c.thumbprints.x5t == *x5t,
            (None, None) => false,
        });
    let Some(cert) = found else {
        return Err(fail(
            "invalid_client",
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{used}'. Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
            ),
        ));
    };
    let found_key = format!(
        "Found key 'Start={}, End={}'",
        cert.not_before.date(),
        cert.not_after.date()
    );
    if certificate_now > cert.not_after {
        return Err(fail(
            "invalid_client",
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The key used is expired: the certificate expired on {}. Upload a new certificate for app Id '{client_id}'., Thumbprint of key used by client: '{used}', {found_key}]",
                cert.not_after
            ),
        ));
    }
    if certificate_now < cert.not_before {
        return Err(fail(
            "invalid_client",
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The key used is not yet valid., Thumbprint of key used by client: '{used}', {found_key}]"
            ),
        ));
    }
    let key = DecodingKey::from_rsa_raw_components(&cert.n, &cert.e);
    let mut validation = Validation::new(alg);
    // Only the signature here; every claim is checked below with Entra's answers.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
        assertion,
        &key,
        &validation,
    )
    .map_err(|_| {
        fail(
            "invalid_client",
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{used}', {found_key}]"
            ),
        )
    })?
    .claims;

    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == token_endpoint,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(token_endpoint)),
        _ => false,
    };
    if !aud_ok {
        return Err(fail(
            "invalid_client",
            50012,
            format!(
                "Client assertion audience claim does not match Realm issuer. Expected '{token_endpoint}'."
            ),
        ));
    }
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if str_claim("iss") != Some(client_id) || str_claim("sub") != Some(client_id) {
        return Err(fail(
            "invalid_client",
            50012,
            format!(
                "Client assertion application identifier doesn't match 'client_id' parameter: iss and sub must be '{client_id}'."
            ),
        ));
    }
    let now_ts = now.unix_timestamp();
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return Err(fail(
            "invalid_client",
            50012,
            "Client assertion has no 'exp' claim.",
        ));
    };
    // Entra does not restrict how far `exp` lies ahead; it must only not have passed.
    if exp <= now_ts {
        return Err(fail(
            "invalid_client",
            50012,
            format!("Client assertion is not within its valid time range: it expired at {exp}."),
        ));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && nbf > now_ts + NBF_SKEW_SECS
    {
        return Err(fail(
            "invalid_client",
            50012,
            format!(
                "Client assertion is not within its valid time range: nbf {nbf} is in the future."
            ),
        ));
    }
    let Some(jti) = str_claim("jti").filter(|j| !j.is_empty()) else {
        return Err(fail(
            "invalid_client",
            50012,
            "Client assertion has no 'jti' claim.",
        ));
    };
    Ok(Accepted {
        jti: jti.to_owned(),
        exp,
    })
}
