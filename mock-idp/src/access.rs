//! Access tokens for an API, shaped like Entra's v1.0 and v2.0 ones
//! (`tests/fixtures/entra/access_token.*.claims.json`, docs/reference/ENTRA-2.md §1): delegated
//! tokens of the mock's user with `scp`, app-only tokens with `roles` and `idtyp`, and a
//! Microsoft Graph token with Graph's `nonce` header member (§2).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::keys::{self, KeyError, KeyPair, SignWith};
use crate::{MockIdp, Shared, Signing};

/// Which of Entra's access-token formats (chosen by the API's `requestedAccessTokenVersion`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenVersion {
    /// `iss` = `https://sts.windows.net/{tid}/`, `appid`, header `x5t` and `kid`.
    V1,
    /// `iss` = `{base}/{tid}/v2.0`, `azp`.
    #[default]
    V2,
}

/// An access token to sign. Start from [`AccessToken::delegated`] or [`AccessToken::app_only`].
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub version: TokenVersion,
    /// `aud`: the API's App ID URI or client GUID.
    pub audience: String,
    /// `tid` (and the tenant in `iss`); `None`: the mock's own tenant.
    pub tenant: Option<String>,
    /// The calling app: `azp` (v2) or `appid` (v1).
    pub client_id: String,
    /// `Some`: a delegated token of the mock's user with this `scp`; `None`: app-only.
    pub scp: Option<String>,
    pub roles: Vec<String>,
    /// Emit `idtyp` (`app` for app-only, `user` otherwise), the optional claim an API asks for.
    pub idtyp: bool,
    /// Seconds from now until `exp` (negative: already expired).
    pub lifetime_secs: i64,
    /// Override/add claims, then drop these.
    pub claims_set: Map<String, Value>,
    pub claims_remove: Vec<String>,
    /// Override/add header members, then drop these.
    pub header_set: Map<String, Value>,
    pub header_remove: Vec<String>,
    pub signing: Signing,
}

impl AccessToken {
    /// The mock's user calling `audience` through the web app (the mock's client ID).
    pub fn delegated(audience: &str, scp: &str) -> AccessToken {
        AccessToken {
            version: TokenVersion::V2,
            audience: audience.to_owned(),
            tenant: None,
            client_id: crate::DEFAULT_CLIENT_ID.to_owned(),
            scp: Some(scp.to_owned()),
            roles: Vec::new(),
            idtyp: false,
            lifetime_secs: 3600,
            claims_set: Map::new(),
            claims_remove: Vec::new(),
            header_set: Map::new(),
            header_remove: Vec::new(),
            signing: Signing::Normal,
        }
    }

    /// A daemon (`client_id`) calling `audience` with the client-credentials grant.
    pub fn app_only(audience: &str, client_id: &str, roles: &[&str]) -> AccessToken {
        AccessToken {
            client_id: client_id.to_owned(),
            scp: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            idtyp: true,
            ..AccessToken::delegated(audience, "")
        }
    }

    pub fn v1(mut self) -> AccessToken {
        self.version = TokenVersion::V1;
        self
    }

    pub fn set(mut self, claim: &str, value: Value) -> AccessToken {
        self.claims_set.insert(claim.to_owned(), value);
        self
    }

    pub fn remove(mut self, claim: &str) -> AccessToken {
        self.claims_remove.push(claim.to_owned());
        self
    }

    pub fn header(mut self, member: &str, value: Value) -> AccessToken {
        self.header_set.insert(member.to_owned(), value);
        self
    }
}

/// The object id of the daemon's service principal in app-only tokens (docs/reference/ENTRA-2.md's fake).
const DAEMON_SP_OID: &str = "33334444-dddd-5555-eeee-6666ffff7777";

fn claims(s: &Shared, t: &AccessToken, tid: &str) -> Map<String, Value> {
    let now = crate::keys::now_unix() as i64;
    let u = &s.user;
    let mut c = Map::new();
    c.insert("aud".into(), json!(t.audience));
    let iss = match t.version {
        TokenVersion::V1 => format!("https://sts.windows.net/{tid}/"),
        TokenVersion::V2 => format!("{}/{tid}/v2.0", s.base_url),
    };
    c.insert("iss".into(), json!(iss));
    c.insert("iat".into(), json!(now));
    c.insert("nbf".into(), json!(now));
    c.insert("exp".into(), json!(now + t.lifetime_secs));
    c.insert("aio".into(), json!(keys::random_b64(32)));
    let (client, acr) = match t.version {
        TokenVersion::V1 => ("appid", "appidacr"),
        TokenVersion::V2 => ("azp", "azpacr"),
    };
    c.insert(client.into(), json!(t.client_id));
    c.insert(acr.into(), json!("1"));
    match &t.scp {
        Some(scp) => {
            c.insert("name".into(), json!(u.name));
            c.insert("oid".into(), json!(u.oid));
            match t.version {
                TokenVersion::V1 => {
                    c.insert("upn".into(), json!(u.preferred_username));
                    c.insert("unique_name".into(), json!(u.preferred_username));
                }
                TokenVersion::V2 => {
                    c.insert("preferred_username".into(), json!(u.preferred_username));
                }
            }
            c.insert("scp".into(), json!(scp));
            // Pairwise per user and API: not the ID token's `sub` (that is per web app).
            c.insert("sub".into(), json!(format!("api-{}", u.sub)));
            if t.idtyp {
                c.insert("idtyp".into(), json!("user"));
            }
            if !u.groups.is_empty() {
                c.insert("groups".into(), json!(u.groups));
            }
        }
        None => {
            c.insert("oid".into(), json!(DAEMON_SP_OID));
            c.insert("sub".into(), json!(DAEMON_SP_OID));
            if t.idtyp {
                c.insert("idtyp".into(), json!("app"));
            }
        }
    }
    if !t.roles.is_empty() {
        c.insert("roles".into(), json!(t.roles));
    }
    c.insert(
        "rh".into(),
        json!(format!("1.AAAA{}.", keys::random_b64(24))),
    );
    c.insert("tid".into(), json!(tid));
    c.insert("uti".into(), json!(keys::random_b64(16)));
    c.insert(
        "ver".into(),
        json!(match t.version {
            TokenVersion::V1 => "1.0",
            TokenVersion::V2 => "2.0",
        }),
    );
    for (k, v) in &t.claims_set {
        c.insert(k.clone(), v.clone());
    }
    for k in &t.claims_remove {
        c.remove(k);
    }
    c
}

impl MockIdp {
    /// Signs an API access token. Synchronous: a key the signing needs (a decoy, a tenant's
    /// own) is generated on the calling thread, which takes a moment.
    pub fn access_token(&self, t: &AccessToken) -> Result<String, KeyError> {
        sign(&self.shared, t)
    }

    /// A Microsoft Graph access token for the mock's user: `aud` Graph, v1.0, and Graph's
    /// `nonce` header member (docs/reference/ENTRA-2.md §2).
    pub fn graph_token(&self) -> Result<String, KeyError> {
        self.access_token(
            &AccessToken::delegated("https://graph.microsoft.com", "User.Read openid profile")
                .v1()
                .header("nonce", json!(keys::random_b64(48))),
        )
    }
}

/// Signs `t` with the key its `signing` names (the token endpoint's client-credentials
/// grant uses it too) and records it among the issued tokens.
pub(crate) fn sign(s: &Shared, t: &AccessToken) -> Result<String, KeyError> {
    {
        let tid = t.tenant.clone().unwrap_or_else(|| s.tenant_id.clone());
        let claims = claims(s, t, &tid);
        let (current, published_kid, decoy) = {
            let mut inner = s.lock();
            if matches!(t.signing, Signing::UnpublishedKey) && inner.decoy.is_none() {
                inner.decoy = Some(Arc::new(KeyPair::generate()?));
            }
            if let Signing::TenantKey(tenant) = &t.signing {
                let tenant = tenant.clone().unwrap_or_else(|| tid.clone());
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    inner.tenant_keys.entry(tenant)
                {
                    slot.insert(Arc::new(KeyPair::generate()?));
                }
            }
            let own = match &t.signing {
                Signing::TenantKey(tenant) => inner
                    .tenant_keys
                    .get(tenant.as_deref().unwrap_or(&tid))
                    .cloned(),
                _ => None,
            };
            let current = own.unwrap_or_else(|| Arc::clone(&inner.current));
            let published = inner
                .published
                .first()
                .map(|k| k.kid.clone())
                .unwrap_or_else(|| current.kid.clone());
            (current, published, inner.decoy.clone())
        };
        let kid = match t.signing {
            Signing::UnpublishedKey => published_kid,
            _ => current.kid.clone(),
        };
        let mut header = Map::new();
        if t.version == TokenVersion::V1 {
            // v1 headers carry x5t beside kid, with the same value (docs/reference/ENTRA.md §4).
            header.insert("x5t".into(), json!(kid));
        }
        for (k, v) in &t.header_set {
            header.insert(k.clone(), v.clone());
        }
        let token = keys::build_jwt(
            &claims,
            &header,
            &t.header_remove,
            &SignWith {
                signing: &t.signing,
                current: &current,
                unpublished: decoy.as_deref(),
                header_kid: &kid,
            },
        )?;
        s.lock().issued.push(token.clone());
        Ok(token)
    }
}
