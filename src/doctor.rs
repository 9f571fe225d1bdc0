//! `entrance check`, the setup doctor: per connection, one judged line per check (metadata,
//! issuer, signing keys, client ID, secret and secret expiry — or, for a certificate
//! credential, the certificate and its expiry —, redirect URI and, when asked, the
//! credentials themselves), each failure with its fix; rendered for people or as JSON.
//!
//! The network calls live in [`check`] and its helpers; every verdict is a pure `judge_…`
//! function over what was fetched, so most of the doctor is tested without sockets.

use secrecy::ExposeSecret;
use serde::Serialize;
use time::OffsetDateTime;
use url::Url;

use crate::expiry::{Expiry, RENEW_CERTIFICATE};
use crate::{
    certificate::CertificateCredential,
    config::{
        ClientCredential, ConfigError, ConnectionConfig, LenientConfig, SECRET_ID_FIX,
        SECRET_ID_PROBLEM, SecretAsRead,
    },
    entra,
    oidc::http_client::{FetchError, HttpClient},
    oidc::provider::{self, Metadata, ProviderError},
    oidc::token::{self, ClientCredentials, TokenError},
    oidc::verifier::IssuerPolicy,
};

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
pub const CREDENTIALS: &str = "credentials";
pub const USERINFO: &str = "userinfo";

/// Entra's default `--verify-secret` scope: every confidential client may ask for an app-only
/// Graph token (`.default` needs no granted permission to be issued).
const DEFAULT_GRAPH_HOST: &str = "graph.microsoft.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
    /// Not run: not asked for, or a check it depends on failed.
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }
    fn skipped(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Skipped,
            message: message.into(),
            fix: None,
        }
    }
    fn warning(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warning,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    fn error(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Error,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    pub id: String,
    pub name: String,
    pub checks: Vec<Check>,
}

impl ConnectionReport {
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub connections: Vec<ConnectionReport>,
}

impl Report {
    /// True when no check is an error. Warnings and skipped checks pass: "could not verify"
    /// or "expires in 20 days" must not fail a deployment pipeline.
    pub fn passed(&self) -> bool {
        self.count(Status::Error) == 0
    }

    fn count(&self, status: Status) -> usize {
        self.connections
            .iter()
            .flat_map(|c| &c.checks)
            .filter(|c| c.status == status)
            .count()
    }

    /// `{"passed": bool, "connections": [{"id", "name", "checks": [{"name", "status",
    /// "message", "fix"}]}]}`, pretty-printed, members in that order.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            passed: bool,
            connections: &'a [ConnectionReport],
        }
        serde_json::to_string_pretty(&Json {
            passed: self.passed(),
            connections: &self.connections,
        })
    }

    /// One line per check, the fix indented under each warning and error, then a summary.
    pub fn render(&self) -> String {
        const STATUS_WIDTH: usize = 8;
        const NAME_WIDTH: usize = 14;
        let mut out = String::new();
        for conn in &self.connections {
            if conn.name == conn.id {
                out.push_str(&format!("{}\n", conn.id));
            } else {
                out.push_str(&format!("{} ({})\n", conn.id, conn.name));
            }
            for check in &conn.checks {
                out.push_str(&format!(
                    "  {:STATUS_WIDTH$}{:NAME_WIDTH$}{}\n",
                    check.status.label(),
                    check.name,
                    check.message
                ));
                if let Some(fix) = &check.fix {
                    out.push_str(&format!(
                        "  {:w$}fix: {fix}\n",
                        "",
                        w = STATUS_WIDTH + NAME_WIDTH
                    ));
                }
            }
            out.push('\n');
        }
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "{} checked: {}, {}{}\n",
            plural(self.connections.len(), "connection"),
            plural(self.count(Status::Error), "error"),
            plural(self.count(Status::Warning), "warning"),
            if self.passed() { "" } else { " — not ready" },
        ));
        out
    }
}

/// `--connection ID` names no configured connection.
#[derive(Debug, thiserror::Error)]
#[error("no connection has the id {id:?}; the configured ids are: {}", .known.join(", "))]
pub struct UnknownConnection {
    pub id: String,
    pub known: Vec<String>,
}

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
    if conn.userinfo {
        checks.push(judge_userinfo(discovered.as_ref().map(|d| &d.meta)));
    }
    ConnectionReport {
        id: conn.id.clone(),
        name: conn.name.clone(),
        checks,
    }
}

/// `userinfo = true` needs a `userinfo_endpoint` in the metadata; without one every sign-in
/// would fail.
fn judge_userinfo(meta: Option<&Metadata>) -> Check {
    match meta.map(|m| m.userinfo_endpoint.as_deref()) {
        None => Check::skipped(USERINFO, "needs the metadata"),
        Some(Some(url)) => Check::ok(USERINFO, format!("the IdP publishes {url}")),
        Some(None) => Check::error(
            USERINFO,
            "userinfo = true, but the metadata publishes no userinfo_endpoint: every sign-in would fail",
            "remove userinfo = true from this connection",
        ),
    }
}

/// One check from several secrets' checks: the worst (error, then warning), its message naming
/// the secret; all ok → one ok line naming them all.
fn worst(checks: Vec<(&str, Check)>) -> Check {
    let rank = |s: Status| match s {
        Status::Error => 3,
        Status::Warning => 2,
        Status::Skipped => 1,
        Status::Ok => 0,
    };
    let all_ok = checks.iter().all(|(_, c)| c.status == Status::Ok);
    let labels = checks
        .iter()
        .map(|(l, _)| *l)
        .collect::<Vec<_>>()
        .join(", ");
    let Some((label, mut check)) = checks.into_iter().max_by_key(|(_, c)| rank(c.status)) else {
        return Check::skipped(SECRET, "no client secret was read");
    };
    check.message = if all_ok {
        format!("{} ({labels})", check.message)
    } else {
        format!("{label}: {}", check.message)
    };
    check
}

fn secret_usable(secret: &SecretAsRead) -> bool {
    secret
        .value
        .as_ref()
        .is_ok_and(|s| !s.expose_secret().trim().is_empty())
}

/// Reachable, JSON, an OpenID metadata document, every endpoint https.
fn judge_metadata(
    conn: &ConnectionConfig,
    fetched: Result<serde_json::Value, FetchError>,
) -> (Check, Option<Discovered>) {
    let url = conn.metadata_url.as_str();
    let doc = match fetched {
        Ok(doc) => doc,
        Err(e) => return (metadata_fetch_failure(conn, &e), None),
    };
    let meta: Metadata = match serde_json::from_value(doc.clone()) {
        Ok(m) => m,
        Err(e) => {
            return (
                Check::error(
                    METADATA,
                    format!("{url} is not an OpenID metadata document ({e})"),
                    "paste the \"OpenID Connect metadata document\" URL from the app registration's Endpoints blade",
                ),
                None,
            );
        }
    };
    if let Err(e) = provider::check_endpoints(&meta) {
        return (
            Check::error(
                METADATA,
                e.to_string(),
                "entrance calls only https endpoints (http only on loopback): ask the IdP's admin, or use the IdP's https metadata URL",
            ),
            None,
        );
    }
    let graph_host = doc
        .get("msgraph_host")
        .and_then(|v| v.as_str())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .map(str::to_owned);
    let discovered = Discovered {
        meta,
        entra_shaped: doc.get("cloud_instance_name").is_some(),
        graph_host,
    };
    (
        Check::ok(METADATA, format!("{url} is reachable and valid")),
        Some(discovered),
    )
}

fn metadata_fetch_failure(conn: &ConnectionConfig, e: &FetchError) -> Check {
    let url = conn.metadata_url.as_str();
    let host = conn.metadata_url.host_str().unwrap_or("the IdP");
    // Entra answers a wrong tenant with a JSON error carrying its AADSTS code (90002).
    if let FetchError::Status { body, .. } = e
        && let Some(row) = body
            .find("AADSTS")
            .and_then(|at| entra::aadsts_code(&body[at..]))
            .and_then(entra::aadsts)
    {
        return Check::error(
            METADATA,
            format!(
                "fetching {url} failed: AADSTS{}: {}",
                row.code,
                first_sentence(&row.meaning)
            ),
            row.fix.clone(),
        );
    }
    let fix = match e {
        FetchError::Connect(_) | FetchError::Timeout(_) | FetchError::Other(_) => format!(
            "check that this host can reach {host} (DNS, firewall, proxy) and that the URL is right"
        ),
        FetchError::Status { status: 404, .. } | FetchError::InvalidJson(_) | FetchError::NotJsonContentType(_) => {
            "paste the \"OpenID Connect metadata document\" URL from the app registration's Endpoints blade"
                .to_owned()
        }
        FetchError::Redirect(_) => {
            "use the URL the redirect points to (entrance follows no redirects)".to_owned()
        }
        _ => format!("check the URL and that {host} is up"),
    };
    Check::error(METADATA, format!("fetching {url} failed: {e}"), fix)
}

/// Entra's table rows read "Meaning (Name): detail"; the first sentence is enough on a line.
fn first_sentence(text: &str) -> &str {
    text.split(". ")
        .next()
        .unwrap_or(text)
        .trim_end_matches('.')
}

fn judge_issuer(meta: &Metadata, conn: &ConnectionConfig) -> Check {
    match provider::check_issuer(meta, conn) {
        Ok(IssuerPolicy::Exact(_)) => {
            Check::ok(ISSUER, format!("{} matches the metadata URL", meta.issuer))
        }
        Ok(IssuerPolicy::EntraTemplate { .. }) => Check::ok(
            ISSUER,
            format!(
                "{} is the multi-tenant template of the metadata URL; each token's iss is checked against its tid",
                meta.issuer
            ),
        ),
        Err(ProviderError::IssuerMismatch {
            expected,
            actual,
            advice,
        }) => Check::error(
            ISSUER,
            format!("the metadata publishes issuer {actual:?}, but its URL implies {expected:?}"),
            advice,
        ),
        Err(e) => Check::error(
            ISSUER,
            e.to_string(),
            entra::issuer_mismatch_advice(&conn.metadata_url),
        ),
    }
}

fn judge_jwks(jwks_uri: &str, keys: Result<crate::oidc::jwks::KeySet, ProviderError>) -> Check {
    match keys {
        Ok(keys) => {
            let n = keys.len();
            Check::ok(
                JWKS,
                format!(
                    "{n} usable signing key{} at {jwks_uri}",
                    if n == 1 { "" } else { "s" }
                ),
            )
        }
        Err(ProviderError::BadJwks(reason)) => Check::error(
            JWKS,
            format!("the signing keys at {jwks_uri} are unusable: {reason}"),
            "the IdP must publish at least one RSA or EC signature key (use \"sig\"); ask its admin, or check that jwks_uri in the metadata points at the key set",
        ),
        Err(e) => Check::error(
            JWKS,
            e.to_string(),
            "check that this host can reach the jwks_uri the metadata names (DNS, firewall, proxy)",
        ),
    }
}

fn judge_client_id(conn: &ConnectionConfig, is_entra: bool) -> Check {
    const FIX: &str = "paste the Application (client) ID from the app registration's Overview page";
    let id = &conn.client_id;
    if id.is_empty() {
        return Check::error(CLIENT_ID, "the client ID is empty", FIX);
    }
    if !is_entra {
        return Check::ok(
            CLIENT_ID,
            format!("{id} (not recognised as Entra, so no GUID rule applies)"),
        );
    }
    if !entra::is_guid(id) {
        return Check::error(
            CLIENT_ID,
            format!("{id:?} is not a GUID, and Entra client IDs always are"),
            FIX,
        );
    }
    // The Directory (tenant) ID sits right beside the client ID on the Overview page.
    let tenant = entra::tenant_segment(&conn.metadata_url);
    if tenant.is_some_and(|t| t.eq_ignore_ascii_case(id))
        || conn
            .home_tenant
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(id))
    {
        return Check::error(
            CLIENT_ID,
            format!("{id} is the Directory (tenant) ID, not the Application (client) ID"),
            FIX,
        );
    }
    Check::ok(
        CLIENT_ID,
        format!("{id} is a GUID, as Entra client IDs are"),
    )
}

fn judge_secret(secret: &SecretAsRead, is_entra: bool) -> Check {
    let value = match &secret.value {
        Ok(v) => v.expose_secret(),
        Err(ConfigError::Invalid { key, problem, fix }) => {
            return Check::error(SECRET, format!("`{key}`: {problem}"), fix.clone());
        }
        Err(e) => {
            return Check::error(SECRET, e.to_string(), "fix the configuration file");
        }
    };
    let source = &secret.source;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Check::error(
            SECRET,
            format!("the client secret from {source} is empty"),
            "set it to the secret's Value from Certificates & secrets",
        );
    }
    if entra::is_guid(trimmed) {
        return if is_entra {
            Check::error(
                SECRET,
                format!("{SECRET_ID_PROBLEM} (from {source})"),
                SECRET_ID_FIX,
            )
        } else {
            Check::warning(
                SECRET,
                format!("the client secret from {source} looks like a GUID"),
                "if this IdP shows a secret ID beside the secret, make sure the secret itself was pasted",
            )
        };
    }
    if trimmed.len() != value.len() {
        return Check::warning(
            SECRET,
            format!(
                "the client secret from {source} starts or ends with whitespace; entrance trims it, but the value may have been copied with more (or less) than the secret"
            ),
            "store the secret's Value without surrounding spaces or newlines",
        );
    }
    Check::ok(
        SECRET,
        format!(
            "present ({} characters, from {source})",
            trimmed.chars().count()
        ),
    )
}

fn judge_certificate(cert: &CertificateCredential) -> Check {
    Check::ok(
        CERTIFICATE,
        format!(
            "present: {}, thumbprint {} (x5t#S256 {}); the key matches; {} client assertions (private_key_jwt)",
            cert.subject,
            cert.thumbprint_hex,
            cert.x5t_s256,
            cert.alg.as_str()
        ),
    )
}

/// Like [`judge_expiry`], from the certificate's own notBefore/notAfter.
fn judge_certificate_expiry(cert: &CertificateCredential, now: OffsetDateTime) -> Check {
    let date = cert.not_after.date();
    let expiry = Expiry::judge(cert.not_after, now);
    if let Expiry::Expired { days } = expiry {
        return Check::error(
            CERTIFICATE_EXPIRY,
            format!(
                "the certificate expired on {date} ({} days ago); Entra refuses its assertions (AADSTS700027)",
                -days
            ),
            RENEW_CERTIFICATE,
        );
    }
    if cert.not_before > now {
        return Check::warning(
            CERTIFICATE_EXPIRY,
            format!(
                "the certificate is not valid before {}",
                cert.not_before.date()
            ),
            "wait, or check this host's clock",
        );
    }
    match expiry {
        Expiry::Soon { days } => Check::warning(
            CERTIFICATE_EXPIRY,
            format!("the certificate expires on {date}, in {days} days"),
            RENEW_CERTIFICATE,
        ),
        Expiry::Expired { days } | Expiry::Later { days } => Check::ok(
            CERTIFICATE_EXPIRY,
            format!("the certificate expires on {date}, in {days} days"),
        ),
    }
}

fn judge_expiry(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Check {
    let Some(at) = expires_at else {
        return Check::skipped(
            SECRET_EXPIRY,
            "client_secret_expires_at is not set; set it to the secret's Expires date to be warned before it expires",
        );
    };
    let date = at.date();
    let days = match Expiry::judge(at, now) {
        Expiry::Expired { days } => days,
        Expiry::Soon { days } => {
            return Check::warning(
                SECRET_EXPIRY,
                format!(
                    "the client secret expires on {date}, {}",
                    match days {
                        0 => "within a day".to_owned(),
                        1 => "in 1 day".to_owned(),
                        n => format!("in {n} days"),
                    }
                ),
                "create a new secret now (an app may hold several), deploy it and update client_secret_expires_at, then delete the old one",
            );
        }
        Expiry::Later { days } => {
            return Check::ok(
                SECRET_EXPIRY,
                format!("the client secret expires on {date}, in {days} days"),
            );
        }
    };
    {
        let fix = entra::aadsts(7000222)
            .map(|r| r.fix.clone())
            .unwrap_or_else(|| {
                "create a new secret, update the configuration, then delete the expired one"
                    .to_owned()
            });
        Check::error(
            SECRET_EXPIRY,
            format!(
                "the client secret expired on {date} ({} days ago); sign-ins fail with AADSTS7000222",
                -days
            ),
            fix,
        )
    }
}

fn judge_redirect_uri(public_url: &Url, redirect_uri: &str) -> Check {
    let register = format!(
        "register exactly {redirect_uri} (App registrations → Authentication → Web → Redirect URIs)"
    );
    if public_url.scheme() == "https" {
        Check::ok(REDIRECT_URI, register)
    } else {
        Check::warning(
            REDIRECT_URI,
            format!(
                "{register}; the public URL is plain http: Entra accepts that only for localhost, and the session cookie cannot be Secure"
            ),
            "use an https public_url for anything but local testing (terminate TLS in a proxy if needed)",
        )
    }
}

/// Where the client-credentials request goes, or why it cannot be sent.
fn verify_endpoint(
    conn: &ConnectionConfig,
    meta: &Metadata,
    is_entra: bool,
    issuer_ok: bool,
) -> Result<Url, Check> {
    let mut endpoint = Url::parse(&meta.token_endpoint).map_err(|e| {
        Check::skipped(
            CREDENTIALS,
            format!(
                "the token endpoint {:?} is not a URL ({e})",
                meta.token_endpoint
            ),
        )
    })?;
    // A document that failed the issuer check is not trusted with the secret, unless its
    // token endpoint is on the host the admin configured anyway.
    let same_host = endpoint.host_str() == conn.metadata_url.host_str()
        && endpoint.port_or_known_default() == conn.metadata_url.port_or_known_default();
    if !issuer_ok && !same_host {
        return Err(Check::skipped(
            CREDENTIALS,
            "not sent: the metadata failed the issuer check and names a token endpoint on another host",
        ));
    }
    if !is_entra {
        return Ok(endpoint);
    }
    match entra::tenant_segment(&conn.metadata_url) {
        Some("consumers") => Err(Check::warning(
            CREDENTIALS,
            "could not verify: the consumers authority (personal Microsoft accounts) has no client-credentials grant",
            "sign in once to prove the secret",
        )),
        Some(multi @ ("common" | "organizations")) => {
            let Some(home) = &conn.home_tenant else {
                return Err(Check::warning(
                    CREDENTIALS,
                    format!(
                        "could not verify: the client-credentials grant needs a tenant, and a {multi} connection names none"
                    ),
                    "set home_tenant to the Directory (tenant) ID of the tenant the app is registered in",
                ));
            };
            let replaced = endpoint
                .path_segments()
                .and_then(|mut s| s.next())
                .is_some_and(|first| first == multi);
            if replaced {
                let rest: Vec<String> = endpoint
                    .path_segments()
                    .map(|s| s.skip(1).map(str::to_owned).collect())
                    .unwrap_or_default();
                if let Ok(mut segments) = endpoint.path_segments_mut() {
                    segments.clear().push(home).extend(rest);
                }
            }
            Ok(endpoint)
        }
        _ => Ok(endpoint),
    }
}

async fn verify_credentials(
    conn: &ConnectionConfig,
    d: &Discovered,
    is_entra: bool,
    issuer_ok: bool,
    http: &HttpClient,
) -> Check {
    let endpoint = match verify_endpoint(conn, &d.meta, is_entra, issuer_ok) {
        Ok(e) => e,
        Err(check) => return check,
    };
    let scope = verify_scope(conn, is_entra, d.graph_host.as_deref());
    let tenant = is_entra
        .then(|| entra::tenant_segment(&endpoint).map(str::to_owned))
        .flatten();
    let what = match conn.credential {
        ClientCredential::Secrets(_) => "secret",
        ClientCredential::Certificate(_) => "certificate",
    };
    // Every secret of a rotation is proven on its own: the old one may already be gone.
    let mut checks = Vec::new();
    for (label, credential) in crate::oidc::token::attempts(&conn.credential) {
        let result = token::client_credentials(
            http,
            &ClientCredentials {
                token_endpoint: endpoint.as_str(),
                client_id: &conn.client_id,
                credential,
                client_auth: conn
                    .client_auth
                    .unwrap_or_else(|| provider::pick_client_auth(&d.meta)),
                scope: scope.as_deref(),
            },
        )
        .await;
        let check = judge_credentials(
            result,
            &conn.client_id,
            tenant.as_deref(),
            scope.as_deref(),
            what,
        );
        checks.push((label.unwrap_or(what), check));
    }
    if checks.len() == 1 {
        return checks.remove(0).1;
    }
    worst(checks)
}

/// `verify_scope`, else Graph's `.default` for Entra, else none (the IdP's default scope:
/// `openid` means nothing to a client-credentials grant and some IdPs refuse it).
fn verify_scope(
    conn: &ConnectionConfig,
    is_entra: bool,
    graph_host: Option<&str>,
) -> Option<String> {
    conn.verify_scope.clone().or_else(|| {
        is_entra.then(|| {
            format!(
                "https://{}/.default",
                graph_host.unwrap_or(DEFAULT_GRAPH_HOST)
            )
        })
    })
}

/// Translates the token endpoint's answer. Entra's codes first (its `unauthorized_client`
/// can mean AADSTS700016, an unknown client); then the OAuth errors that say only that this
/// client may not use the grant, which prove nothing either way.
fn judge_credentials(
    result: Result<(), TokenError>,
    client_id: &str,
    tenant: Option<&str>,
    scope: Option<&str>,
    what: &str,
) -> Check {
    let table_fix = |code: u32, fallback: &str| {
        entra::aadsts(code)
            .map(|r| r.fix.clone())
            .unwrap_or_else(|| fallback.to_owned())
    };
    let tenant_text = tenant.map(|t| format!(" {t}")).unwrap_or_default();
    let error = match result {
        Ok(()) => {
            let scope = scope.map(|s| format!(" for {s}")).unwrap_or_default();
            return Check::ok(
                CREDENTIALS,
                format!(
                    "the IdP issued a client-credentials token{scope}: the client ID and {what} are right"
                ),
            );
        }
        Err(TokenError::Transport(e)) => {
            return Check::error(
                CREDENTIALS,
                format!("the token endpoint could not be used: {e}"),
                "check that this host can reach the token endpoint (DNS, firewall, proxy); sign-ins need it too",
            );
        }
        Err(TokenError::Refused { error, .. }) => error,
        Err(other) => {
            return Check::warning(
                CREDENTIALS,
                format!("could not verify: {other}"),
                "sign in once to prove the secret",
            );
        }
    };
    match error.aadsts() {
        Some(7000215) => {
            return Check::error(
                CREDENTIALS,
                "Entra refused the secret (AADSTS7000215): it is wrong. Most often the Secret ID (a GUID) was pasted instead of the secret's Value; or the Value is truncated, or belongs to another app registration",
                table_fix(7000215, SECRET_ID_FIX),
            );
        }
        Some(7000222) => {
            return Check::error(
                CREDENTIALS,
                "Entra says the client secret has expired (AADSTS7000222)",
                table_fix(
                    7000222,
                    "create a new secret, update the configuration, then delete the expired one",
                ),
            );
        }
        Some(700027) => {
            return Check::error(
                CREDENTIALS,
                format!(
                    "Entra refused the client assertion (AADSTS700027): {}",
                    describe(&error)
                ),
                table_fix(
                    700027,
                    "upload the certificate (public part) under Certificates & secrets → Certificates",
                ),
            );
        }
        Some(700016) => {
            return Check::error(
                CREDENTIALS,
                format!(
                    "Entra has no application with client ID {client_id} in the tenant{tenant_text} (AADSTS700016)"
                ),
                table_fix(
                    700016,
                    "check the Application (client) ID and that the tenant is the one the app is registered in",
                ),
            );
        }
        Some(90002) => {
            return Check::error(
                CREDENTIALS,
                format!("Entra does not know the tenant{tenant_text} (AADSTS90002)"),
                table_fix(
                    90002,
                    "use the Directory (tenant) ID GUID from the Overview page",
                ),
            );
        }
        _ => {}
    }
    let said = describe(&error);
    match error.error.as_str() {
        "unsupported_grant_type" | "unauthorized_client" | "access_denied" => Check::warning(
            CREDENTIALS,
            format!(
                "could not verify: the IdP does not let this client use the client-credentials grant ({said})"
            ),
            "nothing to fix for sign-ins; sign in once to prove the secret",
        ),
        "invalid_scope" => Check::warning(
            CREDENTIALS,
            format!("could not verify: the IdP refused the scope ({said})"),
            "set verify_scope to a scope this client may request with the client-credentials grant",
        ),
        "invalid_client" => Check::error(
            CREDENTIALS,
            format!("the IdP refused the client credentials ({said})"),
            "check client_id and the secret against the IdP's client registration",
        ),
        _ => match error.aadsts().and_then(entra::aadsts) {
            Some(row) => Check::error(
                CREDENTIALS,
                format!(
                    "Entra refused the request: AADSTS{}: {}",
                    row.code,
                    first_sentence(&row.meaning)
                ),
                row.fix.clone(),
            ),
            None => Check::warning(
                CREDENTIALS,
                format!("could not verify: the IdP answered {said}"),
                "sign in once to prove the secret",
            ),
        },
    }
}

/// `error: description` with Entra's trace trailer cut off (it is long and only useful to
/// Microsoft support, who get it from the sign-in logs anyway).
fn describe(error: &token::OAuthError) -> String {
    match error.error_description.as_deref() {
        Some(d) if !d.is_empty() => {
            let d = d.split(" Trace ID:").next().unwrap_or(d).trim();
            format!("{}: {d}", error.error)
        }
        _ => error.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;
    use secrecy::SecretString;
    use time::macros::datetime;

    const TENANT: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
    const CLIENT: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";

    fn conn(metadata_url: &str) -> ConnectionConfig {
        ConnectionConfig::for_tests(metadata_url)
    }

    fn entra_conn(tenant: &str) -> ConnectionConfig {
        conn(&format!(
            "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
        ))
    }

    #[test]
    fn userinfo_needs_an_endpoint_in_the_metadata() {
        let mut meta = fixture("tenant");
        let ok = judge_userinfo(Some(&meta));
        assert_eq!(ok.status, Status::Ok);
        assert!(
            ok.message
                .contains("https://graph.microsoft.com/oidc/userinfo"),
            "{}",
            ok.message
        );
        meta.userinfo_endpoint = None;
        let missing = judge_userinfo(Some(&meta));
        assert_eq!(missing.status, Status::Error);
        assert!(
            missing
                .fix
                .as_deref()
                .is_some_and(|f| f.contains("remove userinfo = true"))
        );
        assert_eq!(judge_userinfo(None).status, Status::Skipped);
    }

    fn fixture(name: &str) -> Metadata {
        let text = match name {
            "common" => include_str!("../tests/fixtures/entra/openid-configuration.common.json"),
            _ => include_str!("../tests/fixtures/entra/openid-configuration.tenant.json"),
        };
        serde_json::from_str(text).expect("fixture parses")
    }

    fn read(source: SecretSource, value: &str) -> SecretAsRead {
        SecretAsRead {
            source,
            label: "client_secret".into(),
            value: Ok(SecretString::from(value)),
        }
    }

    fn refused(error: &str, code: Option<u32>) -> Result<(), TokenError> {
        Err(TokenError::Refused {
            status: 400,
            error: token::OAuthError {
                error: error.into(),
                error_description: code.map(|c| format!("AADSTS{c}: text. Trace ID: x")),
                error_codes: code.into_iter().collect(),
                trace_id: None,
                correlation_id: None,
            },
        })
    }

    #[test]
    fn secret_judgement() {
        let entra = |v: &str| judge_secret(&read(SecretSource::Inline, v), true).status;
        assert_eq!(
            entra("bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR"),
            Status::Ok
        );
        assert_eq!(entra("c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f"), Status::Error);
        assert_eq!(
            entra(" bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR\n"),
            Status::Warning
        );
        assert_eq!(entra("   "), Status::Error);
        let other = judge_secret(
            &read(
                SecretSource::Env("S".into()),
                "c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f",
            ),
            false,
        );
        assert_eq!(other.status, Status::Warning);
        assert!(
            other.message.contains("environment variable S"),
            "{}",
            other.message
        );
        let missing = SecretAsRead {
            source: SecretSource::Unknown,
            label: "client_secret".into(),
            value: Err(ConfigError::Invalid {
                key: "connections[0].client_secret_env".into(),
                problem: "no client secret is configured".into(),
                fix: "set it".into(),
            }),
        };
        let c = judge_secret(&missing, true);
        assert_eq!(c.status, Status::Error);
        assert!(c.message.contains("client_secret_env"));
    }

    #[test]
    fn the_secret_value_is_never_printed() {
        let s = "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR";
        for v in [s.to_owned(), format!(" {s} ")] {
            let c = judge_secret(&read(SecretSource::Inline, &v), true);
            assert!(!c.message.contains(s) && !c.fix.unwrap_or_default().contains(s));
        }
    }

    #[test]
    fn client_id_judgement() {
        assert_eq!(
            judge_client_id(&entra_conn(TENANT), true).status,
            Status::Ok
        );
        let mut c = entra_conn(TENANT);
        c.client_id = "my-app".into();
        assert_eq!(judge_client_id(&c, true).status, Status::Error);
        assert_eq!(judge_client_id(&c, false).status, Status::Ok);
        c.client_id = TENANT.into();
        let check = judge_client_id(&c, true);
        assert_eq!(check.status, Status::Error);
        assert!(check.message.contains("tenant"), "{}", check.message);
        c.client_id = String::new();
        assert_eq!(judge_client_id(&c, false).status, Status::Error);
    }

    #[test]
    fn expiry_judgement() {
        let now = datetime!(2026-06-01 12:00 UTC);
        assert_eq!(judge_expiry(None, now).status, Status::Skipped);
        assert_eq!(
            judge_expiry(Some(datetime!(2027-01-01 0:00 UTC)), now).status,
            Status::Ok
        );
        let soon = judge_expiry(Some(datetime!(2026-06-15 0:00 UTC)), now);
        assert_eq!(soon.status, Status::Warning);
        assert!(soon.message.contains("in 13 days"), "{}", soon.message);
        // Exactly 30 days ahead is no longer "within 30 days".
        assert_eq!(
            judge_expiry(Some(datetime!(2026-07-01 12:00 UTC)), now).status,
            Status::Ok
        );
        let past = judge_expiry(Some(datetime!(2026-05-01 0:00 UTC)), now);
        assert_eq!(past.status, Status::Error);
        assert!(past.message.contains("2026-05-01"), "{}", past.message);
        assert_eq!(judge_expiry(Some(now), now).status, Status::Error);
    }

    #[test]
    fn redirect_uri_judgement() {
        let https = Url::parse("https://sso.example.com").expect("url");
        let c = judge_redirect_uri(&https, "https://sso.example.com/login/callback");
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("https://sso.example.com/login/callback"));
        let http = Url::parse("http://localhost:3000").expect("url");
        assert_eq!(
            judge_redirect_uri(&http, "http://localhost:3000/login/callback").status,
            Status::Warning
        );
    }

    #[test]
    fn jwks_without_usable_keys_is_an_error() {
        let keys =
            crate::oidc::jwks::KeySet::from_jwks_json(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#)
                .map_err(|e| ProviderError::BadJwks(e.to_string()));
        let c = judge_jwks("https://idp/keys", keys);
        assert_eq!(c.status, Status::Error);
        assert!(c.message.contains("no usable"), "{}", c.message);
    }

    #[test]
    fn multi_tenant_verification_goes_to_the_home_tenant() {
        let mut c = entra_conn("organizations");
        let mut meta = fixture("common");
        meta.token_endpoint =
            "https://login.microsoftonline.com/organizations/oauth2/v2.0/token".into();
        let missing = verify_endpoint(&c, &meta, true, false).expect_err("needs home_tenant");
        assert_eq!(missing.status, Status::Warning);
        assert!(missing.fix.unwrap_or_default().contains("home_tenant"));
        c.home_tenant = Some(TENANT.into());
        let url = verify_endpoint(&c, &meta, true, false).expect("endpoint");
        assert_eq!(
            url.as_str(),
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
        let tenant = entra_conn(TENANT);
        let url = verify_endpoint(&tenant, &fixture("tenant"), true, true).expect("endpoint");
        assert_eq!(url.as_str(), fixture("tenant").token_endpoint);
    }

    #[test]
    fn a_mismatched_document_gets_no_secret_for_another_host() {
        let c = conn("https://idp.example.org/.well-known/openid-configuration");
        let mut meta = fixture("tenant");
        meta.token_endpoint = "https://elsewhere.example.net/token".into();
        assert!(verify_endpoint(&c, &meta, false, false).is_err());
        assert!(verify_endpoint(&c, &meta, false, true).is_ok());
    }

    #[test]
    fn verify_scope_defaults() {
        let c = entra_conn(TENANT);
        assert_eq!(
            verify_scope(&c, true, None).as_deref(),
            Some("https://graph.microsoft.com/.default")
        );
        assert_eq!(
            verify_scope(&c, true, Some("graph.microsoft.us")).as_deref(),
            Some("https://graph.microsoft.us/.default")
        );
        assert_eq!(verify_scope(&c, false, None), None);
        let mut c = c;
        c.verify_scope = Some("api://x/.default".into());
        assert_eq!(
            verify_scope(&c, false, None).as_deref(),
            Some("api://x/.default")
        );
    }

    #[test]
    fn credentials_translation() {
        let j = |r| judge_credentials(r, CLIENT, Some(TENANT), None, "secret");
        assert_eq!(j(Ok(())).status, Status::Ok);
        let wrong = j(refused("invalid_client", Some(7000215)));
        assert_eq!(wrong.status, Status::Error);
        assert!(wrong.message.contains("Secret ID"), "{}", wrong.message);
        assert!(
            j(refused("invalid_client", Some(7000222)))
                .message
                .contains("expired")
        );
        let unknown = j(refused("unauthorized_client", Some(700016)));
        assert_eq!(unknown.status, Status::Error);
        assert!(unknown.message.contains(CLIENT) && unknown.message.contains(TENANT));
        assert_eq!(
            j(refused("invalid_request", Some(90002))).status,
            Status::Error
        );
        for e in ["unsupported_grant_type", "unauthorized_client"] {
            let c = j(refused(e, None));
            assert_eq!(c.status, Status::Warning, "{e}");
            assert!(c.message.starts_with("could not verify"), "{}", c.message);
        }
        assert_eq!(j(refused("invalid_scope", None)).status, Status::Warning);
        assert_eq!(j(refused("invalid_client", None)).status, Status::Error);
        assert_eq!(j(refused("server_error", None)).status, Status::Warning);
        assert_eq!(
            j(Err(TokenError::Transport(FetchError::Connect(
                "refused".into()
            ))))
            .status,
            Status::Error
        );
    }

    #[test]
    fn render_puts_fixes_under_failures_and_passed_ignores_warnings() {
        let report = Report {
            connections: vec![ConnectionReport {
                id: "c".into(),
                name: "Contoso".into(),
                checks: vec![
                    Check::ok(METADATA, "fine"),
                    Check::warning(REDIRECT_URI, "plain http", "use https"),
                ],
            }],
        };
        assert!(report.passed());
        let text = report.render();
        assert!(
            text.starts_with("c (Contoso)\n  ok      metadata      fine\n"),
            "{text}"
        );
        assert!(
            text.contains("\n                        fix: use https\n"),
            "{text}"
        );
        assert!(
            text.contains("1 connection checked: 0 errors, 1 warning"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json().expect("serialises")).expect("JSON");
        assert_eq!(json["passed"], true);
        assert_eq!(json["connections"][0]["checks"][1]["status"], "warning");
        assert_eq!(
            json["connections"][0]["checks"][0]["fix"],
            serde_json::Value::Null
        );
    }
}
