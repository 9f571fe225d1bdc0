//! Who signed in: the identity entrance keeps in the session, built from validated ID-token
//! claims, with its stable user key.

use serde::{Deserialize, Serialize};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::{AccessPolicy, ConnectionConfig};
use crate::oidc::verifier::IdTokenClaims;
use crate::{entra, loopback::is_loopback_host};

/// What the `oidc:` key escapes: everything but RFC 3986's unreserved characters, so neither
/// part can hold the `:` that separates them (RFC 3986 §2.3 and §2.1).
const KEY_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Whose promise a user key rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserKey {
    /// `entra:{tid}:{oid}`: Entra's object id, scoped by the tenant the validated issuer names.
    Entra,
    /// `oidc:{iss}:{sub}`, each part percent-encoded: what OpenID Connect Core §5.7 promises is
    /// unique and never reassigned.
    Oidc,
}

impl UserKey {
    /// Entra's `tid`/`oid` key only a connection to Entra (or the bundled Entra-shaped mock on
    /// loopback) whose validated issuer is that very tenant's `…/{tid}/v2.0`: there Entra fixes
    /// the tenant. Any other IdP could put a victim tenant's `tid` and `oid` in its own tokens.
    pub(crate) fn of(connection: &ConnectionConfig, c: &IdTokenClaims) -> UserKey {
        let url = &connection.metadata_url;
        let entra_host = entra::is_entra_url(url) || is_loopback_host(url);
        match (&c.tid, &c.oid) {
            (Some(tid), Some(oid))
                if entra_host
                    && !oid.is_empty()
                    && entra::is_guid(tid)
                    && issuer_names_tenant(&c.iss, tid) =>
            {
                UserKey::Entra
            }
            _ => UserKey::Oidc,
        }
    }
}

/// `iss` is `{origin}/{tid}/v2.0` (Entra's v2.0 issuer for that tenant).
fn issuer_names_tenant(iss: &str, tid: &str) -> bool {
    iss.strip_suffix("/v2.0")
        .and_then(|rest| rest.rsplit_once('/'))
        .is_some_and(|(origin, tenant)| {
            tenant.eq_ignore_ascii_case(tid) && origin.matches('/').count() == 2
        })
}

/// The key of a non-Entra user: `oidc:` + the issuer and the subject, each percent-encoded
/// (every byte but `A–Z a–z 0–9 - . _ ~`), joined by `:`. Injective: an encoded part never holds
/// a `:`, so the key splits back into exactly one (issuer, subject) pair ([`oidc_key_parts`]).
pub(crate) fn oidc_key(iss: &str, sub: &str) -> String {
    format!(
        "oidc:{}:{}",
        utf8_percent_encode(iss, KEY_PART),
        utf8_percent_encode(sub, KEY_PART)
    )
}

/// The issuer and subject an `oidc:` key was made of: how an app migrates a stored key of the
/// old, unencoded form `oidc:{iss}:{sub}` (README, "Forward-auth"). Here it proves the split.
#[cfg(test)]
fn oidc_key_parts(key: &str) -> Option<(String, String)> {
    let (iss, sub) = key.strip_prefix("oidc:")?.split_once(':')?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some((decode(iss)?, decode(sub)?))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    /// The stable key apps should store: `entra:{tid}:{oid}` for Entra ([`UserKey`]), else
    /// [`oidc_key`]. Never the email or username, which users and admins can change and
    /// which another account can later take (Entra's claims-validation guidance).
    pub user: String,
    pub connection: String,
    pub iss: String,
    pub sub: String,
    pub oid: Option<String>,
    pub tid: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    /// True only when the IdP asserts it (`email_verified`, or Entra's `xms_edov`); Entra's
    /// `email` claim is otherwise unverified and mutable.
    pub email_verified: bool,
    pub preferred_username: Option<String>,
    /// Entra's opaque `login_hint` claim, fed back as `logout_hint` at sign-out.
    pub login_hint: Option<String>,
    /// The IdP session id, for front-channel logout.
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Entra left `groups` out because the user is in too many (`hasgroups` or a `groups`
    /// entry in `_claim_names`): `groups` is then unknown, not empty. A connection with
    /// `groups.resolve_overage` reads them from Microsoft Graph at sign-in (`oidc::graph`):
    /// `groups` then holds them and this reads false, so apps see them as token groups.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub groups_overage: bool,
}

impl Identity {
    pub fn from_claims(connection: &ConnectionConfig, c: &IdTokenClaims) -> Identity {
        let user = match (UserKey::of(connection, c), &c.tid, &c.oid) {
            // Entra: the object id is stable within the tenant, and the same person has the
            // same oid across every app of that tenant; tid scopes it.
            (UserKey::Entra, Some(tid), Some(oid)) => format!("entra:{tid}:{oid}"),
            _ => oidc_key(&c.iss, &c.sub),
        };
        Identity {
            user,
            connection: connection.id.clone(),
            iss: c.iss.clone(),
            sub: c.sub.clone(),
            oid: c.oid.clone(),
            tid: c.tid.clone(),
            name: c.name.clone(),
            email: c.email.clone(),
            email_verified: c.email.is_some()
                && (c.email_verified == Some(true) || c.xms_edov == Some(true)),
            preferred_username: c.preferred_username.clone(),
            login_hint: c.login_hint.clone(),
            sid: c.sid.clone(),
            groups: c.groups.clone(),
            roles: c.roles.clone(),
            groups_overage: c.groups_overage(),
        }
    }
}

/// Why [`AccessPolicy::check`] refused a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// In none of the groups and holding none of the roles.
    NotListed,
    /// `allowed_groups` is set but the token could not carry the user's groups (overage),
    /// and no allowed role admitted them either.
    GroupsUnknown,
}

impl AccessPolicy {
    pub fn check(&self, id: &Identity) -> Result<(), Denial> {
        if !self.is_restricted() {
            return Ok(());
        }
        let in_group = id
            .groups
            .iter()
            .any(|g| self.groups.iter().any(|a| a.eq_ignore_ascii_case(g)));
        let has_role = id.roles.iter().any(|r| self.roles.contains(r));
        if in_group || has_role {
            return Ok(());
        }
        // Never read an overage's empty `groups` as "in no group": say why instead.
        if id.groups_overage && !self.groups.is_empty() {
            return Err(Denial::GroupsUnknown);
        }
        Err(Denial::NotListed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";

    fn entra() -> ConnectionConfig {
        ConnectionConfig::for_tests(&format!(
            "https://login.microsoftonline.com/{TID}/v2.0/.well-known/openid-configuration"
        ))
    }

    fn keycloak() -> ConnectionConfig {
        ConnectionConfig::for_tests("https://kc.example/realms/x/.well-known/openid-configuration")
    }

    fn claims() -> IdTokenClaims {
        IdTokenClaims {
            iss: format!("https://login.microsoftonline.com/{TID}/v2.0"),
            sub: "pairwise".into(),
            aud: vec!["c".into()],
            exp: 2,
            iat: 1,
            nbf: None,
            nonce: None,
            azp: None,
            tid: Some(TID.into()),
            oid: Some("o".into()),
            name: None,
            email: Some("ada@example.com".into()),
            email_verified: None,
            xms_edov: None,
            preferred_username: Some("ada@example.com".into()),
            login_hint: None,
            sid: None,
            groups: vec![],
            roles: vec![],
            hasgroups: None,
            groups_claim_source: false,
        }
    }

    #[test]
    fn entra_users_are_keyed_by_tid_and_oid() {
        assert_eq!(
            Identity::from_claims(&entra(), &claims()).user,
            format!("entra:{TID}:o")
        );
    }

    #[test]
    fn other_users_are_keyed_by_iss_and_sub_never_email() {
        let mut c = claims();
        c.oid = None;
        let id = Identity::from_claims(&entra(), &c);
        assert_eq!(
            id.user,
            format!("oidc:https%3A%2F%2Flogin.microsoftonline.com%2F{TID}%2Fv2.0:pairwise")
        );
        assert!(!id.user.contains("ada"));
    }

    #[test]
    fn only_an_entra_issuer_for_that_tenant_makes_an_entra_key() {
        // A non-Entra IdP beside the Entra connections puts a victim's tid and oid in its
        // own token: it gets its own `oidc:` key, never the victim's.
        let mut forged = claims();
        forged.iss = "https://kc.example/realms/x".into();
        let id = Identity::from_claims(&keycloak(), &forged);
        assert_eq!(
            id.user,
            "oidc:https%3A%2F%2Fkc.example%2Frealms%2Fx:pairwise"
        );
        // Even an issuer shaped like Entra's on another host.
        forged.iss = format!("https://evil.example/{TID}/v2.0");
        assert!(
            Identity::from_claims(&keycloak(), &forged)
                .user
                .starts_with("oidc:")
        );
        // On an Entra connection, the tid must be the tenant the issuer names.
        let mut other_tenant = claims();
        other_tenant.tid = Some("11111111-2222-3333-4444-555555555555".into());
        assert!(
            Identity::from_claims(&entra(), &other_tenant)
                .user
                .starts_with("oidc:")
        );
    }

    #[test]
    fn the_colliding_pair_of_the_old_format_gets_two_keys() {
        let a = oidc_key("https://h:8443", "x");
        let b = oidc_key("https://h", "8443:x");
        assert_ne!(a, b);
        assert_eq!(
            oidc_key_parts(&a),
            Some(("https://h:8443".into(), "x".into()))
        );
        assert_eq!(
            oidc_key_parts(&b),
            Some(("https://h".into(), "8443:x".into()))
        );
    }

    proptest::proptest! {
        /// Every key splits back into the pair it was made of, whatever the strings: so two
        /// different pairs can never share a key.
        #[test]
        fn the_oidc_key_splits_back_into_its_pair(iss in ".*", sub in ".*") {
            let key = oidc_key(&iss, &sub);
            proptest::prop_assert_eq!(oidc_key_parts(&key), Some((iss, sub)));
        }

        /// The pairs that collided in the old format — one string cut at two places, with `:`
        /// and `%` in it — get different keys exactly when the cuts differ.
        #[test]
        fn the_oidc_key_is_injective(s in "[a-z:%/.]{0,16}", i in 0usize..=16, j in 0usize..=16) {
            let (i, j) = (i.min(s.len()), j.min(s.len()));
            let ka = oidc_key(&s[..i], &s[i..]);
            let kb = oidc_key(&s[..j], &s[j..]);
            proptest::prop_assert_eq!(ka == kb, i == j);
        }
    }
}
