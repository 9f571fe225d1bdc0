//! `entrance check`, the setup doctor: per connection, one judged line per check (metadata,
//! issuer, signing keys, client ID, secret and secret expiry — or, for a certificate
//! credential, the certificate and its expiry —, redirect URI and, when asked, the
//! credentials themselves; the Graph permission a group overage needs), each failure with its
//! fix; rendered for people or as JSON.
//!
//! The network calls live in [`check`] and its helpers; every verdict is a pure `judge_…`
//! function over what was fetched, so most of the doctor is tested without sockets.

use time::OffsetDateTime;

use crate::{
    config::{ClientCredential, ConnectionConfig, LenientConfig, SecretAsRead, Userinfo},
    entra,
    oidc::http_client::HttpClient,
    oidc::provider::{self, Metadata},
};

mod checks;
mod groups;
mod report;
#[cfg(test)]
mod tests;

use checks::{
    judge_certificate, judge_certificate_expiry, judge_client_id, judge_expiry, judge_issuer,
    judge_jwks, judge_metadata, judge_redirect_uri, judge_secret, judge_userinfo, secret_usable,
    verify_credentials, verify_upstream, worst,
};
pub use report::{Check, ConnectionReport, Report, Status, UnknownConnection};
/// Check names, as printed and in the JSON.
pub const METADATA: &str = "metadata";
pub const ISSUER: &str = "issuer";
pub const JWKS: &str = "jwks";
pub const CLIENT_ID: &str = "client_id";
pub const SECRET: &str = "secret";
pub const SECRET_EXPIRY: &str = "secret_expiry";
pub const REDIRECT_URI: &str = "redirect_uri";
/// For a certificate credential, in place of [`SECRET`] and [`SECRET_EXPIRY`].
pub const CERTIFICATE: &str = "certificate";
pub const CERTIFICATE_EXPIRY: &str = "cert_expiry";
/// For a federated credential (workload identity), in place of [`SECRET`] and [`SECRET_EXPIRY`].
pub const FEDERATED: &str = "federated";
pub const FEDERATED_EXPIRY: &str = "assertion_expiry";
pub const CREDENTIALS: &str = "credentials";
pub const USERINFO: &str = "userinfo";
/// For a connection with an `api` table: what bearer tokens must carry.
pub const API: &str = "api";
/// For a connection with an `upstream` table: the API its sign-ins ask a token for.
pub const UPSTREAM: &str = "upstream";
/// For a connection with `groups.resolve_overage = true`: the Graph permission overage needs.
pub const GROUPS: &str = "groups";

/// Entra's default `--verify-secret` scope: every confidential client may ask for an app-only
/// Graph token (`.default` needs no granted permission to be issued).
const DEFAULT_GRAPH_HOST: &str = "graph.microsoft.com";

/// Runs every check for every connection (or only `only`). `verify_secret` adds a
/// client-credentials token request per connection; `now` decides secret expiry.
pub async fn check(
    loaded: &LenientConfig,
    only: Option<&str>,
    verify_secret: bool,
    http: &HttpClient,
    now: OffsetDateTime,
) -> Result<Report, UnknownConnection> {
    let config = &loaded.config;
    if let Some(id) = only
        && config.connection(id).is_none()
    {
        return Err(UnknownConnection {
            id: id.to_owned(),
            known: config.connections.iter().map(|c| c.id.clone()).collect(),
        });
    }
    let redirect = judge_redirect_uri(&config.public_url, &config.redirect_uri());
    let runs = config
        .connections
        .iter()
        .zip(&loaded.secrets)
        .filter(|(c, _)| only.is_none_or(|id| c.id == id))
        .map(|(conn, secret)| {
            check_connection(
                conn,
                secret.as_slice(),
                redirect.clone(),
                verify_secret,
                http,
                now,
            )
        });
    // Connections are independent; one slow IdP should not make the others wait.
    let connections = futures_util::future::join_all(runs).await;
    Ok(Report { connections })
}

/// The setup page's checks (issue 17) for a connection built from its form
/// (`config::setup_connection`): the same [`check_connection`] as `entrance check
/// --verify-secret`, one implementation — metadata and issuer, signing keys, client ID,
/// Secret ID vs Value, secret expiry, the redirect URI to register, and a client-credentials
/// request to the tenant proving the ID and the secret.
pub(crate) async fn check_setup(
    conn: &ConnectionConfig,
    secrets: &[SecretAsRead],
    public_url: &url::Url,
    redirect_uri: &str,
    http: &HttpClient,
    now: OffsetDateTime,
) -> ConnectionReport {
    let redirect = judge_redirect_uri(public_url, redirect_uri);
    check_connection(conn, secrets, redirect, true, http, now).await
}

/// The metadata as fetched, with what the doctor reads beyond [`Metadata`].
struct Discovered {
    meta: Metadata,
    /// Entra publishes `cloud_instance_name`; nobody else does. Recognising Entra by its
    /// document as well as its host lets the Entra-specific checks judge the Entra-shaped
    /// mock IdP too.
    entra_shaped: bool,
    /// Entra's Microsoft Graph host for this cloud (`graph.microsoft.us`, …).
    graph_host: Option<String>,
}

async fn check_connection(
    conn: &ConnectionConfig,
    secrets: &[SecretAsRead],
    redirect: Check,
    verify_secret: bool,
    http: &HttpClient,
    now: OffsetDateTime,
) -> ConnectionReport {
    let fetched = http
        .get_json::<serde_json::Value>(conn.metadata_url.as_str())
        .await;
    let (metadata_check, discovered) = judge_metadata(conn, fetched);
    let is_entra = entra::is_entra_url(&conn.metadata_url)
        || discovered.as_ref().is_some_and(|d| d.entra_shaped);

    let (issuer_check, jwks_check) = match &discovered {
        None => (
            Check::skipped(ISSUER, "needs the metadata"),
            Check::skipped(JWKS, "needs the metadata"),
        ),
        Some(d) => {
            let keys = provider::fetch_keys(http, &d.meta.jwks_uri).await;
            (
                judge_issuer(&d.meta, conn),
                judge_jwks(&d.meta.jwks_uri, keys),
            )
        }
    };
    let issuer_ok = issuer_check.status == Status::Ok;
    let client_id_check = judge_client_id(conn, is_entra);
    // A certificate connection has no secret: its checks are the certificate's own.
    let (secret_check, expiry_check, credential_usable) = match (&conn.credential, secrets) {
        (ClientCredential::Certificate(cert), _) => (
            judge_certificate(cert),
            judge_certificate_expiry(cert, now),
            true,
        ),
        (ClientCredential::Federated(federated), _) => {
            let (line, expiry) = checks::judge_federated(federated, is_entra, now).await;
            let usable = line.status != Status::Error;
            (line, expiry, usable)
        }
        (ClientCredential::Secrets(_), [secret]) => (
            judge_secret(secret, is_entra),
            judge_expiry(conn.client_secret_expires_at, now),
            secret_usable(secret),
        ),
        // During a rotation: every secret is judged; the line shows the worst, named.
        (ClientCredential::Secrets(_), [_, _, ..]) => (
            worst(
                secrets
                    .iter()
                    .map(|s| (s.label.as_str(), judge_secret(s, is_entra)))
                    .collect(),
            ),
            judge_expiry(conn.client_secret_expires_at, now),
            secrets.iter().all(secret_usable),
        ),
        (ClientCredential::Secrets(_), []) => (
            Check::error(
                SECRET,
                "no client secret was read",
                "set client_secret_env, client_secret_file or client_secret",
            ),
            judge_expiry(conn.client_secret_expires_at, now),
            false,
        ),
    };

    let credentials_check = if !verify_secret {
        Check::skipped(
            CREDENTIALS,
            "not checked: run with --verify-secret to prove the client ID and secret with a token request",
        )
    } else if conn.client_id.is_empty() || !credential_usable {
        Check::skipped(CREDENTIALS, "needs a client ID and a secret or certificate")
    } else if let Some(d) = &discovered {
        verify_credentials(conn, d, is_entra, issuer_ok, http).await
    } else {
        Check::skipped(CREDENTIALS, "needs the metadata (for the token endpoint)")
    };

    let mut checks = vec![
        metadata_check,
        issuer_check,
        jwks_check,
        client_id_check,
        secret_check,
        expiry_check,
        redirect,
        credentials_check,
    ];
    // Only a connection that asks for userinfo gets the line.
    if conn.userinfo == Userinfo::Always {
        checks.push(judge_userinfo(discovered.as_ref().map(|d| &d.meta)));
    }
    if let Some(api) = &conn.api {
        checks.push(checks::describe_api(api));
    }
    if let Some(upstream) = &conn.upstream {
        checks.push(
            verify_upstream(
                conn,
                upstream,
                discovered.as_ref(),
                is_entra,
                issuer_ok,
                verify_secret && credential_usable && !conn.client_id.is_empty(),
                http,
            )
            .await,
        );
    }
    if conn.groups.resolve_overage {
        checks.push(
            groups::verify_groups(
                conn,
                discovered.as_ref(),
                is_entra,
                issuer_ok,
                verify_secret && credential_usable && !conn.client_id.is_empty(),
                http,
            )
            .await,
        );
    }
    ConnectionReport {
        id: conn.id.clone(),
        name: conn.name.clone(),
        checks,
    }
}
