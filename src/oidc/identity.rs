//! Who signed in: the identity entrance keeps in the session, built from validated ID-token
//! claims, with its stable user key.

use serde::{Deserialize, Serialize};

use crate::config::AccessPolicy;
use crate::oidc::verifier::IdTokenClaims;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    /// The stable key apps should store: `entra:{tid}:{oid}` for Entra, else
    /// `oidc:{iss}:{sub}`. Never the email or username, which users and admins can change and
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
    /// entry in `_claim_names`): `groups` is then unknown, not empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub groups_overage: bool,
}

impl Identity {
    pub fn from_claims(connection: &str, c: &IdTokenClaims) -> Identity {
        let user = match (&c.tid, &c.oid) {
            // Entra: the object id is stable within the tenant, and the same person has the
            // same oid across every app of that tenant; tid scopes it.
            (Some(tid), Some(oid)) if !tid.is_empty() && !oid.is_empty() => {
                format!("entra:{tid}:{oid}")
            }
            _ => format!("oidc:{}:{}", c.iss, c.sub),
        };
        Identity {
            user,
            connection: connection.to_owned(),
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

    fn claims() -> IdTokenClaims {
        IdTokenClaims {
            iss: "https://idp.example/t/v2.0".into(),
            sub: "pairwise".into(),
            aud: vec!["c".into()],
            exp: 2,
            iat: 1,
            nbf: None,
            nonce: None,
            azp: None,
            tid: Some("t".into()),
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
        assert_eq!(Identity::from_claims("c", &claims()).user, "entra:t:o");
    }

    #[test]
    fn other_users_are_keyed_by_iss_and_sub_never_email() {
        let mut c = claims();
        c.oid = None;
        let id = Identity::from_claims("c", &c);
        assert_eq!(id.user, "oidc:https://idp.example/t/v2.0:pairwise");
        assert!(!id.user.contains("ada"));
    }

    #[test]
    fn email_is_verified_only_when_the_idp_says_so() {
        let mut c = claims();
        assert!(!Identity::from_claims("c", &c).email_verified);
        c.email_verified = Some(false);
        assert!(!Identity::from_claims("c", &c).email_verified);
        c.email_verified = Some(true);
        assert!(Identity::from_claims("c", &c).email_verified);
        c.email_verified = None;
        c.xms_edov = Some(true);
        assert!(Identity::from_claims("c", &c).email_verified);
        c.email = None;
        assert!(!Identity::from_claims("c", &c).email_verified);
    }

    #[test]
    fn group_overage_is_carried_into_the_identity() {
        let mut c = claims();
        assert!(!Identity::from_claims("c", &c).groups_overage);
        c.groups_claim_source = true;
        assert!(Identity::from_claims("c", &c).groups_overage);
    }

    #[test]
    fn access_policy_admits_by_group_or_role() {
        let mut id = Identity::from_claims("c", &claims());
        assert_eq!(AccessPolicy::default().check(&id), Ok(()));
        let groups = AccessPolicy {
            groups: vec!["AAAA-1".into()],
            roles: vec![],
        };
        let roles = AccessPolicy {
            groups: vec![],
            roles: vec!["App.Admin".into()],
        };
        let both = AccessPolicy {
            groups: vec!["aaaa-1".into()],
            roles: vec!["App.Admin".into()],
        };
        assert_eq!(groups.check(&id), Err(Denial::NotListed));
        assert_eq!(roles.check(&id), Err(Denial::NotListed));
        id.groups = vec!["aaaa-1".into()];
        assert_eq!(groups.check(&id), Ok(()), "group ids ignore case");
        assert_eq!(both.check(&id), Ok(()));
        assert_eq!(roles.check(&id), Err(Denial::NotListed));
        id.groups.clear();
        id.roles = vec!["app.admin".into()];
        assert_eq!(roles.check(&id), Err(Denial::NotListed), "roles are exact");
        id.roles = vec!["App.Admin".into()];
        assert_eq!(roles.check(&id), Ok(()));
        assert_eq!(both.check(&id), Ok(()));
    }

    #[test]
    fn an_overage_is_reported_not_read_as_no_groups() {
        let mut id = Identity::from_claims("c", &claims());
        id.groups_overage = true;
        let groups = AccessPolicy {
            groups: vec!["g".into()],
            roles: vec!["R".into()],
        };
        assert_eq!(groups.check(&id), Err(Denial::GroupsUnknown));
        id.roles = vec!["R".into()];
        assert_eq!(groups.check(&id), Ok(()), "a role still admits");
        let roles_only = AccessPolicy {
            groups: vec![],
            roles: vec!["X".into()],
        };
        assert_eq!(roles_only.check(&id), Err(Denial::NotListed));
    }
}
