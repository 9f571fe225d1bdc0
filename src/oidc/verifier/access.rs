//! Owns access-token validation for the vendor's own API: Entra's v1.0 and v2.0 access tokens
//! (docs/reference/ENTRA-2.md §1) presented as RFC 6750 bearer tokens, with the ID token's
//! rigour — the same header, algorithm, key and signature steps ([`super::verify_jws`]), the
//! same issuer, tenant and key-issuer rules — plus the access token's own: `aud` one of the
//! API's audiences, Graph's tokens refused, the token version's issuer, the client app, and
//! whether the caller is a user (delegated, `scp`) or an app (app-only, `roles`).
//!
//! Pure functions of the token, the keys and the expectations, like the ID-token verifier.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::config::{ApiSettings, TenantAllowList};
use crate::entra::{self, TENANT_PLACEHOLDER, V1_ISSUER_PREFIX};
use crate::oidc::jwks::KeySet;

use super::{
    Audience, IssuerPolicy, Kind, Rejection, check_issuer, check_key_issuer, check_tenant,
    decode_part, json_error_kind, parse_header, split, verify_jws,
};

/// What the API expects of a token, fixed by its connection before the token is seen.
pub(crate) struct AccessExpectations<'a> {
    /// The connection's v2.0 issuer rule (its metadata's issuer, exact or templated).
    pub issuer: &'a IssuerPolicy,
    pub allowed_tenants: &'a TenantAllowList,
    /// Whether v1.0 tokens (`https://sts.windows.net/{tid}/`) are accepted: only on Entra's
    /// public cloud (and the loopback mock), the one cloud whose v1 issuer is known here.
    pub accept_v1: bool,
    /// `api.audiences`.
    pub audiences: &'a [String],
    pub allowed_algs: &'a [Algorithm],
    pub clock_skew: Duration,
    /// Now, unix seconds, by entrance's clock (tests move it).
    pub now: i64,
}

/// Entra's access-token versions, told apart by the issuer (docs/reference/ENTRA-2.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenVersion {
    /// `iss` = `https://sts.windows.net/{tid}/`, client in `appid`.
    V1,
    /// `iss` = `https://login.microsoftonline.com/{tid}/v2.0`, client in `azp`.
    V2,
}

impl TokenVersion {
    /// The `ver` claim Entra puts in tokens of this version.
    fn ver(self) -> &'static str {
        match self {
            TokenVersion::V1 => "1.0",
            TokenVersion::V2 => "2.0",
        }
    }
}

/// The claims of a verified access token that entrance uses.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AccessClaims {
    pub version: TokenVersion,
    pub iss: String,
    pub sub: String,
    pub tid: String,
    /// The user's (delegated) or the client's service principal's (app-only) object id.
    pub oid: Option<String>,
    /// The calling app: `azp` (v2) or `appid` (v1).
    pub client_id: String,
    /// No user behind the token: `idtyp = app`, or no `scp` (delegated tokens always carry
    /// one, app-only tokens never do).
    pub app_only: bool,
    /// `scp`, split at spaces (delegated only).
    pub scopes: Vec<String>,
    /// `roles`: app permissions (app-only) or the user's app roles (delegated).
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub groups_overage: bool,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub exp: i64,
}

/// The unverified header and claims that pick a connection for a token: its `iss`/`tid` and
/// `aud`, never a request parameter. Only a hint: the chosen connection then verifies
/// everything, and a refusal is all a forged hint can cause.
#[derive(Debug, Default)]
pub(crate) struct Peeked {
    pub iss: Option<String>,
    pub tid: Option<String>,
    pub aud: Vec<String>,
    pub kid: Option<String>,
    /// A Microsoft Graph token: `nonce` in the header or a Graph audience.
    pub graph: bool,
}

pub(crate) fn peek(token: &str) -> Result<Peeked, Rejection> {
    #[derive(Deserialize)]
    struct Hint {
        iss: Option<String>,
        tid: Option<String>,
        aud: Option<Audience>,
    }
    let parts = split(token)?;
    let header = parse_header(parts.header)?;
    let payload = decode_part(parts.payload, "payload")?;
    let hint: Hint = serde_json::from_slice(&payload)
        .map_err(|e| Rejection::Malformed(format!("claims: {}", json_error_kind(&e))))?;
    let aud = match hint.aud {
        None => Vec::new(),
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(a)) => a,
    };
    Ok(Peeked {
        graph: header.nonce || aud.iter().any(|a| entra::is_graph_audience(a)),
        iss: hint.iss,
        tid: hint.tid,
        aud,
        kid: header.kid,
    })
}

/// Whether a token of issuer `iss` and tenant `tid` could belong to a connection with these
/// expectations (used to pick among connections that share an audience).
pub(crate) fn admits(exp: &AccessExpectations<'_>, iss: &str, tid: Option<&str>) -> bool {
    let Some(tid) = tid.filter(|t| entra::is_guid(t)) else {
        return false;
    };
    let tenant_ok = exp.allowed_tenants.allows(tid);
    match entra::v1_issuer_tenant(iss) {
        Some(t) => {
            exp.accept_v1 && t == tid && tenant_ok && v2_issuer_for(exp.issuer, tid).is_some()
        }
        None => tenant_ok && check_issuer(iss, Some(tid), exp.issuer).is_ok(),
    }
}

/// The connection's v2.0 issuer for tenant `tid`: the exact issuer when it names that tenant,
/// the template with `tid` substituted for a multi-tenant connection.
fn v2_issuer_for(policy: &IssuerPolicy, tid: &str) -> Option<String> {
    match policy {
        IssuerPolicy::Exact(issuer) => issuer
            .strip_suffix("/v2.0")
            .and_then(|rest| rest.rsplit_once('/'))
            .is_some_and(|(_, tenant)| tenant == tid)
            .then(|| issuer.clone()),
        IssuerPolicy::EntraTemplate { template } => Some(template.replace(TENANT_PLACEHOLDER, tid)),
    }
}

/// The payload as sent; every claim optional so a missing one is reported as such. A struct
/// rejects duplicate claim names.
#[derive(Deserialize)]
struct RawAccessClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    tid: Option<String>,
    oid: Option<String>,
    azp: Option<String>,
    appid: Option<String>,
    idtyp: Option<String>,
    scp: Option<String>,
    roles: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    hasgroups: Option<bool>,
    #[serde(rename = "_claim_names")]
    claim_names: Option<std::collections::HashMap<String, serde::de::IgnoredAny>>,
    ver: Option<String>,
    preferred_username: Option<String>,
    /// v1 tokens name the user here instead of `preferred_username` (display only).
    upn: Option<String>,
    name: Option<String>,
    email: Option<String>,
}

/// Validates an access token for the API. Every rule has a test in `tests/api/bearer.rs`
/// (and the unit tests below), a refused token beside its accepted twin.
pub(crate) fn verify_access_token(
    token: &str,
    keys: &KeySet,
    exp: &AccessExpectations<'_>,
) -> Result<AccessClaims, Rejection> {
    let (key, payload) = verify_jws(token, keys, exp.allowed_algs, Kind::AccessToken)?;
    let raw: RawAccessClaims = serde_json::from_slice(&payload)
        .map_err(|e| Rejection::Malformed(format!("claims: {}", json_error_kind(&e))))?;

    // RFC 9068 §2.2 makes iss, exp, aud, sub and iat required; Entra always sends them and
    // tid, which scopes every identifier (docs/reference/ENTRA-2.md §1).
    let iss = raw.iss.ok_or(Rejection::MissingClaim("iss"))?;
    let aud = match raw.aud.ok_or(Rejection::MissingClaim("aud"))? {
        Audience::One(one) => vec![one],
        Audience::Many(many) => many,
    };
    // docs/reference/ENTRA-2.md §2: a token for Graph is never for us, whoever signed it.
    if aud.iter().any(|a| entra::is_graph_audience(a)) {
        return Err(Rejection::GraphToken);
    }
    let sub = raw.sub.ok_or(Rejection::MissingClaim("sub"))?;
    let expires = raw.exp.ok_or(Rejection::MissingClaim("exp"))?;
    let iat = raw.iat.ok_or(Rejection::MissingClaim("iat"))?;
    let tid = raw.tid.ok_or(Rejection::MissingClaim("tid"))?;
    if !entra::is_guid(&tid) {
        return Err(Rejection::InvalidTenantId(tid));
    }

    // The issuer by token version. A v1 token's issuer is `https://sts.windows.net/{tid}/`,
    // but Entra's keys name the v2 issuer in their `issuer` member (docs/reference/ENTRA.md §3), so the
    // key-issuer check runs against the v2 issuer of the same tenant: a key published for
    // another tenant cannot vouch for a v1 token either.
    let (version, key_issuer_target) = match entra::v1_issuer_tenant(&iss) {
        Some(iss_tenant) if exp.accept_v1 => {
            if iss_tenant != tid {
                return Err(Rejection::TenantMismatch {
                    iss_tenant: iss_tenant.to_owned(),
                    tid,
                });
            }
            let v2 = v2_issuer_for(exp.issuer, &tid).ok_or_else(|| Rejection::IssuerMismatch {
                expected: v1_issuer_of(exp.issuer),
                actual: iss.clone(),
            })?;
            (TokenVersion::V1, v2)
        }
        _ => {
            check_issuer(&iss, Some(&tid), exp.issuer)?;
            (TokenVersion::V2, iss.clone())
        }
    };
    check_tenant(Some(&tid), exp.allowed_tenants)?;
    check_key_issuer(key, &key_issuer_target, Some(&tid))?;
    // A `ver` that contradicts the issuer means a token put together from two versions.
    if let Some(ver) = raw.ver
        && ver != version.ver()
    {
        return Err(Rejection::VersionMismatch {
            ver,
            expected: version.ver(),
        });
    }

    // RFC 9068 §4 / RFC 7519 §4.1.3: the API must find itself in `aud`; and, as for ID
    // tokens, no audience it does not know may ride along (a token for several resources is
    // not ours alone).
    if let Some(stranger) = aud.iter().find(|a| !exp.audiences.contains(a)) {
        return Err(Rejection::AudienceNotAccepted(stranger.clone()));
    }

    let skew = i64::try_from(exp.clock_skew.as_secs()).unwrap_or(i64::MAX);
    if exp.now > expires.saturating_add(skew) {
        return Err(Rejection::Expired);
    }
    if let Some(nbf) = raw.nbf
        && nbf > exp.now.saturating_add(skew)
    {
        return Err(Rejection::NotYetValid);
    }
    if iat > exp.now.saturating_add(skew) {
        return Err(Rejection::IssuedInFuture);
    }

    // The calling app: `azp` in v2 tokens, `appid` in v1 (docs/reference/ENTRA-2.md §1).
    let client_id = match version {
        TokenVersion::V2 => raw.azp.ok_or(Rejection::MissingClaim("azp"))?,
        TokenVersion::V1 => raw.appid.ok_or(Rejection::MissingClaim("appid"))?,
    };
    // `idtyp = app` is "the most accurate way to determine if a token is an app token"
    // (docs/reference/ENTRA-2.md §1); without the optional claim, only delegated tokens carry `scp`.
    let app_only = raw.idtyp.as_deref() == Some("app") || raw.scp.is_none();
    if app_only && raw.scp.is_some() {
        return Err(Rejection::AppOnlyWithScopes(
            "an app-only token (idtyp = app) carries delegated scopes (scp)",
        ));
    }
    let oid = raw.oid.filter(|o| !o.is_empty());
    if !app_only && oid.is_none() {
        // The user key is `entra:{tid}:{oid}`: a delegated token without a user's oid has no
        // user to name.
        return Err(Rejection::MissingClaim("oid"));
    }
    let scopes = raw
        .scp
        .as_deref()
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(AccessClaims {
        version,
        iss,
        sub,
        tid,
        oid,
        client_id,
        app_only,
        scopes,
        roles: raw.roles.unwrap_or_default(),
        groups: raw.groups.unwrap_or_default(),
        groups_overage: raw.hasgroups == Some(true)
            || raw.claim_names.is_some_and(|n| n.contains_key("groups")),
        preferred_username: raw.preferred_username.or(raw.upn),
        name: raw.name,
        email: raw.email,
        exp: expires,
    })
}

/// The v1 issuer a policy stands for, for error messages.
fn v1_issuer_of(policy: &IssuerPolicy) -> String {
    let tenant = match policy {
        IssuerPolicy::Exact(issuer) => issuer
            .strip_suffix("/v2.0")
            .and_then(|rest| rest.rsplit_once('/'))
            .map_or("?", |(_, t)| t),
        IssuerPolicy::EntraTemplate { .. } => TENANT_PLACEHOLDER,
    };
    format!("{V1_ISSUER_PREFIX}{tenant}/")
}

/// Why a valid token may still not call the API (RFC 6750 §3.1 `insufficient_scope`: 403).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Insufficient {
    /// The calling app is not in `api.allowed_clients`.
    ClientNotAllowed(String),
    /// A delegated token lacks these of `api.required_scopes`.
    MissingScopes(Vec<String>),
    /// An app-only token lacks these of `api.required_roles`.
    MissingRoles(Vec<String>),
    /// An app-only token, and the connection sets no `api.required_roles`: Entra hands such
    /// tokens, without roles, to any app of the tenant that asks (docs/reference/ENTRA-2.md §1).
    AppOnlyNotAccepted,
}

impl Insufficient {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Insufficient::ClientNotAllowed(_) => "client_not_allowed",
            Insufficient::MissingScopes(_) => "missing_scopes",
            Insufficient::MissingRoles(_) => "missing_roles",
            Insufficient::AppOnlyNotAccepted => "app_only_not_accepted",
        }
    }

    /// RFC 6750 §3's `scope` attribute: what the token would have needed, when that is scopes
    /// or roles.
    pub(crate) fn needed(&self) -> Option<String> {
        match self {
            Insufficient::MissingScopes(s) | Insufficient::MissingRoles(s) => Some(s.join(" ")),
            _ => None,
        }
    }
}

impl std::fmt::Display for Insufficient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Insufficient::ClientNotAllowed(c) => {
                write!(f, "client app {c} is not in api.allowed_clients")
            }
            Insufficient::MissingScopes(s) => {
                write!(f, "the token lacks the scopes {} (scp)", s.join(" "))
            }
            Insufficient::MissingRoles(r) => {
                write!(
                    f,
                    "the app-only token lacks the roles {} (roles)",
                    r.join(" ")
                )
            }
            Insufficient::AppOnlyNotAccepted => write!(
                f,
                "app-only tokens are not accepted: the connection sets no api.required_roles"
            ),
        }
    }
}

/// What the API requires of a valid token's caller: an allowed client app; for a user, every
/// `required_scopes` entry in `scp`; for an app, every `required_roles` entry in `roles`
/// (docs/reference/ENTRA-2.md §1, step 4).
pub(crate) fn authorize(claims: &AccessClaims, api: &ApiSettings) -> Result<(), Insufficient> {
    if !api.allows_client(&claims.client_id) {
        return Err(Insufficient::ClientNotAllowed(claims.client_id.clone()));
    }
    if claims.app_only {
        if api.required_roles.is_empty() {
            return Err(Insufficient::AppOnlyNotAccepted);
        }
        let missing = missing(&api.required_roles, &claims.roles);
        if !missing.is_empty() {
            return Err(Insufficient::MissingRoles(missing));
        }
    } else {
        let missing = missing(&api.required_scopes, &claims.scopes);
        if !missing.is_empty() {
            return Err(Insufficient::MissingScopes(missing));
        }
    }
    Ok(())
}

/// The required values not held (exact, case-sensitive: Entra emits them as registered).
fn missing(required: &[String], held: &[String]) -> Vec<String> {
    required
        .iter()
        .filter(|r| !held.contains(r))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
