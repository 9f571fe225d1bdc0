//! The doctor's `groups` line, for a connection with `groups.resolve_overage = true`: which
//! Microsoft Graph permission its sign-ins need, and — for the app-only path, under
//! `--verify-secret` — one Graph call that proves it is granted in the connection's tenant.

use secrecy::ExposeSecret;

use crate::{
    config::ConnectionConfig,
    entra,
    oidc::graph::{self, Caller, Who},
    oidc::http_client::{FetchError, HttpClient},
    oidc::token::{self, TokenError},
};

use super::{
    Check, Discovered, GROUPS,
    checks::{credentials_request, verify_endpoint},
};

/// A user id no tenant has: Graph checks the caller's permission before it looks the user up,
/// so 404 means "permitted" and 403 "not permitted" without reading anyone's groups
/// (the order is observed behaviour, not documented: docs/reference/ENTRA-2.md §8's kind).
const NO_USER: &str = "00000000-0000-0000-0000-000000000000";

pub(super) async fn verify_groups(
    conn: &ConnectionConfig,
    d: Option<&Discovered>,
    is_entra: bool,
    issuer_ok: bool,
    verify_secret: bool,
    http: &HttpClient,
) -> Check {
    let caller = Caller::for_sign_in(conn, true);
    let permission = caller.permission();
    if caller == Caller::Delegated {
        return Check::ok(
            GROUPS,
            format!(
                "a group overage is read from Microsoft Graph (/me/transitiveMemberOf) with each sign-in's own token: the delegated permission {permission}, which app registrations have by default, consented in each user's tenant; no app-only call to prove"
            ),
        );
    }
    let asks = format!(
        "a group overage is read from Microsoft Graph (/users/{{id}}/transitiveMemberOf) app-only: the application permission {permission}, admin-consented in each user's tenant"
    );
    if !verify_secret {
        return Check::skipped(
            GROUPS,
            format!("{asks}; run with --verify-secret to prove it with one Graph call"),
        );
    }
    let Some(d) = d else {
        return Check::skipped(GROUPS, format!("{asks}; needs the metadata"));
    };
    let Ok(endpoint) = verify_endpoint(conn, &d.meta, is_entra, issuer_ok) else {
        return Check::skipped(GROUPS, format!("{asks}; needs a usable token endpoint"));
    };
    let tenant = entra::tenant_segment(&endpoint)
        .unwrap_or("the tenant")
        .to_owned();
    let target = match graph::target(&conn.metadata_url, &d.meta) {
        Ok(t) => t,
        Err(e) => return Check::warning(GROUPS, format!("{asks}; {e}"), "is this IdP Entra ID?"),
    };
    let Some((_, credential)) = token::attempts(conn).into_iter().next() else {
        return Check::skipped(GROUPS, format!("{asks}; needs a credential"));
    };
    let scope = format!("{}/.default", target.resource);
    let issued = token::client_credentials_token(
        http,
        &credentials_request(conn, &d.meta, endpoint.as_str(), credential, Some(&scope)),
    )
    .await;
    let token = match issued {
        Ok(t) => t.access_token,
        Err(e) => return judge_groups(GraphAnswer::NoToken(e), &tenant, permission),
    };
    let url = match graph::first_page(&target.base, Who::User(NO_USER)) {
        Ok(u) => u,
        Err(e) => return Check::warning(GROUPS, format!("{asks}; {e}"), "report this"),
    };
    let answer = http
        .send_for_json_with_headers(
            http.inner()
                .get(url)
                .bearer_auth(token.expose_secret())
                .header("ConsistencyLevel", "eventual"),
        )
        .await;
    let answer = match answer {
        Ok((status, _, body)) => GraphAnswer::Status(status.as_u16(), body),
        Err(e) => GraphAnswer::Transport(e),
    };
    judge_groups(answer, &tenant, permission)
}

/// What Graph (or the token endpoint before it) answered.
pub(super) enum GraphAnswer {
    NoToken(TokenError),
    Transport(FetchError),
    Status(u16, Vec<u8>),
}

/// Pure: the verdict on [`verify_groups`]'s call.
pub(super) fn judge_groups(answer: GraphAnswer, tenant: &str, permission: &str) -> Check {
    let fix = format!(
        "add the application permission {permission} (Microsoft Graph) to the app registration and grant admin consent in tenant {tenant} (Enterprise applications → Permissions); each customer tenant's admin must consent too"
    );
    match answer {
        GraphAnswer::Status(200 | 404, _) => Check::ok(
            GROUPS,
            format!(
                "Microsoft Graph accepts the app-only call in tenant {tenant}: {permission} is granted"
            ),
        ),
        GraphAnswer::Status(403, body) => Check::error(
            GROUPS,
            format!(
                "Microsoft Graph refused the app-only call in tenant {tenant} ({}): overage sign-ins will fail",
                graph::classify(403, None, &body)
            ),
            fix,
        ),
        GraphAnswer::Status(status, body) => Check::warning(
            GROUPS,
            format!("could not verify: {}", graph::classify(status, None, &body)),
            "sign in once with a user in more than 200 groups",
        ),
        GraphAnswer::Transport(e) => Check::error(
            GROUPS,
            format!("Microsoft Graph could not be used: {e}"),
            "check that this host can reach Microsoft Graph (DNS, firewall, HTTPS_PROXY); overage sign-ins need it",
        ),
        GraphAnswer::NoToken(e) => Check::error(
            GROUPS,
            format!("no app-only token for Microsoft Graph from tenant {tenant}: {e}"),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    const TID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";

    #[test]
    fn a_403_names_the_application_permission_and_the_tenant() {
        let body = include_bytes!("../../tests/fixtures/entra/graph.error.403.json").to_vec();
        let check = judge_groups(GraphAnswer::Status(403, body), TID, "User.Read.All");
        assert_eq!(check.status, Status::Error);
        assert!(
            check.message.contains("Authorization_RequestDenied"),
            "{}",
            check.message
        );
        let fix = check.fix.unwrap_or_default();
        assert!(fix.contains("User.Read.All") && fix.contains(TID), "{fix}");
        // Graph looked the (nonexistent) user up: the permission is there.
        let ok = judge_groups(GraphAnswer::Status(404, Vec::new()), TID, "User.Read.All");
        assert_eq!(ok.status, Status::Ok);
        let throttled = judge_groups(GraphAnswer::Status(429, Vec::new()), TID, "User.Read.All");
        assert_eq!(throttled.status, Status::Warning);
    }
}
