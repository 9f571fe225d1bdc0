//! One connection to an IdP: its validated settings (metadata URL, client ID, credential,
//! tenants, domains, who may sign in) and the checks that build them from `[[connections]]`.

use std::{path::Path, sync::Arc};

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use url::Url;

use crate::expiry::{Expiry, RENEW_CERTIFICATE};
use crate::loopback::is_secure_url;
use crate::{
    certificate::{AssertionAlg, CertificateCredential, CredentialFile},
    entra,
    federated::{AssertionSource, FederatedAssertion},
};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body (RFC 6749 §2.3.1).
    SecretPost,
    /// HTTP Basic with both parts form-encoded first (RFC 6749 §2.3.1).
    SecretBasic,
}

/// One client secret and where it came from. The label (e.g. `client_secrets_env CONTOSO_NEW`)
/// is what logs and `/readyz` show; the value never is.
#[derive(Debug, Clone)]
pub struct NamedSecret {
    pub label: String,
    pub value: SecretString,
}

/// How a connection proves it is the client at the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientCredential {
    /// Client secrets' Values, newest first and never empty, sent by `client_secret_post` or
    /// `client_secret_basic`. Several are kept during a rotation: the code exchange falls back
    /// to the next when the IdP refuses one as an invalid client.
    Secrets(Vec<NamedSecret>),
    /// A certificate and its private key: a signed client assertion (`private_key_jwt`,
    /// RFC 7523), Entra's "certificate credentials".
    Certificate(Arc<CertificateCredential>),
    /// A JWT issued by the platform (workload identity federation), sent as the client
    /// assertion (RFC 7523 §2.2); read afresh for every token request.
    Federated(Arc<FederatedAssertion>),
}

impl ClientCredential {
    pub fn certificate(&self) -> Option<&CertificateCredential> {
        match self {
            ClientCredential::Certificate(c) => Some(c),
            ClientCredential::Secrets(_) | ClientCredential::Federated(_) => None,
        }
    }

    /// The secrets' labels, newest first; empty for a certificate.
    pub fn secret_labels(&self) -> Vec<&str> {
        match self {
            ClientCredential::Secrets(secrets) => {
                secrets.iter().map(|s| s.label.as_str()).collect()
            }
            ClientCredential::Certificate(_) | ClientCredential::Federated(_) => Vec::new(),
        }
    }
}

/// Which tenants (`tid`) may sign in (docs/reference/ENTRA.md §5.3d).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TenantAllowList {
    /// No restriction: `allowed_tenants = ["*"]`, or a single-tenant connection that sets none
    /// (its issuer already fixes the tenant).
    #[default]
    Any,
    /// Only these tenant GUIDs (lower-case; compared case-insensitively, as GUIDs are).
    Only(Vec<String>),
}

impl TenantAllowList {
    pub fn allows(&self, tid: &str) -> bool {
        match self {
            TenantAllowList::Any => true,
            TenantAllowList::Only(tenants) => tenants.iter().any(|t| t.eq_ignore_ascii_case(tid)),
        }
    }
}

/// A connection's `allowed_groups` / `allowed_roles`. With both set, either admits: a user
/// passes who is in one of the groups **or** holds one of the roles (an admin can then grant
/// access by group membership or by app role assignment, whichever the tenant uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Group object IDs (or whatever the token configuration emits), compared ignoring ASCII
    /// case: GUIDs have no case.
    pub groups: Vec<String>,
    /// App role values, compared exactly as Entra defines them.
    pub roles: Vec<String>,
}

impl AccessPolicy {
    /// True when the connection restricts who may sign in.
    pub fn is_restricted(&self) -> bool {
        !self.groups.is_empty() || !self.roles.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Query,
    FormPost,
}

impl ResponseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseMode::Query => "query",
            ResponseMode::FormPost => "form_post",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub id: String,
    pub name: String,
    pub metadata_url: Url,
    /// The issuer the metadata must publish: the metadata URL without
    /// `/.well-known/openid-configuration` (OpenID Connect Discovery §4.3).
    pub expected_issuer: String,
    pub client_id: String,
    /// The secret or the certificate (exactly one is configured).
    pub credential: ClientCredential,
    /// Only on a connection created through a setup link whose credential a later link
    /// rotated: the one it replaced, tried after `credential` until the first sign-in with
    /// the new one, then removed (issue 17, `session::setup_links::retire_previous`).
    pub previous_credential: Option<ClientCredential>,
    pub scopes: Vec<String>,
    /// `None`: pick from the metadata (client_secret_post when listed). Not used with a
    /// certificate, which always authenticates by `private_key_jwt`.
    pub client_auth: Option<ClientAuth>,
    pub response_mode: ResponseMode,
    pub trusted_audiences: Vec<String>,
    /// When the client secret expires (a date-only value means 00:00 UTC that day, so the
    /// warning never comes late). Only `entrance check` reads it.
    pub client_secret_expires_at: Option<OffsetDateTime>,
    /// A tenant GUID for `common`/`organizations` connections (see [`RawConnection`]).
    pub home_tenant: Option<String>,
    /// `None`: the doctor's default (Microsoft Graph `.default` for Entra, no scope elsewhere).
    pub verify_scope: Option<String>,
    /// For a `common`/`organizations` metadata URL: the issuer template its metadata must publish
    /// (`https://<host>/{tenantid}/v2.0`), see [`entra::multi_tenant_issuer_template`].
    pub issuer_template: Option<String>,
    /// The tenants whose users may sign in; `Any` for `["*"]` or a single-tenant connection
    /// without the key.
    pub allowed_tenants: TenantAllowList,
    /// Lower-cased email domains routed to this connection; no two connections share one.
    pub domains: Vec<String>,
    /// `allowed_groups` / `allowed_roles`; the default admits everyone.
    pub access: AccessPolicy,
    /// When to call the userinfo endpoint at sign-in (the `userinfo` module of `oidc`).
    pub userinfo: Userinfo,
    /// Bearer access tokens for the vendor's API; `None`: `/auth` and `/me` take sessions only.
    pub api: Option<ApiSettings>,
    /// An access token for the vendor's backend API; `None`: `/auth` passes none.
    pub upstream: Option<UpstreamSettings>,
    /// Group overage resolution through Microsoft Graph; the default resolves nothing.
    pub groups: super::GroupsSettings,
}

/// When a connection calls the IdP's userinfo endpoint at sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Userinfo {
    /// `userinfo = true`: at every sign-in; a failure fails the sign-in.
    Always,
    /// `userinfo = false`, and Entra by default: its ID tokens carry the profile claims.
    Never,
    /// The default for other IdPs: when a requested scope's claims (`profile` → `name`,
    /// `email` → `email`) are missing from the ID token and the IdP has a userinfo endpoint
    /// (OpenID Connect Core §5.4: with an access token issued, an IdP may put them in
    /// userinfo alone).
    WhenMissing,
}

impl ConnectionConfig {
    /// The `scope` of the authorization request: `scopes`, and with an `upstream` table
    /// `offline_access` (for the refresh token) and the API's scopes — Entra then issues the
    /// access token for that API (one resource per token).
    pub(crate) fn authorize_scope(&self) -> String {
        let mut scope = self.scopes.join(" ");
        if let Some(upstream) = &self.upstream {
            if !self.scopes.iter().any(|s| s == "offline_access") {
                scope.push_str(" offline_access");
            }
            for s in &upstream.scopes {
                scope.push(' ');
                scope.push_str(s);
            }
        }
        scope
    }
}

#[cfg(test)]
impl ConnectionConfig {
    /// A connection for unit tests: id `c`, one secret `x`, the metadata URL given (its issuer
    /// template set when it is a multi-tenant authority), everything else at its default.
    pub(crate) fn for_tests(metadata_url: &str) -> ConnectionConfig {
        let expected_issuer: String = metadata_url
            .trim_end_matches("/.well-known/openid-configuration")
            .into();
        let url = Url::parse(metadata_url).expect("test metadata URL");
        ConnectionConfig {
            id: "c".into(),
            name: "C".into(),
            issuer_template: entra::multi_tenant_issuer_template(&url, &expected_issuer),
            allowed_tenants: Default::default(),
            metadata_url: url,
            expected_issuer,
            client_id: "00001111-aaaa-2222-bbbb-3333cccc4444".into(),
            credential: ClientCredential::Secrets(vec![NamedSecret {
                label: "client_secret".into(),
                value: SecretString::from("x"),
            }]),
            previous_credential: None,
            scopes: vec!["openid".into()],
            client_auth: None,
            response_mode: ResponseMode::Query,
            trusted_audiences: vec![],
            client_secret_expires_at: None,
            home_tenant: None,
            verify_scope: None,
            domains: vec![],
            access: Default::default(),
            userinfo: Userinfo::Never,
            api: None,
            upstream: None,
            groups: Default::default(),
        }
    }
}

/// What a setup page's form gives for a new connection (issue 17).
pub(crate) struct SetupValues<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub metadata_url: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    /// The secret's *Expires* date as typed (RFC 3339 date or date-time).
    pub client_secret_expires_at: &'a str,
    /// A certificate entrance generated for the link, instead of the secret (then
    /// `client_secret` and `client_secret_expires_at` are ignored).
    pub certificate: Option<Arc<CertificateCredential>>,
}

/// What stands for the secret while a certificate connection is validated: the table is
/// validated as a secret one (same keys, same problems), then the credential replaced.
const CERTIFICATE_PLACEHOLDER: &str = "generated-certificate";

/// A connection from a setup page's form: validated exactly as a `[[connections]]` table with
/// an inline `client_secret`, leniently (like `entrance check`: the client ID and the secret
/// are kept as given, for the doctor to judge, `doctor::check_setup`). A problem's key is the
/// table key it concerns (`metadata_url`, `client_secret_expires_at`, …) without the
/// `connections[0].` prefix.
pub(crate) fn setup_connection(
    values: &SetupValues<'_>,
) -> Result<(ConnectionConfig, Vec<SecretAsRead>), ConfigError> {
    let mut raw = serde_json::json!({
        "id": values.id,
        "name": values.name,
        "metadata_url": values.metadata_url.trim(),
        "client_id": values.client_id,
        "client_secret": if values.certificate.is_some() { CERTIFICATE_PLACEHOLDER } else { values.client_secret },
    });
    if values.certificate.is_none() && !values.client_secret_expires_at.trim().is_empty() {
        raw["client_secret_expires_at"] = values.client_secret_expires_at.trim().into();
    }
    let rc: RawConnection = serde_json::from_value(raw).map_err(|e| {
        invalid(
            "connection",
            format!("the setup values do not form a connection ({e})"),
            "check every field",
        )
    })?;
    let (conn, mut secrets) =
        validate_connection(0, rc, &|_| None, Mode::Lenient).map_err(|e| match e {
            ConfigError::Invalid { key, problem, fix } => ConfigError::Invalid {
                key: key.trim_start_matches("connections[0].").to_owned(),
                problem,
                fix,
            },
            other => other,
        })?;
    for secret in &mut secrets {
        secret.source = SecretSource::SetupForm;
    }
    if let Some(cert) = &values.certificate {
        // As `load_certificate` leaves it: private_key_jwt, the certificate's own expiry.
        let mut conn = conn;
        conn.credential = ClientCredential::Certificate(cert.clone());
        conn.client_auth = None;
        conn.client_secret_expires_at = None;
        return Ok((conn, Vec::new()));
    }
    Ok((conn, secrets))
}

pub(super) fn validate_connection(
    i: usize,
    rc: RawConnection,
    env: &dyn Fn(&str) -> Option<String>,
    mode: Mode,
) -> Result<(ConnectionConfig, Vec<SecretAsRead>), ConfigError> {
    let key = |k: &str| format!("connections[{i}].{k}");
    let (metadata_url, expected_issuer) = check_id_and_metadata_url(&rc, &key)?;

    let is_entra = entra::is_entra_url(&metadata_url);
    let workload_identity = rc.workload_identity == Some(true);
    let mut client_id = rc.client_id.trim().to_owned();
    if workload_identity {
        workload_identity_env(&mut client_id, &metadata_url, &key, env)?;
    }
    let has_certificate =
        rc.client_certificate_file.is_some() || rc.client_private_key_file.is_some();
    if mode == Mode::Strict {
        check_client_id(&client_id, is_entra, &key)?;
    }
    let (credential, read) = credential(&rc, has_certificate, is_entra, &key, env, mode)?;

    let client_secret_expires_at = match &rc.client_secret_expires_at {
        None => None,
        Some(_) if has_certificate => {
            return Err(invalid(
                key("client_secret_expires_at"),
                "is set, but this connection uses a certificate, whose expiry entrance reads from the certificate itself",
                "remove client_secret_expires_at",
            ));
        }
        Some(value) => Some(parse_expiry(value).ok_or_else(|| {
            invalid(
                key("client_secret_expires_at"),
                format!("{value:?} is not an RFC 3339 date or date-time"),
                "copy the Expires date from Certificates & secrets, e.g. \"2027-05-01\"",
            )
        })?),
    };
    let home_tenant = match &rc.home_tenant {
        None => None,
        Some(t) if entra::is_guid(t.trim()) => Some(t.trim().to_owned()),
        Some(t) => {
            return Err(invalid(
                key("home_tenant"),
                format!("{t:?} is not a tenant GUID"),
                "paste the Directory (tenant) ID from the app registration's Overview page",
            ));
        }
    };
    let verify_scope = match &rc.verify_scope {
        None => None,
        Some(s) if !s.trim().is_empty() && !s.bytes().any(|b| b == b'"' || b == b'\\') => {
            Some(s.trim().to_owned())
        }
        Some(s) => {
            return Err(invalid(
                key("verify_scope"),
                format!("{s:?} is not a usable scope"),
                "leave it out for the default, or write e.g. \"https://graph.microsoft.com/.default\"",
            ));
        }
    };

    let issuer_template = entra::multi_tenant_issuer_template(&metadata_url, &expected_issuer);
    let allowed_tenants = allowed_tenants(
        &rc,
        entra::multi_tenant_authority(&metadata_url),
        &key("allowed_tenants"),
    )?;

    let scopes = scopes(rc.scopes.clone(), &key)?;
    let client_auth = client_auth(rc.client_auth.as_deref(), has_certificate, &key)?;
    let response_mode = response_mode(rc.response_mode.as_deref(), &key)?;

    let domains = email_domains(&rc.domains, &key("domains"))?;
    let access = AccessPolicy {
        groups: access_list(rc.allowed_groups.as_deref(), &key("allowed_groups"))?,
        roles: access_list(rc.allowed_roles.as_deref(), &key("allowed_roles"))?,
    };

    let api = match &rc.api {
        Some(raw) => Some(super::api::validate_api(raw, &metadata_url, &key)?),
        None => None,
    };

    let upstream = match &rc.upstream {
        Some(raw) => Some(super::upstream::validate_upstream(
            raw,
            &metadata_url,
            rc.userinfo,
            &key,
        )?),
        None => None,
    };

    let groups = super::groups::validate_groups(rc.groups.as_ref(), &metadata_url, &key)?;

    let userinfo = match rc.userinfo {
        Some(true) => Userinfo::Always,
        Some(false) => Userinfo::Never,
        // The sign-in's access token is the upstream API's: it cannot call userinfo.
        None if is_entra || upstream.is_some() => Userinfo::Never,
        None => Userinfo::WhenMissing,
    };
    let conn = ConnectionConfig {
        api,
        name: rc.name.clone().unwrap_or_else(|| rc.id.clone()),
        id: rc.id,
        metadata_url,
        expected_issuer,
        client_id,
        credential,
        previous_credential: None,
        scopes,
        client_auth,
        response_mode,
        trusted_audiences: rc.trusted_audiences,
        client_secret_expires_at,
        home_tenant,
        verify_scope,
        issuer_template,
        allowed_tenants,
        domains,
        access,
        userinfo,
        upstream,
        groups,
    };
    Ok((conn, read))
}

/// `id` and `metadata_url`: a usable id, and an https metadata URL ending in the well-known
/// path (plain http on loopback only); the issuer expected in the metadata is that URL without
/// the well-known path.
fn check_id_and_metadata_url(
    rc: &RawConnection,
    key: &dyn Fn(&str) -> String,
) -> Result<(Url, String), ConfigError> {
    if rc.id.is_empty()
        || rc.id.len() > 64
        || !rc
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            key("id"),
            format!("{:?} is not a usable id", rc.id),
            "use 1 to 64 letters, digits, '-' or '_' (it appears in URLs), e.g. \"contoso\"",
        ));
    }

    let metadata_url = Url::parse(&rc.metadata_url).map_err(|e| {
        invalid(
            key("metadata_url"),
            format!("{:?} is not a URL ({e})", rc.metadata_url),
            "paste the \"OpenID Connect metadata document\" URL from the app registration's Endpoints blade",
        )
    })?;
    if !is_secure_url(&metadata_url) {
        return Err(invalid(
            key("metadata_url"),
            format!("{:?} is not https", rc.metadata_url),
            "use the https URL; plain http is only accepted on loopback (tests and the demo)",
        ));
    }
    let Some(expected_issuer) = rc
        .metadata_url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.strip_suffix("/.well-known/openid-configuration"))
        .map(str::to_owned)
    else {
        return Err(invalid(
            key("metadata_url"),
            format!(
                "{:?} does not end in /.well-known/openid-configuration",
                rc.metadata_url
            ),
            "paste the \"OpenID Connect metadata document\" URL from the Endpoints blade, e.g. https://login.microsoftonline.com/<tenant-id>/v2.0/.well-known/openid-configuration",
        ));
    };
    Ok((metadata_url, expected_issuer))
}

/// The client credential: a certificate, or the secrets in order — each checked for shape in
/// strict mode, kept as read in lenient mode (`entrance check` judges them itself).
fn credential(
    rc: &RawConnection,
    has_certificate: bool,
    is_entra: bool,
    key: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
    mode: Mode,
) -> Result<(ClientCredential, Vec<SecretAsRead>), ConfigError> {
    let has_secret = rc.client_secret.is_some()
        || rc.client_secret_env.is_some()
        || rc.client_secret_file.is_some()
        || rc.client_secrets_env.is_some()
        || rc.client_secret_files.is_some();
    let federated = [
        rc.client_assertion_file.is_some(),
        rc.client_assertion_env.is_some(),
        rc.workload_identity == Some(true),
    ];
    if federated.iter().filter(|f| **f).count() > 1 {
        return Err(invalid(
            key("client_assertion_file"),
            "more than one of client_assertion_file, client_assertion_env and workload_identity = true is set",
            "keep one: workload_identity = true reads AZURE_FEDERATED_TOKEN_FILE; client_assertion_file names another file",
        ));
    }
    if federated.contains(&true) {
        if has_secret || has_certificate {
            return Err(invalid(
                key("client_assertion_file"),
                "a federated credential and a client secret or certificate are both configured; a connection proves itself one way",
                "keep the federated credential and remove the client_secret…/client_certificate… keys (and delete the secret or certificate in Certificates & secrets once sign-ins work), or remove the federated keys",
            ));
        }
        let source = match (&rc.client_assertion_file, &rc.client_assertion_env) {
            (Some(file), _) => AssertionSource::File(file.into()),
            (None, Some(var)) => AssertionSource::Env(var.clone()),
            (None, None) => match env("AZURE_FEDERATED_TOKEN_FILE") {
                Some(file) if !file.trim().is_empty() => AssertionSource::File(file.trim().into()),
                _ => {
                    return Err(invalid(
                        key("workload_identity"),
                        "is true, but AZURE_FEDERATED_TOKEN_FILE is not set",
                        "label the pod azure.workload.identity/use: \"true\" and annotate its service account with azure.workload.identity/client-id (the webhook then sets AZURE_FEDERATED_TOKEN_FILE), or name the token file in client_assertion_file",
                    ));
                }
            },
        };
        if mode == Mode::Strict {
            check_assertion_source(&source, key, env)?;
        }
        return Ok((
            ClientCredential::Federated(Arc::new(FederatedAssertion { source })),
            Vec::new(),
        ));
    }
    if has_certificate && has_secret {
        return Err(invalid(
            key("client_certificate_file"),
            "both a client secret (client_secret, client_secret_env or client_secret_file) and a certificate (client_certificate_file, client_private_key_file) are configured",
            "keep one: to use the certificate, remove the client_secret… key (and delete the secret in Certificates & secrets once sign-ins work); to use the secret, remove client_certificate_file and client_private_key_file",
        ));
    }
    if !has_certificate && rc.client_assertion_alg.is_some() {
        return Err(invalid(
            key("client_assertion_alg"),
            "is set, but no certificate is configured",
            "set client_certificate_file and client_private_key_file, or remove client_assertion_alg",
        ));
    }
    Ok(if has_certificate {
        let cert = load_certificate(rc, key, mode)?;
        (ClientCredential::Certificate(cert), Vec::new())
    } else {
        let reads = read_secrets(rc, key, env);
        let mut secrets = Vec::with_capacity(reads.len());
        let mut kept = Vec::with_capacity(reads.len());
        for (
            SecretAsRead {
                source,
                label,
                value,
            },
            item_key,
        ) in reads
        {
            match mode {
                Mode::Strict => {
                    let raw_secret = value?;
                    // A list item's problems name the item's own key.
                    let item_key_fn = |k: &str| item_key.clone().unwrap_or_else(|| key(k));
                    let secret = check_secret(
                        raw_secret.expose_secret(),
                        is_entra,
                        &rc.id,
                        &label,
                        &item_key_fn,
                    )?;
                    secrets.push(NamedSecret {
                        label: label.clone(),
                        value: secret.into(),
                    });
                    kept.push(SecretAsRead {
                        source,
                        label,
                        value: Ok(raw_secret),
                    });
                }
                // `entrance check` judges both itself, so it can report every problem as a line.
                Mode::Lenient => {
                    let secret = value
                        .as_ref()
                        .map(|s| s.expose_secret().trim().to_owned())
                        .unwrap_or_default();
                    secrets.push(NamedSecret {
                        label: label.clone(),
                        value: secret.into(),
                    });
                    kept.push(SecretAsRead {
                        source,
                        label,
                        value,
                    });
                }
            }
        }
        (ClientCredential::Secrets(secrets), kept)
    })
}

/// At startup: the assertion is there to be read (the platform writes the file before the
/// container starts). Its content is judged by the IdP; `entrance check` shows its claims.
fn check_assertion_source(
    source: &AssertionSource,
    key: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let problem = match source {
        AssertionSource::File(path) => match std::fs::metadata(path) {
            Ok(m) if m.is_file() => return Ok(()),
            Ok(_) => format!("{} is not a file", path.display()),
            Err(e) => format!("{} cannot be read: {e}", path.display()),
        },
        AssertionSource::Env(var) => match env(var) {
            Some(v) if !v.trim().is_empty() => return Ok(()),
            _ => format!("the environment variable {var} is not set"),
        },
    };
    Err(invalid(
        key("client_assertion_file"),
        problem,
        "mount the platform's token (Kubernetes: a projected service-account token volume with audience api://AzureADTokenExchange) at that path, or fix the path",
    ))
}

/// `workload_identity = true`: the client ID from `AZURE_CLIENT_ID` when the connection leaves
/// it out (the webhook sets it from the service account's annotation), and `AZURE_TENANT_ID`
/// must name the metadata URL's tenant — a mismatch would send every assertion to the wrong
/// tenant's app.
fn workload_identity_env(
    client_id: &mut String,
    metadata_url: &Url,
    key: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let from_env = env("AZURE_CLIENT_ID").map(|v| v.trim().to_owned());
    match (&from_env, client_id.is_empty()) {
        (Some(id), true) => *client_id = id.clone(),
        (Some(id), false) if !id.eq_ignore_ascii_case(client_id) && !id.is_empty() => {
            return Err(invalid(
                key("client_id"),
                format!("is {client_id}, but AZURE_CLIENT_ID is {id}"),
                "make the service account's azure.workload.identity/client-id annotation and client_id the same app, or leave client_id out",
            ));
        }
        _ => {}
    }
    if let Some(tenant) = env("AZURE_TENANT_ID").map(|v| v.trim().to_owned())
        && !tenant.is_empty()
        && let Some(segment) = entra::tenant_segment(metadata_url)
        && entra::is_guid(segment)
        && !segment.eq_ignore_ascii_case(&tenant)
    {
        return Err(invalid(
            key("metadata_url"),
            format!("names tenant {segment}, but AZURE_TENANT_ID is {tenant}"),
            "use the metadata URL of the tenant the app registration and its federated credential are in",
        ));
    }
    Ok(())
}

/// `scopes`: default `openid profile email`; must hold `openid`; each a valid scope token.
fn scopes(
    scopes: Option<Vec<String>>,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<String>, ConfigError> {
    let scopes = scopes.unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(invalid(
            key("scopes"),
            "does not contain \"openid\", so the IdP would not return an ID token",
            "add \"openid\" (the default is [\"openid\", \"profile\", \"email\"])",
        ));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || s.bytes().any(|b| b <= b' ' || b == b'"' || b == b'\\'))
    {
        return Err(invalid(
            key("scopes"),
            format!("{bad:?} is not a valid scope"),
            "list each scope as its own string, without spaces",
        ));
    }
    Ok(scopes)
}

/// `client_auth`: how a secret is sent; a certificate always uses `private_key_jwt`.
fn client_auth(
    value: Option<&str>,
    has_certificate: bool,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<ClientAuth>, ConfigError> {
    Ok(match value {
        None => None,
        // A certificate always authenticates by private_key_jwt; saying so is allowed.
        Some("private_key_jwt") if has_certificate => None,
        Some(other) if has_certificate => {
            return Err(invalid(
                key("client_auth"),
                format!("{other:?} is a secret method, but this connection uses a certificate"),
                "remove client_auth (a certificate always uses private_key_jwt)",
            ));
        }
        Some("client_secret_post") => Some(ClientAuth::SecretPost),
        Some("client_secret_basic") => Some(ClientAuth::SecretBasic),
        Some(other) => {
            return Err(invalid(
                key("client_auth"),
                format!("unknown method {other:?}"),
                "use \"client_secret_post\" (recommended for Entra) or \"client_secret_basic\"",
            ));
        }
    })
}

/// `response_mode`: `query` (default) or `form_post`.
fn response_mode(
    value: Option<&str>,
    key: &dyn Fn(&str) -> String,
) -> Result<ResponseMode, ConfigError> {
    Ok(match value {
        None | Some("query") => ResponseMode::Query,
        Some("form_post") => ResponseMode::FormPost,
        Some(other) => {
            return Err(invalid(
                key("response_mode"),
                format!("unknown response mode {other:?}"),
                "use \"query\" (default) or \"form_post\"",
            ));
        }
    })
}

/// `domains`: bare DNS names (ASCII; an internationalised domain in its `xn--` form),
/// lower-cased, each once. Matched exactly against the part of a `login_hint` after `@`.
pub(super) fn email_domains(list: &[String], key: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for d in list {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        if !is_host_name(&d) {
            return Err(invalid(
                key,
                format!("{d:?} is not a domain name"),
                "list the email domains this connection's users sign in with, e.g. domains = [\"contoso.com\"] (no @, scheme or wildcard; punycode for international names)",
            ));
        }
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// A DNS host name with at least two labels: letters, digits and inner hyphens, 1–63 bytes
/// a label, 253 in all.
pub(super) fn is_host_name(d: &str) -> bool {
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// `allowed_groups` / `allowed_roles`: absent means no rule; a present list must name
/// something, or nobody could sign in.
pub(super) fn access_list(list: Option<&[String]>, key: &str) -> Result<Vec<String>, ConfigError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let list: Vec<String> = list.iter().map(|v| v.trim().to_owned()).collect();
    if list.is_empty() || list.iter().any(String::is_empty) {
        return Err(invalid(
            key,
            "is empty or holds an empty value, so nobody could sign in",
            "list group object IDs (allowed_groups) or app role values (allowed_roles), or remove the key to admit every user",
        ));
    }
    Ok(list)
}

/// `allowed_tenants`: GUIDs (lower-cased) or exactly `["*"]`. A multi-tenant authority lets any
/// Entra tenant's users sign in, so it must say which (docs/reference/ENTRA.md §5.3d); elsewhere the key is
/// optional and, when set, enforced on `tid` as well.
pub(super) fn allowed_tenants(
    rc: &RawConnection,
    multi: Option<&str>,
    key: &str,
) -> Result<TenantAllowList, ConfigError> {
    const FIX: &str = "list the Directory (tenant) ID GUIDs of the customers who may sign in, e.g. allowed_tenants = [\"aaaabbbb-0000-cccc-1111-dddd2222eeee\"], or [\"*\"] to allow every tenant";
    let Some(list) = &rc.allowed_tenants else {
        return match multi {
            Some(authority) => Err(invalid(
                key,
                format!(
                    "is required: the metadata URL names the {authority} authority, which signs in users of any Entra tenant"
                ),
                FIX,
            )),
            None => Ok(TenantAllowList::Any),
        };
    };
    let list: Vec<&str> = list.iter().map(|t| t.trim()).collect();
    if list.is_empty() {
        return Err(invalid(key, "is empty, so nobody could sign in", FIX));
    }
    if list.contains(&"*") {
        if list.len() > 1 {
            return Err(invalid(
                key,
                "mixes \"*\" with tenant IDs",
                "write either [\"*\"] (any tenant) or the list of tenant GUIDs, not both",
            ));
        }
        tracing::warn!(
            connection = %rc.id,
            "allowed_tenants = [\"*\"]: users of every Entra tenant can sign in; give each user's tenant (tid) a part in your app's authorization"
        );
        return Ok(TenantAllowList::Any);
    }
    let mut tenants = Vec::with_capacity(list.len());
    for t in list {
        // `tid` is always the GUID (docs/reference/ENTRA.md §4), never a domain such as contoso.com.
        if !entra::is_guid(t) {
            return Err(invalid(
                key,
                format!("{t:?} is not a tenant GUID"),
                "use the Directory (tenant) ID GUID from each customer's Entra Overview page, not a domain name",
            ));
        }
        tenants.push(t.to_ascii_lowercase());
    }
    Ok(TenantAllowList::Only(tenants))
}

/// Loads and checks `client_certificate_file` and `client_private_key_file`. An expired
/// certificate stops the service (Entra refuses every assertion it signs, AADSTS700027); the
/// lenient path leaves expiry to `entrance check`, which reports it as a line.
pub(super) fn load_certificate(
    rc: &RawConnection,
    key: &dyn Fn(&str) -> String,
    mode: Mode,
) -> Result<Arc<CertificateCredential>, ConfigError> {
    let (Some(cert_path), Some(key_path)) =
        (&rc.client_certificate_file, &rc.client_private_key_file)
    else {
        let missing = if rc.client_certificate_file.is_none() {
            "client_certificate_file"
        } else {
            "client_private_key_file"
        };
        return Err(invalid(
            key(missing),
            "a certificate credential needs both client_certificate_file and client_private_key_file",
            "set client_certificate_file to the certificate uploaded under Certificates & secrets → Certificates, and client_private_key_file to its private key",
        ));
    };
    let alg = match rc.client_assertion_alg.as_deref() {
        None => AssertionAlg::Ps256,
        Some(v) => AssertionAlg::parse(v.trim()).ok_or_else(|| {
            invalid(
                key("client_assertion_alg"),
                format!("unknown algorithm {v:?}"),
                "use \"PS256\" (the default, as Entra's docs show) or \"RS256\"",
            )
        })?,
    };
    let cred = CertificateCredential::load(Path::new(cert_path), Path::new(key_path), alg)
        .map_err(|e| {
            let k = match e.file() {
                CredentialFile::Certificate => "client_certificate_file",
                CredentialFile::PrivateKey => "client_private_key_file",
            };
            invalid(key(k), e.to_string(), e.fix())
        })?;
    if mode == Mode::Strict {
        check_certificate_dates(&cred, OffsetDateTime::now_utc(), &rc.id, key)?;
    }
    Ok(Arc::new(cred))
}

/// Past notAfter: an error. Expiring soon ([`Expiry`]) or not yet valid: a warning.
pub(super) fn check_certificate_dates(
    cred: &CertificateCredential,
    now: OffsetDateTime,
    id: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    match Expiry::judge(cred.not_after, now) {
        Expiry::Expired { .. } => {
            return Err(invalid(
                key("client_certificate_file"),
                format!(
                    "the certificate (thumbprint {}) expired on {}; Entra refuses assertions signed for it (AADSTS700027)",
                    cred.thumbprint_hex,
                    cred.not_after.date()
                ),
                RENEW_CERTIFICATE,
            ));
        }
        Expiry::Soon { days } => tracing::warn!(
            connection = %id,
            thumbprint = %cred.thumbprint_hex,
            not_after = %cred.not_after,
            days,
            "the client certificate expires soon; {RENEW_CERTIFICATE}"
        ),
        Expiry::Later { .. } => {}
    }
    if cred.not_before > now {
        tracing::warn!(
            connection = %id,
            not_before = %cred.not_before,
            "the client certificate is not valid yet; Entra refuses it until then"
        );
    }
    Ok(())
}

pub(super) fn check_client_id(
    client_id: &str,
    is_entra: bool,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if client_id.is_empty() {
        return Err(invalid(
            key("client_id"),
            "is empty",
            "paste the Application (client) ID from the app registration's Overview page",
        ));
    }
    if is_entra && !entra::is_guid(client_id) {
        return Err(invalid(
            key("client_id"),
            format!("{client_id:?} is not a GUID, and Entra client IDs always are"),
            "paste the Application (client) ID from the app registration's Overview page",
        ));
    }
    Ok(())
}

/// Every `[[connections]]` table, with the rules that span them: unique ids, each email domain
/// under one connection, at least one connection.
pub(super) fn validate_connections(
    raw: Vec<RawConnection>,
    env: &dyn Fn(&str) -> Option<String>,
    mode: Mode,
) -> Result<(Vec<ConnectionConfig>, Vec<Vec<SecretAsRead>>), ConfigError> {
    let mut connections = Vec::with_capacity(raw.len());
    let mut secrets = Vec::with_capacity(raw.len());
    for (i, rc) in raw.into_iter().enumerate() {
        let (conn, secret) = validate_connection(i, rc, env, mode)?;
        if connections
            .iter()
            .any(|c: &ConnectionConfig| c.id == conn.id)
        {
            return Err(invalid(
                format!("connections[{i}].id"),
                format!("the id {:?} is used by an earlier connection", conn.id),
                "give every connection its own id; it appears in /login?connection=ID",
            ));
        }
        for d in &conn.domains {
            if let Some(other) = connections
                .iter()
                .find(|c: &&ConnectionConfig| c.domains.contains(d))
            {
                return Err(invalid(
                    format!("connections[{i}].domains"),
                    format!(
                        "{d:?} is claimed by both connection {:?} and connection {:?}",
                        other.id, conn.id
                    ),
                    "list each email domain under one connection only: sign-ins for it are routed there",
                ));
            }
        }
        connections.push(conn);
        secrets.push(secret);
    }
    if connections.is_empty() {
        return Err(invalid(
            "connections",
            "no connection is configured, so nobody can sign in",
            "add a [[connections]] table with id, metadata_url, client_id and a secret or certificate",
        ));
    }
    Ok((connections, secrets))
}
