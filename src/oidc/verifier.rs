//! Owns ID token validation (OpenID Connect Core 1.0 §3.1.3.7): header, algorithm, key choice, signature, then claims.
//!
//! Everything here is a pure function of the token, the key set and the caller's expectations (including the
//! clock), so the rules can be tested exhaustively. The token is attacker-controlled: no step panics, and no claim
//! is looked at before the signature over it has been verified.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::config::TenantAllowList;
use crate::entra::{self, TENANT_PLACEHOLDER};
use crate::oidc::jwks::{KeyFamily, KeySet, VerificationKey};

/// Tokens longer than this are refused before any decoding: the cap bounds the work an attacker can make us do
/// (base64, JSON, RSA) per request. Most ID tokens are a few KiB, but an IdP without Entra's 200-group overage
/// (Keycloak, Okta) puts every group in the token: 500 group GUIDs alone are ~26 KiB encoded.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// How a token's `iss` is judged, decided once at discovery from the metadata and its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerPolicy {
    /// The metadata's issuer, compared byte for byte (OIDC Core §3.1.3.7 step 2).
    Exact(String),
    /// Entra's multi-tenant authorities (`common`, `organizations`) publish the literal issuer
    /// `https://<host>/{tenantid}/v2.0`; each token's `iss` must be that template with the token's
    /// own `tid` substituted (ENTRA.md §5.3a–b).
    EntraTemplate { template: String },
}

impl IssuerPolicy {
    /// The issuer string as published in the metadata (the template itself for multi-tenant).
    pub fn published(&self) -> &str {
        match self {
            IssuerPolicy::Exact(issuer) => issuer,
            IssuerPolicy::EntraTemplate { template } => template,
        }
    }

    /// Whether `iss` could be an issuer of this policy, before any token is seen: used for the
    /// authorization response's `iss` parameter (RFC 9207), which arrives before the token.
    pub fn admits(&self, iss: &str) -> bool {
        match self {
            IssuerPolicy::Exact(issuer) => iss == issuer,
            IssuerPolicy::EntraTemplate { template } => {
                template_tenant(template, iss).is_some_and(entra::is_guid)
            }
        }
    }
}

/// The part of `iss` standing where the template has `{tenantid}`, if the rest matches exactly.
fn template_tenant<'i>(template: &str, iss: &'i str) -> Option<&'i str> {
    let (prefix, suffix) = template.split_once(TENANT_PLACEHOLDER)?;
    let middle = iss.strip_prefix(prefix)?.strip_suffix(suffix)?;
    // One path segment only: `…/a/b/v2.0` must not read as tenant "a/b".
    (!middle.is_empty() && !middle.contains('/')).then_some(middle)
}

/// What the caller expects of the token, fixed before the token is seen.
pub struct Expectations<'a> {
    /// How `iss` must look: the metadata issuer exactly, or Entra's multi-tenant template.
    pub issuer: &'a IssuerPolicy,
    /// The tenants allowed to sign in; anything but `Any` makes `tid` required.
    pub allowed_tenants: &'a TenantAllowList,
    pub client_id: &'a str,
    /// Additional audiences the deployment explicitly trusts (never inferred).
    pub trusted_audiences: &'a [String],
    /// Algorithms the caller accepts; build it with [`allowed_algs`]. HMAC entries are ignored regardless.
    pub allowed_algs: &'a [Algorithm],
    /// Tolerated clock difference with the provider (default 5 minutes).
    pub clock_skew: std::time::Duration,
    /// Current time, unix seconds (injected so tests control it).
    pub now: i64,
    /// The nonce stored with the pending login.
    pub nonce: &'a str,
}

/// RS256 plus the asymmetric algorithms named in `id_token_signing_alg_values_supported`; never `none`, never HS*.
pub fn allowed_algs(advertised: &[String]) -> Vec<Algorithm> {
    // OIDC Core §15.1 makes RS256 mandatory to implement, so it is always accepted even if the metadata omits it.
    let mut algs = vec![Algorithm::RS256];
    for name in advertised {
        // `none` does not parse into an Algorithm; HMAC would mean verifying with the client secret, which we never do.
        let Ok(alg) = name.parse::<Algorithm>() else {
            continue;
        };
        if KeyFamily::of_alg(alg).is_some() && !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    algs
}

/// The claims of a verified ID token that the application uses. Unknown claims are dropped.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: Option<i64>,
    pub nonce: Option<String>,
    pub azp: Option<String>,
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub xms_edov: Option<bool>,
    pub preferred_username: Option<String>,
    pub login_hint: Option<String>,
    pub sid: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    /// Entra's overage marker of the implicit flow: the user is in more groups than fit in a
    /// token, so `groups` is left out.
    pub hasgroups: Option<bool>,
    /// Entra's overage marker of the code flow: `_claim_names` has a `groups` member pointing
    /// at Microsoft Graph, and `groups` is left out. Only its presence is kept.
    pub groups_claim_source: bool,
}

impl IdTokenClaims {
    /// The user's groups could not be put in the token (more than Entra's limit, 200 in a
    /// JWT): an empty `groups` then means "unknown", never "none".
    pub fn groups_overage(&self) -> bool {
        self.hasgroups == Some(true) || self.groups_claim_source
    }
}

/// Why a token was refused. Serialises (and `code()` returns) a stable snake_case reason, e.g. "issuer_mismatch".
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("unsupported signing algorithm: {0}")]
    UnsupportedAlg(String),
    #[error("token header has a crit member we do not understand: {0}")]
    UnknownCrit(String),
    #[error("no key with kid {0} in the key set")]
    UnknownKid(String),
    #[error("no single key of the token's algorithm family to verify it")]
    NoMatchingKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("issuer mismatch: expected {expected}, got {actual}")]
    IssuerMismatch { expected: String, actual: String },
    #[error("audience does not include this client")]
    AudienceMismatch,
    #[error("audience {0} is not trusted")]
    UntrustedAudience(String),
    #[error("authorized party {0} is not this client")]
    AzpMismatch(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("required claim {0} is missing")]
    MissingClaim(&'static str),
    #[error("nonce does not match the login request")]
    NonceMismatch,
    #[error("tid {0:?} is not a tenant GUID")]
    InvalidTenantId(String),
    #[error("iss names tenant {iss_tenant}, but tid says {tid}")]
    TenantMismatch { iss_tenant: String, tid: String },
    #[error("tenant {0} is not in this connection's allowed_tenants")]
    TenantNotAllowed(String),
    #[error("the verifying key's issuer {key_issuer} does not match iss {iss}")]
    KeyIssuerMismatch { key_issuer: String, iss: String },
}

impl Rejection {
    /// A stable machine-readable reason, safe to log and to count in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::UnsupportedAlg(_) => "unsupported_alg",
            Rejection::UnknownCrit(_) => "unknown_crit",
            Rejection::UnknownKid(_) => "unknown_kid",
            Rejection::NoMatchingKey => "no_matching_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::IssuerMismatch { .. } => "issuer_mismatch",
            Rejection::AudienceMismatch => "audience_mismatch",
            Rejection::UntrustedAudience(_) => "untrusted_audience",
            Rejection::AzpMismatch(_) => "azp_mismatch",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::IssuedInFuture => "issued_in_future",
            Rejection::MissingClaim(_) => "missing_claim",
            Rejection::NonceMismatch => "nonce_mismatch",
            Rejection::InvalidTenantId(_) => "invalid_tid",
            Rejection::TenantMismatch { .. } => "tenant_mismatch",
            Rejection::TenantNotAllowed(_) => "tenant_not_allowed",
            Rejection::KeyIssuerMismatch { .. } => "key_issuer_mismatch",
        }
    }
}

impl serde::Serialize for Rejection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Only the code: details may echo attacker-chosen values and are for logs, not for API responses.
        serializer.serialize_str(self.code())
    }
}

fn malformed(why: &str) -> Rejection {
    Rejection::Malformed(why.to_owned())
}

/// The header members we act on. Deserialising into a struct (not a map) rejects duplicate members, which
/// different JSON parsers would resolve differently.
/// `Some` whenever the member is present, even as `null`: a `"crit": null` is still a crit member.
#[derive(Deserialize)]
struct RawHeader {
    #[serde(default, deserialize_with = "present")]
    alg: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    kid: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde_json::Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

struct Header {
    alg: Option<serde_json::Value>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// The three compact-serialisation parts, still encoded.
struct Parts<'t> {
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
}

fn split(token: &str) -> Result<Parts<'_>, Rejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("token too long"));
    }
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(header), Some(payload), Some(signature), None) => Ok(Parts {
            header,
            payload,
            signature,
        }),
        // Five parts would be a JWE (3.1.3.7 step 1); we do not request encrypted ID tokens, so it is malformed.
        _ => Err(malformed("token is not three dot-separated parts")),
    }
}

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Rejection::Malformed(format!("{what} is not base64url")))
}

fn parse_header(encoded: &str) -> Result<Header, Rejection> {
    let bytes = decode_part(encoded, "header")?;
    let raw: RawHeader =
        serde_json::from_slice(&bytes).map_err(|_| malformed("header is not a JSON object"))?;
    let kid = match raw.kid {
        None => None,
        Some(serde_json::Value::String(kid)) => Some(kid),
        Some(_) => return Err(malformed("kid is not a string")),
    };
    Ok(Header {
        alg: raw.alg,
        kid,
        crit: raw.crit,
    })
}

/// Header parse only (used by the caller to decide on a JWKS refetch): returns the kid, if any, or a Rejection for a malformed token.
pub fn peek_kid(token: &str) -> Result<Option<String>, Rejection> {
    let parts = split(token)?;
    Ok(parse_header(parts.header)?.kid)
}

/// The `tid` claim of a token whose signature is not checked yet, to pick the tenant's key
/// set on a multi-tenant connection. Only ever a key-selection hint: the token came straight
/// from the token endpoint, and the signature, `iss`, `tid` and key-issuer checks that follow
/// decide. `None` when the payload or the claim is unusable (verification then says why).
pub fn peek_tid(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct TidOnly {
        tid: Option<String>,
    }
    let parts = split(token).ok()?;
    let payload = decode_part(parts.payload, "payload").ok()?;
    serde_json::from_slice::<TidOnly>(&payload).ok()?.tid
}

/// 3.1.3.7 step 7: the alg must be one the caller allows; `none` and HMAC are never acceptable.
fn check_alg(
    alg: Option<&serde_json::Value>,
    allowed: &[Algorithm],
) -> Result<Algorithm, Rejection> {
    let name = match alg {
        Some(serde_json::Value::String(name)) => name,
        Some(_) => return Err(malformed("alg is not a string")),
        None => return Err(malformed("header has no alg")),
    };
    // "none" (any case) is not an Algorithm, so it lands in the error arm: an unsigned token is never accepted.
    let alg: Algorithm = name
        .parse()
        .map_err(|_| Rejection::UnsupportedAlg(name.clone()))?;
    // 3.1.3.7 step 8 would verify HMAC with the client secret; we refuse it outright, even if the allowlist names it,
    // because a secret-keyed token can be minted by anyone who holds the secret.
    if alg.family() == AlgorithmFamily::Hmac || !allowed.contains(&alg) {
        return Err(Rejection::UnsupportedAlg(name.clone()));
    }
    Ok(alg)
}

/// RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we implement none, so any `crit` is fatal.
fn check_crit(crit: Option<&serde_json::Value>) -> Result<(), Rejection> {
    match crit {
        None => Ok(()),
        Some(serde_json::Value::Array(names)) if !names.is_empty() => {
            let names: Option<Vec<&str>> = names.iter().map(serde_json::Value::as_str).collect();
            match names {
                Some(names) => Err(Rejection::UnknownCrit(names.join(","))),
                None => Err(Rejection::UnknownCrit("malformed crit".to_owned())),
            }
        }
        Some(_) => Err(Rejection::UnknownCrit("malformed crit".to_owned())),
    }
}

/// A key may serve this alg if it is of the alg's family and, when the JWK pins an alg, it is this one.
fn key_fits(key: &VerificationKey, alg: Algorithm, family: KeyFamily) -> bool {
    key.family == family
        && key
            .alg
            .as_deref()
            .is_none_or(|pinned| pinned.parse::<Algorithm>().ok() == Some(alg))
}

/// 3.1.3.7 step 6: the key must come from the issuer's key set — by kid, or the only candidate when there is no kid.
fn select_key<'k>(
    keys: &'k KeySet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'k VerificationKey, Rejection> {
    // HMAC was refused earlier; treat it as "no key" rather than panic should that ever change.
    let family = KeyFamily::of_alg(alg).ok_or(Rejection::NoMatchingKey)?;
    match kid {
        Some(kid) => {
            let mut named = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .peekable();
            if named.peek().is_none() {
                return Err(Rejection::UnknownKid(kid.to_owned()));
            }
            // The named key must fit the alg: an RSA key must not be fed to an EC verifier (or vice versa).
            named
                .find(|k| key_fits(k, alg, family))
                .map(|k| k.as_ref())
                .ok_or(Rejection::NoMatchingKey)
        }
        None => {
            // Without a kid, guessing among several keys would let any of them vouch for the token: require one.
            let mut fitting = keys.iter().filter(|k| key_fits(k, alg, family));
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => Ok(only.as_ref()),
                _ => Err(Rejection::NoMatchingKey),
            }
        }
    }
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The payload as sent: every claim optional so a missing one is reported as such rather than as bad JSON.
/// A struct (not a map) also rejects duplicate claim names.
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    nonce: Option<String>,
    azp: Option<String>,
    tid: Option<String>,
    oid: Option<String>,
    name: Option<String>,
    email: Option<String>,
    email_verified: Option<bool>,
    xms_edov: Option<bool>,
    preferred_username: Option<String>,
    login_hint: Option<String>,
    sid: Option<String>,
    groups: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    hasgroups: Option<bool>,
    #[serde(rename = "_claim_names")]
    /// OIDC Core §5.6.2 distributed claims: claim name → source id. Only whether it names
    /// `groups` matters; the values are skipped, but it must be an object (a map, not a
    /// struct: serde would let a struct be read from an array).
    claim_names: Option<std::collections::HashMap<String, serde::de::IgnoredAny>>,
}

pub fn verify_id_token(
    token: &str,
    keys: &KeySet,
    exp: &Expectations<'_>,
) -> Result<IdTokenClaims, Rejection> {
    let parts = split(token)?;
    let header = parse_header(parts.header)?;
    let alg = check_alg(header.alg.as_ref(), exp.allowed_algs)?;
    check_crit(header.crit.as_ref())?;
    let key = select_key(keys, header.kid.as_deref(), alg)?;

    // 3.1.3.7 step 6: verify the JWS signature over the exact encoded header and payload, before reading any claim.
    decode_part(parts.signature, "signature")?;
    let signing_input_len = parts.header.len() + 1 + parts.payload.len();
    let signing_input = token
        .as_bytes()
        .get(..signing_input_len)
        .ok_or_else(|| malformed("token is not three dot-separated parts"))?;
    match jsonwebtoken::crypto::verify(parts.signature, signing_input, &key.key, alg) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Err(Rejection::BadSignature),
    }

    let payload = decode_part(parts.payload, "payload")?;
    let raw: RawClaims = serde_json::from_slice(&payload)
        .map_err(|e| Rejection::Malformed(format!("claims: {}", json_error_kind(&e))))?;
    check_claims(raw, key, exp)
}

/// A short description of a JSON error that does not echo the (attacker-chosen) input.
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "io error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "wrong claim type",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

fn check_claims(
    raw: RawClaims,
    key: &VerificationKey,
    exp: &Expectations<'_>,
) -> Result<IdTokenClaims, Rejection> {
    // OIDC Core §2 makes iss, sub, aud, exp and iat REQUIRED in every ID token.
    let iss = raw.iss.ok_or(Rejection::MissingClaim("iss"))?;
    let sub = raw.sub.ok_or(Rejection::MissingClaim("sub"))?;
    let aud = match raw.aud.ok_or(Rejection::MissingClaim("aud"))? {
        Audience::One(one) => vec![one],
        Audience::Many(many) => many,
    };
    let expires = raw.exp.ok_or(Rejection::MissingClaim("exp"))?;
    let iat = raw.iat.ok_or(Rejection::MissingClaim("iat"))?;

    check_issuer(&iss, raw.tid.as_deref(), exp.issuer)?;
    check_tenant(raw.tid.as_deref(), exp.allowed_tenants)?;
    check_key_issuer(key, &iss, raw.tid.as_deref())?;

    // 3.1.3.7 step 3: aud must contain our client_id ...
    if !aud.iter().any(|a| a == exp.client_id) {
        return Err(Rejection::AudienceMismatch);
    }
    // ... and must not contain audiences we do not trust (a token minted for several parties is not ours alone).
    let trusted: HashSet<&str> = exp.trusted_audiences.iter().map(String::as_str).collect();
    if let Some(stranger) = aud
        .iter()
        .find(|a| a.as_str() != exp.client_id && !trusted.contains(a.as_str()))
    {
        return Err(Rejection::UntrustedAudience(stranger.clone()));
    }

    // 3.1.3.7 steps 4–5: when azp is present it must be our client_id, whatever the number of audiences.
    if let Some(azp) = raw.azp.as_deref()
        && azp != exp.client_id
    {
        return Err(Rejection::AzpMismatch(azp.to_owned()));
    }

    // Durations beyond i64 seconds are absurd; saturate so the arithmetic below can neither wrap nor panic.
    let skew = i64::try_from(exp.clock_skew.as_secs()).unwrap_or(i64::MAX);
    // 3.1.3.7 step 9: the current time must be before exp (allowing for skew); at exactly exp + skew we still accept.
    if exp.now > expires.saturating_add(skew) {
        return Err(Rejection::Expired);
    }
    // 3.1.3.7 step 9 (RFC 7519 §4.1.5): a token must not be used before nbf, allowing for skew.
    if let Some(nbf) = raw.nbf
        && nbf > exp.now.saturating_add(skew)
    {
        return Err(Rejection::NotYetValid);
    }
    // 3.1.3.7 step 10: a token issued in the future (beyond skew) points at a broken or forged clock.
    if iat > exp.now.saturating_add(skew) {
        return Err(Rejection::IssuedInFuture);
    }

    // 3.1.3.7 step 11: we always send a nonce, so it must come back unchanged; compare in constant time. An empty
    // expected nonce is a caller bug and must not match a token that carries an empty one.
    let nonce_ok = match raw.nonce.as_deref() {
        Some(nonce) => {
            !exp.nonce.is_empty() && bool::from(nonce.as_bytes().ct_eq(exp.nonce.as_bytes()))
        }
        None => false,
    };
    if !nonce_ok {
        return Err(Rejection::NonceMismatch);
    }

    Ok(IdTokenClaims {
        iss,
        sub,
        aud,
        exp: expires,
        iat,
        nbf: raw.nbf,
        nonce: raw.nonce,
        azp: raw.azp,
        tid: raw.tid,
        oid: raw.oid,
        name: raw.name,
        email: raw.email,
        email_verified: raw.email_verified,
        xms_edov: raw.xms_edov,
        preferred_username: raw.preferred_username,
        login_hint: raw.login_hint,
        sid: raw.sid,
        groups: raw.groups.unwrap_or_default(),
        roles: raw.roles.unwrap_or_default(),
        hasgroups: raw.hasgroups,
        groups_claim_source: raw.claim_names.is_some_and(|n| n.contains_key("groups")),
    })
}

/// 3.1.3.7 step 2, by policy.
fn check_issuer(iss: &str, tid: Option<&str>, policy: &IssuerPolicy) -> Result<(), Rejection> {
    match policy {
        // No normalisation, no trailing-slash leniency.
        IssuerPolicy::Exact(issuer) => {
            if iss != issuer {
                return Err(Rejection::IssuerMismatch {
                    expected: issuer.clone(),
                    actual: iss.to_owned(),
                });
            }
        }
        IssuerPolicy::EntraTemplate { template } => {
            // ENTRA.md §5.3a: tid must be a GUID, so the substitution below cannot smuggle in
            // a path ("x/v2.0/..") or an empty segment.
            let tid = tid.ok_or(Rejection::MissingClaim("tid"))?;
            if !entra::is_guid(tid) {
                return Err(Rejection::InvalidTenantId(tid.to_owned()));
            }
            // §5.3b: the template with tid substituted must equal iss exactly.
            let expected = template.replace(TENANT_PLACEHOLDER, tid);
            if iss != expected {
                // A well-formed iss of another tenant is the iss/tid disagreement; anything
                // else (another host or path, the bare template) is an ordinary issuer mismatch.
                return Err(
                    match template_tenant(template, iss).filter(|t| entra::is_guid(t)) {
                        Some(iss_tenant) => Rejection::TenantMismatch {
                            iss_tenant: iss_tenant.to_owned(),
                            tid: tid.to_owned(),
                        },
                        None => Rejection::IssuerMismatch {
                            expected,
                            actual: iss.to_owned(),
                        },
                    },
                );
            }
        }
    }
    Ok(())
}

/// ENTRA.md §5.3d: the app's own allow-list of tenants.
fn check_tenant(tid: Option<&str>, allowed: &TenantAllowList) -> Result<(), Rejection> {
    if let TenantAllowList::Only(_) = allowed {
        let tid = tid.ok_or(Rejection::MissingClaim("tid"))?;
        if !allowed.allows(tid) {
            return Err(Rejection::TenantNotAllowed(tid.to_owned()));
        }
    }
    Ok(())
}

/// ENTRA.md §5.3c: Entra's keys carry an `issuer` member saying which tenants they sign for.
/// A templated one is substituted with the token's `tid`, a literal one is compared as is; either
/// way it must equal `iss`, so a key published for one tenant (or for personal accounts) cannot
/// vouch for a token of another. Keys without the member (every other IdP) are not judged.
fn check_key_issuer(key: &VerificationKey, iss: &str, tid: Option<&str>) -> Result<(), Rejection> {
    let Some(key_issuer) = key.issuer.as_deref() else {
        return Ok(());
    };
    let expected = if key_issuer.contains(TENANT_PLACEHOLDER) {
        match tid {
            Some(tid) => key_issuer.replace(TENANT_PLACEHOLDER, tid),
            // Only reachable with an exact-issuer policy and no allow-list (a multi-tenant policy
            // or an allow-list requires tid): iss is already pinned to the one tenant's issuer,
            // and a templated key signs for any tenant, so there is nothing left to compare.
            None => return Ok(()),
        }
    } else {
        key_issuer.to_owned()
    };
    if expected != iss {
        return Err(Rejection::KeyIssuerMismatch {
            key_issuer: key_issuer.to_owned(),
            iss: iss.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::oidc::jwks::test_keys::{TestKey, primary, secondary};

    const ISSUER: &str =
        "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0";
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
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding_key(), alg).expect("sign");
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
        let got = check(&with(claims(), "aud", json!([CLIENT, TRUSTED])))
            .expect("trusted extra audience");
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

    // ---- multi-tenant issuers, tenants and key issuers (ENTRA.md §5.3) ---------------------------------------

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
        assert!(template().admits(&issuer_of(HOME)));
        assert!(!template().admits(TEMPLATE));
        assert!(!template().admits(&issuer_of("common")));
        assert!(!template().admits(&format!("https://login.microsoftonline.com/{HOME}/x/v2.0")));
        assert!(IssuerPolicy::Exact(ISSUER.into()).admits(ISSUER));
        assert!(!IssuerPolicy::Exact(ISSUER.into()).admits(&issuer_of(OTHER)));
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
}

/// Property tests: whatever arrives, the verifier answers with an error rather than a panic, and an acceptance
/// always satisfies every rule. Cases default to proptest's 256; set `PROPTEST_CASES=10000` for a deeper run.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;
    use crate::oidc::jwks::test_keys::primary;

    const ISSUER: &str =
        "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0";
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
}
