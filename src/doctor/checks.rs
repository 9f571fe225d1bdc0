//! The judgements: one pure `judge_…` function per check over what was fetched, and the
//! credential proofs (`--verify-secret`) that talk to the token endpoint.

use secrecy::ExposeSecret;
use time::OffsetDateTime;
use url::Url;

use crate::expiry::{Expiry, RENEW_CERTIFICATE};
use crate::{
    certificate::CertificateCredential,
    config::{
        ApiSettings, ClientCredential, ConfigError, ConnectionConfig, SECRET_ID_FIX,
        SECRET_ID_PROBLEM, SecretAsRead, UpstreamSettings,
    },
    entra,
    federated::FederatedAssertion,
    oidc::http_client::{FetchError, HttpClient},
    oidc::provider::{self, Metadata, ProviderError},
    oidc::token::{self, ClientCredentials, TokenError},
    oidc::verifier::IssuerPolicy,
};

use super::{
    CERTIFICATE, CERTIFICATE_EXPIRY, CLIENT_ID, CREDENTIALS, Check, DEFAULT_GRAPH_HOST, Discovered,
    FEDERATED, FEDERATED_EXPIRY, ISSUER, JWKS, METADATA, REDIRECT_URI, SECRET, SECRET_EXPIRY,
    Status, UPSTREAM, USERINFO,
};

/// `userinfo = true` needs a `userinfo_endpoint` in the metadata; without one every sign-in
/// would fail.
pub(super) fn judge_userinfo(meta: Option<&Metadata>) -> Check {
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
pub(super) fn worst(checks: Vec<(&str, Check)>) -> Check {
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

pub(super) fn secret_usable(secret: &SecretAsRead) -> bool {
    secret
        .value
        .as_ref()
        .is_ok_and(|s| !s.expose_secret().trim().is_empty())
}

/// Reachable, JSON, an OpenID metadata document, every endpoint https.
pub(super) fn judge_metadata(
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

pub(super) fn metadata_fetch_failure(conn: &ConnectionConfig, e: &FetchError) -> Check {
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
pub(super) fn first_sentence(text: &str) -> &str {
    text.split(". ")
        .next()
        .unwrap_or(text)
        .trim_end_matches('.')
}

pub(super) fn judge_issuer(meta: &Metadata, conn: &ConnectionConfig) -> Check {
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

pub(super) fn judge_jwks(
    jwks_uri: &str,
    keys: Result<crate::oidc::jwks::KeySet, ProviderError>,
) -> Check {
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

pub(super) fn judge_client_id(conn: &ConnectionConfig, is_entra: bool) -> Check {
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

pub(super) fn judge_secret(secret: &SecretAsRead, is_entra: bool) -> Check {
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

pub(super) fn judge_certificate(cert: &CertificateCredential) -> Check {
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
pub(super) fn judge_certificate_expiry(cert: &CertificateCredential, now: OffsetDateTime) -> Check {
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

pub(super) fn judge_expiry(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Check {
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

pub(super) fn judge_redirect_uri(public_url: &Url, redirect_uri: &str) -> Check {
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
pub(super) fn verify_endpoint(
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

pub(super) async fn verify_credentials(
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
        ClientCredential::Federated(_) => "federated credential",
    };
    // Every secret of a rotation is proven on its own: the old one may already be gone.
    let mut checks = Vec::new();
    for (label, credential) in crate::oidc::token::attempts(conn) {
        let result = token::client_credentials(
            http,
            &credentials_request(
                conn,
                &d.meta,
                endpoint.as_str(),
                credential,
                scope.as_deref(),
            ),
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

/// The client-credentials request every proof of the doctor sends: this connection's client
/// with `credential`, authenticated as configured or as the metadata suggests.
pub(super) fn credentials_request<'a>(
    conn: &'a ConnectionConfig,
    meta: &Metadata,
    endpoint: &'a str,
    credential: token::Credential<'a>,
    scope: Option<&'a str>,
) -> ClientCredentials<'a> {
    ClientCredentials {
        token_endpoint: endpoint,
        client_id: &conn.client_id,
        credential,
        client_auth: conn
            .client_auth
            .unwrap_or_else(|| provider::pick_client_auth(meta)),
        scope,
    }
}

/// `verify_scope`, else Graph's `.default` for Entra, else none (the IdP's default scope:
/// `openid` means nothing to a client-credentials grant and some IdPs refuse it).
pub(super) fn verify_scope(
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
///
/// One piece on purpose: a single ordered `match` from the IdP's answer to one verdict, so
/// which code wins over which is visible in one place (the order is the judgement).
pub(super) fn judge_credentials(
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

/// A federated credential (workload identity): the platform's token as it is now — its `iss`,
/// `sub` and `aud` (what the federated credential on the app registration must equal, exactly)
/// and its expiry. Returns the credential line and the expiry line.
pub(super) async fn judge_federated(
    federated: &FederatedAssertion,
    is_entra: bool,
    now: OffsetDateTime,
) -> (Check, Check) {
    let token = match federated.read().await {
        Ok(t) => t,
        Err(e) => {
            return (
                Check::error(
                    FEDERATED,
                    e.to_string(),
                    "mount the platform's token there (Kubernetes: label the pod azure.workload.identity/use: \"true\", or a projected service-account token volume with audience api://AzureADTokenExchange)",
                ),
                Check::skipped(FEDERATED_EXPIRY, "needs the token"),
            );
        }
    };
    let Some(claims) = crate::federated::peek(token.expose_secret()) else {
        return (
            Check::error(
                FEDERATED,
                format!("{} does not hold a JWT", federated.source),
                "point client_assertion_file at the platform's token file, not at a secret or a certificate",
            ),
            Check::skipped(FEDERATED_EXPIRY, "needs a JWT"),
        );
    };
    let line = format!(
        "{} holds a token with {}: the app registration's federated credential must have exactly this Issuer, Subject identifier and Audience",
        federated.source,
        claims.summary()
    );
    let credential = if is_entra
        && !claims
            .aud
            .iter()
            .any(|a| a.starts_with(crate::federated::ENTRA_EXCHANGE_AUDIENCE))
    {
        Check::warning(
            FEDERATED,
            line,
            format!(
                "Entra accepts only the audience {} (AADSTS700212 otherwise): issue the token for it",
                crate::federated::ENTRA_EXCHANGE_AUDIENCE
            ),
        )
    } else {
        Check::ok(FEDERATED, line)
    };
    let expiry = match claims.exp {
        None => Check::warning(
            FEDERATED_EXPIRY,
            "the token has no exp",
            "the IdP will refuse it: use the platform's short-lived token",
        ),
        Some(exp) if exp <= now.unix_timestamp() => Check::error(
            FEDERATED_EXPIRY,
            format!(
                "the token expired {} s ago: the platform is not refreshing the file (AADSTS700024 at every sign-in)",
                now.unix_timestamp() - exp
            ),
            "check the projected token volume (its expirationSeconds) and that the kubelet refreshes it; entrance re-reads the file for every request",
        ),
        Some(exp) => Check::ok(
            FEDERATED_EXPIRY,
            format!(
                "the token is valid for {} more minutes; the platform refreshes the file and entrance reads it afresh for every request",
                (exp - now.unix_timestamp()) / 60
            ),
        ),
    };
    (credential, expiry)
}

/// The `api` table as `/auth` will apply it: what a bearer token must carry. Nothing to fetch:
/// the tokens come from the callers.
pub(super) fn describe_api(api: &ApiSettings) -> Check {
    let list = |v: &[String]| v.join(", ");
    let users = if api.required_scopes.is_empty() {
        "users' tokens need no particular scope".to_owned()
    } else {
        format!("users' tokens need scp {}", list(&api.required_scopes))
    };
    let apps = if api.required_roles.is_empty() {
        "app-only tokens are refused (no required_roles)".to_owned()
    } else {
        format!("app-only tokens need roles {}", list(&api.required_roles))
    };
    let clients = match &api.allowed_clients {
        None => "from any client app".to_owned(),
        Some(c) => format!("from client apps {}", list(c)),
    };
    Check::ok(
        super::API,
        format!(
            "bearer tokens for {} are accepted on /auth and /me {clients}; {users}; {apps}",
            list(&api.audiences)
        ),
    )
}

/// `--verify-secret` for an `upstream` table: a client-credentials request for the API's
/// `.default` in the connection's tenant proves that the tenant knows the API (Entra answers
/// AADSTS500011 when its service principal is missing: the backend was never consented to
/// there). The user's delegated permission itself is only granted at sign-in.
pub(super) async fn verify_upstream(
    conn: &ConnectionConfig,
    upstream: &UpstreamSettings,
    d: Option<&Discovered>,
    is_entra: bool,
    issuer_ok: bool,
    verify_secret: bool,
    http: &HttpClient,
) -> Check {
    let asks = format!(
        "sign-ins ask for {} with offline_access",
        upstream.scopes.join(" ")
    );
    let resource = upstream.scopes[0]
        .rsplit_once('/')
        .map(|(r, _)| r.to_owned())
        .filter(|_| is_entra);
    let Some(resource) = resource else {
        return Check::ok(UPSTREAM, format!("{asks}; the IdP grants them at sign-in"));
    };
    if !verify_secret {
        return Check::skipped(
            UPSTREAM,
            format!("{asks}; run with --verify-secret to prove the tenant knows {resource}"),
        );
    }
    let Some(d) = d else {
        return Check::skipped(UPSTREAM, format!("{asks}; needs the metadata"));
    };
    let Ok(endpoint) = verify_endpoint(conn, &d.meta, is_entra, issuer_ok) else {
        return Check::skipped(UPSTREAM, format!("{asks}; needs a usable token endpoint"));
    };
    let Some((_, credential)) = token::attempts(conn).into_iter().next() else {
        return Check::skipped(UPSTREAM, format!("{asks}; needs a credential"));
    };
    let scope = format!("{resource}/.default");
    let result = token::client_credentials(
        http,
        &credentials_request(conn, &d.meta, endpoint.as_str(), credential, Some(&scope)),
    )
    .await;
    judge_upstream(result, &resource, &asks)
}

/// Translates the answer to [`verify_upstream`]'s request.
pub(super) fn judge_upstream(result: Result<(), TokenError>, resource: &str, asks: &str) -> Check {
    let error = match result {
        Ok(()) => {
            return Check::ok(
                UPSTREAM,
                format!("{asks}; the tenant knows {resource} (a token for it was issued)"),
            );
        }
        Err(TokenError::Refused { error, .. }) => error,
        Err(other) => {
            return Check::warning(
                UPSTREAM,
                format!("could not verify {resource}: {other}"),
                "sign in once: /auth then passes the token",
            );
        }
    };
    match error.aadsts() {
        Some(500011) => Check::error(
            UPSTREAM,
            format!(
                "the tenant does not know the API {resource} (AADSTS500011): sign-ins will fail"
            ),
            entra::aadsts(500011)
                .map(|r| r.fix.clone())
                .unwrap_or_else(|| {
                    "fix upstream.scopes, or have the tenant's admin consent to the API".into()
                }),
        ),
        _ => Check::warning(
            UPSTREAM,
            format!("could not verify {resource}: {}", describe(&error)),
            "fix the credentials line first; otherwise sign in once: /auth then passes the token",
        ),
    }
}

/// `error: description` with Entra's trace trailer cut off (it is long and only useful to
/// Microsoft support, who get it from the sign-in logs anyway).
pub(super) fn describe(error: &token::OAuthError) -> String {
    match error.error_description.as_deref() {
        Some(d) if !d.is_empty() => {
            let d = d.split(" Trace ID:").next().unwrap_or(d).trim();
            format!("{}: {d}", error.error)
        }
        _ => error.error.clone(),
    }
}
