//! What serde reads from the TOML file and `ENTRANCE_…` variables, before any checking: the
//! first of configuration's two stages.

use std::path::PathBuf;

use serde::Deserialize;

/// A raw value that may be a secret (an inline client secret, a Redis URL with a password):
/// read like a string, printed by `Debug` as `<redacted>`, so a logged raw configuration shows
/// none of them.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Concealed(pub String);

impl std::fmt::Debug for Concealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::ops::Deref for Concealed {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: String,
    pub public_url: String,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub http: RawHttp,
    /// Limits on the service's own listeners: slow clients, long requests, connections.
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub validation: RawValidation,
    #[serde(default)]
    pub keys: RawKeys,
    #[serde(default)]
    pub logout: RawLogout,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    /// A second address for `/metrics`, `/readyz`'s details and `/admin/traces`, off the
    /// public one.
    #[serde(default)]
    pub admin_listen: Option<String>,
    #[serde(default)]
    pub admin: RawAdmin,
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
    /// OpenTelemetry traces (`src/telemetry.rs`); off unless an endpoint is named here or in
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default)]
    pub telemetry: RawTelemetry,
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
pub(super) const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 256..=65536;

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

pub(super) fn default_shutdown_grace() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    pub per_ip_per_minute: u32,
    pub burst: u32,
    pub client_ip_header: Option<String>,
    /// The proxies (addresses or CIDR networks) whose `client_ip_header` is believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 60,
            burst: 30,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[admin]`: who may read the admin endpoints when there is no `admin_listen`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Serve `/admin/traces` on the public listener to loopback clients that send no proxy
    /// header. Off by default: a reverse proxy on the same host that adds no such header would
    /// relay every remote client as "loopback".
    pub allow_loopback_without_proxy: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// The OTLP/HTTP collector's base URL (`/v1/traces` is appended), like
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
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
    /// May carry a password (`redis://:password@host`).
    pub redis_url: Option<Concealed>,
    pub redis_key_prefix: String,
    pub redis_pool_size: usize,
    pub cache_entries: usize,
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
            // About 20 MB at the demo session's 2 KiB.
            cache_entries: 10_000,
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
pub struct RawServer {
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            // Above the longest a sign-in callback may legitimately take: a token call, a
            // JWKS refetch and a userinfo call of up to `http.timeout_secs` (10 s) each, plus
            // a few session-store calls of up to `session.store_timeout_ms` (1 s) each.
            request_timeout_secs: 60,
            max_connections: 4096,
        }
    }
}

/// The accepted `server.header_read_timeout_secs`.
pub(super) const HEADER_READ_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=300;
/// The accepted `server.request_timeout_secs`.
pub(super) const REQUEST_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// The accepted `server.max_connections`.
pub(super) const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 1..=1_048_576;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTraces {
    /// Failed logins kept per connection (and for unknown connections); 0 keeps none.
    pub per_connection: usize,
}

impl Default for RawTraces {
    fn default() -> Self {
        Self {
            per_connection: DEFAULT_TRACES_PER_CONNECTION,
        }
    }
}

/// The most failures `traces.per_connection` may keep: each is a few hundred bytes, and the
/// ring is for the recent past, not an archive.
/// The default number of failed logins kept per connection (`traces.per_connection`).
pub(crate) const DEFAULT_TRACES_PER_CONNECTION: usize = 50;
pub(super) const MAX_TRACES_PER_CONNECTION: usize = 10_000;

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
    /// Required, but may be left out with `workload_identity = true` (then `AZURE_CLIENT_ID`).
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Concealed>,
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
    /// Instead of a secret or certificate: a federated credential, a JWT the platform keeps
    /// in this file (read afresh for every token request)…
    #[serde(default)]
    pub client_assertion_file: Option<String>,
    /// …or in this environment variable.
    #[serde(default)]
    pub client_assertion_env: Option<String>,
    /// Azure Workload Identity's convention: the assertion file from
    /// `AZURE_FEDERATED_TOKEN_FILE`, the client ID from `AZURE_CLIENT_ID` when `client_id` is
    /// left out, and `AZURE_TENANT_ID` held against the metadata URL's tenant.
    #[serde(default)]
    pub workload_identity: Option<bool>,
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
    /// `common`/`organizations` metadata URL (docs/reference/ENTRA.md §5.3d).
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
    /// left out, and its `sub` must be the ID token's. Unset: never for Entra (its ID tokens
    /// carry the profile), and for other IdPs only when the ID token lacks a requested scope's
    /// claims (OpenID Connect Core §5.4 lets an IdP put them in userinfo alone).
    #[serde(default)]
    pub userinfo: Option<bool>,
    /// Bearer access tokens for the vendor's API on `/auth` and `/me` (`config::api`).
    #[serde(default)]
    pub api: Option<super::api::RawApi>,
    /// An access token for the vendor's backend API, passed to apps by `/auth`
    /// (`config::upstream`).
    #[serde(default)]
    pub upstream: Option<super::upstream::RawUpstream>,
    /// Group overage resolution through Microsoft Graph (`config::groups`).
    #[serde(default)]
    pub groups: Option<super::groups::RawGroups>,
}

// ---------------------------------------------------------------------------------------------
// Validated configuration.
// ---------------------------------------------------------------------------------------------

/// A TOML date written without quotes (`2027-05-01`) reaches serde as the toml crate's
/// private one-entry datetime map, not as a string; accept both so the quotes do not matter.
pub(super) fn string_or_toml_datetime<'de, D>(d: D) -> Result<Option<String>, D::Error>
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
