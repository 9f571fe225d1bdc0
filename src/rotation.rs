//! Secret rotation without downtime: the live set of connections, its reload from the
//! configuration file (SIGHUP), and the daily client-secret expiry warnings.
//!
//! A reload re-reads the file (and the secret files and variables it names) through
//! [`Config::load`]; an invalid file is refused with the reason and the running connections
//! are kept. A valid one replaces the connections atomically: requests already holding a
//! connection finish with it, later ones see the new one. Sessions and pending logins live in
//! the session store and name their connection by id, so both survive. Settings outside
//! `[[connections]]` (listener, store, cookies, public URL) are bound at startup: a change to
//! them is logged as needing a restart, and not applied.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::expiry::Expiry;
use crate::sync::lock;
use crate::{
    config::{Config, ConfigError, ConnectionConfig},
    metrics::Metrics,
    oidc::http_client::HttpClient,
    oidc::provider::{self, Connection},
};

/// The connections requests see; swapped whole on reload.
pub(crate) type LiveConnections = Arc<ArcSwap<Vec<Arc<Connection>>>>;

/// How often the expiry warnings are logged.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("no configuration file to reload from (the service was not started with --config)")]
    NoSource,
    #[error("the new configuration is invalid, so the running one is kept: {0}")]
    Invalid(#[from] ConfigError),
}

/// What a reload changed, for the log and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ReloadSummary {
    /// Connections that kept their fetched metadata and keys (new credentials only).
    pub kept: Vec<String>,
    /// New connections, or ones whose metadata URL, client ID or client auth changed: they
    /// fetch their metadata afresh.
    pub refetching: Vec<String>,
    pub removed: Vec<String>,
    /// Settings outside `[[connections]]` changed: they apply only after a restart.
    pub needs_restart: bool,
}

/// Owns the live connections and the task that keeps each one's metadata and keys fresh.
pub(crate) struct Reloader {
    source: Mutex<Option<PathBuf>>,
    /// Connections created through setup links (issue 17), live beside the file's.
    stored: Mutex<Vec<ConnectionConfig>>,
    /// The configuration last applied (the startup one, then each accepted reload).
    running: Mutex<Config>,
    connections: LiveConnections,
    maintainers: Mutex<HashMap<String, JoinHandle<()>>>,
    http: HttpClient,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Builds the connections of `config` and starts maintaining each.
    pub(crate) fn start(config: &Config, http: HttpClient, metrics: Arc<Metrics>) -> Arc<Reloader> {
        let connections: Vec<Arc<Connection>> = config
            .connections
            .iter()
            .map(|c| {
                Arc::new(Connection::new(
                    c.clone(),
                    config.keys.refetch_cooldown,
                    metrics.clone(),
                ))
            })
            .collect();
        let reloader = Arc::new(Reloader {
            source: Mutex::new(None),
            stored: Mutex::new(Vec::new()),
            running: Mutex::new(config.clone()),
            connections: Arc::new(ArcSwap::from_pointee(connections.clone())),
            maintainers: Mutex::new(HashMap::new()),
            http,
            metrics,
        });
        for conn in connections {
            reloader.maintain(conn, config.keys.refresh_interval);
        }
        reloader
    }

    pub(crate) fn connections(&self) -> LiveConnections {
        self.connections.clone()
    }

    /// The file [`Reloader::reload`] re-reads.
    pub(crate) fn set_source(&self, path: PathBuf) {
        *lock(&self.source) = Some(path);
    }

    /// Re-reads the configuration file and applies it, or logs why not and keeps the
    /// running configuration.
    pub(crate) fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let path = lock(&self.source).clone().ok_or(ReloadError::NoSource)?;
        tracing::info!(config = %path.display(), "reloading the configuration");
        let result = Config::load(&path)
            .map_err(ReloadError::from)
            .map(|config| self.apply(config));
        match &result {
            Ok(summary) => tracing::info!(
                kept = ?summary.kept,
                refetching = ?summary.refetching,
                removed = ?summary.removed,
                "configuration reloaded"
            ),
            Err(e) => {
                tracing::error!(config = %path.display(), "configuration reload refused: {e}")
            }
        }
        result
    }

    /// Swaps in the connections of a validated configuration.
    pub(crate) fn apply(&self, config: Config) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let mut running = lock(&self.running);
        // The file's connections, then the stored ones (ids unique across both: a stored
        // connection whose id the file took since is left out, and said so).
        let file = config;
        let mut config = file.clone();
        for stored in lock(&self.stored).iter() {
            if config.connection(&stored.id).is_some() {
                tracing::warn!(connection = %stored.id, "a connection created through a setup link has the id of one in the configuration file; the file's is used");
            } else {
                config.connections.push(stored.clone());
            }
        }
        summary.needs_restart = fixed_settings(&running) != fixed_settings(&config);
        if summary.needs_restart {
            tracing::warn!(
                "settings outside [[connections]] changed (listener, session store, cookies, public URL, …); they take effect only after a restart"
            );
        }
        let old = self.connections.load_full();
        let mut next = Vec::with_capacity(config.connections.len());
        for cc in &config.connections {
            let previous = old.iter().find(|c| c.config.id == cc.id);
            let conn = match previous {
                Some(prev) if same_idp(&prev.config, cc) => {
                    summary.kept.push(cc.id.clone());
                    Connection::carry_over(prev, cc.clone(), config.keys.refetch_cooldown)
                }
                _ => {
                    summary.refetching.push(cc.id.clone());
                    Connection::new(
                        cc.clone(),
                        config.keys.refetch_cooldown,
                        self.metrics.clone(),
                    )
                }
            };
            next.push(Arc::new(conn));
        }
        for c in old.iter() {
            if config.connection(&c.config.id).is_none() {
                summary.removed.push(c.config.id.clone());
            }
        }
        self.connections.store(Arc::new(next.clone()));
        // Old maintainers stop; each new connection gets its own (a carried-over, ready one
        // waits for its next scheduled refresh instead of fetching at once).
        {
            let mut tasks = lock(&self.maintainers);
            for (_, t) in tasks.drain() {
                t.abort();
            }
        }
        for conn in next {
            self.maintain(conn, config.keys.refresh_interval);
        }
        self.metrics.set_secret_expiries(&config);
        log_secret_expiries(&self.connections.load(), OffsetDateTime::now_utc());
        *running = file;
        summary
    }

    /// Replaces the connections created through setup links and applies them beside the
    /// running file's, as a reload does.
    pub(crate) fn set_stored(&self, stored: Vec<ConnectionConfig>) -> ReloadSummary {
        *lock(&self.stored) = stored;
        let running = lock(&self.running).clone();
        self.apply(running)
    }

    fn maintain(&self, conn: Arc<Connection>, refresh_interval: Duration) {
        let id = conn.config.id.clone();
        let task = tokio::spawn(provider::maintain(
            conn,
            self.http.clone(),
            refresh_interval,
        ));
        if let Some(old) = lock(&self.maintainers).insert(id, task) {
            old.abort();
        }
    }

    /// Stops every maintainer (the service is stopping).
    pub(crate) fn stop(&self) {
        for (_, t) in lock(&self.maintainers).drain() {
            t.abort();
        }
    }

    /// Logs the expiry warnings now and then once a day, for the live connections.
    pub(crate) fn spawn_expiry_warnings(self: &Arc<Self>) -> JoinHandle<()> {
        let connections = self.connections.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                log_secret_expiries(&connections.load(), OffsetDateTime::now_utc());
            }
        })
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a connection's fetched metadata and keys still fit its new configuration.
fn same_idp(old: &ConnectionConfig, new: &ConnectionConfig) -> bool {
    old.metadata_url == new.metadata_url
        && old.client_id == new.client_id
        && old.client_auth == new.client_auth
        && std::mem::discriminant(&old.credential) == std::mem::discriminant(&new.credential)
}

/// The settings bound at startup, comparable. `Debug` covers every field (secrets print
/// redacted, so a changed Redis password alone is not noticed).
fn fixed_settings(config: &Config) -> String {
    let mut c = config.clone();
    c.connections.clear();
    format!("{c:?}")
}

/// A connection's secret expiry as `/readyz` shows it: whole days left (negative when past)
/// and the warnings to act on.
pub(crate) fn secret_expiry(
    conn: &ConnectionConfig,
    now: OffsetDateTime,
) -> (Option<i64>, Vec<String>) {
    let Some(at) = conn.client_secret_expires_at else {
        return (None, Vec::new());
    };
    let mut warnings = Vec::new();
    let days = match Expiry::judge(at, now) {
        Expiry::Expired { days } => {
            warnings.push(format!(
                "the client secret expired on {}; sign-ins fail with AADSTS7000222 unless another configured secret works",
                at.date()
            ));
            days
        }
        Expiry::Soon { days } => {
            warnings.push(format!(
                "the client secret expires on {} (in {days} days); add a new secret in Entra and put it first in the configuration",
                at.date()
            ));
            days
        }
        Expiry::Later { days } => days,
    };
    (Some(days), warnings)
}

/// One log line per connection whose secret expires within [`crate::expiry::WARNING_DAYS`] (a
/// warning) or has expired (an error). Names the secrets by label, never by value.
pub(crate) fn log_secret_expiries(connections: &[Arc<Connection>], now: OffsetDateTime) {
    for c in connections {
        let Some(at) = c.config.client_secret_expires_at else {
            continue;
        };
        let secrets = c.config.credential.secret_labels().join(", ");
        match Expiry::judge(at, now) {
            Expiry::Expired { .. } => tracing::error!(
                connection = %c.config.id,
                secrets,
                expired_on = %at.date(),
                "the client secret has expired (client_secret_expires_at); create a new secret in Entra, put it first in the configuration and reload"
            ),
            Expiry::Soon { days } => tracing::warn!(
                connection = %c.config.id,
                secrets,
                expires_on = %at.date(),
                days,
                "the client secret expires soon (client_secret_expires_at); create a new secret in Entra, put it first in the configuration and reload"
            ),
            Expiry::Later { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::load_str(&format!(
            r#"
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:3000"
[session]
store = "memory"
[[connections]]
id = "a"
metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"
client_id = "client"
client_secret = "s1"
{extra}
"#
        ))
        .expect("valid")
    }

    #[test]
    fn expiry_days_and_warnings() {
        let now = time::macros::datetime!(2027-01-01 00:00 UTC);
        let c = config("client_secret_expires_at = 2027-01-11");
        let (days, w) = secret_expiry(&c.connections[0], now);
        assert_eq!(days, Some(10));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("in 10 days"), "{w:?}");
        let c = config("client_secret_expires_at = 2026-12-01");
        let (days, w) = secret_expiry(&c.connections[0], now);
        assert_eq!(days, Some(-31));
        assert!(w[0].contains("expired"), "{w:?}");
        let c = config("client_secret_expires_at = 2028-01-01");
        assert!(secret_expiry(&c.connections[0], now).1.is_empty());
        assert_eq!(
            secret_expiry(&config("").connections[0], now),
            (None, vec![])
        );
    }

    #[tokio::test]
    async fn apply_keeps_unchanged_idps_refetches_changed_ones_and_notes_restart_settings() {
        let first = config("");
        let http = HttpClient::new(&first.http).expect("client");
        let metrics = Arc::new(Metrics::new(&first));
        let r = Reloader::start(&first, http, metrics);
        let mut second = config("");
        second.connections[0].credential = config("").connections[0].credential.clone();
        let summary = r.apply(second);
        assert_eq!(summary.kept, vec!["a".to_owned()]);
        assert!(!summary.needs_restart);
        let mut third = config("");
        third.connections[0].metadata_url = "http://127.0.0.1:8/.well-known/openid-configuration"
            .parse()
            .expect("url");
        third.allowed_return_hosts = vec!["app.example".into()];
        let summary = r.apply(third);
        assert_eq!(summary.refetching, vec!["a".to_owned()]);
        assert!(summary.needs_restart);
        assert_eq!(r.connections().load().len(), 1);
        assert!(matches!(r.reload(), Err(ReloadError::NoSource)));
        r.stop();
    }
}

/// How often each replica reads the setup record's version (`session::setup_links`): a
/// connection created on one replica is live on every other within about this long.
pub(crate) const STORED_POLL: Duration = Duration::from_secs(1);

/// Why the stored connections cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoredError {
    #[error("the session store failed: {0}")]
    Store(#[from] crate::session::SessionError),
    #[error(
        "the session store holds {0} connection(s) created through setup links, and ENTRANCE_DATA_KEY is not set, so their client secrets cannot be opened\n  fix: {fix}",
        fix = crate::config::DATA_KEY_FIX
    )]
    NoKey(usize),
    #[error(
        "the client secret of connection {id:?} (created through a setup link) does not open: {source}\n  fix: set ENTRANCE_DATA_KEY to the key it was sealed with (the same on every replica)"
    )]
    Sealed {
        id: String,
        source: crate::session::sealed::SealError,
    },
    #[error("connection {id:?} (created through a setup link) is invalid: {source}")]
    Invalid { id: String, source: ConfigError },
}

/// How logs name the secret a rotation link replaced.
pub(crate) const PREVIOUS_SECRET: &str = "the previous client secret (before the last setup link)";

/// A stored credential opened with `key`: the generated certificate, or the client secret
/// (empty for a certificate).
fn open_credential(
    key: &crate::config::DataKey,
    id: &str,
    credential: &crate::session::setup_links::StoredCredential,
) -> Result<
    (
        Option<Arc<crate::certificate::CertificateCredential>>,
        secrecy::SecretString,
    ),
    StoredError,
> {
    let opened = |sealed: &str| {
        crate::session::sealed::open(key, sealed, id).map_err(|source| StoredError::Sealed {
            id: id.to_owned(),
            source,
        })
    };
    match &credential.certificate {
        // A generated certificate (issue 17): its key opened here, only ever handed to
        // `CertificateCredential`, as a file-configured certificate's is.
        Some(cert) => {
            use secrecy::ExposeSecret;
            let key_pem = opened(&cert.private_key_sealed)?;
            let cred = crate::certificate::CertificateCredential::from_pem(
                cert.certificate_pem.as_bytes(),
                key_pem.expose_secret().as_bytes(),
                crate::certificate::AssertionAlg::Ps256,
            )
            .map_err(|e| StoredError::Invalid {
                id: id.to_owned(),
                source: ConfigError::Invalid {
                    key: "certificate".to_owned(),
                    problem: e.to_string(),
                    fix: e.fix().to_owned(),
                },
            })?;
            Ok((
                Some(Arc::new(cred)),
                secrecy::SecretString::from(String::new()),
            ))
        }
        None => Ok((None, opened(&credential.client_secret_sealed)?)),
    }
}

/// The connections completed setups created, their secrets opened with `key`, and the
/// record's version.
pub(crate) async fn load_stored(
    store: &crate::session::store::AnyStore,
    key: Option<&crate::config::DataKey>,
) -> Result<(u64, Vec<ConnectionConfig>), StoredError> {
    use secrecy::ExposeSecret;
    let record = crate::session::setup_links::load(store).await?;
    if record.connections.is_empty() {
        return Ok((record.version, Vec::new()));
    }
    let key = key.ok_or(StoredError::NoKey(record.connections.len()))?;
    let mut out = Vec::with_capacity(record.connections.len());
    for c in &record.connections {
        let (certificate, secret) = open_credential(key, &c.id, &c.credential)?;
        let (mut conn, _) = crate::config::setup_connection(&crate::config::SetupValues {
            id: &c.id,
            name: &c.name,
            metadata_url: &c.metadata_url,
            client_id: &c.client_id,
            client_secret: secret.expose_secret(),
            client_secret_expires_at: &c.credential.client_secret_expires_at,
            certificate,
        })
        .map_err(|source| StoredError::Invalid {
            id: c.id.clone(),
            source,
        })?;
        // A rotation link's predecessor: tried after the new credential until a sign-in
        // proves the new one (`setup_links::retire_previous`).
        conn.previous_credential = match &c.previous {
            None => None,
            Some(previous) => Some(match open_credential(key, &c.id, previous)? {
                (Some(cert), _) => crate::config::ClientCredential::Certificate(cert),
                (None, secret) => {
                    crate::config::ClientCredential::Secrets(vec![crate::config::NamedSecret {
                        label: PREVIOUS_SECRET.to_owned(),
                        value: secret,
                    }])
                }
            }),
        };
        out.push(conn);
    }
    Ok((record.version, out))
}

/// Every [`STORED_POLL`], and at once when the store says the setup record changed (Redis's
/// tracking connection tells every replica of any replica's write), applies the stored
/// connections when the setup record's version moved past `seen`: a setup completed on any
/// replica goes live on this one without a restart. A store that does not answer, or a
/// connection that cannot be opened, keeps the running connections and is logged.
pub(crate) async fn poll_stored(
    reloader: Arc<Reloader>,
    store: crate::session::store::AnyStore,
    key: Option<crate::config::DataKey>,
    mut seen: Option<u64>,
) {
    let mut tick = tokio::time::interval(STORED_POLL);
    let changed = crate::session::setup_links::watch(&store);
    loop {
        match &changed {
            Some(changed) => {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = changed.notified() => {}
                }
            }
            None => {
                tick.tick().await;
            }
        }
        match load_stored(&store, key.as_ref()).await {
            Ok((version, stored)) if seen != Some(version) => {
                let ids: Vec<String> = stored.iter().map(|c| c.id.clone()).collect();
                let summary = reloader.set_stored(stored);
                tracing::info!(stored = ?ids, refetching = ?summary.refetching, version, "connections created through setup links applied");
                seen = Some(version);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not read the connections created through setup links; keeping the running ones")
            }
        }
    }
}
