//! Who a bearer access token speaks for: the connection it belongs to (chosen from the
//! token's own `iss`/`tid` and `aud`, never from the request), its validation with that
//! connection's keys and rules (`verifier::access`), what the API requires of its caller, and
//! the identity it yields — the same user key as that person's browser session.

use std::{sync::Arc, time::Duration};

use crate::{
    entra,
    loopback::is_loopback_host,
    oidc::{
        http_client::HttpClient,
        identity::{Denial, Identity},
        provider::{Connection, NotReady},
        verifier::{
            Rejection,
            access::{self, AccessClaims, AccessExpectations, Insufficient, TokenVersion},
        },
    },
};

/// A caller a bearer token proved, and what the API lets it do.
#[derive(Debug, Clone)]
pub(crate) struct BearerCaller {
    /// `user` is `entra:{tid}:{oid}` for a person — the key their browser session has
    /// (`identity::UserKey`) — and `entra-app:{tid}:{client}` for an app, so an app can never
    /// pass for a person.
    pub identity: Identity,
    /// The calling app (`azp`/`appid`).
    pub client_id: String,
    pub scopes: Vec<String>,
    pub app_only: bool,
    pub version: TokenVersion,
    pub expires_at: i64,
}

/// Why a bearer token does not get through.
#[derive(Debug)]
pub(crate) enum BearerError {
    /// The token is not valid (RFC 6750 §3.1 `invalid_token`, 401). `connection` when one
    /// was chosen.
    Rejected {
        connection: Option<String>,
        rejection: Rejection,
    },
    /// Valid, but the API wants more of its caller (`insufficient_scope`, 403).
    Insufficient {
        connection: String,
        reason: Insufficient,
    },
    /// A person the connection's `allowed_groups`/`allowed_roles` do not admit, as at sign-in.
    Denied {
        connection: String,
        user: String,
        denial: Denial,
    },
    /// The chosen connection has no metadata and keys yet.
    NotReady {
        connection: Box<crate::config::ConnectionConfig>,
        reason: NotReady,
    },
}

/// Whether any connection accepts bearer tokens (`api` set): else `/auth` ignores them.
pub(crate) fn enabled(connections: &[Arc<Connection>]) -> bool {
    connections.iter().any(|c| c.config.api.is_some())
}

/// v1 tokens' issuer is known for Entra's public cloud only (and the loopback mock, which
/// issues them in the same shape): docs/reference/ENTRA-2.md §1.
fn accepts_v1(conn: &Connection) -> bool {
    let url = &conn.config.metadata_url;
    is_loopback_host(url)
        || url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("login.microsoftonline.com"))
}

/// Validates `token` and authorizes its caller. `now` is entrance's clock.
pub(crate) async fn authenticate(
    connections: &[Arc<Connection>],
    http: &HttpClient,
    token: &str,
    now: i64,
    clock_skew: Duration,
) -> Result<BearerCaller, BearerError> {
    let rejected = |connection: Option<&str>, rejection| BearerError::Rejected {
        connection: connection.map(str::to_owned),
        rejection,
    };
    let peeked = access::peek(token).map_err(|r| rejected(None, r))?;
    if peeked.graph {
        return Err(rejected(None, Rejection::GraphToken));
    }
    // Connections whose API the token is for; among them, the first whose issuer rule admits
    // the token's iss/tid. When none does, the first still verifies the token, so the
    // refusal names the rule that failed (issuer, tenant) like an ID token's would.
    let candidates: Vec<&Arc<Connection>> = connections
        .iter()
        .filter(|c| {
            c.config
                .api
                .as_ref()
                .is_some_and(|api| peeked.aud.iter().any(|a| api.audiences.contains(a)))
        })
        .collect();
    let Some(first) = candidates.first() else {
        let aud = peeked.aud.first().cloned().unwrap_or_default();
        return Err(rejected(None, Rejection::AudienceNotAccepted(aud)));
    };
    let admitted = candidates.iter().find(|c| {
        let (Ok(provider), Some(api), Some(iss)) =
            (c.provider(), c.config.api.as_ref(), peeked.iss.as_deref())
        else {
            return false;
        };
        let exp = expectations(
            c,
            &provider.issuer,
            &provider.allowed_algs,
            api,
            now,
            clock_skew,
        );
        access::admits(&exp, iss, peeked.tid.as_deref())
    });
    let conn = Arc::clone(admitted.unwrap_or(first));
    let id = conn.config.id.clone();
    let Some(api) = conn.config.api.as_ref() else {
        return Err(rejected(
            Some(&id),
            Rejection::AudienceNotAccepted(String::new()),
        ));
    };

    let (provider, keys) = match conn
        .keys_for_token(http, peeked.kid.as_deref(), peeked.tid.as_deref())
        .await
    {
        Ok(found) => found,
        Err(reason) => {
            return Err(BearerError::NotReady {
                connection: Box::new(conn.config.clone()),
                reason,
            });
        }
    };
    let exp = expectations(
        &conn,
        &provider.issuer,
        &provider.allowed_algs,
        api,
        now,
        clock_skew,
    );
    let claims =
        access::verify_access_token(token, &keys, &exp).map_err(|r| rejected(Some(&id), r))?;
    access::authorize(&claims, api).map_err(|reason| BearerError::Insufficient {
        connection: id.clone(),
        reason,
    })?;
    let caller = caller(&id, claims);
    // A person is held to the connection's allowed_groups/allowed_roles as at sign-in, so a
    // user refused in the browser is not let in through the API.
    if !caller.app_only
        && let Err(denial) = conn.config.access.check(&caller.identity)
    {
        return Err(BearerError::Denied {
            connection: id,
            user: caller.identity.user,
            denial,
        });
    }
    Ok(caller)
}

fn expectations<'a>(
    conn: &'a Connection,
    issuer: &'a crate::oidc::verifier::IssuerPolicy,
    algs: &'a [jsonwebtoken::Algorithm],
    api: &'a crate::config::ApiSettings,
    now: i64,
    clock_skew: Duration,
) -> AccessExpectations<'a> {
    AccessExpectations {
        issuer,
        allowed_tenants: &conn.config.allowed_tenants,
        accept_v1: accepts_v1(conn),
        audiences: &api.audiences,
        allowed_algs: algs,
        clock_skew,
        now,
    }
}

/// The identity of a verified token's caller. The connection is Entra's (config refuses an
/// `api` table elsewhere) and the verifier has pinned `iss` to the tenant `tid` names, which
/// is what `identity::UserKey::Entra` asks before it keys a person by `tid` and `oid`.
fn caller(connection: &str, c: AccessClaims) -> BearerCaller {
    let user = match (&c.oid, c.app_only) {
        (Some(oid), false) => format!("entra:{}:{oid}", c.tid),
        _ => format!("entra-app:{}:{}", c.tid, c.client_id),
    };
    debug_assert!(entra::is_guid(&c.tid));
    BearerCaller {
        identity: Identity {
            user,
            connection: connection.to_owned(),
            iss: c.iss,
            sub: c.sub,
            oid: c.oid,
            tid: Some(c.tid),
            name: c.name,
            email: c.email,
            // Access tokens carry no verified-email assertion entrance reads.
            email_verified: false,
            preferred_username: c.preferred_username,
            login_hint: None,
            sid: None,
            groups: c.groups,
            roles: c.roles,
            groups_overage: c.groups_overage,
        },
        client_id: c.client_id,
        scopes: c.scopes,
        app_only: c.app_only,
        version: c.version,
        expires_at: c.exp,
    }
}
