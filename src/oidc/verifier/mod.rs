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
    /// own `tid` substituted (docs/reference/ENTRA.md §5.3a–b).
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
    /// Exact for a single issuer; for the multi-tenant template, the template with a GUID
    /// tenant that `allowed` lets in (a token naming any other could only be refused).
    pub fn admits(&self, iss: &str, allowed: &TenantAllowList) -> bool {
        match self {
            IssuerPolicy::Exact(issuer) => iss == issuer,
            IssuerPolicy::EntraTemplate { template } => template_tenant(template, iss)
                .is_some_and(|tid| entra::is_guid(tid) && allowed.allows(tid)),
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
/// `Debug` leaves out the `nonce`, the login's one-time binding to this browser (OpenID
/// Connect Core §15.5.2).
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq)]
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

impl std::fmt::Debug for IdTokenClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Exhaustive on purpose: a new claim must be placed here, redacted or not.
        let IdTokenClaims {
            iss,
            sub,
            aud,
            exp,
            iat,
            nbf,
            nonce,
            azp,
            tid,
            oid,
            name,
            email,
            email_verified,
            xms_edov,
            preferred_username,
            login_hint,
            sid,
            groups,
            roles,
            hasgroups,
            groups_claim_source,
        } = self;
        f.debug_struct("IdTokenClaims")
            .field("iss", iss)
            .field("sub", sub)
            .field("aud", aud)
            .field("exp", exp)
            .field("iat", iat)
            .field("nbf", nbf)
            .field("nonce", &nonce.as_ref().map(|_| "<redacted>"))
            .field("azp", azp)
            .field("tid", tid)
            .field("oid", oid)
            .field("name", name)
            .field("email", email)
            .field("email_verified", email_verified)
            .field("xms_edov", xms_edov)
            .field("preferred_username", preferred_username)
            .field("login_hint", login_hint)
            .field("sid", sid)
            .field("groups", groups)
            .field("roles", roles)
            .field("hasgroups", hasgroups)
            .field("groups_claim_source", groups_claim_source)
            .finish()
    }
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
    #[error(
        "this is a Microsoft Graph access token, meant for Graph and not for this API; request a token for the API's own scope"
    )]
    GraphToken,
    #[error("audience {0:?} is not one of the API's audiences")]
    AudienceNotAccepted(String),
    #[error("ver {ver:?} does not fit the issuer's token version {expected}")]
    VersionMismatch { ver: String, expected: &'static str },
    #[error("{0}")]
    AppOnlyWithScopes(&'static str),
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
            Rejection::GraphToken => "graph_token",
            Rejection::AudienceNotAccepted(_) => "audience_not_accepted",
            Rejection::VersionMismatch { .. } => "version_mismatch",
            Rejection::AppOnlyWithScopes(_) => "app_token_with_scopes",
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
    /// Microsoft Graph's access tokens carry a non-standard `nonce` header member
    /// (docs/reference/ENTRA-2.md §2); only its presence matters (`access`).
    #[serde(default, deserialize_with = "present")]
    nonce: Option<serde_json::Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

struct Header {
    alg: Option<serde_json::Value>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
    /// A `nonce` member is present (a Microsoft Graph token).
    nonce: bool,
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
        nonce: raw.nonce.is_some(),
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
    peek(token)?.tid
}

/// The `iss` claim of a token whose signature is not checked yet. The callback holds RFC
/// 9207's `iss` parameter to it before any further IdP call (keys, userinfo); verification
/// then proves this very `iss` (step 2), so the two checks together compare the parameter
/// with the validated issuer exactly. `None` when the payload or the claim is unusable.
pub(crate) fn peek_iss(token: &str) -> Option<String> {
    peek(token)?.iss
}

/// The claims [`peek_tid`] and [`peek_iss`] read, from a payload that is only decoded.
#[derive(Deserialize)]
struct Peeked {
    tid: Option<String>,
    iss: Option<String>,
}

fn peek(token: &str) -> Option<Peeked> {
    let parts = split(token).ok()?;
    let payload = decode_part(parts.payload, "payload").ok()?;
    serde_json::from_slice::<Peeked>(&payload).ok()
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
    let (key, payload) = verify_jws(token, keys, exp.allowed_algs, Kind::IdToken)?;
    let raw: RawClaims = serde_json::from_slice(&payload)
        .map_err(|e| Rejection::Malformed(format!("claims: {}", json_error_kind(&e))))?;
    check_claims(raw, key, exp)
}

/// Which kind of token [`verify_jws`] checks: an access token with a `nonce` header member is
/// Microsoft Graph's, refused with its own reason before its (unverifiable) signature.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    IdToken,
    AccessToken,
}

/// The JWS half of validation, shared by ID and access tokens: header, algorithm, `crit`,
/// key choice and signature (OIDC Core §3.1.3.7 steps 6–8; RFC 9068 §4 asks the same of
/// access tokens). Returns the verifying key and the decoded, now authenticated, payload.
fn verify_jws<'k>(
    token: &str,
    keys: &'k KeySet,
    allowed_algs: &[Algorithm],
    kind: Kind,
) -> Result<(&'k VerificationKey, Vec<u8>), Rejection> {
    let parts = split(token)?;
    let header = parse_header(parts.header)?;
    // docs/reference/ENTRA-2.md §2: Graph signs a hash of its header nonce, so its tokens
    // never verify with the published keys; say what they are instead of "bad signature".
    if kind == Kind::AccessToken && header.nonce {
        return Err(Rejection::GraphToken);
    }
    let alg = check_alg(header.alg.as_ref(), allowed_algs)?;
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
    Ok((key, decode_part(parts.payload, "payload")?))
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
            // docs/reference/ENTRA.md §5.3a: tid must be a GUID, so the substitution below cannot smuggle in
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

/// docs/reference/ENTRA.md §5.3d: the app's own allow-list of tenants.
fn check_tenant(tid: Option<&str>, allowed: &TenantAllowList) -> Result<(), Rejection> {
    if let TenantAllowList::Only(_) = allowed {
        let tid = tid.ok_or(Rejection::MissingClaim("tid"))?;
        if !allowed.allows(tid) {
            return Err(Rejection::TenantNotAllowed(tid.to_owned()));
        }
    }
    Ok(())
}

/// docs/reference/ENTRA.md §5.3c: Entra's keys carry an `issuer` member saying which tenants they sign for.
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

pub(crate) mod access;

/// Property tests: whatever arrives, the verifier answers with an error rather than a panic, and an acceptance
/// always satisfies every rule. Cases default to proptest's 256; set `PROPTEST_CASES=10000` for a deeper run.
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
