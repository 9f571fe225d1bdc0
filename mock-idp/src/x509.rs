//! The few certificate and Entra helpers the mock needs, deliberately the mock's own copies
//! (of entrance's `certificate` and `entra::is_guid`): the test tool never shares code with
//! the relying party it tests, so a bug in entrance's parsing cannot hide itself here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey as _;
use sha1::Digest as _;
use sha2::Digest as _;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem as _, Encode as _};

/// `client_assertion_type` for a JWT client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Entra accepts RSA keys of 2048 bits or more for certificate credentials.
pub const MIN_RSA_BITS: usize = 2048;

/// Why an uploaded certificate cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("no X.509 certificate could be read ({0})")]
    Certificate(String),
    #[error("the certificate's public key is not an RSA key")]
    NotRsa,
}

/// A certificate's thumbprints as JWS headers carry them (RFC 7515 §4.1.7–§4.1.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbprints {
    /// `x5t#S256`: base64url SHA-256 of the DER.
    pub x5t_s256: String,
    /// `x5t`: base64url SHA-1 of the DER.
    pub x5t: String,
}

impl Thumbprints {
    pub fn of(der: &[u8]) -> Thumbprints {
        Thumbprints {
            x5t_s256: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der)),
            x5t: URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(der)),
        }
    }
}

/// The DER and parsed form of the first `CERTIFICATE` block in `pem`.
pub fn parse_certificate(pem: &str) -> Result<(Vec<u8>, Certificate), CertificateError> {
    let bad = |e: &dyn std::fmt::Display| CertificateError::Certificate(e.to_string());
    let (begin, end) = ("-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----");
    let block = pem
        .find(begin)
        .and_then(|start| Some(&pem[start..start + pem[start..].find(end)? + end.len()]))
        .ok_or_else(|| {
            CertificateError::Certificate("no -----BEGIN CERTIFICATE----- block".into())
        })?;
    let cert = Certificate::from_pem(block.as_bytes()).map_err(|e| bad(&e))?;
    let der = cert.to_der().map_err(|e| bad(&e))?;
    Ok((der, cert))
}

/// The certificate's RSA public key.
pub fn certificate_public_key(cert: &Certificate) -> Result<RsaPublicKey, CertificateError> {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| CertificateError::Certificate(e.to_string()))?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|_| CertificateError::NotRsa)
}

/// notBefore and notAfter.
pub fn validity(cert: &Certificate) -> (OffsetDateTime, OffsetDateTime) {
    let at = |t: x509_cert::time::Time| {
        let secs = i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
        OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let v = &cert.tbs_certificate.validity;
    (at(v.not_before), at(v.not_after))
}

/// Whether `s` is a GUID in Entra's form (8-4-4-4-12 hex digits), as tenant IDs are.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
