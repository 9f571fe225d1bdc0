//! Who signed in: the identity entrance keeps in the session, built from validated ID-token
//! claims, with its stable user key.

use serde::{Deserialize, Serialize};

use crate::verifier::IdTokenClaims;

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
        }
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
}
