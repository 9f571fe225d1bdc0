//! Configuration: the raw settings read from TOML and `ENTRANCE_…` variables, and the validated
//! [`Config`] built from them once at startup.
//!
//! Two stages, as in ripgrep's `lowargs`/`hiargs`: [`RawConfig`] is whatever serde could parse;
//! [`Config::from_raw`] turns it into typed values (URLs, durations, secrets) or stops with an
//! error that names the key and the fix. Only what the file itself gets wrong stops startup:
//! anything that needs the network (an unreachable IdP, an issuer mismatch) is checked later by
//! the provider module (`oidc::provider`), which marks that one connection not ready instead.

mod api;
mod connection;
mod groups;
mod network;
mod raw;
mod secrets;
mod session;
#[cfg(test)]
mod tests;
mod upstream;

pub(crate) use api::ApiSettings;
pub use connection::*;
pub(crate) use groups::GroupsSettings;
pub(crate) use network::IpNet;
pub(crate) use network::mask_v6;
pub(crate) use raw::*;
pub use secrets::DataKey;
pub(crate) use secrets::*;
pub(crate) use session::*;
pub(crate) use upstream::UpstreamSettings;

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use url::Url;

use crate::loopback::is_loopback_host;

/// The demo configuration, embedded so `entrance demo` works from any directory.
pub const DEMO_TOML: &str = include_str!("../../config/entrance.toml");

/// The top-level keys of [`RawConfig`], which `ENTRANCE_<KEY>` variables may override.
const CONFIG_KEYS: &[&str] = &[
    "listen",
    "public_url",
    "session",
    "http",
    "server",
    "validation",
    "keys",
    "logout",
    "rate_limit",
    "shutdown_grace_secs",
    "admin_listen",
    "admin",
    "traces",
    "allowed_return_hosts",
    "forward_auth",
    "telemetry",
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

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `ENTRANCE_DATA_KEY`: seals the secrets of connections created through setup links; a
    /// variable only, never a key in the file. `None` when unset.
    pub data_key: Option<DataKey>,
    /// The externally visible origin. The redirect URI is always derived from it, never from a
    /// request's Host header or scheme: behind a TLS-terminating proxy those say `http://` and an
    /// internal name, and Entra would answer AADSTS50011 (redirect URI mismatch).
    pub public_url: Url,
    pub session: SessionSettings,
    pub http: HttpSettings,
    pub server: ServerSettings,
    pub clock_skew: Duration,
    pub keys: KeySettings,
    /// Where the IdP sends the browser after sign-out; must also be registered in Entra as a
    /// redirect URI of the app.
    pub post_logout_redirect_uri: Option<Url>,
    /// Lower-cased hosts an absolute `return_to` may name.
    pub allowed_return_hosts: Vec<String>,
    pub rate_limit: Option<RateLimitSettings>,
    /// Where `/metrics`, `/readyz`'s details and `/admin/traces` are served, off the public
    /// listener.
    pub admin_listen: Option<SocketAddr>,
    /// Without `admin_listen`: whether `/admin/traces` is answered on the public listener to
    /// loopback clients that send no proxy header (`admin.allow_loopback_without_proxy`).
    pub admin_on_loopback: bool,
    /// Failed logins kept per connection for `/admin/traces`.
    pub traces_per_connection: usize,
    pub shutdown_grace: Duration,
    pub demo_mock_idp_listen: Option<SocketAddr>,
    pub forward_auth: ForwardAuthSettings,
    /// `telemetry.otlp_endpoint`: the collector's base URL, when the file names one. Read
    /// once at startup (a SIGHUP reload does not change where traces go).
    pub otlp_endpoint: Option<Url>,
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
    /// then read from this header, when the request came from one of `trusted_proxies`.
    pub client_ip_header: Option<ClientIpHeader>,
    /// The peers whose `client_ip_header` is believed; never empty when the header is set.
    pub trusted_proxies: Vec<IpNet>,
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

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// CA certificates trusted besides the built-in roots (`http.extra_ca_file`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

/// `[server]`: what a client may cost the listeners (the public one and `admin_listen`).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The most time a client may take to send a request's headers; also how long an idle
    /// keep-alive connection is kept open waiting for its next request.
    pub header_read_timeout: Duration,
    /// The most time a request may take from its headers to its response.
    pub request_timeout: Duration,
    /// Connections served at once per listener; more wait in the listen backlog.
    pub max_connections: usize,
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

        let session = validate_session(&raw.session, &public_url)?;

        let http = validate_http(&raw.http)?;
        let server = validate_server(&raw.server)?;
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

        let otlp_endpoint = raw
            .telemetry
            .otlp_endpoint
            .as_deref()
            .map(parse_otlp_endpoint)
            .transpose()?;

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

        let rate_limit = validate_rate_limit(&raw.rate_limit)?;

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

        if admin_listen.is_some() && raw.admin.allow_loopback_without_proxy {
            tracing::warn!(
                "admin.allow_loopback_without_proxy has no effect with admin_listen set: /admin/traces is served only on admin_listen"
            );
        }

        let (connections, secrets) = validate_connections(raw.connections, env, mode)?;

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

        let data_key = match env(DATA_KEY_ENV) {
            Some(text) if !text.trim().is_empty() => Some(DataKey::from_base64(&text)?),
            _ => None,
        };
        let config = Config {
            data_key,
            listen,
            public_url,
            session,
            http,
            server,
            clock_skew: Duration::from_secs(raw.validation.clock_skew_secs),
            keys,
            post_logout_redirect_uri,
            allowed_return_hosts,
            rate_limit,
            admin_listen,
            admin_on_loopback: raw.admin.allow_loopback_without_proxy,
            traces_per_connection: raw.traces.per_connection,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs),
            demo_mock_idp_listen,
            forward_auth,
            otlp_endpoint,
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

/// `[http]`: timeouts, the response size limit and extra CA roots for calls to the IdPs.
fn validate_http(raw: &RawHttp) -> Result<HttpSettings, ConfigError> {
    if raw.timeout_secs == 0 || raw.connect_timeout_secs == 0 {
        return Err(invalid(
            "http.timeout_secs / http.connect_timeout_secs",
            "a timeout of 0 would fail every call to the IdP",
            "use a few seconds, e.g. connect 3, total 10",
        ));
    }
    let http = HttpSettings {
        connect_timeout: Duration::from_secs(raw.connect_timeout_secs),
        timeout: Duration::from_secs(raw.timeout_secs),
        max_response_bytes: raw.max_response_bytes.max(16 * 1024),
        extra_roots: match &raw.extra_ca_file {
            Some(path) => load_ca_bundle(path)?,
            None => Vec::new(),
        },
    };
    Ok(http)
}

/// `[server]`: each value within its bounds (`HEADER_READ_TIMEOUT_RANGE` and the others in
/// `raw.rs`); 0 would turn a limit off or refuse every request.
fn validate_server(raw: &RawServer) -> Result<ServerSettings, ConfigError> {
    if !HEADER_READ_TIMEOUT_RANGE.contains(&raw.header_read_timeout_secs) {
        return Err(invalid(
            "server.header_read_timeout_secs",
            format!(
                "{} is outside {}..={}",
                raw.header_read_timeout_secs,
                HEADER_READ_TIMEOUT_RANGE.start(),
                HEADER_READ_TIMEOUT_RANGE.end()
            ),
            "leave it out for 10: enough for a slow client to send its headers, short enough that a client sending nothing lets its connection go",
        ));
    }
    if !REQUEST_TIMEOUT_RANGE.contains(&raw.request_timeout_secs) {
        return Err(invalid(
            "server.request_timeout_secs",
            format!(
                "{} is outside {}..={}",
                raw.request_timeout_secs,
                REQUEST_TIMEOUT_RANGE.start(),
                REQUEST_TIMEOUT_RANGE.end()
            ),
            "leave it out for 60; keep it above a sign-in's few IdP calls of http.timeout_secs each",
        ));
    }
    if !MAX_CONNECTIONS_RANGE.contains(&raw.max_connections) {
        return Err(invalid(
            "server.max_connections",
            format!(
                "{} is outside {}..={}",
                raw.max_connections,
                MAX_CONNECTIONS_RANGE.start(),
                MAX_CONNECTIONS_RANGE.end()
            ),
            "leave it out for 4096, or pick a number below the process's open-file limit (`ulimit -n`)",
        ));
    }
    Ok(ServerSettings {
        header_read_timeout: Duration::from_secs(raw.header_read_timeout_secs),
        request_timeout: Duration::from_secs(raw.request_timeout_secs),
        max_connections: raw.max_connections,
    })
}

/// `[rate_limit]`: per-client-IP limits on the login endpoints, the header that names the
/// client behind a proxy, and the proxies that header is believed from.
fn validate_rate_limit(raw: &RawRateLimit) -> Result<Option<RateLimitSettings>, ConfigError> {
    let client_ip_header = match raw.client_ip_header.as_deref() {
        None | Some("") => None,
        Some(h) if h.eq_ignore_ascii_case("x-forwarded-for") => Some(ClientIpHeader::XForwardedFor),
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
    };
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        trusted_proxies.push(IpNet::parse(p).map_err(|problem| {
            invalid(
                format!("rate_limit.trusted_proxies[{i}]"),
                problem,
                "list the addresses of the proxies in front of entrance, or their networks in CIDR notation, e.g. [\"127.0.0.1\", \"10.0.0.0/8\"]",
            )
        })?);
    }
    // Before trusted_proxies existed the header was believed from any peer, so any client
    // could name its own rate-limit key and audit address. Stopping here, not quietly
    // ignoring the header, is what tells an upgrading operator to name the proxies.
    if client_ip_header.is_some() && trusted_proxies.is_empty() {
        return Err(invalid(
            "rate_limit.client_ip_header",
            "is set, but rate_limit.trusted_proxies is empty: the header would be believed from any client, who could then choose its own rate-limit key and the client_ip of the audit log",
            "add rate_limit.trusted_proxies with the addresses of the proxies that set the header, e.g. trusted_proxies = [\"127.0.0.1\"] for a proxy on this host or [\"10.0.0.0/8\"] for a network; or remove client_ip_header if no proxy sets it",
        ));
    }
    if client_ip_header.is_none() && !trusted_proxies.is_empty() {
        tracing::warn!(
            "rate_limit.trusted_proxies is set without rate_limit.client_ip_header: no header is read, so it has no effect"
        );
    }
    let rate_limit = match (
        std::num::NonZeroU32::new(raw.per_ip_per_minute),
        std::num::NonZeroU32::new(raw.burst),
    ) {
        (None, _) => None,
        (Some(per_minute), burst) => Some(RateLimitSettings {
            per_minute,
            burst: burst.unwrap_or(per_minute),
            client_ip_header,
            trusted_proxies,
        }),
    };
    Ok(rate_limit)
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

/// `telemetry.otlp_endpoint`: an http(s) URL with no query or fragment. Plain http is
/// allowed anywhere: a collector is usually a sidecar or an in-cluster service, and no span
/// carries a token, code or secret (`src/telemetry.rs`).
fn parse_otlp_endpoint(value: &str) -> Result<Url, ConfigError> {
    const FIX: &str = "name the collector's OTLP/HTTP address, e.g. \"http://otel-collector:4318\" \
                       (entrance appends /v1/traces), or remove the key to turn traces off";
    let url = Url::parse(value).map_err(|e| {
        invalid(
            "telemetry.otlp_endpoint",
            format!("{value:?} is not a URL ({e})"),
            FIX,
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            "telemetry.otlp_endpoint",
            format!("{value:?} is not an http(s) URL (entrance exports OTLP over HTTP, not gRPC)"),
            FIX,
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "telemetry.otlp_endpoint",
            format!("{value:?} has a query or fragment"),
            FIX,
        ));
    }
    Ok(url)
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
