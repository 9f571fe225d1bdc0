//! Configuration: the raw settings read from TOML and `ENTRANCE_…` variables, and the validated
//! [`Config`] built from them once at startup.
//!
//! Two stages, as in ripgrep's `lowargs`/`hiargs`: [`RawConfig`] is whatever serde could parse;
//! [`Config::from_raw`] turns it into typed values (URLs, durations, secrets) or stops with an
//! error that names the key and the fix. Only what the file itself gets wrong stops startup:
//! anything that needs the network (an unreachable IdP, an issuer mismatch) is checked later by
//! [`crate::provider`], which marks that one connection not ready instead.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::{
    Date, OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description,
};
use url::Url;

use crate::{
    certificate::{AssertionAlg, CertificateCredential, CredentialFile},
    entra,
    identity::AccessPolicy,
    verifier::TenantAllowList,
};

/// The demo configuration, embedded so `entrance demo` works from any directory.
pub const DEMO_TOML: &str = include_str!("../config/entrance.toml");

/// The top-level keys of [`RawConfig`], which `ENTRANCE_<KEY>` variables may override.
const CONFIG_KEYS: &[&str] = &[
    "listen",
    "public_url",
    "session",
    "http",
    "validation",
    "keys",
    "logout",
    "rate_limit",
    "shutdown_grace_secs",
    "admin_listen",
    "traces",
    "allowed_return_hosts",
    "forward_auth",
    "demo",
    "connections",
];

/// Everything that can be wrong with a configuration file, each naming the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("`{key}`: {problem}\n  fix: {fix}")]
    Invalid {
        key: String,
        problem: String,
        fix: String,
    },
}

fn invalid(
    key: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw settings, exactly as written in the file.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: String,
    pub public_url: String,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub validation: RawValidation,
    #[serde(default)]
    pub keys: RawKeys,
    #[serde(default)]
    pub logout: RawLogout,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    /// A second address for `/metrics` and `/readyz`, off the public one.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// The failed-login history `entrance traces` reads.
    #[serde(default)]
    pub traces: RawTraces,
    /// How long in-flight requests may take to finish after SIGTERM / Ctrl-C.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Hosts an absolute `return_to` may name (apps on sibling hosts behind forward-auth).
    #[serde(default)]
    pub allowed_return_hosts: Vec<String>,
    #[serde(default)]
    pub forward_auth: RawForwardAuth,
    #[serde(default)]
    pub demo: Option<RawDemo>,
    #[serde(default)]
    pub connections: Vec<RawConnection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawForwardAuth {
    pub max_header_bytes: usize,
}

impl Default for RawForwardAuth {
    fn default() -> Self {
        Self {
            // About 100 group GUIDs. Proxies limit a response's headers as a whole (nginx's
            // proxy_buffer_size is 4 or 8 KiB by default); a bigger list belongs in app roles.
            max_header_bytes: 4096,
        }
    }
}

/// The smallest and largest `forward_auth.max_header_bytes` accepted.
const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 256..=65536;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKeys {
    pub refetch_cooldown_secs: u64,
    pub refresh_interval_secs: u64,
}

impl Default for RawKeys {
    fn default() -> Self {
        Self {
            // Microsoft's signing-key guidance: at most one on-demand refresh per 5 minutes,
            // and a background refresh every hour.
            refetch_cooldown_secs: 300,
            refresh_interval_secs: 3600,
        }
    }
}

fn default_shutdown_grace() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    pub per_ip_per_minute: u32,
    pub burst: u32,
    pub client_ip_header: Option<String>,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 60,
            burst: 30,
            client_ip_header: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogout {
    pub post_logout_redirect_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    pub store: String,
    pub cookie_name: String,
    pub idle_timeout_secs: u64,
    pub absolute_lifetime_secs: u64,
    pub cookie_domain: Option<String>,
    pub store_timeout_ms: u64,
    pub sqlite_path: String,
    pub redis_url: Option<String>,
    pub redis_key_prefix: String,
    pub redis_pool_size: usize,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            // SQLite by default: sessions survive a restart with nothing else to run. The demo
            // config says "memory" so it leaves no file behind.
            store: "sqlite".into(),
            cookie_name: "entrance".into(),
            idle_timeout_secs: 8 * 3600,
            absolute_lifetime_secs: 24 * 3600,
            cookie_domain: None,
            store_timeout_ms: 1000,
            sqlite_path: "entrance-sessions.db".into(),
            redis_url: None,
            redis_key_prefix: "entrance:session:".into(),
            redis_pool_size: 4,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub connect_timeout_secs: u64,
    pub timeout_secs: u64,
    pub max_response_bytes: usize,
    /// A PEM bundle of CA certificates trusted besides the built-in roots (a corporate
    /// TLS-inspecting proxy, an IdP with a private CA).
    pub extra_ca_file: Option<PathBuf>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            connect_timeout_secs: 3,
            timeout_secs: 10,
            max_response_bytes: 1024 * 1024,
            extra_ca_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTraces {
    /// Failed logins kept per connection (and for unknown connections); 0 keeps none.
    pub per_connection: usize,
}

impl Default for RawTraces {
    fn default() -> Self {
        Self {
            per_connection: crate::traces::DEFAULT_PER_CONNECTION,
        }
    }
}

/// The most failures `traces.per_connection` may keep: each is a few hundred bytes, and the
/// ring is for the recent past, not an archive.
const MAX_TRACES_PER_CONNECTION: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawValidation {
    pub clock_skew_secs: u64,
}

impl Default for RawValidation {
    fn default() -> Self {
        Self {
            clock_skew_secs: 300,
        }
    }
}

/// Settings only `entrance demo` reads: where it starts the bundled mock IdP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    pub mock_idp_listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnection {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub metadata_url: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// Several secrets for rotation, newest first: environment variables…
    #[serde(default)]
    pub client_secrets_env: Option<Vec<String>>,
    /// …and/or files (after the variables). Not combined with the single-secret keys.
    #[serde(default)]
    pub client_secret_files: Option<Vec<String>>,
    /// Instead of a secret: the certificate uploaded to the app registration (PEM or DER)…
    #[serde(default)]
    pub client_certificate_file: Option<String>,
    /// …and its RSA private key (PEM, PKCS#8 or PKCS#1).
    #[serde(default)]
    pub client_private_key_file: Option<String>,
    /// `PS256` (default) or `RS256`.
    #[serde(default)]
    pub client_assertion_alg: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub client_auth: Option<String>,
    #[serde(default)]
    pub response_mode: Option<String>,
    #[serde(default)]
    pub trusted_audiences: Vec<String>,
    /// When the client secret expires (RFC 3339 date or date-time), for `entrance check`.
    #[serde(default, deserialize_with = "string_or_toml_datetime")]
    pub client_secret_expires_at: Option<String>,
    /// The app's own tenant (Directory ID) for a `common`/`organizations` connection: the
    /// client-credentials grant of `entrance check --verify-secret` needs a tenant authority.
    #[serde(default)]
    pub home_tenant: Option<String>,
    /// The scope `entrance check --verify-secret` asks for in its client-credentials request.
    #[serde(default)]
    pub verify_scope: Option<String>,
    /// Tenant GUIDs (`tid`) allowed to sign in, or `["*"]` for any; required for a
    /// `common`/`organizations` metadata URL (ENTRA.md §5.3d).
    #[serde(default)]
    pub allowed_tenants: Option<Vec<String>>,
    /// Email domains whose users this connection signs in (`/login?login_hint=…`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Group object IDs (Entra `groups`) a user must be in, one of, to sign in…
    #[serde(default)]
    pub allowed_groups: Option<Vec<String>>,
    /// …or app role values (Entra `roles`) one of which the user must hold.
    #[serde(default)]
    pub allowed_roles: Option<Vec<String>>,
    /// Also call the IdP's userinfo endpoint at sign-in: its claims fill what the ID token
    /// left out, and its `sub` must be the ID token's.
    #[serde(default)]
    pub userinfo: bool,
}

// ---------------------------------------------------------------------------------------------
// Validated configuration.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The externally visible origin. The redirect URI is always derived from it, never from a
    /// request's Host header or scheme: behind a TLS-terminating proxy those say `http://` and an
    /// internal name, and Entra would answer AADSTS50011 (redirect URI mismatch).
    pub public_url: Url,
    pub session: SessionSettings,
    pub http: HttpSettings,
    pub clock_skew: Duration,
    pub keys: KeySettings,
    /// Where the IdP sends the browser after sign-out; must also be registered in Entra as a
    /// redirect URI of the app.
    pub post_logout_redirect_uri: Option<Url>,
    /// Lower-cased hosts an absolute `return_to` may name.
    pub allowed_return_hosts: Vec<String>,
    pub rate_limit: Option<RateLimitSettings>,
    /// Where `/metrics` (and `/readyz`) are served instead of the public listener.
    pub admin_listen: Option<SocketAddr>,
    /// Failed logins kept per connection for `/admin/traces`.
    pub traces_per_connection: usize,
    pub shutdown_grace: Duration,
    pub demo_mock_idp_listen: Option<SocketAddr>,
    pub forward_auth: ForwardAuthSettings,
    pub connections: Vec<ConnectionConfig>,
}

/// What `/auth` may add to the proxy's headers.
#[derive(Debug, Clone)]
pub struct ForwardAuthSettings {
    /// The most bytes of any one identity header's value; a list that does not fit keeps the
    /// whole items that do and is flagged `…-Truncated: true`.
    pub max_header_bytes: usize,
}

/// Per-client-IP limit on `/login` and `/login/callback`.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub per_minute: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
    /// Behind a proxy every request comes from the proxy's address; the client's address is
    /// then read from this header — only ever set it when a trusted proxy sets the header.
    pub client_ip_header: Option<ClientIpHeader>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`: the rightmost entry, the one the nearest (trusted) proxy appended.
    XForwardedFor,
    /// A header holding a single address, e.g. `X-Real-IP`.
    Single(String),
}

#[derive(Debug, Clone)]
pub struct KeySettings {
    pub refetch_cooldown: Duration,
    pub refresh_interval: Duration,
}

/// Where sessions live.
#[derive(Debug, Clone)]
pub enum StoreKind {
    /// In this process: lost on restart, not shared between instances.
    Memory,
    /// A SQLite file, created if missing.
    Sqlite {
        path: PathBuf,
    },
    Redis(RedisSettings),
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://`, possibly with `user:password@`: a secret, never logged.
    pub url: SecretString,
    /// Prepended to every session key, so several services can share one Redis.
    pub key_prefix: String,
    pub pool_size: usize,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub store: StoreKind,
    /// The most any one store call may take; past it the call fails (503) instead of hanging
    /// the request.
    pub store_timeout: Duration,
    /// The cookie name as sent: `__Host-` is prefixed when the public URL is https, so the
    /// browser refuses the cookie from any subdomain or over plain http.
    pub cookie_name: String,
    pub secure_cookie: bool,
    /// Set to share the session with apps on sibling hosts (forward-auth); then the
    /// `__Host-` prefix cannot be used and `__Secure-` is used instead.
    pub cookie_domain: Option<String>,
    pub idle_timeout: Duration,
    pub absolute_lifetime: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// CA certificates trusted besides the built-in roots (`http.extra_ca_file`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

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
}

impl ClientCredential {
    pub fn certificate(&self) -> Option<&CertificateCredential> {
        match self {
            ClientCredential::Certificate(c) => Some(c),
            ClientCredential::Secrets(_) => None,
        }
    }

    /// The credentials to try at the token endpoint, in order: each secret (newest first) with
    /// its label, or the certificate alone.
    pub fn attempts(&self) -> Vec<(Option<&str>, crate::token::Credential<'_>)> {
        match self {
            ClientCredential::Secrets(secrets) => secrets
                .iter()
                .map(|s| {
                    (
                        Some(s.label.as_str()),
                        crate::token::Credential::Secret(&s.value),
                    )
                })
                .collect(),
            ClientCredential::Certificate(c) => {
                vec![(None, crate::token::Credential::Certificate(c))]
            }
        }
    }

    /// The secrets' labels, newest first; empty for a certificate.
    pub fn secret_labels(&self) -> Vec<&str> {
        match self {
            ClientCredential::Secrets(secrets) => {
                secrets.iter().map(|s| s.label.as_str()).collect()
            }
            ClientCredential::Certificate(_) => Vec::new(),
        }
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
    /// Call the userinfo endpoint at sign-in (see [`crate::userinfo`]).
    pub userinfo: bool,
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
            scopes: vec!["openid".into()],
            client_auth: None,
            response_mode: ResponseMode::Query,
            trusted_audiences: vec![],
            client_secret_expires_at: None,
            home_tenant: None,
            verify_scope: None,
            domains: vec![],
            access: Default::default(),
            userinfo: false,
        }
    }
}

/// Where a connection's client secret came from, for `entrance check`'s messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// None or several of the three keys are set.
    Unknown,
    Inline,
    Env(String),
    File(String),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Unknown => f.write_str("no single source"),
            SecretSource::Inline => f.write_str("client_secret in the config file"),
            SecretSource::Env(var) => write!(f, "the environment variable {var}"),
            SecretSource::File(path) => write!(f, "the file {path}"),
        }
    }
}

/// A client secret exactly as read (untrimmed), or why it could not be read.
#[derive(Debug)]
pub struct SecretAsRead {
    pub source: SecretSource,
    /// The key and variable or file it came from, for logs (never the value).
    pub label: String,
    pub value: Result<SecretString, ConfigError>,
}

/// What `entrance check` loads: the configuration, validated except for the client ID's and
/// secret's shape, plus each secret as read. [`Config::from_raw`] stops at the first missing
/// or Secret-ID secret; the doctor must report every such problem as a line of its own.
#[derive(Debug)]
pub struct LenientConfig {
    /// In here, `client_id` and a client secret are trimmed but not judged: either may be
    /// empty, and the secret may be a Secret ID. A certificate is loaded and checked as in
    /// [`Config::from_raw`] (a file that cannot be used is a mistake in the file), except
    /// that its expiry is left to the doctor.
    pub config: Config,
    /// One list per connection, in the order of `config.connections`: each secret as read,
    /// newest first; empty for a connection with a certificate instead of a secret.
    pub secrets: Vec<Vec<SecretAsRead>>,
}

impl Config {
    /// Reads a TOML file with `ENTRANCE_…` overrides (`ENTRANCE_SESSION__STORE=memory`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::file_exact(path)))
    }

    /// Reads a TOML string (the embedded demo) with `ENTRANCE_…` overrides.
    pub fn load_str(toml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    /// [`Config::load`] for `entrance check`: see [`LenientConfig`].
    pub fn load_lenient(path: &Path) -> Result<LenientConfig, ConfigError> {
        Self::lenient_from_figment(Figment::new().merge(Toml::file_exact(path)))
    }

    /// [`Config::load_str`] for `entrance check`: see [`LenientConfig`].
    pub fn load_str_lenient(toml: &str) -> Result<LenientConfig, ConfigError> {
        Self::lenient_from_figment(Figment::new().merge(Toml::string(toml)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        Config::from_raw(extract(figment)?, &|name| std::env::var(name).ok())
    }

    fn lenient_from_figment(figment: Figment) -> Result<LenientConfig, ConfigError> {
        Config::from_raw_lenient(extract(figment)?, &|name| std::env::var(name).ok())
    }

    /// Validates raw settings. `env` looks up environment variables (injected for tests).
    pub fn from_raw(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::validate(raw, env, Mode::Strict).map(|(config, _)| config)
    }

    /// Validates raw settings like [`Config::from_raw`], except that the client ID's and
    /// secret's shape and the secret's presence are left to the caller (`entrance check`).
    pub fn from_raw_lenient(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LenientConfig, ConfigError> {
        Self::validate(raw, env, Mode::Lenient)
            .map(|(config, secrets)| LenientConfig { config, secrets })
    }

    fn validate(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        mode: Mode,
    ) -> Result<(Config, Vec<Vec<SecretAsRead>>), ConfigError> {
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{:?} is not an address and port", raw.listen),
                "write it like \"127.0.0.1:3000\" or \"0.0.0.0:8080\"",
            )
        })?;
        let public_url = parse_public_url(&raw.public_url)?;
        let secure_cookie = public_url.scheme() == "https";

        let store = validate_store(&raw.session)?;
        if raw.session.store_timeout_ms == 0 {
            return Err(invalid(
                "session.store_timeout_ms",
                "a timeout of 0 would fail every session read and write",
                "use a positive number of milliseconds, e.g. 1000",
            ));
        }
        if raw.session.cookie_name.is_empty()
            || !raw
                .session
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "session.cookie_name",
                format!("{:?} is not a usable cookie name", raw.session.cookie_name),
                "use letters, digits, '_' and '-' only",
            ));
        }
        let cookie_domain = match raw.session.cookie_domain.as_deref() {
            None | Some("") => None,
            Some(d) => {
                let d = d.trim_start_matches('.').to_ascii_lowercase();
                let host = public_url.host_str().unwrap_or("");
                if host != d && !host.ends_with(&format!(".{d}")) {
                    return Err(invalid(
                        "session.cookie_domain",
                        format!("{d:?} does not contain the public host {host:?}"),
                        "use the parent domain shared by entrance and the apps, e.g. \"example.com\" for sso.example.com and app.example.com",
                    ));
                }
                Some(d)
            }
        };
        // `__Host-` binds the cookie to exactly this host over https; with a Domain
        // attribute the strongest prefix left is `__Secure-`.
        let cookie_name = match (secure_cookie, &cookie_domain) {
            (true, None) => format!("__Host-{}", raw.session.cookie_name),
            (true, Some(_)) => format!("__Secure-{}", raw.session.cookie_name),
            (false, _) => raw.session.cookie_name.clone(),
        };
        if raw.session.idle_timeout_secs == 0 || raw.session.absolute_lifetime_secs == 0 {
            return Err(invalid(
                "session.idle_timeout_secs / session.absolute_lifetime_secs",
                "a session lifetime of 0 seconds signs nobody in",
                "use a positive number of seconds, e.g. 28800 (8 hours)",
            ));
        }
        let session = SessionSettings {
            store,
            store_timeout: Duration::from_millis(raw.session.store_timeout_ms),
            cookie_name,
            secure_cookie,
            cookie_domain,
            idle_timeout: Duration::from_secs(raw.session.idle_timeout_secs),
            absolute_lifetime: Duration::from_secs(raw.session.absolute_lifetime_secs),
        };

        if raw.http.timeout_secs == 0 || raw.http.connect_timeout_secs == 0 {
            return Err(invalid(
                "http.timeout_secs / http.connect_timeout_secs",
                "a timeout of 0 would fail every call to the IdP",
                "use a few seconds, e.g. connect 3, total 10",
            ));
        }
        let http = HttpSettings {
            connect_timeout: Duration::from_secs(raw.http.connect_timeout_secs),
            timeout: Duration::from_secs(raw.http.timeout_secs),
            max_response_bytes: raw.http.max_response_bytes.max(16 * 1024),
            extra_roots: match &raw.http.extra_ca_file {
                Some(path) => load_ca_bundle(path)?,
                None => Vec::new(),
            },
        };
        if raw.traces.per_connection > MAX_TRACES_PER_CONNECTION {
            return Err(invalid(
                "traces.per_connection",
                format!(
                    "{} is more than the {MAX_TRACES_PER_CONNECTION} failures a connection may keep",
                    raw.traces.per_connection
                ),
                "keep the default 50, or a few hundred at most; the log has the full history",
            ));
        }

        let demo_mock_idp_listen = match raw.demo {
            Some(demo) => Some(demo.mock_idp_listen.parse().map_err(|_| {
                invalid(
                    "demo.mock_idp_listen",
                    format!("{:?} is not an address and port", demo.mock_idp_listen),
                    "write it like \"127.0.0.1:9090\"",
                )
            })?),
            None => None,
        };

        if raw.keys.refresh_interval_secs == 0 {
            return Err(invalid(
                "keys.refresh_interval_secs",
                "0 would refetch the keys continuously",
                "use 3600 (an hour, Microsoft's guidance) or more",
            ));
        }
        let keys = KeySettings {
            refetch_cooldown: Duration::from_secs(raw.keys.refetch_cooldown_secs),
            refresh_interval: Duration::from_secs(raw.keys.refresh_interval_secs),
        };
        let post_logout_redirect_uri = match raw.logout.post_logout_redirect_uri.as_deref() {
            None => None,
            Some(u) => Some(Url::parse(u).map_err(|e| {
                invalid(
                    "logout.post_logout_redirect_uri",
                    format!("{u:?} is not a URL ({e})"),
                    "use an absolute URL registered as a redirect URI of the app, e.g. \"https://sso.example.com/\"",
                )
            })?),
        };
        let mut allowed_return_hosts = Vec::new();
        for (i, h) in raw.allowed_return_hosts.iter().enumerate() {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains(['/', ':', '*', ' ']) {
                return Err(invalid(
                    format!("allowed_return_hosts[{i}]"),
                    format!("{h:?} is not a host name"),
                    "list bare host names, e.g. \"app.example.com\" (no scheme, port or wildcard)",
                ));
            }
            allowed_return_hosts.push(h);
        }

        let rate_limit = match (
            std::num::NonZeroU32::new(raw.rate_limit.per_ip_per_minute),
            std::num::NonZeroU32::new(raw.rate_limit.burst),
        ) {
            (None, _) => None,
            (Some(per_minute), burst) => Some(RateLimitSettings {
                per_minute,
                burst: burst.unwrap_or(per_minute),
                client_ip_header: match raw.rate_limit.client_ip_header.as_deref() {
                    None | Some("") => None,
                    Some(h) if h.eq_ignore_ascii_case("x-forwarded-for") => {
                        Some(ClientIpHeader::XForwardedFor)
                    }
                    Some(h) => {
                        if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                            return Err(invalid(
                                "rate_limit.client_ip_header",
                                format!("{h:?} is not a header name"),
                                "use the header your proxy sets, e.g. \"X-Forwarded-For\" or \"X-Real-IP\"",
                            ));
                        }
                        Some(ClientIpHeader::Single(h.to_ascii_lowercase()))
                    }
                },
            }),
        };

        let admin_listen = match raw.admin_listen.as_deref() {
            None | Some("") => None,
            Some(a) => Some(a.parse().map_err(|_| {
                invalid(
                    "admin_listen",
                    format!("{a:?} is not an address and port"),
                    "write it like \"127.0.0.1:9100\"",
                )
            })?),
        };

        let mut connections = Vec::with_capacity(raw.connections.len());
        let mut secrets = Vec::with_capacity(raw.connections.len());
        for (i, rc) in raw.connections.into_iter().enumerate() {
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

        if !MAX_HEADER_BYTES_RANGE.contains(&raw.forward_auth.max_header_bytes) {
            return Err(invalid(
                "forward_auth.max_header_bytes",
                format!(
                    "{} is outside {}..={}",
                    raw.forward_auth.max_header_bytes,
                    MAX_HEADER_BYTES_RANGE.start(),
                    MAX_HEADER_BYTES_RANGE.end()
                ),
                "leave it out for 4096, or pick a size your proxy's header buffer can hold",
            ));
        }
        let forward_auth = ForwardAuthSettings {
            max_header_bytes: raw.forward_auth.max_header_bytes,
        };

        let config = Config {
            listen,
            public_url,
            session,
            http,
            clock_skew: Duration::from_secs(raw.validation.clock_skew_secs),
            keys,
            post_logout_redirect_uri,
            allowed_return_hosts,
            rate_limit,
            admin_listen,
            traces_per_connection: raw.traces.per_connection,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs),
            demo_mock_idp_listen,
            forward_auth,
            connections,
        };
        Ok((config, secrets))
    }

    /// The one redirect URI: `{public_url}/login/callback`. Register exactly this in Entra
    /// (App registrations → Authentication → Web → Redirect URIs).
    pub fn redirect_uri(&self) -> String {
        format!("{}/login/callback", self.public_origin())
    }

    /// The public URL without a trailing slash.
    pub fn public_origin(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    pub fn connection(&self, id: &str) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.id == id)
    }
}

/// `http.extra_ca_file`: one or more PEM certificates. A file that cannot be read, holds no
/// certificate or a broken one stops startup: silently trusting nothing extra would only
/// surface later as a TLS error against the IdP.
fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    const KEY: &str = "http.extra_ca_file";
    let pem = std::fs::read(path).map_err(|e| {
        invalid(
            KEY,
            format!("cannot read {}: {e}", path.display()),
            "point it at a readable PEM file of CA certificates",
        )
    })?;
    let fix = "use a PEM bundle: one or more -----BEGIN CERTIFICATE----- blocks (convert DER with `openssl x509 -inform der -in ca.cer -out ca.pem`)";
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        invalid(
            KEY,
            format!("{} is not a PEM certificate bundle ({e})", path.display()),
            fix,
        )
    })?;
    if certs.is_empty() {
        return Err(invalid(
            KEY,
            format!("{} holds no PEM certificate", path.display()),
            fix,
        ));
    }
    // reqwest only parses the DER when a client is built; build one here so a broken
    // certificate is reported against this key instead of as a bare client error.
    for (i, cert) in certs.iter().enumerate() {
        reqwest::Client::builder()
            .add_root_certificate(cert.clone())
            .build()
            .map_err(|e| {
                invalid(
                    KEY,
                    format!(
                        "certificate #{} in {} is not usable as a CA ({e})",
                        i + 1,
                        path.display()
                    ),
                    fix,
                )
            })?;
    }
    Ok(certs)
}

fn validate_store(raw: &RawSession) -> Result<StoreKind, ConfigError> {
    match raw.store.as_str() {
        "memory" => Ok(StoreKind::Memory),
        "sqlite" => {
            if raw.sqlite_path.trim().is_empty() {
                return Err(invalid(
                    "session.sqlite_path",
                    "is empty",
                    "name the SQLite file sessions are kept in, e.g. \"/var/lib/entrance/sessions.db\"",
                ));
            }
            Ok(StoreKind::Sqlite {
                path: PathBuf::from(&raw.sqlite_path),
            })
        }
        "redis" => {
            let fix = "write it like \"redis://127.0.0.1:6379\", \"rediss://user:password@host:6380/0\" (TLS), or set ENTRANCE_SESSION__REDIS_URL";
            let Some(url) = raw.redis_url.as_deref().filter(|u| !u.trim().is_empty()) else {
                return Err(invalid(
                    "session.redis_url",
                    "session.store is \"redis\" but no Redis URL is configured",
                    fix,
                ));
            };
            // The URL may carry a password: the problem text never repeats it.
            let parsed = Url::parse(url.trim())
                .map_err(|e| invalid("session.redis_url", format!("is not a URL ({e})"), fix))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host().is_none() {
                return Err(invalid(
                    "session.redis_url",
                    format!(
                        "the scheme {:?} is not redis or rediss, or the host is missing",
                        parsed.scheme()
                    ),
                    fix,
                ));
            }
            if raw.redis_pool_size == 0 || raw.redis_pool_size > 64 {
                return Err(invalid(
                    "session.redis_pool_size",
                    format!(
                        "{} connections is not a usable pool size",
                        raw.redis_pool_size
                    ),
                    "use 1 to 64 (the default, 4, suits most deployments)",
                ));
            }
            Ok(StoreKind::Redis(RedisSettings {
                url: SecretString::from(url.trim().to_owned()),
                key_prefix: raw.redis_key_prefix.clone(),
                pool_size: raw.redis_pool_size,
            }))
        }
        other => Err(invalid(
            "session.store",
            format!("unknown store {other:?}"),
            "use \"sqlite\" (default), \"redis\" or \"memory\"",
        )),
    }
}

/// A TOML date written without quotes (`2027-05-01`) reaches serde as the toml crate's
/// private one-entry datetime map, not as a string; accept both so the quotes do not matter.
fn string_or_toml_datetime<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        String(String),
        TomlDatetime(std::collections::BTreeMap<String, String>),
    }
    Ok(match Option::<Value>::deserialize(d)? {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::TomlDatetime(m)) => m.into_values().next(),
    })
}

fn extract(figment: Figment) -> Result<RawConfig, ConfigError> {
    Ok(figment
        .merge(
            Env::prefixed("ENTRANCE_")
                // Only variables that name a configuration key are overrides; others with
                // the prefix (ENTRANCE_LOG_JSON, or an admin's ENTRANCE_CONTOSO_SECRET
                // holding a client secret) are not.
                .filter(|key| {
                    let top = key.as_str().split("__").next().unwrap_or("");
                    CONFIG_KEYS.iter().any(|k| top.eq_ignore_ascii_case(k))
                })
                .split("__"),
        )
        .extract()
        .map_err(Box::new)?)
}

/// Strict: every mistake stops (the service). Lenient: the client ID's and secret's shape are
/// judged by `entrance check` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Lenient,
}

fn parse_public_url(value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| {
        invalid(
            "public_url",
            format!("{value:?} is not a URL ({e})"),
            "use the address users type, e.g. \"https://sso.example.com\"",
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            "public_url",
            format!("{value:?} is not an http(s) URL"),
            "use the address users type, e.g. \"https://sso.example.com\"",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        return Err(invalid(
            "public_url",
            format!("{value:?} has a path, query or fragment"),
            "use just the origin, e.g. \"https://sso.example.com\"; entrance serves /login/callback under it",
        ));
    }
    if url.scheme() == "http" && !is_loopback_host(&url) {
        return Err(invalid(
            "public_url",
            format!("{value:?} is plain http on a non-loopback host"),
            "use https (Entra accepts http redirect URIs only for localhost); terminate TLS in a proxy if needed",
        ));
    }
    Ok(url)
}

pub(crate) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn validate_connection(
    i: usize,
    rc: RawConnection,
    env: &dyn Fn(&str) -> Option<String>,
    mode: Mode,
) -> Result<(ConnectionConfig, Vec<SecretAsRead>), ConfigError> {
    let key = |k: &str| format!("connections[{i}].{k}");
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
    match metadata_url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&metadata_url) => {}
        _ => {
            return Err(invalid(
                key("metadata_url"),
                format!("{:?} is not https", rc.metadata_url),
                "use the https URL; plain http is only accepted on loopback (tests and the demo)",
            ));
        }
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

    let is_entra = entra::is_entra_url(&metadata_url);
    let client_id = rc.client_id.trim().to_owned();
    let has_certificate =
        rc.client_certificate_file.is_some() || rc.client_private_key_file.is_some();
    let has_secret = rc.client_secret.is_some()
        || rc.client_secret_env.is_some()
        || rc.client_secret_file.is_some()
        || rc.client_secrets_env.is_some()
        || rc.client_secret_files.is_some();
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
    if mode == Mode::Strict {
        check_client_id(&client_id, is_entra, &key)?;
    }
    let (credential, read) = if has_certificate {
        let cert = load_certificate(&rc, &key, mode)?;
        (ClientCredential::Certificate(cert), Vec::new())
    } else {
        let reads = read_secrets(&rc, &key, env);
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
    };

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

    let scopes = rc
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
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

    let client_auth = match rc.client_auth.as_deref() {
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
    };
    let response_mode = match rc.response_mode.as_deref() {
        None | Some("query") => ResponseMode::Query,
        Some("form_post") => ResponseMode::FormPost,
        Some(other) => {
            return Err(invalid(
                key("response_mode"),
                format!("unknown response mode {other:?}"),
                "use \"query\" (default) or \"form_post\"",
            ));
        }
    };

    let domains = email_domains(&rc.domains, &key("domains"))?;
    let access = AccessPolicy {
        groups: access_list(rc.allowed_groups.as_deref(), &key("allowed_groups"))?,
        roles: access_list(rc.allowed_roles.as_deref(), &key("allowed_roles"))?,
    };

    let conn = ConnectionConfig {
        name: rc.name.clone().unwrap_or_else(|| rc.id.clone()),
        id: rc.id,
        metadata_url,
        expected_issuer,
        client_id,
        credential,
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
        userinfo: rc.userinfo,
    };
    Ok((conn, read))
}

/// `domains`: bare DNS names (ASCII; an internationalised domain in its `xn--` form),
/// lower-cased, each once. Matched exactly against the part of a `login_hint` after `@`.
fn email_domains(list: &[String], key: &str) -> Result<Vec<String>, ConfigError> {
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
fn is_host_name(d: &str) -> bool {
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
fn access_list(list: Option<&[String]>, key: &str) -> Result<Vec<String>, ConfigError> {
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
/// Entra tenant's users sign in, so it must say which (ENTRA.md §5.3d); elsewhere the key is
/// optional and, when set, enforced on `tid` as well.
fn allowed_tenants(
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
        // `tid` is always the GUID (ENTRA.md §4), never a domain such as contoso.com.
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

/// Days before a certificate's notAfter from which startup warns (as the doctor does).
const CERTIFICATE_WARNING_DAYS: i64 = 30;

/// Loads and checks `client_certificate_file` and `client_private_key_file`. An expired
/// certificate stops the service (Entra refuses every assertion it signs, AADSTS700027); the
/// lenient path leaves expiry to `entrance check`, which reports it as a line.
fn load_certificate(
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

/// Past notAfter: an error. Within [`CERTIFICATE_WARNING_DAYS`] or not yet valid: a warning.
fn check_certificate_dates(
    cred: &CertificateCredential,
    now: OffsetDateTime,
    id: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if cred.not_after <= now {
        return Err(invalid(
            key("client_certificate_file"),
            format!(
                "the certificate (thumbprint {}) expired on {}; Entra refuses assertions signed for it (AADSTS700027)",
                cred.thumbprint_hex,
                cred.not_after.date()
            ),
            "upload a new certificate under Certificates & secrets → Certificates, point client_certificate_file and client_private_key_file at it, then delete the expired one",
        ));
    }
    let days = (cred.not_after - now).whole_days();
    if days < CERTIFICATE_WARNING_DAYS {
        tracing::warn!(
            connection = %id,
            thumbprint = %cred.thumbprint_hex,
            not_after = %cred.not_after,
            days,
            "the client certificate expires soon; upload a new certificate, point the configuration at it, then delete the old one"
        );
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

fn check_client_id(
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

/// Judges a secret as read; returns it trimmed.
fn check_secret(
    secret: &str,
    is_entra: bool,
    id: &str,
    label: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<String, ConfigError> {
    if secret != secret.trim() {
        tracing::warn!(
            connection = %id,
            secret = label,
            "the client secret starts or ends with whitespace; it was trimmed"
        );
    }
    let secret = secret.trim().to_owned();
    if secret.is_empty() {
        return Err(invalid(
            key("client_secret_env"),
            "the client secret is empty",
            "set it to the secret's Value from Certificates & secrets",
        ));
    }
    if entra::is_guid(&secret) {
        if is_entra {
            return Err(invalid(
                key("client_secret"),
                SECRET_ID_PROBLEM,
                SECRET_ID_FIX,
            ));
        }
        tracing::warn!(
            connection = %id,
            secret = label,
            "the client secret looks like a GUID; if this IdP shows a secret ID beside the secret, make sure the value was pasted"
        );
    }
    Ok(secret)
}

/// Shared with `entrance check`, which says the same about a Secret ID.
pub const SECRET_ID_PROBLEM: &str =
    "the client secret is a GUID: that is the Secret ID, not the secret's Value";
pub const SECRET_ID_FIX: &str = "in Certificates & secrets, copy the Value column (shown only right after creation; create a new secret if it is hidden)";

/// `2027-05-01` (00:00 UTC that day) or an RFC 3339 date-time such as Graph's
/// `endDateTime`, `2027-05-01T09:30:00Z`.
fn parse_expiry(value: &str) -> Option<OffsetDateTime> {
    let value = value.trim();
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t);
    }
    Date::parse(value, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc())
}

/// The secret comes from exactly one of: an environment variable (recommended), a file (e.g. a
/// mounted Kubernetes secret), or the config itself (allowed, warned: config files get shared).
/// During a rotation, `client_secrets_env` and/or `client_secret_files` list several instead,
/// newest first (variables before files). Each read comes with the key of its list item, if any.
fn read_secrets(
    rc: &RawConnection,
    key: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(SecretAsRead, Option<String>)> {
    let given = [
        rc.client_secret.is_some(),
        rc.client_secret_env.is_some(),
        rc.client_secret_file.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    let listed = rc.client_secrets_env.is_some() || rc.client_secret_files.is_some();
    let unknown = |err| {
        vec![(
            SecretAsRead {
                source: SecretSource::Unknown,
                label: "client_secret".to_owned(),
                value: Err(err),
            },
            None,
        )]
    };
    if given > 1 {
        return unknown(invalid(
            key("client_secret_env"),
            "more than one of client_secret, client_secret_env and client_secret_file is set",
            "keep one; client_secret_env is recommended",
        ));
    }
    if given == 1 && listed {
        return unknown(invalid(
            key("client_secrets_env"),
            "both a single secret (client_secret, client_secret_env or client_secret_file) and a list (client_secrets_env, client_secret_files) are set",
            "move the single secret into the list, newest first, e.g. client_secrets_env = [\"NEW\", \"OLD\"]",
        ));
    }
    if listed {
        let mut reads = Vec::new();
        for (j, var) in rc.client_secrets_env.iter().flatten().enumerate() {
            let item = key(&format!("client_secrets_env[{j}]"));
            let read = read_env_secret(var, &item, format!("client_secrets_env {var}"), env);
            reads.push((read, Some(item)));
        }
        for (j, path) in rc.client_secret_files.iter().flatten().enumerate() {
            let item = key(&format!("client_secret_files[{j}]"));
            let read = read_file_secret(path, &item, format!("client_secret_files {path}"));
            reads.push((read, Some(item)));
        }
        if reads.is_empty() {
            return unknown(invalid(
                key("client_secrets_env"),
                "the secret lists are empty",
                "list at least one variable (client_secrets_env) or file (client_secret_files), newest first",
            ));
        }
        return reads;
    }
    let read = if let Some(var) = &rc.client_secret_env {
        read_env_secret(
            var,
            &key("client_secret_env"),
            format!("client_secret_env {var}"),
            env,
        )
    } else if let Some(path) = &rc.client_secret_file {
        read_file_secret(
            path,
            &key("client_secret_file"),
            format!("client_secret_file {path}"),
        )
    } else if let Some(secret) = &rc.client_secret {
        // The warning is for real secrets in files that get shared. The mock IdP's fake
        // secret is public already (`mock_idp::DEFAULT_CLIENT_SECRET`, written inline in the
        // demo's own config/entrance.toml), so `entrance demo` does not warn about itself.
        if secret != crate::mock_idp::DEFAULT_CLIENT_SECRET {
            tracing::warn!(
                connection = %rc.id,
                "the client secret is written in the config file; prefer client_secret_env or client_secret_file"
            );
        }
        SecretAsRead {
            source: SecretSource::Inline,
            label: "client_secret".to_owned(),
            value: Ok(SecretString::from(secret.clone())),
        }
    } else {
        return unknown(invalid(
            key("client_secret_env"),
            "no client secret is configured",
            "set client_secret_env to the name of a variable holding the secret's Value (Certificates & secrets → Value), or use a certificate: client_certificate_file and client_private_key_file",
        ));
    };
    vec![(read, None)]
}

fn read_env_secret(
    var: &str,
    key: &str,
    label: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> SecretAsRead {
    let value = env(var).map(SecretString::from).ok_or_else(|| {
        invalid(
            key,
            format!("the environment variable {var} is not set"),
            format!("export {var}=<the secret's Value from Certificates & secrets>"),
        )
    });
    SecretAsRead {
        source: SecretSource::Env(var.to_owned()),
        label,
        value,
    }
}

fn read_file_secret(path: &str, key: &str, label: String) -> SecretAsRead {
    let value = std::fs::read_to_string(path)
        .map(|mut s| {
            // A text file's final newline is a file convention, not part of the secret:
            // dropping it here keeps the whitespace warning for real padding only.
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            SecretString::from(s)
        })
        .map_err(|e| {
            invalid(
                key,
                format!("cannot read {path}: {e}"),
                "point it at a readable file holding only the secret's Value",
            )
        });
    SecretAsRead {
        source: SecretSource::File(path.to_owned()),
        label,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(extra_conn: &str) -> String {
        format!(
            r#"
listen = "127.0.0.1:0"
public_url = "https://sso.example.com"
[[connections]]
id = "contoso"
metadata_url = "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration"
client_id = "00001111-aaaa-2222-bbbb-3333cccc4444"
{extra_conn}
"#
        )
    }

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)?;
        Config::from_raw(raw, &|name| {
            (name == "SECRET").then(|| "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR".to_owned())
        })
    }

    fn err_key(toml: &str) -> String {
        match parse(toml) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid-key error, got {other:?}"),
        }
    }

    /// A file in a fresh temporary directory, removed with it.
    fn temp_file(name: &str, contents: &[u8]) -> (PathBuf, impl Drop) {
        struct Dir(PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = std::env::temp_dir().join(format!("entrance-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write");
        (path, Dir(dir))
    }

    #[test]
    fn an_extra_ca_bundle_is_loaded_with_every_certificate() {
        let a =
            crate::mock_idp::TestCertificate::generate_valid_for_days("ca-a", 30).expect("cert");
        let b =
            crate::mock_idp::TestCertificate::generate_valid_for_days("ca-b", 30).expect("cert");
        let bundle = format!("# corporate roots\n{}\n{}", a.cert_pem, b.cert_pem);
        let (path, _dir) = temp_file("ca.pem", bundle.as_bytes());
        // `[http]` must come after the top-level keys: put it last.
        let toml = format!(
            "{}\n[http]\nextra_ca_file = {:?}\n",
            raw(r#"client_secret_env = "SECRET""#),
            path.display().to_string()
        );
        let cfg = parse(&toml).expect("valid");
        assert_eq!(cfg.http.extra_roots.len(), 2);
        crate::http_client::HttpClient::new(&cfg.http).expect("the client takes the roots");
        assert!(
            parse(&raw(r#"client_secret_env = "SECRET""#))
                .expect("valid")
                .http
                .extra_roots
                .is_empty()
        );
    }

    #[test]
    fn a_bad_extra_ca_file_stops_startup_naming_the_key() {
        let key_of = |contents: Option<&[u8]>| {
            let (path, _dir) = temp_file("ca.pem", contents.unwrap_or(b""));
            let path = if contents.is_some() {
                path
            } else {
                path.with_file_name("missing.pem")
            };
            let toml = format!(
                "{}\n[http]\nextra_ca_file = {:?}\n",
                raw(r#"client_secret_env = "SECRET""#),
                path.display().to_string()
            );
            err_key(&toml)
        };
        assert_eq!(key_of(None), "http.extra_ca_file", "missing file");
        assert_eq!(
            key_of(Some(b"not a certificate")),
            "http.extra_ca_file",
            "no PEM block"
        );
        assert_eq!(
            key_of(Some(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )),
            "http.extra_ca_file",
            "a block that is not a certificate"
        );
    }

    #[test]
    fn traces_per_connection_defaults_to_50_and_is_bounded() {
        let base = raw(r#"client_secret_env = "SECRET""#);
        assert_eq!(parse(&base).expect("valid").traces_per_connection, 50);
        let set = |n: usize| format!("{base}\n[traces]\nper_connection = {n}\n");
        assert_eq!(parse(&set(5)).expect("valid").traces_per_connection, 5);
        assert_eq!(err_key(&set(1_000_000)), "traces.per_connection");
    }

    #[test]
    fn a_good_config_validates_and_derives_the_redirect_uri_and_issuer() {
        let cfg = parse(&raw(r#"client_secret_env = "SECRET""#)).expect("valid");
        assert_eq!(cfg.redirect_uri(), "https://sso.example.com/login/callback");
        assert_eq!(cfg.session.cookie_name, "__Host-entrance");
        assert!(cfg.session.secure_cookie);
        let c = &cfg.connections[0];
        assert_eq!(
            c.expected_issuer,
            "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0"
        );
        assert_eq!(c.scopes, ["openid", "profile", "email"]);
    }

    fn multi_tenant(authority: &str, extra: &str) -> String {
        raw(&format!("client_secret_env = \"SECRET\"\n{extra}")).replace(
            "aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0",
            &format!("{authority}/v2.0"),
        )
    }

    #[test]
    fn a_multi_tenant_url_requires_allowed_tenants() {
        for authority in ["common", "organizations"] {
            match parse(&multi_tenant(authority, "")) {
                Err(ConfigError::Invalid { key, problem, fix }) => {
                    assert_eq!(key, "connections[0].allowed_tenants");
                    assert!(problem.contains(authority), "{problem}");
                    assert!(fix.contains("\"*\""), "{fix}");
                }
                other => panic!("expected allowed_tenants to be required, got {other:?}"),
            }
            let cfg = parse(&multi_tenant(
                authority,
                r#"allowed_tenants = ["AAAABBBB-0000-cccc-1111-dddd2222eeee"]"#,
            ))
            .expect("valid");
            let c = &cfg.connections[0];
            assert_eq!(
                c.issuer_template.as_deref(),
                Some("https://login.microsoftonline.com/{tenantid}/v2.0")
            );
            assert_eq!(
                c.allowed_tenants,
                TenantAllowList::Only(vec!["aaaabbbb-0000-cccc-1111-dddd2222eeee".into()])
            );
        }
        let any = parse(&multi_tenant("common", r#"allowed_tenants = ["*"]"#)).expect("valid");
        assert_eq!(any.connections[0].allowed_tenants, TenantAllowList::Any);
    }

    #[test]
    fn allowed_tenants_must_be_guids_or_a_lone_star() {
        for bad in [
            r#"allowed_tenants = []"#,
            r#"allowed_tenants = ["contoso.onmicrosoft.com"]"#,
            r#"allowed_tenants = ["*", "aaaabbbb-0000-cccc-1111-dddd2222eeee"]"#,
        ] {
            assert_eq!(
                err_key(&multi_tenant("common", bad)),
                "connections[0].allowed_tenants",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_single_tenant_url_may_set_allowed_tenants() {
        let cfg = parse(&raw(r#"client_secret_env = "SECRET""#)).expect("valid");
        let c = &cfg.connections[0];
        assert_eq!(c.allowed_tenants, TenantAllowList::Any);
        assert_eq!(c.issuer_template, None);
        let cfg = parse(&raw(
            "client_secret_env = \"SECRET\"\nallowed_tenants = [\"aaaabbbb-0000-cccc-1111-dddd2222eeee\"]",
        ))
        .expect("valid");
        assert!(matches!(
            cfg.connections[0].allowed_tenants,
            TenantAllowList::Only(_)
        ));
    }

    #[test]
    fn a_secret_id_guid_is_refused_for_entra() {
        let toml = raw(r#"client_secret = "c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f""#);
        match parse(&toml) {
            Err(ConfigError::Invalid { key, problem, .. }) => {
                assert_eq!(key, "connections[0].client_secret");
                assert!(problem.contains("Secret ID"), "{problem}");
            }
            other => panic!("expected Secret ID error, got {other:?}"),
        }
    }

    #[test]
    fn a_guid_secret_is_only_a_warning_elsewhere() {
        let toml = r#"
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:3000"
[[connections]]
id = "other"
metadata_url = "https://idp.example.org/.well-known/openid-configuration"
client_id = "entrance"
client_secret = "c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f"
"#;
        assert!(parse(toml).is_ok());
    }

    #[test]
    fn secret_lists_keep_their_order_and_label_each_secret() {
        let dir = std::env::temp_dir().join(format!("entrance-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("old");
        std::fs::write(&file, "oldQ~secret-from-a-file-000000000000000\n").expect("write");
        let toml = raw(&format!(
            "client_secrets_env = [\"NEW\"]\nclient_secret_files = [{:?}]",
            file.display().to_string()
        ));
        let raw_cfg: RawConfig = Figment::new()
            .merge(Toml::string(&toml))
            .extract()
            .expect("parses");
        let cfg = Config::from_raw(raw_cfg, &|name| {
            (name == "NEW").then(|| "newQ~secret-from-the-env-00000000000000".to_owned())
        })
        .expect("valid");
        let labels: Vec<String> = cfg.connections[0]
            .credential
            .secret_labels()
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            labels,
            vec![
                "client_secrets_env NEW".to_owned(),
                format!("client_secret_files {}", file.display())
            ]
        );
        match &cfg.connections[0].credential {
            ClientCredential::Secrets(s) => {
                assert_eq!(
                    s[1].value.expose_secret(),
                    "oldQ~secret-from-a-file-000000000000000"
                );
            }
            other => panic!("expected secrets, got {other:?}"),
        }
        // The single key still works and is labelled by its key and variable.
        let cfg = parse(&raw(r#"client_secret_env = "SECRET""#)).expect("valid");
        assert_eq!(
            cfg.connections[0].credential.secret_labels(),
            vec!["client_secret_env SECRET"]
        );
    }

    #[test]
    fn secret_lists_are_checked_by_item() {
        assert_eq!(
            err_key(&raw(
                "client_secret_env = \"SECRET\"\nclient_secrets_env = [\"SECRET\"]"
            )),
            "connections[0].client_secrets_env"
        );
        assert_eq!(
            err_key(&raw("client_secrets_env = []")),
            "connections[0].client_secrets_env"
        );
        assert_eq!(
            err_key(&raw("client_secrets_env = [\"SECRET\", \"UNSET_VAR\"]")),
            "connections[0].client_secrets_env[1]"
        );
        assert_eq!(
            err_key(&raw("client_secret_files = [\"/nonexistent/secret\"]")),
            "connections[0].client_secret_files[0]"
        );
    }

    #[test]
    fn missing_secret_names_the_key() {
        assert_eq!(err_key(&raw("")), "connections[0].client_secret_env");
        assert_eq!(
            err_key(&raw(r#"client_secret_env = "UNSET_VAR""#)),
            "connections[0].client_secret_env"
        );
    }

    #[test]
    fn non_https_metadata_off_loopback_is_refused() {
        let toml = raw(r#"client_secret_env = "SECRET""#).replace(
            "https://login.microsoftonline",
            "http://login.microsoftonline",
        );
        assert_eq!(err_key(&toml), "connections[0].metadata_url");
    }

    #[test]
    fn bad_urls_are_refused() {
        let toml =
            raw(r#"client_secret_env = "SECRET""#).replace("https://sso.example.com", "not a url");
        assert_eq!(err_key(&toml), "public_url");
        let toml = raw(r#"client_secret_env = "SECRET""#)
            .replace("https://sso.example.com", "http://sso.example.com");
        assert_eq!(err_key(&toml), "public_url");
        let toml = raw(r#"client_secret_env = "SECRET""#)
            .replace("/.well-known/openid-configuration", "/");
        assert_eq!(err_key(&toml), "connections[0].metadata_url");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let one = raw(r#"client_secret_env = "SECRET""#);
        let second = one
            .split("[[connections]]")
            .nth(1)
            .expect("has a connection")
            .to_owned();
        let toml = format!("{one}\n[[connections]]{second}");
        assert_eq!(err_key(&toml), "connections[1].id");
    }

    #[test]
    fn domains_are_lower_cased_host_names_each_under_one_connection() {
        let cfg = parse(&raw(
            "client_secret_env = \"SECRET\"\ndomains = [\"Contoso.COM\", \"contoso.com.\", \"eu.contoso.com\"]",
        ))
        .expect("valid");
        assert_eq!(
            cfg.connections[0].domains,
            ["contoso.com", "eu.contoso.com"]
        );
        for bad in [
            "\"@contoso.com\"",
            "\"*.contoso.com\"",
            "\"https://contoso.com\"",
            "\"contoso\"",
            "\"\"",
        ] {
            assert_eq!(
                err_key(&raw(&format!(
                    "client_secret_env = \"SECRET\"\ndomains = [{bad}]"
                ))),
                "connections[0].domains",
                "{bad}"
            );
        }
        let one = raw("client_secret_env = \"SECRET\"\ndomains = [\"contoso.com\"]");
        let second = one
            .split("[[connections]]")
            .nth(1)
            .expect("has a connection")
            .replace("id = \"contoso\"", "id = \"fabrikam\"")
            .replace("[\"contoso.com\"]", "[\"fabrikam.com\", \"CONTOSO.com\"]");
        let err = parse(&format!("{one}\n[[connections]]{second}")).expect_err("shared domain");
        let text = err.to_string();
        assert!(text.contains("connections[1].domains"), "{text}");
        assert!(
            text.contains("\"contoso\"") && text.contains("\"fabrikam\""),
            "{text}"
        );
    }

    #[test]
    fn allowed_groups_and_roles_must_name_something() {
        let cfg = parse(&raw(
            "client_secret_env = \"SECRET\"\nallowed_groups = [\" g1 \"]\nallowed_roles = [\"App.Admin\"]",
        ))
        .expect("valid");
        assert_eq!(cfg.connections[0].access.groups, ["g1"]);
        assert_eq!(cfg.connections[0].access.roles, ["App.Admin"]);
        assert!(
            !parse(&raw("client_secret_env = \"SECRET\""))
                .expect("valid")
                .connections[0]
                .access
                .is_restricted()
        );
        for (line, key) in [
            ("allowed_groups = []", "connections[0].allowed_groups"),
            ("allowed_roles = [\"\"]", "connections[0].allowed_roles"),
        ] {
            assert_eq!(
                err_key(&raw(&format!("client_secret_env = \"SECRET\"\n{line}"))),
                key
            );
        }
    }

    #[test]
    fn the_forward_auth_header_budget_has_a_default_and_bounds() {
        let ok = raw("client_secret_env = \"SECRET\"");
        assert_eq!(
            parse(&ok).expect("valid").forward_auth.max_header_bytes,
            4096
        );
        let set = |n: usize| {
            ok.replacen(
                "[[connections]]",
                &format!("[forward_auth]\nmax_header_bytes = {n}\n[[connections]]"),
                1,
            )
        };
        assert_eq!(
            parse(&set(8192))
                .expect("valid")
                .forward_auth
                .max_header_bytes,
            8192
        );
        assert_eq!(err_key(&set(10)), "forward_auth.max_header_bytes");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let toml = raw(r#"client_secret_env = "SECRET"
clientid = "typo""#);
        let err = parse(&toml).expect_err("unknown key");
        assert!(err.to_string().contains("clientid"), "{err}");
    }

    #[test]
    fn the_annotated_entra_example_is_valid() {
        let raw: RawConfig = Figment::new()
            .merge(Toml::string(include_str!("../config/entra.example.toml")))
            .extract()
            .expect("example parses");
        let cfg = Config::from_raw(raw, &|name| {
            (name == "CONTOSO_CLIENT_SECRET")
                .then(|| "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR".to_owned())
        })
        .expect("example validates");
        assert_eq!(cfg.redirect_uri(), "https://sso.example.com/login/callback");
    }

    #[test]
    fn a_cookie_domain_must_contain_the_public_host_and_switches_the_prefix() {
        let toml = raw(r#"client_secret_env = "SECRET""#).replace(
            "[[connections]]",
            "[session]\ncookie_domain = \"example.com\"\n[[connections]]",
        );
        let cfg = parse(&toml).expect("valid");
        assert_eq!(cfg.session.cookie_name, "__Secure-entrance");
        let toml = toml.replace(
            "cookie_domain = \"example.com\"",
            "cookie_domain = \"evil.example\"",
        );
        assert_eq!(err_key(&toml), "session.cookie_domain");
    }

    #[test]
    fn the_embedded_demo_config_is_valid() {
        let raw: RawConfig = Figment::new()
            .merge(Toml::string(DEMO_TOML))
            .extract()
            .expect("demo parses");
        Config::from_raw(raw, &|_| None).expect("demo validates");
    }

    #[test]
    fn the_embedded_demo_config_warns_about_nothing() {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        use tracing_subscriber::layer::SubscriberExt;

        /// Counts WARN and ERROR events.
        struct Warnings(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if *event.metadata().level() <= tracing::Level::WARN {
                    self.0.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Warnings(count.clone()));
        tracing::subscriber::with_default(subscriber, || {
            Config::load_str(DEMO_TOML).expect("demo loads");
        });
        assert_eq!(
            count.load(Ordering::Relaxed),
            0,
            "entrance demo warns about itself"
        );

        // A real secret written inline still warns.
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Warnings(count.clone()));
        let toml = DEMO_TOML.replace(
            crate::mock_idp::DEFAULT_CLIENT_SECRET,
            "Zq88Q~someRealLookingSecretValue0123456789",
        );
        tracing::subscriber::with_default(subscriber, || {
            Config::load_str(&toml).expect("loads");
        });
        assert!(count.load(Ordering::Relaxed) > 0);
    }

    fn with_session(session: &str) -> String {
        raw(r#"client_secret_env = "SECRET""#).replacen(
            "[[connections]]",
            &format!("[session]\n{session}\n[[connections]]"),
            1,
        )
    }

    #[test]
    fn sqlite_is_the_default_store() {
        let cfg = parse(&raw(r#"client_secret_env = "SECRET""#)).expect("valid");
        match cfg.session.store {
            StoreKind::Sqlite { path } => assert_eq!(path, Path::new("entrance-sessions.db")),
            other => panic!("expected sqlite, got {other:?}"),
        }
        assert_eq!(cfg.session.store_timeout, Duration::from_millis(1000));
    }

    #[test]
    fn store_settings_are_checked_by_key() {
        assert_eq!(
            err_key(&with_session(r#"store = "redis""#)),
            "session.redis_url"
        );
        assert_eq!(
            err_key(&with_session(
                "store = \"redis\"\nredis_url = \"http://127.0.0.1:6379\""
            )),
            "session.redis_url"
        );
        assert_eq!(
            err_key(&with_session(
                "store = \"redis\"\nredis_url = \"redis://h\"\nredis_pool_size = 0"
            )),
            "session.redis_pool_size"
        );
        assert_eq!(err_key(&with_session(r#"store = "disk""#)), "session.store");
        assert_eq!(
            err_key(&with_session(r#"sqlite_path = """#)),
            "session.sqlite_path"
        );
        assert_eq!(
            err_key(&with_session("store_timeout_ms = 0")),
            "session.store_timeout_ms"
        );
        let cfg = parse(&with_session(
            "store = \"redis\"\nredis_url = \"rediss://user:pw@cache.example:6380/0\"",
        ))
        .expect("valid");
        match cfg.session.store {
            StoreKind::Redis(r) => {
                assert_eq!(r.key_prefix, "entrance:session:");
                assert_eq!(r.pool_size, 4);
            }
            other => panic!("expected redis, got {other:?}"),
        }
    }

    #[test]
    fn a_redis_password_is_never_repeated_in_errors() {
        let err = parse(&with_session(
            "store = \"redis\"\nredis_url = \"redis://u:hunter2@\"",
        ))
        .expect_err("no host");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn doctor_keys_parse_as_dates_and_guids() {
        let cfg = parse(&raw(r#"client_secret_env = "SECRET"
client_secret_expires_at = 2027-05-01
home_tenant = "aaaabbbb-0000-cccc-1111-dddd2222eeee"
verify_scope = "api://x/.default""#))
        .expect("valid");
        let c = &cfg.connections[0];
        assert_eq!(
            c.client_secret_expires_at,
            Some(time::macros::datetime!(2027-05-01 00:00 UTC))
        );
        assert_eq!(c.verify_scope.as_deref(), Some("api://x/.default"));
        let cfg = parse(&raw(r#"client_secret_env = "SECRET"
client_secret_expires_at = "2027-05-01T09:30:00+02:00""#))
        .expect("valid");
        assert_eq!(
            cfg.connections[0].client_secret_expires_at,
            Some(time::macros::datetime!(2027-05-01 07:30 UTC))
        );
        assert_eq!(
            err_key(&raw(r#"client_secret_env = "SECRET"
client_secret_expires_at = "next May""#)),
            "connections[0].client_secret_expires_at"
        );
        assert_eq!(
            err_key(&raw(r#"client_secret_env = "SECRET"
home_tenant = "contoso.com""#)),
            "connections[0].home_tenant"
        );
    }

    #[test]
    fn the_lenient_path_keeps_secret_and_client_id_problems_for_the_doctor() {
        let toml = format!(
            "{}\n[[connections]]\nid = \"b\"\nmetadata_url = \"https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration\"\nclient_id = \"not-a-guid\"\nclient_secret = \" c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f \"\n",
            raw("")
        );
        // Strict: the first connection's missing secret stops everything.
        assert_eq!(err_key(&toml), "connections[0].client_secret_env");
        let raw_cfg: RawConfig = Figment::new()
            .merge(Toml::string(&toml))
            .extract()
            .expect("parses");
        let lenient = Config::from_raw_lenient(raw_cfg, &|_| None).expect("lenient loads");
        assert_eq!(lenient.config.connections.len(), 2);
        assert_eq!(lenient.secrets.len(), 2);
        let secret = |i: usize| lenient.secrets[i].first().expect("a secret connection");
        assert!(secret(0).value.is_err());
        assert_eq!(secret(1).source, SecretSource::Inline);
        let untrimmed = secret(1).value.as_ref().expect("read");
        assert!(untrimmed.expose_secret().starts_with(' '));
        assert_eq!(lenient.config.connections[1].client_id, "not-a-guid");
    }

    /// Writes a test certificate and key to fresh files; returns the TOML lines naming them.
    fn cert_files(tc: &crate::mock_idp::TestCertificate, key_pem: &str) -> String {
        let dir = std::env::temp_dir().join(format!("entrance-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &tc.cert_pem).expect("write cert");
        std::fs::write(&key, key_pem).expect("write key");
        format!(
            "client_certificate_file = {:?}\nclient_private_key_file = {:?}",
            cert.display().to_string(),
            key.display().to_string()
        )
    }

    fn err_of(toml: &str) -> (String, String, String) {
        match parse(toml) {
            Err(ConfigError::Invalid { key, problem, fix }) => (key, problem, fix),
            other => panic!("expected an invalid-key error, got {other:?}"),
        }
    }

    #[test]
    fn a_certificate_connection_loads_with_ps256_by_default_and_rs256_on_request() {
        let tc =
            crate::mock_idp::TestCertificate::generate_valid_for_days("cfg", 90).expect("cert");
        let files = cert_files(&tc, tc.key_pem());
        let cfg = parse(&raw(&files)).expect("valid");
        let cert = cfg.connections[0]
            .credential
            .certificate()
            .expect("a certificate credential");
        assert_eq!(cert.alg, AssertionAlg::Ps256);
        assert!(cert.subject.contains("cfg"), "{}", cert.subject);
        let cfg = parse(&raw(&format!(
            "{files}\nclient_assertion_alg = \"RS256\"\nclient_auth = \"private_key_jwt\""
        )))
        .expect("valid");
        let cert = cfg.connections[0].credential.certificate().expect("cert");
        assert_eq!(cert.alg, AssertionAlg::Rs256);
        // The secret never prints, and neither does the key.
        assert!(!format!("{cfg:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn secret_and_certificate_together_or_half_a_certificate_are_refused() {
        let tc =
            crate::mock_idp::TestCertificate::generate_valid_for_days("cfg", 90).expect("cert");
        let files = cert_files(&tc, tc.key_pem());
        let (key, problem, fix) = err_of(&raw(&format!("{files}\nclient_secret_env = \"SECRET\"")));
        assert_eq!(key, "connections[0].client_certificate_file");
        assert!(problem.contains("both"), "{problem}");
        assert!(fix.contains("keep one"), "{fix}");
        let only_cert = files.lines().next().expect("cert line").to_owned();
        assert_eq!(
            err_key(&raw(&only_cert)),
            "connections[0].client_private_key_file"
        );
        assert_eq!(
            err_key(&raw(&format!("{files}\nclient_assertion_alg = \"ES256\""))),
            "connections[0].client_assertion_alg"
        );
        assert_eq!(
            err_key(&raw(
                "client_secret_env = \"SECRET\"\nclient_assertion_alg = \"PS256\""
            )),
            "connections[0].client_assertion_alg"
        );
        assert_eq!(
            err_key(&raw(&format!(
                "{files}\nclient_auth = \"client_secret_post\""
            ))),
            "connections[0].client_auth"
        );
        assert_eq!(
            err_key(&raw(&format!(
                "{files}\nclient_secret_expires_at = 2030-01-01"
            ))),
            "connections[0].client_secret_expires_at"
        );
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_by_name() {
        let a = crate::mock_idp::TestCertificate::generate_valid_for_days("a", 90).expect("a");
        let b = crate::mock_idp::TestCertificate::generate_valid_for_days("b", 90).expect("b");
        let (key, problem, fix) = err_of(&raw(&cert_files(&a, b.key_pem())));
        assert_eq!(key, "connections[0].client_private_key_file");
        assert!(problem.contains("does not belong"), "{problem}");
        assert!(fix.contains("client_certificate_file"), "{fix}");
        let missing = raw(
            "client_certificate_file = \"/nonexistent/cert.pem\"\nclient_private_key_file = \"/nonexistent/key.pem\"",
        );
        assert_eq!(err_key(&missing), "connections[0].client_certificate_file");
    }

    #[test]
    fn an_expired_certificate_stops_startup_but_not_the_doctor() {
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        let tc = crate::mock_idp::TestCertificate::generate("old", now - 400 * day, now - day)
            .expect("cert");
        let toml = raw(&cert_files(&tc, tc.key_pem()));
        let (key, problem, fix) = err_of(&toml);
        assert_eq!(key, "connections[0].client_certificate_file");
        assert!(problem.contains("expired"), "{problem}");
        assert!(fix.contains("upload a new certificate"), "{fix}");
        // `entrance check` loads it and reports the expiry as a line of its own.
        let raw_cfg: RawConfig = Figment::new()
            .merge(Toml::string(&toml))
            .extract()
            .expect("parses");
        let lenient = Config::from_raw_lenient(raw_cfg, &|_| None).expect("lenient loads");
        assert!(lenient.secrets[0].is_empty());
        assert!(
            lenient.config.connections[0]
                .credential
                .certificate()
                .is_some()
        );
    }
}
