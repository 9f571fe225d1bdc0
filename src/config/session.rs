//! Session settings: the store (memory, SQLite, Redis), the cookie, and the lifetimes.

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;
use url::Url;

use super::*;

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
    /// Records the SQLite and Redis stores keep in this process's read cache, and users the
    /// parsed-user cache keeps (every store, `session::ParsedUsers`); 0: none.
    pub cache_entries: usize,
}

/// The largest accepted `session.cache_entries`: about 20 GB of 2 KiB sessions.
const MAX_CACHE_ENTRIES: usize = 10_000_000;

pub(super) fn validate_store(raw: &RawSession) -> Result<StoreKind, ConfigError> {
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

/// `[session]`: the store, the cookie (its name gets the strongest prefix the public URL
/// allows) and the lifetimes.
pub(super) fn validate_session(
    raw: &RawSession,
    public_url: &Url,
) -> Result<SessionSettings, ConfigError> {
    let secure_cookie = public_url.scheme() == "https";
    let store = validate_store(raw)?;
    if raw.store_timeout_ms == 0 {
        return Err(invalid(
            "session.store_timeout_ms",
            "a timeout of 0 would fail every session read and write",
            "use a positive number of milliseconds, e.g. 1000",
        ));
    }
    if raw.cookie_name.is_empty()
        || !raw
            .cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "session.cookie_name",
            format!("{:?} is not a usable cookie name", raw.cookie_name),
            "use letters, digits, '_' and '-' only",
        ));
    }
    let cookie_domain = match raw.cookie_domain.as_deref() {
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
        (true, None) => format!("__Host-{}", raw.cookie_name),
        (true, Some(_)) => format!("__Secure-{}", raw.cookie_name),
        (false, _) => raw.cookie_name.clone(),
    };
    if raw.cache_entries > MAX_CACHE_ENTRIES {
        return Err(invalid(
            "session.cache_entries",
            format!(
                "{} records is more than this cache is meant for",
                raw.cache_entries
            ),
            "use at most 10000000 (each cached session takes about its stored size, ~2 KiB), or 0 to read every session from the store",
        ));
    }
    if raw.idle_timeout_secs == 0 || raw.absolute_lifetime_secs == 0 {
        return Err(invalid(
            "session.idle_timeout_secs / session.absolute_lifetime_secs",
            "a session lifetime of 0 seconds signs nobody in",
            "use a positive number of seconds, e.g. 28800 (8 hours)",
        ));
    }
    let session = SessionSettings {
        store,
        store_timeout: Duration::from_millis(raw.store_timeout_ms),
        cookie_name,
        secure_cookie,
        cookie_domain,
        idle_timeout: Duration::from_secs(raw.idle_timeout_secs),
        absolute_lifetime: Duration::from_secs(raw.absolute_lifetime_secs),
        cache_entries: raw.cache_entries,
    };
    Ok(session)
}
