//! Certificate credentials (`private_key_jwt`): a connection's X.509 certificate and RSA private
//! key, checked once at startup, and the client assertion (RFC 7523 §2.2 and §3, RFC 7521 §4.2)
//! signed with them for every token request.
//!
//! Entra's "certificate credentials" page describes the assertion: header `alg` PS256 (RS256
//! still widely used), `typ` JWT and the certificate's thumbprint as `x5t#S256` (or `x5t`, its
//! SHA-1 form); claims `aud` = the token endpoint, `iss` = `sub` = the client ID, a unique
//! `jti`, `nbf`/`iat` = now and `exp` at most 10 minutes later. The oauth2/openidconnect crates
//! have no assertion builder, so entrance signs it itself with jsonwebtoken.
//!
//! The private key never leaves this module: no `Debug`, no log line, no error message shows
//! it, and the signed assertion is handed out as a [`SecretString`].

use std::{fmt, path::Path};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::{
    RsaPrivateKey, RsaPublicKey,
    pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _},
    pkcs8::{DecodePrivateKey as _, DecodePublicKey as _},
    traits::PublicKeyParts as _,
};
use secrecy::SecretString;
use serde::Serialize;
use sha1::Digest as _;
use sha2::Digest as _;
use time::OffsetDateTime;
use x509_cert::{
    Certificate,
    der::{Decode as _, DecodePem as _, Encode as _, EncodePem as _},
};

/// `client_assertion_type` for a JWT client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid. Entra's docs ask for `exp` no more than 10 minutes after
/// `nbf`; 5 minutes covers a slow token request and keeps a leaked assertion short-lived
/// (RFC 7523 §3 item 4: an `exp` "in the near future").
pub(crate) const ASSERTION_LIFETIME_SECS: i64 = 300;

/// Entra accepts RSA keys of 2048 bits or more for certificate credentials.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// The assertion's signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAlg {
    /// RSASSA-PSS with SHA-256 and the `x5t#S256` header: what Entra's current docs show.
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and the SHA-1 `x5t` header: the long-standing form
    /// MSAL sent, for IdPs or tenants that want it.
    Rs256,
}

impl AssertionAlg {
    pub fn parse(value: &str) -> Option<AssertionAlg> {
        match value {
            "PS256" => Some(AssertionAlg::Ps256),
            "RS256" => Some(AssertionAlg::Rs256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlg::Ps256 => "PS256",
            AssertionAlg::Rs256 => "RS256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            AssertionAlg::Ps256 => Algorithm::PS256,
            AssertionAlg::Rs256 => Algorithm::RS256,
        }
    }
}

/// Which file a [`CertificateError`] is about, so configuration errors can name the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialFile {
    Certificate,
    PrivateKey,
}

/// Why a certificate and key cannot be used. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {path}: {source}")]
    Read {
        file: CredentialFile,
        path: String,
        source: std::io::Error,
    },
    #[error("no X.509 certificate could be read ({0})")]
    Certificate(String),
    #[error("the certificate's public key is not an RSA key")]
    NotRsa,
    #[error("no RSA private key could be read ({0})")]
    Key(String),
    #[error("the private key is encrypted (ENCRYPTED PRIVATE KEY)")]
    EncryptedKey,
    #[error("the RSA key has {0} bits; Entra requires at least {MIN_RSA_BITS}")]
    KeyTooSmall(usize),
    #[error("the private key does not belong to the certificate (their public keys differ)")]
    Mismatch,
}

impl CertificateError {
    /// The file (and so the configuration key) the problem is in.
    pub fn file(&self) -> CredentialFile {
        match self {
            CertificateError::Read { file, .. } => *file,
            CertificateError::Certificate(_) | CertificateError::NotRsa => {
                CredentialFile::Certificate
            }
            CertificateError::Key(_)
            | CertificateError::EncryptedKey
            | CertificateError::KeyTooSmall(_)
            | CertificateError::Mismatch => CredentialFile::PrivateKey,
        }
    }

    /// What the admin should do.
    pub fn fix(&self) -> &'static str {
        match self {
            CertificateError::Read { .. } => {
                "point it at a readable file (check the path and the service user's permissions)"
            }
            CertificateError::Certificate(_) => {
                "use the PEM (-----BEGIN CERTIFICATE-----) or DER certificate file, the one uploaded under Certificates & secrets → Certificates"
            }
            CertificateError::NotRsa => {
                "create an RSA certificate, e.g. openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 365 -subj /CN=entrance"
            }
            CertificateError::Key(_) => {
                "use a PEM RSA private key: PKCS#8 (-----BEGIN PRIVATE KEY-----) or PKCS#1 (-----BEGIN RSA PRIVATE KEY-----)"
            }
            CertificateError::EncryptedKey => {
                "store the key unencrypted with tight file permissions: openssl pkey -in encrypted.pem -out key.pem"
            }
            CertificateError::KeyTooSmall(_) => {
                "create a new certificate with a 2048-bit or larger RSA key and upload it"
            }
            CertificateError::Mismatch => {
                "point client_private_key_file at the key the certificate was created with, or client_certificate_file at that key's certificate"
            }
        }
    }
}

/// A loaded, validated certificate credential.
pub struct CertificateCredential {
    pub alg: AssertionAlg,
    /// base64url(SHA-256(certificate DER)), the `x5t#S256` header (RFC 7515 §4.1.8).
    pub x5t_s256: String,
    /// base64url(SHA-1(certificate DER)), the `x5t` header (RFC 7515 §4.1.7).
    pub x5t: String,
    /// The SHA-1 thumbprint in hex, as the Entra portal lists it under Certificates.
    pub thumbprint_hex: String,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The certificate as PEM (public; e.g. for registering it at the demo's mock IdP).
    pub certificate_pem: String,
    /// PKCS#1 DER of the private key, only ever handed to jsonwebtoken.
    key: EncodingKey,
}

impl fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("alg", &self.alg)
            .field("subject", &self.subject)
            .field("x5t#S256", &self.x5t_s256)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

impl CertificateCredential {
    /// Reads both files and validates them with [`CertificateCredential::from_pem`].
    pub fn load(
        certificate_file: &Path,
        private_key_file: &Path,
        alg: AssertionAlg,
    ) -> Result<CertificateCredential, CertificateError> {
        let read = |file: CredentialFile, path: &Path| {
            std::fs::read(path).map_err(|source| CertificateError::Read {
                file,
                path: path.display().to_string(),
                source,
            })
        };
        let cert = read(CredentialFile::Certificate, certificate_file)?;
        let key = read(CredentialFile::PrivateKey, private_key_file)?;
        Self::from_pem(&cert, &key, alg)
    }

    /// `certificate`: PEM (the first CERTIFICATE block) or DER. `private_key`: PEM, PKCS#8 or
    /// PKCS#1, possibly in the same file as the certificate. Checks that the key is RSA, at
    /// least 2048 bits, and the certificate's. Expiry is left to the caller, which knows the
    /// time and whether an expired certificate should stop it.
    pub fn from_pem(
        certificate: &[u8],
        private_key: &[u8],
        alg: AssertionAlg,
    ) -> Result<CertificateCredential, CertificateError> {
        let (der, cert) = parse_certificate(certificate)?;
        let public = certificate_public_key(&cert)?;
        let private = parse_private_key(private_key)?;
        let bits = private.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(CertificateError::KeyTooSmall(bits));
        }
        if private.to_public_key() != public {
            return Err(CertificateError::Mismatch);
        }
        let pkcs1 = private
            .to_pkcs1_der()
            .map_err(|e| CertificateError::Key(e.to_string()))?;
        let (not_before, not_after) = validity(&cert);
        let thumbprints = Thumbprints::of(&der);
        let certificate_pem = cert
            .to_pem(x509_cert::der::pem::LineEnding::LF)
            .map_err(|e| CertificateError::Certificate(e.to_string()))?;
        Ok(CertificateCredential {
            alg,
            x5t_s256: thumbprints.x5t_s256,
            x5t: thumbprints.x5t,
            thumbprint_hex: thumbprints.sha1_hex,
            subject: cert.tbs_certificate.subject.to_string(),
            not_before,
            not_after,
            certificate_pem,
            key: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
        })
    }

    /// The client assertion for one token request to `token_endpoint` (RFC 7523 §3): `aud`
    /// is the token endpoint URL, as Entra requires; `iss` and `sub` are the client ID; a
    /// random `jti` lets the IdP refuse a replay.
    pub fn client_assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: i64,
    ) -> Result<SecretString, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.alg.jwt());
        header.typ = Some("JWT".to_owned());
        // PS256 goes with the SHA-256 thumbprint (Entra's current docs); RS256 with the SHA-1
        // `x5t` that MSAL has always sent beside it.
        match self.alg {
            AssertionAlg::Ps256 => header.x5t_s256 = Some(self.x5t_s256.clone()),
            AssertionAlg::Rs256 => header.x5t = Some(self.x5t.clone()),
        }
        let claims = AssertionClaims {
            aud: token_endpoint,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map(SecretString::from)
    }
}

/// How long a generated certificate is valid: two years, the longest Entra's portal suggests
/// for a client secret; renewing is a new setup link (issue 17).
pub(crate) const GENERATED_VALIDITY_DAYS: u64 = 730;

/// A certificate entrance generated (a setup link's, issue 17): the certificate as PEM, which
/// is public, and its private key as PKCS#8 PEM, which never leaves entrance (sealed at rest,
/// `session::sealed`).
pub(crate) struct Generated {
    pub certificate_pem: String,
    pub private_key_pem: SecretString,
}

/// A new RSA 2048 key and a self-signed X.509 v3 certificate for it (RFC 5280), subject
/// `CN={common_name}`, valid from an hour before `now` (clocks differ) for
/// [`GENERATED_VALIDITY_DAYS`], signed with SHA-256 RSA PKCS#1 v1.5. Entra takes any such
/// certificate under Certificates & secrets → Certificates; only its public key and
/// thumbprint matter. CPU-heavy: async callers run it on a blocking thread.
pub(crate) fn generate(
    common_name: &str,
    now: std::time::SystemTime,
) -> Result<Generated, CertificateError> {
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
    use std::str::FromStr as _;
    use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};

    let bad = |e: &dyn fmt::Display| CertificateError::Certificate(e.to_string());
    let mut rng = rsa::rand_core::OsRng;
    let private = RsaPrivateKey::new(&mut rng, MIN_RSA_BITS)
        .map_err(|e| CertificateError::Key(e.to_string()))?;
    let spki_der = private
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| bad(&e))?;
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes())
        .map_err(|e| bad(&e))?;
    let hour = std::time::Duration::from_secs(3600);
    let validity = x509_cert::time::Validity {
        not_before: x509_cert::time::Time::try_from(now - hour).map_err(|e| bad(&e))?,
        not_after: x509_cert::time::Time::try_from(
            now + std::time::Duration::from_secs(GENERATED_VALIDITY_DAYS * 86_400),
        )
        .map_err(|e| bad(&e))?,
    };
    // RFC 4514: a CN with any of these would need escaping; the caller's names are ids.
    let cn: String = common_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        .collect();
    let subject =
        x509_cert::name::Name::from_str(&format!("CN={}", cn.trim())).map_err(|e| bad(&e))?;
    // RFC 5280 §4.1.2.2: a positive serial of at most 20 octets, unique per issuer (random).
    let mut serial = [0u8; 16];
    rsa::rand_core::RngCore::fill_bytes(&mut rng, &mut serial);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let serial = x509_cert::serial_number::SerialNumber::new(&serial).map_err(|e| bad(&e))?;
    let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(private.clone());
    let cert = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
        .map_err(|e| bad(&e))?
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|e| bad(&e))?;
    let certificate_pem = cert.to_pem(LineEnding::LF).map_err(|e| bad(&e))?;
    let key = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| CertificateError::Key(e.to_string()))?;
    Ok(Generated {
        certificate_pem,
        private_key_pem: SecretString::from(key.as_str()),
    })
}

/// The certificate's DER, for a `.cer` download (PEM or DER in, as [`parse_certificate`]).
pub(crate) fn certificate_der(pem: &str) -> Result<Vec<u8>, CertificateError> {
    parse_certificate(pem.as_bytes()).map(|(der, _)| der)
}

/// A certificate's thumbprints in the forms JWS headers and the Entra portal use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Thumbprints {
    pub x5t_s256: String,
    pub x5t: String,
    pub sha1_hex: String,
}

impl Thumbprints {
    pub(crate) fn of(der: &[u8]) -> Thumbprints {
        let sha256 = sha2::Sha256::digest(der);
        let sha1 = sha1::Sha1::digest(der);
        Thumbprints {
            x5t_s256: URL_SAFE_NO_PAD.encode(sha256),
            x5t: URL_SAFE_NO_PAD.encode(sha1),
            sha1_hex: hex::encode_upper(sha1),
        }
    }
}

/// The first PEM block with this label (`-----BEGIN {label}-----` … `-----END {label}-----`).
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = start + text[start..].find(&end)? + end.len();
    Some(&text[start..stop])
}

/// The certificate's DER and parsed form, from PEM (first CERTIFICATE block) or DER.
pub(crate) fn parse_certificate(bytes: &[u8]) -> Result<(Vec<u8>, Certificate), CertificateError> {
    let bad = |e: &dyn fmt::Display| CertificateError::Certificate(e.to_string());
    let cert = match std::str::from_utf8(bytes).ok() {
        Some(text) if text.contains("-----BEGIN") => {
            let block = pem_block(text, "CERTIFICATE").ok_or_else(|| {
                CertificateError::Certificate("no -----BEGIN CERTIFICATE----- block".into())
            })?;
            Certificate::from_pem(block.as_bytes()).map_err(|e| bad(&e))?
        }
        _ => Certificate::from_der(bytes).map_err(|e| bad(&e))?,
    };
    let der = cert.to_der().map_err(|e| bad(&e))?;
    Ok((der, cert))
}

/// The certificate's RSA public key.
pub(crate) fn certificate_public_key(cert: &Certificate) -> Result<RsaPublicKey, CertificateError> {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| CertificateError::Certificate(e.to_string()))?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|_| CertificateError::NotRsa)
}

/// notBefore and notAfter.
pub(crate) fn validity(cert: &Certificate) -> (OffsetDateTime, OffsetDateTime) {
    let at = |t: x509_cert::time::Time| {
        let secs = i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
        OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let v = &cert.tbs_certificate.validity;
    (at(v.not_before), at(v.not_after))
}

fn parse_private_key(bytes: &[u8]) -> Result<RsaPrivateKey, CertificateError> {
    // The rsa crate's errors name the format problem, never the key's bytes.
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CertificateError::Key("the file is not PEM text".into()))?;
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(CertificateError::EncryptedKey);
    }
    if let Some(block) = pem_block(text, "PRIVATE KEY") {
        return RsaPrivateKey::from_pkcs8_pem(block).map_err(|e| {
            CertificateError::Key(format!("PKCS#8 key that is not a usable RSA key: {e}"))
        });
    }
    if let Some(block) = pem_block(text, "RSA PRIVATE KEY") {
        return RsaPrivateKey::from_pkcs1_pem(block)
            .map_err(|e| CertificateError::Key(format!("PKCS#1 RSA key: {e}")));
    }
    Err(CertificateError::Key(
        "no -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY----- block".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mock_idp::TestCertificate;
    use secrecy::ExposeSecret;

    const ENDPOINT: &str =
        "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/oauth2/v2.0/token";
    const CLIENT: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";

    fn decode_part(part: &str) -> serde_json::Value {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    fn split(jwt: &str) -> (serde_json::Value, serde_json::Value) {
        let mut parts = jwt.split('.');
        let header = decode_part(parts.next().expect("header"));
        let claims = decode_part(parts.next().expect("claims"));
        assert!(parts.next().is_some_and(|s| !s.is_empty()), "signed");
        (header, claims)
    }

    #[test]
    fn ps256_assertion_has_every_member_rfc_7523_and_entra_ask_for() {
        let tc = TestCertificate::generate_valid_for_days("entrance test", 30).expect("cert");
        let cred = CertificateCredential::from_pem(
            tc.cert_pem.as_bytes(),
            tc.key_pem().as_bytes(),
            AssertionAlg::Ps256,
        )
        .expect("valid");
        let (der, _) = parse_certificate(tc.cert_pem.as_bytes()).expect("cert");
        let now = 1_767_225_600;
        let jwt = cred.client_assertion(CLIENT, ENDPOINT, now).expect("signs");
        let (header, claims) = split(jwt.expose_secret());
        let expected_s256 = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der));
        assert_eq!(
            header,
            serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": expected_s256}),
        );
        assert_eq!(claims["aud"], ENDPOINT);
        assert_eq!(claims["iss"], CLIENT);
        assert_eq!(claims["sub"], CLIENT);
        assert_eq!(claims["nbf"], now);
        assert_eq!(claims["iat"], now);
        let exp = claims["exp"].as_i64().expect("exp");
        assert!(exp > now && exp - now <= 600, "exp within 10 minutes");
        let jti = claims["jti"].as_str().expect("jti");
        assert!(uuid::Uuid::parse_str(jti).is_ok(), "jti is a UUID: {jti}");
        assert_eq!(claims.as_object().map(|o| o.len()), Some(7));
        // A fresh jti every time (RFC 7523 §3 item 7).
        let again = cred.client_assertion(CLIENT, ENDPOINT, now).expect("signs");
        assert_ne!(split(again.expose_secret()).1["jti"], claims["jti"]);
        // And the signature verifies with the certificate's key.
        let public =
            certificate_public_key(&parse_certificate(tc.cert_pem.as_bytes()).expect("c").1)
                .expect("rsa");
        let key = jsonwebtoken::DecodingKey::from_rsa_raw_components(
            &public.n().to_bytes_be(),
            &public.e().to_bytes_be(),
        );
        let mut v = jsonwebtoken::Validation::new(Algorithm::PS256);
        v.validate_exp = false;
        v.set_audience(&[ENDPOINT]);
        jsonwebtoken::decode::<serde_json::Value>(jwt.expose_secret(), &key, &v)
            .expect("PS256 signature verifies");
    }

    #[test]
    fn rs256_uses_the_sha1_x5t() {
        let tc = TestCertificate::generate_valid_for_days("entrance test", 30).expect("cert");
        let cred = CertificateCredential::from_pem(
            tc.cert_pem.as_bytes(),
            tc.key_pem().as_bytes(),
            AssertionAlg::Rs256,
        )
        .expect("valid");
        let jwt = cred.client_assertion(CLIENT, ENDPOINT, 0).expect("signs");
        let (header, _) = split(jwt.expose_secret());
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t"], cred.x5t.as_str());
        assert!(header.get("x5t#S256").is_none());
        assert_eq!(cred.x5t.len(), 27, "base64url of 20 bytes");
        assert_eq!(cred.thumbprint_hex.len(), 40);
    }

    #[test]
    fn a_key_of_another_certificate_and_bad_files_are_refused() {
        let a = TestCertificate::generate_valid_for_days("a", 30).expect("cert");
        let b = TestCertificate::generate_valid_for_days("b", 30).expect("cert");
        let err = CertificateCredential::from_pem(
            a.cert_pem.as_bytes(),
            b.key_pem().as_bytes(),
            AssertionAlg::Ps256,
        )
        .expect_err("mismatch");
        assert!(matches!(err, CertificateError::Mismatch));
        assert_eq!(err.file(), CredentialFile::PrivateKey);
        // The key in the certificate's place, and garbage in the key's.
        let err = CertificateCredential::from_pem(
            a.key_pem().as_bytes(),
            a.key_pem().as_bytes(),
            AssertionAlg::Ps256,
        )
        .expect_err("not a cert");
        assert_eq!(err.file(), CredentialFile::Certificate);
        let err = CertificateCredential::from_pem(
            a.cert_pem.as_bytes(),
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            AssertionAlg::Ps256,
        )
        .expect_err("encrypted");
        assert!(matches!(err, CertificateError::EncryptedKey));
        // PKCS#1 and a combined key+certificate file work.
        let combined = format!("{}{}", a.key_pem_pkcs1(), a.cert_pem);
        CertificateCredential::from_pem(
            combined.as_bytes(),
            combined.as_bytes(),
            AssertionAlg::Ps256,
        )
        .expect("PKCS#1 in a combined file");
    }

    #[test]
    fn a_generated_certificate_is_rsa_2048_self_signed_and_loads_with_its_key() {
        use secrecy::ExposeSecret as _;
        let now = std::time::SystemTime::now();
        let g = generate("entrance fabrikam", now).expect("generated");
        assert!(g.certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            g.private_key_pem
                .expose_secret()
                .contains("BEGIN PRIVATE KEY")
        );
        let cred = CertificateCredential::from_pem(
            g.certificate_pem.as_bytes(),
            g.private_key_pem.expose_secret().as_bytes(),
            AssertionAlg::Ps256,
        )
        .expect("the key is the certificate's");
        assert_eq!(cred.subject, "CN=entrance fabrikam");
        let days = (cred.not_after - cred.not_before).whole_days();
        assert_eq!(days, GENERATED_VALIDITY_DAYS as i64, "from an hour ago");
        let (_, cert) = parse_certificate(g.certificate_pem.as_bytes()).expect("parsed");
        assert_eq!(cert.tbs_certificate.subject, cert.tbs_certificate.issuer);
        assert_eq!(certificate_public_key(&cert).expect("rsa").n().bits(), 2048);
        let der = certificate_der(&g.certificate_pem).expect("der");
        assert_eq!(Thumbprints::of(&der).x5t_s256, cred.x5t_s256);
        // Each call makes a new key.
        let other = generate("entrance fabrikam", now).expect("generated");
        assert_ne!(other.certificate_pem, g.certificate_pem);
    }

    #[test]
    fn debug_shows_no_key() {
        let tc = TestCertificate::generate_valid_for_days("dbg", 30).expect("cert");
        let cred = CertificateCredential::from_pem(
            tc.cert_pem.as_bytes(),
            tc.key_pem().as_bytes(),
            AssertionAlg::Ps256,
        )
        .expect("valid");
        let text = format!("{cred:?}");
        assert!(text.contains("x5t#S256") && !text.contains("key"), "{text}");
    }
}
